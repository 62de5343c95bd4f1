"""``freeze(model)``: a snapshot of a model for inference, with what every call would recompute done once.

Inside ``no_grad()`` a model already runs a convolution, its batch norm and activation as one step
(:mod:`tinycnn.nn.fusion`), but it decides that anew on every call, because the model may change
between calls (``train()``, a new weight, an edited running mean):

* which layers merge (:func:`tinycnn.nn.fusion._fusable_run`: their types, hooks, modes, channels);
* the batch norm's affine map ``scale = weight / sqrt(running_var + eps)``, ``shift = bias -
  running_mean * scale`` (one compiled call per batch norm, ~4-7 us);
* the containers' own bookkeeping: each ``Conv2dNormActivation`` is a ``Sequential`` of three layers
  that the call walks through.

On one 224 x 224 image a MobileNet V3-Small forward makes 34 such runs, each of 20-150 us of
arithmetic, among ~140 layers; freezing takes 16-34% off a batch-1 MobileNet forward (measured on a
2-core AMD EPYC; the README's benchmark section). An inference engine (PyTorch's ``torch.jit.freeze``,
ONNX Runtime, TensorFlow Lite's converter) pays it once, when the model is *frozen*: its weights are
taken as constants, and the graph is rewritten around them. :func:`freeze` does the same here:

1. it deep-copies the model (the snapshot: later changes to ``model`` do not reach it) and puts the
   copy in evaluation mode;
2. in every ``Sequential``, each run of layers that ``no_grad()`` would merge, ``Conv2d`` ->
   ``BatchNorm2d`` (running statistics) [-> ``ReLU``/``ReLU6``/``Hardswish``], becomes one
   :class:`FrozenConvNormActivation`, whose batch-norm ``scale`` and ``shift`` are computed here, once;
3. a ``Sequential`` left holding just that one step (every ``Conv2dNormActivation``) is replaced by the
   step in the ``Sequential`` around it;
4. a ``Sequential`` with no run left to merge becomes a :class:`FrozenSequential`, which calls its
   layers without looking for runs, and a residual block that follows
   :class:`~tinycnn.nn.ShortcutBlock`'s rule unchanged a :class:`FrozenShortcutBlock`, which calls its
   branch's layers and adds the shortcut; MobileNet V3's squeeze-and-excitation block becomes a
   :class:`FrozenSqueezeExcitation`, which sends one image straight to its compiled kernel;
5. each step prepares, on the first input of each shape, the kernel call it will make (which kernel,
   its blocks and arguments: :func:`kernels.pointwise.prepare_forward`,
   :func:`kernels.depthwise.prepare_forward`), and makes only that call afterwards; an input of a
   prepared shape that is C-contiguous and of the weights' dtype skips the checks it passed then, and the
   frozen containers call their frozen children's ``forward`` directly, without ``Module.__call__``'s
   bookkeeping for a backward (:func:`_call_layer`; a hooked child still goes through its hooks).
   Measured on a 2-core Intel Sapphire Rapids, alternated: frozen batch-1 MobileNet V2 -2.0 / -1.6%, V2
   width 0.5 -3.4 / -4.2%, V3-Large -2.4 / -2.6%, V3-Small -2.3 / -2.5% (two runs of 150 pairs).

The arithmetic is untouched: a frozen model gives the same bits as the model in evaluation mode inside
``no_grad()`` (the same kernels with the same ``scale``, ``shift`` and clip), so ``freeze`` changes
speed, never results. It is for inference only: no ``backward``, no ``train()``. To use new weights,
freeze again.

Example::

    frozen = nn.freeze(model)            # once, after training or loading weights
    logits = frozen(images)              # (N, num_classes), as model.eval() under no_grad()
"""
import copy
from collections import OrderedDict

import numpy as np

import kernels.conv2d as conv2d_kernels
import kernels.depthwise as depthwise_kernels
import kernels.pointwise as pointwise_kernels
import kernels.stem as stem_kernels
from kernels._jit import one_blas_thread

from .blocks import ShortcutBlock, check_shapes_to_add
from .containers import Sequential
from .conv import Conv2d
from .fusion import _CONV_ACTIVATIONS, _fusable_run, one_image_block_arguments, run_one_image_block
from .grad_mode import no_grad
from .module import Module
from .se import SqueezeExcitation


class FrozenConvNormActivation(Module):
    """``activation(norm(conv(x)))`` with the batch norm's affine map computed once: a frozen step.

    Parameters
    ----------
    conv : Conv2d
    norm : BatchNorm2d in evaluation mode with running statistics, ``num_features == conv.out_channels``
    activation : ReLU, ReLU6, Hardswish or None

    Shapes
    ------
    x : (N, C_in, H, W) -> y : (N, C_out, H_out, W_out), as ``conv``; the parameters' dtype.

    The layers' outputs are bit-identical to :func:`tinycnn.nn.fusion.conv_norm_clip`, the step that
    ``no_grad()`` runs for the same three layers: ``y = clip(conv(x) * scale[c] + shift[c], low, high)``
    (then hard swish), with ``scale`` and ``shift`` from ``norm._running_affine`` computed here instead
    of on every call. The three layers stay children ``"0"``, ``"1"``, ``"2"`` (``Conv2dNormActivation``'s
    names), so ``print`` shows what was merged and ``state_dict`` keeps their keys. Inference only: the
    step always uses the statistics it was frozen with, whatever the layers' mode.
    """

    def __init__(self, conv, norm, activation=None):
        super().__init__()
        if _fusable_run([conv, norm] + ([] if activation is None else [activation]), 0) != 2 + (activation is not None):
            raise ValueError(f"FrozenConvNormActivation merges a Conv2d, a BatchNorm2d in evaluation mode with "
                             f"running statistics and as many channels, and optionally a ReLU, ReLU6 or Hardswish, "
                             f"none of them hooked; got {type(conv).__name__}, {type(norm).__name__}, "
                             f"{type(activation).__name__}")
        self.add_module("0", conv)
        self.add_module("1", norm)
        if activation is not None:
            self.add_module("2", activation)
        dtype = conv._parameters["weight"].data.dtype
        scale, shift, _ = norm._running_affine(dtype)                       # (C_out,) each, once
        low, high, hardswish = (-np.inf, np.inf, False) if activation is None else _CONV_ACTIVATIONS[type(activation)]
        self._epilogue = (scale, shift, low, high, hardswish)
        self._weight = np.ascontiguousarray(conv._parameters["weight"].data)  # (C_out, C_in/groups, kH, kW)
        # the convolution's weight Parameter as a plain reference (an attribute would register it twice):
        # .to(dtype) gives it new data, which the fast path in forward must notice
        self.__dict__["_weight_parameter"] = conv._parameters["weight"]
        bias = conv._parameters["bias"]
        self._bias = None if bias is None else bias.data                     # (C_out,) or None
        self._forwards = {}                         # input shape -> its prepared forward (see _prepare)

    def forward(self, x):
        # an input of a shape already prepared, C-contiguous, of the dtype of the weights (both as frozen
        # and as the convolution holds them now) passed every check below when its shape was prepared:
        # straight to its kernels (~1.5 us less a step)
        if (type(x) is np.ndarray and x.flags.c_contiguous
                and x.dtype == self._weight.dtype == self._weight_parameter.data.dtype):
            forward = self._forwards.get(x.shape)
            if forward is not None:
                with one_blas_thread():
                    return forward(x)
        conv = self._modules["0"]                   # the registry: Module.__getattr__ costs ~1.5 us a call
        conv._check_input(x, channels=conv.in_channels)
        if x.dtype != self._weight.dtype:                   # the conv was converted (.to) after freezing
            raise TypeError(f"FrozenConvNormActivation was frozen with {self._weight.dtype} weights; got a "
                            f"{x.dtype} input: freeze the model again after converting it")
        x = np.ascontiguousarray(x)
        forward = self._forwards.get(x.shape)
        if forward is None:
            forward = self._forwards[x.shape] = self._prepare(conv._geometry(x.shape))
        with one_blas_thread():
            return forward(x)

    def _prepare(self, geometry):
        """The forward for one input shape, each ``conv2d._forward``'s arithmetic: a bias-free pointwise
        convolution's matrix products with their blocks and epilogue worked out once
        (:func:`kernels.pointwise.prepare_forward`), a depthwise convolution's kernel chosen and its
        arguments packed once (:func:`kernels.depthwise.prepare_forward`), any other convolution's kernels
        with the geometry checked once."""
        weight, bias, epilogue = self._weight, self._bias, self._epilogue
        if conv2d_kernels._is_pointwise(geometry):
            forward = None if bias is not None else pointwise_kernels.prepare_forward(weight, geometry, epilogue)
            if forward is not None:
                return forward
        elif conv2d_kernels._is_depthwise(geometry):
            return depthwise_kernels.prepare_forward(weight, bias, geometry, epilogue)
        elif stem_kernels.use_stem(geometry):
            return stem_kernels.prepare_forward(weight, bias, geometry, epilogue)
        return lambda x: conv2d_kernels._forward(x, weight, bias, geometry, epilogue=epilogue)

    def backward(self, grad_out):
        raise RuntimeError("FrozenConvNormActivation is part of a frozen model (tinycnn.nn.freeze), which is for "
                           "inference only: train the original model and freeze it again")


def _merge_runs(sequential):
    """Replace each fusable Conv2d -> BatchNorm2d [-> activation] run among ``sequential``'s children by a
    :class:`FrozenConvNormActivation` (named as the run's convolution)."""
    named = list(sequential._modules.items())
    layers = [layer for _, layer in named]
    merged = OrderedDict()
    index = 0
    while index < len(named):
        length = _fusable_run(layers, index) if isinstance(layers[index], Conv2d) else 0
        if length:
            merged[named[index][0]] = FrozenConvNormActivation(*layers[index:index + length])
            index += length
        else:
            merged[named[index][0]] = layers[index]
            index += 1
    sequential._modules.clear()
    sequential._modules.update(merged)


def _call_layer(layer, x):
    """``layer(x)`` inside a frozen container: a frozen step without forward hooks is called through its
    ``forward``, without ``Module.__call__``'s bookkeeping for a ``backward`` that frozen steps do not have
    (~1 us a step; a frozen MobileNet V2 makes ~70 such calls); any other layer, or a hooked one, as
    ``layer(x)``."""
    if type(layer) in _FROZEN_STEPS and not layer._forward_hooks:
        return layer.forward(x)
    return layer(x)


class FrozenSequential(Sequential):
    """A ``Sequential`` of a frozen model with no run of layers left to merge: it calls its layers in turn.

    A ``Sequential`` looks for runs to merge on every call (:func:`tinycnn.nn.fusion.fused_chain_forward`);
    once :func:`freeze` has merged them, there is nothing left to find. Like
    :func:`~tinycnn.nn.chain_forward`, it holds one BLAS scope around its layers. Same layers, same names,
    same results; inference only (its frozen steps have no ``backward``).
    """

    def forward(self, x):
        with one_blas_thread():                     # one scope for the whole loop, as chain_forward holds
            for layer in self._modules.values():
                x = _call_layer(layer, x)
        return x


class FrozenShortcutBlock(Module):
    """A residual block of a frozen model, ``y = branch(x) [+ shortcut(x)]``: its branch's layers called in turn.

    Made by :func:`freeze` from a :class:`~tinycnn.nn.ShortcutBlock` (MobileNet V2/V3's inverted
    residuals, ResNet's blocks without an activation after the add, GhostNet's bottleneck) that keeps the
    base class's forward and hooks and adds all of its identity or a projection shortcut, or none. The
    block's children are kept under their names (``state_dict`` keys unchanged); what is dropped is the
    per-call bookkeeping of the block (the branch as a chain that looks for runs, the residual decision).
    Same results; inference only.

    Shapes
    ------
    x : (N, C_in, H, W) -> y : (N, C_out, H/s, W/s), as the block.
    """

    def __init__(self, block):
        super().__init__()
        for name, child in block._modules.items():
            self.add_module(name, child)
        self._branch = tuple(block._branch_layers())
        # a projection layer or None, kept as a plain reference (assigned as an attribute, a Module would
        # also be registered as a child "_shortcut", a second name for the one above)
        self.__dict__["_shortcut"] = block._shortcut_layer()
        self._identity = self._shortcut is None and block.has_shortcut
        self._input_ndim, self.in_channels = block._input_ndim, block.in_channels
        self._block_name, self._branch_name = type(block).__name__, block._branch_name     # for its errors

    def forward(self, x):
        self._check_input(x, ndim=self._input_ndim, channels=self.in_channels)
        y = x
        for layer in self._branch:                                # (N, C_out, H/s, W/s) at the end
            y = _call_layer(layer, y)
        if self._shortcut is None and not self._identity:
            return y
        skip = x if self._shortcut is None else self._shortcut(x)
        check_shapes_to_add(self._block_name, self._branch_name, y, skip, x)
        return y + skip


class FrozenSqueezeExcitation(Module):
    """MobileNet V3's squeeze-and-excitation block in a frozen model: one image goes straight to its compiled
    kernel (:func:`tinycnn.nn.fusion.run_one_image_block`) with the weights taken once; anything else runs
    the block itself (under ``no_grad()``, its layers' kernels called directly).

    Made by :func:`freeze` from a :class:`~tinycnn.nn.SqueezeExcitation` with the class's forward (GhostNet's
    subclass only renames the children) that ``no_grad()`` would run as that one call on one image
    (:func:`tinycnn.nn.fusion.one_image_block_arguments`: ReLU or ReLU6, a hard-sigmoid gate, biases), so
    the bits are the same. The children keep their names.

    Shapes
    ------
    x : (N, C, H, W) -> y : (N, C, H, W), ``y = gate(x)[:, :, None, None] * x``.
    """

    def __init__(self, se):
        super().__init__()
        if not _is_frozen_squeeze_excitation_candidate(se):
            raise ValueError(f"FrozenSqueezeExcitation takes a SqueezeExcitation block with a ReLU or ReLU6, a "
                             f"Hardsigmoid gate and biases, neither the block nor its layers hooked; got {se!r}")
        arguments = one_image_block_arguments(se)
        for name, child in se._modules.items():
            self.add_module(name, child)
        self.__dict__["_block"] = se                  # a plain reference (see FrozenShortcutBlock)
        self.in_channels = se._modules[se._LAYER_NAMES[1]].in_channels
        *weights, high = arguments                    # (S, C, 1, 1), (S,), (C, S, 1, 1), (C,); inf or 6
        self._arguments = (*(np.ascontiguousarray(weight) for weight in weights), high)

    def forward(self, x):
        self._check_input(x, channels=self.in_channels)
        if x.shape[0] == 1 and x.dtype == self._arguments[0].dtype:
            y = run_one_image_block(self._arguments, x)
            if y is not None:                         # None: no BLAS gemv, or convolutions too large for it
                return y
        return self._block(x)


#: the classes :func:`_call_layer` calls through ``forward``: inference only, nothing kept for a backward
_FROZEN_STEPS = (FrozenConvNormActivation, FrozenSequential, FrozenShortcutBlock, FrozenSqueezeExcitation)


def _is_frozen_squeeze_excitation_candidate(se):
    """A squeeze-and-excitation block with the class's forward, unhooked, that ``no_grad()`` would run as one
    compiled call on one image."""
    return (isinstance(se, SqueezeExcitation) and type(se).forward is SqueezeExcitation.forward
            and not se._forward_hooks and "forward" not in se.__dict__ and one_image_block_arguments(se) is not None)


def _is_frozen_shortcut_candidate(block):
    """A :class:`ShortcutBlock` whose forward is the base class's residual rule, unchanged: same hooks,
    no activation after the add, and an identity shortcut (if any) on all channels."""
    kind = type(block)
    return (isinstance(block, ShortcutBlock) and not block._forward_hooks and "forward" not in block.__dict__
            and all(getattr(kind, name) is getattr(ShortcutBlock, name)
                    for name in ("forward", "_branch_forward", "_shortcut_forward", "_after_add_forward"))
            and block.identity_channels is None)


def _is_plain_sequential(module):
    return (isinstance(module, Sequential) and type(module).forward is Sequential.forward
            and not module._forward_hooks and "forward" not in module.__dict__)


def _freeze_tree(module):
    """``module`` frozen, children first: in every plain ``Sequential`` the runs merged; a plain ``Sequential``
    holding just one merged step replaced by that step in the ``Sequential`` around it (which calls its
    children in order and nothing more); a ``Sequential`` with no run left replaced by a
    :class:`FrozenSequential`. Returns ``module`` or what replaces it."""
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = _freeze_tree(child)
    if _is_frozen_shortcut_candidate(module):
        return FrozenShortcutBlock(module).train(False)
    if _is_frozen_squeeze_excitation_candidate(module):
        return FrozenSqueezeExcitation(module).train(False)
    if not _is_plain_sequential(module):
        return module
    _merge_runs(module)
    for name, child in list(module._modules.items()):
        if (type(child) is FrozenSequential or _is_plain_sequential(child)) and len(child._modules) == 1:
            only = next(iter(child._modules.values()))
            if type(only) is FrozenConvNormActivation:
                module._modules[name] = only
    layers = list(module._modules.values())
    if type(module) is Sequential and not any(_fusable_run(layers, index) for index in range(len(layers))):
        return FrozenSequential(OrderedDict(module._modules)).train(False)
    return module


def freeze(model):
    """A frozen copy of ``model`` for inference: :class:`FrozenModel` (module docstring: what is done once).

    Parameters
    ----------
    model : Module
        Left unchanged (its training mode too).

    Returns
    -------
    FrozenModel
        ``frozen(x)`` equals ``model.eval()`` called on ``x`` inside ``no_grad()``, bit for bit, faster on
        small inputs.
    """
    if not isinstance(model, Module):
        raise TypeError(f"freeze expects a tinycnn.nn.Module; got {type(model).__name__}")
    snapshot = copy.deepcopy(model)
    snapshot.train(False)
    return FrozenModel(_freeze_tree(snapshot))


class FrozenModel:
    """A model frozen by :func:`freeze`: call it on an input; ``module`` is its rewritten copy.

    ``frozen(x)`` runs ``module(x)`` inside :func:`~tinycnn.nn.no_grad` (and one
    :func:`kernels._jit.one_blas_thread` scope). There is no ``backward``,
    ``train`` or ``load_state_dict``: a frozen model is a snapshot, freeze the original again after
    changing it.
    """

    def __init__(self, module):
        self.module = module

    def __call__(self, x):
        """``x`` (N, C, H, W) -> the model's output (``(N, num_classes)`` for a classifier)."""
        # one BLAS scope for the whole forward: each step's own scope is then a nested one, which costs
        # nothing, where an outermost one reads and sets the BLAS thread count (~4 us, kernels/_jit.py)
        with no_grad(), one_blas_thread():
            return self.module(x)

    def __repr__(self):
        return f"FrozenModel(\n  {repr(self.module).replace(chr(10), chr(10) + '  ')}\n)"
