"""CIFAR-10 from its local "python version" batches; nothing is downloaded.

The archive ``cifar-10-python.tar.gz`` (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html)
unpacks to a folder ``cifar-10-batches-py`` holding six pickled batches of 10 000 images each
(``data_batch_1`` .. ``data_batch_5`` for training, ``test_batch``) and ``batches.meta``. Each batch is
a dict (pickled by Python 2, so its keys are ``bytes`` in Python 3)::

    b"data"    uint8 array (10000, 3072): per image 1024 red, then 1024 green, then 1024 blue values,
               each a 32 x 32 plane in row-major order -- so ``reshape(n, 3, 32, 32)`` is NCHW
    b"labels"  list of 10000 ints in 0..9

and ``batches.meta`` holds ``b"label_names"``, the ten class names.

Unpickling can run arbitrary code, so the batches are read with a restricted unpickler that only
accepts what a CIFAR batch contains (dicts, lists, bytes, str, numbers and NumPy arrays).
"""
import io
import os
import pickle

import numpy as np

__all__ = ["CIFAR10_CLASSES", "CIFAR10_FILES", "load_cifar10"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_META_FILE = "batches.meta"
_IMAGE_SHAPE = (3, 32, 32)
_PIXELS_PER_IMAGE = 3 * 32 * 32                                  # 3072

# The only globals a pickled NumPy array needs (NumPy 1.x and 2.x names); anything else is refused.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),                                       # bytes pickled by Python 3, protocol 2
    ("__builtin__", "bytes"), ("builtins", "bytes"),             # empty bytes (an empty array), protocol 2
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside :data:`_ALLOWED_GLOBALS`."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch only holds "
                                         f"dicts, lists, bytes, numbers and NumPy arrays")
        if module.startswith("numpy.core"):                     # NumPy 2 renamed numpy.core to numpy._core
            try:
                return super().find_class(module.replace("numpy.core", "numpy._core"), name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def _unpickle(path):
    """The object pickled in ``path``; ValueError naming the file when it is corrupt or truncated."""
    with open(path, "rb") as file:
        raw = file.read()
    try:
        return _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:   # truncated -> EOFError/UnpicklingError; garbage -> many types
        raise ValueError(f"{path}: corrupt or truncated CIFAR-10 pickle "
                         f"({type(error).__name__}: {error})") from None


def _get(batch, key, path):
    """``batch[key]`` for the bytes key (Python 2 pickles) or the str key (files re-pickled in Python 3)."""
    for candidate in (key, key.decode("ascii")):
        if candidate in batch:
            return batch[candidate]
    raise ValueError(f"{path}: not a CIFAR-10 batch: no {key!r} entry "
                     f"(found keys {sorted(map(repr, batch))})")


def _read_batch(path):
    """One batch file -> images (n, 3, 32, 32) uint8, labels (n,) int64."""
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 batch: expected a pickled dict, got "
                         f"{type(batch).__name__}")
    data = _get(batch, b"data", path)
    labels = _get(batch, b"labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _PIXELS_PER_IMAGE:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise ValueError(f"{path}: corrupt CIFAR-10 batch: 'data' must be a uint8 array (n, "
                         f"{_PIXELS_PER_IMAGE}); got {dtype} with shape {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: corrupt CIFAR-10 batch: 'labels' is not a list of ints") from None
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: corrupt CIFAR-10 batch: {len(data)} images but labels of shape "
                         f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"{path}: corrupt CIFAR-10 batch: labels must lie in 0..9; found "
                         f"{labels.min()}..{labels.max()}")
    images = data.reshape(len(data), *_IMAGE_SHAPE)             # (n, 3072) -> (n, 3, 32, 32): R, G, B planes
    return images, labels


def _read_class_names(folder):
    """Class names from ``batches.meta``; the standard ten when the file is absent."""
    path = os.path.join(folder, _META_FILE)
    if not os.path.isfile(path):
        return CIFAR10_CLASSES
    meta = _unpickle(path)
    names = _get(meta, b"label_names", path) if isinstance(meta, dict) else None
    if not isinstance(names, (list, tuple)) or len(names) != len(CIFAR10_CLASSES):
        raise ValueError(f"{path}: corrupt batches.meta: expected 10 label names, got {names!r}")
    try:
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: corrupt batches.meta: a label name is not UTF-8 text ({error})") from None


def _find_folder(root):
    """``root`` or ``root/cifar-10-batches-py``, whichever holds the batches."""
    for folder in (root, os.path.join(root, "cifar-10-batches-py")):
        if any(os.path.isfile(os.path.join(folder, name)) for name in CIFAR10_FILES["test"] +
               CIFAR10_FILES["train"]):
            return folder
    return root


def load_cifar10(root, split="train", as_float=True, return_class_names=False):
    """Load CIFAR-10 from the unpacked python batches in a local folder.

    Parameters
    ----------
    root : str or path-like
        The folder ``cifar-10-batches-py`` or its parent.
    split : {"train", "test"}
        ``data_batch_1`` .. ``data_batch_5`` (50 000 images) or ``test_batch`` (10 000).
    as_float : bool
        True (default): float32 in [0, 1] (``pixel / 255``). False: uint8, 4x less memory
        (:class:`tinycnn.data.DataLoader` scales uint8 batches itself).
    return_class_names : bool
        Also return the class names read from ``batches.meta`` (default names when it is absent).

    Returns
    -------
    images : (n, 3, 32, 32) float32 in [0, 1], or uint8
    labels : (n,) int64 in 0..9 (names in :data:`CIFAR10_CLASSES`)
    class_names : tuple of 10 str, only when ``return_class_names``

    Raises
    ------
    FileNotFoundError
        ``root`` or a batch file of ``split`` is missing.
    ValueError
        Unknown ``split``; a batch or ``batches.meta`` is corrupt or truncated (not a pickle, wrong
        keys, wrong array shape or dtype, labels outside 0..9).
    """
    if split not in CIFAR10_FILES:
        raise ValueError(f"split must be one of {sorted(CIFAR10_FILES)}; got {split!r}")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"CIFAR-10 folder not found: {root}")
    folder = _find_folder(root)
    image_parts, label_parts = [], []
    for name in CIFAR10_FILES[split]:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no {name} in {folder}; expected the CIFAR-10 python batches "
                f"{', '.join(CIFAR10_FILES['train'] + CIFAR10_FILES['test'])} (from cifar-10-python.tar.gz)")
        images, labels = _read_batch(path)
        image_parts.append(images)
        label_parts.append(labels)
    images = np.concatenate(image_parts)                       # (n, 3, 32, 32) uint8
    labels = np.concatenate(label_parts)
    if as_float:
        images = images.astype(np.float32) / np.float32(255)
    if return_class_names:
        return images, labels, _read_class_names(folder)
    return images, labels
