"""Multi-layer perceptron (MAML's sinusoid regressor is MLP(hidden=(40, 40), num_outputs=1))."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """Dense layers with an activation between them; inputs are flattened after the batch axis."""

    hidden: Sequence[int] = (40, 40)
    num_outputs: int = 1
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = self.activation(nn.Dense(width)(x))
        return nn.Dense(self.num_outputs)(x)
