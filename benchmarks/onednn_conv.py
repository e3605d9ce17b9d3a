"""Workload A's MAML meta-gradient with conv4's convolutions computed by oneDNN through `jax.ffi`.

Does a convolution library make the CPU step faster than the library's im2col convolution
(`metajax.nets.layers.conv_im2col`, one matmul that XLA runs on its YNN dot)?
`benchmarks/onednn_conv.cc` wraps oneDNN's forward, backward-data and backward-weights
convolutions as XLA FFI handlers; here each is a `custom_vjp` whose backward pass calls the other
two, so that second-order gradients work. Two layouts are timed: oneDNN computing on NHWC/HWIO
directly (`plain`), and oneDNN choosing its own blocked layouts, reordered from and to those
(`blocked`). Before timing, each variant's first- and second-order gradients of a random conv are
checked against `conv_im2col`'s (float32, relative error < 1e-4).

Needs g++ and oneDNN's CPU-only OpenMP build (the newer `onednn` wheels need a SYCL runtime):

    pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0
    python benchmarks/onednn_conv.py [--rounds 4] [--orders 2 1]

Times, in one process and alternating between the variants, the jitted meta-gradient of workload
A (conv4 width 64 with max-pool, 5-way 1-shot, 15 queries, meta-batch 32, one inner step, tasks
mapped), and prints each variant's median seconds per step and its ratio to im2col.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import report
from conv_impls import time_alternating, workload_a

from metajax.allocator import current_allocator, reexec_with_allocator
from metajax.learners.maml import maml
from metajax.nets import Conv4, layers
from metajax.training.trainer import meta_gradient

SOURCE = Path(__file__).with_name("onednn_conv.cc")
TARGETS = ("ConvForward", "ConvBackwardData", "ConvBackwardWeights")
IM2COL = layers.conv_im2col  # the library's convolution, replaced while a variant is traced


def build() -> Path:
    """Compiles `onednn_conv.cc` against the oneDNN of this environment (`sys.prefix`)."""
    prefix = Path(sys.prefix)
    if not (prefix / "include" / "dnnl.hpp").exists():
        raise SystemExit(f"oneDNN's headers are not in {prefix / 'include'}: pip install "
                         "onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0")
    out = Path(tempfile.mkdtemp(prefix="metajax-onednn-")) / "libonednn_conv.so"
    subprocess.run(["g++", "-O2", "-std=c++17", "-shared", "-fPIC", str(SOURCE),
                    f"-I{jax.ffi.include_dir()}", f"-I{prefix / 'include'}",
                    f"-L{prefix / 'lib'}", "-ldnnl", f"-Wl,-rpath,{prefix / 'lib'}", "-o",
                    str(out)], check=True, capture_output=True)
    return out


def register(library: Path) -> None:
    lib = ctypes.cdll.LoadLibrary(str(library))
    for name in TARGETS:
        jax.ffi.register_ffi_target(f"onednn_{name}", jax.ffi.pycapsule(getattr(lib, name)),
                                    platform="cpu")


def _call(name, shape, *args, stride, pads, blocked):
    (pt, pb), (pl, pr) = pads
    return jax.ffi.ffi_call(f"onednn_{name}", jax.ShapeDtypeStruct(shape, jnp.float32),
                            vmap_method="sequential")(
        *args, stride=np.int64(stride), pad_top=np.int64(pt), pad_bottom=np.int64(pb),
        pad_left=np.int64(pl), pad_right=np.int64(pr), blocked=np.int64(blocked))


def _out_shape(x_shape, w_shape, stride, pads):
    (n, h, w, _), (kh, kw, _, o) = x_shape, w_shape
    (pt, pb), (pl, pr) = pads
    return n, (h + pt + pb - kh) // stride + 1, (w + pl + pr - kw) // stride + 1, o


# The three are bilinear, and each one's transpose is another of them: forward's cotangents are
# backward-data and backward-weights, and so on, so any order of differentiation stays in oneDNN.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv(x, w, stride, pads, blocked):
    return _call("ConvForward", _out_shape(x.shape, w.shape, stride, pads), x, w,
                 stride=stride, pads=pads, blocked=blocked)


def _conv_bwd(stride, pads, blocked, res, g):
    x, w = res
    return (backward_data(g, w, x.shape, stride, pads, blocked),
            backward_weights(x, g, w.shape, stride, pads, blocked))


conv.defvjp(lambda x, w, *a: (conv(x, w, *a), (x, w)), _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def backward_data(dy, w, x_shape, stride, pads, blocked):
    return _call("ConvBackwardData", x_shape, dy, w, stride=stride, pads=pads, blocked=blocked)


def _data_bwd(x_shape, stride, pads, blocked, res, g):
    dy, w = res
    return conv(g, w, stride, pads, blocked), backward_weights(g, dy, w.shape, stride, pads,
                                                               blocked)


backward_data.defvjp(lambda dy, w, *a: (backward_data(dy, w, *a), (dy, w)), _data_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def backward_weights(x, dy, w_shape, stride, pads, blocked):
    return _call("ConvBackwardWeights", w_shape, x, dy, stride=stride, pads=pads,
                 blocked=blocked)


def _weights_bwd(w_shape, stride, pads, blocked, res, g):
    x, dy = res
    return backward_data(dy, g, x.shape, stride, pads, blocked), conv(x, g, stride, pads, blocked)


backward_weights.defvjp(lambda x, dy, *a: (backward_weights(x, dy, *a), (x, dy)), _weights_bwd)


def onednn(blocked: bool):
    """A drop-in for `layers.conv_im2col` computed by oneDNN."""
    def conv_fn(x, kernel, stride=1, padding="SAME"):
        if padding != "SAME":
            raise ValueError("this benchmark's oneDNN convolution is SAME only")
        pads = tuple(layers.same_padding(x.shape[i], kernel.shape[i - 1], stride) for i in (1, 2))
        return conv(x, kernel, stride, pads, int(blocked))
    return conv_fn


def _gradients(conv_fn, x, w, stride) -> list:
    """First- and second-order gradients (x and w) of a loss through one convolution."""
    def loss(x, w):
        return jnp.sum(jnp.sin(conv_fn(x, w, stride)) ** 2)

    def norm(x, w):
        return sum(jnp.sum(g ** 2) for g in jax.grad(loss, (0, 1))(x, w))

    return [*jax.grad(loss, (0, 1))(x, w), *jax.jit(jax.grad(norm, (0, 1)))(x, w)]


def check(conv_fn) -> float:
    """The largest relative error of `conv_fn`'s first- and second-order gradients against
    `conv_im2col`'s on random convolutions (1 and 8 input channels, stride 1 and 2)."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for shape, stride in (((4, 12, 12, 1), 1), ((3, 7, 7, 8), 2)):
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        w = jnp.asarray(rng.normal(size=(3, 3, shape[-1], 6)), jnp.float32)

        for a, b in zip(_gradients(conv_fn, x, w, stride),
                        _gradients(IM2COL, x, w, stride), strict=True):
            worst = max(worst, float(jnp.abs(a - b).max() / jnp.abs(b).max()))
    return worst


VARIANTS = (("im2col", None), ("oneDNN, plain layouts", False), ("oneDNN, blocked layouts", True))


def measure(order: int, rounds: int, meta_batch: int) -> list[dict]:
    tasks = workload_a(meta_batch)
    keys = jax.random.split(jax.random.PRNGKey(0), meta_batch)
    one = jax.tree.map(lambda a: a[0], tasks)
    rows, steps = [], {}
    try:
        for label, blocked in VARIANTS:
            layers.conv_im2col = IM2COL if blocked is None else onednn(blocked)
            learner = maml(Conv4(num_outputs=5), 0.4, 1, first_order=order == 1)
            params = learner.init(jax.random.PRNGKey(1), one)
            t0 = time.perf_counter()
            compiled = jax.jit(lambda p, learner=learner: meta_gradient(
                learner, p, tasks, keys, "auto")).lower(params).compile()
            compile_s = time.perf_counter() - t0
            jax.block_until_ready(compiled(params))  # one untimed step
            steps[label] = functools.partial(compiled, params)
            rows.append({"variant": label, "order": order, "meta_batch": meta_batch,
                         "compile_s": compile_s, "blocked": blocked})
    finally:
        layers.conv_im2col = IM2COL
    time_alternating(rows, steps, rounds, ratio_key="vs_im2col")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4, help="timed steps of each, alternating")
    p.add_argument("--orders", type=int, nargs="+", default=[2, 1], choices=[1, 2])
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--name", default="onednn_conv", help="results file name")
    args = p.parse_args()
    reexec_with_allocator()  # jemalloc or glibc tunables, as `metajax train` does
    register(build())
    t0 = time.time()
    rows = [r for order in args.orders for r in measure(order, args.rounds, args.meta_batch)]
    checks = {blocked: check(onednn(blocked)) for _, blocked in VARIANTS if blocked is not None}
    for r in rows:
        r["check_rel_err"] = checks.get(r["blocked"])
        if r["check_rel_err"] is not None and not r["check_rel_err"] < 1e-4:
            raise SystemExit(f"{r['variant']}: gradients differ from im2col's "
                             f"({r['check_rel_err']:.1e})")
    lines = ["| order | variant | median s/step | time vs im2col | gradient check (rel err) | "
             "compile s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['order']} | {r['variant']} | {r['median_s']:.3f} | {r['vs_im2col']:.3f} | "
              f"{'' if r['check_rel_err'] is None else format(r['check_rel_err'], '.1e')} | "
              f"{r['compile_s']:.1f} |" for r in rows]
    lines += ["", f"Workload A (conv4 64, max-pool, 5-way 1-shot, 15 queries, meta-batch "
              f"{args.meta_batch}, 1 inner step), jitted meta-gradient, tasks mapped; "
              f"{args.rounds} alternating rounds after one untimed step. oneDNN "
              f"{'.'.join(map(str, _onednn_version()))} (onednn-cpu-gomp), OpenMP threads as "
              "it sets them. 'time vs im2col' is the median of per-round ratios."]
    report(args.name, rows, lines, allocator=current_allocator(), wall_s=time.time() - t0)


def _onednn_version() -> tuple[int, ...]:
    lib = ctypes.cdll.LoadLibrary(str(Path(sys.prefix) / "lib" / "libdnnl.so"))

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                    ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint),
                    ("gpu_runtime", ctypes.c_uint)]

    lib.dnnl_version.restype = ctypes.POINTER(Version)
    v = lib.dnnl_version().contents
    return v.major, v.minor, v.patch


if __name__ == "__main__":
    main()
