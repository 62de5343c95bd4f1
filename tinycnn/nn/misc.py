"""Layers that move, drop or resample values without learning anything.

``Dropout``, ``Flatten``, ``Identity``, ``ChannelShuffle`` (ShuffleNet) and ``Upsample``
(nearest / bilinear). All plain NumPy; none has parameters.
"""
import math
import numbers

import numpy as np

from . import init
from .module import Module


class Dropout(Module):
    """Inverted dropout (Srivastava et al., JMLR 2014): zero each value with probability ``p``.

    Training mode: ``y = x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)``, so ``E[y] = x`` and
    evaluation mode is simply ``y = x``. Backward multiplies by the same scaled mask.

    Parameters
    ----------
    p : float in [0, 1]
    inplace : bool
        Accepted for PyTorch compatibility and ignored.
    rng : numpy.random.Generator, optional
        Generator for the masks; default: the shared one of ``tinycnn.nn.init`` (looked up at every
        forward, so ``init.manual_seed`` also makes masks reproducible).
    """

    def __init__(self, p=0.5, inplace=False, *, rng=None):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability p must be in [0, 1]; got {p!r}")
        self.p = p
        self.inplace = inplace
        self.rng = rng
        self._scaled_mask = None     # mask / (1 - p) used by the last training-mode forward, else None
        self._output_shape = None

    def forward(self, x):
        self._check_input(x, ndim=None)
        self._output_shape = x.shape
        if not self.training or self.p == 0:
            self._scaled_mask = None
            return x
        if self.p == 1:
            self._scaled_mask = np.zeros_like(x)
        else:
            rng = init.default_generator() if self.rng is None else self.rng
            keep = rng.random(x.shape) >= self.p                                      # True with prob 1 - p
            self._scaled_mask = keep.astype(x.dtype) / np.asarray(1 - self.p, dtype=x.dtype)
        return x * self._scaled_mask

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        if self._scaled_mask is None:
            return grad_out
        return grad_out * self._scaled_mask

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` into one: ``(N, C, H, W) -> (N, C*H*W)`` by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim
        self._input_shape = None
        self._output_shape = None

    def forward(self, x):
        self._check_input(x, ndim=None)
        start = self.start_dim % x.ndim
        end = self.end_dim % x.ndim
        if start > end:
            raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) is empty for an input "
                             f"of shape {x.shape}")
        shape = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
        self._input_shape, self._output_shape = x.shape, shape
        return x.reshape(shape)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        return grad_out.reshape(self._input_shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """``y = x`` (arguments are accepted and ignored, as in PyTorch). Useful as a placeholder branch."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self._output_shape = None

    def forward(self, x):
        self._check_input(x, ndim=None)
        self._output_shape = x.shape
        return x

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        return grad_out


class ChannelShuffle(Module):
    """Interleave the channels of ``groups`` groups (ShuffleNet, arXiv:1707.01083).

    ``(N, g*k, H, W) -> reshape (N, g, k, H, W) -> swap axes 1, 2 -> (N, k*g, H, W)``: channel
    ``i*k + j`` moves to position ``j*g + i``, so the next grouped convolution sees every group.
    The backward pass applies the inverse permutation (a shuffle with ``k`` groups).
    """

    def __init__(self, groups):
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
            raise ValueError(f"groups must be a positive int; got {groups!r}")
        self.groups = int(groups)
        self._output_shape = None

    @staticmethod
    def _shuffle(x, groups):
        N, C, H, W = x.shape
        x = x.reshape(N, groups, C // groups, H, W)           # (N, g, k, H, W)
        x = x.transpose(0, 2, 1, 3, 4)                        # (N, k, g, H, W)
        return np.ascontiguousarray(x).reshape(N, C, H, W)

    def forward(self, x):
        self._check_input(x)
        if x.shape[1] % self.groups != 0:
            raise ValueError(f"ChannelShuffle(groups={self.groups}) needs channels divisible by {self.groups}; "
                             f"got input of shape {x.shape}")
        self._output_shape = x.shape
        return self._shuffle(x, self.groups)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        return self._shuffle(grad_out, grad_out.shape[1] // self.groups)      # inverse permutation

    def extra_repr(self):
        return f"groups={self.groups}"


def _nearest_source_indices(in_size, out_size, scale_factor):
    """PyTorch's ``mode='nearest'`` source index ``min(floor(dst * scale), in - 1)``, computed in float32.

    ``scale = 1 / scale_factor`` if a scale factor was given, else ``in / out`` (PyTorch does the same;
    the float32 arithmetic matches its CPU kernel index for index).
    """
    if out_size == in_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) // 2
    if scale_factor is not None:
        scale = np.float32(1.0 / scale_factor)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
    source = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(source, in_size - 1)


def _linear_weights(in_size, out_size, scale_factor, align_corners):
    """Matrix ``A`` (out_size, in_size) of 1-D linear interpolation: ``y = A @ x`` along one axis.

    ``align_corners=False`` (PyTorch's default): output pixel ``dst`` samples the input at
    ``src = max((dst + 0.5) * scale - 0.5, 0)`` (pixel centres line up), ``scale = 1/scale_factor`` or
    ``in/out``. ``align_corners=True``: ``src = dst * (in - 1) / (out - 1)`` (corner pixels line up).
    Row ``dst`` has weight ``1 - l`` at ``floor(src)`` and ``l = src - floor(src)`` at the next pixel.
    """
    matrix = np.zeros((out_size, in_size))
    if out_size == in_size:
        np.fill_diagonal(matrix, 1.0)
        return matrix
    dst = np.arange(out_size, dtype=np.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * scale
    else:
        scale = 1.0 / scale_factor if scale_factor is not None else in_size / out_size
        src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    left = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    right = np.minimum(left + 1, in_size - 1)
    weight_right = np.clip(src - left, 0.0, 1.0)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, left), 1.0 - weight_right)
    np.add.at(matrix, (rows, right), weight_right)
    return matrix


def _one_hot(indices, size, dtype):
    """Matrix ``(len(indices), size)`` with a single 1 per row, at ``indices[row]``."""
    matrix = np.zeros((len(indices), size), dtype=dtype)
    matrix[np.arange(len(indices)), indices] = 1
    return matrix


class Upsample(Module):
    """Resize the spatial axes: ``mode='nearest'`` (copy the nearest pixel) or ``'bilinear'``.

    Both modes are linear maps that act on rows and columns separately: ``y = A_h @ x @ A_w^T`` per
    channel, with interpolation matrices ``A_h (H_out, H)`` and ``A_w (W_out, W)``. The backward pass is
    the transposed map ``dL/dx = A_h^T @ dL/dy @ A_w``: each input pixel collects the gradients of the
    output pixels it contributed to, weighted the same way. Source positions follow PyTorch exactly
    (see ``_nearest_source_indices`` and ``_linear_weights``).

    Parameters
    ----------
    size : int or (int, int), optional
        Output ``(H_out, W_out)``. Give either ``size`` or ``scale_factor``.
    scale_factor : float or (float, float), optional
        ``H_out = floor(H * scale_factor)``; any positive number (1.5, 0.6, ...), as in PyTorch. The
        source positions then use ``1 / scale_factor`` itself, not ``H / H_out`` (they differ when
        ``H * scale_factor`` is not an integer) -- unless ``recompute_scale_factor=True``.
    mode : {'nearest', 'bilinear'}
    align_corners : bool, optional
        Bilinear only; default False (PyTorch's default). True: the corner pixels of input and output
        line up, ``src = dst * (H - 1) / (H_out - 1)`` (the scale factor only sets the size).
    recompute_scale_factor : bool, optional
        With ``scale_factor``: True interpolates with the scale ``H / H_out`` recomputed from the
        rounded output size, as if ``size`` had been given (PyTorch's argument of the same name).
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        if recompute_scale_factor and size is not None:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample needs exactly one of size and scale_factor")
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"Upsample mode must be 'nearest' or 'bilinear'; got {mode!r}")
        if mode == "nearest" and align_corners is not None:
            raise ValueError("align_corners can only be set with mode='bilinear'")
        if size is not None:
            pair = size if isinstance(size, (tuple, list)) else (size, size)
            if len(pair) != 2 or any(not isinstance(s, numbers.Integral) or s < 1 for s in pair):
                raise ValueError(f"size must be a positive int or a pair of them; got {size!r}")
            self.size = tuple(int(s) for s in size) if isinstance(size, (tuple, list)) else int(size)
            self.scale_factor = None
        else:
            pair = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor, scale_factor)
            if len(pair) != 2 or any(not isinstance(s, numbers.Real) or s <= 0 for s in pair):
                raise ValueError(f"scale_factor must be a positive number or a pair of them; got {scale_factor!r}")
            self.size = None
            self.scale_factor = (tuple(float(s) for s in scale_factor) if isinstance(scale_factor, (tuple, list))
                                 else float(scale_factor))
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor
        self._rows = None           # A_h (H_out, H)
        self._cols = None           # A_w (W_out, W)
        self._output_shape = None

    def _output_size_and_scales(self, H, W):
        if self.size is not None:
            out = self.size if isinstance(self.size, tuple) else (self.size, self.size)
            return out, (None, None)
        scales = self.scale_factor if isinstance(self.scale_factor, tuple) else (self.scale_factor,) * 2
        out = (math.floor(H * scales[0]), math.floor(W * scales[1]))
        if min(out) < 1:
            raise ValueError(f"Upsample(scale_factor={self.scale_factor}) gives an empty output for input "
                             f"{H}x{W}")
        if self.recompute_scale_factor:
            return out, (None, None)                  # interpolate with H/H_out, as for an explicit size
        return out, scales

    def forward(self, x):
        self._check_input(x)
        N, C, H, W = x.shape
        (H_out, W_out), (scale_h, scale_w) = self._output_size_and_scales(H, W)
        self._output_shape = (N, C, H_out, W_out)
        if self.mode == "nearest":
            source_rows = _nearest_source_indices(H, H_out, scale_h)         # (H_out,) input row of each output row
            source_cols = _nearest_source_indices(W, W_out, scale_w)         # (W_out,)
            self._rows = _one_hot(source_rows, H, x.dtype)                   # A_h (H_out, H), for backward
            self._cols = _one_hot(source_cols, W, x.dtype)                   # A_w (W_out, W)
            # a gather: exact, and cheaper than multiplying by the 0/1 matrices
            return x[:, :, source_rows[:, None], source_cols[None, :]]       # (N, C, H_out, W_out)
        align_corners = bool(self.align_corners)
        self._rows = _linear_weights(H, H_out, scale_h, align_corners).astype(x.dtype)   # A_h (H_out, H)
        self._cols = _linear_weights(W, W_out, scale_w, align_corners).astype(x.dtype)   # A_w (W_out, W)
        return self._rows @ x @ self._cols.T              # (N, C, H_out, W) -> (N, C, H_out, W_out)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        return self._rows.T @ grad_out @ self._cols                    # (N, C, H, W_out) -> (N, C, H, W)

    def extra_repr(self):
        text = f"size={self.size!r}" if self.size is not None else f"scale_factor={self.scale_factor!r}"
        text += f", mode={self.mode!r}"
        if self.align_corners is not None:
            text += f", align_corners={self.align_corners}"
        return text
