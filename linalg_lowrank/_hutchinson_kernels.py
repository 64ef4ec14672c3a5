"""numba kernels of hutchinson.py: plain contiguous arrays in, no validation, no defaults.

Numpy twins live in ``tests/reference.py``; ``tests/test_hutchinson.py`` compares them.
"""

import numpy as np

from ._jit import REASSOC, jit


@jit
def symmetry_scan(A, tile):
    """(m, max |A_ij - A_ji|, finite) of a square C-contiguous A in one pass, tile pair by tile pair.

    m is the largest |A_ij| on or above the diagonal tiles (the entries read directly; the
    mirrored ones enter only through A_ij - A_ji), so max |A| <= m + max |A_ij - A_ji|.
    ``finite`` is False if any entry is NaN or Inf (or |A_ij| + |A_ij - A_ji| overflows). Each
    tile is compared with its mirror while both are in cache, so A is read once (about twice
    the time of one streaming pass, for the transposed reads). Serial on purpose: a ``prange``
    version was 15% faster alone, but it runs next to the user's BLAS products, and the two
    thread pools spinning after each other's calls cost more (measured on 2 cores, n = 4000:
    the product after the parallel scan 10 ms slower, and the parallel scan right after a
    product 35 ms instead of 19 ms).
    """
    n = A.shape[0]
    amax = 0.0
    dmax = 0.0
    finite = True
    for i0 in range(0, n, tile):
        i1 = min(i0 + tile, n)
        for j0 in range(i0, n, tile):
            j1 = min(j0 + tile, n)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    x = A[i, j]
                    ax = abs(x)
                    d = abs(x - A[j, i])
                    if ax > amax:
                        amax = ax
                    if d > dmax:
                        dmax = d
                    if not (ax + d < np.inf):  # NaN fails every comparison
                        finite = False
    return amax, dmax, finite


@jit
def signs_from_top_bit(u, out):
    """out[i] = +1.0 if the top bit of the uint32 u[i] is set, else -1.0 (``2 * bit - 1``)."""
    for i in range(u.shape[0]):
        out[i] = 2.0 * (u[i] >> 31) - 1.0


@jit(fastmath=REASSOC)
def row_mean_var(X, Y, mean, var):
    """mean[i], var[i] = mean and sample variance (ddof=1) of the row X[i] * Y[i], two-pass."""
    n, k = X.shape
    for i in range(n):
        x = X[i]
        y = Y[i]
        s = 0.0
        for j in range(k):
            s += x[j] * y[j]
        m = s / k
        ss = 0.0
        for j in range(k):
            d = x[j] * y[j] - m
            ss += d * d
        mean[i] = m
        var[i] = ss / (k - 1)
