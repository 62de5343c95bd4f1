"""Squeeze-and-excitation: re-weight channels by a gate computed from their global averages.

Hu et al., "Squeeze-and-Excitation Networks", arXiv:1709.01507; used in MobileNetV3 (arXiv:1905.02244)
with a hard-sigmoid gate and ``C/4`` squeeze channels.
"""
import math

from . import fusion
from .activation import ReLU, Sigmoid
from .conv import Conv2d
from .grad_mode import is_grad_enabled
from .module import Module
from .pooling import AdaptiveAvgPool2d


class SqueezeExcitation(Module):
    """SE block with torchvision's layout (``torchvision.ops.SqueezeExcitation``)::

        s = avgpool(x)                       (N, C, 1, 1)   squeeze: one number per channel
        s = activation(fc1(s))               (N, S, 1, 1)   1x1 convolution C -> S, with bias
        s = scale_activation(fc2(s))         (N, C, 1, 1)   1x1 convolution S -> C, gate in [0, 1]
        y = s * x                            (N, C, H, W)   excitation: scale each channel

    The two "fully connected" layers are 1x1 convolutions, so ``state_dict`` keys are ``fc1.weight``
    ``(S, C, 1, 1)``, ``fc1.bias``, ``fc2.weight`` ``(C, S, 1, 1)``, ``fc2.bias``, as in torchvision.

    Parameters
    ----------
    input_channels : int
        ``C``.
    squeeze_channels : int
        ``S``, e.g. ``C // 16`` (SENet) or ``make_divisible(C // 4, 8)`` (MobileNetV3).
    activation : Module class (or any callable returning a Module)
        After ``fc1``; default ``ReLU``.
    scale_activation : Module class (or any callable returning a Module)
        The gate after ``fc2``; default ``Sigmoid`` (MobileNetV3: ``Hardsigmoid``).

    Backward: ``y = s * x`` depends on ``x`` twice -- directly, and through the gate ``s``::

        dL/dx = s * dL/dy  +  avgpool.backward(fc1...gate.backward( sum_{h,w} dL/dy * x ))

    Inside ``tinycnn.nn.no_grad()`` the five layers' kernels are called directly, without the layers'
    checks and caches (:func:`tinycnn.nn.fusion.squeeze_excitation_without_grad`; same bits).
    """

    #: the registry names of (avgpool, fc1, activation, fc2, scale_activation), for code that reads the
    #: registry directly (:func:`tinycnn.nn.fusion.squeeze_excitation_without_grad`); a subclass that renames
    #: its children lists its own (GhostNet's timm names)
    _LAYER_NAMES = ("avgpool", "fc1", "activation", "fc2", "scale_activation")

    def __init__(self, input_channels, squeeze_channels, activation=ReLU, scale_activation=Sigmoid):
        super().__init__()
        self.avgpool = AdaptiveAvgPool2d(1)
        self.fc1 = Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()
        self._x = None              # cached input (N, C, H, W)
        self._scale = None          # cached gate (N, C, 1, 1)

    def _gate(self, x):
        s = self.avgpool(x)                      # (N, C, 1, 1)
        s = self.activation(self.fc1(s))         # (N, S, 1, 1)
        return self.scale_activation(self.fc2(s))  # (N, C, 1, 1)

    def _gate_backward(self, grad_scale):
        g = self.fc2.backward(self.scale_activation.backward(grad_scale))   # (N, S, 1, 1)
        g = self.fc1.backward(self.activation.backward(g))                  # (N, C, 1, 1)
        return self.avgpool.backward(g)                                      # (N, C, H, W)

    def forward(self, x):
        self._check_input(x, channels=self.fc1.in_channels)
        if not is_grad_enabled():
            y = fusion.squeeze_excitation_without_grad(self, x)     # the layers' kernels, called directly
            if y is not None:
                return y
        scale = self._gate(x)
        self._x, self._scale = x, scale
        return scale * x                         # broadcast over H, W

    def backward(self, grad_out):
        self._check_grad_out(grad_out, None if self._x is None else self._x.shape)
        grad_direct = grad_out * self._scale                                  # through the product, s fixed
        grad_scale = (grad_out * self._x).sum(axis=(2, 3), keepdims=True)     # (N, C, 1, 1)
        return grad_direct + self._gate_backward(grad_scale)                  # the two paths add up

    def extra_flops(self, input_shape, output_shape):
        """FLOPs of the scaling ``s * x`` (one multiply per element of ``x``), done in this block's own code.

        ``tinycnn.profile`` calls this; the pooling, the two 1x1 convolutions and the activations are
        counted as layers of their own.
        """
        return math.prod(input_shape)
