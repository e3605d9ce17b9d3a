"""Peak memory of `metajax eval` against the number of test episodes, under each allocator choice.

An evaluation's memory must not grow with its episodes. Under glibc tunables that put every block
in the heap (`mmap_max=0`) with one arena, a 20-way ProtoNet evaluation grew with them; this script
measures each choice of `METAJAX_ALLOCATOR` (and, with `--tunables`, any GLIBC_TUNABLES string)
at two episode counts, each evaluation in a fresh process, its peak RSS from `wait4`.

    python benchmarks/eval_memory.py RUN_DIR --ways 20 --episodes 24 72
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import write_results

from metajax.allocator import allocator_env
from metajax.bench.machine import machine_info


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS of the process in MB, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a finished run folder (copied; its eval files are untouched)")
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--episodes", type=int, nargs=2, default=[24, 72])
    p.add_argument("--allocators", nargs="+", default=["glibc", "system"])
    p.add_argument("--tunables", nargs="*", default=[],
                   help="GLIBC_TUNABLES strings to measure as well (with METAJAX_ALLOCATOR=system)")
    p.add_argument("--name", default="eval_memory")
    args = p.parse_args()

    variants = [(a, allocator_env(a)) for a in args.allocators]
    variants += [(f"GLIBC_TUNABLES={t}", {"GLIBC_TUNABLES": t}) for t in args.tunables]
    base = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_CONF", "METAJAX_ALLOCATOR_SET")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        shutil.copytree(args.run_dir, run)
        for label, env in variants:
            row = {"allocator": label}
            for episodes in args.episodes:
                cmd = [sys.executable, "-m", "metajax", "eval", run, "--ways", str(args.ways),
                       "--episodes", str(episodes), "--no-progress"]
                # the variant's environment, marked as set so that metajax does not re-execute
                full = {**base, **env, "METAJAX_ALLOCATOR": "system", "METAJAX_ALLOCATOR_SET": "1"}
                rss, wall = peak_rss_mb(cmd, full)
                row[f"rss_mb_{episodes}"] = round(rss)
                row[f"wall_s_{episodes}"] = round(wall, 1)
                print(f"{label}: {episodes} episodes, peak RSS {rss:.0f} MB, {wall:.1f} s",
                      flush=True)
            lo, hi = args.episodes
            row["growth"] = round(row[f"rss_mb_{hi}"] / row[f"rss_mb_{lo}"], 2)
            rows.append(row)

    lo, hi = args.episodes
    table = "\n".join([
        f"| allocator | peak RSS at {lo} episodes (MB) | at {hi} (MB) | ratio | wall s ({lo} / {hi}) |",
        "|---|---|---|---|---|",
        *[f"| {r['allocator']} | {r[f'rss_mb_{lo}']} | {r[f'rss_mb_{hi}']} | {r['growth']:.2f} | "
          f"{r[f'wall_s_{lo}']} / {r[f'wall_s_{hi}']} |" for r in rows]])
    print(table)
    write_results(args.name, {"machine": machine_info(), "rows": rows,
                              "settings": {"run_dir": args.run_dir, "ways": args.ways,
                                           "episodes": args.episodes}}, table)


if __name__ == "__main__":
    main()
