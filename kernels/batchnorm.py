"""Batch normalisation over the channels of an NCHW tensor, training mode (arXiv:1502.03167).

With ``m = N*H*W`` values per channel, batch statistics ``mean``, biased ``var`` and
``x_hat = (x - mean) / sqrt(var + eps)``:

    forward:   y = weight * x_hat + bias
    backward:  grad_x = weight / std * (g - mean(g) - x_hat * mean(g * x_hat)),
               grad_weight = sum(g * x_hat),  grad_bias = sum(g)

One parallel iteration per channel (its statistics and outputs are its own). The sums run in float64
even for float32 input, as PyTorch's CPU kernels do: a channel holds up to ~1e5 values. A scalar
``total += value`` is a chain of dependent additions that LLVM does not vectorise without fastmath, so
each iteration keeps one running sum per pixel position (``partial[p]``, element-wise and vectorised)
and adds those once at the end, in a fixed order: the same bits for any thread count. The variance is
a second pass over the centred values (no ``E[x^2] - mean^2`` cancellation), so float64 input agrees
with PyTorch to ~1e-15.

Arrays are viewed as ``(N, C, P)`` with ``P = H*W`` (C-contiguous).
"""
import math

import numpy as np

from ._jit import parallel_jit, prange


@parallel_jit
def batch_norm_train_forward_kernel(x, weight, bias, eps, y, x_hat, mean, var):
    """Fill ``y``, ``x_hat`` (N, C, P) and the batch ``mean``, biased ``var`` (C,) float64."""
    N, C, P = x.shape
    m = N * P
    for c in prange(C):                                 # one channel per iteration: disjoint writes
        partial = np.zeros(P, dtype=np.float64)         # per-pixel running sums
        for n in range(N):
            plane = x[n, c]                             # (P,)
            for p in range(P):
                partial[p] += plane[p]
        channel_mean = partial.sum() / m
        partial[:] = 0.0
        for n in range(N):                              # second pass: centred squares
            plane = x[n, c]
            for p in range(P):
                centred = plane[p] - channel_mean
                partial[p] += centred * centred
        channel_var = partial.sum() / m
        inv_std = 1.0 / math.sqrt(channel_var + eps)
        scale, shift = weight[c], bias[c]
        for n in range(N):                              # third pass: normalise, scale and shift
            plane, hat_plane, out_plane = x[n, c], x_hat[n, c], y[n, c]
            for p in range(P):
                normalised = (plane[p] - channel_mean) * inv_std
                hat_plane[p] = normalised
                out_plane[p] = normalised * scale + shift
        mean[c] = channel_mean
        var[c] = channel_var


@parallel_jit
def batch_norm_train_backward_kernel(grad_out, x_hat, scale, grad_x, sums):
    """Fill ``grad_x`` (N, C, P) and ``sums[c] = (sum g, sum g*x_hat)`` (C, 2) float64.

    ``scale`` (C,) is ``weight / std`` (or ``1 / std`` without affine parameters).
    """
    N, C, P = grad_out.shape
    m = N * P
    for c in prange(C):                                 # one channel per iteration
        sum_g = np.zeros(P, dtype=np.float64)           # per-pixel running sums
        sum_g_hat = np.zeros(P, dtype=np.float64)
        for n in range(N):
            g_plane, hat_plane = grad_out[n, c], x_hat[n, c]   # (P,)
            for p in range(P):
                sum_g[p] += g_plane[p]
                sum_g_hat[p] += g_plane[p] * hat_plane[p]
        total_g, total_g_hat = sum_g.sum(), sum_g_hat.sum()
        mean_g, mean_g_hat, s = total_g / m, total_g_hat / m, scale[c]
        for n in range(N):                              # grad_x = s * (g - mean(g) - x_hat * mean(g x_hat))
            g_plane, hat_plane, out_plane = grad_out[n, c], x_hat[n, c], grad_x[n, c]
            for p in range(P):
                out_plane[p] = s * (g_plane[p] - mean_g - hat_plane[p] * mean_g_hat)
        sums[c, 0] = total_g
        sums[c, 1] = total_g_hat
