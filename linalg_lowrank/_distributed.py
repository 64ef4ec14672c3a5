"""The audit of many files: inputs, resumable results (``--out``/``--resume``) and dask clusters.

What is audited (`plan_audit`): files, directories (every checkpoint file in them, sorted; or the
Hugging Face index they hold), sharded Hugging Face checkpoints (``*.index.json`` whose
``weight_map`` names the shards: each shard is read once, the tensors are the index's) and several
of these. The client parses the headers only; the plan is a list of `Task` (file, name, shape,
dtype, the byte span of the header entry), small enough to send anywhere.

How it runs (`run_audit`): in this process, tensor by tensor in file order; or on a
``dask.distributed`` cluster (``--workers N`` starts a `LocalCluster` on this machine,
``--scheduler``/``--scheduler-file`` joins an existing one), one task per tensor, largest first.
A worker receives the `Task`, opens the file itself through the same hardened readers
(`linalg_lowrank._readers`), checks that the entry is still the one the client planned, reads
that tensor's bytes only and runs the same per-tensor computation as the in-process audit
(`linalg_lowrank.audit._audit_entry`), whose seed comes from the tensor's name. Matrices never
travel; results (a few numbers) do. dask is imported only here, only when a cluster is asked for.

Results (`ResultStore`): with ``--out`` every tensor's record is appended as one JSON line as it
completes (flushed and fsynced); ``--resume`` skips the tensors already recorded, keyed by file,
name, shape, dtype and byte span, after dropping a last line cut short by a kill.
"""

import contextlib
import json
import math
import os
import posixpath
import sys
import time
import uuid
from dataclasses import dataclass, fields

from ._readers import (
    _EXTENSIONS,
    CheckpointError,
    _open_checkpoint,
    _parse_json_header,
    _regular_file_stat,
    _url_filesystem,
    is_url,
)

__all__ = ["ClusterError", "ResultStore", "Task", "plan_audit", "run_audit"]

#: Suffix of a Hugging Face sharded checkpoint's index (``model.safetensors.index.json``).
INDEX_SUFFIX = ".index.json"
#: The index preferred when a directory holds several (the safetensors one, then any other).
_PREFERRED_INDEX = "model.safetensors.index.json"
#: Largest index file read (an index names shards and tensors: a few MB for the largest models).
_MAX_INDEX_BYTES = 64 << 20
#: Memory of a tensor's task beyond its stored bytes and its float32/float64 copy (scratch of the
#: Frobenius sum, power-iteration vectors, the interpreter's slack).
_TASK_OVERHEAD_BYTES = 64 << 20
_REASON_NOT_IN_INDEX = "not listed in the index"
#: The dask worker resource (bytes) a task claims with its memory estimate, when every worker
#: declares it: ``--workers`` does, and ``dask worker --resources MEMORY=16e9`` on a cluster.
MEMORY_RESOURCE = "MEMORY"


class ClusterError(RuntimeError):
    """The dask cluster failed (a task's workers died repeatedly, the scheduler went away, ...)."""


@dataclass(frozen=True)
class Task:
    """One tensor of the plan: what a worker needs to find, check and read it (never its data)."""

    file: str  # absolute path
    label: str  # how the file is named in the report
    name: str
    shape: tuple
    dtype: str
    span: tuple | None  # (offset, nbytes) of the header entry's bytes
    reason: str | None  # why it is skipped (known from the header), None if it is computed
    nbytes: int  # bytes read to audit it (0 if skipped)
    index: int  # position in the plan (file order)

    @property
    def key(self):
        """What identifies the tensor in ``--out``: file, name, shape, dtype and byte span."""
        return (self.file, self.name, tuple(self.shape), self.dtype, None if self.span is None else tuple(self.span))


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def is_many(path):
    """Whether ``path`` may name more than one file: a directory, an index or a URL."""
    path = os.fsdecode(os.fspath(path))
    return is_url(path) or path.endswith(INDEX_SUFFIX) or os.path.isdir(path)


def _read_small(path, cap):
    """The bytes of a small file (an index), local or a URL, at most ``cap``."""
    if is_url(path):
        fs, remote = _url_filesystem(path)
        if fs is not None:
            try:
                size = fs.size(remote)
                if size is not None and size > cap:
                    raise CheckpointError(path, f"index of {size} bytes, more than {cap}")
                return fs.cat_file(remote, start=0, end=cap + 1)
            except CheckpointError:
                raise
            except FileNotFoundError:
                raise CheckpointError(path, "no such file") from None
            except Exception as exc:
                raise CheckpointError(path, f"cannot read ({type(exc).__name__}: {exc})") from None
        path = remote
    st = _regular_file_stat(path)
    if st.st_size > cap:
        raise CheckpointError(path, f"index of {st.st_size} bytes, more than {cap}")
    try:
        with open(path, "rb") as fp:
            return fp.read(cap + 1)
    except OSError as exc:
        raise CheckpointError(path, exc.strerror or str(exc)) from None


def _url_directory(url):
    """Whether ``url`` names a directory (of a remote file system)."""
    fs, remote = _url_filesystem(url)
    if fs is None:
        return os.path.isdir(remote)
    try:
        return fs.isdir(remote)
    except Exception as exc:
        raise CheckpointError(url, f"cannot read ({type(exc).__name__}: {exc})") from None


def _list_directory(path):
    if not is_url(path):
        return sorted(os.listdir(path)), lambda name: os.path.join(path, name), os.path.isfile
    fs, remote = _url_filesystem(path)
    if fs is None:
        return _list_directory(remote)
    base = path.rstrip("/")
    try:
        names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(remote, detail=False))
    except Exception as exc:
        raise CheckpointError(path, f"cannot list ({type(exc).__name__}: {exc})") from None
    return names, lambda name: f"{base}/{name}", lambda _: True


def _read_index(path):
    """``{shard file: [tensor names]}`` of a Hugging Face index, shards in sorted order."""
    raw = _read_small(path, _MAX_INDEX_BYTES)
    doc = _parse_json_header(path, raw)  # the readers' guards: depth and integer length bounded
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(path, "not a checkpoint index: expected an object with a non-empty 'weight_map'")
    url = is_url(path)
    folder = path.rsplit("/", 1)[0] if url else os.path.dirname(os.path.abspath(path))
    shards = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise CheckpointError(path, f"weight_map[{name!r}] is {shard!r}, expected a shard file name")
        parts = shard.replace("\\", "/").split("/")
        if os.path.isabs(shard) or ".." in parts:
            # An index is data from the download: it may name files next to it, nothing else.
            raise CheckpointError(path, f"weight_map[{name!r}] names {shard!r}, outside the index's directory")
        shards.setdefault(f"{folder}/{shard}" if url else os.path.join(folder, shard), []).append(name)
    return dict(sorted(shards.items()))


def _directory_inputs(path):
    names, join, is_file = _list_directory(path)
    indexes = [n for n in names if n.endswith(INDEX_SUFFIX)]
    if indexes:
        # A Hugging Face folder often holds the same weights twice (safetensors and .bin shards):
        # its index says which files make the checkpoint.
        chosen = _PREFERRED_INDEX if _PREFERRED_INDEX in indexes else indexes[0]
        return [(join(chosen), True)]
    files = [n for n in names if os.path.splitext(n)[1].lower() in _EXTENSIONS and is_file(join(n))]
    if not files:
        raise CheckpointError(path, "a directory without checkpoint files (.npz, .npy, .safetensors, .pt, ...)")
    return [(join(n), False) for n in files]


def _sources(paths):
    """``[(file, label, names or None)]``: the files to read, each once, and the tensors wanted."""
    out, seen = [], set()
    for path in paths:
        path = os.fsdecode(os.fspath(path))
        directory = _url_directory(path) if is_url(path) else os.path.isdir(path)
        inputs = _directory_inputs(path) if directory else [(path, path.endswith(INDEX_SUFFIX))]
        for item, is_index in inputs:
            if is_index:
                shards = _read_index(item)
                for shard, names in shards.items():
                    out.append((shard, shard, names))
            else:
                out.append((item, item, None))
    files = []
    for file, label, names in out:
        key = file if is_url(file) else os.path.abspath(file)
        if key in seen:
            continue  # a file named twice is audited once
        seen.add(key)
        files.append((key, label, names))
    return files


def plan_audit(paths, *, max_bytes=None):
    """The tasks of an audit of ``paths``, in file order, from the files' headers only.

    Parameters
    ----------
    paths : list of str
        Files, directories and ``*.index.json`` files.
    max_bytes : int, optional
        The readers' cap on one tensor (see `linalg_lowrank.audit.read_tensors`).

    Returns
    -------
    tasks : list of Task
    labelled : bool
        Whether names should show their file (several files that are not the shards of one index).

    Raises
    ------
    CheckpointError
        For a missing, malformed or hostile file or index, or an index naming a tensor its shard
        does not hold.
    """
    sources = _sources(paths)
    tasks = []
    for file, label, wanted in sources:
        with _open_checkpoint(file, max_bytes) as entries:
            present = {entry.name for entry in entries}
            if wanted is not None:
                missing = [name for name in wanted if name not in present]
                if missing:
                    raise CheckpointError(
                        file, f"the index names tensor {missing[0]!r} in this shard, which does not hold it"
                    )
                wanted = set(wanted)
            for entry in entries:
                reason = entry.reason
                if wanted is not None and entry.name not in wanted:
                    reason = reason or _REASON_NOT_IN_INDEX
                nbytes = 0 if reason is not None or entry.span is None else int(entry.span[1])
                tasks.append(
                    Task(
                        file, label, entry.name, tuple(entry.shape), entry.dtype, entry.span, reason, nbytes, len(tasks)
                    )
                )
    labelled = len(sources) > 1 and not all(names is not None for _, _, names in sources)
    return tasks, labelled


# ----------------------------------------------------------------------------------------------
# Results: one JSON line per tensor
# ----------------------------------------------------------------------------------------------


def _line(task, result, params, worker=None):
    from .audit import AuditRecord

    doc = {"file": task.file, "span": None if task.span is None else list(task.span), "params": params}
    doc.update(result.to_dict())
    doc["status"] = "audited" if isinstance(result, AuditRecord) else "skipped"
    if worker is not None:
        doc["worker"] = worker
    return doc


def _from_line(doc):
    """The `AuditRecord` or `SkippedTensor` of a JSON line."""
    from .audit import AuditRecord, SkippedTensor

    if doc["status"] == "skipped":
        return SkippedTensor(doc["name"], tuple(doc["shape"]), doc["dtype"], doc["reason"])
    values = {}
    for f in fields(AuditRecord):
        if f.name == "spectrum":  # to_dict leaves it out when absent
            values[f.name] = doc.get("spectrum")
            continue
        value = doc[f.name]
        if f.name in ("shape", "stack_index") and value is not None:
            value = tuple(value)
        elif value is None and f.name not in ("stack_index",):
            value = math.nan  # to_dict wrote NaN as null
        values[f.name] = value
    return AuditRecord(**values)


def _line_key(doc):
    span = doc.get("span")
    return (doc["file"], doc["name"], tuple(doc["shape"]), doc["dtype"], None if span is None else tuple(span))


class ResultStore:
    """``--out``: an append-only JSON-lines file, one line per tensor, flushed and fsynced.

    With ``resume``, the lines already there are loaded (a last line without its newline, cut by
    a kill, is dropped and the file truncated to the last whole line); otherwise the file must be
    absent or empty, so no run mixes its records with another's.
    """

    def __init__(self, path, params, *, resume):
        self.path = os.fspath(path)
        self.params = params
        self.done = {}
        exists = os.path.exists(self.path)
        if exists and not resume and os.path.getsize(self.path) > 0:
            raise CheckpointError(self.path, "exists and is not empty: pass --resume to continue it, or remove it")
        if exists and resume:
            self._load()
        try:
            self.fp = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise CheckpointError(self.path, exc.strerror or str(exc)) from None

    def _load(self):
        with open(self.path, "rb") as fp:
            data = fp.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as fp:  # the line a kill cut short: gone, its tensor redone
                fp.truncate(end)
                os.fsync(fp.fileno())
        for number, raw in enumerate(data[:end].splitlines(), 1):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw.decode("utf-8"))
                key = _line_key(doc)
                _from_line(doc)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CheckpointError(self.path, f"line {number} is not an audit record ({exc})") from None
            if doc.get("params") != self.params:
                raise CheckpointError(
                    self.path,
                    f"line {number} was written with other options ({doc.get('params')}, now {self.params}): "
                    "resume with the same --seed, --tol, --maxiter and --conv, or use another --out",
                )
            self.done[key] = doc

    def append(self, doc):
        self.fp.write(json.dumps(doc, allow_nan=False) + "\n")
        self.fp.flush()
        os.fsync(self.fp.fileno())
        self.done[_line_key(doc)] = doc

    def close(self):
        self.fp.close()


# ----------------------------------------------------------------------------------------------
# Running the plan
# ----------------------------------------------------------------------------------------------


def _audit_task(task, params, max_bytes):
    """On a worker: open the file, check the planned entry is there unchanged, audit it.

    Returns ``("ok", line)`` or ``("error", path, problem)``: a reader error travels as values, so
    the client raises the very `CheckpointError` (same message) the in-process audit would.
    """
    from .audit import _audit_entry, _warm_up

    try:
        _warm_up(set() if task.reason is not None else {task.dtype})
        with _open_checkpoint(task.file, max_bytes) as entries:
            entry = next((e for e in entries if e.name == task.name and e.span == task.span), None)
            if entry is None or tuple(entry.shape) != tuple(task.shape) or entry.dtype != task.dtype:
                raise CheckpointError(task.file, f"tensor {task.name!r} changed since its header was read")
            result = _audit_entry(entry, **params)
    except CheckpointError as exc:
        return ("error", exc.path, exc.problem)
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = None
    return ("ok", _line(task, result, params, worker))


def _memory_estimate(task):
    """Bytes a worker needs for ``task``: the stored bytes, the float32/float64 copy, overhead."""
    numel = math.prod(task.shape)
    compute = 8 if task.dtype in ("float64",) else 4
    return task.nbytes + numel * compute + _TASK_OVERHEAD_BYTES


def _bytes_str(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


class _Progress:
    """Tensors done and bytes per second on stderr (a tqdm bar over bytes), and the summary."""

    def __init__(self, tasks, show):
        self.total_bytes = sum(t.nbytes for t in tasks)
        self.n = len(tasks)
        self.start = time.perf_counter()
        self.bytes_done = 0
        self.by_worker = {}
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total_bytes, unit="B", unit_scale=True, desc="audit", file=sys.stderr, leave=False
            )

    def update(self, task, worker):
        self.bytes_done += task.nbytes
        if task.nbytes:
            self.by_worker[worker] = self.by_worker.get(worker, 0) + task.nbytes
        if self.bar is not None:
            self.bar.set_postfix_str(f"{task.index + 1}/{self.n} tensors", refresh=False)
            self.bar.update(task.nbytes)

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def summary(self, n_records, n_skipped, n_resumed):
        seconds = time.perf_counter() - self.start
        text = (
            f"audit: {n_records} tensors audited, {n_skipped} skipped"
            + (f", {n_resumed} taken from --out" if n_resumed else "")
            + f"; {_bytes_str(self.bytes_done)} read in {seconds:.1f} s"
            + f" ({self.bytes_done / 1e9 / max(seconds, 1e-9):.3g} GB/s)"
        )
        workers = {w: b for w, b in self.by_worker.items() if w is not None}
        if workers and self.bytes_done:
            shares = ", ".join(f"{w} {100 * b / self.bytes_done:.0f}%" for w, b in sorted(workers.items()))
            text += f"; per worker: {shares}"
        return text


@contextlib.contextmanager
def cluster_client(*, workers=None, scheduler=None, scheduler_file=None):
    """A ``distributed.Client``: of a new `LocalCluster` of ``workers`` processes, or of a scheduler.

    Security (TLS) and communication settings are dask's own configuration (``distributed.comm``
    in dask's YAML files or ``DASK_DISTRIBUTED__COMM__...`` variables), which both the Client and
    the LocalCluster read; a scheduler file written by ``dask scheduler --scheduler-file`` carries
    the address.
    """
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("--workers/--scheduler need dask.distributed: pip install 'linalg_lowrank[dask]'") from None
    with contextlib.ExitStack() as stack:
        if workers is not None:
            from distributed.system import MEMORY_LIMIT

            per_worker = max(1, int(MEMORY_LIMIT) // workers)
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                    memory_limit=per_worker,
                    resources={MEMORY_RESOURCE: per_worker},
                )
            )
            client = stack.enter_context(Client(cluster))
        elif scheduler_file is not None:
            client = stack.enter_context(Client(scheduler_file=os.fspath(scheduler_file), timeout="30s"))
        else:
            client = stack.enter_context(Client(scheduler, timeout="30s"))
        yield client


def _worker_memory(client):
    """``(limit, use_resource)``: the most memory one task may get (bytes, None when unknown or
    unlimited), and whether every worker declares the `MEMORY_RESOURCE` tasks can claim."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # older distributed
        info = client.scheduler_info()
    workers = list(info.get("workers", {}).values())
    declared = [(w.get("resources") or {}).get(MEMORY_RESOURCE) for w in workers]
    if workers and all(declared):
        return max(declared), True
    limits = [w.get("memory_limit") or 0 for w in workers]
    return (max(limits) if limits and all(limits) else None), False


def run_audit(
    tasks,
    *,
    seed,
    tol,
    maxiter,
    conv,
    max_bytes=None,
    store=None,
    client=None,
    progress=False,
    on_result=None,
):
    """Audit the planned tensors, in this process or on ``client``'s cluster.

    Parameters
    ----------
    tasks : list of Task
        From `plan_audit`.
    seed, tol, maxiter, conv : as in `linalg_lowrank.audit.audit_checkpoint`
    max_bytes : int, optional
        The readers' cap, applied where the tensor is read.
    store : ResultStore, optional
        Where each result is appended as it completes; tensors already in it are not redone.
    client : distributed.Client, optional
        Run on its cluster: one task per tensor, largest first; None: in this process.
    progress : bool, optional
        A progress bar over bytes on stderr.
    on_result : callable, optional
        Called as ``on_result(task, n_done)`` after each result (tests kill workers from it).

    Returns
    -------
    results : list
        `AuditRecord` or `SkippedTensor` per task, in plan order.
    summary : str
        One line: tensors, GB, time, GB/s, per-worker share.

    Raises
    ------
    CheckpointError
        For a hostile or changed file, with the message the in-process reader gives.
    ClusterError
        If the cluster fails.
    """
    from .audit import SkippedTensor

    params = {"seed": seed, "tol": tol, "maxiter": maxiter, "conv": conv}
    results = [None] * len(tasks)
    pending = []
    n_resumed = 0
    for task in tasks:
        doc = None if store is None else store.done.get(task.key)
        if doc is not None:
            results[task.index] = _from_line(doc)
            n_resumed += 1
        else:
            pending.append(task)
    bar = _Progress(pending, progress)
    n_done = 0

    def finish(task, doc):
        nonlocal n_done
        results[task.index] = _from_line(doc)
        if store is not None:
            store.append(doc)
        n_done += 1
        bar.update(task, doc.get("worker"))
        if on_result is not None:
            on_result(task, n_done)

    try:
        if client is None:
            _run_here(pending, params, max_bytes, finish)
        else:
            known = [t for t in pending if t.reason is not None]  # skipped by their header: no data to read
            for task in known:
                finish(task, _line(task, SkippedTensor(task.name, task.shape, task.dtype, task.reason), params))
            compute = [t for t in pending if t.reason is None]
            _run_on_cluster(client, compute, params, max_bytes, finish)
    finally:
        bar.close()
    n_skipped = sum(isinstance(r, SkippedTensor) for r in results)
    return results, bar.summary(len(results) - n_skipped, n_skipped, n_resumed)


def _run_here(pending, params, max_bytes, finish):
    from .audit import SkippedTensor as skipped
    from .audit import _audit_entry as audit_entry
    from .audit import _warm_up as warm_up

    by_file = {}
    for task in pending:
        by_file.setdefault(task.file, []).append(task)
    for file, tasks in by_file.items():
        wanted = {(t.name, t.span): t for t in tasks}
        with _open_checkpoint(file, max_bytes) as entries:
            warm_up({t.dtype for t in tasks if t.reason is None})
            for entry in entries:
                task = wanted.get((entry.name, entry.span))
                if task is None:
                    continue
                if task.reason is not None:  # the header's reason, or not in the index
                    result = skipped(task.name, task.shape, task.dtype, task.reason)
                else:
                    result = audit_entry(entry, **params)
                finish(task, _line(task, result, params))
                del wanted[(entry.name, entry.span)]
        if wanted:  # the file was rewritten since it was planned: as a worker says it
            task = min(wanted.values(), key=lambda t: t.index)
            raise CheckpointError(file, f"tensor {task.name!r} changed since its header was read")


def _run_on_cluster(client, tasks, params, max_bytes, finish):
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    from .audit import SkippedTensor

    limit, use_resource = _worker_memory(client)
    runnable = []
    for task in tasks:
        need = _memory_estimate(task)
        if limit is not None and need > limit:
            reason = f"needs about {need} bytes, more than a worker's memory limit ({limit} bytes)"
            finish(task, _line(task, SkippedTensor(task.name, task.shape, task.dtype, reason), params))
        else:
            runnable.append(task)
    # Largest first: the long tensors start at once, the small ones fill the gaps at the end.
    runnable.sort(key=lambda t: (-t.nbytes, t.index))
    token = uuid.uuid4().hex[:12]
    futures = {}
    for rank, task in enumerate(runnable):
        future = client.submit(
            _audit_task,
            task,
            params,
            max_bytes,
            key=f"linalg-lowrank-audit-{token}-{task.index}",
            pure=False,
            priority=len(runnable) - rank,
            # a worker runs tasks together only while their estimates fit in what it declared
            resources={MEMORY_RESOURCE: _memory_estimate(task)} if use_resource else None,
        )
        futures[future] = task
    try:
        for future in as_completed(list(futures)):
            task = futures[future]
            try:
                outcome = future.result()
            except FutureCancelledError:
                raise ClusterError(f"the task of tensor {task.name!r} was cancelled") from None
            except Exception as exc:  # KilledWorker, CommClosedError, ...: the cluster's, not the file's
                raise ClusterError(f"tensor {task.name!r}: {type(exc).__name__}: {exc}") from None
            if outcome[0] == "error":
                raise CheckpointError(outcome[1], outcome[2])
            finish(task, outcome[1])
    finally:
        client.cancel(list(futures), force=True)


def audit_command(
    paths, *, seed, tol, maxiter, conv, max_bytes, out, resume, workers, scheduler, scheduler_file, progress
):
    """The command line's audit of ``paths`` with the options of this module.

    Returns ``(records, skipped, summary)``: records and skipped tensors in plan order, names
    prefixed with their file when several files that are not one index's shards are audited.
    """
    from dataclasses import replace

    from .audit import SkippedTensor

    tasks, labelled = plan_audit(paths, max_bytes=max_bytes)
    params = {"seed": seed, "tol": tol, "maxiter": maxiter, "conv": conv}
    with contextlib.ExitStack() as stack:
        store = None
        if out is not None:
            store = ResultStore(out, params, resume=resume)
            stack.callback(store.close)
        client = None
        if workers is not None or scheduler is not None or scheduler_file is not None:
            client = stack.enter_context(
                cluster_client(workers=workers, scheduler=scheduler, scheduler_file=scheduler_file)
            )
        results, summary = run_audit(
            tasks, **params, max_bytes=max_bytes, store=store, client=client, progress=progress
        )
    records, skipped = [], []
    for task, result in zip(tasks, results, strict=True):
        if labelled:
            result = replace(result, name=f"{task.label}:{result.name}")
        (skipped if isinstance(result, SkippedTensor) else records).append(result)
    return records, skipped, summary
