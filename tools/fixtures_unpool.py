"""PyTorch reference outputs for max pooling with indices + max unpooling: ``tests/fixtures/unpool.npz``.

For every case, PyTorch (float64) runs ``torch.nn.MaxPool2d(..., return_indices=True)`` on a seeded input
``x``, then ``torch.nn.MaxUnpool2d`` on the pooled values with those indices (optionally with an explicit
``output_size``), and backpropagates a seeded ``grad_y`` through the unpooling. Keys:

    unpool/<case>/x, pooled, indices      pooling input, output and PyTorch's flat per-plane indices
    unpool/<case>/y, grad_y, grad_pooled  unpooling output, upstream gradient, gradient of the pooled values
    configs_json    {case: {"pool": MaxPool2d kwargs, "unpool": MaxUnpool2d kwargs, "output_size": list or null}}
    meta/torch_version, meta/numpy_version

Unpooling only moves numbers, so the tests compare exactly. One case uses integer inputs: ties inside
overlapping windows make two outputs share an index. Run through ``python tools/make_fixtures.py --only unpool``.
"""
import json

import numpy as np
import torch

from make_fixtures import save_npz

SEED = 1511
FILE_NAME = "unpool.npz"

# name: (x shape, MaxPool2d kwargs, output_size given to MaxUnpool2d (None: PyTorch's default), integers?)
CASES = {
    "kernel2": ((2, 3, 6, 8), dict(kernel_size=2), None, False),
    "kernel2_odd_size_output_size": ((2, 3, 7, 5), dict(kernel_size=2), "input", False),
    "kernel3_stride2_pad1": ((2, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1), "input", False),
    "kernel3x2_stride2x1_pad1x0": ((1, 3, 6, 5), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), "input", False),
    "ceil_mode_kernel3_stride2": ((2, 2, 8, 8), dict(kernel_size=3, stride=2, ceil_mode=True), "input", False),
    "overlapping_ties_kernel3_stride1": ((2, 2, 5, 5), dict(kernel_size=3, stride=1, padding=1), "input", True),
}


def generate(out_dir):
    rng = np.random.default_rng(SEED)
    arrays, configs = {}, {}
    for case, (x_shape, pool_kwargs, output_size, integers) in CASES.items():
        x = rng.integers(-2, 3, x_shape).astype(np.float64) if integers else rng.standard_normal(x_shape)
        pooled, indices = torch.nn.MaxPool2d(**pool_kwargs, return_indices=True)(torch.from_numpy(x))
        unpool_kwargs = {key: pool_kwargs[key] for key in ("kernel_size", "stride", "padding") if key in pool_kwargs}
        size = list(x_shape[2:]) if output_size == "input" else None
        pooled = pooled.detach().requires_grad_(True)
        y = torch.nn.MaxUnpool2d(**unpool_kwargs)(pooled, indices, output_size=size)
        grad_y = rng.standard_normal(tuple(y.shape))
        y.backward(torch.from_numpy(grad_y))
        configs[case] = dict(pool=pool_kwargs, unpool=unpool_kwargs, output_size=size)
        values = dict(x=x, pooled=pooled.detach().numpy(), indices=indices.numpy(), y=y.detach().numpy(),
                      grad_y=grad_y, grad_pooled=pooled.grad.numpy())
        arrays.update({f"unpool/{case}/{key}": value for key, value in values.items()})
    arrays["configs_json"] = json.dumps(configs, sort_keys=True)
    arrays["meta/torch_version"] = torch.__version__
    arrays["meta/numpy_version"] = np.__version__
    return [save_npz(out_dir / FILE_NAME, arrays)]
