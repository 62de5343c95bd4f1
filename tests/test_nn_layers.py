"""Every ``tinycnn.nn`` layer on its own: float64 gradient checks in training and evaluation mode,
layer-specific behaviour (batch-norm statistics, dropout masks, kinks, up-sampling, ceil-mode pooling)
and clear errors for bad input.

Gradient checks (``helpers.directional_gradcheck``): for a random upstream gradient ``g`` the scalar
``L = vdot(g, layer(x))`` has ``dL/dx = layer.backward(g)``; along a random direction ``v`` the analytic
``vdot(dL/dx, v)`` must match the central difference ``(L(x + eps v) - L(x - eps v)) / (2 eps)``, and the
same for every parameter. In float64 with ``eps = 1e-6`` the central difference is accurate to about
``eps^2 * |L'''| + 1e-16 |L| / eps``, i.e. ~1e-9 relative here: we assert 1e-6.
"""
import re

import numpy as np
import pytest

import tinycnn.nn as nn
from helpers import gradcheck_layer

# (id, factory, input shape): every layer, every convolution kind
LAYERS = [
    ("conv2d_standard", lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5)),
    ("conv2d_strided", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 6, 5)),
    ("conv2d_dilated", lambda: nn.Conv2d(3, 4, 3, padding=2, dilation=2), (2, 3, 6, 5)),
    ("conv2d_grouped", lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 5, 4)),
    ("conv2d_depthwise", lambda: nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False), (2, 4, 6, 5)),
    ("conv2d_pointwise", lambda: nn.Conv2d(4, 5, 1), (2, 4, 3, 4)),
    ("conv_transpose2d", lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1), (2, 4, 3, 3)),
    ("conv_transpose2d_grouped", lambda: nn.ConvTranspose2d(4, 6, 3, groups=2, dilation=2), (2, 4, 3, 3)),
    ("batchnorm2d", lambda: nn.BatchNorm2d(3), (3, 3, 3, 2)),
    ("batchnorm2d_no_affine", lambda: nn.BatchNorm2d(3, affine=False), (3, 3, 3, 2)),
    ("linear", lambda: nn.Linear(5, 3), (4, 5)),
    ("relu", nn.ReLU, (2, 3, 4, 4)),
    ("relu6", nn.ReLU6, (2, 3, 4, 4)),
    ("leaky_relu", lambda: nn.LeakyReLU(0.1), (2, 3, 4, 4)),
    ("sigmoid", nn.Sigmoid, (2, 3, 4, 4)),
    ("hardsigmoid", nn.Hardsigmoid, (2, 3, 4, 4)),
    ("hardswish", nn.Hardswish, (2, 3, 4, 4)),
    ("silu", nn.SiLU, (2, 3, 4, 4)),
    ("maxpool2d", lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 5, 6)),
    ("maxpool2d_ceil_mode", lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True), (2, 3, 6, 6)),
    ("avgpool2d", lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 5, 6)),
    ("adaptive_avgpool2d", lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 4, 5)),
    ("dropout", lambda: nn.Dropout(0.3), (2, 3, 4, 4)),
    ("flatten", nn.Flatten, (2, 3, 2, 2)),
    ("identity", nn.Identity, (2, 3, 2, 2)),
    ("channel_shuffle", lambda: nn.ChannelShuffle(2), (2, 6, 2, 3)),
    ("upsample_nearest", lambda: nn.Upsample(scale_factor=1.5), (2, 2, 3, 4)),
    ("upsample_bilinear", lambda: nn.Upsample(size=(5, 7), mode="bilinear"), (2, 2, 3, 4)),
    ("squeeze_excitation", lambda: nn.SqueezeExcitation(6, 2, scale_activation=nn.Hardsigmoid), (2, 6, 3, 3)),
    ("sequential", lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU6()), (2, 2, 5, 5)),
]
LAYER_IDS = [name for name, _, _ in LAYERS]


def _fixed_dropout_mask(layer):
    """Reset every Dropout's generator so that each forward of a gradient check draws the same mask."""
    for module in layer.modules():
        if isinstance(module, nn.Dropout):
            module.rng = np.random.default_rng(99)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name, factory, x_shape", LAYERS, ids=LAYER_IDS)
def test_layer_gradients_match_central_differences_in_float64(name, factory, x_shape, mode):
    gradcheck_layer(factory(), x_shape, mode, before_forward=_fixed_dropout_mask)


@pytest.mark.nojit
def test_tiny_conv_bn_relu_gradcheck_runs_without_jit():
    layer = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, groups=2), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2),
                          nn.ReLU(), nn.MaxPool2d(2))
    gradcheck_layer(layer, (2, 2, 4, 4), "train")


# ---------------------------------------------------------------------------- batch norm
def test_batch_norm_training_normalises_with_biased_variance_and_updates_running_stats_unbiased(rng):
    bn = nn.BatchNorm2d(3).double()
    x = rng.standard_normal((4, 3, 2, 5)) * 3 + 1
    y = bn(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1 / (1 + bn.eps / x.var(axis=(0, 2, 3))), rtol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-12)
    assert bn.num_batches_tracked == 1 and bn.num_batches_tracked.dtype == np.int64


def test_batch_norm_eval_uses_running_stats_and_backward_follows_the_forward_mode(rng):
    bn = nn.BatchNorm2d(2).double()
    bn.running_mean[...] = [1.0, -1.0]
    bn.running_var[...] = [4.0, 0.25]
    x = rng.standard_normal((2, 2, 3, 3))
    y = bn.eval()(x)
    expected = (x - bn.running_mean.reshape(1, 2, 1, 1)) / np.sqrt(bn.running_var.reshape(1, 2, 1, 1) + bn.eps)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    bn.train()                      # switching mode between forward and backward must not change the backward
    grad = bn.backward(np.ones_like(y))
    np.testing.assert_allclose(grad, np.ones_like(x) / np.sqrt(bn.running_var + bn.eps).reshape(1, 2, 1, 1))


def test_batch_norm_momentum_none_is_the_cumulative_average(rng):
    bn = nn.BatchNorm2d(2, momentum=None).double()
    batches = [rng.standard_normal((3, 2, 2, 2)) + i for i in range(3)]
    for x in batches:
        bn(x)
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(axis=(0, 2, 3)) for x in batches], axis=0),
                               rtol=1e-12)


def _batch_norm_formula(x, weight, bias, eps, grad_out):
    """The class docstring's formulas in plain float64 NumPy (two-pass variance)."""
    x, grad_out = x.astype(np.float64), grad_out.astype(np.float64)
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = np.sqrt(((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True) + eps)
    x_hat = (x - mean) / std
    w = weight.reshape(1, -1, 1, 1).astype(np.float64)
    y = w * x_hat + bias.reshape(1, -1, 1, 1)
    mean_g = grad_out.mean(axis=(0, 2, 3), keepdims=True)
    mean_g_hat = (grad_out * x_hat).mean(axis=(0, 2, 3), keepdims=True)
    return y, w / std * (grad_out - mean_g - x_hat * mean_g_hat), (grad_out * x_hat).sum(axis=(0, 2, 3))


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("x_shape", [(4, 3, 5, 6), (64, 5, 1, 1), (2, 70, 2, 2)])
def test_batch_norm_training_kernels_match_the_formulas(x_shape, dtype, tolerance, rng):
    """float32: sums in float64 and one rounding per stored value, ~10 float32 eps after the
    normalisation divides by std; 1e-5 is ~80 eps."""
    bn = nn.BatchNorm2d(x_shape[1]).to(dtype)
    bn.weight.data = rng.standard_normal(x_shape[1]).astype(dtype)
    bn.bias.data = rng.standard_normal(x_shape[1]).astype(dtype)
    x = (rng.standard_normal(x_shape) * 3 + 2).astype(dtype)
    grad_out = rng.standard_normal(x_shape).astype(dtype)
    y = bn(x)
    grad_x = bn.backward(grad_out)
    expected_y, expected_grad_x, expected_grad_weight = _batch_norm_formula(x, bn.weight.data, bn.bias.data,
                                                                            bn.eps, grad_out)
    assert y.dtype == grad_x.dtype == dtype
    np.testing.assert_allclose(y, expected_y, rtol=0, atol=tolerance * np.abs(expected_y).max())
    np.testing.assert_allclose(grad_x, expected_grad_x, rtol=0, atol=tolerance * np.abs(expected_grad_x).max())
    np.testing.assert_allclose(bn.weight.grad, expected_grad_weight, rtol=tolerance, atol=tolerance)


def test_batch_norm_training_is_bit_identical_for_any_thread_count_and_input_layout(rng, restore_numba_threads):
    import numba
    x = rng.standard_normal((8, 6, 5, 4)).astype(np.float32)
    grad_out = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for threads, x_in in ((1, x), (numba.config.NUMBA_NUM_THREADS, x), (1, np.asfortranarray(x))):
        numba.set_num_threads(threads)
        bn = nn.BatchNorm2d(6)
        results.append((bn(x_in), bn.backward(grad_out), bn.weight.grad.copy(), bn.running_var.copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_batch_norm_training_refuses_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm2d(3)(np.ones((1, 3, 1, 1), dtype=np.float32))


# ---------------------------------------------------------------------------- activations
@pytest.mark.parametrize("layer, expected", [
    (nn.ReLU(), [0, 0, 0, 1, 1, 1]),
    (nn.ReLU6(), [0, 0, 0, 1, 0, 0]),
    (nn.LeakyReLU(0.2), [0.2, 0.2, 0.2, 1, 1, 1]),
    (nn.Hardsigmoid(), [0, 0, 1 / 6, 0, 0, 0]),
    (nn.Hardswish(), [0, 0, 0.5, 1, 1, 1]),
], ids=["relu", "relu6", "leaky_relu", "hardsigmoid", "hardswish"])
def test_activation_derivative_at_kinks_minus6_minus3_0_3_6_and_7_follows_pytorch(layer, expected):
    x = np.array([-6.0, -3.0, 0.0, 3.0, 6.0, 7.0])
    layer(x)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), expected)


def test_sigmoid_and_silu_are_finite_for_huge_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    with np.errstate(over="raise"):
        s = nn.Sigmoid()(x)
        silu = nn.SiLU()(x)
    np.testing.assert_allclose(s, [0, 1.9287e-22, 0.5, 1, 1], rtol=1e-4)
    np.testing.assert_allclose(silu, [0, 0, 0, 50, 1000], atol=1e-6)
    assert s.dtype == silu.dtype == np.float32


def test_activations_keep_float32_and_never_modify_their_input(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32) * 4
    before = x.copy()
    for layer in [nn.ReLU(inplace=True), nn.ReLU6(inplace=True), nn.LeakyReLU(inplace=True), nn.Sigmoid(),
                  nn.Hardsigmoid(inplace=True), nn.Hardswish(inplace=True), nn.SiLU(inplace=True)]:
        y = layer(x)
        assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32
    np.testing.assert_array_equal(x, before)


# ---------------------------------------------------------------------------- dropout
def test_dropout_training_scales_kept_values_and_backward_uses_the_same_mask(rng):
    layer = nn.Dropout(0.25, rng=np.random.default_rng(0))
    x = rng.standard_normal((50, 40)).astype(np.float32) + 3     # no zeros in x
    y = layer(x)
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8                                # about 1 - p
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(layer.backward(g), np.where(kept, g / 0.75, 0), rtol=1e-6)


def test_dropout_is_the_identity_in_eval_mode_and_reproducible_with_manual_seed(rng):
    x = rng.standard_normal((4, 8))
    np.testing.assert_array_equal(nn.Dropout(0.5).eval()(x), x)
    nn.init.manual_seed(5)
    first = nn.Dropout(0.5)(x)
    nn.init.manual_seed(5)
    np.testing.assert_array_equal(nn.Dropout(0.5)(x), first)
    np.testing.assert_array_equal(nn.Dropout(1.0)(x), np.zeros_like(x))


# ---------------------------------------------------------------------------- resampling and shapes
def test_channel_shuffle_interleaves_groups_and_backward_is_the_inverse_permutation():
    x = np.arange(6, dtype=np.float64).reshape(1, 6, 1, 1)
    layer = nn.ChannelShuffle(2)
    np.testing.assert_array_equal(layer(x).ravel(), [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(layer.backward(layer(x)), x)


def test_upsample_nearest_x2_repeats_pixels_and_backward_sums_the_copies():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    layer = nn.Upsample(scale_factor=2)
    np.testing.assert_array_equal(layer(x)[0, 0], np.kron(x[0, 0], np.ones((2, 2))))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 4, 4))), np.full((1, 1, 2, 2), 4.0))


def test_upsample_bilinear_x2_interpolates_pixel_centres():
    x = np.array([[[[0.0, 4.0]]]])                 # one row, two pixels
    y = nn.Upsample(scale_factor=2, mode="bilinear")(x)
    np.testing.assert_allclose(y[0, 0, 0], [0.0, 1.0, 3.0, 4.0])     # centres at -0.25, 0.25, 0.75, 1.25
    assert y.shape == (1, 1, 2, 4)


def test_maxpool_ceil_mode_adds_a_partial_last_window():
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    assert nn.MaxPool2d(2)(x).shape == (1, 1, 2, 2)
    y = nn.MaxPool2d(2, ceil_mode=True)(x)
    np.testing.assert_array_equal(y[0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])


def test_flatten_and_linear_accept_leading_axes():
    x = np.ones((2, 3, 4, 5), dtype=np.float32)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(start_dim=2)(x).shape == (2, 3, 20)
    layer = nn.Linear(5, 2)
    y = layer(x)
    assert y.shape == (2, 3, 4, 2)
    assert layer.backward(np.ones_like(y)).shape == x.shape


# ---------------------------------------------------------------------------- initialisation
def test_manual_seed_makes_initialisation_reproducible_and_rng_overrides_it():
    nn.init.manual_seed(1)
    a = nn.Conv2d(3, 4, 3)
    nn.init.manual_seed(1)
    b = nn.Conv2d(3, 4, 3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    c = nn.Conv2d(3, 4, 3)
    assert not np.array_equal(a.weight.data, c.weight.data)
    d = nn.Conv2d(3, 4, 3, rng=np.random.default_rng(3))
    e = nn.Conv2d(3, 4, 3, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(d.weight.data, e.weight.data)


def test_default_init_is_kaiming_uniform_with_bound_one_over_sqrt_fan_in():
    layer = nn.Conv2d(16, 32, 3, groups=4)            # fan_in = 16/4 * 9 = 36, bound 1/6
    assert layer.weight.dtype == np.float32 and layer.weight.grad.dtype == np.float32
    assert np.abs(layer.weight.data).max() <= 1 / 6 and np.abs(layer.weight.data).max() > 0.16
    assert np.abs(layer.bias.data).max() <= 1 / 6
    np.testing.assert_allclose(layer.weight.data.std(), (1 / 6) / np.sqrt(3), rtol=0.1)   # uniform std
    bn = nn.BatchNorm2d(4)
    np.testing.assert_array_equal(bn.weight.data, 1)
    np.testing.assert_array_equal(bn.bias.data, 0)
    np.testing.assert_array_equal(bn.running_var, 1)


def test_kaiming_normal_fan_out_has_the_he_standard_deviation():
    weight = nn.Parameter(np.zeros((64, 32, 3, 3), dtype=np.float32))
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu", rng=np.random.default_rng(0))
    np.testing.assert_allclose(weight.data.std(), np.sqrt(2 / (64 * 9)), rtol=0.05)


@pytest.mark.parametrize("fill, draw", [(nn.init.uniform_, "uniform"), (nn.init.normal_, "normal")])
def test_random_fills_give_the_bits_of_one_draw_whatever_the_chunks(fill, draw, monkeypatch):
    """The fills draw a chunk at a time (no float64 copy of a whole large weight); the values must be
    those of a single ``rng.uniform``/``rng.normal`` call, also for a strided view and a chunk edge."""
    monkeypatch.setattr(nn.init, "DRAW_CHUNK", 7)                     # 3 x 5 x 4 = 60: 8 full chunks + 4
    weight = np.zeros((3, 5, 4), dtype=np.float32)
    fill(weight, 0.5, 2.0, rng=np.random.default_rng(4))
    expected = getattr(np.random.default_rng(4), draw)(0.5, 2.0, size=(3, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(weight, expected)
    strided = np.zeros((6, 5), dtype=np.float32)
    fill(strided[::2], 0.5, 2.0, rng=np.random.default_rng(4))       # rows 0, 2, 4 only
    expected = getattr(np.random.default_rng(4), draw)(0.5, 2.0, size=(3, 5)).astype(np.float32)
    np.testing.assert_array_equal(strided[::2], expected)
    assert not strided[1::2].any()


def test_skip_init_builds_zero_weights_without_moving_the_generator_and_ends_on_error():
    nn.init.manual_seed(5)
    with nn.init.skip_init():
        skipped = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
        nn.init.kaiming_normal_(skipped[0].weight, mode="fan_out")
    assert not any(p.data.any() for name, p in skipped.named_parameters() if name != "1.weight")
    np.testing.assert_array_equal(skipped[1].weight.data, 1)         # constants still fill
    drawn = nn.Conv2d(3, 4, 3)                                         # the generator is where the seed left it
    nn.init.manual_seed(5)
    np.testing.assert_array_equal(drawn.weight.data, nn.Conv2d(3, 4, 3).weight.data)
    with pytest.raises(ZeroDivisionError):
        with nn.init.skip_init():
            1 / 0
    assert nn.Conv2d(3, 4, 3).weight.data.any()                        # drawing again after the error


def test_skip_init_nests_and_profiles_the_same_as_a_drawn_model():
    from tinycnn.models import get_model
    from tinycnn.profile import profile

    with nn.init.skip_init():
        with nn.init.skip_init():
            pass
        skipped = get_model("mobilenet_v2", width_mult=0.5)           # still skipping after the inner block
        with nn.init.skip_init(False):                                 # an outer skip is not undone
            assert not nn.Conv2d(3, 4, 3).weight.data.any()
    assert not skipped.features[0][0].weight.data.any()
    with nn.init.skip_init(False):                                     # skip=False: the block changes nothing
        assert nn.Conv2d(3, 4, 3).weight.data.any()
    drawn = get_model("mobilenet_v2", width_mult=0.5)
    assert profile(skipped, (1, 3, 64, 64)).rows == profile(drawn, (1, 3, 64, 64)).rows


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name, factory, x_shape", LAYERS, ids=LAYER_IDS)
def test_backward_before_forward_raises_a_clear_runtime_error(name, factory, x_shape):
    layer = factory()
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        layer.backward(np.ones(x_shape, dtype=np.float32))


@pytest.mark.parametrize("name, factory, x_shape", LAYERS, ids=LAYER_IDS)
def test_backward_with_a_wrongly_shaped_gradient_names_the_expected_shape(name, factory, x_shape, rng):
    layer = factory()
    y = layer(rng.standard_normal(x_shape).astype(np.float32))
    wrong = np.ones(y.shape[:-1] + (y.shape[-1] + 1,), dtype=np.float32)
    with pytest.raises(ValueError, match=re.escape(f"grad_out must have the forward output's shape {tuple(y.shape)}")):
        layer.backward(wrong)


@pytest.mark.parametrize("layer, x_shape, message", [
    (nn.Conv2d(3, 8, 3), (2, 4, 5, 5), "expects 3 input channels"),
    (nn.ConvTranspose2d(3, 8, 3), (2, 4, 5, 5), "expects 3 input channels"),
    (nn.BatchNorm2d(3), (2, 4, 5, 5), "expects 3 input channels"),
    (nn.SqueezeExcitation(8, 2), (2, 4, 5, 5), "expects 8 input channels"),
    (nn.Linear(10, 2), (2, 12), r"expects input of shape \(N, 10\)"),
    (nn.Conv2d(3, 8, 3), (3, 5, 5), r"expects a 4-D input \(N, C, H, W\)"),
    (nn.Conv2d(3, 8, 3), (1, 3, 2, 2), "smaller than 1x1"),
    (nn.MaxPool2d(2), (2, 3, 5), "expects a 4-D input"),
], ids=["conv", "conv_transpose", "batchnorm", "se", "linear", "conv_3d_input", "conv_too_small", "maxpool_3d"])
def test_wrong_input_shape_raises_value_error_naming_the_shapes(layer, x_shape, message):
    with pytest.raises(ValueError, match=message):
        layer(np.ones(x_shape, dtype=np.float32))


def test_wrong_input_types_raise_type_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(TypeError, match=r"float32 parameters but the input is float64.*\.to\(np.float64\)"):
        conv(np.ones((1, 3, 4, 4)))
    with pytest.raises(TypeError, match="float32 or float64 input; got dtype int64"):
        nn.ReLU()(np.ones((1, 3, 4, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="numpy.ndarray input; got list"):
        nn.ReLU()([1.0, 2.0])


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "in_channels=3 must be divisible by groups=2"),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), "out_channels=6 must be divisible by groups=4"),
    (lambda: nn.Conv2d(3, 4, 0), "kernel_size must be >= 1"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2), "output_padding"),
    (lambda: nn.BatchNorm2d(0), "num_features must be a positive int"),
    (lambda: nn.Linear(0, 3), "in_features must be a positive int"),
    (lambda: nn.MaxPool2d(2, padding=2), "at most half of kernel_size"),
    (lambda: nn.AvgPool2d(2, ceil_mode=True), "supports only ceil_mode=False"),
    (lambda: nn.AdaptiveAvgPool2d(0), "output_size"),
    (lambda: nn.Dropout(1.5), r"must be in \[0, 1\]"),
    (lambda: nn.Upsample(size=4, scale_factor=2), "exactly one of size and scale_factor"),
    (lambda: nn.Upsample(scale_factor=2, mode="bicubic"), "'nearest' or 'bilinear'"),
    (lambda: nn.Upsample(scale_factor=2, align_corners=True), "only be set with mode='bilinear'"),
    (lambda: nn.ChannelShuffle(0), "groups must be a positive int"),
], ids=["conv_groups_in", "conv_groups_out", "kernel0", "output_padding", "bn0", "linear0", "pool_padding",
        "avg_ceil", "adaptive0", "dropout_p", "upsample_both", "upsample_mode", "upsample_align", "shuffle0"])
def test_invalid_constructor_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_channel_shuffle_refuses_indivisible_channels():
    with pytest.raises(ValueError, match="channels divisible by 4"):
        nn.ChannelShuffle(4)(np.ones((1, 6, 2, 2), dtype=np.float32))


@pytest.mark.nojit
@pytest.mark.parametrize("block_channels", [1, 2, 5, 7])
def test_batch_norm_kernels_give_the_same_bits_for_any_block_of_channels(block_channels, rng):
    """The kernels split the channels into parallel blocks (kernels/batchnorm.py); each channel's sums
    run in the same order whatever the blocks, so every block size gives the same bits."""
    from kernels.batchnorm import batch_norm_train_backward_kernel, batch_norm_train_forward_kernel
    N, C, P = 3, 7, 5
    x = rng.standard_normal((N, C * P)).astype(np.float32)
    grad_out = rng.standard_normal((N, C * P)).astype(np.float32)
    weight, bias, scale = (rng.standard_normal(C).astype(np.float32) for _ in range(3))

    def run(block):
        y, x_hat, grad_x = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        mean, var, sums = np.empty(C), np.empty(C), np.empty((C, 2))
        batch_norm_train_forward_kernel(x, weight, bias, 1e-5, np.float32(-np.inf), np.float32(np.inf), block,
                                        y, x_hat, mean, var)
        no_clip = np.empty((0, 0), dtype=np.float32)
        batch_norm_train_backward_kernel(grad_out, x_hat, scale, no_clip, np.float32(-np.inf), np.float32(np.inf),
                                         block, grad_x, sums)
        return y, x_hat, mean, var, grad_x, sums

    for ours, whole in zip(run(block_channels), run(C)):
        np.testing.assert_array_equal(ours, whole)
    np.testing.assert_allclose(run(C)[2], x.reshape(N, C, P).mean(axis=(0, 2), dtype=np.float64), rtol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_second_backward_after_one_forward_raises(training, rng):
    bn = nn.BatchNorm2d(3).train(training)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    bn(x)
    bn.backward(np.ones_like(x))
    with pytest.raises(RuntimeError, match="called twice"):
        bn.backward(np.ones_like(x))


@pytest.mark.parametrize("plane", [3, 64])
@pytest.mark.parametrize("low, high", [(-np.inf, np.inf), (0.0, np.inf), (0.0, 0.5)])
def test_batch_norm_eval_is_one_affine_map_per_channel_for_any_block_of_channels(plane, low, high, rng):
    """Running statistics: y = clip(x * scale + shift, low, high) (kernels/batchnorm.py), whatever the
    parallel blocks, on short planes (constants spread along a run) and long ones (held per channel)."""
    from kernels.batchnorm import LONG_PLANE, batch_norm_affine_kernel
    N, C, P = 2, 5, plane
    assert (P >= LONG_PLANE) == (plane == 64)
    x = rng.standard_normal((N, C * P))
    scale, shift = rng.standard_normal(C), rng.standard_normal(C)
    expected = np.clip((x.reshape(N, C, P) * scale[:, None] + shift[:, None]).reshape(N, C * P), low, high)
    for block in (1, 2, C):
        y = np.empty_like(x)
        batch_norm_affine_kernel(x, scale, shift, low, high, block, y)
        np.testing.assert_array_equal(y, expected)
        in_place = x.copy()
        batch_norm_affine_kernel(in_place, scale, shift, low, high, block, in_place)
        np.testing.assert_array_equal(in_place, expected)


@pytest.mark.nojit
@pytest.mark.parametrize("running_dtype, dtype", [(np.float32, np.float32), (np.float64, np.float64),
                                                  (np.float32, np.float64)])
@pytest.mark.parametrize("momentum", [0.1, None, 1])
def test_batch_norm_running_statistics_are_the_numpy_expressions_bit_for_bit(running_dtype, dtype, momentum, rng):
    """The running-statistics update and 1/std run as one compiled call (kernels/batchnorm.py); they must
    give exactly what NumPy's ``((1 - f) * running + f * batch).astype(dtype)`` gives, in each dtype."""
    C, m = 6, 10
    bn = nn.BatchNorm2d(C, momentum=momentum, affine=False)
    bn.running_mean = rng.standard_normal(C).astype(running_dtype)
    bn.running_var = rng.random(C).astype(running_dtype) + 0.5
    bn.num_batches_tracked = np.array(2, dtype=np.int64)
    old_mean, old_var = bn.running_mean.copy(), bn.running_var.copy()
    mean, var = rng.standard_normal(C), rng.random(C)                         # the batch's, float64
    inv_std = bn._finish_batch_statistics(mean, var, m, np.dtype(dtype))
    factor = 1.0 / 3 if momentum is None else momentum
    np.testing.assert_array_equal(inv_std, (1.0 / np.sqrt(var + bn.eps)).astype(dtype))
    np.testing.assert_array_equal(bn.running_mean, ((1 - factor) * old_mean + factor * mean).astype(running_dtype))
    np.testing.assert_array_equal(bn.running_var,
                                  ((1 - factor) * old_var + factor * (var * (m / (m - 1)))).astype(running_dtype))
    assert bn.running_mean.dtype == running_dtype and bn.num_batches_tracked == 3


@pytest.mark.nojit
@pytest.mark.parametrize("running_dtype, dtype", [(np.float32, np.float32), (np.float64, np.float64),
                                                  (np.float32, np.float64)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_running_affine_is_the_numpy_expressions_bit_for_bit(running_dtype, dtype, affine, rng):
    """scale = weight / sqrt(running_var + eps) and shift = bias - running_mean * scale, one compiled call:
    the same bits as NumPy computing them in the same dtypes (the inverse square root in the running
    variance's dtype, as PyTorch's CPU kernel)."""
    C = 9
    bn = nn.BatchNorm2d(C, affine=affine, eps=1e-3).to(dtype)
    bn.running_mean = rng.standard_normal(C).astype(running_dtype)
    bn.running_var = rng.random(C).astype(running_dtype) + 0.01
    if affine:
        bn.weight.data, bn.bias.data = (rng.standard_normal(C).astype(dtype) for _ in range(2))
    scale, shift, inv_std = bn._running_affine(np.dtype(dtype))
    expected_inv_std = (1.0 / np.sqrt(bn.running_var + bn.eps)).astype(dtype)
    weight = bn.weight.data if affine else np.ones(C, dtype=dtype)
    bias = bn.bias.data if affine else np.zeros(C, dtype=dtype)
    np.testing.assert_array_equal(inv_std, expected_inv_std)
    np.testing.assert_array_equal(scale, weight * expected_inv_std)
    np.testing.assert_array_equal(shift, bias - bn.running_mean.astype(dtype) * (weight * expected_inv_std))
    assert scale.dtype == shift.dtype == inv_std.dtype == dtype


@pytest.mark.parametrize("in_features, out_features", [(20, 7), (1280, 1000)])
def test_linear_on_one_row_is_a_matrix_vector_product_that_agrees_with_the_batched_product(in_features,
                                                                                           out_features, monkeypatch):
    # one row goes to kernels._gemm.matrix_vector (BLAS gemv; a (1000, 1280) weight in row blocks on
    # numba's threads), several rows to NumPy's matrix product: the same values to float32 rounding
    import tinycnn.nn.linear as linear_module
    rng = np.random.default_rng(3)
    layer = nn.Linear(in_features, out_features)
    x = rng.standard_normal((3, in_features)).astype(np.float32)
    batched = layer(x)
    calls = []
    real = linear_module.matrix_vector
    monkeypatch.setattr(linear_module, "matrix_vector", lambda *args: calls.append(1) or real(*args))
    single = layer(x[1:2])
    assert calls == [1] and single.shape == (1, out_features) and single.dtype == np.float32
    np.testing.assert_allclose(single, batched[1:2], rtol=0, atol=1e-5 * np.abs(batched).max())
    assert layer(x[1]).shape == (out_features,)                     # a bare (in_features,) vector too
