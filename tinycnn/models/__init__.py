"""The model zoo: lightweight CNNs written as tables of rows, with torchvision's layouts where it has them.

Every module of this package defines one family and registers its builders with
:func:`register_model`; they are imported here so :func:`get_model` and :func:`list_models` see them.
"""
import importlib
import pkgutil

from ._registry import get_model, list_models, model_arguments, register_model

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        _family = importlib.import_module(f"{__name__}.{_module.name}")
        globals().update({name: getattr(_family, name) for name in getattr(_family, "__all__", [])})

__all__ = ["get_model", "list_models", "model_arguments", "register_model"] + [n for n in list_models()]
