"""
Spectral weight decay against Frobenius weight decay
====================================================

Weight decay in AdamW shrinks every weight, so every singular value of a weight matrix, by the
same factor :math:`1 - \\eta\\lambda` per step. Spectral weight decay
(`~linalg_lowrank.spectral_weight_decay`) removes :math:`\\eta\\lambda\\sigma_1 u_1 v_1^T`
instead: only the largest singular value shrinks, the quantity that bounds a layer's Lipschitz
constant (Yoshida and Miyato, 2017). The claim we check on a two-layer MLP trained on
scikit-learn's digits: at the same decay rate, spectral decay leaves the rest of the spectrum
alone and so hurts the training loss less than Frobenius decay, while it still holds
:math:`\\sigma_1` below the undecayed run. We train with `linalg_lowrank.optim.adamw_step`
through `linalg_lowrank.lab.train` three times: no decay, Frobenius decay and spectral decay.
"""

# %%
# Training runs
# -------------
# The MLP has 64 inputs, 64 tanh hidden units and 10 outputs (weights with a bias column, shapes
# 64 x 65 and 10 x 65), trained by AdamW (learning rate 3e-3, mini-batches of 64 of the 1000
# training images) for 600 steps from the same initial weights and batches. After every step we
# record :math:`\sigma_1` of each layer by a dense SVD (``np.linalg.norm(W, 2)``).
import matplotlib.pyplot as plt
import numpy as np

from linalg_lowrank import lab

data = lab.load_digits(n_train=1000, seed=0)
model = lab.MLP(data.n_features, 64, data.n_classes)
params0 = model.init_params(rng=0)
n_steps, lr, weight_decay = 600, 3e-3, 1.0

runs = {
    "no weight decay": {"lr": lr},
    "Frobenius decay (AdamW)": {"lr": lr, "weight_decay": weight_decay, "decay": "frobenius"},
    "spectral decay": {"lr": lr, "weight_decay": weight_decay, "decay": "spectral"},
}
results, sigma1 = {}, {}
for name, hyper in runs.items():
    record = []
    results[name] = lab.train(
        model,
        params0,
        data.X_train,
        data.y_train,
        optimizer="adamw",
        hyper=hyper,
        n_steps=n_steps,
        batch_size=64,
        rng=0,
        callback=lambda step, params, record=record: record.append([np.linalg.norm(W, 2) for W in params]),
    )
    sigma1[name] = np.array(record)
    res = results[name]
    print(
        f"{name:24s} sigma1 (hidden, output) {sigma1[name][-1].round(2)}, train loss {res.losses[-1]:.4f}, "
        f"test accuracy {model.accuracy(res.params, data.X_test, data.y_test):.3f}"
    )

# %%
# :math:`\sigma_1` and the loss over training
# -------------------------------------------
steps = np.arange(1, n_steps + 1)
colors = {"no weight decay": "0.5", "Frobenius decay (AdamW)": "C0", "spectral decay": "C3"}
fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.8), layout="constrained")
for name in runs:
    for layer, ax in enumerate(axes[:2]):
        ax.plot(steps, sigma1[name][:, layer], color=colors[name], label=name)
    axes[2].semilogy(np.arange(n_steps + 1), results[name].losses, color=colors[name], label=name)
for layer, ax in enumerate(axes[:2]):
    ax.set_title(["hidden layer (64 x 65)", "output layer (10 x 65)"][layer])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(r"largest singular value $\sigma_1(W)$")
axes[2].set_title("training loss (all 1000 images)")
axes[2].set_xlabel("optimizer step")
axes[2].set_ylabel("mean cross-entropy (nats)")
axes[0].legend(fontsize=8)

# %%
# **Figure 1.** :math:`\sigma_1` of the hidden (left) and output (middle) weight matrices after
# each of 600 AdamW steps, and the training loss on the 1000 training images (right), for no
# decay, Frobenius decay and spectral decay at the same :math:`\lambda = 1`,
# :math:`\eta = 3\times 10^{-3}`. Measured (printed above): both decays hold :math:`\sigma_1`
# below the undecayed run's; at the same :math:`\lambda`, Frobenius decay ends with the smaller
# :math:`\sigma_1` (it shrinks every direction, :math:`\sigma_1` included, at every step, while
# spectral decay acts on one direction per step, and the top of the spectrum becomes a cluster
# of nearly equal values that it takes turns on, Figure 2); spectral decay ends with a training
# loss about 4 times lower than Frobenius decay's, and all three reach about the same test
# accuracy (0.97) on this small problem.
#
# What each decay does to the whole spectrum
# ------------------------------------------
fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
ax.semilogy(np.linalg.svd(params0[0], compute_uv=False), "k:", label="initial weights")
for name in runs:
    sv = np.linalg.svd(results[name].params[0], compute_uv=False)
    ax.semilogy(sv, color=colors[name], label=name)
    print(f"{name:24s} hidden layer: top four {sv[:4].round(2)}, median {np.median(sv):.3f}")
ax.set_xlabel("index i of the singular value (largest first)")
ax.set_ylabel(r"singular value $\sigma_i$ of the hidden layer")
ax.set_title("Hidden-layer spectrum after 600 steps")
ax.legend(fontsize=8)

# %%
# **Figure 2.** All 64 singular values of the hidden layer's weights at initialization and after
# the three runs. Measured (printed above): Frobenius decay lowers the whole spectrum, the
# median singular value about fourfold; spectral decay lowers only the top few, the largest
# two ending within 2 % of each other, and leaves the rest where training without decay puts it.
