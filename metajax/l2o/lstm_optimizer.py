"""The coordinatewise LSTM optimiser of Andrychowicz et al. (2016), as a Flax module and as an optax
`GradientTransformation`.

Every coordinate of the optimisee is one row of a batch fed to a small two-layer LSTM (20 units)
whose weights are shared by all coordinates; its carry (the per-coordinate memory) is explicit state.
The input is the preprocessed gradient, the output scaled by `output_scale` is the update:
`theta_{t+1} = theta_t + g_t`. Parameter pytrees are flattened into one vector of coordinates
(`jax.flatten_util.ravel_pytree`), so one LSTM call serves every leaf.

Example:
    >>> net = LSTMOptimizer()
    >>> lstm_params = init_lstm_optimizer(net, jax.random.PRNGKey(0))
    >>> opt = learned_optimizer(lstm_params, net)
    >>> params = {"w": jnp.ones(3)}
    >>> state = opt.init(params)
    >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
    >>> updates, state = opt.update(grads, state)
    >>> params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import serialization
from jax.flatten_util import ravel_pytree

Array = jax.Array
Params = chex.ArrayTree
LSTMParams = chex.ArrayTree
# One (c, h) pair per LSTM layer, each [coordinates, units].
Carry = tuple[tuple[Array, Array], ...]


def preprocess_gradient(g: Array, p: float = 10.0) -> Array:
    """The paper's gradient preprocessing (Andrychowicz et al., appendix A): `[..., 2]` features.

    `[clip(log|g| / p, -1, 1), clip(g * e^p, -1, 1)]`: for `e^-p <= |g| <= e^p` this is the paper's
    (log-magnitude / p, sign); for smaller gradients (-1, e^p g); gradients above `e^p` (which the
    paper leaves unbounded) saturate at 1. The log is taken of `clip(|g|, e^-p, e^p)`, which gives
    the same value and a finite derivative at `g = 0` (for second-order meta-gradients).
    """
    log_part = jnp.log(jnp.clip(jnp.abs(g), jnp.exp(-p), jnp.exp(p))) / p
    sign_part = jnp.clip(g * jnp.exp(p), -1.0, 1.0)
    return jnp.stack([log_part, sign_part], axis=-1)


class LSTMOptimizer(nn.Module):
    """Coordinatewise LSTM optimiser: `(gradients [n], carry) -> (updates [n], carry)`.

    Attributes:
      units: LSTM units per layer (20 in the paper).
      layers: stacked LSTM layers (2).
      preprocess_p: the `p` of `preprocess_gradient` (10 in the paper, 5 in the authors' code);
        `None` feeds the raw gradient.
      output_scale: the LSTM output is multiplied by this (0.01).
    """

    units: int = 20
    layers: int = 2
    preprocess_p: float | None = 10.0
    output_scale: float = 0.01

    @nn.compact
    def __call__(self, grads: Array, carry: Carry) -> tuple[Array, Carry]:
        chex.assert_rank(grads, 1)
        if self.preprocess_p is None:
            x = grads[:, None]
        else:
            x = preprocess_gradient(grads, self.preprocess_p)
        new_carry = []
        for i in range(self.layers):
            c, x = nn.OptimizedLSTMCell(self.units, name=f"lstm_{i}")(carry[i], x)
            new_carry.append(c)
        out = nn.Dense(1, name="out")(x)[:, 0]
        return out * self.output_scale, tuple(new_carry)

    def initial_carry(self, n: int, dtype=jnp.float32) -> Carry:
        """Zero memory for `n` coordinates."""
        zeros = jnp.zeros((n, self.units), dtype)
        return tuple((zeros, zeros) for _ in range(self.layers))

    def settings(self) -> dict:
        return {"units": self.units, "layers": self.layers, "preprocess_p": self.preprocess_p,
                "output_scale": self.output_scale}


def init_lstm_optimizer(net: LSTMOptimizer, key: Array) -> LSTMParams:
    """The LSTM optimiser's (meta-)parameters."""
    return net.init(key, jnp.zeros((1,)), net.initial_carry(1))


def num_coordinates(params: Params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def propose_updates(net: LSTMOptimizer, lstm_params: LSTMParams, grads: Params,
                    carry: Carry) -> tuple[Params, Carry]:
    """One step of the learned optimiser on a parameter pytree: the updates (to be added) and the
    next carry. Shared by meta-training and the optax transformation."""
    flat, unravel = ravel_pytree(grads)
    step, carry = net.apply(lstm_params, flat, carry)
    return unravel(step.astype(flat.dtype)), carry


class LearnedOptimizerState(NamedTuple):
    """State of `learned_optimizer`: the LSTM carry of every coordinate of the parameters."""

    carry: Carry


def learned_optimizer(lstm_params: LSTMParams,
                      net: LSTMOptimizer | None = None) -> optax.GradientTransformation:
    """A trained LSTM optimiser as an optax transformation (used with `optax.apply_updates`).

    Args:
      lstm_params: the LSTM optimiser's parameters (from meta-training or `load_lstm_optimizer`).
      net: the module they belong to (default `LSTMOptimizer()`: 2 layers of 20 units, p = 10).

    Returns:
      `optax.GradientTransformation` whose `update(grads, state)` returns the LSTM's proposed steps;
      the state holds the LSTM memory of each coordinate (sized by the params given to `init`).
    """
    net = net or LSTMOptimizer()

    def init(params: Params) -> LearnedOptimizerState:
        flat, _ = ravel_pytree(params)
        return LearnedOptimizerState(net.initial_carry(flat.shape[0], flat.dtype))

    def update(updates: Params, state: LearnedOptimizerState,
               params: Params | None = None) -> tuple[Params, LearnedOptimizerState]:
        del params
        steps, carry = propose_updates(net, lstm_params, updates, state.carry)
        return steps, LearnedOptimizerState(carry)

    return optax.GradientTransformation(init, update)


def save_lstm_optimizer(path: str | Path, lstm_params: LSTMParams, net: LSTMOptimizer) -> Path:
    """Writes the parameters (`path`, msgpack) and the module's settings (`path` + `.json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(serialization.to_bytes(jax.device_get(lstm_params)))
    path.with_name(path.name + ".json").write_text(json.dumps(net.settings(), indent=2))
    return path


def load_lstm_optimizer(path: str | Path) -> tuple[LSTMOptimizer, LSTMParams]:
    """Reads what `save_lstm_optimizer` wrote: `(net, lstm_params)`; pass both to
    `learned_optimizer`."""
    path = Path(path)
    settings_path = path.with_name(path.name + ".json")
    if not path.exists() or not settings_path.exists():
        raise FileNotFoundError(f"{path} or {settings_path} not found: write them with "
                                f"save_lstm_optimizer (a `metajax train l2o` run has both)")
    net = LSTMOptimizer(**json.loads(settings_path.read_text()))
    template = init_lstm_optimizer(net, jax.random.PRNGKey(0))
    return net, serialization.from_bytes(template, path.read_bytes())
