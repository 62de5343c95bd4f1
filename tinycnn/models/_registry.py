"""The model registry: every model file registers its builder functions by name."""
import difflib
import inspect
import math

from .._system import check_fits

_MODELS = {}


def register_model(builder):
    """Decorator: make ``builder`` available as ``get_model(builder.__name__)``."""
    name = builder.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = builder
    return builder


def list_models():
    """Names of every model ``get_model`` can build, sorted."""
    return sorted(_MODELS)


def _builder(name):
    if name not in _MODELS:
        close = difflib.get_close_matches(str(name), list_models(), n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}choose one of: {', '.join(list_models())}")
    return _MODELS[name]


def _check_width_fits(name, kwargs):
    """Refuse a ``width_mult`` whose model cannot fit in memory, before allocating it.

    Parameters grow with the square of the width (every layer's in and out channels scale), so the
    model at width ``a > 2`` holds about ``a**2 / 2**2`` times the parameters of the model at width 2.
    Each parameter costs 16 bytes while it is made (float32 value and gradient, float64 random draw).
    """
    width = kwargs.get("width_mult")
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not width > 2:
        return
    if not math.isfinite(width):
        raise ValueError(f"width_mult must be a finite number; got {width!r}")
    at_two = sum(p.size for p in _MODELS[name](**{**kwargs, "width_mult": 2}).parameters())
    estimate = int(at_two * (width / 2) ** 2)
    check_fits(estimate * 16, f"{name} with width_mult={width:g} (about {estimate:,} parameters)")


def model_arguments(name):
    """The keyword arguments model ``name``'s builder takes, e.g. ``("num_classes", "width_mult", "in_channels")``.

    ``"width_mult" in model_arguments(name)`` tells whether a model has a width multiplier (the
    ``tinycnn train --width-mult`` check). ``ValueError`` for an unknown name.
    """
    return tuple(inspect.signature(_builder(name)).parameters)


def get_model(name, **kwargs):
    """Build the model registered as ``name`` (see :func:`list_models`), passing ``kwargs`` on.

    Example: ``get_model("mobilenet_v2", num_classes=10, width_mult=0.5)``.
    """
    builder = _builder(name)
    _check_width_fits(name, kwargs)
    return builder(**kwargs)
