"""MobileNeXt: the sandglass block, a residual between the *wide* ends of a block.

Zhou et al., "Rethinking Bottleneck Structure for Efficient Mobile Network Design", ECCV 2020,
arXiv:2007.02269. MobileNetV2's inverted residual puts the shortcut between thin bottlenecks, so the
gradient and the identity path carry few channels. The sandglass block flips this back: the shortcut
joins wide tensors, and the bottleneck sits in the middle, between two pointwise convs::

    depthwise_in   3x3 depthwise conv, BN, ReLU6       (N, M, H, W)   spatial filtering on many channels
    reduce         1x1 conv M -> M/t, BN               (N, M/t, H, W) linear: no activation in the bottleneck
    expand         1x1 conv M/t -> N_out, BN, ReLU6    (N, N_out, H, W)
    depthwise_out  3x3 depthwise conv, stride s, BN    (N, N_out, H/s, W/s) linear
    + x            only when s = 1 and M == N_out

Both depthwise convs act on the wide tensors: more spatial information for little cost (a depthwise
conv costs ``9 * C`` per pixel).

**Identity tensor multiplier** (paper Sec. 3.3): only the first ``round(C * multiplier)`` channels take
the shortcut, ``y[:, :k] = F(x)[:, :k] + x[:, :k]`` and ``y[:, k:] = F(x)[:, k:]``. Half the channels
work as well as all of them and save element-wise additions and memory traffic.

Architecture: the rows (t, c, n, s) of the paper's Table 3 (stem conv 3x3 s2 -> 32, eight stages of
sandglass blocks, global pooling, classifier). Three details follow the authors' released code, which
is the model behind the published 1.0x figures (3.5M parameters, ~300M multiply-adds at 224 x 224):

* the 960-channel stage has 3 blocks (Table 3 prints 2; with 2 the network has 3.2M parameters);
* the bottleneck is never thinner than ``out/6`` channels: ``M/t`` is raised to
  ``make_divisible(ceil(out / 6), 16)`` when smaller;
* a block that changes the channel count inside a multi-block stage keeps only the convs it needs: at
  stride 1 it is two pointwise convs (no depthwise conv), at stride 2 it keeps the strided
  ``depthwise_out``. The first stage (t = 2), blocks with ``M == N_out``, and single-block stride-1
  stages have both depthwise convs. See :func:`sandglass_depthwise_layout`.

This gives 3,535,416 parameters at width 1.0. torchvision has no MobileNeXt; the key names are ours
(``features.<i>.depthwise_in.0.weight``, ``features.<i>.reduce.1.running_mean``, ...,
``classifier.1.weight``), and ``tools/torch_reference_mobilenet.py`` defines the same network in PyTorch
with the same keys.
"""
import math
import numbers

from .. import nn
from ._common import PooledClassifier, check_num_classes, check_positive, make_divisible
from ._registry import register_model

__all__ = ["MobileNeXt", "SandglassBlock", "mobilenext", "sandglass_depthwise_layout"]

STEM_CHANNELS = 32          # Table 3: conv2d 3x3, stride 2, 32 channels
LAST_CHANNELS = 1280        # the last stage's width; kept at 1280 when width_mult < 1

# Table 3 of arXiv:2007.02269: t = reduction ratio (the bottleneck is M/t wide), c = output channels,
# n = number of blocks, s = stride of the stage's first block.
SANDGLASS_SETTING = [
    # t, c, n, s
    (2, 96, 1, 2),          # 112 x 112 x 32 -> 56 x 56
    (6, 144, 1, 1),
    (6, 192, 3, 2),         # -> 28 x 28
    (6, 288, 3, 2),         # -> 14 x 14
    (6, 384, 4, 1),
    (6, 576, 4, 2),         # -> 7 x 7
    (6, 960, 3, 1),         # Table 3 prints n = 2; the released code (and the 3.5M figure) has 3
    (6, 1280, 1, 1),
]


def sandglass_depthwise_layout(in_channels, out_channels, stride, reduction_ratio, single_block_stage):
    """Which of the two depthwise convs a block has, as in the authors' released MobileNeXt code.

    Returns
    -------
    (depthwise_in, depthwise_out) : (bool, bool)
        Both for the t = 2 stage, for blocks with ``in_channels == out_channels`` (the ones with a
        shortcut) and for the block of a single-block stride-1 stage; otherwise the block only changes
        the channel count: no depthwise conv at stride 1, only the strided ``depthwise_out`` at stride 2.
    """
    both = reduction_ratio == 2 or in_channels == out_channels or (single_block_stage and stride == 1)
    return both, both or stride == 2


class SandglassBlock(nn.ShortcutBlock):
    """The sandglass block (arXiv:2007.02269, Fig. 3(b) and Table 2); see the module docstring.

    Parameters
    ----------
    in_channels, out_channels : int
        ``M`` and ``N_out``.
    stride : 1 or 2
        Stride of ``depthwise_out``.
    reduction_ratio : int >= 1
        ``t``: the bottleneck has ``in_channels // t`` channels, but at least
        ``make_divisible(ceil(out_channels / 6), 16)`` (the released code's floor).
    identity_tensor_multiplier : float in [0, 1]
        Fraction of the channels that take the shortcut (first ``round(C * multiplier)`` channels).
    depthwise_in, depthwise_out : bool
        Whether the block has the first / last depthwise conv (the paper's block has both).

    Shapes
    ------
    x : (N, in_channels, H, W) -> y : (N, out_channels, H_out, W_out), ``H_out = (H - 1) // stride + 1``.

    The partial shortcut and its backward pass come from :class:`tinycnn.nn.ShortcutBlock`
    (``identity_channels``).
    """

    def __init__(self, in_channels, out_channels, stride, reduction_ratio, identity_tensor_multiplier=1.0,
                 depthwise_in=True, depthwise_out=True):
        super().__init__()
        self._set_shape(in_channels, out_channels, stride)
        if isinstance(reduction_ratio, bool) or not isinstance(reduction_ratio, numbers.Integral) \
                or reduction_ratio < 1:
            raise ValueError(f"reduction_ratio must be an int >= 1; got {reduction_ratio!r}")
        _check_identity_tensor_multiplier(identity_tensor_multiplier)
        if stride == 2 and not depthwise_out:
            raise ValueError("a stride-2 sandglass block needs depthwise_out (it is the block's only strided conv)")
        reduced_channels = in_channels // reduction_ratio
        if reduced_channels < out_channels / 6:
            reduced_channels = make_divisible(math.ceil(out_channels / 6), 16)
        self.reduced_channels = reduced_channels
        self.identity_channels = round(out_channels * identity_tensor_multiplier) if self.use_residual else 0

        if depthwise_in:
            self.depthwise_in = nn.Conv2dNormActivation(in_channels, in_channels, kernel_size=3, groups=in_channels,
                                                        activation_layer=nn.ReLU6)
        else:
            self.register_module("depthwise_in", None)
        self.reduce = nn.Conv2dNormActivation(in_channels, reduced_channels, kernel_size=1,
                                              activation_layer=None)                          # linear bottleneck
        self.expand = nn.Conv2dNormActivation(reduced_channels, out_channels, kernel_size=1,
                                              activation_layer=nn.ReLU6)
        if depthwise_out:
            self.depthwise_out = nn.Conv2dNormActivation(out_channels, out_channels, kernel_size=3, stride=stride,
                                                         groups=out_channels, activation_layer=None)   # linear
        else:
            self.register_module("depthwise_out", None)

    use_shortcut = property(lambda self: self.use_residual, doc="The block has a shortcut (``use_residual``).")

    def _branch_layers(self):       # (N, M, H, W) -> ... -> (N, N_out, H/s, W/s)
        return [part for part in (self.depthwise_in, self.reduce, self.expand, self.depthwise_out) if part is not None]

    def extra_repr(self):
        text = f"{self.in_channels} -> {self.reduced_channels} -> {self.out_channels}, stride={self.stride}"
        if self.use_shortcut:
            text += f", shortcut on {self.identity_channels}/{self.out_channels} channels"
        return text


def _check_identity_tensor_multiplier(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"identity_tensor_multiplier must be a number in [0, 1]; got {value!r}")


class MobileNeXt(PooledClassifier):
    """MobileNeXt classifier: ``features`` (stem + sandglass blocks), global average pooling, ``classifier``.

    Parameters
    ----------
    num_classes : int
    width_mult : float > 0
        Channel counts ``c`` become ``make_divisible(c * width_mult, 8)``; the 1280-channel stage is kept
        at 1280 for ``width_mult < 1``.
    identity_tensor_multiplier : float in [0, 1]
        Fraction of channels on the shortcuts (1.0: all; the paper recommends 0.5).
    dropout : float
        Before the final Linear (0.2, as the released code).
    in_channels : int
        Image channels (3: RGB, the default; 1: grayscale).

    Shapes
    ------
    x : (N, in_channels, H, W) -> logits : (N, num_classes); the network down-samples by 32.
    """

    def __init__(self, num_classes=1000, width_mult=1.0, identity_tensor_multiplier=1.0, dropout=0.2,
                 in_channels=3):
        super().__init__(in_channels)
        num_classes = check_num_classes(num_classes)
        check_positive(width_mult, "width_mult")
        _check_identity_tensor_multiplier(identity_tensor_multiplier)
        in_channels = make_divisible(STEM_CHANNELS * width_mult, 8)
        layers = [nn.Conv2dNormActivation(self.in_channels, in_channels, kernel_size=3, stride=2,
                                          activation_layer=nn.ReLU6)]
        for t, c, n, s in SANDGLASS_SETTING:
            out_channels = make_divisible(c * width_mult, 8)
            if c == LAST_CHANNELS and width_mult < 1:
                out_channels = LAST_CHANNELS
            for index in range(n):
                stride = s if index == 0 else 1              # only the first block of a stage down-samples
                depthwise_in, depthwise_out = sandglass_depthwise_layout(in_channels, out_channels, stride, t,
                                                                         single_block_stage=n == 1)
                layers.append(SandglassBlock(in_channels, out_channels, stride, t, identity_tensor_multiplier,
                                             depthwise_in=depthwise_in, depthwise_out=depthwise_out))
                in_channels = out_channels
        self._set_layers(nn.Sequential(*layers),                  # (N, 1280, H/32, W/32)
                         nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, num_classes)))
        self.num_classes = num_classes
        self.width_mult = width_mult
        self.identity_tensor_multiplier = identity_tensor_multiplier


@register_model
def mobilenext(num_classes=1000, width_mult=1.0, identity_tensor_multiplier=1.0, in_channels=3):
    """MobileNeXt (arXiv:2007.02269): 3.5M parameters, ~300M multiply-adds at width 1.0, 224 x 224."""
    return MobileNeXt(num_classes=num_classes, width_mult=width_mult,
                      identity_tensor_multiplier=identity_tensor_multiplier, in_channels=in_channels)
