"""im2col and col2im: unfold an image into patch columns, and fold columns back (its adjoint).

Used by the GEMM-based kernels, one image at a time: the general convolution
(:mod:`kernels.conv2d`) and the transposed convolution (:mod:`kernels.transposed`).

``cols[(c*kH + a)*kW + b, i, j] = image_pad[c, i*sh + a*dh, j*sw + b*dw]``: row ``(c, a, b)`` holds
what tap ``(a, b)`` of channel ``c`` sees at every output position ``(i, j)``; a matrix product with
the weight viewed as ``(C_out, C_in*kH*kW)`` then does every multiply-add of the convolution.

Both loops are serial ``@jit`` on purpose: they run between multi-threaded BLAS calls whose worker
threads keep spinning for a while after each call, and a numba ``prange`` there fights them for the
two cores (measured on this machine for the transposed convolution: 60-280 ms per forward with
parallel loops against 5-15 ms with serial ones). The general convolution (:mod:`kernels.conv2d`)
holds BLAS on one thread, and unfolds one large image (a 224 x 224 stem) with
:func:`im2col_parallel_kernel`.
"""
from ._index import valid_output_range
from ._jit import inline_jit, jit, parallel_jit, prange
from ._rows import tap_copy, tap_scatter_axpy


@jit
def im2col_kernel(image, cols, kH, kW, sh, sw, ph, pw, dh, dw):
    """``cols[(c*kH + a)*kW + b, i, j] = image[c, i*sh + a*dh - ph, j*sw + b*dw - pw]`` (0 outside).

    image (C, H, W); cols (C*kH*kW, H_grid, W_grid), overwritten.
    """
    C = image.shape[0]
    for row in range(C * kH * kW):                       # one (channel, tap) row of the columns at a time
        _im2col_row(image, cols, row, kH, kW, sh, sw, ph, pw, dh, dw)


#: images whose columns hold at least this many values are unfolded on numba's threads
#: (:func:`im2col_parallel_kernel`): a 224 x 224 stem's (27, 112*112) columns took 215 -> 147 us on a
#: 2-core AMD EPYC, while on a 32 x 32 training stem (27, 16*16) waking the threads cost more (+4 us a
#: call) than the copy.
PARALLEL_MIN_VALUES = 1 << 16


@parallel_jit
def im2col_parallel_kernel(image, cols, kH, kW, sh, sw, ph, pw, dh, dw):
    """:func:`im2col_kernel` with the rows of ``cols`` shared out among numba's threads (each row is
    written by one iteration only)."""
    C = image.shape[0]
    for row in prange(C * kH * kW):
        _im2col_row(image, cols, row, kH, kW, sh, sw, ph, pw, dh, dw)


@inline_jit
def _im2col_row(image, cols, row, kH, kW, sh, sw, ph, pw, dh, dw):
    """Row ``row = (c*kH + a)*kW + b`` of :func:`im2col_kernel`'s columns: what tap ``(a, b)`` of
    channel ``c`` sees at every output position."""
    _, H, W = image.shape
    _, H_grid, W_grid = cols.shape
    c = row // (kH * kW)
    kh = (row // kW) % kH
    kw = row % kW
    col_plane = cols[row]                                # (H_grid, W_grid)
    i_lo, i_hi = valid_output_range(H_grid, H, sh, kh * dh - ph)
    j_lo, j_hi = valid_output_range(W_grid, W, sw, kw * dw - pw)
    # Each value is written once: zeros where the tap reads the padding, a copy elsewhere (zeroing the
    # whole row first wrote it twice; measured on a 2-core AMD EPYC, a 224 x 224 stem's (27, 112, 112)
    # columns 180 -> 134 us at stride 2, 291 -> 107 us at stride 1)
    for i in range(H_grid):
        col_row = col_plane[i]                           # (W_grid,)
        if i < i_lo or i >= i_hi:                        # the whole grid row reads the padding
            for j in range(W_grid):
                col_row[j] = 0.0
            continue
        for j in range(j_lo):                            # left border
            col_row[j] = 0.0
        for j in range(j_hi, W_grid):                    # right border
            col_row[j] = 0.0
        tap_copy(col_row, image[c, i * sh + kh * dh - ph], j_lo, j_hi, sw, kw * dw - pw)


@jit
def col2im_kernel(cols, image, kH, kW, sh, sw, ph, pw, dh, dw):
    """The adjoint of im2col: ``image[c, i*sh + a*dh - ph, j*sw + b*dw - pw] += cols[(c*kH + a)*kW + b, i, j]``.

    cols (C*kH*kW, H_grid, W_grid); image (C, H, W), overwritten. Entries that land in the padding
    are dropped.
    """
    C, H, W = image.shape
    _, H_grid, W_grid = cols.shape
    for c in range(C):                                   # one image channel at a time
        plane = image[c]                                 # (H, W)
        plane[:, :] = 0.0
        for kh in range(kH):
            i_lo, i_hi = valid_output_range(H_grid, H, sh, kh * dh - ph)
            for kw in range(kW):
                j_lo, j_hi = valid_output_range(W_grid, W, sw, kw * dw - pw)
                col_plane = cols[(c * kH + kh) * kW + kw]    # (H_grid, W_grid)
                for i in range(i_lo, i_hi):              # each grid row lands on one image row
                    tap_scatter_axpy(plane[i * sh + kh * dh - ph], col_plane[i], 1.0,
                                     j_lo, j_hi, sw, kw * dw - pw)
