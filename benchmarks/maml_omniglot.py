"""MAML, first-order MAML, Meta-SGD, ANIL, Reptile, iMAML and ProtoMAML on Omniglot 5-way 1-shot: test
accuracy over 600 episodes with 95% CI, the papers' numbers beside ours.

Each method runs `metajax train ALGO` with its CPU defaults (`metajax/config.py`: MAML family
meta-batch 32, 13,000 steps, 1 inner step of lr 0.4 at training and 3 at test, stride-2 conv4 of
width 64, query set of 1 per class, the MAML split; Reptile 20,000 steps; iMAML meta-batch 16, 16
inner steps of lr 0.1, 3000 steps) - at most about 60 minutes per method on 2 CPU cores.
The paper's 60,000 steps are `--full-protocol`.

    python benchmarks/maml_omniglot.py                             # up to about 60 min per method
    python benchmarks/maml_omniglot.py --algos maml --steps 20 --eval-episodes 50   # smoke check

A run left in `--out` is resumed where it stopped; a finished one's `summary.json` is reused, or
evaluated again with `--rescore` (its training time kept). Methods run one at a time keep each
other's rows (each row has its own command and machine).
"""

from __future__ import annotations

import argparse
import dataclasses

from reproduce import Run, omniglot, reproduce

from metajax.allocator import reexec_with_allocator
from metajax.bench.results import paper

FINN = "Finn et al. 2017, Table 1"
# (algorithm, the paper's 5-way 1-shot figure); each trained at 5-way 1-shot with its CPU defaults
PAPERS = (
    ("maml", paper(0.987, FINN, 0.004, note="60,000 steps")),
    ("fomaml", paper(0.983, FINN, 0.005, note="MAML's first-order approximation, 60,000 steps")),
    ("metasgd", paper(0.9953, "Li et al. 2017, Table 2", 0.0026)),
    ("anil", paper(None, "Raghu et al. 2020", note="20-way 1-shot only: 96.2 ± 0.5, ± one std")),
    ("reptile", paper(0.9768, "Nichol et al. 2018", 0.0004,
                      note="with transduction; without: 95.39 ± 0.09")),
    ("imaml", paper(0.9916, "Rajeswaran et al. 2019, Table 2", 0.0035,
                    note="iMAML-GD, 16 inner steps, meta-batch 32, 20,000+ steps")),
    ("protomaml", paper(None, "Triantafillou et al. 2020",
                        note="Meta-Dataset only, no Omniglot N-way figure; goal: above MAML")),
)
RUNS = tuple(Run(algo, algo, {"ways": 5, "shots": 1}, scores=(omniglot(5, 1, figure),))
             for algo, figure in PAPERS)
ALGOS = tuple(run.method for run in RUNS)
# the markdown's columns beside the rows' (header -> key of a row's details or config)
COLUMNS = {"meta-batch": "meta_batch", "inner steps": "inner_steps",
           "test inner steps": "test_inner_steps", "resumed at": "start_step", "re-scored": "rescored"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--steps", type=int, help="meta-training steps (default: each CPU default)")
    parser.add_argument("--eval-episodes", type=int, default=600)
    parser.add_argument("--full-protocol", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/maml_omniglot", help="parent of the run folders")
    parser.add_argument("--data-dir")
    parser.add_argument("--name", help="results file name (default maml_omniglot, or "
                        "maml_omniglot_steps<N> with --steps)")
    parser.add_argument("--rescore", action="store_true",
                        help="evaluate finished runs in --out again (default: reuse their "
                             "summary.json)")
    args = parser.parse_args()
    reexec_with_allocator()  # jemalloc or glibc tunables, as `metajax train` does
    runs = [dataclasses.replace(run, folder=f"{run.method}_5w1s_seed{args.seed}")
            for run in RUNS if run.method in args.algos]
    name = args.name or ("maml_omniglot" if args.steps is None
                         else f"maml_omniglot_steps{args.steps}")
    reproduce(name, runs, out=args.out, full_protocol=args.full_protocol, rescore=args.rescore,
              order=ALGOS, cli=dict(steps=args.steps, seed=args.seed,
                                    eval_episodes=args.eval_episodes, data_dir=args.data_dir),
              columns=COLUMNS)


if __name__ == "__main__":
    main()
