"""Weight RMS of AdamW and SignSGDM with weight decay, the update RMS of Adam, and a simulator.

The predictions treat every coordinate's gradient as ``mu + sigma * xi_t`` with i.i.d. standard
normal ``xi_t`` and a signal-to-noise ratio ``snr = ||mu||^2 / ||sigma||^2`` shared by all
coordinates; ``docs/theory/dynamics.rst`` derives them. The simulator runs exactly that model
with numba, so the two can be checked against each other.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from . import _dynamics_kernels as _k
from . import _validate, config
from .results import Result

__all__ = [
    "adamw_weight_rms",
    "signsgdm_weight_rms",
    "adam_update_rms",
    "simulate_weight_rms",
    "WeightRMSSimulation",
]

_OPTIMIZERS = {"adamw": _k.ADAMW, "signsgdm": _k.SIGNSGDM, "adam": _k.ADAM, "sgdm": _k.SGDM}


# -- input checks (private: the module's own, on top of _validate) ------------------------------
def _beta(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float in [0, 1), got {value!r}")
    value = float(value)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"`{name}` must be a float in [0, 1), got {value}")
    return value


def _steps(value, *, allow_none=True):
    if value is None and allow_none:
        return None
    return _validate.positive_int("steps", value, minimum=0)


def _rate(name, value):
    """A positive finite float, or a non-empty 1-D schedule of them (returned as float64 array)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return _validate.positive(name, value)
    if isinstance(value, (np.ndarray, list, tuple)):
        arr = np.asarray(value)
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.float64)
        if arr.dtype.kind != "f":
            raise TypeError(f"`{name}` must be a positive float or a 1-D array of them, got dtype {arr.dtype}")
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"`{name}` must be a positive float or a non-empty 1-D schedule, got shape {arr.shape}")
        arr = np.asarray(arr, dtype=np.float64)
        _validate.finite(name, arr)
        if (arr <= 0).any():
            k = int(np.argmax(arr <= 0))
            raise ValueError(f"`{name}` must be positive at every step, got {arr[k]} at step {k}")
        return arr
    return _validate.positive(name, value)  # raises the TypeError naming the argument


def _schedules(lr, weight_decay, steps):
    """Validate lr and weight_decay; return (eta, lam, steps, is_schedule) with arrays for schedules."""
    eta = _rate("lr", lr)
    lam = _rate("weight_decay", weight_decay)
    sched = isinstance(eta, np.ndarray) or isinstance(lam, np.ndarray)
    if sched:
        lens = {a.shape[0] for a in (eta, lam) if isinstance(a, np.ndarray)}
        if len(lens) > 1:
            raise ValueError(f"`lr` and `weight_decay` schedules must have the same length, got {sorted(lens)}")
        length = lens.pop()
        if steps is not None and steps != length:
            raise ValueError(f"`steps` must be None or the schedule length {length} with a schedule, got {steps}")
        eta = np.broadcast_to(eta, (length,)).astype(np.float64)
        lam = np.broadcast_to(lam, (length,)).astype(np.float64)
        kappa = eta * lam
        if (kappa >= 1).any():
            k = int(np.argmax(kappa >= 1))
            raise ValueError(f"`lr * weight_decay` must be < 1 at every step, got {kappa[k]} at step {k}")
        return eta, lam, length, True
    if eta * lam >= 1:
        raise ValueError(f"`lr * weight_decay` must be < 1, got {eta * lam}")
    return eta, lam, steps, False


def _init(init_rms):
    if init_rms is None:
        return 0.0
    return _validate.nonnegative("init_rms", init_rms)


# -- statistics of the update direction ---------------------------------------------------------
def _adam_update_stats(beta1, snr):
    """Mean-field mean ``a`` of Adam's direction, and its lag-sum function K(r)."""
    c = (1.0 - beta1) / (1.0 + beta1)
    a = math.sqrt(snr / (snr + 1.0))
    var = c / (snr + 1.0)

    def lagsum(kappa):  # Var(u) * sum_d rho_d r^|d|, rho_d = beta1^d, r = 1 - kappa
        r = 1.0 - np.asarray(kappa)
        return var * (1.0 + beta1 * r) / (1.0 - beta1 * r)

    return a, lagsum, var * _lag_powers(beta1)


def _lag_powers(beta1):
    """beta1^d for d = 0..D, D the lag where it drops below DYNAMICS_LAG_TOL (capped at DYNAMICS_MAX_LAGS)."""
    if beta1 == 0.0:
        return np.ones(1)
    D = min(config.DYNAMICS_MAX_LAGS, math.ceil(math.log(config.DYNAMICS_LAG_TOL) / math.log(beta1)))
    return np.exp(np.arange(D + 1, dtype=np.float64) * math.log(beta1))


def _sign_covariances(beta1, h):
    """Cov(sign m_t, sign m_{t+d}) for d = 0..D, m stationary Gaussian with mean/std h, corr beta1^d.

    For standardized mean h and correlation rho, Plackett's identity gives
    Cov = (2/pi) int_0^{arcsin rho} exp(-h^2 / (1 + sin phi)) dphi, which is (2/pi) arcsin rho for
    h = 0 and 1 - erf(h / sqrt 2)^2 for rho = 1.
    """
    rho = _lag_powers(beta1)
    phi_max = np.arcsin(np.minimum(rho, 1.0))
    x, w = np.polynomial.legendre.leggauss(config.DYNAMICS_QUAD_NODES)
    phi = 0.5 * phi_max[:, None] * (x[None, :] + 1.0)
    integral = 0.5 * phi_max * (np.exp(-(h * h) / (1.0 + np.sin(phi))) @ w)
    cov = (2.0 / math.pi) * integral
    cov[0] = 1.0 - math.erf(h / math.sqrt(2.0)) ** 2  # rho = 1 in closed form
    return cov, rho


def _signsgdm_update_stats(beta1, snr):
    """Exact mean ``a`` of sign(m) and its lag-sum function K(r) for Gaussian gradients."""
    c = (1.0 - beta1) / (1.0 + beta1)
    h = math.sqrt(snr / c)  # mean of m over its stationary standard deviation sigma sqrt(c)
    a = math.erf(h / math.sqrt(2.0))
    cov, rho = _sign_covariances(beta1, h)
    D = cov.shape[0] - 1
    truncated = D == config.DYNAMICS_MAX_LAGS

    def lagsum(kappa):
        kappa = np.atleast_1d(np.asarray(kappa, dtype=np.float64))
        logr = np.log1p(-kappa)
        total = np.full(kappa.shape, cov[0])
        if D > 0:
            d = np.arange(1, D + 1, dtype=np.float64)
            total = total + 2.0 * (np.exp(np.outer(logr, d)) @ cov[1:])
            if truncated:  # beyond D the covariance is linear in rho: geometric tail
                q = beta1 * np.exp(logr)
                total = total + 2.0 * cov[D] * np.exp(D * logr) * q / (1.0 - q)
        return total

    return a, lagsum, cov


# -- the predictions ----------------------------------------------------------------------------
def _predict(a, lagsum, cov, eta, lam, steps, sched, init):
    """RMS from the mean ``a`` and lag sum K of the direction: init decay + mean^2 + noise."""
    if not sched:
        kappa = eta * lam
        K = float(np.asarray(lagsum(kappa)).reshape(-1)[0])
        denom = kappa * (2.0 - kappa)  # 1 - r^2 without cancellation
        if steps is None:
            ms = (a / lam) ** 2 + eta * eta * K / denom
            return math.sqrt(ms)
        logr = math.log1p(-kappa)
        grow = -math.expm1(steps * logr)  # 1 - r^t
        # exact finite pair sum: lag d pairs exist only for t - d inputs, C_d r^d (1 - r^{2(t-d)})
        d = np.arange(1, min(cov.shape[0] - 1, steps - 1) + 1, dtype=np.float64)
        pairs = cov[0] * -math.expm1(2.0 * steps * logr)
        if d.size:
            pairs += 2.0 * float(np.sum(cov[1 : d.size + 1] * np.exp(d * logr) * -np.expm1(2.0 * (steps - d) * logr)))
        ms = math.exp(2.0 * steps * logr) * init**2 + (a * grow / lam) ** 2 + eta * eta * pairs / denom
        return math.sqrt(ms)
    # schedules: the exact pair sum over the lags of the direction's autocovariance
    T = eta.shape[0]
    first, second, survive = np.empty(T), np.empty(T), np.empty(T)
    _k.ema_moments(np.ascontiguousarray(1.0 - eta * lam), np.ascontiguousarray(eta), cov, first, second, survive)
    return np.sqrt(survive**2 * init**2 + (a * first) ** 2 + second)


def adamw_weight_rms(lr, weight_decay, *, beta1=0.9, beta2=0.999, snr=0.0, steps=None, init_rms=None):
    """Predicted RMS of weights trained by AdamW with decoupled weight decay.

    Parameters
    ----------
    lr : float or (T,) array_like
        Learning rate eta (positive), or a schedule with one entry per step.
    weight_decay : float or (T,) array_like
        Decoupled weight decay lambda (positive; PyTorch's ``AdamW(weight_decay=...)``), or a
        schedule. The weights shrink by ``1 - lr * weight_decay`` every step.
    beta1 : float, optional
        Momentum coefficient, in [0, 1).
    beta2 : float, optional
        Second-moment coefficient, in [0, 1). It enters the prediction only at relative order
        ``1 - beta2`` (fluctuations of the second-moment estimate), which is neglected.
    snr : float, optional
        Gradient signal-to-noise ratio ``||mu||^2 / ||sigma||^2`` (non-negative): mean over noise
        of the per-coordinate gradient distribution, the same ratio in every coordinate.
    steps : int, optional
        Number of steps t >= 0 taken; the steady state (t -> infinity) when None. Must be None
        or the schedule length when ``lr`` or ``weight_decay`` is a schedule.
    init_rms : float, optional
        RMS of the initial weights (zero when None); forgotten in the steady state.

    Returns
    -------
    rms : float or (T,) ndarray
        Predicted ``||theta_t||_RMS``. For schedules the trajectory: entry ``t - 1`` is the RMS
        after ``t`` steps.

    Raises
    ------
    TypeError
        If an argument is not a number (or, for ``lr`` and ``weight_decay``, a float array).
    ValueError
        If ``lr`` or ``weight_decay`` is not positive and finite, ``lr * weight_decay >= 1``, a
        beta is outside [0, 1), ``snr`` or ``init_rms`` is negative, ``steps`` is negative, or
        the schedules disagree in length.

    See Also
    --------
    signsgdm_weight_rms : the same for sign descent with momentum.
    adam_update_rms : RMS of Adam's update direction.
    simulate_weight_rms : the simulation these predictions are checked against.

    Notes
    -----
    With :math:`r_t = 1 - \\eta_t\\lambda_t` the weights are an exponential moving sum of the
    update directions :math:`u_s`,

    .. math::

        \\theta_t = P_t\\,\\theta_0 - \\sum_{s \\le t} w_{s,t}\\,u_s,\\qquad
        w_{s,t} = \\eta_s \\prod_{i=s+1}^{t} r_i,\\qquad P_t = \\prod_{i \\le t} r_i
        \\approx e^{-\\kappa_t},\\quad \\kappa_t = \\sum_{i\\le t}\\eta_i\\lambda_i .

    In the mean-field view Adam's direction is :math:`u = m / \\sqrt{E g^2}`, with mean
    :math:`a = \\sqrt{\\mathrm{SNR}/(\\mathrm{SNR}+1)}`, variance :math:`c/(\\mathrm{SNR}+1)`,
    :math:`c = (1-\\beta_1)/(1+\\beta_1)`, and autocorrelation :math:`\\beta_1^{|d|}`. Then

    .. math::

        \\|\\theta_t\\|_\\mathrm{RMS}^2 \\approx P_t^2\\|\\theta_0\\|^2_\\mathrm{RMS}
        + a^2 \\Big(\\sum_s w_{s,t}\\Big)^2
        + \\frac{c}{\\mathrm{SNR}+1}\\,\\frac{1+\\beta_1 r}{1-\\beta_1 r}\\sum_s w_{s,t}^2,

    which for constant hyperparameters is Kosson et al.'s estimate,
    :math:`\\|\\theta_\\infty\\|^2_\\mathrm{RMS} = (\\mathrm{SNR} + \\eta\\lambda/2)
    / (\\lambda^2(\\mathrm{SNR}+1))` up to :math:`O(\\eta\\lambda)`, and
    :math:`\\sqrt{\\eta/(2\\lambda)}` for zero-mean gradients. The products are computed
    exactly (``log1p``/``expm1``), so :math:`\\lambda \\to 0` gives the random walk
    :math:`\\eta\\sqrt{t}`.

    References
    ----------
    .. [1] A. Kosson, B. Messmer and M. Jaggi, "Rotational equilibrium: how weight decay
       balances learning across neural networks", ICML 2024.
    .. [2] I. Loshchilov and F. Hutter, "Decoupled weight decay regularization", ICLR 2019.

    Examples
    --------
    >>> from linalg_lowrank.dynamics import adamw_weight_rms
    >>> round(adamw_weight_rms(1e-3, 0.1), 4)  # about sqrt(lr / (2 wd)) = 0.0707
    0.0707
    >>> round(adamw_weight_rms(1e-3, 0.1, steps=10_000, init_rms=0.02), 4)
    0.0661
    """
    beta1 = _beta("beta1", beta1)
    _beta("beta2", beta2)
    snr = _validate.nonnegative("snr", snr)
    steps = _steps(steps)
    init = _init(init_rms)
    eta, lam, steps, sched = _schedules(lr, weight_decay, steps)
    a, lagsum, cov = _adam_update_stats(beta1, snr)
    return _predict(a, lagsum, cov, eta, lam, steps, sched, init)


def signsgdm_weight_rms(lr, weight_decay, *, beta1=0.9, snr=0.0, steps=None, init_rms=None):
    """Predicted RMS of weights trained by sign descent with momentum and decoupled weight decay.

    The update is ``m = beta1 m + (1 - beta1) g``, ``theta = (1 - lr wd) theta - lr sign(m)``.

    Parameters
    ----------
    lr : float or (T,) array_like
        Learning rate (positive), or a schedule with one entry per step.
    weight_decay : float or (T,) array_like
        Decoupled weight decay (positive), or a schedule.
    beta1 : float, optional
        Momentum coefficient, in [0, 1).
    snr : float, optional
        Gradient signal-to-noise ratio ``||mu||^2 / ||sigma||^2`` (non-negative), the same in
        every coordinate.
    steps : int, optional
        Number of steps t >= 0 taken; the steady state when None. Must be None or the schedule
        length with a schedule.
    init_rms : float, optional
        RMS of the initial weights (zero when None).

    Returns
    -------
    rms : float or (T,) ndarray
        Predicted ``||theta_t||_RMS`` (for schedules entry ``t - 1`` is after ``t`` steps).

    Raises
    ------
    TypeError
        If an argument is not a number (or, for ``lr`` and ``weight_decay``, a float array).
    ValueError
        If ``lr`` or ``weight_decay`` is not positive and finite, ``lr * weight_decay >= 1``,
        ``beta1`` is outside [0, 1), ``snr`` or ``init_rms`` is negative, ``steps`` is
        negative, or the schedules disagree in length.

    See Also
    --------
    adamw_weight_rms : the same for AdamW.
    simulate_weight_rms : the simulation these predictions are checked against.

    Notes
    -----
    The momentum of Gaussian gradients is Gaussian, stationary with mean :math:`\\mu` and
    variance :math:`\\sigma^2 c`, :math:`c = (1-\\beta_1)/(1+\\beta_1)`, and correlation
    :math:`\\rho_d = \\beta_1^{d}` at lag :math:`d`. With :math:`h = \\mu/(\\sigma\\sqrt{c})` the
    direction :math:`\\operatorname{sign}(m)` has mean :math:`a = \\operatorname{erf}(h/\\sqrt2)`
    and, by Plackett's identity for the bivariate normal orthant probability,

    .. math::

        C_d = \\operatorname{Cov}(\\operatorname{sign} m_t, \\operatorname{sign} m_{t+d})
        = \\frac{2}{\\pi}\\int_0^{\\arcsin\\rho_d} e^{-h^2/(1+\\sin\\phi)}\\,d\\phi,

    which is the arcsine law :math:`\\tfrac{2}{\\pi}\\arcsin\\rho_d` for :math:`\\mu = 0`. Then

    .. math::

        \\|\\theta_t\\|^2_\\mathrm{RMS} \\approx P_t^2\\|\\theta_0\\|^2_\\mathrm{RMS}
        + a^2\\Big(\\sum_s w_{s,t}\\Big)^2 + K(r)\\sum_s w_{s,t}^2,\\qquad
        K(r) = C_0 + 2\\sum_{d\\ge1} C_d\\, r^d .

    The mean-field estimate replaces :math:`\\operatorname{sign}(m)` by :math:`m/\\|m\\|_\\mathrm{RMS}`,
    that is :math:`C_d \\to \\rho_d/(1 + h^2)` and :math:`a^2 \\to h^2/(1+h^2)` (the SNR term of the
    AdamW formula becoming :math:`\\mathrm{SNR} + c`). Since
    :math:`\\tfrac{2}{\\pi}\\arcsin\\rho \\le \\rho` it overestimates the zero-mean steady state
    (by 20% in RMS for :math:`\\beta_1` from 0.9 to 0.99), and since :math:`\\operatorname{erf}(h/\\sqrt2)
    \\approx \\sqrt{2/\\pi}\\,h` it overestimates the signal branch by up to
    :math:`\\sqrt{\\pi/2}`. The sums :math:`C_d` are computed by Gauss–Legendre quadrature
    until :math:`\\beta_1^d < 10^{-17}`.

    References
    ----------
    .. [1] J. Bernstein, Y.-X. Wang, K. Azizzadenesheli and A. Anandkumar, "signSGD: compressed
       optimisation for non-convex problems", ICML 2018.
    .. [2] R. L. Plackett, "A reduction formula for normal multivariate integrals",
       Biometrika 41, 1954.
    .. [3] A. Kosson, B. Messmer and M. Jaggi, "Rotational equilibrium: how weight decay
       balances learning across neural networks", ICML 2024.

    Examples
    --------
    >>> from linalg_lowrank.dynamics import signsgdm_weight_rms
    >>> round(signsgdm_weight_rms(1e-3, 0.1), 4)  # mean field: 0.3082
    0.2576
    >>> round(signsgdm_weight_rms(1e-3, 0.1, beta1=0.0), 4)  # no momentum: sqrt(lr / (2 wd))
    0.0707
    """
    beta1 = _beta("beta1", beta1)
    snr = _validate.nonnegative("snr", snr)
    steps = _steps(steps)
    init = _init(init_rms)
    eta, lam, steps, sched = _schedules(lr, weight_decay, steps)
    a, lagsum, cov = _signsgdm_update_stats(beta1, snr)
    return _predict(a, lagsum, cov, eta, lam, steps, sched, init)


def adam_update_rms(beta1=0.9, beta2=0.999, *, snr=0.0):
    """Predicted RMS of Adam's update direction ``mhat / (sqrt(vhat) + eps)`` in the steady state.

    Parameters
    ----------
    beta1 : float, optional
        Momentum coefficient, in [0, 1).
    beta2 : float, optional
        Second-moment coefficient, in [0, 1).
    snr : float, optional
        Gradient signal-to-noise ratio ``||mu||^2 / ||sigma||^2`` (non-negative).

    Returns
    -------
    rms : float
        Predicted RMS of the direction (before the learning rate).

    Raises
    ------
    TypeError
        If an argument is not a number.
    ValueError
        If a beta is outside [0, 1) or ``snr`` is negative.

    See Also
    --------
    adamw_weight_rms : the weight RMS this direction produces with weight decay.

    Notes
    -----
    The mean-field value is :math:`E\\,m^2 / E\\,g^2 = (\\mathrm{SNR} + c)/(\\mathrm{SNR} + 1)`,
    :math:`c = (1-\\beta_1)/(1+\\beta_1)`, i.e. :math:`\\sqrt{c}` for zero-mean gradients.
    Expanding :math:`1/v = (1 - \\delta + \\delta^2)/E g^2` in the relative fluctuation
    :math:`\\delta` of the second-moment estimate adds the first order in :math:`1-\\beta_2`
    (with :math:`\\rho = \\mathrm{SNR}`, for Gaussian gradients):

    .. math::

        E u^2 \\approx \\frac{\\rho + c}{\\rho+1}
        - (1-\\beta_2)\\frac{\\frac{4\\rho(1-\\beta_1)}{1-\\beta_1\\beta_2}
          + \\frac{2(1-\\beta_1)^2}{1-\\beta_1^2\\beta_2}}{(\\rho+1)^2}
        + \\frac{1-\\beta_2}{1+\\beta_2}\\,\\frac{(\\rho+c)(4\\rho+2)}{(\\rho+1)^3}.

    The correction is -0.05% of the RMS at :math:`\\beta_2 = 0.999` and -0.5% at 0.99.

    References
    ----------
    .. [1] D. P. Kingma and J. Ba, "Adam: a method for stochastic optimization", ICLR 2015.
    .. [2] A. Kosson, B. Messmer and M. Jaggi, "Rotational equilibrium: how weight decay
       balances learning across neural networks", ICML 2024.

    Examples
    --------
    >>> from linalg_lowrank.dynamics import adam_update_rms
    >>> round(adam_update_rms(0.9, 0.999), 4)  # about sqrt(0.1 / 1.9) = 0.2294
    0.2293
    >>> round(adam_update_rms(0.9, 0.999, snr=1e6), 4)  # the signal dominates: sign-like steps
    1.0
    """
    beta1 = _beta("beta1", beta1)
    beta2 = _beta("beta2", beta2)
    rho = _validate.nonnegative("snr", snr)
    b1, b2 = beta1, beta2
    c = (1.0 - b1) / (1.0 + b1)
    mean_field = (rho + c) / (rho + 1.0)
    # E[m^2 delta] and E[m^2] E[delta^2], delta = v / E g^2 - 1 (first order in 1 - beta2)
    cross = (1 - b2) * (4 * rho * (1 - b1) / (1 - b1 * b2) + 2 * (1 - b1) ** 2 / (1 - b1 * b1 * b2)) / (rho + 1) ** 2
    spread = (1 - b2) / (1 + b2) * (rho + c) * (4 * rho + 2) / (rho + 1) ** 3
    return math.sqrt(mean_field - cross + spread)


# -- the simulator ------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class WeightRMSSimulation(Result):
    """Weight and update RMS over training of one simulated optimizer.

    Attributes
    ----------
    optimizer : str
        "adamw", "signsgdm", "adam" or "sgdm".
    steps : ndarray of int
        Steps at which the RMS was recorded: 0, k, 2k, ... (k = ``record_every``).
    weight_rms : ndarray
        ``||theta_t||_RMS`` over the n coordinates at those steps.
    update_rms : ndarray
        RMS of the update direction u_t (before the learning rate and weight decay) at those
        steps; NaN at step 0.
    n : int
        Number of coordinates.
    seed : int
        ``rng=seed`` reproduces the run exactly (for any thread count).
    params : dict
        The hyperparameters of the run (schedules summarized by their first and last value).
    """

    optimizer: str
    steps: np.ndarray
    weight_rms: np.ndarray
    update_rms: np.ndarray
    n: int
    seed: int
    params: dict


def _per_coordinate(name, value, n, *, positive):
    arr = np.asarray(value)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise TypeError(f"`{name}` must be a float or a float array of shape ({n},), got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    elif arr.shape != (n,):
        raise ValueError(f"`{name}` must be a float or have shape ({n},), got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    _validate.finite(name, arr)
    if positive and (arr < 0).any():
        raise ValueError(f"`{name}` must be non-negative, got {arr[np.argmax(arr < 0)]}")
    return arr


def _summary(x):
    if isinstance(x, np.ndarray):
        return f"schedule[{x[0]:.3g}..{x[-1]:.3g}]"
    return x


def _kernel_seed(seed):
    """The seed as the kernel's int64: itself below 2**63 (the seeds `_validate.rng` draws), else a hash of it.

    ``numpy.random.default_rng`` takes seeds of any size; the kernel's random streams start from a
    64-bit word, so a larger seed is folded to 63 bits by SeedSequence (same seed, same streams).
    """
    if seed < 2**63:
        return seed
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] >> np.uint64(1))


def simulate_weight_rms(
    optimizer,
    *,
    n,
    steps,
    lr,
    weight_decay,
    beta1=0.9,
    beta2=0.999,
    grad_mean=0.0,
    grad_std=1.0,
    init_rms=0.0,
    eps=1e-8,
    rng=None,
    record_every=None,
):
    """Simulate an optimizer on n independent coordinates with Gaussian gradients; record RMS.

    Every coordinate i gets the gradient ``grad_mean[i] + grad_std[i] * xi`` with fresh standard
    normal ``xi`` each step; its weight starts at a Gaussian draw scaled so that the initial RMS
    is exactly ``init_rms``.

    Parameters
    ----------
    optimizer : {"adamw", "signsgdm", "adam", "sgdm"}
        "adamw": Adam with decoupled weight decay (PyTorch ``AdamW``); "signsgdm": sign of an
        EMA momentum with decoupled weight decay; "adam": Adam with the L2 term
        ``weight_decay * theta`` added to the gradient (PyTorch ``Adam``); "sgdm": heavy-ball
        momentum ``m = beta1 m + g + weight_decay * theta`` (PyTorch ``SGD``, dampening 0).
    n : int
        Number of coordinates (>= 1).
    steps : int
        Number of steps (>= 0).
    lr : float or (steps,) array_like
        Learning rate, or a schedule.
    weight_decay : float or (steps,) array_like
        Weight decay, or a schedule.
    beta1 : float, optional
        Momentum coefficient, in [0, 1).
    beta2 : float, optional
        Adam's second-moment coefficient, in [0, 1) (unused by "signsgdm" and "sgdm").
    grad_mean : float or (n,) array_like, optional
        Gradient mean per coordinate.
    grad_std : float or (n,) array_like, optional
        Gradient standard deviation per coordinate (non-negative).
    init_rms : float, optional
        RMS of the initial weights (non-negative).
    eps : float, optional
        Adam's epsilon (non-negative).
    rng : None, int or numpy.random.Generator, optional
        Source of the seed; the result records the seed that reproduces the run.
    record_every : int, optional
        Record every this many steps; default ``max(1, steps // 1000)``.

    Returns
    -------
    result : WeightRMSSimulation
        ``steps``, ``weight_rms``, ``update_rms`` at the recorded steps, and ``seed``.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``optimizer`` is unknown, ``n < 1``, ``steps < 0``, ``lr`` or ``weight_decay`` is
        not positive and finite, a beta is outside [0, 1), ``grad_std``, ``init_rms`` or ``eps``
        is negative, or an array has the wrong shape.

    See Also
    --------
    adamw_weight_rms, signsgdm_weight_rms : the predictions this checks.

    Notes
    -----
    Coordinates are independent, so the numba kernel runs over chunks of coordinates in
    parallel; within a chunk the coordinates advance in lockstep, so the update runs on SIMD
    registers. Its normal numbers come from a counter-based source (a SplitMix64 stream per
    coordinate, derived from the seed and the coordinate index, turned into normals by the
    ziggurat method), so a coordinate's trajectory depends on the seed only, and the result is
    the same for any thread count.

    Examples
    --------
    >>> from linalg_lowrank.dynamics import adamw_weight_rms, simulate_weight_rms
    >>> sim = simulate_weight_rms("adamw", n=2000, steps=2000, lr=1e-2, weight_decay=1.0, rng=0)
    >>> pred = adamw_weight_rms(1e-2, 1.0, steps=2000)
    >>> bool(abs(sim.weight_rms[-1] / pred - 1) < 0.05)
    True
    """
    kind = _OPTIMIZERS.get(optimizer) if isinstance(optimizer, str) else None
    if kind is None:
        _validate.choice("optimizer", optimizer, tuple(_OPTIMIZERS))
    n = _validate.positive_int("n", n)
    steps = _steps(steps, allow_none=False)
    beta1 = _beta("beta1", beta1)
    beta2 = _beta("beta2", beta2)
    eps = _validate.nonnegative("eps", eps)
    init = _validate.nonnegative("init_rms", init_rms)
    eta = _rate("lr", lr)
    lam = _rate("weight_decay", weight_decay)
    for name, x in (("lr", eta), ("weight_decay", lam)):
        if isinstance(x, np.ndarray) and x.shape[0] != steps:
            raise ValueError(f"`{name}` schedule must have one entry per step ({steps}), got {x.shape[0]}")
    mu = _per_coordinate("grad_mean", grad_mean, n, positive=False)
    sd = _per_coordinate("grad_std", grad_std, n, positive=True)
    record_every = _validate.positive_int("record_every", record_every, default=max(1, steps // config.SIM_RECORDS))
    generator, seed = _validate.rng(rng)
    theta0 = generator.standard_normal(n)
    norm = math.sqrt(float(np.mean(theta0 * theta0)))
    theta0 *= init / norm if norm > 0 else 0.0
    n_records = 1 + steps // record_every
    n_chunks = -(-n // config.SIM_CHUNK)
    w_acc = np.zeros((n_chunks, n_records))
    u_acc = np.zeros((n_chunks, n_records))
    _k.simulate(
        kind,
        theta0,
        mu,
        sd,
        np.atleast_1d(np.asarray(eta, dtype=np.float64)),
        np.atleast_1d(np.asarray(lam, dtype=np.float64)),
        beta1,
        beta2,
        eps,
        _kernel_seed(seed),
        steps,
        record_every,
        config.SIM_CHUNK,
        w_acc,
        u_acc,
    )
    weight_rms = np.sqrt(w_acc.sum(axis=0) / n)
    update_rms = np.sqrt(u_acc.sum(axis=0) / n)
    update_rms[0] = np.nan
    params = {
        "lr": _summary(eta),
        "weight_decay": _summary(lam),
        "beta1": beta1,
        "beta2": beta2,
        "grad_mean": _summary(mu) if mu.shape[0] > 1 else float(mu[0]),
        "grad_std": _summary(sd) if sd.shape[0] > 1 else float(sd[0]),
        "init_rms": init,
        "eps": eps,
    }
    return WeightRMSSimulation(
        optimizer=optimizer,
        steps=np.arange(n_records, dtype=np.int64) * record_every,
        weight_rms=weight_rms,
        update_rms=update_rms,
        n=n,
        seed=seed,
        params=params,
    )
