"""tinycnn.profile: the counting rules, checked against what the kernels do and against hand derivations.

* Convolution MACs (every kind: standard, strided, padded, dilated, grouped, depthwise, pointwise,
  transposed with stride/padding/output_padding) equal the multiplications that the NumPy reference
  kernels perform, counted by intercepting their ``np.einsum`` calls, and -- for the "useful" count --
  the sum of the reference output when every input and weight is 1 (each product then adds exactly 1).
* The FLOP rules of the module docstring, its worked example, the block rules (residual adds, SE scaling).
* The pass itself: shape-only and real forward give the same rows for every model of the zoo, the
  model is left as it was, the peak-memory model on hand-computable networks.
* Output: table, CSV, JSON, breakdown by kind; the plot helpers.

The published figures (MobileNet, ShuffleNet, ...) are in ``test_profile_published.py``.
"""
import functools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import reference
from tinycnn import nn
from tinycnn.models import get_model, list_models
from tinycnn.profile import Profile, conv2d_macs, conv_transpose2d_macs, profile, profile_zoo, time_forward

# ----------------------------------------------------------------------------------------------------
# Counting the reference kernels' multiplications
# ----------------------------------------------------------------------------------------------------

class EinsumCounter:
    """Replaces ``np.einsum`` and counts its scalar multiplications.

    A two-operand ``np.einsum("ngihw,goi->ngohw", a, b)`` multiplies once for every combination of the
    index letters that appear in it: the product of their sizes. The reference convolutions do all their
    multiplications through such calls (one per kernel tap), so the total is what they compute --
    products with the zero padding included.
    """

    def __init__(self):
        self.multiplications = 0
        self._einsum = np.einsum

    def __call__(self, subscripts, *operands, **kwargs):
        inputs = subscripts.replace(" ", "").split("->")[0].split(",")
        assert len(inputs) == 2 == len(operands), "the reference kernels use two-operand einsums"
        sizes = {}
        for letters, operand in zip(inputs, operands):
            for letter, size in zip(letters, operand.shape):
                sizes[letter] = size
        self.multiplications += math.prod(sizes.values())
        return self._einsum(subscripts, *operands, **kwargs)


@pytest.fixture
def einsum_counter(monkeypatch):
    counter = EinsumCounter()
    monkeypatch.setattr(np, "einsum", counter)
    return counter


def ones(shape):
    return np.ones(shape, dtype=np.float64)


# (input shape, out channels, kernel, stride, padding, dilation, groups)
CONV_CASES = {
    "standard 3x3": ((2, 3, 7, 6), 4, 3, 1, 0, 1, 1),
    "padded 3x3": ((1, 3, 6, 6), 5, 3, 1, 1, 1, 1),
    "strided 3x3": ((1, 2, 9, 8), 3, 3, 2, 1, 1, 1),
    "dilated 3x3": ((1, 2, 9, 9), 3, 3, 1, 2, 2, 1),
    "grouped 3x3": ((1, 6, 7, 7), 9, 3, 1, 1, 1, 3),
    "depthwise 3x3": ((2, 4, 8, 8), 4, 3, 2, 1, 1, 4),
    "depthwise x2 5x5": ((1, 3, 9, 9), 6, 5, 1, 2, 1, 3),
    "pointwise": ((2, 5, 4, 3), 7, 1, 1, 0, 1, 1),
    "grouped 1x1 strided": ((1, 8, 6, 6), 4, 1, 2, 0, 1, 4),
    "asymmetric": ((1, 2, 10, 7), 3, (3, 1), (2, 1), (1, 0), (2, 1), 1),
    "7x7 stem": ((1, 3, 16, 16), 4, 7, 2, 3, 1, 1),
}


def conv_arrays(input_shape, out_channels, kernel, groups):
    kH, kW = (kernel, kernel) if isinstance(kernel, int) else kernel
    return ones(input_shape), ones((out_channels, input_shape[1] // groups, kH, kW))


@pytest.mark.nojit
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv2d_macs_equal_the_multiplications_of_the_reference_kernel(case, einsum_counter):
    input_shape, out_channels, kernel, stride, padding, dilation, groups = CONV_CASES[case]
    x, w = conv_arrays(input_shape, out_channels, kernel, groups)
    reference.conv2d_forward(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert einsum_counter.multiplications == conv2d_macs(input_shape, out_channels, kernel, stride, padding,
                                                         dilation, groups)


@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv2d_useful_macs_equal_the_sum_of_an_all_ones_convolution(case):
    # With x = 1 and w = 1 every product with a real pixel adds 1 to the output, padding adds 0.
    input_shape, out_channels, kernel, stride, padding, dilation, groups = CONV_CASES[case]
    x, w = conv_arrays(input_shape, out_channels, kernel, groups)
    y = reference.conv2d_forward(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    useful = conv2d_macs(input_shape, out_channels, kernel, stride, padding, dilation, groups, dense=False)
    assert y.sum() == useful
    dense = conv2d_macs(input_shape, out_channels, kernel, stride, padding, dilation, groups)
    assert (useful == dense) == (padding in (0, (0, 0)))      # padding is exactly what the two differ by


# (input shape, out channels, kernel, stride, padding, output_padding, groups, dilation)
TRANSPOSED_CASES = {
    "stride 1": ((1, 3, 5, 4), 2, 3, 1, 0, 0, 1, 1),
    "stride 2 (2x up-sampling)": ((2, 4, 4, 4), 3, 4, 2, 1, 0, 1, 1),
    "stride 2, output_padding 1": ((1, 2, 5, 5), 3, 3, 2, 1, 1, 1, 1),
    "stride 3, padding 2, output_padding 2": ((1, 2, 4, 3), 2, 5, 3, 2, 2, 1, 1),
    "dilated": ((1, 2, 5, 5), 2, 3, 1, 2, 1, 1, 2),
    "grouped": ((1, 6, 4, 4), 4, 3, 2, 1, 1, 2, 1),
    "depthwise": ((1, 4, 5, 5), 4, 3, 2, 0, 1, 4, 1),
    "asymmetric": ((1, 2, 4, 6), 3, (3, 2), (2, 1), (1, 0), (1, 0), 1, (1, 2)),
    "padding larger than output_padding rows": ((1, 1, 3, 3), 1, 3, 2, 2, 0, 1, 1),
}


def transposed_arrays(input_shape, out_channels, kernel, groups):
    kH, kW = (kernel, kernel) if isinstance(kernel, int) else kernel
    return ones(input_shape), ones((input_shape[1], out_channels // groups, kH, kW))


@pytest.mark.nojit
@pytest.mark.parametrize("case", list(TRANSPOSED_CASES), ids=list(TRANSPOSED_CASES))
def test_conv_transpose2d_macs_equal_the_multiplications_of_the_reference_kernel(case, einsum_counter):
    input_shape, out_channels, kernel, stride, padding, output_padding, groups, dilation = TRANSPOSED_CASES[case]
    x, w = transposed_arrays(input_shape, out_channels, kernel, groups)
    reference.conv_transpose2d_forward(x, w, stride=stride, padding=padding, output_padding=output_padding,
                                       groups=groups, dilation=dilation)
    assert einsum_counter.multiplications == conv_transpose2d_macs(input_shape, out_channels, kernel, stride,
                                                                   padding, output_padding, groups, dilation)


@pytest.mark.parametrize("case", list(TRANSPOSED_CASES), ids=list(TRANSPOSED_CASES))
def test_conv_transpose2d_useful_macs_equal_the_sum_of_an_all_ones_transposed_convolution(case):
    input_shape, out_channels, kernel, stride, padding, output_padding, groups, dilation = TRANSPOSED_CASES[case]
    x, w = transposed_arrays(input_shape, out_channels, kernel, groups)
    y = reference.conv_transpose2d_forward(x, w, stride=stride, padding=padding, output_padding=output_padding,
                                           groups=groups, dilation=dilation)
    assert y.sum() == conv_transpose2d_macs(input_shape, out_channels, kernel, stride, padding, output_padding,
                                            groups, dilation, dense=False)


def test_counting_a_strided_transposed_convolution_from_its_output_overcounts_by_about_stride_squared():
    # The mistake the module docstring warns about: C_out * H_out * W_out * C_in/g * k * k charges the
    # zeros "inserted" between input pixels. 2x up-sampling of 16 x 16 with a 4x4 kernel, stride 2:
    N, C_in, H, W, C_out, k, s, p = 1, 8, 16, 16, 8, 4, 2, 1
    H_out = (H - 1) * s - 2 * p + (k - 1) + 1                     # 32
    from_output = C_out * H_out * H_out * C_in * k * k
    correct = conv_transpose2d_macs((N, C_in, H, W), C_out, k, s, p)
    assert correct == C_in * C_out * k * k * H * W                  # 262,144: each input pixel x each weight
    assert from_output == 4 * correct                                 # stride**2 too many
    row = profile(nn.ConvTranspose2d(C_in, C_out, k, s, p), (N, C_in, H, W)).rows[0]
    assert row.macs == correct and row.kind == "transposed conv 4x4"


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_conv_formulas_match_the_reference_kernels_on_random_geometries(data):
    groups = data.draw(st.sampled_from([1, 2, 3]))
    C_in = groups * data.draw(st.integers(1, 2))
    C_out = groups * data.draw(st.integers(1, 2))
    kH, kW = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    padding = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    H = data.draw(st.integers(dilation[0] * (kH - 1) + 1, 8))
    W = data.draw(st.integers(dilation[1] * (kW - 1) + 1, 8))
    shape = (1, C_in, H, W)
    counter = EinsumCounter()
    np.einsum = counter
    try:
        y = reference.conv2d_forward(ones(shape), ones((C_out, C_in // groups, kH, kW)), stride=stride,
                                     padding=padding, dilation=dilation, groups=groups)
        assert counter.multiplications == conv2d_macs(shape, C_out, (kH, kW), stride, padding, dilation, groups)
        assert y.sum() == conv2d_macs(shape, C_out, (kH, kW), stride, padding, dilation, groups, dense=False)

        output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
        H_out = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kH - 1) + output_padding[0] + 1
        W_out = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kW - 1) + output_padding[1] + 1
        if min(H_out, W_out) < 1:
            return
        counter.multiplications = 0
        y = reference.conv_transpose2d_forward(ones(shape), ones((C_in, C_out // groups, kH, kW)), stride=stride,
                                               padding=padding, output_padding=output_padding, groups=groups,
                                               dilation=dilation)
        arguments = (shape, C_out, (kH, kW), stride, padding, output_padding, groups, dilation)
        assert counter.multiplications == conv_transpose2d_macs(*arguments)
        assert y.sum() == conv_transpose2d_macs(*arguments, dense=False)
    finally:
        np.einsum = counter._einsum


def test_linear_macs_equal_the_sum_of_an_all_ones_layer():
    layer = nn.Linear(6, 4).double()
    layer.weight.data[...] = 1
    layer.bias.data[...] = 0
    y = layer(ones((3, 6)))
    stats = profile(nn.Sequential(nn.Flatten(), layer), (3, 6, 1, 1), dtype=np.float64).rows[1]
    assert stats.macs == y.sum() == 3 * 6 * 4
    assert stats.flops == 2 * 72 + 3 * 4                         # 2 per MAC + one bias add per output


def test_every_conv_layer_row_uses_the_formula_with_its_own_hyper_parameters():
    layer = nn.Conv2d(6, 12, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=3, bias=True)
    row = profile(layer, (2, 6, 11, 13)).rows[0]
    assert row.output_shape == (2, 12, 6, 9)
    assert row.macs == conv2d_macs((2, 6, 11, 13), 12, (3, 5), (2, 1), (1, 2), (1, 2), 3) == 2 * 12 * 6 * 9 * 2 * 15
    assert row.flops == 2 * row.macs + 2 * 12 * 6 * 9
    assert row.params == 12 * 2 * 15 + 12
    assert row.kind == "group conv 3x5"


def test_conv_formula_checks_its_arguments():
    with pytest.raises(ValueError, match="groups"):
        conv2d_macs((1, 4, 8, 8), 6, 3, groups=3)
    with pytest.raises(ValueError, match="smaller than 1x1"):
        conv2d_macs((1, 4, 2, 2), 6, 5)
    with pytest.raises(ValueError, match="output_padding"):
        conv_transpose2d_macs((1, 4, 4, 4), 4, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="input_shape"):
        conv2d_macs((4, 8, 8), 6, 3)


# ----------------------------------------------------------------------------------------------------
# FLOP rules
# ----------------------------------------------------------------------------------------------------

def test_worked_example_of_the_module_docstring():
    block = nn.Conv2dNormActivation(32, 64, 3)                 # conv (no bias) -> BN -> ReLU
    p = profile(block, (1, 32, 56, 56))
    conv, norm, relu = p.rows
    assert conv.macs == 3 * 3 * 32 * 64 * 56 * 56 == 57_802_752
    assert conv.flops == 115_605_504 and norm.flops == 401_408 and relu.flops == 200_704
    assert (p.macs, p.flops) == (57_802_752, 116_207_616)
    assert profile(block, (1, 32, 56, 56), bn=False, activations=False).flops == 115_605_504


def test_bias_switch_removes_one_add_per_output_element():
    layer = nn.Conv2d(4, 8, 3, padding=1, bias=True)
    with_bias = profile(layer, (1, 4, 10, 10)).flops
    assert with_bias - profile(layer, (1, 4, 10, 10), bias=False).flops == 8 * 10 * 10


@pytest.mark.nojit
@pytest.mark.parametrize("layer, input_shape, flops", [
    (nn.ReLU(), (2, 3, 4, 5), 1 * 120),
    (nn.ReLU6(), (2, 3, 4, 5), 2 * 120),
    (nn.LeakyReLU(0.1), (2, 3, 4, 5), 2 * 120),
    (nn.Hardsigmoid(), (2, 3, 4, 5), 4 * 120),
    (nn.Hardswish(), (2, 3, 4, 5), 5 * 120),
    (nn.Sigmoid(), (2, 3, 4, 5), 4 * 120),
    (nn.SiLU(), (2, 3, 4, 5), 5 * 120),
    (nn.BatchNorm2d(3), (2, 3, 4, 5), 2 * 120),
    (nn.MaxPool2d(3, 2, 1), (1, 2, 8, 8), 8 * 2 * 4 * 4),                 # 9 - 1 comparisons per output
    (nn.MaxPool2d(3, 2, ceil_mode=True), (1, 2, 8, 8), 8 * 2 * 4 * 4),    # ceil_mode: 4 x 4 outputs, not 3 x 3
    (nn.AvgPool2d(3, 2, 1), (1, 2, 8, 8), 9 * 2 * 4 * 4),
    (nn.AdaptiveAvgPool2d(1), (2, 3, 4, 5), 2 * 3 * 20),
    (nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 3, 3), 7 * 2 * 6 * 6),
    (nn.Upsample(scale_factor=2), (1, 2, 3, 3), 0),
    (nn.Dropout(0.5), (2, 3, 4, 5), 0),
    (nn.Identity(), (2, 3, 4, 5), 0),
    (nn.ChannelShuffle(3), (2, 3, 4, 5), 0),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None)
def test_flop_rule_of_each_layer_type(layer, input_shape, flops):
    p = profile(layer, input_shape)
    assert [row.flops for row in p.rows] == [flops]
    assert p.macs == 0


def test_activation_and_bn_switches_remove_exactly_their_rows_flops():
    model = get_model("mobilenet_v3_small")
    full = profile(model, (1, 3, 64, 64))
    lean = profile(model, (1, 3, 64, 64), bn=False, activations=False)
    bn_and_activations = sum(r.flops for r in full.rows if r.kind in ("batchnorm", "activation"))
    assert full.flops - lean.flops == bn_and_activations > 0
    assert full.macs == lean.macs


def test_residual_block_counts_its_add_once_per_output_element():
    block = nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()))
    p = profile(block, (2, 8, 5, 5))
    add = p.rows[-1]
    assert (add.name, add.kind, add.flops, add.macs) == ("(model)", "add", 2 * 8 * 5 * 5, 0)


def test_squeeze_excitation_cost_is_pool_two_small_convs_gate_and_scale():
    C, S, H, W = 16, 4, 6, 5
    p = profile(nn.SqueezeExcitation(C, S), (1, C, H, W))
    by_type = {row.type: row for row in p.rows}
    assert [row.type for row in p.rows] == ["AdaptiveAvgPool2d", "Conv2d", "ReLU", "Conv2d", "Sigmoid",
                                            "SqueezeExcitation"]
    assert by_type["AdaptiveAvgPool2d"].flops == C * H * W
    assert p.macs == 2 * C * S                                  # the two "FC" layers on a 1 x 1 map
    assert p.params == 2 * C * S + S + C
    scale = p.rows[-1]
    assert (scale.kind, scale.flops) == ("se scale", C * H * W)   # one multiply per element of x
    assert p.flops == C * H * W + (2 * C * S + S) + S + (2 * C * S + C) + 4 * C + C * H * W


def test_mobilenet_v2_adds_are_the_blocks_with_a_shortcut_derived_from_its_table():
    from tinycnn.models.mobilenet_v2 import INVERTED_RESIDUAL_SETTING
    size, channels, expected = 112, 32, 0                       # after the stride-2 stem at 224 x 224
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for index in range(n):
            stride = s if index == 0 else 1
            size = -(-size // stride)
            if stride == 1 and channels == c:
                expected += c * size * size                     # one add per element of the block output
            channels = c
    p = profile(get_model("mobilenet_v2"), (1, 3, 224, 224))
    adds = [row for row in p.rows if row.kind == "add"]
    assert len(adds) == 10
    assert sum(row.flops for row in adds) == expected


def test_mobilenext_identity_tensor_multiplier_halves_the_shortcut_adds():
    full = profile(get_model("mobilenext"), (1, 3, 64, 64))
    half = profile(get_model("mobilenext", identity_tensor_multiplier=0.5), (1, 3, 64, 64))
    adds_full = sum(row.flops for row in full.rows if row.kind == "add")
    adds_half = sum(row.flops for row in half.rows if row.kind == "add")
    assert adds_full > 0 and 2 * adds_half == adds_full          # all widths with a shortcut are even
    assert full.macs == half.macs                               # the multiplier saves adds, not MACs


# ----------------------------------------------------------------------------------------------------
# The pass, over the whole zoo
# ----------------------------------------------------------------------------------------------------

@functools.cache
def zoo_model(name):
    """Each zoo model is built once per test session, without drawing its weights: the tests here
    read shapes and counts (and a forward pass on zero weights has the same shapes)."""
    with nn.init.skip_init():
        return get_model(name)


@pytest.mark.parametrize("name", list_models())
def test_shape_only_pass_matches_a_real_forward_pass_for_every_model(name):
    model = zoo_model(name)
    size = max(40, getattr(model, "min_input_size", 0))     # AlexNet needs 63
    shapes = profile(model, (1, 3, size, size))
    real = profile(model, (1, 3, size, size), mode="forward")
    assert shapes.rows == real.rows
    assert shapes.peak_activation_bytes == real.peak_activation_bytes
    assert shapes.unaccounted == [] and shapes.rows


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_of_every_model_is_in_exactly_one_row(name):
    size = max(32, getattr(zoo_model(name), "min_input_size", 0))
    p = profile(zoo_model(name), (1, 3, size, size))
    assert sum(row.params for row in p.rows) == p.params == sum(q.size for q in zoo_model(name).parameters())
    multiply_accumulating = [row for row in p.rows if row.kind == "fc" or "conv" in row.kind
                             or row.kind.startswith("depthwise")]
    assert p.macs == sum(row.macs for row in multiply_accumulating)


def test_profile_leaves_the_model_as_it_was():
    model = get_model("mobilenet_v2", num_classes=10, width_mult=0.35).double()
    model.train()
    model.features[1].eval()                                     # a mixed state must survive too
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    before = model.eval()(x)
    model.train()
    model.features[1].eval()
    state = {k: v.copy() for k, v in model.state_dict().items()}
    profile(model, (1, 3, 32, 32), dtype=np.float64)
    profile(model, (1, 3, 32, 32), dtype=np.float64, mode="forward")
    assert model.training and not model.features[1].training and model.features[2].training
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(np.array_equal(state[k], v) for k, v in model.state_dict().items())   # no BN statistics updated
    np.testing.assert_array_equal(model.eval()(x), before)


def test_profile_restores_the_model_when_the_pass_fails():
    model = get_model("squeezenet1_1")
    with pytest.raises(ValueError, match="at least 17 x 17"):
        profile(model, (1, 3, 16, 16))
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert profile(model, (1, 3, 17, 17)).rows


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(input_shape=(1, 3, 32, 32, 1)), ValueError, "4 positive ints"),
    (dict(input_shape=(1, 3, 0, 32)), ValueError, "4 positive ints"),
    (dict(input_shape="224"), TypeError, "tuple"),
    (dict(mode="fast"), ValueError, "mode"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(bn=1), TypeError, "bn"),
    (dict(input_shape=(1, 4, 32, 32)), ValueError, "3 input channels"),
])
def test_profile_rejects_bad_arguments_clearly(kwargs, error, match):
    arguments = {"input_shape": (1, 3, 32, 32), **kwargs}
    with pytest.raises(error, match=match):
        profile(get_model("resnet18", width_mult=0.25), **arguments)


def test_profile_rejects_a_non_module():
    with pytest.raises(TypeError, match="tinycnn.nn.Module"):
        profile(lambda x: x, (1, 3, 8, 8))


def test_three_numbers_mean_one_image_and_batch_scales_every_count():
    # (Not ShuffleNetV2: its channel split is a view of one image's channels but a copy for a batch, and
    # activation_bytes counts the tensors our engine really makes.)
    model = get_model("mobilenet_v3_small")
    one = profile(model, (3, 64, 64))
    four = profile(model, (4, 3, 64, 64))
    assert one.input_shape == (1, 3, 64, 64)
    assert (four.macs, four.flops, four.activation_bytes) == (4 * one.macs, 4 * one.flops, 4 * one.activation_bytes)
    assert four.params == one.params


def test_unknown_block_types_are_reported_not_silently_counted_as_free():
    class Doubler(nn.Module):                    # arithmetic in its own forward, no extra_flops
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return 2 * self.conv(x)

    p = profile(Doubler(), (1, 2, 4, 4))
    assert p.unaccounted == ["Doubler"]
    assert "Doubler" in p.table()

    class Explained(Doubler):
        def extra_flops(self, input_shape, output_shape):
            return math.prod(output_shape)

    p = profile(Explained(), (1, 2, 4, 4))
    assert p.unaccounted == [] and p.rows[-1].flops == 32


# ----------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------

def test_peak_of_a_chain_is_the_largest_input_plus_output():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 3, stride=2, padding=1),
                          nn.ReLU())
    p = profile(model, (1, 3, 8, 8))
    assert p.peak_activation_bytes == 4 * (16 * 64 + 16 * 64)             # ReLU: its input and output
    assert [row.output_bytes for row in p.rows] == [4 * 16 * 64, 4 * 16 * 64, 4 * 4 * 16, 4 * 4 * 16]
    assert p.activation_bytes == sum(row.output_bytes for row in p.rows)
    assert profile(model, (1, 3, 8, 8), dtype=np.float64).peak_activation_bytes == 2 * p.peak_activation_bytes


def test_a_shortcut_keeps_the_block_input_alive_through_the_block():
    body = nn.Sequential(nn.Conv2d(4, 16, 1), nn.ReLU(), nn.Conv2d(16, 4, 1))
    x, wide = 4 * 64, 16 * 64                                    # elements of x and of the 16-channel maps
    assert profile(body, (1, 4, 8, 8)).peak_activation_bytes == 4 * (wide + wide)
    assert profile(nn.Residual(body), (1, 4, 8, 8)).peak_activation_bytes == 4 * (x + wide + wide)


def test_a_concatenation_needs_its_branches_and_its_result_at_once():
    model = nn.Concat(nn.Conv2d(2, 3, 1), nn.Conv2d(2, 5, 1))
    p = profile(model, (1, 2, 4, 4))
    # The second branch is the last reader of x, so x is gone when the two branches meet in the result.
    assert p.peak_activation_bytes == 4 * 16 * (3 + 5 + 8)
    assert max(4 * 16 * (2 + 3 + 5), 4 * 16 * (3 + 5 + 8)) == p.peak_activation_bytes


def test_resnet_block_peak_counts_the_add_not_the_whole_block():
    # layer1.0 of ResNet-50 at 224: x (64 x 56 x 56) lives until the add, which needs the branch
    # (bn3), the projected shortcut and the sum (256 x 56 x 56 each): 0.8 + 3 * 3.2 MB. The ReLU
    # after the add then needs only the sum and its output.
    p = profile(zoo_model("resnet50"), (1, 3, 224, 224))
    plane = 56 * 56 * 4
    assert p.peak_activation_bytes == 64 * plane + 3 * 256 * plane


# ----------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def v1_profile():
    return profile(get_model("mobilenet_v1"), (1, 3, 224, 224))


def test_table_shows_rows_totals_and_breakdown(v1_profile):
    text = v1_profile.table()
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["layer", "type", "input", "output"]
    assert any(line.startswith("features.1.depthwise.0") and "Conv2d" in line and "3,612,672" in line
               for line in lines)
    assert "568,740,352" in text and "4,231,976" in text
    assert "conv 1x1" in text and "depthwise 3x3" in text
    assert "warning" not in text
    assert "(k*k*C_in/g*C_out*H_out*W_out)" in v1_profile.table(formulas=True)
    assert str(v1_profile) == text and "Profile(MobileNetV1" in repr(v1_profile)


def test_breakdown_by_kind_adds_up_to_the_totals(v1_profile):
    kinds = v1_profile.by_kind()
    assert [t.kind for t in kinds[:4]] == ["conv 1x1", "depthwise 3x3", "conv 3x3", "fc"]
    assert sum(t.macs for t in kinds) == v1_profile.macs
    assert sum(t.params for t in kinds) == v1_profile.params
    assert sum(t.flops for t in kinds) == v1_profile.flops
    assert math.isclose(sum(t.macs_percent for t in kinds), 100.0)
    assert sum(t.layers for t in kinds) == len(v1_profile.rows)


def test_json_and_csv_carry_the_same_numbers(v1_profile):
    data = json.loads(v1_profile.to_json())
    assert data["totals"]["macs"] == v1_profile.macs and data["totals"]["params"] == v1_profile.params
    assert data["totals"]["peak_activation_bytes"] == v1_profile.peak_activation_bytes
    assert len(data["rows"]) == len(v1_profile.rows)
    assert data["rows"][0]["output_shape"] == [1, 32, 112, 112]
    lines = v1_profile.to_csv().splitlines()
    assert lines[0] == ("name,type,kind,input_shape,output_shape,params,macs,flops,output_bytes,formula,"
                        "memory_access,receptive_field,rf_stride,rf_center,forward_ms,backward_ms")
    assert len(lines) == 1 + len(v1_profile.rows)
    assert lines[1].startswith("features.0.0,Conv2d,conv 3x3,1x3x224x224,1x32x112x112,864,10838016,")


def test_totals_under_a_module_prefix(v1_profile):
    block = v1_profile.totals_under("features.1")
    assert block.macs == 3 * 3 * 32 * 112 * 112 + 32 * 64 * 112 * 112
    assert v1_profile.totals_under("features.1").params == 32 * 9 + 64 + 32 * 64 + 128     # BN: 2 per channel
    assert v1_profile.totals_under("features.10").macs != v1_profile.totals_under("features.1").macs


def test_activation_bytes_count_each_tensor_once(v1_profile):
    # Flatten returns a view of the pooled (1, 1024, 1, 1) tensor: its row has output bytes, no new memory.
    flatten = next(row for row in v1_profile.rows if row.type == "Flatten")
    assert v1_profile.activation_bytes == sum(row.output_bytes for row in v1_profile.rows) - flatten.output_bytes
    identity_model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.Identity(), nn.Dropout(0.5))
    p = profile(identity_model, (1, 2, 3, 3))
    assert p.activation_bytes == 4 * 4 * 9 and sum(row.output_bytes for row in p.rows) == 3 * 4 * 4 * 9


def test_summary_line_and_bytes(v1_profile):
    assert v1_profile.param_bytes == 4 * v1_profile.params
    assert "MACs 568,740,352" in v1_profile.summary()


# ----------------------------------------------------------------------------------------------------
# Zoo helpers and plots
# ----------------------------------------------------------------------------------------------------

def test_profile_zoo_and_time_forward(monkeypatch):
    draws = []                                                   # shapes only: the zoo is built without draws
    monkeypatch.setattr(nn.init, "_fill_in_chunks", lambda *args: draws.append(args[0].shape))
    profiles = profile_zoo(32, names=["mobilenet_v3_small", "squeezenet1_1"])
    assert draws == []
    monkeypatch.undo()
    assert list(profiles) == ["mobilenet_v3_small", "squeezenet1_1"]
    assert all(isinstance(p, Profile) and p.input_shape == (1, 3, 32, 32) for p in profiles.values())
    model = get_model("mobilenet_v3_small", num_classes=10)
    model.train()
    seconds = time_forward(model, (3, 32, 32), repeat=2)
    assert seconds > 0 and model.training
    with pytest.raises(ValueError, match="repeat"):
        time_forward(model, (1, 3, 32, 32), repeat=0)


@pytest.fixture
def pyplot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


def test_plot_macs_vs_params_and_time_draw_one_labelled_point_per_model(pyplot, tmp_path):
    from tinycnn import plots
    profiles = profile_zoo(32, names=["mobilenet_v1", "squeezenet1_1", "shufflenet_v2_x0_5"])
    ax = plots.plot_macs_vs_params(profiles)
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == 3
    assert np.allclose(offsets[0], [profiles["mobilenet_v1"].params / 1e6, profiles["mobilenet_v1"].macs / 1e6])
    assert {t.get_text() for t in ax.texts} == set(profiles)
    times = {"mobilenet_v1": 0.004, "squeezenet1_1": 0.002}
    ax = plots.plot_macs_vs_time(profiles, times)
    assert len(ax.collections[0].get_offsets()) == 2                   # models without a time are skipped
    ax.figure.savefig(tmp_path / "zoo.png")
    assert (tmp_path / "zoo.png").stat().st_size > 0
    with pytest.raises(ValueError, match="positive"):
        plots.plot_macs_vs_time(profiles, {"mobilenet_v1": 0})
    with pytest.raises(TypeError, match="Profile"):
        plots.plot_macs_vs_params({"x": 1})


def test_plot_layer_macs_draws_one_bar_per_layer_with_macs(pyplot, v1_profile):
    from tinycnn import plots
    ax = plots.plot_layer_macs(v1_profile)
    bars = ax.patches
    layers_with_macs = [row for row in v1_profile.rows if row.macs > 0]
    assert len(bars) == len(layers_with_macs) == 28                      # 27 conv layers + the FC
    assert math.isclose(sum(bar.get_height() for bar in bars), v1_profile.macs / 1e6)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[0] == "conv 1x1 (94.9%)"
    few = plots.plot_layer_macs(v1_profile, min_percent=5)
    assert 0 < len(few.patches) < 28


def test_plot_zoo_returns_a_figure_and_the_profiles(pyplot):
    from tinycnn import plots
    figure, profiles, times = plots.plot_zoo(resolution=32, names=["mobilenet_v3_small", "ghostnet"])
    assert len(figure.axes) == 1 and set(profiles) == {"mobilenet_v3_small", "ghostnet"} and times == {}
    figure, profiles, times = plots.plot_zoo(resolution=32, names=["mobilenet_v3_small", "squeezenet1_1"],
                                             measure_time=True, repeat=1)
    assert len(figure.axes) == 2 and set(times) == set(profiles) and all(t > 0 for t in times.values())
