"""Inverse p-th roots of symmetric positive (semi)definite factors and Shampoo preconditioning.

The workhorse is `SymmetricEig`, one cached eigendecomposition of a symmetric factor that
serves any power, the K-FAC solve (`linalg_lowrank.kronecker.kfac_solve`) and a warm-started
refresh after the factor changes a little. `inverse_pth_root` is the one-shot convenience with
diagnostics; `shampoo_precondition` applies the roots mode by mode without forming a Kronecker
product.
"""

import math
import numbers
import warnings
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import scipy.linalg

from . import _operators, _roots_kernels, _validate, config
from ._scaling import ldexp_float, unscale
from ._threads import blas_single_thread, numba_threads_for
from .results import ConvergenceWarning, Result

__all__ = [
    "InverseRootResult",
    "SymmetricEig",
    "inverse_pth_root",
    "shampoo_precondition",
    "symmetric_eig",
]

_EPS = np.finfo(np.float64).eps
_METHODS = ("auto", "eigh", "newton")
_RIDGE_MODES = ("relative", "absolute")


# --------------------------------------------------------------------------- validation


def _block_exponents(A3):
    """Per-block e with max |A3[b]| * 2^-e in [0.5, 1), or None when every block is safely in range.

    Eigenvalues, eigenvectors, relative residuals and the symmetry test are scale-invariant, so
    blocks near the ends of the float64 range are worked on as 2^-e A (exact) and scaled back.
    """
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(A3), axis=(-2, -1)) if A3.size else np.zeros(A3.shape[:-2])
    e = np.frexp(np.where(np.isfinite(amax), amax, 0.0))[1].astype(np.int64)
    if np.all(np.abs(e) <= np.finfo(np.float64).maxexp // 4):
        return None
    return e


def _symmetric_input(name, A, sym_rtol=None, family="this function"):
    """Adapt a symmetric matrix or stack; return (float64 symmetrized copy, input dtype).

    The symmetry rule is `_operators.symmetry_tolerance` in the relative Frobenius norm that the
    symmetrizing kernel computes in the same pass (``sym_rtol`` overrides the tolerance).
    """
    arr = _operators.as_operator(A, name, stack=True, square=True, family=family).dense(family)
    n = arr.shape[-1]
    A3 = arr.reshape((-1, n, n))
    e = _block_exponents(A3)
    if e is not None:  # the kernel sums squares of entries: 1e300 would overflow, 1e-300 underflow
        A3 = np.ldexp(A3.astype(np.float64), -e[:, None, None])
    A64 = np.empty(arr.shape, dtype=np.float64)
    n_pairs = _roots_kernels.tile_pairs(n)
    asym_sq = np.empty((A3.shape[0], n_pairs))
    sq = np.empty((A3.shape[0], n_pairs))
    with numba_threads_for(A3.size):
        _roots_kernels.symmetrize_stack(A3, A64.reshape((-1, n, n)), asym_sq, sq)
    if e is not None:
        A64 = np.ldexp(A64.reshape(A3.shape), e[:, None, None]).reshape(arr.shape)
    num = np.sqrt(asym_sq.sum(axis=1)).reshape(arr.shape[:-2])
    den = np.sqrt(sq.sum(axis=1)).reshape(arr.shape[:-2])
    rtol = (
        _operators.symmetry_tolerance(n, arr.dtype) if sym_rtol is None else _validate.nonnegative("sym_rtol", sym_rtol)
    )
    bad = num > rtol * den
    if np.any(bad):
        worst = float(np.max(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)))
        raise ValueError(
            f"`{name}` must be symmetric: relative asymmetry ||A - A^T||_F / ||A||_F = {worst:.3g} "
            f"exceeds `sym_rtol` = {rtol:.3g} (pass a larger `sym_rtol` to symmetrize (A + A^T) / 2)"
        )
    return A64, arr.dtype


def _check_p(p):
    _validate.positive("p", p)
    return p  # unconverted: a Fraction stays exact for the coupled Newton path


def _check_psd(name, lam, n, dtype):
    """Raise naming the smallest eigenvalue if lam (descending, (..., n)) proves A indefinite.

    The threshold is in units of the eps of ``dtype``, the dtype A came in: a float32 Gram matrix
    is semidefinite only up to float32 rounding, however accurately it is decomposed afterwards.
    """
    lam_min = lam[..., -1]
    scale = np.max(np.abs(lam), axis=-1)
    tau = config.PSD_NEG_ROUNDOFF * n * np.finfo(dtype).eps * scale
    bad = lam_min < -tau
    if np.any(bad):
        i = np.unravel_index(np.argmin(np.where(bad, lam_min / np.where(scale > 0, scale, 1), np.inf)), bad.shape)
        where = "" if lam_min.ndim == 0 else f" (block {tuple(int(k) for k in i)})"
        raise ValueError(
            f"`{name}` must be positive semidefinite: its smallest eigenvalue is {float(lam_min[i]):.6g}{where}, "
            f"below the roundoff threshold {-float(tau[i]):.3g} = -{config.PSD_NEG_ROUNDOFF:g} n eps ||A||_2 "
            f"(eps of {np.dtype(dtype).name})"
        )


def _absolute_ridge(ridge, ridge_mode, lam_max):
    ridge = _validate.nonnegative("ridge", ridge)
    _validate.choice("ridge_mode", ridge_mode, _RIDGE_MODES)
    if ridge_mode == "relative":
        return ridge * np.maximum(lam_max, 0.0)
    return np.full(np.shape(lam_max), ridge)


def _shifted(name, lam, ridge_abs, n, dtype, *, definite=True):
    """lam + ridge with roundoff negatives clipped; raise if singular to working precision.

    ``definite=False`` (for a positive power) accepts zero eigenvalues: 0^s = 0 for s > 0.
    """
    _check_psd(name, lam, n, dtype)
    ridge_abs = np.asarray(ridge_abs)
    shifted = np.maximum(lam, 0.0) + ridge_abs[..., None]
    if not definite:
        return shifted
    floor = config.PSD_SINGULAR_ROUNDOFF * n * np.finfo(dtype).eps * np.max(np.abs(lam), axis=-1) + ridge_abs
    low = shifted[..., -1]
    if np.any(low <= np.where(ridge_abs > 0, 0.0, floor)):
        i = np.unravel_index(np.argmin(low), low.shape)
        raise ValueError(
            f"`{name}` + ridge is singular to working precision: smallest eigenvalue {float(lam[i][-1]):.3g} "
            f"with ridge {float(ridge_abs[i]):.3g}; pass `ridge` > 0 for a semidefinite factor"
        )
    return shifted


def _eig_power(Q, lam, s, dtype, what):
    """Q diag(lam^s) Q^T in ``dtype`` for lam >= 0, without overflow on the way.

    The powers are formed in log space and scaled per block by a power of two 2^e (exact), so an
    answer whose entries fit in ``dtype`` comes back finite even when lam^s alone, or a product
    behind one entry, would overflow; an answer that does not fit raises a ValueError.
    """
    with np.errstate(divide="ignore"):  # log(0) = -inf: 0^s = 0 for s > 0 (s < 0 never sees a 0)
        logd = s * np.log(lam)
    top = np.max(logd, axis=-1)
    e = np.where(np.isfinite(top), np.floor(top / math.log(2.0)), 0.0).astype(np.int64)
    d = np.exp(logd - (e * math.log(2.0))[..., None])  # in (0, 2] or 0: nothing left to overflow
    X = _from_eig(Q, d)
    big = np.max(np.abs(X), axis=(-2, -1))
    # log2 of the largest entry after the 2^e, compared in log space (2^e itself may not be representable)
    log2_big = np.log2(np.maximum(big, np.finfo(np.float64).tiny)) + e
    if np.any(log2_big > math.log2(np.finfo(dtype).max)):
        i = np.unravel_index(np.argmax(log2_big), e.shape)
        log10 = float(log2_big[i]) * math.log10(2.0)
        where = "" if e.ndim == 0 else f" (block {tuple(int(k) for k in i)})"
        raise ValueError(
            f"{what} overflows {np.dtype(dtype).name}: its largest entry is about 1e{log10:.1f}{where}, "
            f"above {np.finfo(dtype).max:.3g}; the answer is not representable"
        )
    return np.ldexp(X, e[..., None, None]).astype(dtype, copy=False)


# --------------------------------------------------------------------------- the eigendecomposition object


@dataclass(frozen=True, repr=False)
class SymmetricEig(Result):
    """Cached eigendecomposition A = Q diag(eigenvalues) Q^T of a symmetric factor or stack.

    Build it with `symmetric_eig`; refresh it with `SymmetricEig.refresh`. Computation is in
    float64 whatever the input dtype; matrices returned by its methods come back in ``dtype``.

    Attributes
    ----------
    Q : (..., N, N) ndarray
        Orthonormal eigenvectors (float64), columns in the order of ``eigenvalues``.
    eigenvalues : (..., N) ndarray
        Eigenvalues (float64), descending; for a refresh, the Rayleigh quotients diag(Q^T A Q).
    residual : float or ndarray
        ||A Q - Q diag(eigenvalues)||_F / ||A||_2, the a-posteriori residual (exact for a
        refresh, a Gaussian-probe estimate for ``eigh``). It is also the size of the
        off-diagonal part of Q^T A Q, so it bounds the eigenvalue errors (Weyl) and the error of
        any matrix function computed from the cache (see Notes of `inverse_pth_root`).
    method : str
        "eigh" (LAPACK) or "refresh" (warm-started QR steps).
    n_iter : int
        QR steps of the refresh (0 for ``eigh``).
    dtype : numpy.dtype
        dtype of the factor it was computed from, used for returned matrices.
    """

    Q: np.ndarray
    eigenvalues: np.ndarray
    residual: object
    method: str
    n_iter: int
    dtype: np.dtype

    _renamed = {"n_steps": "n_iter"}

    @property
    def n(self):
        """Size N of each factor."""
        return self.eigenvalues.shape[-1]

    def shifted_eigenvalues(self, ridge=0.0, ridge_mode="relative", *, name="A"):
        """Eigenvalues of A + ridge I (roundoff negatives clipped to 0), checked positive.

        Parameters
        ----------
        ridge : float, optional
            Added to the eigenvalues: ``ridge * lambda_max`` when ``ridge_mode="relative"``,
            ``ridge`` itself when ``"absolute"``.
        ridge_mode : {"relative", "absolute"}, optional
            How ``ridge`` is read.
        name : str, optional
            Argument name used in error messages.

        Returns
        -------
        eigenvalues : (..., N) ndarray
            Shifted eigenvalues, descending.

        Raises
        ------
        ValueError
            If an eigenvalue is negative beyond roundoff, or A + ridge I is singular.
        """
        ridge_abs = _absolute_ridge(ridge, ridge_mode, self.eigenvalues[..., 0])
        return _shifted(name, self.eigenvalues, ridge_abs, self.n, self.dtype)

    def cond(self, ridge=0.0, ridge_mode="relative"):
        """Condition number of A + ridge I (2-norm).

        Parameters
        ----------
        ridge : float, optional
            As in `shifted_eigenvalues`.
        ridge_mode : {"relative", "absolute"}, optional
            As in `shifted_eigenvalues`.

        Returns
        -------
        kappa : float or ndarray
            lambda_max / lambda_min of the shifted factor.
        """
        lam = self.shifted_eigenvalues(ridge, ridge_mode)
        return _scalar(lam[..., 0] / lam[..., -1])

    def power(self, s, *, ridge=0.0, ridge_mode="relative"):
        """(A + ridge I)^s for any real power s, from the cached eigendecomposition.

        Parameters
        ----------
        s : float
            The power. Negative powers need A + ridge I positive definite; positive powers need
            it semidefinite (zero eigenvalues map to zero, as in `scipy.linalg.sqrtm`).
        ridge : float, optional
            As in `shifted_eigenvalues`.
        ridge_mode : {"relative", "absolute"}, optional
            As in `shifted_eigenvalues`.

        Returns
        -------
        X : (..., N, N) ndarray
            Q diag((lambda + ridge)^s) Q^T, in ``dtype``.

        Raises
        ------
        ValueError
            If the power is not defined for the eigenvalues (see `shifted_eigenvalues`), ``s`` is
            not finite, or the answer overflows ``dtype``.
        """
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Real):
            raise TypeError(f"`s` must be a finite real number, got {s!r}")
        if not math.isfinite(float(s)):
            raise ValueError(f"`s` must be a finite real number, got {s!r}")
        s = float(s)
        ridge_abs = _absolute_ridge(ridge, ridge_mode, self.eigenvalues[..., 0])
        lam = _shifted("A", self.eigenvalues, ridge_abs, self.n, self.dtype, definite=s < 0)
        return _eig_power(self.Q, lam, s, self.dtype, f"(A + ridge I)^{s:g}")

    def inverse_root(self, p, *, ridge=0.0, ridge_mode="relative"):
        """(A + ridge I)^(-1/p).

        Parameters
        ----------
        p : int, float or fractions.Fraction
            Positive root order.
        ridge : float, optional
            As in `shifted_eigenvalues`.
        ridge_mode : {"relative", "absolute"}, optional
            As in `shifted_eigenvalues`.

        Returns
        -------
        X : (..., N, N) ndarray
            The inverse p-th root, in ``dtype``.
        """
        p = _check_p(p)
        return self.power(-1.0 / float(p), ridge=ridge, ridge_mode=ridge_mode)

    def refresh(self, A_new, *, steps=1, tol=None, sym_rtol=None):
        """Warm-started eigendecomposition of a slightly changed factor (SOAP-style QR steps).

        Each step is one step of subspace iteration from the cached eigenvectors,
        W = A_new Q, Q <- qr(W).Q; then the eigenvalues are the Rayleigh quotients
        diag(Q^T A_new Q) and the residual ||A_new Q - Q diag(lambda)||_F / ||A_new||_2 is
        measured exactly (it is the off-diagonal mass of Q^T A_new Q).

        Parameters
        ----------
        A_new : (..., N, N) array_like
            The updated symmetric factor (same shape as the cached one).
        steps : int, optional
            QR steps (default 1).
        tol : float, optional
            If given and the measured residual of some block exceeds ``tol``, those blocks are
            recomputed with LAPACK (``method`` becomes "eigh" for a single matrix, and
            "refresh+eigh" for a stack with some recomputed blocks).
        sym_rtol : float, optional
            Accepted relative asymmetry, as in `symmetric_eig`.

        Returns
        -------
        eig : SymmetricEig
            The refreshed decomposition; ``residual`` says how good it is.

        Raises
        ------
        ValueError
            If ``A_new`` has another shape, is not symmetric, or holds NaN or Inf.

        Notes
        -----
        The refresh suffices when the factor moved little compared with its spectral scale:
        the residual is then about ||Delta|| / ||A|| times the eigenvector rotation that one
        QR step does not remove. For a root A^(-1/p) the first-order error is bounded by
        residual * kappa / p (divided differences of x^(-1/p) over the spectrum), so compare
        ``residual`` with the accuracy you need, or pass ``tol``.
        """
        A64, dtype = _symmetric_input("A_new", A_new, sym_rtol, "SymmetricEig.refresh")
        if A64.shape != self.Q.shape:
            raise ValueError(f"`A_new` must have shape {self.Q.shape} like the cached factor, got {A64.shape}")
        steps = _validate.positive_int("steps", steps, default=1)
        tol = _validate.positive("tol", tol, allow_none=True)
        batch = A64.shape[:-2]
        n = self.n
        A3 = A64.reshape((-1, n, n))
        Q3 = np.ascontiguousarray(self.Q.reshape((-1, n, n)))
        Qout = np.empty_like(Q3)
        lam = np.empty((A3.shape[0], n))
        res = np.empty(A3.shape[0])
        e = _block_exponents(A3)
        As = A3 if e is None else np.ldexp(A3, -e[:, None, None])  # products and squares stay in range
        with blas_single_thread():
            _roots_kernels.refresh_stack(np.ascontiguousarray(As), Q3, Qout, lam, res, steps)
        scale = np.maximum(np.max(np.abs(lam), axis=1), np.finfo(np.float64).tiny)
        res = res / scale
        if e is not None:
            lam = np.ldexp(lam, e[:, None])
        order = np.argsort(-lam, axis=1, kind="stable")  # keep descending for the next refresh
        lam = np.take_along_axis(lam, order, axis=1)
        Qout = np.take_along_axis(Qout, order[:, None, :], axis=2)
        method = "refresh"
        if tol is not None and np.any(res > tol):
            idx = np.flatnonzero(res > tol)
            lam[idx], Qout[idx], res[idx] = _eigh_with_residual(A3[idx])
            method = "eigh" if A3.shape[0] == 1 else "refresh+eigh"
        return SymmetricEig(
            Q=Qout.reshape(batch + (n, n)),
            eigenvalues=lam.reshape(batch + (n,)),
            residual=_scalar(res.reshape(batch)),
            method=method,
            n_iter=steps,
            dtype=dtype,
        )


def _scalar(x):
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def _eigh_blocks(A3):
    """Descending eigendecomposition of a (b, n, n) float64 stack; LAPACK, numba-parallel over blocks."""
    return _eigh_with_residual(A3, residual=False)[:2]


def _eigh_with_residual(A3, residual=True):
    """(w, Q, res): `_eigh_blocks` and the probe residual of `_probe_residual` (None without ``residual``).

    For a stack of at least ``ROOTS_STACK_PARALLEL_MIN_BLOCKS`` blocks the numba kernel computes
    the residual of each block right after its eigendecomposition, on the same probes.
    """
    e = _block_exponents(A3)
    if e is not None:
        w, Q, res = _eigh_with_residual(np.ldexp(A3, -e[:, None, None]), residual)
        return np.ldexp(w, e[:, None]), Q, res  # the residual is relative: scale-invariant
    b, n, _ = A3.shape
    if b >= config.ROOTS_STACK_PARALLEL_MIN_BLOCKS:
        w = np.empty((b, n))
        Q = np.empty((b, n, n))
        raw = np.empty(b)
        with blas_single_thread():
            _roots_kernels.eigh_stack(np.ascontiguousarray(A3), w, Q, _residual_probes(n), raw)
        return w, Q, (_scale_residual(raw, w) if residual else None)
    if b == 1:
        w, Q = scipy.linalg.eigh(A3[0], check_finite=False, driver="evd")
        w, Q = w[None, ::-1].copy(), Q[None, :, ::-1].copy()
    else:
        w, Q = np.linalg.eigh(A3)
        w, Q = w[:, ::-1].copy(), np.ascontiguousarray(Q[:, :, ::-1])
    return w, Q, (_probe_residual(A3, Q, w) if residual else None)


def _residual_probes(n, rng_seed=0):
    return np.random.default_rng(rng_seed).standard_normal((n, config.ROOTS_RESIDUAL_PROBES))


def _scale_residual(raw, w):
    return raw / np.maximum(np.max(np.abs(w), axis=1), np.finfo(np.float64).tiny)


def _probe_residual(A3, Q3, w):
    """Estimate ||A Q - Q diag(w)||_F / ||A||_2 per block with Gaussian probes (O(n^2) each)."""
    Z = _residual_probes(A3.shape[-1])
    R = A3 @ (Q3 @ Z) - Q3 @ (w[:, :, None] * Z)
    return _scale_residual(np.sqrt(np.sum(R * R, axis=(1, 2)) / Z.shape[1]), w)


def _from_eig(Q, d):
    """Q diag(d) Q^T (float64) for a matrix or a stack."""
    if Q.ndim == 2:
        if np.all(d >= 0):
            # one symmetric rank-n update C C^T, C = Q diag(sqrt d): half the flops of a GEMM
            C = Q * np.sqrt(d)
            # syrk fills the upper triangle of a Fortran-ordered result: its transpose is the
            # C-ordered lower triangle, mirrored in place (no copy, no fancy indexing)
            X = scipy.linalg.blas.dsyrk(1.0, C, lower=0).T
            with numba_threads_for(X.size):
                _roots_kernels.mirror_lower(X)
            return X
        return (Q * d) @ Q.T
    batch = Q.shape[:-2]
    n = Q.shape[-1]
    Q3 = np.ascontiguousarray(Q.reshape((-1, n, n)))
    d2 = np.ascontiguousarray(d.reshape((-1, n)))
    out = np.empty_like(Q3)
    if Q3.shape[0] < config.ROOTS_STACK_PARALLEL_MIN_BLOCKS:
        np.matmul(Q3 * d2[:, None, :], np.swapaxes(Q3, 1, 2), out=out)
    else:
        with blas_single_thread():
            _roots_kernels.scaled_gram_stack(Q3, d2, out)
    return out.reshape(batch + (n, n))


def symmetric_eig(A, *, sym_rtol=None):
    """Eigendecomposition of a symmetric factor (or stack) cached for powers, solves and refreshes.

    Parameters
    ----------
    A : (N, N) or (..., N, N) array_like
        Real symmetric float32 or float64 matrix or stack of matrices. Computed in float64.
    sym_rtol : float, optional
        Accepted relative asymmetry ||A - A^T||_F / ||A||_F before A is symmetrized as
        (A + A^T) / 2; default ``10 * N * eps(A.dtype)`` (the rounding of a BLAS-formed Gram
        matrix).

    Returns
    -------
    eig : SymmetricEig
        Q, eigenvalues (descending) and the a-posteriori residual.

    Raises
    ------
    TypeError
        If A is integer, boolean or complex.
    ValueError
        If A is not square, not symmetric within ``sym_rtol``, empty, or holds NaN or Inf.

    See Also
    --------
    inverse_pth_root : one-shot inverse root with diagnostics.
    linalg_lowrank.kronecker.kfac_solve : accepts `SymmetricEig` factors.

    Notes
    -----
    A stack of factors (blocked Shampoo) is decomposed by a numba kernel that runs LAPACK's
    ``dsyevd`` on every block in parallel, with BLAS limited to one thread meanwhile.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.roots import symmetric_eig
    >>> eig = symmetric_eig(np.diag([4.0, 1.0]))
    >>> eig.eigenvalues
    array([4., 1.])
    >>> eig.power(-0.5)
    array([[0.5, 0. ],
           [0. , 1. ]])
    """
    A64, dtype = _symmetric_input("A", A, sym_rtol, "symmetric_eig")
    batch, n = A64.shape[:-2], A64.shape[-1]
    A3 = A64.reshape((-1, n, n))
    w, Q, res = _eigh_with_residual(A3)
    return SymmetricEig(
        Q=Q.reshape(batch + (n, n)),
        eigenvalues=w.reshape(batch + (n,)),
        residual=_scalar(res.reshape(batch)),
        method="eigh",
        n_iter=0,
        dtype=dtype,
    )


# --------------------------------------------------------------------------- inverse p-th root


@dataclass(frozen=True, repr=False)
class InverseRootResult(Result):
    """(A + ridge I)^(-1/p) and what is known about its accuracy.

    Attributes
    ----------
    root : ndarray
        The inverse p-th root, in the dtype of A.
    p : int, float or Fraction
        The root order asked for.
    method : str
        "eigh" or "newton": what ran.
    ridge : float or ndarray
        The absolute ridge added to A.
    cond : float or ndarray
        Condition number of A + ridge I (from the eigenvalues, or for "newton" the
        Frobenius-norm upper bound ||A + ridge I||_F ||(A + ridge I)^-1||_F).
    residual : float or ndarray
        A-posteriori residual: for "eigh", ||A Q - Q Lambda||_F / ||A||_2 (Gaussian-probe
        estimate); for "newton" with p = a / b, ||Y^a (A + ridge I) - I||_F / sqrt(N) of the
        inverse a-th root Y, measured after the iteration stopped.
    error_estimate : float or ndarray
        First-order estimate of the relative error of ``root`` in float64:
        max(residual, eps) * cond / p for "eigh", residual / p for "newton".
    converged : bool
        True for "eigh"; for "newton", whether the verified residual met its tolerance.
    n_iter : int
        Coupled Newton iterations (0 for "eigh").
    eigenvalues : ndarray or None
        Eigenvalues of A + ridge I, descending ("eigh" only).
    """

    root: np.ndarray
    p: object
    method: str
    ridge: object
    cond: object
    residual: object
    error_estimate: object
    converged: bool
    n_iter: int
    eigenvalues: object = None


def inverse_pth_root(
    A,
    p,
    *,
    ridge=0.0,
    ridge_mode="relative",
    method="auto",
    return_info=False,
    tol=None,
    maxiter=None,
    sym_rtol=None,
):
    """Inverse p-th root (A + ridge I)^(-1/p) of a symmetric positive (semi)definite matrix.

    Parameters
    ----------
    A : (N, N) or (..., N, N) array_like
        Symmetric positive semidefinite float32 or float64 matrix (or stack, "eigh" only).
        Computed in float64, returned in the dtype of A.
    p : int, float or fractions.Fraction
        Positive root order, integer or fractional (p = 4 for Shampoo's matrix case,
        p = 2k for an order-k tensor).
    ridge : float, optional
        Ridge added before the root: ``ridge * lambda_max(A)`` when ``ridge_mode="relative"``
        (default), ``ridge`` when ``"absolute"``. Default 0: A must then be definite.
    ridge_mode : {"relative", "absolute"}, optional
        How ``ridge`` is read.
    method : {"auto", "eigh", "newton"}, optional
        "eigh": one LAPACK eigendecomposition and Q diag((lambda + ridge)^(-1/p)) Q^T.
        "newton": the coupled Newton iteration (matrix products only; p = a / b with
        b <= 64). "auto" is "eigh", which is both faster on CPU and accurate to
        kappa * eps for every p.
    return_info : bool, optional
        Return an `InverseRootResult` with diagnostics instead of the bare matrix.
    tol : float, optional
        "newton" only: stop when ||M_k - I||_F <= tol; default ``sqrt(N) * eps``, stagnation
        also stops. The answer is then verified (see Notes). Validated for every method.
    maxiter : int, optional
        "newton" only: cap on iterations (default 100). Validated for every method.
    sym_rtol : float, optional
        Accepted relative asymmetry, as in `symmetric_eig`.

    Returns
    -------
    root : ndarray or InverseRootResult
        The matrix (A + ridge I)^(-1/p) in the dtype of A, or, with ``return_info=True``, the
        result object (``root``, ``method``, ``ridge``, ``cond``, ``residual``,
        ``error_estimate``, ``converged``, ``n_iter``, ``eigenvalues``).

    Raises
    ------
    TypeError
        If A is integer, boolean or complex, or ``p`` is not a real number.
    ValueError
        If A is not square or not symmetric, holds NaN or Inf, has an eigenvalue below
        -10 N eps ||A||_2 with eps that of the dtype of A (a float32 Gram matrix is semidefinite
        only to float32 rounding; the message names the smallest eigenvalue), is singular with
        ``ridge=0``, if ``p <= 0`` or the options are invalid, or if the root overflows the dtype of
        A (the message names the overflow; representable answers are computed without one).

    Warns
    -----
    ConvergenceWarning
        "newton" only, when the verified residual misses its tolerance; the best iterate is
        returned with ``converged=False``.

    See Also
    --------
    symmetric_eig : keep the eigendecomposition for other powers and warm refreshes.
    shampoo_precondition : apply the roots to a gradient.
    scipy.linalg.fractional_matrix_power : general (Schur-based) reference.

    Notes
    -----
    With :math:`A + rI = Q \\Lambda Q^T` the root is

    .. math:: (A + rI)^{-1/p} = Q\\,\\operatorname{diag}\\big((\\lambda_i + r)^{-1/p}\\big)\\,Q^T.

    A backward-stable eigensolver returns the exact decomposition of :math:`A + E` with
    :math:`\\|E\\| = O(N\\epsilon\\|A\\|)`; since :math:`x^{-1/p}` has relative condition
    number :math:`1/p`, the relative error of the root is about
    :math:`\\kappa\\epsilon/p` with :math:`\\kappa = (\\lambda_{max}+r)/(\\lambda_{min}+r)`.

    The coupled Newton iteration [1]_ for the inverse a-th root, started from
    :math:`X_0 = c^{-1} I`, :math:`M_0 = A / c^a` with :math:`c^a = \\|A\\|_F` (so every
    eigenvalue of :math:`M_0` lies in :math:`(0, 1]`), is

    .. math::

        T_k = \\frac{(a+1) I - M_k}{a}, \\qquad X_{k+1} = X_k T_k, \\qquad
        M_{k+1} = T_k^{\\,a} M_k,

    keeping :math:`M_k = X_k^a A`; it converges quadratically to :math:`X = A^{-1/a}` for every
    integer a. A fractional :math:`p = a/b` uses :math:`(A^{-1/a})^b`. The stopping test on
    :math:`M_k` only sees the iteration's own bookkeeping, so the answer is verified by
    recomputing :math:`\\|X^a A - I\\|_F / \\sqrt{N}` from scratch; ``converged`` is reported
    only if that is below ``max(tol, 10 N eps cond)``.

    References
    ----------
    .. [1] C.-H. Guo and N. J. Higham, "A Schur–Newton method for the matrix p-th root and
       its inverse", SIAM J. Matrix Anal. Appl. 28(3), 2006.
    .. [2] V. Gupta, T. Koren and Y. Singer, "Shampoo: preconditioned stochastic tensor
       optimization", ICML 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.roots import inverse_pth_root
    >>> A = np.diag([16.0, 1.0])
    >>> inverse_pth_root(A, 4)
    array([[0.5, 0. ],
           [0. , 1. ]])
    >>> info = inverse_pth_root(A, 4, method="newton", return_info=True)
    >>> bool(info.converged), bool(np.allclose(info.root, np.diag([0.5, 1.0])))
    (True, True)
    """
    p = _check_p(p)
    method = _validate.choice("method", method, _METHODS)
    _validate.choice("ridge_mode", ridge_mode, _RIDGE_MODES)
    ridge = _validate.nonnegative("ridge", ridge)
    return_info = bool(return_info)
    # every option is checked whatever the method, so a bad value never passes silently
    tol = _validate.positive("tol", tol, allow_none=True)
    maxiter = _validate.positive_int("maxiter", maxiter, default=config.ROOTS_NEWTON_MAXITER)
    if method == "newton":
        A64, dtype = _symmetric_input("A", A, sym_rtol, "inverse_pth_root")
        if A64.ndim != 2:
            raise ValueError(
                f"`A` must be 2-D for method='newton', got shape {A64.shape} (use method='eigh' for stacks)"
            )
        e = _block_exponents(A64[None])
        e = 0 if e is None else int(e[0])
        # (2^e A_s + r I)^(-1/p) = 2^(-e/p) (A_s + 2^-e r I)^(-1/p): the iteration runs on A_s
        ridge_s = ridge if ridge_mode == "relative" else math.ldexp(ridge, -e)
        res = _newton_root(np.ldexp(A64, -e), p, ridge_s, ridge_mode, tol, maxiter, dtype)
        if e:
            fields = dict(res.__dict__)
            fields["root"] = unscale(
                res.root, -e / float(p), np.float64, f"the root (A + ridge I)^(-1/p) for `p` = {p} overflows"
            )
            fields["ridge"] = ldexp_float(res.ridge, e)
            res = InverseRootResult(**fields)
        if not np.max(np.abs(res.root)) <= np.finfo(dtype).max:
            raise ValueError(
                f"the root (A + ridge I)^(-1/p) for `p` = {p} overflows {np.dtype(dtype).name}: its largest entry is "
                f"{np.max(np.abs(res.root)):.3g}; the answer is not representable"
            )
        res = _cast_result(res, dtype)
    else:
        eig = symmetric_eig(A, sym_rtol=sym_rtol)
        ridge_abs = _absolute_ridge(ridge, ridge_mode, eig.eigenvalues[..., 0])
        lam = _shifted("A", eig.eigenvalues, ridge_abs, eig.n, eig.dtype)
        root = _eig_power(eig.Q, lam, -1.0 / float(p), eig.dtype, f"the root (A + ridge I)^(-1/p) for `p` = {p}")
        if not return_info:
            return root
        cond = lam[..., 0] / lam[..., -1]
        err = np.maximum(np.asarray(eig.residual), _EPS) * cond / float(p)
        res = InverseRootResult(
            root=root,
            p=p,
            method="eigh",
            ridge=_scalar(ridge_abs),
            cond=_scalar(cond),
            residual=eig.residual,
            error_estimate=_scalar(err),
            converged=True,
            n_iter=0,
            eigenvalues=lam,
        )
    return res if return_info else res.root


def _cast_result(res, dtype):
    if res.root.dtype == dtype:
        return res
    fields = dict(res.__dict__)
    fields["root"] = res.root.astype(dtype)
    return InverseRootResult(**fields)


def _rational(p):
    frac = Fraction(p).limit_denominator(config.ROOTS_NEWTON_MAX_DENOMINATOR)
    if abs(float(frac) - float(p)) > 4 * _EPS * float(p):
        raise ValueError(
            f"`p` = {p!r} is not a fraction a / b with b <= {config.ROOTS_NEWTON_MAX_DENOMINATOR}, "
            f"which method='newton' needs; use method='eigh'"
        )
    return frac.numerator, frac.denominator


def _newton_root(A64, p, ridge, ridge_mode, tol, maxiter, dtype):
    a, b = _rational(p)
    n = A64.shape[0]
    I = np.eye(n)
    # lambda_max bound for the relative ridge without an eigendecomposition: ||A||_2 <= ||A||_F,
    # estimated more tightly by a few power steps (a ridge is a regularizer, not exact arithmetic).
    lam_max = _lambda_max_estimate(A64)
    ridge_abs = float(_absolute_ridge(ridge, ridge_mode, lam_max))
    Ar = A64 + ridge_abs * I
    _check_definite_cholesky(Ar, A64, ridge_abs, dtype)
    normF = np.linalg.norm(Ar)
    tol_iter = math.sqrt(n) * _EPS if tol is None else tol
    c = normF ** (1.0 / a)
    X = I / c
    M = Ar / normF
    best = (np.inf, X)
    prev = np.inf
    n_iter = 0
    for n_iter in range(1, maxiter + 1):  # noqa: B007 (n_iter is reported)
        T = ((a + 1) * I - M) / a
        X = X @ T
        M = np.linalg.matrix_power(T, a) @ M
        M = 0.5 * (M + M.T)  # M commutes with A and is symmetric in exact arithmetic
        dist = np.linalg.norm(M - I)
        if dist < best[0]:
            best = (dist, X)
        # quadratic convergence halves (far more than halves) the distance once it is small;
        # when it stops doing so, rounding has taken over: stagnation.
        if dist <= tol_iter or (prev < config.ROOTS_NEWTON_TERMINAL and dist > 0.5 * prev):
            break
        prev = dist
    X = best[1]
    X = 0.5 * (X + X.T)
    # Verify from scratch: the iteration's own M_k is bookkeeping, not the answer.
    Xa = np.linalg.matrix_power(X, a)
    R = Xa @ Ar - I
    residual = float(np.linalg.norm(R) / math.sqrt(n))
    cond = float(normF * np.linalg.norm(Xa))
    verify_tol = max(tol if tol is not None else 0.0, 10 * n * _EPS * cond)
    converged = residual <= verify_tol
    if not converged:
        warnings.warn(
            f"inverse_pth_root(method='newton'): verified residual ||X^{a} A - I||_F / sqrt(N) = {residual:.3g} "
            f"exceeds {verify_tol:.3g} after {n_iter} iterations (p={p}, cond <= {cond:.3g}); use method='eigh'",
            ConvergenceWarning,
            stacklevel=3,
        )
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named below, not warned about
        root = np.linalg.matrix_power(X, b) if b > 1 else X
    big = float(np.max(np.abs(root)))
    if not big <= np.finfo(dtype).max:
        raise ValueError(
            f"the root (A + ridge I)^(-1/p) for `p` = {p} overflows {np.dtype(dtype).name}: its largest entry is "
            f"above {np.finfo(dtype).max:.3g}; the answer is not representable"
        )
    return InverseRootResult(
        root=root,
        p=p,
        method="newton",
        ridge=ridge_abs,
        cond=cond,
        residual=residual,
        error_estimate=residual / float(p),
        converged=bool(converged),
        n_iter=n_iter,
        eigenvalues=None,
    )


def _lambda_max_estimate(A64, steps=20):
    x = np.ones(A64.shape[0]) / math.sqrt(A64.shape[0])
    x = x + np.random.default_rng(0).standard_normal(A64.shape[0]) * 1e-3
    lam = 0.0
    for _ in range(steps):
        y = A64 @ x
        lam = float(np.linalg.norm(y))
        if lam == 0:
            return 0.0
        x = y / lam
    return lam


def _check_definite_cholesky(Ar, A64, ridge_abs, dtype):
    try:
        np.linalg.cholesky(Ar)
    except np.linalg.LinAlgError:
        lam = np.linalg.eigvalsh(A64)[::-1]
        _shifted("A", lam, ridge_abs, A64.shape[0], dtype)  # raises naming the smallest eigenvalue
        raise ValueError(
            f"`A` + ridge is numerically indefinite (smallest eigenvalue {lam[-1]:.3g}, ridge {ridge_abs:.3g}); "
            f"use method='eigh' or a larger `ridge`"
        ) from None


# --------------------------------------------------------------------------- Shampoo


def _factor_root(k, F, dim, exponent, ridge, ridge_mode):
    name = f"factors[{k}]"
    if isinstance(F, SymmetricEig):
        eig = F
        if eig.Q.shape != (dim, dim):
            raise ValueError(f"`{name}` must be {dim}x{dim} to match axis {k} of `G`, got {eig.Q.shape}")
    else:
        A64, dtype = _symmetric_input(name, F, family="shampoo_precondition")
        if A64.shape != (dim, dim):
            raise ValueError(f"`{name}` must have shape ({dim}, {dim}) to match axis {k} of `G`, got {A64.shape}")
        w, Q = _eigh_blocks(A64[None])
        eig = SymmetricEig(Q=Q[0], eigenvalues=w[0], residual=0.0, method="eigh", n_iter=0, dtype=dtype)
    ridge_abs = _absolute_ridge(ridge, ridge_mode, eig.eigenvalues[0])
    lam = _shifted(name, eig.eigenvalues, ridge_abs, eig.n, eig.dtype, definite=exponent < 0)
    # float64 whatever the factor's dtype: G is multiplied in float64 and cast once at the end
    return _eig_power(eig.Q, lam, exponent, np.float64, f"(`{name}` + ridge I)^{exponent:g}")


def shampoo_precondition(G, factors, *, ridge=config.SHAMPOO_RIDGE, ridge_mode="relative", exponent=None):
    """Shampoo's preconditioned gradient L^e G R^e, or mode-wise roots for an order-k tensor.

    Parameters
    ----------
    G : (N_1, ..., N_k) array_like
        Gradient, a matrix (k = 2) or an order-k tensor, float32 or float64.
    factors : sequence of k arrays or SymmetricEig
        Symmetric positive semidefinite statistics, one per axis of G, ``factors[i]`` of size
        N_i x N_i (for a matrix: L accumulating G G^T, R accumulating G^T G). Pass
        `SymmetricEig` objects to reuse cached eigendecompositions.
    ridge : float, optional
        Ridge added to every factor before its power (default 1e-6, relative to the factor's
        largest eigenvalue).
    ridge_mode : {"relative", "absolute"}, optional
        How ``ridge`` is read.
    exponent : float, optional
        Power applied to every factor; default -1 / (2k) (-1/4 for a matrix).

    Returns
    -------
    P : ndarray
        G multiplied along axis i by (factors[i] + ridge I)^exponent, same shape and dtype
        as G.

    Raises
    ------
    TypeError
        If G or a factor has an unsupported dtype.
    ValueError
        If the number or shapes of factors do not match G, a factor is not symmetric positive
        semidefinite, or holds NaN or Inf.

    See Also
    --------
    inverse_pth_root : the roots themselves.
    linalg_lowrank.kronecker.kron_matvec : the Kronecker identity used here.

    Notes
    -----
    For a matrix, :math:`\\operatorname{vec}(L^{e} G R^{e}) = (R^{e} \\otimes L^{e})
    \\operatorname{vec}(G)`, so the Kronecker preconditioner is applied with two matrix
    products and never formed. For a tensor, each mode product costs one matrix product with
    the unfolding. The cost is the k roots (one eigendecomposition each, or none when cached)
    plus those k products.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.roots import shampoo_precondition
    >>> G = np.ones((2, 3))
    >>> P = shampoo_precondition(G, [16 * np.eye(2), np.eye(3)], ridge=0.0)
    >>> P
    array([[0.5, 0.5, 0.5],
           [0.5, 0.5, 0.5]])
    """
    Garr = _validate.float_array("G", G, min_ndim=1)
    k = Garr.ndim
    if isinstance(factors, (np.ndarray, SymmetricEig)) or not hasattr(factors, "__len__"):
        raise TypeError("`factors` must be a sequence with one factor per axis of `G`")
    if len(factors) != k:
        raise ValueError(
            f"`factors` must hold {k} factors (one per axis of `G` with shape {Garr.shape}), got {len(factors)}"
        )
    if exponent is None:
        exponent = -1.0 / (2 * k)
    elif (
        isinstance(exponent, (bool, np.bool_)) or not isinstance(exponent, numbers.Real) or not math.isfinite(exponent)
    ):
        raise TypeError(f"`exponent` must be a finite real number, got {exponent!r}")
    roots = [_factor_root(i, F, Garr.shape[i], float(exponent), ridge, ridge_mode) for i, F in enumerate(factors)]
    X = np.asarray(Garr, dtype=np.float64)
    if k == 1:
        out = roots[0] @ X
    elif k == 2:
        out = roots[0] @ X @ roots[1]
    else:
        out = X
        for i, P in enumerate(roots):
            out = np.moveaxis(np.tensordot(P, out, axes=(1, i)), 0, i)
    return np.ascontiguousarray(out).astype(Garr.dtype, copy=False)
