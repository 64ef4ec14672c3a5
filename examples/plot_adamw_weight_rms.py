"""
AdamW's weight RMS: prediction, simulation and a real network
=============================================================

With decoupled weight decay, the weights trained by AdamW forget their initialization at rate
:math:`\\eta\\lambda` per step and settle at a root-mean-square size set by the learning rate,
the weight decay and the gradient's signal-to-noise ratio, not by the gradient's scale: for
pure noise, :math:`\\|\\theta\\|_{\\mathrm{RMS}} \\approx \\sqrt{\\eta/(2\\lambda)}`
(Kosson et al., 2024), whatever the momentum. We compare three things over
training: the prediction `~linalg_lowrank.adamw_weight_rms`, the simulation
`~linalg_lowrank.simulate_weight_rms` (AdamW on independent coordinates with Gaussian
gradients), and the weights of a two-layer MLP trained on scikit-learn's digits with
`linalg_lowrank.optim.adamw_step` through `linalg_lowrank.lab.train`.
"""

# %%
# The network and its gradients' signal-to-noise ratio
# ----------------------------------------------------
# The MLP (64 inputs, 64 tanh hidden units, 10 outputs; weights with a bias column) is trained
# by AdamW with :math:`\eta = 3\times 10^{-3}`, :math:`\lambda = 1`, :math:`\beta = (0.9, 0.999)`
# on mini-batches of 32 for 1000 steps, about ten time constants :math:`1/(\eta\lambda)`. After
# every step we record each layer's weight RMS; every 50 steps we also measure the
# signal-to-noise ratio of a mini-batch gradient from the per-sample gradients on all 1000
# training images: :math:`\|\bar g\|^2 / (\sum_i \operatorname{Var}(g_i) / 32)`.
import matplotlib.pyplot as plt
import numpy as np

import linalg_lowrank as ll
from linalg_lowrank import lab

data = lab.load_digits(n_train=1000, seed=0)
model = lab.MLP(data.n_features, 64, data.n_classes)
params0 = model.init_params(rng=0)
n_steps, lr, weight_decay, batch_size = 1000, 3e-3, 1.0, 32

weight_rms, snr_steps, snr = [], [], []


def record(step, params):
    weight_rms.append([np.sqrt(np.mean(W**2)) for W in params])
    if (step + 1) % 50 == 0:
        grads = model.per_sample_grads(params, data.X_train, data.y_train)
        snr_steps.append(step + 1)
        snr.append([np.sum(g.mean(axis=0) ** 2) / (np.sum(g.var(axis=0)) / batch_size) for g in grads])


result = lab.train(
    model,
    params0,
    data.X_train,
    data.y_train,
    optimizer="adamw",
    hyper={"lr": lr, "weight_decay": weight_decay},
    n_steps=n_steps,
    batch_size=batch_size,
    rng=0,
    callback=record,
)
weight_rms, snr = np.array(weight_rms), np.array(snr)
print(result)
# the SNR settles after the first few hundred steps; its median over the second half
snr_late = np.median(snr[len(snr) // 2 :], axis=0)
print(f"mini-batch gradient SNR, median over steps 550-1000: hidden {snr_late[0]:.3f}, output {snr_late[1]:.3f}")

# %%
# Prediction and simulation for each layer
# ----------------------------------------
# For each layer, from its initial RMS: the prediction and the simulation (as many coordinates
# as the layer has weights, seed 0) for pure noise (SNR 0) and for the SNR measured above.
steps = np.arange(1, n_steps + 1)
schedule = np.full(n_steps, lr)  # a schedule makes adamw_weight_rms return the whole trajectory
fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0), layout="constrained", sharey=True)
for layer, ax in enumerate(axes):
    W0 = params0[layer]
    init_rms = float(np.sqrt(np.mean(W0**2)))
    ax.plot(steps, weight_rms[:, layer], "k-", lw=2, label="MLP weights (AdamW)")
    for snr_value, color in [(0.0, "C0"), (float(snr_late[layer]), "C3")]:
        predicted = ll.adamw_weight_rms(schedule, weight_decay, snr=snr_value, init_rms=init_rms)
        sim = ll.simulate_weight_rms(
            "adamw",
            n=W0.size,
            steps=n_steps,
            lr=lr,
            weight_decay=weight_decay,
            grad_mean=np.sqrt(snr_value),
            grad_std=1.0,
            init_rms=init_rms,
            rng=0,
            record_every=25,
        )
        ax.plot(steps, predicted, "-", color=color, label=f"prediction, SNR {snr_value:.3f}")
        ax.plot(sim.steps, sim.weight_rms, "o", ms=2.5, color=color, label=f"simulation, SNR {snr_value:.3f}")
        print(
            f"layer {layer} SNR {snr_value:.3f}: after {n_steps} steps MLP {weight_rms[-1, layer]:.4f}, "
            f"prediction {predicted[-1]:.4f}, simulation {sim.weight_rms[-1]:.4f}"
        )
    ax.set_title(f"{['hidden', 'output'][layer]} layer, {W0.shape[0]} x {W0.shape[1]} weights")
    ax.set_xlabel("optimizer step")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
axes[0].set_ylabel(r"weight RMS $\|\theta_t\|_{\mathrm{RMS}}$")

fig2, ax2 = plt.subplots(figsize=(6.4, 3.2), layout="constrained")
for layer in range(2):
    ax2.semilogy(snr_steps, snr[:, layer], "o-", ms=3, label=["hidden layer", "output layer"][layer])
ax2.set_xlabel("optimizer step")
ax2.set_ylabel("mini-batch gradient SNR (dimensionless)")
ax2.set_title("Signal-to-noise ratio of the MLP's gradients (batch 32)")
ax2.legend(fontsize=8)

# %%
# **Figure 1.** Weight RMS of the MLP's hidden (left) and output (right) layers over 1000
# AdamW steps (black), with the prediction (lines) and the simulation (dots, every 25th step)
# for pure-noise gradients (blue) and for the layer's measured gradient SNR (red).
#
# **Figure 2.** The measured SNR of the mini-batch gradient of each layer every 50 steps.
#
# Measured (printed above): prediction and simulation agree with each other at both SNRs, as
# they should (the simulation is the model the prediction solves); the real weights follow
# neither. After the initial decay they settle above the pure-noise steady state, since the
# gradients carry signal, and below the prediction for the measured SNR. That prediction
# assumes the gradient's mean keeps one direction at every step; a network's mean gradient
# turns as the weights move. On this network the pure-noise formula is a lower bound on the
# weight RMS, not an estimate of it.
