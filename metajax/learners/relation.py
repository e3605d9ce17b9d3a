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
from metajax.nets.network import network
from metajax.types import Array, Learner, PRNGKey, Task, Variables, without_state


def _norm_relu_pool(x: Array, pool: bool) -> Array:
    x = nn.relu(BatchNorm()(x))
    return max_pool_2x2(x) if pool else x


def _block(x: Array, width: int, padding: str, pool: bool) -> Array:
    return _norm_relu_pool(nn.Conv(width, (3, 3), padding=padding)(x), pool)


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


class PairConv(nn.Module):
    """The relation module's first layer: a 3x3 SAME convolution of every (class map, query map)
    pair concatenated along channels, `[N, h, w, C]` and `[Q, h, w, C]` -> `[Q, N, h, w, features]`.

    A convolution is linear in its input, so conv([a, b]) = conv(a, K[:C]) + conv(b, K[C:]): this
    convolves the N class maps and the Q query maps once each and adds them, N + Q convolutions
    instead of Q x N (the paper's pairs). At 5-way with 10 queries per class that is 55 instead of
    250, most of the relation module's work. `pairwise=True` forms the pairs as the paper writes it
    (the reference the tests compare against). Parameters are those of `nn.Conv` on the pairs."""

    features: int
    pairwise: bool = False

    @nn.compact
    def __call__(self, classes: Array, query: Array) -> Array:
        channels = classes.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (3, 3, 2 * channels, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))

        def conv(x, k):
            return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        n, q = classes.shape[0], query.shape[0]
        if self.pairwise:
            pairs = jnp.concatenate([jnp.broadcast_to(classes[None], (q, *classes.shape)),
                                     jnp.broadcast_to(query[:, None], (q, n, *query.shape[1:]))],
                                    axis=-1)
            out = conv(pairs.reshape((q * n, *pairs.shape[2:])), kernel)
            return out.reshape((q, n, *out.shape[1:])) + bias
        return (conv(classes, kernel[:, :, :channels])[None]
                + conv(query, kernel[:, :, channels:])[:, None] + bias)


class RelationModule(nn.Module):
    """[3x3 conv of the (class, query) pairs (`PairConv`), batch norm, ReLU, 2x2 max-pool],
    [3x3 conv (padded), batch norm, ReLU, 2x2 max-pool], dense `hidden` + ReLU, dense 1.

    `(classes [N, h, w, width], query [Q, h, w, width])` -> relation logits `[Q, N]` (sigmoid
    gives the score). Batch norm takes its statistics over all Q x N pairs."""

    width: int = 64
    hidden: int = 8
    pairwise: bool = False

    @nn.compact
    def __call__(self, classes: Array, query: Array) -> Array:
        n, q = classes.shape[0], query.shape[0]
        # the convolutions keep the names `nn.Conv` gave them on the pairs (and autonaming would
        # give the second one the first's name, Conv_0)
        x = PairConv(self.width, self.pairwise, name="Conv_0")(classes, query)
        x = x.reshape((q * n, *x.shape[2:]))
        x = _norm_relu_pool(x, pool=x.shape[1] >= 2)
        x = nn.Conv(self.width, (3, 3), padding="SAME", name="Conv_1")(x)
        x = _norm_relu_pool(x, pool=x.shape[1] >= 2)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)[:, 0].reshape((q, n))


class RelationNet(nn.Module):
    """Embedding and relation module together: `__call__(support_x, support_y, query_x, N)` gives
    relation scores `[Q, N]` in [0, 1]."""

    width: int = 64
    hidden: int = 8
    pairwise: bool = False

    def setup(self):
        self.embedding = RelationEmbedding(self.width)
        self.relation = RelationModule(self.width, self.hidden, self.pairwise)

    def __call__(self, support_x: Array, support_y: Array, query_x: Array,
                 num_classes: int) -> Array:
        n_support = support_x.shape[0]
        maps = self.embedding(jnp.concatenate([support_x, query_x]))
        support, query = maps[:n_support], maps[n_support:]
        one_hot = jax.nn.one_hot(support_y, num_classes, dtype=maps.dtype)  # [S, N]
        classes = jnp.einsum("sn,shwc->nhwc", one_hot, support)  # sum over each class's shots
        return nn.sigmoid(self.relation(classes, query))


def relation_net(net: nn.Module, *, running_average: bool = False) -> Learner:
    """Relation Networks over `net` (for example `RelationNet(width=64)`, or any Flax module with
    its call `(support_x, support_y, query_x, num_classes[, train]) -> [Q, N]` scores).

    Other collections are state, the key reaches the module's rng streams, and `train` is
    `not running_average` (`metajax.nets.network`). There is no adaptation step: the network
    scores the query set against the support set directly.

    Returns:
      A `Learner`; `predict` gives relation scores `[Q, N]` in [0, 1]; `loss` is their mean squared
      error against the one-hot query labels.
    """
    wrapped = network(net)

    def init(key: PRNGKey, task: Task) -> Variables:
        return wrapped.init(key, task.support_x, task.support_y, task.query_x, task.num_classes)

    def scores_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        return wrapped.apply(variables, task.support_x, task.support_y, task.query_x,
                             task.num_classes, key=key, train=not running_average)

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        return scores_and_state(variables, task, key)[0]

    def loss_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        scores, state = scores_and_state(variables, task, key)
        target = jax.nn.one_hot(task.query_y, task.num_classes, dtype=scores.dtype)
        value = jnp.mean(jnp.square(scores - target))
        accuracy = jnp.mean(jnp.argmax(scores, axis=-1) == task.query_y)
        return value, ({"loss": value, "accuracy": accuracy}, state)

    loss = without_state(loss_and_state)

    return Learner(init=init, loss=loss, predict=predict, loss_and_state=loss_and_state)
