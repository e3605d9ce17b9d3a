"""The application's registry: algorithm name -> how to build its learner (and, for learners not
trained on N-way episodes, its training sampler) from a run's `Config`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn

from metajax.config import ALGO_SETTINGS, Config, MetaOptNetConfig
from metajax.data.pairs import check_pairs_shape, pair_sampler
from metajax.data.sequences import label_size
from metajax.learners import (
    KochEmbedding,
    MatchingNet,
    RelationNet,
    SiameseNet,
    SmallSiameseEmbedding,
    anil,
    class_batch_sampler,
    concept_sampler,
    deml,
    episode_blackbox,
    finetune_learner,
    imaml,
    maml,
    matching_net,
    metaoptnet,
    metasgd,
    pretrain_learner,
    pretrained,
    protomaml,
    protonet,
    r2d2,
    relation_net,
    reptile,
    sequence_learner,
    siamese,
)
from metajax.learners.imaml import AUTHORS_SYSTEM_OFFSET
from metajax.nets import MLP, ConceptResNet, Conv4, ResNet12
from metajax.nets.blackbox import SNAIL, LSTMBlackBox, MeanEmbeddingBlackBox
from metajax.nets.mann import FeedForwardCell, LSTMCell, MANNCell
from metajax.types import Learner, SampleFn

PHASES = ("train", "test")


def _embedding(config: Config) -> nn.Module:
    """conv4 of `width` filters, or ResNet-12 (its own widths: `--width` is refused)."""
    if config.backbone == "resnet12":
        if config.width != 64:
            raise ValueError("--width sets conv4's filters; --backbone resnet12 has its own "
                             "(64-160-320-640)")
        return ResNet12()
    return Conv4(width=config.width)


def _protonet(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del ways, shots, phase
    return protonet(_embedding(config))


def _network(config: Config, ways: int, phase: str) -> tuple[nn.Module, str]:
    """The network and loss of a gradient-based learner: MLP 1-40-40-1 and MSE for the sinusoid,
    conv4 with an N-way head and cross-entropy for Omniglot."""
    if config.dataset == "sinusoid":
        return MLP(hidden=(40, 40), num_outputs=1), "mse"
    if phase == "test" and ways != config.train_ways_:
        raise ValueError(
            f"{config.algo} has a classifier head of {config.train_ways_} outputs (its training "
            f"ways); it cannot be evaluated at ways={ways}. Evaluate at --ways {config.train_ways_}"
        )
    return Conv4(width=config.width, num_outputs=config.train_ways_,
                 downsample=config.downsample), "xent"


def _steps(config: Config, phase: str) -> int:
    return config.inner_steps if phase == "train" else config.test_inner_steps_


def _maml(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del shots
    network, loss = _network(config, ways, phase)
    return maml(network, config.inner_lr, _steps(config, phase),
                first_order=config.algo == "fomaml", remat=config.remat, loss=loss)


def _metasgd(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del shots
    network, loss = _network(config, ways, phase)
    return metasgd(network, config.inner_lr, _steps(config, phase), remat=config.remat, loss=loss,
                   first_order=config.first_order)


def _anil(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del shots
    network, loss = _network(config, ways, phase)
    return anil(network, config.inner_lr, _steps(config, phase), remat=config.remat, loss=loss)


def _protomaml(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    """Conv4's features as the embedding; the output layer comes from each task's prototypes, so
    any number of ways can be evaluated."""
    del ways, shots
    return protomaml(Conv4(width=config.width, downsample=config.downsample), config.inner_lr,
                     _steps(config, phase), first_order=config.first_order, remat=config.remat)


def _imaml(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    """iMAML; evaluated on the training proximal problem unless `test_proximal_lambda` says
    otherwise (0: plain gradient descent)."""
    del shots
    network, loss = _network(config, ways, phase)
    test_lam = (config.proximal_lambda if config.test_proximal_lambda < 0
                else config.test_proximal_lambda)
    if phase == "test" and test_lam == 0:
        return maml(network, config.inner_lr, _steps(config, phase), first_order=True, loss=loss)
    lam = config.proximal_lambda if phase == "train" else test_lam
    return imaml(network, config.inner_lr, _steps(config, phase), lam=lam,
                 cg_steps=config.cg_steps, cg_damping=config.cg_damping,
                 pull_back=config.pull_back,
                 system_lam=lam + AUTHORS_SYSTEM_OFFSET if config.pull_back else None, loss=loss)


def _r2d2(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del ways, shots, phase
    return r2d2(_embedding(config), lam=config.ridge_lambda, scale=config.logit_scale)


def _metaoptnet(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    """The SVM head has no ridge regulariser and the ridge head no SVM settings: a value given
    for the other head's settings is an error rather than ignored."""
    del ways, shots, phase
    defaults = {f.name: f.default for f in dataclasses.fields(MetaOptNetConfig)}
    unused = ("svm_c", "svm_iterations") if config.head == "ridge" else ("ridge_lambda",)
    changed = [name for name in unused if getattr(config, name) != defaults[name]]
    if changed:
        raise ValueError(f"metaoptnet --head {config.head} does not use "
                         f"{', '.join('--' + n.replace('_', '-') for n in changed)}")
    return metaoptnet(_embedding(config), config.head, c=config.svm_c,
                      lam=config.ridge_lambda, iterations=config.svm_iterations,
                      scale=config.logit_scale)


def _reptile(config: Config, ways: int, shots: int, phase: str = "train",
             inner_state=None) -> Learner:
    del shots
    network, loss = _network(config, ways, phase)
    if config.fresh_test_state:
        inner_state = None
    return reptile(network, config.inner_lr, _steps(config, phase), inner_batch=config.inner_batch,
                   loss=loss, keep_inner_state=not config.fresh_inner_state,
                   test_inner_state=inner_state if phase == "test" else None)


def _pretrained(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    """Trained by plain regression; at test fine-tuned with MAML's inner loop (first order)."""
    del shots
    network, loss = _network(config, ways, phase)
    if phase == "train":
        return pretrained(network, loss=loss)
    return maml(network, config.inner_lr, config.test_inner_steps_, first_order=True, loss=loss)


def _siamese(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del ways, shots, phase
    if config.image_size >= 64:  # Koch et al.'s twin for 105x105 images
        return siamese(SiameseNet(KochEmbedding(width=config.width)))
    return siamese(SiameseNet(SmallSiameseEmbedding(width=config.width, features=4 * config.width)))


def _relation(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del ways, shots, phase
    return relation_net(RelationNet(width=config.width))


def _matching(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del ways, shots, phase
    return matching_net(MatchingNet(width=config.width, fce=config.fce))


def _blackbox_ways(config: Config, ways: int) -> int:
    """Black-box networks have one output per training class; other ways at test are refused."""
    if ways != config.train_ways_:
        raise ValueError(f"{config.algo} has {config.train_ways_} outputs (its training ways); it "
                         f"cannot be evaluated at ways={ways}. Evaluate at --ways "
                         f"{config.train_ways_}")
    return ways


def _sequence_outputs(config: Config, ways: int) -> int:
    """Logits per step on the sequence protocol: N, or the size of the string labels."""
    return label_size(_blackbox_ways(config, ways), config.label_chars)


def _mann(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del shots, phase
    return sequence_learner(MANNCell(_sequence_outputs(config, ways), hidden=config.width,
                                     slots=config.memory_slots, width=config.memory_width,
                                     heads=config.read_heads))


def _lstm(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    """The sequence baseline (MANN's controller alone), or with `protocol="episodes"` an LSTM over
    the support set of N-way K-shot episodes."""
    del shots, phase
    if config.sequence_protocol:
        return sequence_learner(LSTMCell(_sequence_outputs(config, ways), hidden=config.width))
    ways = _blackbox_ways(config, ways)
    return episode_blackbox(LSTMBlackBox(Conv4(width=config.width), ways))


def _feedforward(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    """The stateless sequence baseline, or with `protocol="episodes"` an MLP on the query and the
    per-class mean support embeddings."""
    del shots, phase
    if config.sequence_protocol:
        return sequence_learner(FeedForwardCell(_sequence_outputs(config, ways),
                                                hidden=config.width))
    ways = _blackbox_ways(config, ways)
    return episode_blackbox(MeanEmbeddingBlackBox(Conv4(width=config.width), ways))


def _snail(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del shots, phase
    return episode_blackbox(SNAIL(Conv4(width=config.width), _blackbox_ways(config, ways)))


def _deml(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    del shots
    if phase == "test" and ways != config.train_ways_:
        raise ValueError(f"deml has a learner of {config.train_ways_} outputs (its training ways); "
                         f"evaluate it at --ways {config.train_ways_}")
    generator = ConceptResNet(width=config.width, stages=config.concept_stages,
                              blocks=config.concept_blocks)
    return deml(generator, config.train_ways_, config.inner_lr, _steps(config, phase),
                concept_weight=config.concept_weight, meta_learner=config.meta_learner,
                first_order=config.first_order, remat=config.remat)


def _deml_concepts(config: Config, images_shape: tuple[int, ...], where: str) -> SampleFn:
    """Episodes plus external examples, both from the meta-training classes."""
    if config.external_batch % config.meta_batch:
        raise ValueError(f"external_batch={config.external_batch} must be a multiple of "
                         f"meta_batch={config.meta_batch} (each task carries an equal slice)")
    return concept_sampler(config.train_ways_, config.train_shots_, config.queries_,
                           config.external_batch // config.meta_batch, images_shape, where)


def _baseline(config: Config, ways: int, shots: int, phase: str = "train") -> Learner:
    """finetune / baseline++ / multitask: a classifier at training, a new head per test episode."""
    del ways, shots
    cosine = config.algo == "baseline++"
    if phase == "train":
        return pretrain_learner(config.width, config.downsample, cosine)
    return finetune_learner(config.width, config.downsample, cosine, config.head_steps,
                            config.head_lr, config.finetune_steps, config.finetune_lr)


def _class_batches(config: Config, images_shape: tuple[int, ...], where: str) -> SampleFn:
    """Supervised batches over all training classes (multitask: fixed tasks of `ways` classes)."""
    if len(images_shape) < 3:
        raise ValueError(f"{where}: expected images [classes, drawings, ...], got {images_shape}")
    group = config.train_ways_ if config.algo == "multitask" else 0
    if group and images_shape[0] < group:
        raise ValueError(f"{where} has {images_shape[0]} classes; multitask needs at least "
                         f"{group} (one task of --train-ways classes)")
    return class_batch_sampler(config.batch_size, images_shape[0], group, seed=config.seed)


def _siamese_pairs(config: Config, images_shape: tuple[int, ...], where: str) -> SampleFn:
    check_pairs_shape(images_shape, config.pairs, where)
    return pair_sampler(config.pairs, config.affine)


# name -> build(config, ways, shots, phase): the learner for episodes of that many ways and shots;
# phase "train" is the learner meta-trained, "test" the one evaluated (for example MAML with
# `test_inner_steps` inner steps). Both share one parameter structure.
LEARNERS: dict[str, Callable[..., Learner]] = {
    "protonet": _protonet,
    "maml": _maml,
    "fomaml": _maml,
    "metasgd": _metasgd,
    "anil": _anil,
    "protomaml": _protomaml,
    "imaml": _imaml,
    "r2d2": _r2d2,
    "metaoptnet": _metaoptnet,
    "reptile": _reptile,
    "pretrained": _pretrained,
    "siamese": _siamese,
    "relation": _relation,
    "matching": _matching,
    "mann": _mann,
    "lstm": _lstm,
    "feedforward": _feedforward,
    "snail": _snail,
    "deml": _deml,
    "finetune": _baseline,
    "baseline++": _baseline,
    "multitask": _baseline,
}

# name -> training_sampler(config, train_images_shape, where) for learners that are not trained on
# N-way episodes (checks the shape with a clear error, returns `sample(key, images)`). Learners not
# listed here train on the usual episodes; all are evaluated on N-way K-shot episodes.
TRAIN_SAMPLERS: dict[str, Callable[[Config, tuple[int, ...], str], SampleFn]] = {
    "siamese": _siamese_pairs,
    "deml": _deml_concepts,
    "finetune": _class_batches,
    "baseline++": _class_batches,
    "multitask": _class_batches,
}


class Algorithm(NamedTuple):
    """What the application knows of an algorithm: its settings class (`metajax.config`), how to
    build its learner from a run's config, the sampler it trains on (None: N-way K-shot episodes,
    or label-offset sequences for the sequence protocol), the datasets it runs on, and the
    experiment that runs it (`metajax.experiment.EXPERIMENTS`: "episodic", or "l2o" for the
    learned optimiser)."""

    settings: type
    build: Callable[..., Learner]
    train_sampler: Callable[[Config, tuple[int, ...], str], SampleFn] | None
    datasets: tuple[str, ...]
    experiment: str = "episodic"


_EPISODIC = ("omniglot", "miniimagenet", "tieredimagenet", "cifar-fs", "fc100", "folder")
_DATASETS = {"maml": (*_EPISODIC, "sinusoid"), "fomaml": (*_EPISODIC, "sinusoid"),
             "metasgd": (*_EPISODIC, "sinusoid"),
             "pretrained": ("sinusoid",),
             "l2o": ("quadratic", "mlp")}
_EXPERIMENTS = {"l2o": "l2o"}  # the rest are "episodic"
ALGORITHMS: dict[str, Algorithm] = {
    algo: Algorithm(ALGO_SETTINGS[algo], LEARNERS.get(algo), TRAIN_SAMPLERS.get(algo),
                    _DATASETS.get(algo, _EPISODIC), _EXPERIMENTS.get(algo, "episodic"))
    for algo in ALGO_SETTINGS
}


def build_learner(config: Config, ways: int | None = None, shots: int | None = None,
                  phase: str = "train", inner_state=None) -> Learner:
    """The learner named by `config.algo`, for episodes of `ways`/`shots` (default: config's), as
    meta-trained (`phase="train"`) or as evaluated (`phase="test"`). `inner_state` is a stateful
    learner's carried state (`TrainState.inner_state`), which its evaluation adapts from."""
    if config.algo not in LEARNERS:
        raise ValueError(f"unknown algorithm {config.algo!r}; choose one of {', '.join(LEARNERS)}")
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    extra = {} if inner_state is None else {"inner_state": inner_state}
    return LEARNERS[config.algo](config, ways or config.ways, shots or config.shots, phase,
                                 **extra)


