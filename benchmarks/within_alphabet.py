"""20-way within-alphabet one-shot classification (the protocol of Lake et al.'s official runs).

Each learner is trained on the background alphabets only (`--split lake`, CPU-sized defaults, at most
about 30 minutes each on 2 cores), then tested on many seeded 20-way 1-shot episodes whose 20
characters all come from one evaluation alphabet (unrotated, one query per class, as in the official
runs). With `--runs all_runs.zip` the 20 official runs are scored as well. The papers' error rates on
the official runs are written beside ours as accuracies (Lake et al. 2015: deep Siamese convnet
8.0%, deep convnet 13.5%, people 4.5%, BPL 3.3%; Koch et al. 2015: conv Siamese 8.0% (92.0%
accuracy)). A run left in `--out` is resumed; a finished one is reused (`--rescore` scores it
again); the rows of earlier invocations are kept.

    python benchmarks/within_alphabet.py                       # protonet, relation, matching, siamese
    python benchmarks/within_alphabet.py --algos finetune      # the transfer baseline (not by default)
    python benchmarks/within_alphabet.py --algos protonet --steps 20 --episodes 20   # smoke test
    python benchmarks/within_alphabet.py --algos protonet --image-size 56 --train-ways 20 --steps 2000
    python benchmarks/within_alphabet.py --runs ~/omniglot/python/one-shot-classification/all_runs.zip
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from common import parse_with_allocator, training_parser
from reproduce import Run, Score, reproduce

from metajax.bench.results import paper

SETTING = "Omniglot 20-way 1-shot within one alphabet"
# the papers' error rates on the 20 official runs, as accuracies
PAPERS = {
    "siamese": paper(0.92, "Koch et al. 2015", note="conv Siamese net, error 8.0% on the official "
                     "runs"),
    # a convnet trained to classify the background characters, as the transfer baseline is
    "finetune": paper(0.865, "Lake et al. 2015", note="deep convnet, error 13.5% on the official "
                      "runs"),
}
ALGOS = ("protonet", "relation", "matching", "siamese")
BASELINES = ("finetune", "baseline++")  # transfer baselines: not run by default
RUNS = tuple(Run(algo, algo, {"ways": 20, "shots": 1, "split": "lake", "val_every": 0},
                 scores=(Score(SETTING, PAPERS.get(algo)),)) for algo in ALGOS + BASELINES)
# the markdown's columns beside the rows' (header -> key of a row's details)
COLUMNS = {"error": "error", "official runs error": "official_runs_error",
           "any-alphabet 20w1s": "any_alphabet_20w1s_accuracy", "train s": "train_time_s"}
NOTES = ["Ours: seeded within-alphabet episodes (and the 20 official runs with `--runs`); the "
         "papers score the 20 official runs. Beside siamese, Koch et al.'s Siamese convnet; beside "
         "finetune, Lake et al.'s deep convnet, also a classifier of the background characters "
         "whose features score new ones. `any-alphabet 20w1s`: the run's own test, 20 characters "
         "from any alphabets."]


def within_alphabet_score(episodes: int, eval_seed: int, runs: str | None):
    """`Score.evaluate`: `episodes` seeded 20-way 1-shot episodes within one evaluation alphabet
    (and the official runs in `runs`), with the error, the alphabets and the run's own test as
    details."""

    def evaluate_within(config, run_dir: Path, progress: bool) -> dict:
        from metajax.data.omniglot import load_omniglot
        from metajax.data.runs import load_runs, score_runs
        from metajax.data.within_alphabet import evaluation_alphabets, within_alphabet_sampler
        from metajax.experiment import load_state
        from metajax.registry import build_learner
        from metajax.training import evaluate

        images, alphabet, names = evaluation_alphabets(load_omniglot(config.image_size,
                                                                     data_dir=config.data_dir))
        state = load_state(run_dir, config)  # the test-time learner (the baselines fit a new head)
        learner = build_learner(config, 20, 1, phase="test", inner_state=state.inner_state)
        result = evaluate(learner, state.params, within_alphabet_sampler(alphabet, 20, 1, 1),
                          images, episodes=episodes, seed=eval_seed, progress=progress,
                          desc="within-alphabet")
        own = json.loads((run_dir / "summary.json").read_text())
        details = {"error": 1 - result["accuracy"], "eval_seed": eval_seed,
                   "alphabets": len(names), "any_alphabet_20w1s_accuracy": own["accuracy"]}
        if runs:
            official = score_runs(learner, state.params, load_runs(runs, config.image_size))
            details.update(official_runs_error=official["error_rate"],
                           official_runs=official["runs"])
        return {"accuracy": result["accuracy"], "ci95": result["ci95"], "episodes": episodes,
                "details": details}

    return evaluate_within


def labelled(run: Run, args, evaluate_within) -> Run:
    """`run` with the command line's training options, scored by `evaluate_within`, its method
    labelled with what differs from the learner's defaults (image size, training episodes)."""
    from metajax.config import make_config

    train = dict(within_alphabet=True, train_ways=20) if args.train_within_alphabet else {}
    if args.train_ways:
        train["train_ways"] = args.train_ways
    overrides = dict(run.overrides, image_size=args.image_size,
                     lr_decay_every=args.lr_decay_every, **train)
    config = make_config(run.algo, args.full_protocol, **overrides)
    notes = []
    if config.image_size != make_config(run.algo, args.full_protocol).image_size:
        notes.append(f"{config.image_size}x{config.image_size}")
    if config.within_alphabet:
        notes.append("within-alphabet training")
    elif args.train_ways:
        notes.append(f"{config.train_ways_}-way training")
    method = run.method + (f" ({', '.join(notes)})" if notes else "")
    return Run(method, run.algo, overrides,
               (dataclasses.replace(run.scores[0], evaluate=evaluate_within),))


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
    evaluate_within = within_alphabet_score(args.episodes, args.eval_seed, args.runs)
    runs = [labelled(run, args, evaluate_within) for run in RUNS if run.method in args.algos]
    reproduce(args.name, runs, out=args.out, full_protocol=args.full_protocol,
              progress=not args.no_progress, rescore=args.rescore, order=ALGOS + BASELINES,
              notes=NOTES, cli=dict(steps=args.steps, seed=args.seed,
                                    eval_episodes=min(args.episodes, 200)),
              columns=COLUMNS)


if __name__ == "__main__":
    main()
