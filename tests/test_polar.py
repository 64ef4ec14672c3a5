"""msign, polar and ns_polynomial against independent references.

The references are scipy's SVD and polar decomposition, and a numpy loop over the published
coefficient schedules (typed here from the papers, not read from polar.py) that composes the odd
quintics p(x) = a x + b x^3 + c x^5. The matrix iteration applies the composed map to every singular
value of A / scale and keeps the singular vectors, so msign(A) must equal U diag(p(s / scale)) V^T.

Rounding tolerance of msign: a backward-stable evaluation perturbs A / scale by about
eps * sqrt(n) in norm, and the composed map amplifies that by at most its Lipschitz constant
max |p'| on [0, s_max / scale] (the Frechet derivative of a singular-value function is bounded by
its divided differences); see ``_map_tol``.
"""

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from linalg_lowrank.polar import (
    MUON_COEFFICIENTS,
    POLAR_EXPRESS_COEFFICIENTS,
    MsignResult,
    msign,
    ns_polynomial,
    polar,
)

from .strategies import from_spectrum, matrices_with_spectrum

# -- independent references ----------------------------------------------------------------------
#: Jordan et al. 2024 (Muon): one quintic at every step.
JORDAN_MUON = (3.4445, -4.7750, 2.0315)
#: Amsel, Persson, Musco & Gower 2025, Algorithm 1: minimax quintics for [1e-3, 1]; the paper divides
#: all but the last by the safety factor 1.01 (evaluates p(x / 1.01)), and repeats the last one.
_AMSEL_RAW = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
]
NS_QUINTIC = (15 / 8, -10 / 8, 3 / 8)  # Newton–Schulz degree 5: p(1) = 1, p'(1) = p''(1) = 0
AMSEL_PE = [(a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in _AMSEL_RAW]
SAFETY = 1.01  # X0 = A / scale, scale = 1.01 * (a norm of A that is >= sigma_1, at most ||A||_F)


def ref_schedule(coefficients, steps):
    if isinstance(coefficients, str):
        if coefficients == "muon":
            return [JORDAN_MUON] * steps
        assert coefficients == "polar_express"
        return [AMSEL_PE[i] if i < len(AMSEL_PE) else NS_QUINTIC for i in range(steps)]
    triples = [tuple(float(v) for v in t) for t in coefficients]
    return [triples[min(i, len(triples) - 1)] for i in range(steps)]


def ref_poly(x, steps, coefficients):
    """(p(x), p'(x)) of the composed quintic, written out monomial by monomial in float64."""
    y = np.array(x, dtype=np.float64)
    dy = np.ones_like(y)
    for a, b, c in ref_schedule(coefficients, steps):
        dy = dy * (a + 3.0 * b * y**2 + 5.0 * c * y**4)
        y = a * y + b * y**3 + c * y**5
    return y, dy


def _eps(dtype):
    return float(np.finfo(dtype).eps)


def _lipschitz(steps, coefficients, xmax=1 / SAFETY):
    """max |p'| of the composed map on [0, xmax] (dense grid)."""
    x = np.linspace(0.0, xmax, 4001)
    return float(np.max(np.abs(ref_poly(x, steps, coefficients)[1])))


#: Units of eps * sqrt(n) * (1 + max |p'|) allowed. The step-by-step iteration (X <- a X + (b G + c G^2) X)
#: stays below 2.2 units on 3000 random matrices of the property-test kind, and below 0.01 units on
#: steeply decaying spectra; 8 leaves room for other BLAS builds without hiding an unstable evaluation.
_ROUNDING_UNITS = 8


def _poly_tol(steps, coefficients, xmax=1.0):
    """Two float64 evaluations of the same composition: a few eps a step, amplified by at most max |p'|."""
    return 4 * steps * _eps(np.float64) * (1.0 + _lipschitz(steps, coefficients, xmax))


def _map_tol(dtype, shape, steps, coefficients, xmax=1 / SAFETY):
    """Spectral-norm forward error of a backward-stable msign: eps * sqrt(n) amplified by max |p'|."""
    return _ROUNDING_UNITS * _eps(dtype) * math.sqrt(max(shape)) * (1.0 + _lipschitz(steps, coefficients, xmax))


def exact_map(A, steps, coefficients, scale=None):
    """U diag(p(s / scale)) V^T from scipy's SVD of A in float64; returns (Q, U, s, Vt, scale)."""
    A64 = np.asarray(A, dtype=np.float64)
    U, s, Vt = scipy.linalg.svd(A64, full_matrices=False)
    if scale is None:
        scale = SAFETY * math.sqrt(float(np.sum(s**2)))
    p, _ = ref_poly(s / scale, steps, coefficients)
    return (U * p) @ Vt, U, s, Vt, scale


def smaller_side_gram_error(Q):
    """||Q Q^T - I||_F (wide) or ||Q^T Q - I||_F (tall), in float64."""
    Q = np.asarray(Q, dtype=np.float64)
    G = Q @ Q.T if Q.shape[0] <= Q.shape[1] else Q.T @ Q
    return float(np.linalg.norm(G - np.eye(G.shape[0])))


def spectral_norm(M):
    return float(scipy.linalg.svdvals(np.asarray(M, dtype=np.float64))[0])


def _log_spectrum(k, cond):
    return np.logspace(0.0, -math.log10(cond), k)


def _layout(A, layout):
    """The same values as A in C order, Fortran order, or a negative-stride view into a larger array."""
    if layout == "C":
        return np.ascontiguousarray(A)
    if layout == "F":
        return np.asfortranarray(A)
    big = np.full((2 * A.shape[0], 2 * A.shape[1]), np.nan, dtype=A.dtype)
    big[1::2, ::-2] = A
    view = big[1::2, ::-2]
    assert not view.flags.c_contiguous and not view.flags.f_contiguous
    return view


SHAPES = [(24, 9), (9, 24), (13, 13)]
DTYPES = [np.float64, np.float32]


# -- constants -------------------------------------------------------------------------------------
def test_coefficient_constants_are_the_published_ones():
    assert tuple(MUON_COEFFICIENTS) == JORDAN_MUON
    assert len(POLAR_EXPRESS_COEFFICIENTS) == len(AMSEL_PE)
    np.testing.assert_allclose(np.array(POLAR_EXPRESS_COEFFICIENTS), np.array(AMSEL_PE), rtol=4 * _eps(np.float64))


# -- polar -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_polar_matches_scipy_svd_and_scipy_polar(shape, dtype, layout):
    m, n = shape
    k = min(shape)
    A = _layout(from_spectrum(_log_spectrum(k, 10.0), m, n, seed=11, dtype=dtype), layout)
    before = A.copy()
    Q = polar(A)
    assert Q.dtype == dtype and Q.shape == shape
    assert np.array_equal(A, before)  # input not modified
    A64 = np.array(A, dtype=np.float64)  # the values as stored
    U, s, Vt = scipy.linalg.svd(A64, full_matrices=False)
    ref_svd = U @ Vt
    ref_polar, _ = scipy.linalg.polar(A64)
    # first-order perturbation of the polar factor: ||dQ|| <~ ||dA|| / sigma_min, ||dA|| ~ eps sqrt(n) ||A||
    tol = 10 * _eps(dtype) * math.sqrt(max(shape)) * s[0] / s[-1]
    assert spectral_norm(Q - ref_svd) <= tol
    assert spectral_norm(Q - ref_polar) <= tol
    assert smaller_side_gram_error(Q) <= 2 * math.sqrt(k) * tol  # orthonormal rows (wide) or columns (tall)


@pytest.mark.parametrize(
    "dtype, factor", [(np.float64, 1e-300), (np.float64, 1e300), (np.float32, 1e-30), (np.float32, 1e30)]
)
def test_polar_is_scale_invariant_at_extreme_magnitudes(dtype, factor):
    A0 = from_spectrum(_log_spectrum(9, 10.0), 9, 14, seed=2)
    A = (A0 * factor).astype(dtype)
    U, s, Vt = scipy.linalg.svd(A0, full_matrices=False)
    tol = 10 * _eps(dtype) * math.sqrt(14) * s[0] / s[-1]
    assert spectral_norm(polar(A) - U @ Vt) <= tol


# -- ns_polynomial ---------------------------------------------------------------------------------
_X = np.concatenate([-np.geomspace(1e-6, 1.0, 60), [0.0], np.linspace(0.0, 1.0, 201), np.geomspace(1e-8, 1.0, 200)])


@pytest.mark.parametrize(
    "coefficients",
    ["muon", "polar_express", [(1.5, -0.5, 0.0)], [(3.0, -3.2, 1.2), (2.0, -1.5, 0.5), NS_QUINTIC]],
    ids=["muon", "polar_express", "cubic", "three-custom"],
)
@pytest.mark.parametrize("steps", [1, 2, 5, 7, 8, 9, 12])
def test_ns_polynomial_matches_reference_loop(coefficients, steps):
    y = ns_polynomial(_X, steps=steps, coefficients=coefficients)
    ref, _ = ref_poly(_X, steps, coefficients)
    assert y.dtype == np.float64 and y.shape == _X.shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=_poly_tol(steps, coefficients))
    np.testing.assert_allclose(ns_polynomial(-_X, steps=steps, coefficients=coefficients), -y, rtol=0, atol=0)


def test_ns_polynomial_shapes_and_dtypes():
    assert ns_polynomial(0.5).shape == ()
    assert ns_polynomial([[0.1, 0.2, 0.3]]).shape == (1, 3)
    y32 = ns_polynomial(np.array([0.25, 0.5], dtype=np.float32), steps=3)
    assert y32.dtype == np.float64
    np.testing.assert_allclose(y32, ref_poly(np.array([0.25, 0.5]), 3, "muon")[0], rtol=0, atol=_poly_tol(3, "muon"))


def test_polar_express_tail_is_the_newton_schulz_quintic():
    x = np.geomspace(1e-4, 1 / SAFETY, 300)
    after7 = ns_polynomial(x, steps=7, coefficients="polar_express")
    a7, b7, c7 = AMSEL_PE[-1]
    t = np.roots([c7, b7, a7 - 1.0])  # fixed points p(y) = y, in t = y^2
    gap = abs(1.0 - math.sqrt(min(t.real, key=lambda r: abs(r - 1.0))))
    assert gap > 1e-6
    a, b, c = NS_QUINTIC
    for extra in (1, 2, 5):
        y = after7.copy()
        for _ in range(extra):
            y = a * y + b * y**3 + c * y**5
        got = ns_polynomial(x, steps=7 + extra, coefficients="polar_express")
        # the tail's |p'(y)| = 15/8 (1 - y^2)^2 <= 15/8 on [-1, 1] bounds how rounding grows
        np.testing.assert_allclose(got, y, rtol=0, atol=4 * extra * _eps(np.float64) * NS_QUINTIC[0] ** extra)
        # repeating the 7th (safety-scaled) quintic instead has its fixed point y* off 1: detectable
        wrong = ns_polynomial(x, steps=7 + extra, coefficients=POLAR_EXPRESS_COEFFICIENTS)
        assert np.max(np.abs(wrong - got)) > gap / 2
    # the tail converges to 1 (the point of it): at 12 steps everything in the design interval is there
    assert np.max(np.abs(ns_polynomial(x[x >= 1e-3], steps=12, coefficients="polar_express") - 1)) <= 2 * _eps(
        np.float64
    )


def test_custom_schedule_repeats_its_last_triple_and_truncates():
    x = np.linspace(0.0, 1.0, 101)
    t1, t2 = (3.0, -3.2, 1.2), (1.5, -0.5, 0.0)
    repeated = [t1, t2, t2, t2, t2]
    np.testing.assert_allclose(
        ns_polynomial(x, steps=5, coefficients=[t1, t2]),
        ref_poly(x, 5, repeated)[0],
        atol=_poly_tol(5, repeated),
        rtol=0,
    )
    np.testing.assert_allclose(
        ns_polynomial(x, steps=1, coefficients=[t1, t2]),
        3.0 * x - 3.2 * x**3 + 1.2 * x**5,
        atol=_poly_tol(1, [t1]),
        rtol=0,
    )
    as_array = ns_polynomial(x, steps=4, coefficients=np.array([t1, t2]))
    np.testing.assert_array_equal(as_array, ns_polynomial(x, steps=4, coefficients=[t1, t2]))
    # the published list passed as a custom schedule is "polar_express" for the first 7 steps
    np.testing.assert_array_equal(
        ns_polynomial(x, steps=7, coefficients=list(POLAR_EXPRESS_COEFFICIENTS)),
        ns_polynomial(x, steps=7, coefficients="polar_express"),
    )


def test_polar_express_eight_steps_cover_the_design_interval():
    """The math behind the accuracy targets: 8 minimax steps take [1e-3, 1/1.01] to 1 within 1e-12 (7 do not)."""
    x = np.geomspace(1e-3, 1 / SAFETY, 4000)
    p7, _ = ref_poly(x, 7, "polar_express")
    p8, _ = ref_poly(x, 8, "polar_express")
    assert np.max(np.abs(p7 - 1)) > 1e-6
    assert np.max(np.abs(p8 - 1)) <= 1e-12
    np.testing.assert_allclose(
        ns_polynomial(x, steps=8, coefficients="polar_express"), p8, rtol=0, atol=_poly_tol(8, "polar_express")
    )


# -- msign: the singular-value map -----------------------------------------------------------------
def _check_scale(scale, s, rel):
    """1.01 sigma_1 <= scale <= 1.01 ||A||_F: every scaled singular value is at most 1/1.01, and none is
    made smaller than Muon's Frobenius normalization makes it (the Frobenius norm, or anything tighter
    such as the Schatten-4 norm, qualifies)."""
    assert SAFETY * s[0] * (1 - rel) <= scale <= SAFETY * math.sqrt(float(np.sum(s**2))) * (1 + rel), (scale, s[0])


def _check_mapping(A, res, steps, coefficients):
    """Q == U diag(p(s / scale)) V^T and sorted sv(Q) == sorted p(s / scale), to the rounding tolerance."""
    A64 = np.array(A, dtype=np.float64)
    Qref, _, s, _, _ = exact_map(A64, steps, coefficients, scale=res.scale)
    _check_scale(res.scale, s, _eps(A.dtype) * math.sqrt(A.size))
    tol = _map_tol(A.dtype, A.shape, steps, coefficients, xmax=s[0] / res.scale)
    assert res.Q.dtype == A.dtype and res.Q.shape == A.shape
    err = spectral_norm(res.Q.astype(np.float64) - Qref)
    assert err <= tol, f"||Q - U p(S/scale) V^T||_2 = {err:.3g} > {tol:.3g}"
    p, _ = ref_poly(s / res.scale, steps, coefficients)
    sq = scipy.linalg.svdvals(res.Q.astype(np.float64))
    np.testing.assert_allclose(np.sort(sq), np.sort(np.abs(p)), rtol=0, atol=tol)
    np.testing.assert_allclose(
        np.sort(np.abs(ns_polynomial(s / res.scale, steps=steps, coefficients=coefficients))),
        np.sort(sq),
        rtol=0,
        atol=tol,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(40, 96), (96, 40), (50, 50)])
@pytest.mark.parametrize(
    "coefficients, steps",
    [
        ("muon", 5),
        ("polar_express", 5),
        ("polar_express", 9),
        ([(1.5, -0.5, 0.0)], 6),
        (np.array([(3.0, -3.2, 1.2), NS_QUINTIC]), 4),
    ],
    ids=["muon5", "pe5", "pe9", "cubic6", "custom4"],
)
def test_msign_applies_the_composed_quintic_to_singular_values(shape, dtype, coefficients, steps):
    m, n = shape
    A = from_spectrum(_log_spectrum(min(shape), 100.0), m, n, seed=5, dtype=dtype)
    before = A.copy()
    res = msign(A, steps=steps, coefficients=coefficients, return_info=True)
    assert np.array_equal(A, before)
    assert isinstance(res, MsignResult) and res.n_iter == steps and res.coefficients is coefficients
    _check_mapping(A, res, steps, coefficients)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("coefficients, steps", [("muon", 5), ("muon", 8), ("polar_express", 5)])
def test_msign_rounding_stays_bounded_on_decaying_spectra(dtype, coefficients, steps):
    """Singular values 2^-i down to 1e-7 of the top. Rounding that is not backward stable (e.g. running the
    iteration on the Gram matrix, where an error eps in G becomes ~eps / sigma in the small singular
    directions) shows up here as errors far above eps * max |p'|; in float32 at 8 Muon steps it reaches O(1)."""
    A = from_spectrum(0.5 ** np.arange(24), 33, 24, seed=3, dtype=dtype)
    _check_mapping(A, msign(A, steps=steps, coefficients=coefficients, return_info=True), steps, coefficients)


@given(matrices_with_spectrum(), st.sampled_from(["muon", "polar_express"]), st.integers(1, 8))
def test_msign_singular_value_map_property(case, coefficients, steps):
    A, _ = case
    res = msign(A, steps=steps, coefficients=coefficients, return_info=True)
    _check_mapping(A, res, steps, coefficients)


@pytest.mark.parametrize("layout", ["F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_msign_layouts_give_the_same_answer(layout, dtype):
    A = from_spectrum(_log_spectrum(12, 30.0), 12, 31, seed=8, dtype=dtype)
    B = _layout(A, layout)
    before = B.copy()
    res = msign(B, steps=6, coefficients="polar_express", return_info=True)
    assert np.array_equal(B, before)
    _check_mapping(B, res, 6, "polar_express")
    tol = 2 * _map_tol(dtype, A.shape, 6, "polar_express")
    assert (
        spectral_norm(res.Q.astype(np.float64) - msign(A, steps=6, coefficients="polar_express", return_info=True).Q)
        <= tol
    )


def test_msign_accepts_nested_lists_and_returns_the_array_by_default():
    A = [[3.0, 1.0, 0.0], [0.5, 2.0, 1.0]]
    res = msign(A, steps=4, return_info=True)
    _check_mapping(np.array(A), res, 4, "muon")
    quiet = msign(np.array(A), steps=4)
    assert type(quiet) is np.ndarray and quiet.dtype == np.float64
    np.testing.assert_allclose(quiet, res.Q, rtol=0, atol=_map_tol(np.float64, (2, 3), 4, "muon"))
    with pytest.raises(AttributeError):
        res.Q = None  # frozen result
    assert "muon" in repr(res)


# -- msign: diagnostics ----------------------------------------------------------------------------
def _check_diagnostics(res):
    Q = res.Q
    k = min(Q.shape)
    ref = smaller_side_gram_error(Q)
    # an upper bound: the Gram matrix's rounding (inner products of length n) is added, no more
    n = max(Q.shape)
    fro2 = float(np.sum(Q.astype(np.float64) ** 2))
    tol = math.sqrt(n) * _eps(np.float64) * (k + math.sqrt(k) * ref)
    assert ref - tol <= res.orthogonality <= ref + tol + 4 * n * _eps(np.float64) * fro2, (res.orthogonality, ref)
    lo, hi = res.sv_bounds
    sq = scipy.linalg.svdvals(Q.astype(np.float64))
    slack = 10 * k * _eps(np.float64)  # rounding of the float64 SVD of Q itself
    assert lo - slack <= sq.min() and sq.max() <= hi + slack, (lo, hi, sq.min(), sq.max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(30, 70), (70, 30)])
@pytest.mark.parametrize("coefficients, steps", [("muon", 5), ("polar_express", 5), ("polar_express", 12)])
def test_orthogonality_and_sv_bounds(shape, dtype, coefficients, steps):
    m, n = shape
    A = from_spectrum(_log_spectrum(min(shape), 50.0), m, n, seed=4, dtype=dtype)
    _check_diagnostics(msign(A, steps=steps, coefficients=coefficients, return_info=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sv_bounds_hold_when_one_singular_value_lags(dtype):
    """One small singular value, the rest 1: ||Q^T Q - I||_F is then about |sigma_min^2 - 1|, nothing to spare."""
    m, n = 64, 96
    for seed in range(12):
        for last in (1e-3, 1.75e-3, 3.06e-3):
            s = np.ones(m)
            s[-1] = last
            A = from_spectrum(s, m, n, seed=seed, dtype=dtype)
            _check_diagnostics(msign(A, steps=8, coefficients="polar_express", return_info=True))


# -- issue targets (128 x 512, condition 1e1 .. 1e4) -----------------------------------------------
_CASES = {}


def _wide_case(kind, cond):
    """128 x 512 float64 with log-spaced ("log") or one-large-rest-small ("spike") singular values."""
    key = (kind, cond)
    if key not in _CASES:
        k = 128
        s = _log_spectrum(k, cond) if kind == "log" else np.r_[1.0, np.full(k - 1, 1.0 / cond)]
        A = from_spectrum(s, k, 512, seed=7)
        U, sv, Vt = scipy.linalg.svd(A, full_matrices=False)
        _CASES[key] = (A, U @ Vt, sv)
    return _CASES[key]


def _measure(A, P, sv, steps, coefficients):
    res = msign(A, steps=steps, coefficients=coefficients, return_info=True)
    p, _ = ref_poly(sv / res.scale, steps, coefficients)
    predicted = {
        "dist2": float(np.max(np.abs(p - 1))),
        "distF": float(np.linalg.norm(p - 1)),
        "orth": float(np.linalg.norm(p**2 - 1)),
    }
    measured = {
        "dist2": spectral_norm(res.Q - P),
        "distF": float(np.linalg.norm(res.Q - P)),
        "orth": smaller_side_gram_error(res.Q),
    }
    tol = _map_tol(np.float64, A.shape, steps, coefficients, xmax=sv[0] / res.scale)
    k = min(A.shape)
    # ||Q - P|| differs from the predicted one by at most ||Q - Qref||; the Gram error by at most ~3x that
    assert abs(measured["dist2"] - predicted["dist2"]) <= tol
    assert abs(measured["distF"] - predicted["distF"]) <= math.sqrt(k) * tol
    assert abs(measured["orth"] - predicted["orth"]) <= 3 * math.sqrt(k) * tol
    return res, measured, predicted


@pytest.mark.parametrize("cond", [1e1, 1e2, 1e3, 1e4])
def test_issue_targets_polar_express_beats_muon_at_five_steps(cond, record_property):
    A, P, sv = _wide_case("log", cond)
    dist = {}
    for coefficients in ("muon", "polar_express"):
        _, measured, _ = _measure(A, P, sv, 5, coefficients)
        dist[coefficients] = measured
        for name, value in measured.items():
            record_property(f"{coefficients}_5_{name}", value)
    assert dist["polar_express"]["dist2"] < dist["muon"]["dist2"]
    assert dist["polar_express"]["distF"] < dist["muon"]["distF"]


@pytest.mark.parametrize("kind, cond", [("log", 1e1), ("log", 1e2), ("spike", 1e3), ("log", 1e3), ("log", 1e4)])
def test_issue_targets_polar_express_double_precision(kind, cond, record_property):
    """Polar Express reaches distance < 1e-10 in float64 exactly when the composed polynomial says so.

    8 steps take [~8.9e-4, 1/1.01] to 1 within 1e-12 (see the design-interval test). The scaled smallest
    singular value is s_min / scale <= 1 / (1.01 cond), and with Frobenius scaling it is further below by
    up to sqrt(rank) for a spread-out spectrum: a log-spaced spectrum of condition 1e3 on 128 columns
    lands at ~3e-4 and needs 10 steps, while one with its mass in the top singular value
    (||A||_F ~ ||A||_2, "spike") stays at ~9.9e-4 and needs 8. So "8 steps suffice for condition
    <= 1e3" holds for the spike and for condition <= 1e2, and otherwise only as far as the scaling
    allows; the number of steps the polynomial asks for always gets there.
    """
    A, P, sv = _wide_case(kind, cond)
    res, measured, predicted = _measure(A, P, sv, 8, "polar_express")
    x_min = sv[-1] / res.scale
    record_property("x_min", x_min)
    record_property("polar_express_8_dist2", measured["dist2"])
    if kind == "spike" or cond <= 1e2:
        # even Frobenius scaling leaves x_min above 8.9e-4 here, and any admissible scale is smaller
        assert sv[-1] / (SAFETY * np.linalg.norm(sv)) >= 8.9e-4
        assert predicted["dist2"] <= 1e-12
    if predicted["dist2"] <= 1e-12:
        assert measured["dist2"] < 1e-10 and measured["orth"] < 1e-10
    elif cond <= 1e3:
        needed = [
            t for t in range(9, 16) if np.max(np.abs(ref_poly(sv / res.scale, t, "polar_express")[0] - 1)) <= 1e-12
        ]
        steps = needed[0]
        _, measured_t, _ = _measure(A, P, sv, steps, "polar_express")
        record_property(f"polar_express_{steps}_dist2", measured_t["dist2"])
        assert measured_t["dist2"] < 1e-10 and measured_t["orth"] < 1e-10


def test_issue_targets_muon_plateau():
    """Muon's quintic has an invariant interval [p(x_c), p(p(x_c))] ~ [0.68, 1.13] (x_c: the critical point
    near 1.05); five steps from a well-conditioned input land in it, and it never converges to 1."""
    a, b, c = JORDAN_MUON
    roots = np.roots([5 * c, 3 * b, a])  # p'(x) = a + 3b x^2 + 5c x^4 in x^2
    xc = math.sqrt(max(r.real for r in roots))
    lo = ref_poly(xc, 1, "muon")[0]
    hi = ref_poly(lo, 1, "muon")[0]
    assert abs(lo - 0.68) < 0.005 and abs(hi - 1.13) < 0.006
    grid = np.linspace(lo, hi, 2001)
    image = ref_poly(grid, 1, "muon")[0]
    assert image.min() >= lo - 1e-12 and image.max() <= hi + 1e-12  # invariant

    A, P, sv = _wide_case("log", 1e1)
    res, measured, _ = _measure(A, P, sv, 5, "muon")
    tol = _map_tol(np.float64, A.shape, 5, "muon", xmax=sv[0] / res.scale)
    sq = scipy.linalg.svdvals(res.Q)
    assert lo - tol <= sq.min() and sq.max() <= hi + tol
    assert measured["dist2"] > 0.3  # the plateau: 1 - p(x_c)


# -- tiny, huge and zero inputs --------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype, factor",
    [
        (np.float64, 1e-30),
        (np.float64, 1e-40),
        (np.float64, 1e-300),
        (np.float64, 1e300),
        (np.float32, 1e-30),
        (np.float32, 1e-37),  # 5/6 of the entries below the smallest normal float32 (1.2e-38)
        (np.float32, 1e30),
        (np.float32, 1e37),
    ],
)
def test_msign_is_scale_invariant(dtype, factor):
    m, n, steps = 20, 30, 5
    A0 = from_spectrum(_log_spectrum(m, 10.0), m, n, seed=5)
    A = (A0 * factor).astype(dtype)  # rounded once into dtype
    assert np.all(np.isfinite(A))
    res = msign(A, steps=steps, return_info=True)
    res0 = msign(A0.astype(dtype), steps=steps, return_info=True)
    assert np.all(np.isfinite(res.Q)) and res.Q.dtype == dtype
    rel = math.sqrt(A.size) * _eps(dtype)
    assert res.scale == pytest.approx(factor * res0.scale, rel=2 * rel)
    Qref, _, s0, _, _ = exact_map(A0, steps, "muon", scale=res.scale / factor)
    _check_scale(res.scale / factor, s0, 2 * rel)
    tol = _map_tol(dtype, A.shape, steps, "muon")
    # storing A in dtype perturbs it by eps/2 relative, plus for subnormals half their spacing 1.4e-45
    # (at most ~0.7 eps of ||A|| at factor 1e-37): twice the rounding tolerance covers both
    assert spectral_norm(res.Q - Qref) <= 2 * tol
    assert spectral_norm(res.Q.astype(np.float64) - res0.Q) <= 3 * tol


@pytest.mark.parametrize("dtype, shift", [(np.float32, 140), (np.float64, 1070)])
def test_msign_subnormal_input_is_exactly_a_scaled_integer_matrix(dtype, shift):
    """Every entry subnormal yet exact: msign must give what it gives for the integer matrix."""
    N = np.random.default_rng(0).integers(-1000, 1001, size=(15, 25)).astype(np.float64)
    S = np.ldexp(N, -shift).astype(dtype)
    assert np.array_equal(np.ldexp(S.astype(np.float64), shift), N)
    assert np.all(np.abs(S) < np.finfo(dtype).smallest_normal) and np.count_nonzero(S) == np.count_nonzero(N)
    res, resN = msign(S, return_info=True), msign(N.astype(dtype), return_info=True)
    # the scale may itself be subnormal as a float64: allow its spacing
    tiny = float(np.finfo(np.float64).smallest_subnormal)
    expected_scale = math.ldexp(resN.scale, -shift)
    assert abs(res.scale - expected_scale) <= 4 * _eps(dtype) * expected_scale + tiny
    Qref, _, sN, _, _ = exact_map(N, 5, "muon", scale=resN.scale)
    _check_scale(resN.scale, sN, math.sqrt(N.size) * _eps(dtype))
    tol = _map_tol(dtype, S.shape, 5, "muon")
    assert spectral_norm(res.Q - Qref) <= tol
    assert spectral_norm(res.Q.astype(np.float64) - resN.Q) <= 2 * tol


@pytest.mark.parametrize("dtype", DTYPES)
def test_msign_single_smallest_subnormal_entry(dtype):
    A = np.zeros((3, 4), dtype=dtype)
    A[1, 2] = np.finfo(dtype).smallest_subnormal
    res = msign(A, steps=5, coefficients="polar_express", return_info=True)
    expected = np.zeros((3, 4))
    expected[1, 2] = ref_poly(1 / SAFETY, 5, "polar_express")[0]  # rank one, s / scale = 1 / 1.01
    np.testing.assert_allclose(res.Q, expected, rtol=0, atol=_map_tol(dtype, A.shape, 5, "polar_express"))


def test_msign_frobenius_norm_beyond_float64_range():
    A0 = from_spectrum(_log_spectrum(10, 10.0), 10, 15, seed=3)
    A0 /= np.abs(A0).max()
    assert float(np.linalg.norm(A0)) * 1e308 == math.inf  # ||A||_F itself is not a float64
    res = msign(A0 * 1e308, return_info=True)
    Qref, *_ = exact_map(A0, 5, "muon", scale=msign(A0, return_info=True).scale)
    assert spectral_norm(res.Q - Qref) <= 2 * _map_tol(np.float64, A0.shape, 5, "muon")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (1, 1)])
def test_zero_matrix_maps_to_zero(shape, dtype):
    res = msign(np.zeros(shape, dtype=dtype), coefficients="polar_express", return_info=True)
    assert res.Q.dtype == dtype and res.Q.shape == shape and not np.any(res.Q)
    assert res.orthogonality == pytest.approx(smaller_side_gram_error(res.Q), rel=1e-15)  # ||0 - I||_F
    assert res.sv_bounds[0] <= 0.0 <= res.sv_bounds[1]


# -- bad input -------------------------------------------------------------------------------------
_BAD_A = [
    (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError, "`A` must be finite"),
    (np.array([[1.0, -np.inf], [0.0, 1.0]], dtype=np.float32), ValueError, "`A` must be finite"),
    (np.ones(3), ValueError, "`A` must be at least 2-D"),
    (np.ones((2, 0, 3)), ValueError, "`A` must not be empty"),  # stacks are taken (see test_inputs.py)
    (np.ones((0, 3)), ValueError, "`A` must not be empty"),
    (np.ones((3, 0), dtype=np.float32), ValueError, "`A` must not be empty"),
    (np.eye(3, dtype=np.int64), TypeError, "`A` has dtype int64"),
    (np.eye(3, dtype=np.complex128), TypeError, "`A` has dtype complex128"),
    (np.eye(3, dtype=np.complex64), TypeError, "`A`.*complex"),
    (np.eye(3, dtype=np.float16), TypeError, "`A` has dtype float16"),
    ("abc", TypeError, "`A`"),
]


@pytest.mark.parametrize("func", [msign, polar], ids=["msign", "polar"])
@pytest.mark.parametrize("bad, exc, match", _BAD_A, ids=[str(i) for i in range(len(_BAD_A))])
def test_bad_matrices_are_named(func, bad, exc, match):
    with pytest.raises(exc, match=match):
        func(bad)


@pytest.mark.parametrize(
    "steps, exc",
    [
        (0, ValueError),
        (-3, ValueError),
        (2.0, TypeError),
        ("5", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
@pytest.mark.parametrize("coefficients", ["muon", "polar_express"])
def test_bad_steps_are_named(steps, exc, coefficients):
    with pytest.raises(exc, match="`steps`"):
        msign(np.eye(3), steps=steps, coefficients=coefficients, return_info=True)
    with pytest.raises(exc, match="`steps`"):
        ns_polynomial(0.5, steps=steps, coefficients=coefficients)


@pytest.mark.parametrize(
    "coefficients, exc",
    [
        ("newton", ValueError),
        ("Muon", ValueError),
        ([], ValueError),
        ([(1.0, 2.0)], ValueError),
        ([(1.0, 2.0, 3.0, 4.0)], ValueError),
        ([(1.5, -0.5, 0.0), (1.0, np.nan, 3.0)], ValueError),
        ([(1.0, 2.0, np.inf)], ValueError),
        (np.ones((2, 4)), ValueError),
        ((1.0, 2.0, 3.0), TypeError),  # a bare triple, not a sequence of triples
        (5, TypeError),
        (None, TypeError),
        ([("a", "b", "c")], TypeError),
    ],
)
def test_bad_coefficients_are_named(coefficients, exc):
    with pytest.raises(exc, match="`coefficients`"):
        msign(np.eye(3), coefficients=coefficients, return_info=True)
    with pytest.raises(exc, match="`coefficients`"):
        ns_polynomial(0.5, coefficients=coefficients)


# -- the ends of the float range (issue 14): msign against scipy.linalg.polar ---------------------
_TOP64, _TOP32 = float(np.finfo(np.float64).max), float(np.finfo(np.float32).max)


@pytest.mark.parametrize(
    "dtype, top",
    [(np.float64, t) for t in (1e-300, 1e-150, 1.0, 1e150, _TOP64 / 2, _TOP64)]
    + [(np.float32, t) for t in (1e-35, 1e-18, 1.0, 1e18, _TOP32 / 2, _TOP32)],
)
@pytest.mark.parametrize("shape", [(9, 14), (14, 9)])
def test_msign_converges_to_scipy_polar_at_every_scale(dtype, top, shape):
    """max|A| = top up to the dtype's largest value: the power-of-two prescale keeps every product in range."""
    A0 = from_spectrum(_log_spectrum(9, 10.0), *shape, seed=2)
    A0 = A0 / np.abs(A0).max()
    A = np.asarray(A0 * top, dtype=np.float64)
    A = np.minimum(A, top).astype(dtype)  # max|A| = top exactly, no rounding past the largest float
    assert np.all(np.isfinite(A))
    B = A.astype(np.float64) / top  # the stored matrix at unit scale
    Q_ref = scipy.linalg.polar(B)[0]
    s = scipy.linalg.svdvals(B)
    steps = 12  # 8 minimax steps reach 1e-12 on [1e-3, 1]; s_min / ||A||_S4 here is about 0.05
    res = msign(A, steps=steps, coefficients="polar_express", return_info=True)
    assert res.Q.dtype == dtype and np.all(np.isfinite(res.Q))
    # the backward-stable rounding of the iteration, plus storing A (relative eps / 2) seen by the
    # polar factor through 1 / sigma_min
    tol = _map_tol(dtype, shape, steps, "polar_express") + 10 * _eps(dtype) * math.sqrt(max(shape)) * s[0] / s[-1]
    assert spectral_norm(res.Q.astype(np.float64) - Q_ref) <= tol
    assert res.orthogonality <= 100 * _eps(dtype) * math.sqrt(max(shape))
    assert spectral_norm(polar(A).astype(np.float64) - Q_ref) <= tol
