"""Every ``tinycnn.nn`` layer against PyTorch: forward output, input gradient, parameter gradients and
running statistics, in training and in evaluation mode.

The committed fixture ``tests/fixtures/layers.npz`` (``python tools/make_fixtures.py --only layers``,
PyTorch float64) holds, per case, PyTorch's ``state_dict``, an input, an upstream gradient and the
results. Each test here builds the tinycnn layer of the same class name and arguments, loads PyTorch's
``state_dict`` with ``strict=True`` (so the keys must match too), and compares -- in float64 and, with the
inputs and parameters cast, in float32. Tolerances (``tests/helpers.py``), relative to the largest
expected magnitude: 1e-10 (float64); float32 derived from the case (``fixture_tolerance``: a multiple of
PyTorch's own float32 error on the same case, recorded by the generator as ``torch_float32_error``).

The last tests need PyTorch itself (skipped without it): the committed fixture against a fresh run of the
generator, and live checks on random configurations (Upsample sizes, ceil-mode pooling, several batch-norm
steps, default initialisation).
"""
import importlib
import json
import pathlib
import sys

import numpy as np
import pytest

import tinycnn.nn as nn
from helpers import TOLERANCES, assert_close, assert_fixture_file_matches, fixture_tolerance
from tinycnn.models.mobilenet_v2 import InvertedResidual

FIXTURE_PATH = pathlib.Path(__file__).resolve().parent / "fixtures" / "layers.npz"
TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"

with np.load(FIXTURE_PATH) as _npz:
    FIXTURES = {key: _npz[key] for key in _npz.files}

CASES = sorted({key.split("/")[1] for key in FIXTURES if key.startswith("layers/")})


# ---------------------------------------------------------------------------- tinycnn twins of the composite cases
def residual_se_block(channels, squeeze_channels):
    """conv3x3-BN-ReLU -> SE (hard-sigmoid gate) -> conv1x1-BN, plus the identity."""
    return nn.Residual(nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.SqueezeExcitation(channels, squeeze_channels, scale_activation=nn.Hardsigmoid),
        nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)))


def fire_block(in_channels, squeeze, expand):
    """SqueezeNet's fire module: squeeze 1x1, then concat(expand 1x1, expand 3x3)."""
    return nn.Sequential(nn.Conv2d(in_channels, squeeze, 1), nn.ReLU(),
                         nn.Concat(nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU()),
                                   nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())))


def shuffle_v2_block(channels):
    """ShuffleNetV2 stride-1 unit: ChannelSplit(Identity, branch), then a channel shuffle."""
    half = channels // 2
    branch = nn.Sequential(nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
                           nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half),
                           nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
    return nn.Sequential(nn.ChannelSplit(nn.Identity(), branch), nn.ChannelShuffle(2))


BUILDERS = {"ResidualSEBlock": residual_se_block, "FireBlock": fire_block, "ShuffleV2Block": shuffle_v2_block,
            "InvertedResidual": InvertedResidual}       # MobileNet V2's block lives with its model


def build_layer(spec):
    """The tinycnn layer of a fixture spec: same class name and arguments as in ``torch.nn``."""
    kwargs = dict(spec["kwargs"])
    for key in ("activation", "scale_activation"):
        if key in kwargs:
            kwargs[key] = getattr(nn, kwargs[key])
    builder = BUILDERS.get(spec["layer"]) or getattr(nn, spec["layer"])
    return builder(*spec["args"], **kwargs)


def load_case(case):
    prefix = f"layers/{case}/"
    arrays = {key.removeprefix(prefix): value for key, value in FIXTURES.items() if key.startswith(prefix)}
    spec = json.loads(str(arrays.pop("spec")))
    return spec, arrays


def expected_for(spec, arrays, mode):
    """``{key: array}`` expected in ``mode`` (evaluation-mode cases may share the training arrays)."""
    stored_mode = "train" if spec["eval_equals_train"] else mode
    prefix = f"{stored_mode}/"
    return {key.removeprefix(prefix): value for key, value in arrays.items() if key.startswith(prefix)}


def run_layer(spec, arrays, mode, dtype):
    """Build, load PyTorch's state (strict), set the mode, forward, backward; return layer, y, grad_x."""
    layer = build_layer(spec).to(dtype)
    state = {key.removeprefix("state/"): value for key, value in arrays.items() if key.startswith("state/")}
    layer.load_state_dict(state, strict=True)
    layer.train(mode == "train")
    y = layer(arrays["x"].astype(dtype))
    grad_x = layer.backward(arrays["grad_y"].astype(dtype))
    return layer, y, grad_x


def uses_hardsigmoid(spec):
    return (spec["layer"] in ("Hardsigmoid", "ResidualSEBlock")
            or spec["kwargs"].get("scale_activation") == "Hardsigmoid")


def assert_gradient_close(actual, expected, dtype, spec, floor, tolerance=None):
    """``assert_close`` for gradients, with two adjustments.

    * The error is measured against ``max(max|expected|, floor)``, ``floor`` being the upstream
      gradient's magnitude: some gradients are exactly zero in exact arithmetic (the bias of a
      batch norm followed by a 1x1 convolution and another training-mode batch norm: the second one
      removes any per-channel shift), and both libraries then return rounding noise (1e-16 in
      float64, 1e-7 in float32) that no relative tolerance can compare.
    * PyTorch's ``hardsigmoid_backward`` multiplies by the float32 constant ``1.0f / 6.0f``
      (0.1666666716...) even for float64 tensors, a relative error of 3e-8. tinycnn uses the exact 1/6, so
      float64 gradients that pass through a hard sigmoid are compared at 1e-7 instead of 1e-10.

    ``tolerance`` (relative) defaults to ``TOLERANCES[dtype]``; float32 tests pass the case's own.
    """
    tolerance = TOLERANCES[np.dtype(dtype)] if tolerance is None else tolerance
    if dtype == np.float64 and uses_hardsigmoid(spec):
        tolerance = 1e-7
    assert actual.dtype == dtype and actual.shape == expected.shape
    scale = max(float(np.max(np.abs(expected), initial=0.0)), floor)
    error = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    assert error <= tolerance * scale, f"max abs error {error:.3g} > {tolerance:g} x scale {scale:.3g}"


def mode_cases():
    params = []
    for case in CASES:
        spec, _ = load_case(case)
        modes = ["train", "eval"] if spec["eval_equals_train"] else spec["modes"]
        params += [pytest.param(case, mode, id=f"{case}-{mode}") for mode in modes]
    return params


def test_fixture_covers_every_layer_of_the_issue_in_both_modes():
    layers = {load_case(case)[0]["layer"] for case in CASES}
    required = {"Conv2d", "ConvTranspose2d", "BatchNorm2d", "Linear", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid",
                "Hardsigmoid", "Hardswish", "SiLU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Dropout",
                "Flatten", "Identity", "ChannelShuffle", "Upsample", "SqueezeExcitation", "InvertedResidual"}
    assert required <= layers, required - layers
    assert str(FIXTURES["meta/torch_version"]).startswith("2.")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case, mode", mode_cases())
def test_layer_matches_pytorch_forward_and_gradients(case, mode, dtype):
    spec, arrays = load_case(case)
    expected = expected_for(spec, arrays, mode)
    layer, y, grad_x = run_layer(spec, arrays, mode, dtype)
    torch_float32_errors = json.loads(str(expected["torch_float32_error"]))
    def tolerance(key):
        return fixture_tolerance(torch_float32_errors, key, dtype)
    assert_close(y, expected["y"], dtype, tolerance=tolerance("y"))
    floor = float(np.max(np.abs(arrays["grad_y"])))
    assert_gradient_close(grad_x, expected["grad_x"], dtype, spec, floor, tolerance("grad_x"))
    expected_grads = {key.removeprefix("grad/"): v for key, v in expected.items() if key.startswith("grad/")}
    grads = {name: p.grad for name, p in layer.named_parameters()}
    assert list(grads) == list(expected_grads)        # same parameters, in PyTorch's order
    for name, grad in grads.items():
        assert_gradient_close(grad, expected_grads[name], dtype, spec, floor, tolerance(f"grad/{name}"))


@pytest.mark.nojit
@pytest.mark.parametrize("case", ["conv2d_depthwise", "conv_transpose2d_stride2", "maxpool2d_ceil_mode_pad1"])
def test_tiny_kernel_backed_layers_match_pytorch_without_jit(case):
    spec, arrays = load_case(case)
    expected = expected_for(spec, arrays, "train")
    layer, y, grad_x = run_layer(spec, arrays, "train", np.float64)
    assert_close(y, expected["y"], np.float64)
    assert_close(grad_x, expected["grad_x"], np.float64)
    for name, parameter in layer.named_parameters():
        assert_close(parameter.grad, expected[f"grad/{name}"], np.float64)


@pytest.mark.parametrize("case", [c for c in CASES if any(k.startswith(f"layers/{c}/train/state/") for k in FIXTURES)])
def test_running_statistics_after_a_training_step_match_pytorch(case):
    spec, arrays = load_case(case)
    expected = expected_for(spec, arrays, "train")
    layer, _, _ = run_layer(spec, arrays, "train", np.float64)
    buffers = dict(layer.named_buffers())
    expected_buffers = {key.removeprefix("state/"): v for key, v in expected.items() if key.startswith("state/")}
    assert list(buffers) == list(expected_buffers)
    for name, value in buffers.items():
        if name.endswith("num_batches_tracked"):
            assert value.dtype == np.int64 and value == expected_buffers[name] == 1
        else:
            assert_close(value, expected_buffers[name], np.float64)


def test_evaluation_mode_leaves_running_statistics_alone():
    spec, arrays = load_case("batchnorm2d")
    layer, _, _ = run_layer(spec, arrays, "eval", np.float64)
    np.testing.assert_array_equal(layer.running_mean, arrays["state/running_mean"])
    np.testing.assert_array_equal(layer.running_var, arrays["state/running_var"])
    assert layer.num_batches_tracked == 0


# ---------------------------------------------------------------------------- live PyTorch
def _load_generator():
    sys.path.insert(0, str(TOOLS_DIR))
    try:
        make_fixtures = importlib.import_module("make_fixtures")
        return make_fixtures.load_module("layers", TOOLS_DIR / "fixtures_layers.py")
    finally:
        sys.path.remove(str(TOOLS_DIR))


def test_committed_layer_fixtures_match_what_the_generator_produces(tmp_path):
    pytest.importorskip("torch")
    [path] = _load_generator().generate(tmp_path)
    assert_fixture_file_matches(path, FIXTURES)


def _torch_forward_backward(torch, module, x, grad_y):
    x_tensor = torch.from_numpy(x.copy()).requires_grad_(True)
    y = module(x_tensor)
    y.backward(torch.from_numpy(grad_y))
    return y.detach().numpy(), x_tensor.grad.numpy()


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsample_matches_live_pytorch_on_random_sizes_and_scale_factors(mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for trial in range(25):
        H, W = rng.integers(1, 9, size=2)
        x = rng.standard_normal((1, 2, H, W))
        if trial % 2:
            kwargs = dict(size=tuple(int(s) for s in rng.integers(1, 13, size=2)))
        else:
            kwargs = dict(scale_factor=float(rng.choice([0.5, 1.5, 1.7, 2.0, 2.5, 3.0])))
        if mode == "bilinear":
            kwargs["align_corners"] = bool(trial % 3 == 0)
        ours = nn.Upsample(mode=mode, **kwargs)
        theirs = torch.nn.Upsample(mode=mode, **kwargs)
        try:
            y_ref = theirs(torch.from_numpy(x))
        except RuntimeError:
            continue                                  # empty output: both refuse (ours with ValueError)
        y = ours(x)
        grad_y = rng.standard_normal(y.shape)
        y_ref, grad_ref = _torch_forward_backward(torch, theirs, x, grad_y)
        assert_close(y, y_ref, np.float64)
        assert_close(ours.backward(grad_y), grad_ref, np.float64)


def test_max_pool_ceil_mode_matches_live_pytorch_on_random_configurations():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    for _ in range(30):
        k = int(rng.integers(1, 4))
        s = int(rng.integers(1, 4))
        p = int(rng.integers(0, k // 2 + 1))
        H, W = (int(v) for v in rng.integers(k, 9, size=2))
        x = rng.standard_normal((2, 2, H, W))
        ours = nn.MaxPool2d(k, s, p, ceil_mode=True)
        y = ours(x)
        grad_y = rng.standard_normal(y.shape)
        y_ref, grad_ref = _torch_forward_backward(torch, torch.nn.MaxPool2d(k, s, p, ceil_mode=True), x, grad_y)
        assert_close(y, y_ref, np.float64)
        assert_close(ours.backward(grad_y), grad_ref, np.float64)


def test_batch_norm_running_statistics_follow_pytorch_over_several_steps_then_eval():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    ours, theirs = nn.BatchNorm2d(3).double(), torch.nn.BatchNorm2d(3).double()
    for step in range(4):
        x = rng.standard_normal((4, 3, 2, 3)) * (step + 1) + step
        ours(x)
        theirs(torch.from_numpy(x))
    assert_close(ours.running_mean, theirs.running_mean.numpy(), np.float64)
    assert_close(ours.running_var, theirs.running_var.numpy(), np.float64)
    assert ours.num_batches_tracked == theirs.num_batches_tracked.item() == 4
    x = rng.standard_normal((2, 3, 2, 2))
    assert_close(ours.eval()(x), theirs.eval()(torch.from_numpy(x)).detach().numpy(), np.float64)


@pytest.mark.parametrize("name", ["ReLU", "ReLU6", "LeakyReLU", "Hardsigmoid", "Hardswish", "SiLU", "Sigmoid"])
def test_activation_gradients_at_the_kinks_equal_pytorch_in_float32(name):
    torch = pytest.importorskip("torch")
    x = np.array([-6.0, -3.0, -1e-7, 0.0, 1e-7, 3.0, 6.0, 2.9999998, 3.0000002], dtype=np.float32)
    ours = getattr(nn, name)()
    y = ours(x)
    y_ref, grad_ref = _torch_forward_backward(torch, getattr(torch.nn, name)(), x, np.ones_like(x))
    assert_close(y, y_ref, np.float32)
    assert_close(ours.backward(np.ones_like(x)), grad_ref, np.float32)


@pytest.mark.parametrize("make", [
    lambda nn_: nn_.Conv2d(6, 4, 3), lambda nn_: nn_.Conv2d(6, 6, 3, groups=3, bias=True),
    lambda nn_: nn_.ConvTranspose2d(6, 4, 3, groups=2), lambda nn_: nn_.Linear(20, 10)],
    ids=["conv", "grouped_conv", "grouped_transposed_conv", "linear"])
def test_default_initialisation_uses_pytorchs_bounds(make):
    torch = pytest.importorskip("torch")
    ours, theirs = make(nn), make(torch.nn)
    for (name, p), (name_ref, p_ref) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == name_ref and p.shape == tuple(p_ref.shape)
        bound = float(p_ref.detach().abs().max())         # close to 1/sqrt(fan_in) for these sizes
        fan_in = nn.init.calculate_fan_in_and_fan_out(p_ref.shape if p.ndim > 1 else ours.weight.shape)[0]
        assert np.abs(p.data).max() <= 1 / np.sqrt(fan_in) + 1e-7
        assert bound <= 1 / np.sqrt(fan_in) + 1e-7
        if p.size >= 50:                                        # many draws fill the interval, not a narrower one
            assert np.abs(p.data).max() > 0.8 / np.sqrt(fan_in)
