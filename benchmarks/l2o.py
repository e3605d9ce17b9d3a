"""Learned optimiser (Andrychowicz et al. 2016) vs tuned SGD, NAG, RMSprop and Adam.

Meta-trains the coordinatewise LSTM optimiser on one problem family (CPU-sized defaults from
`metajax.config`, `--full-protocol` for the paper's), then runs it and the four baselines (each
learning rate tuned on a grid on training problems) for 100 steps on held-out problems, and writes
the mean loss at the last step (a row per optimiser and problem family) and the mean loss curves:
`results/l2o_<problem>.{json,md,png}`. For `mlp` the optimiser trained on the base MLP (20 sigmoid
units) is also run on the paper's generalisation variants (40 units, 2 hidden layers, ReLU), with
the baselines re-tuned for each.

    python benchmarks/l2o.py --problem quadratic
    python benchmarks/l2o.py --problem mlp [--variants base,wide,deep,relu]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import parse_with_allocator
from reproduce import Run, Score, config_of, write_rows

from metajax.bench.results import command_line, now, paper, row

ANDRYCHOWICZ = paper(None, "Andrychowicz et al. 2016, Figures 2-5", note=(
    "curves, no table: the LSTM optimiser's loss ends below tuned SGD, NAG, RMSprop and Adam on "
    "held-out 10-d quadratics (batch 128) and MNIST MLPs"))
GOAL = "below every tuned baseline"
PROBLEMS = {"quadratic": "10-d quadratics", "base": "Omniglot MLP, 20 sigmoid units",
            "wide": "Omniglot MLP, 40 sigmoid units", "deep": "Omniglot MLP, 2 x 20 sigmoid units",
            "relu": "Omniglot MLP, 20 ReLU units"}
METHOD = "LSTM optimiser"
COLUMNS = {"learning rate": "learning_rate"}  # the markdown's column beside the rows'


def setting(variant: str) -> str:
    return f"{PROBLEMS[variant]}: mean loss at the last step"


# the learned optimiser's rows; the tuned baselines' rows are added beside them
RUNS = (
    Run(METHOD, "l2o", {"dataset": "quadratic"},
        scores=(Score(setting("quadratic"), ANDRYCHOWICZ, GOAL, metric="final_loss"),)),
    Run(METHOD, "l2o", {"dataset": "mlp"}, scores=tuple(
        Score(setting(v), ANDRYCHOWICZ, GOAL, metric="final_loss")
        for v in ("base", "wide", "deep", "relu"))),
)


def comparison_rows(score: Score, result: dict, **common) -> list[dict]:
    """The learned optimiser's row (goal met when its loss is below every baseline's) and one row
    per tuned baseline, each with its mean loss curve in `details`; `common`: the row fields they
    share (episodes, steps, config, wall time, command, machine, date)."""
    learned = result["learned"]
    best = min(b["final_loss"] for b in result["baselines"])
    rows = [row(METHOD, score.setting, "final_loss", learned["final_loss"],
                learned["final_loss_ci95"], paper=score.paper, goal=score.goal,
                details={k: v for k, v in learned.items() if k not in ("final_loss", "final_loss_ci95")}
                | {"goal_met": learned["final_loss"] < best,
                   "eval_wall_time_s": result["eval_wall_time_s"]}, **common)]
    for b in result["baselines"]:
        rows.append(row(f"{b['name']} (tuned lr)", score.setting, "final_loss", b["final_loss"],
                        b["final_loss_ci95"], details={
                            k: v for k, v in b.items()
                            if k not in ("name", "final_loss", "final_loss_ci95")}, **common))
    return rows


def plot(payload: dict, path: Path) -> None:
    """A panel per problem family: the mean loss curve of each optimiser."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["setting"] for r in payload["rows"]))
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
    for ax, name in zip(axes[0], settings, strict=True):
        for r in payload["rows"]:
            if r["setting"] != name:
                continue
            learned = r["method"] == METHOD
            label = r["method"] if learned else (
                f"{r['method'].split(' ')[0]} (lr {r['details']['learning_rate']:.3g})")
            ax.plot(r["details"]["curve"], label=label, **(dict(color="k", lw=2) if learned else {}))
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("mean loss (held-out problems)")
        ax.set_title(name.split(":")[0], fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=["quadratic", "mlp"], default="quadratic")
    parser.add_argument("--runs", type=int, help="meta-training runs (default: config's)")
    parser.add_argument("--meta-batch", type=int, help="optimisees per run (default: config's)")
    parser.add_argument("--optimizees", type=int, default=None,
                        help="held-out problems (default 200 quadratics, 100 MLPs)")
    parser.add_argument("--tune", type=int, help="training problems to tune the baselines on")
    parser.add_argument("--variants", default="base,wide,deep,relu",
                        help="mlp: comma-separated MLP variants to evaluate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-protocol", action="store_true")
    parser.add_argument("--name", help="results file name (default l2o_<problem>)")
    args = parse_with_allocator(parser)

    import jax

    from metajax.bench.machine import machine_info
    from metajax.l2o.meta_train import LR_GRID, compare_optimizers
    from metajax.l2o.optimizees import MLP_VARIANTS, mlp_family
    from metajax.l2o_run import family_and_data, make_net, meta_train

    start = time.time()
    name = args.name or f"l2o_{args.problem}"
    optimizees = args.optimizees or (200 if args.problem == "quadratic" else 100)
    run = next(r for r in RUNS if r.overrides["dataset"] == args.problem)
    config = config_of(run, args.full_protocol, dict(
        steps=args.runs, meta_batch=args.meta_batch, seed=args.seed, eval_episodes=optimizees,
        val_episodes=args.tune))
    family, train_data, test_data = family_and_data(config)
    work = Path(tempfile.mkdtemp(prefix="l2o_bench_"))
    try:
        state, stats = meta_train(config, family, train_data, work, progress=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    net = make_net(config)
    variants = args.variants.split(",") if args.problem == "mlp" else ["quadratic"]
    scores = {s.setting: s for s in run.scores}
    rows = []
    for variant in variants:
        t0 = time.time()
        fam = family if variant in ("quadratic", "base") else mlp_family(variant)
        result = compare_optimizers(net, state.lstm_params, fam, train_data, test_data,
                                    horizon=config.horizon, tune_optimizees=config.val_episodes,
                                    eval_optimizees=config.eval_episodes, seed=config.eval_seed)
        result["eval_wall_time_s"] = time.time() - t0
        score = scores.get(setting(variant), Score(setting(variant), metric="final_loss"))
        new = comparison_rows(
            score, result, episodes=config.eval_episodes, steps=config.steps,
            config=config.to_dict(), command=command_line(), machine=machine_info(), date=now(),
            wall_time_s=stats["train_wall_time_s"] + result["eval_wall_time_s"])
        print(f"{variant}: LSTM {new[0]['value']:.4g}, below every baseline: "
              f"{new[0]['details']['goal_met']}", flush=True)
        rows += new
    notes = [f"Mean loss at step {config.horizon} over {optimizees} held-out problems; each "
             f"baseline's learning rate is the best of {len(LR_GRID)} on {config.val_episodes} "
             f"training problems. Meta-training: {config.steps} runs of {config.horizon} steps "
             f"(unrolls of {config.unroll}), {config.meta_batch} optimisees per run, "
             f"{stats['train_wall_time_s']:.0f}s.", f"![curves]({name}.png)"]
    write_rows(name, rows, started=start, notes=notes, plot=plot, columns=COLUMNS, settings={
        **config.to_dict(), "lr_grid": list(LR_GRID), "variants": variants,
        "mlp_variants": {v: MLP_VARIANTS[v] for v in variants if v in MLP_VARIANTS}},
        extra={"problem": args.problem, "meta_training": stats,
               "devices": [str(d) for d in jax.devices()], "plot": f"{name}.png"})


if __name__ == "__main__":
    main()
