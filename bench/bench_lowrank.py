"""Low-rank family: randomized_svd vs scikit-learn, ID vs scipy.linalg.interpolative, msign."""

import numpy as np
import scipy.linalg.interpolative as sli

from linalg_lowrank.lowrank import interpolative_decomposition, randomized_svd
from linalg_lowrank.polar import msign, polar

from ._harness import interleaved


def _decaying(m, n, seed):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((m, n)))[0]
    V = np.linalg.qr(rng.standard_normal((n, n)))[0]
    s = 1.0 / np.arange(1, n + 1)
    return (U * s) @ V.T, s


def run(report, quick):
    from sklearn.utils.extmath import randomized_svd as sk_rsvd

    m, n, r = (1000, 500, 20) if quick else (4000, 2000, 50)
    A, s = _decaying(m, n, 0)
    opt = float(np.sqrt(np.sum(s[r:] ** 2)))
    case = f"{m}x{n} 1/i rank {r}"
    ours = randomized_svd(A, r, rng=0)
    err = float(np.linalg.norm(A - ours.to_array()))
    U, S, Vt = sk_rsvd(A, r, random_state=0)
    sk_err = float(np.linalg.norm(A - (U * S) @ Vt))
    t = interleaved(
        {"ours": lambda: randomized_svd(A, r, rng=0), "sklearn": lambda: sk_rsvd(A, r, random_state=0)},
        repeat=1 if quick else 3,
    )
    a = report.row(
        "lowrank", case, "randomized_svd", t["ours"], err_vs_opt=err / opt, bound_vs_err=ours.error_bound / err
    )
    b = report.row("lowrank", case, "sklearn randomized_svd", t["sklearn"], err_vs_opt=sk_err / opt)
    report.target("lowrank", "randomized_svd error / optimal", err / opt, 1.01, higher_is_better=False)
    report.target("lowrank", "randomized_svd speed vs sklearn", b / a, 1.0)
    report.target("lowrank", "error bound / true error", ours.error_bound / err, 2.0, higher_is_better=False)

    res = interpolative_decomposition(A, r, rng=0)
    id_err = float(np.linalg.norm(A - res.reconstruct(A)))
    idx, proj = sli.interp_decomp(A, r)
    sp_err = float(np.linalg.norm(A - sli.reconstruct_matrix_from_id(A[:, idx[:r]], idx, proj)))
    t = interleaved(
        {"ours": lambda: interpolative_decomposition(A, r, rng=0), "scipy": lambda: sli.interp_decomp(A, r)}, repeat=1
    )
    a = report.row("lowrank", case, "interpolative_decomposition", t["ours"], err_vs_opt=id_err / opt)
    b = report.row("lowrank", case, "scipy interp_decomp", t["scipy"], err_vs_opt=sp_err / opt)
    report.target("lowrank", "ID error / scipy ID error", id_err / sp_err, 1.0, higher_is_better=False)
    report.target("lowrank", "ID speed vs scipy", b / a, 5.0)

    k, nn = (256, 1024) if quick else (1024, 4096)
    rng = np.random.default_rng(1)
    for cond in (1e1, 1e4):
        sv = np.geomspace(1.0, 1.0 / cond, k)
        W = (np.linalg.qr(rng.standard_normal((k, k)))[0] * sv) @ np.linalg.qr(rng.standard_normal((nn, k)))[0].T
        for dtype in (np.float32, np.float64):
            Wd = W.astype(dtype)
            P = polar(W)
            for name, steps in (("muon", 5), ("polar_express", 5), ("polar_express", 8)):
                res = msign(Wd, steps=steps, coefficients=name)
                sv_q = np.linalg.svd(res.Q.astype(np.float64), compute_uv=False)
                dist = float(np.linalg.norm(res.Q - P, 2))
                t = interleaved(
                    {"x": lambda n=name, st=steps, Wd=Wd: msign(Wd, steps=st, coefficients=n, diagnostics=False)},
                    repeat=1,
                )
                report.row(
                    "lowrank",
                    f"msign {k}x{nn} cond {cond:g} {np.dtype(dtype).name}",
                    f"{name}-{steps}",
                    t["x"],
                    sv_min=float(sv_q.min()),
                    sv_max=float(sv_q.max()),
                    dist_polar=dist,
                    orth=res.orthogonality,
                )
        t = interleaved({"svd": lambda W=W: polar(W.astype(np.float32))}, repeat=1)
        report.row("lowrank", f"polar {k}x{nn} cond {cond:g} float32", "exact SVD", t["svd"])
