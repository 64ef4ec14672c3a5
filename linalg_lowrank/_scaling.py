"""Exact power-of-two scaling for scale-invariant problems at the ends of the float range.

Multiplying by 2^e changes only the exponent of every (normal) number, so a problem whose answer
scales with its input (singular values, eigenvalues, roots, cores, products) is solved on
2^-e A, where nothing overflows or underflows, and the answer is scaled back. Used by the
low-rank, roots and Kronecker families.
"""

import math

import numpy as np


def pow2_normalize(arr, *, always=False):
    """(arr * 2^-e, e) with the largest |entry| in [0.5, 1), or (arr, 0) uncopied.

    Without ``always`` the array is left alone unless its largest entry is beyond 2^(maxexp/4)
    or below 2^(-maxexp/4) of its dtype: a Gram-like product squares the entries and sums many of
    them, and a quarter of the exponent range leaves room for both. NaN/Inf give (arr, 0), for the
    caller's own check to name.
    """
    if arr.size == 0:
        return arr, 0
    with np.errstate(invalid="ignore"):
        amax = max(float(np.max(arr)), -float(np.min(arr)))
    e = pow2_exponent(amax, arr.dtype, always=always)
    if e == 0:
        return arr, 0
    return np.ldexp(arr, -e).astype(arr.dtype, copy=False), e


def pow2_exponent(amax, dtype, *, always=False):
    """The e of `pow2_normalize` for an array of ``dtype`` whose largest |entry| is ``amax`` (0: leave it)."""
    if amax == 0.0 or not math.isfinite(amax):
        return 0
    e = math.frexp(amax)[1]
    if not always and abs(e) <= np.finfo(dtype).maxexp // 4:
        return 0
    return e


def ldexp_float(x, e):
    """x * 2^e as a Python float, inf when beyond the float64 range."""
    try:
        return math.ldexp(float(x), int(e))
    except OverflowError:
        return math.inf


def unscale(x, e, dtype, what):
    """x * 2^e (e may be fractional) in ``dtype``; a ValueError naming ``what`` if it overflows."""
    x64 = np.asarray(x, dtype=np.float64)
    top = float(np.max(np.abs(x64))) if x64.size else 0.0
    if top > 0 and math.log2(top) + e > math.log2(np.finfo(dtype).max):
        raise ValueError(
            f"{what} {np.dtype(dtype).name} (about 2^{math.log2(top) + e:.0f}); the answer is not representable"
        )
    if e == 0:
        return x64.astype(dtype, copy=False)
    ie = math.floor(e)
    return np.ldexp(x64 * 2.0 ** (e - ie), ie).astype(dtype, copy=False)


#: `sum_of_squares` adds float64 dot products of at most this many entries with `math.fsum`, so
#: its relative error is at most SUMSQ_CHUNK * eps(float64) (2.9e-11) whatever the array's size.
SUMSQ_CHUNK = 1 << 18


def float64_chunks(a):
    """The entries of a 1-D or 2-D array as float64 flat chunks of at most SUMSQ_CHUNK, in order.

    A contiguous array is cut in its memory order without a copy (float64) or converted into one
    reused buffer (float32: a fresh 2 MB array per chunk would cost a page fault per page); other
    views go by rows, copying a chunk's rows. Each chunk is valid until the next is asked for.
    """
    buffer = None

    def as_float64(piece):
        nonlocal buffer
        if piece.dtype == np.float64:
            return piece
        if buffer is None:
            buffer = np.empty(SUMSQ_CHUNK)
        out = buffer[: piece.size]
        np.copyto(out, piece)
        return out

    if a.ndim <= 1 or a.flags.c_contiguous or a.flags.f_contiguous:
        flat = a.ravel(order="K")
        for i in range(0, flat.size, SUMSQ_CHUNK):
            yield as_float64(flat[i : i + SUMSQ_CHUNK])
        return
    rows = max(1, SUMSQ_CHUNK // max(1, a.shape[1]))
    for i in range(0, a.shape[0], rows):
        flat = np.ravel(a[i : i + rows])
        for j in range(0, flat.size, SUMSQ_CHUNK):
            yield as_float64(flat[j : j + SUMSQ_CHUNK])


def sum_of_squares(a):
    """||a||_F^2 summed in float64 to a relative error of at most SUMSQ_CHUNK * eps(float64)."""
    return math.fsum(float(np.dot(c, c)) for c in float64_chunks(a))
