"""Pretrained ImageNet networks: a torchvision checkpoint in a tinycnn model, classifying photos.

torchvision's ImageNet weights load into the zoo model of the same name (same keys, shapes and order),
read by :func:`tinycnn.io.read_torch_file` without PyTorch::

    from tinycnn.pretrained import pretrained_model, classify_images
    model = pretrained_model("mobilenet_v2", "mobilenet_v2-b0353104.pth")
    classify_images(model, ["chelsea.png"], top=5)
    # [[('Egyptian cat', 0.717), ('tiger cat', 0.147), ('tabby', 0.129), ('lynx', 0.005), ...]]

The command line does the same: ``tinycnn predict chelsea.png --weights mobilenet_v2-b0353104.pth
--model mobilenet_v2 --labels imagenet``.
"""
import os

import numpy as np

from . import io, nn
from .data.imagenet import IMAGENET_CLASSES, ImageNetPreprocess
from .evaluate import find_classifier
from .models import get_model
from .run import predict_images

__all__ = ["pretrained_model", "read_class_names", "classify_images"]


def pretrained_model(name, weights, num_classes=1000, **model_kwargs):
    """The zoo model ``name`` with the weights in ``weights``, loaded strictly, in evaluation mode.

    Parameters
    ----------
    name : str
        A :func:`tinycnn.models.list_models` name whose layout matches the checkpoint (torchvision's
        ``mobilenet_v2``, ``mobilenet_v3_large``, ``resnet18``, ``shufflenet_v2_x1_0``, ``squeezenet1_1``...).
    weights : str, os.PathLike or mapping
        A ``.pth``/``.pt`` file (no PyTorch needed), our ``.npz`` weights, or a state dict.
    num_classes : int
        Outputs of the classifier: 1000 for ImageNet checkpoints.
    **model_kwargs
        Passed to the model builder (e.g. ``width_mult``).

    Raises ``ValueError`` if the weights do not fit the model (the message names the first keys or shapes
    that differ), and the errors of :func:`tinycnn.io.read_torch_file` for unreadable files.
    """
    with nn.init.skip_init():             # every parameter is replaced below: no random draws to throw away
        model = get_model(name, num_classes=num_classes, **model_kwargs)
    if isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith((".pth", ".pt")):
        state = io.convert_torch_state_dict(weights)
    elif isinstance(weights, (str, os.PathLike)):
        state = io.load_weights(weights)
    else:
        state = io.convert_torch_state_dict(weights)
    mismatch = _mismatch(model.state_dict(), state)
    if mismatch:
        source = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else "the state dict"
        raise ValueError(f"the weights in {source} do not fit {name} with {num_classes} classes: {mismatch}. "
                         f"Are they for another model, width or number of classes?")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _mismatch(own, state, shown=3):
    """A short description of how the state dict ``state`` differs from the model's ``own`` ('' if it fits)."""
    missing = [key for key in own if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in own]
    reshaped = [f"{key} {tuple(np.shape(state[key]))} in the weights, {own[key].shape} in the model"
                for key in own if key in state and np.shape(state[key]) != own[key].shape]
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("different shape", reshaped)):
        if items:
            more = f", ... ({len(items)} in all)" if len(items) > shown else ""
            parts.append(f"{what}: {', '.join(items[:shown])}{more}")
    return "; ".join(parts)


def read_class_names(labels):
    """Class names from ``"imagenet"`` (the 1000 shipped with tinycnn) or a text file, one name per line.

    Returns a tuple of str; blank lines at the end of the file are ignored, blank lines inside are refused.
    """
    if labels == "imagenet":
        return IMAGENET_CLASSES
    path = os.fspath(labels)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such labels file: {path} (give 'imagenet' or a text file, one name a line)")
    with open(path, encoding="utf-8") as file:
        names = file.read().rstrip("\n").split("\n")
    if not any(names) or not all(name.strip() for name in names):
        raise ValueError(f"labels file {path} must hold one non-empty class name per line")
    return tuple(name.strip() for name in names)


def classify_images(model, images, class_names=IMAGENET_CLASSES, top=5, preprocess=None):
    """The ``top`` most probable classes of each image, with softmax probabilities.

    Parameters
    ----------
    model : Module with ``len(class_names)`` outputs (e.g. from :func:`pretrained_model`)
    images : sequence of image paths, Pillow images or ``(H, W, 3)`` uint8 arrays, any sizes
    class_names : sequence of str, default the 1000 ImageNet classes
    top : int, at most ``len(class_names)``
    preprocess : :class:`~tinycnn.data.ImageNetPreprocess`, default ``ImageNetPreprocess()``
        (resize 256, centre crop 224, ImageNet mean/std).

    Returns
    -------
    list (one per image) of ``[(class_name, probability), ...]``, most probable first.
    """
    preprocess = ImageNetPreprocess() if preprocess is None else preprocess
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= len(class_names):
        raise ValueError(f"top must be an int from 1 to {len(class_names)} (the number of classes); got {top!r}")
    crops = np.stack([preprocess.resized_and_cropped(image).transpose(2, 0, 1)     # (N, 3, S, S) uint8
                      for image in images])
    statistics = {"mean": preprocess.normalize.mean, "std": preprocess.normalize.std,
                  "class_names": tuple(class_names)}
    _check_outputs(model, len(class_names))
    return predict_images(model, statistics, crops, top=int(top))


def _check_outputs(model, num_classes):
    """ValueError unless ``model`` ends in ``num_classes`` outputs (read off its last Linear/Conv layer)."""
    _, classifier = find_classifier(model)
    outputs = getattr(classifier, "out_features", None) or getattr(classifier, "out_channels", None)
    if outputs is not None and outputs != num_classes:
        raise ValueError(f"the model has {outputs} outputs but {num_classes} class names were given")
