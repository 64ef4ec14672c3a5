"""top_singular_values by the Gram method and block Lanczos (``_block_krylov``), against scipy.linalg.svdvals."""

import numpy as np
import pytest
import scipy.linalg

import linalg_lowrank as ll
from linalg_lowrank import _block_krylov, _operators, config
from tests.strategies import from_spectrum

EPS64 = np.finfo(np.float64).eps
METHODS = ("gram", "block")


def _true_values(A):
    return scipy.linalg.svdvals(np.asarray(A, dtype=np.float64))


def _check(A, k, res, tol):
    """The certificate's promises, then the values against svdvals where the spectrum separates them."""
    s_all = _true_values(A)
    s = s_all[:k]
    m, n = A.shape
    rounding = 8 * (m + n) * EPS64 * s[0]  # the float64 certificate and the reference svdvals
    assert res.values.shape == (k,) and np.all(np.diff(res.values) <= 0)
    assert np.all(res.lower_bound <= s + rounding)  # Cauchy interlacing
    dist = np.abs(res.values[:, None] - s_all[None, :]).min(axis=1)
    assert np.all(dist <= res.error_bound * res.values + rounding)  # Weyl, on the measured residual
    if res.converged:
        target = tol * np.maximum(res.values, config.SPECTRUM_RESIDUAL_FLOOR * res.values[0])
        assert np.all(res.residual <= target)
        # converged and separated: the relative error is below the error bound, hence below tol
        gaps = -np.diff(np.r_[s_all[: k + 1], -np.inf])[:k]
        separated = gaps > 4 * (res.error_bound.max() * s[0] + rounding)
        assert np.all((np.abs(res.values - s) <= res.error_bound * res.values + rounding) | ~separated)


def _spectrum(kind, r, rng):
    if kind == "gaussian":
        return None
    if kind == "power-law":
        return np.arange(1, r + 1) ** -0.5
    if kind == "clusters":  # three tight clusters and a tail
        s = np.r_[np.full(6, 5.0), np.full(6, 4.0) * (1 + 1e-10 * np.arange(6)), np.full(6, 3.0)]
        return np.r_[s, np.geomspace(1.0, 1e-3, r - s.size)]
    if kind == "rank-deficient":
        return np.r_[np.geomspace(10.0, 1.0, 12), np.zeros(r - 12)]
    raise AssertionError(kind)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["gaussian", "power-law", "clusters", "rank-deficient"])
@pytest.mark.parametrize(("m", "n", "k"), [(160, 90, 8), (70, 150, 12)])
def test_values_against_svdvals(method, dtype, kind, m, n, k):
    rng = np.random.default_rng(0)
    s = _spectrum(kind, min(m, n), rng)
    A = rng.standard_normal((m, n)).astype(dtype) if s is None else from_spectrum(s, m, n, seed=1, dtype=dtype)
    tol = config.SPECTRUM_TOL[np.dtype(dtype).name]
    res = ll.top_singular_values(A, k, rng=2, method=method)
    assert res.method == method and res.converged
    _check(A, k, res, tol)
    assert res.u.dtype == dtype and res.v.dtype == dtype
    assert res.u.shape == (m, k) and res.v.shape == (n, k)
    # the singular vectors belong to A: one of A v_i = s_i u_i, A^T u_i = s_i v_i holds by construction,
    # the other up to the reported residual (vectors rounded to dtype)
    u, v = res.u.astype(np.float64), res.v.astype(np.float64)
    A64 = A.astype(np.float64)
    scale = np.finfo(dtype).eps * 8 * max(m, n) * res.values[0]
    right = np.linalg.norm(A64 @ v - u * res.values, axis=0)
    left = np.linalg.norm(A64.T @ u - v * res.values, axis=0)
    assert np.all(np.minimum(left, right) <= scale) and np.all(np.maximum(left, right) <= res.residual + scale)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_k_close_to_min_side_and_layouts(method, dtype):
    rng = np.random.default_rng(3)
    s = np.sort(np.geomspace(10.0, 0.01, 40) * (1 + 0.3 * rng.random(40)))[::-1]
    A = from_spectrum(s, 90, 40, seed=4, dtype=dtype)
    tol = config.SPECTRUM_TOL[np.dtype(dtype).name]
    for k in (38, 40):
        for X in (A, np.asfortranarray(A), A.T, np.asfortranarray(A.T), A[:, ::-1]):
            res = ll.top_singular_values(X, k, rng=0, method=method)
            assert res.converged
            _check(X, k, res, tol)


@pytest.mark.parametrize("method", METHODS)
def test_stack_matches_each_matrix(method):
    stack = np.random.default_rng(0).standard_normal((2, 3, 50, 30))
    res = ll.top_singular_values(stack, 4, rng=1, method=method)
    assert res.values.shape == (2, 3, 4) and res.converged.shape == (2, 3) and res.n_passes.shape == (2, 3)
    for idx in np.ndindex(2, 3):
        assert np.allclose(res.values[idx], _true_values(stack[idx])[:4], rtol=1e-9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dtype", "e"), [(np.float64, 700), (np.float64, -700), (np.float32, 90), (np.float32, -90)])
def test_extreme_scales(method, dtype, e):
    s = np.array([4.0, 3.0, 2.0, 1.0, 0.5])
    A = np.ldexp(from_spectrum(s, 40, 30, seed=2), e).astype(dtype)
    res = ll.top_singular_values(A, 3, rng=0, method=method)
    assert res.converged
    tol = config.SPECTRUM_TOL[np.dtype(dtype).name]
    rel = np.finfo(dtype).eps * 64  # the matrix itself is rounded to dtype
    assert np.allclose(np.ldexp(res.values, -e), s[:3], rtol=tol + rel)
    assert np.all(np.isfinite(res.error_bound))


@pytest.mark.parametrize("method", METHODS)
def test_nan_is_named(method):
    A = np.ones((30, 20))
    A[3, 4] = np.nan
    with pytest.raises(ValueError, match="`A`"):
        ll.top_singular_values(A, 2, method=method)
    A[3, 4] = np.inf
    with pytest.raises(ValueError, match="`A`"):
        ll.top_singular_values(A, 2, method=method)


def test_zero_matrix():
    for method in METHODS:
        res = ll.top_singular_values(np.zeros((20, 10)), 3, rng=0, method=method)
        assert res.converged and np.all(res.values == 0) and np.all(res.lower_bound == 0)


def test_block_maxiter_cap_warns_and_bounds_still_hold():
    A = from_spectrum(np.linspace(1.0, 0.9, 200), 300, 200, seed=1)
    with pytest.warns(ll.ConvergenceWarning, match="top_singular_values"):
        res = ll.top_singular_values(A, 10, maxiter=1, rng=0, method="block")
    assert not res.converged
    assert np.all(res.lower_bound <= _true_values(A)[:10])
    b = _block_krylov.block_size(10, 200)
    assert res.n_iter == 2 and res.n_matvecs == 2 * b + 2 * 10 and res.n_passes == 2


def test_seed_reproduces_and_input_untouched():
    A = np.random.default_rng(0).standard_normal((60, 45)).astype(np.float32)
    A.setflags(write=False)
    copy = A.copy()
    for method in METHODS:
        r1 = ll.top_singular_values(A, 5, method=method)
        r2 = ll.top_singular_values(A, 5, method=method, rng=r1.seed)
        assert np.array_equal(r1.values, r2.values) and np.array_equal(r1.v, r2.v)
    assert np.array_equal(A, copy)


def test_bad_method():
    with pytest.raises(ValueError, match="`method` must be one of"):
        ll.top_singular_values(np.ones((4, 3)), 1, method="svd")


def test_auto_rule():
    A = np.random.default_rng(0).standard_normal((50, 40))
    assert ll.top_singular_values(A, 3, rng=0).method == "gram"
    old = config.BLOCK_GRAM_MAX_DIM
    try:
        config.BLOCK_GRAM_MAX_DIM = 39
        assert ll.top_singular_values(A, 3, rng=0).method == "block"
    finally:
        config.BLOCK_GRAM_MAX_DIM = old


def test_gram_method_refines_when_the_gram_matrix_hides_small_values():
    # float32 G = A^T A holds sigma_i^2 only to about eps32 sigma_1^2: values near 1e-3 sigma_1 lose
    # their residual in G, and block Lanczos on A itself must finish the job.
    s = np.r_[1.0, np.geomspace(1e-3, 5e-4, 7), np.full(22, 1e-5)]
    A = from_spectrum(s, 80, 30, seed=5, dtype=np.float32)
    res = ll.top_singular_values(A, 6, rng=0, method="gram")
    assert res.converged
    _check(A, 6, res, config.SPECTRUM_TOL["float32"])


# --- out of core: a .npy file read in row blocks ------------------------------------------------


def _npy(tmp_path, A):
    path = tmp_path / "A.npy"
    np.save(path, A)
    return np.load(path, mmap_mode="r")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["power-law", "gaussian"])
def test_row_blocks_against_svdvals(tmp_path, dtype, kind):
    rng = np.random.default_rng(0)
    m, n, k = 500, 60, 6
    s = _spectrum(kind, n, rng)
    A = rng.standard_normal((m, n)).astype(dtype) if s is None else from_spectrum(s, m, n, seed=1, dtype=dtype)
    mm = _npy(tmp_path, A)
    source = _block_krylov.RowBlocks.from_memmap("A", mm, rows_per_block=37)  # uneven last block
    tol = config.SPECTRUM_TOL[np.dtype(dtype).name]
    out = _block_krylov.top_triplets(source, k, tol=tol, maxiter=100, generator=np.random.default_rng(1))
    assert out["converged"]
    s_true = _true_values(A)[:k]
    assert np.all(out["lower_bound"] <= s_true + 8 * (m + n) * EPS64 * s_true[0])
    assert np.all(
        np.abs(out["values"] - s_true) <= out["error_bound"] * out["values"] + 8 * (m + n) * EPS64 * s_true[0]
    )
    # one read of the file per block product and one for the certificate
    assert out["n_passes"] == out["n_iter"] == source.n_passes


def test_out_of_core_memmap_through_top_singular_values(tmp_path, monkeypatch):
    s = np.r_[np.geomspace(8.0, 1.0, 10), np.full(30, 0.5)]
    A = from_spectrum(s, 400, 40, seed=3)
    mm = _npy(tmp_path, A)
    monkeypatch.setattr(config, "OUT_OF_CORE_FRACTION", 0.0)  # any file counts as larger than memory
    monkeypatch.setattr(config, "OUT_OF_CORE_BLOCK_BYTES", 64 * 40 * 8)  # 64 rows a block
    assert _operators.as_operator(mm).too_large_to_hold
    res = ll.top_singular_values(mm, 5, rng=0)
    assert res.method == "block" and res.converged
    assert np.allclose(res.values, s[:5], rtol=1e-8)
    assert res.n_passes == res.n_iter
    with pytest.raises(ValueError, match="`k` must be at most"):
        ll.top_singular_values(mm, 41)


def test_row_blocks_extreme_scale_and_nan(tmp_path):
    s = np.array([3.0, 2.0, 1.0, 0.5])
    A = np.ldexp(from_spectrum(s, 50, 20, seed=0), -900)
    source = _block_krylov.RowBlocks.from_memmap("A", _npy(tmp_path, A), rows_per_block=16)
    out = _block_krylov.top_triplets(source, 2, tol=1e-8, maxiter=50, generator=np.random.default_rng(0))
    assert out["converged"] and np.allclose(np.ldexp(out["values"], 900), s[:2], rtol=1e-8)
    B = A.copy()
    B[7, 3] = np.nan
    (tmp_path / "b").mkdir()
    source = _block_krylov.RowBlocks.from_memmap("A", _npy(tmp_path / "b", B), rows_per_block=16)
    with pytest.raises(ValueError, match="`A` must be finite"):
        _block_krylov.top_triplets(source, 2, tol=1e-8, maxiter=50, generator=np.random.default_rng(0))
