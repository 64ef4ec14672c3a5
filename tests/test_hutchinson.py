"""Trace and diagonal estimators against dense numpy references and naive leave-one-out loops."""

import warnings

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from linalg_lowrank import _hutchinson_kernels, _operators, config, hutchinson
from linalg_lowrank.hutchinson import (
    HutchinsonAccumulator,
    _cholqr2,
    _Exchangeable,
    _exchangeable_stderr,
    _leave_one_out_dirs,
    _orth_new,
    _probes,
    _xdiag_cross,
    _xdiag_cross_qr,
    _xdiag_probe_estimates,
    _xtrace_deleted,
    _xtrace_deleted_qr,
    _xtrace_ests,
    hessian_operator,
    hutchinson_diagonal,
    hutchinson_trace,
)
from linalg_lowrank.results import ConvergenceWarning

from . import reference
from .strategies import random_orthogonal

EPS = np.finfo(np.float64).eps


def _product_rounding_bound(A, k):
    """How far two float64 runs of an estimator from k products with A may differ by rounding alone.

    Each product entry is a sum of n terms, so two BLAS kernels that order it differently differ by
    at most 2 n eps (|A| |x|)_i; the estimators combine k such products with O(1) weights
    (orthonormal bases, unit-variance probes). The bound n k eps || |A| ||_2 * 8 covers that with
    room for the O(k^2 eps) of the small k x k algebra, and is still 1e4 below the estimators' errors.
    """
    A = np.abs(np.asarray(A, dtype=np.float64))
    return 8 * A.shape[0] * k * EPS * np.linalg.norm(A, 2)


DIAG_METHODS = ("hutchinson", "diag++", "xdiag", "auto")
TRACE_METHODS = ("hutchinson", "hutch++", "xtrace", "auto")


def spectral_matrix(n, power, seed=0, rank=None):
    """U diag(i^-power) U^T with Haar U; the first ``rank`` eigenvalues only when given."""
    rng = np.random.default_rng(seed)
    k = n if rank is None else rank
    U = random_orthogonal(rng, n, k)
    lam = np.arange(1, k + 1, dtype=float) ** -power
    return (U * lam) @ U.T


def dominant_matrix(n, seed=0):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, n)) * 0.02 / np.sqrt(n)
    return (B + B.T) / 2 + np.diag(1.0 + rng.random(n))


# -- naive references ----------------------------------------------------------------------------


def naive_probe_estimates(A, Omega):
    """The leave-one-out estimates of XTrace (k,) and XDiag (n, k) of each probe, by their definitions:
    an explicit QR of Y without column i for every i."""
    n, k = Omega.shape
    Y = A @ Omega
    tr, dg = np.zeros(k), np.zeros((n, k))
    for i in range(k):
        Qi = np.linalg.qr(np.delete(Y, i, axis=1))[0]
        Pi = Qi @ Qi.T
        P = np.eye(n) - Pi
        w = Omega[:, i]
        tr[i] = np.trace(Pi @ A @ Pi) + w @ P @ A @ P @ w
        dg[:, i] = np.diag(Pi @ A) + w * (P @ A @ w)
    return tr, dg


def naive_exchangeable(A, Omega):
    """XTrace and XDiag by their definitions: the means of `naive_probe_estimates`."""
    tr, dg = naive_probe_estimates(A, Omega)
    return tr.mean(), dg.mean(axis=1)


def naive_deleted(A, Omega):
    """Leave-one-out estimates with a second probe deleted, by their definitions: [j, l] is that of
    probe l when probe j is not drawn (an explicit QR of Y without columns j and l); zero for l = j."""
    n, k = Omega.shape
    Y = A @ Omega
    tr, dg = np.zeros((k, k)), np.zeros((k, k, n))
    for j in range(k):
        for l in range(k):
            if l != j:
                Qjl = np.linalg.qr(np.delete(Y, [j, l], axis=1))[0]
                Pi = Qjl @ Qjl.T
                P = np.eye(n) - Pi
                w = Omega[:, l]
                tr[j, l] = np.trace(Pi @ A @ Pi) + w @ P @ A @ P @ w
                dg[j, l] = np.diag(Pi @ A) + w * (P @ A @ w)
    return tr, dg


def xdiag_cross_parts(state):
    """The inputs of `_xdiag_cross` for an exchangeable state, as `_Exchangeable.diagonal` forms them."""
    D, nu = _leave_one_out_dirs(state.C)
    S = D / nu
    QS, ZS = state.Q @ S, state.Z @ S
    return QS, ZS, state.Omega / nu - ZS, S.T @ S


def published_diagpp(A, m, seed):
    """Baston & Nakatsukasa's Diag++ as published: diag(Q Q^T A Q Q^T) + Hutchinson on P A P (biased)."""
    rng = np.random.default_rng(seed)
    n, k = A.shape[0], m // 3
    Q = np.linalg.qr(A @ rng.choice([-1.0, 1.0], size=(n, k)))[0]
    P = np.eye(n) - Q @ Q.T
    G = rng.choice([-1.0, 1.0], size=(n, m - 2 * k))
    return np.diag(Q @ Q.T @ A @ Q @ Q.T) + np.mean(G * (P @ A @ P @ G), axis=1)


def exchangeable_state(n, k, power=1.0, seed=0, distribution="rademacher"):
    A = spectral_matrix(n, power, seed=seed)
    state = _Exchangeable(_operators.as_symmetric_operator(A))
    Omega = _probes(np.random.default_rng(seed), n, k, distribution)
    state.add(Omega, A @ Omega)
    return state


# -- numba kernels against their numpy twins -----------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("n, tile", [(1, 64), (5, 2), (17, 4), (64, 64), (70, 8), (131, 64)])
def test_symmetry_scan_kernel_matches_numpy(n, tile):
    rng = np.random.default_rng(n)
    B = rng.standard_normal((n, n))
    S = (B + B.T) / 2
    cases = [S, B, np.zeros((n, n)), -np.abs(S)]
    if n > 1:
        one = S.copy()
        one[n - 1, 0] += 1e-3  # a single asymmetric pair, far from the diagonal
        cases.append(one)
    for A in cases:
        assert _hutchinson_kernels.symmetry_scan(A, tile) == reference.symmetry_scan(A, tile)
    for bad in (np.nan, np.inf, -np.inf):
        for where in ((n // 2, n - 1), (n - 1, 0)):  # read directly, or only through A_ij - A_ji
            A = S.copy()
            A[where] = bad
            with np.errstate(invalid="ignore"):  # inf - inf, when run without the JIT
                assert not _hutchinson_kernels.symmetry_scan(A, tile)[2]


@pytest.mark.kernel
def test_row_mean_var_kernel_matches_numpy():
    rng = np.random.default_rng(0)
    for n, k in [(1, 2), (7, 3), (50, 200), (33, 17)]:
        X = rng.standard_normal((n, k))
        Y = rng.standard_normal((n, k)) * 10.0 ** rng.integers(-3, 3, size=(n, 1))
        mean, var = np.empty(n), np.empty(n)
        _hutchinson_kernels.row_mean_var(X, Y, mean, var)
        ref_mean, ref_var = reference.row_mean_var(X, Y)
        scale = np.abs(X * Y).max(axis=1)
        assert np.all(np.abs(mean - ref_mean) <= 4 * k * EPS * scale)
        assert np.all(np.abs(var - ref_var) <= 8 * k * EPS * scale**2)
    for n, k in [(30, 40), (400, 200)]:  # below and above config.HUTCH_NUMBA_MIN_ENTRIES
        X, Y = rng.standard_normal((n, k)), rng.standard_normal((n, k))
        mean, var = hutchinson._row_moments(X, Y)
        ref_mean, ref_var = reference.row_mean_var(X, Y)
        assert np.allclose(mean, ref_mean, rtol=0, atol=1e-13) and np.allclose(var, ref_var, rtol=1e-12)


@pytest.mark.kernel
def test_sign_probes_are_the_stream_of_integers_0_2():
    u = np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 1], dtype=np.uint32)
    out = np.empty(5)
    _hutchinson_kernels.signs_from_top_bit(u, out)
    assert np.array_equal(out, reference.signs_from_top_bit(u))
    for seed, (n, k) in enumerate([(37, 11), (4000, 20), (1, 3)]):  # numpy and kernel paths
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        probes = _probes(a, n, k, "rademacher")
        assert np.array_equal(probes, b.integers(0, 2, size=(n, k)) * 2.0 - 1.0)
        assert a.standard_normal() == b.standard_normal()  # the generator is left in the same state


# -- closed forms against the loops they replace -------------------------------------------------


@pytest.mark.parametrize("n, k, power", [(40, 6, 1.0), (80, 23, 2.0), (60, 40, 0.5), (300, 100, 2.0)])
def test_closed_form_deleted_estimates_match_the_qr_loops(n, k, power, monkeypatch):
    monkeypatch.setattr(config, "HUTCH_STDERR_BLOCK_ENTRIES", 7 * k + 3)  # several row blocks, the last short
    state = exchangeable_state(n, k, power, seed=k)
    assert state.generic
    C, H, W, T, omy = state._parts()
    ests = _xtrace_ests(C, H, W, T, omy)
    fast = _xtrace_deleted(C, H, W, T, omy)
    ref = _xtrace_deleted_qr(C, H, W, T, omy)
    off = ~np.eye(k, dtype=bool)
    moves = np.abs(ests[None, :] - ref)[off].max()  # the differences the standard error is made of
    assert np.abs(fast - ref).max() <= 1e-9 * moves
    cross = _xdiag_cross(*xdiag_cross_parts(state))
    ref_cross = _xdiag_cross_qr(state.Q, state.Z, state.Omega, C)
    assert np.abs(cross - ref_cross).max() <= 1e-9 * np.abs(ref_cross).max()


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_deleted_estimates_match_their_definitions(distribution):
    n, k = 30, 6
    U = random_orthogonal(np.random.default_rng(4), n, n)
    A = (U * (np.arange(1.0, n + 1) ** -1.0 * (-1.0) ** np.arange(n))) @ U.T  # indefinite
    Omega = _probes(np.random.default_rng(4), n, k, distribution)
    state = _Exchangeable(_operators.as_symmetric_operator(A))
    state.add(Omega, A @ Omega)
    scale = np.linalg.norm(A) * n
    tr_full, dg_full = naive_probe_estimates(A, Omega)
    tr_del, dg_del = naive_deleted(A, Omega)
    parts = state._parts()
    # _parts reuses C for T = Z^T Omega: equal for symmetric A (Z^T omega = Q^T A omega = Q^T y)
    assert np.abs(parts[3] - state.Z.T @ Omega).max() <= 1e3 * EPS * scale
    assert np.abs(_xtrace_deleted_qr(*parts) - tr_del).max() <= 1e3 * EPS * scale
    assert np.abs(_xdiag_probe_estimates(state.Q, state.Z, state.C, Omega) - dg_full).max() <= 1e3 * EPS * scale
    # the standard errors by their definition: the spread of the per-probe estimates and the
    # products of what each probe adds to the estimate of another
    off = ~np.eye(k, dtype=bool)
    tr_added = np.where(off, tr_full[None, :] - tr_del, 0.0)  # [j, l]: what probe j adds to probe l
    dg_added = np.where(off[:, :, None], dg_full.T[None, :, :] - dg_del, 0.0)
    tr_cross = np.sum(tr_added * tr_added.T)
    dg_cross = np.einsum("jlr,ljr->r", dg_added, dg_added)
    assert np.abs(_xdiag_cross_qr(state.Q, state.Z, Omega, state.C) - dg_cross).max() <= 1e3 * EPS * scale**2
    tr_dev2 = np.sum((tr_full - tr_full.mean()) ** 2)
    dg_dev2 = np.sum((dg_full - dg_full.mean(axis=1, keepdims=True)) ** 2, axis=1)
    for (est, se), full, dev2, cross in (
        (state.trace(), tr_full, tr_dev2, tr_cross),
        (state.diagonal(), dg_full.T, dg_dev2, dg_cross),
    ):
        assert np.allclose(est, full.mean(axis=0), rtol=0, atol=1e3 * EPS * scale)
        assert np.allclose(se, _exchangeable_stderr(dev2, cross, k), rtol=1e-8, atol=1e3 * EPS * scale)


def test_fallbacks_give_the_same_answers(monkeypatch):
    A = spectral_matrix(120, 1.5, seed=2)
    runs = {}
    for label, cond, amp in [("fast", 1e6, 1e6), ("svd and qr loops", 0.0, 0.0)]:
        monkeypatch.setattr(config, "HUTCH_CHOLQR_MAX_COND", cond)
        monkeypatch.setattr(config, "HUTCH_STDERR_MAX_AMPLIFICATION", amp)
        runs[label] = (
            hutchinson_diagonal(A, n_matvecs=40, method="xdiag", rng=3),
            hutchinson_trace(A, n_matvecs=40, method="xtrace", rng=3),
            hutchinson_diagonal(A, n_matvecs=40, rng=3),
        )
    for fast, slow in zip(runs["fast"], runs["svd and qr loops"], strict=True):
        assert fast.method == slow.method and fast.n_matvecs == slow.n_matvecs
        for name in ("diagonal", "stderr", "trace"):
            if hasattr(fast, name):
                a, b = np.asarray(getattr(fast, name)), np.asarray(getattr(slow, name))
                assert np.allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max()), name


def test_exchangeable_state_whose_first_block_adds_no_direction():
    # probes orthogonal to the range of A: the first block leaves Q empty, and the next block's
    # factorization must not be taken for the factorization of all products so far
    A = np.ones((4, 4))
    state = _Exchangeable(_operators.as_symmetric_operator(A))
    first = np.array([[1.0, 1.0, -1.0], [-1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])
    state.add(first, A @ first)
    assert state.Q.shape[1] == 0
    second = np.ones((4, 1))
    state.add(second, A @ second)
    assert np.allclose(state.diagonal()[0], 1.0) and np.isclose(state.trace()[0], 4.0)


def test_cholqr2_is_an_accurate_qr_or_declines():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((200, 30)) * np.logspace(0, -4, 30)
    scale = float(np.linalg.norm(Y, axis=0).max())
    Q, R = _cholqr2(Y, scale)
    assert np.abs(Q.T @ Q - np.eye(30)).max() <= 100 * EPS
    assert np.abs(Q @ R - Y).max() <= 100 * EPS * np.abs(Y).max()
    U = np.linalg.svd(Y, full_matrices=False)[0]
    assert np.abs(Q @ (Q.T @ U) - U).max() <= 1e-10  # the span the SVD would give
    assert _cholqr2(np.column_stack([Y, Y[:, :1]]), scale) is None  # rank-deficient
    assert _cholqr2(Y * np.logspace(0, -8, 30), scale) is None  # too ill-conditioned
    assert _cholqr2(rng.standard_normal((5, 8)), 1.0) is None  # more columns than rows
    Q1 = _orth_new(Q[:, :10], Y[:, 5:20], scale)  # a block partly inside range(Q): SVD path
    assert Q1.shape[1] == 10 and np.abs(Q1.T @ Q[:, :10]).max() <= 1e-12


def test_dense_symmetry_check_keeps_its_tolerance_and_layouts():
    rng = np.random.default_rng(1)
    n = 300  # n^2 above config.HUTCH_NUMBA_MIN_ENTRIES: the kernel path
    assert n * n >= config.HUTCH_NUMBA_MIN_ENTRIES
    B = rng.standard_normal((n, n))
    S = (B + B.T) / 2
    tol = 100 * n * EPS * np.abs(S).max()
    near = S.copy()
    near[3, 140] += 0.5 * tol  # within rounding of symmetric: accepted
    ref = hutchinson_trace(S, n_matvecs=10, method="hutch++", rng=0).trace
    # Another layout may take another BLAS kernel (AVX2 or AVX-512 OpenBLAS round differently):
    # the estimates agree within the rounding of the products, not bit for bit.
    bound = _product_rounding_bound(S, 10)
    assert abs(hutchinson_trace(np.asfortranarray(S), n_matvecs=10, method="hutch++", rng=0).trace - ref) <= bound
    hutchinson_trace(near, n_matvecs=10, method="hutch++", rng=0)
    assert abs(hutchinson_trace(S.tolist(), n_matvecs=10, method="hutch++", rng=0).trace - ref) <= bound
    strided = np.zeros((2 * n, 2 * n))
    strided[::2, ::2] = S
    assert abs(hutchinson_trace(strided[::2, ::2], n_matvecs=10, method="hutch++", rng=0).trace - ref) <= bound
    big = S.copy()
    big[0, 299] = 1e3  # the largest entry lies below the diagonal tiles; its mirror is within tolerance
    big[299, 0] = 1e3 * (1 + 50 * n * EPS)
    hutchinson_trace(big, n_matvecs=10, method="hutch++", rng=0)
    far = S.copy()
    far[3, 140] += 2 * tol
    with pytest.raises(ValueError, match=r"`A` must be symmetric, got max \|A - A\^T\| = "):
        hutchinson_diagonal(far)
    with pytest.raises(ValueError, match="`A` must be symmetric"):
        hutchinson_diagonal(np.asfortranarray(far))
    S32 = S.astype(np.float32)
    assert abs(
        hutchinson_trace(S32, n_matvecs=10, method="hutch++", rng=0).trace
        - hutchinson_trace(S32.astype(np.float64), n_matvecs=10, method="hutch++", rng=0).trace
    ) <= _product_rounding_bound(S32, 10)
    bad = S.copy()
    bad[7, 9] = np.inf
    with pytest.raises(ValueError, match=r"`A` must be finite, got inf at index \(7, 9\)"):
        hutchinson_diagonal(bad)
    bad[7, 9] = S[7, 9]
    bad[250, 3] = np.nan  # below the diagonal tiles: seen only through A_ij - A_ji
    with pytest.raises(ValueError, match=r"`A` must be finite, got nan at index \(250, 3\)"):
        hutchinson_diagonal(bad)
    for shape in ((3, 4), (300, 400)):  # the adapter checks shapes before entries, for every kind
        with pytest.raises(ValueError, match=r"`A` must be square, got shape \(\d+, \d+\)"):
            hutchinson_diagonal(np.full(shape, np.nan))


def test_plain_hutchinson_needs_no_symmetry_and_still_names_nan():
    # E[z * A z] = diag(A) and E[z^T A z] = tr(A) for every square A: method="hutchinson" accepts
    # a non-symmetric dense A without reading it beyond the products; the other methods refuse it
    n, m, seeds = 300, 8, 300
    assert n * n >= config.HUTCH_NUMBA_MIN_ENTRIES  # the large-array path
    rng = np.random.default_rng(7)
    A = np.triu(rng.standard_normal((n, n))) + np.diag(rng.uniform(1, 2, n))  # far from symmetric
    diags = np.array([hutchinson_diagonal(A, n_matvecs=m, method="hutchinson", rng=s).diagonal for s in range(seeds)])
    traces = np.array([hutchinson_trace(A, n_matvecs=m, method="hutchinson", rng=s).trace for s in range(seeds)])
    se = diags.std(axis=0, ddof=1) / np.sqrt(seeds)
    z = (diags.mean(axis=0) - np.diag(A)) / se
    assert np.mean(np.abs(z) > 3) < 0.02  # per-entry 3-sigma misses: 0.3% expected
    assert abs(traces.mean() - np.trace(A)) <= 3 * traces.std(ddof=1) / np.sqrt(seeds)
    for method in ("auto", "xdiag", "diag++"):
        with pytest.raises(ValueError, match="`A` must be symmetric"):
            hutchinson_diagonal(A, n_matvecs=12, method=method)
    bad = A.copy()
    bad[250, 3] = np.nan
    with pytest.raises(ValueError, match=r"`A` must be finite, got nan at index \(250, 3\)"):
        hutchinson_diagonal(bad, n_matvecs=m, method="hutchinson")
    with pytest.raises(ValueError, match="`A` must be finite"):
        hutchinson_trace(bad[200:260, :60], n_matvecs=m, method="hutchinson")  # the small-array path


# -- correctness of the formulas -----------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
@pytest.mark.parametrize("n, k, power", [(40, 5, 1.0), (60, 12, 2.0), (30, 8, 0.5)])
def test_exchangeable_estimators_match_naive_leave_one_out(distribution, n, k, power):
    A = spectral_matrix(n, power, seed=k)
    gen = np.random.default_rng(k)
    Omega = _probes(gen, n, k, distribution)
    state = _Exchangeable(_operators.as_symmetric_operator(A))
    half = k // 2  # grown in two blocks, as adaptive stopping does
    state.add(Omega[:, :half], A @ Omega[:, :half])
    state.add(Omega[:, half:], A @ Omega[:, half:])
    t, _ = state.trace()
    d, _ = state.diagonal()
    t_ref, d_ref = naive_exchangeable(A, Omega)
    scale = np.linalg.norm(A) * n
    assert abs(t - t_ref) <= 1e3 * EPS * scale
    assert np.max(np.abs(d - d_ref)) <= 1e3 * EPS * scale


def test_unbiased_diagpp_identity_with_cross_terms():
    # 2 diag(Pi A) - diag(Pi A Pi) + diag(P A P) = diag(A) for any orthonormal Q; without the cross
    # terms (the published form) the identity fails.
    A = spectral_matrix(30, 1.0, seed=3)
    Q = random_orthogonal(np.random.default_rng(4), 30, 5)
    Pi = Q @ Q.T
    P = np.eye(30) - Pi
    ours = 2 * np.diag(Pi @ A) - np.diag(Pi @ A @ Pi) + np.diag(P @ A @ P)
    published = np.diag(Pi @ A @ Pi) + np.diag(P @ A @ P)
    assert np.allclose(ours, np.diag(A), atol=1e-14)
    assert not np.allclose(published, np.diag(A), atol=1e-3)


# -- statistical properties (small matrices) -----------------------------------------------------

N_SEEDS = 300


@pytest.fixture(scope="module")
def stat_matrix():
    return spectral_matrix(50, 1.0, seed=11)


@pytest.mark.parametrize("method", ("hutchinson", "diag++", "xdiag", "published"))
def test_diagonal_unbiased_over_seeds(stat_matrix, method):
    A, m = stat_matrix, 12
    if method == "published":
        ests = np.array([published_diagpp(A, m, s) for s in range(N_SEEDS)])
    else:
        ests = np.array([hutchinson_diagonal(A, n_matvecs=m, method=method, rng=s).diagonal for s in range(N_SEEDS)])
    se = ests.std(axis=0, ddof=1) / np.sqrt(N_SEEDS)
    z = (ests.mean(axis=0) - np.diag(A)) / se
    # 50 entries: mean z^2 near 1 and no entry beyond 4.5 (Bonferroni) for an unbiased estimator
    unbiased = np.mean(z**2) < 2.0 and np.max(np.abs(z)) < 4.5
    assert unbiased == (method != "published"), (np.mean(z**2), np.max(np.abs(z)))


def test_auto_selection_bias_is_small_against_its_error(stat_matrix):
    # "auto" picks its branch from the probes it then uses, so it is not exactly unbiased; on this
    # matrix the choice flips from seed to seed, the worst case. Its bias must stay a small fraction
    # of the error of a single run.
    A = stat_matrix
    ests = np.array([hutchinson_diagonal(A, n_matvecs=12, rng=s).diagonal for s in range(N_SEEDS)])
    bias = ests.mean(axis=0) - np.diag(A)
    assert np.linalg.norm(bias) <= 0.2 * np.linalg.norm(ests.std(axis=0))


@pytest.mark.xfail(strict=True, reason="known gap: trace 'auto' selection bias is 0.27 of one run's error here")
def test_auto_trace_selection_bias_is_small_against_its_error(stat_matrix):
    A = stat_matrix
    traces = np.array([hutchinson_trace(A, n_matvecs=12, rng=s).trace for s in range(N_SEEDS)])
    assert abs(traces.mean() - np.trace(A)) <= 0.2 * traces.std()


@pytest.mark.parametrize("method", ("hutchinson", "hutch++", "xtrace"))
def test_trace_unbiased_over_seeds(stat_matrix, method):
    A = stat_matrix
    ests = np.array([hutchinson_trace(A, n_matvecs=12, method=method, rng=s).trace for s in range(N_SEEDS)])
    se = ests.std(ddof=1) / np.sqrt(N_SEEDS)
    assert abs(ests.mean() - np.trace(A)) <= 3 * se


def _coverage(A, kind, method, m, seeds=200):
    hits = []
    for s in range(seeds):
        if kind == "trace":
            r = hutchinson_trace(A, n_matvecs=m, method=method, rng=s)
            hits.append(abs(r.trace - np.trace(A)) <= 2 * r.stderr)
        else:
            r = hutchinson_diagonal(A, n_matvecs=m, method=method, rng=s)
            hits.append(np.mean(np.abs(r.diagonal - np.diag(A)) <= 2 * r.stderr))
    return float(np.mean(hits))


@pytest.mark.parametrize(
    "kind, method", [("trace", "hutchinson"), ("trace", "hutch++"), ("diagonal", "hutchinson"), ("diagonal", "diag++")]
)
def test_stderr_calibrated_for_independent_sample_methods(kind, method):
    A = spectral_matrix(100, 1.0, seed=5)
    assert 0.92 <= _coverage(A, kind, method, 60) <= 0.98


@pytest.mark.parametrize("kind, method", [("trace", "xtrace"), ("diagonal", "xdiag")])
def test_stderr_of_exchangeable_methods_does_not_undercover(kind, method):
    A = spectral_matrix(100, 1.0, seed=5)
    assert _coverage(A, kind, method, 40) >= 0.92


@pytest.mark.parametrize("m", [40, 60])
def test_stderr_of_xtrace_within_band(m):
    # the delete-one jackknife covered in 100% of runs here; see _exchangeable_stderr
    A = spectral_matrix(100, 1.0, seed=5)
    assert 0.92 <= _coverage(A, "trace", "xtrace", m) <= 0.98


@pytest.mark.parametrize("m", [40, 60])
def test_stderr_of_xdiag_within_band(m):
    A = spectral_matrix(100, 1.0, seed=5)
    assert 0.92 <= _coverage(A, "diagonal", "xdiag", m) <= 0.98


def _exchangeable_variances(A, k, seed):
    """XTrace and XDiag on k probes with the unbiased variance estimate of `_exchangeable_stderr`
    before its positive part, the paper's leave-one-out spread and (trace) the delete-one jackknife."""
    state = _Exchangeable(_operators.as_symmetric_operator(A))
    Omega = _probes(np.random.default_rng(seed), A.shape[0], k, "rademacher")
    state.add(Omega, A @ Omega)
    C, H, W, T, omy = state._parts()
    ests = _xtrace_ests(C, H, W, T, omy)
    deleted = _xtrace_deleted(C, H, W, T, omy)
    off = ~np.eye(k, dtype=bool)
    added = np.where(off, ests[None, :] - deleted, 0.0)
    dev2 = np.sum((ests - ests.mean()) ** 2)
    loo = np.sum(np.where(off, deleted, 0.0), axis=1) / (k - 1)
    trace = dict(
        estimate=ests.mean(),
        ours=(dev2 + np.sum(added * added.T)) / (k * (k - 1)),
        spread=dev2 / (k * (k - 1)),
        jackknife=(k - 1) / k * np.sum((loo - loo.mean()) ** 2),
    )
    full = _xdiag_probe_estimates(state.Q, state.Z, C, Omega)
    dev2 = np.sum((full - full.mean(axis=1, keepdims=True)) ** 2, axis=1)
    cross = _xdiag_cross(*xdiag_cross_parts(state))
    diagonal = dict(estimate=full.mean(axis=1), ours=(dev2 + cross) / (k * (k - 1)), spread=dev2 / (k * (k - 1)))
    return trace, diagonal


@pytest.mark.parametrize("variance", ["ours", "spread", "jackknife"])
def test_exchangeable_variance_estimate_is_unbiased(stat_matrix, variance):
    # E[estimate of the variance] = E[(estimate - truth)^2] exactly for ours; the paper's spread is
    # too small and the jackknife too large. Paired over seeds: the mean of v - err^2 is near 0.
    A, k = stat_matrix, 10
    runs = [_exchangeable_variances(A, k, s) for s in range(N_SEEDS)]
    diff = np.array([t[variance] - (t["estimate"] - np.trace(A)) ** 2 for t, _ in runs])
    z = diff.mean() / (diff.std(ddof=1) / np.sqrt(N_SEEDS))
    assert (abs(z) < 3.0) == (variance == "ours"), z
    if variance != "jackknife":
        diff = np.array([d[variance] - (d["estimate"] - np.diag(A)) ** 2 for _, d in runs])
        z = diff.mean(axis=0) / (diff.std(axis=0, ddof=1) / np.sqrt(N_SEEDS))
        unbiased = np.mean(z**2) < 2.0 and np.max(np.abs(z)) < 4.5  # 50 entries, as above
        assert unbiased == (variance == "ours"), (np.mean(z**2), np.max(np.abs(z)))


# -- exactness -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hutchinson", "auto"])
def test_exact_on_diagonal_matrices_with_rademacher(method):
    d = np.random.default_rng(0).standard_normal(30)
    A = np.diag(d)
    r = hutchinson_diagonal(A, n_matvecs=10, method=method, rng=1)
    tol = 10 * EPS * np.abs(d)  # the mean of identical samples, to roundoff
    assert np.all(np.abs(r.diagonal - d) <= tol) and np.all(r.stderr <= tol)
    t = hutchinson_trace(A, n_matvecs=10, method=method, rng=1)
    assert abs(t.trace - d.sum()) <= 30 * EPS * np.abs(d).sum() and t.stderr <= 30 * EPS * np.abs(d).sum()


@pytest.mark.parametrize("rank", [1, 4, 10])
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_exact_on_low_rank_matrices(rank, distribution):
    A = spectral_matrix(120, 0.5, seed=rank, rank=rank) * 3.0
    m = 3 * rank + 3
    scale = np.linalg.norm(A) * 120
    for method in ("diag++", "xdiag", "auto"):
        r = hutchinson_diagonal(A, n_matvecs=m, method=method, distribution=distribution, rng=0)
        assert np.max(np.abs(r.diagonal - np.diag(A))) <= 1e3 * EPS * scale, method
        assert r.n_matvecs <= m
    for method in ("hutch++", "xtrace", "auto"):
        t = hutchinson_trace(A, n_matvecs=m, method=method, distribution=distribution, rng=0)
        assert abs(t.trace - np.trace(A)) <= 1e3 * EPS * scale, method


def test_auto_chooses_from_the_data():
    n, m = 200, 40
    decaying = hutchinson_diagonal(spectral_matrix(n, 2.0), n_matvecs=m, rng=0)
    dominant = hutchinson_diagonal(dominant_matrix(n), n_matvecs=m, rng=0)
    assert decaying.method == "xdiag" and dominant.method == "hutchinson"
    assert decaying.n_matvecs <= m and dominant.n_matvecs == m
    assert hutchinson_trace(spectral_matrix(n, 2.0), n_matvecs=m, rng=0).method == "xtrace"
    assert hutchinson_trace(dominant_matrix(n), n_matvecs=m, rng=0).method == "hutchinson"


# -- determinism, inputs, operator kinds ---------------------------------------------------------


def test_same_seed_same_answer_and_inputs_untouched():
    A = spectral_matrix(40, 1.0)
    A_copy = A.copy()
    for method in DIAG_METHODS:
        a = hutchinson_diagonal(A, n_matvecs=12, method=method, rng=7)
        b = hutchinson_diagonal(A, n_matvecs=12, method=method, rng=7)
        assert np.array_equal(a.diagonal, b.diagonal) and np.array_equal(a.stderr, b.stderr)
        c = hutchinson_diagonal(A, n_matvecs=12, method=method, rng=a.seed)
        assert np.array_equal(a.diagonal, c.diagonal)
    gen = np.random.default_rng(3)
    # the generator advances (a budget below n: n products or more give the exact trace)
    assert hutchinson_trace(A, n_matvecs=20, rng=gen).trace != hutchinson_trace(A, n_matvecs=20, rng=gen).trace
    assert np.array_equal(A, A_copy)


def test_every_operator_kind_gives_the_same_answer():
    A = spectral_matrix(50, 1.0)
    single = []

    def hvp(x):
        single.append(1)
        return A @ x

    kinds = {
        "dense": A,
        "sparse": scipy.sparse.csr_matrix(A),
        "linop": scipy.sparse.linalg.aslinearoperator(A),
        "batched": lambda X: A @ X,
        "single": lambda X: np.column_stack([hvp(x) for x in X.T]),
    }
    ref = hutchinson_diagonal(A, n_matvecs=20, method="xdiag", rng=0)
    for name, op in kinds.items():
        r = hutchinson_diagonal(op, n_matvecs=20, method="xdiag", rng=0, n=50)
        assert np.allclose(r.diagonal, ref.diagonal, rtol=0, atol=1e-12), name
        assert r.n_matvecs == ref.n_matvecs
    assert len(single) == ref.n_matvecs  # one call of the single-vector product per vector
    A32 = A.astype(np.float32)
    r32 = hutchinson_diagonal(A32, n_matvecs=20, method="xdiag", rng=0)
    r64 = hutchinson_diagonal(A32.astype(np.float64), n_matvecs=20, method="xdiag", rng=0)
    # float32 input is computed with in float64: equal to the float64 run within product rounding
    assert np.all(np.abs(r32.diagonal - r64.diagonal) <= _product_rounding_bound(A32, 20))


# -- adaptive stopping ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", TRACE_METHODS)
def test_rtol_stops_early_when_met(method):
    A = spectral_matrix(100, 2.0)
    r = hutchinson_trace(A, n_matvecs=200, method=method, rtol=0.2, rng=0)
    assert r.converged is True and r.error_estimate <= 0.2 and r.n_matvecs < 200
    assert abs(r.trace - np.trace(A)) <= 0.2 * np.trace(A)


def test_rtol_not_met_warns_and_reports():
    A = spectral_matrix(100, 0.5)
    with pytest.warns(ConvergenceWarning, match="rtol"):
        r = hutchinson_diagonal(A, n_matvecs=20, method="hutchinson", rtol=1e-6, rng=0)
    assert r.converged is False and r.n_matvecs == 20 and r.error_estimate > 1e-6
    assert "converged=False" in repr(r)


def test_fixed_budget_reports_converged_true():
    # without rtol the budget is the stopping rule, and spending it is meeting it
    r = hutchinson_trace(np.eye(5), n_matvecs=6, rng=0)
    assert r.converged is True and "converged=True" in repr(r)


# -- bad input -----------------------------------------------------------------------------------


def _nan_product(X):
    out = X.copy()
    out[0, 0] = np.nan
    return out


@pytest.mark.parametrize(
    "A, kwargs, exc, match",
    [
        (np.ones((3, 4)), {}, ValueError, "`A` must be square"),
        (np.array([[1.0, 2.0], [0.0, 1.0]]), {}, ValueError, "`A` must be symmetric"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), {}, ValueError, "`A` must be finite"),
        (np.eye(3, dtype=int), {}, TypeError, "`A`"),
        (np.eye(10), {"n_matvecs": 5, "method": "xdiag"}, ValueError, "`n_matvecs` must be at least 6"),
        (np.eye(10), {"n_matvecs": 3, "method": "diag++"}, ValueError, "`n_matvecs` must be at least 4"),
        (np.eye(3), {"n_matvecs": 1}, ValueError, "`n_matvecs` must be at least 2"),
        (np.eye(3), {"rtol": 0.0}, ValueError, "`rtol` must be a positive"),
        (np.eye(3), {"rtol": -1.0}, ValueError, "`rtol`"),
        (np.eye(3), {"method": "hutch++"}, ValueError, "`method` must be one of"),
        (np.eye(3), {"distribution": "normal"}, ValueError, "`distribution`"),
        (np.eye(3), {"rng": "x"}, TypeError, "`rng`"),
        (lambda X: X, {}, ValueError, "`n` is required"),
        (lambda X: X[:-1], {"n": 4}, ValueError, r"`A`: product 1 \(a block of .*\) returned shape"),
        (_nan_product, {"n": 4}, ValueError, r"`A`: product 1 .* returned NaN"),
    ],
)
def test_bad_input_is_rejected_with_named_argument(A, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        hutchinson_diagonal(A, **kwargs)


def test_bad_trace_options():
    with pytest.raises(ValueError, match="`n_matvecs` must be at least 6 for method='xtrace'"):
        hutchinson_trace(np.eye(10), n_matvecs=4, method="xtrace")
    with pytest.raises(ValueError, match="`method`"):
        hutchinson_trace(np.eye(3), method="xdiag")
    with pytest.raises(ValueError, match=r"`A` must be square, got shape \(3, 4\)"):
        hutchinson_trace(scipy.sparse.linalg.aslinearoperator(np.ones((3, 4))))


# -- Hessian operator ----------------------------------------------------------------------------


def test_hessian_operator_exact_on_quadratics_and_accurate_otherwise():
    rng = np.random.default_rng(0)
    M = spectral_matrix(20, 1.0)
    x = rng.standard_normal(20)
    x_copy = x.copy()
    H = hessian_operator(lambda v: M @ v, x)
    assert np.allclose(H @ np.eye(20), M, atol=1e-8)
    # f(x) = sum(exp(x)) + x^T M x / 2: Hessian diag(exp(x)) + M
    Hs = hessian_operator(lambda v: np.exp(v) + M @ v, x)
    true = np.diag(np.exp(x)) + M
    err = np.abs(Hs @ np.eye(20) - true).max()
    assert err <= 1e-8 * np.abs(true).max() * 100  # eps^(2/3) ~ 4e-11 relative, with a margin for exp's scale
    r = hutchinson_diagonal(Hs, n_matvecs=10, method="hutchinson", rng=0)
    ref = hutchinson_diagonal(true, n_matvecs=10, method="hutchinson", rng=0)
    assert np.allclose(r.diagonal, ref.diagonal, atol=1e-6)  # same probes: the estimator sees the same matrix
    assert np.array_equal(x, x_copy)


def test_hessian_operator_bad_input():
    with pytest.raises(TypeError, match="`grad`"):
        hessian_operator(3, np.zeros(2))
    with pytest.raises(ValueError, match="`x` must be 1-D"):
        hessian_operator(lambda v: v, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="`eps`"):
        hessian_operator(lambda v: v, np.zeros(2), eps=0.0)
    with pytest.raises(ValueError, match="`grad` returned shape"):
        hessian_operator(lambda v: v[:1], np.zeros(2)) @ np.ones(2)


# -- streaming -----------------------------------------------------------------------------------


def test_accumulator_equals_batch_hutchinson_without_decay():
    A = spectral_matrix(30, 1.0)
    Om = _probes(np.random.default_rng(0), 30, 12, "rademacher")
    acc = HutchinsonAccumulator(30)
    for j in range(0, 12, 3):
        acc.add_samples(Om[:, j : j + 3], A @ Om[:, j : j + 3])
    samples = Om * (A @ Om)
    assert np.allclose(acc.diagonal, samples.mean(axis=1))
    assert np.allclose(acc.diagonal_stderr, samples.std(axis=1, ddof=1) / np.sqrt(12))
    traces = samples.sum(axis=0)
    assert np.isclose(acc.trace, traces.mean()) and np.isclose(acc.trace_stderr, traces.std(ddof=1) / np.sqrt(12))
    assert acc.n_matvecs == 12


def test_accumulator_exponential_weights_match_naive_loop():
    A = spectral_matrix(20, 1.0)
    acc = HutchinsonAccumulator(20, beta=0.9, rng=1)
    for _ in range(15):
        acc.update(A)
    # replay the same probes and weight them by hand
    gen = np.random.default_rng(acc.seed)
    Om = np.column_stack([_probes(gen, 20, 1, "rademacher") for _ in range(15)])
    x = Om * (A @ Om)
    w = 0.9 ** np.arange(14, -1, -1)
    mean = (x * w).sum(axis=1) / w.sum()
    assert np.allclose(acc.diagonal, mean)
    neff = w.sum() ** 2 / (w**2).sum()
    var = ((x - mean[:, None]) ** 2 * w).sum(axis=1) / w.sum() * neff / (neff - 1)
    assert np.isclose(acc.n_effective, neff) and np.allclose(acc.diagonal_stderr, np.sqrt(var / neff))
    with pytest.raises(ValueError, match="`beta`"):
        HutchinsonAccumulator(3, beta=1.0)


def test_repr_is_readable():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = hutchinson_diagonal(np.eye(8), n_matvecs=6, rng=0)
    assert repr(r).startswith("DiagonalEstimate(") and "diagonal=array(shape=(8,), dtype=float64)" in repr(r)
    assert "method='hutchinson'" in repr(r) and "n_matvecs=6" in repr(r)
    assert "trace=4," in repr(hutchinson_trace(np.eye(4), n_matvecs=6, rng=0))


# -- budgets of n products or more, and sketches of lower rank than the probes -------------------


def _naive_loo_estimates(kind, A, Omega):
    """The XDiag / XTrace leave-one-out estimates by explicit projectors (independent of the library).

    Probe i: Pi_i projects onto range(A Omega without column i); diagonal: diag(Pi_i A) +
    omega_i * (I - Pi_i) A omega_i; trace: tr(Pi_i A Pi_i) + omega_i^T (I - Pi_i) A (I - Pi_i) omega_i.
    """
    n, k = Omega.shape
    Y = A @ Omega
    ests = []
    for i in range(k):
        others = np.delete(Y, i, axis=1)
        U, s, _ = np.linalg.svd(others, full_matrices=False)
        U = U[:, s > 1e-10 * max(np.abs(Y).max(), 1e-300)]
        P = U @ U.T
        R = np.eye(n) - P
        w = Omega[:, i]
        if kind == "diagonal":
            ests.append(np.diag(P @ A) + w * (R @ A @ w))
        else:
            ests.append(np.trace(P @ A @ P) + w @ R @ A @ R @ w)
    return np.mean(ests, axis=0)


@pytest.mark.parametrize("n", [1, 2, 8, 40])
def test_budget_of_n_or_more_is_capped_at_the_exact_answer(n):
    S = spectral_matrix(n, 1.0) if n > 1 else np.array([[2.5]])
    calls = []

    def product(X):
        calls.append(X.shape[1])
        return S @ X

    for rtol in (None, 0.1):
        for method in ("auto", "hutchinson", "xdiag", "diag++"):
            calls.clear()
            r = hutchinson_diagonal(product, n=n, n_matvecs=10**7, method=method, rtol=rtol, rng=0)
            assert r.method == "exact" and r.n_matvecs == n == sum(calls)
            # products with unit vectors copy columns of A: the diagonal comes back exactly
            np.testing.assert_array_equal(r.diagonal, np.diag(S))
            assert np.all(r.stderr == 0) and r.error_estimate == 0 and r.converged is True
        t = hutchinson_trace(S, n_matvecs=n, rtol=rtol, rng=0)
        assert t.method == "exact" and t.n_matvecs == n and t.stderr == 0
        assert abs(t.trace - np.trace(S)) <= n * EPS * np.abs(np.diag(S)).sum()


def test_issue_case_small_matrix_with_rtol_is_exact():
    B = np.random.default_rng(0).standard_normal((8, 8))
    S = B + B.T
    r = hutchinson_diagonal(S, n_matvecs=60, rtol=0.1, rng=0)
    np.testing.assert_array_equal(r.diagonal, np.diag(S))
    assert r.converged is True and r.n_matvecs == 8


def test_a_claim_of_exactness_holds_when_random_signs_repeat():
    # n = 8 and six products: 3 probes of random signs, often two equal up to sign, so the
    # products have lower rank than the probes although A has full rank. A tiny error bound
    # must then mean a tiny error.
    claims = 0
    for seed in range(60):
        B = np.random.default_rng(seed).standard_normal((8, 8))
        S = B + B.T
        for method in ("auto", "xdiag"):
            r = hutchinson_diagonal(S, n_matvecs=6, method=method, rng=seed)
            err = np.linalg.norm(r.diagonal - np.diag(S)) / np.linalg.norm(np.diag(S))
            if r.error_estimate <= 1e-8:
                claims += 1
                assert err <= 1e-8, (seed, method, err, r.error_estimate)
        for method in ("auto", "xtrace"):
            r = hutchinson_trace(S, n_matvecs=6, method=method, rng=seed)
            if r.error_estimate <= 1e-8:
                claims += 1
                assert abs(r.trace - np.trace(S)) <= 1e-8 * abs(np.trace(S)), (seed, method)
    assert claims == 0  # A has full rank: no run of 3 probes may find it exact


@pytest.mark.parametrize(
    "A, Omega",
    [
        # A of full rank, two probes equal up to sign: the products have rank 2 of 3
        (
            spectral_matrix(8, 1.0),
            np.array(
                [[1, 1, -1, 1, -1, 1, 1, -1], [-1, -1, 1, -1, 1, -1, -1, 1], [1, -1, 1, 1, 1, -1, 1, 1]], dtype=float
            ).T,
        ),  # fmt: skip
        # A of rank 1, probes independent: the products have rank 1 and span range(A)
        (np.ones((4, 4)), np.array([[1.0, 1, -1], [-1, 1, 1], [1, -1, -1], [-1, -1, 1]])),
    ],
)
def test_rank_deficient_sketch_matches_naive_leave_one_out(A, Omega):
    state = _Exchangeable(_operators.as_symmetric_operator(A))
    state.add(Omega, A @ Omega)
    assert not state.generic
    scale = np.abs(A).sum()
    np.testing.assert_allclose(state.diagonal()[0], _naive_loo_estimates("diagonal", A, Omega), atol=1e-12 * scale)
    assert abs(state.trace()[0] - _naive_loo_estimates("trace", A, Omega)) <= 1e-12 * scale


def test_accumulator_refuses_non_finite_probes_and_products_and_keeps_its_state():
    acc = HutchinsonAccumulator(4, rng=0)
    acc.update(np.diag([1.0, 2.0, 3.0, 4.0]))
    before = (acc.diagonal.copy(), acc.trace, acc.n_matvecs)
    good = np.ones((4, 2))
    for probes, products, name in (
        (np.array([[1.0, np.nan]] * 4), good, "probes"),
        (good, np.array([[1.0, np.inf]] * 4), "products"),
        (np.ones((5, 2)), good, "probes"),
        (good, np.ones((4, 3)), "products"),
        (good, np.full((4, 2), 1e200), "products"),  # probes * products overflow the sums
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            acc.add_samples(probes, products)
    np.testing.assert_array_equal(acc.diagonal, before[0])
    assert (acc.trace, acc.n_matvecs) == before[1:]
    acc.add_samples(np.ones(4), np.arange(4.0))  # a single probe as a vector
    assert acc.n_matvecs == before[2] + 1
