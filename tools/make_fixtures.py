"""Regenerate the PyTorch reference outputs in ``tests/fixtures/``.

Usage (needs PyTorch: ``pip install ".[reference]"``; the tests themselves never do)::

    python tools/make_fixtures.py                 # every tools/fixtures_*.py module
    python tools/make_fixtures.py --only kernels  # just tools/fixtures_kernels.py
    python tools/make_fixtures.py --list

Each ``tools/fixtures_<name>.py`` module exposes ``generate(out_dir: pathlib.Path) -> list[pathlib.Path]``
and writes its ``.npz`` files with :func:`save_npz` below. A new family of fixtures is a new module:
this script discovers it, nothing here changes. The fixtures are small (tens to hundreds of KB) and
committed, so the test suite runs without PyTorch.
"""
import argparse
import importlib.util
import io
import os
import pathlib
import sys
import zipfile

import numpy as np

TOOLS_DIR = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT_DIR = TOOLS_DIR.parent / "tests" / "fixtures"


def save_npz(path, arrays):
    """Write ``arrays`` (a dict name -> array) as a compressed ``.npz`` that ``np.load`` reads.

    Unlike ``np.savez_compressed``, the bytes depend only on the arrays (fixed member timestamps,
    keys in the given order), so regenerating unchanged fixtures leaves git with nothing to commit;
    the file is written to a temporary name and renamed, so an interrupted run never leaves half a file.
    """
    path = pathlib.Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            member = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(member, buffer.getvalue())
    os.replace(temporary, path)
    return path


def relative_error(actual, expected):
    """``max|actual - expected| / max|expected|`` in float64: how the fixtures measure a float32 run.

    Every generator records PyTorch's own float32 error of each case with this (``torch_float32_error``),
    and the float32 tests derive their tolerance from it (``tests/helpers.py: float32_tolerance``).
    """
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected), initial=0.0) / max(float(np.max(np.abs(expected), initial=0.0)), 1e-300))


def discover():
    """``{name: path}`` of every ``tools/fixtures_<name>.py``, sorted by name."""
    return {path.stem.removeprefix("fixtures_"): path for path in sorted(TOOLS_DIR.glob("fixtures_*.py"))}


def load_module(name, path):
    """Import ``tools/fixtures_<name>.py`` by path (``tools/`` is not a package)."""
    if str(TOOLS_DIR) not in sys.path:
        sys.path.insert(0, str(TOOLS_DIR))   # lets the modules `from make_fixtures import save_npz`
    spec = importlib.util.spec_from_file_location(f"fixtures_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    modules = discover()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="NAME", action="append", choices=sorted(modules),
                        help="run only tools/fixtures_NAME.py (repeatable); choices: %(choices)s")
    parser.add_argument("--out-dir", type=pathlib.Path, default=DEFAULT_OUT_DIR,
                        help="where to write the .npz files (default: tests/fixtures)")
    parser.add_argument("--list", action="store_true", help="list the fixture modules and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, path in modules.items():
            print(f"{name:12s} {path.relative_to(TOOLS_DIR.parent)}")
        return 0
    try:
        import torch
    except ImportError:
        print("make_fixtures.py computes the reference outputs with PyTorch, which is not installed.\n"
              "Install the optional extra:  pip install \".[reference]\"  (CPU wheel; see README).",
              file=sys.stderr)
        return 1

    print(f"PyTorch {torch.__version__}, NumPy {np.__version__}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only or modules:
        for path in load_module(name, modules[name]).generate(args.out_dir):
            print(f"  {name}: wrote {path} ({path.stat().st_size / 1024:.1f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
