"""``nn.freeze(model)``: a snapshot for inference whose conv -> batch norm -> activation runs are merged once."""
import numpy as np
import pytest

import tinycnn.nn as nn
from tinycnn.models import get_model


def _randomise_statistics(model, rng):
    """Non-trivial running statistics and affine parameters (fresh ones are 0/1 and would hide mistakes)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            C = module.num_features
            if module.running_mean is None:                                # track_running_stats=False
                continue
            module.running_mean[...] = rng.standard_normal(C)
            module.running_var[...] = rng.uniform(0.5, 2.0, C)
            module.weight.data[...] = rng.uniform(0.5, 1.5, C)
            module.bias.data[...] = rng.standard_normal(C)
    return model


def _model(name, rng, dtype=np.float32, **arguments):
    nn.init.manual_seed(0)
    return _randomise_statistics(get_model(name, num_classes=10, **arguments), rng).to(dtype)


def _eval_output(model, x):
    model.eval()
    with nn.no_grad():
        return model(x)


def _frozen_steps(frozen):
    return [m for m in frozen.module.modules() if isinstance(m, nn.FrozenConvNormActivation)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, arguments, merged", [
    ("mobilenet_v2", {"width_mult": 0.5}, 52),             # every batch norm follows a convolution
    ("mobilenet_v3_small", {}, 34),
    ("resnet18", {"width_mult": 0.25}, 3),                  # blocks with their own forward: only downsample
    ("mobilenext", {"width_mult": 0.5}, None),
    ("shufflenet_v2_x0_5", {}, None),
    ("ghostnet", {"width_mult": 0.5}, None),                 # its SE layers under timm's names
])
def test_a_frozen_model_gives_the_bits_of_eval_mode_under_no_grad(name, arguments, merged, dtype, rng):
    model = _model(name, rng, dtype, **arguments)
    x = rng.standard_normal((2, 3, 64, 64)).astype(dtype)      # 32 x 32 after a stem: kernels.stem takes it
    frozen = nn.freeze(model)
    np.testing.assert_array_equal(frozen(x), _eval_output(model, x))
    np.testing.assert_array_equal(frozen(x[:1]), _eval_output(model, x[:1]))      # a new input shape
    if merged is not None:
        assert len(_frozen_steps(frozen)) == merged


def test_freezing_merges_conv_norm_activation_blocks_into_their_parent(rng):
    model = _model("mobilenet_v3_small", rng)
    frozen = nn.freeze(model)
    stem = frozen.module.features[0]
    assert type(stem) is nn.FrozenConvNormActivation                     # no Sequential of one step left
    assert [type(layer) for layer in stem.children()] == [nn.Conv2d, nn.BatchNorm2d, nn.Hardswish]
    assert not any(isinstance(m, nn.Conv2dNormActivation) for m in frozen.module.modules())
    project = frozen.module.features[1].block[-1]                        # conv + BN, no activation
    assert [type(layer) for layer in project.children()] == [nn.Conv2d, nn.BatchNorm2d]
    assert "FrozenConvNormActivation" in repr(frozen)
    # a step keeps its layers' names, so their state_dict keys stay the model's
    assert set(stem.state_dict()) == set(model.features[0].state_dict())


def test_the_frozen_copy_is_a_snapshot_and_the_model_is_left_as_it_was(rng):
    model = _model("mobilenet_v2", rng, width_mult=0.5).train()
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    frozen = nn.freeze(model)
    assert model.training and all(m.training for m in model.modules())
    assert not any(isinstance(m, nn.FrozenConvNormActivation) for m in model.modules())
    before = frozen(x)
    norm = model.features[0][1]
    norm.running_mean[...] += 1.0                                        # edits after freezing ...
    model.features[0][0].weight.data[...] *= 2.0
    np.testing.assert_array_equal(frozen(x), before)                     # ... do not reach the snapshot
    assert not np.array_equal(_eval_output(model, x), before)
    np.testing.assert_array_equal(nn.freeze(model)(x), _eval_output(model, x))     # freeze again: they do


def test_layers_no_grad_would_not_merge_stay_as_they_are(rng):
    hooked = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    seen = []
    hooked.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    untracked = nn.BatchNorm2d(4, track_running_stats=False)
    model = nn.Sequential(
        nn.Sequential(hooked, nn.BatchNorm2d(4), nn.ReLU()),                           # hooked: runs as layers
        nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), untracked, nn.ReLU6()),           # batch statistics
        nn.Sequential(nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5), nn.LeakyReLU()),            # merged without it
        nn.Sequential(nn.Conv2d(5, 6, 3), nn.BatchNorm2d(6)),                            # merged (a projection)
    )
    _randomise_statistics(model, rng)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    frozen = nn.freeze(model)
    np.testing.assert_array_equal(frozen(x), _eval_output(model, x))
    assert seen == [(2, 4, 9, 9)] * 2                                    # the copy kept the hook
    first, second, third, fourth = frozen.module.children()
    assert [type(layer) for layer in first.children()] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(layer) for layer in second.children()] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6]
    assert [type(layer) for layer in third.children()] == [nn.FrozenConvNormActivation, nn.LeakyReLU]
    assert type(fourth) is nn.FrozenConvNormActivation
    assert type(first) is type(second) is nn.Sequential         # batch norm -> ReLU(6) still merge at run time
    assert type(third) is type(frozen.module) is nn.FrozenSequential       # nothing left to merge: a loop


def test_a_frozen_model_that_is_a_sequential_becomes_a_frozen_sequential(rng):
    model = _randomise_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()), rng)
    x = rng.standard_normal((2, 3, 6, 6))
    frozen = nn.freeze(model.to(np.float64))
    assert type(frozen.module) is nn.FrozenSequential and not frozen.module.training
    assert [type(layer) for layer in frozen.module.children()] == [nn.FrozenConvNormActivation, nn.Flatten]
    np.testing.assert_array_equal(frozen(x), _eval_output(model, x))


def test_a_frozen_step_is_for_inference_only_and_checks_its_input(rng):
    conv, norm = nn.Conv2d(3, 4, 3, padding=1), _randomise_statistics(nn.BatchNorm2d(4), rng).eval()
    step = nn.FrozenConvNormActivation(conv, norm, nn.ReLU6())
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    with nn.no_grad():
        expected = nn.ReLU6()(norm(conv(x)))
    np.testing.assert_array_equal(step(x), expected)                     # the conv's bias included
    with pytest.raises(RuntimeError, match="inference only"):
        step.backward(np.ones_like(expected))
    with pytest.raises(ValueError, match="expects 3 input channels"):
        step(x[:, :2])
    with pytest.raises(TypeError, match="float64 input"):
        step.to(np.float64)(x.astype(np.float64))                        # converted after freezing
    with pytest.raises(ValueError, match="running statistics"):
        nn.FrozenConvNormActivation(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4).train())
    with pytest.raises(ValueError, match="LeakyReLU"):
        nn.FrozenConvNormActivation(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4).eval(), nn.LeakyReLU())
    with pytest.raises(ValueError, match="BatchNorm2d"):
        nn.FrozenConvNormActivation(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5).eval())
    with pytest.raises(TypeError, match="tinycnn.nn.Module"):
        nn.freeze(lambda x: x)


def test_a_frozen_step_checks_an_input_of_a_prepared_shape_as_the_first_one(rng):
    """A shape already prepared goes straight to its kernels only when C-contiguous and of the dtype of the
    weights as frozen and as the convolution holds them: a strided view gives the same bits, and a model
    converted after freezing still raises instead of using the weights it was frozen with."""
    conv, norm = nn.Conv2d(3, 4, 3, padding=1), _randomise_statistics(nn.BatchNorm2d(4), rng).eval()
    step = nn.FrozenConvNormActivation(conv, norm, nn.ReLU6())
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    expected = step(x)                                                  # prepares (2, 3, 6, 6)
    np.testing.assert_array_equal(step(x), expected)
    wide = np.zeros((2, 3, 6, 12), dtype=np.float32)
    wide[..., ::2] = x
    np.testing.assert_array_equal(step(wide[..., ::2]), expected)     # not contiguous: copied first
    with pytest.raises(TypeError, match="float64 parameters but the input is float32"):
        step.to(np.float64)(x)                                         # converted after freezing
    with pytest.raises(TypeError, match="float64 input"):
        step(x.astype(np.float64))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        nn.FrozenConvNormActivation(nn.Conv2d(3, 4, 1), norm)(x.tolist())


def test_frozen_containers_keep_the_forward_hooks_of_their_steps(rng):
    """Frozen containers call their steps' forward directly (no backward to prepare for), but a hooked step
    still goes through ``module(x)``: its hook sees the call and may replace the output."""
    model = _randomise_statistics(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()), rng)
    frozen = nn.freeze(model)
    step = frozen.module[0]
    assert isinstance(step, nn.FrozenConvNormActivation)
    x = rng.standard_normal((1, 3, 2, 2)).astype(np.float32)
    plain = frozen(x)
    seen = []
    handle = step.register_forward_hook(lambda module, inputs, output: seen.append(output.shape) or output * 2)
    np.testing.assert_array_equal(frozen(x), plain * 2)
    assert seen == [(1, 4, 2, 2)]
    handle.remove()
    np.testing.assert_array_equal(frozen(x), plain)


def test_residual_blocks_become_frozen_shortcut_blocks_with_their_children_and_errors(rng):
    model = _model("mobilenet_v3_small", rng)
    frozen = nn.freeze(model)
    blocks = [m for m in frozen.module.modules() if isinstance(m, nn.FrozenShortcutBlock)]
    assert len(blocks) == 11 and sum(block._identity for block in blocks) == 6     # V3-Small: 6 add their input
    assert set(frozen.module.state_dict()) == set(model.state_dict())             # every key kept
    with pytest.raises(ValueError, match="expects 16 input channels"):
        blocks[0](np.zeros((1, 8, 8, 8), np.float32))

    projection = nn.Residual(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1))    # a projection shortcut
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    frozen = nn.freeze(projection)
    assert type(frozen.module) is nn.FrozenShortcutBlock
    assert list(frozen.module.state_dict()) == list(projection.state_dict())     # the shortcut once, by its name
    np.testing.assert_array_equal(frozen(x), _eval_output(projection, x))
    mismatched = nn.freeze(nn.Residual(nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 1)))   # 3 x 3 without padding
    with pytest.raises(ValueError, match=r"Residual: body output \(2, 4, 3, 3\) and shortcut output \(2, 4, 5, 5\)"):
        mismatched(x)                                                   # the words of the block itself


def test_blocks_with_their_own_forward_rule_are_not_rewritten(rng):
    frozen = nn.freeze(_model("resnet18", rng, width_mult=0.25))        # a ReLU after the add
    assert not any(isinstance(m, nn.FrozenShortcutBlock) for m in frozen.module.modules())
    frozen = nn.freeze(_model("mobilenext", rng, width_mult=0.5))       # identity on some channels only
    assert not any(isinstance(m, nn.FrozenShortcutBlock) for m in frozen.module.modules())


def test_mobilenet_v3_squeeze_excitation_blocks_become_one_kernel_call_on_one_image(rng, monkeypatch):
    model = _model("mobilenet_v3_small", rng)
    frozen = nn.freeze(model)
    blocks = [m for m in frozen.module.modules() if isinstance(m, nn.FrozenSqueezeExcitation)]
    assert len(blocks) == 9                                             # every SE block of V3-Small
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    from tinycnn.nn import fusion
    calls = []
    real = fusion.squeeze_excitation_clip_hardsigmoid
    monkeypatch.setattr(fusion, "squeeze_excitation_clip_hardsigmoid",
                        lambda *args, **kwargs: calls.append(args[0].shape) or real(*args, **kwargs))
    expected, expected_two = _eval_output(model, x), _eval_output(model, np.repeat(x, 2, axis=0))
    calls.clear()                                                       # (evaluation mode takes it too)
    np.testing.assert_array_equal(frozen(x), expected)                 # one image: the kernel
    assert len(calls) == 9
    np.testing.assert_array_equal(frozen(np.repeat(x, 2, axis=0)), expected_two)
    assert len(calls) == 9                                              # two images: the block itself


def test_other_squeeze_excitation_blocks_are_left_to_no_grad(rng):
    sigmoid_gate = nn.SqueezeExcitation(8, 4)                           # SENet's sigmoid gate
    hooked = nn.SqueezeExcitation(8, 4, scale_activation=nn.Hardsigmoid)
    hooked.register_forward_hook(lambda module, inputs, output: None)
    for block in (sigmoid_gate, hooked):
        model = nn.Sequential(block, nn.Flatten())
        frozen = nn.freeze(model)
        assert not any(isinstance(m, nn.FrozenSqueezeExcitation) for m in frozen.module.modules())
        x = rng.standard_normal((1, 8, 3, 3)).astype(np.float32)
        np.testing.assert_array_equal(frozen(x), _eval_output(model, x))
        with pytest.raises(ValueError, match="Hardsigmoid gate"):
            nn.FrozenSqueezeExcitation(block)


def test_a_frozen_sequential_runs_its_layers_inside_one_blas_scope(rng):
    """As chain_forward: the layers' own scopes are then nested ones (an outermost one costs ~4 us)."""
    from kernels import _jit
    depths = []
    flatten = nn.Flatten()
    flatten.register_forward_hook(lambda module, inputs, output: depths.append(getattr(_jit._BLAS_LIMIT, "depth", 0)))
    model = _randomise_statistics(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), flatten), rng)
    frozen = nn.freeze(model)
    assert type(frozen.module) is nn.FrozenSequential
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    with nn.no_grad():
        frozen.module(x)                                                # the Sequential alone
    frozen(x)                                                           # through the frozen model
    assert depths == [1, 2]
    assert getattr(_jit._BLAS_LIMIT, "depth", 0) == 0                   # and closed afterwards
