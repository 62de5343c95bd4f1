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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hardswish_kernels_give_the_bits_of_the_numpy_expressions(dtype, rng):
    """The compiled passes against ``x * clip(x + 3, 0, 6) / 6`` and the derivative's ``np.where``
    (PyTorch's values at the kinks -3 and 3), over several chunks, with NaN and infinities."""
    from kernels.activation import hardswish_backward, hardswish_forward
    from tinycnn.nn.activation import Hardswish
    x = (4 * rng.standard_normal(2 * CHUNK + 7)).astype(dtype)
    x[:6] = [-3, 3, np.nan, -np.inf, np.inf, 0]
    grad_out = rng.standard_normal(x.shape).astype(dtype)
    with np.errstate(invalid="ignore"):
        expected_y = x * np.clip(x + 3, 0, 6) / 6
        expected_grad = grad_out * Hardswish()._derivative(x)
    np.testing.assert_array_equal(hardswish_forward(x), expected_y)
    np.testing.assert_array_equal(hardswish_backward(grad_out, x), expected_grad)
    assert hardswish_backward(grad_out, x)[:2].tolist() == [0.0, float(grad_out[1])]    # kinks: 0 at -3, 1 at 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hardsigmoid_kernels_give_the_bits_of_the_numpy_expressions(dtype, rng):
    """The compiled passes against ``clip(x + 3, 0, 6) / 6`` and ``grad_out * np.where(-3 < x < 3, 1/6, 0)``
    (0 at both kinks, as PyTorch), over several chunks, with NaN, infinities and negative gradients."""
    from kernels.activation import hardsigmoid_backward, hardsigmoid_forward
    from tinycnn.nn.activation import Hardsigmoid
    x = (4 * rng.standard_normal(2 * CHUNK + 7)).astype(dtype)
    x[:6] = [-3, 3, np.nan, -np.inf, np.inf, 0]
    grad_out = rng.standard_normal(x.shape).astype(dtype)
    expected_y = np.clip(x + 3, 0, 6) / 6
    expected_grad = grad_out * Hardsigmoid()._derivative(x)
    np.testing.assert_array_equal(hardsigmoid_forward(x), expected_y)
    assert hardsigmoid_forward(x).dtype == dtype and np.isnan(hardsigmoid_forward(x)[2])
    np.testing.assert_array_equal(hardsigmoid_backward(grad_out, x), expected_grad)
    np.testing.assert_array_equal(np.signbit(hardsigmoid_backward(grad_out, x)), np.signbit(expected_grad))
    assert hardsigmoid_backward(grad_out, x)[[0, 1, 5]].tolist() == [0.0, 0.0, float(grad_out[5] * dtype(1 / 6))]


def test_hardswish_layer_uses_the_compiled_passes_on_non_contiguous_input(rng):
    from tinycnn import nn
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32).transpose(0, 1, 3, 2)      # not C-contiguous
    layer = nn.Hardswish()
    y = layer(x)
    np.testing.assert_array_equal(y, x * np.clip(x + 3, 0, 6) / 6)
    grad = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(grad, layer._derivative(x))
