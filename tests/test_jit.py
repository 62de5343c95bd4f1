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


def _blas_threads():
    return max(info["num_threads"] for info in _jit._BLAS_THREADS.info() if info["user_api"] == "blas")


def test_one_blas_thread_limits_blas_nests_and_gives_the_users_setting_back():
    with _jit._BLAS_THREADS.limit(limits=2, user_api="blas"):                  # the "user's" setting
        assert _blas_threads() == 2
        with _jit.one_blas_thread():
            assert _blas_threads() == 1
            with _jit.one_blas_thread():                                       # nested: no second limit
                assert _blas_threads() == 1
                assert _jit._BLAS_LIMIT.depth == 2
            assert _blas_threads() == 1 and _jit._BLAS_LIMIT.depth == 1
        assert _blas_threads() == 2 and _jit._BLAS_LIMIT.depth == 0


def test_one_blas_thread_restores_the_setting_after_an_error():
    with _jit._BLAS_THREADS.limit(limits=2, user_api="blas"):
        try:
            with _jit.one_blas_thread():
                raise RuntimeError("inside")
        except RuntimeError:
            pass
        assert _blas_threads() == 2 and _jit._BLAS_LIMIT.depth == 0


def test_linear_runs_its_matrix_products_on_one_blas_thread(monkeypatch):
    from tinycnn import nn
    seen = []
    real = _jit.one_blas_thread

    def spy():
        seen.append(True)
        return real()
    monkeypatch.setattr("tinycnn.nn.linear.one_blas_thread", spy)
    layer = nn.Linear(4, 3)
    layer.backward(layer(np.ones((2, 4), dtype=np.float32)))
    assert len(seen) == 2                                                      # forward and backward
