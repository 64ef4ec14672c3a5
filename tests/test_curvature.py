"""Curvature operators against dense references written here: the BFGS recursion, scipy's L-BFGS product."""

import warnings

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given
from hypothesis import strategies as st

from linalg_lowrank import config
from linalg_lowrank.curvature import (
    CurvatureConditionWarning,
    LBFGSHessian,
    LBFGSInverseHessian,
    bfgs_update,
    dfp_update,
    lbfgs_hessian,
    lbfgs_inverse_hessian,
    sr1_update,
)

from .strategies import random_orthogonal

EPS64 = np.finfo(np.float64).eps


# -- dense references ----------------------------------------------------------------------------


def dense_bfgs_inverse(S, Y, gamma):
    """H_k by the BFGS inverse recursion from gamma I, one pair at a time, in float64."""
    n = S.shape[1]
    H = gamma * np.eye(n)
    for s, y in zip(S.astype(np.float64), Y.astype(np.float64), strict=True):
        rho = 1.0 / (s @ y)
        V = np.eye(n) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H


def dense_bfgs_direct(S, Y, gamma):
    """B_k by the BFGS direct recursion from I / gamma, in float64."""
    n = S.shape[1]
    B = np.eye(n) / gamma
    for s, y in zip(S.astype(np.float64), Y.astype(np.float64), strict=True):
        Bs = B @ s
        B = B - np.outer(Bs, Bs) / (s @ Bs) + np.outer(y, y) / (y @ s)
    return B


def quadratic_pairs(n, k, seed, cond=10.0):
    """k pairs (s, A s) of a quadratic with SPD Hessian A, eigenvalues in [1, cond]."""
    rng = np.random.default_rng(seed)
    U = random_orthogonal(rng, n, n)
    A = (U * np.geomspace(1.0, cond, n)) @ U.T
    S = rng.standard_normal((k, n))
    return S, S @ A, A


def rounding_bound(M, k, n, dtype=np.float64):
    """Rounding allowance for an n x n result of k rank-2 updates: c (k + n) eps ||M||_2."""
    return 30 * (k + n) * np.finfo(dtype).eps * np.linalg.norm(M, 2)


def dense(op):
    return op @ np.eye(op.shape[0], dtype=op.dtype)


# -- L-BFGS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [None, 0.3])
@pytest.mark.parametrize(("n", "k"), [(1, 1), (6, 3), (20, 7), (9, 12)])
def test_lbfgs_equal_dense_bfgs_recursion(n, k, gamma):
    S, Y, _ = quadratic_pairs(n, k, seed=n * 100 + k)
    g = gamma if gamma is not None else float(S[-1] @ Y[-1] / (Y[-1] @ Y[-1]))
    H_ref = dense_bfgs_inverse(S, Y, g)
    B_ref = dense_bfgs_direct(S, Y, g)
    H = lbfgs_inverse_hessian(S, Y, gamma=gamma)
    B = lbfgs_hessian(S, Y, gamma=gamma)
    assert isinstance(H, LBFGSInverseHessian) and isinstance(B, LBFGSHessian)
    assert H.gamma == pytest.approx(g, rel=4 * EPS64) and B.gamma == H.gamma
    assert H.skipped == () and H.n_pairs == k
    np.testing.assert_allclose(dense(H), H_ref, rtol=0, atol=rounding_bound(H_ref, k, n))
    np.testing.assert_allclose(dense(B), B_ref, rtol=0, atol=rounding_bound(B_ref, k, n))
    # matvec, matmat and the adjoint agree with each other
    x = np.random.default_rng(1).standard_normal(n)
    np.testing.assert_allclose(H @ x, H_ref @ x, rtol=0, atol=rounding_bound(H_ref, k, n) * np.linalg.norm(x))
    np.testing.assert_allclose(H.T @ x, H @ x, rtol=0, atol=0)
    np.testing.assert_allclose(B.rmatvec(x), B.matvec(x), rtol=0, atol=0)


@pytest.mark.parametrize(("n", "k"), [(5, 2), (30, 10), (8, 20)])
def test_lbfgs_inverse_of_each_other_and_secant(n, k):
    S, Y, _ = quadratic_pairs(n, k, seed=k)
    H, B = lbfgs_inverse_hessian(S, Y), lbfgs_hessian(S, Y)
    X = np.random.default_rng(2).standard_normal((n, 4))
    Hd, Bd = dense_bfgs_inverse(S, Y, H.gamma), dense_bfgs_direct(S, Y, H.gamma)
    cond = np.linalg.norm(Hd, 2) * np.linalg.norm(Bd, 2)
    tol = 30 * (k + n) * EPS64 * cond * np.linalg.norm(X, axis=0)
    np.testing.assert_array_less(np.linalg.norm(H @ (B @ X) - X, axis=0), tol)
    np.testing.assert_array_less(np.linalg.norm(B @ (H @ X) - X, axis=0), tol)
    # secant equations of the newest pair
    s, y = S[-1], Y[-1]
    assert np.linalg.norm(H @ y - s) <= 30 * (k + n) * EPS64 * np.linalg.norm(Hd, 2) * np.linalg.norm(y)
    assert np.linalg.norm(B @ s - y) <= 30 * (k + n) * EPS64 * np.linalg.norm(Bd, 2) * np.linalg.norm(s)


@pytest.mark.parametrize(("n", "k"), [(4, 1), (25, 6), (10, 15)])
def test_lbfgs_agrees_with_scipy(n, k):
    S, Y, _ = quadratic_pairs(n, k, seed=7 + k)
    X = np.random.default_rng(3).standard_normal((n, 3))
    # scipy starts from H_0 = I
    ref = scipy.optimize.LbfgsInvHessProduct(S, Y)
    H1 = lbfgs_inverse_hessian(S, Y, gamma=1.0)
    Hd = dense_bfgs_inverse(S, Y, 1.0)
    tol = rounding_bound(Hd, k, n) * np.linalg.norm(X)
    np.testing.assert_allclose(H1 @ X, ref @ X, rtol=0, atol=tol)
    np.testing.assert_allclose(H1 @ X[:, 0], ref.matvec(X[:, 0]), rtol=0, atol=tol)
    # With H_0 = gamma I, H(S, Y; gamma) = gamma * H(S, gamma Y; I): rho_i s_i y_i^T is unchanged and
    # rho_i s_i s_i^T is divided by gamma, so every term of the recursion scales by gamma.
    H = lbfgs_inverse_hessian(S, Y)
    ref_g = scipy.optimize.LbfgsInvHessProduct(S, H.gamma * Y)
    Hg = dense_bfgs_inverse(S, Y, H.gamma)
    np.testing.assert_allclose(H @ X, H.gamma * (ref_g @ X), rtol=0, atol=rounding_bound(Hg, k, n) * np.linalg.norm(X))


def test_lbfgs_float32_stays_float32():
    S, Y, _ = quadratic_pairs(12, 4, seed=5)
    S32, Y32 = S.astype(np.float32), Y.astype(np.float32)
    H, B = lbfgs_inverse_hessian(S32, Y32), lbfgs_hessian(S32, Y32)
    x = np.random.default_rng(0).standard_normal(12).astype(np.float32)
    assert H.dtype == np.float32 and B.dtype == np.float32
    assert (H @ x).dtype == np.float32 and (B @ x).dtype == np.float32
    assert H.curvature_rtol == pytest.approx(config.LBFGS_CURVATURE_RTOL * np.sqrt(2.0**29))
    # against the float64 recursion on the float32 pairs, to float32 rounding
    Hd = dense_bfgs_inverse(S32, Y32, H.gamma)
    Bd = dense_bfgs_direct(S32, Y32, B.gamma)
    np.testing.assert_allclose(dense(H), Hd, rtol=0, atol=rounding_bound(Hd, 4, 12, np.float32))
    np.testing.assert_allclose(dense(B), Bd, rtol=0, atol=rounding_bound(Bd, 4, 12, np.float32))


def test_lbfgs_skips_pairs_failing_curvature_condition():
    S, Y, _ = quadratic_pairs(8, 5, seed=11)
    Y_bad = Y.copy()
    Y_bad[1] = -Y[1]  # s^T y < 0
    Y_bad[3] = Y[3] - (Y[3] @ S[3]) / (S[3] @ S[3]) * S[3]  # s^T y = 0 to rounding
    S_in, Y_in = S.copy(), Y_bad.copy()
    with pytest.warns(CurvatureConditionWarning, match=r"rows \[1, 3\]"):
        H = lbfgs_inverse_hessian(S_in, Y_in)
    with pytest.warns(CurvatureConditionWarning):
        B = lbfgs_hessian(S_in, Y_in)
    np.testing.assert_array_equal(S_in, S)  # inputs untouched
    np.testing.assert_array_equal(Y_in, Y_bad)
    assert H.skipped == (1, 3) and B.skipped == (1, 3) and H.n_pairs == 3
    keep = [0, 2, 4]
    Hd = dense_bfgs_inverse(S[keep], Y[keep], H.gamma)
    np.testing.assert_allclose(dense(H), Hd, rtol=0, atol=rounding_bound(Hd, 3, 8))
    Bd = dense_bfgs_direct(S[keep], Y[keep], H.gamma)
    np.testing.assert_allclose(dense(B), Bd, rtol=0, atol=rounding_bound(Bd, 3, 8))
    # the default gamma comes from the newest pair that is used
    Y_bad[4] = -Y[4]
    with pytest.warns(CurvatureConditionWarning):
        H = lbfgs_inverse_hessian(S, Y_bad)
    assert H.skipped == (1, 3, 4)
    assert H.gamma == pytest.approx(S[2] @ Y[2] / (Y[2] @ Y[2]), rel=8 * EPS64)


def test_lbfgs_all_skipped_and_no_pairs():
    S, Y, _ = quadratic_pairs(5, 2, seed=3)
    with pytest.warns(CurvatureConditionWarning):
        H = lbfgs_inverse_hessian(S, -Y)
    assert H.n_pairs == 0 and H.gamma == 1.0
    x = np.arange(5.0)
    np.testing.assert_array_equal(H @ x, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H0 = lbfgs_inverse_hessian(np.zeros((0, 5)), np.zeros((0, 5)), gamma=2.0)
        B0 = lbfgs_hessian(np.zeros((0, 5)), np.zeros((0, 5)), gamma=2.0)
    np.testing.assert_array_equal(H0 @ x, 2.0 * x)
    np.testing.assert_array_equal(B0 @ x, 0.5 * x)
    # a zero step is a skipped pair, not a division by zero
    S0 = S.copy()
    S0[0] = 0.0
    with pytest.warns(CurvatureConditionWarning):
        assert lbfgs_hessian(S0, Y).skipped == (0,)


@pytest.mark.parametrize(("a", "b"), [(2.0**600, 2.0**600), (2.0**-600, 2.0**-600), (2.0**500, 1.0), (1.0, 2.0**-500)])
def test_lbfgs_extreme_scales(a, b):
    # H(a S, b Y) = (a / b) H(S, Y) with gamma scaled alike: s^T y alone would overflow or underflow.
    S, Y, _ = quadratic_pairs(7, 4, seed=2)
    x = np.random.default_rng(4).standard_normal(7)
    H, B = lbfgs_inverse_hessian(S, Y), lbfgs_hessian(S, Y)
    Hs, Bs = lbfgs_inverse_hessian(a * S, b * Y), lbfgs_hessian(a * S, b * Y)
    assert Hs.gamma == pytest.approx(H.gamma * a / b, rel=8 * EPS64)
    Hd = dense_bfgs_inverse(S, Y, H.gamma)
    Bd = dense_bfgs_direct(S, Y, H.gamma)
    np.testing.assert_allclose((Hs @ x) * (b / a), H @ x, rtol=0, atol=rounding_bound(Hd, 4, 7) * np.linalg.norm(x))
    np.testing.assert_allclose((Bs @ x) * (a / b), B @ x, rtol=0, atol=rounding_bound(Bd, 4, 7) * np.linalg.norm(x))


@given(
    n=st.integers(1, 12),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
    log_cond=st.floats(0.0, 3.0),
    log_gamma=st.floats(-2.0, 2.0),
)
def test_lbfgs_property_inverse_pair(n, k, seed, log_cond, log_gamma):
    S, Y, _ = quadratic_pairs(n, k, seed, cond=10.0**log_cond)
    gamma = 10.0**log_gamma
    H, B = lbfgs_inverse_hessian(S, Y, gamma=gamma), lbfgs_hessian(S, Y, gamma=gamma)
    Hd, Bd = dense_bfgs_inverse(S, Y, gamma), dense_bfgs_direct(S, Y, gamma)
    np.testing.assert_allclose(dense(H), Hd, rtol=0, atol=rounding_bound(Hd, k, n) * np.linalg.cond(Hd))
    np.testing.assert_allclose(dense(B), Bd, rtol=0, atol=rounding_bound(Bd, k, n) * np.linalg.cond(Bd))
    assert np.linalg.eigvalsh(0.5 * (dense(H) + dense(H).T)).min() > 0


@pytest.mark.parametrize(
    ("S", "Y", "gamma", "exc", "match"),
    [
        (np.ones(3), np.ones(3), None, ValueError, "`S` must be 2-D"),
        (np.ones((2, 3)), np.ones((2, 4)), None, ValueError, "`S` and `Y` must have the same shape"),
        (np.ones((2, 3)), np.full((2, 3), np.nan), None, ValueError, "`Y` must be finite"),
        (np.ones((2, 3), dtype=np.int64), np.ones((2, 3)), None, TypeError, "`S` has dtype int64"),
        (np.ones((2, 3)), np.ones((2, 3)), -1.0, ValueError, "`gamma` must be a positive finite float, got -1.0"),
        (np.ones((2, 3)), np.ones((2, 3)), "1", TypeError, "`gamma` must be a positive finite float"),
        (np.ones((2, 0)), np.ones((2, 0)), None, ValueError, "`S` must have at least one column"),
        ("abc", np.ones((2, 3)), None, TypeError, "`S` must be a 2-D array"),
    ],
)
def test_lbfgs_bad_input(S, Y, gamma, exc, match):
    for fn in (lbfgs_inverse_hessian, lbfgs_hessian):
        with pytest.raises(exc, match=match):
            fn(S, Y, gamma=gamma)


# -- dense updates -------------------------------------------------------------------------------


def ref_bfgs_B(B, s, y):
    Bs = B @ s
    return B - np.outer(Bs, Bs) / (s @ Bs) + np.outer(y, y) / (y @ s)


def ref_bfgs_H(H, s, y):
    rho = 1.0 / (y @ s)
    V = np.eye(len(s)) - rho * np.outer(y, s)
    return V.T @ H @ V + rho * np.outer(s, s)


def ref_dfp_B(B, s, y):
    rho = 1.0 / (y @ s)
    V = np.eye(len(s)) - rho * np.outer(s, y)
    return V.T @ B @ V + rho * np.outer(y, y)


def ref_dfp_H(H, s, y):
    Hy = H @ y
    return H - np.outer(Hy, Hy) / (y @ Hy) + np.outer(s, s) / (y @ s)


def ref_sr1(M, a, b):
    v = b - M @ a
    return M + np.outer(v, v) / (v @ a)


@st.composite
def spd_problems(draw, max_n=10, curvature=True):
    """(B, s, y): SPD B with eigenvalues in [0.1, 10]; y = A s for an SPD A (curvature) or arbitrary."""
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lam = 10.0 ** np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=n, max_size=n)))
    U = random_orthogonal(rng, n, n)
    B = (U * np.asarray(lam)) @ U.T
    B = 0.5 * (B + B.T)
    s = rng.standard_normal(n)
    if curvature:
        W = random_orthogonal(rng, n, n)
        A = (W * 10.0 ** rng.uniform(-1.0, 1.0, n)) @ W.T
        y = A @ s
    else:
        y = rng.standard_normal(n)
    return B, s, y


def secant_tol(B_new_terms, s, n):
    """Rounding allowance for ||B_new s - y||: c n eps ||s|| times the sum of the sizes of the update's terms."""
    return 50 * n * EPS64 * np.linalg.norm(s) * sum(B_new_terms)


UPDATES = {
    "bfgs": (bfgs_update, ref_bfgs_B, ref_bfgs_H),
    "dfp": (dfp_update, ref_dfp_B, ref_dfp_H),
}


def bfgs_terms(B, s, y):
    """Size of the terms of the BFGS direct formula: rounding of the result is relative to their sum."""
    Bs = B @ s
    return np.linalg.norm(B) + (Bs @ Bs) / (s @ Bs) + (y @ y) / (y @ s)


def bfgs_inverse_terms(H, s, y):
    """Size of the terms of the expanded BFGS inverse formula H - rho (s h^T + h s^T) + (rho^2 y^T h + rho) s s^T."""
    rho, h = 1.0 / (y @ s), H @ y
    return np.linalg.norm(H) + 2 * rho * np.linalg.norm(s) * np.linalg.norm(h) + (rho**2 * (y @ h) + rho) * (s @ s)


TERMS = {
    "bfgs": (bfgs_terms, bfgs_inverse_terms),
    # DFP is BFGS with (s, B) and (y, H) exchanged
    "dfp": (lambda B, s, y: bfgs_inverse_terms(B, y, s), lambda H, s, y: bfgs_terms(H, y, s)),
}


@pytest.mark.parametrize("method", ["bfgs", "dfp"])
@given(problem=spd_problems())
def test_bfgs_dfp_properties(method, problem):
    B, s, y = problem
    n = len(s)
    update, ref_B, ref_H = UPDATES[method]
    terms_B, terms_H = TERMS[method]
    H = np.linalg.inv(B)
    H = 0.5 * (H + H.T)
    B_in, H_in = B.copy(), H.copy()
    B1 = update(B, s, y)
    H1 = update(H, s, y, inverse=True)
    np.testing.assert_array_equal(B, B_in)
    np.testing.assert_array_equal(H, H_in)
    # symmetric exactly, and equal to the textbook formula to the rounding of its terms
    np.testing.assert_array_equal(B1, B1.T)
    np.testing.assert_array_equal(H1, H1.T)
    RB, RH = ref_B(B, s, y), ref_H(H, s, y)
    tB, tH = terms_B(B, s, y), terms_H(H, s, y)
    np.testing.assert_allclose(B1, RB, rtol=0, atol=50 * n * EPS64 * tB)
    np.testing.assert_allclose(H1, RH, rtol=0, atol=50 * n * EPS64 * tH)
    # secant equations
    assert np.linalg.norm(B1 @ s - y) <= secant_tol([tB, np.linalg.norm(B1)], s, n)
    assert np.linalg.norm(H1 @ y - s) <= secant_tol([tH, np.linalg.norm(H1)], y, n)
    # positive definiteness is kept (s^T y > 0 by construction); det(B1) = det(B) y^T s / s^T B s
    # for BFGS keeps the smallest eigenvalue away from the rounding level
    assert np.linalg.eigvalsh(B1).min() > 0
    assert np.linalg.eigvalsh(H1).min() > 0
    # H1 = B1^{-1}: each is within its rounding of the exact update, amplified by the conditioning of the other
    err = 50 * n * EPS64 * (tB * np.linalg.norm(RH) + tH * np.linalg.norm(RB))
    np.testing.assert_allclose(H1 @ B1, np.eye(n), rtol=0, atol=err)


@given(problem=spd_problems(curvature=False))
def test_damped_bfgs_always_positive_definite(problem):
    B, s, y = problem
    n = len(s)
    info = bfgs_update(B, s, y, damping=True, return_info=True)
    assert not info.skipped
    B1 = info.matrix
    # Procedure 18.2 written out here
    sBs, sy = s @ B @ s, s @ y
    theta = 1.0 if sy >= 0.2 * sBs else 0.8 * sBs / (sBs - sy)
    # sBs - sy >= 0.8 sBs when damped: no cancellation, theta is as accurate as the two dot products
    dot_err = 50 * n * EPS64 * (np.linalg.norm(B) * (s @ s) + np.linalg.norm(s) * np.linalg.norm(y)) / sBs
    assert info.theta == pytest.approx(theta, rel=dot_err, abs=0)
    r = theta * y + (1 - theta) * (B @ s)
    assert s @ r >= 0.2 * sBs * (1 - dot_err)
    R = ref_bfgs_B(B, s, r)
    tB = bfgs_terms(B, s, r)
    np.testing.assert_allclose(B1, R, rtol=0, atol=50 * n * EPS64 * tB)
    assert np.linalg.eigvalsh(B1).min() > 0
    # the inverse form with damping is the inverse of the direct one; it gets B s by a solve with H,
    # whose error is cond(B) times larger
    H = np.linalg.inv(B)
    H1 = bfgs_update(0.5 * (H + H.T), s, y, damping=True, inverse=True)
    RH = ref_bfgs_H(H, s, r)
    tH = bfgs_inverse_terms(H, s, r)
    err = 50 * n * EPS64 * (tB * np.linalg.norm(RH) + tH * np.linalg.norm(R)) * np.linalg.cond(B)
    np.testing.assert_allclose(H1 @ B1, np.eye(n), rtol=0, atol=err)
    assert np.linalg.eigvalsh(H1).min() > 0


@given(problem=spd_problems(curvature=False))
def test_sr1_properties(problem):
    B, s, y = problem
    n = len(s)
    H = np.linalg.inv(B)
    H = 0.5 * (H + H.T)
    v = y - B @ s
    w = s - H @ y
    r = config.SR1_SKIP_RTOL
    info_B = sr1_update(B, s, y, return_info=True)
    info_H = sr1_update(H, s, y, inverse=True, return_info=True)
    skip_B = abs(s @ v) < r * np.linalg.norm(s) * np.linalg.norm(v)
    skip_H = abs(y @ w) < r * np.linalg.norm(y) * np.linalg.norm(w)
    assert info_B.skipped == skip_B and info_H.skipped == skip_H
    np.testing.assert_array_equal(info_B.matrix, info_B.matrix.T)
    if skip_B:
        np.testing.assert_array_equal(info_B.matrix, B)
        return
    R = ref_sr1(B, s, y)
    c = np.linalg.norm(B) + np.linalg.norm(v) ** 2 / abs(v @ s)
    np.testing.assert_allclose(info_B.matrix, R, rtol=0, atol=50 * n * EPS64 * c)
    assert np.linalg.norm(info_B.matrix @ s - y) <= secant_tol([c], s, n)
    if not skip_H and abs(v @ s) > 1e-3 * np.linalg.norm(v) * np.linalg.norm(s):
        # SR1 is self-dual: the inverse-form update of B^{-1} is the inverse of the direct update
        RH = ref_sr1(H, y, s)
        M = info_H.matrix @ info_B.matrix
        np.testing.assert_allclose(M, np.eye(n), rtol=0, atol=200 * n * EPS64 * np.linalg.cond(R) * np.linalg.cond(RH))


def test_sr1_skipping_rule_at_the_threshold():
    rng = np.random.default_rng(0)
    n = 6
    B = np.diag(np.arange(1.0, n + 1))
    s = rng.standard_normal(n)
    u = rng.standard_normal(n)
    u -= (u @ s) / (s @ s) * s  # u orthogonal to s
    r = config.SR1_SKIP_RTOL
    for factor, skipped in [(0.0, True), (0.5, True), (2.0, False), (1e3, False)]:
        # v = y - B s = u + c s with s^T v = factor * r ||s|| ||v|| (to first order in r)
        c = factor * r * np.linalg.norm(u) / np.linalg.norm(s)
        y = B @ s + u + c * s
        info = sr1_update(B, s, y, return_info=True)
        assert info.skipped == skipped, factor
    # v = 0: the secant equation holds already; nothing to add, nothing skipped
    info = sr1_update(B, s, B @ s, return_info=True)
    assert not info.skipped
    np.testing.assert_array_equal(info.matrix, B)
    # float32 raises r with the unit roundoff
    s32, B32 = s.astype(np.float32), B.astype(np.float32)
    y32 = (B @ s + u + 1e-6 * np.linalg.norm(u) / np.linalg.norm(s) * s).astype(np.float32)
    info = sr1_update(B32, s32, y32, return_info=True)
    assert info.skipped and info.matrix.dtype == np.float32


def test_bfgs_dfp_skip_without_curvature():
    B = np.diag([1.0, 2.0, 3.0])
    s = np.array([1.0, 0.0, 0.0])
    y = np.array([-1.0, 1.0, 0.0])
    for update in (bfgs_update, dfp_update):
        for inverse in (False, True):
            with pytest.warns(CurvatureConditionWarning, match="curvature condition"):
                info = update(B, s, y, inverse=inverse, return_info=True)
            assert info.skipped
            np.testing.assert_array_equal(info.matrix, B)
    with pytest.warns(CurvatureConditionWarning, match="`s` is zero"):
        assert bfgs_update(B, np.zeros(3), y, damping=True, return_info=True).skipped


@pytest.mark.parametrize("scale", [2.0**600, 2.0**-600])
@pytest.mark.parametrize("update", [bfgs_update, dfp_update, sr1_update])
@pytest.mark.parametrize("inverse", [False, True])
def test_updates_scale_invariant(update, inverse, scale):
    # (s, y) -> (c s, c y) leaves every update unchanged; s^T y alone would overflow or underflow
    rng = np.random.default_rng(1)
    n = 5
    B = np.diag(np.linspace(1.0, 3.0, n))
    s = rng.standard_normal(n)
    y = np.diag(np.linspace(2.0, 0.5, n)) @ s
    M = np.linalg.inv(B) if inverse else B
    ref = update(M, s, y, inverse=inverse)
    out = update(M, scale * s, scale * y, inverse=inverse)
    np.testing.assert_allclose(out, ref, rtol=0, atol=50 * n * EPS64 * np.linalg.norm(ref))


@pytest.mark.parametrize("update", [bfgs_update, dfp_update, sr1_update])
def test_updates_float32(update):
    B = np.diag([1.0, 2.0, 4.0]).astype(np.float32)
    s = np.array([1.0, 0.5, -0.25], dtype=np.float32)
    y = np.array([1.5, 1.0, -0.5], dtype=np.float32)
    out = update(B, s, y)
    assert out.dtype == np.float32
    ref = {bfgs_update: ref_bfgs_B, dfp_update: ref_dfp_B, sr1_update: ref_sr1}[update](
        B.astype(np.float64), s.astype(np.float64), y.astype(np.float64)
    )
    np.testing.assert_allclose(out, ref, rtol=0, atol=50 * 3 * np.finfo(np.float32).eps * np.linalg.norm(ref))
    assert update(B, s.astype(np.float64), y).dtype == np.float64


@pytest.mark.parametrize(
    ("M", "s", "y", "kwargs", "exc", "match"),
    [
        (np.ones((2, 3)), np.ones(2), np.ones(2), {}, ValueError, "`M` must be square"),
        (np.array([[1.0, 2.0], [0.0, 1.0]]), np.ones(2), np.ones(2), {}, ValueError, "`M` must be symmetric"),
        (np.eye(2), np.ones(3), np.ones(2), {}, ValueError, r"`s` must have shape \(2,\)"),
        (np.eye(2), np.ones(2), np.array([1.0, np.inf]), {}, ValueError, "`y` must be finite"),
        (np.eye(2, dtype=np.int64), np.ones(2), np.ones(2), {}, TypeError, "`M` has dtype int64"),
        (-np.eye(2), np.ones(2), np.ones(2), {}, ValueError, "`M` must be positive definite"),
        (-np.eye(2), np.ones(2), np.ones(2), {"damping": True, "inverse": True}, ValueError, "positive definite"),
    ],
)
def test_updates_bad_input(M, s, y, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        bfgs_update(M, s, y, **kwargs)
