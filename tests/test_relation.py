"""Relation networks: feature-map and score shapes, the loss formula, and a short real run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import coded_images

from metajax.data.episodes import episode_sampler
from metajax.learners.relation import RelationEmbedding, RelationNet, relation_net
from metajax.training import evaluate, train


def test_embedding_keeps_feature_maps():
    x = jnp.zeros((3, 28, 28, 1))
    params = RelationEmbedding(8).init(jax.random.PRNGKey(0), x)
    assert RelationEmbedding(8).apply(params, x).shape == (3, 5, 5, 8)  # as in the authors' code


@pytest.mark.parametrize("ways,shots,queries", [(3, 2, 4)])
def test_relation_scores_shapes_and_loss(ways, shots, queries):
    images = jnp.asarray(coded_images(classes=8, size=28))
    task = episode_sampler(ways, shots, queries)(jax.random.PRNGKey(0), images)
    learner = relation_net(RelationNet(width=4, hidden=4))
    params = learner.init(jax.random.PRNGKey(1), task)
    scores = learner.predict(params, task, None)
    assert scores.shape == (ways * queries, ways)
    assert float(scores.min()) > 0 and float(scores.max()) < 1
    loss, metrics = learner.loss(params, task, None)
    target = np.eye(ways)[np.asarray(task.query_y)]
    assert float(loss) == pytest.approx(float(np.mean((np.asarray(scores) - target) ** 2)), rel=1e-5)
    assert set(metrics) == {"loss", "accuracy"}


def test_pair_convolution_without_forming_pairs_matches_the_pairs_in_float64():
    # conv([class, query]) = conv(class, K[:C]) + conv(query, K[C:]): the relation module gives the
    # same logits and gradients (parameters and feature maps) as on the paper's concatenated pairs
    import chex

    from metajax.learners.relation import RelationModule

    with jax.enable_x64(True):
        classes, query = (jax.random.normal(jax.random.PRNGKey(i), (n, 5, 5, 6), jnp.float64)
                          for i, n in ((0, 4), (1, 7)))
        fast, pairs = RelationModule(6, 4), RelationModule(6, 4, pairwise=True)
        params = jax.jit(fast.init)(jax.random.PRNGKey(2), classes, query)
        chex.assert_trees_all_equal_structs(params, jax.eval_shape(
            pairs.init, jax.random.PRNGKey(2), classes, query))

        def value_and_grad(module):  # logits and the gradient of a generic function of them
            def f(p, c, q):
                logits = module.apply(p, c, q)
                return jnp.sum(jnp.sin(logits)), logits
            return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(
                params, classes, query)

        (_, logits), grads = value_and_grad(fast)
        (_, reference), reference_grads = value_and_grad(pairs)
        assert logits.shape == (7, 4) and logits.dtype == jnp.float64
        np.testing.assert_allclose(logits, reference, rtol=1e-12)
        chex.assert_trees_all_close(grads, reference_grads, rtol=1e-9, atol=1e-14)


def test_class_feature_map_is_the_sum_over_shots():
    # with two shots, swapping the support order within a class leaves the scores unchanged
    images = jnp.asarray(coded_images(classes=8, size=28))
    task = episode_sampler(3, 2, 2)(jax.random.PRNGKey(0), images)
    learner = relation_net(RelationNet(width=4, hidden=4))
    params = learner.init(jax.random.PRNGKey(1), task)
    order = jnp.array([1, 0, 3, 2, 5, 4])
    swapped = task.replace(support_x=task.support_x[order], support_y=task.support_y[order])
    np.testing.assert_allclose(learner.predict(params, swapped, None),
                               learner.predict(params, task, None), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_relation_net_learns_omniglot_well_above_chance(omniglot28, tmp_path):
    train_chars = jnp.asarray(omniglot28.images[:300, :, :, :, None])  # background characters
    test_chars = jnp.asarray(omniglot28.images[-200:, :, :, :, None])  # evaluation characters
    learner = relation_net(RelationNet(width=16, hidden=8))
    sample = episode_sampler(5, 1, 5)
    state, _ = train(learner, optax.adam(3e-3), sample, train_chars, steps=100, meta_batch=2,
                     seed=0, out_dir=tmp_path, example_task=sample(jax.random.PRNGKey(0), train_chars),
                     progress=False)
    result = evaluate(learner, state.params, sample, test_chars, episodes=100, seed=1)
    assert result["accuracy"] > 0.6, result  # chance is 0.2
