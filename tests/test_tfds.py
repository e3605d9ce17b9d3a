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

    via_tfds = load_omniglot_tfds(28, data_dir=data_dir, cache_dir=tmp_path)
    via_zips = load_omniglot(28, data_dir=data_dir, download_missing=False)
    assert via_tfds.names == via_zips.names
    np.testing.assert_array_equal(via_tfds.background, via_zips.background)
    np.testing.assert_array_equal(via_tfds.images, _sorted_drawings(via_zips.images))


def test_tfds_offline_needs_all_four_zips(tmp_path):
    from metajax.data.tfds import _local_builder

    (tmp_path / "omniglot").mkdir()
    with pytest.raises(DataError, match="images_background_small1.zip"):
        _local_builder(tfds, tmp_path, tmp_path / "tfds")
