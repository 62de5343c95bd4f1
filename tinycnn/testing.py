"""Helpers for checking models against reference implementations (used by tests and tools/).

The PyTorch fixtures store a *seed*, not the weights: both sides rebuild identical random weights
with :func:`seeded_state_dict`, keyed by parameter name, so the committed files stay small.
"""
import zlib

import numpy as np


def seeded_state_dict(shapes, seed=0, dtype=np.float64):
    """Random but deterministic weights for every entry of a state dict, independent of key order.

    Parameters
    ----------
    shapes : dict name -> shape, or a model with ``state_dict()`` (its arrays' shapes are used)
    seed : int
    dtype : floating dtype of the result (``num_batches_tracked`` stays int64)

    Returns
    -------
    dict name -> ndarray. Each entry comes from ``default_rng([seed, crc32(name)])``:

    * conv / linear weights (2-D or more): normal, std ``sqrt(2 / fan_in)`` (He init), so activations
      keep their scale through deep networks;
    * 1-D ``weight`` (batch-norm scale) and ``running_var``: uniform in [0.5, 1.5];
    * ``bias`` and ``running_mean``: normal, std 0.1;
    * ``num_batches_tracked``: 0.
    """
    if hasattr(shapes, "state_dict"):
        shapes = {name: np.shape(value) for name, value in shapes.state_dict().items()}
    result = {}
    for name, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            result[name] = np.zeros(shape, dtype=np.int64)
            continue
        if leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
            value = rng.uniform(0.5, 1.5, size=shape)
        elif leaf in ("bias", "running_mean"):
            value = rng.normal(0.0, 0.1, size=shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
        result[name] = value.astype(dtype)
    return result


def seeded_input(shape, seed=0, dtype=np.float64):
    """The fixture input: standard normal values from ``default_rng(seed)``."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def seeded_upstream_gradient(shape, seed=0, dtype=np.float64):
    """The fixed upstream gradient ``dL/dlogits`` used for train-mode fixtures."""
    return np.random.default_rng([seed, 1]).standard_normal(shape).astype(dtype)


def train_without_dropout(model):
    """Put ``model`` in training mode (batch statistics) but with every Dropout layer in eval mode.

    Dropout masks are random and cannot match another library's, so train-mode comparisons switch
    dropout off while keeping batch normalisation in training mode. Returns ``model``.
    """
    from .nn import Dropout

    model.train()
    for module in model.modules():
        if isinstance(module, Dropout):
            module.eval()
    return model
