"""Structured channel pruning: a genuinely smaller network, not a mask.

Removing output channel ``c`` of a convolution removes ``weight[c]`` and ``bias[c]``, entry ``c`` of the
batch norm after it, the depthwise filter ``c`` that may follow (a depthwise convolution maps channel
``c`` to channel ``c``), and the input slice ``weight[:, c]`` of the next dense convolution or fully
connected layer. One such set of tied channels is a :class:`ChannelGroup`: the layers that *write* the
channels (a dense convolution, its BN, depthwise convolutions that carry them) and the layers that *read*
them (depthwise convolutions, then a dense convolution or ``Linear``). The network that remains has fewer
channels everywhere along it, so it needs fewer parameters, fewer multiply-adds and less memory, and runs
on the ordinary kernels.

Which channels are prunable (found by :func:`channel_groups` from the blocks' roles):

* inside a block, the hidden channels: MobileNet V2's inverted residual ``expand`` outputs = ``depthwise``
  channels = ``project`` inputs; MobileNeXt's sandglass bottleneck (``reduce`` outputs = ``expand``
  inputs); ResNet's ``conv1 -> conv2`` (and ``conv2 -> conv3`` in a bottleneck);
* between blocks, where no shortcut adds onto the tensor (walking the model as a chain of units:
  ``features`` then the classifier's ``Linear``; ResNet's stem, blocks and ``fc``): MobileNet V1's
  pointwise outputs (through the next depthwise convolution into the next pointwise one), MobileNet V2's
  stem, its single-block stages' outputs and its 1280-channel last convolution (into the classifier),
  MobileNeXt's stem and the wide outputs of its stage-changing blocks, ResNet-50's stem (read by the
  first block and its ``downsample``).

Channels that are added to a shortcut (a residual stage's width) stay by default: removing one means
removing it from every tensor of the sum at once. ``tied="prune"`` does exactly that: a residual stage's
channels form one *tied* group whose writers are every convolution that writes into the stage's tensor
(the first block's projection, each residual block's projection, a ResNet ``downsample`` convolution, the
stem before an identity shortcut) and whose readers are every layer that reads it (each block's first
convolution, the next stage's first convolution or ``downsample``, the classifier). All of them lose the
same channel indices, so every sum still adds channel ``c`` to channel ``c``. For MobileNeXt these are
its wide "inter-block" channels, where the sandglass blocks add their shortcuts. With its identity tensor
multiplier only the first ``k`` channels take the shortcut; pruning keeps the channels in order, so the
kept ones among the first ``k`` stay first and each block's ``identity_channels`` becomes their count.

Not pruned, even with ``tied="prune"``: channels joined by a concatenation (ShuffleNet, SqueezeNet's
fire modules, GhostNet) or scaled by squeeze-and-excitation on a shortcut's tensor (SE-ResNet's stage
channels): those groups are skipped, the rest of the network is pruned.

Criteria (the score of a channel; low scores go first):

* ``"l1"``: the L1 norm of the producing filter, ``sum |weight[c]|`` (Li et al., "Pruning Filters for
  Efficient ConvNets", arXiv:1608.08710); in a tied group, the sum over its writers' filters;
* ``"bn"``: ``|gamma_c|`` of its batch norm, "network slimming" (Liu et al., arXiv:1708.06519): a channel
  whose BN scale is near zero outputs almost a constant. A channel that passes through a depthwise
  convolution has two BNs; its score is the product of both ``|gamma|``. In a tied group the writers'
  scores are *summed* (the channel carries nothing only if every tensor added into it is ~0) and multiplied
  by the *mean* over the readers of their depthwise BNs' product (it is useless only if every reader
  ignores it); with one writer and one reader this is the plain product.

Scores of a tied group add several writers, so with ``threshold=`` they are on a larger scale than a
single layer's.

A channel whose last batch norms have ``gamma = beta = 0`` outputs exactly 0 (after ReLU/ReLU6, after the
shortcut add when every tensor of the sum is 0), so pruning it leaves the logits unchanged (tested).

The pruned architecture is described by ``model.pruned_channels``, ``{group name: channels kept}`` (a pair
``[kept, kept on the shortcut]`` for a MobileNeXt stage with a partial shortcut): :func:`save_pruned`
stores it (JSON, no code) with the weights, and :func:`load_pruned` / :func:`apply_channel_config`
rebuild the smaller network from the original builder before loading.
"""
import copy
import dataclasses
import numbers

import numpy as np

from . import io, nn

__all__ = ["ChannelGroup", "channel_groups", "channel_scores", "prune_channels", "apply_channel_config",
           "save_pruned", "load_pruned", "read_architecture", "build_pruned", "CRITERIA", "TIED", "PRUNED_KIND"]

CRITERIA = ("l1", "bn")
TIED = ("keep", "prune")                # what prune_channels does with channels tied to a shortcut
PRUNED_KIND = "tinycnn-pruned"          # checkpoint["kind"] of a file written by save_pruned


@dataclasses.dataclass
class ChannelGroup:
    """Channels that must be removed together: the same indices go from every member.

    Attributes
    ----------
    name : str
        Qualified name of the first writer's convolution (``features.3.conv.0.0``); the key in
        ``pruned_channels``.
    writers : list of (Conv2d, BatchNorm2d, passthrough)
        Each writes the channels: a dense convolution (``weight[c]``), the BN right after it, and the
        depthwise convolutions (with their BN) that carry channel ``c`` to channel ``c`` on its side. One
        writer in a plain group; a tied group has one per tensor added into the same channels.
    readers : list of (passthrough, consumer)
        Each reads the channels: depthwise ``(Conv2d, BatchNorm2d)`` pairs that carry them (possibly
        none), then a dense ``Conv2d`` or ``Linear`` (``weight[:, c]``).
    blocks : list of ShortcutBlock
        Residual blocks whose identity shortcut adds onto the channels (tied groups; empty otherwise).
    shortcut_channels : int or None
        MobileNeXt's partial identity: only the first ``k`` channels take those shortcuts (None: all).
    """
    name: str
    writers: list
    readers: list
    blocks: list = dataclasses.field(default_factory=list)
    shortcut_channels: int = None

    @property
    def channels(self):
        return self.writers[0][0].out_channels

    @property
    def tied(self):
        """True if the channels are a sum of several tensors (a shortcut adds onto them)."""
        return len(self.writers) > 1 or bool(self.blocks)

    @property
    def batch_norms(self):
        """Every BN on the channels' paths: the writers' (in order), then the readers' depthwise BNs."""
        norms = []
        for _, bn, passthrough in self.writers:
            norms += [bn] + [pass_bn for _, pass_bn in passthrough]
        for passthrough, _ in self.readers:
            norms += [pass_bn for _, pass_bn in passthrough]
        return norms

    @property
    def last_batch_norms(self):
        """The BN at the end of each path: each writer's last one, each reader's last depthwise one.

        With ``gamma = beta = 0`` in all of them the channels carry exactly 0 into every consumer.
        """
        norms = [(passthrough[-1][1] if passthrough else bn) for _, bn, passthrough in self.writers]
        return norms + [passthrough[-1][1] for passthrough, _ in self.readers if passthrough]


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


def _is_sandglass(block):
    """MobileNeXt's block by its roles: a shortcut block with ``reduce`` and ``expand`` conv-BN units."""
    return isinstance(block, nn.ShortcutBlock) and all(isinstance(block._modules.get(role), nn.Sequential)
                                                        for role in ("reduce", "expand"))


def _is_resnet_block(block):
    """ResNet's basic or bottleneck block by its roles (``conv1``, ``bn1``, ..., torchvision's names)."""
    return isinstance(block, nn.ShortcutBlock) and isinstance(block._modules.get("conv1"), nn.Conv2d) \
        and isinstance(block._modules.get("bn1"), nn.BatchNorm2d)


def _block_groups(block):
    """Hidden channel groups inside one block, by its roles; ``(writers, readers)`` pairs."""
    if _is_inverted_residual(block):
        layers = list(block.conv)                        # [expand], depthwise, project, project BN
        if len(layers) == 4:                             # t > 1: expand -> depthwise -> project
            expand, depthwise = _conv_bn(layers[0]), _conv_bn(layers[1])
            return [([(expand[0], expand[1], [depthwise])], [([], layers[2])])]
        return []
    found = []
    if _is_sandglass(block):
        reduce, expand = _conv_bn(block.reduce), _conv_bn(block.expand)          # sandglass bottleneck
        if reduce and expand and _dense(reduce[0]) and _dense(expand[0]):
            found.append(([(reduce[0], reduce[1], [])], [([], expand[0])]))
    roles = [("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")]               # ResNet branches
    for conv_name, bn_name, next_name in roles:
        conv, bn, after = (block._modules.get(name) for name in (conv_name, bn_name, next_name))
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(after, nn.Conv2d) \
                and _dense(conv) and _dense(after) and conv.out_channels == bn.num_features == after.in_channels:
            found.append(([(conv, bn, [])], [([], after)]))
    return found


# ----------------------------------------------------------------------------------------------------
# Between blocks: the tensor from one unit of the chain to the next, through every identity shortcut
# ----------------------------------------------------------------------------------------------------
def _first_linear(module):
    """The classifier's first ``Linear``: the layer that reads the pooled features (None if there is none)."""
    return next((m for m in module.modules() if isinstance(m, nn.Linear)), None)


def _chain_units(model):
    """The model as a chain of units joined by one tensor each, or None.

    MobileNet V1/V2 and MobileNeXt: the units of ``features``, then the classifier's ``Linear``. ResNet:
    its stem (``conv1, bn1``; ReLU and max-pooling act per channel), the blocks of ``layer1..layer4``,
    then ``fc`` (after pooling, which acts per channel too).
    """
    features, classifier = model._modules.get("features"), model._modules.get("classifier")
    if isinstance(features, nn.Sequential) and classifier is not None:
        return list(features) + [_first_linear(classifier)]
    stages = [model._modules.get(f"layer{index}") for index in range(1, 5)]
    conv1, bn1, fc = (model._modules.get(name) for name in ("conv1", "bn1", "fc"))
    if isinstance(conv1, nn.Conv2d) and isinstance(bn1, nn.BatchNorm2d) and isinstance(fc, nn.Linear) \
            and all(isinstance(stage, nn.Sequential) for stage in stages):
        return [nn.Sequential(conv1, bn1)] + [block for stage in stages for block in stage] + [fc]
    return None


def _unit_ends(unit):
    """``(readers, writers, passes)`` of one unit of a chain.

    ``readers`` read the unit's input tensor, ``writers`` write its output tensor (None: unknown roles,
    the tensor is not prunable); ``passes`` is True when an identity shortcut adds the input onto the
    output, so both are one tensor.
    """
    if isinstance(unit, nn.Linear):
        return [([], unit)], None, False
    if _conv_bn(unit) and _dense(_conv_bn(unit)[0]):                               # conv-BN(-activation)
        conv, bn = _conv_bn(unit)
        return [([], conv)], [(conv, bn, [])], False
    if isinstance(getattr(unit, "depthwise", None), nn.Sequential) \
            and isinstance(getattr(unit, "pointwise", None), nn.Sequential):     # MobileNet V1 block
        pointwise = _conv_bn(unit.pointwise)
        return [([_conv_bn(unit.depthwise)], pointwise[0])], [(pointwise[0], pointwise[1], [])], False
    if not isinstance(unit, nn.ShortcutBlock):
        return None, None, False
    passes = unit.has_shortcut and unit._shortcut_layer() is None                 # an identity shortcut
    if _is_inverted_residual(unit):                                                # MobileNet V2
        layers = list(unit.conv)
        readers = [([], layers[0][0])] if len(layers) == 4 else [([_conv_bn(layers[0])], layers[1])]
        return readers, [(layers[-2], layers[-1], [])], passes
    if _is_sandglass(unit):                                                        # MobileNeXt
        depthwise_in, depthwise_out = unit._modules.get("depthwise_in"), unit._modules.get("depthwise_out")
        expand = _conv_bn(unit.expand)
        readers = [([_conv_bn(depthwise_in)] if depthwise_in is not None else [], unit.reduce[0])]
        writers = [(expand[0], expand[1], [_conv_bn(depthwise_out)] if depthwise_out is not None else [])]
        return readers, writers, passes
    if not _is_resnet_block(unit) or unit._modules.get("se") is not None:
        return None, None, passes          # unknown, or squeeze-and-excitation also scales the channels
    last = "3" if isinstance(unit._modules.get("conv3"), nn.Conv2d) else "2"        # bottleneck or basic
    readers = [([], unit.conv1)]
    writers = [(unit._modules["conv" + last], unit._modules["bn" + last], [])]
    downsample = unit._shortcut_layer()
    if downsample is not None:                                                     # projection shortcut
        projection = _conv_bn(downsample)
        if projection is None:
            return None, None, passes
        readers.append(([], projection[0]))
        writers.append((projection[0], projection[1], []))
    return readers, writers, passes


def _stream_groups(model):
    """``(writers, readers, blocks)`` of every tensor between two units of the model's chain.

    Walks the units in order: a unit whose identity shortcut passes its input to its output adds its
    readers and writers to the current tensor; any other unit ends it (its readers read it) and starts
    the next one (its writers write it). Tensors with a member of unknown roles are left out.
    """
    units = _chain_units(model)
    if units is None:
        return []
    found, current = [], None
    for unit in units:
        readers, writers, passes = _unit_ends(unit)
        if current is not None:
            current["known"] &= readers is not None
            current["readers"] += readers or []
            if passes:                                     # same tensor: x + branch(x)
                current["known"] &= writers is not None
                current["writers"] += writers or []
                current["blocks"].append(unit)
                continue
            found.append(current)
        current = {"writers": writers or [], "readers": [], "blocks": [], "known": writers is not None}
    return [(stream["writers"], stream["readers"], stream["blocks"]) for stream in found
            if stream["known"] and stream["writers"] and stream["readers"]
            and _kinds_fit(stream["writers"], stream["readers"])]


def _kinds_fit(writers, readers):
    """Dense convolutions write and read the channels; only depthwise ones carry them in between."""
    carried = [conv for _, _, passthrough in writers for conv, _ in passthrough]
    carried += [conv for passthrough, _ in readers for conv, _ in passthrough]
    consumers = [consumer for _, consumer in readers]
    return all(_dense(conv) for conv, _, _ in writers) and all(_is_depthwise(conv) for conv in carried) \
        and all(isinstance(consumer, nn.Linear) or _dense(consumer) for consumer in consumers)


def _shortcut_channels(blocks, channels, name):
    """The ``k`` of a partial identity shared by ``blocks`` (MobileNeXt), or None when every channel is added."""
    counts = {block.identity_channels for block in blocks} - {None, channels}
    if len(counts) > 1:
        raise ValueError(f"{name}: the shortcuts onto these channels cover different channel counts {sorted(counts)}")
    return counts.pop() if counts else None


def channel_groups(model, tied="keep"):
    """Every prunable :class:`ChannelGroup` of ``model``, in the order of their first writers.

    Supported by role: MobileNet V1 (chain), MobileNet V2 (hidden + chain), MobileNeXt (bottlenecks and
    the tensors between blocks), ResNet / SE-ResNet (branch channels, ResNet-50's stem). Other models give
    the groups their blocks share with these (possibly none). ``tied="keep"`` leaves out the groups
    whose channels are a sum (:attr:`ChannelGroup.tied`: a shortcut adds onto them); ``tied="prune"``
    includes them: MobileNet V2 and MobileNeXt stages, ResNet stages without squeeze-and-excitation.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a tinycnn.nn.Module; got {type(model).__name__}")
    if tied not in TIED:
        raise ValueError(f"tied must be one of {', '.join(TIED)}; got {tied!r}")
    names = {id(module): name for name, module in model.named_modules()}
    found = []
    for module in model.modules():
        found += [(writers, readers, []) for writers, readers in _block_groups(module)]
    found += _stream_groups(model)
    groups = []
    for writers, readers, blocks in found:
        name = names[id(writers[0][0])]
        sizes = set()
        for conv, bn, passthrough in writers:
            sizes |= {conv.out_channels, bn.num_features} | {c.out_channels for c, _ in passthrough}
        for passthrough, consumer in readers:
            sizes |= {consumer.in_features if isinstance(consumer, nn.Linear) else consumer.in_channels}
            sizes |= {c.out_channels for c, _ in passthrough}
        if len(sizes) != 1:
            raise ValueError(f"{name}: channels do not line up along the group ({sorted(sizes)})")
        groups.append(ChannelGroup(name, writers, readers, blocks,
                                   _shortcut_channels(blocks, sizes.pop(), name)))
    if tied == "keep":
        groups = [group for group in groups if not group.tied]
    order = {id(module): index for index, module in enumerate(model.modules())}
    return sorted(groups, key=lambda group: order[id(group.writers[0][0])])


# ----------------------------------------------------------------------------------------------------
# Scores and selection
# ----------------------------------------------------------------------------------------------------
def _path_gamma(norms):
    """(C,) product of ``|gamma|`` of the batch norms along one path (1 for no BN)."""
    score = 1.0
    for bn in norms:
        if bn.weight is None:
            raise ValueError("criterion 'bn' needs affine batch norms; one on this path has no weight")
        score = score * np.abs(bn.weight.data.astype(np.float64))
    return score


def channel_scores(group, criterion="l1"):
    """(C,) float64 importance of each channel of ``group`` (low scores are pruned first).

    ``"l1"``: ``sum over writers of sum |weight[c]|`` of their dense convolution. ``"bn"``:
    ``(sum over writers of prod |gamma| along the writer) * (mean over readers of prod |gamma| of their
    depthwise BNs)``; with one writer and one reader, the product of every ``|gamma|`` on the path.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    if criterion == "l1":
        weights = [conv.weight.data.astype(np.float64) for conv, _, _ in group.writers]
        return sum(np.abs(weight).reshape(len(weight), -1).sum(axis=1) for weight in weights)
    written = sum(_path_gamma([bn] + [pass_bn for _, pass_bn in passthrough]) for _, bn, passthrough in group.writers)
    read = np.mean([_path_gamma([pass_bn for _, pass_bn in passthrough]) * np.ones(group.channels)
                    for passthrough, _ in group.readers], axis=0)
    return written * read


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


def _config_entry(group, keep):
    """What ``pruned_channels`` records for ``group``: the count kept, with a partial shortcut also the
    count kept among its first ``k`` channels (they stay first: ``keep`` is sorted)."""
    if group.shortcut_channels is None:
        return int(len(keep))
    return [int(len(keep)), int(np.sum(keep < group.shortcut_channels))]


def _apply(model, groups, keeps):
    """Slice every group to its kept channels, then refresh the blocks' channel attributes."""
    for group, keep in zip(groups, keeps):
        keep = np.asarray(keep, dtype=np.int64)
        for conv, bn, passthrough in group.writers:
            _slice_outputs(conv, keep)
            _slice_batch_norm(bn, keep)
            for depthwise, depthwise_bn in passthrough:
                _slice_outputs(depthwise, keep)
                _slice_batch_norm(depthwise_bn, keep)
        for passthrough, consumer in group.readers:
            for depthwise, depthwise_bn in passthrough:
                _slice_outputs(depthwise, keep)
                _slice_batch_norm(depthwise_bn, keep)
            _slice_inputs(consumer, keep)
        for block in group.blocks:             # a partial identity: the kept ones among its first k channels
            if block.identity_channels is not None:
                block.identity_channels = int(np.sum(keep < block.identity_channels))
    for module in model.modules():            # attributes some blocks keep for repr and input checks
        if isinstance(module, nn.Conv2dNormActivation):
            module.out_channels = module[0].out_channels
        elif _is_inverted_residual(module) or _is_sandglass(module) or _is_resnet_block(module):
            convs = [m for layer in module._branch_layers() for m in layer.modules() if isinstance(m, nn.Conv2d)]
            module.in_channels, module.out_channels = convs[0].in_channels, convs[-1].out_channels
            if _is_sandglass(module):
                module.reduced_channels = module.reduce[0].out_channels
        elif isinstance(getattr(module, "pointwise", None), nn.Sequential) and hasattr(module, "out_channels"):
            module.out_channels = module.pointwise[0].out_channels
    previous = dict(getattr(model, "pruned_channels", {}))
    previous.update({group.name: _config_entry(group, np.asarray(keep)) for group, keep in zip(groups, keeps)})
    model.pruned_channels = previous
    return model


def prune_channels(model, amount=0.5, criterion="l1", threshold=None, tied="keep"):
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
    tied : "keep" or "prune"
        ``"keep"`` (default): channels added to a shortcut stay. ``"prune"``: each residual stage's
        channels are one tied group, pruned by ``amount`` like the others, the same indices from every
        layer that writes or reads them (module docstring); MobileNeXt's inter-block channels too.
        Concatenated channels and SE-ResNet's stage channels stay either way.

    Returns
    -------
    Module: a deep copy with fewer channels, in the input's train/eval mode. ``pruned.pruned_channels``
    maps each group (its first writer's name) to the channels kept (``[kept, kept on the shortcut]`` for a
    MobileNeXt stage with a partial shortcut); ``pruned.pruned_indices`` to the indices kept, in the
    original numbering.

    Examples
    --------
    >>> from tinycnn import models, prune
    >>> model = models.get_model("resnet18", num_classes=10, width_mult=0.25)
    >>> smaller = prune.prune_channels(model, 0.5, criterion="bn", tied="prune")
    >>> smaller.fc.in_features, model.fc.in_features
    (64, 128)
    """
    if threshold is None:
        if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not 0 <= amount < 1:
            raise ValueError(f"amount must be a fraction in [0, 1); got {amount!r}")
    elif isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number; got {threshold!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    if tied not in TIED:
        raise ValueError(f"tied must be one of {', '.join(TIED)} (what to do with channels added to a shortcut); "
                         f"got {tied!r}")
    pruned = copy.deepcopy(model)
    groups = channel_groups(pruned, tied)
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

    Each group named in ``pruned_channels`` keeps its first ``n`` channels (the weights are then loaded
    over them); a group with a partial shortcut of ``k`` channels, recorded as ``[n, m]``, keeps its first
    ``m`` and the first ``n - m`` after the ``k``-th, so ``m`` channels stay on the shortcut. Tied groups
    are found whether or not the pruning was ``tied="prune"``. ``ValueError`` for a group the model does
    not have or counts that do not fit it. Returns ``model``.
    """
    if not isinstance(pruned_channels, dict):
        raise ValueError(f"pruned_channels must be a dict of group name -> channels kept; got "
                         f"{type(pruned_channels).__name__}")
    groups = {group.name: group for group in channel_groups(model, tied="prune")}
    chosen, keeps = [], []
    for name, kept in pruned_channels.items():
        if name not in groups:
            raise ValueError(f"the pruned architecture names a channel group {name!r} that "
                             f"{type(model).__name__} does not have: weights of another model?")
        chosen.append(groups[name])
        keeps.append(_kept_prefix(groups[name], kept))
    return _apply(model, chosen, keeps)


def _is_count(value, low, high):
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and low <= value <= high


def _kept_prefix(group, kept):
    """Indices a freshly built ``group`` keeps for its ``pruned_channels`` entry (validated)."""
    channels, shortcut = group.channels, group.shortcut_channels
    if shortcut is None:
        if not _is_count(kept, 1, channels):
            raise ValueError(f"group {group.name!r} must keep between 1 and {channels} channels; got {kept!r}")
        return np.arange(int(kept))
    if not (isinstance(kept, (list, tuple)) and len(kept) == 2 and _is_count(kept[0], 1, channels)
            and _is_count(kept[1], max(0, kept[0] - (channels - shortcut)), min(shortcut, kept[0]))):
        raise ValueError(f"group {group.name!r} (a shortcut on {shortcut} of its {channels} channels) must keep "
                         f"[n, m]: n in [1, {channels}] channels, m of them among the first {shortcut}; got {kept!r}")
    total, on_shortcut = int(kept[0]), int(kept[1])
    return np.concatenate([np.arange(on_shortcut), shortcut + np.arange(total - on_shortcut)])


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
