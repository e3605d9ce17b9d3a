"""Timing of a step inside its own process: `time_steps` (a meta-step after its first call and a
warm-up, median / min / max over the repeats, CPU seconds and resident memory) and `median_time`
(the median of a few calls of any function). Used by the metajax worker of
`benchmarks/maml_speed.py`, the PyTorch peers (`benchmarks/peers/torch_maml.py`) and the other speed
scripts, so that every implementation is timed the same way.

Standard library only: it runs under either virtual environment (the peers' has no JAX and no
metajax, and loads this file by its path).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable


def _status_mb(field: str) -> float | None:
    """`VmRSS` (resident now) or `VmHWM` (its peak) of this process in MB (Linux; else None)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets `VmHWM` to the current resident size (Linux `clear_refs` 5); False if it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def time_steps(step: Callable[[], object], sync: Callable[[object], object], *, warmup: int,
               repeats: int, min_seconds: float = 0.0, max_repeats: int = 10000,
               first_call_s: float | None = None) -> dict:
    """Times `repeats` calls of `step` after a first call and `warmup` more.

    Args:
      step: one meta-step (gradient and optimiser update); returns something `sync` waits on.
      sync: blocks until the step's result is computed (`jax.block_until_ready`, or a no-op).
      warmup: untimed calls after the first one.
      repeats: timed calls (at least).
      min_seconds: keep timing until the timed calls add up to this many seconds (fast steps),
        up to `max_repeats` calls.
      first_call_s: seconds already spent compiling (ahead-of-time compile); added to the first
        call's time.

    Returns:
      Seconds per step (median, min, max and each), the first call's seconds (compile included),
      the user and system CPU seconds of the timed steps (per step and in total) and the process's
      peak resident memory so far in MB (`ru_maxrss`). On Linux also the peak before the first
      call (`setup_peak_rss_mb`: imports, data and an ahead-of-time compile), the resident size
      when the timed steps start (`steps_start_rss_mb`) and the peak during them
      (`steps_peak_rss_mb`), which tells the step's own memory from what compiling used.
    """
    setup_peak = _status_mb("VmHWM")
    t0 = time.perf_counter()
    sync(step())
    first = time.perf_counter() - t0 + (first_call_s or 0.0)
    for _ in range(warmup):
        sync(step())
    times = []
    reset = _reset_peak_rss()
    steps_start = _status_mb("VmRSS")
    before = resource.getrusage(resource.RUSAGE_SELF)
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_repeats):
        t0 = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    return {
        "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
        "times_s": times if len(times) <= 100 else times[:100], "compile_s": first,
        "repeats": len(times), "warmup": warmup,
        "user_s": user / len(times), "sys_s": system / len(times),
        "user_total_s": user, "sys_total_s": system,
        "maxrss_mb": after.ru_maxrss / 1024,
        "setup_peak_rss_mb": setup_peak, "steps_start_rss_mb": steps_start,
        "steps_peak_rss_mb": _status_mb("VmHWM") if reset else None,
    }


def median_time(fn: Callable[[int], object], repeats: int,
                sync: Callable[[object], object] = lambda x: x) -> float:
    """The median seconds of `repeats` calls `sync(fn(i))`, i = 1 .. repeats, after an untimed
    first call `fn(0)` (compile, warm-up). `sync` waits for the result (`jax.block_until_ready`)."""
    sync(fn(0))
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        sync(fn(i + 1))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
