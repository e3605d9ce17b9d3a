"""MAML and relatives from the registry: each trains a few steps; MAML beats chance on Omniglot."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.config import make_config
from metajax.data.episodes import episode_sampler
from metajax.experiment import make_optimizer
from metajax.learners.maml import maml
from metajax.nets import Conv4
from metajax.registry import build_learner
from metajax.training import evaluate, meta_gradient, train


@pytest.mark.parametrize("algo", ["maml", "fomaml", "metasgd", "anil", "reptile"])
def test_every_gradient_learner_gives_finite_meta_gradients_from_the_registry(algo):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 255, (12, 20, 8, 8, 1), dtype=np.uint8))
    config = make_config(algo, ways=3, shots=1, width=4, steps=2, meta_batch=2, test_queries=2,
                         inner_steps=2, test_inner_steps=3)
    assert config.split == "maml" and config.downsample == "stride"
    sample = episode_sampler(config.train_ways_, config.train_shots_, config.queries_)
    tasks = jax.vmap(sample, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(0), 2),
                                                images)
    learner = build_learner(config, phase="train")
    params = learner.init(jax.random.PRNGKey(1), jax.tree.map(lambda x: x[0], tasks))
    grads, metrics = jax.jit(lambda p, ts, ln=learner, c=config: meta_gradient(
        ln, p, ts, jax.random.split(jax.random.PRNGKey(2), 2), c.task_map))(params, tasks)
    make_optimizer(config).init(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads)), algo
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0, (algo, metrics)
    test_task = episode_sampler(3, 1, 2)(jax.random.PRNGKey(3), images)
    loss, _ = jax.jit(build_learner(config, phase="test").loss)(params, test_task, None)
    assert np.isfinite(float(loss)), algo


def test_full_protocol_settings():
    five = make_config("maml", full_protocol=True)
    assert (five.inner_lr, five.inner_steps, five.test_inner_steps, five.meta_batch,
            five.steps, five.queries_) == (0.4, 1, 3, 32, 60000, 1)
    twenty = make_config("maml", full_protocol=True, ways=20)
    assert (twenty.inner_lr, twenty.inner_steps, twenty.meta_batch) == (0.1, 5, 16)
    with pytest.raises(ValueError, match="sinusoid"):
        make_config("pretrained")


def test_maml_learns_omniglot_well_above_chance(omniglot28, tmp_path):
    train_chars = jnp.asarray(omniglot28.images[:300, :, :, :, None])  # background characters
    test_chars = jnp.asarray(omniglot28.images[-200:, :, :, :, None])  # evaluation characters
    net = Conv4(width=16, num_outputs=5, downsample="stride")
    sample = episode_sampler(5, 1, 1)  # MAML's protocol: K queries per class at training
    example = sample(jax.random.PRNGKey(0), train_chars)
    state, _ = train(maml(net, inner_lr=0.4, steps=1), optax.adam(3e-3), sample, train_chars,
                     steps=100, meta_batch=4, seed=0, out_dir=tmp_path, example_task=example,
                     progress=False, task_map="map")
    result = evaluate(maml(net, inner_lr=0.4, steps=3), state.params, episode_sampler(5, 1, 5),
                      test_chars, episodes=100, seed=1, task_map="map")
    assert result["accuracy"] > 0.45, result  # chance is 0.2
