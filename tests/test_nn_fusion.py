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
                                             ("resnet18", {"width_mult": 0.25}), ("mobilenext", {"width_mult": 0.5}),
                                             ("ghostnet", {"width_mult": 0.5})])    # its SE layers renamed (timm)
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
    monkeypatch.setattr(nn.BatchNorm2d, "forward",
                        lambda self, x: norm_forwards.append(self) or real_norm_forward(self, x))
    with nn.no_grad():
        model(rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(calls) == len(norms) == 52 and norm_forwards == []
    assert sum(isinstance(a, nn.ReLU6) for a in calls) == 35 and calls.count(None) == 17   # 17 projections


@pytest.mark.parametrize("activation", [nn.ReLU, nn.ReLU6, nn.Hardswish, nn.LeakyReLU, None])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_a_conv_norm_activation_run_with_and_without_bias(activation, conv_bias, rng):
    layers = [nn.Conv2d(3, 4, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(4)]
    layers += [activation()] if activation is not None else []
    model = _randomise_statistics(nn.Sequential(*layers), rng).eval()
    x = 4 * rng.standard_normal((2, 3, 9, 9)).astype(np.float32)         # large enough to reach ReLU6's 6
    expected = model(x)
    with nn.no_grad():
        np.testing.assert_array_equal(model(x), expected)
    assert fusion._fusable_run(list(model), 0) == (3 if activation in (nn.ReLU, nn.ReLU6, nn.Hardswish) else 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("conv, x_shape", [
    (lambda: nn.Conv2d(8, 16, 1), (2, 8, 9, 9)),                   # pointwise: the blocked matrix products
    (lambda: nn.Conv2d(8, 16, 1), (1, 8, 1, 1)),                   # ... one matrix-vector product
    (lambda: nn.Conv2d(16, 16, 5, padding=2, groups=16), (1, 16, 12, 12)),   # depthwise, flat kernel
    (lambda: nn.Conv2d(16, 16, 5, padding=2, groups=16), (1, 16, 7, 7)),     # ... channels-last, one image
    (lambda: nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), (2, 16, 8, 8)),   # ... channels-last
    (lambda: nn.Conv2d(3, 16, 3, stride=2, padding=1), (1, 3, 12, 12)),     # the stem: im2col, bias
    (lambda: nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), (2, 3, 12, 12)),  # ... in the products
    (lambda: nn.Conv2d(8, 16, 3, padding=1, groups=2, bias=False), (2, 8, 7, 7)),    # ... two groups
])
def test_conv_norm_hardswish_gives_the_same_bits_on_every_convolution_path(conv, x_shape, dtype, rng):
    """MobileNet V3's conv -> batch norm -> hard swish: the hard swish inside each kernel's epilogue (or
    the one compiled pass after it) gives the bits of the three layers one by one."""
    model = _randomise_statistics(nn.Sequential(conv(), nn.BatchNorm2d(16), nn.Hardswish()), rng).to(dtype).eval()
    x = 3 * rng.standard_normal(x_shape).astype(dtype)
    expected = model(x)
    with nn.no_grad():
        fused = model(x)
    np.testing.assert_array_equal(fused, expected)
    assert ((expected > -0.375) & (expected < 0)).any() and (expected > 3).any()      # hard swish's curve and line


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


def _unfused_twin(model):
    """A copy of ``model`` whose activations carry a do-nothing forward hook, which keeps every layer out
    of fusion: the layers run one by one."""
    import copy
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            module.register_forward_hook(lambda module, inputs, output: None)
    return twin


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_with_norm_and_clip_fused_gives_the_same_bits(dtype, training, rng):
    """Batch norm -> ReLU6 runs as one pass with gradients too (in training, and in evaluation mode as
    Grad-CAM uses it): outputs, every gradient and the running statistics after two steps equal the
    layers run one by one, bit for bit."""
    from tinycnn import losses
    model = _model("mobilenet_v2", rng, dtype, width_mult=0.5).train(training)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()                                            # no random masks to tell apart
    twin = _unfused_twin(model)
    x = 3 * rng.standard_normal((4, 3, 32, 32)).astype(dtype)
    labels = np.arange(4) % 10
    for _ in range(2):
        outputs = []
        for net in (model, twin):
            net.zero_grad()
            criterion = losses.CrossEntropyLoss()
            outputs.append(net(x))
            criterion(outputs[-1], labels)
            net.backward(criterion.backward())
        np.testing.assert_array_equal(outputs[0], outputs[1])
        for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
            np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    for (name, a), (_, b) in zip(model.named_buffers(), twin.named_buffers()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_norm_clip_runs_in_training_and_its_activation_caches_the_output(rng, monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU6())
    calls = []
    real = fusion.norm_clip
    monkeypatch.setattr(fusion, "norm_clip", lambda *args: calls.append(args) or real(*args))
    x = 4 * rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    out = model(x)
    assert len(calls) == 1 and model[2]._x is out
    assert ((out == 0) | (out == 6)).any()                          # some values sit on the kinks


def test_changing_a_fused_norms_input_in_place_is_still_detected(rng):
    model = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU())
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    out = model(x)
    x *= 2
    with pytest.raises(RuntimeError, match="changed in place"):
        model.backward(np.ones_like(out))


def test_backward_takes_each_fused_activation_inside_the_batch_norm_passes(rng, monkeypatch):
    """In training, no separate ReLU6 backward pass runs for the 35 fused pairs of MobileNet V2; a second
    backward still raises (both caches were used up)."""
    import tinycnn.nn.activation as activation_module
    model = _model("mobilenet_v2", rng, width_mult=0.5).train()
    separate = []
    real = activation_module.clip_backward
    monkeypatch.setattr(activation_module, "clip_backward", lambda *args: separate.append(1) or real(*args))
    out = model(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    model.backward(np.ones_like(out))
    assert separate == []
    with pytest.raises(RuntimeError, match="twice"):
        model.backward(np.ones_like(out))


def _squeeze_excitation(gate, rng, dtype=np.float32, channels=12):
    nn.init.manual_seed(1)
    block = nn.SqueezeExcitation(channels, 4, scale_activation=gate).to(dtype)
    for conv in (block.fc1, block.fc2):
        conv.bias.data[...] = rng.standard_normal(conv.bias.data.shape)        # gates off the flat 0.5
    return block


@pytest.mark.parametrize("gate", [nn.Hardsigmoid, nn.Sigmoid])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_squeeze_excitation_without_grad_calls_its_kernels_directly_with_the_same_bits(gate, dtype, batch, rng,
                                                                                       monkeypatch):
    block = _squeeze_excitation(gate, rng, dtype)
    x = 3 * rng.standard_normal((batch, 12, 5, 5)).astype(dtype)
    expected = block(x)                                             # the five layers one by one
    monkeypatch.setattr(nn.SqueezeExcitation, "_gate", lambda self, x: pytest.fail("layers called one by one"))
    with nn.no_grad():
        np.testing.assert_array_equal(block(x), expected)
    for layer in [block, *block.children()]:
        with pytest.raises(RuntimeError, match=r"no_grad\(\)"):
            layer.backward(np.ones((batch, 12, 1, 1), dtype=dtype))


def test_the_one_image_squeeze_excitation_kernel_gives_the_same_bits_on_one_and_two_threads(rng, monkeypatch,
                                                                                           restore_numba_threads):
    """Its means and scaling are parallel loops over the channels: each channel's arithmetic must not
    depend on the thread count (64 channels of 9x9: several channels per thread)."""
    import numba

    block = _squeeze_excitation(nn.Hardsigmoid, rng, np.float32, channels=64)
    x = 3 * rng.standard_normal((1, 64, 9, 9)).astype(np.float32)
    expected = block(x)                                             # the layers one by one
    monkeypatch.setattr(nn.SqueezeExcitation, "_gate", lambda self, x: pytest.fail("layers called one by one"))
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        with nn.no_grad():
            np.testing.assert_array_equal(block(x), expected)


def test_a_hooked_or_replaced_squeeze_excitation_layer_runs_the_layers_one_by_one(rng):
    block = _squeeze_excitation(nn.Hardsigmoid, rng)
    x = rng.standard_normal((1, 12, 4, 4)).astype(np.float32)
    expected = block(x)
    seen = []
    handle = block.fc1.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    with nn.no_grad():
        np.testing.assert_array_equal(block(x), expected)
    assert seen == [(1, 4, 1, 1)]
    handle.remove()
    block.scale_activation.forward = lambda x: np.ones_like(x)              # an instance-level forward
    with nn.no_grad():
        np.testing.assert_array_equal(block(x), x)
    assert fusion.squeeze_excitation_without_grad(block, x) is None


def test_squeeze_excitation_without_grad_checks_the_dtype_like_its_layers(rng):
    block = _squeeze_excitation(nn.Hardsigmoid, rng, np.float64)
    with nn.no_grad(), pytest.raises(TypeError, match="Conv2d has float64 parameters but the input is float32"):
        block(np.ones((1, 12, 3, 3), dtype=np.float32))


@pytest.mark.parametrize("activation", [nn.ReLU, nn.ReLU6])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels, squeeze, size", [(12, 4, 5), (40, 16, 7), (96, 24, 14)])
def test_one_image_mobilenet_v3_block_is_one_compiled_call_with_the_same_bits(activation, dtype, channels, squeeze,
                                                                             size, rng, monkeypatch):
    # a ReLU/ReLU6 and hard-sigmoid block on one image: kernels.squeeze_excitation, once, and the bits of
    # the layers one by one (plane sizes with P % 4 != 0, squeeze widths with S % 8 != 0 included)
    nn.init.manual_seed(2)
    block = nn.SqueezeExcitation(channels, squeeze, activation=activation, scale_activation=nn.Hardsigmoid).to(dtype)
    for conv in (block.fc1, block.fc2):
        conv.bias.data[...] = rng.standard_normal(conv.bias.data.shape)
    x = 3 * rng.standard_normal((1, channels, size, size)).astype(dtype)
    expected = block(x)                                             # the layers one by one
    calls = []
    real = fusion.squeeze_excitation_clip_hardsigmoid
    monkeypatch.setattr(fusion, "squeeze_excitation_clip_hardsigmoid",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    with nn.no_grad():
        np.testing.assert_array_equal(block(x), expected)
    assert calls == [1]


def test_the_one_image_block_is_not_taken_for_other_gates_batches_or_without_blas_gemv(rng, monkeypatch):
    from kernels import _gemm
    calls = []
    real = fusion.squeeze_excitation_clip_hardsigmoid
    monkeypatch.setattr(fusion, "squeeze_excitation_clip_hardsigmoid",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    sigmoid_gate, hard_gate = _squeeze_excitation(nn.Sigmoid, rng), _squeeze_excitation(nn.Hardsigmoid, rng)
    with nn.no_grad():
        sigmoid_gate(rng.standard_normal((1, 12, 4, 4)).astype(np.float32))
        hard_gate(rng.standard_normal((2, 12, 4, 4)).astype(np.float32))
    assert calls == []
    x = rng.standard_normal((1, 12, 4, 4)).astype(np.float32)
    expected = hard_gate(x)
    monkeypatch.setattr(_gemm, "_CBLAS_GEMV", {})                   # no gemv found: the layers' kernels
    monkeypatch.setattr("kernels.squeeze_excitation._CBLAS_GEMV", {})
    with nn.no_grad():
        np.testing.assert_allclose(hard_gate(x), expected, rtol=1e-6, atol=1e-6)   # np.matmul's own gemv order
    assert calls == [1]                                             # asked, and it declined


def test_the_one_image_block_declines_convolutions_as_large_as_the_blocked_matrix_vector_product(rng, monkeypatch):
    # there the layers' 1x1 convolutions take kernels._gemm.matrix_vector's row blocks, whose bits a single
    # gemv call need not give: the block runs its layers' kernels (same result as one by one)
    import kernels.squeeze_excitation as se_kernels
    block = _squeeze_excitation(nn.Hardsigmoid, rng)
    x = rng.standard_normal((1, 12, 4, 4)).astype(np.float32)
    expected = block(x)
    monkeypatch.setattr(se_kernels, "PARALLEL_MATRIX_VECTOR_MIN_ELEMENTS", 12 * 4)          # fc1: (4, 12)
    monkeypatch.setattr(se_kernels, "_squeeze_excitation_kernel", lambda *args: pytest.fail("one call taken"))
    with nn.no_grad():
        np.testing.assert_array_equal(block(x), expected)
