"""Shared by the tools/fixtures_models_*.py generators: PyTorch side of the model fixtures.

Each model fixture stores, under ``models/<case>/``: ``params`` (JSON: our model name and kwargs,
seed, input shape, names of checked parameters), ``eval_logits``, ``train_logits``, ``grad_x`` and
``grad/<name>`` for the checked parameters, and ``torch_float32_error`` (JSON: PyTorch's own float32 run
against float64 per quantity, from which the float32 tests take their tolerance). The weights, the input and the upstream gradient are
*not* stored: they are rebuilt from the seed by ``tinycnn.testing`` on both sides.
"""
import json

import numpy as np
import torch
from make_fixtures import relative_error

from tinycnn.testing import seeded_input, seeded_state_dict, seeded_upstream_gradient


def import_torchvision_models():
    """``import torchvision.models`` on a CPU-only PyTorch.

    There is no CPU torchvision build here; the CUDA one fails registering the ``torchvision::nms``
    fake kernel at import. Registration failures are ignored while importing (we use no ops).
    """
    original = torch.library.register_fake

    def tolerant_register_fake(*args, **kwargs):
        try:
            decorator = original(*args, **kwargs)
        except Exception:
            return lambda fn: fn

        def apply(fn):
            try:
                return decorator(fn)
            except Exception:
                return fn
        return apply

    torch.library.register_fake = tolerant_register_fake
    try:
        import torchvision.models as models
    finally:
        torch.library.register_fake = original
    return models


def load_seeded_weights(torch_model, seed):
    """Fill ``torch_model`` (float64) with :func:`tinycnn.testing.seeded_state_dict` weights."""
    torch_model.double()
    shapes = {name: tuple(t.shape) for name, t in torch_model.state_dict().items()}
    weights = seeded_state_dict(shapes, seed)
    torch_model.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()}, strict=True)
    return torch_model


def _train_without_dropout(torch_model):
    torch_model.train()
    for module in torch_model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()


def model_fixture(case, torch_model, our_name, our_kwargs, input_shape, seed, checked_params):
    """Run ``torch_model`` with seeded weights; return the fixture arrays for ``models/<case>/``.

    Eval mode first (running statistics), then train mode without dropout (batch statistics) with the
    seeded upstream gradient, recording the gradient of the input and of ``checked_params``.
    """
    torch.manual_seed(seed)
    load_seeded_weights(torch_model, seed)
    torch_model.zero_grad(set_to_none=True)      # a reused model must not add up two cases' gradients
    x = torch.from_numpy(seeded_input(input_shape, seed))
    prefix = f"models/{case}/"
    out = {}
    torch_model.eval()
    with torch.no_grad():
        out[prefix + "eval_logits"] = torch_model(x).numpy()
    _train_without_dropout(torch_model)
    x.requires_grad_(True)
    logits = torch_model(x)
    grad_out = torch.from_numpy(seeded_upstream_gradient(tuple(logits.shape), seed))
    logits.backward(grad_out)
    out[prefix + "train_logits"] = logits.detach().numpy()
    out[prefix + "grad_x"] = x.grad.numpy()
    parameters = dict(torch_model.named_parameters())
    for name in checked_params:
        out[prefix + f"grad/{name}"] = parameters[name].grad.numpy()
    out[prefix + "params"] = np.array(json.dumps({
        "model": our_name, "kwargs": our_kwargs, "seed": seed, "input_shape": list(input_shape),
        "checked_params": list(checked_params), "torch_version": torch.__version__}))
    errors = torch_float32_errors(torch_model, out, case, input_shape, seed, checked_params)
    out[prefix + "torch_float32_error"] = np.array(json.dumps(errors))
    return out


# Perturbed float32 runs per case (besides the plain one); see torch_float32_errors.
PERTURBED_RUNS = 12


def torch_float32_errors(torch_model, arrays, case, input_shape, seed, checked_params):
    """How far PyTorch's float32 runs land from its float64 fixture: the case's float32 conditioning.

    Same seeded weights, input and upstream gradient, cast to float32; relative errors (to the largest
    reference value) of every stored quantity, as ``{"eval_logits": ..., "grad/<name>": ...}``: the
    largest over the plain run and ``PERTURBED_RUNS`` runs whose input and weights are each multiplied
    by ``1 + u * eps32`` (``u`` uniform in [-1, 1], seeded). Float32 arithmetic computes the exact result
    of data perturbed at that scale (backward error analysis), so these runs show what rounding alone
    can do to the case: a ReLU input within rounding distance of 0 flips its mask in some runs and not
    in others (SE-ResNet-18 "identity": 2e-5 in the plain run, 2.5e-3 in some perturbed ones). The
    float32 tests allow a multiple of these (``tests/helpers.py: float32_tolerance``). Leaves the model
    in float32.
    """
    prefix = f"models/{case}/"
    eps = float(np.finfo(np.float32).eps)
    shapes = {name: tuple(t.shape) for name, t in torch_model.state_dict().items()}
    weights = seeded_state_dict(shapes, seed)
    x64 = seeded_input(input_shape, seed)
    errors = {}
    for run in range(PERTURBED_RUNS + 1):
        rng = np.random.default_rng([seed, 2, run])

        def perturbed(value):
            if run == 0 or value.dtype.kind != "f":
                return value
            return value * (1 + eps * rng.uniform(-1.0, 1.0, value.shape))

        torch_model.double().load_state_dict({name: torch.from_numpy(perturbed(value)) for name, value in weights.items()},
                                             strict=True)
        torch_model.float().zero_grad(set_to_none=True)
        x = torch.from_numpy(perturbed(x64).astype(np.float32))
        found = {}
        torch_model.eval()
        with torch.no_grad():
            found["eval_logits"] = relative_error(torch_model(x).numpy(), arrays[prefix + "eval_logits"])
        _train_without_dropout(torch_model)
        x.requires_grad_(True)
        logits = torch_model(x)
        upstream = seeded_upstream_gradient(tuple(logits.shape), seed).astype(np.float32)
        logits.backward(torch.from_numpy(upstream))
        found["train_logits"] = relative_error(logits.detach().numpy(), arrays[prefix + "train_logits"])
        found["grad_x"] = relative_error(x.grad.numpy(), arrays[prefix + "grad_x"])
        parameters = dict(torch_model.named_parameters())
        for name in checked_params:
            found[f"grad/{name}"] = relative_error(parameters[name].grad.numpy(), arrays[prefix + f"grad/{name}"])
        errors = {key: max(value, errors.get(key, 0.0)) for key, value in found.items()}
    return errors
