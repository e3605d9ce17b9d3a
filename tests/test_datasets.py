"""CIFAR-FS, FC100 and image folders from small files the tests write in the official layouts;
`metajax datasets`; the ragged episode sampler for classes of unequal sizes."""

import io
import json
import pickle
import tarfile

import jax
import numpy as np
import pytest
from PIL import Image

from metajax.cli import main
from metajax.data.cifar import load_cifar_fs, load_fc100
from metajax.data.download import DataError
from metajax.data.episodes import RaggedClasses, check_ragged_episode, ragged_episode_sampler
from metajax.data.folder import load_folder

# CIFAR-100's superclasses and their five classes each (the archive's `meta` lists the fine names
# alphabetically and the superclasses in this order).
SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
FINE = sorted(n for names in SUPERCLASSES.values() for n in names)
COARSE = list(SUPERCLASSES)
COARSE_OF = {n: COARSE.index(s) for s, names in SUPERCLASSES.items() for n in names}


def _pickle_part(per_class: int, part: int) -> bytes:
    """`per_class` images of every class; in the red plane, pixel [0, 0] = fine label, [0, 1] =
    index, [0, 2] = part (0 train, 1 test), in the archive's row layout (3072 bytes: the R, G
    and B planes)."""
    labels = np.repeat(np.arange(100), per_class)
    rows = np.zeros((len(labels), 3, 32, 32), np.uint8)
    rows[:, 0, 0, 0] = labels
    rows[:, 0, 0, 1] = np.tile(np.arange(per_class), 100)
    rows[:, 0, 0, 2] = part
    return pickle.dumps({b"data": rows.reshape(len(labels), 3072), b"fine_labels": labels.tolist(),
                         b"coarse_labels": [COARSE_OF[FINE[f]] for f in labels]})


def write_cifar100(root, train_per_class=16, test_per_class=4):
    """`root/cifar100/cifar-100-python.tar.gz` in the official layout."""
    meta = pickle.dumps({b"fine_label_names": [n.encode() for n in FINE],
                         b"coarse_label_names": [n.encode() for n in COARSE]})
    members = {"train": _pickle_part(train_per_class, 0), "test": _pickle_part(test_per_class, 1),
               "meta": meta}
    folder = root / "cifar100"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "cifar-100-python.tar.gz", "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return root


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("name, classes", [("cifar-fs", (64, 16, 20)), ("fc100", (60, 20, 20))])
def test_datasets_json_counts_the_official_archive(cifar_root, name, classes, capsys):
    assert main(["datasets", name, "--json", "--data-dir", str(cifar_root)]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts == {"splits": {p: {"classes": c, "images": 20 * c}
                                 for p, c in zip(("train", "val", "test"), classes, strict=True)}}


def test_cifar_fs_pools_train_and_test_images_and_keeps_the_shipped_split(cifar_root):
    split = load_cifar_fs(data_dir=cifar_root, download_missing=False)
    assert "whale" in split.test.names and "beaver" in split.val.names
    assert not set(split.train.names) & (set(split.val.names) | set(split.test.names))
    for part in (split.train, split.val, split.test):
        images = part.images  # [classes, 20, 32, 32, 3]
        assert images.shape[1:] == (20, 32, 32, 3)
        np.testing.assert_array_equal(images[:, :, 0, 0, 0],
                                      np.asarray([FINE.index(n) for n in part.names])[:, None]
                                      .repeat(20, 1))
        np.testing.assert_array_equal(images[0, :, 0, 2, 0], [0] * 16 + [1] * 4)  # train, test


def test_fc100_parts_share_no_superclass(cifar_root):
    split = load_fc100(data_dir=cifar_root, download_missing=False)
    supers = {p: {COARSE_OF[n] for n in getattr(split, p).names} for p in ("train", "val", "test")}
    assert [len(s) for s in supers.values()] == [12, 4, 4]
    assert not supers["train"] & supers["val"] and not supers["train"] & supers["test"]
    assert not supers["val"] & supers["test"]


def test_missing_and_broken_archives_say_what_to_do(tmp_path, capsys):
    assert main(["datasets", "cifar-fs", "--json", "--data-dir", str(tmp_path)]) == 2
    assert "cifar-100-python.tar.gz" in capsys.readouterr().err
    (tmp_path / "cifar100").mkdir()
    (tmp_path / "cifar100" / "cifar-100-python.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DataError, match="not the official archive"):
        load_fc100(data_dir=tmp_path, download_missing=False)


def test_datasets_lists_every_dataset(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("omniglot", "miniimagenet", "cifar-fs", "fc100", "folder"):
        assert name in out
    assert main(["datasets", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err


def write_folder(root, sizes, grey=False):
    """`root/{train,val,test}/c<i>/<j>.png|jpg` with `sizes[part][i]` images of class i; pixel
    [0, 0] = class index, [0, 1] = image index (PNG keeps them exactly)."""
    for part, counts in sizes.items():
        for c, n in enumerate(counts):
            folder = root / part / f"c{c:02d}"
            folder.mkdir(parents=True)
            for j in range(n):
                x = np.full((10, 12, 3), 200, np.uint8)
                x[0, 0], x[0, 1] = c, j
                if not grey:
                    x[5:, :, 1] = 50
                Image.fromarray(x).save(folder / f"{j:03d}.png")
    return root


def test_folder_dataset_with_classes_of_unequal_sizes(tmp_path, capsys):
    sizes = {"train": [4, 7, 5, 9, 6], "test": [5, 5, 5]}
    root = write_folder(tmp_path / "tree", sizes)
    assert main(["datasets", "folder", "--json", "--data-dir", str(root)]) == 0
    assert json.loads(capsys.readouterr().out) == {"splits": {
        "train": {"classes": 5, "images": 31}, "test": {"classes": 3, "images": 15}}}
    split = load_folder(root, 10)
    assert isinstance(split.train.images, RaggedClasses) and split.val is None
    assert split.test.images.shape == (3, 5, 10, 10, 3)  # equal sizes: the dense layout
    assert split.info["channels"] == 3
    grey = load_folder(write_folder(tmp_path / "grey", {"train": [3, 3], "test": [3, 3]}, True), 8)
    assert grey.train.images.shape == (2, 3, 8, 8, 1)


def test_ragged_sampler_draws_distinct_images_of_each_class(tmp_path):
    counts = [4, 7, 5, 9, 6]
    per_class = [np.stack([np.full((1, 1, 1), 10 * c + j, np.uint8) for j in range(n)])
                 for c, n in enumerate(counts)]
    data = RaggedClasses.from_lists(per_class)
    sample = ragged_episode_sampler(3, 1, 3, max(counts))
    seen = set()
    for i in range(40):
        task = sample(jax.random.PRNGKey(i), jax.device_put(data))
        codes = np.rint(np.concatenate([task.support_x, task.query_x]).reshape(-1) * 255)
        labels = np.concatenate([task.support_y, task.query_y])
        classes = codes // 10
        for label in range(3):  # one class per label, 4 distinct images of it, all in range
            mine = codes[labels == label]
            assert len(set(classes[labels == label])) == 1 and len(set(mine)) == 4
            c = int(mine[0] // 10)
            assert all(0 <= m - 10 * c < counts[c] for m in mine)
        seen |= {int(m) for m in codes}
    assert set(range(30, 39)) <= seen  # every image of the largest class is drawn, none past it
    with pytest.raises(ValueError, match="classes with only 4 images"):
        check_ragged_episode(data, 3, 1, 4)


@pytest.mark.slow
@pytest.mark.parametrize("dataset, extra", [("cifar-fs", []), ("fc100", []), ("folder", []),
                                            ("cifar-fs", ["--augment", "--normalize"])])
def test_protonet_trains_a_few_steps(dataset, extra, cifar_root, tmp_path):
    if dataset == "folder":
        sizes = {"train": [6, 9, 7, 8, 10, 6], "val": [6] * 5, "test": [7, 6, 8, 6, 9]}
        data = ["--data-dir", str(write_folder(tmp_path / "tree", sizes)), "--image-size", "32"]
    else:
        data = ["--data-dir", str(cifar_root)]
    out = tmp_path / "run"
    assert main(["train", "protonet", "--dataset", dataset, *data, "--out", str(out),
                 "--width", "8", "--steps", "4", "--train-ways", "5", "--queries", "2",
                 "--test-queries", "3", "--eval-episodes", "10", "--val-every", "2",
                 "--val-episodes", "4", "--no-progress", *extra]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["split"]["split"] == dataset


def write_tiered(root, counts_by_part, size=12):
    """`root/tieredimagenet/{part}_images_png.pkl` and `{part}_labels.pkl` in Ren et al.'s layout:
    a list of PNG byte arrays and a label dict; images shuffled across classes; pixel [0, 0] of the
    red plane = class index within the part, [0, 1] = image index within the class."""
    folder = root / "tieredimagenet"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, counts in counts_by_part.items():
        items = []
        for c, n in enumerate(counts):
            for j in range(n):
                x = np.full((size, size, 3), 90, np.uint8)
                x[0, 0, 0], x[0, 1, 0] = c, j
                buf = io.BytesIO()
                Image.fromarray(x).save(buf, format="PNG")
                items.append((c, np.frombuffer(buf.getvalue(), np.uint8)))
        order = rng.permutation(len(items))
        labels = {"label_specific": np.asarray([items[i][0] for i in order]),
                  "label_general": np.zeros(len(items), np.int64),
                  "label_specific_str": [f"n{part}{c:04d}" for c in range(len(counts))],
                  "label_general_str": ["category"]}
        (folder / f"{part}_images_png.pkl").write_bytes(pickle.dumps([items[i][1] for i in order]))
        (folder / f"{part}_labels.pkl").write_bytes(pickle.dumps(labels))
    return root


def test_tiered_imagenet_from_the_pickled_layout(tmp_path, capsys, monkeypatch):
    from metajax.data import tiered

    counts = {"train": [5, 9, 7, 6], "val": [6, 6, 8], "test": [7, 5, 6, 9, 6]}
    root = write_tiered(tmp_path / "data", counts)
    cache = tmp_path / "cache"
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(cache))
    assert main(["datasets", "tieredimagenet", "--json", "--data-dir", str(root),
                 "--image-size", "12"]) == 0
    assert json.loads(capsys.readouterr().out) == {"splits": {
        p: {"classes": len(c), "images": sum(c)} for p, c in counts.items()}}
    split = tiered.load_tiered_imagenet(12, data_dir=root, cache_dir=cache)
    ragged = split.train.images
    assert isinstance(ragged.images, np.memmap) and list(ragged.counts) == counts["train"]
    for c, (start, n) in enumerate(zip(ragged.offsets, ragged.counts, strict=True)):
        block = np.asarray(ragged.images[start:start + n])
        assert set(block[:, 0, 0, 0]) == {c} and sorted(block[:, 0, 1, 0]) == list(range(n))
    # the second load maps the cache and decodes nothing
    monkeypatch.setattr(tiered, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError))
    again = tiered.load_tiered_imagenet(12, data_dir=root, cache_dir=cache)
    np.testing.assert_array_equal(again.test.images.images, split.test.images.images)
    assert main(["datasets", "tieredimagenet", "--data-dir", str(tmp_path / "none")]) == 2
    assert "train_images_png.pkl" in capsys.readouterr().err


def test_host_stream_over_ragged_classes():
    from metajax.data.streaming import HostEpisodes

    counts = [4, 7, 5, 9, 6]
    data = RaggedClasses.from_lists([np.stack([np.full((1, 1, 1), 10 * c + j, np.uint8)
                                               for j in range(n)]) for c, n in enumerate(counts)])
    stream = HostEpisodes(data, 3, 1, 3, meta_batch=4, seed=1)
    for step in range(10):
        batch = stream.batch(step)
        for t in range(4):
            codes = np.concatenate([batch.support_x[t], batch.query_x[t]]).reshape(-1)
            labels = np.concatenate([batch.support_y[t], batch.query_y[t]])
            for label in range(3):
                mine = codes[labels == label].astype(int)
                c = mine[0] // 10
                assert len(set(mine // 10)) == 1 and len(set(mine)) == 4
                assert all(0 <= m - 10 * c < counts[c] for m in mine)
    with pytest.raises(ValueError, match="classes with only 4 images"):
        HostEpisodes(data, 3, 1, 4, meta_batch=2)


@pytest.mark.slow
def test_protonet_trains_from_the_host_stream_on_tiered_imagenet(tmp_path, monkeypatch):
    counts = {"train": [8, 11, 9, 10, 12, 8], "val": [8] * 5, "test": [9, 8, 10, 8, 9]}
    root = write_tiered(tmp_path / "data", counts, size=16)
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["train", "protonet", "--dataset", "tieredimagenet", "--data-dir", str(root),
                 "--image-size", "16", "--stream", "--out", str(out), "--width", "8", "--steps",
                 "4", "--train-ways", "5", "--meta-batch", "2", "--queries", "2",
                 "--test-queries", "3", "--eval-episodes", "10", "--val-every", "2",
                 "--val-episodes", "4", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["split"]["split"] == "tieredimagenet"


def test_miniimagenet_from_the_pickled_cache_layout(tmp_path, capsys):
    """`mini-imagenet-cache-{part}.pkl`: image_data and class_dict (indices into it, shuffled)."""
    folder = tmp_path / "miniimagenet"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for part, n_classes in (("train", 4), ("val", 2), ("test", 3)):
        per_class = 6
        order = rng.permutation(n_classes * per_class)
        images = np.zeros((n_classes * per_class, 84, 84, 3), np.uint8)
        class_dict = {}
        for c in range(n_classes):
            rows = sorted(order[c * per_class:(c + 1) * per_class].tolist())
            class_dict[f"n0{part}{c}"] = rows
            for j, r in enumerate(rows):
                images[r, 0, 0, 0], images[r, 0, 1, 0] = c, j
        (folder / f"mini-imagenet-cache-{part}.pkl").write_bytes(
            pickle.dumps({"image_data": images, "class_dict": class_dict}))
    assert main(["datasets", "miniimagenet", "--json", "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"splits": {
        "train": {"classes": 4, "images": 24}, "val": {"classes": 2, "images": 12},
        "test": {"classes": 3, "images": 18}}}
    from metajax.data.miniimagenet import load_miniimagenet

    split = load_miniimagenet(84, data_dir=tmp_path)
    np.testing.assert_array_equal(split.test.images[:, :, 0, 0, 0], np.repeat(np.arange(3), 6)
                                  .reshape(3, 6))
    np.testing.assert_array_equal(split.test.images[1, :, 0, 1, 0], np.arange(6))
