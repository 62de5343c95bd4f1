"""``Module`` bookkeeping: registration order, dotted names, state_dict round trips and strict loading,
modes, gradient accumulation, dtype conversion, hooks, containers and ``repr``."""
import copy
import re
from collections import OrderedDict

import numpy as np
import pytest

import tinycnn.nn as nn


class TinyNet(nn.Module):
    """features (Sequential of Conv2dNormActivation + SE) -> pool -> classifier, like torchvision models."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2dNormActivation(3, 8, stride=2),
            nn.Sequential(nn.Conv2dNormActivation(8, 8, groups=8), nn.SqueezeExcitation(8, 4)),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(8, 5)

    def forward(self, x):
        return self.classifier(self.flatten(self.avgpool(self.features(x))))

    def backward(self, grad_out):
        grad = self.avgpool.backward(self.flatten.backward(self.classifier.backward(grad_out)))
        return self.features.backward(grad)


EXPECTED_KEYS = [
    "features.0.0.weight",
    "features.0.1.weight", "features.0.1.bias", "features.0.1.running_mean", "features.0.1.running_var",
    "features.0.1.num_batches_tracked",
    "features.1.0.0.weight",
    "features.1.0.1.weight", "features.1.0.1.bias", "features.1.0.1.running_mean", "features.1.0.1.running_var",
    "features.1.0.1.num_batches_tracked",
    "features.1.1.fc1.weight", "features.1.1.fc1.bias", "features.1.1.fc2.weight", "features.1.1.fc2.bias",
    "classifier.weight", "classifier.bias",
]


def test_state_dict_uses_pytorch_dotted_names_in_registration_order():
    net = TinyNet()
    assert list(net.state_dict()) == EXPECTED_KEYS
    assert [name for name, _ in net.named_parameters()] == [k for k in EXPECTED_KEYS
                                                            if not k.endswith(("running_mean", "running_var",
                                                                               "num_batches_tracked"))]
    assert [name for name, _ in net.named_buffers()] == [k for k in EXPECTED_KEYS
                                                         if k.endswith(("running_mean", "running_var",
                                                                        "num_batches_tracked"))]
    assert [name for name, _ in net.named_children()] == ["features", "avgpool", "flatten", "classifier"]
    assert len(list(net.modules())) == 1 + 1 + (1 + 3) + 1 + (1 + 3) + (1 + 5) + 3   # SE: pool, fc1, fc2, 2 activations


def test_state_dict_round_trip_reproduces_outputs_and_is_a_copy(rng):
    nn.init.manual_seed(0)
    source = TinyNet().train()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    source(x)                                              # move the running statistics
    state = source.state_dict()
    nn.init.manual_seed(1)
    target = TinyNet().eval()
    source.eval()
    assert not np.array_equal(target(x), source(x))
    result = target.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    np.testing.assert_array_equal(target(x), source(x))
    assert target.features[0][1].num_batches_tracked == 1
    source.classifier.weight.data += 1                     # the checkpoint does not follow later changes
    assert not np.array_equal(state["classifier.weight"], source.classifier.weight.data)


def test_strict_loading_names_missing_and_unexpected_keys_and_changes_nothing():
    net = TinyNet()
    before = net.state_dict()
    state = net.state_dict()
    del state["features.1.1.fc2.bias"]
    state["features.9.weight"] = np.zeros(3)
    state["classifier.weight"] = state["classifier.weight"] + 1
    with pytest.raises(RuntimeError) as error:
        net.load_state_dict(state)
    message = str(error.value)
    assert 'Missing key(s) in state_dict: "features.1.1.fc2.bias"' in message
    assert 'Unexpected key(s) in state_dict: "features.9.weight"' in message
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_non_strict_loading_reports_keys_and_loads_the_rest():
    net = TinyNet()
    weight_array = net.classifier.weight.data
    state = {"classifier.weight": np.ones((5, 8)), "extra.weight": np.ones(2)}
    result = net.load_state_dict(state, strict=False)
    assert net.classifier.weight.data is weight_array         # copied in place, as PyTorch
    assert result.unexpected_keys == ["extra.weight"]
    assert "features.0.0.weight" in result.missing_keys and "classifier.weight" not in result.missing_keys
    np.testing.assert_array_equal(net.classifier.weight.data, 1)
    assert net.classifier.weight.dtype == np.float32        # cast to the parameter's dtype


def test_shape_mismatch_raises_even_when_not_strict_and_names_the_key_and_shapes():
    net = TinyNet()
    state = net.state_dict()
    state["classifier.weight"] = np.zeros((10, 8), dtype=np.float32)
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=re.escape(
                "size mismatch for classifier.weight: copying an array of shape (10, 8), the shape in the "
                "current model is (5, 8)")):
            net.load_state_dict(state, strict=strict)


def test_missing_num_batches_tracked_is_accepted_as_in_pytorch():
    net = TinyNet()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert net.load_state_dict(state).missing_keys == []


def test_load_state_dict_rejects_a_non_mapping():
    with pytest.raises(TypeError, match="mapping"):
        TinyNet().load_state_dict([1, 2, 3])


def test_train_and_eval_are_recursive_and_return_the_module():
    net = TinyNet()
    assert net.eval() is net
    assert all(not m.training for m in net.modules())
    assert net.train() is net and all(m.training for m in net.modules())


def test_gradients_accumulate_over_backward_calls_until_zero_grad(rng):
    net = TinyNet().double()
    x = rng.standard_normal((2, 3, 8, 8))
    y = net(x)
    g = rng.standard_normal(y.shape)
    net.backward(g)
    once = {name: p.grad.copy() for name, p in net.named_parameters()}
    net(x)                                      # one forward per backward (the forward cache rule)
    net.backward(g)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[name], rtol=1e-12, atol=1e-15)
    net.zero_grad()
    assert all(not p.grad.any() for p in net.parameters())


def test_to_double_converts_parameters_gradients_and_float_buffers_only():
    net = TinyNet()
    assert net.double() is net
    for p in net.parameters():
        assert p.data.dtype == p.grad.dtype == np.float64
    buffers = dict(net.named_buffers())
    assert buffers["features.0.1.running_var"].dtype == np.float64
    assert buffers["features.0.1.num_batches_tracked"].dtype == np.int64
    assert net.float().classifier.weight.dtype == np.float32
    with pytest.raises(TypeError, match="float32 and float64"):
        net.to(np.int32)


def test_forward_hooks_see_every_submodule_output_and_can_be_removed(rng):
    net = TinyNet()
    shapes = []
    handles = [m.register_forward_hook(lambda module, inputs, output: shapes.append(
        (type(module).__name__, output.shape))) for m in net.features.modules()]
    net(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    assert ("Conv2d", (1, 8, 4, 4)) in shapes and ("SqueezeExcitation", (1, 8, 4, 4)) in shapes
    count = len(shapes)
    for handle in handles:
        handle.remove()
    net(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    assert len(shapes) == count


def test_sequential_indexing_slicing_append_and_named_children():
    seq = nn.Sequential(nn.ReLU(), nn.Identity(), nn.Sigmoid())
    assert len(seq) == 3 and isinstance(seq[-1], nn.Sigmoid) and isinstance(seq[1], nn.Identity)
    assert [type(m).__name__ for m in seq[1:]] == ["Identity", "Sigmoid"]
    seq.append(nn.Flatten())
    assert [name for name, _ in seq.named_children()] == ["0", "1", "2", "3"]
    named = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 1), act=nn.ReLU()))
    assert list(named.state_dict()) == ["conv.weight", "conv.bias"]
    with pytest.raises(IndexError, match="out of range"):
        seq[7]


def test_reassigning_an_attribute_replaces_its_registration():
    net = TinyNet()
    net.classifier = nn.Linear(8, 2, bias=False)
    assert list(net.state_dict())[-1] == "classifier.weight"
    layer = nn.Linear(3, 2)
    layer.bias = None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    with pytest.raises(TypeError, match="cannot assign ndarray to parameter 'weight'"):
        layer.weight = np.zeros((2, 3))


def test_module_needs_super_init_before_attributes():
    class Broken(nn.Module):
        def __init__(self):
            self.conv = nn.Conv2d(1, 1, 1)

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Broken()


def test_deepcopy_gives_an_independent_module(rng):
    net = TinyNet()
    clone = copy.deepcopy(net)
    clone.classifier.weight.data += 1
    assert not np.array_equal(clone.classifier.weight.data, net.classifier.weight.data)
    assert list(clone.state_dict()) == EXPECTED_KEYS


def test_get_submodule_and_apply():
    net = TinyNet()
    assert isinstance(net.get_submodule("features.1.1.fc2"), nn.Conv2d)
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "TinyNet" and seen.count("BatchNorm2d") == 2
    with pytest.raises(AttributeError, match="no submodule 'nope'"):
        net.get_submodule("features.nope")


def test_repr_is_nested_like_pytorch():
    text = repr(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()))
    assert text == (
        "Sequential(\n"
        "  (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n"
        "  (1): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)\n"
        "  (2): ReLU6()\n"
        ")")


def test_repr_of_layers_equals_pytorchs():
    torch = pytest.importorskip("torch")
    cases = [
        ("Conv2d", (4, 8, 3), dict(stride=2, padding=1, groups=4, bias=False)),
        ("Conv2d", (4, 8, (1, 3)), dict(dilation=2)),
        ("ConvTranspose2d", (3, 4, 3), dict(stride=2, padding=1, output_padding=1)),
        ("BatchNorm2d", (8,), dict(eps=1e-3, momentum=0.01)), ("BatchNorm2d", (8,), dict(momentum=None, bias=False)),
        ("BatchNorm2d", (8,), dict(affine=False, track_running_stats=False)),
        ("Linear", (3, 4), dict(bias=False)),
        ("ReLU", (), dict(inplace=True)), ("ReLU6", (), {}), ("LeakyReLU", (0.2,), {}), ("Sigmoid", (), {}),
        ("Hardsigmoid", (), {}), ("Hardswish", (), {}), ("SiLU", (), {}),
        ("MaxPool2d", (3, 2, 1), {}), ("MaxPool2d", (3,), dict(stride=2, ceil_mode=True)),
        ("AvgPool2d", (2,), {}), ("AdaptiveAvgPool2d", (1,), {}), ("Dropout", (0.2,), {}),
        ("Flatten", (), {}), ("Identity", (), {}), ("ChannelShuffle", (2,), {}),
        ("Upsample", (), dict(scale_factor=2, mode="bilinear")), ("Upsample", (), dict(size=(4, 5))),
    ]
    for name, args, kwargs in cases:
        ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
        assert repr(ours) == repr(theirs), name
    ours = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.ReLU()))
    assert repr(ours) == repr(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Sequential(torch.nn.ReLU())))


def test_parameter_holds_data_and_a_zero_gradient_of_the_same_shape():
    p = nn.Parameter(np.arange(6).reshape(2, 3))
    assert p.data.dtype == np.float32 and p.shape == (2, 3) and p.grad.shape == (2, 3) and not p.grad.any()
    assert repr(p) == "Parameter(shape=(2, 3), dtype=float32)"
