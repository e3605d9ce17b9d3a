"""Small building blocks shared by the networks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
    """Batch normalisation with the statistics of the current batch only (no running averages).

    This is the transductive batch norm of MAML's code: inside an episode the support set (and,
    separately or jointly, the query set) is normalised with its own mean and variance, at training
    and at test time alike. It keeps the network a pure function of (params, inputs): no mutable
    state goes in or out. Statistics are taken over every axis but the last (features).
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, VALID padding, on `[..., H, W, C]` (odd edges are dropped).

    Written on a `[..., H/2, 2, W/2, 2, C]` view with a hand-written JVP that selects the tangent
    at the first maximum of each window (ties go to the first, top-left to bottom-right, as in
    PyTorch). Its transpose (the gradient) is one elementwise pass. XLA's own
    gradients of `reduce_window` or of four strided slices scatter through interior padding and
    were the largest single cost of a conv4 MAML step on XLA:CPU (measured 133 of ~1100 ms of op
    time at meta-batch 8); this form made the step 1.2x faster. Forward and reverse mode
    of any order work (a custom JVP, not a custom VJP), under `vmap` too.
    """
    *_, h, w, _ = x.shape
    return _max_pool_2x2(x[..., : 2 * (h // 2), : 2 * (w // 2), :])


def _corners(x: jax.Array) -> tuple[jax.Array, ...]:
    """The four elements of each 2x2 window, top-left, top-right, bottom-left, bottom-right."""
    *lead, h, w, c = x.shape
    v = x.reshape(*lead, h // 2, 2, w // 2, 2, c)
    return v[..., 0, :, 0, :], v[..., 0, :, 1, :], v[..., 1, :, 0, :], v[..., 1, :, 1, :]


def _pick_max(x: jax.Array, *values: jax.Array) -> tuple[jax.Array, ...]:
    """Each of `values` (shaped like `x`) at the position of the first maximum of each window of
    `x`. Primal and tangent are selected by the same comparisons, so they always agree, even where
    XLA recomputes `x` with different rounding in different fusions (comparing `x` with a
    separately computed maximum does not survive that)."""
    a, b, c, d = _corners(x)
    first = (a >= b) & (a >= c) & (a >= d)
    second = ~first & (b >= c) & (b >= d)
    third = ~first & ~second & (c >= d)

    def pick(v):
        va, vb, vc, vd = _corners(v)
        return jnp.where(first, va, jnp.where(second, vb, jnp.where(third, vc, vd)))

    return tuple(pick(v) for v in values)


@jax.custom_jvp
def _max_pool_2x2(x: jax.Array) -> jax.Array:
    return _pick_max(x, x)[0]


@_max_pool_2x2.defjvp
def _max_pool_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _pick_max(x, x, dx)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding (low, high) of one spatial axis: output `ceil(size / stride)`."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_im2col(x: jax.Array, kernel: jax.Array, stride: int = 1,
                padding: str = "SAME") -> jax.Array:
    """2-D convolution as one matrix product: `[B, H, W, C]` x HWIO kernel -> `[B, H', W', O]`.

    The `kh * kw` shifted (and strided) views of the padded input are concatenated along the
    channels (im2col) and multiplied by the kernel reshaped to `[kh * kw * C, O]`. Same result
    as `lax.conv_general_dilated` (NHWC, HWIO) up to float rounding. Why: when every task of a
    meta-batch has its own weights (MAML), `vmap` turns a convolution into a grouped convolution,
    which XLA:CPU runs slowly (conv4 MAML at meta-batch 8: 9.6 s per step mapped task by task, 1.1 s
    as vmapped batched matmuls); a batched matmul is fast everywhere and its autodiff (any order)
    is plain slicing and matmuls. Meant for small kernels (3x3): the patches are `kh * kw` times
    the input.
    """
    if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != x.shape[-1]:
        raise ValueError(f"conv_im2col expects x [B, H, W, C] and kernel [kh, kw, C, O]; got "
                         f"{x.shape} and {kernel.shape}")
    kh, kw, c, o = kernel.shape
    b, h, w, _ = x.shape
    if padding == "SAME":
        pads = (same_padding(h, kh, stride), same_padding(w, kw, stride))
    elif padding == "VALID":
        pads = ((0, 0), (0, 0))
    else:
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    oh = (xp.shape[1] - kh) // stride + 1
    ow = (xp.shape[2] - kw) // stride + 1
    patches = jnp.concatenate(
        [xp[:, dy: dy + stride * (oh - 1) + 1: stride, dx: dx + stride * (ow - 1) + 1: stride]
         for dy in range(kh) for dx in range(kw)], axis=-1)
    out = patches.reshape(b * oh * ow, kh * kw * c) @ kernel.reshape(kh * kw * c, o)
    return out.reshape(b, oh, ow, o)


class Conv(nn.Module):
    """A 2-D convolution with the parameters of `flax.linen.Conv` (`kernel` HWIO, `bias`, same
    initialisers and names), computed by `conv_im2col` (`impl="im2col"`, default) or by XLA's
    convolution (`impl="xla"`)."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: int = 1
    padding: str = "SAME"
    impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (*self.kernel_size, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        dtype = jnp.result_type(x, kernel)
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        if self.impl == "im2col":
            y = conv_im2col(x, kernel, self.strides, self.padding)
        elif self.impl == "xla":
            y = jax.lax.conv_general_dilated(x, kernel, (self.strides, self.strides), self.padding,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        else:
            raise ValueError(f"impl must be 'im2col' or 'xla', got {self.impl!r}")
        return y + bias
