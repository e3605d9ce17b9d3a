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
from metajax.types import Array, Learner, Metrics, Params, PRNGKey, SampleFn, Task

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
         first_order: bool = False, remat: bool = False) -> Learner:
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

    Returns:
      A `Learner` with parameters `{"generator", "discriminator", "learner": {"init"[, "lr"]}}`.
      `loss` takes a `ConceptBatch` (training: the combined loss) or a `Task` (evaluation: the
      meta loss); `predict` takes a `Task`. `init` takes a `ConceptBatch` (it reads the number of
      external classes from it).
    """
    if meta_learner not in META_LEARNERS:
        raise ValueError(f"meta_learner must be one of {META_LEARNERS}, got {meta_learner!r}")

    def init(key: PRNGKey, sample: ConceptBatch) -> Params:
        if not isinstance(sample, ConceptBatch):
            raise TypeError("deml.init needs a ConceptBatch (it reads the external classes)")
        k_gen, k_learner, k_disc = jax.random.split(key, 3)
        generator_params = generator.init(k_gen, sample.task.support_x)
        concepts = generator.apply(generator_params, sample.task.support_x)
        head = nn.Dense(ways).init(k_learner, concepts)["params"]
        learner = {"init": head}
        if meta_learner == "metasgd":
            learner["lr"] = jax.tree.map(lambda p: jnp.full_like(p, inner_lr), head)
        discriminator = nn.Dense(sample.num_external).init(k_disc, concepts)["params"]
        return {"generator": generator_params, "discriminator": discriminator, "learner": learner}

    def predict(params: Params, task: Task, key: PRNGKey | None = None) -> Array:
        del key
        support = generator.apply(params["generator"], task.support_x)
        query = generator.apply(params["generator"], task.query_x)

        def support_loss(head):
            return cross_entropy(_linear(head, support), task.support_y)[0]

        lr = params["learner"]["lr"] if meta_learner == "metasgd" else inner_lr
        adapted = inner_loop(support_loss, params["learner"]["init"], lr, steps,
                             first_order=first_order, remat=remat)
        return _linear(adapted, query)

    def discrimination_loss(params: Params, x: Array, y: Array) -> tuple[Array, Metrics]:
        """Cross-entropy of the concept discriminator on external examples."""
        return cross_entropy(_linear(params["discriminator"], generator.apply(params["generator"],
                                                                              x)), y)

    def loss_fn(params: Params, sample: ConceptBatch | Task, key: PRNGKey | None = None):
        task = sample.task if isinstance(sample, ConceptBatch) else sample
        meta_loss, metrics = cross_entropy(predict(params, task, key), task.query_y)
        if not isinstance(sample, ConceptBatch) or concept_weight == 0:
            return meta_loss, metrics
        disc_loss, disc = discrimination_loss(params, sample.external_x, sample.external_y)
        total = meta_loss + concept_weight * disc_loss
        return total, {"loss": total, "accuracy": metrics["accuracy"], "meta_loss": meta_loss,
                       "disc_loss": disc_loss, "disc_accuracy": disc["accuracy"]}

    return Learner(init=init, loss=loss_fn, predict=predict)
