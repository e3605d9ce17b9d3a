"""The image datasets metajax reads, by name: what each is, where its files go, and how to load its
class split (what `metajax datasets` prints and the episodic experiments load)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metajax.data.episodes import RaggedClasses
from metajax.data.omniglot import Split


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset: `load(data_dir, image_size, download=False) -> Split`; with `download` the
    official files are fetched where the source allows it."""

    name: str
    description: str
    files: str
    image_size: int
    load: Callable[..., Split]


def _omniglot(data_dir, size: int, download: bool = False) -> Split:
    from metajax.data.omniglot import load_omniglot, make_split

    return make_split(load_omniglot(size, data_dir=data_dir, download_missing=download), "vinyals",
                      data_dir=data_dir)


def _miniimagenet(data_dir, size: int, download: bool = False) -> Split:
    from metajax.data.miniimagenet import load_miniimagenet

    del download  # miniImageNet has no official download
    return load_miniimagenet(size, data_dir=data_dir)


def _tiered(data_dir, size: int, download: bool = False) -> Split:
    from metajax.data.tiered import load_tiered_imagenet

    del download  # no official download
    return load_tiered_imagenet(size, data_dir=data_dir)


def _cifar_fs(data_dir, size: int, download: bool = False) -> Split:
    from metajax.data.cifar import load_cifar_fs

    return load_cifar_fs(size, data_dir=data_dir, download_missing=download)


def _fc100(data_dir, size: int, download: bool = False) -> Split:
    from metajax.data.cifar import load_fc100

    return load_fc100(size, data_dir=data_dir, download_missing=download)


def _folder(data_dir, size: int, download: bool = False) -> Split:
    from metajax.data.folder import load_folder

    del download
    if data_dir is None:
        raise ValueError("the folder dataset needs --data-dir: a folder holding train/, test/ "
                         "(and optionally val/), one folder of images per class")
    return load_folder(data_dir, size)


CATALOG: dict[str, DatasetEntry] = {e.name: e for e in (
    DatasetEntry("omniglot", "Omniglot (Lake et al. 2015), Vinyals et al.'s split with rotations "
                 "as classes", "DATA/omniglot/images_background.zip, images_evaluation.zip "
                 "(downloaded when missing)", 28, _omniglot),
    DatasetEntry("miniimagenet", "miniImageNet (Vinyals et al. 2016), Ravi & Larochelle's split",
                 "DATA/miniimagenet/images/*.jpg and train.csv, val.csv, test.csv, or "
                 "mini-imagenet-cache-{train,val,test}.pkl", 84,
                 _miniimagenet),
    DatasetEntry("tieredimagenet", "tieredImageNet (Ren et al. 2018): 351 / 97 / 160 classes of "
                 "20 / 6 / 8 categories, decoded once to memory-mapped files",
                 "DATA/tieredimagenet/{train,val,test}_images_png.pkl and _labels.pkl", 84,
                 _tiered),
    DatasetEntry("cifar-fs", "CIFAR-FS (Bertinetto et al. 2019): CIFAR-100, 64 / 16 / 20 classes",
                 "DATA/cifar100/cifar-100-python.tar.gz (downloaded when missing)", 32, _cifar_fs),
    DatasetEntry("fc100", "FC100 (Oreshkin et al. 2018): CIFAR-100 by superclass, 60 / 20 / 20 "
                 "classes", "DATA/cifar100/cifar-100-python.tar.gz (downloaded when missing)", 32,
                 _fc100),
    DatasetEntry("folder", "any image tree, one folder per class; classes may differ in size",
                 "--data-dir PATH holding train/, val/ (optional) and test/", 28, _folder),
)}


def split_counts(split: Split) -> dict:
    """`{"splits": {"train": {"classes": n, "images": m}, "val": ..., "test": ...}}`."""
    out = {}
    for part in ("train", "val", "test"):
        classes = getattr(split, part)
        if classes is None:
            continue
        images = classes.images
        total = (int(images.counts.sum()) if isinstance(images, RaggedClasses)
                 else int(images.shape[0] * images.shape[1]))
        out[part] = {"classes": len(classes), "images": total}
    return {"splits": out}
