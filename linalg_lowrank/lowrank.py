"""Low-rank approximation: best rank-r, randomized SVD, pseudo-inverse, CR products, ID and CUR.

Everything here is driven by BLAS-3 products and LAPACK on small matrices; there is no inner
loop that numba would speed up, so there is no kernel.
"""

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.special import gammaincinv

from . import _dask, _operators, _validate, config
from ._scaling import ldexp_float, pow2_normalize, unscale
from ._threads import blas_single_thread
from .results import ConvergenceWarning, Result

__all__ = [
    "BestRankResult",
    "RandomizedSVDResult",
    "LowRankFactors",
    "CRProductResult",
    "IDResult",
    "CURResult",
    "best_rank",
    "randomized_svd",
    "pinv",
    "pinv_lowrank",
    "cr_matmul",
    "cr_expected_error",
    "interpolative_decomposition",
    "cur",
]


def _bound_factor(d, failure):
    # P(chi2_d / d < t) = failure  ->  ||E||_F^2 <= estimate / t with probability 1 - failure
    return d / (2.0 * gammaincinv(d / 2.0, failure))


# -- results -----------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class BestRankResult(Result):
    """Factors of the best rank-r approximation A_r = U diag(s) Vt and its error.

    Unpacks as ``U, s, Vt = best_rank(A, r)``, like ``scipy.linalg.svd`` truncated to r.

    Attributes
    ----------
    U : (M, r) ndarray
        Left singular vectors, in the dtype of A.
    s : (r,) ndarray
        The r largest singular values, descending.
    Vt : (r, N) ndarray
        Right singular vectors (as rows).
    error_bound : float
        ||A - A_r||_F = sqrt(sum_{i > r} sigma_i^2), the optimal Frobenius error: exact up to the
        rounding of the SVD, so a bound that is attained.
    error_bound_spectral : float
        ||A - A_r||_2 = sigma_{r+1} (0 when r = min(M, N)), the optimal spectral error (exact, as
        ``error_bound``).
    """

    U: np.ndarray
    s: np.ndarray
    Vt: np.ndarray
    error_bound: float
    error_bound_spectral: float

    _unpack = ("U", "s", "Vt")
    _renamed = {"error_fro": "error_bound", "error_spectral": "error_bound_spectral"}

    def to_array(self):
        """The approximation U diag(s) Vt as a dense array."""
        return (self.U * self.s) @ self.Vt


@dataclass(frozen=True, repr=False)
class RandomizedSVDResult(Result):
    """Randomized SVD A ~ U diag(s) Vt with an a-posteriori estimate of its error.

    Unpacks as ``U, s, Vt = randomized_svd(A, r)``, like ``sklearn.utils.extmath.randomized_svd``.

    Attributes
    ----------
    U : (M, k) ndarray or dask array
        Orthonormal left factor, in the dtype of A; a dask array with A's row chunks when A is one.
    s : (k,) ndarray
        Approximate singular values, descending.
    Vt : (k, N) ndarray
        Orthonormal right factor (as rows).
    rank : int
        k, the rank returned (``r``, or the rank chosen by ``tol``).
    error_estimate : float
        Estimate of ||A - U diag(s) Vt||_F: exact part sum_{j > k} s_j(B)^2 of the sketch plus the
        part the sketch missed, ||A||_F^2 - ||B||_F^2 where rounding resolves it (fixed rank) or a
        Gaussian-probe estimate.
    error_bound : float
        Upper bound on ||A - U diag(s) Vt||_F (hence also on the spectral error) that holds with
        probability at least ``1 - error_bound_failure`` over the probe vectors, or always (up
        to the rounding allowance it includes) when no probes were needed. With ``tol`` it
        includes the rounding resolution of the probe estimate (see Notes of `randomized_svd`).
    error_bound_failure : float
        Probability that ``error_bound`` fails: 0 when the missed part was computed, not probed.
    converged : bool
        With ``tol``: whether ``error_bound <= tol`` was reached; otherwise True.
    n_iter : int
        Power iterations taken (per block in the adaptive mode).
    n_matvecs : int
        Columns multiplied by A plus columns multiplied by A^T.
    seed : int
        ``rng=seed`` reproduces the run.
    """

    U: np.ndarray
    s: np.ndarray
    Vt: np.ndarray
    rank: int
    error_estimate: float
    error_bound: float
    error_bound_failure: float
    converged: bool
    n_iter: int
    n_matvecs: int
    seed: int

    _unpack = ("U", "s", "Vt")
    _renamed = {"n_power_iter": "n_iter"}

    def to_array(self):
        """The approximation U diag(s) Vt as a dense array."""
        return (self.U * self.s) @ self.Vt


@dataclass(frozen=True, repr=False)
class LowRankFactors(Result):
    """A matrix X = U diag(s) Vt held by its factors (U, Vt with orthonormal columns/rows).

    Unpacks as ``U, s, Vt = pinv_lowrank(L, R)``.

    Attributes
    ----------
    U : (M, k) ndarray
    s : (k,) ndarray
    Vt : (k, N) ndarray
    """

    U: np.ndarray
    s: np.ndarray
    Vt: np.ndarray

    _unpack = ("U", "s", "Vt")

    @property
    def shape(self):
        return (self.U.shape[0], self.Vt.shape[1])

    def to_array(self):
        """X as a dense array."""
        return (self.U * self.s) @ self.Vt

    def __matmul__(self, other):
        inner = self.Vt @ other
        return self.U @ (self.s * inner if inner.ndim == 1 else self.s[:, None] * inner)


@dataclass(frozen=True, repr=False)
class CRProductResult(Result):
    """Sampled product AB ~ sum_t A[:, i_t] B[i_t, :] / (c p_{i_t}), from ``cr_matmul(..., return_info=True)``.

    Attributes
    ----------
    product : (M, P) ndarray
        The estimate of A @ B (unbiased over the sampling).
    indices : (c,) ndarray
        Sampled inner indices i_1, ..., i_c (with replacement).
    probabilities : (N,) ndarray
        Sampling probabilities p_i.
    error_bound : float
        sqrt(sum_i ||A[:, i]||^2 ||B[i, :]||^2 / p_i / c), an upper bound on the root-mean-square
        error sqrt(E ||AB - product||_F^2) that needs no product A @ B (`cr_expected_error`
        gives the exact value at the cost of one).
    seed : int
        ``rng=seed`` reproduces the sample.
    """

    product: np.ndarray
    indices: np.ndarray
    probabilities: np.ndarray
    error_bound: float
    seed: int

    _renamed = {"error_bound_rms": "error_bound"}


@dataclass(frozen=True, repr=False)
class IDResult(Result):
    """Interpolative decomposition: A ~ A[:, indices] @ interp (columns) or interp @ A[indices] (rows).

    Unpacks as ``indices, interp = interpolative_decomposition(A, k)``, the pair that
    ``scipy.linalg.interpolative.interp_decomp`` returns as ``idx, proj``; here ``indices`` holds
    the k selected columns only and ``interp`` is the full (k, N) interpolation matrix (scipy's
    ``proj`` is its (k, N - k) part on the columns ``idx[k:]``).

    Attributes
    ----------
    indices : (k,) ndarray
        Selected columns (or rows) of A.
    interp : ndarray
        (k, N) for columns, with ``interp[:, indices]`` the identity; (M, k) for rows.
    rank : int
        k.
    axis : str
        "columns" or "rows".
    error_estimate : float
        Estimate of the relative error ||A - A_ID||_F / ||A||_F from the sketch (the pivoted-QR
        residual of the sketch, plus what the sketch missed by Gaussian probes).
    seed : int
        ``rng=seed`` reproduces the run.
    """

    indices: np.ndarray
    interp: np.ndarray
    rank: int
    axis: str
    error_estimate: float
    seed: int

    _unpack = ("indices", "interp")

    def reconstruct(self, A):
        """The approximation of A from its selected columns (or rows)."""
        if self.axis == "columns":
            return A[:, self.indices] @ self.interp
        return self.interp @ A[self.indices, :]


@dataclass(frozen=True, repr=False)
class CURResult(Result):
    """CUR decomposition A ~ C @ U @ R with C = A[:, cols] and R = A[rows, :].

    Unpacks as ``C, U, R = cur(A, k)``.

    Attributes
    ----------
    C : (M, k) ndarray
        The selected columns ``A[:, cols]``.
    U : (k, k) ndarray
        Core matrix: C^+ A R^+ (optimal in Frobenius norm for the chosen C and R), stabilized
        when C or R is ill-conditioned (see Notes of `cur`).
    R : (k, N) ndarray
        The selected rows ``A[rows, :]``.
    cols, rows : (k,) ndarray
        Selected column and row indices.
    rank : int
        k.
    seed : int
        ``rng=seed`` reproduces the run.
    """

    C: np.ndarray
    U: np.ndarray
    R: np.ndarray
    cols: np.ndarray
    rows: np.ndarray
    rank: int
    seed: int

    _unpack = ("C", "U", "R")

    def reconstruct(self, A):
        """The approximation C U R of A, from A's own columns and rows (``C @ U @ R`` when A is the input)."""
        return A[:, self.cols] @ self.U @ A[self.rows, :]


# -- validation helpers ------------------------------------------------------------------------
def _rank(name, r, m, n):
    r = _validate.positive_int(name, r)
    if r > min(m, n):
        raise ValueError(f"`{name}` must be at most min(M, N) = {min(m, n)} for A of shape {(m, n)}, got {r}")
    return r


def _dense(name, A, family):
    """A 2-D dense array through the adapter (finite, no copy), or its one TypeError for other kinds."""
    return _operators.as_operator(A, name, family=family).dense(family)


class _Blocks:
    """Block products with 2^-exp A for the range finders: the adapter's checked products, counted.

    Arrays, sparse matrices and dask arrays far from 1 in size are held as 2^-exp A
    (`Operator.pow2_normalized`); products are checked for NaN/Inf by the adapter (O(size of
    the output)) instead of scanning A up front.
    """

    def __init__(self, name, A, family):
        op = A if isinstance(A, _operators.Operator) else _operators.as_operator(A, name, family=family)
        self.op, self.exp = op.pow2_normalized()
        self.name = name
        self.n_matvecs = 0
        self.dtype = op.dtype
        self.shape = op.shape
        self.is_dask = op.is_dask
        self._on_cluster = None  # a _dask.RowBasis once a dask A on a cluster asks for a range basis

    def fro2(self):
        """||A||_F^2 when it is cheap (arrays, sparse, dask), else None."""
        return self.op.fro2()

    def matmat(self, X):
        self.n_matvecs += X.shape[1]
        return self.op.matmat(X)

    def rmatmat(self, Y):
        self.n_matvecs += Y.shape[1]
        return self.op.rmatmat(Y)

    def range_basis(self, X):
        """(Q, Z): an orthonormal basis Q of range(A X) and Z = A^T Q, the range finder's step.

        Q is an array, or for a dask array on a distributed cluster a `_dask.RowBasis` that keeps
        its rows on the workers (``Q @ M`` gathers them).
        """
        if self._on_cluster is None:
            self._on_cluster = (self.is_dask and _dask.RowBasis.on_cluster(self.op.data)) or False
        if not self._on_cluster:
            Q = _orth(self.matmat(X))
            return Q, self.rmatmat(Q)
        Q, Z = self._on_cluster.range_basis(X)
        if Q is None or not np.isfinite(Z).all():
            self.op.fail("a product")
        self.n_matvecs += X.shape[1] + Z.shape[1]
        return Q, Z


def _qr(Y, **kwargs):
    # Tall-skinny QR is BLAS-2 bound: a second OpenBLAS thread does not speed it up (4000 x 150:
    # 26 ms on one or two threads, 2-core EPYC) and its wake-ups add 5-60 ms at random, so one.
    with blas_single_thread():
        return scipy.linalg.qr(Y, mode="economic", check_finite=False, **kwargs)


def _orth(Y):
    return _qr(Y, overwrite_a=True)[0]


# -- best rank ---------------------------------------------------------------------------------
def best_rank(A, r):
    """Best rank-r approximation of A (Eckart–Young) and its error.

    Parameters
    ----------
    A : (M, N) array_like or dask array
        Real float32 or float64 matrix. A dask array is decomposed by dask's tall-and-skinny
        QR SVD (its short side must fit in one chunk's memory); the factor along the long side
        (``U`` for a tall A, ``Vt`` for a wide one) then stays a dask array.
    r : int
        Target rank, 1 <= r <= min(M, N).

    Returns
    -------
    result : BestRankResult
        ``U``, ``s``, ``Vt`` (in the dtype of A) and ``error_bound``, ``error_bound_spectral``;
        unpacks as ``U, s, Vt``.

    Raises
    ------
    TypeError
        If A is not float32/float64 or ``r`` is not an integer.
    ValueError
        If A is not 2-D, is empty or non-finite, or ``r`` is outside [1, min(M, N)].

    See Also
    --------
    randomized_svd : the same, approximately, at a fraction of the cost for small r.

    Notes
    -----
    With the SVD :math:`A = \\sum_i \\sigma_i u_i v_i^T`, the truncation
    :math:`A_r = \\sum_{i \\le r} \\sigma_i u_i v_i^T` minimizes both
    :math:`\\|A - X\\|_F = (\\sum_{i>r}\\sigma_i^2)^{1/2}` and :math:`\\|A - X\\|_2 = \\sigma_{r+1}`
    over all X of rank at most r.

    References
    ----------
    .. [1] C. Eckart and G. Young, "The approximation of one matrix by another of lower rank",
       Psychometrika 1(3), 1936.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.lowrank import best_rank
    >>> res = best_rank(np.diag([3.0, 2.0, 1.0]), 2)
    >>> res.s
    array([3., 2.])
    >>> res.error_bound, res.error_bound_spectral
    (1.0, 1.0)
    >>> U, s, Vt = res
    """
    op = _operators.as_operator(A, "A", family="best_rank")
    if op.is_dask:
        m, n = op.shape
        r = _rank("r", r, m, n)
        U, s, Vt = _dask.thin_svd("A", op.data)
    else:
        arr = op.dense("best_rank")
        m, n = arr.shape
        r = _rank("r", r, m, n)
        U, s, Vt = scipy.linalg.svd(arr, full_matrices=False, check_finite=False)
    tail = s[r:].astype(np.float64)
    return BestRankResult(
        U=U[:, :r].copy(),
        s=s[:r].copy(),
        Vt=Vt[:r].copy(),
        error_bound=float(math.sqrt(np.dot(tail, tail))),
        error_bound_spectral=float(tail[0]) if tail.size else 0.0,
    )


# -- randomized SVD ----------------------------------------------------------------------------
def randomized_svd(A, r=None, *, n_oversamples=10, n_power_iter="auto", rng=None, tol=None):
    """Randomized SVD with re-orthonormalized power iterations and an a-posteriori error bound.

    Parameters
    ----------
    A : (M, N) array_like, scipy.sparse matrix, LinearOperator or dask array
        Real float32 or float64 matrix; operators need ``matmat`` and ``rmatmat``. A dask array
        is multiplied block by block on the active dask scheduler (never gathered whole), and the
        result's ``U`` is then a dask array with A's row chunks.
    r : int, optional
        Rank returned, 1 <= r <= min(M, N). With ``tol`` it is the largest rank allowed
        (default min(M, N)); required otherwise.
    n_oversamples : int, optional
        Extra sketch columns beyond ``r`` (fixed-rank mode).
    n_power_iter : int or "auto", optional
        Power iterations (A A^T)^q applied to the sketch, each followed by a QR. "auto" keeps
        iterating while a step lowers the rank-r Frobenius error by more than 0.5 % and the next
        one is predicted to (its gain shrinks by about (s_l / s_r)^2 per step, s the sketch's
        singular values, l = r + n_oversamples); at most 8 steps. This needs ||A||_F, so operators
        use 4; with ``tol`` it is 2 per block.
    rng : None, int or numpy.random.Generator, optional
        Source of the Gaussian sketch and probe vectors; the result records the seed.
    tol : float, optional
        Absolute tolerance on ||A - U diag(s) Vt||_F: the range is grown block by block and the
        smallest rank whose ``error_bound`` is at most ``tol`` is returned. A ``tol`` below the
        rounding floor (see Notes) is met as far as the dtype allows and reported by
        ``converged=False`` and a `ConvergenceWarning` that names the floor.

    Returns
    -------
    result : RandomizedSVDResult
        ``U``, ``s``, ``Vt`` in the dtype of A, ``rank``, ``error_estimate``, ``error_bound`` and
        the diagnostics ``converged``, ``n_iter``, ``n_matvecs``, ``seed``; unpacks as
        ``U, s, Vt`` (``U, s, Vt = randomized_svd(A, r)``).

    Raises
    ------
    TypeError
        If A is not float32/float64 or an argument has the wrong type.
    ValueError
        If A is empty or non-finite, ``r`` is outside [1, min(M, N)] or missing without ``tol``,
        or ``n_oversamples``, ``n_power_iter`` or ``tol`` are invalid; or if the singular values
        overflow the dtype of A (arrays and sparse matrices are scaled internally by a power of
        two, so any other finite input is computed without overflow or underflow).

    Warns
    -----
    ConvergenceWarning
        With ``tol``, if rank ``r`` was reached before the bound fell below ``tol``, or if ``tol``
        is below the rounding floor.

    See Also
    --------
    best_rank : the exact answer by a full SVD.
    sklearn.utils.extmath.randomized_svd : the same algorithm without an error estimate.

    Notes
    -----
    With an orthonormal basis Q of the sketch and :math:`B = Q^T A`, the error of the rank-k
    truncation splits orthogonally:
    :math:`\\|A - Q B_k\\|_F^2 = \\|(I - QQ^T)A\\|_F^2 + \\sum_{j>k}\\sigma_j(B)^2`.
    The second term is known exactly. With a fixed rank so is the first,
    :math:`\\|A\\|_F^2 - \\|B\\|_F^2`, when it is at least 100 times its rounding allowance
    :math:`((\\ell + 2\\sqrt\\ell)\\max(M, N)\\,\\epsilon + \\delta)\\|A\\|_F^2`, :math:`\\delta` the summation
    error of :math:`\\|A\\|_F^2` (:math:`2^{18}\\epsilon_{64}` in float64, :math:`MN\\epsilon_{32}` for a
    float32 array), which is added to ``error_bound`` (``error_bound_failure`` is then 0).
    Otherwise it is estimated from d = 20 Gaussian probes,
    :math:`\\|(I-QQ^T)AG\\|_F^2/d`, whose ratio to the truth is at least
    :math:`\\chi^2_{d}/d` in distribution, which gives ``error_bound``.

    On a ``dask.distributed`` cluster the row blocks of A and the tall basis Q stay on the
    workers: each step's QR of A X is a tall-and-skinny QR over the workers' rows, and only X,
    the small triangular factors and A^T Q travel.

    With ``tol`` each new block is projected out of the basis twice and only its directions above
    the rounding resolution :math:`\\tau = 2\\sqrt{\\max(M, N)}\\,\\epsilon\\|A\\|_F` of a
    product :math:`Aw`, :math:`\\|w\\| = 1`, are kept (normalized, then projected once more), so
    the basis stays orthonormal to :math:`O(\\max(M, N)\\epsilon)`; power steps are deflated on both
    sides (against Q and against the row space :math:`A^TQ`). The probe estimate is resolved only
    to :math:`\\sqrt c\\,\\tau` (c the factor of the bound), which is added to ``error_bound``; the
    smallest bound that can be certified, the rounding floor, is :math:`2\\sqrt c\\,\\tau`.

    References
    ----------
    .. [1] N. Halko, P.-G. Martinsson and J. A. Tropp, "Finding structure with randomness:
       probabilistic algorithms for constructing approximate matrix decompositions",
       SIAM Review 53(2), 2011.
    .. [2] P.-G. Martinsson and J. A. Tropp, "Randomized numerical linear algebra: foundations
       and algorithms", Acta Numerica 29, 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.lowrank import randomized_svd
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((60, 5)) @ rng.standard_normal((5, 40))
    >>> res = randomized_svd(A, 5, rng=0)
    >>> bool(np.allclose(res.to_array(), A))
    True
    >>> U, s, Vt = randomized_svd(A, 5, rng=0)
    >>> bool(np.allclose((U * s) @ Vt, A))
    True
    >>> randomized_svd(A, tol=1e-8 * np.linalg.norm(A), rng=0).rank
    5
    """
    ops = _Blocks("A", A, "randomized_svd")
    m, n = ops.shape
    kmax = min(m, n)
    tol = _validate.positive("tol", tol, allow_none=True)
    if r is None:
        if tol is None:
            raise ValueError("`r` is required unless `tol` is given")
        r = kmax
    else:
        r = _rank("r", r, m, n)
    p = _validate.positive_int("n_oversamples", n_oversamples, minimum=0)
    if n_power_iter != "auto":
        n_power_iter = _validate.positive_int("n_power_iter", n_power_iter, minimum=0)
    generator, seed = _validate.rng(rng)
    if tol is None:
        res = _randomized_svd_fixed(ops, r, p, n_power_iter, generator, seed)
    else:
        res = _randomized_svd_adaptive(ops, r, ldexp_float(tol, -ops.exp), n_power_iter, generator, seed)
    if ops.is_dask:  # the tall factor stays distributed, its rows chunked like A's
        res = dataclasses.replace(res, U=_dask.from_rows_of(ops.op.data, res.U))
    if ops.exp == 0:
        return res
    return dataclasses.replace(
        res,
        s=unscale(res.s, ops.exp, ops.dtype, "`A`: its singular values overflow"),
        error_estimate=ldexp_float(res.error_estimate, ops.exp),
        error_bound=ldexp_float(res.error_bound, ops.exp),
    )


def _probe_error(ops, Q, Bt, G, dtype):
    """(estimate of ||(I - QQ^T)A||_F^2, d) from probes G (N x d); Bt = A^T Q."""
    AG = ops.matmat(G)
    R = AG - Q @ (Bt.T @ G)
    R = R.astype(np.float64, copy=False)
    return float(np.einsum("ij,ij->", R, R)) / G.shape[1]


def _exact_residual2(ops, s64):
    """(||(I - QQ^T)A||_F^2, its rounding allowance) as ||A||_F^2 - ||Q^T A||_F^2, or None.

    s64 are the singular values of B = Q^T A, so ||B||_F^2 = sum s64^2. Rounding moves the
    difference by at most the allowance: B = fl(A^T Q) is off by m eps ||A||_F ||Q||_F (||Q||_F^2 = l),
    which moves ||B||_F^2 by 2 sqrt(l) m eps ||A||_F^2; Q is orthonormal to l m eps (Householder),
    which moves it by l m eps ||A||_F^2 (m taken as max(M, N)); and ||A||_F^2 is off by at most
    `Operator.fro2_rounding` of itself. None when ||A||_F is not known (operators) or the
    difference is not ``config.LOWRANK_EXACT_RESIDUAL_MARGIN`` times the allowance: the probes
    resolve small remainders better.
    """
    fro2 = ops.fro2()
    if fro2 is None:
        return None
    ell = s64.size
    rounding = (ell + 2 * math.sqrt(ell)) * max(ops.shape) * float(np.finfo(ops.dtype).eps)
    allowance = (rounding + ops.op.fro2_rounding()) * fro2
    resid2 = fro2 - float(np.sum(s64**2))
    if not resid2 >= config.LOWRANK_EXACT_RESIDUAL_MARGIN * allowance:
        return None
    return resid2, allowance


def _finish(ops, Q, Bt, k_choice, generator, seed, *, n_power_iter, tol, rmax, floor=0.0):
    """SVD of B = Q^T A, the error of the sketch, rank choice; returns RandomizedSVDResult.

    With a fixed rank the part of A the sketch missed is ||A||_F^2 - ||B||_F^2 where that is resolved
    (`_exact_residual2`), else a probe estimate. ``floor`` (tol mode) is the rounding resolution of
    the probe estimate: it is added to the bound, and ranks are chosen against max(tol, 2 floor),
    the smallest bound that can be certified.
    """
    dtype = ops.dtype
    d = config.LOWRANK_N_PROBES
    # drawn whether used or not, so the random stream does not depend on the path taken
    G = generator.standard_normal((ops.shape[1], d)).astype(dtype, copy=False)
    # B^T = Z = Vb S Ub^T
    Vb, sb, Ubt = scipy.linalg.svd(Bt, full_matrices=False, check_finite=False)
    s64 = sb.astype(np.float64)
    exact = _exact_residual2(ops, s64) if k_choice is not None else None
    if exact is None:
        resid2 = _probe_error(ops, Q, Bt, G, dtype)
        factor, failure, allowance = (
            _bound_factor(d, config.LOWRANK_ERROR_BOUND_FAILURE),
            config.LOWRANK_ERROR_BOUND_FAILURE,
            0.0,
        )
    else:  # no probability involved: the bound holds up to the rounding allowance added to it
        (resid2, allowance), factor, failure = exact, 1.0, 0.0
    tails = np.concatenate([np.cumsum((s64**2)[::-1])[::-1], [0.0]])  # tails[k] = sum_{j >= k} s_j^2
    raw = np.sqrt(resid2 * factor + allowance + tails[: min(rmax, s64.size) + 1]) + floor
    if k_choice is None:  # tol mode: smallest k with bound <= tol (or the smallest certifiable one)
        ok = np.flatnonzero(raw <= max(tol, 2.0 * floor))
        k = int(ok[0]) if ok.size else min(rmax, s64.size)
        k = max(k, 1)
        converged = bool(raw[k] <= tol)
    else:
        k, converged = k_choice, True
    U = Q @ Ubt[:k].T
    est = math.sqrt(resid2 + tails[k])
    bound = math.sqrt(resid2 * factor + allowance + tails[k]) + floor
    return RandomizedSVDResult(
        U=np.ascontiguousarray(U, dtype=dtype),
        s=sb[:k].astype(dtype, copy=True),
        Vt=np.ascontiguousarray(Vb[:, :k].T, dtype=dtype),
        rank=k,
        error_estimate=est,
        error_bound=bound,
        error_bound_failure=failure,
        converged=converged,
        n_iter=n_power_iter,
        n_matvecs=ops.n_matvecs,
        seed=seed,
    )


def _sketch_energies(Z):
    """Squared singular values of Z (float64, descending, rounding below 0 clipped)."""
    w = np.linalg.eigvalsh(Z.T.astype(np.float64) @ Z.astype(np.float64))
    return np.maximum(w[::-1], 0.0)


def _next_gain_factor(w, k):
    """(s_l / s_k)^2 from the sketch's squared singular values w: how much the next power step's gain shrinks.

    After q steps the sketch misses the top-k space by about (sigma_{l+1} / sigma_k)^(2q+1), so
    the excess of the error over the optimal one shrinks by about (sigma_{l+1} / sigma_k)^4 per
    step, and so does the gain of each step. (s_l / s_k)^2, with s_l the sketch's smallest
    singular value standing in for sigma_{l+1}, is that factor's square root: larger, so the
    prediction errs towards another step. 1 without oversampling (s_l = s_k says nothing).
    """
    if w.size <= k or w[k - 1] <= 0.0:
        return 1.0
    return min(1.0, float(w[-1] / w[k - 1]))


def _randomized_svd_fixed(ops, r, p, n_power_iter, generator, seed):
    """Body of `randomized_svd` with a fixed rank (no validation)."""
    m, n = ops.shape
    dtype = ops.dtype
    ell = min(r + p, min(m, n))
    Omega = generator.standard_normal((n, ell)).astype(dtype, copy=False)
    Q, Z = ops.range_basis(Omega)
    fro2 = ops.fro2()
    auto = n_power_iter == "auto"
    if auto and fro2 is None:
        n_power_iter, auto = 4, False
    max_iter = config.LOWRANK_AUTO_POWER_MAX if auto else n_power_iter
    floor = 100 * np.finfo(dtype).eps * (fro2 or 0.0)
    err_prev = math.sqrt(max(fro2 - float(np.sum(_sketch_energies(Z)[:r])), 0.0)) if auto else None
    q = 0
    while q < max_iter:
        if auto and err_prev**2 <= floor:
            break
        Q, Z = ops.range_basis(_orth(Z))
        q += 1
        if auto:
            w = _sketch_energies(Z)
            err = math.sqrt(max(fro2 - float(np.sum(w[:r])), 0.0))
            gain = err_prev - err
            # stop when this step's gain, or the next one's as predicted from the sketch, is small:
            # the prediction saves the step that would only show the gain has become small
            if min(gain, gain * _next_gain_factor(w, r)) <= config.LOWRANK_AUTO_POWER_RTOL * err:
                break
            err_prev = err
    return _finish(ops, Q, Z, r, generator, seed, n_power_iter=q, tol=None, rmax=r)


def _project_out(Q, Y):
    """(I - QQ^T) Y, twice: once leaves rounding of the size of Y along Q (Kahan-Parlett)."""
    for _ in range(2):
        Y = Y - Q @ (Q.T @ Y)
    return Y


def _new_directions(Q, Y, tau):
    """Orthonormal directions of (I - QQ^T) Y above the noise level ``tau``, orthogonal to Q.

    Two projections make the block orthogonal to Q to rounding relative to its own size
    (Kahan-Parlett); directions whose singular value is at most ``tau`` are rounding of the
    products, not content of A, and are dropped: normalizing them would magnify their
    components along Q to order one. The kept directions are normalized (SVD) and projected
    once more, so that what is appended is orthogonal to Q relative to unit length.
    """
    Y = _project_out(Q, Y)
    with blas_single_thread():
        W, sy, _ = scipy.linalg.svd(Y, full_matrices=False, check_finite=False)
    W = W[:, sy > tau]
    if W.shape[1] == 0:
        return W
    W = W - Q @ (Q.T @ W)
    return _orth(W)


def _randomized_svd_adaptive(ops, rmax, tol, n_power_iter, generator, seed, *, warn=True):
    """Body of `randomized_svd` with a tolerance: blocked range finder (no validation)."""
    m, n = ops.shape
    dtype = ops.dtype
    q = config.LOWRANK_ADAPTIVE_POWER_ITER if n_power_iter == "auto" else n_power_iter
    d = config.LOWRANK_N_PROBES
    factor = _bound_factor(d, config.LOWRANK_ERROR_BOUND_FAILURE)
    cap = min(m, n)
    G = generator.standard_normal((n, d)).astype(dtype, copy=False)
    RG = ops.matmat(G)  # residual of the probes, (I - QQ^T) A G
    fro2 = ops.fro2()
    if fro2 is None:  # operators: the probes' own estimate of ||A||_F^2
        fro2 = float(np.sum(RG.astype(np.float64) ** 2)) / d
    # A product A w with ||w|| = 1 is exact to about sqrt(N) eps ||A||_F: directions of a block
    # below `tau` are rounding, and the probe estimate of what is left is resolved to `floor`.
    tau = config.LOWRANK_ROUNDING_FACTOR * math.sqrt(max(m, n)) * np.finfo(dtype).eps * math.sqrt(fro2)
    floor = math.sqrt(factor) * tau
    target = max(tol, 2.0 * floor)
    Q = np.empty((m, 0), dtype=dtype)
    Z = np.empty((n, 0), dtype=dtype)  # A^T Q, grown with Q
    P = np.empty((n, 0), dtype=dtype)  # orthonormal basis of range(A^T Q), the rows already captured
    while True:
        b = min(max(config.LOWRANK_ADAPTIVE_BLOCK, Q.shape[1] // 2), cap - Q.shape[1])
        Omega = generator.standard_normal((n, b)) / math.sqrt(n)  # unit columns: products sized like A w
        Y = ops.matmat(Omega.astype(dtype, copy=False))
        for _ in range(q):
            # Deflate on both sides: the rounding left along Q by a projection, times sigma_1 in
            # A^T, would swamp a direction sigma_1 / sigma_{k+1} times smaller (2^-40 for 2^-i).
            Y = _orth(_project_out(Q, Y))
            Y = ops.matmat(_orth(_project_out(P, ops.rmatmat(Y))))
        W = _new_directions(Q, Y, tau)
        exhausted = W.shape[1] == 0  # nothing above rounding is left to find
        if not exhausted:
            Q = np.hstack([Q, W])
            Z = np.hstack([Z, ops.rmatmat(W)])
            P = _new_directions(P[:, :0], Z, tau)
            RG = RG - W @ (W.T @ RG)
        est2 = float(np.sum(RG.astype(np.float64) ** 2)) / d
        if exhausted or math.sqrt(est2 * factor) + floor <= target or Q.shape[1] >= cap:
            if Q.shape[1] == 0:  # A is zero to rounding: one direction of the probes stands for it
                Q = _orth(RG[:, :1].copy())
                Z = ops.rmatmat(Q)
            res = _finish(ops, Q, Z, None, generator, seed, n_power_iter=q, tol=tol, rmax=rmax, floor=floor)
            if (
                res.converged
                or exhausted
                or Q.shape[1] >= cap
                or (res.rank >= rmax and Q.shape[1] >= rmax)
                or res.error_bound <= target
            ):
                break
    if warn and not res.converged:
        if exhausted or res.error_bound <= target:
            why = (
                f"error bound {res.error_bound:.3g} > tol={tol:g}, and no direction above the rounding resolution "
                f"{tau:.3g} of {dtype.name} is left to find: tol is below what {dtype.name} resolves for this "
                f"matrix (rounding floor about {2 * floor:.3g} = 2 sqrt(c) {config.LOWRANK_ROUNDING_FACTOR:g} "
                f"sqrt(max(M, N)) eps ||A||_F); the result is as accurate as the floor allows"
            )
        else:
            why = f"error bound {res.error_bound:.3g} > tol={tol:g} at the largest rank allowed, r={rmax}"
        warnings.warn(f"randomized_svd: {why}", ConvergenceWarning, stacklevel=3)
    return res


# -- pseudo-inverse ----------------------------------------------------------------------------
def _cutoff_tols(rtol, atol, shape, dtype):
    atol = 0.0 if atol is None else _validate.nonnegative("atol", atol)
    rtol = max(shape) * np.finfo(dtype).eps if rtol is None else _validate.nonnegative("rtol", rtol)
    return rtol, atol


def pinv(A, *, rtol=None, atol=None):
    """Moore–Penrose pseudo-inverse with the rank cut-off of `scipy.linalg.pinv`.

    Parameters
    ----------
    A : (M, N) array_like
        Real float32 or float64 matrix.
    rtol : float, optional
        Relative cut-off: singular values at most ``atol + rtol * sigma_max`` are treated as zero.
        Default ``max(M, N) * eps`` of the dtype of A (as scipy).
    atol : float, optional
        Absolute cut-off, default 0.

    Returns
    -------
    B : (N, M) ndarray
        The pseudo-inverse, in the dtype of A.

    Raises
    ------
    TypeError
        If A is not float32/float64.
    ValueError
        If A is not 2-D, empty or non-finite, or ``rtol``/``atol`` are negative.

    See Also
    --------
    pinv_lowrank : pseudo-inverse of a factored matrix L @ R without forming it.
    scipy.linalg.pinv : the reference.

    Notes
    -----
    :math:`x = A^+ b` is the minimum-norm solution of :math:`\\min_x \\|Ax - b\\|_2`; with the SVD,
    :math:`A^+ = \\sum_{\\sigma_i > \\tau} \\sigma_i^{-1} v_i u_i^T`,
    :math:`\\tau = \\mathrm{atol} + \\mathrm{rtol}\\,\\sigma_1`.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.lowrank import pinv
    >>> pinv(np.array([[2.0, 0.0], [0.0, 0.0]]))
    array([[0.5, 0. ],
           [0. , 0. ]])
    """
    arr = _dense("A", A, "pinv")
    rtol, atol = _cutoff_tols(rtol, atol, arr.shape, arr.dtype)
    U, s, Vt = scipy.linalg.svd(arr, full_matrices=False, check_finite=False)
    k = int(np.sum(s > atol + (s[0] if s.size else 0.0) * rtol))
    return ((Vt[:k].T / s[:k]) @ U[:, :k].T).astype(arr.dtype, copy=False)


def pinv_lowrank(L, R, *, rtol=None, atol=None):
    """Pseudo-inverse of X = L @ R, as factors, without forming X.

    Parameters
    ----------
    L : (M, K) array_like
        Left factor (for an SVD, ``U * s``).
    R : (K, N) array_like
        Right factor (for an SVD, ``Vt``).
    rtol, atol : float, optional
        Cut-off on the singular values of X, as in `pinv` (``rtol`` defaults to max(M, N) * eps).

    Returns
    -------
    factors : LowRankFactors
        X^+ = U diag(s) Vt with U (N, k), Vt (k, M) orthonormal and k the numerical rank;
        ``factors @ b`` applies it in O((M + N) k) per vector.

    Raises
    ------
    TypeError
        If a factor is not float32/float64.
    ValueError
        If the inner dimensions differ, or a factor is non-finite or empty.

    See Also
    --------
    pinv : the dense pseudo-inverse.

    Notes
    -----
    With thin QR factorizations :math:`L = Q_1 R_1`, :math:`R^T = Q_2 R_2` and the SVD of the
    small core :math:`R_1 R_2^T = W \\Sigma Z^T`, :math:`X = (Q_1 W)\\Sigma(Q_2 Z)^T` and
    :math:`X^+ = (Q_2 Z)\\Sigma^+(Q_1 W)^T`: cost :math:`O((M+N)K^2)`.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.lowrank import pinv_lowrank
    >>> rng = np.random.default_rng(0)
    >>> L, R = rng.standard_normal((30, 3)), rng.standard_normal((3, 20))
    >>> P = pinv_lowrank(L, R)
    >>> bool(np.allclose(P.to_array(), np.linalg.pinv(L @ R)))
    True
    """
    L = _dense("L", L, "pinv_lowrank")
    R = _dense("R", R, "pinv_lowrank")
    if L.shape[1] != R.shape[0]:
        raise ValueError(f"`L` and `R` must have matching inner dimensions, got {L.shape} and {R.shape}")
    dtype = np.result_type(L.dtype, R.dtype)
    m, n = L.shape[0], R.shape[1]
    rtol, atol = _cutoff_tols(rtol, atol, (m, n), dtype)
    Q1, R1 = scipy.linalg.qr(L, mode="economic", check_finite=False)
    Q2, R2 = scipy.linalg.qr(R.T, mode="economic", check_finite=False)
    W, s, Zt = scipy.linalg.svd(R1 @ R2.T, full_matrices=False, check_finite=False)
    k = int(np.sum(s > atol + (s[0] if s.size else 0.0) * rtol))
    return LowRankFactors(
        U=(Q2 @ Zt[:k].T).astype(dtype, copy=False),
        s=(1.0 / s[:k]).astype(dtype),
        Vt=(Q1 @ W[:, :k]).T.astype(dtype, copy=False),
    )


# -- CR matrix product -------------------------------------------------------------------------
_SAMPLINGS = ("optimal", "uniform")


def _cr_inputs(A, B, sampling, family):
    A = _dense("A", A, family)
    B = _dense("B", B, family)
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"`A` and `B` must have matching inner dimensions, got {A.shape} and {B.shape}")
    _validate.choice("sampling", sampling, _SAMPLINGS)
    # A B = 2^(ea + eb) A' B': norms, probabilities and products of A' and B' stay in range
    A, ea = pow2_normalize(A, always=True)
    B, eb = pow2_normalize(B, always=True)
    a = np.linalg.norm(A.astype(np.float64, copy=False), axis=0)
    b = np.linalg.norm(B.astype(np.float64, copy=False), axis=1)
    return A, B, a, b, ea + eb


def _cr_probabilities(a, b, sampling):
    n = a.size
    if sampling == "uniform":
        return np.full(n, 1.0 / n)
    w = a * b
    total = w.sum()
    if total == 0:  # A B = 0 exactly: every pair contributes nothing
        return np.full(n, 1.0 / n)
    return w / total


def _cr_sum(a, b, p):
    # sum_i a_i^2 b_i^2 / p_i with 0/0 = 0 for zero pairs (never drawn by "optimal")
    w2 = (a * b) ** 2
    mask = w2 > 0
    return float(np.sum(w2[mask] / p[mask]))


def _cr_error2(A, B, a, b, p, c):
    # E||AB - CR||_F^2 = (sum_i a_i^2 b_i^2 / p_i - ||AB||_F^2) / c
    AB = A.astype(np.float64, copy=False) @ B.astype(np.float64, copy=False)
    return max(_cr_sum(a, b, p) - float(np.sum(AB * AB)), 0.0) / c


def cr_expected_error(A, B, c, *, sampling="optimal"):
    """Root-mean-square Frobenius error of `cr_matmul` with ``c`` samples, sqrt(E||AB - CR||_F^2).

    Parameters
    ----------
    A : (M, N) array_like
        Left factor.
    B : (N, P) array_like
        Right factor.
    c : int
        Number of sampled column-row pairs.
    sampling : {"optimal", "uniform"}, optional
        The sampling probabilities of `cr_matmul`.

    Returns
    -------
    error : float
        The exact expected error (it costs one product A @ B; use it to choose c).

    Raises
    ------
    TypeError
        If A or B is not float32/float64 or ``c`` is not an integer.
    ValueError
        If shapes do not match, input is non-finite or ``c <= 0``.

    See Also
    --------
    cr_matmul : the sampled product.

    Notes
    -----
    :math:`E\\|AB - CR\\|_F^2 = \\frac1c\\left(\\sum_i \\frac{\\|A_{:i}\\|^2\\|B_{i:}\\|^2}{p_i}
    - \\|AB\\|_F^2\\right)`; with the optimal :math:`p_i \\propto \\|A_{:i}\\|\\|B_{i:}\\|` the sum is
    :math:`(\\sum_i\\|A_{:i}\\|\\|B_{i:}\\|)^2`. The error decreases like :math:`1/\\sqrt c`.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.lowrank import cr_expected_error
    >>> A = np.eye(4)
    >>> round(cr_expected_error(A, A, 4) ** 2, 12)  # (16 - 4) / 4
    3.0
    """
    c = _validate.positive_int("c", c)
    A, B, a, b, e = _cr_inputs(A, B, sampling, "cr_expected_error")
    p = _cr_probabilities(a, b, sampling)
    return ldexp_float(math.sqrt(_cr_error2(A, B, a, b, p, c)), e)


def cr_matmul(A, B, c, *, sampling="optimal", rng=None, return_info=False):
    """Approximate A @ B from ``c`` sampled column-row pairs (Drineas–Kannan–Mahoney).

    Parameters
    ----------
    A : (M, N) array_like
        Left factor.
    B : (N, P) array_like
        Right factor.
    c : int
        Number of pairs drawn (with replacement; may exceed N).
    sampling : {"optimal", "uniform"}, optional
        "optimal": :math:`p_i \\propto \\|A_{:i}\\|\\|B_{i:}\\|`, which minimizes the expected
        Frobenius error (pairs with a zero column or row are never drawn); "uniform": 1/N.
    rng : None, int or numpy.random.Generator, optional
        Source of the sample; the result records the seed.
    return_info : bool, optional
        Return a `CRProductResult` (the sample, its probabilities and the error bound) instead
        of the product alone.

    Returns
    -------
    product : (M, P) ndarray or CRProductResult
        The unbiased estimate of A @ B, in the dtype of A and B; with ``return_info=True`` a
        `CRProductResult` with ``product``, ``indices``, ``probabilities``, ``error_bound`` and
        ``seed``.

    Raises
    ------
    TypeError
        If A or B is not float32/float64 or ``c`` is not an integer.
    ValueError
        If shapes do not match, input is non-finite, ``c <= 0`` or ``sampling`` is unknown, or the
        sampled product overflows the dtype (A and B are scaled internally by powers of two).

    See Also
    --------
    cr_expected_error : the expected error as a function of c, to choose c.

    Notes
    -----
    Each draw :math:`X_t = A_{:i_t}B_{i_t:}/p_{i_t}` has mean AB, so the average of c draws is
    unbiased; its variance is derived on the theory page.

    References
    ----------
    .. [1] P. Drineas, R. Kannan and M. W. Mahoney, "Fast Monte Carlo algorithms for matrices I:
       approximating matrix multiplication", SIAM J. Comput. 36(1), 2006.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.lowrank import cr_matmul
    >>> A = np.diag([1.0, 0.0, 0.0])  # only pair 0 contributes
    >>> float(cr_matmul(A, A, 2, rng=0)[0, 0])
    1.0
    >>> cr_matmul(A, A, 2, rng=0, return_info=True).indices
    array([0, 0])
    """
    c = _validate.positive_int("c", c)
    A, B, a, b, e = _cr_inputs(A, B, sampling, "cr_matmul")
    generator, seed = _validate.rng(rng)
    p = _cr_probabilities(a, b, sampling)
    dtype = np.result_type(A.dtype, B.dtype)
    idx = generator.choice(p.size, size=c, p=p)
    uniq, counts = np.unique(idx, return_counts=True)  # repeated draws: one column with weight count
    scale = np.sqrt(counts / (c * p[uniq])).astype(dtype)
    product = (A[:, uniq] * scale) @ (B[uniq, :] * scale[:, None])
    product = unscale(product, e, dtype, "the sampled product of `A` and `B` overflows").astype(dtype, copy=False)
    if not return_info:
        return product
    return CRProductResult(
        product=product,
        indices=idx,
        probabilities=p,
        error_bound=ldexp_float(math.sqrt(_cr_sum(a, b, p) / c), e),
        seed=seed,
    )


# -- interpolative decomposition and CUR -------------------------------------------------------
_AXES = ("columns", "rows")


def _pivoted_id(Y, k):
    """Column ID of the small sketch Y (l x n) by pivoted QR: (indices, interp (k x n), R)."""
    _, R, P = _qr(Y, pivoting=True)
    n = Y.shape[1]
    X = np.zeros((k, n), dtype=Y.dtype)
    X[:, P[:k]] = np.eye(k, dtype=Y.dtype)
    if k < n:
        R11 = R[:k, :k]
        # rank-deficient sketch: a zero pivot would divide by zero; its columns are numerically 0
        d = np.abs(np.diag(R11))
        good = d > np.finfo(Y.dtype).eps * max(d.max(initial=0.0), np.finfo(Y.dtype).tiny) * max(Y.shape)
        T = np.zeros((k, n - k), dtype=Y.dtype)
        if good.all():
            T = scipy.linalg.solve_triangular(R11, R[:k, k:], check_finite=False)
        else:
            T = np.linalg.lstsq(R11, R[:k, k:], rcond=None)[0]
        X[:, P[k:]] = T
    return P[:k].copy(), X, R


def _refine_interp(work, idx, X):
    """Least-squares interpolation matrix on A itself: X = argmin ||A - A[:, J] X||_F, X[:, J] = I."""
    QJ, RJ = _qr(work[:, idx])
    d = np.abs(np.diag(RJ))
    if d.min() <= np.finfo(work.dtype).eps * max(work.shape) * d.max():
        return X  # numerically dependent columns: keep the sketch's interpolation
    Xr = scipy.linalg.solve_triangular(RJ, QJ.T @ work, check_finite=False)
    Xr[:, idx] = np.eye(idx.size, dtype=Xr.dtype)
    return Xr.astype(work.dtype, copy=False)


def _row_sketch(arr, ell, q, generator):
    """Y (ell x N) with rows spanning (approximately) the dominant row space of arr."""
    m, n = arr.shape
    Omega = generator.standard_normal((m, ell)).astype(arr.dtype, copy=False)
    Z = arr.T @ Omega
    for _ in range(q):
        Z = arr.T @ _orth(arr @ _orth(Z))
    return Z.T


def _sketched_columns(work, k, q, generator):
    """k columns of ``work`` picked by pivoted QR on a 2k-row sketch: (indices, interp on the sketch)."""
    ell = min(config.ID_SKETCH_FACTOR * k, work.shape[0])
    if work.dtype == np.float64:
        idx, X, R = _pivoted_id(_row_sketch(work.astype(np.float32), ell, q, generator), k)
        pivots = np.abs(np.diag(R))
        if pivots[k - 1] >= config.ID_FLOAT32_PIVOT_MARGIN * pivots[0]:
            return idx, X.astype(np.float64)
    idx, X, _ = _pivoted_id(_row_sketch(work, ell, q, generator), k)
    return idx, X


def interpolative_decomposition(A, k_or_eps, *, axis="columns", rng=None, n_power_iter=1):
    """Randomized interpolative decomposition: A from k of its own columns (or rows).

    Parameters
    ----------
    A : (M, N) array_like
        Real float32 or float64 matrix.
    k_or_eps : int or float
        An int k (1 <= k <= min(M, N)) is the rank; a float in (0, 1) is a relative
        tolerance on the Frobenius error ||A - A_ID||_F / ||A||_F and the rank is chosen.
    axis : {"columns", "rows"}, optional
        Select columns (A ~ A[:, J] @ X) or rows (A ~ X @ A[J, :]).
    rng : None, int or numpy.random.Generator, optional
        Source of the Gaussian sketch; the result records the seed.
    n_power_iter : int, optional
        Power iterations on the sketch (sharper for slowly decaying spectra).

    Returns
    -------
    result : IDResult
        ``indices``, ``interp``, ``rank``, ``axis``, ``error_estimate`` and ``seed``; unpacks as
        ``indices, interp`` (scipy's ``idx, proj``, see `IDResult`).

    Raises
    ------
    TypeError
        If A is not float32/float64 or ``k_or_eps`` is neither an int nor a float.
    ValueError
        If A is empty or non-finite, k is outside [1, min(M, N)], eps is outside (0, 1), or
        ``axis`` is unknown.

    Warns
    -----
    ConvergenceWarning
        With a tolerance, if the selected columns miss it: eps below the rounding floor of the
        dtype (the fewest columns that reach the floor are returned), or the sketch ran out.

    See Also
    --------
    cur : columns and rows at once.
    scipy.linalg.interpolative.interp_decomp : the Fortran ID library.

    Notes
    -----
    A Gaussian sketch :math:`Y = \\Omega^T A (A^T A)^q` (2k rows, re-orthonormalized between
    power steps) has approximately the row space of A, so the columns a pivoted QR picks on Y
    are good columns of A; the interpolation matrix is then the least-squares one on A itself,
    :math:`X = A_{:,J}^+ A` (one more pass over A), as a full pivoted QR would give.
    Cost :math:`O(2mnk(2q+1))` plus :math:`O(nk^2)`, instead of :math:`O(mnk)` BLAS-2 work
    for pivoted QR on A. A float64 A is sketched in float32 when the sketch's k-th pivot is at
    least 1e-3 of its first (the rounding then cannot change a pivot choice) and in float64
    otherwise; the interpolation matrix is always computed in the dtype of A.

    In tolerance mode the sketch is grown by the adaptive range finder of `randomized_svd`
    until its error bound is below eps/2, and k is the smallest number of pivot columns whose
    exact least-squares error on A is at most eps (computed for every k with one product, as a
    sum of squares without cancellation). An eps below the rounding floor of `randomized_svd`
    (about :math:`4\\sqrt{\\max(M, N)}\\,\\epsilon` relative) is met as far as the dtype allows.

    References
    ----------
    .. [1] E. Liberty, F. Woolfe, P.-G. Martinsson, V. Rokhlin and M. Tygert, "Randomized
       algorithms for the low-rank approximation of matrices", PNAS 104(51), 2007.
    .. [2] S. Voronin and P.-G. Martinsson, "Efficient algorithms for CUR and interpolative
       matrix decompositions", Adv. Comput. Math. 43, 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.lowrank import interpolative_decomposition
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((50, 4)) @ rng.standard_normal((4, 30))
    >>> res = interpolative_decomposition(A, 4, rng=0)
    >>> bool(np.allclose(A[:, res.indices] @ res.interp, A))
    True
    >>> interpolative_decomposition(A, 1e-8, rng=0).rank
    4
    """
    arr = _dense("A", A, "interpolative_decomposition")
    axis = _validate.choice("axis", axis, _AXES)
    q = _validate.positive_int("n_power_iter", n_power_iter, minimum=0)
    generator, seed = _validate.rng(rng)
    arr, _ = pow2_normalize(arr)  # columns, interpolation and relative errors are scale-invariant
    work = arr if axis == "columns" else arr.T
    m, n = work.shape
    if isinstance(k_or_eps, (bool, np.bool_)) or not isinstance(k_or_eps, numbers.Real):
        raise TypeError(f"`k_or_eps` must be an int rank or a float tolerance in (0, 1), got {k_or_eps!r}")
    fro = float(np.linalg.norm(arr))
    if isinstance(k_or_eps, numbers.Integral):
        k = _rank("k_or_eps", k_or_eps, m, n)
        idx, X = _sketched_columns(work, k, q, generator)
    else:
        eps = float(k_or_eps)
        if not (0.0 < eps < 1.0) or not np.isfinite(eps):
            raise ValueError(f"`k_or_eps` as a tolerance must be in (0, 1), got {eps}")
        if fro == 0.0:
            k = 1
            idx, X = np.array([0]), np.zeros((1, n), dtype=work.dtype)
            X[0, 0] = 1
        else:
            ops = _Blocks("A", work.T, "interpolative_decomposition")  # sketch the row space of `work`: range of work^T
            # the range finder's own ConvergenceWarning would name randomized_svd; the ID warns below
            res = _randomized_svd_adaptive(ops, min(m, n), 0.5 * eps * fro, q, generator, seed, warn=False)
            # res: work^T ~ U s Vt, so (s Vt)^T ... the rows of Y = s[:, None] * U.T span work's rows
            Y = (res.U * res.s).T
            _, _, P = _qr(Y, pivoting=True)
            # exact projection error of A onto its first k pivot columns, for every k, in one product:
            # ||A - Q_k Q_k^T A||^2 = sum_{i > k} ||W_i||^2 + ||A - Qa W||^2 (W = Qa^T A), a sum of
            # squares with no cancellation (||A||^2 - sum_{i <= k} ||W_i||^2 loses everything below
            # sqrt(eps) ||A||)
            ell = Y.shape[0]
            Qa = _orth(work[:, P[:ell]].copy())
            W = Qa.T @ work
            outside = (work - Qa @ W).astype(np.float64)
            w2 = np.einsum("ij,ij->i", W.astype(np.float64), W.astype(np.float64))
            resid2 = np.cumsum(w2[::-1])[::-1][1:].tolist() + [0.0]
            resid2 = np.asarray(resid2) + float(np.einsum("ij,ij->", outside, outside))
            # below what the dtype resolves, the fewest columns that reach the rounding floor (that of
            # `randomized_svd`); if even all ell pivot columns miss eps, all of them (and a warning)
            tau = config.LOWRANK_ROUNDING_FACTOR * math.sqrt(max(m, n)) * np.finfo(work.dtype).eps * fro
            reach = max((eps * fro) ** 2, (2.0 * tau) ** 2)
            ok = np.flatnonzero(resid2 <= reach)
            k = int(ok[0]) + 1 if ok.size else ell
            if resid2[k - 1] > (eps * fro) ** 2:
                warnings.warn(
                    f"interpolative_decomposition: relative error {math.sqrt(resid2[k - 1]) / fro:.3g} > "
                    f"`k_or_eps`={eps:g} with {k} columns"
                    + (
                        f": the tolerance is below the rounding floor {2 * tau / fro:.3g} of {arr.dtype.name} for "
                        f"this matrix"
                        if ok.size
                        else ""
                    ),
                    ConvergenceWarning,
                    stacklevel=2,
                )
            idx, X, _ = _pivoted_id(Y, k)
    X = _refine_interp(work, idx, X)
    # a-posteriori estimate with fresh Gaussian probes
    G = generator.standard_normal((n, config.LOWRANK_N_PROBES)).astype(work.dtype, copy=False)
    E = (work @ G - work[:, idx] @ (X @ G)).astype(np.float64)
    est = math.sqrt(float(np.sum(E * E)) / config.LOWRANK_N_PROBES) / fro if fro > 0 else 0.0
    interp = X if axis == "columns" else np.ascontiguousarray(X.T)
    return IDResult(indices=idx, interp=interp, rank=k, axis=axis, error_estimate=est, seed=seed)


def _cur_core(A, C, R):
    """Core U minimizing ||A - C U R||_F, from the QR factorizations of C and R^T (see `cur`, Notes)."""
    Qc, Tc = _qr(C)
    Qr, Tr = _qr(R.T)
    with blas_single_thread():  # k x k: threads cost more than they save
        Wc, sc, Zc = scipy.linalg.svd(Tc, check_finite=False)
        Wr, sr, Zr = scipy.linalg.svd(Tr, check_finite=False)
    # C = (Qc Wc) diag(sc) Zc and R = Zr^T diag(sr) (Qr Wr)^T, so C U R = (Qc Wc) X (Qr Wr)^T exactly when
    # Zc U Zr^T = diag(1/sc) X diag(1/sr), X = (Qc Wc)^T A (Qr Wr) the optimal middle factor
    X = Wc.T @ ((Qc.T @ A) @ Qr) @ Wr
    A64 = A.astype(np.float64, copy=False)
    eps = float(np.finfo(A.dtype).eps)
    best, best_err, last = None, math.inf, None
    for power in config.CUR_CORE_CUTOFF_EXPONENTS:
        tau = 0.0 if power is None else eps**power
        kc, kr = int(np.sum(sc > tau * sc[0])), int(np.sum(sr > tau * sr[0]))
        if (kc, kr) == last:
            continue
        last = (kc, kr)
        core = X[:kc, :kr] / sc[:kc, None] / sr[None, :kr]
        U = Zc[:kc].T @ core @ Zr[:kr]
        if best is None and len(config.CUR_CORE_CUTOFF_EXPONENTS) == 1:
            return U
        E = A64 - (C @ U @ R).astype(np.float64, copy=False)
        err = float(np.einsum("ij,ij->", E, E))
        if err < best_err or best is None:
            best, best_err = U, err
    return best


def cur(A, k, *, rng=None, n_power_iter=1):
    """CUR decomposition A ~ A[:, cols] @ U @ A[rows, :] from a randomized column ID.

    Parameters
    ----------
    A : (M, N) array_like
        Real float32 or float64 matrix.
    k : int
        Number of columns and rows, 1 <= k <= min(M, N).
    rng : None, int or numpy.random.Generator, optional
        Source of the sketch; the result records the seed.
    n_power_iter : int, optional
        Power iterations of the column sketch.

    Returns
    -------
    result : CURResult
        ``C``, ``U`` (k x k), ``R``, ``cols``, ``rows``, ``rank`` and ``seed``; unpacks as
        ``C, U, R``.

    Raises
    ------
    TypeError
        If A is not float32/float64 or ``k`` is not an integer.
    ValueError
        If A is empty or non-finite or ``k`` is outside [1, min(M, N)].

    See Also
    --------
    interpolative_decomposition : the column (or row) selection.

    Notes
    -----
    Columns J come from `interpolative_decomposition`; rows I from a pivoted QR of
    :math:`C^T = A_{:,J}^T` (cheap: C has k columns); the core
    :math:`U = C^+ A R^+` is the Frobenius-optimal one for the chosen C and R.

    It is computed without forming a pseudo-inverse: with :math:`C = Q_c T_c`, :math:`R^T = Q_r T_r`
    and the SVDs of the k x k triangles :math:`T_c = W_c \\Sigma_c Z_c`, :math:`T_r = W_r \\Sigma_r Z_r`,
    :math:`U = Z_c^T \\Sigma_c^{-1} (W_c^T Q_c^T A Q_r W_r) \\Sigma_r^{-1} Z_r`. When C or R is
    ill-conditioned (a fast-decaying spectrum, k near the numerical rank), U holds entries of
    size :math:`1/\\sigma_{min}` whose rounding alone costs :math:`\\epsilon\\,\\mathrm{cond}` in
    :math:`\\|A - CUR\\|`; directions of C and R below :math:`\\epsilon^{3/4}` and
    :math:`\\epsilon^{1/2}` of the largest are then also tried dropped (each costs at most their own
    size and removes that rounding), and the core with the smallest measured error is kept.

    References
    ----------
    .. [1] S. Voronin and P.-G. Martinsson, "Efficient algorithms for CUR and interpolative
       matrix decompositions", Adv. Comput. Math. 43, 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.lowrank import cur
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((40, 3)) @ rng.standard_normal((3, 25))
    >>> C, U, R = cur(A, 3, rng=0)
    >>> bool(np.allclose(C @ U @ R, A))
    True
    """
    arr = _dense("A", A, "cur")
    m, n = arr.shape
    k = _rank("k", k, m, n)
    dtype = arr.dtype
    original = arr
    arr, e = pow2_normalize(arr)  # 2^-e A = C' U' R' with C' = 2^-e C, R' = 2^-e R: U = 2^-e U'
    col = interpolative_decomposition(arr, k, rng=rng, n_power_iter=n_power_iter)
    C = arr[:, col.indices]
    _, _, P = _qr(C.T, pivoting=True)
    rows = P[:k].copy()
    R = arr[rows, :]
    U = unscale(_cur_core(arr, C, R), -e, dtype, "`A`: the core U overflows")
    return CURResult(
        C=original[:, col.indices],
        U=U.astype(dtype, copy=False),
        R=original[rows, :],
        cols=col.indices,
        rows=rows,
        rank=k,
        seed=col.seed,
    )
