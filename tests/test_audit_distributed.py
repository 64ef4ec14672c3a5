"""The audit of sharded checkpoints: inputs, seeds from names, --out/--resume, dask clusters on loopback.

The checkpoint is written here: an index plus 3 safetensors shards of float32 and bfloat16 tensors.
Matrices hold at most 10000 entries, below every threshold where our kernels or OpenBLAS's dot
split work over threads, so the same computation gives the same bits in this process and in a
single-threaded dask worker; that is what the record-for-record equality relies on.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import threadpoolctl

from linalg_lowrank import _distributed, audit
from linalg_lowrank.audit import AuditRecord, CheckpointError, SkippedTensor

N_SHARDS = 3
#: Bounds of every wait in this module (a loaded 2-core machine).
WAIT_S = 60.0


@pytest.fixture(autouse=True, scope="module")
def _kernels_compiled():
    audit._warm_up({"float32", "float64"})


def _tensors(shard, rng):
    """Tensors of one shard: float32 and bfloat16 matrices of a few shapes, a stack, skipped ones."""
    out = {}
    for layer in range(4):
        m, n = [(64, 48), (96, 32), (40, 80), (72, 72)][layer]
        a = rng.standard_normal((m, n)) / np.sqrt(n)
        if layer % 2:
            out[f"model.layers.{shard}.{layer}.weight"] = ("BF16", audit._to_bf16_bits(a))
        else:
            out[f"model.layers.{shard}.{layer}.weight"] = ("F32", a)
    out[f"model.layers.{shard}.experts"] = ("F32", rng.standard_normal((3, 20, 16)))
    out[f"model.layers.{shard}.norm"] = ("F32", np.ones(16))
    out[f"model.layers.{shard}.step"] = ("I64", np.arange(4)[None, :])
    return out


def _decode(code, arr):
    """The values the audit sees: bfloat16 bits widened to float32 by the test's own shift."""
    if code == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(arr, dtype=np.float32)


def write_sharded(folder, *, extra=None, seed=0):
    """An index plus N_SHARDS shards; returns ``{name: (code, values)}`` of the indexed tensors."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map, everything = {}, {}
    for shard in range(N_SHARDS):
        fname = f"model-{shard + 1:05d}-of-{N_SHARDS:05d}.safetensors"
        tensors = _tensors(shard, rng)
        written = dict(tensors)
        if extra and shard == 0:
            written.update(extra)  # in the shard, not in the index
        audit._write_safetensors(os.path.join(folder, fname), written)
        for name, (code, arr) in tensors.items():
            weight_map[name] = fname
            everything[name] = (code, arr)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as fp:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, fp)
    return everything


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("sharded"))
    tensors = write_sharded(folder)
    return folder, tensors


def _params(seed=0):
    return {"seed": seed, "tol": audit.config.POWER_TOL, "maxiter": None, "conv": "flatten"}


def _comparable(result):
    """A record without its timing: what must agree bit for bit."""
    doc = result.to_dict()
    doc.pop("time_s", None)
    return doc


def _assert_same_records(there, here):
    """Worker records equal in-process ones: same fields, same integers and flags, floats to rounding.

    The seeds come from the names, so the same iterations run; a worker process may still take
    another BLAS or numba code path than the client (thread counts), which can move the last bits.
    """
    a, b = [_comparable(r) for r in there], [_comparable(r) for r in here]
    assert [sorted(d) for d in a] == [sorted(d) for d in b]
    for x, y in zip(a, b, strict=True):
        for key in x:
            u, v = x[key], y[key]
            if isinstance(u, float) and isinstance(v, float):
                assert abs(u - v) <= 16 * np.finfo(np.float64).eps * max(abs(u), abs(v)), (key, u, v)
            else:
                assert u == v, (key, u, v)


def _in_process(paths, **kwargs):
    tasks, _ = _distributed.plan_audit(paths)
    results, _ = _distributed.run_audit(tasks, **_params(), **kwargs)
    return tasks, results


# ----------------------------------------------------------------------------------------------
# Inputs and seeds (no cluster)
# ----------------------------------------------------------------------------------------------


def test_sharded_index_is_audited_against_numpy_svd(sharded):
    folder, tensors = sharded
    index = os.path.join(folder, "model.safetensors.index.json")
    tasks, results = _in_process([index])
    assert sorted(t.name for t in tasks) == sorted(tensors)  # every indexed tensor once, names from the index
    assert [t.file for t in tasks] == sorted(t.file for t in tasks)  # shards in order, each read once
    by_name = {r.name: r for r in results}
    for name, (code, arr) in tensors.items():
        r = by_name[name]
        if code == "I64" or np.ndim(arr) < 2:
            assert isinstance(r, SkippedTensor)
            continue
        values = _decode(code, arr).astype(np.float64)
        s = np.linalg.svd(values, compute_uv=False)
        top = s.max(axis=-1).max()
        # power iteration stops at relative residual tol; float32 products add ~ sqrt(n) eps32
        assert abs(r.spectral_norm - top) <= top * (1e-4 + 1e3 * np.finfo(np.float32).eps)
        assert r.dtype == ("bfloat16" if code == "BF16" else "float32")
    # the directory means its index: the same plan
    assert [t.key for t in _distributed.plan_audit([folder])[0]] == [t.key for t in tasks]


def test_record_seed_comes_from_the_tensor_name(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((30, 20))
    # two identical matrices under different names start from different vectors: the seed is per name
    path = str(tmp_path / "two.safetensors")
    audit._write_safetensors(path, {"first": ("F64", a), "second": ("F64", a)})
    (first, second), _ = audit.audit_checkpoint(path, tol=1e-3)
    for r in (first, second):
        ref = audit.power_iteration(a, rng=audit.tensor_seed(0, r.name), tol=1e-3)
        assert r.spectral_norm == float(ref.sigma) and r.ratio_estimate == float(ref.ratio_estimate)
    assert first.spectral_norm != second.spectral_norm  # loose tolerance: the start vector shows


def test_order_of_files_and_tensors_does_not_change_records(tmp_path, sharded):
    folder, _ = sharded
    shards = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".safetensors"))
    _, forward = _in_process(shards)
    _, backward = _in_process(shards[::-1])
    key = lambda r: r.name  # noqa: E731
    assert [_comparable(r) for r in sorted(forward, key=key)] == [_comparable(r) for r in sorted(backward, key=key)]


def test_index_guards(tmp_path):
    folder = str(tmp_path / "ckpt")
    write_sharded(folder, extra={"stray.weight": ("F32", np.eye(4))})
    index = os.path.join(folder, "model.safetensors.index.json")
    tasks, results = _in_process([index])
    stray = [r for r in results if r.name == "stray.weight"]
    assert len(stray) == 1 and stray[0].reason == "not listed in the index"
    doc = json.load(open(index))
    doc["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors"
    json.dump(doc, open(index, "w"))
    with pytest.raises(CheckpointError, match="'ghost.weight' in this shard, which does not hold it"):
        _distributed.plan_audit([index])
    doc["weight_map"] = {"x": "../outside.safetensors"}
    json.dump(doc, open(index, "w"))
    with pytest.raises(CheckpointError, match="outside the index's directory"):
        _distributed.plan_audit([folder])
    assert audit.main([folder, "--no-progress"]) == 2


def test_urls_without_fsspec_are_refused_with_a_clear_message(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec raises ImportError
    assert audit.main(["s3://bucket/model.safetensors.index.json", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "s3://bucket" in err and "needs fsspec" in err and err.count("\n") == 1


def _to_memory_fs(folder, prefix):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as fp:
            fs.pipe(f"{prefix}/{name}", fp.read())
    return fs


def test_fsspec_urls_give_the_local_records(sharded):
    folder, _ = sharded
    _to_memory_fs(folder, "/distaudit/ckpt")
    _, here = _in_process([folder])
    for url in ("memory://distaudit/ckpt", "memory://distaudit/ckpt/model.safetensors.index.json"):
        tasks, there = _in_process([url])
        assert all(t.file.startswith("memory://distaudit/ckpt/model-") for t in tasks)
        assert [_comparable(r) for r in there] == [_comparable(r) for r in here]
    _, local_url = _in_process(["file://" + folder])
    assert [_comparable(r) for r in local_url] == [_comparable(r) for r in here]


def test_hostile_file_behind_a_url_is_exit_2(tmp_path, capsys):
    folder = str(tmp_path / "bad")
    write_sharded(folder)
    shard = os.path.join(folder, "model-00002-of-00003.safetensors")
    with open(shard, "r+b") as fp:
        fp.truncate(os.path.getsize(shard) - 100)
    _to_memory_fs(folder, "/distaudit/bad")
    assert audit.main(["memory://distaudit/bad", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "memory://distaudit/bad/model-00002-of-00003.safetensors" in err and "past the end" in err


def test_directory_of_files_names_rows_by_file(tmp_path, capsys):
    np.save(tmp_path / "b.npy", np.diag([3.0, 1.0]))
    np.savez(tmp_path / "a.npz", w=np.diag([2.0, 1.0]))
    assert audit.main([str(tmp_path), "--json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = [(r["name"], round(r["spectral_norm"], 9)) for r in doc["records"]]
    assert names == [
        (os.path.join(str(tmp_path), "a.npz") + ":w", 2.0),
        (os.path.join(str(tmp_path), "b.npy") + ":b", 3.0),
    ]


# ----------------------------------------------------------------------------------------------
# --out / --resume
# ----------------------------------------------------------------------------------------------


def _lines(path):
    with open(path) as fp:
        docs = [json.loads(line) for line in fp]
    for doc in docs:
        doc.pop("time_s", None)
        doc.pop("worker", None)
    return docs


def _as_set(docs):
    return {json.dumps(doc, sort_keys=True) for doc in docs}


def test_resume_drops_a_cut_line_and_redoes_only_missing_tensors(tmp_path, sharded):
    folder, tensors = sharded
    clean = str(tmp_path / "clean.jsonl")
    assert audit.main([folder, "--out", clean, "--no-progress", "--json"]) == 0
    full = open(clean, "rb").read().splitlines(keepends=True)
    assert len(full) == len(tensors)
    cut = str(tmp_path / "cut.jsonl")
    with open(cut, "wb") as fp:
        fp.writelines(full[:5])
        fp.write(full[5][: len(full[5]) // 2])  # killed in the middle of a line
    assert audit.main([folder, "--out", cut, "--no-progress"]) == 2  # not empty: --resume or another file
    assert audit.main([folder, "--out", cut, "--resume", "--no-progress", "--json"]) == 0
    assert len(_lines(cut)) == len(tensors)
    assert _as_set(_lines(cut)) == _as_set(_lines(clean))
    assert audit.main([folder, "--out", cut, "--resume", "--seed", "1", "--no-progress"]) == 2  # other options


def test_killed_client_resumes_to_the_clean_records(tmp_path):
    folder = str(tmp_path / "big")
    os.makedirs(folder)
    rng = np.random.default_rng(3)
    for k in range(24):  # each tensor takes long enough to kill the run between two of them
        audit._write_safetensors(
            os.path.join(folder, f"t{k:02d}.safetensors"), {"w": ("F32", rng.standard_normal((500, 400)))}
        )
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def command(out, *extra):
        return [
            sys.executable,
            "-m",
            "linalg_lowrank",
            "audit",
            folder,
            "--out",
            out,
            "--no-progress",
            "--json",
            *extra,
        ]

    killed = str(tmp_path / "killed.jsonl")
    proc = subprocess.Popen(command(killed), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(killed) and open(killed, "rb").read().count(b"\n") >= 1:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=WAIT_S)
    done_at_kill = open(killed, "rb").read().count(b"\n")
    assert 1 <= done_at_kill < 24, "the run was not killed mid-way"
    subprocess.run(command(killed, "--resume"), cwd=cwd, env=env, check=True, timeout=WAIT_S * 2, capture_output=True)
    clean = str(tmp_path / "clean.jsonl")
    store = _distributed.ResultStore(clean, _params(), resume=False)
    try:
        with threadpoolctl.threadpool_limits(1):  # as in the subprocess: one BLAS thread, same bits
            _distributed.run_audit(_distributed.plan_audit([folder])[0], **_params(), store=store)
    finally:
        store.close()
    assert len(_lines(killed)) == 24
    assert _as_set(_lines(killed)) == _as_set(_lines(clean))


# ----------------------------------------------------------------------------------------------
# A LocalCluster of 2 worker processes on 127.0.0.1, shared by the tests below
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    with _distributed.cluster_client(workers=2) as c:
        c.wait_for_workers(2, timeout=WAIT_S)
        yield c


def test_distributed_equals_in_process_record_for_record(sharded, client):
    folder, _ = sharded
    tasks, here = _in_process([folder])
    results, summary = _distributed.run_audit(tasks, **_params(), client=client)
    _assert_same_records(results, here)
    assert "per worker" in summary
    limit, use_resource = _distributed._worker_memory(client)
    assert use_resource and limit > 0  # tasks claimed their memory estimate
    url_tasks, _ = _distributed.plan_audit(["file://" + folder])  # workers open the URL themselves
    url_results, _ = _distributed.run_audit(url_tasks, **_params(), client=client)
    _assert_same_records(url_results, here)


def test_tasks_claiming_over_half_a_worker_run_one_at_a_time_and_all_complete(tmp_path, client, monkeypatch):
    folder = str(tmp_path / "mem")
    write_sharded(folder)
    tasks, here = _in_process([folder])
    limit, _ = _distributed._worker_memory(client)
    # each tensor claims more than half a worker's declared memory: dask's resource accounting lets
    # a worker run one at a time, and none is refused (each fits alone)
    monkeypatch.setattr(_distributed, "_TASK_OVERHEAD_BYTES", limit // 2 + 1)
    results, _ = _distributed.run_audit(tasks, **_params(), client=client)
    _assert_same_records(results, here)


def test_distributed_through_the_command_line(sharded, client, capsys, tmp_path):
    folder, _ = sharded
    address = client.scheduler.address
    assert audit.main([folder, "--json", "--no-progress"]) == 0
    here = json.loads(capsys.readouterr().out)
    out = str(tmp_path / "r.jsonl")
    assert audit.main([folder, "--json", "--no-progress", "--scheduler", address, "--out", out]) == 0
    captured = capsys.readouterr()
    there = json.loads(captured.out)
    for doc in (here, there):
        for r in doc["records"]:
            r.pop("time_s")
    assert here == there
    assert "GB/s" in captured.err
    assert len(_lines(out)) == len(there["records"]) + len(there["skipped"])


def test_tensor_larger_than_worker_memory_is_skipped_not_sent(sharded, client):
    folder, _ = sharded
    tasks, _ = _distributed.plan_audit([folder])
    huge = _distributed.Task(tasks[0].file, "x", "huge", (1 << 20, 1 << 20), "float32", (0, 4 << 40), None, 4 << 40, 0)
    (result,), _ = _distributed.run_audit([huge], **_params(), client=client)
    assert isinstance(result, SkippedTensor) and "memory limit" in result.reason


def _error_line(capsys, argv):
    status = audit.main(argv)
    return status, capsys.readouterr().err.strip().splitlines()[-1]


def test_hostile_shard_same_exit_and_message_as_in_process(tmp_path, client, capsys):
    folder = str(tmp_path / "bad")
    write_sharded(folder)
    shard = os.path.join(folder, "model-00002-of-00003.safetensors")
    with open(shard, "r+b") as fp:
        fp.truncate(os.path.getsize(shard) - 100)
    here = _error_line(capsys, [folder, "--no-progress"])
    there = _error_line(capsys, [folder, "--no-progress", "--scheduler", client.scheduler.address])
    assert here[0] == there[0] == 2
    assert here[1] == there[1] and "model-00002-of-00003.safetensors" in here[1]


def test_corrupt_data_found_by_a_worker_same_message(tmp_path, client, capsys):
    # The header is sound and only the data is bad, so the worker is the one that finds out.
    path = str(tmp_path / "crc.npz")
    np.savez(path, a=np.eye(8), b=np.ones((9, 7)))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("b.npy")
    with open(path, "r+b") as fp:
        fp.seek(info.header_offset + 30 + len(info.filename) + len(info.extra) + 200)
        fp.write(b"\x7f")
    here = _error_line(capsys, [path, "--no-progress", "--out", str(tmp_path / "a.jsonl")])
    there = _error_line(capsys, [path, "--no-progress", "--scheduler", client.scheduler.address])
    assert here[0] == there[0] == 2
    assert here[1] == there[1] and "CRC-32" in here[1]


def test_file_changed_after_planning_is_an_error_from_the_worker(tmp_path, client):
    folder = str(tmp_path / "moving")
    write_sharded(folder)
    tasks, _ = _distributed.plan_audit([folder])
    shard = os.path.join(folder, "model-00003-of-00003.safetensors")
    with open(shard, "r+b") as fp:
        fp.truncate(os.path.getsize(shard) // 2)
    with pytest.raises(CheckpointError) as there:
        _distributed.run_audit(tasks, **_params(), client=client)
    with pytest.raises(CheckpointError) as here:
        _distributed.run_audit(tasks, **_params())
    assert str(there.value) == str(here.value) and shard in str(here.value)
    # rewritten with other tensors: the planned entry is gone, for the worker and in this process
    audit._write_safetensors(shard, {"other.weight": ("F32", np.eye(3))})
    # (which tensor is named depends on which task finishes first, so only the file is compared)
    pattern = f"^{re.escape(shard)}: tensor '[^']+' changed since its header was read$"
    with pytest.raises(CheckpointError, match=pattern):
        _distributed.run_audit(tasks, **_params(), client=client)
    with pytest.raises(CheckpointError, match=pattern):
        _distributed.run_audit(tasks, **_params())


def test_killed_worker_reruns_its_tasks_every_tensor_once(sharded, client, tmp_path):
    folder, _ = sharded
    tasks, here = _in_process([folder])
    killed = []

    computed = [0]

    def kill_one_worker(task, n_done):
        if task.reason is not None:
            return  # skipped by its header: never sent to a worker
        computed[0] += 1
        if not killed:
            pids = client.run(os.getpid)
            address, pid = sorted(pids.items())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append((address, computed[0]))

    out = str(tmp_path / "k.jsonl")
    store = _distributed.ResultStore(out, _params(), resume=False)
    try:
        results, _ = _distributed.run_audit(tasks, **_params(), client=client, store=store, on_result=kill_one_worker)
    finally:
        store.close()
    assert killed and killed[0][1] < sum(t.reason is None for t in tasks)  # killed before the end
    _assert_same_records(results, here)
    lines = _lines(out)
    assert len(lines) == len(tasks)  # every tensor exactly once
    assert sorted(d["name"] for d in lines) == sorted(t.name for t in tasks)
    assert all(isinstance(r, AuditRecord | SkippedTensor) for r in results)
