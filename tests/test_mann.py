"""MANN (Santoro et al. 2016): the LRUA write/read/usage step against hand-computed values, the
least-used slot zeroed before writing, reads summing to one, state shapes through a scan, the
label-offset sequence episodes, and a short real run clearly above chance."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import coded_images

from metajax.config import make_config
from metajax.data.sequences import (
    instance_numbers,
    offset_labels,
    sample_sequence,
    sequence_sampler,
)
from metajax.experiment import sequence_result, task_sources
from metajax.learners import instance_accuracies, sequence_learner
from metajax.nets.mann import (
    FeedForwardCell,
    MANNCell,
    MemoryState,
    initial_memory,
    lrua_step,
    unroll,
)
from metajax.registry import build_learner
from metajax.training import evaluate, train


def _state():
    return MemoryState(
        memory=jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        usage=jnp.array([0.5, 0.2, 0.9]),
        read_weights=jnp.array([[0.6, 0.3, 0.1]]),
        reads=jnp.zeros((1, 2)),
    )


def test_lrua_step_matches_hand_computation():
    # one head, 3 slots of width 2; usage decay 0.9; write gate sigmoid(0) = 0.5
    new, w_write = lrua_step(_state(), jnp.array([[1.0, 0.0]]), jnp.array([0.0]), gamma=0.9)
    # least used = slot 1 (usage 0.2); w_w = 0.5 * [0.6, 0.3, 0.1] + 0.5 * [0, 1, 0]
    np.testing.assert_allclose(w_write, [[0.3, 0.65, 0.05]], rtol=1e-6)
    # slot 1 zeroed, then w_w[i] * key added to every slot
    np.testing.assert_allclose(new.memory, [[1.3, 0.0], [0.65, 0.0], [1.05, 1.0]], rtol=1e-6)
    # cosine of key [1, 0] with the new rows: 1, 1, 1.05 / sqrt(1.05^2 + 1)
    cos = np.array([1.0, 1.0, 1.05 / np.sqrt(1.05**2 + 1.0)])
    w_read = np.exp(cos) / np.exp(cos).sum()
    np.testing.assert_allclose(new.read_weights, [w_read], rtol=1e-5)
    np.testing.assert_allclose(new.reads, [w_read @ np.array([[1.3, 0], [0.65, 0], [1.05, 1]])],
                               rtol=1e-5)
    # usage: 0.9 * previous + read weights + write weights
    np.testing.assert_allclose(new.usage, 0.9 * np.array([0.5, 0.2, 0.9]) + w_read
                               + np.array([0.3, 0.65, 0.05]), rtol=1e-5)


def test_key_strength_sharpens_reads():
    keys, alpha = jnp.array([[1.0, 0.0]]), jnp.array([0.0])
    plain, _ = lrua_step(_state(), keys, alpha, gamma=0.9)
    sharp, _ = lrua_step(_state(), keys, alpha, jnp.array([5.0]), gamma=0.9)
    cos = np.array([1.0, 1.0, 1.05 / np.sqrt(1.05**2 + 1.0)])
    np.testing.assert_allclose(sharp.read_weights[0], jax.nn.softmax(5.0 * cos), rtol=1e-5)
    assert sharp.read_weights[0, 2] < plain.read_weights[0, 2]


def test_least_used_slot_is_zeroed_before_writing():
    # slot 2 holds content and is least used; the write gate is ~1 (all write weight on the
    # previous read location, slot 0), so slot 2 receives no write: it must end exactly zero.
    state = MemoryState(memory=jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
                        usage=jnp.array([1.0, 2.0, 0.1]),
                        read_weights=jnp.array([[1.0, 0.0, 0.0]]), reads=jnp.zeros((1, 2)))
    new, w_write = lrua_step(state, jnp.array([[0.5, -0.5]]), jnp.array([50.0]))
    assert float(w_write[0, 2]) < 1e-20
    np.testing.assert_array_equal(new.memory[2], [0.0, 0.0])
    np.testing.assert_allclose(new.memory[1], [3.0, 4.0])  # untouched
    np.testing.assert_allclose(new.memory[0], [1.5, 1.5], rtol=1e-6)  # [1, 2] + 1 * key


def test_mann_state_shapes_through_scan_and_reads_sum_to_one():
    cell = MANNCell(num_outputs=5)  # defaults: 200 units, memory 128 x 40, 4 heads
    x, prev = jnp.zeros((50, 20, 20, 1)), jnp.zeros((50, 5))
    params = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), cell.initial_state(),
                                              (x[0], prev[0])))
    state, logits = jax.eval_shape(lambda p: unroll(cell, p, x, prev), params)
    assert logits.shape == (50, 5)
    assert state.memory.memory.shape == (128, 40)
    assert state.memory.usage.shape == (128,)
    assert state.memory.read_weights.shape == (4, 128)
    assert state.memory.reads.shape == (4, 40)
    assert state.lstm[0].shape == state.lstm[1].shape == (200,)
    # a real (small) scan: every step's read weights are distributions over the slots
    small = MANNCell(num_outputs=3, hidden=16, slots=8, width=6, heads=2)
    key = jax.random.PRNGKey(1)
    xs, ys = jax.random.uniform(key, (12, 4, 4, 1)), jax.random.randint(key, (12,), 0, 3)
    prev = offset_labels(ys, 3)
    params = small.init(key, small.initial_state(), (xs[0], prev[0]))

    def step(state, inputs):
        state, _ = small.apply(params, state, inputs)
        return state, state.memory.read_weights

    _, read_weights = jax.lax.scan(step, small.initial_state(), (xs, prev))
    assert read_weights.shape == (12, 2, 8)
    assert np.all(np.asarray(read_weights) >= 0)
    np.testing.assert_allclose(read_weights.sum(-1), np.ones((12, 2)), rtol=1e-5)


def test_initial_memory():
    m = initial_memory(6, 3, 2)
    np.testing.assert_array_equal(m.read_weights, [[1, 0, 0, 0, 0, 0]] * 2)
    assert m.memory.shape == (6, 3) and float(m.usage.sum()) == 0.0


def test_sequence_episode_labels_offset_and_instances():
    images = coded_images(classes=9, drawings=12)
    sample = jax.jit(jax.vmap(sequence_sampler(4, 6), in_axes=(0, None)))
    episodes = sample(jax.random.split(jax.random.PRNGKey(0), 20), images)
    assert episodes.x.shape == (20, 24, 4, 4, 1) and episodes.prev_label.shape == (20, 24, 4)
    label_of_class0 = set()
    for e in range(20):
        y = np.asarray(episodes.y[e])
        px = np.round(np.asarray(episodes.x[e]) * 255).astype(int)
        cls, drawing = px[:, 0, 0, 0], px[:, 0, 1, 0]
        assert sorted(np.bincount(y, minlength=4)) == [6] * 4  # 6 instances of each of 4 labels
        for label in range(4):  # one class per label, distinct drawings
            assert len(set(cls[y == label])) == 1
            assert len(set(drawing[y == label])) == 6
        assert len(set(cls)) == 4
        label_of_class0.add(int(y[np.argmin(cls)]))  # label of the smallest class index
        # the label input at step t is the one-hot of y[t-1]; zeros at t = 0
        prev = np.asarray(episodes.prev_label[e])
        np.testing.assert_array_equal(prev[0], np.zeros(4))
        np.testing.assert_array_equal(prev[1:], np.eye(4)[y[:-1]])
        inst = np.asarray(episodes.instance[e])
        np.testing.assert_array_equal(inst, [1 + np.sum(y[:t] == y[t]) for t in range(24)])
    assert len(label_of_class0) > 1  # labels are shuffled per episode
    with pytest.raises(ValueError, match="drawings per class"):
        sample_sequence(jax.random.PRNGKey(0), images, 4, 13)


def test_instance_numbers_and_offset_labels_by_hand():
    y = jnp.array([2, 0, 2, 2, 0, 1])
    np.testing.assert_array_equal(instance_numbers(y, 3), [1, 1, 2, 3, 2, 1])
    np.testing.assert_array_equal(offset_labels(y, 3),
                                  [[0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 1],
                                   [1, 0, 0]])


def test_instance_accuracy_metrics_by_hand():
    correct = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    instance = jnp.array([1, 1, 2, 1, 3, 2])
    acc = instance_accuracies(correct, instance, 3)
    assert float(acc["accuracy_1"]) == pytest.approx(2 / 3)  # steps 0, 1, 3
    assert float(acc["accuracy_2"]) == pytest.approx(1.0)  # steps 2, 5
    assert float(acc["accuracy_3"]) == pytest.approx(0.0)  # step 4
    # through the learner: a network that always answers label 0 is right on 1 of 3 classes at
    # every presentation of a balanced episode
    episode = sample_sequence(jax.random.PRNGKey(0), coded_images(3, 4), 3, 3)
    learner = sequence_learner(FeedForwardCell(num_outputs=3, hidden=4))
    params = jax.tree.map(jnp.zeros_like, learner.init(jax.random.PRNGKey(0), episode))
    params["params"]["output"]["bias"] = jnp.array([1.0, 0.0, 0.0])
    _, metrics = learner.loss(params, episode, None)
    for name in ("accuracy", "accuracy_1", "accuracy_2", "accuracy_3"):
        assert float(metrics[name]) == pytest.approx(1 / 3)


def test_sequence_protocol_config_and_learners():
    config = make_config("mann")
    assert config.sequence_protocol and config.image_size == 20 and config.split == "maml"
    assert config.steps == 28000 and make_config("lstm").steps == 10000
    assert (config.width, config.memory_slots, config.memory_width, config.read_heads) == (
        200, 128, 40, 4)
    assert make_config("lstm").sequence_protocol
    assert not make_config("lstm", protocol="episodes").sequence_protocol
    assert not make_config("snail").sequence_protocol
    with pytest.raises(ValueError, match="mann runs on protocol sequence"):
        make_config("mann", protocol="episodes")
    with pytest.raises(ValueError, match="--protocol does not apply to protonet"):
        make_config("protonet", protocol="sequence")
    with pytest.raises(ValueError, match="cannot be evaluated at ways=20"):
        build_learner(config, ways=20, phase="test")
    # each name builds its own cell, told apart by behaviour: the feed-forward net is stateless
    # (the same steps in another order give the same answers, reordered); only MANN answers from
    # an external memory (with the controller's own path to the output cut, its answers still
    # change from step to step, through what it reads back)
    episode = sequence_sampler(5, 2)(jax.random.PRNGKey(0), coded_images(6, 20))
    order = np.random.default_rng(0).permutation(10)
    reordered = jax.tree.map(lambda a: a[order], episode)  # each step keeps its own inputs
    rng, hidden = np.random.default_rng(1), 8
    for algo in ("mann", "lstm", "feedforward"):
        memory = {"memory_slots": 8} if algo == "mann" else {}
        learner = build_learner(make_config(algo, width=hidden, **memory))
        # random parameters, scaled by fan-in: no compiled `init` needed
        params = jax.tree.map(
            lambda s: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(
                np.float32),
            jax.eval_shape(learner.init, jax.random.PRNGKey(0), episode))
        predict = jax.jit(learner.predict)
        logits = np.asarray(predict(params, episode, None))
        assert logits.shape == (10, 5)
        stateless = np.allclose(predict(params, reordered, None), logits[order], atol=1e-6)
        params["params"]["output"]["kernel"][:hidden] = 0  # the controller's (hidden layer's)
        reads_memory = np.ptp(np.asarray(predict(params, episode, None)), axis=0).max()
        assert (stateless, reads_memory > 1e-4) == (algo == "feedforward", algo == "mann"), (
            algo, reads_memory)
    result = {"accuracy": 0.5, "accuracy_1": 0.2, "accuracy_1_ci95": 0.01, "accuracy_2": 0.7,
              "accuracy_2_ci95": 0.02, "accuracy_10": 0.9, "accuracy_10_ci95": 0.03}
    out = sequence_result(result, config)
    assert out["accuracy_by_instance"] == {"1": 0.2, "2": 0.7, "10": 0.9}
    assert out["accuracy_by_instance_ci95"] == {"1": 0.01, "2": 0.02, "10": 0.03}
    assert "accuracy_1" not in out and out["accuracy"] == 0.5


@pytest.mark.slow
def test_mann_short_real_run_is_clearly_above_chance(tmp_path, data_dir):
    # 3 classes x 5 instances (chance 1/3), a small MANN, 300 steps of 16 episodes (~15 s)
    config = make_config("mann", ways=3, instances=5, width=64, memory_slots=16, memory_width=16,
                         read_heads=1, data_dir=str(data_dir))
    sources, info = task_sources(config)
    assert info["split"] == "maml" and info["characters"]["test"] == 423
    learner = build_learner(config)
    train_src, test_src = sources["train"], sources["test"]
    state, _ = train(learner, optax.adam(3e-3), train_src.sample, train_src.data, steps=300,
                     meta_batch=16, seed=0, out_dir=tmp_path,
                     example_task=train_src.sample(jax.random.PRNGKey(0), train_src.data),
                     checkpoint_every=1000, log_every=100, progress=False)
    result = evaluate(learner, state.params, test_src.sample, test_src.data, episodes=300, seed=1)
    later = np.mean([result[f"accuracy_{k}"] for k in range(2, 6)])
    # first presentations: a new class takes an unused label (chance 1/3; ideal 1/3,1/2,1 -> 0.61)
    assert result["accuracy_1"] > 0.5, result
    # later presentations need the label bound to the image within the episode
    assert later > 0.39, result
    assert result["accuracy"] > 0.42, result


@pytest.mark.slow
def test_cli_train_then_eval_mann_writes_accuracy_by_instance(tmp_path, capsys, data_dir):
    from metajax.cli import main

    out = tmp_path / "mann"
    assert main(["train", "mann", "--out", str(out), "--width", "16", "--memory-slots", "8",
                 "--memory-width", "8", "--read-heads", "2", "--steps", "2", "--eval-episodes",
                 "10", "--val-every", "0", "--data-dir", str(data_dir), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["accuracy_by_instance"]) == [str(k) for k in range(1, 11)]
    assert summary["protocol"] == "sequence" and summary["split"]["split"] == "maml"
    assert "sequences of 5 classes x 10 instances" in capsys.readouterr().out
    assert main(["eval", str(out), "--episodes", "12", "--no-progress"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["episodes"] == 12 and set(result["accuracy_by_instance"]) == set(
        summary["accuracy_by_instance"])
    assert capsys.readouterr().out.strip().endswith(f"{result['accuracy']:.4f}")


def test_string_labels_episode_and_loss():
    # the paper's 15 classes with 5-character labels over 5 letters
    images = coded_images(classes=20, drawings=12)
    episode = sample_sequence(jax.random.PRNGKey(3), images, 15, 2, label_chars=5)
    assert episode.targets.shape == (30, 5) and episode.prev_label.shape == (30, 25)
    assert episode.alphabet == 5
    y, targets = np.asarray(episode.y), np.asarray(episode.targets)
    assert targets.min() >= 0 and targets.max() < 5
    strings = {}
    for label, code in zip(y, map(tuple, targets), strict=True):
        assert strings.setdefault(label, code) == code  # one string per class
    assert len(set(strings.values())) == 15  # distinct strings
    np.testing.assert_array_equal(episode.prev_label[0], np.zeros(25))
    np.testing.assert_array_equal(episode.prev_label[1:],
                                  np.eye(5)[targets[:-1]].reshape(29, 25))
    # all-zero logits: the loss is 5 characters x log(5)
    learner = sequence_learner(FeedForwardCell(num_outputs=25, hidden=4))
    params = jax.tree.map(jnp.zeros_like, learner.init(jax.random.PRNGKey(0), episode))
    value, metrics = learner.loss(params, episode, None)
    assert float(value) == pytest.approx(5 * np.log(5), rel=1e-5)
    # a step is right only if every character is: bias on letter 0 of each character
    params["params"]["output"]["bias"] = jnp.tile(jnp.array([1.0, 0, 0, 0, 0]), 5)
    _, metrics = learner.loss(params, episode, None)
    assert float(metrics["accuracy"]) == pytest.approx(np.mean(np.all(targets == 0, axis=1)))
    config = make_config("mann", ways=15, label_chars=5, width=8, memory_slots=8)
    learner = build_learner(config)
    params = jax.eval_shape(learner.init, jax.random.PRNGKey(0), episode)
    assert jax.eval_shape(learner.predict, params, episode, None).shape == (30, 25)
