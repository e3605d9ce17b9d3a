"""One frozen configuration per experiment; per-algorithm defaults sized for a 2-core CPU, and the
papers' settings behind `full_protocol=True`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DATASETS = ("omniglot", "quadratic", "mlp")
L2O_DATASETS = ("quadratic", "mlp")  # optimisee families of the learned optimiser (algo l2o)


@dataclass(frozen=True)
class Config:
    """Everything that defines a run; written to `config.json` and `summary.json`.

    `ways`/`shots` are the test setting. Training episodes use `train_ways`/`train_shots` (0 means
    the same as the test setting) with `queries` query examples per class; test episodes use
    `test_queries`. `pairs` (same/different pairs per training step) and `affine` (Koch's random
    distortions) are for the Siamese network; `fce` (full context embeddings) for Matching networks.
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
    # l2o (learned optimiser): `steps` are meta-training runs of `horizon` optimisee steps, each cut
    # into truncated unrolls of `unroll` steps; `meta_batch` optimisees per run; `width` LSTM units;
    # `val_episodes` training problems the baselines' learning rates are tuned on; `eval_episodes`
    # held-out problems.
    unroll: int = 20
    horizon: int = 100
    preprocess_p: float = 10.0
    second_order: bool = False

    @property
    def train_ways_(self) -> int:
        return self.train_ways or self.ways

    @property
    def train_shots_(self) -> int:
        return self.train_shots or self.shots

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
        # (measured 0.38 s/step on 2 busy cores).
        dict(train_ways=5, queries=10, steps=4000, lr_decay_every=1500, split="vinyals"),
        # Sung et al.: 5-way episodes with 19 queries per class (20-way: 10), Adam 1e-3 halved
        # every 100k episodes, 1M episodes.
        dict(train_ways=5, queries=19, steps=1000000, lr_decay_every=100000, split="vinyals"),
    ),
    "matching": (
        # 20-way training episodes, plain cosine attention (no FCE) for speed (0.5 s/step).
        dict(train_ways=20, queries=5, steps=3000, lr_decay_every=1000, split="vinyals"),
        # Vinyals et al.: full context embeddings; train N-way = test N-way; Adam.
        dict(train_ways=0, queries=5, fce=True, steps=40000, lr_decay_every=10000, split="vinyals"),
    ),
}


# Learned optimisers (Andrychowicz et al.): 2-layer LSTM of 20 units, p = 10, Adam 1e-3 on truncated
# unrolls of 20 steps over runs of 100 steps, second derivatives dropped; the authors' code trains
# 10,000 runs (epochs) on batches of 128 quadratics, or one MNIST MLP per run.
_L2O = dict(width=20, unroll=20, horizon=100, preprocess_p=10.0, lr=1e-3, eval_episodes=100,
            val_episodes=100, eval_seed=12345, val_every=0)
L2O_DEFAULTS: dict[str, tuple[dict, dict]] = {
    "quadratic": (dict(_L2O, meta_batch=128, steps=800, log_every=20, checkpoint_every=200),
                  dict(_L2O, meta_batch=128, steps=10000, log_every=100, checkpoint_every=1000)),
    "mlp": (dict(_L2O, image_size=28, meta_batch=1, steps=100, val_episodes=20, log_every=10,
                 checkpoint_every=50),
            dict(_L2O, image_size=28, meta_batch=1, steps=10000, log_every=100,
                 checkpoint_every=1000)),
}
ALGO_DEFAULTS["l2o"] = L2O_DEFAULTS["quadratic"]


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
    fields = dict(ALGO_DEFAULTS[algo][1 if full_protocol else 0])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if fields.get("dataset", "omniglot") not in DATASETS:
        raise ValueError(f"unknown dataset {fields['dataset']!r}; choose one of {', '.join(DATASETS)}")
    return Config(algo=algo, full_protocol=full_protocol, **fields)
