"""Bad arguments to the public convolution kernels raise a clear ``ValueError``/``TypeError``.

Every public function of ``kernels/conv2d.py``, ``kernels/depthwise.py`` and ``kernels/pointwise.py``
validates its arguments in Python before any compiled code runs. For each kind of mistake a user can make
(wrong number of dimensions, wrong channel count, groups that do not divide the channels, mixed or
unsupported dtypes, stride / dilation < 1, negative padding, an empty output, a stride that is not an int
or a pair, a ``grad_out`` of the wrong shape, an ``input_shape`` of the wrong length, a list instead of an
array, a depthwise weight that is not ``(C*m, 1, kH, kW)``, a pointwise weight that is not 1x1, a bad
bias) each test asserts:

* the exception type, *exactly* (``type(error) is ValueError``): numba's own error classes subclass
  ``TypeError``, so ``pytest.raises(TypeError)`` alone would let a numba typing error pass;
* that the message names the offending argument (``match=``), so a student can fix the call.

Each case starts from a *valid* call (``valid_call``) and changes one argument, so the error can only come
from that argument. ``test_valid_calls_succeed`` proves the starting points are valid.
"""
import numba
import numpy as np
import pytest

from kernels import _validate
from kernels.conv2d import conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight, conv2d_forward
from kernels.depthwise import (depthwise_conv2d_backward_input, depthwise_conv2d_backward_weight,
                               depthwise_conv2d_forward)
from kernels.pointwise import (pointwise_conv2d_backward_input, pointwise_conv2d_backward_weight,
                               pointwise_conv2d_forward)

FUNCTIONS = {f.__name__: f for f in (
    conv2d_forward, conv2d_backward_input, conv2d_backward_weight, conv2d_backward_bias,
    depthwise_conv2d_forward, depthwise_conv2d_backward_input, depthwise_conv2d_backward_weight,
    pointwise_conv2d_forward, pointwise_conv2d_backward_input, pointwise_conv2d_backward_weight)}
FORWARDS = ["conv2d_forward", "depthwise_conv2d_forward", "pointwise_conv2d_forward"]
BACKWARD_INPUTS = ["conv2d_backward_input", "depthwise_conv2d_backward_input", "pointwise_conv2d_backward_input"]
BACKWARD_WEIGHTS = ["conv2d_backward_weight", "depthwise_conv2d_backward_weight", "pointwise_conv2d_backward_weight"]
CONV_AND_DEPTHWISE = [name for name in FORWARDS + BACKWARD_INPUTS + BACKWARD_WEIGHTS if "pointwise" not in name]
CONV_AND_POINTWISE = [name for name in FORWARDS + BACKWARD_INPUTS + BACKWARD_WEIGHTS if "depthwise" not in name]

X_SHAPE = (2, 4, 7, 6)
WEIGHT_SHAPES = {"conv2d": (6, 2, 3, 3), "depthwise": (4, 1, 3, 3), "pointwise": (6, 4, 1, 1)}
HYPER = {"conv2d": dict(stride=1, padding=1, dilation=1, groups=2),   # output (2, 6, 7, 6)
         "depthwise": dict(stride=1, padding=1, dilation=1),             # output (2, 4, 7, 6)
         "pointwise": dict(groups=1)}                                    # output (2, 6, 7, 6)


def family(name):
    return name.split("_")[0]


def valid_call(name, dtype=np.float32):
    """Keyword arguments of a valid call of ``name`` (float32, batch 2, 4 channels, 7x6 image)."""
    kind = family(name)
    weight_shape = WEIGHT_SHAPES[kind]
    output_shape = (2, weight_shape[0], 7, 6)
    x = np.ones(X_SHAPE, dtype)
    weight = np.ones(weight_shape, dtype)
    grad_out = np.ones(output_shape, dtype)
    if name == "conv2d_backward_bias":
        return dict(grad_out=grad_out)
    if name.endswith("forward"):
        arguments = dict(x=x, weight=weight, bias=np.ones(weight_shape[0], dtype))
    elif name.endswith("backward_input"):
        arguments = dict(grad_out=grad_out, weight=weight, input_shape=X_SHAPE)
    else:
        arguments = dict(grad_out=grad_out, x=x, weight_shape=weight_shape)
    return {**arguments, **HYPER[kind]}


def call(name, **changes):
    arguments = valid_call(name)
    arguments.update(changes)
    return FUNCTIONS[name](**arguments)


def array_arguments(name):
    return [key for key, value in valid_call(name).items() if isinstance(value, np.ndarray)]


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_valid_calls_succeed(name):
    """The starting point of every error case is a valid call (so each error comes from the one change)."""
    result = call(name)
    assert isinstance(result, np.ndarray) and result.dtype == np.float32


# ----------------------------------------------------------------------------------------------------
# The cases: (function, {argument: bad value}, exception type, regex the message must contain)
# ----------------------------------------------------------------------------------------------------
def mixed_dtype_match(name, argument):
    """What the message says when ``argument`` alone is float64 in an otherwise float32 call."""
    if argument in ("grad_out",):
        return r"grad_out is float64"
    if argument in ("x", "weight") and name.endswith(("backward_input", "backward_weight")):
        return r"grad_out is float32, expected float64"     # grad_out no longer matches x / weight
    return rf"{argument}: float64"


def build_cases():
    cases = []

    def add(name, changes, error, match, label):
        cases.append(pytest.param(name, changes, error, match, id=f"{name}-{label}"))

    for name in FUNCTIONS:
        valid = valid_call(name)
        for argument in array_arguments(name):
            array = valid[argument]
            ndim_word = "1-D" if argument == "bias" else "4-D"
            add(name, {argument: np.asarray(array[0])}, ValueError, rf"{argument} must be {ndim_word}", f"{argument}-ndim")
            add(name, {argument: array[None]}, ValueError, rf"{argument} must be {ndim_word}", f"{argument}-ndim+1")
            add(name, {argument: array.tolist()}, TypeError, rf"{argument} must be a numpy.ndarray",
                f"{argument}-list")
            for bad_dtype in (np.int32, np.float16, np.complex128):
                add(name, {argument: array.astype(bad_dtype)}, TypeError,
                    rf"{argument} must have dtype float32 or float64; got {np.dtype(bad_dtype)}",
                    f"{argument}-{np.dtype(bad_dtype)}")
            add(name, {argument: array.astype(">f4")}, TypeError, rf"{argument} must have dtype float32",
                f"{argument}-big-endian")
            add(name, {argument: array[:0]}, ValueError, rf"{argument} must not be empty", f"{argument}-empty")
            if name != "conv2d_backward_bias":
                add(name, {argument: array.astype(np.float64)}, TypeError, mixed_dtype_match(name, argument),
                    f"{argument}-float64-among-float32")

    for name in CONV_AND_DEPTHWISE:
        for argument in ("stride", "padding", "dilation"):
            minimum_word = "non-negative" if argument == "padding" else ">= 1"
            too_small = -1 if argument == "padding" else 0
            add(name, {argument: too_small}, ValueError, rf"{argument} must be {minimum_word}", f"{argument}-too-small")
            add(name, {argument: (1, too_small)}, ValueError, rf"{argument} must be {minimum_word}",
                f"{argument}-pair-too-small")
            for bad in ("2", 1.5, True, None, np.array([1, 2])):
                add(name, {argument: bad}, TypeError, rf"{argument} must be an int or a pair of ints",
                    f"{argument}-{type(bad).__name__}")
            add(name, {argument: (1, 2, 3)}, ValueError, rf"{argument} must be an int or a pair \(h, w\)",
                f"{argument}-triple")
            add(name, {argument: (1,)}, ValueError, rf"{argument} must be an int or a pair \(h, w\)",
                f"{argument}-single")
        # a 3x3 kernel with dilation 4 reaches 9 pixels, more than the 7x6 image
        add(name, {"dilation": 4, "padding": 0}, ValueError, r"output would be -?\d+x-?\d+ \(smaller than 1x1\)",
            "output-empty")
        add(name, {"stride": (1, 2), "dilation": (1, 3), "padding": 0}, ValueError,
            r"output would be 5x0 \(smaller than 1x1\)", "output-empty-width-only")

    for name in CONV_AND_POINTWISE:
        for bad in ("2", 2.0, True, None):
            add(name, {"groups": bad}, TypeError, r"groups must be an int", f"groups-{type(bad).__name__}")
        add(name, {"groups": 0}, ValueError, r"groups must be >= 1", "groups-zero")
        add(name, {"groups": 3}, ValueError, r"groups=3 must divide the input channels", "groups-3-of-4-channels")

    # channel count not matching the weight (the input has 6 channels; the weight expects 4)
    six_channels = (2, 6, 7, 6)
    for name in FORWARDS + BACKWARD_WEIGHTS:
        if "depthwise" in name:
            continue
        add(name, {"x": np.ones(six_channels, np.float32)}, ValueError,
            r"weight expects 4 input channels .* but x has shape \(2, 6, 7, 6\)", "x-channels")
    for name in BACKWARD_INPUTS:
        if "depthwise" in name:
            continue
        add(name, {"input_shape": six_channels}, ValueError,
            r"weight expects 4 input channels .* but input_shape has shape \(2, 6, 7, 6\)", "input_shape-channels")
    # groups dividing the input but not the output channels: 6 inputs in 3 groups, but 4 outputs
    add("conv2d_forward", {"x": np.ones(six_channels, np.float32), "weight": np.ones((4, 2, 3, 3), np.float32),
                           "bias": None, "groups": 3},
        ValueError, r"groups=3 must divide the output channels; weight has shape \(4, 2, 3, 3\)", "groups-outputs")
    add("conv2d_backward_weight", {"x": np.ones(six_channels, np.float32), "weight_shape": (4, 2, 3, 3),
                                   "groups": 3},
        ValueError, r"groups=3 must divide the output channels", "groups-outputs")
    add("pointwise_conv2d_forward", {"x": np.ones(six_channels, np.float32),
                                     "weight": np.ones((4, 2, 1, 1), np.float32), "bias": None, "groups": 3},
        ValueError, r"groups=3 must divide the output channels", "groups-outputs")

    # depthwise: the input has 3 channels, the weight (4, 1, 3, 3) is not a multiple of them
    depthwise_weight = r"depthwise weight must have shape \(C\*multiplier, 1, kH, kW\)"
    three_channels = (2, 3, 7, 6)
    add("depthwise_conv2d_forward", {"x": np.ones(three_channels, np.float32)}, ValueError,
        depthwise_weight + r" with C=3 from x shape", "x-channels")
    add("depthwise_conv2d_backward_weight", {"x": np.ones(three_channels, np.float32)}, ValueError,
        depthwise_weight + r" with C=3 from x shape", "x-channels")
    add("depthwise_conv2d_backward_input", {"input_shape": three_channels}, ValueError,
        depthwise_weight + r" with C=3 from input_shape shape", "input_shape-channels")
    # depthwise: weight.shape[1] != 1 (a grouped, not depthwise, weight)
    add("depthwise_conv2d_forward", {"weight": np.ones((4, 2, 3, 3), np.float32)}, ValueError,
        depthwise_weight + r".*got weight shape \(4, 2, 3, 3\)", "weight-shape1-not-1")
    add("depthwise_conv2d_backward_input", {"weight": np.ones((4, 2, 3, 3), np.float32)}, ValueError,
        depthwise_weight + r".*got weight shape \(4, 2, 3, 3\)", "weight-shape1-not-1")
    add("depthwise_conv2d_backward_weight", {"weight_shape": (4, 2, 3, 3)}, ValueError,
        depthwise_weight + r".*got weight shape \(4, 2, 3, 3\)", "weight_shape-shape1-not-1")

    # pointwise: the weight must be 1x1
    for name, argument in [("pointwise_conv2d_forward", "weight"), ("pointwise_conv2d_backward_input", "weight")]:
        for kernel in [(3, 3), (1, 3), (2, 1)]:
            add(name, {argument: np.ones((6, 4, *kernel), np.float32)}, ValueError,
                rf"pointwise weight must have shape \(C_out, C_in/groups, 1, 1\); got \(6, 4, {kernel[0]}, {kernel[1]}\)",
                f"weight-{kernel[0]}x{kernel[1]}")
    add("pointwise_conv2d_backward_weight", {"weight_shape": (6, 4, 3, 3)}, ValueError,
        r"pointwise weight must have shape \(C_out, C_in/groups, 1, 1\); got \(6, 4, 3, 3\)", "weight_shape-3x3")

    # grad_out with the wrong shape (its dtype and ndim are covered above)
    for name in BACKWARD_INPUTS + BACKWARD_WEIGHTS:
        good = valid_call(name)["grad_out"]
        for label, shape in [("width", good.shape[:3] + (5,)), ("channels", (2, good.shape[1] + 1, 7, 6)),
                             ("batch", (3,) + good.shape[1:])]:
            add(name, {"grad_out": np.ones(shape, np.float32)}, ValueError,
                rf"grad_out must have the forward output's shape \(2, {good.shape[1]}, 7, 6\); got",
                f"grad_out-{label}")

    # input_shape / weight_shape: four positive ints
    for name, argument in [(n, "input_shape") for n in BACKWARD_INPUTS] + [(n, "weight_shape") for n in BACKWARD_WEIGHTS]:
        good = valid_call(name)[argument]
        add(name, {argument: good[:3]}, TypeError, rf"{argument} must be a tuple of 4 ints", f"{argument}-length3")
        add(name, {argument: good + (1,)}, TypeError, rf"{argument} must be a tuple of 4 ints", f"{argument}-length5")
        add(name, {argument: 5}, TypeError, rf"{argument} must be a tuple of 4 ints", f"{argument}-int")
        add(name, {argument: good[:2] + (float(good[2]), good[3])}, TypeError, rf"{argument} must be a tuple of 4 ints",
            f"{argument}-float-entry")
        add(name, {argument: good[:2] + (0, good[3])}, ValueError, rf"{argument} must contain positive sizes",
            f"{argument}-zero")

    # bias
    for name in FORWARDS:
        C_out = WEIGHT_SHAPES[family(name)][0]
        add(name, {"bias": np.ones(C_out + 1, np.float32)}, ValueError,
            rf"bias must have shape \({C_out},\) \(one per output channel\); got \({C_out + 1},\)", "bias-length")
        add(name, {"bias": np.ones((C_out, 1), np.float32)}, ValueError, r"bias must be 1-D", "bias-column")
    return cases


CASES = build_cases()


@pytest.mark.parametrize("name, changes, error, match", CASES)
def test_bad_argument_raises_exact_error_naming_it(name, changes, error, match):
    with pytest.raises(error, match=match) as info:
        call(name, **changes)
    assert type(info.value) is error, f"raised {type(info.value).__module__}.{type(info.value).__name__}"
    assert not isinstance(info.value, numba.core.errors.NumbaError)


def test_every_public_function_has_error_cases():
    named = {param.values[0] for param in CASES}
    assert named == set(FUNCTIONS)


@pytest.mark.nojit
@pytest.mark.parametrize("name, changes, error, match", [
    ("conv2d_forward", {"stride": "2"}, TypeError, r"stride must be an int or a pair of ints"),
    ("depthwise_conv2d_backward_weight", {"weight_shape": (4, 2, 3, 3)}, ValueError, r"depthwise weight"),
    ("pointwise_conv2d_backward_input", {"grad_out": np.ones((2, 6, 7, 5), np.float32)}, ValueError,
     r"grad_out must have the forward output's shape"),
], ids=["conv2d-stride-str", "depthwise-weight_shape", "pointwise-grad_out-shape"])
def test_errors_are_raised_in_python_before_any_kernel_runs(name, changes, error, match):
    """The same checks with NUMBA_DISABLE_JIT=1: validation never depends on compiled code."""
    with pytest.raises(error, match=match) as info:
        call(name, **changes)
    assert type(info.value) is error


# ----------------------------------------------------------------------------------------------------
# Remembered geometries: checked once per plain-int arguments, never remembered when they fail
# ----------------------------------------------------------------------------------------------------
GEOMETRY_ARGUMENTS = (X_SHAPE, WEIGHT_SHAPES["conv2d"], 1, 1, 1, 2)


def test_remembered_geometry_is_the_checked_one():
    first = _validate.conv_geometry(*GEOMETRY_ARGUMENTS)
    assert _validate.conv_geometry(*GEOMETRY_ARGUMENTS) is first
    assert first == _validate._checked_conv_geometry(*GEOMETRY_ARGUMENTS, "x")
    assert first.output_shape == (2, 6, 7, 6)


@pytest.mark.parametrize("stride", [True, 1.0], ids=["bool", "float"])
def test_look_alikes_of_remembered_ints_are_still_refused(stride):
    """``True`` and ``1.0`` hash and compare like the remembered ``1``: they must not find its geometry."""
    _validate.conv_geometry(*GEOMETRY_ARGUMENTS)
    x_shape, weight_shape, _, padding, dilation, groups = GEOMETRY_ARGUMENTS
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        _validate.conv_geometry(x_shape, weight_shape, stride, padding, dilation, groups)


def test_numpy_ints_and_lists_are_checked_and_give_the_same_geometry():
    x_shape, weight_shape, _, padding, dilation, groups = GEOMETRY_ARGUMENTS
    expected = _validate.conv_geometry(*GEOMETRY_ARGUMENTS)
    assert _validate.conv_geometry(x_shape, weight_shape, np.int64(1), padding, dilation, groups) == expected
    assert _validate.conv_geometry(x_shape, weight_shape, [1, 1], padding, dilation, groups) == expected


def test_failing_geometry_raises_every_time():
    x_shape, weight_shape, stride, padding, dilation, _ = GEOMETRY_ARGUMENTS
    for _ in range(2):
        with pytest.raises(ValueError, match="groups=3 must divide"):
            _validate.conv_geometry(x_shape, weight_shape, stride, padding, dilation, 3)
    assert (x_shape, weight_shape, stride, padding, dilation, 3, "x") not in _validate._GEOMETRIES


def test_remembered_geometries_are_bounded(monkeypatch):
    monkeypatch.setattr(_validate, "_GEOMETRIES", {})
    monkeypatch.setattr(_validate, "MAX_REMEMBERED_GEOMETRIES", 4)
    for width in range(6, 16):
        geometry = _validate.conv_geometry((2, 4, 7, width), WEIGHT_SHAPES["conv2d"], 1, 1, 1, 2)
        assert geometry.output_shape == (2, 6, 7, width)
        assert len(_validate._GEOMETRIES) <= 4


@pytest.mark.parametrize("shape", [(2, 4, 7, 6), [2, 4, 7, 6], (np.int64(2), 4, 7, np.int32(6))],
                         ids=["tuple", "list", "numpy-ints"])
def test_check_shape_returns_a_tuple_of_python_ints(shape):
    checked = _validate.check_shape(shape, "input_shape")
    assert checked == (2, 4, 7, 6) and type(checked) is tuple
    assert all(type(size) is int for size in checked)


@pytest.mark.parametrize("shape, error, match", [
    ((2, 4, 7, True), TypeError, "input_shape must be a tuple of 4 ints"),
    ((2, 4, 7, 6.0), TypeError, "input_shape must be a tuple of 4 ints"),
    ((2, 4, 7), TypeError, "input_shape must be a tuple of 4 ints"),
    (("2", "4", "7", "6"), TypeError, "input_shape must be a tuple of 4 ints"),
    ((2, 4, 0, 6), ValueError, "input_shape must contain positive sizes"),
    ((2, 4, 7, 2**31), ValueError, "input_shape must be at most"),
], ids=["bool", "float", "three", "strings", "zero", "huge"])
def test_check_shape_refuses(shape, error, match):
    with pytest.raises(error, match=match) as info:
        _validate.check_shape(shape, "input_shape")
    assert type(info.value) is error
