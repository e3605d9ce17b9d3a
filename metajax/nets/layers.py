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

    Written as the elementwise maximum of the four strided sub-grids rather than `reduce_window`:
    the forward result is identical and XLA:CPU differentiates it faster (measured: conv4 fwd+bwd
    on 180 images 0.46 s vs 0.74 s with `flax.linen.max_pool`). Not as reshape + `max` over two
    axes: with jax 0.10.2, `vmap` of a second-order gradient through that reduction differs from
    the per-example result (by 0.65 in float64 on a small MAML test), while this form matches.
    """
    *_, h, w, _ = x.shape
    x = x[..., : 2 * (h // 2), : 2 * (w // 2), :]
    return jnp.maximum(
        jnp.maximum(x[..., 0::2, 0::2, :], x[..., 0::2, 1::2, :]),
        jnp.maximum(x[..., 1::2, 0::2, :], x[..., 1::2, 1::2, :]),
    )
