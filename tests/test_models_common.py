"""What every model of the zoo shares: ``in_channels``, the one shortcut base, ``zero_init_residual_``."""
import numpy as np
import pytest

from tinycnn import nn
from tinycnn.models import get_model, list_models, model_arguments
from tinycnn.transfer import zero_init_residual_

# Narrow versions where the model has a width multiplier: the tests check wiring, not capacity.
SMALL = {"width_mult": 0.25}


def _small(name, **kwargs):
    extra = SMALL if "width_mult" in model_arguments(name) else {}
    if name == "shufflenet_v1":
        extra = {"width_mult": 0.5}           # Stage 2 must stay wider than the 24-channel stem
    if "hidden" in model_arguments(name):
        extra = {"hidden": 64}                # AlexNet, VGG-16: a narrow classifier (VGG's would be 120M weights)
    nn.init.manual_seed(0)
    return get_model(name, **extra, **kwargs)


def _input_size(model):
    return max(32, getattr(model, "min_input_size", 0))      # SqueezeNet's unpadded stem needs more


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_in_channels_and_runs_a_one_channel_image(name):
    assert "in_channels" in model_arguments(name)
    model = _small(name, num_classes=10, in_channels=1).eval()
    size = _input_size(model)
    x = np.random.default_rng(0).standard_normal((2, 1, size, size)).astype(np.float32)
    logits = model(x)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    grad_x = model.backward(np.ones_like(logits))
    assert grad_x.shape == x.shape and np.any(grad_x != 0)
    with pytest.raises(ValueError, match="expects 1 input channels"):
        model(np.zeros((1, 3, size, size), dtype=np.float32))


def test_one_channel_mobilenet_v2_trains_like_the_three_channel_one():
    """``mobilenet_v2(in_channels=1, num_classes=10)``: the MNIST network of the README; train-mode
    forward and backward, and only the stem's weight shape differs from the RGB model's."""
    nn.init.manual_seed(0)
    model = get_model("mobilenet_v2", in_channels=1, num_classes=10)
    rgb = get_model("mobilenet_v2", num_classes=10)
    shapes, rgb_shapes = ({k: v.shape for k, v in m.state_dict().items()} for m in (model, rgb))
    assert [k for k in shapes if shapes[k] != rgb_shapes[k]] == ["features.0.0.weight"]
    assert shapes["features.0.0.weight"] == (32, 1, 3, 3)
    x = np.random.default_rng(1).standard_normal((4, 1, 32, 32)).astype(np.float32)
    model.train()
    logits = model(x)
    model.zero_grad()
    grad_x = model.backward(np.full_like(logits, 0.25))
    assert logits.shape == (4, 10) and grad_x.shape == (4, 1, 32, 32)
    stem = model.features[0][0]
    assert np.any(stem.weight.grad != 0)


def _identity_blocks(model):
    return [m for m in model.modules() if isinstance(m, nn.ShortcutBlock) and m.use_residual]


@pytest.mark.parametrize("name, expected", [
    ("mobilenet_v2", 10),           # Table 2: 0 + 1 + 2 + 3 + 2 + 2 + 0 blocks keep their shape
    ("mobilenet_v3_large", 10),     # Table 1 rows with stride 1 and equal widths
    ("mobilenet_v3_small", 6),
    ("mobilenext", 12),             # Table 3 (with the released 3-block 960 stage): 2 + 2 + 3 + 3 + 2
    ("ghostnet", 11),               # Table 1: 1 + 1 + 1 + 3 + 1 + 4
    ("resnet18", 5),                # 2 + 1 + 1 + 1: every block but the projecting first ones of stages 2-4
    ("se_resnet18", 5),
])
def test_zero_init_residual_covers_every_identity_shortcut_block(name, expected):
    model = get_model(name, num_classes=10)
    blocks = _identity_blocks(model)
    assert all(b.stride == 1 and b.in_channels == b.out_channels for b in blocks)
    assert zero_init_residual_(model) == len(blocks) == expected
    for block in blocks:
        assert np.all(block.branch_output_norm().weight.data == 0)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenext", "ghostnet", "resnet18", "se_resnet18"])
def test_after_zero_init_every_identity_block_starts_as_its_shortcut(name):
    """Branch output 0: the block returns ``x`` (ResNet: ``ReLU(x)``, so ``x >= 0`` is fed), exactly."""
    model = _small(name, num_classes=10)
    zero_init_residual_(model)
    model.train()
    rng = np.random.default_rng(0)
    for block in _identity_blocks(model):
        x = np.abs(rng.standard_normal((2, block.in_channels, 4, 4))).astype(np.float32)
        np.testing.assert_array_equal(block(x), x)


def test_zero_init_residual_leaves_blocks_without_an_identity_shortcut_alone():
    model = get_model("resnet18", num_classes=10)
    zero_init_residual_(model)
    projecting = [m for m in model.modules() if isinstance(m, nn.ShortcutBlock) and not m.use_residual]
    assert len(projecting) == 3 and all(np.all(block.bn2.weight.data == 1) for block in projecting)


def test_the_shortcut_rule_is_one_decision_in_the_base():
    from tinycnn.models.mobilenet_v2 import InvertedResidual
    from tinycnn.models.mobilenext import SandglassBlock

    assert InvertedResidual(8, 8, 1, 6).use_residual and not InvertedResidual(8, 8, 2, 6).use_residual
    assert not InvertedResidual(8, 16, 1, 6).has_shortcut
    half = SandglassBlock(8, 8, 1, 2, identity_tensor_multiplier=0.5)
    assert half.use_residual and half.identity_channels == 4
    assert half.extra_flops((1, 8, 4, 4), (1, 8, 4, 4)) == 4 * 4 * 4      # adds on the first 4 channels only
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        SandglassBlock(8, 8, 3, 2)
