"""Matching Networks (Vinyals et al. 2016).

A query's prediction is an attention-weighted sum of the support labels: the attention is a softmax
over the similarities between the query's embedding and each support embedding: the cosine with the
query's norm kept (`support_normalized_similarities`, so that the attention can sharpen), or with
`cosine=True` the plain cosine of the paper's formula. The loss is
the negative log-probability of the true label. Full context embeddings (`fce=True`) re-embed the
support set with a bidirectional LSTM, `g(x_i) = fwd_i + bwd_i + g'(x_i)`, and each query with an
attention LSTM over that support set run for `fce_steps` steps, `h_k = LSTM([f'(x), r_{k-1}],
(h_{k-1}, c_{k-1})) + f'(x)`, with `r_{k-1}` the softmax(h_{k-1} . g) read-out of the support.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.nets import Conv4
from metajax.nets.network import accepts_train, network
from metajax.types import Array, Learner, PRNGKey, Task, Variables, without_state

EPS = 1e-8


def cosine_similarities(query: Array, support: Array) -> Array:
    """Cosine similarity of every query `[Q, D]` with every support example `[S, D]` -> `[Q, S]`."""
    q = query / jnp.sqrt(jnp.sum(query * query, axis=-1, keepdims=True) + EPS)
    s = support / jnp.sqrt(jnp.sum(support * support, axis=-1, keepdims=True) + EPS)
    return q @ s.T


def support_normalized_similarities(query: Array, support: Array) -> Array:
    """`query . support_i / |support_i|` -> `[Q, S]`: the cosine with the query's norm left in.

    The norm of the query embedding then acts as a learned inverse temperature of the attention
    softmax, as in the widely used reimplementations of Matching Networks. With a plain cosine the
    logits lie in [-1, 1] (in [0, 1] after conv4's final ReLU), so the attention can never be sharp:
    training stalls far below the paper's accuracy.
    """
    s = support / jnp.sqrt(jnp.sum(support * support, axis=-1, keepdims=True) + EPS)
    return query @ s.T


def label_distribution(similarities: Array, support_y: Array, num_classes: int) -> Array:
    """Attention over the support (softmax of similarities) summed per label -> `[Q, N]` probs."""
    attention = jax.nn.softmax(similarities, axis=-1)
    return attention @ jax.nn.one_hot(support_y, num_classes, dtype=attention.dtype)


class SupportContext(nn.Module):
    """`g`: bidirectional LSTM over the support embeddings, added to them (skip connection)."""

    @nn.compact
    def __call__(self, support: Array) -> Array:
        d = support.shape[-1]
        forward = nn.RNN(nn.OptimizedLSTMCell(d))(support[None])[0]
        backward = nn.RNN(nn.OptimizedLSTMCell(d), reverse=True, keep_order=True)(support[None])[0]
        return support + forward + backward


class QueryContext(nn.Module):
    """`f`: attention LSTM reading the (context-embedded) support set for `steps` steps."""

    steps: int = 5

    @nn.compact
    def __call__(self, query: Array, support: Array) -> Array:
        q, d = query.shape
        cell = nn.OptimizedLSTMCell(d)
        carry = (jnp.zeros((q, d), query.dtype), jnp.zeros((q, d), query.dtype))  # (c, h)
        h = jnp.zeros((q, d), query.dtype)
        for _ in range(self.steps):
            readout = jax.nn.softmax(h @ support.T, axis=-1) @ support
            carry, out = cell(carry, jnp.concatenate([query, readout], axis=-1))
            h = out + query
            carry = (carry[0], h)
        return h


class MatchingNet(nn.Module):
    """Embedding (conv4 by default) and, with `fce`, the full context embeddings.

    `__call__(support_x, query_x) -> (support [S, D], query [Q, D])` embeddings to compare."""

    width: int = 64
    fce: bool = False
    fce_steps: int = 5
    cosine: bool = False  # True: the plain cosine of both embeddings (see `support_normalized_similarities`)
    embedding: nn.Module | None = None  # any Flax module [B, ...] -> [B, D]; default Conv4(width)

    @nn.compact
    def __call__(self, support_x: Array, query_x: Array, train: bool = True) -> tuple[Array, Array]:
        n_support = support_x.shape[0]
        embedding = self.embedding if self.embedding is not None else Conv4(width=self.width)
        extra = {"train": train} if accepts_train(embedding) else {}
        z = embedding(jnp.concatenate([support_x, query_x]), **extra)
        support, query = z[:n_support], z[n_support:]
        if self.fce:
            support = SupportContext()(support)
            query = QueryContext(self.fce_steps)(query, support)
        return support, query


def matching_net(net: MatchingNet, *, running_average: bool = False) -> Learner:
    """Matching Networks over `net` (for example `MatchingNet(fce=True)`, or
    `MatchingNet(embedding=MyNet())` with a user's own embedding network).

    Support and query are embedded in one batch (batch norm: the episode's statistics), or with
    `train=False` when `running_average=True`. Other collections are state, and the key reaches the
    module's rng streams (`metajax.nets.network`).

    Returns:
      A `Learner`; `predict` gives log-probabilities `[Q, N]` of the label distribution; `loss` is
      their negative log-likelihood (cross-entropy) on the query labels; `adapt(variables, task,
      key) -> {"support": [S, D], "query": [Q, D]}` gives the (context) embeddings compared.
    """
    wrapped = network(net)

    def init(key: PRNGKey, task: Task) -> Variables:
        return wrapped.init(key, task.support_x, task.query_x)

    def adapt_with_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        (support, query), state = wrapped.apply(variables, task.support_x, task.query_x, key=key,
                                                train=not running_average)
        return {"support": support, "query": query}, state

    def log_probs(embedded: dict, task: Task) -> Array:
        similarity = cosine_similarities if net.cosine else support_normalized_similarities
        probs = label_distribution(similarity(embedded["query"], embedded["support"]),
                                   task.support_y, task.num_classes)
        return jnp.log(probs + EPS)

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        return log_probs(adapt_with_state(variables, task, key)[0], task)

    def loss_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        embedded, state = adapt_with_state(variables, task, key)
        logp = log_probs(embedded, task)
        value = -jnp.mean(jnp.take_along_axis(logp, task.query_y[:, None], axis=-1))
        accuracy = jnp.mean(jnp.argmax(logp, axis=-1) == task.query_y)
        return value, ({"loss": value, "accuracy": accuracy}, state)

    loss = without_state(loss_and_state)

    return Learner(init=init, loss=loss, predict=predict,
                   adapt=lambda v, t, k=None: adapt_with_state(v, t, k)[0],
                   loss_and_state=loss_and_state)
