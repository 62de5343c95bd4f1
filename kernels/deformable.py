"""Deformable convolution v1 and v2 (modulated), forward and backward.

A standard convolution reads its ``kH x kW`` taps on a fixed grid. A *deformable* convolution
(Dai et al., "Deformable Convolutional Networks", arXiv:1703.06211) adds a learned, real-valued shift
``(dy, dx)`` to every tap at every output pixel, so the kernel can bend to the shape of an object;
DCN v2 (Zhu et al., "Deformable ConvNets v2", arXiv:1811.11168) also multiplies each sample by a
learned *modulation* ``mask`` in ``[0, 1]`` (usually a sigmoid). The shifts and the mask are inputs
here; in a network a small ordinary convolution predicts them from the same feature map.

Tap ``k = (a, b)`` of output pixel ``(i, j)`` reads channel ``c`` at the real position::

    y_s = i*sH - pH + a*dH + offset[n, 2*(g*K + k),     i, j]        K = kH*kW taps
    x_s = j*sW - pW + b*dW + offset[n, 2*(g*K + k) + 1, i, j]        g = offset group of channel c

by **bilinear interpolation** of the image with zeros outside it (a sample partly outside mixes the
inside neighbours with zeros). Layout and rules are torchvision's ``torchvision.ops.deform_conv2d``:

* offset ``(N, 2*offset_groups*K, H_out, W_out)`` holds ``(dy, dx)`` pairs, tap by tap (row-major);
  the ``C_in`` channels are split into ``offset_groups`` consecutive groups, each with its own shifts;
* mask ``(N, offset_groups*K, H_out, W_out)`` (v2) or ``None`` (v1: all ones);
* weight ``(C_out, C_in/groups, kH, kW)`` with ``groups = C_in // weight.shape[1]``.

How it is computed: **deformable im2col + GEMM**, exactly like :mod:`kernels.conv2d` but with
sampled columns. For one image, the numba kernel fills ``cols[(c*K + k), i, j] = mask * sample``
(``(C_in*K, H_out*W_out)``); one matrix product per weight group gives the output. Backward:
``grad_cols = W^T @ grad_y[n]`` holds ``dL/d(sample*mask)`` for every tap; from it

* ``grad_x``: each sample scatters ``mask * grad_cols`` to its four neighbours with the bilinear weights;
* ``grad_offset``: ``mask * grad_cols * d(sample)/dy`` (and ``/dx``) summed over the channels of the
  offset group: the slope of the bilinear surface, ``(1-lx)(v10-v00) + lx(v11-v01)`` for ``y``;
* ``grad_mask``: ``grad_cols * sample`` summed over the group's channels;
* ``grad_weight = sum_n grad_y[n] @ cols_n^T``.

The bilinear surface has kinks where a sample crosses a pixel row or column; there the offset
gradient is the one-sided slope towards larger coordinates (torchvision's choice as well).

Cost: the convolution's ``K*C_in/groups*C_out*H_out*W_out`` MACs per image, plus 4 reads and about
10 flops per sample (``C_in*K*H_out*W_out`` samples).
"""
import numpy as np

from ._jit import inline_jit, parallel_jit, prange, serial_blas
from ._validate import check_bias, check_deform_conv_args, check_grad_out
from .conv2d import _weight_matrix


@serial_blas
def deform_conv2d_forward(x, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """Deformable 2-D convolution (v1; v2 with ``mask``), torchvision's ``deform_conv2d`` semantics.

    Parameters
    ----------
    x : ndarray (N, C_in, H, W), float32 or float64
    offset : ndarray (N, 2*offset_groups*kH*kW, H_out, W_out), same dtype
        ``(dy, dx)`` shift of each kernel tap at each output pixel, in pixels; channel ``2*(g*K + k)``
        is ``dy`` of tap ``k = a*kW + b`` for offset group ``g``, the next channel its ``dx``.
    weight : ndarray (C_out, C_in/groups, kH, kW); ``groups = C_in // weight.shape[1]``
    bias : ndarray (C_out,) or None
    stride, padding, dilation : int or (h, w) pair
    mask : ndarray (N, offset_groups*kH*kW, H_out, W_out) or None
        v2's modulation of each sample (``None``: v1, every mask value 1).

    Returns
    -------
    y : ndarray (N, C_out, H_out, W_out), ``H_out = (H + 2*pH - dH*(kH-1) - 1) // sH + 1``::

        y[n, o, i, j] = bias[o] + sum_{c, a, b} weight[o, c, a, b] * mask[n, g*K + k, i, j]
                        * bilinear(x[n, c'], i*sH - pH + a*dH + dy, j*sW - pW + b*dW + dx)

    with ``c' = (o // (C_out/groups)) * C_in/groups + c``, ``k = a*kW + b``, ``g`` the offset group of
    ``c'`` and ``bilinear`` reading zeros outside the image. Zero offsets and a mask of ones give
    :func:`kernels.conv2d_forward` (arXiv:1703.06211, v2 arXiv:1811.11168).
    """
    geometry, offset_groups, x, offset, weight, mask = check_deform_conv_args(
        x, offset, weight, mask, stride, padding, dilation)
    bias = check_bias(bias, weight.shape[0], x.dtype)
    N = x.shape[0]
    C_out = weight.shape[0]
    _, _, H_out, W_out = geometry.output_shape
    G = geometry.groups
    offsets, masks = _per_tap_views(offset, mask, offset_groups, geometry)

    y = np.empty(geometry.output_shape, dtype=x.dtype)             # (N, C_out, H_out, W_out)
    cols = _empty_cols(geometry, x.dtype)                          # (C_in*K, H_out, W_out)
    w_matrix = _weight_matrix(weight, G)                           # (G, C_out/G, C_in/G*K)
    y_matrix = y.reshape(N, G, C_out // G, H_out * W_out)          # (N, G, C_out/G, H_out*W_out)
    for n in range(N):                                             # one image's sampled columns at a time
        _sample_columns(x[n], offsets[n], masks[n], cols, geometry)
        np.matmul(w_matrix, cols.reshape(G, -1, H_out * W_out), out=y_matrix[n])
    if bias is not None:
        y += bias[None, :, None, None]
    return y


@serial_blas
def deform_conv2d_backward(grad_out, x, offset, weight, stride=1, padding=0, dilation=1, mask=None):
    """Gradients of :func:`deform_conv2d_forward` with respect to x, offset, weight and mask.

    Parameters
    ----------
    grad_out : ndarray (N, C_out, H_out, W_out), dL/dy
    x, offset, weight, stride, padding, dilation, mask : as in the forward call

    Returns
    -------
    grad_x : ndarray (N, C_in, H, W)
    grad_offset : ndarray (N, 2*offset_groups*kH*kW, H_out, W_out)
    grad_weight : ndarray (C_out, C_in/groups, kH, kW)
    grad_mask : ndarray (N, offset_groups*kH*kW, H_out, W_out), or None when ``mask`` is None

    The bias gradient is :func:`kernels.conv2d_backward_bias` (``grad_out`` summed over N, H, W).
    With ``u = grad_cols[c*K + k, i, j]`` (``W^T grad_y``, see the module docstring), ``m`` the mask and
    ``v`` the bilinear sample at ``(y_s, x_s)``::

        grad_mask[n, g*K + k, i, j]       = sum_{c in g} u * v
        grad_offset[n, 2*(g*K + k), i, j] = sum_{c in g} u * m * dv/dy_s      (and dv/dx_s for 2*(...)+1)
        grad_x[n, c, h, w]               += u * m * (1 - |y_s - h|) * (1 - |x_s - w|)  for the 4 neighbours
    """
    geometry, offset_groups, x, offset, weight, mask = check_deform_conv_args(
        x, offset, weight, mask, stride, padding, dilation)
    grad_out = check_grad_out(grad_out, geometry.output_shape, x.dtype)
    N = x.shape[0]
    C_out = weight.shape[0]
    _, _, H_out, W_out = geometry.output_shape
    G = geometry.groups
    offsets, masks = _per_tap_views(offset, mask, offset_groups, geometry)

    grad_x = np.empty(x.shape, dtype=x.dtype)                      # (N, C_in, H, W)
    grad_offset = np.empty(offset.shape, dtype=x.dtype)            # (N, 2*G_off*K, H_out, W_out)
    grad_offsets, grad_masks = _per_tap_views(grad_offset, np.empty(masks.shape, dtype=x.dtype),
                                              offset_groups, geometry)
    grad_weight = np.zeros(weight.shape, dtype=x.dtype)
    grad_w_matrix = _weight_matrix(grad_weight, G)                 # (G, C_out/G, C_in/G*K) view
    one_image = np.empty_like(grad_w_matrix)
    w_matrix_t = _weight_matrix(weight, G).transpose(0, 2, 1)      # (G, C_in/G*K, C_out/G)
    gy_matrix = grad_out.reshape(N, G, C_out // G, H_out * W_out)  # (N, G, C_out/G, H_out*W_out)
    cols = _empty_cols(geometry, x.dtype)                          # (C_in*K, H_out, W_out)
    grad_cols = _empty_cols(geometry, x.dtype)                     # (C_in*K, H_out, W_out)
    for n in range(N):                                             # images in order: reproducible sums
        _sample_columns(x[n], offsets[n], masks[n], cols, geometry)
        np.matmul(gy_matrix[n], cols.reshape(G, -1, H_out * W_out).transpose(0, 2, 1), out=one_image)
        grad_w_matrix += one_image
        np.matmul(w_matrix_t, gy_matrix[n], out=grad_cols.reshape(G, -1, H_out * W_out))
        _scatter_columns(grad_cols, offsets[n], masks[n], grad_x[n], geometry)
        _offset_and_mask_gradients(x[n], offsets[n], masks[n], grad_cols, grad_offsets[n], grad_masks[n],
                                   geometry)
    grad_mask = None if mask is None else grad_masks.reshape(mask.shape)
    return grad_x, grad_offset, grad_weight, grad_mask


# ----------------------------------------------------------------------------------------------------
# Python side: views and the calls of the compiled bodies
# ----------------------------------------------------------------------------------------------------
def _per_tap_views(offset, mask, offset_groups, geometry):
    """offset as (N, G_off, K, 2, H_out, W_out) and mask as (N, G_off, K, H_out, W_out) (ones if None)."""
    N, _, H_out, W_out = geometry.output_shape
    kH, kW = geometry.kernel_size
    offsets = offset.reshape(N, offset_groups, kH * kW, 2, H_out, W_out)
    if mask is None:
        mask = np.ones((N, offset_groups, kH * kW, H_out, W_out), dtype=offset.dtype)
    return offsets, mask.reshape(N, offset_groups, kH * kW, H_out, W_out)


def _empty_cols(geometry, dtype):
    C_in = geometry.input_shape[1]
    kH, kW = geometry.kernel_size
    _, _, H_out, W_out = geometry.output_shape
    return np.empty((C_in * kH * kW, H_out, W_out), dtype=dtype)


def _grid(geometry):
    """The kernel bodies' geometry arguments: kW, sH, sW, pH, pW, dH, dW."""
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
    return geometry.kernel_size[1], sh, sw, ph, pw, dh, dw


def _sample_columns(image, offsets, masks, cols, geometry):
    _deformable_im2col_kernel(image, offsets, masks, cols, *_grid(geometry))


def _scatter_columns(grad_cols, offsets, masks, grad_image, geometry):
    _deformable_col2im_kernel(grad_cols, offsets, masks, grad_image, *_grid(geometry))


def _offset_and_mask_gradients(image, offsets, masks, grad_cols, grad_offsets, grad_masks, geometry):
    _offset_mask_gradient_kernel(image, offsets, masks, grad_cols, grad_offsets, grad_masks, *_grid(geometry))


# ----------------------------------------------------------------------------------------------------
# Compiled bodies
# ----------------------------------------------------------------------------------------------------
@inline_jit
def _pixel(plane, h, w):
    """``plane[h, w]`` inside the plane, 0 outside it (the zero padding around the image)."""
    H, W = plane.shape
    if 0 <= h < H and 0 <= w < W:
        return plane[h, w]
    return 0.0


@inline_jit
def _sample_position(i, j, a, b, dy, dx, sh, sw, ph, pw, dh, dw):
    """Real position read by tap (a, b) of output pixel (i, j) after the shift (dy, dx)."""
    return i * sh - ph + a * dh + dy, j * sw - pw + b * dw + dx


@inline_jit
def _bilinear(plane, y, x):
    """Bilinear sample of ``plane`` (H, W) at the real point ``(y, x)``, zeros outside, and its slopes.

    Returns ``(value, d value / d y, d value / d x)``. With ``h = floor(y)``, ``ly = y - h`` (same for x)
    and ``v00 = plane[h, w]``, ``v01 = plane[h, w+1]``, ``v10 = plane[h+1, w]``, ``v11 = plane[h+1, w+1]``::

        value = (1-ly)(1-lx) v00 + (1-ly) lx v01 + ly (1-lx) v10 + ly lx v11

    A NaN coordinate gives NaN; a point with all four neighbours outside gives zeros.
    """
    H, W = plane.shape
    if y != y or x != x:                                  # NaN shift: propagate it
        return np.nan, np.nan, np.nan
    if not (-1.0 <= y <= H and -1.0 <= x <= W):           # all four neighbours in the zero padding
        return 0.0, 0.0, 0.0
    y_low = np.floor(y)
    x_low = np.floor(x)
    ly = y - y_low                                        # weights of the far neighbours
    lx = x - x_low
    h = int(y_low)
    w = int(x_low)
    v00 = _pixel(plane, h, w)
    v01 = _pixel(plane, h, w + 1)
    v10 = _pixel(plane, h + 1, w)
    v11 = _pixel(plane, h + 1, w + 1)
    value = (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11)
    slope_y = (1.0 - lx) * (v10 - v00) + lx * (v11 - v01)
    slope_x = (1.0 - ly) * (v01 - v00) + ly * (v11 - v10)
    return value, slope_y, slope_x


@inline_jit
def _add(plane, h, w, amount):
    """``plane[h, w] += amount`` inside the plane; dropped outside it."""
    H, W = plane.shape
    if 0 <= h < H and 0 <= w < W:
        plane[h, w] += amount


@parallel_jit
def _deformable_im2col_kernel(image, offsets, masks, cols, kW, sh, sw, ph, pw, dh, dw):
    """cols[c*K + k, i, j] = masks[g, k, i, j] * bilinear(image[c], shifted tap k of pixel (i, j)).

    image (C, H, W); offsets (G_off, K, 2, H_out, W_out); masks (G_off, K, H_out, W_out);
    cols (C*K, H_out, W_out), overwritten.
    """
    C = image.shape[0]
    G_off, K, _, H_out, W_out = offsets.shape
    channels_per_offset_group = C // G_off
    for c in prange(C):                      # one input channel per thread: writes rows c*K .. c*K + K-1 only
        g = c // channels_per_offset_group
        plane = image[c]                     # (H, W)
        for k in range(K):                   # kernel taps (a, b), row-major
            a = k // kW
            b = k % kW
            for i in range(H_out):           # output pixels
                for j in range(W_out):
                    y, x = _sample_position(i, j, a, b, offsets[g, k, 0, i, j], offsets[g, k, 1, i, j],
                                            sh, sw, ph, pw, dh, dw)
                    value, _, _ = _bilinear(plane, y, x)
                    cols[c * K + k, i, j] = masks[g, k, i, j] * value


@parallel_jit
def _deformable_col2im_kernel(grad_cols, offsets, masks, grad_image, kW, sh, sw, ph, pw, dh, dw):
    """The adjoint of the sampling: each sample hands ``mask * grad_cols`` to its 4 neighbours.

    grad_cols (C*K, H_out, W_out); offsets (G_off, K, 2, H_out, W_out); masks (G_off, K, H_out, W_out);
    grad_image (C, H, W), overwritten.
    """
    C = grad_image.shape[0]
    G_off, K, _, H_out, W_out = offsets.shape
    channels_per_offset_group = C // G_off
    for c in prange(C):                      # one input channel per thread: writes grad_image[c] only
        g = c // channels_per_offset_group
        plane = grad_image[c]                # (H, W)
        plane[:, :] = 0.0
        for k in range(K):                   # kernel taps, row-major
            a = k // kW
            b = k % kW
            for i in range(H_out):           # output pixels, in order (deterministic sums)
                for j in range(W_out):
                    y, x = _sample_position(i, j, a, b, offsets[g, k, 0, i, j], offsets[g, k, 1, i, j],
                                            sh, sw, ph, pw, dh, dw)
                    amount = masks[g, k, i, j] * grad_cols[c * K + k, i, j]
                    y_low = np.floor(y)
                    x_low = np.floor(x)
                    if not (-1.0 <= y_low < plane.shape[0] and -1.0 <= x_low < plane.shape[1]):
                        continue             # all four neighbours outside (or a NaN shift)
                    ly = y - y_low
                    lx = x - x_low
                    h = int(y_low)
                    w = int(x_low)
                    _add(plane, h, w, amount * (1.0 - ly) * (1.0 - lx))
                    _add(plane, h, w + 1, amount * (1.0 - ly) * lx)
                    _add(plane, h + 1, w, amount * ly * (1.0 - lx))
                    _add(plane, h + 1, w + 1, amount * ly * lx)


@parallel_jit
def _offset_mask_gradient_kernel(image, offsets, masks, grad_cols, grad_offsets, grad_masks,
                                 kW, sh, sw, ph, pw, dh, dw):
    """grad_offsets[g, k] = sum_{c in g} grad_cols * mask * (slope_y, slope_x); grad_masks = sum grad_cols * value.

    image (C, H, W); offsets / grad_offsets (G_off, K, 2, H_out, W_out); masks / grad_masks
    (G_off, K, H_out, W_out), the gradients overwritten; grad_cols (C*K, H_out, W_out).
    """
    C = image.shape[0]
    G_off, K, _, H_out, W_out = offsets.shape
    channels_per_offset_group = C // G_off
    for group_tap in prange(G_off * K):      # one (offset group, tap) per thread: writes its own gradients only
        g = group_tap // K
        k = group_tap % K
        a = k // kW
        b = k % kW
        grad_offsets[g, k, :, :, :] = 0.0
        grad_masks[g, k, :, :] = 0.0
        for c in range(g * channels_per_offset_group, (g + 1) * channels_per_offset_group):  # the group's channels
            plane = image[c]                 # (H, W)
            for i in range(H_out):           # output pixels
                for j in range(W_out):
                    y, x = _sample_position(i, j, a, b, offsets[g, k, 0, i, j], offsets[g, k, 1, i, j],
                                            sh, sw, ph, pw, dh, dw)
                    value, slope_y, slope_x = _bilinear(plane, y, x)
                    upstream = grad_cols[c * K + k, i, j]
                    modulated = upstream * masks[g, k, i, j]
                    grad_offsets[g, k, 0, i, j] += modulated * slope_y
                    grad_offsets[g, k, 1, i, j] += modulated * slope_x
                    grad_masks[g, k, i, j] += upstream * value
