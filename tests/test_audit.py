"""The checkpoint audit: readers against numpy/safetensors, statistics against scipy's SVD, the CLI."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import safetensors.numpy
import scipy.linalg

from linalg_lowrank import __main__ as cli
from linalg_lowrank import audit
from linalg_lowrank.audit import AuditRecord, CheckpointError, audit_checkpoint, read_tensors

EPS64 = np.finfo(np.float64).eps
TOL = 1e-10  # the audit's default power-iteration tolerance


@pytest.fixture(autouse=True, scope="module")
def _kernels_compiled():
    """Compile before the tests that read stderr: a cold cache's message would land in theirs."""
    audit._warm_up({"float32", "float64"})


def _matrices(seed=0):
    """A few matrices with known, distinct spectra (float64)."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((40, 12)))
    V, _ = np.linalg.qr(rng.standard_normal((30, 12)))
    s = np.array([5.0, 4.95] + list(np.linspace(1.0, 0.1, 10)))  # sigma2/sigma1 = 0.99
    return {
        "gauss": rng.standard_normal((48, 20)),
        "wide": rng.standard_normal((16, 50)) * 0.02,
        "lowrank": rng.standard_normal((36, 3)) @ rng.standard_normal((3, 24)),
        "close": (U * s) @ V.T,
    }


def _bf16_exact(x):
    """float32 values whose low 16 bits are zero, so bfloat16 holds them exactly."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


def _write_bf16_safetensors(path, tensors):
    """Write BF16 tensors by hand in the safetensors layout (safetensors.numpy cannot)."""
    header, blobs, offset = {"__metadata__": {"written_by": "test"}}, [], 0
    for name, x in tensors.items():
        blob = (np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(x.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fp:
        fp.write(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


def _svd_stats(W):
    W = np.asarray(W, dtype=np.float64)
    s = scipy.linalg.svd(W, compute_uv=False)
    fro = float(np.sqrt(np.sum(s**2)))
    return {
        "spectral_norm": s[0],
        "frobenius_norm": fro,
        "stable_rank": fro**2 / s[0] ** 2,
        "rms": fro / np.sqrt(W.size),
        "ratio": s[1] / s[0],
    }


def _check_record(record, W):
    ref = _svd_stats(W)
    m, n = W.shape[-2:]
    # sigma: solver tolerance plus what float64 products of an (m, n) matrix can resolve
    rtol_sigma = TOL + 50 * (m + n) * EPS64 * ref["frobenius_norm"] / ref["spectral_norm"]
    rtol_fro = 10 * np.sqrt(m * n) * EPS64  # float64 summation of m n squares
    assert record.converged
    assert record.spectral_norm == pytest.approx(ref["spectral_norm"], rel=rtol_sigma)
    assert record.frobenius_norm == pytest.approx(ref["frobenius_norm"], rel=rtol_fro)
    assert record.rms == pytest.approx(ref["rms"], rel=rtol_fro)
    assert record.stable_rank == pytest.approx(ref["stable_rank"], rel=2 * (rtol_sigma + rtol_fro))
    assert 0.0 <= record.ratio_estimate <= 1.0
    assert record.time_s >= 0.0


def _by_name(records):
    return {r.name: r for r in records}


# --------------------------------------------------------------------------------------------
# Statistics against scipy, per format
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("saver", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_npz_statistics_match_svd(tmp_path, saver):
    mats = _matrices()
    mats["f32"] = mats["gauss"].astype(np.float32)
    path = tmp_path / "ckpt.npz"
    saver(path, **mats, step=np.int64(3), bias=np.ones(5), mask=np.ones((2, 2), dtype=bool))
    records, skipped = audit_checkpoint(path)
    got = _by_name(records)
    assert list(got) == list(mats)  # file order
    for name, W in mats.items():
        _check_record(got[name], W)
        assert got[name].shape == W.shape and got[name].dtype == str(W.dtype)
    assert got["lowrank"].stable_rank <= 3.0 + 1e-9
    assert got["close"].ratio_estimate == pytest.approx(0.99, rel=1e-6)
    assert {(s.name, s.dtype, s.reason) for s in skipped} == {
        ("step", "int64", "not floating point"),
        ("bias", "float64", "not a matrix"),
        ("mask", "bool", "not floating point"),
    }


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<f4", "<f2"])
def test_npy_statistics_match_svd(tmp_path, order, dtype):
    W = np.asarray(_matrices()["gauss"], dtype=dtype, order=order)
    path = tmp_path / "layer.npy"
    np.save(path, W)
    (record,), skipped = audit_checkpoint(path)
    assert skipped == []
    assert record.name == "layer" and record.shape == W.shape and record.dtype == str(W.dtype)
    _check_record(record, W)


def test_safetensors_statistics_match_svd_and_skip_integers(tmp_path):
    mats = _matrices()
    tensors = {
        "a.f64": mats["gauss"],
        "b.f32": mats["close"].astype(np.float32),
        "c.f16": mats["wide"].astype(np.float16),
        "d.lowrank": mats["lowrank"].astype(np.float32),
        "ids": np.arange(12, dtype=np.int64).reshape(3, 4),
        "i8": np.ones((4, 4), dtype=np.int8),
        "u16": np.ones((4, 4), dtype=np.uint16),
        "flag": np.zeros((3, 3), dtype=bool),
        "norm": np.ones(7, dtype=np.float32),
        "scalar": np.array(1.5, dtype=np.float32),
    }
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(tensors, str(path), metadata={"step": "100"})
    records, skipped = audit_checkpoint(path)
    got = _by_name(records)
    assert sorted(got) == ["a.f64", "b.f32", "c.f16", "d.lowrank"]
    for name, rec in got.items():
        _check_record(rec, tensors[name])  # float16 is audited in float32: exactly its values
    assert got["c.f16"].dtype == "float16"
    assert {s.name: (s.dtype, s.reason) for s in skipped} == {
        "ids": ("int64", "not floating point"),
        "i8": ("int8", "not floating point"),
        "u16": ("uint16", "not floating point"),
        "flag": ("bool", "not floating point"),
        "norm": ("float32", "not a matrix"),
        "scalar": ("float32", "not a matrix"),
    }


def test_bf16_by_hand(tmp_path):
    rng = np.random.default_rng(5)
    W = _bf16_exact(rng.standard_normal((30, 18)))
    S = _bf16_exact(rng.standard_normal((2, 9, 7)))
    path = tmp_path / "bf16.safetensors"
    _write_bf16_safetensors(path, {"w": W, "stack": S, "v": W[0]})
    items = {name: (arr, reason) for name, arr, reason in read_tensors(path)}
    assert items["w"][0].dtype == np.float32
    np.testing.assert_array_equal(items["w"][0], W)
    np.testing.assert_array_equal(items["stack"][0], S)
    assert items["v"] == (None, "not a matrix")
    records, _ = audit_checkpoint(path)
    got = _by_name(records)
    assert got["w"].dtype == "bfloat16"
    _check_record(got["w"], W)


def test_reader_agrees_with_safetensors_package(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "f64": rng.standard_normal((5, 6)),
        "f32": rng.standard_normal((4, 3, 2)).astype(np.float32),
        "f16": rng.standard_normal((7, 2)).astype(np.float16),
    }
    path = tmp_path / "m.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    ours = {name: arr for name, arr, _ in read_tensors(path)}
    theirs = safetensors.numpy.load_file(str(path))
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name].dtype == theirs[name].dtype and ours[name].shape == theirs[name].shape
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_demo_writer_is_readable_by_safetensors_package(tmp_path):
    path = audit.write_demo_checkpoint(tmp_path / "demo.safetensors")
    ours = {name: arr for name, arr, _ in read_tensors(path)}
    with safetensors.safe_open(path, framework="np") as f:
        assert sorted(f.keys()) == sorted(ours)
        assert f.metadata()["source"] == "linalg_lowrank demo"
        for name, arr in ours.items():
            if arr is not None and name != "layers.1.mlp.down.weight":  # BF16: numpy cannot load it
                np.testing.assert_array_equal(arr, f.get_tensor(name))


def test_unsupported_safetensors_dtype_and_progress_bar(tmp_path, capsys):
    body = json.dumps(
        {
            "fp8": {"dtype": "F8_E4M3", "shape": [4, 4], "data_offsets": [0, 16]},
            "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 32]},
        }
    ).encode()
    path = tmp_path / "fp8.safetensors"
    data = np.array([[2.0, 0.0], [0.0, 1.0]], dtype="<f4").tobytes()
    path.write_bytes(len(body).to_bytes(8, "little") + body + bytes(16) + data)
    records, skipped = audit_checkpoint(path, progress=True)
    assert [r.spectral_norm for r in records] == [2.0]
    assert skipped == [audit.SkippedTensor("fp8", (4, 4), "F8_E4M3", "unsupported dtype F8_E4M3")]
    out, err = capsys.readouterr()
    assert out == "" and "fp8.safetensors" in err  # the bar went to stderr


def test_stack_reports_max_over_stack(tmp_path):
    rng = np.random.default_rng(2)
    stack = rng.standard_normal((2, 3, 10, 8))
    stack[1, 0] *= 4.0  # the largest spectral norm
    path = tmp_path / "experts.npy"
    np.save(path, stack)
    (record,), _ = audit_checkpoint(path, conv="stack")  # 4-D is a conv kernel by default
    assert record.is_stack and record.view == "stack" and record.shape == (2, 3, 10, 8)
    assert record.stack_size == 6 and record.stack_index == (1, 0)
    _check_record(record, stack[1, 0])


def test_zero_nonfinite_and_unconverged(tmp_path):
    close = _matrices()["close"]
    nan = np.ones((4, 4))
    nan[2, 1] = np.nan
    path = tmp_path / "odd.npz"
    np.savez(path, zero=np.zeros((3, 4)), nan=nan, close=close, empty=np.zeros((0, 4)))
    records, skipped = audit_checkpoint(path, maxiter=2)  # ConvergenceWarning would be an error here
    got = _by_name(records)
    assert got["zero"].spectral_norm == 0.0 and np.isnan(got["zero"].stable_rank)
    assert got["zero"].to_dict()["stable_rank"] is None
    assert got["close"].converged is False
    assert {s.name: s.reason for s in skipped} == {"nan": "contains NaN or Inf", "empty": "empty (a dimension is 0)"}


def test_seed_makes_runs_reproducible(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, _matrices()["close"])
    one = audit_checkpoint(path, seed=3, tol=1e-4).records[0]
    two = audit_checkpoint(path, seed=3, tol=1e-4).records[0]
    assert one.spectral_norm == two.spectral_norm and one.ratio_estimate == two.ratio_estimate


# --------------------------------------------------------------------------------------------
# Lazy reading (by offset, never memory-mapped: see tests/test_readers.py)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npy_safetensors_and_npz_arrays_are_read_only(tmp_path, dtype):
    W = np.arange(24, dtype=dtype).reshape(4, 6)
    np.save(tmp_path / "w.npy", W)
    safetensors.numpy.save_file({"w": W, "s": W.reshape(2, 2, 6)}, str(tmp_path / "w.safetensors"))
    np.savez(tmp_path / "w.npz", w=W)
    for name in ("w.npy", "w.safetensors", "w.npz"):
        for _, arr, _ in read_tensors(tmp_path / name):
            assert not arr.flags.writeable
            np.testing.assert_array_equal(arr.reshape(-1, 6), W)


def test_compressed_npz_reads_one_member_at_a_time(tmp_path):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, a=np.ones((3, 3)), b=np.zeros((2, 2)))
    gen = read_tensors(path)
    name, arr, reason = next(gen)
    assert (name, reason) == ("a", None) and arr.shape == (3, 3)
    gen.close()


# --------------------------------------------------------------------------------------------
# Bad files: CheckpointError from Python, one line and exit status 2 from the CLI
# --------------------------------------------------------------------------------------------


def _good_safetensors(path):
    safetensors.numpy.save_file({"w": np.ones((8, 8), dtype=np.float32)}, str(path))
    return path.read_bytes()


def _make_bad(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "nope.safetensors", "no such file"
    if kind == "extension":
        path = tmp_path / "w.txt"
        path.write_bytes(b"x")
        return path, "unknown extension"
    if kind == "directory":
        return tmp_path, "directory"
    if kind == "short":
        path = tmp_path / "short.safetensors"
        path.write_bytes(b"\x01\x02")
        return path, "truncated"
    if kind == "header_length":
        path = tmp_path / "hl.safetensors"
        data = _good_safetensors(path)
        path.write_bytes((10**12).to_bytes(8, "little") + data[8:])
        return path, "bad header length"
    if kind == "json":
        path = tmp_path / "json.safetensors"
        body = b'{"w": {"dtype": "F32", '
        path.write_bytes(len(body).to_bytes(8, "little") + body)
        return path, "bad JSON header"
    if kind == "json_shape":
        path = tmp_path / "shape.safetensors"
        body = b'{"w": {"dtype": "F32", "shape": "8x8", "data_offsets": [0, 256]}}'
        path.write_bytes(len(body).to_bytes(8, "little") + body + bytes(256))
        return path, "shape"
    if kind == "truncated":
        path = tmp_path / "cut.safetensors"
        data = _good_safetensors(path)
        path.write_bytes(data[:-10])
        return path, "past the end"
    if kind == "offsets_mismatch":
        path = tmp_path / "mis.safetensors"
        body = b'{"w": {"dtype": "F32", "shape": [8, 8], "data_offsets": [0, 100]}}'
        path.write_bytes(len(body).to_bytes(8, "little") + body + bytes(256))
        return path, "need 256"
    if kind == "npy_truncated":
        path = tmp_path / "cut.npy"
        np.save(path, np.ones((50, 50)))
        path.write_bytes(path.read_bytes()[:-100])
        return path, "truncated"
    if kind == "npy_garbage":
        path = tmp_path / "bad.npy"
        path.write_bytes(b"not numpy at all")
        return path, "not a valid .npy"
    if kind == "zip_truncated":
        path = tmp_path / "cut.npz"
        np.savez(path, w=np.ones((50, 50)))
        path.write_bytes(path.read_bytes()[:-200])
        return path, "zip"
    if kind == "zip_corrupt":
        path = tmp_path / "corrupt.npz"
        np.savez_compressed(path, w=np.random.default_rng(0).standard_normal((64, 64)))
        data = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("w.npy")
        start = info.header_offset + 30 + len(info.filename) + 200
        data[start : start + 200] = bytes(200)  # inside the deflate stream, after the npy header
        path.write_bytes(bytes(data))
        return path, "corrupt"
    raise AssertionError(kind)


BAD_KINDS = [
    "missing",
    "extension",
    "directory",
    "short",
    "header_length",
    "json",
    "json_shape",
    "truncated",
    "offsets_mismatch",
    "npy_truncated",
    "npy_garbage",
    "zip_truncated",
    "zip_corrupt",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_one_line_error_exit_2(tmp_path, kind, capsys):
    path, problem = _make_bad(tmp_path, kind)
    with pytest.raises(CheckpointError, match=problem) as info:
        audit_checkpoint(path)
    assert isinstance(info.value, ValueError)
    status = audit.main([str(path), "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0] and problem in lines[0]
    assert "Traceback" not in err


def test_argument_errors_name_the_argument(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.eye(3))
    with pytest.raises(ValueError, match="`seed`"):
        audit_checkpoint(path, seed=-1)
    with pytest.raises(ValueError, match="`tol`"):
        audit_checkpoint(path, tol=0.0)
    with pytest.raises(TypeError, match="`maxiter`"):
        audit_checkpoint(path, maxiter=2.5)
    with pytest.raises(TypeError, match="`path`"):
        audit_checkpoint(3)


def test_cli_bad_options_exit_2(capsys):
    assert audit.main(["--top-k", "0"]) == 2
    assert audit.main(["--sort", "size"]) == 2
    err = capsys.readouterr().err
    assert "--top-k" in err and "--sort" in err


# --------------------------------------------------------------------------------------------
# Command line output
# --------------------------------------------------------------------------------------------


@pytest.fixture
def ckpt(tmp_path):
    rng = np.random.default_rng(4)
    tensors = {
        "big": rng.standard_normal((30, 20)) * 5.0,
        "lowrank": rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20)),
        "small": rng.standard_normal((10, 40)) * 0.1,
        "close": _matrices()["close"],
        "stack": rng.standard_normal((3, 8, 8)),
        "ids": np.arange(6, dtype=np.int32).reshape(2, 3),
    }
    path = tmp_path / "ckpt.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    return path


def test_cli_json(ckpt, capsys):
    assert audit.main([str(ckpt), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fields = {
        "name",
        "shape",
        "dtype",
        "spectral_norm",
        "frobenius_norm",
        "stable_rank",
        "rms",
        "ratio_estimate",
        "converged",
        "time_s",
        "stack_size",
        "stack_index",
        "view",
        "layer",  # depth and role, as the report groups them
        "role",
    }
    assert len(doc["records"]) == 5
    for rec in doc["records"]:
        assert set(rec) == fields
    assert doc["skipped"] == [{"name": "ids", "shape": [2, 3], "dtype": "int32", "reason": "not floating point"}]
    stack = next(r for r in doc["records"] if r["name"] == "stack")
    assert stack["shape"] == [3, 8, 8] and stack["stack_size"] == 3 and len(stack["stack_index"]) == 1
    assert doc["seed"] == audit.DEFAULT_SEED


@pytest.mark.parametrize("key", audit.SORT_KEYS)
def test_cli_sort_and_top_k(ckpt, capsys, key):
    assert audit.main([str(ckpt), "--json", "--sort", key, "--top-k", "3"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    assert len(records) == 3
    all_records, _ = audit_checkpoint(ckpt)
    if key == "name":
        expected = sorted(r.name for r in all_records)[:3]
        assert [r["name"] for r in records] == expected
    elif key == "time_s":  # times differ from run to run: check the order of this run's values
        values = [r["time_s"] for r in records]
        assert values == sorted(values, reverse=True)
    else:
        expected = [r.name for r in sorted(all_records, key=lambda r: -getattr(r, key))][:3]
        assert [r["name"] for r in records] == expected


def test_cli_top_k_alone_sorts_by_spectral_norm(ckpt, capsys):
    assert audit.main([str(ckpt), "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "big" in out and "lowrank" not in out


def test_cli_table(ckpt, capsys):
    assert audit.main([str(ckpt)]) == 0  # stderr is not a TTY under capsys: no progress bar
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("name"))
    for column in audit.SORT_KEYS + ("shape", "dtype", "converged"):
        assert column in header.split()
    assert any(line.startswith("stack ") and "max of 3" in line for line in lines)
    assert "1 integer tensor skipped; --show-skipped lists them" in lines
    assert not any("ids" in line for line in lines)
    assert audit.main([str(ckpt), "--show-skipped"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("ids" in line and "int32" in line and "not floating point" in line for line in lines)


def test_cli_help(capsys):
    assert cli.main(["--help"]) == 0
    assert "audit" in capsys.readouterr().out
    assert cli.main(["audit", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--json", "--top-k", "--sort", "--seed", "spectral_norm"):
        assert option in out
    assert cli.main([]) == 2


def test_record_is_frozen(ckpt):
    record = audit_checkpoint(ckpt).records[0]
    assert isinstance(record, AuditRecord)
    with pytest.raises(AttributeError):
        record.spectral_norm = 0.0


def test_entry_point_on_demo():
    env = dict(os.environ, PYTHONWARNINGS="error::UserWarning")
    proc = subprocess.run(
        [sys.executable, "-m", "linalg_lowrank", "audit", "--json", "--sort", "ratio_estimate"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    names = [r["name"] for r in doc["records"]]
    assert len(names) == 8
    assert all(r["converged"] for r in doc["records"])
    got = {r["name"]: r for r in doc["records"]}
    assert got["layers.0.mlp.down.weight"]["ratio_estimate"] == pytest.approx(0.99, rel=1e-6)
    assert got["layers.0.mlp.up.weight"]["stable_rank"] < 4.0
    assert got["layers.1.mlp.down.weight"]["dtype"] == "bfloat16"
    assert got["layers.1.experts.weight"]["stack_size"] == 4
    ratios = [r["ratio_estimate"] for r in doc["records"]]
    assert ratios == sorted(ratios, reverse=True)
    assert {s["dtype"] for s in doc["skipped"]} == {"int64", "bool", "float32"}


# --------------------------------------------------------------------------------------------
# Skipped tensors: one line unless --show-skipped
# --------------------------------------------------------------------------------------------


@pytest.fixture
def many_skipped(tmp_path):
    rng = np.random.default_rng(6)
    tensors = {f"layer{i}.weight": rng.standard_normal((12, 10)) * (i + 1) for i in range(8)}
    tensors.update({f"layer{i}.bias": rng.standard_normal(12) for i in range(63)})
    tensors["position_ids"] = np.arange(16, dtype=np.int64).reshape(1, 16)
    path = tmp_path / "many.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    return path


def _table_rows(out):
    """The data rows of the table: the lines after the header, up to the legends or a blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("name "))
    rows = []
    for line in lines[start + 1 :]:
        if not line or line.startswith(("stack: ", "conv: ")):
            break
        rows.append(line)
    return rows


def test_top_k_summarizes_skipped_in_one_line(many_skipped, capsys):
    assert audit.main([str(many_skipped), "--top-k", "5"]) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    assert [row.split()[0] for row in rows] == [f"layer{i}.weight" for i in (7, 6, 5, 4, 3)]
    lines = out.splitlines()
    assert lines[-1] == "63 vectors, 1 integer tensor skipped; --show-skipped lists them"
    assert "bias" not in out and "position_ids" not in out
    assert len(lines) == 1 + 1 + 5 + 2  # title, header, 5 rows, blank line, summary

    assert audit.main([str(many_skipped), "--top-k", "5", "--show-skipped"]) == 0
    out = capsys.readouterr().out
    assert "63 vectors, 1 integer tensor skipped:" in out
    for i in range(63):
        assert any(line.split()[:3] == [f"layer{i}.bias", "12", "float64"] for line in out.splitlines())
    assert any(line.split()[:3] == ["position_ids", "1x16", "int64"] for line in out.splitlines())

    assert audit.main([str(many_skipped), "--top-k", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["records"]) == 5 and len(doc["skipped"]) == 64  # JSON keeps every skipped entry


def test_skipped_summary_counts_kinds():
    S = audit.SkippedTensor
    skipped = [
        S("mask", (4, 4), "bool", "not floating point"),
        S("step", (), "int64", "not floating point"),
        S("b1", (3,), "float32", "not a matrix"),
        S("b2", (3,), "float32", "not a matrix"),
        S("t", (), "float32", "not a matrix"),
        S("nan", (2, 2), "float32", "contains NaN or Inf"),
        S("fp8", (2, 2), "F8_E4M3", "unsupported dtype F8_E4M3"),
        S("fp8b", (2, 2), "F8_E4M3", "unsupported dtype F8_E4M3"),
    ]
    assert audit.skipped_summary(skipped) == (
        "2 vectors, 2 tensors (unsupported dtype F8_E4M3), 1 boolean tensor, 1 integer tensor, 1 scalar, "
        "1 tensor with NaN or Inf skipped"
    )
    assert audit.skipped_summary([]) == "nothing skipped"


# --------------------------------------------------------------------------------------------
# One name per quantity: table columns, JSON keys, --sort keys, record fields
# --------------------------------------------------------------------------------------------


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return cell == "-"
    return True


def test_every_number_column_is_a_sort_key_and_a_json_key(ckpt, capsys):
    assert audit.main([str(ckpt)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("name "))
    columns = header.split()
    rows = [row.split("  ") for row in _table_rows(out)]
    rows = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    number_columns = [c for i, c in enumerate(columns) if all(i < len(row) and _is_number(row[i]) for row in rows)]
    assert len(number_columns) == 6, number_columns
    assert audit.main([str(ckpt), "--json"]) == 0
    json_keys = set(json.loads(capsys.readouterr().out)["records"][0])
    record_fields = set(AuditRecord.__dataclass_fields__)
    for column in number_columns:
        assert column in audit.SORT_KEYS
        assert column in json_keys and column in record_fields
    for key in audit.SORT_KEYS:  # and every sort key is a column, a JSON key and a field
        assert key in columns and key in json_keys and key in record_fields
    assert "converged" in columns and "converged" in json_keys


def test_sort_by_frobenius_norm(ckpt, capsys):
    assert audit.main([str(ckpt), "--json", "--sort", "frobenius_norm"]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)["records"]]
    with safetensors.safe_open(str(ckpt), framework="np") as f:
        fro = {n: np.linalg.norm(f.get_tensor(n)[0] if n == "stack" else f.get_tensor(n)) for n in names}
    # the stack's row describes its matrix with the largest spectral norm: compare the others only
    plain = [n for n in names if n != "stack"]
    assert plain == sorted(plain, key=lambda n: -fro[n])


def test_old_names_are_gone(capsys):
    for old in ("ratio", "frobenius", "time"):
        assert audit.main(["--sort", old]) == 2
    assert "--sort" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Convolution kernels
# --------------------------------------------------------------------------------------------


def _conv_tensors():
    rng = np.random.default_rng(7)
    return {
        "conv2d.weight": rng.standard_normal((8, 3, 3, 3)),
        "conv3d.weight": rng.standard_normal((4, 2, 2, 3, 2)),
        "encoder.conv1.weight": rng.standard_normal((16, 4, 3)),  # conv1d: named so
        "mixer.Conv1d.weight": rng.standard_normal((64, 1, 3)),  # depthwise conv1d
        "experts.weight": rng.standard_normal((3, 10, 8)),  # a 3-D stack
    }


def test_conv_kernels_flattened_by_default(tmp_path):
    tensors = _conv_tensors()
    path = tmp_path / "conv.npz"
    np.savez(path, **tensors)
    got = _by_name(audit_checkpoint(path).records)
    for name in ("conv2d.weight", "conv3d.weight", "encoder.conv1.weight", "mixer.Conv1d.weight"):
        W = tensors[name]
        R = W.reshape(W.shape[0], -1)
        rec = got[name]
        assert rec.view == "conv" and rec.stack_size == 1 and rec.stack_index is None and not rec.is_stack
        assert rec.shape == W.shape
        _check_record(rec, R)
        m, n = R.shape
        rtol = TOL + 50 * (m + n) * EPS64 * np.linalg.norm(R) / np.linalg.norm(R, 2)
        assert rec.spectral_norm == pytest.approx(np.linalg.norm(R, 2), rel=rtol)
    stack = got["experts.weight"]
    assert stack.view == "stack" and stack.stack_size == 3
    norms = [np.linalg.norm(M, 2) for M in tensors["experts.weight"]]
    assert stack.stack_index == (int(np.argmax(norms)),)
    _check_record(stack, tensors["experts.weight"][int(np.argmax(norms))])


def test_conv_stack_keeps_stacks(tmp_path, capsys):
    tensors = _conv_tensors()
    path = tmp_path / "conv.npz"
    np.savez(path, **tensors)
    got = _by_name(audit_checkpoint(path, conv="stack").records)
    W = tensors["conv2d.weight"]
    norms = np.array([[np.linalg.norm(W[i, j], 2) for j in range(W.shape[1])] for i in range(W.shape[0])])
    rec = got["conv2d.weight"]
    assert rec.view == "stack" and rec.stack_size == 24
    assert rec.stack_index == tuple(int(i) for i in np.unravel_index(np.argmax(norms), norms.shape))
    _check_record(rec, W[rec.stack_index])
    assert all(r.view == "stack" for r in got.values())
    assert audit.main([str(path), "--json", "--conv", "stack"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["conv"] == "stack" and {r["view"] for r in doc["records"]} == {"stack"}
    assert audit.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("conv2d.weight ") and line.endswith("conv: 8x27") for line in out.splitlines())


def test_conv_option_is_checked(tmp_path, capsys):
    path = tmp_path / "w.npy"
    np.save(path, np.eye(3))
    with pytest.raises(ValueError, match="`conv`"):
        audit_checkpoint(path, conv="auto")
    assert audit.main([str(path), "--conv", "auto"]) == 2
    assert "--conv" in capsys.readouterr().err
    assert cli.main(["audit", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--conv {flatten,stack}" in help_text and "name contains 'conv'" in help_text


# --------------------------------------------------------------------------------------------
# Names from the file are printed escaped
# --------------------------------------------------------------------------------------------

EVIL_NAMES = [
    "evil\nfake.weight  8x8  float32  99999",
    "\x1b[2J\x1b[Hclear",
    "cr\rover",
    "tab\there",
    "back\\slash",
    "bidi\u202eexe.txt",
    "zero\u200bwidth",
]


def test_table_escapes_names_and_json_keeps_them(tmp_path, capsys):
    rng = np.random.default_rng(8)
    tensors = {name: rng.standard_normal((4, 3)) for name in EVIL_NAMES}
    tensors["vec\n  forged  2x2  float64  1.0  yes"] = np.ones(3)
    path = tmp_path / "evil.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    assert audit.main([str(path), "--show-skipped"]) == 0
    out = capsys.readouterr().out
    assert all(ch.isprintable() or ch == "\n" for ch in out)
    lines = out.splitlines()
    assert len(lines) == 1 + 1 + len(EVIL_NAMES) + 3  # title, header, rows, blank, skipped header and row
    rows = _table_rows(out)
    assert len(rows) == len(EVIL_NAMES)
    for name in EVIL_NAMES:  # repr-style escapes, each name on its own row
        assert sum(row.startswith(repr(name)[1:-1] + " ") for row in rows) == 1, name
    assert lines[-1].startswith("  " + repr("vec\n  forged  2x2  float64  1.0  yes")[1:-1])

    assert audit.main([str(path), "--json"]) == 0
    raw = capsys.readouterr().out
    assert all(ch.isprintable() or ch == "\n" for ch in raw)
    doc = json.loads(raw)
    assert sorted(r["name"] for r in doc["records"]) == sorted(EVIL_NAMES)
    assert [s["name"] for s in doc["skipped"]] == ["vec\n  forged  2x2  float64  1.0  yes"]


def test_error_line_escapes_the_path(tmp_path, capsys):
    path = tmp_path / "\x1b[31mred\nline.npy"
    assert audit.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and "\n" not in err[:-1] and all(ch.isprintable() for ch in err[:-1])
    assert "\\x1b[31mred\\nline.npy" in err and "no such file" in err


# --------------------------------------------------------------------------------------------
# numba kernels are compiled before any tensor is timed
# --------------------------------------------------------------------------------------------


def test_warm_up_runs_once_before_the_first_tensor(tmp_path, monkeypatch):
    from linalg_lowrank import _warmup

    calls = []
    real_power_iteration = audit.power_iteration

    def power_iteration(*args, **kwargs):
        calls.append("power_iteration")
        return real_power_iteration(*args, **kwargs)

    monkeypatch.setattr(audit, "_warmed_up", set())
    monkeypatch.setattr(_warmup, "warm_up", lambda **kwargs: calls.append("warm_up") or 0.0)
    monkeypatch.setattr(audit, "power_iteration", power_iteration)
    np.save(tmp_path / "v.npy", np.ones(5))
    audit_checkpoint(tmp_path / "v.npy")  # nothing to compute: nothing to compile
    assert calls == []
    np.savez(tmp_path / "w.npz", a=np.eye(3), b=np.ones((4, 2)))
    audit_checkpoint(tmp_path / "w.npz")
    audit_checkpoint(tmp_path / "w.npz")
    assert calls == ["warm_up"] + ["power_iteration"] * 4  # once per process, before the first


def _run_timed_audit(env, argv=()):
    """Audit (the demo by default) in a fresh interpreter; stderr lines come back with their arrival times."""
    import time

    code = (
        "import json, sys, time\n"
        "from linalg_lowrank import _warmup, audit\n"
        "real = _warmup.warm_up\n"
        "def timed(**kwargs):\n"
        "    t = time.perf_counter()\n"
        "    real(**kwargs)\n"
        "    seconds = time.perf_counter() - t\n"
        "    print('WARMUP_DONE', seconds, json.dumps(_signatures()), file=sys.stderr, flush=True)\n"
        "def _signatures():\n"  # every kernel of every module of the package, wherever kernels live
        "    import numba\n"
        "    mods = [(n, m) for n, m in list(sys.modules.items()) if n.split('.')[0] == 'linalg_lowrank']\n"
        "    return {f'{n}.{name}': sorted(map(str, d.signatures)) for n, m in mods for name, d in vars(m).items()\n"
        "            if isinstance(d, numba.core.registry.CPUDispatcher)}\n"
        "_warmup.warm_up = timed\n"
        f"status = audit.main([*{list(argv)!r}, '--json', '--no-progress'])\n"
        "print('SIGNATURES', json.dumps(_signatures()), file=sys.stderr, flush=True)\n"
        "sys.exit(status)\n"
    )
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    lines = []
    try:
        for line in proc.stderr:  # read as it comes, as a user without a terminal would
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
        stdout = proc.stdout.read()
        proc.wait(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, "\n".join(line for _, line in lines)
    return json.loads(stdout), lines


def _warmup_line(lines):
    done = [(t, line) for t, line in lines if line.startswith("WARMUP_DONE ")]
    t_done, last = done[-1]  # --spectrum warms up twice: the power path, then the spectrum path
    _, _, signatures = last.split(" ", 2)
    return t_done, sum(float(line.split(" ", 2)[1]) for _, line in done), json.loads(signatures)


def test_cold_start_says_it_compiles_and_keeps_compile_out_of_time_s(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba_cache"))
    env.pop("NUMBA_DISABLE_JIT", None)
    doc, lines = _run_timed_audit(env)
    t_done, warmup_s, _ = _warmup_line(lines)
    (t_msg,) = [t for t, line in lines if "compiling numba kernels" in line]
    # the message came when compiling started, not when it ended (stderr is not held back)
    assert t_done - t_msg >= 0.5 * warmup_s
    times = [r["time_s"] for r in doc["records"]]
    assert len(times) == 8
    assert max(times) < warmup_s  # a matrix that compiled would take as long as the warm-up


def test_no_kernel_is_compiled_or_loaded_while_tensors_are_timed():
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    _, lines = _run_timed_audit(env)
    _, _, before = _warmup_line(lines)
    (after,) = [json.loads(line.split(" ", 1)[1]) for _, line in lines if line.startswith("SIGNATURES ")]
    new = {name: sorted(set(sigs) - set(before.get(name, ()))) for name, sigs in after.items()}
    assert {name: sigs for name, sigs in new.items() if sigs} == {}


def test_no_kernel_is_compiled_or_loaded_while_spectra_are_timed(tmp_path):
    # --spectrum runs top_singular_values after power iteration: its kernels are warmed up too, for
    # every compute dtype present (float16 and bfloat16 compute in float32) and for a matrix large
    # enough for the parallel product.
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    rng = np.random.default_rng(0)
    path = audit.write_demo_checkpoint(tmp_path / "demo.safetensors")
    big = tmp_path / "big.npz"
    np.savez(
        big,
        **{"layers.0.mlp.up.weight": rng.standard_normal((520, 512)).astype(np.float32)},
        **{"layers.0.mlp.down.weight": rng.standard_normal((512, 520))},
    )
    for target in (path, big):
        doc, lines = _run_timed_audit(env, [str(target), "--spectrum", "8"])
        assert all(r["spectrum"]["k"] == 8 for r in doc["records"])
        _, _, before = _warmup_line(lines)
        (after,) = [json.loads(line.split(" ", 1)[1]) for _, line in lines if line.startswith("SIGNATURES ")]
        assert any(after.values())  # the probe does see the kernels
        new = {name: sorted(set(sigs) - set(before.get(name, ()))) for name, sigs in after.items()}
        assert {name: sigs for name, sigs in new.items() if sigs} == {}, target
