"""top_singular_values, spectrum_statistics, power_law_alpha and difference_norm against scipy/numpy."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_lowrank as ll
from linalg_lowrank import config
from tests.strategies import from_spectrum, matrices_with_spectrum

EPS64 = np.finfo(np.float64).eps


def _true_values(A):
    return scipy.linalg.svdvals(np.asarray(A, dtype=np.float64))


def _check_values(A, k, res):
    s_all = _true_values(A)
    s = s_all[:k]
    m, n = A.shape
    rounding = 8 * (m + n) * EPS64 * s[0]  # the product A V and the reference svdvals, in float64
    assert res.values.shape == (k,)
    assert np.all(np.diff(res.values) <= 0)
    # Certified: the i-th lower bound never exceeds sigma_i (Cauchy interlacing).
    assert np.all(res.lower_bound <= s + 2 * min(m, n) * EPS64 * s[0])
    # Certified: each value is within its error bound of some singular value (Weyl).
    dist = np.abs(res.values[:, None] - s_all[None, :]).min(axis=1)
    assert np.all(dist <= res.error_bound * res.values + rounding)
    # Where the top k + 1 values are separated by more than the error bounds, that singular value is sigma_i.
    gaps = -np.diff(s_all[: k + 1]) if k < len(s_all) else -np.diff(np.r_[s_all, -np.inf])
    if np.all(gaps > 4 * (res.error_bound.max() * s[0] + rounding)):
        assert np.all(np.abs(res.values - s) <= res.error_bound * res.values + rounding)


@settings(max_examples=25, deadline=None)
@given(matrices_with_spectrum(max_n=30), st.data())
def test_values_match_svdvals_on_prescribed_spectra(As, data):
    A, _ = As
    k = data.draw(st.integers(1, min(A.shape)))
    res = ll.top_singular_values(A, k, rng=0)
    assert res.converged
    _check_values(A, k, res)
    assert res.u.dtype == A.dtype and res.v.dtype == A.dtype
    assert res.u.shape == (A.shape[0], k) and res.v.shape == (A.shape[1], k)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("m", "n", "k"), [(240, 160, 40), (150, 260, 8), (120, 100, 90)])
def test_many_values(dtype, m, n, k):
    # Basis smaller than min(m, n) for the first two (no restart needed there); the whole space for the last.
    s = np.geomspace(10.0, 0.01, min(m, n)) * (1 + 0.3 * np.random.default_rng(1).random(min(m, n)))
    s = np.sort(s)[::-1]
    A = from_spectrum(s, m, n, seed=3, dtype=dtype)
    res = ll.top_singular_values(A, k, rng=2)
    assert res.converged
    _check_values(A, k, res)
    tol = config.SPECTRUM_TOL[np.dtype(dtype).name]
    s_true = _true_values(A)[:k]
    assert np.all(np.abs(res.values - s_true) <= tol * np.maximum(s_true, config.SPECTRUM_RESIDUAL_FLOOR * s_true[0]))


def test_singular_vectors_match_svd():
    s = np.array([10.0, 8.0, 6.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    A = from_spectrum(s, 60, 40, seed=5)
    res = ll.top_singular_values(A, 5, rng=0)
    U, _, Vt = np.linalg.svd(A)
    assert np.allclose(np.abs(np.sum(res.u * U[:, :5], axis=0)), 1.0, atol=1e-10)
    assert np.allclose(np.abs(np.sum(res.v * Vt[:5].T, axis=0)), 1.0, atol=1e-10)
    assert np.allclose(A @ res.v, res.u * res.values, atol=1e-12 * s[0])


def test_repeated_values_are_all_found():
    # The Krylov space of a single start vector holds one copy of a repeated value: the engine
    # continues from a fresh vector when it finds the invariant subspace.
    s = np.r_[np.full(5, 3.0), np.full(5, 2.0), np.zeros(190)]
    A = from_spectrum(s[:10], 300, 200, seed=7)
    res = ll.top_singular_values(A, 8, rng=0)
    assert res.converged
    assert np.allclose(res.values, [3.0] * 5 + [2.0] * 3, rtol=1e-10)


def test_stack_and_layouts():
    rng = np.random.default_rng(0)
    stack = rng.standard_normal((2, 3, 50, 30))
    res = ll.top_singular_values(stack, 4, rng=1)
    assert res.values.shape == (2, 3, 4) and res.converged.shape == (2, 3)
    for idx in np.ndindex(2, 3):
        assert np.allclose(res.values[idx], _true_values(stack[idx])[:4], rtol=1e-9)
    F = np.asfortranarray(stack[0, 0])
    assert np.allclose(ll.top_singular_values(F, 4, rng=1).values, res.values[0, 0], rtol=1e-9)
    assert np.allclose(ll.top_singular_values(stack[0, 0].T, 4, rng=1).values, res.values[0, 0], rtol=1e-9)


def test_maxiter_cap_warns_and_bounds_still_hold():
    A = from_spectrum(np.linspace(1.0, 0.9, 200), 300, 200, seed=1)
    with pytest.warns(ll.ConvergenceWarning, match="top_singular_values"):
        res = ll.top_singular_values(A, 10, maxiter=3, rng=0, method="lanczos")
    assert not res.converged
    assert np.all(res.lower_bound <= _true_values(A)[:10])
    assert res.n_iter == 4 and res.n_matvecs == 2 * 3 + 2 * 10


def test_input_is_not_modified_and_seed_reproduces():
    A = np.random.default_rng(0).standard_normal((40, 30))
    A.setflags(write=False)
    r1 = ll.top_singular_values(A, 3, rng=None)
    r2 = ll.top_singular_values(A, 3, rng=r1.seed)
    assert np.array_equal(r1.values, r2.values) and "TopSingularValuesResult" in repr(r1)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"k": 0}, ValueError, "`k`"),
        ({"k": 31}, ValueError, "`k` must be at most"),
        ({"k": 2.5}, TypeError, "`k`"),
        ({"k": 2, "tol": -1.0}, ValueError, "`tol`"),
        ({"k": 2, "maxiter": 0}, ValueError, "`maxiter`"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ll.top_singular_values(np.ones((40, 30)), **kwargs)


def test_bad_matrices():
    with pytest.raises(TypeError, match="`A`"):
        ll.top_singular_values(np.ones((4, 3), dtype=int), 1)
    A = np.ones((4, 3))
    A[1, 1] = np.nan
    with pytest.raises(ValueError, match="`A`"):
        ll.top_singular_values(A, 1)


# --- statistics -----------------------------------------------------------------------------------


def _erank(s):
    p = s[s > 0] / s.sum()
    return math.exp(-sum(x * math.log(x) for x in p))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 60), st.integers(1, 60), st.floats(0.2, 0.999), st.integers(0, 2**31))
def test_effective_rank_interval_contains_the_full_value(r, k, rate, seed):
    k = min(k, r)
    rng = np.random.default_rng(seed)
    s = np.sort(rate ** np.arange(r) * (1 + rng.random(r)))[::-1]
    fro = float(np.sqrt(np.sum(s * s)))
    st_ = ll.spectrum_statistics(s[:k], frobenius_norm=fro, shape=(r + 3, r))
    lo, hi = st_.effective_rank_bounds
    full = _erank(s)
    assert lo * (1 - 1e-12) <= full <= hi * (1 + 1e-12)
    assert st_.effective_rank == pytest.approx(_erank(s[:k]), rel=1e-12)
    assert st_.stable_rank == pytest.approx(fro**2 / s[0] ** 2, rel=1e-12)
    if k == r:
        assert lo == pytest.approx(full, rel=1e-12) and hi == pytest.approx(full, rel=1e-12)


def test_effective_rank_interval_on_extreme_tails():
    # The interval holds for the tails that realize its ends: the flattest and the most concentrated.
    s_top = np.array([4.0, 3.0, 2.0])
    for tail in (np.full(20, 0.5), np.r_[np.full(5, 2.0), np.zeros(15)], np.r_[2.0, 1.0, np.zeros(18)]):
        s = np.r_[s_top, tail]
        st_ = ll.spectrum_statistics(s_top, frobenius_norm=float(np.linalg.norm(s)), shape=(23, 30))
        lo, hi = st_.effective_rank_bounds
        assert lo * (1 - 1e-12) <= _erank(s) <= hi * (1 + 1e-12)


def _reference_alpha(lam, min_tail):
    """Clauset-Shalizi-Newman by a plain loop: every distinct xmin, MLE, two-sided KS."""
    lam = sorted(float(x) for x in lam if x > 0)
    best = None
    for xmin in sorted(set(lam)):
        tail = [x for x in lam if x >= xmin]
        n = len(tail)
        if n < min_tail:
            break
        total = sum(math.log(x / xmin) for x in tail)
        if total <= 0:
            continue
        alpha = 1 + n / total
        d = 0.0
        for i, x in enumerate(tail):
            F = 1 - (x / xmin) ** (1 - alpha)
            d = max(d, abs((i + 1) / n - F), abs(i / n - F))
        if best is None or d < best[0]:
            best = (d, alpha, xmin, n)
    return best[1], best[2], best[3], best[0]


def _pareto_matrix(alpha, n_values, m, n, seed):
    rng = np.random.default_rng(seed)
    lam = (1.0 - rng.random(n_values)) ** (-1.0 / (alpha - 1.0))  # density ~ lambda^-alpha above 1
    return from_spectrum(np.sort(np.sqrt(lam))[::-1], m, n, seed), lam


def test_power_law_alpha_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    for lam in ((1.0 - rng.random(300)) ** -0.5, rng.exponential(size=200) + 0.1, np.r_[np.ones(10), 2.0, 3.0]):
        ours = ll.power_law_alpha(lam)
        ref = _reference_alpha(lam, config.SPECTRUM_ALPHA_MIN_TAIL)
        assert ours[1:3] == ref[1:3]
        assert ours[0] == pytest.approx(ref[0], rel=1e-10) and ours[3] == pytest.approx(ref[3], abs=1e-12)
    assert math.isnan(ll.power_law_alpha([1.0, 2.0, 0.0])[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_alpha_from_top_k_against_full_svd(dtype):
    # A heavy-tailed ESD (alpha = 2.5) of a 250 x 200 matrix. The top-64 fit equals the reference fit on the
    # same tail of scipy's full spectrum; with K = 120 the full-spectrum fit's tail (xmin) lies within the
    # computed part and the two fits agree.
    A, _ = _pareto_matrix(2.5, 200, 250, 200, seed=8)
    A = A.astype(dtype)
    fro = float(np.linalg.norm(A.astype(np.float64)))
    s_full = _true_values(A)
    ref_full = _reference_alpha(s_full**2, config.SPECTRUM_ALPHA_MIN_TAIL)
    for K in (64, 120) if dtype == np.float64 else (64,):
        res = ll.top_singular_values(A, K, rng=0)
        stats = ll.spectrum_statistics(res.values, frobenius_norm=fro, shape=A.shape)
        ref_tail = _reference_alpha(s_full[:K] ** 2, config.SPECTRUM_ALPHA_MIN_TAIL)
        assert abs(stats.alpha - ref_tail[0]) <= 0.05
    if dtype == np.float32:
        return
    assert ref_full[1] >= s_full[K - 1] ** 2  # the construction puts the full fit's xmin within the top 120
    assert abs(stats.alpha - ref_full[0]) <= 0.05
    assert 2.0 < stats.alpha < 3.0  # and near the 2.5 it was drawn from (98 tail samples)


def test_alpha_on_marchenko_pastur_bulk():
    # Gaussian W (m x n, variance 1/m): the ESD of W^T W is Marchenko-Pastur with ratio c = n/m, support
    # [(1 - sqrt c)^2, (1 + sqrt c)^2]; weightwatcher reads a large alpha there (no heavy tail).
    m, n, K = 500, 125, 30
    W = np.random.default_rng(11).standard_normal((m, n)) / math.sqrt(m)
    res = ll.top_singular_values(W, K, rng=0)
    lam = res.values**2
    c = n / m
    assert lam[0] <= (1 + math.sqrt(c)) ** 2 * 1.1 and lam[-1] >= (1 - math.sqrt(c)) ** 2
    stats = ll.spectrum_statistics(res.values, frobenius_norm=float(np.linalg.norm(W)), shape=W.shape)
    ref = _reference_alpha(_true_values(W)[:K] ** 2, config.SPECTRUM_ALPHA_MIN_TAIL)
    assert abs(stats.alpha - ref[0]) <= 0.05
    assert stats.alpha > 6.0


def test_statistics_bad_input():
    with pytest.raises(ValueError, match="`s`"):
        ll.spectrum_statistics([], frobenius_norm=1.0, shape=(2, 2))
    with pytest.raises(ValueError, match="`shape`"):
        ll.spectrum_statistics([1.0, 1.0, 1.0], frobenius_norm=2.0, shape=(2, 5))
    with pytest.raises(ValueError, match="`frobenius_norm`"):
        ll.spectrum_statistics([1.0], frobenius_norm=-1.0, shape=(2, 2))


# --- difference norm --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_difference_norm_against_numpy(dtype):
    rng = np.random.default_rng(2)
    old = rng.standard_normal((70, 50)).astype(dtype)
    new = (old + 0.01 * rng.standard_normal((70, 50))).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ll.difference_norm(new, old, rng=0)
    D = new.astype(np.float64) - old.astype(np.float64)
    ref = np.linalg.norm(D, 2)
    assert res.sigma == pytest.approx(ref, rel=1e-8)
    with pytest.raises(ValueError, match="`W_old`"):
        ll.difference_norm(new, old[:, :3])


@pytest.mark.parametrize("e", [-1000, -600, 500, 1000])
def test_any_float_scale(e):
    # The answer is representable at every scale: products run on 2^-e A (the engine's rescale).
    s = np.array([3.0, 2.0, 1.5, 1.0, 0.5])
    A = from_spectrum(s, 30, 20, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ll.top_singular_values(np.ldexp(A, e), 3, rng=0)
    assert res.converged
    assert np.allclose(np.ldexp(res.values, -e), s[:3], rtol=1e-10)
    assert np.all(np.isfinite(res.error_bound)) and np.all(res.error_bound < 1e-6)


def test_thick_restart_runs_and_keeps_the_values():
    # A slowly decaying spectrum needs more Lanczos steps than the basis holds: the restart path runs.
    A = from_spectrum(np.linspace(1.0, 0.5, 200), 300, 200, seed=3)
    res = ll.top_singular_values(A, 10, rng=2, method="lanczos")
    assert res.n_iter > config.LANCZOS_MAX_BASIS + 1  # the precondition of this test: at least one restart
    assert res.converged
    _check_values(A, 10, res)
