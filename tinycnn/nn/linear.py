"""Fully connected layer ``y = x W^T + b``: one matrix product (NumPy), or for one row BLAS's
matrix-vector product (:func:`kernels._gemm.matrix_vector`)."""
import numbers

from kernels._gemm import matrix_vector
from kernels._jit import one_blas_thread

from . import init
from .module import Module


class Linear(Module):
    """Affine map of the last axis: ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rng : numpy.random.Generator, optional
        Generator for the initial weights; default: the shared one (``tinycnn.nn.init.manual_seed``).

    Shapes
    ------
    x : (N, in_features) (or ``(*, in_features)``) -> y : (N, out_features).
    weight : (out_features, in_features), bias : (out_features,); initialised as PyTorch,
    ``U(-1/sqrt(in_features), 1/sqrt(in_features))``.

    Backward, with ``G = dL/dy`` flattened to ``(M, out_features)`` and ``X`` to ``(M, in_features)``::

        dL/dW = G^T X,   dL/db = sum of G's rows,   dL/dx = G W
    """

    def __init__(self, in_features, out_features, bias=True, *, rng=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight, bias = init.new_weight_and_bias((self.out_features, self.in_features), self.out_features,
                                                     bias, rng)
        self.register_parameter("bias", bias)                          # None without a bias
        self._x = None              # cached input, flattened to (M, in_features)
        self._input_shape = None
        self._output_shape = None

    def forward(self, x):
        self._check_input(x, ndim=None)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expects input of shape (N, {self.in_features}) (last axis = in_features); "
                             f"got shape {x.shape}")
        x_rows = x.reshape(-1, self.in_features)                 # (M, in)
        with one_blas_thread():                                   # as the convolutions: see kernels/_jit.py
            if x_rows.shape[0] == 1:
                # one row (a batch-1 classifier): a matrix-vector product, in blocks of rows on numba's
                # threads for a large weight (kernels._gemm.matrix_vector)
                y = matrix_vector(self.weight.data, x_rows[0])[None]
            else:
                y = x_rows @ self.weight.data.T                   # (M, out)
        if self.bias is not None:
            y += self.bias.data
        self._x, self._input_shape = x_rows, x.shape
        self._output_shape = x.shape[:-1] + (self.out_features,)
        return y.reshape(self._output_shape)

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        grad_rows = grad_out.reshape(-1, self.out_features)       # (M, out)
        with one_blas_thread():
            self.weight.grad += grad_rows.T @ self._x              # (out, in)
            grad_x = grad_rows @ self.weight.data                  # (M, in)
        if self.bias is not None:
            self.bias.grad += grad_rows.sum(axis=0)               # (out,)
        return grad_x.reshape(self._input_shape)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
