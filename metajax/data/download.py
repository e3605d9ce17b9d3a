"""Fetching dataset files from their official sources, with a progress bar and clear offline errors."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm


class DataError(RuntimeError):
    """A dataset file is missing, cannot be downloaded, or is corrupt. The message says what to do."""


def data_dir_from(data_dir: str | os.PathLike | None) -> Path:
    """Resolves the data directory: the argument, else `$METAJAX_DATA_DIR`, else `./data`."""
    if data_dir is None:
        data_dir = os.environ.get("METAJAX_DATA_DIR", "data")
    return Path(data_dir).expanduser()


def cache_dir_from(cache_dir: str | os.PathLike | None) -> Path:
    """Resolves the cache directory: the argument, else `$METAJAX_CACHE_DIR`, else ~/.cache/metajax."""
    if cache_dir is None:
        cache_dir = os.environ.get("METAJAX_CACHE_DIR", Path.home() / ".cache" / "metajax")
    return Path(cache_dir).expanduser()


def download(url: str, dest: Path, what: str) -> Path:
    """Downloads `url` to `dest` (via a temporary file) with a progress bar.

    Raises:
      DataError: when the download fails (for example offline), naming the file and where to put it.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, tqdm(
                total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}"
            ) as bar:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"{what}: {dest} is missing and downloading it from {url} failed ({e}). "
            f"Download it by hand and place it at {dest} (or point --data-dir / METAJAX_DATA_DIR "
            f"at a folder that holds it)."
        ) from e
    tmp.replace(dest)
    return dest
