"""Top-K singular values: ``top_singular_values`` against a full ``scipy.linalg.svdvals``, side by side.

Shapes of a real checkpoint (BERT-small-like): a 384 x 1536 MLP matrix and the 30522 x 384 token
embedding, float32. Two spectra: a Gaussian matrix (flat Marchenko-Pastur bulk, the slowest case
for Krylov methods: the top values are barely separated) and a decaying power-law spectrum like
trained weights (s_i ~ i^-0.5 on top of a bulk). The issue's target: at least 10x faster than
svdvals for K <= 32.
"""

import numpy as np
import scipy.linalg

import linalg_lowrank as ll

from ._harness import interleaved

FAMILY = "spectrum"


def _matrix(shape, kind, rng):
    m, n = shape
    G = rng.standard_normal(shape).astype(np.float32)
    if kind == "gaussian":
        return G
    r = min(m, n)
    d = (np.arange(1, r + 1) ** -0.5).astype(np.float32)
    Q, _ = np.linalg.qr(rng.standard_normal((r, r)))
    if m >= n:  # G diag(d) Q: singular values ~ sqrt(m) d (G^T G ~ m I)
        return np.ascontiguousarray((G * d) @ Q.astype(np.float32))
    return np.ascontiguousarray(Q.astype(np.float32) @ (d[:, None] * G))


def run(report, quick):
    rng = np.random.default_rng(0)
    shapes = [(384, 1536)] if quick else [(384, 1536), (30522, 384)]
    for shape in shapes:
        for kind in ("gaussian", "power-law"):
            A = _matrix(shape, kind, rng)
            ref = scipy.linalg.svdvals(A.astype(np.float64))
            for k in (8, 32):
                case = f"{shape[0]}x{shape[1]} float32 {kind} K={k}"
                out = {}

                def ours(A=A, k=k, out=out):
                    out["res"] = ll.top_singular_values(A, k, rng=0)

                times = interleaved(
                    {"top_singular_values": ours, "svdvals": lambda A=A: scipy.linalg.svdvals(A)},
                    repeat=2 if quick else 3,
                    warmup=1,
                )
                res = out["res"]
                err = float(np.max(np.abs(res.values - ref[:k]) / ref[:k]))
                report.row(FAMILY, case, "top_singular_values", times["top_singular_values"], max_rel_error=err,
                           n_iter=int(res.n_iter), converged=bool(res.converged))  # fmt: skip
                report.row(FAMILY, case, "scipy.linalg.svdvals", times["svdvals"])
                ratio = float(np.median(times["svdvals"]) / np.median(times["top_singular_values"]))
                report.target(FAMILY, f"{case}: svdvals time / top_singular_values time", ratio, 10.0)
                print(f"  {case}: ratio {ratio:.1f}x, n_iter {res.n_iter}, max rel error {err:.2g}", flush=True)
