"""Top-K singular values: ``top_singular_values`` against a full ``scipy.linalg.svdvals``, side by side.

Shapes of a real checkpoint (BERT-small-like): a 384 x 1536 MLP matrix and the 30522 x 384 token
embedding, float32 and float64. Two spectra: a Gaussian matrix (flat Marchenko-Pastur bulk, the
slowest case for Krylov methods: the top values are barely separated) and a decaying power-law
spectrum like trained weights (s_i ~ i^-0.5 on top of a bulk). K in {8, 16, 32}.

Contenders, timed interleaved in one process on the same matrix: ``svdvals`` (the anchor), our
``method="auto"`` (the Gram method on these shapes) and, as "before", ``method="lanczos"`` (the
single-vector path that ``top_singular_values`` took until block methods came); ``method="block"``
(block Lanczos on products with A) where asked (``--quick`` skips it). The same accuracy target for
all of ours: the default ``tol`` (1e-4 relative residual in float32, 1e-8 in float64), certified by
the same float64 product; the table reports the largest relative error against svdvals of the
matrix in float64. The issue's target: at least 10x faster than svdvals for K <= 32.

A second entry counts passes over A for ``spectral_norm``-accuracy (1e-6) on one matrix read from
a ``.npy`` file in row blocks: block Lanczos against single-vector Lanczos (issue 15).
"""

import os
import tempfile

import numpy as np
import scipy.linalg

import linalg_lowrank as ll
from linalg_lowrank import _block_krylov, config

from ._harness import interleaved

FAMILY = "spectrum"


def _matrix(shape, kind, dtype, rng):
    m, n = shape
    G = rng.standard_normal(shape)
    if kind == "gaussian":
        return G.astype(dtype)
    r = min(m, n)
    d = np.arange(1, r + 1) ** -0.5
    Q, _ = np.linalg.qr(rng.standard_normal((r, r)))
    if m >= n:  # G diag(d) Q: singular values ~ sqrt(m) d (G^T G ~ m I)
        return np.ascontiguousarray(((G * d) @ Q).astype(dtype))
    return np.ascontiguousarray((Q @ (d[:, None] * G)).astype(dtype))


def run(report, quick):
    rng = np.random.default_rng(0)
    shapes = [(384, 1536)] if quick else [(384, 1536), (30522, 384)]
    dtypes = [np.float32] if quick else [np.float32, np.float64]
    methods = ["auto", "lanczos"] if quick else ["auto", "block", "lanczos"]
    for shape in shapes:
        for dtype in dtypes:
            for kind in ("gaussian", "power-law"):
                A = _matrix(shape, kind, dtype, rng)
                ref = scipy.linalg.svdvals(A.astype(np.float64))
                for k in (8, 16, 32):
                    _case(report, A, ref, k, f"{shape[0]}x{shape[1]} {np.dtype(dtype).name} {kind} K={k}", methods,
                          big=shape[0] * shape[1] > 4e6)  # fmt: skip
    _passes(report, quick)


def _case(report, A, ref, k, case, methods, big):
    out = {}

    def ours(method):
        def call():
            out[method] = ll.top_singular_values(A, k, rng=0, method=method)

        return call

    fns = {f"top_singular_values[{m}]": ours(m) for m in methods}
    fns["svdvals"] = lambda: scipy.linalg.svdvals(A)
    times = interleaved(fns, repeat=1 if big else 3, warmup=0 if big else 1)
    anchor = float(np.median(times["svdvals"]))
    report.row(FAMILY, case, "scipy.linalg.svdvals", times["svdvals"])
    line = []
    for m in methods:
        res = out[m]
        err = float(np.max(np.abs(res.values - ref[:k]) / ref[:k]))
        name = f"top_singular_values[{m}]"
        report.row(FAMILY, case, name, times[name], max_rel_error=err, n_iter=int(res.n_iter),
                   n_passes=int(res.n_passes), converged=bool(res.converged), method=res.method)  # fmt: skip
        ratio = anchor / float(np.median(times[name]))
        if m == "auto":
            report.target(FAMILY, f"{case}: svdvals time / top_singular_values time", ratio, 10.0)
        line.append(f"{m}({res.method}) {ratio:.1f}x err {err:.1g} passes {res.n_passes}")
    print(f"  {case}: svdvals {anchor * 1e3:.0f} ms; " + "; ".join(line), flush=True)


def _passes(report, quick):
    """Passes over a matrix on disk for sigma_1 to 1e-6: block Lanczos against single-vector Lanczos."""
    rng = np.random.default_rng(1)
    m, n = (20000, 500) if quick else (50000, 1000)
    s = np.r_[1.0, 0.99, 0.98, np.linspace(0.9, 0.1, n - 3)]  # a close second value: many single-vector steps
    U, _ = np.linalg.qr(rng.standard_normal((m, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = ((U * s) @ V.T).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "A.npy")
        np.save(path, A)
        del A, U
        mm = np.load(path, mmap_mode="r")
        source = _block_krylov.RowBlocks.from_memmap("A", mm)
        width = _block_krylov.out_of_core_block_size(1, n)  # what top_singular_values takes for a file
        block = _block_krylov.top_triplets(
            source, 1, tol=1e-6, maxiter=100, generator=np.random.default_rng(0), block=width
        )
        single = ll.power_iteration(mm, tol=1e-6, method="lanczos", rng=0)  # relative residual, as block's tol
        err_block = abs(block["values"][0] - 1.0)
        err_single = abs(single.sigma - 1.0)
    case = f"{m}x{n} float32 .npy, sigma_1 to 1e-6"
    report.row(FAMILY, case, "block Lanczos (row blocks)", [0.0], n_passes=int(block["n_passes"]),
               rel_error=float(err_block), converged=bool(block["converged"]))  # fmt: skip
    report.row(FAMILY, case, "power_iteration (single-vector Lanczos)", [0.0], n_passes=int(single.n_passes),
               rel_error=float(err_single), converged=bool(single.converged))  # fmt: skip
    print(f"  {case}: block {block['n_passes']} passes (err {err_block:.1g}), single-vector "
          f"{single.n_passes} passes (err {err_single:.1g}); block size {block['block_size']}; "
          f"config.OUT_OF_CORE_BLOCK_BYTES {config.OUT_OF_CORE_BLOCK_BYTES}", flush=True)  # fmt: skip
