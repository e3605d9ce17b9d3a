"""A trained run's accuracy on drawer-paired 20-way 1-shot episodes of each evaluation alphabet,
and by the drawer of the training and of the test images: how much choosing the official runs'
alphabets or drawers could move the proxy.

The official runs use 10 of the 20 evaluation alphabets (which ten is not published), each run one
drawer for its training images and another for its test images. This script draws `--per-alphabet`
episodes of every alphabet (20 of its characters, two drawers, one image each) and reports each
alphabet's accuracy, the mean of the best and the worst ten, and the accuracy by drawer number.

    python benchmarks/proxy_by_alphabet.py runs/lake/matching --per-alphabet 60
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from common import write_results

from metajax.bench.machine import machine_info
from metajax.data.episodes import task_from_drawings
from metajax.data.omniglot import load_omniglot
from metajax.data.within_alphabet import evaluation_alphabets
from metajax.experiment import load_state
from metajax.registry import build_learner
from metajax.run_dir import load_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--per-alphabet", type=int, default=60, help="episodes of each alphabet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="results file (default proxy_by_alphabet_<algo>)")
    args = p.parse_args()
    config = load_config(args.run_dir)
    images, alphabet, names = evaluation_alphabets(load_omniglot(config.image_size,
                                                                 data_dir=config.data_dir))
    state = load_state(args.run_dir, config)
    learner = build_learner(config, 20, 1, phase="test", inner_state=state.inner_state)

    @jax.jit
    def accuracy(params, drawings, key):
        task = task_from_drawings(drawings, 1)
        return jnp.mean(jnp.argmax(learner.predict(params, task, key), -1) == task.query_y)

    rng = np.random.default_rng(args.seed)
    episodes = []  # (alphabet, training drawer, test drawer, accuracy)
    for a in range(len(names)):
        chars = np.flatnonzero(alphabet == a)
        for _ in range(args.per_alphabet):
            c, d = rng.choice(chars, 20, replace=False), rng.choice(20, 2, replace=False)
            key = jax.random.PRNGKey(len(episodes))
            episodes.append((a, d[0], d[1], float(accuracy(state.params, images[c][:, d], key))))
    e = np.array(episodes)
    by_alphabet = sorted(((float(e[e[:, 0] == a, 3].mean()), names[a]) for a in range(len(names))),
                         reverse=True)
    by_drawer = {part: {d + 1: float(e[e[:, k] == d, 3].mean()) for d in range(20)}
                 for k, part in ((1, "training"), (2, "test"))}
    summary = {"overall": float(e[:, 3].mean()),
               "best_10_alphabets": float(np.mean([m for m, _ in by_alphabet[:10]])),
               "worst_10_alphabets": float(np.mean([m for m, _ in by_alphabet[10:]]))}
    lines = ["| alphabet | accuracy |", "|---|---|",
             *[f"| {n} | {100 * m:.1f} |" for m, n in by_alphabet],
             "", f"All: {100 * summary['overall']:.1f}; best ten alphabets "
             f"{100 * summary['best_10_alphabets']:.1f}, worst ten "
             f"{100 * summary['worst_10_alphabets']:.1f}.", "",
             "| drawer | " + " | ".join(str(d) for d in range(1, 21)) + " |",
             "|---" * 21 + "|",
             *[f"| {part} images by | " + " | ".join(f"{100 * v:.0f}" for v in acc.values()) + " |"
               for part, acc in by_drawer.items()]]
    table = "\n".join(lines)
    print(table)
    write_results(args.name or f"proxy_by_alphabet_{config.algo}",
                  {"machine": machine_info(), "summary": summary,
                   "rows": [{"alphabet": n, "accuracy": m} for m, n in by_alphabet],
                   "by_drawer": by_drawer,
                   "settings": {"run_dir": args.run_dir, "per_alphabet": args.per_alphabet,
                                "seed": args.seed, "algo": config.algo}}, table)


if __name__ == "__main__":
    main()
