"""Prototypical Networks on Omniglot: train once per shot count, test 5-way and 20-way.

As in Snell et al., one model is trained per shot count (train shot = test shot) and evaluated at
5-way and 20-way on the Vinyals test split, 1000 episodes of 15 queries per class. CPU-sized
defaults (30-way training episodes, a few thousand steps, about 15-20 minutes per shot count on 2
cores); `--full-protocol` gives the paper's 60-way schedule.

    python benchmarks/protonet_omniglot.py --shots 1
    python benchmarks/protonet_omniglot.py --shots 1 5 --full-protocol
"""

from __future__ import annotations

from pathlib import Path

from common import parse_with_allocator, report, train_then_score, training_parser

from metajax.bench.results import goal_cell
from metajax.config import make_config

PAPER = {(5, 1): 98.8, (20, 1): 96.0, (5, 5): 99.7, (20, 5): 98.9}
GOAL = {(5, 1): 97.5, (20, 1): 93.0}


def main() -> None:
    p = training_parser(__doc__, out="runs/bench_protonet", name="protonet_omniglot",
                        episodes=1000, steps_help="override the training steps")
    p.add_argument("--shots", type=int, nargs="+", default=[1])
    args = parse_with_allocator(p)

    rows = []
    for shots in args.shots:
        config = make_config("protonet", args.full_protocol, ways=5, shots=shots, steps=args.steps,
                             seed=args.seed, eval_episodes=args.episodes)
        rows += train_then_score(config, Path(args.out) / f"{shots}shot", args.episodes, PAPER,
                                 GOAL, progress=not args.no_progress)

    lines = ["| setting | ours (%) | 95% CI | paper (%) | goal | train steps | train time (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ways']}-way {r['shots']}-shot | {r['accuracy']:.2f} | "
                     f"±{r['ci95']:.2f} | {r['paper']} | {goal_cell(r['accuracy'], r['goal'])} | "
                     f"{r['train_steps']} | {r['train_time_s']:.0f} |")
    report(args.name, rows, lines)

if __name__ == "__main__":
    main()
