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
import json
import tempfile
import time
from pathlib import Path

from common import earlier_rows, write_results

from metajax.bench.machine import machine_info
from metajax.config import make_config
from metajax.experiment import evaluate_run, train_and_evaluate
from metajax.run_dir import check_same_config

# Zhou et al. report miniImageNet only (5-way 1-shot DEML + Meta-SGD 58.49 vs Meta-SGD 50.47);
# Omniglot numbers of Meta-SGD (Li et al. 2017), conv4, its full protocol.
PAPER = {("metasgd-conv4", 5): "99.53 ± 0.26 (Meta-SGD paper)",
         ("metasgd-conv4", 20): "95.93 ± 0.38 (Meta-SGD paper)"}
PAPER_MINI = "miniImageNet 5w1s: DEML+Meta-SGD 58.49 ± 0.91 vs Meta-SGD 50.47 ± 1.87"
ROWS = ("metasgd-conv4", "concepts-no-disc", "deml")
COMMON = dict(split="maml", shots=1, queries=5, inner_lr=0.4, inner_steps=1, test_inner_steps=1,
              meta_batch=4, lr=1e-3, val_every=0, test_queries=15)


def row_configs(rows, lambdas, ways, steps, episodes, first_order, seed, data_dir):
    """(row name, lambda, Config) for each requested row at `ways`."""
    common = dict(COMMON, ways=ways, steps=steps, eval_episodes=episodes, seed=seed,
                  first_order=first_order, data_dir=data_dir, checkpoint_every=max(min(steps, 500), 1))
    out = []
    if "metasgd-conv4" in rows:
        out.append(("metasgd-conv4", None, make_config("metasgd", downsample="stride", width=64,
                                                       task_map="map", **common)))
    if "concepts-no-disc" in rows:
        out.append(("concepts-no-disc", 0.0, make_config("deml", concept_weight=0.0, **common)))
    if "deml" in rows:
        for lam in lambdas:
            out.append(("deml", lam, make_config("deml", concept_weight=lam, **common)))
    return out


def _key(row: dict) -> tuple:
    return row["ways"], row["row"], row["lambda"], row["first_order"]


def merge_earlier_rows(name: str, rows: list[dict]) -> list[dict]:
    """`rows` plus the rows of `results/<name>.json` (same step budget) that this invocation did
    not re-run (`common.earlier_rows`), so the ablation can be run a few rows at a
    time. Sorted by setting (20-way first), row, then lambda."""
    rows = earlier_rows(name, rows, _key, field="rows") + rows
    return sorted(rows, key=lambda r: (-r["ways"], ROWS.index(r["row"]), r["first_order"],
                                       -1.0 if r["lambda"] is None else r["lambda"]))


def _score(r: dict, field: str = "") -> str:
    if r.get(f"{field}accuracy") is None:
        return "–"
    return f"{r[f'{field}accuracy']:.2f} ± {r[f'{field}ci95']:.2f}"


def verdicts(rows: list[dict]) -> list[dict]:
    """Per setting, the issue's comparison: DEML with lambda chosen on the validation classes
    (never on the test episodes) against Meta-SGD on conv4. "Beats" means the 95% intervals of the
    two test accuracies do not overlap."""
    out = []
    for ways, first_order in sorted({(r["ways"], r["first_order"]) for r in rows}, reverse=True):
        same = [r for r in rows if r["ways"] == ways and r["first_order"] == first_order]
        base = next((r for r in same if r["row"] == "metasgd-conv4"), None)
        no_disc = next((r for r in same if r["row"] == "concepts-no-disc"), None)
        deml = [r for r in same if r["row"] == "deml" and r.get("val_accuracy") is not None]
        if base is None or not deml:
            continue
        best = max(deml, key=lambda r: r["val_accuracy"])
        diff = best["accuracy"] - base["accuracy"]
        out.append({"ways": ways, "first_order": first_order, "lambda": best["lambda"],
                    "deml": best["accuracy"], "deml_ci95": best["ci95"],
                    "metasgd_conv4": base["accuracy"], "metasgd_conv4_ci95": base["ci95"],
                    "difference": diff, "beats": diff > best["ci95"] + base["ci95"],
                    "lambda_candidates": sorted(r["lambda"] for r in deml),
                    "no_disc": None if no_disc is None else no_disc["accuracy"]})
    return out


def verdict_line(v: dict) -> str:
    line = (f"{v['ways']}-way 1-shot{', first order' if v['first_order'] else ''}: DEML with "
            f"lambda = {v['lambda']:g} (chosen on the validation classes among "
            f"{', '.join(f'{x:g}' for x in v['lambda_candidates'])}) scores {v['deml']:.2f} ± "
            f"{v['deml_ci95']:.2f} against Meta-SGD on conv4 {v['metasgd_conv4']:.2f} ± "
            f"{v['metasgd_conv4_ci95']:.2f}: {v['difference']:+.2f} points, "
            + ("**beats it by more than the confidence intervals**" if v["beats"]
               else "**not** more than the confidence intervals"))
    if v["no_disc"] is not None:
        line += (f"; the same concept generator without the discriminator: {v['no_disc']:.2f} "
                 f"({v['deml'] - v['no_disc']:+.2f} points from the discriminator)")
    return line + "."


def write_table(name: str, rows: list[dict], args, steps: int, episodes: int,
                start: float) -> None:
    """Prints the ablation table and the verdicts, and writes `results/<name>.{json,md}`."""
    lines = ["| setting | row | lambda | acc. % (ours, 95% CI) | val. acc. % | episodes | "
             "steps x meta-batch | first order | s/step | train s | paper |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lam = "–" if r["lambda"] is None else f"{r['lambda']:g}"
        lines.append(f"| {r['ways']}-way 1-shot | {r['row']} | {lam} | {_score(r)} | "
                     f"{_score(r, 'val_')} | {r['episodes']} | {r['steps']} x {r['meta_batch']} | "
                     f"{r['first_order']} | {r['s_per_step']:.3f} | {r['train_time_s']:.0f} | "
                     f"{r['paper']} |")
    found = verdicts(rows)
    table = "\n".join(lines) + (
        "\n\nValidation accuracy: the same number of episodes from the 400 validation classes; "
        "DEML's lambda is chosen on it, never on the test episodes.\n\n"
        + "".join(f"- {verdict_line(v)}\n" for v in found)
        + f"\nPaper (Zhou et al. 2018): {PAPER_MINI}.")
    print(table)
    write_results(name, {
        "rows": rows, "verdicts": found, "machine": machine_info(),
        "wall_time_s": time.time() - start,
        "budget": {"steps": steps, "meta_batch": COMMON["meta_batch"],
                   "first_order": args.first_order, "eval_episodes": episodes},
        "protocol": COMMON}, table)


def trained_row(config, run_dir: Path) -> dict:
    """The summary of a row: trained (or resumed) and scored on the test episodes, or, when the row
    already finished, its `summary.json` as it was (not trained or scored again, so its timings
    stay those of its training); a changed configuration is refused either way."""
    if (run_dir / "summary.json").exists():
        check_same_config(config, run_dir)
        return json.loads((run_dir / "summary.json").read_text())
    return train_and_evaluate(config, run_dir, resume=(run_dir / "checkpoints").exists(),
                              progress=False)


def validation_score(run_dir: Path, episodes: int) -> dict:
    """The row's accuracy on `episodes` episodes of the validation classes (kept in
    `eval_val.json`, reused when it has that many)."""
    path = run_dir / "eval_val.json"
    if path.exists():
        kept = json.loads(path.read_text())
        if kept.get("part") == "val" and kept.get("episodes") == episodes:
            return kept
    return evaluate_run(run_dir, episodes=episodes, part="val", progress=False)


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
    args = parser.parse_args()
    from metajax.allocator import reexec_with_allocator

    reexec_with_allocator()  # jemalloc or glibc tunables, as `metajax train` does
    start = time.time()
    steps = args.time_steps or args.steps
    episodes = 20 if args.time_steps else args.eval_episodes
    rows = []
    for ways in args.ways:
        for name, lam, config in row_configs(args.rows, args.lambdas, ways, steps, episodes,
                                             args.first_order, args.seed, args.data_dir):
            tag = f"{name}_lam{lam}" if lam is not None else name
            if args.time_steps:
                run_dir = Path(tempfile.mkdtemp(prefix="deml_timing_"))
            else:
                run_dir = Path(args.out) / f"{tag}_{ways}w1s_{steps}steps_seed{args.seed}"
            if args.time_steps:
                s = train_and_evaluate(config, run_dir, progress=False)
                val = {}
            else:
                s = trained_row(config, run_dir)
                v = validation_score(run_dir, episodes)
                val = {"val_accuracy": 100 * v["accuracy"], "val_ci95": 100 * v["ci95"]}
            s_per_step = 1 / s["steps_per_s"] if s["steps_per_s"] else None
            row = {"row": name, "lambda": lam, "ways": ways, "shots": 1,
                   "accuracy": 100 * s["accuracy"], "ci95": 100 * s["ci95"], **val,
                   "episodes": s["episodes"], "steps": config.steps,
                   "meta_batch": config.meta_batch, "first_order": config.first_order,
                   "s_per_step": s_per_step, "compile_s": s["compile_s"],
                   "train_time_s": s["train_wall_time_s"], "wall_time_s": s["wall_time_s"],
                   "machine": s.get("machine") or machine_info(),  # the load as the row ended
                   "paper": PAPER.get((name, ways), "–"), "config": s["config"],
                   "split": s["split"]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("config", "split")}),
                  flush=True)
            if not args.time_steps:  # after every row: a stopped session keeps what finished
                write_table(f"deml_omniglot_steps{steps}", merge_earlier_rows(
                    f"deml_omniglot_steps{steps}", rows), args, steps, episodes, start)
    if args.time_steps:
        for r in rows:
            print(f"{r['ways']}-way {r['row']} lambda={r['lambda']}: {r['s_per_step']:.3f} s/step "
                  f"(compile {r['compile_s']:.0f}s); 60 min = {3600 / r['s_per_step']:.0f} steps")
        write_table(f"deml_omniglot_{'_'.join(str(w) for w in args.ways)}w_timing", rows, args,
                    steps, episodes, start)


if __name__ == "__main__":
    main()
