"""tinycnn.quantize: fake quantisation equal to PyTorch's (ties included), its straight-through gradient,
choose_qparams as PyTorch's MinMaxObserver, batch-norm folding, post-training quantisation of a model,
activation ranges (ReLU6 bounded by 6, ReLU not), model sizes and the integer leaky ReLU.

PyTorch results come from the committed fixture ``tests/fixtures/quantize.npz``
(``python tools/make_fixtures.py --only quantize``) and, with torch installed, from live calls.
Fake quantisation is compared **bit for bit**: both sides do the same float32 operations (a float32
reciprocal, one product, round half to even, one product), so there is nothing to tolerate.
"""
import importlib
import pathlib
import sys

import numpy as np
import pytest

from tinycnn import models, nn, quantize
from helpers import assert_fixture_file_matches, load_fixture_with_configs, randomise_batch_norms

FIXTURE_PATH = pathlib.Path(__file__).resolve().parent / "fixtures" / "quantize.npz"
TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"
FIXTURES = load_fixture_with_configs(FIXTURE_PATH)


def assert_bitwise_equal(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


# ------------------------------------------------------------------------------------ tensors vs PyTorch
@pytest.mark.parametrize("name", sorted(FIXTURES["configs"]["per_tensor"]))
def test_fake_quantize_per_tensor_equals_torch_fixture(name):
    _, scale, zero_point, qmin, qmax = FIXTURES["configs"]["per_tensor"][name]
    x, w = FIXTURES[f"{name}/x"], FIXTURES[f"{name}/w"]
    assert_bitwise_equal(quantize.fake_quantize(x, scale, zero_point, qmin, qmax), FIXTURES[f"{name}/y"])
    grad = quantize.fake_quantize_backward(w, x, scale, zero_point, qmin, qmax)
    assert_bitwise_equal(grad, FIXTURES[f"{name}/grad"])


@pytest.mark.parametrize("name", sorted(FIXTURES["configs"]["per_channel"]))
def test_fake_quantize_per_channel_equals_torch_fixture(name):
    _, axis, qmin, qmax = FIXTURES["configs"]["per_channel"][name]
    x, w = FIXTURES[f"{name}/x"], FIXTURES[f"{name}/w"]
    scale, zero_point = FIXTURES[f"{name}/scale"], FIXTURES[f"{name}/zero_point"]
    y = quantize.fake_quantize(x, scale, zero_point, qmin, qmax, axis=axis)
    assert_bitwise_equal(y, FIXTURES[f"{name}/y"])
    grad = quantize.fake_quantize_backward(w, x, scale, zero_point, qmin, qmax, axis=axis)
    assert_bitwise_equal(grad, FIXTURES[f"{name}/grad"])


@pytest.mark.parametrize("zero_point", [0, 3])
def test_fake_quantize_rounds_ties_to_even_as_torch(zero_point):
    x = FIXTURES[f"ties_zp{zero_point}/x"]
    y = quantize.fake_quantize(x, 0.0625, zero_point, -128, 127)
    assert_bitwise_equal(y, FIXTURES[f"ties_zp{zero_point}/y"])
    steps = y / 0.0625                                   # the integer each half-step went to
    assert np.all(steps % 2 == 0)                        # half to even, never half away from zero


def test_fake_quantize_ties_by_hand():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], dtype=np.float32)
    np.testing.assert_array_equal(quantize.fake_quantize(x, 1.0, 0, -128, 127), [0, 2, 2, 0, -2, -2])


def test_fake_quantize_clamps_and_straight_through_gradient_masks_the_clamped():
    x = np.array([-300.0, -1.0, 0.0, 1.0, 300.0], dtype=np.float32)
    np.testing.assert_array_equal(quantize.fake_quantize(x, 1.0, 0, -128, 127), [-128, -1, 0, 1, 127])
    grad = quantize.fake_quantize_backward(np.ones(5, np.float32), x, 1.0, 0, -128, 127)
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 0])


@pytest.mark.parametrize("name", sorted(FIXTURES["configs"]["observers"]))
def test_choose_qparams_equals_torch_min_max_observer(name):
    low, high = FIXTURES[f"observer_{name}/range"]
    symmetric = "symmetric" in name
    scale, zero_point, qmin, qmax = quantize.choose_qparams(low, high, 8, symmetric=symmetric)
    assert (qmin, qmax) == ((-128, 127) if symmetric else (0, 255))
    np.testing.assert_allclose(scale, FIXTURES[f"observer_{name}/scale"], rtol=1e-6)   # torch computes in float32
    np.testing.assert_array_equal(zero_point, FIXTURES[f"observer_{name}/zero_point"])


def test_choose_qparams_grid_covers_the_range_and_keeps_zero_exact(rng):
    low, high = rng.uniform(-3, 0, 20), rng.uniform(0, 5, 20)
    scale, zero_point, qmin, qmax = quantize.choose_qparams(low, high, bits=8)
    for s, z, a, b in zip(scale, zero_point, low, high):
        values = np.array([a, 0.0, b], dtype=np.float32)
        y = quantize.fake_quantize(values, s, z, qmin, qmax)
        assert y[1] == 0                                      # zero (padding) is representable
        assert np.all(np.abs(y - values) <= s / 2 + 1e-6)     # nothing clamped inside the range


@pytest.mark.parametrize("call, message", [
    (lambda: quantize.fake_quantize(np.ones(3, np.float32), 0.0, 0, 0, 255), "scale must be positive"),
    (lambda: quantize.fake_quantize(np.ones(3, np.float32), 1.0, 300, 0, 255), "zero_point must lie"),
    (lambda: quantize.fake_quantize(np.ones(3, np.float32), 1.0, 0, 5, 2), "quant_min"),
    (lambda: quantize.fake_quantize(np.ones(3, np.int32), 1.0, 0, 0, 255), "float32 or float64"),
    (lambda: quantize.fake_quantize(np.ones((2, 3), np.float32), np.ones(2), np.zeros(2, int), 0, 255, axis=1),
     r"shape \(3,\)"),
    (lambda: quantize.fake_quantize(np.ones(3, np.float32), 1.0, 0.5, 0, 255), "zero_point must be integer"),
    (lambda: quantize.choose_qparams(1.0, -1.0), "x_min must be <= x_max"),
    (lambda: quantize.choose_qparams(0.0, 1.0, bits=1), "bits must be between"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_fake_quantize_matches_torch_live_on_random_cases(rng):
    torch = pytest.importorskip("torch")
    for dtype in [np.float32] * 10 + [np.float64] * 10:
        x = (rng.standard_normal((3, 4, 6)) * rng.uniform(0.1, 10)).astype(dtype)
        scale = float(rng.uniform(1e-3, 0.5))
        zero_point = int(rng.integers(0, 256))
        expected = torch.fake_quantize_per_tensor_affine(torch.tensor(x), scale, zero_point, 0, 255).numpy()
        assert_bitwise_equal(quantize.fake_quantize(x, scale, zero_point, 0, 255), expected)
        scales = rng.uniform(1e-3, 0.2, 4)
        zero_points = rng.integers(-128, 128, 4).astype(np.int32)
        x[0, :, :2] = (rng.integers(-50, 50, (4, 2)) + 0.5) * scales.astype(np.float32)[:, None]   # ties
        expected = torch.fake_quantize_per_channel_affine(torch.tensor(x), torch.tensor(scales, dtype=torch.float32),
                                                          torch.tensor(zero_points), 1, -128, 127).numpy()
        assert_bitwise_equal(quantize.fake_quantize(x, scales, zero_points, -128, 127, axis=1), expected)


def test_committed_quantize_fixture_matches_the_generator(tmp_path):
    pytest.importorskip("torch")
    sys.path.insert(0, str(TOOLS_DIR))
    try:
        generator = importlib.import_module("make_fixtures").load_module("quantize", TOOLS_DIR / "fixtures_quantize.py")
    finally:
        sys.path.remove(str(TOOLS_DIR))
    [path] = generator.generate(tmp_path)
    fixtures = {key: value for key, value in FIXTURES.items() if key != "configs"}
    with np.load(FIXTURE_PATH) as data:
        fixtures["configs_json"] = data["configs_json"]
    assert_fixture_file_matches(path, fixtures)


def test_fake_quantize_layer_backward_is_the_straight_through_gradient(rng):
    layer = quantize.FakeQuantize(0.1, 10, 0, 255)
    x = rng.uniform(-2, 30, (2, 3, 4, 4)).astype(np.float32)
    y = layer(x)
    grad = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(grad, ((x >= -1.05) & (x <= 24.55)).astype(np.float32))


# ------------------------------------------------------------------------------------------------ models
def _small_model(rng, name="mobilenet_v2", **kwargs):
    nn.init.manual_seed(0)
    model = models.get_model(name, num_classes=5, **kwargs)
    randomise_batch_norms(model, rng)
    return model.float().eval()


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "mobilenext"])
def test_fold_batch_norm_keeps_the_logits(rng, name):
    model = _small_model(rng, name, width_mult=0.25)
    x = rng.standard_normal((2, 3, 32, 32))
    model.double()
    folded = quantize.fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    np.testing.assert_allclose(folded(x), model(x), rtol=1e-10, atol=1e-10)      # float64: exact up to rounding


def test_quantize_model_int8_is_close_and_coarser_bits_are_worse(rng):
    model = _small_model(rng, width_mult=0.5)
    x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    reference = model(x)
    errors = {}
    for bits in (8, 4):
        quantized = quantize.quantize_model(model, [x[:8]], bits=bits)
        assert sum(isinstance(m, quantize.QuantizedLayer) for m in quantized.modules()) == \
            sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
        errors[bits] = np.abs(quantized(x) - reference).max() / np.abs(reference).max()
    half = quantize.quantize_model(model, x[:8], precision="float16")
    errors["float16"] = np.abs(half(x) - reference).max() / np.abs(reference).max()
    assert errors["float16"] < 1e-2 and errors["float16"] < errors[8] < errors[4]
    assert errors[8] < 0.2
    np.testing.assert_array_equal(model(x), reference)            # the float model is untouched


def test_quantized_weights_lie_on_a_per_channel_grid(rng):
    model = _small_model(rng, width_mult=0.25)
    quantized = quantize.quantize_model(model, rng.standard_normal((4, 3, 32, 32)).astype(np.float32), bits=4)
    layer = next(m.layer for m in quantized.modules() if isinstance(m, quantize.QuantizedLayer))
    folded = next(m for m in quantize.fold_batch_norm(model).modules() if isinstance(m, nn.Conv2d))
    for row, float_row in zip(layer.weight.data.reshape(len(layer.weight.data), -1),
                              folded.weight.data.reshape(len(folded.weight.data), -1)):
        step = np.abs(float_row).max() / 7.5           # symmetric 4 bits: scale = max|w| / ((7 - (-8)) / 2)
        codes = row / np.float32(step)
        np.testing.assert_allclose(codes, np.rint(codes), atol=1e-4)
        assert codes.min() >= -8 - 1e-4 and codes.max() <= 7 + 1e-4
        assert np.abs(row - float_row).max() <= step / 2 + 1e-6


def test_percentile_calibration_clips_outliers(rng):
    model = _small_model(rng, width_mult=0.25)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    x[0, 0, 0, 0] = 100.0                                             # one outlier pixel
    by_minmax = quantize.quantize_model(model, x, calibration_method="minmax")
    by_percentile = quantize.quantize_model(model, x, calibration_method="percentile", percentile=99.9)
    first = [next(m for m in q.modules() if isinstance(m, quantize.QuantizedLayer)) for q in (by_minmax, by_percentile)]
    assert first[1].input_qparams[0] < first[0].input_qparams[0] / 10      # a much finer grid


def test_relu6_activation_ranges_are_bounded_by_6_and_relu_ones_are_not(rng):
    relu6_model = _small_model(rng, width_mult=0.5)
    relu_model = quantize.replace_activations(_small_model(rng, width_mult=0.5), nn.ReLU6, nn.ReLU)
    assert not any(isinstance(m, nn.ReLU6) for m in relu_model.modules())
    x = (rng.standard_normal((8, 3, 32, 32)) * 20).astype(np.float32)    # large inputs: large activations
    ranges6 = quantize.activation_ranges(relu6_model, x)
    ranges = quantize.activation_ranges(relu_model, x)
    assert len(ranges6) == len(ranges) > 10
    assert all(0 <= low and high <= 6 for low, high in ranges6.values())
    assert max(high for _, high in ranges.values()) > 6


def test_model_size_bytes(rng):
    model = quantize.fold_batch_norm(_small_model(rng, width_mult=0.5))
    params = sum(p.size for p in model.parameters())
    assert quantize.model_size_bytes(model) == 4 * params
    assert quantize.model_size_bytes(model, "float16") == 2 * params
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    expected = sum(w.size + 4 * w.shape[0] for w in weights) + 4 * (params - sum(w.size for w in weights))
    assert quantize.model_size_bytes(model, "int", bits=8) == expected


def test_quantize_model_refuses_bad_settings(rng):
    model = _small_model(rng, width_mult=0.25)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="precision"):
        quantize.quantize_model(model, x, precision="int3")
    with pytest.raises(ValueError, match="calibration"):
        quantize.quantize_model(model, np.ones((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="percentile"):
        quantize.quantize_model(model, x, calibration_method="percentile", percentile=20)


# -------------------------------------------------------------------------------------- leaky ReLU in integers
def test_leaky_relu_integer_is_13_over_128():
    x = np.arange(-1000, 1000, dtype=np.int32)
    y = quantize.leaky_relu_integer(x)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y[x >= 0], x[x >= 0])
    np.testing.assert_array_equal(y[x < 0], np.floor(x[x < 0] * 13 / 128))
    assert np.all(np.abs(y[x < 0] - 0.1 * x[x < 0]) <= np.abs(x[x < 0]) * (13 / 128 - 0.1) + 1)
    with pytest.raises(TypeError, match="integer"):
        quantize.leaky_relu_integer(np.ones(3))
