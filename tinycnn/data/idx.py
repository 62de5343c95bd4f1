"""MNIST and Fashion-MNIST from local IDX files (raw or gzip-compressed); nothing is downloaded.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/) is a tiny header followed by the raw
array, C order, big-endian::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions D
    4 * D       the sizes of the D dimensions, each a big-endian uint32
    rest        prod(sizes) elements

So an MNIST image file starts with the magic number ``0x00000803`` (uint8, 3 dimensions:
``(n, 28, 28)``) and a label file with ``0x00000801`` (uint8, 1 dimension: ``(n,)``).

Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747) uses the same format and the same file names, so
:func:`load_mnist` reads both; only the class names differ (:data:`MNIST_CLASSES`,
:data:`FASHION_MNIST_CLASSES`).
"""
import gzip
import math
import os
import zlib

import numpy as np

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_CLASSES", "MNIST_FILES", "load_idx", "load_mnist", "read_idx"]

MNIST_CLASSES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# split -> (image file, label file): the names of the original distribution (Fashion-MNIST uses them too)
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

IMAGES_MAGIC = 0x00000803      # uint8, 3 dimensions (n, rows, cols)
LABELS_MAGIC = 0x00000801      # uint8, 1 dimension (n,)

# IDX element-type byte -> big-endian NumPy dtype
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_SIGNATURE = b"\x1f\x8b"


def _read_bytes(path):
    """The file's bytes, gunzipped when the file starts with the gzip signature (whatever its name)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    with open(path, "rb") as file:
        raw = file.read()
    if raw[:2] != _GZIP_SIGNATURE:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:      # BadGzipFile is an OSError
        raise ValueError(f"{path}: corrupt or truncated gzip data ({error})") from None


def read_idx(path):
    """Read any IDX file (raw or ``.gz``) into a NumPy array.

    Parameters
    ----------
    path : str or path-like
        An IDX file; gzip compression is detected from the file's first bytes, not its name.

    Returns
    -------
    array : ndarray of the dimensions in the header, native byte order (uint8 for MNIST files)

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The header is malformed (not starting with two zero bytes, unknown element type), or the data
        after the header is shorter (truncated file) or longer than the header announces.
    """
    return _read_idx(path)[0]


def _read_idx(path):
    """:func:`read_idx`, also returning the magic number (the header's first four bytes as an int)."""
    raw = _read_bytes(path)
    path = os.fspath(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes, the header alone takes 4+)")
    magic = int.from_bytes(raw[:4], "big")
    type_code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file (magic number 0x{magic:08X}; expected 0x000008XX "
                         f"to 0x00000EXX, e.g. 0x{IMAGES_MAGIC:08X} for images, 0x{LABELS_MAGIC:08X} "
                         f"for labels)")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes; {ndim} dimensions need "
                         f"{header_size})")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize             # Python ints: no overflow
    found = len(raw) - header_size
    if found < expected:
        raise ValueError(f"{path}: truncated IDX file: header announces shape {shape} "
                         f"({expected} bytes of data) but only {found} bytes follow it")
    if found > expected:
        raise ValueError(f"{path}: corrupt IDX file: header announces shape {shape} "
                         f"({expected} bytes of data) but {found} bytes follow it")
    array = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header_size)
    array = array.reshape(shape).astype(dtype.newbyteorder("="))    # a writable, native-order copy
    return array, magic


def _check_magic(magic, expected, path, what):
    """Raise unless the file's magic number is ``expected`` (uint8 data, the right dimension count)."""
    if magic != expected:
        raise ValueError(f"{os.fspath(path)}: not an IDX {what} file: magic number 0x{magic:08X}, "
                         f"expected 0x{expected:08X} (uint8, {expected & 0xFF} dimensions)")


def load_idx(images_path, labels_path, as_float=True):
    """Load an IDX image file and its IDX label file (MNIST, Fashion-MNIST, EMNIST...).

    Parameters
    ----------
    images_path : str or path-like
        IDX file with magic ``0x00000803``: uint8 images ``(n, rows, cols)``; raw or gzip.
    labels_path : str or path-like
        IDX file with magic ``0x00000801``: uint8 labels ``(n,)``; raw or gzip.
    as_float : bool
        True (default): float32 images in [0, 1] (``pixel / 255``). False: the file's uint8 values,
        4x less memory (:class:`tinycnn.data.DataLoader` scales uint8 batches itself).

    Returns
    -------
    images : (n, 1, rows, cols) float32 in [0, 1], or uint8; (n, 1, 28, 28) for MNIST
    labels : (n,) int64

    Raises
    ------
    FileNotFoundError
        A file does not exist.
    ValueError
        Wrong magic number (e.g. the two paths swapped), truncated or corrupt data, or a different
        number of images and labels.
    """
    images, magic = _read_idx(images_path)
    _check_magic(magic, IMAGES_MAGIC, images_path, "images")
    labels, magic = _read_idx(labels_path)
    _check_magic(magic, LABELS_MAGIC, labels_path, "labels")
    if len(images) != len(labels):
        raise ValueError(f"{os.fspath(images_path)} holds {len(images)} images but "
                         f"{os.fspath(labels_path)} holds {len(labels)} labels")
    if len(images) == 0:
        raise ValueError(f"{os.fspath(images_path)} holds 0 images: a data set needs at least one")
    images = images[:, None]                                   # (n, rows, cols) -> (n, 1, rows, cols)
    if as_float:
        images = images.astype(np.float32) / np.float32(255)
    return images, labels.astype(np.int64)


def _find_file(root, name):
    """The first existing spelling of ``name`` in ``root`` or ``root/raw``, or None.

    Spellings: ``name``, ``name.gz``, and the dotted ``train-images.idx3-ubyte`` that some unpackers
    produce; uncompressed files are preferred (faster to read).
    """
    dotted = name.replace("-idx", ".idx")
    for folder in (root, os.path.join(root, "raw")):         # root/raw: torchvision's layout
        for candidate in (name, dotted, name + ".gz", dotted + ".gz"):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                return path
    return None


def load_mnist(root, split="train", as_float=True):
    """Load MNIST or Fashion-MNIST from a local folder with the standard IDX file names.

    Parameters
    ----------
    root : str or path-like
        Folder holding (directly or in ``root/raw``) ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
        optionally ``.gz``. Only the two files of ``split`` are needed.
    split : {"train", "test"}
        60 000 training or 10 000 test images for MNIST and Fashion-MNIST.
    as_float : bool
        See :func:`load_idx`.

    Returns
    -------
    images : (n, 1, 28, 28) float32 in [0, 1], or uint8
    labels : (n,) int64 in 0..9; names in :data:`MNIST_CLASSES` / :data:`FASHION_MNIST_CLASSES`

    Raises
    ------
    FileNotFoundError
        ``root`` or one of the two files is missing (the message lists the names looked for).
    ValueError
        Unknown ``split``; or see :func:`load_idx`.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}; got {split!r}")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"MNIST folder not found: {root}")
    paths = []
    for name in MNIST_FILES[split]:
        path = _find_file(root, name)
        if path is None:
            raise FileNotFoundError(
                f"no {name} in {root} (nor in {os.path.join(root, 'raw')}); expected the standard "
                f"IDX files {', '.join(MNIST_FILES['train'] + MNIST_FILES['test'])} (each may end in .gz)")
        paths.append(path)
    return load_idx(*paths, as_float=as_float)
