"""`benchmarks/device_check.sh --dry-run`: the GPU check rehearsed on the CPU. Every
planned `maml_speed.py` command is validated by maml_speed's own parser, and workload B runs end to
end at tiny sizes through both phases (float64 check and compile in parallel into a shared
compilation cache, then the timed run reading its step back, the checks merged into its results)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_dry_run(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
           # an inherited flag that turns autotuning off must be removed, not passed on
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_gpu_autotune_level=0".strip()}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the script sets its own
    proc = subprocess.run(["bash", str(REPO / "benchmarks/device_check.sh"), "--dry-run",
                           "--results-dir", str(results)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # every planned command parsed, with the names the GPU run will write
    for name in ("maml_speed_A_gpu_T2_q1", "maml_speed_B_gpu_T2", "maml_speed_A_gpu_k5_T2_q1"):
        assert f"writes {name}.{{json,md,png}}" in log
    assert "removing --xla_gpu_autotune_level" in log

    # workload B's files, in the results folder and (json, md, log, archive) in $OUT
    for suffix in ("json", "md", "png"):
        assert (results / f"maml_speed_B_T2.{suffix}").stat().st_size > 0
    returned = sorted(p.name for p in out.iterdir())
    assert {"maml_speed_B_T2.json", "maml_speed_B_T2.md", "device_check.log",
            "device_check_files.tar"} <= set(returned)
    assert len(returned) <= 8 and all(p.is_file() for p in out.iterdir())
    assert "done in" in (out / "device_check.log").read_text()

    payload = json.loads((results / "maml_speed_B_T2.json").read_text())
    assert "autotune" not in payload["xla_flags"]
    rows = {r["impl"]: r for r in payload["results"]}
    assert list(rows) == ["metajax", "learn2learn", "torch"]
    metajax = rows["metajax"]
    assert metajax["status"] == "ok" and metajax["median_s"] > 0 and metajax["meta_batch"] == 2
    # the timed process read the step the first phase compiled
    assert metajax["step_from_compile_cache"] is True
    # the first phase's float64 checks were merged into every row
    device = payload["device_check"]
    assert set(device["merged_into_rows"]) == {f"{impl} order 2" for impl in rows}
    assert set(device["float64_checks"]) == {f"{impl} order 2" for impl in rows}
    if metajax["check"] == "pass":  # torch importable: the float64 reference ran
        assert metajax["check_grad_rel_err"] <= 1e-9
    else:
        assert metajax["check"] == "n/a" and "reference" in metajax["check_reason"]
    assert device["cold_compile"] and device["cold_compile"][0]["from_cache"] is False
    md = (results / "maml_speed_B_T2.md").read_text()
    assert "| metajax | 2 | 1 | 2 |" in md and "## Conditions (written by benchmarks/device_check.sh)" in md
