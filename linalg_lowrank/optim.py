"""Reference optimizer steps, each written from its paper's algorithm box, on the library's linear algebra.

The API is the same for every optimizer ``X``::

    state = X_init(param)
    param, state = X_step(param, grad, state, *, lr=..., <hyper-parameters>, <curvature inputs>)

- ``param`` and ``grad`` are ndarrays of the same shape (matrices for Muon, Shampoo, SOAP and
  K-FAC); ``grad`` is cast to the dtype of ``param``, and float32 parameters stay float32.
- ``state`` is a plain dict (``state["t"]`` counts the steps taken); a step never modifies its
  inputs, it returns a new parameter array and a new dict (arrays that did not change may be
  shared between the old and the new dict). Curvature statistics (Shampoo's and SOAP's factors,
  K-FAC's) are kept in float64 whatever the parameter dtype.
- Hyper-parameters are keyword-only and validated on every call (errors name the argument).
- Curvature inputs are given by the caller: ``hvp`` (Hessian-vector products of this parameter's
  block, a callable taking an (n, k) block of vectors and returning the (n, k) products, as
  `linalg_lowrank.hutchinson_diagonal` accepts), ``activations`` and ``output_grads``
  (K-FAC), ``sampled_grad`` (Sophia-GNB), ``rng`` for the probes.
- Decoupled weight decay is PyTorch's convention everywhere: the step subtracts
  ``lr * weight_decay * param`` (so ``weight_decay`` means what it means in
  `linalg_lowrank.adamw_weight_rms`).

`linalg_lowrank.lab.train` runs any of them on the lab's MLP; `STEPS` maps the names it accepts
to ``(init, step)`` pairs. The updates are derived on the theory page "Reference optimizers".
"""

import dataclasses
import math
import numbers

import numpy as np

from . import _validate, config
from .curvature import lbfgs_inverse_hessian
from .hutchinson import HutchinsonAccumulator
from .kronecker import kfac_solve
from .polar import msign
from .roots import shampoo_precondition, symmetric_eig
from .spectral import power_iteration, spectral_weight_decay

__all__ = [
    "sgd_init",
    "sgd_step",
    "adamw_init",
    "adamw_step",
    "muon_init",
    "muon_step",
    "shampoo_init",
    "shampoo_step",
    "soap_init",
    "soap_step",
    "kfac_init",
    "kfac_step",
    "adahessian_init",
    "adahessian_step",
    "sophia_init",
    "sophia_step",
    "lbfgs_init",
    "lbfgs_step",
    "STEPS",
]


# ----------------------------------------------------------------------------------------- checks


def _param(param, *, matrix=False):
    arr = _validate.float_array("param", param, min_ndim=2 if matrix else 1, max_ndim=2 if matrix else None)
    return arr.view(np.ndarray)


def _grad(grad, param):
    g = _validate.float_array("grad", grad, min_ndim=1)
    if g.shape != param.shape:
        raise ValueError(f"`grad` must have the shape of `param` {param.shape}, got {g.shape}")
    return np.asarray(g, dtype=param.dtype)


def _state(state, keys, param, kind):
    if not isinstance(state, dict) or not set(keys) <= state.keys():
        raise TypeError(f"`state` must be the dict returned by {kind}_init or {kind}_step")
    for key in keys:
        value = state[key]
        if isinstance(value, np.ndarray) and value.shape == param.shape and key in ("m", "v", "buf", "h"):
            continue
        if key in ("m", "v", "buf", "h"):
            raise ValueError(f"`state['{key}']` must have the shape of `param` {param.shape}, got {np.shape(value)}")
    return state


def _unit_interval(name, value):
    value = _validate.nonnegative(name, value)
    if value >= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1), got {value}")
    return value


def _betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"`betas` must be a pair (beta1, beta2), got {betas!r}")
    b1, b2 = betas
    for i, b in enumerate((b1, b2)):
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, numbers.Real) or not (0.0 <= float(b) < 1.0):
            raise ValueError(f"`betas` must hold two numbers in [0, 1), got {betas!r} (entry {i})")
    return float(b1), float(b2)


def _zeros(param):
    return np.zeros(param.shape, dtype=param.dtype)


def _decayed(param, lr, weight_decay):
    return param - (lr * weight_decay) * param if weight_decay else param


# -------------------------------------------------------------------------------------------- SGD


def sgd_init(param):
    """State of `sgd_step`: the momentum buffer.

    Parameters
    ----------
    param : ndarray
        The parameter the state is for.

    Returns
    -------
    state : dict
        ``{"t": 0, "buf": zeros like param}``.
    """
    param = _param(param)
    return {"t": 0, "buf": _zeros(param)}


def sgd_step(param, grad, state, *, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """One step of SGD with (heavy-ball or Nesterov) momentum and decoupled weight decay.

    Parameters
    ----------
    param : ndarray
        Current parameter.
    grad : ndarray
        Gradient at ``param``.
    state : dict
        From `sgd_init` or the previous step.
    lr : float
        Learning rate.
    momentum : float, optional
        Momentum coefficient mu in [0, 1).
    nesterov : bool, optional
        Use the Nesterov form ``g + mu * buf``.
    weight_decay : float, optional
        Decoupled weight decay (``lr * weight_decay * param`` is subtracted).

    Returns
    -------
    param : ndarray
        Updated parameter (new array, dtype of ``param``).
    state : dict
        Updated state.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (the message names it).

    Notes
    -----
    :math:`b_t = \\mu b_{t-1} + g_t`, :math:`d_t = g_t + \\mu b_t` (Nesterov) or :math:`b_t`,
    :math:`\\theta_t = \\theta_{t-1} - \\eta (d_t + \\lambda\\theta_{t-1})`.

    References
    ----------
    .. [1] I. Sutskever, J. Martens, G. Dahl and G. Hinton, "On the importance of initialization
       and momentum in deep learning", ICML 2013.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.optim import sgd_init, sgd_step
    >>> p, s = sgd_step(np.ones(2), np.ones(2), sgd_init(np.ones(2)), lr=0.5)
    >>> p
    array([0.5, 0.5])
    """
    param = _param(param)
    grad = _grad(grad, param)
    state = _state(state, ("t", "buf"), param, "sgd")
    lr = _validate.positive("lr", lr)
    mu = _unit_interval("momentum", momentum)
    wd = _validate.nonnegative("weight_decay", weight_decay)
    buf = mu * state["buf"] + grad
    d = grad + mu * buf if nesterov else buf
    return _decayed(param, lr, wd) - lr * d, {**state, "t": state["t"] + 1, "buf": buf}


# ------------------------------------------------------------------------------------------ AdamW


def adamw_init(param):
    """State of `adamw_step`: first and second moments, and the spectral-decay warm start.

    Parameters
    ----------
    param : ndarray
        The parameter the state is for.

    Returns
    -------
    state : dict
        ``{"t": 0, "m": zeros, "v": zeros, "v1": None}``.
    """
    param = _param(param)
    return {"t": 0, "m": _zeros(param), "v": _zeros(param), "v1": None}


def adamw_step(param, grad, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decay="frobenius", rng=None):
    """One AdamW step (Adam with decoupled weight decay), optionally with spectral weight decay.

    Parameters
    ----------
    param : ndarray
        Current parameter.
    grad : ndarray
        Gradient at ``param``.
    state : dict
        From `adamw_init` or the previous step.
    lr : float
        Learning rate alpha.
    betas : (float, float), optional
        Moment coefficients (beta1, beta2), each in [0, 1).
    eps : float, optional
        Added to sqrt(v_hat).
    weight_decay : float, optional
        Decoupled weight decay lambda: the decay term is ``lr * weight_decay``.
    decay : {"frobenius", "spectral"}, optional
        "frobenius": AdamW's :math:`\\theta \\leftarrow (1 - \\eta\\lambda)\\theta`, which shrinks
        every singular value. "spectral" (matrices only): `linalg_lowrank.spectral_weight_decay`,
        :math:`W \\leftarrow W - \\eta\\lambda W v_1 v_1^T`, which shrinks only sigma1; its top
        right singular vector is kept in ``state["v1"]`` as the next step's warm start (one power
        step per training step, folded into the decay's pass over W). The first v1 is computed by
        `linalg_lowrank.power_iteration` to ``config.OPTIM_SPECTRAL_V1_TOL`` (relative residual).
    rng : None, int or numpy.random.Generator, optional
        Start of the first power iteration (spectral decay, first step only).

    Returns
    -------
    param : ndarray
        Updated parameter (new array, dtype of ``param``).
    state : dict
        Updated state.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (the message names it).

    Notes
    -----
    Algorithm 2 of [1]_ with the schedule multiplier 1:

    .. math::

        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\quad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,\\\\
        \\theta_t = \\theta_{t-1} - \\eta\\Big(\\frac{m_t/(1-\\beta_1^t)}{\\sqrt{v_t/(1-\\beta_2^t)} + \\epsilon}
        + \\lambda\\theta_{t-1}\\Big).

    The paper's decay constant is ``lr * weight_decay`` here (PyTorch's convention).

    References
    ----------
    .. [1] I. Loshchilov and F. Hutter, "Decoupled weight decay regularization", ICLR 2019.
    .. [2] D. P. Kingma and J. Ba, "Adam: a method for stochastic optimization", ICLR 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.optim import adamw_init, adamw_step
    >>> p, s = adamw_step(np.ones(2), np.array([1.0, -2.0]), adamw_init(np.ones(2)), lr=0.1)
    >>> p.round(6)
    array([0.9, 1.1])
    """
    param = _param(param)
    grad = _grad(grad, param)
    state = _state(state, ("t", "m", "v", "v1"), param, "adamw")
    lr = _validate.positive("lr", lr)
    b1, b2 = _betas(betas)
    eps = _validate.positive("eps", eps)
    wd = _validate.nonnegative("weight_decay", weight_decay)
    decay = _validate.choice("decay", decay, ("frobenius", "spectral"))
    if decay == "spectral" and param.ndim != 2:
        raise ValueError(f'`decay="spectral"` needs a matrix `param`, got shape {param.shape}')
    t = state["t"] + 1
    m = b1 * state["m"] + (1.0 - b1) * grad
    v = b2 * state["v"] + (1.0 - b2) * (grad * grad)
    update = (m / (1.0 - b1**t)) / (np.sqrt(v / (1.0 - b2**t)) + eps)
    v1 = state["v1"]
    if decay == "spectral" and wd:
        if v1 is None:
            v1 = power_iteration(param, tol=config.OPTIM_SPECTRAL_V1_TOL, rng=rng).v
        base, v1 = spectral_weight_decay(param, lr * wd, v=v1)
    else:
        base = _decayed(param, lr, wd)
    return base - lr * update, {**state, "t": t, "m": m, "v": v, "v1": v1}


# ------------------------------------------------------------------------------------------- Muon


def muon_init(param):
    """State of `muon_step`: the momentum buffer.

    Parameters
    ----------
    param : (M, N) ndarray
        The weight matrix the state is for.

    Returns
    -------
    state : dict
        ``{"t": 0, "buf": zeros}``.
    """
    param = _param(param, matrix=True)
    return {"t": 0, "buf": _zeros(param)}


def muon_step(
    param,
    grad,
    state,
    *,
    lr,
    momentum=0.95,
    nesterov=True,
    weight_decay=0.0,
    update_rms=0.2,
    ns_steps=5,
    ns_coefficients="muon",
):
    """One Muon step: momentum, orthogonalized by `linalg_lowrank.msign`, scaled to a target RMS.

    Parameters
    ----------
    param : (M, N) ndarray
        Current weight matrix.
    grad : (M, N) ndarray
        Gradient at ``param``.
    state : dict
        From `muon_init` or the previous step.
    lr : float
        Learning rate.
    momentum : float, optional
        Momentum coefficient mu in [0, 1).
    nesterov : bool, optional
        Orthogonalize ``g + mu * buf`` instead of ``buf``.
    weight_decay : float, optional
        Decoupled weight decay (``lr * weight_decay * param`` is subtracted).
    update_rms : float or None, optional
        The orthogonalized update is multiplied by ``update_rms * sqrt(max(M, N))``, which gives
        an update of RMS ``update_rms`` when its singular values are 1 (Moonlight's scaling, 0.2,
        matches AdamW's typical update RMS so AdamW's learning rate and weight decay carry over).
        None: no scaling (Jordan et al.'s original unit spectral norm update).
    ns_steps : int, optional
        Newton–Schulz steps of `linalg_lowrank.msign`.
    ns_coefficients : {"muon", "polar_express"} or sequence of (a, b, c), optional
        Its coefficient schedule.

    Returns
    -------
    param : (M, N) ndarray
        Updated weights (new array, dtype of ``param``).
    state : dict
        Updated state.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (the message names it).

    Notes
    -----
    :math:`B_t = \\mu B_{t-1} + G_t`, :math:`O_t = \\operatorname{msign}(G_t + \\mu B_t)` (Nesterov)
    or :math:`\\operatorname{msign}(B_t)`, and
    :math:`W_t = W_{t-1} - \\eta(0.2\\sqrt{\\max(M,N)}\\, O_t + \\lambda W_{t-1})`. The orthogonal
    :math:`M \\times N` factor has Frobenius norm :math:`\\sqrt{\\min(M,N)}`, hence RMS
    :math:`1/\\sqrt{\\max(M,N)}`; Muon's quintic leaves singular values in about [0.7, 1.2], so
    the RMS is near, not at, the target.

    References
    ----------
    .. [1] K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse and J. Bernstein,
       "Muon: an optimizer for hidden layers in neural networks", 2024,
       https://kellerjordan.github.io/posts/muon/.
    .. [2] J. Liu et al., "Muon is scalable for LLM training" (Moonlight), arXiv:2502.16982, 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.optim import muon_init, muon_step
    >>> W = np.zeros((4, 4))
    >>> p, s = muon_step(W, np.eye(4), muon_init(W), lr=1.0, ns_steps=20,
    ...                  ns_coefficients="polar_express")
    >>> np.allclose(p, -0.4 * np.eye(4))
    True
    """
    param = _param(param, matrix=True)
    grad = _grad(grad, param)
    state = _state(state, ("t", "buf"), param, "muon")
    lr = _validate.positive("lr", lr)
    mu = _unit_interval("momentum", momentum)
    wd = _validate.nonnegative("weight_decay", weight_decay)
    scale = 1.0 if update_rms is None else _validate.positive("update_rms", update_rms) * math.sqrt(max(param.shape))
    buf = mu * state["buf"] + grad
    d = grad + mu * buf if nesterov else buf
    O = msign(d, steps=ns_steps, coefficients=ns_coefficients)
    return _decayed(param, lr, wd) - (lr * scale) * O, {**state, "t": state["t"] + 1, "buf": buf}


# ---------------------------------------------------------------------------------------- Shampoo


def shampoo_init(param):
    """State of `shampoo_step`: the Kronecker factors L, R (float64) and the grafting moments.

    Parameters
    ----------
    param : (M, N) ndarray
        The weight matrix the state is for.

    Returns
    -------
    state : dict
        ``{"t": 0, "L": zeros (M, M), "R": zeros (N, N), "eigL": None, "eigR": None,
        "m": zeros, "v": zeros}``.
    """
    param = _param(param, matrix=True)
    m, n = param.shape
    return {
        "t": 0,
        "L": np.zeros((m, m)),
        "R": np.zeros((n, n)),
        "eigL": None,
        "eigR": None,
        "m": _zeros(param),
        "v": _zeros(param),
    }


def shampoo_step(
    param,
    grad,
    state,
    *,
    lr,
    eps=1e-6,
    shampoo_beta=1.0,
    graft="adam",
    betas=(0.9, 0.999),
    graft_eps=1e-8,
    weight_decay=0.0,
    update_freq=1,
):
    """One Shampoo step for a weight matrix, with Adam grafting of the step size.

    Parameters
    ----------
    param : (M, N) ndarray
        Current weight matrix.
    grad : (M, N) ndarray
        Gradient at ``param``.
    state : dict
        From `shampoo_init` or the previous step.
    lr : float
        Learning rate.
    eps : float, optional
        The factors start at ``eps * I`` (an absolute ridge added before the roots).
    shampoo_beta : float, optional
        1 (default): the factors are sums, as in the paper; below 1, exponential averages
        ``L = b L + (1 - b) G G^T``.
    graft : {"adam", "none"}, optional
        "adam": the Shampoo direction is rescaled, per layer, to the Frobenius norm of the
        Adam direction ``g / (sqrt(v_hat) + graft_eps)`` (norm grafting). "none": the raw
        Shampoo direction.
    betas : (float, float), optional
        beta1: momentum applied to the grafted direction (with bias correction; 0 turns it
        off); beta2: the grafted Adam's second moment.
    graft_eps : float, optional
        eps of the grafted Adam direction.
    weight_decay : float, optional
        Decoupled weight decay (``lr * weight_decay * param`` is subtracted).
    update_freq : int, optional
        The factors' eigendecompositions (`linalg_lowrank.symmetric_eig`) are recomputed every
        ``update_freq`` steps and reused in between (the statistics are updated every step).

    Returns
    -------
    param : (M, N) ndarray
        Updated weights (new array, dtype of ``param``).
    state : dict
        Updated state.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (the message names it).

    Notes
    -----
    Algorithm 1 of [1]_ for a matrix:

    .. math::

        L_t = L_{t-1} + G_t G_t^T,\\quad R_t = R_{t-1} + G_t^T G_t,\\quad
        S_t = (L_t + \\epsilon I)^{-1/4} G_t (R_t + \\epsilon I)^{-1/4},

    through `linalg_lowrank.shampoo_precondition` on cached eigendecompositions. Grafting [2]_:
    :math:`D_t = S_t \\|A_t\\|_F / \\|S_t\\|_F` with :math:`A_t` Adam's direction;
    then :math:`M_t = \\beta_1 M_{t-1} + (1-\\beta_1) D_t` and
    :math:`W_t = W_{t-1} - \\eta(M_t/(1-\\beta_1^t) + \\lambda W_{t-1})` (momentum after grafting,
    as in [3]_). With ``graft="none"`` and ``betas[0] = 0`` this is the paper's box exactly.

    References
    ----------
    .. [1] V. Gupta, T. Koren and Y. Singer, "Shampoo: preconditioned stochastic tensor
       optimization", ICML 2018.
    .. [2] N. Agarwal, R. Anil, E. Hazan, T. Koren and C. Zhang, "Disentangling adaptive
       gradient methods from learning rates", arXiv:2002.11803, 2020.
    .. [3] R. Anil, V. Gupta, T. Koren, K. Regan and Y. Singer, "Scalable second order
       optimization for deep learning", arXiv:2002.09018, 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.optim import shampoo_init, shampoo_step
    >>> W = np.zeros((2, 2))
    >>> p, s = shampoo_step(W, np.eye(2), shampoo_init(W), lr=1.0, eps=1e-12, graft="none", betas=(0.0, 0.999))
    >>> np.allclose(p, -np.eye(2))
    True
    """
    param = _param(param, matrix=True)
    grad = _grad(grad, param)
    state = _state(state, ("t", "L", "R", "eigL", "eigR", "m", "v"), param, "shampoo")
    lr = _validate.positive("lr", lr)
    eps = _validate.positive("eps", eps)
    sb = _validate.positive("shampoo_beta", shampoo_beta)
    if sb > 1.0:
        raise ValueError(f"`shampoo_beta` must be in (0, 1], got {sb}")
    graft = _validate.choice("graft", graft, ("adam", "none"))
    b1, b2 = _betas(betas)
    graft_eps = _validate.positive("graft_eps", graft_eps)
    wd = _validate.nonnegative("weight_decay", weight_decay)
    update_freq = _validate.positive_int("update_freq", update_freq)
    t = state["t"] + 1
    g64 = grad.astype(np.float64)
    w_new = 1.0 if sb == 1.0 else 1.0 - sb
    L = sb * state["L"] + w_new * (g64 @ g64.T)
    R = sb * state["R"] + w_new * (g64.T @ g64)
    eigL, eigR = state["eigL"], state["eigR"]
    if eigL is None or (t - 1) % update_freq == 0:
        eigL, eigR = symmetric_eig(_sym(L)), symmetric_eig(_sym(R))
    S = shampoo_precondition(grad, [eigL, eigR], ridge=eps, ridge_mode="absolute")
    v = state["v"]
    if graft == "adam":
        v = b2 * v + (1.0 - b2) * (grad * grad)
        A = grad / (np.sqrt(v / (1.0 - b2**t)) + graft_eps)
        nS = float(np.linalg.norm(S))
        D = S * (float(np.linalg.norm(A)) / nS) if nS > 0 else A
    else:
        D = S
    m = b1 * state["m"] + (1.0 - b1) * D
    step = m / (1.0 - b1**t)
    new_state = {**state, "t": t, "L": L, "R": R, "eigL": eigL, "eigR": eigR, "m": m, "v": v}
    return _decayed(param, lr, wd) - lr * step, new_state


def _sym(M):
    # G G^T from BLAS gemm is symmetric only to rounding; the factors are symmetric by definition
    return 0.5 * (M + M.T)


# ------------------------------------------------------------------------------------------- SOAP


def soap_init(param):
    """State of `soap_step`: Adam's moments, Shampoo's factors (float64) and their eigenbases.

    Parameters
    ----------
    param : (M, N) ndarray
        The weight matrix the state is for.

    Returns
    -------
    state : dict
        ``{"t": 0, "m": zeros, "v": zeros, "L": None, "R": None, "eigL": None, "eigR": None}``.
    """
    param = _param(param, matrix=True)
    return {"t": 0, "m": _zeros(param), "v": _zeros(param), "L": None, "R": None, "eigL": None, "eigR": None}


def soap_step(
    param,
    grad,
    state,
    *,
    lr,
    betas=(0.95, 0.95),
    shampoo_beta=None,
    eps=1e-8,
    weight_decay=0.0,
    precondition_frequency=10,
    refresh_steps=1,
):
    """One SOAP step: Adam in the eigenbasis of Shampoo's factors, refreshed every few steps.

    Parameters
    ----------
    param : (M, N) ndarray
        Current weight matrix.
    grad : (M, N) ndarray
        Gradient at ``param``.
    state : dict
        From `soap_init` or the previous step.
    lr : float
        Learning rate.
    betas : (float, float), optional
        Adam's (beta1, beta2).
    shampoo_beta : float, optional
        EMA coefficient of the factors L, R in [0, 1); default ``betas[1]``.
    eps : float, optional
        Added to Adam's sqrt(v_hat).
    weight_decay : float, optional
        Decoupled weight decay (``lr * weight_decay * param`` is subtracted).
    precondition_frequency : int, optional
        The eigenbases are refreshed every this many steps (f in the paper).
    refresh_steps : int, optional
        QR (subspace-iteration) steps per refresh, by `linalg_lowrank.SymmetricEig.refresh`.

    Returns
    -------
    param : (M, N) ndarray
        Updated weights (new array; unchanged on the first call, see Notes).
    state : dict
        Updated state.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (the message names it).

    Notes
    -----
    Algorithm 3 of [1]_: with :math:`Q_L, Q_R` the eigenvectors of L and R,

    .. math::

        G' = Q_L^T G Q_R,\\quad M \\leftarrow \\beta_1 M + (1-\\beta_1) G,\\quad
        V \\leftarrow \\beta_2 V + (1-\\beta_2) G'^{\\odot 2},\\\\
        N' = \\frac{Q_L^T M Q_R / (1-\\beta_1^t)}{\\sqrt{V/(1-\\beta_2^t)} + \\epsilon},\\quad
        W \\leftarrow W - \\eta (Q_L N' Q_R^T + \\lambda W),

    then :math:`L \\leftarrow \\beta L + (1-\\beta) G G^T`, :math:`R \\leftarrow \\beta R + (1-\\beta)
    G^T G`, and every f steps :math:`Q_L, Q_R` are refreshed by one step of subspace iteration
    from the previous basis, sorted first by its Rayleigh quotients (the paper's Algorithm 4, our
    `linalg_lowrank.SymmetricEig.refresh`).
    As in the authors' implementation, the first call only computes L, R and their
    eigenbases (by `linalg_lowrank.symmetric_eig`) from the first gradient and leaves W
    unchanged, so that no gradient is projected on a basis built from itself; ``t`` counts the
    steps after it. When a refresh reorders the basis (eigenvalues crossing), the rows and
    columns of V follow their eigenvectors.

    References
    ----------
    .. [1] N. Vyas, D. Morwani, R. Zhao, I. Shapira, D. Brandfonbrener, L. Janson and S. Kakade,
       "SOAP: improving and stabilizing Shampoo using Adam", arXiv:2409.11321, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.optim import soap_init, soap_step
    >>> W = np.zeros((2, 2))
    >>> W1, s = soap_step(W, np.eye(2), soap_init(W), lr=0.1)  # first call: bases only
    >>> W2, s = soap_step(W1, np.eye(2), s, lr=0.1)
    >>> np.allclose(W2, -0.1 * np.eye(2))
    True
    """
    param = _param(param, matrix=True)
    grad = _grad(grad, param)
    state = _state(state, ("t", "m", "v", "L", "R", "eigL", "eigR"), param, "soap")
    lr = _validate.positive("lr", lr)
    b1, b2 = _betas(betas)
    sb = b2 if shampoo_beta is None else _unit_interval("shampoo_beta", shampoo_beta)
    eps = _validate.positive("eps", eps)
    wd = _validate.nonnegative("weight_decay", weight_decay)
    freq = _validate.positive_int("precondition_frequency", precondition_frequency)
    refresh_steps = _validate.positive_int("refresh_steps", refresh_steps)
    g64 = grad.astype(np.float64)
    if state["eigL"] is None:
        L, R = (1.0 - sb) * _sym(g64 @ g64.T), (1.0 - sb) * _sym(g64.T @ g64)
        return param.copy(), {**state, "L": L, "R": R, "eigL": symmetric_eig(L), "eigR": symmetric_eig(R)}
    t = state["t"] + 1
    QL, QR = state["eigL"].Q, state["eigR"].Q
    Gp = (QL.T @ g64 @ QR).astype(param.dtype)
    m = b1 * state["m"] + (1.0 - b1) * grad
    Mp = (QL.T @ m.astype(np.float64) @ QR).astype(param.dtype)
    v = b2 * state["v"] + (1.0 - b2) * (Gp * Gp)
    Np = (Mp / (1.0 - b1**t)) / (np.sqrt(v / (1.0 - b2**t)) + eps)
    N = (QL @ Np.astype(np.float64) @ QR.T).astype(param.dtype)
    new_param = _decayed(param, lr, wd) - lr * N
    L = sb * state["L"] + (1.0 - sb) * _sym(g64 @ g64.T)
    R = sb * state["R"] + (1.0 - sb) * _sym(g64.T @ g64)
    eigL, eigR = state["eigL"], state["eigR"]
    if t % freq == 0:
        (eigL, oL), (eigR, oR) = _presorted(eigL, L), _presorted(eigR, R)
        v = v[oL][:, oR]
        newL, newR = eigL.refresh(L, steps=refresh_steps), eigR.refresh(R, steps=refresh_steps)
        v = v[_follow(eigL.Q, newL.Q)][:, _follow(eigR.Q, newR.Q)]
        eigL, eigR = newL, newR
    return new_param, {**state, "t": t, "m": m, "v": v, "L": L, "R": R, "eigL": eigL, "eigR": eigR}


def _presorted(eig, M):
    """The cached basis re-ordered by its Rayleigh quotients for the new factor M, and the order.

    The authors' implementation sorts before its QR step (the Gram–Schmidt order of the step
    depends on it); V's rows or columns are re-ordered with the basis.
    """
    rq = np.einsum("ij,ik,kj->j", eig.Q, M, eig.Q)
    order = np.argsort(-rq, kind="stable")
    return dataclasses.replace(eig, Q=np.ascontiguousarray(eig.Q[:, order]), eigenvalues=rq[order]), order


def _follow(Q_old, Q_new):
    """Index of the old basis vector each new one continues (identity if that is not a permutation)."""
    idx = np.argmax(np.abs(Q_old.T @ Q_new), axis=0)
    n = Q_old.shape[1]
    return idx if np.unique(idx).size == n else np.arange(n)


# ------------------------------------------------------------------------------------------ K-FAC


def kfac_init(param):
    """State of `kfac_step`: the factor EMAs A, G (float64), their eigendecompositions, momentum.

    Parameters
    ----------
    param : (D_out, D_in) ndarray
        The dense layer's weight matrix the state is for (bias, if any, as a column).

    Returns
    -------
    state : dict
        ``{"t": 0, "A": None, "G": None, "eigA": None, "eigG": None, "buf": zeros}``.
    """
    param = _param(param, matrix=True)
    return {"t": 0, "A": None, "G": None, "eigA": None, "eigG": None, "buf": _zeros(param)}


def kfac_step(
    param,
    grad,
    state,
    *,
    activations,
    output_grads,
    lr,
    damping=1e-3,
    ema=0.95,
    momentum=0.0,
    weight_decay=0.0,
    inverse_freq=1,
    damping_mode="exact",
):
    """One K-FAC step for a dense layer, through `linalg_lowrank.kfac_solve`.

    Parameters
    ----------
    param : (D_out, D_in) ndarray
        Current weight matrix (layer ``s = W a``; a bias is a column of W and a 1 in a).
    grad : (D_out, D_in) ndarray
        Gradient at ``param``.
    state : dict
        From `kfac_init` or the previous step.
    activations : (B, D_in) ndarray
        The layer's inputs a on the batch.
    output_grads : (B, D_out) ndarray
        The gradients g of each sample's loss with respect to the layer's outputs s (with labels
        sampled from the model for the Fisher, with the data's labels for the empirical Fisher).
    lr : float
        Learning rate.
    damping : float, optional
        Tikhonov damping lambda added to the Kronecker-factored curvature.
    ema : float, optional
        EMA coefficient of the factors in [0, 1); the first step takes the batch's factors.
    momentum : float, optional
        Heavy-ball momentum on the preconditioned direction, in [0, 1).
    weight_decay : float, optional
        Decoupled weight decay (``lr * weight_decay * param`` is subtracted).
    inverse_freq : int, optional
        The factors' eigendecompositions are recomputed every this many steps (T3 in the paper)
        and reused in between.
    damping_mode : {"exact", "pi"}, optional
        As in `linalg_lowrank.kfac_solve`.

    Returns
    -------
    param : (D_out, D_in) ndarray
        Updated weights (new array, dtype of ``param``).
    state : dict
        Updated state.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (the message names it).

    Notes
    -----
    The Fisher block of a dense layer is approximated by :math:`A \\otimes G` with
    :math:`A = \\mathbb E[a a^T]`, :math:`G = \\mathbb E[g g^T]` [1]_ (exponential averages
    across steps, :math:`\\hat A = a^T a / B` from the batch), and the step is

    .. math:: V = \\operatorname{mat}\\big((A \\otimes G + \\lambda I)^{-1}\\operatorname{vec}(\\nabla W)\\big),
       \\quad B_t = \\mu B_{t-1} + V,\\quad W \\leftarrow W - \\eta (B_t + \\lambda_{wd} W).

    This is the preconditioning of the paper's algorithm with a fixed learning rate and
    damping; its rescaling by the quadratic model and the Levenberg–Marquardt adaptation of
    the damping are not included.

    References
    ----------
    .. [1] J. Martens and R. Grosse, "Optimizing neural networks with Kronecker-factored
       approximate curvature", ICML 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.optim import kfac_init, kfac_step
    >>> W = np.zeros((2, 2))
    >>> a, g = np.eye(2) * np.sqrt(2), np.eye(2) * np.sqrt(2)   # A = G = I
    >>> p, s = kfac_step(W, np.eye(2), kfac_init(W), activations=a, output_grads=g, lr=1.0, damping=1.0)
    >>> np.allclose(p, -0.5 * np.eye(2))   # (I kron I + 1 I)^-1 g = g / 2
    True
    """
    param = _param(param, matrix=True)
    grad = _grad(grad, param)
    state = _state(state, ("t", "A", "G", "eigA", "eigG", "buf"), param, "kfac")
    a = _validate.float_array("activations", activations, min_ndim=2, max_ndim=2)
    g = _validate.float_array("output_grads", output_grads, min_ndim=2, max_ndim=2)
    d_out, d_in = param.shape
    if a.shape[1] != d_in or g.shape[1] != d_out or a.shape[0] != g.shape[0]:
        raise ValueError(
            f"`activations` must be (B, {d_in}) and `output_grads` (B, {d_out}) for `param` of shape "
            f"{param.shape}, got {a.shape} and {g.shape}"
        )
    lr = _validate.positive("lr", lr)
    damping = _validate.positive("damping", damping)
    ema = _unit_interval("ema", ema)
    mu = _unit_interval("momentum", momentum)
    wd = _validate.nonnegative("weight_decay", weight_decay)
    inverse_freq = _validate.positive_int("inverse_freq", inverse_freq)
    t = state["t"] + 1
    a64, g64 = np.asarray(a, dtype=np.float64), np.asarray(g, dtype=np.float64)
    A_hat, G_hat = _sym(a64.T @ a64) / a.shape[0], _sym(g64.T @ g64) / g.shape[0]
    if state["A"] is None:
        A, G = A_hat, G_hat
    else:
        A, G = ema * state["A"] + (1.0 - ema) * A_hat, ema * state["G"] + (1.0 - ema) * G_hat
    eigA, eigG = state["eigA"], state["eigG"]
    if eigA is None or (t - 1) % inverse_freq == 0:
        eigA, eigG = symmetric_eig(A), symmetric_eig(G)
    V = kfac_solve(grad, eigA, eigG, damping=damping, damping_mode=damping_mode)
    buf = mu * state["buf"] + V
    new_state = {**state, "t": t, "A": A, "G": G, "eigA": eigA, "eigG": eigG, "buf": buf}
    return _decayed(param, lr, wd) - lr * buf, new_state


# ------------------------------------------------------------------------ Hutchinson-based steps


def _hutchinson(hvp, param, n_probes, rng):
    """One Hutchinson estimate of diag(H) of this parameter's block, shaped like ``param``."""
    if hvp is None:
        raise TypeError("`hvp` must be given: products with this parameter's Hessian block")
    acc = HutchinsonAccumulator(param.size, rng=rng)
    acc.update(hvp, n_probes=n_probes)
    return acc.diagonal.reshape(param.shape).astype(param.dtype)


def _block_average(D, b):
    """AdaHessian's spatial averaging: mean over consecutive blocks of b entries of the last axis."""
    if b == 1:
        return D
    n = D.shape[-1]
    full = (n // b) * b
    out = np.empty_like(D)
    if full:
        blocks = D[..., :full].reshape(D.shape[:-1] + (n // b, b))
        out[..., :full] = np.repeat(blocks.mean(axis=-1), b, axis=-1)
    if full < n:
        out[..., full:] = D[..., full:].mean(axis=-1, keepdims=True)
    return out


def adahessian_init(param):
    """State of `adahessian_step`: first moment of the gradient, second moment of the Hessian diagonal.

    Parameters
    ----------
    param : ndarray
        The parameter the state is for.

    Returns
    -------
    state : dict
        ``{"t": 0, "m": zeros, "v": zeros}``.
    """
    param = _param(param)
    return {"t": 0, "m": _zeros(param), "v": _zeros(param)}


def adahessian_step(
    param,
    grad,
    state,
    *,
    hvp,
    lr=0.15,
    betas=(0.9, 0.999),
    eps=1e-4,
    weight_decay=0.0,
    hessian_power=1.0,
    block_size=1,
    n_probes=1,
    rng=None,
):
    """One AdaHessian step: Adam with the squared Hutchinson diagonal of the Hessian as second moment.

    Parameters
    ----------
    param : ndarray
        Current parameter.
    grad : ndarray
        Gradient at ``param``.
    state : dict
        From `adahessian_init` or the previous step.
    hvp : callable, LinearOperator or ndarray
        Products with this parameter's Hessian block (size ``param.size``): a callable maps an
        (n, k) block of vectors (flattened like ``param``) to the (n, k) products.
    lr : float, optional
        Learning rate (the paper's default 0.15).
    betas : (float, float), optional
        (beta1, beta2).
    eps : float, optional
        Added to the denominator.
    weight_decay : float, optional
        Decoupled weight decay (``lr * weight_decay * param`` is subtracted).
    hessian_power : float, optional
        k in (0, 1]: the denominator is the k-th power of the RMS Hessian diagonal.
    block_size : int, optional
        Spatial averaging: the diagonal estimate is averaged over consecutive blocks of this
        many entries along the last axis (1: none).
    n_probes : int, optional
        Rademacher probes per step (the paper uses 1).
    rng : None, int or numpy.random.Generator, optional
        Source of the probes (pass one Generator for the whole run).

    Returns
    -------
    param : ndarray
        Updated parameter (new array, dtype of ``param``).
    state : dict
        Updated state.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (the message names it).

    Notes
    -----
    Algorithm 1 of [1]_: :math:`D_t = z \\odot (H z)` (our `linalg_lowrank.HutchinsonAccumulator`),
    :math:`D^{(s)}_t` its block average (Eq. 10),

    .. math::

        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) D^{(s)}_t \\odot D^{(s)}_t,\\\\
        \\theta_t = \\theta_{t-1} - \\eta\\Big(\\frac{m_t/(1-\\beta_1^t)}
        {\\big(\\sqrt{v_t/(1-\\beta_2^t)}\\big)^k + \\epsilon} + \\lambda\\theta_{t-1}\\Big),

    with eps and weight decay placed as in the authors' implementation.

    References
    ----------
    .. [1] Z. Yao, A. Gholami, S. Shen, M. Mustafa, K. Keutzer and M. W. Mahoney, "ADAHESSIAN:
       an adaptive second order optimizer for machine learning", AAAI 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.optim import adahessian_init, adahessian_step
    >>> H = np.diag([2.0, 4.0])   # diagonal: Rademacher probes recover it exactly
    >>> x = np.ones(2)
    >>> p, s = adahessian_step(x, H @ x, adahessian_init(x), hvp=H, lr=0.1, eps=1e-12, rng=0)
    >>> p.round(6)
    array([0.9, 0.9])
    """
    param = _param(param)
    grad = _grad(grad, param)
    state = _state(state, ("t", "m", "v"), param, "adahessian")
    lr = _validate.positive("lr", lr)
    b1, b2 = _betas(betas)
    eps = _validate.positive("eps", eps)
    wd = _validate.nonnegative("weight_decay", weight_decay)
    k = _validate.positive("hessian_power", hessian_power)
    if k > 1.0:
        raise ValueError(f"`hessian_power` must be in (0, 1], got {k}")
    block_size = _validate.positive_int("block_size", block_size)
    n_probes = _validate.positive_int("n_probes", n_probes)
    t = state["t"] + 1
    D = _block_average(_hutchinson(hvp, param, n_probes, rng), block_size)
    m = b1 * state["m"] + (1.0 - b1) * grad
    v = b2 * state["v"] + (1.0 - b2) * (D * D)
    denom = np.sqrt(v / (1.0 - b2**t)) ** k + eps
    update = (m / (1.0 - b1**t)) / denom
    return _decayed(param, lr, wd) - lr * update, {**state, "t": t, "m": m, "v": v}


def sophia_init(param):
    """State of `sophia_step`: the gradient EMA m and the Hessian-diagonal EMA h.

    Parameters
    ----------
    param : ndarray
        The parameter the state is for.

    Returns
    -------
    state : dict
        ``{"t": 0, "m": zeros, "h": zeros}``.
    """
    param = _param(param)
    return {"t": 0, "m": _zeros(param), "h": _zeros(param)}


def sophia_step(
    param,
    grad,
    state,
    *,
    lr,
    betas=(0.965, 0.99),
    gamma=0.01,
    eps=1e-15,
    weight_decay=0.0,
    k=10,
    estimator="hutchinson",
    hvp=None,
    sampled_grad=None,
    batch_size=None,
    rng=None,
):
    """One Sophia step: clipped Newton-like step on an occasionally refreshed diagonal Hessian EMA.

    Parameters
    ----------
    param : ndarray
        Current parameter.
    grad : ndarray
        Gradient at ``param``.
    state : dict
        From `sophia_init` or the previous step.
    lr : float
        Learning rate (the largest change of a coordinate per step).
    betas : (float, float), optional
        (beta1, beta2): EMA of the gradient and of the diagonal estimates.
    gamma : float, optional
        The denominator is ``max(gamma * h, eps)``.
    eps : float, optional
        Floor of the denominator.
    weight_decay : float, optional
        Decoupled weight decay (``lr * weight_decay * param`` is subtracted).
    k : int, optional
        The diagonal is re-estimated at steps t = 1, k + 1, 2k + 1, ...
    estimator : {"hutchinson", "gnb"}, optional
        "hutchinson": :math:`u \\odot (H u)` from ``hvp`` (Sophia-H); "gnb": the
        Gauss–Newton–Bartlett estimate :math:`B\\, \\hat g \\odot \\hat g` from ``sampled_grad``
        (Sophia-G).
    hvp : callable, LinearOperator or ndarray, optional
        Hessian block products (as in `adahessian_step`); "hutchinson" only, called on
        estimation steps only.
    sampled_grad : callable, optional
        "gnb" only: ``sampled_grad()`` returns the mini-batch gradient of the loss with labels
        sampled from the model (shape of ``param``); called on estimation steps only.
    batch_size : int, optional
        "gnb" only: B, the mini-batch size behind ``sampled_grad``.
    rng : None, int or numpy.random.Generator, optional
        Source of the Hutchinson probes.

    Returns
    -------
    param : ndarray
        Updated parameter (new array, dtype of ``param``).
    state : dict
        Updated state.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (the message names it), or if the curvature input of ``estimator``
        is missing on an estimation step.

    Notes
    -----
    Algorithm 3 of [1]_:

    .. math::

        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t;\\quad
        h_t = \\beta_2 h_{t-k} + (1-\\beta_2)\\hat h_t \\text{ if } t \\bmod k = 1
        \\text{ else } h_{t-1};\\\\
        \\theta_{t+1} = \\theta_t - \\eta\\lambda\\theta_t
        - \\eta\\,\\operatorname{clip}\\big(m_t / \\max(\\gamma h_t, \\epsilon), 1\\big),

    with :math:`\\operatorname{clip}(z, 1) = \\max(\\min(z, 1), -1)` per coordinate. Negative
    Hutchinson estimates make the denominator eps, so the clipped step is then sign(m) (the
    paper's safeguard).

    References
    ----------
    .. [1] H. Liu, Z. Li, D. Hall, P. Liang and T. Ma, "Sophia: a scalable stochastic
       second-order optimizer for language model pre-training", ICLR 2024 (arXiv:2305.14342, 2023).

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.optim import sophia_init, sophia_step
    >>> x = np.ones(2)
    >>> p, s = sophia_step(x, np.array([1.0, -1.0]), sophia_init(x), lr=0.1, hvp=np.eye(2), rng=0)
    >>> p   # h is tiny after one estimate: both coordinates clipped to a full step
    array([0.9, 1.1])
    """
    param = _param(param)
    grad = _grad(grad, param)
    state = _state(state, ("t", "m", "h"), param, "sophia")
    lr = _validate.positive("lr", lr)
    b1, b2 = _betas(betas)
    gamma = _validate.positive("gamma", gamma)
    eps = _validate.positive("eps", eps)
    wd = _validate.nonnegative("weight_decay", weight_decay)
    k = _validate.positive_int("k", k)
    estimator = _validate.choice("estimator", estimator, ("hutchinson", "gnb"))
    t = state["t"] + 1
    m = b1 * state["m"] + (1.0 - b1) * grad
    h = state["h"]
    if t % k == 1 % k:
        if estimator == "hutchinson":
            h_hat = _hutchinson(hvp, param, 1, rng)
        else:
            if not callable(sampled_grad):
                raise TypeError('`sampled_grad` must be a callable when `estimator="gnb"`')
            B = _validate.positive_int("batch_size", batch_size)
            gs = _grad(sampled_grad(), param)
            h_hat = B * (gs * gs)
        h = b2 * h + (1.0 - b2) * h_hat
    ratio = np.clip(m / np.maximum(gamma * h, eps), -1.0, 1.0)
    return _decayed(param, lr, wd) - lr * ratio, {**state, "t": t, "m": m, "h": h}


# ----------------------------------------------------------------------------------------- L-BFGS


def lbfgs_init(param):
    """State of `lbfgs_step`: the stored pairs and the previous point and gradient.

    Parameters
    ----------
    param : ndarray
        The parameter the state is for (any shape; L-BFGS works on it flattened).

    Returns
    -------
    state : dict
        ``{"t": 0, "S": (0, n), "Y": (0, n), "x_prev": None, "g_prev": None, "n_evals": 0}``.
    """
    param = _param(param)
    n = param.size
    return {
        "t": 0,
        "S": np.empty((0, n), dtype=param.dtype),
        "Y": np.empty((0, n), dtype=param.dtype),
        "x_prev": None,
        "g_prev": None,
        "n_evals": 0,
    }


def lbfgs_step(
    param, grad, state, *, fun=None, lr=1.0, history=10, line_search="armijo", c1=1e-4, shrink=0.5, max_backtracks=30
):
    """One L-BFGS step: direction -H_k g from `linalg_lowrank.lbfgs_inverse_hessian`, then a line search.

    Parameters
    ----------
    param : ndarray
        Current point x (any shape; flattened internally).
    grad : ndarray
        Gradient at ``param`` (of a deterministic objective: L-BFGS needs the same function at
        every step, so use full batches).
    state : dict
        From `lbfgs_init` or the previous step.
    fun : callable, optional
        ``fun(x)`` returns ``(loss, gradient)`` at a point shaped like ``param``; needed for
        ``line_search="armijo"`` (only the loss is used).
    lr : float, optional
        Initial (Armijo) or fixed (``"none"``) step length along the direction.
    history : int, optional
        Pairs kept (m in the paper).
    line_search : {"armijo", "none"}, optional
        "armijo": backtracking from ``lr`` by ``shrink`` until
        :math:`f(x + a d) \\le f(x) + c_1 a\\, g^T d`; "none": the fixed step ``lr``.
    c1 : float, optional
        Sufficient-decrease constant in (0, 1).
    shrink : float, optional
        Backtracking factor in (0, 1).
    max_backtracks : int, optional
        Cap on backtracking steps; if no step is accepted, the point is kept and the history
        cleared (the next step starts from steepest descent).

    Returns
    -------
    param : ndarray
        The new point (new array, shape and dtype of ``param``).
    state : dict
        Updated state; ``state["n_evals"]`` counts the calls of ``fun``.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (the message names it), or if ``fun`` is missing for the line search
        or returns a non-finite loss at the current point.

    Warns
    -----
    CurvatureConditionWarning
        When a new pair fails the curvature condition (from `linalg_lowrank.lbfgs_inverse_hessian`);
        the pair is dropped from the history, so each pair warns once.

    Notes
    -----
    Algorithm 7.5 of [2]_: with :math:`s_{k-1} = x_k - x_{k-1}`, :math:`y_{k-1} = g_k - g_{k-1}`
    appended to the last m pairs, :math:`d_k = -H_k g_k` with :math:`H_k` the L-BFGS matrix of
    [1]_ from :math:`H_0 = \\gamma_k I`, :math:`\\gamma_k = s^T y / y^T y` of the newest pair
    (the two-loop recursion, in `linalg_lowrank.lbfgs_inverse_hessian`), and
    :math:`x_{k+1} = x_k + a_k d_k`. The paper's Wolfe line search is replaced by Armijo
    backtracking (pairs that then fail :math:`s^T y > 0` are skipped by the operator).

    References
    ----------
    .. [1] D. C. Liu and J. Nocedal, "On the limited memory BFGS method for large scale
       optimization", Mathematical Programming 45, 1989.
    .. [2] J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.optim import lbfgs_init, lbfgs_step
    >>> A = np.diag([1.0, 10.0])
    >>> fun = lambda x: (0.5 * x @ A @ x, A @ x)
    >>> x, s = np.array([1.0, 1.0]), lbfgs_init(np.zeros(2))
    >>> for _ in range(8):
    ...     x, s = lbfgs_step(x, fun(x)[1], s, fun=fun)
    >>> bool(np.linalg.norm(x) < 1e-6)
    True
    """
    param = _param(param)
    grad = _grad(grad, param)
    state = _state(state, ("t", "S", "Y", "x_prev", "g_prev", "n_evals"), param, "lbfgs")
    lr = _validate.positive("lr", lr)
    history = _validate.positive_int("history", history)
    line_search = _validate.choice("line_search", line_search, ("armijo", "none"))
    c1, shrink = _unit_interval("c1", c1), _unit_interval("shrink", shrink)
    if c1 == 0.0 or shrink == 0.0:
        raise ValueError(f"`c1` and `shrink` must be in (0, 1), got {c1} and {shrink}")
    max_backtracks = _validate.positive_int("max_backtracks", max_backtracks)
    if line_search == "armijo" and not callable(fun):
        raise TypeError('`fun` must be a callable returning (loss, gradient) when `line_search="armijo"`')
    x, g = param.ravel(), grad.ravel()
    S, Y = state["S"], state["Y"]
    if S.shape[1] != x.size:
        raise ValueError(f"`state` holds pairs of size {S.shape[1]}, `param` has {x.size} entries")
    if state["x_prev"] is not None:
        S = np.vstack([S, (x - state["x_prev"])[None]])[-history:]
        Y = np.vstack([Y, (g - state["g_prev"])[None]])[-history:]
    H = lbfgs_inverse_hessian(S, Y)
    if H.skipped:  # drop them for good, so that each bad pair is reported once
        keep = np.setdiff1d(np.arange(S.shape[0]), H.skipped)
        S, Y = S[keep], Y[keep]
    d = -(H @ g).astype(param.dtype, copy=False)
    slope = float(g.astype(np.float64) @ d.astype(np.float64))
    if not slope < 0:  # rounding made it an ascent direction: restart from steepest descent
        S, Y = S[:0], Y[:0]
        d, slope = -g, -float(g.astype(np.float64) @ g.astype(np.float64))
    n_evals = state["n_evals"]
    a = lr
    if line_search == "armijo" and slope < 0:
        f0 = float(fun(param)[0])
        n_evals += 1
        if not np.isfinite(f0):
            raise ValueError(f"`fun` returned a non-finite loss {f0} at `param`")
        for _ in range(max_backtracks):
            f = float(fun((x + a * d).reshape(param.shape))[0])
            n_evals += 1
            if np.isfinite(f) and f <= f0 + c1 * a * slope:
                break
            a *= shrink
        else:
            a = 0.0
            S, Y = S[:0], Y[:0]
    x_new = (x + a * d).reshape(param.shape) if a else param.copy()
    new_state = {
        **state,
        "t": state["t"] + 1,
        "S": S,
        "Y": Y,
        "x_prev": x.copy(),
        "g_prev": g.copy(),
        "n_evals": n_evals,
    }
    return x_new, new_state


#: Name -> (init, step) of every optimizer above, as `linalg_lowrank.lab.train` uses them.
STEPS = {
    "sgd": (sgd_init, sgd_step),
    "adamw": (adamw_init, adamw_step),
    "muon": (muon_init, muon_step),
    "shampoo": (shampoo_init, shampoo_step),
    "soap": (soap_init, soap_step),
    "kfac": (kfac_init, kfac_step),
    "adahessian": (adahessian_init, adahessian_step),
    "sophia": (sophia_init, sophia_step),
    "lbfgs": (lbfgs_init, lbfgs_step),
}
