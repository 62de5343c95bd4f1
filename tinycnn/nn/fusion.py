"""Neighbouring layers merged at run time: batch norm + ReLU/ReLU6 always, and convolution + batch norm +
ReLU/ReLU6/hard swish inside ``nn.no_grad()``. The results are bit-identical to the layers called one by
one.

**Batch norm -> ReLU/ReLU6** (training and evaluation, :func:`norm_clip`): the clip happens in batch
norm's own output loop, so the activation costs no pass of its own; the activation caches the clipped
output, which gives its derivative ``1[low < . < high]`` as well as its input would. In backward
(:func:`fused_chain_backward`) that mask is applied inside batch norm's two passes.

**Convolution -> batch norm -> ReLU/ReLU6/hard swish** without gradients (:func:`conv_norm_clip`). With
running statistics batch norm is a fixed affine map per channel, ``y = x * scale[c] + shift[c]`` with
``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``. Run as three
layers, the convolution's output is read and written twice more; here the convolution finishes its own
output with ``v = clip(out * scale + shift, low, high)``, and hard swish ``v * clip(v + 3, 0, 6) / 6``
for MobileNet V3's layers (the ``epilogue`` of ``kernels.conv2d._forward``): a pointwise convolution
inside each matrix-product block while it is still in cache, the flat depthwise kernel as it writes each
output, the others in one compiled pass (``kernels.batchnorm.finish_channels``).

**Squeeze-and-excitation** without gradients (:func:`squeeze_excitation_without_grad`): the block's five
layers (average pool, 1x1 convolution, activation, 1x1 convolution, gate) run on ``(N, C, 1, 1)`` arrays
of a few hundred values, where each layer call's bookkeeping costs more than its arithmetic. Their
kernels are called directly, one after another, with the same arguments the layers would pass; on one
image, MobileNet V3's block (ReLU, hard-sigmoid gate) is a single compiled call
(:mod:`kernels.squeeze_excitation`).

This is the "fuse what follows a convolution" of inference engines (PyTorch's ``fuse_modules``, oneDNN's
post-ops), done at run time: nothing is rewritten, and the weights stay the model's own, so a
``state_dict`` or a later ``train()`` sees no difference. Layers are merged only when nothing could
observe the difference: they are exactly ``Conv2d``, ``BatchNorm2d`` and ``ReLU``/``ReLU6``/``Hardswish``
(or a squeeze-and-excitation block's own pool, convolutions and element-wise activations), none has a
forward hook or an instance-level ``forward``, and the channels match. Any other layer runs as usual.

Measured on a 2-core AMD EPYC (AVX2): see the README's benchmark section.
"""
import numpy as np

from kernels._jit import one_blas_thread
from kernels.pooling import global_avg_pool2d_forward
from kernels.squeeze_excitation import squeeze_excitation_clip_hardsigmoid

from .activation import Hardsigmoid, Hardswish, ReLU, ReLU6, Sigmoid, _Elementwise
from .conv import Conv2d
from .grad_mode import is_grad_enabled
from .norm import BatchNorm2d
from .pooling import AdaptiveAvgPool2d

_CLIP_RANGE = {ReLU: (0.0, np.inf), ReLU6: (0.0, 6.0)}
# what finishes a convolution's output after its batch norm: (low, high, hard swish after the clip)
_CONV_ACTIVATIONS = {ReLU: (0.0, np.inf, False), ReLU6: (0.0, 6.0, False), Hardswish: (-np.inf, np.inf, True)}


def _plain(layer, kind):
    """Is ``layer`` exactly of class ``kind``, unhooked, with the class's own ``forward``?"""
    return type(layer) is kind and not layer._forward_hooks and "forward" not in layer.__dict__


def _uses_running_stats(norm):
    return not norm.training and norm.track_running_stats and norm._buffers["running_mean"] is not None


def _fusable_run(layers, start, grad_enabled=False):
    """How many layers from ``layers[start]`` run fused: 3 or 2 for Conv2d -> BatchNorm2d (running
    statistics) -> ReLU/ReLU6/Hardswish without gradients (2 without the activation), 2 for BatchNorm2d
    -> ReLU/ReLU6 in any mode, else 0."""
    if start + 1 >= len(layers):
        return 0
    first, second = layers[start], layers[start + 1]
    if _plain(first, BatchNorm2d):
        return 2 if any(_plain(second, kind) for kind in _CLIP_RANGE) else 0
    if grad_enabled or not (_plain(first, Conv2d) and _plain(second, BatchNorm2d)):
        return 0
    if not _uses_running_stats(second) or second.num_features != first.out_channels:
        return 0
    if start + 2 < len(layers) and any(_plain(layers[start + 2], kind) for kind in _CONV_ACTIVATIONS):
        return 3
    return 2


def fused_chain_forward(layers, x):
    """:func:`tinycnn.nn.chain_forward` with fusable runs of layers merged (:func:`_fusable_run`)."""
    grad_enabled = is_grad_enabled()
    index = 0
    while index < len(layers):
        length = _fusable_run(layers, index, grad_enabled)
        if length == 0:
            x = layers[index](x)
            index += 1
            continue
        if isinstance(layers[index], BatchNorm2d):
            x = norm_clip(layers[index], layers[index + 1], x)
        else:
            activation = layers[index + 2] if length == 3 else None
            x = conv_norm_clip(layers[index], layers[index + 1], activation, x)
        index += length
    return x


def norm_clip(norm, activation, x):
    """``activation(norm(x))`` for a ReLU/ReLU6 ``activation``: the clip happens in batch norm's own pass.

    Parameters
    ----------
    norm : BatchNorm2d (any mode)
    activation : ReLU or ReLU6
    x : ndarray (N, C, H, W)

    Returns
    -------
    y : ndarray (N, C, H, W), bit-identical to the two layers called one by one.

    Both layers are left ready for backward (unless inside ``no_grad()``): the activation caches the
    clipped output instead of its input, which gives the same derivative ``1[low < . < high]`` (a value
    strictly inside the range is unchanged by the clip, one outside or at a kink lands on a kink).
    Training MobileNet V2 this saves a pass over 35 of its 52 batch-norm outputs each way.
    """
    low, high = _CLIP_RANGE[type(activation)]
    y = norm._normalise(x, low, high)
    if not is_grad_enabled():
        _mark_without_grad(norm, activation)
        return y
    for layer in (norm, activation):
        layer.__dict__.pop("_forward_without_grad", None)
    norm.note_input(x)
    activation.__dict__.pop("_input_sample", None)
    activation._x = y
    norm._clipped_by = (activation, y)          # fused_chain_backward takes the two backwards as one
    return y


def fused_chain_backward(layers, grad_out):
    """:func:`tinycnn.nn.chain_backward`; a batch norm whose ReLU/ReLU6 ran in its forward pass
    (:func:`norm_clip`) takes that activation's backward into its own passes too, as long as the
    activation's cache is still the one that forward left."""
    index = len(layers) - 1
    while index >= 0:
        layer = layers[index]
        norm = layers[index - 1] if index > 0 else None
        fused = getattr(norm, "_clipped_by", None) if type(norm) is BatchNorm2d else None
        if fused is not None and fused[0] is layer and layer._x is fused[1] and "backward" not in layer.__dict__:
            layer._check_grad_out(grad_out, layer._x.shape)         # consumes the activation's cache
            low, high = _CLIP_RANGE[type(layer)]
            grad_out = norm._backward(grad_out, layer._x, low, high)
            index -= 2
        else:
            grad_out = layer.backward(grad_out)         # each layer returns dL/d(its input)
            index -= 1
    return grad_out


def _mark_without_grad(*layers):
    for layer in layers:
        if layer is not None:
            layer.__dict__["_forward_without_grad"] = True


def conv_norm_clip(conv, norm, activation, x):
    """``activation(norm(conv(x)))`` with ``norm`` in evaluation mode, as one convolution and one pass.

    Parameters
    ----------
    conv : Conv2d
    norm : BatchNorm2d using its running statistics, ``num_features == conv.out_channels``
    activation : ReLU, ReLU6, Hardswish or None
    x : ndarray (N, C_in, H, W)

    Returns
    -------
    y : ndarray (N, C_out, H_out, W_out), bit-identical to the three layers called one by one.

    The three layers are marked as having run without gradients: their ``backward`` raises.
    """
    conv._check_input(x, channels=conv.in_channels)
    scale, shift, _ = norm._running_affine(x.dtype)                            # (C_out,) each
    low, high, hardswish = (-np.inf, np.inf, False) if activation is None else _CONV_ACTIVATIONS[type(activation)]
    # the batch norm and the activation finish the convolution's output
    y = conv._convolve(x, epilogue=(scale, shift, low, high, hardswish))
    _mark_without_grad(conv, norm, activation)
    return y


# the activations whose forward is "check, cache, return self._function(x)": _function is the layer
_FUNCTION_FORWARDS = (_Elementwise.forward, Sigmoid.forward)


def _layer_function(layer):
    """``layer._function`` for an unhooked activation whose ``forward`` only adds caching to it, else None."""
    if layer._forward_hooks or "forward" in layer.__dict__ or type(layer).forward not in _FUNCTION_FORWARDS:
        return None
    return layer._function


def squeeze_excitation_without_grad(se, x):
    """``se(x)`` inside ``no_grad()`` for a :class:`~tinycnn.nn.SqueezeExcitation` block ``se``, its layers'
    kernels called directly; ``None`` when one of its layers is not the plain kind (hooked, replaced).

    Parameters
    ----------
    se : SqueezeExcitation
        ``avgpool`` a global ``AdaptiveAvgPool2d(1)``, ``fc1``/``fc2`` ``Conv2d``, ``activation`` and
        ``scale_activation`` element-wise activations (ReLU, Hardsigmoid, Sigmoid, ...).
    x : ndarray (N, C, H, W), already checked by ``se``

    Returns
    -------
    y : ndarray (N, C, H, W), bit-identical to the block's layers called one by one::

        gate = scale_activation(fc2(activation(fc1(avgpool(x)))))       (N, C, 1, 1)
        y = gate * x

    On a V3 block's ``(1, 576, 1, 1)`` gate each layer call's bookkeeping (checks, caches, geometry) costs
    more than its arithmetic; called directly, the block on (1, 576, 7, 7) took 127 instead of 140 us
    (alternated in one process, a 2-core AMD EPYC). One image through a ReLU/ReLU6 and hard-sigmoid
    block is one compiled call (:func:`run_one_image_block`; V3-Small's batch-1 blocks 90-160 us each
    before). The five layers are marked as having run without gradients.
    """
    layers = _plain_squeeze_excitation_layers(se)
    if layers is None:
        return None
    pool, fc1, activation_layer, fc2, gate_layer = layers
    if x.shape[0] == 1:
        arguments = _one_image_arguments(layers)
        if arguments is not None and arguments[0].dtype == x.dtype:   # (else the layers raise their error)
            y = run_one_image_block(arguments, x)
            if y is not None:
                _mark_without_grad(*layers)
                return y
    activation, gate_activation = _layer_function(activation_layer), _layer_function(gate_layer)
    squeezed = global_avg_pool2d_forward(x)                                     # (N, C, 1, 1)
    hidden = activation(fc1._convolve(fc1._check_input(squeezed, channels=fc1.in_channels)))    # (N, S, 1, 1)
    gate = gate_activation(fc2._convolve(fc2._check_input(hidden, channels=fc2.in_channels)))   # (N, C, 1, 1)
    _mark_without_grad(*layers)
    return gate * x                                                             # broadcast over H, W


def _plain_squeeze_excitation_layers(se):
    """``(avgpool, fc1, activation, fc2, scale_activation)`` of ``se`` when every one is the plain kind
    (:func:`_plain`, :func:`_layer_function`), else None."""
    # the registry, not se.fc1 (Conv2d._convolve says why), under the block's own names
    pool, fc1, activation, fc2, gate = layers = tuple(se._modules[name] for name in se._LAYER_NAMES)
    if (_layer_function(activation) is None or _layer_function(gate) is None or not _plain(fc1, Conv2d)
            or not _plain(fc2, Conv2d) or not _plain(pool, AdaptiveAvgPool2d) or pool._size != (1, 1)):
        return None
    return layers


def one_image_block_arguments(se):
    """The arguments of the one-image kernel for MobileNet V3's block ``se``, or None for any other block.

    Returns
    -------
    ``(fc1_weight (S, C, 1, 1), fc1_bias (S,), fc2_weight (C, S, 1, 1), fc2_bias (C,), high)``: the block's
    own arrays, all of one dtype, and the clip after ``fc1`` (``inf`` for ReLU, 6 for ReLU6); None unless
    its layers are plain, the activation is ReLU or ReLU6, the gate a hard sigmoid, and both convolutions
    have a bias. ``no_grad()`` runs such a block on one image as one compiled call
    (:func:`run_one_image_block`), and so does a frozen model (``tinycnn.nn.freeze``).
    """
    return _one_image_arguments(_plain_squeeze_excitation_layers(se))


def _one_image_arguments(layers):
    """:func:`one_image_block_arguments` for the block's plain layers (or None)."""
    if layers is None:
        return None
    _, fc1, activation, fc2, gate = layers
    if type(activation) not in (ReLU, ReLU6) or type(gate) is not Hardsigmoid:
        return None
    parameters = (fc1._parameters["weight"], fc1._parameters["bias"], fc2._parameters["weight"],
                  fc2._parameters["bias"])
    if any(parameter is None for parameter in parameters):
        return None
    weights = tuple(parameter.data for parameter in parameters)
    if len({weight.dtype for weight in weights}) != 1:
        return None
    return (*weights, activation.HIGH)


def run_one_image_block(arguments, x):
    """MobileNet V3's block on one image (1, C, H, W) of the weights' dtype as one compiled call
    (:func:`kernels.squeeze_excitation.squeeze_excitation_clip_hardsigmoid`, same bits as the layers), with
    ``arguments`` from :func:`one_image_block_arguments`; None when that kernel declines (no BLAS gemv,
    convolutions too large)."""
    *weights, high = arguments
    with one_blas_thread():
        return squeeze_excitation_clip_hardsigmoid(x, *weights, high=high)
