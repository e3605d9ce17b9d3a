"""Prototypical Networks on Omniglot: train once per shot count, test 5-way and 20-way.

As in Snell et al., one model is trained per shot count (train shot = test shot) and evaluated at
5-way and 20-way on the Vinyals test split, 1000 episodes of 15 queries per class. CPU-sized
defaults (30-way training episodes, a few thousand steps, about 15-20 minutes per shot count on 2
cores); `--full-protocol` gives the paper's 60-way schedule.

    python benchmarks/protonet_omniglot.py --shots 1
    python benchmarks/protonet_omniglot.py --shots 1 5 --full-protocol
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402

from metajax.config import make_config  # noqa: E402
from metajax.experiment import evaluate_run, machine_info, train_and_evaluate  # noqa: E402

PAPER = {(5, 1): 98.8, (20, 1): 96.0, (5, 5): 99.7, (20, 5): 98.9}
GOAL = {(5, 1): 97.5, (20, 1): 93.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shots", type=int, nargs="+", default=[1])
    p.add_argument("--steps", type=int, help="override the training steps")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-protocol", action="store_true")
    p.add_argument("--out", default="runs/bench_protonet")
    p.add_argument("--name", default="protonet_omniglot", help="results file name")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()

    rows = []
    for shots in args.shots:
        config = make_config("protonet", args.full_protocol, ways=5, shots=shots, steps=args.steps,
                             seed=args.seed, eval_episodes=args.episodes)
        run_dir = Path(args.out) / f"{shots}shot"
        start = time.time()
        summary = train_and_evaluate(config, run_dir, resume=(run_dir / "checkpoints").exists(),
                                     progress=not args.no_progress)
        train_time = summary["train_wall_time_s"]
        for ways in (5, 20):
            t0 = time.time()
            r = (summary if ways == 5 else
                 evaluate_run(run_dir, ways=ways, shots=shots, episodes=args.episodes,
                              progress=not args.no_progress))
            rows.append({
                "ways": ways, "shots": shots, "accuracy": 100 * r["accuracy"],
                "ci95": 100 * r["ci95"], "episodes": r["episodes"],
                "paper": PAPER.get((ways, shots)), "goal": GOAL.get((ways, shots)),
                "train_steps": config.steps, "train_time_s": round(train_time, 1),
                "eval_time_s": round(time.time() - t0 if ways != 5 else 0, 1),
                "run_wall_time_s": round(time.time() - start, 1),
                "steps_per_s": summary["steps_per_s"], "config": summary["config"],
                "split": summary["split"],
            })

    lines = ["| setting | ours (%) | 95% CI | paper (%) | goal | train steps | train time (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        goal = "" if r["goal"] is None else (
            f">= {r['goal']} {'met' if r['accuracy'] >= r['goal'] else 'NOT met'}")
        lines.append(f"| {r['ways']}-way {r['shots']}-shot | {r['accuracy']:.2f} | "
                     f"±{r['ci95']:.2f} | {r['paper']} | {goal} | {r['train_steps']} | "
                     f"{r['train_time_s']:.0f} |")
    table = "\n".join(lines)
    print(table)
    path = write_results(args.name, {"machine": machine_info(), "results": rows}, table)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
