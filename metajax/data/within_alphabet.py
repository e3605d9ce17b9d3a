"""Within-alphabet N-way K-shot episodes (the protocol of Lake et al.'s official one-shot runs), on
the device: the N classes of an episode all come from one alphabet.

An episode first draws an alphabet (uniformly among those with at least N characters), then N of its
characters, then disjoint support and query drawings of each, exactly as `sample_episode` does.

With `paired_drawers`, the drawings are chosen by drawer instead: every class's support drawings
come from the same K drawers and its queries from Q other drawers, as in the official runs, whose
training images are all by one person and test images all by another. In the Omniglot zips a
drawing's index (the `_NN` of its file name) is its drawer, and within an alphabet index k is the
same person for every character: style features (ink, size, position) cluster by it far beyond
chance. `proxy_runs_sampler` draws official-runs-style episodes for `metajax eval-runs --proxy`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metajax.data.episodes import check_episode_shape, episode_from_classes, task_from_drawings
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


def episode_from_drawers(key: PRNGKey, images: Array, classes: Array, shots: int,
                         queries: int) -> Task:
    """The episode of `classes` whose support drawings all come from the same `shots` drawers
    (drawing indices) and whose queries come from `queries` other drawers, chosen with `key`."""
    drawers = jax.random.permutation(key, images.shape[1])[: shots + queries]
    return task_from_drawings(images[classes[:, None], drawers[None, :]], shots)


def sample_within_alphabet_episode(key: PRNGKey, images: Array, alphabet_of_class: Array,
                                   ways: int, shots: int, queries: int,
                                   paired_drawers: bool = False) -> Task:
    """Draws one N-way K-shot episode whose N classes share one alphabet.

    Args:
      key: PRNG key.
      images: `[classes, drawings, H, W, C]` arrays in device memory.
      alphabet_of_class: `[classes]` int alphabet id of each class (ids 0..A-1), a numpy array.
      ways, shots, queries: N, K and query examples per class.
      paired_drawers: the support drawings of all classes by the same K drawers, the queries by
        Q other drawers (`episode_from_drawers`); else each class's drawings drawn independently.

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
    draw = episode_from_drawers if paired_drawers else episode_from_classes
    return draw(k_drawings, images, classes, shots, queries)


def within_alphabet_sampler(alphabet_of_class, ways: int, shots: int, queries: int,
                            paired_drawers: bool = False):
    """Returns `sample(key, images) -> Task` drawing within-alphabet episodes (drawer-paired with
    `paired_drawers`); the alphabet ids are closed over as a constant (the images stay the
    sampler's traced data). Raises ValueError at once if no alphabet has `ways` classes."""
    alphabet_of_class = np.asarray(alphabet_of_class, np.int32)
    largest = np.bincount(alphabet_of_class).max() if alphabet_of_class.size else 0
    if largest < ways:
        raise ValueError(f"ways={ways} but the largest alphabet has only {largest} classes")

    def sample(key: PRNGKey, images: Array) -> Task:
        return sample_within_alphabet_episode(key, images, alphabet_of_class, ways, shots, queries,
                                              paired_drawers)

    return jax.jit(sample)  # one compiled program when called outside a traced step


def drawer_paired_sampler(ways: int, shots: int, queries: int):
    """Returns `sample(key, images) -> Task` drawing N classes from any alphabets, drawer-paired
    (`episode_from_drawers`)."""

    def sample(key: PRNGKey, images: Array) -> Task:
        check_episode_shape(images.shape, ways, shots, queries)
        k_classes, k_drawers = jax.random.split(key)
        classes = jax.random.choice(k_classes, images.shape[0], (ways,), replace=False)
        return episode_from_drawers(k_drawers, images, classes, shots, queries)

    return jax.jit(sample)


def proxy_runs_sampler(alphabet_of_class, ways: int = 20):
    """Episodes made as Lake et al.'s official one-shot runs were: `ways` characters of one
    alphabet, one training drawing of each by one drawer and one test drawing of each by another
    (20-way, one query per class). Which 10 of the 20 evaluation alphabets the official runs use
    is not published, so the alphabet is drawn uniformly among those with `ways` characters."""
    return within_alphabet_sampler(alphabet_of_class, ways, 1, 1, paired_drawers=True)
