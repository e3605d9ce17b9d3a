"""Episodes gathered on the host, for data larger than device memory.

The default path keeps a dataset's `[classes, drawings, ...]` array in device memory and samples
inside the jitted step. When the array does not fit, `HostEpisodes` draws the same kind of
meta-batch on the host instead, from a NumPy array or a memory-mapped `.npy` (only the images an
episode uses are read), and a background thread gathers and transfers the next meta-batches while
the device runs the current step (`prefetch` of them in flight: 2 is double buffering).

Semantics are the on-device sampler's (`metajax.data.episodes.sample_episode`): N distinct classes
drawn uniformly, label i for the i-th drawn class, K + Q distinct drawings per class (the first K
support, the rest query), class-major order, pixels as uint8 converted to [0, 1] floats on the
device. The draws come from NumPy's generator seeded with (seed, step), so a resumed run sees the
same tasks as an uninterrupted one; they are not the same draws as the on-device sampler's.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import numpy as np

from metajax.data.episodes import (
    RaggedClasses,
    check_episode_shape,
    check_ragged_episode,
    to_float,
)
from metajax.types import Task


class HostEpisodes:
    """Meta-batches of N-way K-shot episodes gathered on the host (see the module docstring).

    Args:
      images: `[classes, drawings, H, W, C]` uint8, a NumPy array or `np.load(path,
        mmap_mode="r")`; or `RaggedClasses` over such an array (classes of unequal sizes).
      ways, shots, queries: N, K and query examples per class.
      meta_batch: tasks per batch.
      seed: with the step, the seed of a batch's draws.
      prefetch: batches gathered and transferred ahead of the one in use.
      transform: applied to the stacked meta-batch on the device after the conversion to floats
        (elementwise: it sees all tasks at once).
    """

    def __init__(self, images, ways: int, shots: int, queries: int, meta_batch: int,
                 seed: int = 0, prefetch: int = 2, transform: Callable[[Task], Task] | None = None):
        if isinstance(images, RaggedClasses):
            check_ragged_episode(images, ways, shots, queries, where="the streamed classes")
        else:
            check_episode_shape(images.shape, ways, shots, queries, where="the streamed classes")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self.images, self.ways, self.shots, self.queries = images, ways, shots, queries
        self.meta_batch, self.seed, self.prefetch = meta_batch, seed, prefetch
        self.transform = transform

    def batch(self, step: int) -> Task:
        """The meta-batch of `step` on the host: stacked `Task` fields, uint8 images."""
        rng = np.random.default_rng([self.seed, step])
        k, q, n = self.shots, self.queries, self.ways
        ragged = isinstance(self.images, RaggedClasses)
        if ragged:  # classes of their own sizes in one flat array
            counts, offsets = np.asarray(self.images.counts), np.asarray(self.images.offsets)
            n_classes, flat = len(counts), self.images.images
        else:
            n_classes = self.images.shape[0]
        classes = np.stack([rng.choice(n_classes, n, replace=False)
                            for _ in range(self.meta_batch)])  # [B, N]
        size = (lambda c: counts[c]) if ragged else (lambda c: self.images.shape[1])  # noqa: E731
        picks = np.stack([[rng.choice(size(c), k + q, replace=False) for c in cs]
                          for cs in classes])  # [B, N, K+Q]

        def read(c, p):  # sorted reads touch each memory-mapped page once, then the draw order
            rows = np.sort(p)
            got = flat[offsets[c] + rows] if ragged else self.images[c][rows]
            return got[np.argsort(np.argsort(p))]

        x = np.stack([np.stack([read(c, p) for c, p in zip(cs, ps, strict=True)])
                      for cs, ps in zip(classes, picks, strict=True)])  # [B, N, K+Q, ...]
        labels = np.broadcast_to(np.arange(n, dtype=np.int32)[None, :, None],
                                 (self.meta_batch, n, k + q))
        shape = x.shape[3:]
        return Task(support_x=x[:, :, :k].reshape(self.meta_batch, n * k, *shape),
                    support_y=labels[:, :, :k].reshape(self.meta_batch, -1),
                    query_x=x[:, :, k:].reshape(self.meta_batch, n * q, *shape),
                    query_y=labels[:, :, k:].reshape(self.meta_batch, -1), num_classes=n)

    def batches(self, start: int, place: Callable[[Task], Task] = jax.device_put
                ) -> Iterator[Task]:
        """`place(batch(step))` for step = start, start + 1, ..., produced by a background
        thread up to `prefetch` ahead (`place` starts the transfer; JAX's transfers are
        asynchronous, so the device need not wait for it)."""
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce():
            step = start
            while not stop.is_set():
                try:
                    item = place(self.batch(step))
                except Exception as e:  # noqa: BLE001 - handed to the consumer
                    item = e
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if isinstance(item, Exception):
                    return
                step += 1

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()

    def on_device(self, batch: Task) -> Task:
        """The batch as the learners take it (inside the jitted step): float images in [0, 1],
        then `transform` (an elementwise one, such as normalisation), if any."""
        batch = batch.replace(support_x=to_float(batch.support_x), query_x=to_float(batch.query_x))
        return self.transform(batch) if self.transform is not None else batch


def save_memmap(images: np.ndarray, path: str | Path) -> np.ndarray:
    """Writes `images` to `path` (`.npy`) and returns it memory-mapped read-only: the decoded
    dataset on disk, read a few images at a time by `HostEpisodes`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, images)
    return np.load(path, mmap_mode="r")
