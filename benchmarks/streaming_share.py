"""The host-streaming path's cost: training steps per second with episodes sampled on the device
against episodes gathered on the host from a memory-mapped file and prefetched (double-buffered),
and the host's gather time per meta-batch as a share of the step.

ProtoNets (conv4) on Omniglot's 28 px background characters, in one process, the two paths
alternating `--rounds` times so that drift in the machine's speed hits both.

    python benchmarks/streaming_share.py                    # a few minutes on 2 CPU cores
    python benchmarks/streaming_share.py --ways 20 --meta-batch 8 --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import parse_with_allocator, write_results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--meta-batch", type=int, default=16)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=60, help="timed steps per round and path")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir")
    args = parse_with_allocator(p)

    import jax
    import numpy as np
    import optax

    from metajax.bench.machine import machine_info
    from metajax.data import episode_sampler, load_omniglot
    from metajax.data.streaming import HostEpisodes, save_memmap
    from metajax.learners import protonet
    from metajax.nets import Conv4
    from metajax.training import train

    start = time.time()
    omniglot = load_omniglot(28, data_dir=args.data_dir, download_missing=False)
    images = omniglot.images[:964, :, :, :, None]  # the background characters, [964, 20, 28, 28, 1]
    learner = protonet(Conv4(width=args.width))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mapped = save_memmap(images, Path(tmp) / "background.npy")
        stream = HostEpisodes(mapped, args.ways, args.shots, args.queries, args.meta_batch)
        sample = episode_sampler(args.ways, args.shots, args.queries)
        example = stream.on_device(jax.tree.map(lambda x: x[0], stream.batch(0)))
        gathers = []
        for i in range(20):
            t0 = time.perf_counter()
            stream.batch(1000 + i)
            gathers.append(time.perf_counter() - t0)
        gather_s = statistics.median(gathers)
        for r in range(args.rounds):
            for path in ("device", "host stream"):
                data, fn = (np.asarray(images), sample) if path == "device" else (stream, None)
                _, stats = train(learner, optax.adam(1e-3), fn, data, steps=args.steps + 1,
                                 meta_batch=args.meta_batch, seed=r, out_dir=Path(tmp) / f"{path}{r}",
                                 example_task=example, checkpoint_every=10**9,
                                 log_every=10**9, progress=False, task_map="auto")
                rows.append({"round": r, "path": path, "step_s": 1 / stats["steps_per_s"],
                             "compile_s": stats["compile_s"]})
                print(f"round {r}, {path}: {rows[-1]['step_s']:.4f} s/step", flush=True)
    step = {path: statistics.median(r["step_s"] for r in rows if r["path"] == path)
            for path in ("device", "host stream")}
    ratio = step["host stream"] / step["device"]
    share = gather_s / step["device"]
    table = "\n".join([
        "| path | median s/step | vs on-device |", "|---|---|---|",
        f"| episodes sampled on the device | {step['device']:.4f} | 1.00x |",
        f"| gathered on the host (memory-mapped), prefetched | {step['host stream']:.4f} | "
        f"{ratio:.2f}x |", "",
        f"Host gather of one meta-batch: {1000 * gather_s:.1f} ms (median of 20), "
        f"{100 * share:.1f} % of an on-device step; prefetching runs it beside the step."])
    settings = {"learner": "protonet", "network": f"conv4 width {args.width}", "ways": args.ways,
                "shots": args.shots, "queries": args.queries, "meta_batch": args.meta_batch,
                "classes": int(images.shape[0]), "image": "28x28x1", "steps": args.steps,
                "rounds": args.rounds}
    print(table)
    write_results("streaming_share", {"settings": settings, "rows": rows, "median_step_s": step,
                                      "gather_s": gather_s, "gather_share": share,
                                      "stream_over_device": ratio, "machine": machine_info(),
                                      "wall_time_s": time.time() - start}, table)


if __name__ == "__main__":
    main()
