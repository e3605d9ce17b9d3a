"""MAML, first-order MAML, Meta-SGD, ANIL and Reptile on Omniglot 5-way 1-shot: test accuracy over
600 episodes with 95% CI, the papers' numbers beside ours.

Each method runs `metajax train ALGO` with its CPU defaults (`metajax/config.py`: MAML family
meta-batch 32, 13,000 steps, 1 inner step of lr 0.4 at training and 3 at test, stride-2 conv4 of
width 64, query set of 1 per class, the MAML split; Reptile 20,000 steps) - at most about 60 minutes
per method on 2 CPU cores. The paper's 60,000 steps are `--full-protocol`.

    python benchmarks/maml_omniglot.py                             # up to about 60 min per method
    python benchmarks/maml_omniglot.py --algos maml --steps 20 --eval-episodes 50   # smoke check

A run left in `--out` is resumed where it stopped; a finished one's `summary.json` is reused, or
evaluated again with `--rescore` (its training time kept).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import keep_earlier_rows, write_results

from metajax.allocator import reexec_with_allocator
from metajax.bench.machine import machine_info
from metajax.bench.results import command_line
from metajax.config import make_config
from metajax.experiment import train_and_evaluate

# Omniglot 5-way 1-shot accuracy (%) from the papers (REFERENCE_RESULTS.md); ANIL reports 20-way only.
PAPER = {"maml": "98.7 ± 0.4", "fomaml": "– (MAML paper: 98.3 ± 0.5)", "metasgd": "99.53 ± 0.26",
         "anil": "– (20-way 1-shot 96.2 ± 0.5)", "reptile": "97.68 ± 0.04 (transductive)"}
ALGOS = tuple(PAPER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--steps", type=int, help="meta-training steps (default: each CPU default)")
    parser.add_argument("--eval-episodes", type=int, default=600)
    parser.add_argument("--full-protocol", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/maml_omniglot", help="parent of the run folders")
    parser.add_argument("--data-dir")
    parser.add_argument("--rescore", action="store_true",
                        help="evaluate finished runs in --out again (default: reuse their "
                             "summary.json)")
    args = parser.parse_args()
    reexec_with_allocator()  # jemalloc or glibc tunables, as `metajax train` does
    start = time.time()
    rows = []
    for algo in args.algos:
        config = make_config(algo, args.full_protocol, ways=5, shots=1, steps=args.steps,
                             eval_episodes=args.eval_episodes, seed=args.seed,
                             data_dir=args.data_dir)
        run_dir = Path(args.out) / f"{algo}_5w1s_seed{args.seed}"
        summary = run_dir / "summary.json"
        previous = json.loads(summary.read_text()) if summary.exists() else None
        if previous and not args.rescore:  # a finished run in --out: its own numbers
            s = previous
        else:  # a run left in --out (cut short, or finished with --rescore) is resumed
            s = train_and_evaluate(config, run_dir, resume=(run_dir / "checkpoints").exists(),
                                   progress=False)
            if previous and s.get("start_step") == previous["steps"]:
                # only re-scored: the training time and speed are the earlier run's
                s.update(wall_time_s=previous["wall_time_s"],
                         steps_per_s=previous["steps_per_s"], rescored=True)
                summary.write_text(json.dumps(s, indent=2))
        rows.append({"algo": algo, "accuracy": s["accuracy"], "ci95": s["ci95"],
                     "rescored": bool(s.get("rescored")), "start_step": s.get("start_step", 0),
                     "episodes": s["episodes"], "wall_time_s": s["wall_time_s"],
                     "steps_per_s": s["steps_per_s"], "paper": PAPER[algo],
                     "config": s["config"], "command": command_line(),
                     "machine": machine_info()})
        print(f"{algo}: {100 * s['accuracy']:.2f} ± {100 * s['ci95']:.2f} "
              f"({s['wall_time_s']:.0f}s)", flush=True)
    name = "maml_omniglot" if args.steps is None else f"maml_omniglot_steps{args.steps}"
    # Methods run one at a time keep each other's rows (each row has its own command and machine).
    rows = keep_earlier_rows(name, rows, ALGOS, field="rows")
    lines = ["| method | 5-way 1-shot acc. % (ours) | paper | steps | meta-batch | inner steps "
             "train/test | wall s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["config"]
        resumed = ""
        if r.get("rescored"):  # training time of the earlier run, accuracy of the new scoring
            resumed = " (re-scored)"
        elif 0 < r.get("start_step", 0) < c["steps"]:  # wall time of the last part only
            resumed = f" (resumed at {r['start_step']})"
        lines.append(f"| {r['algo']} | {100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} | "
                     f"{r['paper']} | {c['steps']}{resumed} | {c['meta_batch']} | {c['inner_steps']}/"
                     f"{c['test_inner_steps'] or c['inner_steps']} | {r['wall_time_s']:.0f} |")
    table = "\n".join(lines)
    print(table)
    write_results(name, {"rows": rows, "machine": machine_info(),
                         "wall_time_s": time.time() - start}, table)


if __name__ == "__main__":
    main()
