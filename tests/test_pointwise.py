"""The pointwise (1x1) convolution kernels (``kernels/pointwise.py``) against ``kernels.reference``.

What is checked:

* ``pointwise_conv2d_forward``, ``_backward_input`` and ``_backward_weight`` equal the reference on a
  grid: groups 1/2/3/6 (6 = C_in: a grouped 1x1 with one channel per group), C_out/groups 1 and 2,
  batch 1 and 3, image sizes 7x9, 8x8, 1x1 and 1x11, with and without bias, float64 and float32;
* a 1x1 convolution is a matrix product per pixel (checked by hand on one pixel);
* gradients: finite differences and adjoint identities (float64);
* the weight gradient equals the reference however the images are chunked into matrix products, and
  is bit-identical across runs (chunks are added in a fixed order);
* non-contiguous inputs give the same result as contiguous copies.

Tolerances (``helpers.assert_close``, relative to the largest expected magnitude): float64 1e-10, float32
1e-4 against a float64 reference computed from the same float32 inputs (sums of at most C_in/groups = 6
products in the forward pass, N*H*W <= 297 in the weight gradient).
"""
import itertools

import numpy as np
import pytest

from helpers import LAYOUTS, as64, assert_close, assert_gradcheck, assert_vdot_equal, relayout
from kernels import pointwise as P, reference as R
from kernels.pointwise import (pointwise_conv2d_backward_input, pointwise_conv2d_backward_weight,
                               pointwise_conv2d_forward)

C_IN = 6
GROUPS = [1, 2, 3, 6]
OUT_PER_GROUP = [1, 2]
BATCHES = [1, 3]
SIZES = [(7, 9), (8, 8), (1, 1), (1, 11)]


def build_grid():
    """Full product in float64 (64 cases, with bias on every other one); every 3rd case in float32."""
    float64, float32 = [], []
    for i, (groups, out_per_group, batch, size) in enumerate(itertools.product(GROUPS, OUT_PER_GROUP, BATCHES,
                                                                               SIZES)):
        C_out = groups * out_per_group
        case = ((batch, C_IN, *size), (C_out, C_IN // groups, 1, 1), groups, i % 2 == 1)
        name = f"g{groups}-co{C_out}-n{batch}-{size[0]}x{size[1]}" + ("-bias" if i % 2 else "")
        float64.append(pytest.param(*case, np.float64, id=name + "-float64"))
        if i % 3 == 0:
            float32.append(pytest.param(*case, np.float32, id=name + "-float32"))
    return float64 + float32


GRID = build_grid()


def make_inputs(x_shape, weight_shape, with_bias, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = rng.standard_normal(weight_shape[0]).astype(dtype) if with_bias else None
    grad_out = rng.standard_normal((x_shape[0], weight_shape[0], *x_shape[2:])).astype(dtype)
    return x, weight, bias, grad_out


def test_grid_covers_groups_sizes_batches_and_dtypes():
    values = [p.values for p in GRID]
    assert {v[2] for v in values} == set(GROUPS)
    assert {v[0][2:] for v in values} == set(SIZES)
    assert {v[0][0] for v in values} == set(BATCHES)
    assert {(v[2], v[4]) for v in values} == set(itertools.product(GROUPS, [np.float64, np.float32]))
    assert {v[3] for v in values} == {True, False}


@pytest.mark.parametrize("x_shape, weight_shape, groups, with_bias, dtype", GRID)
def test_pointwise_forward_matches_reference(x_shape, weight_shape, groups, with_bias, dtype, rng):
    x, weight, bias, _ = make_inputs(x_shape, weight_shape, with_bias, dtype, rng)
    expected = R.pointwise_conv2d_forward(*as64(x, weight, bias), groups=groups)
    assert_close(pointwise_conv2d_forward(x, weight, bias, groups=groups), expected, dtype)


@pytest.mark.parametrize("x_shape, weight_shape, groups, with_bias, dtype", GRID)
def test_pointwise_backward_input_matches_reference(x_shape, weight_shape, groups, with_bias, dtype, rng):
    _, weight, _, grad_out = make_inputs(x_shape, weight_shape, with_bias, dtype, rng)
    expected = R.pointwise_conv2d_backward_input(*as64(grad_out, weight), x_shape, groups=groups)
    assert_close(pointwise_conv2d_backward_input(grad_out, weight, x_shape, groups=groups), expected, dtype)


@pytest.mark.parametrize("x_shape, weight_shape, groups, with_bias, dtype", GRID)
def test_pointwise_backward_weight_matches_reference(x_shape, weight_shape, groups, with_bias, dtype, rng):
    x, _, _, grad_out = make_inputs(x_shape, weight_shape, with_bias, dtype, rng)
    expected = R.pointwise_conv2d_backward_weight(*as64(grad_out, x), weight_shape, groups=groups)
    assert_close(pointwise_conv2d_backward_weight(grad_out, x, weight_shape, groups=groups), expected, dtype)


@pytest.mark.nojit
def test_pointwise_forward_and_backwards_match_reference_tiny():
    """1x2x5x5 -> 3 channels (no numba inside, but kept in the NUMBA_DISABLE_JIT=1 subset as well)."""
    rng = np.random.default_rng(0)
    x, weight, bias = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 1, 1)), rng.standard_normal(3)
    grad_out = rng.standard_normal((1, 3, 5, 5))
    assert_close(pointwise_conv2d_forward(x, weight, bias), R.pointwise_conv2d_forward(x, weight, bias), np.float64)
    assert_close(pointwise_conv2d_backward_input(grad_out, weight, x.shape),
                 R.pointwise_conv2d_backward_input(grad_out, weight, x.shape), np.float64)
    assert_close(pointwise_conv2d_backward_weight(grad_out, x, weight.shape),
                 R.pointwise_conv2d_backward_weight(grad_out, x, weight.shape), np.float64)


def test_pointwise_forward_is_a_matrix_product_at_every_pixel(rng):
    """``y[n, :, i, j] = W @ x[n, :, i, j] + b``: the teaching statement, checked pixel by pixel."""
    x = rng.standard_normal((2, 4, 3, 5))
    weight = rng.standard_normal((6, 4, 1, 1))
    bias = rng.standard_normal(6)
    y = pointwise_conv2d_forward(x, weight, bias)
    for n, i, j in itertools.product(range(2), range(3), range(5)):
        np.testing.assert_allclose(y[n, :, i, j], weight[:, :, 0, 0] @ x[n, :, i, j] + bias, rtol=1e-12, atol=1e-12)


def test_pointwise_groups_do_not_mix_channels_across_groups(rng):
    """ShuffleNet's grouped 1x1: output group g depends on input group g only."""
    x = rng.standard_normal((1, 6, 4, 4))
    weight = rng.standard_normal((4, 3, 1, 1))
    y = pointwise_conv2d_forward(x, weight, groups=2)
    x_changed = x.copy()
    x_changed[:, 3:] += 1.0                          # touch input group 1 only
    y_changed = pointwise_conv2d_forward(x_changed, weight, groups=2)
    np.testing.assert_array_equal(y_changed[:, :2], y[:, :2])      # output group 0 unchanged
    assert np.all(y_changed[:, 2:] != y[:, 2:])


@pytest.mark.parametrize("gemm_columns", [1, 12, 13, 10**6])
@pytest.mark.parametrize("groups", [1, 2])
def test_pointwise_backward_weight_is_the_same_per_image_or_side_by_side(gemm_columns, groups, rng, monkeypatch):
    """The weight gradient sums over images either one product per image (maps of at least
    ``_GEMM_COLUMNS`` pixels) or with every image's pixels side by side (smaller maps); both give the
    reference's answer."""
    monkeypatch.setattr(P, "_GEMM_COLUMNS", gemm_columns)
    x, weight, _, grad_out = make_inputs((5, 4, 3, 4), (6, 4 // groups, 1, 1), False, np.float64, rng)   # 12 pixels
    assert_close(pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups=groups),
                 R.pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups=groups), np.float64)


@pytest.mark.parametrize("plane", [(1, 1), (2, 2), (2, 3), (4, 4)])
@pytest.mark.parametrize("groups", [1, 3])
def test_pointwise_small_maps_take_each_of_their_paths_correctly(plane, groups, rng):
    """1 x 1 maps read the images as rows (views, no copy), 2 x 2 and 2 x 3 lay them side by side, 4 x 4
    take a product per image: forward and both gradients agree with the reference on each."""
    x, weight, _, grad_out = make_inputs((7, 6, *plane), (9, 6 // groups, 1, 1), False, np.float64, rng)
    assert_close(pointwise_conv2d_forward(x, weight, groups=groups),
                 R.pointwise_conv2d_forward(x, weight, groups=groups), np.float64)
    assert_close(pointwise_conv2d_backward_input(grad_out, weight, x.shape, groups=groups),
                 R.pointwise_conv2d_backward_input(grad_out, weight, x.shape, groups=groups), np.float64)
    assert_close(pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups=groups),
                 R.pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups=groups), np.float64)


# ----------------------------------------------------------------------------------------------------
# Gradients: finite differences and adjoint identities (float64)
# ----------------------------------------------------------------------------------------------------
GRADIENT_CASES = {
    "groups1": ((2, 3, 5, 4), (4, 3, 1, 1), 1),
    "groups2_expand": ((3, 4, 3, 3), (6, 2, 1, 1), 2),
    "groups3_project": ((1, 6, 4, 7), (3, 2, 1, 1), 3),
    "one_pixel_batch3": ((3, 5, 1, 1), (2, 5, 1, 1), 1),
}


def gradient_inputs(name, rng):
    x_shape, weight_shape, groups = GRADIENT_CASES[name]
    x, weight, bias, grad_out = make_inputs(x_shape, weight_shape, True, np.float64, rng)
    return x, weight, bias, grad_out, groups


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_pointwise_backward_input_passes_finite_difference_check(name, rng):
    x, weight, bias, grad_out, groups = gradient_inputs(name, rng)
    loss = lambda x_: np.vdot(grad_out, pointwise_conv2d_forward(x_, weight, bias, groups))   # noqa: E731
    assert_gradcheck(loss, x, pointwise_conv2d_backward_input(grad_out, weight, x.shape, groups), rng)


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_pointwise_backward_weight_passes_finite_difference_check(name, rng):
    x, weight, bias, grad_out, groups = gradient_inputs(name, rng)
    loss = lambda w_: np.vdot(grad_out, pointwise_conv2d_forward(x, w_, bias, groups))   # noqa: E731
    assert_gradcheck(loss, weight, pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups), rng)


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_pointwise_backward_input_is_adjoint_of_forward(name, rng):
    """``vdot(conv(x; w), g) == vdot(x, backward_input(g; w))`` (no bias: the map must be linear)."""
    x, weight, _, grad_out, groups = gradient_inputs(name, rng)
    assert_vdot_equal(pointwise_conv2d_forward(x, weight, groups=groups), grad_out,
                      x, pointwise_conv2d_backward_input(grad_out, weight, x.shape, groups))


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_pointwise_backward_weight_is_adjoint_of_forward(name, rng):
    """``vdot(g, conv(x; w)) == vdot(w, backward_weight(g, x))`` (no bias)."""
    x, weight, _, grad_out, groups = gradient_inputs(name, rng)
    assert_vdot_equal(grad_out, pointwise_conv2d_forward(x, weight, groups=groups),
                      weight, pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups))


# ----------------------------------------------------------------------------------------------------
# Determinism and memory layouts
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("groups", [1, 3])
def test_pointwise_backward_weight_is_bit_identical_when_run_twice(groups, rng):
    x, weight, _, grad_out = make_inputs((4, 6, 11, 10), (6, 6 // groups, 1, 1), False, np.float32, rng)
    first = pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups)
    second = pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups)
    assert np.array_equal(first, second)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("groups", [1, 2])
def test_pointwise_non_contiguous_inputs_give_same_result_as_contiguous(layout, groups, rng):
    x, weight, bias, grad_out = make_inputs((2, 4, 5, 6), (6, 4 // groups, 1, 1), True, np.float64, rng)
    x_view, weight_view, bias_view, grad_out_view = (relayout(a, layout) for a in (x, weight, bias, grad_out))
    assert not x_view.flags.c_contiguous and not grad_out_view.flags.c_contiguous
    np.testing.assert_array_equal(pointwise_conv2d_forward(x_view, weight_view, bias_view, groups),
                                  pointwise_conv2d_forward(x, weight, bias, groups))
    np.testing.assert_array_equal(pointwise_conv2d_backward_input(grad_out_view, weight_view, x.shape, groups),
                                  pointwise_conv2d_backward_input(grad_out, weight, x.shape, groups))
    np.testing.assert_array_equal(pointwise_conv2d_backward_weight(grad_out_view, x_view, weight.shape, groups),
                                  pointwise_conv2d_backward_weight(grad_out, x, weight.shape, groups))


@pytest.mark.parametrize("x_shape, weight_shape, groups, with_bias, dtype", GRID)
def test_a_prepared_forward_gives_the_bits_of_the_forward(x_shape, weight_shape, groups, with_bias, dtype, rng):
    """``prepare_forward`` (used by ``nn.freeze``): the same kernel call with its decisions made once, or None
    where the forward takes another path (1 x 1 maps: images as rows; one image of one output channel per
    group: a matrix-vector product)."""
    from kernels.conv2d import _geometry
    from kernels._jit import one_blas_thread

    x, weight, _, _ = make_inputs(x_shape, weight_shape, False, dtype, rng)
    geometry = _geometry(x.shape, weight.shape, 1, 0, 1, groups)
    C_out = weight_shape[0]
    epilogue = (rng.uniform(0.5, 2, C_out).astype(dtype), rng.standard_normal(C_out).astype(dtype), 0.0, np.inf,
                with_bias)                                      # the grid's bias flag picks hard swish here
    forward = P.prepare_forward(weight, geometry, epilogue)
    if x_shape[2:] == (1, 1) or x_shape[0] * groups == 1 and C_out == groups:
        assert forward is None
        return
    with one_blas_thread():
        np.testing.assert_array_equal(forward(x), P._forward(x, weight, None, geometry, epilogue))
