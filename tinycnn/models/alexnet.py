"""AlexNet (Krizhevsky, Sutskever and Hinton, NeurIPS 2012), torchvision's single-tower version.

The network the lightweight CNNs are measured against: SqueezeNet matches its ImageNet accuracy with
"50x fewer parameters" (arXiv:1602.07360): 61.1M here against SqueezeNet 1.0's 1.25M. Five
convolutions (the first 11 x 11 with stride 4) and three max-poolings, then three fully connected
layers that hold 96% of the parameters (58.6M of 61.1M) and little of the arithmetic.

torchvision's layout (from "One weird trick", arXiv:1404.5997: 64, 192, 384, 256, 256 filters, one
tower instead of the paper's two GPU halves), so the state-dict keys (``features.0.weight``, ...,
``classifier.6.bias``) and shapes are torchvision's. An adaptive average pooling to 6 x 6 lets the
classifier take any input size; at 224 x 224 the map is already 6 x 6. The smallest input is 63 x 63.
"""
from ..nn import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential
from ._common import LayerChain, check_num_classes
from ._registry import register_model

__all__ = ["AlexNet", "alexnet"]

# (out_channels, kernel, stride, padding, max-pool after) per convolution; sizes for a 224 x 224 input.
CONVOLUTIONS = [
    (64, 11, 4, 2, True),       # 55 x 55 -> pool 27 x 27
    (192, 5, 1, 2, True),       # 27 x 27 -> pool 13 x 13
    (384, 3, 1, 1, False),      # 13 x 13
    (256, 3, 1, 1, False),      # 13 x 13
    (256, 3, 1, 1, True),       # 13 x 13 -> pool 6 x 6
]
POOLED_SIZE = 6                 # the classifier reads 256 x 6 x 6 = 9216 numbers
HIDDEN = 4096                   # two fully connected layers of 4096, each after dropout


class AlexNet(LayerChain):
    """``features`` (convolutions, ReLU, 3x3 stride-2 max-pooling), ``avgpool`` to 6 x 6, ``classifier``.

    Parameters
    ----------
    num_classes : int
    hidden : int
        Width of the two hidden fully connected layers (4096, the published network); smaller values
        give small variants for tests and experiments.
    dropout : float
        Dropout probability before each hidden fully connected layer (0.5).
    in_channels : int
        Image channels (3: RGB).

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``, ``H, W >= 63`` (``min_input_size``).
    """

    min_input_size = 63         # 11x11 stride-4 stem and three unpadded 3x3 stride-2 max-pools

    def __init__(self, num_classes=1000, dropout=0.5, hidden=HIDDEN, in_channels=3):
        super().__init__(in_channels)
        num_classes = check_num_classes(num_classes)
        hidden = check_num_classes(hidden, "hidden")
        layers, channels = [], self.in_channels
        for out_channels, kernel, stride, padding, pool in CONVOLUTIONS:
            layers += [Conv2d(channels, out_channels, kernel, stride=stride, padding=padding), ReLU(inplace=True)]
            if pool:
                layers.append(MaxPool2d(3, stride=2))
            channels = out_channels
        self.features = Sequential(*layers)                             # (N, 256, 6, 6) at 224
        self.avgpool = AdaptiveAvgPool2d((POOLED_SIZE, POOLED_SIZE))    # (N, 256, 6, 6) at any size
        self.flatten = Flatten(1)                                       # (N, 9216)
        self.classifier = Sequential(
            Dropout(dropout), Linear(channels * POOLED_SIZE * POOLED_SIZE, hidden), ReLU(inplace=True),
            Dropout(dropout), Linear(hidden, hidden), ReLU(inplace=True),
            Linear(hidden, num_classes))                                # (N, num_classes)

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f"alexnet needs an input of at least {self.min_input_size} x {self.min_input_size} "
                             f"(stride-4 stem, three unpadded max-pools); got input of shape {x.shape}")
        return super().forward(x)

    def _layers(self):
        return [self.features, self.avgpool, self.flatten, self.classifier]


@register_model
def alexnet(num_classes=1000, dropout=0.5, hidden=HIDDEN, in_channels=3):
    """AlexNet, torchvision's layout: 61,100,840 parameters, 714M MACs at 224 x 224."""
    return AlexNet(num_classes, dropout, hidden, in_channels)
