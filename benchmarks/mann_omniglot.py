"""MANN (Santoro et al. 2016) on Omniglot: accuracy by instance of a class in the episode, 5 classes
with one-hot labels, on test characters, beside the paper's table; the LSTM and feed-forward
baselines in the same protocol; a PNG plot of accuracy by instance.

Each learner is trained with `metajax train`'s path (`train_and_evaluate`), so every run directory
holds its summary.json; a run left in `--runs-dir` is resumed. Results are written after each
learner, so a run cut short keeps what finished.

    python benchmarks/mann_omniglot.py                     # CPU defaults (about 60 min on 2 cores)
    python benchmarks/mann_omniglot.py --full-protocol     # 100,000 iterations (for a GPU)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import RESULTS, keep_earlier_rows, parse_with_allocator, report

from metajax.bench.results import command_line

INSTANCES = ("1", "2", "3", "4", "5", "10")
# Santoro et al. 2016, Table 1 (5 classes, one-hot labels), percent
PAPER = {
    "feedforward": dict(zip(INSTANCES, (24.4, 19.6, 21.1, 19.9, 22.8, 19.5), strict=True)),
    "lstm": dict(zip(INSTANCES, (24.4, 49.5, 55.3, 61.0, 63.6, 62.5), strict=True)),
    "mann": dict(zip(INSTANCES, (36.4, 82.8, 91.0, 92.6, 94.9, 98.1), strict=True)),
}
GOAL = {"mann": {"2": 80.0, "10": 95.0}}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, row in enumerate(rows):
        ks = sorted(row["accuracy_by_instance"], key=int)
        line, = ax.plot([int(k) for k in ks], [row["accuracy_by_instance"][k] for k in ks],
                        "o-", label=f"{row['algo']} (ours, {row['steps']} steps)", color=f"C{i}")
        paper = PAPER.get(row["algo"])
        if paper:
            ax.plot([int(k) for k in paper], list(paper.values()), "x--", color=line.get_color(),
                    alpha=0.6, label=f"{row['algo']} (paper)")
    ax.axhline(20, color="gray", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("instance (presentation of the class in the episode)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Omniglot, 5 classes one-hot, test characters")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def score_latest(run_dir: Path, episodes: int, progress: bool) -> tuple[dict, int]:
    """The test evaluation of a run's latest checkpoint (finished or not) and the step it holds."""
    import json

    import orbax.checkpoint as ocp

    from metajax.experiment import evaluate_run

    manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute())
    step = manager.latest_step()
    manager.close()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    result = evaluate_run(run_dir, episodes=episodes, progress=progress)
    times = [json.loads(line).get("time_s") for line in (run_dir / "metrics.jsonl").open()
             if '"time_s"' in line and json.loads(line)["step"] <= step]
    summary = {**result, "train_wall_time_s": times[-1] if times else float("nan"),
               "steps_per_s": None, "config": json.loads((run_dir / "config.json").read_text())}
    return summary, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="feedforward,lstm,mann")
    parser.add_argument("--steps", type=int, default=None,
                        help="MANN training steps of 16 episodes (CPU default 28000)")
    parser.add_argument("--baseline-steps", type=int, default=None,
                        help="LSTM / feed-forward training steps (CPU default 4000 / 1000)")
    parser.add_argument("--eval-episodes", type=int, default=1000)
    parser.add_argument("--full-protocol", action="store_true")
    parser.add_argument("--runs-dir", default="runs/bench_mann")
    parser.add_argument("--name", default="mann_omniglot")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--score-partial", action="store_true",
                        help="do not train: score the latest checkpoint of each run in --runs-dir "
                             "(a run cut short is labelled with the steps it reached)")
    args = parse_with_allocator(parser)

    from metajax.bench.machine import machine_info
    from metajax.config import make_config
    from metajax.experiment import train_and_evaluate

    cpu_steps = {"mann": 28000, "lstm": 4000, "feedforward": 1000}
    rows, start = [], time.time()
    for algo in args.algos.split(","):
        if args.full_protocol:
            steps = None
        elif algo == "mann":
            steps = args.steps or cpu_steps[algo]
        else:
            steps = args.baseline_steps or cpu_steps[algo]
        config = make_config(algo, args.full_protocol, steps=steps,
                             eval_episodes=args.eval_episodes)
        run_dir = Path(args.runs_dir) / algo
        if args.score_partial:
            summary, reached = score_latest(run_dir, args.eval_episodes, args.progress)
        else:
            summary = train_and_evaluate(config, run_dir,
                                         resume=(run_dir / "checkpoints").exists(),
                                         progress=args.progress)
            reached = config.steps
        rows.append({
            "algo": algo, "steps": reached, "planned_steps": config.steps,
            "episodes": summary["episodes"],
            "accuracy_by_instance": {k: 100 * v for k, v in
                                     summary["accuracy_by_instance"].items()},
            "accuracy_by_instance_ci95": {k: 100 * v for k, v in
                                          summary["accuracy_by_instance_ci95"].items()},
            "accuracy": 100 * summary["accuracy"], "paper": PAPER.get(algo),
            "goal": GOAL.get(algo), "train_time_s": round(summary["train_wall_time_s"], 1),
            "steps_per_s": summary["steps_per_s"], "config": summary["config"],
            "split": summary["split"], "run_dir": str(run_dir),
            "command": command_line(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine_info(),
        })
        rows = keep_earlier_rows(args.name, rows, PAPER)
        lines = [
            "| model | steps x 16 episodes | " + " | ".join(f"{k}" for k in INSTANCES)
            + " | train time |",
            "|---|---|" + "---|" * len(INSTANCES) + "---|",
        ]
        for row in rows:
            acc, ci = row["accuracy_by_instance"], row["accuracy_by_instance_ci95"]
            lines.append(f"| {row['algo']} (ours) | {row['steps']} | "
                         + " | ".join(f"{acc[k]:.1f} ± {ci[k]:.1f}" for k in INSTANCES)
                         + f" | {row['train_time_s']:.0f} s |")
            if row["paper"]:
                lines.append(f"| {row['algo']} (paper) | 100k episodes | "
                             + " | ".join(f"{row['paper'][k]:.1f}" for k in INSTANCES) + " | |")
        for row in rows:
            if row["command"] != command_line():
                lines.append(f"\n{row['algo']}: from an earlier run ({row['date']}, "
                             f"`{row['command']}`)")
        for row in rows:
            for k, goal in (row["goal"] or {}).items():
                met = row["accuracy_by_instance"][k] >= goal
                lines.append(f"\n{row['algo']} instance {k}: {row['accuracy_by_instance'][k]:.1f}"
                             f" (goal >= {goal}: {'met' if met else 'NOT met'})")
        lines.append(f"\nTest: {args.eval_episodes} episodes of 50 steps on the 423 test characters"
                     f" (x4 rotations) of the MAML split; accuracy ± 95% CI, percent. Wall time "
                     f"so far {time.time() - start:.0f} s.")
        report(args.name, rows, lines)
        plot(rows, RESULTS / f"{args.name}.png")


if __name__ == "__main__":
    main()
