"""``nn.no_grad()`` and the fused convolution -> batch norm -> ReLU/ReLU6 step it enables."""
import threading

import numpy as np
import pytest

import tinycnn.nn as nn
from tinycnn.models import get_model
from tinycnn.nn import fusion


def _randomise_statistics(model, rng):
    """Give every batch norm non-trivial running statistics and affine parameters (fresh ones are 0/1)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            C = module.num_features
            module.running_mean = rng.standard_normal(C).astype(module.running_mean.dtype)
            module.running_var = rng.uniform(0.5, 2.0, C).astype(module.running_var.dtype)
            module.weight.data[...] = rng.uniform(0.5, 1.5, C)
            module.bias.data[...] = rng.standard_normal(C)
    return model


def _model(name, rng, dtype=np.float32, **arguments):
    nn.init.manual_seed(0)
    model = _randomise_statistics(get_model(name, num_classes=10, **arguments), rng)
    return model.to(dtype).eval()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, arguments", [("mobilenet_v2", {"width_mult": 0.5}), ("mobilenet_v3_small", {}),
                                             ("resnet18", {"width_mult": 0.25}), ("mobilenext", {"width_mult": 0.5})])
def test_no_grad_gives_the_same_bits_as_the_layers_one_by_one(name, arguments, dtype, rng):
    model = _model(name, rng, dtype, **arguments)
    x = rng.standard_normal((2, 3, 40, 40)).astype(dtype)
    expected = model(x)
    with nn.no_grad():
        fused = model(x)
    np.testing.assert_array_equal(fused, expected)


def test_no_grad_fuses_every_conv_norm_run_of_mobilenet_v2(rng, monkeypatch):
    model = _model("mobilenet_v2", rng, width_mult=0.5)
    calls, norm_forwards = [], []
    real_fused, real_norm_forward = fusion.conv_norm_clip, nn.BatchNorm2d.forward
    monkeypatch.setattr(fusion, "conv_norm_clip", lambda *args: calls.append(args[2]) or real_fused(*args))
    monkeypatch.setattr(nn.BatchNorm2d, "forward", lambda self, x: norm_forwards.append(self) or real_norm_forward(self, x))
    with nn.no_grad():
        model(rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(calls) == len(norms) == 52 and norm_forwards == []
    assert sum(isinstance(a, nn.ReLU6) for a in calls) == 35 and calls.count(None) == 17   # 17 projections


@pytest.mark.parametrize("activation", [nn.ReLU, nn.ReLU6, nn.LeakyReLU, None])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_a_conv_norm_activation_run_with_and_without_bias(activation, conv_bias, rng):
    layers = [nn.Conv2d(3, 4, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(4)]
    layers += [activation()] if activation is not None else []
    model = _randomise_statistics(nn.Sequential(*layers), rng).eval()
    x = 4 * rng.standard_normal((2, 3, 9, 9)).astype(np.float32)         # large enough to reach ReLU6's 6
    expected = model(x)
    with nn.no_grad():
        np.testing.assert_array_equal(model(x), expected)
    assert fusion._fusable_run(list(model), 0) == (3 if activation in (nn.ReLU, nn.ReLU6) else 2)


def test_training_mode_batch_norm_is_not_fused_and_still_updates_its_statistics(rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
    twin = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
    twin.load_state_dict(model.state_dict())
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    assert fusion._fusable_run(list(model), 0) == 0
    with nn.no_grad():
        out = model(x)
    np.testing.assert_array_equal(out, twin(x))
    np.testing.assert_array_equal(model[1].running_mean, twin[1].running_mean)


def test_a_forward_hook_keeps_its_layer_out_of_fusion_and_sees_its_output(rng):
    model = _randomise_statistics(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU6()), rng).eval()
    seen = []
    model[1].register_forward_hook(lambda module, inputs, output: seen.append(output.copy()))
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    with nn.no_grad():
        out = model(x)
    assert len(seen) == 1 and fusion._fusable_run(list(model), 0) == 0
    np.testing.assert_array_equal(out, np.clip(seen[0], 0, 6))


@pytest.mark.parametrize("layer_index", [0, 1, 2, 3])
def test_backward_after_a_no_grad_forward_raises_naming_no_grad(layer_index, rng):
    model = _randomise_statistics(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU6(), nn.Conv2d(4, 2, 1)),
                                  rng).eval()
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    model(x)                                                     # an earlier forward left caches behind
    with nn.no_grad():
        out = model(x)
    layer = model[layer_index]
    grad = np.ones((1, 2, 4, 4) if layer_index == 3 else (1, 4, 4, 4), dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"no_grad\(\)"):
        layer.backward(grad)
    with pytest.raises(RuntimeError, match=r"no_grad\(\)"):
        model.backward(np.ones_like(out))


def test_a_forward_outside_no_grad_makes_backward_work_again(rng):
    def build():
        nn.init.manual_seed(3)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Linear(6, 2)).eval()
    model, fresh = build(), build()
    x = rng.standard_normal((1, 3, 4, 6)).astype(np.float32)
    with nn.no_grad():
        model(x)
    grad = np.ones((1, 4, 4, 2), dtype=np.float32)
    model(x)
    model.backward(grad)
    fresh(x)
    fresh.backward(grad)
    for (name, p), (_, q) in zip(model.named_parameters(), fresh.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_no_grad_nests_restores_after_errors_and_is_per_thread():
    assert nn.is_grad_enabled()
    seen_in_thread = []
    with nn.no_grad():
        with nn.no_grad():
            assert not nn.is_grad_enabled()
        assert not nn.is_grad_enabled()
        thread = threading.Thread(target=lambda: seen_in_thread.append(nn.is_grad_enabled()))
        thread.start()
        thread.join()
    assert nn.is_grad_enabled() and seen_in_thread == [True]
    with pytest.raises(ValueError):
        with nn.no_grad():
            raise ValueError("inside")
    assert nn.is_grad_enabled()


def test_fused_run_checks_its_input_like_the_convolution(rng):
    model = _randomise_statistics(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), rng).eval()
    with nn.no_grad(), pytest.raises(ValueError, match="Conv2d"):
        model(np.ones((1, 5, 4, 4), dtype=np.float32))
