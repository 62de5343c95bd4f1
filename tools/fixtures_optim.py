"""PyTorch reference numbers for tinycnn.optim and tinycnn.losses -> tests/fixtures/optim.npz.

Run through ``python tools/make_fixtures.py`` (which calls :func:`generate`) or directly:
``python tools/fixtures_optim.py [out_dir]``. Needs torch; the tests that read the file do not.

Contents (all float64, a few kB):

* ``configs_json``: the optimizer and scheduler configurations below, as JSON, so the tests build
  exactly the same optimizers;
* ``init/param{i}`` and ``grads/param{i}`` (steps, *shape): the start values and the gradient fed
  at each step; ``<optimizer config>/param{i}`` (steps, *shape): PyTorch's parameters after each step;
* ``<scheduler config>/lr`` (epochs + 1, groups): ``get_last_lr()`` after construction and each step;
* ``ce/...`` and ``mse/...``: losses and gradients for every reduction (and label smoothing).
"""
import json
import pathlib
import sys

import numpy as np

FILE_NAME = "optim.npz"
STEPS = 6
PARAM_SHAPES = [(3, 4), (4,)]

# name -> (class, keyword arguments, param groups as lists of parameter indices or None)
OPTIMIZER_CONFIGS = {
    "sgd_plain": ("SGD", {"lr": 0.1}, None),
    "sgd_momentum": ("SGD", {"lr": 0.1, "momentum": 0.9}, None),
    "sgd_momentum_dampening": ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}, None),
    "sgd_momentum_weight_decay": ("SGD", {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.05}, None),
    "sgd_nesterov_weight_decay": ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True,
                                          "weight_decay": 0.01}, None),
    "sgd_groups": ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1},
                   [{"params": [0]}, {"params": [1], "lr": 0.01, "weight_decay": 0.0}]),
    "adam": ("Adam", {"lr": 0.01}, None),
    "adam_weight_decay": ("Adam", {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1}, None),
    "adamw": ("AdamW", {"lr": 0.01, "weight_decay": 0.1}, None),
    "adamw_groups": ("AdamW", {"lr": 0.02, "betas": [0.9, 0.95], "weight_decay": 0.05},
                     [{"params": [0]}, {"params": [1], "weight_decay": 0.0}]),
}

# name -> (list of (class, keyword arguments); milestones for SequentialLR or None; epochs)
SCHEDULER_CONFIGS = {
    "step_lr": ([("StepLR", {"step_size": 3, "gamma": 0.5})], None, 12),
    "cosine": ([("CosineAnnealingLR", {"T_max": 10, "eta_min": 0.001})], None, 14),
    "linear_warmup": ([("LinearLR", {"start_factor": 0.25, "end_factor": 1.0, "total_iters": 4})], None, 8),
    "warmup_cosine": ([("LinearLR", {"start_factor": 0.1, "end_factor": 1.0, "total_iters": 3}),
                       ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.0})], [3], 12),
}
SCHEDULER_BASE_LRS = [0.1, 0.01]          # two param groups, to check per-group base lrs

LABEL_SMOOTHINGS = [0.0, 0.1, 0.3]
REDUCTIONS = ["mean", "sum", "none"]


def _inputs():
    rng = np.random.default_rng(20240611)
    arrays = {}
    for i, shape in enumerate(PARAM_SHAPES):
        arrays[f"init/param{i}"] = rng.standard_normal(shape)
        arrays[f"grads/param{i}"] = rng.standard_normal((STEPS,) + shape)
    arrays["ce/logits"] = 3.0 * rng.standard_normal((6, 5))
    arrays["ce/targets"] = rng.integers(0, 5, 6).astype(np.int64)
    arrays["ce/upstream"] = rng.uniform(0.5, 1.5, 6)           # grad_output for reduction='none'
    arrays["mse/prediction"] = rng.standard_normal((4, 3))
    arrays["mse/target"] = rng.standard_normal((4, 3))
    arrays["mse/upstream"] = rng.uniform(0.5, 1.5, (4, 3))
    return arrays


def _torch_groups(params, groups):
    if groups is None:
        return params
    return [{**{k: v for k, v in group.items() if k != "params"}, "params": [params[i] for i in group["params"]]}
            for group in groups]


def _optimizer_results(torch, arrays):
    results = {}
    for name, (class_name, kwargs, groups) in OPTIMIZER_CONFIGS.items():
        params = [torch.tensor(arrays[f"init/param{i}"], requires_grad=True) for i in range(len(PARAM_SHAPES))]
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        optimizer = getattr(torch.optim, class_name)(_torch_groups(params, groups), foreach=False, **kwargs)
        history = [[] for _ in params]
        for step in range(STEPS):
            for i, param in enumerate(params):
                param.grad = torch.tensor(arrays[f"grads/param{i}"][step])
            optimizer.step()
            for i, param in enumerate(params):
                history[i].append(param.detach().numpy().copy())
        for i, values in enumerate(history):
            results[f"{name}/param{i}"] = np.stack(values)
    return results


def _scheduler_results(torch):
    results = {}
    for name, (schedulers, milestones, epochs) in SCHEDULER_CONFIGS.items():
        groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in SCHEDULER_BASE_LRS]
        optimizer = torch.optim.SGD(groups, lr=SCHEDULER_BASE_LRS[0])
        built = [getattr(torch.optim.lr_scheduler, cls)(optimizer, **kwargs) for cls, kwargs in schedulers]
        scheduler = built[0] if milestones is None else torch.optim.lr_scheduler.SequentialLR(
            optimizer, built, milestones=milestones)
        lrs = [[group["lr"] for group in optimizer.param_groups]]
        for _ in range(epochs):
            optimizer.step()
            scheduler.step()
            lrs.append([group["lr"] for group in optimizer.param_groups])
        results[f"{name}/lr"] = np.array(lrs)
    return results


def _loss_results(torch, arrays):
    results = {}
    logits = arrays["ce/logits"]
    for scale_name, scale in (("", 1.0), ("large_", 300.0)):       # large logits: numerical stability
        for smoothing in LABEL_SMOOTHINGS:
            for reduction in REDUCTIONS:
                z = torch.tensor(scale * logits, requires_grad=True)
                loss = torch.nn.functional.cross_entropy(z, torch.tensor(arrays["ce/targets"]),
                                                         reduction=reduction, label_smoothing=smoothing)
                upstream = torch.tensor(arrays["ce/upstream"]) if reduction == "none" else None
                loss.backward(upstream)
                key = f"ce/{scale_name}ls{smoothing}_{reduction}"
                results[f"{key}/loss"] = loss.detach().numpy().copy()
                results[f"{key}/grad"] = z.grad.numpy().copy()
    for reduction in REDUCTIONS:
        prediction = torch.tensor(arrays["mse/prediction"], requires_grad=True)
        loss = torch.nn.functional.mse_loss(prediction, torch.tensor(arrays["mse/target"]), reduction=reduction)
        loss.backward(torch.tensor(arrays["mse/upstream"]) if reduction == "none" else None)
        results[f"mse/{reduction}/loss"] = loss.detach().numpy().copy()
        results[f"mse/{reduction}/grad"] = prediction.grad.numpy().copy()
    return results


def generate(out_dir):
    """Write ``optim.npz`` into ``out_dir``; return the list of written paths."""
    import torch

    torch.set_default_dtype(torch.float64)
    try:
        arrays = _inputs()
        configs = {"steps": STEPS, "optimizers": OPTIMIZER_CONFIGS, "schedulers": SCHEDULER_CONFIGS,
                   "scheduler_base_lrs": SCHEDULER_BASE_LRS, "label_smoothings": LABEL_SMOOTHINGS,
                   "reductions": REDUCTIONS, "torch_version": torch.__version__}
        arrays["configs_json"] = np.array(json.dumps(configs))
        arrays.update(_optimizer_results(torch, arrays))
        arrays.update(_scheduler_results(torch))
        arrays.update(_loss_results(torch, arrays))
    finally:
        torch.set_default_dtype(torch.float32)
    from make_fixtures import save_npz          # tools/ is on sys.path (make_fixtures.py or direct run)

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [save_npz(out_dir / FILE_NAME, arrays)]


if __name__ == "__main__":
    default = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
    for written in generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else default):
        print(f"wrote {written}")
