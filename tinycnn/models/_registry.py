"""The model registry: every model file registers its builder functions by name."""
import inspect

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
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _MODELS[name]


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
    return _builder(name)(**kwargs)
