"""power_iteration / spectral_norm on a .npy file too large to hold: block Lanczos in row blocks (method="block").

The out-of-core decision is forced as in tests/test_block_krylov.py (``config.OUT_OF_CORE_FRACTION = 0``:
every whole-file memmap counts as larger than memory) with small row blocks, so a small file
exercises the same path as an 8 GB one. References: scipy.linalg.svdvals and numpy's SVD.
"""

import functools
import math
import warnings

import numpy as np
import pytest
import scipy.linalg

import linalg_lowrank as ll
from linalg_lowrank import _operators, _threads, config
from linalg_lowrank.results import ConvergenceWarning

from .strategies import from_spectrum

EPS64 = np.finfo(np.float64).eps
M, N = 3000, 400
#: sigma_2 / sigma_1 = 0.99: the case where every pass over the file counts
CLOSE = np.r_[1.0, 0.99, np.linspace(0.9, 0.05, N - 2)]
#: sigma_2 / sigma_1 = 0.5: converges in a few steps whatever the method (explicit methods, edge cases)
WIDE = np.r_[2.0, 1.0, np.linspace(0.9, 0.05, 38)]


@functools.lru_cache
def _close(dtype):
    """The 3000 x 400 matrix with sigma_2 / sigma_1 = 0.99, built once (read-only: tests copy what they change)."""
    with _threads.blas_single_thread():  # its QRs stall on a busy BLAS pool
        A = from_spectrum(CLOSE, M, N, seed=1, dtype=dtype)
    A.flags.writeable = False
    return A


@functools.lru_cache
def _close_svd(dtype):
    """numpy's SVD of `_close` (in float64: the float32 matrix is exact in it), computed once."""
    with _threads.blas_single_thread():
        return np.linalg.svd(_close(dtype).astype(np.float64), full_matrices=False)


@pytest.fixture
def out_of_core(monkeypatch):
    monkeypatch.setattr(config, "OUT_OF_CORE_FRACTION", 0.0)  # any file counts as larger than memory
    monkeypatch.setattr(config, "BLOCK_KRYLOV_PAGE_CACHE_FRACTION", 0.0)  # and than the page cache

    def rows_per_block(rows, cols, itemsize):
        monkeypatch.setattr(config, "OUT_OF_CORE_BLOCK_BYTES", rows * cols * itemsize)

    return rows_per_block


def _npy(tmp_path, A, name="A.npy"):
    path = tmp_path / name
    np.save(path, A)
    return path, np.load(path, mmap_mode="r")


def _rounding(m, n):
    """Relative rounding of sigma between our float64 certificate and LAPACK's svdvals."""
    return 8 * (m + n) * EPS64


def _vector_bound(res, s, m, n, dtype):
    """||x - (+-)x1|| for x = u, v: Davis-Kahan on B = A^T A, plus the rounding of the reference and of x.

    The Gram residual of v is ||B v - sigma^2 v|| = sigma^2 residual, and B's other eigenvalues are at
    most s2^2, so sin(v, v1) <= residual / (1 - (s2 / sigma)^2); u = A v / sigma inherits it
    (its component off u1 is at most s2 sin(v, v1) / sigma). For unit vectors with a nonnegative inner
    product ||x - x1|| <= sqrt(2) sin. LAPACK's vectors are off by about (m + n) eps ||A|| / (s1 - s2),
    and the returned vectors are rounded to A's dtype.
    """
    sin = res.residual / (1.0 - (s[1] / res.sigma) ** 2)
    reference = (m + n) * EPS64 * s[0] / (s[0] - s[1])
    return math.sqrt(2.0) * sin + reference + 2 * math.sqrt(max(m, n)) * np.finfo(dtype).eps


def _aligned(x, ref):
    x = np.asarray(x, dtype=np.float64)
    return np.linalg.norm(x - np.sign(x @ ref) * ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_reads_a_large_file_by_block_lanczos(tmp_path, out_of_core, dtype):
    A = _close(dtype)
    path, mm = _npy(tmp_path, A)
    out_of_core(256, N, np.dtype(dtype).itemsize)  # 12 row blocks, a short last one
    assert _operators.as_operator(mm).too_large_to_hold
    U, s, Vt = _close_svd(dtype)
    tol = 1e-8
    res = ll.power_iteration(mm, tol=tol, rng=0)
    assert res.method == "block" and res.converged and res.stop_reason == "converged"
    assert res.residual <= tol
    # sigma: within the error bound (residual / sqrt 2 <= tol) of sigma_1, and certified below it
    assert abs(res.sigma - s[0]) <= (res.error_bound + _rounding(M, N)) * s[0]
    assert res.lower_bound <= s[0] * (1 + _rounding(M, N)) and res.lower_bound <= res.sigma
    assert res.upper_bound >= s[0] and 0 < res.upper_bound_failure <= config.UPPER_BOUND_FAILURE_PROB
    assert res.u.dtype == dtype and res.v.dtype == dtype and isinstance(res.sigma, float)
    assert res.u.shape == (M,) and res.v.shape == (N,)
    bound = _vector_bound(res, s, M, N, dtype)
    assert _aligned(res.u, U[:, 0]) <= bound
    assert _aligned(res.v, Vt[0]) <= bound
    assert 0.0 <= res.sin_theta_bound <= 1.0 and abs(res.ratio_estimate - s[1] / s[0]) <= 1e-3
    # one read of the file per block product, the certificate included; a block holds many vectors
    assert res.n_passes >= res.n_iter and res.n_matvecs > 2 * res.n_iter
    assert len(res.history) >= 1 and res.seed is not None
    np.testing.assert_array_equal(np.load(path), A)  # the file is unchanged


def test_auto_keeps_single_vector_lanczos_for_a_file_the_page_cache_keeps(tmp_path, out_of_core, monkeypatch):
    A = _close(np.float32)
    _, mm = _npy(tmp_path, A)
    out_of_core(512, N, 4)
    monkeypatch.setattr(config, "BLOCK_KRYLOV_PAGE_CACHE_FRACTION", 0.5)
    op = _operators.as_operator(mm)
    assert op.too_large_to_hold and not op.rereads_from_disk  # 4.8 MB: far below half of MemAvailable
    s1 = _close_svd(np.float32)[1][0]
    res = ll.power_iteration(mm, tol=1e-6, rng=0)
    assert res.method != "block" and res.converged
    assert abs(res.sigma - s1) <= (res.error_bound + _rounding(M, N)) * s1
    # the same file when the page cache could not keep it: block Lanczos
    monkeypatch.setattr(_operators, "available_memory", lambda: 2 * mm.nbytes - 1)
    assert _operators.as_operator(mm).rereads_from_disk
    assert ll.power_iteration(mm, tol=1e-6, rng=0).method == "block"


def test_available_memory_is_a_positive_byte_count_at_most_the_ram():
    assert 0 < _operators.available_memory() <= _operators.physical_memory()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_needs_fewer_passes_than_single_vector_lanczos(tmp_path, out_of_core, dtype):
    A = _close(dtype)
    _, mm = _npy(tmp_path, A)
    out_of_core(512, N, np.dtype(dtype).itemsize)
    s1 = _close_svd(dtype)[1][0]
    for tol in (1e-6, 1e-9):
        block = ll.power_iteration(mm, tol=tol, rng=0)
        single = ll.power_iteration(mm, tol=tol, rng=0, method="lanczos")
        assert block.method == "block" and single.method == "lanczos"
        assert block.converged and single.converged
        assert block.n_passes < single.n_passes, (tol, block.n_passes, single.n_passes)
        for res in (block, single):
            assert abs(res.sigma - s1) <= (res.error_bound + _rounding(M, N)) * s1
    value = ll.spectral_norm(mm, rtol=1e-6, rng=0, return_info=True)
    single = ll.spectral_norm(mm, rtol=1e-6, rng=0, method="lanczos", return_info=True)
    assert value.method == "block" and value.n_passes < single.n_passes


@pytest.mark.parametrize("rtol", [1e-4, 1e-7, 1e-10])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spectral_norm_value_stop_on_the_residual_bound(tmp_path, out_of_core, dtype, rtol):
    A = _close(dtype)
    _, mm = _npy(tmp_path, A)
    out_of_core(1024, N, np.dtype(dtype).itemsize)
    s1 = _close_svd(dtype)[1][0]
    res = ll.spectral_norm(mm, rtol=rtol, rng=0, return_info=True)
    assert res.method == "block" and res.converged
    # the residual bound: a relative Gram residual r puts sigma within r / 2 of a singular value
    assert res.residual <= 2 * rtol
    assert abs(res.sigma - s1) <= (rtol + _rounding(M, N)) * s1
    value = ll.spectral_norm(mm, rtol=rtol, rng=0)
    assert isinstance(value, float) and value == res.sigma


def test_wide_file_and_warm_start(tmp_path, out_of_core):
    m, n = 40, 600  # wide: the Gram side read from the file is the long one
    A = from_spectrum(WIDE, m, n, seed=4)
    _, mm = _npy(tmp_path, A)
    out_of_core(7, n, 8)
    U, s, Vt = scipy.linalg.svd(A, full_matrices=False)
    cold = ll.power_iteration(mm, tol=1e-10, rng=0)
    assert cold.method == "block" and cold.converged and cold.u.shape == (m,) and cold.v.shape == (n,)
    assert abs(cold.sigma - s[0]) <= (cold.error_bound + _rounding(m, n)) * s[0]
    bound = _vector_bound(cold, s, m, n, np.float64)
    assert _aligned(cold.u, U[:, 0]) <= bound and _aligned(cold.v, Vt[0]) <= bound
    warm = ll.power_iteration(mm, tol=1e-10, rng=0, v0=Vt[0] + 1e-3 * Vt[1])
    assert warm.method == "block" and warm.converged and warm.n_passes <= cold.n_passes
    assert abs(warm.sigma - s[0]) <= (warm.error_bound + _rounding(m, n)) * s[0]
    # the other columns of the start block are random: the run has a seed and a probabilistic bound
    assert warm.seed is not None and warm.upper_bound >= s[0]


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_explicit_single_vector_method_still_reads_the_file(tmp_path, out_of_core, method):
    A = from_spectrum(WIDE, 500, 40, seed=5, dtype=np.float32)
    _, mm = _npy(tmp_path, A)
    out_of_core(64, 40, 4)
    s = scipy.linalg.svdvals(A.astype(np.float64))
    res = ll.power_iteration(mm, tol=1e-8, rng=0, method=method)
    assert res.method == method and res.converged
    assert abs(res.sigma - s[0]) <= (res.error_bound + _rounding(500, 40)) * s[0]
    assert ll.spectral_norm(mm, rng=0, method=method) == pytest.approx(s[0], rel=1e-9)


def test_block_on_arrays_in_memory_and_stacks():
    A = from_spectrum(WIDE, 60, 40, seed=6)
    s = scipy.linalg.svdvals(A)[0]
    for X in (A, A.T, np.asfortranarray(A), A[::2]):
        res = ll.power_iteration(X, tol=1e-10, rng=0, method="block")
        truth = scipy.linalg.svdvals(X)[0]
        assert res.method == "block" and res.converged
        assert abs(res.sigma - truth) <= (res.error_bound + _rounding(*X.shape)) * truth
        np.testing.assert_allclose(np.linalg.norm(X @ res.v), res.sigma, rtol=1e-12)
    stack = np.stack([A, 3.0 * A]).astype(np.float32)
    res = ll.power_iteration(stack, tol=1e-6, rng=0, method="block")
    assert res.sigma.shape == (2,) and res.u.shape == (2, 60) and res.v.shape == (2, 40)
    assert res.u.dtype == np.float32 and np.all(res.converged) and list(res.stop_reason) == ["converged"] * 2
    np.testing.assert_allclose(res.sigma, [s, 3 * s], rtol=1e-6)


def test_zero_file_maxiter_and_nan(tmp_path, out_of_core):
    out_of_core(16, 30, 8)
    _, Z = _npy(tmp_path, np.zeros((50, 30)), "zero.npy")
    res = ll.power_iteration(Z, rng=0)
    assert res.method == "block" and res.sigma == 0.0 and res.converged and res.stop_reason == "zero"
    assert np.linalg.norm(res.u) == 1.0 and np.linalg.norm(res.v) == 1.0
    A = from_spectrum(CLOSE[:100], 200, 100, seed=7)  # wider than a block: one block product cannot finish
    _, mm = _npy(tmp_path, A, "close.npy")
    with pytest.warns(ConvergenceWarning, match="did not reach tol") as caught:
        res = ll.power_iteration(mm, tol=1e-12, maxiter=1, rng=0)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert not res.converged and res.stop_reason == "maxiter" and res.n_iter == 2  # the product and the check
    assert res.lower_bound <= scipy.linalg.svdvals(A)[0] * (1 + _rounding(200, 100))
    B = A.copy()
    B[131, 4] = np.inf
    _, bad = _npy(tmp_path, B, "bad.npy")
    with pytest.raises(ValueError, match="`A` must be finite"):
        ll.spectral_norm(bad, rng=0)


def test_extreme_scale_file(tmp_path, out_of_core):
    A = from_spectrum(WIDE, 80, 40, seed=8)
    s = scipy.linalg.svdvals(A)
    out_of_core(16, 40, 8)
    for e in (-700, 600):
        _, mm = _npy(tmp_path, np.ldexp(A, e), f"scaled{e}.npy")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = ll.power_iteration(mm, rng=0)
        assert res.method == "block" and res.converged
        assert abs(math.ldexp(res.sigma, -e) - s[0]) <= (res.error_bound + _rounding(80, 40)) * s[0]
        assert math.ldexp(res.upper_bound, -e) >= s[0]


def test_best_rank1_and_grad_of_a_large_file(tmp_path, out_of_core):
    A = from_spectrum(WIDE, 90, 40, seed=9)
    _, mm = _npy(tmp_path, A)
    out_of_core(16, 40, 8)
    U, s, Vt = scipy.linalg.svd(A, full_matrices=False)
    R1 = np.asarray(ll.best_rank1(mm, rng=0))
    tol = 1e3 * (90 + 40) * EPS64 * s[0]
    np.testing.assert_allclose(R1, s[0] * np.outer(U[:, 0], Vt[0]), rtol=0, atol=tol)
    G = np.asarray(ll.spectral_norm_grad(mm, rng=0))
    np.testing.assert_allclose(G, np.outer(U[:, 0], Vt[0]), rtol=0, atol=tol / s[0])


def test_block_names_a_nonfinite_entry_by_its_index_in_a():
    S = from_spectrum(WIDE, 50, 40, seed=11)[None].repeat(3, axis=0)
    S[1, 3, 4] = np.inf
    with pytest.raises(ValueError, match=r"`A` must be finite, got inf at index \(1, 3, 4\)"):
        ll.spectral_norm(S, method="block")
    with pytest.raises(ValueError, match=r"`A` must be finite, got inf at index \(4, 3\)"):
        ll.power_iteration(S[1].T, method="block")


def test_block_refuses_matrix_free_inputs():
    import scipy.sparse

    with pytest.raises(TypeError, match=r'power_iteration\(method="block"\) needs its entries'):
        ll.power_iteration(scipy.sparse.random(20, 10, density=0.5, random_state=0), method="block")
    with pytest.raises(ValueError, match="`method` must be one of"):
        ll.spectral_norm(np.eye(3), method="blocks")


@pytest.mark.parametrize("rows", [slice(None), slice(7, None), slice(333, 1900)])
def test_row_slices_of_a_file_are_read_at_their_offset(tmp_path, out_of_core, rows):
    # a row slice of a memmap keeps its parent's ``offset``: reading from it would take the file's first rows
    A = from_spectrum(WIDE, 2000, 40, seed=10)
    _, mm = _npy(tmp_path, A)
    out_of_core(100, 40, 8)
    part = mm[rows]
    assert _operators.as_operator(part).too_large_to_hold
    s = scipy.linalg.svdvals(A[rows])
    res = ll.power_iteration(part, tol=1e-10, rng=0)
    assert res.method == "block" and res.converged
    assert abs(res.sigma - s[0]) <= (res.error_bound + _rounding(*part.shape)) * s[0]
    np.testing.assert_allclose(np.linalg.norm(A[rows] @ res.v), res.sigma, rtol=1e-12)


@pytest.mark.parametrize("rows_per_block", [1000, 64, 7])
def test_row_blocks_read_ahead_yields_the_file_in_order(tmp_path, rows_per_block):
    from linalg_lowrank import _block_krylov

    A = np.arange(1000 * 30, dtype=np.float64).reshape(1000, 30)
    _, mm = _npy(tmp_path, A)
    source = _block_krylov.RowBlocks.from_memmap("A", mm, rows_per_block=rows_per_block)
    for _ in range(2):  # the buffers are reused from pass to pass
        parts = [(lo, hi, block.copy()) for lo, hi, block in source._blocks()]
        np.testing.assert_array_equal(np.concatenate([b for _, _, b in parts]), A)
        assert [lo for lo, _, _ in parts] == list(range(0, 1000, rows_per_block))
    assert source.n_passes == 2
    early = source._blocks()
    next(early)
    early.close()  # a pass left early: no pass counted, the reader stopped before the file closed
    assert source.n_passes == 2
    short = _block_krylov.RowBlocks("A", source.path, (1001, 30), np.float64, offset=source.offset, rows_per_block=64)
    with pytest.raises(ValueError, match="shorter than its shape says"):
        list(short._blocks())
