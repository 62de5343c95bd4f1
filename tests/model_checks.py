"""Our side of the model fixtures (see tools/model_fixtures.py): rebuild the model and compare."""
import json
import pathlib

import numpy as np
from helpers import float32_tolerance

from tinycnn.models import get_model
from tinycnn.testing import (seeded_input, seeded_state_dict, seeded_upstream_gradient,
                             train_without_dropout)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def load_model_cases(filename):
    """``{case: {"params": dict, "eval_logits": ..., "grad/<name>": ...}}`` from a models npz."""
    cases = {}
    with np.load(FIXTURES / filename) as data:
        for key in data.files:
            _, case, field = key.split("/", 2)
            value = data[key]
            cases.setdefault(case, {})[field] = json.loads(str(value)) if field == "params" else value
    return cases


def _relative_error(actual, expected):
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    return float(np.max(np.abs(actual - expected))) / scale


def seeded_model_and_input(params, dtype):
    """The case's model in ``dtype`` with its seeded weights (``strict=True``), and its seeded input."""
    model = get_model(params["model"], **params["kwargs"]).to(dtype)
    model.load_state_dict(seeded_state_dict(model, params["seed"], dtype=dtype), strict=True)
    return model, seeded_input(tuple(params["input_shape"]), params["seed"], dtype)


def check_model_case(case, dtype=np.float64):
    """Rebuild the case's model with seeded weights; compare eval logits, train logits and gradients.

    Tolerances (relative to the largest reference value): float64 1e-8 -- the only differences are
    summation order over tens of layers; float32 set by the case's own conditioning -- single precision
    through ~50 layers with batch norm in training mode, whose division by the batch std amplifies
    rounding by a case-dependent factor. The generator recorded how far PyTorch's own float32 run lands
    (``torch_float32_error`` per quantity: 1e-7 for eval logits, up to percents for train-mode
    gradients of deep models); ``float32_tolerance`` allows a stated multiple of it.
    """
    params = case["params"]
    torch_errors = json.loads(str(case["torch_float32_error"]))
    model, x = seeded_model_and_input(params, dtype)

    model.eval()
    errors = {"eval_logits": _relative_error(model(x), case["eval_logits"])}
    train_without_dropout(model)
    logits = model(x)
    errors["train_logits"] = _relative_error(logits, case["train_logits"])
    model.zero_grad()
    grad_x = model.backward(seeded_upstream_gradient(logits.shape, params["seed"], dtype))
    errors["grad_x"] = _relative_error(grad_x, case["grad_x"])
    named = dict(model.named_parameters())
    for name in params["checked_params"]:
        errors[f"grad/{name}"] = _relative_error(named[name].grad, case[f"grad/{name}"])
    tolerances = {key: 1e-8 if dtype == np.float64 else float32_tolerance(torch_errors[key]) for key in errors}
    failed = {key: (error, tolerances[key]) for key, error in errors.items() if not error <= tolerances[key]}
    assert not failed, f"{params['model']} {dtype.__name__}: (relative error, tolerance) {failed}"
    return errors
