"""Trace and diagonal estimators: accuracy per budget on the issue's matrices, calibration, overhead.

Accuracy: median relative error over 10 seeds, n = 1000, Haar eigenvectors, for lambda_i = i^-2,
lambda_i = i^-0.5 and a strictly diagonally dominant matrix; ``auto`` against the best of plain
Hutchinson, unbiased Diag++ and XDiag. Overhead: time of everything beyond the user's products,
for a dense 4000 x 4000 operator given as a callable, as a fraction of the time spent inside it
(the products timed where they happen). A dense array also pays a one-pass symmetry and
finiteness check before any product; that and the dense-array calls are reported beside it.
"""

import time

import numpy as np

from linalg_lowrank.hutchinson import _symmetric_operator, hutchinson_diagonal, hutchinson_trace

from ._harness import interleaved

FAMILY = "hutchinson"


def _haar(n, lam, seed):
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    Q *= np.sign(np.diag(R))
    return (Q * lam) @ Q.T


def _dominant(n, seed):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, n)) * 0.01 / np.sqrt(n)
    return (B + B.T) / 2 + np.diag(1.0 + rng.random(n))


def _matrices(n):
    i = np.arange(1, n + 1, dtype=float)
    return {"i^-2": _haar(n, i**-2.0, 0), "i^-0.5": _haar(n, i**-0.5, 1), "dominant": _dominant(n, 2)}


def run(report, quick):
    n = 300 if quick else 1000
    seeds = range(3 if quick else 10)
    budgets = (20, 50, 100, 200)
    for name, A in _matrices(n).items():
        d, tr = np.diag(A), np.trace(A)
        for m in budgets:
            med = {}
            for method in ("hutchinson", "diag++", "xdiag", "auto"):
                errs, chosen, t0 = [], set(), time.perf_counter()
                for s in seeds:
                    r = hutchinson_diagonal(A, n_matvecs=m, method=method, rng=s)
                    errs.append(np.linalg.norm(r.diagonal - d) / np.linalg.norm(d))
                    chosen.add(r.method)
                med[method] = float(np.median(errs))
                report.row(
                    FAMILY,
                    f"diag {name} m={m}",
                    method,
                    (time.perf_counter() - t0) / len(seeds),
                    median_rel_err=med[method],
                    ran="/".join(sorted(chosen)),
                )
            best = min(med["hutchinson"], med["diag++"], med["xdiag"])
            report.target(FAMILY, f"diag auto / best, {name}, m={m}", med["auto"] / best, 1.1, higher_is_better=False)
            if name == "i^-2" and m == 100:
                report.target(
                    FAMILY, "diag auto rel err, i^-2, m=100", med["auto"], 1e-2, higher_is_better=False, unit=""
                )
            tmed = {}
            for method in ("hutchinson", "hutch++", "xtrace", "auto"):
                errs = [abs(hutchinson_trace(A, n_matvecs=m, method=method, rng=s).trace - tr) / abs(tr) for s in seeds]
                tmed[method] = float(np.median(errs))
                report.row(FAMILY, f"trace {name} m={m}", method, 0.0, median_rel_err=tmed[method])
            if name == "i^-2" and m == 200:
                report.target(FAMILY, "trace plain / auto error, i^-2, m=200", tmed["hutchinson"] / tmed["auto"], 100.0)
    _low_rank(report)
    _coverage(report, quick)
    _overhead(report, quick)


def _low_rank(report):
    n, r = 500, 10
    rng = np.random.default_rng(3)
    U = np.linalg.qr(rng.standard_normal((n, r)))[0]
    A = (U * np.linspace(1, 2, r)) @ U.T
    worst = 0.0
    for method in ("diag++", "xdiag", "auto"):
        e = hutchinson_diagonal(A, n_matvecs=3 * r + 3, method=method, rng=0).diagonal - np.diag(A)
        worst = max(worst, float(np.abs(e).max() / np.abs(np.diag(A)).max()))
    for method in ("hutch++", "xtrace", "auto"):
        e = hutchinson_trace(A, n_matvecs=3 * r + 3, method=method, rng=0).trace - np.trace(A)
        worst = max(worst, abs(e) / np.trace(A))
    report.target(
        FAMILY, "rank-10 matrix, 33 products: worst relative error", worst, 1e-12, higher_is_better=False, unit=""
    )


def _coverage(report, quick):
    n, m = 100, 60
    A = _haar(n, np.arange(1, n + 1, dtype=float) ** -1.0, 4)
    d, tr = np.diag(A), np.trace(A)
    seeds = range(50 if quick else 200)
    for dm, tm in (("hutchinson", "hutchinson"), ("diag++", "hutch++"), ("xdiag", "xtrace"), ("auto", "auto")):
        ct = np.mean(
            [abs((r := hutchinson_trace(A, n_matvecs=m, method=tm, rng=s)).trace - tr) <= 2 * r.stderr for s in seeds]
        )
        cd = np.mean(
            [
                np.mean(
                    np.abs((r := hutchinson_diagonal(A, n_matvecs=m, method=dm, rng=s)).diagonal - d) <= 2 * r.stderr
                )
                for s in seeds
            ]
        )
        report.row(
            FAMILY, "coverage n=100 m=60 i^-1", f"{tm}/{dm}", 0.0, trace_coverage=float(ct), diag_coverage=float(cd)
        )
        for what, c in (("trace", ct), ("diag", cd)):
            report.target(FAMILY, f"{what} coverage {tm if what == 'trace' else dm} >= 0.92", float(c), 0.92, unit="")
            report.target(
                FAMILY,
                f"{what} coverage {tm if what == 'trace' else dm} <= 0.98",
                float(c),
                0.98,
                higher_is_better=False,
                unit="",
            )


class _TimedProducts:
    """A user's block product (A @ X for a dense A) that adds up the time spent inside it.

    The overhead target is about what the estimator does beyond the user's products, so the
    products are timed where they happen, in the blocks the method asks for (a sketched method
    must ask in two rounds: its second block depends on the first).
    """

    def __init__(self, A):
        self.A = A
        self.seconds = 0.0

    def __call__(self, X):
        t0 = time.perf_counter()
        Y = self.A @ X
        self.seconds += time.perf_counter() - t0
        return Y


def _overhead_fraction(estimator, A, n, m, method, repeat):
    """Median over calls of (call time - time inside the user's products) / time inside them."""
    op = _TimedProducts(A)
    estimator(op, n=n, n_matvecs=m, method=method, rng=0)  # warm-up
    fractions, totals = [], []
    for _ in range(repeat):
        op.seconds = 0.0
        t0 = time.perf_counter()
        estimator(op, n=n, n_matvecs=m, method=method, rng=0)
        total = time.perf_counter() - t0
        fractions.append((total - op.seconds) / op.seconds)
        totals.append(total)
    return float(np.median(fractions)), totals


def _overhead(report, quick):
    n, m = (1500, 100) if quick else (4000, 200)
    A = _haar(n, np.arange(1, n + 1, dtype=float) ** -2.0, 5) if not quick else _dominant(n, 5)
    A = (A + A.T) / 2
    case = f"overhead n={n} m={m}"
    X = np.random.default_rng(0).standard_normal((n, m))
    X1, X2 = np.ascontiguousarray(X[:, : m // 2]), np.ascontiguousarray(X[:, m // 2 :])
    # for reference: the products in one block and in the two rounds a sketched method needs, and
    # the one-pass symmetry and finiteness check that a dense array (not an operator) also gets
    times = interleaved(
        {
            "products only": lambda: A @ X,
            "products in two blocks": lambda: (A @ X1, A @ X2),
            "input check": lambda: _symmetric_operator(A, None),
            "diag auto, dense array": lambda: hutchinson_diagonal(A, n_matvecs=m, rng=0),
            "trace auto, dense array": lambda: hutchinson_trace(A, n_matvecs=m, rng=0),
        },
        repeat=3,
    )
    base = report.row(FAMILY, case, "products only", times["products only"])
    for name in ("products in two blocks", "input check"):
        report.row(FAMILY, case, name, times[name])
    for name in ("diag auto, dense array", "trace auto, dense array"):
        t = report.row(FAMILY, case, name, times[name])
        report.row(FAMILY, case, f"{name}: (time - one-block products) / products", 0.0, fraction=(t - base) / base)
    # the target: a dense operator given as a callable, products timed inside it
    for kind, estimator in (("diag", hutchinson_diagonal), ("trace", hutchinson_trace)):
        for method in ("auto", "hutchinson"):
            frac, totals = _overhead_fraction(estimator, A, n, m, method, repeat=5)
            name = f"{kind} {method}"
            report.row(FAMILY, case, f"{name}, callable operator", totals, overhead=frac)
            report.target(
                FAMILY, f"overhead {name} (beyond the user's products)", frac, 0.2, higher_is_better=False, unit=""
            )
