"""LoRA adapters initialized from the singular vectors of the first gradient (LoRA-GA)."""

import math
from dataclasses import dataclass

import numpy as np

from . import _validate, config
from .lowrank import best_rank, randomized_svd
from .results import Result

__all__ = ["LoraGAInit", "lora_ga_init"]

_SCALES = ("gd", "stable")
_METHODS = ("auto", "exact", "randomized")


@dataclass(frozen=True, repr=False)
class LoraGAInit(Result):
    """LoRA-GA factors and the weight offset that keeps the initial model unchanged.

    Unpacks as ``A, B, offset = lora_ga_init(grad, r)``.

    Attributes
    ----------
    A : (r, N) ndarray
        Initial down-projection, c times the top r right singular vectors (as rows).
    B : (M, r) ndarray
        Initial up-projection, c times the left singular vectors r+1 to 2r.
    offset : (M, N) ndarray
        ``scaling * B @ A``: subtract it from the pretrained weight, so that
        ``W0 - offset + scaling * B @ A == W0`` at initialization.
    s : (2r,) ndarray
        The 2r largest singular values of the gradient (approximate with ``method="randomized"``).
    zeta : float
        ``scaling**2 * c**2``: to first order in the learning rate lr, one SGD step on (A, B)
        changes the adapted weight by ``-lr * zeta * G_2r``, G_2r the best rank-2r
        approximation of the gradient (``zeta = 1`` with ``scale="gd"``).
    scale_factor : float
        c, the factor applied to the singular vectors.
    method : str
        "exact" (full SVD) or "randomized" (`randomized_svd`).
    seed : int or None
        The seed of the randomized SVD (None for "exact").
    """

    A: np.ndarray
    B: np.ndarray
    offset: np.ndarray
    s: np.ndarray
    zeta: float
    scale_factor: float
    method: str
    seed: object

    _unpack = ("A", "B", "offset")


def lora_ga_init(grad, r, *, scaling=1.0, scale="gd", stable_gamma=None, method="auto", n_power_iter="auto", rng=None):
    """LoRA-GA initialization: adapter factors from the singular vectors of the first gradient.

    Parameters
    ----------
    grad : (M, N) array_like
        The gradient of the loss with respect to the pretrained weight W0 (shape of W0; the
        adapted weight is ``W0 + scaling * B @ A`` with B of shape (M, r) and A of shape (r, N)),
        typically averaged over a few batches.
    r : int
        Adapter rank; 2r <= min(M, N).
    scaling : float, optional
        The adapter's multiplier eta (``lora_alpha / r`` in PEFT, ``lora_alpha / sqrt(r)`` with rsLoRA).
    scale : {"gd", "stable"}, optional
        "gd": c = 1 / scaling, so that the first SGD step of the adapter equals the first step of
        full fine-tuning projected on rank 2r (zeta = 1). "stable": c = M^(1/4) / sqrt(stable_gamma),
        the paper's scale-stable choice, under which the first step is zeta G_2r with
        zeta = scaling^2 sqrt(M) / stable_gamma.
    stable_gamma : float, optional
        gamma of ``scale="stable"`` (default ``config.LORA_GA_STABLE_GAMMA`` = 16, the paper's).
    method : {"auto", "exact", "randomized"}, optional
        Full SVD, or our `randomized_svd` of rank 2r. "auto" takes the full SVD when
        min(M, N) <= ``config.LORA_GA_EXACT_MAX_DIM`` or 2r is more than a quarter of min(M, N).
    n_power_iter : int or "auto", optional
        Power iterations of the randomized SVD (passed to `randomized_svd`).
    rng : None, int or numpy.random.Generator, optional
        Source of the randomized SVD's sketch.

    Returns
    -------
    result : LoraGAInit
        Unpacks as ``A, B, offset``; also ``s``, ``zeta``, ``scale_factor``, ``method``, ``seed``.
        A, B and offset are in the dtype of ``grad`` (float32 stays float32).

    Raises
    ------
    TypeError
        If ``grad`` is not a float32/float64 array or an option has the wrong type.
    ValueError
        If ``grad`` is not 2-D, empty or finite, 2r > min(M, N), or an option is invalid.

    See Also
    --------
    randomized_svd, best_rank : the decompositions used.

    Notes
    -----
    With :math:`W = W_0 + \\eta B A` and :math:`G = \\partial L / \\partial W`, the gradients of
    the factors are :math:`\\eta B^T G` and :math:`\\eta G A^T`. One SGD step of size
    :math:`\\lambda` on both moves the adapted weight by

    .. math::

       \\Delta W = -\\lambda \\eta^2 \\left(G A_0^T A_0 + B_0 B_0^T G\\right) + O(\\lambda^2).

    With :math:`G = U \\Sigma V^T`, :math:`A_0 = c\\, V_{[:, 1:r]}^T` and
    :math:`B_0 = c\\, U_{[:, r+1:2r]}`, the two terms are the parts of :math:`G` on the singular
    directions 1..r and r+1..2r, which add up to the best rank-2r approximation:
    :math:`\\Delta W = -\\lambda \\eta^2 c^2 G_{2r}`. Wang et al. show that this choice minimizes
    :math:`\\|\\Delta W - \\zeta \\Delta W_{\\text{full}}\\|_F` over all :math:`A_0, B_0` of rank r (no
    rank-r pair can reach beyond the 2r leading directions). Since :math:`B_0 A_0 \\neq 0`, the
    pretrained weight is corrected by ``offset`` so the model is unchanged at step 0.

    References
    ----------
    .. [1] S. Wang, L. Yu and J. Li, "LoRA-GA: Low-Rank Adaptation with Gradient Approximation",
       NeurIPS 2024, arXiv:2407.05000.
    .. [2] E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from linalg_lowrank.lora import lora_ga_init
    >>> G = np.random.default_rng(0).standard_normal((8, 6))
    >>> A, B, offset = lora_ga_init(G, 2)
    >>> step = G @ A.T @ A + B @ B.T @ G           # first-order LoRA step direction (scaling = 1)
    >>> U, s, Vt = np.linalg.svd(G)
    >>> bool(np.allclose(step, (U[:, :4] * s[:4]) @ Vt[:4]))
    True
    """
    G = _validate.float_array("grad", grad, min_ndim=2, max_ndim=2)
    m, n = G.shape
    r = _validate.positive_int("r", r)
    if 2 * r > min(m, n):
        raise ValueError(f"`r` must be at most min(M, N) / 2 = {min(m, n) // 2} for `grad` of shape {G.shape}, got {r}")
    eta = _validate.positive("scaling", scaling)
    scale = _validate.choice("scale", scale, _SCALES)
    gamma = _validate.positive("stable_gamma", config.LORA_GA_STABLE_GAMMA if stable_gamma is None else stable_gamma)
    method = _validate.choice("method", method, _METHODS)
    if method == "auto":
        k = min(m, n)
        method = "exact" if k <= config.LORA_GA_EXACT_MAX_DIM or 8 * r > k else "randomized"
    if method == "exact":
        res = best_rank(G, 2 * r)
        seed = None
    else:
        res = randomized_svd(G, 2 * r, n_power_iter=n_power_iter, rng=rng)
        seed = res.seed
    c = 1.0 / eta if scale == "gd" else m**0.25 / math.sqrt(gamma)
    dtype = G.dtype
    A = (c * res.Vt[:r]).astype(dtype)
    B = (c * res.U[:, r : 2 * r]).astype(dtype)
    offset = ((eta * B) @ A).astype(dtype, copy=False)
    return LoraGAInit(
        A=A,
        B=B,
        offset=offset,
        s=res.s.copy(),
        zeta=eta * eta * c * c,
        scale_factor=c,
        method=method,
        seed=seed,
    )
