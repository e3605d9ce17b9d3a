"""Flax networks used by the learners."""

from metajax.nets.conv4 import Conv4
from metajax.nets.layers import BatchNorm, Conv, conv_im2col, max_pool_2x2
from metajax.nets.mlp import MLP

__all__ = ["BatchNorm", "Conv", "Conv4", "MLP", "conv_im2col", "max_pool_2x2"]
