"""tinycnn.io.read_torch_file / convert_torch_state_dict: PyTorch files read without PyTorch, safely."""
import pickle
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from tinycnn import io, nn
from torch_file_writers import Storage, Tensor, tensor, write_legacy, write_zip

WRITERS = {"zip": write_zip, "legacy": write_legacy}


@pytest.fixture
def no_torch(monkeypatch):
    """Make ``import torch`` fail, to prove the reader never needs it."""
    monkeypatch.setitem(sys.modules, "torch", None)


# ------------------------------------------------------------------------------ hand-built files, no torch
@pytest.mark.parametrize("layout", WRITERS)
def test_hand_built_state_dict_reads_without_torch_in_order_with_dtypes(tmp_path, layout, no_torch):
    weight = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    state = OrderedDict([("conv.weight", tensor(weight)), ("conv.bias", tensor(np.array([0.5, -1.5])[:2])),
                         ("bn.num_batches_tracked", tensor(np.array(7, dtype=np.int64))),
                         ("half", tensor(np.array([1.0, 2.5], dtype=np.float16)))])
    path = WRITERS[layout](tmp_path / "weights.pth", state)
    result = io.read_torch_file(path)
    assert list(result) == list(state)
    np.testing.assert_array_equal(result["conv.weight"], weight)
    assert result["conv.weight"].dtype == np.float32
    assert result["conv.bias"].dtype == np.float64 and list(result["conv.bias"]) == [0.5, -1.5]
    assert result["bn.num_batches_tracked"].shape == () and result["bn.num_batches_tracked"] == 7
    assert result["half"].dtype == np.float16 and list(result["half"]) == [1.0, 2.5]


@pytest.mark.parametrize("layout", WRITERS)
def test_views_with_offsets_and_strides_share_one_storage(tmp_path, layout, no_torch):
    base = np.arange(12, dtype=np.float64)                     # a 3 x 4 matrix, row-major
    storage = Storage(None, base)
    state = {"whole": Tensor(storage, (3, 4)),
             "transposed": Tensor(storage, (4, 3), stride=(1, 4)),          # base.reshape(3, 4).T
             "block": Tensor(storage, (2, 2), stride=(4, 1), offset=5),     # rows 1-2, columns 1-2
             "every_other": Tensor(storage, (6,), stride=(2,), offset=0),
             "empty": Tensor(storage, (0, 4), stride=(4, 1), offset=0)}
    result = io.read_torch_file(WRITERS[layout](tmp_path / "views.pth", state))
    matrix = base.reshape(3, 4)
    np.testing.assert_array_equal(result["whole"], matrix)
    np.testing.assert_array_equal(result["transposed"], matrix.T)
    np.testing.assert_array_equal(result["block"], matrix[1:3, 1:3])
    np.testing.assert_array_equal(result["every_other"], base[::2])
    assert result["empty"].shape == (0, 4)
    result["whole"][0, 0] = 99.0                               # each array is its own copy
    assert result["transposed"][0, 0] == 0.0


def test_big_endian_zip_file_reads_as_native_numbers(tmp_path):
    values = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    result = io.read_torch_file(write_zip(tmp_path / "be.pth", {"w": tensor(values)}, byteorder="big"))
    np.testing.assert_array_equal(result["w"], values)
    assert result["w"].dtype.isnative


@pytest.mark.parametrize("layout", WRITERS)
def test_bfloat16_becomes_the_exact_float32(tmp_path, layout):
    values = np.array([1.0, -3.25, 2.0 ** -20, 65280.0], dtype=np.float32)     # exact in bfloat16
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    state = {"bf16": Tensor(Storage(None, bits, bfloat16=True), (4,))}
    result = io.read_torch_file(WRITERS[layout](tmp_path / "bf16.pth", state))
    assert result["bf16"].dtype == np.float32
    np.testing.assert_array_equal(result["bf16"], values)


@pytest.mark.parametrize("layout", WRITERS)
def test_convert_unwraps_checkpoints_and_data_parallel_prefix_and_loads_strict(tmp_path, layout, no_torch):
    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    state = model.state_dict()
    wrapped = {"epoch": 3, "model": {"state_dict": OrderedDict(
        (f"module.{name}", tensor(value)) for name, value in state.items())}, "optimizer": {"lr": 0.1}}
    path = WRITERS[layout](tmp_path / "checkpoint.pt", wrapped)
    converted = io.convert_torch_state_dict(path)
    assert list(converted) == list(state)
    twin = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    io.load_into(twin, path, strict=True)
    for name, value in twin.state_dict().items():
        np.testing.assert_array_equal(value, state[name])


def test_convert_keeps_a_module_prefix_that_only_some_keys_have():
    state = {"module.weight": np.ones(2), "bias": np.zeros(2)}
    assert list(io.convert_torch_state_dict(state)) == ["module.weight", "bias"]


def test_convert_of_a_file_holding_a_tensor_not_a_dict_says_so(tmp_path):
    path = write_zip(tmp_path / "tensor.pt", tensor(np.ones(3, dtype=np.float32)))
    np.testing.assert_array_equal(io.read_torch_file(path), np.ones(3))
    with pytest.raises(ValueError, match="tensor.pt holds a ndarray, not a state dict"):
        io.convert_torch_state_dict(path)


# ------------------------------------------------------------------------------ safety
class _WritesAMarker:
    """Unpickling this calls ``exec`` to create a file: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def test_the_malicious_payload_really_writes_its_marker_with_plain_pickle(tmp_path):
    """Checks the test's payload: unrestricted pickle.loads runs it (so the refusal below means something)."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_WritesAMarker(marker), protocol=2))
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("layout", WRITERS)
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, layout, no_torch):
    marker = tmp_path / "marker"
    payload = pickle.dumps({"weight": _WritesAMarker(marker)}, protocol=2)
    if layout == "zip":
        path = write_zip(tmp_path / "evil.pth", {}, data_pkl=payload)
    else:
        path = write_legacy(tmp_path / "evil.pth", {}, object_pickle=payload)
    with pytest.raises(ValueError, match=r"evil.pth: refused to load (__builtin__|builtins)\.exec"):
        io.read_torch_file(path)
    with pytest.raises(ValueError, match="refused"):
        io.load_into(nn.Linear(2, 2), path)
    assert not marker.exists()


def test_malicious_pickle_in_the_legacy_header_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil_header.pth"
    path.write_bytes(pickle.dumps(_WritesAMarker(marker), protocol=2))
    with pytest.raises(ValueError, match=r"refused to load (__builtin__|builtins)\.exec"):
        io.read_torch_file(path)
    assert not marker.exists()


class _HarmlessObject:
    """A plain custom object, as in a file made by ``torch.save(model)`` instead of its state dict."""


def test_a_pickled_custom_object_is_refused_naming_its_class(tmp_path):
    payload = pickle.dumps({"model": _HarmlessObject()}, protocol=2)
    path = write_zip(tmp_path / "object.pth", {}, data_pkl=payload)
    with pytest.raises(ValueError, match=r"object.pth: refused to load \S*_HarmlessObject"):
        io.read_torch_file(path)


def test_the_pickle_cannot_change_the_readers_own_objects(tmp_path):
    """BUILD on an allowed name (here torch.FloatStorage) must not rewrite it for later files."""
    payload = (b"\x80\x02ctorch\nFloatStorage\n}X\x0c\x00\x00\x00element_codeX\x01\x00\x00\x00Osb.")   # GLOBAL, {"element_code": "O"}, BUILD
    path = write_zip(tmp_path / "build.pth", {}, data_pkl=payload)
    with pytest.raises(ValueError, match="refused to set attributes"):
        io.read_torch_file(path)
    good = write_zip(tmp_path / "good.pth", {"w": tensor(np.ones(2, dtype=np.float32))})
    assert io.read_torch_file(good)["w"].dtype == np.float32


@pytest.mark.parametrize("size, stride, offset", [((4,), (1,), 10), ((3, 4), (4, 1), 1), ((2,), (20,), 0)])
def test_a_view_reaching_past_its_storage_is_refused_not_read(tmp_path, size, stride, offset):
    state = {"w": Tensor(Storage(None, np.zeros(12, dtype=np.float32)), size, stride, offset)}
    path = write_zip(tmp_path / "outside.pth", state)
    with pytest.raises(ValueError, match="outside.pth.*reaches element .* which has only 12"):
        io.read_torch_file(path)


def test_a_persistent_id_that_is_not_a_storage_is_refused(tmp_path):
    path = write_zip(tmp_path / "module.pth", {}, data_pkl=b"\x80\x02(X\x06\x00\x00\x00moduleK\x01tQ.")
    with pytest.raises(ValueError, match="refused persistent object 'module'.*state_dict"):
        io.read_torch_file(path)


# ------------------------------------------------------------------------------ broken and foreign files
def _truncations(data):
    return [data[:cut] for cut in (0, 1, len(data) // 3, len(data) // 2, len(data) - 9, len(data) - 1)]


@pytest.mark.parametrize("layout", WRITERS)
def test_truncated_files_raise_a_value_error_naming_the_file(tmp_path, layout):
    state = {"w": tensor(np.arange(64, dtype=np.float32)), "b": tensor(np.ones(8))}
    data = WRITERS[layout](tmp_path / "whole.pth", state).read_bytes()
    for i, cut in enumerate(_truncations(data)):
        path = tmp_path / f"cut{i}.pth"
        path.write_bytes(cut)
        with pytest.raises(ValueError, match=f"cut{i}.pth"):
            io.read_torch_file(path)


def test_corrupt_storage_size_in_a_zip_is_reported(tmp_path):
    path = write_zip(tmp_path / "good.pth", {"w": tensor(np.ones(4, dtype=np.float32))})
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["archive/data/0"] = members["archive/data/0"][:-4]             # one float short
    with zipfile.ZipFile(tmp_path / "short.pth", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ValueError, match="short.pth: storage archive/data/0 has 12 bytes.*need 16"):
        io.read_torch_file(tmp_path / "short.pth")


@pytest.mark.parametrize("content, match", [
    (b"", "not a readable PyTorch file"),
    (b"hello, I am a text file\n", "not a readable PyTorch file"),
    (pickle.dumps({"w": 1}, protocol=2), "wrong magic number"),
    (bytes(range(256)) * 4, "not a readable PyTorch file"),
])
def test_non_torch_files_raise_a_value_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"other.pth.*{match}|other.pth: {match}"):
        io.read_torch_file(path)


def test_an_npz_or_other_zip_is_not_taken_for_a_torch_file(tmp_path):
    np.savez(tmp_path / "weights.npz", w=np.ones(2))
    with pytest.raises(ValueError, match="weights.npz: a zip archive without exactly one <name>/data.pkl"):
        io.read_torch_file(tmp_path / "weights.npz")


def test_missing_file_and_directory_raise_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        io.read_torch_file(tmp_path / "nope.pth")
    with pytest.raises(IsADirectoryError):
        io.read_torch_file(tmp_path)


# ------------------------------------------------------------------------------ files written by PyTorch
TORCH_DTYPES = ["float32", "float64", "float16", "bfloat16", "int64"]


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_files_written_by_torch_read_equal_to_torch_load(tmp_path, zip_format, monkeypatch):
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    state = OrderedDict()
    for name in TORCH_DTYPES:
        dtype = getattr(torch, name)
        values = (base * 100).to(dtype) if name == "int64" else base.to(dtype)
        state[f"{name}.whole"] = values
        state[f"{name}.view"] = values[1:4, 2:5]               # storage offset 8, strides (6, 1)
        state[f"{name}.transposed"] = values.t()               # strides (1, 6)
        state[f"{name}.strided"] = values[::2, 1::3]
    state["param"] = torch.nn.Parameter(base[0].float())
    state["scalar"] = torch.tensor(3)
    path = tmp_path / "torch.pth"
    torch.save({"model": state, "epoch": 1}, path, _use_new_zipfile_serialization=zip_format)
    expected = torch.load(path, weights_only=True)["model"]
    monkeypatch.setitem(sys.modules, "torch", None)            # read it as a machine without torch would
    result = io.read_torch_file(path)["model"]
    assert list(result) == list(expected)
    for key, tensor_value in expected.items():
        reference = (tensor_value.detach().float() if tensor_value.dtype == torch.bfloat16
                     else tensor_value.detach()).numpy()
        assert result[key].dtype == reference.dtype, key
        np.testing.assert_array_equal(result[key], reference, err_msg=key)


def test_data_parallel_file_written_by_torch_loads_strict(tmp_path):
    torch = pytest.importorskip("torch")
    torch_model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    torch.save({"state_dict": torch.nn.DataParallel(torch_model).state_dict()}, tmp_path / "dp.pth")
    ours = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    io.load_into(ours, tmp_path / "dp.pth", strict=True)
    np.testing.assert_array_equal(ours.state_dict()["0.weight"], torch_model[0].weight.detach().numpy())
