"""Pointwise (1x1) convolution: mixing channels, pixel by pixel.

A 1x1 convolution looks at one pixel at a time and replaces its ``C_in`` channel values by ``C_out``
weighted sums of them. Flatten the pixels of one image into columns, ``x[n]`` -> ``(C_in, H*W)``, and
it is exactly one matrix product::

    y[n] = W @ x[n]          W: (C_out, C_in),  x[n]: (C_in, H*W),  y[n]: (C_out, H*W)

It is the "combine" half of MobileNet's depthwise-separable convolution (arXiv:1704.04861), the
expand and project layers of MobileNet V2's inverted residual (arXiv:1801.04381), and with
``groups > 1`` the grouped 1x1 convolution of ShuffleNet (arXiv:1707.01083). In MobileNet V1 it holds
about 95% of the multiply-adds (paper, Table 2), so it is where speed matters most.

Cost: ``C_in/groups * C_out * H * W`` MACs per image.

Because it *is* a matrix product, the work is handed to NumPy's BLAS, one product per image and group,
written into preallocated outputs (no temporary copy of the activations), spread over numba's threads
by :func:`kernels._gemm.batched_matmul`. Measured here on (8,144,56,56)->24:
BLAS forward+backward ~8.5 ms against PyTorch's ~11-25 ms (``tinycnn bench kernels``).
"""
import numpy as np

from ._gemm import batched_matmul, prepare_matmul_per_image
from ._jit import serial_blas
from ._validate import check_bias, check_grad_out, check_same_dtype, check_shape, check_tensor, conv_geometry
from .batchnorm import finish_channels


def _pointwise_geometry(input_shape, weight_shape, groups, input_name="x"):
    if weight_shape[2:] != (1, 1):
        raise ValueError(f"pointwise weight must have shape (C_out, C_in/groups, 1, 1); got {tuple(weight_shape)}")
    return conv_geometry(input_shape, weight_shape, 1, 0, 1, groups, input_name=input_name)


def _grouped_weight(weight, groups):
    """View ``(C_out, C_in/groups, 1, 1)`` as ``(groups, C_out/groups, C_in/groups)``."""
    C_out, C_in_per_group = weight.shape[:2]
    return weight.reshape(groups, C_out // groups, C_in_per_group)


@serial_blas
def pointwise_conv2d_forward(x, weight, bias=None, groups=1):
    """1x1 convolution (stride 1, no padding): per-pixel channel mixing, one GEMM per image and group.

    Parameters
    ----------
    x : ndarray (N, C_in, H, W), float32 or float64
    weight : ndarray (C_out, C_in/groups, 1, 1)
    bias : ndarray (C_out,) or None
    groups : int, splits channels into independent groups (ShuffleNet's grouped 1x1 convolution)

    Returns
    -------
    y : ndarray (N, C_out, H, W)::

        y[n, o, h, w] = bias[o] + sum_i weight[o, i] * x[n, g*C_in/groups + i, h, w],  g = o // (C_out/groups)

    Cost: ``C_in/groups * C_out * H * W`` MACs per image.
    """
    x = check_tensor(x, "x")
    weight = check_tensor(weight, "weight")
    check_same_dtype(x=x, weight=weight)
    geometry = _pointwise_geometry(x.shape, weight.shape, groups)
    bias = check_bias(bias, weight.shape[0], x.dtype)
    return _forward(x, weight, bias, geometry)


@serial_blas
def pointwise_conv2d_backward_input(grad_out, weight, input_shape, groups=1):
    """Gradient of :func:`pointwise_conv2d_forward` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray (N, C_out, H, W)
    weight : ndarray (C_out, C_in/groups, 1, 1)
    input_shape : tuple (N, C_in, H, W)

    Returns
    -------
    grad_x : ndarray (N, C_in, H, W), ``grad_x[n] = W^T @ grad_out[n]`` per group.
    """
    weight = check_tensor(weight, "weight")
    input_shape = check_shape(input_shape, "input_shape")
    geometry = _pointwise_geometry(input_shape, weight.shape, groups, "input_shape")
    grad_out = check_grad_out(grad_out, geometry.output_shape, weight.dtype)
    return _backward_input(grad_out, weight, geometry)


@serial_blas
def pointwise_conv2d_backward_weight(grad_out, x, weight_shape, groups=1):
    """Gradient of :func:`pointwise_conv2d_forward` with respect to its weight.

    Parameters
    ----------
    grad_out : ndarray (N, C_out, H, W)
    x : ndarray (N, C_in, H, W)
    weight_shape : tuple (C_out, C_in/groups, 1, 1)

    Returns
    -------
    grad_weight : ndarray (C_out, C_in/groups, 1, 1), ``sum_n grad_out[n] @ x[n]^T`` per group.

    The sum over images is itself a matrix product once the images' pixels are laid side by side:
    ``[gy_1 ... gy_N] @ [x_1 ... x_N]^T``. Maps of at least ``_GEMM_COLUMNS`` pixels take one product
    per image (called from numba's threads, a call costs ~1 us), added in image order. On 1 x 1 maps the
    images already lie side by side (the arrays are read as (C, N) views); 2 x 2 and 3 x 3 maps are
    copied side by side first (one copy of ``grad_out`` and ``x``, small at those sizes). A MobileNet
    trained on 32 x 32 images meets every one of these sizes. Either way the result does not depend on
    the number of threads.
    """
    x = check_tensor(x, "x")
    weight_shape = check_shape(weight_shape, "weight_shape")
    geometry = _pointwise_geometry(x.shape, weight_shape, groups)
    grad_out = check_grad_out(grad_out, geometry.output_shape, x.dtype)
    return _backward_weight(grad_out, x, geometry)


# ----------------------------------------------------------------------------------------------------
# Private twins (arguments already validated; ``conv2d`` dispatches here). The callers hold
# :func:`~kernels._jit.serial_blas`, so BLAS runs on one thread and the products run on numba's threads
# (:func:`kernels._gemm.batched_matmul`).
# ----------------------------------------------------------------------------------------------------
def _side_by_side(array, groups):
    """Copy ``(N, C, H, W)`` into ``(groups, C/groups, N*H*W)``: every image's pixels in one row per channel."""
    N, C, H, W = array.shape
    side = np.empty((C, N, H * W), dtype=array.dtype)
    side[...] = array.reshape(N, C, H * W).transpose(1, 0, 2)
    return side.reshape(groups, C // groups, N * H * W)


def _per_image_matrices(array, groups):
    """View ``(N, C, H, W)`` (C-contiguous) as ``(N*groups, C/groups, H*W)``: one matrix per image and group."""
    N, C, H, W = array.shape
    return array.reshape(N * groups, C // groups, H * W)


def _matmul_per_image(weight_matrices, array, out, epilogue=None):
    """``out[n, g] = weight_matrices[g] @ array[n, g]``: (G, Co/G, Ci/G) @ (N, G, Ci/G, HW) -> (N, G, Co/G, HW).

    One matrix product per image and group, written straight into ``out``, and finished with
    ``epilogue`` (see :func:`kernels._gemm.batched_matmul`). On 1 x 1 maps those would be N
    matrix-vector products; there the images are the rows instead, ``out[:, g] = array[:, g] @
    weight_matrices[g]^T``, one (N, Ci/G) @ (Ci/G, Co/G) product per group read straight from the
    arrays (no copy). Measured on a 2-core AMD EPYC, batch 64, (160 -> 1280) on 1 x 1 maps: 1.0 ms as
    N matrix-vector products, 0.35-0.43 ms as one product.
    """
    groups, C_out_g, C_in_g = weight_matrices.shape
    N, _, H, W = out.shape
    array = np.ascontiguousarray(array)
    if H * W > 1:
        batched_matmul(weight_matrices, _per_image_matrices(array, groups), _per_image_matrices(out, groups),
                       epilogue)
        return
    images_as_rows = array.reshape(N, groups, C_in_g).transpose(1, 0, 2)            # (G, N, Ci/G) view
    out_rows = out.reshape(N, groups, C_out_g).transpose(1, 0, 2)                   # (G, N, Co/G) view
    batched_matmul(images_as_rows, weight_matrices.transpose(0, 2, 1), out_rows)
    finish_channels(out, epilogue)


def _forward(x, weight, bias, geometry, epilogue=None):
    """:func:`pointwise_conv2d_forward` on checked arguments; ``epilogue`` as :func:`kernels.conv2d._forward`'s."""
    y = np.empty(geometry.output_shape, dtype=x.dtype)
    weight_matrices = _grouped_weight(weight, geometry.groups)
    if bias is None:
        _matmul_per_image(weight_matrices, x, y, epilogue)                # y[n] = W @ x[n] per group, finished
        return y
    _matmul_per_image(weight_matrices, x, y)                              # y[n] = W @ x[n] per group
    y += bias[None, :, None, None]
    return finish_channels(y, epilogue)


def prepare_forward(weight, geometry, epilogue=None):
    """The forward of a bias-free pointwise convolution with fixed ``weight`` and input shape, prepared once.

    Parameters
    ----------
    weight : ndarray (C_out, C_in/groups, 1, 1), C-contiguous
    geometry : the convolution's geometry for the input shape (N, C_in, H, W)
    epilogue : as :func:`kernels.conv2d._forward`'s, or None

    Returns
    -------
    forward : callable ``forward(x) -> y`` for a C-contiguous ``x`` (N, C_in, H, W) of ``weight``'s dtype,
        ``y`` (N, C_out, H, W) the same bits as ``_forward(x, weight, None, geometry, epilogue)``; or None
        where that path is not one blocked product per image and group (1 x 1 maps, a single
        matrix-vector product, no CBLAS).

    Used by ``tinycnn.nn.freeze``: ``y[n] = W @ x[n]`` per group through
    :func:`kernels._gemm.prepare_matmul_per_image`, without re-deciding anything on each call.
    """
    N, _, H, W = geometry.input_shape
    groups = geometry.groups
    weight_matrices = _grouped_weight(weight, groups)                  # (G, Co/G, Ci/G)
    run = None if H * W == 1 else prepare_matmul_per_image(weight_matrices, N * groups, H * W, epilogue)
    if run is None:
        return None
    output_shape, dtype = geometry.output_shape, weight.dtype

    def forward(x):
        y = np.empty(output_shape, dtype=dtype)
        run(_per_image_matrices(x, groups), _per_image_matrices(y, groups))    # y[n, g] = W[g] @ x[n, g]
        return y

    return forward


def _backward_input(grad_out, weight, geometry):
    grad_x = np.empty(geometry.input_shape, dtype=weight.dtype)
    # grad_x[n] = W^T @ grad_out[n] per group: (G, Ci/G, Co/G) @ (N, G, Co/G, HW) -> (N, G, Ci/G, HW)
    _matmul_per_image(_grouped_weight(weight, geometry.groups).transpose(0, 2, 1), grad_out, grad_x)
    return grad_x


def _backward_weight(grad_out, x, geometry):
    groups = geometry.groups
    N, _, H, W = x.shape
    grad_weight = np.empty(geometry.weight_shape, dtype=x.dtype)
    total = _grouped_weight(grad_weight, groups)                    # (G, Co/G, Ci/G) view
    grad_out, x = np.ascontiguousarray(grad_out), np.ascontiguousarray(x)
    if H * W >= _GEMM_COLUMNS:
        # one (Co/G, HW) @ (HW, Ci/G) product per image and group, summed image after image
        gy = _per_image_matrices(grad_out, groups)                             # (N*G, Co/G, HW)
        xs = _per_image_matrices(x, groups).transpose(0, 2, 1)                 # (N*G, HW, Ci/G)
        batched_matmul(gy, xs, total)
    elif H * W == 1:
        # 1 x 1 maps: the images are already side by side, (Co/G, N) @ (N, Ci/G) per group, read as views
        gy = grad_out.reshape(N, groups, -1).transpose(1, 2, 0)               # (G, Co/G, N)
        xs = x.reshape(N, groups, -1).transpose(1, 0, 2)                      # (G, N, Ci/G)
        batched_matmul(gy, xs, total)
    else:
        # tiny maps: all images' pixels side by side, one (Co/G, N*HW) @ (N*HW, Ci/G) product per group
        batched_matmul(_side_by_side(grad_out, groups), _side_by_side(x, groups).transpose(0, 2, 1), total)
    return grad_weight


#: pixels per image from which the weight gradient takes one matrix product per image (called from
#: numba's threads, the products cost little per call); 2 x 2 maps lay all the images side by side first
#: (see pointwise_conv2d_backward_weight). Measured on a 2-core AMD EPYC, MobileNet V2 shapes at batch
#: 64: per image 0.81 vs side by side 1.19 ms on 8 x 8 maps, 0.23 vs 0.25 ms on 4 x 4, 0.30 vs 0.37 ms
#: on 2 x 2, but 1.2 vs 0.26 ms on 1 x 1 (where no copy is needed at all).
_GEMM_COLUMNS = 4
