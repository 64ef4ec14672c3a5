"""Naive numpy twins of every numba kernel of the package, in one place.

Each twin computes what its kernel computes, written the obvious way (dense numpy, plain Python
loops), with results returned rather than written into ``out`` arrays. ``TWINS`` maps every public
kernel (``module.name``) to its twin; ``tests/test_markers.py`` checks that no kernel is missing
from it and that every twin is used by a test. A twin may serve several kernels when they compute
the same thing on different layouts (a serial and a parallel variant, one matrix and a stack).
"""

import math

import numpy as np

from linalg_lowrank import _dynamics_kernels

# ---------------------------------------------------------------------------- linalg_lowrank._kernels


def gram_matvec(A, x, ys=1.0, zs=1.0):
    """(ys A @ x, ys A.T @ (zs y)) in float64 (ys, zs powers of two; 1 for the plain products)."""
    A = np.asarray(A, dtype=np.float64)
    y = ys * (A @ x)
    return y, ys * (A.T @ (zs * y))


def rank1_deflate_rows(W, v, decay):
    """(W - decay * (W @ v) v^T, W @ v, W.T @ (W @ v)) in float64 arithmetic, the first cast to W's dtype."""
    W64 = np.asarray(W, dtype=np.float64)
    y = W64 @ v
    return (W64 - decay * np.outer(y, v)).astype(W.dtype), y, W64.T @ y


def tridiagonal_top(a, b):
    """(largest eigenvalue, second largest, eigenvector of the largest) by dense numpy eigh."""
    T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    w, V = np.linalg.eigh(T)
    return w[-1], (w[-2] if len(w) > 1 else np.nan), V[:, -1]


def top_eigenpair_of_gram(M):
    """(sigma1^2, right singular vector) of M by numpy's SVD: what every top-pair solver must find."""
    _, s, Vt = np.linalg.svd(np.asarray(M, dtype=np.float64), full_matrices=False)
    return s[0] ** 2, Vt[0]


# ---------------------------------------------------------------------------- linalg_lowrank._krylov


def power_steps(M, x0, steps):
    """The naive power loop on M^T M: (sqrt(theta), relative residual) of each of ``steps`` unit iterates."""
    M = np.asarray(M, dtype=np.float64)
    x = x0 / np.linalg.norm(x0)
    out = []
    for _ in range(steps):
        y = M @ x
        z = M.T @ y
        theta = y @ y
        out.append((np.sqrt(theta), np.linalg.norm(z - theta * x) / theta if theta > 0 else 0.0))
        if theta == 0:
            break
        x = z / np.linalg.norm(z)
    return out


def thick_restart_lanczos(gram_product, x0, *, tol, maxiter, K, keep):
    """Twin of the engine in ``linalg_lowrank._krylov``: thick-restart Lanczos for the top eigenpair of B.

    Straightforward numpy, driven by the same reverse-communication idea (``gram_product(x)``
    returns B x; nothing else touches B): full reorthogonalization, a dense eigensolve of the
    projected matrix at every step, a restart on the top ``keep`` Ritz vectors plus the newest
    Lanczos vector when the basis holds K vectors, and a stop once the Ritz residual estimate
    is below ``tol`` relative (then one product measures the Ritz vector). Returns
    (theta, w, measured relative residual, products used).
    """
    q = x0.shape[0]
    V = np.zeros((K + 1, q))
    T = np.zeros((K + 1, K + 1))
    V[0] = x0 / np.linalg.norm(x0)
    j = 0
    used = 0
    while used < maxiter - 1:
        z = gram_product(V[j])
        used += 1
        z, h = _orthogonalize(V[: j + 1], z)
        T[: j + 1, j] = T[j, : j + 1] = h
        beta = np.linalg.norm(z)
        V[j + 1] = z / beta if beta > 0 else 0.0
        T[j + 1, j] = T[j, j + 1] = beta
        j += 1
        theta, S = np.linalg.eigh(T[:j, :j])
        if abs(beta * S[j - 1, -1]) <= tol * theta[-1] or beta == 0 or j == q:
            break
        if j == K:
            V[:keep] = S[:, K - keep :].T @ V[:K]
            V[keep] = V[K]
            coupling = beta * S[K - 1, K - keep :]
            T[:] = 0.0
            T[np.arange(keep), np.arange(keep)] = theta[K - keep :]
            T[keep, :keep] = T[:keep, keep] = coupling
            j = keep
    if j == 0:
        w = V[0]
    else:
        theta, S = np.linalg.eigh(T[:j, :j])
        w = S[:, -1] @ V[:j]
        w = w / np.linalg.norm(w)
    z = gram_product(w)
    th = w @ z
    return th, w, np.linalg.norm(z - th * w) / th if th > 0 else 0.0, used + 1


def _orthogonalize(V, z):
    """(z made orthogonal to the rows of V by classical Gram-Schmidt twice, the coefficients V z)."""
    h = np.zeros(V.shape[0])
    for _ in range(2):
        c = V @ z
        z = z - c @ V
        h += c
    return z, h


def thick_restart_lanczos_pairs(gram_product, x0, nev, *, tol, floor, breakdown, maxiter, K, keep, fresh):
    """Twin of the engine's ``pairs`` mode (``_krylov.advance_pairs``, ``_krylov.pairs``): the nev largest pairs of B.

    Straightforward numpy, with a dense eigensolve after every product (the engine checks on a
    schedule and at every invariant subspace): full reorthogonalization; a Lanczos vector shorter
    than ``breakdown`` ulps of max|T| times sqrt(q) marks an invariant subspace, from which the
    basis continues along ``fresh()`` (a random vector from the caller) made orthogonal to it;
    converged when the top ``nev`` estimates |beta s_i| are at most tol * max(theta_i, floor
    theta_1), when the basis spans the space, or (once an invariant subspace was seen) when the
    next one has the same top ``nev`` values within those targets; a restart keeps the top
    ``keep`` Ritz vectors and the newest Lanczos vector. Returns (theta, W, products used,
    converged): the top min(nev, j) Ritz values, descending, and unit Ritz vectors as W's rows.
    """
    q = x0.shape[0]
    eps = np.finfo(np.float64).eps
    V = np.zeros((K + 1, q))
    T = np.zeros((K + 1, K + 1))
    V[0] = x0 / np.linalg.norm(x0)
    j = used = 0
    converged = False
    last = None  # the top nev Ritz values at the last invariant subspace
    while used < maxiter:
        z = gram_product(V[j])
        used += 1
        z, h = _orthogonalize(V[: j + 1], z)
        T[: j + 1, j] = T[j, : j + 1] = h
        beta = np.linalg.norm(z)
        invariant = beta <= breakdown * math.sqrt(q) * eps * np.abs(T[: j + 1, : j + 1]).max()
        beta = 0.0 if invariant else beta
        T[j + 1, j] = T[j, j + 1] = beta
        j += 1
        theta, S = np.linalg.eigh(T[:j, :j])
        top = max(theta[-1], 0.0)
        m = min(nev, j)
        target = tol * np.maximum(np.maximum(theta[j - m :], 0.0), floor * top)
        if j == q:
            converged = True
            break
        if invariant or top == 0:
            if j >= nev:
                if last is not None and last.size == m and np.all(np.abs(theta[j - m :] - last) <= target):
                    converged = True
                    break
                last = theta[j - m :].copy()
            else:
                last = theta[:0]
            if used >= maxiter:
                break
            r = fresh()
            for _ in range(2):
                r = r - (V[:j] @ r) @ V[:j]
            V[j] = r / np.linalg.norm(r)
        else:
            if j >= nev and last is None and np.all(np.abs(beta * S[j - 1, j - m :]) <= target):
                converged = True
                break
            if used >= maxiter:
                break
            V[j] = z / beta
        if j == K:
            V[:keep] = S[:, K - keep :].T @ V[:K]
            V[keep] = V[K]
            coupling = T[K, K - 1] * S[K - 1, K - keep :]
            T[:] = 0.0
            T[np.arange(keep), np.arange(keep)] = theta[K - keep :]
            T[keep, :keep] = T[:keep, keep] = coupling
            j = keep
    theta, S = np.linalg.eigh(T[:j, :j])
    m = min(nev, j)
    return theta[j - m :][::-1], S[:, j - m :][:, ::-1].T @ V[:j], used, converged


# ------------------------------------------------------------------- linalg_lowrank._hutchinson_kernels


def symmetry_scan(A, tile):
    """(max |A| on and above the diagonal tiles, max |A - A^T|, all finite)."""
    block = np.arange(A.shape[0]) // tile
    upper = block[None, :] >= block[:, None]
    return np.abs(A[upper]).max(), np.abs(A - A.T).max(), bool(np.isfinite(A).all())


def signs_from_top_bit(u):
    """+1.0 where the top bit of the uint32 is set, else -1.0."""
    return np.where(np.asarray(u, dtype=np.uint32) >= 2**31, 1.0, -1.0)


def row_mean_var(X, Y):
    """Mean and sample variance (ddof=1) of every row of X * Y."""
    samples = X * Y
    return samples.mean(axis=1), samples.var(axis=1, ddof=1)


# ------------------------------------------------------------------------ linalg_lowrank._roots_kernels


def eigh_stack(A):
    """Eigenvalues (descending) and eigenvectors of every symmetric matrix of the stack."""
    w, Q = np.linalg.eigh(A)
    return w[:, ::-1], Q[:, :, ::-1]


def probe_residual(A, Q, w, Z):
    """RMS over the probe columns of ||A Q Z - Q diag(w) Z||: how far (w, Q) is from eigenpairs of A."""
    R = A @ (Q @ Z) - Q @ (w[:, None] * Z)
    return math.sqrt(np.sum(R * R) / Z.shape[1])


def refresh_stack(A, Q, steps):
    """``steps`` subspace-iteration steps (QR with positive diagonal) from Q, then Ritz values and residual norms."""
    Qs = Q.copy()
    for _ in range(steps):
        Qn, R = np.linalg.qr(A @ Qs)
        Qs = Qn * np.sign(np.diagonal(R, axis1=1, axis2=2))[:, None, :]
    W = A @ Qs
    lam = np.einsum("bij,bij->bj", Qs, W)
    res = np.linalg.norm(W - Qs * lam[:, None, :], axis=(1, 2))
    return Qs, lam, res


def scaled_gram_stack(Q, d):
    """Q diag(d) Q^T for every matrix of the stack."""
    return np.matmul(Q * d[:, None, :], np.swapaxes(Q, 1, 2))


def symmetrize_stack(A):
    """((A + A^T) / 2 in float64, sum of (A - A^T)^2, sum of A^2) per matrix of the stack."""
    A64 = np.asarray(A, dtype=np.float64)
    At = np.swapaxes(A64, -1, -2)
    return (A64 + At) * 0.5, np.sum((A64 - At) ** 2, axis=(-2, -1)), np.sum(A64**2, axis=(-2, -1))


def mirror_lower(X):
    """The symmetric matrix whose lower triangle is that of X."""
    return np.tril(X) + np.tril(X, -1).T


# --------------------------------------------------------------------- linalg_lowrank._dynamics_kernels
_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_GAMMA_STREAM = 0xD1B54A32D192ED03


def mix64(z):
    """SplitMix64 finalizer on Python integers, reduced modulo 2^64 by hand."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_start(seed, i):
    """Initial SplitMix64 state of coordinate i's stream."""
    return mix64((mix64(seed) + (i + 1) * _GAMMA_STREAM) & _MASK64)


def uniform(z):
    """A uniform in (0, 1) from the top 53 bits of z."""
    return ((z >> 11) + 0.5) * 2.0**-53


def _normal_stream(seed, i, count):
    """Doornik's ZIGNOR on SplitMix64, written from the paper: one coordinate's stream."""
    s = stream_start(seed, i)
    X, R = _dynamics_kernels.ZIG_X, _dynamics_kernels.ZIG_RATIO
    tail = _dynamics_kernels.ZIG_R
    out = []

    def draw():
        nonlocal s
        s = (s + _GAMMA) & _MASK64
        return mix64(s)

    while len(out) < count:
        while True:
            z = draw()
            u = 2.0 * uniform(z) - 1.0
            j = z & 127
            if abs(u) < R[j]:
                x = u * X[j]
                break
            if j == 0:
                while True:
                    x = math.log(uniform(draw())) / tail
                    y = math.log(uniform(draw()))
                    if -2.0 * y >= x * x:
                        break
                x = x - tail if u < 0 else tail - x
                break
            x = u * X[j]
            f0 = math.exp(-0.5 * (X[j] * X[j] - x * x))
            f1 = math.exp(-0.5 * (X[j + 1] * X[j + 1] - x * x))
            if f1 + uniform(draw()) * (f0 - f1) < 1.0:
                break
        out.append(x)
    return np.array(out)


def normals(seed, n, count):
    """(n, count) array: row i holds the first ``count`` normals of coordinate i's stream."""
    return np.array([_normal_stream(seed, i, count) for i in range(n)]).reshape(n, count)


def simulate(optimizer, theta0, mu, sd, lr, wd, beta1, beta2, eps, xi, record_every):
    """Naive numpy loop of the simulator's updates, given the normals xi of shape (n, steps).

    Returns the weight RMS and update RMS at step 0 and every ``record_every`` steps.
    """
    n, steps = xi.shape
    lr = np.broadcast_to(lr, (steps,))
    wd = np.broadcast_to(wd, (steps,))
    th = theta0.copy()
    m = np.zeros(n)
    v = np.zeros(n)
    b1t = b2t = 1.0
    w_rec, u_rec = [np.sqrt(np.mean(th**2))], [np.nan]
    for t in range(steps):
        g = mu + sd * xi[:, t]
        eta, lam = lr[t], wd[t]
        if optimizer == "signsgdm":
            m = beta1 * m + (1 - beta1) * g
            u = np.sign(m)
            th = (1 - eta * lam) * th - eta * u
        elif optimizer == "sgdm":
            m = beta1 * m + (g + lam * th)
            u = m
            th = th - eta * u
        else:
            if optimizer == "adam":
                g = g + lam * th
            b1t *= beta1
            b2t *= beta2
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            u = (m * (1 / (1 - b1t))) / (np.sqrt(v) * (1 / np.sqrt(1 - b2t)) + eps)
            th = (1 - eta * lam) * th - eta * u if optimizer == "adamw" else th - eta * u
        if (t + 1) % record_every == 0:
            w_rec.append(np.sqrt(np.mean(th**2)))
            u_rec.append(np.sqrt(np.mean(u**2)))
    return np.array(w_rec), np.array(u_rec)


def ema_moments(decay, gain, cov):
    """First and second moments of an EMA of correlated inputs by direct double sums (O(T^3)), and survival."""
    T = decay.shape[0]
    first, second, survive = np.empty(T), np.empty(T), np.empty(T)
    c = np.concatenate([cov, np.zeros(T)])
    for t in range(T):
        w = np.array([gain[s] * np.prod(decay[s + 1 : t + 1]) for s in range(t + 1)])
        lag = np.abs(np.subtract.outer(np.arange(t + 1), np.arange(t + 1)))
        first[t] = w.sum()
        second[t] = w @ c[lag] @ w
        survive[t] = np.prod(decay[: t + 1])
    return first, second, survive


TWINS = {
    "_kernels.gram_matvec": gram_matvec,
    "_kernels.gram_matvec_serial": gram_matvec,
    "_kernels.gram_matvec_stack": gram_matvec,
    "_kernels.rank1_deflate_rows": rank1_deflate_rows,
    "_kernels.tridiagonal_top": tridiagonal_top,
    "_krylov.start": thick_restart_lanczos,
    "_krylov.advance": thick_restart_lanczos,
    "_krylov.solve_stack": thick_restart_lanczos,
    "_krylov.advance_pairs": thick_restart_lanczos_pairs,
    "_krylov.pairs": thick_restart_lanczos_pairs,
    "_hutchinson_kernels.symmetry_scan": symmetry_scan,
    "_hutchinson_kernels.signs_from_top_bit": signs_from_top_bit,
    "_hutchinson_kernels.row_mean_var": row_mean_var,
    "_roots_kernels.eigh_stack": eigh_stack,
    "_roots_kernels.probe_residual": probe_residual,
    "_roots_kernels.refresh_stack": refresh_stack,
    "_roots_kernels.scaled_gram_stack": scaled_gram_stack,
    "_roots_kernels.symmetrize_stack": symmetrize_stack,
    "_roots_kernels.mirror_lower": mirror_lower,
    "_dynamics_kernels.mix64": mix64,
    "_dynamics_kernels.stream_start": stream_start,
    "_dynamics_kernels.uniform": uniform,
    "_dynamics_kernels.normal": normals,
    "_dynamics_kernels.normals": normals,
    "_dynamics_kernels.simulate": simulate,
    "_dynamics_kernels.ema_moments": ema_moments,
}
