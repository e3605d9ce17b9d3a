"""Bring your own model: stock Flax modules (Flax's `train` argument, `nn.BatchNorm` with running
averages, `nn.Dropout`) in every learner, the adapted variables handed back, keys reaching the
module, and the trainer carrying the non-`params` collections."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax
from metajax.learners import (
    MatchingNet,
    SiameseNet,
    anil,
    episode_blackbox,
    fomaml,
    maml,
    matching_net,
    metasgd,
    protonet,
    relation_net,
    reptile,
    siamese,
)
from metajax.training import init_state, make_train_step, meta_gradient
from metajax.training.trainer import meta_step_parts
from metajax.types import Task


class Net(nn.Module):
    """The user's network of the issue: conv, batch norm with running averages, dropout, head."""

    rate: float = 0.0
    outputs: int = 5

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.Dropout(self.rate, deterministic=not train)(x)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.outputs)(x)


class BlackBox(nn.Module):
    """A user's black-box network: mean support embedding per class, concatenated to the query."""

    num_classes: int = 5
    rate: float = 0.5

    @nn.compact
    def __call__(self, support_x, support_y, query_x, train: bool = True):
        embed = nn.Sequential([lambda x: x.reshape((x.shape[0], -1)), nn.Dense(8)])
        s, q = embed(support_x), embed(query_x)
        s = nn.BatchNorm(use_running_average=not train)(s)
        means = jax.nn.one_hot(support_y, self.num_classes).T @ s
        q = nn.Dropout(self.rate, deterministic=not train)(q)
        return q @ means.T


class Relation(nn.Module):
    """A user's relation network: `(support_x, support_y, query_x, N) -> [Q, N]` in [0, 1]."""

    rate: float = 0.5

    @nn.compact
    def __call__(self, support_x, support_y, query_x, num_classes, train: bool = True):
        z = Net(self.rate, outputs=8)(jnp.concatenate([support_x, query_x]), train)
        s, q = z[: support_x.shape[0]], z[support_x.shape[0]:]
        classes = jax.nn.one_hot(support_y, num_classes).T @ s
        return nn.sigmoid(nn.Dense(1)(jnp.abs(q[:, None] - classes[None]))[..., 0])


def _task(seed, ways=5, shots=1, queries=2, size=6, dtype=np.float32):
    rng = np.random.default_rng(seed)
    support_y = np.repeat(np.arange(ways), shots)
    query_y = np.repeat(np.arange(ways), queries)
    return Task(jnp.asarray(rng.normal(size=(ways * shots, size, size, 1)).astype(dtype)),
                jnp.asarray(support_y),
                jnp.asarray(rng.normal(size=(ways * queries, size, size, 1)).astype(dtype)),
                jnp.asarray(query_y), ways)


def _tasks(n, **kw):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *[_task(i, **kw) for i in range(n)])


def _differ(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return any(not np.allclose(x, y) for x, y in pairs)


KEY, OTHER = jax.random.PRNGKey(0), jax.random.PRNGKey(1)


def test_the_issue_contract_for_maml():
    task = _task(0)
    learner = metajax.learners.maml(Net(), inner_lr=0.3, steps=1)
    v = learner.init(KEY, task)
    assert set(v) == {"params", "batch_stats"}
    assert np.isfinite(learner.loss(v, task, KEY)[0])

    def support_ce(p):
        out, _ = Net().apply({"params": p, "batch_stats": v["batch_stats"]}, task.support_x,
                             train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(out, task.support_y).mean()

    expected = jax.tree.map(lambda p, g: p - 0.3 * g, v["params"],
                            jax.grad(support_ce)(v["params"]))
    adapted = learner.adapt(v, task, KEY)
    assert jax.tree.structure(adapted) == jax.tree.structure(v)
    for a, e in zip(jax.tree.leaves(adapted["params"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)

    def meta_grad(lrn):
        return jax.grad(lambda p: lrn.loss({**v, "params": p}, task, KEY)[0])(v["params"])

    first = maml(Net(), inner_lr=0.3, steps=1, first_order=True)
    assert _differ(meta_grad(learner), meta_grad(first))

    dropout = maml(Net(rate=0.5), inner_lr=0.3, steps=1)
    vd = dropout.init(KEY, task)
    assert dropout.loss(vd, task, KEY)[0] == dropout.loss(vd, task, KEY)[0]
    assert dropout.loss(vd, task, KEY)[0] != dropout.loss(vd, task, OTHER)[0]

    tasks, keys = _tasks(3), jax.random.split(KEY, 3)
    grads = jax.jit(jax.grad(lambda v: jax.vmap(lambda t, k: dropout.loss(v, t, k)[0])(
        tasks, keys).mean()))(vd)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_the_issue_contract_for_protonet():
    task = _task(1)
    learner = protonet(Net(rate=0.5, outputs=16))
    v = learner.init(KEY, task)
    assert set(v) == {"params", "batch_stats"}
    assert np.isfinite(learner.loss(v, task, KEY)[0])
    assert learner.loss(v, task, KEY)[0] == learner.loss(v, task, KEY)[0]
    assert learner.loss(v, task, KEY)[0] != learner.loss(v, task, OTHER)[0]
    fitted = learner.adapt(v, task, KEY)
    assert fitted["prototypes"].shape == (5, 16) and fitted["query"].shape == (10, 16)
    np.testing.assert_allclose(
        learner.predict(v, task, KEY),
        -metajax.learners.squared_distances(fitted["query"], fitted["prototypes"]), rtol=1e-5)
    tasks, keys = _tasks(3), jax.random.split(KEY, 3)
    grads = jax.jit(jax.grad(lambda v: jax.vmap(lambda t, k: learner.loss(v, t, k)[0])(
        tasks, keys).mean()))(v)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


class Mlp(nn.Module):
    """Dense, batch norm (batch statistics in training mode), tanh, dense: for float64 checks."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(6, param_dtype=jnp.float64)(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not train, param_dtype=jnp.float64)(x)
        return nn.Dense(3, param_dtype=jnp.float64)(jnp.tanh(x))


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_through_batch_statistics_matches_finite_differences(first_order):
    with jax.enable_x64(True):
        task = _task(2, ways=3, shots=2, queries=3, size=3, dtype=np.float64)
        learner = maml(Mlp(), inner_lr=0.5, steps=2, first_order=first_order)
        v = jax.tree.map(lambda x: x.astype(jnp.float64), learner.init(KEY, task))
        loss = jax.jit(lambda p: learner.loss({**v, "params": p}, task, KEY)[0])
        grad = jax.grad(loss)(v["params"])
        if first_order:
            # FOMAML: the query gradient at the adapted parameters
            adapted = learner.adapt(v, task, KEY)
            expected = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
                Mlp().apply({**v, "params": p}, task.query_x, train=True,
                            mutable=["batch_stats"])[0], task.query_y).mean())(adapted["params"])
            for g, e in zip(jax.tree.leaves(grad), jax.tree.leaves(expected), strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
            return
        flat, unflatten = jax.flatten_util.ravel_pytree(v["params"])
        g = jax.flatten_util.ravel_pytree(grad)[0]
        rng = np.random.default_rng(0)
        for _ in range(4):
            d = rng.normal(size=flat.shape)
            eps = 1e-6
            fd = (loss(unflatten(flat + eps * d)) - loss(unflatten(flat - eps * d))) / (2 * eps)
            np.testing.assert_allclose(float(g @ d), float(fd), rtol=1e-6)


def test_running_averages_are_carried_and_used_at_meta_test():
    task = _task(3)
    train_learner = maml(Net(), inner_lr=0.3, steps=2)
    v = train_learner.init(KEY, task)
    adapted = train_learner.adapt(v, task, KEY)
    # two inner steps on the support set, each moving the running mean (momentum 0.99)
    assert _differ(adapted["batch_stats"], v["batch_stats"])
    _, (_, state) = train_learner.loss_and_state(v, task, KEY)
    assert _differ(state["batch_stats"], adapted["batch_stats"])  # the query pass too

    test_learner = maml(Net(), inner_lr=0.3, steps=2, running_average=True)
    expected = Net().apply(adapted, task.query_x, train=False)
    np.testing.assert_allclose(test_learner.predict(v, task, KEY), expected, rtol=1e-5,
                               atol=1e-6)
    transductive = Net().apply(adapted, task.query_x, train=True, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(train_learner.predict(v, task, KEY), transductive, rtol=1e-5,
                               atol=1e-6)


def test_trainer_updates_params_only_and_keeps_the_mean_of_the_tasks_running_averages():
    learner = maml(Net(rate=0.5), inner_lr=0.3, steps=1)
    tasks = _tasks(4)
    optimizer = optax.adam(1e-2)
    state = init_state(learner, optimizer, KEY, jax.tree.map(lambda x: x[0], tasks))
    # the optimiser's state covers `params` only
    assert jax.tree.structure(state.opt_state[0].mu) == jax.tree.structure(
        {"params": state.params["params"]})
    step = make_train_step(learner, optimizer, lambda k, data: jax.tree.map(
        lambda x: x[jax.random.randint(k, (), 0, 4)], data), meta_batch=4, seed=0)
    before = jax.tree.map(np.array, state)
    new, metrics = step(state, tasks)  # the step donates `state`
    state = before
    assert np.isfinite(metrics["loss"])
    assert _differ(new.params["params"], state.params["params"])
    assert _differ(new.params["batch_stats"], state.params["batch_stats"])

    # the collections kept are the mean over tasks of those each task's forward passes returned
    keys = jax.random.split(OTHER, 4)
    _, _, _, kept = meta_step_parts(learner, state.params, tasks, keys, "map")
    per_task = jax.vmap(lambda t, k: learner.loss_and_state(state.params, t, k)[1][1])(tasks,
                                                                                      keys)
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(per_task), strict=True):
        np.testing.assert_allclose(a, b.mean(axis=0), rtol=1e-5, atol=1e-7)
        assert not np.allclose(b[0], b[1])  # tasks differ, so the mean is not any one of them


# fomaml, metasgd and anil take the module through MAML's code; they run in the long tier
@pytest.mark.parametrize("name", ["maml", *[pytest.param(n, marks=pytest.mark.slow)
                                            for n in ("fomaml", "metasgd", "anil")],
                                  "reptile", "protonet", "matching", "siamese", "relation",
                                  "blackbox"])
def test_every_learner_takes_a_stock_flax_module(name):
    task = _task(4)
    build = {
        "maml": lambda: maml(Net(0.5), 0.3, 1),
        "fomaml": lambda: fomaml(Net(0.5), 0.3, 1),
        "metasgd": lambda: metasgd(Net(0.5), 0.3, 1),
        "anil": lambda: anil(Net(0.5), 0.3, 1),
        "reptile": lambda: reptile(Net(0.5), 1e-3, 2, inner_batch=5, keep_inner_state=False),
        "protonet": lambda: protonet(Net(0.5, outputs=8)),
        "matching": lambda: matching_net(MatchingNet(embedding=Net(0.5, outputs=8))),
        "siamese": lambda: siamese(SiameseNet(Net(0.5, outputs=8))),
        "relation": lambda: relation_net(Relation()),
        "blackbox": lambda: episode_blackbox(BlackBox()),
    }[name]
    learner = build()
    v = learner.init(KEY, task)
    leaves = jax.tree_util.tree_flatten_with_path(v)[0]
    assert any("batch_stats" in jax.tree_util.keystr(path) for path, _ in leaves)
    value = learner.loss(v, task, KEY)[0]
    assert np.isfinite(value)
    assert value == learner.loss(v, task, KEY)[0]
    assert value != learner.loss(v, task, OTHER)[0]  # dropout reached the module
    grads, metrics = jax.jit(lambda v: meta_gradient(learner, v, _tasks(2),
                                                     jax.random.split(KEY, 2)))(v)
    assert set(grads) == {"params"}  # gradients of `params` only; batch_stats is state
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    if learner.adapt is not None:
        learner.adapt(v, task, KEY)


def _save_checkpoint(run_dir, step, state) -> None:
    """`state` saved as the trainer's checkpoint `step` of `run_dir`."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute(),
                                    options=ocp.CheckpointManagerOptions(create=True))
    manager.save(step, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    manager.close()


def test_metasgd_runs_saved_in_the_earlier_layout_restore(tmp_path):
    from metajax.training import TrainState, restore_state

    task = _task(5)
    learner = metasgd(Net(), 0.3, 1)
    optimizer = optax.adam(1e-3)
    state = init_state(learner, optimizer, KEY, task)
    # metajax's own nets have no state collection; make this one stateless by dropping it
    params = {"params": state.params["params"]}
    state = TrainState(state.step, params, optimizer.init(params))
    legacy = {"init": {"params": params["params"]["init"]},
              "lr": {"params": params["params"]["lr"]}}
    saved = TrainState(state.step + 7, legacy, optimizer.init(legacy))
    _save_checkpoint(tmp_path, 7, saved)
    restored = restore_state(tmp_path, state)
    assert int(restored.step) == 7
    np.testing.assert_array_equal(restored.params["params"]["lr"]["Dense_0"]["kernel"],
                                  legacy["lr"]["params"]["Dense_0"]["kernel"])
    np.testing.assert_array_equal(restored.params["params"]["init"]["Conv_0"]["kernel"],
                                  legacy["init"]["params"]["Conv_0"]["kernel"])


def test_public_surface():
    for name in metajax.__all__:
        assert hasattr(metajax, name), name
    for name in ("maml", "protonet", "Task", "train", "evaluate", "episode_sampler"):
        assert name in metajax.__all__
    for name in metajax.data.__all__:
        assert hasattr(metajax.data, name), name


class Cell(nn.Module):
    """A user's sequence cell: `(state, (x, prev_label), train) -> (state, logits)`, with dropout
    and batch norm over the step's single example's features."""

    outputs: int = 5

    def initial_state(self):
        return jnp.zeros((8,))

    @nn.compact
    def __call__(self, state, inputs, train: bool = True):
        x, prev = inputs
        h = nn.Dense(8)(jnp.concatenate([x.reshape(-1), prev]))[None]
        h = nn.BatchNorm(use_running_average=not train)(jnp.concatenate([h, state[None]]))[0]
        h = nn.Dropout(0.5, deterministic=not train)(jnp.tanh(h))
        return h, nn.Dense(self.outputs)(h)


def test_sequence_baseline_and_deml_learners_take_stock_flax_modules():
    from metajax.data.sequences import sample_sequence
    from metajax.learners import ConceptBatch, deml, finetune_learner, pretrain_learner
    from metajax.learners.baselines import ClassBatch
    from metajax.learners.blackbox import sequence_learner

    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 255, (12, 4, 6, 6, 1), dtype=np.uint8))
    episode = sample_sequence(KEY, images, 3, 2)
    learner = sequence_learner(Cell(outputs=3))
    task = _task(6)
    batch = ClassBatch(task.support_x, task.support_y, jnp.zeros((), jnp.int32), 5, 1)
    concept = ConceptBatch(task, task.query_x, task.query_y % 3, 3)
    trunk = Net(0.5, outputs=8)
    cases = [(learner, episode), (pretrain_learner(trunk=trunk), batch),
             (deml(Net(0.5, outputs=8), 5, 0.3, 1), concept)]
    for learner, inputs in cases:
        v = learner.init(KEY, inputs)
        leaves = jax.tree_util.tree_flatten_with_path(v)[0]
        assert any("batch_stats" in jax.tree_util.keystr(path) for path, _ in leaves)
        value = learner.loss(v, inputs, KEY)[0]
        assert np.isfinite(value) and value == learner.loss(v, inputs, KEY)[0]
        assert value != learner.loss(v, inputs, OTHER)[0]  # dropout reached the module
        value, (_, state) = learner.loss_and_state(v, inputs, KEY)
        assert _differ(state, {k: t for k, t in v.items() if k != "params"})
    # the test phase of the baselines embeds with the pre-trained trunk of the user's module
    pre = pretrain_learner(trunk=trunk).init(KEY, batch)
    tuned = finetune_learner(trunk=trunk, head_steps=5, finetune_steps=2)
    trunk_vars, head = tuned.adapt(pre, task, KEY)
    assert set(trunk_vars) == {"params", "batch_stats"} and head["kernel"].shape == (8, 5)
    assert np.isfinite(tuned.loss(pre, task, KEY)[0])


def test_deml_runs_saved_in_the_earlier_layout_restore(tmp_path):
    from metajax.learners import ConceptBatch, deml
    from metajax.nets import ConceptResNet
    from metajax.training import TrainState, restore_state

    task = _task(7)
    learner = deml(ConceptResNet(width=4, stages=1, blocks=1), 5, 0.3, 1)
    optimizer = optax.adam(1e-3)
    state = init_state(learner, optimizer, KEY, ConceptBatch(task, task.query_x, task.query_y, 5))
    p = state.params["params"]
    legacy = {"generator": {"params": p["generator"]}, "discriminator": p["discriminator"],
              "learner": p["learner"]}
    saved = TrainState(state.step + 3, legacy, optimizer.init(legacy))
    _save_checkpoint(tmp_path, 3, saved)
    restored = restore_state(tmp_path, state)
    assert int(restored.step) == 3
    for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(legacy), strict=True):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
