"""PyTorch checkpoints read without torch and without running pickle code.

``torch.save`` (torch >= 1.6) writes a zip archive (members stored, not compressed)::

    <prefix>/data.pkl        the pickled object: a state_dict, or a dict holding state_dicts
    <prefix>/data/<key>      the raw bytes of each storage, little-endian unless <prefix>/byteorder says "big"
    <prefix>/version         the format version (ignored here)

``data.pkl`` is read by a restricted `pickle.Unpickler`: ``find_class`` resolves only the globals
below, each to a constructor of this module (never to torch, which need not be installed), and
refuses any other with "refuses pickle global <module>.<name>" before anything could run.
``persistent_load`` resolves ``("storage", storage_type, key, location, numel)`` to a description
of ``<prefix>/data/<key>``, which is read (CRC-checked, bounded by ``max_bytes``) only when a tensor
of it is loaded. Allowed globals:

- ``torch._utils._rebuild_tensor_v2``, ``torch._utils._rebuild_tensor_v3``: a tensor, as a numpy
  view of its storage with the pickled offset, shape and strides (all checked to lie inside it);
- ``torch._utils._rebuild_parameter``, ``torch._utils._rebuild_parameter_with_state`` and
  ``torch._tensor._rebuild_from_type_v2`` with ``torch.Tensor`` or
  ``torch.nn.parameter.Parameter``: the tensor they wrap (requires_grad, hooks and state dropped);
- ``collections.OrderedDict``, ``torch.Size`` (a tuple) and ``_codecs.encode`` (how protocol 2
  pickles ``bytes``; latin-1 only);
- the storage classes ``torch.FloatStorage``, ``DoubleStorage``, ``HalfStorage``,
  ``BFloat16Storage``, ``LongStorage``, ``IntStorage``, ``ShortStorage``, ``CharStorage``,
  ``ByteStorage``, ``BoolStorage``, ``ComplexFloatStorage``, ``ComplexDoubleStorage``, the
  quantized ones, ``torch.UntypedStorage`` and ``torch.storage.UntypedStorage``, and the dtypes
  ``torch.float32`` etc.: markers of an element type (quantized and float8 tensors are listed
  as skipped).

bfloat16 tensors come as float32, as in the safetensors reader. Nested containers are
flattened with dotted names (``{"model": {"fc.weight": ...}}`` gives ``model.fc.weight``; list
items are numbered); values that are not tensors are ignored. The walk is bounded in depth
(`linalg_lowrank.config.AUDIT_MAX_NESTING`) and size (`linalg_lowrank.config.AUDIT_MAX_OBJECTS`);
the pickle itself in size (`linalg_lowrank.config.AUDIT_MAX_PICKLE_BYTES`). The legacy
(pre-1.6, not zip) format and TorchScript archives are refused.
"""

import _compat_pickle
import collections
import io
import math
import os
import pickle
import pickletools

import numpy as np

from . import config
from ._readers import (
    CheckpointError,
    _bf16_to_f32,
    _check_cap,
    _clean_name,
    _Entry,
    _is_count,
    _readonly,
    _skip_reason,
)

__all__ = ["torch_entries"]


class _ElementType:
    """A storage class or dtype of the pickle: the element type, not callable."""

    __slots__ = ("name", "np_dtype")

    def __init__(self, name, np_dtype):
        self.name = name  # torch's name: float32, bfloat16, qint8, ...
        self.np_dtype = np_dtype  # numpy dtype of the stored bytes (little-endian), None if not read

    def __repr__(self):
        return f"<torch element type {self.name}>"


def _types():
    numeric = {
        "float32": "<f4",
        "float64": "<f8",
        "float16": "<f2",
        "bfloat16": "<u2",
        "int64": "<i8",
        "int32": "<i4",
        "int16": "<i2",
        "int8": "i1",
        "uint8": "u1",
        "uint16": "<u2",
        "uint32": "<u4",
        "uint64": "<u8",
        "bool": "?",
        "complex64": "<c8",
        "complex128": "<c16",
    }
    storages = {
        "FloatStorage": "float32",
        "DoubleStorage": "float64",
        "HalfStorage": "float16",
        "BFloat16Storage": "bfloat16",
        "LongStorage": "int64",
        "IntStorage": "int32",
        "ShortStorage": "int16",
        "CharStorage": "int8",
        "ByteStorage": "uint8",
        "BoolStorage": "bool",
        "ComplexFloatStorage": "complex64",
        "ComplexDoubleStorage": "complex128",
        "UntypedStorage": "uint8",
    }
    aliases = {
        "float": "float32",
        "double": "float64",
        "half": "float16",
        "long": "int64",
        "int": "int32",
        "short": "int16",
        "cfloat": "complex64",
        "cdouble": "complex128",
    }
    unsupported = [
        "qint8",
        "quint8",
        "qint32",
        "quint4x2",
        "quint2x4",
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
        "complex32",
        "chalf",
    ]
    dtypes = {name: _ElementType(name, np.dtype(code)) for name, code in numeric.items()}
    dtypes.update({alias: dtypes[name] for alias, name in aliases.items()})
    dtypes.update({name: _ElementType(name, None) for name in unsupported})
    storage_types = {cls: dtypes[name] for cls, name in storages.items()}
    for cls, name in [("QInt8Storage", "qint8"), ("QUInt8Storage", "quint8"), ("QInt32Storage", "qint32")]:
        storage_types[cls] = dtypes[name]
    for cls, name in [("QUInt4x2Storage", "quint4x2"), ("QUInt2x4Storage", "quint2x4")]:
        storage_types[cls] = dtypes[name]
    return dtypes, storage_types


_DTYPES, _STORAGE_TYPES = _types()


class _Storage:
    """``<prefix>/data/<key>``: numel elements of ``etype`` (read only when a tensor needs it)."""

    __slots__ = ("key", "etype", "numel")

    def __init__(self, key, etype, numel):
        self.key, self.etype, self.numel = key, etype, numel


class _Tensor:
    """A tensor of the pickle: a strided view of a storage, in elements of ``etype``."""

    __slots__ = ("storage", "etype", "offset", "shape", "stride")

    def __init__(self, storage, etype, offset, shape, stride):
        self.storage, self.etype, self.offset, self.shape, self.stride = storage, etype, offset, shape, stride

    def __setstate__(self, state):
        raise pickle.UnpicklingError("BUILD on a tensor is not part of the format")


class _Marker:
    """``torch.Tensor`` / ``torch.nn.parameter.Parameter`` as the type argument of _rebuild_from_type_v2."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


def _int_tuple(what, value):
    if not isinstance(value, tuple | list) or not all(_is_count(v) for v in value):
        raise pickle.UnpicklingError(f"tensor {what} {value!r} is not a tuple of non-negative integers")
    return tuple(value)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor storage is not a persistent storage record")
    if not isinstance(dtype, _ElementType):
        raise pickle.UnpicklingError(f"tensor dtype {dtype!r} is not a torch dtype")
    if not _is_count(storage_offset):
        raise pickle.UnpicklingError(f"tensor storage offset {storage_offset!r} is not a non-negative integer")
    size, stride = _int_tuple("size", size), _int_tuple("stride", stride)
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    return _Tensor(storage, dtype, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor storage is not a persistent storage record")
    return _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, storage.etype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _Tensor):
        raise pickle.UnpicklingError("a parameter must wrap a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data)


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter, _rebuild_parameter_with_state):
        raise pickle.UnpicklingError("_rebuild_from_type_v2 of something other than a tensor")
    if not isinstance(new_type, _Marker) or not isinstance(args, tuple):
        raise pickle.UnpicklingError("_rebuild_from_type_v2 of a type other than Tensor or Parameter")
    return func(*args)


def _codecs_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin-1 strings (protocol 2 bytes)")
    return text.encode("latin1")


def _size(*args):
    if len(args) > 1:
        raise pickle.UnpicklingError("torch.Size takes one argument")
    return tuple(_int_tuple("size", args[0])) if args else ()


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _Marker("Tensor"),
    ("torch.nn.parameter", "Parameter"): _Marker("Parameter"),
    ("torch", "Size"): _size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
}
_ALLOWED.update({("torch", name): etype for name, etype in _STORAGE_TYPES.items()})
_ALLOWED.update({("torch", name): etype for name, etype in _DTYPES.items()})
_ALLOWED[("torch.storage", "UntypedStorage")] = _STORAGE_TYPES["UntypedStorage"]


class _Refused(pickle.UnpicklingError):
    pass


def _global_name(module, name):
    """``module.name`` as written in the pickle, with its Python 3 name if protocol 2 renamed it."""
    written = f"{module}.{name}"
    py3 = _compat_pickle.NAME_MAPPING.get((module, name))
    if py3 is None and module in _compat_pickle.IMPORT_MAPPING:
        py3 = (_compat_pickle.IMPORT_MAPPING[module], name)
    return written if py3 is None else f"{written} (Python 3: {py3[0]}.{py3[1]})"


class _Unpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED` globals; storages become `_Storage` records, never read here."""

    def __init__(self, data):
        super().__init__(io.BytesIO(data))
        self.storages = {}

    def find_class(self, module, name):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _Refused(f"refuses pickle global {_global_name(module, name)}")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("persistent id is not a ('storage', type, key, location, numel) record")
        _, etype, key, _location, numel = pid
        if not isinstance(etype, _ElementType):
            raise pickle.UnpicklingError("persistent storage type is not a torch storage class")
        if not isinstance(key, str) or not _is_count(numel):
            raise pickle.UnpicklingError("persistent storage key must be a str and numel a non-negative integer")
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = _Storage(key, etype, numel)
        elif known.etype is not etype or known.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} is described twice, differently")
        return known


#: Protocol 5's out-of-band buffer opcodes: never written by torch.save, and not needed to read it.
_REFUSED_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}


def _check_opcodes(path, data):
    """Walk the opcodes without executing them (pickletools); refuse the protocol 5 buffer ones."""
    for opcode, _arg, pos in pickletools.genops(data):
        if opcode.name in _REFUSED_OPCODES:
            raise CheckpointError(path, f"data.pkl: refuses pickle opcode {opcode.name} at byte {pos}")


def _unpickle(path, data):
    try:
        _check_opcodes(path, data)
        return _Unpickler(data).load()
    except _Refused as exc:
        raise CheckpointError(path, f"data.pkl: {exc}") from None
    except CheckpointError:
        raise
    except Exception as exc:  # only our constructors ran: any failure is a bad file
        raise CheckpointError(
            path, f"data.pkl is not a valid checkpoint pickle ({type(exc).__name__}: {exc})"
        ) from None


def _key_name(path, key):
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="replace")
    if isinstance(key, bool | int) or key is None:
        return str(key)
    if isinstance(key, float):
        return repr(key)
    raise CheckpointError(path, f"data.pkl: a dict key of type {type(key).__name__.lstrip('_')} (expected str or int)")


def _flatten(path, obj, root):
    """(dotted name, _Tensor) of every tensor in nested dicts / lists / tuples, in order; bounded."""
    max_depth, max_objects = config.AUDIT_MAX_NESTING, config.AUDIT_MAX_OBJECTS
    out, seen, count = [], set(), 0
    stack = [(root, obj, 0)]
    while stack:
        name, value, depth = stack.pop()
        count += 1
        if count > max_objects:
            raise CheckpointError(path, f"data.pkl: more than {max_objects} objects")
        if isinstance(value, _Tensor):
            out.append((name, value))
            continue
        if not isinstance(value, dict | list | tuple):
            continue  # numbers, strings, ...: not tensors
        if id(value) in seen:  # shared or cyclic: each container is walked once
            continue
        seen.add(id(value))
        if depth >= max_depth:
            raise CheckpointError(path, f"data.pkl: containers nested more than {max_depth} deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        children = [(_key_name(path, k), v) for k, v in items]
        for key, child in reversed(children):
            stack.append((f"{name}.{key}" if name else key, child, depth + 1))
    return out


def _tensor_entry(members, prefix, byteorder, name, t, cache):
    path = members.path
    etype = t.etype
    if etype.np_dtype is None:
        return _Entry(name, t.shape, etype.name, f"unsupported dtype {etype.name}", None)
    dtype = etype.np_dtype.newbyteorder(">") if byteorder == "big" else etype.np_dtype
    reason = _skip_reason(t.shape, np.dtype(np.float32) if etype.name == "bfloat16" else dtype)
    if reason is not None:
        return _Entry(name, t.shape, etype.name, reason, None)
    member = f"{prefix}/data/{t.storage.key}"
    what = f"tensor {name!r}"
    if member not in members:
        raise CheckpointError(path, f"{what}: storage record {member!r} is missing")
    stored = members.info(member).file_size
    storage_bytes = t.storage.numel * t.storage.etype.np_dtype.itemsize if t.storage.etype.np_dtype else None
    if storage_bytes is None or storage_bytes > stored:
        raise CheckpointError(path, f"{what}: storage {member!r} holds {stored} bytes, its record promises more")
    capacity = storage_bytes // dtype.itemsize
    last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride, strict=True))
    if last >= capacity:
        raise CheckpointError(
            path,
            f"{what}: offset {t.offset}, shape {list(t.shape)} and stride {list(t.stride)} reach element {last}, "
            f"the storage holds {capacity}",
        )
    _check_cap(path, what, math.prod(t.shape) * dtype.itemsize, members.max_bytes)
    _check_cap(path, f"storage {member!r}", stored, members.max_bytes)
    bf16 = etype.name == "bfloat16"

    def load():
        buf = cache.get(member)
        if buf is None:
            cache.clear()  # one storage in memory at a time; tensors of one storage come together
            buf = cache[member] = members.read(member)
        elements = buf[: capacity * dtype.itemsize].view(dtype)
        strides = tuple(s * dtype.itemsize for s in t.stride)
        arr = np.lib.stride_tricks.as_strided(elements[t.offset :], t.shape, strides, writeable=False)
        if bf16:
            return _readonly(_bf16_to_f32(arr))
        if byteorder == "big":  # as torch.load gives it: native byte order
            return _readonly(arr.astype(dtype.newbyteorder("=")))
        return arr

    _, start = members.data_start[member]
    return _Entry(name, t.shape, etype.name, None, load, (start, members.info(member).compress_size))


def torch_entries(members, prefix):
    """`_Entry` list of the PyTorch zip checkpoint whose records are ``<prefix>/...`` in ``members``."""
    path = members.path
    byteorder = "little"
    if f"{prefix}/byteorder" in members:
        raw = bytes(members.read(f"{prefix}/byteorder", max_bytes=16))
        byteorder = raw.decode("ascii", errors="replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(path, f"byteorder record {raw!r}: expected 'little' or 'big'")
    cap = min(members.max_bytes, config.AUDIT_MAX_PICKLE_BYTES)
    obj = _unpickle(path, bytes(members.read(f"{prefix}/data.pkl", max_bytes=cap)))
    root = _clean_name(os.path.splitext(os.path.basename(path))[0]) if isinstance(obj, _Tensor) else ""
    cache = {}
    return [
        _tensor_entry(members, prefix, byteorder, _clean_name(name), t, cache) for name, t in _flatten(path, obj, root)
    ]
