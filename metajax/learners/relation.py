"""Relation Networks (Sung et al. 2018): learning to compare.

An embedding module maps images to feature maps; a class's feature map is the sum of its support
examples' maps. Each (class map, query map) pair is concatenated along channels and a learned
relation module scores it with a sigmoid in [0, 1]. The loss is the mean squared error of the
relation scores against the one-hot labels. Batch norm uses the batch's statistics (transductive):
the embedding sees support and query together, the relation module all Q x N pairs together.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.nets import BatchNorm, max_pool_2x2
from metajax.types import Array, Learner, Params, PRNGKey, Task


def _block(x: Array, width: int, padding: str, pool: bool) -> Array:
    x = nn.relu(BatchNorm()(nn.Conv(width, (3, 3), padding=padding)(x)))
    return max_pool_2x2(x) if pool else x


class RelationEmbedding(nn.Module):
    """The paper's embedding: 4 x [3x3 conv, batch norm, ReLU]; the first two convs are unpadded
    and followed by 2x2 max-pooling, the last two are padded and not pooled (as in the authors'
    code). 28x28 inputs give `[B, 5, 5, width]` feature maps."""

    width: int = 64

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if x.ndim != 4:
            raise ValueError(f"RelationEmbedding expects [batch, H, W, C] inputs, got {x.shape}")
        x = _block(x, self.width, "VALID", pool=True)
        x = _block(x, self.width, "VALID", pool=True)
        x = _block(x, self.width, "SAME", pool=False)
        return _block(x, self.width, "SAME", pool=False)


class RelationModule(nn.Module):
    """2 x [3x3 conv (padded), batch norm, ReLU, 2x2 max-pool], dense `hidden` + ReLU, dense 1.

    Input `[P, h, w, 2 * width]` concatenated pairs -> relation logits `[P]` (sigmoid gives the
    score)."""

    width: int = 64
    hidden: int = 8

    @nn.compact
    def __call__(self, pairs: Array) -> Array:
        x = _block(pairs, self.width, "SAME", pool=pairs.shape[1] >= 2)
        x = _block(x, self.width, "SAME", pool=x.shape[1] >= 2)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)[:, 0]


class RelationNet(nn.Module):
    """Embedding and relation module together: `__call__(support_x, support_y, query_x, N)` gives
    relation scores `[Q, N]` in [0, 1]."""

    width: int = 64
    hidden: int = 8

    def setup(self):
        self.embedding = RelationEmbedding(self.width)
        self.relation = RelationModule(self.width, self.hidden)

    def __call__(self, support_x: Array, support_y: Array, query_x: Array,
                 num_classes: int) -> Array:
        n_support, n_query = support_x.shape[0], query_x.shape[0]
        maps = self.embedding(jnp.concatenate([support_x, query_x]))
        support, query = maps[:n_support], maps[n_support:]
        one_hot = jax.nn.one_hot(support_y, num_classes, dtype=maps.dtype)  # [S, N]
        classes = jnp.einsum("sn,shwc->nhwc", one_hot, support)  # sum over each class's shots
        pairs = jnp.concatenate([
            jnp.broadcast_to(classes[None], (n_query, *classes.shape)),
            jnp.broadcast_to(query[:, None], (n_query, num_classes, *query.shape[1:])),
        ], axis=-1)
        logits = self.relation(pairs.reshape((n_query * num_classes, *pairs.shape[2:])))
        return nn.sigmoid(logits.reshape((n_query, num_classes)))


def relation_net(net: RelationNet) -> Learner:
    """Relation Networks over `net` (for example `RelationNet(width=64)`).

    Returns:
      A `Learner`; `predict` gives relation scores `[Q, N]` in [0, 1]; `loss` is their mean squared
      error against the one-hot query labels.
    """

    def init(key: PRNGKey, task: Task) -> Params:
        return net.init(key, task.support_x, task.support_y, task.query_x, task.num_classes)

    def predict(params: Params, task: Task, key: PRNGKey | None = None) -> Array:
        del key
        return net.apply(params, task.support_x, task.support_y, task.query_x, task.num_classes)

    def loss(params: Params, task: Task, key: PRNGKey | None = None):
        scores = predict(params, task, key)
        target = jax.nn.one_hot(task.query_y, task.num_classes, dtype=scores.dtype)
        value = jnp.mean(jnp.square(scores - target))
        accuracy = jnp.mean(jnp.argmax(scores, axis=-1) == task.query_y)
        return value, {"loss": value, "accuracy": accuracy}

    return Learner(init=init, loss=loss, predict=predict)
