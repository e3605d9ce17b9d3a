"""Trainer: determinism, resume after SIGKILL, NaN guard, multi-device equality, clear errors."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import compile_bound_env, with_xla_flag

from metajax.data.episodes import episode_sampler
from metajax.experiment import load_params
from metajax.learners.protonet import protonet
from metajax.nets import Conv4
from metajax.training import CheckpointExists, TrainingDiverged, restore_state, train
from metajax.training.trainer import init_state
from metajax.types import Learner

REPO = Path(__file__).resolve().parents[1]
TINY = ["--width", "8", "--train-ways", "5", "--queries", "2", "--test-queries", "2",
        "--eval-episodes", "10", "--val-every", "0", "--log-every", "1", "--no-progress"]


def _synthetic(classes=30):
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.integers(0, 255, (classes, 20, 12, 12, 1), dtype=np.uint8))


def _run(tmp_path, name, steps=4, **kw):
    data = _synthetic()
    sample = episode_sampler(5, 1, 2)
    learner = protonet(Conv4(width=8, depth=2))
    return train(learner, optax.adam(1e-3), sample, data, steps=steps, meta_batch=2, seed=3,
                 out_dir=tmp_path / name, example_task=sample(jax.random.PRNGKey(0), data),
                 progress=False, **kw)


def test_same_seed_same_parameters(tmp_path):
    a, _ = _run(tmp_path, "a")
    b, _ = _run(tmp_path, "b")
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_existing_checkpoint_needs_resume(tmp_path):
    _run(tmp_path, "a", steps=2)
    with pytest.raises(CheckpointExists, match="--resume"):
        _run(tmp_path, "a", steps=2)
    state, stats = _run(tmp_path, "a", steps=3, resume=True)
    assert int(state.step) == 3 and stats["start_step"] == 2


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = _synthetic()
    sample = episode_sampler(5, 1, 2)

    def loss(params, task, key):
        value = jnp.where(params["count"] >= 5.0, jnp.nan, (params["w"] ** 2).sum())
        return value, {"loss": value}

    learner = Learner(init=lambda key, task: {"w": jnp.ones(3), "count": jnp.zeros(())},
                      loss=loss, predict=lambda p, t, k: t.query_x)
    # count grows by 1 per step (SGD with lr -1 on a zero gradient is not possible, so use
    # a transformation that adds one to `count` and descends on `w`).
    opt = optax.multi_transform(
        {"w": optax.sgd(0.1), "count": optax.GradientTransformation(
            lambda p: optax.EmptyState(),
            lambda g, s, p=None: (jax.tree.map(lambda x: jnp.ones_like(x), g), s))},
        {"w": "w", "count": "count"})
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="step 6.*last good checkpoint \\(step 4\\)"):
        train(learner, opt, sample, data, steps=10, meta_batch=2, seed=0, out_dir=out,
              example_task=sample(jax.random.PRNGKey(0), data), checkpoint_every=2,
              progress=False)
    abstract = jax.eval_shape(lambda: init_state(learner, opt, jax.random.PRNGKey(0),
                                                 sample(jax.random.PRNGKey(0), data)))
    state = restore_state(out, abstract)
    assert int(state.step) == 4
    assert np.all(np.isfinite(np.asarray(state.params["w"])))


def _cli(out, steps, *extra):
    return [sys.executable, "-m", "metajax", "train", "protonet", "--out", str(out),
            "--steps", str(steps), "--checkpoint-every", "3", *TINY, *extra]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    steps = 14
    log = open(tmp_path / "full.log", "wb")  # noqa: SIM115 - closed below
    env = compile_bound_env()  # three tiny runs: mostly compile time
    full = subprocess.Popen(_cli(tmp_path / "full", steps), stdout=log, env=env,
                            stderr=subprocess.STDOUT)  # runs beside the one that gets killed
    proc = subprocess.Popen(_cli(tmp_path / "killed", steps), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    ckpt = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline:
        done = [int(p.name) for p in ckpt.glob("*") if p.name.isdigit()] if ckpt.exists() else []
        if done and max(done) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "summary.json").exists(), "run finished before the kill"
    subprocess.run(_cli(tmp_path / "killed", steps, "--resume"), check=True, capture_output=True,
                   env=env)
    full.wait()
    log.close()
    assert full.returncode == 0, (tmp_path / "full.log").read_text()[-2000:]
    a = load_params(tmp_path / "full")
    b = load_params(tmp_path / "killed")
    jax.tree.map(np.testing.assert_array_equal, a, b)


MULTI_DEVICE = textwrap.dedent("""
    import jax, numpy as np, optax, tempfile, pathlib
    from metajax.data.episodes import episode_sampler
    from metajax.learners.protonet import protonet
    from metajax.nets import Conv4
    from metajax.training import train, evaluate
    assert len(jax.devices()) == 4, jax.devices()
    data = np.random.default_rng(0).integers(0, 255, (30, 20, 12, 12, 1), dtype=np.uint8)
    sample = episode_sampler(5, 1, 2)
    learner = protonet(Conv4(width=8, depth=2))
    out = pathlib.Path(tempfile.mkdtemp())
    results = []  # SGD: Adam's first steps ~ sign(g) would amplify rounding of tiny gradients
    for n in (1, 4):
        state, _ = train(learner, optax.sgd(0.01), sample, data, steps=3, meta_batch=8, seed=0,
                         out_dir=out / str(n), example_task=sample(jax.random.PRNGKey(0), data),
                         devices=jax.devices()[:n], progress=False)
        ev = evaluate(learner, state.params, sample, data, episodes=16, devices=jax.devices()[:n])
        results.append((state.params, ev["accuracy"]))
    (p1, a1), (p4, a4) = results
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p1, p4)
    assert abs(a1 - a4) < 1e-6, (a1, a4)
    print("MULTI_DEVICE_OK")
""")


def test_four_devices_give_the_same_parameters_as_one():
    env = with_xla_flag("--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", MULTI_DEVICE], env=env, capture_output=True,
                         text=True, cwd=REPO)
    assert "MULTI_DEVICE_OK" in out.stdout, out.stderr[-3000:]


def test_a_checkpoint_from_before_inner_state_still_restores(tmp_path):
    # TrainState gained `inner_state` (Reptile's carried Adam moments); runs saved before keep
    # resuming and evaluating.
    import orbax.checkpoint as ocp
    from flax import struct

    from metajax.training import TrainState

    @struct.dataclass
    class OldTrainState:
        step: jax.Array
        params: dict
        opt_state: optax.OptState

    params = {"w": jnp.arange(3.0)}
    opt = optax.adam(1e-3)
    manager = ocp.CheckpointManager((tmp_path / "checkpoints").absolute(),
                                    options=ocp.CheckpointManagerOptions(create=True))
    manager.save(7, args=ocp.args.StandardSave(
        OldTrainState(jnp.asarray(7, jnp.int32), params, opt.init(params))))
    manager.wait_until_finished()
    manager.close()
    like = TrainState(jnp.zeros((), jnp.int32), {"w": jnp.zeros(3)}, opt.init(params))
    state = restore_state(tmp_path, like)
    assert int(state.step) == 7 and state.inner_state is None
    np.testing.assert_array_equal(state.params["w"], params["w"])


def test_every_task_map_scores_the_same_episodes():
    from metajax.training.evaluation import make_episode_metrics
    from metajax.training.trainer import resolve_task_map

    assert resolve_task_map("auto") == ("map" if jax.default_backend() == "cpu" else "vmap")
    for bad in ("map:0", "pmap", "map:x"):
        with pytest.raises(ValueError, match="task_map must be one of"):
            resolve_task_map(bad)
    data = _synthetic()
    sample = episode_sampler(5, 1, 2)
    learner = protonet(Conv4(width=8, depth=2))
    params = learner.init(jax.random.PRNGKey(0), sample(jax.random.PRNGKey(0), data))
    keys = jax.random.split(jax.random.PRNGKey(1), 5)
    scores = {m: make_episode_metrics(learner, sample, m)(params, data, keys)
              for m in ("vmap", "map", "map:2", "auto")}  # map:2: chunks of 2, 2 and 1
    for m in ("map", "map:2", "auto"):
        np.testing.assert_allclose(scores[m]["loss"], scores["vmap"]["loss"], rtol=1e-5)
        np.testing.assert_array_equal(scores[m]["accuracy"], scores["vmap"]["accuracy"])


def test_evaluation_scores_fewer_episodes_at_once_at_larger_image_sizes():
    # 20-way, 1 shot, 15 queries: 12 episodes at once at 28x28 (4096 images), 1 at 105x105 (the
    # Siamese network's size, where 12 episodes' activations would need gigabytes), never 0
    from metajax.training.evaluation import MAX_VALUES_AT_ONCE, episodes_at_once
    from metajax.types import Task

    def shapes(side):
        x = lambda n: jax.ShapeDtypeStruct((n, side, side, 1), jnp.float32)  # noqa: E731
        y = lambda n: jax.ShapeDtypeStruct((n,), jnp.int32)  # noqa: E731
        return Task(x(20), y(20), x(300), y(300))

    assert episodes_at_once(shapes(28)) == 12
    assert episodes_at_once(shapes(56)) == 3
    assert episodes_at_once(shapes(105)) == 1
    assert episodes_at_once(shapes(28), chunk=5) == 5
    for side in (28, 56, 84):
        n = episodes_at_once(shapes(side))
        assert n * (320 * side * side + 320) <= MAX_VALUES_AT_ONCE  # images and labels
