"""The direct stem convolution (``kernels/stem.py``): a 3x3 kernel over few input channels.

What is checked:

* it equals ``kernels.reference.conv2d_forward`` (float64 1e-10, float32 1e-4 relative to the largest
  output, ``helpers.assert_close``: 27 products per output summed in another order) over strides 1 and 2,
  paddings 0-2, dilation 1 and 2, 1-4 input channels, odd and even image sizes, batches of 1 and 3, with
  and without a bias;
* its epilogue (batch norm + ReLU6 or hard swish) gives the bits of the convolution followed by
  ``kernels.batchnorm.finish_channels``;
* ``conv2d_forward`` and ``nn.freeze`` take it exactly where :func:`kernels.stem.use_stem` says;
* an input that is not finite reaches only the outputs that read it (the extra columns of the flat runs,
  which read a neighbouring row, are dropped), the same pattern as the reference;
* the bits do not depend on numba's thread count (each output channel is one iteration's).
"""
import numba
import numpy as np
import pytest

from helpers import assert_close
from kernels import conv2d as C, reference as R, stem as S
from kernels.batchnorm import finish_channels
from kernels.conv2d import conv2d_forward

CASES = {                                  # x shape, C_out, stride, padding, dilation
    "rgb_224_stride2": ((1, 3, 224, 224), 8, 2, 1, 1),
    "rgb_odd_stride2": ((3, 3, 67, 65), 5, 2, 1, 1),
    "gray_stride1_no_padding": ((2, 1, 36, 34), 4, 1, 0, 1),
    "rgba_stride1_padding2_dilation2": ((1, 4, 33, 40), 6, 1, 2, 2),
    "two_channels_stride2_padding2": ((2, 2, 70, 70), 3, 2, 2, 1),
    "rgb_stride2_dilation2_no_padding": ((1, 3, 71, 72), 7, 2, 0, 2),
}


def _inputs(name, dtype, rng, with_bias=False):
    x_shape, C_out, stride, padding, dilation = CASES[name]
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal((C_out, x_shape[1], 3, 3)).astype(dtype)
    bias = rng.standard_normal(C_out).astype(dtype) if with_bias else None
    geometry = C._geometry(x.shape, weight.shape, stride, padding, dilation, 1)
    return x, weight, bias, geometry


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CASES))
def test_stem_forward_matches_the_reference(name, dtype, with_bias, rng):
    x, weight, bias, geometry = _inputs(name, dtype, rng, with_bias)
    assert S.use_stem(geometry)
    y = S.prepare_forward(weight, bias, geometry)(x)
    _, _, stride, padding, dilation = CASES[name]
    expected = R.conv2d_forward(x.astype(np.float64), weight.astype(np.float64),
                                None if bias is None else bias.astype(np.float64), stride, padding, dilation)
    assert_close(y, expected, dtype)


@pytest.mark.parametrize("low, high, hardswish", [(0.0, 6.0, False), (-np.inf, np.inf, True)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("name", ["rgb_224_stride2", "gray_stride1_no_padding"])
def test_stem_epilogue_is_the_same_as_a_separate_pass(name, with_bias, low, high, hardswish, rng):
    """The bias, then ``clip(y * scale + shift, low, high)`` [then hard swish] on each output before it is written:
    the bits of the convolution followed by ``finish_channels``."""
    x, weight, bias, geometry = _inputs(name, np.float32, rng, with_bias)
    C_out = weight.shape[0]
    epilogue = (rng.standard_normal(C_out).astype(np.float32), rng.standard_normal(C_out).astype(np.float32), low,
                high, hardswish)
    fused = S.prepare_forward(weight, bias, geometry, epilogue)(x)
    separate = finish_channels(S.prepare_forward(weight, bias, geometry)(x), epilogue)
    np.testing.assert_array_equal(fused, separate)


@pytest.mark.parametrize("x_shape, weight_shape, stride, groups, expected", [
    ((1, 3, 224, 224), (32, 3, 3, 3), 2, 1, True),         # MobileNet V2's stem at 224
    ((1, 4, 64, 64), (8, 4, 3, 3), 1, 1, True),            # 4 input channels, 64 x 64 outputs
    ((1, 3, 64, 64), (8, 3, 3, 3), 2, 1, True),            # 32 x 32 outputs: the smallest plane it takes
    ((64, 3, 32, 32), (16, 3, 3, 3), 2, 1, False),         # a 32 x 32 training stem: 16 x 16 outputs
    ((1, 5, 64, 64), (8, 5, 3, 3), 1, 1, False),           # five input channels
    ((1, 4, 64, 64), (8, 2, 3, 3), 1, 2, False),           # grouped
    ((1, 3, 224, 224), (16, 3, 5, 5), 2, 1, False),        # a 5x5 kernel
    ((1, 3, 224, 224), (16, 3, 3, 3), 3, 1, False),        # stride 3
])
def test_conv2d_forward_takes_the_stem_kernel_exactly_where_use_stem_says(x_shape, weight_shape, stride, groups,
                                                                          expected, rng, monkeypatch):
    geometry = C._geometry(x_shape, weight_shape, stride, 1, 1, groups)
    assert S.use_stem(geometry) is expected
    calls = []
    real = S._stem_forward_kernel
    monkeypatch.setattr(S, "_stem_forward_kernel", lambda *args: calls.append(1) or real(*args))
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal(weight_shape).astype(np.float32)
    y = conv2d_forward(x, weight, stride=stride, padding=1, groups=groups)
    assert len(calls) == (1 if expected else 0)
    assert_close(y, R.conv2d_forward(x.astype(np.float64), weight.astype(np.float64), None, stride, 1, 1, groups),
                 np.float32)


def test_a_frozen_stem_prepares_the_stem_kernel_once(rng, monkeypatch):
    """``nn.freeze`` keeps the prepared stem forward of each input shape; the frozen model gives the bits of the
    model in evaluation mode (which takes the same kernel through ``conv2d_forward``)."""
    import tinycnn.nn as nn
    from tinycnn.models import get_model
    nn.init.manual_seed(0)
    model = get_model("mobilenet_v3_small", num_classes=10)
    frozen = nn.freeze(model)
    prepared = []
    real = S.prepare_forward
    monkeypatch.setattr(S, "prepare_forward", lambda *args: prepared.append(1) or real(*args))
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    first = frozen(x)
    assert prepared == [1]
    np.testing.assert_array_equal(frozen(x), first)
    assert prepared == [1]                                  # not prepared again for the same shape
    model.eval()
    with nn.no_grad():
        np.testing.assert_array_equal(model(x), first)


@pytest.mark.parametrize("name", ["rgb_odd_stride2", "gray_stride1_no_padding", "rgba_stride1_padding2_dilation2"])
def test_a_value_that_is_not_finite_reaches_only_the_outputs_that_read_it(name, rng):
    x, weight, _, geometry = _inputs(name, np.float64, rng)
    x[0, 0, 5, 0] = np.inf                                  # first column: the previous row's extra columns
    x[-1, -1, -1, -1] = np.nan                              # last value of the last plane
    x[0, -1, 7, 9] = -np.inf
    y = S.prepare_forward(weight, None, geometry)(x)
    _, _, stride, padding, dilation = CASES[name]
    expected = R.conv2d_forward(x, weight, None, stride, padding, dilation)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    finite = np.isfinite(expected)
    assert_close(y[finite], expected[finite], np.float64)


def test_stem_results_do_not_depend_on_numba_thread_count(rng, restore_numba_threads):
    x, weight, bias, geometry = _inputs("rgb_odd_stride2", np.float32, rng, with_bias=True)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        results.append(S.prepare_forward(weight, bias, geometry)(x))
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.nojit
def test_stem_forward_matches_the_reference_tiny(rng):
    """Small enough for NUMBA_DISABLE_JIT=1 (``prepare_forward`` called directly, below ``use_stem``'s
    threshold): the kernel as plain Python, stride 1 and 2, with a bias and an epilogue, against the reference."""
    for stride in (1, 2):
        x = rng.standard_normal((2, 3, 9, 8))
        weight = rng.standard_normal((2, 3, 3, 3))
        bias = rng.standard_normal(2)
        geometry = C._geometry(x.shape, weight.shape, stride, 1, 1, 1)
        epilogue = (rng.standard_normal(2), rng.standard_normal(2), 0.0, 6.0, False)
        y = S.prepare_forward(weight, bias, geometry, epilogue)(x)
        expected = finish_channels(R.conv2d_forward(x, weight, bias, stride, 1), epilogue)
        assert_close(y, expected, np.float64)
