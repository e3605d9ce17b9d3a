"""Meta-training the LSTM optimiser by truncated backpropagation through time, and evaluating it
against tuned hand-designed optimisers.

One meta-training step is one *run*: a batch of fresh optimisees (vmapped) is optimised for
`horizon` steps (100) by the LSTM, in `horizon // unroll` truncated unrolls of `unroll` steps (20).
After each unroll the meta-loss, the sum of the optimisee losses `f(theta_1) + ... + f(theta_T)`
along the unroll (weights w_t = 1), averaged over the batch, is differentiated with respect to the
LSTM parameters and an optax step (Adam 1e-3) is taken. The optimisee parameters and LSTM carry
passed to the next unroll are `stop_gradient`-ed (the truncation). By default the optimisee gradient
fed to the LSTM is `stop_gradient`-ed too (second derivatives dropped, as in the paper).

Randomness: the mini-batch of step `t` of an optimisee is drawn with `fold_in(key, t)`, both here and
in `optimizee_curves`, so an optax loop with `learned_optimizer` retraces meta-training's trajectory.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from metajax.l2o.lstm_optimizer import (
    Carry,
    LSTMOptimizer,
    LSTMParams,
    init_lstm_optimizer,
    learned_optimizer,
    num_coordinates,
    propose_updates,
)
from metajax.l2o.optimizees import MLP_VARIANTS, TaskFamily

Array = jax.Array
Params = Any

# Hand-designed baselines, each built from its learning rate (tuned on a grid).
BASELINES: dict[str, Callable[[Any], optax.GradientTransformation]] = {
    "sgd": lambda lr: optax.sgd(lr),
    "nag": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda lr: optax.rmsprop(lr, decay=0.9),
    "adam": lambda lr: optax.adam(lr),
}
LR_GRID = tuple(float(x) for x in 10.0 ** np.arange(-4.0, 1.01, 0.5))


# ---------------------------------------------------------------------------------------------
# Truncated unrolls


def unroll(net: LSTMOptimizer, lstm_params: LSTMParams, family: TaskFamily, task: Any,
           params: Params, carry: Carry, key: Array, start: Array | int, steps: int,
           second_order: bool = False) -> tuple[Array, Params, Carry]:
    """`steps` steps of the LSTM optimiser on one optimisee, from step index `start`.

    Returns `(losses, params, carry)`: `losses[i] = f(theta_{start+i})` (the loss seen at step
    `start + i`, before its update) and the state after the last update.
    """

    def step(state, t):
        params, carry = state
        loss, grads = jax.value_and_grad(family.loss)(params, task, jax.random.fold_in(key, t))
        if not second_order:
            grads = jax.lax.stop_gradient(grads)
        updates, carry = propose_updates(net, lstm_params, grads, carry)
        return (optax.apply_updates(params, updates), carry), loss

    (params, carry), losses = jax.lax.scan(step, (params, carry), start + jnp.arange(steps))
    return losses, params, carry


def unroll_loss(lstm_params: LSTMParams, net: LSTMOptimizer, family: TaskFamily, task: Any,
                params: Params, carry: Carry, key: Array, start: Array | int, steps: int,
                second_order: bool = False) -> tuple[Array, tuple[Params, Carry, Array]]:
    """Meta-loss of one truncated unroll of one optimisee: `sum_{t=1..T} f(theta_t)`.

    Returns `(meta_loss, (params, carry, final_loss))`; the state handed to the next unroll is
    `stop_gradient`-ed, so no meta-gradient crosses an unroll boundary.
    """
    losses, params, carry = unroll(net, lstm_params, family, task, params, carry, key, start,
                                   steps, second_order)
    final = family.loss(params, task, jax.random.fold_in(key, start + steps))
    meta_loss = losses[1:].sum() + final
    state = jax.lax.stop_gradient((params, carry))
    return meta_loss, (*state, jax.lax.stop_gradient(final))


@struct.dataclass
class MetaState:
    step: Array
    lstm_params: LSTMParams
    opt_state: optax.OptState


def init_meta_state(net: LSTMOptimizer, meta_optimizer: optax.GradientTransformation,
                    key: Array) -> MetaState:
    lstm_params = init_lstm_optimizer(net, key)
    return MetaState(jnp.zeros((), jnp.int32), lstm_params, meta_optimizer.init(lstm_params))


def sample_optimizees(family: TaskFamily, data: Any, key: Array, n: int):
    """`n` problems and their starting points (leading axis `n`)."""
    k_task, k_init = jax.random.split(key)
    tasks = jax.vmap(family.sample, in_axes=(0, None))(jax.random.split(k_task, n), data)
    params = jax.vmap(family.init)(jax.random.split(k_init, n), tasks)
    return tasks, params


def make_meta_step(net: LSTMOptimizer, family: TaskFamily,
                   meta_optimizer: optax.GradientTransformation, *, optimizees: int, unroll: int,
                   horizon: int, seed: int, second_order: bool = False):
    """The jitted `step(state, data) -> (state, metrics)`: one run of `horizon` steps on
    `optimizees` fresh problems, with `horizon // unroll` meta-updates."""
    if horizon % unroll:
        raise ValueError(f"horizon={horizon} is not a multiple of unroll={unroll}")
    base_key = jax.random.PRNGKey(seed)

    def batch_loss(lstm_params, tasks, params, carry, keys, start):
        loss_fn = jax.vmap(unroll_loss, in_axes=(None, None, None, 0, 0, 0, 0, None, None, None))
        losses, aux = loss_fn(lstm_params, net, family, tasks, params, carry, keys, start, unroll,
                              second_order)
        return losses.mean(), aux

    def step(state: MetaState, data: Any):
        key = jax.random.fold_in(base_key, state.step)
        k_problems, k_batches = jax.random.split(key)
        tasks, params = sample_optimizees(family, data, k_problems, optimizees)
        n = num_coordinates(jax.tree.map(lambda x: x[0], params))
        carry = jax.tree.map(lambda x: jnp.broadcast_to(x, (optimizees, *x.shape)),
                             net.initial_carry(n))
        keys = jax.random.split(k_batches, optimizees)

        def meta_update(inner, start):
            lstm_params, opt_state, params, carry = inner
            (loss, (params, carry, final)), grads = jax.value_and_grad(batch_loss, has_aux=True)(
                lstm_params, tasks, params, carry, keys, start)
            updates, opt_state = meta_optimizer.update(grads, opt_state, lstm_params)
            lstm_params = optax.apply_updates(lstm_params, updates)
            return (lstm_params, opt_state, params, carry), (loss, final.mean())

        starts = jnp.arange(0, horizon, unroll)
        (lstm_params, opt_state, _, _), (losses, finals) = jax.lax.scan(
            meta_update, (state.lstm_params, state.opt_state, params, carry), starts)
        metrics = {"loss": losses.mean() / unroll, "final_loss": finals[-1]}
        return MetaState(state.step + 1, lstm_params, opt_state), metrics

    return jax.jit(step, donate_argnums=0)


# ---------------------------------------------------------------------------------------------
# Optimisation curves with any optax optimiser


def optimizee_curves(optimizer: optax.GradientTransformation, family: TaskFamily, tasks: Any,
                     params: Params, keys: Array, horizon: int) -> Array:
    """`[optimisees, horizon + 1]` reported losses `eval_loss(theta_t)`, t = 0..horizon, of an optax
    optimiser on a batch of problems (each run in a plain optax loop)."""

    def one(task, params, key):
        def step(state, t):
            params, opt_state = state
            grads = jax.grad(family.loss)(params, task, jax.random.fold_in(key, t))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), family.eval_loss(params, task)

        _, losses = jax.lax.scan(step, (params, optimizer.init(params)), jnp.arange(horizon))
        return jnp.concatenate([family.eval_loss(params, task)[None], losses])

    return jax.vmap(one)(tasks, params, keys)


def _finite(x: Array) -> Array:
    return jnp.where(jnp.isfinite(x), x, jnp.inf)


def baseline_curves(name: str, family: TaskFamily, tasks: Any, params: Params, keys: Array,
                    horizon: int, lrs=LR_GRID) -> Array:
    """`[len(lrs), optimisees, horizon + 1]` curves of baseline `name` at each learning rate."""
    return jnp.stack([_baseline_curves(jnp.float32(lr), tasks, params, keys, name=name,
                                       family=family, horizon=horizon) for lr in lrs])


@functools.partial(jax.jit, static_argnames=("name", "family", "horizon"))
def _baseline_curves(lr, tasks, params, keys, *, name, family, horizon):
    return optimizee_curves(BASELINES[name](lr), family, tasks, params, keys, horizon)


def tune_baselines(family: TaskFamily, data: Any, key: Array, optimizees: int, horizon: int,
                   lrs=LR_GRID) -> dict[str, float]:
    """Each baseline's learning rate with the lowest mean final loss on training problems."""
    tasks, params = sample_optimizees(family, data, key, optimizees)
    keys = jax.random.split(jax.random.fold_in(key, 1), optimizees)
    best = {}
    for name in BASELINES:
        final = _finite(baseline_curves(name, family, tasks, params, keys, horizon, lrs)[:, :, -1])
        best[name] = float(lrs[int(jnp.argmin(final.mean(axis=1)))])
    return best


def compare_optimizers(net: LSTMOptimizer, lstm_params: LSTMParams, family: TaskFamily,
                       train_data: Any, test_data: Any, *, horizon: int, tune_optimizees: int,
                       eval_optimizees: int, seed: int, untrained_params: LSTMParams | None = None,
                       lrs=LR_GRID) -> dict:
    """Learned optimiser vs the four tuned baselines on held-out problems: final losses and mean
    curves. Learning rates are tuned on `tune_optimizees` problems from `train_data`."""
    key = jax.random.PRNGKey(seed)
    k_tune, k_eval = jax.random.split(key)
    best_lrs = tune_baselines(family, train_data, k_tune, tune_optimizees, horizon, lrs)
    tasks, params = sample_optimizees(family, test_data, k_eval, eval_optimizees)
    keys = jax.random.split(jax.random.fold_in(k_eval, 1), eval_optimizees)

    def stats(curves: Array) -> dict:
        final = np.asarray(curves[:, -1], dtype=np.float64)
        finite = np.isfinite(final)
        n = int(finite.sum())
        ci = 1.96 * final[finite].std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
        return {"final_loss": float(final.mean()), "final_loss_ci95": float(ci),
                "final_loss_median": float(np.median(final)), "diverged": int((~finite).sum()),
                "curve": [float(x) for x in np.asarray(curves).mean(axis=0)]}

    learned = jax.jit(lambda p, tasks, params, keys: optimizee_curves(
        learned_optimizer(p, net), family, tasks, params, keys, horizon))
    out = {"learned": stats(learned(lstm_params, tasks, params, keys)), "baselines": []}
    if untrained_params is not None:
        out["untrained"] = stats(learned(untrained_params, tasks, params, keys))
    for name, lr in best_lrs.items():
        curves = baseline_curves(name, family, tasks, params, keys, horizon, (lr,))[0]
        out["baselines"].append({"name": name, "learning_rate": lr, **stats(curves)})
    return out


__all__ = ["BASELINES", "LR_GRID", "MLP_VARIANTS", "MetaState", "compare_optimizers",
           "init_meta_state", "make_meta_step", "optimizee_curves",
           "sample_optimizees", "tune_baselines", "unroll",
           "unroll_loss"]
