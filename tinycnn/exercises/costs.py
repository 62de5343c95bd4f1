"""Exercises on what a network costs: MACs, parameters, memory access, receptive field, blocks' costs,
add vs concatenate, where to put squeeze-and-excitation.

The references come from :func:`tinycnn.profile` on the real layers and models (MACs: multiply-
accumulates of convolutions and fully connected layers, the papers' "Mult-Adds"; parameters: every
weight, bias and batch-norm scale and shift); the solutions are the formulas a student writes.
"""
from .. import models, nn
from ..models import SE_POSITIONS, BasicBlock, Fire, GhostModule, InvertedResidual, SandglassBlock, ShuffleBlock
from ..profile import profile
from .checker import Exercise, Mistake, register

TOPIC = "costs"

# MobileNet V1, Table 1 of arXiv:1704.04861: (pointwise output channels, depthwise stride) of the 13 blocks,
# given to the students in the notebook (a test checks it against tinycnn.models.mobilenet_v1).
MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                       (512, 1), (512, 1), (1024, 2), (1024, 1)]


def _profiled(layers, input_shape):
    """(macs, params) of ``Sequential(*layers)`` on ``input_shape`` from the profiler."""
    report = profile(nn.Sequential(*layers), input_shape)
    return report.macs, report.params


# ----------------------------------------------------------------------------------- separable_cost
def separable_cost(in_channels, out_channels, kernel_size, height, width):
    """MACs and weights of a standard k x k convolution vs depthwise k x k + pointwise 1x1 (no biases)."""
    pixels = height * width                                     # output pixels
    standard_params = kernel_size * kernel_size * in_channels * out_channels
    depthwise_params = kernel_size * kernel_size * in_channels  # one k x k kernel per input channel
    pointwise_params = in_channels * out_channels
    standard_macs = standard_params * pixels                    # every weight is used once per output pixel
    separable_macs = (depthwise_params + pointwise_params) * pixels
    return {"standard_macs": standard_macs, "standard_params": standard_params,
            "separable_macs": separable_macs, "separable_params": depthwise_params + pointwise_params,
            "ratio": separable_macs / standard_macs}            # = 1/out_channels + 1/kernel_size**2


def _separable_reference(in_channels, out_channels, kernel_size, height, width):
    padding = kernel_size // 2                                  # odd kernels: output size = input size
    shape = (1, in_channels, height, width)
    standard_macs, standard_params = _profiled(
        [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)], shape)
    separable_macs, separable_params = _profiled(
        [nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels, bias=False),
         nn.Conv2d(in_channels, out_channels, 1, bias=False)], shape)
    return {"standard_macs": standard_macs, "standard_params": standard_params,
            "separable_macs": separable_macs, "separable_params": separable_params,
            "ratio": separable_macs / standard_macs}


def _separable_cases(rng):
    cases = [dict(in_channels=2, out_channels=4, kernel_size=3, height=2, width=2),
             dict(in_channels=128, out_channels=128, kernel_size=3, height=56, width=56)]   # VGG conv2_1-like
    for _ in range(5):
        cases.append(dict(in_channels=int(rng.integers(1, 65)), out_channels=int(rng.integers(1, 65)),
                          kernel_size=int(rng.choice([1, 3, 5, 7])), height=int(rng.integers(1, 29)),
                          width=int(rng.integers(1, 29))))
    return cases


def _scaled_separable(scale_macs=1, pointwise=True, depthwise_full=False, ratio=None):
    """A wrong variant of :func:`separable_cost` (see the hints below)."""
    def wrong(in_channels, out_channels, kernel_size, height, width):
        result = separable_cost(in_channels, out_channels, kernel_size, height, width)
        k2 = kernel_size * kernel_size
        depthwise = k2 * in_channels * (out_channels if depthwise_full else 1)
        result["separable_params"] = depthwise + (in_channels * out_channels if pointwise else 0)
        result["separable_macs"] = result["separable_params"] * height * width * scale_macs
        result["standard_macs"] *= scale_macs
        result["ratio"] = (ratio(in_channels, out_channels, kernel_size) if ratio else
                           result["separable_macs"] / result["standard_macs"])
        return result
    return wrong


register(Exercise(
    name="separable_cost", topic=TOPIC,
    statement="MACs and parameters of a standard vs a depthwise-separable convolution, and their ratio",
    signature=("separable_cost(in_channels, out_channels, kernel_size, height, width) -> dict with "
               "standard_macs, standard_params, separable_macs, separable_params, ratio   # height, width: output"),
    reference=_separable_reference, solution=separable_cost, make_cases=_separable_cases, output_name="cost",
    mistakes=(
        Mistake("you counted FLOPs (2 per multiply-add): the papers' Mult-Adds count one per y += w * x",
                _scaled_separable(scale_macs=2)),
        Mistake("you forgot the pointwise 1x1 convolution: separable = depthwise k x k + pointwise 1x1",
                _scaled_separable(pointwise=False)),
        Mistake("you costed the depthwise conv as a standard one (k*k*C_in*C_out): it has one k x k kernel per "
                "channel, k*k*C_in",
                _scaled_separable(depthwise_full=True)),
        Mistake("your ratio is upside down: it is separable / standard = 1/N + 1/k^2 (below 1)",
                _scaled_separable(ratio=lambda c_in, c_out, k: 1 / (1 / c_out + 1 / k ** 2))),
        Mistake("your ratio uses 1/k instead of 1/k^2: the depthwise kernel has k*k taps",
                _scaled_separable(ratio=lambda c_in, c_out, k: 1 / c_out + 1 / k)),
    )))


# ------------------------------------------------------------------------------ mobilenet_v1_cost
def mobilenet_v1_cost(width_mult=1.0, resolution=224, num_classes=1000):
    """(MACs, parameters) of MobileNet V1 at width alpha and input resolution, counted layer by layer."""
    size = (resolution - 1) // 2 + 1                         # stem: 3x3 conv, stride 2, padding 1
    channels = int(32 * width_mult)                          # alpha scales every channel count ...
    macs = 3 * 3 * 3 * channels * size * size                # ... but not the 3 input colours
    params = 3 * 3 * 3 * channels + 2 * channels             # conv weights + batch norm gamma and beta
    for block_channels, stride in MOBILENET_V1_BLOCKS:
        out_channels = int(block_channels * width_mult)
        size = (size - 1) // stride + 1                      # 3x3 depthwise, padding 1
        macs += 3 * 3 * channels * size * size + channels * out_channels * size * size
        params += 3 * 3 * channels + 2 * channels + channels * out_channels + 2 * out_channels
        channels = out_channels
    macs += channels * num_classes                           # global average pooling, then the FC layer
    params += channels * num_classes + num_classes
    return macs, params


def _mobilenet_v1_reference(width_mult=1.0, resolution=224, num_classes=1000):
    report = profile(models.get_model("mobilenet_v1", num_classes=num_classes, width_mult=width_mult),
                     (1, 3, resolution, resolution))
    return report.macs, report.params


def _mobilenet_v1_cases(rng):
    cases = [dict(width_mult=1.0, resolution=224, num_classes=1000), dict(width_mult=0.5, resolution=224,
                                                                          num_classes=1000),
             dict(width_mult=1.0, resolution=160, num_classes=1000)]
    for _ in range(2):
        cases.append(dict(width_mult=float(rng.choice([0.25, 0.5, 0.75, 1.0])),
                          resolution=int(32 * rng.integers(1, 8)), num_classes=int(rng.integers(2, 1001))))
    return cases


def _v1_batchnorm_params(width_mult):
    """Scale and shift of every batch norm: after the stem, and after each block's depthwise and pointwise conv."""
    channels = [int(32 * width_mult)] + [int(c * width_mult) for c, _ in MOBILENET_V1_BLOCKS]
    return 2 * (channels[0] + sum(channels[:-1]) + sum(channels[1:]))


def _wrong_v1(fc=True, bn=True, mac_factor=1, scale_colours=False):
    def wrong(width_mult=1.0, resolution=224, num_classes=1000):
        macs, params = mobilenet_v1_cost(width_mult, resolution, num_classes)
        channels, last = int(32 * width_mult), int(1024 * width_mult)
        size = (resolution - 1) // 2 + 1
        if not fc:
            macs, params = macs - last * num_classes, params - last * num_classes - num_classes
        if not bn:
            params -= _v1_batchnorm_params(width_mult)
        if scale_colours:
            extra = 27 * channels * (width_mult - 1)
            macs, params = macs + round(extra * size * size), params + round(extra)
        return macs * mac_factor, params
    return wrong


register(Exercise(
    name="mobilenet_v1_cost", topic=TOPIC,
    statement="MobileNet V1's MACs and parameters at width multiplier alpha and input resolution",
    signature="mobilenet_v1_cost(width_mult=1.0, resolution=224, num_classes=1000) -> (macs, params)",
    reference=_mobilenet_v1_reference, solution=mobilenet_v1_cost, make_cases=_mobilenet_v1_cases,
    output_name="(macs, params)",
    mistakes=(
        Mistake("you forgot the final fully connected layer (C x num_classes weights plus biases)", _wrong_v1(fc=False)),
        Mistake("you left out batch norm's parameters: each BN layer has a scale and a shift per channel",
                _wrong_v1(bn=False)),
        Mistake("you counted FLOPs (2 per multiply-add) instead of MACs", _wrong_v1(mac_factor=2)),
        Mistake("you scaled the 3 input colour channels by alpha: alpha scales the network's channels, not the image",
                _wrong_v1(scale_colours=True)),
    )))


# ----------------------------------------------------------------------------------- receptive_field
def receptive_field(layers):
    """Receptive field (in input pixels) of one output pixel after ``layers``, a list of (kernel, stride, dilation)."""
    field = 1        # one pixel sees itself
    jump = 1         # distance, in input pixels, between neighbouring positions of the current feature map
    for kernel, stride, dilation in layers:
        field += (kernel - 1) * dilation * jump     # each extra tap reaches dilation * jump input pixels further
        jump *= stride
    return field


def _receptive_field_cases(rng):
    cases = [dict(layers=[(3, 1, 1)]), dict(layers=[(3, 1, 1), (3, 1, 1)]), dict(layers=[(3, 2, 1), (3, 1, 1)]),
             dict(layers=[(3, 1, 2)]), dict(layers=[(7, 2, 1), (3, 2, 1), (3, 1, 1)]), dict(layers=[(1, 1, 1)])]
    for _ in range(8):
        depth = int(rng.integers(1, 9))
        cases.append(dict(layers=[(int(rng.choice([1, 2, 3, 5, 7])), int(rng.integers(1, 3)), int(rng.integers(1, 3)))
                                  for _ in range(depth)]))
    return cases


def _wrong_receptive_field(use_jump=True, stride_first=False, use_dilation=True):
    def wrong(layers):
        field, jump = 1, 1
        for kernel, stride, dilation in layers:
            if stride_first:
                jump *= stride
            field += (kernel - 1) * (dilation if use_dilation else 1) * (jump if use_jump else 1)
            if not stride_first:
                jump *= stride
        return field
    return wrong


def _receptive_field_reference(layers):
    """The profiler's receptive field (``tinycnn.receptive_field``) after a chain of these convolutions.

    Each convolution gets padding ``d(k-1)``, so no map ever becomes empty; padding moves the field but does
    not change its size."""
    convolutions = [nn.Conv2d(1, 1, kernel, stride=stride, padding=dilation * (kernel - 1), dilation=dilation)
                    for kernel, stride, dilation in layers]
    return profile(nn.Sequential(*convolutions), (1, 1, 1, 1)).receptive_field[0]


register(Exercise(
    name="receptive_field", topic=TOPIC,
    statement="receptive field of a stack of convolutions given as (kernel, stride, dilation) rows",
    signature="receptive_field(layers) -> int   # layers: list of (kernel, stride, dilation)",
    reference=_receptive_field_reference, solution=receptive_field, make_cases=_receptive_field_cases,
    output_name="field",
    mistakes=(
        Mistake("you added k - 1 per layer without the jump: after a stride-s layer each step of the next layer "
                "moves s input pixels (multiply by the product of the earlier strides)",
                _wrong_receptive_field(use_jump=False)),
        Mistake("you multiplied in a layer's own stride before adding its kernel: its stride only affects the "
                "layers after it",
                _wrong_receptive_field(stride_first=True)),
        Mistake("you forgot the dilation: a dilated kernel's taps are d pixels apart", _wrong_receptive_field(
            use_dilation=False)),
    )))


# --------------------------------------------------------------------------------- memory access cost
def memory_access_cost(height, width, in_channels, out_channels, groups=1):
    """ShuffleNet V2's memory access cost of a (grouped) 1x1 convolution: read input, write output, read weights."""
    feature_maps = height * width * (in_channels + out_channels)   # h*w*c1 read + h*w*c2 written
    weights = in_channels * out_channels // groups                 # each group: (c1/g) x (c2/g), g of them
    return feature_maps + weights


def _memory_access_reference(height, width, in_channels, out_channels, groups=1):
    """The profiler's ``memory_access`` column for the (grouped) 1x1 convolution."""
    report = profile(nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False),
                     (1, in_channels, height, width))
    return report.rows[0].memory_access


def _memory_access_cases(rng):
    cases = [dict(height=2, width=2, in_channels=4, out_channels=6, groups=1),
             dict(height=56, width=56, in_channels=128, out_channels=128, groups=4),
             dict(height=1, width=1, in_channels=6, out_channels=3, groups=3)]
    for _ in range(6):
        groups = int(rng.choice([1, 2, 3, 4, 8]))
        cases.append(dict(height=int(rng.integers(1, 57)), width=int(rng.integers(1, 57)),
                          in_channels=groups * int(rng.integers(1, 17)), out_channels=groups * int(rng.integers(1, 17)),
                          groups=groups))
    return cases


register(Exercise(
    name="memory_access_cost", topic=TOPIC,
    statement="ShuffleNet V2's memory access cost hw(c1 + c2) + c1*c2/g of a grouped 1x1 convolution",
    signature="memory_access_cost(height, width, in_channels, out_channels, groups=1) -> int",
    reference=_memory_access_reference, solution=memory_access_cost, make_cases=_memory_access_cases,
    output_name="mac",
    mistakes=(
        Mistake("you forgot to read the weights: add c1*c2/g", lambda height, width, in_channels, out_channels,
                groups=1: height * width * (in_channels + out_channels)),
        Mistake("you forgot that a grouped conv has 1/g of the weights: c1*c2/g",
                lambda height, width, in_channels, out_channels, groups=1:
                height * width * (in_channels + out_channels) + in_channels * out_channels),
        Mistake("you counted multiply-accumulates (FLOPs' B = hw*c1*c2/g), not memory accesses",
                lambda height, width, in_channels, out_channels, groups=1:
                height * width * in_channels * out_channels // groups),
        Mistake("you counted only the output feature map (and the weights): the input is read too",
                lambda height, width, in_channels, out_channels, groups=1:
                height * width * out_channels + in_channels * out_channels // groups),
    )))


# ------------------------------------------------------------------------------ classifier heads
def classifier_head_cost(channels, height, width, num_classes):
    """Parameters and MACs of an FC head on the flattened map vs global average pooling + FC."""
    fc_inputs = channels * height * width                      # flatten: every pixel of every channel
    return {"fc_params": fc_inputs * num_classes + num_classes, "fc_macs": fc_inputs * num_classes,
            "gap_params": channels * num_classes + num_classes,  # pooling has no weights
            "gap_macs": channels * num_classes}                  # averaging is adds, not multiply-adds


def _head_reference(channels, height, width, num_classes):
    shape = (1, channels, height, width)
    fc_macs, fc_params = _profiled([nn.Flatten(1), nn.Linear(channels * height * width, num_classes)], shape)
    gap_macs, gap_params = _profiled([nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, num_classes)],
                                     shape)
    return {"fc_params": fc_params, "fc_macs": fc_macs, "gap_params": gap_params, "gap_macs": gap_macs}


def _head_cases(rng):
    cases = [dict(channels=2, height=2, width=2, num_classes=3), dict(channels=64, height=7, width=7, num_classes=10)]
    for _ in range(4):
        cases.append(dict(channels=int(rng.integers(1, 129)), height=int(rng.integers(1, 8)),
                          width=int(rng.integers(1, 8)), num_classes=int(rng.integers(2, 101))))
    return cases


def _wrong_head(bias=True, gap_per_pixel=False, pooling_macs=False):
    def wrong(channels, height, width, num_classes):
        result = classifier_head_cost(channels, height, width, num_classes)
        if not bias:
            result["fc_params"] -= num_classes
            result["gap_params"] -= num_classes
        if gap_per_pixel:
            result["gap_macs"] *= height * width
        if pooling_macs:
            result["gap_macs"] += channels * height * width
        return result
    return wrong


register(Exercise(
    name="classifier_head_cost", topic=TOPIC,
    statement="parameters and MACs of a fully connected head vs global average pooling + FC",
    signature="classifier_head_cost(channels, height, width, num_classes) -> dict with fc_params, fc_macs, "
              "gap_params, gap_macs",
    reference=_head_reference, solution=classifier_head_cost, make_cases=_head_cases, output_name="cost",
    mistakes=(
        Mistake("you forgot the biases: a linear layer has num_classes of them", _wrong_head(bias=False)),
        Mistake("after global average pooling the FC sees C numbers, not C*H*W: its MACs are C*num_classes",
                _wrong_head(gap_per_pixel=True)),
        Mistake("you counted the pooling's additions as MACs: MACs count only the products of conv and FC layers",
                _wrong_head(pooling_macs=True)),
    )))


# --------------------------------------------------------------------- inverted residual, sandglass
def inverted_residual_macs(in_channels, out_channels, expansion, stride, height, width):
    """MACs of MobileNet V2's inverted residual: 1x1 expand (if t > 1), 3x3 depthwise (stride s), 1x1 project."""
    hidden = in_channels * expansion
    out_height, out_width = (height - 1) // stride + 1, (width - 1) // stride + 1    # 3x3, padding 1
    expand = in_channels * hidden * height * width if expansion != 1 else 0        # t = 1 has no expand conv
    depthwise = 3 * 3 * hidden * out_height * out_width
    project = hidden * out_channels * out_height * out_width
    return expand + depthwise + project


def _inverted_residual_reference(in_channels, out_channels, expansion, stride, height, width):
    return _profiled([InvertedResidual(in_channels, out_channels, stride, expansion)],
                     (1, in_channels, height, width))[0]


def _block_cases(rng, ratio_name):
    cases = [{"in_channels": 4, "out_channels": 4, ratio_name: 2, "stride": 1, "height": 2, "width": 2},
             {"in_channels": 8, "out_channels": 16, ratio_name: 2, "stride": 2, "height": 5, "width": 6},
             {"in_channels": 24, "out_channels": 24, ratio_name: 6, "stride": 1, "height": 56, "width": 56}]
    for _ in range(5):
        ratio = int(rng.choice([1, 2, 3, 4, 6]))
        in_channels = ratio * int(rng.integers(1, 9))
        out_channels = int(rng.integers(1, 6 * (in_channels // ratio) + 1))   # keeps the sandglass bottleneck C/t
        cases.append({"in_channels": in_channels, "out_channels": out_channels, ratio_name: ratio,
                      "stride": int(rng.integers(1, 3)), "height": int(rng.integers(1, 30)),
                      "width": int(rng.integers(1, 30))})
    return cases


def _wrong_inverted(forget_stride=False, always_expand=False, depthwise_dense=False, mac_factor=1):
    def wrong(in_channels, out_channels, expansion, stride, height, width):
        hidden = in_channels * expansion
        out_height, out_width = (height - 1) // stride + 1, (width - 1) // stride + 1
        if forget_stride:
            out_height, out_width = height, width
        expand = in_channels * hidden * height * width if (expansion != 1 or always_expand) else 0
        depthwise = 3 * 3 * hidden * (hidden if depthwise_dense else 1) * out_height * out_width
        return mac_factor * (expand + depthwise + hidden * out_channels * out_height * out_width)
    return wrong


register(Exercise(
    name="inverted_residual_macs", topic=TOPIC,
    statement="MACs of a MobileNet V2 inverted residual block (expand, depthwise, project)",
    signature="inverted_residual_macs(in_channels, out_channels, expansion, stride, height, width) -> int",
    reference=_inverted_residual_reference, solution=inverted_residual_macs,
    make_cases=lambda rng: _block_cases(rng, "expansion"), output_name="macs",
    mistakes=(
        Mistake("you costed the depthwise and project convs at the input resolution: the depthwise conv has the "
                "stride, so both run on (H-1)//s + 1 x (W-1)//s + 1", _wrong_inverted(forget_stride=True)),
        Mistake("you counted an expand conv for t = 1: with expansion 1 the block starts at the depthwise conv",
                _wrong_inverted(always_expand=True)),
        Mistake("you costed the depthwise conv as a standard 3x3 conv (9*C*C per pixel): it is 9*C",
                _wrong_inverted(depthwise_dense=True)),
        Mistake("you counted FLOPs (2 per multiply-add) instead of MACs", _wrong_inverted(mac_factor=2)),
    )))


def sandglass_macs(in_channels, out_channels, reduction, stride, height, width):
    """MACs of MobileNeXt's sandglass block: 3x3 dw, 1x1 reduce to C/t, 1x1 expand, 3x3 dw with the stride."""
    reduced = in_channels // reduction
    out_height, out_width = (height - 1) // stride + 1, (width - 1) // stride + 1
    depthwise_in = 3 * 3 * in_channels * height * width         # at the input resolution, stride 1
    reduce = in_channels * reduced * height * width
    expand = reduced * out_channels * height * width
    depthwise_out = 3 * 3 * out_channels * out_height * out_width   # the only strided conv
    return depthwise_in + reduce + expand + depthwise_out


def _sandglass_reference(in_channels, out_channels, reduction, stride, height, width):
    return _profiled([SandglassBlock(in_channels, out_channels, stride, reduction)],
                     (1, in_channels, height, width))[0]


def _wrong_sandglass(stride_everywhere=False, reduce_full=False, mac_factor=1):
    def wrong(in_channels, out_channels, reduction, stride, height, width):
        if stride_everywhere:
            height, width = (height - 1) // stride + 1, (width - 1) // stride + 1
            stride = 1
        macs = sandglass_macs(in_channels, out_channels, reduction, stride, height, width)
        if reduce_full:
            macs += (in_channels - in_channels // reduction) * (in_channels + out_channels) * height * width
        return mac_factor * macs
    return wrong


register(Exercise(
    name="sandglass_macs", topic=TOPIC,
    statement="MACs of a MobileNeXt sandglass block (dw, reduce, expand, strided dw)",
    signature="sandglass_macs(in_channels, out_channels, reduction, stride, height, width) -> int",
    reference=_sandglass_reference, solution=sandglass_macs, make_cases=lambda rng: _block_cases(rng, "reduction"),
    output_name="macs",
    mistakes=(
        Mistake("you applied the stride at the start: only the last depthwise conv is strided, the first three "
                "layers run at the input resolution", _wrong_sandglass(stride_everywhere=True)),
        Mistake("you forgot the bottleneck: the 1x1 reduce goes to C_in / t channels",
                _wrong_sandglass(reduce_full=True)),
        Mistake("you counted FLOPs (2 per multiply-add) instead of MACs", _wrong_sandglass(mac_factor=2)),
    )))


# --------------------------------------------------------------------- grouped conv, fire, ghost
def grouped_conv_cost(in_channels, out_channels, kernel_size, groups, height, width):
    """(MACs, weights) of a k x k convolution with ``groups`` groups: 1/groups of a standard one (no bias)."""
    params = kernel_size * kernel_size * (in_channels // groups) * out_channels   # each filter sees C_in/g channels
    return params * height * width, params                                       # height, width: output size


def _grouped_reference(in_channels, out_channels, kernel_size, groups, height, width):
    return _profiled([nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups,
                                bias=False)], (1, in_channels, height, width))


def _grouped_cases(rng):
    cases = [dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, height=2, width=2),
             dict(in_channels=240, out_channels=240, kernel_size=1, groups=3, height=28, width=28)]  # ShuffleNet g=3
    for _ in range(5):
        groups = int(rng.choice([1, 2, 3, 4, 8]))
        cases.append(dict(in_channels=groups * int(rng.integers(1, 9)), out_channels=groups * int(rng.integers(1, 9)),
                          kernel_size=int(rng.choice([1, 3, 5])), groups=groups, height=int(rng.integers(1, 17)),
                          width=int(rng.integers(1, 17))))
    return cases


register(Exercise(
    name="grouped_conv_cost", topic=TOPIC,
    statement="MACs and weights of a grouped convolution (1/g of a standard one)",
    signature="grouped_conv_cost(in_channels, out_channels, kernel_size, groups, height, width) -> (macs, params)",
    reference=_grouped_reference, solution=grouped_conv_cost, make_cases=_grouped_cases,
    output_name="(macs, params)",
    mistakes=(
        Mistake("you forgot the groups: each filter only sees C_in / g input channels, so divide by g",
                lambda in_channels, out_channels, kernel_size, groups, height, width:
                grouped_conv_cost(in_channels, out_channels, kernel_size, 1, height, width)),
        Mistake("you divided by g twice: g groups of (C_in/g) x (C_out/g) filters give k*k*C_in*C_out/g weights",
                lambda in_channels, out_channels, kernel_size, groups, height, width:
                tuple(value // groups for value in grouped_conv_cost(in_channels, out_channels, kernel_size, groups,
                                                                     height, width))),
        Mistake("you counted FLOPs (2 per multiply-add) instead of MACs",
                lambda in_channels, out_channels, kernel_size, groups, height, width:
                (2 * grouped_conv_cost(in_channels, out_channels, kernel_size, groups, height, width)[0],
                 grouped_conv_cost(in_channels, out_channels, kernel_size, groups, height, width)[1])),
    )))


def fire_module_params(in_channels, squeeze, expand1x1, expand3x3):
    """Parameters of SqueezeNet's fire module: 1x1 squeeze, then 1x1 and 3x3 expand convs (with biases)."""
    squeeze_params = in_channels * squeeze + squeeze
    expand1x1_params = squeeze * expand1x1 + expand1x1      # both expand convs read the squeezed maps
    expand3x3_params = 3 * 3 * squeeze * expand3x3 + expand3x3
    return squeeze_params + expand1x1_params + expand3x3_params


def _fire_cases(rng):
    cases = [dict(in_channels=4, squeeze=2, expand1x1=3, expand3x3=3),
             dict(in_channels=96, squeeze=16, expand1x1=64, expand3x3=64)]                # SqueezeNet fire2
    for _ in range(5):
        cases.append(dict(in_channels=int(rng.integers(1, 513)), squeeze=int(rng.integers(1, 65)),
                          expand1x1=int(rng.integers(1, 257)), expand3x3=int(rng.integers(1, 257))))
    return cases


register(Exercise(
    name="fire_module_params", topic=TOPIC,
    statement="parameters of SqueezeNet's fire module (squeeze 1x1, expand 1x1 + 3x3)",
    signature="fire_module_params(in_channels, squeeze, expand1x1, expand3x3) -> int",
    reference=lambda in_channels, squeeze, expand1x1, expand3x3:
        _profiled([Fire(in_channels, squeeze, expand1x1, expand3x3)], (1, in_channels, 4, 4))[1],
    solution=fire_module_params, make_cases=_fire_cases, output_name="params",
    mistakes=(
        Mistake("you forgot the biases: SqueezeNet's convolutions have one per output channel",
                lambda in_channels, squeeze, expand1x1, expand3x3:
                in_channels * squeeze + squeeze * expand1x1 + 9 * squeeze * expand3x3),
        Mistake("you fed the expand convs the module's input: they read the squeezed maps (S channels), which is "
                "the point of the squeeze", lambda in_channels, squeeze, expand1x1, expand3x3:
                fire_module_params(in_channels, squeeze, 0, 0) + in_channels * expand1x1 + expand1x1
                + 9 * in_channels * expand3x3 + expand3x3),
        Mistake("you counted the 3x3 expand conv as 1x1: it has 3*3*S weights per output channel",
                lambda in_channels, squeeze, expand1x1, expand3x3:
                fire_module_params(in_channels, squeeze, expand1x1 + expand3x3, 0)),
    )))


def ghost_module_macs(in_channels, out_channels, height, width, ratio=2, dw_size=3):
    """MACs of GhostNet's ghost module: a 1x1 conv makes ceil(C_out/ratio) maps, a cheap depthwise conv the rest."""
    intrinsic = -(-out_channels // ratio)                    # ceil(C_out / ratio) intrinsic maps
    ghosts = intrinsic * (ratio - 1)                         # each intrinsic map makes ratio - 1 ghosts
    primary = in_channels * intrinsic * height * width       # ordinary 1x1 convolution
    cheap = dw_size * dw_size * ghosts * height * width      # depthwise: one dw_size x dw_size kernel per ghost
    return primary + cheap


def _ghost_cases(rng):
    cases = [dict(in_channels=4, out_channels=6, height=2, width=2),
             dict(in_channels=16, out_channels=7, height=3, width=3, ratio=2, dw_size=3),
             dict(in_channels=24, out_channels=72, height=56, width=56, ratio=3, dw_size=5)]
    for _ in range(5):
        cases.append(dict(in_channels=int(rng.integers(1, 65)), out_channels=int(rng.integers(1, 65)),
                          height=int(rng.integers(1, 29)), width=int(rng.integers(1, 29)),
                          ratio=int(rng.integers(2, 5)), dw_size=int(rng.choice([1, 3, 5]))))
    return cases


def _wrong_ghost(dense_cheap=False, floor=False, ghosts_all=False):
    def wrong(in_channels, out_channels, height, width, ratio=2, dw_size=3):
        intrinsic = out_channels // ratio if floor else -(-out_channels // ratio)
        ghosts = out_channels if ghosts_all else intrinsic * (ratio - 1)
        per_ghost = dw_size * dw_size * (intrinsic if dense_cheap else 1)
        return (in_channels * intrinsic + per_ghost * ghosts) * height * width
    return wrong


register(Exercise(
    name="ghost_module_macs", topic=TOPIC,
    statement="MACs of GhostNet's ghost module (1x1 conv for C/ratio maps, cheap depthwise conv for the ghosts)",
    signature="ghost_module_macs(in_channels, out_channels, height, width, ratio=2, dw_size=3) -> int",
    reference=lambda in_channels, out_channels, height, width, ratio=2, dw_size=3: _profiled(
        [GhostModule(in_channels, out_channels, ratio, dw_size)], (1, in_channels, height, width))[0],
    solution=ghost_module_macs, make_cases=_ghost_cases, output_name="macs",
    mistakes=(
        Mistake("you costed the cheap operation as an ordinary convolution: it is depthwise, each ghost map is "
                "made from one intrinsic map", _wrong_ghost(dense_cheap=True)),
        Mistake("you rounded C_out / ratio down: the module makes ceil(C_out / ratio) intrinsic maps (and drops "
                "the extra ghosts)", _wrong_ghost(floor=True)),
        Mistake("you made C_out ghosts: the cheap operation makes (ratio - 1) * ceil(C_out / ratio) maps, the "
                "rest are the intrinsic ones", _wrong_ghost(ghosts_all=True)),
    )))


# ------------------------------------------------------------------------------- add vs concatenate
def merge_cost(channels, height, width, next_channels):
    """Two branches of ``channels`` maps (height x width) merged by an add or by a concatenation, then a
    1x1 convolution to ``next_channels``: what each merge costs itself and what it costs the next layer."""
    elements = channels * height * width                         # one branch's output
    return {"add_channels": channels,                            # element-wise: the width stays C
            "add_flops": elements,                               # one addition per output element
            "add_memory_access": 3 * elements,                   # read both operands, write the sum
            "concat_channels": 2 * channels,                     # stacked: the width doubles, no arithmetic
            "next_macs_after_add": channels * next_channels * height * width,
            "next_macs_after_concat": 2 * channels * next_channels * height * width}


def _merge_reference(channels, height, width, next_channels):
    """Profiled ``Residual(conv 1x1) -> conv 1x1`` and ``Concat(Identity, conv 1x1) -> conv 1x1``."""
    shape = (1, channels, height, width)
    added = profile(nn.Sequential(nn.Residual(nn.Conv2d(channels, channels, 1, bias=False)),
                                  nn.Conv2d(channels, next_channels, 1, bias=False)), shape)
    stacked = profile(nn.Sequential(nn.Concat(nn.Identity(), nn.Conv2d(channels, channels, 1, bias=False)),
                                    nn.Conv2d(2 * channels, next_channels, 1, bias=False)), shape)
    add = next(row for row in added.rows if row.kind == "add")
    after_add, after_concat = added.rows[-1], stacked.rows[-1]                 # the next 1x1 convolution
    return {"add_channels": after_add.input_shape[1], "add_flops": add.flops,
            "add_memory_access": add.memory_access, "concat_channels": after_concat.input_shape[1],
            "next_macs_after_add": after_add.macs, "next_macs_after_concat": after_concat.macs}


def _merge_cases(rng):
    cases = [dict(channels=2, height=2, width=2, next_channels=3),
             dict(channels=58, height=28, width=28, next_channels=116),      # ShuffleNet V2 1x, stage 3
             dict(channels=1, height=1, width=1, next_channels=1)]
    for _ in range(5):
        cases.append(dict(channels=int(rng.integers(1, 129)), height=int(rng.integers(1, 57)),
                          width=int(rng.integers(1, 57)), next_channels=int(rng.integers(1, 129))))
    return cases


def _wrong_merge(add_widens=False, concat_keeps=False, add_free=False, add_reads_only=False, add_per_operand=False):
    """:func:`merge_cost` with one wrong idea (see the hints)."""
    def wrong(channels, height, width, next_channels):
        result = merge_cost(channels, height, width, next_channels)
        elements = channels * height * width
        if add_widens:
            result["add_channels"], result["next_macs_after_add"] = 2 * channels, result["next_macs_after_concat"]
        if concat_keeps:
            result["concat_channels"], result["next_macs_after_concat"] = channels, result["next_macs_after_add"]
        if add_free:
            result["add_flops"] = result["add_memory_access"] = 0
        if add_reads_only:
            result["add_memory_access"] = 2 * elements
        if add_per_operand:
            result["add_flops"] = 2 * elements
        return result
    return wrong


register(Exercise(
    name="merge_cost", topic=TOPIC,
    statement="add vs concatenate two branches: channels, FLOPs and memory access, and the next 1x1 conv's MACs",
    signature="merge_cost(channels, height, width, next_channels) -> dict with add_channels, add_flops, "
              "add_memory_access, concat_channels, next_macs_after_add, next_macs_after_concat",
    reference=_merge_reference, solution=merge_cost, make_cases=_merge_cases, output_name="cost",
    mistakes=(
        Mistake("an element-wise add keeps C channels: only a concatenation stacks the two branches into 2C",
                _wrong_merge(add_widens=True)),
        Mistake("a concatenation stacks the two branches: 2C channels, so the next 1x1 conv reads twice as many "
                "and costs 2C * C_next * H * W MACs", _wrong_merge(concat_keeps=True)),
        Mistake("an element-wise add is not free (ShuffleNet V2's guideline G4): C*H*W additions, and it reads "
                "two operands and writes the sum, 3*C*H*W memory accesses", _wrong_merge(add_free=True)),
        Mistake("you forgot that the add writes its result: it reads 2*C*H*W elements and writes C*H*W, "
                "3*C*H*W memory accesses", _wrong_merge(add_reads_only=True)),
        Mistake("an add of two C x H x W maps is one addition per output element, C*H*W, not one per operand",
                _wrong_merge(add_per_operand=True)),
    )))


# ------------------------------------------------------------------------------------ SE placements
def se_placement_cost(in_channels, out_channels, stride, height, width, reduction=16, position="standard"):
    """Parameters, MACs and channel-scaling multiplies of the SE block in a ResNet basic block, for each of the
    SENet article's placements: "standard" (on the branch), "pre" (before it), "post" (after the add),
    "identity" (on the shortcut)."""
    channels = in_channels if position == "pre" else out_channels     # SE-PRE recalibrates the block's input
    squeezed = max(1, channels // reduction)                          # at least one channel in the middle
    params = channels * squeezed + squeezed + squeezed * channels + channels   # two FCs with biases
    if position == "pre":
        pixels = height * width                                       # before the strided convolution
    else:
        pixels = ((height - 1) // stride + 1) * ((width - 1) // stride + 1)    # at the block's output size
    return {"params": params, "macs": 2 * channels * squeezed,        # the FCs: C*C/r + C/r*C products
            "scale_multiplies": channels * pixels}                    # one multiply per scaled element


def _se_placement_reference(in_channels, out_channels, stride, height, width, reduction=16, position="standard"):
    """The ``se`` part of a profiled ``tinycnn.models.BasicBlock`` (ResNet's) with this placement."""
    report = profile(BasicBlock(in_channels, out_channels, stride, reduction, position),
                     (1, in_channels, height, width))
    se = report.totals_under("se")
    return {"params": se.params, "macs": se.macs,
            "scale_multiplies": next(row.flops for row in report.rows if row.kind == "se scale")}


def _se_placement_cases(rng):
    cases = [dict(in_channels=32, out_channels=32, stride=1, height=4, width=4, reduction=16, position="standard"),
             dict(in_channels=16, out_channels=32, stride=2, height=4, width=4, reduction=8, position="pre"),
             dict(in_channels=16, out_channels=32, stride=2, height=5, width=3, reduction=8, position="identity"),
             dict(in_channels=8, out_channels=8, stride=1, height=2, width=2, reduction=16, position="post")]
    for position in SE_POSITIONS * 2:
        stride = int(rng.integers(1, 3))
        in_channels = int(rng.integers(1, 49))
        out_channels = in_channels if rng.random() < 0.3 else int(rng.integers(1, 49))
        cases.append(dict(in_channels=in_channels, out_channels=out_channels, stride=stride,
                          height=int(rng.integers(1, 15)), width=int(rng.integers(1, 15)),
                          reduction=int(rng.choice([2, 4, 8, 16])), position=position))
    return cases


def _wrong_se_placement(pre_output_channels=False, pre_output_size=False, ignore_stride=False, biases=True,
                        at_least_one=True):
    """:func:`se_placement_cost` with one wrong idea (see the hints)."""
    def wrong(in_channels, out_channels, stride, height, width, reduction=16, position="standard"):
        pre = position == "pre"
        channels = in_channels if pre and not pre_output_channels else out_channels
        squeezed = max(1, channels // reduction) if at_least_one else channels // reduction
        out_pixels = ((height - 1) // stride + 1) * ((width - 1) // stride + 1)
        pixels = out_pixels if (pre and pre_output_size) or not (pre or ignore_stride) else height * width
        return {"params": 2 * channels * squeezed + (squeezed + channels if biases else 0),
                "macs": 2 * channels * squeezed, "scale_multiplies": channels * pixels}
    return wrong


register(Exercise(
    name="se_placement_cost", topic=TOPIC,
    statement="parameters, MACs and scaling multiplies of SE in the four placements of the SENet article",
    signature="se_placement_cost(in_channels, out_channels, stride, height, width, reduction=16, "
              "position='standard') -> dict with params, macs, scale_multiplies   # position: standard, pre, "
              "post or identity",
    reference=_se_placement_reference, solution=se_placement_cost, make_cases=_se_placement_cases,
    output_name="cost",
    mistakes=(
        Mistake("SE-PRE sits before the residual branch: it recalibrates the block's input, C_in channels, "
                "not C_out", _wrong_se_placement(pre_output_channels=True)),
        Mistake("SE-PRE scales the block's input, before the strided convolution: H x W pixels, not the "
                "output's", _wrong_se_placement(pre_output_size=True)),
        Mistake("the standard, post and identity placements scale a map at the block's output resolution, "
                "(H-1)//s + 1 x (W-1)//s + 1: you forgot the stride", _wrong_se_placement(ignore_stride=True)),
        Mistake("you forgot the biases of the two fully connected layers: C/r and C",
                _wrong_se_placement(biases=False)),
        Mistake("with C < r, C // r is 0: an SE block keeps at least one channel in the middle, max(1, C // r)",
                _wrong_se_placement(at_least_one=False)),
    )))


# ------------------------------------------------------------------------------- ShuffleNet V1 unit
def shufflenet_v1_unit_macs(in_channels, out_channels, groups, stride, height, width, group_reduce=True):
    """MACs of a ShuffleNet V1 unit: grouped 1x1 reduce to C_out/4, shuffle, 3x3 depthwise (stride s), grouped 1x1
    expand; stride 1 adds the input, stride 2 concatenates a 3x3 average-pooled input (no MACs)."""
    bottleneck = out_channels // 4                                    # a quarter of the output channels
    branch = out_channels - in_channels if stride == 2 else out_channels   # the concat brings the other C_in
    out_height, out_width = (height - 1) // stride + 1, (width - 1) // stride + 1
    reduce_groups = groups if group_reduce else 1                      # stage 2's first 1x1 is not grouped
    reduce = in_channels * bottleneck // reduce_groups * height * width     # before the stride: H x W
    depthwise = 3 * 3 * bottleneck * out_height * out_width
    expand = bottleneck * branch // groups * out_height * out_width
    return reduce + depthwise + expand


def _shufflenet_v1_unit_cases(rng):
    cases = [dict(in_channels=8, out_channels=8, groups=2, stride=1, height=2, width=2, group_reduce=True),
             dict(in_channels=24, out_channels=240, groups=3, stride=2, height=56, width=56, group_reduce=False),
             dict(in_channels=240, out_channels=240, groups=3, stride=1, height=28, width=28, group_reduce=True),
             dict(in_channels=240, out_channels=480, groups=3, stride=2, height=28, width=28, group_reduce=True)]
    while len(cases) < 9:
        groups = int(rng.choice([1, 2, 3, 4, 8]))
        out_channels = 4 * groups * int(rng.integers(1, 5))
        stride = int(rng.integers(1, 3))
        in_channels = out_channels if stride == 1 else groups * int(rng.integers(1, out_channels // groups))
        if in_channels >= out_channels and stride == 2:
            continue
        cases.append(dict(in_channels=in_channels, out_channels=out_channels, groups=groups, stride=stride,
                          height=int(rng.integers(1, 15)), width=int(rng.integers(1, 15)),
                          group_reduce=bool(rng.random() < 0.7)))
    return cases


def _wrong_v1_unit(branch_full=False, always_group=False, dense=False, reduce_strided=False, pool_macs=False,
                   bottleneck_from_input=False):
    """:func:`shufflenet_v1_unit_macs` with one wrong idea (see the hints)."""
    def wrong(in_channels, out_channels, groups, stride, height, width, group_reduce=True):
        bottleneck = (in_channels if bottleneck_from_input else out_channels) // 4
        branch = out_channels - in_channels if stride == 2 and not branch_full else out_channels
        out_height, out_width = (height - 1) // stride + 1, (width - 1) // stride + 1
        expand_groups = 1 if dense else groups
        reduce_groups = 1 if dense or not (group_reduce or always_group) else groups
        reduce_pixels = out_height * out_width if reduce_strided else height * width
        macs = (in_channels * bottleneck // reduce_groups * reduce_pixels + 9 * bottleneck * out_height * out_width
                + bottleneck * branch // expand_groups * out_height * out_width)
        return macs + (9 * in_channels * out_height * out_width if pool_macs and stride == 2 else 0)
    return wrong


register(Exercise(
    name="shufflenet_v1_unit_macs", topic=TOPIC,
    statement="MACs of a ShuffleNet V1 unit (grouped 1x1, shuffle, depthwise 3x3, grouped 1x1; add or concat)",
    signature="shufflenet_v1_unit_macs(in_channels, out_channels, groups, stride, height, width, group_reduce=True) "
              "-> int",
    reference=lambda in_channels, out_channels, groups, stride, height, width, group_reduce=True: _profiled(
        [ShuffleBlock(in_channels, out_channels, stride, groups, group_reduce)], (1, in_channels, height, width))[0],
    solution=shufflenet_v1_unit_macs, make_cases=_shufflenet_v1_unit_cases, output_name="macs",
    mistakes=(
        Mistake("at stride 2 the branch makes only C_out - C_in channels: the average-pooled input, concatenated, "
                "supplies the other C_in", _wrong_v1_unit(branch_full=True)),
        Mistake("you grouped the first 1x1 convolution of stage 2 (group_reduce=False): its input is too thin to "
                "split, it is an ordinary 1x1 convolution", _wrong_v1_unit(always_group=True)),
        Mistake("you forgot the groups of the 1x1 convolutions: a 1x1 GConv with g groups costs 1/g of a dense one",
                _wrong_v1_unit(dense=True)),
        Mistake("you costed the first 1x1 convolution at the output resolution: only the depthwise conv has the "
                "stride, the reduce conv runs on the H x W input", _wrong_v1_unit(reduce_strided=True)),
        Mistake("you counted the 3x3 average pooling of the stride-2 shortcut as MACs: pooling has no "
                "multiply-adds", _wrong_v1_unit(pool_macs=True)),
        Mistake("the bottleneck is a quarter of the unit's *output* channels, C_out / 4, not of its input",
                _wrong_v1_unit(bottleneck_from_input=True)),
    )))
