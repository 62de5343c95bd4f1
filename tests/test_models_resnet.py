"""ResNet-18/50 and SE-ResNet-18/50 (the four SE placements of the SENet article).

Against PyTorch: tests/fixtures/models_resnet.npz (torchvision's ResNets; SE-ResNet-18 from the
independent definition in tools/torch_reference_se_resnet.py, every placement) and, when PyTorch is
installed, SE-ResNet-50 live. Then parameter counts (torchvision's, the SENet article's and its Eq. 5),
gradients by finite differences, learning, and invalid configurations.
"""
import functools
import json
import pathlib
import sys

import numpy as np
import pytest
from helpers import directional_gradcheck
from model_checks import check_model_case, load_model_cases

from tinycnn import optim
from tinycnn.data import make_shapes
from tinycnn.losses import CrossEntropyLoss
from tinycnn.models import get_model, list_models, resnet18, resnet50, se_resnet18, se_resnet50
from tinycnn.models.resnet import SE_POSITIONS
from tinycnn.nn import init
from tinycnn.testing import seeded_input, seeded_state_dict, train_without_dropout

TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"
CASES = load_model_cases("models_resnet.npz")

# torchvision 0.28: sum(p.numel() for p in model.parameters()) with the default 1000 classes
# (also listed in torchvision's model documentation: 11.7M and 25.6M).
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032}

# Stages of ResNet-18/50 as the SENet article's Eq. 5 counts them: (N_s blocks, C_s output channels).
STAGE_BLOCKS_AND_CHANNELS = {
    "se_resnet18": [(2, 64), (2, 128), (2, 256), (2, 512)],
    "se_resnet50": [(3, 256), (4, 512), (6, 1024), (3, 2048)],
}


@functools.lru_cache(maxsize=None)
def _count(name, **kwargs):
    """Parameters of ``get_model(name, **kwargs)`` (cached: building a 28M-parameter model takes a while)."""
    return sum(p.size for p in get_model(name, **kwargs).parameters())


# ---------------------------------------------------------------------------------------------- PyTorch fixtures
@pytest.mark.parametrize("case", list(CASES))
def test_matches_pytorch_fixture_float64(case):
    check_model_case(CASES[case], np.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_pytorch_fixture_float32(case):
    """Float32 runs the same code as float64, at a tolerance set by the case's own conditioning
    (``check_model_case``: a multiple of PyTorch's own float32 error, recorded in the fixture).

    ResNet-50's training-mode gradients are ill-conditioned with random weights and 2 images (batch
    norm normalises 8 numbers per channel in the last stage, 50 layers deep): PyTorch's own float32
    gradients on the same weights and input differ from its float64 ones by percents, so this checks
    them only loosely; the float64 test above checks them to 1e-8."""
    check_model_case(CASES[case], np.float32)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_state_dict_keys_shapes_and_order_equal_torchvisions(name):
    """Against torchvision's list stored in the fixture, so this runs without PyTorch."""
    expected = [(key, tuple(shape)) for key, shape in json.loads(str(CASES[name]["state_dict_shapes"]))]
    assert [(key, value.shape) for key, value in get_model(name).state_dict().items()] == expected


def test_state_dict_layout_equals_torchvision_and_the_se_reference_live():
    """Live twin of the test above, plus the SE reference's layout for every placement."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(TOOLS_DIR))
    import torch_reference_se_resnet as reference
    from model_fixtures import import_torchvision_models

    models = import_torchvision_models()
    pairs = [(models.resnet18(), resnet18()), (models.resnet50(), resnet50())]
    pairs += [(reference.se_resnet18(se_position=p), se_resnet18(se_position=p)) for p in SE_POSITIONS]
    for torch_model, ours in pairs:
        expected = [(key, tuple(t.shape)) for key, t in torch_model.state_dict().items()]
        assert [(key, value.shape) for key, value in ours.state_dict().items()] == expected


@pytest.mark.slow
def test_se_resnet50_matches_the_pytorch_reference_live():
    """SE-ResNet-50 (Bottleneck blocks with SE) against tools/torch_reference_se_resnet.py, float64.

    The fixture covers the four placements on SE-ResNet-18 and the Bottleneck on ResNet-50; this puts
    them together, with "pre", whose SE squeezes the block *input* (64 or 256 channels into a
    256-channel block), the other channel count.
    """
    pytest.importorskip("torch")
    sys.path.insert(0, str(TOOLS_DIR))
    import torch_reference_se_resnet as reference
    from model_fixtures import model_fixture

    kwargs = {"num_classes": 10, "se_position": "pre"}
    arrays = model_fixture("live", reference.se_resnet50(**kwargs), "se_resnet50", kwargs, (2, 3, 33, 33), 7,
                           ["bn1.weight", "layer1.0.se.fc1.weight", "layer4.2.se.fc2.bias"])
    case = {key.split("/", 2)[2]: value for key, value in arrays.items()}
    case["params"] = json.loads(str(case["params"]))
    check_model_case(case, np.float64)


# ---------------------------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_parameter_count_equals_torchvisions(name):
    assert _count(name) == TORCHVISION_PARAMS[name]


def test_se_resnet50_has_the_senet_articles_28_1_million_parameters():
    # Hu et al., arXiv:1709.01507 v4, Table 10 (r = 16) and Table 13 ("SE All"): 28.1M, rounded to 0.1M.
    count = _count("se_resnet50", reduction=16)
    assert count == 28_088_024
    assert abs(count - 28.1e6) <= 0.05e6


def _senet_eq5_added_parameters(stages, reduction):
    """Article Eq. 5, ``(2/r) * sum_s N_s * C_s**2`` weights, plus the two FC biases of each SE block."""
    weights = sum(2 * n * (c * (c // reduction)) for n, c in stages)        # = (2/r) N C^2 when r divides C
    biases = sum(n * (c // reduction + c) for n, c in stages)
    return weights, biases


@pytest.mark.parametrize("name, reduction", [("se_resnet18", 16), ("se_resnet18", 8), ("se_resnet50", 16)])
def test_se_adds_exactly_the_parameters_of_senet_equation_5(name, reduction):
    stages = STAGE_BLOCKS_AND_CHANNELS[name]
    weights, biases = _senet_eq5_added_parameters(stages, reduction)
    assert weights * reduction == 2 * sum(n * c * c for n, c in stages)   # Eq. 5 exactly: r divides every C_s
    added = _count(name, reduction=reduction) - _count(name.removeprefix("se_"))
    assert added == weights + biases


def test_se_resnet50_overhead_is_about_10_percent_and_4_percent_without_the_last_stage():
    # The SENet article (Sec. 4): ~10% more parameters; ~4% if the last stage has no SE blocks.
    stages = STAGE_BLOCKS_AND_CHANNELS["se_resnet50"]
    added = sum(_senet_eq5_added_parameters(stages, 16))
    without_last_stage = sum(_senet_eq5_added_parameters(stages[:-1], 16))
    base = TORCHVISION_PARAMS["resnet50"]
    assert 0.09 < added / base < 0.11
    assert 0.03 < without_last_stage / base < 0.05


def test_se_placements_standard_post_identity_have_equal_counts_and_pre_squeezes_block_inputs():
    counts = {p: _count("se_resnet18", se_position=p) for p in SE_POSITIONS}
    assert counts["standard"] == counts["post"] == counts["identity"] == 11_778_592
    # "pre": the first block of stages 2-4 squeezes its C_in = C_out / 2 input channels
    block_inputs = [64, 64, 64, 128, 128, 256, 256, 512]
    se_parameters = sum(2 * c * (c // 16) + c // 16 + c for c in block_inputs)
    assert counts["pre"] == TORCHVISION_PARAMS["resnet18"] + se_parameters


# ---------------------------------------------------------------------------------------------- gradients
NARROW = dict(num_classes=5, width_mult=0.125)       # stages of 8, 16, 32, 64 (x4 for Bottleneck) channels
GRADCHECK_MODELS = ([("resnet18", {}), ("resnet50", {})]
                    + [("se_resnet18", {"se_position": p}) for p in SE_POSITIONS]
                    + [("se_resnet50", {"se_position": "pre"})])


@pytest.mark.parametrize("name, kwargs", GRADCHECK_MODELS, ids=[f"{n}-{k.get('se_position', '')}" for n, k in
                                                                 GRADCHECK_MODELS])
def test_backward_matches_finite_differences_float64_narrow_32x32(name, kwargs):
    """Directional derivatives of ``L = sum(v * model(x))`` for the input and 4-6 parameters.

    Evaluation mode (random running statistics): in training mode at 32 x 32 with 2 images, the last
    stage's batch norm normalises 2 numbers per channel, which makes ``L`` nearly flat along the input
    and badly conditioned (training-mode gradients are checked against PyTorch above). eps = 1e-7, not
    1e-6: a random network has max-pool windows and ReLU inputs within ~1e-6 of a kink, and a central
    difference across a kink is off by up to 1% (seen for ``conv1.weight`` with eps = 1e-6). The
    rounding error grows as ~1e-16 |L| / eps; over 40 model/seed combinations the worst relative
    difference at eps = 1e-7 was 2e-6, against the tolerance 1e-5.
    """
    model = get_model(name, **NARROW, **kwargs).to(np.float64)
    model.load_state_dict(seeded_state_dict(model, seed=11))
    model.eval()
    x = seeded_input((2, 3, 32, 32), seed=11)
    upstream = np.random.default_rng(12).standard_normal((2, 5))
    model.zero_grad()
    model(x)
    grad_x = model.backward(upstream)

    checks = {"input": directional_gradcheck(lambda z: float(np.vdot(upstream, model(z))), x, grad_x, eps=1e-7)}
    parameters = dict(model.named_parameters())
    checked = ["conv1.weight", "layer2.0.bn2.weight", "layer3.0.downsample.0.weight", "fc.weight"]
    checked += ["layer1.0.se.fc1.weight", "layer4.0.se.fc2.weight"] if name.startswith("se_") else []
    for parameter_name in checked:
        parameter = parameters[parameter_name]
        original = parameter.data.copy()

        def loss_at(value, parameter=parameter, original=original):
            parameter.data[...] = value
            loss = float(np.vdot(upstream, model(x)))
            parameter.data[...] = original
            return loss

        checks[parameter_name] = directional_gradcheck(loss_at, original, parameter.grad.copy(), eps=1e-7)
    for what, (analytic, numeric) in checks.items():
        assert abs(analytic - numeric) <= 1e-5 * max(abs(analytic), abs(numeric)) + 1e-12, \
            f"{what}: analytic {analytic!r} vs numeric {numeric!r}"


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "se_resnet18", "se_resnet50"])
def test_overfits_a_fixed_batch_of_8_shapes(name):
    """Ten Adam steps on 8 procedural images (10 classes): the loss must fall below half its start.

    (Measured: every model ends below a quarter of its starting loss, most near 0.01.)
    """
    init.manual_seed(0)
    model = get_model(name, num_classes=10, width_mult=0.125)
    x, y = make_shapes(8, seed=0)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    criterion = CrossEntropyLoss()
    train_without_dropout(model)
    losses = []
    for _ in range(10):
        model.zero_grad()
        losses.append(criterion(model(x), y))
        model.backward(criterion.backward())
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


# ---------------------------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "se_resnet18", "se_resnet50"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backward_at_32x32_and_odd_sizes_in_both_dtypes(name, dtype):
    model = get_model(name, **NARROW).to(dtype)
    for shape in [(2, 3, 32, 32), (2, 3, 17, 23)]:
        x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        y = model(x)
        assert y.shape == (2, 5) and y.dtype == dtype and np.all(np.isfinite(y))
        grad_x = model.backward(np.ones_like(y))
        assert grad_x.shape == shape and grad_x.dtype == dtype


def test_resnet_weights_load_into_se_resnet_with_only_the_se_entries_missing():
    plain, with_se = resnet18(**NARROW), se_resnet18(**NARROW)
    result = with_se.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(".se." in key for key in result.missing_keys)
    assert len(result.missing_keys) == 8 * 4                  # 8 blocks x (fc1, fc2) x (weight, bias)
    se_keys = [key for key in with_se.state_dict() if ".se." in key]
    assert se_keys[:4] == ["layer1.0.se.fc1.weight", "layer1.0.se.fc1.bias",
                           "layer1.0.se.fc2.weight", "layer1.0.se.fc2.bias"]


def test_repr_shows_blocks_and_se_placement():
    text = repr(se_resnet50(se_position="pre", **NARROW))
    assert "Bottleneck(\n" in text and "8 -> 32, stride=1, se_position='pre'" in text   # layer1.0
    assert "SqueezeExcitation" in text and "(downsample): Sequential" in text
    assert "BasicBlock(" in repr(resnet18(**NARROW)) and "SqueezeExcitation" not in repr(resnet18(**NARROW))


def test_models_are_registered():
    assert {"resnet18", "resnet50", "se_resnet18", "se_resnet50"} <= set(list_models())
    model = get_model("se_resnet18", se_position="identity", reduction=8, **NARROW)
    assert model.layer1[0].se_position == "identity"
    assert model.layer1[0].se.fc1.out_channels == 1          # 8 channels // 8


@pytest.mark.nojit
@pytest.mark.parametrize("builder, kwargs, match", [
    (se_resnet18, {"se_position": "middle"}, "se_position"),
    (se_resnet50, {"se_position": None}, "se_position"),
    (se_resnet18, {"reduction": 0}, "reduction"),
    (se_resnet18, {"reduction": -4}, "reduction"),
    (se_resnet18, {"reduction": 1.5}, "reduction"),
    (se_resnet18, {"reduction": True}, "reduction"),
    (resnet18, {"width_mult": 0}, "width_mult"),
    (resnet50, {"width_mult": -0.5}, "width_mult"),
    (resnet18, {"num_classes": 0}, "num_classes"),
    (se_resnet50, {"num_classes": 2.5}, "num_classes"),
])
def test_invalid_configurations_raise_value_error(builder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        builder(**kwargs)
