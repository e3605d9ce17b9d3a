"""What the benchmark scripts share that is theirs: the options every train-then-score script takes
(`training_parser`, `parse_with_allocator`), where results go (`RESULTS`) and a training step to
time (`train_stepper`). Writing a result is `metajax.bench.results`' (`write_results` and `report`
hand it over); the reproductions' rows and their runner are in `reproduce`."""

from __future__ import annotations

import argparse
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
    `--seed`, `--full-protocol`, `--out`, `--name`, `--no-progress`, `--rescore`); a script adds
    its own and calls `parse_with_allocator`. `doc` is the script's docstring (its first line
    describes it)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--steps", type=int, help=steps_help)
    p.add_argument("--episodes", type=int, default=episodes, help=episodes_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-protocol", action="store_true")
    p.add_argument("--out", default=out, help="parent of the run folders")
    p.add_argument("--name", default=name, help=name_help)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--rescore", action="store_true",
                   help="score finished runs in --out again (default: reuse their summary.json)")
    return p


def parse_with_allocator(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses the command line, then re-executes the script under metajax's allocator (jemalloc or
    glibc tunables, as `metajax train` does) unless it already runs under it; parsing first lets
    `--help` and bad options answer without the re-exec."""
    from metajax.allocator import reexec_with_allocator

    args = p.parse_args()
    reexec_with_allocator()
    return args


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
