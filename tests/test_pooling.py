"""The fast pooling kernels (``kernels/pooling.py``) against ``kernels.reference``.

Max pooling's values and argmax must be *exactly* the reference's (a maximum involves no rounding), and
so must its ties (first maximum in row-major window order), its padding (never wins) and its NaNs
(propagate, as in PyTorch). Average pooling and the backward passes are sums and get tolerances relative
to the largest expected magnitude, the expected values computed in float64 from the same inputs:

* float64 ``1e-12``: sums of at most kH*kW (or H*W) terms in a different order, ~1e-16 per rounding.
* float32 ``1e-5``: the kernels accumulate window sums in float64 and round once (<= 6e-8 relative);
  the max-pool backward adds up to kH*kW float32 gradients per pixel (~1e-7 relative). 1e-5 leaves a
  wide margin and still catches any indexing mistake, which is an O(1) error.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from helpers import directional_gradcheck
from kernels import reference as R
from kernels.pooling import (avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward,
                             global_avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward)

RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
GRADCHECK_RTOL = 1e-6

# name: (x shape, pooling arguments)
CONFIGS = {
    "k2_default_stride_even": ((2, 3, 6, 8), dict(kernel_size=2)),
    "k2_default_stride_odd_drops_last_row": ((1, 2, 7, 5), dict(kernel_size=2)),
    "k3_stride2_pad1_resnet_stem": ((3, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1)),
    "k3_stride1_pad1_overlapping": ((1, 3, 5, 5), dict(kernel_size=3, stride=1, padding=1)),
    "k3x2_stride1x2_pad1x0": ((2, 2, 5, 6), dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0))),
    "k1_stride2": ((1, 2, 5, 4), dict(kernel_size=1, stride=2)),
    "k4_stride3_pad2": ((3, 1, 8, 9), dict(kernel_size=4, stride=3, padding=2)),
}
DTYPES = [np.float64, np.float32]


def assert_matches(actual, expected, dtype):
    """``|actual - expected| <= RTOL[dtype] * max|expected|``, same shape, ``actual`` in ``dtype``."""
    assert actual.dtype == np.dtype(dtype)
    assert actual.shape == expected.shape
    tolerance = RTOL[np.dtype(dtype)] * np.max(np.abs(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance)


def assert_pooling_matches_reference(x, grad_out, params):
    """max / avg pooling forward and backward against the reference, for one x and one grad_out."""
    dtype = x.dtype
    x64, grad_out64 = x.astype(np.float64), grad_out.astype(np.float64)
    y, argmax = max_pool2d_forward(x, **params)
    y_expected, argmax_expected = R.max_pool2d_forward(x, **params)
    assert y.dtype == dtype and argmax.dtype == np.int64
    np.testing.assert_array_equal(y, y_expected)
    np.testing.assert_array_equal(argmax, argmax_expected)
    assert_matches(max_pool2d_backward(grad_out, argmax, x.shape, **params),
                   R.max_pool2d_backward(grad_out64, argmax_expected, x.shape, **params), dtype)
    assert_matches(avg_pool2d_forward(x, **params), R.avg_pool2d_forward(x64, **params), dtype)
    assert_matches(avg_pool2d_backward(grad_out, x.shape, **params),
                   R.avg_pool2d_backward(grad_out64, x.shape, **params), dtype)


# --- against the reference ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CONFIGS)
def test_max_and_avg_pool2d_match_reference(name, dtype, rng):
    x_shape, params = CONFIGS[name]
    x = rng.standard_normal(x_shape).astype(dtype)
    grad_out = rng.standard_normal(R.avg_pool2d_forward(x, **params).shape).astype(dtype)
    assert_pooling_matches_reference(x, grad_out, params)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 5, 1, 1), (3, 2, 4, 6)])
def test_global_avg_pool2d_matches_reference(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    grad_out = rng.standard_normal((*shape[:2], 1, 1)).astype(dtype)
    assert_matches(global_avg_pool2d_forward(x), R.global_avg_pool2d_forward(x.astype(np.float64)), dtype)
    assert_matches(global_avg_pool2d_backward(grad_out, shape),
                   R.global_avg_pool2d_backward(grad_out.astype(np.float64), shape), dtype)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_pooling_matches_reference_on_random_configurations(data):
    draw = lambda strategy: data.draw(strategy)                          # noqa: E731
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    strides = kernel if stride is None else stride
    output_size = [(n + 2 * p - k) // s + 1 for n, p, k, s in zip(shape[2:], padding, kernel, strides)]
    assume(min(output_size) >= 1)
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # small integers make ties common, so the tie rule is exercised too
    x = rng.integers(-3, 4, shape).astype(dtype)
    grad_out = rng.standard_normal((*shape[:2], *output_size)).astype(dtype)
    assert_pooling_matches_reference(x, grad_out, dict(kernel_size=kernel, stride=stride, padding=padding))


# --- the rules: ties, padding, NaN, overlapping windows ---------------------------------------------

@pytest.mark.nojit
def test_max_pool2d_ties_route_each_windows_gradient_to_its_first_element():
    x = np.full((1, 1, 4, 4), 7.0)                                      # every window is one big tie
    y, argmax = max_pool2d_forward(x, kernel_size=2)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 7.0))
    np.testing.assert_array_equal(argmax[0, 0], [[0, 2], [8, 10]])     # top-left pixel of each window
    grad_x = max_pool2d_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), argmax, x.shape, kernel_size=2)
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1.0, 2.0, 3.0, 4.0
    np.testing.assert_array_equal(grad_x[0, 0], expected)


@pytest.mark.nojit
def test_avg_pool2d_counts_padding_as_zeros_and_divides_by_the_full_window():
    y = avg_pool2d_forward(np.ones((1, 1, 3, 3)), kernel_size=3, stride=1, padding=1)
    np.testing.assert_allclose(y[0, 0], np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 9, rtol=1e-15)
    grad_x = avg_pool2d_backward(np.ones((1, 1, 3, 3)), (1, 1, 3, 3), kernel_size=3, stride=1, padding=1)
    np.testing.assert_allclose(grad_x[0, 0], np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 9, rtol=1e-15)


def test_max_pool2d_padding_never_wins_over_negative_inputs():
    x = np.full((1, 1, 3, 4), -5.0)                                     # zero padding would beat -5
    y, argmax = max_pool2d_forward(x, kernel_size=3, stride=2, padding=1)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), -5.0))
    np.testing.assert_array_equal(argmax[0, 0], [[0, 1], [4, 5]])       # first in-image pixel of each window


def test_max_pool2d_of_minus_infinity_points_at_the_first_pixel_in_the_image():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, argmax = max_pool2d_forward(x, kernel_size=2, stride=1, padding=1)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(argmax, R.max_pool2d_forward(x, kernel_size=2, stride=1, padding=1)[1])
    np.testing.assert_array_equal(argmax[0, 0, 1:, 1:], np.arange(9).reshape(3, 3))  # windows start at (i-1, j-1)


def test_max_pool2d_propagates_nan_like_pytorch():
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 2, 3] = np.nan
    y, argmax = max_pool2d_forward(x, kernel_size=3, stride=1, padding=1)
    y_expected, argmax_expected = R.max_pool2d_forward(x, kernel_size=3, stride=1, padding=1)
    np.testing.assert_array_equal(y, y_expected)                        # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(argmax, argmax_expected)
    assert np.isnan(y[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 1 * 4 + 1


def test_max_pool2d_backward_adds_the_gradients_of_overlapping_windows():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0                                                 # the centre is the max of all 4 windows
    y, argmax = max_pool2d_forward(x, kernel_size=2, stride=1)
    grad_x = max_pool2d_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), argmax, x.shape, 2, 1)
    assert grad_x[0, 0, 1, 1] == 10.0 and grad_x.sum() == 10.0


# --- adjoints and finite differences (float64) ----------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_pooling_backwards_are_adjoints_of_their_linear_forwards(name, rng):
    x_shape, params = CONFIGS[name]
    x = rng.standard_normal(x_shape)
    y = avg_pool2d_forward(x, **params)
    grad_y = rng.standard_normal(y.shape)
    assert np.vdot(x, avg_pool2d_backward(grad_y, x.shape, **params)) == pytest.approx(np.vdot(y, grad_y), rel=1e-12)
    y, argmax = max_pool2d_forward(x, **params)                        # for a fixed argmax: "gather x at argmax"
    assert np.vdot(x, max_pool2d_backward(grad_y, argmax, x.shape, **params)) == pytest.approx(np.vdot(y, grad_y), rel=1e-12)
    y = global_avg_pool2d_forward(x)
    grad_y = rng.standard_normal(y.shape)
    assert np.vdot(x, global_avg_pool2d_backward(grad_y, x.shape)) == pytest.approx(np.vdot(y, grad_y), rel=1e-12)


@pytest.mark.parametrize("name", ["k3_stride2_pad1_resnet_stem", "k3x2_stride1x2_pad1x0", "k4_stride3_pad2"])
def test_pooling_gradients_pass_finite_difference_check(name, rng):
    x_shape, params = CONFIGS[name]
    # distinct values 0.1 apart: the +-1e-6 steps of the check cannot change which pixel is a window's max
    x = rng.permutation(np.arange(np.prod(x_shape)) * 0.1).reshape(x_shape)
    y, argmax = max_pool2d_forward(x, **params)
    grad_y = rng.standard_normal(y.shape)
    grad_y_global = rng.standard_normal((*x_shape[:2], 1, 1))
    checks = [
        (lambda v: np.vdot(grad_y, max_pool2d_forward(v, **params)[0]), max_pool2d_backward(grad_y, argmax, x.shape, **params)),
        (lambda v: np.vdot(grad_y, avg_pool2d_forward(v, **params)), avg_pool2d_backward(grad_y, x.shape, **params)),
        (lambda v: np.vdot(grad_y_global, global_avg_pool2d_forward(v)),
         global_avg_pool2d_backward(grad_y_global, x.shape)),
    ]
    for f, grad in checks:
        analytic, numeric = directional_gradcheck(f, x, grad, rng=rng)
        assert numeric == pytest.approx(analytic, rel=GRADCHECK_RTOL, abs=1e-9)


# --- memory layout, and PyTorch ---------------------------------------------------------------------

def test_pooling_gives_the_same_answer_for_non_contiguous_inputs(rng):
    x_strided = rng.standard_normal((2, 3, 14, 7))[:, :, ::2]          # (2, 3, 7, 7), rows skipped
    x_transposed = rng.standard_normal((2, 3, 7, 7)).transpose(0, 1, 3, 2)
    grad_out_strided = rng.standard_normal((2, 3, 8, 4))[:, :, ::2]    # (2, 3, 4, 4), rows skipped
    grad_out = np.ascontiguousarray(grad_out_strided)
    for x_view in (x_strided, x_transposed):
        x = np.ascontiguousarray(x_view)
        y, argmax = max_pool2d_forward(x_view, 3, 2, 1)
        y_contiguous, argmax_contiguous = max_pool2d_forward(x, 3, 2, 1)
        np.testing.assert_array_equal(y, y_contiguous)
        np.testing.assert_array_equal(argmax, argmax_contiguous)
        argmax_fortran = np.asfortranarray(argmax)
        assert not (x_view.flags.c_contiguous or grad_out_strided.flags.c_contiguous
                    or argmax_fortran.flags.c_contiguous)
        np.testing.assert_array_equal(max_pool2d_backward(grad_out_strided, argmax_fortran, x.shape, 3, 2, 1),
                                      max_pool2d_backward(grad_out, argmax, x.shape, 3, 2, 1))
        np.testing.assert_array_equal(avg_pool2d_forward(x_view, 3, 2, 1), avg_pool2d_forward(x, 3, 2, 1))
        np.testing.assert_array_equal(avg_pool2d_backward(grad_out_strided, x.shape, 3, 2, 1),
                                      avg_pool2d_backward(grad_out, x.shape, 3, 2, 1))
        np.testing.assert_array_equal(global_avg_pool2d_forward(x_view), global_avg_pool2d_forward(x))
    np.testing.assert_array_equal(global_avg_pool2d_backward(grad_out_strided[:, :, :1, :1], x.shape),
                                  global_avg_pool2d_backward(grad_out[:, :, :1, :1], x.shape))


def test_pooling_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 7, 6))
    grad_out = rng.standard_normal((2, 3, 4, 3))
    x_t = torch.tensor(x, requires_grad=True)
    y_t, indices_t = F.max_pool2d(x_t, 3, 2, 1, return_indices=True)
    y_t.backward(torch.tensor(grad_out))
    y, argmax = max_pool2d_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(y, y_t.detach().numpy())
    np.testing.assert_array_equal(argmax, indices_t.numpy())
    assert_matches(max_pool2d_backward(grad_out, argmax, x.shape, 3, 2, 1), x_t.grad.numpy(), np.float64)
    x_t.grad = None
    F.avg_pool2d(x_t, 3, 2, 1).backward(torch.tensor(grad_out))
    assert_matches(avg_pool2d_forward(x, 3, 2, 1), F.avg_pool2d(torch.tensor(x), 3, 2, 1).numpy(), np.float64)
    assert_matches(avg_pool2d_backward(grad_out, x.shape, 3, 2, 1), x_t.grad.numpy(), np.float64)


# --- argument errors ------------------------------------------------------------------------------

X = np.zeros((2, 4, 6, 6))
G3 = np.zeros((2, 4, 3, 3))      # grad_out of a 2x2 pooling of X
A3 = np.zeros((2, 4, 3, 3), dtype=np.int64)

BAD_CALLS = {
    "x_3d": (ValueError, "x must be 4-D", lambda: max_pool2d_forward(X[0], 2)),
    "x_integer_dtype": (TypeError, "x must have dtype float32 or float64",
                        lambda: avg_pool2d_forward(X.astype(np.int32), 2)),
    "kernel_size_zero": (ValueError, "kernel_size must be >= 1", lambda: max_pool2d_forward(X, 0)),
    "stride_zero": (ValueError, "stride must be >= 1", lambda: avg_pool2d_forward(X, 2, stride=0)),
    "padding_negative": (ValueError, "padding must be non-negative", lambda: max_pool2d_forward(X, 2, padding=-1)),
    "padding_over_half_the_kernel": (ValueError, r"padding=\(2, 2\) must be at most half of kernel_size",
                                     lambda: max_pool2d_forward(X, 3, padding=2)),
    "output_smaller_than_1x1": (ValueError, "smaller than 1x1", lambda: avg_pool2d_forward(X, 7)),
    "argmax_float": (TypeError, "argmax must be an integer numpy.ndarray",
                     lambda: max_pool2d_backward(G3, A3.astype(np.float64), X.shape, 2)),
    "argmax_a_list": (TypeError, "argmax must be an integer numpy.ndarray",
                      lambda: max_pool2d_backward(G3, A3.tolist(), X.shape, 2)),
    "argmax_wrong_shape": (ValueError, r"argmax must have grad_out's shape \(2, 4, 3, 3\)",
                           lambda: max_pool2d_backward(G3, A3[:, :, :2], X.shape, 2)),
    "argmax_out_of_range": (ValueError, r"argmax .* must lie in \[0, 36\)",
                            lambda: max_pool2d_backward(G3, A3 + 36, X.shape, 2)),
    "max_grad_out_channels_mismatch": (ValueError, r"grad_out has shape \(2, 3, 3, 3\), but max pooling of input_shape",
                                       lambda: max_pool2d_backward(G3[:, :3], A3[:, :3], X.shape, 2)),
    # the probe of issue 12: an input_shape larger than the forward input used to scatter into wrong pixels
    "max_input_shape_larger_than_forward": (ValueError, r"input_shape must be the forward input's shape",
                                            lambda: max_pool2d_backward(G3, A3, (2, 4, 8, 8), 2)),
    "max_input_shape_geometry_mismatch": (ValueError, r"gives \(2, 4, 2, 2\)",
                                          lambda: max_pool2d_backward(G3, A3, X.shape, 3)),
    "max_backward_without_geometry": (TypeError, "kernel_size", lambda: max_pool2d_backward(G3, A3, X.shape)),
    "input_shape_not_4_ints": (TypeError, "input_shape must be a tuple of 4 ints",
                               lambda: max_pool2d_backward(G3, A3, (2, 4, 6), 2)),
    "avg_grad_out_wrong_shape": (ValueError, r"grad_out must have the forward output's shape \(2, 4, 3, 3\)",
                                 lambda: avg_pool2d_backward(G3[:, :, :2], X.shape, 2)),
    "global_grad_out_not_1x1": (ValueError, r"grad_out must have the forward output's shape \(2, 4, 1, 1\)",
                                lambda: global_avg_pool2d_backward(G3, X.shape)),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_pooling_rejects_bad_arguments_naming_them(name):
    error, message, call = BAD_CALLS[name]
    with pytest.raises(error, match=message):
        call()
