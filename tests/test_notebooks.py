"""The notebooks run, top to bottom, on a small store (nbclient, a real kernel), and are
committed without outputs."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
FIGURES = {"explore_store.ipynb": 4, "cluster_build.ipynb": 1}  # every figure cell drew


def test_there_are_the_two_notebooks():
    assert {p.name for p in NOTEBOOKS} == {"explore_store.ipynb", "cluster_build.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, cal_store, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("NRSDARK_STORE", str(cal_store["path"]))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs)
    assert images == FIGURES[path.name], f"{path.name} drew {images} figures"
