"""Naive numpy twins of every numba kernel in linalg_lowrank._kernels."""

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
