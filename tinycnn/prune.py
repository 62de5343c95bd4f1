"""Structured channel pruning: a genuinely smaller network, not a mask.

Removing output channel ``c`` of a convolution removes ``weight[c]`` and ``bias[c]``, entry ``c`` of the
batch norm after it, the depthwise filter ``c`` that may follow (a depthwise convolution maps channel
``c`` to channel ``c``), and the input slice ``weight[:, c]`` of the next dense convolution or fully
connected layer. One such set of tied channels is a :class:`ChannelGroup`; the network that remains has
fewer channels everywhere along it, so it needs fewer parameters, fewer multiply-adds and less memory,
and runs on the ordinary kernels.

Which channels are prunable (found by :func:`channel_groups` from the blocks' roles):

* inside a block, the hidden channels: MobileNet V2's inverted residual ``expand`` outputs = ``depthwise``
  channels = ``project`` inputs; MobileNeXt's sandglass bottleneck (``reduce`` outputs = ``expand``
  inputs); ResNet's ``conv1 -> conv2`` (and ``conv2 -> conv3`` in a bottleneck);
* between the units of a plain chain (``features`` then ``classifier``): MobileNet V1's pointwise outputs
  (through the next depthwise convolution into the next pointwise one), MobileNet V2's stem, its last
  block's output and its 1280-channel last convolution (into the classifier).

Channels that are added to a shortcut (a residual stage's width) or concatenated stay: removing one would
have to remove it from every tensor of the sum at once.

Criteria (the score of a channel; low scores go first):

* ``"l1"``: the L1 norm of the producing filter, ``sum |weight[c]|`` (Li et al., "Pruning Filters for
  Efficient ConvNets", arXiv:1608.08710);
* ``"bn"``: ``|gamma_c|`` of its batch norm, "network slimming" (Liu et al., arXiv:1708.06519): a channel
  whose BN scale is near zero outputs almost a constant. A hidden channel that passes through a depthwise
  convolution has two BNs; its score is the product of both ``|gamma|``.

A channel whose last batch norm has ``gamma = beta = 0`` outputs exactly 0 (after ReLU/ReLU6), so pruning
it leaves the logits unchanged (tested).

The pruned architecture is described by ``model.pruned_channels``, ``{group name: channels kept}``:
:func:`save_pruned` stores it (JSON, no code) with the weights, and :func:`load_pruned` /
:func:`apply_channel_config` rebuild the smaller network from the original builder before loading.
"""
import copy
import dataclasses
import numbers

import numpy as np

from . import io, nn

__all__ = ["ChannelGroup", "channel_groups", "channel_scores", "prune_channels", "apply_channel_config",
           "save_pruned", "load_pruned", "read_architecture", "build_pruned", "CRITERIA", "PRUNED_KIND"]

CRITERIA = ("l1", "bn")
PRUNED_KIND = "tinycnn-pruned"          # checkpoint["kind"] of a file written by save_pruned


@dataclasses.dataclass
class ChannelGroup:
    """Channels that must be removed together.

    Attributes
    ----------
    name : str
        Qualified name of the producing convolution (``features.3.conv.0.0``); the key in
        ``pruned_channels``.
    producer : Conv2d            writes the channels (``weight[c]``)
    producer_bn : BatchNorm2d    right after it
    passthrough : list of (Conv2d, BatchNorm2d)
        Depthwise convolutions (with their BN) that carry channel ``c`` to channel ``c``.
    consumers : list of Conv2d (groups = 1) or Linear
        Read the channels (``weight[:, c]``).
    """
    name: str
    producer: nn.Conv2d
    producer_bn: nn.BatchNorm2d
    passthrough: list
    consumers: list

    @property
    def channels(self):
        return self.producer.out_channels

    @property
    def batch_norms(self):
        """Every BN on the channels' path, in order (the last one feeds the consumers, through the activation)."""
        return [self.producer_bn] + [bn for _, bn in self.passthrough]


# ----------------------------------------------------------------------------------------------------
# Finding the groups from the blocks' roles
# ----------------------------------------------------------------------------------------------------
def _conv_bn(unit):
    """``(conv, bn)`` of a conv-BN(-activation) ``Sequential`` (``Conv2dNormActivation``), else None."""
    if isinstance(unit, nn.Sequential) and len(unit) >= 2 and isinstance(unit[0], nn.Conv2d) \
            and isinstance(unit[1], nn.BatchNorm2d):
        return unit[0], unit[1]
    return None


def _is_depthwise(conv):
    return conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1


def _dense(conv):
    return conv is not None and conv.groups == 1


def _is_inverted_residual(block):
    """MobileNet V2's block by its roles: a shortcut block whose layers sit in ``conv`` (torchvision's layout)."""
    return isinstance(block, nn.ShortcutBlock) and isinstance(block._modules.get("conv"), nn.Sequential)


def _free_ends(block):
    """True if no shortcut adds to the block's input or output (it is just its branch)."""
    return not block.use_residual and block._shortcut_layer() is None


def _block_groups(block):
    """Hidden channel groups inside one block, by its roles; ``(producer, bn, passthrough, consumer)`` tuples."""
    if _is_inverted_residual(block):
        layers = list(block.conv)                        # [expand], depthwise, project, project BN
        if len(layers) == 4:                             # t > 1: expand -> depthwise -> project
            expand, depthwise = _conv_bn(layers[0]), _conv_bn(layers[1])
            return [(expand[0], expand[1], [depthwise], layers[2])]
        return []
    found = []
    if all(isinstance(getattr(block, role, None), nn.Sequential) for role in ("reduce", "expand")):
        reduce, expand = _conv_bn(block.reduce), _conv_bn(block.expand)          # sandglass bottleneck
        if reduce and expand and _dense(reduce[0]) and _dense(expand[0]):
            found.append((reduce[0], reduce[1], [], expand[0]))
    roles = [("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")]               # ResNet branches
    for conv_name, bn_name, next_name in roles:
        conv, bn, after = (block._modules.get(name) for name in (conv_name, bn_name, next_name))
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(after, nn.Conv2d) \
                and _dense(conv) and _dense(after) and conv.out_channels == bn.num_features == after.in_channels:
            found.append((conv, bn, [], after))
    return found


def _output_end(unit):
    """``(conv, bn)`` that writes ``unit``'s output channels, if they are free (no shortcut adds to them)."""
    if _conv_bn(unit) and _dense(_conv_bn(unit)[0]):
        return _conv_bn(unit)
    if isinstance(getattr(unit, "pointwise", None), nn.Sequential):                 # MobileNet V1 block
        return _output_end(unit.pointwise)
    if _is_inverted_residual(unit) and _free_ends(unit):
        return unit.conv[-2], unit.conv[-1]                                      # project, its BN
    return None


def _input_start(unit):
    """``(passthrough, consumer)`` that reads ``unit``'s input channels, if no shortcut reads them too."""
    if isinstance(unit, nn.Linear):
        return [], unit
    if _conv_bn(unit) and _dense(_conv_bn(unit)[0]):
        return [], unit[0]
    if isinstance(getattr(unit, "depthwise", None), nn.Sequential) and isinstance(getattr(unit, "pointwise", None),
                                                                                   nn.Sequential):
        return [_conv_bn(unit.depthwise)], unit.pointwise[0]                       # MobileNet V1 block
    if _is_inverted_residual(unit) and _free_ends(unit):
        layers = list(unit.conv)
        if len(layers) == 4:
            return [], layers[0][0]                                              # expand
        return [_conv_bn(layers[0])], layers[1]                                  # depthwise, then project
    return None


def _last_linear(module):
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _chain_groups(model):
    """Groups between consecutive units of ``model.features`` (and into the classifier's Linear)."""
    features, classifier = model._modules.get("features"), model._modules.get("classifier")
    if not isinstance(features, nn.Sequential) or classifier is None:
        return []
    units = list(features) + [_last_linear(classifier)]
    found = []
    for unit, following in zip(units, units[1:]):
        if unit is None or following is None:
            continue
        end, start = _output_end(unit), _input_start(following)
        if end is None or start is None:
            continue
        passthrough, consumer = start
        if all(_is_depthwise(conv) for conv, _ in passthrough):
            found.append((end[0], end[1], passthrough, consumer))
    return found


def channel_groups(model):
    """Every prunable :class:`ChannelGroup` of ``model``, in the order of their producers.

    Supported by role: MobileNet V1 (chain), MobileNet V2 (hidden + chain), MobileNeXt (bottlenecks),
    ResNet / SE-ResNet (branch channels). Other models give the groups their blocks share with these
    (possibly none).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a tinycnn.nn.Module; got {type(model).__name__}")
    names = {id(module): name for name, module in model.named_modules()}
    found = []
    for module in model.modules():
        found += _block_groups(module)
    found += _chain_groups(model)
    groups = []
    for producer, bn, passthrough, consumer in found:
        in_features = consumer.in_features if isinstance(consumer, nn.Linear) else consumer.in_channels
        sizes = {producer.out_channels, bn.num_features, in_features} | {c.out_channels for c, _ in passthrough}
        if len(sizes) != 1:
            raise ValueError(f"{names[id(producer)]}: channels do not line up along the group ({sorted(sizes)})")
        groups.append(ChannelGroup(names[id(producer)], producer, bn, passthrough, [consumer]))
    order = {id(module): index for index, module in enumerate(model.modules())}
    return sorted(groups, key=lambda group: order[id(group.producer)])


# ----------------------------------------------------------------------------------------------------
# Scores and selection
# ----------------------------------------------------------------------------------------------------
def channel_scores(group, criterion="l1"):
    """(C,) float64 importance of each channel of ``group``: filter L1 norm, or the product of BN ``|gamma|``."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    if criterion == "l1":
        weight = group.producer.weight.data
        return np.abs(weight.astype(np.float64)).reshape(len(weight), -1).sum(axis=1)
    score = np.ones(group.channels)
    for bn in group.batch_norms:
        if bn.weight is None:
            raise ValueError(f"criterion 'bn' needs affine batch norms; {group.name}'s has no weight")
        score = score * np.abs(bn.weight.data.astype(np.float64))
    return score


def _kept_channels(score, amount, threshold):
    """Sorted indices of the channels kept: the highest scores, at least one."""
    count = len(score)
    if threshold is not None:
        removed = int(np.sum(score < threshold))
    else:
        removed = int(np.floor(amount * count + 1e-9))
    removed = min(removed, count - 1)
    order = np.argsort(score, kind="stable")                  # lowest first; ties: the lower index goes first
    return np.sort(order[removed:])


# ----------------------------------------------------------------------------------------------------
# Slicing layers
# ----------------------------------------------------------------------------------------------------
def _set_parameter(module, name, data):
    """Replace a parameter's array (fresh zero gradient), keeping the parameters' order."""
    module._parameters[name] = nn.Parameter(np.ascontiguousarray(data))


def _slice_outputs(conv, keep):
    _set_parameter(conv, "weight", conv.weight.data[keep])
    if conv.bias is not None:
        _set_parameter(conv, "bias", conv.bias.data[keep])
    if _is_depthwise(conv):
        conv.in_channels = conv.groups = len(keep)
    conv.out_channels = len(keep)


def _slice_inputs(layer, keep):
    _set_parameter(layer, "weight", layer.weight.data[:, keep])
    if isinstance(layer, nn.Linear):
        layer.in_features = len(keep)
    else:
        layer.in_channels = len(keep)


def _slice_batch_norm(bn, keep):
    for name in ("weight", "bias"):
        if bn._parameters.get(name) is not None:
            _set_parameter(bn, name, bn._parameters[name].data[keep])
    for name in ("running_mean", "running_var"):
        if bn._buffers.get(name) is not None:
            bn._buffers[name] = np.ascontiguousarray(bn._buffers[name][keep])
    bn.num_features = len(keep)


def _apply(model, groups, keeps):
    """Slice every group to its kept channels, then refresh the blocks' channel attributes."""
    for group, keep in zip(groups, keeps):
        keep = np.asarray(keep, dtype=np.int64)
        _slice_outputs(group.producer, keep)
        _slice_batch_norm(group.producer_bn, keep)
        for conv, bn in group.passthrough:
            _slice_outputs(conv, keep)
            _slice_batch_norm(bn, keep)
        for consumer in group.consumers:
            _slice_inputs(consumer, keep)
    for module in model.modules():            # attributes some blocks keep for repr and input checks
        if isinstance(module, nn.Conv2dNormActivation):
            module.out_channels = module[0].out_channels
        elif _is_inverted_residual(module):
            module.out_channels = module.conv[-2].out_channels
        elif hasattr(module, "reduced_channels") and isinstance(getattr(module, "reduce", None), nn.Sequential):
            module.reduced_channels = module.reduce[0].out_channels
        elif isinstance(getattr(module, "pointwise", None), nn.Sequential) and hasattr(module, "out_channels"):
            module.out_channels = module.pointwise[0].out_channels
    previous = dict(getattr(model, "pruned_channels", {}))
    previous.update({group.name: int(len(keep)) for group, keep in zip(groups, keeps)})
    model.pruned_channels = previous
    return model


def prune_channels(model, amount=0.5, criterion="l1", threshold=None):
    """Structured channel pruning: a new, smaller model (the input model is not changed).

    Parameters
    ----------
    model : Module
        MobileNet V1/V2, MobileNeXt, ResNet/SE-ResNet (see :func:`channel_groups`).
    amount : float in [0, 1)
        Fraction of each group's channels removed (``floor(amount * C)``; at least one channel stays).
    criterion : "l1" or "bn"
        The channel score (module docstring); the lowest scores are removed.
    threshold : float, optional
        Instead of ``amount``: remove every channel whose score is below this one global value (with
        ``"bn"``, the network-slimming rule; L1 norms differ in scale between layers).

    Returns
    -------
    Module: a deep copy with fewer channels, in the input's train/eval mode. ``pruned.pruned_channels``
    maps each group (its producing convolution's name) to the channels kept; ``pruned.pruned_indices``
    to the indices kept, in the original numbering.
    """
    if threshold is None:
        if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not 0 <= amount < 1:
            raise ValueError(f"amount must be a fraction in [0, 1); got {amount!r}")
    elif isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number; got {threshold!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    pruned = copy.deepcopy(model)
    groups = channel_groups(pruned)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no prunable channel group (supported: MobileNet V1, V2, "
                         f"MobileNeXt, ResNet)")
    keeps = [_kept_channels(channel_scores(group, criterion), amount, threshold) for group in groups]  # before slicing
    _apply(pruned, groups, keeps)
    pruned.pruned_indices = {group.name: keep for group, keep in zip(groups, keeps)}
    return pruned


# ----------------------------------------------------------------------------------------------------
# Saving and rebuilding the pruned architecture
# ----------------------------------------------------------------------------------------------------
def apply_channel_config(model, pruned_channels):
    """Shrink a freshly built ``model`` to the architecture ``pruned_channels`` describes (in place).

    Each group named in ``pruned_channels`` keeps its first ``k`` channels (the weights are then loaded
    over them). ``ValueError`` for a group the model does not have or a count outside ``[1, C]``.
    Returns ``model``.
    """
    if not isinstance(pruned_channels, dict):
        raise ValueError(f"pruned_channels must be a dict of group name -> channels kept; got "
                         f"{type(pruned_channels).__name__}")
    groups = {group.name: group for group in channel_groups(model)}
    chosen, keeps = [], []
    for name, kept in pruned_channels.items():
        if name not in groups:
            raise ValueError(f"the pruned architecture names a channel group {name!r} that "
                             f"{type(model).__name__} does not have: weights of another model?")
        if isinstance(kept, bool) or not isinstance(kept, numbers.Integral) or not 1 <= kept <= groups[name].channels:
            raise ValueError(f"group {name!r} must keep between 1 and {groups[name].channels} channels; got {kept!r}")
        chosen.append(groups[name])
        keeps.append(np.arange(int(kept)))
    return _apply(model, chosen, keeps)


def build_pruned(architecture):
    """Build the model an ``architecture`` dict describes: ``{"model", "kwargs", "channels"}``."""
    from . import models

    if not isinstance(architecture, dict) or not {"model", "kwargs", "channels"} <= set(architecture):
        raise ValueError("a pruned architecture is a dict with 'model', 'kwargs' and 'channels'")
    kwargs = architecture["kwargs"]
    if not isinstance(kwargs, dict):
        raise ValueError(f"architecture 'kwargs' must be a dict; got {type(kwargs).__name__}")
    model = models.get_model(architecture["model"], **kwargs)
    return apply_channel_config(model, architecture["channels"])


def save_pruned(path, model, model_name, extra=None, **model_kwargs):
    """Save a pruned model with its architecture, atomically (a :func:`tinycnn.io.save_checkpoint` file).

    Parameters
    ----------
    path : str or os.PathLike
    model : Module returned by :func:`prune_channels` (has ``pruned_channels``)
    model_name, **model_kwargs : how the unpruned model is built, ``get_model(model_name, **model_kwargs)``
    extra : dict, optional -- stored as is (a run's class names and normalisation)

    The file holds ``{"kind": "tinycnn-pruned", "architecture": {"model", "kwargs", "channels"},
    "model": state_dict, "extra": ...}``: data only, nothing executable.
    """
    if not hasattr(model, "pruned_channels"):
        raise ValueError("model has no pruned_channels: prune it with prune_channels first")
    architecture = {"model": str(model_name), "kwargs": dict(model_kwargs), "channels": dict(model.pruned_channels)}
    build_pruned(architecture).load_state_dict(model.state_dict())      # fail now, not when loading
    return io.save_checkpoint(path, {"kind": PRUNED_KIND, "architecture": architecture, "model": model.state_dict(),
                                     "extra": {} if extra is None else extra})


def read_architecture(path):
    """The ``architecture`` dict stored in a checkpoint at ``path``, or None (plain weights, other files)."""
    try:
        checkpoint = io.load_checkpoint(path)
    except ValueError:
        return None
    architecture = checkpoint.get("architecture") or checkpoint.get("extra", {}).get("architecture")
    return architecture if isinstance(architecture, dict) else None


def load_pruned(path):
    """Rebuild and load a model saved by :func:`save_pruned`; returns ``(model, extra)``.

    The architecture is rebuilt from the original builder and the stored channel counts (validated),
    then the weights are loaded with ``strict=True`` (every name and shape must match).
    """
    checkpoint = io.load_checkpoint(path)
    if checkpoint.get("kind") != PRUNED_KIND:
        raise ValueError(f"{path} is not a pruned model written by save_pruned (kind {checkpoint.get('kind')!r})")
    model = build_pruned(checkpoint["architecture"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint.get("extra", {})
