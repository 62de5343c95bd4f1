"""Kernel benchmark: our numba kernels against PyTorch's CPU kernels, same shapes, same process.

``tinycnn bench kernels`` runs every workload in :data:`WORKLOADS` (shapes from MobileNet-style layers)
in four directions -- forward, backward-input, backward-weight and the forward+backward total of one
training step -- and prints the median wall-clock time of each. When PyTorch is importable it is timed in
the same process, on the same arrays, with as many threads as numba uses, and the table shows the ratio
``ours / torch`` (below 1.0 means we are faster).

Timing rules (shared by both sides, so the ratio is fair):

* every measured callable runs once untimed first (numba compiles its kernels on the first call; PyTorch
  warms its allocator), then ``repeat`` timed runs, ours and PyTorch's alternating in turns of
  :data:`BLOCK_RUNS` runs (:func:`time_interleaved`) so that both see the same background load; we report
  the median (robust to a noisy shared machine; the JSON output also
  keeps the fastest run, ``*_min_ms``);
* PyTorch's forward runs under ``torch.no_grad()``; its backward directions are ``torch.autograd.grad`` on a
  graph built once (``retain_graph=True``) asking for the input or the weight gradient only, so each times
  just that gradient; its total is a forward with autograd on plus one ``autograd.grad`` for both;
* our total is ``forward`` + ``backward_input`` + ``backward_weight`` called one after another.

Machines are shared and noisy (20-50 % run to run): compare ratios measured in one run, not across runs.
"""
from dataclasses import dataclass, field
import json
import os
import statistics
import sys
import time

import numpy as np

DIRECTIONS = ("forward", "backward-input", "backward-weight", "total")
DIRECTION_LABELS = {"forward": "forward", "backward-input": "backward-input",
                    "backward-weight": "backward-weight", "total": "fwd+bwd total"}

# Our public kernel families: workload kind -> prefix of the function names in the `kernels` API.
_KERNEL_PREFIX = {
    "depthwise": "depthwise_conv2d",
    "pointwise": "pointwise_conv2d",
    "conv2d": "conv2d",
    "conv_transpose2d": "conv_transpose2d",
}

# If ours and PyTorch's results differ by more than this (relative to the largest magnitude), the table
# warns: float32 sums of up to 144*9 products differ by rounding only around 1e-6.
_MISMATCH_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Workload:
    """One benchmarked layer: an operation, its input and weight shapes and its target ratio.

    ``options`` are keyword arguments of the kernel (stride, padding, ...); ``target`` is the largest
    acceptable ``ours / torch`` ratio of the forward+backward total.
    """

    name: str
    kind: str                   # "depthwise" | "pointwise" | "conv2d" | "conv_transpose2d" | "max_pool2d"
    input_shape: tuple          # (N, C, H, W)
    weight_shape: tuple         # PyTorch layout; None for pooling
    options: dict = field(default_factory=dict)
    target: float = 2.0
    note: str = ""

    def describe(self):
        """One line: the operation, the shapes and the options."""
        parts = [f"x {self.input_shape}"]
        if self.weight_shape is not None:
            parts.append(f"weight {self.weight_shape}")
        parts += [f"{key}={value}" for key, value in self.options.items()]
        text = f"{self.kind}: " + ", ".join(parts)
        return f"{text}  ({self.note})" if self.note else text

    def resized(self, batch=None, scale=1.0):
        """The same workload with batch size ``batch`` and H, W multiplied by ``scale`` (at least 4)."""
        N, C, H, W = self.input_shape
        N = N if batch is None else batch
        H, W = (max(4, round(H * scale)), max(4, round(W * scale)))
        return Workload(self.name, self.kind, (N, C, H, W), self.weight_shape, dict(self.options),
                        self.target, self.note)


# The workloads (float32). Depthwise/pointwise shapes are MobileNetV2 layers (arXiv:1801.04381,
# Table 2, expansion t = 6): the 24-channel blocks at 56x56 expand to 6*24 = 144 channels, the
# 64-channel blocks at 14x14 to 6*64 = 384.
WORKLOADS = (
    Workload("depthwise-3x3-s1-c144", "depthwise", (8, 144, 56, 56), (144, 1, 3, 3),
             dict(stride=1, padding=1), target=1.0, note="MobileNetV2, 24-channel blocks"),
    Workload("depthwise-3x3-s2-c144", "depthwise", (8, 144, 56, 56), (144, 1, 3, 3),
             dict(stride=2, padding=1), target=1.0, note="MobileNetV2, first 32-channel block"),
    Workload("depthwise-3x3-s1-c384", "depthwise", (8, 384, 14, 14), (384, 1, 3, 3),
             dict(stride=1, padding=1), target=1.0, note="MobileNetV2, 64-channel blocks"),
    # issue 18: the small planes that 32x32 training (batch 64) and 224x224 inference (batch 1) meet
    Workload("depthwise-5x5-s1-c240", "depthwise", (8, 240, 14, 14), (240, 1, 5, 5),
             dict(stride=1, padding=2), target=1.0, note="MobileNetV3-Large, 5x5 blocks"),
    Workload("depthwise-3x3-s1-c96-8x8", "depthwise", (64, 96, 8, 8), (96, 1, 3, 3),
             dict(stride=1, padding=1), target=1.0, note="MobileNetV2 w0.5 at 32x32, batch 64"),
    Workload("depthwise-3x3-s2-c192-4x4", "depthwise", (64, 192, 4, 4), (192, 1, 3, 3),
             dict(stride=2, padding=1), target=1.0, note="MobileNetV2 w0.5 at 32x32, batch 64"),
    Workload("depthwise-3x3-s1-c192-28x28", "depthwise", (1, 192, 28, 28), (192, 1, 3, 3),
             dict(stride=1, padding=1), target=1.0, note="MobileNetV2 at 224, batch 1"),
    Workload("depthwise-3x3-s1-c576-14x14", "depthwise", (1, 576, 14, 14), (576, 1, 3, 3),
             dict(stride=1, padding=1), target=1.0, note="MobileNetV2 at 224, batch 1"),
    Workload("depthwise-5x5-s1-c960-7x7", "depthwise", (1, 960, 7, 7), (960, 1, 5, 5),
             dict(stride=1, padding=2), target=1.0, note="MobileNetV3-Large at 224, batch 1"),
    Workload("pointwise-144to24", "pointwise", (8, 144, 56, 56), (24, 144, 1, 1),
             target=1.5, note="MobileNetV2 project 1x1"),
    Workload("pointwise-24to144", "pointwise", (8, 24, 56, 56), (144, 24, 1, 1),
             target=1.5, note="MobileNetV2 expand 1x1"),
    Workload("standard-3x3-s2-stem", "conv2d", (8, 3, 224, 224), (32, 3, 3, 3),
             dict(stride=2, padding=1), target=2.0, note="MobileNet stem"),
    Workload("dilated-3x3-d2", "conv2d", (8, 64, 56, 56), (64, 64, 3, 3),
             dict(padding=2, dilation=2), target=2.0),
    Workload("transposed-4x4-s2", "conv_transpose2d", (8, 64, 28, 28), (64, 32, 4, 4),
             dict(stride=2, padding=1), target=2.0, note="2x learned up-sampling"),
    Workload("maxpool-3x3-s2", "max_pool2d", (8, 64, 56, 56), None,
             dict(kernel_size=3, stride=2, padding=1), target=2.0),
)


def select_workloads(only=None, batch=None, scale=1.0):
    """Return the workloads whose name contains any of the strings in ``only`` (all if None), resized.

    Raises ``ValueError`` when nothing matches, or when ``batch``/``scale`` are not positive.
    """
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1; got {batch}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0; got {scale}")
    chosen = [w for w in WORKLOADS if not only or any(pattern in w.name for pattern in only)]
    if not chosen:
        names = ", ".join(w.name for w in WORKLOADS)
        raise ValueError(f"no workload name contains {' or '.join(map(repr, only))}; workloads: {names}")
    return [w.resized(batch, scale) for w in chosen]


def _time_ms(function):
    start = time.perf_counter()
    function()
    return 1000.0 * (time.perf_counter() - start)


#: timed runs of one function in a row (:func:`time_interleaved`)
BLOCK_RUNS = 5


def time_interleaved(functions, repeat, block=BLOCK_RUNS):
    """Time each function ``repeat`` times, in turns of ``block`` runs, after one warm-up call each.

    Returns one list of ``repeat`` times in milliseconds per function. The warm-up call is where numba
    compiles. Then the functions take turns (``f`` x block, ``g`` x block, then ``g`` first, ...: each side
    first in turn), so every function sees the same background load on a shared machine and their ratio
    is fairer than that of series measured one after the other; each turn starts with one untimed call,
    so that the other side's threads are idle again when the timed runs start. Both frameworks keep
    their OpenMP threads spinning for a while after a parallel loop (numba's and PyTorch's each in a
    runtime of its own), and a run that starts right after the other side's competes with them: on a
    2-core Sapphire Rapids, (8, 144, 56, 56) at stride 2 took us 5.2 and 11.5 ms forward+backward in two
    runs timed one call in turn, 4.2 and 4.2 ms in turns of five (3.5-3.8 ms with PyTorch not running;
    PyTorch's 14.3 and 12.1 against 15.1 and 15.2 ms).
    """
    for function in functions:
        function()                           # warm-up: numba compiles here, allocators settle
    times = [[] for _ in functions]
    turns = list(zip(functions, times))
    for round_index in range(-(-repeat // block)):
        runs = min(block, repeat - round_index * block)
        for function, function_times in (turns if round_index % 2 == 0 else turns[::-1]):
            function()                       # untimed: the other side's threads go idle meanwhile
            for _ in range(runs):
                function_times.append(_time_ms(function))
    return times


def _our_operations(workload, x, weight, grad_out):
    """Callables for each direction, running our public ``kernels`` API; plus their results for checking."""
    import kernels

    options = workload.options
    if workload.kind == "max_pool2d":
        _, argmax = kernels.max_pool2d_forward(x, **options)

        def forward():
            return kernels.max_pool2d_forward(x, **options)[0]

        def backward_input():
            return kernels.max_pool2d_backward(grad_out, argmax, x.shape, **options)

        def total():
            _, step_argmax = kernels.max_pool2d_forward(x, **options)
            return kernels.max_pool2d_backward(grad_out, step_argmax, x.shape, **options)

        return {"forward": forward, "backward-input": backward_input, "total": total}

    prefix = _KERNEL_PREFIX[workload.kind]
    forward_kernel = getattr(kernels, f"{prefix}_forward")
    backward_input_kernel = getattr(kernels, f"{prefix}_backward_input")
    backward_weight_kernel = getattr(kernels, f"{prefix}_backward_weight")

    def forward():
        return forward_kernel(x, weight, None, **options)

    def backward_input():
        return backward_input_kernel(grad_out, weight, x.shape, **options)

    def backward_weight():
        return backward_weight_kernel(grad_out, x, weight.shape, **options)

    def total():
        forward()
        backward_input()
        return backward_weight()

    return {"forward": forward, "backward-input": backward_input, "backward-weight": backward_weight,
            "total": total}


def _torch_function(torch, workload):
    """``f(x, weight)`` computing the workload with ``torch.nn.functional``."""
    functional = torch.nn.functional
    options = workload.options
    if workload.kind == "depthwise":
        channels = workload.input_shape[1]
        return lambda x, w: functional.conv2d(x, w, None, groups=channels, **options)
    if workload.kind in ("pointwise", "conv2d"):
        return lambda x, w: functional.conv2d(x, w, None, **options)
    if workload.kind == "conv_transpose2d":
        return lambda x, w: functional.conv_transpose2d(x, w, None, **options)
    if workload.kind == "max_pool2d":
        return lambda x, w: functional.max_pool2d(x, **options)
    raise ValueError(f"unknown workload kind {workload.kind!r}")


def _torch_operations(torch, workload, x, weight, grad_out):
    """Callables for each direction, running PyTorch on the same arrays (shared memory, no copies)."""
    function = _torch_function(torch, workload)
    x_t = torch.from_numpy(x)
    weight_t = None if weight is None else torch.from_numpy(weight)
    grad_out_t = torch.from_numpy(grad_out)

    def forward():
        with torch.no_grad():
            return function(x_t, weight_t)

    # One graph, kept alive, for the single-gradient backward timings.
    x_leaf = x_t.clone().requires_grad_(True)
    weight_leaf = None if weight is None else weight_t.clone().requires_grad_(True)
    y_graph = function(x_leaf, weight_leaf)

    def backward_input():
        return torch.autograd.grad(y_graph, x_leaf, grad_out_t, retain_graph=True)[0]

    def backward_weight():
        return torch.autograd.grad(y_graph, weight_leaf, grad_out_t, retain_graph=True)[0]

    def total():
        x_step = x_t.detach().requires_grad_(True)
        if weight is None:
            return torch.autograd.grad(function(x_step, None), x_step, grad_out_t)[0]
        weight_step = weight_t.detach().requires_grad_(True)
        return torch.autograd.grad(function(x_step, weight_step), (x_step, weight_step), grad_out_t)[-1]

    operations = {"forward": forward, "backward-input": backward_input, "total": total}
    if weight is not None:
        operations["backward-weight"] = backward_weight
    return operations


def _relative_difference(ours, theirs):
    """``max|ours - theirs| / max|theirs|``: 0 for identical results, ~1e-7 for float32 rounding."""
    theirs = theirs.detach().numpy()
    scale = max(float(np.max(np.abs(theirs))), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(ours - theirs))) / scale


def import_torch():
    """Return the ``torch`` module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def run_workload(workload, repeat, torch=None, seed=0):
    """Time one workload in every direction; return a JSON-ready dict.

    ``torch`` is the torch module (compare against it) or None (our times only).
    """
    import kernels

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(workload.input_shape, dtype=np.float32)
    weight = (None if workload.weight_shape is None
              else rng.standard_normal(workload.weight_shape, dtype=np.float32))
    if workload.kind == "max_pool2d":
        output_shape = kernels.max_pool2d_forward(x, **workload.options)[0].shape
    else:
        forward = getattr(kernels, f"{_KERNEL_PREFIX[workload.kind]}_forward")
        output_shape = forward(x, weight, None, **workload.options).shape
    grad_out = rng.standard_normal(output_shape, dtype=np.float32)

    ours = _our_operations(workload, x, weight, grad_out)
    theirs = _torch_operations(torch, workload, x, weight, grad_out) if torch is not None else {}

    rows, worst_difference = [], 0.0
    for direction in DIRECTIONS:
        if direction not in ours:
            continue
        functions = [ours[direction]] + ([theirs[direction]] if direction in theirs else [])
        times = time_interleaved(functions, repeat)
        ours_ms = statistics.median(times[0])
        torch_ms = statistics.median(times[1]) if theirs else None
        rows.append({"direction": direction, "ours_ms": ours_ms, "torch_ms": torch_ms,
                     "ratio": None if torch_ms is None else ours_ms / torch_ms,
                     # fastest runs: less sensitive to other processes on a busy machine
                     "ours_min_ms": min(times[0]), "torch_min_ms": min(times[1]) if theirs else None})
        if theirs and direction != "total":
            worst_difference = max(worst_difference, _relative_difference(ours[direction](), theirs[direction]()))

    total_ratio = rows[-1]["ratio"]
    return {
        "name": workload.name,
        "description": workload.describe(),
        "kind": workload.kind,
        "input_shape": list(workload.input_shape),
        "output_shape": list(output_shape),
        "weight_shape": None if workload.weight_shape is None else list(workload.weight_shape),
        "options": workload.options,
        "target_ratio": workload.target,
        "directions": rows,
        "total_ratio": total_ratio,
        "meets_target": None if total_ratio is None else total_ratio <= workload.target,
        "max_relative_difference": worst_difference if theirs else None,
    }


def run_kernel_benchmark(workloads, repeat=10, use_torch=True, progress=None):
    """Benchmark ``workloads``; return ``{"settings": ..., "workloads": [...]}`` (JSON-ready).

    ``progress`` is an optional callable receiving one line of text per finished workload.
    """
    import numba

    if repeat < 1:
        raise ValueError(f"repeat must be >= 1; got {repeat}")
    torch = import_torch() if use_torch else None
    threads = numba.get_num_threads()
    previous_torch_threads = None
    if torch is not None:
        previous_torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)   # same parallelism on both sides
    try:
        results = []
        for workload in workloads:
            results.append(run_workload(workload, repeat, torch))
            if progress is not None:
                progress(f"done: {workload.name}")
    finally:
        if torch is not None:
            torch.set_num_threads(previous_torch_threads)
    settings = {
        "dtype": "float32",
        "repeat": repeat,
        "statistic": f"median after one warm-up run, ours and torch alternating in turns of {BLOCK_RUNS} runs",
        "threads": threads,
        "torch_version": None if torch is None else torch.__version__,
        "torch_requested": use_torch,
        "numpy_version": np.__version__,
        "numba_version": numba.__version__,
    }
    return {"settings": settings, "workloads": results}


def _format_ms(value):
    return "-" if value is None else f"{value:.2f}"


def format_table(report):
    """Render a benchmark report (from :func:`run_kernel_benchmark`) as a plain-text table."""
    settings = report["settings"]
    with_torch = settings["torch_version"] is not None
    lines = []
    comparison = (f"PyTorch {settings['torch_version']} with the same thread count" if with_torch
                  else "torch not found: our times only" if settings["torch_requested"]
                  else "PyTorch comparison switched off (--no-torch): our times only")
    lines.append(f"tinycnn kernel benchmark: float32, median of {settings['repeat']} runs after 1 warm-up, "
                 f"{settings['threads']} threads; {comparison}")
    header = (f"{'workload / direction':<26}{'ours ms':>10}{'torch ms':>10}{'ours/torch':>12}"
              f"{'target':>9}  result")
    lines += [header, "-" * len(header)]
    met = 0
    for result in report["workloads"]:
        lines.append(f"{result['name']}  {result['description']}")
        for row in result["directions"]:
            is_total = row["direction"] == "total"
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            target = f"<={result['target_ratio']:.1f}x" if is_total else ""
            verdict = ""
            if is_total and result["meets_target"] is not None:
                verdict = "pass" if result["meets_target"] else "MISS"
                met += bool(result["meets_target"])
            lines.append(f"  {DIRECTION_LABELS[row['direction']]:<24}{_format_ms(row['ours_ms']):>10}"
                         f"{_format_ms(row['torch_ms']):>10}{ratio:>12}{target:>9}  {verdict}".rstrip())
    lines.append("-" * len(header))
    if with_torch:
        lines.append(f"targets met (fwd+bwd total, ours/torch <= target): {met}/{len(report['workloads'])}")
        for result in report["workloads"]:
            difference = result["max_relative_difference"]
            if difference is not None and difference > _MISMATCH_TOLERANCE:
                lines.append(f"WARNING: {result['name']}: our results differ from PyTorch's by "
                             f"{difference:.1e} (relative); the timings compare different computations")
    elif settings["torch_requested"]:
        lines.append("torch not found: install the 'reference' extra (pip install -e '.[reference]') "
                     "to compare against PyTorch")
    return "\n".join(lines)


def write_json(report, path):
    """Write the report as indented JSON to ``path``."""
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=2)
        stream.write("\n")


def main_kernels(only=None, batch=None, scale=1.0, repeat=10, use_torch=True, json_path=None, stream=None):
    """Run the kernel benchmark, print the table to ``stream`` (default stdout), optionally write JSON.

    Returns the report of :func:`run_kernel_benchmark`. Raises ``ValueError`` for an unknown workload name
    or bad sizes and ``FileNotFoundError`` when the directory of ``json_path`` does not exist (checked
    before anything is timed).
    """
    stream = sys.stdout if stream is None else stream
    if json_path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        raise FileNotFoundError(f"--json: the directory of {json_path!r} does not exist")
    workloads = select_workloads(only, batch, scale)
    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    report = run_kernel_benchmark(workloads, repeat, use_torch, progress)
    print(format_table(report), file=stream)
    if json_path is not None:
        write_json(report, json_path)
        print(f"wrote {json_path}", file=stream)
    return report
