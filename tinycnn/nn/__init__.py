"""``tinycnn.nn``: layers with hand-written backward passes, PyTorch's names and state-dict layout.

Every layer is a :class:`Module` with ``forward(x)`` (caches what it needs) and
``backward(grad_out) -> grad_x`` (adds parameter gradients into ``Parameter.grad``). Containers
(:class:`Sequential`, :class:`Residual`, :class:`Concat`, :class:`ChannelSplit`) chain the backward
passes; :class:`ShortcutBlock` is the base of every residual block of the model zoo; see
``tinycnn/nn/blocks.py`` for how branches split and sum gradients. Blocks of one model live in its file
(MobileNet V2's ``InvertedResidual``: ``tinycnn.models.mobilenet_v2``).

Randomness: one shared generator, ``tinycnn.nn.init.manual_seed(seed)`` (see ``tinycnn/nn/init.py``).
Precision: float32 by default; ``model.to(np.float64)`` / ``model.double()`` for gradient checks.
Inference: ``with nn.no_grad(): model(x)`` keeps nothing for backward and fuses convolution, batch norm
and ReLU/ReLU6 into one step (``tinycnn/nn/grad_mode.py``, ``tinycnn/nn/fusion.py``); ``nn.freeze(model)``
makes those decisions once, for a snapshot used only for inference (``tinycnn/nn/frozen.py``).
"""
from . import init
from .activation import Hardsigmoid, Hardswish, LeakyReLU, ReLU, ReLU6, Sigmoid, SiLU, Tanh
from .blocks import ChannelSplit, Concat, Conv2dNormActivation, Residual, ShortcutBlock
from .containers import ModuleList, Sequential, chain_backward, chain_forward
from .conv import Conv2d, ConvTranspose2d
from .deformable import DeformConv2d
from .frozen import (FrozenConvNormActivation, FrozenModel, FrozenSequential, FrozenShortcutBlock,
                     FrozenSqueezeExcitation, freeze)
from .grad_mode import is_grad_enabled, no_grad
from .linear import Linear
from .misc import ChannelShuffle, Dropout, Flatten, Identity, Upsample
from .module import Module, Parameter
from .norm import BatchNorm2d
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, MaxUnpool2d
from .se import SqueezeExcitation

__all__ = [
    "init", "no_grad", "is_grad_enabled", "freeze", "FrozenModel", "FrozenConvNormActivation",
    "FrozenSequential", "FrozenShortcutBlock", "FrozenSqueezeExcitation",
    "Module", "Parameter", "Sequential", "ModuleList", "chain_forward", "chain_backward",
    "Conv2d", "ConvTranspose2d", "BatchNorm2d", "Linear",
    "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Hardsigmoid", "Hardswish", "SiLU",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "Dropout", "Flatten", "Identity", "ChannelShuffle", "Upsample",
    "SqueezeExcitation",
    "MaxUnpool2d", "DeformConv2d", "Tanh",
    "ShortcutBlock", "Residual", "Concat", "ChannelSplit", "Conv2dNormActivation",
]
