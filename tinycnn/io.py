"""Saving and loading weights and checkpoints (``.npz``), and reading PyTorch state dicts.

Weights are a state dict, ``{dotted_name: array}`` in the model's order (``conv1.weight``,
``bn1.running_mean``, ...), stored as a ``.npz`` file: a zip archive with one ``.npy`` array per entry,
so ``numpy.load`` reads it without tinycnn::

    from tinycnn import io, models
    model = models.resnet18(num_classes=10)
    io.save_weights("resnet18.npz", model)           # atomic: a crash never leaves half a file
    io.load_into(model, "resnet18.npz")              # strict: names every missing/unexpected key

A torchvision model's weights become ours in one step, because the keys, shapes and order are the same.
PyTorch is not needed: :func:`read_torch_file` reads both of ``torch.save``'s file layouts in plain Python
and refuses any file that asks for more than tensors and containers::

    state = io.convert_torch_state_dict("resnet18-f37072fd.pth")   # no torch import
    io.load_into(models.resnet18(), state)                         # or: io.save_weights("r18.npz", state)

A **checkpoint** is a nested dict -- model state, optimizer state (``tinycnn.optim`` state dicts have int
keys and lists), epoch, random-generator state (``rng.bit_generator.state``) -- stored in one ``.npz``:
every array is a member named after its place in the dict (``model/conv1.weight``,
``optimizer/state/0/exp_avg``) and a JSON manifest under ``__checkpoint__`` records the structure
(dicts, lists, tuples, numbers, strings), so :func:`load_checkpoint` returns the same nested dict.

**Atomic writes.** :func:`save_weights` and :func:`save_checkpoint` write to a temporary file in the
target's directory, flush it to disk (``fsync``) and then rename it over the target (``os.replace``,
atomic on POSIX and Windows). If anything fails on the way -- a full disk, an interrupt, an array that
cannot be stored -- the temporary file is removed and the previous file, if any, is left untouched.
"""
import contextlib
import json
import numbers
import os
import pathlib
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from . import _torch_file

__all__ = ["save_weights", "load_weights", "load_into", "convert_torch_state_dict", "read_torch_file",
           "save_checkpoint", "load_checkpoint", "write_text_atomic"]

CHECKPOINT_KEY = "__checkpoint__"        # the member holding a checkpoint's JSON manifest
CHECKPOINT_FORMAT = "tinycnn-checkpoint"
CHECKPOINT_VERSION = 1
_TORCH_SUFFIXES = (".pth", ".pt")
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError)


# ----------------------------------------------------------------------------------------------------
# Writing: one atomic .npz writer for weights and checkpoints
# ----------------------------------------------------------------------------------------------------
def _as_path(path, name="path"):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike; got {type(path).__name__}")
    return pathlib.Path(path)


def _new_file_mode(path):
    """Permissions for the file we create: the old file's if there is one, else ``0o666`` minus the umask."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o777
    umask = os.umask(0)            # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_npz(file, arrays, compress):
    """Write ``arrays`` ({name: ndarray}) into the open binary ``file`` as an ``.npz`` zip archive.

    Each array is streamed into its member with ``np.lib.format.write_array`` (no pickles). Member
    timestamps are fixed, so the bytes depend only on the arrays.
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(file, "w", compression=method, allowZip64=True) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = method
            with archive.open(member, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, array, allow_pickle=False)


def _atomic_write(path, write):
    """Create ``path`` through a temporary file in the same directory and ``os.replace``.

    ``write(file)`` fills the open binary temporary file; it is flushed to disk before the rename, so
    a crash at any moment leaves either the old file or the complete new one, never half of one.
    """
    path = pathlib.Path(path)
    directory = path.parent                     # "." for a bare file name
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot save {path}: directory {directory} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot save to {path}: it is a directory")
    mode = _new_file_mode(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())            # the data is on disk before the name points at it
        os.chmod(temporary, mode)
        os.replace(temporary, path)             # atomic: readers see the old file or the new one
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.filename is None:      # e.g. disk full: name the file
            raise type(error)(error.errno, f"cannot save {path}: {error.strerror or error}", str(path)) from error
        raise
    _fsync_directory(directory)
    return path


def _atomic_write_npz(path, arrays, compress):
    """Write ``arrays`` to ``path`` as an ``.npz`` archive, atomically (:func:`_atomic_write`)."""
    return _atomic_write(path, lambda file: _write_npz(file, arrays, compress))


def write_text_atomic(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically: a temporary file, flushed, then renamed over it.

    For the small text files of a training run (``history.json``, ``history.csv``, ``summary.json``):
    a reader or a crash never sees half a file. Returns the path.
    """
    data = str(text).encode("utf-8")
    return _atomic_write(_as_path(path), lambda file: file.write(data))


# ----------------------------------------------------------------------------------------------------
# Arrays from NumPy or PyTorch values
# ----------------------------------------------------------------------------------------------------
def _is_torch_tensor(value):
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _to_array(value, key):
    """``value`` (ndarray, torch tensor, number, nested list) as a float32/float64 or int64 array.

    float16/bfloat16 become float32; integer entries (``num_batches_tracked``) become int64; booleans,
    complex numbers, strings and objects are refused with a ``TypeError`` naming ``key``.
    """
    if _is_torch_tensor(value):
        tensor = value.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:       # float16, bfloat16
            tensor = tensor.float()
        if tensor.is_complex() or str(tensor.dtype) == "torch.bool":
            raise TypeError(f"entry {key!r} is a {tensor.dtype} tensor; only float and integer tensors are supported")
        array = np.array(tensor.numpy(), copy=True)       # .numpy() shares the tensor's memory
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"entry {key!r} cannot be converted to an array: {error}") from error
    if array.dtype.kind == "f":
        return array.astype(np.float32) if array.dtype.itemsize < 4 else array
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    raise TypeError(f"entry {key!r} has dtype {array.dtype} ({type(value).__name__}); weights must be float "
                    f"or integer arrays")


def _state_dict_of(model_or_state_dict, name):
    if hasattr(model_or_state_dict, "state_dict") and callable(model_or_state_dict.state_dict):
        return model_or_state_dict.state_dict()
    if isinstance(model_or_state_dict, Mapping):
        return model_or_state_dict
    raise TypeError(f"{name} must be a model (with state_dict()) or a mapping name -> array; "
                    f"got {type(model_or_state_dict).__name__}")


def _check_key(key):
    if not isinstance(key, str) or not key:
        raise TypeError(f"state dict keys must be non-empty strings; got {key!r}")
    if key == CHECKPOINT_KEY:
        raise ValueError(f"{CHECKPOINT_KEY!r} is reserved for checkpoint manifests and cannot be a weight name")
    return key


def read_torch_file(path):
    """Read a PyTorch ``.pth``/``.pt`` file without PyTorch: the saved object with tensors as NumPy arrays.

    Both of ``torch.save``'s layouts are read: the zip archive (PyTorch >= 1.6: ``<name>/data.pkl``,
    storages in ``<name>/data/<key>``, byte order in ``<name>/byteorder``) and the legacy stream (magic
    number, protocol, system info, pickle, storage keys, raw storages), e.g. torchvision's older
    checkpoints such as ``mobilenet_v2-b0353104.pth``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    The object that was saved -- usually a dict (an ``OrderedDict`` for ``state_dict()``) -- with every
    tensor replaced by an ndarray copy: views come out with their own shape and values (storage offset
    and strides applied), in native byte order. dtypes: float64, float32, float16, int64, int32, int16,
    int8, uint8 and bool as in the file; bfloat16 becomes float32 (exact: a bfloat16 is the top half of a
    float32). ``nn.Parameter`` becomes its array. Numbers, strings, lists, tuples and dicts stay as they are.

    Raises
    ------
    FileNotFoundError
        no file at ``path``.
    ValueError
        a truncated, corrupt or non-PyTorch file, or one that asks for any object other than tensors,
        ordered dicts and plain containers (a pickled model class, a function call): such a file is refused
        before anything it names is imported or called, because unpickling it could run arbitrary code.
        The message names the file.
    """
    path = _as_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such PyTorch file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a PyTorch file")
    return _torch_file.read_torch_file(path)


# Where checkpoints keep the model's weights: {"state_dict": ...} (Lightning, many scripts),
# {"model": ...} (timm/DeiT training scripts), {"model_state_dict": ...} (the PyTorch tutorial).
_STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model")
_DATA_PARALLEL_PREFIX = "module."


def _unwrap_state_dict(obj):
    """The state dict inside a checkpoint dict, without ``nn.DataParallel``'s ``module.`` key prefix."""
    for wrapper in _STATE_DICT_WRAPPERS:
        if isinstance(obj.get(wrapper), Mapping):
            return _unwrap_state_dict(obj[wrapper])
    keys = list(obj)
    if keys and all(isinstance(key, str) and key.startswith(_DATA_PARALLEL_PREFIX) for key in keys):
        return OrderedDict((key[len(_DATA_PARALLEL_PREFIX):], value) for key, value in obj.items())
    return obj


def convert_torch_state_dict(obj):
    """A PyTorch state dict as ``{name: numpy array}``, ready for ``load_state_dict`` / :func:`save_weights`.

    Parameters
    ----------
    obj : mapping or str or os.PathLike
        * a path to a ``.pth``/``.pt`` file, read by :func:`read_torch_file` (PyTorch is not needed, and
          a file that asks for anything but tensors and containers is refused);
        * a state dict of torch tensors (``torch_model.state_dict()``);
        * a mapping of NumPy arrays (returned converted and validated, so any source works).

        A checkpoint dict is unwrapped: the weights are taken from its ``"state_dict"``,
        ``"model_state_dict"`` or ``"model"`` entry (recursively), and the ``module.`` prefix that
        ``nn.DataParallel`` puts on every key is removed.

    Returns
    -------
    OrderedDict name -> ndarray, in the source's order. Float tensors keep float32/float64 (float16 and
    bfloat16 become float32); integer buffers such as ``num_batches_tracked`` become int64. Arrays are
    copies: changing them does not change the tensors.

    Raises ``FileNotFoundError``/``ValueError`` for a missing or unreadable file (see
    :func:`read_torch_file`), ``TypeError`` for entries that are not float or integer arrays (naming the key).
    """
    if isinstance(obj, (str, os.PathLike)):
        path = obj
        obj = read_torch_file(path)
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict (a dict name -> tensor)")
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict (mapping name -> tensor/array) or a path to a .pth file; "
                        f"got {type(obj).__name__}")
    converted = OrderedDict()
    for key, value in _unwrap_state_dict(obj).items():
        converted[_check_key(key)] = _to_array(value, key)
    return converted


# ----------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------
def save_weights(path, model_or_state_dict, compress=False):
    """Save a model's ``state_dict()`` (or a state dict) to ``path`` as ``.npz``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Written exactly as given (no ``.npz`` is appended). Its directory must exist.
    model_or_state_dict : Module or mapping name -> array (NumPy arrays or torch tensors)
    compress : bool
        Deflate the members (trained weights shrink little; default off, as ``np.savez``).

    Returns
    -------
    pathlib.Path of the written file. ``numpy.load(path)`` reads it; so does :func:`load_weights`.
    If writing fails, the previous file at ``path`` is unchanged and no temporary file is left.
    """
    path = _as_path(path)
    arrays = convert_torch_state_dict(_state_dict_of(model_or_state_dict, "model_or_state_dict"))
    return _atomic_write_npz(path, arrays, compress)


def _read_npz(path, what):
    """``OrderedDict`` of every array in the ``.npz`` at ``path``, with clear errors for bad files."""
    path = _as_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such {what}: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a {what}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .npz archive (a zip of .npy arrays): the file is corrupt, "
                         f"truncated, or in another format")
    arrays = OrderedDict()
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in archive.files:
                value = archive[name]
                if not isinstance(value, np.ndarray):
                    raise ValueError(f"member {name!r} is not a NumPy .npy array")
                arrays[name] = value
    except _READ_ERRORS as error:
        raise ValueError(f"{path} is a corrupt or unsupported .npz file: {error}") from error
    return arrays


def load_weights(path):
    """Read weights saved by :func:`save_weights` (or any ``.npz`` of arrays).

    Returns
    -------
    OrderedDict name -> ndarray, in the file's order.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a readable
    ``.npz`` of arrays (truncated, corrupt, pickled objects) or that is a checkpoint (use
    :func:`load_checkpoint`).
    """
    arrays = _read_npz(path, "weights file")
    if CHECKPOINT_KEY in arrays:
        raise ValueError(f"{path} is a checkpoint written by save_checkpoint, not a weights file: read it with "
                         f"load_checkpoint(path) and take the model's state from the returned dict")
    return arrays


def load_into(model, path_or_dict, strict=True):
    """Load weights into ``model`` from a ``.npz``/``.pth`` file or a state dict.

    Parameters
    ----------
    model : Module
    path_or_dict : str, os.PathLike or mapping
        A ``.pth``/``.pt`` path goes through :func:`convert_torch_state_dict` (no PyTorch needed), any other
        path through :func:`load_weights`; a mapping may hold NumPy arrays or torch tensors.
    strict : bool
        As ``Module.load_state_dict``: missing or unexpected keys raise ``RuntimeError`` listing them by
        name; a shape mismatch always raises, naming the key and both shapes. Nothing is changed then.

    Returns
    -------
    ``(missing_keys, unexpected_keys)`` named tuple (empty lists after a strict load).
    """
    if not (hasattr(model, "load_state_dict") and callable(model.load_state_dict)):
        raise TypeError(f"model must have a load_state_dict method; got {type(model).__name__}")
    if isinstance(path_or_dict, (str, os.PathLike)):
        path = pathlib.Path(path_or_dict)
        state = convert_torch_state_dict(path) if path.suffix in _TORCH_SUFFIXES else load_weights(path)
    elif isinstance(path_or_dict, Mapping):
        state = convert_torch_state_dict(path_or_dict)
    else:
        raise TypeError(f"path_or_dict must be a path or a mapping name -> array; got {type(path_or_dict).__name__}")
    return model.load_state_dict(state, strict=strict)


# ----------------------------------------------------------------------------------------------------
# Checkpoints: a nested dict in one .npz, arrays as members, structure as JSON
# ----------------------------------------------------------------------------------------------------
def _member_name(path, arrays):
    """A readable, unique member name for the array at ``path`` (e.g. ``optimizer/state/0/exp_avg``)."""
    base = "/".join(str(part) for part in path) or "array"
    name, copy = base, 1
    while name in arrays or name == CHECKPOINT_KEY:
        copy += 1
        name = f"{base}~{copy}"
    return name


def _encode(value, path, arrays):
    """JSON-able description of ``value``; arrays are moved into ``arrays`` and referenced by name.

    ``{"__array__": name}`` an array (``"scalar": true`` for a NumPy scalar such as ``np.float32(1)``),
    ``{"__tuple__": [...]}`` a tuple, ``{"__dict__": [[key, value], ...]}`` a dict whose keys are not
    all plain strings (``tinycnn.optim`` state is keyed by parameter index), a JSON object otherwise.
    """
    where = "/".join(map(str, path)) or "the checkpoint"
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.ndarray, np.generic)) or _is_torch_tensor(value):
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            name = _member_name(path, arrays)
            arrays[name] = np.asarray(value)
            return {"__array__": name, "scalar": True}
        array = _to_array(value, where) if _is_torch_tensor(value) else np.asarray(value)
        if array.dtype.kind not in "biufc":
            raise TypeError(f"save_checkpoint cannot store the {array.dtype} array at {where}")
        name = _member_name(path, arrays)
        arrays[name] = array
        return {"__array__": name}
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float):
        return float(value)          # repr round-trips exactly; nan and inf are allowed by Python's json
    if isinstance(value, Mapping):
        items = list(value.items())
        for key, _ in items:
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"save_checkpoint: dict keys must be str or int; got {key!r} at {where}")
        encoded = [[key, _encode(item, path + [key], arrays)] for key, item in items]
        if all(isinstance(key, str) and not key.startswith("__") for key, _ in items):
            return {key: item for key, item in encoded}
        return {"__dict__": encoded}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(item, path + [i], arrays) for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(item, path + [i], arrays) for i, item in enumerate(value)]
    raise TypeError(f"save_checkpoint cannot store a {type(value).__name__} at {where}: use dicts, lists, tuples, "
                    f"str, int, float, bool, None and NumPy arrays (for a random generator, store "
                    f"rng.bit_generator.state)")


def _decode(node, arrays):
    """Inverse of :func:`_encode`."""
    if isinstance(node, list):
        return [_decode(item, arrays) for item in node]
    if not isinstance(node, dict):
        return node
    if "__array__" in node:
        array = arrays[node["__array__"]]
        return array[()] if node.get("scalar") else array
    if "__tuple__" in node:
        return tuple(_decode(item, arrays) for item in node["__tuple__"])
    if "__dict__" in node:
        return {key: _decode(item, arrays) for key, item in node["__dict__"]}
    return {key: _decode(item, arrays) for key, item in node.items()}


def save_checkpoint(path, checkpoint, compress=False):
    """Save a nested dict (model state, optimizer state, epoch, RNG state, ...) to one ``.npz``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Written exactly as given; its directory must exist.
    checkpoint : dict
        Any nesting of dicts (str or int keys), lists, tuples, str, int, float, bool, None and arrays
        (NumPy, or torch tensors converted as :func:`convert_torch_state_dict` does). For example::

            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 7,
             "rng": rng.bit_generator.state}

    compress : bool
        Deflate the array members.

    Returns
    -------
    pathlib.Path of the written file. Arrays are members named by their place in the dict
    (``model/conv1.weight``); the structure is JSON under ``__checkpoint__``. If writing fails, the previous
    file is unchanged and no temporary file is left.
    """
    path = _as_path(path)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint must be a dict; got {type(checkpoint).__name__}")
    arrays = OrderedDict()
    tree = _encode(checkpoint, [], arrays)
    manifest = json.dumps({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "tree": tree})
    members = OrderedDict([(CHECKPOINT_KEY, np.array(manifest))])    # first, so it is easy to find
    members.update(arrays)
    return _atomic_write_npz(path, members, compress)


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`: the same nested dict.

    Dict keys keep their type (the optimizer's int indices stay ints), tuples stay tuples, arrays keep
    their dtype, NumPy scalars stay NumPy scalars. Restore a generator with
    ``rng.bit_generator.state = checkpoint["rng"]``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a corrupt file or an ``.npz``
    without a checkpoint manifest (weights files are read with :func:`load_weights`).
    """
    arrays = _read_npz(path, "checkpoint file")
    if CHECKPOINT_KEY not in arrays:
        raise ValueError(f"{path} has no {CHECKPOINT_KEY!r} manifest, so it is not a checkpoint written by "
                         f"save_checkpoint (a weights file? read it with load_weights)")
    try:
        manifest = json.loads(str(arrays.pop(CHECKPOINT_KEY)))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the checkpoint manifest is not valid JSON: {error}") from error
    found_format = manifest.get("format") if isinstance(manifest, dict) else None
    if found_format != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {found_format!r} (expected {CHECKPOINT_FORMAT!r})")
    if manifest.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {manifest.get('version')!r} is not supported "
                         f"(this tinycnn reads version {CHECKPOINT_VERSION})")
    if "tree" not in manifest:
        raise ValueError(f"{path}: the checkpoint manifest has no 'tree' entry")
    try:
        return _decode(manifest["tree"], arrays)
    except KeyError as error:
        raise ValueError(f"{path}: the manifest refers to a missing array {error}") from error
    except (TypeError, ValueError, AttributeError, RecursionError) as error:     # a hand-made manifest
        raise ValueError(f"{path}: malformed checkpoint manifest ({type(error).__name__}: {error})") from None
