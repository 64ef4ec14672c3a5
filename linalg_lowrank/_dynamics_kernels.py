"""numba kernels of the optimizer-dynamics simulator: plain arrays in, no validation, no defaults.

Random numbers come from per-coordinate SplitMix64 streams: the stream of coordinate ``i`` starts
at ``mix(mix(seed) + (i + 1) * GAMMA_STREAM)`` and advances by ``GAMMA`` per draw, so the normals
of coordinate ``i`` depend only on ``(seed, i)``; they come from the ziggurat method. Coordinates are independent,
so the kernel runs over fixed chunks of coordinates in parallel, each chunk accumulating its
squared sums into its own row; rows are reduced serially afterwards. Results therefore depend on
the seed only, not on the thread count or the scheduling.

Each kernel has a plain-numpy twin in ``tests/reference.py``, compared in ``tests/test_dynamics.py``.
"""

import math

import numpy as np
from numba import prange

from ._jit import jit

GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64 increment (golden ratio)
GAMMA_STREAM = np.uint64(0xD1B54A32D192ED03)  # odd constant that spaces the coordinate streams
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)

#: Optimizer codes of the simulation kernel.
ADAMW, SIGNSGDM, ADAM, SGDM = 0, 1, 2, 3


@jit
def mix64(z):
    """SplitMix64 finalizer (Steele, Lea & Flood 2014) of a uint64."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@jit
def stream_start(seed, i):
    """Initial SplitMix64 state of coordinate ``i``'s stream."""
    return mix64(mix64(np.uint64(seed)) + np.uint64(i + 1) * GAMMA_STREAM)


def _ziggurat_tables(C=128, R=3.442619855899, V=9.91256303526217e-3):
    # Doornik's ZIGNOR layout: X[0] = V / f(R) is the virtual width of the base strip, X[1] = R,
    # X[C] = 0; RATIO[i] = X[i + 1] / X[i] is the acceptance bound of the rectangle test.
    X = np.empty(C + 1)
    f = math.exp(-0.5 * R * R)
    X[0] = V / f
    X[1] = R
    X[C] = 0.0
    for i in range(2, C):
        X[i] = math.sqrt(-2.0 * math.log(V / X[i - 1] + f))
        f = math.exp(-0.5 * X[i] * X[i])
    return X, X[1:] / X[:-1]


ZIG_X, ZIG_RATIO = _ziggurat_tables()
ZIG_R = 3.442619855899
_S11 = np.uint64(11)
_MASK7 = np.uint64(127)
_TWO_M53 = 2.0**-53


@jit
def uniform(z):
    """A uniform in the open interval (0, 1) from the top 53 bits of ``z``."""
    # via int64: x86 without AVX-512 has no direct uint64 -> double conversion (3x slower)
    return (float(np.int64(z >> _S11)) + 0.5) * _TWO_M53


@jit
def normal(s):
    """One standard normal from the SplitMix64 stream at state ``s``; returns (value, new state).

    Ziggurat method in Doornik's form (ZIGNOR, 128 strips): the strip index comes from the low 7
    bits of a draw and the abscissa from its top 53 bits, so they are independent. 98.8% of the
    draws end at the first comparison (kept small so that it inlines); the wedges and the tail,
    in ``_normal_rest``, draw more from the same stream.
    """
    s += GAMMA
    z = mix64(s)
    u = 2.0 * uniform(z) - 1.0
    i = np.int64(z & _MASK7)
    if abs(u) < ZIG_RATIO[i]:
        return u * ZIG_X[i], s
    return _normal_rest(u, i, s)


@jit
def _normal_rest(u, i, s):
    while True:
        if i == 0:  # base strip: exact tail beyond R (Marsaglia 1964)
            while True:
                s += GAMMA
                x = math.log(uniform(mix64(s))) / ZIG_R
                s += GAMMA
                y = math.log(uniform(mix64(s)))
                if -2.0 * y >= x * x:
                    break
            return (x - ZIG_R if u < 0.0 else ZIG_R - x), s
        x = u * ZIG_X[i]
        f0 = math.exp(-0.5 * (ZIG_X[i] * ZIG_X[i] - x * x))
        f1 = math.exp(-0.5 * (ZIG_X[i + 1] * ZIG_X[i + 1] - x * x))
        s += GAMMA
        if f1 + uniform(mix64(s)) * (f0 - f1) < 1.0:
            return x, s
        s += GAMMA  # rejected: start over with a fresh draw
        z = mix64(s)
        u = 2.0 * uniform(z) - 1.0
        i = np.int64(z & _MASK7)
        if abs(u) < ZIG_RATIO[i]:
            return u * ZIG_X[i], s


@jit(parallel=True)
def normals(seed, n, count, out):
    """``out[i, k]`` = normal number ``k`` of coordinate ``i``'s stream, for i < n, k < count."""
    for i in prange(n):
        s = stream_start(seed, i)
        for k in range(count):
            out[i, k], s = normal(s)


@jit
def _normal_block(S, Z, rejected, out):
    """``out[j]`` = the next normal of stream ``S[j]``, for every j; advances ``S`` in place.

    The same numbers as :func:`normal`, reordered for speed: the SplitMix64 mixing of all streams
    runs first as one loop without branches (it vectorizes), then the ziggurat's rectangle test,
    and only the ~1.2% of draws it rejects go through ``_normal_rest``, by index.
    """
    for j in range(S.shape[0]):
        s = S[j] + GAMMA
        S[j] = s
        Z[j] = mix64(s)
    n_rejected = 0
    for j in range(S.shape[0]):
        z = Z[j]
        u = 2.0 * uniform(z) - 1.0
        i = np.int64(z & _MASK7)
        out[j] = u * ZIG_X[i]
        rejected[n_rejected] = j  # branch-free append: kept only if the test below fails
        n_rejected += abs(u) >= ZIG_RATIO[i]
    for k in range(n_rejected):
        j = rejected[k]
        z = Z[j]
        out[j], S[j] = _normal_rest(2.0 * uniform(z) - 1.0, np.int64(z & _MASK7), S[j])


@jit(parallel=True)
def simulate(kind, theta0, mu, sd, lr, wd, beta1, beta2, eps, seed, steps, record_every, chunk, w_acc, u_acc):
    """Run one optimizer on independent coordinates with gradients ``mu + sd * N(0, 1)``.

    ``mu``, ``sd`` have length 1 (shared) or n; ``lr``, ``wd`` length 1 (constant) or ``steps``
    (schedule). After every ``record_every`` steps the chunk's sums of theta^2 and of the squared
    update direction u^2 are added to ``w_acc[c, r]`` and ``u_acc[c, r]`` (r = 1, 2, ...; r = 0
    holds theta0), coordinates in increasing order. Update rules (step t = 1, 2, ...; g is the
    stochastic gradient; m = v = 0 at the start):

    - ADAMW: m, v EMAs of g, g^2; u = (m c1) / (sqrt(v) c2 + eps) with c1 = 1 / (1 - beta1^t),
      c2 = 1 / sqrt(1 - beta2^t) (Adam's bias corrections, one division per coordinate);
      theta = (1 - lr wd) theta - lr u
    - SIGNSGDM: m EMA of g; u = sign(m); theta = (1 - lr wd) theta - lr u
    - ADAM: as ADAMW on g + wd theta (coupled L2 penalty), theta = theta - lr u
    - SGDM: m = beta1 m + (g + wd theta); u = m; theta = theta - lr u (torch.optim.SGD, dampening 0)

    The coordinates of a chunk advance in lockstep, one step at a time: their state lives in short
    arrays that stay in L1, and every loop over them except the ziggurat's runs without branches,
    so the update (square root and division included) runs on SIMD registers.
    """
    n = theta0.shape[0]
    n_chunks = (n + chunk - 1) // chunk
    lr_step = 1 if lr.shape[0] > 1 else 0
    wd_step = 1 if wd.shape[0] > 1 else 0
    for c in prange(n_chunks):
        lo = c * chunk
        nb = min(n, lo + chunk) - lo
        S = np.empty(nb, np.uint64)
        Z = np.empty(nb, np.uint64)
        rejected = np.empty(nb, np.int64)
        th = np.empty(nb)
        m = np.zeros(nb)
        v = np.zeros(nb)
        g = np.empty(nb)
        u = np.zeros(nb)
        mub = np.empty(nb)
        sdb = np.empty(nb)
        for j in range(nb):
            S[j] = stream_start(seed, lo + j)
            th[j] = theta0[lo + j]
            w_acc[c, 0] += th[j] * th[j]
            mub[j] = mu[lo + j] if mu.shape[0] > 1 else mu[0]
            sdb[j] = sd[lo + j] if sd.shape[0] > 1 else sd[0]
        b1t = 1.0
        b2t = 1.0
        rec = 1
        countdown = record_every
        for t in range(steps):
            _normal_block(S, Z, rejected, g)
            for j in range(nb):
                g[j] = mub[j] + sdb[j] * g[j]
            eta = lr[t * lr_step]
            lam = wd[t * wd_step]
            decay = 1.0 - eta * lam
            if kind == SIGNSGDM:
                for j in range(nb):
                    m[j] = beta1 * m[j] + (1.0 - beta1) * g[j]
                    u[j] = 1.0 if m[j] > 0.0 else (-1.0 if m[j] < 0.0 else 0.0)
                    th[j] = decay * th[j] - eta * u[j]
            elif kind == SGDM:
                for j in range(nb):
                    m[j] = beta1 * m[j] + (g[j] + lam * th[j])
                    u[j] = m[j]
                    th[j] = th[j] - eta * u[j]
            else:
                b1t *= beta1
                b2t *= beta2
                c1 = 1.0 / (1.0 - b1t)
                c2 = 1.0 / math.sqrt(1.0 - b2t)
                if kind == ADAM:
                    for j in range(nb):
                        g[j] = g[j] + lam * th[j]
                for j in range(nb):
                    m[j] = beta1 * m[j] + (1.0 - beta1) * g[j]
                    v[j] = beta2 * v[j] + (1.0 - beta2) * g[j] * g[j]
                    u[j] = (m[j] * c1) / (math.sqrt(v[j]) * c2 + eps)
                if kind == ADAMW:
                    for j in range(nb):
                        th[j] = decay * th[j] - eta * u[j]
                else:
                    for j in range(nb):
                        th[j] = th[j] - eta * u[j]
            countdown -= 1
            if countdown == 0:
                for j in range(nb):
                    w_acc[c, rec] += th[j] * th[j]
                    u_acc[c, rec] += u[j] * u[j]
                rec += 1
                countdown = record_every


@jit
def ema_moments(decay, gain, cov, first, second, survive):
    """Moments of ``x_t = decay[t] x_{t-1} + gain[t] u_t`` for stationary inputs u, for every t.

    ``cov[d]`` is the autocovariance of u at lag d (zero beyond ``len(cov) - 1``). With
    ``w_{s,t} = gain[s] * prod(decay[s+1..t])``: ``first[t] = sum_s w_{s,t}``,
    ``second[t] = sum_{s,s'} w_{s,t} w_{s',t} cov[|s - s'|]`` (the variance of x_t) and
    ``survive[t] = prod(decay[0..t])``. The pair sum follows
    ``Q_t = decay_t^2 Q_{t-1} + gain_t^2 cov_0 + 2 gain_t decay_t sum_{d>=1} cov_d w_{t-d,t-1}``,
    O(len(decay) * len(cov)).
    """
    D = cov.shape[0] - 1
    f = 0.0
    q = 0.0
    p = 1.0
    for t in range(decay.shape[0]):
        b = 0.0
        prod = 1.0  # prod(decay[t-d+1..t-1]) for the current lag d
        for d in range(1, min(D, t) + 1):
            b += cov[d] * gain[t - d] * prod
            prod *= decay[t - d]
        r = decay[t]
        g = gain[t]
        f = r * f + g
        q = r * r * q + g * g * cov[0] + 2.0 * g * r * b
        p = r * p
        first[t] = f
        second[t] = q
        survive[t] = p
