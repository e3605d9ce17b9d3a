"""The reproduction scripts' rows and their one runner.

A script declares its rows: `Run`s (a method, the algorithm and its `make_config` overrides, and
the `Score`s taken of the trained model, each with the paper's figure and its source, and the
goal). `reproduce` trains each run (resuming one cut short, reusing one that finished), takes its
scores and writes `results/<name>.{json,md}` after every run, in the one row schema of
`metajax.bench.results` (`ROW_FIELDS`), keeping the rows of earlier invocations that it did not
make. What a script scores its own way is a `Score` hook (`evaluate`, `pick`, `details`: DEML's
validation scores, MANN's accuracy by instance, the within-alphabet episodes); the sinusoid and the
learned optimiser, trained outside a run folder, build their rows with
`metajax.bench.results.row` and write them with `write_rows`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from common import RESULTS

from metajax.bench.results import (
    ROWS_SCHEMA,
    command_line,
    now,
    reproduction,
    row,
    value_text,
    write,
)


@dataclasses.dataclass(frozen=True)
class Score:
    """One number taken of a trained run: a row of the results.

    Attributes:
      setting: the row's setting in words ("Omniglot 20-way 1-shot").
      paper: the paper's figure, `metajax.bench.results.paper(...)` (None: no figure).
      goal: a bound on the value (at least; at most where lower is better), or a sentence.
      ways, shots: scored on test episodes of this N and K (`evaluate_run`); None: the run's own
        test (its `summary.json`).
      metric: "accuracy" (a fraction), "mse" or "final_loss".
      pick: the value and CI of the evaluation's result (default: its accuracy and ci95).
      details: numbers of the evaluation's result for the row's `details`.
      evaluate: scores the run itself instead, `evaluate(config, run_dir, progress)` -> a result
        (accuracy, ci95, episodes, and `details` for the row).
    """

    setting: str
    paper: dict | None = None
    goal: float | str | None = None
    ways: int | None = None
    shots: int | None = None
    metric: str = "accuracy"
    pick: Callable[[dict], tuple] | None = None
    details: Callable[[dict], dict] | None = None
    evaluate: Callable | None = None


def omniglot(ways: int, shots: int, paper: dict | None = None, goal: float | None = None) -> Score:
    """The accuracy on Omniglot `ways`-way `shots`-shot test episodes."""
    return Score(f"Omniglot {ways}-way {shots}-shot", paper, goal, ways, shots)


@dataclasses.dataclass(frozen=True)
class Run:
    """One trained model: the rows' `method`, `metajax.config.make_config(algo, full_protocol,
    **overrides)` (the command line's overrides applied on top), the scores taken of it, and its
    run folder under `--out` (default: the method, spaces and brackets as underscores)."""

    method: str
    algo: str
    overrides: dict
    scores: tuple[Score, ...]
    folder: str | None = None

    @property
    def run_folder(self) -> str:
        return self.folder or re.sub(r"[ ,()]+", "_", self.method).strip("_")


def declared(runs: Sequence[Run]) -> dict[tuple[str, str], Score]:
    """Each score of `runs` by its row's (method, setting)."""
    return {(run.method, score.setting): score for run in runs for score in run.scores}


def config_of(run: Run, full_protocol: bool, cli: dict):
    """The run's config: its overrides, then the command line's (`None`: not given)."""
    from metajax.config import make_config

    given = {k: v for k, v in cli.items() if v is not None}
    return make_config(run.algo, full_protocol, **{**run.overrides, **given})


def trained(config, run_dir: Path, *, rescore: bool = False,
            progress: bool = False) -> tuple[dict, bool]:
    """The run's summary and whether it was made now. A finished run's `summary.json` is reused
    (its configuration checked; its timings are its training's), or with `rescore` scored again
    (its training time and speed kept, `rescored` set); a run cut short is resumed."""
    from metajax.experiment import train_and_evaluate
    from metajax.run_dir import check_same_config

    path = run_dir / "summary.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    if previous and not rescore:
        check_same_config(config, run_dir)
        return previous, False
    summary = train_and_evaluate(config, run_dir, resume=(run_dir / "checkpoints").exists(),
                                 progress=progress)
    if previous and summary.get("start_step") == previous["steps"]:  # scored again, not trained
        summary.update(wall_time_s=previous["wall_time_s"], steps_per_s=previous["steps_per_s"],
                       train_wall_time_s=previous.get("train_wall_time_s"), rescored=True)
        path.write_text(json.dumps(summary, indent=2))
    return summary, True


def scored(score: Score, config, run_dir: Path, summary: dict, *, fresh: bool,
           progress: bool) -> tuple[dict, float | None]:
    """The evaluation behind `score` and the seconds it took (None: none ran now). The run's own
    test is its summary; another N and K is scored with `evaluate_run`, kept in the run folder
    (`score_<N>w<K>s.json`) and reused while the model is (`fresh`: it was trained or scored now)."""
    from metajax.experiment import evaluate_run

    start = time.time()
    if score.evaluate is not None:
        return score.evaluate(config, run_dir, progress), time.time() - start
    if score.ways is None or (score.ways, score.shots) == (config.ways, config.shots):
        return summary, None
    kept = run_dir / f"score_{score.ways}w{score.shots}s.json"
    if kept.exists() and not fresh:
        result = json.loads(kept.read_text())
        if result.get("episodes") == config.eval_episodes:
            return result, None
    result = evaluate_run(run_dir, ways=score.ways, shots=score.shots,
                          episodes=config.eval_episodes, progress=progress)
    kept.write_text(json.dumps(result, indent=2))
    return result, time.time() - start


def score_row(run: Run, score: Score, config, summary: dict, result: dict,
              eval_s: float | None, run_dir: Path) -> dict:
    """The results row of `score` of `run`: the value, the paper and goal as declared, the run's
    config, steps and time (training and this score), the command, machine and date; `details`:
    the algorithm, N and K, training and scoring seconds, steps/s, where training started, whether
    the run was only scored again, the split and the run folder, and what the score adds."""
    from metajax.bench.machine import machine_info

    value, ci95 = (score.pick or (lambda r: (r["accuracy"], r["ci95"])))(result)
    details = {"algo": config.algo}
    if score.ways is not None:
        details.update(ways=score.ways, shots=score.shots)
    details.update(train_time_s=summary.get("train_wall_time_s"), eval_time_s=eval_s,
                   steps_per_s=summary.get("steps_per_s"), start_step=summary.get("start_step", 0),
                   rescored=bool(summary.get("rescored")), split=summary.get("split"),
                   run_dir=str(run_dir))
    details.update(score.details(result) if score.details else {})
    details.update(result.get("details", {}))
    wall = summary.get("wall_time_s")  # None: a checkpoint scored as it is (MANN's partial runs)
    return row(run.method, score.setting, score.metric, value, ci95,
               episodes=result.get("episodes"), steps=summary.get("steps", config.steps),
               paper=score.paper, goal=score.goal, config=summary.get("config") or config.to_dict(),
               wall_time_s=None if wall is None else wall + (eval_s or 0), command=command_line(),
               machine=summary.get("machine") or machine_info(), date=now(), details=details)


def rank_by(methods: Sequence[str]) -> Callable[[dict], int]:
    """A sort key: the position of the row's method among `methods` (a method with a label, as
    "protonet (56x56)", where its first word stands); others last."""
    methods = list(methods)

    def rank(r: dict) -> int:
        name = r["method"] if r["method"] in methods else r["method"].split(" ")[0]
        return methods.index(name) if name in methods else len(methods)

    return rank


def merged(path: Path, rows: list[dict], key: Callable[[dict], object] | None) -> list[dict]:
    """`rows` and the rows of `path` (an earlier invocation's) that `rows` do not replace (same
    method and setting), each keeping its own command, machine and date; sorted by `key`, then as
    found (a replaced row where it was, a new one last). A file in an older layout is refused, so
    that its rows are not lost."""
    if not path.exists():
        return sorted(rows, key=key) if key else rows
    payload = json.loads(path.read_text())
    if payload.get("schema") != ROWS_SCHEMA:
        raise ValueError(f"{path} is in an older layout; convert it first with "
                         f"`python benchmarks/convert_results.py {path}`")
    new = {(r["method"], r["setting"]): r for r in rows}
    out = [new.pop((r["method"], r["setting"]), r) for r in payload["rows"]] + list(new.values())
    return sorted(out, key=key) if key else out


def write_rows(name: str, rows: list[dict], *, started: float,
               key: Callable[[dict], object] | None = None, notes: Sequence[str] = (),
               columns: dict | None = None, extra: dict | None = None,
               annotate: Callable[[list[dict]], dict] | None = None, settings: dict | None = None,
               plot: Callable | None = None, results_dir: Path = RESULTS) -> list[dict]:
    """Writes `rows` with the earlier rows of `results/<name>.json` (`merged`, sorted by `key`),
    this process's machine and wall time, `settings`, the markdown's extra `columns` and `notes`,
    and the top-level fields of `extra` and of `annotate(rows)` (its `notes` follow the others);
    prints the markdown and returns the rows written."""
    from metajax.bench.machine import machine_info

    path = Path(results_dir) / f"{name}.json"
    rows = merged(path, rows, key)
    extra = {**(extra or {}), **(annotate(rows) if annotate else {})}
    notes = [*notes, *extra.pop("notes", [])]
    result = reproduction(name, rows, notes=notes, columns=columns, extra=extra,
                          machine=machine_info(), settings=settings,
                          wall_time_s=round(time.time() - started, 1))
    write(result, results_dir, plot=plot)
    print(Path(results_dir, f"{name}.md").read_text(), flush=True)
    print(f"results written to {path}", flush=True)
    return rows


def reproduce(name: str, runs: Sequence[Run], *, out: str | Path, cli: dict,
              full_protocol: bool = False, progress: bool = False, rescore: bool = False,
              summary_of: Callable | None = None, order: Sequence[str] | None = None,
              key: Callable[[dict], object] | None = None, **write_options) -> list[dict]:
    """Trains each of `runs` in `out/<run folder>` (`trained`, or `summary_of(config, run_dir)` ->
    (summary, made now)), takes its scores and writes the rows after every run (`write_rows`,
    sorted by `key`, default the position of the method among `order`, default the runs'), so a
    session cut short keeps what finished. `cli`: the command line's `make_config` overrides.
    Returns the rows written."""
    started = time.time()
    key = key or rank_by(order or [run.method for run in runs])
    rows: list[dict] = []
    written: list[dict] = []
    for run in runs:
        config = config_of(run, full_protocol, cli)
        run_dir = Path(out) / run.run_folder
        summary, fresh = (summary_of(config, run_dir) if summary_of else
                          trained(config, run_dir, rescore=rescore, progress=progress))
        for score in run.scores:
            result, eval_s = scored(score, config, run_dir, summary, fresh=fresh, progress=progress)
            rows.append(score_row(run, score, config, summary, result, eval_s, run_dir))
            print(f"{run.method}, {score.setting}: {value_text(rows[-1])}", flush=True)
        written = write_rows(name, rows, key=key, started=started, **write_options)
    return written

