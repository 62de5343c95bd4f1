"""A machine's first ``tinycnn train``: the gradient kernels compile in a second process, beside the forward's.

numba compiles each kernel the first time it is called and keeps the machine code on disk (``cache=True``,
:mod:`kernels._jit`), so on a new machine the first training step waits while its kernels compile: about
70 s for the default run on a 2-core AMD EPYC, one kernel after the other on *one* core (numba compiles
under one lock). A step calls its forward kernels first and its gradient kernels after, so a second process
can compile the gradient kernels meanwhile on the other core, into the same on-disk cache; when the training
process reaches them it loads them from there (a few milliseconds each) instead of compiling them.

:func:`start` launches that helper, ``python -m tinycnn.compile_ahead SETTINGS_JSON PARENT_PID``, when the
cache is cold. It builds the run's model and makes one training step on random data of the run's shapes:

1. the forward with every kernel call skipped (:class:`CompileFilter`): nothing is compiled, the outputs are
   left as allocated, zeros here (a compile needs only their types), and the kernels met are noted: the
   training process compiles those itself, first thing;
2. the backward, the optimizer step and an evaluation forward, compiling every kernel met for the first
   time there; a kernel of step 1 (the matrix product serves both directions) is skipped again.

Measured on a 2-core AMD EPYC (AVX2) with an empty cache, alternated: the default model's first step
(MobileNet V2 width 0.5, batch 64, 32 x 32, then an evaluation forward) took 70 and 81 s alone (forward 34
and 39 s, backward 30 and 35), 49 and 46 s with the helper (forward 37 and 32, backward 6.2 and 7.5: the
helper had compiled most of it); the whole default ``tinycnn train`` 165 and 173 s alone, 137 and 129 s
with the helper (start to summary; 94.0% validation accuracy in all four runs); MobileNet V3-Small for one
epoch on 1000 images, 79 and 73 s alone, 51 and 49 s with the helper. The helper runs at
the lowest priority, writes nothing but numba's cache, exits when its step is done or its parent is gone,
and :func:`stop` ends it when training ends. ``TINYCNN_COMPILE_AHEAD=0`` turns it off.

Where numba no longer has the methods the filter replaces, the helper compiles nothing and exits: the
training process then compiles everything itself, as without it.
"""
import contextlib
import json
import os
import subprocess
import sys
import threading

import numpy as np

#: set to "0" to train without the helper process
ENVIRONMENT_SWITCH = "TINYCNN_COMPILE_AHEAD"


def start(config):
    """Launch the helper for the resolved ``config`` (a :class:`tinycnn.run.TrainConfig`; the helper gets its
    ``to_dict()``, :func:`compile_training_step_gradients`) and return its process; or return None when it
    has nothing to do (numba's JIT is off, ``TINYCNN_COMPILE_AHEAD=0``, or a frozen backbone, where the
    backward stops at the classifier) or cannot start. Call it only when the cache is cold; never raises."""
    import numba

    if (numba.config.DISABLE_JIT or os.environ.get(ENVIRONMENT_SWITCH) == "0" or config.freeze_backbone
            or not sys.executable):
        return None
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))       # holds tinycnn/ and kernels/
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    try:
        return subprocess.Popen([sys.executable, "-m", "tinycnn.compile_ahead", json.dumps(config.to_dict()),
                                 str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=environment)
    except OSError:                             # no process to spare: the training process compiles everything
        return None


def stop(process):
    """End the helper ``process`` from :func:`start` (None: nothing to do) if it is still running."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class CompileFilter:
    """Inside ``with CompileFilter() as compiles:`` numba compiles no kernel called from Python and calls no
    such kernel that is not compiled yet (the call returns None at once), until ``compiles.start()``; from
    then on it compiles the kernels met for the first time, and still skips those met before.

    Kernels already compiled in this process run as usual, and a kernel's own callees (compiled as part of
    it) always compile. The filter replaces ``compile``, ``_compile_for_args`` and ``disable_compile`` of
    numba's ``Dispatcher`` class while it is active (the last so that a kernel closed to new signatures
    after compiling them, :mod:`kernels._gemm`, stays open to the skipping); :meth:`supported` says
    whether this numba has them.
    """

    _METHODS = ("compile", "_compile_for_args", "disable_compile")

    def __init__(self):
        self.skipped = set()                    # the dispatchers met before start(): their calls are skipped
        self.compiling = False
        self._depth = 0                         # > 0 inside a real compile, where callees compile too

    @classmethod
    def supported(cls):
        """Does this numba's ``Dispatcher`` have the methods the filter replaces?"""
        from numba.core.dispatcher import Dispatcher
        return all(callable(getattr(Dispatcher, name, None)) for name in cls._METHODS)

    def start(self):
        """From now on compile the kernels not met so far."""
        self.compiling = True

    def _skips(self, dispatcher):
        if self._depth:                         # a callee of a kernel being compiled
            return False
        if not self.compiling:
            self.skipped.add(dispatcher)
        return dispatcher in self.skipped

    def _really(self, method, *args, **kwargs):
        self._depth += 1
        try:
            return method(*args, **kwargs)
        finally:
            self._depth -= 1

    def __enter__(self):
        from numba.core.dispatcher import Dispatcher
        self._originals = {name: Dispatcher.__dict__.get(name) for name in self._METHODS}
        real_compile, real_compile_for_args = Dispatcher.compile, Dispatcher._compile_for_args

        def compile(dispatcher, signature):
            return None if self._skips(dispatcher) else self._really(real_compile, dispatcher, signature)

        def compile_for_args(dispatcher, *args, **kwargs):
            # numba calls what this returns: for a skipped kernel, a function that does nothing
            if self._skips(dispatcher):
                return _nothing
            return self._really(real_compile_for_args, dispatcher, *args, **kwargs)

        Dispatcher.compile, Dispatcher._compile_for_args = compile, compile_for_args
        Dispatcher.disable_compile = lambda dispatcher, value=True: None
        return self

    def __exit__(self, *exception):
        from numba.core.dispatcher import Dispatcher
        for name, original in self._originals.items():
            if original is None:                # inherited: without the replacement the base class's shows again
                delattr(Dispatcher, name)
            else:
                setattr(Dispatcher, name, original)
        return False


def _nothing(*args, **kwargs):
    return None


def compile_training_step_gradients(settings, seed=0):
    """Make one training step of a run's model on random data with :class:`CompileFilter`: the forward
    skipped, then the backward, the optimizer step and an evaluation forward compiled (module docstring).

    Parameters
    ----------
    settings : dict
        A resolved :class:`tinycnn.run.TrainConfig` as ``to_dict()`` gives it; read are ``model``,
        ``width_mult``, ``image_size``, ``batch_size``, ``optimizer``, ``lr``, ``weight_decay``,
        ``label_smoothing`` and ``classes``.
    seed : int -- of the random images (N, 3, S, S) and labels

    Returns
    -------
    skipped : list of str, sorted: the names of the kernels skipped
    refused : list of str: the parts (``"backward"``, ``"optimizer step"``, ``"evaluation"``) that a check
        ended early, refusing the zeros a skipped kernel left (a max pool's argmax): each part before the
        check compiled its kernels, and the next part still runs

    The step is the Trainer's (:meth:`tinycnn.train.Trainer.train_epoch`, then
    :meth:`~tinycnn.train.Trainer.evaluate` on a validation batch of ``max(batch_size, 128)`` images), so
    its kernels meet the same argument types; the classifier's size changes no kernel's types.
    """
    from kernels._jit import one_blas_thread

    from . import losses, models, nn
    from .train import make_optimizer

    classes = len(settings["classes"]) if settings.get("classes") else 10
    width = settings.get("width_mult")
    model = models.get_model(settings["model"], num_classes=classes, **({} if width is None else {"width_mult": width}))
    optimizer = make_optimizer(settings["optimizer"], model, settings["lr"], settings["weight_decay"])
    criterion = losses.CrossEntropyLoss(label_smoothing=settings["label_smoothing"])
    rng = np.random.default_rng(seed)
    batch, size = settings["batch_size"], settings["image_size"]
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    x_val = rng.standard_normal((max(batch, 128), 3, size, size)).astype(np.float32)

    def evaluate():
        model.eval()
        with nn.no_grad():
            model(x_val)

    refused = []
    with CompileFilter() as compiles, one_blas_thread(), np.errstate(all="ignore"):
        model.train()
        model.zero_grad()
        with _zero_filled_allocations():        # the outputs of the skipped kernels stay zeros
            criterion(model(x), y)
        compiles.start()
        for name, part in (("backward", lambda: model.backward(criterion.backward())),
                           ("optimizer step", optimizer.step), ("evaluation", evaluate)):
            try:
                part()
            except ValueError:
                # a check refused what a skipped kernel left: a max pool's argmax of zeros is outside most
                # windows (kernels._validate); the kernels met before it are compiled, the next part goes on
                refused.append(name)
    return sorted(dispatcher.py_func.__qualname__ for dispatcher in compiles.skipped), refused


@contextlib.contextmanager
def _zero_filled_allocations():
    """``np.empty`` and ``np.empty_like`` give zeros meanwhile: a skipped kernel leaves its output as
    allocated, and later kernels and checks read it; zeros are finite numbers and indices inside the array
    (a max pool's argmax), where ``np.empty``'s leftovers could be anything.

    Only around the helper's forward, where nothing compiles: numba takes a kernel's ``np.empty`` for
    whatever the name holds when it compiles, so a kernel compiled inside would fill its buffers with zeros,
    and keep doing so from numba's cache in the training process."""
    empty, empty_like = np.empty, np.empty_like
    np.empty, np.empty_like = np.zeros, np.zeros_like
    try:
        yield
    finally:
        np.empty, np.empty_like = empty, empty_like


def _exit_with_parent(parent):
    """Exit as soon as process ``parent`` (the one that started this one) is no longer this process's
    parent: it has ended, or was killed (also before this process got here)."""
    def watch():
        while os.getppid() == parent:
            threading.Event().wait(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def run_as_background_helper(parent):
    """Make this process a helper in the background of process ``parent``, which started it: it exits as soon
    as ``parent`` is gone (:func:`_exit_with_parent`) and runs at the lowest priority, so the process it helps
    comes first. The helper here (:func:`main`) and the test suite's warm-up process (``tests/conftest.py``)."""
    _exit_with_parent(parent)
    if hasattr(os, "nice"):
        os.nice(19)


def main(argv=None):
    """``python -m tinycnn.compile_ahead SETTINGS_JSON [PARENT_PID]``: the helper process (see :func:`start`)."""
    argv = sys.argv[1:] if argv is None else argv
    run_as_background_helper(int(argv[1]) if len(argv) > 1 else os.getppid())
    if not CompileFilter.supported():
        return 0
    compile_training_step_gradients(json.loads(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
