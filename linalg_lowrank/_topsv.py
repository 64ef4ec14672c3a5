"""The engine behind ``power_iteration``: power steps, thick-restart Lanczos, bounds.

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

from . import _kernels, _operators, config
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


def _rayleigh(Y, Z, X):
    theta = np.einsum("ij,ij->i", Y, Y)  # ||M x||^2 = x^T B x for unit x
    scale = np.where(theta > 0, theta, 1.0)
    residual = np.linalg.norm(Z - theta[:, None] * X, axis=1) / scale
    return theta, residual


def solve(gram, X, *, tol, maxiter, method):
    """Top eigenpair of the Gram operator for every problem of the batch, to relative residual ``tol``.

    The products are those of 2^-e M (``gram.exponent``): unscaled unless the first product or
    an overflow shows that M is far from unit scale, in which case the adapter picks e and the
    solve starts again from the same vectors (see ``_operators``). ``out.exponent`` records e.
    """
    X = _operators.unit_rows(X)
    gram.begin()
    try:
        out = _solve(gram, X.copy(), tol=tol, maxiter=maxiter, method=method)
    except _operators.Rescale:
        gram.rescale()
        gram.begin()
        out = _solve(gram, X.copy(), tol=tol, maxiter=maxiter, method=method)
    out.exponent[:] = gram.exponent
    return out


def _solve(gram, X, *, tol, maxiter, method):
    b, q = X.shape
    p = gram.other_dim
    out = Outcome(b, q, p)
    dense = getattr(gram, "mat", None) is not None
    if dense and b == 1 and p * q <= config.NUMBA_SOLVE_MAX_ENTRIES and maxiter >= 2:
        _solve_single(gram, X, out, tol=tol, maxiter=maxiter, method=method)
        return out
    if dense and b > 1 and method != "power" and p * q <= config.SMALL_MATRIX_ENTRIES and maxiter >= 2:
        _solve_small(gram, X, out, tol=tol, maxiter=maxiter)
        return out
    active = np.arange(b)
    pilot = 0 if method == "lanczos" else maxiter  # "auto" leaves the pilot by its own rate test
    with blas_single_thread():
        active, X = _power(gram, X, active, out, tol=tol, steps=pilot, auto=method == "auto")
        if active.size and out.n_iter[active[0]] < maxiter:
            out.power_degree[active] = out.n_iter[active]  # Lanczos starts from B^P x0
            out.method = "lanczos"
            _lanczos(gram, X, active, out, tol=tol, budget=maxiter - int(out.n_iter[active[0]]))
    return out


def _basis_sizes(q):
    """(largest Lanczos basis, Ritz vectors kept across a restart) for Gram dimension q."""
    K = int(min(config.LANCZOS_MAX_BASIS, q))
    return K, int(max(min(config.LANCZOS_KEEP, K - 1), 0))


def _solve_single(gram, X, out, *, tol, maxiter, method):
    """One dense matrix solved entirely inside numba: no Python between iterations.

    ``auto`` runs the same power pilot as ``_power`` (in numba), then Lanczos from its last
    iterate; products run on the parallel one-pass kernel for matrices big enough to gain.
    """
    M = gram.mat[0]
    p, q = M.shape
    n_chunks = solve_chunks(p, q)  # threads lane: the calling thread alone below 1M entries (see _threads)
    scratch = np.empty((n_chunks, q))
    x = np.ascontiguousarray(X[0])
    y, z = np.empty(p), np.empty(q)
    hist = np.zeros(min(maxiter, 1024))
    used = 0
    pilot_cap = maxiter if method == "power" else (maxiter - 2 if method == "auto" else 0)  # Lanczos needs 2
    c1, c2 = float(gram.c1[0]), float(gram.c2[0])
    lo, hi = gram.range_bounds()
    if pilot_cap > 0:
        max_remaining = np.inf if method == "power" else float(config.AUTO_MAX_POWER_STEPS)
        used, done, theta, res, ratio, rescale = _kernels.power_pilot(
            M, x, tol, pilot_cap, max_remaining, hist, scratch, y, z, c1, c2, lo, hi
        )
        _check_flag(gram, rescale)
        out.history[0] = list(hist[: min(used, hist.size)])
        out.ratio[0] = ratio
        if done or used == pilot_cap:  # finished: x is the iterate examined last (not advanced)
            out.record(0, theta, x, y, res)
            out.converged[0] = done
            out.stop[0] = "zero" if theta == 0 else ("converged" if done else "maxiter")
            out.n_iter[0] = used
            out.power_degree[0] = used - 1
            return
    out.method = "lanczos"
    out.power_degree[0] = used
    hist_l = np.zeros(min(maxiter, 1024))
    K, keep = _basis_sizes(q)
    theta, w, yv, res, n, conv, ratio, nh, ldim, invariant, rescale = _kernels.lanczos_small(
        M, x / np.linalg.norm(x), tol, maxiter - used, K, keep, 1, config.LANCZOS_MAX_CHECK_GAP, hist_l, scratch,
        c1, c2, lo if used == 0 else 0.0, hi if used == 0 else math.inf,
    )  # fmt: skip
    _check_flag(gram, rescale)
    out.record(0, theta, w, yv, res)
    out.n_iter[0] = used + n
    out.converged[0] = conv or theta == 0
    out.ratio[0] = ratio
    out.lanczos_dim[0] = ldim
    out.history[0] = list(out.history[0]) + list(hist_l[:nh])
    out.stop[0] = "zero" if theta == 0 else ("converged" if conv else ("exact" if invariant else "maxiter"))


def _check_flag(gram, rescale):
    """A numba driver flagged a product out of range or not finite: rescale if still open, else the error."""
    if rescale is True or (rescale is not False and rescale.any()):
        if not gram.scaled:
            raise _operators.Rescale
        gram.fail()


def _solve_small(gram, X, out, *, tol, maxiter):
    """Small matrices: one numba thread runs a whole Lanczos solve per matrix, in cache."""
    b, q = X.shape
    K, keep = _basis_sizes(q)
    hist = np.zeros((b, min(maxiter, 512)))
    n_hist = np.zeros(b, dtype=np.int64)
    invariant = np.zeros(b, dtype=np.bool_)
    rescale = np.zeros(b, dtype=np.bool_)
    low, high = gram.range_bounds()
    X = np.ascontiguousarray(X)

    def chunk(lo, hi):
        _kernels.lanczos_stack(
            gram.mat[lo:hi], X[lo:hi], tol, maxiter, K, keep, 1, config.LANCZOS_MAX_CHECK_GAP,
            out.theta[lo:hi], out.w[lo:hi], out.y[lo:hi], out.residual[lo:hi], out.n_iter[lo:hi],
            out.converged[lo:hi], out.ratio[lo:hi], hist[lo:hi], n_hist[lo:hi], out.lanczos_dim[lo:hi],
            invariant[lo:hi], gram.c1[lo:hi], gram.c2[lo:hi], low, high, rescale[lo:hi],
        )  # fmt: skip

    _run_chunks(chunk, b)
    _check_flag(gram, rescale)
    out.method = "lanczos"
    zero = out.theta == 0
    out.converged |= zero
    out.stop[:] = np.where(zero, "zero", np.where(out.converged, "converged", np.where(invariant, "exact", "maxiter")))
    for k in range(b):
        out.history[k] = list(hist[k, : n_hist[k]])


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


def _power(gram, X, active, out, *, tol, steps, auto):
    prev = np.full(X.shape[0], np.nan)
    for step in range(steps):
        if not active.size:
            break
        Y, Z = gram.gram(np.ascontiguousarray(X), active)
        out.n_iter[active] += 1
        theta, res = _rayleigh(Y[active], Z[active], X[active])
        for k, i in enumerate(active):
            out.history[i].append(math.sqrt(theta[k]))
        out.record(active, theta, X[active], Y[active], res)
        out.power_degree[active] = step
        rate = res / prev[active]  # the Gram residual shrinks by (sigma2/sigma1)^2 a step
        with np.errstate(invalid="ignore"):
            out.ratio[active] = np.where(np.isfinite(rate), np.sqrt(np.clip(rate, 0.0, 1.0)), out.ratio[active])
        prev[active] = res
        zero = theta == 0
        done = (res <= tol) | zero
        out.converged[active[done]] = True
        out.stop[active[done & ~zero]] = "converged"
        out.stop[active[zero]] = "zero"
        keep = ~done
        Zk = Z[active[keep]]
        X[active[keep]] = Zk / np.linalg.norm(Zk, axis=1, keepdims=True)
        active = active[keep]
        if auto and active.size and step >= 2:
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.clip(rate[keep], 1e-300, 1.0)
                remaining = np.log(tol / res[keep]) / np.log(r)
            if not np.all(np.isfinite(remaining) & (remaining <= config.AUTO_MAX_POWER_STEPS)):
                break
    return active, X


def _lanczos(gram, X, active, out, *, tol, budget):
    """Thick-restart Lanczos with full reorthogonalization on the active problems, in lockstep."""
    b, q = X.shape
    K, keep = _basis_sizes(q)
    V = np.zeros((b, K + 1, q))
    T = np.zeros((b, K + 1, K + 1))
    V[active, 0] = X[active]
    next_check = 1
    previous_check = None  # (step, largest residual estimate) at the last check
    j = 0
    steps = 0
    first_cycle = True
    last_S = None
    while active.size and steps < budget - 1:  # one product is kept for the final verification
        full = active.size == b
        sel = slice(None) if full else active
        Y, Z = gram.gram(np.ascontiguousarray(V[:, j]), active)
        steps += 1
        out.n_iter[active] += 1
        w = Z[sel]
        Vj = V[sel, : j + 1]
        h = _project(Vj, w)
        w = w - _combine(h, Vj)
        h2 = _project(Vj, w)  # second Gram-Schmidt pass: orthogonal to working precision
        w -= _combine(h2, Vj)
        h += h2
        T[sel, : j + 1, j] = h
        T[sel, j, : j + 1] = h
        beta = np.linalg.norm(w, axis=1)
        scale = np.where(beta > 0, beta, 1.0)
        V[sel, j + 1] = w / scale[:, None]
        T[sel, j + 1, j] = beta
        T[sel, j, j + 1] = beta
        j += 1
        if first_cycle:
            out.lanczos_dim[active] = j
        if not (steps >= next_check or j == K or steps >= budget - 1 or j == q):
            continue
        theta, S = np.linalg.eigh(T[sel, :j, :j])
        top = np.maximum(theta[:, -1], 0.0)
        s = S[:, :, -1]
        last_S = (active.copy(), j, S, theta)
        for k, i in enumerate(active):
            out.history[i].append(math.sqrt(top[k]))
        if j >= 2:
            out.ratio[active] = np.sqrt(np.clip(theta[:, -2], 0.0, None) / np.where(top > 0, top, 1.0))
        invariant = beta <= _EPS * np.maximum(top, np.abs(theta).max(axis=1)) * 4
        estimate = np.abs(beta * s[:, j - 1]) / np.where(top > 0, top, 1.0)
        candidate = (estimate <= 0.5 * tol) | invariant | (top == 0)
        next_check = steps + _steps_to_next_check(previous_check, steps, estimate.max(), tol)
        previous_check = (steps, estimate.max())
        if candidate.any() and steps < budget - 1:  # else the final verification covers them
            cand = active[candidate]
            wv = _combine(s[candidate], V[cand, :j])
            ok = _verify(gram, wv, cand, out, tol)
            steps += 1
            done = np.zeros(active.size, dtype=bool)
            done[candidate] = ok | invariant[candidate]
            exact = candidate & invariant & ~np.isin(active, cand[ok])
            out.stop[active[exact]] = "exact"
            active = active[~done]
            if not active.size:
                break
            keep_rows = ~done
            theta, S, beta = theta[keep_rows], S[keep_rows], beta[keep_rows]
            last_S = (active.copy(), j, S, theta)
            full = active.size == b
            sel = slice(None) if full else active
        if j == K:  # thick restart: keep the top Ritz vectors and the newest Lanczos vector
            first_cycle = False
            Sk = S[:, :, K - keep :]
            V[sel, :keep] = np.matmul(Sk.transpose(0, 2, 1), V[sel, :K])
            V[sel, keep] = V[sel, K]
            T[sel] = 0.0
            idx = np.arange(keep)
            T[sel, idx, idx] = theta[:, K - keep :]
            coupling = beta[:, None] * S[:, K - 1, K - keep :]
            T[sel, keep, :keep] = coupling
            T[sel, :keep, keep] = coupling
            j = keep
            last_S = None
    if active.size:  # budget spent: report the best Ritz vector (the start if no step fitted), verified
        if j == 0:
            wv = V[active, 0]
        elif last_S is None or not np.array_equal(last_S[0], active) or last_S[1] != j:
            theta, S = np.linalg.eigh(T[active, :j, :j])
            wv = _combine(S[:, :, -1], V[active, :j])
        else:
            _, _, S, theta = last_S
            wv = _combine(S[:, :, -1], V[active, :j])
        _verify(gram, wv, active, out, tol)


def _steps_to_next_check(previous, steps, estimate, tol):
    """Schedule the next small eigensolve from the observed geometric decay of the residual estimate.

    An eigensolve of the projected matrix costs O(j^3); checking every step would dominate for
    matrices that take well under a millisecond per product. Aim at half the predicted distance
    to ``tol``, at least one and at most ``LANCZOS_MAX_CHECK_GAP`` steps.
    """
    if previous is None or not (0 < estimate < previous[1]):
        return config.LANCZOS_CHECK_EVERY
    rate = (estimate / previous[1]) ** (1.0 / max(steps - previous[0], 1))
    remaining = math.log(0.5 * tol / estimate) / math.log(rate) if estimate > 0.5 * tol else 0.0
    return int(min(max(1, 0.5 * remaining), config.LANCZOS_MAX_CHECK_GAP))


def _project(Vj, w):
    """h[k] = Vj[k] @ w[k] (batched gemv through BLAS)."""
    return np.matmul(Vj, w[:, :, None])[:, :, 0]


def _combine(h, Vj):
    """Vj[k].T @ h[k]."""
    return np.matmul(h[:, None, :], Vj)[:, 0, :]


def _verify(gram, W, idx, out, tol):
    """One Gram product on unit vectors W: record the measured triplet; return residual <= tol."""
    W = _operators.unit_rows(W)  # a zero row (a deflated operator that is zero) stays zero: theta = 0
    X = np.zeros((out.w.shape[0], W.shape[1]))
    X[idx] = W
    Y, Z = gram.gram(X, idx)
    out.n_iter[idx] += 1
    theta, res = _rayleigh(Y[idx], Z[idx], W)
    out.record(idx, theta, W, Y[idx], res)
    ok = (res <= tol) | (theta == 0)
    out.converged[idx] = ok
    out.stop[idx[ok]] = "converged"
    out.stop[idx[theta == 0]] = "zero"
    return ok


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


def top_pairs(gram, x, nev, *, tol, maxiter, generator):
    """Thick-restart Lanczos for the ``nev`` largest eigenpairs of the Gram operator of one problem.

    The same iteration as `_lanczos` (two Gram-Schmidt passes, restart on the top Ritz vectors
    plus the newest Lanczos vector, checks scheduled by `_steps_to_next_check`), generalized from
    one wanted pair to ``nev``: the basis holds at least ``2 nev`` vectors and a restart keeps
    half of it, convergence waits for the ``nev``-th pair, and an invariant subspace found before
    ``nev`` pairs (a Gram operator with fewer distinct eigenvalues than the basis size: repeated
    singular values, rank deficiency) continues from a fresh random vector orthogonal to the
    basis, as ARPACK does, so further copies of a repeated eigenvalue can be found; convergence
    at an invariant subspace needs a fresh direction that changes none of the top ``nev`` values.

    Returns ``(theta, W, estimate, n_iter, converged)``: Ritz values (descending), the unit Ritz
    vectors as the columns of W (q x nev), the residual estimates ``|beta s_j|`` (the exact
    residual norms ``||B w - theta w||`` in exact arithmetic), Gram products used and whether
    every estimate met ``tol * max(theta_i, floor * theta_1)`` (floor: config.SPECTRUM_RESIDUAL_FLOOR).
    """
    q = gram.gram_dim
    K = int(min(q, max(config.LANCZOS_MAX_BASIS, 2 * nev + config.LANCZOS_KEEP)))
    keep = int(min(K - 1, max(nev + (K - nev) // 2, 1)))
    V = np.zeros((K + 1, q))
    T = np.zeros((K + 1, K + 1))
    V[0] = x / np.linalg.norm(x)
    active = np.arange(1)
    floor = config.SPECTRUM_RESIDUAL_FLOOR
    j = 0
    steps = 0
    next_check = 1
    previous_check = None
    converged = False
    theta = S = None
    last_break = None  # top nev Ritz values at the last invariant subspace
    with blas_single_thread():
        while steps < maxiter:
            _, Z = gram.gram(V[j][None], active)
            steps += 1
            w = Z[0]
            h = V[: j + 1] @ w
            w = w - h @ V[: j + 1]
            h2 = V[: j + 1] @ w
            w -= h2 @ V[: j + 1]
            h += h2
            T[: j + 1, j] = h
            T[j, : j + 1] = h
            beta = float(np.linalg.norm(w))
            scale_T = float(np.abs(T[: j + 1, : j + 1]).max())
            # Rounding leaves ||w|| ~ sqrt(q) eps ||B|| at an invariant subspace; below that, w is noise.
            invariant = beta <= config.SPECTRUM_BREAKDOWN_ULPS * math.sqrt(q) * _EPS * scale_T
            j += 1
            if invariant:
                beta = 0.0
            T[j, j - 1] = T[j - 1, j] = beta
            whole_space = j == q
            if not (invariant or whole_space or steps >= next_check or j == K or steps >= maxiter):
                V[j] = w / beta
                continue
            theta, S = np.linalg.eigh(T[:j, :j])
            top = max(theta[-1], 0.0)
            m = min(nev, j)
            estimate = np.abs(beta * S[j - 1, j - m :])
            target = tol * np.maximum(np.maximum(theta[j - m :], 0.0), floor * top)
            next_check = steps + _steps_to_next_check(previous_check, steps, float(estimate.max()) / (top or 1.0), tol)
            previous_check = (steps, float(estimate.max()) / (top or 1.0))
            if whole_space:
                converged = True
                break
            if invariant or top == 0:
                # The Krylov space of one vector holds one copy of each eigenvalue: restart it from random
                # directions orthogonal to the basis until one brings no change to the top nev values.
                current = theta[j - m :] if j >= nev else None
                if current is not None and last_break is not None and last_break.size == current.size:
                    if np.all(np.abs(current - last_break) <= target):
                        converged = True
                        break
                last_break = current if current is not None else theta[:0]
                invariant = True
            elif j >= nev and last_break is None and np.all(estimate <= target):
                # (after a restart from a fresh direction, the old pairs' estimates are zero by construction:
                # only the next invariant subspace tells whether the fresh direction changed the top values)
                converged = True
                break
            if invariant:  # continue the Krylov space from a random direction orthogonal to the basis
                r = generator.standard_normal(q)
                for _ in range(2):
                    r -= (V[:j] @ r) @ V[:j]
                nr = np.linalg.norm(r)
                if nr == 0:  # pragma: no cover - the basis spans the space, caught by whole_space
                    converged = True
                    break
                V[j] = r / nr
            else:
                V[j] = w / beta
            if j == K and steps < maxiter:  # thick restart: top Ritz vectors and the newest Lanczos vector
                Sk = S[:, K - keep :]
                V[:keep] = Sk.T @ V[:K]
                V[keep] = V[K]
                coupling = beta * S[K - 1, K - keep :]
                T[:] = 0.0
                idx = np.arange(keep)
                T[idx, idx] = theta[K - keep :]
                T[keep, :keep] = coupling
                T[:keep, keep] = coupling
                j = keep
                theta = None
        if theta is None or theta.size != j:
            theta, S = np.linalg.eigh(T[:j, :j])
        m = min(nev, j)
        W = V[:j].T @ S[:, j - m :][:, ::-1]
        estimate = np.abs(T[j, j - 1] * S[j - 1, j - m :])[::-1]
        return theta[j - m :][::-1].copy(), W, estimate, steps, converged
