"""Count what a network costs: parameters, multiply-accumulates, FLOPs and activation memory, per layer.

``tinycnn.profile(model, input_shape)`` runs one inference pass that records every module call, and turns
each layer call into a row of a :class:`Profile` (name, type, input and output shapes, parameters, MACs,
FLOPs, bytes of the output). Every number comes from a formula written below, and the tests check the
formulas against the multiplies that the NumPy reference kernels actually perform and against the
figures published in the papers (``tests/test_profile.py``, ``tests/test_profile_published.py``).

Two counts, two conventions
---------------------------
**MACs** (multiply-accumulates, the papers' "Mult-Adds" / "MAdds"; ShuffleNet and GhostNet call the
same number "FLOPs") count only the products of convolutions and fully connected layers, one per
``y += w * x``. This is the number in the MobileNet, ShuffleNet, GhostNet, SqueezeNet and ResNet tables.

**FLOPs** count every floating-point operation of an inference pass under these rules (per output
element unless stated):

=================================  =====  ===============================================================
layer                              FLOPs  why
=================================  =====  ===============================================================
Conv2d, ConvTranspose2d, Linear    2/MAC  one multiply + one add per MAC (a fused multiply-add is 2 FLOPs)
  ... their bias (switch ``bias``)   1    one add per output element
BatchNorm2d (switch ``bn``)          2    inference form ``x * scale + shift`` (per-channel constants
                                          folded from mean, var, eps, gamma, beta)
ReLU (switch ``activations``)        1    ``max(x, 0)``
ReLU6, LeakyReLU                     2    ``min(max(x, 0), 6)``; ``max(x, slope * x)``
Hardsigmoid                          4    ``min(max(x + 3, 0), 6) * (1/6)``
Hardswish                            5    ``x * hardsigmoid(x)``
Sigmoid                              4    ``1 / (1 + exp(-x))``: negate, exp, add, divide (exp counted as 1)
SiLU                                 5    ``x * sigmoid(x)``
MaxPool2d                       k*k - 1   comparisons per output (a ``ceil_mode`` window too)
AvgPool2d                         k*k     ``k*k - 1`` adds and one multiply by ``1/(k*k)``
AdaptiveAvgPool2d(1)              H*W     per output: ``H*W - 1`` adds and one multiply (other sizes:
                                          the bin's size per output)
Upsample                         0 / 7    nearest copies; bilinear: 4 multiplies + 3 adds
residual add (inside a block)        1    per added element (MobileNeXt: only the shortcut channels)
SE scaling (inside SE blocks)        1    one multiply per element of the scaled tensor
Dropout (eval), Identity, Flatten,   0    data movement only
ChannelShuffle, concatenation
=================================  =====  ===============================================================

The switches ``bias``, ``bn`` and ``activations`` of :func:`profile` leave those FLOPs out (a deployed
network folds batch norm into the preceding convolution; some tools count neither activations nor
bias). ``2 per MAC`` is the usual rule; strictly, a dot product of ``K`` terms needs ``K`` multiplies and
``K - 1`` adds, so without a bias the rule counts one add per output element too many -- and with a bias
it is exact (``2K``) if the bias is not counted again, which is why the bias has its own switch.

Worked example (checked in ``tests/test_profile.py``): ``Conv2dNormActivation(32, 64, 3)`` (3x3 conv
without bias, batch norm, ReLU) on a ``(1, 32, 56, 56)`` input::

    conv  MACs  = k*k * C_in * C_out * H_out * W_out = 3*3 * 32 * 64 * 56 * 56 = 57,802,752
          FLOPs = 2 * MACs                                                     = 115,605,504
    BN    FLOPs = 2 * 64 * 56 * 56                                             =     401,408
    ReLU  FLOPs = 1 * 64 * 56 * 56                                             =     200,704
    total MACs  = 57,802,752;  FLOPs = 116,207,616  (115,605,504 with bn=False, activations=False)

Convolution formulas (``N`` images, ``g`` groups, ``k_h x k_w`` kernel)
---------------------------------------------------------------------
* ``Conv2d``: ``N * C_out * H_out * W_out * (C_in/g) * k_h * k_w`` -- every product a direct
  (im2col) implementation computes, *including* products with the zero padding, as the papers count.
  Depthwise (``g = C_in``): ``N * C_out * H_out * W_out * k_h * k_w``; pointwise: ``N*C_in*C_out*H*W``;
  dilation changes ``H_out, W_out`` but not the count per output; grouped: ``1/g`` of the dense count.
* ``ConvTranspose2d``: ``N * C_in * (C_out/g) * k_h * k_w * H_in * W_in`` -- each *input* pixel times
  each weight once (a transposed convolution scatters), whatever the stride. Counting it from the output
  instead, ``C_out*H_out*W_out*(C_in/g)*k*k``, charges the ``s*s - 1`` zeros that a stride-``s``
  transposed convolution "inserts" between input pixels and overcounts by about ``s*s`` -- a classic
  mistake of FLOP counters. Products that land in the cropped ``padding`` border are counted (what the
  scatter computes), just as ``Conv2d`` counts its products with padding.
* :func:`conv2d_macs` and :func:`conv_transpose2d_macs` also give the *useful* count (``dense=False``):
  only products of a real input pixel that reach the output.

Memory
------
``output_bytes`` of a row is ``prod(output_shape) * itemsize``; ``param_bytes`` is ``params * itemsize``;
``activation_bytes`` adds up every distinct tensor the pass makes (what training keeps, roughly).
``peak_activation_bytes`` models an inference engine that frees each tensor after its last use. The pass
is cut into moments: a layer call uses its input and output; the code a block runs itself (residual add,
concatenation, SE scaling) is one more moment, which uses its result, the outputs of the block's parts
that no layer read, and the block's input when it adds or scales it back (so a shortcut keeps its tensor
alive through the whole block). A tensor is alive from the first to the last moment that uses it; the
peak is the largest total. Views (``Flatten``) share their base's memory; the input image counts,
parameters do not. Limitation: a part's output that another part also read is not kept for the block's
own code (GhostNet's intrinsic maps feed the cheap operation *and* the concatenation), which
underestimates such blocks by that tensor.

Receptive field, memory access cost, measured time
--------------------------------------------------
Each row also carries the measures the lightweight-CNN articles reason with:

* ``receptive_field``, ``rf_stride``, ``rf_center``: the input window one output pixel sees, the
  effective stride between neighbouring outputs and the window's centre for output pixel ``(0, 0)``,
  followed through the pass by :mod:`tinycnn.receptive_field` (convolutions, dilation, pooling; a
  branching block keeps the largest field of its paths). ``Profile.receptive_field`` is the last row's.
* ``memory_access``: elements read and written, input + output + weights -- ShuffleNet V2's "memory
  access cost" (arXiv:1807.11164, Sec. 2), ``hw(c1 + c2) + c1*c2`` for a 1x1 convolution; views and
  layers that return their input cost 0; a residual add reads two operands and writes one.
  ``Profile.memory_access`` and ``memory_access_bytes`` are the totals.
* ``forward_ms`` (and ``backward_ms``): ``mode="time"`` runs the real layers ``repeat`` times after a
  warm-up and reports each call's median *own* time (a block's row: its time minus its parts'), so a
  table shows MACs, memory access and milliseconds side by side. FLOPs are not latency.

How the pass runs
-----------------
Every module's ``forward`` is wrapped for the duration of one pass, so each call is recorded with its
input and output (the wrappers are removed afterwards, also on error). ``mode="shapes"`` (default) also
replaces the ``forward`` of the computing layers (convolutions, linear, batch norm, activations,
pooling, up-sampling) by a function that checks the input shape and returns zeros of the output shape:
nothing is multiplied, so ResNet-50 at 224 x 224 takes milliseconds and no numba kernel compiles.
Data movement (``Identity``, ``Dropout``, ``Flatten``, ``ChannelShuffle``) and the blocks' own code
(adds, concatenations, slicing) run for real on those zeros, so the model's own control flow decides
which layers run and in which order. ``mode="forward"`` runs the real layers on random input; the tests
check that both modes give the same rows and the same peak for every model of the zoo. Either way the
model is in evaluation mode during the pass and its train/eval flags are restored afterwards.

Blocks: a module with children says what its own ``forward`` computes. A block class either defines
``extra_flops(input_shape, output_shape) -> int`` (every :class:`tinycnn.nn.ShortcutBlock`, hence
``Residual``, the inverted residuals, the sandglass, ghost and ResNet blocks; ``SqueezeExcitation``;
the model zoo's other blocks that compute in their own ``forward``), or declares ``plain_container =
True`` (it only chains, concatenates, splits or slices: ``Sequential``, ``Concat``, every model). A new
model file needs no edit here. A block type that does neither is reported in ``Profile.unaccounted``
(and in the table's footer): its own arithmetic, if any, is missing.
"""
import csv
import io
import json
import math
import numbers
import statistics
import time
from collections import OrderedDict, namedtuple
from dataclasses import asdict, dataclass

import numpy as np

from kernels._validate import as_pair, conv_geometry, conv_transpose_geometry, pool_geometry

from . import nn
from .nn.pooling import _ceil_mode_extra, adaptive_bins
from .receptive_field import field_center, receptive_fields

__all__ = ["profile", "Profile", "LayerStats", "KindTotals", "conv2d_macs", "conv_transpose2d_macs",
           "profile_zoo", "time_forward"]


# ----------------------------------------------------------------------------------------------------
# Convolution formulas (also public: the tests compare them with the reference kernels' multiplies)
# ----------------------------------------------------------------------------------------------------

def _count_in_range(count, step, offset, low, high):
    """How many ``i`` in ``0 .. count-1`` have ``low <= step*i + offset <= high``."""
    first = max(0, -((offset - low) // step))          # ceil((low - offset) / step)
    last = min(count - 1, (high - offset) // step)     # floor((high - offset) / step)
    return max(0, last - first + 1)


def _conv_useful_taps(size, out_size, kernel, stride, padding, dilation):
    """Pairs (output position o, kernel tap i) of one axis whose input position ``o*s - p + d*i`` is real."""
    return sum(_count_in_range(out_size, stride, dilation * i - padding, 0, size - 1) for i in range(kernel))


def _transposed_useful_taps(size, out_size, kernel, stride, padding, dilation):
    """Pairs (input position h, kernel tap i) of one axis whose output position ``h*s - p + d*i`` is kept."""
    return sum(_count_in_range(size, stride, dilation * i - padding, 0, out_size - 1) for i in range(kernel))


def _check_input_shape(input_shape, name="input_shape"):
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__"):
        raise TypeError(f"{name} must be a tuple of ints (N, C, H, W); got {input_shape!r}")
    shape = tuple(input_shape)
    if len(shape) != 4 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"{name} must be 4 positive ints (N, C, H, W); got {input_shape!r}")
    return tuple(int(s) for s in shape)


def conv2d_macs(input_shape, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, dense=True):
    """Multiply-accumulates of a 2-D convolution (standard, strided, dilated, grouped, depthwise, 1x1).

    Parameters
    ----------
    input_shape : (N, C_in, H, W)
    out_channels, kernel_size, stride, padding, dilation, groups
        As :class:`tinycnn.nn.Conv2d` (ints or ``(h, w)`` pairs).
    dense : bool
        True (default, the papers' convention): every product of an im2col implementation,
        ``N * C_out * H_out * W_out * (C_in/groups) * kH * kW``, products with the zero padding included.
        False: only products with a real input pixel (a border output pixel of a padded 3x3 conv
        reads 4 or 6 real pixels, not 9).

    Returns
    -------
    int

    Example: VGG's conv2_1 (112 x 112 x 64 -> 128, 3x3) costs ``9*64*128*112*112 = 924,844,032`` MACs; its
    depthwise-separable version ``9*64*112*112 + 64*128*112*112 = 109,985,792``, a ratio of
    ``1/C_out + 1/k^2 = 1/128 + 1/9`` (MobileNet V1, arXiv:1704.04861, Sec. 3.1).
    """
    N, C_in, H, W = _check_input_shape(input_shape)
    kH, kW = as_pair(kernel_size, "kernel_size", 1)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1 or C_in % groups:
        raise ValueError(f"groups must be a positive int dividing C_in={C_in}; got {groups!r}")
    geometry = conv_geometry((N, C_in, H, W), (out_channels, C_in // groups, kH, kW), stride, padding,
                             dilation, groups)
    _, C_out, H_out, W_out = geometry.output_shape
    per_output_channel = N * (C_in // groups)
    if dense:
        return per_output_channel * C_out * H_out * W_out * kH * kW
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
    taps_h = _conv_useful_taps(H, H_out, kH, sh, ph, dh)
    taps_w = _conv_useful_taps(W, W_out, kW, sw, pw, dw)
    return per_output_channel * C_out * taps_h * taps_w


def conv_transpose2d_macs(input_shape, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                          dilation=1, dense=True):
    """Multiply-accumulates of a transposed convolution (arguments in :class:`tinycnn.nn.ConvTranspose2d` order).

    Parameters
    ----------
    input_shape : (N, C_in, H, W)
    out_channels, kernel_size, stride, padding, output_padding, groups, dilation
    dense : bool
        True (default): ``N * C_in * (C_out/groups) * kH * kW * H * W``, each input pixel times each
        weight once -- what the scatter (GEMM + col2im) computes, including products that fall in the
        ``padding`` border and are cropped. Neither the stride nor ``output_padding`` changes it.
        False: only the products that land inside the output.

    Returns
    -------
    int

    Note: counting from the output, ``C_out * H_out * W_out * (C_in/groups) * kH * kW``, is wrong for
    ``stride > 1``: it charges the multiplications by the zeros inserted between input pixels (about
    ``stride**2`` times too many).
    """
    N, C_in, H, W = _check_input_shape(input_shape)
    kH, kW = as_pair(kernel_size, "kernel_size", 1)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1 or out_channels % groups:
        raise ValueError(f"groups must be a positive int dividing out_channels={out_channels}; got {groups!r}")
    geometry = conv_transpose_geometry((N, C_in, H, W), (C_in, out_channels // groups, kH, kW), stride, padding,
                                       output_padding, groups, dilation)
    _, C_out, H_out, W_out = geometry.output_shape
    per_input_channel = N * (C_out // groups)
    if dense:
        return per_input_channel * C_in * H * W * kH * kW
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
    taps_h = _transposed_useful_taps(H, H_out, kH, sh, ph, dh)
    taps_w = _transposed_useful_taps(W, W_out, kW, sw, pw, dw)
    return per_input_channel * C_in * taps_h * taps_w


# ----------------------------------------------------------------------------------------------------
# Per-layer rules: output shape (for mode="shapes") and cost
# ----------------------------------------------------------------------------------------------------

# What a rule returns: the row's kind, its MACs, its FLOPs split by switch, and the formula in words.
_Cost = namedtuple("_Cost", "kind macs mac_flops bias_flops other_flops switch formula")
# switch: which profile() switch controls other_flops: None (always counted), "bn" or "activations".

_ACTIVATION_FLOPS = {nn.ReLU: 1, nn.ReLU6: 2, nn.LeakyReLU: 2, nn.Hardsigmoid: 4, nn.Hardswish: 5, nn.Sigmoid: 4,
                     nn.SiLU: 5}


def _elements(shape):
    return math.prod(shape)


def _shape_text(shape):
    return "x".join(str(s) for s in shape)


def _conv_kind(layer):
    kH, kW = layer.kernel_size
    kernel = f"{kH}x{kW}"
    if layer.groups > 1 and layer.groups == layer.in_channels:
        return f"depthwise {kernel}"
    return f"conv {kernel}" if layer.groups == 1 else f"group conv {kernel}"


def _conv2d_cost(layer, input_shape, output_shape):
    N, C_in = input_shape[:2]
    _, C_out, H_out, W_out = output_shape
    kH, kW = layer.kernel_size
    per_group = C_in // layer.groups
    macs = conv2d_macs(input_shape, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                       layer.dilation, layer.groups)
    outputs = _elements(output_shape)
    batch = f"{N}*" if N > 1 else ""
    formula = f"{batch}{kH}*{kW}*{per_group}*{C_out}*{H_out}*{W_out}  (k*k*C_in/g*C_out*H_out*W_out)"
    bias = outputs if layer.bias is not None else 0
    return _Cost(_conv_kind(layer), macs, 2 * macs, bias, 0, None, formula)


def _conv_transpose2d_cost(layer, input_shape, output_shape):
    N, C_in, H, W = input_shape
    kH, kW = layer.kernel_size
    per_group = layer.out_channels // layer.groups
    macs = conv_transpose2d_macs(input_shape, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                                 layer.output_padding, layer.groups, layer.dilation)
    batch = f"{N}*" if N > 1 else ""
    formula = f"{batch}{kH}*{kW}*{C_in}*{per_group}*{H}*{W}  (k*k*C_in*C_out/g*H_in*W_in: per input pixel)"
    kind = f"transposed conv {kH}x{kW}" if layer.groups == 1 else f"transposed group conv {kH}x{kW}"
    bias = _elements(output_shape) if layer.bias is not None else 0
    return _Cost(kind, macs, 2 * macs, bias, 0, None, formula)


def _linear_cost(layer, input_shape, output_shape):
    rows = _elements(input_shape[:-1])
    macs = rows * layer.in_features * layer.out_features
    batch = f"{rows}*" if rows > 1 else ""
    formula = f"{batch}{layer.in_features}*{layer.out_features}  (in*out)"
    bias = _elements(output_shape) if layer.bias is not None else 0
    return _Cost("fc", macs, 2 * macs, bias, 0, None, formula)


def _batchnorm_cost(layer, input_shape, output_shape):
    return _Cost("batchnorm", 0, 0, 0, 2 * _elements(output_shape), "bn", "2 per element (x*scale + shift)")


def _activation_cost(layer, input_shape, output_shape):
    per_element = next(v for cls, v in _ACTIVATION_FLOPS.items() if isinstance(layer, cls))
    return _Cost("activation", 0, 0, 0, per_element * _elements(output_shape), "activations",
                 f"{per_element} per element")


def _max_pool_cost(layer, input_shape, output_shape):
    kH, kW = layer._kernel
    window = kH * kW
    return _Cost("pooling", 0, 0, 0, (window - 1) * _elements(output_shape), None,
                 f"{window - 1} comparisons per output")


def _avg_pool_cost(layer, input_shape, output_shape):
    kH, kW = as_pair(layer.kernel_size, "kernel_size", 1)
    window = kH * kW
    return _Cost("pooling", 0, 0, 0, window * _elements(output_shape), None,
                 f"{window} per output ({window - 1} adds, 1 multiply)")


def _global_pool_cost(layer, input_shape, output_shape):
    N, C, H, W = input_shape
    _, _, h, w = output_shape
    if (h, w) == (1, 1):
        return _Cost("pooling", 0, 0, 0, N * C * H * W, None, f"{H}*{W} per output ({H * W - 1} adds, 1 multiply)")
    # adaptive bins: each output averages its bin (bin - 1 adds, 1 multiply); bins may overlap
    rows = sum(end - start for start, end in adaptive_bins(H, h))
    columns = sum(end - start for start, end in adaptive_bins(W, w))
    return _Cost("pooling", 0, 0, 0, N * C * rows * columns, None, "bin size per output (adaptive bins)")


def _upsample_cost(layer, input_shape, output_shape):
    per_element = 7 if layer.mode == "bilinear" else 0
    return _Cost("upsample", 0, 0, 0, per_element * _elements(output_shape), None,
                 "7 per output (4 multiplies, 3 adds)" if per_element else "copies only")


def _free_cost(layer, input_shape, output_shape):
    return _Cost("data movement", 0, 0, 0, 0, None, "no arithmetic")


def _same_shape(layer, input_shape):
    return tuple(input_shape)


def _conv2d_shape(layer, input_shape):
    if len(input_shape) != 4 or input_shape[1] != layer.in_channels:
        raise ValueError(f"Conv2d expects {layer.in_channels} input channels (axis 1) of an (N, C, H, W) input; "
                         f"got input of shape {tuple(input_shape)}")
    weight_shape = (layer.out_channels, layer.in_channels // layer.groups) + layer.kernel_size
    return conv_geometry(input_shape, weight_shape, layer.stride, layer.padding, layer.dilation,
                         layer.groups).output_shape


def _conv_transpose2d_shape(layer, input_shape):
    if len(input_shape) != 4 or input_shape[1] != layer.in_channels:
        raise ValueError(f"ConvTranspose2d expects {layer.in_channels} input channels (axis 1); got input of shape "
                         f"{tuple(input_shape)}")
    weight_shape = (layer.in_channels, layer.out_channels // layer.groups) + layer.kernel_size
    return conv_transpose_geometry(input_shape, weight_shape, layer.stride, layer.padding, layer.output_padding,
                                   layer.groups, layer.dilation).output_shape


def _batchnorm_shape(layer, input_shape):
    if len(input_shape) != 4 or input_shape[1] != layer.num_features:
        raise ValueError(f"BatchNorm2d expects {layer.num_features} channels of an (N, C, H, W) input; got input of "
                         f"shape {tuple(input_shape)}")
    return tuple(input_shape)


def _linear_shape(layer, input_shape):
    if len(input_shape) < 1 or input_shape[-1] != layer.in_features:
        raise ValueError(f"Linear expects input of shape (N, {layer.in_features}); got shape {tuple(input_shape)}")
    return tuple(input_shape[:-1]) + (layer.out_features,)


def _max_pool_shape(layer, input_shape):
    N, C, H, W = input_shape
    (kH, kW), (sH, sW), (pH, pW) = layer._kernel, layer._stride, layer._padding
    if layer.ceil_mode:     # the layer pads the far end with -inf so that the last partial window fits
        H += _ceil_mode_extra(H, kH, sH, pH)
        W += _ceil_mode_extra(W, kW, sW, pW)
    return pool_geometry((N, C, H, W), layer._kernel, layer._stride, layer._padding)[3]


def _avg_pool_shape(layer, input_shape):
    return pool_geometry(tuple(input_shape), layer.kernel_size, layer.stride, layer.padding)[3]


def _global_pool_shape(layer, input_shape):
    N, C, _, _ = input_shape
    return (N, C) + as_pair(layer.output_size, "output_size", 1)


def _upsample_shape(layer, input_shape):
    N, C, H, W = input_shape
    (H_out, W_out), _ = layer._output_size_and_scales(H, W)
    return (N, C, H_out, W_out)


# layer type -> (cost rule, output-shape rule for mode="shapes" or None to run the layer). Subclasses match
# too (nearest class in the MRO).
_LAYER_RULES = OrderedDict([
    (nn.Conv2d, (_conv2d_cost, _conv2d_shape)),
    (nn.ConvTranspose2d, (_conv_transpose2d_cost, _conv_transpose2d_shape)),
    (nn.Linear, (_linear_cost, _linear_shape)),
    (nn.BatchNorm2d, (_batchnorm_cost, _batchnorm_shape)),
    *[(cls, (_activation_cost, _same_shape)) for cls in _ACTIVATION_FLOPS],
    (nn.MaxPool2d, (_max_pool_cost, _max_pool_shape)),
    (nn.AvgPool2d, (_avg_pool_cost, _avg_pool_shape)),
    (nn.AdaptiveAvgPool2d, (_global_pool_cost, _global_pool_shape)),
    (nn.Upsample, (_upsample_cost, _upsample_shape)),
    # Data movement runs for real in both modes: no arithmetic, and the memory model needs to see that
    # Identity and Dropout return their input and Flatten a view of it.
    (nn.Dropout, (_free_cost, None)),
    (nn.Identity, (_free_cost, None)),
    (nn.Flatten, (_free_cost, None)),
    (nn.ChannelShuffle, (_free_cost, None)),
])


def _lookup(registry, module):
    """The entry of ``registry`` for ``type(module)`` or its nearest base class, else None."""
    for cls in type(module).__mro__:
        if cls in registry:
            return registry[cls]
    return None


# ----------------------------------------------------------------------------------------------------
# Blocks: arithmetic written in a block's own forward (not in a child layer)
# ----------------------------------------------------------------------------------------------------

def _block_extra_flops(block, input_shape, output_shape):
    """``(flops, accounted)`` of the arithmetic in ``block``'s own forward.

    A block declares it: ``extra_flops(input_shape, output_shape)`` (a residual add), or the class
    attribute ``plain_container = True`` (it only chains, concatenates, splits or slices its children:
    ``Sequential``, ``Concat``, every model's ``LayerChain``...). Anything else is reported as unaccounted.
    """
    method = getattr(block, "extra_flops", None)
    if callable(method):
        return int(method(tuple(input_shape), tuple(output_shape))), True
    return 0, bool(getattr(block, "plain_container", False))


# ----------------------------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerStats:
    """One row of a :class:`Profile`: one call of a layer (or of a block's own arithmetic).

    Attributes
    ----------
    name : str
        Dotted module name (``features.1.depthwise.0``); the model itself is ``"(model)"``.
    type : str
        Class name (``Conv2d``).
    kind : str
        ``conv 3x3``, ``depthwise 3x3``, ``conv 1x1``, ``group conv 1x1``, ``transposed conv 4x4``,
        ``fc``, ``batchnorm``, ``activation``, ``pooling``, ``upsample``, ``add`` (residual add),
        ``se scale``, ``data movement`` or ``unknown``.
    input_shape, output_shape : tuple of int
    params : int
        Parameters owned by this layer (a shared parameter counts at its first use).
    macs : int
    flops : int
        Under the switches given to :func:`profile`.
    output_bytes : int
    formula : str
        How ``macs`` (or ``flops``) was computed, in numbers.
    receptive_field : (int, int) or None
        Size ``(height, width)`` of the input window one output pixel sees (``tinycnn.receptive_field``);
        None after a layer without a fixed window (transposed convolution, up-sampling).
    rf_stride : (int, int) or None
        Effective stride (jump): input pixels between neighbouring output pixels.
    rf_center : (float, float) or None
        Centre of the field of output pixel ``(0, 0)`` in input pixel coordinates; pixel ``(i, j)``'s is
        ``rf_center + (i, j) * rf_stride``.
    memory_access : int
        Elements read and written: input + output + weights (ShuffleNet V2's memory access cost, module
        docstring); 0 for views and layers that return their input.
    forward_ms, backward_ms : float or None
        Median measured milliseconds of this call (``mode="time"``; ``backward_ms`` with ``backward=True``).
    """

    name: str
    type: str
    kind: str
    input_shape: tuple
    output_shape: tuple
    params: int
    macs: int
    flops: int
    output_bytes: int
    formula: str
    receptive_field: tuple = None
    rf_stride: tuple = None
    rf_center: tuple = None
    memory_access: int = 0
    forward_ms: float = None
    backward_ms: float = None


KindTotals = namedtuple("KindTotals", "kind layers params macs flops params_percent macs_percent flops_percent")
KindTotals.__doc__ = "Totals of the rows of one kind (``Profile.by_kind``); percentages of the model's totals."

Totals = namedtuple("Totals", "params macs flops")
Totals.__doc__ = "Sums over some rows of a Profile (``Profile.totals_under``)."


def _si(value, unit=""):
    """``568.7M``-style text (k, M, G)."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{prefix}{unit}"
    return f"{value:g}{unit}"


def _pair_text(pair):
    """``(35, 35)`` -> ``35x35``; None -> ``-``."""
    return "-" if pair is None else "x".join(f"{v:g}" for v in pair)


def _ms_text(ms):
    return "-" if ms is None else f"{ms:.3f}"


def _bytes_text(value):
    for factor, prefix in ((2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if value >= factor:
            return f"{value / factor:.2f} {prefix}"
    return f"{value} B"


class Profile:
    """Per-layer and total costs of one inference pass; made by :func:`profile`.

    Attributes
    ----------
    rows : list of LayerStats
        In execution order (a block's own arithmetic comes after its parts).
    params : int
        Every parameter of the model (``sum(p.size for p in model.parameters())``).
    param_bytes : int
    macs, flops : int
        Totals of the rows.
    activation_bytes : int
        Bytes of every distinct tensor the pass makes, the input excluded (roughly what a training pass
        keeps for the backward pass). Views (``Flatten``) and layers that return their input (``Identity``,
        ``Dropout`` in evaluation mode) add nothing, so this is at most the sum of the rows' ``output_bytes``.
    peak_activation_bytes : int
        Largest set of tensors alive at once in an inference pass that frees tensors after their last use
        (module docstring).
    input_shape : tuple
    dtype : numpy.dtype
    model_name : str
    options : dict
        The switches (``bias``, ``bn``, ``activations``) and ``mode``.
    unaccounted : list of str
        Block or layer types whose own arithmetic is unknown (empty for every model of the zoo).
    receptive_field : (int, int) or None
        The last row's receptive field (``LayerStats.receptive_field``).
    memory_access, memory_access_bytes : int
        Elements (bytes) read and written by all rows: input + output + weights of each layer.
    forward_ms, backward_ms : float or None
        ``mode="time"``: median milliseconds of the whole forward (backward) pass; the rows hold each
        layer's own time.
    """

    def __init__(self, rows, params, input_shape, dtype, model_name, options, peak_activation_bytes,
                 activation_bytes, unaccounted):
        self.rows = list(rows)
        self.params = int(params)
        self.input_shape = tuple(input_shape)
        self.dtype = np.dtype(dtype)
        self.model_name = model_name
        self.options = dict(options)
        self.peak_activation_bytes = int(peak_activation_bytes)
        self.activation_bytes = int(activation_bytes)
        self.unaccounted = sorted(set(unaccounted))
        self.forward_ms = None          # mode="time": median milliseconds of the whole pass
        self.backward_ms = None         # ... and of its backward pass (backward=True)

    @property
    def receptive_field(self):
        """``(height, width)`` of the last row's receptive field (None if a layer has no fixed window)."""
        return self.rows[-1].receptive_field if self.rows else None

    @property
    def memory_access(self):
        """Elements read and written by all rows (ShuffleNet V2's memory access cost, arXiv:1807.11164)."""
        return sum(row.memory_access for row in self.rows)

    @property
    def memory_access_bytes(self):
        return self.memory_access * self.dtype.itemsize

    @property
    def param_bytes(self):
        return self.params * self.dtype.itemsize

    @property
    def macs(self):
        return sum(row.macs for row in self.rows)

    @property
    def flops(self):
        return sum(row.flops for row in self.rows)

    def totals_under(self, prefix):
        """:data:`Totals` of the rows of module ``prefix`` and its descendants (e.g. ``"features.1"``)."""
        selected = [row for row in self.rows if row.name == prefix or row.name.startswith(prefix + ".")]
        return Totals(sum(r.params for r in selected), sum(r.macs for r in selected), sum(r.flops for r in selected))

    def by_kind(self):
        """One :data:`KindTotals` per layer kind, most MACs first (the MobileNet V1 paper's Table 2).

        Percentages are of the model's totals (batch-norm parameters included in the denominator).
        """
        groups = OrderedDict()
        for row in self.rows:
            layers, params, macs, flops = groups.get(row.kind, (0, 0, 0, 0))
            groups[row.kind] = (layers + 1, params + row.params, macs + row.macs, flops + row.flops)

        def percent(part, whole):
            return 100.0 * part / whole if whole else 0.0

        totals = [KindTotals(kind, layers, params, macs, flops, percent(params, self.params),
                             percent(macs, self.macs), percent(flops, self.flops))
                  for kind, (layers, params, macs, flops) in groups.items()]
        return sorted(totals, key=lambda t: (-t.macs, -t.flops, -t.params, t.kind))

    # ------------------------------------------------------------------ output
    def summary(self):
        """One line: params, MACs, FLOPs, memory."""
        return (f"{self.model_name} {_shape_text(self.input_shape)}: params {self.params:,} ({_si(self.params)}), "
                f"MACs {self.macs:,} ({_si(self.macs)}), FLOPs {self.flops:,} ({_si(self.flops)}), "
                f"params {_bytes_text(self.param_bytes)}, peak activations {_bytes_text(self.peak_activation_bytes)}")

    def table(self, formulas=False, name_width=36):
        """The per-layer table, the totals and the breakdown by kind, as text.

        Parameters
        ----------
        formulas : bool
            Add a column with the formula of each row's MACs (or FLOPs).
        name_width : int
            Longer names are shortened from the left (``...0.conv.1.0``).
        """
        header = ["layer", "type", "input", "output", "params", "MACs", "FLOPs", "out bytes", "mem access", "RF",
                  "RF stride"]
        timed = any(row.forward_ms is not None for row in self.rows)
        backward = any(row.backward_ms is not None for row in self.rows)
        header += ["fwd ms"] * timed + ["bwd ms"] * backward
        if formulas:
            header.append("formula")
        lines = []
        for row in self.rows:
            name = row.name if len(row.name) <= name_width else "..." + row.name[-(name_width - 3):]
            cells = [name, row.type, _shape_text(row.input_shape), _shape_text(row.output_shape),
                     f"{row.params:,}", f"{row.macs:,}", f"{row.flops:,}", f"{row.output_bytes:,}",
                     f"{row.memory_access:,}", _pair_text(row.receptive_field), _pair_text(row.rf_stride)]
            cells += [_ms_text(row.forward_ms)] * timed + [_ms_text(row.backward_ms)] * backward
            if formulas:
                cells.append(row.formula)
            lines.append(cells)
        widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
        numeric = {4, 5, 6, 7, 8, 9, 10, 11, 12} - ({len(header) - 1} if formulas else set())

        def render(cells):
            return "  ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(render(header))
        text = [render(header), rule] + [render(cells) for cells in lines] + [rule]
        switches = ", ".join(f"{k}={v}" for k, v in self.options.items())
        text += [
            f"model           {self.model_name}, input {_shape_text(self.input_shape)} {self.dtype.name} ({switches})",
            f"params          {self.params:,} ({_si(self.params)}), {_bytes_text(self.param_bytes)}",
            f"MACs            {self.macs:,} ({_si(self.macs)})   conv + fc multiply-accumulates (papers' Mult-Adds)",
            f"FLOPs           {self.flops:,} ({_si(self.flops)})   2 per MAC + bias, BN, activations, pooling, adds",
            (f"activations     {_bytes_text(self.activation_bytes)} (every tensor made), "
             f"peak {_bytes_text(self.peak_activation_bytes)} (inference, freeing after last use)"),
            (f"memory access   {self.memory_access:,} elements ({_bytes_text(self.memory_access_bytes)})   "
             f"read + written: inputs, outputs, weights"),
            f"receptive field {_pair_text(self.receptive_field)} (last layer)",
        ]
        if self.forward_ms is not None:
            backward = "" if self.backward_ms is None else f", backward {self.backward_ms:.3f} ms"
            text.append(f"measured time   forward {self.forward_ms:.3f} ms{backward} (median of "
                        f"{self.options.get('repeat')} passes)")
        text += [
            "",
            "by kind            layers      params  params %           MACs   MACs %          FLOPs  FLOPs %",
        ]
        for t in self.by_kind():
            text.append(f"{t.kind:<18}{t.layers:>7}{t.params:>12,}{t.params_percent:>9.2f}"
                        f"{t.macs:>15,}{t.macs_percent:>8.2f}{t.flops:>15,}{t.flops_percent:>8.2f}")
        if self.unaccounted:
            text.append("")
            text.append("warning: own arithmetic of these types is not counted: " + ", ".join(self.unaccounted))
        return "\n".join(text)

    def __str__(self):
        return self.table()

    def __repr__(self):
        return (f"Profile({self.model_name}, input={self.input_shape}, params={self.params:,}, macs={self.macs:,}, "
                f"flops={self.flops:,}, rows={len(self.rows)})")

    def to_dict(self):
        """Plain dict (JSON-ready): totals, options, ``by_kind`` and ``rows``."""
        return {
            "model": self.model_name,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype.name,
            "options": self.options,
            "totals": {"params": self.params, "param_bytes": self.param_bytes, "macs": self.macs,
                       "flops": self.flops, "activation_bytes": self.activation_bytes,
                       "peak_activation_bytes": self.peak_activation_bytes,
                       "memory_access": self.memory_access, "memory_access_bytes": self.memory_access_bytes,
                       "receptive_field": None if self.receptive_field is None else list(self.receptive_field),
                       "forward_ms": self.forward_ms, "backward_ms": self.backward_ms},
            "by_kind": [t._asdict() for t in self.by_kind()],
            "rows": [{**asdict(row), "input_shape": list(row.input_shape), "output_shape": list(row.output_shape)}
                     for row in self.rows],
            "unaccounted": self.unaccounted,
        }

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self):
        """The rows as CSV text (shapes written as ``1x32x112x112``)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        fields = ["name", "type", "kind", "input_shape", "output_shape", "params", "macs", "flops", "output_bytes",
                  "formula", "memory_access", "receptive_field", "rf_stride", "rf_center", "forward_ms", "backward_ms"]
        writer.writerow(fields)
        for row in self.rows:
            values = asdict(row)
            values["input_shape"] = _shape_text(row.input_shape)
            values["output_shape"] = _shape_text(row.output_shape)
            for key in ("receptive_field", "rf_stride", "rf_center"):
                values[key] = "" if values[key] is None else _pair_text(values[key])
            for key in ("forward_ms", "backward_ms"):
                values[key] = "" if values[key] is None else values[key]
            writer.writerow([values[f] for f in fields])
        return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------
# The pass
# ----------------------------------------------------------------------------------------------------

def _root(array):
    """The array that owns the memory of ``array`` (views share their base's bytes)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


class _Call:
    """One module call: filled when it starts (``input``) and when it returns (``output``)."""

    __slots__ = ("module", "name", "is_leaf", "input", "output", "extra_flops", "started", "finished")

    def __init__(self, module, name, is_leaf, x):
        self.module, self.name, self.is_leaf, self.input = module, name, is_leaf, x
        self.output = None
        self.extra_flops = 0            # a block's own arithmetic, filled when the rows are made
        self.started = self.finished = None     # time.perf_counter() around the call


def _recording_forward(module, forward, name, is_leaf, records):
    """Wrap ``forward`` so that each call appends ``("enter", call)`` and ``("exit", call)`` to ``records``."""
    def recording(x):
        call = _Call(module, name, is_leaf, x)
        records.append(("enter", call))
        call.started = time.perf_counter()
        call.output = forward(x)
        call.finished = time.perf_counter()
        records.append(("exit", call))
        return call.output
    return recording


class _ShapeOnly(np.ndarray):
    """A feature map with a shape and a dtype but no memory (``mode="shapes"``).

    Every element is one shared zero (all strides 0), so a 1 x 32 x 20000 x 20000 map costs 4 bytes
    and the shape pass allocates no feature map at all. Views (slices, ``reshape``, ``transpose``) stay
    shape-only; NumPy arithmetic (a block's add or SE scaling) and ``concatenate``/``ascontiguousarray``
    return a new shape-only array of the result's shape instead of computing. Each new one has its own
    one-element base, so :func:`_peak_bytes` still tells the tensors apart.
    """

    @classmethod
    def of(cls, shape, dtype):
        base = np.zeros(1, dtype=dtype)
        # writeable: a block may assign into a slice (y[:, :k] += ...); it only overwrites the shared zero
        return np.lib.stride_tricks.as_strided(base, shape, (0,) * len(shape)).view(cls)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if out is not None:                         # in place (x += y): the values do not matter
            return out[0] if len(out) == 1 else out
        if method != "__call__":
            plain = [np.zeros(1, x.dtype) if isinstance(x, _ShapeOnly) else x for x in inputs]
            return getattr(ufunc, method)(*plain, **kwargs)
        shape = np.broadcast_shapes(*(np.shape(x) for x in inputs))
        dtype = np.result_type(*inputs)
        results = tuple(_ShapeOnly.of(shape, dtype) for _ in range(ufunc.nout))
        return results[0] if ufunc.nout == 1 else results

    def __array_function__(self, func, types, args, kwargs):
        if func is np.concatenate:
            arrays = args[0]
            axis = kwargs.get("axis", args[1] if len(args) > 1 else 0)
            shape = list(arrays[0].shape)
            shape[axis] = sum(array.shape[axis] for array in arrays)
            return _ShapeOnly.of(tuple(shape), np.result_type(*arrays))
        if func in (np.ascontiguousarray, np.copy):
            return _ShapeOnly.of(args[0].shape, kwargs.get("dtype") or args[0].dtype)
        return super().__array_function__(func, types, args, kwargs)

    def copy(self, order="C"):
        return _ShapeOnly.of(self.shape, self.dtype)

    def astype(self, dtype, *args, **kwargs):
        return _ShapeOnly.of(self.shape, dtype)


def _shape_only_forward(module, shape_rule):
    """A ``forward`` for ``mode="shapes"``: validate like the layer, return a shape-only output."""
    def forward(x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{type(module).__name__} expects a numpy.ndarray input; got {type(x).__name__}")
        return _ShapeOnly.of(shape_rule(module, x.shape), x.dtype)
    return forward


def _peak_bytes(records, input_array):
    """``(peak, total)``: bytes alive at once in an inference pass that frees tensors after their last use,
    and bytes of all the distinct tensors the pass makes (views and returned inputs count once).

    The pass is cut into moments, each listing the tensors it uses: a layer uses its input and output;
    a block's own code (an add, a concatenation, SE scaling) uses the outputs of its direct parts that
    no call read, its input if it adds or scales it (``extra_flops > 0``), and its result. That code
    runs either just before a part whose input appears for the first time (ResNet's add before the
    ReLU, ShuffleNetV2's concatenation before the shuffle) or when the block returns. A tensor is alive
    from the first to the last moment that uses it.
    """
    moments = [[input_array]]
    seen = {id(_root(input_array))}
    frames = []                     # one per block being run: [call, unread part outputs, merged yet?]

    def merge_moment(frame, result):
        call, unread, merged = frame
        used = [result] + unread + ([call.input] if call.extra_flops > 0 and not merged else [])
        frame[1], frame[2] = [], True
        return used

    for event, call in records:
        if event == "enter":
            key = id(_root(call.input))
            if key not in seen and frames:              # made by the enclosing block's own code
                moments.append(merge_moment(frames[-1], call.input))
            seen.add(key)
            for frame in frames:                        # whoever produced it: it has been read
                frame[1] = [a for a in frame[1] if id(_root(a)) != key]
            if not call.is_leaf:
                frames.append([call, [], False])
            continue
        if call.is_leaf:
            moments.append([call.input, call.output])
        else:
            frame = frames.pop()
            moments.append(merge_moment(frame, call.output))
        seen.add(id(_root(call.output)))
        if frames:
            frames[-1][1].append(call.output)

    first, last, nbytes = {}, {}, {}
    for step, used in enumerate(moments):
        for array in used:
            root = _root(array)
            key = id(root)
            nbytes[key] = max(nbytes.get(key, 0), root.nbytes, array.nbytes)   # shape-only: the logical size
            first.setdefault(key, step)
            last[key] = step
    change = [0] * (len(moments) + 1)               # +bytes where a tensor is born, - after its last use
    for key, size in nbytes.items():
        change[first[key]] += size
        change[last[key] + 1] -= size
    peak = alive = 0
    for delta in change[:-1]:
        alive += delta
        peak = max(peak, alive)
    produced = sum(nbytes.values()) - nbytes[id(_root(input_array))]
    return peak, produced


def profile(model, input_shape, *, dtype=np.float32, mode="shapes", bias=True, bn=True, activations=True,
            backward=False, repeat=5):
    """Parameters, MACs, FLOPs, memory, receptive field and (optionally) time of ``model``, per layer.

    Parameters
    ----------
    model : tinycnn.nn.Module
    input_shape : tuple of int
        ``(N, C, H, W)``, or ``(C, H, W)`` for one image. The papers' figures are for ``N = 1``.
    dtype : float32 or float64
        Bytes per number for the memory columns, and the dtype of the pass (``mode="forward"`` and
        ``"time"`` need the model's parameters in this dtype).
    mode : {"shapes", "forward", "time"}
        ``"shapes"``: layers return zeros of the right shape without computing (fast, the default);
        ``"forward"``: the real layers run on random input; ``"time"``: the real layers run ``repeat``
        times after one untimed warm-up (which compiles the numba kernels) and every row gets its median
        ``forward_ms``: FLOPs are not latency (ShuffleNet V2, arXiv:1807.11164, Sec. 2).
    bias, bn, activations : bool
        Count the FLOPs of biases, batch norms and activations (module docstring, FLOP rules).
    backward : bool
        ``mode="time"`` only: also time each layer's backward pass (``backward_ms``); the gradient fed to
        the model is all ones.
    repeat : int
        ``mode="time"``: timed passes (the median is reported).

    Returns
    -------
    Profile

    Example
    -------
    >>> from tinycnn.models import mobilenet_v1
    >>> p = profile(mobilenet_v1(), (1, 3, 224, 224))
    >>> p.params, p.macs                       # the paper's Table 8: 4.2M parameters, 569M Mult-Adds
    (4231976, 568740352)
    >>> p.receptive_field                      # of the last layer: more than the image (it sees everything)
    (507, 507)
    >>> print(p.table())                       # one row per layer, totals, breakdown by kind  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a tinycnn.nn.Module; got {type(model).__name__}")
    if isinstance(input_shape, (tuple, list)) and len(input_shape) == 3:
        input_shape = (1, *input_shape)
    input_shape = _check_input_shape(input_shape)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    if mode not in ("shapes", "forward", "time"):
        raise ValueError(f"mode must be 'shapes', 'forward' or 'time'; got {mode!r}")
    for name, value in (("bias", bias), ("bn", bn), ("activations", activations), ("backward", backward)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False; got {value!r}")
    if backward and mode != "time":
        raise ValueError(f"backward=True times the backward pass and needs mode='time'; got mode={mode!r}")
    if isinstance(repeat, bool) or not isinstance(repeat, numbers.Integral) or repeat < 1:
        raise ValueError(f"repeat must be a positive int; got {repeat!r}")
    passes = repeat if mode == "time" else 1

    named = list(model.named_modules())
    training = [(module, module.training) for _, module in named]
    records, backward_records = [], []
    try:
        model.eval()
        if mode == "shapes":
            x = _ShapeOnly.of(input_shape, dtype)          # no feature map is ever allocated
        else:
            x = np.random.default_rng(0).standard_normal(input_shape).astype(dtype)
        if mode == "time":                          # warm-up: compiles the kernels, fills caches
            y = model(x)
            if backward:
                model.backward(np.ones_like(y))
        for name, module in named:
            is_leaf = next(module.children(), None) is None
            rule = _lookup(_LAYER_RULES, module)
            forward = module.forward
            if mode == "shapes" and is_leaf and rule is not None and rule[1] is not None:
                forward = _shape_only_forward(module, rule[1])
            # an instance attribute shadows the class's forward until it is deleted below
            object.__setattr__(module, "forward",
                               _recording_forward(module, forward, name or "(model)", is_leaf, records))
            if backward:
                object.__setattr__(module, "backward", _timed_backward(module, module.backward, backward_records))
        for _ in range(passes):
            y = model(x)
            if backward:
                backward_records.append(None)       # separates the passes
                model.backward(np.ones_like(y))
    finally:
        for _, module in named:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("backward", None)
        for module, flag in training:
            module.training = flag

    per_pass = len(records) // passes
    forward_ms = _median_own_ms(records, passes) if mode == "time" else {}
    backward_ms = _backward_own_ms(records[:per_pass], backward_records, passes) if backward else {}
    records = records[:per_pass]
    fields = receptive_fields(records, x)
    rows, unaccounted, seen_params, calls = [], [], set(), {}
    for index, (event, call) in enumerate(records):
        if event != "exit":
            continue
        module = call.module
        in_shape, out_shape = tuple(call.input.shape), tuple(call.output.shape)
        calls[id(module)] = calls.get(id(module), 0) + 1
        name = call.name if calls[id(module)] == 1 else f"{call.name} (call {calls[id(module)]})"
        own = [p for p in module._parameters.values() if p is not None and id(p) not in seen_params]
        seen_params.update(id(p) for p in own)
        params = sum(p.size for p in own)
        if call.is_leaf:
            rule = _lookup(_LAYER_RULES, module)
            if rule is None:
                unaccounted.append(type(module).__name__)
                cost = _Cost("unknown", 0, 0, 0, 0, None, "no rule for this layer type")
            else:
                cost = rule[0](module, in_shape, out_shape)
        else:
            extra, accounted = _block_extra_flops(module, in_shape, out_shape)
            if not accounted or (params and not extra):     # parameters used by the block's own code: unknown
                unaccounted.append(type(module).__name__)
            call.extra_flops = extra
            if extra == 0 and params == 0:
                continue
            kind = "se scale" if isinstance(module, nn.SqueezeExcitation) else "add" if extra else "unknown"
            cost = _Cost(kind, 0, 0, 0, extra, None,
                         f"{extra:,} element-wise {'multiplies' if kind == 'se scale' else 'adds'}")
        flops = cost.mac_flops + (cost.bias_flops if bias else 0)
        if cost.switch is None or (cost.switch == "bn" and bn) or (cost.switch == "activations" and activations):
            flops += cost.other_flops
        field = fields.get(id(call))
        rows.append(LayerStats(name, type(module).__name__, cost.kind, in_shape, out_shape, params, cost.macs,
                               flops, _elements(out_shape) * dtype.itemsize, cost.formula,
                               receptive_field=None if field is None else field.size,
                               rf_stride=None if field is None else field.jump,
                               rf_center=None if field is None else field_center(field),
                               memory_access=_memory_access(call, cost.kind),
                               forward_ms=forward_ms.get(index), backward_ms=backward_ms.get(index)))

    peak, produced = _peak_bytes(records, x)
    total_params = sum(p.size for p in model.parameters())
    options = {"mode": mode, "bias": bias, "bn": bn, "activations": activations}
    if mode == "time":
        options.update(backward=backward, repeat=repeat)
    result = Profile(rows, total_params, input_shape, dtype, type(model).__name__, options, peak, produced,
                     unaccounted)
    if mode == "time":                              # the whole pass: the model's own call
        result.forward_ms = forward_ms.get("total")
        result.backward_ms = backward_ms.get("total")
    return result


# ----------------------------------------------------------------------------------------------------
# Memory access cost and measured time per row
# ----------------------------------------------------------------------------------------------------

def _memory_access(call, kind):
    """Elements a row reads and writes (ShuffleNet V2, arXiv:1807.11164, Sec. 2, "memory access cost").

    A layer reads its input and its weights and writes its output: ``input + output + weights``; for a 1x1
    convolution without bias from ``c1`` to ``c2`` channels on an ``h x w`` map that is the paper's
    ``hw(c1 + c2) + c1*c2``. A layer that returns its input or a view of it (``Identity``, ``Dropout`` in
    evaluation, ``Flatten``) moves nothing. A block's own arithmetic: a residual add reads two operands
    and writes one result per added element (``3 * adds``); SE scaling reads the map and the gate
    (``N * C``) and writes the map.
    """
    module = call.module
    if call.is_leaf:
        if kind == "data movement" and _root(call.output) is _root(call.input):
            return 0                    # a view or the input itself (an in-place ReLU still reads and writes)
        weights = sum(p.size for p in module._parameters.values() if p is not None)
        return call.input.size + call.output.size + weights
    if kind == "add":
        return 3 * call.extra_flops
    if kind == "se scale":
        N, C = call.input.shape[:2]
        return 2 * call.extra_flops + N * C
    return 0


def _timed_backward(module, backward, backward_records):
    """Wrap ``backward`` so that each call appends ``(module, "enter" | "exit", time)`` to ``backward_records``."""
    def timed(grad_out):
        backward_records.append((module, "enter", time.perf_counter()))
        grad_in = backward(grad_out)
        backward_records.append((module, "exit", time.perf_counter()))
        return grad_in
    return timed


def _own_seconds(events):
    """``[(key, seconds)]`` for a nested sequence of ``(key, "enter"|"exit", time)`` events: each call's own
    time, its duration minus the durations of the calls it made directly (a block's add, concatenation)."""
    stack, own = [], []
    for key, event, moment in events:
        if event == "enter":
            stack.append([key, moment, 0.0])
            continue
        key, started, children = stack.pop()
        duration = moment - started
        own.append((key, duration - children))
        if stack:
            stack[-1][2] += duration
    return own


def _median_own_ms(records, passes):
    """``{index of a call's exit event in the first pass: median own milliseconds, "total": whole pass}``."""
    per_pass = len(records) // passes
    samples = {}
    for p in range(passes):
        chunk = records[p * per_pass:(p + 1) * per_pass]            # every pass makes the same calls
        exit_of = {id(call): index for index, (event, call) in enumerate(chunk) if event == "exit"}
        events = [(exit_of[id(call)], event, call.started if event == "enter" else call.finished)
                  for event, call in chunk]
        for index, seconds in _own_seconds(events):
            samples.setdefault(index, []).append(seconds * 1e3)
        model_call = chunk[0][1]
        samples.setdefault("total", []).append((model_call.finished - model_call.started) * 1e3)
    return {key: statistics.median(values) for key, values in samples.items()}


def _backward_own_ms(first_pass, backward_records, passes):
    """Backward milliseconds per row: the k-th forward call of a module pairs with its k-th-from-last
    backward call (a backward pass visits the calls in reverse)."""
    exits = [(index, call.module) for index, (event, call) in enumerate(first_pass) if event == "exit"]
    samples = {}
    chunks, current = [], None
    for item in backward_records:
        if item is None:
            current = []
            chunks.append(current)
        else:
            current.append(item)
    for chunk in chunks:
        own = _own_seconds(chunk)
        by_module = {}
        for module, seconds in own:
            by_module.setdefault(id(module), []).append(seconds)
        for index, module in reversed(exits):
            times = by_module.get(id(module))
            if times:
                samples.setdefault(index, []).append(times.pop(0) * 1e3)
        if chunk:
            samples.setdefault("total", []).append((chunk[-1][2] - chunk[0][2]) * 1e3)
    return {key: statistics.median(values) for key, values in samples.items()}


# ----------------------------------------------------------------------------------------------------
# The whole zoo, and timing
# ----------------------------------------------------------------------------------------------------

def profile_zoo(resolution=224, names=None, **profile_options):
    """``{name: Profile}`` for every model of :func:`tinycnn.models.list_models` (or ``names``).

    Each model is built with its default arguments and profiled on ``(1, 3, resolution, resolution)``;
    for shapes only (the default mode) without drawing its weights (:func:`tinycnn.nn.init.skip_init`).
    """
    from . import models
    names = models.list_models() if names is None else list(names)
    shapes_only = profile_options.get("mode", "shapes") == "shapes"
    profiles = {}
    for name in names:
        with nn.init.skip_init(shapes_only):                            # shapes need no weights
            model = models.get_model(name)
        profiles[name] = profile(model, (1, 3, resolution, resolution), **profile_options)
    return profiles


def time_forward(model, input_shape, repeat=5, warmup=1, dtype=np.float32, seed=0):
    """Median wall-clock seconds of ``model(x)`` in evaluation mode (``warmup`` untimed runs first).

    The first call compiles the numba kernels, so keep ``warmup >= 1``. Restores the train/eval flags.
    """
    if isinstance(input_shape, (tuple, list)) and len(input_shape) == 3:
        input_shape = (1, *input_shape)
    input_shape = _check_input_shape(input_shape)
    if isinstance(repeat, bool) or not isinstance(repeat, numbers.Integral) or repeat < 1:
        raise ValueError(f"repeat must be a positive int; got {repeat!r}")
    x = np.random.default_rng(seed).standard_normal(input_shape).astype(dtype)
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    finally:
        for module, flag in flags:
            module.training = flag
    return statistics.median(times)
