"""Checkpoint file readers of the audit: every file is treated as hostile.

Formats: ``.npy``, ``.npz`` (a zip of ``.npy`` members), ``.safetensors`` and PyTorch checkpoints
(``.pt``, ``.pth``, ``.bin``, ``.ckpt``: the zip format of ``torch.save``, read without torch by
`linalg_lowrank._torch_reader`). A zip file of any of these names (or of an unknown one) that
holds a ``<prefix>/data.pkl`` record is read as a PyTorch checkpoint.

What the readers guarantee, whatever the file holds:

- Only regular files are read: the path is checked with ``os.stat`` before it is opened (a FIFO
  is never opened, so it cannot hang the reader; a device or a directory is refused), and the
  opened descriptor is checked again with ``os.fstat``.
- Nothing is memory-mapped. A tensor's bytes are read with ``os.preadv`` into a buffer of the
  size the header promised, after the file's current size was checked: a file that shrinks while
  it is read gives a short read, reported as "file shrank while being read", never a SIGBUS.
- Sizes are checked against the file before anything is allocated: shapes must be non-negative,
  a tensor's bytes must lie inside the file (or inside its zip member), and one tensor or zip
  member may hold at most ``max_bytes`` bytes (default `linalg_lowrank.config.AUDIT_MAX_BYTES`,
  16 GiB, or the memory available when the file is opened if that is less; ``--max-bytes`` on
  the command line). The cap bounds decompression too: a compressed
  member is decompressed in 1 MiB steps and never beyond its declared size, which the cap bounds,
  so a zip bomb costs at most ``max_bytes`` of memory.
- Zip archives: members must be stored or deflated (other methods are refused), not encrypted,
  inside the file and not overlapping one another (overlapping members are the trick of the
  largest zip bombs). The CRC-32 of every member read is checked, stored members included.
- safetensors: the 8-byte header length is checked against the file size and against
  `linalg_lowrank.config.AUDIT_SAFETENSORS_MAX_HEADER` (100 MB, the reference implementation's
  limit) before the header is read; the JSON nesting depth is bounded before it is parsed
  (`linalg_lowrank.config.AUDIT_JSON_MAX_DEPTH`) and integers longer than
  `linalg_lowrank.config.AUDIT_JSON_MAX_INT_DIGITS` digits are refused.
- Tensor names are always ``str``: names that are bytes are decoded as UTF-8 with invalid bytes
  replaced, and lone surrogates (which JSON escapes and pickles can carry) are written as
  ``\\udxxx``. They may still hold control characters: whoever prints them escapes them.

A path may also be an fsspec URL (``s3://...``; ``file://`` URLs are local paths): the remote
file is read by byte ranges (`_UrlFile`) and parsed with the same checks; only the regular-file
and shrinking-file checks are the backend's.

Every problem with a file is a `CheckpointError` (a ValueError) naming the file, in one line.
"""

import contextlib
import json
import math
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _validate, config

__all__ = ["CheckpointError", "TensorItem", "read_tensors"]

_NUMPY_EXTENSIONS = (".npz", ".npy", ".safetensors")
#: Extensions of PyTorch checkpoints (torch.save's zip format).
_TORCH_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")
_EXTENSIONS = _NUMPY_EXTENSIONS + _TORCH_EXTENSIONS
_EXPECTED = ".npz, .npy, .safetensors, or a PyTorch .pt/.pth/.bin/.ckpt"
#: Bytes copied per step when a compressed member is decompressed (bounds the scratch memory).
_STEP = 1 << 20

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
    """The data (read-only), None when skipped."""
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
    # (offset, nbytes) of the bytes the header entry points at (the tensor's, or its zip member's),
    # None when there are none: with the name, shape and dtype it identifies the tensor in the file.
    span: tuple | None = None


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


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


def _is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _clean_name(name):
    """A tensor name as a printable-encodable str (bytes decoded, lone surrogates spelled out)."""
    if isinstance(name, bytes | bytearray):
        name = bytes(name).decode("utf-8", errors="replace")
    return str(name).encode("utf-8", errors="backslashreplace").decode("utf-8")


def _check_cap(path, what, nbytes, max_bytes):
    if nbytes > max_bytes:
        raise CheckpointError(
            path, f"{what} holds {nbytes} bytes, more than the cap of {max_bytes} bytes (raise it with --max-bytes)"
        )


def _bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _readonly(arr):
    arr.flags.writeable = False
    return arr


def _read_npy_header(fp):
    """Shape, Fortran order and dtype of the .npy stream at its start; leaves ``fp`` at the data."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)  # 3.0 differs only in the header's encoding


def _npy_header(path, fp, what):
    """The .npy header at ``fp`` with a shape of non-negative ints: (shape, fortran_order, dtype)."""
    try:
        shape, fortran_order, dtype = _read_npy_header(fp)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError):
        raise  # the zip stream's own errors, reported by the caller
    except Exception as exc:  # numpy parses the header text (tokenize, ast): any failure is a bad header
        raise CheckpointError(path, f"{what} is not a valid .npy ({type(exc).__name__}: {exc})") from None
    if not all(_is_count(d) for d in shape):
        raise CheckpointError(path, f"{what} has shape {shape}: dimensions must be non-negative integers")
    return tuple(shape), fortran_order, dtype


def _from_bytes(buf, dtype, shape, order="C"):
    """The bytes of ``buf`` (exactly the tensor's) as a read-only array of ``dtype`` and ``shape``."""
    return _readonly(buf.view(dtype).reshape(shape, order=order))


# ----------------------------------------------------------------------------------------------
# Regular files, read by offset
# ----------------------------------------------------------------------------------------------


def _regular_file_stat(path):
    """``os.stat`` of ``path`` if it is a regular file (following links), else CheckpointError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except OSError as exc:
        raise CheckpointError(path, exc.strerror or str(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(path, f"is a directory, expected a {_EXPECTED} file")
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a character device"
            if stat.S_ISCHR(st.st_mode)
            else "a block device"
            if stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise CheckpointError(path, f"is {kind}; only regular files are read")
    return st


class _File:
    """A regular file opened for reading by offset.

    Nothing is memory-mapped: every read goes through ``os.preadv`` into a buffer whose size was
    checked against the file's current size, so a file that shrinks gives a short read (an
    error), never a SIGBUS. ``fp`` is a buffered file object over the same descriptor, for
    parsers that want one (zipfile, numpy's header reader).
    """

    def __init__(self, path):
        self.path = path
        _regular_file_stat(path)  # a FIFO is refused before it could block in open()
        # O_NONBLOCK: should the path be swapped for a FIFO after the check, open() still returns.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise CheckpointError(path, exc.strerror or str(exc)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CheckpointError(path, "is not a regular file (changed while being opened)")
            self.fp = open(fd, "rb", closefd=True)  # closed by close()
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.size = st.st_size

    def close(self):
        self.fp.close()

    def current_size(self):
        return os.fstat(self.fd).st_size

    def read(self, offset, nbytes, what):
        """``nbytes`` bytes at ``offset`` as a new uint8 array; CheckpointError if they are not all there."""
        size = self.current_size()
        if offset + nbytes > size:
            if size < self.size:
                raise CheckpointError(
                    self.path,
                    f"{what}: file shrank while being read (now {size} bytes, the data ends at byte {offset + nbytes})",
                )
            raise CheckpointError(self.path, f"{what} runs past the end of the file ({size} bytes)")
        buf = _allocate(self.path, nbytes, what)
        view = memoryview(buf)
        done = 0
        while done < nbytes:  # each pass reads at least one byte, or stops
            n = _pread_into(self.fd, view[done : min(nbytes, done + (1 << 30))], offset + done)
            if n <= 0:
                raise CheckpointError(self.path, f"{what}: file shrank while being read (got {done} of {nbytes} bytes)")
            done += n
        return buf


def is_url(path):
    """Whether ``path`` (a str) is a URL (``s3://...``, ``file://...``) rather than a local path."""
    return "://" in path


def _url_filesystem(url):
    """``(fs, path)`` of an fsspec URL, or ``(None, local path)`` for a ``file://`` URL."""
    try:
        import fsspec
    except ImportError:
        raise CheckpointError(
            url, "a URL: reading URLs needs fsspec and its backend (pip install fsspec s3fs), which are not installed"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its backend is missing
        raise CheckpointError(url, f"cannot read this URL ({type(exc).__name__}: {exc})") from None
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        return None, path  # a local file: read by the local reader, with its checks (no FIFO, ...)
    return fs, path


class _UrlFile:
    """A remote file named by an fsspec URL, read by byte ranges (``fs.cat_file``).

    The same interface as `_File`: ``path``, ``size``, ``fp`` (a file object for zipfile and
    numpy's header parser), ``read``, ``current_size``, ``close``. Nothing is cached beyond the
    backend's own read-ahead; a range that comes back short is an error.
    """

    def __init__(self, url, fs, path):
        self.path, self.fs, self.remote = url, fs, path
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise CheckpointError(url, "no such file") from None
        except Exception as exc:  # the backend's own errors (network, permissions)
            raise CheckpointError(url, f"cannot open ({type(exc).__name__}: {exc})") from None
        if info.get("type") != "file" or not _is_count(info.get("size")):
            raise CheckpointError(url, f"is not a file ({info.get('type')}), expected a {_EXPECTED} file")
        self.size = info["size"]
        self.fp = fs.open(path, "rb")

    def close(self):
        self.fp.close()

    def current_size(self):
        return self.size

    def read(self, offset, nbytes, what):
        if offset + nbytes > self.size:
            raise CheckpointError(self.path, f"{what} runs past the end of the file ({self.size} bytes)")
        try:
            data = self.fs.cat_file(self.remote, start=offset, end=offset + nbytes)
        except MemoryError:
            raise CheckpointError(self.path, f"{what}: not enough memory for {nbytes} bytes") from None
        except Exception as exc:
            raise CheckpointError(self.path, f"{what}: read failed ({type(exc).__name__}: {exc})") from None
        if len(data) != nbytes:
            raise CheckpointError(
                self.path, f"{what}: file shrank while being read (got {len(data)} of {nbytes} bytes)"
            )
        return np.frombuffer(data, dtype=np.uint8)


def _pread_into(fd, view, offset):
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)  # pragma: no cover - platforms without preadv
    view[: len(data)] = data
    return len(data)


def _allocate(path, nbytes, what):
    try:
        return np.empty(nbytes, dtype=np.uint8)
    except MemoryError:
        raise CheckpointError(path, f"{what}: not enough memory for {nbytes} bytes (lower --max-bytes?)") from None


# ----------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------


def _check_path(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"`path` must be a str or os.PathLike, got {type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not is_url(path):
        _regular_file_stat(path)
    return path, os.path.splitext(path)[1].lower()


def _open_file(path):
    """`_File` of a local path or a ``file://`` URL, `_UrlFile` of any other fsspec URL."""
    if not is_url(path):
        return _File(path)
    fs, remote = _url_filesystem(path)
    if fs is None:
        _regular_file_stat(remote)
        return _File(remote)
    return _UrlFile(path, fs, remote)


def _available_memory():
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as fp:
            for line in fp:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_max_bytes(max_bytes):
    """The cap: ``max_bytes`` if given, else the smaller of AUDIT_MAX_BYTES and the available memory.

    Tensors are read into memory, so without the second bound a tensor larger than the memory
    would be killed by the kernel's out-of-memory handler instead of being refused.
    """
    if max_bytes is None:
        available = _available_memory()
        cap = int(config.AUDIT_MAX_BYTES)
        return cap if available is None else max(1, min(cap, available))
    return _validate.positive_int("max_bytes", max_bytes)


_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text):
    """A byte count from the command line: ``1000000``, ``512M``, ``16G`` (binary K, M, G, T; ``B``/``iB`` optional).

    Raises ValueError with the text it could not read.
    """
    spec = str(text).strip().upper().removesuffix("B").removesuffix("I")
    digits, suffix = (spec[:-1], spec[-1]) if spec[-1:] in ("K", "M", "G", "T") else (spec, "")
    if not digits.isdigit() or len(digits) > 20 or int(digits) < 1:
        raise ValueError(f"expected a positive byte count such as 1000000, 512M or 16G, got {text!r}")
    return int(digits) * _SIZE_SUFFIXES[suffix]


def _open_zip(path, fp, what="zip"):
    try:
        return zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, ValueError, EOFError, struct.error, NotImplementedError, OverflowError) as exc:
        raise CheckpointError(path, f"not a valid {what} file ({exc})") from None


def _torch_prefix(path, zf):
    """The ``<prefix>`` of a PyTorch zip checkpoint's ``<prefix>/data.pkl``, or None."""
    found = [n[: -len("/data.pkl")] for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(found) > 1:
        raise CheckpointError(path, f"several data.pkl records ({', '.join(sorted(found))}/data.pkl)")
    return found[0] if found else None


@contextlib.contextmanager
def _open_checkpoint(path, max_bytes=None):
    """Parse the headers of a checkpoint and yield its `_Entry` list (data is read on ``load``)."""
    max_bytes = _check_max_bytes(max_bytes)
    path, ext = _check_path(path)
    file = _open_file(path)
    try:
        if ext == ".npy":
            yield _npy_entries(file, max_bytes)
        elif ext == ".safetensors":
            yield _safetensors_entries(file, max_bytes)
        else:
            # .npz goes to zipfile whatever its first bytes (an empty archive starts with the end record)
            is_zip = ext == ".npz" or (file.size >= 4 and bytes(file.read(0, 4, "magic number")) == b"PK\x03\x04")
            if not is_zip:
                if ext in _TORCH_EXTENSIONS:
                    raise CheckpointError(
                        path,
                        "not a zip-format PyTorch checkpoint (the legacy format of torch < 1.6 is not read; "
                        "re-save it with a newer torch.save)",
                    )
                raise CheckpointError(path, f"unknown extension {ext or '(none)'!r}: expected {_EXPECTED}")
            with _open_zip(path, file.fp, "PyTorch (zip)" if ext in _TORCH_EXTENSIONS else ".npz (zip)") as zf:
                members = _ZipMembers(file, zf, max_bytes)
                prefix = _torch_prefix(path, zf)
                if prefix is not None:
                    from ._torch_reader import torch_entries

                    yield torch_entries(members, prefix)
                elif ext == ".npz":
                    yield _npz_entries(members)
                elif ext in _TORCH_EXTENSIONS:
                    raise CheckpointError(path, "a zip file without a data.pkl record: not a PyTorch checkpoint")
                else:
                    raise CheckpointError(path, f"unknown extension {ext!r}: expected {_EXPECTED}")
    except OSError as exc:
        raise CheckpointError(path, exc.strerror or str(exc)) from exc
    finally:
        file.close()


# ----------------------------------------------------------------------------------------------
# .npy
# ----------------------------------------------------------------------------------------------


def _npy_entries(file, max_bytes):
    path = file.path
    file.fp.seek(0)
    shape, fortran_order, dtype = _npy_header(path, file.fp, "file")
    data_offset = file.fp.tell()
    name = _clean_name(os.path.splitext(os.path.basename(path))[0])
    reason = _skip_reason(shape, dtype)
    need = 0 if dtype.hasobject else _nbytes(shape, dtype.itemsize)
    if data_offset + need > file.size:
        raise CheckpointError(
            path, f"truncated: the header promises {need} bytes of data, the file holds {file.size - data_offset}"
        )
    load = None
    if reason is None:
        _check_cap(path, f"tensor {name!r}", need, max_bytes)
        order = "F" if fortran_order else "C"

        def load():
            return _from_bytes(file.read(data_offset, need, f"tensor {name!r}"), dtype, shape, order)

    return [_Entry(name, shape, str(dtype), reason, load, (data_offset, need))]


# ----------------------------------------------------------------------------------------------
# Zip archives (.npz and PyTorch)
# ----------------------------------------------------------------------------------------------


class _ZipMembers:
    """The checked members of a zip archive, read whole (CRC-checked) and bounded by ``max_bytes``.

    At construction every member is checked: not encrypted, stored or deflated, its local header
    and data inside the file, no two members overlapping.
    """

    def __init__(self, file, zf, max_bytes):
        self.file, self.zf, self.max_bytes = file, zf, max_bytes
        self.path = path = file.path
        self.data_start = {}
        infos = [info for info in zf.infolist() if not info.is_dir()]
        spans = []
        for info in infos:
            member = info.filename
            if info.flag_bits & 0x1:
                raise CheckpointError(path, f"member {member!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise CheckpointError(
                    path, f"member {member!r} uses compression method {info.compress_type}: only stored or deflated"
                )
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise CheckpointError(
                    path, f"member {member!r} is stored but its sizes differ ({info.compress_size}, {info.file_size})"
                )
            start = self._local_data_start(info)
            end = start + info.compress_size
            if end > file.size:
                raise CheckpointError(path, f"member {member!r} runs past the end of the file (truncated?)")
            spans.append((info.header_offset, end, member))
            self.data_start[member] = (info, start)
        spans.sort()
        for (_, end, first), (begin, _, second) in zip(spans, spans[1:], strict=False):
            if begin < end:
                raise CheckpointError(path, f"members {first!r} and {second!r} overlap (a zip bomb?)")

    def _local_data_start(self, info):
        if info.header_offset + 30 > self.file.size:
            raise CheckpointError(self.path, f"member {info.filename!r}: local file header past the end of the file")
        local = bytes(self.file.read(info.header_offset, 30, f"member {info.filename!r}"))
        if local[:4] != b"PK\x03\x04":
            raise CheckpointError(self.path, f"member {info.filename!r}: bad local file header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        return info.header_offset + 30 + name_len + extra_len

    def info(self, member):
        return self.data_start[member][0]

    def __contains__(self, member):
        return member in self.data_start

    def open_stream(self, member):
        """A zipfile stream of the member (for small headers); errors become CheckpointError by the caller."""
        return self.zf.open(self.data_start[member][0])

    def read(self, member, max_bytes=None):
        """The whole member as a uint8 array, its CRC-32 checked; at most ``max_bytes`` (default the cap)."""
        info, start = self.data_start[member]
        what = f"member {member!r}"
        _check_cap(self.path, what, info.file_size, self.max_bytes if max_bytes is None else max_bytes)
        if info.compress_type == zipfile.ZIP_STORED:
            buf = self.file.read(start, info.file_size, what)
        else:
            buf = self._inflate(info, what)
        if zlib.crc32(buf) != info.CRC:
            raise CheckpointError(self.path, f"{what} is corrupt (CRC-32 mismatch)")
        return buf

    def _inflate(self, info, what):
        size = info.file_size
        buf = _allocate(self.path, size, what)
        done = 0
        try:
            with self.zf.open(info) as fp:
                while done < size:  # ZipExtFile never returns more than the declared size
                    chunk = fp.read(min(_STEP, size - done))
                    if not chunk:
                        break
                    buf[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                    done += len(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            raise CheckpointError(self.path, f"{what} is corrupt ({exc})") from None
        if done < size:
            raise CheckpointError(self.path, f"{what} is corrupt (decompressed to {done} of {size} bytes)")
        return buf


def _npz_entries(members):
    path = members.path
    entries = []
    for member in members.data_start:
        info = members.info(member)
        if not member.endswith(".npy"):
            entries.append(_Entry(_clean_name(member), (), "unknown", "not a .npy member", None))
            continue
        what = f"member {member!r}"
        try:
            with members.open_stream(member) as fp:
                shape, fortran_order, dtype = _npy_header(path, fp, what)
                header_len = fp.tell()
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise CheckpointError(path, f"{what} is not a valid .npy ({exc})") from None
        name = _clean_name(member[:-4])
        reason = _skip_reason(shape, dtype)
        need = 0 if dtype.hasobject else _nbytes(shape, dtype.itemsize)
        if header_len + need > info.file_size:
            raise CheckpointError(
                path,
                f"{what} is truncated: its header promises {need} bytes of data, "
                f"it holds {info.file_size - header_len}",
            )
        load = None
        if reason is None:
            _check_cap(path, what, info.file_size, members.max_bytes)
            load = _npz_loader(members, member, header_len, need, dtype, shape, "F" if fortran_order else "C")
        entries.append(
            _Entry(name, shape, str(dtype), reason, load, (members.data_start[member][1], info.compress_size))
        )
    return entries


def _npz_loader(members, member, header_len, need, dtype, shape, order):
    def load():
        buf = members.read(member)
        return _from_bytes(buf[header_len : header_len + need], dtype, shape, order)

    return load


# ----------------------------------------------------------------------------------------------
# .safetensors
# ----------------------------------------------------------------------------------------------


def _json_depth(raw):
    """Deepest nesting of ``[`` and ``{`` in a JSON text, outside strings (linear, no recursion).

    Works in 1 MiB steps, so its scratch memory does not grow with the text.
    """
    # Drop escaped backslashes first, then escaped quotes: every remaining '"' opens or closes a
    # string, so the parity of the quotes before a byte says whether it is inside one.
    text = np.frombuffer(raw.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    quote, opening, closing = ord('"'), (ord("["), ord("{")), (ord("]"), ord("}"))
    inside, depth, deepest = 0, 0, 0
    for i in range(0, text.size, _STEP):
        chunk = text[i : i + _STEP]
        parity = (np.cumsum(chunk == quote, dtype=np.int64) + inside) & 1
        inside = int(parity[-1])
        outside = parity == 0
        steps = ((chunk == opening[0]) | (chunk == opening[1])) & outside
        steps = steps.astype(np.int64) - (((chunk == closing[0]) | (chunk == closing[1])) & outside)
        run = depth + np.cumsum(steps)
        deepest = max(deepest, int(run.max()))
        depth = int(run[-1])
    return deepest


def _parse_json_header(path, raw):
    max_depth = config.AUDIT_JSON_MAX_DEPTH
    max_digits = config.AUDIT_JSON_MAX_INT_DIGITS
    depth = _json_depth(raw)
    if depth > max_depth:
        raise CheckpointError(path, f"bad JSON header: nested {depth} deep, more than {max_depth}")

    def parse_int(text):
        if len(text.lstrip("-")) > max_digits:
            raise CheckpointError(path, f"bad JSON header: an integer of {len(text)} digits (at most {max_digits})")
        return int(text)

    try:
        return json.loads(raw.decode("utf-8"), parse_int=parse_int)
    except CheckpointError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError) as exc:
        raise CheckpointError(path, f"bad JSON header ({type(exc).__name__}: {exc})") from None


def _safetensors_entries(file, max_bytes):
    path, size = file.path, file.size
    if size < 8:
        raise CheckpointError(path, f"truncated: {size} bytes, too short for the 8-byte header length")
    header_len = int.from_bytes(bytes(file.read(0, 8, "header length")), "little")
    if header_len > size - 8:
        raise CheckpointError(
            path, f"bad header length {header_len}: only {size - 8} bytes follow it (truncated or not safetensors)"
        )
    if header_len > config.AUDIT_SAFETENSORS_MAX_HEADER:
        raise CheckpointError(
            path, f"bad header length {header_len}: larger than {config.AUDIT_SAFETENSORS_MAX_HEADER}"
        )
    header = _parse_json_header(path, bytes(file.read(8, header_len, "JSON header")))
    if not isinstance(header, dict):
        raise CheckpointError(path, f"bad JSON header: expected an object, got {type(header).__name__}")
    data_start = 8 + header_len
    data_size = size - data_start
    entries = []
    for raw_name, spec in header.items():
        if raw_name == "__metadata__":
            continue
        name = _clean_name(raw_name)
        code, shape, begin, end = _parse_safetensors_spec(path, name, spec)
        if end > data_size:
            raise CheckpointError(
                path,
                f"tensor {name!r}: data_offsets [{begin}, {end}] run past the end of the data "
                f"({data_size} bytes; truncated file?)",
            )
        known = _ST_DTYPES.get(code)
        if known is None:
            entries.append(
                (begin, _Entry(name, shape, _clean_name(code), f"unsupported dtype {_clean_name(code)}", None))
            )
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
            _check_cap(path, f"tensor {name!r}", need, max_bytes)
            load = _safetensors_loader(file, name, np.dtype(np_dtype), data_start + begin, need, shape, code == "BF16")
        entries.append((begin, _Entry(name, shape, dtype_name, reason, load, (data_start + begin, need))))
    entries.sort(key=lambda item: item[0])  # file order: reads go forward through the file
    return [entry for _, entry in entries]


def _safetensors_loader(file, name, dtype, offset, need, shape, bf16):
    def load():
        arr = _from_bytes(file.read(offset, need, f"tensor {name!r}"), dtype, shape)
        return _readonly(_bf16_to_f32(arr)) if bf16 else arr

    return load


def _parse_safetensors_spec(path, name, spec):
    def bad(what):
        return CheckpointError(path, f"bad JSON header: tensor {name!r} {what}")

    if not isinstance(spec, dict):
        raise bad(f"must map to an object, got {type(spec).__name__}")
    missing = {"dtype", "shape", "data_offsets"} - spec.keys()
    if missing:
        raise bad(f"lacks {', '.join(sorted(missing))}")
    code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(code, str):
        raise bad(f"has dtype {code!r}, expected a string")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"has shape {shape!r}, expected a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise bad(f"has data_offsets {offsets!r}, expected [begin, end]")
    begin, end = offsets
    if begin > end:
        raise bad(f"has data_offsets [{begin}, {end}] with begin > end")
    return code, tuple(shape), begin, end


# ----------------------------------------------------------------------------------------------
# Public reader
# ----------------------------------------------------------------------------------------------


def read_tensors(path, *, max_bytes=None):
    """Tensors of a checkpoint one at a time, without reading the whole file.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy``, ``.npz`` or ``.safetensors`` file, or a PyTorch checkpoint (``.pt``,
        ``.pth``, ``.bin``, ``.ckpt`` in the zip format of ``torch.save``; read without torch and
        without running pickle code).
    max_bytes : int, optional
        Largest tensor, or zip member, read into memory (default
        `linalg_lowrank.config.AUDIT_MAX_BYTES`, 16 GiB, or the available memory if less); a
        larger one is refused with a `CheckpointError` naming the cap. It also bounds decompression (zip bombs).

    Yields
    ------
    item : TensorItem
        ``(name, array, reason)``. Tensors the audit computes with (floating, at least 2-D,
        non-empty) come with ``array`` and ``reason=None``; every other one with
        ``array=None`` and the reason it is skipped. Arrays are read-only and read one at a
        time by offset (never memory-mapped, so a file that shrinks meanwhile is an error, not
        a crash); compressed ``.npz`` members are decompressed alone; bfloat16 tensors come as
        float32 (numpy has no bfloat16). Arrays keep their stored dtype otherwise (float16
        included). A ``.npy`` file yields one tensor named after the file; nested dicts of a
        PyTorch checkpoint give dotted names (``model.layer.weight``).

    Raises
    ------
    CheckpointError
        If the file is missing, not a regular file, has an unknown extension, or is truncated or
        malformed (bad header length, bad JSON, offsets past the end of the file, corrupt zip,
        CRC mismatch, a tensor above ``max_bytes``, a pickle global that is not a tensor
        rebuild function, ...). Header problems are raised before the first item; corrupt data
        when it is read.
    TypeError
        If ``path`` is not a path or ``max_bytes`` not an integer.
    ValueError
        If ``max_bytes`` is below 1.

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
    with _open_checkpoint(path, max_bytes) as entries:
        for entry in entries:
            yield TensorItem(entry.name, None if entry.load is None else entry.load(), entry.reason)
