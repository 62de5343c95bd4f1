"""The course in notebooks/: each notebook says what it teaches, is listed in the course map, and is
committed executed (with outputs, no errors).

These tests only read the files (fast). Executing every notebook is a separate CI step,
``python tools/run_notebooks.py --check`` (see .ci/run), which runs each one on a temporary copy under a
time budget and fails on any cell error; ``python tools/run_notebooks.py`` re-executes them in place.
"""
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
COURSE_MAP = NOTEBOOK_DIR / "README.md"
MAX_FOLDER_BYTES = 15 * 2 ** 20


def test_notebook_directory_is_not_empty():
    # An empty glob would make the parametrized tests below vanish silently (pytest skips them).
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_first_cell_states_what_it_teaches(path):
    number = path.name[:2]
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), f"{path.name}: expected NN_name.ipynb"
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown", f"{path.name}: the first cell must be the markdown introduction"
    assert first.source.startswith(f"# {number} · "), f"{path.name}: the first cell starts '# {number} · Title'"
    match = re.search(r"\*\*What this notebook teaches:\*\*\s*(\S.{40,}?)(\n\n|$)", first.source, re.S)
    assert match, f"{path.name}: the first cell needs a '**What this notebook teaches:** ...' sentence"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_ends_with_exercises(path):
    markdown = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"]
    assert markdown and "## Exercises" in markdown[-1].source, f"{path.name}: the last text cell is '## Exercises'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_executed_in_order_without_errors(path):
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells, f"{path.name} has no code cells"
    counts = [cell.execution_count for cell in code_cells]
    assert counts == list(range(1, len(code_cells) + 1)), (
        f"{path.name}: execution counts {counts}; run `python tools/run_notebooks.py {path.name[:2]}` and commit")
    errors = [output.ename for cell in code_cells for output in cell.outputs if output.output_type == "error"]
    assert not errors, f"{path.name} was committed with errors: {errors}"
    assert any(cell.outputs for cell in code_cells), f"{path.name}: no outputs at all"


def test_course_map_lists_every_notebook_in_order_with_time_to_run():
    text = COURSE_MAP.read_text(encoding="utf-8")
    listed = re.findall(r"\]\((\d\d_[a-z0-9_]+\.ipynb)\)", text)
    assert listed == [path.name for path in NOTEBOOKS], "notebooks/README.md must link every notebook, in order"
    for path in NOTEBOOKS:
        line = next(line for line in text.splitlines() if f"({path.name})" in line)
        assert re.search(r"\d+\s*s\b", line), f"course map line of {path.name} gives no time to run: {line!r}"


def test_readme_links_the_course_map():
    assert "notebooks/README.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_notebook_folder_stays_small():
    size = sum(path.stat().st_size for path in NOTEBOOK_DIR.rglob("*") if path.is_file())
    assert size < MAX_FOLDER_BYTES, f"notebooks/ holds {size / 2 ** 20:.1f} MiB; figures must stay modest"


@pytest.mark.slow
def test_run_notebooks_check_fails_on_a_cell_error(tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import run_notebooks
    finally:
        sys.path.remove(str(ROOT / "tools"))
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1 + 1\nprint(x)")])
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")])
    for name, notebook in [("01_good.ipynb", good), ("02_bad.ipynb", bad)]:
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, tmp_path / name)
    monkeypatch.setattr(run_notebooks, "NOTEBOOK_DIR", tmp_path)
    assert run_notebooks.main(["--check", "01"]) == 0
    assert run_notebooks.main(["--check"]) == 1                      # 02_bad raises ZeroDivisionError
    assert nbformat.read(tmp_path / "01_good.ipynb", as_version=4).cells[0].outputs == []   # --check wrote nothing
