"""PyTorch reference outputs for tinycnn.quantize -> tests/fixtures/quantize.npz.

Run through ``python tools/make_fixtures.py`` (which calls :func:`generate`) or directly:
``python tools/fixtures_quantize.py [out_dir]``. Needs torch; the tests that read the file do not.

Every case stores its input ``<case>/x``, its arguments and PyTorch's result:

* ``torch.fake_quantize_per_tensor_affine`` (float32 and float64 input) and
  ``torch.fake_quantize_per_channel_affine`` (axis 0 and 1) forward values, and the straight-through
  gradient of ``sum(w * y)`` for a random ``w``;
* **ties**: inputs that are exact half-steps of the grid (``(k + 0.5) * scale`` with a power-of-two scale,
  so ``x * (1/scale)`` is exact), where the rounding rule decides (PyTorch: half to even);
* ``torch.ao.quantization.MinMaxObserver`` scale and zero point for affine (quint8) and symmetric (qint8)
  ranges.
"""
import json
import pathlib
import sys

import numpy as np

FILE_NAME = "quantize.npz"

# name -> (dtype, per-tensor (scale, zero_point) or per-channel axis, quant_min, quant_max)
PER_TENSOR_CASES = {
    "uint8_f32": ("float32", 0.0371, 113, 0, 255),
    "int8_f32": ("float32", 0.0213, 0, -128, 127),
    "int4_f32": ("float32", 0.3, 2, -8, 7),
    "uint8_f64": ("float64", 0.0371, 113, 0, 255),
}
PER_CHANNEL_CASES = {
    "axis0_int8": ("float32", 0, -128, 127),
    "axis1_uint8": ("float32", 1, 0, 255),
}
OBSERVER_CASES = {
    "affine_quint8": ("per_tensor_affine", -1.7, 3.9),
    "symmetric_qint8": ("per_tensor_symmetric", -1.7, 3.9),
    "positive_only_quint8": ("per_tensor_affine", 0.25, 6.0),
}


def _fake_quant_results(torch):
    rng = np.random.default_rng(20261130)
    arrays = {}
    for name, (dtype, scale, zero_point, qmin, qmax) in PER_TENSOR_CASES.items():
        x = (rng.standard_normal((4, 3, 5, 5)) * 3).astype(dtype)
        w = rng.standard_normal(x.shape).astype(dtype)
        xt = torch.tensor(x, requires_grad=True)
        y = torch.fake_quantize_per_tensor_affine(xt, scale, zero_point, qmin, qmax)
        (y * torch.tensor(w)).sum().backward()
        arrays.update({f"{name}/x": x, f"{name}/w": w, f"{name}/y": y.detach().numpy(),
                       f"{name}/grad": xt.grad.numpy()})
    for name, (dtype, axis, qmin, qmax) in PER_CHANNEL_CASES.items():
        x = (rng.standard_normal((4, 3, 5, 5)) * 2).astype(dtype)
        channels = x.shape[axis]
        scale = rng.uniform(0.01, 0.1, channels)
        zero_point = rng.integers(qmin, qmax + 1, channels).astype(np.int32)
        w = rng.standard_normal(x.shape).astype(dtype)
        xt = torch.tensor(x, requires_grad=True)
        y = torch.fake_quantize_per_channel_affine(xt, torch.tensor(scale, dtype=torch.float32),
                                                   torch.tensor(zero_point), axis, qmin, qmax)
        (y * torch.tensor(w)).sum().backward()
        arrays.update({f"{name}/x": x, f"{name}/w": w, f"{name}/scale": scale, f"{name}/zero_point": zero_point,
                       f"{name}/y": y.detach().numpy(), f"{name}/grad": xt.grad.numpy()})
    # ties: x = (k + 0.5) * 2^-4 for k = -20..20, exactly halfway between two grid points
    ties = ((np.arange(-20, 21) + 0.5) * 0.0625).astype(np.float32)
    for zero_point in (0, 3):
        y = torch.fake_quantize_per_tensor_affine(torch.tensor(ties), 0.0625, zero_point, -128, 127)
        arrays[f"ties_zp{zero_point}/x"] = ties
        arrays[f"ties_zp{zero_point}/y"] = y.numpy()
    return arrays


def _observer_results(torch):
    from torch.ao.quantization import MinMaxObserver

    arrays = {}
    for name, (scheme, low, high) in OBSERVER_CASES.items():
        qscheme = getattr(torch, scheme)
        dtype = torch.qint8 if scheme == "per_tensor_symmetric" else torch.quint8
        observer = MinMaxObserver(dtype=dtype, qscheme=qscheme)
        observer(torch.tensor([low, high]))
        scale, zero_point = observer.calculate_qparams()
        arrays.update({f"observer_{name}/range": np.array([low, high], dtype=np.float32),
                       f"observer_{name}/scale": scale.numpy().astype(np.float64),
                       f"observer_{name}/zero_point": zero_point.numpy().astype(np.int64)})
    return arrays


def generate(out_dir):
    import torch

    arrays = _fake_quant_results(torch)
    arrays.update(_observer_results(torch))
    configs = {"per_tensor": PER_TENSOR_CASES, "per_channel": PER_CHANNEL_CASES, "observers": OBSERVER_CASES}
    arrays["configs_json"] = np.array(json.dumps(configs))
    arrays["meta/torch_version"] = np.array(torch.__version__)
    from make_fixtures import save_npz          # tools/ is on sys.path (make_fixtures.py or direct run)

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [save_npz(out_dir / FILE_NAME, arrays)]


if __name__ == "__main__":
    default = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
    for written in generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else default):
        print(f"wrote {written}")
