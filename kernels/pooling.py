"""Max, average and global-average pooling (NCHW), forward and backward.

Pooling slides a ``kH x kW`` window over each channel separately and keeps one number per window: the
largest value (max pooling) or the mean (average pooling). It has no parameters; like a depthwise
convolution it never mixes channels, so every kernel here runs one ``(n, c)`` plane per parallel
iteration and no two iterations ever touch the same memory.

Conventions are PyTorch's (``torch.nn.functional.max_pool2d`` / ``avg_pool2d``):

* ``stride=None`` means ``stride = kernel_size``; ``padding`` is at most half the window;
* ``H_out = floor((H + 2*padding - kH) / stride) + 1`` (same for W);
* max pooling treats padding as ``-inf`` and returns, per output, the flat index ``h*W + w`` of the
  winning input pixel in its plane (``return_indices=True``); ties go to the first maximum in row-major
  window order, and a NaN in the window wins (NaN propagates);
* average pooling counts padded zeros (``count_include_pad=True``): every window is divided by
  ``kH*kW``, even at the border.

Global average pooling (NiN, arXiv:1312.4400) replaces the big fully-connected head of early CNNs: it
reduces each ``H x W`` feature map to its mean, ``(N, C, H, W) -> (N, C, 1, 1)``.
Max unpooling puts pooled maxima back at their ``argmax`` positions (zeros elsewhere).
Sums are accumulated in float64 and rounded once when stored.
"""
import numpy as np

from ._jit import inline_jit, parallel_jit, prange
from ._validate import (check_flat_indices, check_grad_out, check_max_pool_backward, check_shape,
                        check_tensor, check_unpool_backward_args, pool_geometry, unpool_output_size)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """2-D max pooling; also returns where each maximum came from (for the backward pass).

    Parameters
    ----------
    x : ndarray (N, C, H, W), float32 or float64
    kernel_size : int or (kH, kW)
    stride : int, (sH, sW) or None (``None``: equal to ``kernel_size``)
    padding : int or (pH, pW), at most half of ``kernel_size``; padded positions count as ``-inf``.

    Returns
    -------
    y : ndarray (N, C, H_out, W_out), ``H_out = (H + 2*pH - kH) // sH + 1``
    argmax : ndarray (N, C, H_out, W_out), int64
        Flat index ``h*W + w`` of the maximum inside its input plane ``x[n, c]``; the first maximum in
        row-major window order wins ties (PyTorch's ``return_indices=True``).
    """
    x = check_tensor(x, "x")
    (kH, kW), (sH, sW), (pH, pW), output_shape = pool_geometry(x.shape, kernel_size, stride, padding)
    y = np.empty(output_shape, dtype=x.dtype)                     # (N, C, H_out, W_out)
    argmax = np.empty(output_shape, dtype=np.int64)               # (N, C, H_out, W_out)
    _max_pool_forward_kernel(x, y, argmax, kH, kW, sH, sW, pH, pW)
    return y, argmax


def max_pool2d_backward(grad_out, argmax, input_shape, kernel_size, stride=None, padding=0):
    """Gradient of :func:`max_pool2d_forward`: each output's gradient goes to its window's maximum.

    ``grad_x[n, c].flat[argmax[n, c, i, j]] += grad_out[n, c, i, j]``; where windows overlap
    (stride < kernel) an input pixel that is the maximum of several windows receives the sum.

    Parameters
    ----------
    grad_out : ndarray (N, C, H_out, W_out)
    argmax : ndarray (N, C, H_out, W_out), integer (int64 from :func:`max_pool2d_forward`)
    input_shape : tuple (N, C, H, W), the forward input's shape
    kernel_size, stride, padding : as in the forward call (as PyTorch's ``max_pool2d`` backward, they are
        needed to check that ``input_shape`` and ``grad_out`` belong together: ``argmax`` indexes a plane
        of width ``W``, so a wrong ``input_shape`` would put every gradient into the wrong pixel).

    Returns
    -------
    grad_x : ndarray (N, C, H, W)
    """
    grad_out, argmax, input_shape = check_max_pool_backward(grad_out, argmax, input_shape, kernel_size, stride,
                                                            padding)
    N, C, H, W = input_shape
    grad_x = np.empty(input_shape, dtype=grad_out.dtype)          # (N, C, H, W)
    _max_pool_backward_kernel(grad_out.reshape(N, C, -1), argmax.reshape(N, C, -1), grad_x.reshape(N, C, H * W))
    return grad_x


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """2-D average pooling, padding counted as zeros (``count_include_pad=True``).

    Parameters
    ----------
    x : ndarray (N, C, H, W), float32 or float64
    kernel_size, stride, padding : as in :func:`max_pool2d_forward`

    Returns
    -------
    y : ndarray (N, C, H_out, W_out); ``y[n, c, i, j] = sum(window) / (kH*kW)``, the padded
        positions adding zero but still counted.
    """
    x = check_tensor(x, "x")
    (kH, kW), (sH, sW), (pH, pW), output_shape = pool_geometry(x.shape, kernel_size, stride, padding)
    y = np.empty(output_shape, dtype=x.dtype)                     # (N, C, H_out, W_out)
    _avg_pool_forward_kernel(x, y, kH, kW, sH, sW, pH, pW)
    return y


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0):
    """Gradient of :func:`avg_pool2d_forward`.

    Every input pixel of a window receives ``grad_out / (kH*kW)`` of that window; overlapping windows add.

    Parameters
    ----------
    grad_out : ndarray (N, C, H_out, W_out)
    input_shape : tuple (N, C, H, W)
    kernel_size, stride, padding : as in the forward call

    Returns
    -------
    grad_x : ndarray (N, C, H, W)
    """
    input_shape = check_shape(input_shape, "input_shape")
    (kH, kW), (sH, sW), (pH, pW), output_shape = pool_geometry(input_shape, kernel_size, stride, padding,
                                                               input_name="input_shape")
    grad_out = check_tensor(grad_out, "grad_out")
    grad_out = check_grad_out(grad_out, output_shape, grad_out.dtype)
    grad_x = np.empty(input_shape, dtype=grad_out.dtype)          # (N, C, H, W)
    _avg_pool_backward_kernel(grad_out, grad_x, kH, kW, sH, sW, pH, pW)
    return grad_x


def global_avg_pool2d_forward(x):
    """Global average pooling: the mean of each feature map, ``(N, C, H, W) -> (N, C, 1, 1)``.

    Parameters
    ----------
    x : ndarray (N, C, H, W), float32 or float64

    Returns
    -------
    y : ndarray (N, C, 1, 1), ``y[n, c] = mean(x[n, c])`` (NiN, arXiv:1312.4400)
    """
    x = check_tensor(x, "x")
    N, C, H, W = x.shape
    y = np.empty((N, C, 1, 1), dtype=x.dtype)                     # (N, C, 1, 1)
    _global_avg_pool_forward_kernel(x.reshape(N, C, H * W), y.reshape(N, C))
    return y


def global_avg_pool2d_backward(grad_out, input_shape):
    """Gradient of :func:`global_avg_pool2d_forward`: ``grad_out[n, c] / (H*W)`` spread over the plane.

    Parameters
    ----------
    grad_out : ndarray (N, C, 1, 1)
    input_shape : tuple (N, C, H, W)

    Returns
    -------
    grad_x : ndarray (N, C, H, W)
    """
    input_shape = check_shape(input_shape, "input_shape")
    N, C, H, W = input_shape
    grad_out = check_tensor(grad_out, "grad_out")
    grad_out = check_grad_out(grad_out, (N, C, 1, 1), grad_out.dtype)
    grad_x = np.empty(input_shape, dtype=grad_out.dtype)          # (N, C, H, W)
    _global_avg_pool_backward_kernel(grad_out.reshape(N, C), grad_x.reshape(N, C, H * W))
    return grad_x


@parallel_jit
def _max_pool_forward_kernel(x, y, argmax, kH, kW, sH, sW, pH, pW):
    """y[n, c, i, j] = max of the window; argmax[n, c, i, j] = its flat index h*W + w in x[n, c]."""
    N, C, H, W = x.shape
    _, _, H_out, W_out = y.shape
    for plane in prange(N * C):  # one (n, c) plane per iteration: writes y[n, c], argmax[n, c] only
        n = plane // C
        c = plane % C
        for i in range(H_out):  # output rows
            h_start = max(i * sH - pH, 0)  # the window clipped to the image: padding is -inf, never wins
            h_stop = min(i * sH - pH + kH, H)
            for j in range(W_out):  # output columns
                w_start = max(j * sW - pW, 0)
                w_stop = min(j * sW - pW + kW, W)
                best = -np.inf
                best_index = h_start * W + w_start  # an all -inf window answers its first pixel
                for h in range(h_start, h_stop):  # window rows, then columns: row-major order
                    for w in range(w_start, w_stop):
                        value = x[n, c, h, w]
                        if value > best or np.isnan(value):  # strict ">": the first maximum keeps ties
                            best = value
                            best_index = h * W + w
                y[n, c, i, j] = best
                argmax[n, c, i, j] = best_index


@parallel_jit
def _max_pool_backward_kernel(grad_out, argmax, grad_x):
    """grad_x[n, c, argmax[n, c, p]] += grad_out[n, c, p]. Shapes (N, C, P), (N, C, P), (N, C, H*W)."""
    N, C, P = grad_out.shape
    for plane in prange(N * C):  # one (n, c) plane per iteration: every argmax of it points into grad_x[n, c]
        n = plane // C
        c = plane % C
        grad_x[n, c, :] = 0
        for p in range(P):  # outputs of the plane, in order (deterministic sums where windows overlap)
            grad_x[n, c, argmax[n, c, p]] += grad_out[n, c, p]


@parallel_jit
def _avg_pool_forward_kernel(x, y, kH, kW, sH, sW, pH, pW):
    """y[n, c, i, j] = (sum of the window's pixels inside the image) / (kH*kW)."""
    N, C, H, W = x.shape
    _, _, H_out, W_out = y.shape
    window_size = kH * kW  # count_include_pad=True: padding counts, as zeros
    for plane in prange(N * C):  # one (n, c) plane per iteration: writes y[n, c] only
        n = plane // C
        c = plane % C
        for i in range(H_out):  # output rows
            h_start = max(i * sH - pH, 0)
            h_stop = min(i * sH - pH + kH, H)
            for j in range(W_out):  # output columns
                w_start = max(j * sW - pW, 0)
                w_stop = min(j * sW - pW + kW, W)
                total = 0.0
                for h in range(h_start, h_stop):  # window rows inside the image
                    for w in range(w_start, w_stop):  # window columns inside the image
                        total += x[n, c, h, w]
                y[n, c, i, j] = total / window_size


@parallel_jit
def _avg_pool_backward_kernel(grad_out, grad_x, kH, kW, sH, sW, pH, pW):
    """grad_x[n, c, h, w] = sum over the windows containing (h, w) of grad_out / (kH*kW)."""
    N, C, H, W = grad_x.shape
    _, _, H_out, W_out = grad_out.shape
    window_size = kH * kW
    for plane in prange(N * C):  # one (n, c) plane per iteration: writes grad_x[n, c] only
        n = plane // C
        c = plane % C
        grad_x[n, c, :, :] = 0
        for i in range(H_out):  # output rows
            h_start = max(i * sH - pH, 0)
            h_stop = min(i * sH - pH + kH, H)
            for j in range(W_out):  # output columns, each spreading its share over its window
                w_start = max(j * sW - pW, 0)
                w_stop = min(j * sW - pW + kW, W)
                share = grad_out[n, c, i, j] / window_size
                for h in range(h_start, h_stop):  # window rows inside the image
                    for w in range(w_start, w_stop):  # window columns inside the image
                        grad_x[n, c, h, w] += share


@inline_jit
def plane_mean(pixels):
    """The mean of a flat plane ``pixels`` (P,), as a float64: four interleaved float64 partial sums
    (pixels ``p % 4 == 0, 1, 2, 3``) added as ``(s0 + s1) + (s2 + s3)``, then divided by P.

    One running sum is a chain of dependent additions, each waiting ~4 cycles for the one before, while
    four chains overlap. Measured on a 2-core AMD EPYC, (1, 576, 7, 7): 20 -> 6 us. The order is fixed,
    so the result does not depend on the number of threads. Shared with the squeeze-and-excitation
    kernel (:mod:`kernels.squeeze_excitation`), which must give the same bits.
    """
    P = pixels.shape[0]
    s0, s1, s2, s3 = 0.0, 0.0, 0.0, 0.0
    quads = P // 4
    for q in range(quads):  # four pixels, one per partial sum
        p = 4 * q
        s0 += pixels[p]
        s1 += pixels[p + 1]
        s2 += pixels[p + 2]
        s3 += pixels[p + 3]
    for p in range(4 * quads, P):  # the last P % 4 pixels
        s0 += pixels[p]
    return ((s0 + s1) + (s2 + s3)) / P


@parallel_jit
def _global_avg_pool_forward_kernel(x, y):
    """y[n, c] = mean(x[n, c, :]) (:func:`plane_mean`). Shapes (N, C, H*W) -> (N, C)."""
    N, C, P = x.shape
    for plane in prange(N * C):  # one (n, c) plane per iteration: writes y[n, c] only
        n = plane // C
        c = plane % C
        y[n, c] = plane_mean(x[n, c])


@parallel_jit
def _global_avg_pool_backward_kernel(grad_out, grad_x):
    """grad_x[n, c, :] = grad_out[n, c] / (H*W). Shapes (N, C) -> (N, C, H*W)."""
    N, C, P = grad_x.shape
    for plane in prange(N * C):  # one (n, c) plane per iteration: writes grad_x[n, c] only
        n = plane // C
        c = plane % C
        grad_x[n, c, :] = grad_out[n, c] / P


# ----------------------------------------------------------------------------------------------------
# Max unpooling: the partial inverse of max pooling (SegNet's decoder, seed 002's "max un-pooling")
# ----------------------------------------------------------------------------------------------------
def max_unpool2d_forward(x, indices, output_size):
    """Put every value back where max pooling found it; every other output pixel is 0.

    Parameters
    ----------
    x : ndarray (N, C, H_in, W_in), float32 or float64
        Usually a max pooling's output (or a feature map of that shape).
    indices : integer ndarray (N, C, H_in, W_in)
        Flat positions ``h*W_out + w`` inside each output plane: the ``argmax`` of
        :func:`max_pool2d_forward` (PyTorch's ``return_indices=True``).
    output_size : (H_out, W_out), or (N, C, H_out, W_out)
        Usually the pooled input's size; ``nn.MaxUnpool2d`` applies PyTorch's default
        ``(H_in - 1)*stride - 2*padding + kernel_size`` and its range check.

    Returns
    -------
    y : ndarray (N, C, H_out, W_out)::

        y[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j]        (0 everywhere else)

    If two entries share an index (overlapping pooling windows with the same maximum), the later one in
    row-major order is kept, as in PyTorch's CPU kernel. Used by SegNet (arXiv:1511.00561) to up-sample
    with the encoder's pooling positions, and by Zeiler & Fergus (arXiv:1311.2901) to project features back.
    """
    x = check_tensor(x, "x")
    N, C, H_in, W_in = x.shape
    H_out, W_out = unpool_output_size(output_size, (N, C))
    indices = check_flat_indices(indices, "indices", x.shape, "x", (H_out, W_out))
    y = np.empty((N, C, H_out, W_out), dtype=x.dtype)               # (N, C, H_out, W_out)
    _max_unpool_forward_kernel(x.reshape(N, C, H_in * W_in), indices.reshape(N, C, H_in * W_in),
                               y.reshape(N, C, H_out * W_out))
    return y


def max_unpool2d_backward(grad_out, indices):
    """Gradient of :func:`max_unpool2d_forward`: each input reads the gradient at its own index.

    ``grad_x[n, c, i, j] = grad_out[n, c].flat[indices[n, c, i, j]]`` (PyTorch's backward, also when
    indices repeat).

    Parameters
    ----------
    grad_out : ndarray (N, C, H_out, W_out)
    indices : integer ndarray (N, C, H_in, W_in), as given to the forward call

    Returns
    -------
    grad_x : ndarray (N, C, H_in, W_in)
    """
    grad_out, indices = check_unpool_backward_args(grad_out, indices)
    N, C, H_out, W_out = grad_out.shape
    H_in, W_in = indices.shape[2:]
    grad_x = np.empty(indices.shape, dtype=grad_out.dtype)         # (N, C, H_in, W_in)
    _max_unpool_backward_kernel(grad_out.reshape(N, C, H_out * W_out), indices.reshape(N, C, H_in * W_in),
                                grad_x.reshape(N, C, H_in * W_in))
    return grad_x


@parallel_jit
def _max_unpool_forward_kernel(x, indices, y):
    """y[n, c, indices[n, c, p]] = x[n, c, p], zeros elsewhere. Shapes (N, C, P_in), (N, C, P_in), (N, C, P_out)."""
    N, C, P_in = x.shape
    for plane in prange(N * C):  # one (n, c) plane per iteration: every index of it points into y[n, c]
        n = plane // C
        c = plane % C
        y[n, c, :] = 0
        for p in range(P_in):  # inputs in row-major order: a repeated index keeps the last value
            y[n, c, indices[n, c, p]] = x[n, c, p]


@parallel_jit
def _max_unpool_backward_kernel(grad_out, indices, grad_x):
    """grad_x[n, c, p] = grad_out[n, c, indices[n, c, p]]. Shapes (N, C, P_out), (N, C, P_in), (N, C, P_in)."""
    N, C, P_in = grad_x.shape
    for plane in prange(N * C):  # one (n, c) plane per iteration: writes grad_x[n, c] only
        n = plane // C
        c = plane % C
        for p in range(P_in):  # a gather: each input reads the gradient where it was placed
            grad_x[n, c, p] = grad_out[n, c, indices[n, c, p]]
