"""Exercises on convolutions: output size, depthwise forward and backward, pointwise, transposed, unpooling,
bilinear up-sampling.

Each exercise: a model ``solution`` written with loops (as in the notebook), the ``reference`` from
``kernels.reference`` (up-sampling: ``tinycnn.nn.Upsample``), cases and the catalogue of usual mistakes
(mutants). See :mod:`.checker`.
"""
import numpy as np

from kernels import reference
from kernels._validate import conv_output_size as kernel_output_size   # what the kernels allocate

from .. import nn
from .checker import FLOAT_DTYPES, Exercise, Mistake, register

TOPIC = "convolutions"


# ------------------------------------------------------------------------------------------ helpers
def _pad(x, padding):
    """Zero-pad the two spatial axes of (N, C, H, W) by ``padding`` on every side."""
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def _hand_checkable(shape, dtype=np.float64):
    """Small integers (-2..2) in a fixed pattern: a case a student can redo on paper."""
    return (np.arange(int(np.prod(shape))).reshape(shape) % 5 - 2).astype(dtype)


def _random_geometry(rng, max_size=9, max_kernel=5):
    """(H, W, kernel, stride, padding) with a non-empty output; padding up to kernel - 1."""
    while True:
        H, W = rng.integers(1, max_size + 1, size=2)
        kernel = int(rng.integers(1, max_kernel + 1))
        stride = int(rng.integers(1, 4))
        padding = int(rng.integers(0, kernel))
        if H + 2 * padding >= kernel and W + 2 * padding >= kernel:
            return int(H), int(W), kernel, stride, padding


# --------------------------------------------------------------------------------- conv_output_size
def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution along one axis: ``floor((size + 2p - d(k-1) - 1) / s) + 1``."""
    effective_kernel = dilation * (kernel - 1) + 1          # a dilated kernel spans d(k-1)+1 pixels
    return (size + 2 * padding - effective_kernel) // stride + 1


def _conv_output_size_cases(rng):
    cases = [dict(size=5, kernel=3), dict(size=7, kernel=3, stride=2), dict(size=7, kernel=3, stride=2, padding=1),
             dict(size=8, kernel=3, stride=2, padding=1), dict(size=5, kernel=3, stride=1, padding=0, dilation=2),
             dict(size=1, kernel=1), dict(size=2, kernel=5, stride=1, padding=2),
             dict(size=224, kernel=3, stride=2, padding=1), dict(size=10, kernel=3, stride=3, padding=0, dilation=2)]
    while len(cases) < 25:
        size, kernel = int(rng.integers(1, 65)), int(rng.integers(1, 8))
        stride, padding, dilation = int(rng.integers(1, 5)), int(rng.integers(0, 4)), int(rng.integers(1, 4))
        if size + 2 * padding >= dilation * (kernel - 1) + 1:
            cases.append(dict(size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation))
    return cases


register(Exercise(
    name="conv_output_size", topic=TOPIC,
    statement="output length of a convolution with stride, padding and dilation",
    signature="conv_output_size(size, kernel, stride=1, padding=0, dilation=1) -> int",
    reference=lambda size, kernel, stride=1, padding=0, dilation=1: kernel_output_size(size, kernel, stride, padding,
                                                                                       dilation),
    solution=conv_output_size, make_cases=_conv_output_size_cases, output_name="size_out",
    mistakes=(
        Mistake("you used true division '/': the output size is an int, floor((size + 2p - d(k-1) - 1) / s) + 1, "
                "so divide with '//'",
                lambda size, kernel, stride=1, padding=0, dilation=1:
                (size + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1),
        Mistake("you forgot the stride: divide (size + 2p - d(k-1) - 1) by s before adding 1",
                lambda size, kernel, stride=1, padding=0, dilation=1:
                size + 2 * padding - dilation * (kernel - 1) - 1 + 1),
        Mistake("you padded one side only: the padding p is added on both sides, 2p",
                lambda size, kernel, stride=1, padding=0, dilation=1:
                (size + padding - dilation * (kernel - 1) - 1) // stride + 1),
        Mistake("you forgot the dilation: a kernel of k taps with dilation d spans d(k-1)+1 pixels",
                lambda size, kernel, stride=1, padding=0, dilation=1: (size + 2 * padding - kernel) // stride + 1),
        Mistake("you took the dilated kernel's span as d*k; it is d(k-1)+1",
                lambda size, kernel, stride=1, padding=0, dilation=1:
                (size + 2 * padding - dilation * kernel) // stride + 1),
        Mistake("you rounded up: a window that does not fit entirely is dropped, so round down (floor)",
                lambda size, kernel, stride=1, padding=0, dilation=1:
                -(-(size + 2 * padding - dilation * (kernel - 1) - 1) // stride) + 1),
        Mistake("you forgot the '+ 1': the first window is already one output",
                lambda size, kernel, stride=1, padding=0, dilation=1:
                (size + 2 * padding - dilation * (kernel - 1) - 1) // stride),
    )))


# ---------------------------------------------------------------------------------- depthwise forward
def depthwise_forward(x, weight, stride=1, padding=0):
    """Depthwise convolution as loops: channel c of x is cross-correlated with its own kernel weight[c, 0]."""
    N, C, H, W = x.shape
    _, _, kH, kW = weight.shape                               # weight: (C, 1, kH, kW)
    H_out = (H + 2 * padding - kH) // stride + 1
    W_out = (W + 2 * padding - kW) // stride + 1
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))   # (N, C, H + 2p, W + 2p)
    y = np.zeros((N, C, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for c in range(C):                                    # no sum over channels: that is depthwise
            for i in range(H_out):
                for j in range(W_out):
                    window = x_pad[n, c, i * stride:i * stride + kH, j * stride:j * stride + kW]
                    y[n, c, i, j] = np.sum(window * weight[c, 0])
    return y


def _depthwise_cases(rng):
    """Tiny integer cases first (the second with stride 2 and padding 1), then random ones."""
    cases = [dict(x=_hand_checkable((1, 2, 4, 4)), weight=_hand_checkable((2, 1, 3, 3)) + 1, stride=1, padding=0),
             dict(x=_hand_checkable((2, 3, 5, 6)), weight=_hand_checkable((3, 1, 3, 3)) - 1, stride=2, padding=1),
             dict(x=_hand_checkable((1, 2, 1, 1)), weight=_hand_checkable((2, 1, 3, 3)), stride=1, padding=1),
             dict(x=_hand_checkable((1, 1, 2, 3), np.float32), weight=_hand_checkable((1, 1, 5, 5), np.float32),
                  stride=1, padding=2)]
    for _ in range(8):
        H, W, kernel, stride, padding = _random_geometry(rng)
        N, C = int(rng.integers(1, 3)), int(rng.integers(1, 5))
        dtype = FLOAT_DTYPES[int(rng.integers(2))]
        cases.append(dict(x=rng.standard_normal((N, C, H, W)).astype(dtype),
                          weight=rng.standard_normal((C, 1, kernel, kernel)).astype(dtype),
                          stride=stride, padding=padding))
    return cases


def _depthwise_reference(x, weight, stride=1, padding=0):
    return reference.depthwise_conv2d_forward(x, weight, None, stride, padding)


def _depthwise_windows_not_strided(x, weight, stride=1, padding=0):
    """Output size for stride s, but window (i, j) read at (i, j) instead of (i*s, j*s)."""
    H_out, W_out = _depthwise_reference(x, weight, stride, padding).shape[2:]
    return _depthwise_reference(x, weight, 1, padding)[:, :, :H_out, :W_out]


def _depthwise_summed_over_channels(x, weight, stride=1, padding=0):
    """Every output channel sums the correlations of all input channels (a standard conv's sum)."""
    C = x.shape[1]
    return reference.conv2d_forward(x, np.repeat(weight, C, axis=1), None, stride, padding)


register(Exercise(
    name="depthwise_forward", topic=TOPIC,
    statement="depthwise convolution forward as loops (one kernel per channel, no bias)",
    signature="depthwise_forward(x, weight, stride=1, padding=0) -> y   # x (N, C, H, W), weight (C, 1, kH, kW)",
    reference=_depthwise_reference, solution=depthwise_forward, make_cases=_depthwise_cases, output_name="y",
    mistakes=(
        Mistake("your output is what convolution with a flipped kernel gives: CNN layers compute "
                "cross-correlation, y[i, j] = sum x[i*s + a, j*s + b] * w[a, b], without flipping w",
                lambda x, weight, stride=1, padding=0: _depthwise_reference(x, weight[:, :, ::-1, ::-1], stride,
                                                                            padding)),
        Mistake("your output is what summing over the input channels gives: in a depthwise convolution output "
                "channel c only sees input channel c",
                _depthwise_summed_over_channels),
        Mistake("your output is the stride-1 result: you forgot the stride (output size and window start i*s)",
                lambda x, weight, stride=1, padding=0: _depthwise_reference(x, weight, 1, padding)),
        Mistake("your windows start at (i, j) instead of (i*stride, j*stride): the output size is right but "
                "the window must move by the stride",
                _depthwise_windows_not_strided),
        Mistake("your output is the unpadded result: you forgot the padding (p zeros on each side)",
                lambda x, weight, stride=1, padding=0: _depthwise_reference(x, weight, stride, 0)),
        Mistake("your padding is off by one: you padded p + 1 zeros on each side instead of p",
                lambda x, weight, stride=1, padding=0: _depthwise_reference(x, weight, stride, padding + 1)),
    )))


# ---------------------------------------------------------------------------- depthwise backward input
def depthwise_backward_input(grad_out, weight, input_shape, stride=1, padding=0):
    """Input gradient of :func:`depthwise_forward`: scatter each grad_out value back through its window."""
    N, C, H, W = input_shape
    _, _, H_out, W_out = grad_out.shape
    _, _, kH, kW = weight.shape
    grad_x_pad = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=grad_out.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):      # y[n,c,i,j] used x_pad[n,c,i*s+a,j*s+b] with weight w[c,0,a,b]
                    grad_x_pad[n, c, i * stride:i * stride + kH, j * stride:j * stride + kW] += \
                        grad_out[n, c, i, j] * weight[c, 0]
    return grad_x_pad[:, :, padding:padding + H, padding:padding + W]     # the padding has no gradient


def _scatter_back(grad_out, weight, input_shape, stride, padding, step, crop_top_left=False):
    """:func:`depthwise_backward_input` with the windows moved by ``step`` (a mistake when step != stride)."""
    N, C, H, W = input_shape
    _, _, H_out, W_out = grad_out.shape
    _, _, kH, kW = weight.shape
    rows = max(H + 2 * padding, (H_out - 1) * step + kH)
    cols = max(W + 2 * padding, (W_out - 1) * step + kW)
    grad_x_pad = np.zeros((N, C, rows, cols), dtype=grad_out.dtype)
    for i in range(H_out):
        for j in range(W_out):
            grad_x_pad[:, :, i * step:i * step + kH, j * step:j * step + kW] += \
                grad_out[:, :, i, j, None, None] * weight[None, :, 0]
    start = 0 if crop_top_left else padding
    return grad_x_pad[:, :, start:start + H, start:start + W]


def _backward_input_cases(rng):
    cases = []
    for forward_case in _depthwise_cases(rng):
        x, weight, stride, padding = forward_case.values()
        y_shape = reference.depthwise_conv2d_forward(x, weight, None, stride, padding).shape
        grad_out = (_hand_checkable(y_shape, x.dtype) if len(cases) < 2 else
                    rng.standard_normal(y_shape).astype(x.dtype))
        cases.append(dict(grad_out=grad_out, weight=weight, input_shape=x.shape, stride=stride, padding=padding))
    return cases


register(Exercise(
    name="depthwise_backward_input", topic=TOPIC,
    statement="gradient of the depthwise convolution with respect to its input",
    signature="depthwise_backward_input(grad_out, weight, input_shape, stride=1, padding=0) -> grad_x",
    reference=lambda grad_out, weight, input_shape, stride=1, padding=0:
        reference.depthwise_conv2d_backward_input(grad_out, weight, input_shape, stride, padding),
    solution=depthwise_backward_input, make_cases=_backward_input_cases, output_name="grad_x",
    mistakes=(
        Mistake("your gradient uses the kernel rotated by 180 degrees: scatter grad_out[i, j] * w back onto the "
                "window it came from (equivalently: a 'full' correlation with the flipped kernel), not with "
                "the flip undone twice",
                lambda grad_out, weight, input_shape, stride=1, padding=0:
                reference.depthwise_conv2d_backward_input(grad_out, weight[:, :, ::-1, ::-1], input_shape,
                                                          stride, padding)),
        Mistake("your gradient sums over channels: input channel c only received gradient from output channel c",
                lambda grad_out, weight, input_shape, stride=1, padding=0:
                reference.conv2d_backward_input(grad_out, np.repeat(weight, input_shape[1], axis=1), input_shape,
                                                stride, padding)),
        Mistake("you moved the windows by 1 instead of the stride: output (i, j) came from the window at "
                "(i*stride, j*stride)",
                lambda grad_out, weight, input_shape, stride=1, padding=0:
                _scatter_back(grad_out, weight, input_shape, stride, padding, step=1)),
        Mistake("you cut the padding off at the wrong place: drop p rows/columns on *each* side of the padded "
                "gradient, grad_x_pad[:, :, p:p+H, p:p+W]",
                lambda grad_out, weight, input_shape, stride=1, padding=0:
                _scatter_back(grad_out, weight, input_shape, stride, padding, step=stride, crop_top_left=True)),
    )))


# --------------------------------------------------------------------------- depthwise backward weight
def depthwise_backward_weight(grad_out, x, weight_shape, stride=1, padding=0):
    """Weight gradient of :func:`depthwise_forward`: each tap sums grad_out times the pixels it saw."""
    N, C, H, W = x.shape
    _, _, H_out, W_out = grad_out.shape
    _, _, kH, kW = weight_shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))   # (N, C, H + 2p, W + 2p)
    grad_w = np.zeros(weight_shape, dtype=x.dtype)
    for n in range(N):                        # every image of the batch adds to the same kernels
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    grad_w[c, 0] += grad_out[n, c, i, j] * x_pad[n, c, i * stride:i * stride + kH,
                                                                  j * stride:j * stride + kW]
    return grad_w


def _weight_not_strided(grad_out, x, weight_shape, stride=1, padding=0):
    """Windows read at (i, j) instead of (i*s, j*s)."""
    _, _, kH, kW = weight_shape
    _, _, H_out, W_out = grad_out.shape
    x_pad = _pad(x, padding)
    grad_w = np.zeros(weight_shape, dtype=x.dtype)
    for a in range(kH):
        for b in range(kW):
            patch = x_pad[:, :, a:a + H_out, b:b + W_out]
            if patch.shape[2:] != (H_out, W_out):
                raise IndexError("window outside the padded input")
            grad_w[:, 0, a, b] = np.sum(grad_out * patch, axis=(0, 2, 3))
    return grad_w


def _backward_weight_cases(rng):
    cases = []
    for forward_case in _depthwise_cases(rng):
        x, weight, stride, padding = forward_case.values()
        if len(cases) == 0:
            x = np.concatenate([x, x[:, ::-1] * 2 + 1])          # two images: the batch sum matters
        y_shape = reference.depthwise_conv2d_forward(x, weight, None, stride, padding).shape
        grad_out = (_hand_checkable(y_shape, x.dtype) - 1 if len(cases) < 2 else
                    rng.standard_normal(y_shape).astype(x.dtype))
        cases.append(dict(grad_out=grad_out, x=x, weight_shape=weight.shape, stride=stride, padding=padding))
    return cases


def _weight_reference(grad_out, x, weight_shape, stride=1, padding=0):
    return reference.depthwise_conv2d_backward_weight(grad_out, x, weight_shape, stride, padding)


register(Exercise(
    name="depthwise_backward_weight", topic=TOPIC,
    statement="gradient of the depthwise convolution with respect to its weight",
    signature="depthwise_backward_weight(grad_out, x, weight_shape, stride=1, padding=0) -> grad_w",
    reference=_weight_reference, solution=depthwise_backward_weight, make_cases=_backward_weight_cases,
    output_name="grad_w",
    mistakes=(
        Mistake("your gradient only has the first image: the kernels are shared by the whole batch, so sum over n",
                lambda grad_out, x, weight_shape, stride=1, padding=0:
                _weight_reference(grad_out[:1], x[:1], weight_shape, stride, padding)),
        Mistake("you averaged over the batch: the loss's gradient sums over the images (any 1/N is already in "
                "grad_out)",
                lambda grad_out, x, weight_shape, stride=1, padding=0:
                _weight_reference(grad_out, x, weight_shape, stride, padding) / x.shape[0]),
        Mistake("your kernel gradient is flipped: tap (a, b) multiplied x_pad[i*s + a, j*s + b], so its gradient "
                "sums grad_out[i, j] * x_pad[i*s + a, j*s + b] without rotating",
                lambda grad_out, x, weight_shape, stride=1, padding=0:
                _weight_reference(grad_out, x, weight_shape, stride, padding)[:, :, ::-1, ::-1]),
        Mistake("you moved the windows by 1 instead of the stride: output (i, j) saw the window at "
                "(i*stride, j*stride)",
                _weight_not_strided),
    )))


# ----------------------------------------------------------------------------------------- pointwise
def pointwise_forward(x, weight, bias=None):
    """1x1 convolution as one matrix product per image: Y = W X + b with X of shape (C_in, H*W)."""
    N, C_in, H, W = x.shape
    C_out = weight.shape[0]                                    # weight: (C_out, C_in, 1, 1)
    pixels = x.reshape(N, C_in, H * W)                         # each column: one pixel's channel vector
    y = weight.reshape(C_out, C_in) @ pixels                   # (C_out, C_in) @ (N, C_in, H*W) -> (N, C_out, H*W)
    if bias is not None:
        y = y + bias[:, None]                                  # one bias per output channel
    return y.reshape(N, C_out, H, W)


def _pointwise_reshaped_without_transpose(x, weight, bias=None):
    """(N, C, H, W) reshaped to (N, H*W, C) directly, which mixes pixels and channels."""
    N, C_in, H, W = x.shape
    C_out = weight.shape[0]
    y = x.reshape(N, H * W, C_in) @ weight.reshape(C_out, C_in).T        # (N, H*W, C_out)
    if bias is not None:
        y = y + bias
    return y.reshape(N, C_out, H, W)


def _pointwise_cases(rng):
    cases = [dict(x=_hand_checkable((1, 3, 2, 2)), weight=_hand_checkable((3, 3, 1, 1)) + 1,
                  bias=np.array([1.0, -2.0, 0.5])),
             dict(x=_hand_checkable((2, 2, 3, 1)), weight=_hand_checkable((4, 2, 1, 1)), bias=None)]
    for _ in range(6):
        N, C_in, C_out, H, W = (int(v) for v in rng.integers(1, 7, size=5))
        dtype = FLOAT_DTYPES[int(rng.integers(2))]
        bias = rng.standard_normal(C_out).astype(dtype) if rng.random() < 0.7 else None
        cases.append(dict(x=rng.standard_normal((N, C_in, H, W)).astype(dtype),
                          weight=rng.standard_normal((C_out, C_in, 1, 1)).astype(dtype), bias=bias))
    return cases


register(Exercise(
    name="pointwise_forward", topic=TOPIC,
    statement="pointwise (1x1) convolution as a matrix product, with optional bias",
    signature="pointwise_forward(x, weight, bias=None) -> y   # weight (C_out, C_in, 1, 1), bias (C_out,) or None",
    reference=lambda x, weight, bias=None: reference.pointwise_conv2d_forward(x, weight, bias),
    solution=pointwise_forward, make_cases=_pointwise_cases, output_name="y",
    mistakes=(
        Mistake("you forgot the bias: add bias[o] to every pixel of output channel o",
                lambda x, weight, bias=None: reference.pointwise_conv2d_forward(x, weight, None)),
        Mistake("you multiplied by the transposed weight: y[o] = sum_i W[o, i] x[i], so use W (C_out, C_in) as is",
                lambda x, weight, bias=None:
                reference.pointwise_conv2d_forward(x, weight.transpose(1, 0, 2, 3), bias)),
        Mistake("you reshaped (N, C, H, W) straight to (N, H*W, C): that mixes pixels with channels; reshape to "
                "(N, C, H*W) (or move the channel axis last with transpose first)",
                _pointwise_reshaped_without_transpose),
    )))


def pointwise_backward_input(grad_out, weight):
    """Input gradient of :func:`pointwise_forward`: grad_X = W^T grad_Y per image."""
    N, C_out, H, W = grad_out.shape
    C_in = weight.shape[1]
    grad_x = weight.reshape(C_out, C_in).T @ grad_out.reshape(N, C_out, H * W)    # -> (N, C_in, H*W)
    return grad_x.reshape(N, C_in, H, W)


def _pointwise_backward_cases(rng):
    cases = []
    for forward_case in _pointwise_cases(rng):
        x, weight = forward_case["x"], forward_case["weight"]
        grad_shape = (x.shape[0], weight.shape[0]) + x.shape[2:]
        grad_out = _hand_checkable(grad_shape, x.dtype) if not cases else rng.standard_normal(grad_shape).astype(
            x.dtype)
        cases.append(dict(grad_out=grad_out, weight=weight))
    return cases


register(Exercise(
    name="pointwise_backward_input", topic=TOPIC,
    statement="input gradient of the pointwise convolution (W^T times grad_out)",
    signature="pointwise_backward_input(grad_out, weight) -> grad_x   # weight (C_out, C_in, 1, 1)",
    reference=lambda grad_out, weight: reference.pointwise_conv2d_backward_input(
        grad_out, weight, (grad_out.shape[0], weight.shape[1]) + grad_out.shape[2:]),
    solution=pointwise_backward_input, make_cases=_pointwise_backward_cases, output_name="grad_x",
    mistakes=(
        Mistake("you forgot to transpose the weight in the backward: Y = W X gives grad_X = W^T grad_Y",
                lambda grad_out, weight: np.einsum("oi,nohw->nihw", weight[:, :, 0, 0].T, grad_out)),
        Mistake("you reshaped (N, C, H, W) straight to (N, H*W, C): that mixes pixels with channels",
                lambda grad_out, weight: (grad_out.reshape(grad_out.shape[0], -1, grad_out.shape[1])
                                          @ weight[:, :, 0, 0]).reshape(
                    (grad_out.shape[0], weight.shape[1]) + grad_out.shape[2:])),
    )))


# ------------------------------------------------------------------------------ transposed convolution
def transposed_conv_forward(x, weight, stride=1, padding=0):
    """Transposed convolution = zero insertion + padding k-1-p + convolution with the flipped kernel."""
    N, C_in, H, W = x.shape
    _, C_out, kH, kW = weight.shape                           # weight: (C_in, C_out, kH, kW), PyTorch's layout
    upsampled = np.zeros((N, C_in, (H - 1) * stride + 1, (W - 1) * stride + 1), dtype=x.dtype)
    upsampled[:, :, ::stride, ::stride] = x                   # stride - 1 zeros between neighbouring pixels
    upsampled = np.pad(upsampled, ((0, 0), (0, 0), (kH - 1 - padding,) * 2, (kW - 1 - padding,) * 2))
    kernel = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)   # flip, swap channel axes -> (C_out, C_in, kH, kW)
    return reference.conv2d_forward(upsampled, np.ascontiguousarray(kernel))   # stride 1, no padding


def _transposed_cases(rng):
    cases = [dict(x=_hand_checkable((1, 2, 2, 2)), weight=_hand_checkable((2, 2, 3, 3)) + 1, stride=2, padding=0),
             dict(x=_hand_checkable((1, 2, 3, 2)), weight=_hand_checkable((2, 3, 3, 3)), stride=2, padding=1),
             dict(x=_hand_checkable((1, 1, 1, 1), np.float32), weight=_hand_checkable((1, 2, 2, 2), np.float32),
                  stride=1, padding=0)]
    for _ in range(6):
        H, W = (int(v) for v in rng.integers(1, 6, size=2))
        kernel, stride = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        padding = int(rng.integers(0, kernel))                # zero insertion needs p <= k - 1
        if (min(H, W) - 1) * stride + kernel - 2 * padding < 1:
            continue
        N, C_in, C_out = (int(v) for v in rng.integers(1, 4, size=3))
        dtype = FLOAT_DTYPES[int(rng.integers(2))]
        cases.append(dict(x=rng.standard_normal((N, C_in, H, W)).astype(dtype),
                          weight=rng.standard_normal((C_in, C_out, kernel, kernel)).astype(dtype),
                          stride=stride, padding=padding))
    return cases


def _transposed_reference(x, weight, stride=1, padding=0):
    return reference.conv_transpose2d_forward(x, weight, None, stride, padding)


register(Exercise(
    name="transposed_conv_forward", topic=TOPIC,
    statement="transposed convolution as zero insertion followed by an ordinary convolution",
    signature="transposed_conv_forward(x, weight, stride=1, padding=0) -> y   # weight (C_in, C_out, k, k), p < k",
    reference=_transposed_reference, solution=transposed_conv_forward, make_cases=_transposed_cases,
    output_name="y",
    mistakes=(
        Mistake("you did not flip the kernel: the convolution after zero insertion uses the kernel rotated by "
                "180 degrees",
                lambda x, weight, stride=1, padding=0: _transposed_reference(x, weight[:, :, ::-1, ::-1], stride,
                                                                             padding)),
        Mistake("you did not swap the weight's channel axes: a transposed-conv weight is (C_in, C_out, k, k), the "
                "convolution needs (C_out, C_in, k, k)",
                lambda x, weight, stride=1, padding=0: _transposed_reference(x, weight.transpose(1, 0, 2, 3),
                                                                             stride, padding)),
        Mistake("you inserted 'stride' zeros between pixels: stride s needs s - 1 zeros",
                lambda x, weight, stride=1, padding=0: _transposed_reference(x, weight, stride + 1, padding)
                if stride > 1 else _transposed_reference(x, weight, 2, padding)),
        Mistake("you padded the zero-inserted map by p; it needs k - 1 - p zeros on each side",
                lambda x, weight, stride=1, padding=0: _transposed_reference(
                    x, weight, stride, weight.shape[2] - 1 - padding)),
    )))


# ------------------------------------------------------------------------------------- max unpooling
def max_unpool(y, indices, output_shape):
    """Max unpooling: put each pooled value back where its maximum came from; zeros elsewhere."""
    N, C, H, W = output_shape
    x = np.zeros(output_shape, dtype=y.dtype)
    for n in range(N):
        for c in range(C):
            plane = x[n, c].reshape(H * W)                   # a view: indices are flat h*W + w in one plane
            plane[indices[n, c].ravel()] = y[n, c].ravel()
    return x


def _unpool_cases(rng):
    cases = []
    shapes = [((1, 1, 4, 6), 2, np.float64), ((2, 2, 6, 4), 2, np.float64), ((1, 1, 1, 1), 1, np.float32)]
    for _ in range(6):
        kernel = int(rng.integers(2, 4))
        N, C = (int(v) for v in rng.integers(1, 4, size=2))
        H, W = (int(v) * kernel for v in rng.integers(1, 4, size=2))
        shapes.append(((N, C, H, W), kernel, FLOAT_DTYPES[int(rng.integers(2))]))
    for shape, kernel, dtype in shapes:
        x = rng.permutation(np.prod(shape)).reshape(shape).astype(dtype)   # distinct values: a unique maximum
        pooled, indices = reference.max_pool2d_forward(x, kernel, kernel)   # non-overlapping windows
        cases.append(dict(y=pooled, indices=indices, output_shape=shape))
    return cases


def _unpool_nearest(y, indices, output_shape):
    """Every pixel of the window gets the window's value (nearest-neighbour up-sampling)."""
    factor_h, factor_w = output_shape[2] // y.shape[2], output_shape[3] // y.shape[3]
    return np.repeat(np.repeat(y, factor_h, axis=2), factor_w, axis=3)


def _unpool_top_left(y, indices, output_shape):
    """Each value at its window's top-left corner."""
    factor_h, factor_w = output_shape[2] // y.shape[2], output_shape[3] // y.shape[3]
    x = np.zeros(output_shape, dtype=y.dtype)
    x[:, :, ::factor_h, ::factor_w] = y
    return x


def _unpool_batch_flat(y, indices, output_shape):
    """The flat indices taken as positions in the whole (N, C, H, W) array instead of one plane."""
    x = np.zeros(output_shape, dtype=y.dtype)
    x.reshape(-1)[indices.ravel()] = y.ravel()
    return x


register(Exercise(
    name="max_unpool", topic=TOPIC,
    statement="max unpooling: scatter pooled values back to their argmax positions",
    signature="max_unpool(y, indices, output_shape) -> x   # indices: flat h*W + w per plane, as max pooling returns",
    reference=lambda y, indices, output_shape: reference.max_unpool2d_forward(y, indices, output_shape),
    solution=max_unpool, make_cases=_unpool_cases, output_name="x",
    mistakes=(
        Mistake("you copied each value to its whole window (nearest-neighbour up-sampling): unpooling puts it "
                "only where the maximum was, zeros elsewhere",
                _unpool_nearest),
        Mistake("you put every value at its window's top-left corner: use indices, the position of the maximum",
                _unpool_top_left),
        Mistake("you used the indices as positions in the whole array: they are flat h*W + w within one "
                "(n, c) plane",
                _unpool_batch_flat),
    )))


# ----------------------------------------------------------------------------------- bilinear up-sampling
def bilinear_upsample(x, out_height, out_width, align_corners=False):
    """Bilinear resize of (N, C, H, W) to (N, C, out_height, out_width), PyTorch's source positions."""
    N, C, H, W = x.shape

    def source_pixels(in_size, out_size):
        """For each output position: the two input neighbours and the weight of the second one."""
        dst = np.arange(out_size)
        if align_corners:                                     # the corner pixels line up
            src = dst * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size)
        else:                                                 # the pixel centres line up, clamped at 0
            src = np.maximum((dst + 0.5) * (in_size / out_size) - 0.5, 0.0)
        first = np.minimum(np.floor(src).astype(int), in_size - 1)
        second = np.minimum(first + 1, in_size - 1)           # the border pixel repeats past the edge
        return first, second, src - first

    top, bottom, weight_y = source_pixels(H, out_height)
    left, right, weight_x = source_pixels(W, out_width)
    rows = x[:, :, top] * (1 - weight_y)[:, None] + x[:, :, bottom] * weight_y[:, None]   # (N, C, out_height, W)
    y = rows[:, :, :, left] * (1 - weight_x) + rows[:, :, :, right] * weight_x   # (N, C, out_height, out_width)
    return y.astype(x.dtype)


def _upsample_reference(x, out_height, out_width, align_corners=False, mode="bilinear"):
    """``tinycnn.nn.Upsample`` to the given size."""
    return nn.Upsample(size=(out_height, out_width), mode=mode,
                       align_corners=align_corners if mode == "bilinear" else None)(x)


def _wrong_bilinear(half_pixel=True, clamp=True, corner_scale=True):
    """:func:`bilinear_upsample` with one of its position rules broken (see the hints)."""
    def wrong(x, out_height, out_width, align_corners=False):
        def interpolation_matrix(in_size, out_size):
            dst = np.arange(out_size)
            if align_corners and corner_scale:
                src = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
            elif align_corners:
                src = dst * (in_size / out_size)
            else:
                src = (dst + 0.5) * (in_size / out_size) - 0.5 if half_pixel else dst * (in_size / out_size)
                src = np.maximum(src, 0.0) if clamp else src
            first = np.minimum(np.floor(src).astype(int), in_size - 1)       # -1 reads the last pixel
            second = np.minimum(first + 1, in_size - 1)
            matrix = np.zeros((out_size, in_size))
            np.add.at(matrix, (dst, first), 1 - (src - first))
            np.add.at(matrix, (dst, second), src - first)
            return matrix
        return (interpolation_matrix(x.shape[2], out_height) @ x
                @ interpolation_matrix(x.shape[3], out_width).T).astype(x.dtype)
    return wrong


def _upsample_cases(rng):
    """2x2 -> 4x4 both ways (redo on paper), a 1x1 map, a same-size copy, odd ratios, then random ones."""
    cases = [dict(x=np.arange(4.0).reshape(1, 1, 2, 2), out_height=4, out_width=4, align_corners=False),
             dict(x=np.arange(4.0).reshape(1, 1, 2, 2), out_height=4, out_width=4, align_corners=True),
             dict(x=_hand_checkable((1, 2, 3, 3), np.float32), out_height=5, out_width=7, align_corners=False),
             dict(x=_hand_checkable((1, 1, 1, 1)) + 3, out_height=3, out_width=2, align_corners=False),
             dict(x=_hand_checkable((2, 1, 3, 2)), out_height=3, out_width=2, align_corners=True)]
    for _ in range(7):
        N, C, H, W = (int(v) for v in rng.integers(1, 4, size=4))
        out_height, out_width = H * int(rng.integers(1, 4)) + int(rng.integers(0, 3)), W * int(rng.integers(1, 4))
        dtype = FLOAT_DTYPES[int(rng.integers(2))]
        cases.append(dict(x=rng.standard_normal((N, C, H, W)).astype(dtype), out_height=out_height,
                          out_width=out_width, align_corners=bool(rng.integers(2))))
    return cases


register(Exercise(
    name="bilinear_upsample", topic=TOPIC,
    statement="bilinear up-sampling to a given size, with align_corners False (PyTorch's default) or True",
    signature="bilinear_upsample(x, out_height, out_width, align_corners=False) -> y",
    reference=_upsample_reference, solution=bilinear_upsample, make_cases=_upsample_cases, output_name="y",
    mistakes=(
        Mistake("your output is what the other align_corners convention gives: False lines up pixel centres, "
                "src = (dst + 0.5) * H/H_out - 0.5; True lines up the corner pixels, src = dst * (H-1)/(H_out-1)",
                lambda x, out_height, out_width, align_corners=False:
                _upsample_reference(x, out_height, out_width, not align_corners)),
        Mistake("your output is nearest-neighbour up-sampling: bilinear mixes the two nearest rows and the two "
                "nearest columns with weights 1 - l and l",
                lambda x, out_height, out_width, align_corners=False:
                _upsample_reference(x, out_height, out_width, mode="nearest")),
        Mistake("your samples are off by half a pixel: with align_corners=False the pixel centres line up, "
                "src = (dst + 0.5) * H/H_out - 0.5, not dst * H/H_out",
                _wrong_bilinear(half_pixel=False)),
        Mistake("near the top and left borders src = (dst + 0.5) * H/H_out - 0.5 is negative: clamp it at 0 "
                "(floor(-0.25) = -1 reads the last pixel in NumPy)",
                _wrong_bilinear(clamp=False)),
        Mistake("with align_corners=True the scale is (H-1)/(H_out-1), so that the last output pixel lands on "
                "the last input pixel, not H/H_out",
                _wrong_bilinear(corner_scale=False)),
    )))
