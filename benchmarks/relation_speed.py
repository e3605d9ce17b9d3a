"""Relation networks' training step with and without forming the (class, query) pairs.

The relation module's first convolution is linear in its input, so `PairConv` convolves the N
class maps and the Q query maps once each instead of the Q x N concatenated pairs of the paper
(`pairwise=True`). Both give the same scores and gradients (tests/test_relation.py checks them in
float64); this times the jitted training step (sampling, forward, backward, Adam) of each on the
CPU default's episodes, alternating between the two so that drifts in the machine's speed fall
on both alike, and prints the ratio.

    python benchmarks/relation_speed.py [--repeats 30] [--ways 5 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
from common import report, train_stepper

from metajax.allocator import current_allocator, reexec_with_allocator
from metajax.config import make_config
from metajax.experiment import task_sources
from metajax.learners.relation import RelationNet, relation_net


def _stepper(config, pairwise: bool, train):
    """A function running one training step and waiting for it (the first call compiles), and
    that first call's time in seconds."""
    step = train_stepper(config, relation_net(RelationNet(width=config.width, pairwise=pairwise)),
                         train)

    def run():
        jax.block_until_ready(step())

    t0 = time.perf_counter()
    run()
    return run, time.perf_counter() - t0


def measure(ways: int, repeats: int) -> dict:
    config = make_config("relation", train_ways=ways)
    sources, _ = task_sources(config)
    train = sources["train"]
    runs, compile_s = {}, {}
    for pairwise in (False, True):
        runs[pairwise], compile_s[pairwise] = _stepper(config, pairwise, train)
        runs[pairwise]()  # one untimed step after compiling
    times = {False: [], True: []}
    for _ in range(repeats):
        for pairwise in (False, True):
            t0 = time.perf_counter()
            runs[pairwise]()
            times[pairwise].append(time.perf_counter() - t0)
    med = {p: statistics.median(t) for p, t in times.items()}
    return {"train_ways": ways, "queries": config.queries, "meta_batch": config.meta_batch,
            "repeats": repeats, "pairs_formed_s": med[True], "no_pairs_s": med[False],
            "pairs_formed_min_s": min(times[True]), "no_pairs_min_s": min(times[False]),
            "compile_pairs_formed_s": compile_s[True], "compile_no_pairs_s": compile_s[False],
            "speedup": med[True] / med[False]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="timed steps of each, alternating")
    p.add_argument("--ways", type=int, nargs="+", default=[5, 20],
                   help="training ways (the CPU default trains at 5)")
    args = p.parse_args()
    reexec_with_allocator()  # jemalloc or glibc tunables, as `metajax train` does
    t0 = time.time()
    rows = [measure(w, args.repeats) for w in args.ways]
    lines = ["| training episodes | pairs formed (ms/step) | no pairs (ms/step) | speed-up | "
             "compile, pairs / no pairs (s) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['meta_batch']} x {r['train_ways']}-way 1-shot {r['queries']}-query | "
                     f"{1e3 * r['pairs_formed_s']:.1f} | {1e3 * r['no_pairs_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['compile_pairs_formed_s']:.1f} / "
                     f"{r['compile_no_pairs_s']:.1f} |")
    lines += ["", "Median of alternating jitted training steps (sampling, forward, backward, "
              "Adam) after one untimed step."]
    report("relation_speed", rows, lines, allocator=current_allocator(),
           wall_s=time.time() - t0)


if __name__ == "__main__":
    main()
