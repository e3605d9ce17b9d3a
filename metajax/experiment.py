"""Train-then-evaluate, as the CLI runs it, for every algorithm: config -> the algorithm's
experiment (`metajax.protocol.Experiment`: episodic learners or the learned optimiser) -> results.

`train_and_evaluate` writes to the run directory: `config.json`, `checkpoints/`, `metrics.jsonl`
and `summary.json`; `evaluate_run` re-scores a finished run (also at other ways/shots, or on the
validation classes) into `eval.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from metajax.config import Config
from metajax.episodic_run import (  # noqa: F401 (the episodic helpers scripts and tests use)
    EpisodicExperiment,
    TaskSource,
    evaluate_official_runs,
    evaluate_proxy_runs,
    load_params,
    load_state,
    make_optimizer,
    regression_result,
    sequence_result,
    task_sources,
)
from metajax.l2o_run import LearnedOptimizerExperiment
from metajax.protocol import Experiment, Scoring
from metajax.registry import ALGORITHMS
from metajax.run_dir import load_config, machine_info, prepare_run_dir

# registry's experiment name -> its implementation
EXPERIMENTS: dict[str, Experiment] = {"episodic": EpisodicExperiment(),
                                      "l2o": LearnedOptimizerExperiment()}


def experiment_of(config: Config) -> Experiment:
    """The experiment that runs `config.algo` (`metajax.registry.ALGORITHMS`)."""
    if config.algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {config.algo!r}; choose one of {', '.join(ALGORITHMS)}")
    return EXPERIMENTS[ALGORITHMS[config.algo].experiment]


def train_and_evaluate(config: Config, out_dir: str | Path, resume: bool = False,
                       devices=None, progress: bool = True) -> dict:
    """Meta-trains `config.algo`, scores it on held-out tasks and writes `summary.json`."""
    start = time.time()
    experiment = experiment_of(config)
    out_dir = prepare_run_dir(config, out_dir, resume)
    state, stats = experiment.train(config, out_dir, resume=resume, progress=progress,
                                    devices=devices)
    result = experiment.score(config, state, Scoring(), progress=progress, devices=devices)
    summary = {"algo": config.algo, "dataset": config.dataset, "steps": config.steps,
               "seed": config.seed, **result, "wall_time_s": time.time() - start, **stats,
               "config": config.to_dict(), "machine": machine_info()}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_run(out_dir: str | Path, ways: int | None = None, shots: int | None = None,
                 episodes: int | None = None, queries: int | None = None, seed: int | None = None,
                 progress: bool = True, part: str = "test") -> dict:
    """Scores a trained run again on its test classes (or, with `part="val"`, its validation
    classes, for choosing settings without looking at the test set), at its own or other
    ways/shots; writes `eval.json` (`eval_val.json` for the validation classes). A learned-
    optimiser run takes `episodes` (held-out optimisees) and `seed` only."""
    scoring = Scoring(part, ways, shots, queries, episodes, seed)
    config = load_config(out_dir)
    experiment = experiment_of(config)
    experiment.check(config, scoring)
    state = experiment.restore(config, Path(out_dir))
    result = experiment.score(config, state, scoring, progress=progress)
    out = {"algo": config.algo, "dataset": config.dataset, **result}
    (Path(out_dir) / ("eval.json" if part == "test" else "eval_val.json")).write_text(
        json.dumps(out, indent=2))
    return out
