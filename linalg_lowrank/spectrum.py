"""The top of a matrix's spectrum and the shape statistics researchers read from it.

`top_singular_values` computes the top K by one of three certified methods: the Gram method
(``G = N^T N`` formed once, its top eigenvectors by LAPACK), block Lanczos
(``_block_krylov``, block products, few passes: also for matrices on disk) or the package's
thick-restart Lanczos (the engine of ``_krylov``), and certifies the result with one block product;
`spectrum_statistics` derives the stable rank, the effective rank (with the interval the unknown
tail allows) and weightwatcher's power-law exponent alpha from the top K values;
`difference_norm` is the spectral norm of W_new - W_old without forming the difference.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np

from . import _block_krylov, _operators, _topsv, _validate, config
from .results import ConvergenceWarning, Result
from .spectral import power_iteration

_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True, repr=False)
class TopSingularValuesResult(Result):
    """The K largest singular values of A (or of every matrix of a stack) and what is certified about them.

    For a stack of shape (..., m, n) every field but ``seed`` and ``method`` carries the batch
    shape in front.

    Attributes
    ----------
    values : ndarray, shape (..., k)
        Singular value estimates, descending (float64): the singular values of ``A V`` for the
        returned orthonormal V (a Rayleigh-Ritz step).
    u : ndarray, shape (..., m, k)
        Left singular vector estimates, ``A v_i / values_i``.
    v : ndarray, shape (..., n, k)
        Right singular vector estimates (orthonormal columns).
    residual : ndarray, shape (..., k)
        ``||A^T u_i - values_i v_i||`` measured with one product (``A v_i = values_i u_i`` holds
        by construction, up to rounding).
    error_bound : ndarray, shape (..., k)
        ``residual / values``: some singular value of A lies within ``error_bound * values`` of
        ``values`` (Weyl's theorem on the residual). Which one is not certified: a singular
        value that the Krylov space missed (a start vector orthogonal to it, or an unresolved
        multiplicity) is not excluded; with a Gaussian start that has probability zero.
    lower_bound : ndarray, shape (..., k)
        Certified lower bound on the i-th largest singular value sigma_i of A: ``values``
        minus the rounding of the product ``A V`` (``(m + n) eps values_1``). By Cauchy
        interlacing, the i-th singular value of ``A V`` (V with orthonormal columns) is at
        most sigma_i; this holds whatever the start vector and whether or not the iteration
        converged.
    converged : bool or ndarray
        Whether every residual met ``tol * max(values_i, floor * values_1)`` (floor:
        ``config.SPECTRUM_RESIDUAL_FLOOR``).
    n_iter : int or ndarray
        Gram products (single-vector for Lanczos, block for block Lanczos; forming G counts as one
        for the Gram method) plus the final block product (counted as one).
    n_matvecs : int or ndarray
        Vectors multiplied by A plus vectors multiplied by A^T: two per Lanczos step, twice the
        block size per block Lanczos step, 2 min(M, N) for forming G, and 2k for the final check.
    seed : int
        Seed of the random start vectors: ``rng=seed`` reproduces the run.
    method : str
        "gram", "block" or "lanczos": the method that produced the answer.
    n_passes : int or ndarray
        Reads of the whole of A (one per Gram product, block or single-vector, and one for the
        final check; a scan for the scale when A is far from unit scale).
    """

    values: np.ndarray
    u: np.ndarray
    v: np.ndarray
    residual: np.ndarray
    error_bound: np.ndarray
    lower_bound: np.ndarray
    converged: object
    n_iter: object
    n_matvecs: object
    seed: int
    method: str
    n_passes: object = None


def top_singular_values(A, k, *, tol=None, maxiter=None, rng=None, method="auto"):
    """The k largest singular values of A, with their singular vectors, residuals and certified lower bounds.

    Parameters
    ----------
    A : (M, N) array_like or (..., M, N) stack
        Real floating matrix or stack of matrices (float32 stays float32 in the products).
    k : int
        How many singular values, ``1 <= k <= min(M, N)``.
    tol : float, optional
        Relative residual tolerance per value (default ``config.SPECTRUM_TOL`` for A's dtype:
        1e-4 for float32, 1e-8 for float64). The relative error of a value is at most its
        ``error_bound`` and in practice of order ``error_bound**2 / gap``.
    maxiter : int, optional
        Cap on Gram products of the iteration per matrix: single-vector products for Lanczos,
        block products for block Lanczos (default ``max(config.POWER_MAXITER_FLOOR, 10 * min(M, N))``
        for Lanczos, ``config.BLOCK_MAXITER`` block products for block Lanczos).
    rng : None, int or numpy.random.Generator, optional
        Source of the random start vectors.
    method : {"auto", "gram", "block", "lanczos"}, optional
        "gram": form ``G = N^T N`` of the smaller side once (one pass, BLAS-3) and take its top k
        eigenvectors by LAPACK's ``syevr``; "block": block Lanczos with block products (BLAS-3,
        few passes over A); "lanczos": single-vector thick-restart Lanczos. All three are
        certified by the same final product. "auto" (default) takes "gram" for a dense matrix
        whose smaller side is at most ``config.BLOCK_GRAM_MAX_DIM``, "block" beyond that and
        for a ``numpy.memmap`` too large for memory (``config.OUT_OF_CORE_FRACTION``), which is
        then read from its file in row blocks.

    Returns
    -------
    result : TopSingularValuesResult
        ``values`` with ``error_bound`` and certified ``lower_bound``, vectors ``u`` and ``v``.

    Raises
    ------
    TypeError
        If A is not a real floating array, or ``k``/``maxiter`` are not integers.
    ValueError
        If A holds NaN or Inf, is empty, ``k`` is outside ``[1, min(M, N)]`` or ``tol`` is not
        positive.

    Warns
    -----
    ConvergenceWarning
        If some value did not meet ``tol`` within ``maxiter``; the best values are returned.

    See Also
    --------
    spectrum_statistics : stable rank, effective rank and alpha from these values.
    linalg_lowrank.power_iteration : the top triplet only, with a probabilistic upper bound.
    scipy.linalg.svdvals : every singular value, at full cost.

    Notes
    -----
    Each method yields an orthonormal basis V of k vectors on the Gram side ``B = N^T N``
    (N = A or A^T, the smaller side last). The Gram method diagonalizes B formed explicitly
    (its rounding squares the condition; if the certificate misses ``tol`` for small values,
    block Lanczos on N itself continues from those vectors). Block Lanczos [2]_ [3]_ keeps the
    basis and its products, so every Ritz pair's residual is known without another product.
    Thick-restart Lanczos [1]_ is the iteration that `power_iteration` runs for one pair,
    keeping at least 2k basis vectors. The basis V is checked by one block product in float64:
    ``N V = U S Z^T`` gives the values S and vectors ``U``, ``V Z``; by Cauchy interlacing
    S_i <= sigma_i(A) for every i, which is the certified ``lower_bound``.

    References
    ----------
    .. [1] K. Wu and H. Simon, "Thick-restart Lanczos method for large symmetric eigenvalue
       problems", SIAM J. Matrix Anal. Appl. 22 (2000), 602-616.
    .. [2] G. H. Golub and R. Underwood, "The block Lanczos method for computing eigenvalues",
       Mathematical Software III (1977), 361-377.
    .. [3] C. Musco and C. Musco, "Randomized block Krylov methods for stronger and faster
       approximate singular value decomposition", NeurIPS 2015.

    Examples
    --------
    >>> import numpy as np, linalg_lowrank as ll
    >>> A = np.diag([5.0, 4.0, 3.0, 2.0, 1.0])
    >>> res = ll.top_singular_values(A, 3, rng=0)
    >>> np.round(res.values, 10).tolist(), bool(res.converged), res.method
    ([5.0, 4.0, 3.0], True, 'gram')
    >>> bool(np.all(res.lower_bound <= [5.0, 4.0, 3.0]))
    True
    """
    method = _validate.choice("method", method, ("auto", "gram", "block", "lanczos"))
    op = _operators.as_operator(A, "A", stack=True, family="top_singular_values")
    if op.too_large_to_hold and method in ("auto", "block"):
        return _top_out_of_core(A, k, tol=tol, maxiter=maxiter, rng=rng)
    op.dense("top_singular_values", check_finite=False)  # the one TypeError of matrix-free kinds
    gram0, batch_shape = op.gram(), op.batch_shape
    if not gram0.numba_fast_path:
        raise TypeError("`A` is a memory-mapped file too large to hold: top_singular_values needs it in memory")
    m, n = gram0.shape
    k, tol = _checked_k_tol(k, tol, (m, n), gram0.dtype)
    if method == "auto":
        method = "gram" if min(m, n) <= config.BLOCK_GRAM_MAX_DIM else "block"
    default = max(config.POWER_MAXITER_FLOOR, 10 * min(m, n)) if method == "lanczos" else config.BLOCK_MAXITER
    maxiter = _validate.positive_int("maxiter", maxiter, default=default)
    generator, seed = _validate.rng(rng)
    b = gram0.batch
    fields = {
        "values": np.zeros((b, k)),
        "u": np.zeros((b, m, k), dtype=gram0.dtype),
        "v": np.zeros((b, n, k), dtype=gram0.dtype),
        "residual": np.zeros((b, k)),
        "error_bound": np.zeros((b, k)),
        "lower_bound": np.zeros((b, k)),
        "converged": np.zeros(b, dtype=bool),
        "n_iter": np.zeros(b, dtype=np.int64),
        "n_matvecs": np.zeros(b, dtype=np.int64),
        "n_passes": np.zeros(b, dtype=np.int64),
    }
    for i in range(b):
        if method == "lanczos":
            # One single-matrix operator per problem: the one-pass Gram kernel on matrix i, with its layout.
            gram = gram0.subset(slice(i, i + 1))
            one = _top_one(gram, k, tol=tol, maxiter=maxiter, generator=generator)
            one["n_passes"] = one["n_iter"]  # the one-pass kernel reads A once per Gram product, the check once
        else:
            one = _top_block(gram0, i, k, tol=tol, maxiter=maxiter, generator=generator, method=method)
        for key, value in one.items():
            fields[key][i] = value
    if not fields["converged"].all():
        bad = ~fields["converged"]
        warnings.warn(
            f"top_singular_values: {int(bad.sum())} of {bad.size} problem(s) did not reach tol={tol:g} within "
            f"maxiter={maxiter}; largest error_bound {fields['error_bound'][bad].max():.3g}",
            ConvergenceWarning,
            stacklevel=2,
        )
    out = {}
    for key, value in fields.items():
        value = value.reshape(batch_shape + value.shape[1:])
        out[key] = value[()] if value.ndim == 0 else value
    for key in ("converged", "n_iter", "n_matvecs", "n_passes"):
        if not batch_shape:
            out[key] = out[key].item()
    return TopSingularValuesResult(**out, seed=seed, method=method)


def _top_block(gram0, i, k, *, tol, maxiter, generator, method):
    """The Gram method or block Lanczos on matrix i of a dense stack, through BLAS on the smaller side."""
    M = gram0.mat[i]  # (p, q) C-contiguous, A = M^T when gram0.left
    transposed = M.shape[0] < M.shape[1]  # N = M^T: the Gram side is the smaller one
    N = M.T if transposed else M
    explicit = method == "gram"
    source = _block_krylov.DenseSource("A", N, explicit_gram=explicit)
    one = _block_krylov.top_triplets(source, k, tol=tol, maxiter=maxiter, generator=generator, direct=explicit)
    # N's right vectors are A's right vectors unless exactly one of (left, transposed) holds
    u, v = one.pop("u"), one.pop("v")
    if gram0.left != transposed:
        u, v = v, u
    one.pop("block_size")
    dtype = gram0.dtype
    return {**one, "u": u.astype(dtype, copy=False), "v": v.astype(dtype, copy=False)}


def _checked_k_tol(k, tol, shape, dtype):
    """(k, tol): k in 1..min(M, N); tol given, or the default of the dtype."""
    k = _validate.positive_int("k", k)
    if k > min(shape):
        raise ValueError(f"`k` must be at most min(M, N) = {min(shape)}, got {k}")
    dtype_name = "float32" if dtype == np.float32 else "float64"
    return k, config.SPECTRUM_TOL[dtype_name] if tol is None else _validate.positive("tol", tol)


def _top_out_of_core(A, k, *, tol, maxiter, rng):
    """Block Lanczos on a numpy.memmap read from its file in row blocks (one read per block product)."""
    _validate.float_dtype("A", A.dtype)
    m, n = A.shape
    k, tol = _checked_k_tol(k, tol, (m, n), A.dtype)
    maxiter = _validate.positive_int("maxiter", maxiter, default=config.BLOCK_MAXITER)
    generator, seed = _validate.rng(rng)
    source = _block_krylov.RowBlocks.from_memmap("A", A)
    block = _block_krylov.out_of_core_block_size(k, n)
    one = _block_krylov.top_triplets(source, k, tol=tol, maxiter=maxiter, generator=generator, block=block)
    one.pop("block_size")
    if not one["converged"]:
        warnings.warn(
            f"top_singular_values: did not reach tol={tol:g} within maxiter={maxiter}; "
            f"largest error_bound {one['error_bound'].max():.3g}",
            ConvergenceWarning,
            stacklevel=3,
        )
    one["u"] = one["u"].astype(A.dtype, copy=False)
    one["v"] = one["v"].astype(A.dtype, copy=False)
    return TopSingularValuesResult(**one, seed=seed, method="block")


def _top_one(gram, k, *, tol, maxiter, generator):
    """Lanczos on one matrix, then the certifying Rayleigh-Ritz step with one block product."""
    M = gram.mat[0]  # (p, q) with B = M^T M
    p, q = M.shape
    x0 = generator.standard_normal(q)
    state = generator.bit_generator.state  # a rescaled restart replays the same random directions
    gram.begin()
    try:
        _, W, _, steps, _ = _topsv.solve_pairs(gram, x0, k, tol=tol, maxiter=maxiter, generator=generator)
    except _operators.Rescale:  # a product left the safe range: the products become those of 2^-e M
        gram.rescale()
        gram.begin()
        generator.bit_generator.state = state
        _, W, _, steps, _ = _topsv.solve_pairs(gram, x0, k, tol=tol, maxiter=maxiter, generator=generator)
    e = int(gram.exponent[0])
    if e:
        M = np.ldexp(M.astype(np.float64), -e)  # exact: the same powers of two as the iteration
    if W.shape[1] < k:  # maxiter < k: complete the basis at random (interlacing holds for any orthonormal V)
        W = np.concatenate([W, generator.standard_normal((q, k - W.shape[1]))], axis=1)
    Wq, _ = np.linalg.qr(W)
    with np.errstate(all="ignore"):
        P = M @ Wq
        Up, s, Zt = np.linalg.svd(P, full_matrices=False)
        Wv = Wq @ Zt.T
        R = M.T @ Up - Wv * s
    if not (np.isfinite(P).all() and np.isfinite(R).all()):
        gram.fail()
    residual = np.linalg.norm(R, axis=0)  # of 2^-e A: relative quantities first, then the scale back
    with np.errstate(divide="ignore", invalid="ignore"):
        error_bound = np.where(s > 0, residual / np.where(s > 0, s, 1.0), np.where(residual == 0, 0.0, np.inf))
    converged = bool(np.all(residual <= tol * np.maximum(s, config.SPECTRUM_RESIDUAL_FLOOR * s[0])))
    lower = np.maximum(s - (p + q) * _EPS * s[0], 0.0)
    s, residual, lower = np.ldexp(s, e), np.ldexp(residual, e), np.ldexp(lower, e)
    left_vectors, right_vectors = (Wv, Up) if gram.left else (Up, Wv)
    return {
        "values": s,
        "u": left_vectors,
        "v": right_vectors,
        "residual": residual,
        "error_bound": error_bound,
        "lower_bound": lower,
        "converged": converged,
        "n_iter": steps + 1,
        "n_matvecs": 2 * steps + 2 * k,
    }


@dataclass(frozen=True, repr=False)
class SpectrumStatistics(Result):
    """Shape statistics of a spectrum known through its K largest singular values and ||A||_F.

    Attributes
    ----------
    stable_rank : float
        ``||A||_F^2 / sigma_1^2`` (exact from the Frobenius norm; NaN for A = 0).
    effective_rank : float
        ``exp(H(p))`` for ``p = s / sum(s)`` over the K computed values (Roy and Vetterli; the full-spectrum
        effective rank when K = min(m, n)).
    effective_rank_bounds : tuple of float
        ``(low, high)``: every spectrum whose K largest values are the computed ones and whose
        remaining ``min(m, n) - K`` values (each at most ``s_K``) carry the energy
        ``||A||_F^2 - sum(s^2)`` has its effective rank in this interval (see the theory page).
    alpha : float
        Power-law exponent of the tail of the empirical spectral density of ``A^T A``,
        weightwatcher's fit: MLE ``1 + n / sum(log(lambda_i / lambda_min))`` on the eigenvalues
        ``lambda = s^2`` above ``alpha_xmin``, which minimizes the Kolmogorov-Smirnov distance
        over the candidates among the computed values above ``max(m, n) eps sigma_1`` (smaller
        ones are zeros of A up to rounding). NaN when no candidate leaves
        ``config.SPECTRUM_ALPHA_MIN_TAIL`` values in the tail with a larger one among them.
    alpha_xmin : float
        The lower end ``lambda_min`` of the fitted tail (an eigenvalue of A^T A).
    alpha_n_tail : int
        Eigenvalues in the fitted tail.
    alpha_ks : float
        Kolmogorov-Smirnov distance of the fit.
    """

    stable_rank: float
    effective_rank: float
    effective_rank_bounds: tuple
    alpha: float
    alpha_xmin: float
    alpha_n_tail: int
    alpha_ks: float

    def to_dict(self):
        """Plain floats and ints, for JSON."""
        lo, hi = self.effective_rank_bounds
        return {
            "stable_rank": self.stable_rank,
            "effective_rank": self.effective_rank,
            "effective_rank_low": lo,
            "effective_rank_high": hi,
            "alpha": self.alpha,
            "alpha_xmin": self.alpha_xmin,
            "alpha_n_tail": self.alpha_n_tail,
            "alpha_ks": self.alpha_ks,
        }


def spectrum_statistics(s, *, frobenius_norm, shape):
    """Stable rank, effective rank (with the interval the unknown tail allows) and power-law alpha.

    Parameters
    ----------
    s : (K,) array_like
        The K largest singular values of a matrix, any order (for example
        ``top_singular_values(A, K).values``).
    frobenius_norm : float
        ``||A||_F`` of the whole matrix.
    shape : tuple of int
        ``(m, n)`` of the matrix: ``min(m, n) - K`` values are unknown.

    Returns
    -------
    stats : SpectrumStatistics

    Raises
    ------
    ValueError
        If ``s`` is empty, negative or not finite, longer than ``min(shape)``, or
        ``frobenius_norm`` is negative or not finite.

    See Also
    --------
    top_singular_values : the values.
    power_law_alpha : the fit alone, on any eigenvalues.

    Notes
    -----
    See the theory page "Spectrum statistics" for the interval of the effective rank and the
    power-law fit. The computed values are taken as exact: their own error (``error_bound``)
    is not propagated.

    References
    ----------
    .. [1] O. Roy and M. Vetterli, "The effective rank: a measure of effective dimensionality",
       EUSIPCO 2007.
    .. [2] C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural networks",
       JMLR 22 (2021); weightwatcher.

    Examples
    --------
    >>> import numpy as np, linalg_lowrank as ll
    >>> st = ll.spectrum_statistics([2.0, 1.0], frobenius_norm=np.sqrt(5.0), shape=(2, 2))
    >>> round(st.stable_rank, 12), st.effective_rank_bounds[0] == st.effective_rank_bounds[1]
    (1.25, True)
    """
    s = np.sort(np.asarray(s, dtype=np.float64).reshape(-1))[::-1]
    if s.size == 0 or not np.all(np.isfinite(s)) or s[-1] < 0:
        raise ValueError(f"`s` must hold at least one finite non-negative value, got {s!r}")
    if len(shape) != 2 or s.size > min(shape):
        raise ValueError(f"`shape` must be (m, n) with min(m, n) >= len(s) = {s.size}, got {tuple(shape)}")
    fro = _validate.nonnegative("frobenius_norm", frobenius_norm)
    stable_rank = fro * fro / float(s[0] * s[0]) if s[0] > 0 else math.nan
    erank, lo, hi = _effective_rank(s, fro, min(shape) - s.size)
    # Values at the rounding level of sigma1 are zeros of the matrix, not a tail to fit.
    fit = power_law_alpha(np.square(s[s > max(shape) * _EPS * s[0]]))
    return SpectrumStatistics(stable_rank, erank, (lo, hi), *fit)


def _entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _h2(a):
    return 0.0 if a <= 0 or a >= 1 else -a * math.log(a) - (1 - a) * math.log1p(-a)


def _effective_rank(s, fro, n_tail):
    """exp(entropy) of the computed part and the interval over every admissible tail."""
    total = float(s.sum())
    if total == 0:
        return math.nan, math.nan, math.nan
    Hc = _entropy(s / total)
    energy = fro * fro - float(np.dot(s, s))
    sK = float(s[-1])
    if n_tail == 0 or sK == 0:
        return math.exp(Hc), math.exp(Hc), math.exp(Hc)
    # The tail energy is a difference of two sums: widen the interval over its rounding error.
    slack = 4 * (s.size + 2) * _EPS * fro * fro
    ends = [_entropy_bounds(s, total, Hc, e, sK, n_tail) for e in (energy - slack, energy, energy + slack) if e > 0]
    if not ends:
        return math.exp(Hc), math.exp(Hc), math.exp(Hc)
    lower = min(min(e[0] for e in ends), Hc if energy - slack <= 0 else math.inf)
    upper = max(max(e[1] for e in ends), Hc if energy - slack <= 0 else -math.inf)
    return math.exp(Hc), math.exp(lower), math.exp(upper)


def _entropy_bounds(s, total, Hc, energy, sK, n_tail):
    """(lower, upper) bound on the entropy of the whole spectrum for one value of the tail energy."""
    energy = min(energy, n_tail * sK * sK)  # more energy than the tail can hold: the values are inexact
    T_max = math.sqrt(n_tail * energy)
    full = min(math.floor(energy / (sK * sK)), n_tail)
    T_min = full * sK + math.sqrt(max(energy - full * sK * sK, 0.0))
    a_lo, a_hi = total / (total + T_max), total / (total + T_min)
    # H = H2(a) + a Hc + (1 - a) H_tail with a = S / (S + T) and 0 <= H_tail <= log(n_tail).
    a_star = min(max(1.0 / (1.0 + n_tail * math.exp(-Hc)), a_lo), a_hi)
    upper = _h2(a_star) + a_star * Hc + (1 - a_star) * math.log(n_tail)
    # Lower: H >= H2(a) + a Hc (concave in a: least at an end) and, as every tail value is at most
    # s_K so that H_tail >= log(T / s_K), H >= -log(a) + a Hc + (1 - a) log(S / s_K) (convex in a).
    f1 = min(_h2(a_lo) + a_lo * Hc, _h2(a_hi) + a_hi * Hc)
    c = math.log(total / sK)

    def f2(a):
        return -math.log(a) + a * Hc + (1 - a) * c

    slope = Hc - c
    a2 = min(max(1.0 / slope, a_lo), a_hi) if slope > 0 else a_hi
    lower = max(f1, min(f2(a_lo), f2(a_hi), f2(a2)))
    return lower, upper


def power_law_alpha(eigenvalues, *, min_tail=None):
    """weightwatcher's power-law fit of the largest eigenvalues: ``(alpha, xmin, n_tail, ks)``.

    Parameters
    ----------
    eigenvalues : (N,) array_like
        Eigenvalues of ``W^T W`` (squared singular values), any order; only positive ones count.
    min_tail : int, optional
        Fewest eigenvalues in the tail (default ``config.SPECTRUM_ALPHA_MIN_TAIL``).

    Returns
    -------
    alpha, xmin, n_tail, ks : float, float, int, float
        NaN, NaN, 0, NaN when no candidate leaves ``min_tail`` eigenvalues above a smaller one.

    Raises
    ------
    ValueError
        If ``eigenvalues`` holds NaN or Inf, or ``min_tail`` is below 2.

    Notes
    -----
    Clauset, Shalizi and Newman's method [1]_, as the ``powerlaw`` package runs it for
    weightwatcher: for every candidate ``xmin`` among the distinct eigenvalues (leaving at
    least ``min_tail`` in the tail), the continuous MLE
    :math:`\\hat\\alpha = 1 + n / \\sum_i \\log(\\lambda_i / x_{min})` over the n eigenvalues
    :math:`\\lambda_i \\ge x_{min}`, and the Kolmogorov-Smirnov distance between their empirical
    CDF and :math:`1 - (x / x_{min})^{1 - \\hat\\alpha}` (two-sided: the larger gap just before
    and at each point); the candidate with the least distance wins.

    References
    ----------
    .. [1] A. Clauset, C. R. Shalizi and M. E. J. Newman, "Power-law distributions in empirical
       data", SIAM Review 51 (2009), 661-703.

    Examples
    --------
    >>> import numpy as np, linalg_lowrank as ll
    >>> lam = (1.0 - np.random.default_rng(0).random(2000)) ** (-1.0 / 2.0)  # density ~ x^-3
    >>> alpha, xmin, n_tail, ks = ll.power_law_alpha(lam)
    >>> bool(abs(alpha - 3.0) < 0.2)
    True
    """
    x = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("`eigenvalues` must be finite, got NaN or Inf")
    min_tail = _validate.positive_int("min_tail", min_tail, default=config.SPECTRUM_ALPHA_MIN_TAIL, minimum=2)
    x = np.sort(x[x > 0])
    n_all = x.size
    logs = np.log(x)
    suffix = np.cumsum(logs[::-1])[::-1]  # suffix[i] = sum(log x[i:])
    best = (math.inf, math.nan, math.nan, 0)
    candidates = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])  # first index of each distinct value
    for i in candidates:
        n = n_all - i
        if n < min_tail:
            break
        denom = suffix[i] - n * logs[i]
        if denom <= 0:
            continue
        alpha = 1.0 + n / denom
        fit = 1.0 - np.exp((1.0 - alpha) * (logs[i:] - logs[i]))
        ranks = np.arange(n)
        ks = float(max(np.max(np.abs((ranks + 1) / n - fit)), np.max(np.abs(ranks / n - fit))))
        if ks < best[0]:
            best = (ks, alpha, float(x[i]), n)
    ks, alpha, xmin, n = best
    return (float(alpha), float(xmin), int(n), float(ks)) if n else (math.nan, math.nan, 0, math.nan)


def difference_norm(W_new, W_old, *, tol=config.POWER_TOL, maxiter=None, rng=None):
    """``||W_new - W_old||_2`` by power iteration on products ``W_new x - W_old x``, never forming the difference.

    Parameters
    ----------
    W_new, W_old : (M, N) array_like
        Two real floating matrices of the same shape.
    tol, maxiter, rng
        As in `power_iteration`.

    Returns
    -------
    result : PowerIterationResult
        The top singular triplet of ``W_new - W_old``.

    Raises
    ------
    ValueError
        If the shapes differ or an input holds NaN or Inf.
    TypeError
        If an input is not a real floating array.

    See Also
    --------
    linalg_lowrank.power_iteration

    Notes
    -----
    Memory: the two matrices and O(M + N) vectors; each product reads both once.

    Examples
    --------
    >>> import numpy as np, linalg_lowrank as ll
    >>> new, old = np.diag([3.0, 1.0]), np.diag([1.0, 1.0])
    >>> round(ll.difference_norm(new, old, rng=0).sigma, 10)
    2.0
    """
    new = _validate.float_array("W_new", W_new, min_ndim=2, max_ndim=2)
    old = _validate.float_array("W_old", W_old, min_ndim=2, max_ndim=2)
    if new.shape != old.shape:
        raise ValueError(f"`W_old` must have the shape of `W_new`, {new.shape}, got {old.shape}")
    return power_iteration(_Difference(new, old), tol=tol, maxiter=maxiter, rng=rng)


class _Difference:
    """The operator W_new - W_old through its products only."""

    def __init__(self, new, old):
        self.new, self.old = new, old
        self.shape = new.shape
        self.dtype = np.result_type(new.dtype, old.dtype)

    def matvec(self, x):
        return self.new @ x - self.old @ x

    def rmatvec(self, y):
        return self.new.T @ y - self.old.T @ y
