"""kron_matvec, kfac_solve and nearest_kronecker_product against explicit np.kron references."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from linalg_lowrank.kronecker import KroneckerApproximation, kfac_solve, kron_matvec, nearest_kronecker_product
from linalg_lowrank.roots import symmetric_eig

from .strategies import random_orthogonal

EPS64 = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps


def spd(n, kappa, seed):
    rng = np.random.default_rng(seed)
    Q = random_orthogonal(rng, n, n)
    return (Q * np.logspace(0, -np.log10(kappa), n)) @ Q.T


def vecF(X):
    return X.ravel(order="F")


# --------------------------------------------------------------------------- kron_matvec


@given(
    dims=st.tuples(*[st.integers(1, 6)] * 4),
    k=st.sampled_from([None, 1, 3]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kron_matvec_matches_np_kron(dims, k, dtype, seed):
    m, n, p, q = dims
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n)).astype(dtype)
    B = rng.standard_normal((p, q)).astype(dtype)
    x = rng.standard_normal(n * q if k is None else (n * q, k)).astype(dtype)
    y = kron_matvec(A, B, x)
    ref = np.kron(A.astype(np.float64), B.astype(np.float64)) @ x.astype(np.float64)
    assert y.dtype == dtype and y.shape == ref.shape
    scale = np.kron(np.abs(A), np.abs(B)).astype(np.float64) @ np.abs(x).astype(np.float64)
    assert np.all(np.abs(y - ref) <= 4 * (n + q) * np.finfo(dtype).eps * scale)


def test_kron_matvec_is_vec_of_B_X_At():
    rng = np.random.default_rng(0)
    A, B, X = rng.standard_normal((3, 4)), rng.standard_normal((2, 5)), rng.standard_normal((5, 4))
    np.testing.assert_allclose(kron_matvec(A, B, vecF(X)), vecF(B @ X @ A.T), rtol=1e-13, atol=1e-13)


def test_kron_matvec_bad_shapes():
    with pytest.raises(ValueError, match="`x` must have 6"):
        kron_matvec(np.ones((2, 2)), np.ones((3, 3)), np.ones(5))
    with pytest.raises(TypeError, match="`A` has dtype int"):
        kron_matvec(np.ones((2, 2), dtype=int), np.ones((3, 3)), np.ones(6))


# --------------------------------------------------------------------------- kfac_solve


@pytest.mark.parametrize("damping", [1e-6, 1e-3, 1.0])
def test_kfac_exact_damping_matches_dense_solve(damping):
    rng = np.random.default_rng(1)
    A, G = spd(6, 1e3, 1), spd(4, 1e2, 2)
    grad = rng.standard_normal((4, 6))
    V = kfac_solve(grad, A, G, damping=damping)
    F = np.kron(A, G) + damping * np.eye(24)
    ref = np.linalg.solve(F, vecF(grad))
    kappa = np.linalg.cond(F)
    assert np.linalg.norm(vecF(V) - ref) <= 10 * kappa * EPS64 * np.linalg.norm(ref)
    # cached decompositions: same answer
    V2 = kfac_solve(grad, symmetric_eig(A), symmetric_eig(G), damping=damping)
    assert np.linalg.norm(V2 - V) <= 10 * kappa * EPS64 * np.linalg.norm(ref)


def test_kfac_pi_damping_matches_factored_formula_and_differs_from_exact():
    rng = np.random.default_rng(2)
    A, G = 3.0 * spd(5, 10, 3), 0.1 * spd(3, 10, 4)
    grad = rng.standard_normal((3, 5)).astype(np.float32)
    lam = 1e-2
    V = kfac_solve(grad, A, G, damping=lam, damping_mode="pi")
    assert V.dtype == np.float32
    pi = np.sqrt((np.trace(A) / 5) / (np.trace(G) / 3))
    Ai = np.linalg.inv(A + pi * np.sqrt(lam) * np.eye(5))
    Gi = np.linalg.inv(G + np.sqrt(lam) / pi * np.eye(3))
    ref = np.kron(Ai, Gi) @ vecF(grad.astype(np.float64))
    assert np.linalg.norm(vecF(V) - ref) <= (10 * 1e3 * EPS64 + 4 * EPS32) * np.linalg.norm(ref)
    exact = kfac_solve(grad.astype(np.float64), A, G, damping=lam)
    assert np.linalg.norm(exact - V) > 1e-3 * np.linalg.norm(exact)  # it is an approximation


def test_kfac_psd_factors_and_bad_input():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 2))
    A = a @ a.T  # rank 2: singular, damping makes it solvable
    G = np.eye(3)
    grad = rng.standard_normal((3, 4))
    V = kfac_solve(grad, A, G, damping=0.5)
    ref = np.linalg.solve(np.kron(A, G) + 0.5 * np.eye(12), vecF(grad))
    np.testing.assert_allclose(vecF(V), ref, rtol=0, atol=100 * EPS64 * np.abs(ref).max())
    with pytest.raises(ValueError, match="`damping`"):
        kfac_solve(grad, A, G, damping=0.0)
    with pytest.raises(ValueError, match="`damping_mode`"):
        kfac_solve(grad, A, G, damping=1.0, damping_mode="tikhonov")
    with pytest.raises(ValueError, match="`grad` of shape"):
        kfac_solve(grad.T, A, G, damping=1.0)
    with pytest.raises(ValueError, match="`A` must be positive semidefinite"):
        kfac_solve(grad, -A - np.eye(4), G, damping=1.0)
    with pytest.raises(ValueError, match="`G` must be symmetric"):
        kfac_solve(grad, A, np.triu(np.ones((3, 3))), damping=1.0)
    before = [grad.copy(), A.copy()]
    kfac_solve(grad, A, G, damping=1.0)
    np.testing.assert_array_equal(grad, before[0])
    np.testing.assert_array_equal(A, before[1])


# --------------------------------------------------------------------------- nearest Kronecker product


def rearranged_by_blocks(M, shape_a, shape_b):
    """Independent R(M): loop over the blocks M_ij (Mb x Nb), row (i, j) = M_ij flattened row-major."""
    (ma, na), (mb, nb) = shape_a, shape_b
    rows = []
    for i in range(ma):
        for j in range(na):
            rows.append(M[i * mb : (i + 1) * mb, j * nb : (j + 1) * nb].ravel())
    return np.array(rows)


def test_nkp_recovers_exact_kronecker_up_to_scale():
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((3, 2)), rng.standard_normal((4, 5))
    res = nearest_kronecker_product(np.kron(A, B), (3, 2), (4, 5))
    assert isinstance(res, KroneckerApproximation) and res.method == "power"
    Ah, Bh = res.A[0], res.B[0]
    c = np.sum(Ah * A) / np.sum(A * A)  # A_hat = c A, B_hat = B / c
    tol = 100 * EPS64 * 20
    assert np.linalg.norm(Ah - c * A) <= tol * np.linalg.norm(Ah)
    assert np.linalg.norm(Bh - B / c) <= tol * np.linalg.norm(Bh)
    assert np.linalg.norm(np.kron(Ah, Bh) - np.kron(A, B)) <= tol * np.linalg.norm(np.kron(A, B))
    assert res.error_bound_relative <= tol


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_nkp_error_is_the_singular_value_tail(rank):
    rng = np.random.default_rng(5)
    shape_a, shape_b = (3, 4), (2, 3)
    M = sum(np.kron(rng.standard_normal(shape_a), rng.standard_normal(shape_b)) * s for s in (3.0, 1.0, 0.3, 0.1))
    M = M + 0.01 * rng.standard_normal(M.shape)
    res = nearest_kronecker_product(M, shape_a, shape_b, rank=rank)
    s = scipy.linalg.svdvals(rearranged_by_blocks(M, shape_a, shape_b))
    tail = np.sqrt(np.sum(s[rank:] ** 2))
    direct = np.linalg.norm(M - res.to_dense())
    assert direct == pytest.approx(tail, rel=1e-8)  # power_iteration tol 1e-12 -> error^2 second order
    assert res.error_bound == pytest.approx(direct, rel=1e-10)
    np.testing.assert_allclose(res.singular_values, s[:rank], rtol=1e-10)
    # Eckart–Young: no other rank-r Kronecker sum does better (perturbing a factor makes it worse)
    A0, B0 = res.A[0], res.B[0]
    for D in (np.ones(shape_a), rng.standard_normal(shape_a)):
        other = res.to_dense() - np.kron(A0, B0) + np.kron(A0 + 1e-3 * D, B0)
        assert np.linalg.norm(M - other) >= direct


def test_nkp_spd_input_gives_spd_factors_with_positive_sign():
    rng = np.random.default_rng(6)
    A, B = spd(3, 10, 7), spd(4, 10, 8)
    N = rng.standard_normal((12, 12))
    M = np.kron(A, B) + 0.05 * (N @ N.T) / 12  # SPD, not a Kronecker product
    res = nearest_kronecker_product(M, (3, 3), (4, 4))
    Ah, Bh = res.A[0], res.B[0]
    np.testing.assert_array_equal(Ah, Ah.T)
    np.testing.assert_array_equal(Bh, Bh.T)
    assert np.linalg.eigvalsh(Ah).min() > 0 and np.linalg.eigvalsh(Bh).min() > 0
    # also when the power iteration's sign lands negative: -M's factors flip, M's stay positive
    res_neg = nearest_kronecker_product(-M, (3, 3), (4, 4))
    assert np.trace(res_neg.A[0]) > 0 and np.linalg.eigvalsh(res_neg.B[0]).max() < 0


def test_nkp_float32_and_bad_input():
    M = np.kron(np.eye(2), np.ones((2, 3))).astype(np.float32)
    res = nearest_kronecker_product(M, (2, 2), (2, 3))
    assert res.A.dtype == np.float32 and res.B.dtype == np.float32
    assert res.error_bound_relative <= 10 * EPS32
    with pytest.raises(ValueError, match="`M` must have shape"):
        nearest_kronecker_product(M, (2, 2), (3, 3))
    with pytest.raises(ValueError, match=r"`rank` must be at most .* = 4, got 5"):
        nearest_kronecker_product(M, (2, 2), (2, 3), rank=5)
    with pytest.raises(ValueError, match="`shape_a`"):
        nearest_kronecker_product(M, (2, 2, 1), (2, 3))
    bad = M.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="`M` must be finite"):
        nearest_kronecker_product(bad, (2, 2), (2, 3))


@pytest.mark.parametrize("bad", [(2.9, 4.9), "24", (2, 4.0), (True, 4), 24, b"24"])
def test_nkp_shapes_must_be_integer_pairs(bad):
    M = np.ones((8, 16))
    with pytest.raises(TypeError, match="`shape_a`"):
        nearest_kronecker_product(M, bad, (4, 4))
    with pytest.raises(TypeError, match="`shape_b`"):
        nearest_kronecker_product(M, (2, 4), bad)
    res = nearest_kronecker_product(M, (np.int64(2), 4), [4, 4])  # integer types of any kind are fine
    np.testing.assert_allclose(res.to_dense(), M, atol=10 * EPS64 * np.linalg.norm(M))


@pytest.mark.parametrize("c", [1e300, 1e-300])
@pytest.mark.parametrize("rank", [1, 2])
def test_nkp_is_scale_invariant_at_the_extremes(c, rank):
    g = np.random.default_rng(0)
    M = np.kron(g.standard_normal((2, 3)), g.standard_normal((4, 2))) + 1e-3 * g.standard_normal((8, 6))
    ref = nearest_kronecker_product(M, (2, 3), (4, 2), rank=rank)
    res = nearest_kronecker_product(M * c, (2, 3), (4, 2), rank=rank)
    assert np.isfinite(res.A).all() and np.isfinite(res.B).all()
    tol = 100 * EPS64 * np.linalg.norm(M)
    # compared term by term, each scaled by sqrt(c) so that nothing over/underflows in the test
    approx = sum(np.kron(a / np.sqrt(c), b / np.sqrt(c)) for a, b in zip(res.A, res.B, strict=True))
    assert np.max(np.abs(approx - ref.to_dense())) <= tol
    np.testing.assert_allclose(res.singular_values / c, ref.singular_values, rtol=100 * EPS64)
    assert res.error_bound / c == pytest.approx(ref.error_bound, rel=1e-6, abs=tol)
    assert res.error_bound_relative == pytest.approx(ref.error_bound_relative, rel=1e-6, abs=100 * EPS64)


@pytest.mark.parametrize("mode", ["exact", "pi"])
def test_kfac_with_factors_near_the_ends_of_the_range(mode):
    # A, G ~ 1e200 (their eigenvalue products 1e400), grad ~ 1e300: the step ~ 1e-100 is representable
    rng = np.random.default_rng(1)
    A, G = spd(6, 1e3, 1), spd(4, 1e2, 2)
    grad = rng.standard_normal((4, 6))
    if mode == "exact":
        V = kfac_solve(grad * 1e300, A * 1e200, G * 1e200, damping=1e300, damping_mode=mode)  # lambda = 1e-100 relative
        F = np.kron(A, G) + 1e-100 * np.eye(24)
    else:
        V = kfac_solve(grad * 1e300, A * 1e200, G * 1e200, damping=1e300, damping_mode=mode)
        pi = np.sqrt((np.trace(A) / 6) / (np.trace(G) / 4))
        s = np.sqrt(1e300) / 1e200  # sqrt(lambda) in the units of A and G
        F = np.kron(A + pi * s * np.eye(6), G + s / pi * np.eye(4))
    ref = np.linalg.solve(F, vecF(grad))
    assert np.isfinite(V).all()
    assert np.linalg.norm(vecF(V) * 1e100 - ref) <= 10 * np.linalg.cond(F) * EPS64 * np.linalg.norm(ref)
    with pytest.raises(ValueError, match="overflows float32"):
        kfac_solve(
            grad.astype(np.float32), (A * 1e-36).astype(np.float32), (G * 1e-36).astype(np.float32), damping=1e-45
        )
