"""What an experiment is (application): the `Experiment` protocol that `metajax.experiment` drives
for every algorithm, and `Scoring`, what a trained run is scored on. Episodic few-shot learners
(`metajax.episodic_run`) and the learned optimiser (`metajax.l2o_run`) are its two
implementations; the registry names each algorithm's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from metajax.config import Config


@dataclass(frozen=True)
class Scoring:
    """What a trained run is scored on. None means the run's own setting.

    Attributes:
      part: "test" (held-out classes or problems) or "val" (validation classes, to choose
        settings without the test set).
      ways, shots, queries: the episode shape, for learners scored on N-way K-shot episodes.
      episodes: how many test episodes (or held-out problems).
      seed: the seed of the test episodes.
    """

    part: str = "test"
    ways: int | None = None
    shots: int | None = None
    queries: int | None = None
    episodes: int | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.part not in ("test", "val"):
            raise ValueError(f"part must be 'test' or 'val', not {self.part!r}")


class Experiment(Protocol):
    """One kind of meta-learning run: meta-train, restore what was trained, score it on held-out
    tasks, and say the result in a line or two. `metajax.experiment.train_and_evaluate` and
    `evaluate_run` do the rest (run directory, timing, `summary.json` / `eval.json`) for all."""

    def train(self, config: Config, out_dir: Path, *, resume: bool, progress: bool,
              devices) -> tuple[Any, dict]:
        """Meta-trains `config` in `out_dir` (checkpoints, metrics); returns the trained state
        and the loop's statistics (steps per second, start step, ...)."""

    def check(self, config: Config, scoring: Scoring) -> None:
        """Raises ValueError, before anything is restored or compiled, for a `scoring` setting
        that does not apply to this kind of run or that its data cannot give."""

    def restore(self, config: Config, out_dir: Path) -> Any:
        """The trained state of a finished run in `out_dir`, as `train` returned it."""

    def score(self, config: Config, state: Any, scoring: Scoring, *, progress: bool,
              devices=None) -> dict:
        """Scores `state` on held-out tasks: the result fields of `summary.json` / `eval.json`
        (the setting scored, the figures with their 95% CIs, what the tasks came from)."""

    def describe(self, result: dict, where: str) -> list[str]:
        """The lines `metajax` prints of a result, the last naming `where` (how long it took,
        where it was written) and ending with the headline figure."""
