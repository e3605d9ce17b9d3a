"""ProtoMAML against its definition written out in float64: ProtoNets' predictions before any inner
step, the loss and meta-gradient of the inner loop through the prototype-initialised layer, the
first-order variant keeping the prototype path; any number of ways; a short real run."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.config import make_config
from metajax.data.episodes import episode_sampler
from metajax.learners import protomaml, protonet
from metajax.nets import Conv4
from metajax.registry import build_learner
from metajax.training import evaluate, train
from metajax.types import Task

LR = 0.3


class Embed(nn.Module):
    """A small embedding without batch norm, so support and query embed independently."""

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(6)(jnp.tanh(nn.Dense(8)(x)))


def _task(ways=3, shots=2, queries=2, seed=0):
    rng = np.random.default_rng(seed)
    sy = np.repeat(np.arange(ways), shots)
    qy = np.repeat(np.arange(ways), queries)
    return Task(rng.normal(size=(ways * shots, 5)), sy, rng.normal(size=(ways * queries, 5)), qy,
                num_classes=ways)


def _loss_by_hand(params, task, steps, first_order=False):
    """Prototypes -> w = 2c, b = -|c|^2 -> `steps` SGD steps on (embedding, layer) -> query loss."""
    embed = lambda p, x: Embed().apply({"params": p}, x)  # noqa: E731

    def xent(p, x, y):
        logits = embed(p["embedding"], x) @ p["head"]["w"] + p["head"]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    z = embed(params, task.support_x)
    c = jnp.stack([z[task.support_y == k].mean(0) for k in range(task.num_classes)])
    p = {"embedding": params, "head": {"w": 2 * c.T, "b": -(c**2).sum(-1)}}
    for _ in range(steps):
        g = jax.grad(xent)(p, task.support_x, task.support_y)
        if first_order:
            g = jax.lax.stop_gradient(g)
        p = jax.tree.map(lambda a, b: a - LR * b, p, g)
    return xent(p, task.query_x, task.query_y)


def _f64(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_before_any_inner_step_the_predictions_are_protonets():
    with jax.enable_x64(True):
        task = _task()
        variables = _f64(protomaml(Embed(), LR, 0).init(jax.random.PRNGKey(0), task))
        ours = protomaml(Embed(), LR, 0).predict(variables, task, None)
        theirs = protonet(Embed()).predict(variables, task, None)
        # the logits differ by |z|^2 per query only
        np.testing.assert_allclose(jax.nn.log_softmax(ours), jax.nn.log_softmax(theirs),
                                   rtol=0, atol=1e-12)
        assert np.ptp(np.asarray(ours - theirs), axis=1).max() < 1e-12
        assert np.ptp(np.asarray(ours - theirs)) > 1e-3


@pytest.mark.parametrize("first_order", [False, True])
def test_loss_and_meta_gradient_match_the_definition(first_order):
    with jax.enable_x64(True):
        task = _task()
        learner = protomaml(Embed(), LR, 2, first_order=first_order)
        params = _f64(learner.init(jax.random.PRNGKey(0), task)["params"])
        loss = lambda p: learner.loss({"params": p}, task, None)[0]  # noqa: E731
        assert float(loss(params)) == pytest.approx(float(_loss_by_hand(params, task, 2)),
                                                    rel=1e-12)
        grads = jax.grad(loss)(params)
        by_hand = {
            order: jax.grad(lambda p, o=order: _loss_by_hand(p, task, 2, o))(params)
            for order in (False, True)
        }
        np.testing.assert_allclose(_flat(grads), _flat(by_hand[first_order]), rtol=1e-9,
                                   atol=1e-14)
        other = _flat(by_hand[not first_order])
        assert np.abs(_flat(grads) - other).max() > 1e-3 * np.abs(other).max()
        # second order: also against central differences of the definition
        if not first_order:
            rng = np.random.default_rng(1)
            d = jax.tree.map(lambda x: rng.normal(size=x.shape), params)
            eps = 1e-6
            shifted = [_loss_by_hand(jax.tree.map(lambda a, b, s=s: a + s * eps * b, params, d),
                                     task, 2) for s in (1, -1)]
            fd = float(shifted[0] - shifted[1]) / (2 * eps)
            assert _flat(grads) @ _flat(d) == pytest.approx(fd, rel=1e-6)


def test_first_order_keeps_the_gradient_through_the_prototypes():
    """With one inner step and first order, the meta-gradient is not the query gradient at the
    adapted weights alone: the layer's starting point depends on the embedding too."""
    with jax.enable_x64(True):
        task = _task()
        learner = protomaml(Embed(), LR, 1, first_order=True)
        params = _f64(learner.init(jax.random.PRNGKey(0), task)["params"])
        grads = jax.grad(lambda p: learner.loss({"params": p}, task, None)[0])(params)
        # the first-order gradient, with the layer's start (the prototypes) held constant as well
        adapted = learner.adapt({"params": params}, task)["params"]
        direct = jax.grad(lambda e: optax.softmax_cross_entropy_with_integer_labels(
            Embed().apply({"params": e}, task.query_x) @ adapted["head"]["kernel"]
            + adapted["head"]["bias"], task.query_y).mean())(adapted["embedding"])
        assert np.abs(_flat(grads) - _flat(direct)).max() > 1e-3 * np.abs(_flat(direct)).max()


def test_any_number_of_ways_and_a_clear_error_for_regression():
    config = make_config("protomaml", width=4, inner_steps=1)
    learner = build_learner(config, ways=20, phase="test")
    rng = np.random.default_rng(0)
    task = Task(rng.uniform(size=(20, 28, 28, 1)), np.arange(20), rng.uniform(size=(40, 28, 28, 1)),
                np.tile(np.arange(20), 2), num_classes=20)
    variables = jax.eval_shape(learner.init, jax.random.PRNGKey(0), task)
    assert jax.eval_shape(learner.predict, variables, task, None).shape == (40, 20)
    with pytest.raises(ValueError, match="N-way episodes"):
        jax.eval_shape(learner.predict, variables, task.replace(num_classes=0), None)


@pytest.mark.slow
def test_protomaml_learns_omniglot_well_above_chance(omniglot28, tmp_path):
    train_chars = jnp.asarray(omniglot28.images[:300, :, :, :, None])  # background characters
    test_chars = jnp.asarray(omniglot28.images[-200:, :, :, :, None])  # evaluation characters
    learner = protomaml(Conv4(width=16, downsample="stride"), inner_lr=0.1, steps=1)
    sample = episode_sampler(5, 1, 5)
    before = evaluate(learner, learner.init(jax.random.PRNGKey(0), sample(
        jax.random.PRNGKey(0), train_chars)), sample, test_chars, episodes=100, seed=1)
    state, _ = train(learner, optax.adam(3e-3), sample, train_chars, steps=100, meta_batch=2,
                     seed=0, out_dir=tmp_path, example_task=sample(jax.random.PRNGKey(0),
                                                                   train_chars), progress=False)
    after = evaluate(learner, state.params, sample, test_chars, episodes=100, seed=1)
    assert after["accuracy"] > 0.6 and after["accuracy"] > before["accuracy"] + 0.1, (before, after)
