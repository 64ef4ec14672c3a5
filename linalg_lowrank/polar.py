"""msign: the orthogonal polar factor U V^T by Newton–Schulz polynomial iterations, and exactly by SVD."""

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from . import _dask, _operators, _validate, config
from .results import Result

__all__ = ["MsignResult", "MUON_COEFFICIENTS", "POLAR_EXPRESS_COEFFICIENTS", "msign", "ns_polynomial", "polar"]

#: Quintic (a, b, c) of Muon (Jordan et al. 2024), the same at every step: p(x) = a x + b x^3 + c x^5.
MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

_PE_RAW = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
)
#: Per-step minimax quintics of Polar Express (Amsel et al. 2025) for singular values in
#: [1e-3, 1], with the paper's 1.01 safety factor; steps beyond the list use (15/8, -10/8, 3/8),
#: the limit of the minimax quintic on an interval shrinking to {1}.
POLAR_EXPRESS_COEFFICIENTS = tuple(
    (a / config.POLAR_EXPRESS_SAFETY, b / config.POLAR_EXPRESS_SAFETY**3, c / config.POLAR_EXPRESS_SAFETY**5)
    for a, b, c in _PE_RAW
)
_PE_TAIL = (1.875, -1.25, 0.375)


def _schedule(coefficients, steps):
    if isinstance(coefficients, str):
        _validate.choice("coefficients", coefficients, ("muon", "polar_express"))
        if coefficients == "muon":
            return [MUON_COEFFICIENTS] * steps
        return [
            POLAR_EXPRESS_COEFFICIENTS[i] if i < len(POLAR_EXPRESS_COEFFICIENTS) else _PE_TAIL for i in range(steps)
        ]
    try:
        sched = [tuple(float(v) for v in abc) for abc in coefficients]
    except (TypeError, ValueError):
        raise TypeError(
            f"`coefficients` must be 'muon', 'polar_express' or a sequence of (a, b, c), got {coefficients!r}"
        ) from None
    if not sched or any(len(abc) != 3 or not all(math.isfinite(v) for v in abc) for abc in sched):
        raise ValueError(
            f"`coefficients` must be a non-empty sequence of finite (a, b, c) triples, got {coefficients!r}"
        )
    return [sched[i] if i < len(sched) else sched[-1] for i in range(steps)]


def ns_polynomial(x, *, steps=5, coefficients="muon"):
    """The scalar map the iteration applies to each singular value of the scaled input.

    Parameters
    ----------
    x : array_like
        Points, typically in [0, 1] (singular values of A divided by ``msign(A, return_info=True).scale``).
    steps : int, optional
        Number of quintic steps composed.
    coefficients : {"muon", "polar_express"} or sequence of (a, b, c), optional
        As in `msign`.

    Returns
    -------
    y : ndarray
        p_steps(... p_1(x)) in float64.

    See Also
    --------
    msign : the matrix iteration.

    Examples
    --------
    >>> from linalg_lowrank.polar import ns_polynomial
    >>> float(ns_polynomial(1.0, steps=1, coefficients=[(1.875, -1.25, 0.375)]))
    1.0
    """
    steps = _validate.positive_int("steps", steps)
    y = np.asarray(x, dtype=np.float64)
    for a, b, c in _schedule(coefficients, steps):
        y2 = y * y
        y = y * (a + y2 * (b + c * y2))
    return y


@dataclass(frozen=True, repr=False)
class MsignResult(Result):
    """Approximate orthogonal polar factor and the accuracy it reached, from ``msign(A, return_info=True)``.

    For a stack of matrices (..., M, N) ``Q`` is the stack of factors and ``orthogonality``,
    ``scale`` and both ends of ``sv_bounds`` are arrays of the batch shape.

    Attributes
    ----------
    Q : (M, N) or (..., M, N) ndarray
        The approximation of U V^T, in the dtype of A.
    orthogonality : float
        An upper bound on ||Q^T Q - I||_F over the smaller side, the rounding of its own
        computation included; so also a rigorous bound on ``max_i |sigma_i(Q)^2 - 1|``. (It
        bounds how far Q is from orthogonal, not its distance to U V^T, which a fixed number of
        steps does not control; so it is not called ``error_bound``.)
    sv_bounds : tuple of float
        Interval certain to hold every singular value of Q, from ``orthogonality``.
    scale : float
        The input was divided by this (1.01 times the norm chosen by ``scaling``, computed
        without underflow or overflow; ``inf`` if it exceeds the float64 range).
    n_iter : int
        Polynomial steps taken.
    coefficients : str or tuple
        The coefficient schedule used.
    """

    Q: np.ndarray
    orthogonality: float
    sv_bounds: tuple
    scale: float
    n_iter: int
    coefficients: object

    _renamed = {"steps": "n_iter"}


def _scaled_gram(X, scaling):
    """Y = 2^-e X, f and G0 = X0 X0^T for X0 = Y / f, with f = 1.01 ||Y||_S4 (or ||Y||_F).

    The power of two (exact) brings the largest entry into [0.5, 1), so tiny inputs do not
    underflow and huge ones do not overflow; X0 itself is never formed (the first step divides
    its m x m factor by f instead). Returns (Y, f, G0, scale) with scale = 2^e f the factor the
    input was divided by, or (None, 0.0, None, 0.0) for X = 0.
    """
    amax = max(float(X.max()), -float(X.min()))
    if amax == 0.0:
        return None, 0.0, None, 0.0
    e = math.frexp(amax)[1]
    info = np.finfo(X.dtype)
    if info.minexp <= -e < info.maxexp:  # 2^-e is a normal number of the dtype
        Y = X * X.dtype.type(math.ldexp(1.0, -e))  # exact, and 10x faster than np.ldexp
    else:
        Y = np.ldexp(X, -e).astype(X.dtype, copy=False)
    G = Y @ Y.T  # numpy calls syrk for this product
    f, G0, scale = _normalized_gram(G, e, scaling)
    return Y, f, G0, scale


def _normalized_gram(G, e, scaling):
    """(f, G / f^2, 2^e f) for the Gram matrix G = Y Y^T of Y = 2^-e X, f = 1.01 ||Y||_S4 (or ||Y||_F)."""
    if scaling == "schatten4":
        # sigma_1^4 <= sum_i sigma_i^4 = ||Y Y^T||_F^2: a rigorous bound, up to rank^(1/4) below ||Y||_F
        norm = math.sqrt(float(np.linalg.norm(G.astype(np.float64, copy=False))))
    else:
        norm = math.sqrt(float(np.trace(G, dtype=np.float64)))
    f = config.MSIGN_NORM_SAFETY * norm
    try:
        scale = math.ldexp(f, e)
    except OverflowError:  # ||A|| beyond the float64 range: Q is still computable
        scale = math.inf
    return f, G / G.dtype.type(f * f), scale


def _orthogonality_bound(X):
    """An upper bound on ||X X^T - I||_F, rounding included (X on its smaller side first)."""
    X64 = X.astype(np.float64, copy=False)  # read only: no copy for float64 input
    E = X64 @ X64.T
    E[np.diag_indices_from(E)] -= 1.0
    # |fl(X X^T) - X X^T| <= n u |X||X|^T entrywise (Higham, Thm 3.5), in Frobenius <= n u ||X||_F^2
    n = X.shape[1]
    margin = (n + 2) * np.finfo(np.float64).eps * float(np.einsum("ij,ij->", X64, X64))
    return float(np.linalg.norm(E) + margin)


def _square(S):
    # S is symmetric, so S @ S = S @ S.T, which numpy computes with syrk: half the flops of a GEMM
    return S @ S.T


def _steps(Y, f, G, sched):
    """X_{t+1} = (a I + b G_t + c G_t^2) X_t, G_t = X_t X_t^T, from X_0 = Y / f and G_0 given."""
    dtype = Y.dtype.type
    diag = np.diag_indices_from(G)
    X = Y
    for t, (a, b, c) in enumerate(sched):
        if t > 0:
            G = X @ X.T
        q = dtype(b) * G + dtype(c) * _square(G)
        q[diag] += dtype(a)  # a X folded into the product: no elementwise pass over the m x n X
        if t == 0:
            q /= dtype(f)  # q(G_0) X_0 = (q(G_0) / f) Y
        X = q @ X
    return X


def msign(A, *, steps=5, coefficients="muon", scaling="schatten4", return_info=False):
    """Orthogonal polar factor msign(A) = U V^T by a Newton–Schulz quintic iteration.

    Parameters
    ----------
    A : (M, N) array_like, (..., M, N) stack or dask array
        Real float32 or float64 matrix (computed in its own dtype), or a
        stack of them, each factored on its own (as `spectral_norm` takes stacks). For a dask array the same
        steps run with the small Gram matrix of each step in memory and the long side
        distributed; ``Q`` is then a dask array with A's chunks.
    steps : int, optional
        Matrix polynomial steps.
    coefficients : {"muon", "polar_express"} or sequence of (a, b, c), optional
        "muon": (3.4445, -4.7750, 2.0315) at every step, which pushes singular values into
        roughly [0.7, 1.2] fast but never converges; "polar_express": the per-step minimax
        quintics of Polar Express, which converge to U V^T; or your own schedule (the last
        triple repeats).
    scaling : {"schatten4", "frobenius"}, optional
        The input is divided by 1.01 times this norm so that every singular value is below 1.
        ``"schatten4"``: :math:`\\|A\\|_{S_4} = (\\sum_i \\sigma_i^4)^{1/4}`, an upper bound on
        :math:`\\sigma_1` up to :math:`\\mathrm{rank}^{1/4}` tighter than the Frobenius norm, so
        small singular values start larger and converge in fewer steps (free: it is read off
        the first Gram matrix). ``"frobenius"``: Muon's normalization.
    return_info : bool, optional
        Return an `MsignResult` with the measured ``orthogonality`` (one more Gram product, in
        float64 with its rounding bounded), ``sv_bounds`` and ``scale`` instead of Q alone.

    Returns
    -------
    Q : (M, N) ndarray or MsignResult
        The approximation of U V^T in the dtype of A (a dask array for a dask A); with
        ``return_info=True`` an `MsignResult` holding ``Q``, ``orthogonality``, ``sv_bounds``,
        ``scale``, ``n_iter`` and ``coefficients``.

    Raises
    ------
    TypeError
        If A is not float32/float64, ``steps`` is not an integer or ``coefficients`` is neither
        a name nor a sequence of triples.
    ValueError
        If A is not 2-D (or a stack), empty or non-finite, ``steps < 1``, ``scaling`` or the ``coefficients``
        name is unknown, or a triple is not three finite numbers.

    See Also
    --------
    polar : the exact factor by SVD.
    ns_polynomial : the scalar map applied to each singular value.

    Notes
    -----
    With :math:`X_0 = A / s` (``s = msign(A, return_info=True).scale``, singular values in (0, 1)) each step is
    :math:`X_{t+1} = a_t X_t + (b_t G_t + c_t G_t^2) X_t`, :math:`G_t = X_t X_t^T` (on the
    smaller side), which maps every singular value by
    :math:`p_t(\\sigma) = a_t\\sigma + b_t\\sigma^3 + c_t\\sigma^5` and leaves the singular vectors
    alone. The input is first scaled by a power of two so that tiny inputs do not underflow (no
    additive epsilon that would swamp them). Singular values below about 1e-3 of ``s`` are not
    brought to 1 by 5 steps of either schedule; ``orthogonality`` says what was reached. The
    zero matrix maps to zero.

    Cost, for A of shape (m, n), m <= n: :math:`3m^2n + m^3` flops a step, the two symmetric
    products by syrk, and the first Gram matrix (which also gives the Schatten-4 norm) is shared
    with the scaling. Evaluating the steps on the m x m Gram matrix alone would need fewer flops
    but amplifies the rounding of :math:`G_0` by :math:`\\prod_t a_t^2` in the directions of
    small singular values (eps/sigma^2 relative error), so it is not done.

    References
    ----------
    .. [1] K. Jordan et al., "Muon: an optimizer for hidden layers in neural networks", 2024.
    .. [2] N. Amsel, D. Persson, C. Musco and R. M. Gower, "The Polar Express: optimal matrix
       sign methods and their application to the Muon algorithm", arXiv:2505.16932, 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.polar import msign
    >>> A = np.diag([1.0, 0.5, 0.1])
    >>> Q = msign(A, steps=10, coefficients="polar_express")
    >>> bool(np.allclose(Q, np.eye(3)))
    True
    >>> msign(A, steps=10, coefficients="polar_express", return_info=True).orthogonality < 1e-12
    True
    """
    steps = _validate.positive_int("steps", steps)
    sched = _schedule(coefficients, steps)
    scaling = _validate.choice("scaling", scaling, ("schatten4", "frobenius"))
    return_info = bool(return_info)
    op = _operators.as_operator(A, "A", stack=True, family="msign")
    if op.is_dask:
        Q, orth, scale = _dask.msign_factor(op.data, sched, scaling, return_info)
        if not return_info:
            return Q
        bounds = (math.sqrt(max(1.0 - orth, 0.0)), math.sqrt(1.0 + orth))
        return MsignResult(Q, orth, (0.0, 0.0) if scale == 0.0 else bounds, scale, steps, coefficients)
    arr = op.dense("msign")
    if arr.ndim == 2:
        return _msign_one(arr, sched, scaling, return_info, steps, coefficients)
    parts = [_msign_one(M, sched, scaling, return_info, steps, coefficients) for M in arr.reshape((-1,) + op.shape)]
    if not return_info:
        return np.stack(parts).reshape(arr.shape)
    batch = op.batch_shape
    return MsignResult(
        np.stack([p.Q for p in parts]).reshape(arr.shape),
        np.array([p.orthogonality for p in parts]).reshape(batch),
        tuple(np.array([p.sv_bounds[i] for p in parts]).reshape(batch) for i in (0, 1)),
        np.array([p.scale for p in parts]).reshape(batch),
        steps,
        coefficients,
    )


def _msign_one(arr, sched, scaling, return_info, steps, coefficients):
    tall = arr.shape[0] > arr.shape[1]
    Y, f, G, scale = _scaled_gram(arr.T if tall else arr, scaling)
    if Y is None:
        Z = np.zeros_like(arr)
        return MsignResult(Z, math.sqrt(min(arr.shape)), (0.0, 0.0), 0.0, steps, coefficients) if return_info else Z
    X = _steps(Y, f, G, sched)
    Q = np.ascontiguousarray(X.T if tall else X)
    if not return_info:
        return Q
    orth = _orthogonality_bound(X)
    bounds = (math.sqrt(max(1.0 - orth, 0.0)), math.sqrt(1.0 + orth))
    return MsignResult(Q, orth, bounds, scale, steps, coefficients)


def polar(A):
    """Exact orthogonal polar factor U V^T of A by the SVD.

    Parameters
    ----------
    A : (M, N) array_like or (..., M, N) stack
        Real float32 or float64 matrix, or a stack of them.

    Returns
    -------
    Q : (M, N) or (..., M, N) ndarray
        U V^T from the thin SVD A = U diag(s) V^T, in the dtype of A (for rank-deficient A the
        factor is not unique; this is the one the SVD returns).

    Raises
    ------
    TypeError
        If A is not float32/float64.
    ValueError
        If A is not 2-D (or a stack), empty or non-finite.

    See Also
    --------
    msign : the Newton–Schulz approximation (GEMMs only).
    scipy.linalg.polar : the factor and the positive semidefinite part.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.polar import polar
    >>> polar(np.diag([2.0, 0.5]))
    array([[1., 0.],
           [0., 1.]])
    """
    op = _operators.as_operator(A, "A", stack=True, family="polar")
    arr = op.dense("polar")
    if arr.ndim > 2:
        return np.stack([polar(M) for M in arr.reshape((-1,) + op.shape)]).reshape(arr.shape)
    U, _, Vt = scipy.linalg.svd(arr, full_matrices=False, check_finite=False)
    return U @ Vt
