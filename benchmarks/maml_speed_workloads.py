"""The workloads of `benchmarks/maml_speed.py` and its metajax worker.

The shared problem (numpy, so that every implementation gets the same weights and episode as .npz
files): conv4 or MLP weights in flax's names and layouts and an Omniglot-like or sinusoid episode.
The worker (`run_metajax_job`, run by `maml_speed.py --job` in a fresh process): metajax's float64
meta-gradient for the correctness check, the timed training step, and the `--dump-grad` export.
Kept apart from the driver so that the driver's file stays short; the PyTorch side is
`benchmarks/peers/torch_maml.py`. numpy only at import: the driver imports this file before it sets
JAX's environment, so JAX and metajax are imported inside the worker's functions.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

WORKLOADS = {
    "A": dict(ways=5, shots=1, queries=15, meta_batch=32, inner_steps=1, inner_lr=0.4,
              order="both"),
    "B": dict(ways=1, shots=10, queries=10, meta_batch=25, inner_steps=1, inner_lr=0.01,
              order="2"),
    "C": dict(ways=5, shots=1, queries=15, meta_batch=32, inner_steps=10, inner_lr=0.4,
              order="2"),
}


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

    from metajax.bench.flops import hlo_flops
    from metajax.bench.timing import time_steps
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
