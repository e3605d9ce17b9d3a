"""Wall time of the test suite's tiers on this machine, with the slowest tests of each.

Runs README command 2's `python -m pytest -q` (the default tier) and, unless `--default-only`,
the long tier (`-m slow`), each in a fresh process with a fresh compilation cache, as CI does.
Goal: the default tier under 8 minutes on 2 cores.

    python benchmarks/suite_time.py
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import write_results

from metajax.bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 8 * 60
TIERS = {"default": [], "slow": ["-m", "slow"]}
_DURATION = re.compile(r"^([0-9.]+)s (call|setup|teardown)\s+(\S+)$")
_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|deselected|error|errors)\b")


def run_tier(name: str, slowest: int) -> dict:
    """One tier: its wall time, the counts pytest reports and its `slowest` longest test phases."""
    cmd = [sys.executable, "-m", "pytest", "-q", f"--durations={slowest}", *TIERS[name]]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - start
    lines = proc.stdout.splitlines()
    counts = {}
    for key_value in _SUMMARY.findall(lines[-1] if lines else ""):
        counts[key_value[1]] = int(key_value[0])
    durations = [{"seconds": float(m[1]), "phase": m[2], "test": m[3]}
                 for m in map(_DURATION.match, lines) if m]
    if proc.returncode not in (0, 5):
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", file=sys.stderr)
    return {"tier": name, "command": " ".join(["python", *cmd[1:]]), "exit_code": proc.returncode,
            "wall_s": wall, "counts": counts, "slowest": durations}


def table(rows: list[dict]) -> str:
    lines = ["| tier | wall time | tests passed | failed | exit code | goal (default < 8 min) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        goal = ("met" if r["wall_s"] < GOAL_S else "NOT met") if r["tier"] == "default" else ""
        lines.append(f"| {r['tier']} | {r['wall_s'] / 60:.1f} min | {r['counts'].get('passed', 0)} | "
                     f"{r['counts'].get('failed', 0)} | {r['exit_code']} | {goal} |")
    for r in rows:
        lines += ["", f"Slowest test phases, {r['tier']} tier (seconds in one xdist worker):", "",
                  "| seconds | phase | test |", "|---|---|---|"]
        lines += [f"| {d['seconds']:.1f} | {d['phase']} | `{d['test']}` |" for d in r["slowest"]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--default-only", action="store_true", help="time the default tier only")
    p.add_argument("--slowest", type=int, default=12, help="slowest test phases listed per tier")
    p.add_argument("--name", default="suite_time")
    args = p.parse_args()
    rows = [run_tier(t, args.slowest) for t in (["default"] if args.default_only else TIERS)]
    text = table(rows)
    print(text)
    load = os.getloadavg()
    path = write_results(args.name, {"machine": machine_info(), "results": rows,
                                     "settings": {"load_average_at_end": load}}, text)
    print(f"results written to {path}")
    sys.exit(max(r["exit_code"] for r in rows))


if __name__ == "__main__":
    main()
