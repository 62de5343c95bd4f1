"""Grade a class: execute every submitted notebook, check every exercise, write one CSV row per student and exercise.

Each notebook runs in its own Jupyter kernel (a separate process, started with nbclient), in a fresh
temporary working directory, on the same ``tinycnn`` that runs the grader. After the student's cells, the
grader appends one cell that calls :func:`tinycnn.exercises.check` on the function of each exercise's
name (fresh cases, so the student's own ``check`` outputs do not count). So:

* a cell that raises does not stop grading: the remaining cells still run and the error is noted;
* a cell that runs longer than the time limit is interrupted (noted "timed out"), the cells after it are
  skipped, and the functions defined so far are graded (with their own time limit);
* a kernel that dies (``os._exit``, a segfault, running out of memory) gives status ``crashed``, and a
  file that is not notebook JSON ``invalid``, for each of that notebook's exercises; the other
  notebooks are graded as usual.

Which exercises a notebook has comes from the source notebook of the same name (``source_dir``) or
else from the ``tinycnn.exercises`` list in the notebook's own metadata (as ``release`` writes it) --
taken from another student's copy when this one is unreadable.

Grading runs the students' code: do it as a user who can only harm the submissions, not your files.
"""
import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from ..io import write_text_atomic
from .release import read_notebook

RESULT_MARKER = "@@tinycnn-grade@@"
DEFAULT_TIMEOUT = 120          # seconds for a notebook's own cells, and again for the grading cell

GRADING_CELL = """\
def _tinycnn_grade(names, marker):
    import json
    from tinycnn.exercises import check, list_exercises
    results, known = {}, list_exercises()
    for name in names:
        function = globals().get(name)
        if name not in known:
            results[name] = ["invalid", 0.0, f"unknown exercise {name!r} in the notebook's metadata"]
        elif not callable(function):
            results[name] = ["missing", 0.0, f"no function named {name} is defined"]
        else:
            result = check(name, function, verbose=False)
            results[name] = ["passed" if result.passed else "failed", result.score, result.message]
    print(marker + json.dumps(results))
_tinycnn_grade(%r, %r)
"""


@dataclass
class GradeRow:
    """One line of the gradebook."""
    student: str
    notebook: str
    exercise: str
    status: str          # passed, failed, missing, timeout, crashed, invalid
    score: float         # fraction of the exercise's cases passed
    message: str         # the checker's message, or what happened to the notebook
    notes: str = ""      # notebook-level events: a cell that raised or timed out


class GradingUnavailable(RuntimeError):
    """nbclient / ipykernel are not installed."""


def _notebook_client():
    try:
        import nbclient
        import nbformat
        import ipykernel  # noqa: F401  (the kernel nbclient starts)
    except ImportError as error:
        raise GradingUnavailable(
            f"grading executes notebooks and needs nbclient, nbformat and ipykernel ({error}); install them with "
            f"pip install 'tinycnn[test]' (or pip install nbclient nbformat ipykernel)") from None
    return nbclient, nbformat


def find_submissions(submissions_dir):
    """``[(student, notebook path)]``: ``DIR/<student>/**/*.ipynb`` or ``DIR/<student>.ipynb``, sorted."""
    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise FileNotFoundError(f"submissions directory {submissions_dir} does not exist")
    found = []
    for entry in sorted(submissions_dir.iterdir()):
        if entry.is_dir():
            found += [(entry.name, path) for path in sorted(entry.rglob("*.ipynb"))
                      if ".ipynb_checkpoints" not in path.parts]
        elif entry.suffix == ".ipynb":
            found.append((entry.stem, entry))
    if not found:
        raise ValueError(f"no notebooks in {submissions_dir} (expected STUDENT/NOTEBOOK.ipynb or STUDENT.ipynb)")
    return found


def _listed_exercises(notebook):
    listed = notebook.get("metadata", {}).get("tinycnn", {}).get("exercises", [])
    return [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else []


def _expected_exercises(submissions, source_dir):
    """``{notebook file name: [exercise names]}`` from the sources, else from the submissions' metadata."""
    from .checker import CATALOGUE
    expected = {}
    if source_dir is not None:
        for path in sorted(Path(source_dir).glob("*.ipynb")):
            expected[path.name] = _listed_exercises(read_notebook(path))
    for _, path in submissions:
        if expected.get(path.name):
            continue
        try:
            expected[path.name] = _listed_exercises(read_notebook(path))
        except (ValueError, OSError):
            continue
    return {name: [exercise for exercise in names if exercise in CATALOGUE] for name, names in expected.items()}


def _first_error(cell):
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}"
    return None


def run_notebook(notebook, exercises, timeout=DEFAULT_TIMEOUT):
    """Execute ``notebook`` (a dict) and check ``exercises`` in its kernel.

    Returns
    -------
    results : dict or None
        ``{exercise: [status, score, message]}``; None if the kernel died or the grading cell timed out.
    notes : list of str
        What happened on the way ("cell 4 raised NameError: ...", "cell 6 timed out after 10 s: ...").
    """
    nbclient, nbformat = _notebook_client()
    from nbclient.exceptions import DeadKernelError
    nb = nbformat.from_dict(notebook)
    nb.cells = [cell for cell in nb.cells if cell.get("cell_type") == "code"]
    for cell in nb.cells:
        cell["source"] = "".join(cell["source"]) if isinstance(cell.get("source"), list) else cell.get("source", "")
        cell["outputs"], cell["metadata"] = [], cell.get("metadata", {})
    student_cells = list(nb.cells)
    grading = nbformat.v4.new_code_cell(GRADING_CELL % (list(exercises), RESULT_MARKER))
    nb.cells.append(grading)
    package_root = str(Path(__file__).resolve().parents[2])          # the tinycnn that runs the grader
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    notes = []
    with tempfile.TemporaryDirectory(prefix="tinycnn-grade-") as workdir:
        # On a timeout nbclient interrupts the kernel (KeyboardInterrupt in the cell) and goes on.
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                         record_timing=False, interrupt_on_timeout=True,
                                         error_on_timeout={"ename": "TimeoutError", "evalue": "", "traceback": []})
        try:
            with client.setup_kernel(env=env, cwd=workdir):
                deadline = time.monotonic() + timeout
                for index, cell in enumerate(student_cells):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        notes.append(f"time limit of {timeout} s reached before code cell {index + 1}; "
                                     f"the remaining cells were skipped")
                        break
                    client.timeout = max(1, math.ceil(remaining))
                    client.execute_cell(cell, index)
                    if time.monotonic() >= deadline:
                        notes.append(f"code cell {index + 1} timed out (time limit {timeout} s for the notebook): "
                                     f"interrupted, the cells after it were skipped")
                        break
                    error = _first_error(cell)
                    if error:
                        notes.append(f"code cell {index + 1} raised {error}")
                client.timeout = timeout
                started = time.monotonic()
                client.execute_cell(grading, len(student_cells))
                if time.monotonic() - started >= timeout:
                    notes.append(f"checking the functions took longer than {timeout} s (a function that does "
                                 f"not return?)")
                    return None, notes
        except DeadKernelError:
            notes.append("the kernel died (the notebook crashed Python: os._exit, a segfault or out of memory)")
            return None, notes
    printed = "".join(output.get("text", "") for output in grading.outputs if output.get("output_type") == "stream")
    lines = [line for line in printed.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        notes.append(f"the grading cell gave no result ({_first_error(grading) or 'no output'})")
        return None, notes
    return json.loads(lines[-1][len(RESULT_MARKER):]), notes


def grade_notebook(student, path, exercises, timeout=DEFAULT_TIMEOUT):
    """The :class:`GradeRow` s of one submitted notebook (one per exercise)."""
    try:
        notebook = read_notebook(path)
    except (ValueError, OSError) as error:
        message = str(error)
        return [GradeRow(student, path.name, name, "invalid", 0.0, message) for name in exercises or ["*"]]
    exercises = exercises or _listed_exercises(notebook)
    if not exercises:
        return [GradeRow(student, path.name, "*", "invalid", 0.0,
                         "no exercise list: the notebook's metadata has no tinycnn.exercises (give --source)")]
    results, notes = run_notebook(notebook, exercises, timeout)
    notes_text = "; ".join(notes)
    if results is None:
        crashed = any("kernel died" in note for note in notes)
        status = "crashed" if crashed else "timeout"
        message = notes[-1] if notes else status
        return [GradeRow(student, path.name, name, status, 0.0, message, notes_text) for name in exercises]
    rows = []
    for name in exercises:
        status, score, message = results.get(name, ["missing", 0.0, "not graded"])
        rows.append(GradeRow(student, path.name, name, status, round(float(score), 4), message, notes_text))
    return rows


def grade(submissions_dir, out_csv=None, timeout=DEFAULT_TIMEOUT, source_dir=None, progress=None):
    """Grade every notebook under ``submissions_dir``; write ``out_csv`` (atomically) if given.

    Parameters
    ----------
    submissions_dir : path
        ``<student>/<notebook>.ipynb`` (any depth under the student's folder) or ``<student>.ipynb``.
    out_csv : path or None
        Columns ``student, notebook, exercise, status, score, message, notes``.
    timeout : float
        Seconds for a notebook's cells (all together), and again for checking its functions.
    source_dir : path or None
        The source notebooks: which exercises each notebook has.
    progress : callable or None
        Called with each notebook's rows as soon as it is graded (the CLI prints a line).

    Returns
    -------
    list of GradeRow
    """
    _notebook_client()                      # fail early and clearly if nbclient is missing
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
    submissions = find_submissions(submissions_dir)
    expected = _expected_exercises(submissions, source_dir)
    rows = []
    for student, path in submissions:
        notebook_rows = grade_notebook(student, path, expected.get(path.name, []), timeout)
        rows += notebook_rows
        if progress is not None:
            progress(notebook_rows)
    if out_csv is not None:
        write_text_atomic(Path(out_csv), rows_to_csv(rows))
    return rows


def rows_to_csv(rows):
    """The gradebook as CSV text (header first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([field.name for field in fields(GradeRow)])
    writer.writerows(astuple(row) for row in rows)
    return buffer.getvalue()
