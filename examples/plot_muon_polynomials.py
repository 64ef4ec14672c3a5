"""
Muon's Newton-Schulz quintic against Polar Express
==================================================

Muon replaces a gradient matrix G = U S V^T by an approximation of its polar factor U V^T,
computed by a few steps of an odd quintic matrix polynomial. Each step acts on every singular
value separately, so the whole iteration is one scalar map of the (normalized) singular values.
The claim we check: Muon's fixed coefficients (3.4445, -4.7750, 2.0315) push small singular
values up quickly but leave them oscillating in roughly [0.7, 1.2], while the per-step minimax
coefficients of Polar Express (Amsel et al., 2025) converge to 1. We draw both maps with
`~linalg_lowrank.ns_polynomial`, then apply `~linalg_lowrank.msign` to a gradient-like matrix
and look at the spectrum of the update it returns.
"""

# %%
# The scalar maps
# ---------------
# ``ns_polynomial(x, steps=t)`` composes t steps of the quintic on points x in (0, 1], the
# singular values after the input has been divided by (an upper bound on) its largest one.
import matplotlib.pyplot as plt
import numpy as np

import linalg_lowrank as ll

x = np.logspace(-4, 0, 400)
fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
for name, color in [("muon", "C0"), ("polar_express", "C1")]:
    for steps, style in [(5, "-"), (8, "--")]:
        y = ll.ns_polynomial(x, steps=steps, coefficients=name)
        ax.plot(x, y, style, color=color, label=f"{name}, {steps} steps")
ax.axhline(1.0, color="k", lw=0.8)
ax.set_xscale("log")
ax.set_xlabel(r"normalized input singular value $\sigma / s$ (dimensionless)")
ax.set_ylabel(r"output singular value $p(\sigma / s)$ (dimensionless)")
ax.set_title("Singular-value map of the Newton-Schulz iteration")
ax.legend(loc="lower right")

band = x >= 1e-2
for name in ("muon", "polar_express"):
    for steps in (5, 8):
        y = ll.ns_polynomial(x[band], steps=steps, coefficients=name)
        print(f"{name:14s} {steps} steps: inputs in [1e-2, 1] map into [{y.min():.4f}, {y.max():.4f}]")

# %%
# **Figure 1.** The composed map :math:`p_t \circ \dots \circ p_1` applied to each normalized
# singular value, after 5 and 8 steps, on 400 log-spaced points in [1e-4, 1]. Measured (printed
# above): for inputs in [1e-2, 1], Muon's outputs stay in about [0.68, 1.13] whether 5 or 8
# steps are taken (1 is not a fixed point of the quintic, :math:`p(1) \approx 0.70`, so the
# values keep cycling through the band); Polar Express's are within about 0.13 of 1 after
# 5 steps and equal to 1 to rounding after 8.
#
# The update of a gradient-like matrix
# ------------------------------------
# Gradients of weight matrices are dominated by a few directions: we build a 256 x 128 matrix
# with singular values decaying like :math:`i^{-1.5}`, plus a small noise floor, and compare the
# singular values of G (scaled to a largest of 1) with those of ``msign(G)`` for both
# coefficient schedules and with the exact polar factor, all of whose singular values are 1.
rng = np.random.default_rng(0)
m, n = 256, 128
U, _ = np.linalg.qr(rng.standard_normal((m, n)))
V, _ = np.linalg.qr(rng.standard_normal((n, n)))
s_true = np.arange(1, n + 1) ** -1.5 + 1e-3
G = (U * s_true) @ V.T

i = np.arange(1, n + 1)
fig, (ax_g, ax_q) = plt.subplots(1, 2, figsize=(9.6, 4.0), layout="constrained")
ax_g.semilogy(i, np.linalg.svd(G, compute_uv=False) / s_true[0], "k-")
ax_g.set_xlabel("index i of the singular value (largest first)")
ax_g.set_ylabel(r"$\sigma_i(G) / \sigma_1(G)$ (dimensionless)")
ax_g.set_title("Gradient-like input G, 256 x 128")
for name, color in [("muon", "C0"), ("polar_express", "C1")]:
    Q = ll.msign(G, steps=5, coefficients=name)
    sv = np.linalg.svd(Q, compute_uv=False)
    ax_q.plot(i, sv, color=color, label=f"msign(G), {name}, 5 steps")
    print(f"{name:14s} 5 steps: singular values of the update in [{sv.min():.3f}, {sv.max():.3f}]")
ax_q.plot(i, np.linalg.svd(ll.polar(G), compute_uv=False), "k--", lw=1, label=r"exact polar factor $UV^T$")
ax_q.set_ylim(0.0, 1.4)
ax_q.set_xlabel("index i of the singular value (largest first)")
ax_q.set_ylabel(r"$\sigma_i$ of the update (dimensionless)")
ax_q.set_title("Orthogonalized update")
ax_q.legend(loc="lower left")

# %%
# **Figure 2.** Left: singular values of a 256 x 128 gradient-like matrix G (decay
# :math:`i^{-1.5}` plus a floor of 1e-3, scaled by its largest). Right: singular values of the
# update ``msign(G)`` after 5 steps of each schedule and of the exact polar factor, from a
# dense SVD. Measured (printed above): G's singular values span almost three decades, the
# updates' lie between 0.68 and 1.21; Muon's spread over about [0.68, 1.20], Polar Express's
# over a narrower band, about [0.87, 1.12]: after 5 steps neither is the exact polar factor,
# whose singular values are all 1.
