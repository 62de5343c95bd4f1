"""Transposed convolution ("deconvolution"): learned up-sampling, and the adjoint of conv2d.

A convolution maps a large image to a small one with a matrix ``A`` (one row per output pixel). A
*transposed* convolution applies ``A^T``: every input pixel *scatters* a copy of the kernel, scaled by its
value, into the output, with the copies ``stride`` pixels apart and overlapping where they meet::

    y[n, g*Cog + o, ih*s - p + kh*d, iw*s - p + kw*d] += x[n, c, ih, iw] * weight[c, o, kh, kw]

for every input channel ``c`` of group ``g``. Because ``A^T`` is exactly what conv2d's backward pass
applies to its output gradient, ``conv_transpose2d_forward`` equals ``conv2d_backward_input`` with the
same weight, and the transposed convolution's own backward-input is an ordinary convolution.
It is how FCN (arXiv:1411.4038) and DCGAN (arXiv:1511.06434) up-sample with learned filters; the
shape arithmetic is worked through in Dumoulin & Visin, "A guide to convolution arithmetic"
(arXiv:1603.07285).

How the kernels compute it (the GEMM view, as Caffe and PyTorch's CPU fallback do)
---------------------------------------------------------------------------------
Gather, for one image, every product ``x[c, ih, iw] * weight[c, o, kh, kw]`` summed over ``c`` into a
"columns" matrix with one row per ``(o, kh, kw)`` and one column per input pixel::

    cols = weight.reshape(C_in, Cog*kH*kW).T @ x[n].reshape(C_in, H*W)     # (Cog*kH*kW, H*W)

``col2im`` then adds each entry to the output pixel it lands on. Backward runs the same two steps the
other way round: ``im2col`` (the adjoint of ``col2im``) reads ``grad_out`` into columns, and a matrix
product with the weight (backward-input) or with ``x`` (backward-weight) finishes the job. With groups
the matrices are stacked per group, ``(groups, ...)``, and ``np.matmul`` multiplies each pair.

Why not a direct loop like ``depthwise.py``? Here the work is ``C_in*C_out/groups*kH*kW`` multiply-adds per
input pixel: a dense matrix product. Without ``fastmath`` LLVM may not fuse a multiply and an add, and the
best plain numba loop we wrote (vectorised, one output plane per thread in a phase-split buffer, four
input channels per pass) ran at ~11.5 GMAC/s per core: ~11 ms for the benchmark layer below, about 3x
PyTorch. The BLAS matrix product uses fused multiply-adds and brings the whole layer to PyTorch's speed.
The GEMM is done one image at a time, so the columns buffer stays ``C_out*kH*kW*H*W`` elements instead of
growing with the batch.

``col2im``/``im2col`` (shared with ``conv2d.py`` in :mod:`kernels._im2col`) are serial loops, for the
reason given there; they take ~2 ms of the ~5 ms below.

Measured (2 cores, float32, x (8, 64, 28, 28) -> 32 channels, 4x4 kernel, stride 2, padding 1; medians of
15 runs, PyTorch 2.13 with 2 threads): forward 5.0 ms vs PyTorch's 5.9-7.0 ms; backward-input 4.9 ms vs
2.0 ms; backward-weight 5.4 ms vs 2.1 ms.
"""
import numpy as np

from ._im2col import col2im_kernel, im2col_kernel
from ._jit import serial_blas
from ._validate import check_bias, check_grad_out, check_same_dtype, check_shape, check_tensor, conv_transpose_geometry


@serial_blas
def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution (learned up-sampling), PyTorch's ``conv_transpose2d``.

    Parameters
    ----------
    x : ndarray (N, C_in, H, W), float32 or float64
    weight : ndarray (C_in, C_out // groups, kH, kW)
        PyTorch's layout for transposed convolutions (input channels first, the transpose of conv2d's).
    bias : ndarray (C_out,) or None
    stride, padding, output_padding, dilation : int or (h, w)
        ``output_padding`` (< stride or < dilation) adds rows/columns at the bottom/right so that a
        transposed convolution can produce every size that the matching conv2d maps to ``H``.
    groups : int
        Divides ``C_in``; group ``g`` maps input channels ``g*C_in/groups ...`` to output channels
        ``g*C_out/groups ...``.

    Returns
    -------
    y : ndarray (N, C_out, H_out, W_out), ``C_out = weight.shape[1] * groups``,
        ``H_out = (H - 1)*stride - 2*padding + dilation*(kH - 1) + output_padding + 1`` (same for W).

    Notes
    -----
    ``y[n, g*Cog+o, ih*s - p + kh*d, iw*s - p + kw*d] += x[n, c, ih, iw] * weight[c, o, kh, kw]``: the
    adjoint (gradient) of ``conv2d`` with the same weight, so this equals
    ``conv2d_backward_input(x, weight, input_shape=y.shape, stride, padding, dilation, groups)`` whenever
    ``output_padding < stride``. A stride-``s`` transposed convolution up-samples by ``s`` with a learned
    kernel, as in FCN (arXiv:1411.4038) and the DCGAN generator (arXiv:1511.06434; 4x4, stride 2,
    padding 1 doubles H and W). Cost: ``C_in * (C_out/groups) * kH * kW * H * W`` MACs.
    """
    x = check_tensor(x, "x")
    weight = check_tensor(weight, "weight")
    check_same_dtype(x=x, weight=weight)
    geometry = conv_transpose_geometry(x.shape, weight.shape, stride, padding, output_padding, groups, dilation)
    N, C_in, H, W = x.shape
    _, C_out_per_group, kH, kW = weight.shape
    C_out = geometry.output_shape[1]
    bias = check_bias(bias, C_out, x.dtype)
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation

    weight_t = weight.reshape(groups, C_in // groups, -1).transpose(0, 2, 1)  # (G, Cog*kH*kW, Cig)
    x_groups = x.reshape(N, groups, C_in // groups, H * W)                    # (N, G, Cig, H*W)
    cols = np.empty((groups, C_out_per_group * kH * kW, H * W), dtype=x.dtype)  # one image's columns
    y = np.empty(geometry.output_shape, dtype=x.dtype)                        # (N, C_out, H_out, W_out)
    for n in range(N):
        np.matmul(weight_t, x_groups[n], out=cols)                            # (G, Cog*kH*kW, H*W)
        col2im_kernel(cols.reshape(C_out * kH * kW, H, W), y[n], kH, kW, sh, sw, ph, pw, dh, dw)
    if bias is not None:
        y += bias[None, :, None, None]
    return y


@serial_blas
def conv_transpose2d_backward_input(grad_out, weight, input_shape, stride=1, padding=0, output_padding=0,
                                    groups=1, dilation=1):
    """Gradient of :func:`conv_transpose2d_forward` with respect to ``x``.

    Parameters
    ----------
    grad_out : ndarray (N, C_out, H_out, W_out)
    weight : ndarray (C_in, C_out // groups, kH, kW)
    input_shape : tuple (N, C_in, H, W)
        Shape of the forward input (``output_padding`` is needed to recover it from ``H_out``).

    Returns
    -------
    grad_x : ndarray (N, C_in, H, W)

    Notes
    -----
    ``grad_x[n, c, ih, iw] = sum_{o, kh, kw} grad_out[n, g*Cog+o, ih*s - p + kh*d, iw*s - p + kw*d] *
    weight[c, o, kh, kw]``: an ordinary strided, dilated convolution of ``grad_out`` (taps outside the
    image read zero), i.e. ``conv2d_forward(grad_out, weight, stride, padding, dilation, groups)``.
    """
    weight = check_tensor(weight, "weight")
    input_shape = check_shape(input_shape, "input_shape")
    geometry = conv_transpose_geometry(input_shape, weight.shape, stride, padding, output_padding, groups,
                                       dilation, input_name="input_shape")
    grad_out = check_grad_out(grad_out, geometry.output_shape, weight.dtype)
    N, C_in, H, W = input_shape
    _, C_out_per_group, kH, kW = weight.shape
    C_out = geometry.output_shape[1]
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation

    weight_groups = weight.reshape(groups, C_in // groups, -1)                # (G, Cig, Cog*kH*kW)
    cols = np.empty((groups, C_out_per_group * kH * kW, H * W), dtype=weight.dtype)
    grad_x = np.empty(input_shape, dtype=weight.dtype)                        # (N, C_in, H, W)
    grad_x_groups = grad_x.reshape(N, groups, C_in // groups, H * W)          # (N, G, Cig, H*W), a view
    for n in range(N):
        im2col_kernel(grad_out[n], cols.reshape(C_out * kH * kW, H, W), kH, kW, sh, sw, ph, pw, dh, dw)
        np.matmul(weight_groups, cols, out=grad_x_groups[n])                  # (G, Cig, H*W)
    return grad_x


@serial_blas
def conv_transpose2d_backward_weight(grad_out, x, weight_shape, stride=1, padding=0, output_padding=0,
                                     groups=1, dilation=1):
    """Gradient of :func:`conv_transpose2d_forward` with respect to ``weight``.

    Parameters
    ----------
    grad_out : ndarray (N, C_out, H_out, W_out)
    x : ndarray (N, C_in, H, W), the forward input
    weight_shape : tuple (C_in, C_out // groups, kH, kW)

    Returns
    -------
    grad_weight : ndarray ``weight_shape``

    Notes
    -----
    ``grad_weight[c, o, kh, kw] = sum_{n, ih, iw} x[n, c, ih, iw] *
    grad_out[n, g*Cog+o, ih*s - p + kh*d, iw*s - p + kw*d]``. Per image this is the product
    ``x[n] @ im2col(grad_out[n]).T``; the images are added one after the other in a fixed order, so
    the result is deterministic (bit-identical run to run). The bias gradient is the same as conv2d's:
    ``conv2d_backward_bias(grad_out)``.
    """
    x = check_tensor(x, "x")
    weight_shape = check_shape(weight_shape, "weight_shape")
    geometry = conv_transpose_geometry(x.shape, weight_shape, stride, padding, output_padding, groups, dilation)
    grad_out = check_grad_out(grad_out, geometry.output_shape, x.dtype)
    N, C_in, H, W = x.shape
    _, C_out_per_group, kH, kW = weight_shape
    C_out = geometry.output_shape[1]
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation

    x_groups = x.reshape(N, groups, C_in // groups, H * W)                    # (N, G, Cig, H*W)
    cols = np.empty((groups, C_out_per_group * kH * kW, H * W), dtype=x.dtype)
    grad_weight = np.zeros((groups, C_in // groups, C_out_per_group * kH * kW), dtype=x.dtype)
    one_image = np.empty_like(grad_weight)                                    # (G, Cig, Cog*kH*kW)
    for n in range(N):
        im2col_kernel(grad_out[n], cols.reshape(C_out * kH * kW, H, W), kH, kW, sh, sw, ph, pw, dh, dw)
        np.matmul(x_groups[n], cols.transpose(0, 2, 1), out=one_image)        # (G, Cig, Cog*kH*kW)
        grad_weight += one_image
    return grad_weight.reshape(weight_shape)
