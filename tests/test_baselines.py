"""Transfer-learning and multi-task baselines: the cosine head, head fitting, gradual unfreezing,
the supervised samplers, and short real runs above chance."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.config import make_config
from metajax.experiment import train_and_evaluate
from metajax.learners.baselines import (
    _trunk_layers,
    class_batch_sampler,
    cosine_logits,
    finetune,
    fit_head,
)
from metajax.nets import Conv4
from metajax.types import Task


def test_cosine_logits_match_a_hand_computation():
    z = jnp.array([[3.0, 4.0], [1.0, 0.0]])
    w = jnp.array([[0.0, 2.0], [1.0, 0.0]])  # class 0 along y, class 1 along x
    expected = 10.0 * np.array([[0.8, 0.6], [0.0, 1.0]])
    chex.assert_trees_all_close(cosine_logits(z, w), expected, rtol=1e-6)


@pytest.mark.parametrize("cosine", [False, True])
def test_fitted_head_separates_separable_embeddings(cosine):
    key = jax.random.PRNGKey(0)
    centers = 3.0 * jax.random.normal(key, (5, 16))
    labels = jnp.repeat(jnp.arange(5), 4)
    z = centers[labels] + 0.3 * jax.random.normal(jax.random.PRNGKey(1), (20, 16))
    head = fit_head(z, labels, 5, cosine=cosine, steps=100, lr=0.05)
    from metajax.learners.baselines import head_logits

    zq = centers[labels] + 0.3 * jax.random.normal(jax.random.PRNGKey(2), (20, 16))
    assert float(jnp.mean(jnp.argmax(head_logits(head, zq, cosine), -1) == labels)) == 1.0


def test_gradual_unfreezing_leaves_the_later_layers_unchanged():
    net = Conv4(width=8)
    x = jax.random.uniform(jax.random.PRNGKey(0), (10, 28, 28, 1))
    task = Task(x[:5], jnp.arange(5), x[5:], jnp.arange(5), num_classes=5)
    tp = net.init(jax.random.PRNGKey(1), x)
    layers = _trunk_layers(tp)
    assert layers[:3] == ["Conv_0", "BatchNorm_0", "Conv_1"] and len(layers) == 8
    head = {"kernel": 0.1 * jnp.ones((tp["params"]["Conv_3"]["kernel"].shape[-1] * 1, 5)),
            "bias": jnp.zeros(5)}
    # 2 steps over 8 layers: step 0 trains layer 0, step 1 layers 0-4; layers 5-7 stay frozen
    new, _ = finetune(net, tp, head, task, cosine=False, steps=2, lr=1e-2)
    for k, name in enumerate(layers):
        changed = any(not np.allclose(a, b) for a, b in zip(
            jax.tree.leaves(tp["params"][name]), jax.tree.leaves(new["params"][name]), strict=True))
        assert changed == (k <= 4), (name, changed)


def test_class_batch_sampler_labels_and_fixed_tasks():
    images = jnp.arange(12)[:, None, None, None, None] * jnp.ones((12, 3, 2, 2, 1), jnp.uint8)
    batch = jax.jit(class_batch_sampler(64, 12))(jax.random.PRNGKey(0), images)
    # each image's pixel value is its class index
    np.testing.assert_allclose(np.asarray(batch.x[:, 0, 0, 0]) * 255, np.asarray(batch.y), atol=1e-4)
    assert len(set(np.asarray(batch.y).tolist())) > 8
    sample = class_batch_sampler(32, 12, group=4, seed=3)
    groups = {}
    for i in range(20):
        b = sample(jax.random.PRNGKey(i), images)
        assert b.num_classes == 4 and b.num_tasks == 3 and int(b.y.max()) < 4
        classes = np.rint(np.asarray(b.x[:, 0, 0, 0]) * 255).astype(int)
        for y, c in zip(np.asarray(b.y), classes, strict=True):  # a task's label -> one class
            assert groups.setdefault((int(b.task), int(y)), c) == c
    assert len(set(groups.values())) == len(groups)  # fixed tasks partition the classes


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["baseline++", "multitask"])  # finetune: same code, linear head
def test_baselines_learn_omniglot_above_chance(algo, tmp_path, data_dir):
    config = make_config(algo, ways=5, shots=1, steps=60, width=32, batch_size=64,
                         val_every=0, eval_episodes=50, data_dir=str(data_dir))
    summary = train_and_evaluate(config, tmp_path / algo, progress=False)
    print(algo, summary["accuracy"])
    assert summary["accuracy"] > 0.3, summary["accuracy"]  # chance 0.2
