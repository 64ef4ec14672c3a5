"""Every input kind through every public function that takes a matrix: one table, two outcomes.

For each (function, input kind) pair the table below says what happens, and the test checks
exactly that: either the function gives the same answer as for the dense float64 array (checked
against numpy/scipy, or against the dense float64 call where the answer is the algorithm's own,
with a tolerance from the dtype's eps and the problem size), or it raises the one documented
TypeError of `_operators.as_operator` (``Refused``). The only other outcome in the table is a
stack given to a function that takes one matrix, which is a ValueError about the shape.

The same table is in docs/user_guide.rst ("What you can pass").
"""

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

import linalg_lowrank as ll
from linalg_lowrank import _operators, config

M, N = 6, 5
SINGULAR_VALUES = np.array([4.0, 2.0, 1.0, 0.5, 0.25])  # well separated: every solver converges fast
EIGENVALUES = np.array([4.0, 2.0, 1.0, 0.5, 0.25])


def _base():
    rng = np.random.default_rng(12)
    U, _ = np.linalg.qr(rng.standard_normal((M, N)))
    V, _ = np.linalg.qr(rng.standard_normal((N, N)))
    A = (U * SINGULAR_VALUES) @ V.T
    Q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    S = (Q * EIGENVALUES) @ Q.T
    return A, (S + S.T) / 2  # exactly symmetric as stored


A64, S64 = _base()


# -- input kinds -----------------------------------------------------------------------------------
class ArrayLike:
    """Only __array__ (as pandas, xarray and many array libraries offer)."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


class DLPackOnly:
    """Only __dlpack__ on the CPU (as torch, jax and cupy-on-host tensors offer)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class MatvecOnly:
    """shape, matvec and rmatvec, nothing else: no dtype, no matmat, no rmatmat."""

    def __init__(self, a):
        self._a = a
        self.shape = a.shape

    def matvec(self, x):
        return self._a @ x

    def rmatvec(self, y):
        return self._a.T @ y


def _negative_strides(a):
    flipped = np.ascontiguousarray(a[::-1, ::-1])
    return flipped[::-1, ::-1]  # same entries as a, both strides negative


def _view(a):
    big = np.zeros((a.shape[0] + 3, 2 * a.shape[1] + 1))
    big[2 : 2 + a.shape[0], 1 : 1 + 2 * a.shape[1] : 2] = a
    return big[2 : 2 + a.shape[0], 1 : 1 + 2 * a.shape[1] : 2]


def _read_only(a):
    b = a.copy()
    b.flags.writeable = False
    return b


def _memmap(a, tmp):
    mm = np.memmap(tmp / f"m{a.shape}.dat", dtype=a.dtype, mode="w+", shape=a.shape)
    mm[:] = a
    mm.flush()
    return np.memmap(tmp / f"m{a.shape}.dat", dtype=a.dtype, mode="r", shape=a.shape)


#: kind -> (make(a, tmp) -> input, group). Groups decide the outcome per function.
KINDS = {
    "C ndarray": (lambda a, t: np.ascontiguousarray(a), "dense"),
    "F ndarray": (lambda a, t: np.asfortranarray(a), "dense"),
    "strided view": (lambda a, t: _view(a), "dense"),
    "negative strides": (lambda a, t: _negative_strides(a), "dense"),
    "read-only": (lambda a, t: _read_only(a), "dense"),
    "memmap": (_memmap, "dense"),
    "float32": (lambda a, t: a.astype(np.float32), "dense"),
    "list of floats": (lambda a, t: a.tolist(), "dense"),
    "__array__ object": (lambda a, t: ArrayLike(a), "dense"),
    "__dlpack__ object": (lambda a, t: DLPackOnly(np.ascontiguousarray(a)), "dense"),
    "int array": (lambda a, t: np.rint(8 * a).astype(np.int64), "int"),
    "list of ints": (lambda a, t: np.rint(8 * a).astype(np.int64).tolist(), "int"),
    **{
        f"sparse {fmt}": ((lambda a, t, fmt=fmt: scipy.sparse.csr_matrix(a).asformat(fmt)), "sparse")
        for fmt in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia")
    },
    "sparse csr_array": (lambda a, t: scipy.sparse.csr_array(a), "sparse"),
    "LinearOperator": (lambda a, t: scipy.sparse.linalg.aslinearoperator(a), "operator"),
    "matvec/rmatvec object": (lambda a, t: MatvecOnly(a), "operator"),
    "callable + shape": (lambda a, t: lambda X: a @ X, "callable"),
    "stack": (lambda a, t: np.stack([a, 0.5 * a, -a]), "stack"),
}

SAME = "same answer"
DTYPE = (TypeError, r"`[\w\[\]]+` has dtype int64: integer or boolean input is not supported")
NOT_DENSE = (TypeError, r"`[\w\[\]]+` is a (scipy\.sparse matrix|matrix-free operator|callable).*needs")
CALLABLE = (TypeError, r"`[\w\[\]]+` is a callable: .* needs products with A and A\^T")
ONE_MATRIX = (ValueError, r"must (be 2-D|have shape \(5, 5\))")

# group -> outcome, per family of support
MATRIX_FREE = {"dense": SAME, "int": DTYPE, "sparse": SAME, "operator": SAME, "callable": CALLABLE}
DENSE_ONLY = {"dense": SAME, "int": DTYPE, "sparse": NOT_DENSE, "operator": NOT_DENSE, "callable": NOT_DENSE}
ESTIMATORS = {"dense": SAME, "int": DTYPE, "sparse": SAME, "operator": SAME, "callable": SAME, "stack": ONE_MATRIX}


def _value(res, field):
    """The array a value-named function returns (or, where it still returns its result, that field)."""
    return res if isinstance(res, np.ndarray) else getattr(res, field)


def _outer(u, v):
    return u[..., :, None] * v[..., None, :]


def _svd_ref(a):
    U, s, Vt = np.linalg.svd(a, full_matrices=False)
    return s, _outer(U[..., 0], Vt[..., 0, :])


def _per_matrix(fn, stack):
    return np.stack([fn(a) for a in stack])


# -- the functions ---------------------------------------------------------------------------------
# name -> (call(X, a64) -> comparable array, reference(a64) -> array, symmetric input?, outcomes,
#          solver tolerance or None). ``a64`` is the float64 matrix X stands for (for callables,
#          whose size must be passed, and for second arguments).
def _power(X, a):
    res = ll.power_iteration(X, rng=0, tol=_solver_tol(X))
    return np.concatenate([np.atleast_1d(res.sigma).ravel(), _outer(res.u, res.v).ravel()])


def _power_ref(a):
    s, uv = _svd_ref(a)
    return np.concatenate([np.atleast_1d(s[..., 0]).ravel(), uv.ravel()])


def _solver_tol(X):
    dtype = np.float32 if getattr(X, "dtype", None) == np.float32 else np.float64
    return 100 * np.finfo(dtype).eps


def _hutch_n(X, a):
    return {"n": a.shape[0]} if callable(X) and not hasattr(X, "matvec") else {}


def _randomized(X, a):
    res = ll.randomized_svd(X, N, rng=0)
    return np.concatenate([res.s, ((res.U * res.s) @ res.Vt).ravel()])


B_RIGHT = np.random.default_rng(3).standard_normal((N, 4))


def _cr_ref(a):
    return _value(ll.cr_matmul(a, B_RIGHT, 3, rng=0), "product")


def _kron_x(a):
    return np.arange(a.shape[1] * 2, dtype=np.float64)


FUNCTIONS = {
    "power_iteration": (_power, _power_ref, False, {**MATRIX_FREE, "stack": SAME}),
    "spectral_norm": (
        lambda X, a: np.asarray(ll.spectral_norm(X, rng=0)),
        lambda a: np.linalg.norm(a, 2, axis=(-2, -1)),
        False,
        {**MATRIX_FREE, "stack": SAME},
    ),
    "spectral_norm_grad": (
        lambda X, a: np.asarray(ll.spectral_norm_grad(X, rng=0)),
        lambda a: _svd_ref(a)[1],
        False,
        {**MATRIX_FREE, "stack": SAME},
    ),
    "best_rank1": (
        lambda X, a: np.asarray(ll.best_rank1(X, rng=0)),
        lambda a: _svd_ref(a)[0][..., :1, None] * _svd_ref(a)[1],
        False,
        {**MATRIX_FREE, "stack": SAME},
    ),
    "top_singular_values": (
        lambda X, a: np.asarray(ll.top_singular_values(X, 2, rng=0).values),
        lambda a: np.linalg.svd(a, compute_uv=False)[..., :2],
        False,
        {**DENSE_ONLY, "stack": SAME},
    ),
    "spectral_weight_decay": (
        lambda X, a: ll.spectral_weight_decay(X, 0.5, v=np.ones(a.shape[:-2] + (a.shape[-1],)))[0],
        lambda a: ll.spectral_weight_decay(a, 0.5, v=np.ones(a.shape[:-2] + (a.shape[-1],)))[0],
        False,
        {**DENSE_ONLY, "stack": SAME},
    ),
    "randomized_svd": (
        _randomized,
        lambda a: np.concatenate([np.linalg.svd(a, compute_uv=False), a.ravel()]),
        False,
        {**MATRIX_FREE, "stack": ONE_MATRIX},
    ),
    "best_rank": (
        lambda X, a: ll.best_rank(X, 2).s,
        lambda a: np.linalg.svd(a, compute_uv=False)[:2],
        False,
        {**DENSE_ONLY, "stack": ONE_MATRIX},
    ),
    "pinv": (lambda X, a: ll.pinv(X), np.linalg.pinv, False, {**DENSE_ONLY, "stack": ONE_MATRIX}),
    "pinv_lowrank": (
        lambda X, a: ll.pinv_lowrank(X, np.eye(N)).to_array(),
        np.linalg.pinv,
        False,
        {**DENSE_ONLY, "stack": ONE_MATRIX},
    ),
    "cr_matmul": (
        lambda X, a: _value(ll.cr_matmul(X, B_RIGHT, 3, rng=0), "product"),
        _cr_ref,
        False,
        {**DENSE_ONLY, "stack": ONE_MATRIX},
    ),
    "interpolative_decomposition": (
        lambda X, a: ll.interpolative_decomposition(X, N, rng=0).reconstruct(a),
        lambda a: a,
        False,
        {**DENSE_ONLY, "stack": ONE_MATRIX},
    ),
    "cur": (
        lambda X, a: ll.cur(X, N, rng=0).reconstruct(a),
        lambda a: a,
        False,
        {**DENSE_ONLY, "stack": ONE_MATRIX},
    ),
    "msign": (
        lambda X, a: _value(ll.msign(X, steps=30, coefficients="polar_express"), "Q"),
        lambda a: _per_matrix(ll.polar, a) if a.ndim > 2 else ll.polar(a),
        False,
        {**DENSE_ONLY, "stack": SAME},
    ),
    "polar": (
        lambda X, a: ll.polar(X),
        lambda a: _per_matrix(lambda b: scipy.linalg.polar(b)[0], a) if a.ndim > 2 else scipy.linalg.polar(a)[0],
        False,
        {**DENSE_ONLY, "stack": SAME},
    ),
    "nearest_kronecker_product": (
        lambda X, a: ll.nearest_kronecker_product(X, (2, 1), (3, 5), rank=2).to_dense(),
        lambda a: a,  # rank min(2*1, 3*5) = 2: exact
        False,
        {**DENSE_ONLY, "stack": ONE_MATRIX},
    ),
    "kron_matvec": (
        lambda X, a: ll.kron_matvec(X, np.eye(2), _kron_x(a)),
        lambda a: np.kron(a, np.eye(2)) @ _kron_x(a),
        False,
        {**DENSE_ONLY, "stack": ONE_MATRIX},
    ),
    "hutchinson_diagonal": (
        lambda X, a: ll.hutchinson_diagonal(X, n_matvecs=a.shape[0], rng=0, **_hutch_n(X, a)).diagonal,
        np.diag,
        True,
        ESTIMATORS,
    ),
    "hutchinson_trace": (
        lambda X, a: np.asarray(ll.hutchinson_trace(X, n_matvecs=a.shape[0], rng=0, **_hutch_n(X, a)).trace),
        np.trace,
        True,
        ESTIMATORS,
    ),
    "inverse_pth_root": (
        lambda X, a: np.asarray(ll.inverse_pth_root(X, 2)),
        lambda a: (
            _per_matrix(lambda b: np.linalg.inv(scipy.linalg.sqrtm(b)), a)
            if a.ndim > 2
            else np.linalg.inv(scipy.linalg.sqrtm(a))
        ),
        True,
        {**DENSE_ONLY, "stack": SAME},
    ),
    "symmetric_eig": (
        lambda X, a: ll.symmetric_eig(X).eigenvalues,
        lambda a: np.linalg.eigvalsh(a)[..., ::-1],
        True,
        {**DENSE_ONLY, "stack": SAME},
    ),
    "shampoo_precondition": (
        lambda X, a: ll.shampoo_precondition(np.ones((2, N)), [np.eye(2), X], ridge=0.0),
        lambda a: np.ones((2, N)) @ np.linalg.inv(scipy.linalg.sqrtm(scipy.linalg.sqrtm(a))),
        True,
        {**DENSE_ONLY, "stack": ONE_MATRIX},
    ),
    "kfac_solve": (
        lambda X, a: ll.kfac_solve(np.ones((2, N)), X, np.eye(2), damping=0.5),
        lambda a: np.ones((2, N)) @ np.linalg.inv(a + 0.5 * np.eye(N)),  # exact damping, G = I: (A + 0.5 I)^-1
        True,
        {**DENSE_ONLY, "stack": ONE_MATRIX},
    ),
}


def _tolerance(kind_input, reference):
    """Rounding of a small problem: C * n * eps of the input's dtype, times the size of the answer.

    C = 1000 covers the condition numbers of the table's problems (16 for A, and squared, 256 for
    the inverse roots of S) with room for the differing BLAS kernels of the layouts.
    """
    dtype = np.float32 if getattr(kind_input, "dtype", None) == np.float32 else np.float64
    return 1000 * N * np.finfo(dtype).eps * max(1.0, float(np.max(np.abs(reference))))


PAIRS = [(fn, kind) for fn in FUNCTIONS for kind in KINDS]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("inputs")


def test_the_table_covers_every_public_matrix_function():
    takes_a_matrix = {
        "power_iteration", "spectral_norm", "spectral_norm_grad", "best_rank1", "spectral_weight_decay",
        "best_rank", "randomized_svd", "pinv", "pinv_lowrank", "cr_matmul", "interpolative_decomposition",
        "cur", "msign", "polar", "hutchinson_diagonal", "hutchinson_trace", "inverse_pth_root",
        "symmetric_eig", "shampoo_precondition", "kron_matvec", "kfac_solve", "nearest_kronecker_product",
        "top_singular_values",
    }  # fmt: skip
    assert takes_a_matrix <= set(ll.__all__)
    assert set(FUNCTIONS) == takes_a_matrix
    for name, (_, _, _, outcomes) in FUNCTIONS.items():
        assert {group for _, group in KINDS.values()} <= set(outcomes), name


@pytest.mark.parametrize("fn, kind", PAIRS, ids=[f"{f}-{k}" for f, k in PAIRS])
def test_input_kind(fn, kind, tmp):
    call, reference, symmetric, outcomes = FUNCTIONS[fn]
    make, group = KINDS[kind]
    a = S64 if symmetric else A64
    X = make(a, tmp)
    a_stack = np.stack([a, 0.5 * a, -a]) if group == "stack" else a
    if symmetric and group == "stack":
        a_stack = np.stack([a, 0.5 * a, 2 * a])  # positive definite, for the roots
        X = a_stack
    outcome = outcomes[group]
    if outcome != SAME:
        exc, match = outcome
        with pytest.raises(exc, match=match):
            call(X, a_stack)
        return
    got = np.asarray(call(X, a_stack), dtype=np.float64)
    want = np.asarray(reference(a_stack), dtype=np.float64)
    assert got.shape == want.shape
    tol = _tolerance(X, want)
    assert np.max(np.abs(got - want)) <= tol, (fn, kind, np.max(np.abs(got - want)), tol)


# -- what the adapter promises beyond the answers ---------------------------------------------------
@pytest.mark.parametrize(
    "kind", ["C ndarray", "F ndarray", "strided view", "negative strides", "read-only", "memmap", "__dlpack__ object"]
)
def test_dense_input_is_not_copied(kind, tmp):
    X = KINDS[kind][0](A64, tmp)
    op = _operators.as_operator(X)
    source = X._a if isinstance(X, DLPackOnly) else X
    assert op.kind == "dense" and op.numba_fast_path
    assert np.shares_memory(op.array, source)
    assert np.shares_memory(op.dense("f"), source)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil", "dok", "bsr", "dia"])
def test_sparse_is_converted_once_and_never_densified(fmt):
    S = scipy.sparse.csr_matrix(A64).asformat(fmt)
    op = _operators.as_operator(S)
    assert op.kind == "sparse" and op.data.format in ("csr", "csc") and not op.numba_fast_path
    if fmt in ("csr", "csc"):
        assert op.data is S  # already in a product format: no conversion
    x = np.arange(N, dtype=np.float64)
    np.testing.assert_allclose(op.matvec(x), A64 @ x, rtol=0, atol=10 * N * np.finfo(float).eps * 4 * N)


def test_matmat_is_derived_from_matvec_and_checked():
    op = _operators.as_operator(MatvecOnly(A64))
    X = np.random.default_rng(0).standard_normal((N, 3))
    tol = 10 * N * np.finfo(float).eps * np.abs(A64).max() * np.abs(X).max()
    np.testing.assert_allclose(op.matmat(X), A64 @ X, rtol=0, atol=tol)
    np.testing.assert_allclose(op.rmatmat(A64 @ X), A64.T @ (A64 @ X), rtol=0, atol=100 * tol)

    class Broken(MatvecOnly):
        def matvec(self, x):
            return np.full(self.shape[0], np.nan)

    with pytest.raises(ValueError, match="`A`: matmat returned NaN or Inf"):
        _operators.as_operator(Broken(A64)).matmat(X)


def test_matvec_without_rmatvec_is_named():
    class OnlyMatvec:
        shape = (M, N)

        def matvec(self, x):
            return A64 @ x

    with pytest.raises(TypeError, match="`A` has matvec but no rmatvec"):
        ll.randomized_svd(OnlyMatvec(), 2, rng=0)


def test_callable_needs_n():
    with pytest.raises(ValueError, match="`n` is required when `A` is a callable"):
        ll.hutchinson_trace(lambda X: S64 @ X)


def test_non_cpu_dlpack_is_a_type_error():
    class OnDevice(DLPackOnly):
        def __dlpack_device__(self):
            return (2, 0)  # kDLCUDA

        def __dlpack__(self, **kwargs):
            raise BufferError("not on the CPU")

    with pytest.raises(TypeError, match="`A` exposes __dlpack__ but numpy cannot read it"):
        ll.spectral_norm(OnDevice(A64))


def test_one_symmetry_rule_for_dense_and_sparse():
    n = N
    tol = _operators.symmetry_tolerance(n, np.float64) * np.abs(S64).max()
    assert tol == config.SYM_ROUNDOFF * n * np.finfo(np.float64).eps * np.abs(S64).max()
    near, far = S64.copy(), S64.copy()
    near[0, 3] += 0.5 * tol
    far[0, 3] += 2 * tol
    for make in (np.asarray, scipy.sparse.csr_matrix):
        ll.hutchinson_trace(make(near), n_matvecs=n, rng=0)
        with pytest.raises(ValueError, match=r"`A` must be symmetric, got max \|A - A\^T\|"):
            ll.hutchinson_trace(make(far), n_matvecs=n, rng=0)
    # float32 input: the tolerance follows its eps
    assert _operators.symmetry_tolerance(n, np.float32) / _operators.symmetry_tolerance(n, np.float64) == (
        np.finfo(np.float32).eps / np.finfo(np.float64).eps
    )


def test_nonfinite_sparse_entries_are_named_for_every_format():
    bad = scipy.sparse.lil_matrix(A64)
    bad[1, 2] = np.nan
    for fmt in ("lil", "dok", "coo", "csr", "csc", "bsr", "dia"):
        with pytest.raises(ValueError, match="`A` must be finite, its stored entries hold NaN or Inf"):
            ll.randomized_svd(bad.asformat(fmt), 2, rng=0)
