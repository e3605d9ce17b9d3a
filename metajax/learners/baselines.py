"""Transfer-learning and multi-task baselines (Chen et al. 2019, "A closer look at few-shot
classification"): no meta-learning at all.

- `finetune` ("Baseline"): pre-train conv4 as an ordinary classifier over all meta-training classes;
  for each test episode fit a new linear head on the support embeddings.
- `baseline++`: the same with a cosine-similarity head (class weight vectors and embeddings
  L2-normalised, times a scale), both in pre-training and on the test episode.
- `multitask`: one conv4 trunk with a head per fixed training task (the training classes cut into
  fixed groups of N), trained on all tasks at once; tested like `finetune`.

At test time the head is fitted by full-batch Adam for `head_steps` steps from zero (`lax.scan`,
so it vmaps over episodes); optionally the trunk is then fine-tuned for `finetune_steps` more steps
with a small learning rate, unfreezing its layers one at a time from the earliest.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from metajax.data.episodes import to_float
from metajax.learners.classification import cross_entropy
from metajax.nets import Conv4
from metajax.nets.network import (
    Network,
    accepts_train,
    merge_variables,
    network,
    same_dtypes,
    split_variables,
)
from metajax.types import Array, Learner, Params, PRNGKey, Task, Variables, without_state

COSINE_SCALE = 10.0  # Chen et al.'s scale factor for the cosine classifier


@struct.dataclass
class ClassBatch:
    """A supervised mini-batch for pre-training: images `x [B, ...]`, labels `y [B]` in
    `[0, num_classes)`, and for multi-task training the task index `task` (a scalar) of
    `num_tasks` fixed tasks."""

    x: Array
    y: Array
    task: Array
    num_classes: int = struct.field(pytree_node=False, default=0)
    num_tasks: int = struct.field(pytree_node=False, default=1)


def class_batch_sampler(batch: int, num_classes: int, group: int = 0, seed: int = 0):
    """`sample(key, images) -> ClassBatch` over `images [C, D, ...]`.

    `group=0`: labels over all C classes, classes and drawings uniform. `group=N`: C // N fixed
    tasks (a seeded permutation of the classes cut into groups of N); each batch is one task,
    labels in [0, N)."""
    if group:
        tasks = num_classes // group
        if tasks < 1:
            raise ValueError(f"multitask needs at least {group} training classes, got {num_classes}")
        order = jax.random.permutation(jax.random.PRNGKey(seed), num_classes)[: tasks * group]
        table = order.reshape(tasks, group)

    def sample(key: PRNGKey, images: Array) -> ClassBatch:
        k_task, k_class, k_draw = jax.random.split(key, 3)
        draws = jax.random.randint(k_draw, (batch,), 0, images.shape[1])
        if group:
            task = jax.random.randint(k_task, (), 0, tasks)
            y = jax.random.randint(k_class, (batch,), 0, group)
            x = images[table[task, y], draws]
            return ClassBatch(to_float(x), y, task, group, tasks)
        y = jax.random.randint(k_class, (batch,), 0, num_classes)
        return ClassBatch(to_float(images[y, draws]), y, jnp.zeros((), jnp.int32), num_classes, 1)

    return jax.jit(sample)  # one compiled program when called outside a traced step


def cosine_logits(z: Array, w: Array, scale: float = COSINE_SCALE) -> Array:
    """`scale * cos(z_i, w_j)`: embeddings `[B, D]`, class weights `[D, N]` -> `[B, N]`."""
    zn = z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-8)
    wn = w / (jnp.linalg.norm(w, axis=0, keepdims=True) + 1e-8)
    return scale * zn @ wn


def head_logits(head: dict, z: Array, cosine: bool) -> Array:
    """Logits of a head `{"kernel" [D, N], "bias" [N]}` (the bias is unused by a cosine head)."""
    if cosine:
        return cosine_logits(z, head["kernel"])
    return z @ head["kernel"] + head["bias"]


class PretrainNet(nn.Module):
    """A trunk (conv4, or `trunk`: any Flax module `[B, ...] -> [B, D]`) + `num_tasks` heads of
    `num_classes` outputs (one head unless multi-task). The trunk's variables are under `trunk`
    in every collection."""

    width: int = 64
    downsample: str = "maxpool"
    cosine: bool = False
    trunk: nn.Module | None = None

    @nn.compact
    def __call__(self, x: Array, task: Array, num_classes: int, num_tasks: int,
                 train: bool = True) -> Array:
        if self.trunk is None:
            z = Conv4(width=self.width, downsample=self.downsample, name="trunk")(x)
        else:
            z = self.trunk(x, **({"train": train} if accepts_train(self.trunk) else {}))
        kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                            (num_tasks, z.shape[-1], num_classes))
        bias = self.param("bias", nn.initializers.zeros, (num_tasks, num_classes))
        return head_logits({"kernel": kernel[task], "bias": bias[task]}, z, self.cosine)


def trunk_params(params: Params) -> Params:
    """The trunk's variables (every collection's `trunk` entry), as the trunk's `apply` takes
    them."""
    return {name: tree["trunk"] for name, tree in params.items() if "trunk" in tree}


def _trunk_layers(trunk: Params) -> list[str]:
    """Trunk submodule names from the earliest layer to the latest (Conv_0, BatchNorm_0, ...)."""
    names = list(trunk["params"])
    return sorted(names, key=lambda n: (int(n.rsplit("_", 1)[1]), not n.startswith("Conv")))


def pretrain_learner(width: int = 64, downsample: str = "maxpool", cosine: bool = False, *,
                     trunk: nn.Module | None = None) -> Learner:
    """The training phase of every baseline: cross-entropy of the classifier on a `ClassBatch`.
    `trunk` (default conv4 of `width`, `downsample`) may be any Flax module; its other
    collections are state and the key reaches its rng streams (`metajax.nets.network`)."""
    net = network(PretrainNet(width, downsample, cosine, trunk))

    def init(key: PRNGKey, batch: ClassBatch) -> Variables:
        return net.init(key, batch.x, batch.task, batch.num_classes, batch.num_tasks)

    def logits_and_state(variables: Variables, batch: ClassBatch, key: PRNGKey | None = None):
        return net.apply(variables, batch.x, batch.task, batch.num_classes, batch.num_tasks,
                         key=key, train=True)

    def predict(variables: Variables, batch: ClassBatch, key: PRNGKey | None = None) -> Array:
        return logits_and_state(variables, batch, key)[0]

    def loss_and_state(variables: Variables, batch: ClassBatch, key: PRNGKey | None = None):
        logits, state = logits_and_state(variables, batch, key)
        value, metrics = cross_entropy(logits, batch.y)
        return value, (metrics, state)

    loss = without_state(loss_and_state)

    return Learner(init=init, loss=loss, predict=predict, loss_and_state=loss_and_state)


def fit_head(z: Array, labels: Array, num_classes: int, *, cosine: bool, steps: int,
             lr: float) -> dict:
    """A new head fitted on support embeddings `z [S, D]` by `steps` of full-batch Adam from
    zero (cosine heads from the class means, since a zero weight has no direction)."""
    d = z.shape[-1]
    if cosine:
        one_hot = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)
        kernel = (one_hot.T @ z).T / jnp.maximum(one_hot.sum(0), 1.0)
    else:
        kernel = jnp.zeros((d, num_classes), z.dtype)
    head = {"kernel": kernel, "bias": jnp.zeros((num_classes,), z.dtype)}
    opt = optax.adam(lr)
    z = jax.lax.stop_gradient(z)

    def step(carry, _):
        head, state = carry
        grads = jax.grad(lambda h: cross_entropy(head_logits(h, z, cosine), labels)[0])(head)
        updates, state = opt.update(grads, state, head)
        return (optax.apply_updates(head, updates), state), None

    (head, _), _ = jax.lax.scan(step, (head, opt.init(head)), None, length=steps)
    return head


def finetune(trunk: nn.Module | Network, trunk_vars: Params, head: dict, task: Task, *,
             cosine: bool, steps: int, lr: float, key: PRNGKey | None = None,
             train: bool = True) -> tuple[Params, dict]:
    """Fine-tunes trunk and head together on the support set for `steps` Adam steps, unfreezing
    the trunk's layers one at a time from the earliest: layer i (of L) trains from step
    `i * steps / L` on, so all are training by the end. Returns the new (trunk vars, head)."""
    net = trunk if isinstance(trunk, Network) else network(trunk)
    layers = _trunk_layers(trunk_vars)
    opt = optax.adam(lr)
    params, collections = split_variables(trunk_vars)
    both = ({"params": params}, head)

    def support_loss(b, colls, k):
        z, colls = net.apply(merge_variables(b[0]["params"], colls),
                             jnp.concatenate([task.support_x, task.query_x]), key=k, train=train)
        logits = head_logits(b[1], z[: task.support_x.shape[0]], cosine)
        return cross_entropy(logits, task.support_y)[0], colls

    def masked(tree, unfrozen):
        return {"params": {name: jax.tree.map(lambda t, k=k: t * (k < unfrozen), tree["params"][name])
                           for k, name in enumerate(layers)}}

    def step(carry, i):
        b, state, colls = carry
        unfrozen = jnp.floor(i * len(layers) / steps) + 1  # layers training at this step
        k = None if key is None else jax.random.fold_in(key, i)
        grads, new = jax.grad(support_loss, has_aux=True)(b, colls, k)
        grads = (masked(grads[0], unfrozen), grads[1])
        updates, state = opt.update(grads, state, b)
        updates = (masked(updates[0], unfrozen), updates[1])
        return (optax.apply_updates(b, updates), state, same_dtypes(new, colls)), None

    (both, _, collections), _ = jax.lax.scan(step, (both, opt.init(both), collections),
                                             jnp.arange(steps))
    return merge_variables(both[0]["params"], collections), both[1]


def finetune_learner(width: int = 64, downsample: str = "maxpool", cosine: bool = False,
                     head_steps: int = 100, head_lr: float = 0.01, finetune_steps: int = 0,
                     finetune_lr: float = 1e-4, *, trunk: nn.Module | None = None,
                     running_average: bool = False) -> Learner:
    """The test phase of every baseline: embed the episode with the pre-trained trunk (support and
    query in one batch, as the other learners' batch norm does; with `running_average=True` in
    `train=False` mode), fit a new head on the support set, then optionally `finetune` the trunk and
    the head together for `finetune_steps` steps. `trunk` is the module `pretrain_learner` was
    given (default conv4). `adapt(variables, task, key) -> (trunk variables, head)`."""
    net = network(trunk if trunk is not None else Conv4(width=width, downsample=downsample))
    train = not running_average

    def embed(tp: Params, task: Task, key: PRNGKey | None) -> tuple[Array, Array]:
        z, _ = net.apply(tp, jnp.concatenate([task.support_x, task.query_x]), key=key,
                         train=train)
        n = task.support_x.shape[0]
        return z[:n], z[n:]

    def adapt(variables: Variables, task: Task, key: PRNGKey | None = None) -> tuple[Params, dict]:
        k_embed, k_tune = (None, None) if key is None else jax.random.split(key)
        tp = trunk_params(variables)
        zs, _ = embed(tp, task, k_embed)
        head = fit_head(zs, task.support_y, task.num_classes, cosine=cosine, steps=head_steps,
                        lr=head_lr)
        if finetune_steps <= 0:
            return tp, head
        return finetune(net, tp, head, task, cosine=cosine, steps=finetune_steps,
                        lr=finetune_lr, key=k_tune, train=train)

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        k_adapt, k_query = (None, None) if key is None else jax.random.split(key)
        tp, head = adapt(variables, task, k_adapt)
        _, zq = embed(tp, task, k_query)
        return head_logits(head, zq, cosine)

    def loss(variables: Variables, task: Task, key: PRNGKey | None = None):
        return cross_entropy(predict(variables, task, key), task.query_y)

    def init(key: PRNGKey, task: Task) -> Params:
        raise ValueError("the baselines' test-phase learner evaluates pre-trained parameters; "
                         "initialise with the training-phase learner")

    return Learner(init=init, loss=loss, predict=predict, adapt=adapt)
