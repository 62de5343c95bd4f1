"""``tinycnn quantize`` and ``tinycnn prune``: help, one-line errors (exit 2), and a tiny run that is
quantised, pruned, evaluated and fine-tuned from its pruned weights (the architecture travels with them)."""
import json

import pytest

from test_cli_train import TINY, assert_one_line_error, run_in_process, run_tinycnn
from tinycnn import run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantize_prune") / "run"
    code = __import__("tinycnn.cli", fromlist=["main"]).main(["train", *TINY, "--no-plots", "--out", str(out)])
    assert code == 0
    return out


@pytest.mark.parametrize("command, options", [
    ("quantize", ["RUN", "--bits", "--calibration", "--method", "--percentile", "--json"]),
    ("prune", ["RUN", "--amount", "--criterion", "--threshold", "--tied", "--out", "--json"]),
])
def test_help_lists_the_options(command, options):
    result = run_tinycnn(command, "--help")
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option in result.stdout, option


@pytest.mark.parametrize("arguments, expected", [
    (["quantize", "--bits", "1"], "--bits"),
    (["quantize", "--calibration", "0"], "--calibration"),
    (["quantize", "--percentile", "30"], "--percentile"),
    (["prune", "--amount", "1"], "--amount"),
    (["prune", "--criterion", "l2"], "--criterion"),
    (["prune", "--threshold", "-1"], "--threshold"),
    (["prune", "--tied", "all"], "--tied"),
])
def test_bad_arguments_give_one_line_and_exit_code_2(arguments, expected, capsys):
    code, _, err = run_in_process(arguments, capsys)
    assert expected in assert_one_line_error(code, err)


def test_a_missing_run_is_one_line(tmp_path, capsys):
    for command in ("quantize", "prune"):
        code, _, err = run_in_process([command, str(tmp_path / "nothing.npz")], capsys)
        assert "nothing.npz" in assert_one_line_error(code, err)


def test_quantize_prints_accuracy_and_size_per_precision(tiny_run, capsys):
    code, stdout, err = run_in_process(["quantize", str(tiny_run), "--bits", "8", "4", "--calibration", "20",
                                        "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    rows = {row["precision"]: row for row in result["results"]}
    assert list(rows) == ["float32", "float16", "int8", "int4"] and result["calibration_images"] == 20
    evaluation, _, _ = run.evaluate_run(tiny_run / "best.npz")
    assert rows["float32"]["accuracy"] == pytest.approx(evaluation.accuracy, abs=1e-12)
    sizes = [rows[name]["size_bytes"] for name in rows]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 2 * sizes[1]
    code, stdout, err = run_in_process(["quantize", str(tiny_run), "--calibration", "20", "--method", "percentile"],
                                       capsys)
    assert code == 0, err
    assert "int8" in stdout and "size (bytes)" in stdout


def test_prune_then_evaluate_then_fine_tune(tiny_run, tmp_path, capsys):
    pruned_path = tmp_path / "pruned.npz"
    code, stdout, err = run_in_process(["prune", str(tiny_run), "--amount", "0.5", "--criterion", "bn", "--out",
                                        str(pruned_path), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    before, after = result["results"]
    assert after["params"] < before["params"] and after["macs"] < before["macs"]
    assert after["seconds_per_image"] > 0

    model, _, _ = run.load_run(pruned_path)                   # the architecture is rebuilt from the file
    assert sum(p.size for p in model.parameters()) == after["params"]
    code, stdout, err = run_in_process(["evaluate", str(pruned_path), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == pytest.approx(after["accuracy"], abs=1e-12)

    finetuned = tmp_path / "finetuned"
    code, _, err = run_in_process(["train", *TINY, "--no-plots", "--weights", str(pruned_path), "--out",
                                   str(finetuned)], capsys)
    assert code == 0, err
    model, _, extra = run.load_run(finetuned / "best.npz")
    assert extra["architecture"]["channels"] == result["channels"]
    assert sum(p.size for p in model.parameters()) == after["params"]

    code, _, err = run_in_process(["train", *TINY[:2], "--width-mult", "0.5", *TINY[4:], "--no-plots", "--weights",
                                   str(pruned_path), "--out", str(tmp_path / "wrong")], capsys)
    assert "same --model and --width-mult" in assert_one_line_error(code, err)


def test_prune_threshold_is_one_global_value(tiny_run, tmp_path, capsys):
    code, stdout, err = run_in_process(["prune", str(tiny_run), "--criterion", "bn", "--threshold", "100",
                                        "--out", str(tmp_path / "slim.npz"), "--json"], capsys)
    assert code == 0, err
    assert set(json.loads(stdout)["channels"].values()) == {1}        # every |gamma| < 100: one channel stays each


def test_prune_tied_channels_then_evaluate(tiny_run, tmp_path, capsys):
    kept_path, tied_path = tmp_path / "kept.npz", tmp_path / "tied.npz"
    results = {}
    for tied, path in (("keep", kept_path), ("prune", tied_path)):
        code, stdout, err = run_in_process(["prune", str(tiny_run), "--amount", "0.5", "--tied", tied, "--out",
                                            str(path), "--json"], capsys)
        assert code == 0, err
        results[tied] = json.loads(stdout)
        assert results[tied]["tied"] == tied
    assert set(results["keep"]["channels"]) < set(results["prune"]["channels"])     # the stages' groups too
    assert results["prune"]["results"][1]["params"] < results["keep"]["results"][1]["params"]
    model, _, _ = run.load_run(tied_path)                     # the architecture, stage widths included
    assert sum(p.size for p in model.parameters()) == results["prune"]["results"][1]["params"]
    code, stdout, err = run_in_process(["evaluate", str(tied_path), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == pytest.approx(results["prune"]["results"][1]["accuracy"], abs=1e-12)


def test_quantize_a_plain_weights_file(tiny_run, tmp_path, capsys):
    from tinycnn import io

    model, _, _ = run.load_run(tiny_run)
    weights = tmp_path / "weights.npz"
    io.save_weights(weights, model)
    rebuild = ["--model", "mobilenet_v2", "--width-mult", "0.25", "--data", "shapes:60", "--image-size", "16"]
    code, stdout, err = run_in_process(["quantize", str(weights), *rebuild, "--calibration", "20", "--json"], capsys)
    assert code == 0, err
    rows = {row["precision"]: row for row in json.loads(stdout)["results"]}
    # the same data spec and seed give the run's validation images, normalised by the same training statistics
    evaluation, _, _ = run.evaluate_run(tiny_run / "best.npz")
    assert rows["float32"]["accuracy"] == pytest.approx(evaluation.accuracy, abs=1e-12)
    assert set(rows) == {"float32", "float16", "int8"}


def test_quantize_a_pruned_model_file_rebuilds_its_architecture(tiny_run, tmp_path, capsys):
    from tinycnn import prune

    model, _, extra = run.load_run(tiny_run)
    pruned = prune.prune_channels(model, 0.5, tied="prune")
    path = tmp_path / "slim.npz"
    prune.save_pruned(path, pruned, "mobilenet_v2", num_classes=len(extra["class_names"]), width_mult=0.25)
    code, stdout, err = run_in_process(["quantize", str(path), "--data", "shapes:60", "--image-size", "16",
                                        "--calibration", "20", "--json"], capsys)
    assert code == 0, err
    assert [row["precision"] for row in json.loads(stdout)["results"]] == ["float32", "float16", "int8"]


@pytest.mark.parametrize("options, expected", [
    (["--data", "shapes:60"], "--model NAME"),                                   # plain weights: which network?
    (["--model", "mobilenet_v2", "--width-mult", "0.25"], "--data SPEC"),
    (["--model", "mobilenet_v2", "--data", "shapes:60", "--image-size", "16"], "does not fit mobilenet_v2"),
    (["--model", "resnet18", "--data", "shapes:60", "--image-size", "16"], "does not fit resnet18"),
])
def test_quantize_weights_it_cannot_rebuild_is_one_line(tiny_run, tmp_path, capsys, options, expected):
    from tinycnn import io

    weights = tmp_path / "weights.npz"
    io.save_weights(weights, run.load_run(tiny_run)[0])
    code, _, err = run_in_process(["quantize", str(weights), *options, "--calibration", "20"], capsys)
    assert expected in assert_one_line_error(code, err)


def test_quantize_a_run_refuses_model_options(tiny_run, capsys):
    code, _, err = run_in_process(["quantize", str(tiny_run), "--model", "resnet18"], capsys)
    assert "--model is for a weights file" in assert_one_line_error(code, err)
