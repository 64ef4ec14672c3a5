"""Naive numpy twins of every numba kernel in linalg_lowrank._kernels."""

import numpy as np


def gram_matvec(A, x):
    """(A @ x, A.T @ (A @ x)) in float64."""
    A = np.asarray(A, dtype=np.float64)
    y = A @ x
    return y, A.T @ y


def rank1_deflate_rows(W, v, decay):
    """(W - decay * (W @ v) v^T, W @ v) in float64 arithmetic, cast back to W's dtype."""
    W64 = np.asarray(W, dtype=np.float64)
    y = W64 @ v
    return (W64 - decay * np.outer(y, v)).astype(W.dtype), y
