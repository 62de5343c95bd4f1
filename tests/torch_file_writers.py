"""Write small PyTorch-format files (zip and legacy) without PyTorch, for tests of tinycnn.io.read_torch_file.

The files follow torch/serialization.py byte for byte in structure: a protocol-2 pickle in which a tensor
is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`` and a storage
is the persistent id ``("storage", torch.FloatStorage, key, "cpu", numel[, view])``. Because torch is not
imported, the names ``torch.FloatStorage`` etc. are written as raw GLOBAL opcodes by a small pickler.
"""
import io
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                 np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                 np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage"}


class Global:
    """A ``module.name`` reference, pickled as a GLOBAL opcode without importing the module."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):             # the pickler only checks that a reduce function is callable
        raise TypeError("a Global is a name to pickle, not a function to call")


class Storage:
    """A flat storage: ``data`` (1-D array; ``bfloat16=True`` means uint16 bit patterns) under ``key``."""

    def __init__(self, key, data, bfloat16=False):
        self.key, self.data = key, np.ascontiguousarray(data).ravel()
        self.type_name = "BFloat16Storage" if bfloat16 else STORAGE_NAMES[self.data.dtype]


class Tensor:
    """A view of ``storage``: ``size``, ``stride`` and ``offset`` in elements, as torch records them."""

    def __init__(self, storage, size, stride=None, offset=0):
        if stride is None:                       # contiguous
            stride = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
        self.storage, self.size, self.stride, self.offset = storage, tuple(size), tuple(stride), offset

    def __reduce__(self):
        return (Global("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, self.offset, self.size, self.stride, False, OrderedDict()))


def tensor(array):
    """A contiguous tensor holding ``array`` in its own storage (keys are assigned when the file is written)."""
    array = np.asarray(array)
    return Tensor(Storage(None, array), array.shape)


class _Pickler(pickle._Pickler):
    """The pure-Python pickler, taught to write Global references and storage persistent ids."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy):
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages = OrderedDict()            # key -> Storage, in first-use order

    def save_raw_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))

    dispatch[Global] = save_raw_global

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        if obj.key is None:
            obj.key = str(len(self.storages))
        self.storages.setdefault(obj.key, obj)
        pid = ("storage", Global("torch", obj.type_name), obj.key, "cpu", obj.data.size)
        return pid + (None,) if self.legacy else pid


def _pickle(obj, legacy):
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, legacy)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.storages


def write_zip(path, obj, byteorder="little", folder="archive", data_pkl=None):
    """Write ``obj`` in the zip layout; ``data_pkl`` replaces the pickle (for malicious-file tests)."""
    pickled, storages = _pickle(obj, legacy=False)
    order = "<" if byteorder == "little" else ">"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{folder}/data.pkl", pickled if data_pkl is None else data_pkl)
        archive.writestr(f"{folder}/byteorder", byteorder)
        for key, storage in storages.items():
            archive.writestr(f"{folder}/data/{key}", storage.data.astype(storage.data.dtype.newbyteorder(order)).tobytes())
        archive.writestr(f"{folder}/version", "3\n")
    return path


def write_legacy(path, obj, object_pickle=None):
    """Write ``obj`` in the legacy layout; ``object_pickle`` replaces the object's pickle."""
    pickled, storages = _pickle(obj, legacy=True)
    with open(path, "wb") as file:
        for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION,
                       {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, file, protocol=2)
        file.write(pickled if object_pickle is None else object_pickle)
        pickle.dump(list(storages), file, protocol=2)
        for storage in storages.values():
            file.write(struct.pack("<q", storage.data.size))
            file.write(storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())
    return path
