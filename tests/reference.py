"""Naive numpy twins of every numba kernel in linalg_lowrank._kernels and of the engine in _krylov."""

import numpy as np


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
    """(sigma1^2, right singular vector) of M by numpy's SVD."""
    _, s, Vt = np.linalg.svd(np.asarray(M, dtype=np.float64), full_matrices=False)
    return s[0] ** 2, Vt[0]


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
        h = np.zeros(j + 1)
        for _ in range(2):
            c = V[: j + 1] @ z
            z = z - c @ V[: j + 1]
            h += c
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
