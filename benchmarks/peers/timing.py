"""Timing of one implementation's meta-step inside its own process, shared by the metajax worker
(`benchmarks/maml_speed.py`) and the PyTorch peers (`benchmarks/peers/torch_maml.py`).

Standard library only: it runs under either virtual environment.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable


def time_steps(step: Callable[[], object], sync: Callable[[object], object], *, warmup: int,
               repeats: int, first_call_s: float | None = None) -> dict:
    """Times `repeats` calls of `step` after a first call and `warmup` more.

    Args:
      step: one meta-step (gradient and optimiser update); returns something `sync` waits on.
      sync: blocks until the step's result is computed (`jax.block_until_ready`, or a no-op).
      warmup: untimed calls after the first one.
      repeats: timed calls.
      first_call_s: seconds already spent compiling (ahead-of-time compile); added to the first
        call's time.

    Returns:
      Seconds per step (median, min, max and each), the first call's seconds (compile included),
      the user and system CPU seconds of the timed steps (per step and in total) and the process's
      peak resident memory so far in MB (`ru_maxrss`).
    """
    t0 = time.perf_counter()
    sync(step())
    first = time.perf_counter() - t0 + (first_call_s or 0.0)
    for _ in range(warmup):
        sync(step())
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        t0 = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    return {
        "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
        "times_s": times, "compile_s": first, "repeats": repeats, "warmup": warmup,
        "user_s": user / repeats, "sys_s": system / repeats,
        "user_total_s": user, "sys_total_s": system,
        "maxrss_mb": after.ru_maxrss / 1024,
    }
