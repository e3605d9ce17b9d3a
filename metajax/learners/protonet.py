"""Prototypical Networks (Snell et al. 2017).

A class prototype is the mean embedding of its support examples; a query's logits are the negative
squared Euclidean distances to the prototypes; the loss is cross-entropy on the query set. Support and
query are embedded in one batch, so batch norm uses the episode's statistics (transductive).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.learners.classification import cross_entropy
from metajax.types import Array, Learner, Params, PRNGKey, Task


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


def protonet(embedding: nn.Module) -> Learner:
    """Prototypical Networks over an embedding network (for example `Conv4()`).

    Args:
      embedding: Flax module mapping `[B, ...]` inputs to `[B, D]` embeddings.

    Returns:
      A `Learner`; `predict` gives query logits `[Q, N]`.
    """

    def embed(params: Params, task: Task) -> tuple[Array, Array]:
        n_support = task.support_x.shape[0]
        z = embedding.apply(params, jnp.concatenate([task.support_x, task.query_x]))
        return z[:n_support], z[n_support:]

    def init(key: PRNGKey, task: Task) -> Params:
        return embedding.init(key, task.support_x)

    def predict(params: Params, task: Task, key: PRNGKey | None = None) -> Array:
        del key
        support, query = embed(params, task)
        return -squared_distances(query, prototypes(support, task.support_y, task.num_classes))

    def loss(params: Params, task: Task, key: PRNGKey | None = None):
        return cross_entropy(predict(params, task, key), task.query_y)

    return Learner(init=init, loss=loss, predict=predict)
