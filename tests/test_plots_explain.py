"""plots for looking inside a network: filters and feature maps of any layer of any model, Grad-CAM overlays."""
import numpy as np
import pytest

from test_plots_training import _assert_small_png
from tinycnn import models, nn, plots
from tinycnn.explain import default_cam_layer, grad_cam, saliency_map

ZOO_SAMPLE = [("mobilenet_v2", {"width_mult": 0.25}), ("squeezenet1_1", {}),
              ("shufflenet_v2_x0_5", {}), ("mobilenet_v3_small", {"width_mult": 0.5})]


def _conv_names(model):
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


@pytest.mark.parametrize("name, kwargs", ZOO_SAMPLE)
def test_filters_and_feature_maps_of_any_named_layer_of_zoo_models(tmp_path, name, kwargs):
    nn.init.manual_seed(0)
    model = models.get_model(name, num_classes=4, **kwargs)
    convs = _conv_names(model)
    middle = convs[len(convs) // 2]                               # a deep conv: depthwise, grouped or 1x1
    weight = model.get_submodule(middle).weight.data
    figure = plots.plot_filters(model, layer_name=middle, max_filters=16)
    assert len([ax for ax in figure.axes if ax.images]) == min(16, weight.shape[0])
    assert middle in figure._suptitle.get_text()
    block = default_cam_layer(model, (1, 3, 32, 32))             # a whole block or stage, not a conv
    image = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    maps = plots.plot_feature_maps(model, image, layer_name=block, channels=8)
    assert block in maps._suptitle.get_text()
    _assert_small_png(plots.save_figure(maps, tmp_path / "maps.png"))


def test_plot_filters_names_a_missing_or_non_convolution_layer():
    model = models.mobilenet_v2(num_classes=3, width_mult=0.25)
    with pytest.raises(ValueError, match="no layer 'features.99'.*features.0.0"):
        plots.plot_filters(model, layer_name="features.99")
    with pytest.raises(ValueError, match="'features.0.1' is a BatchNorm2d, not a Conv2d"):
        plots.plot_filters(model, layer_name="features.0.1")


def test_plot_grad_cam_overlays_the_heat_map_and_shows_the_saliency(tmp_path):
    nn.init.manual_seed(0)
    model = models.mobilenet_v2(num_classes=3, width_mult=0.25)
    picture = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = (picture.transpose(2, 0, 1) / 255).astype(np.float32)
    result = grad_cam(model, x, layer="features.10")
    saliency, _ = saliency_map(model, x, target_class=result.target_class)
    figure = plots.plot_grad_cam(picture, result.heatmap, saliency, title="class 0")
    assert [len(ax.images) for ax in figure.axes] == [1, 2, 1]       # photo; photo + heat map; saliency
    _assert_small_png(plots.save_figure(figure, tmp_path / "cam.png"))
    with pytest.raises(ValueError, match=r"heatmap shape \(7, 7\) differs from the image's \(32, 32\)"):
        plots.plot_grad_cam(picture, np.zeros((7, 7)))
