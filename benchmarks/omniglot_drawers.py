"""Is a drawing's number in the Omniglot zips its drawer, the same person across an alphabet's
characters? The drawer-paired episodes of the official-runs proxy rely on it.

For each evaluation alphabet: five style features of every drawing at 105x105 (ink fraction, width
and height of the ink's bounding box, its centroid), each character's mean removed, standardised.
The statistic is the spread of the 20 drawer-number means (sum of their squares over features). If
the number were arbitrary per character, shuffling it within each character would leave the
statistic's distribution unchanged; the z-score says how far the observed spread lies above the
shuffled ones.

    python benchmarks/omniglot_drawers.py          # about a minute; $METAJAX_DATA_DIR or --data-dir
"""

from __future__ import annotations

import argparse
import io
import zipfile
from collections import defaultdict

import numpy as np
from common import write_results
from PIL import Image

from metajax.bench.machine import machine_info
from metajax.data.omniglot import drawing_members, omniglot_dir


def style(png: bytes) -> list[float]:
    """Ink fraction, bounding-box width and height, and ink centroid (x, y) of one drawing."""
    ink = np.asarray(Image.open(io.BytesIO(png)).convert("L")) < 128
    ys, xs = np.nonzero(ink)
    return [ink.mean(), xs.max() - xs.min(), ys.max() - ys.min(), xs.mean(), ys.mean()]


def drawer_spread(residuals: np.ndarray) -> float:
    """Sum over features of the squared drawer-number means of `[characters, 20, features]`."""
    return float((residuals.mean(0) ** 2).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="folder holding omniglot/ (default $METAJAX_DATA_DIR)")
    p.add_argument("--permutations", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="omniglot_drawers")
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    path = omniglot_dir(args.data_dir) / "images_evaluation.zip"
    drawings: dict[tuple[str, str], dict[str, bytes]] = defaultdict(dict)
    with zipfile.ZipFile(path) as z:
        for member, alphabet, character, name in drawing_members(z.namelist()):
            drawings[(alphabet, character)][name.rsplit("_", 1)[1]] = z.read(member)
    rows = []
    for alphabet in sorted({a for a, _ in drawings}):
        chars = sorted(c for a, c in drawings if a == alphabet)
        numbers = sorted(drawings[(alphabet, chars[0])])
        if any(sorted(drawings[(alphabet, c)]) != numbers for c in chars):
            raise SystemExit(f"{alphabet}: the characters have different drawing numbers")
        f = np.array([[style(drawings[(alphabet, c)][n]) for n in numbers] for c in chars])
        r = f - f.mean(1, keepdims=True)
        r /= r.std((0, 1), keepdims=True) + 1e-9
        observed = drawer_spread(r)
        shuffled = np.array([drawer_spread(np.stack([x[rng.permutation(len(numbers))] for x in r]))
                             for _ in range(args.permutations)])
        rows.append({"alphabet": alphabet, "characters": len(chars), "observed": observed,
                     "shuffled_mean": float(shuffled.mean()), "shuffled_std": float(shuffled.std()),
                     "z": float((observed - shuffled.mean()) / shuffled.std()),
                     "above_all_shuffles": bool(observed > shuffled.max())})
    table = "\n".join([
        "| alphabet | characters | drawer spread | shuffled (mean ± std) | z |",
        "|---|---|---|---|---|",
        *[f"| {r['alphabet']} | {r['characters']} | {r['observed']:.2f} | "
          f"{r['shuffled_mean']:.2f} ± {r['shuffled_std']:.2f} | {r['z']:.1f} |" for r in rows]])
    zs = [r["z"] for r in rows]
    summary = (f"{sum(r['above_all_shuffles'] for r in rows)} of {len(rows)} alphabets above all "
               f"{args.permutations} shuffles; z from {min(zs):.1f} to {max(zs):.1f}, median "
               f"{np.median(zs):.1f}")
    print(table + "\n\n" + summary)
    write_results(args.name, {"machine": machine_info(), "rows": rows, "summary": summary,
                              "settings": {"zip": path.name, "permutations": args.permutations,
                                           "seed": args.seed}}, table + "\n\n" + summary)


if __name__ == "__main__":
    main()
