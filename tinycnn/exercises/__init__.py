"""Classroom exercises: functions to write, checked on fresh cases, with the usual mistakes diagnosed.

::

    from tinycnn.exercises import check, list_exercises
    list_exercises()                        # {name: one-line statement}
    check("conv_output_size", conv_output_size)
    # PASSED conv_output_size: passed all 25 cases.

Each exercise compares the student's function with ``kernels.reference``, the layers or the profiler on
cases made at check time (tiny hand-checkable ones first, then random shapes, strides, paddings and
dtypes), and names the mistake when the output equals a catalogued wrong implementation ("your output
is what convolution with a flipped kernel gives"). :mod:`.release` turns source notebooks (solutions
between ``### BEGIN SOLUTION`` / ``### END SOLUTION``) into student notebooks; :mod:`.grade` executes a
class's submissions and writes a gradebook.
"""
from .checker import CATALOGUE, CaseResult, CheckResult, Exercise, Mistake, check, get_exercise, list_exercises
from . import convolutions, costs, blocks, compression, training  # noqa: F401  (register the exercises, in teaching order)

__all__ = ["CaseResult", "CheckResult", "Exercise", "Mistake", "check", "get_exercise", "list_exercises"]
