"""MAML and relatives from the registry: each name builds its own learner (checked against its
formula by hand in float64); MAML beats chance on Omniglot."""

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
from metajax.types import Task

STEPS = 2  # inner steps of the learners built below
NET = Conv4(width=4, num_outputs=3, downsample="stride")  # the registry's network for the config


def _tasks(n=2, ways=3, size=8):
    """`n` random 3-way 1-shot tasks of 8x8 images, one query per class, float64 numpy."""
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(ways), (n, 1))
    images = lambda: rng.uniform(size=(n, ways, size, size, 1))  # noqa: E731
    return Task(images(), labels, images(), labels, num_classes=ways)


def _each_task(fn, tasks):
    return [fn(jax.tree.map(lambda a, i=i: a[i], tasks)) for i in range(len(tasks.support_y))]


def _numpy(tree):
    return jax.tree.map(np.asarray, tree)


def _mean(trees):
    return jax.tree.map(lambda *xs: sum(xs) / len(xs), *map(_numpy, trees))


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def _xent(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(NET.apply({"params": params}, x),
                                                           y).mean()


@jax.jit
def _sgd_by_hand(params, rates, task):
    """MAML's inner loop written out: STEPS steps of `params - rates * grad` on the support loss
    (`rates` per parameter, 0 leaves one alone). Returns the query loss at the adapted parameters
    and its gradient there, the adaptation held constant (first-order MAML's meta-gradient)."""
    for _ in range(STEPS):
        grads = jax.grad(_xent)(params, task.support_x, task.support_y)
        params = jax.tree.map(lambda p, r, g: p - r * g, params, rates, grads)
    return jax.value_and_grad(_xent)(params, task.query_x, task.query_y)


@jax.jit
def _adam_by_hand(params, lr, task):
    """Reptile's inner loop written out: STEPS full-batch Adam steps (b1=0, b2=0.999, eps 1e-8)
    from a fresh state on support + query; returns the adapted parameters."""
    x = jnp.concatenate([task.support_x, task.query_x])
    y = jnp.concatenate([task.support_y, task.query_y])
    nu = jax.tree.map(jnp.zeros_like, params)
    for t in range(1, STEPS + 1):
        grads = jax.grad(_xent)(params, x, y)
        nu = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, nu, grads)
        correction = 1 - 0.999**t
        params = jax.tree.map(lambda p, v, g, c=correction: p - lr * g / (jnp.sqrt(v / c) + 1e-8),
                              params, nu, grads)
    return params


def _second_order_along(params, rates, direction, tasks, eps=1e-7):
    """The mean query loss after `_sgd_by_hand`, differentiated along `direction` (a pair: of
    `params` and of `rates`) by central finite differences: the second-order meta-gradient
    projected on it. (This tiny batch-normed net is very curved: a larger `eps` is inexact.)"""
    def loss(s):
        p, r = (jax.tree.map(lambda a, d: a + s * d, t, dt)
                for t, dt in zip((params, rates), direction, strict=True))
        return np.mean([float(v) for v, _ in _each_task(lambda t: _sgd_by_hand(p, r, t), tasks)])

    return (loss(eps) - loss(-eps)) / (2 * eps)


def _outer_update(config, grads, params):
    """The update the run's outer optimiser (`make_optimizer`) makes from a fresh state."""
    optimizer = make_optimizer(config)
    return _numpy(jax.jit(lambda g, p: optimizer.update(g, optimizer.init(p), p)[0])(grads,
                                                                                     params))


def _check_reptile(config, params, grads, tasks):
    adapted = _mean(_each_task(lambda t: _adam_by_hand(params, config.inner_lr, t), tasks))
    # the pseudo-gradient is params - adapted, averaged over the tasks ...
    np.testing.assert_allclose(_flat(grads), _flat(params) - _flat(adapted), rtol=1e-7, atol=1e-9)
    # ... so that the outer SGD moves params towards the adapted ones by the meta step (1 at first)
    assert config.lr == 1.0
    np.testing.assert_allclose(_flat(_outer_update(config, grads, params)),
                               _flat(adapted) - _flat(params), rtol=1e-7, atol=1e-9)


def _check_metasgd(config, params, grads, tasks, rng):
    init, rates = params["init"], params["lr"]
    direction = (jax.tree.map(lambda x: rng.normal(size=x.shape), init),
                 jax.tree.map(lambda x: rng.normal(size=x.shape), rates))
    # second order, through per-parameter rates that are meta-learned themselves ...
    along = _flat(grads) @ np.concatenate([_flat(d) for d in direction])
    assert along == pytest.approx(_second_order_along(init, rates, direction, tasks), rel=1e-6)
    assert all(np.any(g != 0) for g in jax.tree.leaves(grads["lr"]))
    # ... and the outer optimiser moves every rate
    assert all(np.any(u != 0) for u in jax.tree.leaves(_outer_update(config, grads, params)["lr"]))


def _check_maml_family(algo, learner, params, grads, tasks, rng, inner_lr):
    """MAML (second order, every parameter adapted), FOMAML (first order) and ANIL (second order,
    the head adapted only) differ in their meta-gradients: each matches its own formula only."""
    everywhere = jax.tree.map(lambda x: np.full_like(x, inner_lr), params)
    head_only = {k: v if k == "Dense_0" else jax.tree.map(np.zeros_like, v)
                 for k, v in everywhere.items()}
    direction = jax.tree.map(lambda x: rng.normal(size=x.shape), params)
    zero = jax.tree.map(np.zeros_like, params)
    first_order = _mean([g for _, g in _each_task(lambda t: _sgd_by_hand(params, everywhere, t),
                                                  tasks)])
    formulas = {  # each algorithm's meta-gradient projected on `direction`
        "maml": _second_order_along(params, everywhere, (direction, zero), tasks),
        "fomaml": _flat(first_order) @ _flat(direction),
        "anil": _second_order_along(params, head_only, (direction, zero), tasks),
    }
    along = _flat(grads) @ _flat(direction)
    for name, value in formulas.items():
        if name == algo:
            assert along == pytest.approx(value, rel=1e-6), (name, formulas)
        else:
            assert along != pytest.approx(value, rel=0.05), (name, formulas)
    if algo == "fomaml":  # the gradient of the query loss at the adapted parameters, exactly
        np.testing.assert_allclose(_flat(grads), _flat(first_order), rtol=1e-9, atol=1e-14)
    if algo == "anil":  # the inner loop adapts the head only; the body is still meta-learned
        first_task = jax.tree.map(lambda a: a[0], tasks)
        adapted = _numpy(jax.jit(learner.adapt)({"params": params}, first_task))
        body = lambda tree: {k: v for k, v in tree.items() if k != "Dense_0"}  # noqa: E731
        np.testing.assert_array_equal(_flat(body(adapted["params"])), _flat(body(params)))
        assert not np.allclose(adapted["params"]["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
        assert all(np.any(g != 0) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("algo", ["maml", "fomaml", "metasgd", "anil", "reptile"])
def test_the_registry_builds_each_gradient_learner(algo):
    # each name builds its own learner: its meta-gradient matches that algorithm's formula
    # written out by hand (float64, tight) and not its neighbours'
    config = make_config(algo, ways=3, shots=1, train_shots=1, queries=1, width=4,
                         meta_batch=2, inner_steps=STEPS, test_inner_steps=3)
    assert config.split == "maml" and config.downsample == "stride"
    with jax.enable_x64(True):
        tasks = _tasks()
        first_task = jax.tree.map(lambda a: a[0], tasks)
        learner = build_learner(config, phase="train")
        params = jax.tree.map(lambda x: np.asarray(x, np.float64),
                              jax.jit(learner.init)(jax.random.PRNGKey(1), first_task))
        rng = np.random.default_rng(2)
        if algo == "metasgd":  # per-parameter rates, different everywhere
            params["params"]["lr"] = jax.tree.map(lambda x: rng.uniform(0.1, 0.5, x.shape),
                                                  params["params"]["lr"])
        grads, _ = jax.jit(lambda p, ts: meta_gradient(
            learner, p, ts, jax.random.split(jax.random.PRNGKey(3), 2), config.task_map))(
            params, tasks)
        # the evaluated learner (more inner steps) takes the same parameters
        jax.eval_shape(build_learner(config, phase="test").loss, params, first_task, None)
        params, grads = params["params"], _numpy(grads["params"])
        if algo == "reptile":
            _check_reptile(config, params, grads, tasks)
        elif algo == "metasgd":
            _check_metasgd(config, params, grads, tasks, rng)
        else:
            _check_maml_family(algo, learner, params, grads, tasks, rng, config.inner_lr)


def test_full_protocol_settings():
    five = make_config("maml", full_protocol=True)
    assert (five.inner_lr, five.inner_steps, five.test_inner_steps, five.meta_batch,
            five.steps, five.queries_) == (0.4, 1, 3, 32, 60000, 1)
    twenty = make_config("maml", full_protocol=True, ways=20)
    assert (twenty.inner_lr, twenty.inner_steps, twenty.meta_batch) == (0.1, 5, 16)
    with pytest.raises(ValueError, match="sinusoid"):
        make_config("pretrained")


@pytest.mark.slow
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
