"""Metric learners on Omniglot: Relation, Matching and Siamese networks at 5-way and 20-way one-shot.

Each learner is trained once (5-way 1-shot test setting, the CPU-sized defaults of
`metajax.config.ALGO_DEFAULTS`, at most about 30 minutes each on 2 cores) on the Vinyals split and
evaluated at 5-way and 20-way 1-shot on its test classes, 1000 episodes of 15 queries per class. The
paper's numbers and our goals are written beside ours. `--full-protocol` gives the papers' settings
(for a GPU). A run left in `--out` is resumed; a finished one is reused (`--rescore` scores it
again).

    python benchmarks/metric_omniglot.py                       # relation, matching, siamese
    python benchmarks/metric_omniglot.py --algos relation --steps 20 --episodes 20   # smoke test
"""

from __future__ import annotations

from common import parse_with_allocator, training_parser
from reproduce import Run, omniglot, reproduce

from metajax.bench.results import paper

SUNG = "Sung et al. 2018, Table 1"
VINYALS = "Vinyals et al. 2016, Table 1"
KOCH = "Koch et al. 2015, as reported in Vinyals et al. 2016, Table 1"
SNELL = "Snell et al. 2017, Table 1"
# one model per learner, trained at 5-way 1-shot and scored at 5-way and 20-way
RUNS = (
    Run("relation", "relation", {"ways": 5, "shots": 1}, scores=(
        omniglot(5, 1, paper(0.996, SUNG, 0.002), goal=0.985),
        omniglot(20, 1, paper(0.976, SUNG, 0.002)))),
    Run("matching", "matching", {"ways": 5, "shots": 1}, scores=(
        omniglot(5, 1, paper(0.981, VINYALS), goal=0.975), omniglot(20, 1, paper(0.938, VINYALS)))),
    Run("siamese", "siamese", {"ways": 5, "shots": 1}, scores=(
        omniglot(5, 1, paper(0.967, KOCH)), omniglot(20, 1, paper(0.880, KOCH)))),
    Run("protonet", "protonet", {"ways": 5, "shots": 1}, scores=(
        omniglot(5, 1, paper(0.988, SNELL)), omniglot(20, 1, paper(0.960, SNELL)))),
)
ALGOS = tuple(run.method for run in RUNS)


def main() -> None:
    p = training_parser(__doc__, out="runs/bench_metric", name=None, episodes=1000,
                        name_help="results file name (default: metric_omniglot_<algos joined by _>)")
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=["relation", "matching", "siamese"])
    args = parse_with_allocator(p)
    reproduce(args.name or "metric_omniglot_" + "_".join(args.algos),
              [run for run in RUNS if run.method in args.algos], out=args.out,
              full_protocol=args.full_protocol, progress=not args.no_progress, rescore=args.rescore,
              order=ALGOS, cli=dict(steps=args.steps, seed=args.seed, eval_episodes=args.episodes))


if __name__ == "__main__":
    main()
