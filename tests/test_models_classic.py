"""The networks the articles compare against: AlexNet, VGG-16, ResNeXt-50 (32x4d), SE-ResNeXt-50.

Against PyTorch: tests/fixtures/models_classic.npz (torchvision's models; SE-ResNeXt from the SE
reference in tools/torch_reference_se_resnet.py), float64 and float32, and live when PyTorch is
installed. Then the published parameter and MAC counts through the profiler, the articles' comparisons
(SqueezeNet vs AlexNet, MobileNet vs VGG-16, SE-ResNeXt's overhead), gradients, adaptive pooling and
invalid configurations.

AlexNet and VGG-16 hold 61M and 138M parameters; each is built once per session (``_full``) and
profiled by shapes only. Their numerical checks use the published convolutions with a narrow
classifier (``hidden=64``) at the smallest input their strides allow.
"""
import functools
import json
import pathlib
import sys

import numpy as np
import pytest
from helpers import directional_gradcheck
from model_checks import check_model_case, load_model_cases

from tinycnn import nn
from tinycnn.models import get_model, list_models
from tinycnn.models.resnet import BasicBlock, ResNet
from tinycnn.profile import profile
from tinycnn.testing import seeded_input, seeded_state_dict

TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"
CASES = load_model_cases("models_classic.npz")

@functools.lru_cache(maxsize=None)
def _full(name):
    """The published model (1000 classes), built once and without drawing its weights (only shapes and
    counts are read): drawing VGG-16's 138M weights takes seconds."""
    with nn.init.skip_init():
        return get_model(name)


@functools.lru_cache(maxsize=None)
def _profile(name):
    return profile(_full(name), (1, 3, 224, 224))


# ---------------------------------------------------------------------------------------------- PyTorch fixtures
@pytest.mark.parametrize("case", list(CASES))
def test_matches_pytorch_fixture_float64(case):
    check_model_case(CASES[case], np.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_pytorch_fixture_float32_within_a_multiple_of_pytorchs_own_float32_error(case):
    """Tolerance per quantity from the error of PyTorch's own float32 runs recorded in the fixture
    (``tests/helpers.py: float32_tolerance``)."""
    check_model_case(CASES[case], np.float32)


def test_resnext_state_dict_keys_shapes_and_order_equal_torchvisions():
    expected = [(key, tuple(shape)) for key, shape in json.loads(str(CASES["resnext50_32x4d"]["state_dict_shapes"]))]
    assert [(key, value.shape) for key, value in get_model("resnext50_32x4d").state_dict().items()] == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_alexnet_and_vgg16_state_dict_layout_equals_torchvisions(name):
    """The full 1000-class models against torchvision's keys and shapes stored in the fixture."""
    expected = [(key, tuple(shape)) for key, shape in json.loads(str(CASES[name]["state_dict_shapes"]))]
    assert [(key, value.shape) for key, value in _full(name).state_dict().items()] == expected


def test_matches_torchvision_live():
    """Live twin of the fixtures: the narrow AlexNet against torchvision (float64, new seed), and the
    layout of SE-ResNeXt-50 against the SE reference (ResNeXt-50's is checked against the fixture)."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(TOOLS_DIR))
    import fixtures_models_classic as generator
    import torch_reference_se_resnet as reference
    from model_fixtures import import_torchvision_models, model_fixture

    models = import_torchvision_models()
    case, torch_model, our_name, kwargs, input_shape, checked, _ = generator.alexnet_case(models)
    arrays = model_fixture("live", torch_model, our_name, kwargs, input_shape, 5, checked)
    live = {key.split("/", 2)[2]: value for key, value in arrays.items()}
    live["params"] = json.loads(str(live["params"]))
    check_model_case(live, np.float64)
    expected = [(key, tuple(t.shape)) for key, t in reference.se_resnext50_32x4d().state_dict().items()]
    assert [(key, value.shape) for key, value in _full("se_resnext50_32x4d").state_dict().items()] == expected


# ---------------------------------------------------------------------------------------------- published figures
def test_alexnet_has_61_1_million_parameters():
    p = _profile("alexnet")
    assert p.params == 61_100_840 and round(p.params / 1e6, 1) == 61.1
    assert p.unaccounted == []
    fc = sum(row.params for row in p.rows if row.kind == "fc")
    assert fc / p.params > 0.95                         # the fully connected layers hold the parameters
    assert p.macs == 714_188_480                       # conv 655.1M + fc 58.6M, torchvision's 0.71 GFLOPS


def test_vgg16_has_138_4_million_parameters_and_15_5_g_macs():
    p = _profile("vgg16")
    assert p.params == 138_357_544 and round(p.params / 1e6, 1) == 138.4
    assert round(p.macs / 1e9, 1) == 15.5 and p.unaccounted == []
    # receptive field of pool5, google-research/receptive_field's table: 212, stride 32, padding 90
    pool5 = next(row for row in p.rows if row.name == "features.30")
    assert pool5.receptive_field == (212, 212) and pool5.rf_stride == (32, 32)
    assert pool5.rf_center == (-90 + (212 - 1) / 2,) * 2


def test_resnext50_has_25_0_million_parameters_and_4_2_g_macs():
    p = _profile("resnext50_32x4d")
    assert p.params == 25_028_904 and round(p.params / 1e6, 1) == 25.0
    assert round(p.macs / 1e9, 1) == 4.2 and p.unaccounted == []
    assert any(row.kind == "group conv 3x3" for row in p.rows)


def test_the_articles_comparisons_are_computable():
    squeezenet = profile(get_model("squeezenet1_0"), (1, 3, 224, 224))
    assert _profile("alexnet").params / squeezenet.params > 48           # "50x fewer parameters than AlexNet"
    mobilenet = profile(get_model("mobilenet_v1"), (1, 3, 224, 224))
    vgg = _profile("vgg16")
    assert round(vgg.params / mobilenet.params) == 33                   # MobileNet V1 Table 10: 4.2M vs 138M
    assert round(vgg.macs / mobilenet.macs) == 27                        # 569M vs 15.3G Mult-Adds
    resnext, se = _profile("resnext50_32x4d"), _profile("se_resnext50_32x4d")
    assert se.params == 27_559_896 and round(se.params / 1e6, 2) == 27.56   # SENet Table 2: 27.56M
    assert se.params - resnext.params == 2_530_992                      # the same SE blocks as SE-ResNet-50
    assert se.macs / resnext.macs < 1.001                               # SE's arithmetic overhead is tiny


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", ["resnext50_32x4d", "se_resnext50_32x4d", "alexnet", "vgg16"])
def test_backward_matches_finite_differences_float64(name):
    """Directional derivatives of ``L = sum(v * model(x))`` (evaluation mode, eps 1e-7 as the ResNet
    check explains), for the input and a grouped-convolution or classifier weight."""
    kwargs = {"resnext50_32x4d": {"width_mult": 0.5, "num_classes": 5},
              "se_resnext50_32x4d": {"width_mult": 0.5, "num_classes": 5},
              "alexnet": {"hidden": 16, "num_classes": 5}, "vgg16": {"hidden": 16, "num_classes": 5}}[name]
    size = 63 if name == "alexnet" else 32
    model = get_model(name, **kwargs).to(np.float64)
    model.load_state_dict(seeded_state_dict(model, seed=3))
    model.eval()
    x = seeded_input((1, 3, size, size), seed=3)
    upstream = np.random.default_rng(4).standard_normal((1, 5))
    model.zero_grad()
    model(x)
    grad_x = model.backward(upstream)
    checks = {"input": directional_gradcheck(lambda z: float(np.vdot(upstream, model(z))), x, grad_x, eps=1e-7)}
    checked = {"alexnet": "features.3.weight", "vgg16": "classifier.0.weight"}.get(name, "layer2.0.conv2.weight")
    parameter = dict(model.named_parameters())[checked]
    original = parameter.data.copy()

    def loss_at(value):
        parameter.data[...] = value
        loss = float(np.vdot(upstream, model(x)))
        parameter.data[...] = original
        return loss

    checks[checked] = directional_gradcheck(loss_at, original, parameter.grad.copy(), eps=1e-7)
    for what, (analytic, numeric) in checks.items():
        assert abs(analytic - numeric) <= 1e-5 * max(abs(analytic), abs(numeric)) + 1e-12, \
            f"{what}: analytic {analytic!r} vs numeric {numeric!r}"


# ---------------------------------------------------------------------------------------------- adaptive pooling
@pytest.mark.parametrize("input_size, output_size", [((7, 7), 7), ((1, 1), (7, 7)), ((10, 13), (3, 4)),
                                                     ((5, 6), (6, 6))])
def test_adaptive_avg_pool_gradient_by_finite_differences(input_size, output_size):
    pool = nn.AdaptiveAvgPool2d(output_size)
    x = np.random.default_rng(0).standard_normal((2, 3, *input_size))
    upstream = np.random.default_rng(1).standard_normal(pool(x).shape)
    grad_x = pool.backward(upstream)
    analytic, numeric = directional_gradcheck(lambda z: float(np.vdot(upstream, pool(z))), x, grad_x)
    assert abs(analytic - numeric) <= 1e-8 * max(1.0, abs(analytic))


def test_adaptive_avg_pool_matches_pytorch_live():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((2, 3, 10, 13))
    for output_size in [(3, 4), (7, 7), 1, (13, 5)]:
        ours = nn.AdaptiveAvgPool2d(output_size)
        expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), output_size).numpy()
        np.testing.assert_allclose(ours(x), expected, rtol=1e-12, atol=1e-12)
        t = torch.from_numpy(x).requires_grad_(True)
        upstream = np.random.default_rng(3).standard_normal(expected.shape)
        torch.nn.functional.adaptive_avg_pool2d(t, output_size).backward(torch.from_numpy(upstream))
        np.testing.assert_allclose(ours.backward(upstream), t.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_adaptive_avg_pool_profile_counts_each_bin():
    p = profile(nn.AdaptiveAvgPool2d((2, 2)), (1, 1, 3, 3))
    assert p.rows[0].output_shape == (1, 1, 2, 2)
    assert p.flops == 4 * 4                            # four overlapping 2x2 bins of a 3x3 map


# ---------------------------------------------------------------------------------------------- registry, errors
def test_models_are_registered():
    for name in ("alexnet", "vgg16", "resnext50_32x4d", "se_resnext50_32x4d"):
        assert name in list_models()


@pytest.mark.parametrize("make, match", [
    (lambda: get_model("alexnet", hidden=0), "hidden must be a positive int"),
    (lambda: get_model("vgg16", num_classes=0), "num_classes must be a positive int"),
    (lambda: get_model("resnext50_32x4d", width_mult=0.125), "channel per group"),
    (lambda: get_model("se_resnext50_32x4d", se_position="after"), "se_position must be one of"),
    (lambda: BasicBlock(8, 8, groups=2), "BasicBlock supports only groups=1"),
    (lambda: ResNet(50, groups=0), "groups must be a positive int"),
])
def test_invalid_configurations_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_alexnet_rejects_inputs_below_its_smallest_size():
    model = get_model("alexnet", hidden=8, num_classes=2)
    assert model(np.zeros((1, 3, 63, 63), dtype=np.float32)).shape == (1, 2)
    with pytest.raises(ValueError, match="at least 63 x 63"):
        model(np.zeros((1, 3, 62, 62), dtype=np.float32))
