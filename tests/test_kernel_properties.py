"""Property tests (hypothesis): on random valid configurations the fast kernels equal the reference.

The grids in ``test_conv2d.py`` / ``test_depthwise.py`` / ``test_pointwise.py`` cover chosen values; here
hypothesis draws *every* hyper-parameter independently (non-square kernels, strides, paddings and
dilations, groups, channel multipliers, batch sizes), within small bounds so each example runs in
milliseconds: N <= 2, C <= 4, H, W <= 9, kernel <= 4 (5 for the depthwise fast path).

The strategies only build valid configurations: the image is drawn at least as large as the kernel's reach
minus the padding, so the output is at least 1x1; ``assume`` rejects the rare draws where that would need
an image larger than 9.

float64 only, tolerance ``helpers.assert_close``'s 1e-10 of the largest expected magnitude: both sides add
the same few hundred products (at most C/groups*kH*kW = 64 per output, N*H_out*W_out <= 338 per weight)
in different orders, ~1e-15 apart, while an indexing mistake is an O(1) error.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from helpers import assert_close
from kernels import depthwise as D, reference as R
from kernels.conv2d import conv2d_backward_input, conv2d_backward_weight, conv2d_forward
from kernels.depthwise import (depthwise_conv2d_backward_input, depthwise_conv2d_backward_weight,
                               depthwise_conv2d_forward)
from kernels.pointwise import (pointwise_conv2d_backward_input, pointwise_conv2d_backward_weight,
                               pointwise_conv2d_forward)

MAX_SIZE = 9
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None)


def as_argument(pair, draw):
    """An ``(h, w)`` pair, passed as a plain int when both are equal (half the time): both forms are API."""
    if pair[0] == pair[1] and draw(st.booleans()):
        return pair[0]
    return pair


def image_side(draw, kernel, padding, dilation):
    """A side length >= the kernel's reach minus both paddings (so the output side is >= 1), <= MAX_SIZE."""
    smallest = max(1, dilation * (kernel - 1) + 1 - 2 * padding)
    assume(smallest <= MAX_SIZE)
    return draw(st.integers(smallest, MAX_SIZE))


@st.composite
def conv2d_configs(draw, max_kernel=4, depthwise=False, square_fast_path=False):
    """``(x_shape, weight_shape, params)`` of a valid convolution.

    ``depthwise``: groups = C, weight ``(C*m, 1, kH, kW)`` with multiplier m in 1..3 (params without groups).
    ``square_fast_path``: a square 3x3 or 5x5 kernel at equal stride 1 or 2 (the depthwise row kernels).
    """
    N = draw(st.integers(1, 2))
    if square_fast_path:
        k = draw(st.sampled_from([3, 5]))
        s = draw(st.sampled_from([1, 2]))
        kernel, stride = (k, k), (s, s)
    else:
        kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    H = image_side(draw, kernel[0], padding[0], dilation[0])
    W = image_side(draw, kernel[1], padding[1], dilation[1])
    if depthwise:
        C = draw(st.integers(1, 4))
        multiplier = draw(st.integers(1, 3))
        x_shape, weight_shape = (N, C, H, W), (C * multiplier, 1, *kernel)
        params = {}
    else:
        groups = draw(st.integers(1, 4))
        C_in = groups * draw(st.integers(1, 4 // groups))            # C_in <= 4
        C_out = groups * draw(st.integers(1, 4 // groups))
        x_shape, weight_shape = (N, C_in, H, W), (C_out, C_in // groups, *kernel)
        params = dict(groups=groups)
    params.update(stride=as_argument(stride, draw), padding=as_argument(padding, draw),
                  dilation=as_argument(dilation, draw))
    return x_shape, weight_shape, params


def random_inputs(x_shape, weight_shape, output_shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(x_shape), rng.standard_normal(weight_shape),
            rng.standard_normal(weight_shape[0]), rng.standard_normal(output_shape))


seeds = st.integers(0, 2**32 - 1)


@PROPERTY_SETTINGS
@given(config=conv2d_configs(), with_bias=st.booleans(), seed=seeds)
def test_conv2d_kernels_match_reference_on_random_configurations(config, with_bias, seed):
    x_shape, weight_shape, params = config
    expected_y = R.conv2d_forward(np.zeros(x_shape), np.zeros(weight_shape), **params)
    x, weight, bias, grad_out = random_inputs(x_shape, weight_shape, expected_y.shape, seed)
    bias = bias if with_bias else None
    assert_close(conv2d_forward(x, weight, bias, **params), R.conv2d_forward(x, weight, bias, **params), np.float64)
    assert_close(conv2d_backward_input(grad_out, weight, x_shape, **params),
                 R.conv2d_backward_input(grad_out, weight, x_shape, **params), np.float64)
    assert_close(conv2d_backward_weight(grad_out, x, weight_shape, **params),
                 R.conv2d_backward_weight(grad_out, x, weight_shape, **params), np.float64)


@PROPERTY_SETTINGS
@given(config=conv2d_configs(depthwise=True), with_bias=st.booleans(), seed=seeds)
def test_depthwise_kernels_match_reference_on_random_configurations(config, with_bias, seed):
    x_shape, weight_shape, params = config
    expected_y = R.depthwise_conv2d_forward(np.zeros(x_shape), np.zeros(weight_shape), **params)
    x, weight, bias, grad_out = random_inputs(x_shape, weight_shape, expected_y.shape, seed)
    bias = bias if with_bias else None
    assert_close(depthwise_conv2d_forward(x, weight, bias, **params),
                 R.depthwise_conv2d_forward(x, weight, bias, **params), np.float64)
    assert_close(depthwise_conv2d_backward_input(grad_out, weight, x_shape, **params),
                 R.depthwise_conv2d_backward_input(grad_out, weight, x_shape, **params), np.float64)
    assert_close(depthwise_conv2d_backward_weight(grad_out, x, weight_shape, **params),
                 R.depthwise_conv2d_backward_weight(grad_out, x, weight_shape, **params), np.float64)


@PROPERTY_SETTINGS
@given(config=conv2d_configs(depthwise=True, square_fast_path=True), seed=seeds)
def test_depthwise_row_kernels_match_generic_kernels_on_random_configurations(config, seed):
    """The 3x3 / 5x5 register-row kernels against the generic ones, called directly (any padding,
    non-square dilation, images smaller than the kernel's reach)."""
    x_shape, weight_shape, params = config
    geometry = D._depthwise_geometry(x_shape, weight_shape, **params)
    assert D._use_row_fast_path(geometry)
    x, weight, bias, grad_out = random_inputs(x_shape, weight_shape, geometry.output_shape, seed)
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
    bias = D._empty_bias(x.dtype) if bias is None else bias
    rows, generic = np.full(geometry.output_shape, np.nan), np.full(geometry.output_shape, np.nan)
    D._forward_rows_kernel(x, weight, bias, rows, sh, sw, ph, pw, dh, dw)
    D._forward_generic_kernel(x, weight, bias, generic, sh, sw, ph, pw, dh, dw)
    assert_close(rows, generic, np.float64)
    if sh == 1:
        rows, generic = np.full(x_shape, np.nan), np.full(x_shape, np.nan)
        D._backward_input_rows_stride1_kernel(grad_out, weight, rows, ph, pw, dh, dw)
        D._backward_input_generic_kernel(grad_out, weight, generic, sh, sw, ph, pw, dh, dw)
        assert_close(rows, generic, np.float64)
    rows, generic = np.full(weight_shape, np.nan), np.full(weight_shape, np.nan)
    D._backward_weight_rows_kernel(grad_out, x, rows, sh, sw, ph, pw, dh, dw)
    D._backward_weight_generic_kernel(grad_out, x, generic, sh, sw, ph, pw, dh, dw)
    assert_close(rows, generic, np.float64)
    assert_close(generic, R.depthwise_conv2d_backward_weight(grad_out, x, weight_shape, **params), np.float64)


@PROPERTY_SETTINGS
@given(N=st.integers(1, 2), groups=st.integers(1, 4), data=st.data(), H=st.integers(1, MAX_SIZE),
       W=st.integers(1, MAX_SIZE), seed=seeds)
def test_pointwise_kernels_match_reference_on_random_configurations(N, groups, data, H, W, seed):
    C_in = groups * data.draw(st.integers(1, 4 // groups))
    C_out = groups * data.draw(st.integers(1, 4 // groups))
    x_shape, weight_shape = (N, C_in, H, W), (C_out, C_in // groups, 1, 1)
    x, weight, bias, grad_out = random_inputs(x_shape, weight_shape, (N, C_out, H, W), seed)
    assert_close(pointwise_conv2d_forward(x, weight, bias, groups),
                 R.pointwise_conv2d_forward(x, weight, bias, groups), np.float64)
    assert_close(pointwise_conv2d_backward_input(grad_out, weight, x_shape, groups),
                 R.pointwise_conv2d_backward_input(grad_out, weight, x_shape, groups), np.float64)
    assert_close(pointwise_conv2d_backward_weight(grad_out, x, weight_shape, groups),
                 R.pointwise_conv2d_backward_weight(grad_out, x, weight_shape, groups), np.float64)


@pytest.mark.parametrize("strategy", [conv2d_configs(), conv2d_configs(depthwise=True),
                                      conv2d_configs(depthwise=True, square_fast_path=True)],
                         ids=["conv2d", "depthwise", "depthwise_fast_path"])
def test_strategies_only_build_valid_configurations(strategy):
    """Every drawn configuration has an output of at least 1x1 and respects the size bounds."""
    @settings(max_examples=50, deadline=None)
    @given(config=strategy)
    def check(config):
        x_shape, weight_shape, params = config
        groups = params.get("groups", x_shape[1])
        y = R.conv2d_forward(np.zeros(x_shape), np.zeros(weight_shape),
                             **{**params, "groups": groups})      # raises ValueError if invalid
        assert min(y.shape[2:]) >= 1
        assert x_shape[0] <= 2 and x_shape[1] <= 4 and max(x_shape[2:]) <= MAX_SIZE
    check()
