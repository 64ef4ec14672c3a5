"""numba kernels: plain contiguous arrays in, no validation, no defaults.

Each kernel has a naive numpy twin in ``tests/reference.py`` and a property test against it.
Matrices may be float32 or float64; vectors and accumulators are float64, so float32 input
still yields float64-accurate products of the (exactly represented) float32 matrix.

The dot products use ``fastmath={"reassoc", "contract"}`` (see ``_jit.REASSOC``): without it LLVM
may not vectorize a reduction and the one-pass kernel is compute-bound at about half the memory
bandwidth. The summation order is still fixed by the compiled code, so results are reproducible,
and ``tests/test_kernels.py`` checks them against numpy within ``n * eps``.
"""

import numpy as np
from numba import prange

from ._jit import REASSOC, jit

# Compile cost: numba compiles a callee once per argument-type signature and re-optimizes it inside
# every jitted caller. A literal 0 argument types as Literal[int](0), a second specialization of
# the callee; array-to-array slice assignment pulls in numba's broadcasting (with its error message
# formatting, seconds of compile time). Hence _ZERO and the _copy/_add loops below.
_ZERO = np.int64(0)


@jit(fastmath=REASSOC)
def _dot4(r0, r1, r2, r3, x):
    """(r0 . x, r1 . x, r2 . x, r3 . x) with x loaded once per element."""
    s0 = s1 = s2 = s3 = 0.0
    for j in range(x.shape[0]):
        xj = x[j]
        s0 += r0[j] * xj
        s1 += r1[j] * xj
        s2 += r2[j] * xj
        s3 += r3[j] * xj
    return s0, s1, s2, s3


@jit
def _copy(dst, src):
    """dst[:] = src for 1-D arrays of equal length."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@jit
def _add(dst, src):
    """dst += src for 1-D arrays of equal length."""
    for i in range(dst.shape[0]):
        dst[i] += src[i]


@jit(fastmath=REASSOC)
def _gram_rows(A, x, y, acc, lo, hi, ys, zs):
    # y[i] = (A[i] . x) * ys and acc += (y[i] * zs) * A[i] for rows lo..hi. Four rows at a time:
    # x and acc are loaded once per four rows, so the pass stays bound by reading A, not by cache
    # traffic. ys and zs are powers of two (1 for matrices of ordinary scale): exact, they keep the
    # products of matrices near the ends of the float range inside it (see _topsv.scale_factors).
    n = A.shape[1]
    i = lo
    while i + 4 <= hi:
        r0 = A[i]
        r1 = A[i + 1]
        r2 = A[i + 2]
        r3 = A[i + 3]
        s0, s1, s2, s3 = _dot4(r0, r1, r2, r3, x)
        s0 *= ys
        s1 *= ys
        s2 *= ys
        s3 *= ys
        y[i] = s0
        y[i + 1] = s1
        y[i + 2] = s2
        y[i + 3] = s3
        s0 *= zs
        s1 *= zs
        s2 *= zs
        s3 *= zs
        for j in range(n):
            acc[j] += s0 * r0[j] + s1 * r1[j] + s2 * r2[j] + s3 * r3[j]
        i += 4
    while i < hi:
        r0 = A[i]
        s0 = 0.0
        for j in range(n):
            s0 += r0[j] * x[j]
        s0 *= ys
        y[i] = s0
        s0 *= zs
        for j in range(n):
            acc[j] += s0 * r0[j]
        i += 1


@jit(parallel=True)
def gram_matvec(A, x, y, z, scratch, ys=1.0, zs=1.0):
    """y = ys * (A @ x) and z = ys * A.T @ (zs * y) in one pass over the rows of A.

    ``scratch`` has shape (n_chunks, n): one accumulator per chunk of rows, reduced serially
    afterwards in a fixed order, so the result depends only on ``n_chunks`` (set it from the
    thread count), never on scheduling. ``ys``, ``zs``: powers of two, 1 for plain products.
    """
    m = A.shape[0]
    n_chunks = scratch.shape[0]
    for c in prange(n_chunks):
        acc = scratch[c]
        acc[:] = 0.0
        _gram_rows(A, x, y, acc, (c * m) // n_chunks, ((c + 1) * m) // n_chunks, ys, zs)
    _copy(z, scratch[0])
    for c in range(1, n_chunks):
        _add(z, scratch[c])
    if ys != 1.0:
        z *= ys


@jit
def gram_matvec_serial(A, x, y, z, ys=1.0, zs=1.0):
    """Single-threaded ``gram_matvec`` for small matrices (thread start-up would dominate)."""
    z[:] = 0.0
    _gram_rows(A, x, y, z, _ZERO, A.shape[0], ys, zs)
    if ys != 1.0:
        z *= ys


@jit(parallel=True)
def gram_matvec_stack(A, X, Y, Z, active, ys, zs):
    """For each k in ``active``: ``gram_matvec_serial(A[k], X[k], Y[k], Z[k], ys[k], zs[k])``; one matrix per thread."""
    for t in prange(active.shape[0]):
        k = active[t]
        Z[k, :] = 0.0
        _gram_rows(A[k], X[k], Y[k], Z[k], _ZERO, A.shape[1], ys[k], zs[k])
        if ys[k] != 1.0:
            for j in range(Z.shape[1]):
                Z[k, j] *= ys[k]


@jit(fastmath=REASSOC)
def _deflate_rows(W, v, decay, out, y, acc, lo, hi):
    # out[i] = W[i] - decay * (W[i] . v) v and acc += (W[i] . v) W[i] with the old row. Four rows
    # at a time (v and acc are loaded once per four rows); each element is read before it is
    # written, so out may be W.
    n = W.shape[1]
    i = lo
    while i + 4 <= hi:
        r0 = W[i]
        r1 = W[i + 1]
        r2 = W[i + 2]
        r3 = W[i + 3]
        o0 = out[i]
        o1 = out[i + 1]
        o2 = out[i + 2]
        o3 = out[i + 3]
        s0, s1, s2, s3 = _dot4(r0, r1, r2, r3, v)
        y[i] = s0
        y[i + 1] = s1
        y[i + 2] = s2
        y[i + 3] = s3
        c0 = decay * s0
        c1 = decay * s1
        c2 = decay * s2
        c3 = decay * s3
        for j in range(n):
            a0 = r0[j]
            a1 = r1[j]
            a2 = r2[j]
            a3 = r3[j]
            vj = v[j]
            acc[j] += s0 * a0 + s1 * a1 + s2 * a2 + s3 * a3
            o0[j] = a0 - c0 * vj
            o1[j] = a1 - c1 * vj
            o2[j] = a2 - c2 * vj
            o3[j] = a3 - c3 * vj
        i += 4
    while i < hi:
        r0 = W[i]
        o0 = out[i]
        s0 = 0.0
        for j in range(n):
            s0 += r0[j] * v[j]
        y[i] = s0
        c0 = decay * s0
        for j in range(n):
            a0 = r0[j]
            acc[j] += s0 * a0
            o0[j] = a0 - c0 * v[j]
        i += 1


@jit(parallel=True)
def rank1_deflate_rows(W, v, decay, out, y, z, scratch):
    """out = W - decay * (W @ v) v^T, y = W @ v and z = W.T @ y: one read and one write of W.

    z is the next power-iteration direction, folded into the same pass. ``out`` may be ``W``
    itself (in place). ``scratch`` (n_chunks, n) as in ``gram_matvec``: a fixed reduction order.
    """
    m = W.shape[0]
    n_chunks = scratch.shape[0]
    for c in prange(n_chunks):
        acc = scratch[c]
        acc[:] = 0.0
        _deflate_rows(W, v, decay, out, y, acc, (c * m) // n_chunks, ((c + 1) * m) // n_chunks)
    _copy(z, scratch[0])
    for c in range(1, n_chunks):
        _add(z, scratch[c])


# --- the pieces of the Krylov engine (`_krylov`): scaled products, range checks, tridiagonal Ritz pairs ---


@jit(fastmath=REASSOC)
def _dot(a, b):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@jit
def _gram_product(M, x, y, z, scratch, ys, zs):
    if scratch.shape[0] > 1:
        gram_matvec(M, x, y, z, scratch, ys, zs)
    else:
        z[:] = 0.0
        _gram_rows(M, x, y, z, _ZERO, M.shape[0], ys, zs)
        if ys != 1.0:
            z *= ys


@jit
def _gram_step(M, x, y, z, scratch, c1, c2, xs):
    """y = c1 c2 M x and z = c1 c2 M^T y: products with the scaled matrix c1 c2 M (see ``gram_matvec``).

    x is multiplied by c1 before the pass (into ``xs``), the dot products by c2; with c1 = c2 = 1
    these are the plain products.
    """
    if c1 != 1.0:
        for t in range(x.shape[0]):
            xs[t] = x[t] * c1
        _gram_product(M, xs, y, z, scratch, c2, c1)
    else:
        _gram_product(M, x, y, z, scratch, c2, c1)


@jit
def _in_range(y, lo, hi):
    """True if max|y| is 0 or within [lo, hi] (False for NaN or Inf)."""
    top = 0.0
    for i in range(y.shape[0]):
        a = abs(y[i])
        if not a <= top:  # NaN compares False: caught here
            top = a
    if not np.isfinite(top):
        return False
    return top == 0.0 or (lo <= top <= hi)


@jit
def _gram_verify(M, w, y, z, scratch, c1, c2, xs):
    """Gram product of the unit vector w: returns (theta, relative residual ||z - theta w|| / theta)."""
    _gram_step(M, w, y, z, scratch, c1, c2, xs)
    theta = _dot(y, y)
    if theta == 0.0:
        return 0.0, 0.0
    r = 0.0
    for i in range(w.shape[0]):
        d = z[i] - theta * w[i]
        r += d * d
    return theta, np.sqrt(r) / theta


@jit
def _sturm_count(a, b, j, x):
    """Number of eigenvalues below x of the j x j symmetric tridiagonal (a diagonal, b off-diagonal)."""
    tiny = 1e-300
    count = 0
    d = a[0] - x
    if d == 0.0:
        d = -tiny
    if d < 0.0:
        count += 1
    for i in range(1, j):
        d = a[i] - x - b[i - 1] * b[i - 1] / d
        if d == 0.0:
            d = -tiny
        if d < 0.0:
            count += 1
    return count


@jit
def _tridiagonal_eigenvalue(a, b, j, below):
    """The eigenvalue with exactly ``below`` eigenvalues under it (j - 1: the largest), by bisection."""
    lo = np.inf
    hi = -np.inf
    for i in range(j):  # Gershgorin interval
        r = (abs(b[i - 1]) if i > 0 else 0.0) + (abs(b[i]) if i < j - 1 else 0.0)
        lo = min(lo, a[i] - r)
        hi = max(hi, a[i] + r)
    eps = np.finfo(np.float64).eps
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if hi - lo <= 2.0 * eps * max(abs(lo), abs(hi)) or mid == lo or mid == hi:
            break
        if _sturm_count(a, b, j, mid) > below:
            hi = mid
        else:
            lo = mid
    return hi


@jit
def _tridiagonal_solve(a, b, j, shift, rhs):
    """Solve (T - shift I) x = rhs in place for tridiagonal T, with partial pivoting (as LAPACK gtsv).

    Exactly zero pivots become tiny: this serves inverse iteration, where T - shift I is singular
    to working precision by design.
    """
    d = a[:j] - shift
    du = b[: max(j - 1, 0)].copy()
    dl = b[: max(j - 1, 0)].copy()
    du2 = np.zeros(max(j - 2, 0))
    scale = np.max(np.abs(a[:j])) + (np.max(np.abs(b[: j - 1])) if j > 1 else 0.0)
    tiny = np.finfo(np.float64).eps * scale if scale > 0.0 else 1.0
    for i in range(j - 1):
        if abs(d[i]) >= abs(dl[i]):
            if d[i] == 0.0:
                d[i] = tiny
            fact = dl[i] / d[i]
            d[i + 1] -= fact * du[i]
            rhs[i + 1] -= fact * rhs[i]
        else:
            fact = d[i] / dl[i]
            d[i] = dl[i]
            temp = d[i + 1]
            d[i + 1] = du[i] - fact * temp
            if i < j - 2:
                du2[i] = du[i + 1]
                du[i + 1] = -fact * du2[i]
            du[i] = temp
            temp = rhs[i]
            rhs[i] = rhs[i + 1]
            rhs[i + 1] = temp - fact * rhs[i + 1]
    if d[j - 1] == 0.0:
        d[j - 1] = tiny
    rhs[j - 1] /= d[j - 1]
    if j > 1:
        rhs[j - 2] = (rhs[j - 2] - du[j - 2] * rhs[j - 1]) / d[j - 2]
    for i in range(j - 3, -1, -1):
        rhs[i] = (rhs[i] - du[i] * rhs[i + 1] - du2[i] * rhs[i + 2]) / d[i]


@jit
def tridiagonal_top(a, b, j):
    """(largest eigenvalue, second largest or nan, unit eigenvector of the largest) of a tridiagonal."""
    top = _tridiagonal_eigenvalue(a, b, j, j - 1)
    second = _tridiagonal_eigenvalue(a, b, j, j - 2) if j >= 2 else np.nan
    s = np.ones(j)
    for _ in range(2):  # inverse iteration at an eigenvalue accurate to eps: two solves suffice
        _tridiagonal_solve(a, b, j, top, s)
        s /= np.sqrt(_dot(s, s))
    return top, second, s
