"""`benchmarks/maml_speed.py --dump-grad`: the float64 export of workload A (params, episode and
the order-1 and order-2 meta-gradients) is checked against an independent float64 implementation
(conv4 MAML written here with `jax.numpy`/`lax`, not metajax's learners) and against central finite
differences of the meta-loss. The PyTorch peers are checked against the same export by the
benchmark itself (`--check-only`), in their own environment.

The benchmark's own timing is not run here (it needs the peers' environment and minutes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parents[1]
WAYS, SHOTS, QUERIES, TASKS, WIDTH, INNER_LR = 3, 1, 2, 2, 8, 0.4


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("maml_dump")
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks/maml_speed.py"), "--dump-grad", str(out),
         "--impls", "none", "--meta-batch", str(TASKS), "--inner-steps", "1", "--ways", str(WAYS),
         "--shots", str(SHOTS), "--queries", str(QUERIES), "--width", str(WIDTH)],
        check=True, capture_output=True, text=True, timeout=300)
    return out


def load(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# --- an independent float64 conv4 MAML (NHWC / HWIO, as in the dump) -----------------------------

def conv4(p: dict, x):
    for i in range(4):
        x = jax.lax.conv_general_dilated(x, p[f"Conv_{i}/kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = x + p[f"Conv_{i}/bias"]
        mean = x.mean(axis=(0, 1, 2))
        var = ((x - mean) ** 2).mean(axis=(0, 1, 2))
        x = (x - mean) / jnp.sqrt(var + 1e-5) * p[f"BatchNorm_{i}/scale"] + p[f"BatchNorm_{i}/bias"]
        x = jnp.maximum(x, 0.0)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    x = x.reshape(x.shape[0], -1)
    return x @ p["Dense_0/kernel"] + p["Dense_0/bias"]


def xent(p, x, y):
    logits = conv4(p, x)
    logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    return -jnp.take_along_axis(logp, y[:, None], axis=1).mean()


def adapted(p, ep, t):
    g = jax.grad(xent)(p, ep["support_x"][t], ep["support_y"][t])
    return {k: p[k] - INNER_LR * g[k] for k in p}


def meta_loss_order2(p, ep):
    return jnp.mean(jnp.stack([xent(adapted(p, ep, t), ep["query_x"][t], ep["query_y"][t])
                               for t in range(TASKS)]))


def fo_loss(delta, fast, ep):
    """First-order MAML's objective: query losses at the (fixed) adapted weights, shifted."""
    return jnp.mean(jnp.stack([
        xent({k: fast[t][k] + delta[k] for k in delta}, ep["query_x"][t], ep["query_y"][t])
        for t in range(TASKS)]))


def flat(tree: dict, keys) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(tree[k])) for k in keys])


@pytest.mark.slow
def test_dump_layout(dump):
    params, episode, grads = (load(dump / f) for f in ("params.npz", "episode.npz", "grads.npz"))
    expected = {f"Conv_{i}/{n}" for i in range(4) for n in ("kernel", "bias")}
    expected |= {f"BatchNorm_{i}/{n}" for i in range(4) for n in ("scale", "bias")}
    expected |= {"Dense_0/kernel", "Dense_0/bias"}
    assert set(params) == expected
    assert params["Conv_0/kernel"].shape == (3, 3, 1, WIDTH)  # HWIO
    assert params["Conv_1/kernel"].shape == (3, 3, WIDTH, WIDTH)
    assert params["Dense_0/kernel"].shape == (WIDTH, WAYS)
    assert all(v.dtype == np.float64 for v in params.values())
    # batch norm perturbed from its init (scale 1, bias 0) so that its gradients are generic
    assert np.abs(params["BatchNorm_2/scale"] - 1).min() > 0
    assert np.abs(params["BatchNorm_2/bias"]).min() > 0
    assert episode["support_x"].shape == (TASKS, WAYS * SHOTS, 28, 28, 1)
    assert episode["query_x"].shape == (TASKS, WAYS * QUERIES, 28, 28, 1)
    assert episode["support_y"].shape == (TASKS, WAYS * SHOTS)
    assert episode["query_y"].shape == (TASKS, WAYS * QUERIES)
    assert set(grads) == {f"order{o}/{k}" for o in (1, 2) for k in (*expected, "meta_loss")}
    for k in expected:
        assert grads[f"order2/{k}"].shape == params[k].shape
        assert grads[f"order2/{k}"].dtype == np.float64


@pytest.mark.slow
def test_dump_against_finite_differences(dump):
    """The dump's meta-losses equal the independent forward's, and its gradients' projections on
    random directions equal central differences of the independent float64 meta-losses (order 2:
    through the inner step; order 1: the query losses at the adapted weights held fixed)."""
    params, episode, grads = (load(dump / f) for f in ("params.npz", "episode.npz", "grads.npz"))
    keys = sorted(params)
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v) for k, v in params.items()}
        ep = {k: jnp.asarray(v) for k, v in episode.items()}
        order2 = jax.jit(meta_loss_order2)
        fast = jax.jit(lambda p: [adapted(p, ep, t) for t in range(TASKS)])(p)
        order1 = jax.jit(fo_loss)
        zero = {k: jnp.zeros_like(v) for k, v in p.items()}
        assert float(grads["order2/meta_loss"]) == pytest.approx(float(order2(p, ep)), rel=1e-12)
        assert float(grads["order1/meta_loss"]) == pytest.approx(float(order1(zero, fast, ep)),
                                                                 rel=1e-12)
        # a small step: ReLU and max-pool kinks are crossed at 1e-5 per coordinate
        rng, eps = np.random.default_rng(0), 1e-7
        for _ in range(2):
            d = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()}
            fd2 = (order2({k: p[k] + eps * d[k] for k in p}, ep)
                   - order2({k: p[k] - eps * d[k] for k in p}, ep)) / (2 * eps)
            fd1 = (order1({k: eps * d[k] for k in d}, fast, ep)
                   - order1({k: -eps * d[k] for k in d}, fast, ep)) / (2 * eps)
            dd = flat(d, keys)
            g2 = flat(grads, [f"order2/{k}" for k in keys]) @ dd
            g1 = flat(grads, [f"order1/{k}" for k in keys]) @ dd
            assert float(fd2) == pytest.approx(float(g2), rel=1e-5)
            assert float(fd1) == pytest.approx(float(g1), rel=1e-5)
            # first and second order differ here, so swapped orders would fail above
            assert abs(g1 - g2) > 1e-3 * abs(g2)


@pytest.mark.slow
def test_dump_matches_independent_float64_gradient(dump):
    """The whole flattened gradient against the independent implementation's autodiff (goal:
    1e-9 relative). The reference max-pools with `lax.reduce_window` and loops over the tasks in
    Python: with a reshape+max max-pool, XLA:CPU (jax 0.10.2) gave a wrong second-order gradient
    with the tasks in `vmap`, and with them in `lax.map` or a loop when compiled without its fusion
    emitters (as the tests compile)."""
    params, episode, grads = (load(dump / f) for f in ("params.npz", "episode.npz", "grads.npz"))
    keys = sorted(params)

    def task_loss(p, task, first_order):
        sx, sy, qx, qy = task
        g = jax.grad(xent)(p, sx, sy)
        if first_order:
            g = jax.lax.stop_gradient(g)
        return xent({k: p[k] - INNER_LR * g[k] for k in p}, qx, qy)

    def meta_loss(p, ep, first_order):
        tasks = (ep["support_x"], ep["support_y"], ep["query_x"], ep["query_y"])
        return sum(task_loss(p, [t[i] for t in tasks], first_order)
                   for i in range(len(tasks[1]))) / len(tasks[1])

    with jax.enable_x64(True):
        p = {k: jnp.asarray(v) for k, v in params.items()}
        ep = {k: jnp.asarray(v) for k, v in episode.items()}
        for order in (1, 2):
            loss, g = jax.jit(jax.value_and_grad(meta_loss), static_argnums=2)(p, ep, order == 1)
            a, b = flat(grads, [f"order{order}/{k}" for k in keys]), flat(g, keys)
            assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-9, order
            assert float(grads[f"order{order}/meta_loss"]) == pytest.approx(float(loss), rel=1e-12)


def test_hlo_flops_counts_loop_bodies_by_trip_count():
    """Convolution FLOPs: equal to XLA's cost analysis without loops (2 x out x window x in,
    padding taps excluded), and T times one body's inside `lax.map` over T (where XLA's own
    count stays at one body)."""
    from metajax.bench.flops import hlo_flops

    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    x, k = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    single = jax.jit(conv).lower(x, k).compile()
    # valid taps per output row/column of a 3-tap SAME window on 6 positions: 2 + 3 * 4 + 2 = 16
    expected = 2 * 2 * 16 * 16 * 3 * 4
    assert hlo_flops(single.as_text()) == expected
    assert single.cost_analysis()["flops"] == pytest.approx(expected, rel=0.01)
    xs = jnp.ones((5, 2, 6, 6, 3))
    mapped = jax.jit(lambda xs: jax.lax.map(lambda x: conv(x, k), xs)).lower(xs).compile()
    assert hlo_flops(mapped.as_text()) == 5 * expected


def test_scaling_lines_ratios():
    """The scaling summary divides each time ratio by its size ratio (<= 1: at most linear) and
    compares compile times with the smallest size's, per series, on one device only."""
    report = load_benchmark("maml_speed_report")
    markdown, scaling_lines = report.markdown, report.scaling_lines

    def row(t, k, s, c, devices=1):  # the first call is the ahead-of-time compile and a step
        return {"scaling": True, "status": "ok", "devices": devices, "meta_batch": t,
                "inner_steps": k, "median_s": s, "aot_compile_s": c, "compile_s": c + s}

    rows = [row(1, 1, 0.1, 5.0), row(4, 1, 0.5, 5.0), row(32, 1, 2.0, 6.0), row(32, 10, 8.0, 9.0),
            row(32, 1, 9.9, 9.9, devices=2)]
    lines = {(q["what"], q["to"]): q for q in scaling_lines(rows)}
    assert set(lines) == {("meta-batch", 4), ("meta-batch", 32), ("inner steps", 10)}
    assert lines[("meta-batch", 4)]["per_unit"] == pytest.approx(1.25)  # 5x time for 4x tasks
    assert lines[("meta-batch", 32)]["per_unit"] == pytest.approx(20 / 32)
    assert lines[("inner steps", 10)]["per_unit"] == pytest.approx(0.4)
    assert lines[("inner steps", 10)]["compile_ratio"] == pytest.approx(1.5)  # 9 s / 6 s
    assert lines[("inner steps", 10)]["first_call_ratio"] == pytest.approx(17 / 8)
    rows[2]["aot_compile_all_s"] = rows[3]["aot_compile_all_s"] = [1.0, 2.0, 3.0]
    assert scaling_lines(rows)[-1]["compiles"] == 3
    text = markdown({"results": [], "ratios": [], "scaling": scaling_lines(rows),
                     "settings": {"workload": "A", "description": ""},
                     "machine": {"peak": {"assumptions": ""}}, "allocator_env": {}})
    assert "meta-batch 1 -> 4: step time 5.00x for 4x (1.25 per unit: MORE than linear)" in text
    assert "inner steps 1 -> 10: step time 4.00x for 10x (0.40 per unit: at most linear)" in text
    assert ("compile 1.50x (median of 3 compiles each; goal <= 1.5x: met; first call, compile "
            "and one step, 2.12x)") in text


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_compile_cache_and_compile_repeats(cache, tmp_path):
    """`--compile-cache warm`: the timed metajax process reads its step from the cache that a
    compile-only process wrote, and the results file says so (and compiles once: a cache hit is
    not a compile). Cold, `--compile-repeats 2` compiles twice from scratch, reporting both
    times and their median."""
    import json

    subprocess.run(
        [sys.executable, str(REPO / "benchmarks/maml_speed.py"), "--impls", "metajax",
         "--no-check", "--order", "2", "--meta-batch", "1", "--ways", str(WAYS), "--shots",
         str(SHOTS), "--queries", str(QUERIES), "--width", "4", "--repeats", "1",
         "--min-seconds", "0", "--warmup", "0", "--compile-cache", cache,
         "--compile-repeats", "2", "--results-dir", str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=300)
    (path,) = tmp_path.glob("maml_speed_A*.json")
    (row,) = json.loads(path.read_text())["results"]
    times = row["aot_compile_all_s"]
    if cache == "cold":
        # a second compile from scratch takes time too (not the executable JAX kept in memory)
        assert row["status"] == "ok" and len(times) == 2 and min(times) > 0.05
        assert row["aot_compile_s"] == pytest.approx(sum(times) / 2)
        return
    assert row["status"] == "ok" and row["compile_cache"] == "warm" and len(times) == 1
    assert row["step_from_compile_cache"] is True and row["cold_compile_s"] > 0
