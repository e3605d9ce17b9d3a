"""Where workload A's MAML step spends its time on a CPU: XLA's per-operation profile by kind.

Runs the jitted meta-gradient of workload A (conv4 width 64 with max-pool, 5-way 1-shot, 15
queries, one inner step, tasks mapped) under `jax.profiler`, then sums the time of each compiled
operation (thunk) by kind: YNN fusions and dots (the im2col convolutions' matrix products and
the head), the concatenations and pad/slice fusions that build im2col's patches, and the other
elementwise and reduction fusions (batch norm, ReLU, max-pool and their gradients). Prints a table
and the slowest operations with the HLO they compute; shares are of the summed operation time.

    python benchmarks/step_profile.py [--order 1] [--meta-batch 8]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax
from common import report
from conv_impls import workload_a

from metajax.allocator import current_allocator, reexec_with_allocator
from metajax.learners.maml import maml
from metajax.nets import Conv4
from metajax.training.trainer import meta_gradient

KINDS = ("YNN fusions and dots (the matrix products; a few reductions)",
         "im2col patches (concatenate, pad/slice)", "other elementwise and reductions")


def kind_of(name: str) -> str | None:
    """The kind of a profiled operation, or None for the executor's own events."""
    if name.startswith(("$", "ThunkExecutor", "SlinkyThreadPool")):
        return None
    if name.startswith(("ynn_fusion", "dot")):
        return KINDS[0]
    if name.startswith("concatenate") or "pad" in name or "slice_fusion" in name:
        return KINDS[1]
    return KINDS[2]


def profile(order: int, meta_batch: int) -> tuple[dict, str]:
    tasks = workload_a(meta_batch)
    keys = jax.random.split(jax.random.PRNGKey(0), meta_batch)
    learner = maml(Conv4(num_outputs=5), 0.4, 1, first_order=order == 1)
    params = learner.init(jax.random.PRNGKey(1), jax.tree.map(lambda a: a[0], tasks))
    compiled = jax.jit(lambda p: meta_gradient(learner, p, tasks, keys, "auto")).lower(
        params).compile()
    jax.block_until_ready(compiled(params))  # one untimed step
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params))
    step_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        jax.block_until_ready(compiled(params))
        jax.profiler.stop_trace()
        trace = sorted(Path(d).rglob("*.trace.json.gz"))[-1]
        events = json.load(gzip.open(trace))["traceEvents"]
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and kind_of(e["name"]):
            per_op[e["name"]] += e["dur"] / 1e6
    return {"order": order, "meta_batch": meta_batch, "step_s": step_s,
            "per_op_s": dict(per_op)}, compiled.as_text()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--order", type=int, default=1, choices=[1, 2])
    p.add_argument("--meta-batch", type=int, default=8)
    p.add_argument("--top", type=int, default=8, help="slowest operations listed")
    p.add_argument("--name", default="step_profile", help="results file name")
    args = p.parse_args()
    reexec_with_allocator()
    t0 = time.time()
    row, hlo = profile(args.order, args.meta_batch)
    by_kind = collections.Counter()
    for name, s in row["per_op_s"].items():
        by_kind[kind_of(name)] += s
    total = sum(by_kind.values())
    row["by_kind_s"] = dict(by_kind)
    row["share"] = {k: by_kind[k] / total for k in KINDS}
    lines = [f"Order {args.order}, meta-batch {args.meta_batch}: one step {row['step_s']:.3f} s "
             f"(unprofiled); operations sum to {total:.3f} s in the profiled step.", "",
             "| kind | seconds | share |", "|---|---|---|"]
    lines += [f"| {k} | {by_kind[k]:.3f} | {row['share'][k]:.1%} |" for k in KINDS]
    lines += ["", "Slowest operations (seconds over the step; the HLO each computes):", "",
              "| seconds | operation | shape | from |", "|---|---|---|---|"]
    for name, s in collections.Counter(row["per_op_s"]).most_common(args.top):
        m = re.search(rf"\n\s*%?{re.escape(name)} = (\S+) .*?op_name=\"([^\"]*)\"", hlo)
        shape, source = (m.group(1), m.group(2).split("/", 1)[-1][:80]) if m else ("?", "?")
        lines.append(f"| {s:.3f} | `{name}` | `{shape}` | `{source}` |")
    report(args.name, [row], lines, allocator=current_allocator(), wall_s=time.time() - t0)


if __name__ == "__main__":
    main()
