"""The profiler's measures beyond counting: receptive field, memory access cost, measured time."""
import math

import numpy as np
import pytest

from tinycnn import nn
from tinycnn.models import get_model
from tinycnn.profile import profile


# ----------------------------------------------------------------------------------------------------
# Receptive field: formula on small chains
# ----------------------------------------------------------------------------------------------------

def test_receptive_field_of_stacked_3x3_convolutions_grows_by_two_per_layer():
    chain = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)])
    p = profile(chain, (1, 1, 16, 16))
    assert [row.receptive_field for row in p.rows] == [(3, 3), (5, 5), (7, 7)]
    assert [row.rf_stride for row in p.rows] == [(1, 1)] * 3
    assert p.rows[-1].rf_center == (0.0, 0.0)         # symmetric padding: pixel 0 is centred on input 0
    assert p.receptive_field == (7, 7)


def test_receptive_field_stride_dilation_and_pooling():
    chain = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, dilation=2, padding=2),
                          nn.MaxPool2d(2), nn.Conv2d(1, 1, (1, 3)))
    p = profile(chain, (1, 1, 64, 64))
    # conv 3 s2: 3, jump 2; dilated 3x3 (span 5): 3 + 4*2 = 11, start -2*2 = -4; pool 2: 11 + 2 = 13, jump 4;
    # 1x3: height unchanged, width 13 + 2*4 = 21
    assert [row.receptive_field for row in p.rows] == [(3, 3), (11, 11), (13, 13), (13, 21)]
    assert [row.rf_stride for row in p.rows] == [(2, 2), (2, 2), (4, 4), (4, 4)]
    assert p.rows[1].rf_center == (-4 + 5.0, -4 + 5.0)


def test_receptive_field_of_a_branching_block_is_the_largest_path():
    # body: two 3x3 convs (field 5); shortcut identity (field 1): the sum sees the 5 x 5 window
    block = nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)))
    p = profile(nn.Sequential(block, nn.Conv2d(2, 2, 3, padding=1)), (1, 2, 16, 16))
    assert p.receptive_field == (7, 7)


def test_receptive_field_matches_google_receptive_field_table_for_mobilenet_and_resnet():
    # google-research/receptive_field, RECEPTIVE_FIELD_TABLE.md: MobileNet v1 Conv2d_13_pointwise has
    # RF 315, effective stride 32 (at any resolution); ResNet-50 layer4 of torchvision (stride on the
    # 3x3, "v1.5") is the known 427.
    rows = {row.name: row for row in profile(get_model("mobilenet_v1"), (1, 3, 224, 224)).rows}
    assert rows["features.13.pointwise.0"].receptive_field == (315, 315)
    assert rows["features.13.pointwise.0"].rf_stride == (32, 32)
    rows = {row.name: row for row in profile(get_model("resnet50"), (1, 3, 224, 224)).rows}
    assert rows["layer4.2.relu"].receptive_field == (427, 427) and rows["layer4.2.relu"].rf_stride == (32, 32)


def test_global_pooling_and_classifier_see_the_whole_map():
    p = profile(get_model("mobilenet_v2"), (1, 3, 224, 224))
    last_map = next(row for row in p.rows if row.name == "features.18.2")
    pooled = next(row for row in p.rows if row.type == "AdaptiveAvgPool2d")
    # the 7 x 7 map is pooled: 6 more steps of 32 input pixels
    assert pooled.receptive_field == (last_map.receptive_field[0] + 6 * 32,) * 2
    assert p.receptive_field == pooled.receptive_field


def test_layers_without_a_fixed_window_have_no_field():
    p = profile(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ConvTranspose2d(1, 1, 2, stride=2), nn.ReLU()),
                (1, 1, 8, 8))
    assert p.rows[0].receptive_field == (3, 3)
    assert p.rows[1].receptive_field is None and p.rows[2].receptive_field is None
    assert p.receptive_field is None and "RF" in p.table()


# ----------------------------------------------------------------------------------------------------
# Receptive field: against the empirical field of our own backward pass
# ----------------------------------------------------------------------------------------------------

def _positive(module, rng):
    """Positive weights of mean 1/fan_in (so activations neither vanish nor saturate ReLU6), BN as identity.

    Max pooling routes the gradient to one input per window, so its support would be a subset of the
    field: it is replaced by an average pooling of the same window (same field)."""
    for sub in module.modules():
        if isinstance(sub, nn.BatchNorm2d):
            sub.weight.data[...] = 1.0
            sub.bias.data[...] = 0.0
            sub.running_mean[...] = 0.0
            sub.running_var[...] = 1.0
        elif isinstance(sub, (nn.Conv2d, nn.Linear)):
            fan_in = sub.weight.size // sub.weight.shape[0]
            sub.weight.data[...] = rng.uniform(0.5, 1.5, sub.weight.shape) / fan_in
            if sub.bias is not None:
                sub.bias.data[...] = 0.0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.MaxPool2d):
            assert not child.ceil_mode
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
        else:
            _positive(child, rng)
    return module


def _empirical_field(chain, size):
    """Rows and columns of the input whose gradient is non-zero for the centre pixel (all channels)."""
    x = np.random.default_rng(1).uniform(0.5, 1.5, (1, 3, size, size)) * 1e-3
    chain.eval()
    y = chain(x)
    grad = np.zeros_like(y)
    centre = (y.shape[2] // 2, y.shape[3] // 2)
    grad[0, :, centre[0], centre[1]] = 1.0           # every channel: the field is the largest path
    grad_x = np.abs(chain.backward(grad)).sum(axis=(0, 1))
    rows, cols = np.nonzero(grad_x)
    return (rows.min(), rows.max()), (cols.min(), cols.max()), centre


def _chain(name, **kwargs):
    model = get_model(name, **kwargs)
    parts = {
        "mobilenet_v1": lambda: list(model.features.children())[:6],
        "mobilenet_v2": lambda: list(model.features.children())[:8],
        "resnet18": lambda: [model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2],
        "shufflenet_v2_x0_5": lambda: [model.conv1, model.maxpool, model.stage2],
        "mobilenet_v3_small": lambda: list(model.features.children())[:3],
    }[name]()
    return nn.Sequential(*parts).to(np.float64)


@pytest.mark.parametrize("name, kwargs", [
    ("mobilenet_v1", {"width_mult": 0.25}),
    ("mobilenet_v2", {"width_mult": 0.25}),
    ("resnet18", {"width_mult": 0.25}),
    ("shufflenet_v2_x0_5", {}),
])
def test_receptive_field_equals_the_support_of_the_input_gradient(name, kwargs):
    chain = _positive(_chain(name, **kwargs), np.random.default_rng(0))
    last = profile(chain, (1, 3, 160, 160)).rows[-1]
    (h, w), (jump_h, jump_w) = last.receptive_field, last.rf_stride
    size = 2 * max(h, w) + 32                       # large enough that the centre pixel's field is not clipped
    (top, bottom), (left, right), (i, j) = _empirical_field(chain, size)
    last = profile(chain, (1, 3, size, size)).rows[-1]
    centre_y, centre_x = last.rf_center
    assert (bottom - top + 1, right - left + 1) == last.receptive_field
    assert ((top + bottom) / 2, (left + right) / 2) == (centre_y + i * jump_h, centre_x + j * jump_w)


def test_after_squeeze_and_excitation_every_pixel_sees_the_whole_input():
    chain = _positive(_chain("mobilenet_v3_small"), np.random.default_rng(0))
    size = 64
    (top, bottom), (left, right), _ = _empirical_field(chain, size)
    assert (top, bottom, left, right) == (0, size - 1, 0, size - 1)
    assert min(profile(chain, (1, 3, size, size)).receptive_field) >= size


# ----------------------------------------------------------------------------------------------------
# Memory access cost (ShuffleNet V2, arXiv:1807.11164, Sec. 2)
# ----------------------------------------------------------------------------------------------------

def _pointwise_cost(c1, c2, hw, groups=1):
    p = profile(nn.Conv2d(c1, c2, 1, groups=groups, bias=False), (1, c1, hw, hw))
    return p.macs, p.memory_access


def test_memory_access_of_a_1x1_convolution_is_shufflenet_v2s_formula():
    h = w = 56
    c1, c2 = 64, 128
    macs, mac = _pointwise_cost(c1, c2, h)
    assert mac == h * w * (c1 + c2) + c1 * c2
    p = profile(nn.Conv2d(c1, c2, 1, bias=False), (1, c1, h, w), dtype=np.float64)
    assert p.memory_access_bytes == 8 * mac


def test_guideline_1_equal_channel_widths_minimise_memory_access():
    # ShuffleNet V2 Table 1 compares c1:c2 = 1:1, 1:2, 1:6, 1:12 at about fixed FLOPs B = hw*c1*c2; here
    # the ratios 1:1, 1:4, 1:9, 1:16 keep B exactly fixed (c1*c2 = 144**2) on a 56 x 56 map.
    # MAC = hw(c1 + c2) + c1*c2 >= 2*sqrt(hw*B) + B/hw, with equality when c1 == c2.
    hw = 56
    widths = [(144, 144), (72, 288), (48, 432), (36, 576)]
    costs = [_pointwise_cost(c1, c2, hw) for c1, c2 in widths]
    flops = [macs for macs, _ in costs]
    assert len(set(flops)) == 1                                    # the comparison is at fixed FLOPs
    access = [mac for _, mac in costs]
    assert access == sorted(access) and access[0] < access[1]
    B = flops[0]
    assert access[0] == 2 * math.sqrt(hw * hw * B) + B / (hw * hw)  # the bound, reached at c1 == c2


def test_guideline_2_more_groups_at_fixed_flops_raise_memory_access():
    # ShuffleNet V2 Table 2: 1x1 group convolutions with c = c1 = c2 widened as g grows so that the FLOPs
    # hw*c*c/g stay fixed (the paper: g = 1, 2, 4, 8 with c = 128, 180, 256, 360; here c = 128*sqrt(g)
    # exactly). MAC = hw*2c + c*c/g grows with c.
    hw = 56
    widths = {1: 128, 4: 256, 16: 512}
    costs = {g: _pointwise_cost(c, c, hw, groups=g) for g, c in widths.items()}
    flops = [macs for macs, _ in costs.values()]
    assert len(set(flops)) == 1
    access = [costs[g][1] for g in sorted(costs)]
    assert access == sorted(access) and access[-1] > 1.5 * access[0]


def test_memory_access_rows_and_totals():
    p = profile(get_model("mobilenet_v2"), (1, 3, 224, 224))
    assert p.memory_access == sum(row.memory_access for row in p.rows)
    assert p.memory_access_bytes == 4 * p.memory_access
    flatten = next(row for row in p.rows if row.type == "Flatten")
    assert flatten.memory_access == 0                   # a view moves nothing
    add = next(row for row in p.rows if row.kind == "add")
    assert add.memory_access == 3 * math.prod(add.output_shape)
    bn = next(row for row in p.rows if row.type == "BatchNorm2d")
    assert bn.memory_access == 2 * math.prod(bn.output_shape) + bn.params
    data = p.to_dict()
    assert data["totals"]["memory_access"] == p.memory_access
    assert "mem access" in p.table() and "memory access" in p.table()


# ----------------------------------------------------------------------------------------------------
# Measured time (no timed assertions: only that the numbers exist and are sane)
# ----------------------------------------------------------------------------------------------------

def test_time_mode_gives_every_row_a_forward_and_backward_time():
    model = get_model("mobilenet_v2", num_classes=10, width_mult=0.25)
    p = profile(model, (1, 3, 32, 32), mode="time", backward=True, repeat=2)
    shapes = profile(model, (1, 3, 32, 32))
    assert [r.name for r in p.rows] == [r.name for r in shapes.rows]
    assert p.macs == shapes.macs and p.memory_access == shapes.memory_access
    assert all(r.forward_ms is not None and math.isfinite(r.forward_ms) for r in p.rows)
    convs = [r for r in p.rows if r.type == "Conv2d"]
    assert all(r.forward_ms > 0 and r.backward_ms > 0 and math.isfinite(r.backward_ms) for r in convs)
    assert p.forward_ms > 0 and p.backward_ms > 0 and math.isfinite(p.forward_ms)
    text = p.table()
    assert "fwd ms" in text and "bwd ms" in text and "measured time" in text
    assert model.training                                  # flags restored


def test_time_mode_without_backward_and_bad_arguments():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    p = profile(model, (1, 3, 8, 8), mode="time", repeat=1)
    assert all(r.forward_ms > 0 for r in p.rows) and all(r.backward_ms is None for r in p.rows)
    assert "bwd ms" not in p.table() and "fwd ms" in p.table()
    assert "fwd ms" not in profile(model, (1, 3, 8, 8)).table()
    with pytest.raises(ValueError, match="backward=True .* mode='time'"):
        profile(model, (1, 3, 8, 8), backward=True)
    with pytest.raises(ValueError, match="repeat must be a positive int"):
        profile(model, (1, 3, 8, 8), mode="time", repeat=0)
    with pytest.raises(TypeError, match="backward must be True or False"):
        profile(model, (1, 3, 8, 8), mode="time", backward=1)
    with pytest.raises(ValueError, match="mode must be"):
        profile(model, (1, 3, 8, 8), mode="timed")
