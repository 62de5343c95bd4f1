"""``tools/bench_frozen_steps.py``: each frozen step timed against PyTorch's ``conv2d`` with the batch norm folded.

What is checked (a small MobileNet V2 on 32 x 32 images, one timed run, so it stays quick):

* the forward hooks that record the steps' inputs leave the model's output as it was, and every frozen
  step is recorded once, in the order the forward calls it;
* PyTorch's folded step computes what ours does (float32 agreement relative to the largest output: the
  folding itself, ``w * scale``, rounds differently from our epilogue, so not bit for bit);
* the rows, totals, printed table and JSON file say what the docstring promises.
"""
import json
import pathlib
import sys

import numpy as np
import pytest

TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture
def tool():
    sys.path.insert(0, str(TOOLS_DIR))
    try:
        import bench_frozen_steps
        yield bench_frozen_steps
    finally:
        sys.path.remove(str(TOOLS_DIR))


def test_recording_the_steps_inputs_leaves_the_output_alone(tool, rng):
    from tinycnn import models
    from tinycnn.nn import FrozenConvNormActivation, freeze

    frozen = freeze(models.get_model("mobilenet_v2", num_classes=10, width_mult=0.25))
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    expected = frozen(x)
    recorded = tool.recorded_steps(frozen, x)
    steps = [module for module in frozen.module.modules() if isinstance(module, FrozenConvNormActivation)]
    assert [step for step, _ in recorded] == steps and len(steps) == 52
    assert recorded[0][1].shape == (1, 3, 32, 32)                       # the stem's input is the image
    assert all(step_input.shape[1] == step._modules["0"].in_channels for step, step_input in recorded)
    assert all(not step._forward_hooks for step in steps)              # the hooks are removed again
    np.testing.assert_array_equal(frozen(x), expected)


def test_rows_compare_each_step_with_pytorchs_folded_convolution(tool, tmp_path, capsys):
    pytest.importorskip("torch")
    rows, totals = tool.run("mobilenet_v2", width_mult=0.25, size=32, repeat=1)
    assert len(rows) == 52 and [row["step"] for row in rows] == list(range(52))
    assert {row["kind"] for row in rows} == {"conv", "depthwise", "pointwise"}
    assert rows[0]["kind"] == "conv" and rows[0]["stride"] == 2 and rows[0]["input"] == [1, 3, 32, 32]
    for row in rows:
        assert row["ours_ms"] > 0 and row["torch_ms"] > 0
        assert row["ratio"] == pytest.approx(row["ours_ms"] / row["torch_ms"])
        assert row["difference"] < 1e-4                                 # float32, relative to the largest output
    assert totals["ours_ms"] == pytest.approx(sum(row["ours_ms"] for row in rows))

    path = tmp_path / "steps.json"
    assert tool.main(["--width-mult", "0.25", "--size", "32", "--repeat", "1", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "F.conv2d with the batch norm folded in" in printed and "threads" in printed
    assert printed.count("\n") == 52 + 3                               # header, column names, rows, totals
    saved = json.loads(path.read_text())
    assert len(saved["rows"]) == 52 and saved["header"] in printed


@pytest.mark.parametrize("arguments, message", [(["--repeat", "0"], "--repeat must be at least 1"),
                                                 (["--model", "mobilenet_v9"], "is not a tinycnn model"),
                                                 (["--model", "squeezenet1_1", "--size", "64"], "no convolution")])
def test_bad_arguments_exit_with_code_2(tool, capsys, arguments, message):
    if arguments[1] == "squeezenet1_1":
        pytest.importorskip("torch")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
