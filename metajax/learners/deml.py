"""Deep meta-learning in concept space (DEML, Zhou, Wu and Li 2018).

Three parts trained jointly:

- a concept generator G (`ConceptResNet`) maps images to concept vectors;
- a concept discriminator D, a linear head over the classes of an external labelled dataset,
  classifies G's concepts of an external batch (loss `L_discrimination`);
- a meta-learner M adapts a linear learner on the concept vectors of a task's support set with
  Meta-SGD (per-parameter learning rates, the paper's best) or MAML, reusing `inner_loop`; its
  query loss is `L_meta`.

The training objective is `L = L_meta + concept_weight * L_discrimination`; G receives gradients
from both terms, D from the second, M from the first. Only the learner on the concepts is adapted
in the inner loop; G is shared by all tasks (the meta-gradient reaches it through the concepts).

A training sample is a `ConceptBatch`: one few-shot task plus a slice of the external batch. The
generic trainer draws `meta_batch` of them per step and differentiates their mean loss, which is
`mean L_meta + concept_weight * L_discrimination` over all `meta_batch * per_task` external
examples, so the trainer needs no second data source. Batch norm in G uses the statistics of the
batch G is applied to: the support set, the query set and each external slice separately.

On Omniglot the external classes are the meta-training classes (see `check_external_classes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from metajax.data.episodes import check_episode_shape, sample_episode, to_float
from metajax.learners.classification import cross_entropy
from metajax.learners.maml import inner_loop
from metajax.nets.network import network, split_variables
from metajax.types import Array, Learner, Params, PRNGKey, SampleFn, Task, Variables, without_state

MetaLearnerName = Literal["metasgd", "maml"]
META_LEARNERS = ("metasgd", "maml")


@struct.dataclass
class ConceptBatch:
    """One DEML training sample: a few-shot task and a batch of the external dataset.

    Attributes:
      task: the few-shot episode (meta loss).
      external_x: external images `[B, H, W, C]` (float in [0, 1]).
      external_y: their external class labels `[B]` in `[0, num_external)`.
      num_external: number of external classes (the discriminator's outputs). Static.
    """

    task: Task
    external_x: Array
    external_y: Array
    num_external: int = struct.field(pytree_node=False, default=0)


def check_external_classes(external: Sequence[str], test: Sequence[str]) -> dict:
    """Checks that no meta-test class (nor another rotation of a meta-test character) is among the
    external classes, and returns a summary for the results.

    Class names are `Alphabet/characterNN/rotDDD` (Omniglot) or plain names (miniImageNet); the
    character is the name without its `/rotDDD` suffix.

    Raises:
      ValueError: naming the overlapping classes.
    """

    def character(name: str) -> str:
        head, _, tail = name.rpartition("/")
        return head if head and tail.startswith("rot") else name

    overlap = sorted({character(n) for n in external} & {character(n) for n in test})
    if overlap:
        shown = ", ".join(overlap[:5]) + (", ..." if len(overlap) > 5 else "")
        raise ValueError(
            f"the external dataset holds {len(overlap)} meta-test characters/classes ({shown}); "
            f"the concept discriminator must never see meta-test classes. Use the meta-training "
            f"classes (or a dataset disjoint from the test split) as external data."
        )
    return {"external_classes": len(external), "test_classes": len(test), "overlap": 0}


def sample_external(key: PRNGKey, images: Array, batch: int) -> tuple[Array, Array]:
    """`batch` images drawn uniformly (with replacement) from `images [classes, drawings, ...]`,
    labelled by their class index."""
    k_class, k_drawing = jax.random.split(key)
    classes = jax.random.randint(k_class, (batch,), 0, images.shape[0])
    drawings = jax.random.randint(k_drawing, (batch,), 0, images.shape[1])
    return to_float(images[classes, drawings]), classes.astype(jnp.int32)


def concept_sampler(ways: int, shots: int, queries: int, external_per_task: int,
                    images_shape: tuple[int, ...] | None = None,
                    where: str = "the split") -> SampleFn:
    """`sample(key, images) -> ConceptBatch`: an N-way K-shot episode and `external_per_task`
    external examples, both from `images` (the meta-training classes, which are also the external
    classes). Checks the episode shape when `images_shape` is given."""
    if external_per_task < 1:
        raise ValueError(f"external_per_task must be >= 1, got {external_per_task}")
    if images_shape is not None:
        check_episode_shape(images_shape, ways, shots, queries, where=where)

    def sample(key: PRNGKey, images: Array) -> ConceptBatch:
        images = jnp.asarray(images)
        k_task, k_external = jax.random.split(key)
        task = sample_episode(k_task, images, ways, shots, queries)
        x, y = sample_external(k_external, images, external_per_task)
        return ConceptBatch(task, x, y, num_external=images.shape[0])

    return jax.jit(sample)  # one compiled program when called outside a traced step


def _linear(params: Params, x: Array) -> Array:
    return x @ params["kernel"] + params["bias"]


def deml(generator: nn.Module, ways: int, inner_lr: float = 0.4, steps: int = 1, *,
         concept_weight: float = 1.0, meta_learner: MetaLearnerName = "metasgd",
         first_order: bool = False, remat: bool = False, running_average: bool = False) -> Learner:
    """DEML: concept generator + concept discriminator + Meta-SGD (or MAML) on concepts.

    Args:
      generator: Flax module `[B, H, W, C] -> [B, d]` (for example `ConceptResNet()`).
      ways: outputs of the learner adapted on concepts (N of the training episodes).
      inner_lr: inner learning rate (Meta-SGD: the start of every per-parameter rate).
      steps: inner steps.
      concept_weight: lambda of `L_meta + lambda * L_discrimination`; 0 trains G by the meta loss
        alone (the discriminator is then not evaluated and gets no gradient).
      meta_learner: "metasgd" or "maml".
      first_order: drop second derivatives in the inner loop.
      remat: `jax.checkpoint` each inner step.
      running_average: apply the generator with `train=False` (batch norm's running averages, no
        dropout) instead of in training mode; any Flax module works as the generator.

    Returns:
      A `Learner` with variables `{"params": {"generator", "discriminator", "learner": {"init"[,
      "lr"]}}, ...}`: the generator's other collections (`batch_stats`) sit under `generator` in
      theirs (runs saved in the earlier layout without `params` are converted when restored).
      `loss` takes a `ConceptBatch` (training: the combined loss) or a `Task` (evaluation: the
      meta loss); `predict` takes a `Task`. `init` takes a `ConceptBatch` (it reads the number of
      external classes from it).
    """
    if meta_learner not in META_LEARNERS:
        raise ValueError(f"meta_learner must be one of {META_LEARNERS}, got {meta_learner!r}")

    gen = network(generator)

    def init(key: PRNGKey, sample: ConceptBatch) -> Variables:
        if not isinstance(sample, ConceptBatch):
            raise TypeError("deml.init needs a ConceptBatch (it reads the external classes)")
        k_gen, k_learner, k_disc = jax.random.split(key, 3)
        generator_vars = gen.init(k_gen, sample.task.support_x)
        concepts, _ = gen.apply(generator_vars, sample.task.support_x, key=k_gen)
        head = nn.Dense(ways).init(k_learner, concepts)["params"]
        learner = {"init": head}
        if meta_learner == "metasgd":
            learner["lr"] = jax.tree.map(lambda p: jnp.full_like(p, inner_lr), head)
        discriminator = nn.Dense(sample.num_external).init(k_disc, concepts)["params"]
        params, state = split_variables(generator_vars)
        return {"params": {"generator": params, "discriminator": discriminator,
                           "learner": learner},
                **{name: {"generator": tree} for name, tree in state.items()}}

    def generator_vars(variables: Variables) -> Variables:
        return {name: tree["generator"] for name, tree in variables.items()}

    def concepts(variables: Variables, x: Array, key: PRNGKey | None):
        """The generator on `x` (train mode unless `running_average`) and its updated state,
        re-nested under `generator`."""
        out, state = gen.apply(generator_vars(variables), x, key=key, train=not running_average)
        return out, {name: {"generator": tree} for name, tree in state.items()}

    def predict_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        k_support, k_query = (None, None) if key is None else jax.random.split(key)
        support, _ = concepts(variables, task.support_x, k_support)
        query, state = concepts(variables, task.query_x, k_query)
        learner = variables["params"]["learner"]

        def support_loss(head):
            return cross_entropy(_linear(head, support), task.support_y)[0]

        lr = learner["lr"] if meta_learner == "metasgd" else inner_lr
        adapted = inner_loop(support_loss, learner["init"], lr, steps, first_order=first_order,
                             remat=remat)
        return _linear(adapted, query), state

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        return predict_and_state(variables, task, key)[0]

    def loss_and_state(variables: Variables, sample: ConceptBatch | Task,
                       key: PRNGKey | None = None):
        task = sample.task if isinstance(sample, ConceptBatch) else sample
        k_task, k_external = (None, None) if key is None else jax.random.split(key)
        logits, state = predict_and_state(variables, task, k_task)
        meta_loss, metrics = cross_entropy(logits, task.query_y)
        if not isinstance(sample, ConceptBatch) or concept_weight == 0:
            return meta_loss, (metrics, state)
        external, _ = concepts(variables, sample.external_x, k_external)
        disc_loss, disc = cross_entropy(
            _linear(variables["params"]["discriminator"], external), sample.external_y)
        total = meta_loss + concept_weight * disc_loss
        return total, ({"loss": total, "accuracy": metrics["accuracy"], "meta_loss": meta_loss,
                        "disc_loss": disc_loss, "disc_accuracy": disc["accuracy"]}, state)

    loss_fn = without_state(loss_and_state)

    return Learner(init=init, loss=loss_fn, predict=predict, loss_and_state=loss_and_state)
