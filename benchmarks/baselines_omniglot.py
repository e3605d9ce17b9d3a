"""Transfer-learning and multi-task baselines on Omniglot 5-way and 20-way 1-shot (issue 8):
conv4 pre-trained as a classifier over all training classes, a new head fitted on each test
episode's support set (linear: `finetune`, cosine: `baseline++`), and `multitask` (a head per
fixed 5-class training task). 600 test episodes per setting, same table layout as the
meta-learners' benchmarks so that RESULTS.md puts them side by side.

Chen et al. (2019) report conv4 baselines on miniImageNet only (REFERENCE_RESULTS.md: Baseline
42.11, Baseline++ 48.24 in 5-way 1-shot); there is no Omniglot number from the paper.

    python benchmarks/baselines_omniglot.py                      # CPU defaults, ~10-15 min each
    python benchmarks/baselines_omniglot.py --algos finetune --steps 20 --episodes 20   # smoke
"""

from __future__ import annotations

from pathlib import Path

from common import parse_with_allocator, report, train_then_score, training_parser

from metajax.config import make_config

ALGOS = ("finetune", "baseline++", "multitask")


def main() -> None:
    p = training_parser(__doc__, out="runs/bench_baselines", name="baselines_omniglot",
                        episodes=600, steps_help="override the pre-training steps")
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    p.add_argument("--finetune-steps", type=int, default=None,
                   help="also fine-tune the whole network per episode (default: head only)")
    args = parse_with_allocator(p)
    rows = []
    for algo in args.algos:
        config = make_config(algo, args.full_protocol, ways=5, shots=1, steps=args.steps,
                             seed=args.seed, eval_episodes=args.episodes,
                             finetune_steps=args.finetune_steps)
        rows += train_then_score(config, Path(args.out) / algo, args.episodes, {}, {},
                                 progress=not args.no_progress)
    lines = ["| baseline | setting | ours (%) | 95% CI | pre-training steps | train time (s) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['algo']} | {r['ways']}-way {r['shots']}-shot | {r['accuracy']:.2f} | "
                     f"±{r['ci95']:.2f} | {r['train_steps']} | {r['train_time_s']:.0f} |")
    report(args.name, rows, lines)


if __name__ == "__main__":
    main()
