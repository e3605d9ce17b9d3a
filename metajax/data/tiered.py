"""tieredImageNet (Ren et al. 2018): 608 ImageNet classes in 34 categories, split by category
20 / 6 / 8 (351 / 97 / 160 classes), about 779,000 images of 84 x 84.

Read from the authors' pickled layout under `<data_dir>/tieredimagenet/`:

    {train,val,test}_images_png.pkl   a list of PNG-encoded images (uint8 byte arrays)
    {train,val,test}_labels.pkl       a dict: label_specific (class of each image), label_general
                                      (category), label_specific_str, label_general_str
                                      (`_labels_png.pkl` is accepted too)

Classes hold different numbers of images, so each part is `RaggedClasses` (images grouped by
class, offsets and counts). Decoding writes the images once to memory-mapped `.npy` files in the
cache directory (train alone is about 9.5 GB at 84 px), so a later load maps them without reading
them; train from them through the host stream (`metajax.data.streaming`) where they do not fit in
device memory. The image-folder layout of tieredImageNet is read by `--dataset folder`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metajax.data.download import DataError, cache_dir_from, data_dir_from
from metajax.data.episodes import RaggedClasses
from metajax.data.omniglot import ClassSet, Split

PARTS = ("train", "val", "test")
CACHE_VERSION = 1


def tiered_dir(data_dir=None) -> Path:
    return data_dir_from(data_dir) / "tieredimagenet"


def _files(root: Path, part: str) -> tuple[Path, Path]:
    images = root / f"{part}_images_png.pkl"
    labels = next((p for p in (root / f"{part}_labels.pkl", root / f"{part}_labels_png.pkl")
                   if p.exists()), root / f"{part}_labels.pkl")
    for path in (images, labels):
        if not path.exists():
            raise DataError(
                f"tieredImageNet: {path} is missing. Put Ren et al.'s pickled files "
                f"({{train,val,test}}_images_png.pkl and {{train,val,test}}_labels.pkl) in "
                f"{root} (or point --data-dir / METAJAX_DATA_DIR elsewhere); an image-folder copy "
                f"is read by --dataset folder.")
    return images, labels


def _load_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"tieredImageNet: cannot read {path} ({e}).") from e


def _labels(path: Path) -> tuple[np.ndarray, list[str]]:
    raw = _load_pickle(path)
    get = lambda k: raw.get(k, raw.get(k.encode()))  # noqa: E731 - str or bytes keys
    specific, names = get("label_specific"), get("label_specific_str")
    if specific is None or names is None:
        raise DataError(f"tieredImageNet: {path} lacks label_specific / label_specific_str.")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return np.asarray(specific, np.int64), names


def _decode(encoded, size: int, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(np.asarray(encoded, np.uint8).tobytes())) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"tieredImageNet: cannot decode an image of {where} ({e}).") from e


def _part(root: Path, part: str, size: int, cache: Path) -> ClassSet:
    images_path, labels_path = _files(root, part)
    digest = hashlib.sha1(f"{CACHE_VERSION}:{size}:{images_path.stat().st_size}:".encode())
    digest.update(labels_path.read_bytes())
    key = digest.hexdigest()[:16]
    array_path = cache / f"tieredimagenet_{part}_{size}_{key}.npy"
    index_path = array_path.with_suffix(".json")
    if not (array_path.exists() and index_path.exists()):
        labels, names = _labels(labels_path)
        encoded = _load_pickle(images_path)
        if len(encoded) != len(labels):
            raise DataError(f"tieredImageNet {part}: {len(encoded)} images but {len(labels)} "
                            f"labels.")
        order = np.argsort(labels, kind="stable")  # grouped by class, file order within
        cache.mkdir(parents=True, exist_ok=True)
        tmp = array_path.with_name(f"{array_path.stem}.{os.getpid()}.tmp.npy")
        out = np.lib.format.open_memmap(tmp, "w+", np.uint8, (len(labels), size, size, 3))
        for row, i in enumerate(order):
            out[row] = _decode(encoded[i], size, f"{part} (image {i})")
        out.flush()
        del out
        tmp.replace(array_path)
        classes, counts = np.unique(labels, return_counts=True)
        index_path.write_text(json.dumps({"names": [names[c] for c in classes],
                                          "counts": counts.tolist()}))
    index = json.loads(index_path.read_text())
    images = np.load(array_path, mmap_mode="r")
    return ClassSet(tuple(index["names"]), RaggedClasses.from_counts(images, index["counts"]))


def load_tiered_imagenet(size: int = 84, data_dir=None, cache_dir=None) -> Split:
    """tieredImageNet's train / val / test parts as `RaggedClasses` over memory-mapped images
    `[images, size, size, 3]` uint8 (see the module docstring).

    Raises:
      DataError: a missing or unreadable file, labels that do not match the images.
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    root = tiered_dir(data_dir)
    cache = cache_dir_from(cache_dir)
    sets = {part: _part(root, part, size, cache) for part in PARTS}
    overlap = set(sets["train"].names) & set(sets["test"].names)
    if overlap:
        raise DataError(f"tieredImageNet: train and test share classes {sorted(overlap)[:5]}")
    info = {"split": "tieredimagenet", "seed": None, "source": "Ren et al. 2018 pickled files",
            "classes": {p: len(s) for p, s in sets.items()},
            "images": {p: int(s.images.counts.sum()) for p, s in sets.items()}}
    return Split("tieredimagenet", sets["train"], sets["val"], sets["test"], info)
