"""Flax networks used by the learners."""

from metajax.nets.conv4 import Conv4
from metajax.nets.layers import BatchNorm, max_pool_2x2
from metajax.nets.mlp import MLP
from metajax.nets.resnet import ConceptResNet, ResidualBlock

__all__ = ["BatchNorm", "Conv4", "MLP", "ConceptResNet", "ResidualBlock", "max_pool_2x2"]
