"""Every notebook in notebooks/ executes top to bottom (with small settings), so a broken one fails CI."""

from pathlib import Path

import nbformat
import pytest
from conftest import compile_bound_env
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# Kernels of these run at the suite's LLVM level 1, the others (mostly compiling at the tests' small
# settings) at level 0. CPU-s of a kernel at level 0 / 1, measured alone: own_model 77 / 39 (its MAML
# steps and 3-step evaluations compute), quickstart 32 / 30, l2o_curves 27 / 29, protonet_embeddings
# 24 / 23, mann 27 / 37, maml_sinusoid 11 / 13.
COMPUTE_BOUND = {"l2o_curves", "quickstart", "own_model"}


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
