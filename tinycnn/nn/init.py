"""Parameter initialisation, and the one random generator every layer draws from.

How randomness works in ``tinycnn.nn`` (one rule, as in PyTorch):

* There is a single module-level :class:`numpy.random.Generator`. Layer constructors (``Conv2d``,
  ``ConvTranspose2d``, ``Linear``) draw their initial weights from it, and ``Dropout`` draws its masks
  from it, unless they were given their own generator with the keyword ``rng=``.
* It starts from a fixed seed (:data:`DEFAULT_SEED`), so a fresh Python process builds the same
  model every time -- PyTorch does the same (its default generator also has a fixed start seed).
* :func:`manual_seed` restarts it: ``manual_seed(0); model = mobilenet_v2()`` is reproducible.

    >>> from tinycnn.nn import init, Linear
    >>> _ = init.manual_seed(0); a = Linear(4, 3).weight.data
    >>> _ = init.manual_seed(0); b = Linear(4, 3).weight.data
    >>> bool((a == b).all())
    True

The initialisers below mirror ``torch.nn.init`` (same names, same formulas, same trailing underscore
meaning "fills its argument in place"). They accept a :class:`~tinycnn.nn.Parameter` or a NumPy array.
Default layer initialisation (PyTorch's ``reset_parameters``): convolution and linear weights use
``kaiming_uniform_(w, a=sqrt(5))``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and so does their bias;
batch norm starts at ``weight = 1, bias = 0``, ``running_mean = 0, running_var = 1``.
"""
import contextlib
import math

import numpy as np

from .._system import check_fits
from .module import Parameter

DEFAULT_SEED = 0

_generator = np.random.default_rng(DEFAULT_SEED)
_skipping_draws = False


def manual_seed(seed):
    """Restart the shared generator from ``seed``; returns it.

    Every later layer construction (and every ``Dropout`` mask without its own ``rng``) is then
    reproducible.
    """
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator():
    """The shared :class:`numpy.random.Generator` (changes identity after :func:`manual_seed`)."""
    return _generator


@contextlib.contextmanager
def skip_init(skip=True):
    """Build layers without drawing their random initial weights (PyTorch: ``torch.nn.utils.skip_init``).

    Inside the ``with`` block the random initialisers (:func:`uniform_`, :func:`normal_` and every one
    built on them) leave their tensor as it is -- zeros for a fresh layer -- and draw nothing, so the
    shared generator is left where it was. Constant initialisers still fill (batch norm keeps
    ``weight = 1``). For models built only for their shapes: ``tinycnn summary vgg16`` would otherwise
    spend seconds drawing VGG-16's 138M weights it never reads. ``skip=False`` makes the block change
    nothing (an outer skipping block still skips), for callers that skip only sometimes: ``tinycnn
    summary`` draws the weights when it times the layers.

        >>> from tinycnn.nn import init, Linear
        >>> with init.skip_init():
        ...     layer = Linear(4, 3)
        >>> bool((layer.weight.data == 0).all())
        True
    """
    global _skipping_draws
    outer = _skipping_draws
    _skipping_draws = outer or bool(skip)
    try:
        yield
    finally:
        _skipping_draws = outer


def _resolve(rng):
    return _generator if rng is None else rng


def _array_of(tensor):
    """The ndarray behind a Parameter (its ``.data``) or the array itself."""
    array = tensor.data if isinstance(tensor, Parameter) else tensor     # (an ndarray's own .data is a buffer)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a Parameter or numpy.ndarray; got {type(tensor).__name__}")
    return array


def calculate_fan_in_and_fan_out(shape):
    """``(fan_in, fan_out)`` of a weight shape, as ``torch.nn.init._calculate_fan_in_and_fan_out``.

    For a weight ``(d0, d1, *kernel)``: ``fan_in = d1 * prod(kernel)``, ``fan_out = d0 * prod(kernel)``.
    So a convolution ``(C_out, C_in/groups, kH, kW)`` has ``fan_in = C_in/groups * kH * kW``, and a
    transposed convolution ``(C_in, C_out/groups, kH, kW)`` has ``fan_in = C_out/groups * kH * kW``
    (PyTorch reads the same axis for both).
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a weight with at least 2 dimensions; got shape {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity, param=None):
    """Recommended gain for an activation (``torch.nn.init.calculate_gain``).

    ``linear``/``conv*``/``sigmoid``: 1; ``tanh``: 5/3; ``relu``: sqrt(2);
    ``leaky_relu``: sqrt(2 / (1 + slope^2)) with slope ``param`` (default 0.01); ``selu``: 3/4.
    """
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                        "conv_transpose3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _fan(shape, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out'; got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(shape)
    return fan_in if mode == "fan_in" else fan_out


#: random fills draw this many numbers at a time (8 MiB of float64): :func:`_fill_in_chunks`
DRAW_CHUNK = 1 << 20


def _fill_in_chunks(array, draw, first, second):
    """``array[...] = draw(first, second, size=array.shape)`` a million numbers at a time.

    The generator fills in order, so the values are the same bits as one draw; but the float64 draws
    never stand in memory all at once (VGG-16's 103M-weight layer would need 0.8 GB for them).
    """
    if not array.flags.c_contiguous:            # a strided view: reshape would copy, fill it in one draw
        array[...] = draw(first, second, size=array.shape)
        return
    flat = array.reshape(-1)                    # a view of the same memory
    for start in range(0, flat.size, DRAW_CHUNK):
        stop = min(start + DRAW_CHUNK, flat.size)
        flat[start:stop] = draw(first, second, size=stop - start)


def uniform_(tensor, a=0.0, b=1.0, rng=None):
    """Fill ``tensor`` in place with draws from ``U(a, b)``; returns it (unchanged under :func:`skip_init`)."""
    array = _array_of(tensor)
    if _skipping_draws:
        return tensor
    _fill_in_chunks(array, _resolve(rng).uniform, a, b)
    return tensor


def normal_(tensor, mean=0.0, std=1.0, rng=None):
    """Fill ``tensor`` in place with draws from ``N(mean, std^2)``; returns it (unchanged under :func:`skip_init`)."""
    array = _array_of(tensor)
    if _skipping_draws:
        return tensor
    _fill_in_chunks(array, _resolve(rng).normal, mean, std)
    return tensor


def constant_(tensor, value):
    """Fill ``tensor`` in place with ``value``; returns it."""
    _array_of(tensor)[...] = value
    return tensor


def zeros_(tensor):
    """Fill ``tensor`` with zeros; returns it."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill ``tensor`` with ones; returns it."""
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He (Kaiming) uniform initialisation, arXiv:1502.01852: ``U(-bound, bound)``.

    ``bound = gain * sqrt(3 / fan)``, ``gain = calculate_gain(nonlinearity, a)``. PyTorch's default for
    convolution and linear weights is ``a = sqrt(5)``, which gives ``bound = 1 / sqrt(fan_in)``.
    """
    array = _array_of(tensor)
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(array.shape, mode))
    return uniform_(tensor, -bound, bound, rng=rng)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He (Kaiming) normal initialisation, arXiv:1502.01852: ``N(0, std^2)``, ``std = gain / sqrt(fan)``.

    torchvision's MobileNets and ResNets use ``kaiming_normal_(w, mode="fan_out")`` for convolutions.
    """
    array = _array_of(tensor)
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(array.shape, mode))
    return normal_(tensor, 0.0, std, rng=rng)


def xavier_uniform_(tensor, gain=1.0, rng=None):
    """Glorot uniform initialisation: ``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(_array_of(tensor).shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, rng=rng)


def new_weight_and_bias(weight_shape, bias_size, bias=True, rng=None):
    """Fresh float32 ``(weight, bias)`` Parameters of a convolution or linear layer, initialised by
    :func:`default_weight_and_bias_` (PyTorch's defaults); ``bias`` is None when ``bias=False``.

    weight_shape : e.g. (C_out, C_in/groups, kH, kW) or (out_features, in_features)
    bias_size : int, C_out (out_features)
    """
    count = math.prod(weight_shape)
    # value + gradient (float32): refuse before allocating
    check_fits(count * (4 + 4), f"a weight of shape {tuple(weight_shape)} ({count:,} numbers)")
    weight = Parameter(np.zeros(weight_shape, dtype=np.float32))
    bias = Parameter(np.zeros(bias_size, dtype=np.float32)) if bias else None
    default_weight_and_bias_(weight, bias, rng=rng)
    return weight, bias


def default_weight_and_bias_(weight, bias, rng=None):
    """PyTorch's ``reset_parameters`` for convolution and linear layers.

    ``weight ~ kaiming_uniform(a=sqrt(5))`` = ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` and, if there is a
    bias, ``bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with the weight's ``fan_in``.
    """
    kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(_array_of(weight).shape)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound, rng=rng)
