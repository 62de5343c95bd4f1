"""PyTorch references for the models torchvision does not have: ShuffleNet V1 and GhostNet.

* ShuffleNet V1 (Zhang et al., arXiv:1707.01083) is written here from the paper, independently of
  ``tinycnn/models/shufflenet_v1.py`` (plain ``torch.nn``, autograd does the backward pass), with the
  same ``state_dict`` keys so that seeded weights load into both:

  - Table 1: stem conv 3x3 s2 (24) + BN + ReLU, max-pool 3x3 s2; Stages 2/3/4 with 4/8/4 units, the
    first of each with stride 2; stage output channels per groups g = 1: 144/288/576, 2: 200/400/800,
    3: 240/480/960, 4: 272/544/1088, 8: 384/768/1536; global average pool; fully connected.
  - Sec. 3.2, Fig. 2: unit = 1x1 group conv (bottleneck = out/4) + BN + ReLU -> channel shuffle ->
    3x3 depthwise conv + BN (no ReLU) -> 1x1 group conv + BN; stride 1: add the input, then ReLU;
    stride 2: concatenate a 3x3 average-pooled (stride 2) input and the branch (out - in channels),
    then ReLU. The first 1x1 conv of Stage 2 is not grouped. ``width_mult`` scales the stage widths
    (rounded half up to multiples of 4g).

* GhostNet (Han et al., arXiv:1911.11907) comes from timm's ``ghostnet_100`` family (the authors'
  reference code, adopted by timm), which tinycnn's ``ghostnet`` mirrors key for key. timm is optional:
  ``pip install --no-deps timm``; it imports torchvision, which needs
  ``model_fixtures.import_torchvision_models()`` first on this CPU-only PyTorch.
"""
import torch
from model_fixtures import import_torchvision_models
from torch import nn

SHUFFLENET_V1_STAGE_OUT = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                           4: (272, 544, 1088), 8: (384, 768, 1536)}


def channel_shuffle(x, groups):
    """(N, g*k, H, W) -> view (N, g, k, H, W) -> transpose -> (N, k*g, H, W)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups)


def conv_bn(in_ch, out_ch, kernel, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_ch)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ShuffleV1Unit(nn.Module):
    def __init__(self, in_ch, out_ch, stride, groups, first_grouped):
        super().__init__()
        self.stride = stride
        mid = out_ch // 4
        branch_out = out_ch - in_ch if stride == 2 else out_ch
        self.branch = nn.Sequential()
        self.branch.add_module("reduce", conv_bn(in_ch, mid, 1, groups=groups if first_grouped else 1))
        self.branch.add_module("shuffle", ChannelShuffle(groups))
        self.branch.add_module("depthwise", conv_bn(mid, mid, 3, stride, groups=mid, relu=False))
        self.branch.add_module("expand", conv_bn(mid, branch_out, 1, groups=groups, relu=False))

    def forward(self, x):
        out = self.branch(x)
        if self.stride == 2:
            return torch.relu(torch.cat([nn.functional.avg_pool2d(x, 3, 2, 1), out], dim=1))
        return torch.relu(x + out)


class ShuffleNetV1(nn.Module):
    def __init__(self, num_classes=1000, groups=3, width_mult=1.0):
        super().__init__()
        unit = 4 * groups
        widths = [max(unit, int(c * width_mult / unit + 0.5) * unit) for c in SHUFFLENET_V1_STAGE_OUT[groups]]
        self.conv1 = conv_bn(3, 24, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 24
        for index, (repeats, out_ch) in enumerate(zip((4, 8, 4), widths)):
            units = [ShuffleV1Unit(in_ch, out_ch, 2, groups, first_grouped=index > 0)]
            units += [ShuffleV1Unit(out_ch, out_ch, 1, groups, True) for _ in range(repeats - 1)]
            setattr(self, f"stage{index + 2}", nn.Sequential(*units))
            in_ch = out_ch
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def import_timm_ghostnet():
    """timm's ``timm.models.ghostnet`` module, or ``None`` if timm is not installed."""
    import_torchvision_models()           # timm imports torchvision: apply the CPU workaround first
    try:
        import timm.models.ghostnet as timm_ghostnet
    except ImportError:
        return None
    return timm_ghostnet


class ExactHardsigmoid(nn.Module):
    """``relu6(x + 3) / 6`` through autograd: the float64 derivative is exactly 1/6.

    PyTorch's own ``hardsigmoid`` backward multiplies by 1/6 rounded to float32 (0.16666667163...), even
    in float64: gradients through an SE gate come out 3.0e-8 (relative) off, above the fixtures' float64
    tolerance (1e-8). The forward values are identical.
    """

    def forward(self, x):
        return nn.functional.relu6(x + 3) / 6


def ghostnet(num_classes=1000, width_mult=1.0):
    """timm's GhostNet (``ghostnet_100`` at width 1.0; timm's ``width`` is our ``width_mult``), for comparisons.

    Two changes that leave the function and the ``state_dict`` unchanged: ``drop_rate=0.0`` (timm applies
    dropout with ``F.dropout``, not a module, so train-mode comparisons could not switch it off) and
    the SE gates replaced by :class:`ExactHardsigmoid`.
    """
    timm_ghostnet = import_timm_ghostnet()
    if timm_ghostnet is None:
        raise RuntimeError("the GhostNet reference is timm's: pip install --no-deps timm")
    model = timm_ghostnet._create_ghostnet("ghostnet_100", width=width_mult, num_classes=num_classes, drop_rate=0.0)
    for module in model.modules():
        if isinstance(getattr(module, "gate", None), nn.Hardsigmoid):
            module.gate = ExactHardsigmoid()
    return model
