"""Deformable convolution (``kernels/deformable.py``, ``nn.DeformConv2d``): NumPy twin, conv2d identity,
gradchecks, PyTorch.

What is checked:

* the numba kernels equal ``kernels.reference`` (plain NumPy) on a grid of stride / padding / dilation /
  groups / offset groups / kernel shapes, with and without a mask, in float64 and float32, also for
  non-contiguous inputs;
* zero offsets and a mask of ones give exactly the ordinary convolution (``kernels.conv2d_*``), forward,
  input gradient and weight gradient;
* float64 finite-difference checks of all four gradients (x, offset, weight, mask);
* samples wholly outside the image read zeros (output = bias; no gradient reaches x or the offsets);
* PyTorch: the committed fixtures (``tests/fixtures/deform.npz``, made by ``tools/fixtures_deform.py``
  with the autograd re-statement of torchvision's ``deform_conv2d`` in ``tools/torch_reference_deform.py``)
  and live random configurations when torch is installed;
* every bad argument raises a clear ``ValueError``/``TypeError`` naming it, before any compiled code runs;
* the layer ``nn.DeformConv2d``: torchvision's repr, state_dict and initialisation; the kernels' results;
  gradchecks of x, offset, mask, weight and bias; an offset-predicting block trained end to end.

Tolerances: float64 1e-10 relative to the largest expected value (``helpers.assert_close``). float32
against the float64 fixtures: ``helpers.float32_tolerance`` of PyTorch's own float32 error on the same
case (recorded in the fixture; measured here: ours is 0.3-2.4x PyTorch's).
"""
import itertools
import json
import pathlib
import sys

import numba
import numpy as np
import pytest

import kernels
from helpers import (LAYOUTS, as64, assert_close, assert_directional_derivatives_match, float32_tolerance,
                     assert_generator_reproduces_fixture, assert_gradcheck, relayout)
from kernels import reference as R
from tinycnn import nn

FIXTURE_PATH = pathlib.Path(__file__).resolve().parent / "fixtures" / "deform.npz"
TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"


def output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def make_inputs(rng, x_shape, weight_shape, offset_groups, params, with_mask, with_bias=True, dtype=np.float64,
                offset_scale=1.5):
    """Seeded (x, offset, weight, bias, mask) for one configuration; offsets ``offset_scale * N(0, 1)``."""
    (sh, sw), (ph, pw), (dh, dw) = (pair(params[key]) for key in ("stride", "padding", "dilation"))
    N, _, H, W = x_shape
    C_out, _, kH, kW = weight_shape
    H_out, W_out = output_size(H, kH, sh, ph, dh), output_size(W, kW, sw, pw, dw)
    x = rng.standard_normal(x_shape).astype(dtype)
    offset = (offset_scale * rng.standard_normal((N, 2 * offset_groups * kH * kW, H_out, W_out))).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = rng.standard_normal(C_out).astype(dtype) if with_bias else None
    mask = rng.random((N, offset_groups * kH * kW, H_out, W_out)).astype(dtype) if with_mask else None
    return x, offset, weight, bias, mask


# ----------------------------------------------------------------------------------------------------
# Against the NumPy twin
# ----------------------------------------------------------------------------------------------------
# (x shape, weight shape, offset_groups, stride, padding, dilation)
GRID = [
    ((2, 3, 6, 5), (4, 3, 3, 3), 1, 1, 1, 1),
    ((1, 4, 7, 6), (6, 2, 3, 3), 2, 2, 1, 1),          # weight groups 2, offset groups 2, stride 2
    ((2, 4, 7, 7), (4, 1, 3, 3), 4, 1, 2, 2),          # depthwise-like weight, dilation 2
    ((2, 2, 5, 8), (3, 2, 1, 1), 1, 1, 0, 1),          # a 1x1 kernel: pure resampling + channel mixing
    ((1, 6, 6, 7), (4, 3, 2, 3), 3, (2, 1), (0, 1), (1, 2)),
    ((3, 2, 4, 4), (2, 2, 5, 5), 1, 1, 2, 1),          # kernel larger than the image
]
GRID_IDS = [f"x{'x'.join(map(str, c[0]))}-w{'x'.join(map(str, c[1]))}-og{c[2]}" for c in GRID]
dtypes = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])


@dtypes
@pytest.mark.parametrize("with_mask", [False, True], ids=["v1", "v2_mask"])
@pytest.mark.parametrize("case", GRID, ids=GRID_IDS)
def test_forward_and_backward_match_reference(case, with_mask, dtype):
    x_shape, weight_shape, offset_groups, stride, padding, dilation = case
    params = dict(stride=stride, padding=padding, dilation=dilation)
    rng = np.random.default_rng(0)
    x, offset, weight, bias, mask = make_inputs(rng, x_shape, weight_shape, offset_groups, params, with_mask,
                                                dtype=dtype)
    y = kernels.deform_conv2d_forward(x, offset, weight, bias, mask=mask, **params)
    assert_close(y, R.deform_conv2d_forward(*as64(x, offset, weight, bias), mask=as64(mask)[0], **params), dtype)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    grads = kernels.deform_conv2d_backward(grad_y, x, offset, weight, mask=mask, **params)
    expected = R.deform_conv2d_backward(*as64(grad_y, x, offset, weight), mask=as64(mask)[0], **params)
    for name, got, want in zip(("grad_x", "grad_offset", "grad_weight", "grad_mask"), grads, expected):
        if want is None:
            assert got is None, f"{name} must be None without a mask"
        else:
            assert_close(got, want, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_inputs_give_the_contiguous_result(layout):
    rng = np.random.default_rng(1)
    params = dict(stride=1, padding=1, dilation=1)
    arrays = make_inputs(rng, (2, 4, 6, 5), (4, 2, 3, 3), 2, params, with_mask=True)
    x, offset, weight, bias, mask = arrays
    views = [relayout(a, layout) for a in arrays]
    np.testing.assert_array_equal(kernels.deform_conv2d_forward(*views[:4], mask=views[4], **params),
                                  kernels.deform_conv2d_forward(x, offset, weight, bias, mask=mask, **params))
    grad_y = rng.standard_normal((2, 4, 6, 5))
    for got, want in zip(kernels.deform_conv2d_backward(relayout(grad_y, layout), *views[:3], mask=views[4], **params),
                         kernels.deform_conv2d_backward(grad_y, x, offset, weight, mask=mask, **params)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.nojit
def test_tiny_case_matches_reference_as_plain_python():
    """Small enough to run with NUMBA_DISABLE_JIT=1: the compiled bodies are correct as Python too."""
    rng = np.random.default_rng(2)
    params = dict(stride=1, padding=1, dilation=1)
    x, offset, weight, bias, mask = make_inputs(rng, (1, 2, 4, 3), (2, 2, 3, 3), 2, params, with_mask=True)
    assert_close(kernels.deform_conv2d_forward(x, offset, weight, bias, mask=mask, **params),
                 R.deform_conv2d_forward(x, offset, weight, bias, mask=mask, **params), np.float64)
    grad_y = rng.standard_normal((1, 2, 4, 3))
    for got, want in zip(kernels.deform_conv2d_backward(grad_y, x, offset, weight, mask=mask, **params),
                         R.deform_conv2d_backward(grad_y, x, offset, weight, mask=mask, **params)):
        assert_close(got, want, np.float64)


# ----------------------------------------------------------------------------------------------------
# Special cases with a known answer
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", [kernels, R], ids=["fast", "reference"])
@pytest.mark.parametrize("stride, padding, dilation, weight_shape", [
    (1, 1, 1, (5, 4, 3, 3)), (2, 0, 1, (4, 2, 3, 3)), (1, 2, 2, (8, 1, 3, 3)), ((2, 1), (1, 0), 1, (4, 4, 3, 2)),
])
def test_zero_offsets_and_unit_mask_are_the_ordinary_convolution(implementation, stride, padding, dilation,
                                                                  weight_shape):
    rng = np.random.default_rng(3)
    params = dict(stride=stride, padding=padding, dilation=dilation)
    groups = 4 // weight_shape[1]
    x, offset, weight, bias, mask = make_inputs(rng, (2, 4, 7, 6), weight_shape, 1, params, with_mask=True)
    offset[:] = 0.0
    mask[:] = 1.0
    y = implementation.deform_conv2d_forward(x, offset, weight, bias, mask=mask, **params)
    assert_close(y, kernels.conv2d_forward(x, weight, bias, groups=groups, **params), np.float64)
    grad_y = rng.standard_normal(y.shape)
    grad_x, _, grad_weight, _ = implementation.deform_conv2d_backward(grad_y, x, offset, weight, mask=mask, **params)
    assert_close(grad_x, kernels.conv2d_backward_input(grad_y, weight, x.shape, groups=groups, **params), np.float64)
    assert_close(grad_weight, kernels.conv2d_backward_weight(grad_y, x, weight.shape, groups=groups, **params),
                 np.float64)


def test_integer_offset_shifts_the_image_and_its_gradient_is_the_forward_difference():
    """A 1x1 kernel with offset (+1, 0) reads the pixel below; the last row reads the zero padding.

    At an integer position the bilinear surface has a kink; the offset gradient is then the slope
    towards larger coordinates, ``x[h+1] - x[h]`` (torchvision's convention).
    """
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 4, 3) ** 2
    weight = np.ones((1, 1, 1, 1))
    offset = np.zeros((1, 2, 4, 3))
    offset[:, 0] = 1.0                                              # dy = +1 everywhere
    y = kernels.deform_conv2d_forward(x, offset, weight)
    expected = np.zeros_like(x)
    expected[0, 0, :3] = x[0, 0, 1:]
    np.testing.assert_array_equal(y, expected)
    _, grad_offset, _, _ = kernels.deform_conv2d_backward(np.ones_like(y), x, offset, weight)
    below = np.vstack([x[0, 0, 2:], np.zeros((2, 3))])              # x[h + 2], zero outside
    np.testing.assert_array_equal(grad_offset[0, 0], below - expected[0, 0])
    np.testing.assert_array_equal(grad_offset[0, 1], np.diff(np.pad(expected[0, 0], ((0, 0), (0, 1))), axis=1))


def test_half_pixel_offset_averages_two_neighbours():
    x = np.array([[[[2.0, 6.0, 10.0]]]])                            # one row
    offset = np.zeros((1, 2, 1, 3))
    offset[:, 1] = 0.5                                              # dx = +0.5
    y = kernels.deform_conv2d_forward(x, offset, np.ones((1, 1, 1, 1)))
    np.testing.assert_allclose(y[0, 0, 0], [4.0, 8.0, 5.0])         # the last sample mixes 10 with the zero padding


@pytest.mark.parametrize("implementation", [kernels, R], ids=["fast", "reference"])
def test_samples_wholly_outside_the_image_read_zeros(implementation):
    rng = np.random.default_rng(4)
    params = dict(stride=1, padding=1, dilation=1)
    x, offset, weight, bias, mask = make_inputs(rng, (2, 3, 5, 4), (4, 3, 3, 3), 1, params, with_mask=True)
    offset[:, 0::2] = -50.0 + rng.random(offset[:, 0::2].shape)     # every dy far above the image
    y = implementation.deform_conv2d_forward(x, offset, weight, bias, mask=mask, **params)
    np.testing.assert_array_equal(y, np.broadcast_to(bias[None, :, None, None], y.shape))
    grad_x, grad_offset, grad_weight, grad_mask = implementation.deform_conv2d_backward(
        rng.standard_normal(y.shape), x, offset, weight, mask=mask, **params)
    for gradient in (grad_x, grad_offset, grad_weight, grad_mask):
        assert not gradient.any()


def test_nan_offset_gives_nan_output_not_a_crash():
    x, weight = np.ones((1, 1, 3, 3)), np.ones((1, 1, 1, 1))
    offset = np.zeros((1, 2, 3, 3))
    offset[0, 0, 1, 1] = np.nan
    y = kernels.deform_conv2d_forward(x, offset, weight)
    assert np.isnan(y[0, 0, 1, 1]) and np.isfinite(np.delete(y.ravel(), 4)).all()


def test_result_does_not_depend_on_the_number_of_threads(restore_numba_threads):
    rng = np.random.default_rng(5)
    params = dict(stride=1, padding=1, dilation=1)
    x, offset, weight, bias, mask = make_inputs(rng, (2, 4, 6, 6), (4, 4, 3, 3), 2, params, with_mask=True)
    grad_y = rng.standard_normal((2, 4, 6, 6))
    results = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        results.append((kernels.deform_conv2d_forward(x, offset, weight, bias, mask=mask, **params),
                        *kernels.deform_conv2d_backward(grad_y, x, offset, weight, mask=mask, **params)))
    for first, other in itertools.combinations(results, 2):
        for a, b in zip(first, other):
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------------
# float64 finite differences of all four gradients
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", [kernels, R], ids=["fast", "reference"])
@pytest.mark.parametrize("case", GRID[:2] + GRID[4:5], ids=GRID_IDS[:2] + GRID_IDS[4:5])
def test_gradients_pass_float64_finite_difference_checks(implementation, case):
    """L = <grad_y, y>; directional derivatives along random directions, one argument at a time.

    L is linear in x, weight and mask, and piecewise quadratic in the offsets (bilinear inside each pixel
    cell): central differences with eps = 1e-6 are exact up to rounding unless a sample crosses a pixel
    line, which random offsets do with probability ~1e-6 per sample.
    """
    x_shape, weight_shape, offset_groups, stride, padding, dilation = case
    params = dict(stride=stride, padding=padding, dilation=dilation)
    rng = np.random.default_rng(6)
    inputs = dict(zip(("x", "offset", "weight", "bias", "mask"),
                      make_inputs(rng, x_shape, weight_shape, offset_groups, params, with_mask=True)))
    y = implementation.deform_conv2d_forward(**inputs, **params)
    grad_y = rng.standard_normal(y.shape)
    grads = dict(zip(("x", "offset", "weight", "mask"), implementation.deform_conv2d_backward(
        grad_y, inputs["x"], inputs["offset"], inputs["weight"], mask=inputs["mask"], **params)))
    for name, gradient in grads.items():
        def loss(value, name=name):
            return np.vdot(grad_y, implementation.deform_conv2d_forward(**{**inputs, name: value}, **params))
        assert_gradcheck(loss, inputs[name], gradient, rng)


# ----------------------------------------------------------------------------------------------------
# PyTorch: committed fixtures and live checks
# ----------------------------------------------------------------------------------------------------
with np.load(FIXTURE_PATH) as _npz:
    FIXTURES = {key: _npz[key] for key in _npz.files}
CONFIGS = json.loads(str(FIXTURES["configs_json"]))
INPUTS = ("x", "offset", "weight", "bias", "mask")
GRADIENTS = ("grad_x", "grad_offset", "grad_weight", "grad_mask")



def fixture_case(case, dtype):
    prefix = f"deform/{case}/"
    arrays = {key.removeprefix(prefix): value for key, value in FIXTURES.items() if key.startswith(prefix)}
    inputs = {name: arrays[name].astype(dtype) if name in arrays else None for name in INPUTS}
    return inputs, arrays["grad_y"].astype(dtype), arrays, CONFIGS[case]


def run_case(implementation, inputs, grad_y, params):
    y = implementation.deform_conv2d_forward(**inputs, **params)
    gradients = implementation.deform_conv2d_backward(grad_y, inputs["x"], inputs["offset"], inputs["weight"],
                                                      mask=inputs["mask"], **params)
    results = {"y": y, **dict(zip(GRADIENTS, gradients))}
    results["grad_bias"] = None if inputs["bias"] is None else kernels.conv2d_backward_bias(grad_y)
    return {key: value for key, value in results.items() if value is not None}


def test_fixture_file_has_every_case_and_quantity():
    assert set(CONFIGS) and all(f"deform/{case}/y" in FIXTURES for case in CONFIGS)
    assert any(f"deform/{case}/mask" in FIXTURES for case in CONFIGS)
    assert any(f"deform/{case}/mask" not in FIXTURES for case in CONFIGS)


@pytest.mark.parametrize("implementation", [kernels, R], ids=["fast", "reference"])
@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_matches_pytorch_fixture_float64(implementation, case):
    inputs, grad_y, expected, config = fixture_case(case, np.float64)
    results = run_case(implementation, inputs, grad_y, config["params"])
    assert set(results) == {key for key in config["torch_float32_error"]}
    for key, value in results.items():
        assert_close(value, expected[key], np.float64)


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_fast_kernel_matches_fixture_float32(case):
    """float32 inputs (the fixture's rounded) against PyTorch's float64 answer, with the case's tolerance."""
    inputs, grad_y, expected, config = fixture_case(case, np.float32)
    results = run_case(kernels, inputs, grad_y, config["params"])
    for key, value in results.items():
        assert_close(value, expected[key], np.float32, float32_tolerance(config["torch_float32_error"][key]))


def _torch_reference():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(TOOLS_DIR))
    try:
        import torch_reference_deform
    finally:
        sys.path.remove(str(TOOLS_DIR))
    return torch, torch_reference_deform.deform_conv2d


def test_committed_fixtures_match_what_the_generator_produces(tmp_path):
    assert_generator_reproduces_fixture("deform", tmp_path, FIXTURES)


def test_matches_live_pytorch_autograd_on_random_configurations():
    torch, torch_deform_conv2d = _torch_reference()
    rng = np.random.default_rng(8)
    for _ in range(12):
        groups, offset_groups = (int(v) for v in rng.choice([1, 2], size=2))
        C_in = 2 * int(rng.integers(1, 3))
        kH, kW = (int(v) for v in rng.integers(1, 4, size=2))
        params = dict(stride=tuple(int(v) for v in rng.integers(1, 3, size=2)),
                      padding=tuple(int(v) for v in rng.integers(0, 3, size=2)),
                      dilation=tuple(int(v) for v in rng.integers(1, 3, size=2)))
        x_shape = (int(rng.integers(1, 3)), C_in, int(rng.integers(5, 9)), int(rng.integers(5, 9)))
        weight_shape = (2 * int(rng.integers(1, 3)), C_in // groups, kH, kW)
        with_mask = bool(rng.integers(0, 2))
        arrays = make_inputs(rng, x_shape, weight_shape, offset_groups, params, with_mask, offset_scale=2.0)
        inputs = dict(zip(INPUTS, arrays))
        tensors = {k: None if v is None else torch.from_numpy(v).requires_grad_(True) for k, v in inputs.items()}
        y_torch = torch_deform_conv2d(**tensors, **params)
        grad_y = rng.standard_normal(tuple(y_torch.shape))
        y_torch.backward(torch.from_numpy(grad_y))
        results = run_case(kernels, inputs, grad_y, params)
        assert_close(results["y"], y_torch.detach().numpy(), np.float64)
        for name in ("x", "offset", "weight", "bias", "mask"):
            if tensors[name] is not None:
                assert_close(results[f"grad_{name}"], tensors[name].grad.numpy(), np.float64)


# ----------------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------------
def valid_arguments(dtype=np.float32):
    """x (2, 4, 6, 5), weight (6, 2, 3, 3): groups 2; offset groups 2; padding 1: output (2, 6, 6, 5)."""
    return dict(x=np.ones((2, 4, 6, 5), dtype), offset=np.zeros((2, 36, 6, 5), dtype),
                weight=np.ones((6, 2, 3, 3), dtype), padding=1, mask=np.ones((2, 18, 6, 5), dtype))


ERROR_CASES = [
    (dict(x=np.ones((4, 6, 5), np.float32)), ValueError, r"x must be 4-D"),
    (dict(x=[[1.0]]), TypeError, r"x must be a numpy.ndarray"),
    (dict(x=np.ones((2, 4, 6, 5), np.int64)), TypeError, r"x must have dtype float32 or float64"),
    (dict(offset=np.zeros((2, 36, 6, 5), np.float64)), TypeError, r"share one dtype.*offset: float64"),
    (dict(mask=np.ones((2, 18, 6, 5), np.float64)), TypeError, r"share one dtype.*mask: float64"),
    (dict(weight=np.ones((6, 3, 3, 3), np.float32)), ValueError, r"3 input channels per group must divide x's 4"),
    (dict(weight=np.ones((5, 2, 3, 3), np.float32)), ValueError, r"groups=2 must divide the output channels"),
    (dict(offset=np.zeros((2, 35, 6, 5), np.float32)), ValueError, r"offset must have 2\*offset_groups\*kH\*kW "
                                                                   r"channels .*multiple of 18"),
    (dict(offset=np.zeros((2, 54, 6, 5), np.float32)), ValueError, r"offset_groups .* = 3 must divide x's 4"),
    (dict(offset=np.zeros((2, 36, 5, 5), np.float32)), ValueError, r"offset must have shape .*\(2, 36, 6, 5\)"),
    (dict(offset=np.zeros((1, 36, 6, 5), np.float32)), ValueError, r"offset must have shape"),
    (dict(mask=np.ones((2, 9, 6, 5), np.float32)), ValueError, r"mask must have shape .*\(2, 18, 6, 5\)"),
    (dict(mask=np.ones((18, 6, 5), np.float32)), ValueError, r"mask must be 4-D"),
    (dict(stride=0), ValueError, r"stride must be >= 1"),
    (dict(padding=-1), ValueError, r"padding must be non-negative"),
    (dict(dilation=(1, 2, 3)), ValueError, r"dilation must be an int or a pair"),
    (dict(stride=1.5), TypeError, r"stride must be an int or a pair of ints"),
    (dict(padding=0, x=np.ones((2, 4, 2, 5), np.float32)), ValueError, r"output would be 0x3"),
]


@pytest.mark.parametrize("function", ["forward", "backward"])
@pytest.mark.parametrize("changes, error, match", ERROR_CASES, ids=[m for _, _, m in ERROR_CASES])
@pytest.mark.parametrize("implementation", [kernels, R], ids=["fast", "reference"])
def test_bad_argument_raises_clear_error_naming_it(implementation, function, changes, error, match):
    arguments = {**valid_arguments(), **changes}
    if function == "backward":
        arguments["grad_out"] = np.ones((2, 6, 6, 5), np.float32)
    with pytest.raises(error, match=match) as info:
        getattr(implementation, f"deform_conv2d_{function}")(**arguments)
    assert type(info.value) is error and not isinstance(info.value, numba.core.errors.NumbaError)


@pytest.mark.parametrize("changes, match", [
    (dict(grad_out=np.ones((2, 6, 6, 4), np.float32)), r"grad_out must have the forward output's shape \(2, 6, 6, 5\)"),
    (dict(grad_out=np.ones((2, 6, 6, 5), np.float64)), r"grad_out is float64"),
    (dict(bias=np.ones(6, np.float32)), r"unexpected keyword argument 'bias'"),
])
def test_bad_backward_arguments(changes, match):
    arguments = {**valid_arguments(), "grad_out": np.ones((2, 6, 6, 5), np.float32), **changes}
    with pytest.raises((ValueError, TypeError), match=match):
        kernels.deform_conv2d_backward(**arguments)


def test_bad_bias_is_refused():
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        kernels.deform_conv2d_forward(**valid_arguments(), bias=np.ones(5, np.float32))


@pytest.mark.nojit
def test_errors_are_raised_in_python_before_any_kernel_runs():
    with pytest.raises(ValueError, match="offset must have shape"):
        kernels.deform_conv2d_forward(**{**valid_arguments(), "offset": np.zeros((2, 36, 5, 5), np.float32)})


# ----------------------------------------------------------------------------------------------------
# The layer: tinycnn.nn.DeformConv2d
# ----------------------------------------------------------------------------------------------------


def layer_and_inputs(with_mask, seed=9, bias=True):
    rng = np.random.default_rng(seed)
    layer = nn.DeformConv2d(4, 6, 3, stride=1, padding=1, groups=2, bias=bias, rng=rng).double()
    params = dict(stride=1, padding=1, dilation=1)
    x, offset, _, _, mask = make_inputs(rng, (2, 4, 5, 6), (6, 2, 3, 3), 2, params, with_mask)
    return layer, x, offset, mask, rng


@pytest.mark.parametrize("with_mask", [False, True], ids=["v1", "v2_mask"])
def test_layer_forward_and_backward_are_the_kernels(with_mask):
    layer, x, offset, mask, rng = layer_and_inputs(with_mask)
    y = layer(x, offset, mask)
    np.testing.assert_array_equal(y, kernels.deform_conv2d_forward(x, offset, layer.weight.data, layer.bias.data,
                                                                   padding=1, mask=mask))
    grad_y = rng.standard_normal(y.shape)
    grad_x = layer.backward(grad_y)
    expected = kernels.deform_conv2d_backward(grad_y, x, offset, layer.weight.data, padding=1, mask=mask)
    np.testing.assert_array_equal(grad_x, expected[0])
    np.testing.assert_array_equal(layer.grad_offset, expected[1])
    np.testing.assert_array_equal(layer.weight.grad, expected[2])
    np.testing.assert_array_equal(layer.bias.grad, grad_y.sum(axis=(0, 2, 3)))
    if with_mask:
        np.testing.assert_array_equal(layer.grad_mask, expected[3])
    else:
        assert layer.grad_mask is None
    layer(x, offset, mask)                                            # one forward per backward (issue 12)
    layer.backward(grad_y)                                            # parameter gradients accumulate
    np.testing.assert_array_equal(layer.weight.grad, 2 * expected[2])


def test_layer_gradients_pass_float64_finite_difference_checks():
    """All five: x, offset and mask (inputs), weight and bias (parameters)."""
    layer, x, offset, mask, rng = layer_and_inputs(with_mask=True)
    inputs = dict(x=x, offset=offset, mask=mask)
    grad_y = rng.standard_normal(layer(**inputs).shape)
    layer.zero_grad()
    grads = dict(x=layer.backward(grad_y), offset=layer.grad_offset, mask=layer.grad_mask)
    for name, gradient in grads.items():
        assert_directional_derivatives_match(
            lambda value, name=name: np.vdot(grad_y, layer(**{**inputs, name: value})), inputs[name], gradient, name)
    for name, parameter in layer.named_parameters():
        original = parameter.data

        def loss(value, parameter=parameter):
            parameter.data = value
            return np.vdot(grad_y, layer(**inputs))

        assert_directional_derivatives_match(loss, original, parameter.grad, name)
        parameter.data = original


def test_offsets_predicted_by_a_convolution_train_end_to_end():
    """The docstring's block: x feeds an offset-predicting Conv2d and the DeformConv2d; dL/dx sums both paths."""
    rng = np.random.default_rng(10)
    offset_conv = nn.Conv2d(3, 2 * 9, 3, padding=1, rng=rng).double()
    offset_conv.weight.data *= 3.0                                   # sizeable offsets, not a near-identity
    deform = nn.DeformConv2d(3, 4, 3, padding=1, rng=rng).double()
    x = rng.standard_normal((2, 3, 5, 5))

    def block(point):
        return deform(point, offset_conv(point))

    grad_y = rng.standard_normal(block(x).shape)
    grad_x = deform.backward(grad_y) + offset_conv.backward(deform.grad_offset)
    assert_directional_derivatives_match(lambda point: np.vdot(grad_y, block(point)), x, grad_x, "x")


def test_layer_matches_torchvision_layout_and_the_torch_reference():
    """Same repr and state_dict as torchvision.ops.DeformConv2d; same output and gradients with its weights."""
    torch, torch_deform_conv2d = _torch_reference()
    sys.path.insert(0, str(TOOLS_DIR))
    try:
        from model_fixtures import import_torchvision_models
        import_torchvision_models()
        import torchvision.ops
    finally:
        sys.path.remove(str(TOOLS_DIR))
    for args, kwargs in [((4, 6, 3), dict(padding=1, groups=2)), ((4, 6, (3, 2)), dict(stride=2, dilation=2, bias=False))]:
        theirs = torchvision.ops.DeformConv2d(*args, **kwargs).double()
        ours = nn.DeformConv2d(*args, **kwargs).double()
        assert repr(ours) == repr(theirs)
        state = {name: tensor.detach().numpy() for name, tensor in theirs.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in state.items()}
        ours.load_state_dict(state, strict=True)
        rng = np.random.default_rng(11)
        params = dict(stride=ours.stride, padding=ours.padding, dilation=ours.dilation)
        x, offset, _, _, mask = make_inputs(rng, (2, 4, 7, 6), ours.weight.shape, 1, params, with_mask=True)
        y = ours(x, offset, mask)
        tensors = [torch.from_numpy(a).requires_grad_(True) for a in (x, offset, mask)]
        y_torch = torch_deform_conv2d(tensors[0], tensors[1], theirs.weight, theirs.bias, mask=tensors[2], **params)
        grad_y = rng.standard_normal(y.shape)
        y_torch.backward(torch.from_numpy(grad_y))
        assert_close(y, y_torch.detach().numpy(), np.float64)
        assert_close(ours.backward(grad_y), tensors[0].grad.numpy(), np.float64)
        assert_close(ours.grad_offset, tensors[1].grad.numpy(), np.float64)
        assert_close(ours.grad_mask, tensors[2].grad.numpy(), np.float64)
        assert_close(ours.weight.grad, theirs.weight.grad.numpy(), np.float64)


def test_layer_initialisation_is_pytorchs_uniform_bound():
    layer = nn.DeformConv2d(8, 16, 3, groups=2, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(4 * 3 * 3)                                   # fan_in = C_in/groups * kH * kW
    assert layer.weight.data.dtype == np.float32 and layer.weight.shape == (16, 4, 3, 3)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.weight.data).max() > 0.9 * bound
    assert np.abs(layer.bias.data).max() <= bound


def test_layer_errors_are_clear():
    layer = nn.DeformConv2d(4, 6, 3, padding=1)
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        layer.backward(np.ones((1, 6, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"DeformConv2d.*4"):
        layer(np.ones((1, 3, 5, 5), np.float32), np.zeros((1, 18, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"offset must have shape"):
        layer(np.ones((1, 4, 5, 5), np.float32), np.zeros((1, 18, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"in_channels=4 must be divisible by groups=3"):
        nn.DeformConv2d(4, 6, 3, groups=3)
