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

    Written on a `[..., H/2, 2, W/2, 2, C]` view with a hand-written JVP: the tangent is the input
    tangent masked to the first maximum of each window (ties go to the first, top-left to
    bottom-right, as in PyTorch) and summed over the window, so the gradient is one elementwise
    select of the broadcast output gradient. Why: XLA's own gradients of `reduce_window` or of
    four strided slices scatter through interior padding, a large share of a conv4 MAML step's op
    time; picking the tangent among the four corner slices made the
    gradient a sum of four padded arrays, which XLA fused with the next convolution's input
    gradient and ran unvectorised, once per pooled input (the largest op of workload A's step).
    The mask form is faster (`benchmarks/results/conv_impls.md`, alternating in one process).
    Forward and reverse mode of any order work (a custom JVP, not a custom VJP), under `vmap` too.
    """
    *_, h, w, _ = x.shape
    return _max_pool_2x2(x[..., : 2 * (h // 2), : 2 * (w // 2), :])


def _corners(x: jax.Array) -> tuple[jax.Array, ...]:
    """The four elements of each 2x2 window, top-left, top-right, bottom-left, bottom-right."""
    v = _windows(x)
    return v[..., 0, :, 0, :], v[..., 0, :, 1, :], v[..., 1, :, 0, :], v[..., 1, :, 1, :]


def _windows(x: jax.Array) -> jax.Array:
    """`[..., H, W, C]` -> the `[..., H/2, 2, W/2, 2, C]` view of its 2x2 windows."""
    *lead, h, w, c = x.shape
    return x.reshape(*lead, h // 2, 2, w // 2, 2, c)


def _first_max_mask(x: jax.Array) -> jax.Array:
    """`[..., H/2, 2, W/2, 2, C]` booleans, true at the first maximum of each 2x2 window of `x`
    (ties go to the first, top-left to bottom-right, as in PyTorch)."""
    a, b, c, d = _corners(x)
    first = (a >= b) & (a >= c) & (a >= d)
    second = (b >= c) & (b >= d)
    third = c >= d
    index = jnp.where(first, 0, jnp.where(second, 1, jnp.where(third, 2, 3))).astype(jnp.int8)
    position = jnp.arange(4, dtype=jnp.int8).reshape(2, 1, 2, 1)  # 2 * row + column
    return index[..., :, None, :, None, :] == position


@jax.custom_jvp
def _max_pool_2x2(x: jax.Array) -> jax.Array:
    return jnp.max(_windows(x), axis=(-4, -2))


@_max_pool_2x2.defjvp
def _max_pool_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    picked = jnp.where(_first_max_mask(x), _windows(dx), jnp.zeros((), dx.dtype))
    return _max_pool_2x2(x), jnp.sum(picked, axis=(-4, -2))


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
    which XLA:CPU runs slowly (`benchmarks/results/conv_impls.md`); a batched matmul is fast
    everywhere and its autodiff (any order) is plain slicing and matmuls. Meant for small kernels
    (3x3): the patches are `kh * kw` times the input.
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


def _winograd_rows(d0, d1, d2, d3):
    """`B^T d` of Winograd F(2, 3) for one axis: four input rows -> four transformed rows."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


def _winograd_out(m0, m1, m2, m3):
    """`A^T m` of Winograd F(2, 3) for one axis: four transformed rows -> two output rows."""
    return m0 + m1 + m2, m1 - m2 - m3


def conv_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3, stride-1, SAME convolution by Winograd's minimal filtering F(2x2, 3x3).

    `[B, H, W, C]` x HWIO `[3, 3, C, O]` -> `[B, H, W, O]`, the same result as
    `lax.conv_general_dilated` up to float rounding. Each 2x2 block of outputs is computed from
    its 4x4 input tile with 16 multiplications per (input, output) channel pair instead of 36:
    the tiles are transformed (`B^T d B`, additions only), the kernel is transformed
    (`G g G^T`), the 16 transformed positions are multiplied as one batched matmul
    `[16, tiles, C] x [16, C, O]`, and the products are transformed back (`A^T m A`). Why: a
    conv4 MAML step is dominated by the 64-to-64-channel 3x3 convolutions and their gradients;
    this cuts their multiplications 2.25x (fewer for odd sizes, whose last tile is padded).
    The tiles are cut from a `[B, H/2, 2, W/2, 2, C]` view, so every step and its derivatives
    of any order are slices, pads, additions and batched matmuls (no interior-padded scatters).
    Measured on XLA:CPU (`benchmarks/conv_impls.py`): it halves XLA's FLOP count of a conv4 MAML
    step but takes 1.5x im2col's time, its transforms being memory-bound passes; so it is an
    option, not the default.
    """
    if x.ndim != 4 or kernel.shape[:3] != (3, 3, x.shape[-1]) or kernel.ndim != 4:
        raise ValueError(f"conv_winograd expects x [B, H, W, C] and a 3x3 kernel [3, 3, C, O]; "
                         f"got {x.shape} and {kernel.shape}")
    b, h, w, c = x.shape
    o = kernel.shape[-1]
    th, tw = -(-h // 2), -(-w // 2)
    # SAME padding of 1 on each side, plus one more row/column where the size is odd
    xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
    v = xp.reshape(b, th + 1, 2, 2 * tw + 2, c)
    # input row i of tile t is padded row 2t + i: block t + i // 2, offset i % 2
    rows = _winograd_rows(v[:, :th, 0], v[:, :th, 1], v[:, 1:, 0], v[:, 1:, 1])
    tiles = []
    for r in rows:                                    # r: [B, th, 2 tw + 2, C]
        u = r.reshape(b, th, tw + 1, 2, c)
        tiles += _winograd_rows(u[:, :, :tw, 0], u[:, :, :tw, 1], u[:, :, 1:, 0], u[:, :, 1:, 1])
    d = jnp.stack(tiles).reshape(16, b * th * tw, c)
    g = jnp.asarray([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
                    kernel.dtype)
    u = jnp.einsum("ai,bj,ijco->abco", g, g, kernel).reshape(16, c, o)
    m = jnp.einsum("ptc,pco->pto", d, u).reshape(4, 4, b, th, tw, o)
    cols = [_winograd_out(*m[i]) for i in range(4)]   # cols[i][j]: [B, th, tw, O]
    y = [_winograd_out(*(cols[i][j] for i in range(4))) for j in range(2)]  # y[j][i]
    y = jnp.stack([jnp.stack([y[0][0], y[1][0]], axis=3),
                   jnp.stack([y[0][1], y[1][1]], axis=3)], axis=2)  # [B, th, 2, tw, 2, O]
    return y.reshape(b, 2 * th, 2 * tw, o)[:, :h, :w]


class Conv(nn.Module):
    """A 2-D convolution with the parameters of `flax.linen.Conv` (`kernel` HWIO, `bias`, same
    initialisers and names), computed by `conv_im2col` (`impl="im2col"`, default), by Winograd's
    F(2x2, 3x3) (`impl="winograd"`: 3x3 kernels, stride 1, SAME only) or by XLA's convolution
    (`impl="xla"`)."""

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
        elif self.impl == "winograd":
            if self.kernel_size != (3, 3) or self.strides != 1 or self.padding != "SAME":
                raise ValueError("impl='winograd' computes 3x3, stride-1, SAME convolutions; got "
                                 f"kernel {self.kernel_size}, stride {self.strides}, "
                                 f"padding {self.padding!r}")
            y = conv_winograd(x, kernel)
        elif self.impl == "xla":
            y = jax.lax.conv_general_dilated(x, kernel, (self.strides, self.strides), self.padding,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        else:
            raise ValueError(f"impl must be 'im2col', 'winograd' or 'xla', got {self.impl!r}")
        return y + bias
