"""Curvature as operators: L-BFGS matrices, dense quasi-Newton updates, Gauss–Newton and Fisher.

Everything here is a product with a symmetric n x n matrix that is never formed: the L-BFGS
inverse Hessian by the two-loop recursion, the L-BFGS Hessian by the compact representation of
Byrd, Nocedal and Schnabel, and the generalized Gauss–Newton and Fisher matrices from the
user's Jacobian-vector products. The dense updates (BFGS, DFP, SR1) are the textbook formulas,
for matrices small enough to hold.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from . import _validate, config
from ._threads import blas_single_thread
from .results import Result

__all__ = [
    "CurvatureConditionWarning",
    "LBFGSInverseHessian",
    "LBFGSHessian",
    "lbfgs_inverse_hessian",
    "lbfgs_hessian",
    "QuasiNewtonUpdate",
    "bfgs_update",
    "dfp_update",
    "sr1_update",
    "GaussNewtonOperator",
    "gauss_newton_operator",
    "fisher_operator",
    "empirical_fisher_operator",
]


class CurvatureConditionWarning(UserWarning):
    """A pair (s, y) failed the curvature condition s^T y > tol ||s|| ||y|| and was not used."""


# -- helpers -------------------------------------------------------------------------------------


def _dtype_rtol(base, dtype):
    """A relative threshold given for float64, scaled to ``dtype`` by sqrt(eps(dtype) / eps(float64)).

    The thresholds of this module compare a cosine with rounding noise that grows like the square
    root of the unit roundoff; 1e-8 in float64 becomes about 2.3e-4 in float32.
    """
    return base * math.sqrt(float(np.finfo(dtype).eps) / float(np.finfo(np.float64).eps))


def _pow2_exponent(x):
    """e with 2**e <= x < 2**(e + 1) for finite x > 0, and 0 for x == 0."""
    if x == 0.0:
        return 0
    return math.frexp(x)[1] - 1


def _pairs_array(name, A):
    """A (k, n) float array of pairs as rows; k = 0 is allowed (no pairs yet), n >= 1 is not optional."""
    arr = A if isinstance(A, np.ndarray) else None
    if arr is None:
        if not hasattr(A, "__array__") and not isinstance(A, (list, tuple)):
            raise TypeError(f"`{name}` must be a 2-D array with one pair per row, got {type(A).__name__}")
        arr = np.asarray(A)
        if arr.dtype.kind in "iub" and isinstance(A, (list, tuple)):
            arr = arr.astype(np.float64)
    _validate.float_dtype(name, arr.dtype)
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D with one pair per row (k, n), got {arr.ndim}-D with shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"`{name}` must have at least one column (the dimension n), got shape {arr.shape}")
    if arr.size:
        _validate.finite(name, arr)
    return arr


def _as_columns(X, dtype, n):
    """X as a float (n, m) array in the promoted dtype of the operator and X (a copy)."""
    X = np.asarray(X)
    out_dtype = np.result_type(dtype, X.dtype) if X.dtype.kind == "f" else np.dtype(dtype)
    return np.array(X.reshape(n, -1), dtype=out_dtype, copy=True)


# -- L-BFGS --------------------------------------------------------------------------------------


class _SymmetricOperator(scipy.sparse.linalg.LinearOperator):
    """A symmetric LinearOperator from a column-block product (matvec is a one-column matmat)."""

    def __init__(self, n, dtype, matmat):
        super().__init__(dtype=np.dtype(dtype), shape=(n, n))
        self._mm = matmat

    def _matmat(self, X):
        X = np.asarray(X)
        return self._mm(X.reshape(self.shape[0], -1))

    def _matvec(self, x):
        x = np.asarray(x)
        return self._mm(x.reshape(-1, 1)).reshape(x.shape)

    def _rmatvec(self, x):
        return self._matvec(x)

    def _rmatmat(self, X):
        return self._matmat(X)

    def _adjoint(self):
        return self

    def todense(self):
        """The dense (n, n) matrix (n products; for tests and small n)."""
        return self._matmat(np.eye(self.shape[0], dtype=self.dtype))


class _LBFGSBase(_SymmetricOperator):
    """Shared state of the L-BFGS operators: the pairs kept, gamma, the skipped pairs.

    The pairs are stored rescaled: each pair (s_i, y_i) by a common power of two (which changes
    nothing: the BFGS update is invariant under s, y -> c s, c y), then all s by 2**-p and all y
    by 2**-q, which scales H by 2**(p - q) (and B by its inverse); ``_scale`` restores it. Sums of
    squares then neither overflow nor underflow for any finite input.
    """

    def __init__(self, S, Y, gamma, rtol, skipped):
        n = S.shape[1]
        dtype = S.dtype
        super().__init__(n, dtype, self._single_thread_product)
        self.S = S
        self.Y = Y
        self.gamma = gamma
        self.skipped = skipped
        self.curvature_rtol = rtol
        k = S.shape[0]
        self.n_pairs = k
        if k == 0:
            self._Ss = S
            self._Ys = Y
            self._scale = 1.0
            self._gamma_s = gamma
            return
        S64 = S.astype(np.float64)
        Y64 = Y.astype(np.float64)
        pair_max = np.maximum(np.abs(S64).max(axis=1), np.abs(Y64).max(axis=1))
        pair_e = np.array([_pow2_exponent(float(m)) for m in pair_max])
        S64 = np.ldexp(S64, -pair_e[:, None])
        Y64 = np.ldexp(Y64, -pair_e[:, None])
        p = _pow2_exponent(float(np.abs(S64).max()))
        q = _pow2_exponent(float(np.abs(Y64).max()))
        self._Ss = np.ldexp(S64, -p).astype(dtype)
        self._Ys = np.ldexp(Y64, -q).astype(dtype)
        # H(S, Y, gamma) = 2**(p - q) H(2**-p S, 2**-q Y, 2**(q - p) gamma)
        self._scale = math.ldexp(1.0, p - q)
        self._gamma_s = math.ldexp(gamma, q - p)
        self._sy = np.einsum("ij,ij->i", self._Ss.astype(np.float64), self._Ys.astype(np.float64))

    def _single_thread_product(self, X):
        # Every product streams k << n rows (dot products, rank-1 updates, k x n GEMMs): memory-bound
        # work that a BLAS thread pool cannot speed up, and that its hand-offs slow down badly when the
        # cores are shared (measured, n = 1e5, k = 10, 2 busy cores: two-loop matvec 11 ms on one
        # thread, 510 ms on the default pool; compact-form block of 8, 56 ms against 140 ms).
        with blas_single_thread():
            return self._product(X)

    def __repr__(self):
        return (
            f"<{self.shape[0]}x{self.shape[1]} {type(self).__name__} with dtype={self.dtype}: "
            f"{self.n_pairs} pairs, gamma={self.gamma:.6g}, skipped={list(self.skipped)}>"
        )


class LBFGSInverseHessian(_LBFGSBase):
    """The L-BFGS inverse Hessian approximation H_k as a symmetric LinearOperator.

    Build it with `lbfgs_inverse_hessian`. Products run the two-loop recursion, vectorized over
    the columns of a block.

    Attributes
    ----------
    S, Y : (k, n) ndarray
        The pairs used, oldest first (rows of the input that passed the curvature condition).
    gamma : float
        H_0 = gamma I.
    skipped : tuple of int
        Row indices of the input pairs that failed the curvature condition.
    curvature_rtol : float
        The tolerance of the curvature condition s^T y > tol ||s|| ||y|| that was applied.
    n_pairs : int
        k, the number of pairs used.
    """

    def _product(self, X):
        n = self.shape[0]
        Q = _as_columns(X, self.dtype, n)
        k = self.n_pairs
        if k == 0:
            return Q * Q.dtype.type(self.gamma)
        S, Y = self._Ss.astype(Q.dtype, copy=False), self._Ys.astype(Q.dtype, copy=False)
        rho = (1.0 / self._sy).astype(Q.dtype)
        if Q.shape[1] == 1:
            return self._two_loop_vector(Q[:, 0], S, Y, rho).reshape(n, 1)
        # Rank-one updates of the block in place by BLAS ger on a Fortran-ordered copy: np.outer would
        # write an n x m temporary per pair (3x slower at n = 1e5, m = 8, k = 10).
        Q = np.asfortranarray(Q)
        ger = scipy.linalg.get_blas_funcs("ger", (Q,))
        alpha = np.empty((k, Q.shape[1]), dtype=Q.dtype)
        for i in range(k - 1, -1, -1):
            alpha[i] = rho[i] * (S[i] @ Q)
            Q = ger(-1.0, Y[i], alpha[i], a=Q, overwrite_a=True)
        Q *= Q.dtype.type(self._gamma_s)
        for i in range(k):
            beta = rho[i] * (Y[i] @ Q)
            Q = ger(1.0, S[i], alpha[i] - beta, a=Q, overwrite_a=True)
        if self._scale != 1.0:
            Q *= Q.dtype.type(self._scale)
        return Q

    def _two_loop_vector(self, q, S, Y, rho):
        # One column: scalar alphas and axpy updates; an (n, 1) outer product per pair costs 2-3x more.
        k = self.n_pairs
        alpha = np.empty(k, dtype=q.dtype)
        for i in range(k - 1, -1, -1):
            alpha[i] = rho[i] * (S[i] @ q)
            q -= alpha[i] * Y[i]
        q *= q.dtype.type(self._gamma_s)
        for i in range(k):
            q += (alpha[i] - rho[i] * (Y[i] @ q)) * S[i]
        if self._scale != 1.0:
            q *= q.dtype.type(self._scale)
        return q


class LBFGSHessian(_LBFGSBase):
    """The L-BFGS Hessian approximation B_k as a symmetric LinearOperator (compact representation).

    Build it with `lbfgs_hessian`. A product costs two (k, n) by (n, m) products and a solve
    with a k x k Cholesky factor.

    Attributes
    ----------
    S, Y : (k, n) ndarray
        The pairs used, oldest first (rows of the input that passed the curvature condition).
    gamma : float
        B_0 = I / gamma.
    skipped : tuple of int
        Row indices of the input pairs that failed the curvature condition.
    curvature_rtol : float
        The tolerance of the curvature condition s^T y > tol ||s|| ||y|| that was applied.
    n_pairs : int
        k, the number of pairs used.
    """

    def __init__(self, S, Y, gamma, rtol, skipped):
        super().__init__(S, Y, gamma, rtol, skipped)
        if self.n_pairs == 0:
            return
        # The k x k algebra in float64 whatever the dtype: it is cheap and carries the conditioning.
        Ss = self._Ss.astype(np.float64)
        Ys = self._Ys.astype(np.float64)
        sigma = 1.0 / self._gamma_s
        SY = Ss @ Ys.T  # (SY)[i, j] = s_i^T y_j
        d = self._sy
        L = np.tril(SY, -1)
        LD = L / np.sqrt(d)  # L D^{-1/2}
        C = sigma * (Ss @ Ss.T) + LD @ LD.T
        C = 0.5 * (C + C.T)
        try:
            self._chol = ("cho", scipy.linalg.cho_factor(C, lower=True, check_finite=False))
        except np.linalg.LinAlgError:
            # C = sigma S^T S + L D^-1 L^T is positive definite whenever every s_i^T y_i > 0, but can be
            # numerically singular for nearly dependent pairs; then its pseudo-inverse is used.
            self._chol = ("pinv", scipy.linalg.pinvh(C))
        self._L = L
        self._d = d
        self._sigma = sigma

    def _solve_C(self, R):
        kind, fac = self._chol
        if kind == "cho":
            return scipy.linalg.cho_solve(fac, R, check_finite=False)
        return fac @ R

    def _product(self, X):
        n = self.shape[0]
        V = _as_columns(X, self.dtype, n)
        if self.n_pairs == 0:
            return V * V.dtype.type(1.0 / self.gamma)
        S, Y = self._Ss.astype(V.dtype, copy=False), self._Ys.astype(V.dtype, copy=False)
        sigma = self._sigma
        # B = sigma I - [sigma S^T, Y^T] M^{-1} [sigma S; Y],  M = [[sigma S S^T, L], [L^T, -D]];
        # block elimination of -D leaves the Schur complement C = sigma S S^T + L D^-1 L^T.
        p = sigma * (S @ V).astype(np.float64)
        q = (Y @ V).astype(np.float64)
        a = self._solve_C(p + self._L @ (q / self._d[:, None]))
        b = (self._L.T @ a - q) / self._d[:, None]
        out = V * V.dtype.type(sigma)
        out -= S.T @ (sigma * a).astype(V.dtype) + Y.T @ b.astype(V.dtype)
        out *= V.dtype.type(1.0 / self._scale)
        return out


def _lbfgs_prepare(S, Y, gamma):
    """Validate the pairs, apply the curvature condition and choose gamma; returns constructor args."""
    S = _pairs_array("S", S)
    Y = _pairs_array("Y", Y)
    if S.shape != Y.shape:
        raise ValueError(f"`S` and `Y` must have the same shape (k, n), got {S.shape} and {Y.shape}")
    gamma = _validate.positive("gamma", gamma, allow_none=True)
    dtype = np.result_type(S.dtype, Y.dtype)
    S = np.array(S, dtype=dtype, copy=True)
    Y = np.array(Y, dtype=dtype, copy=True)
    rtol = _dtype_rtol(config.LBFGS_CURVATURE_RTOL, dtype)
    k = S.shape[0]
    keep = np.ones(k, dtype=bool)
    if k:
        # The cosine of each pair, computed after scaling the pair to unit max-norm (no overflow).
        S64 = S.astype(np.float64)
        Y64 = Y.astype(np.float64)
        ms = np.abs(S64).max(axis=1)
        my = np.abs(Y64).max(axis=1)
        ok = (ms > 0) & (my > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            Sn = S64 / np.where(ok, ms, 1.0)[:, None]
            Yn = Y64 / np.where(ok, my, 1.0)[:, None]
        cos = np.einsum("ij,ij->i", Sn, Yn) / (np.linalg.norm(Sn, axis=1) * np.linalg.norm(Yn, axis=1) + ~ok)
        keep = ok & (cos > rtol)
    skipped = tuple(int(i) for i in np.flatnonzero(~keep))
    if skipped:
        warnings.warn(
            f"{len(skipped)} of {k} pairs fail the curvature condition s^T y > {rtol:.3g} ||s|| ||y|| "
            f"and are skipped (rows {list(skipped)})",
            CurvatureConditionWarning,
            stacklevel=3,
        )
    S, Y = S[keep], Y[keep]
    if gamma is None:
        if S.shape[0]:
            s, y = S[-1].astype(np.float64), Y[-1].astype(np.float64)
            # s^T y / y^T y with y scaled to unit max-norm first (no overflow or underflow)
            m = float(np.abs(y).max())
            yn = y / m
            gamma = float(s @ yn) / float(yn @ yn) / m
        else:
            gamma = 1.0
    return S, Y, gamma, rtol, skipped


def lbfgs_inverse_hessian(S, Y, *, gamma=None):
    """The L-BFGS inverse Hessian approximation H_k as a LinearOperator (two-loop recursion).

    Parameters
    ----------
    S : (k, n) array_like
        The last k steps s_i = x_{i+1} - x_i as rows, oldest first. k = 0 (shape (0, n)) gives
        H = gamma I.
    Y : (k, n) array_like
        The matching gradient differences y_i = g_{i+1} - g_i, as rows.
    gamma : float, optional
        H_0 = gamma I. Default s^T y / y^T y of the newest pair that is used (1.0 when none is).

    Returns
    -------
    H : LBFGSInverseHessian
        Symmetric (n, n) LinearOperator in the dtype of S and Y (float32 stays float32), with
        attributes ``S``, ``Y`` (the pairs used), ``gamma``, ``skipped`` (row indices of the
        pairs left out) and ``curvature_rtol``.

    Raises
    ------
    TypeError
        If S or Y is not a float32/float64 array, or ``gamma`` is not a number.
    ValueError
        If S or Y is not 2-D, their shapes differ, they hold NaN or Inf, or ``gamma`` is not
        positive and finite.

    Warns
    -----
    CurvatureConditionWarning
        If a pair fails the curvature condition :math:`s^T y > \\tau \\|s\\|\\|y\\|` and is
        skipped; :math:`\\tau` is ``config.LBFGS_CURVATURE_RTOL`` (1e-8) in float64, scaled by
        :math:`\\sqrt{\\epsilon_{32}/\\epsilon_{64}}` (to about 2.3e-4) in float32.

    See Also
    --------
    lbfgs_hessian : B_k, the inverse of this operator.
    scipy.optimize.LbfgsInvHessProduct : the same recursion with H_0 = I.

    Notes
    -----
    H_k is the BFGS inverse update

    .. math::

       H_{i+1} = (I - \\rho_i s_i y_i^T) H_i (I - \\rho_i y_i s_i^T) + \\rho_i s_i s_i^T,
       \\qquad \\rho_i = 1 / (y_i^T s_i),

    applied to :math:`H_0 = \\gamma I` for each pair in turn. The two-loop recursion of Nocedal
    (1980) computes :math:`H_k v` in :math:`4kn` flops without forming any matrix: a backward
    pass :math:`\\alpha_i = \\rho_i s_i^T q,\\ q \\leftarrow q - \\alpha_i y_i`, then
    :math:`r = \\gamma q` and a forward pass :math:`\\beta = \\rho_i y_i^T r,\\ r \\leftarrow r +
    (\\alpha_i - \\beta) s_i`. It satisfies the secant equation :math:`H_k y_{k-1} = s_{k-1}`
    of the newest pair and is positive definite when every :math:`s_i^T y_i > 0`, which is why
    pairs failing that condition are skipped.

    References
    ----------
    .. [1] J. Nocedal, "Updating quasi-Newton matrices with limited storage", Mathematics of
       Computation 35(151), 1980.
    .. [2] J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006,
       Algorithm 7.4 and eq. (7.20).

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.curvature import lbfgs_inverse_hessian
    >>> A = np.diag([1.0, 2.0, 4.0])
    >>> S = np.eye(3)
    >>> H = lbfgs_inverse_hessian(S, S @ A)
    >>> bool(np.allclose(H @ (A @ S[-1]), S[-1]))
    True
    >>> bool(np.allclose(H @ np.eye(3), np.linalg.inv(A)))
    True
    """
    return LBFGSInverseHessian(*_lbfgs_prepare(S, Y, gamma))


def lbfgs_hessian(S, Y, *, gamma=None):
    """The L-BFGS Hessian approximation B_k as a LinearOperator (compact representation).

    Parameters
    ----------
    S : (k, n) array_like
        The last k steps s_i = x_{i+1} - x_i as rows, oldest first. k = 0 (shape (0, n)) gives
        B = I / gamma.
    Y : (k, n) array_like
        The matching gradient differences y_i = g_{i+1} - g_i, as rows.
    gamma : float, optional
        B_0 = I / gamma (the inverse of the H_0 = gamma I of `lbfgs_inverse_hessian`). Default
        s^T y / y^T y of the newest pair that is used (1.0 when none is).

    Returns
    -------
    B : LBFGSHessian
        Symmetric (n, n) LinearOperator in the dtype of S and Y, the inverse of
        ``lbfgs_inverse_hessian(S, Y, gamma=gamma)``, with attributes ``S``, ``Y``, ``gamma``,
        ``skipped`` and ``curvature_rtol``.

    Raises
    ------
    TypeError
        If S or Y is not a float32/float64 array, or ``gamma`` is not a number.
    ValueError
        If S or Y is not 2-D, their shapes differ, they hold NaN or Inf, or ``gamma`` is not
        positive and finite.

    Warns
    -----
    CurvatureConditionWarning
        If a pair fails the curvature condition and is skipped (as in `lbfgs_inverse_hessian`).

    See Also
    --------
    lbfgs_inverse_hessian : H_k, by the two-loop recursion.

    Notes
    -----
    With the pairs as the columns of :math:`S, Y \\in \\mathbb{R}^{n \\times k}`,
    :math:`\\sigma = 1/\\gamma`, :math:`D = \\operatorname{diag}(s_i^T y_i)` and :math:`L` the
    strictly lower triangle of :math:`S^T Y`, Byrd, Nocedal and Schnabel (1994, Theorem 2.3)
    show that k BFGS updates of :math:`B_0 = \\sigma I` add up to

    .. math::

       B_k = \\sigma I - \\begin{bmatrix} \\sigma S & Y \\end{bmatrix}
       \\begin{bmatrix} \\sigma S^T S & L \\\\ L^T & -D \\end{bmatrix}^{-1}
       \\begin{bmatrix} \\sigma S^T \\\\ Y^T \\end{bmatrix}.

    The middle matrix is solved by eliminating :math:`-D`: its Schur complement
    :math:`\\sigma S^T S + L D^{-1} L^T` is positive definite and is factored once by Cholesky.

    References
    ----------
    .. [1] R. H. Byrd, J. Nocedal and R. B. Schnabel, "Representations of quasi-Newton matrices
       and their use in limited memory methods", Mathematical Programming 63, 1994.
    .. [2] J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006, §7.2.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.curvature import lbfgs_hessian
    >>> A = np.diag([1.0, 2.0, 4.0])
    >>> S = np.eye(3)
    >>> B = lbfgs_hessian(S, S @ A)
    >>> bool(np.allclose(B @ S[-1], A @ S[-1]))
    True
    >>> bool(np.allclose(B @ np.eye(3), A))
    True
    """
    return LBFGSHessian(*_lbfgs_prepare(S, Y, gamma))


# -- dense quasi-Newton updates ------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class QuasiNewtonUpdate(Result):
    """A dense quasi-Newton update and what happened to it.

    Attributes
    ----------
    matrix : (n, n) ndarray
        The updated matrix (B_{k+1}, or H_{k+1} with ``inverse=True``), symmetric, in the dtype of
        the input; a copy of the input when the update was skipped.
    skipped : bool
        True if the update was skipped (curvature condition or SR1 rule failed).
    theta : float
        Powell's damping factor: y was replaced by theta y + (1 - theta) B s. 1.0 when undamped.
    method : str
        "bfgs", "dfp" or "sr1".
    inverse : bool
        True if ``matrix`` approximates the inverse Hessian.
    """

    matrix: np.ndarray
    skipped: bool
    theta: float
    method: str
    inverse: bool


def _update_inputs(M, s, y):
    """Validate (M, s, y); return float64 copies of them scaled so that max(|s|, |y|) is about 1, and the dtype.

    Every update formula below is homogeneous of degree 0 in a common scale of (s, y), so the
    power-of-two scaling changes no result and keeps s^T y, ||s||^2 from overflow and underflow.
    """
    Ma = _validate.float_array("M", M, min_ndim=2, max_ndim=2)
    _validate.square("M", Ma)
    n = Ma.shape[0]
    sa = _validate.float_array("s", s, min_ndim=1, max_ndim=1)
    ya = _validate.float_array("y", y, min_ndim=1, max_ndim=1)
    for name, v in (("s", sa), ("y", ya)):
        if v.shape != (n,):
            raise ValueError(f"`{name}` must have shape ({n},) to match `M` of shape {Ma.shape}, got {v.shape}")
    dtype = np.result_type(Ma.dtype, sa.dtype, ya.dtype)
    M64 = Ma.astype(np.float64)
    norm = float(np.linalg.norm(M64))
    asym = float(np.linalg.norm(M64 - M64.T))
    if asym > config.SYM_ROUNDOFF * n * float(np.finfo(Ma.dtype).eps) * norm:
        raise ValueError(
            f"`M` must be symmetric: relative asymmetry ||M - M^T||_F / ||M||_F = {asym / norm:.3g} "
            f"exceeds {config.SYM_ROUNDOFF:g} * n * eps"
        )
    M64 = 0.5 * (M64 + M64.T)
    e = _pow2_exponent(float(max(np.abs(sa).max(), np.abs(ya).max())))
    s64 = np.ldexp(sa.astype(np.float64), -e)
    y64 = np.ldexp(ya.astype(np.float64), -e)
    return M64, s64, y64, dtype


def _finish_update(M64, dtype, skipped, theta, method, inverse, return_info):
    out = (0.5 * (M64 + M64.T)).astype(dtype)
    if return_info:
        return QuasiNewtonUpdate(matrix=out, skipped=skipped, theta=theta, method=method, inverse=inverse)
    return out


def _curvature_ok(s, y, dtype, method):
    rtol = _dtype_rtol(config.LBFGS_CURVATURE_RTOL, dtype)
    ns, ny = float(np.linalg.norm(s)), float(np.linalg.norm(y))
    sy = float(s @ y)
    if ns > 0 and ny > 0 and sy > rtol * ns * ny:
        return True
    warnings.warn(
        f"{method.upper()} update skipped: s^T y = {sy:.3g} fails the curvature condition "
        f"s^T y > {rtol:.3g} ||s|| ||y|| (values after a common power-of-two scaling of s and y)",
        CurvatureConditionWarning,
        stacklevel=3,
    )
    return False


def _bfgs_inverse_formula(H, s, y):
    """(I - rho s y^T) H (I - rho y s^T) + rho s s^T, expanded around h = H y."""
    rho = 1.0 / float(s @ y)
    h = H @ y
    return H - rho * (np.outer(s, h) + np.outer(h, s)) + (rho * rho * float(y @ h) + rho) * np.outer(s, s)


def _bfgs_direct_formula(B, s, y):
    """B - B s s^T B / (s^T B s) + y y^T / (y^T s); needs s^T B s > 0."""
    b = B @ s
    return B - np.outer(b, b) / float(s @ b) + np.outer(y, y) / float(y @ s)


def _positive_along(M, v, what):
    """v^T M v, which the formula divides by; ValueError unless it is positive."""
    q = float(v @ (M @ v))
    if not q > 0:
        raise ValueError(f"`M` must be positive definite, but {what} <= 0")
    return q


def bfgs_update(M, s, y, *, inverse=False, damping=False, return_info=False):
    """One BFGS update of a dense Hessian approximation B, or of its inverse H.

    Parameters
    ----------
    M : (n, n) array_like
        The current symmetric B_k (``inverse=False``) or H_k (``inverse=True``); not modified.
    s : (n,) array_like
        The step x_{k+1} - x_k.
    y : (n,) array_like
        The gradient difference g_{k+1} - g_k.
    inverse : bool, optional
        Update the inverse Hessian approximation H instead of B.
    damping : bool, optional
        Powell's damping (Nocedal & Wright, Procedure 18.2): when s^T y < 0.2 s^T B s, replace y by
        r = theta y + (1 - theta) B s with s^T r = 0.2 s^T B s, so that the update is always made
        and stays positive definite. With ``inverse=True``, B s = H^{-1} s costs a Cholesky
        factorization of H.
    return_info : bool, optional
        Return a `QuasiNewtonUpdate` (the matrix, ``skipped``, ``theta``) instead of the matrix.

    Returns
    -------
    M_new : (n, n) ndarray or QuasiNewtonUpdate
        The updated matrix, symmetric, in the dtype of the inputs (float32 stays float32).

    Raises
    ------
    TypeError
        If an input is not a float32/float64 array.
    ValueError
        If M is not square and symmetric, s or y has the wrong shape, an input holds NaN or Inf,
        or M is not positive definite where the formula divides by it (s^T B s, or H with damping).

    Warns
    -----
    CurvatureConditionWarning
        Without damping, if s^T y <= tol ||s|| ||y|| (``config.LBFGS_CURVATURE_RTOL``, scaled to the
        dtype as in `lbfgs_inverse_hessian`): the update is skipped and M returned unchanged.

    See Also
    --------
    lbfgs_inverse_hessian, lbfgs_hessian : the same updates applied k times, as operators.
    dfp_update, sr1_update : the other classical updates.

    Notes
    -----
    .. math::

       B_{k+1} = B_k - \\frac{B_k s s^T B_k}{s^T B_k s} + \\frac{y y^T}{y^T s}, \\qquad
       H_{k+1} = (I - \\rho s y^T) H_k (I - \\rho y s^T) + \\rho s s^T, \\quad \\rho = \\frac{1}{y^T s}.

    Both satisfy the secant equation (:math:`B_{k+1} s = y`, :math:`H_{k+1} y = s`), are inverses
    of each other when :math:`H_k = B_k^{-1}` (Sherman–Morrison–Woodbury), and stay positive
    definite when :math:`s^T y > 0`. Damping keeps :math:`s^T r \\ge 0.2\\, s^T B s > 0`.

    References
    ----------
    .. [1] J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006,
       eqs. (6.17), (6.19) and Procedure 18.2.
    .. [2] M. J. D. Powell, "Algorithms for nonlinear constraints that use Lagrangian functions",
       Mathematical Programming 14, 1978.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.curvature import bfgs_update
    >>> s, y = np.array([1.0, 0.0]), np.array([2.0, 1.0])
    >>> B = bfgs_update(np.eye(2), s, y)
    >>> bool(np.allclose(B @ s, y))
    True
    >>> H = bfgs_update(np.eye(2), s, y, inverse=True)
    >>> bool(np.allclose(H @ B, np.eye(2)))
    True
    """
    M64, s64, y64, dtype = _update_inputs(M, s, y)
    inverse, damping = bool(inverse), bool(damping)
    theta = 1.0
    if damping:
        if not np.any(s64):
            warnings.warn("BFGS update skipped: `s` is zero", CurvatureConditionWarning, stacklevel=2)
            return _finish_update(M64, dtype, True, theta, "bfgs", inverse, return_info)
        if inverse:
            try:
                Bs = scipy.linalg.cho_solve(scipy.linalg.cho_factor(M64, check_finite=False), s64, check_finite=False)
            except np.linalg.LinAlgError:
                raise ValueError(
                    "`M` must be positive definite for damping with inverse=True (Cholesky failed)"
                ) from None
            sBs = float(s64 @ Bs)
        else:
            Bs = M64 @ s64
            sBs = _positive_along(M64, s64, "s^T M s")
        sy = float(s64 @ y64)
        lower = config.BFGS_DAMPING * sBs
        if sy < lower:
            theta = (1.0 - config.BFGS_DAMPING) * sBs / (sBs - sy)
            y64 = theta * y64 + (1.0 - theta) * Bs
    elif not _curvature_ok(s64, y64, dtype, "bfgs"):
        return _finish_update(M64, dtype, True, theta, "bfgs", inverse, return_info)
    if inverse:
        M64 = _bfgs_inverse_formula(M64, s64, y64)
    else:
        if not damping:
            _positive_along(M64, s64, "s^T M s")
        M64 = _bfgs_direct_formula(M64, s64, y64)
    return _finish_update(M64, dtype, False, theta, "bfgs", inverse, return_info)


def dfp_update(M, s, y, *, inverse=False, return_info=False):
    """One DFP update of a dense Hessian approximation B, or of its inverse H.

    Parameters
    ----------
    M : (n, n) array_like
        The current symmetric B_k (``inverse=False``) or H_k (``inverse=True``); not modified.
    s : (n,) array_like
        The step x_{k+1} - x_k.
    y : (n,) array_like
        The gradient difference g_{k+1} - g_k.
    inverse : bool, optional
        Update the inverse Hessian approximation H instead of B.
    return_info : bool, optional
        Return a `QuasiNewtonUpdate` instead of the matrix.

    Returns
    -------
    M_new : (n, n) ndarray or QuasiNewtonUpdate
        The updated matrix, symmetric, in the dtype of the inputs.

    Raises
    ------
    TypeError
        If an input is not a float32/float64 array.
    ValueError
        If M is not square and symmetric, s or y has the wrong shape, an input holds NaN or Inf,
        or (``inverse=True``) y^T H y <= 0.

    Warns
    -----
    CurvatureConditionWarning
        If s^T y <= tol ||s|| ||y||: the update is skipped and M returned unchanged.

    See Also
    --------
    bfgs_update : the dual update (s and y, B and H exchanged).

    Notes
    -----
    DFP is BFGS with the roles of :math:`(s, B)` and :math:`(y, H)` exchanged:

    .. math::

       B_{k+1} = (I - \\rho y s^T) B_k (I - \\rho s y^T) + \\rho y y^T, \\qquad
       H_{k+1} = H_k - \\frac{H_k y y^T H_k}{y^T H_k y} + \\frac{s s^T}{y^T s}.

    It satisfies the secant equation and keeps positive definiteness when :math:`s^T y > 0`.

    References
    ----------
    .. [1] J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006,
       eqs. (6.13) and (6.15).

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.curvature import dfp_update
    >>> s, y = np.array([1.0, 0.0]), np.array([2.0, 1.0])
    >>> H = dfp_update(np.eye(2), s, y, inverse=True)
    >>> bool(np.allclose(H @ y, s))
    True
    """
    M64, s64, y64, dtype = _update_inputs(M, s, y)
    inverse = bool(inverse)
    if not _curvature_ok(s64, y64, dtype, "dfp"):
        return _finish_update(M64, dtype, True, 1.0, "dfp", inverse, return_info)
    if inverse:
        _positive_along(M64, y64, "y^T M y")
        M64 = _bfgs_direct_formula(M64, y64, s64)
    else:
        M64 = _bfgs_inverse_formula(M64, y64, s64)
    return _finish_update(M64, dtype, False, 1.0, "dfp", inverse, return_info)


def sr1_update(M, s, y, *, inverse=False, return_info=False):
    """One symmetric rank-one (SR1) update of a dense B or H, skipped when its denominator is tiny.

    Parameters
    ----------
    M : (n, n) array_like
        The current symmetric B_k (``inverse=False``) or H_k (``inverse=True``); not modified.
        SR1 does not need (or keep) positive definiteness.
    s : (n,) array_like
        The step x_{k+1} - x_k.
    y : (n,) array_like
        The gradient difference g_{k+1} - g_k.
    inverse : bool, optional
        Update the inverse Hessian approximation H instead of B.
    return_info : bool, optional
        Return a `QuasiNewtonUpdate` (with ``skipped``) instead of the matrix.

    Returns
    -------
    M_new : (n, n) ndarray or QuasiNewtonUpdate
        The updated matrix, symmetric, in the dtype of the inputs; M itself (a copy) when skipped.

    Raises
    ------
    TypeError
        If an input is not a float32/float64 array.
    ValueError
        If M is not square and symmetric, s or y has the wrong shape, or an input holds NaN or Inf.

    See Also
    --------
    bfgs_update : the rank-two update that keeps positive definiteness.

    Notes
    -----
    With :math:`v = y - B_k s`,

    .. math::

       B_{k+1} = B_k + \\frac{v v^T}{v^T s} \\quad \\text{if } |s^T v| \\ge r \\|s\\| \\|v\\|,

    and :math:`B_{k+1} = B_k` otherwise (Nocedal & Wright, eq. 6.26; :math:`r` is
    ``config.SR1_SKIP_RTOL`` = 1e-8 in float64, about 2.3e-4 in float32). The inverse form
    exchanges :math:`(s, B)` and :math:`(y, H)`: :math:`w = s - H_k y`, test
    :math:`|y^T w| \\ge r \\|y\\| \\|w\\|`. Skipping is routine for SR1 and does not warn; it
    is reported by ``return_info=True``. When :math:`v = 0` the secant equation already holds
    and the update is zero.

    References
    ----------
    .. [1] J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006, §6.2.
    .. [2] A. R. Conn, N. I. M. Gould and P. L. Toint, "Convergence of quasi-Newton matrices
       generated by the symmetric rank one update", Mathematical Programming 50, 1991.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.curvature import sr1_update
    >>> s, y = np.array([1.0, 0.0]), np.array([2.0, 1.0])
    >>> B = sr1_update(np.eye(2), s, y)
    >>> bool(np.allclose(B @ s, y))
    True
    >>> sr1_update(np.eye(2), s, np.array([1.0, 1.0]), return_info=True).skipped
    True
    """
    M64, s64, y64, dtype = _update_inputs(M, s, y)
    inverse = bool(inverse)
    a, b = (y64, s64) if inverse else (s64, y64)  # the update maps a to b
    v = b - M64 @ a
    nv = float(np.linalg.norm(v))
    if nv == 0.0:
        return _finish_update(M64, dtype, False, 1.0, "sr1", inverse, return_info)
    r = _dtype_rtol(config.SR1_SKIP_RTOL, dtype)
    va = float(v @ a)
    if not abs(va) >= r * float(np.linalg.norm(a)) * nv:
        return _finish_update(M64, dtype, True, 1.0, "sr1", inverse, return_info)
    M64 = M64 + np.outer(v, v) / va
    return _finish_update(M64, dtype, False, 1.0, "sr1", inverse, return_info)


# -- Gauss–Newton, GGN and Fisher ----------------------------------------------------------------


class GaussNewtonOperator(_SymmetricOperator):
    """J^T H_L J as a symmetric LinearOperator (see `gauss_newton_operator`, `fisher_operator`).

    Every product column costs one Jacobian-vector product and one vector-Jacobian product.

    Attributes
    ----------
    output_shape : tuple or None
        Shape of the model output J v (known after the first product for `gauss_newton_operator`).
    seed : int or None
        For `fisher_operator`: ``rng=seed`` draws the same labels. None for `gauss_newton_operator`.
    n_samples : int or None
        For `fisher_operator`: labels drawn per example.
    """

    def __init__(self, n, dtype, jvp, vjp, apply_h, output_shape=None, seed=None, n_samples=None):
        super().__init__(n, dtype, self._ggn_matmat)
        self._jvp, self._vjp, self._apply_h = jvp, vjp, apply_h
        self.output_shape = output_shape
        self.seed = seed
        self.n_samples = n_samples

    def _ggn_matmat(self, X):
        """For each column: v -> J v -> H_L (J v) -> J^T (H_L J v)."""
        n = self.shape[0]
        out_dtype = np.result_type(self.dtype, X.dtype) if X.dtype.kind == "f" else self.dtype
        out = np.empty((n, X.shape[1]), dtype=out_dtype)
        for j in range(X.shape[1]):
            v = np.ascontiguousarray(X[:, j], dtype=out_dtype)
            Jv = _checked_call("jvp", self._jvp, v, self.output_shape, out_dtype)
            if self.output_shape is None:
                self.output_shape = Jv.shape
            out[:, j] = _checked_call("vjp", self._vjp, self._apply_h(Jv), (n,), out_dtype)
        return out


def _square_shape(shape):
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise ValueError(f"`shape` must be a pair (n, n), got {shape!r}")
    n = _validate.positive_int("shape[0]", shape[0])
    m = _validate.positive_int("shape[1]", shape[1])
    if n != m:
        raise ValueError(f"`shape` must be square (n, n), got {tuple(shape)}")
    return n


def _checked_call(name, fn, arg, want_shape, dtype):
    """fn(arg) as an array of ``want_shape`` (any shape when None), finite, in ``dtype``."""
    out = np.asarray(fn(arg))
    if out.dtype.kind not in "fiu":
        raise TypeError(f"`{name}` must return a real array, got dtype {out.dtype}")
    out = out.astype(np.result_type(out.dtype, dtype) if out.dtype.kind == "f" else dtype, copy=False)
    if want_shape is not None and out.shape != tuple(want_shape):
        raise ValueError(f"`{name}` returned shape {out.shape}, expected {tuple(want_shape)}")
    if not np.isfinite(out).all():
        raise ValueError(f"`{name}` returned NaN or Inf")
    return out


def _symmetric_blocks(name, A):
    """A (m, m) or (N, C, C) float array, finite and symmetric within rounding."""
    arr = _validate.float_array(name, A, min_ndim=2, max_ndim=3)
    _validate.square(name, arr)
    a64 = arr.astype(np.float64)
    n = arr.shape[-1]
    norm = float(np.linalg.norm(a64))
    asym = float(np.linalg.norm(a64 - np.swapaxes(a64, -1, -2)))
    if asym > config.SYM_ROUNDOFF * n * float(np.finfo(arr.dtype).eps) * norm:
        raise ValueError(
            f"`{name}` must be symmetric: relative asymmetry {asym / norm:.3g} "
            f"exceeds {config.SYM_ROUNDOFF:g} * n * eps"
        )
    return arr


def gauss_newton_operator(jvp, vjp, loss_hessian, shape, *, dtype=None):
    """The generalized Gauss–Newton matrix J^T H_L J as a LinearOperator, from user products.

    Parameters
    ----------
    jvp : callable
        ``jvp(v)``: the Jacobian of the model outputs with respect to the n parameters times a
        vector v of shape (n,); returns an array of the output shape (any shape, e.g. (N, C)
        logits of a batch).
    vjp : callable
        ``vjp(u)``: the transposed Jacobian times u of the output shape; returns shape (n,).
    loss_hessian : callable or array_like
        The Hessian of the loss with respect to the outputs, acting on the output space: a callable
        ``u -> H_L u`` (same shape as u, symmetric), a symmetric (m, m) array acting on the
        flattened output, or an (N, C, C) stack of symmetric per-example blocks acting on an
        output of shape (N, C). Any 1/N of a mean loss belongs in it.
    shape : tuple of int
        (n, n), the shape of the operator.
    dtype : dtype, optional
        Dtype of the operator. Default: that of ``loss_hessian`` if it is an array, else float64.

    Returns
    -------
    G : GaussNewtonOperator
        Symmetric (n, n) LinearOperator; every product column costs one ``jvp`` and one ``vjp``.
        ``output_shape`` is set after the first product.

    Raises
    ------
    TypeError
        If ``jvp`` or ``vjp`` is not callable, or ``loss_hessian`` is neither callable nor a float array.
    ValueError
        If ``shape`` is not (n, n), ``loss_hessian`` is not symmetric or finite, or (at product time)
        a callable returns the wrong shape or NaN or Inf.

    See Also
    --------
    fisher_operator : the same with H_L replaced by sampled gradient outer products.
    empirical_fisher_operator : the mean outer product of per-example gradients.
    hessian_operator : the full Hessian by differences of gradients.

    Notes
    -----
    For a loss :math:`L(\\theta) = \\ell(f(\\theta))` with outputs :math:`f` and Jacobian
    :math:`J = \\partial f / \\partial \\theta`, the chain rule gives

    .. math::

       \\nabla^2 L = J^T \\nabla^2_f \\ell\\, J + \\sum_k \\frac{\\partial \\ell}{\\partial f_k}
       \\nabla^2_\\theta f_k .

    The GGN keeps the first term. It is positive semidefinite whenever
    :math:`\\nabla^2_f \\ell` is (convex losses), and it equals the Hessian when the model is
    linear in :math:`\\theta` (logistic regression) or the residuals vanish.

    References
    ----------
    .. [1] N. N. Schraudolph, "Fast curvature matrix-vector products for second-order gradient
       descent", Neural Computation 14(7), 2002.
    .. [2] J. Martens, "New insights and perspectives on the natural gradient method", JMLR 21, 2020.
    .. [3] F. Dangel, R. Eschenhagen et al., curvlinops (GGNLinearOperator),
       https://github.com/f-dangel/curvlinops.

    Examples
    --------
    Least squares ``0.5 ||X w - b||^2``: J = X, H_L = I, and the GGN is the Hessian X^T X.

    >>> import numpy as np
    >>> from linalg_lowrank.curvature import gauss_newton_operator
    >>> X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    >>> G = gauss_newton_operator(lambda v: X @ v, lambda u: X.T @ u, lambda u: u, (2, 2))
    >>> bool(np.allclose(G @ np.eye(2), X.T @ X))
    True
    """
    for name, fn in (("jvp", jvp), ("vjp", vjp)):
        if not callable(fn):
            raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}")
    n = _square_shape(shape)
    if callable(loss_hessian):
        op_dtype = np.dtype(np.float64 if dtype is None else dtype)

        def apply_h(u):
            return _checked_call("loss_hessian", loss_hessian, u, u.shape, u.dtype)

    else:
        H = _symmetric_blocks("loss_hessian", loss_hessian)
        op_dtype = H.dtype if dtype is None else np.dtype(dtype)
        if H.ndim == 2:
            m = H.shape[0]

            def apply_h(u):
                if u.size != m:
                    raise ValueError(f"`jvp` returned {u.size} outputs, but `loss_hessian` is {m} x {m}")
                return (H @ u.reshape(-1)).reshape(u.shape)

        else:

            def apply_h(u):
                if u.shape != H.shape[:2]:
                    raise ValueError(f"`jvp` returned shape {u.shape}, but `loss_hessian` has blocks {H.shape}")
                return np.einsum("nij,nj->ni", H, u)

    _validate.float_dtype("dtype", op_dtype)
    return GaussNewtonOperator(n, op_dtype, jvp, vjp, apply_h)


def _check_probs(probs, likelihood):
    P = _validate.float_array("probs", probs, min_ndim=1, max_ndim=2)
    eps = float(np.finfo(P.dtype).eps)
    slack = config.FISHER_PROBS_ROUNDOFF * eps
    if P.min() < -slack or P.max() > 1 + slack:
        raise ValueError(f"`probs` must lie in [0, 1], got values in [{P.min():.6g}, {P.max():.6g}]")
    if likelihood == "categorical":
        if P.ndim != 2:
            raise ValueError(f"`probs` must be 2-D (N, C) for likelihood='categorical', got shape {P.shape}")
        dev = np.abs(P.astype(np.float64).sum(axis=1) - 1.0)
        worst = int(np.argmax(dev))
        if dev[worst] > config.FISHER_PROBS_ROUNDOFF * P.shape[1] * eps:
            raise ValueError(f"rows of `probs` must sum to 1, row {worst} sums to {1.0 + dev[worst]:.17g}")
    return np.clip(P, 0, 1)


def _sample_output_grads(P, likelihood, n_samples, gen):
    """Gradients of -log p(y | f) with respect to the logits f at labels y drawn from the model.

    Returns (N, M, C) for "categorical" (p - e_y) and (N, M, *rest) for "bernoulli" (p - y),
    in the dtype of P.
    """
    if likelihood == "categorical":
        N, C = P.shape
        cdf = np.cumsum(P.astype(np.float64), axis=1)
        u = gen.random((N, n_samples)) * cdf[:, -1:]
        labels = np.minimum((u[:, :, None] >= cdf[:, None, :]).sum(axis=2), C - 1)
        g = np.repeat(P[:, None, :], n_samples, axis=1)
        np.subtract.at(g, (np.arange(N)[:, None], np.arange(n_samples)[None, :], labels), 1)
        return g
    y = gen.random((P.shape[0], n_samples) + P.shape[1:]) < P[:, None].astype(np.float64)
    return (P[:, None] - y).astype(P.dtype)


def fisher_operator(jvp, vjp, probs, shape, *, likelihood="categorical", n_samples=1, reduction="mean", rng=None):
    """The Monte Carlo Fisher (the GGN of sampled labels) as a LinearOperator, from user products.

    Parameters
    ----------
    jvp : callable
        ``jvp(v)``: the Jacobian of the logits with respect to the n parameters times v of shape
        (n,); returns an array of the shape of ``probs``.
    vjp : callable
        ``vjp(u)``: the transposed Jacobian times u of the shape of ``probs``; returns shape (n,).
    probs : (N, C) or (N,) array_like
        The model's predictive distribution at the current parameters: softmax probabilities per
        example (``likelihood="categorical"``, logits of shape (N, C)), or sigmoid probabilities
        of one logit per example (``likelihood="bernoulli"``, shape (N,) or (N, K) for K
        independent binary outputs).
    shape : tuple of int
        (n, n), the shape of the operator.
    likelihood : {"categorical", "bernoulli"}, optional
        Softmax cross-entropy or sigmoid binary cross-entropy on the logits.
    n_samples : int, optional
        Labels M drawn per example from the model's distribution.
    reduction : {"mean", "sum"}, optional
        The loss is the mean (c = 1/N) or the sum (c = 1) of the per-example losses.
    rng : None, int or numpy.random.Generator, optional
        Source of the sampled labels, drawn once when the operator is built, so that every product
        uses the same labels (the operator is a fixed symmetric PSD matrix); ``seed`` records it.

    Returns
    -------
    F : GaussNewtonOperator
        Symmetric positive semidefinite (n, n) LinearOperator in the dtype of ``probs``, with
        ``seed`` and ``n_samples``; every product column costs one ``jvp`` and one ``vjp``.

    Raises
    ------
    TypeError
        If ``jvp`` or ``vjp`` is not callable or ``probs`` is not a float array.
    ValueError
        If ``probs`` is not a probability table (entries in [0, 1], categorical rows summing to
        1), ``shape`` is not (n, n), an option is invalid, or (at product time) a callable returns
        the wrong shape or NaN or Inf.

    See Also
    --------
    gauss_newton_operator : the exact GGN, which the Fisher equals in expectation here.
    empirical_fisher_operator : the same outer products at the observed labels instead.

    Notes
    -----
    With labels :math:`\\tilde y_{nm} \\sim p(y \\mid f_n)` and
    :math:`g_{nm} = \\nabla_{f}(-\\log p(\\tilde y_{nm} \\mid f_n))`
    (:math:`p_n - e_{\\tilde y}` for softmax, :math:`p_n - \\tilde y` for sigmoid),

    .. math::

       F = \\frac{c}{M} \\sum_{n=1}^N \\sum_{m=1}^M J_n^T g_{nm} g_{nm}^T J_n, \\qquad
       \\mathbb{E}[g g^T] = \\operatorname{diag}(p) - p p^T = \\nabla^2_f \\ell ,

    so the expectation of F is the Fisher, which for these exponential-family losses with their
    natural (logit) parameters is the GGN. Each product computes
    :math:`J^T \\big(c/M \\sum_m g_m (g_m^T J v)\\big)`, as curvlinops' Monte Carlo GGN does.

    References
    ----------
    .. [1] J. Martens, "New insights and perspectives on the natural gradient method", JMLR 21, 2020.
    .. [2] F. Kunstner, L. Balles and P. Hennig, "Limitations of the empirical Fisher
       approximation for natural gradient descent", NeurIPS 2019.
    .. [3] F. Dangel, R. Eschenhagen et al., curvlinops (GGNLinearOperator with ``mc_samples``),
       https://github.com/f-dangel/curvlinops.

    Examples
    --------
    Logistic regression: J = X, and the Fisher approaches X^T diag(p (1 - p)) X / N.

    >>> import numpy as np
    >>> from linalg_lowrank.curvature import fisher_operator
    >>> X = np.array([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.0]])
    >>> p = 1 / (1 + np.exp(-X @ np.array([0.2, -0.4])))
    >>> F = fisher_operator(lambda v: X @ v, lambda u: X.T @ u, p, (2, 2), likelihood="bernoulli",
    ...                     n_samples=20000, rng=0)
    >>> exact = X.T @ (X * (p * (1 - p))[:, None]) / 3
    >>> bool(np.allclose(F @ np.eye(2), exact, rtol=0.05))
    True
    """
    for name, fn in (("jvp", jvp), ("vjp", vjp)):
        if not callable(fn):
            raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}")
    n = _square_shape(shape)
    likelihood = _validate.choice("likelihood", likelihood, ("categorical", "bernoulli"))
    reduction = _validate.choice("reduction", reduction, ("mean", "sum"))
    M = _validate.positive_int("n_samples", n_samples)
    P = _check_probs(probs, likelihood)
    gen, seed = _validate.rng(rng)
    g = _sample_output_grads(P, likelihood, M, gen)  # (N, M, *out)
    N = P.shape[0]
    c = (1.0 / N if reduction == "mean" else 1.0) / M
    g2 = g.reshape(N, M, -1)

    def apply_h(u):
        # c sum_m g_m (g_m^T u) per example: the sampled stand-in for H_L u
        u2 = u.reshape(N, -1)
        ip = np.einsum("nmk,nk->nm", g2, u2)
        return (c * np.einsum("nm,nmk->nk", ip, g2)).reshape(u.shape).astype(u.dtype, copy=False)

    return GaussNewtonOperator(n, P.dtype, jvp, vjp, apply_h, output_shape=P.shape, seed=seed, n_samples=M)


def empirical_fisher_operator(per_sample_grads, *, reduction="mean"):
    """The empirical Fisher G^T G / N of per-example gradients as a LinearOperator.

    Parameters
    ----------
    per_sample_grads : (N, n) array_like
        Row i is the gradient of the loss of example i with respect to the n parameters (at the
        observed label).
    reduction : {"mean", "sum"}, optional
        G^T G / N (the loss is a mean over examples) or G^T G (a sum).

    Returns
    -------
    F : LinearOperator
        Symmetric positive semidefinite (n, n) operator in the dtype of the gradients; a product
        block X costs G^T (G X), and G^T G is never formed.

    Raises
    ------
    TypeError
        If ``per_sample_grads`` is not a float32/float64 array.
    ValueError
        If ``per_sample_grads`` is not 2-D, is empty or holds NaN or Inf, or ``reduction`` is not
        "mean" or "sum".

    See Also
    --------
    fisher_operator : the Fisher, with labels drawn from the model instead of the data.

    Notes
    -----
    The empirical Fisher uses the observed labels where the Fisher samples them from the model.
    The two agree only when the model's distribution matches the data's; away from that, the
    empirical Fisher can be a poor curvature model (Kunstner et al., 2019). It is the matrix
    whose diagonal Adam's second moment tracks.

    References
    ----------
    .. [1] F. Kunstner, L. Balles and P. Hennig, "Limitations of the empirical Fisher
       approximation for natural gradient descent", NeurIPS 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.curvature import empirical_fisher_operator
    >>> G = np.array([[1.0, 2.0], [3.0, -1.0]])
    >>> F = empirical_fisher_operator(G)
    >>> bool(np.allclose(F @ np.eye(2), G.T @ G / 2))
    True
    """
    G = _validate.float_array("per_sample_grads", per_sample_grads, min_ndim=2, max_ndim=2)
    reduction = _validate.choice("reduction", reduction, ("mean", "sum"))
    N, n = G.shape
    # G = 2^e G' with max |G'| about 1: G'^T (G' X) cannot overflow where the answer does not
    e = _pow2_exponent(float(np.abs(G).max()))
    Gs = np.ldexp(G, -e).astype(G.dtype, copy=False)
    divisor = N if reduction == "mean" else 1

    def matmat(X):
        out_dtype = np.result_type(G.dtype, X.dtype) if X.dtype.kind == "f" else G.dtype
        Xd = X.astype(out_dtype, copy=False)
        # 2^e applied after each product, not 2^(2e) at the end, which can overflow on its own
        out = np.ldexp(Gs.T @ np.ldexp(Gs @ Xd, e), e)
        if divisor != 1:
            out /= out_dtype.type(divisor)
        return out

    return _SymmetricOperator(n, G.dtype, matmat)
