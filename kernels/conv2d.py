"""General 2-D convolution: stride, padding, dilation and groups, forward and backward.

One function family covers standard, strided, *dilated* (holes between the taps: a larger receptive
field at the same cost, arXiv:1511.07122) and *grouped* convolution (channels split into ``groups``
independent convolutions: AlexNet, ResNeXt, ShuffleNet). Three special cases have their own kernels and
``conv2d_forward`` hands them over when the arguments fit:

* ``groups == C_in`` with one input channel per group -> :mod:`kernels.depthwise`;
* a 1x1 kernel at stride 1 without padding          -> :mod:`kernels.pointwise`;
* a network's stem, a 3x3 kernel over at most four input channels at stride 1 or 2 with at least 32 x 32
  outputs (the forward only)                        -> :mod:`kernels.stem`.

Everything else runs through **im2col + GEMM**:

1. *im2col* (a numba kernel, :mod:`kernels._im2col`) unfolds the image into a matrix whose column ``p`` holds every input
   value that output pixel ``p`` sees: ``cols`` is ``(C_in*kH*kW, H_out*W_out)``.
2. one matrix product per group does all the multiply-adds: ``y[n] = W @ cols``, with the weight
   viewed as ``(C_out, C_in/groups*kH*kW)``. That product is NumPy's BLAS, which runs near the
   machine's peak; direct loops reach a fraction of it for many-channel convolutions.
3. backward: ``grad_cols = W^T @ grad_y[n]`` folded back by *col2im* (the adjoint of im2col: each
   column entry is added back to the pixel it was copied from) gives ``grad_x``; the weight gradient is
   ``sum_n grad_y[n] @ cols_n^T``.

Images go through in chunks whose ``cols`` fill at most ``COLS_BYTES`` (16 MiB): the products of a
chunk, one per image and group, run on numba's threads (:func:`kernels._gemm.batched_matmul`). Extra
memory is bounded by that buffer, whatever the batch size.

Cost: ``kH*kW * C_in/groups * C_out * H_out*W_out`` MACs per image.
"""
import numpy as np

from ._gemm import batched_matmul
from ._im2col import PARALLEL_MIN_VALUES, col2im_kernel, im2col_kernel, im2col_parallel_kernel
from ._jit import serial_blas
from ._validate import (check_bias, check_grad_out, check_same_dtype, check_shape, check_tensor,
                        conv_geometry)
from .batchnorm import finish_channels
from . import depthwise, pointwise, stem


# ----------------------------------------------------------------------------------------------------
# Which kernel does the work
# ----------------------------------------------------------------------------------------------------
def _is_depthwise(geometry):
    """``groups == C_in`` and one input channel per group (channel multiplier ``C_out/C_in >= 1``)."""
    return geometry.groups == geometry.input_shape[1] and geometry.weight_shape[1] == 1


def _is_pointwise(geometry):
    """A 1x1 kernel at stride 1 without padding (dilation does not matter for a single tap)."""
    return (geometry.kernel_size == (1, 1) and geometry.stride == (1, 1) and geometry.padding == (0, 0))


def _geometry(input_shape, weight_shape, stride, padding, dilation, groups, input_name="x"):
    return conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups, input_name)


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------
@serial_blas
def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as in every deep-learning framework).

    Parameters
    ----------
    x : ndarray (N, C_in, H, W), float32 or float64
    weight : ndarray (C_out, C_in/groups, kH, kW), same dtype
    bias : ndarray (C_out,) or None
    stride, padding, dilation : int or (h, w) pair
    groups : int dividing both C_in and C_out

    Returns
    -------
    y : ndarray (N, C_out, H_out, W_out), ``H_out = (H + 2*pad - dil*(kH-1) - 1) // stride + 1``::

        y[n, o, i, j] = bias[o] + sum_{c, a, b} weight[o, c, a, b] * x_pad[n, g*C_in/groups + c, i*s + a*d, j*s + b*d]

    with ``g = o // (C_out/groups)`` the group of output channel ``o``.

    Cost: ``kH*kW*C_in/groups*C_out*H_out*W_out`` MACs per image (a depthwise-separable pair costs
    ``1/C_out + 1/(kH*kW)`` of a standard convolution: MobileNet V1, arXiv:1704.04861).
    """
    x = check_tensor(x, "x")
    weight = check_tensor(weight, "weight")
    check_same_dtype(x=x, weight=weight)
    geometry = _geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    bias = check_bias(bias, weight.shape[0], x.dtype)
    return _forward(x, weight, bias, geometry)


def _forward(x, weight, bias, geometry, epilogue=None):
    """:func:`conv2d_forward` on checked arguments (C-contiguous, same dtype) and their ``geometry``.

    ``epilogue = (scale, shift, low, high)`` (or None) finishes the output per channel,
    ``clip(y * scale[c] + shift[c], low, high)`` (:func:`kernels.batchnorm.finish_channels`): the batch
    norm and ReLU/ReLU6 that ``tinycnn.nn.fusion`` merges into the convolution. The pointwise path
    applies it inside its matrix-product blocks, while they are in cache.
    """
    if _is_pointwise(geometry):
        return pointwise._forward(x, weight, bias, geometry, epilogue)
    if _is_depthwise(geometry):
        return depthwise._forward(x, weight, bias, geometry, epilogue)
    if stem.use_stem(geometry):
        return stem.prepare_forward(weight, bias, geometry, epilogue)(x)
    return _im2col_forward(x, weight, bias, geometry, epilogue)


def _im2col_forward(x, weight, bias, geometry, epilogue=None):
    """The general convolution: im2col for a chunk of images, then one matrix product per image and group
    (:func:`kernels._gemm.batched_matmul`, on numba's threads), finished by ``epilogue``: inside the
    products' blocks when there is no bias (a stem convolution before its batch norm: (1, 16, 112, 112)
    is then not read and written once more), else in a pass after the bias."""
    G = geometry.groups
    y = np.empty(geometry.output_shape, dtype=x.dtype)
    y_matrices = y.reshape(y.shape[0], y.shape[1], -1)             # (N, C_out, H_out*W_out) view
    w_matrix = _weight_matrix(weight, G)                           # (G, C_out/G, C_in/G*kH*kW)
    in_products = epilogue if bias is None else None
    for start, stop, cols in _image_chunks(x, geometry):           # cols: (k, C_in*kH*kW, H_out*W_out)
        batched_matmul(w_matrix, _per_group(cols, G), _per_group(y_matrices[start:stop], G), in_products)
    if bias is None:
        return y
    y += bias[None, :, None, None]
    return finish_channels(y, epilogue)


def _per_group(matrices, groups):
    """``(k, rows, P)`` -> ``(k*groups, rows/groups, P)``: one matrix per image and group (a view)."""
    k, rows, P = matrices.shape
    return matrices.reshape(k * groups, rows // groups, P)


def _image_chunks(x, geometry):
    """Yield ``(start, stop, cols)``: im2col of images ``start:stop`` as ``(k, C_in*kH*kW, H_out*W_out)``,
    chunks of at most :data:`COLS_BYTES` (one buffer, refilled for each chunk)."""
    N = x.shape[0]
    one_image = _empty_cols(geometry, x.dtype)
    per_chunk = max(1, min(N, COLS_BYTES // max(one_image.nbytes, 1)))
    buffer = np.empty((per_chunk, *one_image.shape), dtype=x.dtype)
    for start in range(0, N, per_chunk):
        stop = min(N, start + per_chunk)
        for n in range(start, stop):
            _im2col(x[n], buffer[n - start], geometry)
        yield start, stop, buffer[:stop - start]


#: most bytes of im2col columns held at once (images are taken in chunks below it)
COLS_BYTES = 16 * 1024 * 1024


@serial_blas
def conv2d_backward_input(grad_out, weight, input_shape, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of :func:`conv2d_forward` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray (N, C_out, H_out, W_out), dL/dy
    weight : ndarray (C_out, C_in/groups, kH, kW)
    input_shape : tuple (N, C_in, H, W) of the forward input
    stride, padding, dilation, groups : as in the forward pass

    Returns
    -------
    grad_x : ndarray (N, C_in, H, W)::

        grad_x[n, c, h, w] = sum over (o, i, j, a, b) with h = i*s + a*d - p, w = j*s + b*d - p of
                             weight[o, c mod C_in/groups, a, b] * grad_out[n, o, i, j]

    This is a transposed convolution of ``grad_out`` (see :mod:`kernels.transposed`).
    """
    weight = check_tensor(weight, "weight")
    input_shape = check_shape(input_shape, "input_shape")
    geometry = _geometry(input_shape, weight.shape, stride, padding, dilation, groups, "input_shape")
    grad_out = check_grad_out(grad_out, geometry.output_shape, weight.dtype)
    return _backward_input(grad_out, weight, geometry)


def _backward_input(grad_out, weight, geometry):
    if _is_depthwise(geometry):
        return depthwise._backward_input(grad_out, weight, geometry)
    if _is_pointwise(geometry):
        return pointwise._backward_input(grad_out, weight, geometry)
    input_shape = geometry.input_shape
    N = input_shape[0]
    G = geometry.groups
    grad_x = np.empty(input_shape, dtype=weight.dtype)
    one_image = _empty_cols(geometry, weight.dtype)                 # (C_in*kH*kW, H_out*W_out)
    per_chunk = max(1, min(N, COLS_BYTES // max(one_image.nbytes, 1)))
    grad_cols = np.empty((per_chunk, *one_image.shape), dtype=weight.dtype)
    w_matrix_t = _weight_matrix(weight, G).transpose(0, 2, 1)       # (G, C_in/G*kH*kW, C_out/G)
    gy = np.ascontiguousarray(grad_out).reshape(N, grad_out.shape[1], -1)   # (N, C_out, H_out*W_out)
    for start in range(0, N, per_chunk):
        stop = min(N, start + per_chunk)
        chunk = grad_cols[:stop - start]
        batched_matmul(w_matrix_t, _per_group(gy[start:stop], G), _per_group(chunk, G))   # W^T @ gy per image
        for n in range(start, stop):
            _col2im(chunk[n - start], grad_x[n], geometry)
    return grad_x


@serial_blas
def conv2d_backward_weight(grad_out, x, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of :func:`conv2d_forward` with respect to its weight.

    Parameters
    ----------
    grad_out : ndarray (N, C_out, H_out, W_out), dL/dy
    x : ndarray (N, C_in, H, W), the forward input
    weight_shape : tuple (C_out, C_in/groups, kH, kW)

    Returns
    -------
    grad_weight : ndarray (C_out, C_in/groups, kH, kW)::

        grad_weight[o, c, a, b] = sum_{n, i, j} grad_out[n, o, i, j] * x_pad[n, g*C_in/groups + c, i*s + a*d, j*s + b*d]

    Within a chunk of images (see the module docstring) the images are added one after the other, then
    the chunks' sums in order; the chunks depend on the shapes only, so the result is reproducible bit
    for bit, on any number of threads.
    """
    x = check_tensor(x, "x")
    weight_shape = check_shape(weight_shape, "weight_shape")
    geometry = _geometry(x.shape, weight_shape, stride, padding, dilation, groups)
    grad_out = check_grad_out(grad_out, geometry.output_shape, x.dtype)
    return _backward_weight(grad_out, x, geometry)


def _backward_weight(grad_out, x, geometry):
    if _is_depthwise(geometry):
        return depthwise._backward_weight(grad_out, x, geometry)
    if _is_pointwise(geometry):
        return pointwise._backward_weight(grad_out, x, geometry)
    N = x.shape[0]
    G = geometry.groups
    grad_weight = np.empty(geometry.weight_shape, dtype=x.dtype)
    total = _weight_matrix(grad_weight, G)                          # (G, C_out/G, C_in/G*kH*kW) view
    chunk_sum = np.empty_like(total)
    gy = np.ascontiguousarray(grad_out).reshape(N, grad_out.shape[1], -1)   # (N, C_out, H_out*W_out)
    for start, stop, cols in _image_chunks(x, geometry):
        # sum over the chunk's images of gy[n] @ cols[n]^T, image after image, per group
        batched_matmul(_per_group(gy[start:stop], G), _per_group(cols, G).transpose(0, 2, 1),
                       total if start == 0 else chunk_sum)
        if start > 0:
            total += chunk_sum
    return grad_weight


@serial_blas
def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
    """Both gradients of :func:`conv2d_forward` at once: ``(grad_x, grad_weight)``.

    Parameters
    ----------
    grad_out : ndarray (N, C_out, H_out, W_out), dL/dy
    x : ndarray (N, C_in, H, W), the forward input
    weight : ndarray (C_out, C_in/groups, kH, kW)
    stride, padding, dilation, groups : as in the forward pass

    Returns
    -------
    grad_x, grad_weight : the results of :func:`conv2d_backward_input` and
        :func:`conv2d_backward_weight`, bit for bit.

    What a layer's ``backward`` needs: the arguments are checked once, and small depthwise planes
    compute both gradients in one pass over ``grad_out`` (:mod:`kernels.depthwise`).
    """
    x = check_tensor(x, "x")
    weight = check_tensor(weight, "weight")
    check_same_dtype(x=x, weight=weight)
    geometry = _geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    grad_out = check_grad_out(grad_out, geometry.output_shape, x.dtype)
    return _backward(grad_out, x, weight, geometry)


def _backward(grad_out, x, weight, geometry):
    """:func:`conv2d_backward` on checked arguments (C-contiguous, same dtype) and their ``geometry``."""
    if _is_depthwise(geometry):
        return depthwise._backward(grad_out, x, weight, geometry)
    return _backward_input(grad_out, weight, geometry), _backward_weight(grad_out, x, geometry)


def conv2d_backward_bias(grad_out):
    """Gradient of any convolution's bias: ``grad_bias[o] = sum_{n, i, j} grad_out[n, o, i, j]``.

    Parameters
    ----------
    grad_out : ndarray (N, C_out, H_out, W_out)

    Returns
    -------
    grad_bias : ndarray (C_out,)

    The same for standard, grouped, depthwise, pointwise and transposed convolutions: the bias is
    added to every pixel of its channel, so its gradient sums that channel's gradient.
    """
    grad_out = check_tensor(grad_out, "grad_out")
    return grad_out.sum(axis=(0, 2, 3))


# ----------------------------------------------------------------------------------------------------
# im2col / col2im
# ----------------------------------------------------------------------------------------------------
def _empty_cols(geometry, dtype):
    C_in = geometry.input_shape[1]
    kH, kW = geometry.kernel_size
    H_out, W_out = geometry.output_shape[2:]
    return np.empty((C_in * kH * kW, H_out * W_out), dtype=dtype)


def _weight_matrix(weight, groups):
    """View ``(C_out, C_in/G, kH, kW)`` as ``(G, C_out/G, C_in/G*kH*kW)``, rows matching im2col's."""
    C_out = weight.shape[0]
    return weight.reshape(groups, C_out // groups, -1)


def _im2col(image, cols, geometry):
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
    kH, kW = geometry.kernel_size
    H_out, W_out = geometry.output_shape[2:]
    unfold = im2col_parallel_kernel if cols.size >= PARALLEL_MIN_VALUES else im2col_kernel
    unfold(image, cols.reshape(cols.shape[0], H_out, W_out), kH, kW, sh, sw, ph, pw, dh, dw)


def _col2im(cols, image, geometry):
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
    kH, kW = geometry.kernel_size
    H_out, W_out = geometry.output_shape[2:]
    col2im_kernel(cols.reshape(cols.shape[0], H_out, W_out), image, kH, kW, sh, sw, ph, pw, dh, dw)
