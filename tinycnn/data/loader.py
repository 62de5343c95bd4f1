"""From arrays to training batches: dataset container, split, normalisation, augmentation, loader.

The pieces, in the order a training script uses them::

    data = load_dataset("folder:~/pets", image_size=64)           # train/val ArrayDatasets + class names
    mean, std = compute_mean_std(data.train.images)                # per channel, from the training part only
    augment = Compose([RandomCrop(64, padding=4), RandomHorizontalFlip(), Normalize(mean, std)])
    train_loader = DataLoader(data.train.images, data.train.labels, batch_size=64, shuffle=True,
                              seed=0, transform=augment)
    val_loader = DataLoader(data.val.images, data.val.labels, batch_size=256,
                            transform=Normalize(mean, std))
    for epoch in range(10):
        for x, y in train_loader:                                  # x (B, C, H, W) float32, y (B,) int64
            ...

Images are NCHW arrays, float32/float64 in [0, 1] or uint8 in 0..255 (the loaders keep MNIST and
CIFAR-10 as uint8, 4x less memory; a batch is scaled to float32 in [0, 1] when it is made).

Randomness is explicit and reproducible: every random transform takes a ``numpy.random.Generator``,
and :class:`DataLoader` derives the order of epoch ``e`` from ``(seed, e)`` and the augmentation of
batch ``b`` from ``(seed, e, b)``, so a run can be repeated, and resumed from a checkpoint, exactly.
The augmentations are the two of the ResNet CIFAR recipe (He et al. 2015, arXiv:1512.03385, sec. 4.2):
4-pixel zero padding with a random 32 x 32 crop, and a random horizontal flip.
"""
import math
import numbers
import os
from typing import NamedTuple

import numpy as np

from kernels._validate import as_pair

from .cifar import load_cifar10
from .folder import load_image_folder
from .idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_mnist
from .shapes import SHAPES_CLASSES, make_shapes

__all__ = ["ArrayDataset", "Compose", "DataLoader", "LoadedData", "Normalize", "RandomCrop",
           "RandomHorizontalFlip", "compute_mean_std", "load_dataset", "parse_data_spec", "resize_images",
           "select_classes", "to_float32", "train_val_split"]

DEFAULT_SHAPES_COUNT = 5000          # images generated for the spec "shapes" (before the split)


# ------------------------------------------------------------------------------------- validation
def _check_images(images, name="images"):
    """``images`` must be a 4-D (N, C, H, W) uint8/float32/float64 array."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (N, C, H, W); got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W); got shape {images.shape}")
    if images.dtype not in (np.uint8, np.float32, np.float64):
        raise TypeError(f"{name} must have dtype uint8, float32 or float64; got {images.dtype}")
    return images


def _check_labels(labels, count, name="labels"):
    """``labels`` must be a 1-D integer array with ``count`` entries; returned as int64."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != count:
        raise ValueError(f"{name} must have shape ({count},) to match the images; got {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name} must hold integers; got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must be >= 0; found {labels.min()}")
    return labels.astype(np.int64, copy=False)


def _is_int_at_least(value, minimum):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _check_seed(seed, name="seed"):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name} must be a non-negative int; got {seed!r}")
    return int(seed)


def _check_rng(rng, who):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{who} needs a numpy.random.Generator (e.g. np.random.default_rng(0)); "
                        f"got {type(rng).__name__}")


def to_float32(images):
    """``images`` as float32 in [0, 1]: uint8 is divided by 255, floats are cast (a copy if needed)."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------- dataset
class ArrayDataset:
    """Images, labels and class names held together (the whole dataset in memory).

    Parameters
    ----------
    images : (N, C, H, W) uint8, float32 or float64
    labels : (N,) integers in ``0 .. len(class_names) - 1``
    class_names : sequence of str, optional
        Default: ``"0", "1", ...`` up to the largest label.

    ``len(dataset)`` is N; ``dataset[i]`` is ``(image (C, H, W), label)``; ``dataset.loader(...)``
    makes a :class:`DataLoader` over it.
    """

    def __init__(self, images, labels, class_names=None):
        self.images = _check_images(images)
        self.labels = _check_labels(labels, len(images))
        if class_names is None:
            count = int(self.labels.max()) + 1 if self.labels.size else 0
            class_names = [str(k) for k in range(count)]
        if isinstance(class_names, str):
            raise TypeError(f"class_names must be a sequence of names; got the string {class_names!r}")
        self.class_names = tuple(str(name) for name in class_names)
        if self.labels.size and self.labels.max() >= len(self.class_names):
            raise ValueError(f"labels reach {self.labels.max()} but there are only "
                             f"{len(self.class_names)} class names")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])

    def class_counts(self):
        """``(num_classes,)`` int64: how many images each class has."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def loader(self, batch_size=32, shuffle=False, seed=0, transform=None, drop_last=False):
        """A :class:`DataLoader` over this dataset (same arguments)."""
        return DataLoader(self.images, self.labels, batch_size, shuffle=shuffle, seed=seed,
                          transform=transform, drop_last=drop_last)

    def __repr__(self):
        return (f"ArrayDataset({len(self)} images of shape {self.image_shape} {self.images.dtype}, "
                f"{self.num_classes} classes)")


# ------------------------------------------------------------------------------------------ split
def _largest_remainder(quotas, total):
    """Round non-negative ``quotas`` to ints that sum to ``total`` (Hamilton's method).

    Each entry gets ``floor(quota)``; the ``total - sum(floors)`` remaining units go to the entries
    with the largest fractional parts (ties: the lower index), so no entry is off by a whole unit.
    """
    floors = np.floor(quotas).astype(np.int64)
    remaining = int(total - floors.sum())
    order = np.argsort(-(quotas - floors), kind="stable")    # largest remainder first
    floors[order[:remaining]] += 1
    return floors


def _split_indices(labels, second_count, rng, stratified):
    """Indices of two disjoint parts, the second of ``second_count`` items, both in random order."""
    count = len(labels)
    if not stratified:
        order = rng.permutation(count)
        return order[second_count:], order[:second_count]
    classes, class_sizes = np.unique(labels, return_counts=True)
    second_sizes = _largest_remainder(class_sizes * (second_count / count), second_count)
    first, second = [], []
    for label, size in zip(classes, second_sizes):
        members = rng.permutation(np.flatnonzero(labels == label))   # this class, shuffled
        second.append(members[:size])
        first.append(members[size:])
    first, second = np.concatenate(first), np.concatenate(second)
    return rng.permutation(first), rng.permutation(second)          # mix the classes


def train_val_split(images, labels, val_fraction=0.2, seed=0, stratified=True):
    """Split a dataset into a training and a validation part, reproducibly from ``seed``.

    Parameters
    ----------
    images : (N, ...) array
    labels : (N,) integers
    val_fraction : float in [0, 1)
        Share of the images that go to validation: ``round(val_fraction * N)`` of them (at least one
        when ``val_fraction > 0``). 0.2 is the common 8:2 split.
    seed : int >= 0
    stratified : bool
        True (default): every class is split in the same proportion (its validation count is within
        one image of ``val_fraction`` times its size; the counts are rounded so that they add up to
        the total). False: a plain random split.

    Returns
    -------
    (train_images, train_labels), (val_images, val_labels)
        Copies, each part in a seeded random order.
    """
    labels = _check_labels(labels, len(images))
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) \
            or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in [0, 1); got {val_fraction!r}")
    count = len(labels)
    val_count = math.floor(val_fraction * count + 0.5)            # round half up
    if val_fraction > 0 and count >= 2:
        val_count = min(max(val_count, 1), count - 1)         # both parts non-empty
    rng = np.random.default_rng(_check_seed(seed))
    train_index, val_index = _split_indices(labels, val_count, rng, stratified)
    return (images[train_index], labels[train_index]), (images[val_index], labels[val_index])


def select_classes(images, labels, class_names, classes):
    """Keep only some classes and renumber them ``0 .. len(classes) - 1`` in the order given.

    Parameters
    ----------
    images : (N, ...) array
    labels : (N,) int64
    class_names : sequence of str, the names of labels ``0, 1, ...``
    classes : sequence of names (str) or label indices (int)

    Returns
    -------
    images : (M, ...) the images of the chosen classes
    labels : (M,) int64, new numbering
    class_names : tuple of str, the chosen names
    """
    if isinstance(classes, (str, numbers.Integral)):
        raise TypeError(f"classes must be a list of class names or indices; got {classes!r}")
    class_names = tuple(class_names)
    chosen = []
    for item in classes:
        if isinstance(item, numbers.Integral) and not isinstance(item, bool):
            if not 0 <= item < len(class_names):
                raise ValueError(f"class index {item} out of range [0, {len(class_names)})")
            chosen.append(int(item))
        elif str(item) in class_names:
            chosen.append(class_names.index(str(item)))
        else:
            raise ValueError(f"unknown class {item!r}; the classes are {list(class_names)}")
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"classes must be a non-empty list without repeats; got {list(classes)}")
    new_label = np.full(len(class_names), -1, dtype=np.int64)     # old label -> new label (-1: dropped)
    new_label[chosen] = np.arange(len(chosen))
    keep = np.flatnonzero(new_label[labels] >= 0)
    return images[keep], new_label[labels[keep]], tuple(class_names[k] for k in chosen)


# ---------------------------------------------------------------------------------------- resizing
def _bilinear_matrix(in_size, out_size):
    """``(out_size, in_size)`` float32 matrix that resamples one axis with a triangle (bilinear) filter.

    Output pixel ``i`` is centred at input coordinate ``c = (i + 0.5) * scale`` (``scale = in/out``,
    pixel centres at half-integers, i.e. ``align_corners=False``). Input pixel ``j`` gets the weight
    ``max(0, 1 - |j + 0.5 - c| / support)``, normalised to sum to one. ``support = max(1, scale)``:
    plain bilinear interpolation when enlarging, and a filter widened to ``scale`` pixels when
    shrinking so that every input pixel contributes (no aliasing). This is Pillow's BILINEAR filter.
    """
    scale = in_size / out_size
    support = max(1.0, scale)
    centres = (np.arange(out_size) + 0.5) * scale                       # (out,)
    distance = np.arange(in_size)[None, :] + 0.5 - centres[:, None]     # (out, in)
    weights = np.maximum(0.0, 1.0 - np.abs(distance) / support)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_images(images, size):
    """Resize a batch of images with Pillow's bilinear filter, vectorised as two matrix products.

    Parameters
    ----------
    images : (N, C, H, W) uint8, float32 or float64
    size : int or (height, width)

    Returns
    -------
    resized : (N, C, height, width), the input's dtype (uint8 is rounded and clipped to 0..255)

    ``resized = R_h @ image @ R_w.T`` per plane, where ``R`` are the ``(out, in)`` matrices of
    :func:`_bilinear_matrix`: bilinear interpolation when enlarging, a triangle filter of matching
    width when shrinking.
    """
    _check_images(images)
    out_h, out_w = as_pair(size, "size", 1)
    N, C, H, W = images.shape
    if (out_h, out_w) == (H, W):
        return images.copy()
    rows, cols = _bilinear_matrix(H, out_h), _bilinear_matrix(W, out_w)   # (out_h, H), (out_w, W)
    work_dtype = np.float64 if images.dtype == np.float64 else np.float32
    resized = np.empty((N, C, out_h, out_w), dtype=images.dtype)
    for start in range(0, N, 1024):                                       # bounded temporary memory
        chunk = images[start:start + 1024].astype(work_dtype)             # (n, C, H, W)
        chunk = rows.astype(work_dtype) @ chunk                           # (n, C, out_h, W)
        chunk = chunk @ cols.T.astype(work_dtype)                         # (n, C, out_h, out_w)
        if images.dtype == np.uint8:
            chunk = np.clip(np.rint(chunk), 0, 255)
        resized[start:start + 1024] = chunk
    return resized


# ---------------------------------------------------------------------------------- normalisation
def compute_mean_std(images, chunk_size=4096):
    """Per-channel mean and standard deviation over all images and pixels.

    Parameters
    ----------
    images : (N, C, H, W) uint8 (taken as ``pixel / 255``), float32 or float64

    Returns
    -------
    mean, std : (C,) float32 each; ``std`` is the population one (divides by ``N*H*W``)

    Accumulated in float64 over chunks of images: ``var = E[x^2] - E[x]^2`` without a float64 copy of
    the whole dataset. Compute them on the training part only, and use them for every part.
    """
    _check_images(images)
    N, C, H, W = images.shape
    if N == 0:
        raise ValueError("images must hold at least one image; got shape (0, ...)")
    total = np.zeros(C)
    total_of_squares = np.zeros(C)
    for start in range(0, N, chunk_size):
        chunk = images[start:start + chunk_size].astype(np.float64)     # (n, C, H, W)
        if images.dtype == np.uint8:
            chunk /= 255.0
        total += chunk.sum(axis=(0, 2, 3))
        total_of_squares += np.square(chunk).sum(axis=(0, 2, 3))
    count = N * H * W
    mean = total / count
    variance = np.maximum(total_of_squares / count - mean ** 2, 0.0)    # >= 0 despite rounding
    return mean.astype(np.float32), np.sqrt(variance).astype(np.float32)


class Normalize:
    """Per-channel standardisation ``(x - mean[c]) / std[c]`` of an NCHW batch.

    Parameters
    ----------
    mean, std : float or sequence of C floats (``std > 0``), e.g. from :func:`compute_mean_std`
    """

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1 or len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must be numbers or equal-length sequences; got shapes "
                             f"{self.mean.shape} and {self.std.shape}")
        if not np.all(np.isfinite(self.mean)) or not np.all(self.std > 0):
            raise ValueError(f"mean must be finite and std > 0; got mean {self.mean}, std {self.std}")

    def _per_channel(self, x):
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype not in (np.float32, np.float64):
            raise TypeError(f"Normalize expects a float32/float64 (N, C, H, W) batch; got "
                            f"{getattr(x, 'dtype', type(x).__name__)} of shape {getattr(x, 'shape', None)}")
        C = x.shape[1]
        if len(self.mean) not in (1, C):
            raise ValueError(f"Normalize has {len(self.mean)} channel statistics but the batch has "
                             f"{C} channels (shape {x.shape})")
        shape = (1, -1, 1, 1)
        return self.mean.astype(x.dtype).reshape(shape), self.std.astype(x.dtype).reshape(shape)

    def __call__(self, x, rng=None):
        """x : (N, C, H, W) float -> same shape and dtype. ``rng`` is ignored (not random)."""
        mean, std = self._per_channel(x)
        return (x - mean) / std

    def inverse(self, x):
        """Undo the normalisation (``x * std + mean``), e.g. to display normalised images."""
        mean, std = self._per_channel(x)
        return x * std + mean

    def __repr__(self):
        return f"Normalize(mean={np.round(self.mean, 4).tolist()}, std={np.round(self.std, 4).tolist()})"


# ----------------------------------------------------------------------------------- augmentation
class RandomCrop:
    """Zero-pad every image by ``padding`` pixels, then cut a random ``size`` window from each.

    Parameters
    ----------
    size : int or (height, width), at most the padded image size
    padding : int or (pad_h, pad_w), added on both sides (default 0)

    With ``size`` equal to the image size and ``padding = p`` this shifts each image by a random
    ``(dy, dx)`` in ``[-p, p]^2``, filling the uncovered border with zeros: the ResNet/CIFAR
    augmentation (arXiv:1512.03385, sec. 4.2) with ``p = 4``.
    """

    def __init__(self, size, padding=0):
        self.size = as_pair(size, "size", 1)
        self.padding = as_pair(padding, "padding", 0)

    def __call__(self, x, rng):
        """x : (N, C, H, W) -> (N, C, size_h, size_w), one random window per image."""
        _check_rng(rng, "RandomCrop")
        N, _, H, W = x.shape
        (crop_h, crop_w), (pad_h, pad_w) = self.size, self.padding
        if crop_h > H + 2 * pad_h or crop_w > W + 2 * pad_w:
            raise ValueError(f"RandomCrop size {self.size} is larger than the padded images "
                             f"({H + 2 * pad_h}, {W + 2 * pad_w}) (batch shape {x.shape}, padding "
                             f"{self.padding})")
        padded = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))   # (N, C, H+2ph, W+2pw)
        top = rng.integers(0, H + 2 * pad_h - crop_h + 1, size=N)              # (N,) window corners
        left = rng.integers(0, W + 2 * pad_w - crop_w + 1, size=N)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (crop_h, crop_w), axis=(2, 3))
        # windows: (N, C, positions_h, positions_w, crop_h, crop_w), a view (no copy);
        # pick position (top[n], left[n]) for image n -> (N, C, crop_h, crop_w), a copy
        return windows[np.arange(N), :, top, left]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p`` (independently per image).

    A flip is its own inverse: the same ``rng`` state applied twice gives back the batch.
    """

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
        self.p = float(p)

    def __call__(self, x, rng):
        """x : (N, C, H, W) -> same shape; a copy with the chosen images mirrored."""
        _check_rng(rng, "RandomHorizontalFlip")
        flip = rng.random(len(x)) < self.p                      # (N,) bool: which images to mirror
        out = x.copy()
        out[flip] = x[flip, :, :, ::-1]                         # reverse the W axis
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply transforms in order: ``Compose([t1, t2])(x, rng) == t2(t1(x, rng), rng)``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for transform in self.transforms:
            if not callable(transform):
                raise TypeError(f"every transform must be callable(x, rng); got {transform!r}")

    def __call__(self, x, rng=None):
        for transform in self.transforms:
            x = transform(x, rng)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


# ----------------------------------------------------------------------------------------- loader
class DataLoader:
    """Iterate over ``(x, y)`` mini-batches: float32 images ``(B, C, H, W)`` and int64 labels ``(B,)``.

    Parameters
    ----------
    images : (N, C, H, W) uint8 (scaled by 1/255 per batch), float32 or float64 (cast to float32)
    labels : (N,) integers
    batch_size : int >= 1
    shuffle : bool
        Visit the images in a new random order every epoch.
    seed : int >= 0
        The order of epoch ``e`` comes from ``default_rng((seed, e, 0, 0))``; the random transforms of
        batch ``b`` of epoch ``e`` get ``default_rng((seed, e, 1, b))``. Same seed, same batches.
    transform : callable ``(x, rng) -> x``, optional
        Applied to each float32 batch (e.g. a :class:`Compose` of augmentations and
        :class:`Normalize`).
    drop_last : bool
        Skip the last batch when it is smaller than ``batch_size``.

    Epochs: a completed pass over the loader advances ``loader.epoch`` by one, so
    ``for epoch in range(E): for x, y in loader: ...`` sees a new order each epoch; a pass left early
    (``break``) does not count, and the next pass starts that epoch again from its first batch.
    :meth:`set_epoch` chooses the epoch explicitly. :meth:`state_dict` records the epoch and how many
    batches of it were already produced; after :meth:`load_state_dict` the next pass continues from
    there with exactly the batches the interrupted run would have produced.
    """

    def __init__(self, images, labels, batch_size=32, shuffle=False, seed=0, transform=None,
                 drop_last=False):
        self.images = _check_images(images)
        self.labels = _check_labels(labels, len(images))
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable(x, rng) or None; got {transform!r}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = _check_seed(seed)
        self.transform = transform
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._batch = 0            # batches of `epoch` already produced (non-zero while a pass runs)
        self._resume_at = 0        # first batch of the next pass (set by load_state_dict)

    def __len__(self):
        """Batches per epoch."""
        if self.drop_last:
            return len(self.labels) // self.batch_size
        return math.ceil(len(self.labels) / self.batch_size)

    def set_epoch(self, epoch):
        """Make the next pass epoch ``epoch`` (from its first batch)."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int; got {epoch!r}")
        self.epoch, self._batch, self._resume_at = int(epoch), 0, 0

    def order(self, epoch=None):
        """``(N,)`` int64: the image indices of epoch ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng((self.seed, epoch, 0, 0)).permutation(len(self.labels))

    def _make_batch(self, index, epoch, batch):
        x = to_float32(self.images[index])                       # (B, C, H, W) float32, a copy
        y = self.labels[index]                                   # (B,) int64
        if self.transform is not None:
            x = self.transform(x, np.random.default_rng((self.seed, epoch, 1, batch)))
            x = np.ascontiguousarray(x, dtype=np.float32)
        return x, y

    def __iter__(self):
        epoch, first_batch = self.epoch, self._resume_at
        self._batch, self._resume_at = first_batch, 0
        order = self.order(epoch)
        for batch in range(first_batch, len(self)):
            index = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            x, y = self._make_batch(index, epoch, batch)
            self._batch = batch + 1
            yield x, y
        self.epoch, self._batch = epoch + 1, 0                   # the pass is complete

    def state_dict(self):
        """``{"seed", "epoch", "batch"}``: enough to reproduce the remaining batches exactly."""
        return {"seed": self.seed, "epoch": self.epoch, "batch": self._batch}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s output; the next pass starts at its epoch and batch."""
        missing = {"seed", "epoch", "batch"} - set(state)
        if missing:
            raise ValueError(f"loader state is missing {sorted(missing)}; got keys {sorted(state)}")
        self.seed = _check_seed(int(state["seed"]))
        self.set_epoch(int(state["epoch"]))
        batch = int(state["batch"])
        if not 0 <= batch <= len(self):
            raise ValueError(f"loader state batch {batch} out of range [0, {len(self)}]")
        self._batch = self._resume_at = batch

    def __repr__(self):
        return (f"DataLoader({len(self.labels)} images, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch}, "
                f"drop_last={self.drop_last}, transform={self.transform!r})")


# ------------------------------------------------------------------------------------ load_dataset
class LoadedData(NamedTuple):
    """What :func:`load_dataset` returns; unpacks as ``train, val, class_names, in_channels``."""
    train: ArrayDataset
    val: ArrayDataset
    class_names: tuple
    in_channels: int


_SPEC_FORMS = ('"shapes"', '"shapes:N"', '"mnist:PATH"', '"fashion:PATH"', '"cifar10:PATH"',
               '"folder:PATH"')


def parse_data_spec(spec):
    """Split a dataset spec ``"kind:argument"`` into ``(kind, argument or None)``.

    ``kind`` is lower-cased: ``"shapes"``, ``"mnist"``, ``"fashion"``, ``"cifar10"`` or ``"folder"``;
    only the first colon splits (``folder:C:\\data`` works). ``parse_data_spec("shapes:2000") ==
    ("shapes", "2000")``. The one parser of specs: :func:`load_dataset` and ``tinycnn train`` use it.

    Raises ``TypeError`` for a non-string and ``ValueError`` (listing the accepted forms) for an unknown
    kind or a missing path.
    """
    if not isinstance(spec, str):
        raise TypeError(f"dataset spec must be a string such as 'shapes' or 'folder:PATH'; got {spec!r}")
    kind, _, argument = spec.partition(":")                # only the first colon: C:\data works
    kind = kind.strip().lower()
    known = {"shapes", "mnist", "fashion", "cifar10", "folder"}
    if kind not in known:
        hint = ""
        if os.path.isdir(os.path.expanduser(spec)):
            hint = f" ({spec!r} is a folder: write 'folder:{spec}', 'mnist:{spec}' or 'cifar10:{spec}')"
        raise ValueError(f"unknown dataset spec {spec!r}{hint}; expected one of {', '.join(_SPEC_FORMS)}")
    if kind != "shapes" and not argument:
        raise ValueError(f"dataset spec {spec!r} needs a path: '{kind}:PATH'")
    return kind, (argument or None)


def _shapes_count(argument, spec):
    if argument is None:
        return DEFAULT_SHAPES_COUNT
    try:
        count = int(argument)
    except ValueError:
        raise ValueError(f"dataset spec {spec!r}: 'shapes:N' needs an integer N; got {argument!r}") from None
    if count < 2:
        raise ValueError(f"dataset spec {spec!r}: need at least 2 images; got {count}")
    return count


def load_dataset(spec, image_size=32, val_fraction=0.2, seed=0, to_rgb=False, classes=None,
                 val_source="split", max_images=None):
    """Load a dataset named by a short spec and split it into training and validation parts.

    Parameters
    ----------
    spec : str
        ``"shapes"`` or ``"shapes:N"`` -- the built-in procedural set, N images (default 5000);
        ``"mnist:PATH"``, ``"fashion:PATH"`` -- IDX files in folder PATH (:func:`load_mnist`);
        ``"cifar10:PATH"`` -- python batches in PATH (:func:`load_cifar10`);
        ``"folder:PATH"`` -- one sub-folder per class (:func:`load_image_folder`).
        ``~`` in PATH is expanded. Only local files are read; nothing is downloaded.
    image_size : int or None
        Side of the square images returned. ``None`` keeps the native size (28 for MNIST, 32 for
        CIFAR-10 and shapes; 32 for folders). MNIST/CIFAR-10 images are resized with
        :func:`resize_images` (bilinear) when it differs; shapes are rendered at that size.
    val_fraction : float in [0, 1)
        Share of the training images held out for validation (stratified, see
        :func:`train_val_split`). Default 0.2: the common 8:2 split.
    seed : int >= 0
        Seeds the split (and, for shapes, the images; for ``max_images``, the subset).
    to_rgb : bool
        Repeat a 1-channel dataset (MNIST) over 3 channels, for models with an RGB stem.
    classes : list of names or indices, optional
        Keep only these classes, renumbered in the order given (e.g. ``["cat", "dog"]`` of CIFAR-10).
    val_source : {"split", "test"}
        ``"split"`` holds out ``val_fraction`` of the training files; ``"test"`` uses the official
        test files as validation instead (MNIST, Fashion-MNIST, CIFAR-10 only).
    max_images : int, optional
        Keep a seeded, stratified subset of this many training images (before the split): quick
        runs on a laptop.

    Returns
    -------
    LoadedData(train, val, class_names, in_channels)
        ``train``/``val`` are :class:`ArrayDataset`; images are uint8 for MNIST, Fashion-MNIST,
        CIFAR-10 and folders (a :class:`DataLoader` makes float32 batches in [0, 1]) and float32
        for shapes; ``in_channels`` is 1 for MNIST without ``to_rgb``, else 3.

    Raises
    ------
    ValueError
        Unknown spec or bad argument; corrupt files (see the loaders).
    FileNotFoundError
        A path or file is missing.
    """
    kind, argument = parse_data_spec(spec)
    if image_size is not None and not _is_int_at_least(image_size, 1):
        raise ValueError(f"image_size must be a positive int or None; got {image_size!r}")
    if val_source not in ("split", "test"):
        raise ValueError(f"val_source must be 'split' or 'test'; got {val_source!r}")
    if val_source == "test" and kind in ("shapes", "folder"):
        raise ValueError(f"val_source='test' needs a dataset with a test split (mnist, fashion, "
                         f"cifar10); {kind!r} has none, use val_source='split'")
    if max_images is not None and not _is_int_at_least(max_images, 2):
        raise ValueError(f"max_images must be an int >= 2 or None; got {max_images!r}")
    seed = _check_seed(seed)
    path = os.path.expanduser(argument) if argument is not None else None
    test = None                                                   # (images, labels) of the test files

    if kind == "shapes":
        size = 32 if image_size is None else int(image_size)
        count = _shapes_count(argument, spec)
        shape_classes = None if classes is None else list(classes)
        images, labels = make_shapes(count, seed=seed, image_size=size, classes=shape_classes)
        class_names = tuple(SHAPES_CLASSES) if classes is None else tuple(
            SHAPES_CLASSES[c] if isinstance(c, numbers.Integral) else str(c) for c in classes)
        classes = None                                            # already applied
    elif kind in ("mnist", "fashion"):
        images, labels = load_mnist(path, "train", as_float=False)
        class_names = MNIST_CLASSES if kind == "mnist" else FASHION_MNIST_CLASSES
        if val_source == "test":
            test = load_mnist(path, "test", as_float=False)
    elif kind == "cifar10":
        images, labels, class_names = load_cifar10(path, "train", as_float=False, return_class_names=True)
        if val_source == "test":
            test = load_cifar10(path, "test", as_float=False)
    else:  # folder
        images, labels, class_names = load_image_folder(
            path, image_size=32 if image_size is None else int(image_size), classes=classes, as_float=False)
        classes = None                                            # already applied

    if classes is not None:
        images, labels, new_names = select_classes(images, labels, class_names, classes)
        if test is not None:
            test = select_classes(*test, class_names, classes)[:2]
        class_names = new_names
    if max_images is not None and max_images < len(labels):
        rng = np.random.default_rng((seed, 1))
        _, keep = _split_indices(labels, int(max_images), rng, stratified=True)
        images, labels = images[keep], labels[keep]
    if test is None:
        (train_images, train_labels), (val_images, val_labels) = train_val_split(
            images, labels, val_fraction=val_fraction, seed=seed)
    else:
        (train_images, train_labels), (val_images, val_labels) = (images, labels), test
    del images, labels                                           # let the unsplit copy go

    if image_size is not None and train_images.shape[-1] != image_size:   # MNIST 28 -> 32, CIFAR...
        train_images = resize_images(train_images, image_size)
        val_images = resize_images(val_images, image_size)
    if to_rgb and train_images.shape[1] == 1:
        train_images = np.repeat(train_images, 3, axis=1)        # (n, 1, H, W) -> (n, 3, H, W)
        val_images = np.repeat(val_images, 3, axis=1)
    train = ArrayDataset(train_images, train_labels, class_names)
    val = ArrayDataset(val_images, val_labels, class_names)
    return LoadedData(train, val, tuple(class_names), int(train_images.shape[1]))
