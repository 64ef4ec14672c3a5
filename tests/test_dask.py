"""dask arrays through the adapter: the same answers as the in-memory arrays, whatever the chunking."""

import os
import signal
import time
import types

import numpy as np
import pytest

import linalg_lowrank as ll
from linalg_lowrank import _dask, _operators

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
    B = ll.best_rank1(D, rng=0)
    U, s, Vt = np.linalg.svd(A)
    # as large as the input: distributed, chunked like it
    assert isinstance(G, da.Array) and G.chunks == D.chunks and isinstance(B, da.Array) and B.chunks == D.chunks
    # u1 v1^T does not depend on the signs; its error is of order the vectors' sin-theta bound
    np.testing.assert_allclose(np.asarray(G), np.outer(U[:, 0], Vt[0]), rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(B), s[0] * np.outer(U[:, 0], Vt[0]), rtol=0, atol=1e-8 * s[0])


@pytest.mark.parametrize("chunks", [(100, -1), (64, 48)])
@pytest.mark.parametrize("tol", [None, 1e-6])
def test_randomized_svd_on_dask_equals_in_memory(chunks, tol):
    rng = np.random.default_rng(4)
    U0 = np.linalg.qr(rng.standard_normal((400, 30)))[0]
    V0 = np.linalg.qr(rng.standard_normal((150, 30)))[0]
    s0 = 2.0 ** -np.arange(30)
    A = (U0 * s0) @ V0.T
    D = da.from_array(A, chunks=chunks)
    r = None if tol else 8
    ours = ll.randomized_svd(D, r, tol=tol, rng=5)
    ref = ll.randomized_svd(A, r, tol=tol, rng=5)
    assert isinstance(ours.U, da.Array) and ours.U.chunks[0] == D.chunks[0]
    assert ours.rank == ref.rank and ours.n_matvecs == ref.n_matvecs
    # same sketch, products summed in another order: the singular values agree to the rounding of
    # the products, a few max(m, n) eps ||A||_2 (Weyl), and each is within the error bound of the truth
    np.testing.assert_allclose(ours.s, ref.s, rtol=0, atol=10 * max(A.shape) * np.finfo(float).eps * s0[0])
    np.testing.assert_allclose(ours.s, s0[: ours.rank], rtol=0, atol=ours.error_bound)
    err = np.linalg.norm(A - np.asarray(ours.U) * ours.s @ ours.Vt)
    assert err <= ours.error_bound


@pytest.mark.parametrize("shape", [(300, 80), (80, 300)])
def test_best_rank_on_dask_equals_scipy(shape):
    A = _gaussian(shape, np.float64, seed=7)
    D = da.from_array(A, chunks=(37, 41))
    res = ll.best_rank(D, 5)
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    # the factor along the long side stays distributed, the short one is computed
    assert isinstance(res.U if shape[0] >= shape[1] else res.Vt, da.Array)
    eps_a = 10 * max(shape) * np.finfo(float).eps * s[0]
    np.testing.assert_allclose(res.s, s[:5], rtol=0, atol=eps_a)
    low_rank = np.asarray(res.U) * res.s @ np.asarray(res.Vt)
    np.testing.assert_allclose(low_rank, (U[:, :5] * s[:5]) @ Vt[:5], rtol=0, atol=1e-10)
    assert abs(res.error_bound - np.sqrt(np.sum(s[5:] ** 2))) <= eps_a and abs(res.error_bound_spectral - s[5]) <= eps_a
    bad = A.copy()
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="`A` must be finite"):
        ll.best_rank(da.from_array(bad, chunks=50), 2)


@pytest.mark.parametrize("method", ["hutchinson", "xdiag", "diag++"])
def test_hutchinson_on_symmetric_dask_equals_in_memory(method):
    rng = np.random.default_rng(8)
    Q = np.linalg.qr(rng.standard_normal((120, 120)))[0]
    A = (Q * np.arange(1, 121) ** -1.0) @ Q.T
    A = (A + A.T) / 2
    D = da.from_array(A, chunks=(50, 40))
    ours = ll.hutchinson_diagonal(D, n_matvecs=40, method=method, rng=2)
    ref = ll.hutchinson_diagonal(A, n_matvecs=40, method=method, rng=2)
    bound = 8 * 120 * 40 * np.finfo(float).eps * np.linalg.norm(np.abs(A), 2)  # product rounding
    np.testing.assert_allclose(ours.diagonal, ref.diagonal, rtol=0, atol=bound)
    assert ours.n_matvecs == ref.n_matvecs
    t = ll.hutchinson_trace(D, n_matvecs=40, method="xtrace", rng=2)
    assert abs(t.trace - ll.hutchinson_trace(A, n_matvecs=40, method="xtrace", rng=2).trace) <= bound
    with pytest.raises(ValueError, match="square"):
        ll.hutchinson_trace(da.ones((4, 5), chunks=2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, chunks", [((300, 40), (64, 40)), ((40, 300), (40, 64)), ((120, 90), (50, 30))])
def test_msign_on_dask_equals_in_memory(shape, chunks, dtype):
    A = _gaussian(shape, dtype, seed=9)
    D = da.from_array(A, chunks=chunks)
    ours = ll.msign(D, steps=8, coefficients="polar_express", return_info=True)
    ref = ll.msign(A, steps=8, coefficients="polar_express", return_info=True)
    assert isinstance(ours.Q, da.Array) and ours.Q.chunks == D.chunks
    Q = np.asarray(ours.Q)
    assert Q.dtype == dtype
    # the same steps, Gram products summed in another order: equal to the rounding the
    # orthogonality bound already accounts for, and both near U V^T
    tol = 10 * max(shape) * np.finfo(dtype).eps
    np.testing.assert_allclose(Q, ref.Q, rtol=0, atol=tol + ref.orthogonality)
    assert abs(ours.scale - ref.scale) <= tol * ref.scale
    Q64 = Q.astype(np.float64)
    small = Q64.T @ Q64 if shape[0] >= shape[1] else Q64 @ Q64.T
    assert np.linalg.norm(small - np.eye(min(shape))) <= ours.orthogonality  # the reported bound holds
    U, _, Vt = np.linalg.svd(A.astype(np.float64), full_matrices=False)
    np.testing.assert_allclose(Q, U @ Vt, rtol=0, atol=np.sqrt(ours.orthogonality) + tol)


def test_msign_on_dask_zero_and_nan():
    Z = ll.msign(da.zeros((30, 20), chunks=10), return_info=True)
    assert np.all(np.asarray(Z.Q) == 0) and Z.scale == 0.0
    A = _gaussian((30, 20), np.float64)
    A[2, 3] = np.nan
    with pytest.raises(ValueError, match="`A` must be finite"):
        ll.msign(da.from_array(A, chunks=10))


def test_out_of_core_memmap_goes_through_row_blocks(tmp_path, monkeypatch):
    from linalg_lowrank import config

    A = _gaussian((2000, 300), np.float32, seed=11)
    path = tmp_path / "w.npy"
    np.save(path, A)
    mm = np.load(path, mmap_mode="r")
    monkeypatch.setattr(config, "OUT_OF_CORE_FRACTION", 0.0)  # every memmap counts as out of core
    monkeypatch.setattr(config, "OUT_OF_CORE_BLOCK_BYTES", 300 * 4 * 256)  # 256-row blocks
    assert _dask.is_out_of_core(mm)
    # the single-vector engine through dask's row blocks ("auto" takes block Lanczos for such a file:
    # tests/test_out_of_core_spectral.py)
    ours = ll.power_iteration(mm, rng=0, method="lanczos")
    truth = np.linalg.svd(A.astype(np.float64), compute_uv=False)[0]
    assert ours.converged and abs(ours.sigma - truth) <= 1e-12 * truth
    assert ours.n_passes == ours.n_iter  # one read of the file per Gram product


@pytest.mark.parametrize("rows", [slice(None), slice(7, None), slice(333, 1900)])
def test_out_of_core_rows_of_a_memmap_are_read_at_their_offset(tmp_path, monkeypatch, rows):
    # a row slice of a memmap keeps the parent's ``offset`` attribute: reading from it would
    # take the first rows of the file instead of the slice's
    from linalg_lowrank import config

    A = _gaussian((2000, 300), np.float32, seed=12)
    path = tmp_path / "w.npy"
    np.save(path, A)
    mm = np.load(path, mmap_mode="r")[rows]
    monkeypatch.setattr(config, "OUT_OF_CORE_FRACTION", 0.0)
    monkeypatch.setattr(config, "OUT_OF_CORE_BLOCK_BYTES", 300 * 4 * 100)  # 100-row blocks, a short last one
    np.testing.assert_array_equal(_dask.from_memmap(mm, 100).compute(), A[rows])
    g, _ = _operators.as_gram(mm)
    x = np.random.default_rng(1).standard_normal((1, 300))
    Y, Z = g.gram(x, np.arange(1))
    B = A[rows].astype(np.float64)
    bound = 4 * B.shape[0] * np.finfo(np.float32).eps * np.abs(B).sum(axis=0).max() * np.abs(B).sum(axis=1).max()
    np.testing.assert_allclose(Y[0], B @ x[0], rtol=0, atol=bound)
    np.testing.assert_allclose(Z[0], B.T @ (B @ x[0]), rtol=0, atol=bound * np.abs(B).max() * np.abs(x).max())
    assert g.n_passes == 1


_RSS_SCRIPT = """
import sys, warnings, numpy as np
import linalg_lowrank as ll
from linalg_lowrank import config
warnings.simplefilter("ignore")  # 8 products do not converge; only the memory is measured
config.OUT_OF_CORE_FRACTION = 0.0 if sys.argv[2] == "blocks" else 1e9
config.OUT_OF_CORE_BLOCK_BYTES = 1 << 20
mm = np.load(sys.argv[1], mmap_mode="r")
ll.power_iteration(mm[:64], rng=0, method="power")  # compile and import everything before the baseline

def rss(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = rss("VmRSS:")
res = ll.power_iteration(mm, rng=0, maxiter=8, method="power")
print(rss("VmHWM:") - before)
"""


def test_out_of_core_peak_memory_is_a_few_blocks(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "big.npy"
    rows, cols = 8192, 1024  # 32 MiB of float32, read in 1 MiB blocks
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, cols))
    for lo in range(0, rows, 4096):
        mm[lo : lo + 4096] = np.random.default_rng(lo).standard_normal((4096, cols), dtype=np.float32)
    mm.flush()
    del mm
    grown = {}
    for mode in ("blocks", "mapped"):
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path), mode], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        grown[mode] = int(out.stdout.split()[-1])
    # blocks in flight: two scheduler threads, each a block and its float64 products: well under 8 blocks
    assert grown["blocks"] <= 8 << 20, grown
    assert grown["mapped"] >= 16 << 20, grown  # the mapped path keeps the file's pages: the test can fail


@pytest.mark.parametrize("scale", [2.0**-1000, 2.0**-300, 2.0**300, 2.0**1000])
def test_dask_inputs_at_the_ends_of_the_float_range(scale):
    A = _gaussian((120, 60), np.float64, seed=12)
    D = da.from_array(A, chunks=(40, 60)) * scale
    truth = np.linalg.svd(A, compute_uv=False)
    sigma = ll.spectral_norm(D, rng=0)
    assert abs(sigma / scale - truth[0]) <= 1e-12 * truth[0]
    res = ll.randomized_svd(D, 3, rng=0)
    np.testing.assert_allclose(res.s / scale, truth[:3], rtol=0, atol=res.error_bound / scale)


@pytest.mark.parametrize(
    "call",
    [
        lambda D: ll.power_iteration(D, rng=0),
        lambda D: ll.randomized_svd(D, 3, rng=0),
        lambda D: ll.best_rank(D, 2),
        lambda D: ll.msign(D),
        lambda D: ll.hutchinson_trace(D[:40, :40] + D[:40, :40].T, n_matvecs=10, rng=0),
    ],
)
def test_non_finite_dask_entries_are_named(call):
    A = _gaussian((60, 40), np.float64)
    A[3, 4] = np.nan
    with pytest.raises(ValueError, match="`A` must be finite"):
        call(da.from_array(A, chunks=20))


def test_blocks_gathered_on_few_workers_are_spread_in_equal_contiguous_runs():
    futures = [types.SimpleNamespace(key=f"b{i}") for i in range(8)]
    nthreads = {"w1": 1, "w2": 1}
    all_on_w2 = {f"b{i}": ("w2",) for i in range(8)}
    held = _dask._groups_where_held(futures, all_on_w2, nthreads)
    assert held == {("w2", 0): list(range(8))} and _dask._unbalanced(held, 8, nthreads)
    spread = _dask._balanced_groups(futures, all_on_w2, nthreads)
    assert sorted(spread.values()) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert {w for w, _ in spread} == {"w1", "w2"}
    # a run goes where most of its blocks already are: here the second half is on w1
    halves = {f"b{i}": ("w2",) if i < 4 else ("w1",) for i in range(8)}
    assert not _dask._unbalanced(_dask._groups_where_held(futures, halves, nthreads), 8, nthreads)
    mostly = {**halves, "b3": ("w1",)}  # w1 holds 5 of 8 blocks: within 1.5 times its share of 4
    assert not _dask._unbalanced(_dask._groups_where_held(futures, mostly, nthreads), 8, nthreads)
    placed = _dask._balanced_groups(futures, mostly, {"w1": 1, "w2": 1})
    assert placed[("w1", 0)] == [4, 5, 6, 7] and placed[("w2", 0)] == [0, 1, 2, 3]
    # one worker thread: nothing to balance
    assert not _dask._unbalanced(held, 8, {"w2": 1})


def _randomized_svd_on_the_workers(D, A, monkeypatch):
    """randomized_svd of D through `_dask.RowBasis` equals the in-memory one of A within rounding."""
    steps = []
    real_step = _dask.RowBasis.range_basis
    monkeypatch.setattr(_dask.RowBasis, "range_basis", lambda self, X: (steps.append(1), real_step(self, X))[1])
    ours = ll.randomized_svd(D, 6, rng=2)
    ref = ll.randomized_svd(A, 6, rng=2)
    assert len(steps) == ours.n_iter + 1  # the sketch and each power step ran on the workers
    assert isinstance(ours.U, da.Array) and ours.U.chunks[0] == D.chunks[0]
    assert (ours.rank, ours.n_iter, ours.n_matvecs, ours.error_bound_failure) == (
        ref.rank,
        ref.n_iter,
        ref.n_matvecs,
        ref.error_bound_failure,
    )
    s = np.linalg.svd(A, compute_uv=False)
    np.testing.assert_allclose(ours.s, ref.s, rtol=0, atol=10 * max(A.shape) * np.finfo(float).eps * s[0])
    err = np.linalg.norm(A - np.asarray(ours.U) * ours.s @ ours.Vt)
    assert np.sqrt(np.sum(s[6:] ** 2)) <= err <= ours.error_bound
    np.testing.assert_allclose(np.asarray(ours.U).T @ np.asarray(ours.U), np.eye(6), rtol=0, atol=1e-12)
    bad = A.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="`A` must be finite"):
        ll.randomized_svd(da.from_array(bad, chunks=D.chunks).persist(), 6, rng=2)


def test_products_on_a_cluster_equal_the_in_memory_ones_and_survive_a_lost_worker(monkeypatch):
    # 2 worker processes on 127.0.0.1: persisted blocks are multiplied where they live (one actor
    # per worker); when a worker leaves, the products move to tasks that follow the data
    distributed = pytest.importorskip("distributed")
    A = _gaussian((400, 96), np.float64, seed=7)
    x = np.random.default_rng(8).standard_normal((1, 96))
    eps = np.finfo(np.float64).eps
    bound = 4 * 400 * eps * np.abs(A).sum(axis=0).max() * np.abs(A).sum(axis=1).max() * np.abs(x).max()
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        D = da.from_array(A, chunks=(50, -1)).persist()
        g = _dask.DaskGram("A", D)
        assert g._products.actors is not None  # the fast path is the one measured here
        Y, Z = g.gram(x, np.arange(1))
        np.testing.assert_allclose(Y[0], A @ x[0], rtol=0, atol=bound)
        np.testing.assert_allclose(Z[0], A.T @ (A @ x[0]), rtol=0, atol=bound * np.abs(A).max())
        ours = ll.power_iteration(D, rng=3)
        ref = ll.power_iteration(A, rng=3)
        assert ours.converged and abs(ours.sigma - ref.sigma) <= 1e-12 * ref.sigma
        # every block reported on one worker (as a compute() can leave them): the products are spread
        # over both workers, the actors given the blocks they lack
        workers = set(client.scheduler_info()["workers"])
        first = min(workers)
        real_who_has = client.who_has
        client.who_has = lambda futures: {k: (first,) for k in real_who_has(futures)}
        try:
            g1 = _dask.DaskGram("A", D)
            _randomized_svd_on_the_workers(D, A, monkeypatch)  # its tasks bring the blocks they lack
        finally:
            client.who_has = real_who_has
        assert {w for (w, _), _ in g1._products.groups} == workers and g1._products.actors is not None
        _, Z1 = g1.gram(x, np.arange(1))
        np.testing.assert_allclose(Z1[0], A.T @ (A @ x[0]), rtol=0, atol=bound * np.abs(A).max())
        _randomized_svd_on_the_workers(D, A, monkeypatch)
        # chunked by columns only: the rows are cut into a block per worker thread
        by_columns = da.from_array(A, chunks=(-1, 32)).persist()
        assert _dask.RowBasis.on_cluster(by_columns).offsets.tolist() == [0, 200, 400]
        _randomized_svd_on_the_workers(by_columns, A, monkeypatch)
        # one worker process is killed: its blocks and its actor are lost; the next product falls
        # back to tasks, and dask recomputes the lost blocks from their lineage
        victim = sorted(client.scheduler_info()["workers"])[0]
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while victim in client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        Y2, Z2 = g.gram(x, np.arange(1))
        assert g._products.actors is None
        np.testing.assert_allclose(Z2[0], Z[0], rtol=0, atol=bound * np.abs(A).max())
        np.testing.assert_allclose(Y2, Y, rtol=0, atol=2 * bound)  # another process: rounding only
        _randomized_svd_on_the_workers(D, A, monkeypatch)  # the lost blocks come back from their lineage


def test_a_block_held_by_several_workers_goes_to_the_least_loaded():
    futures = [types.SimpleNamespace(key=f"b{i}") for i in range(8)]
    nthreads = {"w1": 1, "w2": 1}
    # a computation left block 6 on both workers and moved block 7 to w1: w1 holds 0-3 and 7 alone
    holders = {f"b{i}": ("w1",) if i < 4 or i == 7 else ("w2",) for i in range(8)}
    holders["b6"] = ("w1", "w2")
    groups = _dask._groups_where_held(futures, holders, nthreads)
    assert groups == {("w1", 0): [0, 1, 2, 3, 7], ("w2", 0): [4, 5, 6]}
    holders["b5"] = ("w2", "w1")  # listed order does not matter: w2 has fewer sole blocks
    assert _dask._groups_where_held(futures, holders, nthreads) == groups


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_max_min_and_sum_of_squares_in_one_read_match_numpy(dtype, order):
    from linalg_lowrank._scaling import SUMSQ_CHUNK

    A = np.asarray(_gaussian((700, 900), dtype, seed=13) * 3.0, order=order)
    D = da.from_array(A, chunks=(300, 400))
    hi, lo, sumsq = _dask.max_min_sumsq(D)
    A64 = A.astype(np.float64)
    assert (hi, lo) == (A64.max(), A64.min())
    # summed in float64 whatever the dtype, to the bound the exact remainder of randomized_svd relies on
    assert abs(sumsq - np.sum(A64**2)) <= SUMSQ_CHUNK * np.finfo(np.float64).eps * np.sum(A64**2)
    A[650, 3] = np.nan
    hi, lo, _ = _dask.max_min_sumsq(da.from_array(A, chunks=(300, 400)))
    assert np.isnan(hi) and np.isnan(lo)
