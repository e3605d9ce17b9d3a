"""ResNet-12: its parameter count written out by hand (12.4M, as Lee et al. report), batch norm's
two modes, and a learner built on it from the command line's settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.config import make_config
from metajax.nets import ResNet12
from metajax.registry import build_learner
from metajax.types import Task


def _by_hand(widths, channels=3):
    total, c_in = 0, channels
    for c in widths:
        convs = (9 * c_in * c + c) + 2 * (9 * c * c + c) + (c_in * c + c)  # 3x3 x3, 1x1 shortcut
        total += convs + 4 * 2 * c  # four batch norms, scale and bias
        c_in = c
    return total


def test_parameter_count_is_the_papers():
    x = jax.ShapeDtypeStruct((2, 84, 84, 3), jnp.float32)
    variables = jax.eval_shape(ResNet12().init, jax.random.PRNGKey(0), x)
    count = sum(a.size for a in jax.tree.leaves(variables["params"]))
    assert count == _by_hand((64, 160, 320, 640)) and round(count / 1e6, 1) == 12.4
    for pool, features in (("avg", 640), ("flatten", 5 * 5 * 640)):
        out = jax.eval_shape(lambda v, a, p=pool: ResNet12(pool=p).apply(v, a, train=False),
                             variables, x)
        assert out.shape == (2, features)


@pytest.mark.slow
def test_running_averages_at_test_and_batch_statistics_in_training():
    net = ResNet12(widths=(4, 8, 8, 8))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 16, 16, 3)), jnp.float32)
    variables = jax.jit(net.init)(jax.random.PRNGKey(0), x)
    test = jax.jit(lambda v, a: net.apply(v, a, train=False))
    training = jax.jit(lambda v, a: net.apply(v, a, train=True, mutable=["batch_stats"]))
    # test mode: an example's features do not depend on the rest of the batch
    np.testing.assert_allclose(test(variables, x)[:2], test(variables, x[:2]), rtol=1e-5,
                               atol=1e-6)
    # training mode: they do, and the running averages move
    out, updates = training(variables, x)
    assert not np.allclose(out[:2], training(variables, x[:2])[0], atol=1e-4)
    assert not np.allclose(jax.tree.leaves(updates)[0], jax.tree.leaves(variables["batch_stats"])[0])
    with pytest.raises(ValueError, match="too small"):
        net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


def test_protonet_r2d2_metaoptnet_take_the_resnet12_backbone():
    task = Task(jnp.zeros((5, 32, 32, 3)), jnp.arange(5), jnp.zeros((10, 32, 32, 3)),
                jnp.repeat(jnp.arange(5), 2), num_classes=5)
    for algo in ("protonet", "r2d2", "metaoptnet"):
        learner = build_learner(make_config(algo, backbone="resnet12"))
        variables = jax.eval_shape(learner.init, jax.random.PRNGKey(0), task)
        assert "batch_stats" in variables
        assert jax.eval_shape(learner.predict, variables, task, None).shape == (10, 5)
    with pytest.raises(ValueError, match="has its own"):
        build_learner(make_config("protonet", backbone="resnet12", width=32))
