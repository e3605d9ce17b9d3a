"""Learned optimiser: preprocessing formula, optax wrapper vs the meta-training unroll, truncation and
dropped second derivatives, a short meta-training run, save/load, and the `metajax train l2o` run."""

import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.l2o import (
    LSTMOptimizer,
    init_lstm_optimizer,
    learned_optimizer,
    load_lstm_optimizer,
    mlp_family,
    preprocess_gradient,
    quadratic_family,
    save_lstm_optimizer,
)
from metajax.l2o.meta_train import (
    init_meta_state,
    make_meta_step,
    optimizee_curves,
    sample_optimizees,
    unroll,
    unroll_loss,
)


def _formula(g: float, p: float) -> tuple[float, float]:
    if abs(g) > math.exp(p):
        return 1.0, float(np.sign(g))
    if abs(g) >= math.exp(-p):
        return math.log(abs(g)) / p, float(np.sign(g))
    return -1.0, math.exp(p) * g


@pytest.mark.parametrize("p", [10.0, 5.0])
def test_preprocessing_matches_the_paper_formula(p):
    gs = [3.0, -0.5, 1e-3, -2e-3, 1e-6, -3e-7, 0.0, 500.0, 4e4, -1e6]  # 1e6 > e^10: clipped
    out = np.asarray(preprocess_gradient(jnp.array(gs), p))
    assert out.shape == (len(gs), 2)
    for g, row in zip(gs, out, strict=True):
        np.testing.assert_allclose(row, _formula(g, p), rtol=1e-5, atol=1e-7)
    # the small-gradient branch is linear in g: (-1, e^p g), and the derivative is finite at 0
    d = jax.jacobian(lambda g: preprocess_gradient(g, p))(jnp.float32(0.0))
    np.testing.assert_allclose(np.asarray(d), [0.0, math.exp(p)], rtol=1e-5)


def _net_and_params(seed=0, scale=1.0):
    net = LSTMOptimizer()
    params = init_lstm_optimizer(net, jax.random.PRNGKey(seed))
    return net, jax.tree.map(lambda x: x * scale, params)


def _tiny_pool():
    return jax.random.randint(jax.random.PRNGKey(3), (12, 20, 6, 6), 0, 256).astype(jnp.uint8)


@pytest.mark.parametrize("which", ["quadratic", "mlp"])
def test_optax_wrapper_retraces_the_meta_training_unroll(which):
    net, lstm_params = _net_and_params(scale=3.0)
    family = quadratic_family() if which == "quadratic" else mlp_family(ways=3, batch=16)
    data = None if which == "quadratic" else _tiny_pool()
    task = family.sample(jax.random.PRNGKey(1), data)
    theta0 = family.init(jax.random.PRNGKey(2), task)
    key = jax.random.PRNGKey(4)
    steps = 12
    carry0 = net.initial_carry(sum(x.size for x in jax.tree.leaves(theta0)))
    losses, theta_unroll, _ = unroll(net, lstm_params, family, task, theta0, carry0, key, 0, steps)

    opt = learned_optimizer(lstm_params, net)

    @jax.jit
    def optax_step(theta, state, t):  # a plain optax loop body
        loss, grads = jax.value_and_grad(family.loss)(theta, task, jax.random.fold_in(key, t))
        updates, state = opt.update(grads, state, theta)
        return optax.apply_updates(theta, updates), state, loss

    theta, state, seen = theta0, opt.init(theta0), []
    for t in range(steps):
        theta, state, loss = optax_step(theta, state, t)
        seen.append(float(loss))
    np.testing.assert_allclose(np.asarray(losses), seen, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 theta_unroll, theta)
    assert not np.allclose(seen[0], seen[-1])  # the optimiser did move


def test_no_meta_gradient_crosses_an_unroll_boundary():
    net, lstm_params = _net_and_params(scale=3.0)
    family = quadratic_family()
    task = family.sample(jax.random.PRNGKey(1))
    theta0 = family.init(jax.random.PRNGKey(2), task)
    carry0 = net.initial_carry(10)
    key = jax.random.PRNGKey(0)

    def second_unroll_loss(lp, theta0, carry0):
        _, (theta1, carry1, _) = unroll_loss(lp, net, family, task, theta0, carry0, key, 0, 5)
        return unroll_loss(lp, net, family, task, theta1, carry1, key, 5, 5)[0]

    g_params, g_theta0, g_carry0 = jax.grad(second_unroll_loss, argnums=(0, 1, 2))(
        lstm_params, theta0, carry0)
    assert float(jnp.abs(g_theta0).max()) == 0.0
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g_carry0))
    # the gradient w.r.t. the LSTM parameters is only the second unroll's own
    _, (theta1, carry1, _) = unroll_loss(lstm_params, net, family, task, theta0, carry0, key, 0, 5)
    direct = jax.grad(lambda lp: unroll_loss(lp, net, family, task, theta1, carry1, key, 5, 5)[0])(
        lstm_params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 g_params, direct)


def test_dropped_second_derivatives_stop_the_gradient_through_the_optimisee_gradient():
    net, lstm_params = _net_and_params(scale=3.0)
    family = quadratic_family()
    task = family.sample(jax.random.PRNGKey(1))
    theta0 = family.init(jax.random.PRNGKey(2), task)
    carry0 = net.initial_carry(10)
    key = jax.random.PRNGKey(0)

    def one_step(theta0, second_order):  # meta-loss f(theta_1), theta_1 = theta_0 + g(grad f)
        return unroll_loss(lstm_params, net, family, task, theta0, carry0, key, 0, 1,
                           second_order)[0]

    theta1 = unroll(net, lstm_params, family, task, theta0, carry0, key, 0, 1)[1]
    grad_f_theta1 = jax.grad(family.eval_loss)(theta1, task)
    first = jax.grad(one_step)(theta0, False)  # d theta_1 / d theta_0 = I
    np.testing.assert_allclose(first, grad_f_theta1, rtol=1e-5, atol=1e-6)
    second = jax.grad(one_step)(theta0, True)  # + (d g / d grad) H terms
    assert not np.allclose(second, grad_f_theta1, rtol=1e-3, atol=1e-4)
    meta = [jax.grad(lambda lp, s=s: unroll_loss(lp, net, family, task, theta0, carry0, key, 0, 5,
                                                 s)[0])(lstm_params) for s in (False, True)]
    diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), *meta)
    assert max(jax.tree.leaves(diff)) > 0.0


def test_short_meta_training_beats_the_untrained_lstm():
    net = LSTMOptimizer()
    family = quadratic_family()
    meta_opt = optax.adam(3e-3)
    state = init_meta_state(net, meta_opt, jax.random.PRNGKey(0))
    untrained = jax.tree.map(jnp.copy, state.lstm_params)  # the step donates its input
    step = make_meta_step(net, family, meta_opt, optimizees=16, unroll=10, horizon=30, seed=0)
    for _ in range(60):
        state, _ = step(state, None)
    tasks, params = sample_optimizees(family, None, jax.random.PRNGKey(99), 64)
    keys = jax.random.split(jax.random.PRNGKey(5), 64)
    final = {name: float(optimizee_curves(learned_optimizer(p, net), family, tasks, params, keys,
                                          30)[:, -1].mean())
             for name, p in (("untrained", untrained), ("trained", state.lstm_params))}
    assert final["trained"] < 0.7 * final["untrained"], final


def test_save_load_round_trip(tmp_path):
    net = LSTMOptimizer(units=8, preprocess_p=5.0)
    lstm_params = init_lstm_optimizer(net, jax.random.PRNGKey(7))
    path = save_lstm_optimizer(tmp_path / "opt.msgpack", lstm_params, net)
    net2, params2 = load_lstm_optimizer(path)
    assert net2 == net
    jax.tree.map(np.testing.assert_array_equal, lstm_params, params2)
    theta = {"a": jnp.arange(3.0), "b": jnp.ones((2, 2))}
    grads = jax.tree.map(lambda x: 0.1 * x + 0.01, theta)
    outs = []
    for opt in (learned_optimizer(lstm_params, net), learned_optimizer(params2, net2)):
        outs.append(opt.update(grads, opt.init(theta))[0])
    jax.tree.map(np.testing.assert_array_equal, *outs)
    with pytest.raises(FileNotFoundError, match="save_lstm_optimizer"):
        load_lstm_optimizer(tmp_path / "missing.msgpack")


@pytest.mark.slow
def test_train_l2o_command_writes_summary(tmp_path, capsys):
    from metajax.cli import main

    out = tmp_path / "run"
    code = main(["train", "l2o", "--dataset", "quadratic", "--out", str(out), "--steps", "3",
                 "--meta-batch", "4", "--horizon", "10", "--unroll", "5", "--eval-episodes", "8",
                 "--val-episodes", "8", "--log-every", "1", "--checkpoint-every", "2",
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    s = json.loads((out / "summary.json").read_text())
    for key in ("algo", "dataset", "steps", "seed", "final_loss", "baselines", "wall_time_s",
                "config", "curves"):
        assert key in s, key
    assert s["algo"] == "l2o" and s["dataset"] == "quadratic" and s["config"]["horizon"] == 10
    assert [b["name"] for b in s["baselines"]] == ["sgd", "nag", "rmsprop", "adam"]
    assert all(set(b) >= {"name", "learning_rate", "final_loss"} for b in s["baselines"])
    assert len(s["curves"]["learned"]) == 11
    assert printed.endswith(f"{s['final_loss']:.4g}")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    net, params = load_lstm_optimizer(out / "lstm_optimizer.msgpack")
    assert net.units == 20 and net.preprocess_p == 10.0
    assert main(["train", "protonet", "--dataset", "quadratic", "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2

    # a run with checkpoints is refused without --resume, and its config is left alone
    config_before = (out / "config.json").read_text()
    assert main(["train", "l2o", "--dataset", "quadratic", "--out", str(out), "--steps", "5",
                 "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "config.json").read_text() == config_before
    # a run cut off after its step-2 checkpoint resumes to the same optimiser
    trained = (out / "lstm_optimizer.msgpack").read_bytes()
    shutil.rmtree(out / "checkpoints" / "3")
    (out / "summary.json").unlink()
    assert main(["train", "l2o", "--dataset", "quadratic", "--out", str(out), "--steps", "3",
                 "--meta-batch", "4", "--horizon", "10", "--unroll", "5", "--eval-episodes", "8",
                 "--val-episodes", "8", "--log-every", "1", "--checkpoint-every", "2",
                 "--no-progress", "--resume"]) == 0
    capsys.readouterr()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    s = json.loads((out / "summary.json").read_text())
    assert s["start_step"] == 2
    assert (out / "lstm_optimizer.msgpack").read_bytes() == trained

    # `metajax eval` scores the saved optimiser again on held-out optimisees
    assert main(["eval", str(out), "--episodes", "8"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    e = json.loads((out / "eval.json").read_text())
    assert e["optimizees"] == 8 and last.endswith(f"{e['final_loss']:.4g}")
    assert abs(e["final_loss"] - s["final_loss"]) <= 1e-5 * max(1.0, abs(s["final_loss"]))
    assert [b["name"] for b in e["baselines"]] == ["sgd", "nag", "rmsprop", "adam"]
    assert main(["eval", str(out), "--ways", "5"]) == 2
