"""Index arithmetic shared by the convolution loops (compiled, inlined by LLVM).

A convolution tap at offset ``offset = k*dilation - padding`` reads input position
``i = o*stride + offset`` for output position ``o``. Handling the image border with an ``if`` inside
the innermost loop stops LLVM from vectorising it, so the kernels instead compute, once per tap, the
range of output positions whose input position falls inside the image, and loop over that range
without any branch.
"""
from ._jit import inline_jit


@inline_jit
def valid_output_range(n_out, n_in, stride, offset):
    """Output positions ``o`` in ``[lo, hi)`` with ``0 <= o*stride + offset < n_in`` (and ``0 <= o < n_out``)."""
    # smallest o with o*stride + offset >= 0  ->  o >= ceil(-offset / stride)
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    # largest o with o*stride + offset <= n_in - 1
    last = n_in - 1 - offset
    hi = 0 if last < 0 else last // stride + 1
    if hi > n_out:
        hi = n_out
    if lo > hi:
        lo = hi
    return lo, hi
