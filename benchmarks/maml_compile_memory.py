"""Compile time and peak temporary memory of MAML's meta-gradient against inner steps, with and
without `remat` (jax.checkpoint on each inner step), on Omniglot-shaped tasks.

The inner loop is a `lax.scan`, so compile time should not grow with the number of steps (goal: 10
steps within 1.5x of 1 step); `remat` should cut the peak temporary memory of 10 steps at least 2x.
Memory is XLA's own estimate: `jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes`.

    python benchmarks/maml_compile_memory.py                 # about a minute on 2 CPU cores
    python benchmarks/maml_compile_memory.py --ways 20 --shots 5 --meta-batch 16
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from common import write_results

from metajax.bench.machine import machine_info
from metajax.learners.maml import maml
from metajax.nets import Conv4
from metajax.training import meta_gradient
from metajax.training.trainer import resolve_task_map
from metajax.types import Task


def omniglot_tasks(meta_batch: int, ways: int, shots: int, queries: int, size: int = 28) -> Task:
    rng = np.random.default_rng(0)
    labels = lambda k: np.tile(np.repeat(np.arange(ways), k), (meta_batch, 1))  # noqa: E731
    images = lambda k: rng.random((meta_batch, ways * k, size, size, 1), np.float32)  # noqa: E731
    return Task(images(shots), labels(shots), images(queries), labels(queries), ways)


def measure(steps: int, remat: bool, tasks: Task, args) -> dict:
    learner = maml(Conv4(width=args.width, num_outputs=args.ways, downsample="stride"),
                   inner_lr=0.4, steps=steps, remat=remat)
    params = learner.init(jax.random.PRNGKey(0), jax.tree.map(lambda x: x[0], tasks))
    keys = jax.random.split(jax.random.PRNGKey(1), args.meta_batch)
    fn = jax.jit(lambda p: meta_gradient(learner, p, tasks, keys, args.task_map))
    t0 = time.perf_counter()
    lowered = fn.lower(params)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    jax.block_until_ready(compiled(params))
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        jax.block_until_ready(compiled(params))
    return {"steps": steps, "remat": remat, "lower_s": lower_s, "compile_s": compile_s,
            "hlo_chars": len(lowered.as_text()),
            "temp_mib": memory.temp_size_in_bytes / 2**20,
            "argument_mib": memory.argument_size_in_bytes / 2**20,
            "step_s": (time.perf_counter() - t0) / args.repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--meta-batch", type=int, default=8, help="tasks (MAML 5-way: 32)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--task-map", choices=["auto", "vmap", "map"], default="auto",
                        help="how tasks are mapped (default: the library's, map on a CPU)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of the compiled step")
    args = parser.parse_args()
    args.task_map = resolve_task_map(args.task_map)
    start = time.time()
    tasks = omniglot_tasks(args.meta_batch, args.ways, args.shots, args.shots)
    rows = [measure(s, r, tasks, args) for s in args.steps for r in (False, True)]
    by = {(r["steps"], r["remat"]): r for r in rows}
    lo, hi = min(args.steps), max(args.steps)
    compile_ratio = by[(hi, False)]["compile_s"] / by[(lo, False)]["compile_s"]
    memory_ratio = by[(hi, False)]["temp_mib"] / by[(hi, True)]["temp_mib"]
    lines = ["| inner steps | remat | lower s | compile s | HLO chars | peak temp MiB | step s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['steps']} | {r['remat']} | {r['lower_s']:.2f} | {r['compile_s']:.2f} | "
              f"{r['hlo_chars']} | {r['temp_mib']:.1f} | {r['step_s']:.3f} |" for r in rows]
    lines += ["", f"Compile time, {hi} vs {lo} steps (no remat): {compile_ratio:.2f}x "
                  f"(goal <= 1.5x: {'met' if compile_ratio <= 1.5 else 'NOT met'}).",
              f"Peak temp memory at {hi} steps, without / with remat: {memory_ratio:.2f}x "
              f"(goal >= 2x: {'met' if memory_ratio >= 2 else 'NOT met'})."]
    settings = {"ways": args.ways, "shots": args.shots, "queries": args.shots,
                "meta_batch": args.meta_batch, "width": args.width, "image": "28x28x1",
                "network": "conv4, stride-2 convs, dense head", "inner_lr": 0.4,
                "task_map": args.task_map, "order": "second"}
    table = (f"MAML meta-gradient of a meta-batch, Omniglot-shaped: {settings}\n\n"
             + "\n".join(lines))
    print(table)
    write_results("maml_compile_memory", {
        "settings": settings, "rows": rows, "compile_ratio": compile_ratio,
        "memory_ratio": memory_ratio, "goals": {"compile_ratio_max": 1.5, "memory_ratio_min": 2.0},
        "machine": machine_info(), "wall_time_s": time.time() - start}, table)


if __name__ == "__main__":
    main()
