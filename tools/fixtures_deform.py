"""PyTorch reference outputs for the deformable convolution: ``tests/fixtures/deform.npz``.

torchvision's compiled ``deform_conv2d`` does not load with the CPU PyTorch here, so the reference is
the autograd re-statement of its semantics in ``tools/torch_reference_deform.py``. For every case below,
with seeded inputs, it computes in float64 the output ``y`` and, for a seeded upstream gradient
``grad_y``, the gradients of x, offset, weight, bias and mask. Keys:

    deform/<case>/x, offset, weight, bias, mask     inputs (bias / mask only in cases that have them)
    deform/<case>/y, grad_y, grad_<input>           outputs
    configs_json    {case: {"params": keyword arguments, "torch_float32_error": {quantity: error}}}
    meta/torch_version, meta/numpy_version

``torch_float32_error`` is how far the same reference run in float32 (inputs rounded to float32) lands
from the float64 result, relative to the largest magnitude of that quantity: the float32 conditioning of
the case, from which the float32 tests derive their tolerance. Offsets are ``1.5 * N(0, 1)`` pixels, so
many samples fall partly or wholly outside the image. Run through
``python tools/make_fixtures.py --only deform``.
"""
import json

import numpy as np
import torch

from make_fixtures import save_npz
from torch_reference_deform import deform_conv2d

SEED = 1703
FILE_NAME = "deform.npz"

# name: (x shape (N, C_in, H, W), weight shape (C_out, C_in/groups, kH, kW), offset_groups, bias?, mask?,
#        keyword arguments)
CASES = {
    "v1_3x3_pad1": ((2, 3, 6, 5), (4, 3, 3, 3), 1, True, False, dict(stride=1, padding=1, dilation=1)),
    "v2_3x3_pad1_mask": ((2, 3, 6, 5), (4, 3, 3, 3), 1, True, True, dict(stride=1, padding=1, dilation=1)),
    "v2_stride2_offset_groups2": ((2, 4, 7, 6), (5, 4, 3, 3), 2, False, True, dict(stride=2, padding=1, dilation=1)),
    "v2_groups2_dilation2": ((1, 4, 7, 7), (6, 2, 3, 3), 1, True, True, dict(stride=1, padding=2, dilation=2)),
    "v1_kernel2x3_stride2x1_offset_groups4": ((2, 4, 5, 6), (3, 4, 2, 3), 4, True, False,
                                              dict(stride=(2, 1), padding=(0, 1), dilation=1)),
}
QUANTITIES = ("y", "grad_x", "grad_offset", "grad_weight", "grad_bias", "grad_mask")


def _inputs(rng, x_shape, weight_shape, offset_groups, has_bias, has_mask, params):
    """Seeded float64 inputs of one case (offsets 1.5 N(0, 1) pixels, mask uniform in [0, 1))."""
    stride, padding, dilation = (params[key] if isinstance(params[key], tuple) else (params[key],) * 2
                                 for key in ("stride", "padding", "dilation"))
    N, _, H, W = x_shape
    C_out, _, kH, kW = weight_shape
    H_out = (H + 2 * padding[0] - dilation[0] * (kH - 1) - 1) // stride[0] + 1
    W_out = (W + 2 * padding[1] - dilation[1] * (kW - 1) - 1) // stride[1] + 1
    inputs = dict(x=rng.standard_normal(x_shape),
                  offset=1.5 * rng.standard_normal((N, 2 * offset_groups * kH * kW, H_out, W_out)),
                  weight=rng.standard_normal(weight_shape))
    if has_bias:
        inputs["bias"] = rng.standard_normal(C_out)
    if has_mask:
        inputs["mask"] = rng.random((N, offset_groups * kH * kW, H_out, W_out))
    return inputs


def _run(inputs, grad_y, params, dtype):
    """y and the gradients of every input, by autograd, with every array cast to ``dtype``."""
    tensors = {name: torch.from_numpy(value.astype(dtype)).requires_grad_(True) for name, value in inputs.items()}
    y = deform_conv2d(**tensors, **params)
    y.backward(torch.from_numpy(grad_y.astype(dtype)))
    results = {"y": y.detach().numpy()}
    results.update({f"grad_{name}": tensor.grad.numpy() for name, tensor in tensors.items()})
    return results


def generate(out_dir):
    rng = np.random.default_rng(SEED)
    arrays, configs = {}, {}
    for case, (x_shape, weight_shape, offset_groups, has_bias, has_mask, params) in CASES.items():
        inputs = _inputs(rng, x_shape, weight_shape, offset_groups, has_bias, has_mask, params)
        y_shape = deform_conv2d(**{k: torch.from_numpy(v) for k, v in inputs.items()}, **params).shape
        grad_y = rng.standard_normal(tuple(y_shape))
        exact = _run(inputs, grad_y, params, np.float64)
        rounded = _run(inputs, grad_y, params, np.float32)
        errors = {key: float(np.max(np.abs(rounded[key] - exact[key])) / np.max(np.abs(exact[key])))
                  for key in exact}
        configs[case] = dict(params=params, torch_float32_error=errors)
        arrays.update({f"deform/{case}/{key}": value for key, value in {**inputs, "grad_y": grad_y, **exact}.items()})
    arrays["configs_json"] = json.dumps(configs, sort_keys=True)
    arrays["meta/torch_version"] = torch.__version__
    arrays["meta/numpy_version"] = np.__version__
    return [save_npz(out_dir / FILE_NAME, arrays)]
