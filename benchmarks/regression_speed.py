"""Regression check of a change: workload A's metajax MAML step and short trainings, old tree against new.

Speed: each tree's own `benchmarks/maml_speed.py` (which imports the metajax beside it) times
metajax's meta-step on workload A (conv4, 5-way 1-shot, meta-batch 32, 1 inner step), metajax rows
only, no float64 check. Old and new alternate (old, new, old, new, ...) per order, each measurement
a fresh maml_speed process; the ratio new/old of each pair and their median are reported.
`--train-check` also runs `metajax train protonet` (200 steps, 200 test episodes) and `metajax
train maml` (100 steps, 100 episodes), 5-way 1-shot, logging every step, with each tree, and
compares the losses of `metrics.jsonl` step by step and the test accuracy (a finished run in
`--work` is reused).

    python benchmarks/regression_speed.py --old /work/old --new . [--pairs 2] [--train-check]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report

TRAIN = {"protonet": (200, 200), "maml": (100, 100)}  # algo: (steps, test episodes)


def run(tree: Path, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """`cmd` run with the Python of this process in `tree`, importing that tree's metajax."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, *cmd], cwd=tree, env=env, text=True, check=True, **kw)


def speed(tree: Path, order: int, meta_batch: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="regression_speed_") as tmp:
        out = Path(tmp) / "out.json"
        run(tree, ["benchmarks/maml_speed.py", "--workload", "A", "--impls", "metajax", "--order",
                   str(order), "--inner-steps", "1", "--meta-batch", str(meta_batch), "--no-check",
                   "--repeats", str(repeats), "--results-dir", tmp, "--json", str(out)],
            capture_output=True)
        payload = json.loads(out.read_text())
    (row,) = payload["results"]
    if "median_s" not in row:
        raise SystemExit(f"{tree}: order {order}: {row}")
    return {"median_s": row["median_s"], "min_s": row["min_s"], "max_s": row["max_s"],
            "compile_s": row["compile_s"], "machine": payload["machine"],
            "allocator_env": payload["allocator_env"]}


def train(tree: Path, algo: str, run_dir: Path) -> dict:
    steps, episodes = TRAIN[algo]
    reused = (run_dir / "summary.json").exists()
    if not reused:
        run(tree, ["-m", "metajax", "train", algo, "--ways", "5", "--shots", "1", "--steps", str(steps),
                   "--eval-episodes", str(episodes), "--log-every", "1", "--no-progress",
                   "--out", str(run_dir)], capture_output=True)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    losses = {m["step"]: m["loss"] for m in map(json.loads, lines) if "loss" in m}
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"losses": losses, "accuracy": summary["accuracy"], "steps_per_s": summary.get("steps_per_s"),
            "reused": reused}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, required=True, help="source tree before the change")
    p.add_argument("--new", type=Path, required=True, help="source tree after the change")
    p.add_argument("--pairs", type=int, default=2, help="old/new measurements per order (0: no speed)")
    p.add_argument("--orders", default="2,1")
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5, help="maml_speed's --repeats (timed steps)")
    p.add_argument("--train-check", action="store_true", help="also compare short trainings")
    p.add_argument("--work", type=Path, default=Path("runs/regression"), help="training run folders")
    p.add_argument("--name", default="regression_speed", help="results file name")
    args = p.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    orders = [int(o) for o in args.orders.split(",")]
    t0 = time.time()
    rows, lines, machine, allocator = [], [], None, None
    for pair in range(args.pairs):
        for order in orders:
            times = {}
            for tag in ("old", "new"):
                times[tag] = speed(trees[tag], order, args.meta_batch, args.repeats)
                machine = times[tag].pop("machine")
                allocator = times[tag].pop("allocator_env")
                print(f"pair {pair + 1} order {order} {tag}: {times[tag]['median_s']:.3f} s", flush=True)
            rows.append({"order": order, "pair": pair + 1, "old": times["old"], "new": times["new"],
                         "ratio": times["new"]["median_s"] / times["old"]["median_s"]})
    ratios = {o: statistics.median(r["ratio"] for r in rows if r["order"] == o) for o in orders}
    if rows:
        lines = ["| order | pair | old median s (min) | new median s (min) | compile s old / new | new/old |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {r['order']} | {r['pair']} | {r['old']['median_s']:.3f} ({r['old']['min_s']:.3f}) | "
                  f"{r['new']['median_s']:.3f} ({r['new']['min_s']:.3f}) | {r['old']['compile_s']:.1f} / "
                  f"{r['new']['compile_s']:.1f} | {r['ratio']:.3f} |" for r in rows]
        lines += ["", f"Workload A, metajax only, meta-batch {args.meta_batch}, 1 inner step, median of "
                  f"{args.repeats}+ timed steps per fresh process; old and new alternate. Median new/old: "
                  + ", ".join(f"order {o} {ratios[o]:.3f}" for o in orders) + "."]
    checks = []
    if args.train_check:
        for algo in TRAIN:
            res = {tag: train(trees[tag], algo, args.work / f"{tag}_{algo}") for tag in trees}
            steps = sorted(set(res["old"]["losses"]) & set(res["new"]["losses"]))
            diff = max(abs(res["old"]["losses"][s] - res["new"]["losses"][s]) for s in steps)
            checks.append({"algo": algo, "steps": TRAIN[algo][0], "episodes": TRAIN[algo][1],
                           "steps_compared": len(steps), "max_abs_loss_diff": diff,
                           "accuracy_old": res["old"]["accuracy"], "accuracy_new": res["new"]["accuracy"],
                           "accuracy_diff": abs(res["old"]["accuracy"] - res["new"]["accuracy"]),
                           "final_loss_old": res["old"]["losses"][steps[-1]],
                           "final_loss_new": res["new"]["losses"][steps[-1]],
                           "steps_per_s_old": res["old"]["steps_per_s"],
                           "steps_per_s_new": res["new"]["steps_per_s"],
                           "reused_runs": [t for t in trees if res[t]["reused"]]})
        lines += ["", "| train check (5-way 1-shot) | steps compared | max abs loss diff | "
                  "test acc old / new (%) | acc diff |", "|---|---|---|---|---|"]
        lines += [f"| {c['algo']} {c['steps']} steps, {c['episodes']} episodes | {c['steps_compared']} | "
                  f"{c['max_abs_loss_diff']:.3g} | {100 * c['accuracy_old']:.2f} / "
                  f"{100 * c['accuracy_new']:.2f} | {100 * c['accuracy_diff']:.3g} |" for c in checks]
    extra = {"machine": machine, "allocator_env": allocator} if machine else {}
    report(args.name, rows, lines, trees={k: str(v) for k, v in trees.items()}, orders=orders,
           meta_batch=args.meta_batch, median_ratio={str(o): r for o, r in ratios.items()},
           train_check=checks, wall_s=round(time.time() - t0, 1), **extra)


if __name__ == "__main__":
    main()
