"""The one place where numba options are chosen for every kernel.

Four decorators:

* ``jit``              -- serial kernels: ``cache=True`` (``njit`` is always nopython).
* ``parallel_jit``     -- kernels whose outer loop is a ``prange`` over *disjoint* writes:
                          ``cache=True, parallel=True``.
* ``parallel_sum_jit`` -- the same for a kernel of dot products, whose sums LLVM may reorder (the one
                          fastmath flag used, ``reassoc``; see its docstring for why it is harmless).
* ``inline_jit``       -- small helpers pasted into their callers (``inline="always"``).

and four helpers: ``one_blas_thread`` / ``serial_blas`` (one BLAS thread around a block / around our
GEMM-based kernels), ``num_threads`` and ``compiled_on_this_machine`` (is the on-disk cache warm?).

``cache=True`` stores the compiled machine code next to the source (``__pycache__``), so a second
process does not spend 1-12 s per kernel signature recompiling. ``fastmath`` is off everywhere else: its
other flags assume values finite or change roundings, and no test here proves those harmless.

Setting the environment variable ``NUMBA_DISABLE_JIT=1`` turns every kernel back into plain Python
(``prange`` becomes ``range``); the test suite runs a subset that way so the bodies stay readable and
correct as Python.
"""
import functools
import threading

import numba
from threadpoolctl import ThreadpoolController

prange = numba.prange

_COMMON_OPTIONS = dict(cache=True, fastmath=False, nogil=True)


def jit(function):
    """Compile ``function`` with numba (serial, cached)."""
    return numba.njit(**_COMMON_OPTIONS)(function)


def parallel_jit(function):
    """Compile ``function`` with numba; its ``prange`` loops run on all threads (cached)."""
    return numba.njit(parallel=True, **_COMMON_OPTIONS)(function)


def parallel_sum_jit(function):
    """:func:`parallel_jit` for a kernel made of dot products: LLVM may reorder the additions of a sum
    (numba's ``fastmath={"reassoc"}``, that one flag only), so that ``s += a[j] * b[j]`` runs as vectors,
    its partial sums in registers. Without it a sum is added strictly in order, one value at a time, and the
    kernels keep a partial sum per value in memory instead (a load and a store for every product).

    Only the order of the additions changes: no value is assumed finite, no product is fused or
    approximated. The order is fixed by the compiled code, so reruns and thread counts give the same bits
    on a machine (a machine with other vector units compiles another order, as its BLAS does). The tests
    that make it harmless for the one kernel using it, ``kernels.depthwise._weight_gradient_dots_kernel``:
    float32 and float64 agreement with the reference, bit-identical reruns and 1 vs 2 threads, and
    infinite inputs reaching only the weights that read them (``tests/test_depthwise.py``).
    """
    return numba.njit(parallel=True, fastmath={"reassoc"}, cache=True, nogil=True)(function)


def inline_jit(function):
    """Compile a small helper that numba pastes into each caller (``inline="always"``).

    Without it, every call of a helper inside a hot loop is a real function call that LLVM cannot
    see through (measured: 5-10x slower for the row loops of the depthwise kernels).

    When editing one: numba's on-disk cache checks only the source file of the kernel it compiled, so a
    kernel in ``depthwise.py`` keeps the old copy of a helper edited in ``_rows.py`` until its own file
    changes. Test such an edit with a fresh cache (``NUMBA_CACHE_DIR=$(mktemp -d) python -m pytest ...``)
    or after deleting ``kernels/__pycache__``.
    """
    return numba.njit(inline="always", **_COMMON_OPTIONS)(function)


_BLAS_THREADS = ThreadpoolController()
_BLAS_LIBRARIES = _BLAS_THREADS.select(user_api="blas").lib_controllers      # e.g. NumPy's OpenBLAS


_BLAS_LIMIT = threading.local()     # .depth: how many one_blas_thread() scopes this thread is inside


class one_blas_thread:
    """Inside this ``with`` block NumPy's BLAS runs on one thread; the user's setting comes back after.

    OpenBLAS's worker threads keep spinning for a while after each matrix product. In a network,
    every BLAS layer (pointwise, im2col convolution, the classifier's ``Linear``) is followed by a numba
    ``prange`` layer (depthwise, batch norm, pooling), whose threads then fight the spinning ones for the
    cores. Measured on a 2-core AMD EPYC (AVX2): a pointwise + depthwise pair took 75 ms alternating
    against 21 ms run apart; a MobileNet V2 training step (width 0.5, batch 64, 32 x 32) took ~185 ms
    when only the convolutions limited BLAS and ~95 ms when the whole step did. Parallelism comes from
    numba's loops instead.

    Scopes nest: only the outermost one talks to the BLAS library, so the trainer can hold one around a
    whole epoch and the kernels' own scopes (:func:`serial_blas`) cost nothing inside it. A class rather
    than a ``contextlib`` generator: a training step enters ~500 nested scopes, and a generator-based one
    costs ~2 us each. The outermost scope reads and sets each BLAS library's thread count through
    threadpoolctl's per-library controllers, found once at import: ~4 us, where building a
    ``ThreadpoolController.limit`` each time took ~20 us (measured on a 2-core AMD EPYC). A batch-1
    MobileNet forward outside any scope opens one per convolution, ~55 of them.
    """

    __slots__ = ("_previous",)

    def __enter__(self):
        depth = getattr(_BLAS_LIMIT, "depth", 0)
        self._previous = None
        if not depth:
            self._previous = [library.num_threads for library in _BLAS_LIBRARIES]
            for library, threads in zip(_BLAS_LIBRARIES, self._previous):
                if threads not in (None, 1):
                    library.set_num_threads(1)
        _BLAS_LIMIT.depth = depth + 1
        return self

    def __exit__(self, *exception):
        _BLAS_LIMIT.depth -= 1
        if self._previous is not None:
            for library, threads in zip(_BLAS_LIBRARIES, self._previous):
                if threads not in (None, 1):
                    library.set_num_threads(threads)
            self._previous = None
        return False


def serial_blas(function):
    """Decorate a GEMM-based kernel so that it runs inside :func:`one_blas_thread`."""
    @functools.wraps(function)
    def with_one_blas_thread(*args, **kwargs):
        with one_blas_thread():
            return function(*args, **kwargs)
    return with_one_blas_thread


def num_threads():
    """Number of threads numba's parallel loops use (``NUMBA_NUM_THREADS``, default: all cores)."""
    return numba.get_num_threads()


def compiled_on_this_machine(*dispatchers):
    """True when numba's on-disk cache already holds machine code for every one of ``dispatchers``.

    ``cache=True`` writes an index file (``__pycache__/<module>.<function>-<line>.py311.nbi``) the first
    time a kernel is compiled on a machine; without it, the first call compiles (1-12 s per kernel
    signature; about 70-80 s for the default ``tinycnn train`` on a 2-core AMD EPYC). Used to tell the
    user about that pause before it happens.
    """
    import os
    for dispatcher in dispatchers:
        cache = getattr(dispatcher, "_cache", None)
        index_path = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
        if index_path is None or not os.path.exists(index_path):
            return False
    return True
