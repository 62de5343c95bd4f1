"""Self-consistency of ``kernels.reference``, the plain-NumPy oracle the fast kernels are tested against.

Independently of PyTorch (see ``test_torch_fixtures_kernels.py`` for that), a correct oracle must:

* give hand-computable answers on tiny inputs;
* have backward passes that are the adjoints of its forward passes,
  ``vdot(conv(x), g) == vdot(x, backward_input(g))`` and ``vdot(g, conv(x; w)) == vdot(w, backward_weight(g, x))``;
* agree with itself across the conv2d / transposed-conv duality (written independently, so a shared
  mistake is unlikely);
* pass float64 finite-difference gradient checks (``helpers.directional_gradcheck``);
* compute in float32 when given float32;
* reject bad arguments with ``TypeError``/``ValueError`` naming the argument.

Adjoint identities and gradchecks are float64; both sides are the same sum in different orders, so they
agree to ~1e-15 relative; we assert 1e-10 (identities) and 1e-6 (central differences, whose rounding
error is ~1e-16 * |f| / eps with eps = 1e-6).
"""
import numpy as np
import pytest

from helpers import assert_close, assert_gradcheck
from kernels import reference as R
from kernels._validate import conv_geometry, conv_transpose_output_size

# name: (x shape, weight shape (C_out, C_in/groups, kH, kW), hyper-parameters)
CONV2D_CONFIGS = {
    "plain": ((2, 3, 6, 5), (4, 3, 3, 3), dict()),
    "stride2_pad1": ((2, 3, 7, 6), (4, 3, 3, 3), dict(stride=2, padding=1)),
    "dilation2_pad2": ((1, 2, 7, 7), (3, 2, 3, 3), dict(dilation=2, padding=2)),
    "groups2": ((2, 4, 5, 5), (6, 2, 3, 3), dict(groups=2, padding=1)),
    "depthwise_multiplier2_stride2": ((2, 3, 7, 6), (6, 1, 3, 3), dict(groups=3, stride=2, padding=1)),
    "nonsquare_mixed": ((1, 2, 6, 8), (2, 2, 2, 3), dict(stride=(1, 2), padding=(0, 1), dilation=(2, 1))),
    "stride3_uncovered_pixels": ((1, 2, 7, 7), (2, 2, 2, 2), dict(stride=3)),
    "pointwise_groups2": ((2, 4, 3, 3), (6, 2, 1, 1), dict(groups=2)),
}
# name: (x shape, weight shape (C_in, C_out/groups, kH, kW), hyper-parameters)
TRANSPOSED_CONFIGS = {
    "plain": ((2, 3, 4, 5), (3, 2, 3, 3), dict()),
    "stride2_pad1_output_padding1": ((2, 3, 4, 3), (3, 4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "groups2_dilation2": ((1, 4, 4, 4), (4, 1, 3, 3), dict(groups=2, dilation=2, padding=1, output_padding=1)),
    "nonsquare": ((1, 2, 3, 4), (2, 3, 2, 3), dict(stride=(2, 3), padding=(0, 1), output_padding=(1, 2))),
}
# name: (x shape, pooling arguments)
POOL_CONFIGS = {
    "kernel2": ((2, 3, 6, 5), dict(kernel_size=2)),
    "kernel3_stride2_pad1": ((2, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1)),
    "kernel3x2_stride1x2_pad1x0": ((1, 2, 5, 6), dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0))),
}

def conv2d_setup(name, rng):
    x_shape, weight_shape, params = CONV2D_CONFIGS[name]
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(weight_shape)
    grad_y = rng.standard_normal(R.conv2d_forward(x, weight, **params).shape)
    return x, weight, grad_y, params


def transposed_setup(name, rng):
    x_shape, weight_shape, params = TRANSPOSED_CONFIGS[name]
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(weight_shape)
    grad_y = rng.standard_normal(R.conv_transpose2d_forward(x, weight, **params).shape)
    return x, weight, grad_y, params


# --- answers you can check by hand ----------------------------------------------------------------

@pytest.mark.nojit
def test_conv2d_with_a_kernel_of_ones_sums_each_window():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y = R.conv2d_forward(x, np.ones((1, 1, 2, 2)), np.array([0.5]), stride=2)
    np.testing.assert_array_equal(y[0, 0], [[0 + 1 + 4 + 5 + 0.5, 2 + 3 + 6 + 7 + 0.5],
                                            [8 + 9 + 12 + 13 + 0.5, 10 + 11 + 14 + 15 + 0.5]])


@pytest.mark.nojit
def test_conv_transpose2d_of_a_single_pixel_stamps_the_kernel_at_stride_times_its_position():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 1, 0] = 2.0
    weight = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y = R.conv_transpose2d_forward(x, weight, stride=2)   # H_out = (2-1)*2 + 3 = 5
    expected = np.zeros((5, 5))
    expected[2:5, 0:3] = 2.0 * weight[0, 0]                # row ih*s = 2, column iw*s = 0
    np.testing.assert_array_equal(y[0, 0], expected)


@pytest.mark.nojit
def test_max_pool2d_ties_go_to_the_first_maximum_and_padding_never_wins():
    x = np.full((1, 1, 3, 4), -5.0)    # every window is one big tie, below what zero padding would give
    y, argmax = R.max_pool2d_forward(x, kernel_size=3, stride=2, padding=1)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), -5.0))
    # window rows/cols start at -1, 1 (rows) and -1, 1 (cols): first in-image pixel of each
    np.testing.assert_array_equal(argmax[0, 0], [[0 * 4 + 0, 0 * 4 + 1], [1 * 4 + 0, 1 * 4 + 1]])
    grad_x = R.max_pool2d_backward(np.ones((1, 1, 2, 2)), argmax, x.shape, 3, 2, 1)
    assert grad_x.sum() == 4.0 and grad_x[0, 0, 0, 0] == 1.0


@pytest.mark.nojit
def test_avg_pool2d_counts_padding_as_zeros():
    y = R.avg_pool2d_forward(np.ones((1, 1, 3, 3)), kernel_size=3, stride=1, padding=1)
    np.testing.assert_allclose(y[0, 0], np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) / 9, rtol=1e-15)


# --- adjoint identities ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONV2D_CONFIGS)
def test_conv2d_backward_input_and_weight_are_adjoints_of_forward(name, rng):
    x, weight, grad_y, params = conv2d_setup(name, rng)
    y = R.conv2d_forward(x, weight, **params)
    grad_x = R.conv2d_backward_input(grad_y, weight, x.shape, **params)
    grad_w = R.conv2d_backward_weight(grad_y, x, weight.shape, **params)
    assert np.vdot(x, grad_x) == pytest.approx(np.vdot(y, grad_y), rel=1e-10)
    assert np.vdot(weight, grad_w) == pytest.approx(np.vdot(y, grad_y), rel=1e-10)


@pytest.mark.parametrize("name", TRANSPOSED_CONFIGS)
def test_conv_transpose2d_backward_input_and_weight_are_adjoints_of_forward(name, rng):
    x, weight, grad_y, params = transposed_setup(name, rng)
    y = R.conv_transpose2d_forward(x, weight, **params)
    grad_x = R.conv_transpose2d_backward_input(grad_y, weight, x.shape, **params)
    grad_w = R.conv_transpose2d_backward_weight(grad_y, x, weight.shape, **params)
    assert np.vdot(x, grad_x) == pytest.approx(np.vdot(y, grad_y), rel=1e-10)
    assert np.vdot(weight, grad_w) == pytest.approx(np.vdot(y, grad_y), rel=1e-10)


@pytest.mark.parametrize("name", CONV2D_CONFIGS)
def test_conv_transpose2d_is_conv2d_backward_and_vice_versa(name, rng):
    """The transposed twin (a scatter) and conv2d's backward (a scatter-add over taps) are written apart."""
    x, weight, grad_y, params = conv2d_setup(name, rng)
    geometry = conv_geometry(x.shape, weight.shape, params.get("stride", 1), params.get("padding", 0),
                             params.get("dilation", 1), params.get("groups", 1))
    # output_padding recovers the rows a strided conv2d drops: the transposed conv maps grad_y back to x's size
    output_padding = tuple(
        x.shape[2 + axis] - conv_transpose_output_size(grad_y.shape[2 + axis], weight.shape[2 + axis],
                                                       geometry.stride[axis], geometry.padding[axis],
                                                       geometry.dilation[axis], 0)
        for axis in range(2))
    transposed = dict(stride=geometry.stride, padding=geometry.padding, output_padding=output_padding,
                      groups=geometry.groups, dilation=geometry.dilation)

    assert_close(R.conv_transpose2d_forward(grad_y, weight, **transposed),
                 R.conv2d_backward_input(grad_y, weight, x.shape, **params), np.float64)
    assert_close(R.conv_transpose2d_backward_input(x, weight, grad_y.shape, **transposed),
                 R.conv2d_forward(x, weight, **params), np.float64)
    assert_close(R.conv_transpose2d_backward_weight(x, grad_y, weight.shape, **transposed),
                 R.conv2d_backward_weight(grad_y, x, weight.shape, **params), np.float64)


@pytest.mark.parametrize("name", POOL_CONFIGS)
def test_pooling_backwards_are_adjoints_of_their_linear_forwards(name, rng):
    x_shape, params = POOL_CONFIGS[name]
    x = rng.standard_normal(x_shape)
    y = R.avg_pool2d_forward(x, **params)
    grad_y = rng.standard_normal(y.shape)
    assert np.vdot(x, R.avg_pool2d_backward(grad_y, x.shape, **params)) == pytest.approx(np.vdot(y, grad_y), rel=1e-10)
    # max pooling, for a fixed argmax, is the linear map "gather x at argmax"
    y, argmax = R.max_pool2d_forward(x, **params)
    assert np.vdot(x, R.max_pool2d_backward(grad_y, argmax, x.shape, **params)) == pytest.approx(np.vdot(y, grad_y), rel=1e-10)
    y = R.global_avg_pool2d_forward(x)
    grad_y = rng.standard_normal(y.shape)
    assert np.vdot(x, R.global_avg_pool2d_backward(grad_y, x.shape)) == pytest.approx(np.vdot(y, grad_y), rel=1e-10)


# --- finite-difference gradient checks (float64) -------------------------------------------------

@pytest.mark.parametrize("name", CONV2D_CONFIGS)
def test_conv2d_gradients_pass_gradcheck(name, rng):
    x, weight, grad_y, params = conv2d_setup(name, rng)
    bias = rng.standard_normal(weight.shape[0])

    def loss(x=x, weight=weight, bias=bias):
        return np.vdot(grad_y, R.conv2d_forward(x, weight, bias, **params))

    assert_gradcheck(lambda v: loss(x=v), x, R.conv2d_backward_input(grad_y, weight, x.shape, **params), rng)
    assert_gradcheck(lambda v: loss(weight=v), weight, R.conv2d_backward_weight(grad_y, x, weight.shape, **params), rng)
    assert_gradcheck(lambda v: loss(bias=v), bias, R.conv2d_backward_bias(grad_y), rng)


def test_depthwise_and_pointwise_gradients_pass_gradcheck(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    weight = rng.standard_normal((6, 1, 3, 3))                      # depth multiplier 2
    grad_y = rng.standard_normal(R.depthwise_conv2d_forward(x, weight, stride=2, padding=1).shape)
    assert_gradcheck(lambda v: np.vdot(grad_y, R.depthwise_conv2d_forward(v, weight, stride=2, padding=1)), x,
                     R.depthwise_conv2d_backward_input(grad_y, weight, x.shape, stride=2, padding=1), rng)
    assert_gradcheck(lambda v: np.vdot(grad_y, R.depthwise_conv2d_forward(x, v, stride=2, padding=1)), weight,
                     R.depthwise_conv2d_backward_weight(grad_y, x, weight.shape, stride=2, padding=1), rng)

    x = rng.standard_normal((2, 4, 3, 5))
    weight = rng.standard_normal((6, 2, 1, 1))                      # 2 groups
    grad_y = rng.standard_normal((2, 6, 3, 5))
    assert_gradcheck(lambda v: np.vdot(grad_y, R.pointwise_conv2d_forward(v, weight, groups=2)), x,
                     R.pointwise_conv2d_backward_input(grad_y, weight, x.shape, groups=2), rng)
    assert_gradcheck(lambda v: np.vdot(grad_y, R.pointwise_conv2d_forward(x, v, groups=2)), weight,
                     R.pointwise_conv2d_backward_weight(grad_y, x, weight.shape, groups=2), rng)


@pytest.mark.parametrize("name", TRANSPOSED_CONFIGS)
def test_conv_transpose2d_gradients_pass_gradcheck(name, rng):
    x, weight, grad_y, params = transposed_setup(name, rng)
    assert_gradcheck(lambda v: np.vdot(grad_y, R.conv_transpose2d_forward(v, weight, **params)), x,
                     R.conv_transpose2d_backward_input(grad_y, weight, x.shape, **params), rng)
    assert_gradcheck(lambda v: np.vdot(grad_y, R.conv_transpose2d_forward(x, v, **params)), weight,
                     R.conv_transpose2d_backward_weight(grad_y, x, weight.shape, **params), rng)


@pytest.mark.parametrize("name", POOL_CONFIGS)
def test_pooling_gradients_pass_gradcheck(name, rng):
    x_shape, params = POOL_CONFIGS[name]
    # distinct values 0.1 apart: the +-1e-6 steps of the check cannot change which pixel is a window's max
    x = rng.permutation(np.arange(np.prod(x_shape)) * 0.1).reshape(x_shape)
    y, argmax = R.max_pool2d_forward(x, **params)
    grad_y = rng.standard_normal(y.shape)
    assert_gradcheck(lambda v: np.vdot(grad_y, R.max_pool2d_forward(v, **params)[0]), x,
                     R.max_pool2d_backward(grad_y, argmax, x.shape, **params), rng)
    assert_gradcheck(lambda v: np.vdot(grad_y, R.avg_pool2d_forward(v, **params)), x,
                     R.avg_pool2d_backward(grad_y, x.shape, **params), rng)
    grad_y = rng.standard_normal((*x_shape[:2], 1, 1))
    assert_gradcheck(lambda v: np.vdot(grad_y, R.global_avg_pool2d_forward(v)), x,
                     R.global_avg_pool2d_backward(grad_y, x.shape), rng)


# --- dtypes ---------------------------------------------------------------------------------------

def test_reference_keeps_float32_inputs_in_float32(rng):
    x64, w64 = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((4, 2, 3, 3))
    g64 = rng.standard_normal((2, 4, 3, 3))
    x, w, g = (a.astype(np.float32) for a in (x64, w64, g64))
    conv = dict(stride=2, padding=1, groups=2)
    assert_close(R.conv2d_forward(x, w, **conv), R.conv2d_forward(x64, w64, **conv), np.float32)
    assert_close(R.conv2d_backward_input(g, w, x.shape, **conv), R.conv2d_backward_input(g64, w64, x.shape, **conv),
                 np.float32)
    assert_close(R.conv2d_backward_weight(g, x, w.shape, **conv), R.conv2d_backward_weight(g64, x64, w.shape, **conv),
                 np.float32)
    assert_close(R.conv2d_backward_bias(g), R.conv2d_backward_bias(g64), np.float32)
    tconv = dict(stride=2, padding=1, output_padding=(1, 0), groups=2)   # maps g (3x3) back to 6x5
    assert_close(R.conv_transpose2d_forward(g, w, **tconv), R.conv_transpose2d_forward(g64, w64, **tconv), np.float32)
    assert_close(R.conv_transpose2d_backward_input(x, w, g.shape, **tconv),
                 R.conv_transpose2d_backward_input(x64, w64, g.shape, **tconv), np.float32)
    assert_close(R.conv_transpose2d_backward_weight(x, g, w.shape, **tconv),
                 R.conv_transpose2d_backward_weight(x64, g64, w.shape, **tconv), np.float32)
    y, argmax = R.max_pool2d_forward(x, 3, 2, 1)
    assert_close(y, R.max_pool2d_forward(x64, 3, 2, 1)[0], np.float32)
    assert_close(R.max_pool2d_backward(g, argmax, x.shape, 3, 2, 1), R.max_pool2d_backward(g64, argmax, x.shape, 3, 2, 1), np.float32)
    assert_close(R.avg_pool2d_forward(x, 3, 2, 1), R.avg_pool2d_forward(x64, 3, 2, 1), np.float32)
    assert_close(R.avg_pool2d_backward(g, x.shape, 3, 2, 1), R.avg_pool2d_backward(g64, x.shape, 3, 2, 1), np.float32)
    assert_close(R.global_avg_pool2d_forward(x), R.global_avg_pool2d_forward(x64), np.float32)
    assert_close(R.global_avg_pool2d_backward(g[:, :, :1, :1], x.shape),
                 R.global_avg_pool2d_backward(g64[:, :, :1, :1], x.shape), np.float32)


# --- argument errors ------------------------------------------------------------------------------

X = np.zeros((2, 4, 6, 6))
W = np.zeros((6, 2, 3, 3))          # groups=2 conv weight; also a transposed weight (C_in=6 needed, so misfits X)
G = np.zeros((2, 6, 4, 4))          # grad_out of conv2d(X, W, groups=2)

BAD_CALLS = {
    "x_not_an_array": (TypeError, "x must be a numpy.ndarray", lambda: R.conv2d_forward(X.tolist(), W, groups=2)),
    "x_integer_dtype": (TypeError, "x must have dtype", lambda: R.conv2d_forward(X.astype(int), W, groups=2)),
    "mixed_dtypes": (TypeError, "share one dtype", lambda: R.conv2d_forward(X.astype(np.float32), W, groups=2)),
    "x_3d": (ValueError, r"x must be 4-D", lambda: R.conv2d_forward(X[0], W, groups=2)),
    "weight_channels_mismatch": (ValueError, "input channels", lambda: R.conv2d_forward(X, W)),
    "groups_not_dividing": (ValueError, "groups=3 must divide", lambda: R.conv2d_forward(X, W, groups=3)),
    "groups_not_int": (TypeError, "groups must be an int", lambda: R.conv2d_forward(X, W, groups=2.0)),
    "stride_zero": (ValueError, "stride must be >= 1", lambda: R.conv2d_forward(X, W, stride=0, groups=2)),
    "padding_negative": (ValueError, "padding must be non-negative",
                         lambda: R.conv2d_forward(X, W, padding=-1, groups=2)),
    "output_empty": (ValueError, "smaller than 1x1", lambda: R.conv2d_forward(X, W, dilation=4, groups=2)),
    "bias_wrong_shape": (ValueError, "bias must have shape", lambda: R.conv2d_forward(X, W, np.zeros(4), groups=2)),
    "grad_out_wrong_shape": (ValueError, "grad_out must have the forward output's shape",
                             lambda: R.conv2d_backward_input(G[:, :, :3], W, X.shape, groups=2)),
    "grad_out_wrong_dtype": (TypeError, "grad_out is float32",
                             lambda: R.conv2d_backward_weight(G.astype(np.float32), X, W.shape, groups=2)),
    "input_shape_not_4_ints": (TypeError, "input_shape must be a tuple of 4 ints",
                               lambda: R.conv2d_backward_input(G, W, (2, 4, 6), groups=2)),
    "depthwise_weight_two_inputs": (ValueError, "depthwise weight must have shape",
                                    lambda: R.depthwise_conv2d_forward(X, np.zeros((4, 2, 3, 3)))),
    "pointwise_weight_3x3": (ValueError, "pointwise weight must be 1x1",
                             lambda: R.pointwise_conv2d_forward(X, np.zeros((4, 4, 3, 3)))),
    "transposed_weight_misfits_x": (ValueError, "expects 6 input channels",
                                    lambda: R.conv_transpose2d_forward(X, W)),
    "transposed_output_padding_too_big": (ValueError, "output_padding",
                                          lambda: R.conv_transpose2d_forward(G, W, stride=2, output_padding=2)),
    "pool_padding_over_half": (ValueError, "at most half", lambda: R.max_pool2d_forward(X, 3, padding=2)),
    "avg_pool_grad_wrong_shape": (ValueError, "grad_out must have",
                                  lambda: R.avg_pool2d_backward(np.zeros((2, 4, 2, 2)), X.shape, 2)),
    "argmax_float": (TypeError, "argmax must be an integer",
                     lambda: R.max_pool2d_backward(np.zeros((2, 4, 3, 3)), np.zeros((2, 4, 3, 3)), X.shape, 2)),
    "argmax_out_of_range": (ValueError, r"must lie in \[0, 36\)",
                            lambda: R.max_pool2d_backward(np.zeros((2, 4, 3, 3)), np.full((2, 4, 3, 3), 36), X.shape, 2)),
    "global_grad_not_1x1": (ValueError, r"\(2, 4, 1, 1\)",
                            lambda: R.global_avg_pool2d_backward(np.zeros((2, 4, 2, 1)), X.shape)),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_reference_rejects_bad_arguments_with_a_clear_error(name):
    error, message, call = BAD_CALLS[name]
    with pytest.raises(error, match=message):
        call()


@pytest.mark.nojit
@pytest.mark.parametrize("stride, padding, dilation, multiplier", [(1, 1, 1, 1), (2, 2, 1, 2), (3, 0, 2, 1)])
def test_depthwise_loop_definitions_equal_the_groups_c_one_liners(stride, padding, dilation, multiplier):
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((3 * multiplier, 1, 3, 3))
    bias = rng.standard_normal(3 * multiplier)
    params = dict(stride=stride, padding=padding, dilation=dilation)
    y = R.depthwise_conv2d_forward(x, weight, bias, **params)
    grad_out = rng.standard_normal(y.shape)
    np.testing.assert_allclose(R.depthwise_conv2d_forward_loops(x, weight, bias, **params), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(R.depthwise_conv2d_backward_input_loops(grad_out, weight, x.shape, **params),
                               R.depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(R.depthwise_conv2d_backward_weight_loops(grad_out, x, weight.shape, **params),
                               R.depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params),
                               rtol=1e-12, atol=1e-12)


def test_depthwise_weight_check_has_one_message_for_kernels_and_reference():
    import kernels
    messages = []
    for forward in (kernels.depthwise_conv2d_forward, R.depthwise_conv2d_forward):
        with pytest.raises(ValueError) as error:
            forward(np.ones((1, 3, 4, 4)), np.ones((4, 1, 3, 3)))
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "(C*multiplier, 1, kH, kW)" in messages[0]
