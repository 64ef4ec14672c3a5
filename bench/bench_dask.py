"""dask family: spectral_norm and randomized_svd of dask arrays on a 2-process LocalCluster.

Targets (issue "Beyond one machine"), measured as ratios in one run:
- spectral_norm of a 16384 x 16384 float32 dask array (1 GiB, 2048-row chunks): relative error at
  most 1e-6, at least 3x faster than ``dask.array.linalg.svd_compressed(k=1)`` with
  ``n_power_iter`` raised until it reaches the same accuracy, and at most 1.5x the time of the
  in-memory numpy path on the same machine (the engine's overhead);
- randomized_svd of a 200000 x 1000 float64 dask array at rank 20: error within 1.01x of the
  optimal (Eckart-Young, from dask's exact tall-and-skinny SVD), and no slower than
  ``svd_compressed`` at equal error.
- out-of-core: an 8 GiB float32 .npy (written to /tmp, deleted after) with the measuring process
  under RLIMIT_AS 3 GiB: spectral_norm to 1e-6, passes, peak RSS, time per pass over a plain
  sequential read of the same file in the same process (the file's page cache dropped first with
  posix_fadvise, no root needed; later passes find it partly cached, as the reads beside them do);
  block Lanczos (what ``method="auto"`` takes for such a file) beside the single-vector engine
  (``method="lanczos"``) on the same file: passes and seconds;
- the audit of a bf16 sharded checkpoint shaped like a 3B decoder (6.4 GB in /tmp, deleted after):
  in-process vs ``--workers 2``, wall and CPU seconds, beside cold and cached reads of the shards.
The three spectral_norm paths (numpy in memory, the cluster, dask threaded scheduler) run
interleaved, one warm-up each, and the load average is recorded beside them.
``--quick`` runs 4096 x 4096 (512-row chunks) and 20000 x 500. The cluster listens on 127.0.0.1
only and is closed at the end.
"""

import contextlib
import os
import time

import numpy as np

import linalg_lowrank as ll

from ._harness import interleaved

FAMILY = "dask"


def _cluster():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    return cluster, Client(cluster)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


#: Largest ``n_power_iter`` of the svd_compressed ladder (``BENCH_DASK_ANCHOR_MAX_Q``; 0 skips the
#: anchor, whose q=64 rung alone takes a minute on 2 cores and still misses 1e-6).
ANCHOR_MAX_Q = int(os.environ.get("BENCH_DASK_ANCHOR_MAX_Q", "64"))
#: Rounds of the interleaved spectral_norm timings (``BENCH_DASK_REPEAT``).
REPEAT = int(os.environ.get("BENCH_DASK_REPEAT", "3"))


def _load():
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _spectral(report, quick):
    import dask
    import dask.array as da

    n, rows = (4096, 512) if quick else (16384, 2048)
    case = f"spectral_norm {n}^2 f32 chunks {rows}"
    A = da.random.default_rng(0).standard_normal((n, n), chunks=(rows, n)).astype(np.float32).persist()
    local = A.compute()
    on_threads = da.from_array(local, chunks=(rows, n))  # the same blocks, for the default threaded scheduler
    truth = ll.power_iteration(local, tol=1e-12, rng=1).sigma  # residual 1e-12: sigma to ~1e-20
    ll.spectral_norm(local[:64, :64], rng=0)  # compile outside the timings
    answers = {}

    def run(name, M, scheduler=None):
        def call():
            with dask.config.set(scheduler=scheduler) if scheduler else contextlib.nullcontext():
                answers[name] = ll.spectral_norm(M, rng=0)

        return call

    load_before = _load()
    # interleaved: a burst of load from the other users of the machine hits every contender alike
    times = interleaved(
        {
            "numpy": run("numpy", local),
            "cluster": run("cluster", A),
            "threads": run("threads", on_threads, "threads"),
        },
        repeat=2 if quick else REPEAT,
        warmup=1,
    )
    load = f"{load_before} -> {_load()}"
    err = abs(answers["cluster"] - truth) / truth
    t_mem = report.row(FAMILY, case, "ours (numpy in memory)", times["numpy"], load=load)
    t_ours = report.row(
        FAMILY,
        case,
        "ours (dask, 2 processes)",
        times["cluster"],
        rel_error=err,
        vs_numpy=abs(answers["cluster"] - answers["numpy"]) / truth,
    )
    t_threads = report.row(
        FAMILY,
        case,
        "ours (dask, threads)",
        times["threads"],
        rel_error=abs(answers["threads"] - truth) / truth,
        vs_numpy=abs(answers["threads"] - answers["numpy"]) / truth,
    )
    t_anchor, it = None, None
    for it in (q for q in (2, 4, 8, 16, 32, 64) if q <= ANCHOR_MAX_Q):
        (_, s, _), t = _timed(
            lambda it=it: da.compute(*da.linalg.svd_compressed(A, k=1, n_power_iter=it, iterator="QR", seed=0))
        )
        anchor_err = abs(float(s[0]) - truth) / truth
        report.row(FAMILY, case, f"svd_compressed k=1 q={it}", t, rel_error=anchor_err, load=_load())
        t_anchor = t
        if anchor_err <= max(err, 1e-6):
            break
    report.target(FAMILY, f"{case}: relative error", err, 1e-6, higher_is_better=False, unit="")
    if t_anchor is not None:
        report.target(
            FAMILY, f"{case}: speed-up over svd_compressed at equal accuracy (q={it})", t_anchor / t_ours, 3.0
        )
    report.target(FAMILY, f"{case}: time over the in-memory path", t_ours / t_mem, 1.5, higher_is_better=False)
    report.target(
        FAMILY,
        f"{case}: time over the in-memory path (threaded scheduler)",
        t_threads / t_mem,
        1.5,
        higher_is_better=False,
    )


def _randomized(report, quick):
    import dask.array as da

    m, n, rows = (20000, 500, 5000) if quick else (200000, 1000, 25000)
    r = 20
    case = f"randomized_svd {m}x{n} f64 rank {r}"
    rng = da.random.default_rng(2)
    # a decaying signal of rank 60 plus a small noise floor, generated on the workers
    signal = (rng.standard_normal((m, 60), chunks=(rows, 60)) * (0.8 ** np.arange(60))) @ rng.standard_normal((60, n))
    A = (signal + 1e-3 * rng.standard_normal((m, n), chunks=(rows, n))).persist()
    s_all = da.linalg.svd(A)[1].compute()
    optimal = float(np.sqrt(np.sum(s_all[r:] ** 2)))

    ll.randomized_svd(A[: 2 * rows], r, rng=0)  # the workers load their kernels outside the timing
    res, t_ours = _timed(lambda: ll.randomized_svd(A, r, rng=0))
    err = float(np.linalg.norm((A - (res.U * res.s) @ res.Vt).astype(np.float64)).compute())
    report.row(FAMILY, case, "ours", t_ours, error_ratio=err / optimal)
    t_anchor = None
    for it in (0, 1, 2, 3, 4, 6):
        (U, s, Vt), t = _timed(
            lambda it=it: da.compute(*da.linalg.svd_compressed(A, k=r, n_power_iter=it, iterator="QR", seed=0))
        )
        anchor_err = float(np.linalg.norm((A - (U * s) @ Vt).astype(np.float64)).compute())
        report.row(FAMILY, case, f"svd_compressed q={it}", t, error_ratio=anchor_err / optimal)
        t_anchor = t
        if anchor_err <= err:
            break
    report.target(FAMILY, f"{case}: error over optimal", err / optimal, 1.01, higher_is_better=False)
    report.target(FAMILY, f"{case}: svd_compressed time at equal error over ours", t_anchor / t_ours, 1.0)


#: A proportionally smaller audit when the full 6.4 GB one takes too long on a loaded machine:
#: ``BENCH_DASK_AUDIT_LAYERS`` decoder layers (of 28) and ``BENCH_DASK_AUDIT_VOCAB`` (of 128256).
AUDIT_LAYERS = os.environ.get("BENCH_DASK_AUDIT_LAYERS")
AUDIT_VOCAB = os.environ.get("BENCH_DASK_AUDIT_VOCAB")


#: ``BENCH_DASK_PARTS``: a comma-separated subset of ``cluster`` (the spectral_norm and
#: randomized_svd rows on a LocalCluster), ``out-of-core`` and ``audit``; all three by default.
PARTS = ("cluster", "out-of-core", "audit")


def _parts():
    chosen = [p.strip() for p in os.environ.get("BENCH_DASK_PARTS", ",".join(PARTS)).split(",") if p.strip()]
    unknown = set(chosen) - set(PARTS)
    if unknown:
        raise ValueError(f"BENCH_DASK_PARTS: unknown parts {sorted(unknown)}; known: {list(PARTS)}")
    return chosen


def run(report, quick):
    parts = _parts()
    if "cluster" in parts:
        cluster, client = _cluster()
        try:
            _spectral(report, quick)
            _randomized(report, quick)
        finally:
            client.close()
            cluster.close()
    if "out-of-core" in parts:
        _out_of_core(report, quick)
    if "audit" in parts:
        _audit(
            report,
            quick,
            layers=None if AUDIT_LAYERS is None else int(AUDIT_LAYERS),
            vocab=None if AUDIT_VOCAB is None else int(AUDIT_VOCAB),
        )


# ----------------------------------------------------------------------------------------------
# Out-of-core: a float32 .npy on disk, larger than the memory the measuring process may use
# ----------------------------------------------------------------------------------------------


def _write_spiked(path, m, n, rows_per_write=2048, second=None):
    """Unit-variance noise plus a rank-one spike 1.5x the noise's edge (sqrt(m) + sqrt(n)), by row blocks.

    ``second``: a second spike of that fraction of the first on an orthogonal direction (a close
    top pair, sigma_2 / sigma_1 about ``second``: the case where single-vector Krylov needs many passes).
    """
    rng = np.random.default_rng(11)
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    spike = 1.5 * (np.sqrt(m) + np.sqrt(n))
    w = rng.standard_normal(n)
    w -= (w @ v) * v
    w /= np.linalg.norm(w)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(m, n))
    offset = mm.offset
    del mm  # the header is written; rows go through plain writes (no dirty mapped pages to account for)
    with open(path, "r+b") as f:
        f.seek(offset)
        for lo in range(0, m, rows_per_write):
            hi = min(lo + rows_per_write, m)
            # uniform noise of unit variance: the same spectral edge as Gaussian noise (Marchenko-Pastur
            # holds for any i.i.d. entries) at a fraction of the cost of generating 2^31 normals
            block = rng.random((hi - lo, n), dtype=np.float32)
            block -= np.float32(0.5)
            block *= np.float32(np.sqrt(12.0))
            u = rng.standard_normal(hi - lo) * (spike / np.sqrt(m))
            block += np.outer(u.astype(np.float32), v.astype(np.float32))
            if second is not None:
                u2 = rng.standard_normal(hi - lo) * (second * spike / np.sqrt(m))
                block += np.outer(u2.astype(np.float32), w.astype(np.float32))
            f.write(block.tobytes())
        f.flush()
        os.fsync(f.fileno())


def _drop_cache(path):
    """Evict the file's clean pages from the page cache (posix_fadvise: no root needed); False if unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (AttributeError, OSError):
        return False


def _sequential_read(path, chunk=64 << 20):
    """Seconds to read the whole file front to back into one reused buffer (the floor for a pass)."""
    buf = bytearray(chunk)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def _out_of_core_child(path, limit_bytes, force):
    """Run in a subprocess under RLIMIT_AS: reads, the solve, reads; print one JSON line."""
    import json
    import resource

    from linalg_lowrank import config

    # RLIMIT_AS counts address space, and np.load maps the whole file (never touched by the
    # out-of-core path, which reads with read()): the limit is 3 GiB on top of that mapping
    limit_bytes += os.path.getsize(path)
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    if force:  # --quick: a small file must still take the out-of-core path
        config.OUT_OF_CORE_FRACTION = 0.0
    mm = np.load(path, mmap_mode="r")
    # import dask and load the kernels on a slice of the file through the same path, outside the timings
    fraction, config.OUT_OF_CORE_FRACTION = config.OUT_OF_CORE_FRACTION, 0.0
    ll.power_iteration(mm[:256], rng=0, maxiter=2)
    ll.power_iteration(mm[:256], rng=0, maxiter=2, method="lanczos")  # and the single-vector path's
    config.OUT_OF_CORE_FRACTION = fraction
    dropped = _drop_cache(path)
    cold = _sequential_read(path)
    before = _sequential_read(path)
    solves = {}
    # what "auto" takes (block Lanczos when the page cache cannot keep the file, else the single-vector
    # engine), then both explicitly (method="lanczos": dask's row blocks), one after the other on the
    # same file and tolerance: passes and seconds
    for method in ("auto", "block", "lanczos"):
        _reset_peak_rss()
        t0 = time.perf_counter()
        res = ll.power_iteration(mm, tol=1e-6, rng=0, method=method)
        seconds = time.perf_counter() - t0
        solves[method] = {
            "solve_s": seconds,
            "sigma": float(res.sigma),
            "converged": bool(res.converged),
            "n_passes": int(res.n_passes),
            "n_iter": int(res.n_iter),
            "error_bound": float(res.error_bound),
            "upper_bound": float(res.upper_bound),
            "method": str(res.method),
            "peak_rss_bytes": _peak_rss(),
        }
    after = _sequential_read(path)
    print(
        json.dumps(
            {
                "cache_dropped": dropped,
                "read_cold_s": cold,
                "read_before_s": before,
                "read_after_s": after,
                "solves": solves,
            }
        )
    )


def _reset_peak_rss():
    """Start the peak resident size (VmHWM) afresh where Linux allows it; False otherwise."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss():
    """Peak resident bytes since the last `_reset_peak_rss` (VmHWM), or over the process's life (ru_maxrss)."""
    import resource

    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _out_of_core(report, quick):
    # the spiked file of the target, then a close top pair (sigma_2 / sigma_1 about 0.99)
    for second in (None, 0.99):
        _out_of_core_file(report, quick, second)


def _out_of_core_file(report, quick, second):
    import json
    import subprocess
    import sys
    import tempfile

    m, n = (16384, 4096) if quick else (65536, 32768)  # 256 MiB or 8 GiB of float32
    limit = 3 << 30
    case = f"out-of-core spectral_norm {m}x{n} f32 .npy ({m * n * 4 / 2**30:.3g} GiB), RLIMIT_AS 3 GiB + the file's map"
    if second is not None:
        case += f", close pair {second}"
    fd, path = tempfile.mkstemp(prefix="ll_ooc_", suffix=".npy", dir="/tmp")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        _write_spiked(path, m, n, second=second)
        print(f"  wrote {path} in {time.perf_counter() - t0:.1f} s", flush=True)
        load_before = _load()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(
            [sys.executable, "-m", "bench.bench_dask", "out-of-core-child", path, str(limit), str(int(quick))],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"out-of-core child failed:\n{out.stderr[-3000:]}")
        rec = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        os.remove(path)
    load = f"{load_before} -> {_load()}"
    auto, block, single = rec["solves"]["auto"], rec["solves"]["block"], rec["solves"]["lanczos"]
    per_pass = auto["solve_s"] / auto["n_passes"]
    read = min(rec["read_before_s"], rec["read_after_s"])
    gib = m * n * 4 / 2**30
    report.row(
        FAMILY, case, "sequential read, cold (cache dropped)", rec["read_cold_s"], gib_s=gib / rec["read_cold_s"]
    )
    report.row(
        FAMILY,
        case,
        "sequential read, as cached",
        [rec["read_before_s"], rec["read_after_s"]],
        gib_s=gib / read,
    )
    for label, solve in ((f"ours, auto ({auto['method']}), whole solve", auto),
                         ("block Lanczos, whole solve", block),
                         ("single-vector Lanczos, whole solve", single)):  # fmt: skip
        report.row(
            FAMILY,
            case,
            label,
            solve["solve_s"],
            n_passes=solve["n_passes"],
            n_iter=solve["n_iter"],
            error_bound=solve["error_bound"],
            upper_over_sigma=solve["upper_bound"] / solve["sigma"],
            converged=solve["converged"],
            peak_rss_mib=solve["peak_rss_bytes"] / 2**20,
            cache_dropped=rec["cache_dropped"],
            load=load,
        )
    report.row(FAMILY, case, f"ours, auto ({auto['method']}), per pass", per_pass, gib_s=gib / per_pass)
    for label, solve in (("block Lanczos", block), ("single-vector Lanczos", single)):
        one_pass = solve["solve_s"] / solve["n_passes"]
        report.row(FAMILY, case, f"{label}, per pass", one_pass, gib_s=gib / one_pass)
    speedup = single["solve_s"] / block["solve_s"]
    print(
        f"  {case}: passes block {block['n_passes']} vs single-vector {single['n_passes']}; seconds "
        f"{block['solve_s']:.2f} vs {single['solve_s']:.2f} (single / block {speedup:.2f}x); "
        f"|sigma difference| / sigma {abs(block['sigma'] - single['sigma']) / single['sigma']:.1g}",
        flush=True,
    )
    report.target(FAMILY, f"{case}: relative error bound", auto["error_bound"], 1e-6, higher_is_better=False, unit="")
    peak = max(solve["peak_rss_bytes"] for solve in (auto, block, single))
    report.target(FAMILY, f"{case}: peak RSS (GiB)", peak / 2**30, 3.0, higher_is_better=False, unit="")
    report.target(FAMILY, f"{case}: time per pass over a sequential read", per_pass / read, 1.3, higher_is_better=False)
    report.target(FAMILY, f"{case}: passes, single-vector over block", single["n_passes"] / block["n_passes"], 1.0)


# ----------------------------------------------------------------------------------------------
# The audit of a sharded bf16 checkpoint shaped like a 3B-parameter decoder: in-process vs --workers 2
# ----------------------------------------------------------------------------------------------

#: A Llama-3.2-3B-like decoder: hidden 3072, MLP 8192, 24 query heads and 8 key/value heads of 128,
#: 28 layers, vocabulary 128256 (tied embedding): 3.2e9 parameters, 6.4 GB in bfloat16.
DECODER_3B = dict(hidden=3072, mlp=8192, q_heads=24, kv_heads=8, head_dim=128, layers=28, vocab=128256)


def decoder_shapes(hidden, mlp, q_heads, kv_heads, head_dim, layers, vocab):
    """{name: shape} of a Llama-style decoder's weights (the 2-D ones and the norms)."""
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes[p + "self_attn.q_proj.weight"] = (q_heads * head_dim, hidden)
        shapes[p + "self_attn.k_proj.weight"] = (kv_heads * head_dim, hidden)
        shapes[p + "self_attn.v_proj.weight"] = (kv_heads * head_dim, hidden)
        shapes[p + "self_attn.o_proj.weight"] = (hidden, q_heads * head_dim)
        shapes[p + "mlp.gate_proj.weight"] = (mlp, hidden)
        shapes[p + "mlp.up_proj.weight"] = (mlp, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, mlp)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    return shapes


def _write_checkpoint(folder, shapes, shard_bytes=512 << 20):
    """bf16 shards of about ``shard_bytes`` plus the index. Each matrix: Gaussian entries of variance
    1/n plus a rank-one spike at twice the noise edge (trained weights have a separated top
    singular value; pure noise would be the slowest case for any Krylov method)."""
    import json

    from linalg_lowrank import audit

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(5)
    names = list(shapes)
    shards, current, size = [], [], 0
    for name in names:
        nbytes = 2 * int(np.prod(shapes[name]))
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    shards.append(current)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name in shard:
            shape = shapes[name]
            if len(shape) == 1:
                w = np.ones(shape, dtype=np.float32)
                tensors[name] = ("BF16", audit._to_bf16_bits(w))
            else:
                m, n = shape
                spike = 2.0 * (1.0 + np.sqrt(m / n))
                u, v = rng.standard_normal(m), rng.standard_normal(n)
                u = (u * (spike / np.linalg.norm(u))).astype(np.float32)
                v = (v / np.linalg.norm(v)).astype(np.float32)
                bits = np.empty(shape, dtype=np.uint16)
                for lo in range(0, m, 4096):  # by rows: the embedding's float32 copy alone is 1.6 GB
                    w = rng.standard_normal((min(m, lo + 4096) - lo, n), dtype=np.float32)
                    w *= np.float32(1 / np.sqrt(n))
                    w += np.outer(u[lo : lo + 4096], v)
                    bits[lo : lo + 4096] = audit._to_bf16_bits(w)
                tensors[name] = ("BF16", bits)
            weight_map[name] = fname
        audit._write_safetensors(os.path.join(folder, fname), tensors)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump(
            {"metadata": {"total_size": sum(2 * int(np.prod(s)) for s in shapes.values())}, "weight_map": weight_map}, f
        )
    return [os.path.join(folder, f) for f in sorted(set(weight_map.values()))]


def _audit_run(index, workers, out):
    """Wall time, the summary line and the records of one ``python -m linalg_lowrank audit`` process."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "linalg_lowrank", "audit", index, "--no-progress", "--out", out]
    if workers:
        cmd += ["--workers", str(workers)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the audit and every process under it (workers and nannies are reaped by their
    # parents): what a second core would have had to do, much less sensitive to the load than wall time
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"audit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = next((line for line in done.stderr.splitlines() if line.startswith("audit:")), "")
    with open(out) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return wall, cpu, summary, [r for r in records if r.get("status") == "audited"]


def _audit(report, quick, layers=None, vocab=None):
    import shutil
    import tempfile

    dims = dict(DECODER_3B)
    if quick:
        dims.update(layers=2, vocab=16384)
    if layers is not None:  # a proportionally smaller run: fewer layers of the same shapes
        dims["layers"] = layers
    if vocab is not None:
        dims["vocab"] = vocab
    shapes = decoder_shapes(**dims)
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    gb = 2 * n_params / 1e9
    case = f"audit bf16 decoder {dims['layers']} layers, vocab {dims['vocab']}"
    case += f" ({n_params / 1e9:.2f}e9 params, {gb:.2f} GB)"
    folder = tempfile.mkdtemp(prefix="ll_audit_", dir="/tmp")
    try:
        t0 = time.perf_counter()
        files = _write_checkpoint(folder, shapes)
        print(f"  wrote {len(files)} shards in {time.perf_counter() - t0:.1f} s", flush=True)
        index = os.path.join(folder, "model.safetensors.index.json")

        def read_all():
            return sum(_sequential_read(f) for f in files)

        dropped = all(_drop_cache(f) for f in files)
        cold = read_all()
        warm = read_all()
        report.row(FAMILY, case, "sequential read of the shards, cold", cold, gb_s=gb / cold, cache_dropped=dropped)
        report.row(FAMILY, case, "sequential read of the shards, cached", warm, gb_s=gb / warm)
        walls, cpus = {}, {}
        for label, workers in (("in-process", None), ("--workers 2", 2)):
            for f in files:
                _drop_cache(f)  # both runs start from the same (cold) page cache
            load_before = _load()
            wall, cpu, summary, records = _audit_run(index, workers, os.path.join(folder, f"out-{workers}.jsonl"))
            walls[label], cpus[label] = wall, cpu
            tensor_s = [r.get("time_s", 0.0) for r in records]
            by_shape = {}
            for r in records:
                by_shape.setdefault("x".join(map(str, r["shape"])), []).append(r["time_s"])
            per_shape = {k: [len(v), float(np.median(v))] for k, v in by_shape.items()}  # [count, median s]
            report.row(
                FAMILY,
                case,
                f"audit {label} (wall, with start-up)",
                wall,
                gb_s=gb / wall,
                over_cold_read=wall / cold,
                cpu_s=cpu,
                gb_per_cpu_s=gb / cpu,
                tensors=len(records),
                sum_tensor_s=float(np.sum(tensor_s)),
                largest_tensor_s=float(np.max(tensor_s)) if tensor_s else 0.0,
                summary=summary,
                per_shape=per_shape,
                load=f"{load_before} -> {_load()}",
            )
        report.target(
            FAMILY,
            f"{case}: --workers 2 over in-process (same 2 cores)",
            walls["--workers 2"] / walls["in-process"],
            1.15,
            higher_is_better=False,
        )
        report.target(
            FAMILY,
            f"{case}: --workers 2 over in-process, CPU seconds",
            cpus["--workers 2"] / cpus["in-process"],
            1.15,
            higher_is_better=False,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["out-of-core-child"]:
        import warnings

        warnings.simplefilter("ignore")  # the warm-up's two products do not converge, by design
        _out_of_core_child(sys.argv[2], int(sys.argv[3]), bool(int(sys.argv[4])))
