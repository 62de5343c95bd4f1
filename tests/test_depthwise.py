"""The depthwise convolution kernels (``kernels/depthwise.py``) against ``kernels.reference`` and each other.

What is checked:

* the public ``depthwise_conv2d_*`` functions equal the reference on a grid (stride 1/2/3/(2,1), padding
  0/1/2/(2,1), dilation 1/2/(1,2), kernels 1x1/3x3/5x5/3x5/1x3, channel multiplier 1/2/3, batch 1 and 3,
  odd and even image sizes), float64 and float32;
* the register-row fast path (3x3 and 5x5 at stride 1 and 2) equals the generic tap-by-tap path, kernel
  against kernel (the private ``_forward(fast=...)``, ``_backward_input_*`` and ``_backward_weight_*``),
  including images smaller than the kernel's reach, where the branch-free interior is empty and every
  column is a border column;
* the public functions pick the fast path exactly when it applies;
* the stride-2 3x3 kernel and the across-channels kernels (batches of small "same" planes) equal the
  reference and give the flat / channels-last kernels' bits, keep what is not finite where it belongs,
  and are picked exactly above their thresholds;
* gradients: finite differences and adjoint identities (float64);
* determinism: bit-identical across runs and across numba thread counts;
* non-contiguous inputs give the same result as contiguous copies.

The grid is built like the one in ``test_conv2d.py``: a full product of stride x padding x dilation x
kernel size in float64, with (channels, multiplier), batch and image size assigned cyclically (periods 4, 2,
3), and every 7th configuration again in float32.

Tolerances (``helpers.assert_close``, relative to the largest expected magnitude): float64 1e-10, float32
1e-4 against a float64 reference computed from the same float32 inputs. Fast against generic in the same
dtype uses the same numbers: both sum at most 25 products per output in different orders.
"""
import itertools

import numba
import numpy as np
import pytest

from helpers import (GRID_BATCHES, GRID_DILATIONS, GRID_KERNELS, GRID_PADDINGS, GRID_SIZES, GRID_STRIDES, LAYOUTS,
                     as64, assert_close, assert_gradcheck, assert_vdot_equal, build_conv_grid, conv_grid_inputs,
                     label, pair, relayout)
from kernels import depthwise as D, reference as R
from kernels._validate import conv_geometry
from kernels.depthwise import (depthwise_conv2d_backward_input, depthwise_conv2d_backward_weight,
                               depthwise_conv2d_forward)


# ----------------------------------------------------------------------------------------------------
# Public functions against the reference
# ----------------------------------------------------------------------------------------------------
STRIDES, PADDINGS, DILATIONS, KERNELS = GRID_STRIDES, GRID_PADDINGS, GRID_DILATIONS, GRID_KERNELS
BATCHES, SIZES = GRID_BATCHES, GRID_SIZES
CHANNELS = [(3, 1), (2, 2), (4, 1), (1, 3)]        # (C, multiplier): C_out = C * multiplier <= 4


def _depthwise_weight(channels, kernel):
    """``(C, weight shape (C * multiplier, 1, kH, kW), groups = C, {})`` of one ``CHANNELS`` entry."""
    C, multiplier = channels
    return C, (C * multiplier, 1, *kernel), C, {}


def case_id(case):
    x_shape, weight_shape, params, with_bias = case
    return (f"k{label(weight_shape[2:])}-s{label(params['stride'])}-p{label(params['padding'])}"
            f"-d{label(params['dilation'])}-c{x_shape[1]}-m{weight_shape[0] // x_shape[1]}"
            f"-n{x_shape[0]}-{x_shape[2]}x{x_shape[3]}" + ("-bias" if with_bias else ""))


GRID = build_conv_grid(CHANNELS, _depthwise_weight)
GRID_PARAMS = ([pytest.param(case, np.float64, id=case_id(case) + "-float64") for case in GRID]
               + [pytest.param(case, np.float32, id=case_id(case) + "-float32") for case in GRID[::7]])


def make_inputs(case, dtype, rng):
    """x, weight, bias (or None), grad_out of the forward's output shape, params; all in ``dtype``."""
    return conv_grid_inputs(case, dtype, rng, groups=case[0][1])


def test_grid_covers_every_value_of_every_axis():
    for sample in (GRID, GRID[::7]):
        params = [case[2] for case in sample]
        assert {p["stride"] for p in params} == set(STRIDES)
        assert {p["padding"] for p in params} == set(PADDINGS)
        assert {p["dilation"] for p in params} == set(DILATIONS)
        assert {case[1][2:] for case in sample} == set(KERNELS)
        assert {case[0][0] for case in sample} == set(BATCHES)
        assert {(case[0][1], case[1][0] // case[0][1]) for case in sample} == set(CHANNELS)
        assert {case[3] for case in sample} == {True, False}
    assert {case[0][2:] for case in GRID} >= set(SIZES)
    # both the fast and the generic path are in the grid
    assert {D._use_row_fast_path(conv_geometry(c[0], c[1], groups=c[0][1], **c[2])) for c in GRID[::7]} == {
        True, False}


@pytest.mark.parametrize("case, dtype", GRID_PARAMS)
def test_depthwise_forward_matches_reference(case, dtype, rng):
    x, weight, bias, _, params = make_inputs(case, dtype, rng)
    expected = R.depthwise_conv2d_forward(*as64(x, weight, bias), **params)
    assert_close(depthwise_conv2d_forward(x, weight, bias, **params), expected, dtype)


@pytest.mark.parametrize("case, dtype", GRID_PARAMS)
def test_depthwise_backward_input_matches_reference(case, dtype, rng):
    x, weight, _, grad_out, params = make_inputs(case, dtype, rng)
    expected = R.depthwise_conv2d_backward_input(*as64(grad_out, weight), x.shape, **params)
    assert_close(depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params), expected, dtype)


@pytest.mark.parametrize("case, dtype", GRID_PARAMS)
def test_depthwise_backward_weight_matches_reference(case, dtype, rng):
    x, weight, _, grad_out, params = make_inputs(case, dtype, rng)
    expected = R.depthwise_conv2d_backward_weight(*as64(grad_out, x), weight.shape, **params)
    assert_close(depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params), expected, dtype)


@pytest.mark.nojit
def test_depthwise_3x3_forward_and_backwards_match_reference_tiny():
    """1x2x5x5, fast path (3x3 stride 1) and generic path (stride 3): runs as plain Python too."""
    rng = np.random.default_rng(0)
    x, weight, bias = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((2, 1, 3, 3)), rng.standard_normal(2)
    for params in (dict(padding=1), dict(stride=3, padding=(1, 0))):
        y = depthwise_conv2d_forward(x, weight, bias, **params)
        assert_close(y, R.depthwise_conv2d_forward(x, weight, bias, **params), np.float64)
        grad_out = rng.standard_normal(y.shape)
        assert_close(depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params),
                     R.depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params), np.float64)
        assert_close(depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params),
                     R.depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params), np.float64)


def test_depthwise_multiplier2_output_channel_filters_input_channel_oc_div_m(rng):
    """Output channel ``oc`` is input channel ``oc // m`` filtered by ``weight[oc]`` (PyTorch's layout)."""
    x = rng.standard_normal((1, 2, 6, 5))
    weight = rng.standard_normal((4, 1, 3, 3))
    y = depthwise_conv2d_forward(x, weight, padding=1)
    for oc in range(4):
        single = depthwise_conv2d_forward(x[:, oc // 2:oc // 2 + 1], weight[oc:oc + 1], padding=1)
        assert_close(y[:, oc:oc + 1], single, np.float64)


# ----------------------------------------------------------------------------------------------------
# The register-row fast path against the generic path, kernel against kernel
# ----------------------------------------------------------------------------------------------------
def has_interior(size, kernel, stride, padding, dilation):
    """True if some output column has all ``kernel`` taps inside the image (the branch-free interior)."""
    n_out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return any(o * stride - padding >= 0 and o * stride - padding + (kernel - 1) * dilation < size
               for o in range(n_out))


FAST_SIZES = [(7, 9), (2, 2), (1, 4), (3, 1)]     # the last three are smaller than most kernels' reach


def build_fast_grid():
    """Full product k {3,5} x stride {1,2} x padding {0,1,2} x dilation {1,2} x multiplier {1,2} x sizes,
    keeping the sizes whose output is at least 1x1; plus non-square padding / dilation."""
    cases = []
    for kernel, stride, padding, dilation, multiplier, size in itertools.product(
            (3, 5), (1, 2), [0, 1, 2, (2, 0)], [1, 2, (2, 1)], (1, 2), FAST_SIZES):
        if (isinstance(padding, tuple) or isinstance(dilation, tuple)) and size != (7, 9):
            continue     # the non-square variants on the ordinary image only
        x_shape, weight_shape = (2, 2, *size), (2 * multiplier, 1, kernel, kernel)
        params = dict(stride=stride, padding=padding, dilation=dilation)
        try:
            conv_geometry(x_shape, weight_shape, groups=2, **params)
        except ValueError:
            continue
        cases.append(pytest.param(x_shape, weight_shape, params,
                                  id=f"k{kernel}-s{stride}-p{label(padding)}-d{label(dilation)}-m{multiplier}"
                                     f"-{size[0]}x{size[1]}"))
    return cases


FAST_GRID = build_fast_grid()


def test_fast_grid_includes_images_whose_interior_is_empty():
    """The border-only case (no column where all taps are inside the image) must be exercised, rows and
    columns, at both strides."""
    empty = set()
    for case in FAST_GRID:
        x_shape, weight_shape, params = case.values
        kernel, (ph, pw), (dh, dw) = weight_shape[3], pair(params["padding"]), pair(params["dilation"])
        if not has_interior(x_shape[3], kernel, params["stride"], pw, dw):
            empty.add(("columns", params["stride"], kernel))
        if not has_interior(x_shape[2], kernel, params["stride"], ph, dh):
            empty.add(("rows", params["stride"], kernel))
    assert empty >= {(axis, s, k) for axis in ("rows", "columns") for s in (1, 2) for k in (3, 5)}


def fast_inputs(x_shape, weight_shape, params, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = rng.standard_normal(weight_shape[0]).astype(dtype)
    geometry = D._depthwise_geometry(x_shape, weight_shape, **params)
    assert D._use_row_fast_path(geometry)
    grad_out = rng.standard_normal(geometry.output_shape).astype(dtype)
    return x, weight, bias, grad_out, geometry


def hyper(geometry):
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
    return sh, sw, ph, pw, dh, dw


FAST_PARAMS = ([pytest.param(*case.values, np.float64, id=case.id + "-float64") for case in FAST_GRID]
               + [pytest.param(*case.values, np.float32, id=case.id + "-float32") for case in FAST_GRID[::5]])


@pytest.mark.parametrize("x_shape, weight_shape, params, dtype", FAST_PARAMS)
def test_depthwise_forward_row_fast_path_equals_generic(x_shape, weight_shape, params, dtype, rng):
    x, weight, bias, _, geometry = fast_inputs(x_shape, weight_shape, params, dtype, rng)
    def run(kernel, bias):
        y = np.full(geometry.output_shape, np.nan, dtype)
        kernel(x, weight, D._empty_bias(dtype) if bias is None else bias, y, *hyper(geometry))
        return y
    generic = run(D._forward_generic_kernel, bias)
    assert_close(run(D._forward_rows_kernel, bias), generic, dtype)
    assert_close(run(D._forward_rows_kernel, None), run(D._forward_generic_kernel, None), dtype)
    assert_close(generic, R.depthwise_conv2d_forward(*as64(x, weight, bias), **params), dtype)


@pytest.mark.parametrize("x_shape, weight_shape, params, dtype",
                         [p for p in FAST_PARAMS if p.values[2]["stride"] == 1])
def test_depthwise_backward_input_rows_stride1_equals_generic(x_shape, weight_shape, params, dtype, rng):
    """Outputs start as NaN: every element must be written (zero-filled) by the kernel itself."""
    _, weight, _, grad_out, geometry = fast_inputs(x_shape, weight_shape, params, dtype, rng)
    sh, sw, ph, pw, dh, dw = hyper(geometry)
    generic = np.full(x_shape, np.nan, dtype)
    rows = np.full(x_shape, np.nan, dtype)
    D._backward_input_generic_kernel(grad_out, weight, generic, sh, sw, ph, pw, dh, dw)
    D._backward_input_rows_stride1_kernel(grad_out, weight, rows, ph, pw, dh, dw)
    assert_close(rows, generic, dtype)
    assert_close(generic, R.depthwise_conv2d_backward_input(*as64(grad_out, weight), x_shape, **params), dtype)


@pytest.mark.parametrize("x_shape, weight_shape, params, dtype", FAST_PARAMS)
def test_depthwise_backward_weight_rows_equals_generic(x_shape, weight_shape, params, dtype, rng):
    x, _, _, grad_out, geometry = fast_inputs(x_shape, weight_shape, params, dtype, rng)
    generic = np.full(weight_shape, np.nan, dtype)
    rows = np.full(weight_shape, np.nan, dtype)
    D._backward_weight_generic_kernel(grad_out, x, generic, *hyper(geometry))
    D._backward_weight_rows_kernel(grad_out, x, rows, *hyper(geometry))
    assert_close(rows, generic, dtype)
    assert_close(generic, R.depthwise_conv2d_backward_weight(*as64(grad_out, x), weight_shape, **params), dtype)


@pytest.mark.parametrize("kernel, stride, expected", [
    ((3, 3), 1, True), ((3, 3), 2, True), ((5, 5), 1, True), ((5, 5), (2, 2), True),
    ((3, 3), 3, False), ((3, 3), (1, 2), False), ((3, 5), 1, False), ((4, 4), 1, False), ((1, 1), 1, False),
    ((7, 7), 2, False),
])
def test_row_fast_path_applies_to_square_3x3_and_5x5_at_equal_stride_1_or_2(kernel, stride, expected):
    geometry = D._depthwise_geometry((1, 2, 11, 11), (2, 1, *kernel), stride, 2, 1)
    assert D._use_row_fast_path(geometry) is expected


@pytest.fixture
def kernel_calls(monkeypatch):
    """Record which private kernels the public functions call (the kernels still run)."""
    calls = []
    names = ["_forward_rows_kernel", "_forward_generic_kernel", "_backward_input_rows_stride1_kernel",
             "_backward_input_generic_kernel", "_backward_weight_rows_kernel", "_backward_weight_generic_kernel",
             "_forward_channels_last_kernel", "_backward_channels_last_kernel", "_forward_flat_kernel",
             "_backward_weight_flat_kernel", "_forward_one_pixel_kernel", "_backward_one_pixel_kernel",
             "_backward_input_phases_kernel", "_forward_across_channels_kernel",
             "_weight_gradient_across_channels_kernel", "_weight_gradient_dots_kernel"]
    for name in names:
        original = getattr(D, name)

        def recording(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)
        monkeypatch.setattr(D, name, recording)
    return calls


@pytest.mark.parametrize("kernel, stride, expected", [
    (3, 1, ["_forward_rows_kernel", "_backward_input_rows_stride1_kernel", "_backward_weight_rows_kernel"]),
    (5, 2, ["_forward_rows_kernel", "_backward_input_generic_kernel", "_backward_weight_rows_kernel"]),
    (3, 3, ["_forward_generic_kernel", "_backward_input_generic_kernel", "_backward_weight_generic_kernel"]),
    (4, 1, ["_forward_generic_kernel", "_backward_input_generic_kernel", "_backward_weight_generic_kernel"]),
])
def test_public_depthwise_functions_choose_the_row_kernels_when_they_apply(kernel, stride, expected, rng,
                                                                          kernel_calls, monkeypatch):
    monkeypatch.setattr(D, "CHANNELS_LAST_MAX_PIXELS", 0)      # planes of any size take the plane loops
    monkeypatch.setattr(D, "FLAT_MIN_PIXELS", 10**9)            # ... and not the flat-run kernels
    monkeypatch.setattr(D, "FLAT_BACKWARD_MIN_PIXELS", 10**9)
    monkeypatch.setattr(D, "LARGE_PLANE_GRADIENTS_MIN_PIXELS", 10**9)
    x = rng.standard_normal((1, 2, 9, 9))
    weight = rng.standard_normal((2, 1, kernel, kernel))
    y = depthwise_conv2d_forward(x, weight, stride=stride, padding=1)
    grad_out = rng.standard_normal(y.shape)
    depthwise_conv2d_backward_input(grad_out, weight, x.shape, stride=stride, padding=1)
    depthwise_conv2d_backward_weight(grad_out, x, weight.shape, stride=stride, padding=1)
    assert kernel_calls == expected


@pytest.mark.parametrize("x_shape, weight_shape, expected", [
    ((1, 2, 32, 32), (2, 1, 3, 3), ["_forward_flat_kernel"] * 2 + ["_weight_gradient_dots_kernel"]),
    ((1, 2, 32, 32), (2, 1, 5, 5), ["_forward_flat_kernel"] * 2 + ["_backward_weight_flat_kernel"]),  # not "same"
    ((1, 2, 28, 28), (2, 1, 3, 3), ["_forward_flat_kernel"] * 2 + ["_weight_gradient_dots_kernel"]),
    ((2, 2, 28, 28), (2, 1, 3, 3), ["_forward_flat_kernel"] * 2 + ["_weight_gradient_dots_kernel"]),
    ((1, 2, 11, 11), (2, 1, 3, 3), ["_forward_flat_kernel"] + ["_backward_channels_last_kernel"] * 2),
    ((1, 2, 10, 10), (2, 1, 3, 3), ["_forward_channels_last_kernel"] + ["_backward_channels_last_kernel"] * 2),
    ((2, 2, 8, 8), (2, 1, 3, 3), ["_forward_channels_last_kernel"] + ["_backward_channels_last_kernel"] * 2),
    ((2, 2, 11, 11), (2, 1, 3, 3), ["_forward_channels_last_kernel"] + ["_backward_channels_last_kernel"] * 2),
    ((16, 2, 8, 8), (2, 1, 3, 3), ["_forward_across_channels_kernel"] * 2
                                   + ["_weight_gradient_across_channels_kernel"]),   # 16 images: across channels
    ((2, 2, 12, 12), (2, 1, 3, 3), ["_forward_flat_kernel"] * 2 + ["_weight_gradient_dots_kernel"]),
    ((2, 2, 16, 16), (2, 1, 3, 3), ["_forward_flat_kernel"] * 2 + ["_weight_gradient_dots_kernel"]),
    ((2, 2, 1, 1), (2, 1, 3, 3), ["_forward_one_pixel_kernel"] + ["_backward_one_pixel_kernel"] * 2),
    ((1, 2, 4, 4), (2, 1, 3, 3), ["_forward_channels_last_kernel"] + ["_backward_channels_last_kernel"] * 2),
    ((1, 2, 33, 32), (2, 1, 3, 3), ["_forward_flat_kernel"] * 2 + ["_weight_gradient_dots_kernel"]),
    ((1, 2, 8, 8), (4, 1, 3, 3), ["_forward_rows_kernel", "_backward_input_rows_stride1_kernel",
                                  "_backward_weight_rows_kernel"]),          # multiplier 2: plane loops
])
def test_public_depthwise_functions_pick_flat_channels_last_or_plane_kernels_by_plane_size(
        x_shape, weight_shape, expected, rng, kernel_calls):
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(weight_shape)
    y = depthwise_conv2d_forward(x, weight, padding=1)
    grad_out = rng.standard_normal(y.shape)
    grad_x = depthwise_conv2d_backward_input(grad_out, weight, x.shape, padding=1)
    grad_weight = depthwise_conv2d_backward_weight(grad_out, x, weight.shape, padding=1)
    assert kernel_calls == expected
    assert_close(y, R.depthwise_conv2d_forward(x, weight, padding=1), np.float64)      # whichever kernel it was
    assert_close(grad_x, R.depthwise_conv2d_backward_input(grad_out, weight, x.shape, padding=1), np.float64)
    assert_close(grad_weight, R.depthwise_conv2d_backward_weight(grad_out, x, weight.shape, padding=1), np.float64)


# ----------------------------------------------------------------------------------------------------
# The channels-last small-plane kernels against the plane-by-plane kernels
# ----------------------------------------------------------------------------------------------------
# MobileNet shapes at 32x32 training and 224 inference, channel counts that leave a partial last block
# (CHANNEL_BLOCK = 64), and the odd ones: stride 3, dilation, non-square geometry, 1x1 planes.
CHANNELS_LAST_CASES = {
    "3x3_s1_8x8_c72": ((3, 72, 8, 8), (3, 3), dict(padding=1)),
    "3x3_s2_4x4_c130": ((2, 130, 4, 4), (3, 3), dict(stride=2, padding=1)),
    "3x3_s1_1x1_c65": ((2, 65, 1, 1), (3, 3), dict(padding=1)),
    "5x5_s2_7x7_c20": ((2, 20, 7, 7), (5, 5), dict(stride=2, padding=2)),
    "5x5_s1_14x14_c9": ((1, 9, 14, 14), (5, 5), dict(padding=2)),
    "3x5_s3x2_d1x2_c5": ((2, 5, 11, 10), (3, 5), dict(stride=(3, 2), padding=(1, 3), dilation=(1, 2))),
    "2x2_s3_unpadded_c3": ((2, 3, 8, 8), (2, 2), dict(stride=3)),
    # blocks whose intermediate channels-last copy gets a padded pixel stride (_pixel_stride): 32 channels
    # of 20 x 20, 64 channels of 16 x 16
    "5x5_s2_20x20_c64": ((1, 64, 20, 20), (5, 5), dict(stride=2, padding=2)),
    "3x3_s2_16x16_c128": ((4, 128, 16, 16), (3, 3), dict(stride=2, padding=1)),
}


@pytest.mark.parametrize("name", list(CHANNELS_LAST_CASES))
def test_channels_last_forward_gives_the_same_bits_for_any_channel_block(name, rng):
    """Batch-1 inference takes blocks of 32 channels instead of 64 (``_channel_block``); every output is the
    same sum of taps in the same order, so blocks of 8, 32 and 64 give identical bits."""
    x, weight, bias, _, geometry, _ = channels_last_inputs(name, np.float32, rng)
    outputs = []
    for block in (8, 32, D.CHANNEL_BLOCK):
        y = np.empty(geometry.output_shape, dtype=np.float32)
        no_epilogue = (bias[:0], bias[:0], np.float32(-np.inf), np.float32(np.inf), False)
        w_tiled = D._tile_weight(weight, block, geometry.output_shape[3])
        D._forward_channels_last_kernel(x, w_tiled, bias, y, block, *D._loop_arguments(geometry), *no_epilogue)
        outputs.append(y)
    np.testing.assert_array_equal(outputs[0], outputs[2])
    np.testing.assert_array_equal(outputs[1], outputs[2])


@pytest.mark.parametrize("name", list(CHANNELS_LAST_CASES))
def test_channels_last_backward_gives_the_same_bits_for_any_channel_block(name, rng, monkeypatch):
    """The backward takes ``_channel_block``'s block too: each channel's input and weight gradients are
    the same sums in the same order for blocks of 8, 32 and 64."""
    x, weight, _, grad_out, geometry, _ = channels_last_inputs(name, np.float32, rng)
    results = []
    for block in (8, 32, D.CHANNEL_BLOCK):
        monkeypatch.setattr(D, "_channel_block", lambda geometry, block=block: block)
        results.append(D._backward_channels_last(grad_out, x, weight, geometry, want_input=True, want_weight=True))
    for grad_x, grad_weight in results[:2]:
        np.testing.assert_array_equal(grad_x, results[2][0])
        np.testing.assert_array_equal(grad_weight, results[2][1])


def test_the_channels_last_copy_pads_a_pixel_stride_of_a_multiple_of_128_bytes_on_large_blocks():
    assert D.PIXEL_STRIDE_PAD == 4 and D.PIXEL_STRIDE_PAD_MIN_VALUES == 13 * 13 * 64
    assert D._pixel_stride(64, 13 * 13, 4) == 68 and D._pixel_stride(64, 13 * 13 - 1, 4) == 64
    assert D._pixel_stride(32, 20 * 20, 4) == 36 and D._pixel_stride(32, 18 * 18, 4) == 32
    assert D._pixel_stride(48, 32 * 32, 4) == 48                 # 192 bytes: no conflict to avoid
    assert D._pixel_stride(16, 32 * 32, 8) == 20                 # float64: 128 bytes
    assert D._pixel_stride(8, 32 * 32, 4) == 8                   # 32 bytes


def test_batch_one_channels_last_kernels_take_half_blocks_when_threads_would_idle():
    small = D._depthwise_geometry((1, 192, 28, 28), (192, 1, 3, 3), 1, 1, 1)
    training = D._depthwise_geometry((64, 192, 4, 4), (192, 1, 3, 3), 2, 1, 1)
    assert D._channel_block(training) == D.CHANNEL_BLOCK
    assert D._channel_block(small) == (D.CHANNEL_BLOCK // 2 if 3 < D.MIN_TASKS_PER_THREAD * numba.get_num_threads()
                                       else D.CHANNEL_BLOCK)


def channels_last_inputs(name, dtype, rng):
    x_shape, kernel, params = CHANNELS_LAST_CASES[name]
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((x_shape[1], 1, *kernel)).astype(dtype)
    bias = rng.standard_normal(x_shape[1]).astype(dtype)
    geometry = D._depthwise_geometry(x_shape, weight.shape, params.get("stride", 1), params.get("padding", 0),
                                     params.get("dilation", 1))
    assert D._use_channels_last(geometry)
    grad_out = rng.standard_normal(geometry.output_shape).astype(dtype)
    return x, weight, bias, grad_out, geometry, params


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CHANNELS_LAST_CASES))
def test_depthwise_channels_last_kernels_equal_plane_kernels_and_reference(name, dtype, rng, monkeypatch):
    x, weight, bias, grad_out, geometry, params = channels_last_inputs(name, dtype, rng)
    fast = (D._forward(x, weight, bias, geometry), *D._backward(grad_out, x, weight, geometry))
    monkeypatch.setattr(D, "CHANNELS_LAST_MAX_PIXELS", 0)
    planes = (D._forward(x, weight, bias, geometry), *D._backward(grad_out, x, weight, geometry))
    reference = (R.depthwise_conv2d_forward(*as64(x, weight, bias), **params),
                 R.depthwise_conv2d_backward_input(*as64(grad_out, weight), x.shape, **params),
                 R.depthwise_conv2d_backward_weight(*as64(grad_out, x), weight.shape, **params))
    for ours, plane, expected in zip(fast, planes, reference):
        assert ours.dtype == dtype
        assert_close(ours, plane, dtype)
        assert_close(ours, expected, dtype)


@pytest.mark.nojit
def test_depthwise_channels_last_fused_backward_equals_separate_gradients_tiny(rng):
    """The fused pass gives the same bits as asking for one gradient at a time."""
    x, weight, _, grad_out, geometry, _ = channels_last_inputs("5x5_s2_7x7_c20", np.float64, rng)
    grad_x, grad_weight = D._backward(grad_out, x, weight, geometry)
    np.testing.assert_array_equal(grad_x, D._backward_input(grad_out, weight, geometry))
    np.testing.assert_array_equal(grad_weight, D._backward_weight(grad_out, x, geometry))


# ----------------------------------------------------------------------------------------------------
# Gradients: finite differences and adjoint identities (float64)
# ----------------------------------------------------------------------------------------------------
GRADIENT_CASES = {
    "fast_3x3_stride1_pad1": ((2, 3, 7, 6), (3, 1, 3, 3), dict(padding=1)),
    "fast_5x5_stride2_pad2_multiplier2": ((2, 2, 9, 8), (4, 1, 5, 5), dict(stride=2, padding=2)),
    "fast_3x3_dilation2_image_smaller_than_reach": ((1, 2, 3, 2), (2, 1, 3, 3), dict(padding=2, dilation=2)),
    "generic_3x5_stride2x1_dilation1x2": ((2, 2, 8, 9), (4, 1, 3, 5), dict(stride=(2, 1), padding=(1, 2),
                                                                           dilation=(1, 2))),
    "generic_2x2_stride3_uncovered_pixels": ((1, 3, 8, 8), (3, 1, 2, 2), dict(stride=3)),
}


def gradient_inputs(name, rng):
    x_shape, weight_shape, params = GRADIENT_CASES[name]
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(weight_shape)
    bias = rng.standard_normal(weight_shape[0])
    grad_out = rng.standard_normal(depthwise_conv2d_forward(x, weight, **params).shape)
    return x, weight, bias, grad_out, params


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_depthwise_backward_input_passes_finite_difference_check(name, rng):
    x, weight, bias, grad_out, params = gradient_inputs(name, rng)
    loss = lambda x_: np.vdot(grad_out, depthwise_conv2d_forward(x_, weight, bias, **params))   # noqa: E731
    assert_gradcheck(loss, x, depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params), rng)


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_depthwise_backward_weight_passes_finite_difference_check(name, rng):
    x, weight, bias, grad_out, params = gradient_inputs(name, rng)
    loss = lambda w_: np.vdot(grad_out, depthwise_conv2d_forward(x, w_, bias, **params))   # noqa: E731
    assert_gradcheck(loss, weight, depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params), rng)


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_depthwise_backward_input_is_adjoint_of_forward(name, rng):
    """``vdot(conv(x; w), g) == vdot(x, backward_input(g; w))`` (no bias: the map must be linear)."""
    x, weight, _, grad_out, params = gradient_inputs(name, rng)
    assert_vdot_equal(depthwise_conv2d_forward(x, weight, **params), grad_out,
                      x, depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params))


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_depthwise_backward_weight_is_adjoint_of_forward(name, rng):
    """``vdot(g, conv(x; w)) == vdot(w, backward_weight(g, x))`` (no bias)."""
    x, weight, _, grad_out, params = gradient_inputs(name, rng)
    assert_vdot_equal(grad_out, depthwise_conv2d_forward(x, weight, **params),
                      weight, depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params))


# ----------------------------------------------------------------------------------------------------
# Determinism and memory layouts
# ----------------------------------------------------------------------------------------------------
# fast path (3x3 stride 1 and 5x5 stride 2) and generic path (3x3 stride 3, 4x4 stride 1)
# (kernel size, stride, channel multiplier); multiplier 1 on these 11x10 planes takes the channels-last
# kernels (70 channels: two channel blocks per image)
PATHS = {"fast_3x3_s1": (3, 1, 2), "fast_5x5_s2": (5, 2, 2), "generic_3x3_s3": (3, 3, 2),
         "generic_4x4_s1": (4, 1, 2), "channels_last_3x3_s1": (3, 1, 1), "channels_last_5x5_s2": (5, 2, 1)}


def path_inputs(path, rng):
    kernel, stride, multiplier = PATHS[path]
    C = 3 if multiplier > 1 else 70
    x = rng.standard_normal((4, C, 11, 10)).astype(np.float32)    # >= 8 tasks: every thread gets several
    weight = rng.standard_normal((C * multiplier, 1, kernel, kernel)).astype(np.float32)
    params = dict(stride=stride, padding=1)
    grad_out = rng.standard_normal(depthwise_conv2d_forward(x, weight, **params).shape).astype(np.float32)
    return x, weight, grad_out, params


@pytest.mark.parametrize("path", list(PATHS))
def test_depthwise_backward_weight_is_bit_identical_when_run_twice(path, rng):
    x, weight, grad_out, params = path_inputs(path, rng)
    first = depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params)
    second = depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params)
    assert np.array_equal(first, second)


@pytest.mark.parametrize("path", list(PATHS))
def test_depthwise_results_do_not_depend_on_numba_thread_count(path, rng, restore_numba_threads):
    """Every parallel loop gives one whole output plane (forward, backward-input) or one output channel's
    weights (backward-weight, summed over the batch inside the iteration) to a thread; the channels-last
    kernels keep one partial weight gradient per (image, channel block) and add them in image order: no
    sum is ever split across threads, so 1 thread and all threads give bit-identical results."""
    x, weight, grad_out, params = path_inputs(path, rng)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        results.append((depthwise_conv2d_forward(x, weight, **params),
                        depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params),
                        depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params)))
    for one_thread, all_threads in zip(*results):
        assert np.array_equal(one_thread, all_threads)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path", ["fast_3x3_s1", "generic_3x3_s3", "channels_last_3x3_s1"])
def test_depthwise_non_contiguous_inputs_give_same_result_as_contiguous(layout, path, rng):
    x, weight, grad_out, params = path_inputs(path, rng)
    bias = rng.standard_normal(weight.shape[0]).astype(np.float32)
    x_view, weight_view, bias_view, grad_out_view = (relayout(a, layout) for a in (x, weight, bias, grad_out))
    assert not x_view.flags.c_contiguous and not grad_out_view.flags.c_contiguous
    np.testing.assert_array_equal(depthwise_conv2d_forward(x_view, weight_view, bias_view, **params),
                                  depthwise_conv2d_forward(x, weight, bias, **params))
    np.testing.assert_array_equal(depthwise_conv2d_backward_input(grad_out_view, weight_view, x.shape, **params),
                                  depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params))
    np.testing.assert_array_equal(depthwise_conv2d_backward_weight(grad_out_view, x_view, weight.shape, **params),
                                  depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params))


# ----------------------------------------------------------------------------------------------------
# The flat-run forward kernel (stride 1, planes of at least FLAT_MIN_PIXELS pixels, FLAT_MIN_PIXELS_BATCHED
# for several images)
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, kernel, padding, dilation", [
    ((1, 3, 11, 11), (3, 3), (1, 1), (1, 1)),        # the smallest plane that takes it for one image
    ((2, 3, 12, 12), (3, 3), (1, 1), (1, 1)),        # the smallest plane that takes it for several images
    ((1, 4, 14, 9), (5, 5), (2, 2), (1, 1)),          # 5x5, non-square plane
    ((1, 2, 12, 11), (3, 5), (0, 3), (2, 1)),         # no row padding, wide column padding, dilation
    ((1, 3, 11, 12), (2, 2), (1, 0), (1, 1)),         # even kernel, asymmetric padding
])
@pytest.mark.parametrize("with_bias", [False, True])
def test_flat_forward_matches_the_reference(x_shape, kernel, padding, dilation, with_bias, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((x_shape[1], 1, *kernel)).astype(dtype)
    bias = rng.standard_normal(x_shape[1]).astype(dtype) if with_bias else None
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, padding, dilation)
    assert D._use_flat(geometry)
    assert_close(depthwise_conv2d_forward(x, weight, bias, padding=padding, dilation=dilation),
                 R.depthwise_conv2d_forward(x, weight, bias, padding=padding, dilation=dilation), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, kernel, stride, padding, dilation", [
    ((1, 3, 33, 33), (3, 3), (2, 2), (1, 1), (1, 1)),     # MobileNet's stride-2 layer, odd plane
    ((2, 2, 34, 40), (5, 5), (2, 2), (2, 2), (1, 1)),     # 5x5 (MobileNet V3)
    ((1, 2, 35, 31), (3, 4), (3, 2), (0, 3), (2, 1)),     # uneven strides, dilation, one-sided padding
])
def test_flat_forward_splits_strided_planes_into_phases_correctly(x_shape, kernel, stride, padding, dilation,
                                                                  dtype, rng, monkeypatch):
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((x_shape[1], 1, *kernel)).astype(dtype)
    bias = rng.standard_normal(x_shape[1]).astype(dtype)
    geometry = D._depthwise_geometry(x.shape, weight.shape, stride, padding, dilation)
    assert D._use_flat(geometry) and not D._use_channels_last(geometry)
    assert_close(depthwise_conv2d_forward(x, weight, bias, stride=stride, padding=padding, dilation=dilation),
                 R.depthwise_conv2d_forward(x, weight, bias, stride=stride, padding=padding, dilation=dilation),
                 dtype)


@pytest.mark.parametrize("kernel_height, kernel_width, dilation", [
    (3, 1, 1), (3, 2, 1), (3, 3, 1), (3, 4, 1), (3, 5, 1), (3, 7, 1),
    (5, 5, 1),                    # rows of five taps in one pass each
    (3, 3, 2),                    # the one-pass 3x3 with its taps two rows and columns apart
])
def test_flat_forward_adds_the_taps_of_a_row_in_order_whatever_their_grouping(kernel_height, kernel_width, dilation,
                                                                             rng):
    """The flat kernel adds a 3x3 kernel in one pass, a row of five taps in one, other rows up to three taps
    per loop (3+3+1 for a row of 7, 2+2 for 4): the same bits as one pass per tap, ``total += w[kh, kw] *
    tap`` in row-major tap order (NumPy, float32 like the kernel)."""
    x = rng.standard_normal((1, 2, 12, 13)).astype(np.float32)
    weight = rng.standard_normal((2, 1, kernel_height, kernel_width)).astype(np.float32)
    padding = (dilation * (kernel_height // 2), dilation * (kernel_width // 2))
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, padding, dilation)
    assert D._use_flat(geometry)
    _, _, H_out, W_out = geometry.output_shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    expected = np.zeros(geometry.output_shape, dtype=np.float32)
    for kh, kw in itertools.product(range(kernel_height), range(kernel_width)):
        rows, columns = kh * dilation, kw * dilation
        expected += weight[None, :, 0, kh, kw, None, None] * padded[:, :, rows:rows + H_out, columns:columns + W_out]
    np.testing.assert_array_equal(depthwise_conv2d_forward(x, weight, padding=padding, dilation=dilation), expected)


@pytest.mark.parametrize("x_shape, kernel_size, stride", [
    ((2, 5, 12, 12), 3, 1),       # a run of 12 x 14 values, finished in one pass before its rows are copied out
    ((1, 3, 64, 64), 3, 1),       # a run larger than L1 (64 x 66 values)
    ((1, 3, 40, 40), 5, 2),       # stride 2 (its phases), a whole-run finish
    ((1, 4, 28, 28), 3, 2),       # 3x3 at stride 2: the nine taps in one pass
])
@pytest.mark.parametrize("low, high, hardswish", [(-np.inf, np.inf, False), (0.0, 6.0, False), (-np.inf, np.inf, True)])
def test_flat_forward_epilogue_is_the_same_as_a_separate_pass(x_shape, kernel_size, stride, low, high, hardswish, rng):
    """The flat kernel finishes each output with clip(y * scale + shift), then hard swish if asked, before it
    writes it out: the same bits as the convolution followed by kernels.batchnorm.finish_channels."""
    from kernels.batchnorm import finish_channels
    C = x_shape[1]
    x = 3 * rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal((C, 1, kernel_size, kernel_size)).astype(np.float32)
    bias = rng.standard_normal(C).astype(np.float32)
    scale, shift = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    geometry = D._depthwise_geometry(x.shape, weight.shape, stride, kernel_size // 2, 1)
    assert D._use_flat(geometry)
    fused = D._forward(x, weight, bias, geometry, (scale, shift, low, high, hardswish))
    separate = finish_channels(D._forward(x, weight, bias, geometry), (scale, shift, low, high, hardswish))
    np.testing.assert_array_equal(fused, separate)
    if hardswish:
        from kernels.activation import hardswish_forward
        np.testing.assert_array_equal(separate, hardswish_forward(finish_channels(D._forward(x, weight, bias, geometry),
                                                                                  (scale, shift, low, high))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, kernel, padding, dilation", [
    ((3, 4, 16, 16), (3, 3), (1, 1), (1, 1)),         # MobileNet's stride-1 layer at 16x16 (training)
    ((2, 3, 17, 19), (5, 5), (2, 1), (1, 1)),         # 5x5, less padding on one side
    ((2, 2, 18, 16), (3, 3), (2, 0), (2, 1)),         # dilation 2 with its full padding, none on columns
])
def test_flat_backward_matches_the_reference(x_shape, kernel, padding, dilation, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((x_shape[1], 1, *kernel)).astype(dtype)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, padding, dilation)
    assert D._use_flat_backward(geometry)
    grad_out = rng.standard_normal(geometry.output_shape).astype(dtype)
    options = dict(padding=padding, dilation=dilation)
    assert_close(depthwise_conv2d_backward_input(grad_out, weight, x.shape, **options),
                 R.depthwise_conv2d_backward_input(grad_out, weight, x.shape, **options), dtype)
    assert_close(depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **options),
                 R.depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **options), dtype)
    grad_x, grad_weight = D._backward(grad_out, x, weight, geometry)            # the layer's entry point
    assert_close(grad_x, R.depthwise_conv2d_backward_input(grad_out, weight, x.shape, **options), dtype)
    assert_close(grad_weight, R.depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **options), dtype)


def test_flat_backward_is_not_used_when_the_padding_exceeds_the_kernels_reach():
    """Padding above d*(k-1) would need a negative padding in the input gradient's convolution."""
    assert D._use_flat_backward(D._depthwise_geometry((1, 2, 16, 16), (2, 1, 3, 3), 1, 2, 1))
    assert not D._use_flat_backward(D._depthwise_geometry((1, 2, 16, 16), (2, 1, 3, 3), 1, 3, 1))
    assert not D._use_flat_backward(D._depthwise_geometry((1, 2, 16, 16), (2, 1, 3, 3), 2, 1, 1))
    assert not D._use_flat_backward(D._depthwise_geometry((1, 2, 8, 8), (2, 1, 3, 3), 1, 1, 1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, kernel, stride, padding, dilation", [
    ((2, 3, 11, 12), (3, 3), (2, 2), (1, 1), (1, 1)),     # MobileNet's stride-2 layer, odd and even sizes
    ((2, 2, 13, 13), (5, 5), (2, 2), (2, 2), (1, 1)),     # 5x5 at stride 2
    ((1, 2, 14, 10), (3, 3), (3, 2), (0, 2), (2, 1)),     # unequal strides, dilation, padding on one axis
    ((1, 2, 12, 12), (3, 3), (1, 1), (3, 3), (1, 1)),     # stride 1 with more padding than the kernel reaches
])
def test_flat_weight_gradient_at_any_stride_matches_the_reference(x_shape, kernel, stride, padding, dilation,
                                                                  dtype, rng, kernel_calls, monkeypatch):
    monkeypatch.setattr(D, "LARGE_PLANE_GRADIENTS_MIN_PIXELS", 1)        # small planes, to keep the test fast
    monkeypatch.setattr(D, "CHANNELS_LAST_MAX_PIXELS", 0)                # (one image would take channels-last)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight_shape = (x_shape[1], 1, *kernel)
    options = dict(stride=stride, padding=padding, dilation=dilation)
    geometry = D._depthwise_geometry(x.shape, weight_shape, stride, padding, dilation)
    grad_out = rng.standard_normal(geometry.output_shape).astype(dtype)
    assert_close(depthwise_conv2d_backward_weight(grad_out, x, weight_shape, **options),
                 R.depthwise_conv2d_backward_weight(grad_out, x, weight_shape, **options), dtype)
    assert kernel_calls == ["_backward_weight_flat_kernel"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, stride", [((2, 3, 41, 37), 1), ((1, 2, 56, 56), 1), ((2, 2, 66, 60), 2)])
def test_flat_weight_gradient_in_blocks_of_rows_matches_the_reference(x_shape, stride, dtype, rng):
    # runs longer than WEIGHT_GRADIENT_BLOCK_VALUES are summed a block of output rows at a time: 41 rows
    # of 39 make blocks of 11, 11, 11 and 8 rows (a short last block), 56 x 56 seven of 8
    geometry = D._depthwise_geometry(x_shape, (x_shape[1], 1, 3, 3), stride, 1, 1)
    H_out, W_out = geometry.output_shape[2:]
    assert H_out * (W_out + 2) > D.WEIGHT_GRADIENT_BLOCK_VALUES
    x = rng.standard_normal(x_shape).astype(dtype)
    grad_out = rng.standard_normal(geometry.output_shape).astype(dtype)
    grad_weight = np.empty((x_shape[1], 1, 3, 3), dtype=dtype)
    D._backward_weight_flat_kernel(grad_out, x, grad_weight, stride, stride, 1, 1, 1, 1)
    assert_close(grad_weight, R.depthwise_conv2d_backward_weight(grad_out, x, grad_weight.shape, stride=stride,
                                                                 padding=1), dtype)


def test_strided_weight_gradient_takes_the_flat_kernel_above_the_channels_last_planes(rng, kernel_calls):
    x = rng.standard_normal((1, 2, 33, 32)).astype(np.float32)
    grad_out = rng.standard_normal((1, 2, 17, 16)).astype(np.float32)
    depthwise_conv2d_backward_weight(grad_out, x, (2, 1, 3, 3), stride=2, padding=1)
    depthwise_conv2d_backward_weight(grad_out[:, :, :16], x[:, :, :32], (2, 1, 3, 3), stride=2, padding=1)
    depthwise_conv2d_backward_weight(np.repeat(grad_out, 2, axis=1), x, (4, 1, 3, 3), stride=2, padding=1)
    assert kernel_calls == ["_backward_weight_flat_kernel", "_backward_channels_last_kernel",
                            "_backward_weight_rows_kernel"]                 # 32x32: channels-last; multiplier 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, kernel, stride, padding, dilation", [
    ((2, 3, 11, 12), (3, 3), (2, 2), (1, 1), (1, 1)),     # MobileNet's stride-2 layer, odd and even sizes
    ((2, 2, 13, 13), (5, 5), (2, 2), (2, 2), (1, 1)),     # 5x5 at stride 2
    ((1, 2, 14, 10), (3, 3), (3, 2), (0, 2), (2, 1)),     # unequal strides, dilation, padding on one axis
    ((1, 2, 9, 9), (1, 1), (2, 2), (0, 0), (1, 1)),       # a kernel smaller than the stride: some phases get 0
    ((1, 2, 12, 12), (4, 4), (3, 3), (2, 1), (1, 1)),     # even kernel, stride 3
    ((1, 1, 2, 3), (3, 3), (2, 2), (1, 1), (1, 1)),       # a plane smaller than the phases
])
def test_phase_input_gradient_matches_the_reference_and_the_generic_kernels_bits(
        x_shape, kernel, stride, padding, dilation, dtype, rng, kernel_calls, monkeypatch):
    monkeypatch.setattr(D, "LARGE_PLANE_GRADIENTS_MIN_PIXELS", 1)        # small planes, to keep the test fast,
    monkeypatch.setattr(D, "CHANNELS_LAST_MAX_PIXELS", 0)               # which would take the channels-last kernel
    weight = rng.standard_normal((x_shape[1], 1, *kernel)).astype(dtype)
    options = dict(stride=stride, padding=padding, dilation=dilation)
    geometry = D._depthwise_geometry(x_shape, weight.shape, stride, padding, dilation)
    grad_out = rng.standard_normal(geometry.output_shape).astype(dtype)
    grad_x = depthwise_conv2d_backward_input(grad_out, weight, x_shape, **options)
    assert kernel_calls == ["_backward_input_phases_kernel"]
    assert_close(grad_x, R.depthwise_conv2d_backward_input(grad_out, weight, x_shape, **options), dtype)
    generic = np.empty(x_shape, dtype=dtype)
    D._backward_input_generic_kernel(grad_out, weight, generic, *D._loop_arguments(geometry))
    np.testing.assert_array_equal(grad_x, generic)                      # each pixel's taps in the same order


def test_strided_input_gradient_takes_the_phase_kernel_above_the_channels_last_planes(rng, kernel_calls):
    weight = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    grad_out = rng.standard_normal((1, 2, 17, 16)).astype(np.float32)
    depthwise_conv2d_backward_input(grad_out, weight, (1, 2, 33, 32), stride=2, padding=1)
    depthwise_conv2d_backward_input(grad_out[:, :, :16], weight, (1, 2, 32, 32), stride=2, padding=1)
    depthwise_conv2d_backward_input(np.repeat(grad_out, 2, axis=1), np.repeat(weight, 2, axis=0), (1, 2, 33, 32),
                                    stride=2, padding=1)
    assert kernel_calls == ["_backward_input_phases_kernel", "_backward_channels_last_kernel",
                            "_backward_input_generic_kernel"]               # 32x32: channels-last; multiplier 2


def assert_same_bits_on_one_and_all_threads(compute):
    """``compute()`` (an array) on one of numba's threads and on all of them gives the same bits (with the
    ``restore_numba_threads`` fixture, which sets the thread count back)."""
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        results.append(compute())
    np.testing.assert_array_equal(results[0], results[1])


def test_flat_weight_gradient_gives_the_same_bits_on_one_and_two_threads(rng, restore_numba_threads):
    x = rng.standard_normal((4, 6, 16, 16)).astype(np.float32)
    grad_out = rng.standard_normal((4, 6, 16, 16)).astype(np.float32)
    assert_same_bits_on_one_and_all_threads(lambda: depthwise_conv2d_backward_weight(grad_out, x, (6, 1, 3, 3),
                                                                                    padding=1))


@pytest.mark.parametrize("kernel_size, stride, dilation", [(3, 1, 1), (3, 2, 1), (5, 2, 1), (3, 1, 2)])
def test_flat_forward_channels_sharing_buffers_give_the_same_bits(rng, kernel_size, stride, dilation):
    """The flat forward's channels that share an iteration share its padded buffers: whatever the number of
    iterations the channels are cut into, each channel's output is the same, and the reference's."""
    x = rng.standard_normal((1, 7, 13, 11)).astype(np.float32)
    weight = rng.standard_normal((7, 1, kernel_size, kernel_size)).astype(np.float32)
    padding = dilation * (kernel_size // 2)
    geometry = D._depthwise_geometry(x.shape, weight.shape, stride, padding, dilation)
    nothing = np.empty(0, dtype=np.float32)
    outputs = []
    for chunks in (7, 3, 1):
        y = np.empty(geometry.output_shape, dtype=np.float32)
        D._forward_flat_kernel(x, weight, nothing, y, chunks, stride, stride, padding, padding, dilation, dilation,
                               nothing, nothing, np.float32(-np.inf), np.float32(np.inf), False)
        outputs.append(y)
    for y in outputs[1:]:
        np.testing.assert_array_equal(y, outputs[0])
    expected = R.depthwise_conv2d_forward(x.astype(np.float64), weight.astype(np.float64), stride=stride,
                                          padding=padding, dilation=dilation)
    assert_close(outputs[0], expected, np.float32)


# The stride-1 3x3 "same" planes (padding 1): _forward_flat_stacked3x3_kernel (up to STACKED_MAX_PIXELS) and
# _forward_flat_same3x3_kernel (any size), with the padded-plane kernel's bits
SAME3X3_SHAPES = [
    (1, 5, 3, 3),          # the smallest plane it takes: one interior output
    (2, 3, 3, 7),          # three rows, wide
    (1, 4, 7, 3),          # three columns, tall
    (3, 6, 14, 14),        # several images, MobileNet's 14 x 14
    (1, 2, 5, 9),
    (2, 3, 16, 16),        # the default training run's stride-1 planes
]


def _flat_outputs(x, weight, bias, epilogue, kernel):
    """The flat forward of a 3x3, padding-1, stride-1 layer by ``kernel``: "dispatch" (the dispatcher,
    ``_forward_flat_kernel``), "same3x3" or "stacked" (that kernel called directly, the whole batch in one
    call), "padded" (the padded-plane stride-1 kernel)."""
    N, C, H, W = x.shape
    y = np.empty(x.shape, dtype=x.dtype)                              # a new C-contiguous output, as the layers'
    chunks = D._channel_chunks(N, C)
    if kernel == "dispatch":
        D._forward_flat_kernel(x, weight, bias, y, chunks, 1, 1, 1, 1, 1, 1, *epilogue)
    elif kernel == "same3x3":
        D._forward_flat_same3x3_kernel(np.ascontiguousarray(x).reshape(N, C, H * W), weight, bias,
                                       y.reshape(N, C, H * W), chunks, H, W, *epilogue)
    elif kernel == "stacked":
        D._forward_flat_stacked3x3_kernel(np.ascontiguousarray(x), weight, bias, y, chunks, *epilogue)
    else:
        D._forward_flat_stride1_kernel(x, weight, bias, y, chunks, 1, 1, 1, 1, *epilogue)
    return y


def _epilogues(C, dtype, rng):
    nothing = np.empty(0, dtype=dtype)
    scale, shift = rng.random(C).astype(dtype) + 0.5, rng.standard_normal(C).astype(dtype)
    return {"none": (nothing, nothing, dtype.type(-np.inf), dtype.type(np.inf), False),
            "relu6": (scale, shift, dtype.type(0), dtype.type(6), False),
            "hardswish": (scale, shift, dtype.type(-np.inf), dtype.type(np.inf), True)}


@pytest.mark.parametrize("kernel", ["same3x3", "stacked", "dispatch"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape", SAME3X3_SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("epilogue", ["none", "relu6", "hardswish"])
def test_same3x3_kernels_give_the_padded_plane_kernels_bits(kernel, x_shape, with_bias, epilogue, dtype, rng):
    """Read where the plane lies (same3x3: rows of zeros above and below, the side columns again; stacked:
    a zero after each row, a row of zeros after each plane, the images one after the other), every output
    is the padded-plane kernel's sum in its order: the same bits, the signs of zeros too; and the
    reference's."""
    dtype = np.dtype(dtype)
    x = rng.standard_normal(x_shape).astype(dtype)
    C = x_shape[1]
    weight = rng.standard_normal((C, 1, 3, 3)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype) if with_bias else np.empty(0, dtype=dtype)
    finish = _epilogues(C, dtype, rng)[epilogue]
    same = _flat_outputs(x, weight, bias, finish, kernel)
    padded = _flat_outputs(x, weight, bias, finish, "padded")
    np.testing.assert_array_equal(same, padded)
    np.testing.assert_array_equal(np.signbit(same), np.signbit(padded))
    if epilogue == "none":
        expected = R.depthwise_conv2d_forward(x, weight, bias if with_bias else None, padding=1)
        assert_close(same, expected, dtype)


@pytest.mark.parametrize("kernel", ["same3x3", "stacked"])
def test_same3x3_kernels_keep_the_padded_kernels_non_finite_pattern(kernel, rng):
    """inf and nan on the corners, the edges and inside reach exactly the outputs that read them (and the
    padding's ``w * 0`` keeps an infinite weight's nan on the border), as in the padded-plane kernel; the
    stacked kernel's dropped outputs, which read the next row or plane, take nothing to a kept one."""
    x = rng.standard_normal((2, 4, 6, 7)).astype(np.float32)
    x[0, 0, 0, 0], x[0, 1, 5, 6], x[0, 2, 0, 3], x[0, 3, 2, 0] = np.inf, -np.inf, np.nan, np.inf
    x[1, 0, 3, 6], x[1, 1, 5, 0], x[1, 2, 2, 3] = np.nan, np.inf, -np.inf
    weight = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    weight[3, 0, 0, 0] = np.inf                                       # reaches every output of channel 3
    finish = _epilogues(4, np.dtype(np.float32), rng)["none"]
    nothing = np.empty(0, dtype=np.float32)
    same = _flat_outputs(x, weight, nothing, finish, kernel)
    np.testing.assert_array_equal(same, _flat_outputs(x, weight, nothing, finish, "padded"))
    assert np.isnan(same[0, 3, 0, 0]) and not np.isfinite(same[0, 0, :2, :2]).any()


@pytest.mark.parametrize("kernel, padding, dilation, plane, expected", [
    (3, 1, 1, (14, 14), "_forward_flat_stacked3x3_kernel"),
    (3, 1, 1, (3, 3), "_forward_flat_stacked3x3_kernel"),
    (3, 1, 1, (20, 20), "_forward_flat_stacked3x3_kernel"),      # STACKED_MAX_PIXELS
    (3, 1, 1, (21, 20), "_forward_flat_same3x3_kernel"),         # one row more
    (3, 1, 1, (28, 28), "_forward_flat_same3x3_kernel"),
    (3, 1, 1, (2, 14), "_forward_flat_stride1_kernel"),          # fewer than three rows: the padded-plane kernel
    (3, 1, 1, (14, 2), "_forward_flat_stride1_kernel"),
    (3, 0, 1, (14, 14), "_forward_flat_stride1_kernel"),         # no padding
    (3, 2, 2, (14, 14), "_forward_flat_stride1_kernel"),         # dilation 2
    (5, 2, 1, (14, 14), "_forward_flat_stride1_kernel"),         # 5x5
])
def test_flat_forward_takes_the_same3x3_kernels_for_3x3_padding_1_planes(kernel, padding, dilation, plane,
                                                                         expected, rng, monkeypatch):
    calls = []
    for name in ("_forward_flat_stacked3x3_kernel", "_forward_flat_same3x3_kernel", "_forward_flat_stride1_kernel"):
        original = getattr(D, name)

        def recording(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)
        monkeypatch.setattr(D, name, recording)
    x = rng.standard_normal((1, 2, *plane))
    weight = rng.standard_normal((2, 1, kernel, kernel))
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, padding, dilation)
    y = np.empty(geometry.output_shape)
    nothing = np.empty(0)
    D._forward_flat_kernel(x, weight, nothing, y, 1, 1, 1, padding, padding, dilation, dilation, nothing, nothing,
                           -np.inf, np.inf, False)
    assert calls == [expected]
    assert_close(y, R.depthwise_conv2d_forward(x, weight, padding=padding, dilation=dilation), np.float64)


def test_stacked_kernel_cuts_a_large_batch_into_calls_of_about_as_many_images(rng, monkeypatch):
    """As many images per call as fit in STACKED_RUN_VALUES (14 planes of 16 x 16, 17 x 17 values each):
    40 images go in 3 calls of 13 or 14, in order, with the bits of the padded-plane kernel; a plane larger
    than the run still gets one image per call."""
    assert D._images_per_stack(40, 16, 16) == 14
    assert D._images_per_stack(8, 14, 14) == 8                       # the whole batch fits
    assert D._images_per_stack(3, 80, 80) == 1
    calls = []
    original = D._forward_flat_stacked3x3_kernel

    def recording(x, *args):
        calls.append(x.shape[0])
        return original(x, *args)
    monkeypatch.setattr(D, "_forward_flat_stacked3x3_kernel", recording)
    x = rng.standard_normal((40, 3, 16, 16)).astype(np.float32)
    weight = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    finish = _epilogues(3, np.dtype(np.float32), rng)["relu6"]
    nothing = np.empty(0, dtype=np.float32)
    y = _flat_outputs(x, weight, nothing, finish, "dispatch")
    assert calls == [13, 13, 14]
    np.testing.assert_array_equal(y, _flat_outputs(x, weight, nothing, finish, "padded"))


def test_same3x3_kernel_reads_a_non_contiguous_input_as_its_copy(rng):
    """The flat kernel sees each plane as one run: an input that is not C-contiguous (a layer's gradient can
    be a view) is copied into one first; the input gradient goes through the same kernel."""
    base = rng.standard_normal((3, 8, 12, 12)).astype(np.float32)
    view = base[:, ::2]                                               # (3, 4, 12, 12), every other channel
    weight = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    finish = _epilogues(4, np.dtype(np.float32), rng)["relu6"]
    nothing = np.empty(0, dtype=np.float32)
    np.testing.assert_array_equal(_flat_outputs(view, weight, nothing, finish, "dispatch"),
                                  _flat_outputs(np.ascontiguousarray(view), weight, nothing, finish, "dispatch"))
    geometry = D._depthwise_geometry((3, 4, 12, 12), weight.shape, 1, 1, 1)
    assert_close(D._backward_input_flat(view, weight, geometry),
                 R.depthwise_conv2d_backward_input(view, weight, (3, 4, 12, 12), padding=1), np.float32)


@pytest.mark.parametrize("x_shape", [(1, 37, 14, 14), (3, 37, 16, 16), (1, 37, 24, 24)])   # stacked, same3x3
def test_same3x3_kernels_give_the_same_bits_on_one_and_two_threads(x_shape, rng, restore_numba_threads):
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal((37, 1, 3, 3)).astype(np.float32)
    assert_same_bits_on_one_and_all_threads(lambda: depthwise_conv2d_forward(x, weight, padding=1))


def test_flat_forward_cuts_one_image_into_chunks_of_channels(monkeypatch):
    """One image: a multiple of the thread count of iterations, at most about FLAT_CHANNEL_CHUNK channels
    each, never more iterations than channels; several images: one channel per iteration."""
    monkeypatch.setattr(D, "num_threads", lambda: 2)
    assert D._channel_chunks(1, 96) == 12
    assert D._channel_chunks(1, 72) == 10                      # 7 or 8 channels each, 36 per thread
    assert D._channel_chunks(1, 16) == 2
    assert D._channel_chunks(1, 1) == 1
    assert D._channel_chunks(8, 96) == 96


@pytest.mark.nojit
def test_flat_kernels_small_case_runs_as_python_too(rng, kernel_calls):
    """Small enough for NUMBA_DISABLE_JIT=1: the flat-run forward (stride 1 and 2, with the batch-norm
    epilogue and hard swish) and both flat gradients (the weight gradient at stride 1 and 2), and the
    phase-by-phase input gradient at stride 2, as plain Python, against the reference."""
    x = rng.standard_normal((1, 2, 7, 7))
    weight = rng.standard_normal((2, 1, 3, 3))
    grad_out = rng.standard_normal((1, 2, 7, 7))
    nothing = np.empty(0)
    scale, shift = rng.standard_normal(2), rng.standard_normal(2)
    finished = np.empty(x.shape)
    D._forward_flat_kernel(x, weight, nothing, finished, 2, 1, 1, 1, 1, 1, 1, scale, shift, -np.inf, np.inf, True)
    v = R.depthwise_conv2d_forward(x, weight, padding=1) * scale[None, :, None, None] + shift[None, :, None, None]
    assert_close(finished, v * np.clip(v + 3, 0, 6) / 6, np.float64)          # batch norm, hard swish (stacked)
    same = np.empty(x.shape)
    D._forward_flat_same3x3_kernel(x.reshape(1, 2, 49), weight, nothing, same.reshape(1, 2, 49), 2, 7, 7, scale,
                                   shift, -np.inf, np.inf, True)             # the larger planes' kernel
    assert_close(same, v * np.clip(v + 3, 0, 6) / 6, np.float64)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 2, 1, 1)
    strided = np.empty(geometry.output_shape)
    D._forward_flat_kernel(x, weight, nothing, strided, 1, 2, 2, 1, 1, 1, 1, nothing, nothing, -np.inf, np.inf,
                           False)                                      # one iteration: both channels share buffers
    assert_close(strided, R.depthwise_conv2d_forward(x, weight, stride=2, padding=1), np.float64)
    flat = D._depthwise_geometry((2, 2, 16, 16), weight.shape, 1, 0, 1)     # two images, no padding: both flat
    x16, g16 = rng.standard_normal((2, 2, 16, 16)), rng.standard_normal((2, 2, 14, 14))
    kernel_calls.clear()
    grad_x, grad_weight = D._backward(g16, x16, weight, flat)
    assert kernel_calls == ["_forward_flat_kernel", "_backward_weight_flat_kernel"]   # (turned filter: forward)
    assert_close(grad_x, R.depthwise_conv2d_backward_input(g16, weight, x16.shape), np.float64)
    assert_close(grad_weight, R.depthwise_conv2d_backward_weight(g16, x16, weight.shape), np.float64)
    grad_out = np.ascontiguousarray(grad_out[:, :, :4, :4])    # stride 2's output (contiguous, as the layers pass)
    strided_input = np.empty(x.shape)
    D._backward_input_phases_kernel(grad_out, weight, strided_input, 2, 2, 1, 1, 1, 1)
    assert_close(strided_input, R.depthwise_conv2d_backward_input(grad_out, weight, x.shape, stride=2, padding=1),
                 np.float64)
    strided_weight = np.empty(weight.shape)
    D._backward_weight_flat_kernel(grad_out, x, strided_weight, 2, 2, 1, 1, 1, 1)
    assert_close(strided_weight, R.depthwise_conv2d_backward_weight(grad_out, x, weight.shape, stride=2, padding=1),
                 np.float64)


# ----------------------------------------------------------------------------------------------------
# 3x3 at stride 2 on the flat runs (one image from STRIDE2_FLAT_MIN_PIXELS, several from ..._BATCHED)
# ----------------------------------------------------------------------------------------------------
def _taps_in_order(x, weight, stride, padding):
    """``sum_(kh, kw) w[kh, kw] * x_pad[kh + s*oh, kw + s*ow]`` in NumPy, in the dtype of ``x``, one tap after the
    other from zero in row-major tap order: the bits the flat kernel promises."""
    _, _, kH, kW = weight.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    H_out = (padded.shape[2] - kH) // stride + 1
    W_out = (padded.shape[3] - kW) // stride + 1
    total = np.zeros(x.shape[:2] + (H_out, W_out), dtype=x.dtype)
    for kh, kw in itertools.product(range(kH), range(kW)):
        tap = padded[:, :, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride]
        total += weight[None, :, 0, kh, kw, None, None] * tap
    return total


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, padding", [
    ((1, 3, 112, 112), 1),        # MobileNet's 112 x 112 stride-2 layer
    ((1, 5, 21, 20), 1),          # odd height
    ((1, 4, 14, 15), 1),          # the smallest one-image plane it takes is 14 x 14
    ((1, 2, 27, 31), 1),          # odd width: the last output column reads one tap past the image
    ((2, 3, 24, 25), 1),          # several images: from 24 x 24
    ((1, 2, 30, 29), 0),          # no padding
    ((1, 3, 26, 28), 2),          # padding 2: a whole kernel row in the padding on top
])
def test_flat_stride2_3x3_matches_the_reference_and_adds_the_taps_in_order(x_shape, padding, dtype, rng):
    """The phases copied with the literal stride 2, the nine taps added in one pass: the reference, and
    bit for bit the taps added one after the other (the bias after them)."""
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((x_shape[1], 1, 3, 3)).astype(dtype)
    bias = rng.standard_normal(x_shape[1]).astype(dtype)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 2, padding, 1)
    assert D._use_flat(geometry)
    y = depthwise_conv2d_forward(x, weight, bias, stride=2, padding=padding)
    assert_close(y, R.depthwise_conv2d_forward(*as64(x, weight, bias), stride=2, padding=padding), dtype)
    expected = _taps_in_order(x, weight, 2, padding)
    np.testing.assert_array_equal(depthwise_conv2d_forward(x, weight, stride=2, padding=padding), expected)
    np.testing.assert_array_equal(y, expected + bias[None, :, None, None])


def test_flat_kernel_takes_stride2_planes_3x3_from_14x14_and_5x5_from_24x24_for_one_image(rng, kernel_calls):
    """3x3: one image from STRIDE2_FLAT_MIN_PIXELS, several from 24 x 24; 5x5: one image from
    STRIDE2_5X5_FLAT_MIN_PIXELS, several only above 32 x 32 (as any other kernel)."""
    def forward_kernel(x_shape, kernel=3, stride=2, dilation=1):
        kernel_calls.clear()
        depthwise_conv2d_forward(rng.standard_normal(x_shape).astype(np.float32),
                                 rng.standard_normal((x_shape[1], 1, kernel, kernel)).astype(np.float32),
                                 stride=stride, padding=dilation * (kernel // 2), dilation=dilation)
        return kernel_calls[0]

    assert D.STRIDE2_FLAT_MIN_PIXELS == 14 * 14 and D.STRIDE2_5X5_FLAT_MIN_PIXELS == 24 * 24
    assert forward_kernel((1, 2, 14, 14)) == "_forward_flat_kernel"
    assert forward_kernel((1, 2, 13, 14)) == "_forward_channels_last_kernel"
    assert forward_kernel((2, 2, 24, 24)) == "_forward_flat_kernel"
    assert forward_kernel((2, 2, 23, 24)) == "_forward_channels_last_kernel"
    assert forward_kernel((1, 2, 24, 24), kernel=5) == "_forward_flat_kernel"
    assert forward_kernel((1, 2, 23, 24), kernel=5) == "_forward_channels_last_kernel"
    assert forward_kernel((2, 2, 28, 28), kernel=5) == "_forward_channels_last_kernel"  # several images
    assert forward_kernel((1, 2, 28, 28), kernel=7) == "_forward_channels_last_kernel"  # 3x3 and 5x5 only ...
    assert forward_kernel((1, 2, 28, 28), dilation=2) == "_forward_channels_last_kernel"  # ... dilation 1 only
    assert forward_kernel((1, 2, 40, 40), kernel=7) == "_forward_flat_kernel"          # above 32 x 32: any kernel


@pytest.mark.parametrize("x_shape, kernel", [((1, 40, 14, 14), 3), ((1, 24, 15, 17), 3), ((1, 30, 24, 24), 5),
                                             ((1, 16, 29, 28), 5)])
def test_stride2_planes_moved_to_the_flat_kernel_keep_the_channels_last_kernels_bits(x_shape, kernel, rng,
                                                                                      monkeypatch):
    """The one-image stride-2 planes the flat kernel took over (3x3 from 14 x 14, 5x5 from 24 x 24) give
    the bits the channels-last kernel gave them, with a batch norm + hard swish epilogue and with
    non-finite inputs: each output is the same sum in the same order in both."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    x[0, 1, 3, 4], x[0, 2, 5, 6] = np.inf, np.nan
    C = x_shape[1]
    weight = rng.standard_normal((C, 1, kernel, kernel)).astype(np.float32)
    epilogue = (rng.uniform(0.5, 1.5, C).astype(np.float32), rng.standard_normal(C).astype(np.float32), -np.inf,
                np.inf, True)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 2, kernel // 2, 1)
    assert D._use_flat(geometry) and D._use_channels_last(geometry)
    flat = D.prepare_forward(weight, None, geometry, epilogue)(x)
    monkeypatch.setattr(D, "_use_flat", lambda geometry: False)
    channels_last = D.prepare_forward(weight, None, geometry, epilogue)(x)
    np.testing.assert_array_equal(flat, channels_last)
    assert np.isnan(flat).any() and np.isfinite(flat).mean() > 0.9


def test_flat_stride2_3x3_gives_the_same_bits_on_one_and_two_threads(rng, restore_numba_threads):
    """Each (image, channel) plane is computed by one iteration alone; the number of iterations one image's
    channels are cut into depends on the thread count, the results do not."""
    x = rng.standard_normal((1, 37, 30, 30)).astype(np.float32)
    weight = rng.standard_normal((37, 1, 3, 3)).astype(np.float32)
    assert_same_bits_on_one_and_all_threads(lambda: depthwise_conv2d_forward(x, weight, stride=2, padding=1))


# ----------------------------------------------------------------------------------------------------
# The across-channels kernels (16 images and more, stride 1, "same" planes below FLAT_MIN_PIXELS_BATCHED)
# ----------------------------------------------------------------------------------------------------
def _channels_last_forward(x, weight, bias, geometry, epilogue=None, monkeypatch=None):
    """The output of the kernel the layer would take without the across-channels kernel (channels-last, or
    flat for the larger planes: the across-channels kernel promises their bits)."""
    with monkeypatch.context() as patch:
        patch.setattr(D, "_use_across_channels_forward", lambda geometry: False)
        return D._forward(x, weight, bias, geometry, epilogue)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, kernel, padding, dilation", [
    ((16, 70, 8, 8), (3, 3), (1, 1), (1, 1)),     # MobileNet V2 at 32 x 32: 8 x 8 planes, 70 channels
    ((16, 5, 4, 4), (3, 3), (1, 1), (1, 1)),      # 4 x 4 planes: a run of 80 values per image
    ((17, 3, 2, 2), (3, 3), (1, 1), (1, 1)),      # 2 x 2: most taps read the padding
    ((16, 4, 7, 7), (5, 5), (2, 2), (1, 1)),      # 5 x 5 (V3): taps in groups of 3 + 2
    ((16, 3, 9, 10), (3, 3), (2, 2), (2, 2)),     # dilation 2
    ((16, 2, 6, 5), (3, 5), (1, 2), (1, 1)),      # a non-square kernel, "same" in both directions
    ((16, 3, 1, 7), (3, 3), (1, 1), (1, 1)),      # one row: every tap row but the middle one in the padding
])
def test_across_channels_forward_matches_the_reference_and_gives_the_channels_last_bits(
        x_shape, kernel, padding, dilation, dtype, rng, monkeypatch):
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((x_shape[1], 1, *kernel)).astype(dtype)
    bias = rng.standard_normal(x_shape[1]).astype(dtype)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, padding, dilation)
    assert D._use_across_channels(geometry)
    y = depthwise_conv2d_forward(x, weight, bias, padding=padding, dilation=dilation)
    assert_close(y, R.depthwise_conv2d_forward(*as64(x, weight, bias), padding=padding, dilation=dilation), dtype)
    np.testing.assert_array_equal(y, _channels_last_forward(x, weight, bias, geometry, monkeypatch=monkeypatch))


def _epilogue_case(x_shape, low, high, hardswish, rng):
    """float32 ``(x, weight, bias, epilogue)`` for a 3x3 layer with a batch norm + clip / hard swish epilogue."""
    C = x_shape[1]
    x = 3 * rng.standard_normal(x_shape).astype(np.float32)
    weight, bias = rng.standard_normal((C, 1, 3, 3)).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    scale, shift = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    return x, weight, bias, (scale, shift, low, high, hardswish)


@pytest.mark.parametrize("low, high, hardswish", [(0.0, 6.0, False), (-np.inf, np.inf, True)])
def test_across_channels_forward_epilogue_gives_the_channels_last_bits(low, high, hardswish, rng, monkeypatch):
    x, weight, bias, epilogue = _epilogue_case((16, 6, 8, 8), low, high, hardswish, rng)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, 1, 1)
    assert D._use_across_channels(geometry)
    np.testing.assert_array_equal(D._forward(x, weight, bias, geometry, epilogue),
                                  _channels_last_forward(x, weight, bias, geometry, epilogue, monkeypatch))


def test_across_channels_forward_recomputes_a_batch_with_an_input_that_is_not_finite(rng, kernel_calls,
                                                                                     monkeypatch):
    """A padding tap reads a neighbouring row, plane or image and multiplies it by 0: an infinite or nan
    value there would make an output nan that does not depend on it. Such a batch goes to the channels-last
    kernel, whose outputs are nan or infinite exactly where the input reaches them."""
    x = rng.standard_normal((16, 4, 6, 6)).astype(np.float32)
    x[0, 1, 2, 5] = np.inf                          # the last column: the next row's first output reads it at 0
    x[1, 3, 5, 5] = np.nan                          # the last pixel of image 1: image 2's first rows read it at 0
    x[2, 0, 0, 0] = -np.inf
    weight = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, 1, 1)
    assert D._use_across_channels(geometry)
    y = depthwise_conv2d_forward(x, weight, padding=1)
    assert kernel_calls == ["_forward_across_channels_kernel", "_forward_channels_last_kernel"]
    np.testing.assert_array_equal(y, _channels_last_forward(x, weight, None, geometry, monkeypatch=monkeypatch))
    assert np.isfinite(y[0, 0]).all() and np.isfinite(y[0, 1, 4:]).all() and np.isfinite(y[2, 1:]).all()
    assert not np.isfinite(y[0, 1, 1:4, 4:]).any()  # the 3 x 3 window around the infinite input, inside the plane
    kernel_calls.clear()
    depthwise_conv2d_forward(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), weight, padding=1)
    assert kernel_calls == ["_forward_across_channels_kernel"]


@pytest.mark.parametrize("x_shape, stride, padding, expected", [
    ((16, 3, 8, 8), 1, 1, "_forward_across_channels_kernel"),
    ((16, 3, 11, 11), 1, 1, "_forward_across_channels_kernel"),
    ((16, 3, 12, 12), 1, 1, "_forward_flat_kernel"),           # FLAT_MIN_PIXELS_BATCHED
    ((32, 3, 12, 12), 1, 1, "_forward_across_channels_kernel"),  # ACROSS_CHANNELS_MIN_IMAGES_FORWARD
    ((32, 3, 16, 16), 1, 1, "_forward_across_channels_kernel"),
    ((32, 3, 17, 17), 1, 1, "_forward_flat_kernel"),           # ACROSS_CHANNELS_MAX_PIXELS
    ((31, 3, 14, 14), 1, 1, "_forward_flat_kernel"),
    ((15, 3, 8, 8), 1, 1, "_forward_channels_last_kernel"),    # ACROSS_CHANNELS_MIN_IMAGES: the table would not pay
    ((16, 3, 8, 8), 1, 0, "_forward_channels_last_kernel"),    # not "same": the output is smaller
    ((16, 3, 8, 8), 2, 1, "_forward_channels_last_kernel"),
    ((16, 3, 1, 1), 1, 1, "_forward_one_pixel_kernel"),
])
def test_across_channels_forward_is_chosen_for_batches_of_small_same_planes_at_stride_1(
        x_shape, stride, padding, expected, rng, kernel_calls):
    x = rng.standard_normal(x_shape).astype(np.float32)
    depthwise_conv2d_forward(x, rng.standard_normal((x_shape[1], 1, 3, 3)).astype(np.float32), stride=stride,
                             padding=padding)
    assert kernel_calls == [expected]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, padding, dilation", [
    ((32, 5, 12, 12), 1, 1),                        # the smallest plane and batch of the larger planes
    ((33, 3, 16, 16), 1, 1),                        # the largest plane, a last group of fewer images
    ((32, 4, 14, 13), 2, 2),                        # dilation 2, a plane that is not square
])
def test_across_channels_forward_and_input_gradient_on_larger_planes(x_shape, padding, dilation, dtype, rng,
                                                                      monkeypatch, kernel_calls):
    """From 12 x 12 to 16 x 16 and 32 images the forward and the input gradient take the across-channels
    kernel, with the flat kernel's bits; the weight gradient keeps the dot-product kernel."""
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((x_shape[1], 1, 3, 3)).astype(dtype)
    bias, grad_out = rng.standard_normal(x_shape[1]).astype(dtype), rng.standard_normal(x_shape).astype(dtype)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, padding, dilation)
    assert D._use_across_channels_forward(geometry) and not D._use_across_channels(geometry)
    params = dict(padding=padding, dilation=dilation)
    y = depthwise_conv2d_forward(x, weight, bias, **params)
    grad_x, grad_weight = D._backward(grad_out, x, weight, geometry)
    assert kernel_calls == ["_forward_across_channels_kernel"] * 2 + ["_weight_gradient_dots_kernel"]
    assert_close(y, R.depthwise_conv2d_forward(*as64(x, weight, bias), **params), dtype)
    assert_close(grad_x, R.depthwise_conv2d_backward_input(*as64(grad_out, weight), x.shape, **params), dtype)
    assert_close(grad_weight, R.depthwise_conv2d_backward_weight(*as64(grad_out, x), weight.shape, **params), dtype)
    np.testing.assert_array_equal(y, _channels_last_forward(x, weight, bias, geometry, monkeypatch=monkeypatch))
    with monkeypatch.context() as patch:
        patch.setattr(D, "_use_across_channels_forward", lambda geometry: False)
        np.testing.assert_array_equal(grad_x, D._backward_input(grad_out, weight, geometry))


def test_across_channels_forward_does_not_depend_on_its_chunks_groups_or_threads(rng, restore_numba_threads):
    """Each output is its own sum from zero, so how the channels and images are cut into tasks (which
    depends on the thread count) leaves the bits alone."""
    x = rng.standard_normal((35, 7, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((7, 1, 3, 3)).astype(np.float32)
    inside, nothing = D._taps_inside_plane(12, 12, 3, 3, 1, 1, 1, 1), np.empty(0, dtype=np.float32)
    results = []
    for chunk_channels, group_images in [(1, 1), (3, 4), (7, 35), (2, 6)]:
        tasks = -(-7 // chunk_channels) * -(-35 // group_images)
        y, nonfinite = np.empty_like(x), np.empty(tasks, dtype=np.int64)
        D._forward_across_channels_kernel(x, weight, inside, nothing, y, chunk_channels, group_images, 1, 1, 1, 1,
                                          nothing, nothing, -np.inf, np.inf, False, nonfinite)
        assert not nonfinite.any()
        results.append(y)
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    assert_same_bits_on_one_and_all_threads(lambda: depthwise_conv2d_forward(x, weight, padding=1))
    np.testing.assert_array_equal(depthwise_conv2d_forward(x, weight, padding=1), results[0])


def test_across_channels_forward_on_larger_planes_recomputes_a_batch_that_is_not_finite(rng, kernel_calls,
                                                                                      monkeypatch):
    x = rng.standard_normal((32, 3, 12, 12)).astype(np.float32)
    x[5, 1, 4, 11] = np.inf                         # the last column: the next row's first output reads it at 0
    weight = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, 1, 1)
    y = depthwise_conv2d_forward(x, weight, padding=1)
    assert kernel_calls == ["_forward_across_channels_kernel", "_forward_channels_last_kernel"]
    np.testing.assert_array_equal(y, _channels_last_forward(x, weight, None, geometry, monkeypatch=monkeypatch))
    assert np.isfinite(y[5, 1, 6:]).all() and not np.isfinite(y[5, 1, 3:6, 10:]).any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, kernel, padding, dilation", [
    ((16, 70, 8, 8), (3, 3), (1, 1), (1, 1)),
    ((17, 3, 2, 2), (3, 3), (1, 1), (1, 1)),
    ((16, 4, 7, 7), (5, 5), (2, 2), (1, 1)),
    ((16, 3, 9, 10), (3, 3), (2, 2), (2, 2)),
    ((16, 2, 6, 5), (3, 5), (1, 2), (1, 1)),
    ((16, 3, 1, 7), (3, 3), (1, 1), (1, 1)),
])
def test_across_channels_gradients_match_the_reference(x_shape, kernel, padding, dilation, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((x_shape[1], 1, *kernel)).astype(dtype)
    grad_out = rng.standard_normal(x_shape).astype(dtype)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, padding, dilation)
    assert D._use_across_channels(geometry)
    grad_x, grad_weight = D._backward(grad_out, x, weight, geometry)
    params = dict(padding=padding, dilation=dilation)
    assert_close(grad_x, R.depthwise_conv2d_backward_input(*as64(grad_out, weight), x.shape, **params), dtype)
    assert_close(grad_weight, R.depthwise_conv2d_backward_weight(*as64(grad_out, x), weight.shape, **params), dtype)
    np.testing.assert_array_equal(grad_x, depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params))
    np.testing.assert_array_equal(grad_weight, depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params))


def test_across_channels_gradients_keep_what_is_not_finite_where_it_belongs(rng, kernel_calls):
    """An infinite input reaches only its own channel's weights (the per-channel sums select the reads
    inside the plane); a grad_out that is not finite sends the input gradient to the channels-last kernel."""
    x = rng.standard_normal((16, 4, 6, 6)).astype(np.float32)
    grad_out = rng.standard_normal((16, 4, 6, 6)).astype(np.float32)
    weight = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    x[0, 1, 2, 5] = np.inf                          # the next row's first output reads it, with a 0 weight
    grad_weight = depthwise_conv2d_backward_weight(grad_out, x, weight.shape, padding=1)
    assert np.isfinite(grad_weight[[0, 2, 3]]).all() and not np.isfinite(grad_weight[1]).all()
    grad_out[3, 2, 0, 0] = np.nan
    kernel_calls.clear()
    grad_x = depthwise_conv2d_backward_input(grad_out, weight, x.shape, padding=1)
    assert kernel_calls == ["_forward_across_channels_kernel", "_backward_channels_last_kernel"]
    expected = R.depthwise_conv2d_backward_input(*as64(grad_out, weight), x.shape, padding=1)
    np.testing.assert_array_equal(np.isnan(grad_x), np.isnan(expected))


def test_across_channels_weight_gradient_does_not_depend_on_the_runs_or_the_threads(rng, restore_numba_threads):
    """Each channel's per-value sums add the images in order whatever run of channels it falls in."""
    x = rng.standard_normal((16, 37, 8, 8)).astype(np.float32)
    grad_out = rng.standard_normal((16, 37, 8, 8)).astype(np.float32)
    inside = D._taps_inside_plane(8, 8, 3, 3, 1, 1, 1, 1)
    results = []
    for channels_per_run in (1, 4, 37):
        grad_weight = np.empty((37, 1, 3, 3), dtype=np.float32)
        D._weight_gradient_across_channels_kernel(grad_out, x, inside, channels_per_run, 3, 3, 1, 1, 1, 1, grad_weight)
        results.append(grad_weight)
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        results.append(depthwise_conv2d_backward_weight(grad_out, x, (37, 1, 3, 3), padding=1))
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


@pytest.mark.nojit
def test_across_channels_kernels_small_case_runs_as_python_too(rng):
    """Small enough for NUMBA_DISABLE_JIT=1: the across-channels forward (each chunk's taps) with its epilogue
    and the weight gradient, as plain Python, against the reference."""
    x, weight, bias = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3)
    scale, shift = rng.standard_normal(3), rng.standard_normal(3)
    inside = D._taps_inside_plane(4, 5, 3, 3, 1, 1, 1, 1)
    y, nonfinite = np.empty(x.shape), np.empty(4, dtype=np.int64)   # 2 chunks of 2 channels x 2 images: 4 tasks
    D._forward_across_channels_kernel(x, weight, inside, bias, y, 2, 1, 1, 1, 1, 1, scale, shift, 0.0, 6.0, False,
                                      nonfinite)
    expected = R.depthwise_conv2d_forward(x, weight, bias, padding=1)
    assert_close(y, np.clip(expected * scale[None, :, None, None] + shift[None, :, None, None], 0, 6), np.float64)
    assert nonfinite.tolist() == [0, 0, 0, 0]
    grad_out, grad_weight = rng.standard_normal(x.shape), np.empty(weight.shape)
    D._weight_gradient_across_channels_kernel(grad_out, x, D._taps_inside_plane(4, 5, 3, 3, 1, 1, 1, 1), 2, 3, 3, 1, 1,
                                              1, 1, grad_weight)
    assert_close(grad_weight, R.depthwise_conv2d_backward_weight(grad_out, x, weight.shape, padding=1), np.float64)


# ----------------------------------------------------------------------------------------------------
# The dot-product weight gradient (stride-1 "same" planes from DOTS_WEIGHT_GRADIENT_MIN_PIXELS)
# ----------------------------------------------------------------------------------------------------
DOTS_CASES = {                              # x shape, kernel (kH, kW), padding, dilation
    "12x12_3x3": ((2, 3, 12, 12), (3, 3), 1, 1),        # the smallest plane it takes
    "odd_plane": ((1, 4, 13, 17), (3, 3), 1, 1),
    "5x5": ((2, 3, 14, 14), (5, 5), 2, 1),              # a kernel row in two passes (3 + 2 taps)
    "dilation_2": ((1, 2, 15, 12), (3, 3), 2, 2),       # taps two columns and two rows apart
    "3x5_kernel": ((1, 2, 12, 16), (3, 5), (1, 2), 1),
    "7x7_kernel": ((1, 2, 16, 16), (7, 7), 3, 1),       # 3 + 3 + 1 taps per kernel row
    "one_row": ((2, 2, 1, 160), (3, 3), 1, 1),          # the top and bottom kernel rows read only padding
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(DOTS_CASES))
def test_weight_gradient_dots_match_the_reference(case, dtype, rng, kernel_calls):
    x_shape, kernel, padding, dilation = DOTS_CASES[case]
    params = dict(padding=padding, dilation=dilation)
    C = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((C, 1) + kernel).astype(dtype)
    geometry = D._depthwise_geometry(x.shape, weight.shape, 1, padding, dilation)
    assert D._use_weight_gradient_dots(geometry)
    grad_out = rng.standard_normal(geometry.output_shape).astype(dtype)
    grad_weight = depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params)
    assert kernel_calls == ["_weight_gradient_dots_kernel"]
    assert_close(grad_weight, R.depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params), dtype)
    grad_x, both_weight = D._backward(grad_out, x, weight, geometry)            # the layer's call
    assert kernel_calls[1:] == ["_forward_flat_kernel", "_weight_gradient_dots_kernel"]
    np.testing.assert_array_equal(both_weight, grad_weight)
    assert_close(grad_x, R.depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params), dtype)


def test_weight_gradient_dots_give_the_same_bits_on_one_and_two_threads_and_in_reruns(rng, restore_numba_threads):
    """The kernel may reorder each dot product's additions (``reassoc``), but the order is fixed by its
    compiled code: one channel per iteration, the images in order."""
    x = rng.standard_normal((3, 37, 14, 14)).astype(np.float32)
    grad_out = rng.standard_normal((3, 37, 14, 14)).astype(np.float32)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS, 1):
        numba.set_num_threads(threads)
        results.append(depthwise_conv2d_backward_weight(grad_out, x, (37, 1, 3, 3), padding=1))
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_weight_gradient_dots_keep_what_is_not_finite_where_it_belongs(rng):
    """A tap's read that crosses into the row before or after is made and its product dropped: an infinite
    input there must not turn that tap's weight gradient into nan (``0 * inf``). Only the taps that read it
    inside the plane are not finite, as in the reference."""
    x = rng.standard_normal((2, 3, 12, 12))
    grad_out = rng.standard_normal((2, 3, 12, 12))
    x[0, 1, 4, 11] = np.inf                 # the last column: tap kw = 0 of the next row's first output crosses to it
    x[1, 2, 0, 0] = np.nan                  # a corner: the first value of the plane's copy
    grad_weight = depthwise_conv2d_backward_weight(grad_out, x, (3, 1, 3, 3), padding=1)
    expected = R.depthwise_conv2d_backward_weight(grad_out, x, (3, 1, 3, 3), padding=1)
    np.testing.assert_array_equal(np.isfinite(grad_weight), np.isfinite(expected))
    assert np.isfinite(grad_weight[1, 0, :, 0]).all()    # the kw = 0 taps never read column 11 inside the plane
    finite = np.isfinite(expected)
    assert_close(grad_weight[finite], expected[finite], np.float64)


@pytest.mark.parametrize("x_shape, weight_shape, stride, padding, expected", [
    ((1, 3, 12, 12), (3, 1, 3, 3), 1, 1, True),
    ((1, 3, 11, 11), (3, 1, 3, 3), 1, 1, False),         # DOTS_WEIGHT_GRADIENT_MIN_PIXELS
    ((8, 3, 14, 14), (3, 1, 5, 5), 1, 2, True),
    ((1, 3, 14, 14), (3, 1, 3, 3), 1, 0, False),         # not "same": the output is smaller
    ((1, 3, 14, 14), (3, 1, 3, 3), 2, 1, False),         # stride 2
    ((1, 3, 14, 14), (6, 1, 3, 3), 1, 1, False),         # two output channels per input channel
])
def test_weight_gradient_dots_take_stride_1_same_planes_from_12x12(x_shape, weight_shape, stride, padding, expected):
    geometry = D._depthwise_geometry(x_shape, weight_shape, stride, padding, 1)
    assert D._use_weight_gradient_dots(geometry) is expected


@pytest.mark.nojit
def test_weight_gradient_dots_small_case_runs_as_python_too(rng):
    """Small enough for NUMBA_DISABLE_JIT=1: the kernel as plain Python, 3x3 and 5x5, against the reference."""
    for kernel, padding in ((3, 1), (5, 2)):
        x = rng.standard_normal((2, 2, 12, 12))
        grad_out = rng.standard_normal((2, 2, 12, 12))
        grad_weight = np.empty((2, 1, kernel, kernel))
        inside = D._taps_inside_plane(12, 12, kernel, kernel, padding, padding, 1, 1)
        D._weight_gradient_dots_kernel(grad_out, x, inside, grad_weight, padding, padding, 1, 1)
        assert_close(grad_weight, R.depthwise_conv2d_backward_weight(grad_out, x, grad_weight.shape, padding=padding),
                     np.float64)


# ----------------------------------------------------------------------------------------------------
# The one-pixel kernels (an output of one pixel per channel)
# ----------------------------------------------------------------------------------------------------
ONE_PIXEL_CASES = {                         # x shape, kernel, stride, padding, dilation
    "1x1_plane_3x3": ((3, 70, 1, 1), 3, 1, 1, 1),      # MobileNet V2's last blocks at 32x32: the centre tap
    "2x2_plane_stride_2": ((2, 40, 2, 2), 3, 2, 1, 1),  # four taps inside, read H*W apart
    "3x3_plane_no_padding": ((2, 5, 3, 3), 3, 1, 0, 1),  # all nine taps
    "5x5_dilated": ((1, 3, 5, 5), 3, 1, 0, 2),          # taps at 0, 2, 4
    "5x5_kernel_2x3_plane": ((2, 33, 2, 3), 5, (2, 3), 2, 1),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("case", list(ONE_PIXEL_CASES))
def test_one_pixel_kernels_match_the_reference(case, with_bias, dtype, rng):
    x_shape, kernel, stride, padding, dilation = ONE_PIXEL_CASES[case]
    params = dict(stride=stride, padding=padding, dilation=dilation)
    C = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((C, 1, kernel, kernel)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype) if with_bias else None
    geometry = D._depthwise_geometry(x.shape, weight.shape, stride, padding, dilation)
    assert D._use_one_pixel(geometry) and geometry.output_shape[2:] == (1, 1)
    y = depthwise_conv2d_forward(x, weight, bias, **params)
    assert_close(y, R.depthwise_conv2d_forward(x, weight, bias, **params), dtype)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    assert_close(depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params),
                 R.depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params), dtype)
    assert_close(depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params),
                 R.depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params), dtype)
    both = D._backward(grad_out, x, weight, geometry)                       # the layer's call: one pass
    np.testing.assert_array_equal(both[0], depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params))
    np.testing.assert_array_equal(both[1], depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params))


def test_one_pixel_kernels_give_the_same_bits_on_one_and_two_threads(rng, restore_numba_threads):
    """Forward: one (image, channel block) per iteration; weight gradient: one channel block per iteration
    with the images summed inside it in order. No sum is split across threads."""
    x = rng.standard_normal((5, 100, 2, 2)).astype(np.float32)
    weight = rng.standard_normal((100, 1, 3, 3)).astype(np.float32)
    grad_out = rng.standard_normal((5, 100, 1, 1)).astype(np.float32)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        results.append((depthwise_conv2d_forward(x, weight, stride=2, padding=1),
                        *D._backward(grad_out, x, weight, D._depthwise_geometry(x.shape, weight.shape, 2, 1, 1))))
    for one_thread, all_threads in zip(*results):
        np.testing.assert_array_equal(one_thread, all_threads)


@pytest.mark.nojit
def test_one_pixel_kernels_run_as_plain_python(rng):
    x = rng.standard_normal((2, 3, 1, 1))
    weight = rng.standard_normal((3, 1, 3, 3))
    y = depthwise_conv2d_forward(x, weight, padding=1)
    np.testing.assert_allclose(y, x * weight[:, :, 1:2, 1:2].reshape(1, 3, 1, 1), rtol=1e-15)
    grad_weight = depthwise_conv2d_backward_weight(np.ones_like(y), x, weight.shape, padding=1)
    np.testing.assert_allclose(grad_weight[:, 0, 1, 1], x.sum(axis=(0, 2, 3)), rtol=1e-15)
    assert np.count_nonzero(grad_weight) == 3                                   # only the centre taps
