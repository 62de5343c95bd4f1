"""ResNet-18/50 (He et al., arXiv:1512.03385) and their squeeze-and-excitation versions (SENet,
Hu et al., arXiv:1709.01507), with torchvision's layout.

A ResNet is a stem (7x7 convolution stride 2, BN, ReLU, 3x3 max-pool stride 2), four stages of residual
blocks, global average pooling and one fully connected layer. Each block computes

    y = ReLU( F(x) + shortcut(x) )

where ``F`` is the residual branch (two 3x3 convolutions in a :class:`BasicBlock`, 1x1 reduce -> 3x3 ->
1x1 expand in a :class:`Bottleneck`) and ``shortcut`` is the identity, or a 1x1 convolution + BN
(``downsample``) when the block changes the resolution or the channel count.

SE-ResNet adds one :class:`~tinycnn.nn.SqueezeExcitation` module (``se``) per block: global average
pooling to ``C`` numbers, FC ``C -> C/r``, ReLU, FC ``C/r -> C``, sigmoid, then each channel is scaled by
its gate. The SENet article compares four places to put it (its Fig. 5 and Table 14, ResNet-50 on
ImageNet, top-1 / top-5 error %):

=============  ==========================================================  ===============
se_position    block                                                        error (Tab. 14)
=============  ==========================================================  ===============
"standard"     ``ReLU( SE(F(x)) + shortcut(x) )``  (SE on the branch, before  22.28 / 6.03
               the add: the proposed design, Fig. 3)
"pre"          ``ReLU( F(SE(x)) + shortcut(x) )``  (SE moved before the      22.23 / 6.00
               residual unit; the shortcut still sees ``x``)
"post"         ``SE( ReLU( F(x) + shortcut(x) ) )`` (SE after the summation  22.78 / 6.35
               with the identity branch, *after* the ReLU -- the article's
               words in Sec. 6.5)
"identity"     ``ReLU( F(x) + SE(shortcut(x)) )``  (SE on the identity       22.20 / 6.15
               connection, in parallel to the residual unit)
=============  ==========================================================  ===============

The article describes the variants for a block whose shortcut is the identity. Our choices where a
block has a projection shortcut (``downsample``): "identity" applies SE to the projection's output
(``C_out`` channels, like "standard" and "post"), and "pre" recalibrates only the branch's input
(``C_in`` channels) while the shortcut, identity or projection, reads the original ``x``.

Parameters that SE adds (article Eq. 5): ``(2/r) * sum_s N_s * C_s**2`` weights, over stages ``s`` with
``N_s`` blocks of ``C_s`` output channels, plus the two FC biases ``sum_s N_s * (C_s + C_s/r)`` (our SE
block has them, as torchvision's). For SE-ResNet-50 at ``r = 16``: 2,514,944 + 16,048 = 2,530,992,
about 10% of ResNet-50's 25,557,032, giving 28,088,024 (the article's Tables 10 and 13: 28.1M).
"pre" puts SE on the block's *input*, so its first block of each stage squeezes ``C_in`` channels.

State dict: the keys, shapes and order of ``resnet18``/``resnet50`` are torchvision's
(``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ..., ``layer2.0.downsample.0.weight``,
``downsample.1.*``, ``fc.weight``, ``fc.bias``), so a converted torchvision state dict loads with
``strict=True``. SE blocks add ``layerI.J.se.fc1.weight``, ``.fc1.bias``, ``.fc2.weight``, ``.fc2.bias``
*after* the block's torchvision entries, so a ResNet state dict loads into an SE-ResNet with
``strict=False`` and only the ``se`` entries missing.
"""
import numbers

from ..nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential,
                  ShortcutBlock, SqueezeExcitation, init)
from ._common import LayerChain, check_num_classes, check_positive, make_divisible
from ._registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "SE_POSITIONS",
           "resnet18", "resnet50", "se_resnet18", "se_resnet50"]

# One row per stage (He et al., arXiv:1512.03385, Table 1): (name, planes, stride of the first block).
# Output channels are planes * block.expansion; sizes in the comments are for a 224 x 224 input.
STAGES = [
    ("layer1", 64, 1),     # conv2_x, 56 x 56 (after the stem's max-pool)
    ("layer2", 128, 2),    # conv3_x, 28 x 28
    ("layer3", 256, 2),    # conv4_x, 14 x 14
    ("layer4", 512, 2),    # conv5_x,  7 x 7
]

# Blocks per stage (Table 1): ResNet-18 uses BasicBlock [2, 2, 2, 2], ResNet-50 Bottleneck [3, 4, 6, 3].
DEPTHS = {
    18: ("BasicBlock", (2, 2, 2, 2)),
    50: ("Bottleneck", (3, 4, 6, 3)),
}

STEM_CHANNELS = 64            # conv1: 7 x 7, stride 2, padding 3

# The four placements of the SENet article's Fig. 5 (see the module docstring).
SE_POSITIONS = ("standard", "pre", "post", "identity")


def _conv3x3(in_channels, out_channels, stride=1, groups=1):
    """3x3 convolution, padding 1, no bias (BN follows): torchvision's ``conv3x3``."""
    return Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(in_channels, out_channels, stride=1):
    """1x1 convolution, no bias: torchvision's ``conv1x1``."""
    return Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def _check_reduction(reduction):
    if isinstance(reduction, bool) or not isinstance(reduction, numbers.Integral) or reduction < 1:
        raise ValueError(f"reduction must be an int >= 1 (SENet uses 16); got {reduction!r}")
    return int(reduction)


def _check_se_position(se_position):
    if se_position not in SE_POSITIONS:
        raise ValueError(f"se_position must be one of {', '.join(map(repr, SE_POSITIONS))}; got {se_position!r}")
    return se_position


def squeeze_channels(channels, reduction):
    """Channels inside an SE block: ``C // r``, at least 1 (SENet Table 1: ``fc, [C/16, C]``)."""
    return max(1, channels // reduction)


class _ResidualBlock(ShortcutBlock):
    """What BasicBlock and Bottleneck share: the shortcut, the ReLU after the add and the SE placement.

    Subclasses create their branch layers (``conv1``, ``bn1``, ... with torchvision's names) and list
    them in ``_branch_layers()``: that is ``F``. The add, its backward pass and the residual rule (identity
    shortcut when the shape is kept, else the ``downsample`` projection) come from
    :class:`tinycnn.nn.ShortcutBlock`; the hooks below put SE where ``se_position`` says::

        x_branch = SE(x) if se_position == "pre" else x
        branch   = F(x_branch);            branch   = SE(branch)   if "standard"
        shortcut = downsample(x) or x;     shortcut = SE(shortcut) if "identity"
        y        = ReLU(branch + shortcut); y       = SE(y)        if "post"

    Backward: ``x`` forks into the branch and the shortcut, so ``dL/dx`` is the sum of the gradients
    that come back along the two paths (the chain rule at a fork).

    torchvision applies one ``relu`` module at every ReLU of a block; here each has its own (``relu1``,
    ``relu2``, and ``relu`` after the add), because each caches its input for the backward pass.
    ReLUs have no parameters, so the state-dict keys are the same.
    """

    expansion = 1

    def _attach_shortcut_and_se(self, in_channels, out_channels, reduction, se_position):
        """Register ``downsample``, the ReLU after the add and (optionally) ``se``, in torchvision's order."""
        if not self.use_residual:                             # the shape changes: project the shortcut
            self.downsample = Sequential(_conv1x1(in_channels, out_channels, self.stride), BatchNorm2d(out_channels))
        else:
            self.register_module("downsample", None)
        self.relu = ReLU(inplace=True)                        # after the add
        self.se_position = None if reduction is None else _check_se_position(se_position)
        if reduction is None:
            self.register_module("se", None)
        else:
            reduction = _check_reduction(reduction)
            se_channels = in_channels if se_position == "pre" else out_channels
            self.se = SqueezeExcitation(se_channels, squeeze_channels(se_channels, reduction))

    def _se_at(self, position):
        return self.se is not None and self.se_position == position

    def _shortcut_layer(self):
        return self.downsample

    def _branch_forward(self, x):
        branch = super()._branch_forward(self.se(x) if self._se_at("pre") else x)     # (N, C_out, H/s, W/s)
        return self.se(branch) if self._se_at("standard") else branch

    def _branch_backward(self, grad):
        if self._se_at("standard"):
            grad = self.se.backward(grad)
        grad = super()._branch_backward(grad)
        return self.se.backward(grad) if self._se_at("pre") else grad

    def _shortcut_forward(self, x):
        shortcut = super()._shortcut_forward(x)                                          # (N, C_out, H/s, W/s)
        return self.se(shortcut) if self._se_at("identity") else shortcut

    def _shortcut_backward(self, grad):
        if self._se_at("identity"):
            grad = self.se.backward(grad)
        return super()._shortcut_backward(grad)

    def _after_add_forward(self, y):
        y = self.relu(y)                                                                 # the add, then ReLU
        return self.se(y) if self._se_at("post") else y

    def _after_add_backward(self, grad):
        if self._se_at("post"):
            grad = self.se.backward(grad)
        return self.relu.backward(grad)                       # dL/d(branch + shortcut)

    def extra_repr(self):
        text = f"{self.in_channels} -> {self.out_channels}, stride={self.stride}"
        if self.se is not None:
            text += f", se_position={self.se_position!r}"
        return text


class BasicBlock(_ResidualBlock):
    """ResNet-18/34 block: ``F(x) = BN(conv3x3(ReLU(BN(conv3x3_s(x)))))``, ``C_out = planes``.

    Parameters
    ----------
    in_channels : int
    planes : int
        Output channels (``expansion = 1``).
    stride : int
        1 or 2, on the first 3x3 convolution (and on the projection shortcut).
    reduction : int or None
        SE reduction ratio ``r``; ``None`` (default) builds a plain ResNet block without ``se``.
    se_position : str
        One of :data:`SE_POSITIONS` (used only with ``reduction``).

    Shapes: ``(N, C_in, H, W) -> (N, planes, H_out, W_out)``, ``H_out = (H - 1) // stride + 1``.
    """

    expansion = 1

    def __init__(self, in_channels, planes, stride=1, reduction=None, se_position="standard", groups=1,
                 base_width=64):
        super().__init__()
        self._set_shape(in_channels, planes * self.expansion, stride)
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock supports only groups=1, base_width=64 (as torchvision); got "
                             f"groups={groups!r}, base_width={base_width!r}")
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = BatchNorm2d(planes)
        self.relu1 = ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = BatchNorm2d(planes)
        self._attach_shortcut_and_se(in_channels, self.out_channels, reduction, se_position)

    def _branch_layers(self):       # (N, C_in, H, W) -> (N, planes, H/s, W/s) -> (N, planes, H/s, W/s), no ReLU
        return [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2]


class Bottleneck(_ResidualBlock):
    """ResNet-50/101/152 block: 1x1 reduce -> 3x3 (stride s) -> 1x1 expand, ``C_out = 4 * planes``.

    ``F(x) = BN(conv1x1(ReLU(BN(conv3x3_s(ReLU(BN(conv1x1(x))))))))``. The stride sits on the 3x3
    convolution, as in torchvision ("ResNet v1.5"; the original paper strides the first 1x1).

    Parameters and shapes as :class:`BasicBlock`, with ``(N, C_in, H, W) -> (N, 4*planes, H_out, W_out)``,
    and ``groups``, ``base_width`` for ResNeXt (Xie et al., arXiv:1611.05431): the 3x3 convolution is a
    group convolution of ``groups`` paths ("cardinality") of ``base_width * planes / 64`` channels each,
    so its width is ``int(planes * base_width / 64) * groups`` (torchvision's rule; ResNeXt-50 32x4d:
    ``groups=32, base_width=4`` makes the first stage's 3x3 128 channels wide instead of 64).
    """

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, reduction=None, se_position="standard", groups=1,
                 base_width=64):
        super().__init__()
        self._set_shape(in_channels, planes * self.expansion, stride)
        out_channels = self.out_channels
        width = int(planes * (base_width / 64.0)) * groups     # channels of the 3x3 (ResNeXt: 32 paths)
        if width < 1:
            raise ValueError(f"Bottleneck needs planes * base_width / 64 >= 1 channel per group; got planes={planes}, "
                             f"base_width={base_width} (a narrower width_mult leaves the 3x3 without channels)")
        self.conv1 = _conv1x1(in_channels, width)        # reduce
        self.bn1 = BatchNorm2d(width)
        self.relu1 = ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width, stride, groups)     # spatial 3x3 (grouped), carries the stride
        self.bn2 = BatchNorm2d(width)
        self.relu2 = ReLU(inplace=True)
        self.conv3 = _conv1x1(width, out_channels)       # expand
        self.bn3 = BatchNorm2d(out_channels)
        self._attach_shortcut_and_se(in_channels, out_channels, reduction, se_position)

    def _branch_layers(self):       # (N, C_in, H, W) -> (N, width, H/s, W/s) -> (N, 4 * planes, H/s, W/s)
        return [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2, self.relu2, self.conv3, self.bn3]


_BLOCKS = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}


class ResNet(LayerChain):
    """Stem, four stages of residual blocks (the :data:`STAGES` table), global average pool, FC.

    Parameters
    ----------
    depth : int
        18 or 50 (the :data:`DEPTHS` table).
    num_classes : int
    width_mult : float
        Scales the stem and stage widths (``make_divisible(64 * width_mult, 8)``, ...); 1.0 is the
        published network. Small values give narrow ResNets for experiments and gradient checks.
    reduction : int or None
        SE reduction ratio ``r``; ``None`` builds a plain ResNet.
    se_position : str
        Where each block puts its SE module (:data:`SE_POSITIONS`).
    in_channels : int
        Image channels (3: RGB, the default; 1: grayscale).
    groups, width_per_group : int
        ResNeXt's cardinality and channels per path of the Bottleneck's 3x3 (torchvision's names; 1 and
        64 are the plain ResNet).

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``; the network downsamples by 32 (the last stage sees
    ``ceil(H/32)``), so any ``H, W >= 1`` works, 32 x 32 included (the last stage is then 1 x 1).

    Initialisation as torchvision: convolutions ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``,
    batch norm ``weight = 1, bias = 0``, the FC layer PyTorch's default.
    """

    def __init__(self, depth=18, num_classes=1000, width_mult=1.0, reduction=None, se_position="standard",
                 in_channels=3, groups=1, width_per_group=64):
        super().__init__(in_channels)
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}; got {depth!r}")
        num_classes = check_num_classes(num_classes)
        check_positive(width_mult, "width_mult")
        if reduction is not None:
            reduction = _check_reduction(reduction)
            _check_se_position(se_position)
        for name, value in (("groups", groups), ("width_per_group", width_per_group)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        block_name, blocks_per_stage = DEPTHS[depth]
        block = _BLOCKS[block_name]
        self.depth, self.width_mult = depth, width_mult

        channels = make_divisible(STEM_CHANNELS * width_mult, 8)
        self.conv1 = Conv2d(self.in_channels, channels, 7, stride=2, padding=3, bias=False)    # (N, 64, H/2, W/2)
        self.bn1 = BatchNorm2d(channels)
        self.relu = ReLU(inplace=True)
        self.maxpool = MaxPool2d(3, stride=2, padding=1)                         # (N, 64, H/4, W/4)
        for (name, planes, stride), num_blocks in zip(STAGES, blocks_per_stage):
            planes = make_divisible(planes * width_mult, 8)
            layers = []
            for index in range(num_blocks):                   # only the first block strides / projects
                layers.append(block(channels, planes, stride if index == 0 else 1, reduction, se_position,
                                    groups, width_per_group))
                channels = planes * block.expansion
            setattr(self, name, Sequential(*layers))          # (N, planes * expansion, H/s, W/s)
        self.avgpool = AdaptiveAvgPool2d(1)                    # (N, C, 1, 1)
        self.flatten = Flatten(1)                              # (N, C)
        self.fc = Linear(channels, num_classes)                # (N, num_classes)

        for module in self.modules():
            if isinstance(module, Conv2d):
                init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _layers(self):
        return [self.conv1, self.bn1, self.relu, self.maxpool, self.layer1, self.layer2, self.layer3,
                self.layer4, self.avgpool, self.flatten, self.fc]


@register_model
def resnet18(num_classes=1000, width_mult=1.0, in_channels=3):
    """ResNet-18 (arXiv:1512.03385): BasicBlocks [2, 2, 2, 2], 11,689,512 parameters (torchvision's).

    ``width_mult=1.0`` is torchvision's ``resnet18``: same state-dict keys, shapes and order.
    """
    return ResNet(18, num_classes, width_mult, in_channels=in_channels)


@register_model
def resnet50(num_classes=1000, width_mult=1.0, in_channels=3):
    """ResNet-50 (arXiv:1512.03385): Bottlenecks [3, 4, 6, 3], 25,557,032 parameters (torchvision's).

    ``width_mult=1.0`` is torchvision's ``resnet50``: same state-dict keys, shapes and order.
    """
    return ResNet(50, num_classes, width_mult, in_channels=in_channels)


@register_model
def se_resnet18(num_classes=1000, reduction=16, se_position="standard", width_mult=1.0, in_channels=3):
    """SE-ResNet-18 (arXiv:1709.01507): ResNet-18 with one SE block per residual block.

    ``se_position``: "standard" | "pre" | "post" | "identity" (the article's Fig. 5; module docstring).
    With ``r = 16``: 11,778,592 parameters ("standard", "post", "identity"; 89,080 more than ResNet-18);
    "pre" has 11,745,860.
    """
    return ResNet(18, num_classes, width_mult, _check_reduction(reduction), _check_se_position(se_position),
                  in_channels)


@register_model
def se_resnet50(num_classes=1000, reduction=16, se_position="standard", width_mult=1.0, in_channels=3):
    """SE-ResNet-50 (arXiv:1709.01507, Table 1): ResNet-50 with one SE block per residual block.

    With ``r = 16``: 28,088,024 parameters ("standard", "post", "identity"), the article's 28.1M
    (Tables 10 and 13); "pre" squeezes the block inputs and has 27,562,140.
    """
    return ResNet(50, num_classes, width_mult, _check_reduction(reduction), _check_se_position(se_position),
                  in_channels)
