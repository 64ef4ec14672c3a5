"""Spectral norm, its gradient, the best rank-1 approximation and spectral weight decay."""

import math
import warnings

import numba
import numpy as np

from . import _block_krylov, _kernels, _operators, _threads, _topsv, _validate, config
from .results import ConvergenceWarning, DegenerateSingularValueWarning, PowerIterationResult

__all__ = [
    "power_iteration",
    "spectral_norm",
    "spectral_norm_grad",
    "best_rank1",
    "spectral_weight_decay",
]

_METHODS = ("auto", "power", "lanczos", "block")


def power_iteration(A, *, v0=None, tol=config.POWER_TOL, maxiter=None, rng=None, method="auto"):
    """Top singular triplet of A by (accelerated) power iteration, with convergence diagnostics.

    Parameters
    ----------
    A : (M, N) array_like, (..., M, N) stack, scipy.sparse matrix or LinearOperator
        Real float32 or float64 matrix. Arrays may be C or Fortran ordered, views or
        ``numpy.memmap``; a stack returns every field batched. Operators need ``matvec`` and
        ``rmatvec``.
    v0 : (N,) or (..., N) array_like, optional
        Warm start for the right singular vector (for example the previous optimizer step's
        ``v``). A random Gaussian vector from ``rng`` when not given.
    tol : float, optional
        Stop when the relative residual max(||A v - sigma u||, ||A^T u - sigma v||) / sigma is at
        most ``tol``. This bounds the relative error of sigma by ``tol / sqrt(2)``.
    maxiter : int, optional
        Cap on products with the Gram operator A^T A (each is one product with A and one with
        A^T; for ``method="block"`` one block product). Default ``max(1000, 10 * min(M, N))``.
    rng : None, int or numpy.random.Generator, optional
        Source of the random start vector; the result records the seed that reproduces it.
    method : {"auto", "power", "lanczos", "block"}, optional
        "power" is plain power iteration on A^T A; "lanczos" is thick-restart Lanczos on A^T A
        with full reorthogonalization; "auto" starts with power steps, which suffice for warm
        starts and wide gaps, estimates the convergence rate from its own residual history and
        switches to Lanczos when more than a few power steps remain. Stacks of small matrices
        (one whole solve per thread) go straight to Lanczos, which tests its first product
        exactly as a power step would. "block" is block Lanczos: each product multiplies a block
        of vectors (BLAS-3), so it needs fewer passes over A than the single-vector methods, at
        more arithmetic per pass; "auto" takes it for a ``numpy.memmap`` of a file too large to
        hold in memory (``config.OUT_OF_CORE_FRACTION`` of the machine's RAM) and for the page
        cache (``config.BLOCK_KRYLOV_PAGE_CACHE_FRACTION`` of the memory available), whose every
        pass then reads the disk; the file is read in row blocks, at least 32 vectors a product
        (``config.BLOCK_OUT_OF_CORE_MIN``). A file too large to hold that the page cache keeps is
        read in row blocks by single-vector Lanczos: from the second pass on it comes from
        memory, where a single-vector pass costs several times less than a block pass. "block"
        takes arrays (in memory or memory-mapped, stacks matrix by matrix); sparse matrices,
        operators and dask arrays stay with the single-vector methods.

    Returns
    -------
    result : PowerIterationResult
        ``sigma``, ``u``, ``v`` and the diagnostics ``converged``, ``n_iter``, ``n_matvecs``,
        ``n_passes``, ``residual``, ``error_bound``, ``lower_bound``, ``upper_bound``,
        ``sin_theta_bound``, ``ratio_estimate``, ``history``, ``method``, ``stop_reason``, ``seed``.

    Raises
    ------
    TypeError
        If A is integer, boolean, complex or object typed, an operator without ``rmatvec``, or
        ``rng`` is of the wrong type.
    ValueError
        If A holds NaN or Inf, is ragged, not at least 2-D, has a 0-size dimension, its spectral
        norm exceeds the float64 range, or ``tol``, ``maxiter``, ``method`` or ``v0`` are invalid.

    Warns
    -----
    ConvergenceWarning
        If some problem did not reach ``tol`` within ``maxiter``; its best estimate is returned
        with ``converged=False``.

    See Also
    --------
    spectral_norm : the plain value.
    scipy.sparse.linalg.svds : several singular triplets.

    Notes
    -----
    Power iteration on :math:`B = A^T A` multiplies the error in the singular vector by
    :math:`(\\sigma_2/\\sigma_1)^2` a step; Lanczos converges like
    :math:`\\exp(-2k\\sqrt{\\gamma})` with :math:`\\gamma` the relative gap of B, which is what
    makes trained weights with :math:`\\sigma_2/\\sigma_1 = 0.99` tractable. For arrays every
    product with B is one pass over A through a numba kernel that computes
    :math:`y = A x` and :math:`A^T y` row by row. ``sigma = ||A v||`` is a certified lower bound
    on :math:`\\sigma_1`; ``upper_bound`` holds with probability at least
    ``1 - upper_bound_failure`` over the Gaussian start vector. The theory page derives both.
    Matrices far from unit scale (where :math:`\\sigma^2` or :math:`\\sigma^4` would leave the
    float64 range) are solved as :math:`2^{-e} A`, exactly, with e from max|A|; the first product
    shows when this is needed, so ordinary inputs pay nothing for it.

    With ``method="block"`` the block of the last step is certified by one more product in
    float64 (as `top_singular_values` does): ``u = A v / sigma`` exactly, ``residual`` is the
    measured :math:`\\|A^T u - \\sigma v\\| / \\sigma`, ``lower_bound`` is the Rayleigh quotient
    less its rounding, and ``upper_bound`` uses the block Krylov space of the first cycle
    (before any restart), which holds the Krylov space of each Gaussian column of the start
    block: the bound of the single-vector path holds for each column independently, so each may
    fail with probability ``upper_bound_failure`` to the power 1/columns (see the theory page).
    ``n_passes`` counts the reads of the whole of A, the certificate included.

    References
    ----------
    .. [1] J. Kuczyński and H. Woźniakowski, "Estimating the largest eigenvalue by the power
       and Lanczos algorithms with a random start", SIAM J. Matrix Anal. Appl. 13(4), 1992.
    .. [2] K. Wu and H. Simon, "Thick-restart Lanczos method for large symmetric eigenvalue
       problems", SIAM J. Matrix Anal. Appl. 22(2), 2000.
    .. [3] G. H. Golub and R. Underwood, "The block Lanczos method for computing eigenvalues",
       Mathematical Software III (1977), 361-377.

    Examples
    --------
    >>> import numpy as np, linalg_lowrank as ll
    >>> A = np.diag([3.0, 2.0, 1.0])
    >>> res = ll.power_iteration(A, rng=0)
    >>> round(res.sigma, 12), bool(res.converged)
    (3.0, True)
    >>> bool(res.lower_bound <= 3.0 <= res.upper_bound)
    True
    >>> res = ll.power_iteration(A, rng=0, method="block")
    >>> round(res.sigma, 12), res.method, bool(res.converged)
    (3.0, 'block', True)
    """
    result, _, _ = _power_iteration(A, v0=v0, tol=tol, maxiter=maxiter, rng=rng, method=method)
    return result


#: Public defaults are bound once, at import, and shown in the signatures; the functions that pass
#: keywords on to `power_iteration` use its defaults, never a second reading of ``config``.
_DEFAULT_TOL = power_iteration.__kwdefaults__["tol"]


def _power_iteration(
    A, *, v0, tol, maxiter, rng, method, name="A", rtol=0.0, caller="power_iteration", need_gram=False
):
    """The solve behind the public functions; ``rtol > 0`` stops on the value of sigma instead of ``tol``.

    Returns ``(result, gram, outcome)``; the block path builds the Gram operator and the outcome
    (for `best_rank1` and `spectral_norm_grad`) only with ``need_gram``, else returns None for both.
    """
    tol = _validate.positive("tol", tol)
    method = _validate.choice("method", method, _METHODS)
    op = _operators.as_operator(A, name, stack=True, family="power_iteration")
    if method == "block" or (method == "auto" and op.rereads_from_disk):
        return _block_power_iteration(
            A, op, v0=v0, tol=tol, maxiter=maxiter, rng=rng, rtol=rtol, caller=caller, need_gram=need_gram
        )
    gram, batch_shape = op.gram("power_iteration"), op.batch_shape
    m, n = gram.shape
    maxiter = _validate.positive_int("maxiter", maxiter, default=max(config.POWER_MAXITER_FLOOR, 10 * min(m, n)))
    generator, seed = _validate.rng(rng)
    b, q = gram.batch, gram.gram_dim
    extra_products = 0
    if v0 is None:
        X = generator.standard_normal((b, q))
    else:
        seed = None
        X = _start_from_v0(gram, v0, batch_shape)
        extra_products = 1 if gram.left else 0
    out = _topsv.solve(gram, X, tol=tol, rtol=rtol, maxiter=maxiter, method=method)
    if v0 is not None and (out.stop == "zero").any():
        # A warm start in the null space of a nonzero A proves nothing: retry those at random.
        _retry_random(gram, out, generator, tol=tol, rtol=rtol, maxiter=maxiter, method=method)
    result = _assemble(
        gram, out, batch_shape, random_start=v0 is None, seed=seed, extra_products=extra_products, name=name
    )
    if not np.all(result.converged):
        bad = ~np.asarray(result.converged)
        if rtol > 0:
            what = (
                f"rtol={rtol:g} within maxiter={maxiter}; largest error estimate {np.max(out.error[bad.ravel()]):.3g}"
            )
        else:
            what = (
                f"tol={tol:g} within maxiter={maxiter}; largest residual {np.max(np.asarray(result.residual)[bad]):.3g}"
            )
        warnings.warn(
            f"{caller}: {int(bad.sum())} of {bad.size} problem(s) did not reach {what}",
            ConvergenceWarning,
            stacklevel=3,
        )
    return result, gram, out


def _block_power_iteration(A, op, *, v0, tol, maxiter, rng, rtol, caller, need_gram):
    """`_power_iteration` by block Lanczos (`_block_krylov`): few passes over the data.

    A memory-mapped file too large to hold is read in row blocks (`_block_krylov.RowBlocks`, a
    wide block: ``out_of_core_block_size``); an array in memory (each matrix of a stack) goes
    through BLAS (`_block_krylov.DenseSource`, on its smaller Gram side). Matrix-free kinds
    (sparse, operators, dask) get the adapter's TypeError. Returns ``(result, gram, outcome)`` as
    the single-vector path does, the outcome in the space of ``op.gram()`` (for
    `spectral_norm_grad`'s gap check and `best_rank1`'s outer product; None unless ``need_gram``).
    """
    name = op.name
    out_of_core = op.too_large_to_hold
    if not out_of_core:
        arr = op.dense(f'{caller}(method="block")', check_finite=False)
    batch_shape = op.batch_shape
    m, n = op.shape[-2:]
    maxiter = _validate.positive_int("maxiter", maxiter, default=max(config.POWER_MAXITER_FLOOR, 10 * min(m, n)))
    generator, seed = _validate.rng(rng)
    V0 = None if v0 is None else _check_start("v0", v0, batch_shape, n)
    # The value stop of spectral_norm on its residual bound: a relative residual r of the Gram
    # operator puts sigma within r / 2 (relative) of a singular value, so r <= 2 rtol.
    tol_block = 2.0 * rtol if rtol > 0 else tol
    solves = []
    if out_of_core:
        source = _block_krylov.RowBlocks.from_memmap(name, A)  # A is the memmap itself (the adapter's rule)
        block = _block_krylov.out_of_core_block_size(1, n)
        start = None if V0 is None else V0[0]
        solves.append(
            _block_one(source, False, start, tol=tol_block, maxiter=maxiter, generator=generator, block=block)
        )
    else:
        stack = np.asarray(arr).reshape(-1, m, n)
        for i in range(stack.shape[0]):
            transposed = m < n  # N = A^T: the Gram side is the smaller one
            N = stack[i].T if transposed else stack[i]
            source = _block_krylov.DenseSource(name, N, source=arr)  # errors name the index in A
            start = None if V0 is None else (V0[i] if not transposed else None)
            if V0 is not None and transposed:  # Gram space is that of u: start from A v0
                with np.errstate(all="ignore"):
                    start = stack[i].astype(np.float64, copy=False) @ V0[i]
                if not (np.isfinite(start).all() and np.abs(start).max() > 0):
                    start = None  # v0 in the null space (or A extreme): the random columns do the work
            solves.append(_block_one(source, transposed, start, tol=tol_block, maxiter=maxiter, generator=generator))
    result = _assemble_block(solves, batch_shape, m, n, op.dtype, seed=seed, warm=V0 is not None)
    gram = outcome = None
    if need_gram:
        gram = op.gram("power_iteration")
        outcome = _block_outcome(gram, solves)
    if not np.all(result.converged):
        bad = ~np.asarray(result.converged)
        residual = np.asarray(result.residual)[bad]
        if rtol > 0:
            what = f"rtol={rtol:g} within maxiter={maxiter}; largest error estimate {np.max(residual) / 2:.3g}"
        else:
            what = f"tol={tol:g} within maxiter={maxiter}; largest residual {np.max(residual):.3g}"
        warnings.warn(
            f"{caller}: {int(bad.sum())} of {bad.size} problem(s) did not reach {what}",
            ConvergenceWarning,
            stacklevel=4,
        )
    return result, gram, outcome


def _block_one(source, transposed, start, *, tol, maxiter, generator, block=None):
    """One matrix: `_block_krylov.top_triplets` for k = 1, with the diagnostics power_iteration reports."""
    info = {}
    start = None if start is None else np.asarray(start, dtype=np.float64).reshape(-1, 1)
    one = _block_krylov.top_triplets(
        source, 1, tol=tol, maxiter=maxiter, generator=generator, block=block, start=start, diagnostics=info
    )
    u, v = one["u"][:, 0], one["v"][:, 0]
    if transposed:  # N = A^T: N's right vectors are A's left ones
        u, v = v, u
    return {
        **one,
        "u": u,
        "v": v,
        "info": info,
        "gram_dim": source.shape[1],
        "rows": source.shape[0],
        "maxiter": maxiter,
    }


def _block_upper_bound(sigma, one, failure):
    """``(upper_bound, failure)`` of one block solve: the argument of `_topsv.upper_bound_eps` per column.

    The first cycle's basis holds the block Krylov space of degree d (``krylov_degree``) of the
    start block, hence the Krylov space K_d(B, x_j) of each of its Gaussian columns x_j, and the
    certified sigma^2 is at least the top Ritz value of that basis (thick restarts and the
    certificate only raise it). The bound fails only if it fails for every Gaussian column, and
    the columns are independent: with j of them, each may fail with probability failure^(1/j).
    The products' rounding (float32 products move Ritz values by about ``SPECTRUM_BREAKDOWN_ULPS
    sqrt(p) eps`` relative, the level `_block_krylov` treats as noise) is added to the margin.
    """
    info = one["info"]
    j = info["random_columns"]
    if j == 0:
        return math.inf, 0.0
    eps = float(_topsv.upper_bound_eps(one["gram_dim"], [0], [info["krylov_degree"]], failure ** (1.0 / j))[0])
    rounding = 2 * config.SPECTRUM_BREAKDOWN_ULPS * math.sqrt(one["rows"]) * info["products_eps"]
    with np.errstate(over="ignore"):
        upper = sigma * math.sqrt((1.0 + rounding) / (1.0 - eps)) if eps < 1.0 else math.inf
    return upper, failure


def _block_stop(one, sigma, maxiter):
    if sigma == 0.0:
        return "zero"
    if one["converged"]:
        return "converged"
    return "maxiter" if one["n_iter"] - 1 >= maxiter else "stalled"


def _assemble_block(solves, batch_shape, m, n, dtype, *, seed, warm):
    """The `PowerIterationResult` of block solves (one per matrix), with the fields of the single-vector path."""
    dtype = dtype if dtype in _validate.SUPPORTED_FLOATS else np.dtype(np.float64)
    failure = config.UPPER_BOUND_FAILURE_PROB
    rows = {key: [] for key in ("sigma", "u", "v", "converged", "n_iter", "n_matvecs", "n_passes", "residual",
                                "error_bound", "lower_bound", "upper_bound", "sin_theta_bound", "ratio_estimate",
                                "stop_reason", "history")}  # fmt: skip
    failures = []
    for one in solves:
        sigma = float(one["values"][0])
        u, v = one["u"].copy(), one["v"].copy()
        if sigma == 0.0:  # the zero matrix: e1, e1 (any unit pair is a singular pair)
            u[:], v[:] = 0.0, 0.0
            u[0] = v[0] = 1.0
        # power_iteration's residual: max(||A v - sigma u||, ||A^T u - sigma v||) / sigma; the first is
        # zero by construction (u = A v / sigma), the second the certificate's measured residual
        residual = 0.0 if sigma == 0.0 else float(one["residual"][0]) / sigma
        ritz = one["info"].get("ritz", np.zeros(0))
        ratio = math.sqrt(max(ritz[1], 0.0) / ritz[0]) if ritz.size > 1 and ritz[0] > 0 else math.nan
        gap = 1.0 - ratio**2 if math.isfinite(ratio) else 0.0
        if warm and one["info"]["random_columns"] == 0:
            upper, fail = math.inf, 0.0
        else:
            upper, fail = _block_upper_bound(sigma, one, failure)
        failures.append(fail)
        row = dict(
            sigma=sigma,
            u=u.astype(dtype),
            v=v.astype(dtype),
            converged=bool(one["converged"]),
            n_iter=int(one["n_iter"]),
            n_matvecs=int(one["n_matvecs"]),
            n_passes=int(one["n_passes"]),
            residual=residual,
            error_bound=residual / math.sqrt(2.0),
            lower_bound=float(one["lower_bound"][0]),
            upper_bound=upper,
            sin_theta_bound=0.0 if sigma == 0.0 else (min(residual / gap, 1.0) if gap > 0 else 1.0),
            ratio_estimate=ratio,
            stop_reason=_block_stop(one, sigma, one["maxiter"]),
            history=np.asarray(one["info"]["history"]),
        )
        for key, value in row.items():
            rows[key].append(value)
    if batch_shape == ():
        fields = {key: values[0] for key, values in rows.items()}
    else:
        fields = {}
        for key, values in rows.items():
            if key in ("u", "v"):
                fields[key] = np.stack(values).reshape(batch_shape + (m if key == "u" else n,))
            elif key == "history":
                hist = np.empty(len(values), dtype=object)
                hist[:] = values
                fields[key] = hist.reshape(batch_shape)
            else:
                fields[key] = np.asarray(values, dtype=object if key == "stop_reason" else None).reshape(batch_shape)
    return PowerIterationResult(upper_bound_failure=max(failures), method="block", seed=seed, **fields)


def _block_outcome(gram, solves):
    """The solves as a `_topsv.Outcome` in the space of ``gram`` (what the gap check and `best_rank1` read)."""
    out = _topsv.Outcome(gram.batch, gram.gram_dim, gram.other_dim)
    for i, one in enumerate(solves):
        e = int(one["info"].get("exponent", 0))
        scaled = math.ldexp(float(one["values"][0]), -e)
        w = one["u"] if gram.left else one["v"]
        out.theta[i] = scaled * scaled
        out.w[i] = w
        out.exponent[i] = e
        out.converged[i] = bool(one["converged"])
        out.stop[i] = "zero" if scaled == 0.0 else ("converged" if one["converged"] else "maxiter")
    out.method = "block"
    return out


def _check_start(name, v0, batch_shape, n):
    """A start vector (or one per matrix) as float64 rows, checked: shape, dtype, finite, nonzero."""
    arr = np.asarray(v0)
    _validate.float_dtype(name, arr.dtype)
    want = batch_shape + (n,)
    if arr.shape != want:
        raise ValueError(f"`{name}` must have shape {want}, got {arr.shape}")
    _validate.finite(name, arr)
    V0 = np.asarray(arr, dtype=np.float64).reshape(-1, n)
    if (np.abs(V0).max(axis=1) == 0).any():
        raise ValueError(f"`{name}` must be nonzero (an all-zero start vector has no direction)")
    return _operators.unit_rows(V0)  # any scale of v0 is fine: only its direction is used


def _start_from_v0(gram, v0, batch_shape, name="v0"):
    V0 = _check_start(name, v0, batch_shape, gram.shape[1])
    if not gram.left:
        return V0
    X = gram.matvec_start(V0)  # Gram space is that of u: start from A v0
    zero = np.abs(X).max(axis=1) == 0
    X[zero] = 1.0  # v0 in the null space: any direction will do, the solve finds out
    return X


def _retry_random(gram, out, generator, **kw):
    """Solve again from random starts the problems whose warm start saw A v0 = 0."""
    idx = np.flatnonzero(out.stop == "zero")
    if gram.batch > 1:  # same orientation, so the vectors live in the same space
        gram = gram.subset(idx)
    again = _topsv.solve(gram, generator.standard_normal((idx.size, gram.gram_dim)), **kw)
    for field in ("theta", "w", "y", "residual", "converged", "ratio", "stop", "exponent"):
        getattr(out, field)[idx] = getattr(again, field)
    out.n_iter[idx] += again.n_iter
    for k, i in enumerate(idx):
        out.history[i].extend(again.history[k])


def _assemble(gram, out, batch_shape, *, random_start, seed, extra_products, name):
    m, n = gram.shape
    dtype = gram.dtype if gram.dtype in _validate.SUPPORTED_FLOATS else np.dtype(np.float64)
    scaled_sigma = np.sqrt(out.theta)  # sigma of 2^-e A
    zero = out.theta == 0
    safe = np.where(zero, 1.0, scaled_sigma)
    other = out.y / safe[:, None]
    sigma = scaled_sigma
    if out.exponent.any():
        with np.errstate(over="ignore"):
            sigma = np.ldexp(scaled_sigma, out.exponent)
        if np.isinf(sigma).any():
            k = int(np.flatnonzero(np.isinf(sigma))[0])
            log2 = math.log2(scaled_sigma[k]) + int(out.exponent[k])
            raise ValueError(
                f"`{name}`: its spectral norm, about 2^{log2:.1f}, exceeds the float64 range "
                f"(max {np.finfo(np.float64).max:.4g}); scale it down"
            )
    if gram.left:
        U, V = out.w, other
    else:
        U, V = other, out.w
    U = U.copy()
    V = V.copy()
    U[zero] = 0.0
    U[zero, 0] = 1.0  # the zero matrix: e1, e1 (any unit pair is a singular pair)
    V[zero] = 0.0
    V[zero, 0] = 1.0
    residual = np.where(zero, 0.0, out.residual)
    error_bound = residual / math.sqrt(2.0)
    failure = config.UPPER_BOUND_FAILURE_PROB
    if random_start:
        eps = _topsv.upper_bound_eps(gram.gram_dim, out.power_degree, out.lanczos_dim, failure)
        with np.errstate(over="ignore"):  # beyond the float64 range an upper bound is inf
            upper = sigma / np.sqrt(1.0 - eps)
    else:
        upper = np.full(sigma.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = 1.0 - np.square(np.nan_to_num(out.ratio, nan=1.0))
        sin_theta = np.where(gap > 0, residual / gap, np.inf)
    sin_theta = np.where(zero, 0.0, np.minimum(sin_theta, 1.0))
    passes_per_iter = gram.passes_per_gram
    n_iter = out.n_iter.copy()
    fields = dict(
        sigma=sigma,
        u=U.astype(dtype, copy=False).reshape(batch_shape + (m,)),
        v=V.astype(dtype, copy=False).reshape(batch_shape + (n,)),
        converged=out.converged,
        n_iter=n_iter,
        n_matvecs=2 * n_iter + extra_products,
        n_passes=passes_per_iter * n_iter + extra_products,
        residual=residual,
        error_bound=error_bound,
        lower_bound=sigma.copy(),
        upper_bound=upper,
        sin_theta_bound=sin_theta,
        ratio_estimate=out.ratio,
        stop_reason=out.stop,
    )
    history = [np.asarray(h) for h in out.history]
    if batch_shape == ():
        scalars = {k: (v if k in ("u", "v") else _scalar(np.asarray(v)[0])) for k, v in fields.items()}
        scalars["history"] = history[0]
        fields = scalars
    else:
        for k in list(fields):
            if k not in ("u", "v"):
                fields[k] = np.asarray(fields[k]).reshape(batch_shape)
        hist = np.empty(len(history), dtype=object)
        hist[:] = history
        fields["history"] = hist.reshape(batch_shape)
    return PowerIterationResult(
        upper_bound_failure=failure if random_start else 0.0, method=out.method, seed=seed, **fields
    )


def _scalar(x):
    return x.item() if isinstance(x, np.generic) else x


def spectral_norm(
    A, *, rtol=config.SPECTRAL_NORM_RTOL, maxiter=None, rng=None, v0=None, method="auto", return_info=False
):
    """Spectral norm ||A||_2 = sigma1, the largest singular value, to relative accuracy ``rtol``.

    Parameters
    ----------
    A : (M, N) array_like, (..., M, N) stack, or LinearOperator
        As in `power_iteration`.
    rtol : float, optional
        Stop when the estimated relative error of the returned value is at most ``rtol``: the
        residual bound (relative residual of the Gram operator at most ``2 rtol``), or Kato–Temple
        (error of order residual² / gap) once the Krylov space is large enough that no close
        eigenvalue can hide from the gap it reads (the theory page derives both and the
        safeguard). The default, 1e-10, is three orders above the rounding of a float64 Rayleigh
        quotient; float32 input is computed in float64 and returned as a float64 value accurate
        to ``rtol`` (plus the float64 rounding of the products).
    maxiter : int, optional
        Cap on products with the Gram operator, as in `power_iteration`.
    rng : None, int or numpy.random.Generator, optional
        Source of the random start vector.
    v0 : (N,) or (..., N) array_like, optional
        Warm start for the right singular vector.
    method : {"auto", "power", "lanczos", "block"}, optional
        As in `power_iteration`: "auto" takes block Lanczos ("block") for a memory-mapped file
        too large to hold and to keep in the page cache, which needs fewer reads of the file.
        There the value stop is the residual bound alone (relative residual at most ``2 rtol``,
        certified by a float64 product).
    return_info : bool, optional
        Return the `PowerIterationResult` of the solve (sigma, singular vectors, bounds,
        ``n_iter``, ``converged``) instead of the value alone.

    Returns
    -------
    sigma : float or ndarray
        sigma1 as a Python float (float64), or an array of the batch shape for stacks.
    result : PowerIterationResult
        With ``return_info=True``.

    Warns
    -----
    ConvergenceWarning
        If some problem did not reach ``rtol`` within ``maxiter``; its best estimate (a certified
        lower bound on sigma1, as every returned value) is returned.

    See Also
    --------
    power_iteration : the singular triplet with diagnostics, to a residual tolerance.

    Examples
    --------
    >>> import numpy as np, linalg_lowrank as ll
    >>> round(ll.spectral_norm(np.array([[3.0, 0.0], [4.0, 0.0]]), rng=0), 12)
    5.0
    """
    rtol = _validate.positive("rtol", rtol)
    result, _, _ = _power_iteration(
        A, v0=v0, tol=_DEFAULT_TOL, maxiter=maxiter, rng=rng, method=method, rtol=rtol, caller="spectral_norm"
    )
    return result if return_info else result.sigma


def spectral_norm_grad(A, *, gap_rtol=None, check_gap=True, **kwargs):
    """Gradient of the spectral norm, d||A||_2 / dA = u1 v1^T.

    Parameters
    ----------
    A : (M, N) array_like or (..., M, N) stack
        Real float32 or float64 matrix (or operator; the gradient is returned dense).
    gap_rtol : float, optional
        sigma1 and sigma2 count as numerically indistinguishable when
        (sigma1 - sigma2) / sigma1 <= gap_rtol. Default ``sqrt(eps)`` of the dtype of A.
    check_gap : bool, optional
        Estimate sigma2 by a second, deflated solve and warn when the gap is below
        ``gap_rtol``. Costs about as much again as the first solve; pass False in hot loops.
    **kwargs
        Passed to `power_iteration`.

    Returns
    -------
    grad : ndarray
        u1 v1^T with the shape and dtype of A. The zero matrix returns the zero matrix.

    Warns
    -----
    DegenerateSingularValueWarning
        When sigma1 and sigma2 are numerically indistinguishable: the spectral norm is then not
        differentiable at A, u1 v1^T is one subgradient among many, and which one comes back
        depends on the start vector.
    ConvergenceWarning
        As in `power_iteration`.

    Notes
    -----
    Where sigma1 is simple, :math:`\\partial\\sigma_1 / \\partial A = u_1 v_1^T`. At A = 0 the
    subdifferential is the unit ball of the nuclear norm; we return its minimum-norm element,
    the zero matrix. The gradient of :math:`\\tfrac12\\|A\\|_2^2` is `best_rank1`.

    Examples
    --------
    >>> import numpy as np, linalg_lowrank as ll
    >>> ll.spectral_norm_grad(np.diag([2.0, 1.0]), rng=0).round(12) + 0.0
    array([[1., 0.],
           [0., 0.]])
    """
    result, gram, out = _power_iteration(A, name="A", need_gram=True, **_solver_kwargs(kwargs, "spectral_norm_grad"))
    grad = _outer(result, times_sigma=False, gram=gram)
    if check_gap:
        dtype = grad.dtype
        gap_rtol = _validate.positive("gap_rtol", gap_rtol, allow_none=True) or math.sqrt(np.finfo(dtype).eps)
        _warn_if_degenerate(gram, out, gap_rtol, kwargs.get("rng"))
    return grad


def _solver_kwargs(kwargs, caller):
    """The keywords of `power_iteration` with its defaults (one rule: the defaults of its signature)."""
    unknown = set(kwargs) - set(power_iteration.__kwdefaults__)
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    return {**power_iteration.__kwdefaults__, **kwargs}


class _Deflated:
    """The Gram operator with the converged top vector projected out: its top eigenvalue is sigma2^2.

    Products, scale and errors are those of the wrapped operator (so theta is in its units).
    """

    numba_fast_path = False  # the projection runs in Python between products: the engine's Python driver

    def __init__(self, gram, locked):
        self.gram_op = gram
        self.locked = locked
        self.batch = gram.batch
        self.other_dim = gram.other_dim
        self.gram_dim = gram.gram_dim
        # the scale and its handling are the wrapped operator's
        self.begin, self.rescale, self.fail, self.range_bounds = gram.begin, gram.rescale, gram.fail, gram.range_bounds

    @property
    def exponent(self):
        return self.gram_op.exponent

    @property
    def scaled(self):
        return self.gram_op.scaled

    def _project(self, X):
        return X - np.einsum("bq,bq->b", X, self.locked)[:, None] * self.locked

    def gram(self, X, active):
        Y, Z = self.gram_op.gram(self._project(X), active)
        return Y, self._project(Z)


def _warn_if_degenerate(gram, out, gap_rtol, rng):
    # Only a converged top pair can be deflated: an unconverged one leaves most of v1 in the
    # deflated operator, whose top is then sigma1 again. Those problems got a ConvergenceWarning.
    live = (out.theta > 0) & out.converged
    if gram.gram_dim < 2 or not live.any():
        return
    generator, _ = _validate.rng(rng if rng is not None else 0)
    deflated = _Deflated(gram, out.w)
    X = deflated._project(generator.standard_normal((gram.batch, gram.gram_dim)))
    tol2 = max(gap_rtol, config.POWER_TOL)
    second = _topsv.solve(
        deflated, X, tol=tol2, maxiter=max(config.POWER_MAXITER_FLOOR, 10 * gram.gram_dim), method="lanczos"
    )
    # Weyl: some eigenvalue of the deflated operator lies within residual * theta of theta. Both
    # solves report theta for 2^-e A; compare sigma2 / sigma1 with the exponents brought together.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sqrt(second.theta * (1.0 + second.residual) / np.where(live, out.theta, 1.0))
    ratio = np.ldexp(ratio, second.exponent - out.exponent)
    settled = second.converged | (second.stop == "exact") | (second.theta == 0)
    degenerate = live & settled & (ratio >= 1.0 - gap_rtol)
    unknown = live & ~settled
    if unknown.any():
        warnings.warn(
            f"spectral_norm_grad: the gap between sigma1 and sigma2 could not be checked for {int(unknown.sum())} "
            f"of {unknown.size} matrices (the deflated solve did not converge)",
            ConvergenceWarning,
            stacklevel=3,
        )
    if degenerate.any():
        warnings.warn(
            f"spectral_norm_grad: sigma1 and sigma2 are numerically indistinguishable "
            f"(relative gap <= {gap_rtol:.2g}) for {int(degenerate.sum())} of {degenerate.size} matrices; "
            "the spectral norm is not differentiable there and u1 v1^T is one subgradient of many",
            DegenerateSingularValueWarning,
            stacklevel=3,
        )


def _outer(result, times_sigma, gram):
    """sigma u v^T (or u v^T) in the dtype of u, as the input's kind holds it (`gram.outer`).

    u v^T is taken as 0 where sigma = 0.
    """
    sigma = np.asarray(result.sigma)
    factor = sigma if times_sigma else (sigma > 0).astype(np.float64)
    return gram.outer(result.u, result.v, factor)


def best_rank1(A, **kwargs):
    """Best rank-1 approximation sigma1 u1 v1^T (Eckart–Young), the gradient of ½||A||_2^2.

    Parameters
    ----------
    A : (M, N) array_like or (..., M, N) stack
        Real float32 or float64 matrix.
    **kwargs
        Passed to `power_iteration`.

    Returns
    -------
    A1 : ndarray
        sigma1 u1 v1^T with the shape and dtype of A; ``||A - A1||_F^2 = sum_{i>=2} sigma_i^2``.

    Notes
    -----
    :math:`\\nabla \\tfrac12\\|A\\|_2^2 = \\sigma_1 u_1 v_1^T = A v_1 v_1^T`, which is also the
    closest rank-1 matrix to A in the Frobenius and the spectral norm.

    Examples
    --------
    >>> import numpy as np, linalg_lowrank as ll
    >>> ll.best_rank1(np.diag([2.0, 1.0]), rng=0).round(12) + 0.0
    array([[2., 0.],
           [0., 0.]])
    """
    result, gram, _ = _power_iteration(A, need_gram=True, **_solver_kwargs(kwargs, "best_rank1"))
    return _outer(result, times_sigma=True, gram=gram)


def spectral_weight_decay(W, decay, *, v=None, n_iter=None, out=None, rng=None):
    """Spectral weight decay W - decay * W v v^T, shrinking only the top singular value.

    Parameters
    ----------
    W : (M, N) or (..., M, N) ndarray
        Weights, float32 or float64.
    decay : float
        Non-negative decay factor: sigma1 becomes (1 - decay) sigma1, the rest is unchanged.
    v : (N,) or (..., N) array_like, optional
        Warm start for the top right singular vector, typically the ``v`` this function
        returned at the previous optimizer step. Without it, v is computed to full accuracy by
        `power_iteration`.
    n_iter : int, optional
        Extra power steps that refine a given ``v`` before the update (default 0); each is one
        pass over W. Ignored when ``v`` is None.
    out : ndarray, optional
        Where to write the result; may be ``W`` itself for an in-place update.
    rng : None, int or numpy.random.Generator, optional
        Used only when ``v`` is None.

    Returns
    -------
    W_new : ndarray
        The updated weights (``out`` when given), shape and dtype of W.
    v : ndarray
        The next warm start: one power step on W beyond the vector that was used, folded into
        the same pass over W. Pass it back as ``v`` at the next step.

    Raises
    ------
    ValueError
        If W holds NaN or Inf or its update is not representable in its dtype (W is then left
        unchanged, also in place), or ``decay``, ``v``, ``n_iter`` or ``out`` are invalid
        (``out`` must match W's shape and dtype and be writeable).

    Notes
    -----
    Frobenius weight decay shrinks every singular value by the same factor; spectral decay
    removes ``decay * sigma1`` from the top one only: :math:`W - \\lambda W v_1 v_1^T` has
    singular values :math:`(1-\\lambda)\\sigma_1, \\sigma_2, \\dots`. For C-ordered W the update
    reads and writes W once: a fused numba kernel computes :math:`y = W v` row by row while it
    writes, and accumulates :math:`W^T y` for the next warm start, so an optimizer that passes
    ``v`` back runs one power step per training step at no extra pass. In place (``out=W``), a
    read-only pass computes :math:`y` first and W is written only if it proves every entry of the
    result finite; otherwise (W near the float range, or holding NaN/Inf) the update is computed
    into scratch and verified, and W is left unchanged if it cannot be represented. With a
    separate ``out``, ``out`` is unspecified after an error.

    Examples
    --------
    >>> import numpy as np, linalg_lowrank as ll
    >>> W_new, v = ll.spectral_weight_decay(np.diag([2.0, 1.0]), 0.5, rng=0)
    >>> np.linalg.svd(W_new, compute_uv=False).round(12)
    array([1., 1.])
    """
    Warr = _operators.as_operator(W, "W", stack=True, family="spectral_weight_decay")
    Warr = Warr.dense("spectral_weight_decay", check_finite=False)
    decay = _validate.nonnegative("decay", decay)
    batch_shape = Warr.shape[:-2]
    m, n = Warr.shape[-2:]
    if out is None:
        out = np.empty(Warr.shape, dtype=Warr.dtype)
    elif not isinstance(out, np.ndarray) or out.shape != Warr.shape or out.dtype != Warr.dtype:
        raise ValueError(f"`out` must be an ndarray of shape {Warr.shape} and dtype {Warr.dtype}")
    elif not out.flags.writeable:
        raise ValueError("`out` must be writeable, got a read-only array")
    elif out.ndim > 2 and not out.flags.c_contiguous:
        raise ValueError("`out` must be C-contiguous when W is a stack")
    n_iter = _validate.positive_int("n_iter", n_iter, default=0, minimum=0)
    if v is None:
        result, _, _ = _power_iteration(Warr, v0=None, tol=_DEFAULT_TOL, maxiter=None, rng=rng, method="auto", name="W")
        V = np.asarray(result.v, dtype=np.float64).reshape(-1, n)
    elif n_iter == 0:  # the optimizer-loop case: one fused pass, nothing else
        V = _unit_rows(_check_start("v", v, batch_shape, n), fallback=None)
    else:
        V = _refine(Warr, v, batch_shape, n_iter)
    W3 = Warr.view(np.ndarray).reshape(-1, m, n) if Warr.ndim != 2 else Warr.view(np.ndarray)[None]
    O3 = out.view(np.ndarray).reshape(-1, m, n) if out.ndim != 2 else out.view(np.ndarray)[None]
    V_next = np.empty_like(V)
    y, z = np.empty(m), np.empty(n)
    scratch = np.empty((max(1, min(numba.get_num_threads(), m)), n))
    limit = _write_limit(Warr.dtype)
    for k in range(W3.shape[0]):
        with _threads.numba_threads_for(m * n):
            z = _decay_one(W3[k], O3[k], np.ascontiguousarray(V[k]), decay, y, z, scratch, limit, Warr)
        V_next[k] = z
    V_next = _unit_rows(V_next, fallback=V)
    return out, V_next.reshape(batch_shape + (n,)).astype(Warr.dtype, copy=False)


def _decay_one(Wk, Ok, vk, decay, y, z, scratch, limit, Warr):
    """One matrix of `spectral_weight_decay`: Ok = Wk - decay (Wk vk) vk^T; returns the next direction."""
    alias = np.shares_memory(Wk, Ok)
    fused = Wk.flags.c_contiguous and Ok.flags.c_contiguous and (not alias or Ok.ctypes.data == Wk.ctypes.data)
    if fused and alias:
        # In place: nothing is written until y = W v, from a read-only pass, shows that every
        # entry of the result is finite (_safe_update). The extra pass is the price of never
        # leaving W half-updated (a NaN in its last row, or entries near the float range).
        _kernels.gram_matvec(Wk, vk, y, z, scratch)
        fused = _safe_update(y, decay, limit)
        if fused:
            if not _normal_direction(z):
                z = _scaled_direction(Wk, vk)
            _kernels.rank1_deflate_rows(Wk, vk, decay, Ok, np.empty(Wk.shape[0]), np.empty(Wk.shape[1]), scratch)
    elif fused:  # out is the caller's scratch: write first, verify after (W is intact)
        _kernels.rank1_deflate_rows(Wk, vk, decay, Ok, y, z, scratch)
        fused = _safe_update(y, decay, limit)
        if fused and not _normal_direction(z):
            z = _scaled_direction(Wk, vk)
    if not fused:
        z = _careful_update(Wk, vk, decay, Ok, Warr)
    return z


def _write_limit(dtype):
    """A bound on |decay * y_i| below which W_ij - decay * y_i * v_j (|v_j| <= 1) cannot overflow.

    |W_ij| is at most the largest finite value F; adding less than a quarter of the spacing of
    floats at F cannot round past F (the overflow threshold is F plus half that spacing).
    """
    big = np.finfo(dtype).max
    return float(big - np.nextafter(big, dtype.type(0))) / 4.0


def _safe_update(y, decay, limit):
    """True if y is finite and decay * max|y| is below ``limit`` (then the whole update is finite)."""
    with np.errstate(over="ignore", invalid="ignore"):
        top = float(np.abs(y).max()) * decay
    return bool(np.isfinite(y).all()) and top <= limit


def _normal_direction(z):
    """True if z is finite, nonzero, and far enough from underflow to carry a direction."""
    if not np.isfinite(z).all():
        return False
    top = float(np.abs(z).max())
    return top == 0.0 or top >= 2.0**-config.SCALE_SAFE_LOG2


def _scaled_w(Wk):
    """(2^-e W in float64 with max|entry| in [0.5, 1), e): products of it cannot under- or overflow."""
    amax = float(np.abs(Wk).max())
    e = int(_operators.exponent_of(amax))
    with np.errstate(under="ignore"):
        return np.ldexp(np.asarray(Wk, dtype=np.float64), -e), e


def _scaled_direction(Wk, vk):
    """The direction of W^T W v for weights of extreme scale (one more pass, only then)."""
    W64, _ = _scaled_w(Wk)
    return W64.T @ (W64 @ vk)


def _careful_update(Wk, vk, decay, Ok, Warr):
    """W - decay (W v) v^T computed into scratch on the scaled matrix, verified finite, then copied.

    The path for weights the fused kernel cannot serve (not C-ordered) or whose update it cannot
    certify (entries near the float range, NaN/Inf): nothing is written to ``Ok`` unless every
    entry is finite. Returns the direction of W^T W v.
    """
    if not np.isfinite(Wk).all():
        _validate.finite("W", Warr)
    W64, e = _scaled_w(Wk)
    y = W64 @ vk
    with np.errstate(over="ignore", under="ignore"):
        new = np.ldexp(W64 - decay * np.outer(y, vk), e).astype(Wk.dtype)
    if not np.isfinite(new).all():
        raise ValueError(
            f"`W`: the update W - decay (W v) v^T has entries beyond the {Wk.dtype} range "
            f"(max|W| = {float(np.abs(Wk).max()):.4g}, decay = {decay:g}); W is left unchanged"
        )
    np.copyto(Ok, new)
    return W64.T @ y  # the direction of W^T W v


def _refine(Warr, v, batch_shape, n_iter):
    """``n_iter`` power steps on W from the warm start v; the unit right vectors."""
    gram, _ = _operators.as_gram(Warr, "W")
    for _attempt in range(2):
        try:
            gram.begin()
            X = _operators.unit_rows(_start_from_v0(gram, v, batch_shape, name="v"))
            with _threads.blas_single_thread():
                for _ in range(n_iter):
                    _, Z = gram.gram(X, np.arange(gram.batch))
                    X = _unit_rows(Z, fallback=X)
            if not gram.left:
                return X
            V = gram.other_side(X)
            if not np.isfinite(V).all():
                raise _operators.Rescale
            return _unit_rows(V, fallback=None)
        except _operators.Rescale:
            if gram.scaled:
                gram.fail()
            gram.rescale()
    raise AssertionError("unreachable")  # pragma: no cover


def _unit_rows(X, fallback):
    """Rows of X scaled to unit norm (of any scale); zero rows take the row of ``fallback`` (or e1)."""
    unit = _operators.unit_rows(X)
    zero = np.abs(X).max(axis=1) == 0
    if zero.any():
        unit[zero] = 0.0
        if fallback is not None:
            unit[zero] = _operators.unit_rows(fallback[zero])
        else:
            unit[zero, 0] = 1.0
    return unit
