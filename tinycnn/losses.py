"""Loss functions: cross-entropy (with label smoothing) and mean squared error.

A loss is used as in PyTorch, except that the gradient comes back from ``backward()`` instead of
being stored on a tensor::

    criterion = CrossEntropyLoss(label_smoothing=0.1)
    loss = criterion(logits, targets)      # a Python float
    grad_logits = criterion.backward()     # d loss / d logits, same shape and dtype as logits
    model.backward(grad_logits)

Like a layer, a loss caches in ``forward`` what ``backward`` needs; ``backward`` before ``forward``
raises ``RuntimeError``.
"""
import numbers

import numpy as np

__all__ = ["CrossEntropyLoss", "MSELoss", "log_softmax", "softmax"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
    return reduction


def _check_float_array(array, name):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(array).__name__}")
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64; got {array.dtype}")
    return array


def log_softmax(logits, axis=-1):
    """Numerically stable ``log(softmax(logits))`` along ``axis``.

    ``log_softmax(z)_k = z_k - m - log(sum_j exp(z_j - m))`` with ``m = max_j z_j``: subtracting the
    maximum keeps every ``exp`` in ``(0, 1]``, so nothing overflows even for logits of 1000.
    """
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits, axis=-1):
    """Numerically stable softmax along ``axis`` (see :func:`log_softmax`)."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


class _Loss:
    """Shared plumbing: ``__call__`` = ``forward``, a cache, and a readable ``repr``."""

    def __init__(self, reduction="mean"):
        self.reduction = _check_reduction(reduction)
        self._cache = None

    def __call__(self, *args):
        return self.forward(*args)

    def _reduce(self, per_sample_loss):
        if self.reduction == "mean":
            return float(per_sample_loss.mean())
        if self.reduction == "sum":
            return float(per_sample_loss.sum())
        return per_sample_loss

    def _upstream(self, grad_output, expected_shape):
        """Check the optional upstream gradient of the loss (a scalar, or per-sample for 'none')."""
        if self.reduction == "none":
            if grad_output is None:
                raise ValueError("reduction='none' gives one loss per sample, so backward needs grad_output "
                                 f"of shape {expected_shape}")
            grad_output = np.asarray(grad_output)
            if grad_output.shape != expected_shape:
                raise ValueError(f"grad_output must have shape {expected_shape}; got {grad_output.shape}")
            return grad_output
        if grad_output is None:
            return 1.0
        if not isinstance(grad_output, numbers.Real) and np.ndim(grad_output) != 0:
            raise ValueError(f"grad_output of a reduced loss must be a scalar; got shape {np.shape(grad_output)}")
        return float(grad_output)

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        return self._cache

    def __repr__(self):
        return f"{type(self).__name__}({self._extra_repr()})"

    def _extra_repr(self):
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy between logits and integer class labels (``torch.nn.CrossEntropyLoss``).

    With label smoothing ``eps`` the target distribution is ``q = (1 - eps) * onehot(y) + eps / K``
    (Szegedy et al., "Rethinking the Inception Architecture", arXiv:1512.00567), and per sample

        loss_i = - sum_k q_ik * log_softmax(z_i)_k
        d loss_i / d z_i = softmax(z_i) - q_i

    ``reduction='mean'`` divides by N, ``'sum'`` does not, ``'none'`` returns the N per-sample losses.

    Parameters
    ----------
    reduction : {'mean', 'sum', 'none'}
    label_smoothing : float in [0, 1]

    Shapes
    ------
    logits : (N, K) float32 or float64
    targets : (N,) integers in [0, K)
    """

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
            raise TypeError(f"label_smoothing must be a float; got {label_smoothing!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1]; got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits, targets):
        """Return the loss (a float, or an (N,) array for ``reduction='none'``); cache for backward."""
        logits = _check_float_array(logits, "logits")
        if logits.ndim != 2:
            raise ValueError(f"logits must be 2-D (N, K); got shape {logits.shape}")
        N, K = logits.shape
        if N == 0 or K == 0:
            raise ValueError(f"logits must not be empty; got shape {logits.shape}")
        targets = np.asarray(targets)
        if targets.shape != (N,):
            raise ValueError(f"targets must have shape (N,) = ({N},) to match logits {logits.shape}; "
                             f"got {targets.shape}")
        if not np.issubdtype(targets.dtype, np.integer):
            raise TypeError(f"targets must be integer class indices; got dtype {targets.dtype}")
        if (targets.min() < 0 or targets.max() >= K):
            raise ValueError(f"targets must be in [0, {K}) for {K} classes; got values in "
                             f"[{targets.min()}, {targets.max()}]")

        log_probs = log_softmax(logits, axis=1)                        # (N, K)
        target_dist = np.full_like(logits, self.label_smoothing / K)   # (N, K): eps / K everywhere
        target_dist[np.arange(N), targets] += 1.0 - self.label_smoothing
        per_sample_loss = -(target_dist * log_probs).sum(axis=1)       # (N,)
        self._cache = (np.exp(log_probs), target_dist)
        return self._reduce(per_sample_loss)

    def backward(self, grad_output=None):
        """Return ``d loss / d logits``, shape (N, K), the logits' dtype.

        ``grad_output`` is the upstream gradient of the loss: a scalar (default 1.0) for 'mean'/'sum',
        an (N,) array for 'none'.
        """
        probs, target_dist = self._cached()
        N = probs.shape[0]
        grad_logits = probs - target_dist                              # (N, K)
        upstream = self._upstream(grad_output, (N,))
        if self.reduction == "mean":
            grad_logits *= upstream / N
        elif self.reduction == "sum":
            grad_logits *= upstream
        else:
            grad_logits *= upstream.astype(probs.dtype)[:, None]
        return grad_logits

    def _extra_repr(self):
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class MSELoss(_Loss):
    """Mean squared error ``(prediction - target)**2`` (``torch.nn.MSELoss``).

    ``'mean'`` averages over *all* elements (not only the batch), as PyTorch does, so
    ``d loss / d prediction = 2 * (prediction - target) / prediction.size``.

    Shapes: ``prediction`` and ``target`` any equal shape; ``'none'`` returns the element-wise losses.
    """

    def forward(self, prediction, target):
        """Return the loss (a float, or an array of ``prediction``'s shape for ``reduction='none'``)."""
        prediction = _check_float_array(prediction, "prediction")
        target = np.asarray(target)
        if target.shape != prediction.shape:
            raise ValueError(f"target must have the prediction's shape {prediction.shape}; got {target.shape}")
        difference = prediction - target.astype(prediction.dtype, copy=False)
        self._cache = difference
        return self._reduce(difference * difference)

    def backward(self, grad_output=None):
        """Return ``d loss / d prediction`` (prediction's shape and dtype)."""
        difference = self._cached()
        upstream = self._upstream(grad_output, difference.shape)
        grad_prediction = 2.0 * difference
        if self.reduction == "mean":
            grad_prediction *= upstream / difference.size
        elif self.reduction == "sum":
            grad_prediction *= upstream
        else:
            grad_prediction *= upstream.astype(difference.dtype)
        return grad_prediction
