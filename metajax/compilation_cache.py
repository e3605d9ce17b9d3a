"""JAX's persistent compilation cache for the `metajax` command: a resumed or repeated run reads
its compiled training step back from disk instead of compiling it again (10-16 s for conv4 MAML on
a 2-core CPU), and the process never holds the compiler's memory.

`metajax` turns it on (a library import never does) in `<cache dir>/xla` (`$METAJAX_CACHE_DIR`,
else ~/.cache/metajax), holding at most `MAX_BYTES` (least recently used entries go first), unless
JAX's own `$JAX_COMPILATION_CACHE_DIR` already names a cache, which is then used as JAX set it up.
`METAJAX_XLA_CACHE=0` turns it off. Entries are keyed by the program, the XLA flags, the JAX
version and the device, so a stale entry is never used.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

ENV_VAR = "METAJAX_XLA_CACHE"
MAX_BYTES = 4 * 2**30


def compilation_cache_dir() -> Path | None:
    """Where `metajax` keeps compiled programs, or None when `METAJAX_XLA_CACHE=0`."""
    if os.environ.get(ENV_VAR, "1") == "0":
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    from metajax.data.download import cache_dir_from

    return cache_dir_from(None) / "xla"


def enable_compilation_cache() -> Path | None:
    """Turns JAX's persistent compilation cache on in `compilation_cache_dir()`; returns it."""
    path = compilation_cache_dir()
    if path is None:
        return None
    import jax

    if jax.config.jax_compilation_cache_dir:
        # set by the user (JAX_COMPILATION_CACHE_DIR) or by an earlier call in this process: the
        # cache may already be in use, and changing its settings now would break its bookkeeping
        return Path(jax.config.jax_compilation_cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only home, say: run without the cache rather than fail
        warnings.warn(f"no compilation cache ({error}); set METAJAX_CACHE_DIR to a writable "
                      f"directory or METAJAX_XLA_CACHE=0", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
