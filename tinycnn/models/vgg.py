"""VGG-16 (Simonyan and Zisserman, arXiv:1409.1556, configuration D), torchvision's layout.

MobileNet V1 (arXiv:1704.04861, Table 10) compares itself with VGG-16: about the same ImageNet accuracy
with 32x fewer parameters (4.2M against 138M) and 27x fewer multiply-adds (569M against 15.5G).
Thirteen 3x3 convolutions (padding 1) in five stages separated by 2x2 max-pooling, then three fully
connected layers; the first of them (25088 -> 4096) alone holds 103M of the 138M parameters.

State-dict keys (``features.0.weight`` ... ``features.28.bias``, ``classifier.0`` ... ``classifier.6``)
and shapes are torchvision's ``vgg16``. An adaptive average pooling to 7 x 7 lets the classifier take
any input size (32 x 32 upwards; at 224 x 224 the map is already 7 x 7).
"""
from ..nn import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, init
from ._common import LayerChain, check_num_classes
from ._registry import register_model

__all__ = ["VGG", "vgg16"]

# Configuration D of the paper's Table 1: output channels of each 3x3 convolution, "M" = 2x2 max-pool.
# Sizes for a 224 x 224 input.
VGG16 = [
    64, 64, "M",                 # conv1_x, 224 -> 112
    128, 128, "M",               # conv2_x, 112 -> 56
    256, 256, 256, "M",          # conv3_x, 56 -> 28
    512, 512, 512, "M",          # conv4_x, 28 -> 14
    512, 512, 512, "M",          # conv5_x, 14 -> 7
]
POOLED_SIZE = 7                  # the classifier reads 512 x 7 x 7 = 25088 numbers
HIDDEN = 4096


class VGG(LayerChain):
    """``features`` (3x3 convolutions + ReLU, 2x2 max-pooling), ``avgpool`` to 7 x 7, ``classifier``.

    Parameters
    ----------
    config : list
        Channels per convolution and ``"M"`` for each max-pooling (:data:`VGG16`).
    num_classes : int
    hidden : int
        Width of the two hidden fully connected layers (4096, the published network); smaller values
        give small variants for tests and experiments.
    dropout : float
        Dropout after each hidden fully connected layer (0.5).
    in_channels : int
        Image channels (3: RGB).

    Initialisation as torchvision: convolutions ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``
    with zero bias, linear layers ``normal(0, 0.01)`` with zero bias.
    """

    def __init__(self, config, num_classes=1000, dropout=0.5, hidden=HIDDEN, in_channels=3):
        super().__init__(in_channels)
        num_classes = check_num_classes(num_classes)
        hidden = check_num_classes(hidden, "hidden")
        layers, channels = [], self.in_channels
        for item in config:
            if item == "M":
                layers.append(MaxPool2d(2, stride=2))                   # halves H and W
            else:
                layers += [Conv2d(channels, item, 3, padding=1), ReLU(inplace=True)]
                channels = item
        self.features = Sequential(*layers)                             # (N, 512, H/32, W/32)
        self.avgpool = AdaptiveAvgPool2d((POOLED_SIZE, POOLED_SIZE))    # (N, 512, 7, 7)
        self.flatten = Flatten(1)                                       # (N, 25088)
        self.classifier = Sequential(
            Linear(channels * POOLED_SIZE * POOLED_SIZE, hidden), ReLU(inplace=True), Dropout(dropout),
            Linear(hidden, hidden), ReLU(inplace=True), Dropout(dropout),
            Linear(hidden, num_classes))                                # (N, num_classes)
        for module in self.modules():
            if isinstance(module, Conv2d):
                init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                init.zeros_(module.bias)
            elif isinstance(module, Linear):
                init.normal_(module.weight, 0.0, 0.01)
                init.zeros_(module.bias)

    def _layers(self):
        return [self.features, self.avgpool, self.flatten, self.classifier]


@register_model
def vgg16(num_classes=1000, dropout=0.5, hidden=HIDDEN, in_channels=3):
    """VGG-16 (configuration D), torchvision's layout: 138,357,544 parameters, 15.5G MACs at 224 x 224."""
    return VGG(VGG16, num_classes, dropout, hidden, in_channels)
