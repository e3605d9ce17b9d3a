"""A small residual network for few-shot images: DEML's concept generator."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.nets.layers import BatchNorm


class ResidualBlock(nn.Module):
    """Two 3x3 conv + batch norm layers with an identity (or 1x1 conv) shortcut, then ReLU."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.Conv(self.features, (3, 3), strides=self.stride, padding="SAME")(x)
        y = nn.relu(BatchNorm()(y))
        y = nn.Conv(self.features, (3, 3), padding="SAME")(y)
        y = BatchNorm()(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = BatchNorm()(nn.Conv(self.features, (1, 1), strides=self.stride)(x))
        return nn.relu(x + y)


class ConceptResNet(nn.Module):
    """Residual concept generator sized for small images (28x28 Omniglot, 84x84 miniImageNet).

    A 3x3 conv stem, then `stages` stages of `blocks` residual blocks; each stage halves the
    resolution (stride-2 first block) and doubles the width (`width`, `2 width`, ...); global
    average pooling gives the concept vector of `width * 2**(stages - 1)` features. Batch norm uses
    the statistics of the batch it is applied to (`BatchNorm`), so the generator is a pure function
    of (params, images).

    Input `[B, H, W, C]` -> concepts `[B, width * 2**(stages - 1)]`.
    """

    width: int = 32
    stages: int = 3
    blocks: int = 1

    @property
    def concept_dim(self) -> int:
        return self.width * 2 ** (self.stages - 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"ConceptResNet expects [batch, H, W, C] inputs, got shape {x.shape}")
        if self.stages < 1 or self.blocks < 1:
            raise ValueError(f"need stages >= 1 and blocks >= 1, got {self.stages}, {self.blocks}")
        x = nn.relu(BatchNorm()(nn.Conv(self.width, (3, 3), padding="SAME")(x)))
        for stage in range(self.stages):
            for block in range(self.blocks):
                x = ResidualBlock(self.width * 2**stage, stride=2 if block == 0 else 1)(x)
        return jnp.mean(x, axis=(1, 2))
