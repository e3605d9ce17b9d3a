"""Evaluation on a fixed, seeded set of episodes: mean and 95% confidence interval of each metric."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from metajax.training.sharding import replicated, task_mesh, task_sharding
from metajax.training.trainer import map_leading, resolve_task_map
from metajax.types import Learner, Params, SampleFn

# Input values scored at once: 4096 Omniglot images at 28x28 (a 20-way episode with 15 queries holds
# 320 of them, so 12 episodes); proportionally fewer images at larger sizes, whose activations (and
# im2col buffers) grow with the pixel count: at 105x105, 100 such episodes would need tens of GB.
MAX_VALUES_AT_ONCE = 4096 * 28 * 28


def episodes_at_once(shapes: Any, chunk: int = 100) -> int:
    """How many episodes of the given shapes (`jax.eval_shape` of one episode) to score at once:
    at most `chunk`, at least 1, and no more than `MAX_VALUES_AT_ONCE` input values in all."""
    values = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    return max(1, min(chunk, MAX_VALUES_AT_ONCE // max(values, 1)))


def confidence_interval(values: np.ndarray) -> float:
    """95% confidence interval half-width of the mean: 1.96 * std / sqrt(n)."""
    values = np.asarray(values, dtype=np.float64)
    return float(1.96 * values.std() / math.sqrt(len(values))) if len(values) else float("nan")


def make_episode_metrics(learner: Learner, sample: SampleFn, task_map: str = "vmap"):
    """A jitted `(params, data, keys[E]) -> metrics[E]` that scores one episode per key.

    `task_map` ("vmap", "map", "map:N" or "auto", as in `map_over_tasks`) is how the episodes run:
    vmapped, one after another (`lax.map`), or in vmapped chunks of N.
    """
    resolve_task_map(task_map)

    def one(params, data, key):
        k_task, k_loss = jax.random.split(key)
        _, metrics = learner.loss(params, sample(k_task, data), k_loss)
        return metrics

    return jax.jit(lambda params, data, keys: map_leading(lambda k: one(params, data, k), keys,
                                                          task_map))


def evaluate(learner: Learner, params: Params, sample: SampleFn, data: Any, episodes: int = 600,
             seed: int = 0, chunk: int = 100, progress: bool = False, desc: str = "eval",
             devices=None, task_map: str = "vmap") -> dict:
    """Scores `learner` on `episodes` episodes drawn with keys `fold_in(PRNGKey(seed), i)`.

    The episodes depend only on `seed` and `i`, not on `chunk` or the number of devices.
    `task_map` ("vmap" or "map") is how the learner runs over the episodes of a chunk.

    Returns:
      `{metric: mean, metric_ci95: ..., "episodes": E, "ci95": ...}` where `ci95` is that of
      `accuracy` for classification and of `loss` otherwise.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    mesh = task_mesh(devices)
    n_dev = mesh.devices.size
    # Bound the episodes scored at once by their input size (activations grow with it; more at once
    # gains no speed).
    chunk = episodes_at_once(jax.eval_shape(sample, jax.random.PRNGKey(0), data), chunk)
    chunk = max(n_dev, min(chunk, episodes) // n_dev * n_dev)
    fn = make_episode_metrics(learner, sample, task_map)
    base = jax.random.PRNGKey(seed)
    total = -(-episodes // chunk) * chunk
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(total))
    params = jax.device_put(params, replicated(mesh))
    data = jax.device_put(data, replicated(mesh))
    parts = []
    for start in tqdm(range(0, total, chunk), desc=desc, disable=not progress, leave=False):
        k = jax.device_put(keys[start : start + chunk], task_sharding(mesh))
        parts.append(jax.device_get(fn(params, data, k)))
    metrics = {name: np.concatenate([p[name] for p in parts])[:episodes] for name in parts[0]}
    out: dict = {"episodes": episodes, "eval_seed": seed}
    for name, values in metrics.items():
        out[name] = float(np.mean(values))
        out[f"{name}_ci95"] = confidence_interval(values)
    out["ci95"] = out["accuracy_ci95"] if "accuracy" in metrics else out["loss_ci95"]
    return out
