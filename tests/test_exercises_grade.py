"""``grade`` on a class of five: a correct, a partly wrong, a crashing, a hanging and a corrupt notebook."""
import csv
import io
import json
from pathlib import Path

import pytest

from tinycnn.exercises.grade import find_submissions, grade, rows_to_csv
from tinycnn.exercises.release import cell_source, read_notebook

SOURCE = Path(__file__).resolve().parent.parent / "notebooks" / "exercises" / "source" / "04_compression.ipynb"
TIMEOUT = 10      # seconds; the hanging notebook costs this much, the others finish in a few


def _code(text):
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": text}


def _replace_function(notebook, name, new_source):
    for cell in notebook["cells"]:
        if cell_source(cell).startswith(f"def {name}("):
            cell["source"] = new_source
            return
    raise AssertionError(name)


@pytest.fixture
def classroom(tmp_path):
    source = read_notebook(SOURCE)
    submissions = tmp_path / "submitted"

    def submit(student, notebook):
        (submissions / student).mkdir(parents=True)
        (submissions / student / SOURCE.name).write_text(json.dumps(notebook))

    submit("ada", source)                                                   # everything right
    partly = json.loads(json.dumps(source))
    _replace_function(partly, "channels_to_prune",                          # ranks by gamma, not |gamma|
                      "def channels_to_prune(gamma, count):\n    return np.sort(np.argsort(gamma)[:count])")
    _replace_function(partly, "dequantize_int8", "x = 1")                  # never defined
    partly["cells"].insert(3, _code("undefined_name + 1"))                 # a cell that raises
    submit("bob", partly)
    crashing = json.loads(json.dumps(source))
    crashing["cells"].insert(2, _code("import os\nos._exit(3)"))
    submit("cy", crashing)
    hanging = json.loads(json.dumps(source))
    hanging["cells"].append(_code("while True:\n    pass"))
    submit("dee", hanging)
    (submissions / "eve").mkdir()
    (submissions / "eve" / SOURCE.name).write_text('{"cells": [ truncated')
    return submissions


def test_find_submissions_takes_folders_and_flat_files(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.ipynb").write_text("{}")
    (tmp_path / "ann" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "ann" / ".ipynb_checkpoints" / "a.ipynb").write_text("{}")
    (tmp_path / "ben.ipynb").write_text("{}")
    assert [(student, path.name) for student, path in find_submissions(tmp_path)] == [("ann", "a.ipynb"),
                                                                                       ("ben", "ben.ipynb")]
    with pytest.raises(FileNotFoundError):
        find_submissions(tmp_path / "nobody")


@pytest.mark.slow
def test_grade_a_class_with_crashing_hanging_and_corrupt_notebooks(classroom, tmp_path):
    out = tmp_path / "grades.csv"
    rows = grade(classroom, out, timeout=TIMEOUT)
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert out.read_text() == rows_to_csv(rows)
    status = {(row["student"], row["exercise"]): row["status"] for row in table}
    exercises = ["quantize_int8", "dequantize_int8", "channels_to_prune"]
    assert [row["exercise"] for row in table] == exercises * 5
    assert all(status["ada", name] == "passed" for name in exercises)
    assert [status["bob", name] for name in exercises] == ["passed", "missing", "failed"]
    assert all(status["cy", name] == "crashed" for name in exercises)
    assert all(status["dee", name] == "passed" for name in exercises)     # graded after the interrupt
    assert all(status["eve", name] == "invalid" for name in exercises)

    by_key = {(row["student"], row["exercise"]): row for row in table}
    assert float(by_key["ada", "channels_to_prune"]["score"]) == 1.0
    bob_prune = by_key["bob", "channels_to_prune"]
    assert 0 <= float(bob_prune["score"]) < 1 and "not |gamma|" in bob_prune["message"]
    assert "NameError" in bob_prune["notes"]
    assert "kernel died" in by_key["cy", "quantize_int8"]["message"]
    assert "timed out" in by_key["dee", "quantize_int8"]["notes"]
    assert "not a valid notebook" in by_key["eve", "quantize_int8"]["message"]


@pytest.mark.slow
def test_a_function_that_never_returns_is_recorded_as_timeout(tmp_path):
    source = read_notebook(SOURCE)
    _replace_function(source, "quantize_int8", "def quantize_int8(x, scale, zero_point):\n    while True:\n        pass")
    # without the notebook's own check cells only the grader calls the function: the whole limit is left for
    # it, however long the kernel takes to import on a busy machine (with them, a slow import could use up
    # the notebook's time before the definitions ran, and the functions were graded "missing")
    source["cells"] = [cell for cell in source["cells"] if not cell_source(cell).startswith("check(")]
    (tmp_path / "fay.ipynb").write_text(json.dumps(source))
    rows = grade(tmp_path, timeout=TIMEOUT)
    assert {row.status for row in rows} == {"timeout"}
    assert f"longer than {TIMEOUT} s" in rows[0].message


def test_grade_refuses_a_bad_timeout(tmp_path):
    with pytest.raises(ValueError, match="timeout"):
        grade(tmp_path, timeout=0)


# ------------------------------------------------------------------------------------------ the CLI
def test_cli_list_names_every_exercise(capsys):
    from tinycnn.cli import main
    from tinycnn.exercises import list_exercises
    assert main(["exercises", "list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in list_exercises())


def test_cli_release_writes_student_notebooks(tmp_path, capsys):
    from tinycnn.cli import main
    assert main(["exercises", "release", str(SOURCE.parent), str(tmp_path)]) == 0
    assert (tmp_path / SOURCE.name).read_text() == (SOURCE.parent.parent / SOURCE.name).read_text()
    assert f"wrote {tmp_path / SOURCE.name}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["exercises", "release", "no/such/dir", "out"], "tinycnn exercises release: error: source directory"),
    (["exercises", "grade", "no/such/dir"], "tinycnn exercises grade: error: submissions directory"),
    (["exercises", "grade", ".", "--timeout", "0"], "expected a positive number"),
    (["exercises", "check", str(SOURCE.parents[3] / "README.md")], "README.md is not a valid notebook"),
    (["exercises"], "required"),
])
def test_cli_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    from tinycnn.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


@pytest.mark.slow
def test_cli_check_prints_each_result_and_exits_1_on_a_stub(capsys):
    from tinycnn.cli import main
    assert main(["exercises", "check", str(SOURCE.parent.parent / SOURCE.name), "--timeout", "60"]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in printed] == [["FAILED", "quantize_int8:"], ["FAILED", "dequantize_int8:"],
                                                      ["FAILED", "channels_to_prune:"]]
    assert all("not implemented yet" in line for line in printed)


def test_grading_cell_checks_each_function_and_reports_missing_and_unknown_names(capsys):
    """The cell the grader appends, run here without a kernel (the student's globals are a dict)."""
    from tinycnn.exercises import get_exercise
    from tinycnn.exercises.grade import GRADING_CELL, RESULT_MARKER
    student_globals = {"make_divisible": get_exercise("make_divisible").solution,
                       "receptive_field": lambda layers: 1}
    exec(GRADING_CELL % (["make_divisible", "receptive_field", "channel_shuffle", "no_such_exercise"],
                         RESULT_MARKER), student_globals)
    line = capsys.readouterr().out.strip()
    assert line.startswith(RESULT_MARKER)
    results = json.loads(line[len(RESULT_MARKER):])
    assert results["make_divisible"][:2] == ["passed", 1.0]
    assert results["receptive_field"][0] == "failed" and results["receptive_field"][1] < 1
    assert results["channel_shuffle"] == ["missing", 0.0, "no function named channel_shuffle is defined"]
    assert results["no_such_exercise"][0] == "invalid" and "unknown exercise" in results["no_such_exercise"][2]
