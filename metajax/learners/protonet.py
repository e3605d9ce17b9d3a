"""Prototypical Networks (Snell et al. 2017).

A class prototype is the mean embedding of its support examples; a query's logits are the negative
squared Euclidean distances to the prototypes; the loss is cross-entropy on the query set. Support and
query are embedded in one batch, so batch norm uses the episode's statistics (transductive), unless the
learner is built with `running_average=True` (the episode is then embedded with `train=False`).
The embedding network is any Flax module (`metajax.nets.network`): its other collections are state,
and the key reaches its rng streams (dropout).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.learners.classification import cross_entropy
from metajax.nets.network import Network, network
from metajax.types import Array, Learner, PRNGKey, Task, Variables, without_state


def prototypes(embeddings: Array, labels: Array, num_classes: int) -> Array:
    """Mean embedding per class: `[S, D]`, `[S]` -> `[num_classes, D]`."""
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=embeddings.dtype)
    counts = one_hot.sum(axis=0)[:, None]
    return (one_hot.T @ embeddings) / jnp.maximum(counts, 1.0)


def squared_distances(a: Array, b: Array) -> Array:
    """Pairwise squared Euclidean distances `[A, D]`, `[B, D]` -> `[A, B]`."""
    return (
        jnp.sum(a * a, axis=-1)[:, None] - 2.0 * a @ b.T + jnp.sum(b * b, axis=-1)[None, :]
    )


def as_network(module: nn.Module | Network) -> Network:
    """`module` wrapped as a `Network` (a `Network` is returned as it is)."""
    return module if isinstance(module, Network) else network(module)


def protonet(embedding: nn.Module, *, running_average: bool = False) -> Learner:
    """Prototypical Networks over an embedding network (for example `Conv4()`).

    Args:
      embedding: Flax module mapping `[B, ...]` inputs to `[B, D]` embeddings, with or without
        Flax's `train` argument, batch norm and dropout.
      running_average: embed with `train=False` (batch norm's running averages, no dropout)
        instead of the episode's batch statistics.

    Returns:
      A `Learner`; `predict` gives query logits `[Q, N]`. Its adaptation is `learner.adapt`:
      `adapt(variables, task, key) -> {"prototypes": [N, D], "query": [Q, D]}` (the class
      prototypes and the query embeddings the logits are computed from).
    """
    net = as_network(embedding)

    def embed(variables: Variables, task: Task, key: PRNGKey | None):
        n_support = task.support_x.shape[0]
        z, state = net.apply(variables, jnp.concatenate([task.support_x, task.query_x]), key=key,
                             train=not running_average)
        return z[:n_support], z[n_support:], state

    def init(key: PRNGKey, task: Task) -> Variables:
        return net.init(key, task.support_x)

    def adapt_with_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        support, query, state = embed(variables, task, key)
        return {"prototypes": prototypes(support, task.support_y, task.num_classes),
                "query": query}, state

    def adapt(variables: Variables, task: Task, key: PRNGKey | None = None) -> dict:
        return adapt_with_state(variables, task, key)[0]

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        fitted = adapt(variables, task, key)
        return -squared_distances(fitted["query"], fitted["prototypes"])

    def loss_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        fitted, state = adapt_with_state(variables, task, key)
        value, metrics = cross_entropy(-squared_distances(fitted["query"], fitted["prototypes"]),
                                       task.query_y)
        return value, (metrics, state)

    loss = without_state(loss_and_state)

    return Learner(init=init, loss=loss, predict=predict, adapt=adapt,
                   loss_and_state=loss_and_state)
