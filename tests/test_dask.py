"""dask arrays through the adapter: the same answers as the in-memory arrays, whatever the chunking."""

import numpy as np
import pytest

import linalg_lowrank as ll
from linalg_lowrank import _dask

da = pytest.importorskip("dask.array")


def _gaussian(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


CHUNKINGS = [(64, -1), (50, 40), (-1, 33), (17, 17)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(300, 120), (120, 300)])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_power_iteration_equals_the_in_memory_answer(shape, chunks, dtype):
    A = _gaussian(shape, dtype)
    D = da.from_array(A, chunks=chunks)
    ours = ll.power_iteration(D, rng=3)
    ref = ll.power_iteration(A, rng=3)
    truth = np.linalg.svd(A.astype(np.float64), compute_uv=False)[0]
    assert ours.converged and ours.n_passes == ours.n_iter  # one pass over the blocks per Gram product
    # both stop at residual <= 1e-10, so sigma is within residual^2-order of sigma1: 1e-12 relative
    assert abs(ours.sigma - truth) <= 1e-12 * truth and abs(ours.sigma - ref.sigma) <= 1e-12 * truth
    assert ours.u.dtype == dtype and ours.v.dtype == dtype
    np.testing.assert_allclose(np.abs(ours.u @ ref.u), 1.0, atol=1e-8)  # same vectors up to sign


def test_gram_product_is_one_pass_and_matches_numpy():
    A = _gaussian((210, 70), np.float64)
    g = _dask.DaskGram("A", da.from_array(A, chunks=(32, 16)))
    x = np.random.default_rng(1).standard_normal((1, 70))
    Y, Z = g.gram(x, np.arange(1))
    bound = 4 * 210 * np.finfo(np.float64).eps * np.abs(A).sum(axis=0).max() * np.abs(A).sum(axis=1).max()
    np.testing.assert_allclose(Y[0], A @ x[0], rtol=0, atol=bound)
    np.testing.assert_allclose(Z[0], A.T @ (A @ x[0]), rtol=0, atol=bound * np.abs(x).max())
    assert (g.n_passes, g.n_products) == (1, 2)


def test_bad_dask_input_is_named():
    with pytest.raises(ValueError, match="`A` must be finite"):
        A = _gaussian((40, 30), np.float64)
        A[3, 4] = np.nan
        ll.spectral_norm(da.from_array(A, chunks=10), rng=0)
    with pytest.raises(TypeError, match="`A` has dtype int64"):
        ll.spectral_norm(da.ones((4, 4), dtype=np.int64, chunks=2))
    with pytest.raises(ValueError, match="`A` must be a 2-D dask array"):
        ll.spectral_norm(da.ones((2, 4, 4), chunks=2))


def test_warm_start_and_gradient_on_dask():
    A = _gaussian((90, 150), np.float64, seed=2)
    D = da.from_array(A, chunks=(30, 50))
    ref = ll.power_iteration(A, rng=0)
    warm = ll.power_iteration(D, v0=ref.v)
    assert warm.converged and abs(warm.sigma - ref.sigma) <= 1e-12 * ref.sigma
    G = ll.spectral_norm_grad(D, rng=0)
    U, s, Vt = np.linalg.svd(A)
    # u1 v1^T does not depend on the signs; its error is of order the vectors' sin-theta bound
    np.testing.assert_allclose(G, np.outer(U[:, 0], Vt[0]), rtol=0, atol=1e-8)
