"""numba kernels for stacks of symmetric factors (blocked Shampoo): plain arrays in, no validation.

Each kernel loops over the blocks of a C-contiguous float64 stack with ``prange``; every block
is independent and writes only its own slice of the outputs, so there is no shared accumulator.
The per-block work is LAPACK/BLAS called through numba (``np.linalg.eigh`` is ``dsyevd``,
``np.linalg.qr`` is ``dgeqrf`` + ``dorgqr``, ``@`` is ``dgemm``); callers limit BLAS to one
thread around these kernels so that the two levels of parallelism do not oversubscribe the cores.
Numpy twins live in ``tests/test_roots.py`` (``_ref_*``) and are compared there.
"""

import numpy as np
from numba import prange

from ._jit import jit


@jit(parallel=True)
def eigh_stack(A, w, Q):
    """w[b], Q[b] = eigh(A[b]) with eigenvalues in descending order (columns of Q to match)."""
    nb = A.shape[0]
    n = A.shape[1]
    for b in prange(nb):
        wb, Qb = np.linalg.eigh(A[b])
        for j in range(n):
            w[b, j] = wb[n - 1 - j]
            for i in range(n):
                Q[b, i, j] = Qb[i, n - 1 - j]


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
