"""``tinycnn.compile_ahead``: on a cold numba cache a second process compiles the gradient kernels.

The suite itself runs with ``TINYCNN_COMPILE_AHEAD=0`` (conftest.py); these tests turn it back on where
they need it. How much it saves is a measurement (the module docstring), not a test.
"""
import json
import os
import subprocess
import sys
import time

import numba
import numpy as np
import pytest
from numba.core.dispatcher import Dispatcher

from tinycnn import compile_ahead, run
from tinycnn.compile_ahead import CompileFilter


def _kernels():
    """Three fresh kernels (not cached: each test compiles its own): ``first``, ``second`` (which calls
    ``callee``) and ``callee``, each writing its own mark into ``a[0]``."""
    @numba.njit
    def callee(a):
        return a[0] + 1.0

    @numba.njit
    def first(a):
        a[0] = 10.0

    @numba.njit
    def second(a):
        a[0] = callee(a) + 100.0

    return first, second, callee


def test_the_filter_skips_the_kernels_met_before_start_and_compiles_the_others():
    first, second, callee = _kernels()
    originals = [Dispatcher.__dict__.get(name) for name in CompileFilter._METHODS]
    a = np.zeros(1)
    with CompileFilter() as compiles:
        first(a)                                    # not compiled: skipped, it did not run
        assert a[0] == 0 and first.signatures == []
        compiles.start()
        first(a)                                    # met before start(): still skipped
        second(a)                                   # new: compiled and run, with its callee
        assert a[0] == 101.0
        assert first.signatures == [] and len(second.signatures) == 1 and len(callee.signatures) == 1
    assert compiles.skipped == {first}
    assert [Dispatcher.__dict__.get(name) for name in CompileFilter._METHODS] == originals
    first(a)                                        # after the filter numba compiles as usual
    assert a[0] == 10.0 and len(first.signatures) == 1


def test_the_filter_skips_an_explicit_compile_and_keeps_the_kernel_open():
    """kernels._gemm compiles its kernel's signatures with ``compile`` and then closes it to new ones; in
    the helper's first step both must do nothing, or its gradients' products would find the kernel closed."""
    first, _, _ = _kernels()
    with CompileFilter():
        first.compile("void(float64[::1])")
        first.disable_compile()
        assert first.signatures == []
    a = np.zeros(1)
    first(a)                                        # still open: compiles now
    assert a[0] == 10.0


def test_a_matrix_product_kernel_skipped_by_the_filter_is_not_counted_as_fixed(monkeypatch):
    """kernels._gemm compiles its kernel's signatures once per dtype and remembers the dtype; under the filter
    the compile is skipped, and the dtype must not be remembered, or the process would later compile the
    kernel for any layout instead of its two fixed signatures."""
    from kernels import _gemm
    monkeypatch.setattr(_gemm, "_SIGNATURES_FIXED_FOR", set())
    # a fresh dispatcher of the kernel, with no signature yet in this process (never compiled here: skipped)
    monkeypatch.setattr(_gemm, "_batched_matmul_kernel", numba.njit(_gemm._batched_matmul_kernel.py_func))
    with CompileFilter():
        _gemm._fix_kernel_signatures(np.dtype(np.float32))
    assert _gemm._SIGNATURES_FIXED_FOR == set() and _gemm._batched_matmul_kernel.signatures == []


def test_a_kernel_compiled_before_the_filter_runs_inside_it():
    first, _, _ = _kernels()
    a = np.zeros(1)
    first(a)
    a[0] = 0
    with CompileFilter() as compiles:
        first(a)
    assert a[0] == 10.0 and compiles.skipped == set()


def test_allocations_are_zeros_inside_the_helper_step_and_numpys_own_after():
    empty, empty_like = np.empty, np.empty_like
    with compile_ahead._zero_filled_allocations():
        assert not np.empty((64, 64)).any() and not np.empty_like(np.ones(1000)).any()
        assert np.empty((2, 3), dtype=np.int64).dtype == np.int64
    assert (np.empty, np.empty_like) == (empty, empty_like)


def test_the_helper_compiles_nothing_while_allocations_are_zeros(monkeypatch):
    """numba compiles a kernel's ``np.empty`` as whatever the name holds at that moment (a kernel compiled
    with ``np.empty = np.zeros`` in place is typed ``Function(zeros)``, seen with ``inspect_types``), so the
    zero-filled allocations must end before the helper starts compiling: else the gradient kernels would go
    into numba's cache filling their buffers with zeros, and the training process would load them so."""
    empty = np.empty
    seen = []
    real_start = CompileFilter.start
    monkeypatch.setattr(CompileFilter, "start", lambda self: seen.append(np.empty is empty) or real_start(self))
    settings = run.TrainConfig(width_mult=0.25, image_size=16, batch_size=4).resolved().to_dict()
    compile_ahead.compile_training_step_gradients(settings)
    assert seen == [True]


@pytest.mark.parametrize("model, width, refused", [
    ("mobilenet_v2", 0.25, []),
    # a max pool whose forward was skipped leaves argmax zeros, which its backward's check refuses (when the
    # pool kernel is not compiled yet in this process: then its backward runs on real indices)
    ("resnet18", None, ["backward"]),
])
def test_the_helper_step_restores_numba_and_names_what_it_skipped(model, width, refused):
    from kernels import pooling
    settings = run.TrainConfig(model=model, width_mult=width, image_size=16, batch_size=4).resolved().to_dict()
    originals = [Dispatcher.__dict__.get(name) for name in CompileFilter._METHODS]
    pool_compiled = any(str(types[0].dtype) == "float32" for types in pooling._max_pool_forward_kernel.signatures)
    skipped, refused_parts = compile_ahead.compile_training_step_gradients(settings)
    assert all(isinstance(name, str) for name in skipped) and skipped == sorted(skipped)
    assert refused_parts == ([] if pool_compiled else refused)
    assert [Dispatcher.__dict__.get(name) for name in CompileFilter._METHODS] == originals


@pytest.mark.parametrize("switch, config", [
    ("0", run.TrainConfig()),                                               # turned off
    ("1", run.TrainConfig(weights="base.npz", freeze_backbone=True)),       # the backward stops at the classifier
])
def test_start_launches_nothing_when_off_or_when_there_is_no_backward_to_compile(switch, config, monkeypatch):
    monkeypatch.setenv(compile_ahead.ENVIRONMENT_SWITCH, switch)
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: pytest.fail("no process expected"))
    assert compile_ahead.start(config) is None


def test_start_runs_the_helper_module_with_the_config_and_this_process_id(monkeypatch):
    launched = []

    class FakeProcess:
        def __init__(self, command, **options):
            launched.append((command, options))

    monkeypatch.setenv(compile_ahead.ENVIRONMENT_SWITCH, "1")
    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    config = run.TrainConfig(epochs=3).resolved()
    assert isinstance(compile_ahead.start(config), FakeProcess)
    (command, options), = launched
    assert command[:3] == [sys.executable, "-m", "tinycnn.compile_ahead"] and command[4] == str(os.getpid())
    assert run.TrainConfig.from_dict(json.loads(command[3])) == config
    assert options["stdout"] == options["stderr"] == subprocess.DEVNULL
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(compile_ahead.__file__)))
    assert options["env"]["PYTHONPATH"].split(os.pathsep)[0] == package_parent    # this tinycnn, this kernels


def test_stop_ends_a_running_process_and_accepts_none_or_a_finished_one():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    compile_ahead.stop(sleeper)
    assert sleeper.poll() is not None
    compile_ahead.stop(sleeper)                     # already finished: nothing to do
    compile_ahead.stop(None)


@pytest.mark.parametrize("fails", [False, True])
def test_a_cold_run_starts_the_helper_says_so_and_stops_it_even_when_training_fails(fails, tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(run, "_kernels_compiled", lambda: False)
    monkeypatch.setattr(compile_ahead, "start", lambda config: events.append(("start", config.model)) or "helper")
    monkeypatch.setattr(compile_ahead, "stop", lambda helper: events.append(("stop", helper)))
    if fails:
        monkeypatch.setattr(run.Trainer, "fit", lambda self: (_ for _ in ()).throw(RuntimeError("boom")))
    config = run.TrainConfig(data="shapes:40", width_mult=0.25, image_size=16, epochs=1, batch_size=16)
    lines = []
    if fails:
        with pytest.raises(RuntimeError, match="boom"):
            run.run_training(config, tmp_path, progress=False, log=lines.append, plots=False)
    else:
        run.run_training(config, tmp_path, progress=False, log=lines.append, plots=False)
    assert events == [("start", "mobilenet_v2"), ("stop", "helper")]
    assert any("compiling kernels, once per machine" in line and "a second process helps" in line for line in lines)


def test_a_warm_run_starts_no_helper(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "_kernels_compiled", lambda: True)
    monkeypatch.setattr(compile_ahead, "start", lambda config: pytest.fail("no helper on a warm cache"))
    config = run.TrainConfig(data="shapes:40", width_mult=0.25, image_size=16, epochs=1, batch_size=16)
    lines = []
    run.run_training(config, tmp_path, progress=False, log=lines.append, plots=False)
    assert not any("compiling kernels" in line for line in lines)


@pytest.mark.slow
def test_the_helper_process_makes_its_step_and_exits_cleanly():
    """The process :func:`compile_ahead.start` launches, run to its end (its kernels are in numba's cache once
    the suite or the README's main job has compiled them; on a cold cache it compiles the gradient ones)."""
    settings = run.TrainConfig(width_mult=0.25, image_size=16, batch_size=4).resolved().to_dict()
    done = subprocess.run([sys.executable, "-m", "tinycnn.compile_ahead", json.dumps(settings)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads a process's state from /proc (Linux)")
def test_the_helper_exits_when_the_process_that_started_it_is_gone():
    """A killed training run must not leave its helper compiling: the helper watches its parent."""
    # the parent is gone before the child has imported anything: the child is told its parent's pid
    child = ("import os, sys, time; from tinycnn.compile_ahead import _exit_with_parent; "
             "_exit_with_parent(int(sys.argv[1])); time.sleep(60)")
    parent = (f"import os, subprocess, sys; process = subprocess.Popen([sys.executable, '-c', {child!r}, "
              "str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(process.pid)")
    pid = int(subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60).stdout)

    def running():
        try:
            with open(f"/proc/{pid}/status") as status:
                return not any(line.split()[:2] == ["State:", "Z"] for line in status)  # a zombie has exited
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running()


def test_a_background_helper_runs_at_the_lowest_priority():
    code = ("import os; from tinycnn.compile_ahead import run_as_background_helper; "
            "run_as_background_helper(os.getppid()); print(os.nice(0))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["19"]
