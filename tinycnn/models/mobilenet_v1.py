"""MobileNet V1: a plain stack of depthwise-separable convolutions.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
arXiv:1704.04861. A standard 3x3 convolution is split into

* a **depthwise** 3x3 convolution, one filter per channel (spatial filtering), and
* a **pointwise** 1x1 convolution (channel mixing),

each followed by batch norm and ReLU. The cost drops from ``9 * C_in * C_out`` to
``9 * C_in + C_in * C_out`` multiply-adds per output pixel, a ratio of ``1/C_out + 1/9`` (8-9x less).

Architecture (Table 1 of the paper), input 224 x 224 x 3::

    stem        conv 3x3, stride 2                 -> 112 x 112 x 32
    13 blocks   depthwise 3x3 + pointwise 1x1      -> 7 x 7 x 1024     (rows below)
    head        global average pool, FC            -> num_classes

28 layers counting depthwise and pointwise separately (plus the FC). At width 1.0: 4.2M parameters,
569M multiply-adds (paper Table 8); ``width_mult`` (the paper's alpha) scales every channel count,
``0.75 / 0.5 / 0.25 -> 2.6M / 1.3M / 0.5M`` parameters.

torchvision has no MobileNet V1, so the key names are ours: ``features.0.0.weight`` (stem conv),
``features.<i>.depthwise.0.weight``, ``features.<i>.pointwise.1.running_mean``, ...,
``classifier.weight``. ``tools/torch_reference_mobilenet.py`` defines the same network in PyTorch with
the same keys, and the tests compare the two.
"""
from .. import nn
from ._common import PooledClassifier, check_num_classes, check_positive, make_divisible
from ._registry import register_model

__all__ = ["DepthwiseSeparable", "MobileNetV1", "mobilenet_v1"]

STEM_CHANNELS = 32          # Table 1: "Conv / s2, 3 x 3 x 3 x 32"

# One row per depthwise-separable block: (output channels of the pointwise conv, stride of the depthwise
# conv). From Table 1 of arXiv:1704.04861 (its "Conv dw / s" + "Conv / s1" line pairs).
BLOCKS = [
    (64, 1),        # 112 x 112
    (128, 2),       # -> 56 x 56
    (128, 1),
    (256, 2),       # -> 28 x 28
    (256, 1),
    (512, 2),       # -> 14 x 14
    (512, 1),       # "5x" in Table 1: five identical blocks at 14 x 14 x 512
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),      # -> 7 x 7
    (1024, 1),      # Table 1 prints stride 2 here, but the output stays 7 x 7: stride 1 (as every implementation)
]


class DepthwiseSeparable(nn.Module):
    """Depthwise-separable convolution block (arXiv:1704.04861, Fig. 3 right)::

        depthwise  3x3 conv, groups = C_in, stride s, BN, ReLU      (N, C_in, H, W) -> (N, C_in, H/s, W/s)
        pointwise  1x1 conv C_in -> C_out, BN, ReLU                 -> (N, C_out, H/s, W/s)

    Parameters
    ----------
    in_channels, out_channels : int
    stride : 1 or 2
        Stride of the depthwise convolution (the block's only down-sampling).
    """

    plain_container = True      # only chains its two layers: tinycnn.profile counts them

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {stride!r}")
        self.depthwise = nn.Conv2dNormActivation(in_channels, in_channels, kernel_size=3, stride=stride,
                                                 groups=in_channels, activation_layer=nn.ReLU)
        self.pointwise = nn.Conv2dNormActivation(in_channels, out_channels, kernel_size=1,
                                                 activation_layer=nn.ReLU)
        self.out_channels = out_channels

    def forward(self, x):
        return self.pointwise(self.depthwise(x))        # (N, C_in, H, W) -> (N, C_out, H/s, W/s)

    def backward(self, grad_out):
        return self.depthwise.backward(self.pointwise.backward(grad_out))


class MobileNetV1(PooledClassifier):
    """MobileNet V1 classifier: ``features`` (stem + 13 blocks), global average pooling, ``classifier``.

    Parameters
    ----------
    num_classes : int
    in_channels : int
        Image channels (3: RGB, the default; 1: grayscale).
    width_mult : float > 0
        The paper's width multiplier alpha: every channel count ``c`` becomes
        ``make_divisible(alpha * c, 8)`` (exactly ``alpha * c`` for alpha in {1, 0.75, 0.5, 0.25}).

    Shapes
    ------
    x : (N, in_channels, H, W) with H, W >= 1 (the network down-samples by 32; 32 x 32 gives a 1 x 1 final map)
    logits : (N, num_classes)
    """

    def __init__(self, num_classes=1000, width_mult=1.0, in_channels=3):
        super().__init__(in_channels)
        num_classes = check_num_classes(num_classes)
        check_positive(width_mult, "width_mult")
        in_channels = make_divisible(STEM_CHANNELS * width_mult, 8)
        layers = [nn.Conv2dNormActivation(self.in_channels, in_channels, kernel_size=3, stride=2,
                                          activation_layer=nn.ReLU)]
        for channels, stride in BLOCKS:
            out_channels = make_divisible(channels * width_mult, 8)
            layers.append(DepthwiseSeparable(in_channels, out_channels, stride))
            in_channels = out_channels
        self._set_layers(nn.Sequential(*layers),                  # (N, 1024a, H/32, W/32)
                         nn.Linear(in_channels, num_classes))     # the paper's FC before the softmax
        self.num_classes = num_classes
        self.width_mult = width_mult


@register_model
def mobilenet_v1(num_classes=1000, width_mult=1.0, in_channels=3):
    """MobileNet V1 (arXiv:1704.04861): 4.2M parameters and 569M multiply-adds at width 1.0, 224 x 224.

    ``width_mult`` is the paper's alpha (0.75 / 0.5 / 0.25 -> 2.6M / 1.3M / 0.5M parameters).
    """
    return MobileNetV1(num_classes=num_classes, width_mult=width_mult, in_channels=in_channels)
