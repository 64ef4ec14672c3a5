"""The Krylov engine behind ``power_iteration``, ``spectral_norm`` and ``top_singular_values(method="lanczos")``.

One thick-restart Lanczos, written once, for the top eigenpairs of a Gram operator B = M^T M,
as a reverse-communication state machine in the manner of ARPACK's ``dsaupd``: the engine never
computes a product and never draws a random number. `start` fills ``x`` with the first vector
to multiply and returns a request code; the driver computes y = M x and z = M^T y and calls
`advance`, which consumes them and returns the next request, until `DONE`. The state is a
handful of arrays (``ist`` integers, ``fst`` floats, the basis ``V``, the projected matrix
``T``, the history), so the same numba functions serve

- a numba driver (`solve_stack`) for dense matrices: one matrix at a time per thread, with no
  Python between iterations (the product on the parallel one-pass kernel for a single large
  matrix, in cache on one thread for the matrices of a stack);
- a Python driver (``_topsv._drive_python``) for everything else behind ``gram.gram(X, active)``:
  operators, the deflated operator of the gap check, stacks of large matrices, dask arrays; it
  advances every problem of a batch in lockstep, one batched product per round;
- a small Python driver (``_topsv.solve_pairs``) for the top ``nev`` pairs that
  ``top_singular_values(method="lanczos")`` asks for.

Requests: `EXTEND` (x is the newest basis vector V[j]: its product extends the Krylov basis),
`MEASURE` (x is a candidate: its Rayleigh quotient and residual are measured and decide
convergence; y is kept as M x for the result), both at once as bit flags, and `FRESH` (the
driver fills x with a standard normal vector from its own generator, no product: the engine
orthogonalizes it against the basis and continues from it). The reported triplet is always the
last measured one, so nothing unverified is ever reported as converged.

Two modes. One pair (methods ``power``, ``lanczos``, ``auto``), with two stopping rules.
Residual (``rtol = 0``): the relative residual ||B w - theta w|| / theta of the measured vector
is at most ``tol`` (what `power_iteration` promises for the triplet). Value (``rtol > 0``): the
estimated relative error of sigma = sqrt(theta) is at most ``rtol``: the residual bound, or
Kato-Temple with the gap from the second Ritz pair once the Krylov polynomial's resolution rules
out a hidden close pair (`_value_error`, docs/theory/spectral.rst).

``nev`` pairs (method ``pairs``, entry `advance_pairs`): no measurement products (the caller
certifies the Ritz vectors that `pairs` returns with one block product); convergence when the
residual estimates |beta s_j| of the top ``nev`` Ritz pairs meet ``tol * max(theta_i, floor
theta_1)``. An invariant subspace found before ``nev`` pairs (repeated singular values, rank
deficiency: the Krylov space of one vector holds one copy of each eigenvalue) continues from a
`FRESH` direction orthogonal to the basis, as ARPACK does; convergence at an invariant subspace
then needs a fresh direction that changes none of the top ``nev`` values.
"""

import numpy as np

from ._jit import jit
from ._kernels import _copy, _dot, _gram_step, _in_range, _tridiagonal_solve, tridiagonal_top

# request codes (bit flags); 0 is DONE
DONE = 0
EXTEND = 1
MEASURE = 2
FRESH = 4  # never combined with another flag

# stop codes
RUNNING, CONVERGED, MAXITER, ZERO, EXACT, RESCALE = 0, 1, 2, 3, 4, 5
STOP_NAMES = ("running", "converged", "maxiter", "zero", "exact", "rescale")

# methods and phases
POWER, LANCZOS, AUTO, PAIRS = 0, 1, 2, 3

# integer state
(
    I_PHASE, I_METHOD, I_STEPS, I_MAXITER, I_J, I_K, I_KEEP, I_NEXT_CHECK, I_PREV_STEP, I_NHIST,
    I_FIRST_CYCLE, I_LANCZOS_DIM, I_POWER_DEGREE, I_REQUEST, I_STOP, I_CHECK_EVERY, I_MAX_GAP,
    I_AUTO_MAX, I_INVARIANT, I_NEV, I_BREAK,
) = range(21)  # fmt: skip
N_INT = 21
# float state
(
    F_TOL, F_RTOL, F_LO, F_HI, F_THETA, F_RES, F_RATIO, F_PREV, F_ERROR, F_SECOND, F_R2, F_PREV_EST, F_RESOLUTION,
    F_GAP_CAP, F_BREAKDOWN, F_FLOOR,
) = range(16)  # fmt: skip
N_FLOAT = 16
# pairs mode: fst[N_FLOAT:N_FLOAT + nev] holds the top Ritz values at the last invariant subspace,
# ist[I_BREAK] how many (-1: none found yet)

_EPS = np.finfo(np.float64).eps


def new_state(
    b, *, tol, rtol, maxiter, method, K, keep, check_every, max_gap, auto_max, lo, hi, resolution=1.0,
    nev=1, breakdown=0.0, floor=0.0,
):  # fmt: skip
    """(ist, fst) for b problems: integer and float state rows, ready for `start`.

    ``method="pairs"`` wants the top ``nev`` pairs: a Lanczos vector shorter than ``breakdown``
    ulps of max|T| times sqrt(q) marks an invariant subspace, and residuals are measured against
    ``max(theta_i, floor * theta_1)``; the other methods ignore these three.
    """
    pairs_mode = method == "pairs"
    ist = np.zeros((b, N_INT), dtype=np.int64)
    fst = np.zeros((b, N_FLOAT + (nev if pairs_mode else 0)))
    ist[:, I_METHOD] = {"power": POWER, "lanczos": LANCZOS, "auto": AUTO, "pairs": PAIRS}[method]
    ist[:, I_MAXITER] = maxiter
    ist[:, I_K] = K
    ist[:, I_KEEP] = keep
    ist[:, I_CHECK_EVERY] = check_every
    ist[:, I_MAX_GAP] = max_gap
    ist[:, I_AUTO_MAX] = auto_max
    ist[:, I_NEV] = nev if pairs_mode else 1
    fst[:, F_TOL] = tol
    fst[:, F_RTOL] = rtol
    fst[:, F_LO] = lo
    fst[:, F_HI] = hi
    fst[:, F_RESOLUTION] = resolution
    fst[:, F_BREAKDOWN] = breakdown
    fst[:, F_FLOOR] = floor
    return ist, fst


@jit
def start(ist, fst, V, x0, x):
    """Begin a solve from the unit vector x0; x receives the first vector to multiply. Returns the request."""
    ist[I_STEPS] = 0
    ist[I_J] = 0
    ist[I_NHIST] = 0
    ist[I_FIRST_CYCLE] = 1
    ist[I_LANCZOS_DIM] = 0
    ist[I_POWER_DEGREE] = 0
    ist[I_STOP] = RUNNING
    ist[I_INVARIANT] = 0
    ist[I_BREAK] = -1
    ist[I_NEXT_CHECK] = ist[I_CHECK_EVERY]
    ist[I_PREV_STEP] = -1
    fst[F_THETA] = 0.0
    fst[F_RES] = np.inf
    fst[F_RATIO] = np.nan
    fst[F_PREV] = np.nan
    fst[F_ERROR] = np.inf
    fst[F_SECOND] = np.nan
    fst[F_R2] = np.nan
    fst[F_PREV_EST] = 0.0
    _copy(V[0], x0)
    _copy(x, x0)
    if ist[I_METHOD] == PAIRS:
        ist[I_PHASE] = LANCZOS
        ist[I_NEXT_CHECK] = 1  # the first estimate seeds the decay rate the schedule reads
        ist[I_REQUEST] = EXTEND
    elif ist[I_METHOD] == LANCZOS or (ist[I_METHOD] == AUTO and fst[F_RTOL] > 0.0):
        # (the value stop trusts only a gap seen by Lanczos: "auto" skips the power pilot)
        ist[I_PHASE] = LANCZOS
        ist[I_REQUEST] = EXTEND | MEASURE  # a warm start may already be converged: its product decides
    else:
        ist[I_PHASE] = POWER
        ist[I_REQUEST] = MEASURE
    return ist[I_REQUEST]


@jit
def _stop(ist, code):
    ist[I_STOP] = code
    ist[I_REQUEST] = DONE
    return DONE


@jit
def _value_error(fst, theta, res, trust_residual):
    """Estimated relative error of sqrt(theta) as sigma1, for a measured unit vector; never below the residual's.

    res = r / theta with r = ||B w - theta w||. Two estimates, and the smaller one that is safe:

    - the residual bound lambda1 - theta <= r (it assumes theta nearer lambda1 than any other
      eigenvalue, as every residual stop does: `power_iteration`'s, ARPACK's);
    - Kato-Temple: lambda1 - theta <= r^2 / (theta - a) for any a in [lambda2, theta), with
      a = theta2 + r2 (second Ritz value plus its residual estimate) where that leaves g > r. It
      is far smaller than r, but an eigenvalue closer to lambda1 than the resolution of the Krylov
      polynomial of degree d (relative (kappa/d)^2, ``F_GAP_CAP``) hides inside the top Ritz vector,
      where Ritz values show no gap at all: such a hidden pair can leave an error up to the
      resolution itself with a residual far below it (measured: sigma = (1, 0.999, 0.5, ...) stopped
      at rtol=1e-4 after 4 products, 9e-4 off). So Kato-Temple counts only once the resolution floor
      (kappa/d)^2 / 2 is itself below the error it would report: max(KT, floor).

    Power steps and a Ritz vector of an invariant Krylov space use the residual bound alone.
    sigma1 - sqrt(theta) <= (lambda1 - theta) / (2 sqrt(theta)).
    """
    residual_bound = 0.5 * res
    if trust_residual:
        return residual_bound
    r = res * theta
    g = theta - fst[F_SECOND] - fst[F_R2]
    if not g > r:  # False for NaN (no second Ritz pair yet): no credible gap
        return residual_bound
    kato_temple = r * r / (2.0 * theta * g)
    return min(residual_bound, max(kato_temple, 0.5 * fst[F_GAP_CAP]))


@jit
def _record(ist, fst, x, w, yb, y, theta, res):
    _copy(w, x)
    _copy(yb, y)
    fst[F_THETA] = theta
    fst[F_RES] = res


@jit
def _push_history(ist, hist, value):
    n = ist[I_NHIST]
    if n < hist.shape[0]:
        hist[n] = value
        ist[I_NHIST] = n + 1


@jit
def _target_residual(fst, top, second, r2, gap_cap):
    """(relative residual estimate at which a Ritz vector is worth a verification product, whether it may stop).

    In value mode: the residual bound's target (res <= 2 rtol, verified from half of it), or the
    larger Kato-Temple one once the Krylov resolution floor allows it (see `_value_error`).
    """
    rtol = fst[F_RTOL]
    if rtol <= 0.0:
        return 0.5 * fst[F_TOL], True
    target = rtol
    g = top - second - r2
    if 0.5 * gap_cap <= rtol and g > 0.0 and top > 0.0:
        kt = np.sqrt(rtol * g / top)  # Kato-Temple: res^2 top / (2 g) <= rtol / 2
        target = max(target, min(kt, 0.5 * g / top))
    return target, True


@jit
def _top_ritz(T, j, first_cycle, s_top):
    """(top, second, last component of the second Ritz vector, scale) of T[:j, :j]; s_top receives the top vector.

    T is tridiagonal in the first cycle (bisection and inverse iteration, O(j)); after a thick
    restart it has an arrowhead block and is solved densely.
    """
    if first_cycle:
        diag = np.empty(j + 1)
        off = np.zeros(j + 1)
        for i in range(j):
            diag[i] = T[i, i]
            off[i] = T[i + 1, i]
        top, second, s = tridiagonal_top(diag, off, j)
        for i in range(j):
            s_top[i] = s[i]
        s2_last = np.nan
        if j >= 2:
            s2 = np.ones(j)
            for _ in range(2):
                _tridiagonal_solve(diag, off, j, second, s2)
                s2 /= np.sqrt(_dot(s2, s2))
            s2_last = s2[j - 1]
        amax = 0.0
        omax = 0.0
        for i in range(j):
            amax = max(amax, abs(diag[i]))
            omax = max(omax, abs(off[i]))
        return top, second, s2_last, max(abs(top), amax + 2.0 * omax)
    theta, S = np.linalg.eigh(np.ascontiguousarray(T[:j, :j]))
    for i in range(j):
        s_top[i] = S[i, j - 1]
    second = theta[j - 2] if j >= 2 else np.nan
    s2_last = S[j - 1, j - 2] if j >= 2 else np.nan
    return theta[j - 1], second, s2_last, max(theta[j - 1], np.max(np.abs(theta)))


@jit
def _ritz_vector(V, s, j, out):
    """out = unit(V[:j].T @ s)."""
    out[:] = 0.0
    for i in range(j):
        c = s[i]
        for t in range(out.shape[0]):
            out[t] += c * V[i, t]
    out /= np.sqrt(_dot(out, out))


@jit
def _restart(ist, T, V, beta):
    """Thick restart: keep the top ``keep`` Ritz vectors and the newest Lanczos vector."""
    K = ist[I_K]
    keep = ist[I_KEEP]
    q = V.shape[1]
    theta, S = np.linalg.eigh(np.ascontiguousarray(T[:K, :K]))
    Vk = np.zeros((keep, q))
    for l in range(keep):
        col = K - keep + l
        for i in range(K):
            c = S[i, col]
            for t in range(q):
                Vk[l, t] += c * V[i, t]
    for l in range(keep):
        _copy(V[l], Vk[l])
    _copy(V[keep], V[K])
    T[:, :] = 0.0
    for l in range(keep):
        T[l, l] = theta[K - keep + l]
        T[keep, l] = beta * S[K - 1, K - keep + l]
        T[l, keep] = T[keep, l]
    ist[I_J] = keep
    ist[I_FIRST_CYCLE] = 0


@jit
def _next_request(ist, fst, V, T, x):
    """After a check (or a failed verification): restart if the basis is full, then the next product."""
    j = ist[I_J]
    if j == ist[I_K] and ist[I_KEEP] > 0:
        _restart(ist, T, V, T[j, j - 1])
        j = ist[I_J]
    if ist[I_STEPS] >= ist[I_MAXITER] - 1:  # the last product verifies the best Ritz vector
        s = np.empty(j)
        _top_ritz(T, j, ist[I_FIRST_CYCLE] == 1, s)
        _ritz_vector(V, s, j, x)
        ist[I_REQUEST] = MEASURE
        return MEASURE
    _copy(x, V[j])
    ist[I_REQUEST] = EXTEND
    return EXTEND


@jit
def _all_finite(z):
    for t in range(z.shape[0]):
        if not np.isfinite(z[t]):
            return False
    return True


@jit
def _orthogonalize(V, n, z, h):
    """z made orthogonal to V[:n] by modified Gram-Schmidt, twice (once loses orthogonality to rounding).

    h accumulates the coefficients.
    """
    q = z.shape[0]
    for _ in range(2):
        for i in range(n):
            c = _dot(V[i], z)
            h[i] += c
            for t in range(q):
                z[t] -= c * V[i, t]


@jit
def _extend(ist, V, T, z):
    """The Lanczos step: z = B V[j] against the basis gives T's column j and V[j + 1] = z / beta; returns beta.

    Full reorthogonalization (a thick restart's arrowhead T couples V[j] to every kept vector).
    """
    j = ist[I_J]
    q = z.shape[0]
    h = np.zeros(j + 1)
    _orthogonalize(V, j + 1, z, h)
    for i in range(j + 1):
        T[i, j] = h[i]
        T[j, i] = h[i]
    beta = np.sqrt(_dot(z, z))
    if beta > 0.0:
        for t in range(q):
            V[j + 1, t] = z[t] / beta
    else:
        V[j + 1, :] = 0.0
    T[j + 1, j] = beta
    T[j, j + 1] = beta
    ist[I_J] = j + 1
    return beta


@jit
def _schedule(ist, fst, steps, est, target):
    """Schedule the next check from the observed geometric decay of the residual estimate ``est``.

    An eigensolve of the projected matrix is not free: aim at half the predicted distance to
    ``target``, at least one and at most ``I_MAX_GAP`` steps (``I_CHECK_EVERY`` until a decay is seen).
    """
    gap = ist[I_CHECK_EVERY]
    prev_est = fst[F_PREV_EST]
    if ist[I_PREV_STEP] >= 0 and 0.0 < est < prev_est:
        rate = (est / prev_est) ** (1.0 / max(steps - ist[I_PREV_STEP], 1))
        remaining = np.log(target / est) / np.log(rate) if est > target else 0.0
        gap = int(min(max(1.0, 0.5 * remaining), ist[I_MAX_GAP]))
    ist[I_NEXT_CHECK] = steps + gap
    ist[I_PREV_STEP] = steps
    fst[F_PREV_EST] = est


@jit
def _fresh(ist, V, T, x):
    """FRESH answered: x (the driver's random vector) against the basis becomes V[j]; then the next product."""
    j = ist[I_J]
    _orthogonalize(V, j, x, np.zeros(j))
    nx = np.sqrt(_dot(x, x))
    if nx == 0.0:  # pragma: no cover - the basis spans the space, which the whole-space stop catches first
        return _stop(ist, CONVERGED)
    for t in range(x.shape[0]):
        V[j, t] = x[t] / nx
    if j == ist[I_K]:
        _restart(ist, T, V, T[j, j - 1])  # 0 at the invariant subspace: the kept pairs stay decoupled
    _copy(x, V[ist[I_J]])
    ist[I_REQUEST] = EXTEND
    return EXTEND


@jit
def advance_pairs(ist, fst, V, T, x, y, z):
    """`advance` for the top ``nev`` pairs (method ``pairs``): every product extends the basis.

    The rules of ``top_singular_values(method="lanczos")``: a check at every invariant subspace
    and on the schedule; converged when every top-``nev`` estimate |beta s_j| meets
    ``tol * max(theta_i, floor * theta_1)``, or when the whole space is spanned; an invariant
    subspace asks for a `FRESH` direction, and after one, only an invariant subspace whose top
    ``nev`` values all stayed within their targets of the previous one's converges (the old
    pairs' estimates are zero by construction after a fresh start: they tell nothing).

    On `FRESH`, the driver fills x with a standard normal vector and calls again (y, z are not
    read). On DONE, `pairs` gives the Ritz pairs. A separate entry rather than a branch of
    `advance`: the numba driver of the one-pair solve would compile these checks too (measured:
    a quarter more compile time on the first ``spectral_norm`` of a process with a cold cache).
    """
    if ist[I_REQUEST] == FRESH:
        return _fresh(ist, V, T, x)
    ist[I_STEPS] += 1
    steps = ist[I_STEPS]
    maxiter = ist[I_MAXITER]
    if steps == 1 and not _in_range(y, fst[F_LO], fst[F_HI]):
        return _stop(ist, RESCALE)
    if not _all_finite(z):
        return _stop(ist, RESCALE)
    j = ist[I_J]
    q = x.shape[0]
    beta = _extend(ist, V, T, z)
    scale = 0.0
    for i in range(j + 1):
        for l in range(j + 1):
            scale = max(scale, abs(T[i, l]))
    j += 1
    # rounding leaves ||z|| ~ sqrt(q) eps ||B|| at an invariant subspace; below that, z is noise
    invariant = beta <= fst[F_BREAKDOWN] * np.sqrt(q) * _EPS * scale
    if invariant:
        beta = 0.0
        T[j, j - 1] = 0.0
        T[j - 1, j] = 0.0
    whole_space = j == q
    due = invariant or whole_space or steps >= ist[I_NEXT_CHECK] or j == ist[I_K] or steps >= maxiter
    if not due:
        _copy(x, V[j])
        ist[I_REQUEST] = EXTEND
        return EXTEND
    theta, S = np.linalg.eigh(np.ascontiguousarray(T[:j, :j]))
    top = max(theta[j - 1], 0.0)
    nev = ist[I_NEV]
    m = min(nev, j)
    tol = fst[F_TOL]
    worst = 0.0
    met = True
    for i in range(j - m, j):
        est = abs(beta * S[j - 1, i])
        worst = max(worst, est)
        met = met and est <= tol * max(max(theta[i], 0.0), fst[F_FLOOR] * top)
    _schedule(ist, fst, steps, worst / top if top > 0.0 else worst, 0.5 * tol)
    if whole_space:
        return _stop(ist, CONVERGED)
    if invariant or top == 0.0:
        # The Krylov space of one vector holds one copy of each eigenvalue: continue from random
        # directions orthogonal to the basis until one brings no change to the top nev values.
        if j >= nev:
            if ist[I_BREAK] == m:
                same = True
                for i in range(m):
                    target = tol * max(max(theta[j - m + i], 0.0), fst[F_FLOOR] * top)
                    same = same and abs(theta[j - m + i] - fst[N_FLOAT + i]) <= target
                if same:
                    return _stop(ist, CONVERGED)
            for i in range(m):
                fst[N_FLOAT + i] = theta[j - m + i]
            ist[I_BREAK] = m
        else:
            ist[I_BREAK] = 0
        if steps >= maxiter:
            return _stop(ist, MAXITER)
        ist[I_REQUEST] = FRESH
        return FRESH
    if j >= nev and ist[I_BREAK] < 0 and met:
        return _stop(ist, CONVERGED)
    if steps >= maxiter:
        return _stop(ist, MAXITER)
    if j == ist[I_K]:
        _restart(ist, T, V, beta)
    _copy(x, V[ist[I_J]])
    ist[I_REQUEST] = EXTEND
    return EXTEND


@jit
def pairs(ist, V, T, theta, W, estimate):
    """The top Ritz pairs of a finished ``pairs`` solve, largest first; returns how many (min(nev, j)).

    theta[i] and the row W[i] are the i-th Ritz value and unit Ritz vector, estimate[i] its
    residual estimate |beta s_i| (the residual norm ||B w - theta w|| in exact arithmetic).
    """
    j = ist[I_J]
    m = min(ist[I_NEV], j)
    if m == 0:
        return 0
    values, S = np.linalg.eigh(np.ascontiguousarray(T[:j, :j]))
    beta = T[j, j - 1]
    for i in range(m):
        col = j - 1 - i
        theta[i] = values[col]
        estimate[i] = abs(beta * S[j - 1, col])
        W[i, :] = 0.0
        for l in range(j):
            c = S[l, col]
            for t in range(W.shape[1]):
                W[i, t] += c * V[l, t]
    return m


@jit
def advance(ist, fst, V, T, hist, x, w, yb, y, z):
    """Consume y = M x and z = M^T y for the requested x; return the next request (x filled) or DONE.

    On DONE, ``ist[I_STOP]`` says why; w, yb, ``fst[F_THETA]`` and ``fst[F_RES]`` are the last
    measured unit vector, M w, its Rayleigh quotient and relative residual. (Method ``pairs`` has
    its own entry, `advance_pairs`.)
    """
    q = x.shape[0]
    request = ist[I_REQUEST]
    ist[I_STEPS] += 1
    steps = ist[I_STEPS]
    maxiter = ist[I_MAXITER]
    value_mode = fst[F_RTOL] > 0.0
    if steps == 1 and not _in_range(y, fst[F_LO], fst[F_HI]):
        return _stop(ist, RESCALE)
    if request & MEASURE:
        theta = _dot(y, y)
        if not np.isfinite(theta):
            return _stop(ist, RESCALE)
        if theta == 0.0:
            _record(ist, fst, x, w, yb, y, 0.0, 0.0)
            fst[F_ERROR] = 0.0
            _push_history(ist, hist, 0.0)
            return _stop(ist, ZERO)
        r = 0.0
        for t in range(q):
            d = z[t] - theta * x[t]
            r += d * d
        res = np.sqrt(r) / theta
        if not np.isfinite(res):  # z overflowed
            return _stop(ist, RESCALE)
        _record(ist, fst, x, w, yb, y, theta, res)
        err = _value_error(fst, theta, res, ist[I_PHASE] == POWER or (ist[I_INVARIANT] == 1 and not request & EXTEND))
        fst[F_ERROR] = err
        ok = err <= fst[F_RTOL] if value_mode else res <= fst[F_TOL]
        if ist[I_PHASE] == POWER:
            _push_history(ist, hist, np.sqrt(theta))
            rate = res / fst[F_PREV]  # the Gram residual shrinks by (sigma2/sigma1)^2 a step
            if np.isfinite(rate):
                fst[F_RATIO] = np.sqrt(min(max(rate, 0.0), 1.0))
            fst[F_PREV] = res
            ist[I_POWER_DEGREE] = steps - 1
            if ok:
                return _stop(ist, CONVERGED)
            if steps >= maxiter:
                return _stop(ist, MAXITER)
            nz = np.sqrt(_dot(z, z))
            for t in range(q):
                x[t] = z[t] / nz
            if ist[I_METHOD] == AUTO and steps >= 3:
                target = 2.0 * fst[F_RTOL] if value_mode else fst[F_TOL]
                remaining = np.inf
                if rate < 1.0:
                    remaining = np.log(target / res) / np.log(min(max(rate, 1e-300), 1.0))
                if not remaining <= ist[I_AUTO_MAX]:  # switch to Lanczos from the next iterate
                    ist[I_PHASE] = LANCZOS
                    ist[I_POWER_DEGREE] = steps
                    _copy(V[0], x)
                    ist[I_J] = 0
                    ist[I_REQUEST] = EXTEND | MEASURE
                    return EXTEND | MEASURE
            return MEASURE
        if ok:
            if ist[I_NHIST] == 0:
                _push_history(ist, hist, np.sqrt(theta))
            return _stop(ist, CONVERGED)
        if not request & EXTEND:  # a verification that failed
            if ist[I_INVARIANT] == 1:
                return _stop(ist, EXACT)
            if steps >= maxiter:
                if ist[I_NHIST] == 0:
                    _push_history(ist, hist, np.sqrt(theta))
                return _stop(ist, MAXITER)
            return _next_request(ist, fst, V, T, x)
        if steps >= maxiter:
            _push_history(ist, hist, np.sqrt(theta))
            ist[I_LANCZOS_DIM] = 1
            return _stop(ist, MAXITER)
    # EXTEND: x is V[j]; z = B V[j] extends the basis
    if not _all_finite(z):
        return _stop(ist, RESCALE)
    beta = _extend(ist, V, T, z)
    j = ist[I_J]
    if ist[I_FIRST_CYCLE] == 1:
        ist[I_LANCZOS_DIM] = j
    due = steps >= ist[I_NEXT_CHECK] or j == ist[I_K] or j == q or steps >= maxiter - 1
    if not due:
        _copy(x, V[j])
        ist[I_REQUEST] = EXTEND
        return EXTEND
    s_top = np.empty(j)
    top, second, s2_last, scale = _top_ritz(T, j, ist[I_FIRST_CYCLE] == 1, s_top)
    top = max(top, 0.0)
    _push_history(ist, hist, np.sqrt(top))
    if j >= 2 and top > 0.0:
        fst[F_RATIO] = np.sqrt(max(second, 0.0) / top)
    invariant = beta <= _EPS * scale * 4.0
    est = abs(beta * s_top[j - 1]) / top if top > 0.0 else 0.0
    r2 = abs(beta * s2_last)
    fst[F_SECOND] = second
    fst[F_R2] = r2
    degree = steps - ist[I_POWER_DEGREE]  # Lanczos products so far: the degree of the Krylov polynomial
    fst[F_GAP_CAP] = (fst[F_RESOLUTION] / degree) ** 2
    target, credible = _target_residual(fst, top, second, r2, fst[F_GAP_CAP])
    _schedule(ist, fst, steps, est, target)
    if ((credible and est <= target) or invariant or top == 0.0) and steps < maxiter - 1:
        _ritz_vector(V, s_top, j, x)
        ist[I_INVARIANT] = 1 if invariant else 0
        ist[I_REQUEST] = MEASURE
        return MEASURE
    return _next_request(ist, fst, V, T, x)


@jit
def solve_stack(A, X0, ist, fst, hist, W, Yb, C1, C2, scratch):
    """Run the engine to the end on every matrix of A (b, p, q), in order, on this thread.

    Products are those of C1[k] C2[k] A[k] (see ``_kernels._gram_step``), on the parallel one-pass
    kernel when ``scratch`` has more than one row (a single large matrix), else on this thread
    (the matrices of a stack: ``_topsv`` runs contiguous chunks of it on several threads; the
    kernel releases the GIL). A ``prange`` here would re-optimize the whole engine inside the
    parallel region: seconds more compile time per dtype.
    """
    b, p, q = A.shape
    K = ist[0, I_K] if b > 0 else 0
    V = np.zeros((K + 1, q))
    T = np.zeros((K + 1, K + 1))
    x = np.empty(q)
    y = np.empty(p)
    z = np.empty(q)
    xs = np.empty(q)
    for k in range(b):
        T[:, :] = 0.0
        request = start(ist[k], fst[k], V, X0[k], x)
        while request != DONE:
            _gram_step(A[k], x, y, z, scratch, C1[k], C2[k], xs)
            request = advance(ist[k], fst[k], V, T, hist[k], x, W[k], Yb[k], y, z)
