"""Execute the course notebooks (``notebooks/NN_*.ipynb``) and write their outputs into them.

Usage::

    python tools/run_notebooks.py                 # execute every notebook in place (commit the result)
    python tools/run_notebooks.py 03 07           # only the notebooks whose names start with 03 or 07
    python tools/run_notebooks.py --check         # CI: execute each on a temporary copy, fail on any error
    python tools/run_notebooks.py --check --timeout 240

Notebooks are committed *with* their outputs, so they read on GitHub without running. Each one seeds
its own random numbers; this script runs it top to bottom on the ``python3`` Jupyter kernel, in the
``notebooks/`` directory, with this checkout first on ``PYTHONPATH``, and without per-cell timing
metadata, so that re-running it changes only what the computation changes (timings printed by a
notebook itself do vary).

``--check`` leaves the committed files alone: every notebook runs in memory, in a temporary directory,
under a time budget for the whole notebook (``--timeout`` seconds; by default 240 with ``--check``, as the
course promises under two minutes on two cores and a CI machine may be busy, and 900 when writing
outputs). Any cell error, a notebook over budget, or a ``notebooks/`` folder over ``MAX_FOLDER_BYTES``
makes the exit code 1.
"""
import argparse
import os
import pathlib
import sys
import tempfile
import time

import nbclient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
MAX_FOLDER_BYTES = 15 * 2 ** 20     # the whole notebooks/ folder, outputs and figures included
CHECK_TIMEOUT = 240                 # seconds per notebook in --check mode (the course promises < 2 minutes)
WRITE_TIMEOUT = 900                 # seconds per notebook when writing outputs (a busy machine is slow)


def course_notebooks(prefixes=()):
    """The notebooks of the course in order (``NN_name.ipynb``), optionally only those starting with a prefix."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in prefixes)]
    return paths


def folder_bytes(folder=None):
    """Bytes of every file under ``folder``."""
    folder = NOTEBOOK_DIR if folder is None else folder
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def merge_streams(notebook):
    """Join consecutive stdout (or stderr) outputs of a cell into one.

    The kernel sends printed text in chunks whose boundaries depend on timing; merged, a re-run that
    prints the same text writes the same file.
    """
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for output in cell.outputs:
            previous = merged[-1] if merged else None
            if (output.output_type == "stream" and previous is not None and previous.output_type == "stream"
                    and previous.name == output.name):
                previous.text += output.text
            else:
                merged.append(output)
        cell.outputs = merged


def execute(notebook, working_dir, budget_seconds):
    """Run ``notebook`` (an nbformat node, changed in place) with at most ``budget_seconds`` for all its cells.

    Raises ``nbclient.exceptions.CellExecutionError`` on a cell error and ``CellTimeoutError`` when the
    budget runs out (the running cell's timeout is whatever is left of it).
    """
    started = time.monotonic()

    def time_left(cell):
        return max(1, int(budget_seconds - (time.monotonic() - started)))

    client = nbclient.NotebookClient(
        notebook, timeout_func=time_left, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(working_dir)}})
    client.execute()
    merge_streams(notebook)
    return time.monotonic() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefixes", nargs="*", help="run only notebooks whose file names start with these")
    parser.add_argument("--check", action="store_true",
                        help="execute temporary copies (committed files untouched); exit 1 on any error")
    parser.add_argument("--timeout", type=int, default=None,
                        help=f"seconds allowed for each whole notebook (default {CHECK_TIMEOUT} with --check, "
                             f"else {WRITE_TIMEOUT})")
    args = parser.parse_args(argv)
    budget = args.timeout if args.timeout is not None else CHECK_TIMEOUT if args.check else WRITE_TIMEOUT

    # The kernel inherits these: this checkout's tinycnn and kernels come first on its path (not an
    # installed copy), and string hashing (set order) is the same in every run.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("PYTHONHASHSEED", "0")

    paths = course_notebooks(args.prefixes)
    if not paths:
        print(f"no notebooks matched in {NOTEBOOK_DIR}", file=sys.stderr)
        return 1
    failures = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        try:
            if args.check:
                with tempfile.TemporaryDirectory() as folder:
                    # the copy runs in (and may write only to) a temporary folder
                    seconds = execute(notebook, folder, budget)
            else:
                seconds = execute(notebook, NOTEBOOK_DIR, budget)
                nbformat.write(notebook, path)
        except (nbclient.exceptions.CellExecutionError, nbclient.exceptions.CellTimeoutError,
                nbclient.exceptions.DeadKernelError) as error:
            failures.append(path.name)
            print(f"FAILED  {path.name}: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
            if not args.check:
                print(str(error), file=sys.stderr)
            continue
        print(f"ok      {path.name}  {seconds:6.1f} s", flush=True)

    size = folder_bytes()
    print(f"notebooks/ holds {size / 2 ** 20:.1f} MiB (limit {MAX_FOLDER_BYTES / 2 ** 20:.0f} MiB)")
    if size > MAX_FOLDER_BYTES:
        failures.append("notebooks/ folder size")
    if failures:
        print("notebooks failed: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
