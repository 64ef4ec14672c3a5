"""numba kernels: plain contiguous arrays in, no validation, no defaults.

Each kernel has a naive numpy twin in ``tests/reference.py`` and a property test against it.
Matrices may be float32 or float64; vectors and accumulators are float64, so float32 input
still yields float64-accurate products of the (exactly represented) float32 matrix.

The dot products use ``fastmath={"reassoc", "contract"}`` (see ``_jit.REASSOC``): without it LLVM
may not vectorize a reduction and the one-pass kernel is compute-bound at about half the memory
bandwidth. The summation order is still fixed by the compiled code, so results are reproducible,
and ``tests/test_kernels.py`` checks them against numpy within ``n * eps``.
"""

from numba import prange

from ._jit import REASSOC, jit


@jit(fastmath=REASSOC)
def _gram_rows(A, x, y, acc, lo, hi):
    # y[i] = A[i] . x and acc += y[i] * A[i] for rows lo..hi. Four rows at a time: x and acc
    # are loaded once per four rows, so the pass stays bound by reading A, not by cache traffic.
    n = A.shape[1]
    i = lo
    while i + 4 <= hi:
        r0 = A[i]
        r1 = A[i + 1]
        r2 = A[i + 2]
        r3 = A[i + 3]
        s0 = s1 = s2 = s3 = 0.0
        for j in range(n):
            xj = x[j]
            s0 += r0[j] * xj
            s1 += r1[j] * xj
            s2 += r2[j] * xj
            s3 += r3[j] * xj
        y[i] = s0
        y[i + 1] = s1
        y[i + 2] = s2
        y[i + 3] = s3
        for j in range(n):
            acc[j] += s0 * r0[j] + s1 * r1[j] + s2 * r2[j] + s3 * r3[j]
        i += 4
    while i < hi:
        r0 = A[i]
        s0 = 0.0
        for j in range(n):
            s0 += r0[j] * x[j]
        y[i] = s0
        for j in range(n):
            acc[j] += s0 * r0[j]
        i += 1


@jit(parallel=True)
def gram_matvec(A, x, y, z, scratch):
    """y = A @ x and z = A.T @ y in one pass over the rows of A.

    ``scratch`` has shape (n_chunks, n): one accumulator per chunk of rows, reduced serially
    afterwards in a fixed order, so the result depends only on ``n_chunks`` (set it from the
    thread count), never on scheduling.
    """
    m = A.shape[0]
    n_chunks = scratch.shape[0]
    for c in prange(n_chunks):
        acc = scratch[c]
        acc[:] = 0.0
        _gram_rows(A, x, y, acc, (c * m) // n_chunks, ((c + 1) * m) // n_chunks)
    z[:] = scratch[0]
    for c in range(1, n_chunks):
        z += scratch[c]


@jit
def gram_matvec_serial(A, x, y, z):
    """Single-threaded ``gram_matvec`` for small matrices (thread start-up would dominate)."""
    z[:] = 0.0
    _gram_rows(A, x, y, z, 0, A.shape[0])


@jit(parallel=True)
def gram_matvec_stack(A, X, Y, Z, active):
    """For each k in ``active``: Y[k] = A[k] @ X[k], Z[k] = A[k].T @ Y[k]; one matrix per thread."""
    for t in prange(active.shape[0]):
        k = active[t]
        Z[k, :] = 0.0
        _gram_rows(A[k], X[k], Y[k], Z[k], 0, A.shape[1])


@jit(fastmath=REASSOC)
def _deflate_row(row, v, decay, orow):
    s = 0.0
    for j in range(row.shape[0]):
        s += row[j] * v[j]
    c = decay * s
    for j in range(row.shape[0]):
        orow[j] = row[j] - c * v[j]
    return s


@jit(parallel=True)
def rank1_deflate_rows(W, v, decay, out, y):
    """out = W - decay * (W @ v) v^T and y = W @ v: one read and one write of W.

    ``out`` may be ``W`` itself (in place): row i is read before it is written.
    """
    for i in prange(W.shape[0]):
        y[i] = _deflate_row(W[i], v, decay, out[i])
