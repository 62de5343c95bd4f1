"""Plain-NumPy reference twins of every public kernel: the readable oracle.

Every function here has the same name, signature and return value as its fast numba twin in
:mod:`kernels`, and checks its arguments with the same helpers (``kernels/_validate.py``), so it raises the
same errors (the jax ``lax_reference`` idea). A test is one line per configuration::

    assert_close(kernels.conv2d_forward(x, w, stride=2), reference.conv2d_forward(x, w, stride=2), x.dtype)

They are written to be read, not to be fast: a Python loop over the kernel taps ``(kh, kw)`` and
vectorised NumPy over everything else (batch, channels, output pixels). They compute in the input's
dtype (float32 or float64) and are themselves checked against PyTorch (``tests/fixtures/kernels.npz``)
and by finite differences (``tests/test_reference.py``).

One idea carries the whole file. For a kernel tap ``(kh, kw)``, the input pixels it meets, one per output
pixel, form a strided window of the padded input::

    x_pad[:, :, kh*dh : kh*dh + sh*(H_out-1) + 1 : sh,
                kw*dw : kw*dw + sw*(W_out-1) + 1 : sw]          # (N, C, H_out, W_out)

* a convolution is a sum over taps of ``window x weight[..., kh, kw]`` (an ``einsum`` over channels);
* its backward passes scatter (``+=``) into the same windows of a zero array, then crop the padding;
* pooling takes the max / the mean over the taps' windows;
* a transposed convolution runs the scatter forwards: input pixel ``ih`` adds ``x * w`` to output row
  ``ih*sh - ph + kh*dh``.

Conventions are PyTorch's (NCHW; conv weight ``(C_out, C_in/groups, kH, kW)``; transposed-conv weight
``(C_in, C_out/groups, kH, kW)``); see ``kernels/_validate.py``, which does all argument checking here too.
"""
import numpy as np

from ._validate import (
    as_pair,
    check_bias,
    check_deform_conv_args,
    check_depthwise_weight_shape,
    check_grad_out,
    check_max_pool_backward,
    check_same_dtype,
    check_shape,
    check_tensor,
    check_flat_indices,
    check_unpool_backward_args,
    conv_geometry,
    conv_transpose_geometry,
    pool_geometry,
    unpool_output_size,
)

__all__ = [
    "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias",
    "depthwise_conv2d_forward", "depthwise_conv2d_backward_input", "depthwise_conv2d_backward_weight",
    "pointwise_conv2d_forward", "pointwise_conv2d_backward_input", "pointwise_conv2d_backward_weight",
    "conv_transpose2d_forward", "conv_transpose2d_backward_input", "conv_transpose2d_backward_weight",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "global_avg_pool2d_forward", "global_avg_pool2d_backward",
]


# ----------------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------------

def _pad(x, padding, value=0.0):
    """Pad the two spatial axes of an NCHW array by ``padding = (ph, pw)`` on both sides."""
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)   # (N, C, H+2ph, W+2pw)


def _tap_window(kh, kw, dilation, stride, count):
    """Row and column slices of the pixels that tap ``(kh, kw)`` meets, ``count = (rows, cols)`` of them.

    Row ``kh*dh + o*sh`` for ``o = 0 .. rows-1`` (and the same for columns).
    """
    (dh, dw), (sh, sw), (rows, cols) = dilation, stride, count
    return (slice(kh * dh, kh * dh + sh * (rows - 1) + 1, sh),
            slice(kw * dw, kw * dw + sw * (cols - 1) + 1, sw))


def _conv_args(x, weight, bias, geometry_of):
    """Check a forward call's arrays; ``geometry_of(x_shape, weight_shape)`` checks the hyper-parameters."""
    x, weight = check_tensor(x, "x"), check_tensor(weight, "weight")
    check_same_dtype(x=x, weight=weight)
    geometry = geometry_of(x.shape, weight.shape)
    bias = check_bias(bias, geometry.output_shape[1], x.dtype)
    return x, weight, bias, geometry


def _backward_input_args(grad_out, weight, input_shape, geometry_of):
    """Check a backward-input call: ``weight`` array, requested ``input_shape``, ``grad_out`` shape."""
    weight = check_tensor(weight, "weight")
    input_shape = check_shape(input_shape, "input_shape")
    geometry = geometry_of(input_shape, weight.shape)
    grad_out = check_grad_out(grad_out, geometry.output_shape, weight.dtype)
    return grad_out, weight, geometry


def _backward_weight_args(grad_out, x, weight_shape, geometry_of):
    """Check a backward-weight call: ``x`` array, requested ``weight_shape``, ``grad_out`` shape."""
    x = check_tensor(x, "x")
    weight_shape = check_shape(weight_shape, "weight_shape")
    geometry = geometry_of(x.shape, weight_shape)
    grad_out = check_grad_out(grad_out, geometry.output_shape, x.dtype)
    return grad_out, x, geometry


# ----------------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------------

def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as in every deep-learning library), reference version.

    Parameters
    ----------
    x : (N, C_in, H, W) float32 or float64
    weight : (C_out, C_in // groups, kH, kW), same dtype
    bias : (C_out,) or None
    stride, padding, dilation : int or (h, w) pair
    groups : int, divides C_in and C_out; group ``g`` maps input channels ``g*C_in/G ..`` to output
        channels ``g*C_out/G ..`` only.

    Returns
    -------
    y : (N, C_out, H_out, W_out), ``H_out = (H + 2*ph - dh*(kH-1) - 1) // sh + 1``

    ``y[n, o, i, j] = bias[o] + sum_{c, kh, kw} x_pad[n, g*C_in/G + c, i*sh + kh*dh, j*sw + kw*dw]
    * weight[o, c, kh, kw]`` with ``g = o // (C_out/G)``.
    """
    x, weight, bias, geometry = _conv_args(
        x, weight, bias, lambda x_shape, w_shape: conv_geometry(x_shape, w_shape, stride, padding, dilation, groups))
    N, C_in, H, W = x.shape
    C_out, C_in_per_group, kH, kW = weight.shape
    G = geometry.groups
    _, _, H_out, W_out = geometry.output_shape

    x_pad = _pad(x, geometry.padding)                                     # (N, C_in, Hp, Wp)
    x_pad = x_pad.reshape(N, G, C_in_per_group, *x_pad.shape[2:])         # (N, G, C_in/G, Hp, Wp)
    w = weight.reshape(G, C_out // G, C_in_per_group, kH, kW)             # (G, C_out/G, C_in/G, kH, kW)
    y = np.zeros((N, G, C_out // G, H_out, W_out), dtype=x.dtype)
    for kh in range(kH):
        for kw in range(kW):
            rows, cols = _tap_window(kh, kw, geometry.dilation, geometry.stride, (H_out, W_out))
            window = x_pad[..., rows, cols]                               # (N, G, C_in/G, H_out, W_out)
            y += np.einsum("ngihw,goi->ngohw", window, w[..., kh, kw])
    y = y.reshape(N, C_out, H_out, W_out)
    if bias is not None:
        y += bias.reshape(1, C_out, 1, 1)
    return y


def conv2d_backward_input(grad_out, weight, input_shape, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of :func:`conv2d_forward` with respect to ``x``.

    Parameters
    ----------
    grad_out : (N, C_out, H_out, W_out), dL/dy
    weight : (C_out, C_in // groups, kH, kW)
    input_shape : (N, C_in, H, W), the shape of the forward ``x``

    Returns
    -------
    grad_x : (N, C_in, H, W). Each ``grad_out`` pixel sends ``grad_out * weight[..., kh, kw]`` back to the
    input pixel tap ``(kh, kw)`` read; pixels in the padding are dropped, pixels no window reached get 0.
    """
    grad_out, weight, geometry = _backward_input_args(
        grad_out, weight, input_shape,
        lambda x_shape, w_shape: conv_geometry(x_shape, w_shape, stride, padding, dilation, groups,
                                               input_name="input_shape"))
    N, C_in, H, W = geometry.input_shape
    C_out, C_in_per_group, kH, kW = weight.shape
    G = geometry.groups
    _, _, H_out, W_out = grad_out.shape
    ph, pw = geometry.padding

    g = grad_out.reshape(N, G, C_out // G, H_out, W_out)                  # (N, G, C_out/G, H_out, W_out)
    w = weight.reshape(G, C_out // G, C_in_per_group, kH, kW)             # (G, C_out/G, C_in/G, kH, kW)
    grad_x_pad = np.zeros((N, G, C_in_per_group, H + 2 * ph, W + 2 * pw), dtype=grad_out.dtype)
    for kh in range(kH):
        for kw in range(kW):
            rows, cols = _tap_window(kh, kw, geometry.dilation, geometry.stride, (H_out, W_out))
            grad_x_pad[..., rows, cols] += np.einsum("ngohw,goi->ngihw", g, w[..., kh, kw])
    grad_x_pad = grad_x_pad.reshape(N, C_in, H + 2 * ph, W + 2 * pw)      # (N, C_in, Hp, Wp)
    return np.ascontiguousarray(grad_x_pad[:, :, ph:ph + H, pw:pw + W])  # (N, C_in, H, W): crop the padding


def conv2d_backward_weight(grad_out, x, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    """Gradient of :func:`conv2d_forward` with respect to ``weight``.

    Parameters
    ----------
    grad_out : (N, C_out, H_out, W_out), dL/dy
    x : (N, C_in, H, W), the forward input
    weight_shape : (C_out, C_in // groups, kH, kW)

    Returns
    -------
    grad_weight : weight_shape. ``grad_weight[o, c, kh, kw] = sum_{n, i, j} grad_out[n, o, i, j]
    * x_pad[n, g*C_in/G + c, i*sh + kh*dh, j*sw + kw*dw]``: the tap's window against ``grad_out``.
    """
    grad_out, x, geometry = _backward_weight_args(
        grad_out, x, weight_shape,
        lambda x_shape, w_shape: conv_geometry(x_shape, w_shape, stride, padding, dilation, groups))
    N, C_in, H, W = x.shape
    C_out, C_in_per_group, kH, kW = geometry.weight_shape
    G = geometry.groups
    _, _, H_out, W_out = grad_out.shape

    x_pad = _pad(x, geometry.padding)                                     # (N, C_in, Hp, Wp)
    x_pad = x_pad.reshape(N, G, C_in_per_group, *x_pad.shape[2:])         # (N, G, C_in/G, Hp, Wp)
    g = grad_out.reshape(N, G, C_out // G, H_out, W_out)                  # (N, G, C_out/G, H_out, W_out)
    grad_w = np.zeros((G, C_out // G, C_in_per_group, kH, kW), dtype=x.dtype)
    for kh in range(kH):
        for kw in range(kW):
            rows, cols = _tap_window(kh, kw, geometry.dilation, geometry.stride, (H_out, W_out))
            grad_w[..., kh, kw] = np.einsum("ngohw,ngihw->goi", g, x_pad[..., rows, cols])
    return grad_w.reshape(geometry.weight_shape)                          # (C_out, C_in/G, kH, kW)


def conv2d_backward_bias(grad_out):
    """Gradient with respect to a convolution's ``bias``: ``grad_out`` summed over N, H and W.

    Parameters
    ----------
    grad_out : (N, C_out, H_out, W_out)

    Returns
    -------
    grad_bias : (C_out,). Serves transposed convolutions too (their bias is added the same way).
    """
    grad_out = check_tensor(grad_out, "grad_out")
    return grad_out.sum(axis=(0, 2, 3))                                   # (C_out,)


# ----------------------------------------------------------------------------------------------------
# Depthwise and pointwise convolution: special cases of conv2d. These twins simply call the reference
# conv2d_* above (groups = C for depthwise, a 1x1 kernel for pointwise); only the fast kernels specialise.
# ----------------------------------------------------------------------------------------------------

def depthwise_conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Depthwise convolution: each input channel filtered by its own ``multiplier`` kernels.

    ``conv2d_forward`` with ``groups = C`` (MobileNet V1, arXiv:1704.04861); cost ``kH*kW*C*m*H_out*W_out``
    MACs, ``1/C_out`` of a standard convolution.

    Parameters
    ----------
    x : (N, C, H, W)
    weight : (C*m, 1, kH, kW), ``m`` the depth multiplier; output channel ``o`` reads input channel ``o // m``
    bias : (C*m,) or None

    Returns
    -------
    y : (N, C*m, H_out, W_out)
    """
    x, weight = check_tensor(x, "x"), check_tensor(weight, "weight")
    check_depthwise_weight_shape(weight.shape, x.shape)
    return conv2d_forward(x, weight, bias, stride, padding, dilation, groups=x.shape[1])


def depthwise_conv2d_backward_input(grad_out, weight, input_shape, stride=1, padding=0, dilation=1):
    """Gradient of :func:`depthwise_conv2d_forward` with respect to ``x``: (N, C, H, W)."""
    input_shape = check_shape(input_shape, "input_shape")
    weight = check_tensor(weight, "weight")
    check_depthwise_weight_shape(weight.shape, input_shape, "input_shape")
    return conv2d_backward_input(grad_out, weight, input_shape, stride, padding, dilation, groups=input_shape[1])


def depthwise_conv2d_backward_weight(grad_out, x, weight_shape, stride=1, padding=0, dilation=1):
    """Gradient of :func:`depthwise_conv2d_forward` with respect to ``weight``: (C*m, 1, kH, kW)."""
    x = check_tensor(x, "x")
    weight_shape = check_shape(weight_shape, "weight_shape")
    check_depthwise_weight_shape(weight_shape, x.shape)
    return conv2d_backward_weight(grad_out, x, weight_shape, stride, padding, dilation, groups=x.shape[1])


# The same three functions as the definition reads, one multiply-add at a time (slow; for reading and
# for the tests that check the one-liners above against it). x_pad is x with `padding` zeros around.
def depthwise_conv2d_forward_loops(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """``y[n, oc, oh, ow] = bias[oc] + sum_{kh, kw} weight[oc, 0, kh, kw] * x_pad[n, oc // m, oh*s + kh*d, ow*s + kw*d]``."""
    (s, _), (p, _), (d, _) = _square(stride, padding, dilation)
    N, C, H, W = x.shape
    C_out, _, kH, kW = weight.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    H_out, W_out = (H + 2 * p - d * (kH - 1) - 1) // s + 1, (W + 2 * p - d * (kW - 1) - 1) // s + 1
    y = np.zeros((N, C_out, H_out, W_out), dtype=np.result_type(x, weight))
    for n, oc, oh, ow, kh, kw in np.ndindex(N, C_out, H_out, W_out, kH, kW):
        y[n, oc, oh, ow] += weight[oc, 0, kh, kw] * x_pad[n, oc // (C_out // C), oh * s + kh * d, ow * s + kw * d]
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def depthwise_conv2d_backward_input_loops(grad_out, weight, input_shape, stride=1, padding=0, dilation=1):
    """Each output gradient flows back to the input pixels its window read, weighted by the tap."""
    (s, _), (p, _), (d, _) = _square(stride, padding, dilation)
    N, C, H, W = input_shape
    _, C_out, H_out, W_out = grad_out.shape
    _, _, kH, kW = weight.shape
    grad_x_pad = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=grad_out.dtype)
    for n, oc, oh, ow, kh, kw in np.ndindex(N, C_out, H_out, W_out, kH, kW):
        grad_x_pad[n, oc // (C_out // C), oh * s + kh * d, ow * s + kw * d] += weight[oc, 0, kh, kw] * grad_out[n, oc, oh, ow]
    return grad_x_pad[:, :, p:p + H, p:p + W]


def depthwise_conv2d_backward_weight_loops(grad_out, x, weight_shape, stride=1, padding=0, dilation=1):
    """``grad_weight[oc, 0, kh, kw] = sum_{n, oh, ow} grad_out[n, oc, oh, ow] * x_pad[n, oc // m, oh*s + kh*d, ow*s + kw*d]``."""
    (s, _), (p, _), (d, _) = _square(stride, padding, dilation)
    C = x.shape[1]
    N, C_out, H_out, W_out = grad_out.shape
    kH, kW = weight_shape[2:]
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    grad_weight = np.zeros(weight_shape, dtype=x.dtype)
    for n, oc, oh, ow, kh, kw in np.ndindex(N, C_out, H_out, W_out, kH, kW):
        grad_weight[oc, 0, kh, kw] += grad_out[n, oc, oh, ow] * x_pad[n, oc // (C_out // C), oh * s + kh * d, ow * s + kw * d]
    return grad_weight


def _square(stride, padding, dilation):
    """The loop versions read one stride, padding and dilation for both axes: refuse (h, w) pairs that differ."""
    pairs = tuple(as_pair(value, name, minimum) for value, name, minimum in
                  ((stride, "stride", 1), (padding, "padding", 0), (dilation, "dilation", 1)))
    if any(h != w for h, w in pairs):
        raise ValueError(f"the loop definitions take equal h and w; got stride={stride}, padding={padding}, "
                         f"dilation={dilation}")
    return pairs


def _check_pointwise_weight_shape(weight_shape, name):
    if tuple(weight_shape[2:]) != (1, 1):
        raise ValueError(f"pointwise {name} must be 1x1, shape (C_out, C_in/groups, 1, 1); got {tuple(weight_shape)}")


def pointwise_conv2d_forward(x, weight, bias=None, groups=1):
    """Pointwise (1x1) convolution: a per-pixel channel mix, ``y[n, :, i, j] = W @ x[n, :, i, j] + b``.

    ``conv2d_forward`` with a 1x1 kernel, stride 1, no padding; cost ``C_in*C_out*H*W / groups`` MACs.

    Parameters
    ----------
    x : (N, C_in, H, W)
    weight : (C_out, C_in // groups, 1, 1)
    bias : (C_out,) or None
    groups : int (grouped 1x1 convolutions, ShuffleNet arXiv:1707.01083)

    Returns
    -------
    y : (N, C_out, H, W)
    """
    weight = check_tensor(weight, "weight")
    _check_pointwise_weight_shape(weight.shape, "weight")
    return conv2d_forward(x, weight, bias, groups=groups)


def pointwise_conv2d_backward_input(grad_out, weight, input_shape, groups=1):
    """Gradient of :func:`pointwise_conv2d_forward` with respect to ``x``: (N, C_in, H, W)."""
    weight = check_tensor(weight, "weight")
    _check_pointwise_weight_shape(weight.shape, "weight")
    return conv2d_backward_input(grad_out, weight, input_shape, groups=groups)


def pointwise_conv2d_backward_weight(grad_out, x, weight_shape, groups=1):
    """Gradient of :func:`pointwise_conv2d_forward` with respect to ``weight``: (C_out, C_in/groups, 1, 1)."""
    weight_shape = check_shape(weight_shape, "weight_shape")
    _check_pointwise_weight_shape(weight_shape, "weight_shape")
    return conv2d_backward_weight(grad_out, x, weight_shape, groups=groups)


# ----------------------------------------------------------------------------------------------------
# Transposed convolution, written from its definition (a scatter), independent of conv2d_* above
# ----------------------------------------------------------------------------------------------------

def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution ("deconvolution", learned up-sampling).

    Every input pixel scatters a copy of the kernel, scaled by its value, into the output::

        y[n, g*C_out/G + o, ih*sh - ph + kh*dh, iw*sw - pw + kw*dw]
            += x[n, g*C_in/G + c, ih, iw] * weight[g*C_in/G + c, o, kh, kw]

    (positions outside the output are dropped). It is the adjoint (the gradient) of ``conv2d_forward``
    with the same weight and hyper-parameters.

    Parameters
    ----------
    x : (N, C_in, H, W)
    weight : (C_in, C_out // groups, kH, kW) (PyTorch's layout)
    bias : (C_out,) or None
    stride, padding, output_padding, dilation : int or (h, w); ``output_padding < max(stride, dilation)``
        adds rows/columns at the bottom/right (it picks one of the input sizes a strided conv2d maps to H)
    groups : int

    Returns
    -------
    y : (N, C_out, H_out, W_out), ``H_out = (H-1)*sh - 2*ph + dh*(kH-1) + output_padding_h + 1``
    """
    x, weight, bias, geometry = _conv_args(
        x, weight, bias, lambda x_shape, w_shape: conv_transpose_geometry(
            x_shape, w_shape, stride, padding, output_padding, groups, dilation))
    N, C_in, H, W = x.shape
    _, C_out_per_group, kH, kW = weight.shape
    G = geometry.groups
    _, C_out, H_out, W_out = geometry.output_shape
    ph, pw = geometry.padding

    # Scatter into the uncropped output, where row ih*sh + kh*dh stands for y's row ih*sh - ph + kh*dh.
    xg = x.reshape(N, G, C_in // G, H, W)                                 # (N, G, C_in/G, H, W)
    w = weight.reshape(G, C_in // G, C_out_per_group, kH, kW)             # (G, C_in/G, C_out/G, kH, kW)
    y_full = np.zeros((N, G, C_out_per_group, H_out + 2 * ph, W_out + 2 * pw), dtype=x.dtype)
    for kh in range(kH):
        for kw in range(kW):
            rows, cols = _tap_window(kh, kw, geometry.dilation, geometry.stride, (H, W))
            y_full[..., rows, cols] += np.einsum("ngihw,gio->ngohw", xg, w[..., kh, kw])
    y_full = y_full.reshape(N, C_out, H_out + 2 * ph, W_out + 2 * pw)
    y = np.ascontiguousarray(y_full[:, :, ph:ph + H_out, pw:pw + W_out])  # (N, C_out, H_out, W_out)
    if bias is not None:
        y += bias.reshape(1, C_out, 1, 1)
    return y


def conv_transpose2d_backward_input(grad_out, weight, input_shape, stride=1, padding=0, output_padding=0,
                                   groups=1, dilation=1):
    """Gradient of :func:`conv_transpose2d_forward` with respect to ``x``.

    The adjoint of the scatter is a gather: input pixel ``(ih, iw)`` collects ``grad_out * weight`` from
    every output pixel it wrote to (``grad_out`` zero-padded, so dropped positions contribute 0).

    Parameters
    ----------
    grad_out : (N, C_out, H_out, W_out)
    weight : (C_in, C_out // groups, kH, kW)
    input_shape : (N, C_in, H, W)

    Returns
    -------
    grad_x : (N, C_in, H, W)
    """
    grad_out, weight, geometry = _backward_input_args(
        grad_out, weight, input_shape, lambda x_shape, w_shape: conv_transpose_geometry(
            x_shape, w_shape, stride, padding, output_padding, groups, dilation, input_name="input_shape"))
    N, C_in, H, W = geometry.input_shape
    _, C_out_per_group, kH, kW = weight.shape
    G = geometry.groups

    g_full = _pad(grad_out, geometry.padding)                             # (N, C_out, H_out+2ph, W_out+2pw)
    g_full = g_full.reshape(N, G, C_out_per_group, *g_full.shape[2:])     # (N, G, C_out/G, ., .)
    w = weight.reshape(G, C_in // G, C_out_per_group, kH, kW)             # (G, C_in/G, C_out/G, kH, kW)
    grad_x = np.zeros((N, G, C_in // G, H, W), dtype=grad_out.dtype)
    for kh in range(kH):
        for kw in range(kW):
            rows, cols = _tap_window(kh, kw, geometry.dilation, geometry.stride, (H, W))
            grad_x += np.einsum("ngohw,gio->ngihw", g_full[..., rows, cols], w[..., kh, kw])
    return grad_x.reshape(N, C_in, H, W)


def conv_transpose2d_backward_weight(grad_out, x, weight_shape, stride=1, padding=0, output_padding=0,
                                    groups=1, dilation=1):
    """Gradient of :func:`conv_transpose2d_forward` with respect to ``weight``.

    ``grad_weight[g*C_in/G + c, o, kh, kw] = sum_{n, ih, iw} x[n, g*C_in/G + c, ih, iw]
    * grad_out_pad[n, g*C_out/G + o, ih*sh + kh*dh, iw*sw + kw*dw]``.

    Parameters
    ----------
    grad_out : (N, C_out, H_out, W_out)
    x : (N, C_in, H, W)
    weight_shape : (C_in, C_out // groups, kH, kW)

    Returns
    -------
    grad_weight : weight_shape
    """
    grad_out, x, geometry = _backward_weight_args(
        grad_out, x, weight_shape, lambda x_shape, w_shape: conv_transpose_geometry(
            x_shape, w_shape, stride, padding, output_padding, groups, dilation))
    N, C_in, H, W = x.shape
    _, C_out_per_group, kH, kW = geometry.weight_shape
    G = geometry.groups

    g_full = _pad(grad_out, geometry.padding)                             # (N, C_out, H_out+2ph, W_out+2pw)
    g_full = g_full.reshape(N, G, C_out_per_group, *g_full.shape[2:])     # (N, G, C_out/G, ., .)
    xg = x.reshape(N, G, C_in // G, H, W)                                 # (N, G, C_in/G, H, W)
    grad_w = np.zeros((G, C_in // G, C_out_per_group, kH, kW), dtype=x.dtype)
    for kh in range(kH):
        for kw in range(kW):
            rows, cols = _tap_window(kh, kw, geometry.dilation, geometry.stride, (H, W))
            grad_w[..., kh, kw] = np.einsum("ngihw,ngohw->gio", xg, g_full[..., rows, cols])
    return grad_w.reshape(geometry.weight_shape)                          # (C_in, C_out/G, kH, kW)


# ----------------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------------

def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling over ``kernel_size`` windows; also returns where each maximum came from.

    Parameters
    ----------
    x : (N, C, H, W)
    kernel_size : int or (kH, kW)
    stride : int, (sh, sw) or None (None means ``stride = kernel_size``)
    padding : int or (ph, pw), at most half the window; padded pixels count as ``-inf``

    Returns
    -------
    y : (N, C, H_out, W_out), ``H_out = (H + 2*ph - kH) // sh + 1``
    argmax : (N, C, H_out, W_out) int64, flat index ``h*W + w`` of the maximum in its input plane
        (PyTorch's ``return_indices``). Ties go to the first maximum in row-major window order; as in
        PyTorch a NaN counts as the maximum (it propagates), and a window of ``-inf`` points at its first
        pixel inside the image.
    """
    x = check_tensor(x, "x")
    (kH, kW), stride, padding, output_shape = pool_geometry(x.shape, kernel_size, stride, padding)
    N, C, H, W = x.shape
    _, _, H_out, W_out = output_shape
    (sh, sw), (ph, pw) = stride, padding

    x_pad = _pad(x, padding, value=-np.inf)                               # (N, C, H+2ph, W+2pw)
    flat_index = np.arange(-ph, H + ph)[:, None] * W + np.arange(-pw, W + pw)   # (H+2ph, W+2pw): h*W + w
    first_row = np.maximum(np.arange(H_out) * sh - ph, 0)                 # first in-image row of each window
    first_col = np.maximum(np.arange(W_out) * sw - pw, 0)
    y = np.full(output_shape, -np.inf, dtype=x.dtype)
    argmax = np.broadcast_to(first_row[:, None] * W + first_col, output_shape).astype(np.int64)
    for kh in range(kH):                                                  # row-major window order
        for kw in range(kW):
            rows, cols = _tap_window(kh, kw, (1, 1), stride, (H_out, W_out))
            window = x_pad[:, :, rows, cols]                              # (N, C, H_out, W_out)
            better = (window > y) | np.isnan(window)                      # strict: a tie keeps the earlier tap
            y = np.where(better, window, y)
            argmax = np.where(better, flat_index[rows, cols], argmax)
    return y, argmax


def max_pool2d_backward(grad_out, argmax, input_shape, kernel_size, stride=None, padding=0):
    """Gradient of :func:`max_pool2d_forward`: each ``grad_out`` goes to its window's maximum.

    Parameters
    ----------
    grad_out : (N, C, H_out, W_out)
    argmax : (N, C, H_out, W_out) integer, as returned by :func:`max_pool2d_forward`
    input_shape : (N, C, H, W), the forward input's shape
    kernel_size, stride, padding : as in the forward call (checked against ``input_shape`` and ``grad_out``)

    Returns
    -------
    grad_x : (N, C, H, W); a pixel that is the maximum of several overlapping windows sums their gradients.
    """
    grad_out, argmax, input_shape = check_max_pool_backward(grad_out, argmax, input_shape, kernel_size, stride,
                                                            padding)
    N, C, H, W = input_shape
    grad_x = np.zeros((N * C, H * W), dtype=grad_out.dtype)               # one row per image plane
    planes = np.arange(N * C)[:, None]                                    # (N*C, 1)
    np.add.at(grad_x, (planes, argmax.reshape(N * C, -1)), grad_out.reshape(N * C, -1))   # unbuffered +=
    return grad_x.reshape(N, C, H, W)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Average pooling; padded pixels count as zeros in the mean (``count_include_pad=True``, PyTorch's default).

    Parameters
    ----------
    x : (N, C, H, W)
    kernel_size, stride, padding : as :func:`max_pool2d_forward`

    Returns
    -------
    y : (N, C, H_out, W_out), ``y = (sum of the window of x_pad) / (kH*kW)``
    """
    x = check_tensor(x, "x")
    (kH, kW), stride, padding, output_shape = pool_geometry(x.shape, kernel_size, stride, padding)
    x_pad = _pad(x, padding)                                              # (N, C, H+2ph, W+2pw)
    y = np.zeros(output_shape, dtype=x.dtype)
    for kh in range(kH):
        for kw in range(kW):
            rows, cols = _tap_window(kh, kw, (1, 1), stride, output_shape[2:])
            y += x_pad[:, :, rows, cols]                                  # (N, C, H_out, W_out)
    y /= kH * kW
    return y


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0):
    """Gradient of :func:`avg_pool2d_forward`: each window pixel receives ``grad_out / (kH*kW)``.

    Parameters
    ----------
    grad_out : (N, C, H_out, W_out)
    input_shape : (N, C, H, W)
    kernel_size, stride, padding : as in the forward call

    Returns
    -------
    grad_x : (N, C, H, W)
    """
    input_shape = check_shape(input_shape, "input_shape")
    (kH, kW), stride, padding, output_shape = pool_geometry(input_shape, kernel_size, stride, padding,
                                                            input_name="input_shape")
    grad_out = check_tensor(grad_out, "grad_out")
    grad_out = check_grad_out(grad_out, output_shape, grad_out.dtype)
    N, C, H, W = input_shape
    ph, pw = padding

    share = grad_out / (kH * kW)                                          # (N, C, H_out, W_out)
    grad_x_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=grad_out.dtype)
    for kh in range(kH):
        for kw in range(kW):
            rows, cols = _tap_window(kh, kw, (1, 1), stride, output_shape[2:])
            grad_x_pad[:, :, rows, cols] += share
    return np.ascontiguousarray(grad_x_pad[:, :, ph:ph + H, pw:pw + W])  # (N, C, H, W): crop the padding


def global_avg_pool2d_forward(x):
    """Global average pooling (``AdaptiveAvgPool2d(1)``): the mean of each channel's plane.

    Replaces the fully connected layers of classic CNNs (Network in Network, arXiv:1312.4400).

    Parameters
    ----------
    x : (N, C, H, W)

    Returns
    -------
    y : (N, C, 1, 1)
    """
    x = check_tensor(x, "x")
    return x.mean(axis=(2, 3), keepdims=True)                             # (N, C, 1, 1)


def global_avg_pool2d_backward(grad_out, input_shape):
    """Gradient of :func:`global_avg_pool2d_forward`: ``grad_out / (H*W)`` spread over each plane.

    Parameters
    ----------
    grad_out : (N, C, 1, 1)
    input_shape : (N, C, H, W)

    Returns
    -------
    grad_x : (N, C, H, W)
    """
    input_shape = check_shape(input_shape, "input_shape")
    N, C, H, W = input_shape
    grad_out = check_tensor(grad_out, "grad_out")
    grad_out = check_grad_out(grad_out, (N, C, 1, 1), grad_out.dtype)
    return np.broadcast_to(grad_out / (H * W), input_shape).copy()        # (N, C, H, W)


# ----------------------------------------------------------------------------------------------------
# Deformable convolution (v1, and v2 with a modulation mask)
# ----------------------------------------------------------------------------------------------------
__all__ += ["deform_conv2d_forward", "deform_conv2d_backward"]

# The four neighbours of a real point (y, x), as (row step, column step): (0, 0) is (floor y, floor x).
_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _deform_samples(x, offset, mask, geometry, offset_groups):
    """Everything both passes need about the samples, per channel: shapes (N, C_in, K, H_out, W_out).

    Returns ``(rows, cols, weights, slopes, modulation)``: for each corner of ``_CORNERS``, the
    integer neighbour positions ``rows[corner]``/``cols[corner]``, their bilinear weights
    ``(1-ly or ly) * (1-lx or lx)`` and the weights' derivatives along y and x; and the mask of each
    sample (ones when ``mask`` is None). Channel ``c`` uses offset group ``c // (C_in / offset_groups)``.
    """
    N, C_in, H, W = x.shape
    kH, kW = geometry.kernel_size
    K = kH * kW
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
    _, _, H_out, W_out = geometry.output_shape
    per_group = C_in // offset_groups
    offsets = offset.reshape(N, offset_groups, K, 2, H_out, W_out)
    tap_row, tap_col = np.divmod(np.arange(K), kW)
    base_y = (np.arange(H_out) * sh - ph)[None, :, None] + (tap_row * dh)[:, None, None]   # (K, H_out, 1)
    base_x = (np.arange(W_out) * sw - pw)[None, None, :] + (tap_col * dw)[:, None, None]   # (K, 1, W_out)
    y = np.repeat(base_y + offsets[:, :, :, 0], per_group, axis=1)        # (N, C_in, K, H_out, W_out)
    x_pos = np.repeat(base_x + offsets[:, :, :, 1], per_group, axis=1)
    y_low, x_low = np.floor(y), np.floor(x_pos)
    ly, lx = y - y_low, x_pos - x_low                                     # weights of the far neighbours
    rows, cols, weights, slopes = [], [], [], []
    for step_y, step_x in _CORNERS:
        weight_y, slope_y = (ly, 1.0) if step_y else (1.0 - ly, -1.0)
        weight_x, slope_x = (lx, 1.0) if step_x else (1.0 - lx, -1.0)
        rows.append(y_low.astype(np.int64) + step_y)
        cols.append(x_low.astype(np.int64) + step_x)
        weights.append(weight_y * weight_x)
        slopes.append((slope_y * weight_x, weight_y * slope_x))           # d weight / dy, d weight / dx
    if mask is None:
        modulation = np.ones_like(y)
    else:
        modulation = np.repeat(mask.reshape(N, offset_groups, K, H_out, W_out), per_group, axis=1)
    return rows, cols, weights, slopes, modulation


def _neighbour_values(x, rows, cols):
    """``x[n, c, rows, cols]`` where the neighbour is inside the image, 0 outside (zero padding)."""
    N, C_in, H, W = x.shape
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    n = np.arange(N)[:, None, None, None, None]
    c = np.arange(C_in)[None, :, None, None, None]
    return np.where(inside, x[n, c, np.clip(rows, 0, H - 1), np.clip(cols, 0, W - 1)], 0.0), inside


def deform_conv2d_forward(x, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """Deformable convolution (arXiv:1703.06211; v2 with ``mask``, arXiv:1811.11168), reference version.

    Parameters
    ----------
    x : (N, C_in, H, W) float32 or float64
    offset : (N, 2*offset_groups*kH*kW, H_out, W_out), ``(dy, dx)`` per kernel tap
    weight : (C_out, C_in/groups, kH, kW), ``groups = C_in // weight.shape[1]``
    bias : (C_out,) or None
    stride, padding, dilation : int or (h, w) pair
    mask : (N, offset_groups*kH*kW, H_out, W_out) or None

    Returns
    -------
    y : (N, C_out, H_out, W_out)

    Each tap samples the zero-padded image bilinearly at its shifted position, times the mask; the
    samples ``(N, C_in, K, H_out, W_out)`` are contracted with the weight group by group (an ``einsum``).
    """
    geometry, offset_groups, x, offset, weight, mask = check_deform_conv_args(
        x, offset, weight, mask, stride, padding, dilation)
    bias = check_bias(bias, weight.shape[0], x.dtype)
    samples = _deform_modulated_samples(x, offset, mask, geometry, offset_groups)   # (N, C_in, K, H_out, W_out)
    y = _deform_contract(samples, weight, geometry)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y


def deform_conv2d_backward(grad_out, x, offset, weight, stride=1, padding=0, dilation=1, mask=None):
    """Gradients of :func:`deform_conv2d_forward`: ``(grad_x, grad_offset, grad_weight, grad_mask or None)``.

    Parameters
    ----------
    grad_out : (N, C_out, H_out, W_out)
    x, offset, weight, stride, padding, dilation, mask : as in the forward call

    Returns
    -------
    grad_x : (N, C_in, H, W); grad_offset : offset's shape; grad_weight : weight's shape;
    grad_mask : mask's shape, or None without a mask.

    ``grad_samples = weight^T grad_out`` (per group); then the chain rule through
    ``sample = mask * sum_corners weight_corner * value_corner``: the mask gets ``grad_samples * sum(...)``,
    the offsets ``grad_samples * mask * sum(d weight_corner / d(y, x) * value_corner)``, and each corner
    pixel of ``x`` receives ``grad_samples * mask * weight_corner`` (``np.add.at``).
    """
    geometry, offset_groups, x, offset, weight, mask = check_deform_conv_args(
        x, offset, weight, mask, stride, padding, dilation)
    grad_out = check_grad_out(grad_out, geometry.output_shape, x.dtype)
    N, C_in, H, W = x.shape
    C_out, C_in_per_group, kH, kW = weight.shape
    K = kH * kW
    G = geometry.groups
    _, _, H_out, W_out = geometry.output_shape

    samples = _deform_modulated_samples(x, offset, mask, geometry, offset_groups)  # (N, C_in, K, H_out, W_out)
    grouped_samples = samples.reshape(N, G, C_in_per_group, K, H_out, W_out)
    grad_y = grad_out.reshape(N, G, C_out // G, H_out, W_out)
    w = weight.reshape(G, C_out // G, C_in_per_group, K)
    grad_weight = np.einsum("ngohw,ngckhw->gock", grad_y, grouped_samples).reshape(weight.shape)
    grad_samples = np.einsum("gock,ngohw->ngckhw", w, grad_y).reshape(samples.shape)   # dL/d(mask * value)

    rows, cols, weights, slopes, modulation = _deform_samples(x, offset, mask, geometry, offset_groups)
    grad_x = np.zeros(x.shape, dtype=x.dtype)
    unmodulated = np.zeros(samples.shape)                                 # value before the mask
    slope_y = np.zeros(samples.shape)                                     # d value / dy
    slope_x = np.zeros(samples.shape)
    n = np.arange(N)[:, None, None, None, None]
    c = np.arange(C_in)[None, :, None, None, None]
    for corner in range(len(_CORNERS)):
        values, inside = _neighbour_values(x, rows[corner], cols[corner])
        unmodulated += weights[corner] * values
        slope_y += slopes[corner][0] * values
        slope_x += slopes[corner][1] * values
        contribution = np.where(inside, grad_samples * modulation * weights[corner], 0.0)
        np.add.at(grad_x, (n, c, np.clip(rows[corner], 0, H - 1), np.clip(cols[corner], 0, W - 1)), contribution)

    def sum_over_offset_group(per_channel):                               # (N, C_in, K, ...) -> (N, G_off, K, ...)
        return per_channel.reshape(N, offset_groups, C_in // offset_groups, K, H_out, W_out).sum(axis=2)

    grad_offset = np.stack([sum_over_offset_group(grad_samples * modulation * slope_y),
                            sum_over_offset_group(grad_samples * modulation * slope_x)], axis=3)
    grad_offset = grad_offset.reshape(offset.shape).astype(x.dtype)      # (N, G_off, K, 2, ...) -> offset's layout
    grad_mask = None
    if mask is not None:
        grad_mask = sum_over_offset_group(grad_samples * unmodulated).reshape(mask.shape).astype(x.dtype)
    return grad_x, grad_offset, grad_weight.astype(x.dtype), grad_mask


def _deform_modulated_samples(x, offset, mask, geometry, offset_groups):
    """mask * bilinear sample of every channel at every shifted tap: (N, C_in, K, H_out, W_out), x's dtype."""
    rows, cols, weights, _, modulation = _deform_samples(x, offset, mask, geometry, offset_groups)
    value = sum(weights[corner] * _neighbour_values(x, rows[corner], cols[corner])[0]
                for corner in range(len(_CORNERS)))
    return (modulation * value).astype(x.dtype)


def _deform_contract(samples, weight, geometry):
    """y[n, o] = sum over the group's channels c and taps k of weight[o, c, k] * samples[n, c, k]."""
    N, C_in, K, H_out, W_out = samples.shape
    C_out, C_in_per_group = weight.shape[:2]
    G = geometry.groups
    grouped = samples.reshape(N, G, C_in_per_group, K, H_out, W_out)
    w = weight.reshape(G, C_out // G, C_in_per_group, K)
    return np.einsum("gock,ngckhw->ngohw", w, grouped).reshape(N, C_out, H_out, W_out)


# ----------------------------------------------------------------------------------------------------
# Max unpooling
# ----------------------------------------------------------------------------------------------------
__all__ += ["max_unpool2d_forward", "max_unpool2d_backward"]


def max_unpool2d_forward(x, indices, output_size):
    """Max unpooling: ``y[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j]``, zeros elsewhere.

    Parameters
    ----------
    x : (N, C, H_in, W_in)
    indices : integer (N, C, H_in, W_in), flat positions ``h*W_out + w`` (max pooling's argmax)
    output_size : (H_out, W_out) or (N, C, H_out, W_out)

    Returns
    -------
    y : (N, C, H_out, W_out). A repeated index keeps the last value in row-major order (NumPy's
    fancy assignment does the same).
    """
    x = check_tensor(x, "x")
    N, C, H_in, W_in = x.shape
    H_out, W_out = unpool_output_size(output_size, (N, C))
    indices = check_flat_indices(indices, "indices", x.shape, "x", (H_out, W_out))
    y = np.zeros((N, C, H_out * W_out), dtype=x.dtype)                   # (N, C, H_out*W_out)
    n = np.arange(N)[:, None, None]
    c = np.arange(C)[None, :, None]
    y[n, c, indices.reshape(N, C, -1)] = x.reshape(N, C, -1)
    return y.reshape(N, C, H_out, W_out)


def max_unpool2d_backward(grad_out, indices):
    """Gradient of :func:`max_unpool2d_forward`: ``grad_x[n, c, i, j] = grad_out[n, c].flat[indices[n, c, i, j]]``.

    Parameters
    ----------
    grad_out : (N, C, H_out, W_out)
    indices : integer (N, C, H_in, W_in)

    Returns
    -------
    grad_x : (N, C, H_in, W_in)
    """
    grad_out, indices = check_unpool_backward_args(grad_out, indices)
    N, C = grad_out.shape[:2]
    n = np.arange(N)[:, None, None]
    c = np.arange(C)[None, :, None]
    grad_x = grad_out.reshape(N, C, -1)[n, c, indices.reshape(N, C, -1)]   # (N, C, H_in*W_in)
    return grad_x.reshape(indices.shape)
