"""Losses and metrics shared by the classification learners."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from metajax.types import Array, Metrics


def cross_entropy(logits: Array, labels: Array) -> tuple[Array, Metrics]:
    """Mean softmax cross-entropy and accuracy of `logits [Q, N]` against int `labels [Q]`."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, {"loss": loss, "accuracy": accuracy}
