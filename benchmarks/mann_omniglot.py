"""MANN (Santoro et al. 2016) on Omniglot: accuracy by instance of a class in the episode, 5 classes
with one-hot labels, on test characters, beside the paper's table; the LSTM and feed-forward
baselines in the same protocol; a PNG plot of accuracy by instance.

Each learner is trained with `metajax train`'s path (`train_and_evaluate`), so every run directory
holds its summary.json; a run left in `--runs-dir` is resumed, a finished one reused (`--rescore`
scores it again). Results are written after each learner, so a run cut short keeps what finished;
`--algos mann` reruns one model and keeps the other rows (each with its own command).

    python benchmarks/mann_omniglot.py                     # CPU defaults (about 60 min on 2 cores)
    python benchmarks/mann_omniglot.py --full-protocol     # 100,000 iterations (for a GPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from common import parse_with_allocator
from reproduce import Run, Score, reproduce

from metajax.bench.results import paper

SANTORO = "Santoro et al. 2016, Table 1"
SEQUENCES = "Omniglot sequences, 5 classes one-hot"
INSTANCES = ("1", "2", "3", "4", "5", "10")
# the paper's accuracy by instance (5 classes, one-hot labels, 100,000 training episodes)
PAPER = {
    "feedforward": (0.244, 0.196, 0.211, 0.199, 0.228, 0.195),
    "lstm": (0.244, 0.495, 0.553, 0.610, 0.636, 0.625),
    "mann": (0.364, 0.828, 0.910, 0.926, 0.949, 0.981),
}
GOAL = {"mann": {"2": 0.80, "10": 0.95}}
CPU_STEPS = {"feedforward": 1000, "lstm": 4000, "mann": 28000}


def instance(algo: str, k: str, figure: float) -> Score:
    """The accuracy at the `k`-th presentation of a class in the episode."""
    return Score(f"{SEQUENCES}, instance {k}",
                 paper(figure, SANTORO, note="100,000 training episodes"), GOAL.get(algo, {}).get(k),
                 pick=lambda r: (r["accuracy_by_instance"][k], r["accuracy_by_instance_ci95"][k]),
                 details=lambda r: {"instance": int(k)})


# the accuracy over all steps of the episode, with every instance's in its details
ALL_INSTANCES = Score(f"{SEQUENCES}, all instances", details=lambda r: {
    "accuracy_by_instance": r["accuracy_by_instance"],
    "accuracy_by_instance_ci95": r["accuracy_by_instance_ci95"]})
RUNS = tuple(Run(algo, algo, {}, scores=(
    *(instance(algo, k, figure) for k, figure in zip(INSTANCES, figures, strict=True)),
    ALL_INSTANCES)) for algo, figures in PAPER.items())


def plot(payload: dict, path: Path) -> None:
    """Accuracy by instance of each model, ours and the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, method in enumerate(dict.fromkeys(r["method"] for r in payload["rows"])):
        rows = [r for r in payload["rows"] if r["method"] == method and "instance" in r["details"]]
        if not rows:
            continue
        ks = [r["details"]["instance"] for r in rows]
        ax.plot(ks, [100 * r["value"] for r in rows], "o-", color=f"C{i}",
                label=f"{method} (ours, {rows[0]['steps']} steps)")
        ax.plot(ks, [100 * r["paper"]["value"] for r in rows], "x--", color=f"C{i}", alpha=0.6,
                label=f"{method} (paper)")
    ax.axhline(20, color="gray", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("instance (presentation of the class in the episode)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Omniglot, 5 classes one-hot, test characters")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def score_latest(run_dir: Path, episodes: int, progress: bool) -> dict:
    """The test evaluation of a run's latest checkpoint (finished or not), as a summary whose
    `steps` are the steps that checkpoint holds."""
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
    return {**result, "steps": step, "train_wall_time_s": times[-1] if times else None,
            "steps_per_s": None, "config": json.loads((run_dir / "config.json").read_text())}


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
    parser.add_argument("--rescore", action="store_true",
                        help="score finished runs again (default: reuse their summary.json)")
    parser.add_argument("--score-partial", action="store_true",
                        help="do not train: score the latest checkpoint of each run in --runs-dir "
                             "(a run cut short is labelled with the steps it reached)")
    args = parse_with_allocator(parser)
    algos = args.algos.split(",")
    if set(algos) - set(PAPER):
        parser.error(f"--algos: choose among {','.join(PAPER)}")

    def steps(algo: str) -> int | None:
        if args.full_protocol:
            return None
        given = args.steps if algo == "mann" else args.baseline_steps
        return given or CPU_STEPS[algo]

    runs = [dataclasses.replace(run, overrides={"steps": steps(run.algo)})
            for run in RUNS if run.method in algos]

    def partial(config, run_dir: Path) -> tuple[dict, bool]:
        return score_latest(run_dir, args.eval_episodes, args.progress), True

    reproduce(args.name, runs, out=args.runs_dir, full_protocol=args.full_protocol,
              progress=args.progress, rescore=args.rescore,
              summary_of=partial if args.score_partial else None, order=list(PAPER),
              cli=dict(eval_episodes=args.eval_episodes), plot=plot, notes=[
                  f"Test: {args.eval_episodes} episodes of 50 steps on the 423 test characters "
                  "(x4 rotations) of the MAML split. The paper trains on 100,000 episodes; ours "
                  "on steps x 16 episodes."])


if __name__ == "__main__":
    main()
