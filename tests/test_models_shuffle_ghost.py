"""ShuffleNet V1/V2, GhostNet and SqueezeNet: reference outputs, layouts, parameter counts, gradients, training.

References (``tools/fixtures_models_shuffle_ghost.py`` made the fixture): torchvision for ShuffleNet V2 and
SqueezeNet, ``tools/torch_reference_shuffle_ghost.py`` for ShuffleNet V1 (an independent PyTorch definition
from the paper) and timm's ``ghostnet_100`` for GhostNet. Live tests re-check against torchvision/timm
when they can be imported.
"""
import json
import pathlib
import sys

import numpy as np
import pytest
from helpers import directional_gradcheck
from model_checks import check_model_case, load_model_cases

from tinycnn import nn, optim
from tinycnn.data import make_shapes
from tinycnn.losses import CrossEntropyLoss
from tinycnn.models import get_model, list_models
from tinycnn.models.ghostnet import GhostBottleneck, GhostModule, GhostNet
from tinycnn.models.shufflenet_v1 import ShuffleBlock, stage_widths
from tinycnn.models.shufflenet_v2 import ShuffleNetV2, ShuffleV2Block
from tinycnn.models.squeezenet import MIN_INPUT_SIZE, Fire
from tinycnn.testing import seeded_input, seeded_state_dict, train_without_dropout

TOOLS_DIR = pathlib.Path(__file__).resolve().parent.parent / "tools"
FIXTURE_FILE = "models_shuffle_ghost.npz"
CASES = load_model_cases(FIXTURE_FILE)

# Every builder of this file's families, with its default arguments.
BUILDERS = ["shufflenet_v1", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
            "shufflenet_v2_x2_0", "ghostnet", "squeezenet1_0", "squeezenet1_1"]

# torchvision's parameter counts (sum of p.numel() over torchvision 0.28's models; also the figures in
# torchvision's model documentation: 1.4M, 2.3M, 3.5M, 7.4M, 1.2M, 1.2M).
TORCHVISION_PARAMS = {
    "shufflenet_v2_x0_5": 1_366_792,
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
}

# Narrow versions for gradient checks and training: few channels, 10 classes.
NARROW = {
    "shufflenet_v1": lambda: get_model("shufflenet_v1", num_classes=10, groups=3, width_mult=0.2),  # 48/96/192
    "shufflenet_v2": lambda: ShuffleNetV2((8, 16, 32, 64), num_classes=10),
    "ghostnet": lambda: get_model("ghostnet", num_classes=10, width_mult=0.1),
    "squeezenet1_1": lambda: get_model("squeezenet1_1", num_classes=10),     # no width knob: the real one
}


def _n_params(model):
    return sum(p.size for p in model.parameters())


def _shapes(model):
    return [[key, list(np.shape(value))] for key, value in model.state_dict().items()]


def _import_tools(name):
    if str(TOOLS_DIR) not in sys.path:
        sys.path.insert(0, str(TOOLS_DIR))
    return __import__(name)


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_model_matches_pytorch_reference_fixture(case, dtype):
    """Eval logits, train logits, input gradient and named parameter gradients vs PyTorch.

    Tolerances: float64 1e-8; float32 a multiple of PyTorch's own float32 error on the case
    (``check_model_case``; batch-norm models use 34 x 34 inputs: at 32 x 32 the last stage is 1 x 1 and
    train-mode batch norm over 2 values cancels the gradient).
    """
    check_model_case(CASES[case], dtype)


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_keys_shapes_and_order_equal_the_reference(case):
    """Keys, shapes and order equal the reference model's (torchvision / timm / tools), 1000 classes."""
    params = CASES[case]["params"]
    kwargs = {k: v for k, v in params["kwargs"].items() if k != "num_classes"}
    expected = json.loads(str(CASES[case]["state_dict_shapes"]))
    assert _shapes(get_model(params["model"], **kwargs)) == expected


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
                                  "shufflenet_v2_x2_0"])
def test_shufflenet_v2_every_size_has_torchvisions_keys_shapes_and_order(name):
    expected = json.loads(str(CASES["shufflenet_v2_x1_0"]["state_dict_shapes_all_sizes"]))[name]
    assert _shapes(get_model(name)) == expected


def test_numpy_state_dict_with_num_batches_tracked_loads_strict():
    """A torchvision-style state dict (NumPy arrays, ``num_batches_tracked`` included) loads strictly."""
    model = get_model("shufflenet_v2_x1_0")
    state = seeded_state_dict(model, seed=3, dtype=np.float32)
    assert any(key.endswith("num_batches_tracked") for key in state)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    np.testing.assert_array_equal(model.state_dict()["stage3.0.branch1.0.weight"], state["stage3.0.branch1.0.weight"])


# ------------------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_equals_torchvision(name):
    assert _n_params(get_model(name)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("groups, width_mult, published_millions", [
    # The paper (arXiv:1707.01083) reports complexity only (Table 2: 140 MFLOPs at 1x); the authors'
    # code (megvii-model/ShuffleNet-Series, ShuffleNetV1 README) lists 1.9M (1.0x, g=3), 2.4M (1.0x, g=8),
    # 3.4M (1.5x, g=3), 0.7M (0.5x, g=3; their 0.5x also halves the stem, 0.01M fewer).
    (3, 1.0, 1.9), (8, 1.0, 2.4), (3, 1.5, 3.4), (3, 0.5, 0.7),
])
def test_shufflenet_v1_parameter_count_matches_published(groups, width_mult, published_millions):
    count = _n_params(get_model("shufflenet_v1", groups=groups, width_mult=width_mult))
    assert round(count / 1e6, 1) == published_millions


def test_shufflenet_v1_1x_g3_parameter_count_is_exact():
    """Our count equals the tools/ PyTorch reference's (checked live below): 1,865,728 (1.87M)."""
    assert _n_params(get_model("shufflenet_v1")) == 1_865_728


def test_ghostnet_parameter_count_matches_paper_and_timm():
    """Paper Table 7 (arXiv:1911.11907): GhostNet 1.0x has 5.2M parameters; timm's ghostnet_100: 5,182,508."""
    count = _n_params(get_model("ghostnet"))
    assert count == 5_182_508
    assert round(count / 1e6, 1) == 5.2


def test_shufflenet_v1_stage_widths_are_table_1_at_1x():
    """Table 1 of arXiv:1707.01083, output channels of Stages 2-4 for g = 1, 2, 3, 4, 8."""
    assert [stage_widths(g) for g in (1, 2, 3, 4, 8)] == [
        (144, 288, 576), (200, 400, 800), (240, 480, 960), (272, 544, 1088), (384, 768, 1536)]
    assert stage_widths(3, 0.5) == (120, 240, 480)


# ----------------------------------------------------------------------------------- live PyTorch checks
@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_live_torchvision_keys_count_and_logits_match(name):
    torch = pytest.importorskip("torch")
    model_fixtures = _import_tools("model_fixtures")
    torch_model = getattr(model_fixtures.import_torchvision_models(), name)()
    assert _shapes(get_model(name)) == [[k, list(v.shape)] for k, v in torch_model.state_dict().items()]
    assert sum(p.numel() for p in torch_model.parameters()) == TORCHVISION_PARAMS[name]
    # the real torchvision state dict, converted to NumPy, loads strictly and gives the same logits
    model_fixtures.load_seeded_weights(torch_model, seed=5).eval()
    ours = get_model(name).to(np.float64)
    ours.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()}, strict=True)
    x = seeded_input((1, 3, 32, 32), seed=5)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.eval()(x), expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_live_shufflenet_v1_reference_count_equals_ours():
    pytest.importorskip("torch")
    reference = _import_tools("torch_reference_shuffle_ghost")
    for groups in (1, 2, 3, 4, 8):
        torch_model = reference.ShuffleNetV1(groups=groups)
        assert sum(p.numel() for p in torch_model.parameters()) == _n_params(get_model("shufflenet_v1", groups=groups))


def test_live_timm_ghostnet_100_weights_load_and_logits_match():
    torch = pytest.importorskip("torch")
    reference = _import_tools("torch_reference_shuffle_ghost")
    timm_ghostnet = reference.import_timm_ghostnet()
    if timm_ghostnet is None:
        pytest.skip("timm is not installed")
    timm_model = timm_ghostnet.ghostnet_100()                     # unmodified: timm's own gates and dropout
    assert _shapes(get_model("ghostnet")) == [[k, list(v.shape)] for k, v in timm_model.state_dict().items()]
    _import_tools("model_fixtures").load_seeded_weights(timm_model, seed=6).eval()
    ours = get_model("ghostnet").to(np.float64)
    ours.load_state_dict({k: v.numpy() for k, v in timm_model.state_dict().items()}, strict=True)
    x = seeded_input((1, 3, 32, 32), seed=6)
    with torch.no_grad():
        expected = timm_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.eval()(x), expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_live_torchvision_squeezenet_smallest_input_agrees_with_ours():
    torch = pytest.importorskip("torch")
    models = _import_tools("model_fixtures").import_torchvision_models()
    for version, size in MIN_INPUT_SIZE.items():
        torch_model = getattr(models, f"squeezenet{version}")().eval()
        with torch.no_grad():
            assert torch_model(torch.zeros(1, 3, size, size)).shape == (1, 1000)
            with pytest.raises(RuntimeError):
                torch_model(torch.zeros(1, 3, size - 1, size - 1))


# ------------------------------------------------------------------------------------- forward, backward
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", BUILDERS)
def test_forward_and_backward_at_32x32(name, dtype):
    model = train_without_dropout(get_model(name, num_classes=7).to(dtype))
    x = seeded_input((2, 3, 32, 32), seed=1, dtype=dtype)
    logits = model(x)
    assert logits.shape == (2, 7) and logits.dtype == dtype
    grad_x = model.backward(np.ones_like(logits))
    assert grad_x.shape == x.shape and grad_x.dtype == dtype and np.all(np.isfinite(grad_x))


@pytest.mark.parametrize("name", ["shufflenet_v1", "shufflenet_v2_x0_5", "ghostnet"])
def test_padded_models_accept_small_and_non_square_inputs(name):
    model = get_model(name, num_classes=3).eval()
    assert model(seeded_input((1, 3, 8, 20), seed=2, dtype=np.float32)).shape == (1, 3)


@pytest.mark.parametrize("version", ["1_0", "1_1"])
def test_squeezenet_smallest_input_works_and_smaller_raises(version):
    model = get_model(f"squeezenet{version}", num_classes=3).eval()
    size = MIN_INPUT_SIZE[version]
    assert model(seeded_input((1, 3, size, size), seed=2, dtype=np.float32)).shape == (1, 3)
    with pytest.raises(ValueError, match=f"at least {size} x {size}"):
        model(seeded_input((1, 3, size - 1, size + 5), seed=2, dtype=np.float32))


def test_squeezenet_smallest_inputs_are_21_and_17():
    """1.0: 7x7 s2 stem + three ceil-mode 3x3 s2 pools need 21 px; 1.1's 3x3 stem needs 17."""
    assert MIN_INPUT_SIZE == {"1_0": 21, "1_1": 17}


# ------------------------------------------------------------------------------------------- gradients
def _vdot_loss(model, upstream):
    return lambda x: float(np.vdot(upstream, model(x)))


@pytest.mark.parametrize("family", sorted(NARROW))
def test_narrow_model_float64_directional_gradcheck_at_32x32(family):
    """Input and three parameter tensors (first, middle, last) vs central differences, eval mode.

    Eval mode: batch norm is an affine map of running statistics (train mode's batch statistics over the
    1 x 1 last stage of a 32 x 32 input are degenerate, see the fixture test). eps = 1e-6 in float64:
    truncation and rounding errors are ~1e-10 relative; a wrong backward is off by O(1).
    """
    model = NARROW[family]().to(np.float64)
    model.load_state_dict(seeded_state_dict(model, seed=4), strict=True)
    model.eval()
    x = seeded_input((2, 3, 32, 32), seed=4)
    upstream = np.random.default_rng(4).standard_normal(model(x).shape)
    model.zero_grad()
    model(x)
    grad_x = model.backward(upstream)
    analytic, numeric = directional_gradcheck(_vdot_loss(model, upstream), x, grad_x)
    assert abs(analytic - numeric) <= 1e-6 * abs(numeric), ("input", analytic, numeric)

    named = list(model.named_parameters())
    for name, parameter in (named[0], named[len(named) // 2], named[-2]):
        original = parameter.data.copy()

        def loss_of_parameter(value, parameter=parameter):
            parameter.data[...] = value
            return float(np.vdot(upstream, model(x)))

        analytic, numeric = directional_gradcheck(loss_of_parameter, original, parameter.grad.copy())
        parameter.data[...] = original
        assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (name, analytic, numeric)


@pytest.mark.nojit
def test_tiny_blocks_train_mode_gradcheck():
    """Fire, ShuffleBlock (stride 1 and 2), ShuffleV2Block (stride 1 and 2) and GhostBottleneck with SE:
    float64 directional gradcheck of the input, in train mode (batch statistics), on tiny tensors."""
    nn.init.manual_seed(0)
    blocks = [
        (Fire(4, 2, 2, 3), (2, 4, 3, 3)),
        (ShuffleBlock(12, 12, 1, groups=3), (2, 12, 4, 4)),
        (ShuffleBlock(6, 24, 2, groups=3), (2, 6, 4, 4)),
        (ShuffleV2Block(4, 4, 1), (2, 4, 3, 3)),
        (ShuffleV2Block(4, 8, 2), (2, 4, 4, 4)),
        (GhostBottleneck(4, 8, 6, kernel_size=3, stride=2, use_se=True), (2, 4, 4, 4)),
        (GhostModule(3, 5), (2, 3, 3, 3)),          # odd width: one ghost channel is sliced off
    ]
    rng = np.random.default_rng(0)
    for block, shape in blocks:
        block = block.to(np.float64).train()
        x = rng.standard_normal(shape)
        upstream = rng.standard_normal(block(x).shape)
        grad_x = block.backward(upstream)
        analytic, numeric = directional_gradcheck(_vdot_loss(block, upstream), x, grad_x)
        assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (type(block).__name__, analytic, numeric)


# -------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("family, image_size, lr, steps", [
    ("shufflenet_v1", 32, 3e-3, 12),
    ("shufflenet_v2", 32, 3e-3, 25),      # 8-channel Stage 2: a slower start
    ("ghostnet", 32, 3e-3, 12),
    # SqueezeNet has no batch norm and ends with ReLU -> average pool: at 32 x 32 its class maps are 1 x 1,
    # and an image whose ten maps all turn negative gets no gradient again ("dead", loss stuck at ln 10;
    # torchvision's SqueezeNet does the same). 40 x 40 gives 2 x 2 maps, and a smaller step keeps most alive.
    ("squeezenet1_1", 40, 5e-4, 20),
])
def test_narrow_model_overfits_a_fixed_batch_of_8_images(family, image_size, lr, steps):
    """A few dozen Adam steps on 8 procedural images (10 classes): the loss falls below half its first value."""
    nn.init.manual_seed(0)
    model = train_without_dropout(NARROW[family]())
    images, labels = make_shapes(8, seed=0, image_size=image_size)
    images = (images - images.mean()) / images.std()
    optimizer = optim.Adam(model.parameters(), lr=lr)
    criterion = CrossEntropyLoss()
    losses = []
    for _ in range(steps):
        model.zero_grad()
        losses.append(criterion(model(images), labels))
        model.backward(criterion.backward())
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0], losses


# ------------------------------------------------------------------------------------ invalid arguments
@pytest.mark.parametrize("kwargs", [{"groups": 5}, {"groups": 0}, {"groups": 3.0}, {"groups": True},
                                    {"width_mult": 0}, {"width_mult": -1.0}, {"num_classes": 0}])
def test_shufflenet_v1_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        get_model("shufflenet_v1", **kwargs)


def test_shufflenet_v1_rejects_width_that_leaves_stage_2_no_wider_than_the_stem():
    with pytest.raises(ValueError, match="Stage 2"):
        get_model("shufflenet_v1", groups=3, width_mult=0.05)


@pytest.mark.parametrize("kwargs", [{"width_mult": 0}, {"width_mult": -0.5}, {"width_mult": "1"}, {"num_classes": 0}])
def test_ghostnet_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        get_model("ghostnet", **kwargs)


@pytest.mark.parametrize("name", ["shufflenet_v2_x1_0", "squeezenet1_1"])
def test_torchvision_families_reject_invalid_num_classes(name):
    with pytest.raises(ValueError, match="num_classes"):
        get_model(name, num_classes=-3)


@pytest.mark.parametrize("make", [
    lambda: ShuffleBlock(24, 48, 3, groups=3),           # stride 3
    lambda: ShuffleBlock(24, 48, 1, groups=3),           # stride 1 must keep the width
    lambda: ShuffleBlock(24, 50, 2, groups=3),           # 50 not divisible by 4 * 3
    lambda: ShuffleV2Block(8, 8, 3),
    lambda: ShuffleV2Block(8, 16, 1),
    lambda: GhostBottleneck(8, 16, 8, stride=4),
    lambda: ShuffleNetV2((8, 16, 32)),
])
def test_blocks_reject_invalid_configurations(make):
    with pytest.raises(ValueError):
        make()


def test_input_with_wrong_channels_raises_naming_the_shape():
    with pytest.raises(ValueError, match="3 input channels"):
        get_model("ghostnet", width_mult=0.1)(np.zeros((1, 4, 32, 32), dtype=np.float32))


# ---------------------------------------------------------------------------------------- registry, repr
def test_builders_are_registered():
    assert set(BUILDERS) <= set(list_models())


@pytest.mark.parametrize("name, parts", [
    ("shufflenet_v1", ["ShuffleBlock", "ChannelShuffle(groups=3)", "AvgPool2d", "(reduce)", "(depthwise)"]),
    ("shufflenet_v2_x0_5", ["ShuffleV2Block", "(branch1)", "(branch2)", "ChannelShuffle(groups=2)"]),
    ("ghostnet", ["GhostBottleneck", "GhostModule", "(primary_conv)", "(cheap_operation)", "GhostSqueezeExcite",
                  "(conv_reduce)", "Hardsigmoid"]),
    ("squeezenet1_1", ["Fire", "(squeeze)", "(expand1x1)", "(expand3x3)", "ceil_mode=True"]),
])
def test_repr_shows_the_blocks_by_name(name, parts):
    text = repr(get_model(name))
    for part in parts:
        assert part in text


def test_ghostnet_width_scales_channels_to_multiples_of_4():
    model = GhostNet(num_classes=10, width_mult=0.5)
    assert model.conv_stem.out_channels == 8                    # make_divisible(16 * 0.5, 4)
    assert model.blocks[9][0].conv.out_channels == 480          # make_divisible(960 * 0.5, 4)
    assert model.conv_head.out_channels == 1280                 # the head is never narrowed
