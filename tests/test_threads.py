"""The thread policy: small problems keep numba's pool asleep, and every setting is restored."""

import numba
import numpy as np
import pytest

import linalg_lowrank as ll
from linalg_lowrank import _threads, config


def test_small_problems_run_on_the_calling_thread_and_threads_are_restored():
    before = numba.get_num_threads()
    with _threads.numba_threads_for(config.PARALLEL_MIN_ENTRIES - 1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with _threads.numba_threads_for(config.PARALLEL_MIN_ENTRIES):
        assert numba.get_num_threads() == before
    with pytest.raises(RuntimeError), _threads.numba_threads_for(0):
        raise RuntimeError  # restored on the error path too
    assert numba.get_num_threads() == before


def test_blas_single_thread_limits_and_restores():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    before = [p["num_threads"] for p in blas]
    with _threads.single_threaded():
        inside = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert all(n == 1 for n in inside) and numba.get_num_threads() == 1
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"] == before


def test_weight_decay_of_a_small_matrix_matches_numpy_on_one_thread():
    W = np.random.default_rng(0).standard_normal((64, 65))
    v = np.linalg.svd(W)[2][0]
    out, _ = ll.spectral_weight_decay(W, 0.25, v=v)
    ref = W - 0.25 * np.outer(W @ v, v)
    np.testing.assert_allclose(out, ref, rtol=0, atol=4 * 65 * np.finfo(float).eps * np.abs(W).max())


def test_iterative_solves_below_the_threshold_run_on_the_calling_thread():
    threshold = config.PARALLEL_SOLVE_MIN_ENTRIES
    assert threshold > config.PARALLEL_MIN_ENTRIES  # a solve synchronizes per product, a pass once
    assert _threads.solve_chunks(384, 1536) == 1  # a GPT layer: the interleaved loop of bench/
    assert _threads.solve_chunks(1, threshold - 1) == 1
    assert _threads.solve_chunks(threshold // 2048, 2048) == numba.get_num_threads()
    assert _threads.solve_chunks(1, threshold) == 1  # never more chunks than rows


@pytest.mark.parametrize("threshold", [1, 1 << 60])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spectral_norm_is_the_same_on_one_thread_and_on_the_pool(monkeypatch, threshold, dtype):
    monkeypatch.setattr(config, "PARALLEL_SOLVE_MIN_ENTRIES", threshold)
    A = np.random.default_rng(1).standard_normal((300, 200)).astype(dtype)
    ref = np.linalg.svd(A.astype(np.float64), compute_uv=False)[0]
    rtol = 10 * 300 * np.finfo(dtype).eps
    assert abs(ll.spectral_norm(A, rng=0) - ref) <= rtol * ref
