"""Matching networks: cosine attention against numpy, full context embeddings, a short real run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import coded_images

from metajax.data.episodes import episode_sampler
from metajax.learners.matching import (
    MatchingNet,
    cosine_similarities,
    label_distribution,
    matching_net,
    support_normalized_similarities,
)
from metajax.training import evaluate, train


def test_cosine_attention_matches_numpy():
    rng = np.random.default_rng(0)
    q, s = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (s / np.linalg.norm(s, axis=1,
                                                                              keepdims=True)).T
    np.testing.assert_allclose(cosine_similarities(jnp.asarray(q), jnp.asarray(s)), cos, atol=1e-5)
    attention = np.exp(cos) / np.exp(cos).sum(1, keepdims=True)
    expected = np.stack([attention[:, y == c].sum(1) for c in range(3)], axis=1)
    probs = label_distribution(jnp.asarray(cos), jnp.asarray(y), 3)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # the default keeps the query's norm (a learned temperature): |q| times the cosine
    scaled = np.linalg.norm(q, axis=1, keepdims=True) * cos
    np.testing.assert_allclose(support_normalized_similarities(jnp.asarray(q), jnp.asarray(s)),
                               scaled, rtol=1e-5, atol=1e-5)


def test_plain_cosine_option_uses_the_bounded_cosine():
    images = jnp.asarray(coded_images(classes=8, size=28))
    task = episode_sampler(4, 1, 3)(jax.random.PRNGKey(0), images)
    for cosine in (False, True):
        net = MatchingNet(width=4, cosine=cosine)
        learner = matching_net(net)
        params = jax.jit(learner.init)(jax.random.PRNGKey(1), task)
        support, query = net.apply(params, task.support_x, task.query_x)
        sim = (cosine_similarities if cosine else support_normalized_similarities)(query, support)
        expected = label_distribution(sim, task.support_y, task.num_classes)
        np.testing.assert_allclose(np.exp(learner.predict(params, task, None)), expected,
                                   rtol=1e-4, atol=1e-6)


def test_predictions_and_full_context_embeddings():
    images = jnp.asarray(coded_images(classes=8, size=28))
    task = episode_sampler(4, 2, 3)(jax.random.PRNGKey(0), images)
    plain = matching_net(MatchingNet(width=4))
    fce = matching_net(MatchingNet(width=4, fce=True, fce_steps=2))
    for learner in (plain, fce):
        params = jax.jit(learner.init)(jax.random.PRNGKey(1), task)
        log_probs = jax.jit(learner.predict)(params, task, None)  # eager LSTM dispatch is slow
        assert log_probs.shape == (12, 4)
        np.testing.assert_allclose(jnp.exp(log_probs).sum(1), 1.0, atol=1e-4)
        paths = [jax.tree_util.keystr(path) for path, _ in
                 jax.tree_util.tree_flatten_with_path(params)[0]]
        assert any("LSTM" in p for p in paths) == (learner is fce)
    params = jax.jit(fce.init)(jax.random.PRNGKey(1), task)
    grads = jax.jit(jax.grad(lambda p: fce.loss(p, task, None)[0]))(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_matching_net_learns_omniglot_well_above_chance(omniglot28, tmp_path):
    train_chars = jnp.asarray(omniglot28.images[:300, :, :, :, None])  # background characters
    test_chars = jnp.asarray(omniglot28.images[-200:, :, :, :, None])  # evaluation characters
    learner = matching_net(MatchingNet(width=16))
    sample = episode_sampler(5, 1, 5)
    state, _ = train(learner, optax.adam(3e-3), sample, train_chars, steps=100, meta_batch=2,
                     seed=0, out_dir=tmp_path, example_task=sample(jax.random.PRNGKey(0), train_chars),
                     progress=False)
    result = evaluate(learner, state.params, sample, test_chars, episodes=100, seed=1)
    assert result["accuracy"] > 0.6, result  # chance is 0.2
