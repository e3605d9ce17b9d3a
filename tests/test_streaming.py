"""Episodes gathered on the host (`metajax.data.streaming`): the on-device sampler's semantics,
from an array or a memory-mapped file; prefetching in order; training from the stream, resumed
to the same parameters as an uninterrupted run, and learning a real task."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import coded_images

from metajax.data.episodes import episode_sampler
from metajax.data.streaming import HostEpisodes, save_memmap
from metajax.learners import protonet
from metajax.training import evaluate, train


def _decode(x):
    """(class, drawing) of each coded image `[..., size, size, 1]` uint8."""
    return np.asarray(x[..., 0, 0, 0]), np.asarray(x[..., 0, 1, 0])


def test_host_batches_have_the_samplers_semantics(tmp_path):
    images = coded_images(classes=12, drawings=20)
    stream = HostEpisodes(images, ways=5, shots=2, queries=3, meta_batch=4, seed=7)
    mapped = HostEpisodes(save_memmap(images, tmp_path / "x.npy"), 5, 2, 3, 4, seed=7)
    for step in range(5):
        batch = stream.batch(step)
        assert batch.support_x.shape == (4, 10, 4, 4, 1) and batch.query_x.shape == (4, 15, 4, 4, 1)
        assert batch.support_x.dtype == np.uint8 and batch.num_classes == 5
        for t in range(4):
            sc, sd = _decode(batch.support_x[t])
            qc, qd = _decode(batch.query_x[t])
            # label i is one class, the same in support and query; the 5 classes are distinct
            classes = [set(sc[batch.support_y[t] == i]) | set(qc[batch.query_y[t] == i])
                       for i in range(5)]
            assert all(len(c) == 1 for c in classes) and len(set.union(*classes)) == 5
            for i in range(5):  # K + Q distinct drawings per class
                drawn = list(sd[batch.support_y[t] == i]) + list(qd[batch.query_y[t] == i])
                assert len(drawn) == 5 and len(set(drawn)) == 5
            np.testing.assert_array_equal(batch.support_y[t], np.repeat(np.arange(5), 2))
        again = mapped.batch(step)  # same draws from the memory-mapped copy
        np.testing.assert_array_equal(again.query_x, batch.query_x)
    assert not np.array_equal(stream.batch(0).support_x, stream.batch(1).support_x)


def test_prefetched_batches_come_in_step_order_and_errors_reach_the_consumer():
    stream = HostEpisodes(coded_images(), 3, 1, 1, meta_batch=2, seed=0, prefetch=2)
    it = stream.batches(10, place=lambda b: b)
    for step in range(10, 14):
        np.testing.assert_array_equal(next(it).support_x, stream.batch(step).support_x)
    it.close()

    class Broken(HostEpisodes):
        def batch(self, step):
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        next(Broken(coded_images(), 3, 1, 1, 2).batches(0))
    with pytest.raises(ValueError, match="ways=20"):
        HostEpisodes(coded_images(), 20, 1, 1, 2)


class Flat(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(8)(x.reshape((x.shape[0], -1)))


def _run(tmp_path, steps, resume=False):
    stream = HostEpisodes(coded_images(classes=12, drawings=20, size=4), 3, 1, 2, meta_batch=2,
                          seed=3)
    learner = protonet(Flat())
    example = stream.on_device(jax.tree.map(lambda x: x[0], stream.batch(0)))
    state, _ = train(learner, optax.adam(1e-2), None, stream, steps=steps, meta_batch=2, seed=0,
                     out_dir=tmp_path, example_task=example, checkpoint_every=3, log_every=1,
                     resume=resume, progress=False)
    return state


def test_training_from_the_stream_resumes_to_the_same_parameters(tmp_path):
    straight = _run(tmp_path / "a", 6)
    _run(tmp_path / "b", 3)
    resumed = _run(tmp_path / "b", 6, resume=True)
    for x, y in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="meta-batches of 2 tasks"):
        train(protonet(Flat()), optax.adam(1e-2), None,
              HostEpisodes(coded_images(), 3, 1, 2, meta_batch=2), steps=1, meta_batch=4, seed=0,
              out_dir=tmp_path / "c", example_task=None, progress=False)


@pytest.mark.slow
def test_protonet_learns_omniglot_from_a_memory_mapped_stream(omniglot28, tmp_path):
    from metajax.nets import Conv4

    train_chars = save_memmap(omniglot28.images[:300, :, :, :, None], tmp_path / "train.npy")
    test_chars = jnp.asarray(omniglot28.images[-200:, :, :, :, None])
    stream = HostEpisodes(train_chars, 5, 1, 5, meta_batch=2, seed=0)
    learner = protonet(Conv4(width=16))
    sample = episode_sampler(5, 1, 5)
    example = stream.on_device(jax.tree.map(lambda x: x[0], stream.batch(0)))
    before = evaluate(learner, learner.init(jax.random.PRNGKey(0), example), sample, test_chars,
                      episodes=100, seed=1)
    state, _ = train(learner, optax.adam(3e-3), None, stream, steps=100, meta_batch=2, seed=0,
                         out_dir=tmp_path / "run", example_task=example, progress=False)
    after = evaluate(learner, state.params, sample, test_chars, episodes=100, seed=1)
    assert after["accuracy"] > before["accuracy"] + 0.15, (before, after)  # 5-way: chance 0.2
