"""Flax networks used by the learners."""

from metajax.nets.blackbox import SNAIL, LSTMBlackBox, MeanEmbeddingBlackBox
from metajax.nets.conv4 import Conv4
from metajax.nets.layers import BatchNorm, Conv, conv_im2col, conv_winograd, max_pool_2x2
from metajax.nets.mann import FeedForwardCell, LSTMCell, MANNCell, lrua_step, unroll
from metajax.nets.mlp import MLP
from metajax.nets.resnet import ConceptResNet, ResidualBlock, ResNet12, ResNet12Block

__all__ = [
    "SNAIL", "BatchNorm", "ConceptResNet", "Conv", "Conv4", "FeedForwardCell", "LSTMBlackBox",
    "LSTMCell", "MANNCell", "MLP", "MeanEmbeddingBlackBox", "ResNet12", "ResNet12Block",
    "ResidualBlock", "conv_im2col", "conv_winograd", "lrua_step", "max_pool_2x2", "unroll",
]
