"""Every notebook in notebooks/ executes top to bottom (with small settings), so a broken one fails CI."""

from pathlib import Path

import nbformat
import pytest
from conftest import compile_bound_env
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
COMPUTE_BOUND = {"l2o_curves", "quickstart"}  # the others mostly compile at the tests' small settings


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("METAJAX_NOTEBOOK_STEPS", "10")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if path.stem not in COMPUTE_BOUND:  # the kernel inherits the flags
        monkeypatch.setenv("XLA_FLAGS", compile_bound_env()["XLA_FLAGS"])
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
