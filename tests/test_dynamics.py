"""Weight-RMS predictions against the simulator and closed-form limits; kernels against numpy twins."""

import math

import numba
import numpy as np
import pytest
from scipy import stats

from linalg_lowrank import _dynamics_kernels as K
from linalg_lowrank.dynamics import (
    WeightRMSSimulation,
    _sign_covariances,
    adam_update_rms,
    adamw_weight_rms,
    signsgdm_weight_rms,
    simulate_weight_rms,
)

from . import reference

EPS64 = np.finfo(np.float64).eps


# -- kernels against their twins -----------------------------------------------------------------
# SplitMix64 multiplies modulo 2^64 on purpose; without JIT (NUMBA_DISABLE_JIT=1) numpy's uint64
# scalars warn about that wrap-around, which the test configuration turns into errors.
wraps_uint64 = pytest.mark.filterwarnings("ignore:overflow encountered in scalar:RuntimeWarning")


@pytest.mark.kernel
@wraps_uint64
def test_normal_stream_matches_python_ziggurat():
    n, count, seed = 5, 400, 12345
    out = np.empty((n, count))
    K.normals(seed, n, count, out)
    np.testing.assert_array_equal(out, reference.normals(seed, n, count))


@pytest.mark.kernel
@wraps_uint64
def test_stream_building_blocks_match_python_integers():
    for z in [0, 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15, 12345678901234567]:
        assert int(K.mix64(np.uint64(z))) == reference.mix64(z)
        assert K.uniform(np.uint64(z)) == reference.uniform(z)
    for seed, i in [(0, 0), (12345, 7), (2**63 + 5, 1000)]:
        assert int(K.stream_start(np.uint64(seed), i)) == reference.stream_start(seed, i)
    s = K.stream_start(99, 3)
    draws = []
    for _ in range(300):  # one draw at a time: the ziggurat's wedges and tail are reached too
        x, s = K.normal(np.uint64(s))  # a Python int below 2^63 would be typed int64
        draws.append(x)
    np.testing.assert_array_equal(draws, reference.normals(99, 4, 300)[3])


@pytest.mark.kernel
@wraps_uint64
def test_normal_stream_is_standard_normal():
    out = np.empty((50, 4000))
    K.normals(7, 50, 4000, out)
    z = out.ravel()
    # deterministic sample of 2e5: the KS statistic of a correct sampler is ~ 1/sqrt(N) = 0.0022
    assert stats.kstest(z, "norm").statistic < 0.006
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / z.size)
    tail = np.mean(np.abs(z) > K.ZIG_R)  # the tail branch: 2 * Phi(-3.44) = 5.8e-4
    assert abs(tail - 2 * stats.norm.sf(K.ZIG_R)) < 5 * math.sqrt(5.8e-4 / z.size)
    # coordinates are independent streams: no correlation between neighbours
    assert abs(np.corrcoef(out[0], out[1])[0, 1]) < 5 / math.sqrt(out.shape[1])


@pytest.mark.kernel
@wraps_uint64
@pytest.mark.parametrize("optimizer", ["adamw", "signsgdm", "adam", "sgdm"])
@pytest.mark.parametrize("schedule", [False, True])
def test_simulate_kernel_matches_numpy_loop(optimizer, schedule):
    n, steps, seed, every = 13, 240, 99, 7  # chunk 5: several chunks, the last one partial
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(n) * 0.3
    mu = rng.standard_normal(n) * 0.2
    sd = rng.uniform(0.5, 2.0, n)
    lr = np.linspace(3e-3, 1e-3, steps) if schedule else np.array([2e-3])
    wd = np.linspace(0.5, 1.0, steps) if schedule else np.array([0.7])
    xi = np.empty((n, steps))
    K.normals(seed, n, steps, xi)
    chunk = 5
    nc = -(-n // chunk)
    R = 1 + steps // every
    w_acc, u_acc = np.zeros((nc, R)), np.zeros((nc, R))
    code = {"adamw": K.ADAMW, "signsgdm": K.SIGNSGDM, "adam": K.ADAM, "sgdm": K.SGDM}[optimizer]
    theta0_copy = theta0.copy()
    K.simulate(code, theta0, mu, sd, lr, wd, 0.9, 0.99, 1e-8, seed, steps, every, chunk, w_acc, u_acc)
    np.testing.assert_array_equal(theta0, theta0_copy)
    w_ref, u_ref = reference.simulate(optimizer, theta0, mu, sd, lr, wd, 0.9, 0.99, 1e-8, xi, every)
    # same operations in the same order; only the summation order of the RMS differs
    np.testing.assert_allclose(np.sqrt(w_acc.sum(0) / n), w_ref, rtol=10 * n * EPS64)
    np.testing.assert_allclose(np.sqrt(u_acc.sum(0) / n)[1:], u_ref[1:], rtol=10 * n * EPS64)


@pytest.mark.kernel
def test_ema_moments_kernel_matches_double_sums():
    rng = np.random.default_rng(3)
    T = 60
    decay, gain = rng.uniform(0.8, 1.0, T), rng.uniform(0.1, 1.0, T)
    cov = 0.7 ** np.arange(25) * rng.uniform(0.5, 1.0, 25)  # truncated: lags beyond 24 are zero
    got = [np.empty(T) for _ in range(3)]
    K.ema_moments(decay, gain, cov, *got)
    for g, r in zip(got, reference.ema_moments(decay, gain, cov), strict=True):
        np.testing.assert_allclose(g, r, rtol=T * 10 * EPS64)


def test_public_simulator_is_reproducible_for_any_thread_count():
    kw = dict(n=600, steps=300, lr=1e-2, weight_decay=0.5, init_rms=0.2, rng=5, record_every=10)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simulate_weight_rms("adamw", **kw)
        numba.set_num_threads(threads)
        many = simulate_weight_rms("adamw", **kw)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one.weight_rms, many.weight_rms)
    np.testing.assert_array_equal(one.update_rms, many.update_rms)
    other = simulate_weight_rms("adamw", **{**kw, "rng": 6})
    assert not np.array_equal(one.weight_rms[1:], other.weight_rms[1:])
    again = simulate_weight_rms("adamw", **{**kw, "rng": one.seed})
    np.testing.assert_array_equal(one.weight_rms, again.weight_rms)


def test_simulation_result_fields_and_repr():
    mean = np.full(50, 0.1)
    sim = simulate_weight_rms("signsgdm", n=50, steps=100, lr=1e-2, weight_decay=0.1, grad_mean=mean, init_rms=0.5)
    np.testing.assert_array_equal(mean, np.full(50, 0.1))  # input untouched
    assert isinstance(sim, WeightRMSSimulation)
    assert sim.steps[0] == 0 and sim.steps[-1] == 100 and sim.weight_rms.shape == sim.steps.shape
    assert sim.weight_rms[0] == pytest.approx(0.5, rel=1e-14)  # exact initial RMS
    assert np.isnan(sim.update_rms[0]) and np.all(sim.update_rms[1:] == 1.0)  # |sign| = 1
    text = repr(sim)
    assert text.startswith("WeightRMSSimulation(") and "optimizer='signsgdm'" in text and "n=50," in text
    assert f"seed={sim.seed}," in text and "steps=array(shape=(" in text


# -- predictions against the simulator (small, fast cases) ---------------------------------------
def _sim_ms(optimizer, n, steps, **kw):
    sim = simulate_weight_rms(optimizer, n=n, steps=steps, record_every=steps // 4, rng=11, **kw)
    return sim


@pytest.mark.parametrize("beta1", [0.9, 0.95])
@pytest.mark.parametrize("mu", [0.0, 0.05])
def test_adamw_prediction_matches_simulation_over_training(beta1, mu):
    # lr wd = 2.5e-3: the first 1 / (1 - beta1) steps, where Adam's bias-corrected moments are not
    # yet stationary, stay a small share (< 1%) of the horizon 1 / (lr wd)
    lr, wd, n = 5e-3, 0.5, 20_000
    T = int(3 / (lr * wd))  # 0.75, 1.5, 2.25 and 3 times 1 / (lr wd)
    sim = _sim_ms("adamw", n, T, lr=lr, weight_decay=wd, beta1=beta1, grad_mean=mu, init_rms=0.3)
    for t, got in zip(sim.steps[1:], sim.weight_rms[1:], strict=True):
        pred = adamw_weight_rms(lr, wd, beta1=beta1, snr=mu**2, steps=int(t), init_rms=0.3)
        # statistical error of an RMS over n coordinates ~ 1/sqrt(2n) = 0.5%; model error below 1%
        assert abs(got / pred - 1) < 0.02, (t, got, pred)


def test_signsgdm_exact_stationary_value_where_mean_field_is_off():
    lr, wd, n, b1 = 1e-2, 0.5, 20_000, 0.9
    T = int(5 / (lr * wd))
    sim = _sim_ms("signsgdm", n, T, lr=lr, weight_decay=wd, beta1=b1)
    got = sim.weight_rms[-1]
    pred = signsgdm_weight_rms(lr, wd, beta1=b1, steps=T)
    assert abs(got / pred - 1) < 0.02
    # the mean-field value (sign(m) ~ m / rms(m), autocorrelation beta1^d) is 20% too high:
    # sqrt(19 / 13.28), the lag sum of beta1^d against that of (2/pi) arcsin(beta1^d)
    kappa = lr * wd
    mean_field = math.sqrt(lr * lr * (1 + b1 * (1 - kappa)) / (1 - b1 * (1 - kappa)) / (kappa * (2 - kappa)))
    assert mean_field / got - 1 > 0.15


def test_signsgdm_signal_branch_matches_simulation():
    lr, wd, n, b1, mu = 1e-2, 0.5, 10_000, 0.95, 0.1
    T = int(4 / (lr * wd))
    sim = _sim_ms("signsgdm", n, T, lr=lr, weight_decay=wd, beta1=b1, grad_mean=mu, init_rms=1.0)
    pred = signsgdm_weight_rms(lr, wd, beta1=b1, snr=mu**2, steps=T, init_rms=1.0)
    assert abs(sim.weight_rms[-1] / pred - 1) < 0.02


def test_schedule_prediction_matches_simulation():
    T, n = 1200, 10_000
    lr = 2e-2 * np.minimum(1.0, np.arange(1, T + 1) / 200) * np.cos(0.45 * np.pi * np.arange(T) / T)
    wd = np.full(T, 0.5)
    sim = simulate_weight_rms("adamw", n=n, steps=T, lr=lr, weight_decay=wd, init_rms=0.2, rng=2, record_every=200)
    pred = adamw_weight_rms(lr, wd, init_rms=0.2)
    assert pred.shape == (T,)
    np.testing.assert_allclose(sim.weight_rms[1:], pred[sim.steps[1:] - 1], rtol=0.02)
    sim = simulate_weight_rms("signsgdm", n=n, steps=T, lr=lr, weight_decay=0.5, rng=2, record_every=200)
    pred = signsgdm_weight_rms(lr, 0.5)
    np.testing.assert_allclose(sim.weight_rms[1:], pred[sim.steps[1:] - 1], rtol=0.02)


def test_adam_update_rms_matches_simulation_including_beta2_correction():
    # beta2 = 0.99: the first-order correction is -0.5%; the statistical error here is ~0.1%
    sim = simulate_weight_rms("adamw", n=4000, steps=3000, lr=1e-3, weight_decay=0.1, beta2=0.99, rng=4)
    got = math.sqrt(np.mean(sim.update_rms[len(sim.steps) // 3 :] ** 2))
    pred = adam_update_rms(0.9, 0.99)
    mean_field = math.sqrt(0.1 / 1.9)
    assert abs(got / pred - 1) < 0.002
    assert abs(got / mean_field - 1) > 0.003


# -- closed-form limits --------------------------------------------------------------------------
def test_steady_state_limits():
    # zero-mean gradients: sqrt(eta / (2 lambda)) up to O(eta lambda)
    assert adamw_weight_rms(1e-4, 0.1) == pytest.approx(math.sqrt(1e-4 / 0.2), rel=1e-4)
    # beta1 = 0: sign(g) is i.i.d. with variance 1, the same random walk with decay
    assert signsgdm_weight_rms(1e-4, 0.1, beta1=0.0) == pytest.approx(math.sqrt(1e-4 / 0.2), rel=1e-4)
    # the signal dominates: every step moves by lr * a, the weights settle at a / lambda
    assert adamw_weight_rms(1e-3, 0.1, snr=1e8) == pytest.approx(1 / 0.1, rel=1e-6)
    assert signsgdm_weight_rms(1e-3, 0.1, snr=1e8) == pytest.approx(1 / 0.1, rel=1e-6)
    # Kosson et al.'s general steady state (SNR + eta lambda / 2) / (lambda^2 (SNR + 1))
    for snr in (1e-4, 1e-2, 1.0):
        ref = math.sqrt((snr + 1e-4 / 2) / (0.1**2 * (snr + 1)))
        assert adamw_weight_rms(1e-3, 0.1, snr=snr) == pytest.approx(ref, rel=1e-3)


def test_no_weight_decay_limit_is_random_walk():
    lr, t = 1e-3, 10_000
    d = np.arange(1, t)
    # a correlated random walk: Var(sum of t steps) = sum_{j,k < t} C_|j-k| = t C_0 + 2 sum_d (t - d) C_d
    c = 0.1 / 1.9
    walk = c * (t + 2 * np.sum((t - d) * 0.9**d))  # C_d = c 0.9^d for zero-mean gradients
    assert adamw_weight_rms(lr, 1e-12, steps=t) == pytest.approx(lr * math.sqrt(walk), rel=1e-6)
    assert adamw_weight_rms(lr, 1e-12, steps=t) == pytest.approx(lr * math.sqrt(t), rel=1e-3)  # eta sqrt(t)
    sgn = signsgdm_weight_rms(lr, 1e-12, beta1=0.9, steps=t)
    # the arcsine-law autocorrelations (2/pi) arcsin(0.9^|d|) of sign(m)
    walk = t + 2 * np.sum((t - d) * 2 / np.pi * np.arcsin(0.9**d))
    assert sgn == pytest.approx(lr * math.sqrt(walk), rel=1e-6)
    # transient formula decays the initial weights by (1 - lr wd)^t exactly
    assert adamw_weight_rms(1e-3, 0.1, steps=0, init_rms=0.5) == 0.5
    got = adamw_weight_rms(1e-3, 0.1, steps=1000, init_rms=1e3)
    assert got == pytest.approx(1e3 * (1 - 1e-4) ** 1000, rel=1e-6)


def test_sign_covariance_closed_forms():
    cov, rho = _sign_covariances(0.9, 0.0)
    np.testing.assert_allclose(cov[1:], 2 / np.pi * np.arcsin(rho[1:]), rtol=1e-13)
    h = 0.7
    cov, rho = _sign_covariances(0.9, h)
    # rho -> 1 by the quadrature equals the closed form 1 - erf(h / sqrt 2)^2
    near_one, _ = _sign_covariances(0.9, h)
    a = math.erf(h / math.sqrt(2))
    assert cov[0] == pytest.approx(1 - a * a, rel=1e-14)
    # lag d by Monte Carlo on a bivariate normal with correlation 0.9^d
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 400_000))
    for d in (1, 5):
        r = 0.9**d
        y = r * x[0] + math.sqrt(1 - r * r) * x[1]
        mc = np.mean(np.sign(x[0] + h) * np.sign(y + h)) - np.mean(np.sign(x[0] + h)) * np.mean(np.sign(y + h))
        assert abs(cov[d] - mc) < 5 / math.sqrt(x.shape[1])
    # against scipy's bivariate normal CDF: Cov = 4 (Phi2(h, h; rho) - Phi(h)^2)
    r = 0.9**3
    phi2 = stats.multivariate_normal([0, 0], [[1, r], [r, 1]]).cdf([h, h])
    assert cov[3] == pytest.approx(4 * (phi2 - stats.norm.cdf(h) ** 2), abs=1e-6)
    assert near_one.shape == cov.shape


def test_adam_update_rms_limits():
    assert adam_update_rms(0.9, 0.999) == pytest.approx(math.sqrt(0.1 / 1.9), rel=1e-3)
    assert adam_update_rms(0.0, 0.999) == pytest.approx(1.0, rel=1e-3)
    assert adam_update_rms(0.9, 0.999, snr=1e9) == pytest.approx(1.0, rel=1e-6)


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [adamw_weight_rms, signsgdm_weight_rms])
def test_prediction_input_errors(fn):
    with pytest.raises(ValueError, match="`lr` must be a positive"):
        fn(0.0, 0.1)
    with pytest.raises(ValueError, match="`lr` must be a positive"):
        fn(-1e-3, 0.1)
    with pytest.raises(ValueError, match="`weight_decay` must be a positive"):
        fn(1e-3, 0.0)
    with pytest.raises(ValueError, match="`weight_decay` must be positive at every step"):
        fn(1e-3, [0.1, -0.1])
    with pytest.raises(ValueError, match="`beta1` must be a float in \\[0, 1\\)"):
        fn(1e-3, 0.1, beta1=1.0)
    with pytest.raises(ValueError, match="`beta1`"):
        fn(1e-3, 0.1, beta1=-0.1)
    with pytest.raises(ValueError, match="`steps` must be an integer >= 0"):
        fn(1e-3, 0.1, steps=-1)
    with pytest.raises(TypeError, match="`steps`"):
        fn(1e-3, 0.1, steps=1.5)
    with pytest.raises(ValueError, match="`snr`"):
        fn(1e-3, 0.1, snr=-1.0)
    with pytest.raises(ValueError, match="`init_rms`"):
        fn(1e-3, 0.1, steps=3, init_rms=-1.0)
    with pytest.raises(ValueError, match="`lr \\* weight_decay` must be < 1"):
        fn(2.0, 0.5)
    with pytest.raises(ValueError, match="same length"):
        fn([1e-3, 1e-3], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="`steps` must be None or the schedule length 2"):
        fn([1e-3, 1e-3], 0.1, steps=3)
    with pytest.raises(TypeError, match="`lr`"):
        fn("0.1", 0.1)
    with pytest.raises(ValueError, match="`lr` must be finite"):
        fn([1e-3, np.nan], 0.1)


def test_adamw_beta2_and_update_rms_errors():
    with pytest.raises(ValueError, match="`beta2`"):
        adamw_weight_rms(1e-3, 0.1, beta2=1.0)
    with pytest.raises(ValueError, match="`beta2`"):
        adam_update_rms(0.9, 1.5)
    with pytest.raises(TypeError, match="`beta1`"):
        adam_update_rms(True)


def test_simulator_input_errors():
    ok = dict(n=4, steps=3, lr=1e-3, weight_decay=0.1)
    with pytest.raises(ValueError, match="`optimizer` must be one of"):
        simulate_weight_rms("lion", **ok)
    with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
        simulate_weight_rms("adamw", **{**ok, "n": 0})
    with pytest.raises(ValueError, match="`steps` must be an integer >= 0"):
        simulate_weight_rms("adamw", **{**ok, "steps": -1})
    with pytest.raises(ValueError, match="`weight_decay` must be a positive"):
        simulate_weight_rms("adamw", **{**ok, "weight_decay": -0.1})
    with pytest.raises(ValueError, match="`lr` schedule must have one entry per step"):
        simulate_weight_rms("adamw", **{**ok, "lr": [1e-3, 1e-3]})
    with pytest.raises(ValueError, match="`grad_std` must be non-negative"):
        simulate_weight_rms("adamw", **ok, grad_std=-1.0)
    with pytest.raises(ValueError, match="`grad_mean` must be a float or have shape \\(4,\\)"):
        simulate_weight_rms("adamw", **ok, grad_mean=np.zeros(3))
    with pytest.raises(ValueError, match="`beta1`"):
        simulate_weight_rms("adamw", **ok, beta1=1.0)
    with pytest.raises(TypeError, match="`rng`"):
        simulate_weight_rms("adamw", **ok, rng="seed")
    sim = simulate_weight_rms("sgdm", **{**ok, "steps": 0})
    assert sim.weight_rms.shape == (1,)


def test_simulator_takes_any_integer_seed_like_every_other_function():
    kw = dict(n=300, steps=100, lr=1e-2, weight_decay=0.5, init_rms=0.2, record_every=10)
    big = simulate_weight_rms("adamw", **kw, rng=2**70)
    assert big.seed == 2**70 and np.isfinite(big.weight_rms).all()
    np.testing.assert_array_equal(big.weight_rms, simulate_weight_rms("adamw", **kw, rng=2**70).weight_rms)
    for other in (2**70 + 1, 2**64, 2**63):
        assert not np.array_equal(big.weight_rms[1:], simulate_weight_rms("adamw", **kw, rng=other).weight_rms[1:])
