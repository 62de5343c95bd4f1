"""An independent PyTorch SE-ResNet-18/50: torchvision's ResNet with SE blocks in the four places of the
SENet article (Hu et al., arXiv:1709.01507, Fig. 5, Table 14).

torchvision has no SE-ResNet. This file builds one from torchvision's own pieces, so the layout cannot
drift from torchvision's ResNet: ``torchvision.models.resnet.ResNet`` (stem, ``_make_layer``, FC and its
weight initialisation) with a block class derived from torchvision's ``BasicBlock`` / ``Bottleneck``
whose ``forward`` adds ``torchvision.ops.SqueezeExcitation`` (``fc1``/``fc2`` 1x1 convolutions with
bias, ReLU, sigmoid gate; ``C // r`` squeeze channels, at least 1). Only ``forward`` is written here;
everything else, autograd included, is PyTorch's.

The placements (the article's Sec. 6.5 wording in quotes):

* ``"standard"``: SE on the residual branch, before the summation: ``relu(se(F(x)) + shortcut(x))``;
* ``"pre"``: "the SE block is moved before the residual unit": ``relu(F(se(x)) + shortcut(x))``;
  the shortcut (identity or projection) still reads ``x``;
* ``"post"``: "moved after the summation with the identity branch (after ReLU)":
  ``se(relu(F(x) + shortcut(x)))``;
* ``"identity"``: "placed on the identity connection in parallel to the residual unit":
  ``relu(F(x) + se(shortcut(x)))``; with a projection shortcut, SE sees the projection's output.

The ``se`` module is registered after torchvision's own submodules, so state-dict keys are
torchvision's ResNet keys followed, per block, by ``se.fc1.weight, se.fc1.bias, se.fc2.weight,
se.fc2.bias`` -- the layout of ``tinycnn.models.se_resnet18/50``.

Usage (needs torch and torchvision)::

    from torch_reference_se_resnet import se_resnet50
    model = se_resnet50(num_classes=1000, reduction=16, se_position="pre")
"""
from model_fixtures import import_torchvision_models

SE_POSITIONS = ("standard", "pre", "post", "identity")


def _se_block_class(base, reduction, se_position):
    """A subclass of torchvision's ``base`` block (BasicBlock or Bottleneck) with an ``se`` module."""
    import torchvision.ops

    if se_position not in SE_POSITIONS:
        raise ValueError(f"se_position must be one of {SE_POSITIONS}; got {se_position!r}")

    class SEBlock(base):
        def __init__(self, inplanes, planes, *args, **kwargs):
            super().__init__(inplanes, planes, *args, **kwargs)
            channels = inplanes if se_position == "pre" else planes * base.expansion
            self.se = torchvision.ops.SqueezeExcitation(channels, max(1, channels // reduction))
            self.se_position = se_position

        def _branch(self, x):
            """torchvision's residual branch F(x), without the shortcut and the final ReLU."""
            out = self.relu(self.bn1(self.conv1(x)))
            if isinstance(self, torchvision.models.resnet.Bottleneck):
                out = self.relu(self.bn2(self.conv2(out)))
                return self.bn3(self.conv3(out))
            return self.bn2(self.conv2(out))

        def forward(self, x):
            branch = self._branch(self.se(x) if self.se_position == "pre" else x)
            if self.se_position == "standard":
                branch = self.se(branch)
            shortcut = x if self.downsample is None else self.downsample(x)
            if self.se_position == "identity":
                shortcut = self.se(shortcut)
            out = self.relu(branch + shortcut)
            if self.se_position == "post":
                out = self.se(out)
            return out

    SEBlock.__name__ = f"SE{base.__name__}"
    return SEBlock


def _se_resnet(base_name, layers, num_classes, reduction, se_position, **resnet_kwargs):
    tv_resnet = import_torchvision_models().resnet
    block = _se_block_class(getattr(tv_resnet, base_name), reduction, se_position)
    return tv_resnet.ResNet(block, layers, num_classes=num_classes, **resnet_kwargs)   # its init covers SE too


def se_resnet18(num_classes=1000, reduction=16, se_position="standard"):
    """SE-ResNet-18: torchvision's ResNet-18 layout (BasicBlock [2, 2, 2, 2]) plus one SE per block."""
    return _se_resnet("BasicBlock", [2, 2, 2, 2], num_classes, reduction, se_position)


def se_resnet50(num_classes=1000, reduction=16, se_position="standard"):
    """SE-ResNet-50 (SENet Table 1): torchvision's ResNet-50 (Bottleneck [3, 4, 6, 3]) plus one SE per block."""
    return _se_resnet("Bottleneck", [3, 4, 6, 3], num_classes, reduction, se_position)


def se_resnext50_32x4d(num_classes=1000, reduction=16, se_position="standard"):
    """SE-ResNeXt-50 32x4d (SENet Table 2): torchvision's ResNeXt-50 (``groups=32, width_per_group=4``)
    plus one SE per block."""
    return _se_resnet("Bottleneck", [3, 4, 6, 3], num_classes, reduction, se_position, groups=32,
                      width_per_group=4)
