"""Random affine distortions of Koch et al. (2015), applied on the device.

Each image gets its own transformation `T = (theta, rho_x, rho_y, s_x, s_y, t_x, t_y)`: rotation
theta in [-10, 10] degrees, shears rho in [-0.3, 0.3], scales s in [0.8, 1.2] and translations t in
[-2, 2] pixels (at 105 px; scaled with the image side), each component drawn only with probability
0.5 and otherwise the identity, as in the paper. Pixels are resampled bilinearly about the image
centre; what comes from outside the image is background (0: strokes are bright).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from metajax.types import Array, PRNGKey

ROTATION_DEG = 10.0
SHEAR = 0.3
SCALE = (0.8, 1.2)
TRANSLATION_PX_AT_105 = 2.0


def random_affine_matrix(key: PRNGKey, size: int) -> tuple[Array, Array]:
    """Draws Koch's distortion for a `size x size` image: a 2x2 matrix `A` and a shift `t` (pixels)
    mapping centred input coordinates to output coordinates, `out = A @ in + t`."""
    k_on, k_rot, k_shear, k_scale, k_shift = jax.random.split(key, 5)
    on = jax.random.bernoulli(k_on, 0.5, (7,))
    theta = jnp.deg2rad(jax.random.uniform(k_rot, (), minval=-ROTATION_DEG, maxval=ROTATION_DEG))
    shear = jax.random.uniform(k_shear, (2,), minval=-SHEAR, maxval=SHEAR)
    scale = jax.random.uniform(k_scale, (2,), minval=SCALE[0], maxval=SCALE[1])
    limit = TRANSLATION_PX_AT_105 * size / 105.0
    shift = jax.random.uniform(k_shift, (2,), minval=-limit, maxval=limit)
    theta = jnp.where(on[0], theta, 0.0)
    shear = jnp.where(on[1:3], shear, 0.0)
    scale = jnp.where(on[3:5], scale, 1.0)
    shift = jnp.where(on[5:7], shift, 0.0)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    rotation = jnp.array([[cos, -sin], [sin, cos]])
    shearing = jnp.array([[1.0, shear[0]], [shear[1], 1.0]])
    return rotation @ shearing @ jnp.diag(scale), shift


def warp(image: Array, matrix: Array, shift: Array) -> Array:
    """Applies `out = matrix @ in + shift` (centred pixel coordinates) to an `[H, W, C]` image."""
    h, w = image.shape[:2]
    centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0])
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                              indexing="ij")
    out = jnp.stack([rows.ravel(), cols.ravel()]) - centre[:, None]
    # the 2x2 inverse in closed form: a batched LAPACK solve (784 right-hand sides per image) was
    # the slowest operation of an --affine training step on CPU
    (a, b), (c, d) = matrix
    inverse = jnp.array([[d, -b], [-c, a]]) / (a * d - b * c)
    source = inverse @ (out - shift[:, None]) + centre[:, None]

    def channel(x):
        return map_coordinates(x, [source[0], source[1]], order=1, mode="constant", cval=0.0)

    return jax.vmap(channel, in_axes=-1, out_axes=-1)(image.astype(jnp.float32)).reshape(
        image.shape)


def random_affine(key: PRNGKey, images: Array) -> Array:
    """Distorts each image of `[B, H, W, C]` (float) with its own random Koch transformation."""
    size = images.shape[1]
    keys = jax.random.split(key, images.shape[0])

    def one(k, x):
        matrix, shift = random_affine_matrix(k, size)
        return warp(x, matrix, shift)

    return jax.vmap(one)(keys, images)
