"""Exercise notebooks: the committed student versions are exactly what ``release`` makes from the sources,
no solution line survives, the sources pass every check and the student versions run with every check
reporting "not implemented"."""
import os
from pathlib import Path

import pytest

from tinycnn.exercises import CATALOGUE, get_exercise
from tinycnn.exercises.release import (CODE_STUB, cell_source, read_notebook, release, release_notebook,
                                       strip_solutions)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXERCISE_DIR = REPO_ROOT / "notebooks" / "exercises"
SOURCE_DIR = EXERCISE_DIR / "source"
SOURCES = sorted(SOURCE_DIR.glob("*.ipynb"))
TIMEOUT_SECONDS = 120     # per cell; the checks are small NumPy computations


def _solution_lines(notebook):
    """Lines strictly between the solution markers of every cell."""
    lines = []
    for cell in notebook["cells"]:
        inside = False
        for line in cell_source(cell).split("\n"):
            if "END SOLUTION" in line:
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
            elif "BEGIN SOLUTION" in line:
                inside = True
    return lines


def test_there_is_a_source_notebook_per_topic_and_every_exercise_is_in_one():
    assert len(SOURCES) == 5
    covered = [name for path in SOURCES for name in read_notebook(path)["metadata"]["tinycnn"]["exercises"]]
    assert sorted(covered) == sorted(CATALOGUE)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_committed_student_notebook_equals_release_of_its_source(path, tmp_path):
    release(SOURCE_DIR, tmp_path)
    assert (tmp_path / path.name).read_text(encoding="utf-8") == (EXERCISE_DIR / path.name).read_text(encoding="utf-8"), \
        f"notebooks/exercises/{path.name} is stale: run 'tinycnn exercises release notebooks/exercises/source " \
        f"notebooks/exercises'"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_no_solution_line_survives_in_the_student_notebook(path):
    source = read_notebook(path)
    solution = _solution_lines(source)
    assert len(solution) >= len(source["metadata"]["tinycnn"]["exercises"])
    student_text = "\n".join(cell_source(cell) for cell in read_notebook(EXERCISE_DIR / path.name)["cells"])
    student_lines = {line.strip() for line in student_text.split("\n")}
    survivors = [line for line in solution if line in student_lines and not line.startswith("#")]
    assert not survivors
    assert "SOLUTION" not in student_text
    assert student_text.count(CODE_STUB[1]) == len(source["metadata"]["tinycnn"]["exercises"])


def test_strip_solutions_keeps_indentation_and_the_code_around():
    source = "def f(x):\n    '''doc'''\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\nprint(1)"
    assert strip_solutions(source) == ("def f(x):\n    '''doc'''\n    # YOUR CODE HERE\n"
                                       "    raise NotImplementedError(\"write your solution here\")\nprint(1)")
    assert strip_solutions("a\n<!-- BEGIN SOLUTION -->\nanswer\n<!-- END SOLUTION -->", ("YOUR ANSWER HERE",)) == \
        "a\nYOUR ANSWER HERE"


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n### END SOLUTION", "line 2: END SOLUTION without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2: BEGIN SOLUTION inside"),
])
def test_malformed_solution_regions_are_refused(source, message):
    with pytest.raises(ValueError, match=message):
        strip_solutions(source, where="cell 3")


def test_release_clears_outputs_and_refuses_bad_input(tmp_path):
    notebook = {"cells": [{"cell_type": "code", "execution_count": 4, "metadata": {}, "source": ["x = 1\n", "x"],
                           "outputs": [{"output_type": "execute_result"}]}], "metadata": {}, "nbformat": 4,
                "nbformat_minor": 5}
    student = release_notebook(notebook)
    assert student["cells"][0]["outputs"] == [] and student["cells"][0]["execution_count"] is None
    assert notebook["cells"][0]["execution_count"] == 4                     # the source is not modified
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "broken.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match="broken.ipynb is not a valid notebook"):
        release(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError):
        release(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="must differ"):
        release(SOURCE_DIR, SOURCE_DIR)


def _execute(path, monkeypatch):
    """Run the notebook on the ``python3`` kernel importing this checkout; the text of each check cell."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=TIMEOUT_SECONDS, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    return [("".join(output.get("text", "") for output in cell.outputs), cell.source)
            for cell in notebook.cells if cell.cell_type == "code" and cell.source.startswith("check(")]


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_source_notebook_passes_every_check(path, monkeypatch):
    checks = _execute(path, monkeypatch)
    assert len(checks) == len(read_notebook(path)["metadata"]["tinycnn"]["exercises"])
    for printed, source in checks:
        assert printed.startswith("PASSED "), (source, printed)


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_student_notebook_runs_and_every_check_says_not_implemented(path, monkeypatch):
    checks = _execute(EXERCISE_DIR / path.name, monkeypatch)
    assert checks
    for printed, source in checks:
        assert printed.startswith("FAILED ") and "not implemented yet" in printed, (source, printed)


def test_every_notebook_solution_is_the_catalogued_solution():
    """The source notebooks' code is the catalogue's solutions (which the checker tests already pass)."""
    import inspect
    for path in SOURCES:
        text = "\n".join(cell_source(cell) for cell in read_notebook(path)["cells"])
        for name in read_notebook(path)["metadata"]["tinycnn"]["exercises"]:
            body = inspect.getsource(get_exercise(name).solution).split('"""')[-1]
            for line in body.strip().split("\n"):
                assert line.strip() in text, (path.name, name, line)
