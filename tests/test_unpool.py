"""Max unpooling: ``kernels.max_unpool2d_*``, their NumPy twins, ``nn.MaxPool2d(return_indices=True)`` and
``nn.MaxUnpool2d``, against PyTorch (committed fixtures ``tests/fixtures/unpool.npz`` made by
``tools/fixtures_unpool.py``, and live random configurations when torch is installed).

Unpooling only moves numbers (a scatter forward, a gather backward), so every comparison is exact, in
float64 and float32. Also: gradchecks (the backward is the adjoint of the forward when indices do not
repeat), PyTorch's output-size rule and its errors, and clear errors for bad kernel arguments.
"""
import json
import pathlib

import numba
import numpy as np
import pytest

import kernels
from helpers import assert_generator_reproduces_fixture, assert_gradcheck, assert_vdot_equal
from kernels import reference as R
from tinycnn import nn

FIXTURE_PATH = pathlib.Path(__file__).resolve().parent / "fixtures" / "unpool.npz"
with np.load(FIXTURE_PATH) as _npz:
    FIXTURES = {key: _npz[key] for key in _npz.files}
CONFIGS = json.loads(str(FIXTURES["configs_json"]))
implementations = pytest.mark.parametrize("implementation", [kernels, R], ids=["fast", "reference"])
dtypes = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])


def fixture(case):
    prefix = f"unpool/{case}/"
    return {key.removeprefix(prefix): value for key, value in FIXTURES.items() if key.startswith(prefix)}


# ----------------------------------------------------------------------------------------------------
# Layers and kernels against the PyTorch fixtures
# ----------------------------------------------------------------------------------------------------
@dtypes
@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_pool_with_indices_then_unpool_match_pytorch_exactly(case, dtype):
    arrays, config = fixture(case), CONFIGS[case]
    pooled, indices = nn.MaxPool2d(**config["pool"], return_indices=True)(arrays["x"].astype(dtype))
    np.testing.assert_array_equal(indices, arrays["indices"])
    np.testing.assert_array_equal(pooled, arrays["pooled"].astype(dtype))
    unpool = nn.MaxUnpool2d(**config["unpool"])
    y = unpool(pooled, indices, output_size=config["output_size"])
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, arrays["y"].astype(dtype))
    np.testing.assert_array_equal(unpool.backward(arrays["grad_y"].astype(dtype)), arrays["grad_pooled"].astype(dtype))


def test_fixtures_include_repeated_indices():
    """Overlapping windows with tied maxima give two outputs one index: forward keeps one, backward reads both."""
    indices = fixture("overlapping_ties_kernel3_stride1")["indices"]
    planes = indices.reshape(-1, indices.shape[2] * indices.shape[3])
    assert any(len(np.unique(plane)) < plane.size for plane in planes)


@implementations
@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_kernels_match_pytorch_fixture(implementation, case):
    arrays = fixture(case)
    y = implementation.max_unpool2d_forward(arrays["pooled"], arrays["indices"], arrays["y"].shape[2:])
    np.testing.assert_array_equal(y, arrays["y"])
    np.testing.assert_array_equal(implementation.max_unpool2d_backward(arrays["grad_y"], arrays["indices"]),
                                  arrays["grad_pooled"])


def test_committed_fixtures_match_what_the_generator_produces(tmp_path):
    assert_generator_reproduces_fixture("unpool", tmp_path, FIXTURES)


def test_matches_live_pytorch_on_random_configurations():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for _ in range(25):
        k = tuple(int(v) for v in rng.integers(1, 4, size=2))
        s = tuple(int(v) for v in rng.integers(1, 4, size=2))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        ceil_mode = bool(rng.integers(0, 2))
        x = rng.integers(-3, 4, (2, 2, *(int(v) for v in rng.integers(4, 9, size=2)))).astype(np.float64)
        pooled, indices = nn.MaxPool2d(k, s, p, return_indices=True, ceil_mode=ceil_mode)(x)
        pooled_t, indices_t = torch.nn.MaxPool2d(k, s, p, return_indices=True, ceil_mode=ceil_mode)(
            torch.from_numpy(x))
        np.testing.assert_array_equal(indices, indices_t.numpy())
        output_size = x.shape if rng.integers(0, 2) else None
        unpool = nn.MaxUnpool2d(k, s, p)
        pooled_t = pooled_t.detach().requires_grad_(True)
        try:
            y_t = torch.nn.MaxUnpool2d(k, s, p)(pooled_t, indices_t, output_size=output_size)
        except (RuntimeError, ValueError) as error:      # indices beyond the default size, or an invalid size
            assert "invalid" in str(error)
            with pytest.raises(ValueError):
                unpool(pooled, indices, output_size=output_size)
            continue
        y = unpool(pooled, indices, output_size=output_size)
        np.testing.assert_array_equal(y, y_t.detach().numpy())
        grad_y = rng.standard_normal(y.shape)
        y_t.backward(torch.from_numpy(grad_y))
        np.testing.assert_array_equal(unpool.backward(grad_y), pooled_t.grad.numpy())


# ----------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------
@implementations
def test_unpool_places_values_and_zeros(implementation):
    x = np.array([[[[5.0, 7.0]]]])
    indices = np.array([[[[4, 3]]]])
    y = implementation.max_unpool2d_forward(x, indices, (2, 3))
    np.testing.assert_array_equal(y[0, 0], [[0.0, 0.0, 0.0], [7.0, 5.0, 0.0]])


@pytest.mark.nojit
@implementations
def test_backward_is_the_adjoint_and_passes_gradcheck(implementation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6))
    pooled, indices = kernels.max_pool2d_forward(x, 2)          # non-overlapping: indices are distinct
    grad_y = rng.standard_normal(x.shape)
    y = implementation.max_unpool2d_forward(pooled, indices, (6, 6))
    grad_pooled = implementation.max_unpool2d_backward(grad_y, indices)
    assert_vdot_equal(y, grad_y, pooled, grad_pooled)
    assert_gradcheck(lambda p: np.vdot(grad_y, implementation.max_unpool2d_forward(p, indices, (6, 6))),
                     pooled, grad_pooled, rng)


def test_unpool_of_pool_keeps_the_maxima_only():
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 4)).astype(np.float32)
    pooled, indices = nn.MaxPool2d(2, return_indices=True)(x)
    y = nn.MaxUnpool2d(2)(pooled, indices)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])
    assert kept.sum() == pooled.size                              # one survivor per 2x2 window


def test_maxpool_return_indices_backward_still_takes_only_grad_y():
    layer = nn.MaxPool2d(2, return_indices=True)
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    y, _ = layer(x)
    grad_x = layer.backward(np.ones_like(y))
    assert grad_x[0, 0, 1, 1] == 1.0 and grad_x.sum() == 4.0


def test_repr_equals_pytorchs():
    torch = pytest.importorskip("torch")
    for args in [(2,), ((3, 2), 1, (1, 0))]:
        assert repr(nn.MaxUnpool2d(*args)) == repr(torch.nn.MaxUnpool2d(*args))
    assert repr(nn.MaxPool2d(2, return_indices=True)) == repr(torch.nn.MaxPool2d(2, return_indices=True))


def test_unpool_layer_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        nn.MaxUnpool2d(2).backward(np.ones((1, 1, 2, 2)))


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_size, match", [
    ((6, 10), r"invalid output_size \(6, 10\) \(dim 1 must be between 6 and 10, exclusive\)"),
    ((4, 8), r"dim 0 must be between 4 and 8"),
    ((6, 8, 1), r"2 or 4 elements"),
    ((6.0, 8), r"output_size must be \(H_out, W_out\) or \(N, C, H_out, W_out\) of ints"),
    (6, r"output_size must be a sequence"),
])
def test_unpool_layer_output_size_rule(output_size, match):
    pooled, indices = nn.MaxPool2d(2, return_indices=True)(np.ones((1, 1, 6, 8)))
    layer = nn.MaxUnpool2d(2)
    assert layer(pooled, indices, output_size=(7, 9)).shape == (1, 1, 7, 9)   # within the stride of 6x8
    with pytest.raises((ValueError, TypeError), match=match):
        layer(pooled, indices, output_size=output_size)


def unpool_arguments():
    return dict(x=np.ones((2, 3, 3, 4)), indices=np.zeros((2, 3, 3, 4), np.int64), output_size=(6, 8))


@implementations
@pytest.mark.parametrize("changes, error, match", [
    (dict(x=np.ones((3, 3, 4))), ValueError, r"x must be 4-D"),
    (dict(x=np.ones((2, 3, 3, 4), np.int32)), TypeError, r"x must have dtype float32 or float64"),
    (dict(indices=np.zeros((2, 3, 3, 4))), TypeError, r"indices must be an integer numpy.ndarray"),
    (dict(indices=np.zeros((2, 3, 3, 3), np.int64)), ValueError, r"indices must have x's shape \(2, 3, 3, 4\)"),
    (dict(indices=np.full((2, 3, 3, 4), 48)), ValueError, r"must lie in \[0, 48\) .* got values in \[48, 48\]"),
    (dict(indices=np.full((2, 3, 3, 4), -1)), ValueError, r"must lie in \[0, 48\)"),
    (dict(output_size=(6,)), TypeError, r"output_size must be \(H_out, W_out\) or \(N, C, H_out, W_out\)"),
    (dict(output_size=6), TypeError, r"output_size must be"),
    (dict(output_size=(0, 8)), ValueError, r"output_size must be positive"),
    (dict(output_size=(2, 4, 6, 8)), ValueError, r"must have x's \(N, C\) = \(2, 3\) in front"),
])
def test_bad_forward_argument_raises_clear_error(implementation, changes, error, match):
    with pytest.raises(error, match=match) as info:
        implementation.max_unpool2d_forward(**{**unpool_arguments(), **changes})
    assert type(info.value) is error and not isinstance(info.value, numba.core.errors.NumbaError)


@implementations
@pytest.mark.parametrize("grad_out, indices, error, match", [
    (np.ones((2, 3, 6, 8)), np.zeros((2, 2, 3, 4), np.int64), ValueError, r"must agree on \(N, C\)"),
    (np.ones((2, 3, 6, 8)), np.full((2, 3, 3, 4), 48), ValueError, r"must lie in \[0, 48\)"),
    (np.ones((2, 3, 6, 8)), [[1]], ValueError, r"indices must be a 4-D integer numpy.ndarray"),
    (np.ones((2, 3, 6, 8)), np.zeros((2, 3, 0, 4), np.int64), ValueError, r"indices must not be empty"),
    (np.ones((6, 8)), np.zeros((2, 3, 3, 4), np.int64), ValueError, r"grad_out must be 4-D"),
])
def test_bad_backward_argument_raises_clear_error(implementation, grad_out, indices, error, match):
    with pytest.raises(error, match=match) as info:
        implementation.max_unpool2d_backward(grad_out, indices)
    assert type(info.value) is error
