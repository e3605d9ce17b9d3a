"""Command line: `metajax train ALGO ...`, `metajax eval DIR ...` and `metajax eval-runs DIR --runs
PATH`. Parses flags, nothing else."""

from __future__ import annotations

import argparse
import sys

from metajax.config import ALGO_SETTINGS, DATASETS, algorithms_with, make_config, settings_of

# The dataset whose defaults `--help` shows, where it is not omniglot.
DEFAULT_DATASET = {"pretrained": "sinusoid"}
PART_TITLES = {"data": "data and episodes", "train": "meta-training", "eval": "evaluation"}
TYPES = {"int": int, "float": float, "str": str, "str | None": str}


def _add_settings(parser: argparse.ArgumentParser, algo: str) -> None:
    """One flag per setting of `algo` (`metajax.config.settings_of`), grouped by part, each with
    the algorithm's own default in its help. Every flag defaults to None: only given ones
    override."""
    defaults = make_config(algo, dataset=DEFAULT_DATASET.get(algo)).to_dict()
    for part, fields in settings_of(algo).items():
        title = PART_TITLES.get(part, f"{algo} settings")
        group = parser.add_argument_group(title)
        for f in fields:
            flag = "--" + f.name.replace("_", "-")
            shown = f"{f.metadata['help']} (default: {defaults.get(f.name)})"
            if f.type == "bool":
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                   help=shown)
                continue
            group.add_argument(flag, type=TYPES[f.type], default=None, help=shown,
                               choices=f.metadata.get("choices"))


def _parser() -> argparse.ArgumentParser:
    algos = ", ".join(ALGO_SETTINGS)
    parser = argparse.ArgumentParser(
        prog="metajax",
        description=f"Meta-learning in JAX. Algorithms: {algos}. Datasets: {', '.join(DATASETS)}.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help=f"meta-train and test a learner ({algos})",
                       description=f"Meta-train ALGO, then evaluate it on the test split. "
                                   f"Algorithms: {algos}. `metajax train ALGO --help` lists "
                                   f"ALGO's settings with its defaults.")
    per_algo = t.add_subparsers(dest="algo", required=True, metavar="ALGO")
    for algo in ALGO_SETTINGS:
        a = per_algo.add_parser(algo, help=f"{ALGO_SETTINGS[algo].__doc__.split('.')[0]}",
                                description=f"Meta-train {algo}, then evaluate it. Defaults are "
                                f"{algo}'s on its default dataset (CPU-sized; --full-protocol: "
                                f"the paper's).")
        run = a.add_argument_group("run")
        run.add_argument("--out", help="run directory for checkpoints and results (required unless "
                         "--print-config)")
        run.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
        run.add_argument("--full-protocol", action="store_true",
                         help="the paper's settings (for a GPU)")
        run.add_argument("--no-progress", action="store_true", help="no progress bars")
        run.add_argument("--print-config", action="store_true",
                         help="print the resolved configuration as JSON and exit")
        _add_settings(a, algo)

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
    r.add_argument("--proxy", type=int, metavar="N",
                   help="instead of the official runs, score N episodes made as they were (20 "
                        "characters of one evaluation alphabet, training drawings by one drawer, "
                        "test drawings by another) with a 95%% CI; no all_runs.zip needed")
    r.add_argument("--proxy-seed", type=int, default=2015, help="seed of the --proxy episodes")
    r.add_argument("--no-progress", action="store_true")

    d = sub.add_parser("datasets", help="list the image datasets, or count one found on disk",
                       description="Without NAME: the image datasets metajax reads and where "
                                   "their files go. With NAME: the classes and images of each "
                                   "split part found on disk, or where to put the files.")
    d.add_argument("name", nargs="?", metavar="NAME")
    d.add_argument("--json", action="store_true", help="print the counts as JSON")
    d.add_argument("--data-dir", help="data directory (default $METAJAX_DATA_DIR, else ./data; "
                                      "for folder: the tree itself)")
    d.add_argument("--image-size", type=int, help="decode at this size (default: the dataset's)")
    return parser


def _datasets(args) -> int:
    """`metajax datasets [NAME] [--json]`."""
    import json

    from metajax.data.catalog import CATALOG, split_counts
    from metajax.data.download import DataError

    if args.name is None:
        for entry in CATALOG.values():
            print(f"{entry.name:13s} {entry.description}\n{'':13s} files: {entry.files}")
        print("Generated (no files): sinusoid, quadratic, mlp.")
        return 0
    if args.name not in CATALOG:
        print(f"metajax datasets: error: unknown dataset {args.name!r}; choose one of "
              f"{', '.join(CATALOG)}", file=sys.stderr)
        return 2
    entry = CATALOG[args.name]
    try:
        split = entry.load(args.data_dir, args.image_size or entry.image_size)
    except (DataError, ValueError) as e:
        print(f"metajax datasets {args.name}: {e}", file=sys.stderr)
        return 2
    counts = split_counts(split)
    if args.json:
        print(json.dumps(counts))
    else:
        for part, c in counts["splits"].items():
            print(f"{part}: {c['classes']} classes, {c['images']} images")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `metajax` command. Run from the command line (`argv` None), it first re-executes itself
    with a faster memory allocator (`metajax.allocator`; `METAJAX_ALLOCATOR=system` opts out).
    Training and evaluation keep compiled programs in JAX's persistent compilation cache
    (`metajax.compilation_cache`; `METAJAX_XLA_CACHE=0` opts out)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        names = [e[2:].split("=")[0].replace("-", "_") for e in extra if e.startswith("--")]
        names = [n[3:] if n.startswith("no_") and algorithms_with(n[3:]) else n for n in names]
        if args.command == "train" and names and all(algorithms_with(n) for n in names):
            print(f"metajax train {args.algo}: error: " + "; ".join(
                f"--{n.replace('_', '-')} does not apply to {args.algo} (a setting of "
                f"{', '.join(algorithms_with(n))})" for n in names), file=sys.stderr)
            return 2
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "datasets":
        return _datasets(args)
    if args.command == "train" and args.print_config:
        import json

        skip = {"command", "algo", "out", "resume", "full_protocol", "no_progress", "print_config"}
        try:
            config = make_config(args.algo, args.full_protocol,
                                 **{k: v for k, v in vars(args).items() if k not in skip})
        except ValueError as e:
            print(f"metajax: error: {e}", file=sys.stderr)
            return 2
        print(json.dumps(config.parts(), indent=2))
        return 0
    if args.command == "train" and not args.out:
        parser.error(f"metajax train {args.algo}: the argument --out is required")
    if args.command in ("train", "eval", "eval-runs"):
        if argv is None:
            from metajax.allocator import reexec_with_allocator

            reexec_with_allocator(["-m", "metajax.cli", *sys.argv[1:]])
        from metajax.compilation_cache import enable_compilation_cache

        enable_compilation_cache()
    # Imported here so that `metajax --help` answers without starting JAX.
    from metajax.data.download import DataError
    from metajax.experiment import (
        evaluate_official_runs,
        evaluate_proxy_runs,
        evaluate_run,
        experiment_of,
        train_and_evaluate,
    )
    from metajax.run_dir import load_config
    from metajax.training.trainer import CheckpointExists, TrainingDiverged

    try:
        if args.command == "train":
            skip = {"command", "algo", "out", "resume", "full_protocol", "no_progress",
                    "print_config"}
            overrides = {k: v for k, v in vars(args).items() if k not in skip}
            config = make_config(args.algo, args.full_protocol, **overrides)
            s = train_and_evaluate(config, args.out, resume=args.resume,
                                   progress=not args.no_progress)
            print("\n".join(experiment_of(config).describe(
                s, f"{s['wall_time_s']:.0f}s, summary in {args.out}/summary.json")))
        elif args.command == "eval-runs" and args.proxy is not None:
            if args.runs != "official":
                parser.error("eval-runs: --proxy scores episodes of the evaluation alphabets; "
                             "it does not read --runs")
            r = evaluate_proxy_runs(args.run_dir, args.proxy, seed=args.proxy_seed,
                                    data_dir=args.data_dir, progress=not args.no_progress)
            if "warning" in r:
                print(f"warning: {r['warning']}", file=sys.stderr)
            print(f"{r['algo']} official-runs proxy, {r['runs']} runs, error "
                  f"{100 * r['error_rate']:.2f}% +- {100 * r['ci95']:.2f}, results in "
                  f"{args.run_dir}/eval_runs_proxy.json, accuracy {r['accuracy']:.4f}")
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
            written = "eval.json" if args.split == "test" else "eval_val.json"
            print("\n".join(experiment_of(load_config(args.run_dir)).describe(
                r, f"results in {args.run_dir}/{written}")))
    except (DataError, ValueError, FileNotFoundError, CheckpointExists, TrainingDiverged) as e:
        print(f"metajax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
