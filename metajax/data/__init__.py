"""Datasets and on-device task samplers."""

from metajax.data.download import DataError
from metajax.data.episodes import episode_sampler, sample_episode
from metajax.data.omniglot import ClassSet, Omniglot, Split, fetch_omniglot, load_omniglot, make_split
from metajax.data.sequences import SequenceEpisode, sample_sequence, sequence_sampler

__all__ = [
    "ClassSet", "DataError", "Omniglot", "Split", "episode_sampler", "fetch_omniglot", "load_omniglot",
    "make_split",
    "sample_episode", "SequenceEpisode", "sample_sequence", "sequence_sampler",
]
