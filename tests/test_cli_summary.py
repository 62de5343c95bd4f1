"""``tinycnn summary MODEL``: the profiler's table, CSV and JSON from the command line, for every model."""
import csv
import io
import json
import subprocess
import sys

import pytest

from tinycnn import cli, nn
from tinycnn.models import get_model, list_models
from tinycnn.profile import profile


def run_summary(capsys, *arguments):
    """Run ``tinycnn summary ARGUMENTS`` in this process; return (exit code, stdout, stderr)."""
    try:
        code = cli.main(["summary", *arguments])
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinycnn summary: error:"), err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("name", list_models())
def test_summary_table_works_for_every_model(name, capsys):
    code, out, err = run_summary(capsys, name)
    assert code == 0 and err == ""
    with nn.init.skip_init():                           # the counts need the shapes only
        expected = profile(get_model(name), (1, 3, 224, 224))
    assert out.startswith(f"{name}, input 1x3x224x224")
    assert f"{expected.params:,}" in out and f"{expected.macs:,}" in out and f"{expected.flops:,}" in out
    assert "by kind" in out and "warning" not in out


def test_summary_draws_no_weights_unless_it_times_them(capsys, monkeypatch):
    """The counts need only the shapes (VGG-16 would spend seconds drawing 138M numbers); ``--time``
    runs the layers, so there the weights are drawn as usual."""
    draws = []
    monkeypatch.setattr(nn.init, "_fill_in_chunks", lambda *args: draws.append(args[0].shape))
    code, out, _ = run_summary(capsys, "mobilenet_v1", "--width-mult", "0.25", "--resolution", "32")
    assert code == 0 and "mobilenet_v1" in out and draws == []
    code, out, _ = run_summary(capsys, "mobilenet_v1", "--width-mult", "0.25", "--resolution", "32", "--time",
                               "--repeat", "1")
    assert code == 0 and len(draws) > 0


def test_summary_json_has_the_profile_numbers(capsys):
    code, out, _ = run_summary(capsys, "mobilenet_v1", "--width-mult", "0.5", "--resolution", "160",
                               "--format", "json")
    assert code == 0
    data = json.loads(out)
    expected = profile(get_model("mobilenet_v1", width_mult=0.5), (1, 3, 160, 160))
    assert (data["model"], data["width_mult"]) == ("mobilenet_v1", 0.5)
    assert data["input_shape"] == [1, 3, 160, 160]
    assert data["totals"]["macs"] == expected.macs == 76_524_800
    assert data["totals"]["params"] == expected.params
    assert len(data["rows"]) == len(expected.rows)


def test_summary_csv_has_a_header_and_one_line_per_layer(capsys):
    code, out, _ = run_summary(capsys, "squeezenet1_1", "--format", "csv")
    assert code == 0
    records = list(csv.DictReader(io.StringIO(out)))
    expected = profile(get_model("squeezenet1_1"), (1, 3, 224, 224))
    assert len(records) == len(expected.rows)
    assert records[0]["name"] == "features.0" and records[0]["output_shape"] == "1x64x111x111"
    assert sum(int(r["macs"]) for r in records) == expected.macs


def test_summary_options_reach_the_profile(capsys):
    code, out, _ = run_summary(capsys, "mobilenet_v3_small", "--format", "json", "--batch", "2",
                               "--num-classes", "10", "--no-bn", "--no-activations", "--no-bias")
    data = json.loads(out)
    expected = profile(get_model("mobilenet_v3_small", num_classes=10), (2, 3, 224, 224), bn=False,
                       activations=False, bias=False)
    assert code == 0 and data["totals"]["flops"] == expected.flops
    assert data["options"] == {"mode": "shapes", "bias": False, "bn": False, "activations": False}


def test_summary_formulas_column(capsys):
    code, out, _ = run_summary(capsys, "resnet18", "--resolution", "64", "--formulas")
    assert code == 0 and "k*k*C_in/g*C_out*H_out*W_out" in out and "formula" in out.splitlines()[2]


def test_width_mult_is_ghostnets_width(capsys):
    code, out, _ = run_summary(capsys, "ghostnet", "--width-mult", "0.5", "--format", "json")
    assert code == 0
    assert json.loads(out)["totals"]["params"] == profile(get_model("ghostnet", width_mult=0.5), (1, 3, 224, 224)).params


def test_unknown_model_exits_2_with_one_line_listing_the_models(capsys):
    code, _, err = run_summary(capsys, "mobilenet_v4")
    assert_one_line_error(code, err, "mobilenet_v4", "mobilenet_v2", "squeezenet1_1")


def test_width_mult_on_a_model_without_one_exits_2(capsys):
    code, _, err = run_summary(capsys, "shufflenet_v2_x1_0", "--width-mult", "0.5")
    assert_one_line_error(code, err, "shufflenet_v2_x1_0 has no width multiplier", "mobilenet_v1")


def test_too_small_resolution_exits_2(capsys):
    code, _, err = run_summary(capsys, "squeezenet1_0", "--resolution", "20")
    assert_one_line_error(code, err, "at least 21 x 21")


@pytest.mark.parametrize("arguments", [
    ["mobilenet_v1", "--resolution", "0"],
    ["mobilenet_v1", "--width-mult", "-1"],
    ["mobilenet_v1", "--format", "xml"],
    ["mobilenet_v1", "--no-such-option"],
    [],
], ids=lambda a: " ".join(a) or "no model")
def test_bad_arguments_exit_2_with_one_line(arguments, capsys):
    code, _, err = run_summary(capsys, *arguments)
    assert_one_line_error(code, err)


def test_summary_help_from_a_fresh_process():
    result = subprocess.run([sys.executable, "-m", "tinycnn", "summary", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: tinycnn summary" in result.stdout
    for option in ("--width-mult", "--resolution", "--format", "--no-bn"):
        assert option in result.stdout
    top = subprocess.run([sys.executable, "-m", "tinycnn", "--help"], capture_output=True, text=True, timeout=120)
    assert "summary" in top.stdout


def test_summary_time_shows_macs_memory_access_and_milliseconds_side_by_side(capsys):
    code, out, _ = run_summary(capsys, "mobilenet_v2", "--width-mult", "0.25", "--resolution", "32",
                               "--time", "--backward", "--repeat", "1")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("layer"))
    columns = header.split()
    for name in ("MACs", "mem", "access", "RF", "fwd", "bwd"):
        assert name in columns
    assert columns.index("MACs") < columns.index("mem") < columns.index("fwd")
    assert "measured time   forward" in out


def test_summary_shows_memory_access_and_receptive_field_without_time(capsys):
    code, out, _ = run_summary(capsys, "mobilenet_v1")
    assert code == 0 and "mem access" in out and "RF stride" in out and "fwd ms" not in out
    assert "receptive field" in out


def test_summary_backward_needs_time(capsys):
    code, _, err = run_summary(capsys, "mobilenet_v1", "--backward")
    assert_one_line_error(code, err, "--backward needs --time")
