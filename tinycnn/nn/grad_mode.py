"""``no_grad()``: forward passes for inference only, as ``torch.no_grad()``.

Every layer's ``forward`` normally keeps what its ``backward`` will need (its input, a mask, the
normalised values). Inside ``with tinycnn.nn.no_grad():`` the model promises that no ``backward``
follows, which allows two things:

* a convolution, the batch norm after it (running statistics) and a ReLU/ReLU6 after that run as one
  convolution plus one pass over its output (:mod:`tinycnn.nn.fusion`): no separate pass per layer;
* the layers that ran that way keep nothing, and their ``backward`` raises ``RuntimeError`` saying why.

Results are bit-identical to the same model called outside ``no_grad()`` (the arithmetic is the same,
only the passes are merged). The mode is per thread; ``no_grad()`` blocks nest.

Example::

    model.eval()
    with nn.no_grad():
        logits = model(images)          # (N, num_classes)
"""
import contextlib
import threading

_STATE = threading.local()          # .enabled: False inside no_grad() on this thread


def is_grad_enabled():
    """False inside a :func:`no_grad` block on this thread, True otherwise."""
    return getattr(_STATE, "enabled", True)


@contextlib.contextmanager
def no_grad():
    """Inside this ``with`` block forward passes keep nothing for backward and fuse layers (module docstring)."""
    previous = is_grad_enabled()
    _STATE.enabled = False
    try:
        yield
    finally:
        _STATE.enabled = previous
