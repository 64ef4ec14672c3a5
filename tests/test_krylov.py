"""The Krylov engine (linalg_lowrank._krylov) on every path that drives it, against SVD and its numpy twin.

Paths: the numba driver on a single dense matrix (serial and parallel products) and on a stack
of small matrices (one per thread), the Python driver on a stack above SMALL_MATRIX_ENTRIES, on
an operator and on the deflated operator of the gap check; methods "power", "lanczos", "auto".
The engine's mode for the top nev pairs (``top_singular_values(method="lanczos")``) against SVD
and its numpy twin. Then the value stop of `spectral_norm` on prescribed spectra.
"""

import inspect
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

import linalg_lowrank as ll
from linalg_lowrank import _krylov, _operators, _topsv, config, spectral
from linalg_lowrank.results import ConvergenceWarning

from . import reference
from .strategies import from_spectrum

EPS64 = np.finfo(np.float64).eps


def _floor(A, s0):
    """What float64 products of A resolve, relative to sigma1 (as tests/test_spectral.py)."""
    m, n = A.shape[-2:]
    return 50 * (m + n) * EPS64 * np.linalg.norm(np.asarray(A, dtype=np.float64)) / s0


def _spectrum(k, ratio, seed):
    """sigma1 = 1, sigma2 = ratio, the rest uniform below ratio."""
    rng = np.random.default_rng(seed)
    return np.concatenate([[1.0, ratio], ratio * np.sort(rng.uniform(0.0, 1.0, k - 2))[::-1]])


def _case(shape, ratio, seed, dtype, order):
    batch, (m, n) = shape[:-2], shape[-2:]
    mats = [
        from_spectrum(_spectrum(min(m, n), ratio, seed + i), m, n, seed + i, dtype=dtype)
        for i in range(int(np.prod(batch, dtype=int)))
    ]
    A = np.stack(mats).reshape(shape) if batch else mats[0]
    return np.asarray(A, order=order) if A.ndim == 2 else A


def _check_against_svd(A, res):
    A64 = np.asarray(A, dtype=np.float64).reshape((-1,) + A.shape[-2:])
    sig = np.atleast_1d(res.sigma)
    bound = np.atleast_1d(res.error_bound)
    u = np.asarray(res.u, dtype=np.float64).reshape(A64.shape[0], -1)
    v = np.asarray(res.v, dtype=np.float64).reshape(A64.shape[0], -1)
    assert np.all(np.atleast_1d(res.converged))
    for k, M in enumerate(A64):
        U, s, Vt = np.linalg.svd(M)
        floor = _floor(M, s[0])
        assert abs(sig[k] - s[0]) <= (bound[k] + floor) * s[0]
        assert sig[k] <= s[0] * (1 + floor)  # certified lower bound
        gap = (s[0] - s[1]) / s[0]
        # Davis–Kahan, with the residual tolerance of power_iteration and the dtype's rounding of u, v
        tol = 10 * (config.POWER_TOL + floor) / gap + 10 * np.finfo(A.dtype).eps
        assert np.linalg.norm(np.outer(u[k], v[k]) - np.outer(U[:, 0], Vt[0])) <= tol


PATHS = {
    "single": (40, 30),
    "single-parallel": (600, 500),  # >= PARALLEL_MIN_ENTRIES: the parallel one-pass product
    "small-stack": (3, 30, 20),
    "large-stack": (2, 600, 500),  # > SMALL_MATRIX_ENTRIES: the Python driver in lockstep
}


def test_the_paths_are_the_ones_named():
    assert 600 * 500 >= config.PARALLEL_MIN_ENTRIES and 600 * 500 > config.SMALL_MATRIX_ENTRIES
    assert 30 * 20 <= config.SMALL_MATRIX_ENTRIES


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("method", ["auto", "power", "lanczos"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_dense_path_and_method_matches_svd(path, method, dtype):
    order = "F" if dtype == np.float32 else "C"
    A = _case(PATHS[path], 0.8, 7, dtype, order)
    res = ll.power_iteration(A, rng=3, method=method)
    _check_against_svd(A, res)
    assert np.all(np.atleast_1d(res.n_iter) <= max(config.POWER_MAXITER_FLOOR, 10 * min(A.shape[-2:])))


def test_python_driver_on_a_large_stack_equals_the_matrices_one_by_one():
    # the lockstep batch and single solves run the same engine from the same start vectors
    A = _case(PATHS["large-stack"], 0.9, 11, np.float64, "C")
    res = ll.power_iteration(A, rng=5, method="lanczos")
    starts = np.random.default_rng(5).standard_normal((2, 500))
    for k in range(2):
        one = ll.power_iteration(A[k], v0=starts[k], method="lanczos")
        assert abs(one.sigma - res.sigma[k]) <= 1e-12 * res.sigma[k]
        assert one.n_iter == res.n_iter[k]


@pytest.mark.parametrize("method", ["auto", "power", "lanczos"])
@pytest.mark.parametrize("transpose", [False, True])
def test_operator_path_matches_svd(method, transpose):
    A = _case((70, 50), 0.8, 2, np.float64, "C")
    A = A.T.copy() if transpose else A
    res = ll.power_iteration(scipy.sparse.linalg.aslinearoperator(A), rng=1, method=method)
    _check_against_svd(A, res)


@pytest.mark.parametrize("shape", [(60, 45), (3, 25, 20)])
def test_deflated_second_triplet_matches_sigma2(shape):
    A = _case(shape, 0.8, 4, np.float64, "C")
    _, gram, out = spectral._power_iteration(A, v0=None, tol=1e-12, maxiter=None, rng=0, method="auto")
    deflated = spectral._Deflated(gram, out.w)
    X = deflated._project(np.random.default_rng(1).standard_normal((gram.batch, gram.gram_dim)))
    second = _topsv.solve(deflated, X, tol=1e-10, maxiter=2000, method="lanczos")
    assert np.all(second.converged)
    s2 = np.linalg.svd(A.reshape((-1,) + A.shape[-2:]), compute_uv=False)[:, 1]
    sigma2 = np.ldexp(np.sqrt(second.theta), second.exponent)
    np.testing.assert_allclose(sigma2, s2, rtol=1e-9)


@pytest.mark.parametrize("path", ["single", "small-stack", "large-stack", "operator"])
@pytest.mark.parametrize("method", ["auto", "power", "lanczos"])
@pytest.mark.parametrize("maxiter", [1, 2])
def test_maxiter_one_and_two(path, method, maxiter):
    A = _case(PATHS.get(path, (40, 30)), 0.99, 9, np.float64, "C")
    n = A.shape[-1]
    v0 = np.random.default_rng(2).standard_normal(A.shape[:-2] + (n,))
    source = scipy.sparse.linalg.aslinearoperator(A) if path == "operator" else A
    with pytest.warns(ConvergenceWarning):
        res = ll.power_iteration(source, v0=v0, maxiter=maxiter, method=method)
    assert np.all(np.atleast_1d(res.n_iter) == maxiter)
    assert not np.any(np.atleast_1d(res.converged))
    A3 = A.reshape((-1,) + A.shape[-2:])
    s0 = np.linalg.svd(A3, compute_uv=False)[:, 0]
    sig = np.atleast_1d(res.sigma)
    assert np.all(sig <= s0 * (1 + _floor(A3[0], s0[0])))  # every reported value is a lower bound
    if maxiter == 1:  # the one product verifies the start itself
        V0 = v0.reshape(-1, n) / np.linalg.norm(v0.reshape(-1, n), axis=1, keepdims=True)
        np.testing.assert_allclose(sig, np.linalg.norm(np.einsum("bmn,bn->bm", A3, V0), axis=1), rtol=1e-12)


# --- the engine itself, driven through its reverse-communication protocol ---


def _drive(M, x0, *, method, tol=1e-10, rtol=0.0, maxiter=500, K=12, keep=4):
    """Run the engine with numpy products, counting them: the engine must never compute one itself."""
    p, q = M.shape
    ist, fst = _krylov.new_state(
        1, tol=tol, rtol=rtol, maxiter=maxiter, method=method, K=K, keep=keep, check_every=1, max_gap=4,
        auto_max=config.AUTO_MAX_POWER_STEPS, lo=0.0, hi=np.inf,
    )  # fmt: skip
    V, T = np.zeros((K + 1, q)), np.zeros((K + 1, K + 1))
    hist, x, w, yb = np.zeros(maxiter), np.zeros(q), np.zeros(q), np.zeros(p)
    request = _krylov.start(ist[0], fst[0], V, x0 / np.linalg.norm(x0), x)
    products = 0
    while request != _krylov.DONE:
        assert request in (_krylov.EXTEND, _krylov.MEASURE, _krylov.EXTEND | _krylov.MEASURE)
        y = M @ x
        z = M.T @ y
        products += 1
        request = _krylov.advance(ist[0], fst[0], V, T, hist, x, w, yb, y, z)
    assert products == ist[0, _krylov.I_STEPS] <= maxiter
    return ist[0], fst[0], w, yb, hist[: ist[0, _krylov.I_NHIST]]


@pytest.mark.kernel
@settings(max_examples=30, deadline=None)
@given(st.integers(2, 25), st.integers(2, 25), st.integers(0, 2**32 - 1), st.sampled_from([(4, 2), (8, 3), (40, 8)]))
def test_engine_matches_its_numpy_twin(p, q, seed, basis):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((p, q))
    x0 = rng.standard_normal(q)
    K, keep = min(basis[0], q), min(basis[1], q - 1)
    ist, fst, w, yb, _ = _drive(M, x0, method="lanczos", K=K, keep=keep, maxiter=3000)
    theta_ref, w_ref, res_ref, _ = reference.thick_restart_lanczos(
        lambda v: M.T @ (M @ v), x0, tol=1e-11, maxiter=3000, K=K, keep=keep
    )
    lam = reference.top_eigenpair_of_gram(M)[0]
    assert ist[_krylov.I_STOP] in (_krylov.CONVERGED, _krylov.EXACT) and fst[_krylov.F_RES] <= 1e-10
    assert abs(fst[_krylov.F_THETA] - theta_ref) <= 1e-9 * lam and abs(fst[_krylov.F_THETA] - lam) <= 1e-9 * lam
    np.testing.assert_allclose(yb, M @ w, atol=50 * EPS64 * np.abs(M).sum(axis=1).max())
    assert abs(np.linalg.norm(w) - 1.0) <= 1e-12
    if lam > 0:
        assert min(np.linalg.norm(w - w_ref), np.linalg.norm(w + w_ref)) <= 1e-4  # gap-limited


@pytest.mark.kernel
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(0, 2**32 - 1), st.integers(1, 30))
def test_power_mode_is_the_naive_power_loop(p, q, seed, steps):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((p, q))
    x0 = rng.standard_normal(q)
    ist, fst, w, _, hist = _drive(M, x0, method="power", maxiter=steps)
    naive = reference.power_steps(M, x0, steps)
    used = ist[_krylov.I_STEPS]
    assert used <= steps and len(hist) == used
    for k in range(used):
        assert abs(hist[k] - naive[k][0]) <= 1e-10 * max(naive[k][0], 1e-300)
    sigma_last, res_last = naive[used - 1]
    assert (ist[_krylov.I_STOP] == _krylov.CONVERGED) == (res_last <= 1e-10 and sigma_last > 0)
    if sigma_last > 0:
        assert abs(fst[_krylov.F_RES] - res_last) <= 1e-8 * max(res_last, 1e-6)


@pytest.mark.kernel
@pytest.mark.parametrize("maxiter", [1, 2, 3])
def test_engine_spends_exactly_maxiter_products_and_measures_the_last(maxiter):
    rng = np.random.default_rng(0)
    M = from_spectrum(_spectrum(30, 0.999, 0), 40, 30, 0)
    x0 = rng.standard_normal(30)
    ist, fst, w, yb, _ = _drive(M, x0, method="lanczos", maxiter=maxiter)
    assert ist[_krylov.I_STEPS] == maxiter and ist[_krylov.I_STOP] == _krylov.MAXITER
    assert abs(fst[_krylov.F_THETA] - (M @ w) @ (M @ w)) <= 1e-12 * fst[_krylov.F_THETA]
    if maxiter == 1:
        np.testing.assert_allclose(w, x0 / np.linalg.norm(x0), rtol=0, atol=1e-15)


# --- the engine for the top nev pairs (method "pairs"), as top_singular_values(method="lanczos") drives it ---


def _drive_pairs(M, x0, nev, fresh, *, tol=1e-10, maxiter=500, K=None, keep=None, check_every=4):
    """Run the engine's pairs mode with numpy products and the given source of fresh directions.

    Returns (theta, W, products, converged, fresh requests): W's rows are the Ritz vectors.
    """
    p, q = M.shape
    K = min(q, max(config.LANCZOS_MAX_BASIS, 2 * nev + config.LANCZOS_KEEP)) if K is None else K
    keep = min(K - 1, max(nev + (K - nev) // 2, 1)) if keep is None else keep
    ist, fst = _krylov.new_state(
        1, tol=tol, rtol=0.0, maxiter=maxiter, method="pairs", K=K, keep=keep, check_every=check_every,
        max_gap=4 * check_every,
        auto_max=0, lo=0.0, hi=np.inf, nev=nev, breakdown=config.SPECTRUM_BREAKDOWN_ULPS,
        floor=config.SPECTRUM_RESIDUAL_FLOOR,
    )  # fmt: skip
    V, T, x = np.zeros((K + 1, q)), np.zeros((K + 1, K + 1)), np.zeros(q)
    request = _krylov.start(ist[0], fst[0], V, x0 / np.linalg.norm(x0), x)
    products = n_fresh = 0
    y, z = np.zeros(p), np.zeros(q)
    while request != _krylov.DONE:
        if request == _krylov.FRESH:
            x[:] = fresh(q)
            n_fresh += 1
        else:
            assert request == _krylov.EXTEND  # no measurement products in this mode
            y = M @ x
            z = M.T @ y
            products += 1
        request = _krylov.advance_pairs(ist[0], fst[0], V, T, x, y, z)
    assert products == ist[0, _krylov.I_STEPS] <= maxiter
    theta, W, est = np.zeros(nev), np.zeros((nev, q)), np.zeros(nev)
    m = _krylov.pairs(ist[0], V, T, theta, W, est)
    np.testing.assert_allclose(np.linalg.norm(W[:m], axis=1), 1.0, rtol=1e-12)
    return theta[:m], W[:m], products, ist[0, _krylov.I_STOP] == _krylov.CONVERGED, n_fresh


def _pairs_case(kind, p, q, seed):
    """(M, squared singular values of M descending): distinct, repeated (low rank) or rank-deficient spectra."""
    rng = np.random.default_rng(seed)
    k = min(p, q)
    if kind == "distinct":
        s = np.sort(rng.uniform(0.1, 1.0, k))[::-1]
    elif kind == "repeated":  # a rank of at most half the space: the Krylov space turns invariant
        r = max(k // 2, 1)
        s = np.r_[np.full(min(3, r), 2.0), np.full(max(r - 3, 0), 1.0), np.zeros(k - r)]
    else:  # rank-deficient, distinct nonzero values
        r = max(k // 3, 1)
        s = np.r_[np.sort(rng.uniform(0.5, 1.0, r))[::-1], np.zeros(k - r)]
    return from_spectrum(s, p, q, seed), np.r_[s**2, np.zeros(max(q - k, 0))]


def _check_pairs(M, lam, theta, W, *, tol, exact):
    """Ritz pairs against numpy's SVD: lower bounds (interlacing), residuals, and the values where they are sure."""
    m = theta.size
    scale = lam[0] if lam[0] > 0 else 1.0
    rounding = 100 * sum(M.shape) * EPS64 * scale
    assert np.all(np.diff(theta) <= rounding)
    assert np.all(theta <= lam[:m] + rounding)  # Cauchy interlacing: the i-th Ritz value never exceeds lambda_i
    R = (M.T @ (M @ W.T)) - W.T * theta
    residual = np.linalg.norm(R, axis=0)
    # each Ritz value is within its residual of some eigenvalue of M^T M
    assert np.all(np.abs(theta[:, None] - lam[None, :]).min(axis=1) <= residual + rounding)
    if exact:
        floor = config.SPECTRUM_RESIDUAL_FLOOR * scale
        np.testing.assert_allclose(theta, lam[:m], rtol=0, atol=tol * max(scale, floor) + rounding)


@pytest.mark.kernel
@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 30), st.integers(2, 30), st.integers(1, 6), st.sampled_from(["distinct", "repeated", "rankdef"]),
    st.integers(0, 2**32 - 1), st.sampled_from([None, (6, 3), (12, 8)]),
)  # fmt: skip
def test_pairs_mode_matches_svd_and_its_numpy_twin(p, q, nev, kind, seed, basis):
    nev = min(nev, q)
    M, lam = _pairs_case(kind, p, q, seed)
    x0 = np.random.default_rng(seed + 1).standard_normal(q)
    K = keep = None
    if basis is not None:  # small bases: the thick restart runs, also right after a fresh direction
        K = min(max(basis[0], 2 * nev), q)
        keep = min(max(basis[1], nev), K - 1)
    theta, W, _, converged, _ = _drive_pairs(
        M, x0, nev, np.random.default_rng(seed + 2).standard_normal, K=K, keep=keep
    )
    K_ref = K if K is not None else min(q, max(config.LANCZOS_MAX_BASIS, 2 * nev + config.LANCZOS_KEEP))
    keep_ref = keep if keep is not None else min(K_ref - 1, max(nev + (K_ref - nev) // 2, 1))
    theta_ref, W_ref, _, converged_ref = reference.thick_restart_lanczos_pairs(
        lambda v: M.T @ (M @ v), x0, nev, tol=1e-10, floor=config.SPECTRUM_RESIDUAL_FLOOR,
        breakdown=config.SPECTRUM_BREAKDOWN_ULPS, maxiter=500, K=K_ref, keep=keep_ref,
        fresh=lambda: np.random.default_rng(seed + 2).standard_normal(q),
    )  # fmt: skip
    assert converged and converged_ref
    assert theta.size == theta_ref.size == nev
    # Distinct values, or an invariant Krylov space reached (low rank): then every copy of a repeated
    # value is found. (A full-rank operator with repeated values may converge on one copy: not tested.)
    _check_pairs(M, lam, theta, W, tol=1e-10, exact=True)
    _check_pairs(M, lam, theta_ref, W_ref, tol=1e-10, exact=True)
    np.testing.assert_allclose(theta, theta_ref, rtol=0, atol=2e-10 * max(lam[0], 1e-300) + 1e3 * EPS64 * lam[0])


@pytest.mark.kernel
@pytest.mark.parametrize("maxiter", [1, 2, 3, 5])
@pytest.mark.parametrize("nev", [1, 3, 6])
def test_pairs_mode_spends_at_most_maxiter_products(maxiter, nev):
    M, lam = _pairs_case("distinct", 40, 30, 0)
    theta, W, products, converged, _ = _drive_pairs(
        M, np.random.default_rng(1).standard_normal(30), nev, np.random.default_rng(2).standard_normal, maxiter=maxiter
    )
    assert products == maxiter and not converged
    assert theta.size == min(nev, maxiter)  # the basis holds one vector per product
    _check_pairs(M, lam, theta, W, tol=1e-10, exact=False)


@pytest.mark.kernel
def test_pairs_mode_takes_its_randomness_from_the_driver():
    # rank 3 and nev = 5: the Krylov space turns invariant and the engine asks for fresh directions;
    # the same supply gives the same answer, and the engine never draws numbers itself.
    M = from_spectrum(np.array([3.0, 3.0, 1.0]), 40, 25, seed=4)
    x0 = np.random.default_rng(0).standard_normal(25)
    runs = [_drive_pairs(M, x0, 5, np.random.default_rng(7).standard_normal) for _ in range(2)]
    assert runs[0][4] >= 2 and runs[0][3]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_allclose(runs[0][0], [9.0, 9.0, 1.0, 0.0, 0.0], atol=1e-12 * 9)
    other = _drive_pairs(M, x0, 5, np.random.default_rng(8).standard_normal)
    np.testing.assert_allclose(other[0], runs[0][0], atol=1e-12 * 9)
    assert not np.array_equal(other[1], runs[0][1])  # the null-space vectors follow the supplied directions


def _hadamard_case(dtype):
    """64 x 16, singular values (2, 2, 2, 1, 1, 0.5, 0 x 10), exactly repeated in float32 as in float64.

    Orthonormal Hadamard columns scaled by powers of two: every entry is a short sum of multiples of
    1/64, exact in both dtypes (a random orthogonal basis rounded to float32 splits repeated values).
    """
    s = np.array([2.0, 2.0, 2.0, 1.0, 1.0, 0.5])
    U = scipy.linalg.hadamard(64)[:, 1:7] / 8.0
    V = scipy.linalg.hadamard(16)[:, [3, 5, 6, 9, 10, 12]] / 4.0
    A = (U * s) @ V.T
    assert np.array_equal(A.astype(dtype).astype(np.float64), A)
    return A.astype(dtype)


@pytest.mark.kernel
@pytest.mark.parametrize("check_every", [1, 4])
def test_pairs_mode_waits_for_an_invariant_subspace_after_a_fresh_direction(check_every):
    # sigma = (2, 2, 2, 1 x 22, 0 x 25): the first Krylov space is invariant with the values (4, 1, 0) and
    # one copy of 4. The fresh direction lies mostly in the null space, so right after it the old
    # pairs (4, 1) are still the top two, with estimates zero by construction: stopping there would
    # report 1 for the second value. Checked after every product, this is the first thing a check sees.
    M, lam = _pairs_case("repeated", 70, 50, 0)
    x0 = np.random.default_rng(1).standard_normal(50)
    theta, W, _, converged, n_fresh = _drive_pairs(
        M, x0, 2, np.random.default_rng(2).standard_normal, check_every=check_every
    )
    assert converged and n_fresh >= 2
    _check_pairs(M, lam, theta, W, tol=1e-10, exact=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("kind", ["distinct", "repeated", "rankdef"])
def test_top_singular_values_lanczos_matches_svd(dtype, k, kind):
    # float32 repeated values: the exact Hadamard case (float32 rounding of a random basis splits them)
    M = _hadamard_case(dtype) if (kind == "repeated" and dtype == np.float32) else _pairs_case(kind, 70, 50, 3)[0]
    A = M.astype(dtype)
    s = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    tol = config.SPECTRUM_TOL[np.dtype(dtype).name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = ll.top_singular_values(A, k, rng=0, method="lanczos")
    assert res.converged and res.values.shape == (k,) and res.u.dtype == dtype
    rounding = 8 * sum(A.shape) * EPS64 * s[0]
    assert np.all(res.lower_bound <= s[:k] + rounding)
    # each value within its certified bound of some singular value (Weyl)
    assert np.all(np.abs(res.values[:, None] - s[None, :]).min(axis=1) <= res.error_bound * res.values + rounding)
    np.testing.assert_allclose(res.values, s[:k], rtol=0, atol=tol * s[0] + rounding)
    assert res.n_matvecs == 2 * (res.n_iter - 1) + 2 * k


@pytest.mark.parametrize("maxiter", [1, 2, 4])
def test_top_singular_values_lanczos_with_small_maxiter(maxiter):
    M, _ = _pairs_case("distinct", 70, 50, 5)
    s = np.linalg.svd(M, compute_uv=False)
    with pytest.warns(ConvergenceWarning, match="top_singular_values"):
        res = ll.top_singular_values(M, 6, rng=0, maxiter=maxiter, method="lanczos")
    assert not res.converged and res.n_iter == maxiter + 1
    assert np.all(res.values <= s[:6] * (1 + 1e-12))  # Rayleigh-Ritz on any subspace: lower bounds
    assert np.all(res.lower_bound <= s[:6])


@pytest.mark.parametrize("e", [-1000, -600, 500, 1000])
def test_top_singular_values_lanczos_at_any_float_scale(e):
    # the pairs mode's driver stops on a product out of range and the solve restarts on 2^-e A
    s = np.array([3.0, 2.0, 2.0, 1.0, 0.5])
    A = from_spectrum(s, 30, 20, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ll.top_singular_values(np.ldexp(A, e), 4, rng=0, method="lanczos")
    assert res.converged
    np.testing.assert_allclose(np.ldexp(res.values, -e), s[:4], rtol=1e-10)
    assert res.n_iter == ll.top_singular_values(A, 4, rng=0, method="lanczos").n_iter  # the same random directions


# --- spectral_norm: the value stop ---


def test_spectral_norm_signature_is_explicit():
    params = inspect.signature(ll.spectral_norm).parameters
    assert list(params) == ["A", "rtol", "maxiter", "rng", "v0", "method", "return_info"]
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in list(params)[1:])
    assert params["rtol"].default == config.SPECTRAL_NORM_RTOL
    with pytest.raises(TypeError, match="spectral_norm"):
        ll.spectral_norm(np.eye(3), tol=1e-3)
    with pytest.raises(ValueError, match="rtol"):
        ll.spectral_norm(np.eye(3), rtol=0.0)


def test_solver_keywords_follow_power_iteration_defaults():
    assert (
        spectral._solver_kwargs({}, "best_rank1")["tol"]
        == inspect.signature(ll.power_iteration).parameters["tol"].default
    )
    with pytest.raises(TypeError, match="best_rank1"):
        ll.best_rank1(np.eye(3), rtol=1e-3)


def _prescribed(m, n, ratio, seed, dtype, kind):
    rng = np.random.default_rng(seed)
    k = min(m, n)
    if kind == "uniform":  # a bulk reaching up to sigma2
        rest = ratio * np.sort(rng.uniform(0.0, 1.0, k - 2))[::-1]
    else:  # a resolved third value far below and a low bulk: sigma1, sigma2 a tight pair alone at the top
        rest = np.concatenate([[0.5], 0.1 * rng.uniform(0.0, 1.0, k - 3)])
    return from_spectrum(np.concatenate([[1.0, ratio], rest]), m, n, seed, dtype=dtype)


@pytest.mark.parametrize("ratio", [0.5, 0.9, 0.99, 0.999, 0.9999])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rtol", [1e-4, 1e-8, None])
def test_spectral_norm_is_within_rtol_of_svdvals_on_prescribed_spectra(ratio, dtype, rtol):
    # The matrix is exactly representable in its dtype and every product is computed in float64,
    # so the reference is svdvals of the same matrix in float64 and the rounding term is float64's
    # for float32 too: _floor, 50 (m + n) eps64 ||A||_F / sigma1 (a Rayleigh quotient's rounding).
    kwargs = {} if rtol is None else {"rtol": rtol}
    target = config.SPECTRAL_NORM_RTOL if rtol is None else rtol
    # "pair": sigma1, sigma2 a tight pair alone above a resolved third value and a low bulk; the Ritz
    # values then show a large gap before the Krylov space has separated the pair (a hidden pair).
    for kind in ("uniform", "pair"):
        for (m, n), seed in (((40, 30), 0), ((150, 110), 1), ((90, 120), 2)):
            A = _prescribed(m, n, ratio, seed, dtype, kind)
            ref = scipy.linalg.svdvals(A.astype(np.float64))[0]
            with warnings.catch_warnings():
                warnings.simplefilter("error", ConvergenceWarning)
                got = ll.spectral_norm(A, rng=seed, **kwargs)
            assert isinstance(got, float)
            assert abs(got - ref) <= (target + _floor(A, ref)) * ref, (kind, m, n, seed)
            assert got <= ref * (1 + _floor(A, ref))  # never above: a Rayleigh quotient


def test_value_stop_saves_products_over_the_residual_stop():
    A = _prescribed(300, 200, 0.9, 0, np.float64, "uniform")
    by_value = spectral._power_iteration(
        A, v0=None, tol=config.POWER_TOL, maxiter=None, rng=0, method="auto", rtol=1e-10
    )[0]
    by_residual = ll.power_iteration(A, rng=0)
    assert by_value.n_iter < by_residual.n_iter


def test_spectral_norm_of_stacks_operators_and_rank_one():
    A = _case((4, 20, 15), 0.9, 1, np.float64, "C")
    got = ll.spectral_norm(A, rng=0)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, np.linalg.norm(A, 2, axis=(-2, -1)), rtol=1e-10)
    B = A[0]
    assert abs(ll.spectral_norm(scipy.sparse.linalg.aslinearoperator(B), rng=0) - np.linalg.norm(B, 2)) <= 1e-10 * (
        np.linalg.norm(B, 2)
    )
    u, v = np.arange(1.0, 6.0), np.arange(1.0, 4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # an invariant Krylov space converges at once
        assert abs(ll.spectral_norm(np.outer(u, v), rng=0) - np.linalg.norm(u) * np.linalg.norm(v)) <= 1e-12 * 60


def test_unconverged_value_stop_warns_with_spectral_norm_name():
    A = _prescribed(60, 40, 0.999, 0, np.float64, "uniform")
    with pytest.warns(ConvergenceWarning, match="spectral_norm.*rtol"):
        ll.spectral_norm(A, rng=0, maxiter=3)


def test_unit_rows_start_is_what_the_engine_sees():
    # the engine copies the start as given: the drivers hand it unit rows
    X = _operators.unit_rows(np.random.default_rng(0).standard_normal((3, 5)))
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0)


def test_spectral_norm_return_info_is_the_solve_behind_the_value():
    A = _prescribed(80, 60, 0.9, 3, np.float64, "uniform")
    info = ll.spectral_norm(A, rng=3, return_info=True)
    assert isinstance(info, ll.PowerIterationResult) and info.converged
    assert info.sigma == ll.spectral_norm(A, rng=3)
    ref = scipy.linalg.svdvals(A)[0]
    assert abs(info.sigma - ref) <= (config.SPECTRAL_NORM_RTOL + _floor(A, ref)) * ref
