"""Every notebook in notebooks/ runs from top to bottom without errors, and is committed clean.

Notebooks are committed without outputs or execution counts (small diffs, no stale results); the test
suite executes them with nbclient, in the notebooks/ directory, on the ``python3`` Jupyter kernel.
"""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TIMEOUT_SECONDS = 300   # per cell; the first call of each kernel signature includes numba compilation


def test_notebook_directory_is_not_empty():
    # An empty glob would make the parametrized tests below vanish silently (pytest skips them).
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells, f"{path.name} has no code cells"
    dirty = [index for index, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs or execution counts; clear them "
                       f"before committing (e.g. jupyter nbconvert --clear-output --inplace)")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_executes_without_errors(path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=TIMEOUT_SECONDS, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}})   # the kernel's working directory
    client.execute()   # raises CellExecutionError (with the failing cell and traceback) on any error
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert not errors
