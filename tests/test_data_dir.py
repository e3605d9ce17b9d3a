"""The data directory: the tests resolve it as the library does, and `fetch_omniglot` fetches
exactly the files the README lists into it."""

import os
from pathlib import Path

import pytest
from conftest import DATA_DIR

import metajax.data.omniglot as omniglot
from metajax.data import DataError, fetch_omniglot
from metajax.data.download import data_dir_from


def test_tests_use_the_library_data_dir():
    assert DATA_DIR == data_dir_from(None).resolve()
    assert os.environ["METAJAX_DATA_DIR"] == str(DATA_DIR)


def test_fetch_omniglot_downloads_the_official_files_where_missing(tmp_path, monkeypatch):
    fetched = []

    def fake_download(url, dest, what):
        fetched.append((url, dest.relative_to(tmp_path).as_posix()))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("line\n")
        return dest

    monkeypatch.setattr(omniglot, "download", fake_download)
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / "images_evaluation.zip").write_bytes(b"present")
    assert fetch_omniglot(tmp_path) == tmp_path / "omniglot"
    assert fetched == [
        ("https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip",
         "omniglot/images_background.zip"),
        *[(f"https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/"
           f"omniglot/splits/vinyals/{p}.txt", f"omniglot/splits/vinyals/{p}.txt")
          for p in ("train", "val", "test")],
    ]
    assert (tmp_path / "omniglot" / "images_evaluation.zip").read_bytes() == b"present"
    fetched.clear()
    fetch_omniglot(tmp_path)
    assert fetched == []  # nothing is fetched twice


def test_fetch_omniglot_offline_says_what_to_put_where(tmp_path):
    with pytest.raises(DataError, match=str(Path(tmp_path) / "omniglot" / "images_background.zip")):
        fetch_omniglot(tmp_path, download_missing=False)
