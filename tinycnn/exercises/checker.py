"""The exercise checker: run a student's function on fresh cases, compare, and diagnose the mistake.

An :class:`Exercise` holds

* ``reference``: what the right answer is, computed by ``kernels.reference``, the layers or the profiler;
* ``solution``: a model answer written the way a student would (loops, formulas); the tests check that
  it agrees with ``reference``, and the source notebooks carry the same code;
* ``make_cases(rng)``: the inputs, made at check time from a fresh seed (tiny hand-checkable cases
  first, then random shapes, strides, paddings, dtypes and edge cases), so answers cannot be hard-coded;
* ``mistakes``: the usual wrong answers, each a *mutant* implementation with a hint. When the student's
  output equals a mutant's output (and the mutant's differs from the right answer), the message names
  that mistake.

:func:`check` calls the student's function positionally, in the order of the exercise's signature, on
copies of the inputs (a function that writes into its arguments cannot spoil the next case).
"""
import numbers
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

# Relative tolerance per dtype. Students sum in a different order than the reference (loops vs
# vectorised): each float32 rounding costs up to 6e-8 relative, and our cases sum at most a few hundred
# terms, so 1e-4 relative to the largest magnitude is ample and still catches every catalogued mistake
# (they change values by whole terms). float64 leaves the same room for 1e-16 roundings: 1e-9.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9}
SCALAR_RTOL = 1e-9     # Python floats (ratios of integer counts) are float64
FLOAT_DTYPES = (np.float32, np.float64)     # the dtypes random cases draw from


@dataclass(frozen=True)
class Mistake:
    """A usual mistake: ``function`` (same signature as the exercise) and the hint shown when it matches."""
    hint: str
    function: Callable


@dataclass(frozen=True)
class Exercise:
    """One exercise: a function to write, its reference, model solution, cases and catalogued mistakes."""
    name: str
    topic: str
    statement: str                    # one line, shown by list_exercises()
    signature: str                    # e.g. "conv_output_size(size, kernel, stride=1, padding=0, dilation=1) -> int"
    reference: Callable
    solution: Callable
    make_cases: Callable              # rng -> list of dicts {argument name: value}, in signature order
    mistakes: tuple = ()
    output_name: str = "result"       # how messages call the returned value ("y", "grad_x", ...)


@dataclass
class CaseResult:
    """One case: its ``inputs`` (argument name -> value), whether it ``passed``, and what was wrong."""
    inputs: dict
    passed: bool
    message: str = ""


@dataclass
class CheckResult:
    """What :func:`check` found.

    Attributes
    ----------
    name : str
    passed : bool
        Every case passed.
    score : float in [0, 1]
        Fraction of the cases passed.
    message : str
        One paragraph: "passed all 12 cases", or the first failing case, what differs, and the hint.
    cases : list of CaseResult
    """
    name: str
    passed: bool
    score: float
    message: str
    cases: list = field(default_factory=list)

    def __str__(self):
        return self.message


CATALOGUE = {}


def register(exercise):
    """Add ``exercise`` to the catalogue (each topic module registers its exercises on import)."""
    if exercise.name in CATALOGUE:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    CATALOGUE[exercise.name] = exercise
    return exercise


def get_exercise(name):
    """The :class:`Exercise` called ``name``; ``ValueError`` listing the names if there is none."""
    if not isinstance(name, str) or name not in CATALOGUE:
        raise ValueError(f"unknown exercise {name!r}; the exercises are: {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


def list_exercises(topic=None):
    """``{name: one-line statement}`` of every exercise (of one ``topic`` if given), in teaching order."""
    return {name: exercise.statement for name, exercise in CATALOGUE.items()
            if topic is None or exercise.topic == topic}


# --------------------------------------------------------------------------------------- comparing
def _format_number(value):
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return repr(value.item() if isinstance(value, np.generic) else value)


def describe_value(value):
    """Short text for an input or output: arrays as ``shape dtype``, tiny ones in full."""
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return np.array2string(value, separator=", ").replace("\n", "") + f" ({value.dtype})"
        return f"array{value.shape} {value.dtype}"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{type(value).__name__} of {len(value)} items"
    return _format_number(value) if isinstance(value, (numbers.Number, np.generic)) else repr(value)


def _type_name(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    return f"a {type(value).__name__}"


def _is_integer(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_))


def compare(expected, got, name="result"):
    """``None`` if ``got`` equals ``expected`` (within the dtype's tolerance), else what differs first.

    Arrays must match in type, shape and dtype, then values (``name[i, j, ...] = got, expected ...`` at
    the first wrong position, row-major). Ints must be ints and equal, floats close, tuples and dicts
    are compared element by element (``name[0]``, ``name['macs']``).
    """
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{name} is {_type_name(got)}; expected a dict with keys {list(expected)}"
        missing = [key for key in expected if key not in got]
        if missing:
            return f"{name} has no key(s) {missing}; expected the keys {list(expected)}"
        return next((problem for key in expected
                     if (problem := compare(expected[key], got[key], f"{name}[{key!r}]"))), None)
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            what = f"{len(got)} values" if isinstance(got, (tuple, list)) else _type_name(got)
            return f"{name} is {what}; expected a tuple of {len(expected)} values"
        return next((problem for index, (want, have) in enumerate(zip(expected, got))
                     if (problem := compare(want, have, f"{name}[{index}]"))), None)
    if isinstance(expected, np.ndarray):
        if not isinstance(got, np.ndarray):
            return (f"{name} is {_type_name(got)}; expected a numpy array of shape {expected.shape} "
                    f"and dtype {expected.dtype}")
        if got.shape != expected.shape:
            return f"{name} has shape {got.shape}; expected shape {expected.shape}"
        if got.dtype != expected.dtype:
            return f"{name} has dtype {got.dtype}; expected dtype {expected.dtype}"
        if expected.dtype.kind == "f":
            scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
            close = np.isclose(got, expected, rtol=0.0, atol=RTOL[expected.dtype] * scale)
        else:
            close = got == expected
        if close.all():
            return None
        index = tuple(int(i) for i in np.argwhere(~close)[0])
        return (f"{name}[{', '.join(map(str, index))}] = {_format_number(got[index])}, "
                f"expected {_format_number(expected[index])}")
    if _is_integer(expected):
        if not _is_integer(got):
            shown = "" if isinstance(got, np.ndarray) else f" {got!r}"
            return f"{name} is {_type_name(got)}{shown}; expected a single int, {int(expected)}"
        if int(got) != int(expected):
            return f"{name} = {int(got)}, expected {int(expected)}"
        return None
    if _is_real(expected):
        if not _is_real(got):
            return f"{name} is {_type_name(got)}; expected a single number, {_format_number(expected)}"
        if not np.isclose(float(got), float(expected), rtol=SCALAR_RTOL, atol=0.0):
            return f"{name} = {_format_number(got)}, expected {_format_number(expected)}"
        return None
    raise TypeError(f"the checker cannot compare a reference result of type {type(expected).__name__}")


# ----------------------------------------------------------------------------------------- running
def _copy(inputs):
    """Deep enough copies of a case's arguments: arrays copied, lists of tuples rebuilt."""
    return {key: (value.copy() if isinstance(value, np.ndarray) else
                  [tuple(item) if isinstance(item, tuple) else item for item in value]
                  if isinstance(value, list) else value)
            for key, value in inputs.items()}


def _call(function, inputs):
    return function(*_copy(inputs).values())


def _where_it_raised(error):
    """``' (line 7: return x / 0)'`` for the innermost frame of the student's code, or ``''``."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename != __file__]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (line {frame.lineno}: {frame.line})" if frame.line else f" (line {frame.lineno})"


def describe_inputs(inputs):
    """``size=7, kernel=3, stride=2`` with arrays shown as shape and dtype."""
    return ", ".join(f"{key}={describe_value(value)}" for key, value in inputs.items())


def _run_case(exercise, student_fn, inputs):
    """(passed, message) of one case; the message diagnoses a failure."""
    expected = _call(exercise.reference, inputs)
    try:
        got = _call(student_fn, inputs)
    except NotImplementedError:
        return False, f"not implemented yet: {exercise.name} raised NotImplementedError (replace the stub's raise)"
    except Exception as error:      # the student's bug, reported in one line instead of a traceback
        return False, (f"your function raised {type(error).__name__}: {error}{_where_it_raised(error)}")
    problem = compare(expected, got, exercise.output_name)
    if problem is None:
        return True, ""
    for mistake in exercise.mistakes:
        try:
            mutant = _call(mistake.function, inputs)
        except Exception:           # a mutant that cannot run on this case cannot be what the student did
            continue
        if compare(expected, mutant, exercise.output_name) is not None and \
                compare(mutant, got, exercise.output_name) is None:
            return False, f"{problem}: {mistake.hint}"
    return False, problem


def check(name, student_fn, verbose=True, seed=None):
    """Check ``student_fn`` against exercise ``name`` on freshly generated cases.

    Parameters
    ----------
    name : str
        An exercise of :func:`list_exercises`.
    student_fn : callable
        Called positionally with the exercise's arguments (in its signature's order).
    verbose : bool
        Print the result's message.
    seed : int or None
        Seed of the random cases (None: fresh entropy every call, as in class).

    Returns
    -------
    CheckResult
        ``.passed``, ``.score`` (fraction of cases passed), ``.message`` (the first failure with its
        diagnosis), ``.cases``. A student function that raises, or returns the wrong type, shape or
        dtype fails with a message saying so; nothing it does raises out of ``check``.
    """
    exercise = get_exercise(name)
    if not callable(student_fn):
        raise TypeError(f"student_fn must be a function; got {type(student_fn).__name__}")
    cases = exercise.make_cases(np.random.default_rng(seed))
    results = []
    for inputs in cases:
        passed, message = _run_case(exercise, student_fn, inputs)
        results.append(CaseResult(inputs=inputs, passed=passed, message=message))
    failures = [index for index, result in enumerate(results) if not result.passed]
    if not failures:
        message = f"{name}: passed all {len(results)} cases."
    else:
        first = failures[0]
        message = (f"{name}: failed {len(failures)} of {len(results)} cases. First failure, case {first + 1} "
                   f"({describe_inputs(results[first].inputs)}): {results[first].message}")
    result = CheckResult(name=name, passed=not failures, score=(len(results) - len(failures)) / len(results),
                         message=message, cases=results)
    if verbose:
        print(("PASSED " if result.passed else "FAILED ") + message)
    return result
