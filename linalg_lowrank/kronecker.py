"""Kronecker-factored products and solves (K-FAC) and the nearest Kronecker product.

Convention: ``vec`` stacks columns (Fortran order), so that
``(A ⊗ B) vec(X) = vec(B X A^T)`` and ``np.kron(A, B) @ X.ravel(order="F")`` is the reference.
"""

import math
import operator
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from . import _operators, _validate, config
from ._scaling import ldexp_float, pow2_normalize, unscale
from .results import Result
from .roots import SymmetricEig, _check_psd, _eigh_blocks, _symmetric_input
from .spectral import power_iteration

__all__ = ["KroneckerApproximation", "kfac_solve", "kron_matvec", "nearest_kronecker_product"]

_DAMPING_MODES = ("exact", "pi")


def kron_matvec(A, B, x):
    """(A ⊗ B) vec(X) = vec(B X A^T) without forming the Kronecker product.

    Parameters
    ----------
    A : (M, N) array_like
        Left Kronecker factor.
    B : (P, Q) array_like
        Right Kronecker factor.
    x : (N * Q,) or (N * Q, K) array_like
        vec(X) for X of shape (Q, N) (column-major vec), or K such vectors as columns.

    Returns
    -------
    y : (M * P,) or (M * P, K) ndarray
        (A ⊗ B) x, float64 unless every input is float32.

    Raises
    ------
    TypeError
        If an input has an unsupported dtype.
    ValueError
        If an input is not finite or the shapes do not match.

    See Also
    --------
    kfac_solve : the inverse of a damped Kronecker product applied to a gradient.

    Notes
    -----
    Two matrix products, :math:`O(PQN + PNM)` flops per vector instead of
    :math:`O(MNPQ)` for the explicit :math:`(MP) \\times (NQ)` matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.kronecker import kron_matvec
    >>> A, B, x = np.array([[1.0, 2.0]]), np.eye(2), np.arange(4.0)
    >>> kron_matvec(A, B, x), np.kron(A, B) @ x
    (array([4., 7.]), array([4., 7.]))
    """
    A = _operators.as_operator(A, "A", family="kron_matvec").dense("kron_matvec")
    B = _operators.as_operator(B, "B", family="kron_matvec").dense("kron_matvec")
    x = _validate.float_array("x", x, min_ndim=1, max_ndim=2)
    (m, n), (p, q) = A.shape, B.shape
    if x.shape[0] != n * q:
        raise ValueError(f"`x` must have {n * q} = A.shape[1] * B.shape[1] rows, got shape {x.shape}")
    dtype = np.result_type(A.dtype, B.dtype, x.dtype)
    k = 1 if x.ndim == 1 else x.shape[1]
    # column-major vec: X[:, :, j] = x[:, j].reshape((q, n), order="F")
    X = np.asarray(x).reshape((n, q, k)).transpose(2, 1, 0)  # (k, q, n)
    Y = np.matmul(np.matmul(B, X), A.T)  # (k, p, m)
    y = Y.transpose(2, 1, 0).reshape(m * p, k)
    y = y[:, 0] if x.ndim == 1 else y
    return np.ascontiguousarray(y, dtype=dtype)


def _as_eig(name, F):
    if isinstance(F, SymmetricEig):
        if F.Q.ndim != 2:
            raise ValueError(f"`{name}` must be the decomposition of one matrix, got a stack of shape {F.Q.shape}")
        return F
    A64, dtype = _symmetric_input(name, F, family="kfac_solve")
    if A64.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D, got shape {A64.shape}")
    w, Q = _eigh_blocks(A64[None])
    return SymmetricEig(Q=Q[0], eigenvalues=w[0], residual=0.0, method="eigh", n_iter=0, dtype=dtype)


def kfac_solve(grad, A, G, *, damping, damping_mode="exact"):
    """K-FAC natural-gradient step: solve (A ⊗ G + damping I) vec(V) = vec(grad).

    Parameters
    ----------
    grad : (D_out, D_in) array_like
        Gradient of a weight matrix W (rows: outputs, columns: inputs).
    A : (D_in, D_in) array_like or SymmetricEig
        Input-activation covariance factor (symmetric positive semidefinite); a cached
        `linalg_lowrank.roots.SymmetricEig` is used as is.
    G : (D_out, D_out) array_like or SymmetricEig
        Output-gradient covariance factor.
    damping : float
        Tikhonov damping lambda > 0 (absolute).
    damping_mode : {"exact", "pi"}, optional
        "exact": (A ⊗ G + lambda I)^-1 through both eigendecompositions. "pi": the
        factored approximation (A + pi sqrt(lambda) I)^-1 ⊗ (G + sqrt(lambda)/pi I)^-1 with
        pi = sqrt((tr A / D_in) / (tr G / D_out)) [1]_.

    Returns
    -------
    V : (D_out, D_in) ndarray
        The preconditioned gradient, in the dtype of ``grad``.

    Raises
    ------
    TypeError
        If an input has an unsupported dtype.
    ValueError
        If shapes do not match, a factor is not symmetric positive semidefinite, an input is
        not finite, or ``damping`` is not positive.

    See Also
    --------
    linalg_lowrank.roots.symmetric_eig : cache the factor decompositions between steps.
    kron_matvec : the forward product.

    Notes
    -----
    With :math:`A = Q_A \\operatorname{diag}(a) Q_A^T`, :math:`G = Q_G \\operatorname{diag}(g) Q_G^T`,
    the eigenvectors of :math:`A \\otimes G` are :math:`Q_A \\otimes Q_G` with eigenvalues
    :math:`a_j g_i`, so in our vec convention

    .. math:: V = Q_G \\left[ \\frac{(Q_G^T\\,\\nabla\\,Q_A)_{ij}}{g_i a_j + \\lambda} \\right] Q_A^T,

    four matrix products with cached decompositions. The pi-adjusted damping is what K-FAC
    uses when it inverts the factors separately; it is not the exact damped solve.

    References
    ----------
    .. [1] J. Martens and R. Grosse, "Optimizing neural networks with Kronecker-factored
       approximate curvature", ICML 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.kronecker import kfac_solve
    >>> V = kfac_solve(np.ones((2, 2)), np.eye(2), 3 * np.eye(2), damping=1.0)
    >>> V
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    g = _operators.as_operator(grad, "grad", family="kfac_solve").dense("kfac_solve")
    damping = _validate.positive("damping", damping)
    _validate.choice("damping_mode", damping_mode, _DAMPING_MODES)
    eA, eG = _as_eig("A", A), _as_eig("G", G)
    d_out, d_in = g.shape
    if eA.n != d_in or eG.n != d_out:
        raise ValueError(
            f"`grad` of shape {g.shape} needs `A` of size {d_in} and `G` of size {d_out}, got {eA.n} and {eG.n}"
        )
    a, gg = _clipped(eA, "A"), _clipped(eG, "G")
    g64 = np.asarray(g, dtype=np.float64)
    g64, e = pow2_normalize(g64)  # the answer is linear in grad
    core = eG.Q.T @ g64 @ eA.Q
    # a = 2^ea a', g = 2^eg g': products of eigenvalues near the ends of the range neither overflow nor
    # underflow, and lambda is carried into the same units, lambda' = 2^-(ea + eg) lambda
    a, ea = pow2_normalize(a)
    gg, eg = pow2_normalize(gg)
    e -= ea + eg
    lam = math.ldexp(damping, -(ea + eg))
    if damping_mode == "exact":
        core /= gg[:, None] * a[None, :] + lam
    else:
        ta, tg = a.mean(), gg.mean()
        # pi' = 2^((eg - ea) / 2) pi, in the units of a' and g' (pi = 1 when a factor is zero)
        pi = np.sqrt(ta / tg) if ta > 0 and tg > 0 else 2.0 ** ((eg - ea) / 2)
        s = np.sqrt(lam)
        core /= (gg + s / pi)[:, None]  # one factor at a time: their product may not be representable
        core /= (a + pi * s)[None, :]
    return unscale(eG.Q @ core @ eA.Q.T, e, g.dtype, "the K-FAC step overflows")


def _clipped(eig, name):
    _check_psd(name, eig.eigenvalues, eig.n, eig.dtype)
    return np.maximum(eig.eigenvalues, 0.0)


@dataclass(frozen=True, repr=False)
class KroneckerApproximation(Result):
    """Sum of Kronecker products sum_r A[r] ⊗ B[r] nearest to M in the Frobenius norm.

    Unpacks as ``A, B = nearest_kronecker_product(M, shape_a, shape_b)``.

    Attributes
    ----------
    A : (rank, Ma, Na) ndarray
        Left factors, in the dtype of M.
    B : (rank, Mb, Nb) ndarray
        Right factors, scaled so that ||A[r]||_F = ||B[r]||_F.
    singular_values : ndarray
        The top ``rank`` singular values of the rearranged matrix R(M) (float64).
    error_bound : float
        ||M - sum_r A[r] ⊗ B[r]||_F, measured on the rearranged matrix; it equals the tail
        (sum_{r > rank} sigma_r^2)^(1/2) of the singular values of R(M). Exact up to rounding,
        so a bound that is attained.
    error_bound_relative : float
        ``error_bound / ||M||_F``.
    method : str
        "power" (rank 1, our power iteration) or "svd" (rank > 1, LAPACK).
    """

    A: np.ndarray
    B: np.ndarray
    singular_values: np.ndarray
    error_bound: float
    error_bound_relative: float
    method: str

    _unpack = ("A", "B")
    _renamed = {"error": "error_bound", "rel_error": "error_bound_relative"}

    def to_dense(self):
        """Sum_r A[r] ⊗ B[r] as a dense matrix (for checking; it is the big object).

        Returns
        -------
        M : (Ma * Mb, Na * Nb) ndarray
            The approximation.
        """
        return sum(np.kron(a, b) for a, b in zip(self.A, self.B, strict=True))


def _rearrange(M, shape_a, shape_b):
    """Van Loan–Pitsianis R(M): row (i, j) holds block M_ij of M = [M_ij] flattened, so R(A ⊗ B) = vec(A) vec(B)^T."""
    (ma, na), (mb, nb) = shape_a, shape_b
    return M.reshape(ma, mb, na, nb).transpose(0, 2, 1, 3).reshape(ma * na, mb * nb)


def _shape2(name, shape):
    # operator.index, not int(): 2.9 must not become 2, and a string "24" is not the pair (2, 4)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__"):
        raise TypeError(f"`{name}` must be a pair of positive integers, got {shape!r}")
    try:
        if any(isinstance(s, (bool, np.bool_)) for s in shape):
            raise TypeError
        t = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"`{name}` must be a pair of positive integers, got {shape!r}") from None
    if len(t) != 2 or min(t, default=0) < 1:
        raise ValueError(f"`{name}` must be a pair of positive integers, got {shape!r}")
    return t


def nearest_kronecker_product(M, shape_a, shape_b, *, rank=1):
    """Nearest sum of ``rank`` Kronecker products to M in the Frobenius norm (Van Loan–Pitsianis).

    Parameters
    ----------
    M : (Ma * Mb, Na * Nb) array_like
        Matrix to approximate, float32 or float64.
    shape_a : tuple of int
        (Ma, Na), the shape of the left factors.
    shape_b : tuple of int
        (Mb, Nb), the shape of the right factors.
    rank : int, optional
        Number of Kronecker terms (default 1).

    Returns
    -------
    result : KroneckerApproximation
        Factors ``A`` (rank, Ma, Na), ``B`` (rank, Mb, Nb), ``singular_values``, ``error_bound``,
        ``error_bound_relative``, ``method``; unpacks as ``A, B``.

    Raises
    ------
    TypeError
        If M has an unsupported dtype, or the shapes are not integer pairs.
    ValueError
        If M is not finite, its shape is not (Ma Mb, Na Nb), or ``rank`` exceeds
        min(Ma Na, Mb Nb).

    See Also
    --------
    linalg_lowrank.spectral.power_iteration : the rank-1 solver used here.

    Notes
    -----
    The rearrangement :math:`\\mathcal R` maps block :math:`M_{ij}` of M to row
    :math:`(i, j)`, so that :math:`\\mathcal R(A \\otimes B) = \\operatorname{vec}(A)
    \\operatorname{vec}(B)^T` and :math:`\\|M - \\sum_r A_r \\otimes B_r\\|_F =
    \\|\\mathcal R(M) - \\sum_r \\operatorname{vec}(A_r)\\operatorname{vec}(B_r)^T\\|_F`: the
    problem is a best low-rank approximation (Eckart–Young), solved by the top singular triplets,
    and the error is :math:`(\\sum_{r > \\text{rank}} \\sigma_r^2)^{1/2}`. For symmetric
    positive definite M with square blocks, the top singular vectors reshape to symmetric
    positive definite factors (up to a common sign, fixed here so both have positive trace);
    the factors are symmetrized to remove the iteration's rounding.

    References
    ----------
    .. [1] C. F. Van Loan and N. Pitsianis, "Approximation with Kronecker products", in
       Linear Algebra for Large Scale and Real-Time Applications, Kluwer, 1993.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.kronecker import nearest_kronecker_product
    >>> A, B = np.array([[2.0, 1.0], [1.0, 2.0]]), np.diag([1.0, 3.0, 2.0])
    >>> res = nearest_kronecker_product(np.kron(A, B), (2, 2), (3, 3))
    >>> bool(np.allclose(np.kron(res.A[0], res.B[0]), np.kron(A, B))), res.error_bound_relative < 1e-12
    (True, True)
    """
    Marr = _operators.as_operator(M, "M", family="nearest_kronecker_product").dense("nearest_kronecker_product")
    shape_a, shape_b = _shape2("shape_a", shape_a), _shape2("shape_b", shape_b)
    want = (shape_a[0] * shape_b[0], shape_a[1] * shape_b[1])
    if Marr.shape != want:
        raise ValueError(f"`M` must have shape {want} for shape_a={shape_a}, shape_b={shape_b}, got {Marr.shape}")
    kmax = min(shape_a[0] * shape_a[1], shape_b[0] * shape_b[1])
    rank = _validate.positive_int("rank", rank, default=1)
    if rank > kmax:
        raise ValueError(f"`rank` must be at most min(Ma Na, Mb Nb) = {kmax}, got {rank}")
    # M = 2^e M' (exact): sigma = 2^e sigma', each factor 2^(e/2) times that of M'; sums of squares of
    # entries near 1e300 (or 1e-300) would overflow (underflow) otherwise
    M64, e = pow2_normalize(np.asarray(Marr, dtype=np.float64))
    R = _rearrange(M64, shape_a, shape_b)
    normF2 = float(np.sum(M64 * M64))
    if rank == 1:
        res = power_iteration(R, tol=config.NKP_TOL, rng=0)
        sig = np.array([res.sigma])
        U, V = res.u[:, None].astype(np.float64), res.v[:, None].astype(np.float64)
        method = "power"
    else:
        U, s, Vt = scipy.linalg.svd(R, full_matrices=False, check_finite=False)
        sig, U, V = s[:rank], U[:, :rank], Vt[:rank].T
        method = "svd"
    root = np.sqrt(sig)
    Af = (U * root).T.reshape(rank, *shape_a)
    Bf = (V * root).T.reshape(rank, *shape_b)
    symmetric = (
        shape_a[0] == shape_a[1]
        and shape_b[0] == shape_b[1]
        and np.allclose(M64, M64.T, rtol=0, atol=1e-12 * np.sqrt(normF2))
    )
    for r in range(rank):
        ta, tb = np.trace(Af[r]), np.trace(Bf[r])
        if (ta if ta != 0 else tb) < 0:  # a common sign flip leaves A ⊗ B unchanged
            Af[r], Bf[r] = -Af[r], -Bf[r]
        if symmetric:
            Af[r] = 0.5 * (Af[r] + Af[r].T)
            Bf[r] = 0.5 * (Bf[r] + Bf[r].T)
    # measured directly (sqrt(||M||^2 - sum sigma^2) would cancel catastrophically when M is Kronecker)
    err = float(np.linalg.norm(R - (U * sig) @ V.T))
    what = "`M`: the Kronecker factors overflow"
    return KroneckerApproximation(
        A=unscale(Af, e / 2, Marr.dtype, what),
        B=unscale(Bf, e / 2, Marr.dtype, what),
        singular_values=unscale(sig, e, np.float64, "`M`: the singular values of its rearrangement overflow"),
        error_bound=ldexp_float(err, e),
        error_bound_relative=float(err / np.sqrt(normF2)) if normF2 > 0 else 0.0,
        method=method,
    )
