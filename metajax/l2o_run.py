"""The `metajax train l2o` run (application): a run's config -> the learned optimiser's problem
family, meta-training with the trainer's loop, and its comparison with tuned optimisers.
`metajax.experiment` drives it as one of its experiments (`LearnedOptimizerExperiment`); the
library part is `metajax.l2o`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import optax

from metajax.l2o.lstm_optimizer import (
    LSTMOptimizer,
    init_lstm_optimizer,
    load_lstm_optimizer,
    save_lstm_optimizer,
)
from metajax.l2o.meta_train import MetaState, compare_optimizers, init_meta_state, make_meta_step
from metajax.l2o.optimizees import TaskFamily, mlp_family, omniglot_pools, quadratic_family
from metajax.training.trainer import run_loop


def family_and_data(config, variant: str = "base") -> tuple[TaskFamily, Any, Any]:
    """(family, training data, held-out data) of `config.dataset` (quadratic or mlp)."""
    if config.dataset == "quadratic":
        return quadratic_family(), None, None
    if config.dataset == "mlp":
        train_pool, test_pool = omniglot_pools(config.image_size, config.data_dir)
        return mlp_family(variant), jax.device_put(train_pool), jax.device_put(test_pool)
    raise ValueError(f"l2o runs on --dataset quadratic or mlp, not {config.dataset!r}")


def make_net(config) -> LSTMOptimizer:
    return LSTMOptimizer(units=config.width, preprocess_p=config.preprocess_p or None)


def meta_train(config, family: TaskFamily, data: Any, out_dir: str | Path, resume: bool = False,
               progress: bool = True) -> tuple[MetaState, dict]:
    """Meta-trains for `config.steps` runs with the trainer's loop (`run_loop`): orbax checkpoints,
    `metrics.jsonl`, progress bar, NaN guard."""
    net = make_net(config)
    meta_optimizer = optax.adam(config.lr)
    state = init_meta_state(net, meta_optimizer, jax.random.PRNGKey(config.seed))
    step_fn = make_meta_step(net, family, meta_optimizer, optimizees=config.meta_batch,
                             unroll=config.unroll, horizon=config.horizon, seed=config.seed,
                             second_order=config.second_order)
    return run_loop(step_fn, state, data, steps=config.steps, out_dir=out_dir,
                    checkpoint_every=config.checkpoint_every, log_every=config.log_every,
                    resume=resume, progress=progress, postfix=("loss", "final_loss"))


def comparison_report(result: dict) -> dict:
    """The JSON fields of a `compare_optimizers` result that `summary.json` and `eval.json` share:
    `final_loss` (+ CI), `baselines` (name, tuned learning rate, final loss), mean `curves`, and the
    untrained optimiser's final loss where it was run."""
    learned = result["learned"]
    out = {"final_loss": learned["final_loss"], "final_loss_ci95": learned["final_loss_ci95"],
           "baselines": [{k: b[k] for k in ("name", "learning_rate", "final_loss", "final_loss_ci95")}
                         for b in result["baselines"]]}
    curves = {"learned": learned["curve"]}
    if "untrained" in result:
        out["untrained_final_loss"] = result["untrained"]["final_loss"]
        curves["untrained"] = result["untrained"]["curve"]
    out["curves"] = {**curves, **{b["name"]: b["curve"] for b in result["baselines"]}}
    return out


class LearnedOptimizerExperiment:
    """The learned optimiser (`metajax train l2o`): meta-trained on sampled optimisees, saved as
    `lstm_optimizer.msgpack`, and scored against SGD, NAG, RMSprop and Adam (learning rates tuned
    on training problems) and its own untrained initialisation on held-out problems."""

    def train(self, config, out_dir: Path, *, resume: bool, progress: bool,
              devices=None) -> tuple[tuple[LSTMOptimizer, Any], dict]:
        del devices  # one device: the optimisees of a meta-batch are vmapped
        family, train_data, _ = family_and_data(config)
        state, stats = meta_train(config, family, train_data, out_dir, resume, progress)
        net = make_net(config)
        save_lstm_optimizer(out_dir / "lstm_optimizer.msgpack", state.lstm_params, net)
        return (net, state.lstm_params), stats

    def restore(self, config, out_dir: Path) -> tuple[LSTMOptimizer, Any]:
        return load_lstm_optimizer(out_dir / "lstm_optimizer.msgpack")

    def check(self, config, scoring) -> None:
        del config
        if scoring.ways or scoring.shots or scoring.queries or scoring.part != "test":
            raise ValueError("--ways, --shots, --queries and --split do not apply to a learned-"
                             "optimiser run; --episodes sets the number of held-out optimisees")

    def score(self, config, state, scoring, *, progress: bool, devices=None) -> dict:
        del progress, devices
        net, lstm_params = state
        family, train_data, test_data = family_and_data(config)
        episodes = scoring.episodes or config.eval_episodes
        result = compare_optimizers(
            net, lstm_params, family, train_data, test_data, horizon=config.horizon,
            tune_optimizees=config.val_episodes, eval_optimizees=episodes,
            seed=config.eval_seed if scoring.seed is None else scoring.seed,
            untrained_params=init_lstm_optimizer(net, jax.random.PRNGKey(config.seed)))
        return {"part": "test", "optimizees": episodes, "horizon": config.horizon,
                **comparison_report(result), "problems": family.name}

    def describe(self, result: dict, where: str) -> list[str]:
        return [" ".join(f"{b['name']} {b['final_loss']:.4g}" for b in result["baselines"]),
                f"l2o {result['dataset']}, {result['optimizees']} held-out optimisees, {where}, "
                f"final_loss {result['final_loss']:.4g}"]
