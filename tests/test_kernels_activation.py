"""kernels/activation.py: the one-pass ReLU / ReLU6 kernels against NumPy's formulas, kinks and NaN included."""
import numpy as np
import pytest

from kernels.activation import CHUNK, clip_backward, clip_forward


@pytest.mark.nojit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("high", [6.0, np.inf])
def test_clip_matches_numpy_at_the_kinks_and_propagates_nan(dtype, high):
    x = np.array([-1.0, 0.0, 0.5, 6.0, 7.0, np.nan, -np.inf, np.inf], dtype=dtype)
    grad_out = np.arange(1, 9, dtype=dtype)
    y = clip_forward(x, 0.0, high)
    np.testing.assert_array_equal(y, np.clip(x, 0, high))                 # NaN in the same place
    assert y.dtype == dtype
    expected = np.where((x > 0) & (x < high), grad_out, 0)                # 0 at both kinks and for NaN
    np.testing.assert_array_equal(clip_backward(grad_out, x, 0.0, high), expected)


@pytest.mark.parametrize("shape", [(3, 5, 7, 2), (2, CHUNK + 3), (1,)])
def test_clip_handles_several_chunks_any_shape_and_non_contiguous_input(shape, rng):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    grad_out = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(clip_forward(x, 0.0, 6.0), np.clip(x, 0, 6))
    np.testing.assert_array_equal(clip_backward(grad_out, x, 0.0, 6.0), np.where((x > 0) & (x < 6), grad_out, 0))
    if x.ndim == 4:
        transposed = x.transpose(0, 2, 1, 3)                              # a strided view
        np.testing.assert_array_equal(clip_forward(transposed, 0.0, np.inf), np.maximum(transposed, 0))
