"""Sinusoid regression tasks of MAML (Finn et al. 2017), sampled on the device.

A task is `y = amplitude * sin(x - phase)` with amplitude ~ U[0.1, 5], phase ~ U[0, pi], and inputs
x ~ U[-5, 5]; K support points to adapt on and query points to score (MSE). The sampler has the
`sample(key, data) -> Task` signature of the Omniglot one; `data` is unused (pass `None`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from metajax.types import Array, PRNGKey, Task

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


def sinusoid_function(key: PRNGKey) -> tuple[Array, Array]:
    """The `(amplitude, phase)` of the task drawn with `key` (the same as in `sample_sinusoid`)."""
    k_amp, k_phase = jax.random.split(jax.random.fold_in(key, 0))
    amplitude = jax.random.uniform(k_amp, (), minval=AMPLITUDE[0], maxval=AMPLITUDE[1])
    phase = jax.random.uniform(k_phase, (), minval=PHASE[0], maxval=PHASE[1])
    return amplitude, phase


def sample_sinusoid(key: PRNGKey, shots: int, queries: int) -> Task:
    """Draws one sinusoid task.

    Args:
      key: PRNG key; `sinusoid_function(key)` gives the task's amplitude and phase.
      shots: K, the number of support points.
      queries: the number of query points.

    Returns:
      A `Task` with `support_x/support_y [K, 1]`, `query_x/query_y [queries, 1]` (float32) and
      `num_classes=0`.
    """
    if shots < 1 or queries < 1:
        raise ValueError(f"need shots >= 1 and queries >= 1 points, got {shots} and {queries}")
    amplitude, phase = sinusoid_function(key)
    x = jax.random.uniform(jax.random.fold_in(key, 1), (shots + queries, 1), minval=X_RANGE[0],
                           maxval=X_RANGE[1])
    y = amplitude * jnp.sin(x - phase)
    return Task(support_x=x[:shots], support_y=y[:shots], query_x=x[shots:], query_y=y[shots:],
                num_classes=0)


def sinusoid_sampler(shots: int, queries: int):
    """Returns `sample(key, data) -> Task` for the trainer and the evaluator (`data` is ignored)."""

    def sample(key: PRNGKey, data=None) -> Task:
        del data
        return sample_sinusoid(key, shots, queries)

    return jax.jit(sample)  # one compiled program when called outside a traced step
