"""CrossEntropyLoss and MSELoss against PyTorch (stored fixture, float64) and finite differences.

Fixture tolerance rtol 1e-12: the same float64 formulas, different summation order. Finite
differences: float64 central differences with eps 1e-6 are accurate to ~1e-9 relative here.
"""
import pathlib

import numpy as np
import pytest

from helpers import load_fixture_with_configs
from tinycnn.losses import CrossEntropyLoss, MSELoss, log_softmax, softmax

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "optim.npz"


@pytest.fixture(scope="module")
def fixture():
    return load_fixture_with_configs(FIXTURE)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("scale_name, scale", [("", 1.0), ("large_", 300.0)], ids=["logits", "logits_x300"])
def test_cross_entropy_loss_and_grad_match_torch_fixture(fixture, reduction, label_smoothing, scale_name, scale):
    criterion = CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing)
    loss = criterion(scale * fixture["ce/logits"], fixture["ce/targets"])
    grad = criterion.backward(fixture["ce/upstream"] if reduction == "none" else None)
    key = f"ce/{scale_name}ls{label_smoothing}_{reduction}"
    np.testing.assert_allclose(loss, fixture[f"{key}/loss"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, fixture[f"{key}/grad"], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_and_grad_match_torch_fixture(fixture, reduction):
    criterion = MSELoss(reduction=reduction)
    loss = criterion(fixture["mse/prediction"], fixture["mse/target"])
    grad = criterion.backward(fixture["mse/upstream"] if reduction == "none" else None)
    np.testing.assert_allclose(loss, fixture[f"mse/{reduction}/loss"], rtol=1e-12)
    np.testing.assert_allclose(grad, fixture[f"mse/{reduction}/grad"], rtol=1e-12, atol=1e-15)


def central_difference_gradient(function, x, eps=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = (function(plus) - function(minus)) / (2 * eps)
    return grad


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_backward_matches_finite_differences(label_smoothing, reduction):
    rng = np.random.default_rng(0)
    logits, targets = 2 * rng.standard_normal((4, 6)), rng.integers(0, 6, 4)
    criterion = CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing)
    criterion(logits, targets)
    analytic = criterion.backward(0.7)                        # upstream gradient 0.7
    numeric = central_difference_gradient(lambda z: 0.7 * CrossEntropyLoss(reduction, label_smoothing)(z, targets),
                                          logits)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_mse_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    prediction, target = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 2, 2))
    criterion = MSELoss()
    criterion(prediction, target)
    numeric = central_difference_gradient(lambda p: MSELoss()(p, target), prediction)
    np.testing.assert_allclose(criterion.backward(), numeric, rtol=1e-6, atol=1e-10)


@pytest.mark.nojit
def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 2e4]], dtype=np.float32)
    criterion = CrossEntropyLoss()
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # exp(-huge) may underflow to 0: fine
        loss = criterion(logits, np.array([0, 2]))
        grad = criterion.backward()
    assert loss == pytest.approx((0.0 + 1e4) / 2)           # sample 1: log p = 0; sample 2: -(2e4 - 3e4)
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[0, 0, 0], [0, 0.5, -0.5]], atol=1e-7)


def test_float32_logits_give_float32_gradient_and_a_python_float_loss():
    logits = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    criterion = CrossEntropyLoss(label_smoothing=0.1)
    loss = criterion(logits, np.array([0, 1, 2, 0, 1]))
    assert type(loss) is float
    assert criterion.backward().dtype == np.float32


def test_cross_entropy_with_full_smoothing_gradient_is_softmax_minus_uniform():
    logits = np.random.default_rng(3).standard_normal((2, 4))
    criterion = CrossEntropyLoss(reduction="sum", label_smoothing=1.0)
    criterion(logits, np.array([1, 3]))
    np.testing.assert_allclose(criterion.backward(), softmax(logits) - 0.25, rtol=1e-12)


def test_log_softmax_and_softmax_agree_and_rows_sum_to_one():
    logits = np.random.default_rng(4).standard_normal((3, 7)) * 50
    np.testing.assert_allclose(np.exp(log_softmax(logits)), softmax(logits), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(softmax(logits).sum(axis=1), 1.0, rtol=1e-12)


def test_cross_entropy_matches_live_torch_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    logits = (4 * rng.standard_normal((16, 10))).astype(np.float32)
    targets = rng.integers(0, 10, 16)
    criterion = CrossEntropyLoss(label_smoothing=0.1)
    loss = criterion(logits, targets)
    z = torch.tensor(logits, requires_grad=True)
    reference = torch.nn.functional.cross_entropy(z, torch.tensor(targets), label_smoothing=0.1)
    reference.backward()
    assert loss == pytest.approx(reference.item(), rel=1e-6)            # float32 rounding
    np.testing.assert_allclose(criterion.backward(), z.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("logits, targets, error, match", [
    (np.zeros((2, 3)), np.array([0, 3]), ValueError, r"\[0, 3\)"),
    (np.zeros((2, 3)), np.array([0, -1]), ValueError, "targets"),
    (np.zeros((2, 3)), np.array([0, 1, 2]), ValueError, r"\(N,\)"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), TypeError, "integer"),
    (np.zeros((2, 3, 4)), np.array([0, 1]), ValueError, "2-D"),
    (np.zeros((2, 3), dtype=np.int64), np.array([0, 1]), TypeError, "float32 or float64"),
    ([[0.0, 1.0]], np.array([0]), TypeError, "ndarray"),
])
def test_cross_entropy_rejects_bad_inputs_with_clear_errors(logits, targets, error, match):
    with pytest.raises(error, match=match):
        CrossEntropyLoss()(logits, targets)


def test_loss_arguments_and_call_order_are_checked():
    with pytest.raises(ValueError, match="reduction"):
        CrossEntropyLoss(reduction="average")
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(RuntimeError, match="before forward"):
        MSELoss().backward()
    with pytest.raises(ValueError, match="shape"):
        MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
    criterion = CrossEntropyLoss(reduction="none")
    criterion(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="grad_output"):
        criterion.backward()
    assert repr(CrossEntropyLoss(label_smoothing=0.1)) == "CrossEntropyLoss(reduction='mean', label_smoothing=0.1)"
