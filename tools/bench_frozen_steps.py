"""Time each step of a frozen batch-1 model against PyTorch's ``conv2d`` with the batch norm folded in.

Usage (needs ``pip install ".[reference]"``; torchvision is not needed)::

    python tools/bench_frozen_steps.py                                  # MobileNet V2, 1 x 3 x 224 x 224
    python tools/bench_frozen_steps.py --model mobilenet_v3_large --repeat 40
    python tools/bench_frozen_steps.py --width-mult 0.5 --json steps.json

``tinycnn bench models`` compares whole forwards; this says *which layers* hold a frozen model where it
is. The model is frozen (``tinycnn.nn.freeze``) and run once on a random image while a forward hook on
each frozen step (:class:`tinycnn.nn.FrozenConvNormActivation`: convolution, batch norm, activation)
records its input. Then each step is timed on its own input against what an inference engine would run
for it in PyTorch: ``F.conv2d`` with the batch norm folded into the weights and bias (``w * scale``,
``bias * scale + shift``), then the step's clip (ReLU / ReLU6) or hard swish. Both get the same weights
and input, and the same number of threads; the two alternate in turns of five runs
(:func:`tinycnn.bench.time_interleaved`), and each step's medians, their ratio and the largest difference
of the outputs (relative to the largest output) are printed, with the CPU and its vector extensions.
The squeeze-and-excitation blocks, residual adds, pooling and classifier are not steps and are not
timed here.

A step timed alone runs with its weights and input in cache, as it would not inside the model: the sum
of the steps is less than a frozen forward takes. Read the ratios, step against step.
"""
import argparse
import json
import pathlib
import statistics
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recorded_steps(frozen, x):
    """``[(step, its input), ...]`` of every frozen step, in the order a forward of ``x`` calls them."""
    from tinycnn.nn import FrozenConvNormActivation

    steps = [module for module in frozen.module.modules() if isinstance(module, FrozenConvNormActivation)]
    inputs = {}

    def record(module, arguments, output):          # returns None: the output stays the step's own
        inputs.setdefault(module, arguments[0])

    handles = [step.register_forward_hook(record) for step in steps]
    try:
        frozen(x)
    finally:
        for handle in handles:
            handle.remove()
    return [(step, inputs[step]) for step in steps if step in inputs]


def _torch_step(step, x, torch):
    """PyTorch's forward for ``step`` on ``x``: ``F.conv2d`` with the batch norm folded in, then the clip."""
    functional = torch.nn.functional
    conv = step._modules["0"]
    scale, shift, low, high, hardswish = step._epilogue
    weight = torch.from_numpy(np.ascontiguousarray(step._weight * scale[:, None, None, None]))     # (C_out, ...)
    bias = torch.from_numpy(np.ascontiguousarray(shift if step._bias is None else step._bias * scale + shift))
    x_torch = torch.from_numpy(x)

    def forward():
        y = functional.conv2d(x_torch, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        if hardswish:
            return functional.hardswish(y)
        return torch.clamp_(y, float(low), float(high)) if np.isfinite(low) or np.isfinite(high) else y

    return forward


def _kind(step):
    conv = step._modules["0"]
    if conv.kernel_size == (1, 1):
        return "pointwise"
    if conv.groups == conv.in_channels:
        return "depthwise"
    return "grouped" if conv.groups > 1 else "conv"


def run(model="mobilenet_v2", width_mult=1.0, size=224, repeat=20, seed=0):
    """One row per frozen step: ``{"step", "kind", "input", "out_channels", "stride", "ours_ms", "torch_ms",
    "ratio", "difference"}`` (``difference``: the largest difference of the two outputs relative to the
    largest value of PyTorch's), plus the totals: ``(rows, totals)``."""
    import numba
    import torch

    from tinycnn import models
    from tinycnn.bench import time_interleaved
    from tinycnn.nn import freeze

    torch.set_num_threads(numba.get_num_threads())
    arguments = {} if width_mult == 1.0 else {"width_mult": width_mult}
    ours = models.get_model(model, num_classes=1000, **arguments)
    frozen = freeze(ours)
    x = np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)
    rows = []
    with torch.no_grad():
        for index, (step, step_input) in enumerate(recorded_steps(frozen, x)):
            our_forward = (lambda step=step, step_input=step_input: step(step_input))
            their_forward = _torch_step(step, step_input, torch)
            expected = their_forward().numpy()
            difference = float(np.abs(our_forward() - expected).max() / max(float(np.abs(expected).max()), 1e-30))
            our_times, their_times = time_interleaved([our_forward, their_forward], repeat)
            ours_ms, torch_ms = statistics.median(our_times), statistics.median(their_times)
            conv = step._modules["0"]
            rows.append({"step": index, "kind": _kind(step), "input": list(step_input.shape),
                         "out_channels": conv.out_channels, "stride": conv.stride[0], "ours_ms": ours_ms,
                         "torch_ms": torch_ms, "ratio": ours_ms / torch_ms, "difference": difference})
    if not rows:
        raise ValueError(f"{model} has no convolution -> batch norm steps to compare (see tinycnn.nn.freeze)")
    ours_total, torch_total = sum(row["ours_ms"] for row in rows), sum(row["torch_ms"] for row in rows)
    return rows, {"ours_ms": ours_total, "torch_ms": torch_total, "ratio": ours_total / torch_total}


def format_rows(rows, totals, header):
    lines = [header, f"{'step':>4}  {'kind':<10} {'input':<20} {'out':>5} {'s':>2} {'ours us':>8} {'torch us':>9} "
             f"{'ratio':>6}  {'rel diff':>8}"]
    for row in rows:
        shape = "x".join(str(size) for size in row["input"])
        lines.append(f"{row['step']:>4}  {row['kind']:<10} {shape:<20} {row['out_channels']:>5} {row['stride']:>2} "
                     f"{row['ours_ms'] * 1e3:>8.0f} {row['torch_ms'] * 1e3:>9.0f} {row['ratio']:>5.2f}x  "
                     f"{row['difference']:>8.1e}")
    lines.append(f"all steps: ours {totals['ours_ms']:.2f} ms, torch {totals['torch_ms']:.2f} ms, "
                 f"{totals['ratio']:.2f}x")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2", help="a tinycnn.models name (default: mobilenet_v2)")
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=224, help="image side (default: 224)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per step and side (default: 20)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and totals as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.size < 32 or args.width_mult <= 0:
        parser.error("--repeat must be at least 1, --size at least 32 and --width-mult positive")
    from tinycnn.models import list_models
    if args.model not in list_models():
        parser.error(f"--model {args.model!r} is not a tinycnn model; one of: {', '.join(list_models())}")

    import numba
    import torch

    from tinycnn._system import cpu_description
    from tinycnn.io import write_text_atomic

    try:
        rows, totals = run(args.model, args.width_mult, args.size, args.repeat)
    except ValueError as error:                     # a model without frozen steps, or arguments it refuses
        parser.error(str(error))
    header = (f"frozen {args.model} (width {args.width_mult}), 1 x 3 x {args.size} x {args.size}, each step against "
              f"torch {torch.__version__} F.conv2d with the batch norm folded in; {cpu_description()}, "
              f"{numba.get_num_threads()} threads, median of {args.repeat} runs in turns of five")
    print(format_rows(rows, totals, header))
    if args.json:
        write_text_atomic(args.json, json.dumps({"header": header, "rows": rows, "totals": totals}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
