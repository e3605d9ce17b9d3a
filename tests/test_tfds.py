"""tensorflow-datasets as a source of the same Omniglot arrays (runs where the `tfds` extra is installed)."""

import numpy as np
import pytest

from metajax.data import DataError, load_omniglot

tfds = pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")


def _sorted_drawings(images):
    return np.stack([np.stack(sorted(c, key=lambda a: a.tobytes())) for c in images])


@pytest.mark.slow
def test_tfds_gives_the_same_arrays_as_the_zips(data_dir, tmp_path):
    from metajax.data.tfds import load_omniglot_tfds

    # offline from the background and evaluation zips alone (no small1/small2 zips)
    two = tmp_path / "data" / "omniglot"
    two.mkdir(parents=True)
    for name in ("images_background.zip", "images_evaluation.zip"):
        (two / name).symlink_to(data_dir / "omniglot" / name)
    via_tfds = load_omniglot_tfds(28, data_dir=two.parent, cache_dir=tmp_path)
    via_zips = load_omniglot(28, data_dir=data_dir, download_missing=False)
    assert via_tfds.names == via_zips.names
    np.testing.assert_array_equal(via_tfds.background, via_zips.background)
    np.testing.assert_array_equal(via_tfds.images, _sorted_drawings(via_zips.images))


def test_tfds_offline_needs_the_background_and_evaluation_zips(tmp_path):
    from metajax.data.tfds import _local_builder

    (tmp_path / "omniglot").mkdir()
    with pytest.raises(DataError, match=r"images_background\.zip, images_evaluation\.zip missing"):
        _local_builder(tfds, tmp_path, tmp_path / "tfds")
    (tmp_path / "omniglot" / "images_background.zip").touch()
    with pytest.raises(DataError, match=r": images_evaluation\.zip missing"):
        _local_builder(tfds, tmp_path, tmp_path / "tfds")
