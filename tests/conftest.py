"""Shared pytest fixtures for the whole suite.

Helper functions live in ``tests/helpers.py`` so that test files can import them as plain functions
(``from helpers import assert_close, directional_gradcheck``); this file makes that import work and
re-exports them, and defines the fixtures.
"""
import os
import pathlib
import sys

import numpy as np
import pytest

from kernels._jit import compiled_on_this_machine

TESTS_DIR = pathlib.Path(__file__).resolve().parent
FIXTURES_DIR = TESTS_DIR / "fixtures"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

# no helper process compiling gradient kernels beside the training runs of the tests (and of the processes
# they start): tests/test_compile_ahead.py turns it on where it tests it
os.environ["TINYCNN_COMPILE_AHEAD"] = "0"

from helpers import TOLERANCES, assert_close, directional_gradcheck  # noqa: E402  (re-exported)

__all__ = ["TOLERANCES", "assert_close", "directional_gradcheck", "FIXTURES_DIR"]


# ----------------------------------------------------------------------------------------------------
# A machine's first run: a second pytest process compiles the kernel tests' kernels meanwhile
# ----------------------------------------------------------------------------------------------------
#: the test files whose kernels the warm-up process compiles (most of the suite's compiling; their kernels
#: overlap: test_conv2d also compiles the depthwise kernels). The process runs their tests in the opposite
#: of the suite's order, so that the two start at either end and meet in the middle.
WARMUP_FILES = ("test_conv2d.py", "test_deformable.py", "test_depthwise.py")
#: set to "0" to run the suite without the warm-up process
WARMUP_SWITCH = "TINYCNN_TEST_WARMUP"
_WARMUP_CHILD = "TINYCNN_TEST_WARMUP_CHILD"           # set in the warm-up process itself
_warmup = None


def _should_warm_up(items):
    """A warm-up process pays on a cold numba cache, for a run that holds most of the kernel tests, with a
    second core to compile on."""
    import numba

    from kernels import deformable
    if numba.config.DISABLE_JIT or os.environ.get(WARMUP_SWITCH) == "0" or os.environ.get(_WARMUP_CHILD):
        return False
    if len(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)) < 2:
        return False
    files = {item.path.name for item in items}
    if len(files & set(WARMUP_FILES)) < 2:
        return False
    # deformable convolution is never part of a training run: its kernel compiled means the tests ran here before
    return not compiled_on_this_machine(deformable._deformable_im2col_kernel)


def pytest_collection_modifyitems(session, config, items):
    """In the warm-up process: its tests backwards (the suite runs them forwards)."""
    if os.environ.get(_WARMUP_CHILD):
        items.reverse()


def pytest_collection_finish(session):
    """Start the warm-up process (:func:`_should_warm_up`): ``python -m pytest`` on :data:`WARMUP_FILES`,
    at the lowest priority, its output discarded, its results ignored (the suite itself runs those tests).

    numba compiles a kernel on its first call, on one core, and keeps the machine code on disk
    (``cache=True``); on a cold cache the three kernel test files spend ~170 s of the suite's ~510 s
    compiling (after the main job, CI's order), mostly float64 kernels. The warm-up process compiles them
    into the same on-disk cache on the other core, and the suite loads them from there when it gets to
    them. Measured on a 2-core AMD EPYC (AVX2), the README's test command after the main job (CI's order),
    two pairs of runs one after the other: 508 and 552 s without, 416 and 516 s with it (test_conv2d 117
    -> 45 and 69 s, test_depthwise 30 and 36 -> 2 and 4 s; the other files within the VM's drift). In the
    warm-up process this hook starts a thread that ends it if the suite is gone, and lowers its priority."""
    global _warmup
    if os.environ.get(_WARMUP_CHILD):
        from tinycnn.compile_ahead import run_as_background_helper
        run_as_background_helper(int(os.environ[_WARMUP_CHILD]))           # the suite's own tests come first
        return
    if session.config.option.collectonly or not _should_warm_up(session.items):
        return
    import subprocess
    import tempfile

    environment = dict(os.environ, **{_WARMUP_CHILD: str(os.getpid())})
    files = [str(TESTS_DIR / name) for name in WARMUP_FILES]
    temporary = tempfile.mkdtemp(prefix="tinycnn-test-warmup-")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", temporary, *files],
            cwd=str(TESTS_DIR.parent), env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
    except OSError:                             # no process to spare: the suite compiles everything itself
        process = None
    _warmup = (process, temporary)


def pytest_sessionfinish(session, exitstatus):
    """Stop the warm-up process if it is still running, and remove its temporary folder."""
    if _warmup is None:
        return
    import shutil

    from tinycnn.compile_ahead import stop
    process, temporary = _warmup
    stop(process)
    shutil.rmtree(temporary, ignore_errors=True)


@pytest.fixture
def rng():
    """A fresh, seeded random generator per test: every test sees the same numbers on every run."""
    return np.random.default_rng(0)


@pytest.fixture
def restore_numba_threads():
    """Let a test change numba's thread count; the count in force before it is restored afterwards."""
    import numba
    threads = numba.get_num_threads()
    yield
    numba.set_num_threads(threads)
