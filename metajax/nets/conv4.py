"""The standard few-shot backbone: 4 x [3x3 conv, batch norm, ReLU, 2x2 max-pool]."""

from __future__ import annotations

import flax.linen as nn
import jax

from metajax.nets.layers import BatchNorm, Conv, max_pool_2x2


class Conv4(nn.Module):
    """conv4 of Vinyals et al. / Finn et al., configurable in width and depth.

    Attributes:
      width: filters per conv layer (64 in the papers).
      depth: number of conv blocks (4).
      num_outputs: if set, a dense layer on the flattened features (MAML's classifier head);
        otherwise the flattened features are returned (the embedding of metric learners).
      downsample: "maxpool" (2x2 max-pool after each block) or "stride" (stride-2 convs, as MAML
        uses for Omniglot in some versions).
      conv: how the convolutions are computed, `Conv`'s `impl`: "im2col" (default),
        "winograd" (needs downsample="maxpool"; fewer multiplications, not faster on XLA:CPU,
        see `benchmarks/conv_impls.py`) or "xla".

    Parameter names are `Conv_i`, `BatchNorm_i`, `Dense_0`. Batch norm uses batch statistics
    (see `BatchNorm`). Input `[B, H, W, C]` -> `[B, features]` or `[B, num_outputs]`.
    """

    width: int = 64
    depth: int = 4
    num_outputs: int | None = None
    downsample: str = "maxpool"
    conv: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.downsample not in ("maxpool", "stride"):
            raise ValueError(f"downsample must be 'maxpool' or 'stride', got {self.downsample!r}")
        if x.ndim != 4:
            raise ValueError(f"Conv4 expects [batch, H, W, C] inputs, got shape {x.shape}")
        stride = 2 if self.downsample == "stride" else 1
        for _ in range(self.depth):
            x = Conv(self.width, (3, 3), strides=stride, padding="SAME", impl=self.conv)(x)
            x = BatchNorm()(x)
            x = nn.relu(x)
            if self.downsample == "maxpool":
                x = max_pool_2x2(x)
        x = x.reshape((x.shape[0], -1))
        if self.num_outputs is not None:
            x = nn.Dense(self.num_outputs)(x)
        return x
