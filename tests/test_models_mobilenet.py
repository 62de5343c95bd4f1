"""MobileNet V1, V2, V3 (Large/Small) and MobileNeXt: layouts, published sizes, PyTorch fixtures, gradients.

References: torchvision for V2/V3 (same ``state_dict`` keys, shapes and order), and the independent
PyTorch definitions of V1 and MobileNeXt in ``tools/torch_reference_mobilenet.py``. The fixtures
(``tests/fixtures/models_mobilenet.npz`` and ``models_mobilenet_v3.npz``, made by
``tools/fixtures_models_mobilenet.py``) store seeds and reference outputs, not weights.
"""
import json
import pathlib
import sys

import numpy as np
import pytest
from helpers import directional_gradcheck
from model_checks import _relative_error, check_model_case, load_model_cases

from tinycnn import gradcheck, nn, optim
from tinycnn.data import make_shapes
from tinycnn.losses import CrossEntropyLoss
from tinycnn.models import get_model, list_models
from tinycnn.models.mobilenet_v1 import DepthwiseSeparable
from tinycnn.models.mobilenet_v3 import InvertedResidualConfig
from tinycnn.models.mobilenext import SandglassBlock
from tinycnn.testing import seeded_input, seeded_state_dict, train_without_dropout

TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"
FAMILY = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mobilenext"]
FIXTURE_FILES = ["models_mobilenet.npz", "models_mobilenet_v3.npz"]
CASES = {name: case for filename in FIXTURE_FILES for name, case in load_model_cases(filename).items()}
TORCHVISION_MODELS = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]

# torchvision's parameter counts (its documentation's "num_params", checked live below).
TORCHVISION_PARAMS = {"mobilenet_v2": 3_504_872, "mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856}


def count_parameters(model):
    return sum(p.size for p in model.parameters())


def count_macs(model, input_shape):
    """Multiply-adds of the conv and linear layers (the papers' "Mult-Adds"), from one eval forward."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        spatial = output.shape[2] * output.shape[3] if output.ndim == 4 else 1
        total += module.weight.size * spatial          # each weight is used once per output pixel
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    model(np.zeros(input_shape, dtype=np.float32))
    for handle in handles:
        handle.remove()
    return total


def torchvision_models():
    torch = pytest.importorskip("torch")
    if str(TOOLS_DIR) not in sys.path:
        sys.path.insert(0, str(TOOLS_DIR))
    from model_fixtures import import_torchvision_models
    return torch, import_torchvision_models()


def torch_reference():
    torch = pytest.importorskip("torch")
    if str(TOOLS_DIR) not in sys.path:
        sys.path.insert(0, str(TOOLS_DIR))
    import torch_reference_mobilenet
    return torch, torch_reference_mobilenet


def shapes_of(state_dict):
    return [(name, tuple(np.shape(value))) for name, value in state_dict.items()]


# ---------------------------------------------------------------------------------------------- registry
def test_every_family_model_is_registered():
    assert set(FAMILY) <= set(list_models())


def test_fixtures_cover_every_family_model():
    assert {case["params"]["model"] for case in CASES.values()} == set(FAMILY)


# ----------------------------------------------------------------------------------------- PyTorch match
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_matches_pytorch_reference_float64(case_name):
    # Eval logits, train logits (batch statistics), grad of the input and of named parameters, 1e-8 relative.
    check_model_case(CASES[case_name], np.float64)


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_matches_pytorch_reference_float32(case_name):
    """float32 against the float64 reference, with a tolerance set by the case's own conditioning.

    Training-mode gradients pass through ~50 batch norms that normalise few values per channel; each
    subtracts the gradient's components along 1 and x_hat, a cancellation that amplifies float32
    rounding. The generator measured how far PyTorch's own float32 run lands (``torch_float32_error``:
    1e-7 for eval logits, up to ~7% for train-mode MobileNeXt gradients); ``check_model_case`` allows a
    stated multiple of that (``tests/helpers.py: float32_tolerance``). The exactness check is the
    float64 test above.
    """
    check_model_case(CASES[case_name], np.float32)


# ------------------------------------------------------------------------------- torchvision's layout
@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_state_dict_keys_shapes_and_order_equal_torchvision_recorded(name):
    recorded = [(key, tuple(shape)) for key, shape in json.loads(str(CASES[name]["state_dict_shapes"]))]
    assert shapes_of(get_model(name).state_dict()) == recorded


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_parameter_count_equals_torchvision(name):
    assert count_parameters(get_model(name)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name, width_mult", [("mobilenet_v2", 1.0), ("mobilenet_v2", 0.35),
                                              ("mobilenet_v3_large", 1.0), ("mobilenet_v3_large", 0.75),
                                              ("mobilenet_v3_small", 1.0), ("mobilenet_v3_small", 0.5)])
def test_torchvision_state_dict_loads_strictly_live(name, width_mult):
    _torch, models = torchvision_models()
    reference = getattr(models, name)(width_mult=width_mult)
    converted = {key: value.numpy() for key, value in reference.state_dict().items()}
    ours = get_model(name, width_mult=width_mult)
    assert shapes_of(ours.state_dict()) == shapes_of(converted)
    ours.load_state_dict(converted, strict=True)
    assert count_parameters(ours) == sum(p.numel() for p in reference.parameters())
    if width_mult == 1.0:
        assert count_parameters(ours) == TORCHVISION_PARAMS[name]


# ------------------------------------------------------------------- our layouts for V1 and MobileNeXt
@pytest.mark.parametrize("name, kwargs", [("mobilenet_v1", {}), ("mobilenet_v1", {"width_mult": 0.25}),
                                          ("mobilenext", {}), ("mobilenext", {"width_mult": 0.75}),
                                          ("mobilenext", {"width_mult": 1.4, "num_classes": 10})])
def test_state_dict_keys_shapes_and_order_equal_torch_reference_live(name, kwargs):
    _torch, reference = torch_reference()
    theirs = getattr(reference, name)(**kwargs).state_dict()
    assert shapes_of(get_model(name, **kwargs).state_dict()) == shapes_of(theirs)


def test_mobilenext_full_shortcut_matches_torch_reference_live():
    # The fixtures cover identity multiplier 0.5 at width 1.0 and 1.0 at width 0.5; this is 1.0 at 1.0.
    torch, reference = torch_reference()
    theirs = reference.mobilenext(num_classes=10).double().eval()
    ours = get_model("mobilenext", num_classes=10).to(np.float64).eval()
    weights = seeded_state_dict(ours, seed=7)
    ours.load_state_dict(weights)
    theirs.load_state_dict({key: torch.from_numpy(value) for key, value in weights.items()})
    x = seeded_input((2, 3, 33, 33), seed=7)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    assert _relative_error(ours(x), expected) < 1e-10


# ------------------------------------------------------------------------------ published sizes
@pytest.mark.parametrize("width_mult, millions", [(1.0, 4.2), (0.75, 2.6), (0.5, 1.3), (0.25, 0.5)])
def test_mobilenet_v1_parameter_count_matches_paper(width_mult, millions):
    # arXiv:1704.04861 Table 6 (width multiplier) and Table 8: 4.2M / 2.6M / 1.3M / 0.5M, rounded to 0.1M.
    assert round(count_parameters(get_model("mobilenet_v1", width_mult=width_mult)) / 1e6, 1) == millions


def test_mobilenext_parameter_count_matches_paper():
    # arXiv:2007.02269 (ImageNet comparison, MobileNeXt 1.0x): 3.5M parameters, rounded to 0.1M.
    assert round(count_parameters(get_model("mobilenext")) / 1e6, 1) == 3.5


@pytest.mark.parametrize("name, kwargs, published, rel_tol", [
    ("mobilenet_v1", {}, 569e6, 0.001),             # arXiv:1704.04861 Table 8: 569M Mult-Adds
    ("mobilenet_v2", {}, 300e6, 0.005),             # arXiv:1801.04381 Table 4: 300M
    ("mobilenet_v3_large", {}, 219e6, 0.02),        # arXiv:1905.02244 Table 3: 219M (torchvision: 217M)
    ("mobilenet_v3_small", {}, 56e6, 0.02),         # Table 4: 56M
    ("mobilenext", {}, 300e6, 0.05),                # arXiv:2007.02269: ~300M (released code's model: 311M)
])
def test_multiply_adds_at_224_match_papers(name, kwargs, published, rel_tol):
    assert count_macs(get_model(name, **kwargs), (1, 3, 224, 224)) == pytest.approx(published, rel=rel_tol)


def test_mobilenet_v1_has_28_layers_counting_depthwise_and_pointwise_separately():
    # arXiv:1704.04861 Sec. 3.2: the stem, 13 x (depthwise + pointwise), and the fully connected layer.
    model = get_model("mobilenet_v1")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert (len(convs), len(linears)) == (27, 1)
    assert sum(1 for conv in convs if conv.groups == conv.in_channels > 1) == 13


# ------------------------------------------------------------------------------ MobileNeXt's details
def test_mobilenext_blocks_follow_the_depthwise_layout_and_shortcut_rule():
    blocks = list(get_model("mobilenext").features)[1:]
    assert len(blocks) == 20                                   # 1 + 1 + 3 + 3 + 4 + 4 + 3 + 1
    for block in blocks:
        assert block.use_shortcut == (block.stride == 1 and block.in_channels == block.out_channels)
        if block.use_shortcut:                                 # a block with a shortcut is the full sandglass
            assert block.depthwise_in is not None and block.depthwise_out is not None
        if block.stride == 2:
            assert block.depthwise_out.get_submodule("0").stride == (2, 2)
    transitions = [(b.in_channels, b.out_channels) for b in blocks if b.depthwise_in is None and b.depthwise_out is None]
    assert transitions == [(288, 384), (576, 960)]            # channel changes at stride 1 inside a stage


@pytest.mark.nojit
def test_sandglass_partial_shortcut_adds_only_the_first_channels():
    # The identity tensor multiplier (arXiv:2007.02269 Sec. 3.3): y[:, :k] = F(x)[:, :k] + x[:, :k],
    # y[:, k:] = F(x)[:, k:] with k = round(C * multiplier); the backward adds grad_out[:, :k] to dL/dx.
    rng = np.random.default_rng(0)
    block = SandglassBlock(8, 8, stride=1, reduction_ratio=2, identity_tensor_multiplier=0.25).to(np.float64).eval()
    assert block.identity_channels == 2
    x = rng.standard_normal((2, 8, 4, 4))
    y = block(x)
    body = x
    for part in (block.depthwise_in, block.reduce, block.expand, block.depthwise_out):
        body = part(body)
    np.testing.assert_allclose(y[:, :2], body[:, :2] + x[:, :2], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(y[:, 2:], body[:, 2:])
    grad_out = rng.standard_normal(y.shape)
    block(x)
    grad_x = block.backward(grad_out)
    grad_body = grad_out
    block(x)                                    # one forward per backward (the forward cache rule)
    for part in (block.depthwise_out, block.expand, block.reduce, block.depthwise_in):
        grad_body = part.backward(grad_body)
    np.testing.assert_allclose(grad_x[:, :2], grad_body[:, :2] + grad_out[:, :2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad_x[:, 2:], grad_body[:, 2:], rtol=0, atol=1e-12)


def test_sandglass_block_gradcheck_with_partial_shortcut_in_train_mode():
    # A fixed initialisation: the block's weights used to come from whatever state earlier tests left the
    # global generator in, and about 1 in 8 of those puts a ReLU6 input within the step (1e-6) of a kink
    # (the central difference then straddles it) or leaves reduce.1.bias, whose true gradient is 0 (a
    # batch norm follows), at the finite differences' rounding noise of ~1e-8, just above atol.
    nn.init.manual_seed(0)
    block = SandglassBlock(8, 8, stride=1, reduction_ratio=2, identity_tensor_multiplier=0.5).to(np.float64)
    x = np.random.default_rng(1).standard_normal((2, 8, 5, 5))
    report = gradcheck(block, x, n_entries=1)
    assert report.passed, report


# ------------------------------------------------------------------------------ gradients and learning
def _directional_checks(model, x, rng, eps=1e-7):
    """(analytic, numeric) directional derivatives of ``vdot(g, model(x))`` along random directions of the
    input and of all parameters at once (model in float64)."""
    logits = model(x)
    g = rng.standard_normal(logits.shape)
    model.zero_grad()
    grad_x = model.backward(g)
    loss = lambda inp: float(np.vdot(g, model(inp)))
    checks = [directional_gradcheck(loss, x, grad_x, eps=eps, rng=rng)]
    params = list(model.parameters())
    directions = [rng.standard_normal(p.shape) for p in params]
    analytic = sum(float(np.vdot(p.grad, d)) for p, d in zip(params, directions))
    originals = [p.data.copy() for p in params]
    values = []
    for sign in (1, -1):
        for p, d, original in zip(params, directions, originals):
            p.data[...] = original + sign * eps * d
        values.append(loss(x))
    for p, original in zip(params, originals):
        p.data[...] = original
    checks.append((analytic, (values[0] - values[1]) / (2 * eps)))
    return checks


@pytest.mark.parametrize("name, kwargs", [
    ("mobilenet_v1", {"width_mult": 0.25}),
    ("mobilenet_v2", {"width_mult": 0.25}),
    ("mobilenet_v3_large", {"width_mult": 0.25}),
    ("mobilenet_v3_small", {"width_mult": 0.25}),
    ("mobilenext", {"width_mult": 0.25, "identity_tensor_multiplier": 0.5}),
])
def test_directional_gradcheck_of_narrow_model_at_32x32_float64(name, kwargs):
    # Eval mode (batch norm is an affine map; at 32 x 32 the last stage is 1 x 1, where training-mode
    # batch norm over a batch of 2 is degenerate). eps = 1e-7, not 1e-6: a direction that moves every
    # parameter at once pushes some ReLU6 / hard-swish inputs across their kinks within +-1e-6 (measured:
    # 1.5% error for V2, converging as eps shrinks); at 1e-7 the rounding error |f| * 1e-16 / eps is still
    # ~1e-9 relative, far below the 1e-6 tolerance, while a wrong backward is off by O(1).
    model = get_model(name, num_classes=10, **kwargs).to(np.float64)
    model.load_state_dict(seeded_state_dict(model, seed=3))
    model.eval()
    rng = np.random.default_rng(0)
    x = seeded_input((2, 3, 32, 32), seed=3)
    for analytic, numeric in _directional_checks(model, x, rng):
        assert abs(analytic - numeric) <= 1e-6 * max(abs(analytic), abs(numeric)), (analytic, numeric)


@pytest.mark.parametrize("name, kwargs", [
    ("mobilenet_v1", {"width_mult": 0.25}),
    ("mobilenet_v2", {"width_mult": 0.25}),
    ("mobilenet_v3_large", {"width_mult": 0.25}),
    ("mobilenet_v3_small", {"width_mult": 0.25}),
    ("mobilenext", {"width_mult": 0.25, "identity_tensor_multiplier": 0.5}),
])
def test_narrow_model_overfits_a_fixed_batch_of_8_shapes(name, kwargs):
    nn.init.manual_seed(0)
    model = get_model(name, num_classes=10, **kwargs)
    images, labels = make_shapes(8, seed=0)
    images = (images - images.mean(axis=(0, 2, 3), keepdims=True)) / images.std(axis=(0, 2, 3), keepdims=True)
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    criterion = CrossEntropyLoss()
    model.train()
    losses = []
    for _ in range(30):                 # "a few dozen steps"; training-mode BN on 8 images makes the curve noisy
        model.zero_grad()
        losses.append(float(criterion(model(images), labels)))
        model.backward(criterion.backward())
        optimizer.step()
    assert min(losses[-5:]) < 0.25 * losses[0], losses


# -------------------------------------------------------------------------- any resolution, both dtypes
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FAMILY)
def test_forward_and_backward_at_32x32(name, dtype):
    # Full-width models are compared with PyTorch above (at 33 x 33); here width 0.5 keeps it fast.
    model = get_model(name, num_classes=10, width_mult=0.5).to(dtype)
    train_without_dropout(model)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(dtype)
    logits = model(x)
    assert logits.shape == (2, 10) and logits.dtype == dtype
    grad_x = model.backward(np.ones_like(logits))
    assert grad_x.shape == x.shape and grad_x.dtype == dtype and np.all(np.isfinite(grad_x))


@pytest.mark.parametrize("name", FAMILY)
def test_eval_forward_at_a_non_square_odd_resolution(name):
    model = get_model(name, num_classes=5, width_mult=0.5).eval()
    assert model(np.zeros((1, 3, 45, 71), dtype=np.float32)).shape == (1, 5)


# ------------------------------------------------------------------------------------ invalid configs
@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("kwargs", [{"width_mult": 0}, {"width_mult": -0.5}, {"width_mult": "1"},
                                    {"num_classes": 0}, {"num_classes": 2.5}])
def test_invalid_arguments_raise_value_error(name, kwargs):
    with pytest.raises(ValueError):
        get_model(name, **kwargs)


@pytest.mark.parametrize("multiplier", [-0.1, 1.5, "half", True])
def test_mobilenext_rejects_identity_tensor_multiplier_outside_0_1(multiplier):
    with pytest.raises(ValueError, match="identity_tensor_multiplier"):
        get_model("mobilenext", identity_tensor_multiplier=multiplier)


@pytest.mark.parametrize("build", [
    lambda: DepthwiseSeparable(8, 16, stride=3),
    lambda: SandglassBlock(8, 8, stride=3, reduction_ratio=2),
    lambda: SandglassBlock(8, 8, stride=1, reduction_ratio=0),
    lambda: SandglassBlock(8, 16, stride=2, reduction_ratio=2, depthwise_out=False),
    lambda: InvertedResidualConfig(16, 3, 64, 24, False, "relu", 1),
    lambda: InvertedResidualConfig(16, 3, 64, 24, False, "RE", 3),
    lambda: InvertedResidualConfig(16, 4, 64, 24, False, "RE", 1),
])
def test_invalid_block_configurations_raise_value_error(build):
    with pytest.raises(ValueError):
        build()


# ------------------------------------------------------------------------------------------------ repr
@pytest.mark.parametrize("name, expected", [
    ("mobilenet_v1", ["DepthwiseSeparable", "(depthwise)", "(pointwise)", "groups=32"]),
    ("mobilenet_v2", ["InvertedResidual", "ReLU6", "Dropout"]),
    ("mobilenet_v3_large", ["InvertedResidual", "SqueezeExcitation", "Hardsigmoid", "Hardswish",
                            "kernel_size=(5, 5)", "eps=0.001"]),
    ("mobilenext", ["SandglassBlock", "(depthwise_in)", "(reduce)", "(expand)", "(depthwise_out)",
                    "shortcut on 96/192 channels"]),
])
def test_repr_names_the_blocks(name, expected):
    kwargs = {"identity_tensor_multiplier": 0.5} if name == "mobilenext" else {}
    text = repr(get_model(name, **kwargs))
    for fragment in expected:
        assert fragment in text, fragment


def test_mobilenet_v3_blocks_expose_their_parts_by_role():
    blocks = list(get_model("mobilenet_v3_small").features)[1:-1]
    first, second = blocks[0], blocks[1]
    assert first.expand is None and first.se is first.block[1] and first.project is first.block[2]
    assert second.expand is second.block[0] and second.se is None and second.depthwise is second.block[1]
