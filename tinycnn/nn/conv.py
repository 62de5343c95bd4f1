"""Convolution layers: ``Conv2d`` (every kind of 2-D convolution) and ``ConvTranspose2d``.

One ``Conv2d`` class covers the six kinds of convolution of lightweight CNNs through its arguments
(costs for a ``k x k`` kernel, output ``H_out x W_out``):

==================  ==========================================  ==================================
kind                arguments                                   multiply-accumulates
==================  ==========================================  ==================================
standard            ``Conv2d(C_in, C_out, k)``                  ``k*k*C_in*C_out*H_out*W_out``
strided             ``stride=2`` (down-sampling)                1/4 of the stride-1 cost
dilated (atrous)    ``dilation=d`` (wider receptive field)      same as standard
grouped             ``groups=g`` (ResNeXt, ShuffleNet)          1/g of standard
depthwise           ``groups=C_in, C_out = m*C_in``             ``k*k*C_out*H_out*W_out``
pointwise           ``kernel_size=1``                           ``C_in*C_out*H_out*W_out``
==================  ==========================================  ==================================

A depthwise followed by a pointwise convolution is MobileNet's depthwise-separable convolution
(arXiv:1704.04861): ``1/C_out + 1/k^2`` of the standard cost. The arithmetic lives in the numba kernels
(``kernels.conv2d_forward`` picks the specialised depthwise/pointwise kernel itself); the layer stores
the weights, caches the input and accumulates gradients.
"""
import numbers

import numpy as np

import kernels.conv2d as conv2d_kernels
from kernels import (
    conv2d_backward_bias,
    conv_transpose2d_backward_input,
    conv_transpose2d_backward_weight,
    conv_transpose2d_forward,
)
from kernels._jit import one_blas_thread
from kernels._validate import as_pair, conv_geometry

from . import init
from .module import Module


def _check_channels(in_channels, out_channels, groups):
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if in_channels % groups != 0:
        raise ValueError(f"in_channels={in_channels} must be divisible by groups={groups}")
    if out_channels % groups != 0:
        raise ValueError(f"out_channels={out_channels} must be divisible by groups={groups}")
    return int(in_channels), int(out_channels), int(groups)


def init_conv2d_parameters(layer, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                           rng):
    """Store a ``Conv2d``-like layer's arguments (sizes as ``(h, w)`` pairs) and create its parameters:
    ``weight`` (C_out, C_in/groups, kH, kW) and ``bias`` (C_out,) or None, PyTorch's initialisation.
    Shared by :class:`Conv2d` and ``DeformConv2d`` (torchvision gives both the same arguments and weights)."""
    layer.in_channels, layer.out_channels, layer.groups = _check_channels(in_channels, out_channels, groups)
    layer.kernel_size = as_pair(kernel_size, "kernel_size", 1)
    layer.stride = as_pair(stride, "stride", 1)
    layer.padding = as_pair(padding, "padding", 0)
    layer.dilation = as_pair(dilation, "dilation", 1)
    weight_shape = (layer.out_channels, layer.in_channels // layer.groups) + layer.kernel_size
    layer.weight, bias = init.new_weight_and_bias(weight_shape, layer.out_channels, bias, rng)
    layer.register_parameter("bias", bias)                             # None without a bias


def _conv_repr(layer, extra_defaults):
    """PyTorch's ``Conv2d`` repr: non-default arguments only."""
    text = (f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, "
            f"stride={layer.stride}")
    for name, default in extra_defaults:
        value = getattr(layer, name)
        if value != default:
            text += f", {name}={value}"
    if layer.bias is None:
        text += ", bias=False"
    return text


class Conv2d(Module):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    ``y[n, o] = bias[o] + sum_{c in group(o)} sum_{i, j} weight[o, c, i, j] * x_pad[n, c, s*h + d*i, s*w + d*j]``

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation : int or (int, int)
    groups : int
        Split channels into ``groups`` independent convolutions; ``groups = in_channels`` is depthwise.
    bias : bool
    rng : numpy.random.Generator, optional
        Generator for the initial weights; default: the shared one (``tinycnn.nn.init.manual_seed``).

    Shapes
    ------
    x : (N, C_in, H, W) -> y : (N, C_out, H_out, W_out), ``H_out = (H + 2p - d(k-1) - 1) // s + 1``.
    weight : (C_out, C_in/groups, kH, kW), bias : (C_out,). Initialised as PyTorch:
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = C_in/groups * kH * kW``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, rng=None):
        super().__init__()
        init_conv2d_parameters(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                               bias, rng)
        self._x = None              # cached input
        self._output_shape = None
        self._cached_geometry = None    # (key, geometry) of the last input shape: see _geometry

    def _hyper_parameters(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def _geometry(self, input_shape):
        """The kernels' geometry for this input shape, checked once and kept while nothing changes.

        The public kernels (``kernels.conv2d_forward``, ...) check every argument on every call (~25 us);
        a layer already checks its input (dtype, shape, channels), so it computes the geometry once per
        input shape, weight shape and hyper-parameters and calls the kernels' checked-argument entry
        points (``kernels.conv2d._forward`` / ``_backward``) with it.
        """
        weight_shape = self._parameters["weight"].data.shape       # (the registry: see _convolve)
        key = (input_shape, weight_shape, self.stride, self.padding, self.dilation, self.groups)
        cached = self.__dict__.get("_cached_geometry")
        if cached is None or cached[0] != key:
            cached = self._cached_geometry = (key, conv_geometry(input_shape, weight_shape,
                                                                 **self._hyper_parameters()))
        return cached[1]

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        x = np.ascontiguousarray(x)
        y = self._convolve(x)                                             # (N, C_out, H_out, W_out)
        self._x, self._output_shape = x, y.shape
        return y

    def _convolve(self, x, epilogue=None):
        """The convolution of a checked input ``x``, keeping nothing: ``forward``'s arithmetic, its output
        finished by ``epilogue`` (:func:`kernels.conv2d._forward`; ``tinycnn.nn.fusion`` passes a batch
        norm and activation there)."""
        x = np.ascontiguousarray(x)
        # the parameters straight from the registry: ``self.weight`` reaches Module.__getattr__ only after
        # Python's own lookup has failed and built an AttributeError, ~1.5 us per access on Python 3.11
        # (measured on a 2-core AMD EPYC), and a batch-1 MobileNet V3 forward did ~300 such accesses
        weight, bias = self._parameters["weight"], self._parameters["bias"]
        bias = None if bias is None else bias.data
        with one_blas_thread():                                       # kernels/_jit.py: why one BLAS thread
            return conv2d_kernels._forward(x, np.ascontiguousarray(weight.data), bias, self._geometry(x.shape),
                                           epilogue=epilogue)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        grad_out = np.ascontiguousarray(grad_out, dtype=self._x.dtype)
        geometry = self._geometry(self._x.shape)
        weight, bias = self._parameters["weight"], self._parameters["bias"]      # (the registry: see _convolve)
        # both gradients in one call (small depthwise planes fused)
        with one_blas_thread():
            grad_x, grad_weight = conv2d_kernels._backward(grad_out, self._x, np.ascontiguousarray(weight.data),
                                                           geometry)
        weight.grad += grad_weight
        if bias is not None:
            bias.grad += conv2d_backward_bias(grad_out)               # sum over N, H_out, W_out
        return grad_x

    def extra_repr(self):
        return _conv_repr(self, [("padding", (0, 0)), ("dilation", (1, 1)), ("groups", 1)])


class ConvTranspose2d(Module):
    """Transposed ("fractionally strided") 2-D convolution: the adjoint of ``Conv2d``, a learned up-sampling.

    Each input pixel ``x[n, c, h, w]`` adds ``x * weight[c, o, i, j]`` to output pixel
    ``(h*s - p + d*i, w*s - p + d*j)``. Its forward is a convolution's input-gradient, and vice versa.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, output_padding, dilation : int or (int, int)
        ``output_padding`` (< stride or dilation) adds rows/columns on one side to pick among the
        output sizes that a stride-``s`` convolution maps to the same input size.
    groups : int
    bias : bool
    rng : numpy.random.Generator, optional

    Shapes
    ------
    x : (N, C_in, H, W) -> y : (N, C_out, H_out, W_out),
    ``H_out = (H - 1) s - 2p + d(k - 1) + output_padding + 1``.
    weight : (C_in, C_out/groups, kH, kW) (PyTorch's layout), bias : (C_out,). Initialised as PyTorch,
    whose ``fan_in`` for this layout is ``C_out/groups * kH * kW``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, *, rng=None):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = _check_channels(in_channels, out_channels, groups)
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)
        self.output_padding = as_pair(output_padding, "output_padding", 0)
        self.dilation = as_pair(dilation, "dilation", 1)
        for axis in range(2):
            if self.output_padding[axis] >= max(self.stride[axis], self.dilation[axis]):
                raise ValueError(f"output_padding={self.output_padding} must be smaller than stride={self.stride} "
                                 f"or dilation={self.dilation}")
        weight_shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        self.weight, bias = init.new_weight_and_bias(weight_shape, self.out_channels, bias, rng)
        self.register_parameter("bias", bias)                          # None without a bias
        self._x = None
        self._output_shape = None

    def _hyper_parameters(self):
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    groups=self.groups, dilation=self.dilation)

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        bias = None if self.bias is None else self.bias.data
        y = conv_transpose2d_forward(x, self.weight.data, bias, **self._hyper_parameters())  # (N, C_out, H_out, W_out)
        self._x, self._output_shape = x, y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        hyper = self._hyper_parameters()
        self.weight.grad += conv_transpose2d_backward_weight(grad_out, self._x, self.weight.shape, **hyper)
        if self.bias is not None:
            self.bias.grad += conv2d_backward_bias(grad_out)          # the same sum over N, H_out, W_out
        return conv_transpose2d_backward_input(grad_out, self.weight.data, self._x.shape, **hyper)

    def extra_repr(self):
        return _conv_repr(self, [("padding", (0, 0)), ("output_padding", (0, 0)), ("dilation", (1, 1)),
                                 ("groups", 1)])
