"""tensorflow-datasets as an alternative source of the same Omniglot arrays.

`load_omniglot_tfds` prepares tfds' `omniglot` builder and converts it to the arrays that
`load_omniglot` produces (same character order, same resize and inversion; tfds does not record
the drawer, so the 20 drawings of a character come in a canonical order of their own), so the rest
of metajax does not care where the pixels came from. Needs the `tfds` extra (`pip install "metajax[tfds]"`).

Offline use: tfds' builder downloads the four official zips (`images_background.zip`,
`images_evaluation.zip`, `images_background_small1.zip`, `images_background_small2.zip`). With
`local_zips=True` (the default when the first two are present in `DATA/omniglot/`) the background
and evaluation zips are taken from that folder instead, with no download and no checksum check, so
rebuilt copies work too; only tfds' `train` and `test` splits are prepared then, as only they are
read (the `small1`/`small2` splits are subsets of `train`).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from metajax.data.download import DataError, cache_dir_from
from metajax.data.omniglot import DRAWINGS, Omniglot, omniglot_dir

TFDS_ZIPS = {
    "train": "images_background.zip",
    "eval": "images_evaluation.zip",
    "small1": "images_background_small1.zip",
    "small2": "images_background_small2.zip",
}
LOCAL_ZIPS = {k: TFDS_ZIPS[k] for k in ("train", "eval")}  # what the local builder reads


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            "the tfds source needs tensorflow-datasets: pip install 'metajax[tfds]'"
        ) from e
    return tfds


def _local_builder(tfds, data_dir, tfds_dir):
    """tfds' Omniglot builder reading the background and evaluation zips from DATA/omniglot/
    instead of downloading, and preparing only the `train` and `test` splits."""
    folder = omniglot_dir(data_dir)
    missing = [z for z in LOCAL_ZIPS.values() if not (folder / z).exists()]
    if missing:
        raise DataError(f"tfds Omniglot offline: {', '.join(missing)} missing in {folder}")
    base = tfds.image_classification.Omniglot

    class _LocalZips:
        """Stands in for the download manager: local zips, extracted by tfds' own extractor."""

        def __init__(self, manager):
            self._manager = manager

        def download_and_extract(self, urls):
            extracted = self._manager.extract({k: folder / z for k, z in LOCAL_ZIPS.items()})
            # small1/small2 (subsets of the background set) point at it; their splits are dropped
            return {k: extracted.get(k, extracted["train"]) for k in urls}

    class LocalOmniglot(base, skip_registration=True):
        name = "omniglot"

        def _split_generators(self, dl_manager):
            return [g for g in super()._split_generators(_LocalZips(dl_manager))
                    if g.name in ("train", "test")]

    return LocalOmniglot(data_dir=str(tfds_dir))


def load_omniglot_tfds(size: int = 28, data_dir=None, cache_dir=None,
                       local_zips: bool | None = None) -> Omniglot:
    """Omniglot through tensorflow-datasets, as the same `Omniglot` arrays as `load_omniglot`.

    Args:
      size: image side after resizing (LANCZOS, as the zip loader).
      data_dir: folder holding `omniglot/` with the zips (for `local_zips`).
      cache_dir: tfds' prepared data goes to `cache_dir/tfds`.
      local_zips: read the background and evaluation zips from `data_dir` (default: when both
        are there).
    """
    tfds = _import_tfds()
    tfds_dir = cache_dir_from(cache_dir) / "tfds"
    if local_zips is None:
        local_zips = all((omniglot_dir(data_dir) / z).exists() for z in LOCAL_ZIPS.values())
    if local_zips:
        builder = _local_builder(tfds, data_dir, tfds_dir)
    else:
        builder = tfds.builder("omniglot", data_dir=str(tfds_dir))
    builder.download_and_prepare()
    alphabet_names = builder.info.features["alphabet"].names
    chars: dict[str, list[bytes]] = {}
    background: dict[str, bool] = {}
    for split, is_background in (("train", True), ("test", False)):
        for ex in tfds.as_numpy(builder.as_dataset(split=split, decoders={
                "image": tfds.decode.SkipDecoding()})):
            name = f"{alphabet_names[ex['alphabet']]}/character{ex['alphabet_char_id'] + 1:02d}"
            chars.setdefault(name, []).append(ex["image"])
            background[name] = is_background
    names = sorted(n for n in chars if background[n]) + sorted(n for n in chars if not background[n])
    images = np.empty((len(names), DRAWINGS, size, size), np.uint8)
    for i, name in enumerate(names):
        if len(chars[name]) != DRAWINGS:
            raise DataError(f"tfds Omniglot: {name} has {len(chars[name])} drawings, expected {DRAWINGS}")
        drawings = []
        for png in chars[name]:
            img = Image.open(io.BytesIO(png)).convert("L")
            if img.size != (size, size):
                img = img.resize((size, size), Image.LANCZOS)
            drawings.append(255 - np.asarray(img, dtype=np.uint8))
        # tfds does not keep the drawer id, so drawings are put in a canonical (pixel) order.
        images[i] = np.stack(sorted(drawings, key=lambda a: a.tobytes()))
    return Omniglot(images, tuple(names), np.array([background[n] for n in names]))
