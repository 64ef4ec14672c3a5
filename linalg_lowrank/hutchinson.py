"""Stochastic trace and diagonal estimation from products with a symmetric matrix.

Plain Hutchinson, the variance-reduced Hutch++ (trace) and unbiased Diag++ (diagonal), the
exchangeable XTrace / XDiag estimators, an ``"auto"`` choice made from the probes already drawn,
adaptive stopping on a calibrated error bound, a streaming accumulator for optimizers, and a
finite-difference Hessian operator.
"""

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import scipy.special

from . import _hutchinson_kernels, _operators, _validate, config
from ._threads import blas_single_thread
from .results import ConvergenceWarning, Result

__all__ = [
    "hutchinson_diagonal",
    "hutchinson_trace",
    "hessian_operator",
    "HutchinsonAccumulator",
    "DiagonalEstimate",
    "TraceEstimate",
]

# -- Method names and their requirements ---------------------------------------------------------

_DIAG_METHODS = ("auto", "hutchinson", "diag++", "xdiag")
_TRACE_METHODS = ("auto", "hutchinson", "hutch++", "xtrace")
_DISTRIBUTIONS = ("rademacher", "gaussian")
#: Fewest products each method can run with (a standard error needs two residual samples).
MIN_MATVECS = {"auto": 2, "hutchinson": 2, "hutch++": 4, "diag++": 4, "xtrace": 6, "xdiag": 6}


# -- Results -------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class DiagonalEstimate(Result):
    """Estimate of diag(A) with its per-entry standard error.

    Unpacks as ``diagonal, stderr = hutchinson_diagonal(A)``.

    Attributes
    ----------
    diagonal : ndarray
        The estimate of diag(A), float64, shape (n,).
    stderr : ndarray
        Estimated standard error of each entry of ``diagonal``.
    n_matvecs : int
        Products with A (vectors multiplied) that were used.
    method : str
        The estimator that ran ("hutchinson", "diag++" or "xdiag"; "auto" reports its choice), or
        "exact" when the budget was n products or more (see ``n_matvecs`` of `hutchinson_diagonal`).
    converged : bool
        With ``rtol``: whether ``error_estimate <= rtol`` was reached within the budget; True
        without (the fixed budget was the stopping rule).
    error_estimate : float
        ``2 ||stderr|| / ||diagonal||``, the half-width of an approximate 95% confidence interval
        on the relative error in norm: a statistical estimate, not a certified bound (``stderr``
        is itself estimated from the samples).
    distribution : str
        Probe distribution, "rademacher" or "gaussian".
    seed : int
        ``rng=seed`` reproduces the run.
    """

    diagonal: np.ndarray
    stderr: np.ndarray
    n_matvecs: int
    method: str
    converged: bool
    error_estimate: float
    distribution: str
    seed: int

    _unpack = ("diagonal", "stderr")
    _renamed = {"error_bound": "error_estimate"}


@dataclass(frozen=True, repr=False)
class TraceEstimate(Result):
    """Estimate of tr(A) with its standard error.

    Unpacks as ``trace, stderr = hutchinson_trace(A)``.

    Attributes
    ----------
    trace : float
        The estimate of tr(A).
    stderr : float
        Estimated standard error of ``trace``.
    n_matvecs : int
        Products with A (vectors multiplied) that were used.
    method : str
        The estimator that ran ("hutchinson", "hutch++" or "xtrace"; "auto" reports its choice), or
        "exact" when the budget was n products or more (see ``n_matvecs`` of `hutchinson_trace`).
    converged : bool
        With ``rtol``: whether ``error_estimate <= rtol`` was reached within the budget; True
        without (the fixed budget was the stopping rule).
    error_estimate : float
        ``2 stderr / |trace|``, the half-width of an approximate 95% confidence interval on the
        relative error: a statistical estimate, not a certified bound.
    distribution : str
        Probe distribution, "rademacher" or "gaussian".
    seed : int
        ``rng=seed`` reproduces the run.
    """

    trace: float
    stderr: float
    n_matvecs: int
    method: str
    converged: bool
    error_estimate: float
    distribution: str
    seed: int

    _unpack = ("trace", "stderr")
    _renamed = {"error_bound": "error_estimate"}


# -- Probes and small helpers --------------------------------------------------------------------


def _serial_blas(fn):
    """Run ``fn`` (k x k algebra only) with BLAS on one thread.

    A factorization or product of k x k matrices makes many small BLAS calls; with a thread pool
    each one pays a hand-off between threads, which costs more than the work (measured between
    n x k products, k = 100: a triangular solve 0.2 ms on one thread, 2 to 12 ms on a 2-thread
    OpenBLAS pool). The n x k products keep the pool, as do the user's products.
    """

    @functools.wraps(fn)
    def serial(*args, **kwargs):
        with blas_single_thread():
            return fn(*args, **kwargs)

    return serial


def _probes(gen, n, k, distribution):
    """An (n, k) block of probes: random signs or standard normal entries.

    Random signs are the top bits of full-range uint32 draws. ``gen.integers(0, 2)`` returns
    exactly these bits (Lemire's method for a range of 2 keeps the top bit of one 32-bit draw
    and never rejects), so the stream is the same, without the int64 buffer and float arithmetic.
    """
    if distribution == "rademacher":
        u = gen.integers(0, 2**32, size=(n, k), dtype=np.uint32)
        if u.size < config.HUTCH_NUMBA_MIN_ENTRIES:
            return (u >> 31).astype(np.float64) * 2.0 - 1.0
        signs = np.empty((n, k))
        _hutchinson_kernels.signs_from_top_bit(u.reshape(-1), signs.reshape(-1))
        return signs
    return gen.standard_normal((n, k))


def _t_scale(k):
    """t_{0.975, k-1} / 1.96: turns +-2 standard errors from k samples into a Student-t 95% interval."""
    return scipy.special.stdtrit(k - 1, 0.975) / scipy.special.ndtri(0.975)


def _sample_std(samples, axis=-1):
    """Standard error of the mean of k independent samples along ``axis``, scaled by t_{0.975, k-1} / 1.96.

    The scaling (1.08 for k = 14, 1.01 for k = 100) makes +-2 stderr a Student-t 95% interval,
    which is what a standard error from few residual samples must give to be calibrated.
    """
    k = samples.shape[axis]
    return _t_scale(k) * np.std(samples, axis=axis, ddof=1) / math.sqrt(k)


def _row_moments(X, Y):
    """Row means and sample variances (ddof=1) of X * Y, without forming X * Y."""
    if X.size < config.HUTCH_NUMBA_MIN_ENTRIES:
        samples = X * Y
        return samples.mean(axis=1), samples.var(axis=1, ddof=1)
    X = np.ascontiguousarray(X, dtype=np.float64)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    mean = np.empty(X.shape[0])
    var = np.empty(X.shape[0])
    _hutchinson_kernels.row_mean_var(X, Y, mean, var)
    return mean, var


def _row_stats(X, Y):
    """Row means of the samples X * Y and their standard errors, as `_sample_std` along rows."""
    k = X.shape[1]
    mean, var = _row_moments(X, Y)
    return mean, _t_scale(k) * np.sqrt(var) / math.sqrt(k)


def _rowdot(X, Y):
    """Row-wise dot products sum_j X[i, j] Y[i, j]."""
    return np.einsum("ij,ij->i", X, Y)


def _coldot(X, Y):
    """Column-wise dot products sum_i X[i, j] Y[i, j]."""
    return np.einsum("ij,ij->j", X, Y)


def _max_colnorm(Y):
    """The largest column norm of Y."""
    return math.sqrt(float(_coldot(Y, Y).max()))


def _hcat(X, B):
    """[X, B] without a copy when X has no columns yet."""
    return B if X.shape[1] == 0 else np.hstack([X, B])


@_serial_blas
def _chol_upper_and_inverse(G):
    """R upper triangular with R^T R = G, and R^{-1}; raises LinAlgError unless G is positive definite."""
    R = np.linalg.cholesky(G).T
    return R, scipy.linalg.solve_triangular(R, np.eye(R.shape[0]), check_finite=False)


@_serial_blas
def _svdvals(R):
    return np.linalg.svd(R, compute_uv=False)


def _cholqr2(Y, scale):
    """Y = Q R by two passes of Cholesky QR, or None where that is not accurate or drops a direction.

    Two passes give Q orthonormal to rounding while cond(Y) < ~eps^-1/2 (Yamamoto et al., 2015);
    here Q is kept only if cond(R) <= config.HUTCH_CHOLQR_MAX_COND and every singular value is
    above the rank tolerance, which is when `_orth_new`'s SVD would keep every direction too
    (same span).
    Four n x k by k x k products instead of a Householder QR or an SVD of the n x k block.
    """
    n, k = Y.shape
    if k == 0 or k > n:
        return None
    try:
        R1, R1inv = _chol_upper_and_inverse(Y.T @ Y)
        Q = Y @ R1inv
        R2, R2inv = _chol_upper_and_inverse(Q.T @ Q)
        Q = Q @ R2inv
    except np.linalg.LinAlgError:
        return None
    R = R2 @ R1
    rank_floor = config.HUTCH_SKETCH_RANK_RTOL * max(scale, 1e-300)
    # ||R||_F >= s_max and 1 / ||R^-1||_F <= s_min: when these bounds already pass, so do the
    # exact singular values, and the SVD of R (about 1 ms at k = 100) is not needed
    s_max, s_min = np.linalg.norm(R), 1.0 / np.linalg.norm(R1inv @ R2inv)
    if np.isfinite(s_max) and s_min * config.HUTCH_CHOLQR_MAX_COND >= s_max and s_min > rank_floor:
        return Q, R
    s = _svdvals(R)
    if not (np.isfinite(s).all() and s[-1] * config.HUTCH_CHOLQR_MAX_COND >= s[0] and s[-1] > rank_floor):
        return None
    return Q, R


def _orth_new(Q, Yb, scale):
    """Orthonormal basis of the part of Yb outside range(Q), dropping directions below the rank tolerance."""
    R = Yb
    if Q.shape[1]:
        R = Yb - Q @ (Q.T @ Yb)
        R = R - Q @ (Q.T @ R)  # twice is enough (Kahan–Parlett)
    if R.shape[1] == 0:
        return R
    room = Q.shape[0] - Q.shape[1]
    if R.shape[1] <= room:
        fast = _cholqr2(R, scale)  # well-conditioned and full rank: BLAS-3 instead of an SVD
        if fast is not None:
            return fast[0]
    U, s, _ = np.linalg.svd(R, full_matrices=False)
    keep = s > config.HUTCH_SKETCH_RANK_RTOL * max(scale, 1e-300)
    return U[:, keep][:, :room]


# -- Plain Hutchinson ----------------------------------------------------------------------------


class _Plain:
    """Independent probes Omega and Y = A Omega: samples omega * A omega and omega^T A omega."""

    def __init__(self, n):
        self.Omega = np.empty((n, 0))
        self.Y = np.empty((n, 0))

    def add(self, Omega, Y):
        self.Omega = _hcat(self.Omega, Omega)
        self.Y = _hcat(self.Y, Y)

    def diagonal(self):
        return _row_stats(self.Omega, self.Y)

    def trace(self):
        samples = _coldot(self.Omega, self.Y)
        return float(samples.mean()), float(_sample_std(samples))


# -- Hutch++ and unbiased Diag++ -----------------------------------------------------------------


class _PlusPlus:
    """Sketch Q of range(A S), Z = A Q, and Hutchinson on P A P (P = I - Q Q^T) with fresh probes.

    diag(A) = 2 diag(Q Q^T A) - diag(Q Q^T A Q Q^T) + diag(P A P) holds exactly for symmetric A;
    the published Diag++ keeps only the last two terms (it drops the cross terms 2 diag(Q Q^T A P)).
    The first terms are fixed given Q and the last is estimated without bias by probes independent
    of Q, so the sample standard error of the residual samples is a valid conditional one.
    """

    def __init__(self, op, gen, distribution, k_sketch):
        n = op.n
        S = _probes(gen, n, k_sketch, distribution)
        Ys = op.matmat(S)
        self.Q = _orth_new(np.empty((n, 0)), Ys, np.abs(Ys).max() * math.sqrt(n))
        self.Z = op.matmat(self.Q)
        H = self.Q.T @ self.Z
        self.H = 0.5 * (H + H.T)
        self.base_diag = 2.0 * _rowdot(self.Q, self.Z) - _rowdot(self.Q @ self.H, self.Q)
        self.base_trace = float(np.trace(self.H))
        self.G = np.empty((n, 0))
        self.V = np.empty((n, 0))  # A P G

    def project(self, X):
        return X - self.Q @ (self.Q.T @ X)

    def add(self, G, V):
        self.G = _hcat(self.G, G)
        self.V = _hcat(self.V, V)

    def diagonal(self):
        mean, se = _row_stats(self.G, self.project(self.V))
        return self.base_diag + mean, se

    def trace(self):
        samples = _coldot(self.project(self.G), self.V)
        return self.base_trace + float(samples.mean()), float(_sample_std(samples))


# -- XTrace and XDiag ----------------------------------------------------------------------------


class _Exchangeable:
    """Probes Omega, Y = A Omega = Q C, Z = A Q: the leave-one-out estimators of Epperly, Tropp, Webber.

    For probe i the subspace is range(Y without column i) = Q (s_i)^perp, where s_i is column i of
    C^{-T} normalized (it is orthogonal to every other column of C); so every leave-one-out
    projector, and its product with A, comes from Q and Z without further products.
    """

    def __init__(self, op):
        n = op.n
        self.op = op
        self.Omega = np.empty((n, 0))
        self.Y = np.empty((n, 0))
        self.Q = np.empty((n, 0))
        self.Z = np.empty((n, 0))
        self.scale = 0.0
        self._C = None  # Q^T Y, kept when the factorization gives it

    def add(self, Omega, Y, qr=None):
        """Append probes and their products; extend Q and Z (products only for new directions).

        ``qr``: a factorization ``(Q, R)`` of Y from `_cholqr2` at this state's scale, already
        computed by the caller (the "auto" pilot); only valid for the first block.
        """
        first = self.Omega.shape[1] == 0  # C = R below needs Y to be this block alone
        self.Omega = _hcat(self.Omega, Omega)
        self.Y = _hcat(self.Y, Y)
        self.scale = max(self.scale, _max_colnorm(Y))
        if first and qr is None:
            qr = _cholqr2(Y, self.scale)
        if first and qr is not None:
            Qb, self._C = qr  # Y = Q R: C = Q^T Y = R
        else:
            Qb = _orth_new(self.Q, Y, self.scale)
            self._C = None
        self.Q = _hcat(self.Q, Qb)
        self.Z = _hcat(self.Z, self.op.matmat(Qb))

    @property
    def C(self):
        """Q^T Y (Y = Q C when A has full rank on the probes)."""
        if self._C is None:
            self._C = self.Q.T @ self.Y
        return self._C

    # small k-space quantities
    def _parts(self):
        """(C, H, W, T, omy): C = Q^T Y, H = sym(Q^T Z), W = Q^T Omega, T = Z^T Omega, omy_i = omega_i . y_i.

        T is C: for symmetric A, Z^T omega = Q^T A omega = Q^T y, which saves an n x k x k product.
        (For an operator that is not quite symmetric, the exact expansion of u^T A u has
        -c.(Z^T omega) - c.(Q^T y); either doubled term is off by the same O(||A - A^T||).)
        """
        Q, Z, Om = self.Q, self.Z, self.Omega
        H = Q.T @ Z
        H = 0.5 * (H + H.T)
        C = self.C
        return C, H, Q.T @ Om, C, _coldot(Om, self.Y)

    @property
    def generic(self):
        return self.Q.shape[1] == self.Omega.shape[1]

    def _deficient_dirs(self):
        """Leave-one-out directions (columns; 0 where Pi_i = Pi) when the products have rank r < k.

        If the probes have rank above r, A itself maps some of them to 0: with probes in general
        position the products then span range(A) and every Pi_i is Pi (the sketch holds A and the
        answer is exact). If the probes have rank r themselves (random signs repeat in small n),
        A need not have low rank at all, and each leave-one-out subspace is worked out.
        """
        r, k = self.C.shape
        s = np.linalg.svd(self.Omega, compute_uv=False)
        probe_rank = int(np.sum(s > max(self.Omega.shape) * np.finfo(np.float64).eps * s[0]))
        if probe_rank > r:
            return np.zeros((r, k))
        return _deficient_leave_one_out_dirs(self.C)

    # -- trace --
    def trace(self):
        C, H, W, T, omy = self._parts()
        k = C.shape[1]
        if not self.generic:  # fewer directions than probes: see _deficient_leave_one_out_dirs
            base = float(np.trace(H)) + omy - 2.0 * _coldot(T, W) + _coldot(W, H @ W)  # Pi_i = Pi for all i
            S = self._deficient_dirs()
            # tr(Pi_i A Pi_i) + u^T A u with Pi_i = Pi - q q^T, q = Q s_i, u = (I - Pi_i) omega_i
            sHs, sW = _coldot(S, H @ S), _coldot(S, W)
            ests = base - sHs + 2.0 * sW * (_coldot(S, T) - _coldot(S, H @ W)) + sW * sW * sHs
            return float(ests.mean()), float(_sample_std(ests))
        ests = _xtrace_ests(C, H, W, T, omy)
        est = float(ests.mean())
        deleted = _xtrace_deleted(C, H, W, T, omy)
        if deleted is None:
            deleted = _xtrace_deleted_qr(C, H, W, T, omy)
        delta = ests[None, :] - deleted  # delta[j, l]: what probe j adds to the estimate of probe l
        np.fill_diagonal(delta, 0.0)
        dev2 = float(np.sum((ests - est) ** 2))
        return est, float(_exchangeable_stderr(dev2, float(np.sum(delta * delta.T)), k))

    # -- diagonal --
    def diagonal(self):
        Q, Z, Om = self.Q, self.Z, self.Omega
        k = Om.shape[1]
        if not self.generic:  # fewer directions than probes: see _deficient_leave_one_out_dirs
            C = self.C
            S = self._deficient_dirs()
            QS = Q @ S
            # diag(Pi_i A) + omega_i * (I - Pi_i) y_i with Pi_i = Pi - q q^T, q = Q s_i
            ests = _rowdot(Q, Z)[:, None] - QS * (Z @ S) + Om * (self.Y - Q @ C) + Om * QS * _coldot(S, C)
            return ests.mean(axis=1), _sample_std(ests, axis=1)
        C = self.C
        D, nu = _leave_one_out_dirs(C)
        S = D / nu
        QS, ZS = Q @ S, Z @ S
        V = np.divide(Om, nu)
        V -= ZS  # (omega_l - Z d_l) / nu_l
        R = QS * V  # column l: the estimate of probe l less rowdot(Q, Z)
        mean = R.mean(axis=1)
        est = _rowdot(Q, Z) + mean
        R -= mean[:, None]
        dev2 = _rowdot(R, R)
        cross = _xdiag_cross(QS, ZS, V, S.T @ S)
        if cross is None:
            cross = _xdiag_cross_qr(Q, Z, Om, C)
        return est, _exchangeable_stderr(dev2, cross, k)


def _deficient_leave_one_out_dirs(C):
    """Leave-one-out directions when the products Y = Q C have rank r below the k probes.

    Column i is the unit vector s_i of range(C) orthogonal to every other column of C when
    removing probe i lowers the rank (range(Y without y_i) = Q s_i^perp), and 0 when it does not
    (the other products already span range(Q)). The probes whose removal costs a direction give
    other estimates than the rest, and their spread says that the answer is not exact.
    O(k^2 r^2): used only when the probes themselves are dependent.
    """
    r, k = C.shape
    S = np.zeros((r, k))
    s_max = np.linalg.norm(C, 2)
    floor = config.HUTCH_SKETCH_RANK_RTOL * max(s_max, 1e-300)
    for i in range(k):
        U, sv, _ = np.linalg.svd(np.delete(C, i, axis=1), full_matrices=True)
        if sv.size < r or sv[r - 1] <= floor:
            S[:, i] = U[:, r - 1]
    return S


def _exchangeable_stderr(dev2, cross, k):
    """Standard error of XTrace / XDiag from ``dev2`` = sum_i (e_i - e)^2 and ``cross`` = sum_{i != j} D_ij D_ji.

    The estimate is the mean e of the k leave-one-out estimates e_i, and e_i - theta = eps_i has
    E[eps_i | all probes but i] = 0: given the other probes, Pi_i is fixed and omega_i fresh. So
    Var(e) = E[(sum_i eps_i)^2] / k^2 has two parts. The squares: sum_i eps_i^2 = dev2 + k (e -
    theta)^2, so E[sum_i eps_i^2] = E[dev2] + k Var(e). The products (i != j): let e_i^(-j) be
    the estimate of probe i when probe j is not drawn at all, and D_ij = e_i - e_i^(-j) what probe
    j adds to it, so eps_i = eps_i^(-j) + D_ij. e_i^(-j) does not depend on omega_j, so
    E[eps_i^(-j) eps_j] = 0; likewise E[D_ij | all probes but i] = 0 and eps_j^(-i) does not
    depend on omega_i, so E[D_ij eps_j^(-i)] = 0; what is left is E[eps_i eps_j] = E[D_ij D_ji].
    Together,

        Var(e) = (E[dev2] + sum_{i != j} E[D_ij D_ji]) / (k (k - 1)),

    and the observed dev2 + cross estimates it without bias, whatever the spectrum. The first part
    alone is the leave-one-out spread of the paper (Epperly, Tropp and Webber), which under-covers
    because the products are positive (it covered 68-94% at a nominal 95% on decaying spectra).
    The delete-one jackknife, on the other hand, counts the products twice and adds the squares
    of the D_ij (its Efron–Stein bias): up to 3 times too wide in standard error.

    With few probes the estimate of the products is noisy and can come out negative; as the
    products are zero or positive on every matrix measured (positive for the trace and on
    decaying spectra, near zero for indefinite ones), a negative estimate is replaced by zero:
    the positive part, which lowers the mean squared error of the variance estimate. The
    result is scaled by t_{0.975, k-1} / 1.96 like `_sample_std`, so that +-2 standard errors is a
    Student-t 95% interval. Works elementwise on arrays (XDiag: one variance per entry).
    """
    return _t_scale(k) * np.sqrt((dev2 + np.maximum(cross, 0.0)) / (k * (k - 1)))


@_serial_blas
def _leave_one_out_dirs(C):
    """Columns of C^{-T} (G) and their norms: s_i = G[:, i] / nu_i spans range(C_{-i})^perp."""
    G = np.linalg.solve(C.T, np.eye(C.shape[0]))
    nu = np.linalg.norm(G, axis=0)
    return G, nu


@_serial_blas
def _xtrace_ests(C, H, W, T, omy):
    """The k leave-one-out estimates of XTrace from k-space quantities (Y = Q C, W = Q^T Omega, T = Z^T Omega).

    est_i = tr(H) - s_i^T H s_i + u_i^T A u_i with u_i = omega_i - Q c_i, c_i = w_i - s_i (s_i . w_i),
    and u^T A u = omega^T A omega - 2 c^T (Z^T omega) + c^T H c.
    """
    G, nu = _leave_one_out_dirs(C)
    S = G / nu
    c = W - S * _coldot(S, W)
    return float(np.trace(H)) - _coldot(S, H @ S) + omy - 2.0 * _coldot(T, c) + _coldot(c, H @ c)


@_serial_blas
def _xtrace_deleted_qr(C, H, W, T, omy):
    """XTrace's leave-one-out estimates without each probe: entry [j, l] is that of probe l when probe j is not drawn.

    One QR basis of C_{-j} per j, O(k^4); the reference for `_xtrace_deleted` and its fallback when
    that one is not accurate. The diagonal is zero.
    """
    k = C.shape[1]
    out = np.zeros((k, k))
    for j in range(k):
        keep = np.arange(k) != j
        B, Rj = np.linalg.qr(C[:, keep])
        out[j, keep] = _xtrace_ests(Rj, B.T @ H @ B, B.T @ W[:, keep], B.T @ T[:, keep], omy[keep])
    return out


@_serial_blas
def _xtrace_deleted(C, H, W, T, omy):
    """`_xtrace_deleted_qr` in closed form, O(k^3); None if rounding could be amplified.

    With d_l the columns of D = C^{-T}: deleting probe j leaves the subspace u^perp, u = d_j / |d_j|,
    and in it the dual direction of probe l is e_l = d_l - rho d_j (rho = d_j.d_l / d_j.d_j), of norm
    nu^2 = |d_l|^2 - rho d_j.d_l. XTrace's estimate for probe l != j is then
    tr(H) - u^T H u - e^T H e / nu^2 + omega_l^T A omega_l - 2 c.t_l + c^T H c with
    c = w_l - u (u.w_l) - e (e.w_l) / nu^2 = w_l - gamma d_l - delta d_j, and every term is an
    entry of a k x k product of D, H, W and T. The terms cancel by up to |d_l|^2 / nu^2, which is
    checked against config.HUTCH_STDERR_MAX_AMPLIFICATION.
    """
    k = C.shape[1]
    D, _ = _leave_one_out_dirs(C)
    Gam = D.T @ D
    g = np.diag(Gam).copy()
    HD = H @ D
    GH = D.T @ HD
    gh = np.diag(GH).copy()
    P = D.T @ W  # P[m, l] = d_m . w_l
    DT = D.T @ T  # DT[m, l] = d_m . t_l
    WHD = W.T @ HD  # WHD[l, m] = w_l^T H d_m
    wt = _coldot(W, T)
    whw = _coldot(W, H @ W)
    # entry [j, l]: probe j deleted, probe l kept
    rho = Gam / g[:, None]
    nu2 = g[None, :] - Gam * rho
    off = ~np.eye(k, dtype=bool)
    if (
        not np.all(nu2[off] > 0.0)
        or np.max(g[None, :] / np.where(off, nu2, np.inf)) > config.HUTCH_STDERR_MAX_AMPLIFICATION
    ):
        return None
    nu2[~off] = 1.0  # the deleted probe itself: excluded below
    eHe = gh[None, :] - 2.0 * rho * GH + rho**2 * gh[:, None]
    gam = (np.diag(P)[None, :] - rho * P) / nu2
    delta = P / g[:, None] - gam * rho
    ct = wt[None, :] - gam * np.diag(DT)[None, :] - delta * DT
    cHc = (
        whw[None, :]
        + gam**2 * gh[None, :]
        + delta**2 * gh[:, None]
        - 2.0 * gam * np.diag(WHD)[None, :]
        - 2.0 * delta * WHD.T
        + 2.0 * gam * delta * GH
    )
    est = float(np.trace(H)) - (gh / g)[:, None] - eHe / nu2 + omy[None, :] - 2.0 * ct + cHc
    est[~off] = 0.0
    return est


def _xdiag_probe_estimates(Q, Z, C, Omega):
    """XDiag's k leave-one-out estimates, (n, k): column i is diag(Pi_i A) + omega_i * (I - Pi_i) A omega_i.

    Pi_i = Q (I - s_i s_i^T) Q^T, and (I - Pi_i) y_i = Q s_i (s_i . c_i) = Q s_i / nu_i because
    y_i = Q c_i and G^T C = I. XDiag is their mean.
    """
    G, nu = _leave_one_out_dirs(C)
    QG = Q @ G
    return _rowdot(Q, Z)[:, None] + QG * (Omega - Z @ G) / nu**2


def _xdiag_cross_qr(Q, Z, Omega, C):
    """sum_{i != j} D_ij * D_ji per entry (see `_exchangeable_stderr`), from XDiag without each probe in a QR basis.

    D_ij = e_i - e_i^(-j): e_i^(-j) are `_xdiag_probe_estimates` of the other probes with Q B_j,
    Z B_j, R_j for C_{-j} = B_j R_j. O(n k^3) in row blocks of at most 2^22 / k^2 rows; the
    reference for `_xdiag_cross` and its fallback when that one is not accurate.
    """
    n, k = Omega.shape
    full = _xdiag_probe_estimates(Q, Z, C, Omega)
    keeps = [np.arange(k) != j for j in range(k)]
    bases = [np.linalg.qr(C[:, keep]) for keep in keeps]
    out = np.empty(n)
    step = max(1, (1 << 22) // (k * k))
    for a in range(0, n, step):
        rows = slice(a, min(n, a + step))
        Dl = np.zeros((rows.stop - a, k, k))  # Dl[r, i, j] = D_ij in row r
        for j, (keep, (B, Rj)) in enumerate(zip(keeps, bases, strict=True)):
            without = _xdiag_probe_estimates(Q[rows] @ B, Z[rows] @ B, Rj, Omega[rows][:, keep])
            Dl[:, keep, j] = full[rows][:, keep] - without
        out[rows] = np.einsum("rij,rji->r", Dl, Dl)
    return out


def _xdiag_cross(QS, ZS, V, Rho):
    """`_xdiag_cross_qr` in closed form, six O(n k^2) products; None if rounding could be amplified.

    Takes QS = Q S, ZS = Z S, V = Omega / nu - Z S (S = C^{-T} with unit columns s_l, nu the
    column norms) and Rho = S^T S. Without probe j, probe l's subspace loses span(s_j, s_l)
    instead of s_l; projecting onto that plane with its 2 x 2 Gram matrix gives, entrywise,

        D_lj = (a_j - rho a_l) (b_j + rho c_l) / (1 - rho^2),

    a = QS, b = ZS, c = V, rho = Rho[j, l] (D_lj = a_j b_j when s_j is orthogonal to s_l: probe
    l then loses exactly the direction Q s_j of the sketch). The product D_lj D_jl has 16 terms,
    each (a monomial in row entries of probe j) (coefficient(rho)) (a monomial of probe l);
    summed over j != l they pair up into seven rowdot(X M, Y) with k x k coefficient matrices
    M, one of which (monomial 1 for probe l) folds into the diagonal of another. Row blocks of
    config.HUTCH_STDERR_BLOCK_ENTRIES keep the n x k temporaries in cache. Rounding is amplified
    by up to 1 / (1 - rho^2), checked against config.HUTCH_STDERR_MAX_AMPLIFICATION.
    """
    n, k = QS.shape
    off = ~np.eye(k, dtype=bool)
    r2 = np.where(off, Rho * Rho, 0.0)
    sin2 = 1.0 - r2
    if not np.all(sin2 > 0.0) or np.max(1.0 / sin2) > config.HUTCH_STDERR_MAX_AMPLIFICATION:
        return None
    W = np.where(off, 1.0 / (sin2 * sin2), 0.0)
    rho = Rho * W  # rho / (1 - rho^2)^2, zero on the diagonal
    M_ab = (1.0 + r2) * W  # (ab)_j (ab)_l
    M_ac = r2 * M_ab  # (ac)_j (ac)_l
    M_aab = -2.0 * rho  # (a^2 b)_j b_l
    M_abc = 2.0 * (1.0 + r2) * rho  # (abc)_j a_l, and on the diagonal (a^2 bc)_j 1_l
    M_abc[~off] = -2.0 * np.sum(r2 * W, axis=1)
    M_bc = -2.0 * r2 * W  # (bc)_j (a^2)_l
    M_aac = r2 * M_aab  # (a^2 c)_j c_l
    out = np.empty(n)
    step = max(1, config.HUTCH_STDERR_BLOCK_ENTRIES // k)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        a, b, c = QS[rows], ZS[rows], V[rows]
        ab, ac, aa = a * b, a * c, a * a
        acc = ab @ M_ab
        acc *= ab
        for X, M, Y in ((ac, M_ac, ac), (aa * b, M_aab, b), (ab * c, M_abc, a), (b * c, M_bc, aa), (aa * c, M_aac, c)):
            term = X @ M
            term *= Y
            acc += term
        out[rows] = acc.sum(axis=1)
    return out


# -- Drivers -------------------------------------------------------------------------------------


def _check_common(A, n_matvecs, method, methods, distribution, rtol, n):
    method = _validate.choice("method", method, methods)
    distribution = _validate.choice("distribution", distribution, _DISTRIBUTIONS)
    n_matvecs = _validate.positive_int("n_matvecs", n_matvecs, default=config.HUTCH_DEFAULT_N_MATVECS)
    rtol = _validate.positive("rtol", rtol, allow_none=True)
    # plain Hutchinson never uses symmetry (E[z * A z] = diag(A) for every square A): no check
    op = _symmetric_operator(A, n, check_symmetric=method != "hutchinson")
    minimum = MIN_MATVECS[method]
    if n_matvecs < min(minimum, op.n):  # a budget of n is always enough: it buys the exact answer
        raise ValueError(f"`n_matvecs` must be at least {minimum} for method={method!r}, got {n_matvecs}")
    return op, n_matvecs, method, distribution, rtol


def _symmetric_operator(A, n, name="A", check_symmetric=True):
    """The adapter's `SymmetricOperator`, a large dense array checked in one pass by `symmetry_scan`.

    Same rule and messages as `_operators.as_operator` (dtype, shape, finite, the symmetry rule
    `_operators.symmetry_tolerance` on the largest entry), but the finiteness and symmetry checks
    share a single cache-blocked read of A instead of separate full-size temporaries and a
    transposed difference. Without ``check_symmetric`` a dense A is not read at all beyond the
    products: a product that is not finite then looks for the NaN or Inf in A, so the message
    still names its index.
    """
    op = _operators.as_operator(
        A, name, square=True, n=n, allow_callable=True, family="hutchinson_diagonal/hutchinson_trace"
    )
    if not (check_symmetric and op.kind == "dense" and op.array.size >= config.HUTCH_NUMBA_MIN_ENTRIES):
        if check_symmetric:
            _operators.check_symmetry(op)
        return _operators.as_symmetric_operator(A, name, op=op)
    arr = op.array
    base = np.asarray(arr, dtype=np.float64)
    if base.flags.c_contiguous:
        scan = base
    elif base.flags.f_contiguous:
        scan = base.T  # same entries, same symmetry
    else:
        scan = np.ascontiguousarray(base)
    amax, asym, finite = _hutchinson_kernels.symmetry_scan(scan, config.HUTCH_SYMMETRY_TILE)
    if not finite:
        _validate.finite(name, arr)  # raises, naming the first NaN or Inf
    n = arr.shape[0]
    if asym > _operators.symmetry_tolerance(n, arr.dtype) * amax:
        amax = float(np.abs(base).max())  # amax came from the entries on and above the diagonal tiles
    _operators.require_symmetric(name, asym, amax, n, arr.dtype)
    return _operators.as_symmetric_operator(A, name, op=op)


def _relative(kind, est, stderr):
    if kind == "trace":
        size, err = abs(est), stderr
    else:
        size, err = float(np.linalg.norm(est)), float(np.linalg.norm(stderr))
    if err == 0.0:
        return 0.0
    return config.HUTCH_CONFIDENCE_Z * err / size if size > 0 else math.inf


def _auto_choice(kind, plain, k_total, m_total, distribution):
    """Predict, from the pilot probes alone, whether deflation beats plain Hutchinson with the whole budget.

    Plain: the sample variance of the pilot's samples over ``m_total`` probes. Sketched: the
    residual energy tau = mean ||(I - Pi_i) y_i||^2, an unbiased estimate of ||(I - Pi) A||_F^2,
    which bounds the variance of a residual sample (twice for the trace and for Gaussian probes),
    over ``k_total`` probes. Returns ``(deflate, qr)``: the choice, and the `_cholqr2`
    factorization of the pilot's products (None if it was not accurate) for `_Exchangeable.add`.
    """
    Om, Y = plain.Omega, plain.Y
    k = Om.shape[1]
    if kind == "trace":
        var_plain = float(np.var(_coldot(Om, Y), ddof=1)) / m_total
    else:
        var_plain = float(np.sum(_row_moments(Om, Y)[1])) / m_total
    # the factorization is handed on to XTrace / XDiag, which need the same one
    qr = _cholqr2(Y, _max_colnorm(Y))
    if qr is not None:
        R = qr[1]  # well-conditioned and full rank
    else:
        Q, R = np.linalg.qr(Y)
        s = np.linalg.svd(R, compute_uv=False)
        if s[-1] <= config.HUTCH_SKETCH_RANK_RTOL * max(s[0], 1e-300) or k > Q.shape[0]:
            R = None  # rank below the pilot size: the sketch captures A
    if R is None:
        tau = 0.0
    else:
        _, nu = _leave_one_out_dirs(R)
        tau = float(np.mean(1.0 / nu**2))
    factor = 2.0 if (kind == "trace" or distribution == "gaussian") else 1.0
    var_sketch = factor * tau / k_total
    return config.HUTCH_AUTO_MARGIN * var_sketch < var_plain, qr


def _exact(kind, op, adaptive):
    """diag(A) or tr(A) from the n products A e_i, in blocks: (estimate, 0, n, "exact", converged).

    A budget of n products buys the exact answer, which no estimator beats; with fewer
    probes than that the leave-one-out estimators can also be fooled where their sketch nearly
    spans the space (their spread of near-equal estimates says nothing then).
    """
    n = op.n
    diag = np.empty(n)
    block = config.HUTCH_EXACT_BLOCK
    for start in range(0, n, block):
        stop = min(start + block, n)
        E = np.zeros((n, stop - start))
        E[np.arange(start, stop), np.arange(stop - start)] = 1.0
        diag[start:stop] = op.matmat(E)[start:stop].diagonal()
    est = float(diag.sum()) if kind == "trace" else diag
    se = 0.0 if kind == "trace" else np.zeros(n)
    return est, se, op.n_products, "exact", True if adaptive else None


def _estimate(kind, op, n_matvecs, method, distribution, rtol, gen):
    """Body of the public estimators without validation: returns (estimate, stderr, used, method, converged)."""
    n = op.n
    budget = n_matvecs
    adaptive = rtol is not None
    if budget >= n:
        return _exact(kind, op, adaptive)

    def done(est, se):
        return adaptive and _relative(kind, est, se) <= rtol

    def finish(state, ran):
        est, se = getattr(state, kind)()
        converged = None if not adaptive else bool(_relative(kind, est, se) <= rtol)
        return est, se, op.n_products, ran, converged

    def run_plain(state, first):
        """Continue plain Hutchinson until the budget (or rtol) is met."""
        step = config.HUTCH_ADAPTIVE_BLOCK if adaptive else budget
        while True:
            left = budget - op.n_products
            if state.Omega.shape[1] >= 2 and (left <= 0 or done(*getattr(state, kind)())):
                return finish(state, "hutchinson")
            b = min(step if state.Omega.shape[1] else max(first, 2), left)
            Om = _probes(gen, n, b, distribution)
            state.add(Om, op.matmat(Om))

    def run_exchangeable(state, first):
        """Continue XTrace / XDiag: each probe costs its product and one for its new direction."""
        step = config.HUTCH_ADAPTIVE_BLOCK if adaptive else budget
        while True:
            left = budget - op.n_products
            k = state.Omega.shape[1]
            if k >= 3 and (left < 2 or done(*getattr(state, kind)())):
                return finish(state, "xtrace" if kind == "trace" else "xdiag")
            b = min(step if k else max(first, 3), left // 2)
            Om = _probes(gen, n, b, distribution)
            state.add(Om, op.matmat(Om))

    if method == "hutchinson":
        return run_plain(_Plain(n), config.HUTCH_ADAPTIVE_BLOCK if adaptive else budget)
    if method in ("xtrace", "xdiag"):
        return run_exchangeable(_Exchangeable(op), config.HUTCH_ADAPTIVE_BLOCK if adaptive else budget // 2)
    if method in ("hutch++", "diag++"):
        state = _PlusPlus(op, gen, distribution, budget // 3)
        step = config.HUTCH_ADAPTIVE_BLOCK if adaptive else budget
        while True:
            left = budget - op.n_products
            g = state.G.shape[1]
            if g >= 2 and (left <= 0 or done(*getattr(state, kind)())):
                return finish(state, method)
            b = min(step if g else max(step, 2), left)
            G = _probes(gen, n, b, distribution)
            state.add(G, op.matmat(state.project(G)))
    # auto: a pilot of plain probes, which both branches keep using
    if budget < MIN_MATVECS["xtrace"]:
        return run_plain(_Plain(n), budget)
    pilot = _Plain(n)
    k_pilot = max(3, min(budget // 2, config.HUTCH_ADAPTIVE_BLOCK)) if adaptive else budget // 2
    Om = _probes(gen, n, k_pilot, distribution)
    pilot.add(Om, op.matmat(Om))
    sketch, qr = _auto_choice(kind, pilot, budget // 2, budget, distribution)
    if sketch:
        state = _Exchangeable(op)
        state.add(pilot.Omega, pilot.Y, qr=qr)
        return run_exchangeable(state, 0)
    return run_plain(pilot, 0)


def _finalize(kind, op, out, distribution, seed, rtol):
    est, se, used, ran, converged = out
    bound = _relative(kind, est, se)
    if converged is False:
        warnings.warn(
            f"hutchinson_{kind}: relative error estimate {bound:.3g} is above rtol={rtol:g} after the whole "
            f"budget of {used} products; the estimate so far is returned",
            ConvergenceWarning,
            stacklevel=3,
        )
    common = dict(
        n_matvecs=int(used),
        method=ran,
        converged=True if converged is None else bool(converged),
        error_estimate=bound,
        distribution=distribution,
        seed=seed,
    )
    if kind == "trace":
        return TraceEstimate(trace=float(est), stderr=float(se), **common)
    return DiagonalEstimate(diagonal=np.asarray(est), stderr=np.asarray(se), **common)


def hutchinson_diagonal(
    A,
    *,
    n_matvecs=config.HUTCH_DEFAULT_N_MATVECS,
    method="auto",
    distribution="rademacher",
    rng=None,
    rtol=None,
    n=None,
):
    """Estimate the diagonal of a symmetric matrix from products with it, with a standard error per entry.

    Parameters
    ----------
    A : (N, N) array_like, scipy.sparse matrix, LinearOperator, callable or dask array
        Symmetric matrix. A dense array must be symmetric to rounding (a ``ValueError`` otherwise;
        pass ``(A + A.T) / 2`` to use the symmetric part), except with ``method="hutchinson"``,
        which never uses symmetry (E[z * A z] = diag(A) for every square A) and so accepts any
        square A without reading it beyond the products. A `scipy.sparse.linalg.LinearOperator`
        is multiplied through its ``matmat``. A callable takes an (N, k) block of vectors and
        returns the (N, k) block of products; it needs ``n``. A single-vector Hessian-vector
        product ``hvp`` is wrapped as ``lambda X: np.column_stack([hvp(x) for x in X.T])``.
        A dask array is multiplied block by block on the active scheduler and, like an
        operator, trusted to be symmetric (checking would read it twice).
    n_matvecs : int, optional
        Budget of products with A (vectors multiplied). With ``rtol``, the most that are spent.
        A budget of n or more (A is n x n) is capped at n: n products with the unit vectors give
        the exact answer, which no estimator beats, so that is what runs (``method="exact"``,
        ``stderr`` 0, ``n_matvecs`` n).
    method : {"auto", "hutchinson", "diag++", "xdiag"}, optional
        "hutchinson" averages z * (A z) over random probes z. "diag++" spends a third of the
        budget on a sketch Q of the range of A, a third on A Q, and the rest on Hutchinson for
        the residual, keeping the cross terms the published Diag++ drops, so it is unbiased.
        "xdiag" is the exchangeable leave-one-out estimator XDiag. "auto" draws half the budget
        as plain probes, predicts from them whether deflation pays, and then either completes
        XDiag on those probes or keeps drawing plain probes: no product is wasted. Because the
        choice depends on the probes it then uses, "auto" carries a small selection bias where
        the two are close (measured on such a matrix: 0.13 of one run's error for the diagonal,
        0.27 for the trace); the other methods are unbiased.
    distribution : {"rademacher", "gaussian"}, optional
        Probe entries: random signs (smaller variance, exact on diagonal matrices) or N(0, 1).
    rng : None, int or numpy.random.Generator, optional
        Source of the probes; the result records the seed that reproduces the run.
    rtol : float, optional
        Adaptive stopping: draw probes in blocks until ``2 ||stderr|| / ||diagonal||`` is at most
        ``rtol`` or the budget is spent.
    n : int, optional
        Size of A; needed only when A is a callable.

    Returns
    -------
    result : DiagonalEstimate
        ``diagonal``, ``stderr``, ``n_matvecs``, ``method``, ``converged``, ``error_estimate``,
        ``distribution``, ``seed``; unpacks as ``diagonal, stderr``.

    Raises
    ------
    TypeError
        If A or an option has the wrong type.
    ValueError
        If A is not square, not symmetric (except for "hutchinson") or holds NaN, if a product
        has the wrong shape or is not finite (naming the product), if ``n_matvecs`` is below the
        method's minimum (2 for "hutchinson" and "auto", 4 for "diag++", 6 for "xdiag"), or
        ``rtol`` is not positive.

    Warns
    -----
    ConvergenceWarning
        If ``rtol`` was not met within ``n_matvecs`` products.

    See Also
    --------
    hutchinson_trace : the same for the trace.
    HutchinsonAccumulator : running estimate over optimizer steps.

    Notes
    -----
    For a probe with independent entries of mean 0 and variance 1,
    :math:`\\mathbb{E}[z \\odot Az] = \\operatorname{diag}(A)`; with random signs the entry
    :math:`i` has variance :math:`\\sum_{j \\ne i} A_{ij}^2`. Deflation by an orthonormal Q
    with :math:`\\Pi = QQ^T`, :math:`P = I - \\Pi` uses the identity

    .. math::

        \\operatorname{diag}(A) = 2\\operatorname{diag}(\\Pi A) - \\operatorname{diag}(\\Pi A \\Pi)
        + \\operatorname{diag}(PAP),

    whose first two terms come from Q and AQ and the last is estimated with probes independent
    of Q. XDiag estimates :math:`\\operatorname{diag}(\\Pi_i A) + z_i \\odot (I - \\Pi_i) A z_i`
    with :math:`\\Pi_i` the projector onto the products of all probes but the i-th, and averages
    over i. Standard errors: sample standard deviation of independent residual samples for
    "hutchinson" and "diag++"; for "xdiag", an unbiased estimate of the variance of the mean of
    the leave-one-out estimates: their spread (the paper's error estimate, which under-covers)
    plus the products of what each probe adds to another's estimate. See the theory page.

    References
    ----------
    .. [1] C. Bekas, E. Kokiopoulou and Y. Saad, "An estimator for the diagonal of a matrix",
       Appl. Numer. Math. 57, 2007.
    .. [2] R. A. Baston and Y. Nakatsukasa, "Stochastic diagonal estimation: probabilistic
       bounds and an improved algorithm", arXiv:2201.10684, 2022.
    .. [3] E. N. Epperly, J. A. Tropp and R. J. Webber, "XTrace: making the most of every
       sample in stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45(1), 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.hutchinson import hutchinson_diagonal
    >>> A = np.diag([1.0, 2.0, 3.0])
    >>> diagonal, stderr = hutchinson_diagonal(A, n_matvecs=10, method="hutchinson", rng=0)
    >>> diagonal, stderr
    (array([1., 2., 3.]), array([0., 0., 0.]))
    >>> B = np.ones((4, 4))  # rank 1: the sketch captures it and the answer is exact
    >>> np.allclose(hutchinson_diagonal(B, n_matvecs=6, method="xdiag", rng=0).diagonal, 1.0)
    True
    """
    op, n_matvecs, method, distribution, rtol = _check_common(
        A, n_matvecs, method, _DIAG_METHODS, distribution, rtol, n
    )
    gen, seed = _validate.rng(rng)
    out = _estimate("diagonal", op, n_matvecs, method, distribution, rtol, gen)
    return _finalize("diagonal", op, out, distribution, seed, rtol)


def hutchinson_trace(
    A,
    *,
    n_matvecs=config.HUTCH_DEFAULT_N_MATVECS,
    method="auto",
    distribution="rademacher",
    rng=None,
    rtol=None,
    n=None,
):
    """Estimate the trace of a symmetric matrix from products with it, with a standard error.

    Parameters
    ----------
    A : (N, N) array_like, scipy.sparse matrix, LinearOperator, callable or dask array
        As in `hutchinson_diagonal`.
    n_matvecs : int, optional
        Budget of products with A. With ``rtol``, the most that are spent.
        A budget of n or more (A is n x n) is capped at n: n products with the unit vectors give
        the exact answer, which no estimator beats, so that is what runs (``method="exact"``,
        ``stderr`` 0, ``n_matvecs`` n).
    method : {"auto", "hutchinson", "hutch++", "xtrace"}, optional
        "hutchinson" averages z^T A z. "hutch++" spends a third of the budget on a sketch Q,
        a third on A Q, and the rest on Hutchinson for P A P. "xtrace" is the exchangeable
        leave-one-out estimator XTrace. "auto" chooses as in `hutchinson_diagonal`.
    distribution : {"rademacher", "gaussian"}, optional
        Probe entries.
    rng : None, int or numpy.random.Generator, optional
        Source of the probes.
    rtol : float, optional
        Adaptive stopping when ``2 stderr / |trace|`` is at most ``rtol``.
    n : int, optional
        Size of A; needed only when A is a callable.

    Returns
    -------
    result : TraceEstimate
        ``trace``, ``stderr``, ``n_matvecs``, ``method``, ``converged``, ``error_estimate``,
        ``distribution``, ``seed``; unpacks as ``trace, stderr``.

    Raises
    ------
    TypeError
        If A or an option has the wrong type.
    ValueError
        As in `hutchinson_diagonal` (minimum budgets: 2, 4 for "hutch++", 6 for "xtrace").

    Warns
    -----
    ConvergenceWarning
        If ``rtol`` was not met within ``n_matvecs`` products.

    See Also
    --------
    hutchinson_diagonal : the same for the diagonal.

    Notes
    -----
    :math:`\\mathbb{E}[z^T A z] = \\operatorname{tr}(A)`, with variance
    :math:`2\\sum_{i \\ne j} A_{ij}^2` for random signs and :math:`2\\|A\\|_F^2` for Gaussian
    probes. Hutch++ computes :math:`\\operatorname{tr}(Q^T A Q)` exactly and estimates
    :math:`\\operatorname{tr}(PAP)`; XTrace averages the leave-one-out versions of this
    over all probes. The standard error of XTrace is estimated without bias as for XDiag (see
    `hutchinson_diagonal` and the theory page).

    References
    ----------
    .. [1] M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
       Laplacian smoothing splines", Commun. Stat. Simul. Comput. 18(3), 1989.
    .. [2] R. A. Meyer, C. Musco, C. Musco and D. P. Woodruff, "Hutch++: optimal stochastic
       trace estimation", SOSA 2021.
    .. [3] E. N. Epperly, J. A. Tropp and R. J. Webber, "XTrace: making the most of every
       sample in stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45(1), 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.hutchinson import hutchinson_trace
    >>> A = np.diag([1.0, 2.0, 3.0])
    >>> hutchinson_trace(A, n_matvecs=10, method="hutchinson", rng=0).trace
    6.0
    >>> rng = np.random.default_rng(0)
    >>> U = np.linalg.qr(rng.standard_normal((200, 3)))[0]
    >>> B = (U * [3.0, 2.0, 1.0]) @ U.T  # rank 3, trace 6
    >>> round(hutchinson_trace(B, n_matvecs=12, method="hutch++", rng=0).trace, 10)
    6.0
    """
    op, n_matvecs, method, distribution, rtol = _check_common(
        A, n_matvecs, method, _TRACE_METHODS, distribution, rtol, n
    )
    gen, seed = _validate.rng(rng)
    out = _estimate("trace", op, n_matvecs, method, distribution, rtol, gen)
    return _finalize("trace", op, out, distribution, seed, rtol)


# -- Hessian by central differences --------------------------------------------------------------


def hessian_operator(grad, x, *, eps=None):
    """Hessian-vector products of a function by central differences of its gradient.

    Parameters
    ----------
    grad : callable
        ``grad(x)`` returns the gradient, an array of the shape of ``x``.
    x : (N,) array_like
        Point at which the Hessian is taken (copied; never modified).
    eps : float, optional
        Relative step. The step for a product with v is ``h = eps * max(1, ||x||) / ||v||``.
        Default ``eps_machine ** (1/3)`` (about 6e-6).

    Returns
    -------
    H : scipy.sparse.linalg.LinearOperator
        Symmetric (N, N) operator with ``H @ v = (grad(x + h v) - grad(x - h v)) / (2 h)``;
        ``matmat`` takes two gradients per column.

    Raises
    ------
    TypeError
        If ``grad`` is not callable or ``x`` is not a float array.
    ValueError
        If ``x`` is not 1-D or finite, ``eps`` is not positive, or ``grad`` returns the wrong
        shape or a non-finite value.

    Notes
    -----
    By Taylor's theorem the central difference has truncation error
    :math:`\\tfrac{h^2}{6}\\, \\nabla^3 f(x)[v, v, v]`-sized terms (third derivatives along v,
    :math:`O(h^2)`), and rounding error about :math:`\\epsilon \\|\\nabla f\\| / h`. Balancing the
    two gives :math:`h \\propto \\epsilon^{1/3}` and a relative error of about
    :math:`\\epsilon^{2/3} \\approx 4 \\cdot 10^{-11}` for smooth f of unit scale. Quadratics
    have no truncation error. The operator is only symmetric to that accuracy.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.hutchinson import hessian_operator
    >>> M = np.array([[2.0, 1.0], [1.0, 3.0]])
    >>> H = hessian_operator(lambda x: M @ x, np.zeros(2))
    >>> np.allclose(H @ np.eye(2), M)
    True
    """
    if not callable(grad):
        raise TypeError(f"`grad` must be callable, got {type(grad).__name__}")
    x0 = np.array(_validate.float_array("x", x, min_ndim=1, max_ndim=1), dtype=np.float64)
    eps = config.HESSIAN_EPS if eps is None else _validate.positive("eps", eps)
    n = x0.shape[0]
    scale = max(1.0, float(np.linalg.norm(x0)))

    def g(at):
        out = np.asarray(grad(at), dtype=np.float64)
        if out.shape != (n,):
            raise ValueError(f"`grad` returned shape {out.shape}, expected {(n,)}")
        if not np.isfinite(out).all():
            raise ValueError("`grad` returned NaN or Inf")
        return out

    def matvec(v):
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            return np.zeros(n)
        h = eps * scale / norm
        return (g(x0 + h * v) - g(x0 - h * v)) / (2.0 * h)

    return scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, rmatvec=matvec, dtype=np.float64)


# -- Streaming -----------------------------------------------------------------------------------


class HutchinsonAccumulator:
    """Running Hutchinson estimate of diag(A) and tr(A) over optimizer steps, with standard errors.

    Each `update` adds a few probes of the current matrix (AdaHessian and Sophia take one a step).
    With ``beta`` the samples are weighted exponentially, the newest with weight 1 and a sample
    ``t`` steps old with ``beta ** t``; the estimate is the weighted mean (this is Adam's bias
    correction), and the standard error uses the effective number of samples
    ``(sum w)^2 / sum w^2``.

    Parameters
    ----------
    n : int
        Size of the matrix.
    beta : float, optional
        Decay in (0, 1); None (default) weights all samples equally.
    distribution : {"rademacher", "gaussian"}, optional
        Probe entries.
    rng : None, int or numpy.random.Generator, optional
        Source of the probes.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.hutchinson import HutchinsonAccumulator
    >>> acc = HutchinsonAccumulator(3, beta=0.9, rng=0)
    >>> for step in range(5):
    ...     acc.update(np.diag([1.0, 2.0, 3.0]))
    >>> acc.diagonal, acc.trace
    (array([1., 2., 3.]), 6.0)
    """

    def __init__(self, n, *, beta=None, distribution="rademacher", rng=None):
        self.n = _validate.positive_int("n", n)
        if beta is not None:
            beta = _validate.positive("beta", beta)
            if beta >= 1.0:
                raise ValueError(f"`beta` must be in (0, 1), got {beta}")
        self.beta = beta
        self.distribution = _validate.choice("distribution", distribution, _DISTRIBUTIONS)
        self._gen, self.seed = _validate.rng(rng)
        self._w = 0.0  # sum of weights
        self._w2 = 0.0  # sum of squared weights
        self._d1 = np.zeros(self.n)
        self._d2 = np.zeros(self.n)
        self._t1 = 0.0
        self._t2 = 0.0
        self.n_matvecs = 0

    def update(self, A, *, n_probes=1):
        """Draw ``n_probes`` probes, multiply by A (as accepted by `hutchinson_diagonal`) and accumulate."""
        n_probes = _validate.positive_int("n_probes", n_probes)
        op = _operators.as_symmetric_operator(A, "A", n=self.n, check_symmetric=False)
        if op.n != self.n:
            raise ValueError(f"`A` must be {self.n} x {self.n}, got size {op.n}")
        Om = _probes(self._gen, self.n, n_probes, self.distribution)
        self.add_samples(Om, op.matmat(Om))

    def add_samples(self, probes, products):
        """Accumulate user-computed products ``products = A @ probes`` (shape (n,) or (n, k) each).

        Nothing is accumulated unless both are finite and the updated sums are too.
        """
        Om = _validate.float_array("probes", probes, min_ndim=1, max_ndim=2).astype(np.float64, copy=False)
        if Om.shape[0] != self.n:
            raise ValueError(f"`probes` must have shape ({self.n},) or ({self.n}, k), got {Om.shape}")
        Om = Om.reshape(self.n, -1)
        Y = _validate.float_array("products", products, min_ndim=1, max_ndim=2).astype(np.float64, copy=False)
        if Y.shape[0] != self.n or Y.size != Om.size:
            raise ValueError(f"`products` must have the shape of `probes`, {Om.shape}, got {Y.shape}")
        Y = Y.reshape(Om.shape)
        decay = 1.0 if self.beta is None else self.beta
        w, w2, d1, d2, t1, t2 = self._w, self._w2, self._d1, self._d2, self._t1, self._t2
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below, by name
            for j in range(Om.shape[1]):  # k is a handful; each sample is O(n)
                d = Om[:, j] * Y[:, j]
                t = float(Om[:, j] @ Y[:, j])
                w, w2 = decay * w + 1.0, decay**2 * w2 + 1.0
                d1, d2 = decay * d1 + d, decay * d2 + d * d
                t1, t2 = decay * t1 + t, decay * t2 + t * t
        if not (np.isfinite(d2).all() and np.isfinite(t2)):
            raise ValueError("`products`: the samples probes * products overflow float64; scale A down")
        self._w, self._w2, self._d1, self._d2, self._t1, self._t2 = w, w2, d1, d2, t1, t2
        self.n_matvecs += Om.shape[1]

    @property
    def n_effective(self):
        """Effective number of samples (sum w)^2 / sum w^2."""
        return self._w**2 / self._w2 if self._w2 else 0.0

    @property
    def diagonal(self):
        """Weighted mean of the samples z * (A z)."""
        return self._d1 / self._w if self._w else np.zeros(self.n)

    @property
    def trace(self):
        """Weighted mean of the samples z^T A z."""
        return self._t1 / self._w if self._w else 0.0

    def _se(self, s1, s2):
        neff = self.n_effective
        if neff <= 1.0:
            return np.full(np.shape(s1), np.inf)
        mean = s1 / self._w
        var = np.maximum(s2 / self._w - mean * mean, 0.0) * neff / (neff - 1.0)
        return np.sqrt(var / neff)

    @property
    def diagonal_stderr(self):
        """Standard error of `diagonal` (inf before two samples)."""
        return self._se(self._d1, self._d2)

    @property
    def trace_stderr(self):
        """Standard error of `trace` (inf before two samples)."""
        return float(self._se(self._t1, self._t2))
