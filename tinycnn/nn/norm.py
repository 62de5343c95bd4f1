"""Batch normalisation over the channels of an NCHW tensor (Ioffe & Szegedy, arXiv:1502.03167)."""
import numbers

import numpy as np

from kernels.activation import clip_backward
from kernels.batchnorm import (batch_norm_affine_kernel, batch_norm_running_affine_kernel, batch_norm_statistics_kernel,
                               batch_norm_train_backward_kernel, batch_norm_train_forward_kernel, channels_per_block)

from .module import Module, Parameter

_AXES = (0, 2, 3)           # statistics are taken over batch and space: one mean/variance per channel


def _per_channel(v):
    """``(C,)`` -> ``(1, C, 1, 1)`` so it broadcasts against ``(N, C, H, W)``."""
    return v.reshape(1, -1, 1, 1)


class BatchNorm2d(Module):
    """Batch normalisation of each channel of ``(N, C, H, W)`` input.

    ``y = weight * (x - mean) / sqrt(var + eps) + bias``, per channel.

    * Training mode: ``mean`` and ``var`` are the batch statistics over ``N, H, W`` (``var`` is the biased
      variance, dividing by ``m = N*H*W``). The running estimates are updated as
      ``running = (1 - momentum) * running + momentum * batch``, with the *unbiased* variance
      ``var * m / (m - 1)`` for ``running_var``; ``momentum=None`` uses the cumulative average
      (factor ``1 / num_batches_tracked``). This is exactly PyTorch's rule.
    * Evaluation mode: ``running_mean`` and ``running_var`` are used instead; the layer is then an
      affine per-channel map.

    Parameters
    ----------
    num_features : int
        Number of channels ``C``.
    eps : float
        Added to the variance for stability (1e-5). torchvision's MobileNetV3 uses 1e-3.
    momentum : float or None
        Weight of the new batch in the running averages (0.1).
    affine : bool
        Learn ``weight`` (init 1) and ``bias`` (init 0).
    track_running_stats : bool
        Keep ``running_mean``, ``running_var``, ``num_batches_tracked`` buffers. If False, batch
        statistics are used in both modes.
    bias : bool, keyword-only
        With ``affine=True``, also learn ``bias`` (PyTorch 2.13's keyword; default True).

    Backward (training mode), with ``x_hat = (x - mean) / std`` and ``g = dL/dy``::

        dL/dx = weight / std * (g - mean(g) - x_hat * mean(g * x_hat))        (means over N, H, W)
        dL/dweight = sum(g * x_hat),   dL/dbias = sum(g)

    The two subtracted terms are what ``mean`` and ``var`` contribute through their dependence on
    ``x``; in evaluation mode they are constants and ``dL/dx = weight / std * g``.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *, bias=True):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) or num_features < 1:
            raise ValueError(f"num_features must be a positive int; got {num_features!r}")
        if eps <= 0:
            raise ValueError(f"eps must be positive; got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1] or None; got {momentum!r}")
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        C = self.num_features
        if affine:
            self.weight = Parameter(np.ones(C, dtype=np.float32))      # gamma
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = Parameter(np.zeros(C, dtype=np.float32))       # beta
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dtype=np.float32))
            self.register_buffer("running_var", np.ones(C, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._x_hat = None              # cached normalised input, (N, C*H*W) (batch statistics)
        self._x = None                  # cached input (running statistics: x_hat is made in backward)
        self._mean = None               # the running mean that forward used, (C,)
        self._output_shape = None       # set by each forward (backward checks grad_out against it)
        self._inv_std = None            # cached 1 / sqrt(var + eps), (C,) in the input's dtype
        self._clipped_by = None         # (activation, its output) when a ReLU/ReLU6 ran in forward's pass
        self._used_batch_stats = None   # which formula forward used (mode may change before backward)

    def forward(self, x):
        return self._normalise(x)

    def _normalise(self, x, low=-np.inf, high=np.inf):
        """:meth:`forward`, its output clipped to ``[low, high]`` in the same pass (a ReLU/ReLU6 after it:
        :mod:`tinycnn.nn.fusion`); the clipped output is what that activation caches for its backward."""
        self._check_input(x, channels=self.num_features)
        self._clipped_by = None                                                      # see tinycnn.nn.fusion
        N, C, H, W = x.shape
        x_flat = np.ascontiguousarray(x).reshape(N, C * H * W)                      # (N, C*P)
        y = np.empty_like(x_flat)
        block_channels = channels_per_block(C, H * W, N, x.itemsize)
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            m = N * H * W                                   # values per channel
            if m < 2:
                raise ValueError(f"BatchNorm2d in training mode needs more than 1 value per channel; got "
                                 f"input of shape {x.shape}")
            # one compiled pass per statistic, sums in float64 even for float32 input (as PyTorch's CPU
            # kernels: a channel can hold N*H*W ~ 1e5 values): kernels/batchnorm.py
            mean, var = np.empty(C), np.empty(C)                                     # (C,) float64
            x_hat = np.empty_like(x_flat)
            weight, bias = self._affine_parameters(x.dtype)
            batch_norm_train_forward_kernel(x_flat, weight, bias, float(self.eps), x.dtype.type(low),
                                            x.dtype.type(high), block_channels, y, x_hat, mean, var)
            self._inv_std = self._finish_batch_statistics(mean, var, m, x.dtype)     # (C,)
            self._x_hat, self._x, self._used_batch_stats = x_hat, None, True
        else:
            # running statistics: an affine map per channel, y = x * scale + shift (as PyTorch's CPU
            # kernel), one compiled pass; backward recomputes x_hat from the cached input if asked for
            scale, shift, inv_std = self._running_affine(x.dtype)                 # (C,) each
            batch_norm_affine_kernel(x_flat, scale, shift, x.dtype.type(low), x.dtype.type(high), block_channels, y)
            self._inv_std, self._used_batch_stats = inv_std, False
            self._x, self._mean = x, self._buffers["running_mean"].astype(x.dtype, copy=False)
        self._output_shape = x.shape
        return y.reshape(x.shape)

    def _running_affine(self, dtype):
        """``(scale, shift, inv_std)``, (C,) arrays of ``dtype``: with running statistics ``y = x * scale + shift``.

        ``inv_std = 1 / sqrt(running_var + eps)``, ``scale = weight * inv_std``, ``shift = bias - running_mean
        * scale``, computed in ``dtype`` as PyTorch's CPU kernel does (the inverse square root in the
        running variance's dtype) by one compiled call
        (:func:`kernels.batchnorm.batch_norm_running_affine_kernel`); also used by :mod:`tinycnn.nn.fusion`.
        """
        buffers, C = self._buffers, self.num_features
        running_var = buffers["running_var"]
        running_dtype = running_var.dtype.type
        weight, bias = self._affine_parameters(dtype, absent=np.empty(0, dtype=dtype))
        inv_std, scale, shift = np.empty(C, dtype=dtype), np.empty(C, dtype=dtype), np.empty(C, dtype=dtype)
        running_mean = buffers["running_mean"].astype(dtype, copy=False)
        batch_norm_running_affine_kernel(running_mean, running_var, running_dtype(self.eps), running_dtype(1.0), weight,
                                         bias, inv_std, scale, shift)
        return scale, shift, inv_std

    def _affine_parameters(self, dtype, absent=None):
        """``weight, bias`` as (C,) arrays of ``dtype``; an absent parameter is ``absent``, or ones (weight)
        and zeros (bias) when that is None. (The registries are read directly: these run for every batch
        norm on every step, and each ``self.weight`` costs a ``Module.__getattr__`` call.)"""
        C, parameters = self.num_features, self._parameters
        weight, bias = parameters["weight"], parameters["bias"]
        if self.affine and weight is not None:
            weight = weight.data.astype(dtype, copy=False)
        else:
            weight = np.ones(C, dtype=dtype) if absent is None else absent
        if bias is not None:
            bias = bias.data.astype(dtype, copy=False)
        else:
            bias = np.zeros(C, dtype=dtype) if absent is None else absent
        return weight, bias

    def _finish_batch_statistics(self, mean, var, m, dtype):
        """Return ``1 / sqrt(var + eps)`` as (C,) ``dtype``; in training mode with running statistics also
        update them from the batch's ``mean`` and biased ``var`` ((C,) float64, ``m`` values per channel):
        ``running = (1 - factor) * running + factor * batch``, the variance made unbiased (``* m / (m - 1)``),
        ``factor`` the momentum (or ``1 / num_batches_tracked`` for ``momentum=None``). One compiled call,
        :func:`kernels.batchnorm.batch_norm_statistics_kernel`."""
        inv_std = np.empty(self.num_features)
        if self.training and self.track_running_stats:
            buffers = self._buffers
            buffers["num_batches_tracked"] = np.array(buffers["num_batches_tracked"] + 1, dtype=np.int64)
            factor = 1.0 / float(buffers["num_batches_tracked"]) if self.momentum is None else float(self.momentum)
            running_mean, running_var = buffers["running_mean"], buffers["running_var"]
            new_mean, new_var = np.empty_like(running_mean), np.empty_like(running_var)
            batch_norm_statistics_kernel(mean, var, float(self.eps), inv_std, running_mean.dtype.type(1 - factor),
                                         factor, m / (m - 1), running_mean, running_var, new_mean, new_var)
            buffers["running_mean"], buffers["running_var"] = new_mean, new_var
        else:
            nothing = np.empty(0, dtype=dtype)
            batch_norm_statistics_kernel(mean, var, float(self.eps), inv_std, dtype.type(0), 0.0, 1.0, nothing,
                                         nothing, nothing, nothing)
        return inv_std.astype(dtype)

    def backward(self, grad_out):
        return self._backward(grad_out)

    def _backward(self, grad_out, clipped=None, low=-np.inf, high=np.inf):
        """:meth:`backward`; with ``clipped`` (the output of the ReLU/ReLU6 that ran in the forward's
        pass, :mod:`tinycnn.nn.fusion`) ``grad_out`` is that activation's and goes through its derivative
        ``1[low < clipped < high]`` first, inside the same compiled passes."""
        self._check_grad_out(grad_out, self._output_shape)
        inv_std = self._inv_std
        N, C, H, W = self._output_shape
        if clipped is not None and not self._used_batch_stats:
            grad_out = clip_backward(grad_out, clipped, low, high)
            clipped = None
        weight, bias = self._parameters["weight"], self._parameters["bias"]
        scale = weight.data * inv_std if self.affine else inv_std                  # (C,) gamma / std
        if self._used_batch_stats:
            # mean and var depend on x: remove the gradient's components along 1 and x_hat (class
            # docstring); one compiled pass for both sums, one for grad_x (kernels/batchnorm.py)
            x_hat = self._x_hat                                                      # (N, C*P)
            grad_flat = np.ascontiguousarray(grad_out, dtype=x_hat.dtype).reshape(N, C * H * W)
            grad_x = np.empty_like(grad_flat)
            sums = np.empty((C, 2))                                                  # float64
            no_clip = np.empty((0, 0), dtype=x_hat.dtype)
            clipped = no_clip if clipped is None else np.ascontiguousarray(clipped).reshape(N, C * H * W)
            batch_norm_train_backward_kernel(grad_flat, x_hat, scale.astype(x_hat.dtype, copy=False), clipped,
                                             x_hat.dtype.type(low), x_hat.dtype.type(high),
                                             channels_per_block(C, H * W, N, x_hat.itemsize), grad_x, sums)
            sum_grad, sum_grad_x_hat = sums[:, 0], sums[:, 1]
        else:
            # mean and var are constants: y is an affine function of x
            x_hat = (self._x - _per_channel(self._mean)) * _per_channel(inv_std)    # (N, C, H, W)
            sum_grad = grad_out.sum(axis=_AXES, dtype=np.float64)                    # (C,) = dL/dbeta
            sum_grad_x_hat = np.sum(grad_out * x_hat, axis=_AXES, dtype=np.float64)  # (C,) = dL/dgamma
            grad_x = grad_out * _per_channel(scale)
        if self.affine:
            weight.grad += sum_grad_x_hat
            if bias is not None:
                bias.grad += sum_grad
        return grad_x.reshape(self._output_shape)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")
