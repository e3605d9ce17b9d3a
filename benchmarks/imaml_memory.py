"""Memory of iMAML's meta-gradient against MAML's as the inner steps grow, on Omniglot-shaped tasks.

iMAML differentiates the inner solution implicitly (conjugate gradient on Hessian-vector
products), so its memory should not depend on the number of inner steps; second-order MAML keeps
every step's activations for the backward pass (or recomputes them with remat). Each
(learner, steps) runs in a fresh process: XLA's temporary buffer size of the jitted meta-gradient
(`memory_analysis().temp_size_in_bytes`), the process's peak RSS after compiling and running it,
and the step time.

    python benchmarks/imaml_memory.py                       # a few minutes on 2 CPU cores
    python benchmarks/imaml_memory.py --steps 5 50 --meta-batch 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

LEARNERS = ("maml", "maml (remat)", "imaml")


def child(learner_name: str, steps: int, args) -> dict:
    import jax
    from maml_compile_memory import omniglot_tasks

    from metajax.learners import imaml, maml
    from metajax.nets import Conv4
    from metajax.training import meta_gradient
    from metajax.training.trainer import resolve_task_map

    net = Conv4(width=args.width, num_outputs=args.ways, downsample="stride")
    if learner_name == "imaml":
        learner = imaml(net, inner_lr=0.1, steps=steps, lam=2.0, cg_steps=5, cg_damping=1.0)
    else:
        learner = maml(net, inner_lr=0.4, steps=steps, remat=learner_name == "maml (remat)")
    tasks = omniglot_tasks(args.meta_batch, args.ways, args.shots, args.shots)
    params = learner.init(jax.random.PRNGKey(0), jax.tree.map(lambda x: x[0], tasks))
    keys = jax.random.split(jax.random.PRNGKey(1), args.meta_batch)
    fn = jax.jit(lambda p: meta_gradient(learner, p, tasks, keys, resolve_task_map("auto")))
    compiled = fn.lower(params).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(compiled(params))
    start = time.perf_counter()
    for _ in range(args.repeats):
        jax.block_until_ready(compiled(params))
    step_s = (time.perf_counter() - start) / args.repeats
    return {"learner": learner_name, "steps": steps, "temp_mib": temp / 2**20,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "step_s": step_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("LEARNER", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args)))
        return

    from common import write_results

    from metajax.bench.machine import machine_info

    start = time.time()
    rows = []
    passed = [a for a in sys.argv[1:]]
    for name in args.learners:
        for steps in args.steps:
            out = subprocess.run([sys.executable, __file__, *passed, "--child", name, str(steps)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{name}, {steps} steps: temp {r['temp_mib']:.1f} MiB, peak RSS "
                  f"{r['peak_rss_mib']:.0f} MiB, {r['step_s']:.3f} s", flush=True)
    by = {(r["learner"], r["steps"]): r for r in rows}
    lo, hi = min(args.steps), max(args.steps)
    lines = ["| learner | inner steps | XLA temp MiB | peak RSS MiB | step s |", "|---|---|---|---|---|"]
    lines += [f"| {r['learner']} | {r['steps']} | {r['temp_mib']:.1f} | {r['peak_rss_mib']:.0f} | "
              f"{r['step_s']:.3f} |" for r in rows]
    growth = {name: {"temp": by[(name, hi)]["temp_mib"] / by[(name, lo)]["temp_mib"],
                     "rss": by[(name, hi)]["peak_rss_mib"] / by[(name, lo)]["peak_rss_mib"]}
              for name in args.learners}
    lines += ["", f"From {lo} to {hi} inner steps: " + "; ".join(
        f"{name} temp x{g['temp']:.2f}, peak RSS x{g['rss']:.2f}" for name, g in growth.items())]
    settings = {"ways": args.ways, "shots": args.shots, "queries": args.shots,
                "meta_batch": args.meta_batch, "width": args.width, "image": "28x28x1",
                "network": "conv4, stride-2 convs, dense head", "maml": "inner lr 0.4, second order",
                "imaml": "inner lr 0.1, lambda 2, 5 CG steps, damping 1"}
    table = f"Meta-gradient of a meta-batch, Omniglot-shaped: {settings}\n\n" + "\n".join(lines)
    print(table)
    write_results("imaml_memory", {"settings": settings, "rows": rows, "growth": growth,
                                   "machine": machine_info(), "wall_time_s": time.time() - start},
                  table)


if __name__ == "__main__":
    main()
