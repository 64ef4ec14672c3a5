"""The engine behind ``power_iteration``: power steps, thick-restart Lanczos, bounds.

Everything works on a batch of independent problems in lockstep: ``gram.gram(X, active)``
returns (Y, Z) with Y[k] = M_k X[k] and Z[k] = M_k^T Y[k]; the solver only sees the symmetric
positive semidefinite Gram operator B = M^T M and recovers the singular triplet of M from a
unit Ritz vector w: sigma = ||M w||, the other singular vector M w / sigma.

Thread pools: the Gram products run on numba's pool; the small dense algebra in between runs
on BLAS limited to one thread, so the two pools never take turns on the cores (on a 2-core
machine an OpenBLAS pool that spins after a call stalls the next numba kernel for milliseconds).
"""

import contextlib
import math

import numpy as np

from . import config

_EPS = np.finfo(np.float64).eps


@contextlib.contextmanager
def blas_single_thread():
    """Limit BLAS to one thread inside the iteration (a no-op without threadpoolctl)."""
    controller = _controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


_CONTROLLER = []


def _controller():
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            _CONTROLLER.append(None)
        else:
            _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


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
    """Top eigenpair of the Gram operator for every problem of the batch, to relative residual ``tol``."""
    b, q = X.shape
    p = gram.other_dim
    out = Outcome(b, q, p)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    active = np.arange(b)
    if method == "power":
        pilot = maxiter
    elif method == "lanczos":
        pilot = 0
    else:
        pilot = maxiter
    with blas_single_thread():
        active, X = _power(gram, X, active, out, tol=tol, steps=pilot, auto=method == "auto")
        if active.size and out.n_iter[active[0]] < maxiter:
            out.power_degree[active] = out.n_iter[active]  # Lanczos starts from B^P x0
            out.method = "lanczos"
            _lanczos(gram, X, active, out, tol=tol, budget=maxiter - int(out.n_iter[active[0]]))
    return out


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
    K = int(min(config.LANCZOS_MAX_BASIS, q))
    keep = int(min(config.LANCZOS_KEEP, K - 1))
    V = np.zeros((b, K + 1, q))
    T = np.zeros((b, K + 1, K + 1))
    V[active, 0] = X[active]
    check_every = (
        1 if gram.batch == 1 and q * gram.other_dim >= config.PARALLEL_MIN_ENTRIES else config.LANCZOS_CHECK_EVERY
    )
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
        h = np.einsum("kjq,kq->kj", Vj, w)
        w = w - np.einsum("kj,kjq->kq", h, Vj)
        h2 = np.einsum("kjq,kq->kj", Vj, w)  # second Gram-Schmidt pass: orthogonal to eps
        w -= np.einsum("kj,kjq->kq", h2, Vj)
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
        if not (j % check_every == 0 or j == K or steps >= budget - 1 or j == q):
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
        if candidate.any() and steps < budget - 1:  # else the final verification covers them
            cand = active[candidate]
            wv = np.einsum("kjq,kj->kq", V[cand, :j], s[candidate])
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
            V[sel, :keep] = np.einsum("kjq,kjl->klq", V[sel, :K], Sk)
            V[sel, keep] = V[sel, K]
            T[sel] = 0.0
            idx = np.arange(keep)
            T[sel, idx, idx] = theta[:, K - keep :]
            coupling = beta[:, None] * S[:, K - 1, K - keep :]
            T[sel, keep, :keep] = coupling
            T[sel, :keep, keep] = coupling
            j = keep
            last_S = None
    if active.size:  # budget spent: report the best Ritz vector, verified
        if last_S is None or not np.array_equal(last_S[0], active) or last_S[1] != j:
            theta, S = np.linalg.eigh(T[active, :j, :j])
        else:
            _, _, S, theta = last_S
        wv = np.einsum("kjq,kj->kq", V[active, :j], S[:, :, -1])
        _verify(gram, wv, active, out, tol)


def _verify(gram, W, idx, out, tol):
    """One Gram product on unit vectors W: record the measured triplet; return residual <= tol."""
    W = W / np.linalg.norm(W, axis=1, keepdims=True)
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
    """log T_d(x) for x >= 1 and integer d >= 0, elementwise, without overflow."""
    a = np.arccosh(x)
    return np.where(d > 0, d * a + np.log1p(np.exp(-2.0 * d * a)) - math.log(2.0), 0.0)


def upper_bound_eps(q, power_degree, lanczos_dim, failure):
    """Smallest relative gap eps with P(lambda1 > theta / (1 - eps)) <= failure, for a Gaussian start.

    The final Rayleigh quotient theta is at least that of p(B) x0 for p(t) = t^P T_{d-1}(...)
    (Lanczos, first-cycle dimension d) or p(t) = t^P (power iteration, d = 0). Failure needs
    c1^2 / S < tau(eps) with c1 the component of x0 on v1 and S that on the rest; for Gaussian
    x0 this ratio is Beta(1/2, (q-1)/2)-distributed after the map r -> r / (1 + r).
    See docs/theory/spectral.rst.
    """
    from scipy.special import betainc

    power_degree = np.asarray(power_degree, dtype=np.float64)
    lanczos_dim = np.asarray(lanczos_dim)
    if q <= 1:
        return np.zeros(power_degree.shape)

    def log_tau(eps):
        P = power_degree
        base = (2 * P + 1) * np.log1p(-eps) - np.log(eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            power_max = np.where(P > 0, 2 * P * np.log(2 * P) - (2 * P + 1) * np.log(2 * P + 1), 0.0)
        cheb = 2 * _log_chebyshev(np.maximum(lanczos_dim - 1, 0), (1 + eps) / (1 - eps))
        return np.where(lanczos_dim > 0, base - cheb, base + power_max)

    def fail(eps):
        lt = np.minimum(log_tau(eps), 700.0)
        tau = np.exp(lt)
        return betainc(0.5, (q - 1) / 2.0, tau / (1.0 + tau))

    lo = np.full(power_degree.shape, -700.0)  # log eps
    hi = np.full(power_degree.shape, math.log(1 - 1e-16))
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        bad = fail(np.exp(mid)) > failure
        lo = np.where(bad, mid, lo)
        hi = np.where(bad, hi, mid)
    return np.exp(hi)
