"""Shared test set-up: the data directory (found as the library finds it: `$METAJAX_DATA_DIR`, else
`./data`) and a per-session decode cache, so Omniglot is decoded once per test run."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# One persistent XLA compilation cache per test run, shared by the xdist workers and the processes
# the tests start (CLI runs, notebook kernels): a program compiled again (the same training step in
# another test or process) is read back instead. Set before any test module imports jax; a fresh
# directory per run, so nothing carries over between runs. METAJAX_TEST_XLA_CACHE=0 turns it off.
# The process that made the directory (the xdist controller, whose workers inherit the variable,
# or a single pytest process) removes it at the end of the run.
_OWN_XLA_CACHE = None
if (os.environ.get("METAJAX_TEST_XLA_CACHE", "1") != "0"
        and "JAX_COMPILATION_CACHE_DIR" not in os.environ):
    _run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
    _cache = Path(tempfile.gettempdir()) / f"metajax-test-xla-{_run_id}"
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(_cache)
    if "PYTEST_XDIST_WORKER" not in os.environ:
        _OWN_XLA_CACHE = _cache


# The suite is bound by XLA compiling, so the tests compile for short runs: LLVM at optimisation
# level 1 (its default level is for long runs) and XLA:CPU's loop emitters instead of its newer
# fusion emitters, which compile more slowly. Both took less CPU time on compile- and compute-bound
# tests alike (`benchmarks/results/suite_time.md`); numerics are the same up to rounding, except
# where XLA:CPU miscompiles (test_maml_speed.py's reference max-pool says where it did).
# Set before any test module imports jax; the workers and the processes the tests start inherit
# them. METAJAX_TEST_XLA_OPT=default runs the tests with XLA's own settings, as users compile.
def with_xla_flag(flag: str) -> dict:
    """This process's environment with `flag` appended to `XLA_FLAGS` (a later flag wins)."""
    return {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()}


if (os.environ.get("METAJAX_TEST_XLA_OPT", "1") != "default"
        and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = with_xla_flag("--xla_backend_optimization_level=1")["XLA_FLAGS"]
if (os.environ.get("METAJAX_TEST_XLA_OPT", "1") != "default"
        and "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = with_xla_flag("--xla_cpu_use_fusion_emitters=false")["XLA_FLAGS"]


# The processes the tests run in (xdist workers, notebook kernels; CLI runs re-execute with it
# anyway) get the allocator `metajax train` uses: jemalloc if installed, else glibc's tunables
# (`metajax.allocator`). With glibc's defaults a quarter of a training test's CPU time went to the
# kernel handing freed pages back and faulting them in again (a black-box test: 9.5 of 43 CPU-s;
# 2.3 under jemalloc, 5.6 with the tunables). Set in the xdist controller before it starts the
# workers; METAJAX_ALLOCATOR=system leaves the allocator alone.
if "PYTEST_XDIST_WORKER" not in os.environ and not os.environ.get("METAJAX_ALLOCATOR_SET"):
    from metajax.allocator import ENV_VAR, allocator_env

    os.environ.update(allocator_env(os.environ.get(ENV_VAR, "auto")))


# The data directory as `metajax train` resolves it (`$METAJAX_DATA_DIR`, else `./data` under the
# directory pytest runs in, where README command 1 downloads Omniglot), made absolute and exported
# so the processes the tests start in other directories read the same files.
from metajax.data.download import data_dir_from  # noqa: E402

DATA_DIR = data_dir_from(None).resolve()
os.environ["METAJAX_DATA_DIR"] = str(DATA_DIR)


def pytest_unconfigure(config):
    if _OWN_XLA_CACHE is not None:
        shutil.rmtree(_OWN_XLA_CACHE, ignore_errors=True)


def compile_bound_env() -> dict:
    """Environment for a child process (notebook kernel, CLI run) whose time is mostly XLA
    compiling tiny programs: LLVM at optimisation level 0 compiles them 2-3x faster (the MANN
    notebook: 74 s -> 21 s), at the cost of slower arithmetic, so it is only for such processes
    (the learned-optimiser notebook, which computes more, got slower). Numerics are unchanged up to
    rounding."""
    return with_xla_flag("--xla_backend_optimization_level=0")


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    if "METAJAX_CACHE_DIR" not in os.environ:
        os.environ["METAJAX_CACHE_DIR"] = str(tmp_path_factory.mktemp("metajax_cache"))
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Omniglot's official files in the data directory, downloaded where missing as
    `metajax train` would; offline, the library's `DataError` says what to put where."""
    from metajax.data import fetch_omniglot

    fetch_omniglot(DATA_DIR)
    return DATA_DIR


@pytest.fixture(scope="session")
def omniglot28(data_dir, _session_cache):
    from metajax.data import load_omniglot

    return load_omniglot(28, data_dir=data_dir, download_missing=False)


def coded_images(classes: int = 12, drawings: int = 20, size: int = 4) -> np.ndarray:
    """Synthetic `[classes, drawings, size, size, 1]` uint8 arrays whose pixels encode
    (class, drawing): pixel [0, 0] = class, pixel [0, 1] = drawing."""
    x = np.zeros((classes, drawings, size, size, 1), np.uint8)
    x[:, :, 0, 0, 0] = np.arange(classes)[:, None]
    x[:, :, 0, 1, 0] = np.arange(drawings)[None, :]
    return x


BENCHMARKS = REPO / "benchmarks"


def load_benchmark(name: str):
    """`benchmarks/<name>.py` as the module `name`, as `python benchmarks/<name>.py` would import
    it, without putting benchmarks/ on `sys.path`: the benchmark modules it imports (`common`,
    `maml_speed_report`, ...) are loaded the same way first. Cached in `sys.modules`."""
    import ast
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    path = BENCHMARKS / f"{name}.py"
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module
                 and not node.level else [])
        for sibling in names:
            if sibling != name and (BENCHMARKS / f"{sibling}.py").exists():
                load_benchmark(sibling)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
