"""tinycnn: a from-scratch NumPy + numba engine for learning how lightweight CNNs work."""
__version__ = "0.1.0"
