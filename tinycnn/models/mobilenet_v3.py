"""MobileNet V3 Large and Small: inverted residuals + squeeze-and-excitation + hard-swish.

Howard et al., "Searching for MobileNetV3", arXiv:1905.02244. What changes from V2 (arXiv:1801.04381):

* **Squeeze-and-excitation** (arXiv:1709.01507) after the depthwise conv in some blocks: global average
  pool, 1x1 conv to ``make_divisible(C/4, 8)`` channels, ReLU, 1x1 conv back to ``C``, then the gate
  ``h-sigmoid(z) = ReLU6(z + 3) / 6`` scales each channel (:class:`tinycnn.nn.SqueezeExcitation`).
* **h-swish** ``x * ReLU6(x + 3) / 6`` in the deeper layers (cheap to compute, close to swish);
  ReLU in the early, high-resolution ones.
* 5x5 depthwise kernels in some blocks; kernel sizes, widths and SE placement came out of an
  architecture search, so the network is a list of per-block rows rather than repeated stages.
* A 16-channel stem (h-swish) instead of 32, and an efficient last stage: the expensive 1x1 conv to
  1280 (Large) / 1024 (Small) channels runs *after* the global pooling, on a 1 x 1 map, as a Linear.

The layout is torchvision's ``mobilenet_v3_large`` / ``mobilenet_v3_small`` exactly (keys, shapes and
order of ``state_dict``; batch norm with ``eps=0.001, momentum=0.01``): 5,483,032 and 2,542,856
parameters at width 1.0.
"""
import itertools
from dataclasses import dataclass, replace
from functools import partial

from .. import nn
from ._common import PooledClassifier, check_num_classes, check_positive, make_divisible
from ._registry import register_model

__all__ = ["InvertedResidualConfig", "MobileNetV3", "mobilenet_v3_large", "mobilenet_v3_small"]

# torchvision's MobileNetV3 batch norm (the TensorFlow reference's defaults).
BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


@dataclass(frozen=True)
class InvertedResidualConfig:
    """One row of the MobileNetV3 tables (arXiv:1905.02244, Tables 1 and 2), as torchvision's config.

    Attributes
    ----------
    input_channels : int
    kernel : int
        Depthwise kernel size, 3 or 5.
    expanded_channels : int
        Width after the expansion 1x1 conv (the paper's "exp size"); equal to ``input_channels`` means
        no expansion conv.
    out_channels : int
    use_se : bool
        Squeeze-and-excitation after the depthwise conv.
    activation : {"RE", "HS"}
        ReLU or hard-swish (the paper's "NL" column).
    stride : 1 or 2
        Stride of the depthwise conv.
    """

    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    activation: str
    stride: int

    def __post_init__(self):
        if self.activation not in ("RE", "HS"):
            raise ValueError(f"activation must be 'RE' (ReLU) or 'HS' (hard-swish); got {self.activation!r}")
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {self.stride!r}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd int; got {self.kernel!r}")

    @property
    def use_hs(self):
        """True when the block uses hard-swish, False for ReLU."""
        return self.activation == "HS"

    def scaled(self, width_mult):
        """This row with every channel count ``c`` replaced by ``make_divisible(c * width_mult, 8)``."""
        return replace(self, input_channels=make_divisible(self.input_channels * width_mult, 8),
                       expanded_channels=make_divisible(self.expanded_channels * width_mult, 8),
                       out_channels=make_divisible(self.out_channels * width_mult, 8))


Row = InvertedResidualConfig

# arXiv:1905.02244 Table 1 (MobileNetV3-Large), input 224 x 224; the stem is conv 3x3 s2 -> 16 (h-swish).
# Columns: input channels, kernel, exp size, output channels, SE, NL, stride.
LARGE_SETTING = [
    Row(16, 3, 16, 16, False, "RE", 1),       # 112 x 112
    Row(16, 3, 64, 24, False, "RE", 2),       # -> 56 x 56
    Row(24, 3, 72, 24, False, "RE", 1),
    Row(24, 5, 72, 40, True, "RE", 2),        # -> 28 x 28
    Row(40, 5, 120, 40, True, "RE", 1),
    Row(40, 5, 120, 40, True, "RE", 1),
    Row(40, 3, 240, 80, False, "HS", 2),      # -> 14 x 14
    Row(80, 3, 200, 80, False, "HS", 1),
    Row(80, 3, 184, 80, False, "HS", 1),
    Row(80, 3, 184, 80, False, "HS", 1),
    Row(80, 3, 480, 112, True, "HS", 1),
    Row(112, 3, 672, 112, True, "HS", 1),
    Row(112, 5, 672, 160, True, "HS", 2),     # -> 7 x 7
    Row(160, 5, 960, 160, True, "HS", 1),
    Row(160, 5, 960, 160, True, "HS", 1),
]
LARGE_LAST_CHANNELS = 1280                    # Table 1: "conv2d 1x1, NBN" after the pooling

# arXiv:1905.02244 Table 2 (MobileNetV3-Small).
SMALL_SETTING = [
    Row(16, 3, 16, 16, True, "RE", 2),        # -> 56 x 56
    Row(16, 3, 72, 24, False, "RE", 2),       # -> 28 x 28
    Row(24, 3, 88, 24, False, "RE", 1),
    Row(24, 5, 96, 40, True, "HS", 2),        # -> 14 x 14
    Row(40, 5, 240, 40, True, "HS", 1),
    Row(40, 5, 240, 40, True, "HS", 1),
    Row(40, 5, 120, 48, True, "HS", 1),
    Row(48, 5, 144, 48, True, "HS", 1),
    Row(48, 5, 288, 96, True, "HS", 2),       # -> 7 x 7
    Row(96, 5, 576, 96, True, "HS", 1),
    Row(96, 5, 576, 96, True, "HS", 1),
]
SMALL_LAST_CHANNELS = 1024


class InvertedResidual(nn.ShortcutBlock):
    """MobileNetV3 block, torchvision's layout (its parts in ``self.block``: ``block.0``, ``block.1``, ...)::

        expand     1x1 conv C_in -> E, BN, act         (left out when E == C_in)
        depthwise  k x k conv, groups = E, stride s, BN, act
        se         squeeze-and-excitation on E channels, h-sigmoid gate      (only if use_se)
        project    1x1 conv E -> C_out, BN             (linear)
        + x        only when s = 1 and C_in == C_out

    ``act`` is ReLU or hard-swish. The parts are also reachable by role (``self.expand``,
    ``self.depthwise``, ``self.se``, ``self.project``; ``None`` when left out). The shortcut and its
    backward pass come from :class:`tinycnn.nn.ShortcutBlock`.
    """

    def __init__(self, config, norm_layer=BatchNorm):
        super().__init__()
        if not isinstance(config, InvertedResidualConfig):
            raise TypeError(f"config must be an InvertedResidualConfig; got {type(config).__name__}")
        self._set_shape(config.input_channels, config.out_channels, config.stride)
        activation = nn.Hardswish if config.use_hs else nn.ReLU
        E = config.expanded_channels
        parts = {}
        if E != config.input_channels:
            parts["expand"] = nn.Conv2dNormActivation(config.input_channels, E, kernel_size=1,
                                                      norm_layer=norm_layer, activation_layer=activation)
        parts["depthwise"] = nn.Conv2dNormActivation(E, E, kernel_size=config.kernel, stride=config.stride,
                                                     groups=E, norm_layer=norm_layer, activation_layer=activation)
        if config.use_se:
            parts["se"] = nn.SqueezeExcitation(E, make_divisible(E // 4, 8), scale_activation=nn.Hardsigmoid)
        parts["project"] = nn.Conv2dNormActivation(E, config.out_channels, kernel_size=1, norm_layer=norm_layer,
                                                   activation_layer=None)
        self.block = nn.Sequential(*parts.values())
        self._role_index = {role: index for index, role in enumerate(parts)}
        self.config = config

    def _role(self, role):
        index = self._role_index.get(role)
        return None if index is None else self.block[index]

    expand = property(lambda self: self._role("expand"), doc="The expansion conv block, or None.")
    depthwise = property(lambda self: self._role("depthwise"), doc="The depthwise conv block.")
    se = property(lambda self: self._role("se"), doc="The squeeze-and-excitation block, or None.")
    project = property(lambda self: self._role("project"), doc="The linear projection conv block.")

    use_res_connect = property(lambda self: self.use_residual, doc="torchvision's name for ``use_residual``.")

    def _branch_layers(self):
        return [self.block]                 # (N, C_in, H, W) -> (N, C_out, H/s, W/s)


class MobileNetV3(PooledClassifier):
    """MobileNet V3 classifier with torchvision's layout.

    ``features`` = stem (3x3 conv s2, BN, h-swish), one :class:`InvertedResidual` per row, 1x1 conv to
    ``6 * C_last`` (BN, h-swish); global average pooling; ``classifier`` = Linear(6 * C_last ->
    last_channels), h-swish, Dropout, Linear(-> num_classes).

    Parameters
    ----------
    setting : list of InvertedResidualConfig
        The rows, already scaled by the width multiplier.
    last_channels : int
        Width of the first Linear of the classifier (1280 for Large, 1024 for Small, times the width).
    num_classes : int
    dropout : float
        0.2, as torchvision.
    in_channels : int
        Image channels (3: RGB, the default; 1: grayscale).

    Shapes
    ------
    x : (N, in_channels, H, W) -> logits : (N, num_classes); the network down-samples by 32.
    """

    def __init__(self, setting, last_channels, num_classes=1000, dropout=0.2, in_channels=3):
        super().__init__(in_channels)
        num_classes = check_num_classes(num_classes)
        if not setting or not all(isinstance(row, InvertedResidualConfig) for row in setting):
            raise ValueError("setting must be a non-empty list of InvertedResidualConfig rows")
        for previous, row in itertools.pairwise(setting):
            if row.input_channels != previous.out_channels:
                raise ValueError(f"row {row} takes {row.input_channels} channels but the row before it gives "
                                 f"{previous.out_channels}")
        stem_channels = setting[0].input_channels
        head_channels = 6 * setting[-1].out_channels
        layers = [nn.Conv2dNormActivation(self.in_channels, stem_channels, kernel_size=3, stride=2,
                                          norm_layer=BatchNorm, activation_layer=nn.Hardswish)]
        layers += [InvertedResidual(row) for row in setting]
        layers.append(nn.Conv2dNormActivation(setting[-1].out_channels, head_channels, kernel_size=1,
                                              norm_layer=BatchNorm, activation_layer=nn.Hardswish))
        self._set_layers(nn.Sequential(*layers), nn.Sequential(   # features: (N, 6 * C_last, H/32, W/32)
            nn.Linear(head_channels, last_channels),     # the paper's 1x1 conv "NBN" after the pooling
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channels, num_classes),
        ))
        self.num_classes = num_classes


def _build(setting, last_channels, num_classes, width_mult, in_channels):
    check_positive(width_mult, "width_mult")
    rows = [row.scaled(width_mult) for row in setting]
    return MobileNetV3(rows, make_divisible(last_channels * width_mult, 8), num_classes=num_classes,
                       in_channels=in_channels)


@register_model
def mobilenet_v3_large(num_classes=1000, width_mult=1.0, in_channels=3):
    """MobileNetV3-Large (arXiv:1905.02244 Table 1), torchvision's layout: 5,483,032 parameters."""
    return _build(LARGE_SETTING, LARGE_LAST_CHANNELS, num_classes, width_mult, in_channels)


@register_model
def mobilenet_v3_small(num_classes=1000, width_mult=1.0, in_channels=3):
    """MobileNetV3-Small (arXiv:1905.02244 Table 2), torchvision's layout: 2,542,856 parameters."""
    return _build(SMALL_SETTING, SMALL_LAST_CHANNELS, num_classes, width_mult, in_channels)
