"""The hand-written layers (im2col and Winograd convolutions, 2x2 max-pool with its own JVP)
against XLA's."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.nets import Conv, Conv4, conv_im2col, conv_winograd, max_pool_2x2


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("size", [7, 8])
def test_conv_im2col_equals_xla_convolution_and_its_gradient(stride, padding, size):
    kx, kk = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (2, size, size + 1, 3), jnp.float64)
    kernel = jax.random.normal(kk, (3, 3, 3, 5), jnp.float64)

    def xla(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def ours(x, kernel):
        return conv_im2col(x, kernel, stride, padding)

    chex.assert_trees_all_close(ours(x, kernel), xla(x, kernel), rtol=1e-12, atol=1e-12)
    def loss(f):
        return lambda x, k: jnp.sum(jnp.sin(f(x, k)))
    chex.assert_trees_all_close(jax.grad(loss(ours), (0, 1))(x, kernel),
                                jax.grad(loss(xla), (0, 1))(x, kernel), rtol=1e-11, atol=1e-11)


def _xla_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 7, 6, 2), (2, 5, 3, 1), (1, 1, 1, 2)])
def test_conv_winograd_equals_xla_convolution_to_second_order(shape):
    kx, kk, kv = jax.random.split(jax.random.PRNGKey(10), 3)
    x = jax.random.normal(kx, shape, jnp.float64)
    kernel = jax.random.normal(kk, (3, 3, shape[-1], 4), jnp.float64)
    chex.assert_trees_all_close(conv_winograd(x, kernel), _xla_conv(x, kernel),
                                rtol=1e-12, atol=1e-12)

    def loss(conv):
        return lambda x, k: jnp.sum(jnp.sin(conv(x, k)))

    chex.assert_trees_all_close(jax.grad(loss(conv_winograd), (0, 1))(x, kernel),
                                jax.grad(loss(_xla_conv), (0, 1))(x, kernel),
                                rtol=1e-11, atol=1e-11)
    # a Hessian-vector product: what second-order MAML differentiates
    v = jax.random.normal(kv, kernel.shape, jnp.float64)
    def hvp(conv):
        return jax.jvp(lambda k: jax.grad(loss(conv), 1)(x, k), (kernel,), (v,))[1]
    chex.assert_trees_all_close(hvp(conv_winograd), hvp(_xla_conv), rtol=1e-10, atol=1e-10)


def test_conv_winograd_rejects_other_kernels_strides_and_paddings():
    with pytest.raises(ValueError, match="3x3"):
        conv_winograd(jnp.zeros((1, 4, 4, 2)), jnp.zeros((5, 5, 2, 3)))
    x = jnp.zeros((1, 6, 6, 2))
    with pytest.raises(ValueError, match="winograd"):
        Conv(3, strides=2, impl="winograd").init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="winograd"):
        Conv(3, padding="VALID", impl="winograd").init(jax.random.PRNGKey(0), x)


def test_conv_im2col_rejects_mismatched_channels_and_unknown_padding():
    with pytest.raises(ValueError, match="kernel"):
        conv_im2col(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 3, 4)))
    with pytest.raises(ValueError, match="padding"):
        conv_im2col(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 4)), padding="FULL")


def test_conv_module_has_flax_parameters_and_both_impls_agree():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 3), jnp.float64)
    ours = Conv(4, strides=2)
    params = ours.init(jax.random.PRNGKey(2), x)
    ref = nn.Conv(4, (3, 3), strides=2, padding="SAME", param_dtype=jnp.float64)
    chex.assert_trees_all_equal_shapes(params, ref.init(jax.random.PRNGKey(2), x))
    chex.assert_trees_all_close(ours.apply(params, x), ref.apply(params, x), rtol=1e-12)
    chex.assert_trees_all_close(Conv(4, strides=2, impl="xla").apply(params, x),
                                ref.apply(params, x), rtol=1e-12)
    with pytest.raises(ValueError, match="impl"):
        Conv(4, impl="fft").init(jax.random.PRNGKey(2), x)


def _reference_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


@pytest.mark.parametrize("shape", [(2, 6, 6, 3), (3, 2, 7, 5, 2)])
def test_max_pool_equals_flax_in_value_and_gradient(shape):
    x = jax.random.normal(jax.random.PRNGKey(3), shape, jnp.float64)
    flat = x.reshape(-1, *shape[-3:])
    ref = _reference_pool(flat).reshape(*shape[:-3], *_reference_pool(flat).shape[1:])
    chex.assert_trees_all_close(max_pool_2x2(x), ref)
    w = jax.random.normal(jax.random.PRNGKey(4), ref.shape, jnp.float64)
    g = jax.grad(lambda x: jnp.sum(w * max_pool_2x2(x)))(x)
    g_ref = jax.grad(lambda x: jnp.sum(w.reshape(-1, *w.shape[-3:])
                                       * _reference_pool(x.reshape(flat.shape))))(x)
    chex.assert_trees_all_close(g, g_ref)


def test_max_pool_ties_send_the_gradient_to_the_first_maximum_only():
    x = jnp.ones((1, 2, 2, 1), jnp.float64)
    g = jax.grad(lambda x: jnp.sum(max_pool_2x2(x)))(x)
    np.testing.assert_array_equal(np.asarray(g)[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])
    x = jnp.array([0.0, 3.0, 1.0, 3.0], jnp.float64).reshape(1, 2, 2, 1)
    g = jax.grad(lambda x: jnp.sum(max_pool_2x2(x)))(x)
    np.testing.assert_array_equal(np.asarray(g)[0, :, :, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_max_pool_forward_mode_and_second_order_match_finite_differences():
    x = jax.random.normal(jax.random.PRNGKey(5), (1, 4, 4, 2), jnp.float64)
    v = jax.random.normal(jax.random.PRNGKey(6), x.shape, jnp.float64)
    def f(x):
        return jnp.sum(jnp.tanh(max_pool_2x2(jnp.sin(x))) ** 2)
    _, tangent = jax.jvp(f, (x,), (v,))
    eps = 1e-6
    chex.assert_trees_all_close(tangent, (f(x + eps * v) - f(x - eps * v)) / (2 * eps), rtol=1e-7)
    hvp = jax.jvp(jax.grad(f), (x,), (v,))[1]
    fd = (jax.grad(f)(x + eps * v) - jax.grad(f)(x - eps * v)) / (2 * eps)
    chex.assert_trees_all_close(hvp, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("conv", ["im2col", "winograd"])
def test_conv4_gradient_is_the_same_jitted_and_eager_and_as_with_xla_convolutions(conv):
    x = jax.random.normal(jax.random.PRNGKey(7), (4, 28, 28, 1), jnp.float64)
    net = Conv4(width=8, num_outputs=5, conv=conv)
    params = net.init(jax.random.PRNGKey(8), x)
    def loss(p, n):
        return jnp.sum(jnp.sin(n.apply(p, x)))
    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g = grad(params, net)
    chex.assert_trees_all_close(grad(params, Conv4(width=8, num_outputs=5, conv="xla")), g,
                                rtol=1e-10, atol=1e-12)
    if conv == "im2col":  # op-by-op (eager) execution is slow; checking one impl is enough
        chex.assert_trees_all_close(jax.grad(loss)(params, net), g, rtol=1e-10, atol=1e-12)
