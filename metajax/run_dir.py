"""Run directories of `metajax train` (application): the machine a run ran on, its `config.json`,
and the check that a resumed run keeps its configuration."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from metajax.bench.machine import machine_info  # noqa: F401 (metajax.experiment, l2o_run use it)
from metajax.config import Config, applicable, make_config
from metajax.training.trainer import refuse_existing_checkpoints


def _config_defaults() -> dict:
    return {f.name: f.default for f in dataclasses.fields(Config)
            if f.default is not dataclasses.MISSING}


# Settings that do not change what a run computes: a resumed run may change them.
BOOKKEEPING = ("checkpoint_every", "log_every", "data_dir")
# Settings of the evaluation only (the test episodes and how a test task is adapted): the trained
# parameters do not depend on them, so a finished run can be scored again with other values.
EVALUATION = ("eval_episodes", "eval_seed", "test_queries", "test_inner_steps",
              "test_proximal_lambda", "fresh_test_state")


def check_same_config(config: Config, out_dir: str | Path) -> list[str]:
    """Raises `ValueError` if `out_dir/config.json` records a configuration other than `config`
    (the `BOOKKEEPING` settings aside: how often a run saves and logs, where the data is) in a
    setting that shapes training. Returns the `EVALUATION` settings that differ. Reads only; a
    directory without `config.json` passes."""
    config_path = Path(out_dir) / "config.json"
    if not config_path.exists():
        return []
    # a run saved before a setting existed ran with that setting's default; settings that are not
    # the algorithm's (older config.json files list every field) never affected the run
    own = {"algo", "full_protocol", *applicable(config.algo)}
    saved = {k: v for k, v in {**_config_defaults(), **json.loads(config_path.read_text())}.items()
             if k in own}
    current = config.to_dict()
    changed = sorted(k for k in set(saved) | set(current)
                     if saved.get(k) != current.get(k) and k not in BOOKKEEPING)
    training = [k for k in changed if k not in EVALUATION]
    if training:
        raise ValueError(f"--resume with a different configuration (changed: {training}); "
                         f"use the same flags as the original run")
    return changed


def prepare_run_dir(config: Config, out_dir: str | Path, resume: bool) -> Path:
    """Creates the run directory and writes `config.json`; a resumed run must keep its config
    (`check_same_config`)."""
    out_dir = Path(out_dir)
    refuse_existing_checkpoints(out_dir, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        evaluation = check_same_config(config, out_dir)
        if evaluation:
            print(f"resumed with other evaluation settings ({', '.join(evaluation)}): the "
                  f"validation and test figures from here on use them; config.json records them",
                  file=sys.stderr)
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    return out_dir


def load_config(out_dir: str | Path) -> Config:
    path = Path(out_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {out_dir} a run directory of `metajax train`?")
    fields = json.loads(path.read_text())
    algo = fields.pop("algo")
    # config.json files written before settings were per algorithm list every field; the ones
    # that are not this algorithm's settings never affected the run
    own = applicable(algo)
    return make_config(algo, fields.pop("full_protocol", False),
                       **{k: v for k, v in fields.items() if k in own})
