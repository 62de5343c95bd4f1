"""Student notebooks from source notebooks: every solution region replaced by a stub.

The markers are nbgrader's (https://nbgrader.readthedocs.io, "student version"): a line containing
``BEGIN SOLUTION`` starts a region and a line containing ``END SOLUTION`` ends it, whatever comment
characters surround them (``### BEGIN SOLUTION``). In a code cell the region becomes, at the marker's
indentation::

    # YOUR CODE HERE
    raise NotImplementedError("write your solution here")

and in a Markdown cell ``YOUR ANSWER HERE``. So a teacher writes the source notebook with the answers,
runs it (every ``check`` passes), and releases the student version. Outputs and execution counts are
cleared. Only the standard library is needed: notebooks are JSON, read with :mod:`json` (nothing in a
notebook is executed by ``release``).
"""
import json
from pathlib import Path

from ..io import write_text_atomic

BEGIN_SOLUTION = "BEGIN SOLUTION"
END_SOLUTION = "END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", 'raise NotImplementedError("write your solution here")')
TEXT_STUB = ("YOUR ANSWER HERE",)


def strip_solutions(source, stub=CODE_STUB, where="cell"):
    """``source`` (text of one cell) with every solution region replaced by ``stub`` lines.

    Raises
    ------
    ValueError
        A region that is not closed, an ``END SOLUTION`` without its ``BEGIN SOLUTION``, or nested
        regions; ``where`` names the cell in the message.
    """
    kept, inside = [], False
    for number, line in enumerate(source.split("\n"), start=1):
        if BEGIN_SOLUTION in line:
            if inside:
                raise ValueError(f"{where}, line {number}: BEGIN SOLUTION inside another solution region")
            inside = True
            indent = line[:len(line) - len(line.lstrip())]
            kept.extend(indent + stub_line for stub_line in stub)
        elif END_SOLUTION in line:
            if not inside:
                raise ValueError(f"{where}, line {number}: END SOLUTION without a BEGIN SOLUTION before it")
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise ValueError(f"{where}: BEGIN SOLUTION is never closed by END SOLUTION")
    return "\n".join(kept)


def read_notebook(path):
    """The notebook at ``path`` as a dict; ``ValueError`` naming the file if it is not notebook JSON."""
    path = Path(path)
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a valid notebook (not JSON: {error})") from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list) or not all(isinstance(cell, dict) and "cell_type" in cell for cell in cells):
        raise ValueError(f"{path} is not a valid notebook (no list of cells)")
    return notebook


def cell_source(cell):
    """A cell's text (notebook JSON stores it as a string or as a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def release_notebook(notebook, name="notebook"):
    """A student copy of ``notebook`` (a dict): solutions stubbed, outputs and execution counts cleared."""
    student = json.loads(json.dumps(notebook))                 # a deep copy
    for index, cell in enumerate(student["cells"]):
        stub = CODE_STUB if cell["cell_type"] == "code" else TEXT_STUB
        cell["source"] = strip_solutions(cell_source(cell), stub, where=f"{name}, cell {index}")
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return student


def notebook_text(notebook):
    """The JSON text Jupyter writes (one-space indent, trailing newline)."""
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def release(source_dir, out_dir):
    """Write a student version of every ``*.ipynb`` in ``source_dir`` to ``out_dir``; returns the paths written.

    Every notebook is read and stripped before anything is written, so a malformed source leaves
    ``out_dir`` untouched (``ValueError`` naming the file and cell).
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"source directory {source_dir} does not exist")
    sources = sorted(source_dir.glob("*.ipynb"))
    if not sources:
        raise ValueError(f"no notebooks (*.ipynb) in {source_dir}")
    if out_dir.resolve() == source_dir.resolve():
        raise ValueError("OUT_DIR must differ from SOURCE_DIR (the sources would be overwritten)")
    released = {path.name: notebook_text(release_notebook(read_notebook(path), path.name)) for path in sources}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in released.items():
        write_text_atomic(out_dir / name, text)
        written.append(out_dir / name)
    return written
