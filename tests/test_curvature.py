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
    GaussNewtonOperator,
    LBFGSHessian,
    LBFGSInverseHessian,
    bfgs_update,
    dfp_update,
    empirical_fisher_operator,
    fisher_operator,
    gauss_newton_operator,
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
    # The recursions round relative to the size of their terms, which starts at gamma (1 / gamma for B)
    # and can exceed the result when it cancels: e.g. n = 1, B_1 = 1/gamma - 1/gamma + y/s.
    tol_H = rounding_bound(Hd, k, n) * np.linalg.cond(Hd) + rounding_bound(gamma * np.eye(1), k, n)
    tol_B = rounding_bound(Bd, k, n) * np.linalg.cond(Bd) + rounding_bound(np.eye(1) / gamma, k, n)
    np.testing.assert_allclose(dense(H), Hd, rtol=0, atol=tol_H)
    np.testing.assert_allclose(dense(B), Bd, rtol=0, atol=tol_B)
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
        # each side is within the rounding of its terms; the product carries each error times the other's
        # norm, and H = inv(B) itself is exact only to eps cond(B)
        RH = ref_sr1(H, y, s)
        c_H = np.linalg.norm(H) + np.linalg.norm(w) ** 2 / abs(w @ y)
        M = info_H.matrix @ info_B.matrix
        err = 50 * n * EPS64 * (c * np.linalg.norm(RH) + c_H * np.linalg.norm(R)) * np.linalg.cond(H)
        np.testing.assert_allclose(M, np.eye(n), rtol=0, atol=err)


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


# -- Gauss–Newton, GGN and Fisher ----------------------------------------------------------------


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def softmax(F):
    E = np.exp(F - F.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def logistic_problem(N=40, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, d))
    w = 0.7 * rng.standard_normal(d)
    t = (rng.random(N) < sigmoid(X @ w + 0.5 * rng.standard_normal(N))).astype(float)
    return X, w, t


def test_ggn_of_logistic_regression_is_its_hessian():
    X, w, _ = logistic_problem()
    N, d = X.shape
    p = sigmoid(X @ w)
    H_exact = X.T @ (X * (p * (1 - p))[:, None]) / N  # Hessian of the mean log-loss
    jvp, vjp = (lambda v: X @ v), (lambda u: X.T @ u)
    tol = 30 * N * d * EPS64 * np.linalg.norm(X) ** 2 / N
    for loss_hessian in (lambda u: p * (1 - p) * u / N, np.diag(p * (1 - p) / N), (p * (1 - p) / N)[:, None, None]):
        jv = (lambda v: (X @ v)[:, None], lambda u: X.T @ u[:, 0]) if np.ndim(loss_hessian) == 3 else (jvp, vjp)
        G = gauss_newton_operator(*jv, loss_hessian, (d, d))
        assert isinstance(G, GaussNewtonOperator)
        Gd = G @ np.eye(d)
        np.testing.assert_allclose(Gd, H_exact, rtol=0, atol=tol)
        np.testing.assert_allclose(G.matvec(np.ones(d)), H_exact @ np.ones(d), rtol=0, atol=tol * np.sqrt(d))
        np.testing.assert_allclose(G.T @ np.ones(d), G @ np.ones(d), rtol=0, atol=0)
        assert G.output_shape in ((N,), (N, 1))


def test_fisher_of_logistic_regression_converges_to_the_hessian():
    X, w, _ = logistic_problem()
    N, d = X.shape
    p = sigmoid(X @ w)
    H_exact = X.T @ (X * (p * (1 - p))[:, None]) / N
    # g = p - y, y ~ Bernoulli(p): E g^2 = p (1 - p), Var g^2 = E g^4 - (E g^2)^2
    var_g2 = p * (1 - p) ** 4 + (1 - p) * p**4 - (p * (1 - p)) ** 2
    outer2 = np.einsum("ni,nj->nij", X, X) ** 2
    prev = None
    for M in (1, 10, 100, 1000):
        F = fisher_operator(lambda v: X @ v, lambda u: X.T @ u, p, (d, d), likelihood="bernoulli", n_samples=M, rng=M)
        Fd = F @ np.eye(d)
        assert F.seed == M and F.n_samples == M
        np.testing.assert_allclose(Fd, Fd.T, rtol=0, atol=30 * d * EPS64 * np.abs(Fd).max())
        assert np.linalg.eigvalsh(0.5 * (Fd + Fd.T)).min() >= -30 * d * EPS64 * np.linalg.norm(Fd, 2)
        # CLT: each entry is a mean of N M independent terms with known variances
        std = np.sqrt(np.einsum("n,nij->ij", var_g2, outer2) / (N**2 * M))
        z = np.abs(Fd - H_exact) / std
        assert z.max() < 5.0, (M, z.max())
        err = np.linalg.norm(Fd - H_exact)
        if prev is not None:
            assert err < prev
        prev = err
    # the labels are drawn once: products are linear and repeatable
    F = fisher_operator(lambda v: X @ v, lambda u: X.T @ u, p, (d, d), likelihood="bernoulli", n_samples=3, rng=1)
    x, y = np.arange(d, dtype=float), np.ones(d)
    np.testing.assert_allclose(F @ (x + y), F @ x + F @ y, rtol=0, atol=30 * d * EPS64 * np.linalg.norm(x + y))
    F2 = fisher_operator(lambda v: X @ v, lambda u: X.T @ u, p, (d, d), likelihood="bernoulli", n_samples=3, rng=1)
    np.testing.assert_array_equal(F2 @ x, F @ x)
    Fs = fisher_operator(
        lambda v: X @ v, lambda u: X.T @ u, p, (d, d), likelihood="bernoulli", n_samples=3, rng=1, reduction="sum"
    )
    np.testing.assert_allclose(Fs @ x, N * (F @ x), rtol=30 * N * EPS64, atol=0)


@pytest.mark.parametrize("n_samples", [1, 2, 5])
def test_fisher_unbiased_with_few_samples_per_example(n_samples):
    # Many examples and few labels each: the estimate is within 5 sigma of the exact Fisher at a noise
    # level (~1% on the diagonal) that would expose a wrong 1/M or 1/N normalization.
    X, w, _ = logistic_problem(N=20000, d=3, seed=5)
    N, d = X.shape
    p = sigmoid(X @ w)
    exact = X.T @ (X * (p * (1 - p))[:, None]) / N
    var_g2 = p * (1 - p) ** 4 + (1 - p) * p**4 - (p * (1 - p)) ** 2
    std = np.sqrt(np.einsum("n,nij->ij", var_g2, np.einsum("ni,nj->nij", X, X) ** 2) / (N**2 * n_samples))
    F = fisher_operator(
        lambda v: X @ v, lambda u: X.T @ u, p, (d, d), likelihood="bernoulli", n_samples=n_samples, rng=0
    )
    z = np.abs(F @ np.eye(d) - exact) / std
    assert z.max() < 5.0
    assert (np.diag(std) / np.diag(exact)).max() < 0.05  # the noise level that makes the test sharp


class MLP:
    """f(x) = W2 tanh(W1 x + b1) + b2 with softmax cross-entropy, parameters flattened as (W1, b1, W2, b2)."""

    def __init__(self, d=4, h=5, C=3, N=12, seed=0):
        rng = np.random.default_rng(seed)
        self.d, self.h, self.C, self.N = d, h, C, N
        self.X = rng.standard_normal((N, d))
        self.t = rng.integers(0, C, N)
        self.theta = 0.8 * rng.standard_normal(h * d + h + C * h + C)
        self.P = self.theta.size

    def unpack(self, theta):
        d, h, C = self.d, self.h, self.C
        i = 0
        W1 = theta[i : i + h * d].reshape(h, d)
        i += h * d
        b1 = theta[i : i + h]
        i += h
        W2 = theta[i : i + C * h].reshape(C, h)
        i += C * h
        return W1, b1, W2, theta[i:]

    def logits(self, theta):
        W1, b1, W2, b2 = self.unpack(theta)
        return np.tanh(self.X @ W1.T + b1) @ W2.T + b2

    def loss(self, theta):
        F = self.logits(theta)
        m = F.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(F - m).sum(axis=1))
        return float(np.mean(lse - F[np.arange(self.N), self.t]))

    def jvp(self, v):
        W1, b1, W2, _ = self.unpack(self.theta)
        dW1, db1, dW2, db2 = self.unpack(v)
        A = np.tanh(self.X @ W1.T + b1)
        dA = (1 - A**2) * (self.X @ dW1.T + db1)
        return A @ dW2.T + dA @ W2.T + db2

    def vjp(self, U):
        W1, b1, W2, _ = self.unpack(self.theta)
        A = np.tanh(self.X @ W1.T + b1)
        Delta = (U @ W2) * (1 - A**2)
        return np.concatenate([(Delta.T @ self.X).ravel(), Delta.sum(0), (U.T @ A).ravel(), U.sum(0)])

    def per_sample_jacobians(self):
        """(N, C, P) Jacobians of the logits, one example at a time, from the formulas (no batching)."""
        W1, b1, W2, _ = self.unpack(self.theta)
        J = np.zeros((self.N, self.C, self.P))
        for n in range(self.N):
            x = self.X[n]
            a = np.tanh(W1 @ x + b1)
            for c in range(self.C):
                dz = W2[c] * (1 - a**2)  # d f_c / d (W1 x + b1)
                J[n, c] = np.concatenate(
                    [np.outer(dz, x).ravel(), dz, np.outer(np.eye(self.C)[c], a).ravel(), np.eye(self.C)[c]]
                )
        return J

    def grad(self, theta):
        """Gradient of the mean cross-entropy (backpropagation)."""
        saved = self.theta
        self.theta = theta
        try:
            Pr = softmax(self.logits(theta))
            Pr[np.arange(self.N), self.t] -= 1
            return self.vjp(Pr / self.N)
        finally:
            self.theta = saved

    def per_sample_grads(self):
        J = self.per_sample_jacobians()
        R = softmax(self.logits(self.theta))
        R[np.arange(self.N), self.t] -= 1
        return np.einsum("nc,ncp->np", R, J)


def fd_jacobians(model, h=None):
    """(N, C, P) Jacobians of the logits by central differences (checks the formulas above)."""
    h = h or EPS64 ** (1 / 3)
    J = np.zeros((model.N, model.C, model.P))
    for i in range(model.P):
        e = np.zeros(model.P)
        e[i] = h
        J[:, :, i] = (model.logits(model.theta + e) - model.logits(model.theta - e)) / (2 * h)
    return J


def test_mlp_ggn_against_dense_assembly_and_finite_difference_hessian():
    model = MLP()
    N, C, P = model.N, model.C, model.P
    J = model.per_sample_jacobians()
    # the test's own Jacobian formulas against central differences: O(h^2) + O(eps / h) ~ 1e-10
    np.testing.assert_allclose(J, fd_jacobians(model), rtol=0, atol=1e-8 * np.abs(J).max())
    pr = softmax(model.logits(model.theta))
    HL = (np.einsum("nc,cd->ncd", pr, np.eye(C)) - np.einsum("nc,nd->ncd", pr, pr)) / N  # CE Hessian per example
    GGN = np.einsum("ncp,ncd,ndq->pq", J, HL, J)
    G = gauss_newton_operator(model.jvp, model.vjp, HL, (P, P))
    Gd = G @ np.eye(P)
    scale = np.einsum("ncp,ncd,ndq->pq", np.abs(J), np.abs(HL), np.abs(J))
    np.testing.assert_allclose(Gd, GGN, rtol=0, atol=30 * (P + C) * EPS64 * scale.max())
    # GGN is PSD; its smallest eigenvalue can be 0, so to rounding
    assert np.linalg.eigvalsh(GGN).min() >= -30 * P * EPS64 * np.linalg.norm(GGN, 2)
    assert np.linalg.eigvalsh(0.5 * (Gd + Gd.T)).min() >= -30 * P * EPS64 * np.linalg.norm(GGN, 2)
    # the Hessian by central differences of the gradient (error ~ eps^(2/3) ||H||) differs from the GGN
    h = EPS64 ** (1 / 3)
    H_fd = np.empty((P, P))
    for i in range(P):
        e = np.zeros(P)
        e[i] = h
        H_fd[:, i] = (model.grad(model.theta + e) - model.grad(model.theta - e)) / (2 * h)
    fd_err = 1e-8 * np.linalg.norm(H_fd)
    assert np.linalg.norm(H_fd - H_fd.T) < fd_err
    assert np.linalg.norm(H_fd - GGN) > 1e4 * fd_err  # the residual term sum_k dl/df_k grad^2 f_k is not small
    # ... while on the output layer alone (where f is linear in W2, b2) they coincide
    out = slice(model.h * model.d + model.h, P)
    np.testing.assert_allclose(H_fd[out, out], GGN[out, out], rtol=0, atol=fd_err)


def test_mlp_fisher_converges_to_ggn_and_empirical_fisher():
    model = MLP(N=10, seed=3)
    N, C, P = model.N, model.C, model.P
    J = model.per_sample_jacobians()
    pr = softmax(model.logits(model.theta))
    # the exact mean and variance of each entry's summand, by enumerating the C labels
    G = pr[:, None, :] - np.eye(C)[None, :, :]  # (N, label, C): g = p - e_label
    JG = np.einsum("ncp,nlc->nlp", J, G)  # J_n^T g for each label
    Z = np.einsum("nlp,nlq->nlpq", JG, JG)
    mean = np.einsum("nl,nlpq->pq", pr, Z) / N
    var = (np.einsum("nl,nlpq->npq", pr, Z**2) - np.einsum("nl,nlpq->npq", pr, Z) ** 2).sum(0) / N**2
    HL = (np.einsum("nc,cd->ncd", pr, np.eye(C)) - np.einsum("nc,nd->ncd", pr, pr)) / N
    GGN = np.einsum("ncp,ncd,ndq->pq", J, HL, J)
    np.testing.assert_allclose(mean, GGN, rtol=0, atol=30 * C * P * EPS64 * np.abs(Z).max())  # Fisher = GGN
    for M in (1, 30, 1000):
        F = fisher_operator(model.jvp, model.vjp, pr, (P, P), n_samples=M, rng=10 + M)
        Fd = F @ np.eye(P)
        std = np.sqrt(var / M)
        mask = std > 0  # entries with no randomness (never here, but exact ones must then be exact)
        z = np.abs(Fd - GGN)[mask] / std[mask]
        assert z.max() < 6.0, (M, z.max())  # P^2 = 1849 entries: 6 sigma keeps the family-wise level ~1e-6
    # empirical Fisher: the outer products at the observed labels
    Gps = model.per_sample_grads()
    EF = empirical_fisher_operator(Gps)
    ref = Gps.T @ Gps / N
    np.testing.assert_allclose(EF @ np.eye(P), ref, rtol=0, atol=30 * N * EPS64 * np.abs(Gps).max() ** 2)
    np.testing.assert_allclose(
        empirical_fisher_operator(Gps, reduction="sum") @ np.eye(P),
        N * ref,
        rtol=0,
        atol=30 * N**2 * EPS64 * np.abs(Gps).max() ** 2,
    )
    # per-sample gradients average to the gradient
    np.testing.assert_allclose(Gps.mean(0), model.grad(model.theta), rtol=0, atol=30 * P * EPS64 * np.abs(Gps).max())


def test_empirical_fisher_float32_and_scale():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((7, 4))
    x = rng.standard_normal(4)
    ref = G.T @ (G @ x) / 7
    F32 = empirical_fisher_operator(G.astype(np.float32))
    assert F32.dtype == np.float32 and (F32 @ x.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(
        F32 @ x.astype(np.float32), ref, rtol=0, atol=30 * 7 * 2.0**-23 * np.abs(G).max() ** 2 * np.abs(x).sum()
    )
    # (c G)^T (c G) = c^2 G^T G: ||c G||_F^2 alone overflows at c = 2^510
    c = 2.0**510
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.sum((c * G) ** 2))
    out = empirical_fisher_operator(c * G) @ (x / c**2)
    np.testing.assert_allclose(out, ref, rtol=0, atol=30 * 7 * EPS64 * np.abs(G).max() ** 2 * np.abs(x).sum())


def test_fisher_categorical_sampling_matches_probabilities():
    # the labels follow the given distribution: frequencies within 5 sigma (multinomial)
    probs = np.array([[0.1, 0.6, 0.3], [1.0, 0.0, 0.0]])
    M = 20000
    F = fisher_operator(lambda v: np.tile(v, (2, 1)), lambda u: u.sum(0), probs, (3, 3), n_samples=M, rng=0)
    # J_n = I for both examples: F = (1/2M) sum_n sum_m g g^T; its diagonal holds the label frequencies
    Fd = F @ np.eye(3)
    # E[g_c^2] = p_c (1 - p_c): example 2 is deterministic (g = 0)
    exact = (np.diag(probs[0]) - np.outer(probs[0], probs[0])) / 2
    var_entry = np.zeros((3, 3))
    p = probs[0]
    G = p[None, :] - np.eye(3)
    Z = np.einsum("li,lj->lij", G, G)
    var_entry = (np.einsum("l,lij->ij", p, Z**2) - np.einsum("l,lij->ij", p, Z) ** 2) / (4 * M)
    assert (np.abs(Fd - exact) <= 5 * np.sqrt(var_entry) + 1e-15).all()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"probs": np.array([[0.5, 0.6]])}, ValueError, "rows of `probs` must sum to 1"),
        ({"probs": np.array([[1.5, -0.5]])}, ValueError, r"`probs` must lie in \[0, 1\]"),
        ({"probs": np.array([0.5, 0.5])}, ValueError, "`probs` must be 2-D"),
        ({"probs": np.array([[0.5, np.nan]])}, ValueError, "`probs` must be finite"),
        ({"shape": (2, 3)}, ValueError, "`shape` must be square"),
        ({"shape": 2}, ValueError, "`shape` must be a pair"),
        ({"n_samples": 0}, ValueError, "`n_samples` must be an integer >= 1"),
        ({"likelihood": "gaussian"}, ValueError, "`likelihood` must be one of"),
        ({"reduction": "none"}, ValueError, "`reduction` must be one of"),
        ({"jvp": None}, TypeError, "`jvp` must be callable"),
        ({"rng": -1}, ValueError, "`rng`"),
    ],
)
def test_fisher_bad_input(kwargs, exc, match):
    args = {
        "jvp": lambda v: np.tile(v, (1, 1)),
        "vjp": lambda u: u[0],
        "probs": np.array([[0.5, 0.5]]),
        "shape": (2, 2),
    }
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fisher_operator(args.pop("jvp"), args.pop("vjp"), args.pop("probs"), args.pop("shape"), **args)


def test_gauss_newton_bad_input_and_bad_callables():
    X = np.ones((3, 2))
    with pytest.raises(TypeError, match="`vjp` must be callable"):
        gauss_newton_operator(lambda v: X @ v, "no", np.eye(3), (2, 2))
    with pytest.raises(ValueError, match="`loss_hessian` must be symmetric"):
        gauss_newton_operator(lambda v: X @ v, lambda u: X.T @ u, np.triu(np.ones((3, 3))), (2, 2))
    with pytest.raises(ValueError, match="`loss_hessian` must be finite"):
        gauss_newton_operator(lambda v: X @ v, lambda u: X.T @ u, np.full((3, 3), np.inf), (2, 2))
    G = gauss_newton_operator(lambda v: X @ v, lambda u: np.ones(5), np.eye(3), (2, 2))
    with pytest.raises(ValueError, match=r"`vjp` returned shape \(5,\), expected \(2,\)"):
        G @ np.ones(2)
    G = gauss_newton_operator(lambda v: np.full(3, np.nan), lambda u: X.T @ u, np.eye(3), (2, 2))
    with pytest.raises(ValueError, match="`jvp` returned NaN or Inf"):
        G @ np.ones(2)
    G = gauss_newton_operator(lambda v: np.ones(4), lambda u: np.ones(2), np.eye(3), (2, 2))
    with pytest.raises(ValueError, match="`jvp` returned 4 outputs, but `loss_hessian` is 3 x 3"):
        G @ np.ones(2)
    with pytest.raises(TypeError, match="`per_sample_grads` has dtype int64"):
        empirical_fisher_operator(np.ones((2, 2), dtype=np.int64))


def test_gauss_newton_float32_and_lists_of_pairs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3))
    HL = np.diag(rng.uniform(0.1, 1.0, 6)).astype(np.float32)
    G = gauss_newton_operator(lambda v: X.astype(np.float32) @ v, lambda u: X.T.astype(np.float32) @ u, HL, (3, 3))
    assert G.dtype == np.float32
    out = G @ np.eye(3, dtype=np.float32)
    assert out.dtype == np.float32
    ref = X.T @ HL.astype(np.float64) @ X
    np.testing.assert_allclose(out, ref, rtol=0, atol=30 * 6 * np.finfo(np.float32).eps * np.abs(X).max() ** 2 * 6)
    # L-BFGS pairs as Python lists of vectors
    S, Y, _ = quadratic_pairs(4, 2, seed=0)
    H = lbfgs_inverse_hessian(list(S), list(Y))
    np.testing.assert_array_equal(H @ np.ones(4), lbfgs_inverse_hessian(S, Y) @ np.ones(4))


def test_fisher_bernoulli_with_several_outputs_per_example():
    # K independent sigmoid outputs per example, J = identity on (N, K) outputs: F = diag(p (1 - p)) / N entrywise
    rng = np.random.default_rng(1)
    N, K, M = 50, 3, 400
    p = rng.uniform(0.1, 0.9, (N, K))
    F = fisher_operator(
        lambda v: v.reshape(N, K), lambda u: u.ravel(), p, (N * K, N * K), likelihood="bernoulli", n_samples=M, rng=2
    )
    x = rng.standard_normal(N * K)
    out = F @ x
    exact = (p * (1 - p)).ravel() / N * x
    # one sample of (F x)_{nk} is g_k (g . x_n), g = p_n - y with independent entries of mean 0 and variance v:
    # its variance is Var(g_k^2) x_k^2 + v_k sum_{j != k} v_j x_j^2 (the cross terms are uncorrelated)
    v = p * (1 - p)
    var_g2 = p * (1 - p) ** 4 + (1 - p) * p**4 - v**2
    X = x.reshape(N, K)
    var = var_g2 * X**2 + v * ((v * X**2).sum(axis=1, keepdims=True) - v * X**2)
    std = (np.sqrt(var / M) / N).ravel()
    assert (np.abs(out - exact) <= 5 * std).all()
