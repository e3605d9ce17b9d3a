"""Black-box meta-learners: no inner gradient steps; a network reads the task and predicts.

- `sequence_learner(cell)`: the label-offset sequence protocol of Santoro et al. (MANN, and the LSTM
  and feed-forward baselines): the cell is scanned over a `SequenceEpisode`; the loss is the mean
  cross-entropy over all steps; metrics hold the accuracy of every step and `accuracy_<k>`, the
  accuracy on the k-th presentation of a class (k = 1..instances).
- `episode_blackbox(net)`: N-way K-shot episodes (`Task`) for the networks of `metajax.nets.blackbox`
  (LSTM over the support set, mean support embeddings + MLP, SNAIL): query cross-entropy.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax.data.sequences import SequenceEpisode
from metajax.learners.classification import cross_entropy
from metajax.nets.network import merge_variables, network, same_dtypes, split_variables
from metajax.types import Array, Learner, PRNGKey, Task, Variables, without_state


def instance_accuracies(correct: Array, instance: Array, instances: int) -> dict[str, Array]:
    """`accuracy_<k>`: the mean of `correct` over the steps that are the k-th presentation of their
    class, k = 1..instances (0 where an episode has none)."""
    out = {}
    for k in range(1, instances + 1):
        mask = (instance == k).astype(jnp.float32)
        out[f"accuracy_{k}"] = jnp.sum(correct * mask) / jnp.maximum(mask.sum(), 1.0)
    return out


def accuracy_by_instance(result: dict) -> dict[str, float]:
    """`{"1": acc, "2": ...}` from metrics named `accuracy_<k>` (an evaluation result)."""
    keys = sorted(int(k.split("_")[1]) for k in result
                   if k.startswith("accuracy_") and k.split("_")[1].isdigit()
                   and not k.endswith("_ci95"))
    return {str(k): result[f"accuracy_{k}"] for k in keys}


def sequence_learner(cell: nn.Module, *, running_average: bool = False) -> Learner:
    """A learner for label-offset sequence episodes over a cell `(state, (x, prev_label)[, train])
    -> (state, logits)` with `initial_state()` (`MANNCell`, `LSTMCell`, `FeedForwardCell`, or a
    user's own Flax cell).

    `predict` gives logits `[T, N]` for every step of the episode (string labels: `[T, L * A]`,
    one softmax per character); the cell's output size must be the label size. The cell's other
    collections are carried from step to step as state, step t gets `fold_in(key, t)` for its
    rng streams, and `train` is `not running_average` (`metajax.nets.network`).
    """
    wrapped = network(cell)

    def init(key: PRNGKey, episode: SequenceEpisode) -> Variables:
        return wrapped.init(key, cell.initial_state(), (episode.x[0], episode.prev_label[0]))

    def logits_and_state(variables: Variables, episode: SequenceEpisode, key: PRNGKey | None):
        params, state = split_variables(variables)

        def step(carry, inputs):
            memory, collections = carry
            x, prev, t = inputs
            k = None if key is None else jax.random.fold_in(key, t)
            (memory, logits), new = wrapped.apply(merge_variables(params, collections), memory,
                                                  (x, prev), key=k, train=not running_average)
            return (memory, same_dtypes(new, collections)), logits

        steps = jnp.arange(episode.x.shape[0])
        (_, state), logits = jax.lax.scan(step, (cell.initial_state(), state),
                                          (episode.x, episode.prev_label, steps))
        return logits, state

    def predict(variables: Variables, episode: SequenceEpisode,
                key: PRNGKey | None = None) -> Array:
        return logits_and_state(variables, episode, key)[0]

    def loss_and_state(variables: Variables, episode: SequenceEpisode,
                       key: PRNGKey | None = None):
        logits, state = logits_and_state(variables, episode, key)
        value, metrics = sequence_loss(logits, episode)
        return value, (metrics, state)

    loss = without_state(loss_and_state)

    return Learner(init=init, loss=loss, predict=predict, loss_and_state=loss_and_state)


def sequence_loss(logits: Array, episode: SequenceEpisode):
    """Loss and metrics of a sequence episode's logits `[T, L * A]`: one softmax per label
    character (L = 1: one-hot labels); the loss sums the characters' cross-entropies, and a step is
    correct if all its characters are."""
    logits = logits.reshape(*episode.targets.shape, episode.alphabet)
    value = optax.softmax_cross_entropy_with_integer_labels(logits, episode.targets)
    value = value.sum(axis=-1).mean()
    correct = jnp.all(jnp.argmax(logits, axis=-1) == episode.targets, axis=-1)
    correct = correct.astype(jnp.float32)
    instances = episode.y.shape[0] // episode.num_classes
    return value, {"loss": value, "accuracy": correct.mean(),
                   **instance_accuracies(correct, episode.instance, instances)}


def episode_blackbox(net: nn.Module, *, running_average: bool = False) -> Learner:
    """A learner for N-way K-shot `Task`s over a network `(support_x, support_y, query_x[, train])
    -> [Q, N]` (metajax's black-box nets, or a user's own with a `num_classes` attribute).

    The network's output size is fixed at construction (its training ways); a task with another
    number of classes is refused. Other collections are state, the key reaches the module's rng
    streams, and `train` is `not running_average` (`metajax.nets.network`).
    """
    wrapped = network(net)

    def check(task: Task) -> None:
        ways = getattr(net, "num_classes", task.num_classes)
        if task.num_classes != ways:
            raise ValueError(f"this black-box network has {ways} outputs (its training "
                             f"ways); it cannot classify {task.num_classes}-way episodes. Evaluate "
                             f"at --ways {ways}")

    def init(key: PRNGKey, task: Task) -> Variables:
        check(task)
        return wrapped.init(key, task.support_x, task.support_y, task.query_x)

    def logits_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        check(task)
        return wrapped.apply(variables, task.support_x, task.support_y, task.query_x, key=key,
                             train=not running_average)

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        return logits_and_state(variables, task, key)[0]

    def loss_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        logits, state = logits_and_state(variables, task, key)
        value, metrics = cross_entropy(logits, task.query_y)
        return value, (metrics, state)

    def loss(variables: Variables, task: Task, key: PRNGKey | None = None):
        return cross_entropy(predict(variables, task, key), task.query_y)

    return Learner(init=init, loss=loss, predict=predict, loss_and_state=loss_and_state)
