"""One frozen configuration per experiment; per-algorithm defaults sized for a 2-core CPU, and the
papers' settings behind `full_protocol=True`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DATASETS = ("omniglot", "sinusoid", "quadratic", "mlp", "miniimagenet", "tieredimagenet",
            "cifar-fs", "fc100", "folder")
# datasets with the papers' augmentation and normalisation (metajax.data.augment)
AUGMENTED_DATASETS = ("miniimagenet", "tieredimagenet", "cifar-fs", "fc100")
# image datasets whose split comes with the data (the `split` setting is their name)
FIXED_SPLITS = {"miniimagenet": ("ravi", 84), "tieredimagenet": ("tieredimagenet", 84),
                "cifar-fs": ("cifar-fs", 32), "fc100": ("fc100", 32),
                "folder": ("folder", None)}
L2O_DATASETS = ("quadratic", "mlp")  # optimisee families of the learned optimiser (algo l2o)


def setting(default, help: str, choices: tuple | None = None):
    """A config field with its command-line help (and allowed values): the CLI is generated from
    these."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


# --- the parts every episodic experiment has -------------------------------------------------

@dataclass(frozen=True)
class DataConfig:
    """Which data and episodes. `ways`/`shots` are the test setting; training episodes use
    `train_ways`/`train_shots` (0: the same) with `queries` query examples per class (0: as many
    as training shots, MAML's protocol); test episodes use `test_queries`. For the sinusoid,
    `shots`/`queries`/`test_queries` count points per task."""

    dataset: str = setting("omniglot", "dataset", DATASETS)
    ways: int = setting(5, "N of the test episodes")
    shots: int = setting(1, "K of the test episodes")
    train_ways: int = setting(0, "N of training episodes (0: --ways)")
    train_shots: int = setting(0, "K of training episodes (0: --shots)")
    queries: int = setting(5, "query examples per class in training episodes (0: training shots)")
    test_queries: int = setting(15, "query examples per class in test episodes")
    split: str = setting("vinyals", "class split (Omniglot's; the other datasets have their own)",
                         ("maml", "vinyals", "lake", "ravi", "tieredimagenet", "cifar-fs", "fc100",
                          "folder"))
    split_seed: int = setting(1, "seed of the MAML split")
    image_size: int = setting(28, "image side in pixels")
    data_dir: str | None = setting(None, "folder holding omniglot/ (default $METAJAX_DATA_DIR)")
    within_alphabet: bool = setting(False, "training episodes draw all N classes from one "
                                    "alphabet (and rotation), as within-alphabet test episodes do")
    paired_drawers: bool = setting(False, "training episodes take every class's support drawings "
                                   "from the same drawers and its queries from other drawers (one "
                                   "person per set, as the official runs; Omniglot only)")
    affine: bool = setting(False, "Koch's random affine distortions of every training image "
                           "(Siamese pairs, or the support and query images of training "
                           "episodes; Omniglot only)")
    stream: bool = setting(False, "gather training episodes on the host and prefetch them (data "
                           "larger than device memory) instead of sampling them on the device")
    augment: bool = setting(False, "augment training episodes on the device as MetaOptNet does "
                            "(random crop of the padded image, colour jitter, horizontal flip)")
    normalize: bool = setting(False, "normalise every episode by the dataset's per-channel mean "
                              "and standard deviation (the papers' values)")


@dataclass(frozen=True)
class TrainConfig:
    """How meta-training runs: the outer optimiser (`optimizer` adam or sgd, `lr` halved by
    `lr_decay` every `lr_decay_every` steps or annealed linearly to 0 with `lr_anneal`, gradients
    clipped to `clip_norm`), validation, checkpoints and how a meta-batch's tasks are mapped
    (`task_map`, `metajax.training.map_over_tasks`)."""

    steps: int = setting(2000, "meta-training steps")
    meta_batch: int = setting(1, "tasks per meta-step")
    lr: float = setting(1e-3, "outer learning rate")
    lr_decay_every: int = setting(0, "multiply the learning rate by --lr-decay every N steps (0: "
                                  "never)")
    lr_decay: float = setting(0.5, "factor of that decay")
    lr_anneal: bool = setting(False, "anneal the outer learning rate linearly to 0")
    optimizer: str = setting("adam", "outer optimiser", ("adam", "sgd"))
    clip_norm: float = setting(0.0, "clip the global gradient norm (0: no clipping)")
    seed: int = setting(0, "seed of initialisation and training tasks")
    val_every: int = setting(500, "steps between validations (0: none)")
    val_episodes: int = setting(200, "validation episodes")
    checkpoint_every: int = setting(500, "steps between checkpoints")
    log_every: int = setting(50, "steps between metric lines")
    task_map: str = setting("vmap", "how a meta-batch's tasks run: vmap, map (one by one), map:N "
                            "(chunks of N vmapped tasks) or auto (map on a CPU, vmap elsewhere)")


@dataclass(frozen=True)
class EvalConfig:
    """The test episodes: how many, from which seed."""

    eval_episodes: int = setting(1000, "test episodes")
    eval_seed: int = setting(12345, "seed of the test episodes")


# --- one settings class per learner family (and per member where members differ) -------------

@dataclass(frozen=True)
class MamlConfig:
    """MAML, FOMAML and ANIL: conv4 (or the sinusoid MLP) adapted by SGD in an inner loop."""

    width: int = setting(64, "filters per conv layer")
    downsample: str = setting("maxpool", "conv4 downsampling", ("maxpool", "stride"))
    inner_lr: float = setting(0.4, "inner-loop learning rate")
    inner_steps: int = setting(1, "inner steps at training")
    test_inner_steps: int = setting(0, "inner steps at evaluation (0: as training)")
    remat: bool = setting(False, "jax.checkpoint each inner step (less memory for many steps)")


@dataclass(frozen=True)
class MetaSGDConfig(MamlConfig):
    """Meta-SGD: MAML with meta-learned per-parameter rates (`inner_lr` is their start)."""

    first_order: bool = setting(False, "drop second derivatives of the inner loop")


@dataclass(frozen=True)
class ProtoMamlConfig(MamlConfig):
    """ProtoMAML: MAML whose output layer starts from each task's class prototypes."""

    first_order: bool = setting(False, "drop second derivatives of the inner loop (the gradient "
                                       "through the prototypes is kept)")


@dataclass(frozen=True)
class ImamlConfig(MamlConfig):
    """iMAML: the inner problem is proximal (`proximal_lambda`), solved by `inner_steps` gradient
    steps; the meta-gradient is implicit (`cg_steps` conjugate-gradient iterations)."""

    proximal_lambda: float = setting(0.5, "lambda of the inner problem's proximal term")
    cg_steps: int = setting(5, "conjugate-gradient iterations of the implicit meta-gradient")
    cg_damping: float = setting(1.0, "damping of that linear system: ((1 + d) I + H/lambda)")
    test_proximal_lambda: float = setting(-1.0, "lambda at evaluation (-1: the training lambda; "
                                          "0: plain gradient descent from the meta-parameters, "
                                          "as the authors evaluate)")
    pull_back: bool = setting(False, "adapt as the authors' code: the inner steps descend the "
                              "support loss alone, one step of the proximal term pulls back "
                              "towards the meta-parameters, and the meta-gradient solves "
                              "((1 + d) I + H/(lambda + 10))")


@dataclass(frozen=True)
class ReptileConfig:
    """Reptile: inner Adam steps on mini-batches; the update moves towards the adapted weights."""

    width: int = setting(64, "filters per conv layer")
    downsample: str = setting("maxpool", "conv4 downsampling", ("maxpool", "stride"))
    inner_lr: float = setting(0.4, "inner Adam learning rate")
    inner_steps: int = setting(1, "inner steps at training")
    test_inner_steps: int = setting(0, "inner steps at evaluation (0: as training)")
    inner_batch: int = setting(10, "examples per inner mini-batch")
    fresh_inner_state: bool = setting(False, "a fresh inner Adam per task (default: its moments "
                                      "carry over from task to task, as in the authors' code)")
    fresh_test_state: bool = setting(False, "adapt test tasks from a fresh Adam (default: from the "
                                     "state meta-training ended with, as the authors evaluate)")


@dataclass(frozen=True)
class PretrainedConfig:
    """The sinusoid's pretrained baseline: plain regression, fine-tuned at test by SGD."""

    inner_lr: float = setting(0.4, "learning rate of the test-time fine-tuning")
    inner_steps: int = setting(1, "fine-tuning steps (when --test-inner-steps is 0)")
    test_inner_steps: int = setting(0, "fine-tuning steps at evaluation")


@dataclass(frozen=True)
class ProtoNetConfig:
    """Prototypical Networks over conv4."""

    width: int = setting(64, "filters per conv layer")


@dataclass(frozen=True)
class EmbeddingConfig(ProtoNetConfig):
    """Metric and closed-form learners whose embedding can be conv4 or ResNet-12."""

    backbone: str = setting("conv4", "embedding network (resnet12: Lee et al.'s 64-160-320-640, "
                            "features averaged over space)", ("conv4", "resnet12"))


@dataclass(frozen=True)
class R2D2Config(EmbeddingConfig):
    """R2D2: conv4 features and a ridge-regression head per task; the regulariser, the logits'
    scale and bias are meta-learned from the starting values here."""

    ridge_lambda: float = setting(50.0, "ridge regulariser (R2D2: its starting value)")
    logit_scale: float = setting(10.0, "the logits' starting scale")


@dataclass(frozen=True)
class MetaOptNetConfig(R2D2Config):
    """MetaOptNet: conv4 features and a multiclass SVM (or ridge) head per task; the logits'
    scale is meta-learned."""

    head: str = setting("svm", "MetaOptNet's head", ("svm", "ridge"))
    svm_c: float = setting(0.1, "the SVM's C (--head svm)")
    svm_iterations: int = setting(100, "FISTA iterations of the SVM dual (--head svm)")


@dataclass(frozen=True)
class RelationConfig(ProtoNetConfig):
    """Relation Networks."""


@dataclass(frozen=True)
class MatchingConfig(ProtoNetConfig):
    """Matching Networks."""

    fce: bool = setting(False, "full context embeddings (LSTMs over support and queries)")


@dataclass(frozen=True)
class SiameseConfig(ProtoNetConfig):
    """Siamese networks trained on same/different pairs."""

    pairs: int = setting(128, "same/different pairs per training step")


@dataclass(frozen=True)
class SnailConfig:
    """Black-box learners on N-way K-shot episodes (SNAIL; LSTM / feed-forward with
    `--protocol episodes`): `width` is the conv4 encoder's filters."""

    width: int = setting(64, "conv4 encoder filters (episodes) or controller units (sequences)")
    protocol: str = setting("episodes", "label-offset sequences or N-way K-shot episodes",
                            ("sequence", "episodes"))


@dataclass(frozen=True)
class SequenceConfig(SnailConfig):
    """The LSTM and feed-forward sequence learners (Santoro et al.'s baselines)."""

    instances: int = setting(10, "sequence: presentations of each class")
    label_chars: int = setting(0, "sequence: 0 one-hot labels; 5 the paper's 5-character strings")


@dataclass(frozen=True)
class MANNConfig(SequenceConfig):
    """MANN: an LSTM controller with an LRUA memory."""

    memory_slots: int = setting(128, "memory rows")
    memory_width: int = setting(40, "memory columns")
    read_heads: int = setting(4, "read heads")


@dataclass(frozen=True)
class L2OConfig:
    """The learned optimiser (Andrychowicz et al.): `steps` meta-training runs of `horizon`
    optimisee steps cut into truncated unrolls of `unroll` steps, `meta_batch` optimisees per run,
    `width` LSTM units; `val_episodes` training problems tune the baselines' learning rates,
    `eval_episodes` held-out problems score them."""

    width: int = setting(20, "LSTM units")
    unroll: int = setting(20, "steps per truncated unroll")
    horizon: int = setting(100, "optimisee steps per run")
    preprocess_p: float = setting(10.0, "p of the gradient preprocessing (0: raw gradients)")
    second_order: bool = setting(False, "keep second derivatives (no stop_gradient on the "
                                 "optimisee gradient)")


@dataclass(frozen=True)
class DemlConfig:
    """DEML: L = L_meta + concept_weight * L_discrimination; a ResNet concept generator of
    `width` filters, `concept_stages` stages of `concept_blocks` blocks; `external_batch`
    external examples per step, split over the meta-batch."""

    width: int = setting(64, "filters of the concept generator")
    inner_lr: float = setting(0.4, "inner-loop learning rate (Meta-SGD: its start)")
    inner_steps: int = setting(1, "inner steps at training")
    test_inner_steps: int = setting(0, "inner steps at evaluation (0: as training)")
    remat: bool = setting(False, "jax.checkpoint each inner step")
    first_order: bool = setting(False, "drop second derivatives of the inner loop")
    concept_weight: float = setting(1.0, "lambda (0: no discriminator)")
    external_batch: int = setting(64, "external examples per step")
    concept_stages: int = setting(3, "ResNet stages of the concept generator")
    concept_blocks: int = setting(1, "residual blocks per stage")
    meta_learner: str = setting("metasgd", "learner on the concepts", ("metasgd", "maml"))


@dataclass(frozen=True)
class BaselineConfig:
    """Transfer baselines (finetune, baseline++, multitask): a classifier pre-trained on batches
    of `batch_size` images; at test a new head fitted by `head_steps` of Adam, then optionally
    `finetune_steps` of the whole network, unfreezing from the earliest layer."""

    width: int = setting(64, "filters per conv layer")
    downsample: str = setting("maxpool", "conv4 downsampling", ("maxpool", "stride"))
    batch_size: int = setting(128, "pre-training images per step")
    head_steps: int = setting(100, "Adam steps fitting a new head per test episode")
    head_lr: float = setting(0.01, "learning rate of the new head")
    finetune_steps: int = setting(0, "then fine-tune the whole network this many steps (0: head "
                                  "only)")
    finetune_lr: float = setting(1e-4, "learning rate of that fine-tuning")


# algorithm -> its settings class (the registry of the application adds the learner builders)
ALGO_SETTINGS: dict[str, type] = {
    "maml": MamlConfig, "fomaml": MamlConfig, "anil": MamlConfig, "metasgd": MetaSGDConfig,
    "protomaml": ProtoMamlConfig, "imaml": ImamlConfig,
    "r2d2": R2D2Config, "metaoptnet": MetaOptNetConfig,
    "reptile": ReptileConfig, "pretrained": PretrainedConfig,
    "protonet": EmbeddingConfig, "relation": RelationConfig, "matching": MatchingConfig,
    "siamese": SiameseConfig,
    "mann": MANNConfig, "lstm": SequenceConfig, "feedforward": SequenceConfig, "snail": SnailConfig,
    "l2o": L2OConfig, "deml": DemlConfig,
    "finetune": BaselineConfig, "baseline++": BaselineConfig, "multitask": BaselineConfig,
}
SHARED_PARTS: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
# The learned optimiser reads these of the shared parts only (it has no episodes).
L2O_SHARED = ("dataset", "image_size", "data_dir", "steps", "meta_batch", "lr", "seed",
              "val_episodes", "checkpoint_every", "log_every", "eval_episodes", "eval_seed")


def _fields(cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def settings_of(algo: str) -> dict[str, list[dataclasses.Field]]:
    """The settings an algorithm has, by part: `{"data": [...], "train": [...], "eval": [...],
    <algo>: [...]}` (fields of the part classes)."""
    if algo not in ALGO_SETTINGS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGO_SETTINGS)}")
    parts = {name: _fields(cls) for name, cls in SHARED_PARTS.items()}
    if algo == "l2o":
        parts = {name: [f for f in fs if f.name in L2O_SHARED] for name, fs in parts.items()}
    return {**parts, algo: _fields(ALGO_SETTINGS[algo])}


def applicable(algo: str) -> set[str]:
    """Names of the settings of `algo`."""
    return {f.name for fs in settings_of(algo).values() for f in fs}


def algorithms_with(name: str) -> list[str]:
    """The algorithms that have setting `name`."""
    return [algo for algo in ALGO_SETTINGS if name in applicable(algo)]


def _all_fields() -> list[tuple[str, type, dataclasses.Field]]:
    """Every setting of every part, once (a name shared by families keeps its first default)."""
    seen: dict[str, tuple[str, type, dataclasses.Field]] = {}
    for cls in [*SHARED_PARTS.values(), *dict.fromkeys(ALGO_SETTINGS.values())]:
        for f in _fields(cls):
            if f.name not in seen:
                seen[f.name] = (f.name, f.type, dataclasses.field(default=f.default,
                                                                  metadata=f.metadata))
    return list(seen.values())


class _ConfigMethods:
    """Derived values and views of the resolved `Config`."""

    @property
    def train_ways_(self) -> int:
        return self.train_ways or self.ways

    @property
    def train_shots_(self) -> int:
        return self.train_shots or self.shots

    @property
    def queries_(self) -> int:
        """Query examples per class of training episodes (points per task for regression)."""
        return self.queries or self.train_shots_

    @property
    def sequence_protocol(self) -> bool:
        """Whether the run uses label-offset sequence episodes instead of N-way K-shot episodes."""
        return self.protocol == "sequence"

    @property
    def test_inner_steps_(self) -> int:
        return self.test_inner_steps or self.inner_steps

    def to_dict(self) -> dict:
        """`algo`, `full_protocol` and the settings of this algorithm, flat (`config.json`)."""
        names = applicable(self.algo)
        return {"algo": self.algo, "full_protocol": self.full_protocol,
                **{k: v for k, v in dataclasses.asdict(self).items() if k in names}}

    def parts(self) -> dict:
        """The experiment config as its parts: `{"algo", "full_protocol", "data": {...}, "train":
        {...}, "eval": {...}, <algo>: {...}}`, each holding the settings of this algorithm only
        (`metajax train ALGO --print-config`)."""
        values = dataclasses.asdict(self)
        return {"algo": self.algo, "full_protocol": self.full_protocol,
                **{part: {f.name: values[f.name] for f in fs}
                   for part, fs in settings_of(self.algo).items()}}


Config = dataclasses.make_dataclass(
    "Config", [("algo", str), *_all_fields(), ("full_protocol", bool, False)],
    bases=(_ConfigMethods,), frozen=True)
Config.__module__ = __name__
Config.__doc__ = """The resolved configuration of a run: every setting of every part, so that the
application reads one record; `make_config` accepts only the settings of the run's algorithm
(`settings_of`), the others keep their defaults and are not written to `config.json`."""


# Per-algorithm defaults: (CPU-sized, full paper protocol). Only fields that differ from Config.
ALGO_DEFAULTS: dict[str, tuple[dict, dict]] = {
    "protonet": (
        # 30-way training episodes (paper: 60) and a shorter schedule fit a 20-minute CPU budget
        # (benchmarks/results/protonet_omniglot.md).
        dict(train_ways=30, queries=5, steps=3000, lr_decay_every=1000, split="vinyals"),
        # Snell et al.: 60-way training, 5 queries, Adam 1e-3 halved every 2000 episodes.
        dict(train_ways=60, queries=5, steps=20000, lr_decay_every=2000, split="vinyals"),
    ),
    # R2D2 and MetaOptNet at ProtoNets' CPU settings (30-way training episodes, 5 queries).
    "r2d2": (dict(train_ways=30, queries=5, steps=3000, lr_decay_every=1000, split="vinyals"),
             # Bertinetto et al.: 60-way training episodes on Omniglot (their Table 1 setting).
             dict(train_ways=60, queries=5, steps=20000, lr_decay_every=2000, split="vinyals")),
    # MetaOptNet's logits start at scale 10 too: the SVM's dual is small (C = 0.1), and a scale of
    # 1 leaves conv4's logits near uniform, so learning starts slowly.
    "metaoptnet": (dict(train_ways=30, queries=5, steps=3000, lr_decay_every=1000,
                        split="vinyals"),
                   dict(train_ways=60, queries=5, steps=20000, lr_decay_every=2000,
                        split="vinyals")),
    "siamese": (
        # 28x28 twins (conv4 + dense sigmoid), balanced pairs from the Vinyals training classes.
        dict(image_size=28, pairs=64, steps=3000, lr_decay_every=1000, split="vinyals"),
        # Koch et al.: 105x105 images, the paper's twin, batches of 128 pairs with affine
        # distortions. Their training classes are the background alphabets (lake split); they used
        # SGD with momentum and per-layer rates, we use Adam.
        dict(image_size=105, pairs=128, affine=True, steps=50000, lr=1e-4, lr_decay_every=10000,
             split="lake", val_every=0),
    ),
    "relation": (
        # 5-way training episodes with 10 queries per class, the learning rate annealed linearly
        # to 0: the schedule that fits a 30-minute CPU budget (results and timings:
        # benchmarks/results/metric_omniglot_relation.md, relation_speed.md).
        dict(train_ways=5, queries=10, steps=26000, lr_anneal=True, val_every=2000,
             split="vinyals"),
        # Sung et al.: 5-way episodes with 19 queries per class (20-way: 10), Adam 1e-3 halved
        # every 100k episodes, 1M episodes.
        dict(train_ways=5, queries=19, steps=1000000, lr_decay_every=100000, split="vinyals"),
    ),
    "matching": (
        # 20-way training episodes, plain cosine attention (no FCE), which is faster
        # (benchmarks/results/metric_omniglot_matching.md).
        dict(train_ways=20, queries=5, steps=3000, lr_decay_every=1000, split="vinyals"),
        # Vinyals et al.: full context embeddings; train N-way = test N-way; Adam.
        dict(train_ways=0, queries=5, fce=True, steps=40000, lr_decay_every=10000, split="vinyals"),
    ),
}


# MAML and its relatives on Omniglot. Finn et al.: conv4 with stride-2 convolutions, query set of K
# examples per class, inner lr 0.4, 1 inner step at training and 3 at test (5-way), meta-batch 32,
# Adam 1e-3, 60,000 iterations, the MAML split (1100/100 train/val characters, 423 test). On 2 CPU
# cores: the paper's meta-batch of 32 and fewer steps, sized to under an hour
# (benchmarks/results/maml_omniglot.md). task_map "auto": tasks one after another on a CPU, which
# keeps one task's temporaries instead of 32 tasks' (benchmarks/results/maml_speed_*.md).
_MAML_CPU = dict(split="maml", downsample="stride", queries=0, inner_lr=0.4, inner_steps=1,
                 test_inner_steps=3, meta_batch=32, steps=13000, lr=1e-3, val_every=1000,
                 eval_episodes=600, task_map="auto")
_MAML_FULL = dict(split="maml", downsample="stride", queries=0, inner_lr=0.4, inner_steps=1,
                  test_inner_steps=3, meta_batch=32, steps=60000, lr=1e-3, val_every=2000,
                  eval_episodes=600, task_map="auto")
# Finn et al., 20-way Omniglot: 5 inner steps with lr 0.1, meta-batch 16 (applied when ways >= 20).
MAML_FULL_20WAY = dict(inner_lr=0.1, inner_steps=5, test_inner_steps=5, meta_batch=16)
for _algo in ("maml", "fomaml", "metasgd", "anil", "protomaml"):
    ALGO_DEFAULTS[_algo] = (dict(_MAML_CPU), dict(_MAML_FULL))
# iMAML (Rajeswaran et al. 2019; the authors' Omniglot example): 16 gradient steps of lr 0.1,
# lambda 2, 5 CG steps with damping 1, meta-batch 32, Adam 1e-3, 20,000+ meta-steps; evaluated by 16
# plain gradient steps (lambda 0). MAML's conv4 (stride 2) and split. The authors' code takes its
# 16 steps on the support loss alone and then one step of the proximal term (phi moves a fifth of
# the way back to theta), and its CG system is (2 I + H / (lambda + 10)): it adapts much further
# than the proximal problem with lambda 2 that this learner solves. With lambda 2 our CPU run's
# training accuracy stayed at 0.58-0.63 from step 100 to 750; lambda 0.5 reached 0.76 by step 200
# (0.58 with lambda 2 at the same step), so lambda is 0.5 here. Test tasks are adapted on the
# same proximal problem (test_proximal_lambda -1): on our CPU run this scored higher than plain
# gradient descent (the commit that made it the default gives both figures).
_IMAML = dict(split="maml", downsample="stride", queries=0, inner_lr=0.1, inner_steps=16,
              test_inner_steps=16, proximal_lambda=0.5, cg_steps=5, cg_damping=1.0, meta_batch=32,
              lr=1e-3, val_every=1000, eval_episodes=600, task_map="auto")
# CPU: meta-batch 16. Halving the inner steps at twice the rate leaves the inner problem far from
# stationary, and the implicit gradient then points away from the solver's (cosine 0.72 against
# 0.98 on an Omniglot task).
ALGO_DEFAULTS["imaml"] = (dict(_IMAML, meta_batch=16, steps=3000), dict(_IMAML, steps=20000))
# Reptile (Nichol et al., Omniglot): 5 inner Adam (b1=0) steps of lr 1e-3 on batches of 10 drawn from
# 10 examples per class (5 shots + 5 queries), meta step 1.0 annealed linearly to 0 (SGD), meta-batch
# 5, 100,000 iterations; 50 inner steps on the support set at test. As in the authors' code, the
# inner Adam's moments carry over from task to task (`fresh_inner_state=False`).
_REPTILE = dict(split="maml", downsample="stride", train_shots=5, queries=5, inner_lr=1e-3,
                inner_steps=5, test_inner_steps=50, inner_batch=10, meta_batch=5,
                optimizer="sgd", lr=1.0, lr_anneal=True, eval_episodes=600)
ALGO_DEFAULTS["reptile"] = (
    # CPU: 20,000 steps, about 30 minutes (benchmarks/results/maml_omniglot.md).
    dict(_REPTILE, steps=20000, task_map="map", val_every=5000, val_episodes=100),
    dict(_REPTILE, steps=100000, val_every=5000),
)
# DEML (Zhou et al. 2018) on Omniglot: the MAML split; the external classes are the meta-training
# classes (4400); Meta-SGD with one inner step on a linear learner over the concepts of a 3-stage
# ResNet of width 32. CPU: meta-batch 4 and 64 external examples per step.
_DEML = dict(split="maml", queries=5, inner_lr=0.4, inner_steps=1, test_inner_steps=1, width=32,
             concept_weight=1.0, external_batch=64, lr=1e-3, val_every=500, val_episodes=100,
             eval_episodes=600)
ALGO_DEFAULTS["deml"] = (dict(_DEML, meta_batch=4, steps=2000),
                         dict(_DEML, meta_batch=32, steps=60000, external_batch=256))
# Transfer baselines (Chen et al. 2019): conv4 pre-trained as a classifier over all training classes
# (Vinyals split) with Adam 1e-3, batches of 128; at test a new head per episode. CPU: 3000 steps
# (benchmarks/results/baselines_omniglot.md); the paper trains 400 epochs (full protocol: 40000
# steps).
# multitask: fixed tasks of 5 training classes, a head each.
_BASELINE = dict(split="vinyals", batch_size=128, lr=1e-3, lr_decay_every=1000, val_every=1000,
                 val_episodes=100, eval_episodes=600)
for _algo in ("finetune", "baseline++", "multitask"):
    ALGO_DEFAULTS[_algo] = (dict(_BASELINE, steps=3000), dict(_BASELINE, steps=40000,
                                                              lr_decay_every=10000))
# The pretrained baseline is for regression only (see SINUSOID_DEFAULTS).
ALGO_DEFAULTS["pretrained"] = (dict(), dict())

# Sinusoid regression (Finn et al.): MLP 1-40-40-1, K=10 points, inner lr 0.01, 1 inner step, meta-
# batch 25, Adam 1e-3, 70,000 iterations; evaluated after 10 steps on 600 tasks. Query points: K at
# training, 100 at test (a lower-variance estimate of the same expected MSE). The paper's schedule
# fits a CPU (benchmarks/results/sinusoid.md), so the CPU defaults are the paper's.
_SINUSOID = dict(shots=10, queries=0, test_queries=100, inner_lr=0.01, inner_steps=1,
                 test_inner_steps=10, meta_batch=25, steps=70000, lr=1e-3, val_every=0,
                 eval_episodes=600, log_every=1000, checkpoint_every=10000)
SINUSOID_DEFAULTS: dict[str, tuple[dict, dict]] = {
    algo: (dict(_SINUSOID), dict(_SINUSOID)) for algo in ("maml", "fomaml", "metasgd", "pretrained")
}


# Learned optimisers (Andrychowicz et al.): 2-layer LSTM of 20 units, p = 10, Adam 1e-3 on truncated
# unrolls of 20 steps over runs of 100 steps, second derivatives dropped; the authors' code trains
# 10,000 runs (epochs) on batches of 128 quadratics, or one MNIST MLP per run.
_L2O = dict(width=20, unroll=20, horizon=100, preprocess_p=10.0, lr=1e-3, eval_episodes=100,
            val_episodes=100, eval_seed=12345, val_every=0)
L2O_DEFAULTS: dict[str, tuple[dict, dict]] = {
    "quadratic": (dict(_L2O, meta_batch=128, steps=500, log_every=20, checkpoint_every=200),
                  dict(_L2O, meta_batch=128, steps=10000, log_every=100, checkpoint_every=1000)),
    "mlp": (dict(_L2O, image_size=28, meta_batch=1, steps=100, val_episodes=20, log_every=10,
                 checkpoint_every=50),
            dict(_L2O, image_size=28, meta_batch=1, steps=10000, log_every=100,
                 checkpoint_every=1000)),
}
ALGO_DEFAULTS["l2o"] = L2O_DEFAULTS["quadratic"]


# Black-box learners. The sequence protocol (Santoro et al.): 20x20 images, the MAML split's 1100
# training characters (+ 100 validation; 423 test), 5 classes x 10 instances per episode, LSTM
# controller of 200 units, memory 128 x 40 with 4 read heads; the paper trained 100,000 episodes
# (RMSprop 1e-4); on 2 CPU cores Adam 1e-3 on batches of 16 episodes.
_SEQUENCE = dict(protocol="sequence", split="maml", image_size=20, ways=5, instances=10, width=200,
                 meta_batch=16, lr=1e-3, clip_norm=10.0, steps=10000, val_every=2000,
                 val_episodes=200, eval_episodes=1000, log_every=100, checkpoint_every=1000)
# --full-protocol: 100,000 iterations of 16 episodes (the reading of reimplementations).
_SEQUENCE_FULL = dict(_SEQUENCE, steps=100000, val_every=5000, checkpoint_every=5000)
# N-way K-shot black-box learners (CS330 framing): conv4 encoder (28 px, Vinyals split), 5-way
# training episodes with 5 queries per class; evaluated on 600 test episodes.
_EPISODES = dict(protocol="episodes", split="vinyals", image_size=28, queries=5, meta_batch=4,
                 steps=3000, lr=1e-3, lr_decay_every=1000, val_every=1000, eval_episodes=600)
_EPISODES_FULL = dict(_EPISODES, steps=40000, meta_batch=16, lr_decay_every=10000, val_every=5000)
# MANN's CPU default: 28,000 steps, under an hour (benchmarks/results/mann_omniglot.md).
ALGO_DEFAULTS["mann"] = (dict(_SEQUENCE, steps=28000), dict(_SEQUENCE_FULL))
for _algo in ("lstm", "feedforward"):  # the sequence baselines by default; --protocol episodes
    ALGO_DEFAULTS[_algo] = (dict(_SEQUENCE), dict(_SEQUENCE_FULL))
ALGO_DEFAULTS["snail"] = (dict(_EPISODES), dict(_EPISODES_FULL))
BLACKBOX_PROTOCOLS = {"mann": ("sequence",), "lstm": ("sequence", "episodes"),
                      "feedforward": ("sequence", "episodes"), "snail": ("episodes",)}


def _blackbox_fields(algo: str, full_protocol: bool, overrides: dict) -> dict:
    """Defaults of a black-box learner for its protocol (`--protocol episodes` switches the LSTM and
    feed-forward learners from the sequence protocol to N-way K-shot episodes)."""
    protocol = overrides.get("protocol", BLACKBOX_PROTOCOLS[algo][0])
    if protocol not in BLACKBOX_PROTOCOLS[algo]:
        raise ValueError(f"{algo} runs on protocol {' or '.join(BLACKBOX_PROTOCOLS[algo])}, "
                         f"not {protocol!r}")
    if protocol == BLACKBOX_PROTOCOLS[algo][0]:  # the algorithm's own defaults
        return dict(ALGO_DEFAULTS[algo][1 if full_protocol else 0])
    if protocol == "sequence":
        return dict(_SEQUENCE_FULL if full_protocol else _SEQUENCE)
    return dict(_EPISODES_FULL if full_protocol else _EPISODES)


def _l2o_config(algo: str, full_protocol: bool, overrides: dict) -> Config:
    dataset = overrides.get("dataset", "quadratic")
    if algo != "l2o" or dataset not in L2O_DATASETS:
        raise ValueError(f"--dataset {dataset} is for the learned optimiser: use `l2o` with "
                         f"--dataset {' or '.join(L2O_DATASETS)}")
    fields = dict(L2O_DEFAULTS[dataset][1 if full_protocol else 0], dataset=dataset)
    for flag in ("augment", "normalize"):
        if overrides.get(flag) and dataset not in AUGMENTED_DATASETS:
            raise ValueError(f"--{flag}: the papers' settings exist for "
                             f"{', '.join(AUGMENTED_DATASETS)}, not {dataset}")
    fields.update(overrides)
    return Config(algo=algo, full_protocol=full_protocol, **fields)


def check_applicable(algo: str, names) -> None:
    """Raises `ValueError` naming the algorithm if any of `names` is not one of its settings."""
    own = applicable(algo)
    bad = [n for n in names if n not in own]
    if bad:
        where = "; ".join(
            f"--{n.replace('_', '-')} is a setting of {', '.join(algorithms_with(n)) or 'none'}"
            for n in bad)
        raise ValueError(f"{', '.join('--' + n.replace('_', '-') for n in bad)} does not apply to "
                         f"{algo} ({where}); `metajax train {algo} --help` lists its settings")


def make_config(algo: str, full_protocol: bool = False, **overrides) -> Config:
    """Config for `algo`: base defaults, then the algorithm's defaults, then explicit overrides
    (`None` values are ignored, so unset command-line flags keep the defaults). An override that
    is not a setting of `algo` is an error (`check_applicable`)."""
    if algo not in ALGO_DEFAULTS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGO_DEFAULTS)}")
    check_applicable(algo, [k for k, v in overrides.items() if v is not None])
    if algo == "l2o" or overrides.get("dataset") in L2O_DATASETS:
        return _l2o_config(algo, full_protocol, {k: v for k, v in overrides.items() if v is not None})
    overrides = {k: v for k, v in overrides.items() if v is not None}
    dataset = overrides.get("dataset", "omniglot")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset == "sinusoid":
        if algo not in SINUSOID_DEFAULTS:
            raise ValueError(f"{algo} does not run on sinusoid regression; choose one of "
                             f"{', '.join(SINUSOID_DEFAULTS)}")
        fields = dict(SINUSOID_DEFAULTS[algo][1 if full_protocol else 0])
    else:
        if algo == "pretrained":
            raise ValueError("pretrained is the sinusoid regression baseline; use --dataset sinusoid")
        fields = dict(ALGO_DEFAULTS[algo][1 if full_protocol else 0])
        if algo in BLACKBOX_PROTOCOLS:
            fields = _blackbox_fields(algo, full_protocol, overrides)
        elif overrides.get("protocol", "episodes") != "episodes":
            raise ValueError(f"--protocol {overrides['protocol']} is for the black-box learners "
                             f"({', '.join(BLACKBOX_PROTOCOLS)}); {algo} runs on episodes")
        if full_protocol and overrides.get("ways", 5) >= 20 and algo in (
                "maml", "fomaml", "metasgd", "anil"):
            fields.update(MAML_FULL_20WAY)
    if dataset in FIXED_SPLITS:  # e.g. miniImageNet: Ravi & Larochelle's split at 84x84
        split, size = FIXED_SPLITS[dataset]
        if overrides.get("split", split) != split:
            raise ValueError(f"--split {overrides['split']} is Omniglot's; {dataset} has its own "
                             f"split ({split})")
        fields.update(split=split, **({"image_size": size} if size else {}))
        if dataset == "folder" and not overrides.get("data_dir"):
            raise ValueError("--dataset folder needs --data-dir: a folder holding train/, test/ "
                             "(and optionally val/), one folder of images per class")
    for flag in ("augment", "normalize"):
        if overrides.get(flag) and dataset not in AUGMENTED_DATASETS:
            raise ValueError(f"--{flag}: the papers' settings exist for "
                             f"{', '.join(AUGMENTED_DATASETS)}, not {dataset}")
    for flag in ("within_alphabet", "paired_drawers"):
        if overrides.get(flag) and dataset != "omniglot":
            raise ValueError(f"--{flag.replace('_', '-')} uses Omniglot's alphabets and drawers; "
                             f"{dataset} has none")
    if overrides.get("affine") and dataset != "omniglot":
        raise ValueError(f"--affine: Koch et al.'s distortions are for Omniglot's drawings, not "
                         f"{dataset} (--augment has the papers' augmentation of colour images)")
    for name in ("meta_batch", "val_episodes", "eval_episodes"):
        if name in overrides and overrides[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} {overrides[name]}: must be >= 1")
    if overrides.get("proximal_lambda", 1.0) <= 0:
        raise ValueError(f"--proximal-lambda {overrides['proximal_lambda']}: iMAML's proximal "
                         f"lambda must be > 0")
    lam = overrides.get("test_proximal_lambda", -1.0)
    if lam < 0 and lam != -1:
        raise ValueError(f"--test-proximal-lambda {lam}: a lambda is >= 0 (or -1: the training "
                         f"lambda)")
    fields.update(overrides)
    return Config(algo=algo, full_protocol=full_protocol, **fields)
