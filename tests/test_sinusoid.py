"""Sinusoid tasks: ranges and formula, determinism; MAML learns them; `metajax train` on them."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.cli import main
from metajax.data.sinusoid import sample_sinusoid, sinusoid_function, sinusoid_sampler
from metajax.learners.maml import maml
from metajax.nets import MLP
from metajax.training import evaluate, train


def test_tasks_follow_the_formula_and_ranges():
    keys = jax.random.split(jax.random.PRNGKey(0), 500)
    tasks = jax.vmap(lambda k: sample_sinusoid(k, 5, 7))(keys)
    assert tasks.support_x.shape == (500, 5, 1) and tasks.query_y.shape == (500, 7, 1)
    assert tasks.num_classes == 0
    amp, phase = jax.vmap(sinusoid_function)(keys)
    assert 0.1 <= float(amp.min()) and float(amp.max()) <= 5.0 and float(amp.max()) > 4.8
    assert 0.0 <= float(phase.min()) and float(phase.max()) <= math.pi
    x = np.concatenate([tasks.support_x, tasks.query_x], axis=1)
    assert -5.0 <= x.min() and x.max() <= 5.0
    expected = np.asarray(amp)[:, None, None] * np.sin(x - np.asarray(phase)[:, None, None])
    np.testing.assert_allclose(np.concatenate([tasks.support_y, tasks.query_y], 1), expected,
                               rtol=1e-5, atol=1e-5)
    again = sample_sinusoid(keys[3], 5, 7)
    np.testing.assert_array_equal(again.query_x, tasks.query_x[3])


@pytest.mark.slow
def test_maml_learns_sinusoids_and_adapts_better_with_more_steps(tmp_path):
    sample = sinusoid_sampler(10, 10)
    example = sample(jax.random.PRNGKey(0))
    net = MLP((40, 40), 1)
    learner = maml(net, inner_lr=0.01, steps=1, loss="mse")
    state, _ = train(learner, optax.adam(1e-3), sample, None, steps=3000, meta_batch=10, seed=0,
                     out_dir=tmp_path, example_task=example, progress=False, log_every=1000)
    test = sinusoid_sampler(10, 50)
    before = evaluate(maml(net, 0.01, 0, loss="mse"), state.params, test, None, 300, seed=1)
    after = evaluate(maml(net, 0.01, 10, loss="mse"), state.params, test, None, 300, seed=1)
    # Predicting 0 everywhere scores E[A^2]/2 = 4.2; the meta-learned init alone is no better.
    assert before["loss"] > 2.5, before
    assert after["loss"] < 1.5 and after["loss"] < 0.5 * before["loss"], after


@pytest.mark.slow
def test_cli_trains_maml_metasgd_and_pretrained_on_sinusoids(tmp_path, capsys):
    for algo in ("maml", "metasgd", "pretrained"):
        out = tmp_path / algo
        assert main(["train", algo, "--dataset", "sinusoid", "--shots", "5", "--steps", "50",
                     "--eval-episodes", "20", "--out", str(out), "--no-progress"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        for key in ("algo", "dataset", "ways", "shots", "steps", "seed", "mse", "ci95",
                    "episodes", "wall_time_s", "config"):
            assert key in summary, key
        assert summary["accuracy"] is None and summary["mse"] > 0 and summary["shots"] == 5
        assert summary["config"]["test_inner_steps"] == 10 and summary["episodes"] == 20
        assert capsys.readouterr().out.strip().endswith(f"mse {summary['mse']:.4f}")
    assert jnp.isfinite(summary["ci95"])
