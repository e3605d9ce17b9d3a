"""Within-alphabet N-way K-shot episodes (the protocol of Lake et al.'s official one-shot runs), on
the device: the N classes of an episode all come from one alphabet.

An episode first draws an alphabet (uniformly among those with at least N characters), then N of its
characters, then disjoint support and query drawings of each, exactly as `sample_episode` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metajax.data.episodes import check_episode_shape, episode_from_classes
from metajax.data.omniglot import Omniglot
from metajax.types import Array, PRNGKey, Task


def alphabet_index(names) -> tuple[np.ndarray, tuple[str, ...]]:
    """Alphabet id per class from names `Alphabet/characterNN[/rotDDD]`, and the alphabets."""
    alphabets = tuple(sorted({n.split("/")[0] for n in names}))
    index = {a: i for i, a in enumerate(alphabets)}
    return np.array([index[n.split("/")[0]] for n in names], np.int32), alphabets


def alphabet_groups(names) -> np.ndarray:
    """Group id per class from split names `Alphabet/characterNN/rotDDD`: one group per (alphabet,
    rotation), so that a within-alphabet training episode shows one alphabet in one orientation,
    like a test episode. Raises ValueError on names without an alphabet part."""
    keys = []
    for n in names:
        parts = n.split("/")
        if len(parts) < 2:
            raise ValueError(f"class name {n!r} has no alphabet part (expected Alphabet/character...)")
        keys.append((parts[0], parts[-1] if parts[-1].startswith("rot") else ""))
    index = {key: i for i, key in enumerate(sorted(set(keys)))}
    return np.array([index[key] for key in keys], np.int32)


def evaluation_alphabets(data: Omniglot) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The evaluation-alphabet characters, unrotated, as in the official runs: images
    `[659, 20, H, W, 1]`, their alphabet ids `[659]` and the 20 alphabet names."""
    chars = np.flatnonzero(~data.background)
    ids, alphabets = alphabet_index([data.names[c] for c in chars])
    return data.images[chars][..., None], ids, alphabets


def sample_within_alphabet_episode(key: PRNGKey, images: Array, alphabet_of_class: Array,
                                   ways: int, shots: int, queries: int) -> Task:
    """Draws one N-way K-shot episode whose N classes share one alphabet.

    Args:
      key: PRNG key.
      images: `[classes, drawings, H, W, C]` arrays in device memory.
      alphabet_of_class: `[classes]` int alphabet id of each class (ids 0..A-1), a numpy array.
      ways, shots, queries: N, K and query examples per class.

    Returns:
      A `Task` laid out as `sample_episode`'s (labels 0..N-1 in random order of the classes).
    """
    images = jnp.asarray(images)
    alphabet_of_class = np.asarray(alphabet_of_class, np.int32)  # concrete: closed over, not traced
    check_episode_shape(images.shape, ways, shots, queries)
    if alphabet_of_class.shape != images.shape[:1]:
        raise ValueError(f"alphabet_of_class must be [classes] = [{images.shape[0]}], got "
                         f"{alphabet_of_class.shape}")
    sizes = np.bincount(alphabet_of_class)
    n_alphabets = len(sizes)
    if sizes.max() < ways:
        raise ValueError(f"ways={ways} but the largest alphabet has only {sizes.max()} classes")
    eligible = (sizes >= ways).astype(np.float32)
    k_alpha, k_classes, k_drawings = jax.random.split(key, 3)
    alphabet = jax.random.choice(k_alpha, n_alphabets, p=jnp.asarray(eligible / eligible.sum()))
    # N distinct classes of that alphabet: the top-N of random scores, other classes masked out
    scores = jnp.where(alphabet_of_class == alphabet,
                       jax.random.uniform(k_classes, alphabet_of_class.shape), -1.0)
    _, classes = jax.lax.top_k(scores, ways)
    return episode_from_classes(k_drawings, images, classes, shots, queries)


def within_alphabet_sampler(alphabet_of_class, ways: int, shots: int, queries: int):
    """Returns `sample(key, images) -> Task` drawing within-alphabet episodes; the alphabet ids are
    closed over as a constant (the images stay the sampler's traced data). Raises ValueError at
    once if no alphabet has `ways` classes."""
    alphabet_of_class = np.asarray(alphabet_of_class, np.int32)
    largest = np.bincount(alphabet_of_class).max() if alphabet_of_class.size else 0
    if largest < ways:
        raise ValueError(f"ways={ways} but the largest alphabet has only {largest} classes")

    def sample(key: PRNGKey, images: Array) -> Task:
        return sample_within_alphabet_episode(key, images, alphabet_of_class, ways, shots, queries)

    return jax.jit(sample)  # one compiled program when called outside a traced step
