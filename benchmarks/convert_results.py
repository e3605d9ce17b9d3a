"""Converts results files the reproduction scripts wrote before the one row schema
(`metajax.bench.results.ROW_FIELDS`) to it, so that hours of training need not be run again.

A file is recognised by the start of its name (its script's default results name, as in
`maml_omniglot_rerun`) and by its layout. Every number is kept: accuracies the old layouts held in
percent are divided by 100 (nothing else is changed), the other numbers are copied, and what has
no field of its own goes to the row's `details`. The file's command, date, machine and wall time
stay; a row kept from an earlier invocation keeps its own command, date and machine. The paper's
figure, its source and the goal come from the rows the script declares (an old row's numeric paper
figure or goal must agree with them). The markdown is rendered again from the rows, with the old
markdown's text outside its table and header kept as notes. Files already in the schema, and files
of other layouts (speed and memory measurements), are left as they are, so the script can be run
again at any time.

    python benchmarks/convert_results.py                   # every file in benchmarks/results
    python benchmarks/convert_results.py benchmarks/results/maml_omniglot_rerun.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import baselines_omniglot
import blackbox_omniglot
import deml_omniglot
import l2o
import maml_omniglot
import mann_omniglot
import metric_omniglot
import protonet_omniglot
import sinusoid
import within_alphabet
from common import RESULTS
from reproduce import Score, declared

from metajax.bench.results import ROWS_SCHEMA, reproduction, row, write

# the episodic scripts whose rows share one old layout, by the file name's start
EPISODIC = {"protonet_omniglot": protonet_omniglot, "metric_omniglot": metric_omniglot,
            "blackbox_omniglot": blackbox_omniglot, "baselines_omniglot": baselines_omniglot}


def percent(x: float | None) -> float | None:
    return None if x is None else x / 100


def _same(old: float | None, new: float | None, what: str) -> None:
    """Refuses a conversion whose old paper figure or goal disagrees with the declared one."""
    if old is not None and (new is None or not math.isclose(old, new, rel_tol=1e-9)):
        raise ValueError(f"{what}: the old file says {old}, the script declares {new}")


def _leading_percent(text) -> float | None:
    """The figure an old text paper cell starts with (`"98.7 ± 0.4"`), as a fraction."""
    match = re.match(r"\d+(\.\d+)?", text) if isinstance(text, str) else None
    return percent(float(match.group())) if match else None


def _provenance(r: dict, payload: dict) -> dict:
    """The row's own command, date and machine, else the file's."""
    return {k: r.get(k, payload.get(k)) for k in ("command", "date", "machine")}


def _rest(r: dict, used: tuple[str, ...], percents: tuple[str, ...] = ()) -> dict:
    """The old row's fields not used elsewhere, those in `percents` as fractions."""
    return {k: percent(v) if k in percents else v for k, v in r.items()
            if k not in used + ("command", "date", "machine")}


def _scored(score: Score | None) -> dict:
    return {"paper": score.paper if score else None, "goal": score.goal if score else None}


def _figure(score: Score | None) -> float | None:
    """The declared paper's figure of `score`, if any."""
    return score.paper["value"] if score and score.paper else None


def episodic_rows(name: str, payload: dict) -> list[dict] | None:
    """`results` rows with ways, shots and a percent accuracy (ProtoNets, metric, black-box and
    transfer learners)."""
    module = next((m for prefix, m in EPISODIC.items() if name.startswith(prefix)), None)
    rows = payload.get("results")
    if module is None or not isinstance(rows, list) or not rows or "ways" not in rows[0]:
        return None
    scores = declared(module.RUNS)
    out = []
    for r in rows:
        method = r.get("algo", module.RUNS[0].method)
        setting = f"Omniglot {r['ways']}-way {r['shots']}-shot"
        score = scores.get((method, setting))
        if isinstance(r.get("paper"), int | float):
            _same(percent(r["paper"]), _figure(score), f"{name}: {method} paper")
        _same(percent(r.get("goal")), score and score.goal, f"{name}: {method} goal")
        out.append(row(
            method, setting, "accuracy", percent(r["accuracy"]), percent(r["ci95"]),
            episodes=r["episodes"], steps=r["train_steps"], config=r.get("config"),
            wall_time_s=r.get("run_wall_time_s"), **_scored(score), **_provenance(r, payload),
            details={"algo": r.get("algo", module.RUNS[0].algo), **_rest(r, (
                "algo", "accuracy", "ci95", "episodes", "train_steps", "config", "run_wall_time_s",
                "paper", "goal"))}))
    return out


def maml_rows(name: str, payload: dict) -> list[dict] | None:
    """`maml_omniglot`'s `rows`: algo and accuracy as a fraction."""
    rows = payload.get("rows")
    if not isinstance(rows, list) or not rows or "algo" not in rows[0] \
            or not {"ways", "row", "mse"}.isdisjoint(rows[0]):
        return None
    scores = declared(maml_omniglot.RUNS)
    out = []
    for r in rows:
        c = r["config"]
        setting = f"Omniglot {c['ways']}-way {c['shots']}-shot"
        score = scores.get((r["algo"], setting))
        _same(_leading_percent(r.get("paper")), _figure(score), f"{name}: {r['algo']} paper")
        out.append(row(
            r["algo"], setting, "accuracy", r["accuracy"], r["ci95"], episodes=r["episodes"],
            steps=c["steps"], config=c, wall_time_s=r["wall_time_s"],
            **_scored(score), **_provenance(r, payload),
            details={"algo": r["algo"], "ways": c["ways"], "shots": c["shots"], **_rest(r, (
                "algo", "accuracy", "ci95", "episodes", "config", "wall_time_s", "paper"))}))
    return out


def within_alphabet_rows(name: str, payload: dict) -> list[dict] | None:
    """`within_alphabet`'s `results`: a labelled learner, accuracy and error in percent, the
    paper's error rate."""
    rows = payload.get("results")
    if not isinstance(rows, list) or not rows or "learner" not in rows[0]:
        return None
    scores = declared(within_alphabet.RUNS)
    out = []
    for r in rows:
        score = scores.get((r["algo"], within_alphabet.SETTING))
        _same(None if r.get("paper_error") is None else (100 - r["paper_error"]) / 100,
              _figure(score), f"{name}: {r['learner']} paper")
        out.append(row(
            r["learner"], within_alphabet.SETTING, "accuracy", percent(r["accuracy"]),
            percent(r["ci95"]), episodes=r["episodes"], steps=r["train_steps"],
            config=r.get("config"), wall_time_s=r.get("run_wall_time_s"), **_scored(score),
            **_provenance(r, payload), details=_rest(r, (
                "learner", "accuracy", "ci95", "episodes", "train_steps", "config",
                "run_wall_time_s", "paper_error"),
                ("error", "any_alphabet_20w1s_accuracy", "official_runs_error"))))
    return out


def mann_rows(name: str, payload: dict) -> list[dict] | None:
    """`mann_omniglot`'s `results`: accuracy by instance in percent, a row per instance the paper
    reports and one over all instances (every instance's accuracy in its details)."""
    rows = payload.get("results")
    if not isinstance(rows, list) or not rows or "accuracy_by_instance" not in rows[0]:
        return None
    scores = declared(mann_omniglot.RUNS)
    out = []
    for r in rows:
        by, ci = r["accuracy_by_instance"], r["accuracy_by_instance_ci95"]
        common = dict(episodes=r["episodes"], steps=r["steps"], config=r.get("config"),
                      **_provenance(r, payload))
        rest = _rest(r, ("accuracy_by_instance", "accuracy_by_instance_ci95", "accuracy", "steps",
                         "episodes", "config", "paper", "goal"))
        for k in mann_omniglot.INSTANCES:
            score = scores[(r["algo"], f"{mann_omniglot.SEQUENCES}, instance {k}")]
            _same(percent((r.get("paper") or {}).get(k)), _figure(score),
                  f"{name}: {r['algo']} paper, instance {k}")
            _same(percent((r.get("goal") or {}).get(k)), score.goal,
                  f"{name}: {r['algo']} goal, instance {k}")
            out.append(row(r["algo"], score.setting, "accuracy", percent(by[k]), percent(ci[k]),
                           **_scored(score), **common, details={**rest, "instance": int(k)}))
        out.append(row(r["algo"], mann_omniglot.ALL_INSTANCES.setting, "accuracy",
                       percent(r["accuracy"]), None, **common, details={
                           **rest, "accuracy_by_instance": {k: percent(v) for k, v in by.items()},
                           "accuracy_by_instance_ci95": {k: percent(v) for k, v in ci.items()}}))
    return out


def deml_rows(name: str, payload: dict) -> list[dict] | None:
    """`deml_omniglot`'s `rows` (the ablation and its timing runs): a row name and lambda,
    accuracies in percent."""
    rows = payload.get("rows")
    if not isinstance(rows, list) or not rows or "row" not in rows[0]:
        return None
    out = []
    for r in rows:
        lam = r["lambda"]
        (run,) = deml_omniglot.ablation_runs([r["row"]], [] if lam is None else [lam], r["ways"],
                                             r["first_order"], "", None)
        score = run.scores[0]
        _same(_leading_percent(r.get("paper")), _figure(score), f"{name}: {run.method} paper")
        out.append(row(
            run.method, score.setting, "accuracy", percent(r["accuracy"]), percent(r["ci95"]),
            episodes=r["episodes"], steps=r["steps"], config=r.get("config"),
            wall_time_s=r.get("wall_time_s"), **_scored(score), **_provenance(r, payload),
            details={"algo": run.algo, **_rest(r, (
                "accuracy", "ci95", "episodes", "steps", "config", "wall_time_s", "paper"),
                ("val_accuracy", "val_ci95"))}))
    return out


def sinusoid_rows(name: str, payload: dict) -> list[dict] | None:
    """`sinusoid`'s `rows`: MSE and CI by test steps, one row per method and K; a row per test
    steps here."""
    rows = payload.get("rows")
    if not isinstance(rows, list) or not rows or "mse" not in rows[0]:
        return None
    settings = payload.get("settings", {})
    out = []
    for r in rows:
        run = sinusoid.sinusoid_run(r["algo"], r["shots"])
        for i, ((steps, mse), score) in enumerate(zip(r["mse"].items(), run.scores, strict=True)):
            # the MAML paper's curve where the file has it, else the Meta-SGD paper's 1 step
            old = r["paper"][i] if r.get("paper") else (
                r.get("paper_metasgd_1step") if steps == "1" else None)
            _same(old, _figure(score), f"{name}: {r['algo']} paper")
            out.append(row(
                r["algo"], score.setting, "mse", mse, r["ci95"][steps],
                episodes=settings.get("test_tasks"), steps=settings.get("train_steps"),
                **_scored(score), **_provenance(r, payload), details={
                    "shots": r["shots"], "test_steps": int(steps), "train_time_s": r["train_s"],
                    "diverged": mse is None, **_rest(r, (
                        "algo", "shots", "mse", "ci95", "train_s", "paper",
                        "paper_metasgd_1step"))}))
    sinusoid.meta_sgd_goals(out)
    return out


def l2o_rows(name: str, payload: dict) -> list[dict] | None:
    """`l2o_<problem>`: a dict of results by problem family, the learned optimiser's and the tuned
    baselines' final losses and curves."""
    if "meta_training" not in payload or not isinstance(payload.get("results"), dict):
        return None
    settings = payload["settings"]
    scores = declared(l2o.RUNS)
    out = []
    for variant, result in payload["results"].items():
        setting = l2o.setting(variant)
        out += l2o.comparison_rows(
            scores.get((l2o.METHOD, setting), Score(setting, metric="final_loss")), result,
            episodes=settings["eval_episodes"], steps=settings["steps"], config={
                k: v for k, v in settings.items() if k not in ("lr_grid", "variants",
                                                                "mlp_variants")},
            wall_time_s=payload["meta_training"]["train_wall_time_s"] + result["eval_wall_time_s"],
            **_provenance({}, payload))
    return out


# the start of a script's results file names, the reader of its old layout and the markdown
# columns the script adds to the rows'
READERS: tuple[tuple[str, Callable[[str, dict], list[dict] | None], dict | None], ...] = (
    ("l2o", l2o_rows, l2o.COLUMNS), ("mann_omniglot", mann_rows, None),
    ("within_alphabet", within_alphabet_rows, within_alphabet.COLUMNS),
    *((prefix, episodic_rows, None) for prefix in EPISODIC),
    ("deml_omniglot", deml_rows, deml_omniglot.COLUMNS), ("sinusoid", sinusoid_rows, None),
    ("maml_omniglot", maml_rows, maml_omniglot.COLUMNS))
# old top-level fields that are replaced by the rows
REPLACED = ("results", "rows")
VERDICT_PERCENTS = ("deml", "deml_ci95", "metasgd_conv4", "metasgd_conv4_ci95", "difference",
                    "no_disc")


def old_notes(md: Path) -> list[str]:
    """The paragraphs of an old markdown outside its title, header lines and table."""
    if not md.exists():
        return []
    paragraphs, current = [], []
    for line in md.read_text().splitlines():
        skip = line.startswith(("# ", "|", "Command: ", "Date: ", "Machine: ", "Wall time: "))
        if not line.strip() or skip:
            if current:
                paragraphs.append("\n".join(current))
            current = []
        else:
            current.append(line)
    return paragraphs + (["\n".join(current)] if current else [])


def convert(path: Path) -> bool:
    """Rewrites `path` (and its markdown) in the row schema; False where it is in the schema
    already, or is not a reproduction script's (by its name's start and its layout)."""
    payload = json.loads(path.read_text())
    if payload.get("schema") == ROWS_SCHEMA:
        return False
    rows, columns = next(((got, columns) for prefix, reader, columns in READERS
                          if path.stem.startswith(prefix)
                          and (got := reader(path.stem, payload)) is not None), (None, None))
    if rows is None:
        return False
    fields = ("command", "date", "machine", "settings", "paper", "goal", "wall_time_s")
    extra = {k: v for k, v in payload.items() if k not in REPLACED + fields}
    if "verdicts" in extra:
        extra["verdicts"] = [{k: percent(v) if k in VERDICT_PERCENTS else v for k, v in x.items()}
                             for x in extra["verdicts"]]
    result = reproduction(path.stem, rows, notes=old_notes(path.with_suffix(".md")),
                          columns=columns, extra=extra,
                          command=payload["command"], date=payload["date"],
                          **{k: payload.get(k) for k in fields[2:]})
    write(result, path.parent)
    return True


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="results files (default: every one in "
                   "benchmarks/results)")
    args = p.parse_args(argv)
    for path in [Path(x) for x in args.paths] or sorted(RESULTS.glob("*.json")):
        print(f"{path.name}: {'converted' if convert(path) else 'left as it is'}")


if __name__ == "__main__":
    main()
