"""Black-box learners on Omniglot 5-way 1-shot (CS330 framing): SNAIL-style network and an LSTM over
the support set (and the mean-embedding feed-forward network), 600 test episodes, beside the papers'
numbers where there are some (SNAIL: Mishra et al. 2018). A run left in `--runs-dir` is resumed; a
finished one is reused (`--rescore` scores it again).

    python benchmarks/blackbox_omniglot.py                     # CPU defaults (3000 steps each)
    python benchmarks/blackbox_omniglot.py --algos snail --steps 1000
"""

from __future__ import annotations

import argparse

from common import parse_with_allocator
from reproduce import Run, omniglot, reproduce

from metajax.bench.results import paper

MISHRA = "Mishra et al. 2018, Table 1"
RUNS = (
    Run("snail", "snail", {"protocol": "episodes", "ways": 5, "shots": 1},
        scores=(omniglot(5, 1, paper(0.9907, MISHRA)),)),
    Run("lstm", "lstm", {"protocol": "episodes", "ways": 5, "shots": 1}, scores=(omniglot(5, 1),)),
    Run("feedforward", "feedforward", {"protocol": "episodes", "ways": 5, "shots": 1},
        scores=(omniglot(5, 1),)),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="snail,lstm",
                        help=f"comma-separated, of {','.join(run.method for run in RUNS)}")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 3000)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--full-protocol", action="store_true")
    parser.add_argument("--runs-dir", default="runs/bench_blackbox")
    parser.add_argument("--name", default="blackbox_omniglot_5w1s")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--rescore", action="store_true",
                        help="score finished runs again (default: reuse their summary.json)")
    args = parse_with_allocator(parser)
    algos = args.algos.split(",")
    unknown = sorted(set(algos) - {run.method for run in RUNS})
    if unknown:
        parser.error(f"unknown learners {unknown}; choose among {[run.method for run in RUNS]}")
    reproduce(args.name, [run for run in RUNS if run.method in algos], out=args.runs_dir,
              full_protocol=args.full_protocol, progress=args.progress, rescore=args.rescore,
              notes=[f"{args.episodes} test episodes (Vinyals split, 28 px, 15 queries per class)."],
              cli=dict(steps=args.steps, eval_episodes=args.episodes))


if __name__ == "__main__":
    main()
