"""The one result contract (results.Result): every public result class follows it after real calls.

Each class gets one real call below; a public class without one fails `test_every_public_result_class_is_covered`,
so a new result class cannot skip the contract.
"""

import dataclasses

import numpy as np
import pytest
import scipy.linalg

import linalg_lowrank as ll
from linalg_lowrank import lab
from linalg_lowrank.results import Result

from .strategies import random_orthogonal

_RNG = np.random.default_rng(0)
_A = _RNG.standard_normal((40, 6)) @ _RNG.standard_normal((6, 30))  # rank 6
_S = _A.T @ _A + np.eye(30)  # symmetric positive definite


def _low_rank_product():
    return ll.pinv_lowrank(_RNG.standard_normal((20, 3)), _RNG.standard_normal((3, 15)))


# one real call per public result class; `stack` calls return a batch of results
CALLS = {
    "PowerIterationResult": lambda: ll.power_iteration(_A, rng=0),
    "TopSingularValuesResult": lambda: ll.top_singular_values(_A, 3, rng=0),
    "SpectrumStatistics": lambda: ll.spectrum_statistics(
        scipy.linalg.svdvals(_A)[:5], frobenius_norm=float(np.linalg.norm(_A)), shape=_A.shape
    ),
    "BestRankResult": lambda: ll.best_rank(_A, 4),
    "RandomizedSVDResult": lambda: ll.randomized_svd(_A, 4, rng=0),
    "LowRankFactors": _low_rank_product,
    "CRProductResult": lambda: ll.cr_matmul(_A.T, _A, 10, rng=0, return_info=True),
    "IDResult": lambda: ll.interpolative_decomposition(_A, 6, rng=0),
    "CURResult": lambda: ll.cur(_A, 6, rng=0),
    "MsignResult": lambda: ll.msign(_A, return_info=True),
    "InverseRootResult": lambda: ll.inverse_pth_root(_S, 2, return_info=True),
    "SymmetricEig": lambda: ll.symmetric_eig(_S),
    "DiagonalEstimate": lambda: ll.hutchinson_diagonal(_S, n_matvecs=12, rng=0),
    "TraceEstimate": lambda: ll.hutchinson_trace(_S, n_matvecs=12, rng=0),
    "KroneckerApproximation": lambda: ll.nearest_kronecker_product(_A[:, :30], (5, 5), (8, 6), rank=2),
    "WeightRMSSimulation": lambda: ll.simulate_weight_rms("adamw", n=20, steps=10, lr=1e-2, weight_decay=0.1),
    "QuasiNewtonUpdate": lambda: ll.bfgs_update(np.eye(3), np.ones(3), np.array([1.0, 2.0, 3.0]), return_info=True),
    "LoraGAInit": lambda: ll.lora_ga_init(_A, 2, method="exact"),
    "Dataset": lambda: lab.load_digits(n_train=100, seed=0),
    "TrainResult": lambda: _train(),
}


def _train():
    data = lab.load_digits(n_train=100, seed=0)
    model = lab.LogisticRegression(data.n_features, data.n_classes)
    return lab.train(
        model,
        model.init_params(rng=0),
        data.X_train,
        data.y_train,
        optimizer="sgd",
        hyper={"lr": 0.1},
        n_steps=2,
        rng=0,
    )


def _public_dataclasses():
    found = {}
    for module in (ll, lab):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and dataclasses.is_dataclass(obj):
                found[name] = obj
    return found


_RESULTS = {}


def _result(name):
    if name not in _RESULTS:
        _RESULTS[name] = CALLS[name]()
    return _RESULTS[name]


def test_every_public_result_class_is_covered():
    classes = _public_dataclasses()
    # the audit's records are plain data rows with their own to_dict; every other dataclass is a result
    classes = {k: v for k, v in classes.items() if v.__module__ != "linalg_lowrank.audit"}
    assert set(classes) == set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_class_derives_from_the_base_and_writes_no_repr(name):
    res = _result(name)
    cls = type(res)
    assert cls.__name__ == name and isinstance(res, Result)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert cls.__repr__ is Result.__repr__


def _expected_value_text(value):
    """An independent spelling of the documented formats, for the fields whose format is fixed."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value), ".6g")
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return f"array(shape={value.shape}, dtype={value.dtype})"
    return None


def _top_level_items(text):
    """The comma-separated items inside the outermost parentheses of ``Name(...)``."""
    inner = text[text.index("(") + 1 : -1]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i].strip())
            start = i + 1
    items.append(inner[start:].strip())
    return [item for item in items if item]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_repr_is_generated_from_the_fields_in_order(name):
    res = _result(name)
    text = repr(res)
    assert text.startswith(f"{name}(") and text.endswith(")")
    fields = [f.name for f in dataclasses.fields(res)]
    # the top-level items are `name=value`, one per field, in declaration order
    assert [item.split("=", 1)[0] for item in _top_level_items(text)] == fields
    for f in fields:
        want = _expected_value_text(getattr(res, f))
        if want is not None:
            assert f"{f}={want}" in text, (f, want, text)
    assert len(text.splitlines()) in (1, len(fields) + 2)


def test_repr_formats_a_stack_field_by_shape():
    res = ll.power_iteration(np.stack([_A, 2 * _A]), rng=0)
    assert "sigma=array(shape=(2,), dtype=float64)" in repr(res)
    assert "converged=array(shape=(2,), dtype=bool)" in repr(res)


# -- converged is a bool after real calls ----------------------------------------------------------
CONVERGED_CALLS = {
    "power_iteration": lambda: ll.power_iteration(_A, rng=0),
    "difference_norm": lambda: ll.difference_norm(_A, 0.5 * _A, rng=0),
    "top_singular_values": lambda: ll.top_singular_values(_A, 3, rng=0),
    "randomized_svd": lambda: ll.randomized_svd(_A, 4, rng=0),
    "randomized_svd tol": lambda: ll.randomized_svd(_A, tol=1e-6 * np.linalg.norm(_A), rng=0),
    "inverse_pth_root eigh": lambda: ll.inverse_pth_root(_S, 2, method="eigh", return_info=True),
    "inverse_pth_root newton": lambda: ll.inverse_pth_root(_S, 2, method="newton", return_info=True),
    "hutchinson_diagonal": lambda: ll.hutchinson_diagonal(_S, n_matvecs=12, rng=0),
    "hutchinson_diagonal rtol": lambda: ll.hutchinson_diagonal(_S, n_matvecs=20, rtol=10.0, rng=0),
    "hutchinson_trace": lambda: ll.hutchinson_trace(_S, n_matvecs=12, rng=0),
    "hutchinson_trace rtol": lambda: ll.hutchinson_trace(_S, n_matvecs=20, rtol=10.0, rng=0),
    "hutchinson_trace exact": lambda: ll.hutchinson_trace(_S, n_matvecs=30, rng=0),
}


@pytest.mark.parametrize("call", sorted(CONVERGED_CALLS))
def test_converged_is_a_bool(call):
    res = CONVERGED_CALLS[call]()
    assert type(res.converged) is bool and res.converged


def test_converged_is_a_bool_array_for_stacks():
    res = ll.power_iteration(np.stack([_A, _A.copy()]), rng=0)
    assert isinstance(res.converged, np.ndarray) and res.converged.dtype == bool and res.converged.shape == (2,)


# -- decompositions unpack to the same objects as their fields, and those are right ---------------
def test_power_iteration_unpacks_as_sigma_u_v():
    res = ll.power_iteration(_A, rng=0)
    sigma, u, v = res
    assert sigma is res.sigma and u is res.u and v is res.v
    assert sigma == pytest.approx(scipy.linalg.svdvals(_A)[0], rel=1e-9)
    np.testing.assert_allclose(_A @ v, sigma * u, atol=1e-8 * sigma)


@pytest.mark.parametrize("func", ["best_rank", "randomized_svd"])
def test_svd_like_results_unpack_as_U_s_Vt(func):
    res = getattr(ll, func)(_A, 6, **({"rng": 0} if func == "randomized_svd" else {}))
    U, s, Vt = res
    assert U is res.U and s is res.s and Vt is res.Vt
    # A has rank 6: both give its SVD, checked against LAPACK's singular values and the product
    np.testing.assert_allclose(s, scipy.linalg.svdvals(_A)[:6], rtol=1e-10)
    np.testing.assert_allclose((U * s) @ Vt, _A, atol=1e-10 * np.linalg.norm(_A))


def test_low_rank_factors_unpack_as_U_s_Vt():
    L, R = _RNG.standard_normal((20, 3)), _RNG.standard_normal((3, 15))
    res = ll.pinv_lowrank(L, R)
    U, s, Vt = res
    assert U is res.U and s is res.s and Vt is res.Vt
    np.testing.assert_allclose((U * s) @ Vt, np.linalg.pinv(L @ R), atol=1e-10)


def test_interpolative_decomposition_unpacks_as_indices_interp():
    res = ll.interpolative_decomposition(_A, 6, rng=0)
    indices, interp = res
    assert indices is res.indices and interp is res.interp
    np.testing.assert_allclose(_A[:, indices] @ interp, _A, atol=1e-9 * np.linalg.norm(_A))
    # scipy's (idx, proj) describes the same kind of factorization: A[:, idx[k:]] = A[:, idx[:k]] @ proj
    np.testing.assert_allclose(interp[:, indices], np.eye(6), atol=1e-12)


def test_cur_unpacks_as_C_U_R():
    res = ll.cur(_A, 6, rng=0)
    C, U, R = res
    assert C is res.C and U is res.U and R is res.R
    np.testing.assert_array_equal(C, _A[:, res.cols])
    np.testing.assert_array_equal(R, _A[res.rows, :])
    np.testing.assert_allclose(C @ U @ R, _A, atol=1e-9 * np.linalg.norm(_A))


def test_hutchinson_results_unpack_as_estimate_stderr():
    D = np.diag(np.arange(1.0, 9.0))
    diag, stderr = res = ll.hutchinson_diagonal(D, n_matvecs=6, method="hutchinson", rng=0)
    assert diag is res.diagonal and stderr is res.stderr
    np.testing.assert_array_equal(diag, np.arange(1.0, 9.0))  # random signs are exact on a diagonal
    trace, stderr = res = ll.hutchinson_trace(D, n_matvecs=6, method="hutchinson", rng=0)
    assert trace == res.trace == 36.0 and stderr == res.stderr


def test_kronecker_and_lora_unpack():
    Ka, Kb = np.array([[2.0, 1.0], [1.0, 2.0]]), np.diag([1.0, 3.0, 2.0])
    res = ll.nearest_kronecker_product(np.kron(Ka, Kb), (2, 2), (3, 3))
    A, B = res
    assert A is res.A and B is res.B
    np.testing.assert_allclose(np.kron(A[0], B[0]), np.kron(Ka, Kb), atol=1e-12)
    rng = np.random.default_rng(1)
    G = (random_orthogonal(rng, 12, 8) * np.arange(8.0, 0.0, -1.0)) @ random_orthogonal(rng, 8, 8).T
    res = ll.lora_ga_init(G, 2, method="exact")
    A, B, offset = res
    assert A is res.A and B is res.B and offset is res.offset


@pytest.mark.parametrize(
    "name", ["TopSingularValuesResult", "MsignResult", "InverseRootResult", "SymmetricEig", "CRProductResult"]
)
def test_results_that_are_not_decompositions_refuse_to_unpack(name):
    with pytest.raises(TypeError, match="does not unpack"):
        tuple(_result(name))


# -- the return policy -----------------------------------------------------------------------------
def test_value_named_functions_return_the_value_and_the_result_on_request():
    Q = ll.msign(_A)
    info = ll.msign(_A, return_info=True)
    assert type(Q) is np.ndarray and isinstance(info, ll.MsignResult)
    np.testing.assert_array_equal(Q, info.Q)
    P = ll.cr_matmul(_A.T, _A, 10, rng=3)
    info = ll.cr_matmul(_A.T, _A, 10, rng=3, return_info=True)
    assert type(P) is np.ndarray and isinstance(info, ll.CRProductResult)
    np.testing.assert_array_equal(P, info.product)
    root = ll.inverse_pth_root(_S, 2)
    info = ll.inverse_pth_root(_S, 2, return_info=True)
    assert type(root) is np.ndarray and isinstance(info, ll.InverseRootResult)
    np.testing.assert_array_equal(root, info.root)
    assert type(ll.pinv(_A)) is np.ndarray and type(ll.spectral_norm(_A, rng=0)) is float


# -- renamed fields read for one release, with a warning -------------------------------------------
RENAMED = [
    ("BestRankResult", "error_fro", "error_bound"),
    ("BestRankResult", "error_spectral", "error_bound_spectral"),
    ("RandomizedSVDResult", "n_power_iter", "n_iter"),
    ("CRProductResult", "error_bound_rms", "error_bound"),
    ("MsignResult", "steps", "n_iter"),
    ("SymmetricEig", "n_steps", "n_iter"),
    ("DiagonalEstimate", "error_bound", "error_estimate"),
    ("TraceEstimate", "error_bound", "error_estimate"),
    ("KroneckerApproximation", "error", "error_bound"),
    ("KroneckerApproximation", "rel_error", "error_bound_relative"),
    ("TrainResult", "n_steps", "n_iter"),
]


@pytest.mark.parametrize("name, old, new", RENAMED)
def test_old_field_names_warn_and_read_the_new_field(name, old, new):
    res = _result(name)
    with pytest.warns(DeprecationWarning, match=f"`{name}.{old}` was renamed `{new}`"):
        value = getattr(res, old)
    assert value is getattr(res, new)


def test_unknown_attributes_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        _result("BestRankResult").nonsense  # noqa: B018
    assert not hasattr(_result("PowerIterationResult"), "error_fro")


@pytest.mark.parametrize("name", ["RandomizedSVDResult", "TraceEstimate", "PowerIterationResult"])
def test_results_pickle_and_copy(name):
    # the renamed-field hook (__getattr__) must not break the protocols that probe for attributes
    import copy
    import pickle

    res = _result(name)
    for twin in (pickle.loads(pickle.dumps(res)), copy.deepcopy(res)):
        assert repr(twin) == repr(res)
        for f in dataclasses.fields(res):
            np.testing.assert_array_equal(
                np.asarray(getattr(twin, f.name), dtype=object), np.asarray(getattr(res, f.name), dtype=object)
            )
