"""Branches and shortcuts: how to write blocks whose data flow is not a single chain.

Without autograd, a block that uses its input more than once must route gradients by hand. Two rules
of the chain rule cover every lightweight CNN:

1. **A fork sums gradients.** If ``x`` feeds two branches, ``y = f(x) + g(x)`` (a residual add) or
   ``y = concat(f(x), g(x))``, then ``dL/dx = f.backward(.) + g.backward(.)``.
2. **A concatenation or a split splits gradients.** ``y = concat(a, b)`` along channels gives
   ``dL/da = dL/dy[:, :Ca]`` and ``dL/db = dL/dy[:, Ca:]``; a channel split is the reverse.

The classes below apply the rules once so that models do not repeat them:

* :class:`ShortcutBlock` -- the base of every block with a residual branch and an optional shortcut,
  ``y = after_add(branch(x) + shortcut(x))``, with the one residual rule ``use_residual = stride == 1
  and in_ch == out_ch`` and the forward and backward passes written once. MobileNet V2's and V3's
  inverted residuals, MobileNeXt's sandglass block, GhostNet's bottleneck and ResNet's blocks are
  subclasses that only build and list their layers (under the reference implementations' names);
* :class:`Residual` -- ``y = body(x) + shortcut(x)`` for any ``body``, the same base as a container;
* :class:`Concat` -- ``y = concat(branch_0(x), branch_1(x), ...)`` (SqueezeNet's fire expand,
  ShuffleNet's stride-2 units, GhostNet's ghost module);
* :class:`ChannelSplit` -- split ``x`` into channel groups, one branch each, concatenate
  (ShuffleNetV2's stride-1 unit: ``ChannelSplit(Identity(), branch)``).

Blocks that belong to one model live with it: MobileNet V2's ``InvertedResidual`` is in
``tinycnn/models/mobilenet_v2.py``.
"""
import math

import numpy as np

from .activation import ReLU
from .containers import Sequential, chain_backward, chain_forward
from .conv import Conv2d
from .module import Module
from .norm import BatchNorm2d


def _check_same_batch_and_space(outputs, what):
    """All branch outputs must agree on N, H, W to be concatenated along channels."""
    shapes = [o.shape for o in outputs]
    if any(o.ndim != 4 for o in outputs) or len({(s[0], s[2], s[3]) for s in shapes}) != 1:
        raise ValueError(f"{what}: branch outputs must share N, H, W to be concatenated along channels; "
                         f"got shapes {shapes}")


def check_shapes_to_add(block_name, branch_name, y, skip, x):
    """A residual block's branch output ``y`` and shortcut output ``skip`` must have one shape to be added
    (NumPy would broadcast some mismatches, e.g. a (N, C, 1, 1) branch, without a word); ``x`` is the input."""
    if y.shape != skip.shape:
        raise ValueError(f"{block_name}: {branch_name} output {y.shape} and shortcut output {skip.shape} must have "
                         f"the same shape to be added (input shape {x.shape})")


class ShortcutBlock(Module):
    """Base of every residual block: ``y = after_add(branch(x) + shortcut(x))``, written once.

    The residual rule (He et al., arXiv:1512.03385; MobileNetV2, arXiv:1801.04381) is decided in one
    place, :meth:`_set_shape`::

        use_residual = stride == 1 and in_channels == out_channels      # the shape is kept: add x itself

    and the shortcut is then

    * a **projection** layer when the subclass has one (:meth:`_shortcut_layer`: ResNet's ``downsample``,
      GhostNet's ``shortcut``), else
    * the **identity** when ``use_residual`` (on the first ``identity_channels`` channels only, if set:
      MobileNeXt's identity tensor multiplier), else
    * **none**: the block is its branch (MobileNet V2/V3 blocks that change the shape).

    Forward and backward (the chain rule at a fork, rule 1 above)::

        y      = after_add(branch(x) + shortcut(x))
        g      = after_add.backward(dL/dy)                   # dL/d(branch + shortcut)
        dL/dx  = branch.backward(g) + shortcut.backward(g)   # x feeds both: the gradients add

    A subclass registers its layers under the reference implementation's names (so ``state_dict`` keys
    stay torchvision's / timm's), calls :meth:`_set_shape`, and lists its branch in
    :meth:`_branch_layers` (run in order). It may override the hooks ``_branch_forward/_backward``,
    ``_shortcut_forward/_backward`` and ``_after_add_forward/_backward`` (ResNet: ReLU after the add,
    the four squeeze-and-excitation placements).

    Attributes
    ----------
    use_residual : bool
        The block keeps its input's shape, so an identity shortcut can add ``x`` itself.
    identity_channels : int or None
        Channels of an identity shortcut (the first ones); None: all.
    """

    _input_ndim = 4             # (N, C, H, W)
    _branch_name = "branch"     # in error messages

    def __init__(self):
        super().__init__()
        self.in_channels = self.out_channels = self.stride = None
        self.use_residual = False
        self.identity_channels = None
        self._output_shape = None

    def _set_shape(self, in_channels, out_channels, stride):
        """Store the block's shape and make the residual decision: identity shortcut iff the shape is kept."""
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {stride!r}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.use_residual = stride == 1 and in_channels == out_channels

    # -- what a subclass lists ---------------------------------------------------------------------
    def _branch_layers(self):
        """The residual branch's layers, in order."""
        raise NotImplementedError(f"{type(self).__name__} must list its branch layers in _branch_layers()")

    def _shortcut_layer(self):
        """The projection (or explicit) shortcut layer, or None (identity or no shortcut)."""
        return None

    @property
    def has_shortcut(self):
        """Does the block add a shortcut to its branch (a projection, or a non-empty identity)?"""
        return self._shortcut_layer() is not None or (self.use_residual and self.identity_channels != 0)

    def branch_output_norm(self):
        """The batch norm whose scale (gamma) at 0 makes the branch output 0: the branch's last one.

        :func:`tinycnn.transfer.zero_init_residual_` zeroes it so the block starts as its shortcut.
        """
        norms = [m for layer in self._branch_layers() for m in layer.modules() if isinstance(m, BatchNorm2d)]
        return norms[-1] if norms else None

    # -- hooks -------------------------------------------------------------------------------------
    def _branch_forward(self, x):
        return chain_forward(self._branch_layers(), x)

    def _branch_backward(self, grad):
        return chain_backward(self._branch_layers(), grad)

    def _shortcut_forward(self, x):
        layer = self._shortcut_layer()
        return x if layer is None else layer(x)

    def _shortcut_backward(self, grad):
        layer = self._shortcut_layer()
        return grad if layer is None else layer.backward(grad)

    def _after_add_forward(self, y):
        return y

    def _after_add_backward(self, grad):
        return grad

    # -- the residual rule, written once -----------------------------------------------------------
    def forward(self, x):
        self._check_input(x, ndim=self._input_ndim, channels=self.in_channels)
        y = self._branch_forward(x)                          # (N, C_out, H/s, W/s)
        if self.has_shortcut:
            skip = self._shortcut_forward(x)                 # the fork: x is used twice
            check_shapes_to_add(type(self).__name__, self._branch_name, y, skip, x)
            k = self.identity_channels
            if k is None or k == y.shape[1]:
                y = y + skip
            else:                                            # a partial identity: only the first k channels
                y = y.copy()
                y[:, :k] += skip[:, :k]
        y = self._after_add_forward(y)
        self._output_shape = y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        grad_sum = self._after_add_backward(grad_out)        # dL/d(branch + shortcut)
        grad_x = self._branch_backward(grad_sum)
        if self.has_shortcut:                                # ... so the two gradients add
            k = self.identity_channels
            if k is None or k == grad_sum.shape[1]:
                grad_x = grad_x + self._shortcut_backward(grad_sum)
            else:
                grad_x = grad_x.copy()
                grad_x[:, :k] += grad_sum[:, :k]
        return grad_x

    def extra_flops(self, input_shape, output_shape):
        """FLOPs of this block's own arithmetic: the shortcut add, one per added output element.

        ``tinycnn.profile`` calls this for every block; its layers are counted as layers of their own.
        """
        if not self.has_shortcut:
            return 0
        N, C, H, W = output_shape
        return N * (C if self.identity_channels is None else self.identity_channels) * H * W


class Residual(ShortcutBlock):
    """``y = body(x) + shortcut(x)``; ``shortcut=None`` is the identity (He et al., arXiv:1512.03385).

    Backward (rule 1, a fork sums gradients)::

        dL/dx = body.backward(dL/dy) + shortcut.backward(dL/dy)      (identity shortcut: + dL/dy)

    An activation after the add (ResNet) is a separate layer: ``Sequential(Residual(body), ReLU())``.
    Any input shape works (the body decides); there is no stride rule, the shortcut is what is given.
    """

    _input_ndim = None          # any number of dimensions
    _branch_name = "body"

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        if shortcut is not None:
            self.shortcut = shortcut
        else:
            self.register_module("shortcut", None)
        self.use_residual = shortcut is None

    def _branch_layers(self):
        return [self.body]

    def _shortcut_layer(self):
        return self.shortcut

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

    plain_container = True

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

    plain_container = True

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


__all__ = ["ShortcutBlock", "Residual", "Concat", "ChannelSplit", "Conv2dNormActivation"]
