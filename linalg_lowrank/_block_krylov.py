"""Block Lanczos for the top k singular triplets, driven by block products (BLAS-3, few passes).

The iteration works on the Gram operator ``B = N^T N`` of a matrix N (p x q) that it sees only
through a *source*: an object with ``shape``, ``dtype`` and

- ``gram(X)``: ``N^T (N X)`` for a float64 block X (q x b), computed with N in its own dtype
  (float32 stays float32 in the products; the result is returned in float64);
- ``gram64(X)``: ``(N X, N^T N X)`` with float64 arithmetic, for the certificate;
- ``amax()``: max |N| (a pass for data on disk), and ``set_exponent(e)``: products of 2^-e N
  from then on (powers of two are exact; see `_scaling`).

Sources: `DenseSource` (an in-memory matrix, through BLAS) and `RowBlocks` (a C-ordered
``.npy``/memmap file read row block by row block, one read of the file per Gram product, the
peak memory a block plus the basis).

The iteration (Golub and Underwood's block Lanczos with full reorthogonalization, thick
restarts as in the `_krylov` engine) keeps the basis Q and the products W = B Q, so every Ritz
pair's residual ``||B w - theta w||`` is known without another product. When the top k residuals
meet the tolerance, one float64 Gram product on the Ritz vectors certifies the answer exactly as
`spectrum.top_singular_values` does for Lanczos (Cauchy interlacing for the lower bounds, the
measured residual for the error bounds). See docs/theory/spectrum.rst.
"""

import contextlib
import math

import numpy as np
import scipy.linalg

from . import _operators, config
from ._scaling import pow2_normalize
from ._threads import blas_single_thread

_EPS = np.finfo(np.float64).eps


class DenseSource:
    """An in-memory matrix N (any layout; a transpose is a view): products through BLAS.

    N is brought to unit scale by an exact power of two up front when its entries are extreme
    (`_scaling.pow2_normalize`, a copy only then); ``exponent`` records it. ``explicit_gram``
    forms G = N^T N once (syrk, in N's dtype) and answers the iteration's products with G: for a
    small Gram side that costs about as much as two block products and makes every further
    product nearly free. The certificate always multiplies by N itself, in float64.
    """

    def __init__(self, name, N, *, source=None, explicit_gram=False):
        self.name = name
        self.N, self.exponent = pow2_normalize(N)
        self.shape = N.shape
        self.dtype = N.dtype
        self.n_passes = 0
        self._source = N if source is None else source  # scanned only to word an error
        self.G = None
        if explicit_gram:
            with np.errstate(all="ignore"):
                self.G = self.N.T @ self.N
            self.n_passes += 1
            if not np.isfinite(self.G).all():
                self.fail()

    def gram(self, X, exact=False):
        if exact:
            return self.gram64(X)[1]
        with np.errstate(all="ignore"):  # overflow or NaN: the caller checks and rescales or names A
            if self.G is not None:
                return (self.G @ X.astype(self.dtype, copy=False)).astype(np.float64, copy=False)
            Y = self.N @ X.astype(self.dtype, copy=False)
            Z = self.N.T @ Y
        self.n_passes += 1
        return Z.astype(np.float64, copy=False)

    def _row_chunks(self):
        """N in float64, a few rows at a time (cache-sized; a float64 view of N itself when it is float64).

        numpy multiplies a float32 matrix by a float64 block through a slow mixed-type loop, and a
        whole float64 copy of N costs twice N's memory: convert a chunk, multiply it by BLAS, move on.
        """
        p, q = self.shape
        if self.dtype == np.float64:
            yield 0, p, self.N
            return
        rows = max(1, config.BLOCK_CONVERT_BYTES // (8 * q))
        for lo in range(0, p, rows):
            hi = min(lo + rows, p)
            yield lo, hi, self.N[lo:hi].astype(np.float64)

    def gram64(self, X):
        Y = np.empty((self.shape[0], X.shape[1]))
        Z = np.zeros(X.shape)
        with np.errstate(all="ignore"):
            for lo, hi, chunk in self._row_chunks():
                Y[lo:hi] = chunk @ X
                Z += chunk.T @ Y[lo:hi]
        self.n_passes += 1
        return Y, Z

    def rmat64(self, Y):
        Z = np.zeros((self.shape[1], Y.shape[1]))
        with np.errstate(all="ignore"):
            for lo, hi, chunk in self._row_chunks():
                Z += chunk.T @ Y[lo:hi]
        self.n_passes += 1
        return Z

    def amax(self):
        with np.errstate(invalid="ignore"):
            return max(float(np.max(self.N)), -float(np.min(self.N)))

    def set_exponent(self, e):
        self.N = np.ldexp(self.N, -e).astype(self.dtype, copy=False)
        self.exponent += e
        if self.G is not None:
            with np.errstate(all="ignore"):
                self.G = self.N.T @ self.N

    def release(self):
        """Drop the Gram matrix (memory) once the answer is certified."""
        self.G = None

    def fail(self):
        from . import _validate

        _validate.finite(self.name, self._source)
        raise ValueError(f"`{self.name}`: products overflowed although its entries are finite")


class RowBlocks:
    """A C-ordered 2-D matrix stored raw in a file (``.npy`` or a ``numpy.memmap``), read in row blocks.

    Every product reads the file once, block by block (``rows_per_block`` rows at a time), into
    two buffers this process owns (one read ahead while the other is multiplied), reused from
    block to block and freed with `release`: the resident memory is two blocks (plus a
    cache-sized float64 copy of a few rows in the certificate pass), the q x (basis) arrays of
    the iteration and the p x k left singular vectors that the certificate computes, whatever
    the file's size.
    ``n_passes`` counts the reads of the whole file.
    """

    def __init__(self, name, path, shape, dtype, *, offset=0, rows_per_block=None):
        self.name = name
        self.path = path
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)
        row_bytes = self.shape[1] * self.dtype.itemsize
        self.rows_per_block = int(rows_per_block or max(1, config.OUT_OF_CORE_BLOCK_BYTES // row_bytes))
        self.exponent = 0
        self.n_passes = 0
        self._buffers = None  # two blocks, allocated at the first read

    @classmethod
    def from_memmap(cls, name, mm, *, rows_per_block=None):
        """The file behind a C-contiguous 2-D ``numpy.memmap`` (read, not mapped)."""
        if mm.ndim != 2 or not mm.flags.c_contiguous or getattr(mm, "filename", None) is None:
            raise ValueError(f"`{name}` must be a C-contiguous 2-D numpy.memmap of a file, got shape {mm.shape}")
        offset = _operators.memmap_file_offset(mm)
        return cls(name, mm.filename, mm.shape, mm.dtype, offset=offset, rows_per_block=rows_per_block)

    def _blocks(self):
        """(lo, hi, rows lo..hi) of the file, front to back: one pass.

        Blocks are read into two buffers kept from block to block and pass to pass (a fresh array
        per block faults in its pages on every read, which cost more than the read itself for a
        page-cached file). While the caller multiplies one block, a reader thread reads the next
        into the other buffer (reads and BLAS both release the GIL), so a pass costs about the
        larger of the read and the arithmetic, not their sum. A yielded block is valid until the
        next one is asked for.
        """
        m, n = self.shape
        bounds = [(lo, min(lo + self.rows_per_block, m)) for lo in range(0, m, self.rows_per_block)]
        if self._buffers is None:
            rows = bounds[0][1] - bounds[0][0]
            self._buffers = [np.empty((rows, n), dtype=self.dtype) for _ in range(min(2, len(bounds)))]
        with open(self.path, "rb", buffering=0) as f:

            def read(i):
                lo, hi = bounds[i]
                f.seek(self.offset + lo * n * self.dtype.itemsize)
                block = self._buffers[i % 2][: hi - lo]
                view = memoryview(block.reshape(-1).view(np.uint8))
                got = 0
                while got < view.nbytes:  # a raw read may return fewer bytes than asked
                    count = f.readinto(view[got:])
                    if not count:
                        raise ValueError(f"`{self.name}`: {self.path} is shorter than its shape says (rows {lo}..{hi})")
                    got += count
                return block

            blocks = _read_ahead(read, len(bounds))
            try:
                for (lo, hi), block in zip(bounds, blocks, strict=True):
                    if self.exponent:
                        block = np.ldexp(block, -self.exponent).astype(self.dtype, copy=False)
                    yield lo, hi, block
            finally:  # a pass left early (an error): the read in flight ends before the file closes
                blocks.close()
        self.n_passes += 1

    def gram(self, X, exact=False):
        if exact:
            return self.gram64(X)[1]
        Xd = X.astype(self.dtype, copy=False)
        Z = np.zeros(X.shape)
        # One BLAS thread: the read-ahead thread takes the other core of a 2-core machine. Measured on
        # a shared 2-core VM, a 1 GiB float32 file, 3 interleaved rounds: 8 columns 0.35-0.55 s a pass
        # on one thread against 0.35-1.14 s with the pool, 32 columns 0.56-0.72 s against 0.45-0.90 s.
        with np.errstate(all="ignore"), blas_single_thread():
            for _, _, block in self._blocks():
                Z += block.T @ (block @ Xd)  # float32 products, float64 sum over the blocks
        return Z

    def _blocks64(self):
        """The blocks in float64, a few rows at a time (cache-sized, as `DenseSource._row_chunks`).

        A whole float64 copy of a 64 MiB float32 block is 128 MiB of fresh pages per block, which
        made the certificate's one-column pass several times slower than a block product.
        """
        rows = max(1, config.BLOCK_CONVERT_BYTES // (8 * self.shape[1]))
        for lo, hi, block in self._blocks():
            if block.dtype == np.float64:
                yield lo, hi, block
                continue
            for a in range(0, hi - lo, rows):
                b = min(a + rows, hi - lo)
                yield lo + a, lo + b, block[a:b].astype(np.float64)

    def gram64(self, X):
        Y = np.empty((self.shape[0], X.shape[1]))
        Z = np.zeros(X.shape)
        with np.errstate(all="ignore"), _blas_for_columns(X.shape[1]):
            for lo, hi, chunk in self._blocks64():
                Y[lo:hi] = chunk @ X
                Z += chunk.T @ Y[lo:hi]
        return Y, Z

    def rmat64(self, Y):
        Z = np.zeros((self.shape[1], Y.shape[1]))
        with np.errstate(all="ignore"), _blas_for_columns(Y.shape[1]):
            for lo, hi, chunk in self._blocks64():
                Z += chunk.T @ Y[lo:hi]
        return Z

    def amax(self):
        top = 0.0
        with np.errstate(invalid="ignore"):
            for _, _, block in self._blocks():
                top = max(top, float(np.max(block)), -float(np.min(block)))
        return top

    def set_exponent(self, e):
        self.exponent += int(e)

    def release(self):
        """Drop the block buffers once the answer is certified."""
        self._buffers = None

    def fail(self):
        for _, _, block in self._blocks():
            if not np.isfinite(block).all():
                raise ValueError(f"`{self.name}` must be finite, its entries hold NaN or Inf")
        raise ValueError(f"`{self.name}`: products overflowed although its entries are finite")


def _read_ahead(read, count):
    """read(0), ..., read(count - 1) in order, each started on a reader thread while the previous is in use.

    read(i + 1) starts when read(i) is handed out, so it runs while the caller works on block i;
    block i's buffer is written again only by read(i + 2), which starts after the caller asked for
    block i + 1. Closing the generator early waits for the read in flight.
    """
    from concurrent.futures import ThreadPoolExecutor

    if count == 1:
        yield read(0)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="linalg_lowrank_read") as pool:
        pending = pool.submit(read, 0)
        for i in range(count):
            block = pending.result()
            if i + 1 < count:
                pending = pool.submit(read, i + 1)
            yield block


def _blas_for_columns(columns):
    """One BLAS thread for products with a few columns (memory-bound; ``config.BLOCK_GEMV_MAX_COLUMNS``)."""
    return blas_single_thread() if columns <= config.BLOCK_GEMV_MAX_COLUMNS else contextlib.nullcontext()


def block_size(k, q):
    """Columns per block: k plus oversampling (``config.BLOCK_OVERSAMPLE``), at most q."""
    return int(min(q, max(k + config.BLOCK_OVERSAMPLE_MIN, math.ceil(config.BLOCK_OVERSAMPLE_FACTOR * k))))


def out_of_core_block_size(k, q):
    """Columns per block for data read from disk: at least ``config.BLOCK_OUT_OF_CORE_MIN``.

    A pass over a file costs its read whatever the block size, and a wider block needs fewer
    passes (measured on a 20000 x 500 float32 file, sigma_1 to 1e-6 with sigma_2 / sigma_1 =
    0.99: 18 passes with 17 columns, 15 with 32, 13 with 64; single-vector Lanczos 31).
    """
    return int(min(q, max(block_size(k, q), config.BLOCK_OUT_OF_CORE_MIN)))


def _orthonormalize(X, Q, generator, scale, width):
    """``width`` orthonormal columns orthogonal to Q: X's after two Gram-Schmidt passes, then random ones.

    Columns of X that vanish against Q (an invariant subspace: rank deficiency, repeated values,
    or the whole space nearly spanned) are replaced by random directions orthogonal to everything
    before, as are missing columns up to ``width``: the block keeps its size, and further copies
    of a repeated singular value can be found.
    """
    q = X.shape[0]
    X = X[:, :width]
    for _ in range(2):
        if Q.shape[1]:
            X = X - Q @ (Q.T @ X)
    X, R = np.linalg.qr(X)
    keep = np.abs(np.diag(R)) > config.SPECTRUM_BREAKDOWN_ULPS * math.sqrt(q) * _EPS * scale
    X = X[:, keep]
    missing = width - X.shape[1]
    if missing > 0:
        fresh = generator.standard_normal((q, missing))
        basis = np.concatenate([Q, X], axis=1)
        for _ in range(2):
            fresh -= basis @ (basis.T @ fresh)
        fresh, _ = np.linalg.qr(fresh)
        X = np.concatenate([X, fresh], axis=1)
    return X


def top_triplets(
    source, k, *, tol, maxiter, generator, block=None, max_basis=None, direct=False, start=None, diagnostics=None
):
    """The k largest singular triplets of the source's matrix N by block Lanczos on N^T N, certified.

    Returns a dict with ``values`` (descending), ``u`` (p x k, left vectors of N), ``v`` (q x k),
    ``residual``, ``error_bound``, ``lower_bound``, ``converged``, ``n_iter`` (block Gram
    products, the certificate included), ``n_matvecs`` (vectors multiplied by N plus by N^T) and
    ``n_passes`` (reads of the whole of N). ``maxiter`` caps the block Gram products of the
    iteration. The products are those of 2^-e N when N is far from unit scale; the returned
    numbers are scaled back.

    ``direct`` (a source with an explicit Gram matrix G): the top k eigenvectors of G by LAPACK
    (``syevr``, the whole Gram side at once) instead of the iteration; if the certificate then
    misses the tolerance (G's rounding, which squares the condition, hides small values), block
    Lanczos on N itself continues from those vectors.

    ``start`` (q x j, j <= block size): the first columns of the start block (a warm start), the
    rest Gaussian from ``generator``. ``diagnostics`` (a dict, filled in place) receives what
    `spectral.power_iteration` reports beside the triplet: ``random_columns`` (Gaussian columns of
    the start block), ``krylov_degree`` (block products in the first cycle of the first
    iteration, before any restart: the basis then holds the block Krylov space of that degree),
    ``ritz`` (the top Ritz values of N^T N at the last check, in the products' scale),
    ``history`` (the top Ritz value, as a singular value, at each check), ``exponent`` (products
    are those of 2^-exponent N) and ``products_eps`` (unit roundoff of the first iteration's products).
    """
    p, q = source.shape
    info = {} if diagnostics is None else diagnostics
    info["history"] = []
    b = block or block_size(k, q)
    L = int(min(q, max_basis or max(config.BLOCK_MAX_BASIS_BLOCKS * b, 2 * b + k)))
    steps = matvecs = 0
    exact = source.dtype == np.float64
    if direct:
        G = source.G
        _, V = scipy.linalg.eigh(G, subset_by_index=[q - k, q - 1], driver="evr", check_finite=False)
        V, _ = np.linalg.qr(V[:, ::-1].astype(np.float64))
        steps, matvecs = 1, 2 * q  # G = N^T N I: q columns through N and N^T
        res = _certify(source, V, k, tol=tol)
        if res["converged"]:
            info["exponent"] = source.exponent
            return _finish(res, source, k, steps, matvecs, b)
        # the Gram matrix's rounding (sigma^2: the condition squared) hid what was asked: continue on N
        # itself, in float64 (the rounding of float32 products would hide the same values)
        source.G = None
        exact = True
        start = np.concatenate([V, generator.standard_normal((q, max(b - k, 0)))], axis=1)[:, :b]
    else:
        given = np.empty((q, 0)) if start is None else np.asarray(start, dtype=np.float64).reshape(q, -1)[:, :b]
        info["random_columns"] = b - given.shape[1]
        start = np.concatenate([given, generator.standard_normal((q, b - given.shape[1]))], axis=1)
        info["products_eps"] = _EPS if exact else float(np.finfo(source.dtype).eps)
    while True:
        budget = maxiter - steps + (1 if direct else 0)  # forming G is not an iteration step
        V, n_steps, n_matvecs = _iterate_scaled(
            source, k, start, tol=tol, maxiter=budget, generator=generator, L=L, exact=exact, info=info
        )
        steps, matvecs = steps + n_steps, matvecs + n_matvecs
        res = _certify(source, V, k, tol=tol)
        if res["converged"] or exact or steps >= maxiter:
            info["exponent"] = source.exponent
            return _finish(res, source, k, steps, matvecs, b)
        # float32 products stalled at their rounding short of tol (values far below sigma_1): float64 products
        exact = True
        start = np.concatenate([V, generator.standard_normal((q, max(b - k, 0)))], axis=1)[:, :b]


def _iterate_scaled(source, k, start, *, tol, maxiter, generator, L, exact, info):
    """`_iterate`, started again from the same vectors on 2^-e N if a product leaves the safe range."""
    state = generator.bit_generator.state
    try:
        return _iterate(source, k, start.copy(), tol=tol, maxiter=maxiter, generator=generator, L=L,
                        check_scale=True, exact=exact, info=info)  # fmt: skip
    except _operators.Rescale:
        info["history"] = []  # the values of the abandoned start were those of an unscaled N
        amax = source.amax()
        if not math.isfinite(amax):
            source.fail()
        source.set_exponent(int(_operators.exponent_of(amax)))
        generator.bit_generator.state = state
        return _iterate(source, k, start.copy(), tol=tol, maxiter=maxiter, generator=generator, L=L,
                        check_scale=False, exact=exact, info=info)  # fmt: skip


def _finish(res, source, k, steps, matvecs, b):
    for key in ("values", "residual", "lower_bound"):
        res[key] = np.ldexp(res[key], source.exponent)
    res["n_iter"] = steps + 1
    res["n_matvecs"] = matvecs + 2 * k
    res["n_passes"] = source.n_passes
    res["block_size"] = b
    source.release()
    return res


def _iterate(source, k, X, *, tol, maxiter, generator, L, check_scale, exact, info):
    """Block Lanczos with thick restarts; returns (orthonormal q x k Ritz basis, block products, vectors).

    The projected matrix is diagonalized only when a restart needs its Ritz vectors or the
    convergence check is due: the check is scheduled from the observed decay of the largest
    relative residual, as `_topsv` schedules its Lanczos checks. ``info`` receives the first
    cycle's Krylov degree (the first call only), the last Ritz values and the history of checks
    (see `top_triplets`).
    """
    p, q = source.shape
    floor = config.SPECTRUM_RESIDUAL_FLOOR
    eps = _EPS if exact else float(np.finfo(source.dtype).eps)
    rounding_unit = 4 * eps
    noise_unit = config.SPECTRUM_BREAKDOWN_ULPS * math.sqrt(p) * eps
    X, _ = np.linalg.qr(X)
    width = X.shape[1]  # the block size; a block is narrower only where the space runs out
    Q = np.empty((q, 0))
    W = np.empty((q, 0))
    H = np.empty((0, 0))
    steps = matvecs = 0
    scale = 0.0
    S = None
    first_cycle = None  # block products before the first thick restart
    next_check = 1
    previous = None  # (step, largest relative residual) at the last check
    while True:
        Z = source.gram(X, exact)
        # the algebra between products is small (q x basis): BLAS threads would only wait on each other
        # (on a loaded 2-core machine a 400 x 32 QR took 15-50x longer with the pool; see _threads)
        with blas_single_thread():
            steps += 1
            matvecs += 2 * X.shape[1]
            if not np.isfinite(Z).all():
                if check_scale:
                    raise _operators.Rescale
                source.fail()
            if check_scale and steps == 1:
                top = float(np.abs(Z).max())
                if not math.ldexp(1.0, -config.SCALE_SAFE_LOG2) <= top <= math.ldexp(1.0, config.SCALE_SAFE_LOG2):
                    raise _operators.Rescale
            n_old = Q.shape[1]
            Q = np.concatenate([Q, X], axis=1)
            W = np.concatenate([W, Z], axis=1)
            C = Q.T @ Z  # the new columns of H = Q^T B Q
            n = Q.shape[1]
            H_new = np.empty((n, n))
            H_new[:n_old, :n_old] = H
            H_new[:, n_old:] = C
            H_new[n_old:, :n_old] = C[:n_old].T
            H_new[n_old:, n_old:] = 0.5 * (C[n_old:] + C[n_old:].T)
            H = H_new
            scale = max(scale, float(np.abs(C).max()))
            b = X.shape[1]
            restart = n + width > L and n < q
            last = n >= q or steps >= maxiter
            if not (restart or last or steps >= next_check):
                X = _orthonormalize(Z - Q @ C, Q, generator, scale, min(b, q - n))
                continue
            m = min(n, k + width if restart else k + 1)  # one beyond k: the gap estimate (ratio_estimate)
            theta, S = scipy.linalg.eigh(H, subset_by_index=[n - m, n - 1], driver="evr", check_finite=False)
            theta, S = theta[::-1], S[:, ::-1]
            top = max(float(theta[0]), 0.0)
            info["ritz"] = theta[: k + 1].copy()
            info["history"].append(math.ldexp(math.sqrt(top), source.exponent))
            if top == 0.0 or last:  # B vanishes on a random block (B = 0, with probability one), or done
                break
            kk = min(k, n)
            Sk = S[:, :kk]
            gram_residual = np.linalg.norm(W @ Sk - Q @ (Sk * theta[:kk]), axis=0)
            s = np.sqrt(np.maximum(theta[:kk], 0.0))
            # singular residual ||N^T u - s v|| = ||B v - s^2 v|| / s; the products' rounding sets a floor
            target = np.maximum(0.5 * tol * np.maximum(s, floor * math.sqrt(top)) * s, rounding_unit * top)
            noise = noise_unit * top
            if kk == k and np.all(gram_residual <= target):
                break
            worst = float(np.max(gram_residual / target))
            if (
                previous is not None
                and worst > config.BLOCK_STAGNATION * previous[1]
                and np.all(gram_residual <= np.maximum(target, noise))
            ):
                break  # at the rounding level of the products: the certificate judges what was reached
            next_check = steps + _steps_to_next_check(previous, steps, worst)
            previous = (steps, worst)
            residual_block = Z - Q @ C
            if restart:  # thick restart: the top Ritz vectors with their products
                first_cycle = steps if first_cycle is None else first_cycle
                Q, W = Q @ S, W @ S
                H = np.diag(theta)
            X = _orthonormalize(residual_block, Q, generator, scale, min(width, q - Q.shape[1]))
    info.setdefault("krylov_degree", steps if first_cycle is None else first_cycle)
    V = Q @ S[:, : min(k, Q.shape[1])]
    if V.shape[1] < k:  # fewer basis vectors than k: complete at random (interlacing holds for any V)
        V = np.concatenate([V, generator.standard_normal((q, k - V.shape[1]))], axis=1)
    V, _ = np.linalg.qr(V)
    return V, steps, matvecs


def _steps_to_next_check(previous, steps, worst):
    """Block products until the next Rayleigh-Ritz check: half the predicted distance to the target.

    ``worst`` is the largest residual over its target (converged at 1); the decay rate comes from
    the previous check. At least 1 and at most ``config.BLOCK_MAX_CHECK_GAP`` products.
    """
    if previous is None or not 0 < worst < previous[1]:
        return 1
    rate = (worst / previous[1]) ** (1.0 / max(steps - previous[0], 1))
    remaining = math.log(1.0 / worst) / math.log(rate)
    return int(min(max(1, 0.5 * remaining), config.BLOCK_MAX_CHECK_GAP))


def _certify(source, V, k, *, tol):
    """Rayleigh-Ritz on N V in float64 with one Gram product: values, vectors, residuals, bounds."""
    p, q = source.shape
    Y, Z = source.gram64(V)
    if not (np.isfinite(Y).all() and np.isfinite(Z).all()):
        source.fail()
    # the singular values of Y = N V from its triangular factor (a tall SVD would form its p x k factor
    # at several times the cost); u_i = N v_i / s_i = Y z_i / s_i
    with blas_single_thread():  # tall and skinny: a second BLAS thread does not speed it up (see _threads)
        Ur, s, Zt = np.linalg.svd(np.linalg.qr(Y, mode="r"))
    Zr = Zt.T
    Vr = V @ Zr
    # N^T u_i = N^T N V z_i / s_i: from the same pass, unless s_i is so small that dividing would
    # magnify the rounding of Z beyond the tolerance; those columns get one explicit product.
    small = s <= min(1.0, math.sqrt(config.BLOCK_RESIDUAL_ROUNDING * math.sqrt(p) * _EPS / tol)) * s[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(s > 0, s, 1.0)
        NtU = (Z @ Zr) / scale
        U = (Y @ Zr) / scale
    if small.any():  # the orthonormal factor of Y gives unit u_i where dividing by s_i would not
        U[:, small] = np.linalg.qr(Y)[0] @ Ur[:, small]
        NtU[:, small] = source.rmat64(U[:, small])
    R = NtU - Vr * s
    residual = np.linalg.norm(R, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        error_bound = np.where(s > 0, residual / np.where(s > 0, s, 1.0), np.where(residual == 0, 0.0, np.inf))
    converged = bool(np.all(residual <= tol * np.maximum(s, config.SPECTRUM_RESIDUAL_FLOOR * s[0])))
    lower = np.maximum(s - (p + q) * _EPS * s[0], 0.0)
    return {
        "values": s,
        "u": U,
        "v": Vr,
        "residual": residual,
        "error_bound": error_bound,
        "lower_bound": lower,
        "converged": converged,
    }
