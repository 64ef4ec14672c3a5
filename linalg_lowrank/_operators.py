"""One adapter from every input kind to the products the algorithms need.

ndarray (any layout, views, ``numpy.memmap``), stacks of matrices, ``scipy.sparse`` matrices,
``scipy.sparse.linalg.LinearOperator`` and objects with ``matvec``/``rmatvec`` all become an
object with ``shape``, ``dtype`` and products with A and A^T. The spectral solvers work with the
Gram operator of the smaller side; dense arrays get the one-pass numba kernel for it.

Non-finite products are caught here: a NaN or Inf entry of a dense A always makes A @ x
non-finite (NaN * 0 is NaN), so checking each product output, which costs O(m + n), replaces
an O(mn) scan of A up front.
"""

import numba
import numpy as np

from . import _kernels, _validate
from .config import PARALLEL_MIN_ENTRIES


def _check_product(name, what, out, shape):
    if out.shape != shape:
        raise ValueError(f"`{name}`: {what} returned shape {out.shape}, expected {shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"`{name}`: {what} returned NaN or Inf")
    return out


class _GramBase:
    """Shared bookkeeping: counts of products and passes over A."""

    def __init__(self, name, shape, dtype):
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.n_products = 0  # products with A plus products with A^T
        self.n_passes = 0  # reads of the whole of A

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

    def __init__(self, name, stack, left, source):
        b, p, q = stack.shape
        super().__init__(name, (q, p) if left else (p, q), stack.dtype)
        # (b, p, q) C-contiguous; the Gram operator is M^T M, of size q. Always a read-only view:
        # numba compiles writable and read-only (memory-mapped) arrays as separate specializations,
        # and one per dtype is seconds of compile time less.
        self.mat = stack.view()
        self.mat.flags.writeable = False
        self.left = left
        self.batch = b
        self._source = source  # the caller's array, scanned only to word an error
        self._parallel_single = b == 1 and p * q >= PARALLEL_MIN_ENTRIES
        n_chunks = max(1, min(numba.get_num_threads(), p))
        self._scratch = np.empty((n_chunks, q)) if self._parallel_single else None

    def gram(self, X, active):
        """Return (Y, Z) with Y[k] = M_k X[k] and Z[k] = M_k^T Y[k] for k in ``active``."""
        b, p, q = self.mat.shape
        Y = np.zeros((b, p))
        Z = np.zeros((b, q))
        if b == 1:
            if self._parallel_single:
                _kernels.gram_matvec(self.mat[0], X[0], Y[0], Z[0], self._scratch)
            else:
                _kernels.gram_matvec_serial(self.mat[0], X[0], Y[0], Z[0])
        else:
            _kernels.gram_matvec_stack(self.mat, X, Y, Z, active)
        self.n_products += 2
        self.n_passes += 1
        self.check_finite(Y[active], Z[active])
        return Y, Z

    def check_finite(self, *products):
        """Raise the right error if a product is not finite: NaN/Inf in A, or overflow."""
        if all(np.isfinite(P).all() for P in products):
            return
        _validate.finite(self.name, self._source)
        raise ValueError(
            f"`{self.name}`: products overflowed although its entries are finite; "
            "scale it down (the spectral norm is homogeneous: ||cA|| = |c| ||A||)"
        )


class OperatorGram(_GramBase):
    """Gram products of a single matrix-free operator through its matvec and rmatvec."""

    def __init__(self, name, op):
        shape = tuple(int(s) for s in op.shape)
        dtype = np.dtype(getattr(op, "dtype", None) or np.float64)
        super().__init__(name, shape, dtype)
        self.op = op
        self.batch = 1
        self.left = shape[0] < shape[1]  # iterate on the smaller side

    def _matvec(self, x):
        with np.errstate(all="ignore"):  # a NaN product is reported by _check_product, by name
            out = np.asarray(self.op.matvec(x), dtype=np.float64).reshape(-1)
        return _check_product(self.name, "matvec", out, (self.shape[0],))

    def _rmatvec(self, y):
        with np.errstate(all="ignore"):
            out = np.asarray(self.op.rmatvec(y), dtype=np.float64).reshape(-1)
        return _check_product(self.name, "rmatvec", out, (self.shape[1],))

    def gram(self, X, active):
        if self.left:
            y = self._rmatvec(X[0])
            z = self._matvec(y)
        else:
            y = self._matvec(X[0])
            z = self._rmatvec(y)
        self.n_products += 2
        self.n_passes += 2
        return y[None, :], z[None, :]


def _is_operator(A):
    return hasattr(A, "matvec") and hasattr(A, "rmatvec") and hasattr(A, "shape")


def _is_sparse(A):
    return hasattr(A, "toarray") and hasattr(A, "tocsr")


def as_gram(A, name="A"):
    """Return ``(gram_operator, batch_shape)`` for a matrix, a stack or a LinearOperator.

    Dense input is checked for dtype, ndim and size here; finiteness is checked on the
    products (see the module docstring). Integer, complex, object and 0-size input raises.
    """
    if _is_sparse(A):
        _validate.float_dtype(name, A.dtype)
        if not np.isfinite(A.data).all():
            raise ValueError(f"`{name}` must be finite, its stored entries hold NaN or Inf")
        A = _SparseAdapter(A)
    if _is_operator(A) and not isinstance(A, np.ndarray):
        if getattr(A, "dtype", None) is not None:
            _validate.float_dtype(name, A.dtype)
        if len(A.shape) != 2 or min(A.shape) == 0:
            raise ValueError(f"`{name}` must be a non-empty 2-D operator, got shape {tuple(A.shape)}")
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
    """Return a `SymmetricOperator` for a dense symmetric array, sparse matrix, LinearOperator or callable.

    Dense arrays are checked for symmetry (``|A - A^T| <= 100 n eps max|A|`` entrywise) and raise
    otherwise; operators and callables cannot be checked without products and are trusted.
    A callable maps an (n, k) block to an (n, k) block and needs ``n``.
    """
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
