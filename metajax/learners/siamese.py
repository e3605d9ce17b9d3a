"""Siamese networks for one-shot image recognition (Koch, Zemel and Salakhutdinov 2015).

Twin networks share weights and embed two images into sigmoid features `h1`, `h2`; a pair's
score is `sigmoid(w . |h1 - h2| + b)` (the weighted L1 distance), trained with binary cross-entropy
on balanced same/different pairs (`metajax.data.pairs`). A one-shot episode is classified by
scoring each query against every support example and picking the class of the best-scoring one
(for K > 1 shots, a class scores its best support example).

The learner's `loss` takes either kind of task: a `Pairs` batch (training: verification loss and
pair accuracy) or an N-way K-shot `Task` (evaluation: classification accuracy, with the
verification loss over all query/support pairs). The registry gives the trainer a pair sampler for
training, so the generic trainer runs it unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax.data.pairs import Pairs
from metajax.nets import BatchNorm, Conv4, max_pool_2x2
from metajax.nets.network import Network, accepts_train, network
from metajax.types import Array, Learner, Metrics, Params, PRNGKey, Task, Variables, without_state


class KochEmbedding(nn.Module):
    """The convolutional twin of Koch et al. for 105x105 images.

    Conv 64@10x10, max-pool, conv 128@7x7, max-pool, conv 128@4x4, max-pool, conv 256@4x4 (all
    VALID, ReLU), flatten, dense 4096 with sigmoid. `width` scales the filters (64 in the paper) and
    `features` the last layer. `batch_norm` adds (transductive) batch norm after each conv, which
    the paper did not use; it makes Adam training from scratch far less sensitive.
    """

    width: int = 64
    features: int = 4096
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if x.ndim != 4 or x.shape[1] < 64:
            raise ValueError(f"KochEmbedding expects [batch, H, W, C] with H >= 64 (the paper uses "
                             f"105), got {x.shape}; use SmallSiameseEmbedding for 28x28 images")
        for i, (mult, kernel) in enumerate(((1, 10), (2, 7), (2, 4), (4, 4))):
            x = nn.Conv(self.width * mult, (kernel, kernel), padding="VALID")(x)
            if self.batch_norm:
                x = BatchNorm()(x)
            x = nn.relu(x)
            if i < 3:
                x = max_pool_2x2(x)
        x = x.reshape((x.shape[0], -1))
        return nn.sigmoid(nn.Dense(self.features)(x))


class SmallSiameseEmbedding(nn.Module):
    """A twin for small images (28x28): conv4 (batch norm, max-pool) then a dense sigmoid layer."""

    width: int = 64
    features: int = 256

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = Conv4(width=self.width)(x)
        return nn.sigmoid(nn.Dense(self.features)(x))


class SiameseNet(nn.Module):
    """Twin embedding plus the weighted-L1 pair head.

    `embed(x) -> [B, D]`; `score(h1, h2) -> logits` broadcast over leading axes;
    `__call__(x1, x2)` embeds both in one batch (so batch norm sees both) and scores the pairs.
    """

    embedding: nn.Module

    def setup(self):
        self.head = nn.Dense(1)

    def embed(self, x: Array, train: bool = True) -> Array:
        extra = {"train": train} if accepts_train(self.embedding) else {}
        return self.embedding(x, **extra)

    def score(self, h1: Array, h2: Array) -> Array:
        return self.head(jnp.abs(h1 - h2))[..., 0]

    def __call__(self, x1: Array, x2: Array, train: bool = True) -> Array:
        h = self.embed(jnp.concatenate([x1, x2]), train)
        return self.score(h[: x1.shape[0]], h[x1.shape[0]:])


def pair_logits(net: SiameseNet, params: Params, task: Task) -> Array:
    """Logits `[Q, S]` of every (query, support example) pair of an episode (metajax's own
    embeddings: no state, no randomness; `siamese` handles the general case)."""
    return _pair_logits(network(net), params, task, None, True)[0]


def _pair_logits(wrapped: Network, variables: Variables, task: Task, key: PRNGKey | None,
                 train: bool) -> tuple[Array, dict]:
    n_support = task.support_x.shape[0]
    h, state = wrapped.apply(variables, jnp.concatenate([task.support_x, task.query_x]), key=key,
                             train=train, method=SiameseNet.embed)
    hs, hq = h[:n_support], h[n_support:]
    logits, _ = wrapped.apply(variables, hq[:, None, :], hs[None, :, :], train=False,
                              method=SiameseNet.score)
    return logits, state


def class_scores(logits: Array, support_y: Array, num_classes: int) -> Array:
    """Per-class score `[Q, N]`: the best pair logit over the class's support examples."""
    mask = jax.nn.one_hot(support_y, num_classes, dtype=bool)  # [S, N]
    return jnp.where(mask[None], logits[:, :, None], -jnp.inf).max(axis=1)


def verification_loss(logits: Array, same: Array) -> tuple[Array, Metrics]:
    """Binary cross-entropy of pair logits and the accuracy of thresholding them at 0.5."""
    loss = optax.sigmoid_binary_cross_entropy(logits, same).mean()
    accuracy = jnp.mean((logits > 0) == (same > 0.5))
    return loss, {"loss": loss, "accuracy": accuracy}


def siamese(net: SiameseNet, *, running_average: bool = False) -> Learner:
    """Siamese network learner over `net` (for example `SiameseNet(SmallSiameseEmbedding())`, or
    `SiameseNet(MyEmbedding())` with a user's own Flax embedding, `train` argument optional).

    Both inputs of a pair batch (or support and query of an episode) are embedded in one batch, with
    `train=not running_average`; other collections are state and the key reaches the embedding's
    rng streams (`metajax.nets.network`).

    Returns:
      A `Learner`. On a `Pairs` batch, `loss` is the verification loss and `predict` the pair
      logits `[P]`; on an N-way `Task`, `predict` gives class scores `[Q, N]` and `loss` the
      verification loss over all query/support pairs with the one-shot classification accuracy.
      `adapt(variables, task, key) -> {"pair_logits": [Q, S]}` on a `Task`.
    """
    wrapped = network(net)
    train = not running_average

    def init(key: PRNGKey, task: Task | Pairs) -> Variables:
        if isinstance(task, Pairs):
            return wrapped.init(key, task.x1, task.x2)
        return wrapped.init(key, task.support_x, task.support_x)

    def predict(variables: Variables, task: Task | Pairs, key: PRNGKey | None = None) -> Array:
        if isinstance(task, Pairs):
            return wrapped.apply(variables, task.x1, task.x2, key=key, train=train)[0]
        logits, _ = _pair_logits(wrapped, variables, task, key, train)
        return class_scores(logits, task.support_y, task.num_classes)

    def loss_and_state(variables: Variables, task: Task | Pairs, key: PRNGKey | None = None):
        if isinstance(task, Pairs):
            logits, state = wrapped.apply(variables, task.x1, task.x2, key=key, train=train)
            value, metrics = verification_loss(logits, task.same)
            return value, (metrics, state)
        logits, state = _pair_logits(wrapped, variables, task, key, train)
        same = (task.query_y[:, None] == task.support_y[None, :]).astype(jnp.float32)
        value, _ = verification_loss(logits, same)
        scores = class_scores(logits, task.support_y, task.num_classes)
        accuracy = jnp.mean(jnp.argmax(scores, axis=-1) == task.query_y)
        return value, ({"loss": value, "accuracy": accuracy}, state)

    loss = without_state(loss_and_state)

    def adapt(variables: Variables, task: Task, key: PRNGKey | None = None) -> dict:
        return {"pair_logits": _pair_logits(wrapped, variables, task, key, train)[0]}

    return Learner(init=init, loss=loss, predict=predict, adapt=adapt,
                   loss_and_state=loss_and_state)
