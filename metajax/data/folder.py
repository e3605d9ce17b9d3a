"""Any image tree as a few-shot dataset: `ROOT/{train,val,test}/<class>/<image>.png|jpg|jpeg`.

Every image is decoded, converted to RGB and resized to `size x size`; a dataset whose images are
all grey (R = G = B everywhere) keeps one channel. Classes may hold different numbers of images:
a part whose classes are all the same size is the dense `[classes, images, H, W, C]` layout the
other datasets use, otherwise `RaggedClasses` (one flat array, offsets and counts), which
`ragged_episode_sampler` draws from. `val/` is optional.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metajax.data.download import DataError
from metajax.data.episodes import RaggedClasses
from metajax.data.omniglot import ClassSet, Split

SUFFIXES = (".png", ".jpg", ".jpeg")
PARTS = ("train", "val", "test")


def _images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def _decode(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"folder dataset: cannot read {path} ({e}).") from e


def _part(folder: Path, size: int) -> tuple[tuple[str, ...], list[np.ndarray]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"folder dataset: {folder} has no class folders (expected "
                        f"{folder}/<class>/<image>.png).")
    names, arrays = [], []
    for c in classes:
        files = _images_of(c)
        if not files:
            raise DataError(f"folder dataset: class folder {c} has no PNG or JPEG images.")
        names.append(c.name)
        arrays.append(np.stack([_decode(f, size) for f in files]))
    return tuple(names), arrays


def load_folder(root: str | Path, size: int) -> Split:
    """The tree under `root` as a `Split` named "folder" (see the module docstring).

    Raises:
      DataError: no `train/` or `test/`, an empty class folder, an unreadable image.
    """
    if not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an int >= 4, got {size!r}")
    root = Path(root).expanduser()
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise DataError(f"folder dataset: {root / part} is missing. Give --data-dir a folder "
                            f"holding train/, test/ (and optionally val/), each with one folder "
                            f"of images per class.")
    parts = {p: _part(root / p, size) for p in PARTS if (root / p).is_dir()}
    grey = all(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
               for _, arrays in parts.values() for a in arrays)
    sets, info_counts = {}, {}
    for part, (names, arrays) in parts.items():
        if grey:
            arrays = [a[..., :1] for a in arrays]
        counts = [len(a) for a in arrays]
        images = (np.stack(arrays) if len(set(counts)) == 1
                  else RaggedClasses.from_lists(arrays))
        sets[part] = ClassSet(names, images)
        info_counts[part] = {"classes": len(names), "images": int(sum(counts)),
                             "smallest_class": min(counts), "largest_class": max(counts)}
    info = {"split": "folder", "seed": None, "source": str(root), "channels": 1 if grey else 3,
            "classes": {p: v["classes"] for p, v in info_counts.items()}, "parts": info_counts}
    return Split("folder", sets["train"], sets.get("val"), sets["test"], info)
