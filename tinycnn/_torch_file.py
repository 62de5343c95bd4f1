"""Reading PyTorch ``.pth``/``.pt`` files without PyTorch (used by :mod:`tinycnn.io`).

``torch.save`` writes a pickle -- Python's object serialisation -- in which every tensor is a call
``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`` and every storage (the
flat buffer of numbers that one or more tensors view) is a *persistent id*: a tuple naming the storage
instead of its bytes, which are kept outside the pickle. Two layouts exist:

**zip** (``torch.save`` since PyTorch 1.6)::

    <name>/data.pkl        the pickle; a storage's persistent id is
                           ("storage", torch.FloatStorage, key, location, numel)
    <name>/data/<key>      the storage's raw bytes, numel * itemsize of them
    <name>/byteorder       "little" or "big" (absent in old files: little)

**legacy** (``torch.save(..., _use_new_zipfile_serialization=False)``, and every file before 1.6),
one file of consecutive pickles and raw bytes::

    pickle  magic number 0x1950A86A20F9469CFC6C
    pickle  protocol version 1001
    pickle  system info {"little_endian": ..., "type_sizes": ...}
    pickle  the object; a storage's persistent id is
            ("storage", torch.FloatStorage, key, location, numel, view) with view None or
            (view_key, element_offset, view_numel) for a storage that is a slice of another
    pickle  the storage keys, in the order their bytes follow
    then per key: int64 numel (little-endian), numel * itemsize bytes (little-endian)

**Safety.** Unpickling runs whatever functions a file names, so a pickle can do anything Python can.
:class:`_RestrictedUnpickler` only resolves the handful of names that tensors and state dicts need, each
to a small function of ours that records what the file asks for; any other name is refused before
anything is imported or called. Tensors are cut out of their storages only after checking that the
offset, sizes and strides stay inside the storage.
"""
import io
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> dtype of its elements as stored (byte order added per file).
# bfloat16 has no NumPy dtype: its raw 16-bit patterns are read as uint16 and widened to float32.
STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class TorchFileError(ValueError):
    """A file that is not a readable PyTorch file, or that asks for objects we refuse to build."""


class _Frozen:
    """Base of the objects a pickle can name: the pickle's BUILD opcode cannot change them."""

    __slots__ = ()

    def __setstate__(self, state):
        raise TorchFileError(f"refused to set attributes on {self!r}")


class StorageType(_Frozen):
    """What ``torch.FloatStorage`` (etc.) unpickles to here: just the storage's element type."""

    __slots__ = ("name", "element_code")

    def __init__(self, name):
        self.name = name
        self.element_code = STORAGE_DTYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"

    def dtype(self, byteorder):
        """NumPy dtype of one element in a file written with ``byteorder`` ("little"/"big")."""
        return np.dtype(("<" if byteorder == "little" else ">") + self.element_code)


class StorageRef:
    """A storage named by a persistent id; its bytes are attached after unpickling."""

    def __init__(self, storage_type, key, numel, view_offset=0, view_numel=None):
        self.storage_type = storage_type
        self.key = key
        self.numel = numel                          # elements in the root storage
        self.view_offset = view_offset              # legacy views: where this slice starts...
        self.view_numel = numel if view_numel is None else view_numel    # ...and how long it is


class TensorRecord:
    """A tensor as ``_rebuild_tensor_v2`` describes it; becomes an ndarray once storages are read."""

    def __init__(self, storage, storage_offset, size, stride):
        self.storage = storage
        self.storage_offset = storage_offset
        self.size = size
        self.stride = stride


def _check_int_tuple(value, what):
    if not isinstance(value, tuple) or not all(type(item) is int and item >= 0 for item in value):
        raise TorchFileError(f"tensor {what} must be a tuple of non-negative ints; got {value!r}")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride, *ignored):
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (and v1): record the view, read nothing yet.

    The ignored trailing arguments are ``requires_grad``, ``backward_hooks`` and ``metadata``.
    """
    if not isinstance(storage, StorageRef):
        raise TorchFileError(f"a tensor must be built on a storage; got {type(storage).__name__}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise TorchFileError(f"tensor storage offset must be a non-negative int; got {storage_offset!r}")
    size, stride = _check_int_tuple(size, "size"), _check_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise TorchFileError(f"tensor size {size} and stride {stride} have different lengths")
    return TensorRecord(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *ignored):
    """Stand-in for ``torch._utils._rebuild_parameter``: a Parameter is its tensor."""
    if not isinstance(data, TensorRecord):
        raise TorchFileError(f"a parameter must wrap a tensor; got {type(data).__name__}")
    return data


def _encode_latin1(text, encoding):
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use for ``bytes`` objects."""
    if not isinstance(text, str) or encoding != "latin1":
        raise TorchFileError(f"_codecs.encode is only accepted as encode(str, 'latin1'); got {encoding!r}")
    return text.encode("latin1")


class _PickledOrderedDict(OrderedDict):
    """``collections.OrderedDict`` as unpickled here: attributes the pickle sets on it are ignored.

    (``state_dict()`` carries a ``_metadata`` attribute with layer versions, which tinycnn does not use.)
    """

    def __setstate__(self, state):
        pass


class _AllowedFunction(_Frozen):
    """One of our stand-in functions as a pickle sees it: callable, with no attributes to overwrite."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self):
        return f"<stand-in {self.function.__name__}>"


# (module, name) -> what it unpickles to. Nothing outside this table is ever looked up.
_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _AllowedFunction(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor"): _AllowedFunction(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _AllowedFunction(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _AllowedFunction(_rebuild_parameter),
    ("collections", "OrderedDict"): _PickledOrderedDict,
    ("_codecs", "encode"): _AllowedFunction(_encode_latin1),
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds tensors, ordered dicts and plain containers, and refuses everything else.

    ``find_class`` is the only way a pickle reaches a Python name (``GLOBAL``, ``STACK_GLOBAL`` and the
    extension registry all go through it), so refusing there means nothing the file names is imported.
    """

    def __init__(self, file, storage_ref):
        super().__init__(file)
        self._storage_ref = storage_ref        # persistent id tuple -> StorageRef (format-specific)

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise TorchFileError(
                f"refused to load {module}.{name}: the file asks for an object that is not a tensor, an "
                f"ordered dict or a plain container, and unpickling it could run code. tinycnn reads weights "
                f"only; if you trust the file, open it with torch.load(path, weights_only=False) and pass "
                f"its state_dict() to tinycnn.io.convert_torch_state_dict") from None

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] in ("storage", b"storage")):
            kind = saved_id[0] if isinstance(saved_id, tuple) and saved_id else saved_id
            hint = " (a whole pickled model: save model.state_dict() instead)" if kind == "module" else ""
            raise TorchFileError(f"refused persistent object {kind!r}{hint}: only tensor storages are read")
        return self._storage_ref(saved_id[1:])


def _plain_load(file):
    """One pickle that may hold numbers, strings and containers only (legacy headers, storage keys)."""
    return _RestrictedUnpickler(file, storage_ref=_no_storages).load()


def _no_storages(data):
    raise TorchFileError("unexpected tensor storage in a legacy file header")


def _storage_ref_from(data, has_view):
    """Check a persistent id's fields (after "storage") and make a :class:`StorageRef`."""
    expected = 5 if has_view else 4
    if len(data) != expected:
        raise TorchFileError(f"a storage id has {len(data) + 1} fields; expected {expected + 1}")
    storage_type, key, _location, numel = data[:4]
    if not isinstance(storage_type, StorageType):
        raise TorchFileError(f"unknown storage type {storage_type!r}")
    if isinstance(key, bytes):
        key = key.decode("ascii")
    if not isinstance(key, str) or type(numel) is not int or numel < 0:
        raise TorchFileError(f"malformed storage id: key {key!r}, numel {numel!r}")
    view = data[4] if has_view else None
    if view is None:
        return StorageRef(storage_type, key, numel)
    if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) is int and v >= 0 for v in view[1:])):
        raise TorchFileError(f"malformed storage view {view!r}")
    _view_key, view_offset, view_numel = view
    if view_offset + view_numel > numel:
        raise TorchFileError(f"storage view [{view_offset}, {view_offset + view_numel}) lies outside "
                             f"storage {key!r} of {numel} elements")
    return StorageRef(storage_type, key, numel, view_offset, view_numel)


# ----------------------------------------------------------------------------------------------------
# From records and bytes to arrays
# ----------------------------------------------------------------------------------------------------
def _tensor_array(record, storages):
    """Cut the tensor ``record`` out of its storage (bounds checked) as a native-order ndarray copy."""
    ref = record.storage
    flat = storages[ref.key][ref.view_offset:ref.view_offset + ref.view_numel]
    size, stride, offset = record.size, record.stride, record.storage_offset
    if all(size):                           # the last element a view touches must be inside the storage
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(flat):
            raise TorchFileError(f"a tensor of size {size}, stride {stride}, offset {offset} reaches element "
                                 f"{last} of storage {ref.key!r}, which has only {len(flat)}")
        view = np.lib.stride_tricks.as_strided(flat[offset:], size, [s * flat.itemsize for s in stride],
                                               writeable=False)
    else:                                   # an empty tensor
        view = np.empty(size, dtype=flat.dtype)
    array = view.astype(flat.dtype.newbyteorder("="))      # a native-order copy, independent of the file
    if ref.storage_type.name == "BFloat16Storage":         # bfloat16 = the top 16 bits of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _materialise(node, storages):
    """The unpickled object with every :class:`TensorRecord` replaced by its ndarray."""
    if isinstance(node, TensorRecord):
        return _tensor_array(node, storages)
    if isinstance(node, dict):
        converted = OrderedDict() if isinstance(node, OrderedDict) else {}
        for key, value in node.items():
            converted[key] = _materialise(value, storages)
        return converted
    if isinstance(node, list):
        return [_materialise(item, storages) for item in node]
    if isinstance(node, tuple):
        return tuple(_materialise(item, storages) for item in node)
    if isinstance(node, (StorageRef, StorageType)):
        raise TorchFileError("a bare storage outside a tensor is not supported")
    return node


def _collect_refs(node, refs):
    """Every StorageRef used by a tensor in ``node``, by key."""
    if isinstance(node, TensorRecord):
        ref = node.storage
        known = refs.setdefault(ref.key, ref)
        if (known.storage_type.name, known.numel) != (ref.storage_type.name, ref.numel):
            raise TorchFileError(f"storage {ref.key!r} is declared with two different types or sizes")
    elif isinstance(node, dict):
        for value in node.values():
            _collect_refs(value, refs)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _collect_refs(item, refs)
    return refs


# ----------------------------------------------------------------------------------------------------
# The two file layouts
# ----------------------------------------------------------------------------------------------------
def _read_zip(archive):
    """Read the zip layout from an open ``zipfile.ZipFile``."""
    names = archive.namelist()
    pickles = [name for name in names if name.count("/") == 1 and name.endswith("/data.pkl")]
    if len(pickles) != 1:
        if any(name.endswith("/constants.pkl") for name in names):
            raise TorchFileError("this is a TorchScript archive (torch.jit.save), not a saved state dict")
        raise TorchFileError("a zip archive without exactly one <name>/data.pkl, so not a PyTorch file "
                             f"(members: {names[:5]}{' ...' if len(names) > 5 else ''})")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"                        # torch's default for files without the record
    if prefix + "byteorder" in names:
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise TorchFileError(f"unknown byte order {byteorder!r}")

    unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])),
                                     storage_ref=lambda data: _storage_ref_from(data, has_view=False))
    obj = unpickler.load()
    storages = {}
    for key, ref in _collect_refs(obj, {}).items():
        member = f"{prefix}data/{key}"
        if member not in names:
            raise TorchFileError(f"the storage {member} is missing from the archive")
        dtype = ref.storage_type.dtype(byteorder)
        raw = archive.read(member)
        if len(raw) != ref.numel * dtype.itemsize:
            raise TorchFileError(f"storage {member} has {len(raw)} bytes; its {ref.numel} elements of "
                                 f"{dtype.itemsize} bytes need {ref.numel * dtype.itemsize}")
        storages[key] = np.frombuffer(raw, dtype=dtype)
    return _materialise(obj, storages)


def _read_legacy(file):
    """Read the legacy layout from an open binary file positioned at its start."""
    magic = _plain_load(file)
    if magic != LEGACY_MAGIC_NUMBER:
        raise TorchFileError("neither a zip archive nor a legacy PyTorch file (wrong magic number)")
    protocol = _plain_load(file)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise TorchFileError(f"legacy protocol version {protocol!r} is not supported "
                             f"(expected {LEGACY_PROTOCOL_VERSION})")
    _system_info = _plain_load(file)          # byte order and C type sizes of the writer; data is little-endian
    unpickler = _RestrictedUnpickler(file, storage_ref=lambda data: _storage_ref_from(data, has_view=True))
    obj = unpickler.load()
    storage_keys = _plain_load(file)
    if not (isinstance(storage_keys, list) and all(isinstance(key, str) for key in storage_keys)):
        raise TorchFileError("malformed list of storage keys")
    refs = _collect_refs(obj, {})
    storages = {}
    for key in storage_keys:                  # every saved storage follows, in this order
        header = file.read(8)
        if len(header) != 8:
            raise TorchFileError(f"the file ends before storage {key!r} (truncated?)")
        (numel,) = struct.unpack("<q", header)
        ref = refs.get(key)
        if ref is None:                       # torch saves only the storages its tensors use
            raise TorchFileError(f"storage {key!r} is saved but no tensor uses it")
        if numel != ref.numel:
            raise TorchFileError(f"storage {key!r} has {numel} elements in the file; the pickle says {ref.numel}")
        dtype = ref.storage_type.dtype("little")
        raw = file.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise TorchFileError(f"storage {key!r} is cut short: {len(raw)} of {numel * dtype.itemsize} bytes "
                                 f"(truncated file?)")
        storages[key] = np.frombuffer(raw, dtype=dtype)
    missing = sorted(set(refs) - set(storages))
    if missing:
        raise TorchFileError(f"tensors use storages {missing} that the file does not contain")
    if file.read(1):
        raise TorchFileError("unexpected bytes after the last storage")
    return _materialise(obj, storages)


# What a corrupt file can raise while we parse it; all become one clear error naming the file.
_PARSE_ERRORS = (TorchFileError, pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile,
                 zlib.error, UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError,
                 AttributeError, OverflowError, RecursionError, MemoryError)


def read_torch_file(path):
    """Read the file at ``path`` (a ``pathlib.Path`` that exists); see :func:`tinycnn.io.read_torch_file`."""
    with open(path, "rb") as file:
        try:
            if zipfile.is_zipfile(file):
                file.seek(0)
                with zipfile.ZipFile(file) as archive:
                    return _read_zip(archive)
            file.seek(0)
            if _is_tar(file):
                raise TorchFileError("this is PyTorch's pre-0.4 tar format, which is not supported: load it "
                                     "with an old PyTorch and save it again with torch.save")
            file.seek(0)
            return _read_legacy(file)
        except TorchFileError as error:
            raise TorchFileError(f"{path}: {error}") from None
        except _PARSE_ERRORS as error:
            raise TorchFileError(f"{path} is not a readable PyTorch file (truncated, corrupt, or another "
                                 f"format): {type(error).__name__}: {error}") from error


def _is_tar(file):
    try:
        return tarfile.is_tarfile(file)
    except (OSError, tarfile.TarError):
        return False
