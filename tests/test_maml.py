"""MAML, FOMAML, Meta-SGD, ANIL and Reptile against ground truth: central finite differences and
hand-derived formulas in float64, a plain Python loop over tasks, and the batch-norm contract."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.learners.maml import anil, inner_loop, maml, metasgd, reptile
from metajax.nets import MLP, Conv4
from metajax.training import meta_gradient, meta_update
from metajax.types import Task


def enable_x64():
    """float64 inside a `with` block only (`jax.enable_x64` is a context manager in JAX >= 0.7)."""
    return jax.enable_x64(True)


class Linear(nn.Module):
    """`x @ kernel`, no bias: the model of the closed-form checks."""

    @nn.compact
    def __call__(self, x):
        return x @ self.param("kernel", nn.initializers.normal(1.0), (x.shape[-1], 1))


def _regression_task(seed, n_support=6, n_query=5, dim=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return Task(*(jnp.asarray(rng.normal(size=s).astype(dtype))
                  for s in [(n_support, dim), (n_support, 1), (n_query, dim), (n_query, 1)]))


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def _linear_pieces(task, w):
    """Support/query gradients and the support Hessian of the mean squared error of `x @ w`."""
    xs, ys, xq, yq = (np.asarray(a) for a in (task.support_x, task.support_y, task.query_x,
                                              task.query_y))
    g_s = lambda v: 2.0 / len(xs) * xs.T @ (xs @ v - ys)  # noqa: E731
    g_q = lambda v: 2.0 / len(xq) * xq.T @ (xq @ v - yq)  # noqa: E731
    return g_s, g_q, 2.0 / len(xs) * xs.T @ xs


@pytest.mark.parametrize("remat", [False, True])
def test_maml_meta_gradient_matches_central_finite_differences(remat):
    with enable_x64():
        task = _regression_task(0, dim=1)
        learner = maml(MLP((8, 8), 1, activation=nn.tanh), inner_lr=0.05, steps=3, remat=remat,
                       loss="mse")
        params = jax.tree.map(lambda x: x.astype(jnp.float64),
                              learner.init(jax.random.PRNGKey(0), task))
        loss = jax.jit(lambda p: learner.loss(p, task, None)[0])
        grad = jax.grad(loss)(params)
        rng = np.random.default_rng(1)
        eps = 1e-5
        for _ in range(4):
            direction = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
            shifted = lambda s, d=direction: jax.tree.map(lambda p, q: p + s * q, params, d)  # noqa: E731
            fd = (loss(shifted(eps)) - loss(shifted(-eps))) / (2 * eps)
            analytic = float(_flat(grad) @ _flat(direction))
            assert abs(analytic - float(fd)) <= 1e-4 * abs(float(fd)), (analytic, float(fd))


def test_maml_and_fomaml_match_the_closed_form_for_a_linear_model():
    with enable_x64():
        task = _regression_task(1)
        a = 0.1
        second = maml(Linear(), inner_lr=a, steps=1, loss="mse")
        first = maml(Linear(), inner_lr=a, steps=1, first_order=True, loss="mse")
        params = jax.tree.map(lambda x: x.astype(jnp.float64),
                              second.init(jax.random.PRNGKey(0), task))
        w = np.asarray(params["params"]["kernel"])
        g_s, g_q, h_s = _linear_pieces(task, w)
        w_adapted = w - a * g_s(w)
        expected = (np.eye(3) - a * h_s) @ g_q(w_adapted)
        grad = jax.grad(lambda p: second.loss(p, task, None)[0])(params)["params"]["kernel"]
        np.testing.assert_allclose(grad, expected, rtol=1e-10)
        # First order: the Hessian term is dropped.
        grad_fo = jax.grad(lambda p: first.loss(p, task, None)[0])(params)["params"]["kernel"]
        np.testing.assert_allclose(grad_fo, g_q(w_adapted), rtol=1e-10)
        assert not np.allclose(grad_fo, grad)


def test_maml_two_steps_match_the_closed_form_for_a_linear_model():
    with enable_x64():
        task = _regression_task(2)
        a = 0.1
        learner = maml(Linear(), inner_lr=a, steps=2, loss="mse")
        params = jax.tree.map(lambda x: x.astype(jnp.float64),
                              learner.init(jax.random.PRNGKey(0), task))
        w = np.asarray(params["params"]["kernel"])
        g_s, g_q, h_s = _linear_pieces(task, w)
        w1 = w - a * g_s(w)
        w2 = w1 - a * g_s(w1)
        jac = (np.eye(3) - a * h_s) @ (np.eye(3) - a * h_s)  # Hessian is constant for a linear model
        grad = jax.grad(lambda p: learner.loss(p, task, None)[0])(params)["params"]["kernel"]
        np.testing.assert_allclose(grad, jac @ g_q(w2), rtol=1e-10)


def test_metasgd_gradients_match_the_closed_form_for_a_linear_model():
    with enable_x64():
        task = _regression_task(3)
        learner = metasgd(Linear(), inner_lr=0.1, steps=1, loss="mse")
        params = jax.tree.map(lambda x: x.astype(jnp.float64),
                              learner.init(jax.random.PRNGKey(0), task))
        rng = np.random.default_rng(0)
        alpha = rng.uniform(0.02, 0.2, size=(3, 1))  # a different rate per parameter
        params["params"]["lr"]["kernel"] = jnp.asarray(alpha)
        w = np.asarray(params["params"]["init"]["kernel"])
        g_s, g_q, h_s = _linear_pieces(task, w)
        w_adapted = w - alpha * g_s(w)
        grad = jax.grad(lambda p: learner.loss(p, task, None)[0])(params)
        np.testing.assert_allclose(grad["params"]["lr"]["kernel"], -g_s(w) * g_q(w_adapted),
                                   rtol=1e-10)
        np.testing.assert_allclose(grad["params"]["init"]["kernel"],
                                   (np.eye(3) - np.diag(alpha[:, 0]) @ h_s).T @ g_q(w_adapted),
                                   rtol=1e-10)


def _adam_b1_zero_by_hand(x, y, w, v, t, lr, steps):
    """`steps` full-batch Adam steps (b1=0, b2=0.999, eps 1e-8) of the squared loss of x @ w on y,
    from squared-gradient average `v` after `t` steps; returns (w, v, t)."""
    w = w.copy()
    for _ in range(steps):
        t += 1
        g = 2.0 / len(x) * x.T @ (x @ w - y)
        v = 0.999 * v + 0.001 * g * g
        w = w - lr * g / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w, v, t


def test_reptile_update_matches_adam_with_b1_zero_by_hand():
    with enable_x64():
        task = _regression_task(4, n_support=4, n_query=4)
        lr, steps = 0.05, 3
        learner = reptile(Linear(), inner_lr=lr, steps=steps, inner_batch=8, loss="mse",
                          keep_inner_state=False)
        params = jax.tree.map(lambda x: x.astype(jnp.float64),
                              learner.init(jax.random.PRNGKey(0), task))
        pseudo, _ = learner.meta_grad(params, task, jax.random.PRNGKey(1))
        # inner_batch >= 8 examples: every step is full-batch on support + query.
        x = np.concatenate([task.support_x, task.query_x])
        y = np.concatenate([task.support_y, task.query_y])
        w0 = np.asarray(params["params"]["kernel"])
        w, _, _ = _adam_b1_zero_by_hand(x, y, w0, np.zeros_like(w0), 0, lr, steps)
        np.testing.assert_allclose(pseudo["params"]["kernel"], w0 - w, rtol=1e-8)


def test_reptile_kept_adam_state_continues_across_tasks_by_hand():
    # keep_inner_state (the authors' code): the second task's Adam steps continue the first task's
    # squared-gradient average and step count.
    with enable_x64():
        tasks = [_regression_task(s, n_support=4, n_query=4) for s in (4, 7)]
        lr, steps = 0.05, 2
        learner = reptile(Linear(), inner_lr=lr, steps=steps, inner_batch=8, loss="mse")
        params = jax.tree.map(lambda x: x.astype(jnp.float64),
                              learner.init(jax.random.PRNGKey(0), tasks[0]))
        state = learner.init_inner_state(params)
        w0 = np.asarray(params["params"]["kernel"])
        v, t = np.zeros_like(w0), 0
        for task in tasks:
            pseudo, _, state = learner.meta_grad(params, task, jax.random.PRNGKey(1), state)
            x = np.concatenate([task.support_x, task.query_x])
            y = np.concatenate([task.support_y, task.query_y])
            w, v, t = _adam_b1_zero_by_hand(x, y, w0, v, t, lr, steps)
            np.testing.assert_allclose(pseudo["params"]["kernel"], w0 - w, rtol=1e-8)
        assert int(state[0].count) == 2 * steps
        np.testing.assert_allclose(state[0].nu["params"]["kernel"], v, rtol=1e-10)


def test_reptile_evaluation_adapts_from_the_given_training_state_by_hand():
    # test_inner_state (the authors' evaluation): the support-set Adam steps continue the state
    # meta-training ended with; without it they start fresh (sign steps first).
    with enable_x64():
        train_task, test_task = (_regression_task(s, n_support=4, n_query=3) for s in (4, 9))
        lr, steps = 0.05, 2
        learner = reptile(Linear(), inner_lr=lr, steps=steps, inner_batch=8, loss="mse")
        params = jax.tree.map(lambda x: x.astype(jnp.float64),
                              learner.init(jax.random.PRNGKey(0), train_task))
        _, _, state = learner.meta_grad(params, train_task, jax.random.PRNGKey(1),
                                        learner.init_inner_state(params))
        w0 = np.asarray(params["params"]["kernel"])
        x, y = np.asarray(test_task.support_x), np.asarray(test_task.support_y)

        def by_hand(v, t):
            w, _, _ = _adam_b1_zero_by_hand(x, y, w0, v, t, lr, steps)
            return np.asarray(test_task.query_x) @ w

        kept = reptile(Linear(), inner_lr=lr, steps=steps, inner_batch=8, loss="mse",
                       test_inner_state=state)
        v = np.asarray(state[0].nu["params"]["kernel"])
        np.testing.assert_allclose(kept.predict(params, test_task), by_hand(v, steps), rtol=1e-8)
        np.testing.assert_allclose(learner.predict(params, test_task),
                                   by_hand(np.zeros_like(w0), 0), rtol=1e-8)
        assert not np.allclose(by_hand(v, steps), by_hand(np.zeros_like(w0), 0))


def test_trainer_carries_a_stateful_learners_state_as_the_mean_over_tasks():
    with enable_x64():
        tasks = [_regression_task(s, n_support=3, n_query=3) for s in (5, 6)]
        learner = reptile(Linear(), inner_lr=0.05, steps=2, inner_batch=6, loss="mse")
        params = jax.tree.map(lambda x: x.astype(jnp.float64),
                              learner.init(jax.random.PRNGKey(0), tasks[0]))
        keys = jax.random.split(jax.random.PRNGKey(1), 2)
        batch = jax.tree.map(lambda *xs: jnp.stack(xs), *tasks)
        start = learner.init_inner_state(params)
        _, _, start = learner.meta_grad(params, tasks[1], keys[0], start)  # a non-trivial state
        pseudo, _, state = meta_update(learner, params, batch, keys, inner_state=start)
        each = [learner.meta_grad(params, t, k, start) for t, k in zip(tasks, keys, strict=True)]
        np.testing.assert_allclose(pseudo["params"]["kernel"],
                                   (each[0][0]["params"]["kernel"] + each[1][0]["params"]["kernel"])
                                   / 2, rtol=1e-10)
        np.testing.assert_allclose(state[0].nu["params"]["kernel"],
                                   (each[0][2][0].nu["params"]["kernel"]
                                    + each[1][2][0].nu["params"]["kernel"]) / 2, rtol=1e-10)
        assert int(state[0].count) == int(each[0][2][0].count) == 4


def test_reptile_trainer_step_moves_to_the_mean_adapted_weights():
    with enable_x64():
        tasks = [_regression_task(s, n_support=3, n_query=3) for s in (5, 6)]
        learner = reptile(Linear(), inner_lr=0.05, steps=2, inner_batch=6, loss="mse",
                          keep_inner_state=False)
        params = jax.tree.map(lambda x: x.astype(jnp.float64),
                              learner.init(jax.random.PRNGKey(0), tasks[0]))
        keys = jax.random.split(jax.random.PRNGKey(1), 2)
        batch = jax.tree.map(lambda *xs: jnp.stack(xs), *tasks)
        pseudo, _ = meta_gradient(learner, params, batch, keys)
        opt = optax.sgd(1.0)  # meta step size 1: the new initialisation is the mean adapted one
        updates, _ = opt.update(pseudo, opt.init(params))
        new = optax.apply_updates(params, updates)
        adapted = [jax.tree.map(jnp.subtract, params, learner.meta_grad(params, t, k)[0])
                   for t, k in zip(tasks, keys, strict=True)]
        np.testing.assert_allclose(new["params"]["kernel"],
                                   (adapted[0]["params"]["kernel"] + adapted[1]["params"]["kernel"])
                                   / 2, rtol=1e-10)


def _conv_tasks(n, ways=3, shots=2, queries=2, size=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = lambda k: np.tile(np.repeat(np.arange(ways), k), (n, 1))  # noqa: E731
    return Task(jnp.asarray(rng.random((n, ways * shots, size, size, 1), np.float32)),
                jnp.asarray(labels(shots)),
                jnp.asarray(rng.random((n, ways * queries, size, size, 1), np.float32)),
                jnp.asarray(labels(queries)), ways)


@pytest.mark.parametrize("task_map,downsample", [
    # ("vmap", "maxpool") guards conv4's max-pool: a reshape + max form of it gave a wrong
    # vmapped second-order gradient with jax 0.10.2 (see metajax.nets.layers.max_pool_2x2).
    # ("map:2", ...) runs chunks of 2 vmapped tasks, with a remainder chunk of 1 here.
    # ("map", ...) is the same loop as ("map:2", ...) with chunks of one: long tier.
    ("vmap", "stride"), pytest.param("map", "maxpool", marks=pytest.mark.slow),
    ("vmap", "maxpool"), ("map:2", "maxpool"),
])
def test_meta_batch_gradient_equals_mean_of_per_task_gradients(task_map, downsample):
    tasks = _conv_tasks(3)
    learner = maml(Conv4(width=4, depth=2, num_outputs=3, downsample=downsample), inner_lr=0.4,
                   steps=1)
    one = lambda i: jax.tree.map(lambda x: x[i], tasks)  # noqa: E731
    params = learner.init(jax.random.PRNGKey(0), one(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    grads, metrics = jax.jit(lambda p: meta_gradient(learner, p, tasks, keys, task_map))(params)
    per_task = jax.jit(jax.value_and_grad(lambda p, t, k: learner.loss(p, t, k)[0]))
    loop = [per_task(params, one(i), keys[i]) for i in range(3)]  # a plain Python loop over tasks
    mean = jax.tree.map(lambda *g: sum(g) / 3, *[g for _, g in loop])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grads, mean)
    np.testing.assert_allclose(metrics["loss"], np.mean([v for v, _ in loop]), rtol=1e-5)


def test_map_over_tasks_keeps_one_task_alive_at_a_time():
    # with "map", each task's backward pass runs inside the loop, so the step's temporary memory
    # does not grow with the meta-batch; the gradient of the whole loop kept every task's
    # residuals until its backward pass (5x more at 16 tasks than at 2 for this net)
    learner = maml(Conv4(width=4, depth=2, num_outputs=3), inner_lr=0.4, steps=1)
    temp = {}
    for n in (2, 16):
        tasks = _conv_tasks(n, queries=6, size=12)
        params = learner.init(jax.random.PRNGKey(0), jax.tree.map(lambda x: x[0], tasks))
        keys = jax.random.split(jax.random.PRNGKey(1), n)
        compiled = jax.jit(lambda p, t=tasks, k=keys: meta_gradient(
            learner, p, t, k, "map")).lower(params).compile()
        temp[n] = compiled.memory_analysis().temp_size_in_bytes
    assert temp[16] < 1.25 * temp[2], temp


def test_inner_loop_compiles_to_the_same_size_for_1_and_10_steps():
    task = jax.tree.map(lambda x: x[0], _conv_tasks(1))
    sizes = {}
    for steps in (1, 10):
        learner = maml(Conv4(width=4, depth=2, num_outputs=3), inner_lr=0.4, steps=steps)
        params = learner.init(jax.random.PRNGKey(0), task)
        grad = jax.jit(jax.grad(lambda p, fn=learner.loss: fn(p, task, None)[0]))
        sizes[steps] = len(grad.lower(params).as_text())
    assert abs(sizes[10] - sizes[1]) / sizes[1] < 0.02, sizes


def test_remat_gives_the_same_meta_gradient():
    task = jax.tree.map(lambda x: x[0], _conv_tasks(1))
    grads = []
    for remat in (False, True):
        learner = maml(Conv4(width=4, depth=2, num_outputs=3), inner_lr=0.4, steps=3, remat=remat)
        params = learner.init(jax.random.PRNGKey(0), task)
        grads.append(jax.jit(jax.grad(lambda p, fn=learner.loss: fn(p, task, None)[0]))(params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), *grads)


@pytest.mark.slow  # the default tier checks the same through the registry (test_gradient_learners)
def test_anil_adapts_only_the_head():
    task = jax.tree.map(lambda x: x[0], _conv_tasks(1))
    net = Conv4(width=4, depth=2, num_outputs=3)
    learner = anil(net, inner_lr=0.5, steps=1)
    params = learner.init(jax.random.PRNGKey(0), task)

    def support_loss(head):
        full = {"params": {**params["params"], "Dense_0": head}}
        logits = net.apply(full, task.support_x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, task.support_y).mean()

    head = inner_loop(support_loss, params["params"]["Dense_0"], 0.5, 1)
    expected = net.apply({"params": {**params["params"], "Dense_0": head}}, task.query_x)
    np.testing.assert_allclose(learner.predict(params, task, None), expected, rtol=1e-5, atol=1e-5)
    # The body still gets a meta-gradient (through the features), and it is not MAML's.
    grad = jax.grad(lambda p: learner.loss(p, task, None)[0])(params)
    assert float(jnp.abs(grad["params"]["Conv_0"]["kernel"]).sum()) > 0


def test_batch_norm_uses_the_statistics_of_the_support_and_of_the_query_set():
    """Each inner step normalises the support set by its own statistics and the query set is
    normalised by its own: scaling all support inputs (or all query inputs) by 3 leaves the adapted
    query logits unchanged. With running averages (or support statistics applied to the query set, or
    support and query normalised together) the logits would change."""
    task = jax.tree.map(lambda x: x[0], _conv_tasks(1))
    net = Conv4(width=4, depth=2, num_outputs=3)
    learner = maml(net, inner_lr=0.4, steps=2)
    params = learner.init(jax.random.PRNGKey(0), task)
    predict = jax.jit(lambda t: learner.predict(params, t, None))
    logits = predict(task)
    scaled_support = task.replace(support_x=3.0 * task.support_x)
    scaled_query = task.replace(query_x=3.0 * task.query_x)
    np.testing.assert_allclose(predict(scaled_support), logits, atol=2e-4)
    np.testing.assert_allclose(predict(scaled_query), logits, atol=2e-4)
    # Not trivially constant: changing one query example changes the others' logits (query batch
    # statistics), and joint normalisation of support + query would not be invariant.
    other = task.replace(query_x=task.query_x.at[0].multiply(5.0))
    assert np.abs(np.asarray(predict(other))[1:] - logits[1:]).max() > 1e-3
    adapted = jax.jit(lambda p: inner_loop(lambda q: optax.softmax_cross_entropy_with_integer_labels(
        net.apply(q, task.support_x), task.support_y).mean(), p, 0.4, 2))(params)
    both = jnp.concatenate([task.support_x, task.query_x])
    joint = net.apply(adapted, both)[task.support_x.shape[0]:]
    joint_scaled = net.apply(adapted, both.at[task.support_x.shape[0]:].multiply(3.0))[
        task.support_x.shape[0]:]
    assert np.abs(np.asarray(joint_scaled - joint)).max() > 1e-3
    np.testing.assert_allclose(net.apply(adapted, task.query_x), logits, rtol=1e-5, atol=1e-5)
