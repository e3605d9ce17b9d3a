"""The papers' image augmentation and normalisation for miniImageNet, tieredImageNet, CIFAR-FS and
FC100, as pure functions on the device (inside the jitted step, per image with its own key).

MetaOptNet (Lee et al. 2019) trains with a random crop of the image padded by 8 px (84 px images)
or 4 px (32 px), colour jitter of brightness, contrast and saturation by up to +-40 %, and a
horizontal flip, and normalises every image by the training set's per-channel mean and standard
deviation. `augment_task` applies the first three to a training episode's support and query
images; `normalizer(dataset)` the last to every episode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.types import Array, PRNGKey, Task

# Per-channel mean and standard deviation (RGB, of [0, 1] pixels) as the MetaOptNet code uses them.
_MINI = ((120.39586422, 115.59361427, 104.54012653), (70.68188272, 68.27635443, 72.54505529))
_CIFAR = ((129.37731888, 124.10583864, 112.47758569), (68.20947949, 65.43124043, 70.45866994))
STATISTICS = {"miniimagenet": _MINI, "tieredimagenet": _MINI, "cifar-fs": _CIFAR, "fc100": _CIFAR}
PADDING = {"miniimagenet": 8, "tieredimagenet": 8, "cifar-fs": 4, "fc100": 4}


def normalize(x: Array, mean, std) -> Array:
    """`(x - mean) / std` per channel, `mean` and `std` in 0-255 units, `x` in [0, 1]."""
    return (x - jnp.asarray(mean) / 255.0) / (jnp.asarray(std) / 255.0)


def random_crop(key: PRNGKey, image: Array, pad: int) -> Array:
    """A crop of the image's own size from it zero-padded by `pad` pixels on every side."""
    h, w = image.shape[:2]
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    top, left = jax.random.randint(key, (2,), 0, 2 * pad + 1)
    return jax.lax.dynamic_slice(padded, (top, left, 0), (h, w, image.shape[2]))


def random_flip(key: PRNGKey, image: Array) -> Array:
    """The image mirrored left-right with probability 1/2."""
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def _grey(image: Array) -> Array:
    return image @ jnp.asarray([0.299, 0.587, 0.114], image.dtype)


def color_jitter(key: PRNGKey, image: Array, strength: float = 0.4) -> Array:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s], applied in
    that order (torchvision's ColorJitter applies them in a random order), clipped to [0, 1]."""
    b, c, s = jax.random.uniform(key, (3,), minval=1 - strength, maxval=1 + strength)
    image = jnp.clip(image * b, 0, 1)
    image = jnp.clip((image - _grey(image).mean()) * c + _grey(image).mean(), 0, 1)
    grey = _grey(image)[..., None]
    return jnp.clip((image - grey) * s + grey, 0, 1)


def augment_images(key: PRNGKey, images: Array, pad: int, jitter: float = 0.4) -> Array:
    """`[B, H, W, 3]` images in [0, 1], each cropped, jittered and flipped with its own key."""

    def one(k, image):
        k_crop, k_jitter, k_flip = jax.random.split(k, 3)
        image = random_crop(k_crop, image, pad)
        if jitter:
            image = color_jitter(k_jitter, image, jitter)
        return random_flip(k_flip, image)

    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)


def augment_task(key: PRNGKey, task: Task, pad: int, jitter: float = 0.4) -> Task:
    """The episode with its support and query images augmented (`augment_images`)."""
    k_support, k_query = jax.random.split(key)
    return task.replace(support_x=augment_images(k_support, task.support_x, pad, jitter),
                        query_x=augment_images(k_query, task.query_x, pad, jitter))


def normalizer(dataset: str):
    """`normalize_task(task) -> task` with the dataset's statistics (`STATISTICS`)."""
    if dataset not in STATISTICS:
        raise ValueError(f"no normalisation statistics for {dataset!r}; known: "
                         f"{', '.join(STATISTICS)}")
    mean, std = STATISTICS[dataset]

    def normalize_task(task: Task) -> Task:
        return task.replace(support_x=normalize(task.support_x, mean, std),
                            query_x=normalize(task.query_x, mean, std))

    return normalize_task
