"""Every numba kernel against its naive numpy twin (tests/reference.py).

CI also runs this module with NUMBA_DISABLE_JIT=1, so the kernels' Python logic is exercised
with tracebacks; the sizes stay small for that reason.
"""

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from linalg_lowrank import _kernels

from . import reference

pytestmark = pytest.mark.kernel  # every test here runs again with NUMBA_DISABLE_JIT=1

EPS = np.finfo(np.float64).eps


def _dot_error_scale(A, x):
    """Componentwise rounding scale of A @ x and A.T @ (A @ x): n * eps * (|A| |x|) etc."""
    A64 = np.abs(np.asarray(A, dtype=np.float64))
    m, n = A64.shape
    ay = A64 @ np.abs(x)
    return (n + 2) * EPS * ay, (m + n + 4) * EPS * (A64.T @ ay)


@st.composite
def matrix_and_vector(draw, max_dim=24):
    m = draw(st.integers(1, max_dim))
    n = draw(st.integers(1, max_dim))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    A = draw(arrays(dtype, (m, n), elements=st.floats(-1e3, 1e3, width=32)))
    x = draw(arrays(np.float64, n, elements=st.floats(-1e3, 1e3)))
    return A, x


@given(matrix_and_vector(), st.integers(1, 5))
def test_gram_matvec_matches_reference(case, n_chunks):
    A, x = case
    y_ref, z_ref = reference.gram_matvec(A, x)
    ey, ez = _dot_error_scale(A, x)
    y, z = np.empty(A.shape[0]), np.empty(A.shape[1])
    _kernels.gram_matvec(A, x, y, z, np.empty((n_chunks, A.shape[1])))
    assert np.all(np.abs(y - y_ref) <= ey + 1e-300)
    assert np.all(np.abs(z - z_ref) <= ez + 1e-300)
    y2, z2 = np.empty_like(y), np.empty_like(z)
    _kernels.gram_matvec_serial(A, x, y2, z2)
    assert np.all(np.abs(z2 - z_ref) <= ez + 1e-300)


@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_gram_matvec_stack_matches_reference(b, m, n, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((b, m, n))
    X = rng.standard_normal((b, n))
    active = np.array(sorted(rng.choice(b, size=rng.integers(1, b + 1), replace=False)), dtype=np.int64)
    Y, Z = np.full((b, m), -7.0), np.full((b, n), -7.0)
    ys = np.ldexp(1.0, rng.integers(-3, 4, size=b))  # per-matrix scale factors (powers of two)
    zs = np.ldexp(1.0, rng.integers(-3, 4, size=b))
    _kernels.gram_matvec_stack(A, X, Y, Z, active, ys, zs)
    for k in range(b):
        if k in active:
            y_ref, z_ref = reference.gram_matvec(A[k], X[k], ys[k], zs[k])
            ey, ez = _dot_error_scale(A[k], X[k])
            assert np.all(np.abs(Y[k] - y_ref) <= ey * ys[k])
            assert np.all(np.abs(Z[k] - z_ref) <= ez * ys[k] ** 2 * zs[k])
        else:  # inactive problems are left alone
            assert np.all(Y[k] == -7.0) and np.all(Z[k] == -7.0)


@given(matrix_and_vector(), st.floats(0.0, 2.0), st.booleans(), st.integers(1, 4))
def test_rank1_deflate_rows_matches_reference(case, decay, in_place, n_chunks):
    W, v = case
    W = W.copy()
    expected, y_ref, z_ref = reference.rank1_deflate_rows(W, v, decay)
    ey, ez = _dot_error_scale(W, v)
    out = W if in_place else np.empty_like(W)
    y, z = np.empty(W.shape[0]), np.empty(W.shape[1])
    _kernels.rank1_deflate_rows(W, v, decay, out, y, z, np.empty((n_chunks, W.shape[1])))
    assert np.all(np.abs(y - y_ref) <= ey + 1e-300)
    assert np.all(np.abs(z - z_ref) <= ez + 1e-300)  # from the rows before they were overwritten
    # one rounding of the stored dtype on top of the dot-product error
    tol = np.finfo(W.dtype).eps * np.abs(expected.astype(np.float64)) + decay * np.outer(ey, np.abs(v)) * 2 + 1e-300
    assert np.all(np.abs(out.astype(np.float64) - expected.astype(np.float64)) <= 2 * tol)


def test_gram_matvec_result_independent_of_thread_scheduling():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((300, 200))
    x = rng.standard_normal(200)
    scratch = np.empty((numba.get_num_threads(), 200))
    runs = []
    for _ in range(3):
        y, z = np.empty(300), np.empty(200)
        _kernels.gram_matvec(A, x, y, z, scratch)
        runs.append((y.copy(), z.copy()))
    for y, z in runs[1:]:
        assert np.array_equal(y, runs[0][0]) and np.array_equal(z, runs[0][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_matrix_is_accumulated_in_float64(dtype):
    # The kernel must not round intermediate sums to float32: compare with exact float64 products.
    rng = np.random.default_rng(1)
    A = rng.standard_normal((64, 48)).astype(dtype)
    x = rng.standard_normal(48)
    y, z = np.empty(64), np.empty(48)
    _kernels.gram_matvec_serial(A, x, y, z)
    _, z_ref = reference.gram_matvec(A, x)
    assert np.max(np.abs(z - z_ref)) <= 1e-12 * np.max(np.abs(z_ref))


@given(st.integers(1, 30), st.integers(0, 2**32 - 1), st.sampled_from(["random", "clustered", "tiny_offdiag"]))
def test_tridiagonal_top_matches_dense_eigh(j, seed, kind):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(j)
    b = rng.standard_normal(max(j - 1, 0))
    if kind == "clustered":
        a = 1.0 + 1e-9 * a
    elif kind == "tiny_offdiag":
        b = 1e-12 * b
    top, second, s = _kernels.tridiagonal_top(a, np.concatenate([b, [0.0]]), j)
    top_ref, second_ref, s_ref = reference.tridiagonal_top(a, b)
    scale = np.abs(a).max() + 2 * (np.abs(b).max() if j > 1 else 0.0)
    assert abs(top - top_ref) <= 8 * EPS * scale
    if j > 1:
        assert abs(second - second_ref) <= 8 * EPS * scale
    # the eigenvector is accurate to eps * scale / gap; the residual is what inverse iteration guarantees
    T = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    assert abs(np.linalg.norm(s) - 1.0) <= 1e-12
    assert np.linalg.norm(T @ s - top * s) <= 100 * j * EPS * scale
    gap = top_ref - second_ref if j > 1 else np.inf
    if gap > 1e-6 * scale:
        assert min(np.linalg.norm(s - s_ref), np.linalg.norm(s + s_ref)) <= 100 * j * EPS * scale / gap


# The Krylov engine that used these kernels (lanczos_small, power_pilot before it) is tested against its
# numpy twin in tests/test_krylov.py.


@given(matrix_and_vector(), st.integers(-1074, 1023), st.integers(1, 3))
def test_scaled_gram_matvec_is_the_product_of_the_scaled_matrix(case, e, n_chunks):
    # A of any float scale, 2^e with |e| up to the float64 limits: c1 c2 = 2^-e keeps y and z at the
    # scale of A / 2^e (here ~1), where the reference computes them from the unit-scale matrix.
    from linalg_lowrank._operators import scale_factors

    A1, x = case
    A1 = A1.astype(np.float64)
    amax = np.abs(A1).max()
    if amax == 0:
        return
    A1 = A1 / 2.0 ** np.frexp(amax)[1]  # max|A1| in [0.5, 1), exactly
    with np.errstate(under="ignore"):
        A = np.ldexp(A1, e)  # the stored matrix; its entries may lose low bits where they go subnormal
    A_back = np.ldexp(A, -e)  # what A / 2^e is exactly
    c1, c2 = (float(c) for c in scale_factors(e))
    y_ref, z_ref = reference.gram_matvec(A_back, x)
    ey, ez = _dot_error_scale(A_back, x)
    y, z = np.empty(A.shape[0]), np.empty(A.shape[1])
    _kernels.gram_matvec(A, x * c1, y, z, np.empty((n_chunks, A.shape[1])), c2, c1)
    # the scaled vector x c1 and the row products y c1 may go subnormal: an absolute error of one
    # subnormal ulp (2^-1074) times |A| per term, negligible at the scale checked here
    slack_y = 2.0**-60 * (np.abs(A_back).sum(axis=1) * np.abs(x).max() + 1e-300)
    assert np.all(np.abs(y - y_ref) <= ey + slack_y)
    slack_z = 2.0**-60 * (np.abs(A_back).T @ (np.abs(y_ref) + slack_y) + 1e-300)
    assert np.all(np.abs(z - z_ref) <= ez + slack_z)
