"""tinycnn.explain: Grad-CAM and saliency from our backward pass."""
import numpy as np
import pytest

from tinycnn import nn
from tinycnn.explain import default_cam_layer, grad_cam, saliency_map


def _small_model(seed=0):
    """Conv -> BN -> ReLU -> Conv -> ReLU -> GAP -> Linear, float64, random BN statistics."""
    nn.init.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 5, 3, padding=1, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).to(np.float64)
    rng = np.random.default_rng(seed)
    model[1].running_mean[...] = rng.normal(size=4)
    model[1].running_var[...] = rng.uniform(0.5, 2.0, size=4)
    return model.eval()


def _logits_with_layer_output(model, x, layer, replacement):
    """``model(x)`` with the output of ``layer`` replaced (a forward hook that returns a value)."""
    handle = layer.register_forward_hook(lambda module, inputs, output: replacement(output))
    try:
        return model(x)[0]
    finally:
        handle.remove()


@pytest.mark.parametrize("layer_name, target", [("2", 0), ("2", 2), ("4", 1)])
def test_channel_weights_equal_finite_differences_of_the_class_score(layer_name, target):
    """alpha_k = mean_ij dy_c/dA_k[i,j] = (1/hw) * the derivative of y_c along "all of map k up by one"."""
    model = _small_model()
    x = np.random.default_rng(1).normal(size=(1, 3, 9, 9))
    result = grad_cam(model, x, target_class=target, layer=layer_name)
    layer = model.get_submodule(layer_name)
    K, h, w = result.activations.shape
    eps = 1e-6
    numeric = np.empty(K)
    for k in range(K):
        direction = np.zeros((1, K, h, w))
        direction[0, k] = 1.0                                      # raise every pixel of map k
        plus = _logits_with_layer_output(model, x, layer, lambda A: A + eps * direction)[target]
        minus = _logits_with_layer_output(model, x, layer, lambda A: A - eps * direction)[target]
        numeric[k] = (plus - minus) / (2 * eps) / (h * w)
    # float64 central differences of a piecewise-linear function: error ~ eps^2 plus rounding ~ 1e-16/eps
    np.testing.assert_allclose(result.weights, numeric, rtol=1e-6, atol=1e-9)
    assert np.any(result.weights != 0)


def test_cam_is_the_relu_of_the_weighted_maps_and_heatmap_spans_0_to_1():
    model = _small_model()
    x = np.random.default_rng(2).normal(size=(3, 9, 9))
    result = grad_cam(model, x, target_class=1, layer="2")
    expected = np.maximum(np.einsum("k,khw->hw", result.weights, result.activations), 0)
    np.testing.assert_allclose(result.cam, expected, rtol=1e-12)
    assert result.heatmap.shape == (9, 9) and result.heatmap.max() == pytest.approx(1.0)
    assert result.heatmap.min() >= 0


def _red_green_detector():
    """Channel 0 fires on red pixels, channel 1 on green; class 0 = "red", class 1 = "green"."""
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(2, 2)).to(np.float64)
    model[0].weight.data[...] = np.array([[1, -1, -1], [-1, 1, -1]], dtype=float)[:, :, None, None]
    model[0].bias.data[...] = 0
    model[4].weight.data[...] = [[1.0, -1.0], [-1.0, 1.0]]
    model[4].bias.data[...] = 0
    return model.eval()


def test_the_map_peaks_where_the_region_that_drives_the_class_is():
    """A red square drives class 0 and a green one class 1: each class's map lights up its own square."""
    image = np.zeros((3, 16, 16))
    image[0, 2:6, 9:13] = 1.0             # red square, top right
    image[1, 10:14, 2:6] = 1.0            # green square, bottom left
    model = _red_green_detector()
    for target, rows, cols in ((0, slice(2, 6), slice(9, 13)), (1, slice(10, 14), slice(2, 6))):
        result = grad_cam(model, image, target_class=target, layer="1")
        peak = np.unravel_index(np.argmax(result.heatmap), result.heatmap.shape)
        assert rows.start <= peak[0] < rows.stop and cols.start <= peak[1] < cols.stop
        inside = np.zeros((16, 16), dtype=bool)
        inside[rows, cols] = True
        assert result.heatmap[~inside].max() < 0.5 * result.heatmap[inside].mean()
        saliency, _ = saliency_map(model, image, target_class=target)
        assert saliency[inside].min() > 0 and saliency[~inside].max() <= saliency[inside].min()
    assert grad_cam(model, image, layer="1").target_class in (0, 1)      # default: the predicted class


def test_parameter_gradients_and_model_are_unchanged():
    model = _small_model()
    for parameter in model.parameters():
        parameter.grad[...] = 0.25
    x = np.random.default_rng(3).normal(size=(3, 9, 9))
    before = model(x[None]).copy()
    grad_cam(model, x, layer="4")
    saliency_map(model, x)
    assert all(np.all(parameter.grad == 0.25) for parameter in model.parameters())
    assert "backward" not in model[4].__dict__                   # the recording wrapper is gone
    np.testing.assert_array_equal(model(x[None]), before)


def test_default_layer_is_the_last_feature_map_larger_than_one_pixel():
    model = _small_model()
    assert default_cam_layer(model, (1, 3, 9, 9)) == "4"
    assert grad_cam(model, np.zeros((3, 9, 9))).layer == "4"


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": "nope"}, "no layer 'nope' in Sequential"),
    ({"layer": "7"}, r"layer '7' outputs shape \(1, 3\), not \(1, K, h, w\)"),
    ({"target_class": 3}, r"target_class must be an int in \[0, 3\); got 3"),
    ({"image": np.zeros((2, 3, 9, 9))}, "one float image"),
    ({"image": np.zeros((3, 9, 9), dtype=np.uint8)}, "one float image"),
])
def test_bad_arguments_raise_clear_value_errors(kwargs, match):
    arguments = {"image": np.zeros((3, 9, 9))}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        grad_cam(_small_model(), **arguments)
