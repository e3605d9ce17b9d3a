"""miniImageNet loader on a tiny fixture in the common layout (images/ + Ravi csv files)."""

import jax
import numpy as np
import pytest
from PIL import Image

from metajax.config import make_config
from metajax.data.download import DataError
from metajax.data.miniimagenet import load_miniimagenet
from metajax.experiment import task_sources

CLASSES = {"train": ["n01", "n02", "n03"], "val": ["n04", "n05"], "test": ["n06", "n07", "n08"]}
PER_CLASS = 4


def _colour(c: int, i: int) -> tuple[int, int, int]:
    return (30 * c + 10, 40 * i + 20, 200 - 15 * c)


def _build(root, size=40):
    """Solid-colour JPEGs whose colour encodes (class, image), and the three csv files."""
    (root / "images").mkdir(parents=True)
    c = 0
    for part, labels in CLASSES.items():
        rows = ["filename,label"]
        for label in labels:
            for i in range(PER_CLASS):
                name = f"{label}{i:08d}.jpg"
                Image.new("RGB", (size, size), _colour(c, i)).save(root / "images" / name,
                                                                     quality=95)
                rows.append(f"{name},{label}")
            c += 1
        (root / f"{part}.csv").write_text("\n".join(rows) + "\n")


def test_loader_reads_the_fixture_resizes_and_caches(tmp_path):
    _build(tmp_path / "miniimagenet")
    split = load_miniimagenet(16, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert split.train.images.shape == (3, PER_CLASS, 16, 16, 3)
    assert split.val.images.shape == (2, PER_CLASS, 16, 16, 3)
    assert split.test.names == ("n06", "n07", "n08") and split.train.images.dtype == np.uint8
    # class n07 is the 7th class built (index 6); its image 2 has colour _colour(6, 2) (JPEG: +-3)
    np.testing.assert_allclose(split.test.images[1, 2].reshape(-1, 3).mean(0), _colour(6, 2),
                               atol=3)
    assert split.info["classes"] == {"train": 3, "val": 2, "test": 3}
    assert len(list((tmp_path / "cache").glob("miniimagenet_16_*.npz"))) == 1
    (tmp_path / "miniimagenet" / "images" / "n0100000000.jpg").unlink()  # the cache is used now
    again = load_miniimagenet(16, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.train.images, split.train.images)


def test_loader_errors_say_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="images/ folder"):
        load_miniimagenet(16, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    _build(tmp_path / "miniimagenet")
    (tmp_path / "miniimagenet" / "images" / "n0600000001.jpg").unlink()
    with pytest.raises(DataError, match="n0600000001.jpg.*missing"):
        load_miniimagenet(16, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    (tmp_path / "miniimagenet" / "val.csv").unlink()
    with pytest.raises(DataError, match="val.csv is missing"):
        load_miniimagenet(16, data_dir=tmp_path, cache_dir=tmp_path / "cache")


def _decoded(images) -> list[tuple[int, int]]:
    """(class, image) of each solid-colour picture of `images [B, H, W, 3]` (floats in [0, 1]),
    read back from its colour, which must be `_colour(class, image)` (JPEG: +-3)."""
    rgb = np.asarray(images).reshape(len(images), -1, 3).mean(axis=1) * 255
    codes = [(round((r - 10) / 30), round((g - 20) / 40)) for r, g, _ in rgb]
    for colour, code in zip(rgb, codes, strict=True):
        np.testing.assert_allclose(colour, _colour(*code), atol=3)
    return codes


def _check_episode(task, classes: set[int], shots: int, queries: int) -> None:
    """Images of `classes` only; one class per label, the same in the support and query sets;
    `shots` support and `queries` query images of each, all different images."""
    support, query = _decoded(task.support_x), _decoded(task.query_x)
    class_of = {}
    for (c, _), label in zip(support + query, np.r_[task.support_y, task.query_y], strict=True):
        assert c in classes, (c, classes)
        assert class_of.setdefault(int(label), c) == c, (label, c, class_of)
    assert len(set(class_of.values())) == len(class_of) == task.num_classes  # distinct classes
    assert sorted(np.bincount(task.support_y)) == [shots] * task.num_classes
    assert sorted(np.bincount(task.query_y)) == [queries] * task.num_classes
    # no image drawn twice: in particular no query image is a support image of its class
    assert len(set(support + query)) == len(support) + len(query)


def test_dataset_flag_feeds_episodes_from_the_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(tmp_path / "cache"))
    _build(tmp_path / "miniimagenet", size=84)
    config = make_config("protonet", dataset="miniimagenet", ways=2, shots=1, test_queries=2,
                         train_ways=3, queries=2, data_dir=str(tmp_path))
    assert (config.image_size, config.split) == (84, "ravi")
    sources, info = task_sources(config)
    assert info["split"] == "ravi" and sources["test"].data.shape == (3, PER_CLASS, 84, 84, 3)
    test = sources["test"]
    for seed in range(3):
        task = test.sample(jax.random.PRNGKey(seed), test.data)
        assert task.support_x.shape == (2, 84, 84, 3) and task.query_x.shape == (4, 84, 84, 3)
        # the fixture's classes are numbered in csv order: train 0-2, val 3-4, test 5-7
        _check_episode(task, {5, 6, 7}, shots=1, queries=2)
