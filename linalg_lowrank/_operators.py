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
import os

import numba
import numpy as np

from . import _kernels, _validate, config
from .config import PARALLEL_MIN_ENTRIES


def _dask_module():
    """linalg_lowrank._dask, imported on first use (it builds on this module; dask itself stays unimported)."""
    if not _DASK:
        from . import _dask

        _DASK.append(_dask)
    return _DASK[0]


_DASK = []


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
    """Shared bookkeeping: the scale of each problem.

    ``exponent[k]``: the products are those of 2^-e A_k. ``scaled``: the exponents were chosen
    (by `rescale`), so a product out of range is an error, not a reason to rescale.
    """

    numba_fast_path = False  # True where ``mat`` holds the stack for the numba drivers (DenseGram)

    def __init__(self, name, shape, dtype, batch):
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.batch = batch
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

    def outer(self, u, v, factor):
        """factor u v^T (batched) in the dtype of u: a dense array, whatever the input was."""
        return ((u[..., :, None] * v[..., None, :]) * factor[..., None, None]).astype(u.dtype, copy=False)

    @property
    def other_dim(self):
        return self.shape[1] if self.left else self.shape[0]


class DenseGram(_GramBase):
    """Gram products of a stack of dense matrices, shape (b, m, n), by the one-pass kernel.

    The kernel reads rows, so it runs on whichever of A and A^T is C-contiguous; ``left`` is
    True when the Gram operator is A A^T (vectors live on the left side, u).
    """

    passes_per_gram = 1  # the one-pass kernel reads A once per Gram product
    numba_fast_path = True  # ``mat`` is a C-contiguous in-memory stack the numba drivers take

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
        self._check(Y, Z, active)
        return Y, Z

    def other_side(self, X):
        """M'_k^T X[k] for every k, unchecked: from Gram-space vectors to the other side (v from u when ``left``)."""
        with np.errstate(all="ignore"):  # the caller checks finiteness and rescales
            return np.einsum("bnm,bm->bn", self.mat, X * self.c1[:, None]) * self.c2[:, None]

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
    """Gram products of a single matrix-free operator (an adapted `Operator`: sparse or matvec/rmatvec)."""

    passes_per_gram = 2  # matvec and rmatvec cannot be fused
    numba_fast_path = False

    def __init__(self, name, op):
        super().__init__(name, op.shape, op.dtype, 1)
        self.op = op
        self.left = op.shape[0] < op.shape[1]  # iterate on the smaller side

    def _product(self, what, x):
        size = self.shape[0] if what == "matvec" else self.shape[1]
        with np.errstate(all="ignore"):  # a NaN product is reported by _check_product, by name
            out = self.op.raw_product("matmat" if what == "matvec" else "rmatmat", x)
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
        amax = self.op.max_abs()
        if amax is not None:
            e = int(exponent_of(amax))
        else:
            e = 0
            x = np.random.default_rng(0).standard_normal(self.shape[1])
            x /= np.linalg.norm(x)
            for k in config.SCALE_PROBE_LOG2:
                with np.errstate(all="ignore"):
                    y = np.asarray(self.op.raw_product("matmat", np.ldexp(x, -k)), dtype=np.float64).reshape(-1)
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


# -- The adapter ---------------------------------------------------------------------------------

#: What the error messages call each kind of input.
_KIND_WORDS = {
    "sparse": "a scipy.sparse matrix",
    "operator": "a matrix-free operator (matvec/rmatvec)",
    "callable": "a callable",
    "dask": "a dask array",
}


def _is_sparse(A):
    return type(A).__module__.startswith("scipy.sparse") and hasattr(A, "tocsr") and hasattr(A, "nnz")


def _is_operator(A):
    return hasattr(A, "matvec") and hasattr(A, "shape") and not isinstance(A, np.ndarray)


def _from_dlpack(name, A):
    """The CPU memory behind a ``__dlpack__`` object as an ndarray, without a copy."""
    try:
        return np.from_dlpack(A)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise TypeError(
            f"`{name}` exposes __dlpack__ but numpy cannot read it without a copy ({exc}); "
            "move it to the CPU or pass a numpy array"
        ) from None


def _to_ndarray(name, A):
    """Any dense input as an ndarray, no copy; float32 or float64 (see `_validate.float_dtype`)."""
    if isinstance(A, np.ndarray):
        arr = A
    elif hasattr(A, "__dlpack__") and not hasattr(A, "__array__"):
        arr = _from_dlpack(name, A)
    elif hasattr(A, "__array__") or isinstance(A, (list, tuple)):
        arr = _validate.as_ndarray(name, A)
    elif hasattr(A, "__dlpack__"):
        arr = _from_dlpack(name, A)
    else:
        raise TypeError(
            f"`{name}` must be an array (ndarray, array-like, scipy.sparse matrix or LinearOperator), "
            f"got {type(A).__name__}"
        )
    _validate.float_dtype(name, arr.dtype)
    return arr


def _column_products(fn, X, size):
    """A block product from a vector product, one column at a time (as aslinearoperator derives it)."""
    out = np.empty((size, X.shape[1]), dtype=np.result_type(X.dtype, np.float64))
    for j in range(X.shape[1]):
        out[:, j] = np.asarray(fn(X[:, j])).reshape(-1)
    return out


def symmetry_tolerance(n, dtype):
    """Relative asymmetry accepted as rounding: ``config.SYM_ROUNDOFF * n * eps(dtype)``.

    The one symmetry rule of the library: a square A counts as symmetric when
    ``||A - A^T|| <= symmetry_tolerance(n, A.dtype) * ||A||``, with eps of the dtype A came in (a
    float32 Gram matrix is symmetric only up to float32 rounding). The norm is the one the check
    computes in its single pass over A: the largest entry here and in `hutchinson`, Frobenius in
    `roots` (which symmetrizes while it reads).
    """
    return config.SYM_ROUNDOFF * n * np.finfo(dtype).eps


def require_symmetric(name, asym, size, n, dtype, *, rtol=None, norm="max"):
    """Raise the one ValueError for an asymmetric A: ``asym > rtol * size`` (rtol from `symmetry_tolerance`)."""
    rtol = symmetry_tolerance(n, dtype) if rtol is None else rtol
    if asym > rtol * size:
        what = "max |A - A^T|" if norm == "max" else "||A - A^T||_F / ||A||_F"
        value = asym if norm == "max" else asym / size if size > 0 else math.inf
        raise ValueError(
            f"`{name}` must be symmetric, got {what} = {value:.3g} above the rounding tolerance "
            f"{rtol:.3g}{'' if norm == 'max' else ' (relative)'}; pass (A + A.T) / 2 to use its symmetric part"
        )


class Operator:
    """One input, adapted: ``shape``, ``dtype``, ``batch_shape``, checked products and the dense fast path.

    ``kind`` is one of "dense" (an ndarray or stack, the caller's memory: ``array``), "sparse"
    (CSR or CSC, ``data``), "operator" (matvec/rmatvec, ``data``), "callable" (a symmetric block
    product, ``data``) and "dask" (``data``). Families ask for what they need (`dense`, `matmat`,
    `gram`) and get one documented TypeError when the kind cannot serve it; they never look at
    the input themselves.
    """

    def __init__(self, name, kind, shape, dtype, *, batch_shape=(), array=None, data=None, source=None):
        self.name = name
        self.kind = kind
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.batch_shape = tuple(batch_shape)
        self.array = array
        self.data = data
        self._source = array if source is None else source
        self._fro2 = None  # ||A||_F^2 once asked for, or when a pass that read A anyway computed it (dask)

    # -- what the input is ------------------------------------------------------------------------
    @property
    def is_dask(self):
        """The products run on dask (the family keeps long factors distributed)."""
        return self.kind == "dask"

    @property
    def too_large_to_hold(self):
        """A memory-mapped file larger than ``config.OUT_OF_CORE_FRACTION`` of this machine's memory."""
        return self.kind == "dense" and memmap_too_large_to_hold(self._source, physical_memory)

    @property
    def rereads_from_disk(self):
        """Too large to hold, and for the page cache (``config.BLOCK_KRYLOV_PAGE_CACHE_FRACTION`` of
        the memory available to it): every pass over the file reads the disk."""
        return (
            self.too_large_to_hold
            and self._source.nbytes > config.BLOCK_KRYLOV_PAGE_CACHE_FRACTION * available_memory()
        )

    @property
    def out_of_core(self):
        """A memory-mapped file too large to hold: read in blocks through dask."""
        return (
            self.kind == "dense" and isinstance(self._source, np.memmap) and _dask_module().is_out_of_core(self._source)
        )

    @property
    def numba_fast_path(self):
        """The numba kernels apply: a dense float32/float64 array (or stack) held in memory."""
        return self.kind == "dense" and not self.out_of_core

    def describe(self):
        return _KIND_WORDS.get(self.kind, "an array")

    # -- dense data ---------------------------------------------------------------------------------
    def dense(self, family, *, check_finite=True):
        """The array itself (no copy; memmaps as plain ndarrays), or the TypeError for a matrix-free kind.

        ``family`` names the function in the message. With ``check_finite`` a NaN or Inf entry
        raises the ValueError naming its index.
        """
        if self.kind != "dense":
            hint = " (call .toarray() to densify it)" if self.kind == "sparse" else ""
            raise TypeError(f"`{self.name}` is {self.describe()}: {family} needs its entries as a dense array{hint}")
        arr = self.array
        if check_finite:
            _validate.finite(self.name, arr)
        return arr

    def require_finite(self):
        """Raise the named ValueError if A holds NaN or Inf (a full pass; matrix-free kinds: nothing to scan)."""
        if self.kind == "dense":
            _validate.finite(self.name, self.array)
        elif self.kind == "dask":
            _dask_module().require_finite(self.name, self.data)

    def fro2(self):
        """||A||_F^2 when it is cheap (arrays, sparse, dask), else None; see `_scaling.sum_of_squares`."""
        from ._scaling import sum_of_squares

        if self._fro2 is None:  # kept: the families ask more than once
            if self.kind in ("dense", "sparse"):
                values = self.array if self.kind == "dense" else self.data.data
                if values.dtype != np.float64 and values.flags.forc:
                    # BLAS's float32 dot: 4x faster than converting to float64; see fro2_rounding
                    flat = values.ravel(order="K")
                    self._fro2 = float(np.dot(flat, flat))
                else:  # float64, or a strided view (converted a chunk at a time, never copied whole)
                    self._fro2 = sum_of_squares(values)
            elif self.kind == "dask":  # one pass; float64 sums of the squares, as `sum_of_squares` adds them
                self._fro2 = _dask_module().max_min_sumsq(self.data)[2]
        return self._fro2

    def fro2_rounding(self):
        """A bound on the relative error of `fro2` (worst case of its summation)."""
        from ._scaling import SUMSQ_CHUNK

        if self.kind == "dask" or self.dtype == np.float64:
            return SUMSQ_CHUNK * float(np.finfo(np.float64).eps)
        return math.prod(self.shape) * float(np.finfo(self.dtype).eps)

    def max_abs(self):
        """max |A| for sparse data (cheap), else None."""
        if self.kind == "sparse":
            return float(abs(self.data).max()) if self.data.nnz else 0.0
        return None

    def pow2_normalized(self):
        """(operator of 2^-e A, e): arrays and sparse data far from 1 in size are scaled exactly."""
        from ._scaling import pow2_normalize

        if self.kind == "dense":
            arr, e = pow2_normalize(self.array)
            return (self if e == 0 else Operator(self.name, "dense", self.shape, self.dtype, array=arr)), e
        if self.kind == "sparse":
            data, e = pow2_normalize(self.data.data)
            if e == 0:
                return self, 0
            S = self.data.copy()
            S.data = data
            return Operator(self.name, "sparse", self.shape, self.dtype, data=S), e
        if self.kind == "dask":
            # one pass over the blocks for max|A| and, while they are read, ||A||_F^2 (which the
            # range finders ask next); 2^-e A stays lazy
            from ._scaling import pow2_exponent

            d = self.data
            hi, lo, sumsq = _dask_module().max_min_sumsq(d)
            e = pow2_exponent(max(hi, -lo), self.dtype) if d.size else 0
            scaled = d if e == 0 else np.ldexp(d, -e).astype(self.dtype, copy=False)
            out = Operator(self.name, "dask", self.shape, self.dtype, data=scaled, source=self._source)
            if e == 0 and math.isfinite(float(sumsq)):  # else the sum of 2^-e A is computed when asked
                out._fro2 = float(sumsq)
            return out, e
        return self, 0

    # -- products -----------------------------------------------------------------------------------
    def raw_product(self, what, X):
        """A @ X ("matmat") or A^T @ X ("rmatmat"), unchecked; X is (n, k) or (n,).

        matmat/rmatmat of an object that has only matvec/rmatvec are derived column by column, as
        ``scipy.sparse.linalg.aslinearoperator`` does. Callers check the output (`matmat`, the Gram
        operators) under ``np.errstate``.
        """
        if self.kind == "dense":
            return self.array @ X if what == "matmat" else self.array.T @ X
        if self.kind in ("sparse", "dask"):
            return np.asarray(self.data @ X if what == "matmat" else self.data.T @ X)
        if self.kind == "callable":
            return np.asarray(self.data(X))
        op = self.data
        vec = X.ndim == 1
        try:
            if what == "matmat":
                if vec:
                    return np.asarray(op.matvec(X))
                if hasattr(op, "matmat"):
                    return np.asarray(op.matmat(X))
                return _column_products(op.matvec, X, self.shape[0])
            if not hasattr(op, "rmatvec"):
                raise TypeError(
                    f"`{self.name}` has matvec but no rmatvec: this function needs products with A^T too "
                    "(give the object an rmatvec, or pass a scipy LinearOperator with rmatvec)"
                )
            if vec:
                return np.asarray(op.rmatvec(X))
            if hasattr(op, "rmatmat"):
                return np.asarray(op.rmatmat(X))
            return _column_products(op.rmatvec, X, self.shape[1])
        except NotImplementedError:
            raise _missing_rmatvec(self.name, "matvec" if what == "matmat" else "rmatvec") from None

    def _checked(self, what, out, rows, cols):
        if out.ndim == 1 and cols is None:
            want = (rows,)
        else:
            out = out.reshape(rows, -1) if out.size == rows * (cols or 1) else out
            want = (rows, cols)
        if out.shape != want:
            raise ValueError(f"`{self.name}`: {what} returned shape {out.shape}, expected {want}")
        if out.dtype.kind not in "fiu":
            raise TypeError(f"`{self.name}`: {what} returned dtype {out.dtype}, expected a real float array")
        if not np.isfinite(out).all():
            self.fail(what)
        return out

    def fail(self, what="a product"):
        """Raise the ValueError for a product that is not finite: NaN/Inf in A, or overflow."""
        if self.kind == "dense":
            _validate.finite(self.name, self._source)
            raise ValueError(f"`{self.name}`: products overflowed although its entries are finite; scale it down")
        if self.kind == "dask":
            self.require_finite()
            raise ValueError(f"`{self.name}`: products overflowed although its entries are finite; scale it down")
        raise ValueError(f"`{self.name}`: {what} returned NaN or Inf")

    def matmat(self, X):
        """A @ X for X of shape (n, k), checked for shape and finiteness (no RuntimeWarning escapes first)."""
        with np.errstate(all="ignore"):
            out = self.raw_product("matmat", X)
        out = self._checked("matmat", np.asarray(out), self.shape[0], X.shape[1])
        return out if self.kind != "operator" else out.astype(self.dtype, copy=False)

    def rmatmat(self, Y):
        """A^T @ Y for Y of shape (m, k), checked like `matmat`."""
        with np.errstate(all="ignore"):
            out = self.raw_product("rmatmat", Y)
        out = self._checked("rmatmat", np.asarray(out), self.shape[1], Y.shape[1])
        return out if self.kind != "operator" else out.astype(self.dtype, copy=False)

    def matvec(self, x):
        return self.matmat(np.asarray(x).reshape(-1, 1)).reshape(-1)

    def rmatvec(self, y):
        return self.rmatmat(np.asarray(y).reshape(-1, 1)).reshape(-1)

    # -- the Gram operator of the spectral solvers ------------------------------------------------
    def gram(self, family="this function"):
        """The Gram operator of the smaller side: the one-pass numba kernel for dense data."""
        _dask = _dask_module()
        if self.kind == "dask":
            return _dask.DaskGram(self.name, self.data)
        if self.kind == "callable":
            raise _callable_refused(self.name, family)
        if self.kind in ("sparse", "operator"):
            return OperatorGram(self.name, self)
        if self.out_of_core:
            A = self._source
            rows = max(1, config.OUT_OF_CORE_BLOCK_BYTES // (A.shape[1] * A.itemsize))
            return _dask.DaskGram(self.name, _dask.from_memmap(A, rows), persist=False)
        return _dense_gram(self.name, self.array, self._source)


def _callable_refused(name, family):
    return TypeError(
        f"`{name}` is a callable: {family} needs products with A and A^T. Wrap it in "
        "scipy.sparse.linalg.LinearOperator(shape, matvec=..., rmatvec=...); bare callables (with `n=`) "
        "are accepted by the matrix-free estimators hutchinson_diagonal and hutchinson_trace only"
    )


def _dense_gram(name, arr, source):
    base = arr.view(np.ndarray)  # memmaps and other subclasses: same memory, plain type for numba
    m, n = arr.shape[-2:]
    if base.ndim == 2:
        if base.flags.c_contiguous:
            return DenseGram(name, base[None], left=False, source=source)
        if base.flags.f_contiguous:
            return DenseGram(name, base.T[None], left=True, source=source)
        return DenseGram(name, np.ascontiguousarray(base)[None], left=False, source=source)
    stack = base.reshape((-1, m, n))
    if not stack.flags.c_contiguous:
        swapped = stack.swapaxes(1, 2)
        if swapped.flags.c_contiguous:
            return DenseGram(name, swapped, left=True, source=source)
        stack = np.ascontiguousarray(stack)  # a strided view: one copy beats strided passes
    return DenseGram(name, stack, left=False, source=source)


def physical_memory():
    """Bytes of RAM of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory():
    """Bytes the system could hand to the page cache now (Linux ``MemAvailable``), else the machine's RAM."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return physical_memory()


def memmap_file_offset(mm):
    """Byte position in its file of a memmap's first element: right for row slices too.

    A slice of a memmap keeps its parent's ``offset``; its position is found from where its data
    sits in the parent's mapping, which numpy starts at the allocation granule below ``offset``.
    The one rule for every reader of such a file (dask's row blocks, block Lanczos's `RowBlocks`).
    """
    import mmap

    base = mm
    while base is not None and getattr(base, "_mmap", None) is None:
        base = base.base if isinstance(base.base, np.ndarray) else None
    mapping = getattr(base, "_mmap", None) if base is not None else None
    if mapping is None:
        return int(mm.offset)
    granule = mm.offset - mm.offset % mmap.ALLOCATIONGRANULARITY
    start = np.frombuffer(mapping, dtype=np.uint8).__array_interface__["data"][0]
    return int(granule + (mm.__array_interface__["data"][0] - start))


def memmap_too_large_to_hold(A, memory):
    """A 2-D C-ordered memmap over a whole file, larger than ``config.OUT_OF_CORE_FRACTION`` of ``memory()`` bytes.

    The one rule for "out of core": such a matrix is read from its file in row blocks, never mapped whole.
    """
    return (
        isinstance(A, np.memmap)
        and A.ndim == 2
        and A.flags.c_contiguous
        and getattr(A, "filename", None) is not None
        and A.nbytes > config.OUT_OF_CORE_FRACTION * memory()
    )


def as_operator(
    A,
    name="A",
    *,
    stack=False,
    square=False,
    symmetric=False,
    check_symmetric=True,
    n=None,
    allow_callable=False,
    family="this function",
):
    """Adapt any supported input: the one place that looks at what the caller passed.

    Parameters
    ----------
    A : ndarray (any layout, memmap, read-only), (..., M, N) stack when ``stack``, array-like
        (``__array__``, nested lists, ``__dlpack__`` on the CPU), scipy.sparse matrix or array of
        any format, scipy LinearOperator or any object with ``shape`` and ``matvec`` (and
        ``rmatvec`` for products with A^T), a dask array, or, with ``allow_callable``, a callable
        mapping an (n, k) block to A times it (symmetric A of size ``n``).
    stack : bool
        Accept (..., M, N) stacks of dense matrices (``batch_shape`` is then the leading shape).
    square, symmetric : bool
        Require a square A; ``symmetric`` also checks dense and sparse A against the symmetry rule
        (`symmetry_tolerance`; operators, callables and dask arrays are trusted: a check would
        cost products) unless ``check_symmetric`` is False.
    n : int, optional
        The size of a callable's vectors (required for callables).
    family : str
        The public function, for error messages.

    Dtype policy (`_validate.float_dtype`): float32 and float64 are kept as they are; integer,
    boolean and every other dtype raise TypeError, for arrays, nested lists, sparse matrices and
    operators alike. Dense data is never copied; sparse data is converted once to CSR (CSC is
    kept) and never densified.
    Finiteness: sparse stored entries are checked here (O(nnz)); dense data and operators on their
    products (`Operator.matmat`, the Gram operators), or up front by `Operator.dense`.
    """
    if type(A) is np.ndarray:  # the common case first: no other kind to look for
        return _finish(_dense_operator(name, A, stack), square, symmetric, check_symmetric)
    _dask = _dask_module()
    if _dask.is_dask_array(A):
        dtype = _validate.float_dtype(name, A.dtype)
        if A.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D dask array, got {A.ndim}-D with shape {A.shape}")
        if min(A.shape) == 0 or any(np.isnan(s) for s in A.shape):
            raise ValueError(f"`{name}` must be a non-empty dask array of known shape, got shape {A.shape}")
        op = Operator(name, "dask", A.shape, dtype, data=A)
    elif _is_sparse(A):
        dtype = _validate.float_dtype(name, A.dtype)
        if len(A.shape) != 2 or min(A.shape) == 0:
            raise ValueError(f"`{name}` must be a non-empty 2-D sparse matrix, got shape {tuple(A.shape)}")
        S = A if A.format in ("csr", "csc") else A.tocsr()  # lil, dok, coo, bsr, dia: converted once
        if not np.isfinite(S.data).all():
            raise ValueError(f"`{name}` must be finite, its stored entries hold NaN or Inf")
        op = Operator(name, "sparse", S.shape, dtype, data=S)
    elif _is_operator(A):
        shape = tuple(int(s) for s in A.shape)
        raw = getattr(A, "dtype", None)
        dtype = np.dtype(np.float64) if raw is None else _validate.float_dtype(name, raw)
        if len(shape) != 2 or min(shape) == 0:
            raise ValueError(f"`{name}` must be a non-empty 2-D operator, got shape {shape}")
        op = Operator(name, "operator", shape, dtype, data=A)
    elif callable(A) and not hasattr(A, "__array__") and not hasattr(A, "__dlpack__"):
        if not allow_callable:
            raise _callable_refused(name, family)
        if n is None:
            raise ValueError(f"`n` is required when `{name}` is a callable (the size of the vectors it multiplies)")
        n = _validate.positive_int("n", n)
        return Operator(name, "callable", (n, n), np.float64, data=A)
    else:
        op = _dense_operator(name, A, stack)
    return _finish(op, square, symmetric, check_symmetric)


def _dense_operator(name, A, stack):
    arr = _to_ndarray(name, A)
    if arr.ndim < 2 or (arr.ndim > 2 and not stack):
        want = "at least 2-D (a matrix or a (..., M, N) stack)" if stack else "2-D"
        raise ValueError(f"`{name}` must be {want}, got {arr.ndim}-D with shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"`{name}` must not be empty, got shape {arr.shape}")
    source = arr
    if type(arr) is not np.ndarray:
        arr = arr.view(np.ndarray)  # memmaps and other subclasses: same memory, plain type
    return Operator(name, "dense", arr.shape[-2:], arr.dtype, batch_shape=arr.shape[:-2], array=arr, source=source)


def _finish(op, square, symmetric, check_symmetric):
    name = op.name
    if square or symmetric:
        if op.shape[0] != op.shape[1]:
            raise ValueError(f"`{name}` must be square, got shape {op.batch_shape + op.shape}")
    if symmetric and check_symmetric:
        check_symmetry(op)
    return op


def check_symmetry(op):
    """The symmetry rule on dense (per matrix of a stack) and sparse data; others are trusted."""
    n = op.shape[0]
    if op.kind == "sparse":
        S = op.data
        D = abs(S - S.T)
        asym = D.max() if D.nnz else 0.0
        require_symmetric(op.name, float(asym), op.max_abs(), n, op.dtype)
    elif op.kind == "dense":
        arr = op.array
        with np.errstate(invalid="ignore"):
            asym = np.abs(arr - np.swapaxes(arr, -1, -2)).max(axis=(-2, -1))
            size = np.abs(arr).max(axis=(-2, -1))
        if not (np.isfinite(asym).all() and np.isfinite(size).all()):
            _validate.finite(op.name, arr)
        worst = np.argmax(asym - symmetry_tolerance(n, op.dtype) * size) if asym.ndim else ()
        require_symmetric(op.name, float(np.asarray(asym)[worst]), float(np.asarray(size)[worst]), n, op.dtype)


def as_gram(A, name="A", family="this function"):
    """Return ``(gram_operator, batch_shape)`` for a matrix, a stack or an operator (through `as_operator`)."""
    op = as_operator(A, name, stack=True, family=family)
    return op.gram(family), op.batch_shape


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


def as_symmetric_operator(A, name="A", *, n=None, check_symmetric=True, op=None):
    """A `SymmetricOperator` for anything `as_operator` takes, callables (with ``n``) included.

    Dense and sparse A are checked against the symmetry rule (`symmetry_tolerance`) unless
    ``check_symmetric`` is False; operators, callables and dask arrays are trusted. ``op``: an
    already adapted input.
    """
    if op is None:
        op = as_operator(A, name, symmetric=True, check_symmetric=check_symmetric, n=n, allow_callable=True)
    if op.kind == "dense":
        base = np.asarray(op.array, dtype=np.float64)

        def product(X):
            Y = base @ X
            if not np.isfinite(Y).all():
                _validate.finite(name, op.array)  # raises, naming the first NaN or Inf of A
            return Y

        return SymmetricOperator(name, op.shape[0], product, op.dtype)
    if op.kind == "callable":
        return SymmetricOperator(name, op.shape[0], op.data, op.dtype)

    def traced(X):
        Y = op.raw_product("matmat", X)
        if not np.isfinite(Y).all():
            op.require_finite()  # a dask A holding NaN or Inf is named; otherwise the product is
        return Y

    return SymmetricOperator(name, op.shape[0], traced, op.dtype)
