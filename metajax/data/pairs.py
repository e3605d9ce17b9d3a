"""Same/different image pairs for verification training (Siamese networks), sampled on the device.

`images` is `[classes, drawings, H, W, C]`, the training classes only, so every pair comes from them.
A batch is balanced: the first half are same-class pairs (two different drawings of one class), the
second half different-class pairs (one drawing each of two different classes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from metajax.data.affine import random_affine
from metajax.data.episodes import to_float
from metajax.types import Array, PRNGKey


@struct.dataclass
class Pairs:
    """A batch of image pairs and whether each pair shows the same class.

    Attributes:
      x1, x2: `[P, H, W, C]` float images in [0, 1].
      same: `[P]` float, 1.0 for a same-class pair and 0.0 otherwise.
    """

    x1: Array
    x2: Array
    same: Array


def check_pairs_shape(images_shape: tuple[int, ...], pairs: int, where: str = "the split") -> None:
    if len(images_shape) < 3:
        raise ValueError(f"images must be [classes, drawings, ...], got shape {images_shape}")
    classes, drawings = images_shape[:2]
    if pairs < 2 or pairs % 2:
        raise ValueError(f"pairs must be an even number >= 2 (half same, half different), got {pairs}")
    if classes < 2 or drawings < 2:
        raise ValueError(f"pairs need >= 2 classes and >= 2 drawings per class; {where} has "
                         f"{classes} classes of {drawings} drawings")


def sample_pairs(key: PRNGKey, images: Array, pairs: int, affine: bool = False) -> Pairs:
    """Draws `pairs` pairs, half same-class and half different-class.

    Args:
      key: PRNG key.
      images: `[classes, drawings, H, W, C]` arrays in device memory.
      pairs: even number of pairs.
      affine: distort every image with Koch et al.'s random affine transformation.

    Returns:
      `Pairs` with `x1, x2 [pairs, H, W, C]` and `same [pairs]` (ones, then zeros).
    """
    images = jnp.asarray(images)
    check_pairs_shape(images.shape, pairs)
    n_classes, n_drawings = images.shape[:2]
    half = pairs // 2
    k_same, k_draw_same, k_diff, k_draw_diff, k_affine = jax.random.split(key, 5)
    # same: one class, two distinct drawings
    same_cls = jax.random.randint(k_same, (half,), 0, n_classes)
    draws = jax.vmap(lambda k: jax.random.choice(k, n_drawings, (2,), replace=False))(
        jax.random.split(k_draw_same, half))
    # different: two distinct classes (second = first + offset in 1..C-1, mod C), any drawings
    first = jax.random.randint(k_diff, (half,), 0, n_classes)
    k_off, k_d = jax.random.split(k_draw_diff)
    second = (first + jax.random.randint(k_off, (half,), 1, n_classes)) % n_classes
    diff_draws = jax.random.randint(k_d, (half, 2), 0, n_drawings)
    c1 = jnp.concatenate([same_cls, first])
    c2 = jnp.concatenate([same_cls, second])
    d1 = jnp.concatenate([draws[:, 0], diff_draws[:, 0]])
    d2 = jnp.concatenate([draws[:, 1], diff_draws[:, 1]])
    x1, x2 = to_float(images[c1, d1]), to_float(images[c2, d2])
    if affine:
        k1, k2 = jax.random.split(k_affine)
        x1, x2 = random_affine(k1, x1), random_affine(k2, x2)
    same = jnp.concatenate([jnp.ones(half), jnp.zeros(half)]).astype(jnp.float32)
    return Pairs(x1=x1, x2=x2, same=same)


def pair_sampler(pairs: int, affine: bool = False):
    """Returns `sample(key, images) -> Pairs` for the trainer (one `Pairs` batch per task slot)."""

    def sample(key: PRNGKey, images: Array) -> Pairs:
        return sample_pairs(key, images, pairs, affine)

    return jax.jit(sample)  # one compiled program when called outside a traced step
