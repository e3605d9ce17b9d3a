"""Meta-learners, each a `Learner` of pure functions, and the registry the CLI builds them from."""

from __future__ import annotations

from collections.abc import Callable

from metajax.config import Config
from metajax.data.pairs import check_pairs_shape, pair_sampler
from metajax.learners.matching import MatchingNet, matching_net
from metajax.learners.protonet import protonet, prototypes, squared_distances
from metajax.learners.relation import RelationNet, relation_net
from metajax.learners.siamese import KochEmbedding, SiameseNet, SmallSiameseEmbedding, siamese
from metajax.nets import Conv4
from metajax.types import Learner, SampleFn


def _protonet(config: Config, ways: int, shots: int) -> Learner:
    del ways, shots
    return protonet(Conv4(width=config.width))


def _siamese(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del ways, shots, phase
    if config.image_size >= 64:  # Koch et al.'s twin for 105x105 images
        return siamese(SiameseNet(KochEmbedding(width=config.width)))
    return siamese(SiameseNet(SmallSiameseEmbedding(width=config.width, features=4 * config.width)))


def _relation(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del ways, shots, phase
    return relation_net(RelationNet(width=config.width))


def _matching(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del ways, shots, phase
    return matching_net(MatchingNet(width=config.width, fce=config.fce))


def _siamese_pairs(config: Config, images_shape: tuple[int, ...], where: str) -> SampleFn:
    check_pairs_shape(images_shape, config.pairs, where)
    return pair_sampler(config.pairs, config.affine)


# name -> build(config, ways, shots): the learner for episodes of that many ways and shots.
LEARNERS: dict[str, Callable[[Config, int, int], Learner]] = {
    "protonet": _protonet,
    "siamese": _siamese,
    "relation": _relation,
    "matching": _matching,
}

# name -> training_sampler(config, train_images_shape, where) for learners that are not trained on
# N-way episodes (checks the shape with a clear error, returns `sample(key, images)`). Learners not
# listed here train on the usual episodes; all are evaluated on N-way K-shot episodes.
TRAIN_SAMPLERS: dict[str, Callable[[Config, tuple[int, ...], str], SampleFn]] = {
    "siamese": _siamese_pairs,
}



def build_learner(config: Config, ways: int | None = None, shots: int | None = None) -> Learner:
    """The learner named by `config.algo`, for test episodes of `ways`/`shots` (default: config's)."""
    if config.algo not in LEARNERS:
        raise ValueError(f"unknown algorithm {config.algo!r}; choose one of {', '.join(LEARNERS)}")
    return LEARNERS[config.algo](config, ways or config.ways, shots or config.shots)


__all__ = [
    "LEARNERS", "TRAIN_SAMPLERS", "build_learner", "matching_net", "protonet", "prototypes",
    "relation_net", "siamese", "squared_distances",
]
