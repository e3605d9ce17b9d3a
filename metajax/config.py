"""One frozen configuration per experiment; per-algorithm defaults sized for a 2-core CPU, and the
papers' settings behind `full_protocol=True`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DATASETS = ("omniglot", "sinusoid", "quadratic", "mlp", "miniimagenet")
L2O_DATASETS = ("quadratic", "mlp")  # optimisee families of the learned optimiser (algo l2o)


@dataclass(frozen=True)
class Config:
    """Everything that defines a run; written to `config.json` and `summary.json`.

    `ways`/`shots` are the test setting. Training episodes use `train_ways`/`train_shots` (0 means
    the same as the test setting) with `queries` query examples per class; test episodes use
    `test_queries`. `pairs` (same/different pairs per training step) and `affine` (Koch's random
    distortions) are for the Siamese network; `fce` (full context embeddings) for Matching networks.
    `within_alphabet` draws the N classes of each training episode from one Omniglot alphabet in one
    rotation, as the within-alphabet test episodes and the official one-shot runs do.

    `queries` 0 means as many query examples per class as training shots (MAML's protocol). For the
    sinusoid dataset `shots`/`queries`/`test_queries` count points per task; `ways` is unused. The
    gradient-based learners (maml, fomaml, metasgd, anil, reptile, pretrained) read `inner_lr`,
    `inner_steps` (training), `test_inner_steps` (evaluation; 0: as training), `inner_batch`
    (Reptile's inner mini-batch), `fresh_inner_state` (Reptile: a fresh inner Adam per task instead
    of one whose moments carry over), `fresh_test_state` (Reptile: test tasks adapt from a fresh
    Adam instead of the state training ended with), `remat` (`jax.checkpoint` on each inner step)
    and `task_map` (how the trainer and evaluation run over the tasks of a meta-batch: "vmap",
    "map" one after another, "map:N" in vmapped chunks of N, or "auto": "map" on a CPU, "vmap"
    on an accelerator; `metajax.training.map_over_tasks`).
    `optimizer` is the outer optimiser ("adam" or "sgd"); `lr_anneal` anneals its learning rate
    linearly to 0 (Reptile's meta step size). `downsample` is conv4's "maxpool" or "stride"
    (MAML's Omniglot network).
    """

    algo: str
    dataset: str = "omniglot"
    ways: int = 5
    shots: int = 1
    train_ways: int = 0
    train_shots: int = 0
    queries: int = 5
    test_queries: int = 15
    split: str = "vinyals"
    split_seed: int = 1
    image_size: int = 28
    width: int = 64
    steps: int = 2000
    meta_batch: int = 1
    lr: float = 1e-3
    lr_decay_every: int = 0
    lr_decay: float = 0.5
    seed: int = 0
    eval_episodes: int = 1000
    eval_seed: int = 12345
    val_every: int = 500
    val_episodes: int = 200
    checkpoint_every: int = 500
    log_every: int = 50
    data_dir: str | None = None
    full_protocol: bool = False
    pairs: int = 128
    affine: bool = False
    fce: bool = False
    downsample: str = "maxpool"
    within_alphabet: bool = False  # training episodes: N classes of one alphabet (and rotation)
    inner_lr: float = 0.4
    inner_steps: int = 1
    test_inner_steps: int = 0
    inner_batch: int = 10
    fresh_inner_state: bool = False  # Reptile: a fresh inner Adam per task (default: kept across tasks)
    fresh_test_state: bool = False  # Reptile: test-time Adam from a fresh state, not training's
    remat: bool = False
    task_map: str = "vmap"
    optimizer: str = "adam"
    lr_anneal: bool = False
    # l2o (learned optimiser): `steps` are meta-training runs of `horizon` optimisee steps, each cut
    # into truncated unrolls of `unroll` steps; `meta_batch` optimisees per run; `width` LSTM units;
    # `val_episodes` training problems the baselines' learning rates are tuned on; `eval_episodes`
    # held-out problems.
    unroll: int = 20
    horizon: int = 100
    preprocess_p: float = 10.0
    second_order: bool = False
    # black-box learners (mann, lstm, feedforward, snail): `protocol` "sequence" is the label-offset
    # sequence episodes of Santoro et al. (`ways` classes shown `instances` times each) and
    # "episodes" the N-way K-shot episodes; `width` is the controller's LSTM units on sequences
    # (MANN, LSTM) and the conv4 encoder's filters on episodes; memory `memory_slots` x
    # `memory_width` with `read_heads` heads; `label_chars` 0 for one-hot labels, else string
    # labels of that many characters over 5 letters (the paper's 15-class experiment: 5);
    # `clip_norm` clips the global gradient norm (0: no clipping).
    protocol: str = "episodes"
    instances: int = 10
    label_chars: int = 0
    memory_slots: int = 128
    memory_width: int = 40
    read_heads: int = 4
    clip_norm: float = 0.0
    # deml (concept space): L = L_meta + concept_weight * L_discrimination; `external_batch`
    # external examples per step (split over the meta-batch); the concept generator is a ResNet of
    # `width` filters, `concept_stages` stages of `concept_blocks` blocks; `meta_learner` is
    # "metasgd" or "maml"; `first_order` drops second derivatives of its inner loop.
    # transfer baselines (finetune, baseline++, multitask): pre-training batches of `batch_size`
    # images; at test a new head fitted by `head_steps` of Adam with `head_lr`, then optionally
    # `finetune_steps` of the whole network with `finetune_lr`, unfreezing from the earliest layer.
    batch_size: int = 128
    head_steps: int = 100
    head_lr: float = 0.01
    finetune_steps: int = 0
    finetune_lr: float = 1e-4
    concept_weight: float = 1.0
    external_batch: int = 64
    concept_stages: int = 3
    concept_blocks: int = 1
    meta_learner: str = "metasgd"
    first_order: bool = False

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
        return dataclasses.asdict(self)


# Per-algorithm defaults: (CPU-sized, full paper protocol). Only fields that differ from Config.
ALGO_DEFAULTS: dict[str, tuple[dict, dict]] = {
    "protonet": (
        # 30-way training episodes (paper: 60) and a shorter schedule fit a 20-minute CPU budget.
        dict(train_ways=30, queries=5, steps=3000, lr_decay_every=1000, split="vinyals"),
        # Snell et al.: 60-way training, 5 queries, Adam 1e-3 halved every 2000 episodes.
        dict(train_ways=60, queries=5, steps=20000, lr_decay_every=2000, split="vinyals"),
    ),
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
        # 5-way training episodes with 10 queries per class; a short schedule for a 2-core CPU
        # (4000 steps gave 96.2%, 12,000 97.69%, 22,000 98.39%). Forming no pairs makes the step
        # 1.49x faster (benchmarks/results/relation_speed.md), and under jemalloc (which the
        # benchmark scripts now use, as `metajax train` does) a step took 62 ms against 82 ms with
        # glibc's allocator. 26,000 steps in 28 min: with the learning rate annealed linearly to 0,
        # 98.55 ± 0.15% (5-way) and 94.39% (20-way); halved every 6500 steps instead, 98.49 ± 0.16
        # and 94.15 (same session, same seed).
        dict(train_ways=5, queries=10, steps=26000, lr_anneal=True, val_every=2000,
             split="vinyals"),
        # Sung et al.: 5-way episodes with 19 queries per class (20-way: 10), Adam 1e-3 halved
        # every 100k episodes, 1M episodes.
        dict(train_ways=5, queries=19, steps=1000000, lr_decay_every=100000, split="vinyals"),
    ),
    "matching": (
        # 20-way training episodes, plain cosine attention (no FCE) for speed (0.18 s/step under
        # jemalloc, 0.28 under glibc's default allocator: 540 vs 948 s for the 3000 steps).
        dict(train_ways=20, queries=5, steps=3000, lr_decay_every=1000, split="vinyals"),
        # Vinyals et al.: full context embeddings; train N-way = test N-way; Adam.
        dict(train_ways=0, queries=5, fce=True, steps=40000, lr_decay_every=10000, split="vinyals"),
    ),
}


# MAML and its relatives on Omniglot. Finn et al.: conv4 with stride-2 convolutions, query set of K
# examples per class, inner lr 0.4, 1 inner step at training and 3 at test (5-way), meta-batch 32,
# Adam 1e-3, 60,000 iterations, the MAML split (1100/100 train/val characters, 423 test). On 2 CPU
# cores: the paper's meta-batch of 32 and 13,000 steps (measured 0.16-0.24 s per MAML step with the
# im2col conv4, vmapped over tasks, jemalloc: 35-55 minutes; Meta-SGD about 10% slower). 5000
# steps gave MAML 96.40% and Meta-SGD 96.48%, both still rising, short of the 97% goal.
# task_map "auto": tasks one after another on a CPU; this training step measured 217 ms against
# 238 ms vmapped (MAML; Meta-SGD 217 vs 238, FOMAML 146 vs 159, ANIL 126 vs 125, interleaved on
# one idle machine), with one task's temporaries instead of 32 tasks'.
_MAML_CPU = dict(split="maml", downsample="stride", queries=0, inner_lr=0.4, inner_steps=1,
                 test_inner_steps=3, meta_batch=32, steps=13000, lr=1e-3, val_every=1000,
                 eval_episodes=600, task_map="auto")
_MAML_FULL = dict(split="maml", downsample="stride", queries=0, inner_lr=0.4, inner_steps=1,
                  test_inner_steps=3, meta_batch=32, steps=60000, lr=1e-3, val_every=2000,
                  eval_episodes=600, task_map="auto")
# Finn et al., 20-way Omniglot: 5 inner steps with lr 0.1, meta-batch 16 (applied when ways >= 20).
MAML_FULL_20WAY = dict(inner_lr=0.1, inner_steps=5, test_inner_steps=5, meta_batch=16)
for _algo in ("maml", "fomaml", "metasgd", "anil"):
    ALGO_DEFAULTS[_algo] = (dict(_MAML_CPU), dict(_MAML_FULL))
# Reptile (Nichol et al., Omniglot): 5 inner Adam (b1=0) steps of lr 1e-3 on batches of 10 drawn from
# 10 examples per class (5 shots + 5 queries), meta step 1.0 annealed linearly to 0 (SGD), meta-batch
# 5, 100,000 iterations; 50 inner steps on the support set at test. As in the authors' code, the
# inner Adam's moments carry over from task to task (`fresh_inner_state=False`).
_REPTILE = dict(split="maml", downsample="stride", train_shots=5, queries=5, inner_lr=1e-3,
                inner_steps=5, test_inner_steps=50, inner_batch=10, meta_batch=5,
                optimizer="sgd", lr=1.0, lr_anneal=True, eval_episodes=600)
ALGO_DEFAULTS["reptile"] = (
    # CPU: 20,000 steps (about 0.08 s each: 30 min); 5000 steps with a fresh inner Adam per task
    # gave 79.9%.
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
# (measured about 0.1 s per step); the paper trains 400 epochs (full protocol: 40000 steps).
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
# training, 100 at test (a lower-variance estimate of the same expected MSE). 70,000 steps take
# about a minute on a CPU, so the CPU defaults are the paper's.
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
# (RMSprop 1e-4); on 2 CPU cores Adam 1e-3 on batches of 16 episodes (about 0.13 s per step).
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
# MANN's CPU default: 28,000 steps (about 50 min; 16,000 steps gave 94.7% at the 10th instance).
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
    fields.update(overrides)
    return Config(algo=algo, full_protocol=full_protocol, **fields)


def make_config(algo: str, full_protocol: bool = False, **overrides) -> Config:
    """Config for `algo`: base defaults, then the algorithm's defaults, then explicit overrides
    (`None` values are ignored, so unset command-line flags keep the defaults)."""
    if algo not in ALGO_DEFAULTS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGO_DEFAULTS)}")
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
    if dataset == "miniimagenet":  # Ravi & Larochelle's split at 84x84 unless asked otherwise
        fields.update(split="ravi", image_size=84)
    fields.update(overrides)
    return Config(algo=algo, full_protocol=full_protocol, **fields)
