"""Row primitives: the innermost loops of the direct convolution kernels.

Every direct kernel here reduces to "for each output row and kernel tap, combine one input row with
one output row". These small compiled helpers are those innermost loops. LLVM inlines them into the
calling kernel and vectorises them (16 float32 lanes with AVX-512) when two things hold, measured on
an AVX-512 machine with numba 0.6x:

* the index is the loop counter itself, starting at 0 (``x[j]``). An index such as ``o*s + k*d - p``
  could be negative as far as numba knows, so it adds a negative-index wrap-around check to every
  access, and the loop runs at scalar speed (about 6x slower). The callers therefore pass views that
  already start at the first element (``x_row[first_input_column:]``), one view per kernel tap: even
  ``x[j + d]`` with a runtime dilation ``d`` brings the check back.
* the loop is contiguous: a runtime stride ``x[j*s]`` is not vectorised, so each helper has a
  separate ``s == 1`` loop. The view's *type* must say so too: a row of a C-contiguous 2-D array
  (``a[i, k:]``) is typed contiguous, but a row of a column slice (``a[:, k:][i]``) has "any" layout
  in numba's types, and its loop compiles without vectors (a flat-run kernel measured 3-8x slower on a
  2-core AMD EPYC): pass the offset ``k`` along instead of slicing first.

The ``run_add_taps*`` helpers are the loops of the flat-run kernels (:mod:`kernels.depthwise`, and
:mod:`kernels.stem` over several input channels), where a whole zero-padded plane is one run and up to
three taps share a pass over it (a 3x3 kernel all nine: ``run_taps9``, ``run_add_taps9``); the
``masked_dot*`` helpers are those of the depthwise weight gradient's dot products, which vectorise only
inside a kernel that lets LLVM reorder a sum (``_jit.parallel_sum_jit``).

Notation: ``n`` elements, input stride ``s`` (the convolution stride).
"""
from ._jit import inline_jit


@inline_jit
def row_axpy(y, x, w, n, s):
    """``y[j] += w * x[j*s]`` for ``j < n``: one kernel tap added to one output row."""
    if s == 1:
        for j in range(n):
            y[j] += w * x[j]
    else:
        for j in range(n):
            y[j] += w * x[j * s]


@inline_jit
def row_scatter_axpy(x, y, w, n, s):
    """``x[j*s] += w * y[j]`` for ``j < n``: one tap of the backward pass, output row -> input row."""
    if s == 1:
        for j in range(n):
            x[j] += w * y[j]
    else:
        for j in range(n):
            x[j * s] += w * y[j]


@inline_jit
def row_taps3(y, x0, x1, x2, w0, w1, w2, n, s):
    """``y[j] += w0*x0[j*s] + w1*x1[j*s] + w2*x2[j*s]``: a 3-tap kernel row in registers.

    ``x_k`` is the input row seen from tap ``k``'s first column (``x_row[first + k*d:]``): with one view
    per tap the index stays the bare loop counter (see the module docstring).
    """
    if s == 1:
        for j in range(n):
            y[j] += w0 * x0[j] + w1 * x1[j] + w2 * x2[j]
    else:
        for j in range(n):
            i = j * s
            y[j] += w0 * x0[i] + w1 * x1[i] + w2 * x2[i]


@inline_jit
def row_taps5(y, x0, x1, x2, x3, x4, w0, w1, w2, w3, w4, n, s):
    """``y[j] += sum_{k<5} w_k * x_k[j*s]``: a 5-tap kernel row in registers (``x_k`` as in row_taps3)."""
    if s == 1:
        for j in range(n):
            y[j] += w0 * x0[j] + w1 * x1[j] + w2 * x2[j] + w3 * x3[j] + w4 * x4[j]
    else:
        for j in range(n):
            i = j * s
            y[j] += w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i] + w4 * x4[i]


@inline_jit
def run_add_taps3(total, x0, x1, x2, w0, w1, w2, n):
    """``total[j] = ((total[j] + w0*x0[j]) + w1*x1[j]) + w2*x2[j]`` for ``j < n``: three taps, in order.

    The additions happen in the order of three separate ``total[j] += w_k * x_k[j]`` loops (:func:`row_axpy`),
    so the bits are theirs; ``total`` is read and written once instead of three times (the flat-run
    kernels, whose loops are bound by those loads and stores). :func:`row_taps3` sums the three products
    first, which gives other bits.
    """
    for j in range(n):
        total[j] = ((total[j] + w0 * x0[j]) + w1 * x1[j]) + w2 * x2[j]


@inline_jit
def run_add_taps5(total, x, step, w, n):
    """``total[j] = ((((total[j] + w[0]*x[j]) + w[1]*x[j + step]) + ...) + w[4]*x[j + 4*step]`` for ``j < n``:
    a 5-tap kernel row in one pass, added in order (the bits of :func:`run_add_taps3` then
    :func:`run_add_taps2`, which read and write ``total`` twice)."""
    w0, w1, w2, w3, w4 = w[0], w[1], w[2], w[3], w[4]
    x0, x1, x2, x3, x4 = x, x[step:], x[2 * step:], x[3 * step:], x[4 * step:]
    for j in range(n):
        total[j] = ((((total[j] + w0 * x0[j]) + w1 * x1[j]) + w2 * x2[j]) + w3 * x3[j]) + w4 * x4[j]


@inline_jit
def run_add_taps2(total, x0, x1, w0, w1, n):
    """``total[j] = (total[j] + w0*x0[j]) + w1*x1[j]`` for ``j < n``: two taps, in order (as run_add_taps3)."""
    for j in range(n):
        total[j] = (total[j] + w0 * x0[j]) + w1 * x1[j]


@inline_jit
def run_multiply_taps3(total, x0, x1, x2, w0, w1, w2, n):
    """``total[j] = ((total[j] + w0[j]*x0[j]) + w1[j]*x1[j]) + w2[j]*x2[j]`` for ``j < n``: three taps whose
    weights vary along the run, added in order (the bits of :func:`run_add_taps3` where ``w_k[j]`` is that
    function's ``w_k``)."""
    for j in range(n):
        total[j] = ((total[j] + w0[j] * x0[j]) + w1[j] * x1[j]) + w2[j] * x2[j]


@inline_jit
def run_multiply_taps2(total, x0, x1, w0, w1, n):
    """``total[j] = (total[j] + w0[j]*x0[j]) + w1[j]*x1[j]`` for ``j < n``: two taps, weights along the run."""
    for j in range(n):
        total[j] = (total[j] + w0[j] * x0[j]) + w1[j] * x1[j]


@inline_jit
def run_multiply_tap(total, x0, w0, n):
    """``total[j] = total[j] + w0[j]*x0[j]`` for ``j < n``: one tap, weights along the run."""
    for j in range(n):
        total[j] = total[j] + w0[j] * x0[j]


@inline_jit
def run_multiply_taps9(total, x00, x01, x02, x10, x11, x12, x20, x21, x22, w00, w01, w02, w10, w11, w12, w20, w21,
                       w22, n):
    """``total[j] = sum_(kh, kw) w_khkw[j] * x_khkw[j]`` for ``j < n``: a whole 3x3 kernel whose weights vary
    along the run, in one pass, each output stored once; ``x_khkw`` and ``w_khkw`` are tap ``(kh, kw)``'s runs.

    The products are added from zero in tap order, the bits of :func:`run_multiply_taps3` three times
    over a run that starts at zero; the run is written once instead of zeroed, then read and written
    three times (18 loads per output either way). In the across-channels depthwise forward that took
    16-27% off (64,96,8,8) and (64,192,4,4), float32, one and two threads, Sapphire Rapids.
    """
    zero = total.dtype.type(0)
    for j in range(n):
        v = ((zero + w00[j] * x00[j]) + w01[j] * x01[j]) + w02[j] * x02[j]
        v = ((v + w10[j] * x10[j]) + w11[j] * x11[j]) + w12[j] * x12[j]
        total[j] = ((v + w20[j] * x20[j]) + w21[j] * x21[j]) + w22[j] * x22[j]


@inline_jit
def run_taps9(total, x00, x01, x02, x10, x11, x12, x20, x21, x22, w, n):
    """``total[j] = sum_(kh, kw) w[kh, kw] * x_khkw[j]`` for ``j < n``: a whole 3x3 kernel in one pass over a
    flat run, each output computed in one go and stored once; ``x_khkw`` is tap ``(kh, kw)``'s run.

    The products are added in the order of :func:`run_add_taps3`'s three passes from zero (kernel rows in
    turn, taps of a row in turn), so the bits are those passes'; the run is written once instead of read
    and written three times. The weights are read into locals first: ``total``'s stores could alias ``w``
    as far as LLVM knows, so ``w[...]`` inside the loop would be read again for every output.
    """
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    zero = total.dtype.type(0)
    for j in range(n):
        v = ((zero + w00 * x00[j]) + w01 * x01[j]) + w02 * x02[j]
        v = ((v + w10 * x10[j]) + w11 * x11[j]) + w12 * x12[j]
        total[j] = ((v + w20 * x20[j]) + w21 * x21[j]) + w22 * x22[j]


@inline_jit
def run_add_taps9(total, x00, x01, x02, x10, x11, x12, x20, x21, x22, w, n):
    """``total[j] += sum_(kh, kw) w[kh, kw] * x_khkw[j]`` for ``j < n``: a whole 3x3 kernel added to a run in
    one pass (:func:`run_taps9`, accumulating), the products added to ``total[j]`` in tap order."""
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for j in range(n):
        v = ((total[j] + w00 * x00[j]) + w01 * x01[j]) + w02 * x02[j]
        v = ((v + w10 * x10[j]) + w11 * x11[j]) + w12 * x12[j]
        total[j] = ((v + w20 * x20[j]) + w21 * x21[j]) + w22 * x22[j]


@inline_jit
def masked_dots3(g, x0, x1, x2, m0, m1, m2, n):
    """``(s0, s1, s2)``, ``s_k = sum_(j < n, m_k[j]) g[j] * x_k[j]``: three taps' weight gradients over one run.

    ``g`` is read once for the three. A product whose mask is false is replaced by 0 after it is made,
    so an infinite or nan ``x_k[j]`` there adds nothing (``0 * inf`` would be nan). Meant for a
    ``_jit.parallel_sum_jit`` kernel, where each sum runs as vectors; in strict order it would not.
    """
    zero = g.dtype.type(0)
    s0, s1, s2 = zero, zero, zero
    for j in range(n):
        gj = g[j]
        p0, p1, p2 = gj * x0[j], gj * x1[j], gj * x2[j]
        s0 += p0 if m0[j] else zero
        s1 += p1 if m1[j] else zero
        s2 += p2 if m2[j] else zero
    return s0, s1, s2


@inline_jit
def masked_dots2(g, x0, x1, m0, m1, n):
    """``(s0, s1)``: two taps of :func:`masked_dots3`."""
    zero = g.dtype.type(0)
    s0, s1 = zero, zero
    for j in range(n):
        gj = g[j]
        p0, p1 = gj * x0[j], gj * x1[j]
        s0 += p0 if m0[j] else zero
        s1 += p1 if m1[j] else zero
    return s0, s1


@inline_jit
def masked_dot(g, x0, m0, n):
    """``s0``: one tap of :func:`masked_dots3`."""
    zero = g.dtype.type(0)
    s0 = zero
    for j in range(n):
        p0 = g[j] * x0[j]
        s0 += p0 if m0[j] else zero
    return s0


@inline_jit
def row_multiply_accumulate(acc, g, x, n, s):
    """``acc[j] += g[j] * x[j*s]``: one tap's weight-gradient terms, kept per column.

    A scalar sum ``total += g[j]*x[j*s]`` is a chain of dependent additions that LLVM may not reorder
    (no fastmath), so it would not vectorise; a per-column running sum has no such chain. The caller
    sums ``acc`` once at the end.
    """
    if s == 1:
        for j in range(n):
            acc[j] += g[j] * x[j]
    else:
        for j in range(n):
            acc[j] += g[j] * x[j * s]


@inline_jit
def row_multiply_accumulate3(a0, a1, a2, g, x0, x1, x2, n, s):
    """The three taps of a kernel row at once: ``a_k[j] += g[j] * x_k[j*s]`` (``x_k`` as in row_taps3)."""
    if s == 1:
        for j in range(n):
            a0[j] += g[j] * x0[j]
            a1[j] += g[j] * x1[j]
            a2[j] += g[j] * x2[j]
    else:
        for j in range(n):
            i = j * s
            a0[j] += g[j] * x0[i]
            a1[j] += g[j] * x1[i]
            a2[j] += g[j] * x2[i]


@inline_jit
def row_multiply_accumulate3_images4(a0, a1, a2, g0, x00, x01, x02, g1, x10, x11, x12, g2, x20, x21, x22, g3, x30,
                                     x31, x32, n):
    """:func:`row_multiply_accumulate3` (stride 1) for four images at once: ``a_k[j] += g_i[j] * x_ik[j]``
    for the images ``i = 0, 1, 2, 3`` in that order, ``x_ik`` image ``i``'s run for tap ``k``.

    Each ``a_k[j]`` receives the same products in the same order as four calls one image at a time, so
    the same bits; it is loaded and stored once instead of four times. In the across-channels depthwise
    weight gradient that took 2-15% off (64, 96, 8, 8), (64, 144, 8, 8), (64, 192, 4, 4) and
    (64, 32, 11, 11), float32, two threads, Sapphire Rapids (three processes, alternated, all faster).
    """
    for j in range(n):
        a0[j] = (((a0[j] + g0[j] * x00[j]) + g1[j] * x10[j]) + g2[j] * x20[j]) + g3[j] * x30[j]
        a1[j] = (((a1[j] + g0[j] * x01[j]) + g1[j] * x11[j]) + g2[j] * x21[j]) + g3[j] * x31[j]
        a2[j] = (((a2[j] + g0[j] * x02[j]) + g1[j] * x12[j]) + g2[j] * x22[j]) + g3[j] * x32[j]


# ----------------------------------------------------------------------------------------------------
# One kernel tap over a run of output columns: the callers' view of the row primitives.
# Output column ``o`` of tap ``(kh, kw)`` meets input column ``o*s + offset`` with
# ``offset = kw*dilation - padding``; ``[start, stop)`` is the run where that column is inside the image
# (``_index.valid_output_range``), so the views below start at a valid, non-negative index.
# ----------------------------------------------------------------------------------------------------
@inline_jit
def tap_axpy(y_row, x_row, w, start, stop, s, offset):
    """``y_row[o] += w * x_row[o*s + offset]`` for output columns ``start <= o < stop``."""
    if stop > start:
        row_axpy(y_row[start:], x_row[start * s + offset:], w, stop - start, s)


@inline_jit
def tap_scatter_axpy(x_row, y_row, w, start, stop, s, offset):
    """``x_row[o*s + offset] += w * y_row[o]`` for output columns ``start <= o < stop``."""
    if stop > start:
        row_scatter_axpy(x_row[start * s + offset:], y_row[start:], w, stop - start, s)


@inline_jit
def tap_multiply_accumulate(acc, g_row, x_row, start, stop, s, offset):
    """``acc[o] += g_row[o] * x_row[o*s + offset]`` for output columns ``start <= o < stop``."""
    if stop > start:
        row_multiply_accumulate(acc[start:], g_row[start:], x_row[start * s + offset:], stop - start, s)


@inline_jit
def tap_copy(y_row, x_row, start, stop, s, offset):
    """``y_row[o] = x_row[o*s + offset]`` for output columns ``start <= o < stop`` (im2col)."""
    if stop > start:
        y_part, x_part = y_row[start:], x_row[start * s + offset:]
        if s == 1:
            for j in range(stop - start):
                y_part[j] = x_part[j]
        else:
            for j in range(stop - start):
                y_part[j] = x_part[j * s]
