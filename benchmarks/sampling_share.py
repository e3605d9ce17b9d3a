"""Share of a meta-training step spent sampling episodes on the device.

Times the jitted train step (sampling + forward/backward + optax update) and the jitted sampler
alone (the same meta-batch of episodes), for the default ProtoNets configuration and, for a
lighter step, a 5-way one. Goal: sampling under 5% of the step.

    python benchmarks/sampling_share.py
"""

from __future__ import annotations

import argparse

import jax
from common import train_stepper, write_results

from metajax.allocator import reexec_with_allocator
from metajax.bench.machine import machine_info
from metajax.bench.timing import median_time
from metajax.config import make_config
from metajax.experiment import task_sources
from metajax.registry import build_learner


def measure(config, repeats: int) -> dict:
    sources, _ = task_sources(config)
    train = sources["train"]
    run_step = train_stepper(config, build_learner(config), train)
    sample_batch = jax.jit(lambda key, data: jax.vmap(train.sample, in_axes=(0, None))(
        jax.random.split(key, config.meta_batch), data))
    step_s = median_time(run_step, repeats, jax.block_until_ready)
    sample_s = median_time(lambda i: sample_batch(jax.random.PRNGKey(i), train.data), repeats * 5,
                           jax.block_until_ready)
    return {"train_ways": config.train_ways_, "shots": config.train_shots_,
            "queries": config.queries, "meta_batch": config.meta_batch,
            "step_s": step_s, "sample_s": sample_s, "share": sample_s / step_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    reexec_with_allocator()  # jemalloc or glibc tunables, as `metajax train` does
    configs = [make_config("protonet"), make_config("protonet", train_ways=5, meta_batch=4)]
    rows = [measure(c, args.repeats) for c in configs]
    lines = ["| episodes per step | step (ms) | sampling (ms) | sampling share | goal < 5% |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['meta_batch']} x {r['train_ways']}-way {r['shots']}-shot "
                     f"{r['queries']}-query | {1e3 * r['step_s']:.1f} | {1e3 * r['sample_s']:.2f} | "
                     f"{100 * r['share']:.2f}% | {'met' if r['share'] < 0.05 else 'NOT met'} |")
    table = "\n".join(lines)
    print(table)
    path = write_results("sampling_share", {"machine": machine_info(), "results": rows}, table)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
