"""Pooling layers: max, average and global-average pooling over each channel's spatial plane.

Pooling has no parameters. Max pooling routes the gradient to the position of each window's maximum
(the kernel returns it as ``argmax``, PyTorch's ``return_indices``); average pooling spreads it evenly
over the window. Max unpooling (:class:`MaxUnpool2d`) undoes a max pooling as far as it can: each pooled
value goes back to where its maximum was, every other pixel becomes 0. Global average pooling (``AdaptiveAvgPool2d(1)``) replaces the big fully connected
layers of older networks (Network in Network, arXiv:1312.4400) and is the "squeeze" of SE blocks.
"""
import math

import numpy as np

from kernels import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    max_unpool2d_backward,
    max_unpool2d_forward,
)
from kernels._validate import as_pair, unpool_output_size

from .module import Module


def _ceil_mode_extra(size, kernel, stride, padding):
    """Extra rows (or columns) at the far end that ``ceil_mode=True`` needs, PyTorch's output-size rule.

    ``out = ceil((size + 2p - k) / s) + 1``, minus one if the last window would start inside the far
    padding (each window must start inside the input or the near padding).
    """
    out = math.ceil((size + 2 * padding - kernel) / stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return max(0, (out - 1) * stride + kernel - (size + 2 * padding))


class MaxPool2d(Module):
    """Max over each ``k x k`` window: ``y[n, c, h, w] = max_{i, j} x_pad[n, c, s*h + i, s*w + j]``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        At most half the window; padding counts as ``-inf``.
    dilation : int
        Only 1 is supported.
    return_indices : bool
        If True, ``forward`` returns ``(y, indices)``: ``indices[n, c, i, j]`` is the flat position
        ``h*W + w`` of each maximum in its input plane (PyTorch's layout), what :class:`MaxUnpool2d` needs.
        ``backward`` still takes only ``dL/dy``.
    ceil_mode : bool
        Round the output size up (torchvision's SqueezeNet uses it): extra ``-inf`` rows/columns at the
        far end make the last, partial window fit.

    Backward: ``dL/dx[argmax] += dL/dy``; ties go to the first maximum in row-major window order, as in
    PyTorch.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        if dilation not in (1, (1, 1)):
            raise ValueError(f"MaxPool2d supports only dilation=1; got {dilation!r}")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)
        self._kernel = as_pair(kernel_size, "kernel_size", 1)
        self._stride = as_pair(self.stride, "stride", 1)
        self._padding = as_pair(padding, "padding", 0)
        if self._padding[0] > self._kernel[0] // 2 or self._padding[1] > self._kernel[1] // 2:
            raise ValueError(f"padding={padding} must be at most half of kernel_size={kernel_size}")
        self._argmax = None             # cached window-maximum positions (flat index into the pooled plane)
        self._pooled_shape = None       # shape of the plane argmax indexes (input, plus ceil_mode padding)
        self._pool_padding = None       # padding the kernel call used ((0, 0) when ceil_mode padded explicitly)
        self._input_shape = None
        self._output_shape = None

    def forward(self, x):
        self._check_input(x)
        N, C, H, W = x.shape
        extra_h = extra_w = 0
        if self.ceil_mode:
            extra_h = _ceil_mode_extra(H, self._kernel[0], self._stride[0], self._padding[0])
            extra_w = _ceil_mode_extra(W, self._kernel[1], self._stride[1], self._padding[1])
        if extra_h or extra_w:
            # pad explicitly with -inf (both sides), then pool without padding
            (ph, pw) = self._padding
            pooled = np.pad(x, ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w)),
                            constant_values=-np.inf)                 # (N, C, H + 2ph + extra_h, ...)
            pool_padding = (0, 0)
        else:
            pooled = x
            pool_padding = self._padding
        y, argmax = max_pool2d_forward(pooled, self._kernel, self._stride, pool_padding)
        self._argmax, self._pooled_shape, self._pool_padding = argmax, pooled.shape, pool_padding
        self._input_shape, self._output_shape = x.shape, y.shape
        if self.return_indices:
            return y, self._input_plane_indices(argmax)
        return y

    def _input_plane_indices(self, argmax):
        """``argmax`` re-expressed as flat indices ``h*W + w`` of the *input* plane (not the ceil_mode-padded one)."""
        if self._pooled_shape == self._input_shape:
            return argmax.copy()
        H, W = self._input_shape[2:]
        padded_width = self._pooled_shape[3]
        ph, pw = self._padding
        rows = np.clip(argmax // padded_width - ph, 0, H - 1)     # a maximum never lies in the -inf padding
        cols = np.clip(argmax % padded_width - pw, 0, W - 1)
        return rows * W + cols

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        grad_pooled = max_pool2d_backward(grad_out, self._argmax, self._pooled_shape, self._kernel, self._stride,
                                          self._pool_padding)
        if self._pooled_shape == self._input_shape:
            return grad_pooled
        # crop the explicit ceil_mode padding away (it never holds a maximum, so its gradient is 0)
        N, C, H, W = self._input_shape
        ph, pw = self._padding
        return np.ascontiguousarray(grad_pooled[:, :, ph:ph + H, pw:pw + W])

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over each ``k x k`` window (zero padding counted in the mean: ``count_include_pad=True``).

    Backward: every input pixel of a window receives ``dL/dy / (kH * kW)``.
    Only PyTorch's defaults ``ceil_mode=False, count_include_pad=True, divisor_override=None`` are supported.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        if ceil_mode or not count_include_pad or divisor_override is not None:
            raise ValueError("AvgPool2d supports only ceil_mode=False, count_include_pad=True, "
                             "divisor_override=None (PyTorch's defaults)")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        kernel, padding = as_pair(kernel_size, "kernel_size", 1), as_pair(padding, "padding", 0)
        as_pair(self.stride, "stride", 1)
        if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
            raise ValueError(f"padding={self.padding} must be at most half of kernel_size={kernel_size}")
        self._input_shape = None
        self._output_shape = None

    def forward(self, x):
        self._check_input(x)
        y = avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding)    # (N, C, H_out, W_out)
        self._input_shape, self._output_shape = x.shape, y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        return avg_pool2d_backward(grad_out, self._input_shape, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def adaptive_bins(size, bins):
    """``[(start, end)]`` of PyTorch's adaptive pooling along one axis: bin ``i`` averages input positions
    ``floor(i*size/bins) .. ceil((i+1)*size/bins) - 1`` (bins may overlap when ``size`` is not a multiple,
    and repeat one position when ``bins > size``)."""
    return [((i * size) // bins, -(-((i + 1) * size) // bins)) for i in range(bins)]


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size``: ``(N, C, H, W) -> (N, C, h, w)``.

    ``output_size=1`` is global average pooling (the mean of each channel; every classifier head and SE
    block). Other sizes use PyTorch's bins (:func:`adaptive_bins`): AlexNet and VGG pool to 6 x 6 and
    7 x 7 so their classifiers accept any input resolution (at 224 x 224 the map already has that size).
    Backward: each input pixel receives ``dL/dy / bin_size`` from every bin that contains it.
    """

    def __init__(self, output_size):
        super().__init__()
        self._size = as_pair(output_size, "output_size", 1)
        self.output_size = output_size
        self._input_shape = None
        self._output_shape = None

    def forward(self, x):
        self._check_input(x)
        if self._size == (1, 1):
            y = global_avg_pool2d_forward(x)            # (N, C, 1, 1)
        else:
            N, C, H, W = x.shape
            h, w = self._size
            y = np.empty((N, C, h, w), dtype=x.dtype)
            for i, (top, bottom) in enumerate(adaptive_bins(H, h)):          # one output row per bin
                for j, (left, right) in enumerate(adaptive_bins(W, w)):
                    y[:, :, i, j] = x[:, :, top:bottom, left:right].mean(axis=(2, 3))
        self._input_shape, self._output_shape = x.shape, y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        if self._size == (1, 1):
            return global_avg_pool2d_backward(grad_out, self._input_shape)
        N, C, H, W = self._input_shape
        h, w = self._size
        grad_x = np.zeros(self._input_shape, dtype=grad_out.dtype)
        for i, (top, bottom) in enumerate(adaptive_bins(H, h)):
            for j, (left, right) in enumerate(adaptive_bins(W, w)):
                share = grad_out[:, :, i, j] / ((bottom - top) * (right - left))        # (N, C)
                grad_x[:, :, top:bottom, left:right] += share[:, :, None, None]
        return grad_x

    def extra_repr(self):
        return f"output_size={self.output_size}"


def _unpool_default_size(size, kernel, stride, padding):
    """PyTorch's default max-unpooling size: ``(size - 1)*stride - 2*padding + kernel`` (one axis)."""
    return (size - 1) * stride - 2 * padding + kernel


class MaxUnpool2d(Module):
    """Partial inverse of :class:`MaxPool2d`: each value goes back to its maximum's position, zeros elsewhere.

    ``y[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j]``, with the indices of
    ``MaxPool2d(..., return_indices=True)``. Used by SegNet's decoder (arXiv:1511.00561) and to project
    feature maps back to pixels (Zeiler & Fergus, arXiv:1311.2901). Backward: ``dL/dx`` reads ``dL/dy`` at
    each index (the indices receive no gradient).

    Parameters
    ----------
    kernel_size, stride, padding : int or (int, int)
        Those of the max pooling being undone (``stride`` defaults to ``kernel_size``).

    ``forward(x, indices, output_size=None)``: the output is ``(H_in - 1)*stride - 2*padding + kernel_size``
    high (same for the width) unless ``output_size`` (``(H, W)`` or ``(N, C, H, W)``, e.g. the pooled input's
    shape) says otherwise; as in PyTorch it must then lie strictly between that default minus and plus the
    stride (pooling with floor rounding loses at most ``stride - 1`` rows).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)     # pairs, as PyTorch stores them
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)
        self._indices = None
        self._output_shape = None

    def _output_size(self, x_shape, output_size):
        N, C, H_in, W_in = x_shape
        default = tuple(_unpool_default_size(size, k, s, p) for size, k, s, p in
                        zip((H_in, W_in), self.kernel_size, self.stride, self.padding))
        if output_size is None:
            if min(default) < 1:
                raise ValueError(f"{self._layer_name()}: the default output size {default} for input {x_shape} is "
                                 f"empty; pass output_size")
            return default
        try:
            length = len(output_size)
        except TypeError:
            raise TypeError(f"output_size must be a sequence (H, W) or (N, C, H, W); got {output_size!r}") from None
        if length not in (2, 4):
            raise ValueError(f"output_size should be a sequence containing 2 or 4 elements, but it has a length of "
                             f"{length}: {output_size!r}")
        size = unpool_output_size(output_size, x_shape[:2])          # (H, W) as positive ints
        for axis, (wanted, base, stride) in enumerate(zip(size, default, self.stride)):
            if not base - stride < wanted < base + stride:
                raise ValueError(f"invalid output_size {tuple(output_size)} (dim {axis} must be between "
                                 f"{base - stride} and {base + stride}, exclusive)")
        return size

    def forward(self, x, indices, output_size=None):
        self._check_input(x)
        H_out, W_out = self._output_size(x.shape, output_size)
        y = max_unpool2d_forward(x, indices, (H_out, W_out))         # (N, C, H_out, W_out)
        self._indices, self._output_shape = indices, y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        return max_unpool2d_backward(grad_out, self._indices)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
