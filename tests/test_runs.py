"""The official one-shot runs reader and `metajax eval-runs`, on a fixture in the all_runs.zip format
built from evaluation-alphabet images (3 runs, 20 characters each, two drawings per character)."""

import dataclasses
import json
import random
import shutil
import zipfile

import jax
import numpy as np
import pytest
from conftest import coded_images

from metajax.cli import main
from metajax.data.download import DataError
from metajax.data.runs import load_runs, locate_runs, official_runs_path, score_runs
from metajax.data.within_alphabet import (
    alphabet_groups,
    drawer_paired_sampler,
    evaluation_alphabets,
    proxy_runs_sampler,
    within_alphabet_sampler,
)
from metajax.learners import protonet
from metajax.nets import Conv4

ALPHABETS = ("Angelic", "Tengwar", "Keble")


def write_runs(data_dir, out_dir, alphabets=ALPHABETS, characters=20):
    """Writes `out_dir/runNN/{training,test}/*.png` and `class_labels.txt` as in the official
    all_runs.zip, each run from one evaluation alphabet: drawing 0 of each character is its
    training image and drawing 1 its test item, the items shuffled. Returns, per run, the list of
    (class file, item file, character name)."""
    archive = zipfile.ZipFile(data_dir / "omniglot" / "images_evaluation.zip")
    rng = random.Random(0)
    truth = []
    for r, alphabet in enumerate(alphabets, 1):
        run = f"run{r:02d}"
        members = sorted(n for n in archive.namelist()
                         if n.startswith(f"images_evaluation/{alphabet}/") and n.endswith(".png"))
        chars = sorted({m.split("/")[2] for m in members})[:characters]
        order = list(range(len(chars)))
        rng.shuffle(order)  # test item i shows character order[i]
        (out_dir / run / "training").mkdir(parents=True)
        (out_dir / run / "test").mkdir(parents=True)
        lines, rows = [], []
        for c, char in enumerate(chars):
            drawings = sorted(m for m in members if m.split("/")[2] == char)
            (out_dir / run / "training" / f"class{c + 1:02d}.png").write_bytes(
                archive.read(drawings[0]))
        for i, c in enumerate(order):
            char = chars[c]
            drawings = sorted(m for m in members if m.split("/")[2] == char)
            (out_dir / run / "test" / f"item{i + 1:02d}.png").write_bytes(archive.read(drawings[1]))
            lines.append(f"{run}/test/item{i + 1:02d}.png {run}/training/class{c + 1:02d}.png")
            rows.append((f"class{c + 1:02d}.png", f"item{i + 1:02d}.png", f"{alphabet}/{char}"))
        (out_dir / run / "class_labels.txt").write_text("\n".join(lines) + "\n")
        truth.append(rows)
    return truth


def zip_runs(folder, path):
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
    return path


@pytest.fixture(scope="module")
def runs_fixture(data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("all_runs")
    truth = write_runs(data_dir, folder)
    return folder, zip_runs(folder, folder.parent / "all_runs.zip"), truth


def test_reader_matches_the_omniglot_loader(runs_fixture, omniglot28):
    folder, zipped, truth = runs_fixture
    runs = load_runs(zipped, 28)
    assert [r.name for r in runs] == ["run01", "run02", "run03"]
    index = {n: i for i, n in enumerate(omniglot28.names)}
    for run, rows in zip(runs, truth, strict=True):
        t = run.task
        assert t.num_classes == 20
        assert t.support_x.shape == (20, 28, 28, 1) and t.query_x.shape == (20, 28, 28, 1)
        assert t.support_x.dtype == np.float32 and float(t.support_x.max()) <= 1.0
        np.testing.assert_array_equal(t.support_y, np.arange(20))
        for cls, item, char in rows:
            label = run.classes.index(cls)
            q = run.items.index(item)
            assert int(t.query_y[q]) == label
            # same pixels as the loader's arrays: drawing 0 is the class image, drawing 1 the item
            expected = omniglot28.images[index[char]].astype(np.float32) / 255.0
            np.testing.assert_allclose(t.support_x[label, :, :, 0], expected[0], atol=1e-6)
            np.testing.assert_allclose(t.query_x[q, :, :, 0], expected[1], atol=1e-6)
    # the unpacked folder reads the same, also at another image size
    for a, b in zip(load_runs(folder, 28), runs, strict=True):
        np.testing.assert_array_equal(a.task.query_x, b.task.query_x)
        np.testing.assert_array_equal(a.task.query_y, b.task.query_y)
    assert load_runs(folder, 20)[0].task.support_x.shape == (20, 20, 20, 1)


def test_scoring_a_perfect_and_a_known_model(runs_fixture):
    _, zipped, _ = runs_fixture
    runs = load_runs(zipped, 28)
    learner = protonet(Conv4(width=8))
    params = learner.init(jax.random.PRNGKey(0), runs[0].task)
    result = score_runs(learner, params, runs)
    assert [r["items"] for r in result["runs"]] == [20, 20, 20]
    assert result["accuracy"] == pytest.approx(1 - result["error_rate"])
    assert result["error_rate"] == pytest.approx(sum(r["errors"] for r in result["runs"]) / 60)


def test_locate_runs_names_the_alphabet_and_drawers(runs_fixture, omniglot28):
    _, zipped, _ = runs_fixture
    runs = load_runs(zipped, 28)
    evaluation = evaluation_alphabets(omniglot28)
    located = locate_runs(runs, *evaluation)
    assert [r["alphabets"] for r in located] == [[a] for a in ALPHABETS]
    for r in located:  # the fixture's training images are drawings _01, its test images _02
        assert r["training_drawers"] == {1: 20} and r["test_drawers"] == {2: 20}
        assert r["unmatched"] == 0
    # an image that is not one of the zips' drawings is counted, not placed
    task = runs[0].task
    changed = task.replace(query_x=task.query_x.at[3, 0, 0, 0].add(0.5))
    odd = locate_runs([dataclasses.replace(runs[0], task=changed)], *evaluation)[0]
    assert odd["unmatched"] == 1 and odd["test_drawers"] == {2: 19}


def test_clear_errors_for_missing_or_malformed_runs(runs_fixture, tmp_path):
    folder, _, _ = runs_fixture
    with pytest.raises(DataError, match="all_runs.zip"):
        load_runs(tmp_path / "nope.zip")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        load_runs(tmp_path / "broken.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no runNN/class_labels.txt"):
        load_runs(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    labels = bad / "run02" / "class_labels.txt"
    good = labels.read_text()
    labels.write_text(good.replace("run02/training/class", "run02/train/class", 1))
    with pytest.raises(DataError, match=r"run02/class_labels.txt line 1"):
        load_runs(bad)
    labels.write_text(good)
    (bad / "run02" / "test" / "item03.png").unlink()
    with pytest.raises(DataError, match="no file run02/test/item03.png"):
        load_runs(bad)


@pytest.mark.slow
def test_eval_runs_cli(runs_fixture, tmp_path, capsys):
    _, zipped, _ = runs_fixture
    out = tmp_path / "run"
    assert main(["train", "siamese", "--split", "lake", "--out", str(out), "--width", "8",
                 "--steps", "4", "--pairs", "8", "--test-queries", "2", "--eval-episodes", "4",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval-runs", str(out), "--runs", str(zipped)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads((out / "eval_runs.json").read_text())
    assert [r["run"] for r in result["runs"]] == ["run01", "run02", "run03"]
    assert printed[0].startswith("run01 error ")
    assert printed[-1].endswith(f"accuracy {result['accuracy']:.4f}")
    assert result["split"] == "lake" and "warning" not in result
    assert [r["test_drawers"] for r in result["sources"]] == [{"2": 20}] * 3  # JSON keys
    assert main(["eval-runs", str(out), "--runs", str(tmp_path / "missing.zip")]) == 2
    assert "all_runs.zip" in capsys.readouterr().err
    # the default, --runs official, reads DATA_DIR/omniglot/all_runs.zip
    data = tmp_path / "data"
    (data / "omniglot").mkdir(parents=True)
    shutil.copy(zipped, data / "omniglot" / "all_runs.zip")
    assert main(["eval-runs", str(out), "--data-dir", str(data)]) == 0
    assert json.loads((out / "eval_runs.json").read_text())["accuracy"] == result["accuracy"]
    # --proxy: episodes made as the runs were, from the evaluation alphabets, with a CI
    capsys.readouterr()
    assert main(["eval-runs", str(out), "--proxy", "30", "--no-progress"]) == 0
    proxy = json.loads((out / "eval_runs_proxy.json").read_text())
    assert proxy["runs"] == 30 and proxy["ways"] == 20 and proxy["ci95"] > 0
    assert capsys.readouterr().out.strip().endswith(f"accuracy {proxy['accuracy']:.4f}")
    with pytest.raises(SystemExit):
        main(["eval-runs", str(out), "--proxy", "30", "--runs", str(zipped)])
    assert main(["eval-runs", str(out), "--proxy", "0"]) == 2


def test_official_runs_path_needs_the_file_when_not_downloading(tmp_path):
    with pytest.raises(DataError, match="all_runs.zip from https://github.com/brendenlake"):
        official_runs_path(tmp_path, download_missing=False)


def test_within_alphabet_episodes_stay_in_one_alphabet():
    images = coded_images(classes=12, drawings=6)
    alphabet = np.array([0] * 3 + [1] * 5 + [2] * 4)  # alphabet 0 is too small for 4-way
    sample = jax.jit(within_alphabet_sampler(alphabet, ways=4, shots=1, queries=2))
    seen = set()
    for seed in range(30):
        task = sample(jax.random.PRNGKey(seed), images)
        cls = np.round(np.asarray(task.support_x)[:, 0, 0, 0] * 255).astype(int)
        q_cls = np.round(np.asarray(task.query_x)[:, 0, 0, 0] * 255).astype(int)
        assert len(set(cls)) == 4 and len(set(alphabet[cls])) == 1
        assert np.all(q_cls == np.repeat(cls, 2))
        seen.add(int(alphabet[cls[0]]))
    assert seen == {1, 2}
    with pytest.raises(ValueError, match="largest alphabet has only 5"):
        within_alphabet_sampler(alphabet, 6, 1, 1)(jax.random.PRNGKey(0), images)


def _codes(x):
    """(class, drawing) of coded images `[n, size, size, 1]` in [0, 1]."""
    x = np.round(np.asarray(x)[:, 0, :2, 0] * 255).astype(int)
    return x[:, 0], x[:, 1]


def test_drawer_paired_episodes_take_each_set_from_the_same_drawers():
    images = coded_images(classes=12, drawings=20)
    alphabet = np.array([0] * 3 + [1] * 5 + [2] * 4)
    within = within_alphabet_sampler(alphabet, ways=4, shots=2, queries=3, paired_drawers=True)
    anywhere = drawer_paired_sampler(ways=6, shots=2, queries=3)
    for sample, ways in ((within, 4), (anywhere, 6)):
        pairs = set()
        for seed in range(20):
            task = sample(jax.random.PRNGKey(seed), images)
            s_cls, s_drw = _codes(task.support_x)
            q_cls, q_drw = _codes(task.query_x)
            assert len(set(s_cls)) == ways
            np.testing.assert_array_equal(q_cls, np.repeat(s_cls[::2], 3))
            np.testing.assert_array_equal(s_cls[::2], s_cls[1::2])
            # every class shows the same two support drawers and the same three query drawers
            support, query = s_drw.reshape(ways, 2), q_drw.reshape(ways, 3)
            assert (support == support[0]).all() and (query == query[0]).all()
            assert len(set(support[0]) | set(query[0])) == 5
            np.testing.assert_array_equal(np.asarray(task.support_y), np.repeat(np.arange(ways), 2))
            if sample is within:
                assert len(set(alphabet[s_cls])) == 1
            pairs.add((tuple(support[0]), tuple(query[0])))
        assert len(pairs) == 20  # the drawers vary from episode to episode
    with pytest.raises(ValueError, match="shots \\+ queries|drawings"):
        drawer_paired_sampler(4, 10, 11)(jax.random.PRNGKey(0), images)


def test_proxy_runs_are_official_runs_of_the_evaluation_alphabets(omniglot28):
    images, alphabet, names = evaluation_alphabets(omniglot28)
    assert len(names) == 20 and images.shape[:2] == (659, 20)
    sample = proxy_runs_sampler(alphabet)
    flat = {x.tobytes(): (c, d) for c, per_class in enumerate(images) for d, x in
            enumerate(per_class)}
    for seed in range(3):
        task = sample(jax.random.PRNGKey(seed), images)
        assert task.support_x.shape == (20, 28, 28, 1) and task.query_x.shape == (20, 28, 28, 1)
        found = [[flat[np.round(np.asarray(x) * 255).astype(np.uint8).tobytes()] for x in xs]
                 for xs in (task.support_x, task.query_x)]
        (s_cls, s_drw), (q_cls, q_drw) = (zip(*f, strict=True) for f in found)
        assert len(set(s_cls)) == 20 and q_cls == s_cls  # one query per class, in label order
        assert len(set(alphabet[list(s_cls)])) == 1
        assert len(set(s_drw)) == 1 and len(set(q_drw)) == 1 and s_drw[0] != q_drw[0]


def test_alphabet_groups_are_alphabet_and_rotation():
    names = ["Greek/character01/rot000", "Greek/character02/rot000", "Greek/character01/rot090",
             "Latin/character01/rot000"]
    groups = alphabet_groups(names)
    assert groups[0] == groups[1] and len(set(groups[[0, 2, 3]])) == 3
    with pytest.raises(ValueError, match="no alphabet part"):
        alphabet_groups(["character01"])


def test_within_alphabet_training_episodes_on_the_background_alphabets(data_dir, omniglot28):
    from metajax.config import make_config
    from metajax.experiment import task_sources

    config = make_config("protonet", split="lake", train_ways=20, queries=1, within_alphabet=True,
                         data_dir=str(data_dir))
    sources, _ = task_sources(config)
    train = sources["train"]
    images = np.asarray(train.data)
    names = _lake_train_names(omniglot28)
    flat = images.reshape(images.shape[0] * images.shape[1], -1)
    where = {flat[i].tobytes(): i // images.shape[1] for i in range(len(flat))}
    for seed in range(3):
        task = train.sample(jax.random.PRNGKey(seed), train.data)
        support = np.asarray(task.support_x).reshape(20, -1)
        classes = {where[np.round(x * 255).astype(images.dtype).tobytes()] for x in support}
        assert len(classes) == 20
        groups = {(names[c].split("/")[0], names[c].rsplit("/", 1)[1]) for c in classes}
        assert len(groups) == 1, groups  # one alphabet, one rotation
    # drawer-paired within-alphabet training: one support drawer, one other query drawer
    paired, _ = task_sources(make_config("protonet", split="lake", train_ways=20, queries=1,
                                         within_alphabet=True, paired_drawers=True,
                                         data_dir=str(data_dir)))
    drawing = {flat[i].tobytes(): i % images.shape[1] for i in range(len(flat))}
    task = paired["train"].sample(jax.random.PRNGKey(0), paired["train"].data)
    found = [{drawing[np.round(x * 255).astype(images.dtype).tobytes()]
              for x in np.asarray(xs).reshape(20, -1)} for xs in (task.support_x, task.query_x)]
    assert len(found[0]) == 1 and len(found[1]) == 1 and found[0] != found[1]
    with pytest.raises(ValueError, match="cifar-fs has none"):
        make_config("protonet", dataset="cifar-fs", paired_drawers=True)
    with pytest.raises(ValueError, match="largest alphabet has only 55"):
        task_sources(make_config("protonet", split="lake", train_ways=60, within_alphabet=True,
                                 data_dir=str(data_dir)))
    with pytest.raises(ValueError, match="siamese trains on its own samples"):
        task_sources(make_config("siamese", split="lake", within_alphabet=True,
                                 data_dir=str(data_dir)))


def _lake_train_names(data):
    from metajax.data.omniglot import make_split

    return make_split(data, "lake").train.names


def test_the_proxy_benchmark_trains_each_recipe_beside_the_defaults():
    from conftest import load_benchmark

    from metajax.config import make_config

    proxy = load_benchmark("official_runs_proxy")
    runs = proxy.runs_of(["matching"], ["affine", "paired"], evaluate=None)
    assert [(r.method, r.run_folder) for r in runs] == [
        ("matching", "matching"), ("matching (affine)", "matching_affine"),
        ("matching (paired)", "matching_paired")]
    configs = [make_config(r.algo, **r.overrides) for r in runs]
    assert [(c.affine, c.within_alphabet, c.paired_drawers) for c in configs] == [
        (False, False, False), (True, False, False), (False, True, True)]
    assert all((c.ways, c.shots, c.split) == (20, 1, "lake") for c in configs)
    # only the defaults carry the goal (that configuration's figure on the official runs)
    assert [r.scores[0].goal is not None for r in runs] == [True, False, False]
