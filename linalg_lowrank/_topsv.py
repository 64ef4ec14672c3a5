"""The drivers of the Krylov engine (`_krylov`) behind ``power_iteration`` and ``top_singular_values``, and bounds.

Everything works on a batch of independent problems in lockstep: ``gram.gram(X, active)``
returns (Y, Z) with Y[k] = M_k X[k] and Z[k] = M_k^T Y[k]; the solver only sees the symmetric
positive semidefinite Gram operator B = M^T M and recovers the singular triplet of M from a
unit Ritz vector w: sigma = ||M w||, the other singular vector M w / sigma.

Thread pools: the Gram products run on numba's pool; the small dense algebra in between runs
on BLAS limited to one thread, so the two pools never take turns on the cores (on a 2-core
machine an OpenBLAS pool that spins after a call stalls the next numba kernel for milliseconds).
"""

import math

import numba
import numpy as np

from . import _krylov, _operators, config
from ._threads import blas_single_thread, solve_chunks

_EPS = np.finfo(np.float64).eps


class Outcome:
    """Per-problem state of a solve; arrays indexed by problem."""

    def __init__(self, b, q, p):
        self.theta = np.zeros(b)  # sigma^2 of the reported vector
        self.w = np.zeros((b, q))  # unit Gram-space vector
        self.y = np.zeros((b, p))  # M w
        self.residual = np.full(b, np.inf)
        self.converged = np.zeros(b, dtype=bool)
        self.n_iter = np.zeros(b, dtype=np.int64)
        self.ratio = np.full(b, np.nan)
        self.stop = np.array(["maxiter"] * b, dtype=object)
        self.error = np.full(b, np.inf)  # estimated relative error of sigma (the value stop's measure)
        self.history = [[] for _ in range(b)]
        self.power_degree = np.zeros(b, dtype=np.int64)  # x = B^P x0 / ||.|| where Lanczos started
        self.lanczos_dim = np.zeros(b, dtype=np.int64)  # Krylov dimension of the first cycle
        self.exponent = np.zeros(b, dtype=np.int64)  # theta, y are those of 2^-e M: sigma = 2^e sqrt(theta)
        self.method = "power"

    def record(self, idx, theta, w, y, residual):
        self.theta[idx] = theta
        self.w[idx] = w
        self.y[idx] = y
        self.residual[idx] = residual


def solve(gram, X, *, tol, maxiter, method, rtol=0.0):
    """Top eigenpair of the Gram operator for every problem of the batch.

    Stops at relative residual ``tol`` (``rtol = 0``), or when the estimated relative error of
    sigma is at most ``rtol`` (see `_krylov`). The products are those of 2^-e M (``gram.exponent``):
    unscaled unless the first product or an overflow shows that M is far from unit scale, in which
    case the adapter picks e and the solve starts again from the same vectors (see ``_operators``).
    ``out.exponent`` records e.
    """
    X = _operators.unit_rows(X)
    gram.begin()
    try:
        out = _solve(gram, X.copy(), tol=tol, rtol=rtol, maxiter=maxiter, method=method)
    except _operators.Rescale:
        gram.rescale()
        gram.begin()
        out = _solve(gram, X.copy(), tol=tol, rtol=rtol, maxiter=maxiter, method=method)
    out.exponent[:] = gram.exponent
    return out


def _basis_sizes(q):
    """(largest Lanczos basis, Ritz vectors kept across a restart) for Gram dimension q."""
    K = int(min(config.LANCZOS_MAX_BASIS, q))
    return K, int(max(min(config.LANCZOS_KEEP, K - 1), 0))


def _solve(gram, X, *, tol, rtol, maxiter, method):
    b, q = X.shape
    p = gram.other_dim
    K, keep = _basis_sizes(q)
    dense = gram.numba_fast_path
    in_numba = dense and p * q <= (config.NUMBA_SOLVE_MAX_ENTRIES if b == 1 else config.SMALL_MATRIX_ENTRIES)
    cap = config.HISTORY_CAP if b == 1 else config.HISTORY_CAP_STACK
    lo, hi = gram.range_bounds()
    ist, fst = _krylov.new_state(
        b, tol=tol, rtol=rtol, maxiter=maxiter, method=method, K=K, keep=keep,
        check_every=config.LANCZOS_CHECK_EVERY, max_gap=config.LANCZOS_MAX_CHECK_GAP,
        auto_max=config.AUTO_MAX_POWER_STEPS, lo=lo, hi=hi, resolution=config.KRYLOV_RESOLUTION,
    )  # fmt: skip
    hist = np.zeros((b, min(maxiter, cap)))
    W = np.zeros((b, q))
    Yb = np.zeros((b, p))
    X = np.ascontiguousarray(X)
    if in_numba:
        _drive_numba(gram, X, ist, fst, hist, W, Yb)
    else:
        with blas_single_thread():
            _drive_python(gram, X, ist, fst, hist, W, Yb, K)
    stop = ist[:, _krylov.I_STOP]
    _raise_on_rescale(gram, stop)
    out = Outcome(b, q, p)
    out.theta[:] = fst[:, _krylov.F_THETA]
    out.w[:] = W
    out.y[:] = Yb
    out.residual[:] = fst[:, _krylov.F_RES]
    out.error[:] = fst[:, _krylov.F_ERROR]
    out.converged[:] = (stop == _krylov.CONVERGED) | (stop == _krylov.ZERO)
    out.n_iter[:] = ist[:, _krylov.I_STEPS]
    out.ratio[:] = fst[:, _krylov.F_RATIO]
    out.stop[:] = np.asarray(_krylov.STOP_NAMES, dtype=object)[stop]
    out.power_degree[:] = ist[:, _krylov.I_POWER_DEGREE]
    out.lanczos_dim[:] = ist[:, _krylov.I_LANCZOS_DIM]
    n_hist = ist[:, _krylov.I_NHIST]
    out.history = [list(hist[k, : n_hist[k]]) for k in range(b)]
    out.method = "lanczos" if (ist[:, _krylov.I_PHASE] == _krylov.LANCZOS).any() else "power"
    return out


def _raise_on_rescale(gram, stop):
    """A solve stopped on a product out of range: `Rescale` while the scale is open, else the error."""
    if (stop == _krylov.RESCALE).any():
        if not gram.scaled:
            raise _operators.Rescale
        gram.fail()


def solve_pairs(gram, x0, nev, *, tol, maxiter, generator):
    """The ``nev`` largest eigenpairs of the Gram operator of one problem: the engine in method ``pairs``.

    A small Python driver runs it (``generator`` answers its `FRESH` requests); the basis holds at
    least ``2 nev`` vectors plus the usual kept ones, and a restart keeps the top ``nev`` Ritz
    vectors and half of the rest. Returns ``(theta, W, estimate, n_iter, converged)``: Ritz values
    (descending), the unit Ritz vectors as the columns of W (q x m, m = min(nev, basis size
    reached)), their residual estimates ``|beta s_j|``, Gram products used and whether every
    estimate met ``tol * max(theta_i, floor * theta_1)`` (floor: config.SPECTRUM_RESIDUAL_FLOOR).
    """
    q = gram.gram_dim
    K = int(min(q, max(config.LANCZOS_MAX_BASIS, 2 * nev + config.LANCZOS_KEEP)))
    keep = int(min(K - 1, max(nev + (K - nev) // 2, 1)))
    lo, hi = gram.range_bounds()
    ist, fst = _krylov.new_state(
        1, tol=tol, rtol=0.0, maxiter=maxiter, method="pairs", K=K, keep=keep,
        check_every=config.LANCZOS_CHECK_EVERY, max_gap=config.LANCZOS_MAX_CHECK_GAP, auto_max=0, lo=lo, hi=hi,
        nev=nev, breakdown=config.SPECTRUM_BREAKDOWN_ULPS, floor=config.SPECTRUM_RESIDUAL_FLOOR,
    )  # fmt: skip
    V, T = np.zeros((K + 1, q)), np.zeros((K + 1, K + 1))
    x = np.zeros((1, q))
    request = _krylov.start(ist[0], fst[0], V, np.asarray(x0, dtype=np.float64) / np.linalg.norm(x0), x[0])
    one = np.arange(1)
    with blas_single_thread():
        while request != _krylov.DONE:
            if request == _krylov.FRESH:  # the engine asks for a random direction: the caller's rng gives it
                x[0] = generator.standard_normal(q)  # (y, z are not read: those of the last product)
            else:
                Y, Z = gram.gram(x, one)
            request = _krylov.advance_pairs(ist[0], fst[0], V, T, x[0], Y[0], Z[0])
    _raise_on_rescale(gram, ist[:, _krylov.I_STOP])
    theta, ritz, estimate = np.zeros(nev), np.zeros((nev, q)), np.zeros(nev)
    m = _krylov.pairs(ist[0], V, T, theta, ritz, estimate)
    converged = ist[0, _krylov.I_STOP] == _krylov.CONVERGED
    return theta[:m], ritz[:m].T, estimate[:m], int(ist[0, _krylov.I_STEPS]), bool(converged)


def _drive_numba(gram, X, ist, fst, hist, W, Yb):
    """Dense matrices: the numba driver runs each whole solve, no Python between iterations.

    A single matrix big enough to gain gets the parallel one-pass product; the matrices of a
    stack are solved one per thread, each in cache, over contiguous chunks of the stack.
    """
    b, p, q = gram.mat.shape
    if b == 1:
        n_chunks = solve_chunks(p, q)  # the calling thread alone below a size (see _threads)
        _krylov.solve_stack(gram.mat, X, ist, fst, hist, W, Yb, gram.c1, gram.c2, np.empty((n_chunks, q)))
        return

    def chunk(lo, hi):
        _krylov.solve_stack(
            gram.mat[lo:hi], X[lo:hi], ist[lo:hi], fst[lo:hi], hist[lo:hi], W[lo:hi], Yb[lo:hi],
            gram.c1[lo:hi], gram.c2[lo:hi], np.empty((1, q)),
        )  # fmt: skip

    _run_chunks(chunk, b)


def _drive_python(gram, X, ist, fst, hist, W, Yb, K):
    """Every other Gram operator: Python loops the engine, one batched product per round.

    The problems of a batch advance in lockstep; ``gram.gram(X, active)`` sees the rows of the
    problems that still request a product.
    """
    b, q = X.shape
    V = np.zeros((b, K + 1, q))
    T = np.zeros((b, K + 1, K + 1))
    x = np.zeros((b, q))
    requests = np.array([_krylov.start(ist[k], fst[k], V[k], X[k], x[k]) for k in range(b)])
    active = np.flatnonzero(requests)
    while active.size:
        Y, Z = gram.gram(x, active)
        for k in active:
            requests[k] = _krylov.advance(ist[k], fst[k], V[k], T[k], hist[k], x[k], W[k], Yb[k], Y[k], Z[k])
        active = np.flatnonzero(requests)


_POOL = []


def _run_chunks(fn, b):
    """fn(lo, hi) on numba.get_num_threads() contiguous chunks of range(b), in parallel threads.

    For kernels that release the GIL and loop serially: parallel over the chunks without a
    ``prange`` (whose compile time is seconds per kernel). Chunk 0 runs on the calling thread.
    """
    n = max(1, min(numba.get_num_threads(), b))
    bounds = [(t * b) // n for t in range(n + 1)]
    if n == 1:
        fn(0, b)
        return
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(numba.config.NUMBA_NUM_THREADS, thread_name_prefix="linalg_lowrank"))
    futures = [_POOL[0].submit(fn, bounds[t], bounds[t + 1]) for t in range(1, n)]
    fn(bounds[0], bounds[1])
    for f in futures:
        f.result()


def _log_chebyshev(d, x):
    """log T_d(x) for x >= 1 and integer d >= 0, without overflow."""
    if d <= 0:
        return 0.0
    a = math.acosh(x)
    return d * a + math.log1p(math.exp(-2.0 * d * a)) - math.log(2.0)


def _log_tau(eps, P, d):
    """log of the threshold tau(eps) that c1^2 / S must fall below for the bound to fail."""
    base = (2 * P + 1) * math.log1p(-eps) - math.log(eps)
    if P > 0:  # max of t^(2P) ((1 - eps) lambda1 - t) on [0, (1 - eps) lambda1], at t = 2P/(2P+1) of it
        base += 2 * P * math.log(2 * P) - (2 * P + 1) * math.log(2 * P + 1)
    if d > 0:  # Lanczos: p(t) = t^P T_{d-1}(2 t / ((1 - eps) lambda1) - 1), |T| <= 1 on the interval
        base -= 2.0 * _log_chebyshev(d - 1, (1 + eps) / (1 - eps))
    return base


def upper_bound_eps(q, power_degree, lanczos_dim, failure):
    """Smallest relative gap eps with P(lambda1 > theta / (1 - eps)) <= failure, for a Gaussian start.

    The final Rayleigh quotient theta is at least that of p(B) x0 for p(t) = t^P T_{d-1}(...)
    (Lanczos, first-cycle dimension d) or p(t) = t^P (power iteration, d = 0). Failure needs
    c1^2 / S < tau(eps) with c1 the component of x0 on v1 and S that on the rest; for Gaussian
    x0 this ratio is Beta(1/2, (q-1)/2)-distributed after the map r -> r / (1 + r).
    See docs/theory/spectral.rst.
    """
    from scipy.special import betaincinv

    power_degree = np.asarray(power_degree)
    lanczos_dim = np.asarray(lanczos_dim)
    eps_out = np.zeros(power_degree.shape)
    if q <= 1:
        return eps_out
    # P(Beta(1/2, (q-1)/2) < x_star) = failure; the bound fails only if tau(eps) > tau_star.
    x_star = float(betaincinv(0.5, (q - 1) / 2.0, failure))
    log_tau_star = math.log(x_star) - math.log1p(-x_star)
    for k, (P, d) in enumerate(zip(power_degree.ravel().tolist(), lanczos_dim.ravel().tolist(), strict=True)):
        # In log eps; log tau decreases as eps grows. 24 halvings of the bracket pin eps to a
        # relative 4e-5, and returning the upper end keeps the bound conservative.
        lo, hi = -700.0, math.log(1 - 1e-16)
        for _ in range(24):
            mid = 0.5 * (lo + hi)
            if _log_tau(math.exp(mid), P, d) > log_tau_star:
                lo = mid
            else:
                hi = mid
        eps_out.flat[k] = math.exp(hi)
    return eps_out
