"""Episodic meta-learning runs (application): a run's config -> samplers and device arrays for
its train / validation / test classes, the outer optimiser, the learner, the trainer's loop, and
the test score. `metajax.experiment` drives it as one of its experiments (`EpisodicExperiment`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import optax

from metajax.config import Config
from metajax.data.download import DataError
from metajax.data.episodes import (
    RaggedClasses,
    check_episode_shape,
    check_ragged_episode,
    episode_sampler,
    ragged_episode_sampler,
)
from metajax.data.omniglot import load_omniglot, make_split
from metajax.data.runs import load_runs, locate_runs, score_runs
from metajax.data.sequences import check_sequence_shape, sequence_sampler
from metajax.data.sinusoid import AMPLITUDE, PHASE, X_RANGE, sinusoid_sampler
from metajax.data.streaming import HostEpisodes
from metajax.data.within_alphabet import (
    alphabet_groups,
    drawer_paired_sampler,
    evaluation_alphabets,
    proxy_runs_sampler,
    within_alphabet_sampler,
)
from metajax.learners import accuracy_by_instance
from metajax.registry import ALGORITHMS, TRAIN_SAMPLERS, build_learner
from metajax.run_dir import load_config
from metajax.training.evaluation import evaluate
from metajax.training.trainer import TrainState, init_state, restore_state, train
from metajax.types import SampleFn


@dataclass(frozen=True)
class TaskSource:
    """Where one phase's tasks come from: the on-device sampler and the arrays it reads."""

    sample: SampleFn
    data: Any
    name: str


def _omniglot_parts(config: Config):
    if config.dataset != "omniglot":
        from metajax.data.catalog import CATALOG

        split = CATALOG[config.dataset].load(config.data_dir, config.image_size, download=True)
        return split, split.info
    omniglot = load_omniglot(config.image_size, data_dir=config.data_dir, verbose=True)
    split = make_split(omniglot, config.split, seed=config.split_seed, data_dir=config.data_dir)
    return split, split.info


def task_sources(config: Config, ways: int | None = None, shots: int | None = None,
                 test_queries: int | None = None) -> tuple[dict[str, TaskSource], dict]:
    """Samplers and device arrays for `train`, `val` (if the split has one) and `test`.

    Raises ValueError for impossible episodes (for example more ways than the split has classes)
    before anything is compiled.
    """
    ways, shots = ways or config.ways, shots or config.shots
    test_queries = test_queries or config.test_queries
    if config.dataset == "sinusoid":
        # Tasks come from the sinusoid family itself: no arrays, no validation part; train and test
        # tasks differ by their keys (the trainer's seed, the evaluation's eval_seed).
        info = {"dataset": "sinusoid", "amplitude": list(AMPLITUDE), "phase": list(PHASE),
                "x": list(X_RANGE), "train_points": [config.train_shots_, config.queries_],
                "test_points": [shots, test_queries]}
        return {"train": TaskSource(sinusoid_sampler(config.train_shots_, config.queries_), None,
                                    "train"),
                "test": TaskSource(sinusoid_sampler(shots, test_queries), None, "test")}, info
    if config.dataset not in ("omniglot", "miniimagenet", "tieredimagenet", "cifar-fs", "fc100",
                              "folder"):
        raise ValueError(f"unknown dataset {config.dataset!r}")
    split, info = _omniglot_parts(config)
    if config.algo == "deml":  # external data = meta-training classes; never a test class
        from metajax.learners.deml import check_external_classes

        info = {**info, "external": {"source": "meta-training classes",
                                     **check_external_classes(split.train.names, split.test.names)}}
    if config.affine and (config.sequence_protocol or (config.algo in TRAIN_SAMPLERS
                                                       and config.algo != "siamese")):
        raise ValueError(f"--affine distorts N-way training episodes (or Siamese pairs); "
                         f"{config.algo} trains on "
                         f"{'sequences' if config.sequence_protocol else 'class or concept batches'}")
    for flag in ("within_alphabet", "paired_drawers"):
        if getattr(config, flag) and (config.sequence_protocol or config.algo in TRAIN_SAMPLERS):
            raise ValueError(f"{flag} draws N-way episodes; {config.algo} trains on "
                             f"{'sequences' if config.sequence_protocol else 'its own samples'} "
                             f"(pairs, class batches or concept batches)")
    settings = {
        "train": (split.train, config.train_ways_, config.train_shots_, config.queries_),
        "val": (split.val, ways, shots, test_queries),
        "test": (split.test, ways, shots, test_queries),
    }
    if config.augment or config.normalize:  # datasets without the papers' settings: make_config
        if config.sequence_protocol or config.algo in TRAIN_SAMPLERS:
            raise ValueError(f"--augment and --normalize transform N-way episodes; {config.algo} "
                             f"trains on {'sequences' if config.sequence_protocol else 'its own samples'}")
        if config.augment and config.stream:
            raise ValueError("--augment with --stream is not supported yet: augment on the device "
                             "or stream without it")
    sources = {}
    for part, (classes, n, k, q) in settings.items():
        if classes is None:
            continue
        where = f"split {config.split!r} {part}"
        if part == "train" and config.stream:  # gathered on the host, prefetched to the device
            if config.sequence_protocol or config.algo in TRAIN_SAMPLERS or config.within_alphabet \
                    or config.paired_drawers or config.affine:
                raise ValueError(f"--stream draws N-way episodes; {config.algo} with these "
                                 f"settings trains on other samples")
            transform = None
            if config.normalize:
                from metajax.data.augment import normalizer

                transform = normalizer(config.dataset)
            sources[part] = TaskSource(None, HostEpisodes(classes.images, n, k, q,
                                                          config.meta_batch, config.seed,
                                                          transform=transform), part)
            continue
        if isinstance(classes.images, RaggedClasses):  # classes of unequal sizes (folder)
            if config.sequence_protocol or (part == "train" and config.algo in TRAIN_SAMPLERS) \
                    or (part == "train" and config.within_alphabet):
                raise ValueError(f"{where} has classes of unequal sizes; {config.algo} with these "
                                 f"settings needs equal ones (N-way episodes only)")
            check_ragged_episode(classes.images, n, k, q, where=where)
            sample = ragged_episode_sampler(n, k, q, int(classes.images.counts.max()))
            sources[part] = TaskSource(_transformed(sample, config, part),
                                       jax.device_put(classes.images), part)
            continue
        if config.sequence_protocol:  # label-offset sequences (MANN and its baselines)
            check_sequence_shape(classes.images.shape, n, config.instances, where=where)
            sample = sequence_sampler(n, config.instances, config.label_chars)
        elif part == "train" and config.algo in TRAIN_SAMPLERS:  # e.g. Siamese pairs
            sample = TRAIN_SAMPLERS[config.algo](config, classes.images.shape, where)
        else:
            check_episode_shape(classes.images.shape, n, k, q, where=where)
            if part == "train" and config.within_alphabet:
                sample = within_alphabet_sampler(alphabet_groups(classes.names), n, k, q,
                                                 config.paired_drawers)
            elif part == "train" and config.paired_drawers:
                sample = drawer_paired_sampler(n, k, q)
            else:
                sample = episode_sampler(n, k, q)
        sources[part] = TaskSource(_transformed(sample, config, part), jax.device_put(classes.images),
                                   part)
    return sources, info


def _transformed(sample, config: Config, part: str):
    """`sample` followed by the training augmentation (training part: `--augment`, or Koch's
    distortions with `--affine`) and the dataset's normalisation (`--normalize`), inside the
    jitted step. Siamese pairs are distorted by their own sampler."""
    affine = config.affine and part == "train" and config.algo not in TRAIN_SAMPLERS
    if not (config.normalize or affine or (config.augment and part == "train")):
        return sample
    from metajax.data.affine import random_affine
    from metajax.data.augment import PADDING, augment_task, normalizer

    norm = normalizer(config.dataset) if config.normalize else None

    def transformed(key, data):
        k_sample, k_augment = jax.random.split(key)
        task = sample(k_sample, data)
        if config.augment and part == "train":
            task = augment_task(k_augment, task, PADDING[config.dataset])
        if affine:
            k_support, k_query = jax.random.split(k_augment)
            task = task.replace(support_x=random_affine(k_support, task.support_x),
                                query_x=random_affine(k_query, task.query_x))
        return norm(task) if norm is not None else task

    return transformed


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """The outer optimiser: Adam (default) or SGD (`config.optimizer`) on the meta-parameters, with
    an optional staircase decay of the learning rate, or a linear anneal to 0 over the run
    (`lr_anneal`, Reptile's meta step size)."""
    lr = config.lr
    if config.lr_anneal:
        lr = optax.linear_schedule(config.lr, 0.0, config.steps)
    elif config.lr_decay_every:
        lr = optax.exponential_decay(config.lr, config.lr_decay_every, config.lr_decay,
                                     staircase=True)
    if config.optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {config.optimizer!r}")
    optimizer = optax.adam(lr) if config.optimizer == "adam" else optax.sgd(lr)
    if config.clip_norm:
        return optax.chain(optax.clip_by_global_norm(config.clip_norm), optimizer)
    return optimizer


def regression_result(result: dict) -> dict:
    """Names the evaluation of a regression learner: `mse` (and `mse_ci95`), `accuracy: None`."""
    if "accuracy" in result:
        return result
    return {**result, "mse": result["loss"], "mse_ci95": result["loss_ci95"], "accuracy": None}


def sequence_result(result: dict, config: Config) -> dict:
    """Adds `accuracy_by_instance` (`{"1": ..., "10": ...}`, with `accuracy_by_instance_ci95`) and
    `instances` to the evaluation of a sequence-protocol run; other results pass through."""
    if not config.sequence_protocol:
        return result
    by_instance = accuracy_by_instance(result)
    ci95 = {k: result[f"accuracy_{k}_ci95"] for k in by_instance}
    rest = {k: v for k, v in result.items()
            if not (k.startswith("accuracy_") and k.split("_")[1].isdigit())}
    return {**rest, "protocol": "sequence", "instances": config.instances,
            "accuracy_by_instance": by_instance, "accuracy_by_instance_ci95": ci95}


def _example_task(source: TaskSource):
    if source.sample is None:  # a host stream: the first task of its first meta-batch
        return source.data.on_device(jax.tree.map(lambda x: x[0], source.data.batch(0)))
    return source.sample(jax.random.PRNGKey(0), source.data)


def load_state(out_dir: str | Path, config: Config | None = None) -> TrainState:
    """The latest checkpoint of a run: meta-parameters, optimiser and carried inner state."""
    config = config or load_config(out_dir)
    sources, _ = task_sources(config)
    learner = build_learner(config)
    abstract = jax.eval_shape(
        lambda: init_state(learner, make_optimizer(config), jax.random.PRNGKey(0),
                           _example_task(sources["train"]))
    )
    return restore_state(out_dir, abstract)


def load_params(out_dir: str | Path, config: Config | None = None):
    """The meta-parameters of the latest checkpoint of a run."""
    return load_state(out_dir, config).params


def _split_warning(config: Config) -> str:
    """What `eval-runs` says of a run not trained on the background alphabets only."""
    return (f"trained on split {config.split!r}, whose training classes include "
            f"evaluation-alphabet characters; the protocol trains with --split lake")


def evaluate_official_runs(out_dir: str | Path, runs_path: str | Path, seed: int = 0) -> dict:
    """Scores a trained run on the official 20-way within-alphabet one-shot runs of Lake et al.

    Any learner whose `predict` classifies a support set works. The protocol trains on the
    background alphabets only (`--split lake`); with another split the training classes include
    characters of the evaluation alphabets, and the result says so under `warning`. Writes
    `DIR/eval_runs.json` with the per-run errors.
    """
    config = load_config(out_dir)
    if ALGORITHMS[config.algo].experiment != "episodic":
        raise ValueError(f"eval-runs classifies one-shot runs with a few-shot learner; "
                         f"{config.algo} is not one")
    runs = load_runs(runs_path, config.image_size)
    state = load_state(out_dir, config)
    params = state.params
    learner = build_learner(config, runs[0].task.num_classes, 1, phase="test",
                            inner_state=state.inner_state)
    result = score_runs(learner, params, runs, seed=seed)
    out = {"algo": config.algo, "runs_path": str(runs_path), "image_size": config.image_size,
           "split": config.split, **result}
    try:  # which alphabets and drawers the runs use, for the proxy (needs the evaluation zip)
        out["sources"] = locate_runs(runs, *evaluation_alphabets(
            load_omniglot(config.image_size, data_dir=config.data_dir, download_missing=False)))
    except DataError as e:
        out["sources"] = f"not located: {e}"
    if config.split != "lake":
        out["warning"] = _split_warning(config)
    (Path(out_dir) / "eval_runs.json").write_text(json.dumps(out, indent=2))
    return out


def evaluate_proxy_runs(out_dir: str | Path, runs: int, seed: int = 2015, ways: int = 20,
                        data_dir=None, progress: bool = False) -> dict:
    """Scores a trained run on `runs` episodes made as the official one-shot runs were
    (`metajax.data.within_alphabet.proxy_runs_sampler`: 20 characters of one evaluation alphabet,
    training drawings by one drawer, test drawings by another, one per class), unrotated, at the
    run's image size, with a 95% CI over the episodes. Writes `DIR/eval_runs_proxy.json`."""
    config = load_config(out_dir)
    if ALGORITHMS[config.algo].experiment != "episodic" or config.dataset != "omniglot":
        raise ValueError(f"eval-runs --proxy classifies Omniglot one-shot episodes with a few-shot "
                         f"learner; {config.algo} on {config.dataset} is not one")
    if runs < 1:
        raise ValueError(f"--proxy takes the number of episodes (>= 1), got {runs}")
    images, alphabet, names = evaluation_alphabets(
        load_omniglot(config.image_size, data_dir=data_dir or config.data_dir))
    state = load_state(out_dir, config)
    learner = build_learner(config, ways, 1, phase="test", inner_state=state.inner_state)
    result = evaluate(learner, state.params, proxy_runs_sampler(alphabet, ways), images,
                      episodes=runs, seed=seed, progress=progress, desc="proxy runs")
    out = {"algo": config.algo, "protocol": "official-runs proxy: within one evaluation alphabet, "
           "drawer-paired, one query per class", "ways": ways, "runs": runs, "seed": seed,
           "image_size": config.image_size, "split": config.split, "alphabets": len(names),
           "accuracy": result["accuracy"], "ci95": result["ci95"],
           "error_rate": 1 - result["accuracy"]}
    if config.split != "lake":
        out["warning"] = _split_warning(config)
    (Path(out_dir) / "eval_runs_proxy.json").write_text(json.dumps(out, indent=2))
    return out


def _score_line(result: dict) -> str:
    """`accuracy X` for classification, `mse X` for regression (the last words printed)."""
    if result.get("accuracy") is None:
        return f"mse {result['mse']:.4f}"
    return f"accuracy {result['accuracy']:.4f}"


class EpisodicExperiment:
    """Few-shot learners meta-trained on tasks sampled on the device (N-way K-shot episodes,
    label-offset sequences, pairs, class batches or sinusoids) and scored on episodes of held-out
    classes with 95% CIs."""

    def train(self, config: Config, out_dir: Path, *, resume: bool, progress: bool,
              devices=None) -> tuple[TrainState, dict]:
        sources, _ = task_sources(config)
        validate = None
        if "val" in sources and config.val_every:
            val = sources["val"]

            def validate(params, inner_state):
                return evaluate(build_learner(config, phase="test", inner_state=inner_state),
                                params, val.sample, val.data, config.val_episodes, seed=0,
                                devices=devices, task_map=config.task_map)

        source = sources["train"]
        return train(
            build_learner(config, phase="train"), make_optimizer(config), source.sample,
            source.data, steps=config.steps, meta_batch=config.meta_batch, seed=config.seed,
            out_dir=out_dir, example_task=_example_task(source), validate=validate,
            val_every=config.val_every, checkpoint_every=config.checkpoint_every,
            log_every=config.log_every, resume=resume, devices=devices, progress=progress,
            task_map=config.task_map)

    def check(self, config: Config, scoring) -> None:
        if scoring.part == "val" and "val" not in task_sources(config)[0]:
            raise ValueError(f"split {config.split!r} of {config.dataset} has no validation "
                             f"classes; evaluate on the test classes instead")

    def restore(self, config: Config, out_dir: Path) -> TrainState:
        return load_state(out_dir, config)

    def score(self, config: Config, state: TrainState, scoring, *, progress: bool,
              devices=None) -> dict:
        ways, shots = scoring.ways or config.ways, scoring.shots or config.shots
        sources, split_info = task_sources(config, ways, shots, scoring.queries)
        source = sources[scoring.part]
        learner = build_learner(config, ways, shots, phase="test", inner_state=state.inner_state)
        result = evaluate(learner, state.params, source.sample, source.data,
                          scoring.episodes or config.eval_episodes,
                          seed=config.eval_seed if scoring.seed is None else scoring.seed,
                          progress=progress, desc=scoring.part, devices=devices,
                          task_map=config.task_map)
        return {"part": scoring.part, "ways": 0 if config.dataset == "sinusoid" else ways,
                "shots": shots, "queries": scoring.queries or config.test_queries,
                **sequence_result(regression_result(result), config), "split": split_info}

    def describe(self, result: dict, where: str) -> list[str]:
        lines = []
        setting = f"{result['ways']}-way {result['shots']}-shot" + (
            " (validation classes)" if result.get("part") == "val" else "")
        if "accuracy_by_instance" in result:
            lines.append("accuracy by instance: " + " ".join(
                f"{k}:{100 * v:.1f}" for k, v in result["accuracy_by_instance"].items()))
            setting = f"sequences of {result['ways']} classes x {result['instances']} instances"
        return [*lines, f"{result['algo']} {result['dataset']} {setting}, {result['episodes']} "
                        f"episodes, ci95 {result['ci95']:.4f}, {where}, {_score_line(result)}"]
