"""Exercises on compression: int8 quantisation and dequantisation, choosing channels to prune.

The references come from the library: :func:`tinycnn.quantize.fake_quantize` and
:func:`~tinycnn.quantize.choose_qparams` (the affine int8 scheme of Jacob et al., arXiv:1712.05877, as
PyTorch computes it) and :func:`tinycnn.prune.prune_channels` with the ``"bn"`` criterion (pruning by
batch-norm scale, "network slimming", arXiv:1708.06519), so an exercise cannot drift from what the
library does. Dequantisation, ``(q - zero_point) * scale``, is its own reference: the library only has it
inside ``fake_quantize`` (the tests check that the two agree bit for bit).
"""
import numpy as np

from .. import nn
from ..prune import prune_channels
from ..quantize import choose_qparams, fake_quantize
from .checker import Exercise, Mistake, register

TOPIC = "compression"
INT8_MIN, INT8_MAX = -128, 127


# ------------------------------------------------------------------------------------ quantisation
def quantize_int8(x, scale, zero_point):
    """Affine int8 quantisation: q = clip(round(x / scale) + zero_point, -128, 127) as int8."""
    q = np.round(x / scale) + zero_point               # round half to even, as np.round and PyTorch do
    return np.clip(q, -128, 127).astype(np.int8)      # int8 holds -128..127


def dequantize_int8(q, scale, zero_point):
    """Back to real numbers: x = (q - zero_point) * scale, as float32 (subtract in float: int8 would overflow)."""
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


def _range_to_scale(x_min, x_max):
    """scale and int8 zero point mapping [x_min, x_max] onto [-128, 127] (``choose_qparams``' 8-bit grid,
    which is [0, 255]: the same scale, the zero point moved down by 128)."""
    scale, zero_point, quant_min, _ = choose_qparams(x_min, x_max, bits=8)
    return float(scale), int(zero_point) + INT8_MIN - quant_min


def _quantize_reference(x, scale, zero_point):
    """The integer codes of :func:`tinycnn.quantize.fake_quantize`: its output is ``(q - zero_point) * scale``,
    so ``q = rint(output / scale) + zero_point`` (exact: the output is a whole number of float32 steps)."""
    step = np.float32(scale)
    steps = fake_quantize(x, scale, zero_point, INT8_MIN, INT8_MAX).astype(np.float64) / step
    return (np.rint(steps) + zero_point).astype(np.int8)


def _quantize_cases(rng):
    cases = [dict(x=np.array([-1.0, -0.5, 0.0, 0.26, 1.0, 2.0], np.float32), scale=0.01, zero_point=0),
             dict(x=np.array([0.0, 0.3, 1.27, 2.0], np.float32), scale=0.01, zero_point=-100)]
    for _ in range(6):
        x = (rng.standard_normal(tuple(int(v) for v in rng.integers(1, 6, size=2))) * 3).astype(np.float32)
        scale, zero_point = _range_to_scale(min(float(x.min()), 0.0), max(float(x.max()), 0.0) + 1e-3)
        scale *= float(rng.choice([1.0, 1.0, 0.5]))        # half the scale: some values must clip
        cases.append(dict(x=x, scale=scale, zero_point=zero_point))
    return cases


def _quantize_unclipped(x, scale, zero_point):
    with np.errstate(invalid="ignore", over="ignore"):
        return (np.round(x / scale) + zero_point).astype(np.int64).astype(np.int8)   # wraps around


register(Exercise(
    name="quantize_int8", topic=TOPIC,
    statement="affine int8 quantisation, q = clip(round(x / scale) + zero_point, -128, 127)",
    signature="quantize_int8(x, scale, zero_point) -> q   # int8 array of x's shape",
    reference=_quantize_reference, solution=quantize_int8, make_cases=_quantize_cases, output_name="q",
    mistakes=(
        Mistake("you forgot to clip to [-128, 127]: casting a larger number to int8 wraps around (200 -> -56)",
                _quantize_unclipped),
        Mistake("you truncated instead of rounding: astype(int) cuts towards zero, use np.round first",
                lambda x, scale, zero_point: np.clip(np.trunc(x / scale) + zero_point, INT8_MIN, INT8_MAX)
                .astype(np.int8)),
        Mistake("you forgot the zero point: q = round(x / scale) + zero_point",
                lambda x, scale, zero_point: quantize_int8(x, scale, 0)),
        Mistake("you subtracted the zero point: quantising adds it (dequantising subtracts it)",
                lambda x, scale, zero_point: quantize_int8(x, scale, -zero_point)),
        Mistake("you multiplied by the scale: quantising divides by it",
                lambda x, scale, zero_point: quantize_int8(x, 1 / scale, zero_point)),
    )))


def _dequantize_cases(rng):
    cases = [dict(q=np.array([-128, -1, 0, 1, 127], np.int8), scale=0.5, zero_point=10),
             dict(q=np.array([[-100, 27], [0, 127]], np.int8), scale=0.01, zero_point=-100)]
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(1, 6, size=2))
        cases.append(dict(q=rng.integers(INT8_MIN, INT8_MAX + 1, size=shape).astype(np.int8),
                          scale=float(rng.uniform(1e-3, 0.1)), zero_point=int(rng.integers(-128, 128))))
    return cases


def _dequantize_in_int8(q, scale, zero_point):
    with np.errstate(over="ignore"):
        return (q - np.int8(zero_point)) * scale          # int8 arithmetic wraps, then float64


register(Exercise(
    name="dequantize_int8", topic=TOPIC,
    statement="int8 dequantisation, x = (q - zero_point) * scale as float32",
    signature="dequantize_int8(q, scale, zero_point) -> x   # float32",
    reference=dequantize_int8, solution=dequantize_int8, make_cases=_dequantize_cases, output_name="x",
    mistakes=(
        Mistake("you subtracted in int8: q - zero_point overflows (-128 - 10 wraps to 118); convert q to float32 "
                "first, q.astype(np.float32) - zero_point", _dequantize_in_int8),
        Mistake("you forgot the zero point: x = (q - zero_point) * scale",
                lambda q, scale, zero_point: dequantize_int8(q, scale, 0)),
        Mistake("you added the zero point: dequantising subtracts it", lambda q, scale, zero_point:
                dequantize_int8(q, scale, -zero_point)),
        Mistake("you divided by the scale: dequantising multiplies by it",
                lambda q, scale, zero_point: (q.astype(np.float32) - zero_point) / np.float32(scale)),
    )))


# --------------------------------------------------------------------------------------- pruning
def channels_to_prune(gamma, count):
    """Indices (increasing) of the ``count`` channels with the smallest |gamma| (batch-norm scale)."""
    order = np.argsort(np.abs(gamma), kind="stable")   # least important first; ties keep the lower index
    return np.sort(order[:count])


def _prune_cases(rng):
    cases = [dict(gamma=np.array([0.5, -0.1, 0.9, 0.05, -0.7]), count=2),
             dict(gamma=np.array([1.0, -2.0, 0.5, 3.0], np.float32), count=1),
             dict(gamma=np.array([0.2, 0.1]), count=0)]
    for _ in range(6):
        channels = int(rng.integers(2, 65))
        dtype = (np.float32, np.float64)[int(rng.integers(2))]
        cases.append(dict(gamma=rng.standard_normal(channels).astype(dtype), count=int(rng.integers(1, channels))))
    return cases


class _OneGroupNetwork(nn.Module):
    """The smallest network ``tinycnn.prune`` prunes: a 1x1 conv + BN + ReLU producing ``channels`` maps, read
    by a linear classifier. Its one channel group is scored by the batch norm's ``|gamma|``."""

    def __init__(self, channels):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2dNormActivation(1, channels, 1))
        self.classifier = nn.Sequential(nn.Linear(channels, 1))


def _prune_reference(gamma, count):
    """The channels :func:`tinycnn.prune.prune_channels` (criterion "bn") removes when gamma is the BN scale."""
    channels = len(gamma)
    network = _OneGroupNetwork(channels).to(gamma.dtype)
    network.features[0][1].weight.data[...] = gamma
    kept = prune_channels(network, amount=count / channels, criterion="bn").pruned_indices["features.0.0"]
    return np.setdiff1d(np.arange(channels), kept)


register(Exercise(
    name="channels_to_prune", topic=TOPIC,
    statement="choose the channels to prune: the ones with the smallest |gamma| of batch norm",
    signature="channels_to_prune(gamma, count) -> indices   # int64 array, increasing",
    reference=_prune_reference, solution=channels_to_prune, make_cases=_prune_cases, output_name="indices",
    mistakes=(
        Mistake("you ranked by gamma, not |gamma|: a large negative scale is an important channel",
                lambda gamma, count: np.sort(np.argsort(gamma, kind="stable")[:count])),
        Mistake("you chose the largest |gamma|: prune the channels whose scale is closest to zero",
                lambda gamma, count: np.sort(np.argsort(-np.abs(gamma), kind="stable")[:count])),
        Mistake("you returned the channels to keep, not the ones to prune",
                lambda gamma, count: np.sort(np.argsort(np.abs(gamma), kind="stable")[count:])),
        Mistake("your indices are right but not in increasing order: sort them (np.sort)",
                lambda gamma, count: np.argsort(np.abs(gamma), kind="stable")[:count]),
    )))
