"""Exercises on the building blocks of mobile networks: make_divisible, channel shuffle, SE, h-swish.

References: the layers of :mod:`tinycnn.nn` (``ChannelShuffle``, ``SqueezeExcitation``, ``Hardswish``) and
the models' ``make_divisible``; the solutions are what a student writes in NumPy.
"""
import numpy as np

from .. import nn
from ..models._common import make_divisible as _library_make_divisible
from .checker import FLOAT_DTYPES, Exercise, Mistake, register

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


def _hswish_layer_backward(x, grad_out):
    layer = nn.Hardswish()
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
    reference=_hswish_layer_backward, solution=hswish_backward, make_cases=_hswish_backward_cases,
    output_name="grad_x",
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
