"""PyTorch reference outputs for the kernels: ``tests/fixtures/kernels.npz``.

For every configuration below, with fixed-seed random inputs, PyTorch (float64) computes the forward
output and, for a random upstream gradient ``grad_y``, the gradients with respect to the input, weight
and bias (``torch.autograd``). One compressed file holds them all, under keys

    <family>/<case>/x, weight, bias, y, grad_y, grad_x, grad_weight, grad_bias, argmax (max pool)
    <family>/<case>/params     JSON: the keyword arguments of the tinycnn kernel (torch.nn.functional's)
    <family>/<case>/torch_float32_error   JSON {"y": ..., "grad_x": ...}: PyTorch's own float32 run (inputs
                               cast) against its float64 one, relative; the float32 tests' tolerance
    meta/torch_version, meta/numpy_version, meta/seed

with families ``conv2d``, ``conv_transpose2d``, ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``.
A case without bias has no ``bias``/``grad_bias`` keys. Shapes are small: the whole file stays well
under 300 KB. Run through ``python tools/make_fixtures.py --only kernels``.
"""
import json

import numpy as np
import torch
import torch.nn.functional as F

from make_fixtures import relative_error, save_npz

SEED = 2024
FILE_NAME = "kernels.npz"

# name: (x shape (N, C_in, H, W), weight shape (C_out, C_in/groups, kH, kW), bias?, keyword arguments)
CONV2D_CASES = {
    "standard": ((2, 3, 8, 7), (4, 3, 3, 3), True, dict(stride=1, padding=0, dilation=1, groups=1)),
    "stride2": ((2, 3, 8, 7), (4, 3, 3, 3), True, dict(stride=2, padding=1, dilation=1, groups=1)),
    "padding2": ((2, 3, 6, 5), (4, 3, 3, 3), True, dict(stride=1, padding=2, dilation=1, groups=1)),
    "dilation2": ((2, 3, 7, 6), (4, 3, 3, 3), True, dict(stride=1, padding=1, dilation=2, groups=1)),
    "groups2": ((2, 4, 6, 5), (6, 2, 3, 3), True, dict(stride=1, padding=1, dilation=1, groups=2)),
    "depthwise_multiplier2": ((2, 3, 6, 5), (6, 1, 3, 3), True, dict(stride=1, padding=1, dilation=1, groups=3)),
    "depthwise_stride2": ((2, 4, 8, 7), (4, 1, 3, 3), True, dict(stride=2, padding=1, dilation=1, groups=4)),
    "pointwise_no_bias": ((2, 4, 5, 6), (5, 4, 1, 1), False, dict(stride=1, padding=0, dilation=1, groups=1)),
    "pointwise_groups2": ((2, 4, 5, 6), (6, 2, 1, 1), True, dict(stride=1, padding=0, dilation=1, groups=2)),
    "kernel3x5_stride2x1": ((2, 3, 6, 7), (4, 3, 3, 5), True,
                            dict(stride=(2, 1), padding=(1, 2), dilation=1, groups=1)),
    # stride > kernel: some input pixels are read by no window, their gradient must be exactly 0
    "stride3_uncovered": ((2, 3, 8, 7), (4, 3, 2, 2), True, dict(stride=3, padding=0, dilation=1, groups=1)),
}

# name: (x shape (N, C_in, H, W), weight shape (C_in, C_out/groups, kH, kW), bias?, keyword arguments)
CONV_TRANSPOSE2D_CASES = {
    "stride2_output_padding1": ((2, 3, 5, 4), (3, 4, 3, 3), True,
                                dict(stride=2, padding=1, output_padding=1, groups=1, dilation=1)),
    "groups2": ((2, 4, 5, 5), (4, 3, 3, 3), True, dict(stride=1, padding=1, output_padding=0, groups=2, dilation=1)),
    # output_padding may reach dilation - 1 even at stride 1
    "dilation2": ((2, 3, 4, 5), (3, 2, 3, 3), True, dict(stride=1, padding=1, output_padding=1, groups=1, dilation=2)),
    "kernel4_stride2_no_bias": ((2, 2, 4, 3), (2, 3, 4, 4), False,
                                dict(stride=2, padding=1, output_padding=0, groups=1, dilation=1)),
    "kernel3x2_stride2x1": ((2, 3, 4, 5), (3, 2, 3, 2), True,
                            dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=1, dilation=1)),
}

# name: (x shape, keyword arguments, integer-valued x?)  integer values in a small range make many ties
MAX_POOL2D_CASES = {
    "kernel3_stride2_pad1": ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1), False),
    "kernel2_default_stride": ((2, 3, 8, 7), dict(kernel_size=2, stride=None, padding=0), False),
    "kernel3x2_stride2x1_pad1x0": ((2, 3, 7, 6), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), False),
    "ties_kernel3_stride1_pad1": ((2, 3, 6, 5), dict(kernel_size=3, stride=1, padding=1), True),
}
AVG_POOL2D_CASES = {
    "kernel3_stride2_pad1": ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1)),
    "kernel2_default_stride": ((2, 3, 8, 7), dict(kernel_size=2, stride=None, padding=0)),
    "kernel3_stride1_pad1": ((2, 3, 6, 5), dict(kernel_size=3, stride=1, padding=1)),
    "kernel3x2_stride2x1_pad1x0": ((2, 3, 7, 6), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0))),
}
ADAPTIVE_AVG_POOL2D_CASES = {
    "global_7x6": (2, 3, 7, 6),
    "global_1x1": (2, 4, 1, 1),
}


def _with_grads(function, inputs, rng):
    """Run ``function(**inputs)`` in float64 with autograd; return y, grad_y and ``grad_<name>`` per input.

    ``inputs`` maps names to NumPy arrays (None is passed through); ``grad_y`` is a seeded standard-normal
    upstream gradient of y's shape. The same run in float32 (inputs and grad_y cast) gives
    ``torch_float32_error``: each output's relative error against float64, as JSON.
    """
    grad_y = None
    results = {}
    for dtype in (np.float64, np.float32):
        tensors = {name: None if value is None else torch.from_numpy(value.astype(dtype)).requires_grad_(True)
                   for name, value in inputs.items()}
        y = function(**tensors)
        if grad_y is None:
            grad_y = rng.standard_normal(tuple(y.shape))
        y.backward(torch.from_numpy(grad_y.astype(dtype)))
        results[dtype] = {"y": y.detach().numpy(), **{f"grad_{name}": tensor.grad.numpy()
                                                     for name, tensor in tensors.items() if tensor is not None}}
    arrays = {**results[np.float64], "grad_y": grad_y}
    arrays.update({name: value for name, value in inputs.items() if value is not None})
    arrays["torch_float32_error"] = json.dumps({key: relative_error(value, arrays[key])
                                                for key, value in results[np.float32].items()})
    return arrays


def _conv_family(family, cases, torch_function, rng):
    arrays = {}
    for case, (x_shape, weight_shape, has_bias, params) in cases.items():
        # conv2d weight (C_out, C_in/G, kH, kW); transposed (C_in, C_out/G, kH, kW)
        C_out = weight_shape[0] if family == "conv2d" else weight_shape[1] * params["groups"]
        inputs = dict(x=rng.standard_normal(x_shape), weight=rng.standard_normal(weight_shape),
                      bias=rng.standard_normal(C_out) if has_bias else None)
        result = _with_grads(lambda x, weight, bias: torch_function(x, weight, bias, **params), inputs, rng)
        result["params"] = json.dumps(params)
        arrays.update({f"{family}/{case}/{key}": value for key, value in result.items()})
    return arrays


def _max_pool(rng):
    arrays = {}
    for case, (x_shape, params, integer_valued) in MAX_POOL2D_CASES.items():
        x = rng.integers(-2, 2, x_shape).astype(np.float64) if integer_valued else rng.standard_normal(x_shape)
        _, argmax = F.max_pool2d(torch.from_numpy(x), **params, return_indices=True)
        result = _with_grads(lambda x: F.max_pool2d(x, **params), dict(x=x), rng)
        result.update(argmax=argmax.numpy(), params=json.dumps(params))
        arrays.update({f"max_pool2d/{case}/{key}": value for key, value in result.items()})
    return arrays


def _avg_pools(rng):
    arrays = {}
    for case, (x_shape, params) in AVG_POOL2D_CASES.items():
        result = _with_grads(lambda x: F.avg_pool2d(x, **params), dict(x=rng.standard_normal(x_shape)), rng)
        result["params"] = json.dumps(params)
        arrays.update({f"avg_pool2d/{case}/{key}": value for key, value in result.items()})
    for case, x_shape in ADAPTIVE_AVG_POOL2D_CASES.items():
        result = _with_grads(lambda x: F.adaptive_avg_pool2d(x, 1), dict(x=rng.standard_normal(x_shape)), rng)
        result["params"] = json.dumps(dict(output_size=1))
        arrays.update({f"adaptive_avg_pool2d/{case}/{key}": value for key, value in result.items()})
    return arrays


def generate(out_dir):
    """Compute every case with PyTorch and write ``out_dir/kernels.npz``; return ``[path]``."""
    rng = np.random.default_rng(SEED)
    arrays = {"meta/torch_version": torch.__version__, "meta/numpy_version": np.__version__, "meta/seed": SEED}
    arrays.update(_conv_family("conv2d", CONV2D_CASES, F.conv2d, rng))
    arrays.update(_conv_family("conv_transpose2d", CONV_TRANSPOSE2D_CASES, F.conv_transpose2d, rng))
    arrays.update(_max_pool(rng))
    arrays.update(_avg_pools(rng))
    return [save_npz(out_dir / FILE_NAME, arrays)]
