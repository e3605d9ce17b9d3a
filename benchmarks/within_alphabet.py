"""20-way within-alphabet one-shot classification (the protocol of Lake et al.'s official runs).

Each learner is trained on the background alphabets only (`--split lake`, CPU-sized defaults, at most
about 30 minutes each on 2 cores), then tested on many seeded 20-way 1-shot episodes whose 20
characters all come from one evaluation alphabet (unrotated, one query per class, as in the official
runs). With `--runs all_runs.zip` the 20 official runs are scored as well. Error rates of the papers
are printed beside ours (Lake et al. 2015: deep Siamese convnet 8.0%, deep convnet 13.5%, people
4.5%, BPL 3.3%; Koch et al. 2015: conv Siamese 8.0% (92.0% accuracy)).

    python benchmarks/within_alphabet.py                       # protonet, relation, matching, siamese
    python benchmarks/within_alphabet.py --algos finetune      # the transfer baseline (not by default)
    python benchmarks/within_alphabet.py --algos protonet --steps 20 --episodes 20   # smoke test
    python benchmarks/within_alphabet.py --algos protonet --image-size 56 --train-ways 20 --steps 2000
    python benchmarks/within_alphabet.py --runs ~/omniglot/python/one-shot-classification/all_runs.zip
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from common import keep_earlier_rows, parse_with_allocator, report, training_parser

from metajax.config import make_config
from metajax.data.omniglot import load_omniglot
from metajax.data.runs import load_runs, score_runs
from metajax.data.within_alphabet import evaluation_alphabets, within_alphabet_sampler
from metajax.experiment import load_state, train_and_evaluate
from metajax.registry import build_learner
from metajax.training import evaluate

# error rate (%) on the official runs in the papers (REFERENCE_RESULTS.md)
# (Lake et al.'s "deep convnet", 13.5%, is a convnet trained to classify the background characters,
# as the `finetune` transfer baseline is)
PAPER_ERROR = {"siamese": 8.0, "finetune": 13.5}
ALGOS = ("protonet", "relation", "matching", "siamese")
BASELINES = ("finetune", "baseline++")  # transfer baselines: not run by default


def main() -> None:
    p = training_parser(__doc__, out="runs/bench_within_alphabet", name="within_alphabet",
                        episodes=1000, episodes_help="within-alphabet test episodes")
    p.add_argument("--algos", nargs="+", choices=ALGOS + BASELINES, default=list(ALGOS))
    p.add_argument("--eval-seed", type=int, default=2015, help="seed of the test episodes")
    p.add_argument("--runs", help="all_runs.zip (or its folder) to score the official runs too")
    p.add_argument("--train-within-alphabet", action="store_true",
                   help="train on within-alphabet episodes too (20-way, one alphabet and rotation "
                   "each), as the test episodes are drawn")
    p.add_argument("--image-size", type=int, help="image side (default per learner: 28, or the "
                   "full protocol's); rows at other sizes are labelled with it")
    p.add_argument("--train-ways", type=int, help="N of training episodes (default per learner)")
    p.add_argument("--lr-decay-every", type=int, help="halve the learning rate every N steps")
    args = parse_with_allocator(p)

    rows = []
    for algo in args.algos:
        train = dict(within_alphabet=True, train_ways=20) if args.train_within_alphabet else {}
        if args.train_ways:
            train["train_ways"] = args.train_ways
        config = make_config(algo, args.full_protocol, ways=20, shots=1, split="lake", val_every=0,
                             steps=args.steps, seed=args.seed, eval_episodes=min(args.episodes, 200),
                             image_size=args.image_size, lr_decay_every=args.lr_decay_every,
                             **train)
        # the row's label says what differs from the learner's defaults
        notes = []
        if config.image_size != make_config(algo, args.full_protocol).image_size:
            notes.append(f"{config.image_size}x{config.image_size}")
        if config.within_alphabet:
            notes.append("within-alphabet training")
        elif args.train_ways:
            notes.append(f"{config.train_ways_}-way training")
        learner_name = algo + (f" ({', '.join(notes)})" if notes else "")
        run_dir = Path(args.out) / re.sub(r"[ ,()]+", "_", learner_name).strip("_")
        start = time.time()
        summary = train_and_evaluate(config, run_dir, resume=(run_dir / "checkpoints").exists(),
                                     progress=not args.no_progress)
        t0 = time.time()
        images, alphabet, names = evaluation_alphabets(load_omniglot(config.image_size,
                                                                     data_dir=config.data_dir))
        state = load_state(run_dir, config)  # the test-time learner (the baselines fit a new head)
        learner = build_learner(config, 20, 1, phase="test", inner_state=state.inner_state)
        params = state.params
        result = evaluate(learner, params, within_alphabet_sampler(alphabet, 20, 1, 1), images,
                          episodes=args.episodes, seed=args.eval_seed,
                          progress=not args.no_progress, desc="within-alphabet")
        row = {
            "algo": algo, "learner": learner_name, "accuracy": 100 * result["accuracy"],
            "ci95": 100 * result["ci95"],
            "error": 100 * (1 - result["accuracy"]), "episodes": args.episodes,
            "eval_seed": args.eval_seed, "alphabets": len(names),
            "any_alphabet_20w1s_accuracy": 100 * summary["accuracy"],
            "paper_error": PAPER_ERROR.get(algo), "train_steps": config.steps,
            "train_time_s": round(summary["train_wall_time_s"], 1),
            "eval_time_s": round(time.time() - t0, 1), "run_wall_time_s": None,
            "config": summary["config"], "split": summary["split"],
        }
        if args.runs:
            official = score_runs(learner, params, load_runs(args.runs, config.image_size))
            row["official_runs_error"] = 100 * official["error_rate"]
            row["official_runs"] = official["runs"]
        row["run_wall_time_s"] = round(time.time() - start, 1)
        rows.append(row)

    rows = keep_earlier_rows(args.name, rows, ALGOS + BASELINES, key="learner")
    lines = ["| learner | within-alphabet 20w1s acc (%) | 95% CI | error (%) | official runs error "
             "(%) | paper error (%) | any-alphabet 20w1s (%) | train steps | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        official = f"{r['official_runs_error']:.1f}" if "official_runs_error" in r else "not run"
        paper = "" if r["paper_error"] is None else r["paper_error"]
        lines.append(f"| {r.get('learner', r['algo'])} | {r['accuracy']:.2f} | ±{r['ci95']:.2f} | "
                     f"{r['error']:.2f} | "
                     f"{official} | {paper} | {r['any_alphabet_20w1s_accuracy']:.2f} | "
                     f"{r['train_steps']} | {r['train_time_s']:.0f} |")
    lines += ["", "paper error: Koch et al.'s Siamese convnet beside siamese; beside finetune, Lake et al.'s "
              "deep convnet, also a classifier of the background characters whose features score "
              "new ones"]
    report(args.name, rows, lines)


if __name__ == "__main__":
    main()
