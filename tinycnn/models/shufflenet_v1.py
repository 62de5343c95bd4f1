"""ShuffleNet V1: grouped 1x1 convolutions made to talk to each other by a channel shuffle.

Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices",
arXiv:1707.01083. In a MobileNet-style block the 1x1 convolutions cost almost all the multiply-adds.
ShuffleNet splits them into ``g`` groups (``1/g`` of the cost) and, so that information still flows
between groups, shuffles the channels after the first one (reshape ``(g, C/g)``, transpose, flatten).
The unit (Fig. 2(b), 2(c))::

    reduce     1x1 GConv C_in -> C_out/4 (g groups), BN, ReLU      the bottleneck: a quarter of the output
    shuffle    channel shuffle, g groups
    depthwise  3x3 depthwise conv, stride s, BN                    no ReLU after it (Sec. 3.2)
    expand     1x1 GConv -> C_branch (g groups), BN
    stride 1:  y = ReLU(x + branch(x))                             C_branch = C_out
    stride 2:  y = ReLU(concat(avgpool3x3s2(x), branch(x)))        C_branch = C_out - C_in: widening is cheap

The first 1x1 convolution of Stage 2 is not grouped: its input (24 channels) is too thin to split.
The stage widths (Table 1) are chosen so that the 1x model costs about 140 MFLOPs for every ``g``:
more groups afford wider feature maps.

Layout (our own; torchvision has no ShuffleNet V1): ``conv1`` (conv-BN-ReLU), ``maxpool``, ``stage2-4``
(Sequentials of :class:`ShuffleBlock`, each with ``branch.reduce/shuffle/depthwise/expand``), ``fc``.
``tools/torch_reference_shuffle_ghost.py`` is an independent PyTorch definition with the same keys.
Parameters at 1x: 1,865,728 for g=3 and 2,434,768 for g=8 (BN included). The paper reports only
complexity (about 140 MFLOPs); the authors' ShuffleNet-Series code reports 1.9M and 2.4M.
"""
import math
import numbers
from collections import OrderedDict

import numpy as np

from .. import nn
from ._common import LayerChain, check_num_classes, check_positive
from ._registry import register_model

__all__ = ["ShuffleBlock", "ShuffleNetV1", "shufflenet_v1"]

STEM_CHANNELS = 24          # Table 1: Conv1 3x3, stride 2, 24 channels, then MaxPool 3x3 s2 (for every g)
STAGE_REPEATS = (4, 8, 4)   # Table 1: units in Stage 2, 3, 4; the first of each has stride 2
BOTTLENECK_RATIO = 4        # Sec. 3.3: bottleneck channels = 1/4 of the unit's output channels

# Table 1 of arXiv:1707.01083: output channels of Stage 2, 3, 4 for each number of groups g (1x model).
STAGE_OUT_CHANNELS = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}


class ShuffleBlock(nn.Module):
    """ShuffleNet V1 unit (Fig. 2(b) stride 1, Fig. 2(c) stride 2 of arXiv:1707.01083).

    Parameters
    ----------
    in_channels, out_channels : int
        ``out_channels`` divisible by ``4 * groups``; at stride 1 ``in_channels == out_channels``.
    stride : {1, 2}
    groups : int
        ``g`` of the two 1x1 group convolutions and of the shuffle.
    group_reduce : bool
        Group the first 1x1 convolution (False for the first unit of Stage 2).

    Data flow (``B = out_channels / 4`` bottleneck channels)::

        branch = expand(depthwise(shuffle(reduce(x))))      (N, C_in, H, W) -> (N, B, .) -> (N, C_branch, H/s, W/s)
        stride 1:  y = relu(x + branch)                     C_branch = C_out
        stride 2:  y = relu(concat(shortcut(x), branch))    shortcut = AvgPool2d(3, 2, 1); C_branch = C_out - C_in

    Backward: through the ReLU, then the fork rule -- at stride 1 ``x`` receives the gradient twice
    (identity and branch: they add, as in :class:`tinycnn.nn.Residual`); at stride 2 the gradient is cut at
    ``C_in`` channels, the first part goes back through the average pool, the rest through the branch,
    and both input gradients add (as in :class:`tinycnn.nn.Concat`).
    """

    def __init__(self, in_channels, out_channels, stride, groups, group_reduce=True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {stride!r}")
        if out_channels % (BOTTLENECK_RATIO * groups) != 0:
            raise ValueError(f"out_channels ({out_channels}) must be divisible by 4 * groups = {4 * groups}: the "
                             f"bottleneck (out/4) is split into {groups} groups")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"a stride-1 unit adds its input: in_channels ({in_channels}) must equal "
                             f"out_channels ({out_channels})")
        branch_channels = out_channels - in_channels if stride == 2 else out_channels
        if branch_channels <= 0 or branch_channels % groups != 0:
            raise ValueError(f"a stride-2 unit concatenates its input: out_channels ({out_channels}) must exceed "
                             f"in_channels ({in_channels}) by a positive multiple of groups ({groups})")
        bottleneck = out_channels // BOTTLENECK_RATIO
        self.stride, self.groups = stride, groups
        self.in_channels, self.out_channels = in_channels, out_channels
        self.branch = nn.Sequential(OrderedDict(
            reduce=nn.Conv2dNormActivation(in_channels, bottleneck, 1, groups=groups if group_reduce else 1),
            shuffle=nn.ChannelShuffle(groups),
            depthwise=nn.Conv2dNormActivation(bottleneck, bottleneck, 3, stride=stride, groups=bottleneck,
                                              activation_layer=None),
            expand=nn.Conv2dNormActivation(bottleneck, branch_channels, 1, groups=groups, activation_layer=None),
        ))
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        branch = self.branch(x)                                   # (N, C_branch, H/s, W/s)
        skip = self.shortcut(x)                                   # (N, C_in, H/s, W/s)
        if self.stride == 1:
            y = skip + branch                                     # (N, C_out, H, W)
        else:
            y = np.concatenate([skip, branch], axis=1)            # (N, C_in + C_branch = C_out, H/2, W/2)
        return self.relu(y)

    def backward(self, grad_out):
        grad = self.relu.backward(grad_out)
        if self.stride == 1:
            grad_skip, grad_branch = grad, grad                   # the add passes the gradient to both
        else:
            grad_skip = np.ascontiguousarray(grad[:, :self.in_channels])     # the concat splits it
            grad_branch = np.ascontiguousarray(grad[:, self.in_channels:])
        return self.shortcut.backward(grad_skip) + self.branch.backward(grad_branch)   # x fed both: add

    def extra_flops(self, input_shape, output_shape):
        """FLOPs of the add ``skip + branch`` at stride 1 (one per output element); the stride-2 concat is free."""
        return math.prod(output_shape) if self.stride == 1 else 0

    def extra_repr(self):
        return f"stride={self.stride}, groups={self.groups}"


def stage_widths(groups, width_mult=1.0):
    """Output channels of Stage 2, 3, 4: Table 1's row for ``groups`` times ``width_mult``.

    Each width is rounded to the nearest multiple of ``4 * groups`` (halves up; at least one), so that the
    bottleneck (a quarter of it) splits into ``groups`` equal groups; at ``width_mult = 1`` this is Table 1.
    """
    unit = BOTTLENECK_RATIO * groups
    return tuple(max(unit, int(c * width_mult / unit + 0.5) * unit) for c in STAGE_OUT_CHANNELS[groups])


class ShuffleNetV1(LayerChain):
    """ShuffleNet V1 classifier (Table 1 of arXiv:1707.01083).

    ``conv1`` (3x3 s2 conv-BN-ReLU, 24) -> ``maxpool`` 3x3 s2 -> ``stage2``, ``stage3``, ``stage4``
    (``STAGE_REPEATS`` units, the first with stride 2) -> global average pooling -> ``fc``.

    Parameters
    ----------
    num_classes : int
    groups : {1, 2, 3, 4, 8}
    width_mult : float > 0
        Scales the stage widths (the paper's "ShuffleNet s x"), see :func:`stage_widths`; the 24-channel
        stem is kept, so Stage 2 must stay wider than 24 channels.
    in_channels : int
        Image channels (3: RGB, the default; 1: grayscale).

    Shapes
    ------
    x : (N, in_channels, H, W) -> logits : (N, num_classes); the network down-samples by 32 (padded everywhere, so
    any H, W >= 1 works).
    """

    def __init__(self, num_classes=1000, groups=3, width_mult=1.0, in_channels=3):
        super().__init__(in_channels)
        num_classes = check_num_classes(num_classes)
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups not in STAGE_OUT_CHANNELS:
            raise ValueError(f"groups must be one of {sorted(STAGE_OUT_CHANNELS)} (Table 1); got {groups!r}")
        check_positive(width_mult, "width_mult")
        widths = stage_widths(groups, width_mult)
        if widths[0] <= STEM_CHANNELS:
            raise ValueError(f"width_mult={width_mult} gives Stage 2 only {widths[0]} channels; it must exceed the "
                             f"{STEM_CHANNELS} stem channels that its first unit concatenates")
        self.conv1 = nn.Conv2dNormActivation(self.in_channels, STEM_CHANNELS, 3, stride=2)           # (N, 24, H/2, W/2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)                # (N, 24, H/4, W/4)
        in_channels = STEM_CHANNELS
        for stage, (repeats, out_channels) in enumerate(zip(STAGE_REPEATS, widths), start=2):
            units = [ShuffleBlock(in_channels, out_channels, 2, groups, group_reduce=stage > 2)]  # halves H, W
            units += [ShuffleBlock(out_channels, out_channels, 1, groups) for _ in range(repeats - 1)]
            setattr(self, f"stage{stage}", nn.Sequential(*units))
            in_channels = out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_channels, num_classes)
        self.groups, self.width_mult, self.num_classes = groups, width_mult, num_classes

    def _layers(self):      # (N, C, H, W) -> ... -> (N, C4, H/32, W/32) -> (N, C4) -> (N, num_classes)
        return [self.conv1, self.maxpool, self.stage2, self.stage3, self.stage4, self.avgpool, self.flatten,
                self.fc]


@register_model
def shufflenet_v1(num_classes=1000, groups=3, width_mult=1.0, in_channels=3):
    """ShuffleNet V1 (arXiv:1707.01083) with ``groups`` in {1, 2, 3, 4, 8}: 1,865,728 parameters at 1x, g=3."""
    return ShuffleNetV1(num_classes=num_classes, groups=groups, width_mult=width_mult, in_channels=in_channels)
