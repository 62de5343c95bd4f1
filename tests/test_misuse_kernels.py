"""Issue 12 probes on the public kernels: huge integer arguments and inconsistent backward shapes.

Integers of 2**63 and above used to pass the checks and fail inside numba (TypingError/OverflowError);
the shared validator now bounds every integer argument at 2**31 - 1 with a ``ValueError`` naming it.
"""
import numba
import numpy as np
import pytest

import kernels
from kernels import reference

HUGE = [2**31, 2**63, 2**64 + 1]
X = np.ones((1, 2, 6, 6))


def _conv_calls(value):
    """One call per (public kernel, integer argument) with that argument set to ``value``."""
    w = np.ones((2, 2, 3, 3))
    dw = np.ones((2, 1, 3, 3))
    g = np.ones((1, 2, 6, 6))
    for name in ("stride", "padding", "dilation", "groups"):
        yield f"conv2d_forward-{name}", name, lambda k, name=name: k.conv2d_forward(X, w, **{name: value})
        yield f"conv2d_backward_input-{name}", name, lambda k, name=name: k.conv2d_backward_input(
            g, w, X.shape, **{name: value})
        yield f"conv2d_backward_weight-{name}", name, lambda k, name=name: k.conv2d_backward_weight(
            g, X, w.shape, **{name: value})
        yield f"conv_transpose2d_forward-{name}", name, lambda k, name=name: k.conv_transpose2d_forward(
            X, w, **{name: value})
    for name in ("stride", "padding", "dilation"):
        yield f"depthwise_conv2d_forward-{name}", name, lambda k, name=name: k.depthwise_conv2d_forward(
            X, dw, **{name: value})
        yield f"depthwise_conv2d_backward_input-{name}", name, lambda k, name=name: (
            k.depthwise_conv2d_backward_input(g, dw, X.shape, **{name: value}))
    yield "pointwise_conv2d_forward-groups", "groups", lambda k: k.pointwise_conv2d_forward(
        X, np.ones((2, 2, 1, 1)), groups=value)
    yield "conv_transpose2d_forward-output_padding", "output_padding", lambda k: k.conv_transpose2d_forward(
        X, w, output_padding=value)
    for name in ("kernel_size", "stride", "padding"):
        arguments = {"kernel_size": 2, name: value}
        yield f"max_pool2d_forward-{name}", name, lambda k, a=arguments: k.max_pool2d_forward(X, **a)
        yield f"avg_pool2d_forward-{name}", name, lambda k, a=arguments: k.avg_pool2d_forward(X, **a)
        yield f"avg_pool2d_backward-{name}", name, lambda k, a=arguments: k.avg_pool2d_backward(
            np.ones((1, 2, 3, 3)), X.shape, **a)
        yield f"max_pool2d_backward-{name}", name, lambda k, a=arguments: k.max_pool2d_backward(
            np.ones((1, 2, 3, 3)), np.zeros((1, 2, 3, 3), np.int64), X.shape, **a)
    yield "global_avg_pool2d_backward-input_shape", "input_shape", lambda k: k.global_avg_pool2d_backward(
        np.ones((1, 2, 1, 1)), (1, 2, value, 6))
    yield "conv2d_backward_input-input_shape", "input_shape", lambda k: k.conv2d_backward_input(
        g, w, (1, 2, value, 6))


CASES = [pytest.param(value, argument, make, id=f"{case}-2**{value.bit_length() - 1}")
         for value in HUGE for case, argument, make in _conv_calls(value)]


@pytest.mark.nojit
@pytest.mark.parametrize("implementation", [kernels, reference], ids=["numba", "reference"])
@pytest.mark.parametrize("value, argument, make", CASES)
def test_huge_integer_arguments_are_refused_naming_the_argument(implementation, value, argument, make):
    with pytest.raises(ValueError, match=rf"{argument} must be at most 2\*\*31 - 1") as info:
        make(implementation)
    assert type(info.value) is ValueError and not isinstance(info.value, numba.core.errors.NumbaError)


@pytest.mark.parametrize("implementation", [kernels, reference], ids=["numba", "reference"])
def test_max_pool2d_backward_refuses_an_input_shape_larger_than_the_forward_input(implementation):
    """The probe: a larger input_shape used to scatter the gradients into the wrong pixels silently."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y, argmax = implementation.max_pool2d_forward(x, 2)
    grad = np.ones_like(y)
    with pytest.raises(ValueError, match=r"input_shape must be the forward input's shape"):
        implementation.max_pool2d_backward(grad, argmax, (1, 1, 8, 8), 2)
    with pytest.raises(ValueError, match=r"input_shape must be the forward input's shape"):
        implementation.max_pool2d_backward(grad, argmax, (1, 1, 4, 5), 2)   # same plane, different W
    grad_x = implementation.max_pool2d_backward(grad, argmax, x.shape, 2)
    np.testing.assert_array_equal(np.argwhere(grad_x[0, 0] == 1), [[1, 1], [1, 3], [3, 1], [3, 3]])
