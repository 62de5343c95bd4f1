"""tinycnn.io: atomic .npz weights and checkpoints, strict loading, PyTorch state-dict conversion."""
import os
import pathlib
import sys
import zipfile

import numpy as np
import pytest

from tinycnn import io, nn, optim

TOOLS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tools"


def _small_model(seed=0, dtype=np.float32):
    """Conv -> BN -> ReLU -> pool -> Linear: parameters, float buffers and an int64 buffer."""
    nn.init.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    return model.to(dtype)


def _tiny_linear_model(seed=0):
    nn.init.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))


def _files_in(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir())


# ---------------------------------------------------------------------------------------------- weights
@pytest.mark.nojit
def test_save_and_load_weights_round_trip_keeps_names_order_values_and_dtypes(tmp_path):
    model = _tiny_linear_model()
    state = model.state_dict()
    path = io.save_weights(tmp_path / "weights.npz", model)
    loaded = io.load_weights(path)
    assert list(loaded) == list(state)
    for key in state:
        assert loaded[key].dtype == state[key].dtype
        np.testing.assert_array_equal(loaded[key], state[key])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_round_trip_keeps_float_dtype_and_int64_num_batches_tracked(tmp_path, dtype):
    model = _small_model(dtype=dtype)
    model.train()
    model(np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(dtype))   # moves running stats
    loaded = io.load_weights(io.save_weights(tmp_path / "w.npz", model))
    assert loaded["1.running_mean"].dtype == dtype
    assert loaded["1.num_batches_tracked"].dtype == np.int64
    assert int(loaded["1.num_batches_tracked"]) == 1
    np.testing.assert_array_equal(loaded["1.running_var"], model.state_dict()["1.running_var"])


def test_saved_weights_are_a_plain_npz_that_numpy_reads(tmp_path):
    model = _small_model()
    path = io.save_weights(tmp_path / "w.npz", model)
    with np.load(path) as archive:
        assert list(archive.files) == list(model.state_dict())
        np.testing.assert_array_equal(archive["0.weight"], model.state_dict()["0.weight"])


def test_save_weights_writes_exactly_the_given_path_with_normal_permissions(tmp_path):
    path = io.save_weights(tmp_path / "weights.bin", _small_model())
    assert path == tmp_path / "weights.bin" and path.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask       # not mkstemp's private 0o600


def test_load_into_copies_weights_so_outputs_match(tmp_path):
    source, target = _small_model(seed=1), _small_model(seed=2)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    source.eval()
    target.eval()
    assert not np.allclose(source(x), target(x))
    result = io.load_into(target, io.save_weights(tmp_path / "w.npz", source))
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(target(x), source(x))


def test_load_into_accepts_a_state_dict(tmp_path):
    source, target = _tiny_linear_model(1), _tiny_linear_model(2)
    io.load_into(target, source.state_dict())
    np.testing.assert_array_equal(target.state_dict()["2.weight"], source.state_dict()["2.weight"])


# ---------------------------------------------------------------------------------------------- atomicity
def _fail_on_second_array(monkeypatch):
    """Make the .npy writer raise after it has written one array: a failure in the middle of the file."""
    original = np.lib.format.write_array
    calls = []

    def failing_write_array(stream, array, *args, **kwargs):
        calls.append(array.shape)
        if len(calls) == 2:
            stream.write(b"\x93NUMPY partial")             # some bytes of the second member, then...
            raise OSError("simulated failure while writing (disk full)")
        return original(stream, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write_array)
    return calls


def test_failed_save_leaves_the_previous_file_intact_and_no_temporary_file(tmp_path, monkeypatch):
    path = io.save_weights(tmp_path / "w.npz", _small_model(seed=1))
    before = path.read_bytes()
    calls = _fail_on_second_array(monkeypatch)
    with pytest.raises(OSError, match="simulated failure"):
        io.save_weights(path, _small_model(seed=2))
    assert len(calls) == 2                                     # it really failed mid-write
    assert path.read_bytes() == before
    assert _files_in(tmp_path) == ["w.npz"]
    monkeypatch.undo()
    np.testing.assert_array_equal(io.load_weights(path)["0.weight"], _small_model(seed=1).state_dict()["0.weight"])


def test_failed_first_save_creates_no_file(tmp_path, monkeypatch):
    _fail_on_second_array(monkeypatch)
    with pytest.raises(OSError):
        io.save_weights(tmp_path / "w.npz", _small_model())
    assert _files_in(tmp_path) == []


def test_failed_checkpoint_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = io.save_checkpoint(tmp_path / "ckpt.npz", {"model": _small_model(1).state_dict(), "epoch": 1})
    before = path.read_bytes()
    _fail_on_second_array(monkeypatch)
    with pytest.raises(OSError):
        io.save_checkpoint(path, {"model": _small_model(2).state_dict(), "epoch": 2})
    assert path.read_bytes() == before
    assert _files_in(tmp_path) == ["ckpt.npz"]


def test_write_text_atomic_replaces_the_file_whole_or_not_at_all(tmp_path, monkeypatch):
    path = io.write_text_atomic(tmp_path / "history.json", "[1]\n")
    assert path.read_text(encoding="utf-8") == "[1]\n"
    io.write_text_atomic(path, "[1, 2] \u2713\n")                        # replaced, UTF-8
    assert path.read_text(encoding="utf-8") == "[1, 2] \u2713\n"

    def crash_before_rename(source, target):
        raise OSError("simulated crash before the rename")
    monkeypatch.setattr(io.os, "replace", crash_before_rename)
    with pytest.raises(OSError, match="simulated crash"):
        io.write_text_atomic(path, "[1, 2, 3]\n")
    assert path.read_text(encoding="utf-8") == "[1, 2] \u2713\n"      # the previous content, whole
    assert _files_in(tmp_path) == ["history.json"]                      # no temporary file left


def test_save_into_a_missing_directory_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.save_weights(tmp_path / "no_such_dir" / "w.npz", _small_model())


# ---------------------------------------------------------------------------------------------- bad files
def test_load_weights_of_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        io.load_weights(tmp_path / "missing.npz")


def test_load_weights_of_a_truncated_file_raises_value_error(tmp_path):
    path = io.save_weights(tmp_path / "w.npz", _small_model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])                   # an interrupted copy
    with pytest.raises(ValueError, match="not a .npz archive"):
        io.load_weights(path)


def test_load_weights_of_a_file_with_a_corrupted_array_raises_value_error(tmp_path):
    path = io.save_weights(tmp_path / "w.npz", _small_model())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("0.weight.npy")
    position = member.header_offset + 30 + len(member.filename) + 200     # inside the array's bytes
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        io.load_weights(path)


@pytest.mark.parametrize("content", [b"not an archive at all", b""])
def test_load_weights_of_a_non_npz_file_raises_value_error(tmp_path, content):
    path = tmp_path / "w.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a .npz archive"):
        io.load_weights(path)


def test_load_weights_refuses_pickled_object_arrays(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, weight=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="corrupt or unsupported"):
        io.load_weights(path)


def test_load_weights_of_a_checkpoint_points_to_load_checkpoint(tmp_path):
    path = io.save_checkpoint(tmp_path / "c.npz", {"model": _small_model().state_dict()})
    with pytest.raises(ValueError, match="load_checkpoint"):
        io.load_weights(path)


def test_save_weights_rejects_non_array_entries_naming_the_key(tmp_path):
    with pytest.raises(TypeError, match="'flags'"):
        io.save_weights(tmp_path / "w.npz", {"weight": np.ones(3), "flags": np.array([True, False])})
    with pytest.raises(TypeError, match="model"):
        io.save_weights(tmp_path / "w.npz", [np.ones(3)])
    assert _files_in(tmp_path) == []


# ---------------------------------------------------------------------------------------------- strict loading
def test_strict_load_names_missing_and_unexpected_keys_and_changes_nothing():
    model = _small_model(seed=1)
    before = model.state_dict()
    state = _small_model(seed=2).state_dict()
    del state["5.bias"]
    state["5.extra"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(RuntimeError) as error:
        io.load_into(model, state)
    assert '"5.bias"' in str(error.value) and '"5.extra"' in str(error.value)
    assert "Missing" in str(error.value) and "Unexpected" in str(error.value)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], before["0.weight"])


def test_shape_mismatch_names_the_key_and_both_shapes():
    model = _small_model()
    state = model.state_dict()
    state["5.weight"] = np.zeros((7, 4), dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"5\.weight.*\(7, 4\).*\(3, 4\)"):
        io.load_into(model, state)


def test_non_strict_load_reports_missing_and_unexpected_keys():
    model = _small_model()
    state = model.state_dict()
    del state["0.bias"]
    state["head.weight"] = np.zeros(2, dtype=np.float32)
    result = io.load_into(model, state, strict=False)
    assert result.missing_keys == ["0.bias"] and result.unexpected_keys == ["head.weight"]


# ---------------------------------------------------------------------------------------------- conversion
def test_convert_accepts_arrays_keeps_float_dtypes_and_makes_integers_int64():
    converted = io.convert_torch_state_dict({
        "w32": np.ones((2, 2), np.float32), "w64": np.ones(2), "half": np.ones(2, np.float16),
        "bn.num_batches_tracked": np.array(5, dtype=np.int32), "listed": [[1.0, 2.0]]})
    assert list(converted) == ["w32", "w64", "half", "bn.num_batches_tracked", "listed"]
    assert converted["w32"].dtype == np.float32 and converted["w64"].dtype == np.float64
    assert converted["half"].dtype == np.float32
    assert converted["bn.num_batches_tracked"].dtype == np.int64 and converted["bn.num_batches_tracked"] == 5
    assert converted["listed"].shape == (1, 2)


@pytest.mark.parametrize("bad, match", [({"w": np.array(["a"])}, "'w'"), ({3: np.ones(2)}, "string"),
                                        ("not a mapping".encode(), "mapping")])
def test_convert_rejects_bad_entries_with_a_clear_type_error(bad, match):
    with pytest.raises(TypeError, match=match):
        io.convert_torch_state_dict(bad)


def test_convert_torch_tensors_gives_numpy_copies():
    torch = pytest.importorskip("torch")
    state = {"w": torch.ones(2, 3), "w64": torch.ones(2, dtype=torch.float64),
             "bf16": torch.ones(2, dtype=torch.bfloat16), "n": torch.tensor(7)}
    converted = io.convert_torch_state_dict(state)
    assert converted["w"].dtype == np.float32 and converted["w64"].dtype == np.float64
    assert converted["bf16"].dtype == np.float32
    assert converted["n"].dtype == np.int64 and converted["n"].shape == () and converted["n"] == 7
    state["w"].add_(1.0)                                       # later changes to the tensor...
    assert converted["w"][0, 0] == 1.0                         # ...do not reach the converted array


def test_convert_reads_a_pth_file_and_unwraps_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"layer.weight": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("plain.pth", "wrapped.pt"):
        converted = io.convert_torch_state_dict(tmp_path / name)
        np.testing.assert_array_equal(converted["layer.weight"], np.arange(6.0).reshape(2, 3))


class _NotAWeight:
    """A pickled custom object, which the restricted unpickler refuses to build."""


def test_convert_refuses_a_pth_file_with_arbitrary_objects(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": _NotAWeight()}, tmp_path / "unsafe.pth")
    with pytest.raises(ValueError, match="unsafe.pth.*refused to load test_io._NotAWeight"):
        io.convert_torch_state_dict(tmp_path / "unsafe.pth")


def test_torchvision_resnet18_weights_load_strict_and_give_torchvisions_logits(tmp_path):
    """The promise of the model zoo: torchvision .pth -> tinycnn, same logits (float64, 64 x 64 input)."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(TOOLS_DIR))
    from model_fixtures import import_torchvision_models, load_seeded_weights
    from tinycnn.models import resnet18
    from tinycnn.testing import seeded_input

    torch_model = load_seeded_weights(import_torchvision_models().resnet18(), seed=3)   # float64, random BN stats
    torch.save(torch_model.state_dict(), tmp_path / "resnet18.pth")
    model = resnet18().to(np.float64)
    result = io.load_into(model, tmp_path / "resnet18.pth", strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []

    x = seeded_input((2, 3, 64, 64), seed=3)
    torch_model.eval()
    model.eval()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    # float64 on both sides: only summation order differs (see tests/model_checks.py)
    assert np.max(np.abs(model(x) - expected)) <= 1e-8 * np.max(np.abs(expected))


# ---------------------------------------------------------------------------------------------- checkpoints
def _trained_model_and_optimizer(optimizer_class, steps, rng, **options):
    model = _tiny_linear_model(seed=0)
    optimizer = optimizer_class(model.parameters(), **options)
    for _ in range(steps):
        _train_step(model, optimizer, rng)
    return model, optimizer


def _train_step(model, optimizer, rng):
    """One step on a random batch drawn from ``rng`` (so the RNG state matters for resuming)."""
    x = rng.standard_normal((4, 5))
    optimizer.zero_grad()
    y = model(x.astype(np.float32))
    model.backward(2 * y / y.size)                     # gradient of mean(y**2)
    optimizer.step()


@pytest.mark.parametrize("optimizer_class, options", [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99))),
])
def test_checkpoint_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, optimizer_class, options):
    rng = np.random.default_rng(0)
    model, optimizer = _trained_model_and_optimizer(optimizer_class, 3, rng, **options)
    path = io.save_checkpoint(tmp_path / "ckpt.npz", {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
        "rng": rng.bit_generator.state})
    for _ in range(3):                                  # the uninterrupted run
        _train_step(model, optimizer, rng)

    checkpoint = io.load_checkpoint(path)
    resumed = _tiny_linear_model(seed=99)
    resumed_optimizer = optimizer_class(resumed.parameters(), **options)
    io.load_into(resumed, checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed_rng = np.random.default_rng()
    resumed_rng.bit_generator.state = checkpoint["rng"]
    assert checkpoint["epoch"] == 3
    for _ in range(3):
        _train_step(resumed, resumed_optimizer, resumed_rng)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)


@pytest.mark.nojit
def test_checkpoint_round_trip_keeps_structure_types_and_dtypes(tmp_path):
    checkpoint = {
        "optimizer": {"state": {0: {"step": 4, "exp_avg": np.arange(3.0, dtype=np.float32)}},
                      "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1]}]},
        "history": {"loss": [2.5, 1.25, float("nan")], "best": None, "done": False},
        "scalar": np.float32(1.5), "count": np.int64(7), "name": "resnet18",
        "__weird_key": {"__tuple__": "not a tuple"},
        "rng": np.random.default_rng(5).bit_generator.state,     # holds 128-bit integers
    }
    loaded = io.load_checkpoint(io.save_checkpoint(tmp_path / "c.npz", checkpoint))
    state = loaded["optimizer"]["state"]
    assert list(state) == [0]                                    # int key stays int
    assert state[0]["step"] == 4 and state[0]["exp_avg"].dtype == np.float32
    np.testing.assert_array_equal(state[0]["exp_avg"], np.arange(3.0))
    assert loaded["optimizer"]["param_groups"] == [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1]}]
    assert loaded["history"]["loss"][:2] == [2.5, 1.25] and np.isnan(loaded["history"]["loss"][2])
    assert loaded["history"]["best"] is None and loaded["history"]["done"] is False
    assert type(loaded["scalar"]) is np.float32 and loaded["scalar"] == 1.5
    assert type(loaded["count"]) is np.int64 and loaded["count"] == 7
    assert loaded["__weird_key"] == {"__tuple__": "not a tuple"}
    assert loaded["rng"] == checkpoint["rng"]


def test_checkpoint_members_are_named_by_their_place_in_the_dict(tmp_path):
    model, optimizer = _trained_model_and_optimizer(optim.Adam, 1, np.random.default_rng(0))
    path = io.save_checkpoint(tmp_path / "c.npz", {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    with np.load(path) as archive:
        assert archive.files[0] == "__checkpoint__"
        assert "model/0.weight" in archive.files and "optimizer/state/0/exp_avg" in archive.files
        np.testing.assert_array_equal(archive["model/0.weight"], model.state_dict()["0.weight"])


def test_save_checkpoint_rejects_unsupported_values_naming_where(tmp_path):
    with pytest.raises(TypeError, match="set at extra/tags"):
        io.save_checkpoint(tmp_path / "c.npz", {"extra": {"tags": {"a", "b"}}})
    with pytest.raises(TypeError, match="rng.bit_generator.state"):
        io.save_checkpoint(tmp_path / "c.npz", {"rng": np.random.default_rng(0)})
    with pytest.raises(TypeError, match="dict"):
        io.save_checkpoint(tmp_path / "c.npz", [1, 2])
    assert _files_in(tmp_path) == []


def test_load_checkpoint_of_a_weights_file_points_to_load_weights(tmp_path):
    path = io.save_weights(tmp_path / "w.npz", _small_model())
    with pytest.raises(ValueError, match="load_weights"):
        io.load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        io.load_checkpoint(tmp_path / "missing.npz")
