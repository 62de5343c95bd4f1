"""The general convolution kernels (``kernels/conv2d.py``) against their NumPy twins in ``kernels.reference``.

What is checked:

* ``conv2d_forward``, ``conv2d_backward_input``, ``conv2d_backward_weight`` and ``conv2d_backward_bias``
  equal the reference on a grid of configurations (stride 1/2/3/(2,1), padding 0/1/2/(2,1), dilation
  1/2/(1,2), groups 1/2/C, kernels 1x1/3x3/5x5/3x5/1x3, batch 1 and 3, odd and even image sizes), in
  float64 and float32;
* ``conv2d_*`` hands depthwise (``groups == C_in``) and pointwise (1x1, stride 1, no padding) arguments to
  the specialised kernels, and the im2col path it uses for everything else is right on its own, even for
  arguments it would normally hand over (forced with ``monkeypatch``);
* the backward passes are the adjoints of the forward pass and pass float64 finite-difference checks;
* results are reproducible bit for bit, whatever the number of numba threads;
* non-contiguous inputs (strided, transposed, Fortran-ordered, negative strides) give the same result as
  contiguous copies.

The grid: a full product of stride x padding x dilation x kernel size (240 configurations, float64); each
configuration also gets a grouping, a batch size and an image size, assigned cyclically with periods 4,
2 and 3 so that every pair of those values meets. float32 runs every 7th configuration (7 is coprime
with all the periods, so the sample still contains every value of every axis).

Tolerances (``helpers.assert_close``), relative to the largest magnitude of the expected result, which the
reference computes in float64 from the *same* (possibly float32-rounded) inputs: float64 1e-10 (two
orders of summation of at most a few hundred products differ by ~1e-15), float32 1e-4 (the kernel rounds
every partial sum to float32, eps 1.2e-7).
"""

import numba
import numpy as np
import pytest

import kernels
from helpers import (GRID_BATCHES, GRID_DILATIONS, GRID_KERNELS, GRID_PADDINGS, GRID_SIZES, GRID_STRIDES, LAYOUTS,
                     as64, assert_close, assert_gradcheck, assert_vdot_equal, build_conv_grid, conv_grid_inputs,
                     label, relayout)
from kernels import conv2d, reference as R
from kernels.conv2d import conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight, conv2d_forward
from kernels.depthwise import (depthwise_conv2d_backward_input, depthwise_conv2d_backward_weight,
                               depthwise_conv2d_forward)
from kernels.pointwise import (pointwise_conv2d_backward_input, pointwise_conv2d_backward_weight,
                               pointwise_conv2d_forward)

# ----------------------------------------------------------------------------------------------------
# The grid
# ----------------------------------------------------------------------------------------------------
STRIDES, PADDINGS, DILATIONS, KERNELS = GRID_STRIDES, GRID_PADDINGS, GRID_DILATIONS, GRID_KERNELS
BATCHES, SIZES = GRID_BATCHES, GRID_SIZES
GROUPINGS = [(1, 3, 4), (2, 4, 6), ("C", 3, 6), ("C", 4, 4)]     # (groups, C_in, C_out); "C" = depthwise


def _grouped_weight(grouping, kernel):
    """``(C_in, weight shape, groups, {"groups": groups})`` of one ``GROUPINGS`` entry."""
    groups, C_in, C_out = grouping
    groups = C_in if groups == "C" else groups
    return C_in, (C_out, C_in // groups, *kernel), groups, {"groups": groups}


def case_id(case):
    x_shape, weight_shape, params, with_bias = case
    return (f"k{label(weight_shape[2:])}-s{label(params['stride'])}-p{label(params['padding'])}"
            f"-d{label(params['dilation'])}-g{params['groups']}-ci{x_shape[1]}-co{weight_shape[0]}"
            f"-n{x_shape[0]}-{x_shape[2]}x{x_shape[3]}" + ("-bias" if with_bias else ""))


GRID = build_conv_grid(GROUPINGS, _grouped_weight)
GRID_PARAMS = ([pytest.param(case, np.float64, id=case_id(case) + "-float64") for case in GRID]
               + [pytest.param(case, np.float32, id=case_id(case) + "-float32") for case in GRID[::7]])


def make_inputs(case, dtype, rng):
    """x, weight, bias (or None), grad_out of the forward's output shape, params; all in ``dtype``."""
    return conv_grid_inputs(case, dtype, rng, groups=case[2]["groups"])


def test_grid_covers_every_value_of_every_axis():
    """The cyclic assignment must not lose a value (e.g. a period that divides another)."""
    for sample in (GRID, GRID[::7]):
        params = [case[2] for case in sample]
        assert {p["stride"] for p in params} == set(STRIDES)
        assert {p["padding"] for p in params} == set(PADDINGS)
        assert {p["dilation"] for p in params} == set(DILATIONS)
        assert {case[1][2:] for case in sample} == set(KERNELS)
        assert {case[0][0] for case in sample} == set(BATCHES)
        assert {(p["groups"] == case[0][1], p["groups"]) for p, case in zip(params, sample)} >= {
            (False, 1), (False, 2), (True, 3), (True, 4)}
        assert {case[3] for case in sample} == {True, False}
    assert {case[0][2:] for case in GRID} >= set(SIZES)


# ----------------------------------------------------------------------------------------------------
# Against the reference
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case, dtype", GRID_PARAMS)
def test_conv2d_forward_matches_reference(case, dtype, rng):
    x, weight, bias, _, params = make_inputs(case, dtype, rng)
    expected = R.conv2d_forward(*as64(x, weight, bias), **params)
    assert_close(conv2d_forward(x, weight, bias, **params), expected, dtype)


@pytest.mark.parametrize("case, dtype", GRID_PARAMS)
def test_conv2d_backward_input_matches_reference(case, dtype, rng):
    x, weight, _, grad_out, params = make_inputs(case, dtype, rng)
    expected = R.conv2d_backward_input(*as64(grad_out, weight), x.shape, **params)
    assert_close(conv2d_backward_input(grad_out, weight, x.shape, **params), expected, dtype)


@pytest.mark.parametrize("case, dtype", GRID_PARAMS)
def test_conv2d_backward_weight_matches_reference(case, dtype, rng):
    x, weight, _, grad_out, params = make_inputs(case, dtype, rng)
    expected = R.conv2d_backward_weight(*as64(grad_out, x), weight.shape, **params)
    assert_close(conv2d_backward_weight(grad_out, x, weight.shape, **params), expected, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("grad_out_shape", [(1, 4, 7, 9), (3, 6, 8, 8), (2, 1, 1, 1), (3, 5, 1, 11)])
def test_conv2d_backward_bias_sums_grad_out_over_batch_and_pixels(grad_out_shape, dtype, rng):
    grad_out = rng.standard_normal(grad_out_shape).astype(dtype)
    grad_bias = conv2d_backward_bias(grad_out)
    assert grad_bias.shape == (grad_out_shape[1],)
    assert_close(grad_bias, R.conv2d_backward_bias(grad_out.astype(np.float64)), dtype)
    # the definition, channel by channel
    for o in range(grad_out_shape[1]):
        assert grad_bias[o] == pytest.approx(float(grad_out[:, o].astype(np.float64).sum()), rel=1e-5, abs=1e-5)


@pytest.mark.nojit
def test_conv2d_forward_3x3_padding1_matches_reference_tiny():
    """1x2x5x5 through the im2col path: small enough to run as plain Python (NUMBA_DISABLE_JIT=1)."""
    rng = np.random.default_rng(0)
    x, weight, bias = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    assert_close(conv2d_forward(x, weight, bias, padding=1, stride=(1, 2)),
                 R.conv2d_forward(x, weight, bias, padding=1, stride=(1, 2)), np.float64)
    grad_out = rng.standard_normal((1, 3, 5, 3))
    assert_close(conv2d_backward_input(grad_out, weight, x.shape, padding=1, stride=(1, 2)),
                 R.conv2d_backward_input(grad_out, weight, x.shape, padding=1, stride=(1, 2)), np.float64)
    assert_close(conv2d_backward_weight(grad_out, x, weight.shape, padding=1, stride=(1, 2)),
                 R.conv2d_backward_weight(grad_out, x, weight.shape, padding=1, stride=(1, 2)), np.float64)


# ----------------------------------------------------------------------------------------------------
# Dispatch to the specialised kernels, and the im2col path on its own
# ----------------------------------------------------------------------------------------------------
@pytest.fixture
def im2col_forbidden(monkeypatch):
    """Make the im2col path fail loudly: a test using this fixture proves the call was handed over."""
    def forbidden(*args, **kwargs):
        raise AssertionError("conv2d took the im2col path instead of handing the call over")
    monkeypatch.setattr(conv2d, "_im2col", forbidden)
    monkeypatch.setattr(conv2d, "_col2im", forbidden)


@pytest.fixture
def im2col_calls(monkeypatch):
    """Count the calls of the im2col / col2im helpers (they still run)."""
    calls = {"im2col": 0, "col2im": 0}
    im2col, col2im = conv2d._im2col, conv2d._col2im

    def counting_im2col(*args):
        calls["im2col"] += 1
        return im2col(*args)

    def counting_col2im(*args):
        calls["col2im"] += 1
        return col2im(*args)
    monkeypatch.setattr(conv2d, "_im2col", counting_im2col)
    monkeypatch.setattr(conv2d, "_col2im", counting_col2im)
    return calls


@pytest.mark.parametrize("stride, padding, dilation, multiplier, kernel", [
    (1, 1, 1, 1, (3, 3)),        # register-row fast path
    (2, 2, 1, 2, (5, 5)),        # fast path, channel multiplier 2
    ((2, 1), 1, (1, 2), 1, (3, 3)),   # generic depthwise path
    (3, 0, 2, 2, (1, 3)),
], ids=["3x3_s1_fast", "5x5_s2_multiplier2_fast", "3x3_s2x1_generic", "1x3_s3_multiplier2_generic"])
def test_conv2d_with_groups_equal_channels_is_depthwise(stride, padding, dilation, multiplier, kernel, rng,
                                                        im2col_forbidden):
    """``groups == C_in`` runs the depthwise kernels: bit-identical results, im2col never called."""
    x = rng.standard_normal((2, 3, 9, 8))
    weight = rng.standard_normal((3 * multiplier, 1, *kernel))
    bias = rng.standard_normal(3 * multiplier)
    params = dict(stride=stride, padding=padding, dilation=dilation)
    y = conv2d_forward(x, weight, bias, groups=3, **params)
    np.testing.assert_array_equal(y, depthwise_conv2d_forward(x, weight, bias, **params))
    grad_out = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(conv2d_backward_input(grad_out, weight, x.shape, groups=3, **params),
                                  depthwise_conv2d_backward_input(grad_out, weight, x.shape, **params))
    np.testing.assert_array_equal(conv2d_backward_weight(grad_out, x, weight.shape, groups=3, **params),
                                  depthwise_conv2d_backward_weight(grad_out, x, weight.shape, **params))


@pytest.mark.parametrize("x_shape, weight_shape, params, groups", [
    ((2, 6, 9, 8), (6, 1, 3, 3), dict(padding=1), 6),                    # depthwise, small plane: fused
    ((1, 3, 40, 33), (6, 1, 5, 5), dict(stride=2, padding=2), 3),        # depthwise, plane loops
    ((2, 6, 5, 7), (4, 3, 1, 1), dict(), 2),                             # pointwise
    ((2, 4, 7, 6), (6, 2, 3, 3), dict(stride=2, padding=1, dilation=(1, 2)), 2),   # im2col
], ids=["depthwise_channels_last", "depthwise_planes", "pointwise", "im2col"])
def test_conv2d_backward_returns_both_gradients_bit_identical_to_the_separate_functions(
        x_shape, weight_shape, params, groups, rng):
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(weight_shape)
    grad_out = rng.standard_normal(conv2d_forward(x, weight, groups=groups, **params).shape)
    grad_x, grad_weight = kernels.conv2d_backward(grad_out, x, weight, groups=groups, **params)
    np.testing.assert_array_equal(grad_x, conv2d_backward_input(grad_out, weight, x.shape, groups=groups, **params))
    np.testing.assert_array_equal(grad_weight,
                                  conv2d_backward_weight(grad_out, x, weight.shape, groups=groups, **params))


def test_conv2d_backward_checks_its_arguments_like_the_separate_functions(rng):
    x, weight = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((4, 1, 3, 3))
    with pytest.raises(ValueError, match="grad_out"):
        kernels.conv2d_backward(np.zeros((2, 4, 5, 5)), x, weight, padding=1, groups=4)
    with pytest.raises(TypeError, match="dtype"):
        kernels.conv2d_backward(np.zeros((2, 4, 6, 6)), x, weight.astype(np.float32), padding=1, groups=4)


@pytest.mark.parametrize("groups, dilation", [(1, 1), (2, 1), (3, 2), (6, (2, 3))])
def test_conv2d_1x1_at_stride1_without_padding_is_pointwise(groups, dilation, rng, im2col_forbidden):
    """A 1x1 kernel at stride 1 and padding 0 is a pointwise conv (dilation does not matter for one tap).

    ``groups == C_in`` with a 1x1 kernel goes to depthwise first; both specialised kernels are exact.
    """
    x = rng.standard_normal((2, 6, 5, 7))
    weight = rng.standard_normal((6, 6 // groups, 1, 1))
    bias = rng.standard_normal(6)
    y = conv2d_forward(x, weight, bias, dilation=dilation, groups=groups)
    grad_out = rng.standard_normal(y.shape)
    grad_x = conv2d_backward_input(grad_out, weight, x.shape, dilation=dilation, groups=groups)
    grad_w = conv2d_backward_weight(grad_out, x, weight.shape, dilation=dilation, groups=groups)
    if groups == 6:   # depthwise wins
        np.testing.assert_array_equal(y, depthwise_conv2d_forward(x, weight, bias, dilation=dilation))
    else:
        np.testing.assert_array_equal(y, pointwise_conv2d_forward(x, weight, bias, groups=groups))
        np.testing.assert_array_equal(grad_x, pointwise_conv2d_backward_input(grad_out, weight, x.shape, groups))
        np.testing.assert_array_equal(grad_w, pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups))
    assert_close(y, R.conv2d_forward(x, weight, bias, dilation=dilation, groups=groups), np.float64)
    assert_close(grad_x, R.conv2d_backward_input(grad_out, weight, x.shape, dilation=dilation, groups=groups),
                 np.float64)
    assert_close(grad_w, R.conv2d_backward_weight(grad_out, x, weight.shape, dilation=dilation, groups=groups),
                 np.float64)


@pytest.mark.parametrize("params", [dict(stride=2), dict(padding=1), dict(stride=(1, 2), padding=(0, 1))],
                         ids=["stride2", "padding1", "stride1x2-padding0x1"])
def test_conv2d_1x1_with_stride_or_padding_takes_im2col_path_and_matches_reference(params, rng, im2col_calls):
    x = rng.standard_normal((2, 4, 5, 6))
    weight = rng.standard_normal((6, 2, 1, 1))
    y = conv2d_forward(x, weight, groups=2, **params)
    grad_out = rng.standard_normal(y.shape)
    grad_x = conv2d_backward_input(grad_out, weight, x.shape, groups=2, **params)
    grad_w = conv2d_backward_weight(grad_out, x, weight.shape, groups=2, **params)
    assert im2col_calls == {"im2col": 2 * x.shape[0], "col2im": x.shape[0]}   # forward + weight; input
    assert_close(y, R.conv2d_forward(x, weight, groups=2, **params), np.float64)
    assert_close(grad_x, R.conv2d_backward_input(grad_out, weight, x.shape, groups=2, **params), np.float64)
    assert_close(grad_w, R.conv2d_backward_weight(grad_out, x, weight.shape, groups=2, **params), np.float64)


# configurations the public function would hand to depthwise / pointwise, plus ordinary grouped ones
FORCED_IM2COL_CASES = {
    "depthwise_shaped_dilation2_multiplier2": ((2, 3, 9, 8), (6, 1, 3, 3), dict(groups=3, padding=2, dilation=2)),
    "depthwise_shaped_5x5_stride2": ((1, 4, 9, 9), (4, 1, 5, 5), dict(groups=4, stride=2, padding=1)),
    "depthwise_shaped_nonsquare": ((3, 2, 7, 9), (4, 1, 3, 5), dict(groups=2, stride=(2, 1), padding=(2, 1),
                                                                    dilation=(1, 2))),
    "pointwise_shaped_groups2": ((2, 4, 5, 6), (6, 2, 1, 1), dict(groups=2)),
    "groups2_dilation2x1": ((2, 4, 8, 7), (6, 2, 3, 2), dict(groups=2, dilation=(2, 1), padding=(1, 0))),
    "groups3_dilation2_stride3": ((1, 6, 11, 10), (3, 2, 3, 3), dict(groups=3, dilation=2, stride=3, padding=2)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(FORCED_IM2COL_CASES))
def test_im2col_path_matches_reference_for_grouped_and_dilated_convolutions(name, dtype, rng, monkeypatch,
                                                                           im2col_calls):
    """The general path alone (dispatch switched off), including arguments it normally hands over."""
    monkeypatch.setattr(conv2d, "_is_depthwise", lambda geometry: False)
    monkeypatch.setattr(conv2d, "_is_pointwise", lambda geometry: False)
    x_shape, weight_shape, params = FORCED_IM2COL_CASES[name]
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = rng.standard_normal(weight_shape[0]).astype(dtype)
    y = conv2d_forward(x, weight, bias, **params)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    grad_x = conv2d_backward_input(grad_out, weight, x_shape, **params)
    grad_w = conv2d_backward_weight(grad_out, x, weight_shape, **params)
    assert im2col_calls == {"im2col": 2 * x_shape[0], "col2im": x_shape[0]}
    x64, weight64, bias64, grad_out64 = as64(x, weight, bias, grad_out)
    assert_close(y, R.conv2d_forward(x64, weight64, bias64, **params), dtype)
    assert_close(grad_x, R.conv2d_backward_input(grad_out64, weight64, x_shape, **params), dtype)
    assert_close(grad_w, R.conv2d_backward_weight(grad_out64, x64, weight_shape, **params), dtype)


def test_im2col_backward_input_leaves_zero_where_no_window_reaches(rng):
    """stride 3 with a 2x2 kernel skips every third row and column: their gradient is exactly 0."""
    weight = rng.standard_normal((2, 3, 2, 2))
    grad_out = rng.standard_normal((1, 2, 3, 3))
    grad_x = conv2d_backward_input(grad_out, weight, (1, 3, 9, 9), stride=3)
    assert np.all(grad_x[:, :, 2::3, :] == 0.0) and np.all(grad_x[:, :, :, 2::3] == 0.0)
    assert np.all(grad_x[:, :, 0::3, 0::3] != 0.0)


# ----------------------------------------------------------------------------------------------------
# Gradients: finite differences and adjoint identities (float64)
# ----------------------------------------------------------------------------------------------------
GRADIENT_CASES = {
    "im2col_groups1_stride2_pad1": ((2, 3, 7, 6), (4, 3, 3, 3), dict(stride=2, padding=1)),
    "im2col_groups2_dilation2_nonsquare": ((1, 4, 8, 9), (6, 2, 3, 5), dict(groups=2, dilation=(2, 1),
                                                                            padding=(2, 1), stride=(1, 2))),
    "im2col_stride3_uncovered_pixels": ((2, 2, 8, 8), (3, 2, 2, 2), dict(stride=3)),
    "dispatched_depthwise": ((2, 3, 7, 7), (6, 1, 3, 3), dict(groups=3, padding=1)),
    "dispatched_pointwise": ((2, 4, 5, 5), (6, 2, 1, 1), dict(groups=2)),
}


def gradient_inputs(name, rng):
    x_shape, weight_shape, params = GRADIENT_CASES[name]
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(weight_shape)
    bias = rng.standard_normal(weight_shape[0])
    grad_out = rng.standard_normal(conv2d_forward(x, weight, **params).shape)
    return x, weight, bias, grad_out, params


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_conv2d_backward_input_passes_finite_difference_check(name, rng):
    x, weight, bias, grad_out, params = gradient_inputs(name, rng)
    loss = lambda x_: np.vdot(grad_out, conv2d_forward(x_, weight, bias, **params))   # noqa: E731
    assert_gradcheck(loss, x, conv2d_backward_input(grad_out, weight, x.shape, **params), rng)


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_conv2d_backward_weight_passes_finite_difference_check(name, rng):
    x, weight, bias, grad_out, params = gradient_inputs(name, rng)
    loss = lambda w_: np.vdot(grad_out, conv2d_forward(x, w_, bias, **params))   # noqa: E731
    assert_gradcheck(loss, weight, conv2d_backward_weight(grad_out, x, weight.shape, **params), rng)


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_conv2d_backward_bias_passes_finite_difference_check(name, rng):
    x, weight, bias, grad_out, params = gradient_inputs(name, rng)
    loss = lambda b_: np.vdot(grad_out, conv2d_forward(x, weight, b_, **params))   # noqa: E731
    assert_gradcheck(loss, bias, conv2d_backward_bias(grad_out), rng)


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_conv2d_backward_input_is_adjoint_of_forward(name, rng):
    """``vdot(conv(x; w), g) == vdot(x, backward_input(g; w))`` (no bias: the map must be linear)."""
    x, weight, _, grad_out, params = gradient_inputs(name, rng)
    assert_vdot_equal(conv2d_forward(x, weight, **params), grad_out,
                      x, conv2d_backward_input(grad_out, weight, x.shape, **params))


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_conv2d_backward_weight_is_adjoint_of_forward(name, rng):
    """``vdot(g, conv(x; w)) == vdot(w, backward_weight(g, x))`` (no bias)."""
    x, weight, _, grad_out, params = gradient_inputs(name, rng)
    assert_vdot_equal(grad_out, conv2d_forward(x, weight, **params),
                      weight, conv2d_backward_weight(grad_out, x, weight.shape, **params))


# ----------------------------------------------------------------------------------------------------
# Determinism and memory layouts
# ----------------------------------------------------------------------------------------------------
def im2col_inputs(rng, dtype=np.float32):
    x = rng.standard_normal((4, 6, 11, 10)).astype(dtype)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    params = dict(stride=(1, 2), padding=1, dilation=(2, 1), groups=2)
    grad_out = rng.standard_normal(conv2d_forward(x, weight, **params).shape).astype(dtype)
    return x, weight, grad_out, params


def test_conv2d_backward_weight_is_bit_identical_when_run_twice(rng):
    """Images are summed one at a time in a fixed order: no run-to-run noise."""
    x, weight, grad_out, params = im2col_inputs(rng)
    first = conv2d_backward_weight(grad_out, x, weight.shape, **params)
    second = conv2d_backward_weight(grad_out, x, weight.shape, **params)
    assert np.array_equal(first, second)


def test_conv2d_results_do_not_depend_on_numba_thread_count(rng, restore_numba_threads):
    """The im2col path never splits a sum across numba threads (im2col and col2im are serial loops, and
    the depthwise kernels it hands over to give each thread whole planes), so 1 thread and all threads
    give bit-identical results. The GEMMs are NumPy's BLAS, which numba's thread count does not touch."""
    x, weight, grad_out, params = im2col_inputs(rng)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        results.append((conv2d_forward(x, weight, **params),
                        conv2d_backward_input(grad_out, weight, x.shape, **params),
                        conv2d_backward_weight(grad_out, x, weight.shape, **params)))
    for one_thread, all_threads in zip(*results):
        assert np.array_equal(one_thread, all_threads)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("groups", [1, 3], ids=["im2col", "depthwise"])
def test_conv2d_non_contiguous_inputs_give_same_result_as_contiguous(layout, groups, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    weight = rng.standard_normal((3, 3 // groups, 3, 2))
    bias = rng.standard_normal(3)
    params = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=groups)
    grad_out = rng.standard_normal(conv2d_forward(x, weight, **params).shape)
    x_view, weight_view, bias_view, grad_out_view = (relayout(a, layout) for a in (x, weight, bias, grad_out))
    assert not x_view.flags.c_contiguous and not grad_out_view.flags.c_contiguous
    np.testing.assert_array_equal(conv2d_forward(x_view, weight_view, bias_view, **params),
                                  conv2d_forward(x, weight, bias, **params))
    np.testing.assert_array_equal(conv2d_backward_input(grad_out_view, weight_view, x.shape, **params),
                                  conv2d_backward_input(grad_out, weight, x.shape, **params))
    np.testing.assert_array_equal(conv2d_backward_weight(grad_out_view, x_view, weight.shape, **params),
                                  conv2d_backward_weight(grad_out, x, weight.shape, **params))
    np.testing.assert_array_equal(conv2d_backward_bias(grad_out_view), conv2d_backward_bias(grad_out))


def test_conv2d_does_not_modify_its_inputs(rng):
    x, weight, grad_out, params = im2col_inputs(rng, np.float64)
    copies = [a.copy() for a in (x, weight, grad_out)]
    conv2d_forward(x, weight, **params)
    conv2d_backward_input(grad_out, weight, x.shape, **params)
    conv2d_backward_weight(grad_out, x, weight.shape, **params)
    for array, copy in zip((x, weight, grad_out), copies):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("groups", [1, 2])
def test_im2col_path_in_chunks_of_images_matches_the_reference(groups, rng, monkeypatch):
    """With ``COLS_BYTES`` set so that two images fit, a batch of five goes through in chunks of 2, 2 and 1:
    forward and both gradients still agree with the reference."""
    from kernels import conv2d as C2
    x = rng.standard_normal((5, 4, 6, 7))
    weight = rng.standard_normal((6, 4 // groups, 3, 3))
    options = dict(stride=1, padding=1, groups=groups)
    one_image = 4 * 9 * 6 * 7 * 8                                     # bytes of one image's float64 cols
    monkeypatch.setattr(C2, "COLS_BYTES", 2 * one_image)
    y = C2.conv2d_forward(x, weight, **options)
    grad_out = rng.standard_normal(y.shape)
    assert_close(y, R.conv2d_forward(x, weight, **options), np.float64)
    assert_close(C2.conv2d_backward_input(grad_out, weight, x.shape, **options),
                 R.conv2d_backward_input(grad_out, weight, x.shape, **options), np.float64)
    assert_close(C2.conv2d_backward_weight(grad_out, x, weight.shape, **options),
                 R.conv2d_backward_weight(grad_out, x, weight.shape, **options), np.float64)


def test_a_large_image_is_unfolded_on_numbas_threads_with_the_serial_kernels_bits(monkeypatch):
    # a 224 x 224 stem's columns hold 27 * 112 * 112 values, above PARALLEL_MIN_VALUES: the parallel
    # im2col; a 32 x 32 stem's stay serial. Either way the same columns, value for value. (The stem
    # kernel, which takes such a convolution from conv2d_forward, is turned off here.)
    from kernels import _im2col, stem
    monkeypatch.setattr(stem, "STEM_MAX_INPUT_CHANNELS", 0)
    rng = np.random.default_rng(5)
    image = rng.standard_normal((3, 224, 224)).astype(np.float32)
    serial, parallel = np.empty((27, 112, 112), np.float32), np.empty((27, 112, 112), np.float32)
    _im2col.im2col_kernel(image, serial, 3, 3, 2, 2, 1, 1, 1, 1)
    _im2col.im2col_parallel_kernel(image, parallel, 3, 3, 2, 2, 1, 1, 1, 1)
    np.testing.assert_array_equal(parallel, serial)
    used = []
    for name in ("im2col_kernel", "im2col_parallel_kernel"):
        real = getattr(conv2d, name)
        monkeypatch.setattr(conv2d, name, lambda *args, real=real, name=name: used.append(name) or real(*args))
    weight = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    for size in (224, 32):
        x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        y = conv2d_forward(x, weight, stride=2, padding=1)
        expected = R.conv2d_forward(x.astype(np.float64), weight.astype(np.float64), stride=2, padding=1)
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert used == ["im2col_parallel_kernel", "im2col_kernel"]
