"""Independent PyTorch definitions of MobileNet V1 and MobileNeXt (torchvision has neither).

Written from the papers, not from tinycnn's code, with the *same state_dict keys* as
``tinycnn.models.mobilenet_v1`` / ``tinycnn.models.mobilenext`` so that the same seeded weights load into
both; tools/fixtures_models_mobilenet.py compares their outputs and gradients.

* MobileNet V1: Howard et al., arXiv:1704.04861, Table 1 (conv s2 32, then 13 pairs "Conv dw 3x3 + BN +
  ReLU, Conv 1x1 + BN + ReLU", global average pool, FC). Width multiplier alpha on every layer.
* MobileNeXt: Zhou et al., ECCV 2020, arXiv:2007.02269, Table 3 rows (t, c, n, s) and the sandglass block
  of Table 2 (dw 3x3 + BN + ReLU6, 1x1 reduce + BN, 1x1 expand + BN + ReLU6, dw 3x3 stride s + BN; shortcut
  when stride 1 and equal widths; identity tensor multiplier: only the first round(C * m) channels are
  added). Where the authors' released code differs from Table 3 it is followed (it is the 3.5M-parameter
  model the paper reports): 3 blocks in the 960 stage, a bottleneck floor of ceil(out/6) rounded up to a
  multiple of 16, and the depthwise convs of channel-changing blocks (see ``_SandglassBlock``).

Needs PyTorch; used only by the fixture generator and the live tests.
"""
import math

import torch
from torch import nn


def _round_channels(value, divisor=8):
    """Nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(in_channels, out_channels, kernel_size, stride=1, groups=1, activation=None):
    """``Sequential(conv, bn[, activation])``: keys ``0.weight``, ``1.weight``, ``1.running_mean``, ..."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels)]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------- MobileNet V1
# arXiv:1704.04861 Table 1: (pointwise output channels, depthwise stride) of the 13 separable blocks.
# (Table 1's last "Conv dw / s2" keeps the 7x7 size: its stride is 1.)
MOBILENET_V1_TABLE = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 \
    + [(1024, 2), (1024, 1)]


class _Separable(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.depthwise = _conv_bn(in_channels, in_channels, 3, stride, groups=in_channels, activation=nn.ReLU)
        self.pointwise = _conv_bn(in_channels, out_channels, 1, activation=nn.ReLU)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0):
        super().__init__()
        channels = _round_channels(32 * width_mult)
        blocks = [_conv_bn(3, channels, 3, stride=2, activation=nn.ReLU)]
        for out_channels, stride in MOBILENET_V1_TABLE:
            out_channels = _round_channels(out_channels * width_mult)
            blocks.append(_Separable(channels, out_channels, stride))
            channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3))
        return self.classifier(x)


# ------------------------------------------------------------------------------------------ MobileNeXt
# arXiv:2007.02269 Table 3: t (reduction), c (output channels), n (blocks), s (first stride).
MOBILENEXT_TABLE = [(2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2), (6, 384, 4, 1),
                    (6, 576, 4, 2), (6, 960, 3, 1), (6, 1280, 1, 1)]


class _SandglassBlock(nn.Module):
    """The released code's block: which depthwise convs exist depends on the case, written as branches."""

    def __init__(self, inp, oup, stride, t, identity_tensor_multiplier, keep_3x3):
        super().__init__()
        hidden = inp // t
        if hidden < oup / 6.0:
            hidden = _round_channels(math.ceil(oup / 6.0), 16)
        if t == 2 or inp == oup or keep_3x3:                     # the full sandglass block
            has_first_dw, has_last_dw = True, True
        elif stride == 2:                                        # channel change with down-sampling
            has_first_dw, has_last_dw = False, True
        else:                                                    # channel change at stride 1: two 1x1 convs
            has_first_dw, has_last_dw = False, False
        if has_first_dw:
            self.depthwise_in = _conv_bn(inp, inp, 3, groups=inp, activation=nn.ReLU6)
        self.reduce = _conv_bn(inp, hidden, 1)
        self.expand = _conv_bn(hidden, oup, 1, activation=nn.ReLU6)
        if has_last_dw:
            self.depthwise_out = _conv_bn(oup, oup, 3, stride=stride, groups=oup)
        self.has_first_dw, self.has_last_dw = has_first_dw, has_last_dw
        self.residual = stride == 1 and inp == oup
        self.identity_channels = round(inp * identity_tensor_multiplier)

    def forward(self, x):
        out = self.depthwise_in(x) if self.has_first_dw else x
        out = self.expand(self.reduce(out))
        if self.has_last_dw:
            out = self.depthwise_out(out)
        if not self.residual:
            return out
        k = self.identity_channels
        return torch.cat([out[:, :k] + x[:, :k], out[:, k:]], dim=1)


class MobileNeXt(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0, identity_tensor_multiplier=1.0):
        super().__init__()
        channels = _round_channels(32 * width_mult)
        blocks = [_conv_bn(3, channels, 3, stride=2, activation=nn.ReLU6)]
        for t, c, n, s in MOBILENEXT_TABLE:
            out_channels = 1280 if (c == 1280 and width_mult < 1) else _round_channels(c * width_mult)
            for i in range(n):
                blocks.append(_SandglassBlock(channels, out_channels, s if i == 0 else 1, t,
                                              identity_tensor_multiplier, keep_3x3=(i == 0 and n == 1 and s == 1)))
                channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(channels, num_classes))

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3))
        return self.classifier(x)


def mobilenet_v1(num_classes=1000, width_mult=1.0):
    return MobileNetV1(num_classes, width_mult)


def mobilenext(num_classes=1000, width_mult=1.0, identity_tensor_multiplier=1.0):
    return MobileNeXt(num_classes, width_mult, identity_tensor_multiplier)
