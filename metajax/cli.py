"""Command line: `metajax train ALGO ...`, `metajax eval DIR ...` and `metajax eval-runs DIR --runs
PATH`. Parses flags, nothing else."""

from __future__ import annotations

import argparse
import sys

from metajax.config import DATASETS
from metajax.registry import LEARNERS


def _parser() -> argparse.ArgumentParser:
    algos = ", ".join(LEARNERS)
    parser = argparse.ArgumentParser(
        prog="metajax",
        description=f"Meta-learning in JAX. Algorithms: {algos}. Datasets: {', '.join(DATASETS)}.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help=f"meta-train and test a learner ({algos})",
                       description=f"Meta-train ALGO, then evaluate it on the test split. "
                                   f"Algorithms: {algos}.")
    t.add_argument("algo", choices=[*LEARNERS, "l2o"], metavar="ALGO",
                   help=f"one of: {algos}, l2o")
    t.add_argument("--dataset", choices=list(DATASETS), help=f"one of: {', '.join(DATASETS)}")
    t.add_argument("--ways", type=int, help="N of the test episodes (default 5)")
    t.add_argument("--shots", type=int, help="K of the test episodes (default 1)")
    t.add_argument("--out", required=True, help="run directory for checkpoints and results")
    t.add_argument("--split", choices=["maml", "vinyals", "lake"], help="class split")
    t.add_argument("--split-seed", type=int, help="seed of the MAML split (default 1)")
    t.add_argument("--steps", type=int, help="meta-training steps")
    t.add_argument("--seed", type=int, help="seed of initialisation and training tasks")
    t.add_argument("--data-dir", help="folder holding omniglot/ (default $METAJAX_DATA_DIR)")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    t.add_argument("--full-protocol", action="store_true", help="the paper's settings (for a GPU)")
    t.add_argument("--train-ways", type=int, help="N of training episodes (default per algorithm)")
    t.add_argument("--train-shots", type=int, help="K of training episodes (default: --shots)")
    t.add_argument("--queries", type=int, help="query examples per class in training episodes")
    t.add_argument("--test-queries", type=int, help="query examples per class in test episodes")
    t.add_argument("--meta-batch", type=int, help="tasks per meta-step")
    t.add_argument("--lr", type=float, help="outer learning rate")
    t.add_argument("--lr-decay-every", type=int, help="halve the learning rate every N steps")
    t.add_argument("--image-size", type=int, help="image side in pixels (default 28)")
    t.add_argument("--width", type=int, help="filters per conv layer (default 64)")
    t.add_argument("--eval-episodes", type=int, help="test episodes (default 1000)")
    t.add_argument("--val-every", type=int, help="steps between validations (0: none)")
    t.add_argument("--val-episodes", type=int, help="validation episodes")
    t.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    t.add_argument("--log-every", type=int, help="steps between metric lines")
    t.add_argument("--pairs", type=int, help="siamese: same/different pairs per training step")
    t.add_argument("--affine", action="store_true", default=None,
                   help="siamese: Koch's random affine distortions of training pairs")
    t.add_argument("--fce", action="store_true", default=None,
                   help="matching: full context embeddings (LSTMs over support and queries)")
    t.add_argument("--downsample", choices=["maxpool", "stride"], help="conv4 downsampling")
    t.add_argument("--within-alphabet", action="store_true", default=None,
                   help="training episodes draw all N classes from one alphabet (and rotation), "
                   "as the within-alphabet test episodes do")
    g = t.add_argument_group("gradient-based learners (maml, fomaml, metasgd, anil, reptile, "
                             "pretrained)")
    g.add_argument("--inner-lr", type=float, help="inner-loop learning rate (Meta-SGD: its start)")
    g.add_argument("--inner-steps", type=int, help="inner steps at training")
    g.add_argument("--test-inner-steps", type=int, help="inner steps at evaluation (0: as training)")
    g.add_argument("--inner-batch", type=int, help="Reptile: examples per inner mini-batch")
    g.add_argument("--fresh-inner-state", action="store_true", default=None,
                   help="Reptile: a fresh inner Adam per task (default: its moments carry over "
                   "from task to task, as in the authors' code)")
    g.add_argument("--fresh-test-state", action="store_true", default=None,
                   help="Reptile: adapt test tasks from a fresh Adam (default: from the state "
                   "meta-training ended with, as the authors' evaluation does)")
    g.add_argument("--task-map", help="how a meta-batch's tasks run: vmap, map (one by one), map:N "
                   "(chunks of N vmapped tasks) or auto (map on a CPU, vmap on an accelerator; "
                   "the default of maml, fomaml, metasgd and anil; the others vmap)")
    g.add_argument("--remat", action="store_true", default=None,
                   help="jax.checkpoint each inner step (less memory for many steps)")
    g.add_argument("--optimizer", choices=["adam", "sgd"], help="outer optimiser")
    g.add_argument("--lr-anneal", action="store_true", default=None,
                   help="anneal the outer learning rate linearly to 0 (Reptile)")
    b = t.add_argument_group("transfer baselines (finetune, baseline++, multitask)")
    b.add_argument("--batch-size", type=int, help="pre-training images per step")
    b.add_argument("--head-steps", type=int, help="Adam steps fitting a new head per test episode")
    b.add_argument("--head-lr", type=float, help="learning rate of the new head")
    b.add_argument("--finetune-steps", type=int,
                   help="then fine-tune the whole network this many steps (0: head only)")
    b.add_argument("--finetune-lr", type=float, help="learning rate of that fine-tuning")
    d = t.add_argument_group("deml (concept generator + discriminator + Meta-SGD)")
    d.add_argument("--concept-weight", type=float,
                   help="lambda of L_meta + lambda * L_discrimination (0: no discriminator)")
    d.add_argument("--external-batch", type=int, help="external examples per step")
    d.add_argument("--concept-stages", type=int, help="ResNet stages of the concept generator")
    d.add_argument("--concept-blocks", type=int, help="residual blocks per stage")
    d.add_argument("--meta-learner", choices=["metasgd", "maml"], help="learner on the concepts")
    d.add_argument("--first-order", action="store_true", default=None,
                   help="drop second derivatives of the inner loop")
    o = t.add_argument_group("learned optimiser (l2o, --dataset quadratic or mlp)")
    o.add_argument("--unroll", type=int, help="steps per truncated unroll (default 20)")
    o.add_argument("--horizon", type=int, help="optimisee steps per run (default 100)")
    o.add_argument("--preprocess-p", type=float, help="p of the gradient preprocessing (default "
                   "10; 0: raw gradients)")
    o.add_argument("--second-order", action="store_true", default=None,
                   help="keep second derivatives (no stop_gradient on the optimisee gradient)")
    b = t.add_argument_group("black-box learners (mann, lstm, feedforward, snail)")
    b.add_argument("--protocol", choices=["sequence", "episodes"],
                   help="label-offset sequences (mann; lstm/feedforward default) or N-way K-shot "
                        "episodes (snail; lstm/feedforward)")
    b.add_argument("--instances", type=int, help="sequence: presentations of each class (10)")
    b.add_argument("--label-chars", type=int,
                   help="sequence: 0 one-hot labels (default); 5: the paper's 5-character strings")
    b.add_argument("--memory-slots", type=int, help="mann: memory rows (128)")
    b.add_argument("--memory-width", type=int, help="mann: memory columns (40)")
    b.add_argument("--read-heads", type=int, help="mann: read heads (4)")
    b.add_argument("--clip-norm", type=float, help="clip the global gradient norm (0: no clipping)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("eval", help="evaluate a trained run, also at other ways/shots")
    e.add_argument("run_dir", metavar="DIR")
    e.add_argument("--ways", type=int)
    e.add_argument("--shots", type=int)
    e.add_argument("--episodes", type=int)
    e.add_argument("--queries", type=int, help="query examples per class")
    e.add_argument("--seed", type=int, help="seed of the test episodes (default: the run's)")
    e.add_argument("--split", choices=("test", "val"), default="test",
                   help="classes to evaluate on: the test classes (eval.json) or the validation "
                   "classes, for choosing settings without the test set (eval_val.json)")
    e.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("eval-runs", help="score a trained run on the official 20-way one-shot runs",
                       description="Classify the official 20-way within-alphabet one-shot runs "
                                   "of Lake et al. (all_runs.zip from the Omniglot repository) "
                                   "with a trained run; train it with --split lake.")
    r.add_argument("run_dir", metavar="DIR")
    r.add_argument("--runs", default="official", metavar="PATH",
                   help="all_runs.zip or the folder it unpacks to; 'official' (default) is "
                        "DATA_DIR/omniglot/all_runs.zip, downloaded when missing")
    r.add_argument("--data-dir", help="data directory for --runs official (default "
                                      "$METAJAX_DATA_DIR, else ./data)")
    r.add_argument("--seed", type=int, default=0, help="seed handed to predict (default 0)")
    return parser


def _score(result: dict) -> str:
    """`accuracy X` for classification, `mse X` for regression (the last words printed)."""
    if result.get("accuracy") is None:
        return f"mse {result['mse']:.4f}"
    return f"accuracy {result['accuracy']:.4f}"


def _print_l2o(result: dict, where: str) -> None:
    """The tuned baselines' final losses, then a line ending in the learned optimiser's."""
    print(" ".join(f"{b['name']} {b['final_loss']:.4g}" for b in result["baselines"]))
    print(f"l2o {result['dataset']}, {result['optimizees']} held-out optimisees, {where}, "
          f"final_loss {result['final_loss']:.4g}")


def main(argv: list[str] | None = None) -> int:
    """The `metajax` command. Run from the command line (`argv` None), it first re-executes itself
    with a faster memory allocator (`metajax.allocator`; `METAJAX_ALLOCATOR=system` opts out).
    Training and evaluation keep compiled programs in JAX's persistent compilation cache
    (`metajax.compilation_cache`; `METAJAX_XLA_CACHE=0` opts out)."""
    args = _parser().parse_args(argv)
    if args.command in ("train", "eval", "eval-runs"):
        if argv is None:
            from metajax.allocator import reexec_with_allocator

            reexec_with_allocator(["-m", "metajax.cli", *sys.argv[1:]])
        from metajax.compilation_cache import enable_compilation_cache

        enable_compilation_cache()
    # Imported here so that `metajax --help` answers without starting JAX.
    from metajax.config import make_config
    from metajax.data.download import DataError
    from metajax.experiment import evaluate_official_runs, evaluate_run, train_and_evaluate
    from metajax.training.trainer import CheckpointExists, TrainingDiverged

    try:
        if args.command == "train":
            skip = {"command", "algo", "out", "resume", "full_protocol", "no_progress"}
            overrides = {k: v for k, v in vars(args).items() if k not in skip}
            config = make_config(args.algo, args.full_protocol, **overrides)
            s = train_and_evaluate(config, args.out, resume=args.resume,
                                   progress=not args.no_progress)
            if args.algo == "l2o":
                _print_l2o(s, f"{s['wall_time_s']:.0f}s, summary in {args.out}/summary.json")
                return 0
            setting = f"{s['ways']}-way {s['shots']}-shot"
            if "accuracy_by_instance" in s:
                print("accuracy by instance: " + " ".join(
                    f"{k}:{100 * v:.1f}" for k, v in s["accuracy_by_instance"].items()))
                setting = f"sequences of {s['ways']} classes x {s['instances']} instances"
            print(f"{s['algo']} {s['dataset']} {setting}, "
                  f"{s['episodes']} test episodes, ci95 {s['ci95']:.4f}, "
                  f"{s['wall_time_s']:.0f}s, summary in {args.out}/summary.json, "
                  f"{_score(s)}")
        elif args.command == "eval-runs":
            runs = args.runs
            if runs == "official":
                from metajax.data.runs import official_runs_path

                runs = official_runs_path(args.data_dir)
            r = evaluate_official_runs(args.run_dir, runs, seed=args.seed)
            for row in r["runs"]:
                print(f"{row['run']} error {100 * row['error_rate']:.1f}% "
                      f"({row['errors']}/{row['items']})")
            if "warning" in r:
                print(f"warning: {r['warning']}", file=sys.stderr)
            print(f"{r['algo']} official one-shot runs, {len(r['runs'])} runs, error "
                  f"{100 * r['error_rate']:.2f}%, results in {args.run_dir}/eval_runs.json, "
                  f"accuracy {r['accuracy']:.4f}")
        else:
            r = evaluate_run(args.run_dir, args.ways, args.shots, args.episodes, args.queries,
                             args.seed, progress=not args.no_progress, part=args.split)
            if r["algo"] == "l2o":
                _print_l2o(r, f"results in {args.run_dir}/eval.json")
                return 0
            setting = f"{r['ways']}-way {r['shots']}-shot" + (
                " (validation classes)" if args.split == "val" else "")
            if "accuracy_by_instance" in r:
                print("accuracy by instance: " + " ".join(
                    f"{k}:{100 * v:.1f}" for k, v in r["accuracy_by_instance"].items()))
                setting = f"sequences of {r['ways']} classes x {r['instances']} instances"
            print(f"{r['algo']} {r['dataset']} {setting}, "
                  f"{r['episodes']} episodes, ci95 {r['ci95']:.4f}, {_score(r)}")
    except (DataError, ValueError, FileNotFoundError, CheckpointExists, TrainingDiverged) as e:
        print(f"metajax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
