"""Learned optimiser (Andrychowicz et al. 2016) vs tuned SGD, NAG, RMSprop and Adam.

Meta-trains the coordinatewise LSTM optimiser on one problem family (CPU-sized defaults from
`metajax.config`, `--full-protocol` for the paper's), then runs it and the four baselines (each
learning rate tuned on a grid on training problems) for 100 steps on held-out problems, and writes
the mean loss curves: `results/l2o_<problem>.{json,md,png}`. For `mlp` the optimiser trained on the
base MLP (20 sigmoid units) is also run on the paper's generalisation variants (40 units, 2 hidden
layers, ReLU), with the baselines re-tuned for each.

    python benchmarks/l2o.py --problem quadratic
    python benchmarks/l2o.py --problem mlp [--variants base,wide,deep,relu]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from common import RESULTS, parse_with_allocator, write_results

from metajax.bench.machine import machine_info
from metajax.config import make_config
from metajax.l2o.meta_train import LR_GRID, compare_optimizers
from metajax.l2o.optimizees import MLP_VARIANTS, mlp_family
from metajax.l2o_run import family_and_data, make_net, meta_train

PAPER = ("Andrychowicz et al. 2016 (figures 2-5): on held-out problems of the training family the "
         "LSTM optimiser's loss curve ends below those of SGD, NAG, RMSprop and Adam (learning rates "
         "tuned); no table of numbers. Problems there: 10-d quadratics (batch 128) and an MNIST MLP.")


def _plot(path: Path, panels: dict[str, dict], title: str) -> None:
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (name, result) in zip(axes[0], panels.items(), strict=True):
        ax.plot(result["learned"]["curve"], label="LSTM (learned)", color="k", lw=2)
        for b in result["baselines"]:
            ax.plot(b["curve"], label=f"{b['name']} (lr {b['learning_rate']:.3g})")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("mean loss (held-out problems)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
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
    args = parse_with_allocator(parser)

    start = time.time()
    optimizees = args.optimizees or (200 if args.problem == "quadratic" else 100)
    config = make_config("l2o", args.full_protocol, dataset=args.problem, steps=args.runs,
                         meta_batch=args.meta_batch, seed=args.seed, eval_episodes=optimizees,
                         val_episodes=args.tune)
    family, train_data, test_data = family_and_data(config)
    work = Path(tempfile.mkdtemp(prefix="l2o_bench_"))
    try:
        state, stats = meta_train(config, family, train_data, work, progress=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    net = make_net(config)
    variants = args.variants.split(",") if args.problem == "mlp" else ["quadratic"]
    results, rows = {}, []
    for variant in variants:
        t0 = time.time()
        fam = family if variant in ("quadratic", "base") else mlp_family(variant)
        r = compare_optimizers(net, state.lstm_params, fam, train_data, test_data,
                               horizon=config.horizon, tune_optimizees=config.val_episodes,
                               eval_optimizees=config.eval_episodes, seed=config.eval_seed)
        r["eval_wall_time_s"] = time.time() - t0
        results[variant] = r
        best = min(b["final_loss"] for b in r["baselines"])
        learned = r["learned"]
        rows.append(f"| {fam.name} | {learned['final_loss']:.4g} ± {learned['final_loss_ci95']:.2g} | "
                    + " | ".join(f"{b['final_loss']:.4g} ({b['learning_rate']:.3g})"
                                 for b in r["baselines"])
                    + f" | {'yes' if learned['final_loss'] < best else 'no'} |")
        print(rows[-1], flush=True)
    name = f"l2o_{args.problem}"
    png = RESULTS / f"{name}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    _plot(png, {results_name: results[results_name] for results_name in variants},
          f"{name}: mean of {optimizees} held-out problems,\n{config.steps} meta-training runs")
    names = [b["name"] for b in results[variants[0]]["baselines"]]
    table = ("| problems | LSTM final loss ± 95% CI | "
             + " | ".join(f"{n} (lr)" for n in names) + " | LSTM below all |\n"
             + "|---" * (len(names) + 3) + "|\n" + "\n".join(rows)
             + f"\n\nMean loss at step {config.horizon} over {optimizees} held-out problems; each "
             f"baseline's learning rate is the best of {len(LR_GRID)} on {config.val_episodes} "
             f"training problems. Meta-training: {config.steps} runs of {config.horizon} steps "
             f"(unrolls of {config.unroll}), {config.meta_batch} optimisees per run, "
             f"{stats['train_wall_time_s']:.0f}s.\n\n![curves]({png.name})\n\nPaper: {PAPER}\n")
    payload = {
        "problem": args.problem,
        "settings": {**config.to_dict(), "lr_grid": list(LR_GRID), "variants": variants,
                     "mlp_variants": {v: MLP_VARIANTS[v] for v in variants if v in MLP_VARIANTS}},
        "results": results,
        "meta_training": stats,
        "paper": PAPER,
        "machine": machine_info(),
        "devices": [str(d) for d in jax.devices()],
        "wall_time_s": time.time() - start,
        "plot": png.name,
    }
    path = write_results(name, payload, table)
    print(table)
    print(f"results in {path}")


if __name__ == "__main__":
    main()
