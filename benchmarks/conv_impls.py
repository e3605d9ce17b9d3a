"""Workload A's MAML meta-gradient with each formulation of conv4's convolution and max-pool.

Times, in one process and alternating between the variants so that drifts in the machine's
speed fall on all alike, the jitted meta-gradient of maml_speed.py's workload A (conv4 width 64
with max-pool, 5-way 1-shot, 15 queries per class, meta-batch 32, inner lr 0.4, one inner step,
tasks mapped one after another as the library's default does on a CPU):

- `im2col, corner-slice pool`: an earlier formulation of the max-pool JVP, which picked the
  tangent among the four corner slices of each window (kept here as the baseline);
- `im2col` and `winograd`: `Conv4(conv=...)` with the library's current max-pool;
- with `--with-xla`, `XLA's convolution` (`Conv4(conv="xla")`), XLA:CPU's own kernel.

Prints the median seconds per step, each variant's ratio to the first (median of per-round
ratios) and XLA's FLOP count of each compiled step (`metajax.bench.flops`).

    python benchmarks/conv_impls.py [--rounds 6] [--orders 1 2]
    python benchmarks/conv_impls.py --with-xla --orders 1 --rounds 3 --name conv_impls_xla
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import report

from metajax.allocator import current_allocator, reexec_with_allocator
from metajax.bench.flops import hlo_flops
from metajax.learners.maml import maml
from metajax.nets import Conv4, layers
from metajax.training.trainer import meta_gradient
from metajax.types import Task


@jax.custom_jvp
def corner_slice_pool(x):
    """The earlier max-pool: the tangent (and value) picked among the four corner slices."""
    return _pick(x, x)[0]


def _pick(x, *values):
    a, b, c, d = layers._corners(x)
    first = (a >= b) & (a >= c) & (a >= d)
    second = ~first & (b >= c) & (b >= d)
    third = ~first & ~second & (c >= d)

    def pick(v):
        va, vb, vc, vd = layers._corners(v)
        return jnp.where(first, va, jnp.where(second, vb, jnp.where(third, vc, vd)))

    return tuple(pick(v) for v in values)


@corner_slice_pool.defjvp
def _corner_slice_pool_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _pick(x, x, dx)


@contextlib.contextmanager
def pool_formulation(name: str):
    """Traces conv4 with the earlier max-pool JVP inside the block when `name` says so."""
    current = layers._max_pool_2x2
    if name == "corner-slice":
        layers._max_pool_2x2 = corner_slice_pool
    try:
        yield
    finally:
        layers._max_pool_2x2 = current


VARIANTS = [("im2col, corner-slice pool", "im2col", "corner-slice"),
            ("im2col", "im2col", "mask"),
            ("winograd", "winograd", "mask")]


def workload_a(meta_batch: int, seed: int = 0) -> Task:
    rng = np.random.default_rng(seed)
    labels = lambda k: jnp.asarray(np.tile(np.repeat(np.arange(5), k), (meta_batch, 1)))  # noqa: E731
    return Task(jnp.asarray(rng.random((meta_batch, 5, 28, 28, 1), np.float32)), labels(1),
                jnp.asarray(rng.random((meta_batch, 75, 28, 28, 1), np.float32)), labels(15), 5)


# XLA:CPU's own convolution, an order of magnitude slower on this workload: only with --with-xla.
XLA_VARIANT = ("XLA's convolution", "xla", "mask")


def measure(order: int, rounds: int, meta_batch: int, variants=VARIANTS) -> list[dict]:
    tasks = workload_a(meta_batch)
    keys = jax.random.split(jax.random.PRNGKey(0), meta_batch)
    one = jax.tree.map(lambda a: a[0], tasks)
    steps, rows = {}, []
    for label, conv, pool in variants:
        learner = maml(Conv4(num_outputs=5, conv=conv), 0.4, 1, first_order=order == 1)
        params = learner.init(jax.random.PRNGKey(1), one)
        fn = jax.jit(lambda p, learner=learner: meta_gradient(learner, p, tasks, keys, "auto"))
        with pool_formulation(pool):
            t0 = time.perf_counter()
            compiled = fn.lower(params).compile()
            compile_s = time.perf_counter() - t0
        jax.block_until_ready(compiled(params))  # one untimed step
        steps[label] = lambda compiled=compiled, params=params: jax.block_until_ready(
            compiled(params))
        rows.append({"variant": label, "conv": conv, "pool": pool, "order": order,
                     "meta_batch": meta_batch, "compile_s": compile_s,
                     "xla_gflop": hlo_flops(compiled.as_text()) / 1e9, "times_s": []})
    time_alternating(rows, steps, rounds, ratio_key="vs_first")
    for row in rows:
        row["min_s"] = min(row["times_s"])
    return rows


def time_alternating(rows: list[dict], steps: dict, rounds: int, ratio_key: str) -> None:
    """Times `steps[row["variant"]]()` for each row in turn, `rounds` times, so that drifts in the
    machine's speed fall on all alike; sets each row's `times_s`, `median_s` and, under
    `ratio_key`, the median of its per-round ratios to the first row."""
    for row in rows:
        row["times_s"] = []
    for _ in range(rounds):
        for row in rows:
            t0 = time.perf_counter()
            jax.block_until_ready(steps[row["variant"]]())
            row["times_s"].append(time.perf_counter() - t0)
    base = rows[0]["times_s"]
    for row in rows:
        row["median_s"] = statistics.median(row["times_s"])
        row[ratio_key] = statistics.median(t / b for t, b in zip(row["times_s"], base, strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6, help="timed steps of each, alternating")
    p.add_argument("--orders", type=int, nargs="+", default=[2, 1], choices=[1, 2])
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--with-xla", action="store_true",
                   help="also time XLA:CPU's own convolution (slow: tens of seconds a step)")
    p.add_argument("--name", default="conv_impls", help="results file name")
    args = p.parse_args()
    variants = [*VARIANTS, XLA_VARIANT] if args.with_xla else VARIANTS
    reexec_with_allocator()  # jemalloc or glibc tunables, as `metajax train` does
    t0 = time.time()
    rows = [r for order in args.orders
            for r in measure(order, args.rounds, args.meta_batch, variants)]
    lines = ["| order | variant | median s/step | min s | time vs first row | XLA GFLOP | "
             "compile s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['order']} | {r['variant']} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
              f"{r['vs_first']:.3f} | {r['xla_gflop']:.0f} | {r['compile_s']:.1f} |" for r in rows]
    lines += ["", f"Workload A (conv4 64, max-pool, 5-way 1-shot, 15 queries, meta-batch "
              f"{args.meta_batch}, 1 inner step), jitted meta-gradient, tasks mapped; "
              f"{args.rounds} alternating rounds after one untimed step. 'time vs first row' is "
              "the median of per-round ratios to the first variant of the same order."]
    report(args.name, rows, lines, allocator=current_allocator(), wall_s=time.time() - t0)


if __name__ == "__main__":
    main()
