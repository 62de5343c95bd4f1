"""Issue 12 items 8 and 10: sizes checked before allocating; the CPU named beside every timing."""
import pytest

from tinycnn import _system, models
from tinycnn.data.shapes import make_shapes


def test_cpu_description_names_the_model_and_the_widest_vector_extension(monkeypatch):
    cpuinfo = "model name\t: Example CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
    monkeypatch.setattr(_system, "_cpuinfo", lambda: cpuinfo)
    assert _system.vector_extensions() == ["AVX2", "AVX", "SSE4.2"]
    assert _system.cpu_description().startswith("Example CPU 9000 (AVX2, no AVX-512), ")
    monkeypatch.setattr(_system, "_cpuinfo", lambda: cpuinfo.replace("avx2", "avx2 avx512f"))
    assert _system.cpu_description().startswith("Example CPU 9000 (AVX-512), ")


def test_a_data_set_or_model_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(_system, "available_memory", lambda: 10**9)       # pretend 1 GB is available
    with pytest.raises(ValueError, match=r"shapes data set \(100000000 images .* needs 1228.8 GB of memory, "
                                         r"but only 1.0 GB is available"):
        make_shapes(100_000_000)
    with pytest.raises(ValueError, match=r"mobilenet_v2 with width_mult=100 .* needs .* GB of memory"):
        models.get_model("mobilenet_v2", width_mult=100)


def test_a_misspelled_model_name_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown model 'mobilenet_v22'; did you mean 'mobilenet_v2'"):
        models.get_model("mobilenet_v22")


def test_a_failed_atomic_write_names_the_file_and_leaves_the_old_one(tmp_path):
    """The disk-full probe: ENOSPC during the write used to give an error naming no file."""
    import errno

    from tinycnn import io

    target = tmp_path / "last.npz"
    target.write_bytes(b"old")

    def disk_full(file):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=rf"cannot save {target}: No space left on device") as info:
        io._atomic_write(target, disk_full)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]


@pytest.mark.parametrize("tree", [{"__dict__": 5}, {"__array__": ["a"]}, {"__tuple__": 3}, None])
def test_a_hand_crafted_checkpoint_manifest_is_refused_naming_the_file(tmp_path, tree):
    import json

    import numpy as np

    from tinycnn import io

    manifest = {"format": io.CHECKPOINT_FORMAT, "version": io.CHECKPOINT_VERSION}
    if tree is not None:
        manifest["tree"] = tree
    path = tmp_path / "crafted.npz"
    np.savez(path, **{io.CHECKPOINT_KEY: np.array(json.dumps(manifest))})
    with pytest.raises(ValueError, match=rf"{path}: .*(malformed checkpoint manifest|no 'tree' entry)"):
        io.load_checkpoint(path)
