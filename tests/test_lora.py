"""LoRA-GA against a dense numpy SVD and the first SGD step of the adapter, written out here."""

import numpy as np
import pytest

from linalg_lowrank import config
from linalg_lowrank.lora import LoraGAInit, lora_ga_init

from .strategies import from_spectrum

EPS64 = np.finfo(np.float64).eps


def best_rank_numpy(G, k):
    U, s, Vt = np.linalg.svd(np.asarray(G, dtype=np.float64), full_matrices=False)
    return (U[:, :k] * s[:k]) @ Vt[:k]


def first_sgd_step(W0, offset, A, B, G, eta, lr):
    """The adapted weight after one SGD step on (A, B), minus W0, with dL/dW = G held fixed.

    dL/dA = eta B^T G and dL/dB = eta G A^T; the step returns the exact change and its first-order part.
    """
    A1 = A - lr * eta * (B.T @ G)
    B1 = B - lr * eta * (G @ A.T)
    W_after = W0 - offset + eta * (B1 @ A1)
    first_order = -lr * eta**2 * (G @ A.T @ A + B @ B.T @ G)
    return W_after - W0, first_order


@pytest.mark.parametrize(("m", "n", "r"), [(12, 9, 2), (9, 12, 3), (30, 30, 1), (40, 16, 8)])
@pytest.mark.parametrize("eta", [1.0, 0.25])
def test_first_step_is_the_rank_2r_projection(m, n, r, eta):
    rng = np.random.default_rng(m * n + r)
    # distinct singular values, so the 2r-dimensional subspaces are well defined
    s = np.sort(rng.uniform(0.5, 2.0, min(m, n)))[::-1] * np.linspace(2.0, 1.0, min(m, n))
    G = from_spectrum(s, m, n, seed=r)
    W0 = rng.standard_normal((m, n))
    res = lora_ga_init(G, r, scaling=eta)
    assert isinstance(res, LoraGAInit) and res.method == "exact" and res.seed is None
    A, B, offset = res
    assert A.shape == (r, n) and B.shape == (m, r) and offset.shape == (m, n)
    assert res.zeta == pytest.approx(1.0, rel=4 * EPS64)
    # the initial adapted weight is the pretrained one
    np.testing.assert_allclose(
        W0 - offset + eta * (B @ A), W0, rtol=0, atol=8 * EPS64 * np.abs(W0).max() + 8 * EPS64 * np.abs(offset).max()
    )
    lr = 1e-3
    delta, first = first_sgd_step(W0, offset, A, B, G, eta, lr)
    G2r = best_rank_numpy(G, 2 * r)
    # the first-order step equals -lr * G_2r, the full fine-tuning step -lr G projected on rank 2r
    tol = 30 * (m + n) * EPS64 * lr * s[0]
    np.testing.assert_allclose(first, -lr * G2r, rtol=0, atol=tol)
    # ... which is as close to the full step as rank 2r allows (Eckart-Young)
    assert np.linalg.norm(first + lr * G) == pytest.approx(np.sqrt(np.sum(s[2 * r :] ** 2)) * lr, rel=1e-12, abs=tol)
    # the exact step differs from the first-order one by the lr^2 term eta^3 lr^2 G A^T B^T G only
    second = lr**2 * eta**3 * (G @ A.T @ B.T @ G)
    np.testing.assert_allclose(
        delta, first + second, rtol=0, atol=30 * (m + n) * EPS64 * (np.abs(W0).max() + np.abs(offset).max())
    )
    # singular values as numpy's
    np.testing.assert_allclose(res.s, s[: 2 * r], rtol=30 * max(m, n) * EPS64, atol=0)


def test_stable_scale():
    m, n, r = 16, 10, 2
    rng = np.random.default_rng(0)
    G = rng.standard_normal((m, n))
    eta = 0.5
    res = lora_ga_init(G, r, scaling=eta, scale="stable")
    c = m**0.25 / np.sqrt(config.LORA_GA_STABLE_GAMMA)
    assert res.scale_factor == pytest.approx(c, rel=4 * EPS64)
    assert res.zeta == pytest.approx(eta**2 * np.sqrt(m) / 16.0, rel=8 * EPS64)
    U, s, Vt = np.linalg.svd(G)
    # A's rows span the top r right singular vectors with norm c; B's columns the next r left ones
    np.testing.assert_allclose(res.A @ res.A.T, c**2 * np.eye(r), rtol=0, atol=30 * n * EPS64 * c**2)
    np.testing.assert_allclose(np.abs(res.A @ Vt[:r].T), c * np.eye(r), rtol=0, atol=30 * n * EPS64 * c)
    np.testing.assert_allclose(np.abs(U[:, r : 2 * r].T @ res.B), c * np.eye(r), rtol=0, atol=30 * m * EPS64 * c)
    first = eta**2 * (G @ res.A.T @ res.A + res.B @ res.B.T @ G)
    np.testing.assert_allclose(
        first, res.zeta * best_rank_numpy(G, 2 * r), rtol=0, atol=30 * (m + n) * EPS64 * s[0] * res.zeta
    )
    res2 = lora_ga_init(G, r, scaling=eta, scale="stable", stable_gamma=4.0)
    assert res2.scale_factor == pytest.approx(m**0.25 / 2.0, rel=4 * EPS64)


def test_randomized_path_on_a_large_gradient():
    # a gradient with 2r dominant directions and a tail: the randomized SVD finds the rank-2r part
    m, n, r = 300, 280, 4
    s = np.concatenate([np.linspace(10.0, 5.0, 2 * r), 1e-3 * 0.9 ** np.arange(min(m, n) - 2 * r)])
    G = from_spectrum(s, m, n, seed=1)
    res = lora_ga_init(G, r, rng=0)
    assert res.method == "randomized" and isinstance(res.seed, int)
    first = G @ res.A.T @ res.A + res.B @ res.B.T @ G
    G2r = best_rank_numpy(G, 2 * r)
    # the projection error of the sketch is at most sigma_{2r+1} amplified by the gap (Davis-Kahan);
    # with the power iterations it is far below: bound by the tail times the ratio sigma_{2r+1} / sigma_{2r}
    bound = np.sqrt(np.sum(s[2 * r :] ** 2)) * (s[2 * r] / s[2 * r - 1]) + 30 * (m + n) * EPS64 * s[0]
    assert np.linalg.norm(first - G2r) <= bound
    exact = lora_ga_init(G, r, method="exact")
    assert exact.method == "exact"
    np.testing.assert_allclose(res.s, exact.s, rtol=1e-10, atol=0)
    assert lora_ga_init(G, r, rng=0).seed == res.seed


def test_float32_stays_float32():
    G = np.random.default_rng(2).standard_normal((10, 8)).astype(np.float32)
    A, B, offset = lora_ga_init(G, 2)
    assert A.dtype == B.dtype == offset.dtype == np.float32
    first = G.astype(np.float64) @ A.T.astype(np.float64) @ A + B.astype(np.float64) @ B.T @ G
    np.testing.assert_allclose(
        first, best_rank_numpy(G, 4), rtol=0, atol=30 * 18 * np.finfo(np.float32).eps * np.abs(G).sum()
    )


def test_input_not_modified():
    G = np.random.default_rng(3).standard_normal((6, 5))
    G0 = G.copy()
    lora_ga_init(G, 2)
    np.testing.assert_array_equal(G, G0)


@pytest.mark.parametrize(
    ("grad", "r", "kwargs", "exc", "match"),
    [
        (np.ones((6, 5)), 3, {}, ValueError, r"`r` must be at most min\(M, N\) / 2 = 2"),
        (np.ones((6, 5)), 0, {}, ValueError, "`r` must be an integer >= 1"),
        (np.ones(5), 1, {}, ValueError, "`grad` must be 2-D"),
        (np.full((4, 4), np.nan), 1, {}, ValueError, "`grad` must be finite"),
        (np.ones((4, 4), dtype=np.int32), 1, {}, TypeError, "`grad` has dtype int32"),
        (np.ones((4, 4)), 1, {"scale": "unit"}, ValueError, "`scale` must be one of"),
        (np.ones((4, 4)), 1, {"scaling": 0.0}, ValueError, "`scaling` must be a positive finite float"),
        (np.ones((4, 4)), 1, {"stable_gamma": -1.0}, ValueError, "`stable_gamma` must be a positive"),
        (np.ones((4, 4)), 1, {"method": "qr"}, ValueError, "`method` must be one of"),
    ],
)
def test_bad_input(grad, r, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lora_ga_init(grad, r, **kwargs)
