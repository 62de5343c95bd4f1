"""Transfer learning: start a model from pretrained weights, freeze its backbone, or start its residual
blocks as the identity.

Fine-tuning a pretrained MobileNetV2 on two new classes: :func:`load_pretrained` copies every weight of a
saved model (our ``.npz``, a checkpoint, or a torchvision ``.pth``) except the final classifier layer,
which the new model has built for its own number of classes; :func:`freeze_backbone` leaves that layer
alone to learn, with the rest of the network in evaluation mode (a fixed feature extractor).
:func:`zero_init_residual_` zeroes the last batch-norm scale of every identity-shortcut branch.
"""
import os
import pathlib

import numpy as np

from . import io, nn
from .evaluate import find_classifier

__all__ = ["load_pretrained", "freeze_backbone", "zero_init_residual_"]


def _read_weights(source):
    """A state dict from a path (``.npz`` weights or checkpoint, ``.pth``/``.pt``) or a mapping."""
    if isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(source).expanduser()
        if path.suffix in (".pth", ".pt"):
            return io.convert_torch_state_dict(path)
        try:
            return io.load_weights(path)
        except ValueError as error:
            if "is a checkpoint" not in str(error):
                raise
            checkpoint = io.load_checkpoint(path)               # a Trainer checkpoint: take its model
            if not isinstance(checkpoint.get("model"), dict):
                raise ValueError(f"{path} is a checkpoint without a 'model' entry") from None
            return checkpoint["model"]
    if hasattr(source, "keys"):
        return io.convert_torch_state_dict(source)
    raise TypeError(f"weights must be a path or a state dict; got {type(source).__name__}")


def load_pretrained(model, weights):
    """Copy pretrained weights into ``model``, all but a final classifier built for other classes.

    Parameters
    ----------
    model : Module, built for the new task (``get_model(name, num_classes=2)``)
    weights : path or mapping
        Our ``.npz`` weights, a :class:`~tinycnn.train.Trainer` checkpoint (its ``model`` entry), a torchvision
        ``.pth`` state dict (read without PyTorch, see :func:`tinycnn.io.read_torch_file`) or a
        state dict.

    Returns
    -------
    dict with ``"loaded"`` (names copied) and ``"replaced"`` (the classifier's names that kept the new
    model's fresh initialisation because their shapes differ: a new number of classes).

    Every other entry must match by name and shape, else ``ValueError`` names the first few that do not
    (weights of another architecture or width). Nothing is changed unless the check passes.
    """
    state = _read_weights(weights)
    head_name, _ = find_classifier(model)
    head_prefix = f"{head_name}." if head_name else ""
    own = model.state_dict()
    replaced, problems = [], []
    for key, value in own.items():
        if key not in state:
            if key.rsplit(".", 1)[-1] != "num_batches_tracked":
                problems.append(f"missing {key}")
        elif np.shape(state[key]) != value.shape:
            if key.startswith(head_prefix):
                replaced.append(key)
            else:
                problems.append(f"{key} has shape {np.shape(state[key])} in the weights, {value.shape} in the model")
    problems += [f"unexpected {key}" for key in state if key not in own]
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise ValueError(f"the weights do not fit {type(model).__name__}: {'; '.join(problems[:4])}{more}. "
                         f"Are they for the same model and --width-mult?")
    loadable = {key: state[key] for key in own if key in state and key not in replaced}
    model.load_state_dict(loadable, strict=False)
    return {"loaded": list(loadable), "replaced": replaced}


def freeze_backbone(model):
    """Put every layer but the final classifier in evaluation mode; return the classifier's parameters.

    Give the returned list to the optimizer: only the classifier learns; batch norm keeps its
    pretrained running statistics (frozen layers in training mode would still update them).
    Our layers have no ``requires_grad``: ``model.backward`` would still send the gradient through the
    whole network (the frozen weights just never change). :class:`~tinycnn.train.Trainer` with ``frozen_backbone=True``
    calls the classifier's own ``backward`` instead, when its output is the model's output (every
    model of the zoo but SqueezeNet, whose classifier conv is followed by ReLU and pooling), so a step
    costs little more than a forward pass. Call this again after every ``model.train()`` (the Trainer does).
    """
    head_name, head = find_classifier(model)
    related = lambda name: (name == head_name or head_name.startswith(f"{name}.") or name == ""   # noqa: E731
                            or name.startswith(f"{head_name}."))
    for name, module in model.named_modules():
        if not related(name):
            module.train(False)
    return list(head.parameters())


def zero_init_residual_(model):
    """Start every identity-shortcut block as the identity: zero the scale of its branch's last batch norm.

    A block computes ``y = x + BN(conv(...))``; with the final BN's ``weight`` (gamma) at 0 the branch
    outputs 0 and ``y = x``, so a deep network starts as a shallow one and signals and gradients pass
    through the shortcuts unchanged. Goyal et al. (arXiv:1706.02677, sec. 5.1) and the "bag of tricks"
    (He et al., arXiv:1812.01187) use it to train ResNets faster; on the shapes data it makes MobileNet V2
    reach 90% in about half the epochs. The gradient of gamma is not zero, so the branches wake up in the
    first steps.

    Applies to every :class:`tinycnn.nn.ShortcutBlock` whose shortcut is the identity (``use_residual``
    and no projection): MobileNet V2's and V3's inverted residuals, MobileNeXt's sandglass blocks,
    GhostNet's bottlenecks, ResNet's blocks and :class:`~tinycnn.nn.Residual` without a shortcut
    module. The block names the batch norm (:meth:`~tinycnn.nn.ShortcutBlock.branch_output_norm`).
    Returns the number of blocks changed.
    """
    changed = 0
    for module in model.modules():
        if not (isinstance(module, nn.ShortcutBlock) and module.use_residual and module.has_shortcut):
            continue
        norm = module.branch_output_norm()
        if norm is not None and norm.weight is not None:
            norm.weight.data[...] = 0
            changed += 1
    return changed
