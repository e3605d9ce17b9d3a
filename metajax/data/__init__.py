"""Datasets and on-device task samplers."""

from metajax.data.catalog import CATALOG, split_counts
from metajax.data.cifar import load_cifar100, load_cifar_fs, load_fc100
from metajax.data.download import DataError
from metajax.data.episodes import (
    RaggedClasses,
    episode_sampler,
    ragged_episode_sampler,
    sample_episode,
)
from metajax.data.folder import load_folder
from metajax.data.omniglot import ClassSet, Omniglot, Split, fetch_omniglot, load_omniglot, make_split
from metajax.data.sequences import SequenceEpisode, sample_sequence, sequence_sampler

__all__ = [
    "CATALOG", "ClassSet", "DataError", "Omniglot", "RaggedClasses", "SequenceEpisode", "Split",
    "episode_sampler", "fetch_omniglot", "load_cifar100", "load_cifar_fs", "load_fc100",
    "load_folder", "load_omniglot", "make_split", "ragged_episode_sampler", "sample_episode",
    "sample_sequence", "sequence_sampler", "split_counts",
]
