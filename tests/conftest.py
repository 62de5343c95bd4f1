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

TESTS_DIR = pathlib.Path(__file__).resolve().parent
FIXTURES_DIR = TESTS_DIR / "fixtures"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

# no helper process compiling gradient kernels beside the training runs of the tests (and of the processes
# they start): tests/test_compile_ahead.py turns it on where it tests it
os.environ["TINYCNN_COMPILE_AHEAD"] = "0"

from helpers import TOLERANCES, assert_close, directional_gradcheck  # noqa: E402  (re-exported)

__all__ = ["TOLERANCES", "assert_close", "directional_gradcheck", "FIXTURES_DIR"]


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
