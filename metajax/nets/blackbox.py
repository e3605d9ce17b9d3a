"""Black-box few-shot networks (CS330 framing): read the support set's (image, label) pairs with a
network and classify the queries with no inner gradient steps.

Each maps `(support_x [S, ...], support_y [S], query_x [Q, ...]) -> logits [Q, N]`, embedding all
images in one batch with an encoder (conv4 by default, so batch norm sees the episode).
- `LSTMBlackBox`: an LSTM reads the support sequence `[embedding, one-hot label]` (`nn.scan`); each
  query then takes one more step from the final state with a zero label and is classified from it.
- `MeanEmbeddingBlackBox`: order does not matter: the per-class average of the support embeddings,
  flattened beside the query's embedding, goes through an MLP to N logits.
- `SNAIL`: Mishra et al.'s temporal-convolution + causal-attention network over the sequence of the
  support pairs followed by one query (zero label), read at the query's position; one sequence per
  query, all in one batch.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.types import Array


def support_sequence(embeddings: Array, labels: Array, num_classes: int) -> Array:
    """`[S, D]` embeddings and `[S]` labels -> `[S, D + N]` inputs `[embedding, one-hot label]`."""
    return jnp.concatenate([embeddings, jax.nn.one_hot(labels, num_classes)], axis=-1)


def query_inputs(embeddings: Array, num_classes: int) -> Array:
    """`[Q, D]` -> `[Q, D + N]`: query embeddings with a zero label (the label is unknown)."""
    return jnp.concatenate([embeddings, jnp.zeros((embeddings.shape[0], num_classes))], axis=-1)


def _embed(encoder: nn.Module, support_x: Array, query_x: Array) -> tuple[Array, Array]:
    z = encoder(jnp.concatenate([support_x, query_x]))
    return z[: support_x.shape[0]], z[support_x.shape[0]:]


class LSTMBlackBox(nn.Module):
    """An LSTM over the support sequence, then one step per query from its final state."""

    encoder: nn.Module
    num_classes: int
    hidden: int = 256

    @nn.compact
    def __call__(self, support_x: Array, support_y: Array, query_x: Array) -> Array:
        zs, zq = _embed(self.encoder, support_x, query_x)
        lstm = nn.scan(nn.OptimizedLSTMCell, variable_broadcast="params",
                       split_rngs={"params": False}, in_axes=0, out_axes=0)(self.hidden, name="lstm")
        carry = (jnp.zeros((self.hidden,)), jnp.zeros((self.hidden,)))
        carry, _ = lstm(carry, support_sequence(zs, support_y, self.num_classes))
        n_query = zq.shape[0]
        carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (n_query, self.hidden)), carry)
        _, h = lstm(carry, query_inputs(zq, self.num_classes)[None])  # one step, queries batched
        return nn.Dense(self.num_classes, name="output")(h[0])


class MeanEmbeddingBlackBox(nn.Module):
    """An MLP on `[query embedding, per-class mean support embeddings (flattened)]`."""

    encoder: nn.Module
    num_classes: int
    hidden: int = 256

    @nn.compact
    def __call__(self, support_x: Array, support_y: Array, query_x: Array) -> Array:
        zs, zq = _embed(self.encoder, support_x, query_x)
        one_hot = jax.nn.one_hot(support_y, self.num_classes)
        means = (one_hot.T @ zs) / jnp.maximum(one_hot.sum(axis=0), 1.0)[:, None]  # [N, D]
        context = jnp.broadcast_to(means.reshape(-1), (zq.shape[0], means.size))
        h = jnp.concatenate([zq, context], axis=-1)
        h = nn.relu(nn.Dense(self.hidden)(h))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return nn.Dense(self.num_classes, name="output")(h)


class DenseBlock(nn.Module):
    """Causal dilated convolution (kernel 2) with a gated activation, concatenated to its input."""

    dilation: int
    filters: int

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [B, T, C]
        def causal_conv(name):
            return nn.Conv(self.filters, (2,), kernel_dilation=(self.dilation,),
                           padding=[(self.dilation, 0)], name=name)(x)

        gated = jnp.tanh(causal_conv("filter")) * jax.nn.sigmoid(causal_conv("gate"))
        return jnp.concatenate([x, gated], axis=-1)


class TCBlock(nn.Module):
    """Dense blocks of dilations 1, 2, 4, ... up to the sequence length."""

    seq_len: int
    filters: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i in range(max(1, math.ceil(math.log2(self.seq_len)))):
            x = DenseBlock(2 ** i, self.filters)(x)
        return x


class CausalAttention(nn.Module):
    """Single-head causal soft attention; the read values are concatenated to the input."""

    key_size: int
    value_size: int

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [B, T, C]
        q = nn.Dense(self.key_size, name="query")(x)
        k = nn.Dense(self.key_size, name="key")(x)
        v = nn.Dense(self.value_size, name="value")(x)
        logits = jnp.einsum("btd,bsd->bts", q, k) / math.sqrt(self.key_size)
        t = x.shape[-2]
        causal = jnp.tril(jnp.ones((t, t), bool))
        weights = jax.nn.softmax(jnp.where(causal, logits, -1e30), axis=-1)
        return jnp.concatenate([x, jnp.einsum("bts,bsd->btd", weights, v)], axis=-1)


class SNAIL(nn.Module):
    """SNAIL for few-shot classification (Mishra et al. 2018, Omniglot architecture): attention(64,
    32), TC(128), attention(256, 128), TC(128), attention(512, 256), then a dense layer to N logits.
    `scale` divides every width (for tiny test networks)."""

    encoder: nn.Module
    num_classes: int
    scale: int = 1

    @nn.compact
    def __call__(self, support_x: Array, support_y: Array, query_x: Array) -> Array:
        zs, zq = _embed(self.encoder, support_x, query_x)
        support = support_sequence(zs, support_y, self.num_classes)  # [S, D + N]
        queries = query_inputs(zq, self.num_classes)  # [Q, D + N]
        n_query = queries.shape[0]
        x = jnp.concatenate([jnp.broadcast_to(support, (n_query, *support.shape)),
                             queries[:, None]], axis=1)  # [Q, S + 1, D + N]
        seq_len, s = x.shape[1], self.scale
        x = CausalAttention(64 // s, 32 // s)(x)
        x = TCBlock(seq_len, 128 // s)(x)
        x = CausalAttention(256 // s, 128 // s)(x)
        x = TCBlock(seq_len, 128 // s)(x)
        x = CausalAttention(512 // s, 256 // s)(x)
        return nn.Dense(self.num_classes, name="output")(x[:, -1])
