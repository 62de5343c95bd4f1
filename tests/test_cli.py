"""The ``tinycnn`` command line: help, one-line errors with exit code 2, and a tiny kernel benchmark."""
import json
import subprocess
import sys

import pytest

from tinycnn import bench, cli


def run_tinycnn(*arguments, timeout=180):
    """Run ``python -m tinycnn ARGUMENTS`` in a fresh process; return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "tinycnn", *arguments],
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_usage_error(result):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error:" in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------ help
def test_module_help_lists_bench_and_exits_0():
    result = run_tinycnn("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: tinycnn" in result.stdout
    assert "bench" in result.stdout


@pytest.mark.parametrize("command", [["bench"], ["bench", "kernels"]], ids=" ".join)
def test_every_command_has_help_that_exits_0(command):
    result = run_tinycnn(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: tinycnn {' '.join(command)}" in result.stdout


def test_bench_kernels_help_documents_its_options():
    result = run_tinycnn("bench", "kernels", "--help")
    for option in ("--repeat", "--batch", "--only", "--json", "--scale", "--no-torch"):
        assert option in result.stdout


# ------------------------------------------------------------------------------------------- errors
def test_unknown_subcommand_exits_2_with_one_line_message():
    line = assert_one_line_usage_error(run_tinycnn("no-such-command"))
    assert "no-such-command" in line


def test_missing_subcommand_exits_2_with_one_line_message():
    assert_one_line_usage_error(run_tinycnn())


@pytest.mark.parametrize("arguments", [
    ["bench", "kernels", "--no-such-option"],
    ["bench", "kernels", "--repeat", "0"],
    ["bench", "kernels", "--batch", "many"],
    ["bench", "kernels", "--scale", "-1"],
    ["bench", "no-such-target"],
], ids=" ".join)
def test_bad_bench_arguments_exit_2_with_one_line_message(arguments):
    assert_one_line_usage_error(run_tinycnn(*arguments))


def test_unknown_workload_name_exits_2_and_lists_the_workloads(capsys):
    # ValueError from the handler becomes a one-line message, in-process too (no subprocess needed).
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "kernels", "--only", "no-such-workload"])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1
    assert "no-such-workload" in stderr and "depthwise-3x3-s1-c144" in stderr


def test_json_path_in_missing_directory_exits_2_before_benchmarking(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "kernels", "--json", str(tmp_path / "missing" / "out.json")])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err
    assert captured.out == ""   # failed fast: nothing was timed


# ------------------------------------------------------------------------------- benchmark pieces
def test_workload_table_matches_the_issue_shapes():
    by_name = {workload.name: workload for workload in bench.WORKLOADS}
    assert len(by_name) == len(bench.WORKLOADS) == 15
    assert by_name["depthwise-3x3-s1-c96-8x8"].input_shape == (64, 96, 8, 8)
    assert by_name["depthwise-5x5-s1-c240"].weight_shape == (240, 1, 5, 5)
    assert by_name["depthwise-3x3-s2-c144"].input_shape == (8, 144, 56, 56)
    assert by_name["depthwise-3x3-s2-c144"].options == {"stride": 2, "padding": 1}
    assert by_name["standard-3x3-s2-stem"].weight_shape == (32, 3, 3, 3)
    assert by_name["transposed-4x4-s2"].weight_shape == (64, 32, 4, 4)
    targets = {workload.kind: workload.target for workload in bench.WORKLOADS}
    assert targets == {"depthwise": 1.0, "pointwise": 1.5, "conv2d": 2.0, "conv_transpose2d": 2.0,
                       "max_pool2d": 2.0}


def test_select_workloads_filters_by_substring_and_resizes():
    chosen = bench.select_workloads(only=["pointwise"], batch=2, scale=0.5)
    assert [w.name for w in chosen] == ["pointwise-144to24", "pointwise-24to144"]
    assert chosen[0].input_shape == (2, 144, 28, 28)
    assert bench.select_workloads(only=["maxpool"], scale=0.01)[0].input_shape == (8, 64, 4, 4)  # floor 4


def _fake_report(ratio, torch_version="2.x"):
    row = {"direction": "total", "ours_ms": 1.0 * ratio, "torch_ms": 1.0, "ratio": ratio}
    workload = {"name": "depthwise-3x3-s1-c144", "description": "depthwise: ...", "target_ratio": 1.0,
                "directions": [row], "meets_target": ratio <= 1.0, "max_relative_difference": 0.0}
    settings = {"repeat": 3, "threads": 2, "torch_version": torch_version, "torch_requested": True}
    return {"settings": settings, "workloads": [workload]}


@pytest.mark.parametrize("ratio, verdict", [(0.5, "pass"), (1.5, "MISS")])
def test_table_marks_total_against_target(ratio, verdict):
    table = bench.format_table(_fake_report(ratio))
    total_line = next(line for line in table.splitlines() if "fwd+bwd total" in line)
    assert total_line.split()[-2:] == ["<=1.0x", verdict]
    assert f"{ratio:.2f}x" in total_line


# ------------------------------------------------------------------------------- a tiny real run
def test_time_interleaved_takes_turns_of_block_runs_each_after_one_untimed_call(monkeypatch):
    """One warm-up call each, then turns of ``block`` timed runs, each turn after one untimed call, the
    side that goes first changing every round; a last, shorter round gives exactly ``repeat`` times."""
    calls = []
    clock = iter(range(1000))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock) / 1000.0)   # each timed run: 1 ms
    times = bench.time_interleaved([lambda: calls.append("f"), lambda: calls.append("g")], repeat=7, block=5)
    assert "".join(calls) == "fg" + "f" * 6 + "g" * 6 + "g" * 3 + "f" * 3
    assert [len(function_times) for function_times in times] == [7, 7]
    assert all(value == pytest.approx(1.0) for function_times in times for value in function_times)


def test_tiny_depthwise_benchmark_prints_table_and_writes_json(tmp_path):
    json_path = tmp_path / "bench.json"
    result = run_tinycnn("bench", "kernels", "--batch", "1", "--repeat", "1", "--only", "c144", "--only", "c384",
                         "--scale", "0.1", "--json", str(json_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "workload / direction" in result.stdout and "ours ms" in result.stdout
    forward_lines = [line for line in result.stdout.splitlines() if line.strip().startswith("forward")]
    assert len(forward_lines) == 3                         # the three depthwise workloads
    float(forward_lines[0].split()[1])                     # a time in ms
    report = json.loads(json_path.read_text())
    assert [w["name"] for w in report["workloads"]] == [
        "depthwise-3x3-s1-c144", "depthwise-3x3-s2-c144", "depthwise-3x3-s1-c384"]
    first = report["workloads"][0]
    assert first["input_shape"] == [1, 144, 6, 6]
    assert [row["direction"] for row in first["directions"]] == list(bench.DIRECTIONS)
    assert all(row["ours_ms"] > 0 for row in first["directions"])
    if report["settings"]["torch_version"] is not None:    # torch installed: compared, and results agree
        assert all(row["torch_ms"] > 0 for row in first["directions"])
        assert first["max_relative_difference"] < 1e-4


def test_benchmark_without_torch_prints_our_times_only(capsys):
    report = bench.main_kernels(only=["maxpool"], batch=1, scale=0.05, repeat=1, use_torch=False)
    output = capsys.readouterr().out
    assert "our times only" in output
    assert [row["direction"] for row in report["workloads"][0]["directions"]] == ["forward", "backward-input",
                                                                                  "total"]
    assert report["workloads"][0]["total_ratio"] is None


def test_benchmark_says_torch_was_not_found_when_it_cannot_be_imported(monkeypatch, capsys):
    monkeypatch.setattr(bench, "import_torch", lambda: None)   # as on a machine without torch
    report = bench.main_kernels(only=["maxpool"], batch=1, scale=0.05, repeat=1)
    output = capsys.readouterr().out
    assert "torch not found" in output
    assert report["settings"]["torch_version"] is None
    assert all(row["torch_ms"] is None for row in report["workloads"][0]["directions"])


def test_bench_kernels_list_keeps_every_name_apart_from_its_description(capsys):
    assert cli.main(["bench", "kernels", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [workload.name for workload in bench.WORKLOADS]
