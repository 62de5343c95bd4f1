"""PyTorch reference outputs for the ``tinycnn.nn`` layers: ``tests/fixtures/layers.npz``.

Every case names a layer by its class name, which is the same in ``torch.nn`` and ``tinycnn.nn``
(``Conv2d``, ``BatchNorm2d``, ...), with the same constructor arguments. For each case PyTorch (float64)
builds the layer with a fixed seed, randomises batch-norm affine parameters and running statistics (so
that evaluation mode is not a near-identity), and then, **in training mode and in evaluation mode**,
runs ``y = layer(x)`` and ``y.backward(grad_y)``. Keys, per case:

    layers/<case>/spec                 JSON {"layer", "args", "kwargs", "modes", "eval_equals_train"}
    layers/<case>/x, grad_y            input and upstream gradient (seeded standard normal)
    layers/<case>/state/<name>         the layer's state_dict before the forward (parameters and buffers)
    layers/<case>/<mode>/y             forward output
    layers/<case>/<mode>/grad_x        dL/dx
    layers/<case>/<mode>/grad/<name>   dL/dparameter, for every parameter
    layers/<case>/train/state/<name>   buffers after the training-mode forward (running statistics moved)
    layers/<case>/<mode>/torch_float32_error   JSON {"y": ..., "grad_x": ..., "grad/<name>": ...}: PyTorch's
                                       own float32 run against float64 (relative; gradients to at least
                                       max|grad_y|, as the tests measure): the float32 tests' tolerance
    meta/torch_version, meta/numpy_version

Layers that ``torch.nn`` does not have (torchvision's ``SqueezeExcitation`` and MobileNetV2
``InvertedResidual``, and small composite blocks built from tinycnn's ``Residual``/``Concat``/
``ChannelSplit``) are written below as PyTorch modules with the same attribute names, so their
``state_dict`` keys equal tinycnn's. Shapes are tiny; the file stays far below 500 KB.
Run through ``python tools/make_fixtures.py --only layers``.
"""
import copy
import json
import zlib

import numpy as np
import torch
from torch import nn

from make_fixtures import relative_error, save_npz

FILE_NAME = "layers.npz"
BOTH_MODES = ("train", "eval")
# Values where activations have kinks; the "kinks" input contains each of them exactly.
KINKS = (-6.0, -3.0, 0.0, 3.0, 6.0, -3.0, 3.0, 0.0)


def case(name, layer, args, input_shape, kwargs=None, modes=BOTH_MODES, values="normal"):
    """One fixture configuration. ``values``: 'normal', 'kinks' (4 x normal, with KINKS inserted) or
    'integers' (values in -2..2: many ties for max pooling)."""
    return dict(name=name, layer=layer, args=list(args), kwargs=dict(kwargs or {}), input_shape=tuple(input_shape),
                modes=list(modes), values=values)


ACT_SHAPE = (2, 3, 4, 4)
CASES = [
    # the six kinds of convolution, all through Conv2d's arguments
    case("conv2d_standard", "Conv2d", [3, 4, 3], (2, 3, 6, 5), dict(padding=1)),
    case("conv2d_strided", "Conv2d", [3, 4, 3], (2, 3, 7, 6), dict(stride=2, padding=1)),
    case("conv2d_dilated", "Conv2d", [3, 4, 3], (2, 3, 7, 6), dict(padding=2, dilation=2)),
    case("conv2d_grouped", "Conv2d", [4, 6, 3], (2, 4, 5, 5), dict(padding=1, groups=2)),
    case("conv2d_depthwise", "Conv2d", [4, 4, 3], (2, 4, 7, 6), dict(stride=2, padding=1, groups=4, bias=False)),
    case("conv2d_depthwise_multiplier2", "Conv2d", [3, 6, 3], (2, 3, 5, 5), dict(padding=1, groups=3)),
    case("conv2d_pointwise", "Conv2d", [4, 5, 1], (2, 4, 4, 5), dict(bias=False)),
    case("conv2d_kernel1x3_stride2x1", "Conv2d", [3, 4, [1, 3]], (2, 3, 6, 5), dict(stride=[2, 1], padding=[0, 1])),
    case("conv_transpose2d_stride2", "ConvTranspose2d", [4, 3, 3], (2, 4, 4, 3),
         dict(stride=2, padding=1, output_padding=1)),
    case("conv_transpose2d_grouped_dilated", "ConvTranspose2d", [4, 6, 3], (2, 4, 3, 4),
         dict(groups=2, dilation=2, bias=False)),
    # normalisation
    case("batchnorm2d", "BatchNorm2d", [4], (3, 4, 3, 3)),
    case("batchnorm2d_momentum_none_eps1e-3", "BatchNorm2d", [4], (3, 4, 3, 3), dict(momentum=None, eps=1e-3)),
    case("batchnorm2d_no_affine", "BatchNorm2d", [4], (3, 4, 3, 3), dict(affine=False)),
    # fully connected
    case("linear", "Linear", [5, 3], (4, 5)),
    case("linear_no_bias_3d_input", "Linear", [5, 3], (2, 3, 5), dict(bias=False)),
    # activations, with inputs exactly at their kinks
    case("relu", "ReLU", [], ACT_SHAPE, values="kinks"),
    case("relu6", "ReLU6", [], ACT_SHAPE, values="kinks"),
    case("leaky_relu", "LeakyReLU", [], ACT_SHAPE, dict(negative_slope=0.2), values="kinks"),
    case("sigmoid", "Sigmoid", [], ACT_SHAPE, values="kinks"),
    case("hardsigmoid", "Hardsigmoid", [], ACT_SHAPE, values="kinks"),
    case("hardswish", "Hardswish", [], ACT_SHAPE, values="kinks"),
    case("silu", "SiLU", [], ACT_SHAPE, values="kinks"),
    # pooling
    case("maxpool2d_kernel2", "MaxPool2d", [2], (2, 3, 6, 5)),
    case("maxpool2d_kernel3_stride2_pad1_ties", "MaxPool2d", [3], (2, 3, 7, 6), dict(stride=2, padding=1),
         values="integers"),
    case("maxpool2d_ceil_mode", "MaxPool2d", [3], (2, 3, 8, 6), dict(stride=2, ceil_mode=True)),
    case("maxpool2d_ceil_mode_pad1", "MaxPool2d", [3], (2, 3, 6, 7), dict(stride=2, padding=1, ceil_mode=True)),
    case("avgpool2d_kernel2", "AvgPool2d", [2], (2, 3, 6, 5)),
    case("avgpool2d_kernel3_stride2_pad1", "AvgPool2d", [3], (2, 3, 7, 6), dict(stride=2, padding=1)),
    case("adaptive_avgpool2d", "AdaptiveAvgPool2d", [1], (2, 3, 5, 4)),
    # shape and regularisation layers
    case("dropout_eval", "Dropout", [0.5], (2, 3, 4, 4), modes=("eval",)),
    case("dropout_p0", "Dropout", [0.0], (2, 3, 4, 4)),
    case("flatten", "Flatten", [], (2, 3, 2, 2)),
    case("flatten_from_dim2", "Flatten", [], (2, 3, 2, 2), dict(start_dim=2)),
    case("identity", "Identity", [], (2, 3, 2, 2)),
    case("channel_shuffle", "ChannelShuffle", [3], (2, 6, 3, 3)),
    case("upsample_nearest_x2", "Upsample", [], (2, 2, 3, 4), dict(scale_factor=2, mode="nearest")),
    case("upsample_nearest_size5x7", "Upsample", [], (2, 2, 3, 4), dict(size=[5, 7], mode="nearest")),
    case("upsample_nearest_x1.5", "Upsample", [], (2, 2, 3, 5), dict(scale_factor=1.5, mode="nearest")),
    case("upsample_bilinear_x2", "Upsample", [], (2, 2, 3, 4), dict(scale_factor=2, mode="bilinear",
                                                                     align_corners=False)),
    case("upsample_bilinear_size5x9", "Upsample", [], (2, 2, 3, 4), dict(size=[5, 9], mode="bilinear")),
    case("upsample_bilinear_down_size2x3", "Upsample", [], (2, 2, 5, 7), dict(size=[2, 3], mode="bilinear")),
    case("upsample_bilinear_align_corners", "Upsample", [], (2, 2, 3, 4), dict(scale_factor=2, mode="bilinear",
                                                                                align_corners=True)),
    # squeeze-and-excitation (torchvision's layout) and blocks
    case("squeeze_excitation", "SqueezeExcitation", [8, 4], (2, 8, 3, 3)),
    case("squeeze_excitation_hardsigmoid", "SqueezeExcitation", [8, 4], (2, 8, 3, 3),
         dict(activation="ReLU", scale_activation="Hardsigmoid")),
    case("inverted_residual_t6_residual", "InvertedResidual", [2, 2, 1, 6], (2, 2, 4, 4)),
    case("inverted_residual_t1_stride2", "InvertedResidual", [3, 4, 2, 1], (2, 3, 5, 5)),
    case("residual_se_block", "ResidualSEBlock", [4, 2], (2, 4, 4, 4)),
    case("fire_block", "FireBlock", [4, 2, 3], (2, 4, 4, 4)),
    case("shuffle_v2_block", "ShuffleV2Block", [4], (2, 4, 4, 4)),
]


# ---------------------------------------------------------------------------- PyTorch mirrors
class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation, verbatim structure (torchvision is not installed here)."""

    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


def conv_norm_activation(in_channels, out_channels, kernel_size=3, stride=1, groups=1, activation=nn.ReLU6):
    """torchvision.ops.Conv2dNormActivation with BatchNorm2d: Sequential(conv, bn, activation)."""
    padding = (kernel_size - 1) // 2
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), activation(inplace=True))


class InvertedResidual(nn.Module):
    """torchvision.models.mobilenetv2.InvertedResidual (same attributes, same keys)."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(conv_norm_activation(inp, hidden_dim, kernel_size=1))
        layers += [conv_norm_activation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
                   nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class Residual(nn.Module):
    """tinycnn.nn.Residual with an identity shortcut: body(x) + x."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x) + x


class Concat(nn.Module):
    """tinycnn.nn.Concat: concatenate the branches' outputs along channels (children "0", "1", ...)."""

    def __init__(self, *branches):
        super().__init__()
        for index, branch in enumerate(branches):
            self.add_module(str(index), branch)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.children()], dim=1)


class ChannelSplit(nn.Module):
    """tinycnn.nn.ChannelSplit with equal parts: branch i on channel chunk i, concatenated."""

    def __init__(self, *branches):
        super().__init__()
        for index, branch in enumerate(branches):
            self.add_module(str(index), branch)

    def forward(self, x):
        parts = x.chunk(len(self._modules), dim=1)
        return torch.cat([branch(part) for branch, part in zip(self.children(), parts)], dim=1)


def residual_se_block(channels, squeeze_channels):
    """conv3x3-BN-ReLU -> SE (hard-sigmoid gate) -> conv1x1-BN, plus the identity: a residual block with BN and SE."""
    return Residual(nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        SqueezeExcitation(channels, squeeze_channels, scale_activation=nn.Hardsigmoid),
        nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)))


def fire_block(in_channels, squeeze, expand):
    """SqueezeNet's fire module: squeeze 1x1 + ReLU, then concat(expand 1x1 + ReLU, expand 3x3 + ReLU)."""
    return nn.Sequential(nn.Conv2d(in_channels, squeeze, 1), nn.ReLU(),
                         Concat(nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU()),
                                nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())))


def shuffle_v2_block(channels):
    """ShuffleNetV2 stride-1 unit: half the channels pass, half go pw-BN-ReLU, dw-BN, pw-BN-ReLU; then shuffle."""
    half = channels // 2
    branch = nn.Sequential(nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
                           nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half),
                           nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
    return nn.Sequential(ChannelSplit(nn.Identity(), branch), nn.ChannelShuffle(2))


BUILDERS = {
    "SqueezeExcitation": SqueezeExcitation,
    "InvertedResidual": InvertedResidual,
    "ResidualSEBlock": residual_se_block,
    "FireBlock": fire_block,
    "ShuffleV2Block": shuffle_v2_block,
}


# ---------------------------------------------------------------------------- computing a case
def case_seed(name):
    """A stable per-case seed (adding a case does not change the others)."""
    return zlib.crc32(name.encode())


def build_torch_layer(spec):
    """The PyTorch layer of a case (class names map to ``torch.nn`` or to the mirrors above)."""
    kwargs = dict(spec["kwargs"])
    for key in ("activation", "scale_activation"):
        if key in kwargs:
            kwargs[key] = getattr(nn, kwargs[key])
    builder = BUILDERS.get(spec["layer"]) or getattr(nn, spec["layer"])
    return builder(*spec["args"], **kwargs)


def make_input(spec, rng):
    shape = spec["input_shape"]
    if spec["values"] == "integers":
        return rng.integers(-2, 3, shape).astype(np.float64)
    x = rng.standard_normal(shape)
    if spec["values"] == "kinks":
        x *= 4.0
        x.flat[:len(KINKS)] = KINKS
    return x


def _randomise_batch_norms(layer, generator):
    """Non-trivial BN state: weight in [0.5, 1.5], bias, running mean and var (in [0.5, 1.5])."""
    with torch.no_grad():
        for module in layer.modules():
            if isinstance(module, nn.BatchNorm2d):
                C = module.num_features
                if module.affine:
                    module.weight.copy_(0.5 + torch.rand(C, generator=generator, dtype=torch.float64))
                    module.bias.copy_(0.1 * torch.randn(C, generator=generator, dtype=torch.float64))
                module.running_mean.copy_(0.1 * torch.randn(C, generator=generator, dtype=torch.float64))
                module.running_var.copy_(0.5 + torch.rand(C, generator=generator, dtype=torch.float64))


def _float32_errors(layer, mode, x, grad_y, result):
    """PyTorch's own float32 run of the case against its float64 ``result``: ``{key: relative error}``.

    Gradients are measured against ``max(max|expected|, max|grad_y|)`` like the tests do (some are exactly
    zero in exact arithmetic, and both libraries return rounding noise there).
    """
    module = copy.deepcopy(layer).float().train(mode == "train")
    x_tensor = torch.from_numpy(x.astype(np.float32)).requires_grad_(True)
    y = module(x_tensor)
    y.backward(torch.from_numpy(grad_y.astype(np.float32)))
    floor = float(np.max(np.abs(grad_y)))
    errors = {"y": relative_error(y.detach().numpy(), result["y"])}
    gradients = {"grad_x": x_tensor.grad.numpy()}
    gradients.update({f"grad/{name}": parameter.grad.numpy() for name, parameter in module.named_parameters()})
    for key, value in gradients.items():
        scale = max(float(np.max(np.abs(result[key]), initial=0.0)), floor)
        errors[key] = float(np.max(np.abs(value.astype(np.float64) - result[key]), initial=0.0)) / scale
    return errors


def compute_case(spec):
    """Everything stored for one case, as ``{key: array}`` (keys relative to ``layers/<case>/``).

    When evaluation mode gives exactly the training-mode arrays (layers without batch norm or dropout),
    only the ``train/`` arrays are stored and the spec says ``"eval_equals_train": true``; the tests
    then check tinycnn's evaluation mode against the same arrays. This halves the file.
    """
    seed = case_seed(spec["name"])
    torch.manual_seed(seed)
    layer = build_torch_layer(spec).double()
    _randomise_batch_norms(layer, torch.Generator().manual_seed(seed))
    rng = np.random.default_rng(seed)
    x = make_input(spec, rng)
    arrays = {"x": x}
    arrays.update({f"state/{key}": value.detach().numpy().copy() for key, value in layer.state_dict().items()})
    results = {}
    grad_y = None
    for mode in spec["modes"]:
        module = copy.deepcopy(layer).train(mode == "train")
        x_tensor = torch.from_numpy(x.copy()).requires_grad_(True)
        y = module(x_tensor)
        if grad_y is None:
            grad_y = rng.standard_normal(tuple(y.shape))
            arrays["grad_y"] = grad_y
        y.backward(torch.from_numpy(grad_y))
        result = {"y": y.detach().numpy().copy(), "grad_x": x_tensor.grad.numpy().copy()}
        for name, parameter in module.named_parameters():
            result[f"grad/{name}"] = parameter.grad.numpy().copy()
        if mode == "train":        # running statistics after one training step (eval leaves them alone)
            for name, buffer in module.named_buffers():
                result[f"state/{name}"] = buffer.detach().numpy().copy()
        result["torch_float32_error"] = json.dumps(_float32_errors(layer, mode, x, grad_y, result))
        results[mode] = result
    eval_equals_train = set(results) == set(BOTH_MODES) and all(
        np.array_equal(value, results["train"][key]) for key, value in results["eval"].items())
    if eval_equals_train:
        del results["eval"]
    for mode, result in results.items():
        arrays.update({f"{mode}/{key}": value for key, value in result.items()})
    described = {key: spec[key] for key in ("layer", "args", "kwargs", "modes")}
    described["eval_equals_train"] = eval_equals_train
    arrays["spec"] = json.dumps(described)
    return arrays


def generate(out_dir):
    """Compute every case with PyTorch and write ``out_dir/layers.npz``; return ``[path]``."""
    arrays = {"meta/torch_version": torch.__version__, "meta/numpy_version": np.__version__}
    for spec in CASES:
        arrays.update({f"layers/{spec['name']}/{key}": value for key, value in compute_case(spec).items()})
    return [save_npz(out_dir / FILE_NAME, arrays)]
