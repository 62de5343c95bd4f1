"""ResNeXt-50 (32x4d) and SE-ResNeXt-50 (32x4d): ResNet-50 whose 3x3 convolutions are group convolutions.

ResNeXt (Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", arXiv:1611.05431)
replaces the Bottleneck's single 3x3 convolution by ``C = 32`` parallel paths of ``d = 4`` channels per
64 planes ("32x4d"), written as one group convolution with ``groups = 32``. Each stage's 3x3 becomes
twice as wide as ResNet-50's (128, 256, 512, 1024 channels) but, grouped, costs about the same, so the
network keeps ResNet-50's budget: 25.0M parameters and 4.2G MACs at 224 x 224 (the paper's Table 1:
25.0M, 4.2 GFLOPs -- its "FLOPs" are multiply-adds) against 25.6M and 4.1G.

SE-ResNeXt-50 (SENet, Hu et al., arXiv:1709.01507, Table 2) adds one squeeze-and-excitation block per
residual block exactly as SE-ResNet-50 does (same output channels, so the same 2,530,992 extra
parameters at ``r = 16``): 27.56M parameters (the article's 27.5M, 4.25 GFLOPs).

The blocks are :class:`tinycnn.models.resnet.Bottleneck` with ``groups`` and ``base_width``; the
state-dict keys, shapes and order of ``resnext50_32x4d`` are torchvision's.
"""
from ._registry import register_model
from .resnet import ResNet, _check_reduction, _check_se_position

__all__ = ["resnext50_32x4d", "se_resnext50_32x4d"]

CARDINALITY = 32          # paths per block (groups of the 3x3 convolution)
WIDTH_PER_GROUP = 4       # channels per path at 64 planes ("4d")


@register_model
def resnext50_32x4d(num_classes=1000, width_mult=1.0, in_channels=3):
    """ResNeXt-50 32x4d (arXiv:1611.05431, Table 1): 25,028,904 parameters (torchvision's).

    ``width_mult`` scales the planes of every stage (1.0 is the published network).
    """
    return ResNet(50, num_classes, width_mult, in_channels=in_channels, groups=CARDINALITY,
                  width_per_group=WIDTH_PER_GROUP)


@register_model
def se_resnext50_32x4d(num_classes=1000, reduction=16, se_position="standard", width_mult=1.0, in_channels=3):
    """SE-ResNeXt-50 32x4d (arXiv:1709.01507, Table 2): ResNeXt-50 with one SE block per residual block.

    With ``r = 16``: 27,559,896 parameters (the article's 27.5M); ``se_position`` as in
    :func:`tinycnn.models.se_resnet50`.
    """
    return ResNet(50, num_classes, width_mult, _check_reduction(reduction), _check_se_position(se_position),
                  in_channels=in_channels, groups=CARDINALITY, width_per_group=WIDTH_PER_GROUP)
