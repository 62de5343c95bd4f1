"""nn.Tanh: the value and gradient of torch.nn.Tanh, and a float64 finite-difference gradient check."""
import numpy as np
import pytest

import tinycnn.nn as nn
from helpers import gradcheck_layer


@pytest.mark.nojit
def test_tanh_gradient_matches_central_differences():
    gradcheck_layer(nn.Tanh(), (2, 3, 4, 4), "train")


def test_tanh_values_and_limits(rng):
    x = np.array([-1000.0, -1.0, 0.0, 0.5, 1000.0])
    y = nn.Tanh()(x)
    np.testing.assert_allclose(y, [-1, np.tanh(-1.0), 0, np.tanh(0.5), 1])
    layer = nn.Tanh()
    layer(x)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), [0, 1 - np.tanh(1.0) ** 2, 1, 1 - np.tanh(0.5) ** 2, 0])


def test_tanh_backward_before_forward_is_a_clear_error():
    with pytest.raises((RuntimeError, ValueError), match="forward"):
        nn.Tanh().backward(np.ones(3))


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_tanh_matches_torch(rng, dtype, tolerance):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((3, 5)) * 3).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    layer = nn.Tanh()
    y = layer(x)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.Tanh()(xt)
    yt.backward(torch.tensor(g))
    # float32: both sides round tanh and 1 - y^2 once or twice; a few ulps of values of magnitude <= 1
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=tolerance)
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=0, atol=tolerance * np.abs(g).max() * 4)
