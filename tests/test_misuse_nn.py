"""Issue 12 probes on tinycnn.nn: the forward cache rule (items 5) and ``Module.to`` (item 4)."""
import numpy as np
import pytest

from tinycnn import nn


def _small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 2)).double()


def test_a_second_backward_after_one_forward_raises_naming_the_layer(rng):
    net = _small_net()
    x = rng.standard_normal((2, 3, 5, 5))
    g = rng.standard_normal((2, 2))
    net(x)
    net.backward(g)
    once = [p.grad.copy() for p in net.parameters()]
    with pytest.raises(RuntimeError, match=r"Linear\.backward\(\) called twice after one forward\(\)"):
        net.backward(g)
    for p, grad in zip(net.parameters(), once):         # nothing was added by the refused call
        np.testing.assert_array_equal(p.grad, grad)
    net(x)
    net.backward(g)                                      # a new forward allows a new backward
    np.testing.assert_allclose(net[4].weight.grad, 2 * once[-2], rtol=1e-12)


@pytest.mark.parametrize("edit", ["x *= 2", "x[:] = 0", "x += 1"])
def test_changing_the_input_in_place_between_forward_and_backward_is_detected(rng, edit):
    conv = nn.Conv2d(3, 4, 3).double()
    x = rng.standard_normal((2, 3, 6, 6))
    y = conv(x)
    exec(edit, {}, {"x": x})
    with pytest.raises(RuntimeError, match=r"Conv2d\.backward\(\): the input given to forward\(\) was changed"):
        conv.backward(np.ones_like(y))
    assert not conv.weight.grad.any()                   # no corrupted gradient was added


def test_an_unchanged_input_and_a_changed_copy_give_the_right_gradient(rng):
    conv = nn.Conv2d(3, 4, 3).double()
    x = rng.standard_normal((2, 3, 6, 6))
    y = conv(x.copy())
    x *= 2                                               # the caller edits its own array: the layer has a copy
    conv.backward(np.ones_like(y))
    expected = nn.Conv2d(3, 4, 3).double()
    expected.load_state_dict(conv.state_dict())
    expected(x / 2)
    expected.backward(np.ones_like(y))
    np.testing.assert_allclose(conv.weight.grad, expected.weight.grad, rtol=1e-12)


@pytest.mark.parametrize("dtype", [None, "int32", np.int64, "float16", "complex128", "banana", object])
def test_to_refuses_anything_but_float32_and_float64(dtype):
    net = _small_net()
    with pytest.raises(TypeError, match="to\\(dtype\\) supports float32 and float64"):
        net.to(dtype)
    assert all(p.dtype == np.float64 for p in net.parameters())     # nothing was converted


@pytest.mark.parametrize("dtype", [np.float32, "float32", np.dtype("float32"), "f4"])
def test_to_accepts_float32_by_type_name_or_dtype(dtype):
    net = _small_net().to(dtype)
    assert all(p.dtype == np.float32 for p in net.parameters())
