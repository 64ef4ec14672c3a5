"""dask arrays behind the adapter: one pass over the row blocks of A per Gram product.

Imported only when a dask array arrives (``is_dask_array`` looks at the type's module, without
importing dask). Each product with the Gram operator B^T B (B = A, or A^T for a wide A) is one task
per row block, ``B_i^T (B_i x)`` by the numba one-pass kernel on that block, and the partial sums
reduce pairwise (a tree) inside the same graph: one ``dask.compute`` per product, whatever the
number of blocks, on whichever scheduler is active (threads by default, a ``dask.distributed``
client when one is set up). The solver stays on the client and only sees numpy vectors.
"""

import importlib.util
import math
import os

import numpy as np

from . import _kernels, _operators, _validate, config


def is_dask_array(A):
    """True for a ``dask.array.Array`` (checked by type, so dask is not imported for other input)."""
    return type(A).__module__.split(".")[:2] == ["dask", "array"] and hasattr(A, "dask") and hasattr(A, "chunks")


def require_finite(name, A):
    """Raise the ValueError naming ``name`` if the dask array A holds NaN or Inf (one pass)."""
    import dask.array as da

    if not bool(da.isfinite(A).all().compute()):
        raise ValueError(f"`{name}` must be finite, its entries hold NaN or Inf")


def checked_product(name, A):
    """X -> A @ X as numpy; a product that is not finite is traced to NaN/Inf in A by name."""

    def product(X):
        with np.errstate(all="ignore"):
            out = np.asarray(A @ X)
        if not np.isfinite(out).all():
            require_finite(name, A)
        return out

    return product


def from_rows_of(A, M):
    """The numpy array M (rows matching A's) as a dask array whose rows are chunked like A's."""
    import dask.array as da

    return da.from_array(M, chunks=(A.chunks[0], -1))


def thin_svd(name, A):
    """(U, s, Vt) of a 2-D dask array by dask's tall-and-skinny QR SVD; U stays a dask array.

    The long side is chunked as A is and the short side is put in one chunk (the layout the TSQR
    needs); a wide A is decomposed through its transpose. s and Vt (short side) are computed.
    """
    import dask
    import dask.array as da

    _validate.float_dtype(name, A.dtype)
    if A.ndim != 2 or min(A.shape) == 0:
        raise ValueError(f"`{name}` must be a non-empty 2-D dask array, got shape {A.shape}")
    wide = A.shape[0] < A.shape[1]
    B = (A.T if wide else A).rechunk({1: -1})
    U, s, Vt = da.linalg.svd(B)
    try:
        with np.errstate(all="ignore"):  # NaN or Inf in A: named below
            s, Vt = dask.compute(s, Vt)
    except np.linalg.LinAlgError:
        s = None
    if s is None or not np.isfinite(s).all():
        require_finite(name, A)
        raise ValueError(f"`{name}`: the SVD failed although its entries are finite (overflow?); scale it down")
    if wide:  # A^T = U s Vt, so A = Vt^T s U^T: the distributed factor is on the right
        return Vt.T, s, U.T
    return U, s, Vt


def _block_gram(block, x, ys, zs):
    """(y_i, z_i) = (ys B_i x, ys B_i^T (zs y_i)) for one row block, by the single-threaded one-pass kernel.

    ys and zs are the powers of two of `_operators.scale_factors` (1 for ordinary scales).
    """
    block = np.ascontiguousarray(block)
    y = np.empty(block.shape[0])
    z = np.empty(block.shape[1])
    _kernels.gram_matvec_serial(block, x, y, z, ys, zs)
    return y, z


def _add(a, b):
    # an overflow shows as inf in the sum, which the caller checks and rescales for; numpy's
    # warning would be raised in a scheduler thread, outside the caller's errstate
    with np.errstate(all="ignore"):
        return a + b


def _tree_sum(parts):
    """Pairwise sums of delayed arrays: depth log2(len(parts)), so no single task adds them all."""
    import dask

    add = dask.delayed(_add, pure=True)
    while len(parts) > 1:
        parts = [add(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def _memory_available():
    """Bytes of memory the active scheduler can hold: the workers' limits of a distributed client, else RAM."""
    try:
        from distributed import default_client

        info = default_client().scheduler_info()
        return sum(w.get("memory_limit", 0) or 0 for w in info["workers"].values())
    except (ImportError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class DaskGram(_operators._GramBase):
    """Gram products of a 2-D dask array, one pass over its row blocks each (see the module docstring).

    ``persist``: keep the (rechunked) blocks in the scheduler's memory between products; "auto"
    persists when A takes at most ``config.DASK_PERSIST_FRACTION`` of the memory available.
    Scale as every Gram operator (`_operators._GramBase`): products of 2^-e A, e read off max|A|
    only when a first product leaves the safe range.
    """

    passes_per_gram = 1  # one read of every block per Gram product

    def __init__(self, name, A, *, persist="auto"):
        import dask

        _validate.float_dtype(name, A.dtype)
        if A.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D dask array, got {A.ndim}-D with shape {A.shape}")
        if min(A.shape) == 0 or any(np.isnan(s) for s in A.shape):
            raise ValueError(f"`{name}` must be a non-empty dask array of known shape, got shape {A.shape}")
        m, n = (int(s) for s in A.shape)
        super().__init__(name, (m, n), np.dtype(A.dtype), 1)
        self.left = m < n  # iterate on the smaller side: the Gram operator is A A^T
        B = A.T if self.left else A
        # one chunk across the vector side, so each block's share of the product needs no other block
        B = B.rechunk({1: -1})
        if persist == "auto":
            persist = B.nbytes <= config.DASK_PERSIST_FRACTION * _memory_available()
        if persist:
            B = B.persist()
        self.n_products = 0  # products with A plus with A^T: tests read them to count passes
        self.n_passes = 0
        self._source = A
        self._B = B
        self._blocks = list(B.to_delayed().ravel())
        self._delayed = dask.delayed

    def gram(self, X, active):
        """Return (Y, Z), Y[0] = B' x and Z[0] = B'^T B' x for x = X[0], B' = 2^-e B, in one pass."""
        import dask

        c1, c2 = float(self.c1[0]), float(self.c2[0])
        x = self._delayed(np.ascontiguousarray(X[0] * c1, dtype=np.float64))
        task = self._delayed(_block_gram, nout=2, pure=True)
        parts = [task(block, x, c2, c1) for block in self._blocks]
        ys, z = dask.compute([p[0] for p in parts], _tree_sum([p[1] for p in parts]))
        Y, Z = np.concatenate(ys)[None, :], np.asarray(z)[None, :]
        self.n_products += 2
        self.n_passes += 1
        self._check(Y, Z, np.arange(1))
        return Y, Z

    def matvec_start(self, V0):
        """A' v0 as a numpy row (a start vector on the u side from a right one)."""
        while True:
            c1, c2 = float(self.c1[0]), float(self.c2[0])
            with np.errstate(all="ignore"):  # out of range: rescaled below; NaN named by fail()
                y = np.asarray((self._source @ (V0[0] * c1).astype(self.dtype)).compute(), dtype=np.float64) * c2
            if np.isfinite(y).all():
                return y[None, :]
            if self.scaled:
                self.fail()
            self.rescale()

    def rescale(self):
        """Choose the exponent from max|A| (one pass on the workers; only after a product showed the need)."""
        import dask

        with np.errstate(all="ignore"):
            lo, hi = dask.compute(self._B.min(), self._B.max())
        amax = max(float(hi), -float(lo))
        if not np.isfinite(amax):
            self.fail()
        self.set_exponent(_operators.exponent_of(np.array([amax])))
        self.scaled = True

    def fail(self):
        """Raise the right error for a product that is not finite: NaN/Inf in A, or overflow."""
        require_finite(self.name, self._source)
        raise ValueError(f"`{self.name}`: products overflowed although its entries are finite")

    def check_finite(self, *products):
        if not all(np.isfinite(P).all() for P in products):
            self.fail()

    def outer(self, u, v, factor):
        """factor u v^T as a dask array chunked like A: as large as the input, so it stays distributed."""
        import dask.array as da

        left = da.from_array(np.asarray(u * factor, dtype=u.dtype), chunks=(self._source.chunks[0],))
        right = da.from_array(np.asarray(v, dtype=u.dtype), chunks=(self._source.chunks[1],))
        return left[:, None] * right[None, :]


def msign_factor(A, sched, scaling, diagnostics):
    """Newton-Schulz steps of `polar.msign` on a 2-D dask array: (Q, orthogonality, scale, zero).

    The same iteration as in memory, on the wide orientation X (short side first): each step
    computes the small Gram matrix G_t = X_t X_t^T in one pass (a tree reduction on the workers),
    forms q(G_t) in memory and keeps X_{t+1} = q(G_t) X_t distributed (persisted, so the next
    Gram matrix does not recompute the chain). Q keeps A's chunks along the long side.
    """
    import dask
    import dask.array as da

    _validate.float_dtype("A", A.dtype)
    if A.ndim != 2 or min(A.shape) == 0:
        raise ValueError(f"`A` must be a non-empty 2-D dask array, got shape {A.shape}")
    dtype = np.dtype(A.dtype).type
    tall = A.shape[0] > A.shape[1]
    X = (A.T if tall else A).rechunk({0: -1})  # the short side in one chunk: q(G) X block by block
    with np.errstate(all="ignore"):  # NaN or Inf: named below
        lo, hi = dask.compute(X.min(), X.max())
    amax = max(float(hi), -float(lo))
    if not np.isfinite(amax):
        raise ValueError("`A` must be finite, its entries hold NaN or Inf")
    if amax == 0.0:
        return da.zeros(A.shape, dtype=A.dtype, chunks=A.chunks), math.sqrt(min(A.shape)), 0.0
    e = math.frexp(amax)[1]
    X = (X * dtype(math.ldexp(1.0, -e)) if -e >= np.finfo(dtype).minexp else da.ldexp(X, -e).astype(dtype)).persist()
    from .polar import _normalized_gram  # polar imports this module: import here

    f, G, scale = _normalized_gram(np.asarray((X @ X.T).compute()), e, scaling)
    diag = np.diag_indices_from(G)
    for t, (a, b, c) in enumerate(sched):
        if t > 0:
            G = np.asarray((X @ X.T).compute())
        q = dtype(b) * G + dtype(c) * (G @ G.T)
        q[diag] += dtype(a)
        if t == 0:
            q /= dtype(f)
        X = (da.from_array(q, chunks=(X.chunks[0], X.chunks[0])) @ X).persist()
    orth = float("nan")
    if diagnostics:  # as polar._orthogonality_bound, with the Gram product and sum on the workers
        X64 = X.astype(np.float64)
        E, sq = dask.compute(X64 @ X64.T, (X64 * X64).sum())
        E = np.asarray(E)
        E[np.diag_indices_from(E)] -= 1.0
        orth = float(np.linalg.norm(E) + (X.shape[1] + 2) * np.finfo(np.float64).eps * float(sq))
    Q = X.T if tall else X
    return Q.rechunk(A.chunks), orth, scale


def _read_rows(path, offset, dtype, n_cols, lo, hi):
    """Rows lo..hi of a C-ordered matrix stored raw at ``offset`` in ``path``, read (not mapped).

    A read copies into memory this process owns and frees after use, so the resident memory of
    an out-of-core pass is the blocks in flight, whatever the size of the file.
    """
    itemsize = np.dtype(dtype).itemsize
    with open(path, "rb") as f:
        f.seek(offset + lo * n_cols * itemsize)
        block = np.fromfile(f, dtype=dtype, count=(hi - lo) * n_cols)
    if block.size != (hi - lo) * n_cols:
        raise ValueError(f"`A`: {path} is shorter than its header says (rows {lo}..{hi} missing)")
    return block.reshape(hi - lo, n_cols)


def from_memmap(mm, rows_per_block):
    """A C-ordered 2-D ``numpy.memmap`` as a dask array whose blocks are read from its file, not mapped."""
    import dask
    import dask.array as da

    m, n = mm.shape
    blocks = []
    for lo in range(0, m, rows_per_block):
        hi = min(lo + rows_per_block, m)
        part = dask.delayed(_read_rows, pure=True)(mm.filename, mm.offset, mm.dtype, n, lo, hi)
        blocks.append(da.from_delayed(part, shape=(hi - lo, n), dtype=mm.dtype))
    return da.concatenate(blocks, axis=0)


def is_out_of_core(A):
    """A 2-D C-ordered memmap over a whole file, too large to stay in memory (config.OUT_OF_CORE_FRACTION)."""
    return (
        isinstance(A, np.memmap)
        and importlib.util.find_spec("dask") is not None  # without dask the file is mapped whole
        and A.ndim == 2
        and A.flags.c_contiguous
        and getattr(A, "filename", None) is not None
        and A.nbytes > config.OUT_OF_CORE_FRACTION * _memory_available()
    )
