"""N-way K-shot episodes sampled on the device from class arrays held in device memory.

`images` is `[classes, drawings, H, W, C]` (uint8 or float). `sample_episode` is a pure function of a
PRNG key, so `jax.vmap` over keys gives a meta-batch and the whole thing lives inside a jitted step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metajax.types import Array, PRNGKey, Task


def check_episode_shape(images_shape: tuple[int, ...], ways: int, shots: int, queries: int,
                        where: str = "the split") -> None:
    """Raises ValueError with a clear message when the episode cannot be drawn from the arrays."""
    if len(images_shape) < 3:
        raise ValueError(f"images must be [classes, drawings, ...], got shape {images_shape}")
    classes, drawings = images_shape[:2]
    if ways < 1 or shots < 1 or queries < 0:
        raise ValueError(f"need ways >= 1, shots >= 1, queries >= 0; got {ways}, {shots}, {queries}")
    if ways > classes:
        raise ValueError(f"ways={ways} but {where} has only {classes} classes")
    if shots + queries > drawings:
        raise ValueError(
            f"shots + queries = {shots} + {queries} = {shots + queries} but {where} has only "
            f"{drawings} drawings per class"
        )


def to_float(x: Array) -> Array:
    """uint8 pixels -> float32 in [0, 1]; float inputs are passed through."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x.astype(jnp.float32) / 255.0
    return x


def sample_episode(key: PRNGKey, images: Array, ways: int, shots: int, queries: int) -> Task:
    """Draws one N-way K-shot episode.

    Classes are distinct and drawn uniformly; label i goes to the i-th drawn class, so labels are
    0..N-1 in random order with respect to the class index. Within a class, support and query
    drawings are disjoint. Support and query sets are ordered by label (class-major).

    Args:
      key: PRNG key.
      images: `[classes, drawings, H, W, C]` arrays in device memory.
      ways, shots, queries: N, K and the number of query examples per class.

    Returns:
      A `Task` with `support_x [N*K, H, W, C]`, `support_y [N*K]`, `query_x [N*Q, H, W, C]`,
      `query_y [N*Q]` (float32 inputs in [0, 1], int32 labels) and `num_classes=N`.
    """
    images = jnp.asarray(images)
    check_episode_shape(images.shape, ways, shots, queries)
    k_classes, k_drawings = jax.random.split(key)
    classes = jax.random.choice(k_classes, images.shape[0], (ways,), replace=False)
    return episode_from_classes(k_drawings, images, classes, shots, queries)


def episode_from_classes(key: PRNGKey, images: Array, classes: Array, shots: int,
                         queries: int) -> Task:
    """The episode of the given `classes` (label i = `classes[i]`): per class, `shots + queries`
    distinct drawings drawn with `key`, the first `shots` for the support set, the rest for the query
    set. Samplers that choose classes differently (within one alphabet, say) share this part."""
    ways, n_drawings = classes.shape[0], images.shape[1]
    picks = jax.vmap(lambda k: jax.random.permutation(k, n_drawings)[: shots + queries])(
        jax.random.split(key, ways)
    )
    return task_from_drawings(images[classes[:, None], picks], shots)


def task_from_drawings(drawings: Array, shots: int) -> Task:
    """The episode of `drawings [N, K+Q, ...]` (row i: class i's drawings, the first K for the
    support set): float inputs, labels 0..N-1, support and query sets class-major."""
    ways, per_class = drawings.shape[:2]
    queries = per_class - shots
    x = to_float(drawings)
    labels = jnp.broadcast_to(jnp.arange(ways, dtype=jnp.int32)[:, None], (ways, per_class))
    feature_shape = drawings.shape[2:]
    return Task(
        support_x=x[:, :shots].reshape((ways * shots, *feature_shape)),
        support_y=labels[:, :shots].reshape(-1),
        query_x=x[:, shots:].reshape((ways * queries, *feature_shape)),
        query_y=labels[:, shots:].reshape(-1),
        num_classes=ways,
    )


def episode_sampler(ways: int, shots: int, queries: int):
    """Returns `sample(key, images) -> Task` for the trainer and the evaluator (jitted, so a call
    outside a traced step, e.g. the example task, is one compiled program, not dozens of eager ops)."""

    def sample(key: PRNGKey, images: Array) -> Task:
        return sample_episode(key, images, ways, shots, queries)

    return jax.jit(sample)


@struct.dataclass
class RaggedClasses:
    """Classes of unequal sizes in one flat array: class c's images are
    `images[offsets[c] : offsets[c] + counts[c]]`. A pytree, so it goes to the device and into
    the jitted step like the dense `[classes, drawings, ...]` layout."""

    images: Array  # [total, H, W, C]
    offsets: Array  # [classes] int32
    counts: Array  # [classes] int32

    @staticmethod
    def from_counts(images, counts) -> RaggedClasses:
        """From images already grouped by class, `counts[c]` of class c in order."""
        counts = np.asarray(counts, np.int32)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
        return RaggedClasses(images, offsets, counts)

    @staticmethod
    def from_lists(per_class: list) -> RaggedClasses:
        """From one `[n_c, H, W, C]` array per class."""
        return RaggedClasses.from_counts(np.concatenate(per_class), [len(a) for a in per_class])


def check_ragged_episode(data: RaggedClasses, ways: int, shots: int, queries: int,
                         where: str = "the split") -> None:
    """`check_episode_shape` for ragged classes: every class must hold `shots + queries` images,
    since any class can be drawn."""
    counts = np.asarray(data.counts)
    if ways < 1 or shots < 1 or queries < 0:
        raise ValueError(f"need ways >= 1, shots >= 1, queries >= 0; got {ways}, {shots}, {queries}")
    if ways > len(counts):
        raise ValueError(f"ways={ways} but {where} has only {len(counts)} classes")
    if counts.min() < shots + queries:
        raise ValueError(f"shots + queries = {shots + queries} but {where} has classes with only "
                         f"{int(counts.min())} images ({int((counts < shots + queries).sum())} of "
                         f"{len(counts)} classes are that small)")


def ragged_episode_sampler(ways: int, shots: int, queries: int, max_count: int):
    """`episode_sampler` for `RaggedClasses`: classes uniformly, then `shots + queries` distinct
    images of each among its own `counts[c]` (a random key per image slot up to `max_count`, the
    largest class, with the slots past the class's count sorted last)."""

    def sample(key: PRNGKey, data: RaggedClasses) -> Task:
        k_classes, k_images = jax.random.split(key)
        classes = jax.random.choice(k_classes, data.counts.shape[0], (ways,), replace=False)

        def picks(k, c):
            scores = jax.random.uniform(k, (max_count,))
            scores = jnp.where(jnp.arange(max_count) < data.counts[c], scores, 2.0)
            return data.offsets[c] + jnp.argsort(scores)[: shots + queries]

        index = jax.vmap(picks)(jax.random.split(k_images, ways), classes)  # [N, K+Q]
        return task_from_drawings(data.images[index], shots)

    return jax.jit(sample)
