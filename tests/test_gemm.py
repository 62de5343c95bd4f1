"""``kernels._gemm.batched_matmul``: NumPy's BLAS called block by block from numba's threads (by its address,
``kernels._blas``)."""
import ctypes

import numpy as np
import pytest

from kernels import _blas, _gemm
from kernels._jit import jit, one_blas_thread


def _stack(rng, batch, rows, cols, dtype, transposed):
    """A (batch, rows, cols) stack, stored as it is or as the transpose of a contiguous stack."""
    if transposed:
        return rng.standard_normal((batch, cols, rows)).astype(dtype).transpose(0, 2, 1)
    return rng.standard_normal((batch, rows, cols)).astype(dtype)


def _expected(a, b, outputs):
    """``out[j] = sum_r a[i % A] @ b[i]``, ``i = r * outputs + j``, in float64 with explicit loops."""
    out = np.zeros((outputs, a.shape[1], b.shape[2]))
    for i in range(b.shape[0]):
        out[i % outputs] += a[i % a.shape[0]].astype(np.float64) @ b[i].astype(np.float64)
    return out


CASES = {                       # (A, B, C, M, K, N): a reused over B products, B // C summed per output
    "one_large_product": (1, 1, 1, 96, 16, 2000),
    "per_image_and_group": (2, 8, 8, 5, 7, 9),
    "weight_gradient_sum": (4, 12, 4, 20, 30, 50),
    "tall_output": (1, 1, 1, 1280, 64, 20),
    "vector_like": (1, 3, 3, 1, 5, 1),
    "matrix_vector": (1, 1, 1, 144, 576, 1),        # one product with a vector: np.matmul (gemv)
    "vector_matrix": (1, 1, 1, 1, 576, 144),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("case", list(CASES))
def test_batched_matmul_matches_float64_loops(case, transpose_a, transpose_b, dtype, rng):
    A, B, C, M, K, N = CASES[case]
    a, b = _stack(rng, A, M, K, dtype, transpose_a), _stack(rng, B, K, N, dtype, transpose_b)
    out = np.full((C, M, N), np.nan, dtype=dtype)
    with one_blas_thread():
        result = _gemm.batched_matmul(a, b, out)
    assert result is out
    expected = _expected(a, b, C)
    # float32: K * (B // C) terms of size ~1 summed with float32 rounding (~6e-8 each): 1e-5 of the scale
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_fallback_gives_the_same_products(dtype, rng, monkeypatch):
    a, b = _stack(rng, 4, 20, 30, dtype, True), _stack(rng, 12, 30, 50, dtype, False)
    with one_blas_thread():
        through_blas = _gemm.batched_matmul(a, b, np.empty((4, 20, 50), dtype=dtype))
        monkeypatch.setattr(_gemm, "_CBLAS", {})
        through_numpy = _gemm.batched_matmul(a, b, np.empty((4, 20, 50), dtype=dtype))
    np.testing.assert_allclose(through_blas, through_numpy, rtol=1e-5 if dtype == np.float32 else 1e-13)


def test_numpys_openblas_is_found_on_this_kind_of_machine():
    """NumPy's wheels ship scipy-openblas; if this fails, the products silently lost their parallelism."""
    from threadpoolctl import threadpool_info
    if not any(info.get("internal_api") == "openblas" for info in threadpool_info()):
        pytest.skip("NumPy here does not use OpenBLAS")
    assert set(_gemm._CBLAS) == {np.dtype(np.float32), np.dtype(np.float64)}


@pytest.mark.parametrize("one_product", [False, True])
@pytest.mark.parametrize("tile_values", [0, 16384, 1000])
def test_blocks_depend_on_the_shape_only_and_cover_the_output(tile_values, one_product):
    for M, N, K in [(96, 12544, 16), (1280, 49, 320), (7, 3, 2), (24, 144, 256), (1, 10**6, 1), (16, 12544, 32),
                    (960, 49, 160), (200, 196, 80), (24, 3136, 144), (1000, 1000, 49), (129, 300, 60)]:
        row_blocks, row_size, column_blocks, column_size = _gemm._blocks(M, N, K, tile_values, one_product)
        assert row_blocks >= 1 and column_blocks >= 1
        if row_blocks > _gemm.MAX_ROW_BLOCKS:                              # row tiles: an even number of them
            assert tile_values and one_product and row_blocks % 2 == 0 and row_size % 8 == 0
        assert (row_blocks - 1) * row_size < M <= row_blocks * row_size       # every block non-empty, all covered
        assert (column_blocks - 1) * column_size < N <= column_blocks * column_size
        if tile_values and K <= _gemm.TILE_MAX_DEPTH and row_size * column_size > tile_values:
            assert column_size == 16                                           # only when 16 columns are


def test_outputs_of_many_rows_are_cut_into_row_halves_and_short_wide_ones_into_columns():
    """Each thread writes one contiguous part of a tall output (see ``_blocks``); 16-24 rows stay in columns."""
    assert _gemm._blocks(144, 3136, 24, 0) == (2, 72, 1, 3136)       # MobileNet V2's 56 x 56 expansion
    assert _gemm._blocks(192, 784, 32, 0) == (2, 96, 1, 784)         # its 28 x 28 expansion, once in column strips
    assert _gemm._blocks(1280, 49, 320, 0) == (2, 640, 1, 49)        # taller than wide: rows, as before
    assert _gemm._blocks(24, 3136, 144, 0) == (1, 24, 4, 784)        # a projection to 24 channels: columns
    rows = _gemm.ROW_BLOCKS_MIN_ROWS
    assert _gemm._blocks(rows, 10**5, 8, 0)[:2] == (_gemm.MAX_ROW_BLOCKS, rows // 2)
    assert _gemm._blocks(rows - 8, 10**5, 8, 0)[0] == 1 and _gemm._blocks(rows - 8, 10**5, 8, 0)[2] > 1
    assert _gemm._blocks(32, 64, 16, 0) == (1, 32, 1, 64)            # 2^15 multiply-adds: not cut


def test_tiles_cut_large_blocks_into_columns_of_at_most_tile_values():
    """Where OpenBLAS runs its AVX-512 kernels (``TILE_VALUES``), a block of more values in a product at most
    TILE_MAX_DEPTH deep is cut again into columns, multiples of 16; smaller blocks keep their shape."""
    assert _gemm._blocks(96, 12544, 16, 16384) == (2, 48, 38, 336)      # 48 x 336 = 16128 values a tile
    assert _gemm._blocks(16, 12544, 32, 16384) == (1, 16, 13, 1024)     # column blocks, cut finer
    assert _gemm._blocks(960, 49, 160, 16384) == (2, 480, 1, 49)          # deeper than TILE_MAX_DEPTH: a block
    assert _gemm._blocks(960, 49, 48, 16384) == (2, 480, 2, 32)
    assert _gemm._blocks(32, 144, 784, 16384)[2:] == (1, 144)           # 16 x 144 values: fits
    assert _gemm.TILE_VALUES == (16384 if _gemm._BLAS_ARCHITECTURE in _gemm.TILED_ARCHITECTURES else 0)
    assert _gemm._blocks(96, 12544, 16) == _gemm._blocks(96, 12544, 16, _gemm.TILE_VALUES)


def test_one_deeper_product_is_cut_into_column_tiles_and_row_tiles_where_there_are_tiles():
    """A call making one product deeper than TILE_MAX_DEPTH (a batch-1 layer): blocks wider than twice
    DEEP_TILE_COLUMNS into tiles of that many columns; at most ROW_TILE_MAX_DEPTH deep and at least 4 x
    ROW_TILE_ROWS rows into an even number of row blocks near ROW_TILE_ROWS rows, each of at least
    MIN_BLOCK_WORK multiply-adds. A batch's products, and machines without tiles, keep the blocks."""
    assert _gemm.DEEP_TILE_COLUMNS == 128 and _gemm.ROW_TILE_ROWS == 32 and _gemm.ROW_TILE_MAX_DEPTH == 160
    assert _gemm._blocks(24, 3136, 144, 16384, one_product=True) == (1, 24, 25, 128)    # V2's 56 x 56 projection
    assert _gemm._blocks(24, 3136, 144, 16384) == (1, 24, 4, 784)                        # ... in a batch
    assert _gemm._blocks(24, 3136, 144, 0, one_product=True) == (1, 24, 4, 784)          # ... without tiles
    assert _gemm._blocks(32, 784, 144, 16384, one_product=True) == (2, 16, 7, 128)      # row blocks, then tiles
    assert _gemm._blocks(16, 784, 96, 16384, one_product=True) == (1, 16, 4, 208)       # 208 columns: kept
    assert _gemm._blocks(960, 49, 160, 16384, one_product=True) == (30, 32, 1, 49)      # row tiles
    assert _gemm._blocks(200, 196, 80, 16384, one_product=True) == (4, 56, 1, 196)      # 32 rows would be 7 blocks
    assert _gemm._blocks(672, 196, 112, 16384, one_product=True) == (28, 24, 1, 196)    # 32 rows: 21 blocks
    assert _gemm._blocks(320, 49, 960, 16384, one_product=True) == (2, 160, 1, 49)      # deeper than 160
    assert _gemm._blocks(48, 196, 144, 16384, one_product=True) == (2, 24, 1, 196)      # fewer than 128 rows
    assert _gemm._blocks(480, 49, 80, 16384, one_product=True) == (2, 240, 1, 49)       # 24 x 49 x 80 < 2^17
    assert _gemm._blocks(960, 49, 48, 16384, one_product=True) == _gemm._blocks(960, 49, 48, 16384)   # shallow


@pytest.mark.skipif(not _gemm._CBLAS, reason="needs NumPy's OpenBLAS")
@pytest.mark.parametrize("tile_values", [0, 4096])
def test_tiled_products_give_the_same_bits_on_one_and_two_threads_and_the_product(tile_values, rng, monkeypatch,
                                                                                  restore_numba_threads):
    import numba
    monkeypatch.setattr(_gemm, "TILE_VALUES", tile_values)
    a, b = _stack(rng, 1, 64, 16, np.float32, False), _stack(rng, 2, 16, 3000, np.float32, False)
    assert _gemm._blocks(64, 3000, 16)[2] == (1 if tile_values == 0 else 24)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        out = np.empty((2, 64, 3000), dtype=np.float32)
        with one_blas_thread():
            _gemm.batched_matmul(a, b, out)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    expected = _expected(a, b, 2)
    np.testing.assert_allclose(results[0], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.skipif(not _gemm._CBLAS, reason="needs NumPy's OpenBLAS")
@pytest.mark.parametrize("M, K, N", [(24, 144, 3136), (960, 160, 49), (200, 80, 196)])
def test_one_product_in_deep_tiles_gives_the_same_bits_on_one_and_two_threads_and_the_product(
        M, K, N, rng, monkeypatch, restore_numba_threads):
    import numba
    monkeypatch.setattr(_gemm, "TILE_VALUES", 16384)             # the AVX-512 blocks on any machine
    assert _gemm._blocks(M, N, K, one_product=True) != _gemm._blocks(M, N, K)
    a, b = _stack(rng, 1, M, K, np.float32, False), _stack(rng, 1, K, N, np.float32, False)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        with one_blas_thread():
            results.append(_gemm.batched_matmul(a, b, np.empty((1, M, N), dtype=np.float32)))
    np.testing.assert_array_equal(results[0], results[1])
    expected = _expected(a, b, 1)
    np.testing.assert_allclose(results[0], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_batched_matmul_gives_the_same_bits_on_one_and_two_threads(rng, restore_numba_threads):
    import numba
    a, b = _stack(rng, 1, 144, 24, np.float32, False), _stack(rng, 64, 24, 256, np.float32, True)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        with one_blas_thread():
            results.append(_gemm.batched_matmul(a, b, np.empty((64, 144, 256), dtype=np.float32)))
    np.testing.assert_array_equal(results[0], results[1])


def test_empty_products_give_zeros():
    out = np.full((2, 3, 4), np.nan)
    _gemm.batched_matmul(np.ones((1, 3, 0)), np.ones((2, 0, 4)), out)
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.nojit
def test_batched_matmul_small_case_runs_as_python_too(rng):
    """Small enough for NUMBA_DISABLE_JIT=1, where the kernel body runs as Python (ctypes calls)."""
    a, b = _stack(rng, 2, 3, 4, np.float64, True), _stack(rng, 4, 4, 5, np.float64, False)
    out = np.empty((2, 3, 5))
    with one_blas_thread():
        _gemm.batched_matmul(a, b, out)
    np.testing.assert_allclose(out, _expected(a, b, 2), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("low, high, hardswish", [(-np.inf, np.inf, False), (0.0, 6.0, False), (-np.inf, np.inf, True)])
def test_epilogue_finishes_each_row_with_its_channels_scale_shift_and_clip(low, high, hardswish, dtype, rng,
                                                                          monkeypatch):
    """Rows of out[j] are channels ``(j % G) * M + m``; the kernel and the NumPy path give the same bits,
    those of the clip followed by the hard-swish kernel when asked for."""
    from kernels.activation import hardswish_forward
    G, images, M, K, N = 2, 3, 8, 5, 700
    a, b = _stack(rng, G, M, K, dtype, False), 3 * _stack(rng, images * G, K, N, dtype, False)
    scale, shift = rng.standard_normal(G * M).astype(dtype), rng.standard_normal(G * M).astype(dtype)
    with one_blas_thread():
        plain = _gemm.batched_matmul(a, b, np.empty((images * G, M, N), dtype=dtype))
        epilogue = (scale, shift, low, high, hardswish)
        finished = _gemm.batched_matmul(a, b, np.empty_like(plain), epilogue=epilogue)
        monkeypatch.setattr(_gemm, "_CBLAS", {})
        through_numpy = _gemm.batched_matmul(a, b, np.empty_like(plain), epilogue=epilogue)
    channels = (np.arange(images * G) % G)[:, None] * M + np.arange(M)[None, :]                # (C, M)
    expected = np.clip(plain * scale[channels][..., None] + shift[channels][..., None], dtype(low), dtype(high))
    if hardswish:
        expected = hardswish_forward(expected)
        assert (expected == 0).any() and (expected < 0).any() and (expected > 3).any()     # all three pieces
    np.testing.assert_array_equal(finished, expected)
    np.testing.assert_array_equal(through_numpy, expected)
    if high == 6.0:
        assert (finished == 6.0).any() and (finished == 0.0).any()           # both ends of the clip reached


@pytest.mark.parametrize("M, N", [(144, 1), (1, 144)])
def test_one_matrix_vector_product_skips_the_blocked_kernel_and_keeps_the_epilogue(M, N, rng, monkeypatch):
    """A single product with a vector runs as np.matmul (gemv: gemm would pack the whole matrix for it);
    the epilogue is the same arithmetic as on the kernel's path."""
    a, b = _stack(rng, 1, M, 576, np.float32, False), _stack(rng, 1, 576, N, np.float32, True)
    scale, shift = rng.standard_normal(M).astype(np.float32), rng.standard_normal(M).astype(np.float32)

    def no_kernel(*args):
        raise AssertionError("the blocked kernel ran for a matrix-vector product")

    monkeypatch.setattr(_gemm, "_batched_matmul_kernel", no_kernel)
    with one_blas_thread():
        plain = _gemm.batched_matmul(a, b, np.empty((1, M, N), dtype=np.float32))
        finished = _gemm.batched_matmul(a, b, np.empty((1, M, N), dtype=np.float32), epilogue=(scale, shift, 0.0, 6.0))
    np.testing.assert_allclose(plain, _expected(a, b, 1), rtol=0, atol=1e-5 * np.abs(plain).max())
    expected = np.clip(plain * scale[None, :, None] + shift[None, :, None], np.float32(0), np.float32(6))
    np.testing.assert_array_equal(finished, expected)


@pytest.mark.skipif(not _gemm._CBLAS or not hasattr(_gemm._batched_matmul_kernel, "signatures"),
                    reason="needs numba's compiled kernel and NumPy's OpenBLAS")
def test_every_layout_of_both_dtypes_runs_on_four_compiled_signatures(rng):
    # C-, F- and any-strided operands and outputs, float32 then float64 then float32 again: the kernel is
    # compiled once per dtype and output layout (compilation opened again for the second dtype, closed
    # after it), and each dtype's BLAS function is told apart
    with one_blas_thread():
        for dtype in (np.float32, np.float64, np.float32):
            for transpose_a, transpose_b in [(False, False), (True, True)]:
                a, b = _stack(rng, 2, 5, 7, dtype, transpose_a), _stack(rng, 2, 7, 9, dtype, transpose_b)
                full = np.zeros((2, 5, 12), dtype=dtype)
                for out in (np.zeros((2, 5, 9), dtype=dtype), full[:, :, :9]):      # C-contiguous, strided
                    _gemm.batched_matmul(a, b, out)
                    expected = _expected(a, b, 2)
                    tolerance = 1e-5 if dtype == np.float32 else 1e-12        # as in the test above
                    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance * np.abs(expected).max())
    assert len(_gemm._batched_matmul_kernel.signatures) <= 4


_ONE_DTYPE_SCRIPT = """
import numpy as np
from kernels import _gemm
from kernels._jit import one_blas_thread
rng = np.random.default_rng(0)
with one_blas_thread():
    flipped = rng.standard_normal((2, 7, 5)).transpose(0, 2, 1), rng.standard_normal((2, 9, 7)).transpose(0, 2, 1)
    for a, b in [(rng.standard_normal((2, 5, 7)), rng.standard_normal((2, 7, 9))), flipped]:
        a, b = a.astype(np.float32), b.astype(np.float32)
        _gemm.batched_matmul(a, b, np.zeros((2, 5, 9), dtype=np.float32))
        _gemm.batched_matmul(a, b, np.zeros((2, 5, 12), dtype=np.float32)[:, :, :9])
print(sorted({str(signature[8]) for signature in _gemm._batched_matmul_kernel.signatures}))
"""


@pytest.mark.skipif(not _gemm._CBLAS or not hasattr(_gemm._batched_matmul_kernel, "signatures"),
                    reason="needs numba's compiled kernel and NumPy's OpenBLAS")
def test_a_float32_process_compiles_only_the_two_float32_signatures():
    # a float32 training run should not pay for float64's signatures (a fresh process: this one may have
    # fixed float64 already); the output's type is the 9th argument
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", _ONE_DTYPE_SCRIPT], capture_output=True, text=True, timeout=300,
                            check=True)
    assert result.stdout.strip() == "['array(float32, 3d, A)', 'array(float32, 3d, C)']"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matrix_vector_takes_any_layout_and_falls_back_to_numpy_without_gemv(dtype, rng, monkeypatch):
    # rows of a transposed matrix and a strided vector are copied to what gemv reads; without a gemv
    # symbol np.matmul does the product (to rounding: its own summation order)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    matrix = rng.standard_normal((37, 20)).astype(dtype).T                  # (20, 37), F-contiguous
    vector = rng.standard_normal(74).astype(dtype)[::2]                     # (37,), stride 2
    expected = matrix.astype(np.float64) @ vector.astype(np.float64)
    with one_blas_thread():
        ours = _gemm.matrix_vector(matrix, vector)
        monkeypatch.setattr(_gemm, "_CBLAS_GEMV", {})
        fallback = _gemm.matrix_vector(matrix, vector)
    for result in (ours, fallback):
        assert result.shape == (20,) and result.dtype == dtype
        np.testing.assert_allclose(result, expected, rtol=0, atol=tolerance * np.abs(expected).max())


@pytest.mark.skipif(not _gemm._CBLAS_GEMV, reason="needs NumPy's OpenBLAS gemv")
def test_a_large_matrix_vector_product_runs_in_row_blocks_with_the_same_bits_on_any_thread_count(rng):
    # (1000, 300) has more than PARALLEL_MATRIX_VECTOR_MIN_ELEMENTS elements: one gemv per block of rows,
    # the blocks fixed by the shape
    import numba
    matrix = rng.standard_normal((1000, 300)).astype(np.float32)
    vector = rng.standard_normal(300).astype(np.float32)
    assert matrix.size >= _gemm.PARALLEL_MATRIX_VECTOR_MIN_ELEMENTS
    expected = matrix.astype(np.float64) @ vector.astype(np.float64)
    threads = numba.get_num_threads()
    try:
        results = []
        for count in sorted({1, threads}):
            numba.set_num_threads(count)
            with one_blas_thread():
                results.append(_gemm.matrix_vector(matrix, vector))
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_allclose(results[0], expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


@pytest.mark.skipif(not _gemm._CBLAS, reason="needs NumPy's OpenBLAS")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups, images, M, K, N", [(1, 1, 96, 16, 3136), (1, 3, 5, 7, 9), (2, 4, 8, 6, 49),
                                                     (1, 1, 1280, 320, 49)])
@pytest.mark.parametrize("with_epilogue", [False, True])
def test_a_prepared_product_makes_batched_matmuls_kernel_call(groups, images, M, K, N, with_epilogue, dtype, rng):
    a = rng.standard_normal((groups, M, K)).astype(dtype)
    b = rng.standard_normal((images * groups, K, N)).astype(dtype)
    epilogue = None
    if with_epilogue:
        epilogue = (rng.uniform(0.5, 2, groups * M).astype(dtype), rng.standard_normal(groups * M).astype(dtype),
                    0.0, 6.0, True)
    expected, prepared = np.empty((images * groups, M, N), dtype), np.full((images * groups, M, N), np.nan, dtype)
    with one_blas_thread():
        _gemm.batched_matmul(a, b, expected, epilogue)
        run = _gemm.prepare_matmul_per_image(a, images * groups, N, epilogue)
        run(b, prepared)
        run(b, prepared)                                        # reusable: the same bits again
    np.testing.assert_array_equal(prepared, expected)


def test_a_product_batched_matmul_would_not_block_is_not_prepared(rng, monkeypatch):
    a = rng.standard_normal((1, 144, 576)).astype(np.float32)
    assert _gemm.prepare_matmul_per_image(a, 1, 1) is None                     # matrix-vector: gemv
    assert _gemm.prepare_matmul_per_image(a[:, :1], 1, 49) is None            # one row: gemv too
    assert _gemm.prepare_matmul_per_image(a, 0, 49) is None                    # nothing to compute
    monkeypatch.setattr(_gemm, "_CBLAS", {})
    assert _gemm.prepare_matmul_per_image(a, 2, 49) is None                    # no CBLAS: np.matmul


@pytest.mark.nojit
@pytest.mark.skipif(not _gemm._CBLAS or not _gemm._CBLAS_GEMV, reason="needs NumPy's OpenBLAS gemm and gemv")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blas_called_by_address_from_compiled_code_gives_numpys_products(dtype, rng):
    # kernels._blas: the address and integer width found at import, a transposed operand, beta = 1 adding
    # to what is there, and gemv; the same arithmetic as BLAS called through ctypes, so to rounding NumPy's
    a = rng.standard_normal((6, 4)).astype(dtype)
    b_t = rng.standard_normal((5, 4)).astype(dtype)                # b = b_t.T, read as CBLAS's TRANS
    start = rng.standard_normal((6, 5)).astype(dtype)
    c, y = start.copy(), np.empty(6, dtype=dtype)
    vector = rng.standard_normal(4).astype(dtype)
    _blas_products(_blas.function_address(_gemm._CBLAS[np.dtype(dtype)]),
                   _blas.function_address(_gemm._CBLAS_GEMV[np.dtype(dtype)]), _gemm._CBLAS_INTEGER, a, b_t, c,
                   vector, y)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, 2 * a @ b_t.T + start, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(y, a @ vector, rtol=tolerance, atol=tolerance)


@jit
def _blas_products(gemm, gemv, integer, a, b_t, c, vector, y):
    """``c = 2 a @ b_t^T + c`` and ``y = a @ vector`` through :mod:`kernels._blas` (plain Python without JIT)."""
    M, K = a.shape
    N = b_t.shape[0]
    zero, one, two = a.dtype.type(0), a.dtype.type(1), a.dtype.type(2)
    _blas.cblas_gemm(gemm, integer, _gemm.ROW_MAJOR, _gemm.NO_TRANS, _gemm.TRANS, M, N, K, two, a.ctypes.data, K,
                     b_t.ctypes.data, K, one, c.ctypes.data, N)
    _blas.cblas_gemv(gemv, integer, _gemm.ROW_MAJOR, _gemm.NO_TRANS, M, K, one, a.ctypes.data, K, vector.ctypes.data,
                     1, zero, y.ctypes.data, 1)


def test_a_blas_function_address_is_looked_up_once_per_function():
    if not _gemm._CBLAS:
        pytest.skip("needs NumPy's OpenBLAS")
    function = _gemm._CBLAS[np.dtype(np.float32)]
    address = _blas.function_address(function)
    assert isinstance(address, int) and address == ctypes.cast(function, ctypes.c_void_p).value
    assert _blas._ADDRESSES[id(function)] == (function, address)


@pytest.mark.nojit
@pytest.mark.parametrize("integer", [np.int32(0), np.int64(0)])
def test_blas_by_address_passes_integers_of_the_blas_width_and_reals_of_alpha_type(integer):
    # a BLAS with 32-bit integers (scipy_cblas_sgemm) is not the one found here: a recording C callback of
    # the CBLAS prototype stands in for it, and sees what compiled code passes through kernels._blas
    width = ctypes.c_int32 if integer.dtype == np.int32 else ctypes.c_int64
    seen = []
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, width, width, width, ctypes.c_float,
                                 ctypes.c_void_p, width, ctypes.c_void_p, width, ctypes.c_float, ctypes.c_void_p, width)
    callback = prototype(lambda *arguments: seen.append(arguments))
    a = np.arange(6, dtype=np.float32)
    _call_gemm_with(_blas.function_address(callback), integer, a)
    order, trans_a, trans_b, M, N, K, alpha, a_address, lda, b_address, ldb, beta, c_address, ldc = seen[0]
    assert (order, trans_a, trans_b, M, N, K, lda, ldb, ldc) == (101, 111, 112, 2, 3, 1 << 20, 4, 5, 6)
    assert (alpha, beta) == (0.5, 2.0)
    assert a_address == b_address == c_address == a.ctypes.data


@jit
def _call_gemm_with(address, integer, a):
    """One :func:`kernels._blas.cblas_gemm` call with recognisable arguments (``a`` for every matrix)."""
    _blas.cblas_gemm(address, integer, 101, 111, 112, 2, 3, 1 << 20, np.float32(0.5), a.ctypes.data, 4,
                     a.ctypes.data, 5, np.float32(2.0), a.ctypes.data, 6)


@pytest.mark.skipif(not _gemm._CBLAS or not hasattr(_gemm._batched_matmul_kernel, "signatures"),
                    reason="needs numba's compiled kernel and NumPy's OpenBLAS")
def test_the_blas_integer_width_is_part_of_the_kernel_signature(rng):
    # a kernel compiled (and cached) for a BLAS of one integer width is never called for the other one
    import numba
    with one_blas_thread():
        _gemm.batched_matmul(rng.standard_normal((1, 8, 8)), rng.standard_normal((1, 8, 8)), np.empty((1, 8, 8)))
    assert _gemm._batched_matmul_kernel.signatures
    for signature in _gemm._batched_matmul_kernel.signatures:
        assert signature[0] == numba.types.int64 and signature[1] == numba.typeof(_gemm._CBLAS_INTEGER)
