"""tinycnn.gradcheck: passes correct backwards, reports (and can raise on) wrong ones.

The module-like objects here are written by hand so that these tests do not depend on tinycnn.nn;
one test at the end runs real tinycnn.nn layers when that package is available.
"""
import numpy as np
import pytest

from tinycnn.gradcheck import GradcheckReport, gradcheck


class Param:
    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)


class AffineTanh:
    """y = tanh(x @ W.T + b), x (N, D_in), W (D_out, D_in), b (D_out,): a module with two parameters.

    ``bug`` selects a deliberately wrong backward: "weight" forgets the activation's derivative in
    the weight gradient, "input" scales the input gradient by 0.9, "bias" scales the bias gradient by 1.1.
    """

    def __init__(self, d_in=4, d_out=3, dtype=np.float64, bug=None, seed=0):
        rng = np.random.default_rng(seed)
        self.weight = Param((0.5 * rng.standard_normal((d_out, d_in))).astype(dtype))
        self.bias = Param((0.1 * rng.standard_normal(d_out)).astype(dtype))
        self.bug = bug
        self._cache = None

    def named_parameters(self):
        return [("weight", self.weight), ("bias", self.bias)]

    def forward(self, x):
        y = np.tanh(x @ self.weight.data.T + self.bias.data)
        self._cache = (x, y)
        return y

    def backward(self, grad_out):
        x, y = self._cache
        grad_pre = grad_out * (1 - y ** 2)                       # through tanh
        self.weight.grad += (grad_out if self.bug == "weight" else grad_pre).T @ x
        self.bias.grad += grad_pre.sum(axis=0) if self.bug != "bias" else grad_pre.sum(axis=0) * 1.1
        grad_x = grad_pre @ self.weight.data
        return 0.9 * grad_x if self.bug == "input" else grad_x


def test_correct_module_passes_for_input_and_every_parameter():
    x = np.random.default_rng(1).standard_normal((5, 4))
    report = gradcheck(AffineTanh(), x)
    assert isinstance(report, GradcheckReport)
    assert report.passed and bool(report)
    assert {r.tensor for r in report.results} == {"input", "weight", "bias"}
    assert len(report.results) == 3 * (2 + 3)                  # 2 directions + 3 entries per tensor
    assert report.max_rel_error() < 1e-7
    assert "PASSED" in str(report)


@pytest.mark.parametrize("bug", ["weight", "bias", "input"])
def test_wrong_backward_is_reported_for_exactly_the_wrong_tensor(bug):
    x = np.random.default_rng(2).standard_normal((5, 4))
    report = gradcheck(AffineTanh(bug=bug), x)
    assert not report.passed
    assert {r.tensor for r in report.failures} == {bug}
    assert {r.tensor for r in report.results if r.check.startswith("direction") and not r.passed} == {bug}
    assert "FAILED" in str(report)


def test_raise_on_fail_raises_assertion_error_listing_the_failures():
    x = np.random.default_rng(3).standard_normal((2, 4))
    with pytest.raises(AssertionError, match="weight") as info:
        gradcheck(AffineTanh(bug="weight"), x, raise_on_fail=True)
    assert "bias" not in str(info.value).split("\n", 1)[1]     # only failed rows are listed
    gradcheck(AffineTanh(), x, raise_on_fail=True)              # a correct module does not raise


@pytest.mark.nojit
def test_function_convention_checks_input_gradient():
    def tanh(x):
        y = np.tanh(x)
        return y, lambda grad_y: grad_y * (1 - y ** 2)

    def tanh_wrong(x):
        y = np.tanh(x)
        return y, lambda grad_y: grad_y * (1 - y)

    x = np.random.default_rng(4).standard_normal((3, 2))
    assert gradcheck(tanh, x).passed
    assert not gradcheck(tanh_wrong, x).passed


def test_float32_module_is_checked_in_float64_on_a_copy():
    module = AffineTanh(dtype=np.float32)
    weight_before = module.weight.data.copy()
    x = np.random.default_rng(5).standard_normal((4, 4)).astype(np.float32)
    report = gradcheck(module, x)
    assert report.passed, str(report)
    assert any("float32" in note for note in report.notes)
    assert module.weight.data.dtype == np.float32               # the original module is untouched
    np.testing.assert_array_equal(module.weight.data, weight_before)
    assert not module.weight.grad.any()


def test_given_grad_out_is_used_and_results_are_reproducible_from_the_seed():
    x = np.random.default_rng(6).standard_normal((2, 4))
    first = gradcheck(AffineTanh(), x, seed=3)
    second = gradcheck(AffineTanh(), x, seed=3)
    assert [r.analytic for r in first.results] == [r.analytic for r in second.results]
    ones = gradcheck(AffineTanh(), x, grad_out=np.ones((2, 3)), check_params=False, n_entries=0)
    assert [r.tensor for r in ones.results] == ["input", "input"]
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        gradcheck(AffineTanh(), x, grad_out=np.ones((3, 2)))


def test_invalid_targets_and_options_raise_clear_errors():
    x = np.zeros((2, 4))
    with pytest.raises(TypeError, match="module_or_fn"):
        gradcheck(42, x)
    with pytest.raises(TypeError, match="floating-point"):
        gradcheck(AffineTanh(), np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="eps"):
        gradcheck(AffineTanh(), x, eps=0.0)
    with pytest.raises(TypeError, match="backward_fn"):
        gradcheck(lambda x: x, x)


def test_tinycnn_nn_layers_pass_gradcheck():
    from tinycnn import nn
    rng = np.random.default_rng(7)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=1, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 3, 3, stride=2, padding=1, groups=3),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, 4),
    )
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    report = gradcheck(model, x, seed=1)
    assert report.passed, str(report)
    assert len({r.tensor for r in report.results}) >= 7        # input + every parameter was checked
