"""Siamese networks: the pair sampler (balance, classes), affine distortions, the paper's twin, the
episode scoring, and a short real run well above chance."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import coded_images

from metajax.config import make_config
from metajax.data.affine import random_affine, warp
from metajax.data.episodes import episode_sampler
from metajax.data.pairs import Pairs, sample_pairs
from metajax.experiment import task_sources
from metajax.learners.siamese import (
    KochEmbedding,
    SiameseNet,
    SmallSiameseEmbedding,
    class_scores,
    pair_logits,
    siamese,
)
from metajax.training import evaluate, train


def _decode(x):
    x = np.round(np.asarray(x) * 255).astype(int)
    return x[:, 0, 0, 0], x[:, 0, 1, 0]  # class, drawing


def test_pairs_are_balanced_and_well_formed():
    images = coded_images(classes=7, drawings=5)
    for seed in range(10):
        p = jax.jit(sample_pairs, static_argnums=(2, 3))(jax.random.PRNGKey(seed), images, 40, False)
        assert p.x1.shape == p.x2.shape == (40, 4, 4, 1)
        same = np.asarray(p.same)
        assert same.tolist() == [1.0] * 20 + [0.0] * 20
        c1, d1 = _decode(p.x1)
        c2, d2 = _decode(p.x2)
        assert np.all(c1[:20] == c2[:20]) and np.all(d1[:20] != d2[:20])  # same class, 2 drawings
        assert np.all(c1[20:] != c2[20:])  # different classes
    with pytest.raises(ValueError, match="even number"):
        sample_pairs(jax.random.PRNGKey(0), images, 3)


def test_training_pairs_come_only_from_training_classes(omniglot28):
    config = make_config("siamese", pairs=64)
    sources, info = task_sources(config)
    train_src, test_src = sources["train"], sources["test"]
    assert info["split"] == "vinyals"

    def hashes(x):
        x = np.asarray(x)
        return {hashlib.sha1(np.ascontiguousarray(i).tobytes()).hexdigest() for i in x}

    train_images = np.asarray(train_src.data)
    train_set = hashes(train_images.reshape(-1, *train_images.shape[2:]))
    test_images = np.asarray(test_src.data)
    test_set = hashes(test_images.reshape(-1, *test_images.shape[2:]))
    pairs = jax.vmap(train_src.sample, in_axes=(0, None))(
        jax.random.split(jax.random.PRNGKey(0), 4), train_src.data)
    assert isinstance(pairs, Pairs)
    drawn = np.concatenate([np.asarray(pairs.x1), np.asarray(pairs.x2)]).reshape(-1, 28, 28, 1)
    drawn = hashes(np.round(drawn * 255).astype(np.uint8))
    assert drawn <= train_set and not drawn & test_set


def test_affine_identity_and_shift():
    x = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)
    np.testing.assert_allclose(warp(x, jnp.eye(2), jnp.zeros(2)), x, atol=1e-6)
    moved = warp(x, jnp.eye(2), jnp.array([2.0, -1.0]))  # out = in + t
    assert float(moved[6, 3, 0]) == pytest.approx(1.0)
    batch = jax.random.uniform(jax.random.PRNGKey(0), (6, 28, 28, 1))
    out = random_affine(jax.random.PRNGKey(1), batch)
    assert out.shape == batch.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not np.allclose(out, batch)


def test_affine_matrix_maps_a_pixel_where_it_says():
    """out = A @ in + t in centred coordinates (the centre of 15 x 15 is pixel 7), for matrices
    that are not symmetric, so a transposed or wrong inverse moves the pixel elsewhere."""
    def bright(row, col):
        return jnp.zeros((15, 15, 1)).at[7 + row, 7 + col, 0].set(1.0)

    shear = warp(bright(2, 5), jnp.array([[1.0, 1.0], [0.0, 1.0]]), jnp.zeros(2))
    np.testing.assert_allclose(shear, bright(7, 5), atol=1e-6)  # (2, 5) -> (2 + 5, 5)
    turn = warp(bright(2, 1), jnp.array([[0.0, -2.0], [1.0, 0.0]]), jnp.array([0.0, 4.0]))
    assert float(turn[7 - 2, 7 + 6, 0]) == pytest.approx(1.0)  # (2, 1) -> (-2, 2) + (0, 4)


def test_koch_twin_has_the_papers_parameter_count():
    net = SiameseNet(KochEmbedding())
    x = jnp.zeros((2, 105, 105, 1))
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), x, x)
    assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == 38_951_745


def test_episode_scores_are_the_best_pair_logit_per_class():
    logits = jnp.array([[0.1, 2.0, -1.0, 0.5], [3.0, -2.0, 0.0, 0.2]])  # [Q=2, S=4]
    support_y = jnp.array([0, 0, 1, 2])
    np.testing.assert_allclose(class_scores(logits, support_y, 3), [[2.0, -1.0, 0.5],
                                                                    [3.0, 0.0, 0.2]])
    images = jnp.asarray(coded_images(classes=6, size=28))
    task = episode_sampler(3, 2, 2)(jax.random.PRNGKey(0), images)
    net = SiameseNet(SmallSiameseEmbedding(width=4, features=8))
    learner = siamese(net)
    params = learner.init(jax.random.PRNGKey(0), task)
    assert pair_logits(net, params, task).shape == (6, 6)
    assert learner.predict(params, task, None).shape == (6, 3)


@pytest.mark.slow
def test_siamese_learns_omniglot_well_above_chance(omniglot28, tmp_path):
    train_chars = jnp.asarray(omniglot28.images[:300, :, :, :, None])  # background characters
    test_chars = jnp.asarray(omniglot28.images[-200:, :, :, :, None])  # evaluation characters
    learner = siamese(SiameseNet(SmallSiameseEmbedding(width=16, features=64)))
    sample = lambda key, images: sample_pairs(key, images, 32)  # noqa: E731
    state, _ = train(learner, optax.adam(1e-3), sample, train_chars, steps=120, meta_batch=1,
                     seed=0, out_dir=tmp_path, example_task=sample(jax.random.PRNGKey(0), train_chars),
                     progress=False)
    result = evaluate(learner, state.params, episode_sampler(5, 1, 5), test_chars, episodes=100,
                      seed=1)
    # chance is 0.2; pairs carry less signal per step than episodes (measured about 0.5 here)
    assert result["accuracy"] > 0.4, result
