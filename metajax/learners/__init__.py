"""Meta-learners, each a `Learner` of pure functions over a network's variables.

Every factory takes a Flax module (metajax's nets or a user's own; see `metajax.nets.network`)
and its settings, and returns a `Learner`. The registry that builds them from a run's config is the
application's (`metajax.registry`).
"""

from __future__ import annotations

from metajax.learners.baselines import (
    ClassBatch,
    class_batch_sampler,
    finetune_learner,
    pretrain_learner,
)
from metajax.learners.blackbox import (
    accuracy_by_instance,
    episode_blackbox,
    instance_accuracies,
    sequence_learner,
)
from metajax.learners.closed_form import metaoptnet, r2d2, ridge_head, svm_dual
from metajax.learners.deml import ConceptBatch, concept_sampler, deml
from metajax.learners.imaml import imaml
from metajax.learners.implicit import implicit_argmin, implicit_root, implicit_vjp
from metajax.learners.maml import (
    anil,
    inner_loop,
    inner_loop_with_state,
    maml,
    metasgd,
    pretrained,
    reptile,
    sgd_step,
)
from metajax.learners.matching import MatchingNet, matching_net
from metajax.learners.protomaml import protomaml, prototype_head
from metajax.learners.protonet import protonet, prototypes, squared_distances
from metajax.learners.relation import RelationNet, relation_net
from metajax.learners.siamese import KochEmbedding, SiameseNet, SmallSiameseEmbedding, siamese


def fomaml(network, inner_lr: float = 0.4, steps: int = 1, **kwargs):
    """First-order MAML: `maml(..., first_order=True)`."""
    return maml(network, inner_lr, steps, first_order=True, **kwargs)


__all__ = [
    "ClassBatch", "ConceptBatch", "KochEmbedding", "MatchingNet", "RelationNet", "SiameseNet",
    "SmallSiameseEmbedding", "accuracy_by_instance", "anil", "class_batch_sampler", "concept_sampler",
    "deml", "episode_blackbox", "finetune_learner", "fomaml", "imaml", "implicit_argmin",
    "implicit_root", "implicit_vjp", "inner_loop", "inner_loop_with_state", "instance_accuracies",
    "maml", "matching_net", "metaoptnet", "metasgd", "pretrain_learner", "pretrained", "protomaml",
    "protonet", "prototype_head", "prototypes", "r2d2", "relation_net", "reptile", "ridge_head",
    "sequence_learner", "sgd_step", "siamese", "squared_distances", "svm_dual",
]
