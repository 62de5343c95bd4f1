"""GhostNet: half of the feature maps from a convolution, the other half from cheap depthwise filters.

Han et al., "GhostNet: More Features from Cheap Operations", arXiv:1911.11907. Feature maps of trained
CNNs contain many near-duplicates ("ghosts") of each other. The ghost module makes the intrinsic maps
with an ordinary 1x1 convolution and derives the ghosts from them with a cheap depthwise 3x3
convolution, one ghost per intrinsic map (ratio ``s = 2``)::

    intrinsic = primary_conv(x)          1x1 conv C_in -> ceil(C_out / 2), BN, ReLU     (N, m, H, W)
    ghosts    = cheap_operation(intrinsic)   3x3 depthwise, BN, ReLU                    (N, m, H, W)
    y         = concat(intrinsic, ghosts)[:, :C_out]                                    (N, C_out, H, W)

about half the multiply-adds and weights of a 1x1 convolution C_in -> C_out. The ghost bottleneck stacks
two of them like MobileNetV2's inverted residual (expand with ReLU, project without), with a depthwise
convolution between them when the stride is 2, optional squeeze-and-excitation, and a shortcut
(identity, or depthwise + 1x1 convolutions when the shape changes).

The layout is timm's ``ghostnet_100`` (``conv_stem``, ``bn1``, ``blocks.3.0.ghost1.primary_conv.0.weight``,
``blocks.3.0.se.conv_reduce.weight``, ..., ``conv_head``, ``classifier``): same ``state_dict`` keys,
shapes and order, so timm's weights load with ``strict=True``. 5,182,508 parameters at width 1.0
(the paper's Table 7: 5.2M).
"""
import math
from collections import OrderedDict

import numpy as np

from .. import nn
from ._common import LayerChain, check_num_classes, check_positive, make_divisible
from ._registry import register_model

__all__ = ["GhostModule", "GhostBottleneck", "GhostSqueezeExcite", "GhostNet", "ghostnet"]

STEM_CHANNELS = 16          # Table 1: conv2d 3x3, stride 2, 16 channels
HEAD_CHANNELS = 1280        # Table 1: conv2d 1x1 after the pooling (never narrowed)
SE_RATIO = 0.25             # squeeze to a quarter of the channels (rounded to a multiple of 4)
CHANNEL_DIVISOR = 4         # widths are rounded to multiples of 4 (the authors' code)

# Table 1 of arXiv:1911.11907, one row per ghost bottleneck:
# kernel of the depthwise convs, expansion (hidden) channels, output channels, SE?, stride.
# Rows are grouped as in timm (``blocks.0`` ... ``blocks.8``); ``blocks.9`` is the 1x1 conv to 960.
GHOSTNET_STAGES = [
    # k, exp, out, se, s
    [(3, 16, 16, False, 1)],                                # 112 x 112
    [(3, 48, 24, False, 2)],                                # -> 56 x 56
    [(3, 72, 24, False, 1)],
    [(5, 72, 40, True, 2)],                                 # -> 28 x 28
    [(5, 120, 40, True, 1)],
    [(3, 240, 80, False, 2)],                               # -> 14 x 14
    [(3, 200, 80, False, 1),
     (3, 184, 80, False, 1),
     (3, 184, 80, False, 1),
     (3, 480, 112, True, 1),
     (3, 672, 112, True, 1)],
    [(5, 672, 160, True, 2)],                               # -> 7 x 7
    [(5, 960, 160, False, 1),
     (5, 960, 160, True, 1),
     (5, 960, 160, False, 1),
     (5, 960, 160, True, 1)],
]
LAST_CONV_CHANNELS = 960    # Table 1: conv2d 1x1, 960, before the pooling (scaled by the width)

# The parts of tinycnn.nn.SqueezeExcitation under the names timm gives them (see GhostSqueezeExcite).
_TIMM_SE_NAMES = {"fc1": "conv_reduce", "activation": "act1", "fc2": "conv_expand", "scale_activation": "gate"}


class GhostModule(nn.Module):
    """Ghost module (Fig. 2(b) of arXiv:1911.11907), timm's attribute names.

    Parameters
    ----------
    in_channels, out_channels : int
    ratio : int
        ``s``: each intrinsic map gets ``s - 1`` cheap ghosts; ``m = ceil(out_channels / s)`` intrinsic maps.
    dw_size : int
        Kernel of the cheap depthwise convolution (3).
    relu : bool
        ReLU after both convolutions (the first ghost module of a bottleneck), or linear (the second).

    Data flow::

        x1 = primary_conv(x)                 (N, m, H, W)            1x1 conv, BN, [ReLU]
        x2 = cheap_operation(x1)             (N, m*(s-1), H, W)      dw_size depthwise conv, BN, [ReLU]
        y  = concat(x1, x2)[:, :C_out]       (N, C_out, H, W)

    Backward: the sliced-off channels get zero gradient; ``x1`` feeds both the output and the cheap
    operation, so its two gradients add (a fork, as in :class:`tinycnn.nn.Concat`).
    """

    plain_container = True      # concatenates and slices, no arithmetic of its own (tinycnn.profile)

    def __init__(self, in_channels, out_channels, ratio=2, dw_size=3, relu=True):
        super().__init__()
        if ratio < 2:
            raise ValueError(f"ratio must be >= 2 (one intrinsic map and at least one ghost); got {ratio!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        intrinsic = math.ceil(out_channels / ratio)
        ghosts = intrinsic * (ratio - 1)
        self.use_relu = relu
        self.primary_conv = nn.Sequential(nn.Conv2d(in_channels, intrinsic, 1, bias=False),
                                          nn.BatchNorm2d(intrinsic), *self._activation())
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(intrinsic, ghosts, dw_size, 1, dw_size // 2, groups=intrinsic, bias=False),   # depthwise
            nn.BatchNorm2d(ghosts), *self._activation())
        self._intrinsic_shape = None
        self._output_shape = None

    def _activation(self):
        """A new ReLU for each place that needs one (``[]`` for a linear ghost module)."""
        return [nn.ReLU(inplace=True)] if self.use_relu else []

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        x1 = self.primary_conv(x)                              # (N, m, H, W) intrinsic maps
        x2 = self.cheap_operation(x1)                          # (N, m*(s-1), H, W) ghosts
        y = np.concatenate([x1, x2], axis=1)[:, :self.out_channels]     # (N, C_out, H, W)
        self._intrinsic_shape, self._output_shape = x1.shape, y.shape
        return np.ascontiguousarray(y)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        N, m, H, W = self._intrinsic_shape
        grad_all = np.zeros((N, m + self.cheap_operation[0].out_channels, H, W), dtype=grad_out.dtype)
        grad_all[:, :self.out_channels] = grad_out             # sliced-off channels: zero gradient
        grad_x1 = grad_all[:, :m] + self.cheap_operation.backward(np.ascontiguousarray(grad_all[:, m:]))
        return self.primary_conv.backward(grad_x1)             # x1 fed the output and the ghosts: added


class GhostSqueezeExcite(nn.SqueezeExcitation):
    """:class:`tinycnn.nn.SqueezeExcitation` with a hard-sigmoid gate, under timm's attribute names.

    The computation is the shared SE block's (``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))``); only the
    names differ, so that timm's ``state_dict`` loads: ``fc1`` is ``conv_reduce``, ``activation`` is
    ``act1``, ``fc2`` is ``conv_expand`` and ``scale_activation`` is ``gate``. The properties below let
    the parent's ``forward``/``backward`` find the layers under their role names.
    """

    _LAYER_NAMES = tuple(_TIMM_SE_NAMES.get(name, name) for name in nn.SqueezeExcitation._LAYER_NAMES)
    fc1 = property(lambda self: self.conv_reduce)
    fc2 = property(lambda self: self.conv_expand)
    activation = property(lambda self: self.act1)
    scale_activation = property(lambda self: self.gate)

    def __init__(self, channels, squeeze_channels):
        super().__init__(channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Hardsigmoid)
        # rename the children in place, keeping their order (conv_reduce's keys before conv_expand's)
        renamed = OrderedDict((_TIMM_SE_NAMES.get(name, name), child) for name, child in self._modules.items())
        self._modules.clear()
        self._modules.update(renamed)


class GhostBottleneck(nn.ShortcutBlock):
    """Ghost bottleneck (Fig. 3 of arXiv:1911.11907), timm's attribute names.

    Parameters
    ----------
    in_channels, hidden_channels, out_channels : int
    kernel_size : int
        Of the stride-2 depthwise convolution and of the shortcut's depthwise convolution (3 or 5).
    stride : {1, 2}
    use_se : bool
        Squeeze-and-excitation on the hidden channels (squeeze to ``make_divisible(hidden / 4, 4)``).

    Data flow::

        ghost1    GhostModule in -> hidden, ReLU             (N, hidden, H, W)
        conv_dw   kxk depthwise, stride 2, + bn_dw            (N, hidden, H/2, W/2)     stride 2 only
        se        squeeze-and-excitation                                                where Table 1 says SE
        ghost2    GhostModule hidden -> out, linear           (N, out, H/s, W/s)
        + shortcut(x)   identity if stride 1 and in == out, else kxk depthwise (stride s)-BN-1x1 conv-BN

    The add and its backward pass come from :class:`tinycnn.nn.ShortcutBlock`; the shortcut is always
    the ``shortcut`` module (timm's ``nn.Identity()`` when ``use_residual``).
    """

    def __init__(self, in_channels, hidden_channels, out_channels, kernel_size=3, stride=1, use_se=False):
        super().__init__()
        self._set_shape(in_channels, out_channels, stride)
        padding = (kernel_size - 1) // 2
        self.ghost1 = GhostModule(in_channels, hidden_channels, relu=True)                   # expand
        if stride > 1:
            self.conv_dw = nn.Conv2d(hidden_channels, hidden_channels, kernel_size, stride, padding,
                                     groups=hidden_channels, bias=False)                     # down-sample
            self.bn_dw = nn.BatchNorm2d(hidden_channels)
        if use_se:
            squeeze = make_divisible(hidden_channels * SE_RATIO, CHANNEL_DIVISOR)
            self.se = GhostSqueezeExcite(hidden_channels, squeeze)
        self.ghost2 = GhostModule(hidden_channels, out_channels, relu=False)                 # project, linear
        if self.use_residual:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels))

    def _branch_layers(self):       # (N, C_in, H, W) -> (N, hidden, H/s, W/s) -> (N, C_out, H/s, W/s)
        names = ["ghost1", "conv_dw", "bn_dw", "se", "ghost2"]
        return [self._modules[name] for name in names if name in self._modules]

    def _shortcut_layer(self):
        return self.shortcut

    def branch_output_norm(self):
        """The batch norm of ``ghost2``'s intrinsic maps: at gamma 0 they are 0 (beta starts at 0), and
        so are their cheap ghosts, so the branch outputs 0."""
        return self.ghost2.primary_conv[1]


class GhostNet(LayerChain):
    """GhostNet classifier (Table 1 of arXiv:1911.11907) with timm's layout.

    ``conv_stem``-``bn1``-``act1`` (3x3 s2, 16) -> ``blocks`` (``GHOSTNET_STAGES``, then a 1x1
    conv-BN-ReLU to 960) -> global average pooling -> ``conv_head`` (1x1 conv 960 -> 1280 with bias) ->
    ReLU -> Dropout -> ``classifier`` (Linear).

    Parameters
    ----------
    num_classes : int
    width_mult : float > 0
        Width multiplier: every channel count ``c`` except the 1280 of the head becomes
        ``make_divisible(c * width_mult, 4)`` (timm calls it ``width``).
    dropout : float
        Before the classifier (0.2, as timm and the authors' code).
    in_channels : int
        Image channels (3: RGB, the default; 1: grayscale).

    Shapes
    ------
    x : (N, in_channels, H, W) -> logits : (N, num_classes); the network down-samples by 32 (padded everywhere, so
    any H, W >= 1 works).
    """

    def __init__(self, num_classes=1000, width_mult=1.0, dropout=0.2, in_channels=3):
        super().__init__(in_channels)
        num_classes = check_num_classes(num_classes)
        check_positive(width_mult, "width_mult")
        stem_channels = make_divisible(STEM_CHANNELS * width_mult, CHANNEL_DIVISOR)
        self.conv_stem = nn.Conv2d(self.in_channels, stem_channels, 3, 2, 1, bias=False)        # (N, 16, H/2, W/2)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.act1 = nn.ReLU(inplace=True)
        stages = []
        in_channels = stem_channels
        for rows in GHOSTNET_STAGES:
            blocks = []
            for kernel, expansion, out, use_se, stride in rows:
                out_channels = make_divisible(out * width_mult, CHANNEL_DIVISOR)
                hidden_channels = make_divisible(expansion * width_mult, CHANNEL_DIVISOR)
                blocks.append(GhostBottleneck(in_channels, hidden_channels, out_channels, kernel, stride, use_se))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        last_channels = make_divisible(LAST_CONV_CHANNELS * width_mult, CHANNEL_DIVISOR)
        stages.append(nn.Sequential(nn.Sequential(OrderedDict(                  # timm's ConvBnAct keys
            conv=nn.Conv2d(in_channels, last_channels, 1, bias=False),
            bn1=nn.BatchNorm2d(last_channels),
            act=nn.ReLU(inplace=True)))))
        self.blocks = nn.Sequential(*stages)                                     # (N, 960, H/32, W/32)
        self.global_pool = nn.AdaptiveAvgPool2d(1)                               # (N, 960, 1, 1)
        self.conv_head = nn.Conv2d(last_channels, HEAD_CHANNELS, 1, bias=True)   # (N, 1280, 1, 1)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)                                             # (N, 1280)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)                  # (N, num_classes)
        self.num_classes = num_classes
        self.width_mult = width_mult

    def _layers(self):
        return [self.conv_stem, self.bn1, self.act1, self.blocks, self.global_pool, self.conv_head, self.act2,
                self.flatten, self.dropout, self.classifier]


@register_model
def ghostnet(num_classes=1000, width_mult=1.0, in_channels=3):
    """GhostNet (arXiv:1911.11907), timm's ``ghostnet_100`` layout at width 1.0: 5,182,508 parameters.

    ``width_mult`` is timm's ``width`` (``ghostnet_050`` is ``width_mult=0.5``).
    """
    return GhostNet(num_classes=num_classes, width_mult=width_mult, in_channels=in_channels)
