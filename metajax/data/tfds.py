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
read (the `small1`/`small2` splits are subsets of `train`), and the drawings are read straight from
the zips into the same records tfds makes from its extracted folders.
"""

from __future__ import annotations

import numpy as np

from metajax.data.download import DataError, cache_dir_from
from metajax.data.omniglot import (
    DRAWINGS,
    Omniglot,
    decode_drawing,
    drawing_members,
    omniglot_dir,
    open_zip,
)

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


def _drawings(names):
    """(zip member, alphabet, character id, label) of each drawing among a zip's member names,
    as tfds' builder derives them from the extracted folder `<alphabet>/characterNN/<label
    number>_<drawer>.png` (id = NN - 1, label = the file's number - 1)."""
    for member, alphabet, character, image in drawing_members(sorted(names)):
        yield (member, alphabet, int(character[len("character"):]) - 1,
               int(image.split("_")[0]) - 1)


def _local_builder(tfds, data_dir, tfds_dir):
    """tfds' Omniglot builder reading the background and evaluation zips from DATA/omniglot/
    instead of downloading, and preparing only the `train` and `test` splits. The drawings are
    read from the zips as they are, not extracted first (tfds extracts the 32k files one by one:
    39 of the 51 s that preparing took on an ext4 disk here)."""
    folder = omniglot_dir(data_dir)
    missing = [z for z in LOCAL_ZIPS.values() if not (folder / z).exists()]
    if missing:
        raise DataError(f"tfds Omniglot offline: {', '.join(missing)} missing in {folder}")
    zips = {"train": folder / LOCAL_ZIPS["train"], "test": folder / LOCAL_ZIPS["eval"]}

    class LocalOmniglot(tfds.image_classification.Omniglot, skip_registration=True):
        name = "omniglot"

        def _split_generators(self, dl_manager):
            del dl_manager
            alphabets, labels = set(), {}
            for path in zips.values():
                with open_zip(path) as z:
                    names = z.namelist()
                for _, alphabet, char_id, label in _drawings(names):
                    alphabets.add(alphabet)
                    labels[label] = f"{alphabet}_{char_id}"
            self.info.features["alphabet"].names = sorted(alphabets)
            self.info.features["label"].names = [labels[k] for k in sorted(labels)]
            return [tfds.core.SplitGenerator(name=split, gen_kwargs={"zip_path": path})
                    for split, path in zips.items()]

        def _generate_examples(self, zip_path):
            with open_zip(zip_path) as z:
                for member, alphabet, char_id, label in _drawings(z.namelist()):
                    yield f"{alphabet}_{char_id}_{member.rsplit('/', 1)[1]}", {
                        "image": z.read(member), "alphabet": alphabet,
                        "alphabet_char_id": char_id, "label": label}

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
        drawings = [decode_drawing(png, size) for png in chars[name]]
        # tfds does not keep the drawer id, so drawings are put in a canonical (pixel) order.
        images[i] = np.stack(sorted(drawings, key=lambda a: a.tobytes()))
    return Omniglot(images, tuple(names), np.array([background[n] for n in names]))
