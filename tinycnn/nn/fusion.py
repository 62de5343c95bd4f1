"""Convolution -> batch norm -> ReLU/ReLU6 as one step, for inference (inside ``nn.no_grad()``).

With running statistics (evaluation mode) batch norm is a fixed affine map per channel,
``y = x * scale[c] + shift[c]`` with ``scale = weight / sqrt(running_var + eps)`` and
``shift = bias - running_mean * scale``, and ReLU6 is ``clip(y, 0, 6)``. Run as three layers, the
convolution's output is read and written twice more (once per layer); here the convolution finishes its
own output with ``clip(out * scale + shift, low, high)`` (the ``epilogue`` of ``kernels.conv2d._forward``):
a pointwise convolution inside each matrix-product block while it is still in cache, the others in
one compiled pass over the output (``kernels.batchnorm.finish_channels``). The arithmetic is the layers' own, in the same order,
so the result is bit-identical to calling them one by one.

This is the "fuse what follows a convolution" of inference engines (PyTorch's ``fuse_modules``, oneDNN's
post-ops), done at run time: nothing is rewritten, and the weights stay the model's own, so a
``state_dict`` or a later ``train()`` sees no difference. A run of layers is fused only when nothing
could observe the difference: the layers are exactly ``Conv2d``, ``BatchNorm2d`` with running
statistics and optionally ``ReLU``/``ReLU6``, none has a forward hook, and the channels match. Any
other layer runs as usual.

Measured on a 2-core AMD EPYC (AVX2), MobileNet V2 (width 1.0) on one 224 x 224 image: see the README's
benchmark section.
"""
import numpy as np

from kernels import conv2d as conv2d_kernels
from kernels._jit import one_blas_thread

from .activation import ReLU, ReLU6
from .conv import Conv2d
from .norm import BatchNorm2d

_CLIP_RANGE = {ReLU: (0.0, np.inf), ReLU6: (0.0, 6.0)}


def _plain(layer, kind):
    """Is ``layer`` exactly of class ``kind``, unhooked, with the class's own ``forward``?"""
    return type(layer) is kind and not layer._forward_hooks and "forward" not in layer.__dict__


def _fusable_run(layers, start):
    """How many layers from ``layers[start]`` form a Conv2d -> BatchNorm2d (-> ReLU/ReLU6) run: 0, 2 or 3."""
    if start + 1 >= len(layers):
        return 0
    conv, norm = layers[start], layers[start + 1]
    if not (_plain(conv, Conv2d) and _plain(norm, BatchNorm2d)):
        return 0
    uses_running_stats = not norm.training and norm.track_running_stats and norm.running_mean is not None
    if not uses_running_stats or norm.num_features != conv.out_channels:
        return 0
    if start + 2 < len(layers) and any(_plain(layers[start + 2], kind) for kind in _CLIP_RANGE):
        return 3
    return 2


def fused_chain_forward(layers, x):
    """:func:`tinycnn.nn.chain_forward` without gradients: fusable runs of layers go through :func:`conv_norm_clip`."""
    index = 0
    while index < len(layers):
        length = _fusable_run(layers, index)
        if length:
            activation = layers[index + 2] if length == 3 else None
            x = conv_norm_clip(layers[index], layers[index + 1], activation, x)
            index += length
        else:
            x = layers[index](x)
            index += 1
    return x


def conv_norm_clip(conv, norm, activation, x):
    """``activation(norm(conv(x)))`` with ``norm`` in evaluation mode, as one convolution and one pass.

    Parameters
    ----------
    conv : Conv2d
    norm : BatchNorm2d using its running statistics, ``num_features == conv.out_channels``
    activation : ReLU, ReLU6 or None
    x : ndarray (N, C_in, H, W)

    Returns
    -------
    y : ndarray (N, C_out, H_out, W_out), bit-identical to the three layers called one by one.

    The three layers are marked as having run without gradients: their ``backward`` raises.
    """
    conv._check_input(x, channels=conv.in_channels)
    x = np.ascontiguousarray(x)
    geometry = conv._geometry(x.shape)
    bias = None if conv.bias is None else conv.bias.data
    scale, shift = norm._running_affine(x.dtype)                               # (C_out,) each
    low, high = _CLIP_RANGE[type(activation)] if activation is not None else (-np.inf, np.inf)
    with one_blas_thread():                  # the batch norm and clip finish the convolution's output
        y = conv2d_kernels._forward(x, np.ascontiguousarray(conv.weight.data), bias, geometry,
                                    epilogue=(scale, shift, low, high))
    for layer in (conv, norm, activation):
        if layer is not None:
            layer.__dict__["_forward_without_grad"] = True
    return y
