"""power_iteration, spectral_norm, spectral_norm_grad, best_rank1, spectral_weight_decay against SVD."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from hypothesis import given
from hypothesis import strategies as st

import linalg_lowrank as ll

from .strategies import from_spectrum, matrices_with_spectrum

EPS64 = np.finfo(np.float64).eps


def _svd(A):
    return scipy.linalg.svd(np.asarray(A, dtype=np.float64), full_matrices=False)


def _rounding_floor(A, s):
    # What float64 products of this matrix can resolve, relative to sigma1.
    m, n = A.shape[-2:]
    return 50 * (m + n) * EPS64 * np.linalg.norm(np.asarray(A, dtype=np.float64)) / max(s[0], 1e-300)


@given(matrices_with_spectrum())
def test_sigma_matches_svd_within_reported_bound(case):
    A, s = case
    res = ll.power_iteration(A, rng=0)
    assert res.converged
    assert res.residual <= 1e-10
    floor = _rounding_floor(A, s)
    assert abs(res.sigma - s[0]) <= (res.error_bound + floor) * s[0]
    assert res.lower_bound <= s[0] * (1 + floor)
    assert res.upper_bound >= s[0] * (1 - floor)
    assert res.u.dtype == A.dtype and res.v.dtype == A.dtype
    assert res.u.shape == (A.shape[0],) and res.v.shape == (A.shape[1],)


@given(matrices_with_spectrum(min_gap=1e-2))
def test_singular_vectors_match_svd_sign_invariant(case):
    A, s = case
    U, s_ref, Vt = _svd(A)
    res = ll.power_iteration(A, rng=1)
    uvT = np.outer(res.u.astype(np.float64), res.v.astype(np.float64))
    ref = np.outer(U[:, 0], Vt[0])
    gap = 1.0 if len(s_ref) == 1 else (s_ref[0] - s_ref[1]) / s_ref[0]
    # Davis–Kahan: the vectors are off by about residual / gap, plus the dtype's rounding of u, v
    tol = 10 * (res.residual + _rounding_floor(A, s_ref)) / gap + 10 * np.finfo(A.dtype).eps
    assert np.linalg.norm(uvT - ref) <= tol
    assert res.sin_theta_bound <= 1.0


@given(matrices_with_spectrum(max_n=12, dtypes=(np.float64,), min_gap=0.05))
def test_gradient_matches_central_differences_of_scipy_norm(case):
    A, s = case
    rng = np.random.default_rng(0)
    E = rng.standard_normal(A.shape)
    h = 1e-6 * max(s[0], 1e-3)
    fd = (scipy.linalg.norm(A + h * E, 2) - scipy.linalg.norm(A - h * E, 2)) / (2 * h)
    G = ll.spectral_norm_grad(A, rng=0)
    assert G.shape == A.shape and G.dtype == A.dtype
    gap = 1.0 if len(s) == 1 else (s[0] - s[1]) / s[0]
    # central-difference truncation error ~ h^2 * curvature, curvature ~ ||E||^2 / (sigma1 gap)
    trunc = h**2 * np.linalg.norm(E) ** 3 / (s[0] * gap) + 1e-8 * np.linalg.norm(E)
    assert abs(np.sum(G * E) - fd) <= trunc + 1e-6 * np.linalg.norm(E)


@given(matrices_with_spectrum())
def test_best_rank1_is_eckart_young_optimal(case):
    A, s = case
    A1 = ll.best_rank1(A, rng=0)
    assert A1.dtype == A.dtype and A1.shape == A.shape
    err2 = np.linalg.norm(A.astype(np.float64) - A1.astype(np.float64)) ** 2
    tail = np.sum(s[1:] ** 2)
    dtype_eps = np.finfo(A.dtype).eps
    slack = 1e-8 * s[0] ** 2 + 10 * dtype_eps * np.sqrt(A.size) * s[0] * (s[0] + np.sqrt(tail))
    assert abs(err2 - tail) <= slack
    assert np.linalg.matrix_rank(A1.astype(np.float64), tol=1e-6 * max(s[0], 1e-300)) <= 1


def test_gradient_of_half_squared_norm_is_best_rank1():
    A = from_spectrum(np.array([5.0, 3.0, 1.0]), 6, 4, seed=3)
    h, E = 1e-6, np.random.default_rng(2).standard_normal(A.shape)
    fd = (0.5 * scipy.linalg.norm(A + h * E, 2) ** 2 - 0.5 * scipy.linalg.norm(A - h * E, 2) ** 2) / (2 * h)
    assert abs(np.sum(ll.best_rank1(A, rng=0) * E) - fd) < 1e-6
    res = ll.power_iteration(A, rng=0)
    np.testing.assert_allclose(ll.best_rank1(A, rng=0), A @ np.outer(res.v, res.v), atol=1e-12)


@pytest.mark.parametrize("method", ["power", "lanczos", "auto"])
def test_every_method_converges(method):
    A = from_spectrum(0.7 ** np.arange(20), 30, 20, seed=5)
    res = ll.power_iteration(A, method=method, rng=0)
    assert res.converged and abs(res.sigma - 1.0) < 1e-10
    assert res.method == ("power" if method == "power" else res.method)
    assert len(res.history) >= 1 and res.n_matvecs == 2 * res.n_iter


def test_hard_gap_099_meets_product_budget():
    # The requirement: sigma2/sigma1 = 0.99 reaches 1e-10 in sigma and 1e-6 in u v^T
    # within 200 products with A and 200 with A^T.
    n = 400
    s = 0.99 ** np.arange(n)
    rng = np.random.default_rng(7)
    U = np.linalg.qr(rng.standard_normal((n, n)))[0]
    V = np.linalg.qr(rng.standard_normal((n, n)))[0]
    A = (U * s) @ V.T
    res = ll.power_iteration(A, rng=0)
    assert res.converged
    assert abs(res.sigma - 1.0) <= 1e-10
    assert np.linalg.norm(np.outer(res.u, res.v) - np.outer(U[:, 0], V[:, 0])) <= 1e-6
    assert res.n_matvecs <= 400
    assert res.method == "lanczos"
    assert 0.95 <= res.ratio_estimate <= 0.99 + 1e-6  # second Ritz value: a lower estimate of sigma2


def test_plain_power_iteration_on_hard_gap_hits_cap_and_warns():
    A = from_spectrum(0.99 ** np.arange(50), 50, 50, seed=1)
    with pytest.warns(ll.ConvergenceWarning, match="did not reach"):
        res = ll.power_iteration(A, method="power", maxiter=30, rng=0)
    assert not res.converged and res.stop_reason == "maxiter" and res.n_iter == 30
    assert 0.9 < res.ratio_estimate < 1.0  # estimated from the residual history
    assert res.lower_bound <= 1.0 + 1e-12


def test_lanczos_respects_maxiter():
    A = from_spectrum(0.999 ** np.arange(300), 300, 300, seed=2)
    with pytest.warns(ll.ConvergenceWarning):
        res = ll.power_iteration(A, maxiter=40, rng=0)
    assert res.n_iter <= 40 and not res.converged and res.sigma <= 1.0 + 1e-12


def test_degenerate_top_singular_value_terminates_and_grad_warns():
    A = from_spectrum(np.array([2.0, 2.0, 1.0, 0.5]), 8, 6, seed=4)
    res = ll.power_iteration(A, rng=0)
    assert res.converged and abs(res.sigma - 2.0) < 1e-10
    with pytest.warns(ll.DegenerateSingularValueWarning):
        ll.spectral_norm_grad(A, rng=0)


def test_separated_top_singular_value_does_not_warn():
    A = from_spectrum(np.array([2.0, 1.9, 1.0]), 8, 6, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ll.spectral_norm_grad(A, rng=0)


def test_zero_matrix_convention():
    Z = np.zeros((3, 5), dtype=np.float32)
    res = ll.power_iteration(Z, rng=0)
    assert res.sigma == 0.0 and res.converged and res.stop_reason == "zero"
    assert np.linalg.norm(res.u) == 1.0 and np.linalg.norm(res.v) == 1.0
    G = ll.spectral_norm_grad(Z, rng=0)
    assert G.dtype == np.float32 and not G.any()
    assert not ll.best_rank1(Z, rng=0).any()
    assert ll.spectral_norm(Z) == 0.0


@pytest.mark.parametrize("order", ["C", "F"])
def test_warm_start_in_null_space_does_not_report_zero(order):
    A = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], order=order)
    res = ll.power_iteration(A, v0=np.array([0.0, 1.0, 0.0]))
    assert abs(res.sigma - 1.0) < 1e-12 and res.converged
    np.testing.assert_allclose(np.abs(res.u), [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(res.v), [1.0, 0.0, 0.0], atol=1e-12)
    S = np.stack([A, 2 * A, np.eye(2, 3)])
    V0 = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(ll.power_iteration(S, v0=V0).sigma, [1.0, 2.0, 1.0], atol=1e-12)


def test_warm_start_from_exact_vector_converges_immediately():
    A = from_spectrum(np.array([3.0, 2.0, 1.0]), 20, 10, seed=0)
    v1 = _svd(A)[2][0]
    res = ll.power_iteration(A, v0=v1)
    assert res.converged and res.n_iter == 1 and res.seed is None and np.isinf(res.upper_bound)


@pytest.mark.parametrize("layout", ["C", "F", "view", "memmap", "transpose"])
def test_layouts_give_same_answer(layout, tmp_path):
    base = from_spectrum(np.array([4.0, 2.0, 1.0, 0.5]), 40, 30, seed=9)
    s1 = _svd(base)[1][0]
    if layout == "C":
        A = np.ascontiguousarray(base)
    elif layout == "F":
        A = np.asfortranarray(base)
    elif layout == "view":
        big = np.zeros((80, 60))
        big[::2, ::2] = base
        A = big[::2, ::2]
    elif layout == "memmap":
        A = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float64, shape=base.shape)
        A[:] = base
        A.flush()
        A = np.load(tmp_path / "a.npy", mmap_mode="r")
    else:
        A = np.ascontiguousarray(base.T).T
    before = np.array(A, copy=True)
    res = ll.power_iteration(A, rng=0)
    assert abs(res.sigma - s1) <= 1e-10 * s1
    np.testing.assert_allclose(np.abs(res.u), np.abs(_svd(base)[0][:, 0]), atol=1e-8)
    assert np.array_equal(np.asarray(A), before)  # input unchanged


def test_stack_equals_loop_and_keeps_batch_shape():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((2, 3, 20, 15)).astype(np.float32)
    res = ll.power_iteration(S, rng=0)
    assert res.sigma.shape == (2, 3) and res.u.shape == (2, 3, 20) and res.v.shape == (2, 3, 15)
    assert res.u.dtype == np.float32 and res.converged.all()
    for i in range(2):
        for j in range(3):
            single = ll.power_iteration(S[i, j], rng=0)
            assert abs(res.sigma[i, j] - single.sigma) <= 1e-10 * single.sigma
            assert abs(res.sigma[i, j] - _svd(S[i, j])[1][0]) <= 1e-9 * single.sigma
    G = ll.spectral_norm_grad(S, rng=0, check_gap=False)
    assert G.shape == S.shape and G.dtype == np.float32
    np.testing.assert_allclose(G[1, 2], ll.spectral_norm_grad(S[1, 2], rng=0, check_gap=False), atol=1e-5)


def test_same_seed_same_answer_bit_identical():
    A = from_spectrum(0.97 ** np.arange(60), 80, 60, seed=1)
    r1 = ll.power_iteration(A, rng=123)
    r2 = ll.power_iteration(A, rng=123)
    assert r1.sigma == r2.sigma and np.array_equal(r1.u, r2.u) and np.array_equal(r1.v, r2.v)
    r3 = ll.power_iteration(A, rng=r1.seed)
    assert r3.sigma == r1.sigma
    g = np.random.default_rng(5)
    r4 = ll.power_iteration(A, rng=g)
    assert ll.power_iteration(A, rng=r4.seed).sigma == r4.sigma


def test_linear_operator_and_sparse_inputs():
    A = from_spectrum(np.array([5.0, 1.0, 0.5]), 50, 30, seed=3)
    op = scipy.sparse.linalg.aslinearoperator(A)
    res = ll.power_iteration(op, rng=0)
    assert abs(res.sigma - 5.0) < 1e-10 and res.n_passes == 2 * res.n_iter
    wide = scipy.sparse.linalg.aslinearoperator(A.T)
    assert abs(ll.spectral_norm(wide, rng=0) - 5.0) < 1e-10
    sp = scipy.sparse.random(60, 40, density=0.1, random_state=0, format="csr")
    assert abs(ll.spectral_norm(sp, rng=0) - scipy.linalg.norm(sp.toarray(), 2)) < 1e-10


def test_operator_returning_nan_is_named():
    class Bad:
        shape = (4, 3)
        dtype = np.dtype(np.float64)

        def matvec(self, x):
            return np.full(4, np.nan)

        def rmatvec(self, y):
            return np.zeros(3)

    with pytest.raises(ValueError, match="`A`: matvec returned NaN or Inf"):
        ll.power_iteration(Bad(), rng=0)


def test_tall_and_wide_float32_reach_float64_accuracy():
    for shape in [(200, 30), (30, 200)]:
        A = from_spectrum(0.9 ** np.arange(30), *shape, seed=2, dtype=np.float32)
        s1 = _svd(A)[1][0]
        res = ll.power_iteration(A, rng=0)
        assert res.residual <= 1e-10 and abs(res.sigma - s1) <= 1e-10 * s1


# --- spectral weight decay --------------------------------------------------------------------


@given(matrices_with_spectrum(max_n=30, min_gap=0.05), st.floats(0.0, 1.0))
def test_spectral_weight_decay_shrinks_only_sigma1(case, decay):
    W, s = case
    before = W.copy()
    W_new, v = ll.spectral_weight_decay(W, decay, rng=0)
    assert np.array_equal(W, before)
    assert W_new.dtype == W.dtype and v.dtype == W.dtype
    expected = np.sort(np.concatenate([[(1 - decay) * s[0]], s[1:]]))[::-1]
    got = np.linalg.svd(W_new.astype(np.float64), compute_uv=False)
    tol = 1e-7 * s[0] + 20 * np.finfo(W.dtype).eps * s[0] * np.sqrt(W.size)
    np.testing.assert_allclose(got, expected, atol=tol)


def test_spectral_weight_decay_in_place_warm_start_and_stack():
    rng = np.random.default_rng(0)
    W = from_spectrum(np.array([3.0, 1.0, 0.5]), 20, 12, seed=1)
    U, s, Vt = _svd(W)
    expected = W - 0.1 * W @ np.outer(Vt[0], Vt[0])
    W_new, v = ll.spectral_weight_decay(W, 0.1, v=Vt[0] + 1e-3 * rng.standard_normal(12), n_iter=3)
    # each power step shrinks the start error 1e-3 by (sigma2 / sigma1)^2 = 1/9: three before the
    # update, and the returned v is one further (folded into the update's pass)
    err_used = 1e-3 * np.sqrt(12) * 3.0**-6
    assert min(np.linalg.norm(v - Vt[0]), np.linalg.norm(v + Vt[0])) < err_used / 9 * 2
    assert np.linalg.norm(W_new - expected) <= 0.1 * 2 * s[0] * err_used * 2
    W_new, v = ll.spectral_weight_decay(W, 0.1, v=Vt[0] + 1e-3 * rng.standard_normal(12), n_iter=20)
    np.testing.assert_allclose(W_new, expected, atol=1e-12)
    Wc = W.copy()
    out, _ = ll.spectral_weight_decay(Wc, 0.1, v=v, out=Wc)
    assert out is Wc
    np.testing.assert_allclose(Wc, expected, atol=1e-8)
    WF = np.asfortranarray(W)
    np.testing.assert_allclose(ll.spectral_weight_decay(WF, 0.1, v=Vt[0])[0], expected, atol=1e-10)
    S = np.stack([W, 2 * W])
    S_new, V = ll.spectral_weight_decay(S, 0.1, rng=0)
    assert V.shape == (2, 12)
    np.testing.assert_allclose(S_new[1], 2 * expected, atol=1e-8)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "A, exc, match",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError, "`A` must be finite"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), ValueError, "`A` must be finite"),
        (np.float64(3.0), ValueError, "`A` must be at least 2-D"),
        (np.ones(3), ValueError, "`A` must be at least 2-D"),
        (np.ones((0, 3)), ValueError, "`A` must not be empty"),
        (np.ones((3, 0)), ValueError, "`A` must not be empty"),
        (np.ones((2, 2), dtype=complex), TypeError, "complex"),
        (np.ones((2, 2), dtype=np.int64), TypeError, "integer"),
        (np.ones((2, 2), dtype=bool), TypeError, "boolean"),
        (np.array([[object()]]), TypeError, "`A` has dtype object"),
        (np.ones((2, 2), dtype=np.float16), TypeError, "float32"),
        ("abc", TypeError, "`A`"),
    ],
)
def test_bad_matrix_is_rejected_with_named_argument(A, exc, match):
    for fn in (ll.power_iteration, ll.spectral_norm, ll.spectral_norm_grad, ll.best_rank1):
        with pytest.raises(exc, match=match):
            fn(A)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"tol": 0.0}, ValueError, "`tol` must be a positive finite float, got 0.0"),
        ({"tol": -1.0}, ValueError, "`tol`"),
        ({"tol": np.nan}, ValueError, "`tol`"),
        ({"tol": "small"}, TypeError, "`tol`"),
        ({"maxiter": 0}, ValueError, "`maxiter` must be an integer >= 1, got 0"),
        ({"maxiter": 2.5}, TypeError, "`maxiter`"),
        ({"method": "arnoldi"}, ValueError, "`method` must be one of"),
        ({"v0": np.ones(4)}, ValueError, r"`v0` must have shape \(3,\)"),
        ({"v0": np.zeros(3)}, ValueError, "`v0` must be nonzero"),
        ({"v0": np.array([1.0, np.nan, 0.0])}, ValueError, "`v0` must be finite"),
        ({"rng": "seed"}, TypeError, "`rng`"),
        ({"rng": -1}, ValueError, "`rng`"),
    ],
)
def test_bad_options_are_rejected(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ll.power_iteration(np.eye(3), **kwargs)


def test_bad_weight_decay_arguments():
    W = np.eye(3)
    with pytest.raises(ValueError, match="`decay`"):
        ll.spectral_weight_decay(W, -0.1)
    with pytest.raises(ValueError, match="`W` must be finite"):
        ll.spectral_weight_decay(np.array([[1.0, np.nan], [0.0, 1.0]]), 0.1, v=np.ones(2))
    with pytest.raises(ValueError, match="`out`"):
        ll.spectral_weight_decay(W, 0.1, out=np.empty((3, 3), dtype=np.float32))
    for n_iter in (0, 2):  # the argument is named in both paths
        with pytest.raises(ValueError, match="`v` must have shape"):
            ll.spectral_weight_decay(W, 0.1, v=np.ones(2), n_iter=n_iter)
        with pytest.raises(ValueError, match="`v` must be nonzero"):
            ll.spectral_weight_decay(W, 0.1, v=np.zeros(3), n_iter=n_iter)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ll.spectral_norm_grad(W, tolerance=1e-3)


# --- the probabilistic upper bound ---------------------------------------------------------------


def test_upper_bound_probability_is_exact_where_the_bound_is_tight():
    # P = 0, d = 0 and B = diag(1, 0, ..., 0): theta = c1^2 / (c1^2 + S) and failure is exactly
    # c1^2 / S < tau(eps), so the empirical failure rate must equal the requested probability.
    from linalg_lowrank import _topsv

    q, delta, trials = 10, 0.1, 20000
    eps = _topsv.upper_bound_eps(q, np.array([0]), np.array([0]), delta)[0]
    c = np.random.default_rng(0).standard_normal((trials, q))
    theta = c[:, 0] ** 2 / np.sum(c**2, axis=1)
    rate = np.mean(theta < 1 - eps)
    assert abs(rate - delta) <= 4 * np.sqrt(delta * (1 - delta) / trials)


@pytest.mark.parametrize("P, d", [(3, 0), (0, 5), (2, 4)])
def test_upper_bound_holds_on_adversarial_spectra(P, d):
    # Eigenvalues where the polynomial's filter is weakest; failures must stay below delta.
    from linalg_lowrank import _topsv

    q, delta, trials = 12, 0.05, 4000
    eps = _topsv.upper_bound_eps(q, np.array([P]), np.array([d]), delta)[0]
    a = 1 - eps
    lam = np.concatenate([[1.0], np.full(q - 1, a * 2 * P / (2 * P + 1) if P else 0.0)])
    lam[1:] = np.maximum(lam[1:], np.linspace(0, a, q - 1) if d else lam[1:])
    rng = np.random.default_rng(1)
    fails = 0
    for _ in range(trials):
        x = rng.standard_normal(q) * lam**P
        if d == 0:
            theta = np.sum(x**2 * lam) / np.sum(x**2)
        else:  # Rayleigh-Ritz on the Krylov space of dimension d from x
            K = np.stack([x * lam**i for i in range(d)], axis=1)
            Q = np.linalg.qr(K)[0]
            theta = np.linalg.eigvalsh(Q.T @ (lam[:, None] * Q))[-1]
        fails += theta < (1 - eps) * lam[0]
    assert fails / trials <= delta + 4 * np.sqrt(delta * (1 - delta) / trials)


def test_upper_bound_tightens_with_more_work():
    from linalg_lowrank import _topsv

    e = _topsv.upper_bound_eps(1000, np.array([0, 10, 0, 0, 0]), np.array([0, 0, 10, 60, 200]), 1e-6)
    assert e[0] > e[1] > 0 and e[0] > e[2] > e[3] > e[4] > 0
    # Kuczynski-Wozniakowski's Lanczos bound, 1.648 sqrt(n) exp(-(2k - 1) sqrt(eps)) = delta, for comparison
    kw = (np.log(1.648 * np.sqrt(1000) / 1e-6) / (2 * np.array([60, 200]) - 1)) ** 2
    assert np.all(e[3:] <= 2 * kw)


# --- scale: any finite float matrix whose norm is representable (issue 14, section 3) ------------


def _stored_and_preimage(A1, k, dtype):
    """A1 * 2^k stored in ``dtype``, and that stored matrix divided by 2^k exactly (the reference)."""
    with np.errstate(under="ignore"):
        A = np.ldexp(np.asarray(A1, dtype=dtype), k)
    return A, np.ldexp(A.astype(np.float64), -k)


_K64 = [-1020, -1000, -900, -600, -300, -260, -240, -200, -150, -100, -90, -80, -60, 0, 60, 80, 100, 150, 200, 240,
        260, 300, 600, 900, 1000, 1019]  # fmt: skip
_K32 = [-140, -126, -100, -60, 0, 60, 100, 120, 124]


@pytest.mark.parametrize("dtype, k", [(np.float64, k) for k in _K64] + [(np.float32, k) for k in _K32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_spectral_norm_at_every_scale(dtype, k, order):
    rng = np.random.default_rng(abs(k))
    A1 = rng.standard_normal((12, 8))
    A, ref = _stored_and_preimage(np.asarray(A1, order=order), k, dtype)
    A = np.asarray(A, order=order)
    s1 = scipy.linalg.svdvals(ref)[0]
    res = ll.power_iteration(A, rng=0)
    assert res.converged
    floor = _rounding_floor(ref, [s1])
    assert abs(np.ldexp(res.sigma, -k) - s1) <= (res.error_bound + floor) * s1
    np.testing.assert_allclose(abs(res.u.astype(np.float64) @ _svd(ref)[0][:, 0]), 1.0, atol=1e-4)
    # a stack mixing this scale with its reciprocal: every matrix is scaled on its own
    kb = int(np.clip(-k, min(_K64 if dtype == np.float64 else _K32), max(_K64 if dtype == np.float64 else _K32)))
    B, ref_b = _stored_and_preimage(A1[::-1].copy(), kb, dtype)
    S = np.stack([A, np.asarray(B, order=order)])
    sig = ll.spectral_norm(S, rng=0)
    np.testing.assert_allclose(np.ldexp(sig, [-k, -kb]), [s1, scipy.linalg.svdvals(ref_b)[0]], rtol=1e-9)


@pytest.mark.parametrize("k", [-1000, -300, -90, 90, 300, 1000])
def test_sparse_and_operator_inputs_at_extreme_scales(k):
    A1 = from_spectrum(np.array([5.0, 1.0, 0.5]), 30, 20, seed=3)
    A, ref = _stored_and_preimage(A1, k, np.float64)
    s1 = scipy.linalg.svdvals(ref)[0]
    for op in (scipy.sparse.csr_matrix(A), scipy.sparse.linalg.aslinearoperator(A),
               scipy.sparse.linalg.aslinearoperator(np.ascontiguousarray(A.T)).T):  # fmt: skip
        res = ll.power_iteration(op, rng=0)
        assert res.converged
        assert abs(np.ldexp(res.sigma, -k) - s1) <= 1e-9 * s1


def test_norm_beyond_the_float64_range_is_an_error_and_the_largest_representable_works():
    big = np.finfo(np.float64).max
    with pytest.raises(ValueError, match="`A`: its spectral norm.*exceeds the float64 range"):
        ll.spectral_norm(np.full((2, 2), big))
    assert ll.spectral_norm(np.diag([big, 1.0]), rng=0) == big
    assert ll.spectral_norm(np.array([[big / 2, 0.0], [0.0, big / 4]]), rng=0) == big / 2


@pytest.mark.parametrize("scale", [1e-300, 1e-160, 1e-90, 1.0, 1e90, 1e160, 1e300])
def test_gradient_and_best_rank1_at_extreme_scales(scale):
    A1 = from_spectrum(np.array([3.0, 1.0, 0.5]), 12, 8, seed=0)
    A = A1 * scale
    U, s, Vt = _svd(A1)
    G = ll.spectral_norm_grad(A, rng=0)
    np.testing.assert_allclose(G, np.outer(U[:, 0], Vt[0]), atol=1e-9)
    R = ll.best_rank1(A, rng=0)
    np.testing.assert_allclose(R / scale, s[0] * np.outer(U[:, 0], Vt[0]), atol=1e-9 * s[0])


@pytest.mark.parametrize("shape", [(1, 8), (8, 1), (1, 1), (1, 2), (2, 1)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_gradient_of_a_single_row_or_column(shape, order):
    for seed in range(25):  # the deflated check of a rank-1 matrix runs on rounding noise: many draws
        A = np.asarray(np.random.default_rng(seed).standard_normal(shape), order=order)
        U, s, Vt = _svd(A)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a rank-1 matrix has sigma2 = 0: no degenerate-gap warning
            G = ll.spectral_norm_grad(A, rng=0)
        np.testing.assert_allclose(G, np.outer(U[:, 0], Vt[0]), atol=1e-12)


def _gaussian_cases():
    rng = np.random.default_rng(11)
    return {
        "single": rng.standard_normal((40, 30)),
        "small_stack": rng.standard_normal((3, 40, 30)),
        "operator": scipy.sparse.linalg.aslinearoperator(rng.standard_normal((40, 30))),
        "wide_operator": scipy.sparse.linalg.aslinearoperator(rng.standard_normal((30, 40))),
    }


@pytest.mark.parametrize("maxiter", [1, 2])
@pytest.mark.parametrize("method", ["auto", "power", "lanczos"])
@pytest.mark.parametrize("case", ["single", "small_stack", "large_stack", "large_single", "operator", "wide_operator"])
def test_tiny_maxiter_returns_unconverged_result_with_warning(maxiter, method, case, monkeypatch):
    from linalg_lowrank import config

    cases = _gaussian_cases()
    if case == "large_stack":  # the numpy driver that serves stacks of large matrices
        monkeypatch.setattr(config, "SMALL_MATRIX_ENTRIES", 0)
        A = cases["small_stack"]
    elif case == "large_single":  # the numpy driver of single matrices too big for the numba solve
        monkeypatch.setattr(config, "NUMBA_SOLVE_MAX_ENTRIES", 0)
        A = cases["single"]
    else:
        A = cases[case]
    with pytest.warns(ll.ConvergenceWarning, match="did not reach"):
        res = ll.power_iteration(A, maxiter=maxiter, method=method, rng=0)
    dense = A.toarray() if hasattr(A, "toarray") else (A @ np.eye(A.shape[1]) if hasattr(A, "matvec") else A)
    s1 = np.linalg.svd(np.asarray(dense), compute_uv=False)[..., 0]
    assert np.all(~np.asarray(res.converged)) and np.all(np.asarray(res.n_iter) <= maxiter)
    assert np.all(np.asarray(res.sigma) <= s1 * (1 + 1e-12)) and np.all(np.asarray(res.sigma) > 0)
    assert np.all(np.isfinite(res.u)) and np.all(np.isfinite(res.v))


def test_unconverged_gradient_warns_convergence_not_degeneracy():
    A = np.random.default_rng(0).standard_normal((40, 30))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ll.spectral_norm_grad(A, maxiter=2, rng=0)
    kinds = {type(w.message) for w in caught}
    assert ll.ConvergenceWarning in kinds and ll.DegenerateSingularValueWarning not in kinds


@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e150, 1e300])
@pytest.mark.parametrize("order", ["C", "F"])
def test_warm_start_of_any_scale_is_only_a_direction(scale, order):
    A = np.asarray(from_spectrum(np.array([3.0, 1.0, 0.5]), 12, 8, seed=0), order=order)
    v1 = _svd(A)[2][0]
    res = ll.power_iteration(A, v0=v1 * scale)
    assert res.converged and abs(res.sigma - 3.0) <= 1e-12 and res.n_iter == 1
    res = ll.power_iteration(A, v0=np.full(8, scale))
    assert res.converged and abs(res.sigma - 3.0) <= 1e-10


class _MatvecOnly:
    shape = (4, 3)
    dtype = np.dtype(np.float64)

    def matvec(self, x):
        return np.ones((4, 3)) @ x


@pytest.mark.parametrize(
    "op",
    [_MatvecOnly(), scipy.sparse.linalg.LinearOperator((4, 3), matvec=lambda x: np.ones((4, 3)) @ x, dtype=float)],
)
def test_operator_without_rmatvec_is_a_named_type_error(op):
    for fn in (ll.power_iteration, ll.spectral_norm, ll.spectral_norm_grad):
        with pytest.raises(TypeError, match=r"`A`.*rmatvec.*A\^T"):
            fn(op)


# --- spectral weight decay at the ends of the range, and in place ---------------------------------


@pytest.mark.parametrize(
    "dtype, scale",
    [(np.float64, sc) for sc in (1e-300, 1e-160, 1e160, 1e300)] + [(np.float32, sc) for sc in (1e-35, 1e-20, 1e35)],
)
def test_spectral_weight_decay_at_extreme_scales(scale, dtype):
    info = np.finfo(dtype)
    W1 = from_spectrum(np.array([3.0, 1.0, 0.5]), 12, 8, seed=2)
    W = (W1 * scale).astype(dtype)
    ref = W.astype(np.float64) / scale
    U, s, Vt = _svd(ref)
    W_new, v = ll.spectral_weight_decay(W, 0.5, rng=0)
    got = scipy.linalg.svdvals(W_new.astype(np.float64) / scale)
    np.testing.assert_allclose(got, [1.5, 1.0, 0.5] + [0.0] * 5, atol=100 * info.eps * s[0])
    assert np.all(np.isfinite(v)) and abs(abs(v.astype(np.float64) @ Vt[0]) - 1) <= 1e3 * info.eps
    # the warm-start loop: v given, in place; v_next is one power step further
    Wc = W.copy()
    out, v2 = ll.spectral_weight_decay(Wc, 0.1, v=Vt[0], out=Wc)
    assert out is Wc
    expected = ref - 0.1 * ref @ np.outer(Vt[0], Vt[0])
    np.testing.assert_allclose(Wc.astype(np.float64) / scale, expected, atol=100 * info.eps * s[0])
    assert np.all(np.isfinite(v2)) and abs(abs(v2.astype(np.float64) @ Vt[0]) - 1) <= 1e3 * info.eps


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("where", [(0, 0), (-1, -1)])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("order", ["C", "F"])
def test_weight_decay_in_place_writes_nothing_when_w_is_not_finite(dtype, where, bad, order):
    W = np.asarray(np.random.default_rng(0).standard_normal((9, 5)), dtype=dtype, order=order)
    W[where] = bad
    before = W.copy()
    for v, n_iter in ((np.ones(5), 0), (np.ones(5), 2), (None, 0)):
        with pytest.raises(ValueError, match="`W` must be finite"):
            ll.spectral_weight_decay(W, 0.1, v=v, n_iter=n_iter, out=W)
        np.testing.assert_array_equal(W, before)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weight_decay_beyond_the_range_is_an_error_and_w_is_unchanged(dtype):
    big = np.finfo(dtype).max
    W = np.full((4, 4), big / 2, dtype=dtype)
    before = W.copy()
    with pytest.raises(ValueError, match=f"`W`: the update .* beyond the {np.dtype(dtype).name} range"):
        ll.spectral_weight_decay(W, 5.0, v=np.ones(4), out=W)  # true result -2 max: not representable
    np.testing.assert_array_equal(W, before)
    # near the top of the range but representable (W - 3 (Wv) v^T = -max exactly): computed
    W_new, v = ll.spectral_weight_decay(W, 3.0, v=np.ones(4), out=W)
    assert W_new is W and np.all(np.isfinite(v))
    np.testing.assert_allclose(W.astype(np.float64), -float(big), rtol=8 * np.finfo(dtype).eps)


def test_weight_decay_read_only_out_is_named():
    W = np.eye(3)
    out = np.empty((3, 3))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="`out` must be writeable"):
        ll.spectral_weight_decay(W, 0.1, v=np.ones(3), out=out)


def test_weight_decay_nan_without_warm_start_names_w():
    with pytest.raises(ValueError, match="`W` must be finite"):
        ll.spectral_weight_decay(np.array([[1.0, np.nan], [0.0, 1.0]]), 0.1)


@pytest.mark.parametrize("scale", [1e-300, 1e-160, 1e160, 1e300])
@pytest.mark.parametrize("order", ["C", "F"])
def test_weight_decay_refining_a_warm_start_at_extreme_scales(scale, order):
    W1 = from_spectrum(np.array([3.0, 1.0, 0.5]), 12, 8, seed=2)
    U, s, Vt = _svd(W1)
    W = np.asarray(W1 * scale, order=order)
    W_new, v = ll.spectral_weight_decay(W, 0.5, v=Vt[0] + 0.01, n_iter=30)  # (1/3)^60 of the start error
    np.testing.assert_allclose(scipy.linalg.svdvals(W_new / scale)[:3], [1.5, 1.0, 0.5], atol=1e-12)
    assert abs(abs(v @ Vt[0]) - 1) <= 1e-12
