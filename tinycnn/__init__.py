"""tinycnn: a from-scratch NumPy + numba engine for learning how lightweight CNNs work.

Subpackages: :mod:`tinycnn.losses`, :mod:`tinycnn.optim`, :mod:`tinycnn.data`; the compute kernels
live in the top-level package :mod:`kernels`.
"""
from . import data, io, losses, nn, optim
from .gradcheck import gradcheck
from .losses import CrossEntropyLoss, MSELoss
from .profile import Profile, profile

__version__ = "0.1.0"
__all__ = ["data", "io", "losses", "nn", "optim", "gradcheck", "CrossEntropyLoss", "MSELoss", "profile", "Profile"]
