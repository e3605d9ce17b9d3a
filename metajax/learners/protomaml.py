"""ProtoMAML (Triantafillou et al. 2020, "Meta-Dataset"): MAML whose output layer starts, in every
task, from the support set's class prototypes.

With prototypes `c_k` (mean embeddings of class k's support examples), the linear layer
`w_k = 2 c_k`, `b_k = -||c_k||^2` gives logits `2 c_k.z - ||c_k||^2 = -||z - c_k||^2 + ||z||^2`: a
Prototypical Network's logits up to a per-example constant, so before any inner step the
predictions are ProtoNets'. The inner loop then adapts the embedding and that layer by SGD on the
support loss, as MAML does. The layer is rebuilt from each task's support set, so the learner has no
fixed number of ways and its meta-parameters are the embedding's alone.

The meta-gradient reaches the embedding along two paths: through the inner loop (second order, or
dropped with `first_order=True`) and through the prototypes the layer starts from. The first-order
variant keeps the prototype path, as the paper's fo-Proto-MAML does.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.learners.classification import cross_entropy
from metajax.learners.maml import inner_loop_with_state
from metajax.learners.protonet import as_network, prototypes
from metajax.nets.network import merge_variables, split_variables
from metajax.types import Array, Learner, PRNGKey, Task, Variables, without_state


def prototype_head(embeddings: Array, labels: Array, num_classes: int) -> dict[str, Array]:
    """The linear layer `{"kernel": [D, N], "bias": [N]}` whose logits are the negative squared
    distances to the class prototypes plus `||z||^2`: `w_k = 2 c_k`, `b_k = -||c_k||^2`."""
    c = prototypes(embeddings, labels, num_classes)
    return {"kernel": 2.0 * c.T, "bias": -jnp.sum(c * c, axis=-1)}


def _linear(head: dict[str, Array], features: Array) -> Array:
    return features @ head["kernel"] + head["bias"]


def protomaml(embedding: nn.Module, inner_lr: float = 0.4, steps: int = 1, *,
              first_order: bool = False, remat: bool = False,
              running_average: bool = False) -> Learner:
    """ProtoMAML over an embedding network (for example `Conv4()`, which flattens its features).

    Args:
      embedding: Flax module mapping `[B, ...]` inputs to `[B, D]` features, with or without
        Flax's `train` argument, batch norm and dropout.
      inner_lr: inner SGD learning rate, for the embedding and the prototype-initialised layer.
      steps: inner steps (0: ProtoNets' predictions, up to a per-query constant in the logits).
      first_order: drop the second derivatives of the inner loop (the gradient through the
        prototypes is kept).
      remat: `jax.checkpoint` each inner step.
      running_average: score the query set with `train=False` (batch norm's running averages)
        instead of the query set's own batch statistics.

    Returns:
      A `Learner` for classification episodes of any number of ways (`task.num_classes`).
      `adapt(variables, task, key)` returns the embedding's adapted variables with the adapted
      layer under `params["head"]`: `{"params": {"embedding": ..., "head": {"kernel", "bias"}},
      <state collections>}`.
    """
    net = as_network(embedding)

    def init(key: PRNGKey, task: Task) -> Variables:
        return net.init(key, task.support_x)

    def _keys(key: PRNGKey | None):
        return (None, None, None) if key is None else tuple(jax.random.split(key, 3))

    def adapt_with_state(variables: Variables, task: Task, key: PRNGKey | None):
        """(adapted embedding params and head, state) after the inner loop."""
        if task.num_classes < 2:
            raise ValueError(f"protomaml classifies N-way episodes; got num_classes="
                             f"{task.num_classes} (a regression task?)")
        k_proto, k_inner, _ = _keys(key)
        params, state = split_variables(variables)
        # The layer's starting point; the running averages are updated by the inner steps only.
        features, _ = net.apply(variables, task.support_x, key=k_proto, train=True)
        head = prototype_head(features, task.support_y, task.num_classes)

        def support_loss(p, s, k):
            out, s = net.apply(merge_variables(p["embedding"], s), task.support_x, key=k,
                               train=True)
            return cross_entropy(_linear(p["head"], out), task.support_y)[0], s

        return inner_loop_with_state(support_loss, {"embedding": params, "head": head}, state,
                                     inner_lr, steps, k_inner, first_order=first_order,
                                     remat=remat)

    def predict_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        adapted, state = adapt_with_state(variables, task, key)
        features, state = net.apply(merge_variables(adapted["embedding"], state), task.query_x,
                                    key=_keys(key)[2], train=not running_average)
        return _linear(adapted["head"], features), state

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        return predict_and_state(variables, task, key)[0]

    def loss_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        logits, state = predict_and_state(variables, task, key)
        value, metrics = cross_entropy(logits, task.query_y)
        return value, (metrics, state)

    def adapt(variables: Variables, task: Task, key: PRNGKey | None = None) -> Variables:
        adapted, state = adapt_with_state(variables, task, key)
        return merge_variables(adapted, state)

    return Learner(init=init, loss=without_state(loss_and_state), predict=predict, adapt=adapt,
                   loss_and_state=loss_and_state)
