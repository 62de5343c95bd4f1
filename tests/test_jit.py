"""``kernels._jit.compiled_on_this_machine``: what ``tinycnn train`` asks before announcing the compile pause."""
import numpy as np

from kernels import _jit, depthwise


def test_compiled_on_this_machine_follows_the_numba_cache_index(tmp_path, monkeypatch):
    kernel = depthwise._forward_channels_last_kernel
    depthwise.depthwise_conv2d_forward(np.ones((1, 2, 4, 4)), np.ones((2, 1, 3, 3)), padding=1)   # compiles
    assert _jit.compiled_on_this_machine(kernel) is True                         # cache=True wrote the index
    monkeypatch.setattr(kernel._cache._cache_file, "_index_path", str(tmp_path / "missing.nbi"))
    assert _jit.compiled_on_this_machine(kernel) is False


def test_plain_python_functions_count_as_not_compiled():
    assert _jit.compiled_on_this_machine(lambda: None) is False
