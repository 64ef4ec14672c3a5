"""numba kernels for stacks of symmetric factors (blocked Shampoo): plain arrays in, no validation.

Each kernel loops over the blocks of a C-contiguous float64 stack with ``prange``; every block
is independent and writes only its own slice of the outputs, so there is no shared accumulator.
The per-block work is LAPACK/BLAS called through numba (``np.linalg.eigh`` is ``dsyevd``,
``np.linalg.qr`` is ``dgeqrf`` + ``dorgqr``, ``@`` is ``dgemm``); callers limit BLAS to one
thread around these kernels so that the two levels of parallelism do not oversubscribe the cores.
Numpy twins live in ``tests/reference.py``; ``tests/test_roots.py`` compares them.
"""

import numpy as np
from numba import prange

from ._jit import jit


@jit(parallel=True)
def eigh_stack(A, w, Q, Z, res):
    """w[b], Q[b] = eigh(A[b]) with eigenvalues in descending order (columns of Q to match).

    Also res[b] = ||A[b] Q[b] Z - Q[b] diag(w[b]) Z||_F / sqrt(k) for the k probe columns of Z,
    computed while the block is still in cache (the caller scales it by ||A[b]||_2).
    """
    nb = A.shape[0]
    n = A.shape[1]
    for b in prange(nb):
        wb, Qb = np.linalg.eigh(A[b])
        for j in range(n):
            w[b, j] = wb[n - 1 - j]
            for i in range(n):
                Q[b, i, j] = Qb[i, n - 1 - j]
        res[b] = probe_residual(A[b], Q[b], w[b], Z)


@jit
def probe_residual(A, Q, w, Z):
    """||A Q Z - Q diag(w) Z||_F / sqrt(k) for the k columns of Z (an estimate of ||A Q - Q diag(w)||_F)."""
    n = Q.shape[1]
    k = Z.shape[1]
    R = A @ (Q @ Z)
    WZ = np.empty((n, k))
    for j in range(n):
        for c in range(k):
            WZ[j, c] = w[j] * Z[j, c]
    R -= Q @ WZ
    s = 0.0
    for i in range(R.shape[0]):
        for c in range(k):
            s += R[i, c] * R[i, c]
    return np.sqrt(s / k)


@jit(parallel=True)
def refresh_stack(A, Q, Qout, lam, res, steps):
    """Warm-started refresh of every block: ``steps`` QR steps of subspace iteration from Q[b].

    Each step is W = A Q, Q = qr(W).Q with the signs of diag(R) made positive. Afterwards
    lam[b] = diag(Q^T A Q) (Rayleigh quotients) and res[b] = ||A Q - Q diag(lam)||_F, which equals
    the Frobenius norm of the off-diagonal part of Q^T A Q.
    """
    nb = A.shape[0]
    n = A.shape[1]
    for b in prange(nb):
        Ab = A[b]
        Qb = Q[b].copy()
        for _ in range(steps):
            W = Ab @ Qb
            Qn, R = np.linalg.qr(W)
            for j in range(n):
                if R[j, j] < 0.0:
                    for i in range(n):
                        Qn[i, j] = -Qn[i, j]
            Qb = np.ascontiguousarray(Qn)
        W = Ab @ Qb
        s = 0.0
        for j in range(n):
            d = 0.0
            for i in range(n):
                d += Qb[i, j] * W[i, j]
            lam[b, j] = d
            for i in range(n):
                r = W[i, j] - Qb[i, j] * d
                s += r * r
            for i in range(n):
                Qout[b, i, j] = Qb[i, j]
        res[b] = np.sqrt(s)


@jit(parallel=True)
def scaled_gram_stack(Q, d, out):
    """out[b] = Q[b] diag(d[b]) Q[b]^T, the matrix function from a cached eigendecomposition."""
    nb = Q.shape[0]
    n = Q.shape[1]
    for b in prange(nb):
        Qd = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                Qd[i, j] = Q[b, i, j] * d[b, j]
        out[b] = Qd @ Q[b].T


#: Tile edge of the transposing kernels: two 64x64 float64 tiles (64 KB) stay in L2 while the
#: second one is read across its rows.
_TILE = 64


def tile_pairs(n):
    """Work items per block of `symmetrize_stack` (and columns of its partial sums) for size n."""
    return (-(-n // _TILE) + 1) // 2


@jit
def _symmetrize_tile_row(A, out, b, ti, n, nt):
    """Tiles (ti, tj >= ti) of block b: write the symmetric part, return (||A-A^T||^2, ||A||^2) of them."""
    s_asym = 0.0
    s_sq = 0.0
    i0 = ti * _TILE
    i1 = min(n, i0 + _TILE)
    for tj in range(ti, nt):
        j0 = tj * _TILE
        j1 = min(n, j0 + _TILE)
        for i in range(i0, i1):
            for j in range(max(j0, i), j1):
                x = np.float64(A[b, i, j])
                y = np.float64(A[b, j, i])
                m = (x + y) * 0.5
                out[b, i, j] = m
                out[b, j, i] = m
                if j == i:
                    s_sq += x * x
                else:
                    d = x - y
                    s_asym += 2.0 * d * d
                    s_sq += x * x + y * y
    return s_asym, s_sq


@jit(parallel=True)
def symmetrize_stack(A, out, asym_sq, sq):
    """out[b] = (A[b] + A[b]^T) / 2 in float64; asym_sq[b, k], sq[b, k] = parts of ||A - A^T||_F^2, ||A||_F^2.

    One tiled pass: each pair of mirrored tiles is read once, so the transposed reads stay in
    cache (numpy's ``A - A.T`` walks one operand across rows). Work item (b, k) takes the tile
    rows k and nt - 1 - k, the same number of tiles for every k; its partial sums go to column k
    and the caller adds them, so results do not depend on the thread count. ``A`` may be float32
    or float64 in any layout; sums are in float64.
    """
    nb = A.shape[0]
    n = A.shape[1]
    nt = (n + _TILE - 1) // _TILE
    npairs = (nt + 1) // 2
    for item in prange(nb * npairs):
        b = item // npairs
        k = item % npairs
        a1, q1 = _symmetrize_tile_row(A, out, b, k, n, nt)
        a2 = 0.0
        q2 = 0.0
        if nt - 1 - k != k:
            a2, q2 = _symmetrize_tile_row(A, out, b, nt - 1 - k, n, nt)
        asym_sq[b, k] = a1 + a2
        sq[b, k] = q1 + q2


@jit
def _mirror_tile_row(X, ti, n):
    i0 = ti * _TILE
    i1 = min(n, i0 + _TILE)
    for tj in range(ti + 1):
        j0 = tj * _TILE
        j1 = min(n, j0 + _TILE)
        for i in range(i0, i1):
            for j in range(j0, min(j1, i)):
                X[j, i] = X[i, j]


@jit(parallel=True)
def mirror_lower(X):
    """Copy the lower triangle of the square X onto its upper triangle, in place, by tiles.

    Work item k takes the tile rows k and nt - 1 - k (balanced, as in ``symmetrize_stack``).
    """
    n = X.shape[0]
    nt = (n + _TILE - 1) // _TILE
    npairs = (nt + 1) // 2
    for k in prange(npairs):
        _mirror_tile_row(X, k, n)
        if nt - 1 - k != k:
            _mirror_tile_row(X, nt - 1 - k, n)
