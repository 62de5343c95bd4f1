"""The fast transposed-convolution kernels (``kernels/transposed.py``) against ``kernels.reference``.

What is checked:

* forward, backward-input and backward-weight equal the reference twins on a grid of configurations
  (stride 1/2/3, padding 0/1/2, output_padding, dilation 1/2, groups 1/2, kernels 1/3/4 and
  non-square, batch 1 and 3, odd and even sizes) in float32 and float64, and on random configurations
  (hypothesis);
* the teaching identity: a transposed convolution *is* conv2d's backward-input with the same weight,
  and its backward-input *is* conv2d's forward;
* the backward passes are the adjoints of the forward (``vdot`` identities) and pass float64
  finite-difference checks;
* determinism, non-contiguous inputs, and clear errors naming the bad argument.

Tolerances, relative to the largest magnitude of the expected result, with the expected result computed
by the reference in float64 from the *same* (possibly float32-rounded) inputs:

* float64 ``1e-12``: both sides add the same K <= ~500 products in different orders; each rounding is
  ~1e-16 relative, so differences are ~sqrt(K) * 1e-16 << 1e-12, while any indexing mistake is O(1).
* float32 ``1e-5``: the kernel rounds every product and partial sum to float32 (eps 6e-8); for the
  sums here (K <= ~500 terms: C_in/groups * kH*kW for the forward, N*H*W*C_out/groups for the weight
  gradient) the accumulated error is ~sqrt(K) * 6e-8 ~ 1e-6 of the scale, 10x under the bound.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from helpers import directional_gradcheck
from kernels import reference as R
from kernels.transposed import (conv_transpose2d_backward_input, conv_transpose2d_backward_weight,
                                conv_transpose2d_forward)

RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
GRADCHECK_RTOL = 1e-6   # central differences with eps=1e-6: rounding ~1e-16 * |f| / eps ~ 1e-10 relative

# name: (x shape (N, C_in, H, W), weight shape (C_in, C_out/groups, kH, kW), hyper-parameters)
CONFIGS = {
    "k3_plain": ((1, 2, 5, 5), (2, 3, 3, 3), dict()),
    "k3_stride2_pad1_output_padding1_batch3": ((3, 4, 4, 5), (4, 2, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "k4_stride2_pad1_dcgan": ((2, 3, 4, 4), (3, 2, 4, 4), dict(stride=2, padding=1)),
    "k1_stride3_leaves_gaps": ((1, 2, 3, 4), (2, 3, 1, 1), dict(stride=3, output_padding=2)),
    "k3_stride3_pad2_output_padding2": ((3, 2, 5, 4), (2, 2, 3, 3), dict(stride=3, padding=2, output_padding=2)),
    "k3_pad2_crops_more_than_it_adds": ((1, 2, 6, 5), (2, 2, 3, 3), dict(padding=2)),
    "dilation2_groups2_output_padding_below_dilation": (
        (2, 4, 5, 6), (4, 3, 3, 3), dict(groups=2, dilation=2, padding=2, output_padding=1)),
    "nonsquare_everything": (
        (3, 2, 4, 5), (2, 2, 2, 3), dict(stride=(2, 3), padding=(1, 0), dilation=(1, 2), output_padding=(1, 1))),
    "groups2_k4x3_stride2": ((1, 4, 3, 3), (4, 1, 4, 3), dict(groups=2, stride=2, padding=(2, 1))),
    "stride3_dilation2_groups2_k4": ((3, 6, 4, 3), (6, 2, 4, 4), dict(stride=3, padding=1, dilation=2, groups=2,
                                                                       output_padding=2)),
}
DTYPES = [np.float64, np.float32]


def make_inputs(name, dtype, rng):
    """x, weight, bias, grad_out (of the forward's output shape) and the hyper-parameters of a config."""
    x_shape, weight_shape, params = CONFIGS[name]
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = rng.standard_normal(weight_shape[1] * params.get("groups", 1)).astype(dtype)
    output_shape = R.conv_transpose2d_forward(x, weight, **params).shape
    grad_out = rng.standard_normal(output_shape).astype(dtype)
    return x, weight, bias, grad_out, params


def assert_matches(actual, expected, dtype):
    """``|actual - expected| <= RTOL[dtype] * max|expected|``, same shape, ``actual`` in ``dtype``."""
    assert actual.dtype == np.dtype(dtype)
    assert actual.shape == expected.shape
    tolerance = RTOL[np.dtype(dtype)] * np.max(np.abs(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance)


def as64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


def assert_all_three_match_reference(x, weight, bias, grad_out, params):
    dtype = x.dtype
    x64, weight64, bias64, grad_out64 = as64(x, weight, bias, grad_out)
    assert_matches(conv_transpose2d_forward(x, weight, bias, **params),
                   R.conv_transpose2d_forward(x64, weight64, bias64, **params), dtype)
    assert_matches(conv_transpose2d_backward_input(grad_out, weight, x.shape, **params),
                   R.conv_transpose2d_backward_input(grad_out64, weight64, x.shape, **params), dtype)
    assert_matches(conv_transpose2d_backward_weight(grad_out, x, weight.shape, **params),
                   R.conv_transpose2d_backward_weight(grad_out64, x64, weight.shape, **params), dtype)


# --- against the reference ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CONFIGS)
def test_conv_transpose2d_forward_and_backwards_match_reference(name, dtype, rng):
    assert_all_three_match_reference(*make_inputs(name, dtype, rng))


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_conv_transpose2d_matches_reference_on_random_configurations(data):
    draw = lambda strategy: data.draw(strategy)                          # noqa: E731
    groups = draw(st.integers(1, 2))
    N, C_in_per_group, C_out_per_group = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    output_size = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1
                   for n, s, p, d, k, op in zip(size, stride, padding, dilation, kernel, output_padding)]
    assume(min(output_size) >= 1)
    dtype = draw(st.sampled_from(DTYPES))

    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((N, C_in_per_group * groups, *size)).astype(dtype)
    weight = rng.standard_normal((C_in_per_group * groups, C_out_per_group, *kernel)).astype(dtype)
    bias = rng.standard_normal(C_out_per_group * groups).astype(dtype)
    grad_out = rng.standard_normal((N, C_out_per_group * groups, *output_size)).astype(dtype)
    params = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    assert_all_three_match_reference(x, weight, bias, grad_out, params)


# --- the teaching identity: transposed conv = conv2d's backward ------------------------------------

@pytest.mark.parametrize("name", [name for name, (_, _, params) in CONFIGS.items()
                                  if np.all(np.less(params.get("output_padding", 0), params.get("stride", 1)))])
def test_conv_transpose2d_equals_conv2d_backward_input_and_its_backward_input_equals_conv2d(name, rng):
    """Holds whenever output_padding < stride: then conv2d maps the transposed output back to x's size."""
    x, weight, _, grad_out, params = make_inputs(name, np.float64, rng)
    conv_params = {key: params.get(key, default) for key, default in
                   (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))}
    y = conv_transpose2d_forward(x, weight, **params)
    assert_matches(y, R.conv2d_backward_input(x, weight, y.shape, **conv_params), np.float64)
    assert_matches(conv_transpose2d_backward_input(grad_out, weight, x.shape, **params),
                   R.conv2d_forward(grad_out, weight, **conv_params), np.float64)


# --- adjoints and finite differences (float64) ----------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_conv_transpose2d_backwards_are_adjoints_of_forward(name, rng):
    x, weight, _, grad_out, params = make_inputs(name, np.float64, rng)
    forward_dot = np.vdot(conv_transpose2d_forward(x, weight, **params), grad_out)
    grad_x = conv_transpose2d_backward_input(grad_out, weight, x.shape, **params)
    grad_w = conv_transpose2d_backward_weight(grad_out, x, weight.shape, **params)
    assert np.vdot(x, grad_x) == pytest.approx(forward_dot, rel=1e-12)
    assert np.vdot(weight, grad_w) == pytest.approx(forward_dot, rel=1e-12)


@pytest.mark.parametrize("name", ["k3_stride2_pad1_output_padding1_batch3", "nonsquare_everything",
                                  "stride3_dilation2_groups2_k4"])
def test_conv_transpose2d_gradients_pass_finite_difference_check(name, rng):
    x, weight, bias, grad_out, params = make_inputs(name, np.float64, rng)

    def loss(x=x, weight=weight, bias=bias):
        return np.vdot(grad_out, conv_transpose2d_forward(x, weight, bias, **params))

    for point, f, grad in ((x, lambda v: loss(x=v), conv_transpose2d_backward_input(grad_out, weight, x.shape, **params)),
                           (weight, lambda v: loss(weight=v),
                            conv_transpose2d_backward_weight(grad_out, x, weight.shape, **params)),
                           (bias, lambda v: loss(bias=v), R.conv2d_backward_bias(grad_out))):
        analytic, numeric = directional_gradcheck(f, point, grad, rng=rng)
        assert numeric == pytest.approx(analytic, rel=GRADCHECK_RTOL, abs=1e-9)


# --- small cases you can check by hand (also run with NUMBA_DISABLE_JIT=1) ---------------------------

@pytest.mark.nojit
def test_conv_transpose2d_of_one_pixel_stamps_the_kernel_at_stride_times_its_position():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 1, 0] = 2.0
    weight = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y = conv_transpose2d_forward(x, weight, np.array([0.5]), stride=2)   # H_out = (2-1)*2 + 3 = 5
    expected = np.full((5, 5), 0.5)
    expected[2:5, 0:3] += 2.0 * weight[0, 0]                             # rows from ih*s = 2, columns from 0
    np.testing.assert_array_equal(y[0, 0], expected)


@pytest.mark.nojit
def test_conv_transpose2d_tiny_backwards_match_reference():
    rng = np.random.default_rng(1)
    x, weight = rng.standard_normal((1, 2, 2, 3)), rng.standard_normal((2, 1, 2, 2))
    params = dict(stride=2, padding=1, output_padding=1, groups=2)
    grad_out = rng.standard_normal(R.conv_transpose2d_forward(x, weight, **params).shape)
    assert_all_three_match_reference(x, weight, None, grad_out, params)


# --- determinism and memory layout ----------------------------------------------------------------

def test_conv_transpose2d_backward_weight_is_bit_identical_run_to_run(rng):
    x = rng.standard_normal((4, 16, 12, 12)).astype(np.float32)
    grad_out = rng.standard_normal((4, 8, 24, 24)).astype(np.float32)
    first = conv_transpose2d_backward_weight(grad_out, x, (16, 8, 4, 4), stride=2, padding=1)
    second = conv_transpose2d_backward_weight(grad_out, x, (16, 8, 4, 4), stride=2, padding=1)
    np.testing.assert_array_equal(first, second)


def test_conv_transpose2d_gives_the_same_answer_for_non_contiguous_inputs(rng):
    params = dict(stride=2, padding=1, output_padding=1, groups=2)
    x_strided = rng.standard_normal((2, 4, 10, 5))[:, :, ::2]            # (2, 4, 5, 5), rows skipped
    weight_transposed = rng.standard_normal((4, 2, 3, 3)).transpose(0, 1, 3, 2)  # a transposed view
    grad_out_transposed = rng.standard_normal((2, 4, 10, 10)).transpose(0, 1, 3, 2)
    assert not (x_strided.flags.c_contiguous or weight_transposed.flags.c_contiguous
                or grad_out_transposed.flags.c_contiguous)
    x, weight, grad_out = (np.ascontiguousarray(a) for a in (x_strided, weight_transposed, grad_out_transposed))

    np.testing.assert_array_equal(conv_transpose2d_forward(x_strided, weight_transposed, **params),
                                  conv_transpose2d_forward(x, weight, **params))
    np.testing.assert_array_equal(conv_transpose2d_backward_input(grad_out_transposed, weight_transposed, x.shape,
                                                                  **params),
                                  conv_transpose2d_backward_input(grad_out, weight, x.shape, **params))
    np.testing.assert_array_equal(conv_transpose2d_backward_weight(grad_out_transposed, x_strided, weight.shape,
                                                                   **params),
                                  conv_transpose2d_backward_weight(grad_out, x, weight.shape, **params))


# --- live PyTorch cross-check ---------------------------------------------------------------------

def test_conv_transpose2d_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    x, weight, bias, grad_out, params = make_inputs("stride3_dilation2_groups2_k4", np.float64, rng)
    x_t, weight_t, bias_t = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    y_t = torch.nn.functional.conv_transpose2d(x_t, weight_t, bias_t, **params)
    y_t.backward(torch.tensor(grad_out))
    assert_matches(conv_transpose2d_forward(x, weight, bias, **params), y_t.detach().numpy(), np.float64)
    assert_matches(conv_transpose2d_backward_input(grad_out, weight, x.shape, **params), x_t.grad.numpy(), np.float64)
    assert_matches(conv_transpose2d_backward_weight(grad_out, x, weight.shape, **params), weight_t.grad.numpy(),
                   np.float64)


# --- argument errors ------------------------------------------------------------------------------

X = np.zeros((2, 4, 5, 5))
W = np.zeros((4, 3, 3, 3))       # fits X with groups 1, 2 or 4: C_out = 3*groups
G = np.zeros((2, 6, 7, 7))       # grad_out of conv_transpose2d(X, W, groups=2)

BAD_CALLS = {
    "x_3d": (ValueError, r"x must be 4-D", lambda: conv_transpose2d_forward(X[0], W)),
    "x_not_an_array": (TypeError, "x must be a numpy.ndarray", lambda: conv_transpose2d_forward(X.tolist(), W)),
    "x_integer_dtype": (TypeError, "x must have dtype float32 or float64",
                        lambda: conv_transpose2d_forward(X.astype(np.int64), W)),
    "mixed_dtypes": (TypeError, "x: float32, weight: float64",
                     lambda: conv_transpose2d_forward(X.astype(np.float32), W)),
    "weight_channels_mismatch": (ValueError, r"weight .* has shape \(3, 3, 3, 3\).* but x has shape",
                                 lambda: conv_transpose2d_forward(X, W[:3])),
    "groups_not_dividing": (ValueError, "groups=3 must divide the input channels",
                            lambda: conv_transpose2d_forward(X, W, groups=3)),
    "stride_zero": (ValueError, "stride must be >= 1", lambda: conv_transpose2d_forward(X, W, stride=0)),
    "padding_negative": (ValueError, "padding must be non-negative", lambda: conv_transpose2d_forward(X, W, padding=-1)),
    "dilation_zero": (ValueError, "dilation must be >= 1", lambda: conv_transpose2d_forward(X, W, dilation=(1, 0))),
    "output_padding_not_below_stride_or_dilation": (
        ValueError, r"output_padding=\(2, 2\) must be smaller than stride",
        lambda: conv_transpose2d_forward(X, W, stride=2, dilation=2, output_padding=2)),
    "output_smaller_than_1x1": (ValueError, "smaller than 1x1",
                                lambda: conv_transpose2d_forward(X[:, :, :1, :1], W[:, :, :1, :1], padding=1)),
    "bias_wrong_shape": (ValueError, r"bias must have shape \(3,\)", lambda: conv_transpose2d_forward(X, W, np.zeros(6))),
    "grad_out_wrong_shape": (ValueError, r"grad_out must have the forward output's shape \(2, 6, 7, 7\)",
                             lambda: conv_transpose2d_backward_input(G[:, :, :6], W, X.shape, groups=2)),
    "grad_out_wrong_dtype": (TypeError, "grad_out is float32",
                             lambda: conv_transpose2d_backward_weight(G.astype(np.float32), X, W.shape, groups=2)),
    "input_shape_not_4_ints": (TypeError, "input_shape must be a tuple of 4 ints",
                               lambda: conv_transpose2d_backward_input(G, W, (2, 4, 5), groups=2)),
    "input_shape_channels_mismatch": (ValueError, "but input_shape has shape",
                                      lambda: conv_transpose2d_backward_input(G, W, (2, 6, 5, 5), groups=2)),
    "weight_shape_not_4_ints": (TypeError, "weight_shape must be a tuple of 4 ints",
                                lambda: conv_transpose2d_backward_weight(G, X, (4, 3, 3), groups=2)),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_conv_transpose2d_rejects_bad_arguments_naming_them(name):
    error, message, call = BAD_CALLS[name]
    with pytest.raises(error, match=message):
        call()
