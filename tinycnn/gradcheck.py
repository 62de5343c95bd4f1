"""Finite-difference gradient checking that users can call on their own layers.

A hand-written ``backward`` is easy to get subtly wrong. ``gradcheck`` compares it with numbers
obtained from ``forward`` alone. It turns the layer into a scalar function with a random upstream
gradient ``v``:

    L(x, theta) = sum(v * forward(x; theta))          so   dL/dx = backward(v)

and, for a random direction ``d`` (and for a few single entries), compares the analytic directional
derivative ``vdot(dL/dx, d)`` with the central difference

    (L(x + eps*d) - L(x - eps*d)) / (2*eps)           error O(eps**2) + rounding O(u * |L| / eps)

and the same for every parameter. Everything runs in float64 (u = 1.1e-16): with eps = 1e-6 both
error terms are ~1e-12 relative, far below the tolerance, while a wrong backward is off by O(1).
In float32 (u = 6e-8) no eps gives a useful check, which is why inputs and parameters are converted.

Example::

    from tinycnn import gradcheck
    report = gradcheck(nn.Conv2d(3, 4, 3, padding=1), np.random.randn(2, 3, 5, 5))
    print(report)                 # one row per check: analytic, numeric, relative error, ok
    assert report.passed

Two kinds of target are accepted:

* a **module**: an object with ``forward(x)`` and ``backward(grad_out) -> grad_x`` whose
  ``backward`` *adds* the parameter gradients into ``param.grad`` (the ``tinycnn.nn`` convention);
  parameters come from ``named_parameters()`` (or ``parameters()``). The module is deep-copied and
  the copy's parameters and float arrays are converted to float64, so the original is untouched.
  Layers with randomness (``Dropout`` in training mode) must be put in ``eval()`` first.
* a **function** ``f(x) -> (y, backward_fn)`` where ``backward_fn(grad_y) -> grad_x``: the closure
  keeps whatever the backward needs. Example: ``lambda x: (np.tanh(x), lambda g: g * (1 - np.tanh(x)**2))``.
"""
import copy
import numbers
from dataclasses import dataclass, field

import numpy as np

__all__ = ["gradcheck", "GradcheckReport", "GradcheckResult"]


@dataclass
class GradcheckResult:
    """One comparison of an analytic and a numeric directional derivative."""

    tensor: str          # "input" or a parameter name
    check: str           # "direction 0", "entry (0, 1, 2, 3)", ...
    analytic: float      # vdot(backward gradient, direction)
    numeric: float       # central difference along the direction
    abs_error: float
    rel_error: float     # |analytic - numeric| / max(|analytic|, |numeric|)
    passed: bool


@dataclass
class GradcheckReport:
    """All comparisons made by :func:`gradcheck`; ``passed`` is True when every one passed."""

    results: list = field(default_factory=list)
    eps: float = 1e-6
    rtol: float = 1e-5
    atol: float = 1e-8
    notes: list = field(default_factory=list)

    @property
    def passed(self):
        return all(result.passed for result in self.results)

    @property
    def failures(self):
        return [result for result in self.results if not result.passed]

    def __bool__(self):
        return self.passed

    def max_rel_error(self, tensor=None):
        """Largest relative error over all checks (or over the checks of one tensor)."""
        errors = [r.rel_error for r in self.results if tensor is None or r.tensor == tensor]
        return max(errors, default=0.0)

    def assert_passed(self):
        """Raise ``AssertionError`` listing every failed check (do nothing if all passed)."""
        if not self.passed:
            rows = "\n".join(_format_row(result) for result in self.failures)
            raise AssertionError(f"gradcheck failed for {len(self.failures)} of {len(self.results)} checks "
                                 f"(pass if |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|), "
                                 f"atol={self.atol:g}, rtol={self.rtol:g}, eps={self.eps:g}):\n"
                                 f"{_HEADER}\n{rows}")

    def __str__(self):
        status = "PASSED" if self.passed else f"FAILED ({len(self.failures)} of {len(self.results)} checks)"
        lines = [f"gradcheck {status}  (float64, eps={self.eps:g}, rtol={self.rtol:g}, atol={self.atol:g})"]
        lines += [f"note: {note}" for note in self.notes]
        lines.append(_HEADER)
        lines += [_format_row(result) for result in self.results]
        return "\n".join(lines)


_HEADER = f"{'tensor':<24} {'check':<22} {'analytic':>14} {'numeric':>14} {'abs. error':>10} {'rel. error':>10}  ok"


def _format_row(result):
    return (f"{result.tensor:<24} {result.check:<22} {result.analytic:>14.6e} {result.numeric:>14.6e} "
            f"{result.abs_error:>10.2e} {result.rel_error:>10.2e}  {'yes' if result.passed else 'NO'}")


# --------------------------------------------------------------------------------------------------
# Preparing the target: everything in float64
# --------------------------------------------------------------------------------------------------

def _is_module(target):
    return hasattr(target, "forward") and hasattr(target, "backward")


def _named_parameters(module):
    if hasattr(module, "named_parameters"):
        return list(module.named_parameters())
    if hasattr(module, "parameters"):
        return [(f"param{i}", p) for i, p in enumerate(module.parameters())]
    return []


def _submodules(module):
    return list(module.modules()) if hasattr(module, "modules") else [module]


def _module_in_float64(module):
    """A deep copy of ``module`` whose parameters and float array attributes (buffers) are float64."""
    module = copy.deepcopy(module)
    for _, param in _named_parameters(module):
        param.data = np.asarray(param.data, dtype=np.float64).copy()
        param.grad = np.zeros_like(param.data)
    for submodule in _submodules(module):
        attributes = vars(submodule)
        containers = [attributes] + [value for value in attributes.values() if isinstance(value, dict)]
        for container in containers:                    # plain attributes and dicts of buffers
            for name, value in container.items():
                if isinstance(value, np.ndarray) and value.dtype == np.float32:
                    container[name] = value.astype(np.float64)
    return module


def _as_float64_input(x, notes):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray; got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"x must be a floating-point array; got dtype {x.dtype}")
    if x.dtype != np.float64:
        notes.append(f"input converted from {x.dtype} to float64 (a copy; finite differences need float64)")
    return np.array(x, dtype=np.float64, copy=True)


# --------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------

def gradcheck(module_or_fn, x, grad_out=None, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0, check_params=True,
              check_input=True, n_directions=2, n_entries=3, raise_on_fail=False):
    """Check a module's (or function's) backward against central finite differences, in float64.

    Parameters
    ----------
    module_or_fn : module (``forward``/``backward``, parameters with ``.data``/``.grad``) or
        function ``f(x) -> (y, backward_fn)``; see the module docstring.
    x : ndarray, any shape, floating point (a float64 copy is used).
    grad_out : ndarray of the output's shape, optional
        The upstream gradient ``v``; random normal (from ``seed``) if omitted.
    eps : float
        Finite-difference step along each direction (directions have N(0, 1) entries).
    rtol, atol : float
        A check passes if ``|analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|)``.
    seed : int
        Seeds ``v``, the directions and the chosen entries: the check is reproducible.
    check_params, check_input : bool
        Which gradients to check (parameters are checked only for modules).
    n_directions : int
        Random directions per tensor (each checks every entry of the gradient at once).
    n_entries : int
        Single entries per tensor, checked one at a time (direction = a one-hot array).
    raise_on_fail : bool
        Raise ``AssertionError`` listing the failed checks instead of just reporting them.

    Returns
    -------
    GradcheckReport
        ``.passed``, ``.results`` (tensor, check, analytic, numeric, abs/rel error, passed),
        ``.failures``; ``print(report)`` shows a table.
    """
    for name, value in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0 \
                or (name == "eps" and value == 0):
            raise ValueError(f"{name} must be a non-negative number (eps > 0); got {value!r}")
    for name, value in (("n_directions", n_directions), ("n_entries", n_entries)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name} must be a non-negative int; got {value!r}")
    rng = np.random.default_rng(seed)
    report = GradcheckReport(eps=float(eps), rtol=float(rtol), atol=float(atol))
    x = _as_float64_input(x, report.notes)

    if _is_module(module_or_fn):
        module = _module_in_float64(module_or_fn)
        named_params = _named_parameters(module) if check_params else []

        def run_forward(inputs):
            return np.asarray(module.forward(inputs), dtype=np.float64)

        def run_backward(inputs, upstream):
            for _, param in named_params:
                param.grad = np.zeros_like(param.data)
            module.forward(inputs)                  # refresh the caches backward relies on
            return module.backward(upstream)
    elif callable(module_or_fn):
        named_params = []

        def run_forward(inputs):
            y, _ = _call_function(module_or_fn, inputs)
            return y

        def run_backward(inputs, upstream):
            _, backward_fn = _call_function(module_or_fn, inputs)
            return backward_fn(upstream)
    else:
        raise TypeError("module_or_fn must be a module (with forward and backward) or a function "
                        f"f(x) -> (y, backward_fn); got {type(module_or_fn).__name__}")

    y = run_forward(x.copy())
    if grad_out is None:
        upstream = rng.standard_normal(y.shape)
    else:
        upstream = np.array(grad_out, dtype=np.float64, copy=True)
        if upstream.shape != y.shape:
            raise ValueError(f"grad_out must have the output's shape {y.shape}; got {upstream.shape}")

    grad_x = run_backward(x.copy(), upstream.copy())
    analytic_grads = {}
    if check_input:
        if grad_x is None or np.shape(grad_x) != x.shape:
            raise ValueError(f"backward must return the input gradient of shape {x.shape}; "
                             f"got {None if grad_x is None else np.shape(grad_x)} "
                             "(pass check_input=False to check only the parameters)")
        analytic_grads["input"] = np.asarray(grad_x, dtype=np.float64)
    for name, param in named_params:
        if param.grad is None or np.shape(param.grad) != param.data.shape:
            raise ValueError(f"after backward, parameter {name!r} has no gradient of shape {param.data.shape}")
        analytic_grads[name] = np.array(param.grad, dtype=np.float64, copy=True)

    def objective():
        """L = sum(v * forward(x)) at the current x and parameters."""
        return float(np.vdot(upstream, run_forward(x.copy())))

    tensors = ([("input", x)] if check_input else []) + [(name, p.data) for name, p in named_params]
    for name, array in tensors:
        for check, direction in _directions(array.shape, rng, n_directions, n_entries):
            original = array.copy()
            array += eps * direction
            plus = objective()
            array[...] = original - eps * direction
            minus = objective()
            array[...] = original                       # restore exactly
            numeric = (plus - minus) / (2 * eps)
            analytic = float(np.vdot(analytic_grads[name], direction))
            report.results.append(_compare(name, check, analytic, numeric, rtol, atol))

    if raise_on_fail:
        report.assert_passed()
    return report


def _call_function(fn, inputs):
    result = fn(inputs)
    if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
        raise TypeError("a function passed to gradcheck must return (y, backward_fn) with "
                        "backward_fn(grad_y) -> grad_x")
    return np.asarray(result[0], dtype=np.float64), result[1]


def _directions(shape, rng, n_directions, n_entries):
    """Yield ``(label, direction)``: random N(0, 1) directions, then a few one-hot entries."""
    for number in range(n_directions):
        yield f"direction {number}", rng.standard_normal(shape)
    size = int(np.prod(shape))
    for flat_index in rng.choice(size, size=min(n_entries, size), replace=False):
        one_hot = np.zeros(shape)
        one_hot.flat[flat_index] = 1.0
        yield f"entry {tuple(int(i) for i in np.unravel_index(flat_index, shape))}", one_hot


def _compare(name, check, analytic, numeric, rtol, atol):
    abs_error = abs(analytic - numeric)
    scale = max(abs(analytic), abs(numeric))
    rel_error = abs_error / scale if scale > 0 else 0.0
    passed = bool(abs_error <= atol + rtol * scale)
    return GradcheckResult(name, check, analytic, numeric, abs_error, rel_error, passed)
