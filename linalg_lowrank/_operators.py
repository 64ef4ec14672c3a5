"""One adapter from every input kind to the products the algorithms need.

ndarray (any layout, views, ``numpy.memmap``), stacks of matrices, ``scipy.sparse`` matrices,
``scipy.sparse.linalg.LinearOperator`` and objects with ``matvec``/``rmatvec`` all become an
object with ``shape``, ``dtype`` and products with A and A^T. The spectral solvers work with the
Gram operator of the smaller side; dense arrays get the one-pass numba kernel for it.

Non-finite products are caught here: a NaN or Inf entry of a dense A always makes A @ x
non-finite (NaN * 0 is NaN), so checking each product output, which costs O(m + n), replaces
an O(mn) scan of A up front.

Scale. The Gram operator squares the scale of A (its products are of order sigma^2, residual
sums of squares of order sigma^4), so float64 matrices far from 1 would under- or overflow.
Every Gram operator therefore multiplies by ``2^-e A`` for a per-matrix exponent ``e`` (0 unless
needed; powers of two are exact, so no rounding is added). The first product of a solve shows
whether the scale is ordinary; if it is not, or a product overflows, `Rescale` is raised, the
adapter reads ``e`` off max|A| (or probes an operator) and the solve starts again. Results carry
``e`` and the caller multiplies sigma by ``2^e``.
"""

import math

import numba
import numpy as np

from . import _kernels, _validate, config
from .config import PARALLEL_MIN_ENTRIES


class Rescale(Exception):
    """A product left the safe range of an unscaled Gram operator: rescale and solve again."""


def scale_factors(exponent):
    """(c1, c2), powers of two with c1 * c2 = 2^-e, for products with 2^-e A (see ``_kernels.gram_matvec``).

    The vector is multiplied by c1 before the pass and the dot products by c2: splitting the
    factor keeps both the scaled vector and the partial sums normal for any e in the range of
    the exponents of finite floats (|e| <= 1074).
    """
    e = np.asarray(exponent, dtype=np.int64)
    split = config.SCALE_SPLIT_LOG2
    e1 = np.clip(e, -split, split)
    return np.ldexp(1.0, -e1), np.ldexp(1.0, -(e - e1))


def exponent_of(amax):
    """e with 2^(e-1) <= amax < 2^e (0 for amax = 0): dividing by 2^e brings amax into [0.5, 1)."""
    amax = np.asarray(amax, dtype=np.float64)
    e = np.frexp(amax)[1].astype(np.int64)
    return np.where(amax > 0, e, 0)


def unit_rows(X):
    """Rows of X divided by their norm, first scaled by a power of two so that no square under- or overflows.

    Zero rows stay zero.
    """
    X = np.asarray(X, dtype=np.float64)
    sq = np.einsum("ij,ij->i", X, X)  # einsum raises no floating-point warnings; the range test follows
    lo, hi = config.UNIT_ROWS_SAFE_NORMS
    small, large = (float(sq[0]),) * 2 if sq.size == 1 else (sq.min(), sq.max())
    if lo * lo < small and large < hi * hi:  # the usual case: no rescaling pass
        return X / np.sqrt(sq)[:, None]
    top = np.abs(X).max(axis=1)
    Y = np.ldexp(X, -exponent_of(top)[:, None])  # exact: max |row| in [0.5, 1)
    norms = np.linalg.norm(Y, axis=1, keepdims=True)
    return Y / np.where(norms > 0, norms, 1.0)


def _check_product(name, what, out, shape):
    if out.shape != shape:
        raise ValueError(f"`{name}`: {what} returned shape {out.shape}, expected {shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"`{name}`: {what} returned NaN or Inf")
    return out


class _GramBase:
    """Shared bookkeeping: counts of products and passes over A, and the scale of each problem.

    ``exponent[k]``: the products are those of 2^-e A_k. ``scaled``: the exponents were chosen
    (by `rescale`), so a product out of range is an error, not a reason to rescale.
    """

    def __init__(self, name, shape, dtype, batch):
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.batch = batch
        self.n_products = 0  # products with A plus products with A^T
        self.n_passes = 0  # reads of the whole of A
        self.scaled = False
        self.exponent = np.zeros(batch, dtype=np.int64)  # set_exponent(0), inlined: this runs on every call
        self.c1 = self.c2 = np.ones(batch)
        self._plain = True
        self._fresh = np.ones(batch, dtype=bool)

    def set_exponent(self, exponent):
        self.exponent = np.asarray(exponent, dtype=np.int64).copy()
        self._plain = not self.exponent.any()
        if self._plain:  # the usual case, kept cheap: small solves take tens of microseconds
            self.c1 = self.c2 = np.ones(self.exponent.shape)
        else:
            self.c1, self.c2 = scale_factors(self.exponent)

    def begin(self):
        """A new solve starts: its first product of each problem is range-checked."""
        self._fresh[:] = True

    def range_bounds(self):
        """[lo, hi] that max|A x| of a first product must lie in (anything goes once scaled)."""
        if self.scaled:
            return 0.0, math.inf
        k = config.SCALE_SAFE_LOG2
        return math.ldexp(1.0, -k), math.ldexp(1.0, k)

    def _check(self, Y, Z, active):
        """Raise `Rescale` if a product is out of range and the scale is still open, or the error."""
        Ya, Za = Y[active], Z[active]
        if not (np.isfinite(Ya).all() and np.isfinite(Za).all()):
            if not self.scaled:
                raise Rescale
            self.fail()
        fresh = self._fresh[active]
        if fresh.any() and not self.scaled:
            lo, hi = self.range_bounds()
            top = np.abs(Ya[fresh]).max(axis=1)
            if np.any((top != 0) & ((top < lo) | (top > hi))):
                raise Rescale
        self._fresh[active] = False

    @property
    def gram_dim(self):
        """Length of the vectors the Gram operator acts on."""
        return self.shape[0] if self.left else self.shape[1]

    @property
    def other_dim(self):
        return self.shape[1] if self.left else self.shape[0]


class DenseGram(_GramBase):
    """Gram products of a stack of dense matrices, shape (b, m, n), by the one-pass kernel.

    The kernel reads rows, so it runs on whichever of A and A^T is C-contiguous; ``left`` is
    True when the Gram operator is A A^T (vectors live on the left side, u).
    """

    passes_per_gram = 1  # the one-pass kernel reads A once per Gram product

    def __init__(self, name, stack, left, source):
        b, p, q = stack.shape
        super().__init__(name, (q, p) if left else (p, q), stack.dtype, b)
        # (b, p, q) C-contiguous; the Gram operator is M^T M, of size q. Always a read-only view:
        # numba compiles writable and read-only (memory-mapped) arrays as separate specializations,
        # and one per dtype is seconds of compile time less.
        self.mat = stack.view()
        self.mat.flags.writeable = False
        self.left = left
        self._source = source  # the caller's array, scanned only to word an error
        self._parallel_single = b == 1 and p * q >= PARALLEL_MIN_ENTRIES
        n_chunks = max(1, min(numba.get_num_threads(), p))
        self._scratch = np.empty((n_chunks, q)) if self._parallel_single else None

    def subset(self, idx):
        """The Gram operator of the matrices ``idx`` of the stack, with their scale."""
        sub = DenseGram(self.name, np.ascontiguousarray(self.mat[idx]), self.left, self._source)
        sub.scaled = self.scaled
        sub.set_exponent(self.exponent[idx])
        return sub

    def gram(self, X, active):
        """Return (Y, Z) with Y[k] = M'_k X[k] and Z[k] = M'_k^T Y[k] for k in ``active``, M'_k = 2^-e_k M_k."""
        b, p, q = self.mat.shape
        Y = np.zeros((b, p))
        Z = np.zeros((b, q))
        if not self._plain:
            X = X * self.c1[:, None]
        if b == 1:
            if self._parallel_single:
                _kernels.gram_matvec(self.mat[0], X[0], Y[0], Z[0], self._scratch, self.c2[0], self.c1[0])
            else:
                _kernels.gram_matvec_serial(self.mat[0], X[0], Y[0], Z[0], self.c2[0], self.c1[0])
        else:
            _kernels.gram_matvec_stack(self.mat, X, Y, Z, active, self.c2, self.c1)
        self.n_products += 2
        self.n_passes += 1
        self._check(Y, Z, active)
        return Y, Z

    def matvec_start(self, V0):
        """M'_k V0[k] for every k: the Gram-space start from a right vector when ``left``."""
        with np.errstate(all="ignore"):  # under- or overflow is handled below, NaN named by fail()
            X = np.einsum("bnm,bn->bm", self.mat, V0 * self.c1[:, None]) * self.c2[:, None]
        if not np.isfinite(X).all():
            if self.scaled:
                self.fail()
            self.rescale()
            return self.matvec_start(V0)
        return X

    def rescale(self):
        """Choose each exponent from max|A_k| (one pass over A; only after a product showed the need)."""
        flat = self.mat.reshape(self.batch, -1)
        with np.errstate(invalid="ignore"):
            amax = np.maximum(flat.max(axis=1), -flat.min(axis=1)).astype(np.float64)
        if not np.isfinite(amax).all():
            self.fail()
        self.set_exponent(exponent_of(amax))
        self.scaled = True

    def fail(self):
        """Raise the right error for a product that is not finite: NaN/Inf in A, or overflow."""
        _validate.finite(self.name, self._source)
        raise ValueError(f"`{self.name}`: products overflowed although its entries are finite")

    def check_finite(self, *products):
        """`fail` if a product is not finite (products of the numba drivers, checked after the fact)."""
        if not all(np.isfinite(P).all() for P in products):
            self.fail()


class OperatorGram(_GramBase):
    """Gram products of a single matrix-free operator through its matvec and rmatvec."""

    passes_per_gram = 2  # matvec and rmatvec cannot be fused

    def __init__(self, name, op):
        shape = tuple(int(s) for s in op.shape)
        dtype = np.dtype(getattr(op, "dtype", None) or np.float64)
        super().__init__(name, shape, dtype, 1)
        self.op = op
        self.left = shape[0] < shape[1]  # iterate on the smaller side

    def _product(self, what, x):
        fn, size = (self.op.matvec, self.shape[0]) if what == "matvec" else (self.op.rmatvec, self.shape[1])
        with np.errstate(all="ignore"):  # a NaN product is reported by _check_product, by name
            try:
                out = fn(x)
            except NotImplementedError:
                raise _missing_rmatvec(self.name, what) from None
            out = np.asarray(out, dtype=np.float64).reshape(-1)
        if out.shape == (size,) and not np.isfinite(out).all() and not self.scaled:
            raise Rescale  # overflow of an operator of extreme scale, or NaN: rescale decides which
        return _check_product(self.name, what, out, (size,))

    def _matvec(self, x):
        return self._product("matvec", x)

    def _rmatvec(self, y):
        return self._product("rmatvec", y)

    def gram(self, X, active):
        c1, c2 = self.c1[0], self.c2[0]
        first, second = (self._rmatvec, self._matvec) if self.left else (self._matvec, self._rmatvec)
        if self._plain:
            y = first(X[0])
            z = second(y)
        else:
            y = first(X[0] * c1) * c2
            z = second(y * c1) * c2
        self.n_products += 2
        self.n_passes += 2
        Y, Z = y[None, :], z[None, :]
        self._check(Y, Z, np.arange(1))
        return Y, Z

    def matvec_start(self, V0):
        """A' v0 (a left start vector from a right one)."""
        while True:
            try:
                c1, c2 = self.c1[0], self.c2[0]
                return (self._matvec(V0[0] * c1) * c2)[None, :]
            except Rescale:
                self.rescale()

    def rescale(self):
        """Choose the exponent: from max|A| for sparse matrices, else by probing ||A x|| at a few scales of x."""
        amax = getattr(self.op, "max_abs", None)
        if amax is not None:
            e = int(exponent_of(amax()))
        else:
            e = 0
            x = np.random.default_rng(0).standard_normal(self.shape[1])
            x /= np.linalg.norm(x)
            for k in config.SCALE_PROBE_LOG2:
                with np.errstate(all="ignore"):
                    try:
                        y = np.asarray(self.op.matvec(np.ldexp(x, -k)), dtype=np.float64).reshape(-1)
                    except NotImplementedError:
                        raise _missing_rmatvec(self.name, "matvec") from None
                top = float(np.abs(y).max()) if y.size else 0.0
                if math.isfinite(top) and top > 0 and abs(math.frexp(top)[1]) < 1000:
                    e = int(exponent_of(top)) + k
                    break
        self.scaled = True
        self.set_exponent(np.array([e]))

    def fail(self):
        raise ValueError(f"`{self.name}`: products overflowed")

    def check_finite(self, *products):
        if not all(np.isfinite(P).all() for P in products):
            self.fail()


def _missing_rmatvec(name, what):
    return TypeError(
        f"`{name}` must provide {what} ({'A^T' if what == 'rmatvec' else 'A'} products); "
        f"its {what} raised NotImplementedError. The spectral solvers need products with A and A^T"
    )


def _is_operator(A):
    return hasattr(A, "matvec") and hasattr(A, "rmatvec") and hasattr(A, "shape")


def _is_sparse(A):
    return hasattr(A, "toarray") and hasattr(A, "tocsr")


def as_gram(A, name="A"):
    """Return ``(gram_operator, batch_shape)`` for a matrix, a stack or a LinearOperator.

    Dense input is checked for dtype, ndim and size here; finiteness is checked on the
    products (see the module docstring). Integer, complex, object and 0-size input raises.
    """
    from . import _dask  # here, not at the top: _dask builds on this module

    if _dask.is_dask_array(A):
        return _dask.DaskGram(name, A), ()
    if _dask.is_out_of_core(A):
        rows = max(1, config.OUT_OF_CORE_BLOCK_BYTES // (A.shape[1] * A.itemsize))
        return _dask.DaskGram(name, _dask.from_memmap(A, rows), persist=False), ()
    if _is_sparse(A):
        _validate.float_dtype(name, A.dtype)
        if not np.isfinite(A.data).all():
            raise ValueError(f"`{name}` must be finite, its stored entries hold NaN or Inf")
        A = _SparseAdapter(A)
    if hasattr(A, "matvec") and hasattr(A, "shape") and not isinstance(A, np.ndarray):
        if getattr(A, "dtype", None) is not None:
            _validate.float_dtype(name, A.dtype)
        if len(A.shape) != 2 or min(A.shape) == 0:
            raise ValueError(f"`{name}` must be a non-empty 2-D operator, got shape {tuple(A.shape)}")
        if not hasattr(A, "rmatvec"):
            raise TypeError(
                f"`{name}` has matvec but no rmatvec: the spectral solvers need products with A^T too "
                "(give the object an rmatvec, or pass a scipy LinearOperator with rmatvec)"
            )
        return OperatorGram(name, A), ()
    arr = _validate.float_array(name, A, min_ndim=2, check_finite=False)
    base = arr.view(np.ndarray)  # memmaps and other subclasses: same memory, plain type for numba
    batch_shape = arr.shape[:-2]
    m, n = arr.shape[-2:]
    if base.ndim == 2:
        if base.flags.c_contiguous:
            return DenseGram(name, base[None], left=False, source=arr), batch_shape
        if base.flags.f_contiguous:
            return DenseGram(name, base.T[None], left=True, source=arr), batch_shape
        return DenseGram(name, np.ascontiguousarray(base)[None], left=False, source=arr), batch_shape
    stack = base.reshape((-1, m, n))
    if not stack.flags.c_contiguous:
        swapped = stack.swapaxes(1, 2)
        if swapped.flags.c_contiguous:
            return DenseGram(name, swapped, left=True, source=arr), batch_shape
        stack = np.ascontiguousarray(stack)  # a strided view: one copy beats strided passes
    return DenseGram(name, stack, left=False, source=arr), batch_shape


class _SparseAdapter:
    """A scipy.sparse matrix seen as an operator (no densification)."""

    def __init__(self, S):
        self.S = S.tocsr()
        self.shape = S.shape
        self.dtype = S.dtype

    def max_abs(self):
        return float(abs(self.S).max()) if self.S.nnz else 0.0

    def matvec(self, x):
        return self.S @ x

    def rmatvec(self, y):
        return self.S.T @ y


# -- Symmetric operators for the trace and diagonal estimators (hutchinson.py) -------------------


class SymmetricOperator:
    """Block products X -> A X of a symmetric n x n operator, each checked for shape and finiteness.

    ``matmat`` counts the vectors multiplied in ``n_products`` and names the offending product
    (its ordinal and block size) when an output has the wrong shape or holds NaN or Inf.
    """

    def __init__(self, name, n, block_product, dtype):
        self.name = name
        self.n = n
        self.dtype = dtype
        self._product = block_product
        self.n_products = 0
        self.n_calls = 0

    def matmat(self, X):
        X = np.ascontiguousarray(X, dtype=np.float64)
        k = X.shape[1]
        if k == 0:
            return np.empty((self.n, 0))
        self.n_calls += 1
        what = f"product {self.n_calls} (a block of {k} vector{'s' if k > 1 else ''})"
        with np.errstate(all="ignore"):  # a NaN product is reported by _check_product, by name
            out = np.asarray(self._product(X))
        if out.ndim == 1 and k == 1:
            out = out.reshape(-1, 1)
        if out.dtype.kind not in "fiu":
            raise TypeError(f"`{self.name}`: {what} returned dtype {out.dtype}, expected a real float array")
        out = _check_product(self.name, what, np.asarray(out, dtype=np.float64), (self.n, k))
        self.n_products += k
        return out


def as_symmetric_operator(A, name="A", *, n=None, check_symmetric=True):
    """Return a `SymmetricOperator` for a dense symmetric array, sparse matrix, LinearOperator, callable or dask array.

    Dense arrays are checked for symmetry (``|A - A^T| <= 100 n eps max|A|`` entrywise) and raise
    otherwise; operators, callables and dask arrays (whose check would read them twice) are trusted.
    A callable maps an (n, k) block to an (n, k) block and needs ``n``.
    """
    from . import _dask

    if _dask.is_dask_array(A):  # trusted to be symmetric, like an operator: a check would read it twice
        _validate.float_dtype(name, A.dtype)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
            raise ValueError(f"`{name}` must be a non-empty square 2-D dask array, got shape {A.shape}")
        return SymmetricOperator(name, int(A.shape[0]), _dask.checked_product(name, A), np.dtype(A.dtype))
    if _is_sparse(A):
        _validate.float_dtype(name, A.dtype)
        if A.shape[0] != A.shape[1] or min(A.shape) == 0:
            raise ValueError(f"`{name}` must be a non-empty square matrix, got shape {tuple(A.shape)}")
        if not np.isfinite(A.data).all():
            raise ValueError(f"`{name}` must be finite, its stored entries hold NaN or Inf")
        S = A.tocsr()
        if check_symmetric:
            D = abs(S - S.T)
            scale = abs(S).max() if S.nnz else 0.0
            if D.nnz and D.max() > 100 * S.shape[0] * np.finfo(np.float64).eps * scale:
                raise ValueError(f"`{name}` must be symmetric; pass (A + A.T) / 2 to use its symmetric part")
        return SymmetricOperator(name, S.shape[0], lambda X: S @ X, np.dtype(A.dtype))
    if _is_operator(A) and not isinstance(A, np.ndarray):
        if getattr(A, "dtype", None) is not None:
            _validate.float_dtype(name, A.dtype)
        shape = tuple(int(s) for s in A.shape)
        if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
            raise ValueError(f"`{name}` must be a non-empty square operator, got shape {shape}")
        block = A.matmat if hasattr(A, "matmat") else (lambda X: np.column_stack([A.matvec(x) for x in X.T]))
        return SymmetricOperator(name, shape[0], block, np.dtype(getattr(A, "dtype", None) or np.float64))
    if callable(A) and not hasattr(A, "__array__"):
        if n is None:
            raise ValueError(f"`n` is required when `{name}` is a callable (the size of the vectors it multiplies)")
        n = _validate.positive_int("n", n)
        return SymmetricOperator(name, n, A, np.dtype(np.float64))
    arr = _validate.float_array(name, A, min_ndim=2, max_ndim=2)
    _validate.square(name, arr)
    base = np.asarray(arr.view(np.ndarray), dtype=np.float64)
    if check_symmetric:
        tol = 100 * arr.shape[0] * np.finfo(arr.dtype).eps * np.abs(base).max()
        asym = np.abs(base - base.T).max()
        if asym > tol:
            raise ValueError(
                f"`{name}` must be symmetric, got max |A - A^T| = {asym:.3g}; "
                "pass (A + A.T) / 2 to use its symmetric part"
            )
    return SymmetricOperator(name, arr.shape[0], lambda X: base @ X, arr.dtype)
