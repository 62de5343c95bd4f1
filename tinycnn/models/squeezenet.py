"""SqueezeNet: AlexNet accuracy with 50x fewer parameters, built from fire modules.

Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size",
arXiv:1602.07360. Three strategies: replace most 3x3 filters by 1x1 (9x fewer weights), feed the
remaining 3x3 filters few input channels (the "squeeze" layer), down-sample late so that convolutions see
large activation maps. The fire module::

    squeeze   1x1 conv C_in -> S, ReLU                    S small: the 3x3 filters below see few channels
    expand    concat(1x1 conv S -> E1, ReLU;  3x3 conv S -> E3 (padding 1), ReLU)    (N, E1 + E3, H, W)

Version 1.1 (from the authors' repository) moves the max-pools earlier and uses a 3x3, 64-channel stem:
2.4x less computation than 1.0 for the same accuracy. There is no fully connected layer: a 1x1
convolution gives one map per class, and global average pooling turns each map into a logit.

The layout is torchvision's ``squeezenet1_0`` / ``squeezenet1_1`` exactly (``features.3.squeeze.weight``,
``features.3.expand1x1.weight``, ..., ``classifier.1.weight``), so converted torchvision weights load with
``strict=True``. Parameters (torchvision's counts): 1.0 1,248,424; 1.1 1,235,496.

Input size: the stem has no padding and the max-pools round up (``ceil_mode=True``), so each version has
a smallest input (:data:`MIN_INPUT_SIZE`: 21 x 21 for 1.0, 17 x 17 for 1.1); smaller inputs raise
``ValueError``. 32 x 32 works for both.
"""
import math

import numpy as np

from .. import nn
from ._common import LayerChain, check_num_classes
from ._registry import register_model

__all__ = ["Fire", "SqueezeNet", "squeezenet1_0", "squeezenet1_1"]

# Stem (Table 1 of arXiv:1602.07360 for 1.0; the authors' v1.1 prototxt): (out_channels, kernel, stride).
STEMS = {"1_0": (96, 7, 2), "1_1": (64, 3, 2)}

# The layers after the stem's conv + ReLU. "M" = MaxPool2d(3, stride 2, ceil_mode=True);
# a tuple = Fire(squeeze, expand1x1, expand3x3) whose input is the previous layer's output.
FEATURES = {
    "1_0": ["M",                                       # Table 1: maxpool1
            (16, 64, 64), (16, 64, 64), (32, 128, 128),  # fire2, fire3, fire4
            "M",                                       # maxpool4
            (32, 128, 128), (48, 192, 192), (48, 192, 192), (64, 256, 256),   # fire5 .. fire8
            "M",                                       # maxpool8
            (64, 256, 256)],                           # fire9
    "1_1": ["M",
            (16, 64, 64), (16, 64, 64),
            "M",
            (32, 128, 128), (32, 128, 128),
            "M",
            (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)],
}

POOL_KERNEL, POOL_STRIDE = 3, 2


def _pool_output_size(size):
    """Output size of ``MaxPool2d(3, 2, ceil_mode=True)``: ``ceil((size - 3) / 2) + 1`` (0 = too small)."""
    return max(0, math.ceil((size - POOL_KERNEL) / POOL_STRIDE) + 1)


def _spatial_sizes(version, size):
    """Sizes along one spatial axis after the stem and after each max-pool, for an input of ``size``.

    A size of 0 or less means that layer cannot run (PyTorch raises "output size is too small").
    """
    _, kernel, stride = STEMS[version]
    sizes = [(size - kernel) // stride + 1 if size >= kernel else 0]       # stem conv, no padding
    for layer in FEATURES[version]:
        if layer == "M":
            sizes.append(_pool_output_size(sizes[-1]))
    return sizes


def _smallest_input(version):
    size = 1
    while min(_spatial_sizes(version, size)) < 1:
        size += 1
    return size


MIN_INPUT_SIZE = {version: _smallest_input(version) for version in STEMS}   # {"1_0": 21, "1_1": 17}


class Fire(nn.Module):
    """SqueezeNet's fire module (Fig. 1 of arXiv:1602.07360), torchvision's attribute names.

    Parameters
    ----------
    in_channels : int
    squeeze_channels : int
        ``S``, fewer than ``in_channels`` (strategy 2: few inputs for the 3x3 filters).
    expand1x1_channels, expand3x3_channels : int
        ``E1``, ``E3``; the output has ``E1 + E3`` channels.

    Data flow::

        s = ReLU(squeeze(x))                                   (N, S, H, W)
        y = concat(ReLU(expand1x1(s)), ReLU(expand3x3(s)))     (N, E1 + E3, H, W)

    Backward: the gradient of the concatenation is cut into its ``E1`` and ``E3`` channels; both expand
    branches read ``s``, so their gradients with respect to ``s`` add (the rules of
    :class:`tinycnn.nn.Concat`, written out to keep torchvision's names).
    """

    plain_container = True      # concatenates: no arithmetic of its own (tinycnn.profile)

    def __init__(self, in_channels, squeeze_channels, expand1x1_channels, expand3x3_channels):
        super().__init__()
        self.in_channels = in_channels
        self.squeeze = nn.Conv2d(in_channels, squeeze_channels, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_channels, expand1x1_channels, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_channels, expand3x3_channels, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.out_channels = expand1x1_channels + expand3x3_channels
        self._output_shape = None

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        s = self.squeeze_activation(self.squeeze(x))                  # (N, S, H, W)
        e1 = self.expand1x1_activation(self.expand1x1(s))             # (N, E1, H, W)
        e3 = self.expand3x3_activation(self.expand3x3(s))             # (N, E3, H, W)
        y = np.concatenate([e1, e3], axis=1)                          # (N, E1 + E3, H, W)
        self._output_shape = y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        e1_channels = self.expand1x1.out_channels
        grad_e1 = np.ascontiguousarray(grad_out[:, :e1_channels])     # the concatenation splits the gradient
        grad_e3 = np.ascontiguousarray(grad_out[:, e1_channels:])
        grad_s = (self.expand1x1.backward(self.expand1x1_activation.backward(grad_e1))
                  + self.expand3x3.backward(self.expand3x3_activation.backward(grad_e3)))   # s fed both: add
        return self.squeeze.backward(self.squeeze_activation.backward(grad_s))


class SqueezeNet(LayerChain):
    """SqueezeNet 1.0 or 1.1 with torchvision's layout.

    ``features`` = stem conv (stride 2, no padding) + ReLU, then the ``FEATURES`` rows (fire modules and
    ceil-mode max-pools); ``classifier`` = Dropout(0.5), 1x1 conv to ``num_classes`` maps, ReLU, global
    average pooling; ``flatten`` gives the logits.

    Parameters
    ----------
    version : {"1_0", "1_1"}
    num_classes : int
    dropout : float
        Dropout probability before the final convolution (0.5, as torchvision).
    in_channels : int
        Image channels (3: RGB, the default; 1: grayscale).

    Shapes
    ------
    x : (N, in_channels, H, W) with ``H, W >= MIN_INPUT_SIZE[version]`` -> logits : (N, num_classes).
    """

    def __init__(self, version="1_0", num_classes=1000, dropout=0.5, in_channels=3):
        super().__init__(in_channels)
        if version not in STEMS:
            raise ValueError(f"SqueezeNet version must be one of {sorted(STEMS)}; got {version!r}")
        num_classes = check_num_classes(num_classes)
        stem_channels, kernel, stride = STEMS[version]
        layers = [nn.Conv2d(self.in_channels, stem_channels, kernel_size=kernel, stride=stride), nn.ReLU(inplace=True)]
        in_channels = stem_channels
        for row in FEATURES[version]:
            if row == "M":
                layers.append(nn.MaxPool2d(kernel_size=POOL_KERNEL, stride=POOL_STRIDE, ceil_mode=True))
            else:
                layers.append(Fire(in_channels, *row))
                in_channels = layers[-1].out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Conv2d(in_channels, num_classes, kernel_size=1),       # one map per class
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1))                                  # each map -> one logit
        self.flatten = nn.Flatten(1)
        self._init_weights(final_conv=self.classifier[1])
        self.version = version
        self.num_classes = num_classes
        self.min_input_size = MIN_INPUT_SIZE[version]

    def _init_weights(self, final_conv):
        """torchvision's initialisation: He-uniform convolutions, zero biases, a small final convolution.

        Without batch norm the scale of the signal depends on the initial weights alone: the default
        (PyTorch's ``U(+-1/sqrt(fan_in))``) shrinks it layer after layer and training stalls; He
        initialisation (arXiv:1502.01852) keeps its variance through the ReLUs.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if module is final_conv:
                    nn.init.normal_(module.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f"squeezenet{self.version} needs an input of at least {self.min_input_size} x "
                             f"{self.min_input_size} (unpadded stem and three stride-2 max-pools); got input of "
                             f"shape {x.shape}")
        return super().forward(x)

    def _layers(self):      # (N, C, H, W) -> (N, 512, ~H/16, ~W/16) -> (N, num_classes, 1, 1) -> (N, num_classes)
        return [self.features, self.classifier, self.flatten]


@register_model
def squeezenet1_0(num_classes=1000, in_channels=3):
    """SqueezeNet 1.0 (arXiv:1602.07360), torchvision's layout: 1,248,424 parameters."""
    return SqueezeNet("1_0", num_classes=num_classes, in_channels=in_channels)


@register_model
def squeezenet1_1(num_classes=1000, in_channels=3):
    """SqueezeNet 1.1 (the authors' v1.1: 2.4x less computation), torchvision's layout: 1,235,496 parameters."""
    return SqueezeNet("1_1", num_classes=num_classes, in_channels=in_channels)
