"""The `metajax train l2o` run (application): a run's config -> the learned optimiser's problem
family, meta-training with the trainer's loop, and its comparison with tuned optimisers, written to
the run directory. The library part is `metajax.l2o`."""

from __future__ import annotations

import json
import time
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
from metajax.run_dir import load_config, machine_info, prepare_run_dir
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


def evaluate_l2o_run(out_dir: str | Path, episodes: int | None = None,
                     seed: int | None = None) -> dict:
    """What `metajax eval` does with a learned-optimiser run: loads `lstm_optimizer.msgpack` and
    compares it again with the four tuned baselines on `episodes` held-out optimisees (default: the
    run's `eval_episodes`) from seed `seed` (default: its `eval_seed`); writes `eval.json`."""
    out_dir = Path(out_dir)
    config = load_config(out_dir)
    net, lstm_params = load_lstm_optimizer(out_dir / "lstm_optimizer.msgpack")
    family, train_data, test_data = family_and_data(config)
    episodes = episodes or config.eval_episodes
    result = compare_optimizers(net, lstm_params, family, train_data, test_data,
                                horizon=config.horizon, tune_optimizees=config.val_episodes,
                                eval_optimizees=episodes,
                                seed=config.eval_seed if seed is None else seed)
    out = {"algo": config.algo, "dataset": config.dataset, "optimizees": episodes,
           "horizon": config.horizon, **comparison_report(result)}
    (out_dir / "eval.json").write_text(json.dumps(out, indent=2))
    return out


def train_and_evaluate_l2o(config, out_dir: str | Path, resume: bool = False,
                           progress: bool = True) -> dict:
    """What `metajax train l2o` runs: meta-train, save the optimiser, compare it with SGD, NAG,
    RMSprop and Adam (learning rates tuned on training problems) on held-out problems, and write
    `summary.json` (`final_loss`, `baselines`, mean curves)."""
    start = time.time()
    out_dir = prepare_run_dir(config, out_dir, resume)
    family, train_data, test_data = family_and_data(config)
    state, stats = meta_train(config, family, train_data, out_dir, resume, progress)
    net = make_net(config)
    save_lstm_optimizer(out_dir / "lstm_optimizer.msgpack", state.lstm_params, net)
    untrained = init_lstm_optimizer(net, jax.random.PRNGKey(config.seed))
    result = compare_optimizers(net, state.lstm_params, family, train_data, test_data,
                                horizon=config.horizon, tune_optimizees=config.val_episodes,
                                eval_optimizees=config.eval_episodes, seed=config.eval_seed,
                                untrained_params=untrained)
    summary = {
        "algo": config.algo,
        "dataset": config.dataset,
        "steps": config.steps,
        "seed": config.seed,
        "optimizees": config.eval_episodes,
        "horizon": config.horizon,
        **comparison_report(result),
        "wall_time_s": time.time() - start,
        **stats,
        "problems": family.name,
        "config": config.to_dict(),
        "machine": machine_info(),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
