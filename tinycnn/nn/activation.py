"""Element-wise activations: ``y = f(x)`` and ``dL/dx = dL/dy * f'(x)``.

Each class caches what its derivative needs (the input, or the output when ``f'`` is cheaper from it).
Derivatives at kinks follow PyTorch exactly (checked against it in the tests):

=============  =====================================  ===========================================
layer          f(x)                                   f'(x) at the kinks
=============  =====================================  ===========================================
ReLU           max(x, 0)                              0 at x = 0
ReLU6          min(max(x, 0), 6)                      0 at x = 0 and at x = 6
LeakyReLU      x if x > 0 else slope * x              slope at x = 0
Hardsigmoid    ReLU6(x + 3) / 6                       0 at x = -3 and at x = 3
Hardswish      x * ReLU6(x + 3) / 6                   0 at x = -3, 1 at x = 3
=============  =====================================  ===========================================

``inplace=`` is accepted (torchvision passes it) and shown in ``repr``, but ignored: the input is never
overwritten, because the backward pass needs it.
"""
import numpy as np

from kernels.activation import (clip_backward, clip_forward, hardsigmoid_backward, hardsigmoid_forward,
                                hardswish_backward, hardswish_forward)

from .module import Module


class _Elementwise(Module):
    """Shared bookkeeping: validate the input, cache it, check ``grad_out`` in backward."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)
        self._x = None          # cached input (or output, see subclasses)

    def forward(self, x):
        self._check_input(x, ndim=None)
        self._x = x
        return self._function(x)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, None if self._x is None else self._x.shape)
        return grad_out * self._derivative(self._x)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class _Clipped(_Elementwise):
    """``clip(x, 0, HIGH)`` and its derivative ``1[0 < x < HIGH]``, one compiled pass each
    (kernels/activation.py)."""

    HIGH = np.inf

    def _function(self, x):
        return clip_forward(x, 0.0, self.HIGH)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, None if self._x is None else self._x.shape)
        return clip_backward(grad_out, self._x, 0.0, self.HIGH)


class ReLU(_Clipped):
    """Rectified linear unit ``max(x, 0)``; derivative ``1[x > 0]`` (0 at the kink, as PyTorch)."""


class ReLU6(_Clipped):
    """``min(max(x, 0), 6)`` (MobileNet V1/V2, arXiv:1704.04861); derivative ``1[0 < x < 6]``."""

    HIGH = 6.0


class LeakyReLU(_Elementwise):
    """``x`` for ``x > 0`` else ``negative_slope * x``; derivative 1 or ``negative_slope`` (at 0: the slope)."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__(inplace)
        self.negative_slope = float(negative_slope)

    def _function(self, x):
        return np.where(x > 0, x, x * self.negative_slope)

    def _derivative(self, x):
        return np.where(x > 0, 1.0, self.negative_slope).astype(x.dtype)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


def _sigmoid(x):
    """Numerically stable logistic function ``1 / (1 + exp(-x))`` (never computes exp of a large positive)."""
    e = np.exp(-np.abs(x))                       # in (0, 1], no overflow
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Module):
    """Logistic function ``s(x) = 1 / (1 + exp(-x))``; derivative ``s(x) (1 - s(x))`` from the cached output."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        self._check_input(x, ndim=None)
        self._y = self._function(x)
        return self._y

    def _function(self, x):
        return _sigmoid(x)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, None if self._y is None else self._y.shape)
        return grad_out * self._y * (1 - self._y)


class Hardsigmoid(_Elementwise):
    """Piecewise-linear sigmoid ``ReLU6(x + 3) / 6`` (MobileNet V3, arXiv:1905.02244).

    Derivative ``1/6`` for ``-3 < x < 3``, else 0.
    """

    def _function(self, x):
        return hardsigmoid_forward(x)               # np.clip(x + 3, 0, 6) / 6, one compiled pass

    def _derivative(self, x):
        return np.where((x > -3) & (x < 3), 1 / 6, 0.0).astype(x.dtype)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, None if self._x is None else self._x.shape)
        return hardsigmoid_backward(grad_out, self._x)  # grad_out * _derivative(x), one compiled pass


class Hardswish(_Elementwise):
    """Hard swish ``x * ReLU6(x + 3) / 6`` (MobileNet V3, arXiv:1905.02244).

    Derivative: 0 for ``x <= -3``; ``x/3 + 1/2`` for ``-3 < x < 3``; 1 for ``x >= 3`` (PyTorch's choice at
    the kinks: 0 at -3 and 1 at +3).
    """

    def _function(self, x):
        return hardswish_forward(x)                 # x * np.clip(x + 3, 0, 6) / 6, one compiled pass

    def _derivative(self, x):
        middle = x / 3 + 0.5
        return np.where(x <= -3, 0.0, np.where(x < 3, middle, 1.0)).astype(x.dtype)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, None if self._x is None else self._x.shape)
        return hardswish_backward(grad_out, self._x)    # grad_out * _derivative(x), one compiled pass


class SiLU(_Elementwise):
    """Sigmoid linear unit / swish ``x * s(x)`` (arXiv:1710.05941); derivative ``s(x) (1 + x (1 - s(x)))``."""

    def _function(self, x):
        return x * _sigmoid(x)

    def _derivative(self, x):
        s = _sigmoid(x)
        return s * (1 + x * (1 - s))


class Tanh(Module):
    """Hyperbolic tangent ``t(x) = (e^x - e^-x) / (e^x + e^-x)`` in ``(-1, 1)`` (``torch.nn.Tanh``).

    Derivative ``1 - t(x)^2``, from the cached output. The classic activation of small BP networks
    (seed 002's GA/PSO-optimised MLP; see ``tinycnn.evolve``).
    """

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        self._check_input(x, ndim=None)
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, None if self._y is None else self._y.shape)
        return grad_out * (1 - self._y * self._y)
