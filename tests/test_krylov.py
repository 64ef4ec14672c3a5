"""The Krylov engine (linalg_lowrank._krylov) on every path that drives it, against SVD and its numpy twin.

Paths: the numba driver on a single dense matrix (serial and parallel products) and on a stack
of small matrices (one per thread), the Python driver on a stack above SMALL_MATRIX_ENTRIES, on
an operator and on the deflated operator of the gap check; methods "power", "lanczos", "auto".
Then the value stop of `spectral_norm` on prescribed spectra.
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
