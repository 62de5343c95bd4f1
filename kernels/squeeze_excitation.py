"""A whole squeeze-and-excitation block for one image in one compiled call (inference).

Squeeze-and-excitation (Hu et al., arXiv:1709.01507) re-weights the channels of ``x`` (C, H, W) by a
gate computed from their averages; MobileNet V3 (arXiv:1905.02244) uses it with a ReLU and a hard
sigmoid::

    squeezed = mean over (H, W) of x                  (C,)    global average pooling
    hidden   = ReLU(W1 @ squeezed + b1)               (S,)    1x1 convolution C -> S (or ReLU6)
    gate     = hardsigmoid(W2 @ hidden + b2)          (C,)    1x1 convolution S -> C, in [0, 1]
    y        = gate[c] * x[c]                         (C, H, W)

Called layer by layer, that is six operations on a few hundred numbers each, where the bookkeeping of
every call (and waking numba's threads for each parallel kernel) costs more than the arithmetic: on a
2-core AMD EPYC a batch-1 MobileNet V3-Small block took 90-160 us. Here it is one compiled call that runs
every step with the same arithmetic as the layers' kernels (:func:`kernels.pooling.plane_mean`,
``cblas_?gemv`` as :func:`kernels._gemm.matrix_vector` calls it, :func:`kernels.activation.clip_value`,
:func:`kernels.activation.hardsigmoid_value`), so the result has the same bits as the layers'
(``tinycnn.nn.fusion.squeeze_excitation_without_grad`` uses it; the tests compare the two).

The two passes over the whole map, the means and the scaling, are ``prange`` loops over the channels
(each channel's arithmetic unchanged, so the same bits on any number of threads); the two small products
between them stay on one thread. Measured on a 2-core AMD EPYC (AVX2), alternated in one process, frozen
forward at 224: MobileNet V3-Large 12.84 -> 12.40 ms (its (1, 672, 14, 14) block 88 -> 67 us alone),
V3-Small 6.00 -> 5.95 ms; no block got slower.
"""
import numpy as np

from ._blas import cblas_gemv, function_address
from ._gemm import _CBLAS_GEMV, _CBLAS_INTEGER, NO_TRANS, PARALLEL_MATRIX_VECTOR_MIN_ELEMENTS, ROW_MAJOR
from ._jit import parallel_jit, prange
from .activation import clip_value, hardsigmoid_value
from .pooling import plane_mean


def squeeze_excitation_clip_hardsigmoid(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, high=np.inf):
    """MobileNet V3's squeeze-and-excitation block on one image; None when no BLAS gemv was found or the
    convolutions are as large as :data:`kernels._gemm.PARALLEL_MATRIX_VECTOR_MIN_ELEMENTS`.

    Parameters
    ----------
    x : ndarray (1, C, H, W), float32 or float64
    fc1_weight : ndarray (S, C, 1, 1), fc1_bias : ndarray (S,)
    fc2_weight : ndarray (C, S, 1, 1), fc2_bias : ndarray (C,)
        All of ``x``'s dtype (the caller checks shapes and dtypes, as the layers would).
    high : float
        The clip after ``fc1``: ``inf`` for ReLU (MobileNet V3), 6 for ReLU6.

    Returns
    -------
    y : ndarray (1, C, H, W)::

        gate = hardsigmoid(fc2_weight @ clip(fc1_weight @ mean_hw(x) + fc1_bias, 0, high) + fc2_bias)
        y[0, c] = gate[c] * x[0, c]

    Call inside :func:`kernels._jit.one_blas_thread` (the two products are BLAS calls).
    """
    gemv = _CBLAS_GEMV.get(x.dtype)
    _, C, H, W = x.shape
    S = fc1_weight.shape[0]
    if gemv is None or S * C >= PARALLEL_MATRIX_VECTOR_MIN_ELEMENTS:
        return None                 # (the layers would take matrix_vector's blocks, with other bits)
    x_planes = np.ascontiguousarray(x).reshape(C, H * W)
    y = np.empty_like(x_planes)
    _squeeze_excitation_kernel(function_address(gemv), _CBLAS_INTEGER, x_planes,
                               np.ascontiguousarray(fc1_weight).reshape(S, C), fc1_bias,
                               np.ascontiguousarray(fc2_weight).reshape(C, S), fc2_bias, x.dtype.type(high), y)
    return y.reshape(x.shape)


@parallel_jit
def _squeeze_excitation_kernel(gemv, integer, x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, high, y):
    """The block on ``x`` (C, P) into ``y`` (C, P): (S, C) and (C, S) weights; the channel loops in parallel.
    ``gemv`` is the address of ``cblas_?gemv``, ``integer`` a zero of its integer type (:mod:`kernels._blas`).

    Each step is the same arithmetic, in the same dtype, as the layer that does it: the plane means as
    the pooling kernel (float64 partial sums, stored in ``x``'s dtype), the products by the same gemv
    call as :func:`kernels._gemm.matrix_vector`, the bias added to the product and then the activation,
    as the convolution layer and the activation layer do one after the other.
    """
    C, P = x.shape
    S = fc1_weight.shape[0]
    zero, one, three, six = x.dtype.type(0), x.dtype.type(1), x.dtype.type(3), x.dtype.type(6)
    squeezed = np.empty(C, dtype=x.dtype)
    for c in prange(C):                                 # squeeze: one mean per channel (disjoint writes)
        squeezed[c] = plane_mean(x[c])
    hidden = np.empty(S, dtype=x.dtype)                 # (S,) = fc1_weight @ squeezed
    cblas_gemv(gemv, integer, ROW_MAJOR, NO_TRANS, S, C, one, fc1_weight.ctypes.data, max(C, 1), squeezed.ctypes.data,
               1, zero, hidden.ctypes.data, 1)
    for s in range(S):
        hidden[s] = clip_value(hidden[s] + fc1_bias[s], zero, high)              # ReLU (high = inf) or ReLU6
    gate = np.empty(C, dtype=x.dtype)                   # (C,) = fc2_weight @ hidden
    cblas_gemv(gemv, integer, ROW_MAJOR, NO_TRANS, C, S, one, fc2_weight.ctypes.data, max(S, 1), hidden.ctypes.data,
               1, zero, gate.ctypes.data, 1)
    for c in prange(C):                                 # excite: scale each channel by its gate (disjoint)
        channel_gate = hardsigmoid_value(gate[c] + fc2_bias[c], zero, three, six)
        plane, out = x[c], y[c]
        for p in range(P):
            out[p] = channel_gate * plane[p]
