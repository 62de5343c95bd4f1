"""Branches and shortcuts: how to write blocks whose data flow is not a single chain.

Without autograd, a block that uses its input more than once must route gradients by hand. Two rules
of the chain rule cover every lightweight CNN:

1. **A fork sums gradients.** If ``x`` feeds two branches, ``y = f(x) + g(x)`` (a residual add) or
   ``y = concat(f(x), g(x))``, then ``dL/dx = f.backward(.) + g.backward(.)``.
2. **A concatenation or a split splits gradients.** ``y = concat(a, b)`` along channels gives
   ``dL/da = dL/dy[:, :Ca]`` and ``dL/db = dL/dy[:, Ca:]``; a channel split is the reverse.

The containers below apply the rules once so that models do not repeat them:

* :class:`Residual` -- ``y = body(x) + shortcut(x)`` (ResNet, MobileNetV2, MobileNeXt, SE-ResNet);
* :class:`Concat` -- ``y = concat(branch_0(x), branch_1(x), ...)`` (SqueezeNet's fire expand,
  ShuffleNet's stride-2 units, GhostNet's ghost module);
* :class:`ChannelSplit` -- split ``x`` into channel groups, one branch each, concatenate
  (ShuffleNetV2's stride-1 unit: ``ChannelSplit(Identity(), branch)``).

:class:`InvertedResidual` (MobileNetV2) shows the same rules written out by hand inside a block that
keeps torchvision's attribute names, so its ``state_dict`` keys equal torchvision's.
"""
import math

import numpy as np

from .activation import ReLU, ReLU6
from .conv import Conv2d
from .module import Module, Sequential
from .norm import BatchNorm2d


def _check_same_batch_and_space(outputs, what):
    """All branch outputs must agree on N, H, W to be concatenated along channels."""
    shapes = [o.shape for o in outputs]
    if any(o.ndim != 4 for o in outputs) or len({(s[0], s[2], s[3]) for s in shapes}) != 1:
        raise ValueError(f"{what}: branch outputs must share N, H, W to be concatenated along channels; "
                         f"got shapes {shapes}")


class Residual(Module):
    """``y = body(x) + shortcut(x)``; ``shortcut=None`` is the identity (He et al., arXiv:1512.03385).

    Backward (rule 1, a fork sums gradients)::

        dL/dx = body.backward(dL/dy) + shortcut.backward(dL/dy)      (identity shortcut: + dL/dy)

    An activation after the add (ResNet) is a separate layer: ``Sequential(Residual(body), ReLU())``.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        if shortcut is not None:
            self.shortcut = shortcut
        else:
            self.register_module("shortcut", None)
        self._output_shape = None

    def forward(self, x):
        self._check_input(x, ndim=None)
        main = self.body(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        if main.shape != skip.shape:
            raise ValueError(f"Residual: body output {main.shape} and shortcut output {skip.shape} must have the "
                             f"same shape to be added (input shape {x.shape})")
        y = main + skip
        self._output_shape = y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        grad_skip = grad_out if self.shortcut is None else self.shortcut.backward(grad_out)
        return self.body.backward(grad_out) + grad_skip           # the fork: gradients add

    def extra_flops(self, input_shape, output_shape):
        """FLOPs of this block's own arithmetic (not its parts'): the add, one per output element.

        ``tinycnn.profile`` calls this for every block; its parts are counted as layers of their own.
        """
        return math.prod(output_shape)


class Concat(Module):
    """``y = concat([branch(x) for branch in branches], axis=1)``: every branch sees the same input.

    Backward: cut ``dL/dy`` into each branch's channels (rule 2), send each piece back through its
    branch, and sum the input gradients (rule 1). Children are named ``"0"``, ``"1"``, ...
    """

    def __init__(self, *branches):
        super().__init__()
        if not branches:
            raise ValueError("Concat needs at least one branch")
        for index, branch in enumerate(branches):
            self.add_module(str(index), branch)
        self._channels = None       # output channels of each branch, from the last forward
        self._output_shape = None

    def forward(self, x):
        self._check_input(x, ndim=None)
        outputs = [branch(x) for branch in self._modules.values()]
        _check_same_batch_and_space(outputs, "Concat")
        self._channels = [o.shape[1] for o in outputs]
        y = np.concatenate(outputs, axis=1)                     # (N, sum of C_i, H, W)
        self._output_shape = y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        pieces = np.split(grad_out, np.cumsum(self._channels)[:-1], axis=1)     # one (N, C_i, H, W) each
        grad_x = None
        for branch, piece in zip(self._modules.values(), pieces):
            g = branch.backward(np.ascontiguousarray(piece))
            grad_x = g if grad_x is None else grad_x + g       # the fork: gradients add
        return grad_x


class ChannelSplit(Module):
    """Split ``x`` along channels, run branch ``i`` on part ``i``, concatenate the results.

    ``ChannelSplit(Identity(), branch)`` is ShuffleNetV2's stride-1 unit before its channel shuffle
    (arXiv:1807.11164): half the channels pass untouched, half go through the branch.

    Parameters
    ----------
    *branches : Module
        One per part (children named ``"0"``, ``"1"``, ...).
    split_sizes : list of int, optional
        Channels of each part; default: equal parts.

    Backward: cut ``dL/dy`` by output channels, run each branch backward, and concatenate the input
    gradients along channels (each input channel belongs to exactly one branch, so nothing is summed).
    """

    def __init__(self, *branches, split_sizes=None):
        super().__init__()
        if not branches:
            raise ValueError("ChannelSplit needs at least one branch")
        if split_sizes is not None and len(split_sizes) != len(branches):
            raise ValueError(f"split_sizes {split_sizes} must give one size per branch ({len(branches)})")
        for index, branch in enumerate(branches):
            self.add_module(str(index), branch)
        self.split_sizes = None if split_sizes is None else [int(s) for s in split_sizes]
        self._out_channels = None
        self._output_shape = None

    def _sizes(self, channels):
        count = len(self._modules)
        if self.split_sizes is None:
            if channels % count != 0:
                raise ValueError(f"ChannelSplit: {channels} input channels cannot be split into {count} equal parts")
            return [channels // count] * count
        if sum(self.split_sizes) != channels:
            raise ValueError(f"ChannelSplit: split_sizes {self.split_sizes} must add up to the {channels} input "
                             f"channels")
        return self.split_sizes

    def forward(self, x):
        self._check_input(x)
        sizes = self._sizes(x.shape[1])
        parts = np.split(x, np.cumsum(sizes)[:-1], axis=1)                 # one (N, C_i, H, W) each
        outputs = [branch(np.ascontiguousarray(part)) for branch, part in zip(self._modules.values(), parts)]
        _check_same_batch_and_space(outputs, "ChannelSplit")
        self._out_channels = [o.shape[1] for o in outputs]
        y = np.concatenate(outputs, axis=1)
        self._output_shape = y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        pieces = np.split(grad_out, np.cumsum(self._out_channels)[:-1], axis=1)
        grads = [branch.backward(np.ascontiguousarray(piece)) for branch, piece in zip(self._modules.values(), pieces)]
        return np.concatenate(grads, axis=1)                   # each input channel went to one branch

    def extra_repr(self):
        return "" if self.split_sizes is None else f"split_sizes={self.split_sizes}"


class Conv2dNormActivation(Sequential):
    """Convolution -> batch norm -> activation, as ``torchvision.ops.Conv2dNormActivation``.

    Children ``"0"`` (Conv2d), ``"1"`` (norm), ``"2"`` (activation), so keys are ``0.weight``,
    ``1.weight``, ``1.running_mean``, ... as in torchvision. ``padding=None`` keeps the spatial size at
    stride 1 (``(k - 1) // 2 * dilation``); the convolution has a bias only without a norm layer.
    ``norm_layer``/``activation_layer`` may be ``None`` to leave them out.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, groups=1,
                 norm_layer=BatchNorm2d, activation_layer=ReLU, dilation=1, inplace=True, bias=None):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers = [Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                         groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer() if inplace is None else activation_layer(inplace=inplace))
        super().__init__(*layers)
        self.out_channels = out_channels


class InvertedResidual(Module):
    """MobileNetV2's inverted residual with linear bottleneck (arXiv:1801.04381), torchvision's layout.

    ::

        expand    1x1 conv C_in -> t*C_in, BN, ReLU6      (left out when t = 1)
        depthwise 3x3 conv (stride s), BN, ReLU6
        project   1x1 conv t*C_in -> C_out, BN            (linear: no activation)
        add x     only when stride == 1 and C_in == C_out

    The layers sit in ``self.conv`` (a :class:`Sequential`) so ``state_dict`` keys equal torchvision's
    (``conv.0.0.weight``, ``conv.0.1.running_mean``, ...). The shortcut is written out by hand: the input
    forks into ``conv`` and the identity, so the backward pass adds the two gradients (rule 1). This is
    what ``Residual(conv)`` does, under the attribute name torchvision uses.
    """

    def __init__(self, in_channels, out_channels, stride, expand_ratio, norm_layer=None):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {stride!r}")
        if expand_ratio < 1:
            raise ValueError(f"expand_ratio must be >= 1; got {expand_ratio!r}")
        norm_layer = BatchNorm2d if norm_layer is None else norm_layer
        hidden = int(round(in_channels * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(in_channels, hidden, kernel_size=1, norm_layer=norm_layer,
                                               activation_layer=ReLU6))                         # expand
        layers += [
            Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden, norm_layer=norm_layer,
                                 activation_layer=ReLU6),                                       # depthwise
            Conv2d(hidden, out_channels, 1, 1, 0, bias=False),                                  # project
            norm_layer(out_channels),                                                           # linear
        ]
        self.conv = Sequential(*layers)
        self.out_channels = out_channels
        self._output_shape = None

    def forward(self, x):
        self._check_input(x)
        y = self.conv(x)                                  # (N, C_out, H/s, W/s)
        if self.use_res_connect:
            y = y + x                                     # the fork: x is used twice
        self._output_shape = y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        grad_x = self.conv.backward(grad_out)
        if self.use_res_connect:
            grad_x = grad_x + grad_out                    # ... so the two gradients add
        return grad_x

    def extra_flops(self, input_shape, output_shape):
        """FLOPs of this block's own arithmetic: the shortcut add (one per output element), if any.

        ``tinycnn.profile`` calls this for every block; the convolutions are counted as layers of their own.
        """
        return math.prod(output_shape) if self.use_res_connect else 0


__all__ = ["Residual", "Concat", "ChannelSplit", "Conv2dNormActivation", "InvertedResidual"]
