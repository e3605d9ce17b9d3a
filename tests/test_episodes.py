"""Invariants of the on-device episode sampler."""

import jax
import numpy as np
import pytest
from conftest import coded_images

from metajax.data.episodes import sample_episode


def _decode(x):
    x = np.asarray(np.round(np.asarray(x) * 255)).astype(int)
    return x[:, 0, 0, 0], x[:, 0, 1, 0]  # class, drawing


@pytest.mark.parametrize("ways,shots,queries", [(5, 1, 5), (3, 4, 2), (12, 2, 18)])
def test_episode_invariants(ways, shots, queries):
    images = coded_images()
    for seed in range(10):
        task = jax.jit(sample_episode, static_argnums=(2, 3, 4))(
            jax.random.PRNGKey(seed), images, ways, shots, queries)
        assert task.support_x.shape == (ways * shots, 4, 4, 1)
        assert task.query_x.shape == (ways * queries, 4, 4, 1)
        assert task.num_classes == ways
        s_cls, s_draw = _decode(task.support_x)
        q_cls, q_draw = _decode(task.query_x)
        sy, qy = np.asarray(task.support_y), np.asarray(task.query_y)
        assert np.bincount(sy, minlength=ways).tolist() == [shots] * ways
        assert np.bincount(qy, minlength=ways).tolist() == [queries] * ways
        # one class per label, distinct across labels, same class in support and query
        label_class = {}
        for y, c in zip(np.concatenate([sy, qy]), np.concatenate([s_cls, q_cls]), strict=True):
            assert label_class.setdefault(int(y), int(c)) == c
        assert len(set(label_class.values())) == ways
        # support and query drawings of a class are disjoint, and no drawing repeats
        for y in range(ways):
            s = set(s_draw[sy == y].tolist())
            q = set(q_draw[qy == y].tolist())
            assert len(s) == shots and len(q) == queries and not s & q


def test_labels_are_in_random_order_and_keys_matter():
    images = coded_images(classes=12)
    first_class, unsorted = set(), 0
    for seed in range(20):
        task = sample_episode(jax.random.PRNGKey(seed), images, 5, 1, 1)
        cls, _ = _decode(task.support_x)  # class of label 0, 1, ..., 4
        unsorted += not np.all(np.diff(cls) > 0)
        first_class.add(int(cls[0]))
    assert unsorted >= 15  # labels are not assigned in class-index order
    assert len(first_class) > 4  # label 0 goes to many different classes
    a = sample_episode(jax.random.PRNGKey(3), images, 5, 1, 1)
    b = sample_episode(jax.random.PRNGKey(3), images, 5, 1, 1)
    np.testing.assert_array_equal(a.support_x, b.support_x)


def test_vmap_over_keys_gives_a_meta_batch():
    images = coded_images()
    keys = jax.random.split(jax.random.PRNGKey(0), 7)
    tasks = jax.vmap(lambda k: sample_episode(k, images, 5, 2, 3))(keys)
    assert tasks.support_x.shape == (7, 10, 4, 4, 1)
    assert tasks.query_y.shape == (7, 15)
    one = sample_episode(keys[4], images, 5, 2, 3)
    np.testing.assert_array_equal(tasks.query_x[4], one.query_x)


def test_impossible_requests_are_clear_errors():
    images = coded_images(classes=12, drawings=20)
    with pytest.raises(ValueError, match="ways=13 but .* only 12 classes"):
        sample_episode(jax.random.PRNGKey(0), images, 13, 1, 1)
    with pytest.raises(ValueError, match="shots \\+ queries = 5 \\+ 16 = 21 .* only 20 drawings"):
        sample_episode(jax.random.PRNGKey(0), images, 5, 5, 16)
    with pytest.raises(ValueError, match="shots >= 1"):
        sample_episode(jax.random.PRNGKey(0), images, 5, 0, 1)
