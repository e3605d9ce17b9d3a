"""Optimisee task families of Andrychowicz et al. (2016), sampled on the device.

A `TaskFamily` is four pure functions (after learned_optimization's `TaskFamily`/`Task`):
`sample(key, data) -> task` draws one problem (its constants) from the arrays `data`,
`init(key, task) -> params` its starting point, `loss(params, task, key)` the loss an optimiser sees
at one step (a random mini-batch where the problem has data) and `eval_loss(params, task)` the loss
reported (the whole problem). All are vmappable over a leading optimisee axis.

- `quadratic_family()`: `f(theta) = ||W theta - y||^2`, 10 dimensions, W and y i.i.d. Gaussian,
  `theta_0 ~ N(0, 0.01^2)` (the authors' code). Held-out problems are fresh draws.
- `mlp_family(...)`: the paper's MNIST MLP moved to Omniglot: 10-way classification of 10 random
  characters (their 20 drawings, 200 images at 28x28), one hidden layer of 20 sigmoid units,
  mini-batches of 128 drawn with replacement. Training problems come from the background alphabets,
  held-out problems from the evaluation alphabets. `MLP_VARIANTS` are the paper's generalisation
  tests (40 units, 2 hidden layers, ReLU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.nets import MLP

Array = jax.Array
Params = chex.ArrayTree


class TaskFamily(NamedTuple):
    """A distribution over optimisation problems, as pure functions (see module docstring)."""

    sample: Callable[[Array, Any], Any]
    init: Callable[[Array, Any], Params]
    loss: Callable[[Params, Any, Array], Array]
    eval_loss: Callable[[Params, Any], Array]
    name: str = ""


class Quadratic(NamedTuple):
    w: Array  # [d, d]
    y: Array  # [d]


def quadratic_family(dims: int = 10, init_scale: float = 0.01) -> TaskFamily:
    """`f(theta) = ||W theta - y||^2` with `W [dims, dims]`, `y [dims]` standard Gaussian."""

    def sample(key: Array, data: Any = None) -> Quadratic:
        del data
        kw, ky = jax.random.split(key)
        return Quadratic(jax.random.normal(kw, (dims, dims)), jax.random.normal(ky, (dims,)))

    def init(key: Array, task: Quadratic) -> Params:
        del task
        return init_scale * jax.random.normal(key, (dims,))

    def eval_loss(theta: Params, task: Quadratic) -> Array:
        return jnp.sum((task.w @ theta - task.y) ** 2)

    def loss(theta: Params, task: Quadratic, key: Array) -> Array:
        del key
        return eval_loss(theta, task)

    return TaskFamily(sample, init, loss, eval_loss, f"quadratic{dims}")


class Classification(NamedTuple):
    x: Array  # [examples, features] float32 in [0, 1]
    y: Array  # [examples] int32


# name -> (hidden layer widths, activation): the base MLP and the paper's generalisation variants.
MLP_VARIANTS: dict[str, tuple[tuple[int, ...], str]] = {
    "base": ((20,), "sigmoid"),
    "wide": ((40,), "sigmoid"),
    "deep": ((20, 20), "sigmoid"),
    "relu": ((20,), "relu"),
}
ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}


def mlp_family(variant: str = "base", ways: int = 10, batch: int = 128) -> TaskFamily:
    """MLP classifiers of `ways` random Omniglot characters (all their drawings).

    `data` is a `[characters, drawings, H, W]` (or `[..., 1]`) uint8 array of the characters to draw
    from (`omniglot_pools`). `variant` is a key of `MLP_VARIANTS`.
    """
    if variant not in MLP_VARIANTS:
        raise ValueError(f"unknown MLP variant {variant!r}; choose one of {', '.join(MLP_VARIANTS)}")
    hidden, activation = MLP_VARIANTS[variant]
    net = MLP(hidden=hidden, num_outputs=ways, activation=ACTIVATIONS[activation])

    def sample(key: Array, data: Array) -> Classification:
        if data.shape[0] < ways:
            raise ValueError(f"mlp tasks need {ways} characters but the pool has {data.shape[0]}")
        chars = jax.random.choice(key, data.shape[0], (ways,), replace=False)
        images = data[chars]  # [ways, drawings, H, W(, 1)]
        drawings = images.shape[1]
        x = images.reshape(ways * drawings, -1).astype(jnp.float32) / 255.0
        y = jnp.repeat(jnp.arange(ways, dtype=jnp.int32), drawings)
        return Classification(x, y)

    def init(key: Array, task: Classification) -> Params:
        return net.init(key, task.x[:1])

    def xent(params: Params, x: Array, y: Array) -> Array:
        logits = net.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def loss(params: Params, task: Classification, key: Array) -> Array:
        idx = jax.random.randint(key, (batch,), 0, task.y.shape[0])
        return xent(params, task.x[idx], task.y[idx])

    def eval_loss(params: Params, task: Classification) -> Array:
        return xent(params, task.x, task.y)

    return TaskFamily(sample, init, loss, eval_loss, f"mlp_{variant}")


def omniglot_pools(size: int = 28, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(background, evaluation) characters as `[characters, 20, size, size]` uint8: training and
    held-out pools of `mlp_family`."""
    from metajax.data.omniglot import load_omniglot

    omniglot = load_omniglot(size, data_dir=data_dir, verbose=True)
    return omniglot.images[omniglot.background], omniglot.images[~omniglot.background]
