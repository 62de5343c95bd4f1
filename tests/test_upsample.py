"""``nn.Upsample`` beyond integer factors: non-integer and per-axis ``scale_factor`` (up and down),
``align_corners=True`` with a scale factor, ``recompute_scale_factor``, against PyTorch.

* committed fixtures (``tests/fixtures/upsample.npz``, ``tools/fixtures_upsample.py``): float64 to 1e-10;
  float32 within ``helpers.float32_tolerance`` of PyTorch's own float32 error on the case (recorded in
  the fixture);
* live PyTorch on random sizes, factors and flags (float64, to 1e-10);
* the backward is the adjoint of the forward (float64) for non-integer factors;
* PyTorch's argument errors.
(Integer factors and explicit sizes: ``tests/test_nn_torch.py`` and ``tests/fixtures/layers.npz``.)
"""
import json
import pathlib

import numpy as np
import pytest

from helpers import (assert_close, assert_generator_reproduces_fixture, float32_tolerance,
                     assert_vdot_equal)
from tinycnn import nn

FIXTURE_PATH = pathlib.Path(__file__).resolve().parent / "fixtures" / "upsample.npz"
with np.load(FIXTURE_PATH) as _npz:
    FIXTURES = {key: _npz[key] for key in _npz.files}
CONFIGS = json.loads(str(FIXTURES["configs_json"]))



def fixture(case):
    prefix = f"upsample/{case}/"
    return {key.removeprefix(prefix): value for key, value in FIXTURES.items() if key.startswith(prefix)}


def upsample(kwargs):
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("scale_factor"), list):
        kwargs["scale_factor"] = tuple(kwargs["scale_factor"])        # JSON turned the pair into a list
    return nn.Upsample(**kwargs)


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_matches_pytorch_fixture_float64(case):
    arrays = fixture(case)
    layer = upsample(CONFIGS[case]["kwargs"])
    assert_close(layer(arrays["x"]), arrays["y"], np.float64)
    assert_close(layer.backward(arrays["grad_y"]), arrays["grad_x"], np.float64)


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_matches_pytorch_fixture_float32(case):
    arrays, config = fixture(case), CONFIGS[case]
    layer = upsample(config["kwargs"])
    results = {"y": layer(arrays["x"].astype(np.float32))}
    results["grad_x"] = layer.backward(arrays["grad_y"].astype(np.float32))
    for key, value in results.items():
        assert_close(value, arrays[key], np.float32, float32_tolerance(config["torch_float32_error"][key]))


def test_scale_factor_is_used_for_positions_not_just_for_the_size():
    """W = 4, scale 1.3: W_out = 5 and sources at (j + 0.5)/1.3 - 0.5, not at (j + 0.5)*4/5 - 0.5 (which
    ``recompute_scale_factor=True`` gives). An axis whose size does not change (H = 3 -> 3) is copied, as
    PyTorch does."""
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4) ** 2
    y = nn.Upsample(scale_factor=1.3, mode="bilinear")(x)
    recomputed = nn.Upsample(scale_factor=1.3, mode="bilinear", recompute_scale_factor=True)(x)
    for result, scale in ((y, 1 / 1.3), (recomputed, 4 / 5)):
        sources = np.maximum((np.arange(5) + 0.5) * scale - 0.5, 0)
        expected = np.stack([np.interp(sources, np.arange(4), row) for row in x[0, 0]])
        np.testing.assert_allclose(result[0, 0], expected, rtol=1e-12)
    assert not np.allclose(y, recomputed)


def test_committed_fixtures_match_what_the_generator_produces(tmp_path):
    assert_generator_reproduces_fixture("upsample", tmp_path, FIXTURES)


def test_matches_live_pytorch_on_random_non_integer_factors_and_flags():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    compared = 0
    for trial in range(80):
        H, W = (int(v) for v in rng.integers(1, 9, size=2))
        factors = [0.3, 0.5, 0.6, 0.75, 1.3, 1.5, 1.7, 2.0, 2.5, 3.3]
        scale = float(rng.choice(factors))
        if trial % 3 == 0:
            scale = (scale, float(rng.choice(factors)))
        kwargs = dict(scale_factor=scale, mode=["nearest", "bilinear"][trial % 2],
                      recompute_scale_factor=[None, True, False][int(rng.integers(0, 3))])
        if kwargs["mode"] == "bilinear":
            kwargs["align_corners"] = bool(rng.integers(0, 2))
        x = rng.standard_normal((2, 2, H, W))
        theirs = torch.nn.Upsample(**kwargs)
        x_tensor = torch.from_numpy(x).requires_grad_(True)
        try:
            y_torch = theirs(x_tensor)
        except RuntimeError:                                          # empty output: ours refuses too
            with pytest.raises(ValueError, match="empty output"):
                nn.Upsample(**kwargs)(x)
            continue
        ours = nn.Upsample(**kwargs)
        y = ours(x)
        grad_y = rng.standard_normal(y.shape)
        y_torch.backward(torch.from_numpy(grad_y))
        assert_close(y, y_torch.detach().numpy(), np.float64)
        assert_close(ours.backward(grad_y), x_tensor.grad.numpy(), np.float64)
        compared += 1
    assert compared > 60


@pytest.mark.parametrize("kwargs", [dict(scale_factor=1.7, mode="bilinear"),
                                    dict(scale_factor=(0.6, 2.5), mode="bilinear", align_corners=True),
                                    dict(scale_factor=1.7, mode="nearest", recompute_scale_factor=True)])
def test_backward_is_the_adjoint_of_forward(kwargs):
    rng = np.random.default_rng(6)
    layer = nn.Upsample(**kwargs)
    x = rng.standard_normal((2, 3, 5, 4))
    y = layer(x)
    grad_y = rng.standard_normal(y.shape)
    assert_vdot_equal(y, grad_y, x, layer.backward(grad_y))


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=4, recompute_scale_factor=True), "recompute_scale_factor is not meaningful with an explicit size"),
    (dict(scale_factor=1.5, align_corners=True), "only be set with mode='bilinear'"),
    (dict(scale_factor=-1.5), "scale_factor must be a positive number"),
    (dict(scale_factor=(1.5, 2.0, 1.0)), "scale_factor must be a positive number or a pair"),
    (dict(), "exactly one of size and scale_factor"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.Upsample(**kwargs)


def test_too_small_scale_factor_is_a_clear_error():
    with pytest.raises(ValueError, match=r"scale_factor=0.1\) gives an empty output for input 4x4"):
        nn.Upsample(scale_factor=0.1, mode="bilinear")(np.ones((1, 1, 4, 4)))
