"""Evaluation of a trained classifier: loss, accuracy, logits, penultimate features, confusion matrix.

The bottom of the training stack: :mod:`tinycnn.train` (validation after every epoch), :mod:`tinycnn.run`
(``tinycnn evaluate``) and :mod:`tinycnn.plots` (the confusion-matrix and embedding plots) all import
from here, and this module imports none of them::

    evaluation = evaluate_model(model, val_loader, features=True)   # eval mode, every batch once
    evaluation.accuracy, evaluation.logits.shape                    # float, (N, K)
    confusion_matrix(evaluation.labels, evaluation.predictions, K)  # (K, K) counts
"""
import numbers
from typing import NamedTuple, Optional

import numpy as np

from . import losses, nn

__all__ = ["Evaluation", "evaluate_model", "confusion_matrix", "find_classifier"]


class Evaluation(NamedTuple):
    """What :func:`evaluate_model` returns.

    loss : float, mean cross-entropy over the images
    accuracy : float in [0, 1]
    logits : (N, K) float32
    labels : (N,) int64
    features : (N, D) float32 or None -- the input of the final classifier layer (the penultimate
        features an embedding plot shows), when asked for
    """
    loss: float
    accuracy: float
    logits: np.ndarray
    labels: np.ndarray
    features: Optional[np.ndarray] = None

    @property
    def predictions(self):
        """(N,) int64: the arg-max class of every image."""
        return self.logits.argmax(axis=1)


def find_classifier(model):
    """``(name, module)`` of the model's final classifier layer: the last ``Linear`` or ``Conv2d``.

    Every model of the zoo ends with its classifier (``classifier.1`` of MobileNet V2, ``classifier.3``
    of MobileNet V3, ``fc`` of ResNet and ShuffleNet, the 1x1 ``classifier.1`` conv of SqueezeNet), and
    registers it last, so "the last layer with weights in registration order" finds it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a tinycnn.nn.Module; got {type(model).__name__}")
    found = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            found = (name, module)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv2d layer to use as its classifier")
    return found


def evaluate_model(model, loader, criterion=None, features=False):
    """Run ``model`` in evaluation mode over every batch of ``loader``.

    Parameters
    ----------
    model : Module mapping (B, C, H, W) images to (B, K) logits
    loader : iterable of ``(x, y)`` batches (a :class:`tinycnn.data.DataLoader` without shuffling)
    criterion : loss with ``reduction='mean'``; default cross-entropy
    features : bool
        Also record the input of the final classifier layer (:func:`find_classifier`), flattened to
        (B, D), with a forward hook.

    Returns
    -------
    Evaluation(loss, accuracy, logits (N, K), labels (N,), features (N, D) or None)

    The model is left in evaluation mode; the loss is averaged per image (each batch weighted by its size).
    The forward passes run inside :func:`tinycnn.nn.no_grad` (the same logits, faster).
    """
    criterion = losses.CrossEntropyLoss() if criterion is None else criterion
    model.eval()
    captured = []
    handle = None
    if features:
        _, head = find_classifier(model)
        handle = head.register_forward_hook(
            lambda module, inputs, output: captured.append(inputs[0].reshape(len(inputs[0]), -1).copy()))
    all_logits, all_labels, loss_sum = [], [], 0.0
    try:
        for x, y in loader:
            with nn.no_grad():                                  # no backward follows: layers fuse, keep nothing
                logits = model(x)                               # (B, K)
            loss_sum += float(criterion(logits, y)) * len(y)
            all_logits.append(np.asarray(logits, dtype=np.float32))
            all_labels.append(y)
    finally:
        if handle is not None:
            handle.remove()
    if not all_labels:
        raise ValueError("evaluate_model: the loader produced no batches")
    logits, labels = np.concatenate(all_logits), np.concatenate(all_labels)
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    feature_array = np.concatenate(captured).astype(np.float32) if features else None
    return Evaluation(loss_sum / len(labels), accuracy, logits, labels, feature_array)


def confusion_matrix(labels, predictions, num_classes):
    """``(K, K)`` int64 matrix: entry ``[i, j]`` counts images of class ``i`` predicted as class ``j``.

    The diagonal holds the correct predictions; row ``i`` sums to the number of images of class ``i``.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels and predictions must be 1-D of the same length; got {labels.shape} "
                         f"and {predictions.shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must be in [0, {num_classes}); got values in [{values.min()}, {values.max()}]")
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)   # one bin per (true, predicted)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)

