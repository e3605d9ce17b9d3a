"""Label-offset sequence episodes (Santoro et al. 2016), sampled on the device.

An episode is a sequence of `classes * instances` images: `classes` distinct classes, each shown
`instances` times (distinct drawings) in a random order, with labels 0..N-1 shuffled per episode
(label i goes to the i-th randomly drawn class). The input at step t is the image of step t with the
one-hot label of step t-1 (zeros at t = 0), so a learner only finds out a class's label after its
first guess: it must bind labels to classes in memory within the episode.

Labels are one-hot (`label_chars=0`) or, as in the paper's 15-class experiment, strings of
`label_chars` characters over an alphabet of `STRING_ALPHABET` letters (5 x 5 in the paper): each
class of the episode gets a distinct random string, given as the concatenated one-hot characters
and predicted character by character.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from metajax.data.episodes import to_float
from metajax.types import Array, PRNGKey

STRING_ALPHABET = 5  # letters of the string labels (Santoro et al.: 5-character strings over 5)


@struct.dataclass
class SequenceEpisode:
    """One label-offset episode of `T = classes * instances` steps.

    Attributes:
      x: images `[T, H, W, C]`, float in [0, 1].
      prev_label: `[T, L * A]` label input: the previous step's target characters, one-hot and
        concatenated (row 0 is zeros). One-hot labels are the case L = 1, A = N.
      y: `[T]` int32 class of each step within the episode (0..N-1).
      instance: `[T]` int32, which presentation of its class step t is (1 for the first).
      targets: `[T, L]` int32 characters to predict (one-hot labels: `y[:, None]`).
      num_classes: N (static).
      alphabet: A, letters per label character (static; N for one-hot labels).
    """

    x: Array
    prev_label: Array
    y: Array
    instance: Array
    targets: Array
    num_classes: int = struct.field(pytree_node=False, default=0)
    alphabet: int = struct.field(pytree_node=False, default=0)


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
    """The label input of each step: one-hot of the previous step's label, zeros at step 0.

    `y` is `[T]` (one-hot labels, `[T, N]` out) or `[T, L]` characters (`[T, L * N]` out, the
    characters' one-hots concatenated)."""
    one_hot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32).reshape(y.shape[0], -1)
    return jnp.concatenate([jnp.zeros_like(one_hot[:1]), one_hot[:-1]])


def string_codes(key: PRNGKey, classes: int, chars: int, alphabet: int = STRING_ALPHABET) -> Array:
    """`[classes, chars]` distinct random strings over `alphabet` letters."""
    if alphabet ** chars < classes:
        raise ValueError(f"{alphabet}^{chars} strings cannot label {classes} classes distinctly")
    codes = jax.random.choice(key, alphabet ** chars, (classes,), replace=False)
    powers = alphabet ** jnp.arange(chars - 1, -1, -1)
    return (codes[:, None] // powers[None, :]) % alphabet


def sample_sequence(key: PRNGKey, images: Array, classes: int = 5, instances: int = 10,
                    label_chars: int = 0) -> SequenceEpisode:
    """Draws one label-offset episode.

    Args:
      key: PRNG key.
      images: `[classes, drawings, H, W, C]` arrays in device memory.
      classes: N, classes per episode (labels 0..N-1, shuffled per episode).
      instances: presentations of each class (distinct drawings), so `T = N * instances`.
      label_chars: 0 for one-hot labels; otherwise string labels of that many characters over
        `STRING_ALPHABET` letters (Santoro et al.: 5).

    Returns:
      A `SequenceEpisode` with `x [T, H, W, C]`, `prev_label [T, N]` (strings: `[T, L * A]`),
      `y [T]`, `instance [T]`, `targets [T, 1]` (strings: `[T, L]`).
    """
    images = jnp.asarray(images)
    check_sequence_shape(images.shape, classes, instances)
    k_classes, k_drawings, k_order, k_codes = jax.random.split(key, 4)
    chosen = jax.random.choice(k_classes, images.shape[0], (classes,), replace=False)
    picks = jax.vmap(lambda k: jax.random.permutation(k, images.shape[1])[:instances])(
        jax.random.split(k_drawings, classes))  # [N, instances]
    labels = jnp.repeat(jnp.arange(classes, dtype=jnp.int32), instances)  # class-major
    order = jax.random.permutation(k_order, classes * instances)
    y = labels[order]
    drawing = picks.reshape(-1)[order]
    x = to_float(images[chosen[y], drawing])
    if label_chars:
        targets, alphabet = string_codes(k_codes, classes, label_chars)[y], STRING_ALPHABET
    else:
        targets, alphabet = y[:, None], classes
    return SequenceEpisode(x=x, prev_label=offset_labels(targets, alphabet), y=y,
                           instance=instance_numbers(y, classes), targets=targets,
                           num_classes=classes, alphabet=alphabet)


def label_size(classes: int, label_chars: int = 0) -> int:
    """Size of the label input and of the logits: N (one-hot) or `label_chars * STRING_ALPHABET`."""
    return label_chars * STRING_ALPHABET if label_chars else classes


def sequence_sampler(classes: int = 5, instances: int = 10, label_chars: int = 0):
    """Returns `sample(key, images) -> SequenceEpisode` for the trainer and the evaluator."""

    def sample(key: PRNGKey, images: Array) -> SequenceEpisode:
        return sample_sequence(key, images, classes, instances, label_chars)

    return jax.jit(sample)  # one compiled program when called outside a traced step
