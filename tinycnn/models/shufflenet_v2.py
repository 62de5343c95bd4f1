"""ShuffleNet V2: channel split, two branches, concatenation, channel shuffle.

Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", arXiv:1807.11164.
The paper measures speed instead of counting FLOPs and derives four guidelines: equal input and output
widths minimise memory access (G1), group convolutions cost memory access (G2), fragmented branches hurt
parallelism (G3), element-wise operations are not free (G4). Its unit follows them::

    stride 1:   x -> split channels in halves x1 | x2
                y = concat(x1, branch2(x2))              x1 passes untouched: no add (G4)
    stride 2:   y = concat(branch1(x), branch2(x))       both branches see all of x; width doubles
    then        y = channel_shuffle(y, 2)                mixes the two halves for the next unit

    branch2 = 1x1 conv, BN, ReLU -> 3x3 depthwise (stride s), BN -> 1x1 conv, BN, ReLU
    branch1 = 3x3 depthwise (stride 2), BN -> 1x1 conv, BN, ReLU         (stride-2 units only)

Plain 1x1 convolutions (no groups, G2), equal widths in and out of each branch (G1).

The layout is torchvision's ``shufflenet_v2_x*`` exactly: ``state_dict`` keys, shapes and order are equal
(``conv1.0.weight``, ``stage2.0.branch1.0.weight``, ..., ``conv5.0.weight``, ``fc.bias``), so converted
torchvision weights load with ``strict=True``. Parameters (torchvision's counts): x0.5 1,366,792;
x1.0 2,278,604; x1.5 3,503,624; x2.0 7,393,996.
"""
import numpy as np

from .. import nn
from ._common import LayerChain, check_num_classes
from ._registry import register_model

__all__ = ["ShuffleV2Block", "ShuffleNetV2", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
           "shufflenet_v2_x2_0"]

STEM_CHANNELS = 24          # Table 5: Conv1 3x3, stride 2, 24 channels (every size), then MaxPool 3x3 s2
STAGE_REPEATS = (4, 8, 4)   # Table 5: units in Stage 2, 3, 4; the first of each has stride 2

# Table 5 of arXiv:1807.11164: output channels of Stage 2, 3, 4 and of Conv5, per model size.
STAGE_OUT_CHANNELS = {
    "x0_5": (48, 96, 192, 1024),
    "x1_0": (116, 232, 464, 1024),
    "x1_5": (176, 352, 704, 1024),
    "x2_0": (244, 488, 976, 2048),
}


def _depthwise_bn(channels, stride):
    """3x3 depthwise conv (stride ``stride``) + BN, no activation (the paper's DWConv)."""
    return [nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False), nn.BatchNorm2d(channels)]


def _pointwise_bn_relu(in_channels, out_channels):
    """1x1 conv + BN + ReLU."""
    return [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True)]


class ShuffleV2Block(nn.Module):
    """ShuffleNet V2 unit (Fig. 3(c) stride 1, Fig. 3(d) stride 2 of arXiv:1807.11164).

    torchvision calls this class ``InvertedResidual``; the attribute names are torchvision's
    (``branch1``, ``branch2``), so the ``state_dict`` keys are too.

    Parameters
    ----------
    in_channels, out_channels : int
        ``out_channels`` is even; at stride 1 ``in_channels == out_channels``.
    stride : {1, 2}

    Data flow (each branch produces ``out_channels / 2`` channels)::

        stride 1:  x1, x2 = x[:, :C/2], x[:, C/2:]       y = concat(branch1(x1), branch2(x2))   branch1 = Identity
        stride 2:                                       y = concat(branch1(x),  branch2(x))
        both:      y = shuffle(y)                       (N, out_channels, H/s, W/s)

    Backward: undo the shuffle, cut the gradient at ``out_channels / 2`` (a concatenation splits
    gradients). At stride 1 each half of ``x`` fed one branch, so the input gradients are concatenated
    (:class:`tinycnn.nn.ChannelSplit`'s rule); at stride 2 both branches saw all of ``x``, so they add
    (:class:`tinycnn.nn.Concat`'s rule). The two routings are written out here because the branches
    must keep torchvision's names.
    """

    plain_container = True      # splits, concatenates and shuffles: no arithmetic (tinycnn.profile)

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {stride!r}")
        if out_channels % 2 != 0:
            raise ValueError(f"out_channels must be even (two branches of equal width); got {out_channels}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"a stride-1 unit keeps its width: in_channels ({in_channels}) must equal "
                             f"out_channels ({out_channels})")
        branch_channels = out_channels // 2
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(*_depthwise_bn(in_channels, stride),
                                         *_pointwise_bn_relu(in_channels, branch_channels))
        else:
            self.branch1 = nn.Identity()          # the untouched half
        branch2_in = in_channels if stride == 2 else branch_channels
        self.branch2 = nn.Sequential(*_pointwise_bn_relu(branch2_in, branch_channels),
                                     *_depthwise_bn(branch_channels, stride),
                                     *_pointwise_bn_relu(branch_channels, branch_channels))
        self.shuffle = nn.ChannelShuffle(2)
        self.in_channels, self.out_channels = in_channels, out_channels
        self._split = None              # channels of branch1's output, from the last forward
        self._output_shape = None

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        if self.stride == 1:
            half = x.shape[1] // 2
            x1, x2 = np.ascontiguousarray(x[:, :half]), np.ascontiguousarray(x[:, half:])   # (N, C/2, H, W) each
        else:
            x1 = x2 = x                                                 # both branches see all of x
        out1, out2 = self.branch1(x1), self.branch2(x2)                 # (N, C_out/2, H/s, W/s) each
        self._split = out1.shape[1]
        y = np.concatenate([out1, out2], axis=1)                        # (N, C_out, H/s, W/s)
        self._output_shape = y.shape
        return self.shuffle(y)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        grad = self.shuffle.backward(grad_out)                          # undo the interleaving
        grad1 = self.branch1.backward(np.ascontiguousarray(grad[:, :self._split]))
        grad2 = self.branch2.backward(np.ascontiguousarray(grad[:, self._split:]))
        if self.stride == 1:
            return np.concatenate([grad1, grad2], axis=1)               # each half of x fed one branch
        return grad1 + grad2                                            # x fed both branches: gradients add


class ShuffleNetV2(LayerChain):
    """ShuffleNet V2 classifier (Table 5 of arXiv:1807.11164) with torchvision's layout.

    ``conv1`` (3x3 s2 conv-BN-ReLU, 24) -> ``maxpool`` 3x3 s2 -> ``stage2``, ``stage3``, ``stage4``
    (``STAGE_REPEATS`` units, the first with stride 2) -> ``conv5`` (1x1 conv-BN-ReLU) -> global average
    pooling -> ``fc``.

    Parameters
    ----------
    stages_out_channels : sequence of 4 ints
        Output channels of stages 2-4 and of ``conv5`` (a row of ``STAGE_OUT_CHANNELS``).
    num_classes : int
    in_channels : int
        Image channels (3: RGB, the default; 1: grayscale).

    Shapes
    ------
    x : (N, in_channels, H, W) -> logits : (N, num_classes); the network down-samples by 32 (any H, W >= 1 works,
    every strided layer is padded).
    """

    def __init__(self, stages_out_channels, num_classes=1000, in_channels=3):
        super().__init__(in_channels)
        num_classes = check_num_classes(num_classes)
        if len(stages_out_channels) != 4 or any(c < 2 or c % 2 for c in stages_out_channels[:3]):
            raise ValueError(f"stages_out_channels must be 4 channel counts, the first three even; "
                             f"got {stages_out_channels!r}")
        self.conv1 = nn.Conv2dNormActivation(self.in_channels, STEM_CHANNELS, 3, stride=2)      # (N, 24, H/2, W/2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)          # (N, 24, H/4, W/4)
        in_channels = STEM_CHANNELS
        for stage, (repeats, out_channels) in enumerate(zip(STAGE_REPEATS, stages_out_channels[:3]), start=2):
            units = [ShuffleV2Block(in_channels, out_channels, stride=2)]      # halves H, W
            units += [ShuffleV2Block(out_channels, out_channels, stride=1) for _ in range(repeats - 1)]
            setattr(self, f"stage{stage}", nn.Sequential(*units))
            in_channels = out_channels
        last_channels = stages_out_channels[3]
        self.conv5 = nn.Conv2dNormActivation(in_channels, last_channels, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(last_channels, num_classes)
        self.num_classes = num_classes

    def _layers(self):      # (N, C, H, W) -> ... -> (N, C5, H/32, W/32) -> (N, C5) -> (N, num_classes)
        return [self.conv1, self.maxpool, self.stage2, self.stage3, self.stage4, self.conv5, self.avgpool,
                self.flatten, self.fc]


def _shufflenet_v2(size, num_classes, in_channels):
    return ShuffleNetV2(STAGE_OUT_CHANNELS[size], num_classes=num_classes, in_channels=in_channels)


@register_model
def shufflenet_v2_x0_5(num_classes=1000, in_channels=3):
    """ShuffleNet V2 0.5x (arXiv:1807.11164), torchvision's layout: 1,366,792 parameters."""
    return _shufflenet_v2("x0_5", num_classes, in_channels)


@register_model
def shufflenet_v2_x1_0(num_classes=1000, in_channels=3):
    """ShuffleNet V2 1.0x (arXiv:1807.11164), torchvision's layout: 2,278,604 parameters."""
    return _shufflenet_v2("x1_0", num_classes, in_channels)


@register_model
def shufflenet_v2_x1_5(num_classes=1000, in_channels=3):
    """ShuffleNet V2 1.5x (arXiv:1807.11164), torchvision's layout: 3,503,624 parameters."""
    return _shufflenet_v2("x1_5", num_classes, in_channels)


@register_model
def shufflenet_v2_x2_0(num_classes=1000, in_channels=3):
    """ShuffleNet V2 2.0x (arXiv:1807.11164), torchvision's layout: 7,393,996 parameters."""
    return _shufflenet_v2("x2_0", num_classes, in_channels)
