"""On-device augmentation and normalisation (`metajax.data.augment`) against their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.data.augment import (
    augment_task,
    color_jitter,
    normalize,
    normalizer,
    random_crop,
    random_flip,
)
from metajax.types import Task


def _image(h=6, w=5):
    return jnp.asarray(np.random.default_rng(0).random((h, w, 3)), jnp.float32)


def test_random_crop_is_a_window_of_the_zero_padded_image():
    image = _image()
    padded = np.pad(np.asarray(image), ((2, 2), (2, 2), (0, 0)))
    offsets = set()
    for i in range(40):
        crop = np.asarray(random_crop(jax.random.PRNGKey(i), image, 2))
        assert crop.shape == image.shape
        found = [(t, s) for t in range(5) for s in range(5)
                 if np.array_equal(padded[t:t + 6, s:s + 5], crop)]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 10  # the window moves over the 5 x 5 offsets


def test_flip_mirrors_half_the_time_and_jitter_stays_in_range():
    image = _image()
    flips = [np.array_equal(random_flip(jax.random.PRNGKey(i), image), image[:, ::-1])
             for i in range(200)]
    assert 70 < sum(flips) < 130
    jittered = np.asarray(jax.vmap(lambda k: color_jitter(k, image))(
        jax.random.split(jax.random.PRNGKey(0), 50)))
    assert jittered.min() >= 0 and jittered.max() <= 1
    assert np.abs(jittered - np.asarray(image)).max() > 0.05
    np.testing.assert_allclose(color_jitter(jax.random.PRNGKey(0), image, 0.0), image, atol=1e-6)


def test_normalisation_and_task_transforms():
    x = jnp.full((2, 3, 3, 3), 0.5)
    np.testing.assert_allclose(normalize(x, (127.5,) * 3, (255.0,) * 3), 0.0, atol=1e-7)
    task = Task(x, jnp.arange(2), x, jnp.arange(2), num_classes=2)
    out = normalizer("cifar-fs")(task)
    mean, std = np.asarray([129.37731888, 124.10583864, 112.47758569]), np.asarray(
        [68.20947949, 65.43124043, 70.45866994])
    np.testing.assert_allclose(out.query_x[0, 0, 0], (0.5 - mean / 255) / (std / 255), rtol=1e-5)
    augmented = augment_task(jax.random.PRNGKey(0), task, pad=1)
    assert augmented.support_x.shape == x.shape and augmented.num_classes == 2
    with pytest.raises(ValueError, match="no normalisation statistics"):
        normalizer("omniglot")


def test_augment_is_refused_where_the_papers_have_no_setting(tmp_path, capsys):
    from metajax.cli import main

    code = main(["train", "protonet", "--augment", "--out", str(tmp_path / "r"), "--steps", "1",
                 "--no-progress"])
    assert code == 2 and "--augment: the papers' settings exist for" in capsys.readouterr().err


def test_affine_distorts_training_episodes_only(data_dir, omniglot28):
    """`--affine` applies Koch et al.'s distortions to each training episode's support and query
    images, one transformation per image, after sampling; labels, test episodes and other
    datasets are left alone or refused."""
    from metajax.config import make_config
    from metajax.data.affine import random_affine
    from metajax.experiment import task_sources

    def sources(**extra):
        return task_sources(make_config("matching", split="lake", train_ways=5, queries=2,
                                        data_dir=str(data_dir), **extra))[0]

    plain, distorted = sources(), sources(affine=True)
    key = jax.random.PRNGKey(3)
    task = distorted["train"].sample(key, distorted["train"].data)
    k_sample, k_affine = jax.random.split(key)
    base = plain["train"].sample(k_sample, plain["train"].data)
    k_support, k_query = jax.random.split(k_affine)
    np.testing.assert_allclose(task.support_x, random_affine(k_support, base.support_x), atol=1e-6)
    np.testing.assert_allclose(task.query_x, random_affine(k_query, base.query_x), atol=1e-6)
    np.testing.assert_array_equal(task.support_y, base.support_y)
    changed = np.abs(np.asarray(task.query_x) - np.asarray(base.query_x)).max(axis=(1, 2, 3))
    assert (changed > 0.1).sum() >= len(changed) // 2  # most images moved
    test = [s["test"].sample(key, s["test"].data) for s in (plain, distorted)]
    np.testing.assert_array_equal(test[0].query_x, test[1].query_x)
    with pytest.raises(ValueError, match="distortions are for Omniglot's drawings"):
        make_config("protonet", dataset="cifar-fs", affine=True)
    with pytest.raises(ValueError, match="--affine distorts N-way training episodes"):
        task_sources(make_config("finetune", split="lake", affine=True, data_dir=str(data_dir)))
