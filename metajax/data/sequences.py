"""Label-offset sequence episodes (Santoro et al. 2016), sampled on the device.

An episode is a sequence of `classes * instances` images: `classes` distinct classes, each shown
`instances` times (distinct drawings) in a random order, with labels 0..N-1 shuffled per episode
(label i goes to the i-th randomly drawn class). The input at step t is the image of step t with the
one-hot label of step t-1 (zeros at t = 0), so a learner only finds out a class's label after its
first guess: it must bind labels to classes in memory within the episode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from metajax.data.episodes import to_float
from metajax.types import Array, PRNGKey


@struct.dataclass
class SequenceEpisode:
    """One label-offset episode of `T = classes * instances` steps.

    Attributes:
      x: images `[T, H, W, C]`, float in [0, 1].
      prev_label: `[T, N]` one-hot label of the previous step (row 0 is zeros).
      y: `[T]` int32 label to predict at each step.
      instance: `[T]` int32, which presentation of its class step t is (1 for the first).
      num_classes: N (static).
    """

    x: Array
    prev_label: Array
    y: Array
    instance: Array
    num_classes: int = struct.field(pytree_node=False, default=0)


def check_sequence_shape(images_shape: tuple[int, ...], classes: int, instances: int,
                         where: str = "the split") -> None:
    """Raises ValueError with a clear message when the episode cannot be drawn from the arrays."""
    if len(images_shape) < 3:
        raise ValueError(f"images must be [classes, drawings, ...], got shape {images_shape}")
    n_classes, drawings = images_shape[:2]
    if classes < 1 or instances < 1:
        raise ValueError(f"need classes >= 1 and instances >= 1; got {classes}, {instances}")
    if classes > n_classes:
        raise ValueError(f"classes={classes} but {where} has only {n_classes} classes")
    if instances > drawings:
        raise ValueError(f"instances={instances} but {where} has only {drawings} drawings per "
                         f"class (each instance is a different drawing)")


def instance_numbers(y: Array, num_classes: int) -> Array:
    """`[T]` labels -> `[T]` presentation numbers: 1 + how often the label occurred before t."""
    one_hot = jax.nn.one_hot(y, num_classes, dtype=jnp.int32)
    return jnp.sum(jnp.cumsum(one_hot, axis=0) * one_hot, axis=-1)


def offset_labels(y: Array, num_classes: int) -> Array:
    """The label input of each step: one-hot of the previous step's label, zeros at step 0."""
    one_hot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    return jnp.concatenate([jnp.zeros_like(one_hot[:1]), one_hot[:-1]])


def sample_sequence(key: PRNGKey, images: Array, classes: int = 5,
                    instances: int = 10) -> SequenceEpisode:
    """Draws one label-offset episode.

    Args:
      key: PRNG key.
      images: `[classes, drawings, H, W, C]` arrays in device memory.
      classes: N, classes per episode (labels 0..N-1, shuffled per episode).
      instances: presentations of each class (distinct drawings), so `T = N * instances`.

    Returns:
      A `SequenceEpisode` with `x [T, H, W, C]`, `prev_label [T, N]`, `y [T]`, `instance [T]`.
    """
    images = jnp.asarray(images)
    check_sequence_shape(images.shape, classes, instances)
    k_classes, k_drawings, k_order = jax.random.split(key, 3)
    chosen = jax.random.choice(k_classes, images.shape[0], (classes,), replace=False)
    picks = jax.vmap(lambda k: jax.random.permutation(k, images.shape[1])[:instances])(
        jax.random.split(k_drawings, classes))  # [N, instances]
    labels = jnp.repeat(jnp.arange(classes, dtype=jnp.int32), instances)  # class-major
    order = jax.random.permutation(k_order, classes * instances)
    y = labels[order]
    drawing = picks.reshape(-1)[order]
    x = to_float(images[chosen[y], drawing])
    return SequenceEpisode(x=x, prev_label=offset_labels(y, classes), y=y,
                           instance=instance_numbers(y, classes), num_classes=classes)


def sequence_sampler(classes: int = 5, instances: int = 10):
    """Returns `sample(key, images) -> SequenceEpisode` for the trainer and the evaluator."""

    def sample(key: PRNGKey, images: Array) -> SequenceEpisode:
        return sample_sequence(key, images, classes, instances)

    return sample
