"""Optimizers and schedulers against PyTorch: stored fixtures (no torch needed) and live checks.

Fixture tolerances: everything is float64 and our updates perform PyTorch's operations in PyTorch's
order, so the only differences are rounding in a handful of operations per step: rtol 1e-12.
Live float32 checks: rounding (~6e-8 per operation) accumulates over a few steps and Adam divides by
sqrt(v) + eps, so rtol 1e-5, atol 1e-6.
"""
import pathlib

import numpy as np
import pytest

from helpers import load_fixture_with_configs
from tinycnn import optim

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "optim.npz"


class Param:
    """Minimal parameter: what the optimizers need (``.data`` and ``.grad``)."""

    def __init__(self, data):
        self.data = np.array(data, copy=True)
        self.grad = np.zeros_like(self.data)


@pytest.fixture(scope="module")
def fixture():
    return load_fixture_with_configs(FIXTURE)


def build_optimizer(class_name, kwargs, groups, params):
    if groups is not None:
        params = [{**{k: v for k, v in group.items() if k != "params"}, "params": [params[i] for i in group["params"]]}
                  for group in groups]
    return getattr(optim, class_name)(params, **kwargs)


OPTIMIZER_NAMES = ["sgd_plain", "sgd_momentum", "sgd_momentum_dampening", "sgd_momentum_weight_decay",
                   "sgd_nesterov_weight_decay", "sgd_groups", "adam", "adam_weight_decay", "adamw", "adamw_groups"]


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_optimizer_steps_match_torch_fixture(fixture, name):
    class_name, kwargs, groups = fixture["configs"]["optimizers"][name]
    n_params = sum(key.startswith("init/") for key in fixture)
    params = [Param(fixture[f"init/param{i}"]) for i in range(n_params)]
    optimizer = build_optimizer(class_name, kwargs, groups, params)
    for step in range(fixture["configs"]["steps"]):
        for i, param in enumerate(params):
            param.grad[...] = fixture[f"grads/param{i}"][step]
        optimizer.step()
        for i, param in enumerate(params):
            np.testing.assert_allclose(param.data, fixture[f"{name}/param{i}"][step], rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name}, parameter {i}, after step {step + 1}")


def build_scheduler(fixture, name):
    schedulers, milestones, _ = fixture["configs"]["schedulers"][name]
    base_lrs = fixture["configs"]["scheduler_base_lrs"]
    optimizer = optim.SGD([{"params": [Param(np.zeros(1))], "lr": lr} for lr in base_lrs])
    built = [getattr(optim, class_name)(optimizer, **kwargs) for class_name, kwargs in schedulers]
    scheduler = built[0] if milestones is None else optim.SequentialLR(optimizer, built, milestones)
    return optimizer, scheduler


@pytest.mark.parametrize("name", ["step_lr", "cosine", "linear_warmup", "warmup_cosine"])
def test_scheduler_learning_rates_match_torch_fixture(fixture, name):
    optimizer, scheduler = build_scheduler(fixture, name)
    expected = fixture[f"{name}/lr"]                       # (epochs + 1, groups)
    lrs = [scheduler.get_last_lr()]
    for _ in range(len(expected) - 1):
        optimizer.step()
        scheduler.step()
        lrs.append([group["lr"] for group in optimizer.param_groups])
    np.testing.assert_allclose(np.array(lrs), expected, rtol=1e-12, atol=1e-15)
    assert scheduler.get_last_lr() == lrs[-1]


def test_warmup_cosine_reaches_base_lr_after_warmup_and_eta_min_at_the_end():
    optimizer = optim.SGD([Param(np.zeros(2))], lr=0.4)
    scheduler = optim.warmup_cosine(optimizer, warmup_steps=4, total_steps=20, start_factor=0.25, eta_min=0.01)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(20):
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[4] == pytest.approx(0.4)
    assert lrs[20] == pytest.approx(0.01)
    assert np.all(np.diff(lrs[:5]) > 0) and np.all(np.diff(lrs[4:]) < 0)


# --------------------------------------------------------------------------------------------------
# Live comparisons with torch in float32 (the default dtype of real training)
# --------------------------------------------------------------------------------------------------

LIVE_CONFIGS = [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1)),
    ("Adam", dict(lr=1e-2, weight_decay=1e-2)),
    ("AdamW", dict(lr=1e-2, betas=(0.85, 0.98), weight_decay=5e-2)),
]


@pytest.mark.parametrize("class_name, kwargs", LIVE_CONFIGS)
def test_optimizer_matches_live_torch_float32_over_ten_steps(class_name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    shapes = [(8, 3, 3, 3), (8,), (10, 8)]
    inits = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    grads = [[rng.standard_normal(shape).astype(np.float32) for shape in shapes] for _ in range(10)]
    ours = [Param(init) for init in inits]
    theirs = [torch.tensor(init, requires_grad=True) for init in inits]
    optimizer = getattr(optim, class_name)(ours, **kwargs)
    reference = getattr(torch.optim, class_name)(theirs, foreach=False, **kwargs)
    for step_grads in grads:
        for param, tensor, grad in zip(ours, theirs, step_grads):
            param.grad[...] = grad
            tensor.grad = torch.tensor(grad)
        optimizer.step()
        reference.step()
    for param, tensor in zip(ours, theirs):
        assert param.data.dtype == np.float32
        np.testing.assert_allclose(param.data, tensor.detach().numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------------------

def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [Param(rng.standard_normal(shape).astype(dtype)) for shape in [(4, 3), (3,)]]


def feed_gradients(params, step, seed=1):
    rng = np.random.default_rng(seed + 1000 * step)
    for param in params:
        param.grad[...] = rng.standard_normal(param.data.shape)


@pytest.mark.parametrize("class_name, kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
])
def test_state_dict_round_trip_continues_exactly_like_an_uninterrupted_run(class_name, kwargs):
    params = make_params()
    optimizer = getattr(optim, class_name)(params, **kwargs)
    for step in range(3):
        feed_gradients(params, step)
        optimizer.step()
    saved_state = optimizer.state_dict()
    saved_values = [p.data.copy() for p in params]

    for step in range(3, 6):                     # uninterrupted run continues
        feed_gradients(params, step)
        optimizer.step()

    resumed_params = [Param(value) for value in saved_values]
    resumed = getattr(optim, class_name)(resumed_params, lr=123.0)   # lr restored from the state dict
    resumed.load_state_dict(saved_state)
    assert resumed.param_groups[0]["lr"] == kwargs["lr"]
    for step in range(3, 6):
        feed_gradients(resumed_params, step)
        resumed.step()
    for original, restored in zip(params, resumed_params):
        np.testing.assert_array_equal(original.data, restored.data)   # same arithmetic: bit-identical


def test_state_dict_holds_torch_named_state_and_is_a_copy():
    params = make_params()
    optimizer = optim.Adam(params, lr=0.01)
    feed_gradients(params, 0)
    optimizer.step()
    state = optimizer.state_dict()
    assert sorted(state["state"][0]) == ["exp_avg", "exp_avg_sq", "step"]
    assert state["state"][1]["step"] == 1
    assert state["param_groups"][0]["params"] == [0, 1]
    saved_moment = state["state"][0]["exp_avg"].copy()
    feed_gradients(params, 1)
    optimizer.step()
    np.testing.assert_array_equal(state["state"][0]["exp_avg"], saved_moment)


def test_sgd_momentum_buffer_state_round_trips():
    params = make_params()
    optimizer = optim.SGD(params, lr=0.1, momentum=0.9)
    feed_gradients(params, 0)
    optimizer.step()
    state = optimizer.state_dict()
    # the first momentum buffer is the gradient itself (PyTorch, dampening ignored on step 1)
    np.testing.assert_array_equal(state["state"][0]["momentum_buffer"], params[0].grad)
    other = optim.SGD(make_params(), lr=0.1, momentum=0.9)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.state_of(other.param_groups[0]["params"][0])["momentum_buffer"],
                                  params[0].grad)


def test_load_state_dict_rejects_mismatched_shapes_and_group_counts():
    params = make_params()
    optimizer = optim.SGD(params, lr=0.1, momentum=0.9)
    feed_gradients(params, 0)
    optimizer.step()
    state = optimizer.state_dict()
    wrong_shapes = [Param(np.zeros((3, 4))), Param(np.zeros(3))]
    with pytest.raises(ValueError, match="shape"):
        optim.SGD(wrong_shapes, lr=0.1, momentum=0.9).load_state_dict(state)
    two_groups = optim.SGD([{"params": [p]} for p in make_params()], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="groups"):
        two_groups.load_state_dict(state)


class FakeModel:
    """named_parameters() like tinycnn.nn: a conv, a batch norm and a linear layer."""

    def __init__(self):
        self.named = [("features.0.weight", Param(np.ones((4, 3, 3, 3)))), ("features.0.bias", Param(np.ones(4))),
                      ("features.1.weight", Param(np.ones(4))), ("features.1.bias", Param(np.ones(4))),
                      ("classifier.weight", Param(np.ones((2, 4)))), ("classifier.bias", Param(np.ones(2)))]

    def named_parameters(self):
        return iter(self.named)


def test_param_groups_no_decay_puts_biases_and_batchnorm_in_the_no_decay_group():
    model = FakeModel()
    decayed, not_decayed = optim.param_groups_no_decay(model, weight_decay=0.1)
    names = {id(p): name for name, p in model.named}
    assert [names[id(p)] for p in decayed["params"]] == ["features.0.weight", "classifier.weight"]
    assert [names[id(p)] for p in not_decayed["params"]] == ["features.0.bias", "features.1.weight",
                                                             "features.1.bias", "classifier.bias"]
    assert (decayed["weight_decay"], not_decayed["weight_decay"]) == (0.1, 0.0)


@pytest.mark.nojit
def test_no_decay_group_parameters_do_not_shrink_with_zero_gradient():
    model = FakeModel()
    optimizer = optim.SGD(optim.param_groups_no_decay(model, weight_decay=0.5), lr=0.1)
    optimizer.step()                                  # all gradients are zero: only weight decay acts
    for name, param in model.named:
        expected = 1.0 if param.data.ndim == 1 else 1.0 - 0.1 * 0.5
        np.testing.assert_allclose(param.data, expected, rtol=0, atol=1e-15, err_msg=name)


@pytest.mark.nojit
def test_zero_grad_zeroes_in_place_and_step_skips_parameters_without_grad():
    params = make_params()
    feed_gradients(params, 0)
    grad_array = params[0].grad
    optimizer = optim.SGD(params, lr=0.1)
    optimizer.zero_grad()
    assert params[0].grad is grad_array and not grad_array.any()
    params[1].grad = None
    before = params[1].data.copy()
    params[0].grad[...] = 1.0
    optimizer.step()
    np.testing.assert_array_equal(params[1].data, before)
    assert optimizer.state_of(params[1]) == {}


def test_float32_parameters_stay_float32_and_update_in_place():
    params = make_params(dtype=np.float32)
    data_arrays = [p.data for p in params]
    optimizer = optim.AdamW(params, lr=0.01)
    for step in range(2):
        feed_gradients(params, step)
        optimizer.step()
    for param, array in zip(params, data_arrays):
        assert param.data is array and param.data.dtype == np.float32
        assert optimizer.state_of(param)["exp_avg"].dtype == np.float32


def test_scheduler_state_dict_round_trip_resumes_the_schedule():
    optimizer = optim.SGD([Param(np.zeros(1))], lr=0.2)
    scheduler = optim.warmup_cosine(optimizer, warmup_steps=2, total_steps=10)
    for _ in range(5):
        scheduler.step()
    saved_optimizer, saved_scheduler = optimizer.state_dict(), scheduler.state_dict()
    expected = []
    for _ in range(4):
        scheduler.step()
        expected.append(scheduler.get_last_lr()[0])

    fresh_optimizer = optim.SGD([Param(np.zeros(1))], lr=0.2)
    fresh = optim.warmup_cosine(fresh_optimizer, warmup_steps=2, total_steps=10)
    fresh_optimizer.load_state_dict(saved_optimizer)
    fresh.load_state_dict(saved_scheduler)
    assert fresh.last_epoch == 5
    resumed = []
    for _ in range(4):
        fresh.step()
        resumed.append(fresh_optimizer.param_groups[0]["lr"])
    assert resumed == expected


def test_step_lr_closed_form():
    optimizer = optim.SGD([Param(np.zeros(1))], lr=1.0)
    scheduler = optim.StepLR(optimizer, step_size=2, gamma=0.5)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(5):
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


@pytest.mark.parametrize("make, error, match", [
    (lambda p: optim.SGD(p, lr=-0.1), ValueError, "lr"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), ValueError, "nesterov"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), ValueError, "momentum"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (lambda p: optim.Adam(p, betas=(0.9,)), ValueError, "betas"),
    (lambda p: optim.SGD(p + p, lr=0.1), ValueError, "more than once"),
    (lambda p: optim.SGD([{"params": p, "momentom": 0.9}], lr=0.1), ValueError, "momentom"),
    (lambda p: optim.SGD({"weight": p[0]}, lr=0.1), TypeError, "dict"),
    (lambda p: optim.SGD([np.zeros(3)], lr=0.1), TypeError, ".data"),
    (lambda p: optim.SGD([], lr=0.1), ValueError, "empty"),
])
def test_invalid_optimizer_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make(make_params())


def test_invalid_scheduler_arguments_raise_clear_errors():
    optimizer = optim.SGD(make_params(), lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(optimizer, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(optimizer, T_max=0)
    with pytest.raises(ValueError, match="start_factor"):
        optim.LinearLR(optimizer, start_factor=0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.warmup_cosine(optimizer, warmup_steps=10, total_steps=10)


@pytest.mark.nojit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("class_name, kwargs", [("Adam", {}), ("Adam", {"weight_decay": 0.1}),
                                                ("AdamW", {"weight_decay": 0.1})])
def test_adam_compiled_pass_gives_the_bits_of_the_numpy_lines(class_name, kwargs, dtype, rng):
    """C-contiguous parameters take the compiled pass, others the NumPy lines: same bits, five steps."""
    start = rng.standard_normal((6, 5)).astype(dtype)
    compiled, numpy_lines = Param(start), Param(np.asfortranarray(start))
    assert compiled.data.flags.c_contiguous and not numpy_lines.data.flags.c_contiguous
    optimizers = [getattr(optim, class_name)([p], lr=0.01, **kwargs) for p in (compiled, numpy_lines)]
    for _ in range(5):
        grad = rng.standard_normal(start.shape).astype(dtype)
        for param, optimizer in zip((compiled, numpy_lines), optimizers):
            param.grad[...] = grad
            optimizer.step()
    assert compiled.data.dtype == dtype
    np.testing.assert_array_equal(compiled.data, numpy_lines.data)
    assert not np.array_equal(compiled.data, start)


@pytest.mark.parametrize("class_name", ["Adam", "AdamW"])
def test_adam_batches_of_parameters_give_the_bits_of_one_call_per_parameter(class_name, rng):
    """Parameters sharing a dtype and step count go through one compiled call; mixed dtypes, a parameter
    that joined later (another step count), a non-contiguous one and a missing gradient all give the
    bits of the per-parameter path (``_update``), step after step."""
    shapes = [(4, 3), (5,), (2, 2, 3), (7,)]
    dtypes = [np.float32, np.float32, np.float64, np.float32]

    def make():
        params = [Param(rng_copy.standard_normal(shape).astype(dtype)) for shape, dtype in zip(shapes, dtypes)]
        params.append(Param(np.asfortranarray(rng_copy.standard_normal((3, 4)))))
        return params

    rng_copy = np.random.default_rng(1)
    batched = make()
    rng_copy = np.random.default_rng(1)
    single = make()
    optimizers = [getattr(optim, class_name)(params, lr=0.01, weight_decay=0.1) for params in (batched, single)]
    for step in range(4):
        gradients = [rng.standard_normal(p.data.shape).astype(p.data.dtype) for p in batched]
        for params in (batched, single):
            for index, (param, grad) in enumerate(zip(params, gradients)):
                param.grad = None if (index == 3 and step < 2) else grad.copy()   # parameter 3 joins at step 2
        optimizers[0].step()
        opt = optimizers[1]
        for param in single:                                    # the per-parameter path, one call each
            if param.grad is not None:
                opt._update(param, param.grad, opt.param_groups[0], opt.state_of(param))
    for index, (a, b) in enumerate(zip(batched, single)):
        np.testing.assert_array_equal(a.data, b.data, err_msg=f"parameter {index}")
    assert optimizers[0].state_of(batched[3])["step"] == 2 and optimizers[0].state_of(batched[0])["step"] == 4
