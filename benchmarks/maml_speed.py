"""MAML meta-step speed: metajax against learn2learn, higher, torch.func and plain PyTorch, timed
side by side in one run (issue 12). Every figure to quote is a ratio from one run on one machine.

Each implementation runs in a fresh process per order (same seed, weights and episode, generated
once with numpy and passed as .npz files; the same allocator settings), is first checked in float64
against a float64 PyTorch reference (relative error of the whole meta-gradient) and is then timed
after warm-up over `--repeats` meta-steps (meta-gradient + one Adam step).

    bash benchmarks/peers/install.sh        # once: the PyTorch peers in .venv-peers
    python benchmarks/maml_speed.py --workload A --order both --inner-steps 1 --repeats 5
    python benchmarks/maml_speed.py --workload B --inner-steps 5
    python benchmarks/maml_speed.py --workload C                     # 10 inner steps, remat or not
    python benchmarks/maml_speed.py --meta-batch 2 --repeats 2 --impls metajax,torch   # a smoke run
    python benchmarks/maml_speed.py --dump-grad /tmp/maml_dump --impls none   # float64 export only
    python benchmarks/maml_speed.py --impls metajax --order both --train-check 20   # vs `metajax train`
    python benchmarks/maml_speed.py --impls none --scaling     # meta-batch, inner steps, devices

Workloads: A, conv4 MAML on 28x28x1 5-way 1-shot episodes (15 queries per class, meta-batch 32,
inner SGD lr 0.4); B, sinusoid MAML with the MLP 1-40-40-1 (10 support and 10 query points,
meta-batch 25, inner lr 0.01, order 2); C, A at 10 inner steps and order 2, metajax with and
without remat. `--scaling` adds metajax rows over meta-batch, inner steps and forced CPU devices.

metajax goes through the library's public path only (`make_config`, `metajax.registry.build_learner`,
`make_train_step` or `meta_gradient` + optax), so speed-ups inside the library are measured as-is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))
from timing import time_steps  # noqa: E402

PEERS = ("learn2learn", "higher", "torchfunc", "torch", "torchfunc-bn")
IMPLS = ("metajax",) + PEERS
DEFAULT_IMPLS = "metajax,learn2learn,higher,torchfunc,torch"
# The allocator, set identically in every timed process (`--allocator`): freed memory kept in the
# process so that a step does not spend its time in page faults. "auto" (jemalloc with decay off if
# installed, else glibc tunables) is what `metajax train` uses (metajax.allocator); "malloc-env" is
# glibc's MALLOC_MMAP_MAX_/MALLOC_TRIM_THRESHOLD_ variables; "system" sets nothing.
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 * 2**30)}
ALLOCATOR_ENV: dict = {}
# what the user set; the driver itself runs with preallocation off so that on a GPU the workers,
# one after another, get the memory (JAX takes 75 % of it by default)
DRIVER_PREALLOCATE = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")


def set_allocator(choice: str) -> dict:
    """Fills ALLOCATOR_ENV for `choice` and returns it."""
    from metajax.allocator import allocator_env

    ALLOCATOR_ENV.clear()
    ALLOCATOR_ENV.update(MALLOC_ENV if choice == "malloc-env" else allocator_env(choice))
    ALLOCATOR_ENV["METAJAX_ALLOCATOR_SET"] = "1"
    return ALLOCATOR_ENV
CHECK_RTOL = 1e-9  # float64 implementations that are right agree to ~1e-12

WORKLOADS = {
    "A": dict(ways=5, shots=1, queries=15, meta_batch=32, inner_steps=1, inner_lr=0.4,
              order="both"),
    "B": dict(ways=1, shots=10, queries=10, meta_batch=25, inner_steps=1, inner_lr=0.01,
              order="2"),
    "C": dict(ways=5, shots=1, queries=15, meta_batch=32, inner_steps=10, inner_lr=0.4,
              order="2"),
}
SCALING_META_BATCH = (1, 4, 16, 32, 64)
SCALING_INNER_STEPS = (1, 2, 5, 10)
SCALING_DEVICES = (1, 2)


# --- the machine --------------------------------------------------------------------------------

def cpu_info() -> dict:
    """CPU model, vendor, family/model, flags, cores and clock from /proc/cpuinfo and lscpu."""
    info: dict = {"flags": [], "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    first = text.split("\n\n")[0]
    for line in first.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
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
    import jax

    devices = jax.devices()
    return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "device_count": len(devices)}


def gpu_peak(kind: str) -> dict:
    for name, gflops in GPU_FP32_PEAK_GFLOPS.items():
        if name in kind:
            return {"peak_gflops": float(gflops),
                    "assumptions": f"{kind}: datasheet dense fp32 without tensor cores "
                                   f"({gflops / 1000:g} TFLOP/s, SXM); TF32 tensor-core work can "
                                   "exceed it"}
    return {"peak_gflops": None, "assumptions": f"{kind}: peak unknown (pass --peak-gflops)"}


def machine(peak_override: float | None = None) -> dict:
    from metajax.experiment import machine_info

    cpu = cpu_info()
    acc = accelerator()
    peak = peak_flops(cpu) if acc["platform"] == "cpu" else gpu_peak(acc["device_kind"])
    if peak_override:
        peak = {"peak_gflops": peak_override, "assumptions": "given by --peak-gflops"}
    return {**machine_info(), "cpu_model": cpu.get("model"), "cpu_vendor": cpu.get("vendor"),
            "cpu_family": cpu.get("family"), "cpu_model_number": cpu.get("model_number"),
            "cores": cpu.get("cores"), "flags": " ".join(cpu.get("flags", [])),
            "accelerator": acc, "peak": peak, "platform": platform.platform()}


# --- shared weights and episodes (numpy) --------------------------------------------------------

def conv4_params(rng: np.random.Generator, ways: int, width: int = 64, depth: int = 4,
                 size: int = 28, channels: int = 1) -> dict:
    """conv4 parameters in flax's names and layouts (`flatten_dict(params, sep="/")`): lecun-normal
    kernels; biases and batch-norm scale/bias perturbed from their init so every gradient is
    generic."""
    params, cin, side = {}, channels, size
    for i in range(depth):
        params[f"Conv_{i}/kernel"] = rng.normal(0, (9 * cin) ** -0.5, (3, 3, cin, width))
        params[f"Conv_{i}/bias"] = rng.normal(0, 0.05, width)
        params[f"BatchNorm_{i}/scale"] = 1 + rng.normal(0, 0.1, width)
        params[f"BatchNorm_{i}/bias"] = rng.normal(0, 0.1, width)
        cin, side = width, side // 2
    features = side * side * width
    params["Dense_0/kernel"] = rng.normal(0, features ** -0.5, (features, ways))
    params["Dense_0/bias"] = rng.normal(0, 0.05, ways)
    return params


def mlp_params(rng: np.random.Generator, hidden=(40, 40)) -> dict:
    params, fan_in = {}, 1
    for i, width in enumerate((*hidden, 1)):
        params[f"Dense_{i}/kernel"] = rng.normal(0, fan_in ** -0.5, (fan_in, width))
        params[f"Dense_{i}/bias"] = rng.normal(0, 0.05, width)
        fan_in = width
    return params


def omniglot_like_episode(rng: np.random.Generator, tasks: int, ways: int, shots: int,
                          queries: int, size: int = 28) -> dict:
    """`support_x [T, N*S, size, size, 1]` in [0, 1), labels `[T, N*S]` (each class S times)."""
    def labels(k):
        return np.tile(np.repeat(np.arange(ways), k), (tasks, 1)).astype(np.int32)

    return {"support_x": rng.random((tasks, ways * shots, size, size, 1)),
            "support_y": labels(shots),
            "query_x": rng.random((tasks, ways * queries, size, size, 1)),
            "query_y": labels(queries)}


def sinusoid_episode(rng: np.random.Generator, tasks: int, shots: int, queries: int) -> dict:
    amplitude = rng.uniform(0.1, 5.0, (tasks, 1, 1))
    phase = rng.uniform(0, np.pi, (tasks, 1, 1))
    x = rng.uniform(-5, 5, (tasks, shots + queries, 1))
    y = amplitude * np.sin(x - phase)
    return {"support_x": x[:, :shots], "support_y": y[:, :shots],
            "query_x": x[:, shots:], "query_y": y[:, shots:]}


def make_problem(workload: str, seed: int, tasks: int, ways: int, shots: int, queries: int,
                 width: int = 64) -> tuple[dict, dict]:
    """(params, episode) in float64; the same seed gives the same weights whatever `tasks` is."""
    rng = np.random.default_rng(seed)
    if workload == "B":
        params = mlp_params(rng)
        return params, sinusoid_episode(np.random.default_rng(seed + 1), tasks, shots, queries)
    params = conv4_params(rng, ways, width)
    return params, omniglot_like_episode(np.random.default_rng(seed + 1), tasks, ways, shots,
                                         queries)


def save_npz(path: Path, arrays: dict, dtype) -> Path:
    np.savez(path, **{k: (v.astype(dtype) if v.dtype.kind == "f" else v)
                      for k, v in arrays.items()})
    return path


# --- metajax (runs in its own process) ----------------------------------------------------------

def metajax_config(job: dict, order: int):
    from metajax.config import make_config

    algo = "maml" if order == 2 else "fomaml"
    if job["workload"] == "B":
        return make_config(algo, dataset="sinusoid", shots=job["shots"], queries=job["queries"],
                           meta_batch=job["meta_batch"], inner_steps=job["inner_steps"],
                           inner_lr=job["inner_lr"], remat=job.get("remat", False),
                           lr=job["outer_lr"])
    return make_config(algo, ways=job["ways"], shots=job["shots"], queries=job["queries"],
                       meta_batch=job["meta_batch"], inner_steps=job["inner_steps"],
                       inner_lr=job["inner_lr"], downsample="maxpool", width=job["width"],
                       remat=job.get("remat", False), lr=job["outer_lr"],
                       task_map=job.get("task_map"))


def metajax_problem(job: dict, dtype):
    """The metajax learner, its params and the episode's tasks, from the job's .npz files."""
    import jax.numpy as jnp
    from flax import traverse_util

    from metajax.registry import build_learner
    from metajax.types import Task

    config = metajax_config(job, job["order"])
    learner = build_learner(config)
    with np.load(job["params"]) as f:
        flat = {k: jnp.asarray(f[k], dtype) for k in f.files}
    params = {"params": traverse_util.unflatten_dict(flat, sep="/")}
    with np.load(job["episode"]) as f:
        ep = {k: jnp.asarray(f[k], dtype if f[k].dtype.kind == "f" else jnp.int32)
              for k in f.files}
    ways = job["ways"] if job["workload"] != "B" else 0
    tasks = Task(ep["support_x"], ep["support_y"], ep["query_x"], ep["query_y"], ways)
    return config, learner, params, tasks


def metajax_gradient(job: dict):
    """Meta-loss and meta-gradient (flax names) of the job's episode, float64 if x64 is enabled."""
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from metajax.training.trainer import meta_gradient

    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    config, learner, params, tasks = metajax_problem(job, dtype)
    keys = jax.random.split(jax.random.PRNGKey(0), tasks.support_x.shape[0])
    fn = jax.jit(lambda p: meta_gradient(learner, p, tasks, keys, task_map=config.task_map))
    grads, metrics = fn(params)
    flat = traverse_util.flatten_dict(grads["params"], sep="/")
    return float(metrics["loss"]), {k: np.asarray(v, np.float64) for k, v in flat.items()}


def metajax_time(job: dict) -> dict:
    """Times metajax's training step: `make_train_step` (the trainer's own jitted step, with tasks
    drawn on the device from the shared episode's tasks) or, with `metajax_step="grad"`, a jitted
    `meta_gradient` + optax Adam on exactly the shared tasks."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax import monitoring

    from metajax.training.trainer import TrainState, make_train_step, meta_gradient

    config, learner, params, tasks = metajax_problem(job, jnp.float32)
    optimizer = optax.adam(config.lr)
    count = tasks.support_x.shape[0]
    if job.get("metajax_step", "train") == "train":
        def sample(key, data):
            index = jax.random.randint(key, (), 0, count)
            return jax.tree.map(lambda a: a[index], data)

        step_fn = make_train_step(learner, optimizer, sample, config.meta_batch, job["seed"],
                                  task_map=config.task_map)
        state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
        args = [state, tasks]
    else:
        keys = jax.random.split(jax.random.PRNGKey(0), count)

        def step(p, opt_state, data):
            grads, metrics = meta_gradient(learner, p, data, keys, task_map=config.task_map)
            updates, opt_state = optimizer.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), metrics

        step_fn = jax.jit(step, donate_argnums=(0, 1))
        args = [params, optimizer.init(params), tasks]
    hits = []  # programs read back from JAX's persistent compilation cache (--compile-cache warm)
    monitoring.register_event_listener(
        lambda event, **_: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None)
    t0 = time.perf_counter()
    compiled = step_fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    if job["mode"] == "compile":  # --compile-cache warm: this process only fills the cache
        return {"compile_s": compile_s}
    step_cache_hits = len(hits)
    aot_times = [compile_s]
    if not step_cache_hits:  # --compile-repeats: compile again from scratch (trace included)
        for _ in range(job.get("compile_repeats", 1) - 1):
            jax.clear_caches()  # else lower().compile() returns the executable it already has
            t0 = time.perf_counter()
            compiled = step_fn.lower(*args).compile()
            aot_times.append(time.perf_counter() - t0)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    memory = compiled.memory_analysis()

    losses = []

    def run():
        out, metrics = compiled(*args)
        if isinstance(out, tuple):  # (params, opt_state) of the grad step
            args[0], args[1] = out
        else:  # the trainer's TrainState
            args[0] = out
        if not losses:
            losses.append(metrics["loss"])
        return metrics

    result = time_steps(run, jax.block_until_ready, warmup=job["warmup"],
                        repeats=job["repeats"], min_seconds=job.get("min_seconds", 0.0),
                        first_call_s=compile_s)
    from hlo_flops import hlo_flops

    counted = hlo_flops(compiled.as_text()) / 1e9
    analysed = float(cost.get("flops", float("nan"))) / 1e9 if cost else None
    flop_source = "hlo_flops"
    if jax.devices()[0].platform != "cpu" and analysed and analysed > counted:
        # on a GPU, convolutions and dots are library custom-calls that hlo_flops cannot read;
        # XLA's GPU cost analysis counts them (loop bodies once: exact for vmap over tasks)
        counted, flop_source = analysed, "cost_analysis"
    result.update({
        "aot_compile_s": float(np.median(aot_times)), "aot_compile_all_s": aot_times,
        "xla_gflop": counted, "xla_gflop_source": flop_source,
        "xla_cost_analysis_gflop": analysed,
        "xla_temp_mb": memory.temp_size_in_bytes / 2**20 if memory else None,
        "first_step_loss": float(losses[0]),
        "step_from_compile_cache": step_cache_hits > 0,
        "devices": len(jax.devices()), "task_map": config.task_map,
        "metajax_step": job.get("metajax_step", "train"),
        "config": {k: v for k, v in config.to_dict().items() if k in (
            "algo", "ways", "shots", "queries", "meta_batch", "inner_steps", "inner_lr", "remat",
            "task_map", "downsample", "width", "lr", "dataset")},
    })
    return result


def metajax_dump(job: dict) -> dict:
    """`--dump-grad`: params.npz, episode.npz and grads.npz (`order{o}/<key>`,
    `order{o}/meta_loss`, o = 1, 2) of workload A, computed by metajax with jax_enable_x64."""
    import jax

    assert jax.config.jax_enable_x64, "the dump is computed in float64 (JAX_ENABLE_X64=1)"
    out = Path(job["dump_dir"])
    out.mkdir(parents=True, exist_ok=True)
    with np.load(job["params"]) as f:
        np.savez(out / "params.npz", **{k: f[k] for k in f.files})
    with np.load(job["episode"]) as f:
        np.savez(out / "episode.npz", **{k: f[k] for k in f.files})
    grads = {}
    for order in (1, 2):
        loss, g = metajax_gradient({**job, "order": order})
        grads[f"order{order}/meta_loss"] = np.float64(loss)
        grads.update({f"order{order}/{k}": v for k, v in g.items()})
    np.savez(out / "grads.npz", **grads)
    return {"dump_dir": str(out), "meta_loss": {o: float(grads[f"order{o}/meta_loss"])
                                                for o in (1, 2)}}


def run_metajax_job(job: dict) -> dict:
    import jax

    result = {"impl": "metajax", "order": job.get("order"), "notes": []}
    if job["mode"] == "check":
        loss, grads = metajax_gradient(job)
        np.savez(job["grads_out"], meta_loss=np.float64(loss), **grads)
        result["meta_loss"] = loss
    elif job["mode"] == "dump":
        result.update(metajax_dump(job))
    else:
        result.update(metajax_time(job))
    result["jax"] = jax.__version__
    return result


# --- the driver ---------------------------------------------------------------------------------

def run_job(job: dict, python: str, script: Path, env_extra: dict, timeout: float) -> dict:
    """Runs one job in a fresh process; returns its result, or `error` with the output's tail."""
    env = {**os.environ, **ALLOCATOR_ENV, **env_extra}
    # the driver's own JAX does not preallocate GPU memory (see main); each worker does as usual
    env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    if DRIVER_PREALLOCATE is not None:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = DRIVER_PREALLOCATE
    job_path = Path(job["out"]).with_suffix(".job.json")
    job_path.write_text(json.dumps(job))
    try:
        proc = subprocess.run([python, str(script), "--job", str(job_path)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    except OSError as error:
        return {"error": f"could not start {python}: {error}"}
    if proc.returncode != 0 or not Path(job["out"]).exists():
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        return {"error": f"exit status {proc.returncode}: {lines[-1]}",
                "output_tail": lines[-12:]}
    return json.loads(Path(job["out"]).read_text())


def relative_error(grads: dict, reference: dict) -> float:
    keys = sorted(k for k in reference if k != "meta_loss")
    if sorted(k for k in grads if k != "meta_loss") != keys:
        return float("inf")
    a = np.concatenate([np.ravel(grads[k]) for k in keys])
    b = np.concatenate([np.ravel(reference[k]) for k in keys])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def peer_versions(python: str) -> dict:
    try:
        proc = subprocess.run([python, str(ROOT / "benchmarks/peers/torch_maml.py"), "--versions"],
                              capture_output=True, text=True, timeout=300)
        return json.loads(proc.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as error:
        return {"error": f"{python}: {type(error).__name__}: {error}"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="A")
    p.add_argument("--order", choices=["1", "2", "both"], default=None,
                   help="MAML order (A: both, B and C: 2)")
    p.add_argument("--inner-steps", type=int, default=None, help="A, B: 1; C: 10")
    p.add_argument("--meta-batch", type=int, default=None, help="tasks per step (A, C: 32; B: 25)")
    p.add_argument("--ways", type=int, default=None)
    p.add_argument("--shots", type=int, default=None, help="B: support points")
    p.add_argument("--queries", type=int, default=None, help="per class (B: query points)")
    p.add_argument("--inner-lr", type=float, default=None, help="A, C: 0.4; B: 0.01")
    p.add_argument("--outer-lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--width", type=int, default=64, help="conv4 filters")
    p.add_argument("--repeats", type=int, default=5, help="timed meta-steps per implementation")
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help="time more than --repeats steps until they add up to this (fast steps)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first call")
    p.add_argument("--impls", default=DEFAULT_IMPLS,
                   help=f"comma-separated, from {', '.join(IMPLS)}; 'none' for no timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-meta-batch", type=int, default=2,
                   help="tasks of the float64 correctness check")
    p.add_argument("--no-check", action="store_true", help="skip the float64 check")
    p.add_argument("--check-only", action="store_true", help="the float64 check, no timing")
    p.add_argument("--metajax-step", choices=["train", "grad"], default="train",
                   help="train: metajax's make_train_step; grad: jit(meta_gradient + adam)")
    p.add_argument("--scaling", action="store_true",
                   help="metajax rows for meta-batch 1,4,16,32,64, inner steps 1,2,5,10 and "
                        "1 and 2 forced CPU devices")
    p.add_argument("--scaling-meta-batches", default=",".join(map(str, SCALING_META_BATCH)))
    p.add_argument("--scaling-inner-steps", default=",".join(map(str, SCALING_INNER_STEPS)))
    p.add_argument("--scaling-devices", default=",".join(map(str, SCALING_DEVICES)))
    p.add_argument("--train-check", type=int, default=0, metavar="STEPS",
                   help="also run `metajax train` STEPS steps on Omniglot (needs the data) with "
                        "the timed configuration and compare its steps/s with the benchmark's")
    p.add_argument("--task-map", default=None,
                   help="metajax's task_map (vmap, map, map:N); default: the library's. "
                        "Comma-separated: one metajax row per task map, in the same run")
    p.add_argument("--compile-repeats", type=int, help="ahead-of-time compiles of each metajax "
                   "step, from scratch; the median is reported (default 3 with --scaling, else 1)")
    p.add_argument("--compile-cache", choices=["cold", "warm"], default="cold",
                   help="warm: each metajax process reads its compiled step from JAX's "
                        "persistent compilation cache, written by a process before it (as a "
                        "resumed `metajax train` does), so its memory excludes the compiler's")
    p.add_argument("--allocator", default="auto",
                   choices=["auto", "jemalloc", "glibc", "malloc-env", "system"],
                   help="memory allocator of every timed process (default: as metajax train)")
    p.add_argument("--peer-python", default=str(ROOT / ".venv-peers/bin/python"))
    p.add_argument("--torch-device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the PyTorch peers run (auto: the GPU if torch sees one)")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="the machine's peak fp32 GFLOP/s, instead of the computed one")
    p.add_argument("--json", default=None, help="also write the JSON here")
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--dump-grad", default=None, metavar="DIR",
                   help="write params/episode/grads .npz of workload A (float64) to DIR")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)  # worker mode
    args = p.parse_args(argv)
    if args.compile_repeats is not None and args.compile_repeats < 1:
        p.error("--compile-repeats must be at least 1")
    for key, value in WORKLOADS[args.workload].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def variant_label(variant: dict) -> str:
    """' remat', ' (map)', ... : how a metajax variant is named in tags, logs and tables."""
    task_map = variant.get("task_map")
    return (f" ({task_map})" if task_map else "") + (" remat" if variant.get("remat") else "")


def row_label(row: dict) -> str:
    """The implementation of a results row with its variant (metajax's task map when the run
    compared several, remat)."""
    return row["impl"] + variant_label({"task_map": row.get("variant_task_map"),
                                        "remat": row.get("remat")})


def _tag(impl: str, variant: dict, order: int, what: str) -> str:
    task_map = (variant.get("task_map") or "").replace(":", "")
    return (f"{what}_{impl}{'_' + task_map if task_map else ''}"
            f"{'_remat' if variant.get('remat') else ''}_o{order}")


def compile_repeats(args) -> int:
    """Ahead-of-time compiles per metajax row (the median is `aot_compile_s`): as asked, else 3
    for --scaling, whose compile-time goal is a ratio of two such times, and one compile of a
    step varied by up to 15% from the next in one run, else 1."""
    return args.compile_repeats or (3 if args.scaling else 1)


def job_base(args, workdir: Path, tag: str) -> dict:
    return {"workload": "B" if args.workload == "B" else "A", "ways": args.ways,
            "shots": args.shots, "queries": args.queries, "inner_steps": args.inner_steps,
            "inner_lr": args.inner_lr, "outer_lr": args.outer_lr, "width": args.width,
            "seed": args.seed, "warmup": args.warmup, "repeats": args.repeats,
            "min_seconds": args.min_seconds, "compile_repeats": compile_repeats(args),
            "metajax_step": args.metajax_step, "task_map": getattr(args, "task_map", None),
            "torch_device": getattr(args, "torch_device", "auto"),
            "out": str(workdir / f"{tag}.json")}


class Driver:
    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.log: list[str] = []

    def say(self, line: str) -> None:
        print(line, flush=True)

    def launch(self, impl: str, job: dict, env_extra: dict | None = None) -> dict:
        if impl == "metajax":
            python, script = sys.executable, Path(__file__).resolve()
        else:
            python, script = self.args.peer_python, ROOT / "benchmarks/peers/torch_maml.py"
            python = shutil.which(python) or python  # a path, or a name on PATH
            if not Path(python).exists():
                return {"error": f"peer python {python} not found: run "
                                 "`bash benchmarks/peers/install.sh` (or pass --peer-python)"}
        return run_job({**job, "impl": impl}, python, script, env_extra or {}, self.args.timeout)

    def problem_files(self, tasks: int, dtype, tag: str) -> tuple[Path, Path]:
        a = self.args
        params, episode = make_problem(a.workload, a.seed, tasks, a.ways, a.shots, a.queries,
                                       a.width)
        return (save_npz(self.workdir / f"{tag}_params.npz", params, dtype),
                save_npz(self.workdir / f"{tag}_episode.npz", episode, dtype))

    def check(self, impls: list[str], orders: list[int], variants: dict) -> dict:
        """Float64 meta-loss and meta-gradient of each implementation against the reference."""
        a = self.args
        params, episode = self.problem_files(a.check_meta_batch, np.float64, "check")
        out: dict = {}
        for order in orders:
            base = {**job_base(a, self.workdir, f"check_ref_o{order}"), "mode": "check",
                    "order": order, "params": str(params), "episode": str(episode),
                    "meta_batch": a.check_meta_batch}
            ref_path = self.workdir / f"check_ref_o{order}.npz"
            ref = self.launch("reference", {**base, "grads_out": str(ref_path)})
            reference = None
            if "error" in ref:
                self.say(f"check order {order}: no float64 reference ({ref['error']})")
            else:
                with np.load(ref_path) as f:
                    reference = {k: f[k] for k in f.files}
            for impl in impls:
                for variant in variants.get(impl, [{}]):
                    tag = _tag(impl, variant, order, "check")
                    path = self.workdir / f"{tag}.npz"
                    job = {**base, **variant, "out": str(self.workdir / f"{tag}.json"),
                           "grads_out": str(path)}
                    env = {"JAX_ENABLE_X64": "1"} if impl == "metajax" else {}
                    res = self.launch(impl, job, env)
                    key = (impl, variant_label(variant), order)
                    if "error" in res:
                        out[key] = {"check": "error", "reason": res["error"]}
                    elif reference is None:
                        out[key] = {"check": "n/a", "reason": "no float64 reference (torch)"}
                    else:
                        with np.load(path) as f:
                            grads = {k: f[k] for k in f.files}
                        err = relative_error(grads, reference)
                        loss_err = abs(float(grads["meta_loss"]) - float(reference["meta_loss"])) \
                            / abs(float(reference["meta_loss"]))
                        ok = err <= CHECK_RTOL and loss_err <= CHECK_RTOL
                        out[key] = {"check": "pass" if ok else "fail", "grad_rel_err": err,
                                    "loss_rel_err": loss_err, "notes": res.get("notes", [])}
                    c = out[key]
                    self.say(f"check order {order} {impl}{key[1]}: "
                             f"{c['check']}" + (f" (grad rel err {c['grad_rel_err']:.2e}, "
                                                f"loss rel err {c['loss_rel_err']:.2e})"
                                                if "grad_rel_err" in c else
                                                f" ({c.get('reason', '')})"))
        return out

    def time_all(self, impls, orders, variants, checks) -> list[dict]:
        a = self.args
        params, episode = self.problem_files(a.meta_batch, np.float32, "time")
        rows = []
        for order in orders:
            for impl in impls:
                for variant in variants.get(impl, [{}]):
                    remat = bool(variant.get("remat"))
                    tag = _tag(impl, variant, order, "time")
                    job = {**job_base(a, self.workdir, tag), **variant, "mode": "time",
                           "order": order, "params": str(params), "episode": str(episode),
                           "meta_batch": a.meta_batch}
                    self.say(f"timing {impl}{variant_label(variant)} order {order} ...")
                    env, cold_compile = {}, None
                    if impl == "metajax" and a.compile_cache == "warm":
                        env = {"JAX_COMPILATION_CACHE_DIR": str(self.workdir / "xla-cache"),
                               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
                        first = self.launch(impl, {**job, "mode": "compile"}, env)
                        cold_compile = first.get("compile_s")
                    res = self.launch(impl, job, env)
                    if cold_compile is not None and "error" not in res:
                        res = {**res, "cold_compile_s": cold_compile, "compile_cache": "warm"}
                    row = self.row(impl, order, a.inner_steps, a.meta_batch, remat, res,
                                   checks.get((impl, variant_label(variant), order)))
                    if variant.get("task_map"):
                        row["variant_task_map"] = variant["task_map"]
                    rows.append(row)
        return rows

    def row(self, impl, order, inner_steps, meta_batch, remat, res, check, devices=1) -> dict:
        peak = self.machine["peak"]["peak_gflops"]
        row = {"impl": impl, "workload": self.args.workload, "order": order,
               "inner_steps": inner_steps, "meta_batch": meta_batch, "remat": remat,
               "devices": devices,
               "check": (check or {}).get("check", "n/a"),
               "check_grad_rel_err": (check or {}).get("grad_rel_err")}
        if (check or {}).get("reason"):
            row["check_reason"] = check["reason"]
        if "error" in res:
            row.update({"status": "unavailable", "reason": res["error"]})
            self.say(f"  {impl} order {order}: unavailable: {res['error']}")
            return row
        row.update({k: res.get(k) for k in (
            "median_s", "min_s", "max_s", "compile_s", "maxrss_mb", "sys_s", "user_s",
            "user_total_s", "sys_total_s", "times_s", "repeats", "warmup", "threads", "notes",
            "xla_gflop", "xla_cost_analysis_gflop", "xla_temp_mb", "aot_compile_s",
            "aot_compile_all_s", "task_map",
            "setup_peak_rss_mb", "steps_start_rss_mb", "steps_peak_rss_mb",
            "cold_compile_s", "compile_cache", "step_from_compile_cache", "first_step_loss",
            "xla_gflop_source", "device",
            "metajax_step", "config")
            if k in res})
        row["status"] = "ok"
        row["tasks_per_s"] = meta_batch / res["median_s"]
        if res.get("xla_gflop") and peak:
            row["peak_fraction"] = res["xla_gflop"] / res["median_s"] / peak
        self.say(f"  {impl} order {order}: {res['median_s']:.4f} s/step, "
                 f"{row['tasks_per_s']:.1f} tasks/s, compile {res['compile_s']:.1f} s, "
                 f"RSS {res['maxrss_mb']:.0f} MB, user {res['user_s']:.2f} s, "
                 f"sys {res['sys_s']:.2f} s per step")
        return row

    def scaling(self) -> list[dict]:
        """metajax over meta-batch (1 inner step), inner steps (the run's meta-batch) and 1 or 2
        forced CPU devices, order 2 (workload A shapes)."""
        a = self.args
        rows = []
        ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
        settings = [(t, 1, 1) for t in ints(a.scaling_meta_batches)]
        settings += [(a.meta_batch, k, 1) for k in ints(a.scaling_inner_steps)]
        settings += [(a.meta_batch, a.inner_steps, d) for d in ints(a.scaling_devices)]
        for tasks, steps, devices in dict.fromkeys(settings):
            params, episode = self.problem_files(tasks, np.float32, f"scale_{tasks}")
            job = {**job_base(a, self.workdir, f"scale_{tasks}_{steps}_{devices}"),
                   "mode": "time", "order": 2, "params": str(params), "episode": str(episode),
                   "meta_batch": tasks, "inner_steps": steps}
            env = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                 f" --xla_force_host_platform_device_count={devices}").strip()}
            self.say(f"scaling: metajax meta-batch {tasks}, inner steps {steps}, "
                     f"{devices} device(s) ...")
            res = self.launch("metajax", job, env)
            row = self.row("metajax", 2, steps, tasks, False, res, None, devices)
            row["scaling"] = True
            rows.append(row)
        # the same seed draws the same tasks: the first step's loss must not depend on devices
        by_devices = [r for r in rows if r.get("first_step_loss") is not None
                      and (r["meta_batch"], r["inner_steps"]) == (a.meta_batch, a.inner_steps)]
        if len(by_devices) > 1:
            base = by_devices[0]["first_step_loss"]
            for r in by_devices:
                r["same_loss_as_1_device"] = abs(r["first_step_loss"] - base) <= 1e-5 * abs(base)
        return rows


    def train_check(self, rows: list[dict], orders: list[int]) -> list[dict]:
        """`--train-check N`: `metajax train maml|fomaml` for N steps on Omniglot with the timed
        configuration (first metajax variant), in a fresh process with the same allocator; its
        summary's steps/s (first step excluded, as here) against the benchmark's median step."""
        a, out = self.args, []
        for order in orders:
            ref = next((r for r in rows if r["impl"] == "metajax" and r["order"] == order
                        and r.get("status") == "ok" and not r["remat"] and not r.get("scaling")),
                       None)
            if ref is None:
                continue
            run_dir = self.workdir / f"train_check_o{order}"
            config = ref.get("config") or {}
            cmd = [sys.executable, "-m", "metajax.cli", "train", "maml" if order == 2 else "fomaml",
                   "--out", str(run_dir), "--steps", str(a.train_check), "--ways", str(a.ways),
                   "--shots", str(a.shots), "--queries", str(a.queries),
                   "--meta-batch", str(a.meta_batch), "--inner-steps", str(a.inner_steps),
                   "--inner-lr", str(a.inner_lr), "--lr", str(a.outer_lr),
                   "--width", str(a.width), "--downsample", "maxpool", "--val-every", "0",
                   "--eval-episodes", "10", "--checkpoint-every", str(10 * a.train_check),
                   "--no-progress"]
            if config.get("task_map"):
                cmd += ["--task-map", config["task_map"]]
            self.say(f"train check: metajax train, order {order}, {a.train_check} steps ...")
            env = {**os.environ, **ALLOCATOR_ENV, "METAJAX_ALLOCATOR": "system"}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=a.timeout)
            summary = run_dir / "summary.json"
            if proc.returncode != 0 or not summary.exists():
                tail = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
                out.append({"order": order, "error": f"exit status {proc.returncode}: {tail[-1]}"})
                continue
            steps_per_s = json.loads(summary.read_text())["steps_per_s"]
            out.append({"order": order, "steps": a.train_check, "task_map": config.get("task_map"),
                        "train_step_s": 1 / steps_per_s, "benchmark_step_s": ref["median_s"],
                        "ratio": 1 / (steps_per_s * ref["median_s"]),
                        "command": " ".join(shlex.quote(c) for c in cmd[1:])})
        return out


def added_rss(row: dict) -> float | None:
    """Peak RSS (MB) the meta-steps added to what the process held before its first step:
    imports, weights and data, and for metajax the compiled step (compiled ahead of time). The
    step's own memory, apart from each library's fixed cost (None where it was not recorded)."""
    if row.get("setup_peak_rss_mb") is None or row.get("maxrss_mb") is None:
        return None
    return max(row["maxrss_mb"] - row["setup_peak_rss_mb"], 0.0)


def ratio_rows(rows: list[dict]) -> list[dict]:
    """metajax tasks/s over each peer's, at the same order/inner steps/meta-batch (and remat off
    for the peers: they have none); `fastest_correct_peer` per setting."""
    out = []
    timed = [r for r in rows if r.get("status") == "ok" and not r.get("scaling")]
    for m in (r for r in timed if r["impl"] == "metajax"):
        same = [r for r in timed if r["impl"] != "metajax" and r["order"] == m["order"]
                and r["inner_steps"] == m["inner_steps"] and r["meta_batch"] == m["meta_batch"]]
        correct = [r for r in same if r["check"] == "pass"]
        best = max(correct, key=lambda r: r["tasks_per_s"], default=None)
        out.append({
            "order": m["order"], "inner_steps": m["inner_steps"], "meta_batch": m["meta_batch"],
            "remat": m["remat"], "task_map": m.get("variant_task_map"),
            "vs": {r["impl"]: m["tasks_per_s"] / r["tasks_per_s"] for r in same},
            "fastest_correct_peer": best["impl"] if best else None,
            "vs_fastest_correct_peer": m["tasks_per_s"] / best["tasks_per_s"] if best else None,
            "rss_vs_fastest_correct_peer": m["maxrss_mb"] / best["maxrss_mb"] if best else None,
            "added_rss_vs_fastest_correct_peer": (
                added_rss(m) / added_rss(best) if best and added_rss(m) is not None
                and added_rss(best) else None),
        })
    return out


# One machine's identical runs differ by 15-20 %: a per-unit ratio up to this is linear within noise.
LINEAR_NOISE = 1.15


def linearity(per_unit: float) -> str:
    if per_unit <= 1:
        return "at most linear"
    if per_unit <= LINEAR_NOISE:
        return f"linear within {100 * (LINEAR_NOISE - 1):.0f} % run-to-run spread"
    return "MORE than linear"


def scaling_series(rows: list[dict]) -> list[tuple[str, dict[int, dict]]]:
    """The `--scaling` rows on 1 device as ("meta-batch" | "inner steps", {size: row}) series,
    each the longest run of rows that share the other setting, sorted by size; only series of at
    least two sizes."""
    ok = [r for r in rows if r.get("scaling") and r.get("status") == "ok" and r["devices"] == 1]
    out = []
    for what, fixed, size in (("meta-batch", "inner_steps", "meta_batch"),
                              ("inner steps", "meta_batch", "inner_steps")):
        group: dict = {}
        for r in ok:
            group.setdefault(r[fixed], {})[r[size]] = r
        longest = max(group.values(), key=len, default={})
        if len(longest) > 1:
            out.append((what, dict(sorted(longest.items()))))
    return out


def scaling_lines(rows: list[dict]) -> list[dict]:
    """The C goals read off the `--scaling` series: time per step against meta-batch (1 inner
    step) and inner steps, each as (time ratio) / (size ratio): at most 1 is at most linear, up to
    `LINEAR_NOISE` linear within the run-to-run spread of these machines; and compile time at the
    most inner steps against 1 inner step (goal <= 1.5x). Compile time is the ahead-of-time
    `lower(...).compile()` (`aot_compile_s`); the first call (`compile_s`) also runs a step, whose
    own time grows with the inner steps, so its ratio is reported beside it, not judged."""
    out = []
    for what, series in scaling_series(rows):
        (smallest, base), *rest = series.items()
        for n, r in rest:
            time_ratio = r["median_s"] / base["median_s"]
            first_call_ratio = r["compile_s"] / base["compile_s"]
            aot = r.get("aot_compile_s"), base.get("aot_compile_s")
            out.append({"what": what, "from": smallest, "to": n, "time_ratio": time_ratio,
                        "per_unit": time_ratio / (n / smallest),
                        "first_call_ratio": first_call_ratio,
                        # results files from before aot_compile_s: the first call's ratio
                        "compile_ratio": aot[0] / aot[1] if all(aot) else first_call_ratio,
                        "compiles": min(len(x.get("aot_compile_all_s") or [0]) for x in (r, base))})
    return out


def markdown(payload: dict) -> str:
    rows, ratios = payload["results"], payload["ratios"]
    peak = payload["machine"]["peak"]
    acc = payload["machine"].get("accelerator") or {"platform": "cpu"}
    where = (f"{acc['device_kind']} ({acc['platform']}; host {payload['machine'].get('cpu_model')}"
             f", {payload['machine'].get('cores')} cores)" if acc["platform"] != "cpu" else
             f"{payload['machine'].get('cpu_model')}, {payload['machine'].get('cores')} cores")
    peak_text = (f"{peak['peak_gflops']:.0f} GFLOP/s fp32" if peak.get("peak_gflops")
                 else "unknown")
    lines = [f"MAML meta-step, workload {payload['settings']['workload']}: "
             f"{payload['settings']['description']}", "",
             f"Machine: {where}, peak {peak_text} ({peak['assumptions']}); "
             f"load {payload['machine'].get('load_average_1min')}; allocator "
             f"{' '.join(f'{k}={v}' for k, v in payload['allocator_env'].items())}", "",
             "| impl | order | K | T | remat | dev | check (rel err) | median s | min s | max s "
             "| tasks/s | metajax speed-up | compile s | RSS MB | added by steps MB | XLA temp MB "
             "| user s/step | sys s/step | XLA GFLOP | % of peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        check = r["check"] + (f" ({r['check_grad_rel_err']:.1e})"
                              if r.get("check_grad_rel_err") is not None else "")
        name = row_label({**r, "remat": False})  # remat has its own column
        head = (f"| {name} | {r['order']} | {r['inner_steps']} | {r['meta_batch']} | "
                f"{'yes' if r['remat'] else ''} | {r['devices']} | {check} |")
        if r.get("status") != "ok":
            lines.append(head + f" unavailable: {r.get('reason', '')[:120]} |" + " |" * 12)
            continue
        speedup = ""
        if r["impl"] != "metajax":  # against the first metajax variant (remat off) listed
            for q in ratios:
                if (q["order"], q["inner_steps"], q["meta_batch"], q["remat"]) == (
                        r["order"], r["inner_steps"], r["meta_batch"], False) and r["impl"] in q["vs"]:
                    speedup = f"{q['vs'][r['impl']]:.2f}x"
                    break
        cells = [f"{r['median_s']:.4f}", f"{r['min_s']:.4f}", f"{r['max_s']:.4f}",
                 f"{r['tasks_per_s']:.1f}", speedup, f"{r['compile_s']:.1f}",
                 f"{r['maxrss_mb']:.0f}",
                 f"{added_rss(r):.0f}" if added_rss(r) is not None else "",
                 f"{r['xla_temp_mb']:.0f}" if r.get("xla_temp_mb") is not None else "",
                 f"{r['user_s']:.3f}", f"{r['sys_s']:.3f}",
                 f"{r['xla_gflop']:.3g}" if r.get("xla_gflop") is not None else "",
                 f"{100 * r['peak_fraction']:.1f}" if r.get("peak_fraction") is not None else ""]
        lines.append(head + " " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("metajax speed-up = metajax tasks/s / the peer's tasks/s (same order, inner steps, "
                 "meta-batch, remat off; in a peer's row, of the first metajax variant listed). "
                 "Against the fastest peer whose float64 check passed:")
    for q in ratios:
        if q["fastest_correct_peer"]:
            lines.append(f"- order {q['order']}, {q['inner_steps']} inner step(s), meta-batch "
                         f"{q['meta_batch']}{', remat' if q['remat'] else ''}"
                         f"{', metajax over tasks: ' + q['task_map'] if q.get('task_map') else ''}: "
                         f"{q['vs_fastest_correct_peer']:.2f}x {q['fastest_correct_peer']} "
                         f"(peak RSS {q['rss_vs_fastest_correct_peer']:.2f}x"
                         + (f", RSS added by the steps {q['added_rss_vs_fastest_correct_peer']:.2f}x"
                            if q.get("added_rss_vs_fastest_correct_peer") is not None else "")
                         + ")")
        else:
            lines.append(f"- order {q['order']}, {q['inner_steps']} inner step(s): no correct "
                         "peer timed")
    for r in rows:
        if "same_loss_as_1_device" in r and r["devices"] > 1:
            lines.append(f"- {r['devices']} forced CPU devices: first-step loss "
                         f"{'equal to' if r['same_loss_as_1_device'] else 'DIFFERENT from'} "
                         "1 device's (rel 1e-5)")
    for q in payload.get("scaling", []):
        line = (f"- scaling, {q['what']} {q['from']} -> {q['to']}: step time "
                f"{q['time_ratio']:.2f}x for {q['to'] / q['from']:.0f}x ({q['per_unit']:.2f} per "
                f"unit: {linearity(q['per_unit'])})")
        if q["what"] == "inner steps":
            each = f"median of {q['compiles']} compiles each; " if q.get("compiles", 1) > 1 else ""
            line += (f"; compile {q['compile_ratio']:.2f}x ({each}goal <= 1.5x: "
                     f"{'met' if q['compile_ratio'] <= 1.5 else 'NOT met'}; first call, "
                     f"compile and one step, {q['first_call_ratio']:.2f}x)")
        lines.append(line)
    for q in payload.get("train_check", []):
        if "error" in q:
            lines.append(f"- metajax train, order {q['order']}: failed ({q['error']})")
            continue
        lines.append(f"- `metajax train` ({q['steps']} steps on Omniglot, order {q['order']}): "
                     f"{q['train_step_s']:.4f} s/step against the benchmark's "
                     f"{q['benchmark_step_s']:.4f} ({q['ratio']:.2f}x; goal within 15 %: "
                     f"{'met' if q['ratio'] <= 1.15 else 'NOT met'})")
    for impl, notes in payload.get("notes", {}).items():
        lines += [f"- note ({impl}): {n}" for n in notes]
    return "\n".join(lines)


def plot(payload: dict, path: Path) -> None:
    """Tasks/s per implementation (bars), and with `--scaling` the step time against meta-batch
    and inner steps beside the proportional line through the smallest size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in payload["results"] if r.get("status") == "ok" and not r.get("scaling")]
    series = [(what, {n: r["median_s"] for n, r in by_size.items()})
              for what, by_size in scaling_series(payload["results"])]
    if not rows and not series:
        return
    groups = sorted({(r["order"], r["inner_steps"]) for r in rows})
    labels = list(dict.fromkeys(row_label(r) for r in rows))
    bar_width = 1.8 + 1.6 * len(groups) * max(1, len(labels)) / 3 if rows else 0
    fig, axes = plt.subplots(1, (1 if rows else 0) + len(series), squeeze=False,
                             figsize=(bar_width + 3.6 * len(series), 4))
    axes = list(axes[0])
    if rows:
        ax = axes.pop(0)
        width = 0.8 / len(labels)
        for j, label in enumerate(labels):
            xs, ys, colors = [], [], []
            for i, g in enumerate(groups):
                for r in rows:
                    if (r["order"], r["inner_steps"]) == g and row_label(r) == label:
                        xs.append(i + j * width)
                        ys.append(r["tasks_per_s"])
                        colors.append(r["check"])
            bars = ax.bar(xs, ys, width, label=label)
            for bar, check in zip(bars, colors, strict=True):
                if check == "fail":
                    bar.set_hatch("//")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
        ax.set_xticklabels([f"order {o}, K={k}" for o, k in groups])
        ax.set_ylabel("tasks / s (higher is better)")
        ax.set_title(f"workload {payload['settings']['workload']}\n"
                     f"(hatched: float64 check failed)", fontsize=9)
        ax.legend(fontsize=8)
    for ax, (what, times) in zip(axes, series, strict=True):
        sizes = list(times)
        ax.plot(sizes, list(times.values()), "o-", label="metajax, order 2")
        ax.plot(sizes, [times[sizes[0]] * n / sizes[0] for n in sizes], "k--", lw=0.8,
                label="proportional to the smallest")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(what)
        ax.set_ylabel("seconds per meta-step")
        ax.set_title(f"step time against {what}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def describe(args) -> str:
    if args.workload == "B":
        return (f"sinusoid MLP 1-40-40-1, {args.shots} support / {args.queries} query points, "
                f"meta-batch {args.meta_batch}, inner lr {args.inner_lr}")
    return (f"conv4 (width {args.width}, max-pool), {args.ways}-way {args.shots}-shot, "
            f"{args.queries} queries per class, meta-batch {args.meta_batch}, inner lr "
            f"{args.inner_lr}, {args.inner_steps} inner step(s), Adam {args.outer_lr}; metajax "
            f"over tasks: {args.task_map or 'the library default'}"
            + ("; metajax's compiled step read from a persistent compilation cache that an "
               "earlier process wrote (--compile-cache warm: compile s is loading it, and RSS "
               "excludes the compiler's memory)" if args.compile_cache == "warm" else ""))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.job:  # worker mode: one metajax job in this fresh process
        job = json.loads(Path(args.job).read_text())
        Path(job["out"]).write_text(json.dumps(run_metajax_job(job)))
        return
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # the driver's JAX (workers: run_job)
    set_allocator(args.allocator)
    start = time.time()
    impls = [] if args.impls in ("", "none") else [i.strip() for i in args.impls.split(",")]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown:
        raise SystemExit(f"unknown --impls {unknown}; choose from {', '.join(IMPLS)}")
    orders = [1, 2] if args.order == "both" else [int(args.order)]
    task_maps = args.task_map.split(",") if args.task_map else [None]
    multiple = len(task_maps) > 1
    variants = {"metajax": [{"remat": remat, **({"task_map": m} if multiple else {})}
                            for m in task_maps
                            for remat in ((False, True) if args.workload == "C" else (False,))]}
    with tempfile.TemporaryDirectory(prefix="maml_speed_") as tmp:
        workdir = Path(tmp)
        driver = Driver(args, workdir)
        if args.dump_grad:
            if args.workload == "B":
                raise SystemExit("--dump-grad exports workload A (conv4); drop --workload B")
            params, episode = driver.problem_files(args.meta_batch, np.float64, "dump")
            job = {**job_base(args, workdir, "dump"), "mode": "dump", "params": str(params),
                   "episode": str(episode), "meta_batch": args.meta_batch,
                   "dump_dir": str(Path(args.dump_grad).resolve())}
            res = driver.launch("metajax", job, {"JAX_ENABLE_X64": "1"})
            if "error" in res:
                raise SystemExit(f"--dump-grad failed: {res['error']}")
            print(f"float64 gradients of workload A written to {res['dump_dir']} "
                  f"(meta-loss order 1 {res['meta_loss']['1']:.12g}, order 2 "
                  f"{res['meta_loss']['2']:.12g})")
        if not impls and not args.scaling:
            return
        driver.machine = machine(args.peak_gflops)
        peers = [i for i in impls if i != "metajax"]
        versions = {"metajax_python": sys.version.split()[0]}
        import flax
        import jax
        import optax

        versions.update({"jax": jax.__version__, "jaxlib": getattr(jax.lib, "__version__", None),
                         "flax": flax.__version__, "optax": optax.__version__,
                         "numpy": np.__version__})
        if peers:
            versions.update(peer_versions(args.peer_python))
        checks = {} if args.no_check else driver.check(impls, orders, variants)
        if args.check_only:
            print(json.dumps({f"{i}{v} order {o}": c for (i, v, o), c in checks.items()},
                             indent=1))
            return
        rows = driver.time_all(impls, orders, variants, checks)
        if args.scaling:
            rows += driver.scaling()
        train_checks = driver.train_check(rows, orders) if args.train_check else []
    notes = {r["impl"]: r["notes"] for r in rows if r.get("notes")}
    if "torchvision" in versions:
        notes.setdefault("learn2learn", []).append(versions["torchvision"])
    notes = {k: list(dict.fromkeys(v)) for k, v in notes.items()}
    payload = {
        "machine": driver.machine, "versions": versions,
        "command": "python " + " ".join(shlex.quote(x) for x in sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "settings": {**{k: getattr(args, k) for k in (
            "workload", "order", "inner_steps", "meta_batch", "ways", "shots", "queries",
            "inner_lr", "outer_lr", "width", "repeats", "min_seconds", "warmup", "seed",
            "check_meta_batch",
            "metajax_step", "task_map", "compile_cache")}, "description": describe(args),
            "check_rtol": CHECK_RTOL},
        "allocator": args.allocator, "allocator_env": ALLOCATOR_ENV, "notes": notes,
        # XLA's flags change what is measured (on a GPU, --xla_gpu_autotune_level=0 trades a
        # slower step for a much shorter compile)
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "flop_count": "xla_gflop: 2 x multiply-adds of the convolutions and dots of the compiled "
                      "step's optimised HLO, window taps on padding excluded, while-loop bodies "
                      "(lax.map over tasks, the inner lax.scan) times their known trip counts "
                      "(benchmarks/hlo_flops.py); xla_cost_analysis_gflop: XLA's cost_analysis() "
                      "flops, which count each loop body once. peak_fraction = xla_gflop / "
                      "median_s / machine.peak.peak_gflops",
        "results": rows, "ratios": ratio_rows(rows), "scaling": scaling_lines(rows),
        "train_check": train_checks,
        "wall_time_s": round(time.time() - start, 1),
    }
    table = markdown(payload)
    print(table)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"maml_speed_{args.workload}"  # non-default sizes, GPUs, scaling: their own files
    if driver.machine["accelerator"]["platform"] != "cpu":
        name += f"_{driver.machine['accelerator']['platform']}"
    for key, tag in (("inner_steps", "k"), ("meta_batch", "T"), ("queries", "q")):
        if getattr(args, key) != WORKLOADS[args.workload][key]:
            name += f"_{tag}{getattr(args, key)}"
    if args.scaling:
        name += "_scaling"
    if args.compile_cache == "warm":
        name += "_warm"
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1))
    (out / f"{name}.md").write_text(
        f"# {name}\n\nCommand: `{payload['command']}`  \nDate: {payload['date']}  \n"
        f"Wall time: {payload['wall_time_s']} s\n\n{table}\n")
    plot(payload, out / f"{name}.png")
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1))
    print(f"results written to {out / name}.{{json,md,png}}")


if __name__ == "__main__":
    main()
