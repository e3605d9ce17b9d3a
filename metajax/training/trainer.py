"""The generic meta-trainer: one jitted step samples a meta-batch on the device, vmaps the learner
over its tasks, and applies an optax update. Checkpoints (orbax), JSON-lines metrics, a progress bar,
periodic validation and a NaN guard wrap it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from flax import struct
from tqdm import tqdm

from metajax.nets.network import mean_state, trainable_part
from metajax.training.sharding import (
    check_divisible,
    replicated,
    task_mesh,
    task_sharding,
)
from metajax.types import Learner, Metrics, OptState, Params, SampleFn, Task

# Steps dispatched ahead of the last finished one: enough to hide the host's dispatch time, few
# enough that the progress bar and its rate follow the computation instead of running ahead of it
STEPS_IN_FLIGHT = 2


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointExists(RuntimeError):
    """The output directory already holds checkpoints and `resume` was not asked for."""


@struct.dataclass
class TrainState:
    """`params` holds the learner's whole variables (`params` and any state collection such as
    `batch_stats`); `opt_state` is the optimiser's state over the trainable part only
    (`metajax.nets.network.trainable_part`)."""

    step: jax.Array
    params: Params
    opt_state: OptState
    inner_state: Any = None  # a stateful learner's carried state (`Learner.init_inner_state`)


def init_state(learner: Learner, optimizer: optax.GradientTransformation, key: jax.Array,
               example_task: Task) -> TrainState:
    """Meta-parameters from `learner.init` and a fresh optimiser state over their trainable part,
    at step 0. The init is jitted: run eagerly, a Flax network's initialisation is op by op and
    takes seconds."""
    params = jax.jit(learner.init)(key, example_task)
    inner = None if learner.init_inner_state is None else learner.init_inner_state(params)
    return TrainState(jnp.zeros((), jnp.int32), params,
                      optimizer.init(trainable_part(params)[0]), inner)


def loss_and_state_of(learner: Learner) -> Callable:
    """`learner.loss_and_state`, or `learner.loss` with an empty state for learners without it."""
    if learner.loss_and_state is not None:
        return learner.loss_and_state

    def from_loss(variables, task, key):
        value, metrics = learner.loss(variables, task, key)
        return value, (metrics, {})

    return from_loss


TASK_MAPS = ("vmap", "map", "map:N", "auto")


def resolve_task_map(task_map: str) -> str:
    """`task_map` checked, with "auto" made concrete: "map" on a CPU (one task's memory instead of
    the meta-batch's, see `map_over_tasks`), "vmap" on an accelerator (one batched program keeps
    it busy)."""
    if task_map == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    if task_map in ("vmap", "map") or (
            task_map.startswith("map:") and task_map[4:].isdigit() and int(task_map[4:]) > 0):
        return task_map
    raise ValueError(f"task_map must be one of {TASK_MAPS} (N a positive integer), got "
                     f"{task_map!r}")


def map_leading(fn: Callable, xs: Any, task_map: str = "vmap") -> Any:
    """`fn` over the leading axis of the pytree `xs`, as `task_map` says (`map_over_tasks`)."""
    task_map = resolve_task_map(task_map)
    if task_map == "vmap":
        return jax.vmap(fn)(xs)
    if task_map == "map":
        return jax.lax.map(fn, xs)
    return jax.lax.map(fn, xs, batch_size=int(task_map[4:]))


def map_over_tasks(fn: Callable, task_map: str = "vmap") -> Callable:
    """`fn(params, task, key)` -> `fn(params, tasks, keys)` over a leading task axis.

    `"vmap"` vectorises over tasks (one batched program). `"map"` runs the tasks one after another
    with `lax.map`. `"map:N"` runs chunks of N vmapped tasks one after another (`lax.map` with
    `batch_size=N`). `"auto"`: "map" on a CPU, "vmap" on an accelerator. On a CPU, a whole
    meta-batch of conv4 MAML tasks (32) needs gigabytes of temporaries under "vmap"; one after
    another, each task's working set stays small (with `meta_update`, which takes each task's
    gradient inside the loop), and the step is no slower (`benchmarks/results/maml_speed_*.md`).
    """
    resolve_task_map(task_map)  # a bad value fails here, not at the first call
    return lambda params, tasks, keys: map_leading(lambda tk: fn(params, *tk), (tasks, keys),
                                                   task_map)


def meta_batch_loss(learner: Learner, params: Params, tasks: Task, keys: jax.Array,
                    task_map: str = "vmap"):
    """Mean outer loss and mean metrics of `learner` over a batch of tasks (vmapped by default)."""
    losses, metrics = map_over_tasks(learner.loss, task_map)(params, tasks, keys)
    return losses.mean(), jax.tree.map(jnp.mean, metrics)


def meta_gradient(learner: Learner, params: Params, tasks: Task, keys: jax.Array,
                  task_map: str = "vmap"):
    """The meta-batch's update direction over the trainable part of `params` (all of it when
    there is no state collection): grad of the mean loss, or the mean of `learner.meta_grad`.
    A stateful learner (`init_inner_state`) starts from its initial state here; the trainer uses
    `meta_update`, which carries the state."""
    grads, metrics, _ = meta_update(learner, params, tasks, keys, task_map)
    return grads, metrics


def meta_update(learner: Learner, params: Params, tasks: Task, keys: jax.Array,
                task_map: str = "vmap", inner_state: Any = None):
    """`(direction, metrics, inner_state)`: `meta_gradient`'s direction, and for a stateful learner
    the state after this meta-batch: every task starts from `inner_state` (default: the learner's
    initial state) and the mean of the tasks' states is kept (integer leaves, such as step counts,
    are equal across tasks and kept as they are)."""
    direction, metrics, inner_state, _ = meta_step_parts(learner, params, tasks, keys, task_map,
                                                         inner_state)
    return direction, metrics, inner_state


def meta_step_parts(learner: Learner, variables: Params, tasks: Task, keys: jax.Array,
                    task_map: str = "vmap", inner_state: Any = None):
    """`(direction, metrics, inner_state, model_state)`: `meta_update`'s results and the learner's
    non-`params` collections after the meta-batch (each task starts from the same collections;
    the mean over tasks of what they return is kept: running averages of batch norm, say)."""
    trainable, model_state = trainable_part(variables)
    loss_and_state = loss_and_state_of(learner)
    mean = lambda tree: jax.tree.map(lambda g: g.mean(axis=0), tree)  # noqa: E731

    def task_loss(tr, task, key):
        return loss_and_state({**model_state, **tr} if model_state else tr, task, key)

    if learner.meta_grad is None and resolve_task_map(task_map) == "vmap":
        def batch_loss(tr):
            losses, (metrics, states) = jax.vmap(lambda t, k: task_loss(tr, t, k))(tasks, keys)
            return losses.mean(), (jax.tree.map(jnp.mean, metrics), states)

        grads, (metrics, states) = jax.grad(batch_loss, has_aux=True)(trainable)
        return grads, metrics, inner_state, {**model_state, **mean_state(states)}
    if learner.meta_grad is None:
        # mapped tasks take each task's (chunk's) gradient inside the loop, so only one chunk's
        # activations are alive at a time; the gradient of the whole loop would keep every task's
        # residuals until the backward pass
        def per_task(tr, task, key):
            grads, (metrics, states) = jax.grad(task_loss, has_aux=True)(tr, task, key)
            return grads, metrics, states

        grads, metrics, states = map_over_tasks(per_task, task_map)(trainable, tasks, keys)
        return (mean(grads), jax.tree.map(jnp.mean, metrics), inner_state,
                {**model_state, **mean_state(states)})
    if learner.init_inner_state is None:
        grads, metrics = map_over_tasks(learner.meta_grad, task_map)(variables, tasks, keys)
        return (trainable_part(mean(grads))[0], jax.tree.map(jnp.mean, metrics), inner_state,
                model_state)
    if inner_state is None:
        inner_state = learner.init_inner_state(variables)
    grads, metrics, states = map_over_tasks(
        lambda p, t, k: learner.meta_grad(p, t, k, inner_state), task_map)(variables, tasks, keys)
    return (trainable_part(mean(grads))[0], jax.tree.map(jnp.mean, metrics), mean_state(states),
            model_state)


def make_train_step(learner: Learner, optimizer: optax.GradientTransformation, sample: SampleFn,
                    meta_batch: int, seed: int, mesh=None, task_map: str = "vmap",
                    presampled: bool = False):
    """Builds the jitted `step(state, data) -> (state, metrics)`.

    The step's randomness is `fold_in(PRNGKey(seed), state.step)`, so a run resumed from a checkpoint
    draws the same tasks as an uninterrupted one. Tasks are sharded over the mesh's devices.
    `task_map` ("vmap" or "map") is how the learner is mapped over the tasks (`map_over_tasks`).
    With `presampled`, `data` is a meta-batch drawn elsewhere (`metajax.data.streaming`) and
    `sample(data) -> tasks` only prepares it on the device.
    """
    mesh = mesh or task_mesh()
    check_divisible(meta_batch, mesh)
    tasks_sharded, rep = task_sharding(mesh), replicated(mesh)
    base_key = jax.random.PRNGKey(seed)

    def step(state: TrainState, data: Any) -> tuple[TrainState, Metrics]:
        key = jax.random.fold_in(base_key, state.step)
        k_tasks, k_loss = jax.random.split(key)
        if presampled:
            tasks = sample(data)
        else:
            tasks = jax.vmap(sample, in_axes=(0, None))(jax.random.split(k_tasks, meta_batch), data)
        tasks = jax.lax.with_sharding_constraint(tasks, tasks_sharded)
        keys = jax.lax.with_sharding_constraint(jax.random.split(k_loss, meta_batch), tasks_sharded)
        grads, metrics, inner, model_state = meta_step_parts(
            learner, state.params, tasks, keys, task_map, state.inner_state)
        trainable, _ = trainable_part(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        params = {**model_state, **trainable} if model_state else trainable
        return TrainState(state.step + 1, params, opt_state, inner), metrics

    return jax.jit(step, out_shardings=(rep, rep), donate_argnums=0)


def _checkpoint_manager(out_dir: Path, keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager((out_dir / "checkpoints").absolute(), options=options)


def restore_state(out_dir: Path, abstract: TrainState, step: int | None = None) -> TrainState:
    """Restores the latest (or a given) checkpoint of a run into the structure of `abstract`."""
    manager = _checkpoint_manager(Path(out_dir))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {Path(out_dir) / 'checkpoints'}")
    state = _restore(manager, step, abstract)
    manager.close()
    return state


def _is_metasgd_params(tree: Any) -> bool:
    return (isinstance(tree, dict) and set(tree) == {"params"} and isinstance(tree["params"], dict)
            and set(tree["params"]) == {"init", "lr"})


def _is_deml_params(tree: Any) -> bool:
    return (isinstance(tree, dict) and set(tree) == {"params"} and isinstance(tree["params"], dict)
            and set(tree["params"]) == {"generator", "discriminator", "learner"})


def _legacy(tree: Any) -> Any:
    """A stateless Meta-SGD or DEML tree in the layout runs were saved in before learners took
    whole variables dicts. Meta-SGD's `{"params": {"init": a, "lr": b}}` was `{"init": {"params":
    a}, "lr": {"params": b}}`; DEML's `{"params": {"generator": g, "discriminator": d, "learner":
    l}}` was `{"generator": {"params": g}, "discriminator": d, "learner": l}`. Each pair flattens
    to the same leaves in the same order (dict keys sort the same way)."""
    if _is_metasgd_params(tree):
        return {"init": {"params": tree["params"]["init"]}, "lr": {"params": tree["params"]["lr"]}}
    return {**tree["params"], "generator": {"params": tree["params"]["generator"]}}


def _legacy_layout(tree: Any) -> Any:
    """`tree` with every Meta-SGD or DEML variables subtree in its earlier layout (`_legacy`)."""
    is_new = lambda t: _is_metasgd_params(t) or _is_deml_params(t)  # noqa: E731
    return jax.tree.map(lambda t: _legacy(t) if is_new(t) else t, tree, is_leaf=is_new)


def _restore(manager: ocp.CheckpointManager, step: int, like: Any) -> Any:
    """Checkpoint `step` restored into the structure of `like`. A `TrainState` saved before it had
    `inner_state` (checkpoints written before the field existed) restores into one whose
    `inner_state` is None; a Meta-SGD or DEML run saved in its earlier layout is converted to the
    current one (`_legacy_layout`)."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(target))
    except ValueError:
        legacy_target = _legacy_layout(target)
        if jax.tree.structure(legacy_target) != jax.tree.structure(target):
            restored = _restore(manager, step, legacy_target)
            return jax.tree.unflatten(jax.tree.structure(target), jax.tree.leaves(restored))
        if not (isinstance(target, TrainState) and target.inner_state is None):
            raise
        legacy = {"step": target.step, "params": target.params, "opt_state": target.opt_state}
        return TrainState(**manager.restore(step, args=ocp.args.StandardRestore(legacy)))


def trim_metrics(path: Path, last_step: int) -> None:
    """Drops metric lines written after the checkpoint we resume from (a killed run's tail)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def refuse_existing_checkpoints(out_dir: str | Path, resume: bool) -> None:
    """Raises `CheckpointExists` when `out_dir/checkpoints` holds a step and `resume` is false.

    Checked before anything is written to `out_dir` (its `config.json` belongs to that run)."""
    ckpt = Path(out_dir) / "checkpoints"
    steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.is_dir() else []
    if steps and not resume:
        raise CheckpointExists(
            f"{out_dir} already holds checkpoints (latest step {max(steps)}); pass --resume to "
            f"continue that run, or choose another --out"
        )


def train(learner: Learner, optimizer: optax.GradientTransformation, sample: SampleFn, data: Any,
          *, steps: int, meta_batch: int, seed: int, out_dir: str | Path, example_task: Task,
          validate: Callable[[Params, Any], dict] | None = None, val_every: int = 0,
          checkpoint_every: int = 500, log_every: int = 50, resume: bool = False,
          devices=None, progress: bool = True, task_map: str = "vmap") -> tuple[TrainState, dict]:
    """Meta-trains `learner` for `steps` steps and returns the final state and run statistics.

    Args:
      learner: the learner's pure functions.
      optimizer: optax outer optimiser.
      sample: `sample(key, data) -> Task`, run on the device inside the step.
      data: arrays the sampler reads (placed in device memory, replicated); or, for data larger
        than device memory, a host stream of meta-batches (`metajax.data.streaming.HostEpisodes`,
        anything with `batches(start, place)` and `on_device(batch)`), with `sample=None`.
      steps, meta_batch, seed: length, tasks per step, and the seed of initialisation and tasks.
      out_dir: run directory: `checkpoints/`, `metrics.jsonl`.
      example_task: a task (unbatched) to initialise parameters from.
      validate: optional `validate(params, inner_state) -> metrics`, run every `val_every` steps
        (`inner_state`: the stateful learner's carried state, else None).
      checkpoint_every: steps between checkpoints (the last step is always saved).
      resume: continue from the latest checkpoint in `out_dir`; without it an existing checkpoint
        is an error rather than silently overwritten.
      devices: devices to split the meta-batch over (default: all).
      task_map: "vmap" (default) or "map": how the learner runs over the tasks of a meta-batch.

    Raises:
      TrainingDiverged: the loss became NaN/inf; the last good checkpoint stays on disk.
      CheckpointExists: `out_dir` has checkpoints and `resume` is false.
    """
    mesh = task_mesh(devices)
    rep = replicated(mesh)
    streamed = hasattr(data, "batches") and hasattr(data, "on_device")
    if streamed and data.meta_batch != meta_batch:
        raise ValueError(f"the host stream draws meta-batches of {data.meta_batch} tasks; "
                         f"train was asked for {meta_batch}")
    state = init_state(learner, optimizer, jax.random.PRNGKey(seed), example_task)
    if streamed:
        step_fn = make_train_step(learner, optimizer, data.on_device, meta_batch, seed, mesh,
                                  task_map, presampled=True)
        sharded = task_sharding(mesh)
        stream = lambda start: data.batches(start, lambda b: jax.device_put(b, sharded))  # noqa: E731
    else:
        step_fn = make_train_step(learner, optimizer, sample, meta_batch, seed, mesh, task_map)
        data, stream = jax.device_put(data, rep), None
    return run_loop(step_fn, state, data, steps=steps, out_dir=out_dir,
                    checkpoint_every=checkpoint_every, log_every=log_every, resume=resume,
                    progress=progress, validate=validate, val_every=val_every,
                    place=lambda st: jax.device_put(st, rep), stream=stream)


def run_loop(step_fn: Callable[[Any, Any], tuple[Any, Metrics]], state: Any, data: Any, *,
             steps: int, out_dir: str | Path, checkpoint_every: int, log_every: int,
             resume: bool = False, progress: bool = True,
             validate: Callable[[Params, Any], dict] | None = None, val_every: int = 0,
             place: Callable[[Any], Any] = lambda st: st,
             postfix: tuple[str, ...] = ("loss", "accuracy"),
             stream: Callable[[int], Any] | None = None) -> tuple[Any, dict]:
    """The loop every trainer shares: `state, metrics = step_fn(state, data)` from the state's
    `step` to `steps`, with orbax checkpoints (resumable), `metrics.jsonl` (means over `log_every`
    steps, `val_*` rows from `validate(state.params, inner_state)`), a progress bar and a NaN
    guard on `loss`.

    `state` is a pytree with a `step` field, freshly initialised (it is also the restore target);
    `place` puts it on its devices after initialisation or restore. With `stream`, each step's
    `data` is the next item of `stream(start_step)` instead (a host stream of meta-batches).

    Raises:
      TrainingDiverged: the loss became NaN/inf; the last good checkpoint stays on disk.
      CheckpointExists: `out_dir` has checkpoints and `resume` is false.
    """
    out_dir = Path(out_dir)
    refuse_existing_checkpoints(out_dir, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"
    manager = _checkpoint_manager(out_dir)
    latest = manager.latest_step()
    if latest is not None:
        state = _restore(manager, latest, state)
        trim_metrics(metrics_path, latest)
    elif metrics_path.exists():
        metrics_path.unlink()
    state = place(state)

    start_step = int(state.step)
    last_saved = latest
    sums: dict[str, float] = {}
    count = 0
    timed_steps, timed_seconds, compile_s = 0, 0.0, None
    wall_start = time.time()
    bar = tqdm(total=steps, initial=start_step, desc="meta-train", disable=not progress,
               dynamic_ncols=True)
    # Metrics stay on the device until a log line, a validation or a checkpoint needs them: one
    # transfer per window instead of a host sync per step, which would stall dispatch on an
    # accelerator. They are then checked and summed step by step, as before.
    pending: list[tuple[int, Metrics]] = []
    excluded = 0.0  # seconds of validation and checkpointing inside the timed window
    timed_from = None

    def diverged(step_no: int, loss: float) -> TrainingDiverged:
        manager.wait_until_finished()
        manager.close()
        bar.close()
        where = (f"the last good checkpoint (step {last_saved}) is kept in "
                 f"{out_dir / 'checkpoints'}" if last_saved is not None
                 else "no checkpoint had been written yet")
        return TrainingDiverged(f"loss is {loss} at step {step_no}; training stopped and {where}. "
                                f"Try a lower learning rate.")

    def fetch() -> None:
        nonlocal count
        for (step_no, _), host in zip(pending, jax.device_get([m for _, m in pending]),
                                      strict=True):
            host = {k: float(v) for k, v in host.items()}
            if not math.isfinite(host["loss"]):
                raise diverged(step_no, host["loss"])
            for k, v in host.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
        pending.clear()

    batches = stream(start_step) if stream is not None else None
    with open(metrics_path, "a") as log:
        for step in range(start_step, steps):
            t0 = time.perf_counter()
            state, metrics = step_fn(state, next(batches) if batches is not None else data)
            if compile_s is None:
                jax.block_until_ready(metrics)
                compile_s = time.perf_counter() - t0
                timed_from = time.perf_counter()
            else:
                timed_steps += 1
            done = step + 1
            pending.append((done, metrics))
            if len(pending) > STEPS_IN_FLIGHT:  # the bar counts finished steps, give or take these
                jax.block_until_ready(pending[-STEPS_IN_FLIGHT - 1][1])
            log_now = done % log_every == 0 or done == steps
            validate_now = (validate is not None and val_every
                            and (done % val_every == 0 or done == steps))
            save_now = done % checkpoint_every == 0 or done == steps
            if log_now or validate_now or save_now:
                fetch()  # also the finite-loss check, before anything is validated or saved
            if log_now:
                row = {"step": done, **{k: v / count for k, v in sums.items()},
                       "time_s": round(time.time() - wall_start, 3)}
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in postfix})
                sums, count = {}, 0
            t_side = time.perf_counter()
            if validate_now:
                val = validate(state.params, getattr(state, "inner_state", None))
                log.write(json.dumps({"step": done, **{f"val_{k}": v for k, v in val.items()}})
                          + "\n")
                log.flush()
            if save_now:
                manager.save(done, args=ocp.args.StandardSave(state))
                last_saved = done
            excluded += time.perf_counter() - t_side
            bar.update(1)
    if batches is not None:
        batches.close()  # stops the producer thread
    if timed_from is not None and timed_steps:
        timed_seconds = time.perf_counter() - timed_from - excluded
    bar.close()
    manager.wait_until_finished()
    manager.close()
    stats = {
        "start_step": start_step,
        "compile_s": compile_s,
        "steps_per_s": timed_steps / timed_seconds if timed_seconds else None,
        "train_wall_time_s": time.time() - wall_start,
    }
    return state, stats
