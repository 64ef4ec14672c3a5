"""Checkpoint file readers of the audit: ``.npy``, ``.npz`` and ``.safetensors``, one tensor at a time.

Tensors are read one at a time and never the whole file: ``.npy`` files and the uncompressed
members of ``.npz`` archives are memory-mapped, compressed ``.npz`` members are decompressed one
member at a time, and ``.safetensors`` files are parsed by a small reader of their own (8-byte
little-endian header length, JSON header, raw little-endian data) that memory-maps each tensor.
Every problem with a file is a `CheckpointError` (a ValueError) naming the file, in one line.
"""

import contextlib
import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["CheckpointError", "TensorItem", "read_tensors"]

#: Largest safetensors JSON header accepted (the reference implementation's limit).
_SAFETENSORS_MAX_HEADER = 100_000_000
_EXTENSIONS = (".npz", ".npy", ".safetensors")

# safetensors dtype code -> (numpy dtype to map the bytes with, name reported, audited?)
_ST_DTYPES = {
    "F64": ("<f8", "float64", True),
    "F32": ("<f4", "float32", True),
    "F16": ("<f2", "float16", True),
    "BF16": ("<u2", "bfloat16", True),
    "I8": ("i1", "int8", False),
    "I16": ("<i2", "int16", False),
    "I32": ("<i4", "int32", False),
    "I64": ("<i8", "int64", False),
    "U8": ("u1", "uint8", False),
    "U16": ("<u2", "uint16", False),
    "U32": ("<u4", "uint32", False),
    "U64": ("<u8", "uint64", False),
    "BOOL": ("?", "bool", False),
}

_REASON_NOT_FLOAT = "not floating point"
_REASON_NOT_MATRIX = "not a matrix"
_REASON_EMPTY = "empty (a dimension is 0)"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or malformed.

    Parameters
    ----------
    path : str
        The file.
    problem : str
        What is wrong with it, in one line.

    Examples
    --------
    >>> str(CheckpointError("model.safetensors", "bad header length 12345"))
    'model.safetensors: bad header length 12345'
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the cause said
        super().__init__(f"{self.path}: {self.problem}")


class TensorItem(NamedTuple):
    """What `read_tensors` yields: unpack as ``name, array, reason``."""

    name: str
    """Name of the tensor in the checkpoint."""
    array: np.ndarray | None
    """The data (a memmap or a view of one where the format allows), None when skipped."""
    reason: str | None
    """Why the tensor is skipped, None when ``array`` is given."""


@dataclass(frozen=True)
class _Entry:
    """One tensor of an opened checkpoint, read only when ``load`` is called."""

    name: str
    shape: tuple
    dtype: str
    reason: str | None  # why it is skipped, None if it is audited
    load: Callable[[], np.ndarray] | None


def _skip_reason(shape, dtype):
    """Why a tensor of this shape and numpy dtype is not audited, or None."""
    if dtype.kind in "iub":
        return _REASON_NOT_FLOAT
    if dtype.kind == "c":
        return "complex dtype not supported"
    if dtype.kind != "f" or dtype.fields is not None:
        return f"not a numeric dtype ({dtype})"
    return _shape_reason(shape)


def _shape_reason(shape):
    if len(shape) < 2:
        return _REASON_NOT_MATRIX
    if 0 in shape:
        return _REASON_EMPTY
    return None


def _nbytes(shape, itemsize):
    return math.prod(shape) * itemsize


def _read_npy_header(fp):
    """Shape, Fortran order and dtype of the .npy stream at its start; leaves ``fp`` at the data."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)  # 3.0 differs only in the header's encoding


def _check_path(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__}") from None
    if not os.path.exists(path):
        raise CheckpointError(path, "no such file")
    if os.path.isdir(path):
        raise CheckpointError(path, "is a directory, expected a .npz, .npy or .safetensors file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise CheckpointError(path, f"unknown extension {ext or '(none)'!r}: expected .npz, .npy or .safetensors")
    return path, ext


@contextlib.contextmanager
def _open_checkpoint(path):
    """Parse the headers of a checkpoint and yield its `_Entry` list (data is read on ``load``)."""
    path, ext = _check_path(path)
    try:
        if ext == ".npy":
            yield _npy_entries(path)
        elif ext == ".safetensors":
            yield _safetensors_entries(path)
        else:
            with _open_zip(path) as zf:
                yield _npz_entries(path, zf)
    except OSError as exc:
        raise CheckpointError(path, exc.strerror or str(exc)) from exc


def _npy_entries(path):
    size = os.path.getsize(path)
    with open(path, "rb") as fp:
        try:
            shape, fortran_order, dtype = _read_npy_header(fp)
        except (ValueError, EOFError, SyntaxError) as exc:
            raise CheckpointError(path, f"not a valid .npy file ({exc})") from None
        data_offset = fp.tell()
    name = os.path.splitext(os.path.basename(path))[0]
    reason = _skip_reason(shape, dtype)
    if not dtype.hasobject:
        need = _nbytes(shape, dtype.itemsize)
        if data_offset + need > size:
            raise CheckpointError(
                path, f"truncated: the header promises {need} bytes of data, the file holds {size - data_offset}"
            )
    load = None if reason else lambda: np.load(path, mmap_mode="r", allow_pickle=False)
    return [_Entry(name, tuple(shape), str(dtype), reason, load)]


@contextlib.contextmanager
def _open_zip(path):
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(path, f"not a valid .npz (zip) file ({exc})") from None
    with zf:
        yield zf


def _npz_entries(path, zf):
    size = os.path.getsize(path)
    entries = []
    with open(path, "rb") as raw:
        for info in zf.infolist():
            if info.is_dir():
                continue
            member = info.filename
            if not member.endswith(".npy"):
                entries.append(_Entry(member, (), "unknown", "not a .npy member", None))
                continue
            try:
                with zf.open(info) as fp:
                    shape, fortran_order, dtype = _read_npy_header(fp)
                    header_len = fp.tell()
            except (ValueError, EOFError, SyntaxError, zipfile.BadZipFile, zlib.error) as exc:
                raise CheckpointError(path, f"member {member!r} is not a valid .npy ({exc})") from None
            name = member[:-4]
            reason = _skip_reason(shape, dtype)
            need = 0 if dtype.hasobject else _nbytes(shape, dtype.itemsize)
            if header_len + need > info.file_size:
                raise CheckpointError(
                    path,
                    f"member {member!r} is truncated: its header promises {need} bytes of data, "
                    f"it holds {info.file_size - header_len}",
                )
            load = None
            if reason is None:
                if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                    start = _zip_data_start(path, raw, info) + header_len
                    if start + need > size:
                        raise CheckpointError(path, f"member {member!r} runs past the end of the file")
                    load = _memmap_loader(path, dtype, start, shape, "F" if fortran_order else "C")
                else:
                    load = _zip_member_loader(path, zf, info)
            entries.append(_Entry(name, tuple(shape), str(dtype), reason, load))
    return entries


def _zip_data_start(path, raw, info):
    """Offset in the file of a stored zip member's bytes (after its local file header)."""
    raw.seek(info.header_offset)
    local = raw.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise CheckpointError(path, f"member {info.filename!r}: bad local file header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _memmap_loader(path, dtype, offset, shape, order="C"):
    def load():
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order=order)

    return load


def _zip_member_loader(path, zf, info):
    def load():
        try:
            with zf.open(info) as fp:
                return np.lib.format.read_array(fp, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise CheckpointError(path, f"member {info.filename!r} is corrupt ({exc})") from None

    return load


def _safetensors_entries(path):
    size = os.path.getsize(path)
    with open(path, "rb") as fp:
        head = fp.read(8)
        if len(head) < 8:
            raise CheckpointError(path, f"truncated: {size} bytes, too short for the 8-byte header length")
        header_len = int.from_bytes(head, "little")
        if header_len > size - 8:
            raise CheckpointError(
                path, f"bad header length {header_len}: only {size - 8} bytes follow it (truncated or not safetensors)"
            )
        if header_len > _SAFETENSORS_MAX_HEADER:
            raise CheckpointError(path, f"bad header length {header_len}: larger than {_SAFETENSORS_MAX_HEADER}")
        raw = fp.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"bad JSON header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, f"bad JSON header: expected an object, got {type(header).__name__}")
    data_start = 8 + header_len
    data_size = size - data_start
    entries = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        code, shape, begin, end = _parse_safetensors_spec(path, name, spec)
        if end > data_size:
            raise CheckpointError(
                path,
                f"tensor {name!r}: data_offsets [{begin}, {end}] run past the end of the data "
                f"({data_size} bytes; truncated file?)",
            )
        known = _ST_DTYPES.get(code)
        if known is None:
            entries.append((begin, _Entry(name, shape, code, f"unsupported dtype {code}", None)))
            continue
        np_dtype, dtype_name, audited = known
        need = _nbytes(shape, np.dtype(np_dtype).itemsize)
        if end - begin != need:
            raise CheckpointError(
                path,
                f"tensor {name!r}: data_offsets span {end - begin} bytes, dtype {code} and shape {list(shape)} "
                f"need {need}",
            )
        reason = _shape_reason(shape) if audited else _REASON_NOT_FLOAT
        load = None
        if reason is None:
            load = _memmap_loader(path, np.dtype(np_dtype), data_start + begin, shape)
            if code == "BF16":
                load = _bf16_loader(load)
        entries.append((begin, _Entry(name, shape, dtype_name, reason, load)))
    entries.sort(key=lambda item: item[0])  # file order: reads go forward through the file
    return [entry for _, entry in entries]


def _parse_safetensors_spec(path, name, spec):
    def bad(what):
        return CheckpointError(path, f"bad JSON header: tensor {name!r} {what}")

    if not isinstance(spec, dict):
        raise bad(f"must map to an object, got {type(spec).__name__}")
    missing = {"dtype", "shape", "data_offsets"} - spec.keys()
    if missing:
        raise bad(f"lacks {', '.join(sorted(missing))}")
    code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]

    def is_count(x):
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if not isinstance(code, str):
        raise bad(f"has dtype {code!r}, expected a string")
    if not isinstance(shape, list) or not all(is_count(d) for d in shape):
        raise bad(f"has shape {shape!r}, expected a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_count(o) for o in offsets):
        raise bad(f"has data_offsets {offsets!r}, expected [begin, end]")
    begin, end = offsets
    if begin > end:
        raise bad(f"has data_offsets [{begin}, {end}] with begin > end")
    return code, tuple(shape), begin, end


def _bf16_loader(load):
    def load_bf16():
        bits = load()
        return (bits.astype(np.uint32) << 16).view(np.float32)

    return load_bf16


def read_tensors(path):
    """Tensors of a checkpoint one at a time, without reading the whole file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy``, ``.npz`` or ``.safetensors`` file.

    Yields
    ------
    item : TensorItem
        ``(name, array, reason)``. Tensors the audit computes with (floating, at least 2-D,
        non-empty) come with ``array`` and ``reason=None``; every other one with
        ``array=None`` and the reason it is skipped. Arrays of ``.npy`` files, uncompressed
        ``.npz`` members and ``.safetensors`` files are read-only ``numpy.memmap`` objects (no
        copy); compressed ``.npz`` members are decompressed alone; bfloat16 tensors come as
        float32 (numpy has no bfloat16). Arrays keep their stored dtype otherwise (float16
        included). A ``.npy`` file yields one tensor named after the file.

    Raises
    ------
    CheckpointError
        If the file is missing, has an unknown extension, or is truncated or malformed (bad
        header length, bad JSON, offsets past the end of the file, corrupt zip). Header
        problems are raised before the first item; corrupt compressed data when it is read.
    TypeError
        If ``path`` is not a path.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from linalg_lowrank.audit import read_tensors
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "ckpt.npz")
    ...     np.savez(path, w=np.eye(3, dtype=np.float32), step=np.int64(7))
    ...     for name, array, reason in read_tensors(path):
    ...         print(name, None if array is None else array.shape, reason)
    w (3, 3) None
    step None not floating point
    """
    with _open_checkpoint(path) as entries:
        for entry in entries:
            yield TensorItem(entry.name, None if entry.load is None else entry.load(), entry.reason)
