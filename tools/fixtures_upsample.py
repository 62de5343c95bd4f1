"""PyTorch reference outputs for ``nn.Upsample`` with non-integer scale factors: ``tests/fixtures/upsample.npz``.

``tests/fixtures/layers.npz`` covers integer factors and explicit sizes; this file adds what PyTorch allows
beyond them: non-integer and per-axis scale factors (up and down), ``align_corners=True`` with a scale
factor, and ``recompute_scale_factor=True``, for ``mode='bilinear'`` and ``'nearest'``. For each case PyTorch
runs ``torch.nn.Upsample(**kwargs)`` forward and backward, in float64 and (inputs rounded) in float32. Keys:

    upsample/<case>/x, grad_y, y, grad_x     float64 inputs and PyTorch's float64 results
    configs_json    {case: {"kwargs": Upsample kwargs, "torch_float32_error": {"y": e, "grad_x": e}}}
    meta/torch_version, meta/numpy_version

``torch_float32_error`` is PyTorch's own float32 result's distance from its float64 one, relative to the
largest magnitude: the tests' float32 tolerance is derived from it. Run through
``python tools/make_fixtures.py --only upsample``.
"""
import json

import numpy as np
import torch

from make_fixtures import save_npz

SEED = 1707
FILE_NAME = "upsample.npz"

# name: (x shape, torch.nn.Upsample keyword arguments)
CASES = {
    "bilinear_x1.7": ((2, 2, 5, 4), dict(scale_factor=1.7, mode="bilinear")),
    "bilinear_x0.6_down": ((2, 2, 7, 9), dict(scale_factor=0.6, mode="bilinear")),
    "bilinear_x2.5x1.3_per_axis": ((1, 3, 3, 5), dict(scale_factor=(2.5, 1.3), mode="bilinear")),
    "bilinear_x1.3_same_height": ((1, 2, 3, 6), dict(scale_factor=1.3, mode="bilinear")),  # H 3 -> 3
    "bilinear_x1.7_align_corners": ((2, 2, 5, 4), dict(scale_factor=1.7, mode="bilinear", align_corners=True)),
    "bilinear_x0.75_align_corners": ((1, 2, 8, 6), dict(scale_factor=0.75, mode="bilinear", align_corners=True)),
    "bilinear_x1.7_recompute": ((2, 2, 5, 4), dict(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)),
    "nearest_x1.7": ((2, 2, 5, 4), dict(scale_factor=1.7, mode="nearest")),
    "nearest_x0.6x2.5": ((1, 2, 7, 3), dict(scale_factor=(0.6, 2.5), mode="nearest")),
    "nearest_x1.7_recompute": ((2, 2, 5, 4), dict(scale_factor=1.7, mode="nearest", recompute_scale_factor=True)),
}


def _run(x, grad_y, kwargs, dtype):
    x_tensor = torch.from_numpy(x.astype(dtype)).requires_grad_(True)
    y = torch.nn.Upsample(**kwargs)(x_tensor)
    y.backward(torch.from_numpy(grad_y.astype(dtype)))
    return {"y": y.detach().numpy(), "grad_x": x_tensor.grad.numpy()}


def generate(out_dir):
    rng = np.random.default_rng(SEED)
    arrays, configs = {}, {}
    for case, (x_shape, kwargs) in CASES.items():
        x = rng.standard_normal(x_shape)
        y_shape = tuple(torch.nn.Upsample(**kwargs)(torch.from_numpy(x)).shape)
        grad_y = rng.standard_normal(y_shape)
        exact = _run(x, grad_y, kwargs, np.float64)
        rounded = _run(x, grad_y, kwargs, np.float32)
        errors = {key: float(np.max(np.abs(rounded[key] - exact[key])) / np.max(np.abs(exact[key]))) for key in exact}
        configs[case] = dict(kwargs=kwargs, torch_float32_error=errors)
        arrays.update({f"upsample/{case}/{key}": value for key, value in dict(x=x, grad_y=grad_y, **exact).items()})
    arrays["configs_json"] = json.dumps(configs, sort_keys=True)
    arrays["meta/torch_version"] = torch.__version__
    arrays["meta/numpy_version"] = np.__version__
    return [save_npz(out_dir / FILE_NAME, arrays)]
