"""The exercise checker: every solution passes, every catalogued mistake gets its own hint, stubs and
wrong shapes and crashing functions get clear messages, and the references agree with the library."""
import numpy as np
import pytest

from kernels import reference
from tinycnn.exercises import CATALOGUE, check, get_exercise, list_exercises
from tinycnn.exercises.checker import compare

NAMES = list(CATALOGUE)
MISTAKES = [(name, index) for name, exercise in CATALOGUE.items() for index in range(len(exercise.mistakes))]
PUBLIC_NAMES = ["conv_output_size", "depthwise_forward", "depthwise_backward_input", "depthwise_backward_weight",
                "channel_shuffle", "make_divisible", "separable_cost", "receptive_field"]


def test_the_issue_names_are_exercises_with_statements():
    statements = list_exercises()
    for name in PUBLIC_NAMES:
        assert name in statements and statements[name]
    assert len(statements) >= 20
    assert set(list_exercises(topic="costs")) < set(statements)


@pytest.mark.parametrize("name", NAMES)
def test_solution_passes_on_fresh_cases(name):
    result = check(name, get_exercise(name).solution, verbose=False)      # seed=None: new cases every run
    assert result.passed, result.message
    assert result.score == 1.0 and len(result.cases) >= 5
    assert all(case.passed for case in result.cases)


@pytest.mark.parametrize("name", NAMES)
def test_every_exercise_catalogues_mistakes(name):
    assert len(get_exercise(name).mistakes) >= 2


@pytest.mark.parametrize("name, index", MISTAKES, ids=[f"{n}-{i}" for n, i in MISTAKES])
def test_each_mistake_fails_with_its_own_hint(name, index):
    mistake = get_exercise(name).mistakes[index]
    result = check(name, mistake.function, verbose=False, seed=index)
    assert not result.passed and result.score < 1.0
    assert mistake.hint in result.message, result.message


@pytest.mark.parametrize("name", NAMES)
def test_stub_fails_with_not_implemented(name):
    def stub(*args):
        raise NotImplementedError("write this function")
    result = check(name, stub, verbose=False)
    assert not result.passed and result.score == 0.0
    assert "not implemented" in result.message


def _wrong_shape(value):
    """The right answer with one extra axis (arrays), or as a 2-element array (numbers); first element of
    tuples and dicts."""
    if isinstance(value, dict):
        first = next(iter(value))
        return {**value, first: _wrong_shape(value[first])}
    if isinstance(value, tuple):
        return (_wrong_shape(value[0]),) + value[1:]
    if isinstance(value, np.ndarray):
        return value[None]
    return np.array([value, value])


@pytest.mark.parametrize("name", NAMES)
def test_wrong_shape_fails_with_a_shape_message(name):
    solution = get_exercise(name).solution
    result = check(name, lambda *args: _wrong_shape(solution(*args)), verbose=False, seed=0)
    assert not result.passed
    assert "shape" in result.message, result.message


def test_a_function_that_raises_gets_one_line_with_the_error_and_line():
    def student(size, kernel, stride=1, padding=0, dilation=1):
        return size // (stride - stride)
    result = check("conv_output_size", student, verbose=False)
    assert not result.passed
    assert "ZeroDivisionError" in result.message and "return size // (stride - stride)" in result.message
    assert "Traceback" not in result.message


def test_wrong_dtype_is_named():
    result = check("depthwise_forward",
                   lambda x, w, s=1, p=0: get_exercise("depthwise_forward").solution(x, w, s, p).astype(np.float16),
                   verbose=False)
    assert "dtype float16; expected dtype float64" in result.message


def test_float_instead_of_int_is_diagnosed_as_true_division():
    result = check("conv_output_size", lambda n, k, s=1, p=0, d=1: (n + 2 * p - d * (k - 1) - 1) / s + 1,
                   verbose=False)
    assert "true division" in result.message


def test_message_names_first_wrong_position_and_the_mistake(capsys):
    def flipped(x, weight, stride=1, padding=0):
        return reference.depthwise_conv2d_forward(x, weight[:, :, ::-1, ::-1], None, stride, padding)
    result = check("depthwise_forward", flipped)
    printed = capsys.readouterr().out
    assert printed.startswith("FAILED depthwise_forward: failed")
    assert "case 1 (x=array(1, 2, 4, 4) float64" in result.message
    assert "y[0, 0, 0, 0] = " in result.message and "flipped kernel" in result.message


def test_passing_prints_passed(capsys):
    check("receptive_field", get_exercise("receptive_field").solution)
    assert capsys.readouterr().out.startswith("PASSED receptive_field: passed all")


def test_student_writing_into_its_inputs_does_not_spoil_the_check():
    solution = get_exercise("hswish_forward").solution

    def in_place(x):
        y = solution(x)
        x[...] = 0            # vandalises its argument after computing the right answer
        return y
    assert check("hswish_forward", in_place, verbose=False).passed


def test_cases_are_fresh_each_call_but_reproducible_with_a_seed():
    exercise = get_exercise("depthwise_forward")
    first, second = exercise.make_cases(np.random.default_rng()), exercise.make_cases(np.random.default_rng())
    assert any(not np.array_equal(a["x"], b["x"]) for a, b in zip(first[4:], second[4:]))
    again = exercise.make_cases(np.random.default_rng(5))
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(exercise.make_cases(np.random.default_rng(5)), again))


def test_cases_cover_float32_float64_stride_padding_and_big_kernels():
    cases = get_exercise("depthwise_forward").make_cases(np.random.default_rng(0))
    assert {case["x"].dtype for case in cases} == {np.dtype(np.float32), np.dtype(np.float64)}
    assert any(case["x"].shape[2:] == (1, 1) for case in cases)
    assert any(case["weight"].shape[2] > case["x"].shape[2] for case in cases)
    assert any(case["stride"] > 1 and case["padding"] > 0 for case in cases)


def test_unknown_exercise_and_non_callable_raise_clearly():
    with pytest.raises(ValueError, match="unknown exercise 'conv_size'.*conv_output_size"):
        check("conv_size", len)
    with pytest.raises(TypeError, match="student_fn must be a function"):
        check("conv_output_size", 3)


def test_compare_reports_the_first_wrong_position_type_and_keys():
    expected = np.zeros((1, 3, 1, 4))
    got = expected.copy()
    got[0, 2, 0, 3] = 1.5
    assert compare(expected, got, "y") == "y[0, 2, 0, 3] = 1.5, expected 0"
    assert compare(3, 3.0, "n") == "n is a float 3.0; expected a single int, 3"
    assert compare({"a": 1}, {"b": 1}) == "result has no key(s) ['a']; expected the keys ['a']"
    assert compare((1, 2), (1, 3), "pair") == "pair[1] = 3, expected 2"
    assert compare(np.float32(1.0) * np.ones(2, np.float32), np.ones(2, np.float32) * (1 + 5e-5), "y") is None
    assert compare(np.ones(2), np.ones(2) * (1 + 5e-5), "y") is not None      # float64 is held 1e-9 tight


# ------------------------------------------------------------------------ references vs the library
def test_receptive_field_matches_where_a_gradient_reaches():
    """One output pixel's gradient, pushed back through real convolutions, is non-zero on exactly its field."""
    layers = [(3, 2, 1), (3, 1, 2), (5, 2, 1), (1, 1, 1)]
    size = 64
    shapes, x_shape = [], (1, 1, size, size)
    for kernel, stride, dilation in layers:
        shapes.append(x_shape)
        out = (x_shape[2] - dilation * (kernel - 1) - 1) // stride + 1
        x_shape = (1, 1, out, out)
    grad = np.zeros(x_shape)
    grad[0, 0, x_shape[2] // 2, x_shape[3] // 2] = 1.0
    for (kernel, stride, dilation), shape in zip(reversed(layers), reversed(shapes)):
        grad = reference.conv2d_backward_input(grad, np.ones((1, 1, kernel, kernel)), shape, stride, 0, dilation)
    rows = np.flatnonzero(grad[0, 0].any(axis=1))
    assert rows[-1] - rows[0] + 1 == get_exercise("receptive_field").solution(layers) == 1 + 2 + 8 + 8 + 0


@pytest.mark.parametrize("width_mult, resolution, published_macs", [
    (1.0, 224, 569), (0.75, 224, 325), (0.5, 224, 149), (0.25, 224, 41), (1.0, 192, 418), (1.0, 160, 290),
    (1.0, 128, 186)])
def test_mobilenet_v1_cost_solution_gives_the_papers_table(width_mult, resolution, published_macs):
    macs, params = get_exercise("mobilenet_v1_cost").solution(width_mult, resolution)
    assert round(macs / 1e6) == pytest.approx(published_macs, abs=1)      # Table 6/7 of arXiv:1704.04861
    if (width_mult, resolution) == (1.0, 224):
        assert round(params / 1e6, 1) == 4.2


def test_separable_ratio_is_one_over_n_plus_one_over_k_squared():
    cost = get_exercise("separable_cost").solution(128, 256, 3, 56, 56)
    assert cost["ratio"] == pytest.approx(1 / 256 + 1 / 9, rel=1e-12)


def test_se_forward_solution_matches_the_layer_in_float32():
    from tinycnn import nn
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 3, 3)).astype(np.float32)
    layer = nn.SqueezeExcitation(8, 2)
    y = layer(x)
    w1, b1 = layer.fc1.weight.data[:, :, 0, 0], layer.fc1.bias.data
    w2, b2 = layer.fc2.weight.data[:, :, 0, 0], layer.fc2.bias.data
    np.testing.assert_allclose(get_exercise("se_forward").solution(x, w1, b1, w2, b2), y, rtol=1e-5, atol=1e-6)


def test_max_unpool_reference_against_the_library_unpooling_if_present():
    unpool = getattr(reference, "max_unpool2d_forward", None) or getattr(reference, "max_unpool2d", None)
    if unpool is None:
        pytest.skip("kernels.reference has no max unpooling yet (issue 13a)")
    for case in get_exercise("max_unpool").make_cases(np.random.default_rng(0)):
        y, indices, output_shape = case.values()
        try:
            library = unpool(y, indices, output_shape[2:])
        except TypeError:
            library = unpool(y, indices, output_shape)
        np.testing.assert_array_equal(get_exercise("max_unpool").solution(y, indices, output_shape), library)


def test_quantize_round_trip_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=1000).astype(np.float32)
    scale, zero_point = 2 / 255, 0
    q = get_exercise("quantize_int8").solution(x, scale, zero_point)
    back = get_exercise("dequantize_int8").solution(q, scale, zero_point)
    assert q.dtype == np.int8 and back.dtype == np.float32
    assert np.max(np.abs(back - x)) <= scale / 2 * (1 + 1e-5)


def test_channels_to_prune_by_hand():
    assert get_exercise("channels_to_prune").solution(np.array([0.5, -0.1, 0.9, 0.05, -0.7]), 2).tolist() == [1, 3]


def test_readme_counts_the_exercises_and_quotes_real_hints():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Teaching with tinycnn", 1)[1].split("\n## ", 1)[0]
    assert f"{len(CATALOGUE)} functions to write" in section
    hints = " ".join(mistake.hint for exercise in CATALOGUE.values() for mistake in exercise.mistakes)
    assert "the output size is right but the window must move by the stride" in hints
    assert "a kernel of k taps with dilation d spans d(k-1)+1 pixels" in hints


def test_mobilenet_v1_table_given_to_students_is_the_models():
    from tinycnn.exercises.costs import MOBILENET_V1_BLOCKS
    from tinycnn.models import mobilenet_v1
    blocks = mobilenet_v1().features[1:]
    assert MOBILENET_V1_BLOCKS == [(block.out_channels, block.depthwise[0].stride[0]) for block in blocks]
