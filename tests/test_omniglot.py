"""Omniglot loader: split sizes, rotations, caching, and clear errors for missing or corrupt data."""

import shutil
import zipfile

import numpy as np
import pytest

from metajax.data import DataError, load_omniglot, make_split
from metajax.data import omniglot as omniglot_module


def test_all_characters_and_alphabets(omniglot28):
    assert omniglot28.images.shape == (1623, 20, 28, 28)
    assert omniglot28.images.dtype == np.uint8
    assert int(omniglot28.background.sum()) == 964
    assert int((~omniglot28.background).sum()) == 659
    # strokes bright on a dark background
    assert omniglot28.images.mean() < 64 and omniglot28.images.max() == 255


@pytest.mark.parametrize(
    "name,chars",
    [("maml", (1100, 100, 423)), ("vinyals", (1028, 172, 423)), ("lake", (964, 0, 659))],
)
def test_split_sizes_and_disjointness(omniglot28, data_dir, name, chars):
    split = make_split(omniglot28, name, data_dir=data_dir, download_missing=False)
    assert tuple(split.info["characters"].values()) == chars
    parts = [p for p in (split.train, split.val, split.test) if p is not None]
    for part in parts:
        assert part.images.shape[1:] == (20, 28, 28, 1)
        assert len(part) == 4 * len({n.rsplit("/", 1)[0] for n in part.names})
    characters = [{n.rsplit("/", 1)[0] for n in p.names} for p in parts]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert not characters[i] & characters[j]
    if name == "maml":
        assert chars[0] + chars[1] == 1200
    if name == "lake":
        assert all(omniglot28.background[omniglot28.names.index(n.rsplit("/", 1)[0])]
                   for n in split.train.names[::4])


def test_maml_split_is_fixed_by_its_seed(omniglot28, data_dir):
    a = make_split(omniglot28, "maml", seed=1)
    b = make_split(omniglot28, "maml", seed=1)
    c = make_split(omniglot28, "maml", seed=2)
    assert a.test.names == b.test.names and a.info["sha1"] == b.info["sha1"]
    assert a.test.names != c.test.names and a.info["seed"] == 1


def test_rotations_are_extra_classes(omniglot28, data_dir):
    split = make_split(omniglot28, "vinyals", data_dir=data_dir, download_missing=False)
    names = split.test.names[:4]
    assert [n[-6:] for n in names] == ["rot000", "rot090", "rot180", "rot270"]
    base = split.test.images[0, :, :, :, 0]
    for k in range(4):
        np.testing.assert_array_equal(split.test.images[k, :, :, :, 0], np.rot90(base, k, (1, 2)))


def _small_omniglot(tmp_path, src_dir, chars_per_zip=3):
    """A fixture data dir with the official layout, a few characters per zip."""
    dest = tmp_path / "data" / "omniglot"
    dest.mkdir(parents=True)
    for name in ("images_background.zip", "images_evaluation.zip"):
        with zipfile.ZipFile(src_dir / "omniglot" / name) as zin, \
                zipfile.ZipFile(dest / name, "w") as zout:
            chars = sorted({"/".join(m.split("/")[:3]) for m in zin.namelist()
                            if m.endswith(".png")})[:chars_per_zip]
            for m in zin.namelist():
                if m.endswith(".png") and "/".join(m.split("/")[:3]) in chars:
                    zout.writestr(m, zin.read(m))
    return tmp_path / "data"


def _no_decoding(monkeypatch):
    """From now on, opening an Omniglot zip or decoding a drawing fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the zips were read again instead of the cache")

    for name in ("open_zip", "_decode_zip", "decode_drawing"):
        monkeypatch.setattr(omniglot_module, name, refuse)


@pytest.mark.parametrize("size", [20, 28, 105])
def test_sizes_and_cache(tmp_path, data_dir, size, monkeypatch):
    small = _small_omniglot(tmp_path, data_dir)
    cache = tmp_path / "cache"
    data = load_omniglot(size, data_dir=small, cache_dir=cache, download_missing=False)
    assert data.images.shape == (6, 20, size, size)
    assert len(list(cache.glob("*.npz"))) == 1
    _no_decoding(monkeypatch)  # the second load reads the cache only
    again = load_omniglot(size, data_dir=small, cache_dir=cache, download_missing=False)
    np.testing.assert_array_equal(again.images, data.images)
    assert again.names == data.names and list(again.background) == list(data.background)


def test_second_full_load_reads_the_cache(omniglot28, data_dir, monkeypatch):
    _no_decoding(monkeypatch)  # the fixture's load decoded the zips and wrote the cache
    again = load_omniglot(28, data_dir=data_dir, download_missing=False)
    # np.array_equal: assert_array_equal takes half a second on these 25 MB
    assert np.array_equal(again.images, omniglot28.images) and again.names == omniglot28.names
    assert np.array_equal(again.background, omniglot28.background)


def test_missing_files_name_what_to_fetch(tmp_path):
    with pytest.raises(DataError, match="images_background.zip.*METAJAX_DATA_DIR"):
        load_omniglot(28, data_dir=tmp_path, download_missing=False)


def test_offline_download_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(omniglot_module, "OMNIGLOT_URL", "http://127.0.0.1:9/{name}")
    with pytest.raises(DataError, match="images_background.zip.*failed.*by hand"):
        load_omniglot(28, data_dir=tmp_path, cache_dir=tmp_path / "c")
    assert not list((tmp_path / "omniglot").glob("*.zip*"))  # no partial file left behind


def test_truncated_zip_is_a_clear_error(tmp_path, data_dir):
    dest = tmp_path / "omniglot"
    dest.mkdir()
    raw = (data_dir / "omniglot" / "images_background.zip").read_bytes()
    (dest / "images_background.zip").write_bytes(raw[: len(raw) // 2])
    shutil.copy(data_dir / "omniglot" / "images_evaluation.zip", dest)
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_omniglot(28, data_dir=tmp_path, cache_dir=tmp_path / "c", download_missing=False)


def test_corrupt_member_is_a_clear_error(tmp_path, data_dir):
    small = _small_omniglot(tmp_path, data_dir, chars_per_zip=1)
    path = small / "omniglot" / "images_evaluation.zip"
    with zipfile.ZipFile(path) as z:
        members = {m: z.read(m) for m in z.namelist()}
    first = sorted(m for m in members if m.endswith(".png"))[0]
    members[first] = b"not a png"
    with zipfile.ZipFile(path, "w") as z:
        for m, b in members.items():
            z.writestr(m, b)
    with pytest.raises(DataError, match="cannot read .*corrupt"):
        load_omniglot(28, data_dir=small, cache_dir=tmp_path / "c", download_missing=False)


def test_unknown_split_names_the_valid_ones(omniglot28):
    with pytest.raises(ValueError, match="maml, vinyals, lake"):
        make_split(omniglot28, "nope")
