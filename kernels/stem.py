"""A network's first convolution, computed directly: a 3x3 kernel over few input channels.

Every MobileNet opens with a "stem": a full 3x3 convolution of the 3 colour channels, usually at stride
2, into 16 or 32 channels (MobileNet V2: 3 -> 32, 224 x 224 -> 112 x 112, arXiv:1801.04381 Table 2).
The general path (:mod:`kernels.conv2d`) unfolds the image first (im2col: a ``(27, 112*112)`` matrix,
1.4 MB, copied out of a 0.6 MB image) and then multiplies; with only 27 values per output, the copy
costs as much as the product. Here each output channel is computed from the image itself, as the flat
depthwise kernel computes one plane (:func:`kernels.depthwise._forward_flat_kernel`):

    y[n, o] = sum_c  sum_(kh, kw)  w[o, c, kh, kw] * x_pad[n, c, oh*sh + kh*dh, ow*sw + kw*dw]

1. each input plane is zero-padded once into its ``sh*sw`` phases (stride 2: four planes of every second
   row and column), so that every tap reads one contiguous run of ``H_out * Wq`` values
   (:func:`kernels.depthwise._pad_into_phases`, with the stride written as a literal 2);
2. each output channel is a run of ``H_out * Wq`` sums: per input channel, its nine taps are added in one
   vectorised pass (``_rows.run_add_taps9``), the ``Wq - W_out`` extra values per row computed and dropped;
3. the bias and the epilogue (batch norm, ReLU/ReLU6, hard swish) are applied to the whole run and its
   rows copied out (:func:`kernels.depthwise._finish_and_write_out`).

One output channel per parallel iteration, its whole run at once: cutting the run into blocks of rows
(so that the rows a block reads stay in L1) was slower at every block size tried (16 channels at 224:
283 us whole, 311-365 us in blocks of 1024-8192 values). Cost: ``9 * C_in * C_out * H_out * W_out``
multiply-adds per image, as im2col + GEMM, without the unfolded copy.

Measured on a 2-core AMD EPYC (AVX2), float32 with a ReLU6 epilogue, alternated in one process against
im2col + GEMM: (1, 3, 224, 224) -> 32 at stride 2 0.81 vs 1.04 ms, -> 16 0.49 vs 0.69 ms, (1, 3, 112, 112)
0.21 vs 0.39 ms, (1, 3, 64, 64) 0.11 vs 0.17 ms, (8, 3, 64, 64) 0.67 vs 0.87 ms; a batch of 64 32 x 32
images at stride 2 (16 x 16 outputs, below :data:`STEM_MIN_PIXELS`) 1.83-2.36 vs 2.34-2.38 ms. In the
frozen models at 224 (two frozen copies, alternated 120 times, each first in turn): MobileNet V2 -1.6%,
V3-Large -3.3%, V3-Small -4.0% (another run -2.8%, -2.0%, -2.4%). Its float32 signature compiles in ~14 s
with an empty numba cache.
"""
import numpy as np

from ._jit import parallel_jit, prange
from ._rows import run_add_taps9
from .batchnorm import kernel_epilogue
from .depthwise import _empty_bias, _finish_and_write_out, _flat_taps9, _pad_into_phases, _phase_layout

#: most input channels a convolution may have to take this path (an RGB image, or RGB + one channel)
STEM_MAX_INPUT_CHANNELS = 4
#: output pixels per plane from which this path is taken: every stem of a 64 x 64 or larger image. A 32 x 32
#: training batch's stem (16 x 16 outputs) stays on im2col + GEMM (there the two were within 0-22%), which
#: keeps the default training run's results as they were
STEM_MIN_PIXELS = 32 * 32


def use_stem(geometry):
    """Whether :func:`prepare_forward` takes ``geometry``: one group, at most :data:`STEM_MAX_INPUT_CHANNELS`
    input channels, a 3x3 kernel at stride 1 or 2, at least :data:`STEM_MIN_PIXELS` output pixels."""
    _, C_in, _, _ = geometry.input_shape
    H_out, W_out = geometry.output_shape[2:]
    return (geometry.groups == 1 and C_in <= STEM_MAX_INPUT_CHANNELS and geometry.kernel_size == (3, 3)
            and geometry.stride in ((1, 1), (2, 2)) and H_out * W_out >= STEM_MIN_PIXELS)


def prepare_forward(weight, bias, geometry, epilogue=None):
    """The stem convolution for fixed weights and input shape: ``forward(x) -> y``.

    Parameters
    ----------
    weight : ndarray (C_out, C_in, 3, 3), C-contiguous
    bias : ndarray (C_out,) or None
    geometry : the checked geometry of the input shape (N, C_in, H, W); :func:`use_stem` holds
    epilogue : ``(scale, shift, low, high[, hardswish])`` or None, as :func:`kernels.conv2d._forward`'s

    Returns
    -------
    forward : callable, C-contiguous ``x`` (N, C_in, H, W) of ``weight``'s dtype -> ``y`` (N, C_out, H_out,
        W_out), a new array: ``clip((conv(x) + bias[o]) * scale[o] + shift[o], low, high)`` [then hard swish].
    """
    dtype, output_shape = weight.dtype, geometry.output_shape
    bias = _empty_bias(dtype) if bias is None else bias
    finish = kernel_epilogue(epilogue, dtype)                         # scale, shift, low, high, hardswish
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation

    def stem_forward(x):
        y = np.empty(output_shape, dtype=dtype)
        _stem_forward_kernel(x, weight, bias, y, sh, sw, ph, pw, dh, dw, *finish)
        return y

    return stem_forward


@parallel_jit
def _stem_forward_kernel(x, weight, bias, y, sh, sw, ph, pw, dh, dw, scale, shift, low, high, hardswish):
    """``y[n, o]`` for a 3x3 ``weight`` (C_out, C_in, 3, 3), image after image: the input planes padded into
    phases (in parallel over channels), then one output channel per parallel iteration (disjoint writes).
    ``bias`` and ``scale`` may be empty (no bias, no epilogue)."""
    N, C_in, H, W = x.shape
    C_out = weight.shape[0]
    _, _, H_out, W_out = y.shape
    has_bias = bias.shape[0] > 0
    finished = scale.shape[0] > 0
    phase_width, run, phase_size = _phase_layout(H, W, 3, H_out, sh, sw, ph, pw, dw)
    phases = np.zeros((C_in, sh * sw, phase_size), dtype=x.dtype)   # the borders stay zero for every image
    for n in range(N):
        for c in prange(C_in):
            _pad_into_phases(x[n, c], phases[c], sh, sw, ph, pw, phase_width)
        for o in prange(C_out):                                      # (H_out * Wq,) sums per output channel
            total = np.zeros(run, dtype=x.dtype)
            for c in range(C_in):                                    # the nine taps of input channel c
                taps = _flat_taps9(phases[c], sh, sw, dh, dw, phase_width, run)
                run_add_taps9(total, taps[0], taps[1], taps[2], taps[3], taps[4], taps[5], taps[6], taps[7], taps[8],
                              weight[o, c], run)
            _finish_and_write_out(total, y[n, o], phase_width, o, bias, has_bias, finished, scale, shift, low,
                                  high, hardswish)
