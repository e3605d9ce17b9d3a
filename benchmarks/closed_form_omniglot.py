"""R2D2 and MetaOptNet on Omniglot 1-shot: train once, test 5-way and 20-way.

Each method runs `metajax train ALGO` with its CPU defaults (`metajax/config.py`: ProtoNets'
settings, conv4 of width 64 on 28 px images, 30-way 1-shot training episodes with 5 queries per
class, 3000 steps of Adam 1e-3 halved every 1000, the Vinyals split), then is scored on 1000 test
episodes of 15 queries per class at 5-way and at 20-way, as ProtoNets are
(`benchmarks/protonet_omniglot.py`). The goal is ProtoNets' figures at the same budget.

    python benchmarks/closed_form_omniglot.py                     # about 15-20 min per method
    python benchmarks/closed_form_omniglot.py --algos r2d2 --steps 20 --episodes 50   # smoke check
"""

from __future__ import annotations

from common import parse_with_allocator, training_parser
from reproduce import Run, omniglot, reproduce

from metajax.bench.results import paper

BERTINETTO = "Bertinetto et al. 2019, Omniglot table"
R2D2_NET = "their wider 4-layer CNN and training schedule"
# ProtoNets' committed figures at this budget (benchmarks/results/protonet_omniglot.md)
PROTONET = {5: 0.9783, 20: 0.9330}


def _scores(algo: str) -> tuple:
    figure = {5: 0.986, 20: 0.947} if algo == "r2d2" else {5: None, 20: None}
    source = BERTINETTO if algo == "r2d2" else "Lee et al. 2019"
    note = R2D2_NET if algo == "r2d2" else "miniImageNet, tieredImageNet, CIFAR-FS, FC100 only"
    return tuple(omniglot(ways, 1, paper(figure[ways], source, note=note), goal=PROTONET[ways])
                 for ways in (5, 20))


RUNS = (
    Run("r2d2", "r2d2", {"ways": 5, "shots": 1}, folder="r2d2_1shot", scores=_scores("r2d2")),
    Run("metaoptnet (SVM)", "metaoptnet", {"ways": 5, "shots": 1, "head": "svm"},
        folder="metaoptnet_svm_1shot", scores=_scores("metaoptnet")),
)
ALGOS = {"r2d2": RUNS[0], "metaoptnet": RUNS[1]}


def main() -> None:
    p = training_parser(__doc__, out="runs/bench_closed_form", name="closed_form_omniglot",
                        episodes=1000, steps_help="override the training steps")
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    args = parse_with_allocator(p)
    reproduce(args.name, [ALGOS[a] for a in args.algos], out=args.out,
              full_protocol=args.full_protocol, progress=not args.no_progress, rescore=args.rescore,
              cli=dict(steps=args.steps, seed=args.seed, eval_episodes=args.episodes))


if __name__ == "__main__":
    main()
