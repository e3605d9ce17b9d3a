"""Prototypical Networks on Omniglot: train once per shot count, test 5-way and 20-way.

As in Snell et al., one model is trained per shot count (train shot = test shot) and evaluated at
5-way and 20-way on the Vinyals test split, 1000 episodes of 15 queries per class. CPU-sized
defaults (30-way training episodes, a few thousand steps, about 15-20 minutes per shot count on 2
cores); `--full-protocol` gives the paper's 60-way schedule. A run left in `--out` is resumed; a
finished one is reused (`--rescore` scores it again).

    python benchmarks/protonet_omniglot.py --shots 1
    python benchmarks/protonet_omniglot.py --shots 1 5 --full-protocol
"""

from __future__ import annotations

from common import parse_with_allocator, training_parser
from reproduce import Run, omniglot, reproduce

from metajax.bench.results import paper

SNELL = "Snell et al. 2017, Table 1"
PROTOCOL = "60-way training episodes"


def snell(value: float) -> dict:
    return paper(value, SNELL, note=PROTOCOL)


RUNS = (
    Run("protonet", "protonet", {"ways": 5, "shots": 1}, folder="1shot", scores=(
        omniglot(5, 1, snell(0.988), goal=0.975), omniglot(20, 1, snell(0.960), goal=0.93))),
    Run("protonet", "protonet", {"ways": 5, "shots": 5}, folder="5shot", scores=(
        omniglot(5, 5, snell(0.997)), omniglot(20, 5, snell(0.989)))),
)


def run_for(shots: int) -> Run:
    """The declared run of this shot count, or one scored at 5-way and 20-way without a paper."""
    return next((run for run in RUNS if run.overrides["shots"] == shots),
                Run("protonet", "protonet", {"ways": 5, "shots": shots}, folder=f"{shots}shot",
                    scores=(omniglot(5, shots), omniglot(20, shots))))


def main() -> None:
    p = training_parser(__doc__, out="runs/bench_protonet", name="protonet_omniglot",
                        episodes=1000, steps_help="override the training steps")
    p.add_argument("--shots", type=int, nargs="+", default=[1])
    args = parse_with_allocator(p)
    reproduce(args.name, [run_for(shots) for shots in args.shots], out=args.out,
              full_protocol=args.full_protocol, progress=not args.no_progress, rescore=args.rescore,
              cli=dict(steps=args.steps, seed=args.seed, eval_episodes=args.episodes))


if __name__ == "__main__":
    main()
