"""Optimizer dynamics: the numba simulator against a plain numpy loop, and predictions vs simulation.

Speed: AdamW and SignSGDM on n = 10000 coordinates for 100000 steps (quick: 5000), ours and the
anchor interleaved in this process. Accuracy: the issue's grid mu/sigma x lr x wd x beta1 for both
optimizers, predicted vs simulated weight RMS at 0.3, 1, 3 and 5 times 1 / (lr wd), on the issue's
n = 10000 coordinates (about 4e11 coordinate-steps in all: 15-20 minutes on 2 cores). ``--quick``
runs a corner of the grid and caps each run at ``QUICK_COORD_STEPS``; each row reports the n used
and the statistical error 1 / sqrt(2 n) of its RMS.
"""

import math
import time

import numpy as np

from linalg_lowrank.dynamics import adamw_weight_rms, signsgdm_weight_rms, simulate_weight_rms

from ._harness import interleaved

FAMILY = "dynamics"
QUICK_COORD_STEPS = 2.5e7
GRID = dict(mu=(0.0, 0.003, 0.01, 0.03), lr=(1e-3, 3e-4), wd=(0.1, 0.01), beta1=(0.9, 0.95))


def numpy_loop(optimizer, n, steps, lr, wd, beta1=0.9, beta2=0.999, eps=1e-8, seed=0):
    """The anchor: the same update as a plain numpy loop over steps, preallocated, in place."""
    rng = np.random.default_rng(seed)
    th = rng.standard_normal(n) * 0.02
    m = np.zeros(n)
    v = np.zeros(n)
    g = np.empty(n)
    tmp = np.empty(n)
    b1t = b2t = 1.0
    for _ in range(steps):
        rng.standard_normal(out=g)
        m *= beta1
        m += (1 - beta1) * g
        th *= 1 - lr * wd
        if optimizer == "signsgdm":
            np.sign(m, out=tmp)
        else:
            b1t *= beta1
            b2t *= beta2
            np.multiply(g, g, out=tmp)
            v *= beta2
            tmp *= 1 - beta2
            v += tmp
            np.divide(v, 1 - b2t, out=tmp)
            np.sqrt(tmp, out=tmp)
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp /= 1 - b1t
        tmp *= lr
        th -= tmp
    return math.sqrt(float(np.mean(th * th)))


def run(report, quick):
    speed(report, quick)
    accuracy(report, quick)


def speed(report, quick):
    n = 10_000
    steps = 5_000 if quick else 100_000
    repeat = 2 if quick else 3
    for opt in ("adamw", "signsgdm"):
        case = f"{opt} n={n} steps={steps}"
        res = {}

        def ours(opt=opt, res=res):
            res["ours"] = simulate_weight_rms(opt, n=n, steps=steps, lr=1e-3, weight_decay=0.1, init_rms=0.02, rng=0)

        def anchor(opt=opt, res=res):
            res["numpy"] = numpy_loop(opt, n, steps, 1e-3, 0.1)

        simulate_weight_rms(opt, n=8, steps=8, lr=1e-3, weight_decay=0.1)  # compile outside the timing
        times = interleaved({"ours": ours, "numpy": anchor}, repeat=repeat, warmup=0)
        pred = (adamw_weight_rms if opt == "adamw" else signsgdm_weight_rms)(1e-3, 0.1, steps=steps, init_rms=0.02)
        t_ours = report.row(FAMILY, case, "simulate_weight_rms", times["ours"], final_rms=res["ours"].weight_rms[-1])
        t_np = report.row(FAMILY, case, "numpy loop", times["numpy"], final_rms=res["numpy"], predicted=pred)
        report.target(FAMILY, f"{opt} simulator speed vs numpy loop (n={n}, {steps} steps)", t_np / t_ours, 5.0)


def accuracy(report, quick):
    worst = {"steady": 0.0, "transient": 0.0}
    mus = (0.0, 0.03) if quick else GRID["mu"]
    lrs = (1e-3,) if quick else GRID["lr"]
    wds = (0.1,) if quick else GRID["wd"]
    print(f"  {'opt':<9}{'mu':>6}{'lr':>8}{'wd':>6}{'b1':>6}{'n':>7}  err% at t*lr*wd = 0.3, 1, 3, 5   (1/sqrt(2n))")
    for opt, predict in (("adamw", adamw_weight_rms), ("signsgdm", signsgdm_weight_rms)):
        for mu in mus:
            for lr in lrs:
                for wd in wds:
                    for b1 in GRID["beta1"]:
                        horizon = 1.0 / (lr * wd)
                        marks = [round(f * horizon) for f in (0.3, 1.0, 3.0, 5.0)]
                        steps = marks[-1]
                        nn = int(min(10_000, QUICK_COORD_STEPS / steps)) if quick else 10_000
                        t0 = time.perf_counter()
                        sim = simulate_weight_rms(
                            opt, n=nn, steps=steps, lr=lr, weight_decay=wd, beta1=b1, grad_mean=mu,
                            init_rms=0.1, rng=1, record_every=math.gcd(*marks),
                        )  # fmt: skip
                        dt = time.perf_counter() - t0
                        errs = []
                        for t in marks:
                            got = sim.weight_rms[np.searchsorted(sim.steps, t)]
                            pred = predict(lr, wd, beta1=b1, snr=mu * mu, steps=t, init_rms=0.1)
                            errs.append(got / pred - 1)
                        worst["transient"] = max(worst["transient"], max(abs(e) for e in errs[:3]))
                        worst["steady"] = max(worst["steady"], abs(errs[3]))
                        report.row(
                            FAMILY, f"acc {opt} mu={mu} lr={lr} wd={wd} b1={b1}", "simulate", dt, n=nn,
                            err_03=errs[0], err_1=errs[1], err_3=errs[2], err_5=errs[3], stat_err=1 / math.sqrt(2 * nn),
                        )  # fmt: skip
    report.target(FAMILY, "worst steady-state error (t = 5/(lr wd))", 100 * worst["steady"], 3.0,
                  higher_is_better=False, unit="%")  # fmt: skip
    report.target(FAMILY, "worst transient error (t = 0.3, 1, 3 /(lr wd))", 100 * worst["transient"], 5.0,
                  higher_is_better=False, unit="%")  # fmt: skip
