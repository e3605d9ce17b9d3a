"""The machine a measurement ran on: `machine_info()` (CPU model and count, load, JAX devices,
versions, allocator, compilation cache; recorded with every run of `metajax train` and every
benchmark result) and `speed_machine()`, which adds the CPU's details, the accelerator and its peak
fp32 FLOP/s, so that a speed can be quoted as a share of what the machine could do.

One implementation for the run directories (`metajax.run_dir` re-exports `machine_info`) and the
benchmarks, so that every results file describes its machine with the same keys.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import jax

from metajax.allocator import current_allocator

# The keys of `machine_info()` (documented; tests/test_bench.py checks them).
MACHINE_KEYS = ("cpu", "cpu_count", "load_average_1min", "devices", "jax", "python", "allocator",
                "compilation_cache")


def _cpuinfo_first_block() -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def machine_info() -> dict:
    """CPU model and logical CPU count, the 1-minute load, JAX's devices and version, Python, the
    memory allocator and the persistent compilation cache directory (`MACHINE_KEYS`)."""
    cpu = _cpuinfo_first_block().get("model name") or platform.processor()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        # other work on the machine slows timings; the 1-minute load says how busy it was
        "load_average_1min": round(os.getloadavg()[0], 2),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "python": platform.python_version(),
        "allocator": current_allocator(),
        # where compiled programs were read from / written to (None: compiled in this process)
        "compilation_cache": jax.config.jax_compilation_cache_dir,
    }


def cpu_info() -> dict:
    """CPU model, vendor, family/model, flags, cores and clock from /proc/cpuinfo and lscpu."""
    info: dict = {"flags": [], "cores": os.cpu_count()}
    for key, value in _cpuinfo_first_block().items():
        if key == "model name":
            info["model"] = value
        elif key == "vendor_id":
            info["vendor"] = value
        elif key == "cpu family":
            info["family"] = int(value)
        elif key == "model":
            info["model_number"] = int(value)
        elif key == "cpu MHz":
            info["mhz_cpuinfo"] = float(value)
        elif key == "flags":
            info["flags"] = value.split()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "CPU max MHz":
                info["mhz_max"] = float(value)
            elif key in ("Core(s) per socket", "Socket(s)", "Thread(s) per core"):
                info[key.lower().replace("(s)", "s").replace(" ", "_")] = int(value)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return info


def peak_flops(cpu: dict) -> dict:
    """The machine's peak fp32 FLOP/s: physical cores x FMA pipes x SIMD fp32 lanes x 2 x clock.

    Assumptions (stated in the result): 2 FMA pipes per core on every x86 core considered; AMD Zen 4
    (family 25 with AVX-512) executes AVX-512 as 2 x 256 bit, so 8 fp32 lanes per pipe; Zen 5
    (family 26) has a full 512-bit datapath, 16 lanes; Intel with AVX-512F 16 lanes; AVX2/FMA 8
    lanes; otherwise SSE, 4 lanes. Clock: lscpu's max MHz if given, else /proc/cpuinfo's MHz (under
    a hypervisor, the nominal clock; turbo is not counted).
    """
    flags = set(cpu.get("flags", []))
    vendor, family = cpu.get("vendor", ""), cpu.get("family", 0)
    if vendor == "AuthenticAMD" and family == 25 and "avx512f" in flags:
        arch, lanes = "AMD Zen 4: AVX-512 executed as 2 x 256-bit", 8
    elif vendor == "AuthenticAMD" and family >= 26 and "avx512f" in flags:
        arch, lanes = "AMD Zen 5: full 512-bit datapath", 16
    elif "avx512f" in flags:
        arch, lanes = "AVX-512 (512-bit FMA)", 16
    elif "avx2" in flags and "fma" in flags:
        arch, lanes = "AVX2 + FMA (256-bit)", 8
    else:
        arch, lanes = "SSE (128-bit), no FMA assumed", 4
    pipes = 2
    fma = 2 if "fma" in flags else 1
    threads_per_core = cpu.get("threads_per_core", 1) or 1
    cores = max(1, (cpu.get("cores") or 1) // threads_per_core)
    mhz = cpu.get("mhz_max") or cpu.get("mhz_cpuinfo") or 0.0
    flops = cores * pipes * lanes * fma * mhz * 1e6
    clock = "lscpu max" if cpu.get("mhz_max") else "/proc/cpuinfo"
    return {"peak_gflops": flops / 1e9, "cores": cores, "fma_pipes": pipes, "fp32_lanes": lanes,
            "flops_per_fma": fma, "clock_mhz": mhz,
            "assumptions": f"{arch}; {pipes} FMA pipes per core; cores = logical CPUs / threads "
                           f"per core; clock {mhz} MHz ({clock}), no turbo"}


# Dense fp32 FLOP/s of GPUs without tensor cores (vendors' datasheets, SXM parts), by a substring of
# JAX's `device_kind`. JAX and PyTorch may run float32 convolutions on the tensor cores in TF32,
# which can exceed these; the share of this peak is then above what plain fp32 could give.
GPU_FP32_PEAK_GFLOPS = {"H200": 67_000, "H100": 67_000, "A100": 19_500, "L4": 30_300,
                        "A10": 31_200, "V100": 15_700, "T4": 8_100}


def accelerator() -> dict:
    """JAX's default backend: platform, device kind and count (a GPU run names its chip)."""
    devices = jax.devices()
    return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "device_count": len(devices)}


def gpu_peak(kind: str) -> dict:
    """The datasheet fp32 peak of a GPU named by JAX's `device_kind` (None if not listed)."""
    for name, gflops in GPU_FP32_PEAK_GFLOPS.items():
        if name in kind:
            return {"peak_gflops": float(gflops),
                    "assumptions": f"{kind}: datasheet dense fp32 without tensor cores "
                                   f"({gflops / 1000:g} TFLOP/s, SXM); TF32 tensor-core work can "
                                   "exceed it"}
    return {"peak_gflops": None, "assumptions": f"{kind}: peak unknown (pass --peak-gflops)"}


def speed_machine(peak_override: float | None = None) -> dict:
    """`machine_info()` with the CPU's details, the accelerator and its peak fp32 FLOP/s (the CPU's
    by `peak_flops`, a GPU's by `gpu_peak`, or `peak_override` GFLOP/s where given)."""
    cpu = cpu_info()
    acc = accelerator()
    peak = peak_flops(cpu) if acc["platform"] == "cpu" else gpu_peak(acc["device_kind"])
    if peak_override:
        peak = {"peak_gflops": peak_override, "assumptions": "given by --peak-gflops"}
    return {**machine_info(), "cpu_model": cpu.get("model"), "cpu_vendor": cpu.get("vendor"),
            "cpu_family": cpu.get("family"), "cpu_model_number": cpu.get("model_number"),
            "cores": cpu.get("cores"), "flags": " ".join(cpu.get("flags", [])),
            "accelerator": acc, "peak": peak, "platform": platform.platform()}
