"""The one result contract, and the result of `power_iteration`.

Every object a public function returns to describe a computation derives from `Result`; its
docstring is the contract. `ConvergenceWarning` and `DegenerateSingularValueWarning` live here too.
"""

import dataclasses
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np


class ConvergenceWarning(UserWarning):
    """An iteration stopped at its cap before meeting its tolerance; the best answer is returned."""


class DegenerateSingularValueWarning(UserWarning):
    """sigma1 and sigma2 are numerically indistinguishable: singular vectors and the gradient are not unique."""


# A generated repr prints one line when it fits, else one field per line.
_REPR_LINE = 100


def _fmt(x):
    """One field's value, short: scalars by %.6g, arrays by shape and dtype, containers by their items."""
    if x is None or isinstance(x, (bool, np.bool_)):
        return str(bool(x)) if x is not None else "None"
    if isinstance(x, (numbers.Integral, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.6g}"
    if isinstance(x, str):
        return repr(x)
    if isinstance(x, np.dtype):
        return str(x)
    if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype != object:
        return _fmt(x.item())
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        name = "array" if isinstance(x, np.ndarray) else f"{type(x).__module__.split('.')[0]}.{type(x).__name__}"
        return f"{name}(shape={tuple(x.shape)}, dtype={x.dtype})"
    if isinstance(x, tuple):
        inner = ", ".join(_fmt(v) for v in x)
        return f"({inner},)" if len(x) == 1 else f"({inner})"
    if isinstance(x, list):
        return f"list(len={len(x)})"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k!r}: {_fmt(v)}" for k, v in x.items()) + "}"
    text = repr(x)
    return text if len(text) <= 60 else f"<{type(x).__name__}>"


class Result:
    """Base of every result class: one set of names for one meaning, one repr, one way to unpack.

    **The contract.** Every result class is a frozen dataclass deriving from `Result`, and every field it has
    that carries one of these meanings has this name, and no other:

    ``converged`` : bool (a bool array for stacks)
        Whether the procedure met its stopping rule: its tolerance when one was given, its fixed
        budget otherwise (then always True). Never None. When False, a `ConvergenceWarning` was
        emitted and the best answer found is returned.
    ``n_iter`` : int
        Iterations taken (power, Lanczos, Newton, QR or polynomial steps; whatever the class's
        docstring says one iteration is).
    ``n_matvecs`` : int
        Products of the operator (or of its transpose) with one vector; a block of k columns
        counts k. Present where the procedure is matrix-free.
    ``n_passes`` : int
        Reads of the whole of the data, where that is the cost that matters.
    ``error_bound`` : float
        A bound that holds: deterministically, up to rounding, or with a probability stated in
        ``error_bound_failure``. Each class's docstring says what quantity it bounds
        (absolute or relative, which norm).
    ``error_estimate`` : float
        An estimate with no guarantee (a first-order or statistical estimate). A class has
        ``error_bound`` when it can certify and ``error_estimate`` when it cannot; a few have both.
    ``seed`` : int or None
        ``rng=seed`` reproduces the run exactly; None when nothing random ran.
    ``method`` : str
        The algorithm that ran (after "auto" made its choice).

    Qualified variants carry the qualifier as a suffix (``error_bound_failure``,
    ``error_bound_spectral``, ``error_bound_relative``).

    **repr.** Generated from the declared fields, in order: ``Name(field=value, ...)`` with scalars
    formatted by ``%.6g``, arrays by shape and dtype; one line when it fits, else one field
    per line. No class writes its own.

    **Unpacking.** A result that is a decomposition unpacks like the tuple its scipy or scikit-learn
    counterpart returns (``U, s, Vt = randomized_svd(A, 10)``); the class attribute
    ``_unpack`` names the fields, in order. Other results refuse to unpack (TypeError).

    **Renamed fields.** Old names from before the contract still read, with a `DeprecationWarning`, for one
    release (``_renamed`` maps old name to new).
    """

    _unpack = ()
    _renamed = {}

    def __repr__(self):
        items = [f"{f.name}={_fmt(getattr(self, f.name))}" for f in dataclasses.fields(self) if f.repr]
        line = f"{type(self).__name__}({', '.join(items)})"
        if len(line) <= _REPR_LINE:
            return line
        return f"{type(self).__name__}(\n" + "".join(f"    {item},\n" for item in items) + ")"

    def __iter__(self):
        if not self._unpack:
            raise TypeError(f"{type(self).__name__} does not unpack; read its fields by name")
        return iter(tuple(getattr(self, name) for name in self._unpack))

    def __getattr__(self, name):
        # Only reached when normal lookup fails: old field names from before the contract.
        new = type(self)._renamed.get(name)
        if new is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        warnings.warn(
            f"`{type(self).__name__}.{name}` was renamed `{new}`; the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self, new)


@dataclass(frozen=True, repr=False)
class PowerIterationResult(Result):
    """Top singular triplet of A and what is known about its accuracy.

    For a stack of matrices of shape (..., m, n) every field carries the batch shape in front.
    Unpacks as ``sigma, u, v = power_iteration(A)``.

    Attributes
    ----------
    sigma : float or ndarray
        Estimate of sigma1 = ||A||_2, equal to ||A v|| (float64).
    u, v : ndarray
        Unit left and right singular vector estimates, in the dtype of A.
    converged : bool or ndarray
        Whether ``residual <= tol`` was reached within ``maxiter``.
    n_iter : int or ndarray
        Products with the Gram operator (A^T A or A A^T); for ``method="block"``, block
        products, the certifying one included.
    n_matvecs : int or ndarray
        Products with A plus products with A^T (two per Gram product; a block of b vectors
        counts b).
    n_passes : int or ndarray
        Reads of the whole of A: one per Gram product with the one-pass kernel for arrays,
        two for operators; for ``method="block"`` one per block product, the certificate
        included (and one to find the scale of a matrix far from unit size).
    residual : float or ndarray
        max(||A v - sigma u||, ||A^T u - sigma v||) / sigma, measured on the returned vectors.
    error_bound : float or ndarray
        Bound on ``|sigma - sigma_j| / sigma_j`` for the singular value sigma_j nearest sigma,
        residual / sqrt(2); sigma_j is sigma1 unless the start vector hid v1 (see
        ``upper_bound``). Always holds when ``converged`` and sigma_j = sigma1.
    lower_bound : float or ndarray
        Certified lower bound on sigma1: ||A v|| for the unit vector v (up to the rounding of
        one product).
    upper_bound : float or ndarray
        Upper bound on sigma1 that holds with probability at least ``1 - upper_bound_failure``
        over the Gaussian start vector (Kuczyński–Woźniakowski argument, see the theory page);
        ``inf`` when the start vector ``v0`` was given. For ``method="block"`` the argument
        runs on the first cycle's block Krylov space, for each Gaussian column of the start
        block (with ``v0``, the columns beside it).
    upper_bound_failure : float
        Probability that ``upper_bound`` fails.
    sin_theta_bound : float or ndarray
        Bound on sin of the angle between v and v1 by the Davis–Kahan sin-theta theorem,
        using ``ratio_estimate`` for sigma2/sigma1 (an estimate, so this bound is as good as it).
    ratio_estimate : float or ndarray
        Estimate of sigma2 / sigma1 (from the convergence rate of power steps, or the second
        Ritz value of Lanczos, which is a lower bound on sigma2).
    history : list or ndarray of object
        sigma after each iteration (Lanczos: after each convergence check).
    method : str
        "power", "lanczos" or "block": what finally ran ("auto" switches from the first to the
        second, or takes "block" for a memory-mapped file too large to hold).
    stop_reason : str or ndarray
        "converged", "maxiter", "exact" (an invariant subspace was found), "zero" (A = 0) or,
        for "block", "stalled" (the residual stopped decreasing at the rounding of the float64
        products before reaching the tolerance).
    seed : int or None
        Seed of the random start vector: ``rng=seed`` reproduces the run; None when v0 was given
        (except for "block", whose start block holds random columns beside v0).
    """

    sigma: object
    u: np.ndarray
    v: np.ndarray
    converged: object
    n_iter: object
    n_matvecs: object
    n_passes: object
    residual: object
    error_bound: object
    lower_bound: object
    upper_bound: object
    upper_bound_failure: float
    sin_theta_bound: object
    ratio_estimate: object
    history: object = field(compare=False)
    method: str
    stop_reason: object
    seed: object

    _unpack = ("sigma", "u", "v")
