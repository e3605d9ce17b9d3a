"""Gradient-based meta-learners: MAML and first-order MAML (Finn et al. 2017), Meta-SGD (Li et al.
2017), ANIL (Raghu et al. 2019) and Reptile (Nichol et al. 2018), plus the "pretrained" regression
baseline of MAML's sinusoid experiment.

Each factory closes over its settings and returns a `Learner` of pure functions (optax style):

    learner = maml(Conv4(num_outputs=5, downsample="stride"), inner_lr=0.4, steps=1)
    loss, metrics = learner.loss(params, task, key)   # query loss after adapting on the support set

The inner loop is a `lax.scan` over `steps` SGD steps on the support loss, so the compiled program
does not grow with the number of steps; `remat=True` wraps one inner step in `jax.checkpoint`, so
the backward pass of the second-order meta-gradient keeps only the parameters of each step and
recomputes the rest (memory no longer grows with activations x steps).

Batch norm: the networks here normalise with the statistics of the batch they are applied to (see
`metajax.nets.BatchNorm`), and the learners apply them to the support set and the query set
separately. So every inner step normalises the support set with its own statistics, and the query
set is normalised with the query set's statistics, never with the support set's or with running
averages; this is what MAML's code does (transductive batch norm, `tests/test_maml.py` checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax.learners.classification import cross_entropy
from metajax.types import Array, Learner, Metrics, Params, PRNGKey, Task

LossName = Literal["xent", "mse"]
Objective = Callable[[Array, Array], tuple[Array, Metrics]]


def mean_squared_error(predictions: Array, targets: Array) -> tuple[Array, Metrics]:
    """Mean squared error of `predictions [Q, d]` against `targets [Q, d]`."""
    loss = jnp.mean(jnp.square(predictions - targets))
    return loss, {"loss": loss}


def objective(name: LossName) -> Objective:
    """The task loss by name: `"xent"` (softmax cross-entropy + accuracy) or `"mse"`."""
    losses = {"xent": cross_entropy, "mse": mean_squared_error}
    if name not in losses:
        raise ValueError(f"loss must be 'xent' or 'mse', got {name!r}")
    return losses[name]


def sgd_step(params: Params, grads: Params, lr: float | Array | Params) -> Params:
    """`params - lr * grads`; `lr` is a scalar or a pytree shaped like `params` (Meta-SGD)."""
    if jax.tree.structure(lr) == jax.tree.structure(params):
        return jax.tree.map(lambda p, a, g: p - a * g, params, lr, grads)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads)


def inner_loop(support_loss: Callable[[Params], Array], params: Params,
               lr: float | Array | Params, steps: int, *, first_order: bool = False,
               remat: bool = False) -> Params:
    """`steps` steps of gradient descent on `support_loss`, as one `lax.scan`.

    Args:
      support_loss: `support_loss(params) -> scalar`.
      params: the starting point (the meta-learned initialisation).
      lr: inner learning rate: a scalar, or a pytree like `params` (per-parameter, Meta-SGD).
      steps: number of inner steps (0 returns `params`).
      first_order: stop the gradient through the inner gradients (first-order MAML): the
        meta-gradient then drops the Hessian terms, d(adapted)/d(params) = I.
      remat: wrap one step in `jax.checkpoint`: the backward pass recomputes each step's
        activations instead of storing them.

    Returns:
      The adapted parameters.
    """

    def step(p: Params, _) -> tuple[Params, None]:
        grads = jax.grad(support_loss)(p)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        return sgd_step(p, grads, lr), None

    if remat:
        step = jax.checkpoint(step)
    adapted, _ = jax.lax.scan(step, params, None, length=steps)
    return adapted


def maml(network: nn.Module, inner_lr: float = 0.4, steps: int = 1, *, first_order: bool = False,
         remat: bool = False, loss: LossName = "xent") -> Learner:
    """MAML (Finn et al. 2017): a meta-learned initialisation, adapted by SGD on the support set.

    The outer loss is the query loss of the adapted parameters; its gradient with respect to the
    initialisation goes through the inner loop (second order) unless `first_order=True` (FOMAML).

    Args:
      network: Flax module `[B, ...] -> [B, outputs]` (for example `Conv4(num_outputs=5)` or
        `MLP((40, 40), 1)`).
      inner_lr: inner SGD learning rate.
      steps: inner steps (use more at test time by building a second learner).
      first_order: first-order MAML.
      remat: `jax.checkpoint` each inner step (less memory, about one more forward pass).
      loss: `"xent"` for N-way classification, `"mse"` for regression.

    Returns:
      A `Learner`; `predict` gives the adapted network's outputs on the query set.

    Example:
      >>> learner = maml(MLP((40, 40), 1), inner_lr=0.01, steps=1, loss="mse")
      >>> params = learner.init(jax.random.PRNGKey(0), task)
      >>> grads = jax.grad(lambda p: learner.loss(p, task, None)[0])(params)
    """
    task_loss = objective(loss)

    def init(key: PRNGKey, task: Task) -> Params:
        return network.init(key, task.support_x)

    def adapt(params: Params, task: Task) -> Params:
        def support_loss(p):
            return task_loss(network.apply(p, task.support_x), task.support_y)[0]

        return inner_loop(support_loss, params, inner_lr, steps, first_order=first_order,
                          remat=remat)

    def predict(params: Params, task: Task, key: PRNGKey | None = None) -> Array:
        del key
        return network.apply(adapt(params, task), task.query_x)

    def loss_fn(params: Params, task: Task, key: PRNGKey | None = None):
        return task_loss(predict(params, task, key), task.query_y)

    return Learner(init=init, loss=loss_fn, predict=predict)


def metasgd(network: nn.Module, inner_lr: float = 0.4, steps: int = 1, *,
            first_order: bool = False, remat: bool = False, loss: LossName = "xent") -> Learner:
    """Meta-SGD (Li et al. 2017): MAML with a meta-learned learning rate per parameter.

    The meta-parameters are `{"init": network params, "lr": same pytree}`; `lr` starts at
    `inner_lr` everywhere and is meta-learned with the initialisation (it may become negative, as
    in the paper). The inner update is `init - lr * grad` elementwise.
    """
    task_loss = objective(loss)

    def init(key: PRNGKey, task: Task) -> Params:
        params = network.init(key, task.support_x)
        return {"init": params, "lr": jax.tree.map(lambda p: jnp.full_like(p, inner_lr), params)}

    def predict(params: Params, task: Task, key: PRNGKey | None = None) -> Array:
        del key

        def support_loss(p):
            return task_loss(network.apply(p, task.support_x), task.support_y)[0]

        adapted = inner_loop(support_loss, params["init"], params["lr"], steps,
                             first_order=first_order, remat=remat)
        return network.apply(adapted, task.query_x)

    def loss_fn(params: Params, task: Task, key: PRNGKey | None = None):
        return task_loss(predict(params, task, key), task.query_y)

    return Learner(init=init, loss=loss_fn, predict=predict)


def anil(network: nn.Module, inner_lr: float = 0.4, steps: int = 1, *, head: str = "Dense_0",
         first_order: bool = False, remat: bool = False, loss: LossName = "xent") -> Learner:
    """ANIL (Raghu et al. 2019): MAML that adapts only the final layer (`head`) in the inner loop.

    The parameters are those of `network` (for example `Conv4(num_outputs=5)`, head `Dense_0`). The
    body is `network.clone(num_outputs=None)` on the same parameters minus the head; its features
    are computed once per task (support and query separately, each with its own batch-norm
    statistics), and only the linear head `features @ kernel + bias` runs inside the inner loop.
    The meta-gradient still reaches the body through the features.
    """
    task_loss = objective(loss)
    body = network.clone(num_outputs=None)

    def init(key: PRNGKey, task: Task) -> Params:
        params = network.init(key, task.support_x)
        if head not in params["params"]:
            raise ValueError(f"anil: the network has no head {head!r}; its layers are "
                             f"{sorted(params['params'])}")
        return params

    def linear(h: Params, features: Array) -> Array:
        return features @ h["kernel"] + h["bias"]

    def predict(params: Params, task: Task, key: PRNGKey | None = None) -> Array:
        del key
        body_params = {"params": {k: v for k, v in params["params"].items() if k != head}}
        support = body.apply(body_params, task.support_x)
        query = body.apply(body_params, task.query_x)

        def support_loss(h):
            return task_loss(linear(h, support), task.support_y)[0]

        adapted = inner_loop(support_loss, params["params"][head], inner_lr, steps,
                             first_order=first_order, remat=remat)
        return linear(adapted, query)

    def loss_fn(params: Params, task: Task, key: PRNGKey | None = None):
        return task_loss(predict(params, task, key), task.query_y)

    return Learner(init=init, loss=loss_fn, predict=predict)


def reptile(network: nn.Module, inner_lr: float = 1e-3, steps: int = 5, *, inner_batch: int = 10,
            loss: LossName = "xent", keep_inner_state: bool = True,
            test_inner_state: optax.OptState | None = None) -> Learner:
    """Reptile (Nichol et al. 2018): move the initialisation towards the task-adapted weights.

    `meta_grad` trains a copy of `params` with `steps` steps of Adam (b1=0, `inner_lr`) on
    mini-batches of `inner_batch` examples drawn without replacement from support + query (one
    shuffled pass, repeated if needed), and returns the pseudo-gradient `params - adapted`. With the
    trainer's outer `optax.sgd(meta_step)` the update is `params + meta_step * mean(adapted -
    params)`, Reptile's batched update.

    `keep_inner_state=True` (the authors' code): Adam's moments and step count carry over from task
    to task and meta-step to meta-step (`init_inner_state`; `meta_grad(params, task, key, state)`
    returns the state after the task), so inner steps are scaled by a long history of squared
    gradients. With a fresh state per task (`False`; `meta_grad(params, task, key)`) Adam's first
    steps are sign steps of size `inner_lr` in every coordinate; on Omniglot 5-way 1-shot that gave
    69.9% validation accuracy after 1000 meta-steps against 76.4% with the state kept.

    `loss`/`predict` (for evaluation) adapt on the whole support set for `steps` Adam steps and
    score the query set. Adam starts from `test_inner_state`, the state meta-training ended with, as
    the authors' evaluation does (it restores the full state, optimiser slots included, after each
    test task); without it, from a fresh state, whose first steps are sign steps. Batch norm uses
    the statistics of each mini-batch and of the query set (the paper's "transductive" setting).
    """
    task_loss = objective(loss)
    optimizer = optax.adam(inner_lr, b1=0.0)

    def init(key: PRNGKey, task: Task) -> Params:
        return network.init(key, task.support_x)

    def train_on(params: Params, x: Array, y: Array, batches: Array,
                 state: optax.OptState | None = None) -> tuple[Params, Metrics, optax.OptState]:
        """Adam steps on `x[batches[i]]` for each row i of `batches [steps, b]`, from `state`
        (default: fresh)."""

        def step(carry, idx):
            p, state = carry
            (_, metrics), grads = jax.value_and_grad(
                lambda q: task_loss(network.apply(q, x[idx]), y[idx]), has_aux=True)(p)
            updates, state = optimizer.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), metrics

        state = optimizer.init(params) if state is None else state
        (adapted, state), metrics = jax.lax.scan(step, (params, state), batches)
        return adapted, jax.tree.map(lambda m: m[-1], metrics), state

    def minibatches(key: PRNGKey, n: int) -> Array:
        batch = min(inner_batch, n)
        order = jax.random.permutation(key, n)
        return order[(jnp.arange(steps)[:, None] * batch + jnp.arange(batch)) % n]

    def task_pass(params: Params, task: Task, key: PRNGKey, state):
        x = jnp.concatenate([task.support_x, task.query_x])
        y = jnp.concatenate([task.support_y, task.query_y])
        adapted, metrics, state = train_on(params, x, y, minibatches(key, x.shape[0]), state)
        return jax.tree.map(jnp.subtract, params, adapted), metrics, state

    def meta_grad(params: Params, task: Task, key: PRNGKey):
        return task_pass(params, task, key, None)[:2]

    def meta_grad_stateful(params: Params, task: Task, key: PRNGKey, state: optax.OptState):
        return task_pass(params, task, key, state)

    def predict(params: Params, task: Task, key: PRNGKey | None = None) -> Array:
        del key
        n = task.support_x.shape[0]
        full = jnp.broadcast_to(jnp.arange(n), (steps, n))
        adapted, _, _ = train_on(params, task.support_x, task.support_y, full, test_inner_state)
        return network.apply(adapted, task.query_x)

    def loss_fn(params: Params, task: Task, key: PRNGKey | None = None):
        return task_loss(predict(params, task, key), task.query_y)

    if keep_inner_state:
        return Learner(init=init, loss=loss_fn, predict=predict, meta_grad=meta_grad_stateful,
                       init_inner_state=optimizer.init)
    return Learner(init=init, loss=loss_fn, predict=predict, meta_grad=meta_grad)


def pretrained(network: nn.Module, loss: LossName = "mse") -> Learner:
    """The "pretrained" baseline of MAML's sinusoid experiment, training side: one network fitted
    to the query points of all tasks by plain regression (no adaptation; the support set is unused).

    At test time it is fine-tuned with the same inner loop as MAML: evaluate its parameters with
    `maml(network, inner_lr, test_steps, loss=loss)` (the registry does this for phase "test").
    """
    task_loss = objective(loss)

    def init(key: PRNGKey, task: Task) -> Params:
        return network.init(key, task.support_x)

    def predict(params: Params, task: Task, key: PRNGKey | None = None) -> Array:
        del key
        return network.apply(params, task.query_x)

    def loss_fn(params: Params, task: Task, key: PRNGKey | None = None):
        return task_loss(predict(params, task, key), task.query_y)

    return Learner(init=init, loss=loss_fn, predict=predict)
