"""Matrix products on numba's threads: NumPy's own BLAS, called block by block from a ``prange`` loop.

Why not simply ``np.matmul``? OpenBLAS parallelises a product with worker threads of its own, and
those keep spinning after the product ends. In a network every matrix product (pointwise convolution,
im2col convolution) is followed by a numba ``prange`` layer (depthwise, batch norm), whose threads then
fight the spinning ones for the cores; so tinycnn runs NumPy's BLAS on one thread
(:func:`kernels._jit.one_blas_thread`), and a large product, such as a batch-1 pointwise layer at
112 x 112, used one core out of two.

Here the product is cut into independent blocks of rows or columns of the output, and each block is
one single-threaded BLAS call (``cblas_sgemm`` / ``cblas_dgemm``) made from a ``prange`` iteration, so
the cores are shared by *one* pool of threads, numba's. The BLAS is the one NumPy itself loaded
(found through threadpoolctl; a kernel takes the function's address as an integer argument, which
keeps it cacheable, and calls it through :mod:`kernels._blas`). Measured on a 2-core AMD EPYC (AVX2),
float32, one BLAS thread vs blocks on numba's two threads: (96, 16) @ (16, 12544) 0.83 -> 0.46 ms,
(144, 24) @ (24, 3136) 0.39 -> 0.23 ms, (1280, 320) @ (320, 49) 0.65 -> 0.45 ms (the first two cut into
column blocks then; :func:`_blocks` says how products are cut now, and why).

Blocks depend only on the shapes (and, where OpenBLAS runs its AVX-512 kernels, which already sum in
their own order, on :data:`TILE_VALUES`), never on the number of threads, so results are bit-identical on
1 or 2 threads. They must: OpenBLAS's sums depend on the block it is given, not only on the product (measured
with NumPy's OpenBLAS on a 2-core AMD EPYC, float32: (32, 27) @ (27, 3136) computed in column blocks of
1568, 784, 512, 64 or 16 differs in the last bits from one call, and so do row blocks of 8 of (576, 96) @
(96, 196)), so a change to :func:`_blocks` or its constants changes results in the last bits, and two
paths that promise the same bits (a frozen model and evaluation mode) must cut a product the same way.
Where no such BLAS is found (another BLAS vendor) the same products run through ``np.matmul``.

A matrix-vector product (a squeeze-and-excitation gate, a batch-1 classifier) is BLAS's gemv instead
(``cblas_sgemv`` / ``cblas_dgemv``, found beside gemm): gemm would copy ("pack") the whole matrix for a
single vector, and a large one is read in row blocks from numba's threads in the same way.

The entry points are :func:`batched_matmul` and :func:`matrix_vector`; :func:`prepare_matmul_per_image`
is :func:`batched_matmul` with its decisions made once, for weights and shapes that do not change.
"""
import ctypes
import functools
import threading

import numba
import numpy as np

from ._blas import GEMM_ARGUMENTS, GEMV_ARGUMENTS, cblas_gemm, cblas_gemv, cblas_prototype, function_address
from ._jit import parallel_jit, prange
from .activation import clip_value, hardswish_value
from .batchnorm import kernel_epilogue, unpack_epilogue

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112      # the CBLAS enum values

#: multiply-adds a block should hold at least: below it, a product is not cut (one call costs ~1 us)
MIN_BLOCK_WORK = 1 << 17
#: most blocks of columns one product is cut into (enough for 4 threads; more only adds calls)
MAX_BLOCKS = 4
#: most blocks of *rows* one product is cut into (see :func:`_blocks`)
MAX_ROW_BLOCKS = 2
#: outputs of at least this many rows are cut by rows, however many columns they have (see :func:`_blocks`)
ROW_BLOCKS_MIN_ROWS = 32


def _find_cblas():
    """``({dtype: cblas_?gemm}, {dtype: cblas_?gemv}, integer, architecture)`` as ctypes functions of
    NumPy's OpenBLAS, a zero of their integer type (``np.int64`` or ``np.int32``) and the name of the
    kernels OpenBLAS chose for this CPU (threadpoolctl's ``architecture``: ``"Haswell"``, ``"Zen"``,
    ``"SkylakeX"``, ...; None if not reported), or empty dicts (and None, None) if not found.

    Only symbols whose integer width is certain are used: scipy-openblas's ``scipy_cblas_?gemm64_``
    (64-bit integers, what NumPy 2 wheels ship) and ``scipy_cblas_?gemm`` (32-bit), and OpenBLAS's
    ``cblas_?gemm64_``; gemv by the same pattern from the same library. Each is checked on a small
    product before it is trusted.
    """
    try:
        from threadpoolctl import threadpool_info
        libraries = [info for info in threadpool_info() if info.get("internal_api") == "openblas"]
    except Exception:                        # threadpoolctl cannot inspect this process: use np.matmul
        return {}, {}, None, None
    architectures = {info["filepath"]: info.get("architecture") for info in libraries}
    paths = sorted(architectures, key=lambda path: "numpy" not in path)   # NumPy's own copy first
    candidates = [("scipy_cblas_{}{}64_", ctypes.c_int64), ("cblas_{}{}64_", ctypes.c_int64),
                  ("scipy_cblas_{}{}", ctypes.c_int32)]
    zeros = {ctypes.c_int64: np.int64(0), ctypes.c_int32: np.int32(0)}
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern, integer in candidates:
            gemm, gemv = {}, {}
            for letter, dtype, real in (("s", np.float32, ctypes.c_float), ("d", np.float64, ctypes.c_double)):
                if not hasattr(library, pattern.format(letter, "gemm")):
                    break
                prototype = cblas_prototype(GEMM_ARGUMENTS, integer, real)
                gemm[np.dtype(dtype)] = prototype((pattern.format(letter, "gemm"), library))
                if hasattr(library, pattern.format(letter, "gemv")):
                    prototype = cblas_prototype(GEMV_ARGUMENTS, integer, real)
                    gemv[np.dtype(dtype)] = prototype((pattern.format(letter, "gemv"), library))
            if len(gemm) == 2 and all(_gives_matmul(f, dtype) for dtype, f in gemm.items()):
                gemv = {dtype: f for dtype, f in gemv.items() if _gives_matrix_vector(f, dtype)}
                return gemm, gemv, zeros[integer], architectures[path]
    return {}, {}, None, None


def _gives_matmul(function, dtype):
    """Does ``function`` compute a small product as ``np.matmul`` does (to rounding)?"""
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    b = np.arange(12, dtype=dtype).reshape(3, 4)
    out = np.zeros((2, 4), dtype=dtype)
    function(ROW_MAJOR, NO_TRANS, NO_TRANS, 2, 4, 3, 1.0, a.ctypes.data, 3, b.ctypes.data, 4, 0.0,
             out.ctypes.data, 4)
    return np.array_equal(out, a @ b)


def _gives_matrix_vector(function, dtype):
    """Does the gemv ``function`` compute a small matrix-vector product as ``np.matmul`` does?"""
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    x = np.arange(3, dtype=dtype)
    out = np.zeros(2, dtype=dtype)
    function(ROW_MAJOR, NO_TRANS, 2, 3, 1.0, a.ctypes.data, 3, x.ctypes.data, 1, 0.0, out.ctypes.data, 1)
    return np.array_equal(out, a @ x)


_CBLAS, _CBLAS_GEMV, _CBLAS_INTEGER, _BLAS_ARCHITECTURE = _find_cblas()

#: OpenBLAS's kernels for which outputs are also cut into tiles of at most TILE_VALUES values (see
#: :func:`_blocks`): measured with its AVX-512 "SkylakeX" kernels only
TILED_ARCHITECTURES = ("SkylakeX",)
#: values of an output tile, 16384 (64 KiB of float32), where OpenBLAS runs TILED_ARCHITECTURES; 0: no
#: tiles (the AVX2 "Haswell" and "Zen" kernels, which gained nothing from them)
TILE_VALUES = 16384 if _BLAS_ARCHITECTURE in TILED_ARCHITECTURES else 0
#: only products at most this deep are tiled: each tile's call packs its rows of ``a`` again
TILE_MAX_DEPTH = 48
#: where there are tiles, a *single* deeper product's blocks wider than twice this are cut into tiles of
#: this many columns (see :func:`_blocks`)
DEEP_TILE_COLUMNS = 128
#: ... and a single product at most ROW_TILE_MAX_DEPTH deep with at least 4 x ROW_TILE_ROWS rows is cut into
#: an even number of row blocks of about ROW_TILE_ROWS rows
ROW_TILE_ROWS = 32
ROW_TILE_MAX_DEPTH = 160


def _operand(matrix_stack):
    """``(stack, transpose flag, leading dimension)`` describing a (B, rows, cols) stack for CBLAS.

    CBLAS reads a row-major matrix whose rows are ``ld`` elements apart, or (``TRANS``) the transpose
    of one. A stack whose matrices have neither layout is copied first.
    """
    itemsize = matrix_stack.itemsize
    row_step, col_step = matrix_stack.strides[1] // itemsize, matrix_stack.strides[2] // itemsize
    rows, cols = matrix_stack.shape[1:]
    if col_step == 1 and row_step >= max(cols, 1):
        return matrix_stack, NO_TRANS, row_step
    if row_step == 1 and col_step >= max(rows, 1):
        return matrix_stack, TRANS, col_step
    return _operand(np.ascontiguousarray(matrix_stack))


def _blocks(M, N, K, tile_values=None, one_product=False):
    """Cut an (M, N) output of a K-deep product into blocks: ``(row_blocks, row_size, column_blocks,
    column_size)``, block ``(r, q)`` being rows ``r*row_size`` to ``(r + 1)*row_size`` and the same for columns.
    ``one_product``: the call makes this one product only (a batch-1 layer), not one per image.

    By rows, at most :data:`MAX_ROW_BLOCKS` of them in multiples of 8 rows, when the output has at least
    :data:`ROW_BLOCKS_MIN_ROWS` rows or no more rows than columns; else by columns, at most
    :data:`MAX_BLOCKS` in multiples of 16. Each thread then writes one contiguous part of the output (and
    finishes it with the epilogue) rather than a strip of every row. Measured on a 2-core AMD EPYC (AVX2),
    float32 with a ReLU6 epilogue, the 72 products of the batch-1 224 x 224 pointwise layers of MobileNet V2
    (width 0.5, 1.0), V3-Small and V3-Large, each alternated against the rule before (rows only when
    M >= N, up to 4 blocks): 16.7 -> 15.3 ms in all, e.g. (192, 32) @ (32, 784) 131 -> 109 us,
    (144, 24) @ (24, 3136) 300 -> 259 us, (96, 576) @ (576, 196) 225 -> 171 us. In the models (two
    alternated runs each): a frozen batch-1 forward 1-9% faster, evaluation mode 2-5%; the training step
    (batch 64, 32 x 32) the same within the VM's noise (the products it cuts differently: 2.94 -> 2.78 ms
    a step). Two row blocks beat four here; outputs of 16 or 24 rows and thousands of columns (the
    projections of the first blocks) stay faster in column blocks (e.g. (24, 144) @ (144, 3136) 221-226
    us in 4 column blocks, 297 in 2 row blocks).

    Then, with ``tile_values`` (default :data:`TILE_VALUES`, nonzero where OpenBLAS runs its AVX-512
    kernels), a block of more values than that in a product at most :data:`TILE_MAX_DEPTH` deep is cut
    again into columns, in multiples of 16, so that each BLAS call writes a tile of at most ``tile_values``
    values and finishes it while it is in cache. With NumPy's OpenBLAS 0.3.31 running its "SkylakeX"
    kernels on a 2-core Intel Sapphire Rapids, float32 with a ReLU6 epilogue, alternated against the blocks
    alone (200 pairs): (96, 16) @ (16, 12544) 310 -> 203 us, (64, 16) @ (16, 12544) 271 -> 138, (16, 32) @
    (32, 12544) 97 -> 75, (144, 24) @ (24, 3136) 133 -> 114, (72, 24) @ (24, 3136) 86 -> 51, (192, 32) @
    (32, 784) 55 -> 42, (240, 40) @ (40, 784) 76 -> 56; tiles of 32768 values lost some of it ((16, 32) @
    (32, 12544) 126 us). The same machine with OpenBLAS's AVX2 "Haswell" kernels
    (``OPENBLAS_CORETYPE=Haswell``, what an AMD EPYC of this kind gets) gained nothing from any tile size
    (e.g. (96, 16) @ (16, 12544) 353 against 358-375 us), so there no tiles. Deeper products pay for
    packing their rows of ``a`` once per tile: tiling every product, a frozen batch-1 MobileNet V2 took
    1.8% longer; tiling those at most 48 deep, frozen batch-1 forwards (alternated, 100 pairs, two runs)
    V2 -2.0 / -2.7%, V2 width 0.5 -3.9 / -3.4%, V3-Large -2.4 / -2.5%, V3-Small -2.0 / -1.8%, the
    training step (batch 64, 32 x 32, whose products are per image and small) unchanged.

    Where there are tiles, a call that makes ``one_product`` deeper than :data:`TILE_MAX_DEPTH` is cut
    finer too (most likely because OpenBLAS's AVX-512 builds multiply small row-major products without
    packing them, its "direct" sgemm, where a block whose operands stay in cache gains most): blocks wider than twice :data:`DEEP_TILE_COLUMNS` into
    tiles of that many columns, and, at most :data:`ROW_TILE_MAX_DEPTH` deep and at least four times
    :data:`ROW_TILE_ROWS` rows tall, into an even number of row blocks of about that many rows (each still
    of at least :data:`MIN_BLOCK_WORK` multiply-adds). Same machine, ReLU6 epilogue, alternated against
    the blocks above (200 pairs): columns (24, 144) @ (144, 3136) 121 -> 105 us, (16, 96) @ (96, 3136) 56
    -> 43, (32, 144) @ (144, 784) 45 -> 32, (40, 120) @ (120, 784) 39 -> 34, while blocks of at most 208
    columns (784 in four) lost 11-15% in tiles of 128; rows (960, 160) @ (160, 49) 69 -> 63 us, (384, 64)
    @ (64, 196) 43 -> 36, (576, 96) @ (96, 49) 30 -> 25, (184, 80) @ (80, 196) 28 -> 24, while deeper
    products ((320, 960) @ (960, 49) +3 to +32%) and shorter outputs ((48, 144) @ (144, 196) +18%) lost.
    Frozen batch-1 forwards (alternated, 150-200 pairs): MobileNet V2 -3.0 / -3.3 / -3.0 / -3.9%, width
    0.5 -2.2 / -2.3%, V3-Large -2.4 / -1.9%, V3-Small -2.1 / -2.4%. As any change of blocks, it changed
    the last bits of some layers' outputs (31 of V2's 52 steps, up to 5e-11 on activations of ~1e-3);
    evaluation mode and a frozen model cut a product the same way, so they still agree bit for bit. A
    batch's products (one per image, already a task each) keep the blocks above: in a training step the
    finer blocks saved nothing (V2 width 0.5 34.5 vs 34.2 ms, V3-Small 32.6 vs 32.6) and would have
    changed the bits of the default run.
    With OpenBLAS's AVX2 "Haswell" kernels on the same machine, the same cuts lost 7-24% ((960, 160) @
    (160, 49) 97 -> 120 us, (24, 144) @ (144, 3136) 147 -> 158): they are made where there are tiles only.
    """
    return _cut_into_blocks(M, N, K, TILE_VALUES if tile_values is None else tile_values, bool(one_product))


@functools.lru_cache(maxsize=4096)
def _cut_into_blocks(M, N, K, tile_values, one_product):
    """:func:`_blocks` with the tile size given (cached: a frozen model asks once per layer, a training step
    ~100 times)."""
    work_blocks = int(max(1, (M * N * K) // MIN_BLOCK_WORK))     # blocks of at least MIN_BLOCK_WORK each
    if M >= N or M >= ROW_BLOCKS_MIN_ROWS:          # rows, in multiples of 8
        row_size = -(-M // min(MAX_ROW_BLOCKS, work_blocks))
        row_size = -(-row_size // 8) * 8
        row_blocks, column_size = -(-M // row_size), N
    else:
        column_size = -(-N // min(MAX_BLOCKS, work_blocks))    # columns, in multiples of 16 (64 bytes of float32)
        column_size = -(-column_size // 16) * 16
        row_blocks, row_size = 1, M
    if tile_values and K <= TILE_MAX_DEPTH and row_size * column_size > tile_values:
        column_size = max(16, tile_values // row_size // 16 * 16)
    elif tile_values and one_product and K > TILE_MAX_DEPTH:
        if column_size > 2 * DEEP_TILE_COLUMNS:
            column_size = DEEP_TILE_COLUMNS
        tile_rows = _even_row_blocks(M, ROW_TILE_ROWS) if K <= ROW_TILE_MAX_DEPTH and M >= 4 * ROW_TILE_ROWS else M
        if tile_rows < row_size and tile_rows * column_size * K >= MIN_BLOCK_WORK:
            row_blocks, row_size = -(-M // tile_rows), tile_rows
    return row_blocks, row_size, -(-N // column_size), column_size


def _even_row_blocks(M, rows):
    """The multiple of 8 nearest to ``rows`` (the smaller on a tie) that cuts ``M`` rows into an even number
    of blocks, so that two threads get as many: 960 rows -> 32 (30 blocks), 200 -> 56 (4 blocks: 56, 56, 56,
    32), where 32 would leave 7."""
    for distance in range(0, M + rows, 8):          # rows, rows - 8, rows + 8, rows - 16, ...
        for size in (rows - distance, rows + distance):
            if 8 <= size <= M and -(-M // size) % 2 == 0:
                return size
    return M                                        # 8 rows or fewer: one block


def batched_matmul(a, b, out, epilogue=None):
    """``out[j] = sum_r a[i % len(a)] @ b[i]`` with ``i = r * len(out) + j``, written into ``out``.

    Parameters
    ----------
    a : ndarray (A, M, K)
        Reused cyclically over the products (``A`` divides ``B``): a stack of per-group weights.
    b : ndarray (B, K, N)
        ``B`` is a multiple of ``len(out)``: ``B // len(out)`` products are summed into each ``out[j]``.
    out : ndarray (C, M, N), rows contiguous (``out.strides[2] == itemsize``)
        Overwritten.
    epilogue : tuple ``(scale, shift, low, high[, hardswish])`` or None
        Then each output row is finished, while it is still in cache, as
        ``out[j, m] = clip(out[j, m] * scale[c] + shift[c], low, high)`` with ``c = (j % G) * M + m``,
        ``G = len(scale) // M``, followed by hard swish ``v * clip(v + 3, 0, 6) / 6`` when ``hardswish``
        is true: a batch norm with running statistics and a ReLU/ReLU6 or hard swish after a pointwise
        convolution (``tinycnn.nn.fusion``). ``scale``, ``shift`` have ``out``'s dtype.

    Every matrix may be a strided view (a transposed matrix is read as CBLAS's ``TRANS``). The products
    run on numba's threads, each output cut into blocks by :func:`_blocks`; summed products are added
    in the order ``r = 0, 1, ...``. Call inside :func:`kernels._jit.one_blas_thread`.
    """
    products, outputs = b.shape[0], out.shape[0]
    M, K = a.shape[1:]
    N = b.shape[2]
    if out.size == 0 or K == 0:
        out[...] = 0
        return _finish_rows_numpy(out, epilogue)
    if products == 1 and (M == 1 or N == 1):
        # one matrix-vector product (a squeeze-and-excitation gate, a batch-1 layer on a 1x1 map): gemm
        # would copy ("pack") the whole matrix for a single vector (measured on a 2-core AMD EPYC:
        # (144, 576) @ (576, 1) 29 us with gemm, 5 us with gemv)
        if N == 1:                                  # (M, K) @ (K,): the rows of a
            matrix, vector, result = a[0], b[0, :, 0], out[0, :, 0]
        else:                                       # (1, K) @ (K, N): the columns of b, as rows of b^T
            matrix, vector, result = b[0].T, a[0, 0], out[0, 0]
        result[...] = matrix_vector(matrix, vector)
        return _finish_rows_numpy(out, epilogue)
    function = _CBLAS.get(out.dtype)
    if function is None or out.strides[2] != out.itemsize or out.shape[1] > 1 and out.strides[1] < out.itemsize * N:
        _batched_matmul_numpy(a, b, out)
        return _finish_rows_numpy(out, epilogue)
    a, trans_a, lda = _operand(a)
    b, trans_b, ldb = _operand(b)
    blocks = _blocks(M, N, K, one_product=products == 1)    # row_blocks, row_size, column_blocks, column_size
    ldc = out.strides[1] // out.itemsize if out.shape[1] > 1 else N     # one row: any stride will do
    if out.dtype not in _SIGNATURES_FIXED_FOR:
        _fix_kernel_signatures(out.dtype)
    _batched_matmul_kernel(function_address(function), _CBLAS_INTEGER, a, trans_a, lda, b, trans_b, ldb, out, ldc,
                           products // outputs, *blocks, *kernel_epilogue(epilogue, out.dtype))
    return out


def prepare_matmul_per_image(a, images, columns, epilogue=None):
    """:func:`batched_matmul` for one fixed ``a`` and shape, with every decision made once: ``run(b, out)``.

    Parameters
    ----------
    a : ndarray (G, M, K)
        The weights, used cyclically: product ``i`` is ``a[i % G] @ b[i]``.
    images : int
        ``B``, the number of products (a multiple of ``G``: images x groups).
    columns : int
        ``N``, the columns of each ``b[i]`` and ``out[i]`` (the pixels of a pointwise convolution).
    epilogue : as :func:`batched_matmul`'s, or None

    Returns
    -------
    run : callable ``run(b, out)`` for C-contiguous ``b`` (B, K, N) and ``out`` (B, M, N), or None when
        :func:`batched_matmul` would not call its blocked kernel for these shapes (no CBLAS, an empty or
        matrix-vector product): then call :func:`batched_matmul` itself.

    ``run`` makes exactly the kernel call :func:`batched_matmul` makes (same blocks, same epilogue), so the
    results are the same bits; what it saves is the analysis of the arguments (~5-10 us a call, measured
    on a 2-core AMD EPYC), which a frozen model (``tinycnn.nn.freeze``) would repeat on every call for the
    same weights and shapes. Call it inside :func:`kernels._jit.one_blas_thread`.
    """
    M, K = a.shape[1:]
    function = _CBLAS.get(a.dtype)
    if function is None or images * M * columns == 0 or K == 0 or images == 1 and (M == 1 or columns == 1):
        return None
    a, trans_a, lda = _operand(a)
    blocks = _blocks(M, columns, K, one_product=images == 1)
    finish = kernel_epilogue(epilogue, a.dtype)
    if a.dtype not in _SIGNATURES_FIXED_FOR:
        _fix_kernel_signatures(a.dtype)

    address = function_address(function)

    def run(b, out):
        _batched_matmul_kernel(address, _CBLAS_INTEGER, a, trans_a, lda, b, NO_TRANS, columns, out, columns, 1, *blocks,
                               *finish)

    return run


#: matrices of at least this many elements (1 MiB of float32) are multiplied with a vector in
#: MATRIX_VECTOR_BLOCKS blocks of rows on numba's threads: a classifier's (1000, 1280) weights are read
#: from memory, and one core alone does not draw all the bandwidth there is. Measured on a 2-core AMD
#: EPYC, weights not in cache: (1000, 1280) 259 -> 145 us, (1280, 960) 244 -> 172 us. Smaller matrices
#: (every squeeze-and-excitation gate) are one gemv call.
PARALLEL_MATRIX_VECTOR_MIN_ELEMENTS = 1 << 18
MATRIX_VECTOR_BLOCKS = 8


def matrix_vector(matrix, vector):
    """``matrix @ vector`` for one (R, K) matrix and a (K,) vector of one dtype: (R,), a new array.

    BLAS's ``cblas_?gemv`` called directly (row-major, no transpose, C-contiguous operands): one call, the
    same that the squeeze-and-excitation kernel makes from compiled code (:mod:`kernels.squeeze_excitation`),
    so the two give the same bits; from :data:`PARALLEL_MATRIX_VECTOR_MIN_ELEMENTS` elements one call per
    block of rows on numba's threads (blocks fixed by the shape: the same bits on any thread count).
    ``np.matmul`` (which picks its own gemv call) when no gemv was found. Call inside
    :func:`kernels._jit.one_blas_thread`.
    """
    result = np.empty(matrix.shape[0], dtype=matrix.dtype)
    gemv = _CBLAS_GEMV.get(matrix.dtype)
    if gemv is None or vector.dtype != matrix.dtype:
        return np.matmul(matrix, vector, out=result)
    matrix, vector = np.ascontiguousarray(matrix), np.ascontiguousarray(vector)
    rows, columns = matrix.shape
    if rows * columns >= PARALLEL_MATRIX_VECTOR_MIN_ELEMENTS:
        _matrix_vector_blocks_kernel(function_address(gemv), _CBLAS_INTEGER, matrix, vector, result,
                                     MATRIX_VECTOR_BLOCKS)
    else:
        gemv(ROW_MAJOR, NO_TRANS, rows, columns, 1.0, matrix.ctypes.data, max(columns, 1), vector.ctypes.data, 1,
             0.0, result.ctypes.data, 1)
    return result


@parallel_jit
def _matrix_vector_blocks_kernel(gemv, integer, matrix, vector, result, blocks):
    """``result = matrix @ vector`` as one gemv call per block of rows: (R, K) @ (K,) -> (R,); ``gemv`` the
    address of ``cblas_?gemv``, ``integer`` a zero of its integer type (:mod:`kernels._blas`)."""
    R, K = matrix.shape
    one, zero = matrix.dtype.type(1), matrix.dtype.type(0)
    size = (R + blocks - 1) // blocks
    for block in prange(blocks):                        # disjoint blocks of rows
        r0, r1 = block * size, min(R, (block + 1) * size)
        if r1 > r0:
            cblas_gemv(gemv, integer, ROW_MAJOR, NO_TRANS, r1 - r0, K, one, matrix[r0:r1].ctypes.data, max(K, 1),
                       vector.ctypes.data, 1, zero, result[r0:r1].ctypes.data, 1)


#: the dtypes whose signatures of :func:`_batched_matmul_kernel` are compiled (:func:`_fix_kernel_signatures`)
_SIGNATURES_FIXED_FOR = set()
_SIGNATURES_LOCK = threading.Lock()


def _fix_kernel_signatures(dtype):
    """Compile :func:`_batched_matmul_kernel` for ``dtype`` and any layout of ``a`` and ``b``, then close it
    to new signatures.

    numba compiles a kernel once per combination of argument types, and an array's type includes its
    layout: C-contiguous, Fortran-contiguous or any strides ('A'). With ``a``, ``b`` and ``out`` free,
    the test suite compiled 24 versions of this kernel (~2.5 s each, a fifth of its compile time) that
    differ only in how a pointer is computed. Here, for the dtype of the first call that needs it, ``a``
    and ``b`` are typed 'A' and ``out`` 'C' or 'A' (2 signatures per dtype); while compilation is
    disabled, numba converts a C- or F-contiguous array to the 'A' version instead of compiling another
    one (a safe conversion, same call cost). One dtype at a time: a float32 training run compiles two
    signatures, not also float64's two (measured on a 2-core AMD EPYC, cold cache: 9.6 s for all four).
    ``cache=True`` still applies: on a warm machine ``compile`` loads them from disk. A dtype counts as fixed
    only once its signatures exist, so a compile that was skipped is tried again on the next call.
    """
    with _SIGNATURES_LOCK:
        if dtype in _SIGNATURES_FIXED_FOR:
            return
        if hasattr(_batched_matmul_kernel, "disable_compile"):        # not under NUMBA_DISABLE_JIT=1
            types = numba.types
            real = numba.from_dtype(dtype)
            operand, vector = types.Array(real, 3, "A"), types.Array(real, 1, "C")
            _batched_matmul_kernel.disable_compile(False)
            try:
                for out_layout in ("C", "A"):
                    _batched_matmul_kernel.compile(
                        (types.int64, numba.typeof(_CBLAS_INTEGER), operand, types.int64, types.int64, operand,
                         types.int64, types.int64, types.Array(real, 3, out_layout), types.int64, types.int64,
                         types.int64, types.int64, types.int64, types.int64, vector, vector, real, real,
                         types.boolean))
            finally:
                _batched_matmul_kernel.disable_compile()
            if not any(signature[8].dtype == real for signature in _batched_matmul_kernel.signatures):
                return          # nothing compiled (tinycnn.compile_ahead's filter skips compiles): not fixed yet
        _SIGNATURES_FIXED_FOR.add(dtype)


def _batched_matmul_numpy(a, b, out):
    """The same as :func:`batched_matmul` with ``np.matmul`` (no suitable BLAS found)."""
    outputs = out.shape[0]
    for r in range(b.shape[0] // outputs):
        indices = np.arange(r * outputs, (r + 1) * outputs)
        product = np.matmul(a[indices % a.shape[0]], b[indices])
        if r == 0:
            out[...] = product
        else:
            out += product


def _finish_rows_numpy(out, epilogue):
    """:func:`batched_matmul`'s epilogue in NumPy, same arithmetic (the paths without the kernel)."""
    if epilogue is not None and out.size:
        scale, shift, low, high, hardswish = unpack_epilogue(epilogue)
        C, M, _ = out.shape
        rows = np.arange(C)[:, None] % (len(scale) // M) * M + np.arange(M)[None, :]     # (C, M) channels
        np.clip(out * scale[rows][:, :, None] + shift[rows][:, :, None], out.dtype.type(low), out.dtype.type(high),
                out=out)
        if hardswish:
            out[...] = out * np.clip(out + 3, 0, 6) / 6                 # the hard-swish kernel's bits
    return out


@parallel_jit
def _batched_matmul_kernel(gemm, integer, a, trans_a, lda, b, trans_b, ldb, out, ldc, sums, row_blocks, row_size,
                           column_blocks, column_size, scale, shift, low, high, hardswish):
    """One CBLAS call per (output matrix, block, summed product); ``prange`` over disjoint output blocks.

    ``gemm`` is the address of ``cblas_?gemm`` and ``integer`` a zero of its integer type
    (:mod:`kernels._blas`); the blocks are :func:`_blocks`'s. With a non-empty ``scale``, each block's rows
    are then finished in place (``batched_matmul``'s epilogue).
    """
    outputs, M, N = out.shape
    K = a.shape[2]
    groups = scale.shape[0] // M
    zero, one = out.dtype.type(0), out.dtype.type(1)
    three, six = out.dtype.type(3), out.dtype.type(6)                   # hard swish's constants, with zero
    count = row_blocks * column_blocks
    for task in prange(outputs * count):                 # disjoint (output matrix, block) pairs
        j, block = task // count, task % count
        row_block, column_block = block // column_blocks, block % column_blocks
        m0, m1 = row_block * row_size, min(M, (row_block + 1) * row_size)
        n0, n1 = column_block * column_size, min(N, (column_block + 1) * column_size)
        for r in range(sums):                            # products summed into out[j], in order
            i = r * outputs + j
            beta = zero if r == 0 else one
            cblas_gemm(gemm, integer, ROW_MAJOR, trans_a, trans_b, m1 - m0, n1 - n0, K, one,
                       a[i % a.shape[0], m0:m1, :].ctypes.data, lda,    # (m1-m0, K) block of a
                       b[i, :, n0:n1].ctypes.data, ldb,                  # (K, n1-n0) block of b
                       beta, out[j, m0:m1, n0:n1].ctypes.data, ldc)      # (m1-m0, n1-n0) block of out
        if groups > 0:                                   # epilogue: scale, shift, clip each row
            for m in range(m0, m1):
                channel = (j % groups) * M + m
                row_scale, row_shift = scale[channel], shift[channel]
                row = out[j, m, n0:n1]                   # (n1-n0,) just written: still in cache
                for q in range(n1 - n0):
                    value = row[q] * row_scale + row_shift
                    row[q] = clip_value(value, low, high)
                if hardswish:                            # a second pass over the row, still in cache
                    for q in range(n1 - n0):
                        row[q] = hardswish_value(row[q], zero, three, six)
