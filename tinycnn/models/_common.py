"""Small pieces shared by the model files."""
import numbers

from .. import nn


def make_divisible(value, divisor=8, min_value=None):
    """Round a channel count to a multiple of ``divisor``, never below 90% of ``value``.

    From the MobileNet V2 reference code (arXiv:1801.04381), used by V2, V3 and MobileNeXt: hardware
    prefers channel counts that are multiples of 8. ``make_divisible(32 * 0.75) == 24``.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:            # rounding down must not remove more than 10%
        rounded += divisor
    return rounded


def check_positive(value, name):
    """``ValueError`` unless ``value`` is a positive number (width multipliers, class counts...)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    return value


def check_num_classes(num_classes, name="num_classes"):
    """``ValueError`` unless ``num_classes`` (or the count called ``name``) is a positive int."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"{name} must be a positive int; got {num_classes!r}")
    return int(num_classes)


def check_in_channels(in_channels):
    """``ValueError`` unless ``in_channels`` (image channels: 3 for RGB, 1 for MNIST) is a positive int."""
    if isinstance(in_channels, bool) or not isinstance(in_channels, numbers.Integral) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int (3 for RGB, 1 for grayscale); got {in_channels!r}")
    return int(in_channels)


class LayerChain(nn.Module):
    """A model that runs its top-level layers one after another: ``forward`` in order, ``backward`` in
    reverse. Subclasses keep the reference implementation's attribute names (``features``, ``classifier``;
    ``conv1``, ``layer1``, ``fc``: the ``state_dict`` keys) and list those layers, in order, in ``_layers()``.

    Parameters
    ----------
    in_channels : int
        Channels of the input images (3: RGB, the default; 1: MNIST). Subclasses build their stem for it.

    Shapes: (N, in_channels, H, W) images -> (N, num_classes) logits.
    """

    plain_container = True      # no arithmetic of its own: tinycnn.profile counts its layers

    def __init__(self, in_channels=3):
        super().__init__()
        self.in_channels = check_in_channels(in_channels)

    def _layers(self):
        raise NotImplementedError(f"{type(self).__name__} must list its layers in _layers()")

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        return nn.chain_forward(self._layers(), x)

    def backward(self, grad_out):
        return nn.chain_backward(self._layers(), grad_out)


class PooledClassifier(LayerChain):
    """``features`` -> global average pooling -> ``flatten`` -> ``classifier``: the head of MobileNet V1,
    V2, V3 and MobileNeXt, written once (torchvision's attribute names, so its ``state_dict`` keys).

    A subclass builds its layers and calls :meth:`_set_layers`; shapes::

        (N, C, H, W) -> features -> (N, C_last, H/32, W/32) -> avgpool -> (N, C_last, 1, 1)
                     -> flatten -> (N, C_last) -> classifier -> (N, num_classes)
    """

    def _set_layers(self, features, classifier):
        """Register ``features``, ``avgpool``, ``flatten`` and ``classifier``, in this (state_dict) order."""
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = classifier

    def _layers(self):
        return [self.features, self.avgpool, self.flatten, self.classifier]
