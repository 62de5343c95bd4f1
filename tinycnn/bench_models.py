"""Model benchmark: a training step and batch-1 inference of the MobileNets, ours against PyTorch's.

``tinycnn bench models`` times, for MobileNet V2 (width 0.5 and 1.0), V3-Small and V3-Large:

* **train**: one training step as the Trainer runs it (zero the gradients, forward, cross-entropy,
  backward, Adam step) on a batch of ``batch`` x 3 x 32 x 32 images, 10 classes (the default
  ``tinycnn train`` shapes);
* **infer**: one evaluation-mode forward pass of a single 3 x 224 x 224 image, 1000 classes;
* **frozen**: the same forward by each framework's model frozen for inference: ours by
  :func:`tinycnn.nn.freeze`, PyTorch's by ``torch.jit.freeze(torch.jit.script(model))`` (TorchScript
  folds each batch norm into its convolution's weights). Both rows come from one alternated series of
  the four forwards; the frozen row also gives ours frozen against PyTorch's eager forward.

When torch and torchvision are importable, torchvision's model gets the same weights (our model loads its
``state_dict``), the same input and the same thread count, and the two alternate in turns of five runs
(:func:`tinycnn.bench.time_interleaved`), so the ratio ``ours / torch`` is measured under the same load.
The report names the CPU, its vector extensions (AVX2 / AVX-512 change both sides' speed) and the
process's peak resident memory after each model.

With ``memory=True`` (``--memory``) each framework's training step also runs alone in a fresh Python
process (:func:`training_step_memory`): its peak resident memory (RSS) before the first step (imports,
model, optimizer, batch) and after a few steps, so the memory a step itself needs is compared without
the other framework's allocations in the same process.
"""
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys

import numpy as np

from .bench import BLOCK_RUNS, import_torch, time_interleaved, write_json

#: (label, tinycnn model name, keyword arguments, torchvision builder name)
MODELS = (
    ("mobilenet_v2_w0.5", "mobilenet_v2", dict(width_mult=0.5), "mobilenet_v2"),
    ("mobilenet_v2_w1.0", "mobilenet_v2", dict(width_mult=1.0), "mobilenet_v2"),
    ("mobilenet_v3_small", "mobilenet_v3_small", dict(), "mobilenet_v3_small"),
    ("mobilenet_v3_large", "mobilenet_v3_large", dict(), "mobilenet_v3_large"),
)
_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile")


def cpu_description():
    """``(model name, vector extensions)`` of this CPU, from ``/proc/cpuinfo`` where it exists."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return name, [flag for flag in _VECTOR_FLAGS if flag in flags]


def _peak_rss_mb():
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_torchvision_models(torch):
    """``torchvision.models``, or None. A CUDA build of torchvision on a CPU-only torch fails to register
    its fake ``nms`` kernel at import; those registrations are skipped (no torchvision op is used)."""
    original = torch.library.register_fake

    def tolerant(*args, **kwargs):
        try:
            decorator = original(*args, **kwargs)
        except Exception:
            return lambda function: function
        return lambda function: _try_decorate(decorator, function)

    torch.library.register_fake = tolerant
    try:
        import torchvision.models as models
    except Exception:
        return None
    finally:
        torch.library.register_fake = original
    return models


def _try_decorate(decorator, function):
    try:
        return decorator(function)
    except Exception:
        return function


def _our_model(name, arguments, num_classes):
    from . import models
    return models.get_model(name, num_classes=num_classes, **arguments)


def _training_steps(ours, theirs, torch, batch, seed):
    """Step callables ``(ours or None, theirs or None)`` for one training step of batch x 3 x 32 x 32."""
    from . import losses, optim

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    our_step = None
    if ours is not None:
        criterion, our_optimizer = losses.CrossEntropyLoss(), optim.Adam(ours.parameters(), lr=1e-3)
        ours.train()

        def our_step():
            ours.zero_grad()
            criterion(ours(x), y)
            ours.backward(criterion.backward())
            our_optimizer.step()

    if theirs is None:
        return our_step, None
    theirs.train()
    their_optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    x_torch, y_torch = torch.from_numpy(x), torch.from_numpy(y)

    def their_step():
        their_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(theirs(x_torch), y_torch).backward()
        their_optimizer.step()

    return our_step, their_step


def _inference_calls(ours, theirs, torch, seed):
    """Forward callables for one 3 x 224 x 224 image in evaluation mode, all without gradients
    (``tinycnn.nn.no_grad()`` fuses convolution, batch norm and ReLU/ReLU6; ``torch.no_grad()``):
    ``(ours, theirs, ours frozen, theirs frozen)``, PyTorch's None without torchvision (the frozen one
    also when TorchScript cannot compile the model)."""
    from .nn import freeze, no_grad

    x = np.random.default_rng(seed).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ours.eval()
    frozen = freeze(ours)

    def our_forward():
        with no_grad():
            return ours(x)

    def our_frozen_forward():
        return frozen(x)

    if theirs is None:
        return our_forward, None, our_frozen_forward, None
    theirs.eval()
    x_torch = torch.from_numpy(x)
    their_frozen = _torchscript_frozen(theirs, torch)

    def their_forward():
        with torch.no_grad():
            return theirs(x_torch)

    def their_frozen_forward():
        with torch.no_grad():
            return their_frozen(x_torch)

    return our_forward, their_forward, our_frozen_forward, None if their_frozen is None else their_frozen_forward


def _torchscript_frozen(model, torch):
    """``torch.jit.freeze(torch.jit.script(model))`` in evaluation mode, or None when TorchScript fails."""
    try:
        with torch.no_grad():
            return torch.jit.freeze(torch.jit.script(model.eval()))
    except Exception:               # noqa: BLE001 -- TorchScript is optional here; the row shows "-"
        return None


def _paired_models(label, name, arguments, builder, num_classes, torchvision_models):
    ours = _our_model(name, arguments, num_classes)
    if torchvision_models is None:
        return ours, None
    theirs = getattr(torchvision_models, builder)(num_classes=num_classes, **arguments)
    ours.load_state_dict({key: value.detach().numpy().copy() for key, value in theirs.state_dict().items()})
    return ours, theirs


def _measure(functions, repeat):
    """Medians of ``(ours, theirs, ...)`` timed in turns, as cells ``{"ours_ms", "torch_ms", "ratio"}``: one
    per pair of functions (a None function of PyTorch's gives None entries)."""
    present = [function for function in functions if function is not None]
    medians = iter([statistics.median(times) for times in time_interleaved(present, repeat)])
    medians = [None if function is None else next(medians) for function in functions]
    cells = []
    for ours_ms, torch_ms in zip(medians[::2], medians[1::2]):
        cells.append({"ours_ms": ours_ms, "torch_ms": torch_ms,
                      "ratio": None if torch_ms is None else ours_ms / torch_ms})
    return cells


def run_model_benchmark(only=None, batch=64, repeat=10, use_torch=True, progress=None, seed=0, memory=False):
    """Benchmark the MobileNets; return a JSON-ready report ``{"settings": ..., "models": [...]}``.

    ``memory=True`` adds ``row["memory"] = {"ours": ..., "torch": ...}`` from :func:`training_step_memory`.
    """
    import numba

    if repeat < 1 or batch < 2:
        raise ValueError(f"repeat must be >= 1 and batch >= 2 (batch norm); got repeat={repeat}, batch={batch}")
    chosen = [row for row in MODELS if not only or any(pattern in row[0] for pattern in only)]
    if not chosen:
        raise ValueError(f"no model name contains {' or '.join(map(repr, only))}; models: "
                         + ", ".join(row[0] for row in MODELS))
    torch = import_torch() if use_torch else None
    torchvision_models = import_torchvision_models(torch) if torch is not None else None
    threads = numba.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
    results = []
    for label, name, arguments, builder in chosen:
        row = {"name": label}
        ours, theirs = _paired_models(label, name, arguments, builder, 10, torchvision_models)
        row["train"], = _measure(_training_steps(ours, theirs, torch, batch, seed), repeat)
        ours, theirs = _paired_models(label, name, arguments, builder, 1000, torchvision_models)
        row["infer"], row["frozen"] = _measure(_inference_calls(ours, theirs, torch, seed), repeat)
        eager_torch_ms = row["infer"]["torch_ms"]
        row["frozen"]["ratio_to_eager_torch"] = (None if eager_torch_ms is None
                                                 else row["frozen"]["ours_ms"] / eager_torch_ms)
        row["peak_rss_mb"] = _peak_rss_mb()
        if memory:
            row["memory"] = {framework: training_step_memory(label, framework, batch, seed=seed)
                             for framework in (("ours", "torch") if torchvision_models is not None else ("ours",))}
        results.append(row)
        if progress is not None:
            progress(f"done: {label}")
    cpu, vector = cpu_description()
    settings = {"batch": batch, "repeat": repeat, "threads": threads, "cpu": cpu, "vector_extensions": vector,
                "torch_version": None if torch is None else torch.__version__,
                "torchvision": torchvision_models is not None, "torch_requested": use_torch,
                "statistic": "median after one warm-up run, ours and torch alternating in turns of "
                             f"{BLOCK_RUNS} runs"}
    return {"settings": settings, "models": results}


def _proc_status_mb(field):
    """``VmRSS`` / ``VmHWM`` (current / peak resident memory) of this process in MiB, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            for line in stream:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss():
    """Make the kernel's peak-RSS mark (VmHWM) start again from the current RSS; False if it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


def _memory_child(label, framework, batch, steps, seed):
    """Body of the fresh process started by :func:`training_step_memory`: print one JSON line."""
    _, name, arguments, builder = next(row for row in MODELS if row[0] == label)
    if framework == "ours":
        step = _training_steps(_our_model(name, arguments, 10), None, None, batch, seed)[0]
    else:
        import torch
        torch.set_num_threads(int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)))
        theirs = getattr(import_torchvision_models(torch), builder)(num_classes=10, **arguments)
        step = _training_steps(None, theirs, torch, batch, seed)[1]      # no model of ours in this process
    step()                                   # warm-up: loads compiled kernels, creates the optimizer state
    if _reset_peak_rss():
        before = _proc_status_mb("VmRSS")
        for _ in range(steps):
            step()
        peak = _proc_status_mb("VmHWM")
    else:                                    # no resettable mark: the peak includes the warm-up step
        before = None
        for _ in range(steps):
            step()
        peak = _peak_rss_mb()
    print(json.dumps({"before_steps_mb": before, "peak_mb": peak}))


def training_step_memory(label, framework="ours", batch=64, steps=3, seed=0, timeout=600):
    """Peak RSS (MiB) of a fresh process that builds ``label`` and runs ``steps`` training steps.

    Parameters
    ----------
    label : one of :data:`MODELS`' labels, e.g. ``"mobilenet_v2_w0.5"``
    framework : ``"ours"`` or ``"torch"`` (torchvision's model, same shapes)
    batch, steps, seed : the step's batch size, how many steps, the data seed

    Returns
    -------
    dict with ``before_steps_mb`` (RSS after imports, model, optimizer, batch and one warm-up step),
    ``peak_mb`` (peak RSS during the next ``steps`` steps) and ``step_mb`` = their difference: what a
    training step itself needs on top (activations cached for backward, gradients, temporaries). The
    warm-up step keeps one-off costs out of it (loading compiled kernels, creating the optimizer's
    moments); the peak mark is reset after it through ``/proc/self/clear_refs`` (Linux). Where that is
    not possible, ``before_steps_mb`` and ``step_mb`` are None and ``peak_mb`` is the whole process's.

    The child process prints nothing else; it imports this very copy of tinycnn (its folder goes first
    on ``PYTHONPATH``).
    """
    if framework not in ("ours", "torch"):
        raise ValueError(f"framework must be 'ours' or 'torch'; got {framework!r}")
    if label not in [row[0] for row in MODELS]:
        raise ValueError(f"unknown model {label!r}; models: " + ", ".join(row[0] for row in MODELS))
    package_root = str(pathlib.Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    code = ("from tinycnn.bench_models import _memory_child; "
            f"_memory_child({label!r}, {framework!r}, {int(batch)}, {int(steps)}, {int(seed)})")
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                              timeout=timeout)
    if finished.returncode != 0:
        last = (finished.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the {framework} memory process for {label} failed: {last}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    before = result["before_steps_mb"]
    result["step_mb"] = None if before is None else result["peak_mb"] - before
    return result


def _mb(value):
    return "-" if value is None else f"{value:.0f}"


def format_model_table(report):
    """Render :func:`run_model_benchmark`'s report as plain text."""
    settings = report["settings"]
    lines = [f"tinycnn model benchmark: {settings['cpu']} ({', '.join(settings['vector_extensions']) or 'no SIMD flags'}), "
             f"{settings['threads']} threads, median of {settings['repeat']} runs",
             f"train = one Adam step, batch {settings['batch']} x 3 x 32 x 32, 10 classes; "
             f"infer = eval forward, 1 x 3 x 224 x 224; frozen = the same by nn.freeze(model) and "
             f"torch.jit.freeze(torch.jit.script(model)), and ours frozen / torch's eager infer"]
    if settings["torch_version"] is None or not settings["torchvision"]:
        lines.append("PyTorch/torchvision not available: our times only")
    header = (f"{'model':<22}{'workload':<8}{'ours ms':>10}{'torch ms':>10}{'ours/torch':>12}{'/eager torch':>14}"
              f"{'peak RSS MiB':>14}")
    lines += [header, "-" * len(header)]
    for row in report["models"]:
        for workload in ("train", "infer", "frozen"):
            cell = row[workload]
            torch_ms = "-" if cell["torch_ms"] is None else f"{cell['torch_ms']:.1f}"
            ratio = "-" if cell["ratio"] is None else f"{cell['ratio']:.2f}x"
            to_eager = ""                                         # only the frozen row has this ratio
            if "ratio_to_eager_torch" in cell:
                to_eager = "-" if cell["ratio_to_eager_torch"] is None else f"{cell['ratio_to_eager_torch']:.2f}x"
            rss = f"{row['peak_rss_mb']:.0f}" if workload == "frozen" else ""
            lines.append(f"{row['name']:<22}{workload:<8}{cell['ours_ms']:>10.1f}{torch_ms:>10}{ratio:>12}"
                         f"{to_eager:>14}{rss:>14}")
    memory_rows = [row for row in report["models"] if "memory" in row]
    if memory_rows:
        lines += ["", f"training step alone in a fresh process (batch {settings['batch']}): peak RSS MiB, and what "
                      f"the steps add to it"]
        header = f"{'model':<22}{'ours peak':>10}{'torch peak':>11}{'ours step':>10}{'torch step':>11}{'step ratio':>11}"
        lines += [header, "-" * len(header)]
        for row in memory_rows:
            ours, theirs = row["memory"]["ours"], row["memory"].get("torch")
            known = theirs is not None and None not in (ours["step_mb"], theirs["step_mb"]) and theirs["step_mb"] > 0
            cells = [f"{ours['peak_mb']:.0f}", "-" if theirs is None else f"{theirs['peak_mb']:.0f}",
                     _mb(ours["step_mb"]), "-" if theirs is None else _mb(theirs["step_mb"]),
                     f"{ours['step_mb'] / theirs['step_mb']:.2f}x" if known else "-"]
            lines.append(f"{row['name']:<22}{cells[0]:>10}{cells[1]:>11}{cells[2]:>10}{cells[3]:>11}{cells[4]:>11}")
    return "\n".join(lines)


def main_models(only=None, batch=64, repeat=10, use_torch=True, json_path=None, stream=None, memory=False):
    """Run the model benchmark, print the table, optionally write JSON; return the report."""
    stream = sys.stdout if stream is None else stream
    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    report = run_model_benchmark(only, batch, repeat, use_torch, progress, memory=memory)
    print(format_model_table(report), file=stream)
    if json_path is not None:
        write_json(report, json_path)
        print(f"wrote {json_path}", file=stream)
    return report
