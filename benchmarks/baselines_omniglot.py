"""Transfer-learning and multi-task baselines on Omniglot 5-way and 20-way 1-shot:
conv4 pre-trained as a classifier over all training classes, a new head fitted on each test
episode's support set (linear: `finetune`, cosine: `baseline++`), and `multitask` (a head per
fixed 5-class training task). 600 test episodes per setting, the same rows as the meta-learners'
benchmarks so that RESULTS.md puts them side by side. A run left in `--out` is resumed; a finished
one is reused (`--rescore` scores it again).

Chen et al. (2019) report conv4 baselines on miniImageNet only (Baseline 42.11, Baseline++ 48.24 in
5-way 1-shot); there is no Omniglot number from the paper.

    python benchmarks/baselines_omniglot.py                      # CPU defaults, ~10-15 min each
    python benchmarks/baselines_omniglot.py --algos finetune --steps 20 --episodes 20   # smoke
"""

from __future__ import annotations

from common import parse_with_allocator, training_parser
from reproduce import Run, omniglot, reproduce

from metajax.bench.results import paper

CHEN = paper(None, "Chen et al. 2019", note="miniImageNet only; no Omniglot figure")
RUNS = tuple(Run(algo, algo, {"ways": 5, "shots": 1},
                 scores=(omniglot(5, 1, CHEN if algo != "multitask" else None),
                         omniglot(20, 1, CHEN if algo != "multitask" else None)))
             for algo in ("finetune", "baseline++", "multitask"))
ALGOS = tuple(run.method for run in RUNS)


def main() -> None:
    p = training_parser(__doc__, out="runs/bench_baselines", name="baselines_omniglot",
                        episodes=600, steps_help="override the pre-training steps")
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    p.add_argument("--finetune-steps", type=int, default=None,
                   help="also fine-tune the whole network per episode (default: head only)")
    args = parse_with_allocator(p)
    reproduce(args.name, [run for run in RUNS if run.method in args.algos], out=args.out,
              full_protocol=args.full_protocol, progress=not args.no_progress, rescore=args.rescore,
              cli=dict(steps=args.steps, seed=args.seed, eval_episodes=args.episodes,
                       finetune_steps=args.finetune_steps))


if __name__ == "__main__":
    main()
