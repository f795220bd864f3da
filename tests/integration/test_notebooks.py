"""The notebooks run top to bottom against a tiny run and the tiny synthetic dataset, and are stored clean."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO
from tests.helpers.eval_runs import tiny_run

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    return tiny_run(tmp_path_factory, data_dir)


def test_there_are_notebooks_and_they_have_no_outputs():
    assert {p.name for p in NOTEBOOKS} >= {"results.ipynb", "dataset.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} is stored with outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, run_dir, data_dir, monkeypatch):
    monkeypatch.setenv("FER_RUNS_DIR", str(run_dir))
    monkeypatch.setenv("FER_DATASET_DIR", str(data_dir / "synthetic"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
