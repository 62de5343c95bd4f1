"""What does the network look at? Grad-CAM and input-gradient saliency, from tinycnn's own backward pass.

**Grad-CAM** (Selvaraju et al. 2017, arXiv:1610.02391). Take a convolutional layer's output
``A`` (``K`` feature maps of ``h x w``) and the score ``y_c`` of a class (its logit, before softmax).
Each map gets a weight, the spatial mean of the score's gradient with respect to it,

    alpha_k = 1 / (h w) * sum_ij  d y_c / d A_k[i, j]          (how much map k pushes class c up)

and the class activation map is the positive part of the weighted sum of the maps,

    L_c = ReLU( sum_k alpha_k A_k )                              (h x w, upsampled to the image)

For a network ending in global average pooling and one linear layer, ``alpha_k`` is exactly the
classifier's weight ``W[c, k] / (h w)`` and ``L_c`` is the CAM of Zhou et al. (arXiv:1512.04150).

**Saliency** (Simonyan et al. 2013, arXiv:1312.6034): ``max_channel |d y_c / d x|``, the pixels whose
change would change the score most.

Both need ``d y_c / d (something inside the model)``: one forward pass, then ``model.backward`` of the
one-hot gradient ``d y_c / d logits``. A forward hook records ``A``; the layer's ``backward`` is wrapped
for the duration of the call to record the gradient that reaches it. Parameter gradients are restored
afterwards, so calling these in the middle of training changes nothing::

    from tinycnn.explain import grad_cam
    result = grad_cam(model, x, target_class=None, layer="features")   # x: (3, 224, 224) preprocessed
    result.heatmap                                                      # (224, 224) in [0, 1]
"""
from typing import NamedTuple

import numpy as np

from .data.loader import resize_images

__all__ = ["GradCAM", "grad_cam", "saliency_map", "default_cam_layer"]


class GradCAM(NamedTuple):
    """The result of :func:`grad_cam`."""

    heatmap: np.ndarray          # (H, W) float64 in [0, 1]: ``cam`` upsampled to the input and divided by its max
    cam: np.ndarray              # (h, w) float64: ReLU(sum_k alpha_k A_k) at the layer's resolution
    weights: np.ndarray          # (K,) float64: alpha_k, the spatial mean of d y_c / d A_k
    activations: np.ndarray      # (K, h, w): the layer's output A for this image
    target_class: int            # the class c explained
    logits: np.ndarray           # (num_classes,): the model's output for the image
    layer: str                   # the layer's dotted name


def _as_batch(model, image):
    """``image`` (C, H, W) or (1, C, H, W) float -> (1, C, H, W) in the model's parameter dtype."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1 or image.dtype.kind != "f":
        raise ValueError(f"image must be one float image (C, H, W) or (1, C, H, W), already preprocessed; got "
                         f"{image.dtype} of shape {image.shape}")
    dtype = next((p.data.dtype for p in model.parameters()), np.dtype(np.float32))
    return np.ascontiguousarray(image, dtype=dtype)


def _layer(model, name):
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"no layer {name!r} in {type(model).__name__}; layers include "
                         f"{', '.join(names[:8])}, ... {', '.join(names[-4:])}") from None


def default_cam_layer(model, input_shape):
    """The last layer (in the order the forward pass finishes them) whose output is a feature map
    ``(N, K, h, w)`` with ``h * w > 1``: the final convolutional features, which Grad-CAM uses by default
    (``features`` for MobileNet V2, ``layer4`` for ResNet)."""
    finished = []
    handles = [module.register_forward_hook(
        lambda module, inputs, output, name=name: finished.append((name, np.shape(output))))
        for name, module in model.named_modules() if name]
    try:
        model.eval()
        model(np.zeros((1,) + tuple(input_shape[-3:]), dtype=next(model.parameters()).data.dtype))
    finally:
        for handle in handles:
            handle.remove()
    maps = [name for name, shape in finished if len(shape) == 4 and shape[2] * shape[3] > 1]
    if not maps:
        raise ValueError(f"{type(model).__name__} has no layer with a (N, K, h, w) output larger than 1 x 1")
    return maps[-1]


def _score_gradients(model, x, target_class, layer_name=None):
    """Forward ``x`` (1, C, H, W); backward ``d y_c / d logits``. Returns logits, c, A, dy/dA, dy/dx.

    ``A`` and ``dy/dA`` are the output of ``layer_name`` and the gradient reaching it (None without a layer).
    The model is left in evaluation mode with its parameter gradients as they were.
    """
    saved_grads = [(p, p.grad.copy()) for p in model.parameters()]
    recorded = {}
    handle, layer = None, None
    if layer_name is not None:
        layer = _layer(model, layer_name)
        handle = layer.register_forward_hook(lambda module, inputs, output: recorded.__setitem__("A", output))
        original_backward = layer.backward

        def recording_backward(grad_out):                 # what the layer receives: d y_c / d A
            recorded["dA"] = grad_out
            return original_backward(grad_out)
        object.__setattr__(layer, "backward", recording_backward)    # this instance only, undone below
    try:
        model.eval()
        logits = model(x)
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise ValueError(f"the model's output has shape {logits.shape}; expected (1, num_classes) logits")
        num_classes = logits.shape[1]
        if target_class is None:
            target_class = int(np.argmax(logits[0]))
        if isinstance(target_class, bool) or not isinstance(target_class, (int, np.integer)) \
                or not 0 <= target_class < num_classes:
            raise ValueError(f"target_class must be an int in [0, {num_classes}); got {target_class!r}")
        one_hot = np.zeros_like(logits)                    # d y_c / d logits
        one_hot[0, target_class] = 1
        grad_x = model.backward(one_hot)
    finally:
        if handle is not None:
            handle.remove()
            del layer.__dict__["backward"]
        for parameter, grad in saved_grads:
            parameter.grad[...] = grad
    if layer is not None and ("A" not in recorded or "dA" not in recorded):
        raise ValueError(f"layer {layer_name!r} was not used in both the forward and the backward pass")
    return logits[0], int(target_class), recorded.get("A"), recorded.get("dA"), grad_x


def grad_cam(model, image, target_class=None, layer=None):
    """Grad-CAM heat map of ``target_class`` for one image (Selvaraju et al., arXiv:1610.02391).

    Parameters
    ----------
    model : Module with a working ``backward`` (every tinycnn model)
    image : (C, H, W) or (1, C, H, W) float, preprocessed as the model expects
        (e.g. :class:`tinycnn.data.ImageNetPreprocess`)
    target_class : int, optional
        The class to explain; default the predicted one (arg-max logit).
    layer : str, optional
        Dotted name of the layer whose output ``A`` (``(1, K, h, w)``) is weighted; default
        :func:`default_cam_layer` (the last feature maps).

    Returns
    -------
    :class:`GradCAM`: ``heatmap`` (H, W) in [0, 1], the raw ``cam`` (h, w), channel ``weights``
    ``alpha_k = mean_ij dy_c/dA_k[i, j]`` (K,), ``activations``, ``target_class``, ``logits``, ``layer``.
    The heat map is ``cam`` resized bilinearly to the input and divided by its maximum (all zeros if
    no location supports the class).
    """
    x = _as_batch(model, image)
    layer = default_cam_layer(model, x.shape) if layer is None else layer
    logits, target_class, A, dA, _ = _score_gradients(model, x, target_class, layer)
    if np.ndim(A) != 4:
        raise ValueError(f"layer {layer!r} outputs shape {np.shape(A)}, not (1, K, h, w) feature maps")
    A, dA = A[0].astype(np.float64), dA[0].astype(np.float64)            # (K, h, w)
    weights = dA.mean(axis=(1, 2))                                       # (K,)  alpha_k
    cam = np.maximum(np.tensordot(weights, A, axes=1), 0.0)             # (h, w) ReLU(sum_k alpha_k A_k)
    H, W = x.shape[2:]
    heatmap = resize_images(cam[None, None], (H, W))[0, 0]              # (H, W), bilinear
    heatmap = np.maximum(heatmap, 0.0)
    peak = heatmap.max()
    heatmap = heatmap / peak if peak > 0 else heatmap
    return GradCAM(heatmap, cam, weights, A, target_class, logits, layer)


def saliency_map(model, image, target_class=None):
    """Input-gradient saliency (Simonyan et al., arXiv:1312.6034): ``max_channel |d y_c / d x|``.

    Parameters as :func:`grad_cam`. Returns ``(saliency, target_class)``: saliency is (H, W) float64,
    divided by its maximum (so in [0, 1]).
    """
    x = _as_batch(model, image)
    _, target_class, _, _, grad_x = _score_gradients(model, x, target_class)
    saliency = np.abs(grad_x[0]).max(axis=0).astype(np.float64)         # (H, W)
    peak = saliency.max()
    return (saliency / peak if peak > 0 else saliency), target_class
