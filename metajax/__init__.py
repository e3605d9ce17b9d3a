"""metajax: meta-learning and few-shot learning as pure JAX functions.

A learner is a `Learner` of pure functions (`init`, `adapt`, `loss`, `predict`) over a Flax
network's variables; the trainer maps it over the tasks of a meta-batch sampled on the device and
jits the whole step. Bring your own Flax module:

    learner = metajax.maml(MyNet(), inner_lr=0.4, steps=1)
    variables = learner.init(key, task)            # {"params": ..., "batch_stats": ...}
    adapted = learner.adapt(variables, task, key)  # the variables after the inner loop
    loss, metrics = learner.loss(variables, task, key)
"""

from metajax import data, learners, nets, training
from metajax.data import episode_sampler, load_omniglot, sample_episode
from metajax.learners import (
    anil,
    deml,
    episode_blackbox,
    finetune_learner,
    fomaml,
    maml,
    matching_net,
    metasgd,
    pretrain_learner,
    pretrained,
    protonet,
    relation_net,
    reptile,
    sequence_learner,
    siamese,
)
from metajax.nets.network import Network, network
from metajax.training import (
    TrainState,
    evaluate,
    init_state,
    make_train_step,
    meta_gradient,
    train,
)
from metajax.types import Learner, Task

__version__ = "0.1.0"
__all__ = [
    "Learner", "Network", "Task", "TrainState", "__version__", "anil", "data", "deml",
    "episode_blackbox", "episode_sampler", "evaluate", "finetune_learner", "fomaml", "init_state",
    "learners", "load_omniglot", "make_train_step", "maml", "matching_net", "meta_gradient",
    "metasgd", "nets", "network", "pretrain_learner", "pretrained", "protonet", "relation_net",
    "reptile", "sample_episode", "sequence_learner", "siamese", "train", "training",
]
