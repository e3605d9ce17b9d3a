"""Metric learners on Omniglot: Relation, Matching and Siamese networks at 5-way and 20-way one-shot.

Each learner is trained once (5-way 1-shot test setting, the CPU-sized defaults of
`metajax.config.ALGO_DEFAULTS`, at most about 30 minutes each on 2 cores) on the Vinyals split and
evaluated at 5-way and 20-way 1-shot on its test classes, 1000 episodes of 15 queries per class. The
paper's numbers and our goals are printed beside ours. `--full-protocol` gives the papers' settings
(for a GPU).

    python benchmarks/metric_omniglot.py                       # relation, matching, siamese
    python benchmarks/metric_omniglot.py --algos relation --steps 20 --episodes 20   # smoke test
"""

from __future__ import annotations

from pathlib import Path

from common import parse_with_allocator, report, train_then_score, training_parser

from metajax.bench.results import goal_cell
from metajax.config import make_config

# (ways, shots) -> accuracy (%) in the papers (REFERENCE_RESULTS.md)
PAPER = {
    "relation": {(5, 1): 99.6, (20, 1): 97.6},
    "matching": {(5, 1): 98.1, (20, 1): 93.8},
    "siamese": {(5, 1): 96.7, (20, 1): 88.0},
    "protonet": {(5, 1): 98.8, (20, 1): 96.0},
}
GOAL = {"relation": {(5, 1): 98.5}, "matching": {(5, 1): 97.5}}
ALGOS = ("relation", "matching", "siamese", "protonet")


def main() -> None:
    p = training_parser(__doc__, out="runs/bench_metric", name=None, episodes=1000,
                        name_help="results file name (default: metric_omniglot_<algos joined by _>)")
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=["relation", "matching", "siamese"])
    args = parse_with_allocator(p)

    rows = []
    for algo in args.algos:
        config = make_config(algo, args.full_protocol, ways=5, shots=1, steps=args.steps,
                             seed=args.seed, eval_episodes=args.episodes)
        rows += train_then_score(config, Path(args.out) / algo, args.episodes, PAPER[algo],
                                 GOAL.get(algo, {}), progress=not args.no_progress)

    lines = ["| learner | setting | ours (%) | 95% CI | paper (%) | goal | train steps | "
             "train time (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['algo']} | {r['ways']}-way {r['shots']}-shot | {r['accuracy']:.2f} | "
                     f"±{r['ci95']:.2f} | {r['paper']} | {goal_cell(r['accuracy'], r['goal'])} | "
                     f"{r['train_steps']} | {r['train_time_s']:.0f} |")
    report(args.name or "metric_omniglot_" + "_".join(args.algos), rows, lines)

if __name__ == "__main__":
    main()
