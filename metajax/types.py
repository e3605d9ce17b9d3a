"""Core types shared by every learner: a few-shot task and a learner's pure functions.

A `Task` is one episode (support set and query set). Classification tasks carry integer labels and
a static `num_classes`; regression tasks (sinusoid) carry real targets and `num_classes=0`. Batched
tasks are the same type with a leading task axis on every array, so `jax.vmap` maps over them.
"""

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
from flax import struct

Array = jax.Array
PRNGKey = jax.Array
Params = Any
"""A pytree of arrays (`chex.ArrayTree`; spelled `Any` so that documentation tools resolve it)."""
Variables = Any
OptState = Any
"""An optax optimiser state (`optax.OptState`)."""
"""A learner's meta-parameters: for a Flax network, its whole variables dict (`params`, trained, and
any other collection such as `batch_stats`, carried as state)."""
Metrics = dict[str, Array]


@struct.dataclass
class Task:
    """One few-shot episode: support set to adapt on, query set to score.

    Attributes:
      support_x: inputs of the support set, `[S, ...]`.
      support_y: labels `[S]` (int) or targets `[S, d]` (float).
      query_x: inputs of the query set, `[Q, ...]`.
      query_y: labels `[Q]` or targets `[Q, d]`.
      num_classes: classes in the task (N of N-way); 0 for regression. Static, not traced.
    """

    support_x: Array
    support_y: Array
    query_x: Array
    query_y: Array
    num_classes: int = struct.field(pytree_node=False, default=0)


class InitFn(Protocol):
    def __call__(self, key: PRNGKey, task: Task) -> Params: ...


class LossFn(Protocol):
    def __call__(self, params: Params, task: Task, key: PRNGKey) -> tuple[Array, Metrics]: ...


class PredictFn(Protocol):
    def __call__(self, params: Params, task: Task, key: PRNGKey) -> Array: ...


class AdaptFn(Protocol):
    def __call__(self, variables: Variables, task: Task, key: PRNGKey) -> Variables: ...


class LossAndStateFn(Protocol):
    def __call__(self, variables: Variables, task: Task,
                 key: PRNGKey) -> tuple[Array, tuple[Metrics, dict]]: ...


class MetaGradFn(Protocol):
    def __call__(self, params: Params, task: Task, key: PRNGKey) -> tuple[Params, Metrics]: ...


class Learner(NamedTuple):
    """A meta-learner as pure functions over a variables pytree (optax style).

    Attributes:
      init: `init(key, task) -> variables`, the meta-parameters: for a Flax network its whole
        variables dict; `params` is trained, every other collection (`batch_stats`) is state.
      loss: `loss(params, task, key) -> (scalar, metrics)`: the outer (query) loss after whatever
        adaptation the learner does on the support set; `metrics` holds at least `loss` and, for
        classification, `accuracy`. The trainer differentiates its mean over a meta-batch.
      predict: `predict(params, task, key) -> outputs` for the query set (logits or regression values).
      meta_grad: optional `meta_grad(params, task, key) -> (pseudo_grad, metrics)` for learners whose
        outer update is not the gradient of `loss` (Reptile). The trainer averages it over the
        meta-batch and hands it to the optax optimiser in place of a gradient.
      init_inner_state: optional `init_inner_state(params) -> state` for a learner whose meta-training
        carries state from one meta-step to the next (Reptile's inner Adam moments, kept across
        tasks as in the authors' code). Then `meta_grad(params, task, key, state) -> (pseudo_grad,
        metrics, state)`; the trainer keeps the state in `TrainState.inner_state`, hands every task
        of a meta-batch the same state and keeps the mean of the states they return.
      adapt: gradient-based learners: `adapt(variables, task, key) -> variables`, the variables
        adapted on the support set (same tree structure), the function `loss` and `predict` use.
      loss_and_state: `loss_and_state(variables, task, key) -> (scalar, (metrics, state))`: `loss`
        and the non-`params` collections the forward passes updated (`{}` when there are none).
        The trainer differentiates it and keeps the mean over tasks of `state`.
    """

    init: InitFn
    loss: LossFn
    predict: PredictFn
    meta_grad: MetaGradFn | None = None
    init_inner_state: Callable[[Params], Any] | None = None
    adapt: AdaptFn | None = None
    loss_and_state: LossAndStateFn | None = None


def without_state(loss_and_state: LossAndStateFn) -> LossFn:
    """`Learner.loss` from `Learner.loss_and_state`: the same scalar and metrics, the updated
    collections dropped."""

    def loss(variables: Variables, task: Task, key: PRNGKey | None = None):
        value, (metrics, _) = loss_and_state(variables, task, key)
        return value, metrics

    return loss


SampleFn = Callable[[PRNGKey, Any], Task]
"""`sample(key, data) -> Task`: draws one task on the device from `data` (arrays in device memory)."""
