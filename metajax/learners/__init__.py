"""Meta-learners, each a `Learner` of pure functions, and the registry the CLI builds them from."""

from __future__ import annotations

from collections.abc import Callable

from metajax.config import Config
from metajax.learners.protonet import protonet, prototypes, squared_distances
from metajax.nets import Conv4
from metajax.types import Learner


def _protonet(config: Config, ways: int, shots: int) -> Learner:
    del ways, shots
    return protonet(Conv4(width=config.width))


# name -> build(config, ways, shots): the learner for episodes of that many ways and shots.
LEARNERS: dict[str, Callable[[Config, int, int], Learner]] = {
    "protonet": _protonet,
}


def build_learner(config: Config, ways: int | None = None, shots: int | None = None) -> Learner:
    """The learner named by `config.algo`, for test episodes of `ways`/`shots` (default: config's)."""
    if config.algo not in LEARNERS:
        raise ValueError(f"unknown algorithm {config.algo!r}; choose one of {', '.join(LEARNERS)}")
    return LEARNERS[config.algo](config, ways or config.ways, shots or config.shots)


__all__ = ["LEARNERS", "build_learner", "protonet", "prototypes", "squared_distances"]
