"""inverse_pth_root, SymmetricEig and shampoo_precondition against analytic roots and scipy.

References are independent of the code under test: Q diag(lambda^(-1/p)) Q^T from the spectrum
the matrix was built from, scipy.linalg.fractional_matrix_power, np.kron. Tolerances are
10 * kappa * eps(float64) (the conditioning of x^(-1/p) is 1/p <= 1 relative to a backward
error of eps * ||A||), plus the final rounding to the output dtype.
"""

import warnings
from fractions import Fraction

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from linalg_lowrank import _roots_kernels
from linalg_lowrank.results import ConvergenceWarning
from linalg_lowrank.roots import (
    InverseRootResult,
    SymmetricEig,
    inverse_pth_root,
    shampoo_precondition,
    symmetric_eig,
)

from . import reference
from .strategies import random_orthogonal

EPS64 = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps
P_VALUES = [1, 2, 3, 4, 6, 8, 2.5, Fraction(4, 3), 0.5]


def spd(n, kappa, seed, lam=None):
    """(A, Q, lam): A = Q diag(lam) Q^T with log-spaced lam from 1 down to 1/kappa."""
    rng = np.random.default_rng(seed)
    Q = random_orthogonal(rng, n, n)
    lam = np.logspace(0, -np.log10(kappa), n) if lam is None else np.asarray(lam, dtype=np.float64)
    return (Q * lam) @ Q.T, Q, lam


def analytic(Q, lam, s):
    return (Q * lam**s) @ Q.T


def relerr(X, ref):
    return np.linalg.norm(np.asarray(X, dtype=np.float64) - ref) / np.linalg.norm(ref)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("kappa", [1e2, 1e6, 1e12])
@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("method", ["eigh", "newton"])
def test_root_matches_analytic_within_10_kappa_eps(kappa, p, method):
    A, Q, lam = spd(24, kappa, seed=7)
    res = inverse_pth_root(A, p, method=method, return_info=True)
    assert isinstance(res, InverseRootResult) and res.method == method
    assert res.converged
    err = relerr(res.root, analytic(Q, lam, -1.0 / float(p)))
    assert err <= 10 * kappa * EPS64
    assert res.cond == pytest.approx(kappa, rel=1e-2) if method == "eigh" else res.cond >= kappa * (1 - 1e-6)
    # the reported estimate is not optimistic by more than the rounding floor
    assert err <= 10 * max(res.error_estimate, kappa * EPS64)


@pytest.mark.parametrize("p", [1, 3, 4, 2.5])
def test_root_matches_scipy_fractional_matrix_power(p):
    A, _, _ = spd(16, 1e3, seed=3)
    ref = np.real(scipy.linalg.fractional_matrix_power(A, -1.0 / p))
    assert relerr(inverse_pth_root(A, p), ref) <= 10 * 1e3 * EPS64 * 16  # scipy's Schur-Pade error ~ n kappa eps


@given(
    n=st.integers(1, 20),
    log_kappa=st.floats(0, 10),
    p=st.sampled_from(P_VALUES),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_eigh_root_property_random_spectra_and_dtypes(n, log_kappa, p, dtype, seed):
    if dtype == np.float32:  # float32 storage perturbs by ~ n eps32: beyond kappa ~ 1e5 it may be indefinite
        log_kappa = min(log_kappa, 4.0)
    rng = np.random.default_rng(seed)
    lam = np.sort(10.0 ** rng.uniform(-log_kappa, 0, n))[::-1]
    lam[0] = 1.0
    A, _, _ = spd(n, 1.0, seed, lam=lam)
    A = A.astype(dtype)
    A = (A + A.T) / 2  # symmetric as stored
    w, V = np.linalg.eigh(A.astype(np.float64))  # truth of the matrix as stored
    kappa = w.max() / w.min()
    ref = analytic(V, w, -1.0 / float(p))
    X = inverse_pth_root(A, p)
    assert X.dtype == dtype and X.shape == A.shape
    assert relerr(X, ref) <= 10 * kappa * EPS64 + 2 * np.finfo(dtype).eps


def test_float32_newton_is_computed_in_float64():
    A, Q, lam = spd(32, 1e4, seed=11)
    A32 = A.astype(np.float32)
    w, V = np.linalg.eigh(A32.astype(np.float64))
    res = inverse_pth_root(A32, 4, method="newton", return_info=True)
    assert res.root.dtype == np.float32 and res.converged
    assert relerr(res.root, analytic(V, w, -0.25)) <= 10 * 1e4 * EPS64 + 2 * EPS32


# --------------------------------------------------------------------------- coupled Newton verifies itself


def test_newton_not_converged_is_reported_not_hidden():
    A, Q, lam = spd(20, 1e8, seed=5)
    with pytest.warns(ConvergenceWarning, match="verified residual"):
        res = inverse_pth_root(A, 3, method="newton", maxiter=5, return_info=True)
    assert not res.converged
    err = relerr(res.root, analytic(Q, lam, -1 / 3))
    assert err > 1e-3  # the answer is indeed wrong, and the flag said so
    assert res.residual > 1e-3


def test_newton_rejects_irrational_p():
    A, _, _ = spd(4, 10, seed=0)
    with pytest.raises(ValueError, match="`p`.*method='eigh'"):
        inverse_pth_root(A, np.pi, method="newton")
    X = inverse_pth_root(A, np.pi)  # the eigen path takes any p
    assert np.all(np.isfinite(X))


# --------------------------------------------------------------------------- ridge, semidefinite, bad input


def test_singular_psd_with_ridge_matches_analytic():
    lam = np.array([2.0, 1.0, 0.5, 0.0, 0.0])
    A, Q, _ = spd(5, 1, seed=2, lam=lam)
    for mode, r_abs in (("relative", 1e-3 * 2.0), ("absolute", 1e-3)):
        res = inverse_pth_root(A, 4, ridge=1e-3, ridge_mode=mode, return_info=True)
        assert res.ridge == pytest.approx(r_abs)
        kappa = (2.0 + r_abs) / r_abs
        assert relerr(res.root, analytic(Q, lam + r_abs, -0.25)) <= 10 * kappa * EPS64
        res_n = inverse_pth_root(A, 4, ridge=r_abs, ridge_mode="absolute", method="newton", return_info=True)
        assert res_n.converged
        assert relerr(res_n.root, analytic(Q, lam + r_abs, -0.25)) <= 10 * kappa * EPS64


def test_singular_without_ridge_is_an_error():
    A, _, _ = spd(5, 1, seed=2, lam=[1.0, 1.0, 0.5, 0.0, 0.0])
    for method in ("eigh", "newton"):
        with pytest.raises(ValueError, match="singular.*`ridge`"):
            inverse_pth_root(A, 2, method=method)


def test_negative_eigenvalue_error_names_it():
    A, _, _ = spd(6, 1, seed=4, lam=[3.0, 2.0, 1.0, 0.5, 0.1, -0.25])
    for method in ("eigh", "newton"):
        with pytest.raises(ValueError, match=r"positive semidefinite: its smallest eigenvalue is -0\.25"):
            inverse_pth_root(A, 2, ridge=1e-3, method=method)


def test_bad_inputs_raise_naming_the_argument():
    A, _, _ = spd(4, 10, seed=0)
    N = A.copy()
    N[0, 1] += 0.1
    with pytest.raises(ValueError, match="`A` must be symmetric"):
        inverse_pth_root(N, 2)
    for bad in (np.nan, np.inf):
        B = A.copy()
        B[1, 1] = bad
        with pytest.raises(ValueError, match="`A` must be finite"):
            inverse_pth_root(B, 2)
    with pytest.raises(ValueError, match="`A` must be square"):
        inverse_pth_root(np.ones((3, 4)), 2)
    with pytest.raises(TypeError, match="`A` has dtype int"):
        inverse_pth_root(np.eye(3, dtype=np.int64), 2)
    with pytest.raises(TypeError, match="`A` has dtype complex"):
        inverse_pth_root(np.eye(3, dtype=complex), 2)
    for p in (0, -2, np.nan, np.inf):
        with pytest.raises(ValueError, match="`p` must be a positive"):
            inverse_pth_root(A, p)
    for p in (True, "4", None):
        with pytest.raises(TypeError, match="`p`"):
            inverse_pth_root(A, p)
    with pytest.raises(ValueError, match="`method`"):
        inverse_pth_root(A, 2, method="schur")
    with pytest.raises(ValueError, match="`ridge`"):
        inverse_pth_root(A, 2, ridge=-1.0)
    with pytest.raises(ValueError, match="`ridge_mode`"):
        inverse_pth_root(A, 2, ridge_mode="scaled")


def test_roundoff_asymmetry_is_accepted_and_symmetrized():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((30, 50)).astype(np.float32)
    L = G @ G.T  # symmetric only up to BLAS rounding
    X = inverse_pth_root(L, 4, ridge=1e-6)
    np.testing.assert_array_equal(X, X.T)


@pytest.mark.parametrize("method", ["eigh", "newton"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_input_is_not_modified(method, order):
    A, _, _ = spd(8, 100, seed=1)
    A = np.asarray(A, order=order)
    before = A.copy()
    inverse_pth_root(A, 3, ridge=1e-3, method=method)
    np.testing.assert_array_equal(A, before)


# --------------------------------------------------------------------------- the eigendecomposition object


def test_symmetric_eig_serves_any_power():
    A, Q, lam = spd(12, 1e4, seed=9)
    eig = symmetric_eig(A)
    assert isinstance(eig, SymmetricEig) and eig.method == "eigh"
    assert np.all(np.diff(eig.eigenvalues) <= 0)
    for s in (1.0, 2.0, -1.0, 0.5, -0.25, -1 / 6):
        assert relerr(eig.power(s), analytic(Q, lam, s)) <= 10 * 1e4 * EPS64 * max(1.0, abs(s))
    assert relerr(eig.inverse_root(4), analytic(Q, lam, -0.25)) <= 10 * 1e4 * EPS64
    assert eig.cond() == pytest.approx(1e4, rel=1e-6)
    assert eig.residual <= 10 * 12 * EPS64
    assert repr(eig).startswith("SymmetricEig(") and "method='eigh'" in repr(eig)


def test_refresh_suffices_for_small_updates_and_says_when_it_does_not():
    A, _, _ = spd(24, 1e3, seed=13)
    rng = np.random.default_rng(0)
    E = rng.standard_normal(A.shape)
    E = (E + E.T) / np.linalg.norm(E + E.T, 2)
    eig = symmetric_eig(A)
    for eta in (1e-9, 1e-6, 1e-4, 3e-2, 0.3):
        A1 = A + eta * E + 2 * eta * (eta > 1e-2) * np.eye(24)  # keep the big update definite
        w, V = np.linalg.eigh(A1)
        kappa = w.max() / w.min()
        ref = analytic(V, w, -0.25)
        r = eig.refresh(A1)
        assert r.method == "refresh" and r.n_iter == 1
        err = relerr(r.inverse_root(4), ref)
        # the measured residual bounds the root error to first order: residual * kappa / p
        assert err <= 2 * r.residual * kappa / 4 + 10 * kappa * EPS64
        if eta <= 1e-6:  # small update: the one QR step is as good as the update is small
            assert r.residual <= 10 * eta
        if eta >= 3e-2:  # big update: the residual shows it, and tol makes it fall back to eigh
            assert r.residual > 1e-4
            again = eig.refresh(A1, tol=1e-12)
            assert again.method == "eigh"
            assert relerr(again.inverse_root(4), ref) <= 10 * kappa * EPS64


def test_refresh_checks_shape():
    eig = symmetric_eig(np.eye(3))
    with pytest.raises(ValueError, match="`A_new` must have shape"):
        eig.refresh(np.eye(4))


# --------------------------------------------------------------------------- stacks and their numba kernels


def _stack(b, n, seed, kappa=1e3):
    return np.stack([spd(n, kappa, seed + i)[0] for i in range(b)])


@pytest.mark.kernel
def test_eigh_stack_kernel_matches_numpy():
    A = _stack(5, 9, seed=20)
    w = np.empty((5, 9))
    Q = np.empty((5, 9, 9))
    Z = np.random.default_rng(0).standard_normal((9, 3))
    res = np.empty(5)
    _roots_kernels.eigh_stack(A, w, Q, Z, res)
    w_ref, _ = reference.eigh_stack(A)
    np.testing.assert_allclose(w, w_ref, rtol=0, atol=10 * 9 * EPS64)
    recon = np.matmul(Q * w[:, None, :], np.swapaxes(Q, 1, 2))
    np.testing.assert_allclose(recon, A, rtol=0, atol=10 * 9 * EPS64)
    assert np.all(res <= 10 * 9 * EPS64 * np.abs(w).max(axis=1))  # the probe residual of eigenpairs


@pytest.mark.kernel
def test_probe_residual_kernel_matches_numpy():
    rng = np.random.default_rng(1)
    A, Q, Z = rng.standard_normal((7, 7)), rng.standard_normal((7, 7)), rng.standard_normal((7, 4))
    w = rng.standard_normal(7)
    np.testing.assert_allclose(
        _roots_kernels.probe_residual(A, Q, w, Z), reference.probe_residual(A, Q, w, Z), rtol=1e-13
    )


@pytest.mark.kernel
@pytest.mark.parametrize("steps", [1, 3])
def test_refresh_stack_kernel_matches_numpy(steps):
    A = _stack(5, 8, seed=30)
    _, Q0 = reference.eigh_stack(A + 1e-3 * _stack(5, 8, seed=40))
    Q0 = np.ascontiguousarray(Q0)
    Qout = np.empty_like(Q0)
    lam = np.empty((5, 8))
    res = np.empty(5)
    _roots_kernels.refresh_stack(A, Q0, Qout, lam, res, steps)
    Q_ref, lam_ref, res_ref = reference.refresh_stack(A, Q0, steps)
    tol = 100 * 8 * EPS64 * 10**steps  # QR of a nearly diagonal-dominant W: rounding grows with steps
    np.testing.assert_allclose(Qout, Q_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(lam, lam_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(res, res_ref, rtol=0, atol=tol)


@pytest.mark.kernel
def test_scaled_gram_stack_kernel_matches_numpy():
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((5, 7, 7))
    d = rng.uniform(0.1, 2.0, (5, 7))
    out = np.empty_like(Q)
    _roots_kernels.scaled_gram_stack(Q, d, out)
    ref = reference.scaled_gram_stack(Q, d)
    np.testing.assert_allclose(out, ref, rtol=0, atol=10 * 7 * EPS64 * np.abs(ref).max())


@pytest.mark.kernel
@pytest.mark.parametrize("n", [1, 63, 130, 200])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_symmetrize_stack_kernel_matches_numpy(n, dtype, order):
    A = np.random.default_rng(n).standard_normal((3, n, n)).astype(dtype)
    A = np.asarray(A, order=order) if order == "C" else np.asfortranarray(A)
    A_copy = A.copy()
    pairs = _roots_kernels.tile_pairs(n)
    out = np.empty((3, n, n))
    asym_sq, sq = np.empty((3, pairs)), np.empty((3, pairs))
    _roots_kernels.symmetrize_stack(A, out, asym_sq, sq)
    sym, asym_total, total = reference.symmetrize_stack(A)
    np.testing.assert_array_equal(out, sym)  # the same two roundings per entry
    np.testing.assert_allclose(asym_sq.sum(1), asym_total, rtol=n * n * EPS64)
    np.testing.assert_allclose(sq.sum(1), total, rtol=n * n * EPS64)
    np.testing.assert_array_equal(A, A_copy)


@pytest.mark.kernel
@pytest.mark.parametrize("n", [1, 64, 65, 200])
def test_mirror_lower_kernel_matches_numpy(n):
    X = np.random.default_rng(n).standard_normal((n, n))
    ref = reference.mirror_lower(X)
    _roots_kernels.mirror_lower(X)
    np.testing.assert_array_equal(X, ref)


def test_stack_roots_match_per_block_analytic_and_refresh():
    b, n = 6, 10
    blocks = [spd(n, 1e3, seed=50 + i) for i in range(b)]
    A = np.stack([blk[0] for blk in blocks]).reshape(2, 3, n, n)
    X = inverse_pth_root(A, 4)
    assert X.shape == (2, 3, n, n)
    refs = [analytic(Q, lam, -0.25) for _, Q, lam in blocks]
    for i, ref in enumerate(refs):
        assert relerr(X.reshape(b, n, n)[i], ref) <= 10 * 1e3 * EPS64
    eig = symmetric_eig(A)
    assert eig.eigenvalues.shape == (2, 3, n) and np.shape(eig.residual) == (2, 3)
    r = eig.refresh(A)  # refreshing with the same factors keeps them exactly
    assert np.max(r.residual) <= 100 * n * EPS64
    for i, ref in enumerate(refs):
        assert relerr(r.inverse_root(4).reshape(b, n, n)[i], ref) <= 10 * 1e3 * EPS64 + 1e3 * np.max(r.residual)


# --------------------------------------------------------------------------- Shampoo


def _vecF(X):
    return X.ravel(order="F")


def test_shampoo_matrix_matches_kron_of_fractional_powers():
    rng = np.random.default_rng(1)
    G = rng.standard_normal((5, 7))
    L, _, _ = spd(5, 1e2, seed=60)
    R, _, _ = spd(7, 1e2, seed=61)
    P = shampoo_precondition(G, [L, R], ridge=0.0)
    Lr = np.real(scipy.linalg.fractional_matrix_power(L, -0.25))
    Rr = np.real(scipy.linalg.fractional_matrix_power(R, -0.25))
    ref = np.kron(Rr.T, Lr) @ _vecF(G)  # vec(L^e G R^e) = (R^e^T ⊗ L^e) vec(G)
    assert np.linalg.norm(_vecF(P) - ref) <= 10 * 100 * 7 * EPS64 * np.linalg.norm(ref)
    # cached decompositions give the same answer
    P2 = shampoo_precondition(G, [symmetric_eig(L), symmetric_eig(R)], ridge=0.0)
    np.testing.assert_allclose(P2, P, rtol=0, atol=10 * 100 * EPS64 * np.abs(P).max())


def test_shampoo_tensor_uses_minus_one_over_2k_and_matches_kron():
    rng = np.random.default_rng(2)
    shape = (3, 4, 5)
    G = rng.standard_normal(shape).astype(np.float32)
    Fs = [spd(n, 50.0, seed=70 + i) for i, n in enumerate(shape)]
    P = shampoo_precondition(G, [F[0] for F in Fs], ridge=1e-3)
    assert P.dtype == np.float32 and P.shape == shape
    roots = [analytic(Q, lam + 1e-3 * lam.max(), -1 / 6) for _, Q, lam in Fs]
    K = np.kron(np.kron(roots[0], roots[1]), roots[2])  # C-order vec of the tensor
    ref = K @ G.astype(np.float64).ravel()
    assert np.linalg.norm(P.astype(np.float64).ravel() - ref) <= (10 * 50 * EPS64 + 2 * EPS32) * np.linalg.norm(ref)


def test_shampoo_bad_factors():
    G = np.ones((3, 4))
    with pytest.raises(ValueError, match="`factors` must hold 2"):
        shampoo_precondition(G, [np.eye(3)])
    with pytest.raises(ValueError, match=r"`factors\[1\]` must have shape \(4, 4\)"):
        shampoo_precondition(G, [np.eye(3), np.eye(3)])
    with pytest.raises(ValueError, match=r"`factors\[0\]` must be positive semidefinite"):
        shampoo_precondition(G, [-np.eye(3), np.eye(4)])
    with pytest.raises(TypeError, match="`factors`"):
        shampoo_precondition(G, np.eye(3))


def test_shampoo_does_not_modify_inputs():
    rng = np.random.default_rng(3)
    G = rng.standard_normal((4, 6))
    L, R = G @ G.T, G.T @ G
    copies = [G.copy(), L.copy(), R.copy()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shampoo_precondition(G, [L, R])
    for a, b in zip([G, L, R], copies, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- issue 14: dtype thresholds and extremes


def _gram_float32(n=64, k=8, seed=0):
    """G G^T for a (n, k) G, rounded once to float32: semidefinite only up to float32 rounding."""
    G = np.random.default_rng(seed).standard_normal((n, k))
    L = (G @ G.T).astype(np.float32)
    return L, np.linalg.eigh(L.astype(np.float64))


def _eigh_reference(L, s, ridge):
    w, Q = np.linalg.eigh(L.astype(np.float64))
    return (Q * (np.maximum(w, 0.0) + ridge * w[-1]) ** s) @ Q.T, w


def test_float32_rank_deficient_gram_is_accepted_by_roots_and_shampoo():
    L, (w, _) = _gram_float32()
    n = L.shape[0]
    # the premise: negative beyond float64's threshold, inside float32's rounding of ||L||
    assert w[0] < -10 * n * EPS64 * w[-1] and -w[0] < 10 * n * EPS32 * w[-1]
    ridge = 1e-6
    X = inverse_pth_root(L, 4, ridge=ridge)
    ref, _ = _eigh_reference(L, -0.25, ridge)
    kappa = 1.0 / ridge
    assert X.dtype == np.float32
    assert relerr(X, ref) <= 10 * (EPS32 + n * kappa * EPS64)
    G = np.random.default_rng(1).standard_normal((n, 3)).astype(np.float32)
    R = np.eye(3, dtype=np.float32)
    P = shampoo_precondition(G, [L, R])  # the default ridge
    refL, _ = _eigh_reference(L, -0.25, 1e-6)
    refP = refL @ G.astype(np.float64) @ ((1 + 1e-6) ** -0.25 * np.eye(3))
    assert P.dtype == np.float32 and relerr(P, refP) <= 10 * (EPS32 + n * kappa * EPS64)
    # float64 input keeps float64's threshold: the same matrix, exactly, is indefinite in float64
    with pytest.raises(ValueError, match="positive semidefinite"):
        inverse_pth_root(L.astype(np.float64) - 1e3 * n * EPS64 * w[-1] * np.eye(n), 4, ridge=0.0)


def test_unrepresentable_roots_raise_naming_the_overflow():
    with pytest.raises(ValueError, match="overflows float32"):
        inverse_pth_root(np.diag([1.0, 1e-4]).astype(np.float32), 1 / 20)  # 1e80
    with pytest.raises(ValueError, match="overflows float64"):
        inverse_pth_root(np.diag([1.0, 1e-10]), 1 / 40)  # 1e400
    with pytest.raises(ValueError, match="overflows float64"):
        inverse_pth_root(np.diag([1.0, 1e-10]), Fraction(1, 40), method="newton")
    with pytest.raises(ValueError, match="overflows float32"):
        symmetric_eig(np.diag([1e30, 1.0]).astype(np.float32)).power(2.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_representable_roots_near_the_overflow_threshold_are_finite_and_right(dtype):
    # 1e-4 ^ -8 = 1e32 fits float32; 1e-10 ^ -30 = 1e300 fits float64
    lam_small, p = (1e-4, 1 / 8) if dtype == np.float32 else (1e-10, 1 / 30)
    A, Q, lam = spd(4, 1.0 / lam_small, seed=3)
    X = inverse_pth_root(A.astype(dtype), p)
    ref = scipy.linalg.fractional_matrix_power(A.astype(dtype).astype(np.float64), -1 / p)
    assert X.dtype == dtype and np.isfinite(X).all()
    # the root's relative condition number is 1/p = 30 (or 8): kappa * eps / p of its input rounding
    kappa = 1.0 / lam_small
    eps = np.finfo(dtype).eps
    scale = np.max(np.abs(ref))  # ||ref||_F itself would overflow
    assert relerr(X / scale, ref / scale) <= 10 * (eps + 4 * kappa * EPS64 / p)


def test_root_whose_top_eigenvalue_overflows_but_whose_entries_fit():
    # A = R diag(2^-512, 2^-511) R^T, R the 45-degree rotation (entries exact); A^-2 has eigenvalues
    # 2^1024 (not a float64) and 2^1022 but entries 1.25 * 2^1023 and -0.75 * 2^1023, which fit.
    A = np.ldexp(np.array([[1.5, -0.5], [-0.5, 1.5]]), -512)
    ref = np.ldexp(np.array([[1.25, 0.75], [0.75, 1.25]]), 1023)
    X = inverse_pth_root(A, 0.5)
    assert np.isfinite(X).all()
    assert np.max(np.abs(np.abs(X) - ref)) <= 10 * EPS64 * 4 * np.max(ref)
    P = symmetric_eig(A).power(-2.0)
    assert np.max(np.abs(np.abs(P) - ref)) <= 10 * EPS64 * 4 * np.max(ref)


def test_positive_powers_of_a_singular_psd_matrix_match_sqrtm():
    B = np.random.default_rng(4).standard_normal((6, 3))
    P = B @ B.T  # rank 3
    eig = symmetric_eig(P)
    S = eig.power(0.5)
    ref = np.real(scipy.linalg.sqrtm(P))
    # sqrt is not Lipschitz at 0: a rounding-size eigenvalue eps ||P|| becomes sqrt(eps ||P||)
    norm = np.linalg.norm(P, 2)
    assert np.linalg.norm(S - ref, 2) <= 10 * np.sqrt(6 * EPS64 * norm)
    np.testing.assert_allclose(S @ S, P, atol=10 * 6 * np.sqrt(EPS64) * norm)
    w, Q = np.linalg.eigh(P)
    ref15 = (Q * np.maximum(w, 0.0) ** 1.5) @ Q.T
    assert np.linalg.norm(eig.power(1.5) - ref15, 2) <= 10 * 6 * EPS64 * norm**1.5 * 10
    with pytest.raises(ValueError, match="singular"):
        eig.power(-0.5)
    X = shampoo_precondition(np.ones((6, 2)), [P, np.eye(2)], ridge=0.0, exponent=0.5)
    assert np.linalg.norm(X - ref @ np.ones((6, 2)), 2) <= 10 * np.sqrt(6 * EPS64 * norm) * np.sqrt(12)


@pytest.mark.parametrize("method", ["auto", "eigh", "newton"])
def test_every_option_is_validated_for_every_method(method):
    A = np.diag([2.0, 1.0])
    for kwargs, word in [
        ({"tol": np.nan}, "`tol`"),
        ({"tol": -1.0}, "`tol`"),
        ({"maxiter": 0}, "`maxiter`"),
        ({"sym_rtol": -1.0}, "`sym_rtol`"),
        ({"ridge": np.inf}, "`ridge`"),
        ({"ridge_mode": "percent"}, "`ridge_mode`"),
    ]:
        with pytest.raises(ValueError, match=word):
            inverse_pth_root(A, 2, method=method, **kwargs)
    with pytest.raises(TypeError, match="`maxiter`"):
        inverse_pth_root(A, 2, method=method, maxiter=2.5)


@pytest.mark.parametrize(
    "dtype, c", [(np.float64, 1e300), (np.float64, 1e-300), (np.float32, 1e37), (np.float32, 1e-36)]
)
def test_roots_are_scale_invariant_at_the_extremes(dtype, c):
    n, kappa = 6, 1e3
    A, Q, lam = spd(n, kappa, seed=5)
    Ac = (A * c).astype(dtype)  # (c A)^s = c^s A^s
    tol = 10 * n * kappa * float(np.finfo(dtype).eps)
    for method in ["eigh", "newton"]:
        X = inverse_pth_root(Ac, 2, method=method)
        assert X.dtype == dtype and np.isfinite(X).all()
        assert relerr(X.astype(np.float64) * np.sqrt(c), analytic(Q, lam, -0.5)) <= tol
    eig = symmetric_eig(Ac)
    assert relerr(eig.power(0.5).astype(np.float64) / np.sqrt(c), analytic(Q, lam, 0.5)) <= tol
    np.testing.assert_allclose(eig.refresh(Ac).eigenvalues / c, lam, rtol=tol)
    G = np.random.default_rng(2).standard_normal((n, n)).astype(dtype)
    P = shampoo_precondition(G, [Ac, Ac])  # the default relative ridge scales with c as well
    L = analytic(Q, lam + 1e-6 * lam[0], -0.25)
    assert relerr(P.astype(np.float64) * np.sqrt(c), L @ G.astype(np.float64) @ L) <= tol
