"""best_rank, randomized_svd, pinv, cr_matmul, interpolative_decomposition and cur against references."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.linalg.interpolative as sli
import scipy.sparse.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from linalg_lowrank.lowrank import (
    best_rank,
    cr_expected_error,
    cr_matmul,
    cur,
    interpolative_decomposition,
    pinv,
    pinv_lowrank,
    randomized_svd,
)
from linalg_lowrank.results import ConvergenceWarning

from .strategies import from_spectrum, matrices_with_spectrum


def _eps(dtype):
    return np.finfo(dtype).eps


def _decaying(m, n, seed=0, dtype=np.float64):
    s = 1.0 / np.arange(1, min(m, n) + 1)
    return from_spectrum(s, m, n, seed, dtype=dtype), s


# -- best_rank ---------------------------------------------------------------------------------
@given(matrices_with_spectrum(), st.data())
def test_best_rank_errors_are_eckart_young(case, data):
    A, s = case
    r = data.draw(st.integers(1, min(A.shape)))
    res = best_rank(A, r)
    assert res.U.dtype == A.dtype and res.U.shape == (A.shape[0], r) and res.Vt.shape == (r, A.shape[1])
    A64 = A.astype(np.float64)
    tol = 10 * max(A.shape) * _eps(A.dtype) * s[0]
    np.testing.assert_allclose(res.s, s[:r], atol=tol, rtol=0)
    err = np.linalg.norm(A64 - res.to_array().astype(np.float64))
    assert abs(err - np.sqrt(np.sum(s[r:] ** 2))) <= tol * np.sqrt(min(A.shape))
    assert abs(res.error_bound - np.sqrt(np.sum(s[r:] ** 2))) <= tol
    assert abs(res.error_bound_spectral - (s[r] if r < len(s) else 0.0)) <= tol


def test_best_rank_input_not_modified_and_bad_ranks():
    A, _ = _decaying(8, 5)
    B = A.copy()
    best_rank(A, 2)
    assert np.array_equal(A, B)
    for r, exc in [(0, ValueError), (6, ValueError), (2.5, TypeError), (True, TypeError)]:
        with pytest.raises(exc, match="`r`"):
            best_rank(A, r)


@pytest.mark.parametrize(
    "bad, exc, word",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError, "finite"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), ValueError, "finite"),
        (np.eye(3, dtype=np.int64), TypeError, "integer"),
        (np.eye(3, dtype=np.complex128), TypeError, "complex"),
        (np.ones(3), ValueError, "2-D"),
    ],
)
def test_bad_matrices_are_named(bad, exc, word):
    for call in (
        lambda: best_rank(bad, 1),
        lambda: randomized_svd(bad, 1, rng=0),
        lambda: pinv(bad),
        lambda: interpolative_decomposition(bad, 1, rng=0),
    ):
        with pytest.raises(exc, match=word):
            call()


# -- randomized_svd ----------------------------------------------------------------------------
@given(matrices_with_spectrum(max_n=30), st.data())
def test_randomized_svd_exact_for_low_rank_and_bounded(case, data):
    A, s = case
    k = min(A.shape)
    r = data.draw(st.integers(1, k))
    res = randomized_svd(A, r, rng=1)
    assert res.U.dtype == A.dtype and res.rank == r and res.s.shape == (r,)
    A64 = A.astype(np.float64)
    err = np.linalg.norm(A64 - res.to_array().astype(np.float64))
    opt = np.sqrt(np.sum(s[r:] ** 2))
    rounding = 30 * max(A.shape) * _eps(A.dtype) * np.linalg.norm(A64)
    assert err >= opt - rounding  # nothing beats Eckart–Young
    if r + 10 >= k:  # the sketch spans the whole range: the answer is exact
        assert err <= opt + rounding
    # the bound holds (failure probability 1e-3 per example, derandomized run)
    assert err <= res.error_bound + rounding
    # orthonormal factors
    assert np.linalg.norm(res.U.T.astype(np.float64) @ res.U - np.eye(r)) <= 10 * k * _eps(A.dtype)


def test_randomized_svd_target_matrix_accuracy_and_estimate():
    A, s = _decaying(600, 300, seed=3)
    r = 20
    res = randomized_svd(A, r, rng=0)
    opt = np.sqrt(np.sum(s[r:] ** 2))
    err = np.linalg.norm(A - res.to_array())
    assert err <= 1.01 * opt
    assert err <= res.error_bound <= 2 * err
    assert 0.8 * err <= res.error_estimate <= 1.25 * err
    ref = scipy.linalg.svd(A, compute_uv=False)[:r]
    np.testing.assert_allclose(res.s, ref, rtol=0.02)


def test_randomized_svd_error_is_exact_where_resolved_and_probed_elsewhere():
    from linalg_lowrank import config

    r, p, d = 10, 10, config.LOWRANK_N_PROBES
    # float64 with a remainder far above rounding: ||A||_F^2 - ||Q^T A||_F^2, no probe product
    A, s = _decaying(400, 250, seed=5)
    res = randomized_svd(A, r, n_power_iter=1, rng=0)
    err = np.linalg.norm(A - res.to_array())
    assert res.error_bound_failure == 0 and res.n_matvecs == 2 * (r + p) * 2
    assert np.sqrt(np.sum(s[r:] ** 2)) <= err <= res.error_bound
    # the estimate is the error up to the rounding allowance the bound adds
    assert abs(res.error_estimate**2 - err**2) <= res.error_bound**2 - res.error_estimate**2
    assert res.error_bound <= (1 + 1e-6) * err
    # rank 5 and r = 10: the remainder is rounding, which the difference cannot resolve: probes
    L = from_spectrum(np.r_[np.ones(5), np.zeros(245)], 400, 250, 1)
    res = randomized_svd(L, r, n_power_iter=1, rng=0)
    assert res.error_bound_failure == config.LOWRANK_ERROR_BOUND_FAILURE and res.n_matvecs == 2 * (r + p) * 2 + d
    assert np.linalg.norm(L - res.to_array()) <= res.error_bound <= 1e-12
    # float32: its rounding allowance is larger than the remainder here: probes
    res = randomized_svd(A.astype(np.float32), r, n_power_iter=1, rng=0)
    assert res.error_bound_failure == config.LOWRANK_ERROR_BOUND_FAILURE
    assert np.linalg.norm(A - res.to_array().astype(np.float64)) <= res.error_bound


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_of_squares_is_summed_in_float64_to_its_stated_bound(dtype):
    import math

    from linalg_lowrank._scaling import SUMSQ_CHUNK, sum_of_squares

    g = np.random.default_rng(9)
    A = (g.standard_normal((700, 800)) * 1e3 + 1e4).astype(dtype)  # large mean: float32 sums would drift
    cases = [
        A,
        np.asfortranarray(A),
        A[::3, 5:],
        A.ravel(),
        A.ravel()[:5],
        (g.standard_normal((2, 300000))).astype(dtype),
    ]
    for a in cases:
        exact = math.fsum((np.asarray(a, dtype=np.float64).ravel() ** 2).tolist())
        assert abs(sum_of_squares(a) - exact) <= SUMSQ_CHUNK * np.finfo(np.float64).eps * exact
    assert sum_of_squares(np.zeros((0, 3), dtype)) == 0.0


@pytest.mark.parametrize(
    "spectrum",
    [0.8 ** np.arange(250), 1.0 / np.arange(1, 251), 0.99 ** np.arange(250), np.arange(1, 251) ** -0.5],
    ids=["0.8^j", "1/j", "0.99^j", "1/sqrt(j)"],
)
@pytest.mark.parametrize("r", [5, 20])
def test_randomized_svd_auto_power_stops_where_another_step_gains_little(spectrum, r):
    from linalg_lowrank import config

    A = from_spectrum(spectrum, 500, 250, 3)
    auto = randomized_svd(A, r, rng=1)
    more = randomized_svd(A, r, n_power_iter=auto.n_iter + 1, rng=1)  # the same sketch, one step further
    err_auto, err_more = (np.linalg.norm(A - res.to_array()) for res in (auto, more))
    assert err_auto <= (1 + 2 * config.LOWRANK_AUTO_POWER_RTOL) * err_more
    assert auto.n_iter <= config.LOWRANK_AUTO_POWER_MAX


def test_randomized_svd_same_seed_same_answer_and_float32():
    A, _ = _decaying(80, 50, seed=1, dtype=np.float32)
    B = A.copy()
    r1, r2 = randomized_svd(A, 5, rng=7), randomized_svd(A, 5, rng=7)
    assert np.array_equal(r1.U, r2.U) and np.array_equal(r1.s, r2.s) and r1.seed == 7
    assert r1.U.dtype == np.float32 and r1.s.dtype == np.float32 and r1.Vt.dtype == np.float32
    assert np.array_equal(A, B)
    g = np.random.default_rng(3)
    assert randomized_svd(A, 5, rng=g).seed == randomized_svd(A, 5, rng=np.random.default_rng(3)).seed


def test_randomized_svd_linear_operator_matches_array():
    A, s = _decaying(70, 40, seed=2)
    op = scipy.sparse.linalg.aslinearoperator(A)
    ra = randomized_svd(A, 6, rng=4, n_power_iter=3)
    ro = randomized_svd(op, 6, rng=4, n_power_iter=3)
    np.testing.assert_allclose(ro.s, ra.s, rtol=1e-12)
    np.testing.assert_allclose(ro.to_array(), ra.to_array(), atol=1e-12)
    ro_auto = randomized_svd(op, 6, rng=4)  # operators: no ||A||_F, fixed 4 steps
    assert ro_auto.n_iter == 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_randomized_svd_tol_chooses_rank(dtype):
    A, s = _decaying(120, 60, seed=5, dtype=dtype)
    tol = 0.1
    res = randomized_svd(A, tol=tol, rng=0)
    err = np.linalg.norm(A.astype(np.float64) - res.to_array().astype(np.float64))
    k_opt = int(np.argmax(np.sqrt(np.cumsum((s**2)[::-1])[::-1]) <= tol))  # smallest rank with tail <= tol
    assert res.converged and err <= tol
    assert k_opt <= res.rank <= k_opt + 8  # the bound's slack costs a few ranks, not 8x


def test_randomized_svd_tol_not_reached_warns():
    A, _ = _decaying(60, 40, seed=6)
    with pytest.warns(ConvergenceWarning):
        res = randomized_svd(A, 3, tol=1e-6, rng=0)
    assert not res.converged and res.rank == 3


def test_randomized_svd_bad_options():
    A, _ = _decaying(10, 8)
    with pytest.raises(ValueError, match="`r`"):
        randomized_svd(A, 0)
    with pytest.raises(ValueError, match="`r`"):
        randomized_svd(A, 9)
    with pytest.raises(ValueError, match="`r` is required"):
        randomized_svd(A)
    with pytest.raises(ValueError, match="`tol`"):
        randomized_svd(A, 2, tol=-1.0)
    with pytest.raises(ValueError, match="`n_power_iter`"):
        randomized_svd(A, 2, n_power_iter=-1)
    with pytest.raises(TypeError, match="`rng`"):
        randomized_svd(A, 2, rng="seed")


def _rsvd_floor(A):
    """The rounding floor of randomized_svd's tol mode, derived independently of the code.

    A product A w (||w|| = 1) is exact to about sqrt(N) eps ||A||_F; with the margin of
    config.LOWRANK_ROUNDING_FACTOR this is the resolution tau of a direction, the probe estimate
    is resolved to sqrt(c) tau with c = d / chi2_d^{-1}(failure) its bound factor, and the smallest
    bound that can be certified is twice that.
    """
    from scipy.stats import chi2

    from linalg_lowrank import config

    d = config.LOWRANK_N_PROBES
    c = d / chi2.ppf(config.LOWRANK_ERROR_BOUND_FAILURE, d)
    tau = config.LOWRANK_ROUNDING_FACTOR * np.sqrt(max(A.shape)) * _eps(A.dtype) * np.linalg.norm(A.astype(np.float64))
    return 2.0 * np.sqrt(c) * tau


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("base", [10.0, 2.0])
@pytest.mark.parametrize("shape", [(80, 60), (40, 70)])
def test_randomized_svd_tol_down_to_the_rounding_floor(dtype, base, shape):
    m, n = shape
    k = min(m, n)
    A = from_spectrum(base ** -np.arange(k, dtype=np.float64), m, n, seed=3, dtype=dtype)
    A64 = A.astype(np.float64)
    fro = np.linalg.norm(A64)
    floor = _rsvd_floor(A)
    eps = _eps(dtype)
    for rel_tol in [1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 1e-14, 1e-16]:
        tol = rel_tol * fro
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            res = randomized_svd(A, tol=tol, rng=0)
        U, Vt = res.U.astype(np.float64), res.Vt.astype(np.float64)
        err = np.linalg.norm(A64 - (U * res.s.astype(np.float64)) @ Vt)
        assert res.rank <= k and U.shape == (m, res.rank)
        assert np.linalg.norm(U.T @ U - np.eye(res.rank), 2) <= max(m, n) * eps
        assert np.linalg.norm(Vt @ Vt.T - np.eye(res.rank), 2) <= max(m, n) * eps
        assert err <= max(tol, floor), (rel_tol, err / fro, floor / fro)
        assert err <= res.error_bound  # the bound stays a bound at the floor
        if tol >= floor:
            assert res.converged and not caught
        if not res.converged:
            assert any("floor" in str(w.message) for w in caught)


# -- pinv --------------------------------------------------------------------------------------
@given(matrices_with_spectrum(max_n=30, dtypes=(np.float64,), kind="generic"))
def test_pinv_matches_scipy(case):
    A, s = case
    ours, ref = pinv(A), scipy.linalg.pinv(A)
    cond = s[0] / s[-1]
    assert np.linalg.norm(ours - ref) <= 10 * max(A.shape) * _eps(A.dtype) * cond * np.linalg.norm(ref)


@given(matrices_with_spectrum(max_n=30, kind="decay"), st.floats(1e-6, 0.5), st.floats(0.0, 0.5))
def test_pinv_cutoff_semantics_match_scipy(case, rtol, atol_frac):
    A, s = case
    atol = atol_frac * s[0]
    thr = atol + rtol * s[0]
    # keep away from the threshold, where rounding may legitimately decide either way
    if np.any(np.abs(s - thr) <= 1e3 * max(A.shape) * _eps(A.dtype) * s[0]):
        return
    ours = pinv(A, rtol=rtol, atol=atol)
    ref = scipy.linalg.pinv(A, rtol=rtol, atol=atol)
    assert ours.dtype == A.dtype
    rank = int(np.sum(s > thr))
    kept = s[s > thr]
    cond = kept[0] / kept[-1] if kept.size else 1.0
    scale = 1.0 / kept[-1] if kept.size else 1.0
    assert np.linalg.norm(ours.astype(np.float64) - ref) <= 20 * max(A.shape) * _eps(A.dtype) * cond * scale * max(
        1, rank
    )


def test_pinv_default_cutoff_drops_rank_deficiency_like_scipy():
    A, _ = _decaying(12, 9, seed=1)
    A[:, 3] = A[:, 1] + A[:, 2]  # exactly rank deficient (up to rounding)
    ours, ref = pinv(A), scipy.linalg.pinv(A)
    assert np.linalg.norm(ours - ref) <= 1e-8 * np.linalg.norm(ref)  # both cut the ~1e-16 singular value
    with pytest.raises(ValueError, match="`rtol`"):
        pinv(A, rtol=-1.0)
    with pytest.raises(ValueError, match="`atol`"):
        pinv(A, atol=-1.0)


@given(matrices_with_spectrum(max_n=25, dtypes=(np.float64,), kind="generic"), st.integers(1, 5))
def test_pinv_lowrank_matches_dense(case, k):
    A, s = case
    L = A[:, : min(k, A.shape[1])]
    R = np.random.default_rng(k).standard_normal((L.shape[1], 7))
    X = L @ R
    P = pinv_lowrank(L, R)
    ref = scipy.linalg.pinv(X)
    sx = scipy.linalg.svd(X, compute_uv=False)
    kept = sx[sx > max(X.shape) * _eps(X.dtype) * sx[0]]
    cond = kept[0] / kept[-1]
    assert np.linalg.norm(P.to_array() - ref) <= 100 * max(X.shape) * _eps(X.dtype) * cond**2 * np.linalg.norm(ref)
    b = np.ones(X.shape[0])
    np.testing.assert_allclose(P @ b, P.to_array() @ b, atol=1e-10 * np.linalg.norm(ref) * np.sqrt(X.shape[0]))


# -- cr_matmul ---------------------------------------------------------------------------------
def _cr_case(seed=0):
    g = np.random.default_rng(seed)
    A = g.standard_normal((15, 40)) * np.linspace(0.1, 3.0, 40)
    B = g.standard_normal((40, 12))
    A[:, 5] = 0.0  # a zero column: probability zero under "optimal"
    return A, B


@pytest.mark.parametrize("sampling", ["optimal", "uniform"])
def test_cr_matmul_unbiased_and_error_formula(sampling):
    A, B = _cr_case()
    AB = A @ B
    c, n_seeds = 10, 200
    prods = np.array([cr_matmul(A, B, c, sampling=sampling, rng=s) for s in range(n_seeds)])
    # unbiased: the mean is within 4 standard errors of A @ B entrywise
    se = prods.std(axis=0, ddof=1) / np.sqrt(n_seeds)
    assert np.all(np.abs(prods.mean(axis=0) - AB) <= 4 * se + 1e-12)
    # measured mean squared error matches the formula within 10 %
    err2 = np.sum((prods - AB) ** 2, axis=(1, 2))
    formula = cr_expected_error(A, B, c, sampling=sampling) ** 2
    assert abs(err2.mean() - formula) <= 0.10 * formula
    assert abs(err2.mean() - formula) <= 4 * err2.std(ddof=1) / np.sqrt(n_seeds)


def test_cr_matmul_zero_columns_never_sampled_and_optimal_beats_uniform():
    A, B = _cr_case(1)
    res = cr_matmul(A, B, 50, rng=0, return_info=True)
    assert res.probabilities[5] == 0 and 5 not in res.indices
    assert cr_expected_error(A, B, 10) < cr_expected_error(A, B, 10, sampling="uniform")
    assert cr_expected_error(A, B, 10) <= res.error_bound * np.sqrt(50 / 10)
    Z = np.zeros((3, 4))
    out = cr_matmul(Z, np.ones((4, 2)), 3, rng=0)
    assert np.array_equal(out, np.zeros((3, 2))) and cr_expected_error(Z, np.ones((4, 2)), 3) == 0.0


def test_cr_matmul_seed_dtype_and_bad_input():
    A, B = _cr_case()
    A32, B32 = A.astype(np.float32), B.astype(np.float32)
    r1, r2 = cr_matmul(A32, B32, 7, rng=3), cr_matmul(A32, B32, 7, rng=3)
    assert np.array_equal(r1, r2) and r1.dtype == np.float32
    for c in (0, -2):
        with pytest.raises(ValueError, match="`c`"):
            cr_matmul(A, B, c)
    with pytest.raises(ValueError, match="inner dimensions"):
        cr_matmul(A, B.T, 3)
    with pytest.raises(ValueError, match="`sampling`"):
        cr_matmul(A, B, 3, sampling="norm")
    bad = A.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        cr_matmul(bad, B, 3)


# -- interpolative decomposition and CUR -------------------------------------------------------
@given(matrices_with_spectrum(max_n=40, kind="decay"), st.data())
def test_id_is_an_interpolation_and_near_optimal(case, data):
    A, s = case
    k = data.draw(st.integers(1, min(A.shape)))
    axis = data.draw(st.sampled_from(["columns", "rows"]))
    res = interpolative_decomposition(A, k, axis=axis, rng=0)
    assert res.indices.shape == (k,) and len(set(res.indices.tolist())) == k
    A64 = A.astype(np.float64)
    approx = res.reconstruct(A64) if axis == "columns" else res.interp.astype(np.float64) @ A64[res.indices]
    err = np.linalg.norm(A64 - approx)
    opt = np.sqrt(np.sum(s[k:] ** 2))
    rounding = 100 * max(A.shape) * _eps(A.dtype) * np.linalg.norm(A64)
    assert err >= opt - rounding
    # a column subset is within sqrt(1 + k (n - k)) of optimal (Gu–Eisenstat); ours in practice far less
    n_other = A.shape[1] if axis == "columns" else A.shape[0]
    assert err <= np.sqrt(1 + k * (n_other - k)) * opt + rounding * np.sqrt(k)
    sel = res.interp[:, res.indices] if axis == "columns" else res.interp[res.indices, :]
    np.testing.assert_array_equal(sel, np.eye(k, dtype=sel.dtype))
    assert res.interp.dtype == A.dtype


def test_id_close_to_scipy_and_truly_randomized():
    A, s = _decaying(300, 150, seed=8)
    k = 20
    idx, proj = sli.interp_decomp(A, k)
    ref_err = np.linalg.norm(A - sli.reconstruct_matrix_from_id(A[:, idx[:k]], idx, proj))
    errs = [np.linalg.norm(A - interpolative_decomposition(A, k, rng=i).reconstruct(A)) for i in range(3)]
    # column choice from a 2k-row sketch vs pivoted QR on all of A: within 2% here, 0.4% better at 4000x2000
    assert np.median(errs) <= 1.02 * ref_err
    picks = {tuple(sorted(interpolative_decomposition(A, k, rng=i).indices.tolist())) for i in range(6)}
    assert len(picks) > 1  # different seeds, different sketches


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", ["columns", "rows"])
def test_id_interpolation_matrix_is_least_squares_optimal(dtype, axis):
    A, _ = _decaying(120, 70, seed=3, dtype=dtype)
    k = 12
    res = interpolative_decomposition(A, k, axis=axis, rng=1)
    A64 = A.astype(np.float64)
    work = A64 if axis == "columns" else A64.T
    X = res.interp.astype(np.float64) if axis == "columns" else res.interp.astype(np.float64).T
    X_ls = np.linalg.lstsq(work[:, res.indices], work, rcond=None)[0]
    err = np.linalg.norm(work - work[:, res.indices] @ X)
    err_ls = np.linalg.norm(work - work[:, res.indices] @ X_ls)
    assert err <= err_ls * (1 + 1e3 * _eps(dtype))


def test_id_float64_keeps_float64_selection_below_float32_resolution():
    # sigma_41 / sigma_1 ~ 1e-9: a float32 sketch cannot rank these columns (it picks ~3x worse ones)
    s = 10.0 ** -np.linspace(0, 14, 60)
    A = from_spectrum(s, 150, 60, 0, dtype=np.float64)
    k = 40
    res = interpolative_decomposition(A, k, rng=0)
    assert np.linalg.norm(A - res.reconstruct(A)) <= 3 * np.sqrt(np.sum(s[k:] ** 2))


def test_id_float32_tolerance_mode():
    A, s = _decaying(100, 60, seed=9, dtype=np.float32)
    eps = 0.05
    res = interpolative_decomposition(A, eps, rng=0)
    fro = np.linalg.norm(s)
    err = np.linalg.norm(A.astype(np.float64) - res.reconstruct(A.astype(np.float64)).astype(np.float64))
    k_num = int(np.argmax(np.sqrt(np.cumsum((s**2)[::-1])[::-1]) <= eps * fro))
    assert err <= eps * fro
    assert k_num <= res.rank <= 2 * k_num  # close to the numerical rank (scipy: ~8x over)
    assert res.interp.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("base", [10.0, 2.0])
@pytest.mark.parametrize("shape", [(80, 60), (40, 70)])
def test_id_tolerance_rank_matches_scipy_down_to_rounding(dtype, base, shape):
    from linalg_lowrank import config

    m, n = shape
    A = from_spectrum(base ** -np.arange(min(m, n), dtype=np.float64), m, n, seed=3, dtype=dtype)
    A64 = A.astype(np.float64)
    fro = np.linalg.norm(A64)
    eps_d = _eps(dtype)
    floor = 2 * config.LOWRANK_ROUNDING_FACTOR * np.sqrt(max(m, n)) * eps_d  # relative, as randomized_svd's tau
    for eps in [1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 1e-14, 1e-15, 1e-16]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = interpolative_decomposition(A, eps, rng=0)
        # scipy's rank test (pivot size, spectral) differs from ours (Frobenius): a few columns either way;
        # below the dtype's resolution scipy's (on the float64 values) is an upper bound of what is needed
        k_scipy = sli.interp_decomp(A64, max(eps, floor), rng=0)[0]
        if eps >= floor:
            assert abs(res.rank - k_scipy) <= 3, (eps, res.rank, k_scipy)
        else:
            assert res.rank <= k_scipy + 3, (eps, res.rank, k_scipy)
        err = np.linalg.norm(A64 - res.reconstruct(A).astype(np.float64))
        # the selection is checked in exact projections; forming and solving for C X adds
        # gamma_k |C| |X| twice (backward-stable least squares, then the product)
        C, X = A64[:, res.indices], res.interp.astype(np.float64)
        rounding = 2 * res.rank * eps_d * np.linalg.norm(C) * np.linalg.norm(X) + np.sqrt(max(m, n)) * eps_d * fro
        assert err <= max(eps, floor) * fro + rounding, (eps, err / fro)


def test_id_bad_k():
    A, _ = _decaying(100, 60, seed=9, dtype=np.float32)
    for bad, exc in [(0, ValueError), (61, ValueError), (1.5, ValueError), (0.0, ValueError), ("3", TypeError)]:
        with pytest.raises(exc, match="`k_or_eps`"):
            interpolative_decomposition(A, bad)
    with pytest.raises(ValueError, match="`axis`"):
        interpolative_decomposition(A, 3, axis="diagonal")


@given(matrices_with_spectrum(max_n=30, kind="decay"), st.data())
@settings(max_examples=20)
def test_cur_reconstructs_low_rank_and_is_near_optimal(case, data):
    A, s = case
    k = data.draw(st.integers(1, min(A.shape)))
    res = cur(A, k, rng=0)
    A64 = A.astype(np.float64)
    err = np.linalg.norm(A64 - res.reconstruct(A64))
    opt = np.sqrt(np.sum(s[k:] ** 2))
    rounding = 100 * max(A.shape) * _eps(A.dtype) * np.linalg.norm(A64) / max(s[k - 1] / s[0], 1e-3)
    assert err >= opt - rounding
    assert err <= (1 + np.sqrt(k * max(A.shape))) * 3 * opt + rounding


def test_cur_exact_for_rank_k():
    g = np.random.default_rng(0)
    A = g.standard_normal((40, 4)) @ g.standard_normal((4, 30))
    res = cur(A, 4, rng=1)
    assert np.linalg.norm(A - res.reconstruct(A)) <= 1e3 * _eps(A.dtype) * np.linalg.norm(A)
    with pytest.raises(ValueError, match="`k`"):
        cur(A, 31)


def test_no_warnings_on_ordinary_use():
    A, _ = _decaying(50, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        randomized_svd(A, 5, rng=0)
        interpolative_decomposition(A, 5, rng=0)


# -- scale invariance at the ends of the range (issue 14) -----------------------------------------
_EXTREMES = [(np.float64, 1e300), (np.float64, 1e-300), (np.float32, 1e37), (np.float32, 1e-36)]


@pytest.mark.parametrize("dtype, c", _EXTREMES)
def test_low_rank_factorizations_are_scale_invariant_at_the_extremes(dtype, c):
    s_true = np.array([3.0, 2.0, 1.5, 1.0, 0.5])
    A = from_spectrum(s_true, 40, 30, seed=7)  # exactly rank 5: every method below is exact to rounding
    Ac = (A * c).astype(dtype)  # the same matrix, times c (rounded once to dtype)
    eps = _eps(dtype)
    bound = 10 * max(A.shape) * eps * s_true[0]
    res = randomized_svd(Ac, 5, rng=0)
    assert res.s.dtype == dtype and np.isfinite(res.s).all()
    np.testing.assert_allclose(res.s.astype(np.float64) / c, s_true, rtol=0, atol=bound)
    assert np.isfinite(res.error_bound) and res.error_bound / c <= bound * np.sqrt(5)
    res = randomized_svd(Ac, tol=1e-3 * c * s_true[0], rng=0)
    assert res.rank == 5
    np.testing.assert_allclose(res.s.astype(np.float64) / c, s_true, rtol=0, atol=bound)
    Ac64 = Ac.astype(np.float64) / c  # exact division would be the ideal; /c rounds once more in float64
    for result in (interpolative_decomposition(Ac, 5, rng=0), interpolative_decomposition(Ac, 1e-3, rng=0)):
        assert result.rank == 5
        rec = result.reconstruct(Ac).astype(np.float64) / c
        assert np.linalg.norm(rec - Ac64) <= bound * np.sqrt(30)
    res = cur(Ac, 5, rng=0)
    assert np.isfinite(res.U).all()
    rec = (
        (Ac[:, res.cols].astype(np.float64) / c)
        @ (res.U.astype(np.float64) * c)
        @ (Ac[res.rows].astype(np.float64) / c)
    )
    # the core of an exact rank-5 CUR is W^-1 (W = A[rows, cols]): rounding times its condition number
    W = Ac64[np.ix_(res.rows, res.cols)]
    assert np.linalg.norm(rec - Ac64) <= bound * np.sqrt(30) * np.linalg.cond(W)


@pytest.mark.parametrize(
    "dtype, c", [(np.float64, 1e300), (np.float64, 1e-300), (np.float32, 1e35), (np.float32, 1e-36)]
)
def test_cr_matmul_is_scale_invariant_at_the_extremes(dtype, c):
    A, B = _cr_case()
    Ac = (A * c).astype(dtype)
    B = B.astype(dtype)
    eps = float(_eps(dtype))
    # uniform probabilities are exact at every scale, so the same seed draws the same pairs
    ref = cr_matmul(A.astype(dtype), B, 30, sampling="uniform", rng=1, return_info=True)
    res = cr_matmul(Ac, B, 30, sampling="uniform", rng=1, return_info=True)
    assert np.array_equal(res.indices, ref.indices) and res.product.dtype == dtype
    scale = np.linalg.norm(A, axis=0) @ np.linalg.norm(B.astype(np.float64), axis=1) * 40 / 30
    assert np.max(np.abs(res.product.astype(np.float64) / c - ref.product)) <= 10 * 40 * eps * scale
    assert res.error_bound / c == pytest.approx(ref.error_bound, rel=100 * eps)
    res = cr_matmul(Ac, B, 30, rng=1, return_info=True)  # optimal probabilities
    np.testing.assert_allclose(
        res.probabilities, cr_matmul(A.astype(dtype), B, 30, rng=1, return_info=True).probabilities, rtol=100 * eps
    )
    assert np.isfinite(res.product).all()
    exp_c = cr_expected_error(Ac, B, 10)
    assert exp_c / c == pytest.approx(cr_expected_error(A.astype(dtype), B, 10), rel=1e3 * eps)


def test_unrepresentable_products_raise_naming_the_overflow():
    A, B = _cr_case()
    with pytest.raises(ValueError, match="overflows float64"):
        cr_matmul(A * 1e300, B * 1e300, 10, rng=0)
    with pytest.raises(ValueError, match="overflow float32"):
        randomized_svd(np.full((40, 30), 3e38, dtype=np.float32), 2, rng=0)  # sigma_1 = 3e38 * sqrt(1200)


def _qr_core(C, R, A):
    """argmin_U ||A - C U R||_F by C = Qc Rc, R^T = Qr Rr and two triangular solves (float64)."""
    Qc, Rc = np.linalg.qr(C)
    Qr, Rr = np.linalg.qr(R.T)
    Y = scipy.linalg.solve_triangular(Rc, Qc.T @ A @ Qr)
    return scipy.linalg.solve_triangular(Rr, Y.T).T


def _ill_conditioned_cur_cases():
    g = np.random.default_rng(0)
    dup = g.standard_normal((80, 60))
    dup[:, 1] = dup[:, 0] + 1e-13 * g.standard_normal(80)  # all columns: cond(C) ~ 1e13
    return [
        ("rank 8, sigma_8 = 1e-13", from_spectrum(np.array([1.0] * 7 + [1e-13]), 80, 60, seed=0), 8),
        ("10^-i, k = 14", from_spectrum(10.0 ** -np.arange(60.0), 80, 60, seed=0), 14),
        ("2^-i, k = 45", from_spectrum(2.0 ** -np.arange(60.0), 80, 60, seed=1), 45),
        ("near-duplicate columns", dup, 60),
    ]


@pytest.mark.parametrize("case", _ill_conditioned_cur_cases(), ids=lambda c: c[0])
def test_cur_core_is_accurate_when_c_and_r_are_ill_conditioned(case):
    _, A, k = case
    res = cur(A, k, rng=0)
    C, R = A[:, res.cols], A[res.rows, :]
    fro = np.linalg.norm(A)
    eps = _eps(A.dtype)
    err = np.linalg.norm(A - C @ res.U @ R)
    err_qr = np.linalg.norm(A - C @ _qr_core(C, R, A) @ R)
    s = scipy.linalg.svdvals(A)
    opt = np.sqrt(np.sum(s[k:] ** 2))  # no rank-k CUR does better
    assert np.linalg.cond(C) > 1e10  # the premise
    # never worse than the QR-based core on the same columns and rows (beyond rounding of A itself) ...
    assert err <= err_qr + 10 * k * eps * fro
    # ... and not limited by eps cond(C) cond(R): dropping directions below sqrt(eps) costs O(sqrt(eps))
    assert err <= opt + k * np.sqrt(eps) * fro, (err / fro, err_qr / fro)
