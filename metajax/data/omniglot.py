"""Omniglot (Lake et al. 2015): official zips -> decoded uint8 arrays -> class splits.

The official release ships `images_background.zip` (30 alphabets, 964 characters) and
`images_evaluation.zip` (20 alphabets, 659 characters), 20 drawings of each character as 105x105
one-bit PNGs. We decode them once to `size x size` (strokes = 255, background = 0), cache the result
as `.npz`, and build class splits in which each rotation by 0/90/180/270 degrees is its own class.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from metajax.data.download import DataError, cache_dir_from, data_dir_from, download

OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}"
VINYALS_URL = (
    "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/"
    "data/omniglot/splits/vinyals/{name}"
)
ZIPS = {"background": "images_background.zip", "evaluation": "images_evaluation.zip"}
DRAWINGS = 20
ROTATIONS = (0, 90, 180, 270)
SPLITS = ("maml", "vinyals", "lake")
CACHE_VERSION = 1


@dataclass(frozen=True)
class Omniglot:
    """All 1623 characters decoded at one size.

    Attributes:
      images: `[1623, 20, size, size]` uint8, strokes bright.
      names: `Alphabet/characterNN` of each character, background alphabets first.
      background: whether each character is from a background alphabet.
    """

    images: np.ndarray
    names: tuple[str, ...]
    background: np.ndarray


@dataclass(frozen=True)
class ClassSet:
    """The classes of one split part, each `Alphabet/characterNN/rotDDD`, with their images.

    `images` is `[classes, 20, size, size, 1]` uint8, ready to be put in device memory.
    """

    names: tuple[str, ...]
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Split:
    """A meta-train / meta-val / meta-test class split and how it was made (recorded in results)."""

    name: str
    train: ClassSet
    val: ClassSet | None
    test: ClassSet
    info: dict = field(default_factory=dict)


def omniglot_dir(data_dir=None) -> Path:
    return data_dir_from(data_dir) / "omniglot"


def _zip_path(data_dir, part: str, download_missing: bool) -> Path:
    path = omniglot_dir(data_dir) / ZIPS[part]
    if not path.exists():
        if not download_missing:
            raise DataError(
                f"Omniglot: {path} is missing. Put the official {ZIPS[part]} "
                f"(from https://github.com/brendenlake/omniglot, folder python/) there, or set "
                f"--data-dir / METAJAX_DATA_DIR to a folder holding omniglot/{ZIPS[part]}."
            )
        download(OMNIGLOT_URL.format(name=ZIPS[part]), path, "Omniglot")
    return path


def fetch_omniglot(data_dir=None, download_missing: bool = True) -> Path:
    """Makes sure `DATA/omniglot/` holds the two official zips and the Vinyals split files,
    downloading the missing ones (the same files `metajax train` fetches), and returns that folder.
    Run it once online to prepare a folder for offline use.

    Raises:
      DataError: a file is missing and cannot be downloaded; the message says what to put where.
    """
    for part in ZIPS:
        _zip_path(data_dir, part, download_missing)
    for part in ("train", "val", "test"):
        _read_vinyals(data_dir, part, download_missing)
    return omniglot_dir(data_dir)


def open_zip(path) -> zipfile.ZipFile:
    """The official zip at `path`, or a `DataError` saying it is truncated or corrupt."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(
            f"Omniglot: {path} is not a readable zip ({e}); it is probably truncated or corrupt. "
            f"Delete it and download it again."
        ) from e


def drawing_members(names):
    """(member, alphabet, character folder, file name) of each drawing among a zip's member
    names, the ones of the form `<root>/<alphabet>/<character>/<file>.png`."""
    for member in names:
        parts = member.split("/")
        if len(parts) == 4 and parts[3].endswith(".png"):
            yield member, parts[1], parts[2], parts[3]


def decode_drawing(png: bytes, size: int) -> np.ndarray:
    """One drawing as `[size, size]` uint8 with the ink bright (inverted), resized with LANCZOS."""
    img = Image.open(io.BytesIO(png)).convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    return 255 - np.asarray(img, dtype=np.uint8)


def _decode_zip(path: Path, size: int) -> tuple[list[str], list[np.ndarray]]:
    """Decodes one official zip into (character names, [20, size, size] uint8 arrays)."""
    by_char: dict[str, list[str]] = {}
    with open_zip(path) as archive:
        for member, alphabet, character, _ in drawing_members(archive.namelist()):
            by_char.setdefault(f"{alphabet}/{character}", []).append(member)
        if not by_char:
            raise DataError(f"Omniglot: {path} holds no <root>/<Alphabet>/<character>/*.png files.")
        names, arrays = [], []
        for name in sorted(by_char):
            members = sorted(by_char[name])
            if len(members) != DRAWINGS:
                raise DataError(
                    f"Omniglot: {path}: {name} has {len(members)} drawings, expected {DRAWINGS}."
                )
            drawings = []
            for member in members:
                try:
                    drawings.append(decode_drawing(archive.read(member), size))
                except (zipfile.BadZipFile, OSError, UnidentifiedImageError, EOFError) as e:
                    raise DataError(
                        f"Omniglot: cannot read {member} in {path} ({e}); the zip is corrupt. "
                        f"Delete it and download it again."
                    ) from e
            names.append(name)
            arrays.append(np.stack(drawings))
    return names, arrays


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha1(str(CACHE_VERSION).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def load_omniglot(size: int = 28, data_dir=None, cache_dir=None, download_missing: bool = True,
                  verbose: bool = False) -> Omniglot:
    """Loads all Omniglot characters at `size x size`, decoding the zips once and caching the arrays.

    Args:
      size: image side in pixels (28 is standard; 20 for MANN, 105 for the original resolution).
      data_dir: folder holding `omniglot/` (default `$METAJAX_DATA_DIR`, else `./data`).
      cache_dir: where the decoded `.npz` goes (default `$METAJAX_CACHE_DIR`, else ~/.cache/metajax).
      download_missing: download missing zips from the official repository.

    Raises:
      DataError: missing files (offline), corrupt zips or an unexpected layout.
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    paths = [_zip_path(data_dir, part, download_missing) for part in ("background", "evaluation")]
    cache = cache_dir_from(cache_dir) / f"omniglot_{size}_{_fingerprint(paths)}.npz"
    if cache.exists():
        try:
            with np.load(cache) as f:
                return Omniglot(f["images"], tuple(f["names"].tolist()), f["background"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cache.unlink(missing_ok=True)  # a broken cache is rebuilt, never trusted
    start = time.time()
    names, arrays, background = [], [], []
    for part, path in zip(("background", "evaluation"), paths, strict=True):
        n, a = _decode_zip(path, size)
        names += n
        arrays += a
        background += [part == "background"] * len(n)
    data = Omniglot(np.stack(arrays), tuple(names), np.array(background))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")  # concurrent writers (test workers)
    np.savez(tmp, images=data.images, names=np.array(names), background=data.background)
    tmp.replace(cache)
    if verbose:
        print(f"decoded Omniglot at {size}x{size} in {time.time() - start:.1f}s -> {cache}")
    return data


def _class_set(data: Omniglot, entries: list[tuple[int, int]]) -> ClassSet:
    """Builds the images of (character index, rotation in degrees) classes."""
    images = np.stack([np.rot90(data.images[c], k=r // 90, axes=(1, 2)) for c, r in entries])
    names = tuple(f"{data.names[c]}/rot{r:03d}" for c, r in entries)
    return ClassSet(names, np.ascontiguousarray(images[..., None]))


def _with_rotations(chars) -> list[tuple[int, int]]:
    return [(int(c), r) for c in chars for r in ROTATIONS]


def _read_vinyals(data_dir, part: str, download_missing: bool) -> list[str]:
    path = omniglot_dir(data_dir) / "splits" / "vinyals" / f"{part}.txt"
    if not path.exists():
        if not download_missing:
            raise DataError(f"Vinyals split: {path} is missing (from jakesnell/prototypical-networks).")
        download(VINYALS_URL.format(name=f"{part}.txt"), path, "Vinyals split")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def make_split(data: Omniglot, name: str = "vinyals", seed: int = 1, data_dir=None,
               download_missing: bool = True) -> Split:
    """Builds a class split; every rotation of a character is its own class, in the same part.

    - `maml`: characters shuffled with `seed` (numpy), 1100 meta-train, 100 meta-val (1200 in all)
      and the remaining 423 meta-test, as in Finn et al.'s code.
    - `vinyals`: the fixed split files of Vinyals et al. (1028 / 172 / 423 characters).
    - `lake`: background alphabets (964 characters) for meta-training, evaluation alphabets (659)
      for meta-test, no validation part.
    """
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
    index = {n: i for i, n in enumerate(data.names)}
    if name == "maml":
        order = np.random.default_rng(seed).permutation(len(data.names))
        parts = {"train": order[:1100], "val": order[1100:1200], "test": order[1200:]}
        entries = {k: _with_rotations(v) for k, v in parts.items()}
        info = {"seed": seed}
    elif name == "vinyals":
        entries = {}
        for part in ("train", "val", "test"):
            lines = _read_vinyals(data_dir, part, download_missing)
            try:
                entries[part] = [
                    (index[line.rsplit("/", 1)[0]], int(line.rsplit("rot", 1)[1])) for line in lines
                ]
            except (KeyError, ValueError, IndexError) as e:
                raise DataError(f"Vinyals split {part}.txt: unexpected line or character ({e}).") from e
        info = {"seed": None, "source": "jakesnell/prototypical-networks split files"}
    else:
        entries = {
            "train": _with_rotations(np.flatnonzero(data.background)),
            "val": [],
            "test": _with_rotations(np.flatnonzero(~data.background)),
        }
        info = {"seed": None, "source": "background vs evaluation alphabets"}
    sets = {k: _class_set(data, v) if v else None for k, v in entries.items()}
    digest = hashlib.sha1(json.dumps([list(s.names) if s else [] for s in sets.values()]).encode())
    info.update(
        split=name,
        classes={k: (len(s) if s else 0) for k, s in sets.items()},
        characters={k: len({n.rsplit("/", 1)[0] for n in s.names}) if s else 0
                    for k, s in sets.items()},
        sha1=digest.hexdigest()[:12],
    )
    return Split(name, sets["train"], sets["val"], sets["test"], info)
