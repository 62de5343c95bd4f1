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


def test_max_unpool_solution_matches_the_unpooling_layer():
    from tinycnn import nn
    for case in get_exercise("max_unpool").make_cases(np.random.default_rng(0)):
        y, indices, output_shape = case.values()
        kernel = output_shape[2] // y.shape[2]                  # the cases pool with kernel = stride
        library = nn.MaxUnpool2d(kernel)(y, indices, output_size=output_shape)
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


# ------------------------------------------------- solutions vs the library on real models and layers
def _conv_rows(model, input_shape):
    """``[(profile row, Conv2d)]`` of ``model``'s convolutions, in the order they run."""
    from tinycnn import nn
    from tinycnn.profile import profile
    modules = dict(model.named_modules())
    return [(row, modules[row.name]) for row in profile(model, input_shape).rows
            if isinstance(modules.get(row.name), nn.Conv2d)]


def test_receptive_field_solution_matches_the_profiler_at_every_conv_of_mobilenet_v2():
    """MobileNet V2 is a chain of convolutions (its shortcuts are identities): the student's calculator on
    the (kernel, stride, dilation) list up to each conv gives the profiler's receptive field column there."""
    from tinycnn import models
    solution = get_exercise("receptive_field").solution
    rows = _conv_rows(models.mobilenet_v2(), (1, 3, 224, 224))
    assert len(rows) == 52
    layers = []
    for row, conv in rows:
        layers.append((conv.kernel_size[0], conv.stride[0], conv.dilation[0]))
        assert solution(layers) == row.receptive_field[0] == row.receptive_field[1], row.name
    assert rows[-1][0].receptive_field == (491, 491)      # the last 1x1 conv sees a 491-pixel window (padding included)


def test_receptive_field_solution_matches_the_library_with_dilation():
    from tinycnn import nn
    from tinycnn.receptive_field import input_field
    from tinycnn.profile import profile
    layers = [(3, 2, 1), (3, 1, 2), (5, 2, 3), (2, 1, 1)]
    model = nn.Sequential(*[nn.Conv2d(1, 1, k, s, padding=d * (k - 1), dilation=d) for k, s, d in layers])
    assert input_field((1, 1, 8, 8)).size == (1, 1)
    assert get_exercise("receptive_field").solution(layers) == profile(model, (1, 1, 8, 8)).receptive_field[0] \
        == 1 + 2 + 4 * 2 + 4 * 3 * 2 + 1 * 4


def test_memory_access_cost_solution_matches_the_profiler_on_every_1x1_conv_of_shufflenet_v2():
    from tinycnn import models
    solution = get_exercise("memory_access_cost").solution
    rows = [(row, conv) for row, conv in _conv_rows(models.shufflenet_v2_x1_0(), (1, 3, 224, 224))
            if conv.kernel_size == (1, 1)]
    assert len(rows) >= 30
    for row, conv in rows:
        _, c1, h, w = row.input_shape
        assert conv.bias is None and row.output_shape[2:] == (h, w)
        assert solution(h, w, c1, row.output_shape[1], conv.groups) == row.memory_access, row.name


def test_memory_access_cost_of_a_shufflenet_v1_grouped_1x1_conv_matches_the_profiler():
    from tinycnn import models
    solution = get_exercise("memory_access_cost").solution
    rows = [(row, conv) for row, conv in _conv_rows(models.shufflenet_v1(groups=3), (1, 3, 224, 224))
            if conv.kernel_size == (1, 1) and conv.groups == 3]
    assert rows
    for row, conv in rows:
        _, c1, h, w = row.input_shape
        assert conv.bias is None and row.output_shape[2:] == (h, w)
        assert solution(h, w, c1, row.output_shape[1], 3) == row.memory_access, row.name


def test_quantize_then_dequantize_is_the_librarys_fake_quantize_bit_for_bit():
    from tinycnn.quantize import choose_qparams, fake_quantize
    rng = np.random.default_rng(0)
    quantize, dequantize = get_exercise("quantize_int8").solution, get_exercise("dequantize_int8").solution
    ties = (np.arange(-300, 300) + 0.5).astype(np.float32) * np.float32(0.25)      # exact halves: half to even
    for x, scale, zero_point in [(ties, 0.25, 0), (ties, 0.25, 17),
                                 (rng.standard_normal(5000).astype(np.float32) * 3, 0.02, -5),
                                 (rng.uniform(-1, 6, 5000).astype(np.float32), 6 / 255, -128)]:
        np.testing.assert_array_equal(dequantize(quantize(x, scale, zero_point), scale, zero_point),
                                      fake_quantize(x, scale, zero_point, -128, 127))
    scale, zero_point, quant_min, _ = choose_qparams(-1.0, 3.0, bits=8)
    assert quantize(np.zeros(1, np.float32), float(scale), int(zero_point) - 128 - quant_min)[0] == \
        int(zero_point) - 128 - quant_min                       # zero is exact: it quantises to the zero point


def test_channels_to_prune_solution_is_what_the_bn_criterion_of_prune_removes_from_mobilenet_v1():
    """In every channel group of MobileNet V1 the score is the product of the group's |gamma|s (the pointwise
    conv's BN and the next depthwise conv's BN); pruning half keeps the complement of the student's choice."""
    from tinycnn import models
    from tinycnn.prune import channel_groups, prune_channels
    rng = np.random.default_rng(0)
    model = models.mobilenet_v1(width_mult=0.25, num_classes=10)
    for module in model.modules():
        if type(module).__name__ == "BatchNorm2d":
            module.weight.data[...] = rng.standard_normal(module.weight.data.shape)
    pruned = prune_channels(model, amount=0.5, criterion="bn")
    groups = channel_groups(model)
    assert len(groups) == 14                       # the stem and the 13 pointwise convolutions
    for group in groups:
        gamma = np.prod([bn.weight.data.astype(np.float64) for bn in group.batch_norms], axis=0)
        removed = get_exercise("channels_to_prune").solution(gamma, group.channels // 2)
        kept = pruned.pruned_indices[group.name]
        np.testing.assert_array_equal(np.sort(np.concatenate([removed, kept])), np.arange(group.channels))


def test_new_exercise_references_are_the_library_layers():
    """The up-sampling, activation and ShuffleNet exercises compare with tinycnn's own layers: their solutions
    agree with them on a case the test builds itself."""
    from tinycnn import nn
    from tinycnn.models import ShuffleV2Block
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5))
    for align_corners in (False, True):
        np.testing.assert_allclose(get_exercise("bilinear_upsample").solution(x, 9, 7, align_corners),
                                   nn.Upsample(size=(9, 7), mode="bilinear", align_corners=align_corners)(x),
                                   rtol=0, atol=1e-12)
    kinks = np.array([-1.0, 0.0, 3.0, 6.0, 7.0])
    for kind, layer in (("relu", nn.ReLU()), ("relu6", nn.ReLU6()), ("leaky_relu", nn.LeakyReLU(0.2))):
        np.testing.assert_array_equal(get_exercise("relu_family_forward").solution(kinks, kind, 0.2), layer(kinks))
        np.testing.assert_array_equal(get_exercise("relu_family_backward").solution(kinks, np.ones(5), kind, 0.2),
                                      layer.backward(np.ones(5)))
    unit = ShuffleV2Block(8, 8, stride=1).to(np.float64).eval()
    x = rng.standard_normal((2, 8, 3, 3))
    np.testing.assert_allclose(get_exercise("shufflenet_v2_unit").solution(x, unit.branch2), unit(x),
                               rtol=0, atol=1e-12)


def test_se_placement_solution_matches_every_se_block_of_the_profiled_se_resnets():
    """Block by block of SE-ResNet-50 (standard placement) and SE-ResNet-18 (pre), with their projection
    shortcuts and strides, the student's SE cost equals the profiler's SE rows; SE-ResNet-50's total is the
    2,530,992 parameters of the article's Eq. 5 with biases (tinycnn.models.resnet's docstring)."""
    from tinycnn import models
    from tinycnn.profile import profile
    solution = get_exercise("se_placement_cost").solution
    for build, position in ((models.se_resnet50, "standard"), (models.se_resnet18, "pre")):
        model = build(se_position=position)
        report = profile(model, (1, 3, 224, 224))
        rows = {row.name: row for row in report.rows}
        total = 0
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            for index, block in enumerate(getattr(model, stage)):
                name = f"{stage}.{index}"
                _, in_channels, height, width = rows[f"{name}.conv1"].input_shape
                cost = solution(in_channels, block.out_channels, block.stride, height, width, 16, position)
                se = report.totals_under(f"{name}.se")
                assert (cost["params"], cost["macs"]) == (se.params, se.macs), name
                assert cost["scale_multiplies"] == rows[f"{name}.se"].flops, name
                total += cost["params"]
        if position == "standard":
            assert total == 2_530_992


@pytest.mark.parametrize("groups", [1, 3, 8])
def test_shufflenet_v1_unit_solution_matches_every_unit_of_the_profiled_model(groups):
    """Unit by unit of ShuffleNet V1 1x (stride-2 concatenations, stage 2's ungrouped first 1x1), the student's
    MACs equal the profiler's; stage widths keep the whole model near the paper's 140 MFLOPs for every g."""
    from tinycnn import models
    from tinycnn.profile import profile
    solution = get_exercise("shufflenet_v1_unit_macs").solution
    model = models.shufflenet_v1(groups=groups)
    report = profile(model, (1, 3, 224, 224))
    rows = {row.name: row for row in report.rows}
    units = 0
    for stage in ("stage2", "stage3", "stage4"):
        for index, unit in enumerate(getattr(model, stage)):
            name = f"{stage}.{index}"
            _, in_channels, height, width = rows[f"{name}.branch.reduce.0"].input_shape
            group_reduce = unit.branch.reduce[0].groups == groups
            assert solution(in_channels, unit.out_channels, groups, unit.stride, height, width, group_reduce) == \
                report.totals_under(name).macs, name
            units += 1
    assert units == 16
    assert 120e6 < report.macs < 160e6                    # Table 2 of arXiv:1707.01083: about 140 MFLOPs
