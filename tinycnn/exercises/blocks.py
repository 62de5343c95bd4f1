"""Exercises on the building blocks of mobile networks: make_divisible, channel shuffle, SE, h-swish.

References: the layers of :mod:`tinycnn.nn` (``ChannelShuffle``, ``SqueezeExcitation``, ``Hardswish``) and
the models' ``make_divisible``; the solutions are what a student writes in NumPy.
"""
import numpy as np

from .. import nn
from ..models import ShuffleV2Block
from ..models._common import make_divisible as _library_make_divisible
from .checker import FLOAT_DTYPES, Exercise, Mistake, register
from .convolutions import _hand_checkable

TOPIC = "blocks"


# ----------------------------------------------------------------------------------- make_divisible
def make_divisible(value, divisor=8, min_value=None):
    """Round a channel count to the nearest multiple of ``divisor`` (at least ``min_value``, default divisor),
    adding one more ``divisor`` if rounding down lost more than 10% of ``value``."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _make_divisible_cases(rng):
    cases = [dict(value=24.0, divisor=8), dict(value=37.5, divisor=8), dict(value=33, divisor=8),
             dict(value=10, divisor=8), dict(value=3, divisor=8), dict(value=20, divisor=8, min_value=32),
             dict(value=3, divisor=8, min_value=4),
             dict(value=32 * 0.75, divisor=8), dict(value=100, divisor=16)]
    for _ in range(12):
        cases.append(dict(value=float(np.round(rng.uniform(1, 1300), 2)), divisor=int(rng.choice([4, 8, 16]))))
    return cases


def _wrong_make_divisible(rule_90=True, rounding="nearest", use_min=True):
    def wrong(value, divisor=8, min_value=None):
        if rounding == "nearest":
            rounded = int(value + divisor / 2) // divisor * divisor
        elif rounding == "floor":
            rounded = int(value) // divisor * divisor
        else:
            rounded = -(-int(np.ceil(value)) // divisor) * divisor
        if use_min:
            rounded = max(divisor if min_value is None else min_value, rounded)
        if rule_90 and rounded < 0.9 * value:
            rounded += divisor
        return rounded
    return wrong


register(Exercise(
    name="make_divisible", topic=TOPIC,
    statement="round a channel count to a multiple of 8, never losing more than 10%",
    signature="make_divisible(value, divisor=8, min_value=None) -> int",
    reference=_library_make_divisible, solution=make_divisible, make_cases=_make_divisible_cases,
    output_name="channels",
    mistakes=(
        Mistake("you forgot the 10% rule: if rounding down removed more than 10% of value, add one divisor",
                _wrong_make_divisible(rule_90=False)),
        Mistake("you rounded down: round to the *nearest* multiple, int(value + divisor / 2) // divisor * divisor",
                _wrong_make_divisible(rule_90=False, rounding="floor")),
        Mistake("you rounded up: round to the *nearest* multiple, int(value + divisor / 2) // divisor * divisor",
                _wrong_make_divisible(rounding="ceil")),
        Mistake("you forgot the minimum: the result is at least min_value (divisor when None), never 0",
                _wrong_make_divisible(use_min=False)),
    )))


# ---------------------------------------------------------------------------------- channel_shuffle
def channel_shuffle(x, groups):
    """ShuffleNet's channel shuffle: reshape channels to (groups, C/groups), transpose, flatten."""
    N, C, H, W = x.shape
    x = x.reshape(N, groups, C // groups, H, W)        # channel g*k + j -> [g, j]
    x = x.transpose(0, 2, 1, 3, 4)                     # (N, C/groups, groups, H, W)
    return x.reshape(N, C, H, W)                       # channel j*groups + g: the groups interleave


def _shuffle_cases(rng):
    cases = [dict(x=np.arange(6, dtype=np.float64).reshape(1, 6, 1, 1), groups=2),
             dict(x=np.arange(12, dtype=np.float32).reshape(1, 12, 1, 1), groups=3)]
    for _ in range(6):
        groups, per_group = (int(v) for v in rng.integers(1, 6, size=2))
        N, H, W = (int(v) for v in rng.integers(1, 4, size=3))
        dtype = FLOAT_DTYPES[int(rng.integers(2))]
        cases.append(dict(x=rng.standard_normal((N, groups * per_group, H, W)).astype(dtype), groups=groups))
    return cases


register(Exercise(
    name="channel_shuffle", topic=TOPIC,
    statement="ShuffleNet's channel shuffle (reshape g x C/g, transpose, flatten)",
    signature="channel_shuffle(x, groups) -> y",
    reference=lambda x, groups: nn.ChannelShuffle(groups)(x), solution=channel_shuffle, make_cases=_shuffle_cases,
    output_name="y",
    mistakes=(
        Mistake("you swapped the group axes: reshape to (N, groups, C // groups, H, W), not (N, C // groups, groups, "
                "H, W), then transpose", lambda x, groups: channel_shuffle(x, x.shape[1] // groups)),
        Mistake("your output is the input unchanged: reshape alone does not move data, transpose the two channel "
                "axes before flattening", lambda x, groups: x.copy()),
        Mistake("you reversed the channel order instead of interleaving the groups", lambda x, groups: x[:, ::-1].copy()),
    )))


# ----------------------------------------------------------------------------------------------- SE
def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def se_forward(x, w1, b1, w2, b2):
    """Squeeze-and-excitation: average each channel, FC C -> C/r, ReLU, FC C/r -> C, sigmoid, scale x."""
    s = x.mean(axis=(2, 3))                       # squeeze: (N, C)
    z = np.maximum(s @ w1.T + b1, 0)              # (N, C/r)
    gate = 1 / (1 + np.exp(-(z @ w2.T + b2)))     # excitation, sigmoid: (N, C), each in (0, 1)
    return x * gate[:, :, None, None]             # scale each channel of x


def _se_reference(x, w1, b1, w2, b2):
    """``tinycnn.nn.SqueezeExcitation`` with these weights (its FCs are 1x1 convolutions)."""
    C, S = x.shape[1], w1.shape[0]
    layer = nn.SqueezeExcitation(C, S)
    layer.fc1.weight.data, layer.fc1.bias.data = w1.reshape(S, C, 1, 1), b1     # x's dtype: float64 stays float64
    layer.fc2.weight.data, layer.fc2.bias.data = w2.reshape(C, S, 1, 1), b2
    return layer(x)


def _se_cases(rng):
    cases = [dict(x=np.arange(8, dtype=np.float64).reshape(1, 2, 2, 2) / 4 - 1,
                  w1=np.array([[1.0, -1.0]]), b1=np.array([0.5]), w2=np.array([[2.0], [-1.0]]), b2=np.array([0.0, 1.0]))]
    for _ in range(6):
        N, C, H, W = (int(v) for v in rng.integers(1, 6, size=4))
        C, S = 4 * C, C
        dtype = FLOAT_DTYPES[int(rng.integers(2))]
        cases.append(dict(x=rng.standard_normal((N, C, H, W)).astype(dtype),
                          w1=rng.standard_normal((S, C)).astype(dtype), b1=rng.standard_normal(S).astype(dtype),
                          w2=rng.standard_normal((C, S)).astype(dtype), b2=rng.standard_normal(C).astype(dtype)))
    return cases


register(Exercise(
    name="se_forward", topic=TOPIC,
    statement="squeeze-and-excitation forward: GAP, FC, ReLU, FC, sigmoid, channel-wise scaling",
    signature="se_forward(x, w1, b1, w2, b2) -> y   # w1 (C/r, C), b1 (C/r,), w2 (C, C/r), b2 (C,)",
    reference=_se_reference, solution=se_forward, make_cases=_se_cases, output_name="y",
    mistakes=(
        Mistake("you squeezed with the maximum: SE squeezes each channel with its *average* (global average pooling)",
                lambda x, w1, b1, w2, b2: x * _sigmoid(np.maximum(x.max(axis=(2, 3)) @ w1.T + b1, 0) @ w2.T
                                                       + b2)[:, :, None, None]),
        Mistake("you forgot the sigmoid: the gate must lie in (0, 1)",
                lambda x, w1, b1, w2, b2: x * (np.maximum(x.mean(axis=(2, 3)) @ w1.T + b1, 0) @ w2.T
                                               + b2)[:, :, None, None]),
        Mistake("you forgot the ReLU between the two fully connected layers",
                lambda x, w1, b1, w2, b2: x * _sigmoid((x.mean(axis=(2, 3)) @ w1.T + b1) @ w2.T
                                                       + b2)[:, :, None, None]),
        Mistake("you forgot the biases of the fully connected layers",
                lambda x, w1, b1, w2, b2: x * _sigmoid(np.maximum(x.mean(axis=(2, 3)) @ w1.T, 0) @ w2.T)[
                    :, :, None, None]),
        Mistake("you returned the gates, not the scaled feature maps: multiply x by them channel-wise",
                lambda x, w1, b1, w2, b2: _sigmoid(np.maximum(x.mean(axis=(2, 3)) @ w1.T + b1, 0) @ w2.T + b2)),
    )))


def se_param_count(channels, reduction=16):
    """Parameters of an SE block: two FCs C -> C/r -> C with biases, 2*C^2/r + C/r + C."""
    squeezed = channels // reduction
    return channels * squeezed + squeezed + squeezed * channels + channels


def _se_params_cases(rng):
    cases = [dict(channels=64, reduction=16), dict(channels=256, reduction=16), dict(channels=32, reduction=4),
             dict(channels=2048)]
    for _ in range(6):
        reduction = int(rng.choice([2, 4, 8, 16]))
        cases.append(dict(channels=reduction * int(rng.integers(1, 65)), reduction=reduction))
    return cases


register(Exercise(
    name="se_param_count", topic=TOPIC,
    statement="parameter count of an SE block, 2C^2/r plus biases",
    signature="se_param_count(channels, reduction=16) -> int",
    reference=lambda channels, reduction=16: sum(
        p.data.size for p in nn.SqueezeExcitation(channels, channels // reduction).parameters()),
    solution=se_param_count, make_cases=_se_params_cases, output_name="params",
    mistakes=(
        Mistake("you forgot the biases: C/r for the first FC and C for the second",
                lambda channels, reduction=16: 2 * channels * (channels // reduction)),
        Mistake("you counted one fully connected layer: SE has two, C -> C/r and C/r -> C",
                lambda channels, reduction=16: channels * (channels // reduction) + channels // reduction),
        Mistake("you divided by r twice: each FC has C * C/r weights",
                lambda channels, reduction=16: 2 * channels * (channels // reduction) // reduction
                + channels // reduction + channels),
    )))


# ------------------------------------------------------------------------------------------ h-swish
def hswish_forward(x):
    """h-swish(x) = x * ReLU6(x + 3) / 6 (MobileNet V3)."""
    return x * np.clip(x + 3, 0, 6) / 6


def hswish_backward(x, grad_out):
    """grad_x of h-swish: 0 for x <= -3, (2x + 3) / 6 for -3 < x < 3, 1 for x >= 3 (product rule in the middle)."""
    slope = np.where(x <= -3, 0.0, np.where(x < 3, (2 * x + 3) / 6, 1.0))
    return (grad_out * slope).astype(x.dtype)


def _hswish_inputs(rng):
    arrays = [np.array([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0]), np.array([[-6.0, -0.5], [2.0, 7.0]], np.float32)]
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 5))))
        arrays.append((rng.standard_normal(shape) * 4).astype(FLOAT_DTYPES[int(rng.integers(2))]))
    return arrays


def _layer_backward(layer, x, grad_out):
    """``layer``'s input gradient at ``x`` (a forward pass first: it caches what the backward needs)."""
    layer(x)
    return layer.backward(grad_out)


register(Exercise(
    name="hswish_forward", topic=TOPIC,
    statement="h-swish forward, x * ReLU6(x + 3) / 6",
    signature="hswish_forward(x) -> y",
    reference=lambda x: nn.Hardswish()(x), solution=hswish_forward,
    make_cases=lambda rng: [dict(x=x) for x in _hswish_inputs(rng)], output_name="y",
    mistakes=(
        Mistake("you forgot the upper clip: ReLU6 caps x + 3 at 6, so h-swish(x) = x for x >= 3",
                lambda x: x * np.maximum(x + 3, 0) / 6),
        Mistake("you forgot to divide by 6", lambda x: x * np.clip(x + 3, 0, 6)),
        Mistake("you computed h-sigmoid, ReLU6(x + 3) / 6: h-swish multiplies it by x",
                lambda x: np.clip(x + 3, 0, 6) / 6),
        Mistake("you clipped x instead of x + 3: ReLU6(x + 3)", lambda x: x * np.clip(x, 0, 6) / 6),
    )))


def _hswish_backward_cases(rng):
    cases = []
    for x in _hswish_inputs(rng):
        grad_out = np.ones_like(x) if not cases else rng.standard_normal(x.shape).astype(x.dtype)
        cases.append(dict(x=x, grad_out=grad_out))
    return cases


register(Exercise(
    name="hswish_backward", topic=TOPIC,
    statement="h-swish backward (product rule; 0 at x <= -3, 1 at x >= 3)",
    signature="hswish_backward(x, grad_out) -> grad_x",
    reference=lambda x, grad_out: _layer_backward(nn.Hardswish(), x, grad_out), solution=hswish_backward,
    make_cases=_hswish_backward_cases, output_name="grad_x",
    mistakes=(
        Mistake("you forgot the product rule: d/dx [x * h(x)] = h(x) + x * h'(x), with h(x) = ReLU6(x + 3) / 6",
                lambda x, grad_out: grad_out * np.clip(x + 3, 0, 6) / 6),
        Mistake("you differentiated only the h-sigmoid factor: the derivative is ReLU6(x + 3)/6 + x * h'(x)",
                lambda x, grad_out: grad_out * np.where((x > -3) & (x < 3), 1 / 6, 0.0).astype(x.dtype)),
        Mistake("you used (2x + 3) / 6 everywhere: it holds only for -3 < x < 3 (0 below, 1 above)",
                lambda x, grad_out: grad_out * (2 * x + 3) / 6),
        Mistake("you forgot to multiply by grad_out (the chain rule)",
                lambda x, grad_out: hswish_backward(x, np.ones_like(grad_out))),
    )))


# ------------------------------------------------------------------------------- the ReLU family
RELU_KINDS = ("relu", "relu6", "leaky_relu")


def relu_family_forward(x, kind, negative_slope=0.01):
    """ReLU ``max(x, 0)``, ReLU6 ``min(max(x, 0), 6)`` or leaky ReLU (``x`` if ``x > 0`` else ``slope * x``)."""
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "relu6":
        return np.minimum(np.maximum(x, 0), 6)               # capped at 6: survives low-precision arithmetic
    return np.where(x > 0, x, negative_slope * x)             # leaky_relu: a small slope keeps negatives alive


def relu_family_backward(x, grad_out, kind, negative_slope=0.01):
    """grad_x of :func:`relu_family_forward`: ``grad_out`` times 1 where the function has slope 1, else 0 (or
    the leaky slope); at the kinks x = 0 and x = 6 the slope of the flat side, as PyTorch."""
    if kind == "relu":
        slope = x > 0
    elif kind == "relu6":
        slope = (x > 0) & (x < 6)                             # flat below 0 and above 6
    else:
        slope = np.where(x > 0, 1.0, negative_slope)          # leaky_relu
    return (grad_out * slope).astype(x.dtype)


_RELU_LAYERS = {"relu": lambda slope: nn.ReLU(), "relu6": lambda slope: nn.ReLU6(),
                "leaky_relu": lambda slope: nn.LeakyReLU(slope)}


def _relu_family_layer(kind, negative_slope):
    """The ``tinycnn.nn`` layer of ``kind``."""
    return _RELU_LAYERS[kind](negative_slope)


def _relu_family_inputs(rng):
    """(x, kind, slope): the kinks 0 and 6 and both sides of them for every kind, then random arrays."""
    kinks = np.array([-7.0, -6.0, -1.0, 0.0, 0.5, 5.5, 6.0, 7.0])
    inputs = [(kinks, "relu", 0.01), (kinks, "relu6", 0.01), (kinks, "leaky_relu", 0.01),
              (np.array([[-2.0, 0.0], [3.0, 6.0]], np.float32), "leaky_relu", 0.25)]
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 5))))
        x = (rng.standard_normal(shape) * 5).astype(FLOAT_DTYPES[int(rng.integers(2))])
        x.flat[rng.integers(x.size)] = float(rng.choice([0.0, 6.0]))      # a kink in every case
        inputs.append((x, RELU_KINDS[int(rng.integers(3))], float(rng.choice([0.01, 0.1, 0.2]))))
    return inputs


register(Exercise(
    name="relu_family_forward", topic=TOPIC,
    statement="ReLU, ReLU6 and leaky ReLU forward",
    signature="relu_family_forward(x, kind, negative_slope=0.01) -> y   # kind: 'relu', 'relu6' or 'leaky_relu'",
    reference=lambda x, kind, negative_slope=0.01: _relu_family_layer(kind, negative_slope)(x),
    solution=relu_family_forward, output_name="y",
    make_cases=lambda rng: [dict(x=x, kind=kind, negative_slope=slope) for x, kind, slope in _relu_family_inputs(rng)],
    mistakes=(
        Mistake("you forgot ReLU6's upper clip: min(max(x, 0), 6) caps the output at 6",
                lambda x, kind, negative_slope=0.01: relu_family_forward(x, "relu" if kind == "relu6" else kind,
                                                                         negative_slope)),
        Mistake("you clipped ReLU6 to [-6, 6]: it is 0 below 0, like ReLU",
                lambda x, kind, negative_slope=0.01: np.clip(x, -6, 6) if kind == "relu6" else
                relu_family_forward(x, kind, negative_slope)),
        Mistake("you applied the leaky slope on the positive side: leaky ReLU keeps x for x > 0 and multiplies "
                "the negatives by the slope",
                lambda x, kind, negative_slope=0.01: np.where(x > 0, negative_slope * x, x) if kind == "leaky_relu"
                else relu_family_forward(x, kind, negative_slope)),
        Mistake("your leaky ReLU is a plain ReLU: the negatives are multiplied by the slope, not set to 0",
                lambda x, kind, negative_slope=0.01: relu_family_forward(x, "relu" if kind == "leaky_relu" else kind,
                                                                         negative_slope)),
    )))


def _wrong_relu_backward(slope_at_zero=False, slope_at_six=False, upper=True, leaky_sides=False):
    """:func:`relu_family_backward` with one rule broken (see the hints)."""
    def wrong(x, grad_out, kind, negative_slope=0.01):
        positive = (x >= 0) if slope_at_zero else (x > 0)
        if kind == "relu":
            slope = positive
        elif kind == "relu6":
            slope = positive & ((x <= 6) if slope_at_six else (x < 6)) if upper else positive
        elif leaky_sides:
            slope = np.where(positive, negative_slope, 1.0)
        else:
            slope = np.where(positive, 1.0, negative_slope)
        return (grad_out * slope).astype(x.dtype)
    return wrong


register(Exercise(
    name="relu_family_backward", topic=TOPIC,
    statement="ReLU, ReLU6 and leaky ReLU backward, with PyTorch's slopes at the kinks",
    signature="relu_family_backward(x, grad_out, kind, negative_slope=0.01) -> grad_x",
    reference=lambda x, grad_out, kind, negative_slope=0.01: _layer_backward(
        _relu_family_layer(kind, negative_slope), x, grad_out),
    solution=relu_family_backward, output_name="grad_x",
    make_cases=lambda rng: [dict(x=x, grad_out=np.ones_like(x) if index < 3 else
                                 rng.standard_normal(x.shape).astype(x.dtype), kind=kind, negative_slope=slope)
                            for index, (x, kind, slope) in enumerate(_relu_family_inputs(rng))],
    mistakes=(
        Mistake("your gradient at the kink x = 0 is 1: take the slope of the flat side there (0 for ReLU and "
                "ReLU6, the leaky slope), as PyTorch does: test x > 0, not x >= 0",
                _wrong_relu_backward(slope_at_zero=True)),
        Mistake("your ReLU6 gradient at x = 6 is 1: the output is capped there, take 0 (test x < 6, not x <= 6)",
                _wrong_relu_backward(slope_at_six=True)),
        Mistake("your ReLU6 gradient passes above 6: where the output is capped at 6 it does not change with x, "
                "so the gradient is 0",
                _wrong_relu_backward(upper=False)),
        Mistake("you swapped leaky ReLU's slopes: 1 for x > 0, the small slope for x <= 0",
                _wrong_relu_backward(leaky_sides=True)),
        Mistake("you forgot to multiply by grad_out (the chain rule)",
                lambda x, grad_out, kind, negative_slope=0.01: relu_family_backward(x, np.ones_like(grad_out), kind,
                                                                                    negative_slope)),
    )))


# ------------------------------------------------------------------------------- ShuffleNet V2 unit
def shufflenet_v2_unit(x, branch):
    """ShuffleNet V2's stride-1 unit: split the channels in halves, run ``branch`` on the second half,
    concatenate with the untouched first half, shuffle the channels with 2 groups."""
    N, C, H, W = x.shape
    x1, x2 = x[:, :C // 2], x[:, C // 2:]                       # channel split: (N, C/2, H, W) each
    y = np.concatenate([x1, branch(x2)], axis=1)                 # concat, not add: no element-wise op (G4)
    y = y.reshape(N, 2, C // 2, H, W).transpose(0, 2, 1, 3, 4)   # channel shuffle, 2 groups
    return y.reshape(N, C, H, W)


class _Branch:
    """The branch a case hands to the student: a ``tinycnn.nn`` module (in evaluation mode) called on a half."""

    def __init__(self, module, description):
        self.module = module.eval()
        self.description = description

    def __call__(self, x_half):
        return self.module(np.ascontiguousarray(x_half))

    def __repr__(self):
        return self.description


def _negating_branch(channels, dtype):
    """A 1x1 convolution with weight -I: the branch returns minus its input (a case to redo on paper)."""
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    conv.weight.data = -np.eye(channels, dtype=dtype).reshape(channels, channels, 1, 1)
    return _Branch(conv, "branch(h) = -h (a 1x1 conv with weight -I)")


def _shufflenet_unit_cases(rng):
    """x = 0..5 with a negating branch, then the real branch (1x1, BN, ReLU, dw 3x3, BN, 1x1, BN, ReLU)."""
    cases = [dict(x=np.arange(6.0).reshape(1, 6, 1, 1), branch=_negating_branch(3, np.float64)),
             dict(x=_hand_checkable((1, 4, 2, 2)), branch=_negating_branch(2, np.float64))]
    for _ in range(5):
        half = int(rng.choice([1, 3, 4, 5, 6]))
        N, H, W = (int(v) for v in rng.integers(1, 5, size=3))
        dtype = FLOAT_DTYPES[int(rng.integers(2))]
        module = ShuffleV2Block(2 * half, 2 * half, stride=1).branch2.to(dtype)
        for layer in module:                                     # random statistics, so BN is not the identity
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean[...] = rng.standard_normal(half)
                layer.running_var[...] = rng.uniform(0.5, 2.0, half)
        cases.append(dict(x=rng.standard_normal((N, 2 * half, H, W)).astype(dtype),
                          branch=_Branch(module, f"branch(h) = ShuffleNet V2's branch on {half} channels")))
    return cases


def _shufflenet_unit_reference(x, branch):
    """``tinycnn.models.ShuffleV2Block`` (stride 1) with the case's branch as its ``branch2``."""
    channels = x.shape[1]
    unit = ShuffleV2Block(channels, channels, stride=1)
    unit.branch2 = branch.module
    return unit.to(x.dtype).eval()(x)


def _wrong_unit(branch_first_half=False, branch_output_first=False, shuffle_groups="two"):
    """:func:`shufflenet_v2_unit` with one step wrong (see the hints)."""
    def wrong(x, branch):
        C = x.shape[1]
        x1, x2 = x[:, :C // 2], x[:, C // 2:]
        if branch_first_half:
            halves = [branch(x1), x2]
        else:
            halves = [branch(x2), x1] if branch_output_first else [x1, branch(x2)]
        y = np.concatenate(halves, axis=1)
        if shuffle_groups == "none":
            return y
        return channel_shuffle(y, 2 if shuffle_groups == "two" else C // 2)
    return wrong


register(Exercise(
    name="shufflenet_v2_unit", topic=TOPIC,
    statement="ShuffleNet V2's stride-1 unit: channel split, branch on one half, concatenate, shuffle",
    signature="shufflenet_v2_unit(x, branch) -> y   # branch: a function of the (N, C/2, H, W) second half",
    reference=_shufflenet_unit_reference, solution=shufflenet_v2_unit, make_cases=_shufflenet_unit_cases,
    output_name="y",
    mistakes=(
        Mistake("you forgot the channel shuffle: after the concatenation, reshape to (N, 2, C/2, H, W), swap the "
                "two channel axes and flatten, or the halves never mix", _wrong_unit(shuffle_groups="none")),
        Mistake("you shuffled with the group axes swapped: the unit shuffles with 2 groups, reshape to "
                "(N, 2, C/2, H, W) (not (N, C/2, 2, H, W)) before the transpose",
                _wrong_unit(shuffle_groups="swapped")),
        Mistake("you ran the branch on the first half: the first C/2 channels pass untouched, the branch takes "
                "the second half x[:, C/2:]", _wrong_unit(branch_first_half=True)),
        Mistake("you concatenated in the wrong order: the untouched half comes first, concat([x1, branch(x2)])",
                _wrong_unit(branch_output_first=True)),
        Mistake("you added the halves: ShuffleNet V2 concatenates them, which keeps C channels and needs no "
                "element-wise add (guideline G4)",
                lambda x, branch: x[:, :x.shape[1] // 2] + branch(x[:, x.shape[1] // 2:])),
    )))
