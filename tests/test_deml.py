"""DEML: the external-class check, the joint loss's gradients, the sampler, a tiny real run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import coded_images

from metajax.config import make_config
from metajax.data.episodes import episode_sampler
from metajax.learners.classification import cross_entropy
from metajax.learners.deml import ConceptBatch, check_external_classes, concept_sampler, deml
from metajax.nets import ConceptResNet
from metajax.registry import TRAIN_SAMPLERS, build_learner
from metajax.training import evaluate, train


def test_external_class_check_rejects_any_test_character():
    train = ["A/character01/rot000", "A/character01/rot090", "B/character02/rot000"]
    test = ["C/character05/rot000", "C/character05/rot180"]
    assert check_external_classes(train, test) == {"external_classes": 3, "test_classes": 2,
                                                   "overlap": 0}
    # another rotation of a test character is still that character
    with pytest.raises(ValueError, match="1 meta-test.*C/character05"):
        check_external_classes([*train, "C/character05/rot270"], test)
    with pytest.raises(ValueError, match="2 meta-test"):
        check_external_classes(["n01", "n02", "n03"], ["n02", "n03", "n04"])  # plain class names


def test_concept_sampler_draws_a_task_and_labelled_external_examples():
    images = coded_images(classes=12, drawings=20, size=4)
    sample = concept_sampler(3, 2, 1, external_per_task=50, images_shape=images.shape)
    batch = jax.jit(sample)(jax.random.PRNGKey(0), jnp.asarray(images))
    assert isinstance(batch, ConceptBatch) and batch.num_external == 12
    assert batch.task.support_x.shape == (6, 4, 4, 1) and batch.task.query_x.shape == (3, 4, 4, 1)
    assert batch.external_x.shape == (50, 4, 4, 1)
    # the label of an external example is the class its pixels encode
    np.testing.assert_array_equal(np.round(np.asarray(batch.external_x[:, 0, 0, 0]) * 255),
                                  np.asarray(batch.external_y))
    assert len(set(np.asarray(batch.external_y).tolist())) > 5  # many classes, not one
    with pytest.raises(ValueError, match="only 12 classes"):
        concept_sampler(13, 1, 1, 4, images.shape)


def _tiny_problem():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 255, (7, 6, 8, 8, 1), dtype=np.uint8))
    batch = concept_sampler(3, 1, 2, external_per_task=6)(jax.random.PRNGKey(0), images)
    generator = ConceptResNet(width=4, stages=1, blocks=1)
    return generator, batch


def test_joint_loss_gradient_reaches_the_generator_from_both_terms():
    generator, batch = _tiny_problem()
    lam = 0.7
    learners = {w: deml(generator, 3, inner_lr=0.4, steps=1, concept_weight=w) for w in (0.0, lam)}
    params = learners[lam].init(jax.random.PRNGKey(1), batch)["params"]

    def grad(weight):
        return jax.jit(jax.grad(lambda p: learners[weight].loss({"params": p}, batch, None)[0]))(
            params)

    def disc_loss(p):
        concepts = generator.apply({"params": p["generator"]}, batch.external_x)
        logits = concepts @ p["discriminator"]["kernel"] + p["discriminator"]["bias"]
        return cross_entropy(logits, batch.external_y)[0]

    g0, g_lam, g_disc = grad(0.0), grad(lam), jax.jit(jax.grad(disc_loss))(params)
    # lambda = 0: the meta loss alone trains the generator and the learner, not the discriminator
    # (conv kernels; a conv bias before batch norm has no effect, hence zero gradient)
    generator_params = g0["generator"]
    assert float(jnp.abs(generator_params["Conv_0"]["kernel"]).max()) > 1e-6
    assert float(jnp.abs(generator_params["ResidualBlock_0"]["Conv_1"]["kernel"]).max()) > 1e-6
    assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g0["learner"]))
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g0["discriminator"]))
    # lambda > 0 adds exactly lambda * grad(L_discrimination) to the generator and discriminator
    for part in ("generator", "discriminator"):
        jax.tree.map(lambda a, b, d: np.testing.assert_allclose(a - b, lam * d, rtol=1e-4,
                                                                atol=1e-6),
                     g_lam[part], g0[part], g_disc[part])
    # ... and nothing to the learner, which the discrimination loss does not read
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 g_lam["learner"], g0["learner"])
    # the discrimination term is non-trivial for the generator
    assert float(jnp.abs(g_disc["generator"]["Conv_0"]["kernel"]).max()) > 1e-6


def test_metasgd_learns_its_rates_and_maml_has_none():
    generator, batch = _tiny_problem()
    params = deml(generator, 3, meta_learner="maml").init(jax.random.PRNGKey(0), batch)
    assert set(params["params"]["learner"]) == {"init"}
    learner = deml(generator, 3, inner_lr=0.3, meta_learner="metasgd")
    params = learner.init(jax.random.PRNGKey(0), batch)
    np.testing.assert_allclose(params["params"]["learner"]["lr"]["kernel"], 0.3)
    g = jax.jit(jax.grad(lambda p: learner.loss(p, batch, None)[0]))(params)
    # the rates are meta-learned
    assert float(jnp.abs(g["params"]["learner"]["lr"]["kernel"]).max()) > 0
    assert params["params"]["discriminator"]["kernel"].shape == (generator.concept_dim, 7)
    with pytest.raises(ValueError, match="meta_learner"):
        deml(generator, 3, meta_learner="reptile")


def test_registry_builds_deml_and_its_sampler_from_the_config():
    config = make_config("deml", ways=5, width=4, concept_stages=1, meta_batch=4,
                         external_batch=16)
    assert (config.concept_weight, config.meta_learner, config.split) == (1.0, "metasgd", "maml")
    sample = TRAIN_SAMPLERS["deml"](config, (30, 20, 8, 8, 1), "train")
    batch = sample(jax.random.PRNGKey(0), jnp.zeros((30, 20, 8, 8, 1), jnp.uint8))
    assert batch.external_x.shape[0] == 4 and batch.num_external == 30
    with pytest.raises(ValueError, match="multiple of meta_batch"):
        TRAIN_SAMPLERS["deml"](make_config("deml", meta_batch=3, external_batch=16), (30, 20), "t")
    with pytest.raises(ValueError, match="--ways 5"):
        build_learner(config, ways=20, phase="test")


@pytest.mark.slow
def test_deml_learns_omniglot_well_above_chance(omniglot28, tmp_path):
    train_chars = jnp.asarray(omniglot28.images[:300, :, :, :, None])  # background characters
    test_chars = jnp.asarray(omniglot28.images[-200:, :, :, :, None])  # evaluation characters
    check_external_classes([str(i) for i in range(300)], [str(i) for i in range(1423, 1623)])
    learner = deml(ConceptResNet(width=16, stages=3), 5, inner_lr=0.4, steps=1,
                   concept_weight=1.0)
    sample = concept_sampler(5, 1, 3, external_per_task=16)
    state, _ = train(learner, optax.adam(3e-3), sample, train_chars, steps=100, meta_batch=2,
                     seed=0, out_dir=tmp_path, example_task=sample(jax.random.PRNGKey(0),
                                                                   train_chars),
                     progress=False)
    result = evaluate(learner, state.params, episode_sampler(5, 1, 5), test_chars, episodes=100,
                      seed=1)
    # chance is 0.2; 100 steps give about 0.44 (CI +-0.016)
    assert result["accuracy"] > 0.35, result
