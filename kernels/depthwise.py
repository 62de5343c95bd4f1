"""Depthwise 2-D convolution: every channel is filtered by its own small kernel.

A standard convolution mixes all ``C_in`` input channels into every output channel. A *depthwise*
convolution (``groups == C_in``) does not mix channels at all: output channel ``oc`` is input channel
``c = oc // m`` filtered by one ``kH x kW`` kernel, where ``m = C_out / C_in`` is the channel multiplier
(``m = 1`` in MobileNet). Followed by a 1x1 (pointwise) convolution that mixes channels, it forms the
*depthwise-separable* convolution of MobileNet V1 (Howard et al. 2017, arXiv:1704.04861), the depthwise
stage of MobileNet V2's inverted residual (arXiv:1801.04381) and V3 (arXiv:1905.02244).

Cost for an output of ``H_out x W_out``::

    depthwise:  kH*kW * C * H_out*W_out               multiply-accumulates (MACs)
    standard:   kH*kW * C_in * C_out * H_out*W_out    -> depthwise is 1/C_out of it

Parallel iterations never write to the same memory. Seven kinds of loops appear:

* the **flat-run** path (stride 1 from 11x11 planes for one image and from 12x12 for a batch, but the
  across-channels batches below; 3x3 at stride 2 from 20x20 for one image and 24x24 for a batch, other
  strided planes above 32x32; both gradients at stride 1 from 12x12 "same" planes or 16x16 others, the
  input gradient but the across-channels batches): each plane is copied zero-padded into
  one flat array, where output ``(oh, ow)`` sits at ``oh*Wp + ow`` and every tap reads at a fixed offset
  from it, so one tap is *one* vectorised loop over the whole plane, and a 3x3 kernel one loop for all
  nine taps (a stride is first split into phases, inside which it is stride 1 again; stride 2 copies them
  with a literal stride, which LLVM vectorises). The input gradient at stride 1 is the same kernel with
  the filter turned by 180 degrees.

* the **generic** path, tap by tap: for each kernel tap ``(kh, kw)`` add ``w[kh, kw] * x[shifted]`` to
  the output rows. The innermost loop runs over output columns with no branch, so LLVM vectorises it.
* the **row** fast path for 3x3 and 5x5 kernels at stride 1 and 2 (MobileNet V2/V3 use all four): the
  taps of one kernel row are kept in registers and each output element is loaded and stored once per
  kernel row instead of once per tap (3x fewer output loads and stores for 3x3, 5x for 5x5). The one or
  two border columns, where some taps fall in the padding, are handled tap by tap once per plane.
* the weight gradient is a *sum* over the batch and over all pixels. Without ``fastmath`` LLVM does not
  vectorise a scalar ``acc += a*b`` reduction, so each parallel iteration (one output channel, whose
  weights only it writes) accumulates into its own column buffer ``partial[kh, kw, ow] += ...``
  (element-wise, vectorisable) and sums the buffer once at the end, in a fixed order. On stride-1
  "same" planes from 12x12 each tap's gradient is instead one dot product over the flat plane, in the
  one kernel allowed to reorder a sum (``reassoc``), whose partial sums then stay in registers.
* the **channels-last** path for the small planes the flat runs leave (at most 32x32 pixels, multiplier
  1: MobileNets trained at 32x32 meet 16x16 .. 1x1), where a plane row is shorter than a vector: one
  (image, block of 64 channels) per iteration, copied into a zero-padded channels-last buffer split
  into column phases, so each tap's whole output row is one contiguous vectorised run
  whatever the stride and dilation. Both gradients come from one pass (``_backward``); weight-gradient
  partials per (image, block) are added in image order.
* the **across-channels** path for batches (16 images and more) of small "same" planes at stride 1 (below
  12x12: MobileNets trained at 32x32; the forward and input gradient also for 3x3 kernels on 12x12 to
  16x16 planes of 32 images or more): an image's ``C*H*W`` values are contiguous and every tap reads
  them at one fixed offset, so a tap is one vectorised loop over a run of whole channels, its weight read
  from a table, built per run of channels, that holds each output's weight for that tap (0 where the tap
  reads the padding). No copies, no transposes; an input that is not finite sends the batch to the
  channels-last kernel (a ``0 * inf`` would be ``nan``). The input gradient is the same kernel with the
  filter turned; the weight gradient keeps per-value sums over runs of whole channels and adds each
  channel's pixels at the end.
* the **one-pixel** path, for outputs of a single pixel per channel (MobileNet V2 trained at 32x32 ends
  on 1x1 planes, reached by a stride-2 layer on 2x2): each output is one short dot product of a
  channel's kernel with the taps that land inside the plane, vectorised across the channels of an
  image (``x[n, :, ih, iw]``).
"""
import functools

import numpy as np

from ._index import valid_output_range
from ._rows import (masked_dot, masked_dots2, masked_dots3, row_axpy, row_multiply_accumulate,
                    row_multiply_accumulate3, row_multiply_accumulate3_images4, row_taps3, row_taps5,
                    run_add_taps2, run_add_taps3, run_add_taps5, run_multiply_tap, run_multiply_taps2,
                    run_multiply_taps3, run_multiply_taps9, run_taps9, tap_axpy, tap_multiply_accumulate,
                    tap_scatter_axpy)
from ._jit import inline_jit, jit, num_threads, parallel_jit, parallel_sum_jit, prange
from ._validate import (check_bias, check_depthwise_weight_shape, check_grad_out, check_same_dtype, check_shape,
                        check_tensor, conv_geometry)
from .activation import clip_value, hardswish_value
from .batchnorm import finish_channels, kernel_epilogue

#: kernel sizes and strides that take the register-row fast path
FAST_KERNEL_SIZES = (3, 5)
FAST_STRIDES = (1, 2)
#: planes of at most this many input pixels (32x32) take the channels-last kernels
CHANNELS_LAST_MAX_PIXELS = 32 * 32
#: stride-1 planes of at least this many pixels (11x11) take the flat-run forward kernel. Measured on a
#: 2-core AMD EPYC (AVX2), forward against the previous kernels: (1, 192, 28, 28) 0.36 -> 0.15 ms,
#: (1, 144, 56, 56) 1.21 -> 0.40, (64, 48, 16, 16) 1.97 -> 0.88; but (64, 96, 4, 4) 0.29 -> 0.47, where
#: the channels-last kernel stays. One image below 11x11 also keeps the channels-last kernel since its
#: weight tiling got cheap (:func:`_tile_weight`), flat against channels-last, alternated: (1, 960, 7, 7)
#: 5x5 307 vs 146 us, (1, 576, 10, 10) 5x5 224 vs 148; from 12x12 the flat kernel: (1, 576, 12, 12) 127 vs
#: 150, (1, 576, 14, 14) 169 vs 207, (1, 192, 28, 28) 152 vs 265. At stride 2 the phase split costs
#: more: it pays above 32x32 ((1, 96, 112, 112) 1.53 -> 0.68 ms, (1, 72, 56, 56) 5x5 1.00 -> 0.25) but
#: not below ((1, 576, 14, 14) 0.16 -> 0.25, (64, 144, 8, 8) 0.64 -> 2.17), so there it follows
#: CHANNELS_LAST_MAX_PIXELS.
FLAT_MIN_PIXELS = 11 * 11
#: ... but with more than one image, only planes of at least this many pixels (12x12): below it the
#: channels-last kernel, whose weight tiling is then shared by the images, is faster. Measured on a
#: 2-core AMD EPYC (AVX2), forward, flat against channels-last, alternated in one process: (64, 96, 8, 8)
#: 0.96 vs 0.67 ms, (16, 96, 10, 10) 0.33 vs 0.25, (2, 960, 7, 7) 5x5 0.57 vs 0.51; (64, 32, 12, 12) 0.47
#: vs 0.49; (8, 384, 14, 14) 0.87 vs 1.07, (64, 96, 14, 14) 1.73 vs 1.96.
FLAT_MIN_PIXELS_BATCHED = 12 * 12
#: stride-1 planes of at least this many pixels (16x16) take the flat-run kernels for both gradients.
#: Measured on a 2-core AMD EPYC (AVX2), both gradients: (64, 48, 16, 16) 3.33 -> 2.39 ms (channels-last
#: before), (8, 144, 56, 56) 16.3 -> 9.7 (row kernels before); but (64, 96, 8, 8) 1.18 -> 1.88, where the
#: channels-last kernel, which computes both in one pass, stays.
FLAT_BACKWARD_MIN_PIXELS = 16 * 16
#: planes of at least this many pixels (those above the channels-last kernels' 32x32) take the flat-run
#: weight gradient at any stride (stride 1: from FLAT_BACKWARD_MIN_PIXELS, with the input gradient) and,
#: at strides above 1, the phase-by-phase input gradient. Measured on a 2-core AMD EPYC (AVX2) at stride
#: 2, weight gradient against the register-row kernel: (8, 144, 56, 56) 3.42 -> 2.35 ms, (8, 72, 56, 56)
#: 5x5 4.86 -> 1.68, (2, 32, 33, 33) 0.09 -> 0.07; input gradient: :func:`_backward_input_phases_kernel`.
LARGE_PLANE_GRADIENTS_MIN_PIXELS = CHANNELS_LAST_MAX_PIXELS + 1
#: one image's weight gradient takes the channels-last kernel up to this plane size (28x28), not the flat
#: one (:func:`_use_flat_weight_gradient`); at 32x32 the flat kernel is faster again ((1, 96, 32, 32) 245
#: against 327 us on a 2-core AMD EPYC)
ONE_IMAGE_CHANNELS_LAST_WEIGHT_GRADIENT_MAX_PIXELS = 28 * 28
#: 3x3 stride-2 planes (dilation 1) of one image take the flat-run kernel from this many pixels (14x14), those
#: of several images from STRIDE2_FLAT_MIN_PIXELS_BATCHED (24x24), smaller ones the channels-last kernel
#: (:func:`_use_flat`). There the phases are copied with the literal stride 2 (vectorised) and the nine taps
#: added in one pass. Measured on a 2-core AMD EPYC (AVX2), prepared forward with a ReLU6 epilogue,
#: alternated against the kernels these planes took before (a stride-2 kernel with the taps in registers, one
#: output row at a time, from 24 x 24; channels-last below): (1, 96, 112, 112) 604 -> 452 us, (1, 144, 56,
#: 56) 369 -> 235, (1, 192, 28, 28) 185 -> 126, (1, 256, 24, 24) 194 -> 130, (1, 256, 20, 20) 112 -> 100,
#: (8, 144, 56, 56) 3.32 -> 2.37 ms, (64, 32, 34, 34) 3.04 -> 2.00, (8, 192, 28, 28) 1.28 -> 1.06, (8, 120,
#: 24, 24) 546 -> 481 us; but (1, 256, 18, 18) 101 against 96, (1, 384, 16, 16) 108 against 110, (1, 576, 14,
#: 14) 134 against 176, (64, 48, 16, 16) 693 against 823, where the channels-last kernel stayed. Measured
#: again on a 2-core Intel Sapphire Rapids after the flat kernels' later work (one image, ReLU6 epilogue,
#: flat against channels-last, 150 alternated pairs; AVX-512 code, and AVX2 code with
#: ``NUMBA_CPU_NAME=haswell``): (1, 560, 14, 14) 55 vs 85 us and 71 vs 91, (1, 432, 16, 16) 52 vs 59 and 54
#: vs 60, (1, 336, 18, 18) 50 vs 64 and 54 vs 73, but (1, 760, 12, 12) 57 vs 50 and 76 vs 56, (1, 1104,
#: 10, 10) 80 vs 54: so one image from 14x14 now (the same bits either way: each output is the same sum
#: in the same order in both kernels). At these sizes the channels-last kernel spends most of its time
#: copying the block into padded channels-last phases ((1, 576, 14, 14): 58 of 83 us).
STRIDE2_FLAT_MIN_PIXELS = 14 * 14
STRIDE2_FLAT_MIN_PIXELS_BATCHED = 24 * 24
#: 5x5 stride-2 planes (dilation 1) of one image take the flat-run kernel from this many pixels (24x24),
#: with the same bits. Same machine and runs as above: (1, 192, 24, 24) 103 vs 127 us (AVX2 code 90 vs
#: 138), (1, 144, 28, 28) 86 vs 169 (88 vs 193), MobileNet V3-Small's (1, 96, 28, 28) 60 vs 121; but (1,
#: 272, 20, 20) 134 vs 103 (117 vs 113) and (1, 560, 14, 14) 191 vs 109. Several images keep the
#: channels-last kernel up to 32x32.
STRIDE2_5X5_FLAT_MIN_PIXELS = 24 * 24
#: stride-1 3x3 "same" planes of at most this many pixels (20x20) that take the flat kernels go through
#: :func:`_forward_flat_stacked3x3_kernel`, larger ones through :func:`_forward_flat_same3x3_kernel`
STACKED_MAX_PIXELS = 20 * 20
#: values the stacked kernel's run holds at most (:func:`_images_per_stack`): 4096 float32 values, 16 KiB,
#: stay in L1 with their output. Measured as :func:`_forward_flat_stacked3x3_kernel` says, the whole batch in
#: one run against calls of at most 4096 values: (64, 48, 16, 16) 358 against 320 us, (64, 72, 16, 16) 577
#: against 478, (256, 48, 16, 16) 1.65 against 1.24 ms; (16, 96, 12, 12) 113 either way (one call holds it)
STACKED_RUN_VALUES = 4096
#: channels per iteration of the flat-run forward kernel on one image, which share one set of buffers
#: (:func:`_channel_chunks`)
FLAT_CHANNEL_CHUNK = 8
#: channels per iteration of the channels-last kernels (a multiple of the vector width)
CHANNEL_BLOCK = 64
#: ... or half of it when there are fewer than this many (image, block) iterations per thread
MIN_TASKS_PER_THREAD = 4
#: planes of at least this many pixels are transposed a channel at a time (:func:`_scatter_pixels`)
CHANNEL_RUN_MIN_PIXELS = 32
#: values added to a pixel's row in the intermediate channels-last copy of a large block (:func:`_pixel_stride`)
PIXEL_STRIDE_PAD = 4
#: ... of blocks of at least this many values (169 pixels of 64 channels)
PIXEL_STRIDE_PAD_MIN_VALUES = 13 * 13 * 64
#: planes of at least this many pixels (8x8) go to and from the padded channels-last phases in two steps:
#: the fast transpose of :func:`_gather_pixels` / :func:`_scatter_pixels`, then whole pixels (``cb``
#: contiguous values) moved into place. Measured on a 2-core AMD EPYC (AVX2), both gradients of
#: (64, 48, 16, 16) at stride 2: 2.0 -> 0.76 ms; smaller planes keep the direct copies (the two steps
#: lost on 4x4 planes).
PHASES_VIA_PIXELS_MIN_PIXELS = 8 * 8
#: batches of at least this many images take the across-channels kernels (:func:`_use_across_channels`): a
#: table of taps and each channel's final sums cost about as much as one image's convolution, so few images
#: do not pay (measured on a 2-core AMD EPYC, both gradients against the channels-last kernel: (8, 576, 7,
#: 7) 795 -> 1024 us, (2, 960, 7, 7) 5x5 708 -> 2528; (16, 96, 10, 10) 514 -> 478)
ACROSS_CHANNELS_MIN_IMAGES = 16
#: the across-channels forward and input gradient also take 3x3 "same" planes of up to this many pixels
#: (16x16) in batches of at least ACROSS_CHANNELS_MIN_IMAGES_FORWARD images
#: (:func:`_use_across_channels_forward`)
ACROSS_CHANNELS_MAX_PIXELS = 16 * 16
ACROSS_CHANNELS_MIN_IMAGES_FORWARD = 32
#: the across-channels forward takes whole channels of about this many values per task, for a group of
#: images (its table of taps, one row per tap, stays in cache)
ACROSS_CHANNELS_RUN = 1024
#: the across-channels weight gradient takes whole channels of about this many values per iteration (its
#: per-value sums, one row per tap, stay in L1)
WEIGHT_GRADIENT_RUN = 256
#: stride-1 "same" planes of at least this many pixels (12x12) take the dot-product weight gradient
#: (:func:`_use_weight_gradient_dots`) and, with it, the flat-run input gradient
DOTS_WEIGHT_GRADIENT_MIN_PIXELS = 12 * 12
#: channels per iteration of the one-pixel kernels
ONE_PIXEL_BLOCK = 32
#: the flat weight gradient keeps its partial sums for blocks of output rows of about this many values at
#: most (:func:`_backward_weight_flat_kernel`): a plane's whole run up to 16 x 16, (1, 144, 56, 56) in 7
#: blocks of 8 rows
WEIGHT_GRADIENT_BLOCK_VALUES = 512


# ----------------------------------------------------------------------------------------------------
# Argument checking (Python)
# ----------------------------------------------------------------------------------------------------
def _depthwise_geometry(input_shape, weight_shape, stride, padding, dilation, input_name="x"):
    """Geometry of a depthwise convolution; checks that the weight is ``(C*m, 1, kH, kW)``."""
    check_depthwise_weight_shape(weight_shape, input_shape, input_name)
    return conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups=input_shape[1],
                         input_name=input_name)


def _use_row_fast_path(geometry):
    kH, kW = geometry.kernel_size
    return (kH == kW and kH in FAST_KERNEL_SIZES and geometry.stride[0] == geometry.stride[1]
            and geometry.stride[0] in FAST_STRIDES)


def _use_flat(geometry):
    """The flat-run forward kernel (:func:`_forward_flat_kernel`) for one output channel per input
    channel: at stride 1 on planes of at least :data:`FLAT_MIN_PIXELS` pixels (one image) or
    :data:`FLAT_MIN_PIXELS_BATCHED` (several), 3x3 kernels at stride 2 from :data:`STRIDE2_FLAT_MIN_PIXELS`
    (one image) or :data:`STRIDE2_FLAT_MIN_PIXELS_BATCHED` (several), 5x5 kernels at stride 2 of one image
    from :data:`STRIDE2_5X5_FLAT_MIN_PIXELS`, and otherwise on the planes too large for the channels-last
    kernels."""
    N, C, H, W = geometry.input_shape
    if geometry.weight_shape[0] != C:
        return False
    if H * W < FLAT_MIN_PIXELS:
        return False
    if H * W > CHANNELS_LAST_MAX_PIXELS:
        return True
    if geometry.stride == (2, 2) and geometry.dilation == (1, 1):
        if geometry.kernel_size == (3, 3):
            return H * W >= (STRIDE2_FLAT_MIN_PIXELS if N == 1 else STRIDE2_FLAT_MIN_PIXELS_BATCHED)
        return geometry.kernel_size == (5, 5) and N == 1 and H * W >= STRIDE2_5X5_FLAT_MIN_PIXELS
    return geometry.stride == (1, 1) and (N == 1 or H * W >= FLAT_MIN_PIXELS_BATCHED)


def _use_across_channels(geometry):
    """The across-channels kernels (:func:`_forward_across_channels_kernel`, :func:`_backward_across_channels`):
    at least :data:`ACROSS_CHANNELS_MIN_IMAGES` images, stride 1, outputs the size of the input ("same"
    padding), one output channel per input channel, on the planes where the channels-last kernels would
    run (below :data:`FLAT_MIN_PIXELS_BATCHED`).

    Measured on a 2-core AMD EPYC (AVX2), alternated against the channels-last kernels. Forward of a
    prepared layer: (64, 96, 8, 8) 515 -> 295 us, (64, 144, 8, 8) 789 -> 417, (64, 192, 4, 4) 281 -> 149,
    (64, 288, 2, 2) 171 -> 64, (64, 32, 11, 11) 325 -> 172; 5x5 (64, 240, 8, 8) 2.20 -> 1.60 ms. Both
    gradients (``_backward``): (64, 96, 8, 8) 1363 -> 982 us, (64, 192, 4, 4) 837 -> 507, (64, 288, 2, 2)
    622 -> 298, (64, 32, 11, 11) 834 -> 630; 5x5 (64, 120, 4, 4) 691 -> 485, (64, 240, 8, 8) 6.4 -> 5.9 ms.
    """
    N, C, H, W = geometry.input_shape
    return (N >= ACROSS_CHANNELS_MIN_IMAGES and geometry.weight_shape[0] == C and geometry.stride == (1, 1)
            and geometry.output_shape[2:] == (H, W) and 1 < H * W < FLAT_MIN_PIXELS_BATCHED)


def _use_across_channels_forward(geometry):
    """The across-channels forward kernel (:func:`_forward_across_channels_kernel`) for the forward and the
    input gradient (a forward with the filter turned): where :func:`_use_across_channels` holds, and also
    for a 3x3 kernel on "same" stride-1 planes from :data:`FLAT_MIN_PIXELS_BATCHED` up to
    :data:`ACROSS_CHANNELS_MAX_PIXELS` pixels in batches of at least :data:`ACROSS_CHANNELS_MIN_IMAGES_FORWARD`
    images (there the weight gradient keeps the dot-product kernel).

    Measured on a 2-core Intel Sapphire Rapids, alternated in one process against the flat-run kernels
    these planes took before (same bits), two processes: forward (64, 144, 12, 12) 790-804 -> 627-644 us,
    (64, 96, 14, 14) 706-719 -> 591-598, (64, 72, 16, 16) 611-641 -> 509-538, (64, 48, 16, 16) 424-439 ->
    375-376, (32, 144, 16, 16) 603-628 -> 512-543; the input gradient alike (-11 to -24%), both gradients
    -5 to -11%. Below 32 images it did not pay: (8, 384, 14, 14) 345 against 346 us, (16, 96, 16, 16) 206
    against 209, (4, 384, 14, 14) 160 against 173.
    """
    N, C, H, W = geometry.input_shape
    if _use_across_channels(geometry):
        return True
    return (N >= ACROSS_CHANNELS_MIN_IMAGES_FORWARD and geometry.weight_shape[0] == C
            and geometry.kernel_size == (3, 3) and geometry.stride == (1, 1)
            and geometry.output_shape[2:] == (H, W)
            and FLAT_MIN_PIXELS_BATCHED <= H * W <= ACROSS_CHANNELS_MAX_PIXELS)


def _use_one_pixel(geometry):
    """Outputs of one pixel per channel, one output channel per input channel: the one-pixel kernels.
    Measured on a 2-core AMD EPYC (AVX2) against the channels-last kernels, which pad such a plane to
    the whole kernel: (64, 480, 1, 1) forward 0.20 -> 0.09 ms, both gradients 0.79 -> 0.12 ms;
    (64, 288, 2, 2) at stride 2: 0.15 -> 0.12 and 0.56 -> 0.20 ms."""
    _, C, _, _ = geometry.input_shape
    return geometry.weight_shape[0] == C and geometry.output_shape[2] * geometry.output_shape[3] == 1


def _use_flat_backward(geometry):
    """The flat-run kernels for both gradients: stride 1, one output channel per input channel, padding
    at most ``d*(k - 1)`` (so the input gradient is a forward convolution with padding ``d*(k-1) - p >= 0``)
    and planes of at least :data:`FLAT_BACKWARD_MIN_PIXELS` pixels."""
    _, C, H, W = geometry.input_shape
    (kH, kW), (ph, pw), (dh, dw) = geometry.kernel_size, geometry.padding, geometry.dilation
    return (geometry.stride == (1, 1) and geometry.weight_shape[0] == C and H * W >= FLAT_BACKWARD_MIN_PIXELS
            and ph <= dh * (kH - 1) and pw <= dw * (kW - 1))


def _use_flat_weight_gradient(geometry):
    """The flat-run weight gradient (:func:`_backward_weight_flat_kernel`): where :func:`_use_flat_backward`
    holds, and at any stride on planes of at least :data:`LARGE_PLANE_GRADIENTS_MIN_PIXELS` pixels (one
    output channel per input channel); but not for one image on a plane the channels-last kernels take.

    One image gives the flat kernel one plane per channel to fold its block partial sums for, where the
    channels-last kernel sums a tap across a block of channels at once. Measured on a 2-core AMD EPYC
    (AVX2), both gradients of one image, alternated (the input gradient flat in both): (1, 192, 28, 28)
    700 -> 556 us, (1, 240, 28, 28) 5x5 1542 -> 1044, (1, 128, 16, 16) 265 -> 125, (1, 96, 32, 32) 306 ->
    285, (1, 144, 28, 28) 535 -> 535; with two images or more the flat kernel stays ahead ((8, 192, 28,
    28) 3196 against 3569, (64, 48, 16, 16) 1370 against 1556).
    """
    N, C, H, W = geometry.input_shape
    if N == 1 and H * W <= ONE_IMAGE_CHANNELS_LAST_WEIGHT_GRADIENT_MAX_PIXELS and _use_channels_last(geometry):
        return False
    return (_use_flat_backward(geometry)
            or (geometry.weight_shape[0] == C and H * W >= LARGE_PLANE_GRADIENTS_MIN_PIXELS))


def _use_weight_gradient_dots(geometry):
    """The dot-product weight gradient (:func:`_weight_gradient_dots_kernel`): stride 1, outputs the size of
    the input ("same" padding), one output channel per input channel, planes of at least
    :data:`DOTS_WEIGHT_GRADIENT_MIN_PIXELS` pixels; the input gradient then takes the flat-run kernel.

    Measured on a 2-core AMD EPYC (AVX2), alternated in one process against the kernels these planes took
    before (channels-last, or flat from 33 x 33 and for batches from 16 x 16). Weight gradient: (8, 384,
    14, 14) 1354 -> 831 us, (1, 576, 14, 14) 308 -> 157, (1, 192, 28, 28) 357 -> 116, (1, 144, 56, 56) 616
    -> 273, (8, 144, 56, 56) 4.30 -> 2.75 ms, (64, 48, 16, 16) 1145 -> 772 us, (1, 576, 12, 12) 234 -> 118,
    5x5 (8, 240, 14, 14) 1263 -> 853; both gradients (``_backward``, the input gradient flat instead of in the
    channels-last pass): (8, 384, 14, 14) 2152 -> 1823, (1, 192, 28, 28) 554 -> 311, (1, 576, 12, 12) 344 ->
    277. Below 12 x 12 the two gradients in one channels-last pass stay ahead ((1, 576, 11, 11) 284 against
    304, (8, 384, 10, 10) 935 against 1109, (8, 576, 7, 7) 673 against 1291).
    """
    N, C, H, W = geometry.input_shape
    return (geometry.weight_shape[0] == C and geometry.stride == (1, 1) and geometry.output_shape[2:] == (H, W)
            and H * W >= DOTS_WEIGHT_GRADIENT_MIN_PIXELS)


def _use_input_gradient_phases(geometry):
    """The phase-by-phase input gradient (:func:`_backward_input_phases_kernel`): strides other than 1 on
    planes of at least :data:`LARGE_PLANE_GRADIENTS_MIN_PIXELS` pixels (those above the channels-last
    kernels), one output channel per input channel."""
    _, C, H, W = geometry.input_shape
    return (geometry.stride != (1, 1) and geometry.weight_shape[0] == C
            and H * W >= LARGE_PLANE_GRADIENTS_MIN_PIXELS)


def _use_channels_last(geometry):
    """Small planes (at most :data:`CHANNELS_LAST_MAX_PIXELS` input pixels) with one output channel per
    input channel take the channels-last kernels; larger planes keep the plane-by-plane loops."""
    _, C, H, W = geometry.input_shape
    return geometry.weight_shape[0] == C and H * W <= CHANNELS_LAST_MAX_PIXELS


def _channel_block(geometry):
    """Channels per iteration of the channels-last kernels: ``CHANNEL_BLOCK``, or half of it when that
    leaves each thread fewer than ``MIN_TASKS_PER_THREAD`` iterations (batch-1 inference: (1, 192, 28, 28)
    has 3 blocks of 64 for 2 threads; 6 blocks of 32 take 0.36 instead of 0.42 ms on a 2-core AMD EPYC,
    and its weight gradient 253 instead of 308 us, both gradients 503 instead of 642 us). Each output and
    each weight gradient is the same sum in the same order whatever the block, so the bits do not change."""
    N, C = geometry.input_shape[:2]
    if N * -(-C // CHANNEL_BLOCK) < MIN_TASKS_PER_THREAD * num_threads():
        return CHANNEL_BLOCK // 2
    return CHANNEL_BLOCK


def _loop_arguments(geometry):
    """The six integers every kernel takes: ``sh, sw, ph, pw, dh, dw``."""
    return geometry.stride + geometry.padding + geometry.dilation


def _empty_bias(dtype):
    # numba needs one argument type: "no bias" is an empty array rather than None
    return np.zeros(0, dtype=dtype)


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------
def depthwise_conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Depthwise 2-D convolution: each channel is filtered by its own ``kH x kW`` kernel.

    Parameters
    ----------
    x : ndarray (N, C, H, W), float32 or float64
    weight : ndarray (C*m, 1, kH, kW), same dtype; ``m >= 1`` is the channel multiplier and output
        channel ``oc`` filters input channel ``oc // m`` (PyTorch's ``groups=C`` layout).
    bias : ndarray (C*m,) or None
    stride, padding, dilation : int or (h, w) pair

    Returns
    -------
    y : ndarray (N, C*m, H_out, W_out) with ``H_out = (H + 2*pad - dil*(kH-1) - 1) // stride + 1``::

        y[n, oc, oh, ow] = bias[oc] + sum_{kh, kw} weight[oc, 0, kh, kw] * x_pad[n, oc // m, oh*s + kh*d, ow*s + kw*d]

    Cost: ``kH*kW*C*m*H_out*W_out`` MACs, ``1/C_out`` of a standard convolution (MobileNet V1,
    arXiv:1704.04861, section 3.1).
    """
    x = check_tensor(x, "x")
    weight = check_tensor(weight, "weight")
    check_same_dtype(x=x, weight=weight)
    geometry = _depthwise_geometry(x.shape, weight.shape, stride, padding, dilation)
    bias = check_bias(bias, weight.shape[0], x.dtype)
    return _forward(x, weight, bias, geometry)


def depthwise_conv2d_backward_input(grad_out, weight, input_shape, stride=1, padding=0, dilation=1):
    """Gradient of :func:`depthwise_conv2d_forward` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray (N, C*m, H_out, W_out), dL/dy
    weight : ndarray (C*m, 1, kH, kW)
    input_shape : tuple (N, C, H, W) of the forward input

    Returns
    -------
    grad_x : ndarray (N, C, H, W)::

        grad_x[n, c, h, w] = sum_{j < m} sum_{oh, ow, kh, kw : h = oh*s + kh*d - p, w = ow*s + kw*d - p}
                             weight[c*m + j, 0, kh, kw] * grad_out[n, c*m + j, oh, ow]

    Each input pixel collects the gradient of every output pixel whose window covered it: the same
    loops as the forward pass, run backwards (a transposed depthwise convolution).
    """
    weight = check_tensor(weight, "weight")
    input_shape = check_shape(input_shape, "input_shape")
    geometry = _depthwise_geometry(input_shape, weight.shape, stride, padding, dilation, "input_shape")
    grad_out = check_grad_out(grad_out, geometry.output_shape, weight.dtype)
    return _backward_input(grad_out, weight, geometry)


def depthwise_conv2d_backward_weight(grad_out, x, weight_shape, stride=1, padding=0, dilation=1):
    """Gradient of :func:`depthwise_conv2d_forward` with respect to its weight.

    Parameters
    ----------
    grad_out : ndarray (N, C*m, H_out, W_out), dL/dy
    x : ndarray (N, C, H, W), the forward input
    weight_shape : tuple (C*m, 1, kH, kW)

    Returns
    -------
    grad_weight : ndarray (C*m, 1, kH, kW)::

        grad_weight[oc, 0, kh, kw] = sum_{n, oh, ow} grad_out[n, oc, oh, ow] * x_pad[n, oc // m, oh*s + kh*d, ow*s + kw*d]

    Partial sums are kept per channel (and per image for small planes) and added in a fixed order,
    so the result is bit-for-bit reproducible whatever the number of threads.
    """
    x = check_tensor(x, "x")
    weight_shape = check_shape(weight_shape, "weight_shape")
    geometry = _depthwise_geometry(x.shape, weight_shape, stride, padding, dilation)
    grad_out = check_grad_out(grad_out, geometry.output_shape, x.dtype)
    return _backward_weight(grad_out, x, geometry)


# ----------------------------------------------------------------------------------------------------
# Private twins (arguments already validated; ``conv2d`` dispatches here)
# ----------------------------------------------------------------------------------------------------
def _forward(x, weight, bias, geometry, epilogue=None):
    """Allocate the output and run the forward kernel that suits the geometry; ``epilogue`` as
    :func:`kernels.conv2d._forward`'s (the flat and channels-last kernels apply it before writing their
    output, the others in one pass after it). The same as ``prepare_forward(weight, bias, geometry,
    epilogue)(x)``."""
    return prepare_forward(weight, bias, geometry, epilogue)(x)


def prepare_forward(weight, bias, geometry, epilogue=None):
    """The depthwise forward for fixed weights and input shape: ``forward(x) -> y``, its kernel chosen once.

    Parameters
    ----------
    weight : ndarray (C_out, 1, kH, kW), C-contiguous
    bias : ndarray (C_out,) or None
    geometry : the checked geometry of the input shape (N, C_in, H, W)
    epilogue : as :func:`kernels.conv2d._forward`'s, or None

    Returns
    -------
    forward : callable, C-contiguous ``x`` (N, C_in, H, W) of ``weight``'s dtype -> ``y`` (N, C_out, H_out,
        W_out), a new array.

    :func:`_forward` is this, prepared and called at once; ``tinycnn.nn.freeze`` keeps the prepared
    function of each input shape instead of choosing the kernel and packing its arguments on every call.
    """
    dtype, output_shape = weight.dtype, geometry.output_shape
    if bias is None:
        bias = _empty_bias(dtype)
    loop = _loop_arguments(geometry)                                  # sh, sw, ph, pw, dh, dw
    if _use_one_pixel(geometry):
        taps = _weight_taps(weight)                                   # (kH, kW, C)

        def one_pixel_forward(x):
            y = np.empty(output_shape, dtype=dtype)
            _forward_one_pixel_kernel(x, taps, bias, y, ONE_PIXEL_BLOCK, *loop[2:])
            return finish_channels(y, epilogue)

        return one_pixel_forward
    finish = kernel_epilogue(epilogue, dtype)                         # scale, shift, low, high, hardswish
    if _use_across_channels_forward(geometry):
        inside, chunk_channels, group_images, tasks = _across_channels_arguments(geometry)

        def across_channels_forward(x):                               # the epilogue inside the kernel
            y = np.empty(output_shape, dtype=dtype)
            nonfinite = np.empty(tasks, dtype=np.int64)
            _forward_across_channels_kernel(x, weight, inside, bias, y, chunk_channels, group_images, *loop[2:],
                                            *finish, nonfinite)
            if nonfinite.any():                                       # (its 0 * inf): channels-last instead
                return _prepare_channels_last_forward(weight, bias, geometry, finish)(x)
            return y

        return across_channels_forward
    if _use_flat(geometry):
        chunks = _channel_chunks(*output_shape[:2])

        def flat_forward(x):                                          # the epilogue inside the kernel
            y = np.empty(output_shape, dtype=dtype)
            _forward_flat_kernel(x, weight, bias, y, chunks, *loop, *finish)
            return y

        return flat_forward
    if _use_channels_last(geometry):
        return _prepare_channels_last_forward(weight, bias, geometry, finish)
    kernel = _forward_rows_kernel if _use_row_fast_path(geometry) else _forward_generic_kernel

    def plane_forward(x):                                             # the epilogue in a pass of its own
        y = np.empty(output_shape, dtype=dtype)
        kernel(x, weight, bias, y, *loop)
        return finish_channels(y, epilogue)

    return plane_forward


def _prepare_channels_last_forward(weight, bias, geometry, finish):
    """:func:`prepare_forward`'s channels-last forward (``bias`` an array, ``finish`` the kernel's epilogue
    arguments): the weights tiled once (:func:`_tile_weight`), then one kernel call per input."""
    block = _channel_block(geometry)
    w_tiled = _tile_weight(weight, block, geometry.output_shape[3])    # (blocks, kH, kW, W_out*block), once
    loop = _loop_arguments(geometry)

    def channels_last_forward(x):                                     # the epilogue inside the kernel
        y = np.empty(geometry.output_shape, dtype=weight.dtype)
        _forward_channels_last_kernel(x, w_tiled, bias, y, block, *loop, *finish)
        return y

    return channels_last_forward


def _backward_input(grad_out, weight, geometry):
    """``grad_x`` from the kernel that suits the geometry."""
    if _use_across_channels_forward(geometry):
        return _backward_across_channels(grad_out, None, weight, geometry, want_input=True, want_weight=False)[0]
    if _use_one_pixel(geometry):
        return _backward_one_pixel(grad_out, None, weight, geometry, want_input=True, want_weight=False)[0]
    if _use_flat_backward(geometry) or _use_weight_gradient_dots(geometry):
        return _backward_input_flat(grad_out, weight, geometry)
    if _use_channels_last(geometry):
        return _backward_channels_last(grad_out, None, weight, geometry, want_input=True, want_weight=False)[0]
    grad_x = np.empty(geometry.input_shape, dtype=weight.dtype)
    if _use_input_gradient_phases(geometry):
        _backward_input_phases_kernel(grad_out, weight, grad_x, *_loop_arguments(geometry))
    elif _use_row_fast_path(geometry) and geometry.stride[0] == 1:
        _backward_input_rows_stride1_kernel(grad_out, weight, grad_x, *_loop_arguments(geometry)[2:])
    else:
        _backward_input_generic_kernel(grad_out, weight, grad_x, *_loop_arguments(geometry))
    return grad_x


def _backward_weight(grad_out, x, geometry):
    """``grad_weight`` from the kernel that suits the geometry."""
    if _use_across_channels(geometry):
        return _backward_across_channels(grad_out, x, None, geometry, want_input=False, want_weight=True)[1]
    if _use_one_pixel(geometry):
        return _backward_one_pixel(grad_out, x, None, geometry, want_input=False, want_weight=True)[1]
    if _use_weight_gradient_dots(geometry):
        grad_weight = np.empty(geometry.weight_shape, dtype=x.dtype)
        _, _, H, W = geometry.input_shape
        (kH, kW), (ph, pw), (dh, dw) = geometry.kernel_size, geometry.padding, geometry.dilation
        _weight_gradient_dots_kernel(grad_out, x, _taps_inside_plane(H, W, kH, kW, ph, pw, dh, dw), grad_weight,
                                     ph, pw, dh, dw)
        return grad_weight
    if _use_flat_weight_gradient(geometry):
        grad_weight = np.empty(geometry.weight_shape, dtype=x.dtype)
        _backward_weight_flat_kernel(grad_out, x, grad_weight, *_loop_arguments(geometry))
        return grad_weight
    if _use_channels_last(geometry):
        return _backward_channels_last(grad_out, x, None, geometry, want_input=False, want_weight=True)[1]
    grad_weight = np.empty(geometry.weight_shape, dtype=x.dtype)
    if _use_row_fast_path(geometry):
        _backward_weight_rows_kernel(grad_out, x, grad_weight, *_loop_arguments(geometry))
    else:
        _backward_weight_generic_kernel(grad_out, x, grad_weight, *_loop_arguments(geometry))
    return grad_weight


def _backward(grad_out, x, weight, geometry):
    """``(grad_x, grad_weight)``; small planes compute both in one pass over ``grad_out``."""
    if _use_across_channels(geometry):
        return _backward_across_channels(grad_out, x, weight, geometry, want_input=True, want_weight=True)
    if _use_one_pixel(geometry):
        return _backward_one_pixel(grad_out, x, weight, geometry, want_input=True, want_weight=True)
    if (_use_channels_last(geometry) and not _use_flat_backward(geometry)
            and not _use_weight_gradient_dots(geometry)):
        return _backward_channels_last(grad_out, x, weight, geometry, want_input=True, want_weight=True)
    return _backward_input(grad_out, weight, geometry), _backward_weight(grad_out, x, geometry)


def _backward_input_flat(grad_out, weight, geometry):
    """Stride 1: ``grad_x`` is the forward convolution of ``grad_out`` with the kernel turned by 180
    degrees and padding ``d*(k - 1) - p`` (a transposed convolution at stride 1 is a plain one), run by
    the flat-run forward kernel."""
    turned = np.ascontiguousarray(weight[:, :, ::-1, ::-1])
    (kH, kW), (ph, pw), (dh, dw) = geometry.kernel_size, geometry.padding, geometry.dilation
    grad_x = np.empty(geometry.input_shape, dtype=weight.dtype)
    nothing = _empty_bias(weight.dtype)
    _forward_flat_kernel(grad_out, turned, nothing, grad_x, _channel_chunks(*geometry.input_shape[:2]), 1, 1,
                         dh * (kH - 1) - ph, dw * (kW - 1) - pw, dh, dw,
                         nothing, nothing, weight.dtype.type(-np.inf), weight.dtype.type(np.inf), False)
    return grad_x


def _backward_across_channels(grad_out, x, weight, geometry, want_input, want_weight):
    """Both gradients of the across-channels layers (:func:`_use_across_channels`), or the input gradient
    alone of the larger planes (:func:`_use_across_channels_forward`); one not asked for is None.

    ``grad_x`` is the forward convolution of ``grad_out`` with the filter turned by 180 degrees (padding
    ``d*(k - 1) - p``, which is ``p`` for a "same" layer), by :func:`_forward_across_channels_kernel`, or
    by the channels-last kernel when ``grad_out`` is not finite (that kernel's ``0 * inf``); ``grad_weight``
    by :func:`_weight_gradient_across_channels_kernel`, on runs of about :data:`WEIGHT_GRADIENT_RUN` values
    (fewer channels when that would leave a thread fewer than ``MIN_TASKS_PER_THREAD`` runs).
    """
    _, C, H, W = geometry.input_shape
    kH, kW = geometry.kernel_size
    (ph, pw), (dh, dw) = geometry.padding, geometry.dilation
    dtype = grad_out.dtype
    grad_x = grad_weight = None
    if want_input:
        turned = np.ascontiguousarray(weight[:, :, ::-1, ::-1])
        turned_ph, turned_pw = dh * (kH - 1) - ph, dw * (kW - 1) - pw
        inside, chunk_channels, group_images, tasks = _across_channels_arguments(geometry, turned_ph, turned_pw)
        grad_x = np.empty(geometry.input_shape, dtype=dtype)
        nonfinite = np.empty(tasks, dtype=np.int64)
        nothing = _empty_bias(dtype)
        _forward_across_channels_kernel(grad_out, turned, inside, nothing, grad_x, chunk_channels, group_images,
                                        turned_ph, turned_pw, dh, dw, nothing, nothing, dtype.type(-np.inf),
                                        dtype.type(np.inf), False, nonfinite)
        if nonfinite.any():
            grad_x = _backward_channels_last(grad_out, None, weight, geometry, want_input=True, want_weight=False)[0]
    if want_weight:
        grad_weight = np.empty(geometry.weight_shape, dtype=dtype)
        per_thread = -(-C // (MIN_TASKS_PER_THREAD * num_threads()))       # channels
        channels_per_run = max(1, min(-(-WEIGHT_GRADIENT_RUN // (H * W)), per_thread))
        _weight_gradient_across_channels_kernel(grad_out, x, _taps_inside_plane(H, W, kH, kW, ph, pw, dh, dw),
                                                channels_per_run, kH, kW, ph, pw, dh, dw, grad_weight)
    return grad_x, grad_weight


def _across_channels_arguments(geometry, ph=None, pw=None):
    """``(inside, chunk_channels, group_images, tasks)`` for :func:`_forward_across_channels_kernel` on
    ``geometry``'s input, with its padding or the given ``ph, pw`` (the input gradient's): the taps inside
    the plane (:func:`_taps_inside_plane`); whole channels of about :data:`ACROSS_CHANNELS_RUN` values per
    task, and the images in groups so that each thread has ``MIN_TASKS_PER_THREAD`` tasks where the batch
    allows (a group of one image at least); how many tasks."""
    N, C, H, W = geometry.input_shape
    (kH, kW), (dh, dw) = geometry.kernel_size, geometry.dilation
    if ph is None:
        ph, pw = geometry.padding
    chunk_channels = max(1, min(C, ACROSS_CHANNELS_RUN // (H * W)))
    chunks = -(-C // chunk_channels)
    groups = min(N, -(-MIN_TASKS_PER_THREAD * num_threads() // chunks))     # at least one
    group_images = -(-N // groups)
    return (_taps_inside_plane(H, W, kH, kW, ph, pw, dh, dw), chunk_channels, group_images,
            chunks * -(-N // group_images))


@functools.lru_cache(maxsize=256)
def _taps_inside_plane(H, W, kH, kW, ph, pw, dh, dw):
    """``inside[kh*kW + kw, oh*W + ow]``: whether tap ``(kh, kw)`` of output ``(oh, ow)`` reads inside an
    ``H x W`` plane at stride 1, (kH*kW, H*W) booleans; cached per geometry and only ever read."""
    rows = np.arange(H)[None, :, None] + (np.arange(kH) * dh - ph)[:, None, None]      # (kH, H, 1)
    columns = np.arange(W)[None, None, :] + (np.arange(kW) * dw - pw)[:, None, None]   # (kW, 1, W)
    rows_inside = (rows >= 0) & (rows < H)
    columns_inside = (columns >= 0) & (columns < W)
    return (rows_inside[:, None] & columns_inside[None, :]).reshape(kH * kW, H * W)


def _backward_channels_last(grad_out, x, weight, geometry, want_input, want_weight):
    """Run :func:`_backward_channels_last_kernel`; a gradient not asked for is returned as None."""
    N, C, H, W = geometry.input_shape
    _, _, kH, kW = geometry.weight_shape
    dtype = grad_out.dtype
    block = _channel_block(geometry)
    blocks = (C + block - 1) // block
    # numba needs arrays in every argument: unused ones are empty stand-ins of the right rank
    grad_x = np.empty(geometry.input_shape if want_input else (0, 0, 0, 0), dtype=dtype)
    partial = np.empty((N, blocks, kH, kW, block) if want_weight else (0, 0, 0, 0, 0), dtype=dtype)
    x = x if want_weight else np.empty((0, 0, 0, 0), dtype=dtype)
    weight = weight if want_input else np.empty((0, 0, 0, 0), dtype=dtype)
    _backward_channels_last_kernel(grad_out, x, weight, grad_x, partial, block, want_input, want_weight,
                                   H, W, kH, kW, *_loop_arguments(geometry))
    grad_weight = None
    if want_weight:
        grad_weight = np.empty(geometry.weight_shape, dtype=dtype)
        _sum_weight_partials_kernel(partial, grad_weight, block)
    return (grad_x if want_input else None), grad_weight


def _weight_taps(weight):
    """``(C, 1, kH, kW)`` -> ``(kH, kW, C)``: one tap's weights of all channels contiguous."""
    return np.ascontiguousarray(weight[:, 0].transpose(1, 2, 0))


def _backward_one_pixel(grad_out, x, weight, geometry, want_input, want_weight):
    """Run :func:`_backward_one_pixel_kernel`; a gradient not asked for is returned as None."""
    N, C, H, W = geometry.input_shape
    _, _, kH, kW = geometry.weight_shape
    dtype = grad_out.dtype
    # numba needs arrays in every argument: unused ones are empty stand-ins of the right rank
    grad_x = np.zeros(geometry.input_shape if want_input else (0, 0, 0, 0), dtype=dtype)
    grad_taps = np.empty((kH, kW, C) if want_weight else (0, 0, 0), dtype=dtype)
    x = x if want_weight else np.empty((0, 0, 0, 0), dtype=dtype)
    taps = _weight_taps(weight) if want_input else np.empty((0, 0, 0), dtype=dtype)
    _backward_one_pixel_kernel(grad_out, x, taps, grad_x, grad_taps, ONE_PIXEL_BLOCK, want_input, want_weight,
                               H, W, kH, kW, *_loop_arguments(geometry)[2:])
    grad_weight = np.ascontiguousarray(grad_taps.transpose(2, 0, 1)[:, None]) if want_weight else None
    return (grad_x if want_input else None), grad_weight


# ----------------------------------------------------------------------------------------------------
# Column ranges (numba)
# ----------------------------------------------------------------------------------------------------
@inline_jit
def _column_ranges(W_out, W, s, p, d, k):
    """Which output columns each tap of a kernel row can use, computed once per call.

    Returns ``tap_lo, tap_hi`` (k,): tap ``kw`` reads inside the image for output columns
    ``[tap_lo[kw], tap_hi[kw])``; and the interior ``[in_lo, in_hi)`` where all ``k`` taps do.
    Columns outside the interior are the (one or two) border columns handled tap by tap.
    """
    tap_lo = np.empty(k, dtype=np.int64)
    tap_hi = np.empty(k, dtype=np.int64)
    for kw in range(k):
        tap_lo[kw], tap_hi[kw] = valid_output_range(W_out, W, s, kw * d - p)
    in_lo = tap_lo[0]
    in_hi = max(in_lo, tap_hi[k - 1])
    return tap_lo, tap_hi, in_lo, in_hi


@inline_jit
def _border_run(side, tap_lo, tap_hi, in_lo, in_hi):
    """Columns of one tap outside the interior: ``side`` 0 is the left run, 1 the right run."""
    if side == 0:
        return tap_lo, min(tap_hi, in_lo)
    return max(tap_lo, in_hi), tap_hi


# ----------------------------------------------------------------------------------------------------
# Forward kernels (numba)
# ----------------------------------------------------------------------------------------------------
@parallel_jit
def _forward_generic_kernel(x, weight, bias, y, sh, sw, ph, pw, dh, dw):
    """Any kernel size, stride, padding, dilation: tap by tap, whole output rows at a time."""
    N, C, H, W = x.shape
    C_out, _, kH, kW = weight.shape
    _, _, H_out, W_out = y.shape
    multiplier = C_out // C
    has_bias = bias.shape[0] > 0
    for task in prange(N * C_out):                      # one (image, output channel) plane per iteration
        n = task // C_out
        oc = task - n * C_out
        x_plane = x[n, oc // multiplier]                # (H, W)
        y_plane = y[n, oc]                              # (H_out, W_out): written by this iteration only
        y_plane[:, :] = bias[oc] if has_bias else 0.0
        for kh in range(kH):
            oh_lo, oh_hi = valid_output_range(H_out, H, sh, kh * dh - ph)
            for kw in range(kW):
                ow_lo, ow_hi = valid_output_range(W_out, W, sw, kw * dw - pw)
                for oh in range(oh_lo, oh_hi):          # output rows whose input row is inside the image
                    tap_axpy(y_plane[oh], x_plane[oh * sh + kh * dh - ph], weight[oc, 0, kh, kw],
                             ow_lo, ow_hi, sw, kw * dw - pw)


def _forward_flat_kernel(x, weight, bias, y, chunks, sh, sw, ph, pw, dh, dw, scale, shift, low, high, hardswish):
    """Each plane is zero-padded into flat runs, and each tap is one long vectorised loop over a run.

    Stride 1: with ``Wp = W + 2*pw`` the padded row length, output ``(oh, ow)`` lies at ``oh*Wp + ow``
    of a run of ``H_out*Wp`` values, and tap ``(kh, kw)`` reads the padded plane at that index plus
    ``kh*dh*Wp + kw*dw``: the same offset for every output. So a tap adds ``w[kh, kw] * padded[start:
    start + run]`` to the whole run at once (a 14 x 14 plane is one loop of 224, instead of 14 rows
    shorter than two vectors); the ``Wp - W_out`` extra values per row are computed and dropped. The
    taps of a kernel row go up to three to a loop (``_rows.run_add_taps3``), which adds them in the
    order of one loop per tap, the same bits, reading and writing the run once instead of three times;
    a whole 3x3 kernel goes in one loop (``_rows.run_taps9``), and at stride 1 a row of five taps too.

    Stride ``s``: the padded plane is first split into ``sh*sw`` phases (padded row ``i`` and column
    ``j`` go to phase ``(i % sh, j % sw)`` at ``(i // sh, j // sw)``). Tap offset ``kh*dh = qh*sh + rh``
    (and the same for columns) then reads phase ``(rh, rw)`` at ``(oh + qh, ow + qw)``: stride 1 again
    inside the phase, with rows of ``Wq = ceil(Wp / sw)`` values.

    A non-empty ``scale`` finishes each output as ``v = clip(y * scale[c] + shift[c], low, high)`` before
    it is written out, and as hard swish ``v * clip(v + 3, 0, 6) / 6`` when ``hardswish`` is true (a batch
    norm and ReLU/ReLU6 or hard swish after the convolution, ``tinycnn.nn.fusion``;
    :func:`_finish_and_write_out`).

    Four compiled kernels do it, :func:`_forward_flat_stacked3x3_kernel` and
    :func:`_forward_flat_same3x3_kernel` (the MobileNets' stride-1 layers, 3x3 with padding 1: planes up to
    :data:`STACKED_MAX_PIXELS` pixels stacked, larger ones without a padded copy),
    :func:`_forward_flat_stride1_kernel` (the same sums without the phase
    arithmetic) and :func:`_forward_flat_strided_kernel`, and this function picks one. numba compiles a
    kernel on its first call, so a run that meets only stride-1 flat planes (training at 32 x 32, whose
    stride-2 layers are below :data:`STRIDE2_FLAT_MIN_PIXELS_BATCHED`) compiles no strided kernel, and a
    MobileNet's stride-1 layers only the "same" 3x3 one.
    Measured on a 2-core AMD EPYC (AVX2) with an empty numba cache, float32: 12-13 s for the stride-1
    kernel and 19 s for the strided one, where one kernel with both branches took 35 s (the main job from
    an empty cache 145-166 -> 130-146 s). Both give the bits the one kernel gave, and the lean stride-1
    kernel runs faster on small planes (prepared forward with ReLU6, alternated, each side first in turn:
    (1, 576, 14, 14) 169 -> 154 us, (8, 384, 14, 14) 871 -> 764, (64, 48, 16, 16) 1143 -> 1024, 5x5 (1, 960,
    14, 14) 493 -> 450; 56 x 56 and the strided planes within 3%).
    """
    N, C, H, W = x.shape
    same3x3 = sh == 1 and sw == 1 and _is_same3x3(weight.shape, H, W, ph, pw, dh, dw)
    if same3x3 and H * W <= STACKED_MAX_PIXELS:
        x = np.ascontiguousarray(x)                     # a copy only for a non-contiguous x
        calls = -(-N // _images_per_stack(N, H, W))
        for call in range(calls):                       # the batch cut into calls of as many images, about
            first, last = call * N // calls, (call + 1) * N // calls
            _forward_flat_stacked3x3_kernel(x[first:last], weight, bias, y[first:last], chunks, scale, shift, low,
                                            high, hardswish)
    elif same3x3:
        # flat (N, C, H*W) views of the planes (a copy only for a non-contiguous x; y is always a new array)
        _forward_flat_same3x3_kernel(x.reshape(N, C, H * W), weight, bias, y.reshape(N, C, H * W), chunks, H, W,
                                     scale, shift, low, high, hardswish)
    elif sh == 1 and sw == 1:
        _forward_flat_stride1_kernel(x, weight, bias, y, chunks, ph, pw, dh, dw, scale, shift, low, high, hardswish)
    else:
        _forward_flat_strided_kernel(x, weight, bias, y, chunks, sh, sw, ph, pw, dh, dw, scale, shift, low, high,
                                     hardswish)


@parallel_jit
def _forward_flat_stride1_kernel(x, weight, bias, y, chunks, ph, pw, dh, dw, scale, shift, low, high, hardswish):
    """:func:`_forward_flat_kernel` at stride 1: each plane through :func:`_flat_forward_plane_stride1`, then
    :func:`_finish_and_write_out`; a few channels, all their images, per parallel iteration."""
    N, C, H, W = x.shape
    _, _, kH, kW = weight.shape
    _, _, H_out, W_out = y.shape
    has_bias = bias.shape[0] > 0
    finished = scale.shape[0] > 0
    padded_width, run, padded_size = _phase_layout(H, W, kW, H_out, 1, 1, ph, pw, dw)
    for chunk in prange(chunks):                        # a few channels, all their images, per iteration
        padded = np.zeros(padded_size, dtype=x.dtype)   # the padded plane
        total = np.empty(run, dtype=x.dtype)            # (H_out * Wp,)
        for c in range(chunk * C // chunks, (chunk + 1) * C // chunks):
            for n in range(N):                          # the borders stay zero, the rest is rewritten
                _flat_forward_plane_stride1(x[n, c], weight, c, ph, pw, dh, dw, padded, total)
                _finish_and_write_out(total, y[n, c], padded_width, c, bias, has_bias, finished, scale, shift, low,
                                      high, hardswish)


def _is_same3x3(weight_shape, H, W, ph, pw, dh, dw):
    """Does :func:`_forward_flat_same3x3_kernel` take this stride-1 plane: a 3x3 kernel, padding 1,
    dilation 1 (the output the size of the input), at least 3 x 3 pixels?"""
    return (weight_shape[2] == 3 and weight_shape[3] == 3 and ph == 1 and pw == 1 and dh == 1 and dw == 1
            and H >= 3 and W >= 3)


@parallel_jit
def _forward_flat_same3x3_kernel(x, weight, bias, y, chunks, H, W, scale, shift, low, high, hardswish):
    """:func:`_forward_flat_kernel` for the MobileNets' stride-1 layers (3x3, padding 1, dilation 1,
    :func:`_is_same3x3`): the output plane computed in place, as one run.

    ``x``, ``y``: (N, C, H*W), each plane one flat run. Output ``j = oh*W + ow`` reads the input at ``j +
    (kh - 1)*W + (kw - 1)``: the same offset for every output, so the nine taps go in one pass over the
    whole plane (``_rows.run_taps9``), written straight into ``y``, if the plane has a row of zeros above
    and below it: the plane is copied, in one contiguous copy, between two such rows (``padded``). Only
    the first and last columns then read wrongly (the row before's last value or the row after's first,
    instead of the padding on the left or the right): those ``2*H`` outputs are computed again
    (:func:`_same3x3_side_columns`). Every output is the sum of :func:`_flat_forward_plane_stride1`'s nine
    products in its order, the padding's zeros included, so the bits are that kernel's; what goes is the
    row-by-row copy into a plane padded on all four sides, the passes over its ``2*H`` extra values, and
    the row-by-row copy of the output out of it (the epilogue, :func:`_finish_run`, runs on ``y`` in place).
    The input gradient of these layers is the same convolution (the filter turned, padding 1): it runs here
    too.

    Measured on a 2-core AMD EPYC (AVX2), float32 with a batch norm + ReLU6 epilogue, alternated against
    :func:`_forward_flat_stride1_kernel` (each side first in turn, 200 pairs, two runs): (1, 576, 14, 14)
    73-76 -> 66-68 us, (1, 192, 28, 28) 68 -> 55-56, (1, 144, 56, 56) 155-164 -> 130-134, (1, 32, 112, 112)
    134 -> 115-118, (8, 384, 14, 14) 376-391 -> 332-334, (64, 48, 16, 16) 418-426 -> 336-342, (1, 960, 12,
    12) 91-92 -> 84-85; the same bits (tested). Cold compile, float32: 8-9 s, as the padded-plane kernel's.
    """
    N, C, _ = x.shape
    has_bias = bias.shape[0] > 0
    finished = scale.shape[0] > 0
    for chunk in prange(chunks):                        # a few channels, all their images, per iteration
        # [one spare value, a row of zeros, the plane, a row of zeros, one spare value]
        padded = np.zeros(H * W + 2 * W + 2, dtype=x.dtype)
        plane = padded[W + 1:]                          # the plane's H*W values from here on
        columns = np.zeros((5, H + 2), dtype=x.dtype)   # _same3x3_side_columns's buffers
        sides = np.empty((2, H), dtype=x.dtype)
        for c in range(chunk * C // chunks, (chunk + 1) * C // chunks):
            for n in range(N):
                source = x[n, c]
                for j in range(H * W):                  # the rows of zeros stay zero
                    plane[j] = source[j]
                _same3x3_plane(padded, weight[c, 0], y[n, c], H, W, columns, sides)
                _finish_run(y[n, c], c, bias, has_bias, finished, scale, shift, low, high, hardswish)


@inline_jit
def _same3x3_plane(padded, w, y, H, W, columns, sides):
    """One plane of :func:`_forward_flat_same3x3_kernel`: ``y`` (H*W,) from the taps ``w`` (3, 3) and
    ``padded``, the input plane at ``W + 1`` between rows of zeros; every output ``sum_(kh, kw) w[kh, kw] *
    x_pad[oh + kh - 1, ow + kw - 1]`` in tap order."""
    rows = W                                            # one kernel row down
    run_taps9(y, padded, padded[1:], padded[2:], padded[rows:], padded[rows + 1:], padded[rows + 2:],
              padded[2 * rows:], padded[2 * rows + 1:], padded[2 * rows + 2:], w, H * W)
    _same3x3_side_columns(padded, w, y, H, W, columns, sides)


@inline_jit
def _same3x3_side_columns(padded, w, y, H, W, columns, sides):
    """Columns 0 and W-1 of :func:`_same3x3_plane`'s output again, where the taps of kernel column 0 (2)
    read the padding on the left (right): those zeros in the sums in their place in the tap order.

    The two outer columns on each side of the padded plane, rows -1 .. H, are gathered into ``columns``
    (5, H + 2): ``[zeros, column 0, column 1, column W-2, column W-1]``; a column of outputs is then the
    same nine-tap pass over runs of ``H`` (``_rows.run_taps9``) into ``sides`` (2, H), which go back into
    ``y``'s first and last columns. (One output at a time, each a chain of nine dependent additions, they
    took longer than the nine-tap pass over the whole plane: 43 against 28 us for (1, 576, 14, 14).)
    """
    zeros, left0, left1, right0, right1 = columns[0], columns[1], columns[2], columns[3], columns[4]
    for i in range(H + 2):                              # padded rows -1 .. H (the first column stays zero)
        row = i * W + 1                                 # padded row i - 1, column 0
        left0[i], left1[i] = padded[row], padded[row + 1]
        right0[i], right1[i] = padded[row + W - 2], padded[row + W - 1]
    left, right = sides[0], sides[1]
    run_taps9(left, zeros, left0, left1, zeros, left0[1:], left1[1:], zeros, left0[2:], left1[2:], w, H)
    run_taps9(right, right0, right1, zeros, right0[1:], right1[1:], zeros, right0[2:], right1[2:], zeros, w, H)
    for oh in range(H):
        y[oh * W] = left[oh]
        y[oh * W + W - 1] = right[oh]


def _images_per_stack(N, H, W):
    """How many images :func:`_forward_flat_stacked3x3_kernel` stacks in one call at most: as many as fit in
    :data:`STACKED_RUN_VALUES` values of its run (one at least); :func:`_forward_flat_kernel` cuts the batch
    into that many calls or more, of sizes that differ by one image at most."""
    return max(1, min(N, STACKED_RUN_VALUES // ((H + 1) * (W + 1))))


@parallel_jit
def _forward_flat_stacked3x3_kernel(x, weight, bias, y, chunks, scale, shift, low, high, hardswish):
    """:func:`_forward_flat_kernel` for the MobileNets' stride-1 layers (:func:`_is_same3x3`) on planes of at
    most :data:`STACKED_MAX_PIXELS` pixels: all the images' planes of a channel as one run.

    A channel's ``N`` planes are copied into one buffer, each row followed by one zero (rows of ``S = W +
    1`` values) and each plane by a row of zeros: ``[one spare value, a row of zeros, plane 0, a row of
    zeros, plane 1, ..., plane N-1, a row of zeros, one spare value]``, zeros nowhere written again. Output
    ``(n, oh, ow)`` is then run position ``j = n*(H + 1)*S + oh*S + ow``, and tap ``(kh, kw)`` reads the buffer
    at ``j + kh*S + kw``: one offset for every output of every image, so the nine taps go in one pass over
    the whole run (``_rows.run_taps9``) with the channel's nine weights. A read left of column 0 or right
    of column ``W - 1`` lands on a row's zero, one above row 0 or below row ``H - 1`` on a plane's row of
    zeros: the padding, in its place in the tap order, so every output is the sum of
    :func:`_flat_forward_plane_stride1`'s nine products in its order (the same bits). The extra outputs,
    one per row and one row per plane, are computed and dropped when the rows are copied out, after the
    epilogue (:func:`_finish_run`) ran over the whole run.

    Against :func:`_forward_flat_same3x3_kernel`, which computes one plane at a time and its side columns
    again, a channel's call covers all its images, the weights stay in registers, and nothing is computed
    twice. ``x``, ``y``: (N, C, H, W), C-contiguous; ``N`` at most :func:`_images_per_stack`'s count, so a
    run stays in L1/L2 (the caller cuts larger batches). Measured on a 2-core Sapphire Rapids with numba
    generating AVX2 code (``NUMBA_CPU_NAME=haswell``), forward with a batch norm + ReLU6 epilogue,
    alternated against the same3x3 kernel (each side first in turn, 300 pairs): (1, 576, 14, 14) 67 -> 55
    us, (1, 384, 14, 14) 46 -> 39, (1, 960, 12, 12) 98 -> 77, (1, 384, 16, 16) 45 -> 38, (1, 256, 20, 20)
    41 -> 38, (8, 384, 14, 14) 346 -> 288, (16, 96, 12, 12) 152 -> 115, (64, 48, 16, 16) 384 -> 320, (64,
    72, 16, 16) 585 -> 478, (256, 48, 16, 16) 1.58 -> 1.24 ms; but (1, 192, 28, 28) 48 against 49, (8, 144,
    28, 28) 325 against 342, where the same3x3 kernel stays (longer rows leave it less to recompute).
    Below 12 x 12 (the across-channels and channels-last kernels' planes) it lost: (64, 96, 8, 8) 207
    against 238 us, (8, 576, 7, 7) 162 against 203.
    """
    N, C, H, W = x.shape
    S = W + 1                                           # a row and its zero
    P = (H + 1) * S                                     # a plane and the row of zeros above it
    run = N * P                                         # outputs from plane 0's row 0 on
    has_bias = bias.shape[0] > 0
    finished = scale.shape[0] > 0
    for chunk in prange(chunks):                        # a few channels, all their images, per iteration
        stacked = np.zeros(run + 2 * S + 2, dtype=x.dtype)
        total = np.empty(run, dtype=x.dtype)
        for c in range(chunk * C // chunks, (chunk + 1) * C // chunks):
            for n in range(N):                          # the zeros stay zero, the planes are rewritten
                plane = stacked[1 + S + n * P:]         # plane n's row 0
                for h in range(H):
                    row, source = plane[h * S:], x[n, c, h]
                    for w in range(W):
                        row[w] = source[w]
            run_taps9(total, stacked, stacked[1:], stacked[2:], stacked[S:], stacked[S + 1:], stacked[S + 2:],
                      stacked[2 * S:], stacked[2 * S + 1:], stacked[2 * S + 2:], weight[c, 0], run)
            _finish_run(total, c, bias, has_bias, finished, scale, shift, low, high, hardswish)
            for n in range(N):                          # y[:, c]: this iteration's only
                for h in range(H):
                    source, out_row = total[n * P + h * S:], y[n, c, h]
                    for w in range(W):
                        out_row[w] = source[w]


@parallel_jit
def _forward_flat_strided_kernel(x, weight, bias, y, chunks, sh, sw, ph, pw, dh, dw, scale, shift, low, high,
                                 hardswish):
    """:func:`_forward_flat_kernel` at any stride, through the phases: each plane through
    :func:`_flat_forward_plane`, then :func:`_finish_and_write_out`."""
    N, C, H, W = x.shape
    _, _, kH, kW = weight.shape
    _, _, H_out, W_out = y.shape
    has_bias = bias.shape[0] > 0
    finished = scale.shape[0] > 0
    phase_width, run, phase_size = _phase_layout(H, W, kW, H_out, sh, sw, ph, pw, dw)
    for chunk in prange(chunks):                        # a few channels, all their images, per iteration
        phases = np.zeros((sh * sw, phase_size), dtype=x.dtype)   # the padded plane, phase by phase
        total = np.empty(run, dtype=x.dtype)            # (H_out * Wq,)
        for c in range(chunk * C // chunks, (chunk + 1) * C // chunks):
            for n in range(N):                          # the borders stay zero, the rest is rewritten
                _flat_forward_plane(x[n, c], weight, c, sh, sw, ph, pw, dh, dw, phases, total)
                _finish_and_write_out(total, y[n, c], phase_width, c, bias, has_bias, finished, scale, shift, low,
                                      high, hardswish)


@inline_jit
def _flat_forward_plane(x_plane, weight, c, sh, sw, ph, pw, dh, dw, phases, total):
    """The sums of one (image, channel) plane of :func:`_forward_flat_kernel` into ``total`` (H_out * Wq,),
    through the buffer ``phases``; the kernel then finishes and writes them out (:func:`_finish_and_write_out`).

    The copies in and out take most of a small plane's time, so both have plain contiguous loops for the
    common cases: stride 1 has a plane function of its own (:func:`_flat_forward_plane_stride1`), stride 2
    a phase copy with the literal stride (:func:`_pad_into_phases`), and the write-out
    (:func:`_finish_and_write_out`) one loop per case (finished, bias, neither) rather than branches. A 3x3
    kernel is added in one pass over the run (``_rows.run_taps9``; with the stride-2 copy, measured in
    :data:`STRIDE2_FLAT_MIN_PIXELS`'s comment). Measured on a 2-core AMD EPYC (AVX2), alternated in one
    process: (1, 576, 14, 14) finished 0.27 -> 0.19 ms, (1, 960, 7, 7) 5x5 0.37 -> 0.30, (64, 48, 16, 16)
    1.23 -> 0.96; the same bits. Three taps to a loop instead of one,
    same machine, alternated, with a ReLU6 epilogue: (1, 32, 112, 112) 372 -> 254 us, (1, 144, 56, 56)
    347 -> 302, (1, 120, 28, 28) 5x5 187 -> 162, stride 2 (1, 96, 112, 112) 627 -> 588; planes of 14 x 14
    and less unchanged (their copies in and out cost more than their taps).
    """
    H, W = x_plane.shape
    _, _, kH, kW = weight.shape
    phase_width = (W + 2 * pw + sw - 1) // sw
    run = total.shape[0]
    _pad_into_phases(x_plane, phases, sh, sw, ph, pw, phase_width)
    if kH == 3 and kW == 3:                         # the whole kernel in one pass
        taps = _flat_taps9(phases, sh, sw, dh, dw, phase_width, run)
        run_taps9(total, taps[0], taps[1], taps[2], taps[3], taps[4], taps[5], taps[6], taps[7], taps[8], weight[c, 0],
                  run)
    else:
        total[:] = 0.0
        for kh in range(kH):
            kw = 0
            while kw < kW:                          # up to three taps of the row per pass over ``total``
                taps = _taps_per_pass(kW - kw)
                _add_row_taps(total, taps, _flat_tap_run(phases, kh, kw, sh, sw, dh, dw, phase_width, run),
                              _flat_tap_run(phases, kh, kw + 1, sh, sw, dh, dw, phase_width, run),
                              _flat_tap_run(phases, kh, kw + 2, sh, sw, dh, dw, phase_width, run),
                              weight[c, 0, kh], kw, run)
                kw += taps


@inline_jit
def _flat_forward_plane_stride1(x_plane, weight, c, ph, pw, dh, dw, padded, total):
    """The sums of one plane of :func:`_forward_flat_kernel` at stride 1 into ``total``: :func:`_flat_forward_plane`
    without phases.

    ``padded`` (1-D) is the zero-padded plane, rows of ``Wp = W + 2*pw`` values, and tap ``(kh, kw)``'s run
    starts at ``kh*dh*Wp + kw*dw``. The same sums in the same order as :func:`_flat_forward_plane` (the
    same bits); without the phase arithmetic of strided planes the loops compile leaner. Measured on a
    2-core AMD EPYC (AVX2), a prepared forward without epilogue, alternated in one process against the phase
    version for every stride: (1, 576, 14, 14) 90 -> 78 us, (8, 384, 14, 14) 472 -> 416, (64, 48, 16, 16)
    836 -> 705, 5x5 (8, 240, 14, 14) 673 -> 518; 56 x 56 and larger planes within 3%.

    A 3x3 kernel is added in one pass over the run (``_rows.run_taps9``: each output's nine products in
    registers, stored once), a row of five taps in one pass (``_rows.run_add_taps5``), other rows up to
    three taps per pass; the order of the additions, and so the bits, are those of one pass per tap. Then,
    with a batch norm + ReLU6 epilogue, alternated against three taps per pass: 3x3 (1, 576, 14, 14) 178
    -> 149 us, (1, 192, 28, 28) 161 -> 127, (1, 144, 56, 56) 314 -> 251, (1, 32, 112, 112) 241 -> 189,
    (64, 48, 16, 16) 972 -> 778; 5x5 (1, 672, 14, 14) 375 -> 308, (8, 240, 14, 14) 1040 -> 820.
    """
    H, W = x_plane.shape
    _, _, kH, kW = weight.shape
    padded_width = W + 2 * pw
    run = total.shape[0]                            # H_out * Wp
    for h in range(H):                              # the borders stay zero
        padded_row, source = padded[(h + ph) * padded_width + pw:], x_plane[h]
        for w in range(W):
            padded_row[w] = source[w]
    if kH == 3 and kW == 3:                         # the whole kernel in one pass
        rows = dh * padded_width                    # one kernel row down
        run_taps9(total, padded, padded[dw:], padded[2 * dw:], padded[rows:], padded[rows + dw:],
                  padded[rows + 2 * dw:], padded[2 * rows:], padded[2 * rows + dw:], padded[2 * rows + 2 * dw:],
                  weight[c, 0], run)
    else:
        total[:] = 0.0
        for kh in range(kH):
            if kW == 5:                             # the kernel row in one pass
                run_add_taps5(total, padded[kh * dh * padded_width:], dw, weight[c, 0, kh], run)
                continue
            kw = 0
            while kw < kW:                          # up to three taps of the row per pass over ``total``
                taps = _taps_per_pass(kW - kw)
                start = kh * dh * padded_width + kw * dw    # tap (kh, kw) under output 0
                _add_row_taps(total, taps, padded[start:], padded[start + dw:], padded[start + 2 * dw:],
                              weight[c, 0, kh], kw, run)
                kw += taps


@inline_jit
def _add_row_taps(total, taps, x0, x1, x2, weight_row, kw, run):
    """Add ``taps`` (1, 2 or 3) taps of a kernel row, from tap ``kw`` on, to the run ``total``: ``x0``, ``x1``,
    ``x2`` are the runs those taps read (the ones past ``taps`` unused), ``weight_row`` the row's weights
    (kW,). The taps are added in order, as one loop per tap would (``_rows.run_add_taps3``)."""
    if taps == 3:
        run_add_taps3(total, x0, x1, x2, weight_row[kw], weight_row[kw + 1], weight_row[kw + 2], run)
    elif taps == 2:
        run_add_taps2(total, x0, x1, weight_row[kw], weight_row[kw + 1], run)
    else:
        row_axpy(total, x0, weight_row[kw], run, 1)


@inline_jit
def _finish_and_write_out(total, y_plane, row_length, c, bias, has_bias, finished, scale, shift, low, high,
                          hardswish):
    """Channel ``c``'s bias and epilogue on the whole run ``total`` (H_out * row_length,) at once, then its
    output rows copied to ``y_plane`` (H_out, W_out).

    One vectorised loop over the run (the extra columns too, which are then dropped), where the epilogue
    row by row ran loops of ``W_out`` values, too short for vectors. Each value is the same expression as
    row by row (the same bits). Measured on a 2-core AMD EPYC (AVX2) with a batch norm + ReLU6 epilogue,
    together with the stride-1 plane (:func:`_flat_forward_plane_stride1`), alternated: (1, 576, 14, 14) 175
    -> 111 us, (1, 192, 28, 28) 148 -> 128, (1, 144, 56, 56) 285 -> 262, 5x5 (1, 672, 14, 14) 433 -> 310;
    hard swish (8, 384, 14, 14) 718 -> 478; (1, 32, 112, 112), whose rows are long enough for vectors,
    1-5% slower (an extra pass over a plane larger than L1). Finishing those row by row instead, in a
    second branch, cost more in compile time than it saved: each call site pastes this function in (the
    flat forward's float32 signature, stride 1 and strided in one kernel then, took 98 s to compile with
    four pasted copies, 33 s with two copies of this one branch, 13 s before the whole-run finish and
    one-pass taps; measured with an empty numba cache on a 2-core AMD EPYC).
    """
    H_out, W_out = y_plane.shape
    _finish_run(total, c, bias, has_bias, finished, scale, shift, low, high, hardswish)
    for oh in range(H_out):                         # y_plane: this iteration's only
        source, out_row = total[oh * row_length:], y_plane[oh]
        for ow in range(W_out):
            out_row[ow] = source[ow]


@inline_jit
def _finish_run(total, c, bias, has_bias, finished, scale, shift, low, high, hardswish):
    """Channel ``c``'s bias and epilogue on the run ``total`` in place (:func:`_finish_and_write_out`)."""
    zero, three, six = total.dtype.type(0), total.dtype.type(3), total.dtype.type(6)
    if has_bias or finished:
        _write_out_row(total, total, c, bias, has_bias, finished, scale, shift, low, high)
    if finished and hardswish:
        for j in range(total.shape[0]):
            total[j] = hardswish_value(total[j], zero, three, six)


@inline_jit
def _write_out_row(source, out_row, c, bias, has_bias, finished, scale, shift, low, high):
    """``out_row[ow] = source[ow]`` plus channel ``c``'s bias and, when ``finished``, the epilogue's batch
    norm and clip (``clip((source + bias) * scale[c] + shift[c], low, high)``); ``source`` may be
    ``out_row`` itself. One loop per case (finished, bias, neither) rather than branches inside one."""
    channel_bias = bias[c] if has_bias else out_row.dtype.type(0)
    if finished:
        channel_scale, channel_shift = scale[c], shift[c]
        for ow in range(out_row.shape[0]):
            value = source[ow] + channel_bias if has_bias else source[ow]
            value = value * channel_scale + channel_shift
            out_row[ow] = clip_value(value, low, high)
    elif has_bias:
        for ow in range(out_row.shape[0]):
            out_row[ow] = source[ow] + channel_bias
    else:
        for ow in range(out_row.shape[0]):
            out_row[ow] = source[ow]


@inline_jit
def _taps_per_pass(remaining):
    """How many of a kernel row's ``remaining`` taps the next pass over a run adds: up to three, and four as
    2+2 rather than 3+1 (a row of 5 goes 3+2, of 7 3+3+1)."""
    return min(3, remaining) if remaining != 4 else 2


@inline_jit
def _flat_tap_run(phases, kh, kw, sh, sw, dh, dw, phase_width, run):
    """Tap ``(kh, kw)``'s inputs for the ``run`` outputs of :func:`_flat_forward_plane`: a view of the phase
    ``(kh*dh % sh, kw*dw % sw)`` from ``(kh*dh // sh, kw*dw // sw)`` on (:func:`_forward_flat_kernel`'s
    offsets)."""
    qh, rh = divmod(kh * dh, sh)
    qw, rw = divmod(kw * dw, sw)
    start = qh * phase_width + qw
    return phases[rh * sw + rw, start:start + run]


@inline_jit
def _flat_taps9(phases, sh, sw, dh, dw, phase_width, run):
    """The nine runs a 3x3 kernel's taps read (:func:`_flat_tap_run`), in tap order ``(0, 0), (0, 1), ...,
    (2, 2)``: the arguments of ``_rows.run_taps9`` and ``run_add_taps9`` between the total and the weights."""
    return (_flat_tap_run(phases, 0, 0, sh, sw, dh, dw, phase_width, run),
            _flat_tap_run(phases, 0, 1, sh, sw, dh, dw, phase_width, run),
            _flat_tap_run(phases, 0, 2, sh, sw, dh, dw, phase_width, run),
            _flat_tap_run(phases, 1, 0, sh, sw, dh, dw, phase_width, run),
            _flat_tap_run(phases, 1, 1, sh, sw, dh, dw, phase_width, run),
            _flat_tap_run(phases, 1, 2, sh, sw, dh, dw, phase_width, run),
            _flat_tap_run(phases, 2, 0, sh, sw, dh, dw, phase_width, run),
            _flat_tap_run(phases, 2, 1, sh, sw, dh, dw, phase_width, run),
            _flat_tap_run(phases, 2, 2, sh, sw, dh, dw, phase_width, run))


def _channel_chunks(N, C):
    """How many parallel iterations :func:`_forward_flat_kernel` cuts ``C`` channels of ``N`` images into.

    One image: a multiple of the thread count, with at most about :data:`FLAT_CHANNEL_CHUNK` channels each
    (iteration ``i`` takes channels ``i*C // chunks`` to ``(i + 1)*C // chunks``, so the threads' shares
    differ by one channel at most). Each iteration allocates and clears its padded buffers once
    (``np.zeros``, ~2 us for a 112 x 112 plane's phases) and reuses them for its channels, whose borders
    stay zero. Measured on a 2-core AMD EPYC (AVX2), forward, alternated against one channel per
    iteration: (1, 64, 112, 112) stride 2 0.46 -> 0.43 ms, (1, 144, 56, 56) 0.47 -> 0.43, (1, 192, 28,
    28) 0.20 -> 0.18. Several images: one channel per iteration (``C``), whose buffers then serve all its
    images; fewer, larger iterations only balanced the threads worse ((64, 16, 32, 32) input gradient,
    this kernel with the filter turned: +6%). Each plane is computed alone, so the count, which depends
    on the thread count, never changes a result.
    """
    if N > 1:
        return C
    threads = num_threads()
    return max(1, min(C, threads * -(-C // (threads * FLAT_CHANNEL_CHUNK))))


@inline_jit
def _phase_layout(H, W, kW, H_out, sh, sw, ph, pw, dw):
    """``(Wq, run, phase_size)`` of a plane split in phases: ``Wq = ceil((W + 2*pw) / sw)`` a phase's row
    length, ``run = H_out * Wq`` the output rows at that row length, and ``phase_size`` a phase's values
    up to where the last tap's run ends (its rows, plus the last tap's column offset)."""
    phase_height = (H + 2 * ph + sh - 1) // sh
    phase_width = (W + 2 * pw + sw - 1) // sw
    return phase_width, H_out * phase_width, phase_height * phase_width + ((kW - 1) * dw) // sw


@inline_jit
def _pad_into_phases(x_plane, phases, sh, sw, ph, pw, phase_width):
    """Copy ``x_plane`` (H, W) into its zero-padded plane split in ``sh*sw`` phases (``phases``, (sh*sw,
    phase_size), borders already zero): padded row ``i`` and column ``j`` go to phase ``(i % sh, j % sw)``
    at ``(i // sh, j // sw)``, rows of ``phase_width`` values. Stride 1 is one phase, the padded plane,
    and its rows are copied straight; stride 2 has the same loops as any stride with the stride written as
    the literal 2 (``source[2*k]``), which LLVM vectorises, where ``source[k*sw]`` stays scalar."""
    H, W = x_plane.shape
    if sh == 1 and sw == 1:
        for h in range(H):
            padded_row, source = phases[0, (h + ph) * phase_width + pw:], x_plane[h]
            for w in range(W):
                padded_row[w] = source[w]
    elif sh == 2 and sw == 2:                       # the same loops with the literal stride 2: vectorised
        for h in range(H):
            i = h + ph
            for rw in range(2):
                w_first = (rw - pw) % 2
                phase_row = phases[(i % 2) * 2 + rw, (i // 2) * phase_width + (w_first + pw) // 2:]
                source = x_plane[h, w_first:]
                for k in range((W - w_first + 1) // 2):
                    phase_row[k] = source[2 * k]
    else:
        for h in range(H):
            i = h + ph                              # padded row
            for rw in range(sw):                    # the columns of phase column rw
                w_first = (rw - pw) % sw            # first input column with (w + pw) % sw == rw
                phase_row = phases[(i % sh) * sw + rw, (i // sh) * phase_width + (w_first + pw) // sw:]
                source = x_plane[h, w_first:]
                for k in range((W - w_first + sw - 1) // sw):
                    phase_row[k] = source[k * sw]


@parallel_jit
def _backward_weight_flat_kernel(grad_out, x, grad_weight, sh, sw, ph, pw, dh, dw):
    """``grad_weight[c, 0, kh, kw] = sum_n sum_(oh, ow) g[n, c, oh, ow] * x_pad[n, c, oh*sh + kh*dh, ow*sw +
    kw*dw]`` on the flat runs of :func:`_forward_flat_kernel`.

    The padded plane is split in phases as the forward does (one phase, the padded plane itself, at
    stride 1), so each tap reads one contiguous run of ``H_out * Wq`` values. ``g`` is laid out at that
    row length ``Wq`` with zeros in the extra columns, so each tap's sum is over whole runs, taken a
    block of ``R`` output rows at a time (``R*Wq`` values, about :data:`WEIGHT_GRADIENT_BLOCK_VALUES` at
    most): ``partial[tap, j] += g_run[j] * tap[j]`` element-wise (vectorised; a scalar sum is not,
    without fastmath), the same ``R*Wq`` partial sums for every block and image. At the end the block's
    rows are added column by column and then the columns, in a fixed order: one channel per parallel
    iteration, the same bits on any number of threads. (A partial sum per value of the whole run cost
    more than the products on one image: (1, 144, 56, 56) 9 runs of 3248 values to clear and fold per
    channel.)

    At stride 2 this replaced the register-row kernel, whose taps read every second input column (not
    vectorised): measured in :data:`LARGE_PLANE_GRADIENTS_MIN_PIXELS`'s comment, and (1, 96, 112, 112)
    0.94 -> 0.78 ms.
    """
    N, C, H, W = x.shape
    _, _, kH, kW = grad_weight.shape
    _, _, H_out, W_out = grad_out.shape
    phase_width, run, phase_size = _phase_layout(H, W, kW, H_out, sh, sw, ph, pw, dw)
    blocks = -(-run // WEIGHT_GRADIENT_BLOCK_VALUES)    # as few blocks as keep each within the limit,
    block_rows = -(-H_out // blocks)                    # with the rows shared out evenly
    block = block_rows * phase_width                    # R*Wq values: R output rows at the phase row length
    for c in prange(C):                                 # one channel's weights per iteration
        phases = np.zeros((sh * sw, phase_size), dtype=x.dtype)   # x[n, c] zero-padded, phase by phase
        g_run = np.zeros(run, dtype=x.dtype)            # g[n, c] at the phase row length, zeros between
        partial = np.zeros((kH * kW, block), dtype=x.dtype)
        for n in range(N):                              # images in order
            _pad_into_phases(x[n, c], phases, sh, sw, ph, pw, phase_width)
            g_plane = grad_out[n, c]
            for oh in range(H_out):
                g_row = g_run[oh * phase_width:]
                source = g_plane[oh]
                for ow in range(W_out):
                    g_row[ow] = source[ow]
            for first in range(0, run, block):          # blocks of R output rows, in order
                length = min(block, run - first)        # (the last block may hold fewer rows)
                g_block = g_run[first:first + length]
                for kh in range(kH):
                    qh, rh = divmod(kh * dh, sh)
                    for kw in range(kW):
                        qw, rw = divmod(kw * dw, sw)
                        start = qh * phase_width + qw + first
                        tap, row = phases[rh * sw + rw, start:start + length], partial[kh * kW + kw]
                        for j in range(length):         # the vectorised loop
                            row[j] += g_block[j] * tap[j]
        for tap_index in range(kH * kW):
            row = partial[tap_index]
            columns = row[:phase_width].copy()          # fold the block's rows onto the first, column-wise
            for r in range(1, block_rows):
                later = row[r * phase_width:(r + 1) * phase_width]
                for j in range(phase_width):
                    columns[j] += later[j]
            total = 0.0
            for j in range(phase_width):
                total += columns[j]
            grad_weight[c, 0, tap_index // kW, tap_index % kW] = total


@parallel_sum_jit
def _weight_gradient_dots_kernel(grad_out, x, inside, grad_weight, ph, pw, dh, dw):
    """Stride 1, "same" planes: each tap's weight gradient as one dot product over a whole flat plane.

    ``grad_weight[c, 0, kh, kw] = sum_n sum_j g[n, c, j] * x[n, c, j + (kh*dh - ph)*W + kw*dw - pw]``, over
    the flat index ``j = oh*W + ow`` of the outputs whose tap ``(kh, kw)`` reads inside the plane
    (``inside``, (kH*kW, H*W) booleans, :func:`_taps_inside_plane`). In a flat plane a tap's offset is the
    same for every output, so a tap is one loop over the plane: the outputs whose tap row lies above or
    below the plane are left out of its run, and a read that crosses into the row before or after is made
    (from a copy of the plane with ``pw`` zeros at each end, so no read leaves it) and its product dropped
    by the mask (``_rows.masked_dots3``: up to three taps of a kernel row share a pass over ``g``). The
    plane must be "same" (``2*ph = dh*(kH - 1)``, ``2*pw = dw*(kW - 1)``): the margins are sized for it
    (:func:`_use_weight_gradient_dots`).

    Each sum is a dot product that LLVM vectorises with its partial sums in registers (this kernel may
    reorder a sum's additions: :func:`kernels._jit.parallel_sum_jit`), where :func:`_backward_weight_flat_kernel`
    keeps a partial sum per value in memory and the channels-last kernel one per column. One channel per
    parallel iteration, images in order, each image's sums added to float64 totals: the same bits on any
    number of threads.
    """
    N, C, H, W = x.shape
    _, _, kH, kW = grad_weight.shape
    P = H * W
    for c in prange(C):                                 # one channel's weights per iteration
        totals = np.zeros(kH * kW)                      # float64 sums, whatever the dtype
        extended = np.zeros(P + 2 * pw, dtype=x.dtype)  # x[n, c] flat from pw on, zeros at both ends
        for n in range(N):                              # images in order
            g, source, plane = grad_out[n, c].reshape(P), x[n, c].reshape(P), extended[pw:pw + P]
            for j in range(P):
                plane[j] = source[j]
            for kh in range(kH):
                row_offset = (kh * dh - ph) * W
                lo = min(max(0, -row_offset), P)        # [lo, hi): the outputs whose tap row is inside
                hi = max(min(P, P - row_offset), lo)
                g_run = g[lo:hi]
                kw = 0
                while kw < kW:                          # up to three taps of the row per pass over g
                    count = _taps_per_pass(kW - kw)
                    t = kh * kW + kw
                    start = lo + row_offset + kw * dw   # extended[start + j]: tap t's input for output lo + j
                    if count == 3:
                        s0, s1, s2 = masked_dots3(g_run, extended[start:], extended[start + dw:],
                                                  extended[start + 2 * dw:], inside[t, lo:], inside[t + 1, lo:],
                                                  inside[t + 2, lo:], hi - lo)
                        totals[t] += s0
                        totals[t + 1] += s1
                        totals[t + 2] += s2
                    elif count == 2:
                        s0, s1 = masked_dots2(g_run, extended[start:], extended[start + dw:], inside[t, lo:],
                                              inside[t + 1, lo:], hi - lo)
                        totals[t] += s0
                        totals[t + 1] += s1
                    else:
                        totals[t] += masked_dot(g_run, extended[start:], inside[t, lo:], hi - lo)
                    kw += count
        for t in range(kH * kW):
            grad_weight[c, 0, t // kW, t % kW] = totals[t]


@parallel_jit
def _forward_rows_kernel(x, weight, bias, y, sh, sw, ph, pw, dh, dw):
    """3x3 / 5x5 fast path: one kernel row's taps live in registers; border columns afterwards."""
    N, C, H, W = x.shape
    C_out, _, kH, kW = weight.shape
    _, _, H_out, W_out = y.shape
    multiplier = C_out // C
    has_bias = bias.shape[0] > 0
    tap_lo, tap_hi, in_lo, in_hi = _column_ranges(W_out, W, sw, pw, dw, kW)
    for task in prange(N * C_out):                      # one (image, output channel) plane per iteration
        n = task // C_out
        oc = task - n * C_out
        x_plane = x[n, oc // multiplier]                # (H, W)
        y_plane = y[n, oc]                              # (H_out, W_out): written by this iteration only
        y_plane[:, :] = bias[oc] if has_bias else 0.0
        for oh in range(H_out):
            y_row = y_plane[oh]                         # (W_out,)
            for kh in range(kH):
                ih = oh * sh + kh * dh - ph
                if ih < 0 or ih >= H:                   # this kernel row lies in the zero padding
                    continue
                x_row = x_plane[ih]                     # (W,)
                w = weight[oc, 0, kh]                   # (kW,)
                if in_hi > in_lo:                       # interior: all taps at once
                    y_mid, first = y_row[in_lo:], in_lo * sw - pw   # first input column of tap 0
                    if kW == 3:
                        row_taps3(y_mid, x_row[first:], x_row[first + dw:], x_row[first + 2 * dw:],
                                  w[0], w[1], w[2], in_hi - in_lo, sw)
                    else:
                        row_taps5(y_mid, x_row[first:], x_row[first + dw:], x_row[first + 2 * dw:],
                                  x_row[first + 3 * dw:], x_row[first + 4 * dw:],
                                  w[0], w[1], w[2], w[3], w[4], in_hi - in_lo, sw)
        # border columns (one or two per side): tap by tap, column by column, rows innermost
        for kh in range(kH):
            oh_lo, oh_hi = valid_output_range(H_out, H, sh, kh * dh - ph)
            for kw in range(kW):
                w_tap = weight[oc, 0, kh, kw]
                for side in range(2):
                    start, stop = _border_run(side, tap_lo[kw], tap_hi[kw], in_lo, in_hi)
                    for ow in range(start, stop):
                        iw = ow * sw + kw * dw - pw
                        for oh in range(oh_lo, oh_hi):
                            y_plane[oh, ow] += w_tap * x_plane[oh * sh + kh * dh - ph, iw]


@inline_jit
def _fill_across_channels_taps(weight, inside, c0, c1, taps):
    """``taps[t, (c - c0)*H*W + i] = weight[c, 0, kh, kw]`` (tap ``t = kh*kW + kw``) for the channels
    ``c0 <= c < c1`` where output pixel ``i`` of a "same" stride-1 plane reads that tap inside the plane
    (``inside[t, i]``, :func:`_taps_inside_plane`), and 0 where it reads the zero padding.

    ``taps``: (kH*kW, (c1 - c0)*H*W), filled here; the weights of :func:`_forward_across_channels_kernel`.
    """
    _, _, kH, kW = weight.shape
    HW = inside.shape[1]
    zero = taps.dtype.type(0)
    for c in range(c0, c1):
        for t in range(kH * kW):
            w = weight[c, 0, t // kW, t % kW]
            row, keep = taps[t, (c - c0) * HW:(c - c0 + 1) * HW], inside[t]    # (H*W,) this channel's pixels
            for i in range(HW):
                row[i] = w if keep[i] else zero


@inline_jit
def _multiply_taps_across_channels(x_run, taps, y_run, a, b, kH, kW, W, ph, pw, dh, dw):
    """``y_run[j] = sum_t taps[t, j - a] * x_run[j + offset_t]`` for ``a <= j < b`` of one image's ``C*H*W``
    values, taps in order from zero, reads outside the image skipped (``offset_t = (kh*dh - ph)*W + kw*dw
    - pw``): any kernel, up to three taps of a kernel row per pass (:func:`_forward_across_channels_kernel`)."""
    L = y_run.shape[0]
    y_run[a:b] = 0.0
    for kh in range(kH):
        kw = 0
        while kw < kW:                              # up to three taps of the row per pass, as flat
            count = _taps_per_pass(kW - kw)
            t = kh * kW + kw                        # the group's first tap
            first = (kh * dh - ph) * W + kw * dw - pw   # tap t of output j reads x_run[j + first]
            last = first + (count - 1) * dw
            start = min(max(a, -first), b)          # [start, stop): every tap of the group inside
            stop = max(min(b, L - last), start)
            q = start - a                           # where [start, stop) starts in taps
            if count == 3:
                run_multiply_taps3(y_run[start:], x_run[start + first:], x_run[start + first + dw:],
                                   x_run[start + last:], taps[t, q:], taps[t + 1, q:], taps[t + 2, q:],
                                   stop - start)
            elif count == 2:
                run_multiply_taps2(y_run[start:], x_run[start + first:], x_run[start + last:],
                                   taps[t, q:], taps[t + 1, q:], stop - start)
            else:
                run_multiply_tap(y_run[start:], x_run[start + first:], taps[t, q:], stop - start)
            for side in range(2):                   # the run's ends: taps outside the image skipped
                begin, end = (a, start) if side == 0 else (stop, b)
                for j in range(begin, end):
                    value = y_run[j]
                    for u in range(count):
                        i = j + first + u * dw
                        if 0 <= i < L:
                            value = value + taps[t + u, j - a] * x_run[i]
                    y_run[j] = value
            kw += count


@inline_jit
def _multiply_taps9_across_channels(x_run, taps, y_run, a, b, W, ph, pw, dh, dw):
    """:func:`_multiply_taps_across_channels` for a 3x3 kernel: the nine taps in one pass
    (``_rows.run_multiply_taps9``) over the outputs whose nine reads fall inside the image, one output at a
    time at the image's ends; the same sums in the same order, so the same bits."""
    L = y_run.shape[0]
    zero = y_run.dtype.type(0)
    o00, o10, o20 = -ph * W - pw, (dh - ph) * W - pw, (2 * dh - ph) * W - pw   # offsets of the taps (kh, 0)
    o01, o11, o21 = o00 + dw, o10 + dw, o20 + dw
    o02, o12, o22 = o00 + 2 * dw, o10 + 2 * dw, o20 + 2 * dw
    start = min(max(a, -o00), b)                        # [start, stop): all nine reads inside the image
    stop = max(min(b, L - o22), start)
    s, q = start, start - a                             # where [start, stop) starts in y_run and in taps
    run_multiply_taps9(y_run[s:], x_run[s + o00:], x_run[s + o01:], x_run[s + o02:], x_run[s + o10:],
                       x_run[s + o11:], x_run[s + o12:], x_run[s + o20:], x_run[s + o21:], x_run[s + o22:],
                       taps[0, q:], taps[1, q:], taps[2, q:], taps[3, q:], taps[4, q:], taps[5, q:], taps[6, q:],
                       taps[7, q:], taps[8, q:], stop - start)
    for side in range(2):                               # the image's ends: reads outside it skipped
        begin, end = (a, start) if side == 0 else (stop, b)
        for j in range(begin, end):
            value = zero
            for t in range(9):
                i = j + (t // 3 * dh - ph) * W + t % 3 * dw - pw
                if 0 <= i < L:
                    value = value + taps[t, j - a] * x_run[i]
            y_run[j] = value


@parallel_jit
def _forward_across_channels_kernel(x, weight, inside, bias, y, chunk_channels, group_images, ph, pw, dh, dw,
                                    scale, shift, low, high, hardswish, nonfinite):
    """Small "same" planes at stride 1 for a batch: a few whole channels of a group of images per
    iteration (a task), each image's planes of those channels as one run.

    An image's ``C*H*W`` values are contiguous, and tap ``(kh, kw)`` of output ``j`` (any channel, any
    pixel) reads the input at ``j + (kh*dh - ph)*W + kw*dw - pw``: one fixed offset for the whole image.
    So a tap is one vectorised loop over the run of ``chunk_channels`` planes (1,024 values for 16
    channels of 8 x 8), where the plane-by-plane loops would run 16 loops of 64 and the channels-last
    kernels transpose the planes in and out. The weight varies along the run, so it is read from a table
    of taps built for the chunk once for the task's images (:func:`_fill_across_channels_taps`: per output and
    tap, the channel's weight, 0 where the tap reads the padding; small enough to stay in cache), and a
    read that crosses into the row or plane before or after adds ``0 * value`` (reads outside the image
    are not made: the image's ends add those taps one by one). A 3x3 kernel's nine taps share one pass
    (``_rows.run_multiply_taps9``), other kernels' up to three taps of a kernel row
    (``_rows.run_multiply_taps3``); either way added in the flat-run kernel's order, from zero: the bits of
    the flat and channels-last kernels (``+-0`` where those add ``w * 0``: a zero's sign at most).

    But ``0 * value`` is ``nan`` when ``value`` is infinite or nan, so an input that is not finite could
    make a neighbouring output, which does not read it, ``nan``: that output is then not finite, nan stays
    nan through the epilogue, and ``nonfinite[task]`` counts the task's outputs that are not finite (one
    entry per task: chunks of ``chunk_channels`` channels times groups of ``group_images`` images, the
    chunk ``task // groups``); the caller computes the batch again
    with the channels-last kernel when any is (rare: only a batch with an infinite or nan input, or one
    that overflows, pays twice).

    ``weight``: (C, 1, kH, kW); ``inside``: :func:`_taps_inside_plane`'s (kH*kW, H*W); ``scale``, ``shift``,
    ``low``, ``high``, ``hardswish``: the epilogue, as :func:`_forward_flat_kernel`'s.
    """
    N, C, H, W = x.shape
    _, _, kH, kW = weight.shape
    HW, L = H * W, C * H * W
    has_bias = bias.shape[0] > 0
    finished = scale.shape[0] > 0
    zero, three, six = y.dtype.type(0), y.dtype.type(3), y.dtype.type(6)
    chunks = (C + chunk_channels - 1) // chunk_channels
    groups = (N + group_images - 1) // group_images
    for task in prange(chunks * groups):                # a few channels of a few images per iteration
        chunk, group = task // groups, task % groups
        c0 = chunk * chunk_channels
        c1 = min(C, c0 + chunk_channels)
        a, b = c0 * HW, c1 * HW                         # this chunk's values in an image: [a, b)
        taps = np.empty((kH * kW, b - a), dtype=y.dtype)
        _fill_across_channels_taps(weight, inside, c0, c1, taps)
        count_nonfinite = 0
        for n in range(group * group_images, min(N, (group + 1) * group_images)):   # images in order
            x_run, y_run = x[n].reshape(L), y[n].reshape(L)   # (C*H*W,): channel c's plane from c*H*W
            if kH == 3 and kW == 3:                     # the nine taps in one pass
                _multiply_taps9_across_channels(x_run, taps, y_run, a, b, W, ph, pw, dh, dw)
            else:                                       # up to three taps of a row per pass
                _multiply_taps_across_channels(x_run, taps, y_run, a, b, kH, kW, W, ph, pw, dh, dw)
            if has_bias or finished:
                for c in range(c0, c1):
                    plane = y_run[c * HW:(c + 1) * HW]
                    _write_out_row(plane, plane, c, bias, has_bias, finished, scale, shift, low, high)
                    if finished and hardswish:
                        for j in range(HW):
                            plane[j] = hardswish_value(plane[j], zero, three, six)
            outputs = y_run[a:b]                        # (indices from 0: the loop vectorises)
            for j in range(b - a):                      # y - y is 0 for a finite y, nan otherwise
                count_nonfinite += 1 if outputs[j] - outputs[j] != zero else 0
        nonfinite[task] = count_nonfinite


@inline_jit
def _accumulate_taps9_four_images(grad_out, x, n0, sums, a, b, ph, pw, dh, dw):
    """``sums[t, j - a] += g[n, j] * x[n, j + offset_t]`` for the nine taps of a 3x3 kernel, the four images
    ``n0 .. n0 + 3`` in order and ``j`` in ``[a, b)`` of the flattened ``(C*H*W,)`` image, reads outside
    the image skipped (:func:`_weight_gradient_across_channels_kernel`): a row's three taps of the four
    images per pass (``_rows.row_multiply_accumulate3_images4``) where all nine reads are inside, then
    the ends one product at a time; each sum receives the same products in the same order as one image
    at a time."""
    N, C, H, W = x.shape
    L = C * H * W
    g0, x0 = grad_out[n0].reshape(L), x[n0].reshape(L)
    g1, x1 = grad_out[n0 + 1].reshape(L), x[n0 + 1].reshape(L)
    g2, x2 = grad_out[n0 + 2].reshape(L), x[n0 + 2].reshape(L)
    g3, x3 = grad_out[n0 + 3].reshape(L), x[n0 + 3].reshape(L)
    first, last = -ph * W - pw, (2 * dh - ph) * W + 2 * dw - pw    # offsets of the taps (0, 0) and (2, 2)
    start = min(max(a, -first), b)                     # [start, stop): all nine reads inside the image
    stop = max(min(b, L - last), start)
    q = start - a                                       # where the run starts in sums
    for kh in range(3):
        t = 3 * kh
        r0 = start + (kh * dh - ph) * W - pw            # where the row's taps read, in each image
        r1, r2 = r0 + dw, r0 + 2 * dw
        row_multiply_accumulate3_images4(sums[t, q:], sums[t + 1, q:], sums[t + 2, q:],
                                         g0[start:], x0[r0:], x0[r1:], x0[r2:], g1[start:], x1[r0:], x1[r1:],
                                         x1[r2:], g2[start:], x2[r0:], x2[r1:], x2[r2:], g3[start:], x3[r0:],
                                         x3[r1:], x3[r2:], stop - start)
    for n in range(n0, n0 + 4):                         # the ends: reads outside the image never made
        g_run, x_run = grad_out[n].reshape(L), x[n].reshape(L)
        for side in range(2):
            begin, end = (a, start) if side == 0 else (stop, b)
            for j in range(begin, end):
                for t in range(9):
                    i = j + (t // 3 * dh - ph) * W + t % 3 * dw - pw
                    if 0 <= i < L:
                        sums[t, j - a] += g_run[j] * x_run[i]


@parallel_jit
def _weight_gradient_across_channels_kernel(grad_out, x, inside, channels_per_run, kH, kW, ph, pw, dh, dw,
                                            grad_weight):
    """The weight gradient on runs of whole channels (as :func:`_forward_across_channels_kernel` reads):
    ``grad_weight[c, 0, kh, kw] = sum_n sum_i g[n, c, i] * x[n, c, i + offset_t]`` over the pixels ``i`` whose
    tap ``t = kh*kW + kw`` reads inside the plane.

    One iteration takes ``channels_per_run`` channels, whose planes are one contiguous run of each image,
    and keeps each tap's products per value of that run (``sums[t, j] += g[j] * x[j + offset_t]``,
    element-wise, vectorised; ``offset_t = (kh*dh - ph)*W + kw*dw - pw``), images in order (a 3x3 kernel's
    four at a time, :func:`_accumulate_taps9_four_images`: the same sums); then it adds
    each channel's pixels with a select on ``inside`` (:func:`_taps_inside_plane`), in four interleaved
    partial sums added at the end, ``(s0 + s1) + (s2 + s3)``: products whose read crossed into another row
    or plane are left out there (so an infinite input cannot reach another channel's weights), and reads
    outside the image are never made. Each channel's sums are the same whatever the run it falls in, so
    the bits do not depend on ``channels_per_run`` or the thread count.
    """
    N, C, H, W = x.shape
    HW, L = H * W, C * H * W
    runs = (C + channels_per_run - 1) // channels_per_run
    zero = x.dtype.type(0)
    for run in prange(runs):                            # a few channels, all images, per iteration
        c0 = run * channels_per_run
        c1 = min(C, c0 + channels_per_run)
        a, b = c0 * HW, c1 * HW                         # this run's values in an image: [a, b)
        sums = np.zeros((kH * kW, b - a), dtype=x.dtype)
        n0 = 0
        while n0 < N:                                   # images in order
            if kH == 3 and kW == 3 and n0 + 4 <= N:     # a 3x3 kernel: four images per pass
                _accumulate_taps9_four_images(grad_out, x, n0, sums, a, b, ph, pw, dh, dw)
                n0 += 4
                continue
            g_run, x_run = grad_out[n0].reshape(L), x[n0].reshape(L)
            for kh in range(kH):
                kw = 0
                while kw < kW:                          # three taps per pass share the loads of g
                    count = min(3, kW - kw)
                    t = kh * kW + kw
                    first = (kh * dh - ph) * W + kw * dw - pw
                    last = first + (count - 1) * dw
                    start = min(max(a, -first), b)      # [start, stop): every tap of the group inside
                    stop = max(min(b, L - last), start)
                    if count == 3:
                        row_multiply_accumulate3(sums[t, start - a:], sums[t + 1, start - a:],
                                                 sums[t + 2, start - a:], g_run[start:], x_run[start + first:],
                                                 x_run[start + first + dw:], x_run[start + last:], stop - start, 1)
                    else:
                        for u in range(count):
                            row_multiply_accumulate(sums[t + u, start - a:], g_run[start:],
                                                    x_run[start + first + u * dw:], stop - start, 1)
                    for side in range(2):               # the image's ends: reads outside it never made
                        begin, end = (a, start) if side == 0 else (stop, b)
                        for j in range(begin, end):
                            for u in range(count):
                                i = j + first + u * dw
                                if 0 <= i < L:
                                    sums[t + u, j - a] += g_run[j] * x_run[i]
                    kw += count
            n0 += 1
        for c in range(c0, c1):                         # each channel's pixels, the reads inside its plane
            for t in range(kH * kW):
                values, keep = sums[t, (c - c0) * HW:(c - c0 + 1) * HW], inside[t]
                s0 = s1 = s2 = s3 = zero
                for i in range(0, HW - 3, 4):
                    s0 += values[i] if keep[i] else zero
                    s1 += values[i + 1] if keep[i + 1] else zero
                    s2 += values[i + 2] if keep[i + 2] else zero
                    s3 += values[i + 3] if keep[i + 3] else zero
                for i in range(HW - HW % 4, HW):
                    s0 += values[i] if keep[i] else zero
                grad_weight[c, 0, t // kW, t % kW] = (s0 + s1) + (s2 + s3)


# ----------------------------------------------------------------------------------------------------
# Backward-input kernels (numba)
# ----------------------------------------------------------------------------------------------------
@parallel_jit
def _backward_input_phases_kernel(grad_out, weight, grad_x, sh, sw, ph, pw, dh, dw):
    """Strided planes, one output channel per input channel: the input gradient phase by phase.

    Input pixel ``(ih, iw)`` receives ``w[kh, kw] * g[oh, ow]`` from the taps with ``oh*sh + kh*dh =
    ih + ph`` (and the same for columns). Write ``ih + ph = a*sh + rh``: only the taps with ``kh*dh =
    qh*sh + rh`` reach row ``ih``, from output row ``oh = a - qh``. So the input rows of one phase
    ``rh`` (and columns of one phase ``rw``) are a stride-1 correlation of ``g`` with the taps of that
    phase, ``gx_phase[a, b] = sum w[kh, kw] * g[a - qh, b - qw]``: as in :func:`_forward_flat_kernel`,
    ``g`` is zero-padded into one flat run (``Qh`` rows above, ``Qw`` columns to the left, rows of ``Wg``
    values) and each tap adds ``w * g_pad[start:start + run]`` to the whole phase at once. A 3x3 kernel
    at stride 2 splits into phases of 2x2, 2x1, 1x2 and 1x1 taps. Each phase is then written to its
    rows and every ``sw``-th column of ``grad_x``.

    Each input pixel sums its taps in the generic kernel's order, so the bits are the generic kernel's,
    which scatters each output row through each tap with a stride-``sw`` store per value (not
    vectorised). Measured on a 2-core AMD EPYC (AVX2), alternated, float32: (8, 144, 56, 56) 3x3 s2
    6.9 -> 3.0 ms, (8, 72, 56, 56) 5x5 s2 8.7 -> 2.0, (1, 96, 112, 112) 2.0 -> 0.83, (1, 144, 56, 56)
    0.91 -> 0.33 ms.
    """
    N, C, H, W = grad_x.shape
    _, _, kH, kW = weight.shape
    _, _, H_out, W_out = grad_out.shape
    Qh, Qw = ((kH - 1) * dh) // sh, ((kW - 1) * dw) // sw     # the largest tap offsets, in output rows/columns
    rows = max(H_out + Qh, (H - 1 + ph) // sh + Qh + 2)       # every tap's run stays inside the buffer
    Wg = max(W_out + Qw, (W - 1 + pw) // sw + Qw + 1)         # the padded row length
    for c in prange(C):                                 # one channel's planes per iteration: disjoint writes
        g_pad = np.zeros(rows * Wg, dtype=grad_x.dtype)   # g[n, c] at (Qh + oh, Qw + ow), zeros around
        total = np.empty(((H - 1 + ph) // sh + 1) * Wg, dtype=grad_x.dtype)   # one phase's run
        for n in range(N):                              # the borders stay zero, the rest is rewritten
            g_plane, gx_plane = grad_out[n, c], grad_x[n, c]
            for oh in range(H_out):
                target, source = g_pad[(oh + Qh) * Wg + Qw:], g_plane[oh]
                for ow in range(W_out):
                    target[ow] = source[ow]
            for rh in range(sh):                        # row phase: input rows ih with (ih + ph) % sh == rh
                a_lo, a_hi = max(0, (ph - rh + sh - 1) // sh), (H - 1 + ph - rh) // sh
                run = (a_hi - a_lo + 1) * Wg
                for rw in range(sw):                    # column phase
                    b_lo, b_hi = max(0, (pw - rw + sw - 1) // sw), (W - 1 + pw - rw) // sw
                    if a_hi < a_lo or b_hi < b_lo:
                        continue                        # no input pixel in this phase (a tiny plane)
                    total[:run] = 0.0
                    for kh in range(kH):
                        if (kh * dh - rh) % sh != 0:
                            continue                    # tap row kh does not reach this row phase
                        qh = (kh * dh - rh) // sh
                        for kw in range(kW):
                            if (kw * dw - rw) % sw != 0:
                                continue
                            qw = (kw * dw - rw) // sw
                            start = (a_lo - qh + Qh) * Wg + Qw - qw
                            tap, tap_weight = g_pad[start:start + run], weight[c, 0, kh, kw]
                            for j in range(run):        # the vectorised loop
                                total[j] += tap_weight * tap[j]
                    for a in range(a_lo, a_hi + 1):     # the phase's values to their input pixels
                        iw_first = b_lo * sw + rw - pw
                        x_part = gx_plane[a * sh + rh - ph, iw_first:]
                        source = total[(a - a_lo) * Wg + b_lo:]
                        for k in range(b_hi - b_lo + 1):
                            x_part[k * sw] = source[k]


@parallel_jit
def _backward_input_generic_kernel(grad_out, weight, grad_x, sh, sw, ph, pw, dh, dw):
    """Scatter each output gradient back through every tap (the forward loops, transposed)."""
    N, C, H, W = grad_x.shape
    C_out, _, kH, kW = weight.shape
    _, _, H_out, W_out = grad_out.shape
    multiplier = C_out // C
    for task in prange(N * C):                          # one input plane per iteration: disjoint writes
        n = task // C
        c = task - n * C
        gx_plane = grad_x[n, c]                         # (H, W)
        gx_plane[:, :] = 0.0
        for oc in range(c * multiplier, (c + 1) * multiplier):   # the m output channels fed by c
            gy_plane = grad_out[n, oc]                  # (H_out, W_out)
            for kh in range(kH):
                oh_lo, oh_hi = valid_output_range(H_out, H, sh, kh * dh - ph)
                for kw in range(kW):
                    ow_lo, ow_hi = valid_output_range(W_out, W, sw, kw * dw - pw)
                    for oh in range(oh_lo, oh_hi):      # distinct ow -> distinct input columns
                        tap_scatter_axpy(gx_plane[oh * sh + kh * dh - ph], gy_plane[oh], weight[oc, 0, kh, kw],
                                     ow_lo, ow_hi, sw, kw * dw - pw)


@parallel_jit
def _backward_input_rows_stride1_kernel(grad_out, weight, grad_x, ph, pw, dh, dw):
    """3x3 / 5x5 at stride 1: a gather with the *flipped* kernel (a forward pass in disguise).

    At stride 1, ``grad_x[h, w] = sum_{a, b} weight[a, b] * grad_out[h + p - a*d, w + p - b*d]``,
    which is the forward loop with the kernel flipped, so the register-row trick applies again.
    """
    N, C, H, W = grad_x.shape
    C_out, _, kH, kW = weight.shape
    _, _, H_out, W_out = grad_out.shape
    multiplier = C_out // C
    # the flipped kernel reads grad_out with padding p' = (k-1)*d - p
    tap_lo, tap_hi, in_lo, in_hi = _column_ranges(W, W_out, 1, (kW - 1) * dw - pw, dw, kW)
    for task in prange(N * C):                          # one input plane per iteration: disjoint writes
        n = task // C
        c = task - n * C
        gx_plane = grad_x[n, c]                         # (H, W)
        gx_plane[:, :] = 0.0
        for oc in range(c * multiplier, (c + 1) * multiplier):
            gy_plane = grad_out[n, oc]                  # (H_out, W_out)
            for ih in range(H):
                gx_row = gx_plane[ih]                   # (W,)
                for kh in range(kH):
                    oh = ih + ph - kh * dh
                    if oh < 0 or oh >= H_out:
                        continue
                    gy_row = gy_plane[oh]               # (W_out,)
                    w = weight[oc, 0, kh]               # (kW,)
                    if in_hi > in_lo:
                        # tap kw of the forward kernel reads grad_out column iw + pw - kw*dw
                        gx_mid, first = gx_row[in_lo:], in_lo + pw
                        if kW == 3:
                            row_taps3(gx_mid, gy_row[first:], gy_row[first - dw:], gy_row[first - 2 * dw:],
                                      w[0], w[1], w[2], in_hi - in_lo, 1)
                        else:
                            row_taps5(gx_mid, gy_row[first:], gy_row[first - dw:], gy_row[first - 2 * dw:],
                                      gy_row[first - 3 * dw:], gy_row[first - 4 * dw:],
                                      w[0], w[1], w[2], w[3], w[4], in_hi - in_lo, 1)
            # border columns: tap by tap, column by column, rows innermost
            for kh in range(kH):
                ih_lo, ih_hi = valid_output_range(H, H_out, 1, ph - kh * dh)   # rows with grad_out row inside
                for kw in range(kW):
                    w_tap = weight[oc, 0, kh, kw]
                    for side in range(2):
                        # flipped tap kW-1-kw of the ranges is forward tap kw: it reads column iw + pw - kw*dw
                        start, stop = _border_run(side, tap_lo[kW - 1 - kw], tap_hi[kW - 1 - kw], in_lo, in_hi)
                        for iw in range(start, stop):
                            ow = iw + pw - kw * dw
                            for ih in range(ih_lo, ih_hi):
                                gx_plane[ih, iw] += w_tap * gy_plane[ih + ph - kh * dh, ow]


# ----------------------------------------------------------------------------------------------------
# Backward-weight kernels (numba)
# ----------------------------------------------------------------------------------------------------
@parallel_jit
def _backward_weight_generic_kernel(grad_out, x, grad_weight, sh, sw, ph, pw, dh, dw):
    """Sum over batch and pixels, tap by tap, into a per-iteration column buffer (vectorisable)."""
    N, C, H, W = x.shape
    C_out, _, kH, kW = grad_weight.shape
    _, _, H_out, W_out = grad_out.shape
    multiplier = C_out // C
    for oc in prange(C_out):                            # one output channel's kH*kW weights per iteration
        c = oc // multiplier
        partial = np.zeros((kH, kW, W_out), dtype=grad_weight.dtype)   # this iteration's own buffer
        for n in range(N):
            x_plane = x[n, c]                           # (H, W)
            gy_plane = grad_out[n, oc]                  # (H_out, W_out)
            for kh in range(kH):
                oh_lo, oh_hi = valid_output_range(H_out, H, sh, kh * dh - ph)
                for kw in range(kW):
                    ow_lo, ow_hi = valid_output_range(W_out, W, sw, kw * dw - pw)
                    for oh in range(oh_lo, oh_hi):
                        tap_multiply_accumulate(partial[kh, kw], gy_plane[oh], x_plane[oh * sh + kh * dh - ph],
                                        ow_lo, ow_hi, sw, kw * dw - pw)
        for kh in range(kH):
            for kw in range(kW):
                grad_weight[oc, 0, kh, kw] = partial[kh, kw].sum()


@parallel_jit
def _backward_weight_rows_kernel(grad_out, x, grad_weight, sh, sw, ph, pw, dh, dw):
    """3x3 / 5x5 fast path: one pass over a gradient row feeds a kernel row's taps."""
    N, C, H, W = x.shape
    C_out, _, kH, kW = grad_weight.shape
    _, _, H_out, W_out = grad_out.shape
    multiplier = C_out // C
    tap_lo, tap_hi, in_lo, in_hi = _column_ranges(W_out, W, sw, pw, dw, kW)
    for oc in prange(C_out):                            # one output channel's kH*kW weights per iteration
        c = oc // multiplier
        partial = np.zeros((kH, kW, W_out), dtype=grad_weight.dtype)   # this iteration's own buffer
        for n in range(N):
            x_plane = x[n, c]                           # (H, W)
            gy_plane = grad_out[n, oc]                  # (H_out, W_out)
            for oh in range(H_out):
                gy_row = gy_plane[oh]                   # (W_out,)
                for kh in range(kH):
                    ih = oh * sh + kh * dh - ph
                    if ih < 0 or ih >= H:
                        continue
                    x_row = x_plane[ih]                 # (W,)
                    acc = partial[kh]                   # (kW, W_out)
                    if in_hi > in_lo:
                        first = in_lo * sw - pw         # first input column of tap 0
                        row_multiply_accumulate3(acc[0, in_lo:], acc[1, in_lo:], acc[2, in_lo:], gy_row[in_lo:],
                                                 x_row[first:], x_row[first + dw:], x_row[first + 2 * dw:],
                                                 in_hi - in_lo, sw)
                        for kw in range(3 * (kW // 3), kW):      # 5x5: taps 3 and 4
                            tap_multiply_accumulate(acc[kw], gy_row, x_row, in_lo, in_hi, sw, kw * dw - pw)
            # border columns: tap by tap, column by column, rows innermost
            for kh in range(kH):
                oh_lo, oh_hi = valid_output_range(H_out, H, sh, kh * dh - ph)
                for kw in range(kW):
                    for side in range(2):
                        start, stop = _border_run(side, tap_lo[kw], tap_hi[kw], in_lo, in_hi)
                        for ow in range(start, stop):
                            iw = ow * sw + kw * dw - pw
                            total = 0.0
                            for oh in range(oh_lo, oh_hi):
                                total += gy_plane[oh, ow] * x_plane[oh * sh + kh * dh - ph, iw]
                            partial[kh, kw, ow] += total
        for kh in range(kH):
            for kw in range(kW):
                grad_weight[oc, 0, kh, kw] = partial[kh, kw].sum()


# ----------------------------------------------------------------------------------------------------
# Channels-last kernels for small planes (numba)
# ----------------------------------------------------------------------------------------------------
# The copies between layouts (_scatter_pixels .. _tile_weight) are compiled as functions of their own
# (``jit``), not pasted into each kernel (``inline_jit``): they run once per block, so the call costs
# nothing measurable, while pasting every copy into both kernels doubled their compile time (measured on
# a 2-core AMD EPYC: forward 14.6 -> 9.9 s, backward 25.5 -> 11.6 s per dtype on a cold cache).
@jit
def _scatter_pixels(local, y, n, c0):
    """``y[n, c0 + c, h, w] = local[h, w*cb + c]``: a channels-last block back to NCHW.

    A transpose; which loop goes inside depends on the plane (measured on a 2-core AMD EPYC, blocks of 64
    channels): on planes of at least :data:`CHANNEL_RUN_MIN_PIXELS` pixels one channel's whole plane is
    one loop (contiguous writes, reads ``cb`` apart; (64, 96, 8, 8) 0.45 -> 0.09 ms), on smaller ones one
    pixel's channels are (contiguous reads; (64, 192, 4, 4) 0.25 -> 0.06 ms). Before, eight channels at
    a time pixel by pixel: inner loops too short for either.
    """
    H, run = local.shape
    P = H * y.shape[3]                                  # pixels per plane
    cb = run // y.shape[3]
    flat_local = local.reshape(-1)                      # (P*cb,): pixel p's channels at p*cb
    block = y[n].reshape(-1)[c0 * P:(c0 + cb) * P]      # (cb*P,): channel c's plane at c*P
    if P >= CHANNEL_RUN_MIN_PIXELS:
        for c in range(cb):
            plane, channel_run = block[c * P:(c + 1) * P], flat_local[c:]
            for p in range(P):
                plane[p] = channel_run[p * cb]
    else:
        for p in range(P):
            pixel, channel_start = flat_local[p * cb:(p + 1) * cb], block[p:]
            for c in range(cb):
                channel_start[c * P] = pixel[c]


@jit
def _gather_pixels(x, n, c0, local):
    """``local[h, w*cb + c] = x[n, c0 + c, h, w]``: the inverse copy of :func:`_scatter_pixels`, with the
    same choice of inner loop."""
    H, run = local.shape
    P = H * x.shape[3]
    cb = run // x.shape[3]
    flat_local = local.reshape(-1)
    block = x[n].reshape(-1)[c0 * P:(c0 + cb) * P]
    if P >= CHANNEL_RUN_MIN_PIXELS:
        for c in range(cb):
            plane, channel_run = block[c * P:(c + 1) * P], flat_local[c:]
            for p in range(P):
                channel_run[p * cb] = plane[p]
    else:
        for p in range(P):
            pixel, channel_start = flat_local[p * cb:(p + 1) * cb], block[p:]
            for c in range(cb):
                pixel[c] = channel_start[c * P]


@jit
def _pixel_stride(cb, pixels, itemsize):
    """Values from one pixel to the next in the intermediate channels-last copy of a block of ``cb``
    channels and ``pixels`` pixels (:func:`_gather_phases`, :func:`_scatter_phases`): ``cb``, or ``cb`` +
    :data:`PIXEL_STRIDE_PAD` when ``cb`` values make a multiple of 128 bytes and the block holds at least
    :data:`PIXEL_STRIDE_PAD_MIN_VALUES` values.

    The transpose writes (or reads) one channel's plane a pixel apart. At a multiple of 128 bytes those
    accesses all fall into a few of L1's sets, and once a plane has more pixels than those sets hold
    lines, nearly every access misses: on a 2-core Intel Sapphire Rapids one 64-channel float32 block took
    4.8 us at 13 x 13, 10.9 at 14 x 14, 28.5 at 16 x 16 and 64 at 24 x 24 with rows of 64 values, and 3.9,
    4.5, 5.8 and 15.8 us with rows of 68; 32 channels from 20 x 20 on (8.3 -> 4.3 us); 48 channels (192
    bytes a pixel) never, and lost 5-10% with the pad. Only copies change: the bits do not.
    """
    if (cb * itemsize) % 128 == 0 and cb * pixels >= PIXEL_STRIDE_PAD_MIN_VALUES:
        return cb + PIXEL_STRIDE_PAD
    return cb


@jit
def _gather_pixels_padded(x, n, c0, local):
    """:func:`_gather_pixels` into rows longer than the block's channels: ``local[h*W + w, c] = x[n, c0 + c, h,
    w]`` for ``c < cb``, ``local`` (pixels, :func:`_pixel_stride`), the planes large enough for one
    channel's plane per loop. A function of its own: :func:`_gather_pixels` with the row length as an
    argument compiled 11-17% slower for the unpadded blocks (Sapphire Rapids, (8, 576, 7, 7), (64, 48, 16,
    16))."""
    P, stride = local.shape
    cb = stride - PIXEL_STRIDE_PAD
    flat_local = local.reshape(-1)
    block = x[n].reshape(-1)[c0 * P:(c0 + cb) * P]
    for c in range(cb):
        plane, channel_run = block[c * P:(c + 1) * P], flat_local[c:]
        for p in range(P):
            channel_run[p * stride] = plane[p]


@jit
def _scatter_pixels_padded(local, y, n, c0):
    """The inverse copy of :func:`_gather_pixels_padded`: ``y[n, c0 + c, h, w] = local[h*W + w, c]``."""
    P, stride = local.shape
    cb = stride - PIXEL_STRIDE_PAD
    flat_local = local.reshape(-1)
    block = y[n].reshape(-1)[c0 * P:(c0 + cb) * P]
    for c in range(cb):
        plane, channel_run = block[c * P:(c + 1) * P], flat_local[c:]
        for p in range(P):
            plane[p] = channel_run[p * stride]


@jit
def _gather_phases(x, n, c0, cb, x_phases, sw, ph, pw):
    """Copy one image's channel block into zero-padded, channels-last column phases.

    ``x_phases[r, ph + h, j*cb + c] = x[n, c0 + c, h, w]`` for every input pixel, where the padded
    column ``pw + w = j*sw + r`` is split into its phase ``r`` and its index ``j`` within that phase.
    Tap ``kw`` of output column ``ow`` reads padded column ``ow*sw + kw*dw = (ow + q)*sw + r`` with
    ``q, r = divmod(kw*dw, sw)``: in phase ``r`` the whole output row of that tap is one contiguous run
    starting at ``q*cb``, whatever the stride and dilation. The border stays zero (the padding).
    Planes of at least :data:`PHASES_VIA_PIXELS_MIN_PIXELS` pixels go through a plain transpose first.
    """
    _, _, H, W = x.shape
    if H * W >= PHASES_VIA_PIXELS_MIN_PIXELS:          # a fast transpose first, then whole pixels
        stride = _pixel_stride(cb, H * W, x.itemsize)
        pixels = np.empty((H * W, stride), dtype=x.dtype)   # one pixel's channels per row, unpadded plane
        if stride == cb:
            _gather_pixels(x, n, c0, pixels.reshape(H, W * cb))
        else:
            _gather_pixels_padded(x, n, c0, pixels)
        for h in range(H):
            for w in range(W):
                j, r = divmod(pw + w, sw)
                source, target = pixels[h * W + w], x_phases[r, ph + h, j * cb:(j + 1) * cb]
                for c in range(cb):
                    target[c] = source[c]
        return
    block = x[n, c0:c0 + cb]                            # (cb, H, W)
    for r in range(sw):                                 # phase r holds the columns w with (pw + w) % sw == r
        w_first = (r - pw) % sw
        j_first = (pw + w_first) // sw
        for h in range(H):
            phase_row = x_phases[r, ph + h]             # (phase_width*cb,)
            j = j_first
            for w in range(w_first, W, sw):
                pixel = phase_row[j * cb:]              # (cb,) written contiguously
                for c in range(cb):                     # reads jump by a plane; measured 3x faster than
                    pixel[c] = block[c, h, w]           # contiguous reads with scattered writes
                j += 1


@jit
def _scatter_phases(grad_phases, n, c0, cb, grad_x, sw, ph, pw):
    """The inverse copy of :func:`_gather_phases`: the unpadded part of the phases back to NCHW."""
    _, _, H, W = grad_x.shape
    if H * W >= PHASES_VIA_PIXELS_MIN_PIXELS:
        stride = _pixel_stride(cb, H * W, grad_x.itemsize)
        pixels = np.empty((H * W, stride), dtype=grad_x.dtype)
        for h in range(H):
            for w in range(W):
                j, r = divmod(pw + w, sw)
                source, target = grad_phases[r, ph + h, j * cb:(j + 1) * cb], pixels[h * W + w]
                for c in range(cb):
                    target[c] = source[c]
        if stride == cb:
            _scatter_pixels(pixels.reshape(H, W * cb), grad_x, n, c0)
        else:
            _scatter_pixels_padded(pixels, grad_x, n, c0)
        return
    block = grad_x[n, c0:c0 + cb]                       # (cb, H, W): this iteration's only
    for r in range(sw):
        w_first = (r - pw) % sw
        j_first = (pw + w_first) // sw
        for h in range(H):
            phase_row = grad_phases[r, ph + h]          # (phase_width*cb,)
            j = j_first
            for w in range(w_first, W, sw):
                pixel = phase_row[j * cb:]              # (cb,)
                for c in range(cb):
                    block[c, h, w] = pixel[c]
                j += 1


@jit
def _tile_weight(weight, block, W_out):
    """``w_tiled[b, kh, kw, ow*cb + c] = weight[b*block + c, 0, kh, kw]``: each tap's weights of channel
    block ``b`` repeated along an output row, so that a whole output row of one tap is a single
    element-wise loop. Built once per prepared forward (:func:`prepare_forward`: a frozen model tiles its
    weights once, not on every call; measured on a 2-core AMD EPYC, MobileNet V3-Large's four
    channels-last layers at 224 spend 132 us tiling, V3-Small's 82 us) and once per call of the backward;
    only read inside the parallel loop (the first ``W_out*cb`` values of each row; the rest of a partial
    last block's rows is never read).

    The block's weights for a tap are gathered once, as output column 0, and then copied whole to the
    other columns: contiguous copies, where writing each weight ``W_out`` times ``cb`` apart took a third
    of a batch-1 forward (measured on a 2-core AMD EPYC, alternated: (1, 960, 7, 7) 5x5 185 -> 49 us,
    (1, 576, 14, 14) 3x3 at stride 2 24 -> 8 us).
    """
    C, _, kH, kW = weight.shape
    blocks = (C + block - 1) // block
    w_tiled = np.empty((blocks, kH, kW, W_out * block), dtype=weight.dtype)
    for b in range(blocks):
        cb = min(block, C - b * block)
        for kh in range(kH):
            for kw in range(kW):
                row = w_tiled[b, kh, kw]                # (W_out*cb,) used
                column = row[:cb]                       # output column 0: the block's weights for the tap
                for c in range(cb):
                    column[c] = weight[b * block + c, 0, kh, kw]
                for ow in range(1, W_out):              # the same cb values for every other column
                    target = row[ow * cb:(ow + 1) * cb]
                    for c in range(cb):
                        target[c] = column[c]
    return w_tiled


@parallel_jit
def _forward_channels_last_kernel(x, w_tiled_all, bias, y, block, sh, sw, ph, pw, dh, dw, scale, shift, low, high,
                                  hardswish):
    """Small planes: one (image, block of channels) per iteration, channels innermost.

    ``w_tiled_all`` is ``_tile_weight(weight, block, W_out)``, (blocks, kH, kW, W_out*block).

    At 8x8 .. 1x1 a plane row is shorter than one vector and the plane-by-plane loops spend their time
    on bookkeeping. Here one output row of ``cb`` channels is one contiguous run of ``W_out*cb``
    numbers, and each tap adds ``w_tiled * x_phase`` to it in a single vectorised loop, on a
    zero-padded channels-last copy of the block (no border cases).

    A non-empty ``scale`` finishes the block before it goes back to NCHW, ``v = clip(y * scale[c] +
    shift[c], low, high)`` and hard swish ``v * clip(v + 3, 0, 6) / 6`` when ``hardswish`` is true, as
    :func:`_forward_flat_kernel` does (the batch norm and activation of ``tinycnn.nn.fusion``).
    """
    N, C, H, W = x.shape
    _, kH, kW, _ = w_tiled_all.shape
    _, _, H_out, W_out = y.shape
    has_bias = bias.shape[0] > 0
    finished = scale.shape[0] > 0
    zero, three, six = x.dtype.type(0), x.dtype.type(3), x.dtype.type(6)      # hard swish's constants
    blocks = (C + block - 1) // block
    padded_height, phase_width = H + 2 * ph, (W + 2 * pw + sw - 1) // sw
    for task in prange(N * blocks):                     # one (image, channel block) per iteration
        n = task // blocks
        c0 = (task - n * blocks) * block
        cb = min(block, C - c0)                         # channels in this block
        run = W_out * cb                                # one output row, channels innermost
        x_phases = np.zeros((sw, padded_height, phase_width * cb), dtype=x.dtype)
        _gather_phases(x, n, c0, cb, x_phases, sw, ph, pw)
        w_tiled = w_tiled_all[c0 // block]              # (kH, kW, W_out*block)
        y_local = np.zeros((H_out, run), dtype=x.dtype)
        for oh in range(H_out):
            y_row = y_local[oh]                         # (W_out*cb,)
            for kh in range(kH):
                for kw in range(kW):
                    q, r = divmod(kw * dw, sw)
                    x_row = x_phases[r, oh * sh + kh * dh, q * cb:]   # tap (kh, kw) under output column 0
                    w_row = w_tiled[kh, kw]
                    for j in range(run):                # the vectorised loop
                        y_row[j] += w_row[j] * x_row[j]
        if has_bias:
            for oh in range(H_out):
                for ow in range(W_out):
                    pixel = y_local[oh, ow * cb:]       # (cb,)
                    for c in range(cb):
                        pixel[c] += bias[c0 + c]
        if finished:                                    # the epilogue, across the block's channels
            block_scale, block_shift = scale[c0:c0 + cb], shift[c0:c0 + cb]
            for oh in range(H_out):
                for ow in range(W_out):
                    pixel = y_local[oh, ow * cb:]       # (cb,)
                    for c in range(cb):
                        value = pixel[c] * block_scale[c] + block_shift[c]
                        pixel[c] = clip_value(value, low, high)
                    if hardswish:
                        for c in range(cb):
                            pixel[c] = hardswish_value(pixel[c], zero, three, six)
        _scatter_pixels(y_local, y, n, c0)              # back to NCHW: this iteration's block only


@parallel_jit
def _backward_channels_last_kernel(grad_out, x, weight, grad_x, partial, block, want_input, want_weight,
                                   H, W, kH, kW, sh, sw, ph, pw, dh, dw):
    """Both gradients of the small-plane forward in one pass over ``grad_out``.

    Per (image, channel block), for every tap: the input gradient scatters ``w_tiled * g`` into padded
    channels-last phases (the forward's gather, transposed), and the weight gradient adds ``g * x_phase``
    into a per-column buffer ``gw_tiled``; ``partial[n, block]`` (kH, kW, block) receives its sum over
    columns, and the caller sums ``partial`` over ``n`` in a fixed order (no shared writes, same bits
    for any thread count). ``x`` (for the weight gradient) or ``weight`` (for the input gradient) is an
    empty stand-in when that gradient is not wanted, so the input and kernel sizes come as arguments.
    """
    N, C, H_out, W_out = grad_out.shape                 # one output channel per input channel
    blocks = (C + block - 1) // block
    padded_height, phase_width = H + 2 * ph, (W + 2 * pw + sw - 1) // sw
    w_tiled_all = (_tile_weight(weight, block, W_out) if want_input    # (blocks, kH, kW, W_out*block)
                   else np.zeros((blocks, kH, kW, 0), dtype=grad_out.dtype))
    for task in prange(N * blocks):                     # one (image, channel block) per iteration
        n = task // blocks
        b = task - n * blocks
        c0 = b * block
        cb = min(block, C - c0)
        run = W_out * cb
        gy_local = np.empty((H_out, run), dtype=grad_out.dtype)
        _gather_pixels(grad_out, n, c0, gy_local)       # grad_out block, channels innermost
        x_phases = np.zeros((sw, padded_height, phase_width * cb if want_weight else 0), dtype=grad_out.dtype)
        gx_phases = np.zeros((sw, padded_height, phase_width * cb if want_input else 0), dtype=grad_out.dtype)
        w_tiled = w_tiled_all[b]                        # (kH, kW, W_out*block)
        gw_tiled = np.zeros((kH, kW, run), dtype=grad_out.dtype)
        if want_weight:
            _gather_phases(x, n, c0, cb, x_phases, sw, ph, pw)
        for oh in range(H_out):
            g = gy_local[oh]                            # (W_out*cb,)
            for kh in range(kH):
                for kw in range(kW):
                    q, r = divmod(kw * dw, sw)
                    ih = oh * sh + kh * dh
                    if want_input:
                        gx_row = gx_phases[r, ih, q * cb:]
                        w_row = w_tiled[kh, kw]
                        for j in range(run):
                            gx_row[j] += w_row[j] * g[j]
                    if want_weight:
                        x_row = x_phases[r, ih, q * cb:]
                        gw_row = gw_tiled[kh, kw]
                        for j in range(run):
                            gw_row[j] += g[j] * x_row[j]
        if want_weight:
            gw_block = partial[n, b]                    # (kH, kW, block): this iteration's only
            total = np.empty(cb)                        # float64 sums, whatever the dtype
            for kh in range(kH):
                for kw in range(kW):
                    columns = gw_tiled[kh, kw]
                    total[:] = 0.0
                    for ow in range(W_out):             # columns in order, all channels at once
                        column = columns[ow * cb:(ow + 1) * cb]
                        for c in range(cb):
                            total[c] += column[c]
                    for c in range(cb):
                        gw_block[kh, kw, c] = total[c]
        if want_input:
            _scatter_phases(gx_phases, n, c0, cb, grad_x, sw, ph, pw)


@parallel_jit
def _sum_weight_partials_kernel(partial, grad_weight, block):
    """``grad_weight[c, 0, kh, kw] = sum_n partial[n, c // block, kh, kw, c % block]``, n in order."""
    N, blocks, kH, kW, _ = partial.shape
    C = grad_weight.shape[0]
    for b in prange(blocks):                            # one channel block's weights per iteration
        total = np.zeros((kH, kW, block), dtype=partial.dtype)
        for n in range(N):                              # images in order: the same bits on any thread count
            total += partial[n, b]
        for c in range(min(block, C - b * block)):
            for kh in range(kH):
                for kw in range(kW):
                    grad_weight[b * block + c, 0, kh, kw] = total[kh, kw, c]


# ----------------------------------------------------------------------------------------------------
# One-pixel kernels (numba)
# ----------------------------------------------------------------------------------------------------
@parallel_jit
def _forward_one_pixel_kernel(x, weight_taps, bias, y, block, ph, pw, dh, dw):
    """Outputs of one pixel per channel: ``y[n, c, 0, 0] = sum_(kh, kw) w[kh, kw, c] * x[n, c, kh*dh - ph,
    kw*dw - pw]`` over the taps inside the plane (the others read padding), plus ``bias[c]``.

    ``weight_taps`` is the weight as ``(kH, kW, C)``. One (image, block of channels) per iteration; the
    innermost loop runs across the channels of one input pixel, ``x[n, c0:c1, ih, iw]``: contiguous
    on 1x1 planes, ``H*W`` apart otherwise. Taps are added in ``(kh, kw)`` order, the bias last, as in
    the channels-last kernel.
    """
    N, C, H, W = x.shape
    kH, kW, _ = weight_taps.shape
    has_bias = bias.shape[0] > 0
    blocks = (C + block - 1) // block
    for task in prange(N * blocks):                     # one (image, channel block) per iteration
        n = task // blocks
        c0 = (task - n * blocks) * block
        c1 = min(C, c0 + block)
        out = y[n, c0:c1, 0, 0]                         # (c1 - c0,): this iteration's only
        out[:] = 0.0
        for kh in range(kH):
            ih = kh * dh - ph
            if ih < 0 or ih >= H:                       # this kernel row lies in the zero padding
                continue
            for kw in range(kW):
                iw = kw * dw - pw
                if iw < 0 or iw >= W:
                    continue
                pixel, tap = x[n, c0:c1, ih, iw], weight_taps[kh, kw, c0:c1]
                for c in range(c1 - c0):                # across channels
                    out[c] += tap[c] * pixel[c]
        if has_bias:
            for c in range(c1 - c0):
                out[c] += bias[c0 + c]


@parallel_jit
def _backward_one_pixel_kernel(grad_out, x, weight_taps, grad_x, grad_weight_taps, block, want_input, want_weight,
                               H, W, kH, kW, ph, pw, dh, dw):
    """Both gradients of :func:`_forward_one_pixel_kernel`, for each tap inside the plane::

        grad_x[n, c, ih, iw] = w[kh, kw, c] * g[n, c],    grad_weight_taps[kh, kw, c] = sum_n g[n, c] * x[n, c, ih, iw]

    (``g = grad_out[:, :, 0, 0]``; ``grad_x`` comes in zeroed, ``ih, iw = kh*dh - ph, kw*dw - pw``). One
    block of channels per iteration, all images inside it in order: the weight gradient's sums run in a
    fixed order, the same bits on any number of threads. ``x`` or ``weight_taps`` is an empty stand-in
    when its gradient is not wanted, so the input and kernel sizes come as arguments.
    """
    N, C = grad_out.shape[:2]
    blocks = (C + block - 1) // block
    for b in prange(blocks):                            # one channel block's weights per iteration
        c0 = b * block
        c1 = min(C, c0 + block)
        if want_weight:
            grad_weight_taps[:, :, c0:c1] = 0.0
        for n in range(N):                              # images in order
            g = grad_out[n, c0:c1, 0, 0]                # (c1 - c0,)
            for kh in range(kH):
                ih = kh * dh - ph
                if ih < 0 or ih >= H:
                    continue
                for kw in range(kW):
                    iw = kw * dw - pw
                    if iw < 0 or iw >= W:
                        continue
                    if want_input:
                        grad_pixel, tap = grad_x[n, c0:c1, ih, iw], weight_taps[kh, kw, c0:c1]
                        for c in range(c1 - c0):
                            grad_pixel[c] += tap[c] * g[c]
                    if want_weight:
                        pixel, grad_tap = x[n, c0:c1, ih, iw], grad_weight_taps[kh, kw, c0:c1]
                        for c in range(c1 - c0):
                            grad_tap[c] += g[c] * pixel[c]
