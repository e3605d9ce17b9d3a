"""The official 20-way within-alphabet one-shot runs of Lake et al. (2015).

The Omniglot repository ships them as `python/one-shot-classification/all_runs.zip`: 20 folders
`runNN/`, each with `training/classNN.png` (one drawing of each of 20 characters of one evaluation
alphabet), `test/itemNN.png` (another drawing of each, shuffled) and `class_labels.txt`, whose lines
`runNN/test/itemNN.png runNN/training/classNN.png` give each test item's class. `load_runs` reads
the zip or its unpacked folder into one `Task` per run, the images preprocessed exactly like the
Omniglot loader (LANCZOS resize, inverted so strokes are bright, float in [0, 1]).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from metajax.data.download import DataError, data_dir_from, download
from metajax.types import Learner, Params, Task

RUNS_URL = ("https://github.com/brendenlake/omniglot/raw/master/python/one-shot-classification/"
            "all_runs.zip")
LABELS = "class_labels.txt"
_LINE = re.compile(r"^(\S*?)(run\d+)/test/(item\d+\.png)\s+(\S*?)(run\d+)/training/(class\d+\.png)$")


def official_runs_path(data_dir=None, download_missing: bool = True) -> Path:
    """`DATA_DIR/omniglot/all_runs.zip` (data dir: the argument, else `$METAJAX_DATA_DIR`, else
    `./data`), downloaded from the Omniglot repository when it is missing.

    Raises:
      DataError: it is missing and `download_missing` is false, or the download failed.
    """
    path = data_dir_from(data_dir) / "omniglot" / "all_runs.zip"
    if path.exists():
        return path
    if not download_missing:
        raise DataError(f"Omniglot runs: {path} does not exist. Download all_runs.zip from {RUNS_URL} "
                        f"and place it there, or pass its path.")
    return download(RUNS_URL, path, "Omniglot runs")


@dataclass(frozen=True)
class Run:
    """One official run: its name (`run01`), the episode, and the file names behind the labels.

    `task.support_x` holds the training images in the order of `classes` (label i = `classes[i]`);
    `task.query_x` the test images in the order of `items`, labelled by `class_labels.txt`.
    """

    name: str
    task: Task
    classes: tuple[str, ...]
    items: tuple[str, ...]


def preprocess(raw: bytes, size: int, what: str) -> np.ndarray:
    """PNG bytes -> `[size, size, 1]` float32 in [0, 1], strokes bright (as the Omniglot loader)."""
    try:
        img = Image.open(io.BytesIO(raw)).convert("L")
    except (OSError, UnidentifiedImageError, EOFError) as e:
        raise DataError(f"Omniglot runs: cannot read image {what} ({e}).") from e
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    pixels = 255 - np.asarray(img, dtype=np.uint8)
    return (pixels.astype(np.float32) / 255.0)[..., None]


class _Source:
    """Files of the runs, from a zip or a folder, addressed as `runNN/...` whatever the root."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            self._files = {p.relative_to(path).as_posix(): p for p in files}
            self._zip = None
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"Omniglot runs: {path} is not a readable zip ({e}); download "
                                f"all_runs.zip again from {RUNS_URL}.") from e
            self._files = {n: n for n in self._zip.namelist() if not n.endswith("/")}
        # key every file by its path from the run folder on: runNN/<rest>
        self.by_run_path: dict[str, str] = {}
        for name in self._files:
            parts = name.split("/")
            for i, part in enumerate(parts):
                if re.fullmatch(r"run\d+", part):
                    self.by_run_path["/".join(parts[i:])] = name
                    break

    def read(self, run_path: str) -> bytes:
        if run_path not in self.by_run_path:
            raise DataError(f"Omniglot runs: {self.path} has no file {run_path}, named in "
                            f"{run_path.split('/')[0]}/{LABELS}.")
        name = self.by_run_path[run_path]
        if self._zip is not None:
            try:
                return self._zip.read(self._files[name])
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"Omniglot runs: cannot read {name} in {self.path} ({e}).") from e
        return self._files[name].read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _parse_labels(text: str, run: str) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if m is None or m.group(2) != run or m.group(5) != run:
            raise DataError(
                f"Omniglot runs: {run}/{LABELS} line {number} is {line.strip()!r}; expected "
                f"'{run}/test/itemNN.png {run}/training/classNN.png'.")
        pairs.append((m.group(3), m.group(6)))
    if not pairs:
        raise DataError(f"Omniglot runs: {run}/{LABELS} is empty.")
    return pairs


def load_runs(path: str | Path, image_size: int = 28) -> list[Run]:
    """Reads the official runs (`all_runs.zip` or the folder it unpacks to) into one Task per run.

    Args:
      path: `all_runs.zip`, or a folder holding `run01/`, `run02/`, ... (possibly one level down).
      image_size: side the images are resized to (the model's image size).

    Returns:
      The runs in name order; each task has `support_y = 0..C-1` (training images in class-file
      order), query labels from `class_labels.txt`, and `num_classes = C` (20 in the official runs).

    Raises:
      DataError: missing path, unreadable zip, no runs, malformed `class_labels.txt`, missing or
        unreadable images, or a run whose labels do not cover its training images.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"Omniglot runs: {path} does not exist. Download all_runs.zip from {RUNS_URL} (folder "
            f"python/one-shot-classification of https://github.com/brendenlake/omniglot) and pass "
            f"its path, or the folder it unpacks to.")
    source = _Source(path)
    try:
        runs = sorted({p.split("/")[0] for p in source.by_run_path if p.endswith("/" + LABELS)})
        if not runs:
            raise DataError(f"Omniglot runs: {path} holds no runNN/{LABELS}; is it all_runs.zip "
                            f"(from {RUNS_URL})?")
        out = []
        for run in runs:
            pairs = _parse_labels(source.read(f"{run}/{LABELS}").decode("utf-8", "replace"), run)
            classes = sorted(p.split("/")[-1] for p in source.by_run_path
                             if p.startswith(f"{run}/training/") and p.endswith(".png"))
            if not classes:
                raise DataError(f"Omniglot runs: {run}/training/ holds no images.")
            index = {c: i for i, c in enumerate(classes)}
            items = [item for item, _ in pairs]
            if len(set(items)) != len(items):
                raise DataError(f"Omniglot runs: {run}/{LABELS} lists a test item twice.")
            unknown = sorted({c for _, c in pairs} - set(index))
            if unknown:
                raise DataError(f"Omniglot runs: {run}/{LABELS} names {unknown}, not in "
                                f"{run}/training/.")
            support = np.stack([preprocess(source.read(f"{run}/training/{c}"), image_size,
                                           f"{run}/training/{c}") for c in classes])
            query = np.stack([preprocess(source.read(f"{run}/test/{i}"), image_size,
                                         f"{run}/test/{i}") for i in items])
            task = Task(
                support_x=jnp.asarray(support),
                support_y=jnp.arange(len(classes), dtype=jnp.int32),
                query_x=jnp.asarray(query),
                query_y=jnp.asarray([index[c] for _, c in pairs], dtype=jnp.int32),
                num_classes=len(classes),
            )
            out.append(Run(run, task, tuple(classes), tuple(items)))
        return out
    finally:
        source.close()


def locate_runs(runs: list[Run], images: np.ndarray, alphabet_of_class,
                alphabets) -> list[dict]:
    """Where each run's images come from in the Omniglot zips: every training and test image is
    looked up, pixel for pixel, among the drawings `images [characters, 20, H, W, 1]` (uint8, the
    loader's arrays at the runs' image size), whose alphabets are `alphabets[alphabet_of_class]`
    (`metajax.data.within_alphabet.evaluation_alphabets` gives all three).

    Returns, per run: `run`, its `alphabets`, the drawer numbers (1-20, the drawing's `_NN`) of its
    training and of its test images with their counts, and `unmatched`, the images found nowhere
    (non-zero means the runs' images are not the zips' drawings as our loader decodes them).
    """
    where: dict[bytes, tuple[int, int]] = {}
    for c, drawings in enumerate(images):
        for d, x in enumerate(drawings):
            where.setdefault(np.ascontiguousarray(x).tobytes(), (c, d))
    out = []
    for run in runs:
        found = {}
        for part, xs in (("training", run.task.support_x), ("test", run.task.query_x)):
            pixels = np.round(np.asarray(xs) * 255).astype(np.uint8)
            found[part] = [where.get(np.ascontiguousarray(x).tobytes()) for x in pixels]
        hits = [h for part in found.values() for h in part if h is not None]
        drawers = {part: dict(sorted(Counter(d + 1 for _, d in filter(None, hits_)).items()))
                   for part, hits_ in found.items()}
        out.append({"run": run.name,
                    "alphabets": sorted({alphabets[alphabet_of_class[c]] for c, _ in hits}),
                    "training_drawers": drawers["training"], "test_drawers": drawers["test"],
                    "unmatched": sum(h is None for part in found.values() for h in part)})
    return out


def score_runs(learner: Learner, params: Params, runs: list[Run], seed: int = 0) -> dict:
    """Classifies each run's test items with `learner.predict` (argmax over the support classes).

    Returns:
      `{"runs": [{"run", "errors", "items", "error_rate"}...], "error_rate", "accuracy"}`, the
      overall numbers over all test items of all runs (the runs are equally sized).
    """
    predict = jax.jit(learner.predict)
    rows, wrong, total = [], 0, 0
    for i, run in enumerate(runs):
        scores = predict(params, run.task, jax.random.fold_in(jax.random.PRNGKey(seed), i))
        guess = np.asarray(jnp.argmax(scores, axis=-1))
        errors = int(np.sum(guess != np.asarray(run.task.query_y)))
        n = int(run.task.query_y.shape[0])
        rows.append({"run": run.name, "errors": errors, "items": n, "error_rate": errors / n})
        wrong, total = wrong + errors, total + n
    return {"runs": rows, "error_rate": wrong / total, "accuracy": 1 - wrong / total}
