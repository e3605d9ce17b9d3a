"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018), both cut from CIFAR-100.

Read from the official python archive, under `<data_dir>/cifar100/`: either
`cifar-100-python.tar.gz` as downloaded from <https://www.cs.toronto.edu/~kriz/cifar.html>, or its
extracted folder `cifar-100-python/` (`train`, `test`, `meta` pickles). With internet and
`download_missing=True` the archive is downloaded there. The 500 training and 100 test images of a
class are pooled (600 per class), as both benchmarks do.

- CIFAR-FS: classes split 64 / 16 / 20 at random by the R2D2 authors; the validation and test
  lists ship in `metajax/data/splits/cifar_fs.json`, training is every other class.
- FC100: split by CIFAR-100 superclass, 12 / 4 / 4 superclasses (60 / 20 / 20 classes), so test
  classes share no superclass with training ones; the superclass lists are in
  `metajax/data/splits/fc100.json`.

Both return a `Split` of `ClassSet`s `[classes, 600, size, size, 3]` uint8 (classes in CIFAR-100's
fine-label order, images train-then-test in archive order), the layout the episode samplers read.
"""

from __future__ import annotations

import json
import pickle
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from metajax.data.download import DataError, data_dir_from, download
from metajax.data.omniglot import ClassSet, Split

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
PARTS = ("train", "val", "test")


def cifar100_dir(data_dir=None) -> Path:
    return data_dir_from(data_dir) / "cifar100"


def split_lists(name: str) -> dict:
    """The shipped split file `name` (`"cifar_fs"` or `"fc100"`) as a dict."""
    text = resources.files("metajax.data").joinpath("splits", f"{name}.json").read_text()
    return json.loads(text)


def _unpickle(raw: bytes, what: str) -> dict:
    try:
        return pickle.loads(raw, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"CIFAR-100: cannot read {what} ({e}); is it the official python "
                        f"archive?") from e


def _read_members(root: Path, download_missing: bool) -> dict[str, dict]:
    """The `train`, `test` and `meta` pickles of CIFAR-100, from the folder or the archive."""
    folder, archive = root / FOLDER, root / ARCHIVE
    names = ("train", "test", "meta")
    if all((folder / n).exists() for n in names):
        return {n: _unpickle((folder / n).read_bytes(), str(folder / n)) for n in names}
    if not archive.exists():
        if not download_missing:
            raise DataError(
                f"CIFAR-100: neither {archive} nor {folder}/ (train, test, meta) is there. Put the "
                f"official {ARCHIVE} (from https://www.cs.toronto.edu/~kriz/cifar.html) in "
                f"{root}, or set --data-dir / METAJAX_DATA_DIR to a folder holding cifar100/.")
        download(CIFAR100_URL, archive, "CIFAR-100")
    out = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for n in names:
                member = tar.extractfile(f"{FOLDER}/{n}")
                if member is None:
                    raise KeyError(n)
                out[n] = _unpickle(member.read(), f"{archive}:{FOLDER}/{n}")
    except (tarfile.TarError, KeyError, OSError, EOFError) as e:
        raise DataError(f"CIFAR-100: {archive} is not the official archive or is damaged "
                        f"({e}); delete it and fetch it again.") from e
    return out


def load_cifar100(data_dir=None, download_missing: bool = True) -> dict:
    """CIFAR-100's 60,000 images pooled: `{"images": [60000, 32, 32, 3] uint8, "fine": [60000],
    "coarse": [60000], "fine_names": [...], "coarse_names": [...]}` (train then test)."""
    members = _read_members(cifar100_dir(data_dir), download_missing)
    try:
        data = np.concatenate([members[p][b"data"] for p in ("train", "test")])
        fine = np.concatenate([members[p][b"fine_labels"] for p in ("train", "test")])
        coarse = np.concatenate([members[p][b"coarse_labels"] for p in ("train", "test")])
        meta = members["meta"]
        fine_names = [n.decode() for n in meta[b"fine_label_names"]]
        coarse_names = [n.decode() for n in meta[b"coarse_label_names"]]
    except (KeyError, ValueError) as e:
        raise DataError(f"CIFAR-100: a pickle lacks the official fields ({e}).") from e
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR-100: expected rows of 3072 bytes, got {data.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)
    return {"images": images, "fine": np.asarray(fine), "coarse": np.asarray(coarse),
            "fine_names": fine_names, "coarse_names": coarse_names}


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if size == images.shape[-2]:
        return images
    flat = images.reshape(-1, *images.shape[-3:])
    out = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR))
                    for x in flat])
    return out.reshape(*images.shape[:-3], size, size, 3)


def _class_sets(cifar: dict, parts: dict[str, list[str]], size: int) -> dict[str, ClassSet]:
    index = {name: i for i, name in enumerate(cifar["fine_names"])}
    unknown = sorted({n for names in parts.values() for n in names} - set(index))
    if unknown:
        raise DataError(f"CIFAR-100's meta has no classes {unknown}")
    sets = {}
    for part, names in parts.items():
        names = sorted(names, key=index.__getitem__)
        arrays = [cifar["images"][cifar["fine"] == index[n]] for n in names]
        counts = {len(a) for a in arrays}
        if len(counts) != 1 or 0 in counts:  # the official archive has 600 of every class
            raise DataError(f"CIFAR-100 {part}: classes have unequal image counts {sorted(counts)}")
        sets[part] = ClassSet(tuple(names), _resize(np.stack(arrays), size))
    return sets


def _split(name: str, sets: dict[str, ClassSet], source: str) -> Split:
    info = {"split": name, "seed": None, "source": source,
            "classes": {p: len(s) for p, s in sets.items()},
            "images_per_class": {p: int(s.images.shape[1]) for p, s in sets.items()}}
    return Split(name, sets["train"], sets["val"], sets["test"], info)


def load_cifar_fs(size: int = 32, data_dir=None, download_missing: bool = True) -> Split:
    """CIFAR-FS: 64 / 16 / 20 CIFAR-100 classes, `[classes, 600, size, size, 3]` uint8 each."""
    cifar = load_cifar100(data_dir, download_missing)
    lists = split_lists("cifar_fs")
    held_out = set(lists["classes"]["val"]) | set(lists["classes"]["test"])
    parts = {"train": [n for n in cifar["fine_names"] if n not in held_out],
             "val": lists["classes"]["val"], "test": lists["classes"]["test"]}
    return _split("cifar-fs", _class_sets(cifar, parts, size), lists["source"])


def load_fc100(size: int = 32, data_dir=None, download_missing: bool = True) -> Split:
    """FC100: the classes of 12 / 4 / 4 CIFAR-100 superclasses (60 / 20 / 20 classes)."""
    cifar = load_cifar100(data_dir, download_missing)
    lists = split_lists("fc100")
    coarse_index = {name: i for i, name in enumerate(cifar["coarse_names"])}
    fine_to_coarse = dict(zip(cifar["fine"].tolist(), cifar["coarse"].tolist(), strict=False))
    parts = {}
    missing = sorted({s for v in lists["superclasses"].values() for s in v} - set(coarse_index))
    if missing:
        raise DataError(f"CIFAR-100's meta has no superclasses {missing}")
    for part, supers in lists["superclasses"].items():
        wanted = {coarse_index[s] for s in supers}
        parts[part] = [cifar["fine_names"][f] for f in sorted(fine_to_coarse)
                       if fine_to_coarse[f] in wanted]
    return _split("fc100", _class_sets(cifar, parts, size), lists["source"])
