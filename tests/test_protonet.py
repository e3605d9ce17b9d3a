"""Prototypical Networks against their formulas, and above chance after a short real run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.data.episodes import episode_sampler
from metajax.learners.protonet import protonet, prototypes, squared_distances
from metajax.nets import Conv4
from metajax.training import evaluate, train


def test_prototypes_and_distances_match_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0, 2])
    protos = np.stack([z[y == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(prototypes(jnp.asarray(z), jnp.asarray(y), 3), protos, rtol=1e-6)
    q = rng.normal(size=(4, 3)).astype(np.float32)
    d = ((q[:, None, :] - protos[None]) ** 2).sum(-1)
    np.testing.assert_allclose(squared_distances(jnp.asarray(q), jnp.asarray(protos)), d,
                               rtol=1e-5, atol=1e-5)


def test_logits_are_negative_squared_distances(omniglot28):
    images = jnp.asarray(omniglot28.images[:20, :, :, :, None])
    task = episode_sampler(5, 2, 3)(jax.random.PRNGKey(0), images)
    net = Conv4(width=8)
    learner = protonet(net)
    params = learner.init(jax.random.PRNGKey(1), task)
    logits = learner.predict(params, task, None)
    z = net.apply(params, jnp.concatenate([task.support_x, task.query_x]))
    zs, zq = np.asarray(z[:10]), np.asarray(z[10:])
    protos = np.stack([zs[np.asarray(task.support_y) == c].mean(0) for c in range(5)])
    expected = -((zq[:, None] - protos[None]) ** 2).sum(-1)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-3)


def test_protonet_learns_omniglot_well_above_chance(omniglot28, tmp_path):
    train_chars = jnp.asarray(omniglot28.images[:300, :, :, :, None])  # background characters
    test_chars = jnp.asarray(omniglot28.images[-200:, :, :, :, None])  # evaluation characters
    learner = protonet(Conv4(width=16))
    sample = episode_sampler(5, 1, 5)
    example = sample(jax.random.PRNGKey(0), train_chars)
    state, _ = train(learner, optax.adam(3e-3), sample, train_chars, steps=120, meta_batch=2,
                     seed=0, out_dir=tmp_path, example_task=example, progress=False)
    result = evaluate(learner, state.params, sample, test_chars, episodes=100, seed=1)
    assert result["accuracy"] > 0.6, result  # chance is 0.2


def test_meta_batch_gradient_is_the_mean_of_per_task_gradients(omniglot28):
    """The trainer's vmapped meta-gradient (max-pool conv4) equals a Python loop over tasks.

    (Conv biases before batch norm have an exact zero gradient; atol covers their rounding.)
    """
    from metajax.training import meta_gradient

    images = jnp.asarray(omniglot28.images[:40, :, :, :, None])
    sample = episode_sampler(5, 1, 2)
    tasks = jax.vmap(sample, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(0), 3), images)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    learner = protonet(Conv4(width=8))
    params = learner.init(jax.random.PRNGKey(2), sample(jax.random.PRNGKey(3), images))
    batched, _ = jax.jit(lambda p: meta_gradient(learner, p, tasks, keys))(params)
    one_task = jax.jit(jax.grad(lambda p, task, key: learner.loss(p, task, key)[0]))
    per_task = [one_task(params, jax.tree.map(lambda x, i=i: x[i], tasks), keys[i]) for i in range(3)]
    mean = jax.tree.map(lambda *g: sum(g) / 3, *per_task)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), batched, mean)
