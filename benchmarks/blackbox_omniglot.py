"""Black-box learners on Omniglot 5-way 1-shot (CS330 framing): SNAIL-style network and an LSTM over
the support set (and the mean-embedding feed-forward network), 600 test episodes, beside the papers'
numbers where there are some (SNAIL: Mishra et al. 2018).

    python benchmarks/blackbox_omniglot.py                     # CPU defaults (3000 steps each)
    python benchmarks/blackbox_omniglot.py --algos snail --steps 1000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import parse_with_allocator, report, train_then_score

from metajax.bench.results import goal_cell

PAPER = {"snail": {(5, 1): 99.07}}  # Mishra et al. 2018, Omniglot 5-way 1-shot
GOAL: dict = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="snail,lstm")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 3000)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--full-protocol", action="store_true")
    parser.add_argument("--runs-dir", default="runs/bench_blackbox")
    parser.add_argument("--name", default="blackbox_omniglot_5w1s")
    parser.add_argument("--progress", action="store_true")
    args = parse_with_allocator(parser)

    from metajax.config import make_config

    rows = []
    for algo in args.algos.split(","):
        config = make_config(algo, args.full_protocol, protocol="episodes", ways=5, shots=1,
                             steps=args.steps, eval_episodes=args.episodes)
        rows += train_then_score(config, Path(args.runs_dir) / algo, args.episodes,
                                 PAPER.get(algo, {}), GOAL.get(algo, {}), args.progress,
                                 test_ways=(5,))
    lines = ["| learner | setting | ours | paper | goal | steps | train time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = "" if r["paper"] is None else f"{r['paper']:.2f}"
        lines.append(f"| {r['algo']} | {r['ways']}-way {r['shots']}-shot | {r['accuracy']:.2f} ± "
                     f"{r['ci95']:.2f} | {paper} | {goal_cell(r['accuracy'], r['goal'])} | "
                     f"{r['train_steps']} | {r['train_time_s']:.0f} s |")
    lines.append(f"\n{args.episodes} test episodes (Vinyals split, 28 px, 15 queries per class), "
                 f"accuracy ± 95% CI in percent.")
    report(args.name, rows, lines)


if __name__ == "__main__":
    main()
