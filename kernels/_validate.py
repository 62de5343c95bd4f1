"""Argument checking shared by every public kernel (and by the reference twins).

Public kernels validate and prepare in Python, then call a private ``@njit`` body. Everything a user
can get wrong is caught here and reported as a ``TypeError``/``ValueError`` that names the argument and
the shapes involved, so that no numba typing traceback (or silently wrong answer) ever reaches a user.

Conventions (PyTorch's):

* tensors are NCHW, ``float32`` or ``float64``;
* convolution weight ``(C_out, C_in // groups, kH, kW)``;
* transposed-convolution weight ``(C_in, C_out // groups, kH, kW)``;
* ``stride``, ``padding``, ``dilation`` (and ``output_padding``) are an int or an ``(h, w)`` pair.
"""
from dataclasses import dataclass
import numbers

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Largest integer hyper-parameter or size accepted (2**31 - 1). Every index the numba bodies compute is a
# product of two such numbers at most, so it stays far inside int64; a larger value (say 2**63) would
# otherwise reach numba and fail there with a TypingError or OverflowError instead of naming the argument.
MAX_INT_ARGUMENT = 2**31 - 1


def check_int_bound(value, name, original=None):
    """Raise ``ValueError`` naming ``name`` if the int ``value`` exceeds :data:`MAX_INT_ARGUMENT`."""
    if value > MAX_INT_ARGUMENT:
        shown = value if original is None else original
        raise ValueError(f"{name} must be at most 2**31 - 1 = {MAX_INT_ARGUMENT}; got {shown!r}")


def as_pair(value, name, minimum):
    """Return ``value`` as a pair of Python ints ``(h, w)``, each ``>= minimum``.

    ``value`` is an int or a length-2 tuple/list of ints (as in PyTorch).
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w); got {value!r} of length {len(value)}")
        pair = tuple(value)
    else:
        pair = (value, value)
    for item in pair:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name} must be an int or a pair of ints; got {value!r}")
    if min(pair) < minimum:
        kind = "non-negative" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    check_int_bound(max(pair), name, value)
    return int(pair[0]), int(pair[1])


def check_tensor(array, name, ndim=4):
    """Check that ``array`` is a float32/float64 ndarray with ``ndim`` dimensions.

    Returns a C-contiguous view or copy (the numba bodies index contiguous memory).
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(array).__name__}")
    if array.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64; got {array.dtype}")
    if array.ndim != ndim:
        layout = " (N, C, H, W)" if ndim == 4 and name != "weight" else ""
        raise ValueError(f"{name} must be {ndim}-D{layout}; got shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"{name} must not be empty; got shape {array.shape}")
    return np.ascontiguousarray(array)


def check_same_dtype(**arrays):
    """Raise ``TypeError`` unless all given (non-None) arrays share one dtype."""
    present = {name: a for name, a in arrays.items() if a is not None}
    dtypes = {a.dtype for a in present.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}: {a.dtype}" for name, a in present.items())
        raise TypeError(f"all arrays must share one dtype (cast explicitly); got {listing}")


def check_shape(shape, name):
    """Check a requested NCHW shape (``input_shape``/``weight_shape``): 4 positive ints; return it as a tuple
    of Python ints."""
    if type(shape) is not tuple or len(shape) != 4 or not _all_ints(shape):   # not already x.shape's kind
        try:
            listed = tuple(shape)
        except TypeError:
            raise TypeError(f"{name} must be a tuple of 4 ints; got {shape!r}") from None
        if len(listed) != 4 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in listed):
            raise TypeError(f"{name} must be a tuple of 4 ints; got {shape!r}")
        shape = tuple(int(s) for s in listed)
    if min(shape) < 1:
        raise ValueError(f"{name} must contain positive sizes; got {shape!r}")
    check_int_bound(max(shape), name, shape)
    return shape


def conv_output_size(size, kernel, stride, padding, dilation):
    """``floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1`` (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, dilation, output_padding):
    """``(size-1)*stride - 2*padding + dilation*(kernel-1) + output_padding + 1``."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


@dataclass(frozen=True)
class ConvGeometry:
    """Everything a convolution kernel needs to know about shapes, normalised to ints and pairs.

    For a transposed convolution ``input_shape`` is its input and ``output_shape`` its (larger) output,
    and ``weight_shape`` is ``(C_in, C_out // groups, kH, kW)``.
    """

    input_shape: tuple
    weight_shape: tuple
    output_shape: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    output_padding: tuple = (0, 0)

    @property
    def kernel_size(self):
        return self.weight_shape[2], self.weight_shape[3]


def _check_groups(groups):
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"groups must be an int; got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1; got {groups}")
    check_int_bound(groups, "groups")
    return int(groups)


#: the geometries :func:`conv_geometry` returned, by their arguments (only arguments made of plain ints:
#: see :func:`_plain_arguments`), at most :data:`MAX_REMEMBERED_GEOMETRIES` of them
_GEOMETRIES = {}
MAX_REMEMBERED_GEOMETRIES = 1024


def _all_ints(values):
    """True when every value is exactly an ``int`` (not a ``bool``, a NumPy integer or a ``float``)."""
    for value in values:
        if type(value) is not int:
            return False
    return True


def _plain_arguments(arguments):
    """True when every argument is an ``int``, a tuple of ``int`` (exactly: ``bool`` and ``float`` hash like
    the ints they equal but must be refused) or a ``str`` (the input's name): a key that :func:`conv_geometry`
    may look up."""
    for argument in arguments:
        kind = type(argument)
        if kind is tuple:
            if not _all_ints(argument):
                return False
        elif kind is not int and kind is not str:
            return False
    return True


def conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups, input_name="x"):
    """Validate a convolution's shapes and hyper-parameters; return its :class:`ConvGeometry`.

    ``input_shape`` ``(N, C_in, H, W)``, ``weight_shape`` ``(C_out, C_in // groups, kH, kW)``.

    Arguments made of plain ints were checked before if they were seen before: their geometry (immutable)
    is remembered and returned again. Checking costs ~9 us a call (three ``as_pair``, the dataclass), which
    was a third of a public kernel call on a small plane (``depthwise_conv2d_forward`` on (1, 576, 14, 14)
    ~26 us of Python around ~75 us of arithmetic, measured on a 2-core AMD EPYC); arguments that fail are
    never remembered, so every bad call raises.
    """
    arguments = (input_shape, weight_shape, stride, padding, dilation, groups, input_name)
    if _plain_arguments(arguments):
        geometry = _GEOMETRIES.get(arguments)
        if geometry is None:
            geometry = _checked_conv_geometry(*arguments)
            if len(_GEOMETRIES) >= MAX_REMEMBERED_GEOMETRIES:
                _GEOMETRIES.clear()
            _GEOMETRIES[arguments] = geometry
        return geometry
    return _checked_conv_geometry(*arguments)


def _checked_conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups, input_name):
    """:func:`conv_geometry`'s checks and result, computed."""
    stride = as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    dilation = as_pair(dilation, "dilation", 1)
    groups = _check_groups(groups)
    N, C_in, H, W = input_shape
    C_out, C_in_per_group, kH, kW = weight_shape
    if C_in % groups != 0:
        raise ValueError(f"groups={groups} must divide the input channels; {input_name} has shape {input_shape}")
    if C_out % groups != 0:
        raise ValueError(f"groups={groups} must divide the output channels; weight has shape {weight_shape}")
    if C_in_per_group * groups != C_in:
        raise ValueError(
            f"weight expects {C_in_per_group * groups} input channels ({C_in_per_group} per group x groups={groups}) "
            f"but {input_name} has shape {input_shape} ({C_in} channels); weight shape {weight_shape}")
    H_out = conv_output_size(H, kH, stride[0], padding[0], dilation[0])
    W_out = conv_output_size(W, kW, stride[1], padding[1], dilation[1])
    if H_out < 1 or W_out < 1:
        raise ValueError(
            f"output would be {H_out}x{W_out} (smaller than 1x1): {input_name} shape {input_shape}, weight shape "
            f"{weight_shape}, stride={stride}, padding={padding}, dilation={dilation}")
    return ConvGeometry(tuple(input_shape), tuple(weight_shape), (N, C_out, H_out, W_out),
                        stride, padding, dilation, groups)


def conv_transpose_geometry(input_shape, weight_shape, stride, padding, output_padding, groups, dilation,
                            input_name="x"):
    """Validate a transposed convolution; return its :class:`ConvGeometry`.

    ``input_shape`` ``(N, C_in, H, W)``, ``weight_shape`` ``(C_in, C_out // groups, kH, kW)``.
    ``output_padding`` must be smaller than ``stride`` or ``dilation`` (PyTorch's rule).
    """
    stride = as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    dilation = as_pair(dilation, "dilation", 1)
    output_padding = as_pair(output_padding, "output_padding", 0)
    groups = _check_groups(groups)
    N, C_in, H, W = input_shape
    C_in_w, C_out_per_group, kH, kW = weight_shape
    if C_in % groups != 0:
        raise ValueError(f"groups={groups} must divide the input channels; {input_name} has shape {input_shape}")
    if C_in_w != C_in:
        raise ValueError(
            f"transposed-convolution weight (C_in, C_out/groups, kH, kW) has shape {weight_shape}, "
            f"so it expects {C_in_w} input channels, but {input_name} has shape {input_shape}")
    for axis in range(2):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(
                f"output_padding={output_padding} must be smaller than stride={stride} or dilation={dilation}")
    H_out = conv_transpose_output_size(H, kH, stride[0], padding[0], dilation[0], output_padding[0])
    W_out = conv_transpose_output_size(W, kW, stride[1], padding[1], dilation[1], output_padding[1])
    if H_out < 1 or W_out < 1:
        raise ValueError(
            f"output would be {H_out}x{W_out} (smaller than 1x1): {input_name} shape {input_shape}, weight shape "
            f"{weight_shape}, stride={stride}, padding={padding}, dilation={dilation}")
    return ConvGeometry(tuple(input_shape), tuple(weight_shape), (N, C_out_per_group * groups, H_out, W_out),
                        stride, padding, dilation, groups, output_padding)


def check_depthwise_weight_shape(weight_shape, input_shape, input_name="x"):
    """Raise ``ValueError`` unless ``weight_shape`` is ``(C*multiplier, 1, kH, kW)`` for ``input_shape``'s C."""
    C = input_shape[1]
    if weight_shape[1] != 1 or weight_shape[0] % C != 0:
        raise ValueError(
            f"depthwise weight must have shape (C*multiplier, 1, kH, kW) with C={C} from {input_name} "
            f"shape {tuple(input_shape)}; got weight shape {tuple(weight_shape)}")


def check_bias(bias, channels, dtype):
    """Check an optional bias ``(channels,)`` of the given dtype; return it contiguous (or None)."""
    if bias is None:
        return None
    bias = check_tensor(bias, "bias", ndim=1)
    if bias.shape != (channels,):
        raise ValueError(f"bias must have shape ({channels},) (one per output channel); got {bias.shape}")
    check_same_dtype(x=np.empty(0, dtype), bias=bias)
    return bias


def check_grad_out(grad_out, expected_shape, dtype):
    """Check that ``grad_out`` has the forward output's shape and the input's dtype."""
    grad_out = check_tensor(grad_out, "grad_out")
    if grad_out.shape != tuple(expected_shape):
        raise ValueError(f"grad_out must have the forward output's shape {tuple(expected_shape)}; "
                         f"got {grad_out.shape}")
    if grad_out.dtype != dtype:
        raise TypeError(f"all arrays must share one dtype (cast explicitly); grad_out is {grad_out.dtype}, "
                        f"expected {np.dtype(dtype)}")
    return grad_out


def pool_geometry(input_shape, kernel_size, stride, padding, input_name="x"):
    """Validate a pooling window; return ``(kernel, stride, padding, output_shape)`` (pairs).

    ``stride=None`` means ``stride = kernel_size`` (PyTorch's default). As in PyTorch, padding may be at
    most half the window, so every window overlaps the real input.
    """
    kernel = as_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"padding={padding} must be at most half of kernel_size={kernel}")
    N, C, H, W = input_shape
    H_out = conv_output_size(H, kernel[0], stride[0], padding[0], 1)
    W_out = conv_output_size(W, kernel[1], stride[1], padding[1], 1)
    if H_out < 1 or W_out < 1:
        raise ValueError(f"output would be {H_out}x{W_out} (smaller than 1x1): {input_name} shape {input_shape}, "
                         f"kernel_size={kernel}, stride={stride}, padding={padding}")
    return kernel, stride, padding, (N, C, H_out, W_out)


# ----------------------------------------------------------------------------------------------------
# Deformable convolution (kernels/deformable.py and its reference twin)
# ----------------------------------------------------------------------------------------------------
def check_deform_conv_args(x, offset, weight, mask, stride, padding, dilation):
    """Validate :func:`kernels.deform_conv2d_forward`'s arguments (torchvision's ``deform_conv2d`` rules).

    Returns ``(geometry, offset_groups, x, offset, weight, mask)``: the :class:`ConvGeometry` (its
    ``groups`` is ``C_in // weight.shape[1]``), the number of offset groups
    ``offset.shape[1] // (2*kH*kW)``, and the arrays C-contiguous (``mask`` may stay ``None``).

    * x ``(N, C_in, H, W)``; weight ``(C_out, C_in/groups, kH, kW)``;
    * offset ``(N, 2*offset_groups*kH*kW, H_out, W_out)``, offset_groups dividing ``C_in``;
    * mask ``(N, offset_groups*kH*kW, H_out, W_out)`` or None; all four of one dtype.
    """
    x = check_tensor(x, "x")
    offset = check_tensor(offset, "offset")
    weight = check_tensor(weight, "weight")
    mask = None if mask is None else check_tensor(mask, "mask")
    check_same_dtype(x=x, offset=offset, weight=weight, mask=mask)
    N, C_in, H, W = x.shape
    C_out, C_in_per_group, kH, kW = weight.shape
    if C_in % C_in_per_group != 0:
        raise ValueError(f"weight (C_out, C_in/groups, kH, kW) has shape {weight.shape}: its {C_in_per_group} "
                         f"input channels per group must divide x's {C_in} channels (x shape {x.shape})")
    geometry = conv_geometry(x.shape, weight.shape, stride, padding, dilation, C_in // C_in_per_group)
    _, _, H_out, W_out = geometry.output_shape
    taps = kH * kW
    if offset.shape[1] % (2 * taps) != 0:
        raise ValueError(f"offset must have 2*offset_groups*kH*kW channels (a (dy, dx) pair per kernel tap; "
                         f"kernel {kH}x{kW}: a multiple of {2 * taps}); got offset shape {offset.shape}")
    offset_groups = offset.shape[1] // (2 * taps)
    expected = (N, 2 * offset_groups * taps, H_out, W_out)
    if offset.shape != expected:
        raise ValueError(f"offset must have shape (N, 2*offset_groups*kH*kW, H_out, W_out) = {expected} for x "
                         f"{x.shape} and weight {weight.shape}; got {offset.shape}")
    if C_in % offset_groups != 0:
        raise ValueError(f"offset_groups = offset.shape[1] // (2*kH*kW) = {offset_groups} must divide x's {C_in} "
                         f"channels; offset shape {offset.shape}, x shape {x.shape}")
    if mask is not None and mask.shape != (N, offset_groups * taps, H_out, W_out):
        raise ValueError(f"mask must have shape (N, offset_groups*kH*kW, H_out, W_out) = "
                         f"{(N, offset_groups * taps, H_out, W_out)} (offset_groups={offset_groups}); "
                         f"got {mask.shape}")
    return geometry, offset_groups, x, offset, weight, mask


# ----------------------------------------------------------------------------------------------------
# Max unpooling (kernels/pooling.py and its reference twin)
# ----------------------------------------------------------------------------------------------------
def unpool_output_size(output_size, leading):
    """``(H_out, W_out)`` from ``output_size``: 2 positive ints, or 4 whose first two equal ``leading`` (N, C)."""
    try:
        size = tuple(output_size)
    except TypeError:
        raise TypeError(f"output_size must be (H_out, W_out) or (N, C, H_out, W_out); got {output_size!r}") from None
    if len(size) == 4:
        if tuple(size[:2]) != tuple(leading):
            raise ValueError(f"output_size {size} must have x's (N, C) = {tuple(leading)} in front")
        size = size[2:]
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in size):
        raise TypeError(f"output_size must be (H_out, W_out) or (N, C, H_out, W_out) of ints; got {output_size!r}")
    if min(size) < 1:
        raise ValueError(f"output_size must be positive; got {output_size!r}")
    return int(size[0]), int(size[1])


def check_flat_indices(indices, name, expected_shape, shape_owner, plane_shape):
    """Check max pooling's ``argmax`` or max unpooling's ``indices``; return it C-contiguous int64.

    An integer ndarray of ``expected_shape`` (the shape of the array named ``shape_owner``) whose values
    are flat positions ``h*W + w`` inside planes of ``plane_shape = (H, W)``: each in ``[0, H*W)``.
    """
    if not isinstance(indices, np.ndarray) or not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"{name} must be an integer numpy.ndarray (as max_pool2d_forward returns its argmax); "
                        f"got {getattr(indices, 'dtype', type(indices).__name__)}")
    if indices.shape != tuple(expected_shape):
        raise ValueError(f"{name} must have {shape_owner}'s shape {tuple(expected_shape)}; got {indices.shape}")
    if indices.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {indices.shape}")
    H, W = plane_shape
    if indices.min() < 0 or indices.max() >= H * W:
        raise ValueError(f"{name} holds flat indices h*W + w, so must lie in [0, {H * W}) for planes of {H}x{W}; "
                         f"got values in [{indices.min()}, {indices.max()}]")
    return np.ascontiguousarray(indices, dtype=np.int64)


def check_unpool_backward_args(grad_out, indices):
    """Validate :func:`kernels.max_unpool2d_backward`'s ``grad_out`` (N, C, H_out, W_out) and ``indices``
    (N, C, H_in, W_in); return both C-contiguous (indices as int64)."""
    grad_out = check_tensor(grad_out, "grad_out")
    N, C, H_out, W_out = grad_out.shape
    if not isinstance(indices, np.ndarray) or indices.ndim != 4:
        raise ValueError(f"indices must be a 4-D integer numpy.ndarray (N, C, H_in, W_in); got "
                         f"{getattr(indices, 'shape', type(indices).__name__)}")
    if indices.shape[:2] != (N, C):
        raise ValueError(f"indices {indices.shape} and grad_out {grad_out.shape} must agree on (N, C)")
    return grad_out, check_flat_indices(indices, "indices", indices.shape, "x", (H_out, W_out))


def check_max_pool_backward(grad_out, argmax, input_shape, kernel_size, stride, padding):
    """Validate the arguments of ``max_pool2d_backward``; return ``(grad_out, argmax, input_shape)``.

    ``input_shape`` must be the forward input's shape: the window geometry applied to it must give
    ``grad_out``'s shape, and ``argmax`` (flat indices ``h*W + w``, shape of ``grad_out``) must point into
    an ``H x W`` plane. Without the geometry an ``input_shape`` larger than the forward input would pass
    and scatter every gradient into the wrong pixel (a different ``W`` re-reads ``h*W + w``).
    """
    input_shape = check_shape(input_shape, "input_shape")
    kernel, stride, padding, output_shape = pool_geometry(input_shape, kernel_size, stride, padding,
                                                          input_name="input_shape")
    grad_out = check_tensor(grad_out, "grad_out")
    if grad_out.shape != output_shape:
        raise ValueError(f"grad_out has shape {grad_out.shape}, but max pooling of input_shape {input_shape} "
                         f"with kernel_size={kernel_size!r}, stride={stride!r}, padding={padding!r} gives "
                         f"{output_shape}: input_shape must be the forward input's shape")
    argmax = check_flat_indices(argmax, "argmax", grad_out.shape, "grad_out", input_shape[2:])
    _check_argmax_inside_windows(argmax, input_shape, kernel, stride, padding)
    return grad_out, argmax, input_shape


def _check_argmax_inside_windows(argmax, input_shape, kernel, stride, padding):
    """Raise unless every ``argmax[n, c, i, j]``, read as ``(h, w) = divmod(index, W)``, lies in window (i, j).

    Output sizes round down, so a forward input one column wider (or narrower) can give the same
    ``grad_out`` shape; its ``W`` re-reads every index as another pixel, which then lies outside its window.
    """
    H_out, W_out = argmax.shape[2:]
    rows, cols = np.divmod(argmax, input_shape[3])                 # (N, C, H_out, W_out) each
    top = np.arange(H_out)[:, None] * stride[0] - padding[0]       # (H_out, 1): first row of window i
    left = np.arange(W_out) * stride[1] - padding[1]               # (W_out,): first column of window j
    inside = (rows >= top) & (rows < top + kernel[0]) & (cols >= left) & (cols < left + kernel[1])
    if not inside.all():
        n, c, i, j = np.argwhere(~inside)[0]
        raise ValueError(f"argmax[{n}, {c}, {i}, {j}] = {argmax[n, c, i, j]} is not inside its pooling window for "
                         f"input_shape {input_shape} (W = {input_shape[3]}): input_shape must be the forward input's "
                         f"shape and argmax the one max_pool2d_forward returned")
