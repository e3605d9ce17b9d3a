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

Networks are any Flax modules (`metajax.nets.network`): `init` returns the module's whole
variables dict; the inner loop and the meta-gradient differentiate `params` only, and the other
collections (`batch_stats`, ...) are state. A module with Flax's `train` argument is called with
`train=True` on the support set in every inner step and, unless `running_average=True`, on the query
set. The `key` given to `adapt` / `loss` / `predict` is split into one key per inner step and one for
the query pass, and reaches the module's rng streams (`dropout`, ...).

Batch norm, and what happens to `batch_stats`:
- inner loop: every step normalises the support set with its own batch statistics (training mode);
  the running averages a stock `nn.BatchNorm` keeps are updated by each step and carried to the next;
- query set: normalised with the query set's own statistics (transductive, as in MAML's code;
  metajax's `Conv4` always does this), or with the running averages when the learner is built with
  `running_average=True` (the query pass then runs with `train=False`: no dropout either);
- meta-batch: each task starts from the same `batch_stats`; the trainer keeps the mean over tasks of
  the updated running averages (`Learner.loss_and_state`), never their gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax.learners.classification import cross_entropy
from metajax.nets.network import (
    Network,
    merge_variables,
    network,
    same_dtypes,
    split_variables,
    trainable_part,
)
from metajax.types import Array, Learner, Metrics, OptState, Params, PRNGKey, Task, Variables, without_state

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
    adapted, _ = inner_loop_with_state(lambda p, s, k: (support_loss(p), s), params, {}, lr,
                                       steps, None, first_order=first_order, remat=remat)
    return adapted


def inner_loop_with_state(support_loss: Callable[[Params, dict, PRNGKey | None],
                                                 tuple[Array, dict]],
                          params: Params, state: dict, lr: float | Array | Params, steps: int,
                          key: PRNGKey | None, *, first_order: bool = False,
                          remat: bool = False) -> tuple[Params, dict]:
    """`inner_loop` for networks with state and randomness: `support_loss(params, state, key) ->
    (scalar, new_state)`; step i gets the i-th of `split(key, steps)` (None stays None) and the
    state the previous step returned. Returns `(adapted params, final state)`."""

    def step(carry, k):
        p, s = carry
        grads, new_s = jax.grad(lambda q: support_loss(q, s, k), has_aux=True)(p)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        return (sgd_step(p, grads, lr), same_dtypes(new_s, s)), None

    if remat:
        step = jax.checkpoint(step)
    keys = None if key is None or steps == 0 else jax.random.split(key, steps)
    (adapted, state), _ = jax.lax.scan(step, (params, state), keys, length=steps)
    return adapted, state


def _split_key(key: PRNGKey | None) -> tuple[PRNGKey | None, PRNGKey | None]:
    """(inner-loop key, query key), or (None, None)."""
    if key is None:
        return None, None
    k_inner, k_query = jax.random.split(key)
    return k_inner, k_query


def _network(module: nn.Module | Network) -> Network:
    return module if isinstance(module, Network) else network(module)


def _supervised_learner(net: Network, task_loss: Objective, init, adapt,
                        running_average: bool) -> Learner:
    """`loss`, `predict` and `loss_and_state` of a learner that adapts all of a network's
    variables with `adapt(variables, task, key)` and scores the query set with the result."""

    def predict_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        k_inner, k_query = _split_key(key)
        adapted = adapt(variables, task, k_inner)
        return net.apply(adapted, task.query_x, key=k_query, train=not running_average)

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        return predict_and_state(variables, task, key)[0]

    def loss_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        outputs, state = predict_and_state(variables, task, key)
        value, metrics = task_loss(outputs, task.query_y)
        return value, (metrics, state)

    loss_fn = without_state(loss_and_state)

    def adapt_public(variables: Variables, task: Task, key: PRNGKey | None = None) -> Variables:
        return adapt(variables, task, _split_key(key)[0])

    return Learner(init=init, loss=loss_fn, predict=predict, adapt=adapt_public,
                   loss_and_state=loss_and_state)


def maml(network: nn.Module, inner_lr: float = 0.4, steps: int = 1, *, first_order: bool = False,
         remat: bool = False, loss: LossName = "xent", running_average: bool = False) -> Learner:
    """MAML (Finn et al. 2017): a meta-learned initialisation, adapted by SGD on the support set.

    The outer loss is the query loss of the adapted parameters; its gradient with respect to the
    initialisation goes through the inner loop (second order) unless `first_order=True` (FOMAML).

    Args:
      network: any Flax module `[B, ...] -> [B, outputs]` (`Conv4(num_outputs=5)`, `MLP((40, 40),
        1)`, or a user's own, with or without `train`, batch norm and dropout).
      inner_lr: inner SGD learning rate.
      steps: inner steps (use more at test time by building a second learner).
      first_order: first-order MAML.
      remat: `jax.checkpoint` each inner step (less memory, about one more forward pass).
      loss: `"xent"` for N-way classification, `"mse"` for regression.
      running_average: score the query set with `train=False` (batch norm's running averages, no
        dropout) instead of the query set's own batch statistics (the transductive default).

    Returns:
      A `Learner`: `adapt(variables, task, key)` gives the variables after the inner loop (same
      structure as `init`'s); `predict` the adapted network's outputs on the query set; `loss`
      their loss.

    Example:
      >>> learner = maml(MLP((40, 40), 1), inner_lr=0.01, steps=1, loss="mse")
      >>> variables = learner.init(jax.random.PRNGKey(0), task)
      >>> adapted = learner.adapt(variables, task, jax.random.PRNGKey(1))
      >>> grads = jax.grad(lambda v: learner.loss(v, task, None)[0])(variables)
    """
    net = _network(network)
    task_loss = objective(loss)

    def init(key: PRNGKey, task: Task) -> Variables:
        return net.init(key, task.support_x)

    def adapt(variables: Variables, task: Task, key: PRNGKey | None) -> Variables:
        params, state = split_variables(variables)

        def support_loss(p, s, k):
            out, s = net.apply(merge_variables(p, s), task.support_x, key=k, train=True)
            return task_loss(out, task.support_y)[0], s

        adapted, state = inner_loop_with_state(support_loss, params, state, inner_lr, steps, key,
                                               first_order=first_order, remat=remat)
        return merge_variables(adapted, state)

    return _supervised_learner(net, task_loss, init, adapt, running_average)


def metasgd(network: nn.Module, inner_lr: float = 0.4, steps: int = 1, *,
            first_order: bool = False, remat: bool = False, loss: LossName = "xent",
            running_average: bool = False) -> Learner:
    """Meta-SGD (Li et al. 2017): MAML with a meta-learned learning rate per parameter.

    The variables are the network's, with `params` replaced by `{"init": network params, "lr":
    same pytree}` (runs saved in the earlier `{"init": ..., "lr": ...}` layout are converted when
    restored). `lr` starts at `inner_lr` everywhere and is meta-learned with the initialisation
    (it may become negative, as in the paper). The inner update is `init - lr * grad` elementwise.
    Other collections are handled as in `maml`. `adapt` returns the network's variables (its
    `params` adapted), ready for `network.apply`.
    """
    net = _network(network)
    task_loss = objective(loss)

    def init(key: PRNGKey, task: Task) -> Variables:
        params, state = split_variables(net.init(key, task.support_x))
        lr = jax.tree.map(lambda p: jnp.full_like(p, inner_lr), params)
        return merge_variables({"init": params, "lr": lr}, state)

    def adapt(variables: Variables, task: Task, key: PRNGKey | None) -> Variables:
        meta, state = split_variables(variables)

        def support_loss(p, s, k):
            out, s = net.apply(merge_variables(p, s), task.support_x, key=k, train=True)
            return task_loss(out, task.support_y)[0], s

        adapted, state = inner_loop_with_state(support_loss, meta["init"], state, meta["lr"],
                                               steps, key, first_order=first_order, remat=remat)
        return merge_variables(adapted, state)

    return _supervised_learner(net, task_loss, init, adapt, running_average)


def anil(network: nn.Module, inner_lr: float = 0.4, steps: int = 1, *, head: str = "Dense_0",
         first_order: bool = False, remat: bool = False, loss: LossName = "xent",
         running_average: bool = False) -> Learner:
    """ANIL (Raghu et al. 2019): MAML that adapts only the final layer (`head`, a top-level name in
    `params`) in the inner loop; the meta-gradient still reaches the body.

    For metajax's nets (a `num_outputs` attribute, no `train` argument, no state) the body is
    `network.clone(num_outputs=None)` on the parameters minus the head; its features are computed
    once per task (support and query separately, each with its own batch-norm statistics), and
    only the linear head `features @ kernel + bias` runs inside the inner loop. Any other module
    runs whole in every inner step, with only the head's parameters adapted; state and keys are
    handled as in `maml`.
    """
    net = _network(network)
    task_loss = objective(loss)
    module = net.module
    fast = (getattr(module, "num_outputs", None) is not None and not net.has_train)

    def init(key: PRNGKey, task: Task) -> Variables:
        variables = net.init(key, task.support_x)
        if head not in variables["params"]:
            raise ValueError(f"anil: the network has no head {head!r}; its layers are "
                             f"{sorted(variables['params'])}")
        return variables

    def adapt(variables: Variables, task: Task, key: PRNGKey | None) -> Variables:
        params, state = split_variables(variables)

        def support_loss(h, s, k):
            out, s = net.apply(merge_variables({**params, head: h}, s), task.support_x, key=k,
                               train=True)
            return task_loss(out, task.support_y)[0], s

        adapted, state = inner_loop_with_state(support_loss, params[head], state, inner_lr,
                                               steps, key, first_order=first_order, remat=remat)
        return merge_variables({**params, head: adapted}, state)

    if not fast:
        return _supervised_learner(net, task_loss, init, adapt, running_average)

    body = module.clone(num_outputs=None)

    def linear(h: Params, features: Array) -> Array:
        return features @ h["kernel"] + h["bias"]

    def fast_predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        del key
        body_params = {"params": {k: v for k, v in variables["params"].items() if k != head}}
        support = body.apply(body_params, task.support_x)
        query = body.apply(body_params, task.query_x)

        def support_loss(h):
            return task_loss(linear(h, support), task.support_y)[0]

        adapted = inner_loop(support_loss, variables["params"][head], inner_lr, steps,
                             first_order=first_order, remat=remat)
        return linear(adapted, query)

    def loss_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        value, metrics = task_loss(fast_predict(variables, task, key), task.query_y)
        return value, (metrics, {})

    def loss_fn(variables: Variables, task: Task, key: PRNGKey | None = None):
        return task_loss(fast_predict(variables, task, key), task.query_y)

    def adapt_public(variables: Variables, task: Task, key: PRNGKey | None = None) -> Variables:
        return adapt(variables, task, None)

    return Learner(init=init, loss=loss_fn, predict=fast_predict, adapt=adapt_public,
                   loss_and_state=loss_and_state)


def reptile(network: nn.Module, inner_lr: float = 1e-3, steps: int = 5, *, inner_batch: int = 10,
            loss: LossName = "xent", keep_inner_state: bool = True,
            test_inner_state: OptState | None = None,
            running_average: bool = False) -> Learner:
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
    steps are sign steps of size `inner_lr` in every coordinate.

    `loss`/`predict` (for evaluation) adapt on the whole support set for `steps` Adam steps
    (`adapt`) and score the query set. Adam starts from `test_inner_state`, the state
    meta-training ended with, as the authors' evaluation does (it restores the full state,
    optimiser slots included, after each test task); without it, from a fresh state, whose first
    steps are sign steps. Batch norm uses the statistics of each mini-batch and of the query set
    (the paper's "transductive" setting), or running averages on the query set with
    `running_average=True`. `meta_grad` returns the pseudo-gradient of `params` only (the
    trainer's trainable part); the other collections keep their values through meta-training.
    """
    net = _network(network)
    task_loss = objective(loss)
    optimizer = optax.adam(inner_lr, b1=0.0)

    def init(key: PRNGKey, task: Task) -> Variables:
        return net.init(key, task.support_x)

    def train_on(variables: Variables, x: Array, y: Array, batches: Array, key: PRNGKey | None,
                 opt_state: OptState | None = None):
        """Adam steps on `x[batches[i]]` for each row i of `batches [steps, b]`, from `opt_state`
        (default: fresh). Returns (adapted variables, last step's metrics, Adam state)."""
        trainable, state = trainable_part(variables)

        def step(carry, inputs):
            p, s, opt = carry
            idx, k = inputs

            def batch_loss(q):
                out, s2 = net.apply({**s, **q}, x[idx], key=k, train=True)
                value, metrics = task_loss(out, y[idx])
                return value, (metrics, s2)

            (_, (metrics, new_s)), grads = jax.value_and_grad(batch_loss, has_aux=True)(p)
            s = same_dtypes(new_s, s)
            updates, opt = optimizer.update(grads, opt, p)
            return (optax.apply_updates(p, updates), s, opt), metrics

        opt_state = optimizer.init(trainable) if opt_state is None else opt_state
        keys = None if key is None else jax.random.split(key, batches.shape[0])
        (adapted, state, opt_state), metrics = jax.lax.scan(step, (trainable, state, opt_state),
                                                            (batches, keys))
        return {**state, **adapted}, jax.tree.map(lambda m: m[-1], metrics), opt_state

    def minibatches(key: PRNGKey, n: int) -> Array:
        batch = min(inner_batch, n)
        order = jax.random.permutation(key, n)
        return order[(jnp.arange(steps)[:, None] * batch + jnp.arange(batch)) % n]

    def task_pass(variables: Variables, task: Task, key: PRNGKey, opt_state):
        x = jnp.concatenate([task.support_x, task.query_x])
        y = jnp.concatenate([task.support_y, task.query_y])
        k_order, k_net = jax.random.split(key)
        adapted, metrics, opt_state = train_on(variables, x, y, minibatches(k_order, x.shape[0]),
                                               k_net, opt_state)
        # the pseudo-gradient of `params` only; the trainer carries the other collections
        direction = jax.tree.map(jnp.subtract, trainable_part(variables)[0],
                                 trainable_part(adapted)[0])
        return direction, metrics, opt_state

    def meta_grad(variables: Variables, task: Task, key: PRNGKey):
        return task_pass(variables, task, key, None)[:2]

    def meta_grad_stateful(variables: Variables, task: Task, key: PRNGKey, opt_state):
        return task_pass(variables, task, key, opt_state)

    def adapt(variables: Variables, task: Task, key: PRNGKey | None = None) -> Variables:
        n = task.support_x.shape[0]
        full = jnp.broadcast_to(jnp.arange(n), (steps, n))
        return train_on(variables, task.support_x, task.support_y, full, key,
                        test_inner_state)[0]

    def loss_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        k_inner, k_query = _split_key(key)
        out, state = net.apply(adapt(variables, task, k_inner), task.query_x, key=k_query,
                               train=not running_average)
        value, metrics = task_loss(out, task.query_y)
        return value, (metrics, state)

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        k_inner, k_query = _split_key(key)
        return net.apply(adapt(variables, task, k_inner), task.query_x, key=k_query,
                         train=not running_average)[0]

    loss_fn = without_state(loss_and_state)

    def adapt_public(variables: Variables, task: Task, key: PRNGKey | None = None) -> Variables:
        return adapt(variables, task, _split_key(key)[0])

    common = dict(init=init, loss=loss_fn, predict=predict, adapt=adapt_public,
                  loss_and_state=loss_and_state)
    if keep_inner_state:
        return Learner(**common, meta_grad=meta_grad_stateful,
                       init_inner_state=lambda v: optimizer.init(trainable_part(v)[0]))
    return Learner(**common, meta_grad=meta_grad)


def pretrained(network: nn.Module, loss: LossName = "mse") -> Learner:
    """The "pretrained" baseline of MAML's sinusoid experiment, training side: one network fitted
    to the query points of all tasks by plain regression (no adaptation; the support set is unused).

    At test time it is fine-tuned with the same inner loop as MAML: evaluate its variables with
    `maml(network, inner_lr, test_steps, loss=loss)` (the registry does this for phase "test").
    """
    net = _network(network)
    task_loss = objective(loss)

    def init(key: PRNGKey, task: Task) -> Variables:
        return net.init(key, task.support_x)

    def adapt(variables: Variables, task: Task, key: PRNGKey | None) -> Variables:
        del task, key
        return variables

    return _supervised_learner(net, task_loss, init, adapt, running_average=False)
