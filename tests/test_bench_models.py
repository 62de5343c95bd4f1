"""``tinycnn bench models``: the report's table, its arguments and its errors (timings live in the benchmark)."""
import pytest

from tinycnn import bench_models, cli


def _fake_report(torch_ms):
    cell = {"ours_ms": 50.0, "torch_ms": torch_ms, "ratio": None if torch_ms is None else 50.0 / torch_ms}
    settings = {"batch": 64, "repeat": 3, "threads": 2, "cpu": "AMD EPYC", "vector_extensions": ["avx2", "fma"],
                "torch_version": None if torch_ms is None else "2.x", "torchvision": torch_ms is not None}
    return {"settings": settings, "models": [{"name": "mobilenet_v2_w0.5", "train": cell, "infer": cell,
                                              "peak_rss_mb": 321.0}]}


def test_table_names_the_cpu_vector_extensions_threads_and_ratio():
    table = bench_models.format_model_table(_fake_report(100.0))
    assert "AMD EPYC (avx2, fma), 2 threads" in table
    train_line = next(line for line in table.splitlines() if line.split()[:2] == ["mobilenet_v2_w0.5", "train"])
    assert train_line.split()[2:5] == ["50.0", "100.0", "0.50x"]
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
