"""MobileNet V2: inverted residuals with linear bottlenecks.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", arXiv:1801.04381.
The building block (:class:`InvertedResidual`) widens, filters, then narrows::

    expand     1x1 conv C_in -> t * C_in, BN, ReLU6       (left out when t = 1)
    depthwise  3x3 conv, stride s, BN, ReLU6
    project    1x1 conv t * C_in -> C_out, BN              linear: ReLU would destroy information in
                                                           the low-dimensional bottleneck
    + x        only when s = 1 and C_in == C_out

The shortcut joins the thin ends (the bottlenecks), the reverse of ResNet's bottleneck, hence "inverted".

The layout is torchvision's ``mobilenet_v2`` exactly: ``state_dict`` keys, shapes and order are equal
(``features.0.0.weight`` ... ``features.18.1.running_var``, ``classifier.1.weight``), so converted
torchvision weights load with ``strict=True``. 3,504,872 parameters at width 1.0 (the paper's Table 4
lists 3.4M) and 300M multiply-adds at 224 x 224.
"""
from .. import nn
from ._common import PooledClassifier, check_num_classes, check_positive, make_divisible
from ._registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2"]

STEM_CHANNELS = 32          # Table 2: conv2d 3x3, stride 2, 32 channels
LAST_CHANNELS = 1280        # Table 2: conv2d 1x1 before the pooling; never narrowed when width_mult < 1

# Table 2 of arXiv:1801.04381, one row per stage of identical blocks:
# t = expansion factor, c = output channels, n = number of blocks, s = stride of the stage's first block.
INVERTED_RESIDUAL_SETTING = [
    # t, c, n, s
    (1, 16, 1, 1),      # 112 x 112
    (6, 24, 2, 2),      # -> 56 x 56
    (6, 32, 3, 2),      # -> 28 x 28
    (6, 64, 4, 2),      # -> 14 x 14
    (6, 96, 3, 1),
    (6, 160, 3, 2),     # -> 7 x 7
    (6, 320, 1, 1),
]


class InvertedResidual(nn.ShortcutBlock):
    """MobileNetV2's inverted residual with linear bottleneck (arXiv:1801.04381), torchvision's layout.

    ::

        expand    1x1 conv C_in -> t*C_in, BN, ReLU6      (left out when t = 1)
        depthwise 3x3 conv (stride s), BN, ReLU6
        project   1x1 conv t*C_in -> C_out, BN            (linear: no activation)
        add x     only when stride == 1 and C_in == C_out

    The layers sit in ``self.conv`` (a :class:`~tinycnn.nn.Sequential`) so ``state_dict`` keys equal
    torchvision's (``conv.0.0.weight``, ``conv.0.1.running_mean``, ...). The shortcut and its backward
    pass (the two gradients of the fork add) come from :class:`tinycnn.nn.ShortcutBlock`.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : 1 or 2
    expand_ratio : number >= 1
        ``t``: the hidden width is ``round(in_channels * t)``.
    norm_layer : callable, optional
        Batch norm by default.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, H_out, W_out)``, ``H_out = (H - 1) // stride + 1``.
    """

    def __init__(self, in_channels, out_channels, stride, expand_ratio, norm_layer=None):
        super().__init__()
        self._set_shape(in_channels, out_channels, stride)
        if expand_ratio < 1:
            raise ValueError(f"expand_ratio must be >= 1; got {expand_ratio!r}")
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        hidden = int(round(in_channels * expand_ratio))
        layers = []
        if expand_ratio != 1:
            layers.append(nn.Conv2dNormActivation(in_channels, hidden, kernel_size=1, norm_layer=norm_layer,
                                                  activation_layer=nn.ReLU6))                      # expand
        layers += [
            nn.Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden, norm_layer=norm_layer,
                                    activation_layer=nn.ReLU6),                                    # depthwise
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),                                  # project
            norm_layer(out_channels),                                                              # linear
        ]
        self.conv = nn.Sequential(*layers)

    use_res_connect = property(lambda self: self.use_residual, doc="torchvision's name for ``use_residual``.")

    def _branch_layers(self):
        return [self.conv]


class MobileNetV2(PooledClassifier):
    """MobileNet V2 classifier with torchvision's layout.

    ``features`` = stem (conv-BN-ReLU6, stride 2), 17 inverted residual blocks, 1x1 conv-BN-ReLU6 to
    ``LAST_CHANNELS``; then global average pooling and ``classifier`` = Dropout(0.2), Linear.

    Parameters
    ----------
    num_classes : int
    in_channels : int
        Image channels (3: RGB; 1: MNIST, ``mobilenet_v2(in_channels=1, num_classes=10)``).
    width_mult : float > 0
        Channel counts ``c`` become ``make_divisible(c * width_mult, 8)``; the last conv keeps 1280
        channels for ``width_mult <= 1`` (``make_divisible(1280 * max(1, width_mult), 8)``).
    dropout : float
        Dropout probability before the final Linear (0.2, as torchvision).

    Shapes
    ------
    x : (N, in_channels, H, W) -> logits : (N, num_classes); the network down-samples by 32.
    """

    def __init__(self, num_classes=1000, width_mult=1.0, dropout=0.2, in_channels=3):
        super().__init__(in_channels)
        num_classes = check_num_classes(num_classes)
        check_positive(width_mult, "width_mult")
        stem_channels = make_divisible(STEM_CHANNELS * width_mult, 8)
        last_channels = make_divisible(LAST_CHANNELS * max(1.0, width_mult), 8)
        layers = [nn.Conv2dNormActivation(self.in_channels, stem_channels, stride=2, activation_layer=nn.ReLU6)]
        in_channels = stem_channels
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(c * width_mult, 8)
            for index in range(n):
                stride = s if index == 0 else 1            # only the first block of a stage down-samples
                layers.append(InvertedResidual(in_channels, out_channels, stride, expand_ratio=t))
                in_channels = out_channels
        layers.append(nn.Conv2dNormActivation(in_channels, last_channels, kernel_size=1, activation_layer=nn.ReLU6))
        self._set_layers(nn.Sequential(*layers),                  # (N, 1280, H/32, W/32)
                         nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes)))
        self.num_classes = num_classes
        self.width_mult = width_mult


@register_model
def mobilenet_v2(num_classes=1000, width_mult=1.0, in_channels=3):
    """MobileNet V2 (arXiv:1801.04381), torchvision's layout: 3,504,872 parameters at width 1.0."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, in_channels=in_channels)
