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
    lbfgs_hessian,
    lbfgs_inverse_hessian,
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
