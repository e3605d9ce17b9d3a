"""DEML ablation on Omniglot 20-way 1-shot and 5-way 1-shot: Meta-SGD on conv4, Meta-SGD on the
concept generator without the discriminator (lambda = 0), DEML (lambda > 0) and a sweep over
lambda, each row trained with the same budget (steps, meta-batch, episodes) and scored on the same
600 test episodes (95% CI).

Shared protocol (all rows): the MAML split of Omniglot (1100 / 100 / 423 characters, x4 rotations),
N-way training episodes with 5 queries per class, one inner step at training and at test (Meta-SGD),
Adam 1e-3, meta-batch 4. conv4 is MAML's stride-2 network of width 64; the concept generator is a
3-stage ResNet of width 32 (128-d concepts), Meta-SGD adapts a linear learner on the concepts, and
the concept discriminator classifies 64 external examples per step over the 4400 meta-training
classes (never a test class; checked). `--first-order` drops Meta-SGD's second derivatives in every
row (labelled in the results).

Each row is also scored on as many episodes of the 400 validation classes; DEML's headline lambda
is the one with the best validation score (never chosen on the test episodes), and the results end
with the issue's verdict per setting: DEML against Meta-SGD on conv4, "beats" when the two 95%
intervals do not overlap. A row that already finished in `--out` is not trained or scored again;
re-running the script only adds what is missing (rows, validation scores).

The issue's budget is at most about an hour per row on this 2-core CPU (`--steps`); measure the
seconds per step of each row first with `--time-steps 10`, which trains 10 steps of each and prints
them, then choose `--steps`:

    python benchmarks/deml_omniglot.py --time-steps 10                   # s/step of each row
    python benchmarks/deml_omniglot.py --ways 5 --steps 1000             # one setting, all rows
    python benchmarks/deml_omniglot.py --ways 20 --rows deml --lambdas 3        # one more lambda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from reproduce import Run, omniglot, reproduce

from metajax.bench.results import paper

LI = "Li et al. 2017, Table 2"
# Meta-SGD on conv4 in its paper's full protocol; the ablation trains every row with one budget
META_SGD = {20: paper(0.9593, LI, 0.0038, note="the paper's full protocol"),
            5: paper(0.9953, LI, 0.0026, note="the paper's full protocol")}
ZHOU = paper(None, "Zhou et al. 2018", note="miniImageNet only, 5-way 1-shot: DEML + Meta-SGD "
             "58.49 ± 0.91, Meta-SGD 50.47 ± 1.87")
ROWS = ("metasgd-conv4", "concepts-no-disc", "deml")
COMMON = dict(split="maml", shots=1, queries=5, inner_lr=0.4, inner_steps=1, test_inner_steps=1,
              meta_batch=4, lr=1e-3, val_every=0, test_queries=15)
# the markdown's columns beside the rows' (header -> key of a row's details or config)
COLUMNS = {"val. accuracy": "val_accuracy", "first order": "first_order", "meta-batch": "meta_batch",
           "s/step": "s_per_step", "train s": "train_time_s"}
NOTES = ["Validation accuracy: the same number of episodes from the 400 validation classes; "
         "DEML's lambda is chosen on it, never on the test episodes."]


def ablation_runs(rows, lambdas, ways: int, first_order: bool, folder: str,
                  evaluate) -> list[Run]:
    """The requested rows at `ways` as runs in `<row>[_lam<lambda>]_<folder>`, scored by
    `evaluate`; the shared protocol in the overrides, the row and lambda in the method's name and
    in the details."""
    common = dict(COMMON, ways=ways, first_order=first_order)
    label = ", first order" if first_order else ""
    specs = []  # (row, lambda, method, algorithm, overrides, the paper's figure)
    if "metasgd-conv4" in rows:
        specs.append(("metasgd-conv4", None, "metasgd-conv4" + (" (first order)" if label else ""),
                      "metasgd", dict(common, downsample="stride", width=64, task_map="map"),
                      META_SGD.get(ways)))
    if "concepts-no-disc" in rows:
        specs.append(("concepts-no-disc", 0.0, f"concepts-no-disc (lambda 0{label})", "deml",
                      dict(common, concept_weight=0.0), None))
    if "deml" in rows:
        specs += [("deml", lam, f"deml (lambda {lam:g}{label})", "deml",
                   dict(common, concept_weight=lam), ZHOU) for lam in lambdas]
    return [Run(method, algo, overrides, folder=f"{row}{'' if lam is None else f'_lam{lam}'}_{folder}",
                scores=(dataclasses.replace(omniglot(ways, 1, figure), evaluate=evaluate,
                                            details=_labels(row, lam, first_order)),))
            for row, lam, method, algo, overrides, figure in specs]


def _labels(row: str, lam: float | None, first_order: bool):
    """`Score.details`: the ablation's row, its lambda and whether it is first order."""
    return lambda result: {"row": row, "lambda": lam, "first_order": first_order}


def validation_score(run_dir: Path, episodes: int) -> dict:
    """The row's accuracy on `episodes` episodes of the validation classes (kept in
    `eval_val.json`, reused when it has that many)."""
    from metajax.experiment import evaluate_run

    path = run_dir / "eval_val.json"
    if path.exists():
        kept = json.loads(path.read_text())
        if kept.get("part") == "val" and kept.get("episodes") == episodes:
            return kept
    return evaluate_run(run_dir, episodes=episodes, part="val", progress=False)


def test_score(validation: bool):
    """`Score.evaluate`: the run's own test, with its seconds per step and compile time and (with
    `validation`) its validation score as details."""

    def evaluate(config, run_dir: Path, progress: bool) -> dict:
        summary = json.loads((run_dir / "summary.json").read_text())
        details = {"s_per_step": 1 / summary["steps_per_s"] if summary["steps_per_s"] else None,
                   "compile_s": summary["compile_s"]}
        if validation:
            val = validation_score(run_dir, config.eval_episodes)
            details.update(val_accuracy=val["accuracy"], val_ci95=val["ci95"])
        return {**summary, "details": details}

    return evaluate


def sort_key(r: dict) -> tuple:
    """20-way first, then the row (as `ROWS`), first order, lambda."""
    d = r["details"]
    return (-d["ways"], ROWS.index(d["row"]), d["first_order"],
            -1.0 if d["lambda"] is None else d["lambda"])


def verdicts(rows: list[dict]) -> list[dict]:
    """Per setting, the issue's comparison: DEML with lambda chosen on the validation classes
    (never on the test episodes) against Meta-SGD on conv4. "Beats" means the 95% intervals of the
    two test accuracies do not overlap. Accuracies are fractions."""
    out = []
    settings = {(r["details"]["ways"], r["details"]["first_order"]) for r in rows}
    for ways, first_order in sorted(settings, reverse=True):
        same = [r for r in rows
                if (r["details"]["ways"], r["details"]["first_order"]) == (ways, first_order)]
        base = next((r for r in same if r["details"]["row"] == "metasgd-conv4"), None)
        no_disc = next((r for r in same if r["details"]["row"] == "concepts-no-disc"), None)
        deml = [r for r in same if r["details"]["row"] == "deml"
                and r["details"].get("val_accuracy") is not None]
        if base is None or not deml:
            continue
        best = max(deml, key=lambda r: r["details"]["val_accuracy"])
        diff = best["value"] - base["value"]
        out.append({"ways": ways, "first_order": first_order, "lambda": best["details"]["lambda"],
                    "deml": best["value"], "deml_ci95": best["ci95"],
                    "metasgd_conv4": base["value"], "metasgd_conv4_ci95": base["ci95"],
                    "difference": diff, "beats": diff > best["ci95"] + base["ci95"],
                    "lambda_candidates": sorted(r["details"]["lambda"] for r in deml),
                    "no_disc": None if no_disc is None else no_disc["value"]})
    return out


def verdict_line(v: dict) -> str:
    """The verdict in words, accuracies and differences in percent (points)."""
    line = (f"{v['ways']}-way 1-shot{', first order' if v['first_order'] else ''}: DEML with "
            f"lambda = {v['lambda']:g} (chosen on the validation classes among "
            f"{', '.join(f'{x:g}' for x in v['lambda_candidates'])}) scores "
            f"{100 * v['deml']:.2f} ± {100 * v['deml_ci95']:.2f} against Meta-SGD on conv4 "
            f"{100 * v['metasgd_conv4']:.2f} ± {100 * v['metasgd_conv4_ci95']:.2f}: "
            f"{100 * v['difference']:+.2f} points, "
            + ("**beats it by more than the confidence intervals**" if v["beats"]
               else "**not** more than the confidence intervals"))
    if v["no_disc"] is not None:
        line += (f"; the same concept generator without the discriminator: "
                 f"{100 * v['no_disc']:.2f} ({100 * (v['deml'] - v['no_disc']):+.2f} points from "
                 f"the discriminator)")
    return line + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", nargs="+", type=int, default=[20, 5])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--lambdas", nargs="+", type=float, default=[0.1, 0.3, 1.0],
                        help="lambdas of the DEML rows (the sweep; the verdict takes the one with "
                        "the best validation score)")
    parser.add_argument("--steps", type=int, default=2000,
                        help="meta-training steps of every row (the same budget for each)")
    parser.add_argument("--eval-episodes", type=int, default=600)
    parser.add_argument("--first-order", action="store_true",
                        help="first-order Meta-SGD in every row (faster on CPU)")
    parser.add_argument("--time-steps", type=int, default=0,
                        help="only measure s/step of each row over this many steps, then stop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/deml_omniglot", help="parent of the run folders")
    parser.add_argument("--data-dir")
    parser.add_argument("--name", help="results file name (default deml_omniglot_steps<N>, or "
                        "deml_omniglot_<ways>w_timing with --time-steps)")
    args = parser.parse_args()
    from metajax.allocator import reexec_with_allocator

    reexec_with_allocator()  # jemalloc or glibc tunables, as `metajax train` does
    steps = args.time_steps or args.steps
    episodes = 20 if args.time_steps else args.eval_episodes
    runs = [run for ways in args.ways for run in ablation_runs(
        args.rows, args.lambdas, ways, args.first_order,
        f"{ways}w1s_{steps}steps_seed{args.seed}", test_score(not args.time_steps))]
    budget = {"steps": steps, "meta_batch": COMMON["meta_batch"], "first_order": args.first_order,
              "eval_episodes": episodes}
    options = dict(cli=dict(steps=steps, eval_episodes=episodes, seed=args.seed,
                            data_dir=args.data_dir, checkpoint_every=max(min(steps, 500), 1)),
                   key=sort_key, columns=COLUMNS)
    if args.time_steps:  # fresh runs in temporary folders, no validation, no verdict
        out = tempfile.mkdtemp(prefix="deml_timing_")
        name = args.name or f"deml_omniglot_{'_'.join(str(w) for w in args.ways)}w_timing"
        rows = reproduce(name, runs, out=out, extra={"budget": budget, "protocol": COMMON},
                         **options)
        for r in rows:
            d = r["details"]
            print(f"{r['method']}, {r['setting']}: {d['s_per_step']:.3f} s/step (compile "
                  f"{d['compile_s']:.0f}s); 60 min = {3600 / d['s_per_step']:.0f} steps")
        return

    def annotate(rows: list[dict]) -> dict:
        found = verdicts(rows)
        return {"verdicts": found, "notes": [f"- {verdict_line(v)}" for v in found]}

    reproduce(args.name or f"deml_omniglot_steps{steps}", runs, out=args.out, notes=NOTES,
              annotate=annotate, extra={"budget": budget, "protocol": COMMON}, **options)


if __name__ == "__main__":
    main()
