"""The allocator that `metajax` re-executes itself with."""

import os
import subprocess
import sys

import pytest

from metajax.allocator import GLIBC_TUNABLES, allocator_env, find_jemalloc

REEXEC = "from metajax.allocator import reexec_with_allocator as r; r(['-m', 'metajax.allocator'])"


def _run(choice):
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", "METAJAX_ALLOCATOR_SET")}
    env["METAJAX_ALLOCATOR"] = choice
    return subprocess.run([sys.executable, "-c", REEXEC], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_allocator_env_choices():
    assert allocator_env("system") == {}
    assert allocator_env("glibc") == {"GLIBC_TUNABLES": GLIBC_TUNABLES}
    auto = allocator_env("auto")
    if find_jemalloc():
        assert find_jemalloc() in auto["LD_PRELOAD"] and "MALLOC_CONF" in auto
    else:
        assert auto == {"GLIBC_TUNABLES": GLIBC_TUNABLES}
        with pytest.raises(ValueError, match="libjemalloc"):
            allocator_env("jemalloc")
    with pytest.raises(ValueError, match="METAJAX_ALLOCATOR"):
        allocator_env("tcmalloc")


@pytest.mark.slow
def test_reexec_sets_the_allocator_once_and_system_opts_out():
    # re-executed: the child module runs and reports what it got
    assert _run("glibc") == "glibc (tunables)"
    assert _run("auto") == ("jemalloc" if find_jemalloc() else "glibc (tunables)")
    # opted out: no re-execution, so the child module never runs
    assert _run("system") == ""
