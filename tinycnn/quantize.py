"""Quantisation: fake-quantised tensors, and post-training int8 / float16 simulation of a model.

A b-bit **affine quantiser** maps a real number to an integer and back (Jacob et al., "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", arXiv:1712.05877)::

    q     = clamp(round(x / scale) + zero_point, quant_min, quant_max)       (an integer)
    x_hat = (q - zero_point) * scale                                         (its real value)

**Fake quantisation** returns ``x_hat``: a float tensor that holds only the values the integer grid can
represent, so an ordinary float network shows the accuracy int8 inference would have. Our
:func:`fake_quantize` is PyTorch's ``torch.fake_quantize_per_tensor_affine`` /
``torch.fake_quantize_per_channel_affine`` to the bit, rounding included: PyTorch's CPU kernel
multiplies by ``inv_scale = 1.0f / scale`` (a float32 reciprocal, not a division) and rounds with
``std::nearbyint``, i.e. **half to even** (``0.5 -> 0``, ``1.5 -> 2``, ``2.5 -> 2``); ``numpy.rint`` rounds
the same way. Its gradient is the **straight-through estimator** (Bengio et al., arXiv:1308.3432):
``dL/dx = dL/dx_hat`` where ``q`` was not clamped, 0 where it was (:func:`fake_quantize_backward`).

**Post-training quantisation** (:func:`quantize_model`) of a trained model, without retraining:

1. batch norm is folded into the convolution before it (eval mode: BN is a per-channel affine map),
   ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``;
2. weights are quantised **per output channel**, symmetric (``zero_point = 0``, ``[-2^(b-1), 2^(b-1) - 1]``);
3. the input of every convolution and fully connected layer is quantised **per tensor**, asymmetric
   (``[0, 2^b - 1]``), with a range calibrated on a few batches: the minimum and maximum seen, or a
   percentile of the values (clips rare outliers, a finer grid for the rest).

The result simulates int8 inference: every multiplication sees integer-grid operands; accumulation,
residual adds and activations stay in float (an int8 kernel accumulates exactly in int32, so what is
lost is only the rounding of each layer's input, which is what we simulate). ``precision="float16"``
rounds weights and layer inputs to float16 instead.

**Why ReLU6** (MobileNet V1/V2, seeds 000, 001, 003): an activation bounded by 6 has a bounded range, so
an 8-bit grid over ``[0, 6]`` has a step of ``6/255``; an unbounded ReLU's range is set by its largest
activation, and a few large values coarsen the grid for all the others. :func:`activation_ranges`
measures this; ``tools/bench_relu6_quantization.py`` measures the accuracy it costs.
"""
import copy
import numbers

import numpy as np

from . import nn

__all__ = ["fake_quantize", "fake_quantize_backward", "choose_qparams", "FakeQuantize", "fold_batch_norm",
           "quantize_model", "QuantizedLayer", "activation_ranges", "replace_activations", "model_size_bytes",
           "leaky_relu_integer", "LEAKY_RELU_MULTIPLIER", "LEAKY_RELU_SHIFT", "PRECISIONS"]

PRECISIONS = ("int", "float16")

# seed 002: leaky ReLU's slope 0.1 as an integer multiply and shift, 0.1 ~ 13 / 2^7 = 0.1015625
LEAKY_RELU_MULTIPLIER = 13
LEAKY_RELU_SHIFT = 7


# ----------------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------------
def _check_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {value!r}")
    return int(value)


def _prepare_qparams(x, scale, zero_point, quant_min, quant_max, axis):
    """Validate the arguments; return ``(x, scale, zero_point, qmin, qmax)`` broadcastable against ``x``."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must be a float32 or float64 numpy array; got "
                        f"{type(x).__name__ if not isinstance(x, np.ndarray) else x.dtype}")
    quant_min, quant_max = _check_int(quant_min, "quant_min"), _check_int(quant_max, "quant_max")
    if quant_min > quant_max:
        raise ValueError(f"quant_min ({quant_min}) must be <= quant_max ({quant_max})")
    scale = np.asarray(scale, dtype=np.float64)
    zero_point = np.asarray(zero_point)
    if zero_point.dtype.kind not in "iu":
        raise TypeError(f"zero_point must be integer; got dtype {zero_point.dtype}")
    if axis is None:
        if scale.ndim != 0 or zero_point.ndim != 0:
            raise ValueError(f"per-tensor fake_quantize (axis=None) needs a scalar scale and zero_point; got shapes "
                             f"{scale.shape} and {zero_point.shape}")
    else:
        axis = _check_int(axis, "axis")
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(f"axis {axis} is out of range for x of shape {x.shape}")
        axis %= x.ndim
        channels = x.shape[axis]
        if scale.shape != (channels,) or zero_point.shape != (channels,):
            raise ValueError(f"per-channel fake_quantize along axis {axis} needs scale and zero_point of shape "
                             f"({channels},); got {scale.shape} and {zero_point.shape}")
        shape = [1] * x.ndim
        shape[axis] = channels
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError(f"scale must be positive and finite; got {scale.ravel()[:8]}")
    if np.any(zero_point < quant_min) or np.any(zero_point > quant_max):
        raise ValueError(f"zero_point must lie in [quant_min, quant_max] = [{quant_min}, {quant_max}]; "
                         f"got {zero_point.ravel()[:8]}")
    return x, scale.astype(np.float32), zero_point.astype(np.int64), quant_min, quant_max


def _quantize_integers(x, scale, zero_point):
    """Unclamped integer codes ``zero_point + rint(x * (1.0f / scale))``, as PyTorch's CPU kernel computes them.

    ``1.0f / scale`` is a float32 reciprocal; the product is taken in ``x``'s dtype; ``rint`` rounds half
    to even (``std::nearbyint``).
    """
    inv_scale = np.float32(1.0) / scale                                   # float32, as PyTorch
    return zero_point + np.rint(x * inv_scale.astype(x.dtype))             # float array of integers


def fake_quantize(x, scale, zero_point, quant_min, quant_max, axis=None):
    """Quantise ``x`` to the integer grid and back: ``(clamp(rint(x/scale) + zp, qmin, qmax) - zp) * scale``.

    Equal to ``torch.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)`` when
    ``axis`` is None and to ``torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis, quant_min,
    quant_max)`` otherwise, bit for bit: ``x / scale`` is ``x * (1.0f / scale)`` with a float32 reciprocal,
    and rounding is half to even (``rint``: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2). For float64 input PyTorch
    takes the final ``(q - zp) * scale`` in float32 per tensor but in float64 per channel; so do we.

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape
    scale : float, or (C,) array when ``axis`` is given; positive (used as float32, as PyTorch)
    zero_point : int, or (C,) int array; in ``[quant_min, quant_max]``
    quant_min, quant_max : int
        The integer range, e.g. ``0, 255`` (uint8) or ``-128, 127`` (int8).
    axis : int or None
        None: one scale for the whole tensor; otherwise ``scale[c]`` applies to ``x`` indexed ``c`` along
        ``axis`` (axis 0 of a ``(C_out, C_in, kH, kW)`` weight: per output channel).

    Returns
    -------
    ndarray, same shape and dtype as ``x``.
    """
    x, scale, zero_point, quant_min, quant_max = _prepare_qparams(x, scale, zero_point, quant_min, quant_max, axis)
    q = np.clip(_quantize_integers(x, scale, zero_point), quant_min, quant_max)
    # PyTorch's last product: in float32 for one scale, in x's dtype per channel (float64 input differs)
    steps = (q - zero_point).astype(np.float32 if axis is None else x.dtype)
    return (steps * scale).astype(x.dtype)


def fake_quantize_backward(grad_out, x, scale, zero_point, quant_min, quant_max, axis=None):
    """Straight-through gradient of :func:`fake_quantize`: ``grad_out`` where ``q`` was not clamped, else 0.

    Rounding has derivative 0 almost everywhere, which would stop all learning; the straight-through
    estimator (arXiv:1308.3432) treats it as the identity, and keeps the clamp's zero gradient outside
    ``[quant_min, quant_max]`` (PyTorch's ``fake_quantize_*_affine`` backward, the same mask).

    Shapes: ``grad_out`` and ``x`` alike; returns ``dL/dx`` of that shape.
    """
    x, scale, zero_point, quant_min, quant_max = _prepare_qparams(x, scale, zero_point, quant_min, quant_max, axis)
    grad_out = np.asarray(grad_out)
    if grad_out.shape != x.shape:
        raise ValueError(f"grad_out has shape {grad_out.shape}; expected x's shape {x.shape}")
    q = _quantize_integers(x, scale, zero_point)
    return np.where((q >= quant_min) & (q <= quant_max), grad_out, 0).astype(grad_out.dtype)


def choose_qparams(x_min, x_max, bits=8, symmetric=False):
    """Scale and zero point that cover ``[x_min, x_max]`` with a ``bits``-bit grid (PyTorch's MinMaxObserver rule).

    The range is first widened to contain 0 (so zero, the padding value, is exact)::

        asymmetric: [qmin, qmax] = [0, 2^b - 1],            scale = (max - min) / (qmax - qmin),
                    zero_point = clamp(qmin - round(min / scale), qmin, qmax)
        symmetric:  [qmin, qmax] = [-2^(b-1), 2^(b-1) - 1], scale = max(|min|, max) / ((qmax - qmin) / 2),
                    zero_point = 0

    ``scale`` is at least float32's machine epsilon (a constant tensor still gets a valid grid).

    Parameters
    ----------
    x_min, x_max : float or array (per channel), ``x_min <= x_max``
    bits : int in [2, 16]
    symmetric : bool

    Returns
    -------
    (scale, zero_point, quant_min, quant_max): float64 and int64 arrays (0-d for scalar input), two ints.
    """
    bits = _check_int(bits, "bits")
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be between 2 and 16; got {bits}")
    x_min, x_max = np.asarray(x_min, dtype=np.float64), np.asarray(x_max, dtype=np.float64)
    if x_min.shape != x_max.shape:
        raise ValueError(f"x_min and x_max must have the same shape; got {x_min.shape} and {x_max.shape}")
    if not (np.all(np.isfinite(x_min)) and np.all(np.isfinite(x_max))):
        raise ValueError("x_min and x_max must be finite")
    if np.any(x_min > x_max):
        raise ValueError(f"x_min must be <= x_max; got {x_min} > {x_max}")
    min_neg, max_pos = np.minimum(x_min, 0.0), np.maximum(x_max, 0.0)
    eps = float(np.finfo(np.float32).eps)
    if symmetric:
        quant_min, quant_max = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        scale = np.maximum(np.maximum(-min_neg, max_pos) / ((quant_max - quant_min) / 2), eps)
        zero_point = np.zeros(scale.shape, dtype=np.int64)
    else:
        quant_min, quant_max = 0, 2 ** bits - 1
        scale = np.maximum((max_pos - min_neg) / (quant_max - quant_min), eps)
        zero_point = np.clip(quant_min - np.rint(min_neg / scale), quant_min, quant_max).astype(np.int64)
    return scale, zero_point, quant_min, quant_max


class FakeQuantize(nn.Module):
    """Layer form of :func:`fake_quantize` with fixed parameters; backward is the straight-through gradient.

    Shapes: any ``x`` -> same shape (per channel along ``axis``, e.g. 1 for ``(N, C, H, W)``).
    """

    def __init__(self, scale, zero_point, quant_min, quant_max, axis=None):
        super().__init__()
        self.scale, self.zero_point = scale, zero_point
        self.quant_min, self.quant_max, self.axis = quant_min, quant_max, axis
        self._x = None

    def _arguments(self):
        return self.scale, self.zero_point, self.quant_min, self.quant_max, self.axis

    def forward(self, x):
        self._x = x
        return fake_quantize(x, *self._arguments())

    def backward(self, grad_out):
        self._check_grad_out(grad_out, None if self._x is None else self._x.shape)
        return fake_quantize_backward(grad_out, self._x, *self._arguments())

    def extra_repr(self):
        return f"quant_min={self.quant_min}, quant_max={self.quant_max}, axis={self.axis}"


# ----------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------
def _replace_child(parent, name, module):
    """Put ``module`` in ``parent``'s child slot ``name`` without changing the children's order."""
    parent._modules[name] = module


def _children_with_parents(model):
    """Every ``(parent, child_name, child)`` of the module tree (children of containers and of blocks)."""
    for parent in model.modules():
        for name, child in list(parent._modules.items()):
            if child is not None:
                yield parent, name, child


def fold_batch_norm(model):
    """A copy of ``model`` (evaluation mode) with each ``BatchNorm2d`` folded into the convolution before it.

    In evaluation mode BN is ``y = gamma * (z - mean) / sqrt(var + eps) + beta``, a per-channel affine
    map, and ``z = conv(x) + b``; so ``BN(conv(x))`` is one convolution with::

        s  = gamma / sqrt(var + eps)                 (C_out,)
        w' = w * s[:, None, None, None]              (C_out, C_in/groups, kH, kW)
        b' = beta + (b - mean) * s                   (C_out,)

    A BN is folded when the child registered just before it (in the same parent) is a ``Conv2d`` with
    as many output channels: ``Conv2dNormActivation``'s ``0``/``1``, ResNet's ``conv1``/``bn1``,
    ``downsample.0``/``.1``. The BN becomes an :class:`~tinycnn.nn.Identity`. Use the folded model only
    for inference (``quantize_model`` checks that its logits equal the original's).
    """
    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        names = list(parent._modules)
        for before, name in zip(names, names[1:]):
            conv, bn = parent._modules[before], parent._modules[name]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                    and conv.out_channels == bn.num_features and bn.track_running_stats):
                continue
            dtype = conv.weight.data.dtype
            gamma = bn.weight.data if bn.weight is not None else np.ones(bn.num_features)
            beta = bn.bias.data if bn.bias is not None else np.zeros(bn.num_features)
            s = gamma.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)      # (C_out,)
            bias = conv.bias.data.astype(np.float64) if conv.bias is not None else 0.0
            conv.weight.data = (conv.weight.data * s[:, None, None, None]).astype(dtype)
            conv.bias = nn.Parameter((beta + (bias - bn.running_mean) * s).astype(dtype))
            _replace_child(parent, name, nn.Identity())
    return folded


class QuantizedLayer(nn.Module):
    """A ``Conv2d`` or ``Linear`` whose input is fake-quantised (per tensor) before it runs.

    The wrapped layer's weights are already fake-quantised (per output channel) by :func:`quantize_model`.
    ``input_qparams`` is ``(scale, zero_point, quant_min, quant_max)``, or None for float16 rounding.
    Inference only (no backward).
    """

    def __init__(self, layer, input_qparams):
        super().__init__()
        self.layer = layer
        self.input_qparams = input_qparams

    def forward(self, x):
        if self.input_qparams is None:
            x = x.astype(np.float16).astype(x.dtype)                  # float16 simulation
        else:
            x = fake_quantize(x, *self.input_qparams)
        return self.layer(x)

    def backward(self, grad_out):
        raise NotImplementedError("QuantizedLayer simulates inference only; train the float model")

    def extra_repr(self):
        if self.input_qparams is None:
            return "input float16"
        scale, zero_point, quant_min, quant_max = self.input_qparams
        return f"input scale={float(scale):.4g}, zero_point={int(zero_point)}, range=[{quant_min}, {quant_max}]"


_SAMPLE_PER_BATCH = 1 << 16     # values kept per layer and batch for percentiles (evenly strided)


def _collect_ranges(model, batches, kinds, output):
    """Run ``model`` on ``batches``; record, per named module of one of ``kinds``, what it sees.

    Returns ``{name: (min, max, sample)}`` of the module's inputs (``output=False``) or outputs
    (``output=True``): the exact minimum and maximum, and an evenly strided sample of at most
    ``_SAMPLE_PER_BATCH`` values per batch (for percentiles; all values would take gigabytes).
    """
    seen, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            def hook(module, inputs, result, name=name):
                values = np.asarray(result if output else inputs[0]).ravel()
                low, high, sample = seen.get(name, (np.inf, -np.inf, []))
                step = max(1, len(values) // _SAMPLE_PER_BATCH)
                sample.append(values[::step].astype(np.float64))
                seen[name] = (min(low, float(values.min())), max(high, float(values.max())), sample)
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: (low, high, np.concatenate(sample)) for name, (low, high, sample) in seen.items()}


def _as_batches(calibration):
    """``calibration`` as a list of (B, C, H, W) arrays: one array, a list of arrays, or (x, y) pairs."""
    if isinstance(calibration, np.ndarray):
        batches = [calibration]
    else:
        batches = [item[0] if isinstance(item, tuple) else item for item in calibration]
    if not batches or any(not isinstance(b, np.ndarray) or b.ndim != 4 for b in batches):
        raise ValueError("calibration must be a (N, C, H, W) array or an iterable of such batches (or of (x, y) "
                         "pairs); got none or another shape")
    return batches


def activation_ranges(model, calibration, kinds=(nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.SiLU)):
    """``{layer name: (min, max)}`` of every activation layer's output on the calibration images.

    The bound of ReLU6 shows here: its outputs never exceed 6, while a ReLU's maximum grows with its
    input, and an 8-bit grid over ``[0, max]`` gets coarser with it.
    """
    seen = _collect_ranges(model, _as_batches(calibration), kinds, output=True)
    return {name: (low, high) for name, (low, high, _) in seen.items()}


def replace_activations(model, old=nn.ReLU6, new=nn.ReLU):
    """Replace every ``old`` activation layer of ``model`` by ``new()``, in place; returns ``model``.

    ``replace_activations(mobilenet_v2(), nn.ReLU6, nn.ReLU)`` is the same network with unbounded ReLUs
    (the comparison of the ReLU6 argument).
    """
    for parent, name, child in list(_children_with_parents(model)):
        if type(child) is old:
            _replace_child(parent, name, new())
    return model


def quantize_model(model, calibration, bits=8, precision="int", calibration_method="minmax", percentile=99.99,
                   check_folding=True):
    """Post-training quantisation: a copy of ``model`` that simulates ``bits``-bit (or float16) inference.

    Parameters
    ----------
    model : Module
        A trained model; it is not changed.
    calibration : (N, C, H, W) array, or iterable of batches or (x, y) batches
        A few batches of *training* images (normalised as the model expects), to set activation ranges.
    bits : int in [2, 16]
        Weights: symmetric, per output channel; layer inputs: asymmetric, per tensor.
    precision : "int" or "float16"
        ``"float16"`` rounds weights and layer inputs to float16 instead (``bits`` ignored).
    calibration_method : "minmax" or "percentile"
        Range of each layer input: the min and max seen, or the ``100 - percentile`` and ``percentile``
        percentiles (values beyond are clamped).
    percentile : float in (50, 100]
    check_folding : bool
        Check that folding batch norm left the calibration logits unchanged (to float rounding).

    Returns
    -------
    Module in evaluation mode: BN folded, weights rounded, every ``Conv2d``/``Linear`` wrapped in a
    :class:`QuantizedLayer`. Its ``quantization`` attribute records the settings.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if calibration_method not in ("minmax", "percentile"):
        raise ValueError(f"calibration_method must be 'minmax' or 'percentile'; got {calibration_method!r}")
    if not (isinstance(percentile, numbers.Real) and 50 < percentile <= 100):
        raise ValueError(f"percentile must be in (50, 100]; got {percentile!r}")
    bits = _check_int(bits, "bits")
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be between 2 and 16; got {bits}")
    batches = _as_batches(calibration)
    folded = fold_batch_norm(model)
    if check_folding:
        was_training = model.training
        reference, result = model.eval()(batches[0]), folded(batches[0])
        model.train(was_training)
        tolerance = 1e-3 if batches[0].dtype == np.float32 else 1e-9      # float32 rounding of the fold
        if not np.allclose(result, reference, rtol=tolerance, atol=tolerance * np.abs(reference).max()):
            raise ValueError(f"folding batch norm changed {type(model).__name__}'s output (max difference "
                             f"{np.abs(result - reference).max():.3g}): a BatchNorm2d follows a layer that is "
                             f"not the convolution registered before it")
    layers = (nn.Conv2d, nn.Linear)
    inputs = _collect_ranges(folded, batches, layers, output=False) if precision == "int" else {}
    for parent_name, parent in list(folded.named_modules()):
        for name, layer in list(parent._modules.items()):
            if not isinstance(layer, layers):
                continue
            full_name = f"{parent_name}.{name}" if parent_name else name
            weight = layer.weight.data
            if precision == "float16":
                layer.weight.data = weight.astype(np.float16).astype(weight.dtype)
                if layer.bias is not None:
                    layer.bias.data = layer.bias.data.astype(np.float16).astype(weight.dtype)
                _replace_child(parent, name, QuantizedLayer(layer, None))
                continue
            per_channel = weight.reshape(len(weight), -1)                               # (C_out, rest)
            scale, zero_point, qmin, qmax = choose_qparams(per_channel.min(axis=1), per_channel.max(axis=1), bits,
                                                           symmetric=True)
            layer.weight.data = fake_quantize(weight, scale, zero_point, qmin, qmax, axis=0)
            low, high, sample = inputs[full_name]
            if calibration_method == "percentile":
                low, high = np.percentile(sample, [100 - percentile, percentile])
            _replace_child(parent, name, QuantizedLayer(layer, choose_qparams(low, high, bits)))
    folded.quantization = {"precision": precision, "bits": bits if precision == "int" else 16,
                           "calibration_method": calibration_method, "percentile": percentile}
    return folded.eval()


def model_size_bytes(model, precision="float32", bits=8):
    """Bytes to store ``model``'s parameters at ``precision`` ("float32", "float16" or "int").

    ``"int"``: each conv/linear weight at ``bits`` bits plus one float32 scale per output channel;
    biases (int32 in integer kernels) and everything else at 4 bytes. Counted on the model as given
    (fold batch norm first to count the deployed network).
    """
    if precision not in ("float32", "float16", "int"):
        raise ValueError(f"precision must be 'float32', 'float16' or 'int'; got {precision!r}")
    total = 0
    for module in model.modules():
        for name, parameter in module._parameters.items():
            if parameter is None:
                continue
            if precision == "float32":
                total += 4 * parameter.size
            elif precision == "float16":
                total += 2 * parameter.size
            elif name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)):
                total += -(-parameter.size * bits // 8) + 4 * parameter.shape[0]
            else:
                total += 4 * parameter.size
    return int(total)


def leaky_relu_integer(x):
    """Leaky ReLU with slope 0.1 on integers, without a multiplication by 0.1 (seed 002)::

        y = x                    for x >= 0
        y = (x * 13) >> 7        for x < 0           (13 / 128 = 0.1015625 ~ 0.1)

    ``>>`` is an arithmetic shift: ``floor(13 x / 128)``. Integer hardware does this with one multiply and
    one shift; the slope is 1.6% steeper than 0.1, and the floor adds at most one step.

    Parameters
    ----------
    x : integer ndarray (e.g. int8 codes, int32 accumulators)

    Returns
    -------
    ndarray of x's dtype (computed in int64, so ``13 * x`` cannot overflow).
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"leaky_relu_integer needs an integer array; got dtype {x.dtype}")
    wide = x.astype(np.int64)
    return np.where(wide >= 0, wide, (wide * LEAKY_RELU_MULTIPLIER) >> LEAKY_RELU_SHIFT).astype(x.dtype)
