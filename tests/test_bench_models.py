"""``tinycnn bench models``: the report's table, its arguments and its errors (timings live in the benchmark)."""
import pytest

from tinycnn import bench_models, cli


def _fake_report(torch_ms):
    cell = {"ours_ms": 50.0, "torch_ms": torch_ms, "ratio": None if torch_ms is None else 50.0 / torch_ms}
    settings = {"batch": 64, "repeat": 3, "threads": 2, "cpu": "AMD EPYC", "vector_extensions": ["avx2", "fma"],
                "torch_version": None if torch_ms is None else "2.x", "torchvision": torch_ms is not None}
    frozen = dict(cell, ratio_to_eager_torch=None if torch_ms is None else 40.0 / torch_ms, ours_ms=40.0)
    return {"settings": settings, "models": [{"name": "mobilenet_v2_w0.5", "train": cell, "infer": cell,
                                              "frozen": frozen, "peak_rss_mb": 321.0}]}


def test_table_names_the_cpu_vector_extensions_threads_and_ratio():
    table = bench_models.format_model_table(_fake_report(100.0))
    assert "AMD EPYC (avx2, fma), 2 threads" in table
    train_line = next(line for line in table.splitlines() if line.split()[:2] == ["mobilenet_v2_w0.5", "train"])
    assert train_line.split()[2:5] == ["50.0", "100.0", "0.50x"]
    frozen_line = next(line for line in table.splitlines() if line.split()[:2] == ["mobilenet_v2_w0.5", "frozen"])
    assert frozen_line.split()[2:6] == ["40.0", "100.0", "0.50x", "0.40x"]     # against torch frozen, then eager
    assert table.splitlines()[-1].split()[-1] == "321"          # peak RSS on the model's last line


def test_table_without_torch_shows_our_times_only():
    table = bench_models.format_model_table(_fake_report(None))
    assert "our times only" in table
    assert "0.50x" not in table


def test_cpu_description_lists_known_vector_extensions_only():
    name, extensions = bench_models.cpu_description()
    assert isinstance(name, str)
    assert set(extensions) <= set(bench_models._VECTOR_FLAGS)


def test_unknown_model_name_is_a_value_error():
    with pytest.raises(ValueError, match="no model name contains 'resnet'"):
        bench_models.run_model_benchmark(only=["resnet"], use_torch=False)


def test_cli_bench_models_rejects_a_json_path_in_a_missing_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "models", "--json", str(tmp_path / "missing" / "out.json")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_bench_models_help_lists_the_models_and_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "models", "--help"])
    text = capsys.readouterr().out
    assert "V3-Small" in text and "--json" in text and "--no-torch" in text


def test_table_shows_the_fresh_process_memory_of_both_frameworks():
    report = _fake_report(100.0)
    report["models"][0]["memory"] = {"ours": {"before_steps_mb": 200.0, "peak_mb": 230.0, "step_mb": 30.0},
                                     "torch": {"before_steps_mb": 400.0, "peak_mb": 460.0, "step_mb": 60.0}}
    line = bench_models.format_model_table(report).splitlines()[-1]
    assert line.split() == ["mobilenet_v2_w0.5", "230", "460", "30", "60", "0.50x"]


def test_training_step_memory_measures_a_fresh_process():
    result = bench_models.training_step_memory("mobilenet_v2_w0.5", "ours", batch=2, steps=1)
    assert result["peak_mb"] > 50                                # numpy + numba + the model: tens of MiB at least
    if result["before_steps_mb"] is not None:                    # Linux: the peak mark was reset after warm-up
        assert result["step_mb"] == result["peak_mb"] - result["before_steps_mb"] >= 0


@pytest.mark.parametrize("label, framework, match", [("resnet", "ours", "unknown model"),
                                                     ("mobilenet_v2_w0.5", "tensorflow", "framework")])
def test_training_step_memory_rejects_unknown_models_and_frameworks(label, framework, match):
    with pytest.raises(ValueError, match=match):
        bench_models.training_step_memory(label, framework)


def test_measure_pairs_the_functions_and_leaves_missing_torch_functions_empty(monkeypatch):
    monkeypatch.setattr(bench_models, "time_interleaved", lambda functions, repeat: [[float(f())] for f in functions])
    ours, theirs, ours_frozen = (lambda: 8.0), (lambda: 16.0), (lambda: 6.0)
    infer, frozen = bench_models._measure([ours, theirs, ours_frozen, None], repeat=1)
    assert infer == {"ours_ms": 8.0, "torch_ms": 16.0, "ratio": 0.5}
    assert frozen == {"ours_ms": 6.0, "torch_ms": None, "ratio": None}


def test_inference_calls_give_our_frozen_model_the_eager_bits():
    from tinycnn.models import get_model
    ours = get_model("mobilenet_v3_small", num_classes=10)
    forward, _, frozen_forward, _ = bench_models._inference_calls(ours, None, None, seed=0)
    assert (frozen_forward() == forward()).all()
