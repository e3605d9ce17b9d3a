"""Residual networks for few-shot images: DEML's concept generator and ResNet-12."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.nets.layers import BatchNorm, Conv, max_pool_2x2


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


class ResNet12Block(nn.Module):
    """Three 3x3 conv + batch norm + leaky ReLU (0.1) layers, a 1x1 conv + batch norm shortcut,
    then 2x2 max-pooling: one stage of ResNet-12."""

    features: int
    conv: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        def norm(y):
            return nn.BatchNorm(use_running_average=not train, momentum=0.9)(y)

        y = x
        for i in range(3):
            y = norm(Conv(self.features, (3, 3), impl=self.conv)(y))
            if i < 2:
                y = nn.leaky_relu(y, 0.1)
        shortcut = norm(Conv(self.features, (1, 1), impl=self.conv)(x))
        return max_pool_2x2(nn.leaky_relu(y + shortcut, 0.1))


class ResNet12(nn.Module):
    """ResNet-12, the backbone of TADAM, MetaOptNet and R2D2's successors: four `ResNet12Block`
    stages of `widths` filters (64-160-320-640 as in Lee et al. 2019; their DropBlock is not
    included), then the features averaged over space (`pool="avg"`, 640-d) or flattened
    (`pool="flatten"`, as MetaOptNet does: 5x5x640 at 84 px). Flax's batch norm with `train`
    (running averages at `train=False`); convolutions by `metajax.nets.Conv` (`conv` its `impl`).
    With `num_outputs`, a dense layer on the features."""

    widths: tuple[int, ...] = (64, 160, 320, 640)
    pool: str = "avg"
    num_outputs: int | None = None
    conv: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        if self.pool not in ("avg", "flatten"):
            raise ValueError(f"pool must be 'avg' or 'flatten', got {self.pool!r}")
        if x.ndim != 4:
            raise ValueError(f"ResNet12 expects [batch, H, W, C] inputs, got shape {x.shape}")
        if min(x.shape[1:3]) < 2 ** len(self.widths):
            raise ValueError(f"ResNet12 halves the image {len(self.widths)} times; {x.shape[1]}x"
                             f"{x.shape[2]} is too small")
        for width in self.widths:
            x = ResNet12Block(width, conv=self.conv)(x, train)
        x = x.mean(axis=(1, 2)) if self.pool == "avg" else x.reshape((x.shape[0], -1))
        if self.num_outputs is not None:
            x = nn.Dense(self.num_outputs)(x)
        return x
