"""miniImageNet (Vinyals et al. 2016) in the common layout of Ravi & Larochelle's split.

Expected under `<data_dir>/miniimagenet/`, either the images and Ravi's csv files:

    images/          n0153282900000005.jpg, ...  (the 60,000 JPEGs, usually already 84x84)
    train.csv        filename,label rows (64 classes x 600 images)
    val.csv          16 classes
    test.csv         20 classes

or the pickled layout `mini-imagenet-cache-{train,val,test}.pkl` (a dict of `image_data` and
`class_dict` per part, as learn2learn distributes it).

The images are decoded once to `size x size` RGB uint8 (84 by default), cached as `.npz` like
Omniglot, and returned as a `Split` whose parts are `ClassSet`s of `[classes, images, size, size, 3]`
arrays (classes sorted by their label, images by file name).
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metajax.data.download import DataError, cache_dir_from, data_dir_from
from metajax.data.omniglot import ClassSet, Split

PARTS = ("train", "val", "test")
CACHE_VERSION = 1
# The pickled layout many libraries distribute (learn2learn's among them): per part a dict with
# "image_data" [images, 84, 84, 3] uint8 and "class_dict" {wnid: [image indices]}.
PICKLE = "mini-imagenet-cache-{part}.pkl"


def miniimagenet_dir(data_dir=None) -> Path:
    return data_dir_from(data_dir) / "miniimagenet"


def _read_csv(path: Path) -> dict[str, list[str]]:
    """label -> sorted file names of one Ravi csv (`filename,label` with a header row)."""
    if not path.exists():
        raise DataError(f"miniImageNet: {path} is missing. Put Ravi & Larochelle's train.csv, "
                        f"val.csv and test.csv (filename,label rows) next to the images/ folder.")
    by_label: dict[str, list[str]] = {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DataError(f"miniImageNet: {path} must start with the header 'filename,label'.")
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise DataError(f"miniImageNet: {path} line {i}: expected 'filename,label', got {row}")
        by_label.setdefault(row[1].strip(), []).append(row[0].strip())
    if not by_label:
        raise DataError(f"miniImageNet: {path} lists no images.")
    return {label: sorted(files) for label, files in sorted(by_label.items())}


def _decode(images_dir: Path, by_label: dict[str, list[str]], size: int, part: str) -> np.ndarray:
    counts = {len(files) for files in by_label.values()}
    if len(counts) != 1:
        raise DataError(f"miniImageNet {part}: classes have different numbers of images "
                        f"({sorted(counts)}); every class needs the same number.")
    arrays = []
    for label, files in by_label.items():
        images = []
        for name in files:
            path = images_dir / name
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB")
                    if img.size != (size, size):
                        img = img.resize((size, size), Image.LANCZOS)
                    images.append(np.asarray(img, dtype=np.uint8))
            except FileNotFoundError as e:
                raise DataError(f"miniImageNet {part}: {path} (class {label}) is listed in "
                                f"{part}.csv but missing from images/.") from e
            except (OSError, UnidentifiedImageError) as e:
                raise DataError(f"miniImageNet {part}: cannot read {path} ({e}).") from e
        arrays.append(np.stack(images))
    return np.stack(arrays)


def _fingerprint(paths: list[Path], size: int) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION}:{size}".encode())
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _from_pickles(root: Path, size: int) -> Split:
    """miniImageNet from the pickled layout (`PICKLE`), classes sorted by WordNet id."""
    import pickle

    sets = {}
    for part in PARTS:
        path = root / PICKLE.format(part=part)
        try:
            with open(path, "rb") as f:
                raw = pickle.load(f)
            images, by_class = np.asarray(raw["image_data"], np.uint8), raw["class_dict"]
        except Exception as e:  # noqa: BLE001 - any failure here means a file not in this layout
            raise DataError(f"miniImageNet: cannot read {path} as a dict of image_data and "
                            f"class_dict ({e}).") from e
        names = sorted(by_class)
        counts = {len(by_class[n]) for n in names}
        if len(counts) != 1:
            raise DataError(f"miniImageNet {part}: classes have different numbers of images "
                            f"({sorted(counts)}); every class needs the same number.")
        arrays = images[np.asarray([sorted(by_class[n]) for n in names])]
        if arrays.shape[2:4] != (size, size):
            flat = arrays.reshape(-1, *arrays.shape[2:])
            flat = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.LANCZOS))
                             for x in flat])
            arrays = flat.reshape(*arrays.shape[:2], size, size, 3)
        sets[part] = ClassSet(tuple(names), arrays)
    info = {"split": "ravi", "seed": None, "source": "pickled mini-imagenet-cache files",
            "classes": {p: len(s) for p, s in sets.items()},
            "images_per_class": {p: int(s.images.shape[1]) for p, s in sets.items()}}
    return Split("ravi", sets["train"], sets["val"], sets["test"], info)


def load_miniimagenet(size: int = 84, data_dir=None, cache_dir=None, verbose: bool = False) -> Split:
    """Loads miniImageNet's Ravi train/val/test split at `size x size` RGB.

    Args:
      size: image side (84 is standard).
      data_dir: folder holding `miniimagenet/` (default `$METAJAX_DATA_DIR`, else `./data`).
      cache_dir: where the decoded arrays go (default `$METAJAX_CACHE_DIR` or ~/.cache/metajax).

    Returns:
      A `Split` named "ravi" with `ClassSet`s `[classes, images, size, size, 3]` uint8 whose names
      are the class labels (WordNet ids).

    Raises:
      DataError: missing folder, csv or image; unreadable image; uneven classes.
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    root = miniimagenet_dir(data_dir)
    images_dir = root / "images"
    if not images_dir.is_dir() and all((root / PICKLE.format(part=p)).exists() for p in PARTS):
        return _from_pickles(root, size)
    if not images_dir.is_dir():
        raise DataError(
            f"miniImageNet: {images_dir} is missing. miniImageNet cannot be downloaded "
            f"automatically; place the images/ folder of JPEGs and Ravi & Larochelle's train.csv, "
            f"val.csv and test.csv in {root} (or point --data-dir / METAJAX_DATA_DIR elsewhere)."
        )
    csvs = [root / f"{part}.csv" for part in PARTS]
    by_part = {part: _read_csv(path) for part, path in zip(PARTS, csvs, strict=True)}
    cache = cache_dir_from(cache_dir) / f"miniimagenet_{size}_{_fingerprint(csvs, size)}.npz"
    arrays = None
    if cache.exists():
        try:
            with np.load(cache) as f:
                arrays = {part: f[part] for part in PARTS}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cache.unlink(missing_ok=True)  # a broken cache is rebuilt, never trusted
    if arrays is None:
        start = time.time()
        arrays = {part: _decode(images_dir, by_part[part], size, part) for part in PARTS}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(cache)
        if verbose:
            print(f"decoded miniImageNet at {size}x{size} in {time.time() - start:.1f}s -> {cache}")
    sets = {part: ClassSet(tuple(by_part[part]), arrays[part]) for part in PARTS}
    overlap = set(sets["train"].names) & set(sets["test"].names)
    if overlap:
        raise DataError(f"miniImageNet: train.csv and test.csv share classes {sorted(overlap)}.")
    info = {"split": "ravi", "seed": None, "source": "Ravi & Larochelle csv files",
            "classes": {p: len(s) for p, s in sets.items()},
            "images_per_class": {p: int(s.images.shape[1]) for p, s in sets.items()},
            "sha1": _fingerprint(csvs, size)[:12]}
    return Split("ravi", sets["train"], sets["val"], sets["test"], info)
