"""Frozen dataclasses returned by the iterative routines, with their diagnostics."""

from dataclasses import dataclass, field

import numpy as np


class ConvergenceWarning(UserWarning):
    """An iteration stopped at its cap before meeting its tolerance; the best answer is returned."""


class DegenerateSingularValueWarning(UserWarning):
    """sigma1 and sigma2 are numerically indistinguishable: singular vectors and the gradient are not unique."""


def _fmt(x):
    x = np.asarray(x)
    if x.ndim == 0:
        return f"{float(x):.6g}"
    return f"array(shape={x.shape}, min={x.min():.3g}, max={x.max():.3g})"


@dataclass(frozen=True, repr=False)
class PowerIterationResult:
    """Top singular triplet of A and what is known about its accuracy.

    For a stack of matrices of shape (..., m, n) every field carries the batch shape in front.

    Attributes
    ----------
    sigma : float or ndarray
        Estimate of sigma1 = ||A||_2, equal to ||A v|| (float64).
    u, v : ndarray
        Unit left and right singular vector estimates, in the dtype of A.
    converged : bool or ndarray
        Whether ``residual <= tol`` was reached within ``maxiter``.
    n_iter : int or ndarray
        Products with the Gram operator (A^T A or A A^T).
    n_matvecs : int or ndarray
        Products with A plus products with A^T (two per Gram product).
    n_passes : int or ndarray
        Reads of the whole of A: one per Gram product with the one-pass kernel for arrays,
        two for operators.
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
        ``inf`` when the start vector ``v0`` was given.
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
        "power" or "lanczos": what finally ran ("auto" switches from the first to the second).
    stop_reason : str or ndarray
        "converged", "maxiter", "exact" (an invariant subspace was found) or "zero" (A = 0).
    seed : int or None
        Seed of the random start vector: ``rng=seed`` reproduces the run; None when v0 was given.
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

    def __repr__(self):
        conv = np.asarray(self.converged)
        state = "converged" if conv.all() else f"NOT converged ({int((~conv).sum())} of {conv.size})"
        if conv.ndim == 0:
            state = "converged" if bool(conv) else "NOT converged"
        return (
            f"PowerIterationResult: {state} by {self.method} after {_fmt(self.n_iter)} iterations, "
            f"residual {_fmt(self.residual)}\n"
            f"  sigma={_fmt(self.sigma)}  in [{_fmt(self.lower_bound)}, {_fmt(self.upper_bound)}]"
            f"  ratio_estimate={_fmt(self.ratio_estimate)}  n_matvecs={_fmt(self.n_matvecs)}"
            f"  stop_reason={self.stop_reason if conv.ndim == 0 else '...'}"
        )
