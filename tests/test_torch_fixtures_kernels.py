"""Every kernel, reference and fast, against PyTorch's outputs stored in ``tests/fixtures/kernels.npz``.

The fixture file (made by ``python tools/make_fixtures.py --only kernels``, PyTorch float64) holds, per
configuration, the inputs, a random upstream gradient ``grad_y`` and PyTorch's forward output and input /
weight / bias gradients. Each test runs one kernel on one configuration, in float64 and in float32
(inputs cast), for both implementations:

* ``reference`` -- ``kernels.reference`` (plain NumPy);
* ``fast``      -- the public numba kernels, ``getattr(kernels, name)``. A kernel that ``kernels`` does not
  export yet makes its tests *fail* (never skip): the public API is a contract.

Tolerances (``tests/helpers.py``), relative to the largest expected magnitude: float64 1e-10; float32
derived from the case (``fixture_tolerance``: a multiple of PyTorch's own float32 error on the same
inputs, which the generator records as ``torch_float32_error``). The last tests need PyTorch itself (skipped without it): the reference against
``torch.nn.functional`` on random configurations, and the committed fixtures against the generator.
"""
import importlib
import json
import pathlib
import sys

import numpy as np
import pytest

from helpers import assert_close, assert_fixture_file_matches, fixture_tolerance

FIXTURE_PATH = pathlib.Path(__file__).resolve().parent / "fixtures" / "kernels.npz"
TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"

with np.load(FIXTURE_PATH) as _npz:
    FIXTURES = {key: _npz[key] for key in _npz.files}

INPUT_NAMES = ("x", "weight", "bias", "grad_y")   # cast to the tested dtype; expected outputs stay float64


def cases(family, requires=None):
    """Names of the fixture cases of ``family`` (optionally only those holding array ``requires``)."""
    names = sorted(key.split("/")[1] for key in FIXTURES if key.startswith(family + "/") and key.endswith("/params"))
    return [name for name in names if requires is None or f"{family}/{name}/{requires}" in FIXTURES]


def load_case(family, case, dtype):
    """``(arrays, params)``: inputs cast to ``dtype`` (``bias`` None if absent), expected outputs float64."""
    prefix = f"{family}/{case}/"
    arrays = {key.removeprefix(prefix): value for key, value in FIXTURES.items() if key.startswith(prefix)}
    params = json.loads(str(arrays.pop("params")))
    arrays["torch_float32_error"] = json.loads(str(arrays["torch_float32_error"]))
    for name in INPUT_NAMES:
        if name in arrays:
            arrays[name] = arrays[name].astype(dtype)
    arrays.setdefault("bias", None)
    return arrays, params


def assert_matches(actual, f, key, dtype):
    """``actual`` against the fixture's ``f[key]``, at the case's own float32 tolerance (or float64's)."""
    assert_close(actual, f[key], dtype, tolerance=fixture_tolerance(f["torch_float32_error"], key, dtype))


def kernel(implementation, name):
    """``name`` from ``kernels.reference`` or from the public ``kernels`` package."""
    module = importlib.import_module("kernels.reference" if implementation == "reference" else "kernels")
    if not hasattr(module, name):
        pytest.fail(f"{module.__name__}.{name} does not exist (the public kernel API requires it)")
    return getattr(module, name)


def _is_depthwise(case):
    """groups == C_in (one input channel per group): depthwise_conv2d_* applies."""
    return json.loads(str(FIXTURES[f"conv2d/{case}/params"]))["groups"] == FIXTURES[f"conv2d/{case}/x"].shape[1]


def _is_pointwise(case):
    """A 1x1 kernel at stride 1 without padding: pointwise_conv2d_* applies."""
    params = json.loads(str(FIXTURES[f"conv2d/{case}/params"]))
    return FIXTURES[f"conv2d/{case}/weight"].shape[2:] == (1, 1) and params["stride"] == 1 and params["padding"] == 0


CONV2D = cases("conv2d")
DEPTHWISE = [case for case in CONV2D if _is_depthwise(case)]
POINTWISE = [case for case in CONV2D if _is_pointwise(case)]
CONV_TRANSPOSE2D = cases("conv_transpose2d")
WITH_BIAS = [("conv2d", case) for case in cases("conv2d", "grad_bias")] + \
            [("conv_transpose2d", case) for case in cases("conv_transpose2d", "grad_bias")]

implementations = pytest.mark.parametrize("implementation", ["reference", "fast"])
dtypes = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])


def test_fixture_file_records_its_torch_version_and_every_family():
    assert str(FIXTURES["meta/torch_version"]).startswith("2.")
    for family in ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"):
        assert len(cases(family)) >= 2, family
    assert len(DEPTHWISE) >= 2 and len(POINTWISE) >= 2


# --- conv2d ---------------------------------------------------------------------------------------

@implementations
@dtypes
@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_forward_matches_torch(implementation, dtype, case):
    f, params = load_case("conv2d", case, dtype)
    y = kernel(implementation, "conv2d_forward")(f["x"], f["weight"], f["bias"], **params)
    assert_matches(y, f, "y", dtype)


@implementations
@dtypes
@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_backward_input_matches_torch(implementation, dtype, case):
    f, params = load_case("conv2d", case, dtype)
    grad_x = kernel(implementation, "conv2d_backward_input")(f["grad_y"], f["weight"], f["x"].shape, **params)
    assert_matches(grad_x, f, "grad_x", dtype)


@implementations
@dtypes
@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_backward_weight_matches_torch(implementation, dtype, case):
    f, params = load_case("conv2d", case, dtype)
    grad_w = kernel(implementation, "conv2d_backward_weight")(f["grad_y"], f["x"], f["weight"].shape, **params)
    assert_matches(grad_w, f, "grad_weight", dtype)


@implementations
@dtypes
@pytest.mark.parametrize("family, case", WITH_BIAS)
def test_conv2d_backward_bias_matches_torch_for_conv_and_transposed(implementation, dtype, family, case):
    f, _ = load_case(family, case, dtype)
    grad_b = kernel(implementation, "conv2d_backward_bias")(f["grad_y"])
    assert_matches(grad_b, f, "grad_bias", dtype)


# --- depthwise and pointwise (the conv2d cases they fit) ------------------------------------------

def _depthwise_params(params):
    return {name: params[name] for name in ("stride", "padding", "dilation")}


@implementations
@dtypes
@pytest.mark.parametrize("case", DEPTHWISE)
def test_depthwise_conv2d_matches_torch(implementation, dtype, case):
    f, params = load_case("conv2d", case, dtype)
    params = _depthwise_params(params)
    y = kernel(implementation, "depthwise_conv2d_forward")(f["x"], f["weight"], f["bias"], **params)
    assert_matches(y, f, "y", dtype)
    grad_x = kernel(implementation, "depthwise_conv2d_backward_input")(f["grad_y"], f["weight"], f["x"].shape,
                                                                        **params)
    assert_matches(grad_x, f, "grad_x", dtype)
    grad_w = kernel(implementation, "depthwise_conv2d_backward_weight")(f["grad_y"], f["x"], f["weight"].shape,
                                                                         **params)
    assert_matches(grad_w, f, "grad_weight", dtype)


@implementations
@dtypes
@pytest.mark.parametrize("case", POINTWISE)
def test_pointwise_conv2d_matches_torch(implementation, dtype, case):
    f, params = load_case("conv2d", case, dtype)
    groups = params["groups"]
    y = kernel(implementation, "pointwise_conv2d_forward")(f["x"], f["weight"], f["bias"], groups=groups)
    assert_matches(y, f, "y", dtype)
    grad_x = kernel(implementation, "pointwise_conv2d_backward_input")(f["grad_y"], f["weight"], f["x"].shape,
                                                                        groups=groups)
    assert_matches(grad_x, f, "grad_x", dtype)
    grad_w = kernel(implementation, "pointwise_conv2d_backward_weight")(f["grad_y"], f["x"], f["weight"].shape,
                                                                         groups=groups)
    assert_matches(grad_w, f, "grad_weight", dtype)


# --- transposed convolution -----------------------------------------------------------------------

@implementations
@dtypes
@pytest.mark.parametrize("case", CONV_TRANSPOSE2D)
def test_conv_transpose2d_forward_matches_torch(implementation, dtype, case):
    f, params = load_case("conv_transpose2d", case, dtype)
    y = kernel(implementation, "conv_transpose2d_forward")(f["x"], f["weight"], f["bias"], **params)
    assert_matches(y, f, "y", dtype)


@implementations
@dtypes
@pytest.mark.parametrize("case", CONV_TRANSPOSE2D)
def test_conv_transpose2d_backward_input_matches_torch(implementation, dtype, case):
    f, params = load_case("conv_transpose2d", case, dtype)
    grad_x = kernel(implementation, "conv_transpose2d_backward_input")(f["grad_y"], f["weight"], f["x"].shape,
                                                                        **params)
    assert_matches(grad_x, f, "grad_x", dtype)


@implementations
@dtypes
@pytest.mark.parametrize("case", CONV_TRANSPOSE2D)
def test_conv_transpose2d_backward_weight_matches_torch(implementation, dtype, case):
    f, params = load_case("conv_transpose2d", case, dtype)
    grad_w = kernel(implementation, "conv_transpose2d_backward_weight")(f["grad_y"], f["x"], f["weight"].shape,
                                                                         **params)
    assert_matches(grad_w, f, "grad_weight", dtype)


# --- pooling --------------------------------------------------------------------------------------

@implementations
@dtypes
@pytest.mark.parametrize("case", cases("max_pool2d"))
def test_max_pool2d_forward_matches_torch_values_and_indices(implementation, dtype, case):
    f, params = load_case("max_pool2d", case, dtype)
    y, argmax = kernel(implementation, "max_pool2d_forward")(f["x"], **params)
    assert_matches(y, f, "y", dtype)
    assert argmax.dtype == np.int64
    np.testing.assert_array_equal(argmax, f["argmax"])   # exact, ties included ("ties_*" case)


@implementations
@dtypes
@pytest.mark.parametrize("case", cases("max_pool2d"))
def test_max_pool2d_backward_matches_torch(implementation, dtype, case):
    f, params = load_case("max_pool2d", case, dtype)
    grad_x = kernel(implementation, "max_pool2d_backward")(f["grad_y"], f["argmax"], f["x"].shape, **params)
    assert_matches(grad_x, f, "grad_x", dtype)


@implementations
@dtypes
@pytest.mark.parametrize("case", cases("avg_pool2d"))
def test_avg_pool2d_matches_torch(implementation, dtype, case):
    f, params = load_case("avg_pool2d", case, dtype)
    y = kernel(implementation, "avg_pool2d_forward")(f["x"], **params)
    assert_matches(y, f, "y", dtype)
    grad_x = kernel(implementation, "avg_pool2d_backward")(f["grad_y"], f["x"].shape, **params)
    assert_matches(grad_x, f, "grad_x", dtype)


@implementations
@dtypes
@pytest.mark.parametrize("case", cases("adaptive_avg_pool2d"))
def test_global_avg_pool2d_matches_torch_adaptive_avg_pool_to_1(implementation, dtype, case):
    f, params = load_case("adaptive_avg_pool2d", case, dtype)
    assert params == {"output_size": 1}
    y = kernel(implementation, "global_avg_pool2d_forward")(f["x"])
    assert_matches(y, f, "y", dtype)
    grad_x = kernel(implementation, "global_avg_pool2d_backward")(f["grad_y"], f["x"].shape)
    assert_matches(grad_x, f, "grad_x", dtype)


# --- live PyTorch (skipped when torch is not installed) ------------------------------------------

def _torch_forward_backward(torch, function, inputs, grad_y_rng):
    """PyTorch float64: y and the gradient of ``vdot(grad_y, y)`` with respect to each input."""
    tensors = [None if a is None else torch.from_numpy(a).requires_grad_(True) for a in inputs]
    y = function(*tensors)
    grad_y = grad_y_rng.standard_normal(tuple(y.shape))
    y.backward(torch.from_numpy(grad_y))
    return y.detach().numpy(), grad_y, [None if t is None else t.grad.numpy() for t in tensors]


def _random_conv_config(rng, transposed):
    """A small random valid configuration: shapes, stride, padding, dilation, groups (and output_padding)."""
    while True:
        groups = int(rng.choice([1, 2, 3]))
        C_in, C_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        kernel_size = tuple(int(k) for k in rng.integers(1, 4, size=2))
        stride = tuple(int(s) for s in rng.integers(1, 3, size=2))
        dilation = tuple(int(d) for d in rng.integers(1, 3, size=2))
        padding = tuple(int(p) for p in rng.integers(0, 3, size=2))
        H, W = (int(s) for s in rng.integers(3, 8, size=2))
        extent = [d * (k - 1) + 1 for d, k in zip(dilation, kernel_size)]
        if transposed:
            output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
            out = [(n - 1) * s - 2 * p + e + o
                   for n, s, p, e, o in zip((H, W), stride, padding, extent, output_padding)]
            weight_shape = (C_in, C_out // groups, *kernel_size)
            params = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                          dilation=dilation)
        else:
            out = [n + 2 * p - e for n, p, e in zip((H, W), padding, extent)]
            weight_shape = (C_out, C_in // groups, *kernel_size)
            params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        if min(out) >= (1 if transposed else 0):
            return (2, C_in, H, W), weight_shape, C_out, params


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_reference_convolutions_match_live_torch_on_random_configurations(transposed, seed):
    torch = pytest.importorskip("torch")
    import kernels.reference as reference

    rng = np.random.default_rng(seed)
    x_shape, weight_shape, C_out, params = _random_conv_config(rng, transposed)
    x, weight, bias = rng.standard_normal(x_shape), rng.standard_normal(weight_shape), rng.standard_normal(C_out)
    name = "conv_transpose2d" if transposed else "conv2d"
    function = getattr(torch.nn.functional, name)
    y, grad_y, (grad_x, grad_w, grad_b) = _torch_forward_backward(
        torch, lambda x, w, b: function(x, w, b, **params), [x, weight, bias], rng)

    assert_close(getattr(reference, f"{name}_forward")(x, weight, bias, **params), y, np.float64)
    assert_close(getattr(reference, f"{name}_backward_input")(grad_y, weight, x.shape, **params), grad_x, np.float64)
    assert_close(getattr(reference, f"{name}_backward_weight")(grad_y, x, weight.shape, **params), grad_w,
                 np.float64)
    assert_close(reference.conv2d_backward_bias(grad_y), grad_b, np.float64)


@pytest.mark.parametrize("seed", range(6))
def test_reference_pooling_matches_live_torch_on_random_configurations(seed):
    torch = pytest.importorskip("torch")
    import kernels.reference as reference
    F = torch.nn.functional

    rng = np.random.default_rng(100 + seed)
    kernel_size = tuple(int(k) for k in rng.integers(1, 4, size=2))
    stride = None if seed % 3 == 0 else tuple(int(s) for s in rng.integers(1, 4, size=2))
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel_size)
    x = rng.standard_normal((2, 3, *(int(s) for s in rng.integers(4, 9, size=2))))
    if seed % 2:
        x = np.round(x)   # many ties: the first maximum in row-major window order must win, as in torch

    y, grad_y, (grad_x,) = _torch_forward_backward(torch, lambda t: F.max_pool2d(t, kernel_size, stride, padding),
                                                   [x], rng)
    indices = F.max_pool2d(torch.from_numpy(x), kernel_size, stride, padding, return_indices=True)[1].numpy()
    y_ref, argmax = reference.max_pool2d_forward(x, kernel_size, stride, padding)
    assert_close(y_ref, y, np.float64)
    np.testing.assert_array_equal(argmax, indices)
    assert_close(reference.max_pool2d_backward(grad_y, argmax, x.shape, kernel_size, stride, padding), grad_x, np.float64)

    y, grad_y, (grad_x,) = _torch_forward_backward(torch, lambda t: F.avg_pool2d(t, kernel_size, stride, padding),
                                                   [x], rng)
    assert_close(reference.avg_pool2d_forward(x, kernel_size, stride, padding), y, np.float64)
    assert_close(reference.avg_pool2d_backward(grad_y, x.shape, kernel_size, stride, padding), grad_x, np.float64)

    y, grad_y, (grad_x,) = _torch_forward_backward(torch, lambda t: F.adaptive_avg_pool2d(t, 1), [x], rng)
    assert_close(reference.global_avg_pool2d_forward(x), y, np.float64)
    assert_close(reference.global_avg_pool2d_backward(grad_y, x.shape), grad_x, np.float64)


def test_reference_max_pool2d_propagates_nan_and_handles_minus_inf_like_torch():
    torch = pytest.importorskip("torch")
    import kernels.reference as reference

    x = np.tile(np.array([[np.nan, 1.0, np.nan], [-np.inf, -np.inf, -np.inf], [2.0, 2.0, 2.0]]), (1, 1, 2, 2))
    y_torch, indices = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, 1, 1, return_indices=True)
    y, argmax = reference.max_pool2d_forward(x, 2, 1, 1)
    np.testing.assert_array_equal(y, y_torch.numpy())   # NaNs in the same places
    np.testing.assert_array_equal(argmax, indices.numpy())


def test_committed_kernel_fixtures_match_what_the_generator_produces(tmp_path):
    pytest.importorskip("torch")
    sys.path.insert(0, str(TOOLS_DIR))
    try:
        make_fixtures = importlib.import_module("make_fixtures")
        [path] = make_fixtures.load_module("kernels", TOOLS_DIR / "fixtures_kernels.py").generate(tmp_path)
    finally:
        sys.path.remove(str(TOOLS_DIR))
    assert_fixture_file_matches(path, FIXTURES)
