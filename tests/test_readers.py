"""Checkpoint readers against hostile files, and PyTorch checkpoints read without torch.

Every hostile file is written here, in tmp_path, by the format's spec; the reference for a good
file's tensors is the numpy array the test wrote (or, when torch is importable, torch itself).
Cases that could hang or crash the process (FIFO, SIGBUS) run in a subprocess with a timeout.
"""

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import types
import zipfile
import zlib

import numpy as np
import pytest

from linalg_lowrank import audit
from linalg_lowrank._readers import CheckpointError, parse_size, read_tensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _items(path, **kwargs):
    return {
        name: (None if arr is None else np.array(arr), reason) for name, arr, reason in read_tensors(path, **kwargs)
    }


def _assert_exit_2(path, problem, capsys, *extra):
    """The CLI's promise: exit 2, nothing on stdout, one line on stderr naming the file and the problem."""
    status = audit.main([str(path), "--no-progress", *extra])
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0] and problem in lines[0], lines[0]
    assert "Traceback" not in err


#: Address-space cap of the subprocesses that read the files which, unfixed, exhausted memory
#: (/dev/urandom, zip bombs): a regression then fails with MemoryError instead of swapping the machine.
_SUBPROCESS_MEMORY = 3 << 30


def _run(code, timeout=120):
    """Run ``code`` in a fresh interpreter (memory capped) from the repository root.

    A hang, a signal or running out of the capped memory fails the test instead of the test run.
    """
    preamble = (
        f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({_SUBPROCESS_MEMORY}, {_SUBPROCESS_MEMORY}))\n"
    )
    try:
        return subprocess.run(
            [sys.executable, "-c", preamble + textwrap.dedent(code)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the reader hung for {timeout} s")


def _cli_in_subprocess(path, *extra, timeout=120):
    """``audit.main`` on ``path`` in a capped subprocess: (exit status, stdout, stderr)."""
    res = _run(
        f"""
        import sys
        from linalg_lowrank import audit
        sys.exit(audit.main([{str(path)!r}, "--no-progress", *{list(extra)!r}]))
        """,
        timeout=timeout,
    )
    return res.returncode, res.stdout, res.stderr


def _assert_exit_2_in_subprocess(path, problem, *extra):
    status, out, err = _cli_in_subprocess(path, *extra)
    assert status == 2, (status, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0] and problem in lines[0], lines[0]


def _npy_bytes(header_dict, data=b""):
    """A .npy file (format 1.0) with this header dict, written by the spec, not by numpy."""
    text = repr(header_dict).encode("latin1")
    pad = -(10 + len(text) + 1) % 64
    header = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def _safetensors_bytes(header_text, data=b""):
    raw = header_text.encode() if isinstance(header_text, str) else header_text
    return len(raw).to_bytes(8, "little") + raw + data


# --------------------------------------------------------------------------------------------
# Only regular files
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "w.npy"
    os.mkfifo(fifo)
    _assert_exit_2_in_subprocess(fifo, "FIFO")  # before the fix: blocked in open() for ever


@pytest.mark.skipif(not os.path.exists("/dev/urandom"), reason="no /dev/urandom")
def test_character_device_is_refused(tmp_path):
    link = tmp_path / "random.npz"
    link.symlink_to("/dev/urandom")
    _assert_exit_2_in_subprocess(link, "character device")  # before the fix: read until memory ran out


def test_directory_is_refused(tmp_path, capsys):
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="directory"):
        list(read_tensors(folder))
    _assert_exit_2(folder, "directory", capsys)


# --------------------------------------------------------------------------------------------
# safetensors headers
# --------------------------------------------------------------------------------------------


def test_deeply_nested_json_header_is_refused(tmp_path, capsys):
    path = tmp_path / "deep.safetensors"
    depth = 200_000
    path.write_bytes(_safetensors_bytes('{"w": ' + "[" * depth + "]" * depth + "}"))
    with pytest.raises(CheckpointError, match="nested 200001 deep"):
        list(read_tensors(path))
    _assert_exit_2(path, "nested", capsys)


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    path = tmp_path / "names.safetensors"
    W = np.arange(6, dtype="<f4").reshape(2, 3)
    name = '[[[[{{{{ \\" \\\\' * 20  # brackets, an escaped quote and an escaped backslash, inside a name
    header = json.dumps({json.loads(f'"{name}"'): {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}})
    path.write_bytes(_safetensors_bytes(header, W.tobytes()))
    ((got_name, (arr, reason)),) = _items(path).items()
    assert got_name == json.loads(f'"{name}"') and reason is None
    np.testing.assert_array_equal(arr, W)


def test_huge_integer_in_data_offsets_is_refused(tmp_path, capsys):
    path = tmp_path / "bigint.safetensors"
    path.write_bytes(
        _safetensors_bytes('{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1' + "0" * 4999 + "]}}")
    )
    with pytest.raises(CheckpointError, match="integer of 5000 digits"):
        list(read_tensors(path))
    _assert_exit_2(path, "digits", capsys)


def test_names_are_str_even_with_lone_surrogates(tmp_path):
    path = tmp_path / "sur.safetensors"
    header = '{"a\\ud800b": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}'
    path.write_bytes(_safetensors_bytes(header, bytes(4)))
    ((name, _),) = _items(path).items()
    assert isinstance(name, str) and name == "a\\ud800b"
    name.encode("utf-8")  # printable to any UTF-8 stream


# --------------------------------------------------------------------------------------------
# Shapes and sizes against the file
# --------------------------------------------------------------------------------------------


def test_npy_negative_shape_is_refused(tmp_path, capsys):
    path = tmp_path / "neg.npy"
    path.write_bytes(_npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (-3, 4)}, bytes(96)))
    with pytest.raises(CheckpointError, match="non-negative"):
        list(read_tensors(path))
    _assert_exit_2(path, "non-negative", capsys)


def test_npy_shape_larger_than_the_file_is_refused(tmp_path, capsys):
    path = tmp_path / "huge.npy"
    path.write_bytes(_npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (10**12, 10**12)}, bytes(64)))
    with pytest.raises(CheckpointError, match="truncated"):
        list(read_tensors(path))
    _assert_exit_2(path, "truncated", capsys)


@pytest.mark.parametrize(("shape", "problem"), [((-3, 4), "non-negative"), ((1000, 1000), "truncated")])
def test_stored_npz_member_with_bad_shape_is_refused(tmp_path, capsys, shape, problem):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("w.npy", _npy_bytes({"descr": "<f8", "fortran_order": False, "shape": shape}, bytes(96)))
    with pytest.raises(CheckpointError, match=problem):
        list(read_tensors(path))
    _assert_exit_2(path, problem, capsys)


def test_fortran_order_and_big_endian_npy_are_read_right(tmp_path):
    W = np.arange(12.0).reshape(3, 4)
    path = tmp_path / "f.npy"
    path.write_bytes(_npy_bytes({"descr": ">f8", "fortran_order": True, "shape": (3, 4)}, W.T.astype(">f8").tobytes()))
    (arr, reason) = _items(path)["f"]
    assert reason is None
    np.testing.assert_array_equal(arr, W)


# --------------------------------------------------------------------------------------------
# Zip archives
# --------------------------------------------------------------------------------------------


def _stored_npz(path, **arrays):
    np.savez(path, **arrays)
    return bytearray(path.read_bytes())


def _patch_both_headers(data, member, offset_local, offset_central, value, fmt):
    """Write ``value`` into the local header and the central directory entry of ``member``."""
    name = member.encode()
    local = data.find(b"PK\x03\x04")  # the only member's local header
    struct.pack_into(fmt, data, local + offset_local, value)
    central = data.find(b"PK\x01\x02")
    assert data[central + 46 : central + 46 + len(name)] == name
    struct.pack_into(fmt, data, central + offset_central, value)


def test_encrypted_member_is_refused(tmp_path, capsys):
    path = tmp_path / "enc.npz"
    data = _stored_npz(path, w=np.eye(4))
    local_flags = struct.unpack_from("<H", data, 6)[0]
    _patch_both_headers(data, "w.npy", 6, 8, local_flags | 0x1, "<H")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="encrypted"):
        list(read_tensors(path))
    _assert_exit_2(path, "encrypted", capsys)


def test_unknown_compression_method_is_refused(tmp_path, capsys):
    path = tmp_path / "method.npz"
    data = _stored_npz(path, w=np.eye(4))
    _patch_both_headers(data, "w.npy", 8, 10, 99, "<H")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="compression method 99"):
        list(read_tensors(path))
    _assert_exit_2(path, "compression method 99", capsys)


def test_corrupt_deflate_stream_is_refused(tmp_path, capsys):
    path = tmp_path / "corrupt.npz"
    np.savez_compressed(path, w=np.random.default_rng(0).standard_normal((64, 64)))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("w.npy")
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    data[start : start + 8] = b"\xff" * 8  # the very start of the deflate stream: the npy header's block
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="w.npy"):
        list(read_tensors(path))
    _assert_exit_2(path, "w.npy", capsys)


def test_random_corruption_of_a_deflated_member_is_an_error_or_harmless(tmp_path):
    # Seeded fuzz of the deflate stream: each result is a CheckpointError or the original matrix.
    # (Before the fix, a corrupted npy header surfaced as tokenize.TokenError, exit 1.)
    path = tmp_path / "fuzz.npz"
    W = np.random.default_rng(0).standard_normal((64, 64))
    np.savez_compressed(path, w=W)
    orig = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("w.npy")
    name_len, extra_len = struct.unpack_from("<HH", orig, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    rng = np.random.default_rng(0)
    errors = 0
    for _ in range(300):
        data = bytearray(orig)
        pos = start + int(rng.integers(min(info.compress_size, 400)))  # near the start: the npy header
        n = int(rng.choice([1, 4, 16]))
        data[pos : pos + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        try:
            got = _items(path)
        except CheckpointError:
            errors += 1
            continue
        np.testing.assert_array_equal(got["w"][0], W)
    assert errors > 250  # the corruptions were real


def test_crc_of_stored_members_is_checked(tmp_path, capsys):
    path = tmp_path / "crc.npz"
    W = np.random.default_rng(1).standard_normal((256, 256))  # larger than zipfile's read-ahead
    data = _stored_npz(path, w=W)
    at = bytes(data).find(W.tobytes()[-64:])
    assert at > 0
    data[at + 3] ^= 0x10  # one flipped bit near the end of the matrix, nothing else changed
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC"):
        list(read_tensors(path))
    _assert_exit_2(path, "CRC", capsys)


def _deflated_zeros_zip(path, member, npy_header, nbytes, declared=None):
    """A zip whose one deflated member is ``npy_header`` then ``nbytes`` zero bytes (a zip bomb).

    ``declared`` lies about the uncompressed size (and the CRC is then that of the lie's prefix).
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = [comp.compress(npy_header)]
    crc = zlib.crc32(npy_header)
    left = nbytes
    while left:
        piece = chunk[: min(left, len(chunk))]
        parts.append(comp.compress(piece))
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    parts.append(comp.flush())
    stream = b"".join(parts)
    size = len(npy_header) + nbytes if declared is None else declared
    name = member.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), size, len(name), 0)
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(stream), size, len(name), 0, 0, 0, 0, 0, 0
    )
    body = local + name + stream
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), len(body), 0)
    path.write_bytes(body + central + name + end)
    return len(stream)


def test_zip_bomb_is_refused_at_the_cap(tmp_path):
    path = tmp_path / "bomb.npz"
    n = 1 << 30  # 1 GiB of float64 zeros, about 1 MiB compressed
    header = _npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (1 << 14, 1 << 13)})
    compressed = _deflated_zeros_zip(path, "w.npy", header, n)
    assert compressed < 2 << 20
    res = _run(
        f"""
        from linalg_lowrank._readers import CheckpointError, read_tensors
        try:
            list(read_tensors({str(path)!r}, max_bytes=16 << 20))
        except CheckpointError as exc:
            print(exc)
        """
    )
    assert res.returncode == 0 and f"cap of {16 << 20} bytes" in res.stdout, (res.stdout, res.stderr)
    _assert_exit_2_in_subprocess(path, "--max-bytes", "--max-bytes", "16M")


def test_member_lying_about_its_size_decompresses_no_further(tmp_path):
    # The stream inflates to 256 MiB, the zip says 4 KiB: at most the declared size is produced.
    path = tmp_path / "liar.npz"
    header = _npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (16, 16)})
    _deflated_zeros_zip(path, "w.npy", header, 256 << 20, declared=len(header) + 16 * 16 * 8)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="w.npy"):
            list(read_tensors(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak


def test_overlapping_members_are_refused(tmp_path, capsys):
    path = tmp_path / "overlap.npz"
    data = _stored_npz(path, w=np.eye(4))
    central = bytes(data).find(b"PK\x01\x02")
    end = bytes(data).find(b"PK\x05\x06")
    entry = bytearray(data[central:end])  # listed twice: two members on the same bytes
    eocd = bytearray(data[end:])
    struct.pack_into("<HH", eocd, 8, 2, 2)
    struct.pack_into("<I", eocd, 12, 2 * len(entry))
    path.write_bytes(bytes(data[:end]) + bytes(entry) + bytes(eocd))
    with pytest.raises(CheckpointError, match="overlap"):
        list(read_tensors(path))
    _assert_exit_2(path, "overlap", capsys)


def test_empty_npz_is_read(tmp_path):
    np.savez(tmp_path / "empty.npz")  # only a zip end record: no local header signature at the start
    assert _items(tmp_path / "empty.npz") == {}


def test_default_cap_is_config_or_available_memory(tmp_path, monkeypatch):
    from linalg_lowrank import _readers, config

    np.save(tmp_path / "w.npy", np.ones((64, 64)))  # 32768 bytes of data
    monkeypatch.setattr(config, "AUDIT_MAX_BYTES", 1000)
    with pytest.raises(CheckpointError, match="cap of 1000 bytes"):
        list(read_tensors(tmp_path / "w.npy"))
    monkeypatch.setattr(config, "AUDIT_MAX_BYTES", 1 << 30)
    monkeypatch.setattr(_readers, "_available_memory", lambda: 2000)
    with pytest.raises(CheckpointError, match="cap of 2000 bytes"):
        list(read_tensors(tmp_path / "w.npy"))
    monkeypatch.setattr(_readers, "_available_memory", lambda: None)  # unknown: the config value
    assert _items(tmp_path / "w.npy")["w"][1] is None


def test_max_bytes_is_validated_and_parsed():
    with pytest.raises(ValueError, match="`max_bytes`"):
        list(read_tensors("anything.npy", max_bytes=0))
    with pytest.raises(TypeError, match="`max_bytes`"):
        list(read_tensors("anything.npy", max_bytes=1.5))
    assert parse_size("16G") == 16 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1000") == 1000
    for bad in ("", "-1", "0", "1.5G", "G", "12X"):
        with pytest.raises(ValueError, match="byte count"):
            parse_size(bad)


def test_max_bytes_applies_to_every_format(tmp_path):
    W = np.ones((64, 64))
    np.save(tmp_path / "w.npy", W)
    np.savez(tmp_path / "w.npz", w=W)
    (tmp_path / "w.safetensors").write_bytes(
        _safetensors_bytes('{"w": {"dtype": "F64", "shape": [64, 64], "data_offsets": [0, 32768]}}', W.tobytes())
    )
    for name in ("w.npy", "w.npz", "w.safetensors"):
        with pytest.raises(CheckpointError, match="cap of 1000 bytes"):
            list(read_tensors(tmp_path / name, max_bytes=1000))
        np.testing.assert_array_equal(_items(tmp_path / name, max_bytes=1 << 20)["w"][0], W)


# --------------------------------------------------------------------------------------------
# A file that shrinks while it is read: an error, never SIGBUS (run in a subprocess)
# --------------------------------------------------------------------------------------------


def test_file_truncated_while_being_read_is_an_error_not_sigbus(tmp_path):
    res = _run(
        f"""
        import os, numpy as np
        from linalg_lowrank._readers import CheckpointError, _open_checkpoint, read_tensors
        tmp = {str(tmp_path)!r}
        W = np.arange(1 << 18, dtype=np.float64).reshape(512, 512)  # 2 MiB: several pages
        header = b'{{"a": {{"dtype": "F64", "shape": [512, 512], "data_offsets": [0, 2097152]}},' \\
                 b' "b": {{"dtype": "F64", "shape": [512, 512], "data_offsets": [2097152, 4194304]}}}}'
        paths = {{}}
        paths["npy"] = os.path.join(tmp, "w.npy"); np.save(paths["npy"], W)
        paths["npz"] = os.path.join(tmp, "w.npz"); np.savez(paths["npz"], w=W)
        paths["st"] = os.path.join(tmp, "w.safetensors")
        with open(paths["st"], "wb") as fp:
            fp.write(len(header).to_bytes(8, "little") + header + W.tobytes() + W.tobytes())
        for kind, path in paths.items():
            # 1. headers parsed, then the file is cut before the tensor is read
            with _open_checkpoint(path) as entries:
                os.truncate(path, 4096)
                try:
                    entries[0].load()
                    raise SystemExit(kind + ": no error after truncation")
                except CheckpointError as exc:
                    assert "shrank" in str(exc), (kind, str(exc))
        # 2. an array already returned stays valid when the file is cut afterwards
        np.save(paths["npy"], W)
        (name, arr, reason), = list(read_tensors(paths["npy"]))
        os.truncate(paths["npy"], 0)
        assert float(arr.sum()) == float(W.sum())
        # 3. between two tensors of one file
        with open(paths["st"], "wb") as fp:
            fp.write(len(header).to_bytes(8, "little") + header + W.tobytes() + W.tobytes())
        gen = read_tensors(paths["st"])
        first = next(gen)
        os.truncate(paths["st"], 8 + len(header) + 2097152 + 100)
        try:
            next(gen)
            raise SystemExit("second tensor read from a truncated file")
        except CheckpointError as exc:
            assert "shrank" in str(exc), str(exc)
        assert float(first.array.sum()) == float(W.sum())
        print("OK")
        """
    )
    assert res.returncode == 0 and res.stdout.strip() == "OK", (res.returncode, res.stdout, res.stderr)


# --------------------------------------------------------------------------------------------
# PyTorch checkpoints, written by the format's spec (torch.save's zip layout, pickle protocol 2)
# --------------------------------------------------------------------------------------------


class _FakeStorage:
    """What torch pickles as a persistent id: ('storage', <storage class>, key, location, numel)."""

    def __init__(self, cls, key, data):
        self.cls, self.key, self.data = cls, key, data  # data: the raw bytes of archive/data/<key>


class _FakeTensor:
    def __init__(self, rebuild, storage, offset, size, stride):
        self.args = (rebuild, storage, offset, size, stride)

    def __reduce_ex__(self, protocol):
        rebuild, storage, offset, size, stride = self.args
        return rebuild, (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())


@pytest.fixture
def fake_torch(monkeypatch):
    """Module objects named like torch's, so pickle writes the globals torch.save writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    dtype_codes = {
        "FloatStorage": "<f4",
        "DoubleStorage": "<f8",
        "HalfStorage": "<f2",
        "BFloat16Storage": "<u2",
        "LongStorage": "<i8",
        "BoolStorage": "?",
    }
    for name in dtype_codes:
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)

    def _rebuild_tensor_v2(*args):  # pragma: no cover - only pickled, never called
        raise AssertionError("called")

    def _rebuild_parameter(*args):  # pragma: no cover
        raise AssertionError("called")

    for fn in (_rebuild_tensor_v2, _rebuild_parameter):
        fn.__module__, fn.__qualname__ = "torch._utils", fn.__name__
        setattr(utils, fn.__name__, fn)
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    def tensor(arr, *, transpose=False, key=None, storage=None, offset=0):
        """A fake tensor of ``arr`` (its own storage, or a view into ``storage``)."""
        cls_name = {"<f4": "FloatStorage", "<f8": "DoubleStorage", "<f2": "HalfStorage", "<i8": "LongStorage"}
        if storage is None:
            flat = np.ascontiguousarray(arr.T if transpose else arr)
            code = "BFloat16Storage" if arr.dtype == np.uint16 else cls_name[flat.dtype.newbyteorder("<").str]
            storage = _FakeStorage(getattr(torch, code), key, flat.astype(flat.dtype.newbyteorder("<")).tobytes())
        # element strides as Python ints; a transposed tensor walks its (n, m) storage by columns
        stride = (1, arr.shape[0]) if transpose else tuple(int(s) // arr.itemsize for s in arr.strides)
        return _FakeTensor(utils._rebuild_tensor_v2, storage, offset, arr.shape, stride)

    def save(path, obj, *, prefix="archive", compress_storages=False, protocol=2, byteorder="little"):
        """torch.save's layout: prefix/data.pkl, prefix/data/<key>, prefix/version, prefix/byteorder.

        With ``byteorder="big"`` the storages are written big-endian, as on a big-endian machine.
        """
        storages = {}

        class Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, _FakeStorage):
                    storages[o.key] = o
                    itemsize = np.dtype(dtype_codes[o.cls.__name__]).itemsize
                    return ("storage", o.cls, o.key, "cpu", len(o.data) // itemsize)
                return None

        buf = io.BytesIO()
        Pickler(buf, protocol=protocol).dump(obj)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{prefix}/data.pkl", buf.getvalue())
            zf.writestr(f"{prefix}/byteorder", byteorder)
            for key, st in storages.items():
                method = zipfile.ZIP_DEFLATED if compress_storages else zipfile.ZIP_STORED
                data = st.data
                if byteorder == "big":
                    data = np.frombuffer(data, dtype=dtype_codes[st.cls.__name__]).byteswap().tobytes()
                zf.writestr(zipfile.ZipInfo(f"{prefix}/data/{key}"), data, compress_type=method)
            zf.writestr(f"{prefix}/version", "3\n")
        return path

    return types.SimpleNamespace(tensor=tensor, save=save, module=torch, utils=utils, storage=_FakeStorage)


def _bf16_bits(x):
    return (np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _reference_checkpoint(fake):
    rng = np.random.default_rng(5)
    W = rng.standard_normal((6, 4)).astype(np.float32)
    D = rng.standard_normal((3, 5))
    H = rng.standard_normal((4, 4)).astype(np.float16)
    B = (_bf16_bits(rng.standard_normal((5, 3))).astype(np.uint32) << 16).view(np.float32)  # exact in bf16
    T = rng.standard_normal((7, 3)).astype(np.float32)  # saved transposed: strides (1, 7)
    flat = rng.standard_normal(40).astype(np.float32)  # one storage, two views
    shared = fake.storage(fake.module.FloatStorage, "shared", flat.tobytes())
    state = collections.OrderedDict()
    state["fc.weight"] = fake.tensor(W, key="0")
    state["fc.double"] = fake.tensor(D, key="1")
    state["fc.half"] = fake.tensor(H, key="2")
    state["fc.bf16"] = fake.tensor(_bf16_bits(B), key="3")
    state["fc.transposed"] = fake.tensor(T, transpose=True, key="4")
    state["view.a"] = fake.tensor(flat[:12].reshape(3, 4), storage=shared)
    state["view.b"] = fake.tensor(flat[12:40].reshape(4, 7), storage=shared, offset=12)
    state["fc.bias"] = fake.tensor(rng.standard_normal(6).astype(np.float32), key="5")
    state["steps"] = fake.tensor(np.arange(6, dtype=np.int64).reshape(2, 3), key="6")
    obj = {"model": state, "epoch": 3, "optimizer": {"param_groups": [{"lr": 0.1, "params": [0, 1]}]}}
    expected = {
        "model.fc.weight": (W, None),
        "model.fc.double": (D, None),
        "model.fc.half": (H, None),
        "model.fc.bf16": (B, None),
        "model.fc.transposed": (T, None),
        "model.view.a": (flat[:12].reshape(3, 4), None),
        "model.view.b": (flat[12:40].reshape(4, 7), None),
        "model.fc.bias": (None, "not a matrix"),
        "model.steps": (None, "not floating point"),
    }
    return obj, expected


def _assert_matches(got, expected):
    assert list(got) == list(expected)
    for name, (want, reason) in expected.items():
        arr, got_reason = got[name]
        assert got_reason == reason, name
        if want is None:
            assert arr is None, name
        else:
            assert arr.shape == want.shape and arr.dtype == want.dtype, name
            np.testing.assert_array_equal(arr, want, err_msg=name)


@pytest.mark.parametrize("ext", [".pt", ".pth", ".bin", ".ckpt"])
def test_torch_checkpoint_by_the_spec(tmp_path, fake_torch, ext):
    obj, expected = _reference_checkpoint(fake_torch)
    path = fake_torch.save(tmp_path / f"model{ext}", obj)
    _assert_matches(_items(path), expected)


def test_torch_checkpoint_compressed_storages_other_prefix_and_magic(tmp_path, fake_torch):
    obj, expected = _reference_checkpoint(fake_torch)
    path = fake_torch.save(tmp_path / "model.weights", obj, prefix="model", compress_storages=True)
    _assert_matches(_items(path), expected)  # unknown extension: recognized by its data.pkl


def test_torch_checkpoint_big_endian(tmp_path, fake_torch):
    obj, expected = _reference_checkpoint(fake_torch)
    path = fake_torch.save(tmp_path / "big.pt", obj, byteorder="big")
    _assert_matches(_items(path), expected)


def test_torch_checkpoint_bare_tensor_and_parameter(tmp_path, fake_torch):
    W = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = fake_torch.save(tmp_path / "t.pt", fake_torch.tensor(W, key="0"))
    np.testing.assert_array_equal(_items(path)["t"][0], W)

    class Param:
        def __reduce_ex__(self, protocol):
            return fake_torch.utils._rebuild_parameter, (fake_torch.tensor(W, key="0"), True, collections.OrderedDict())

    path = fake_torch.save(tmp_path / "p.pt", {"w": Param()})
    np.testing.assert_array_equal(_items(path)["w"][0], W)


def test_torch_checkpoint_audit_from_the_command_line(tmp_path, fake_torch):
    obj, expected = _reference_checkpoint(fake_torch)
    path = fake_torch.save(tmp_path / "model.pt", obj)
    res = subprocess.run(
        [sys.executable, "-m", "linalg_lowrank", "audit", str(path), "--no-progress", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {r["name"] for r in doc["records"]} == {n for n, (w, _) in expected.items() if w is not None}
    W = expected["model.fc.weight"][0].astype(np.float64)
    (rec,) = [r for r in doc["records"] if r["name"] == "model.fc.weight"]
    sigma = np.linalg.norm(W, 2)
    # computed in float32: a few roundings per entry of the products
    assert abs(rec["spectral_norm"] - sigma) <= 8 * max(W.shape) * np.finfo(np.float32).eps * sigma


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
def test_malicious_pickle_is_refused_without_running_anything(tmp_path, fake_torch, capsys, attack):
    marker = tmp_path / "pwned"
    command = f"open({str(marker)!r}, 'w').write('x')"
    func, args = {
        "os.system": (os.system, (f"touch {marker}",)),
        "subprocess.call": (subprocess.call, (["touch", str(marker)],)),
        "builtins.eval": (eval, (command,)),
        "builtins.exec": (exec, (command,)),
    }[attack]
    W = np.eye(3, dtype=np.float32)
    path = fake_torch.save(tmp_path / "evil.pt", {"w": fake_torch.tensor(W, key="0"), "x": _Evil(func, args)})
    assert f"{func.__name__}".encode() in path.read_bytes()  # the global really is in the pickle
    # named as Python 3 knows it (os.system is posix.system on Linux; protocol 2 writes
    # builtins as __builtin__ and the message gives both)
    expected_global = f"{func.__module__}.{func.__name__}"
    with pytest.raises(CheckpointError, match="refuses pickle global") as info:
        list(read_tensors(path))
    assert expected_global in str(info.value)
    _assert_exit_2(path, expected_global, capsys)
    assert not marker.exists()


def test_hand_assembled_malicious_opcodes_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for module, name in [("os", "system"), ("builtins", "getattr"), ("numpy", "load")]:
        arg = f"touch {marker}".encode()
        data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(arg)) + arg + b"\x85R."
        path = tmp_path / f"{module}_{name}.pt"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", data)
        _assert_exit_2(path, f"refuses pickle global {module}.{name}", capsys)
    # STACK_GLOBAL (protocol 4) with a dotted name goes through the same check
    data = b"\x80\x04\x8c\x02os\x94\x8c\x0bpath.system\x94\x93\x94."
    path = tmp_path / "stack_global.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
    _assert_exit_2(path, "refuses pickle global os.path.system", capsys)
    # protocol 5's out-of-band buffers are not part of the format
    data = b"\x80\x05\x96" + struct.pack("<Q", 3) + b"abc."
    path = tmp_path / "buffers.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
    _assert_exit_2(path, "refuses pickle opcode BYTEARRAY8", capsys)
    assert not marker.exists()


def test_torch_checkpoint_structural_errors(tmp_path, fake_torch, capsys):
    W = np.eye(4, dtype=np.float32)
    # a view reaching past its storage
    st = fake_torch.storage(fake_torch.module.FloatStorage, "0", W.tobytes())
    path = fake_torch.save(
        tmp_path / "past.pt", {"w": _FakeTensor(fake_torch.utils._rebuild_tensor_v2, st, 4, (4, 4), (4, 1))}
    )
    _assert_exit_2(path, "the storage holds 16", capsys)
    # a storage record missing from the archive
    path = fake_torch.save(tmp_path / "missing.pt", {"w": fake_torch.tensor(W, key="0")})
    data = path.read_bytes().replace(b"archive/data/0", b"archive/data/X")
    path.write_bytes(data)
    _assert_exit_2(path, "is missing", capsys)
    # legacy (not zip) format and a zip without data.pkl
    legacy = tmp_path / "legacy.bin"
    legacy.write_bytes(pickle.dumps({"w": 1}, protocol=2))
    _assert_exit_2(legacy, "not a zip-format PyTorch checkpoint", capsys)
    nodata = tmp_path / "nodata.pt"
    with zipfile.ZipFile(nodata, "w") as zf:
        zf.writestr("archive/version", "3\n")
    _assert_exit_2(nodata, "without a data.pkl", capsys)


def test_torch_nesting_and_cycles_are_bounded(tmp_path, fake_torch, capsys):
    deep = leaf = {}
    for _ in range(200):
        leaf["x"] = {}
        leaf = leaf["x"]
    path = fake_torch.save(tmp_path / "deep.pt", deep)
    _assert_exit_2(path, "nested more than", capsys)
    cyclic = {"w": fake_torch.tensor(np.eye(2, dtype=np.float32), key="0")}
    cyclic["self"] = cyclic
    diamond = {"a": cyclic}
    for _ in range(60):  # 2**60 paths if shared containers were walked again
        diamond = {"a": diamond, "b": diamond}
    path = fake_torch.save(tmp_path / "cyclic.pt", diamond)
    got = _items(path)
    assert list(got) == ["a." * 60 + "a.w"]


def test_torch_names_are_str(tmp_path, fake_torch):
    W = np.eye(2, dtype=np.float32)
    obj = {b"by\xfftes": fake_torch.tensor(W, key="0"), 7: {"w\udc80": fake_torch.tensor(W, key="1")}}
    names = list(_items(fake_torch.save(tmp_path / "names.pt", obj)))
    assert names == ["by\ufffdtes", "7.w\\udc80"]
    assert all(isinstance(n, str) for n in names)


# --------------------------------------------------------------------------------------------
# Cross-check against torch itself (skipped unless torch is importable; never a dependency)
# --------------------------------------------------------------------------------------------


def test_against_real_torch(tmp_path):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(5, 7)
    W = torch.randn(6, 9, generator=gen)
    sd = {
        "model": lin.state_dict(),
        "half": torch.randn(3, 4, generator=gen).half(),
        "bf16": torch.randn(4, 3, generator=gen).bfloat16(),
        "double": torch.randn(2, 5, generator=gen).double(),
        "transposed": W.t(),
        "slice": W[1:4, 2:8],
        "expanded": torch.randn(1, 4, generator=gen).expand(3, 4),
        "stack": torch.randn(2, 3, 4, generator=gen),
        "param": torch.nn.Parameter(torch.randn(3, 3, generator=gen)),
        "ints": torch.arange(6).reshape(2, 3),
        "step": 10,
    }
    path = tmp_path / "real.pt"
    torch.save(sd, path)
    got = _items(path)
    flat = {f"model.{k}": v for k, v in sd["model"].items()}
    flat.update({k: v for k, v in sd.items() if k not in ("model", "step")})
    assert list(got) == list(flat)
    for name, t in flat.items():
        arr, reason = got[name]
        if t.dim() < 2 or not t.is_floating_point():
            assert arr is None and reason is not None, name
            continue
        want = t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
        assert reason is None and arr.dtype == want.dtype, name
        np.testing.assert_array_equal(arr, want, err_msg=name)
    # TorchScript archives (their pickle names the scripted classes) and the legacy format: refused
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 4)), tmp_path / "jit.pt")
    with pytest.raises(CheckpointError, match="refuses pickle global __torch__"):
        list(read_tensors(tmp_path / "jit.pt"))
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not a zip-format PyTorch checkpoint"):
        list(read_tensors(tmp_path / "legacy.pt"))
