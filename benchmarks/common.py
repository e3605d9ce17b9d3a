"""What the benchmark scripts share that is theirs: the options every train-then-score script takes
(`training_parser`, `parse_with_allocator`), where results go (`RESULTS`) and how a rerun keeps the
rows of methods it did not run (`keep_earlier_rows`), and the train / score / step helpers built on
`metajax.experiment`. Writing a result is `metajax.bench.results`' (`write_results` and `report`
hand it over)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from metajax.bench.results import command_line, from_json, write

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, payload: dict, table: str) -> Path:
    """Writes `results/<name>.json` and `results/<name>.md` (the printed table plus provenance):
    `payload`'s fields as `metajax.bench.results.Result` fields (machine, rows, settings, wall
    time) and the rest kept as they are."""
    return write(from_json(name, {"command": command_line(), "date": time.strftime("%Y-%m-%d %H:%M"),
                                  **payload}, table), RESULTS)


def training_parser(doc: str, *, out: str, name: str | None, episodes: int,
                    steps_help: str = "override the training steps of every learner",
                    episodes_help: str = "test episodes per setting",
                    name_help: str = "results file name") -> argparse.ArgumentParser:
    """A parser with the options every train-then-score benchmark takes (`--steps`, `--episodes`,
    `--seed`, `--full-protocol`, `--out`, `--name`, `--no-progress`); a script adds its own and
    calls `parse_with_allocator`. `doc` is the script's docstring (its first line describes it)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--steps", type=int, help=steps_help)
    p.add_argument("--episodes", type=int, default=episodes, help=episodes_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-protocol", action="store_true")
    p.add_argument("--out", default=out, help="parent of the run folders")
    p.add_argument("--name", default=name, help=name_help)
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_with_allocator(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses the command line, then re-executes the script under metajax's allocator (jemalloc or
    glibc tunables, as `metajax train` does) unless it already runs under it; parsing first lets
    `--help` and bad options answer without the re-exec."""
    from metajax.allocator import reexec_with_allocator

    args = p.parse_args()
    reexec_with_allocator()
    return args


def earlier_rows(name: str, rows: list[dict], key, field: str = "results") -> list[dict]:
    """The rows (under `field`) of `results/<name>.json` whose `key(row)` is not among `rows`'s,
    each with the command, date and machine that made it (empty if there is no such file)."""
    old = RESULTS / f"{name}.json"
    if not old.exists():
        return []
    payload = json.loads(old.read_text())
    done = {key(r) for r in rows}
    return [{"command": payload.get("command"), "date": payload.get("date"),
             "machine": payload.get("machine"), **r}
            for r in payload[field] if key(r) not in done]


def keep_earlier_rows(name: str, rows: list[dict], order, field: str = "results",
                      key: str = "algo") -> list[dict]:
    """`rows` plus the rows (under `field`) of methods not run this time from `results/<name>.json`,
    so one method can be rerun alone; a kept row keeps the command, date and machine that made it.
    A method is a row's `key` (default its algorithm). Sorted by `order` (method names), then
    method."""
    def method(r):
        return r.get(key, r["algo"])

    order = list(order)
    return sorted(earlier_rows(name, rows, method, field) + rows, key=lambda r: (
        order.index(r["algo"]) if r["algo"] in order else len(order), method(r)))


def train_then_score(config, run_dir: Path, episodes: int, paper: dict, goal: dict,
                     progress: bool, test_ways=(5, 20)) -> list[dict]:
    """Trains `config` once (resuming a run left in `run_dir`), then scores it at each of
    `test_ways` (the first from the run's own test, the others with `evaluate_run`). One row per
    setting, accuracy and CI in percent, with `paper[(ways, shots)]` and `goal[(ways, shots)]`."""
    from metajax.experiment import evaluate_run, train_and_evaluate

    start = time.time()
    summary = train_and_evaluate(config, run_dir, resume=(run_dir / "checkpoints").exists(),
                                 progress=progress)
    rows = []
    for ways in test_ways:
        t0 = time.time()
        own = ways == config.ways
        r = summary if own else evaluate_run(run_dir, ways=ways, shots=config.shots,
                                             episodes=episodes, progress=progress)
        setting = (ways, config.shots)
        rows.append({
            "algo": config.algo, "ways": ways, "shots": config.shots,
            "accuracy": 100 * r["accuracy"], "ci95": 100 * r["ci95"], "episodes": r["episodes"],
            "paper": paper.get(setting), "goal": goal.get(setting),
            "train_steps": config.steps, "train_time_s": round(summary["train_wall_time_s"], 1),
            "eval_time_s": None if own else round(time.time() - t0, 1),
            "run_wall_time_s": round(time.time() - start, 1),
            "steps_per_s": summary["steps_per_s"], "config": summary["config"],
            "split": summary["split"],
        })
    return rows


def train_stepper(config, learner, train):
    """`run()`: one jitted training step of `learner` on episodes from `train` (a `TaskSource`),
    with the outer optimiser and task map of `config` (as `metajax train`), keeping the state
    between calls and returning the step's metrics (not waited for). The first call compiles."""
    import jax

    from metajax.experiment import make_optimizer
    from metajax.training.trainer import init_state, make_train_step

    optimizer = make_optimizer(config)
    example = train.sample(jax.random.PRNGKey(0), train.data)
    state = init_state(learner, optimizer, jax.random.PRNGKey(0), example)
    step = make_train_step(learner, optimizer, train.sample, config.meta_batch, 0,
                           task_map=config.task_map)
    holder = {"state": state}

    def run(*_):
        holder["state"], metrics = step(holder["state"], train.data)
        return metrics

    return run


def report(name: str, rows: list[dict], lines: list[str], **extra) -> None:
    """Prints the table and writes it with the rows, the machine and any `extra` fields to
    `results/<name>.*`."""
    from metajax.bench.machine import machine_info

    table = "\n".join(lines)
    print(table)
    path = write_results(name, {"machine": machine_info(), "results": rows, **extra}, table)
    print(f"results written to {path}")
