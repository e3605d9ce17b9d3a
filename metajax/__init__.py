"""metajax: meta-learning and few-shot learning as pure JAX functions.

A learner is a `Learner` of pure functions (`init`, `loss`, `predict`); the trainer vmaps it over
the tasks of a meta-batch sampled on the device and jits the whole step.
"""

from metajax.types import Learner, Task

__version__ = "0.1.0"
__all__ = ["Learner", "Task", "__version__"]
