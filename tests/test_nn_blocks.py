"""Residual and branch blocks: forks sum gradients, concatenations and splits cut them.

Gradient checks use ``gradcheck_layer`` from ``tests/helpers.py`` (float64 central differences for the
input and every parameter, 1e-6 relative).
"""
import numpy as np
import pytest

import tinycnn.nn as nn
from tinycnn.models.mobilenet_v2 import InvertedResidual
from helpers import gradcheck_layer


def mobilenet_v3_block(channels=4, expanded=12, squeeze=4):
    """A MobileNetV3-style residual block with BN and SE: expand 1x1 (h-swish), depthwise 3x3 (h-swish),
    SE with a hard-sigmoid gate, linear 1x1 projection, identity shortcut."""
    return nn.Residual(nn.Sequential(
        nn.Conv2dNormActivation(channels, expanded, kernel_size=1, activation_layer=nn.Hardswish),
        nn.Conv2dNormActivation(expanded, expanded, groups=expanded, activation_layer=nn.Hardswish),
        nn.SqueezeExcitation(expanded, squeeze, scale_activation=nn.Hardsigmoid),
        nn.Conv2dNormActivation(expanded, channels, kernel_size=1, activation_layer=None),
    ))


BLOCKS = [
    ("residual_identity", lambda: nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))),
     (2, 3, 4, 4)),
    ("residual_projection_shortcut", lambda: nn.Residual(
        nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU()),
        shortcut=nn.Sequential(nn.Conv2d(3, 6, 1, stride=2, bias=False), nn.BatchNorm2d(6))), (2, 3, 5, 5)),
    ("concat", lambda: nn.Concat(nn.Conv2d(3, 2, 1), nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                                 nn.Identity()), (2, 3, 4, 4)),
    ("channel_split", lambda: nn.ChannelSplit(nn.Identity(), nn.Sequential(nn.Conv2d(2, 2, 3, padding=1),
                                                                            nn.BatchNorm2d(2))), (2, 4, 4, 4)),
    ("channel_split_sizes", lambda: nn.ChannelSplit(nn.Conv2d(1, 3, 1), nn.Hardswish(), split_sizes=[1, 3]),
     (2, 4, 3, 3)),
    ("inverted_residual_t6", lambda: InvertedResidual(4, 4, 1, 6), (2, 4, 4, 4)),
    ("inverted_residual_t1_stride2", lambda: InvertedResidual(3, 5, 2, 1), (2, 3, 5, 5)),
    ("residual_block_with_bn_and_se", mobilenet_v3_block, (2, 4, 5, 5)),
]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name, factory, x_shape", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_block_gradients_match_central_differences_in_float64(name, factory, x_shape, mode):
    gradcheck_layer(factory(), x_shape, mode, seed=1)


@pytest.mark.nojit
def test_tiny_inverted_residual_gradcheck_runs_without_jit():
    gradcheck_layer(InvertedResidual(2, 2, 1, 2), (2, 2, 3, 3), "train")


def test_residual_adds_the_identity_and_sums_the_two_gradients(rng):
    body = nn.Conv2d(2, 2, 1, bias=False)
    block = nn.Residual(body).double()
    x = rng.standard_normal((1, 2, 3, 3))
    np.testing.assert_allclose(block(x), body(x) + x, rtol=1e-12)
    g = rng.standard_normal((1, 2, 3, 3))
    grad_block = block.backward(g)
    body(x)                                     # one forward per backward (the forward cache rule)
    np.testing.assert_allclose(grad_block, body.backward(g) + g, rtol=1e-12)


def test_concat_of_two_identities_sums_the_gradient_halves(rng):
    x = rng.standard_normal((2, 3, 2, 2))
    block = nn.Concat(nn.Identity(), nn.Identity())
    y = block(x)
    np.testing.assert_array_equal(y, np.concatenate([x, x], axis=1))
    g = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(block.backward(g), g[:, :3] + g[:, 3:])


def test_channel_split_routes_each_channel_group_to_its_branch(rng):
    x = rng.standard_normal((2, 4, 2, 2))
    block = nn.ChannelSplit(nn.Identity(), nn.ReLU())
    np.testing.assert_array_equal(block(x), np.concatenate([x[:, :2], np.maximum(x[:, 2:], 0)], axis=1))
    g = np.ones_like(x)
    np.testing.assert_array_equal(block.backward(g), np.concatenate([g[:, :2], (x[:, 2:] > 0) * 1.0], axis=1))


def test_inverted_residual_keys_equal_torchvisions_and_shortcut_rule():
    block = InvertedResidual(8, 8, 1, 6)
    assert block.use_res_connect
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = (["conv.0.0.weight"] + [f"conv.0.1.{k}" for k in bn] + ["conv.1.0.weight"] +
                [f"conv.1.1.{k}" for k in bn] + ["conv.2.weight"] + [f"conv.3.{k}" for k in bn])
    assert list(block.state_dict()) == expected
    assert block.conv[0][0].weight.shape == (48, 8, 1, 1) and block.conv[1][0].weight.shape == (48, 1, 3, 3)
    assert not InvertedResidual(8, 8, 2, 6).use_res_connect
    assert not InvertedResidual(8, 16, 1, 6).use_res_connect
    no_expand = InvertedResidual(8, 16, 2, 1)
    assert list(no_expand.state_dict())[0] == "conv.0.0.weight" and no_expand.conv[0][0].groups == 8
    assert no_expand(np.ones((1, 8, 6, 6), dtype=np.float32)).shape == (1, 16, 3, 3)


def test_conv_norm_activation_keeps_size_and_drops_the_bias_before_batch_norm():
    layer = nn.Conv2dNormActivation(3, 5, kernel_size=5, dilation=2, activation_layer=nn.ReLU6)
    assert layer[0].padding == (4, 4) and layer[0].bias is None
    assert [type(m).__name__ for m in layer] == ["Conv2d", "BatchNorm2d", "ReLU6"]
    assert layer(np.ones((1, 3, 9, 9), dtype=np.float32)).shape == (1, 5, 9, 9)
    plain = nn.Conv2dNormActivation(3, 5, norm_layer=None, activation_layer=None)
    assert len(plain) == 1 and plain[0].bias is not None


def test_branch_blocks_report_incompatible_shapes():
    with pytest.raises(ValueError, match="body output .* and shortcut output .* must have the same shape"):
        nn.Residual(nn.Conv2d(3, 4, 1))(np.ones((1, 3, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="must share N, H, W"):
        nn.Concat(nn.Identity(), nn.MaxPool2d(2))(np.ones((1, 3, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="cannot be split into 2 equal parts"):
        nn.ChannelSplit(nn.Identity(), nn.Identity())(np.ones((1, 3, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="must add up to the 4 input channels"):
        nn.ChannelSplit(nn.Identity(), nn.Identity(), split_sizes=[1, 2])(np.ones((1, 4, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        InvertedResidual(4, 4, 3, 6)
