"""The persistent compilation cache that `metajax` turns on: where it goes, the opt-out, and that a
second process reads a compiled program back instead of compiling it."""

import json
import os
import subprocess
import sys

from metajax.compilation_cache import ENV_VAR, compilation_cache_dir

# Compiles one program (min compile time 0, so even a small one is cached) and reports the cache
# directory and JAX's count of persistent-cache hits.
CHILD = """
import json, jax, jax.numpy as jnp
from jax import monitoring
from metajax.compilation_cache import enable_compilation_cache
hits = []
monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
path = enable_compilation_cache()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
f = jax.jit(lambda x: jnp.tanh(x) @ x.T + jnp.sin(x).sum())
f(jnp.ones((16, 16))).block_until_ready()
print(json.dumps({"path": str(path), "hits": len(hits)}))
"""


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert compilation_cache_dir() == tmp_path / "c" / "xla"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "j"))
    assert compilation_cache_dir() == tmp_path / "j"
    monkeypatch.setenv(ENV_VAR, "0")
    assert compilation_cache_dir() is None


def test_a_second_process_reads_the_compiled_program_back(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", ENV_VAR)}
    env["METAJAX_CACHE_DIR"] = str(tmp_path)

    def child():
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                             text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    first = child()
    assert first == {"path": str(tmp_path / "xla"), "hits": 0}
    cached = [p for p in (tmp_path / "xla").iterdir() if p.name.endswith("-cache")]
    assert cached  # the jitted function and the small programs that made its input
    assert child()["hits"] == len(cached)
    env[ENV_VAR] = "0"
    assert child() == {"path": "None", "hits": 0}


def test_an_unwritable_cache_dir_warns_and_runs_without(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", ENV_VAR)}
    env["METAJAX_CACHE_DIR"] = str(blocker)  # <cache dir>/xla cannot be made under a file
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"path": "None", "hits": 0}
    assert "no compilation cache" in out.stderr
