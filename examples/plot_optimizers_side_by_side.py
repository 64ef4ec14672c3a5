"""
First- and second-order optimizers side by side on a small MLP
==============================================================

Second-order and preconditioned methods (Shampoo, SOAP, K-FAC, AdaHessian, Sophia, L-BFGS)
promise fewer steps than SGD or AdamW by using curvature, at a higher price per step. Which
wins depends on what is counted: steps, or time. We train the lab's fixed problem (the one
`linalg_lowrank.lab`'s tests and the "Reference optimizers" theory page use: a two-layer MLP
on 500 of scikit-learn's digits) with every reference optimizer of `linalg_lowrank.optim`,
from the same initial weights and the same mini-batches, and plot the training loss against
the step and against the time spent in the steps.
"""

# %%
# The runs
# --------
# ``MLP(64, 16, 10)`` (weights with a bias column), initial weights seed 0, mini-batches of 100
# drawn with seed 0, 60 steps each. The hyper-parameters are those of ``tests/test_optim.py``,
# which checks that every optimizer brings this loss below 0.5 within 30 steps; they are not
# tuned for this comparison. L-BFGS uses the full batch (its line search needs the same
# function at every step). ``lab.train`` times the steps only (gradient, curvature products,
# update), single-threaded, not the loss evaluations for the plot. Each optimizer first runs 3
# steps untimed (so numba compilation and first-call costs are not counted), then the 60 steps
# twice; the runs are identical (same seeds), and each step's time is the smaller of its two
# measurements, which removes most of the noise of a shared machine.
import matplotlib.pyplot as plt
import numpy as np

from linalg_lowrank import lab

data = lab.load_digits(n_train=500, seed=0)
model = lab.MLP(data.n_features, 16, data.n_classes)
params0 = model.init_params(rng=0)
n_steps = 60

runs = {
    "SGD + momentum": ("sgd", {"lr": 0.5, "momentum": 0.9}),
    "AdamW": ("adamw", {"lr": 0.02, "weight_decay": 0.01}),
    "Muon": ("muon", {"lr": 0.05}),
    "Shampoo": ("shampoo", {"lr": 0.02, "update_freq": 5}),
    "SOAP": ("soap", {"lr": 0.03}),
    "K-FAC": ("kfac", {"lr": 0.3, "damping": 0.01, "inverse_freq": 5}),
    "AdaHessian": ("adahessian", {"lr": 0.15}),
    "Sophia-H (Hutchinson)": ("sophia", {"lr": 0.02, "k": 5}),
    "Sophia-G (Gauss-Newton-Bartlett)": ("sophia", {"lr": 0.02, "k": 5, "estimator": "gnb"}),
    "L-BFGS (full batch)": ("lbfgs", {}),
}


def run(optimizer, hyper, steps):
    return lab.train(
        model,
        params0,
        data.X_train,
        data.y_train,
        optimizer=optimizer,
        hyper=hyper,
        n_steps=steps,
        batch_size=100,
        rng=0,
    )


results, times = {}, {}
for label, (optimizer, hyper) in runs.items():
    run(optimizer, hyper, 3)  # warm-up, not timed
    first, second = run(optimizer, hyper, n_steps), run(optimizer, hyper, n_steps)
    results[label] = res = first
    times[label] = np.cumsum(np.minimum(np.diff(first.times), np.diff(second.times)))
    print(
        f"{label:33s} loss after 20 steps {res.losses[20]:.2e}, after {n_steps} {res.losses[-1]:.2e}; "
        f"{1e3 * times[label][-1] / n_steps:6.2f} ms a step; "
        f"test accuracy {model.accuracy(res.params, data.X_test, data.y_test):.3f}"
    )

# %%
# Loss against steps and against time
# -----------------------------------
styles = ["-", "--", "-.", ":"]
fig, (ax_steps, ax_time) = plt.subplots(1, 2, figsize=(11.0, 4.4), layout="constrained", sharey=True)
for i, (label, res) in enumerate(results.items()):
    style = dict(color=f"C{i}", ls=styles[i % 4], lw=1.6, label=label)
    ax_steps.plot(np.arange(n_steps + 1), res.losses, **style)
    # time 0 cannot go on a log axis: the curve starts at the end of the first step
    ax_time.plot(times[label], res.losses[1:], **style)
ax_steps.set_yscale("log")
ax_steps.set_ylim(1e-4, 4.0)
ax_steps.set_xlabel("optimizer step")
ax_steps.set_ylabel("training loss, mean cross-entropy on 500 images (nats)")
ax_steps.set_title("Loss against steps")
ax_time.set_xscale("log")
ax_time.set_xlabel("time spent in the optimizer steps (s, single thread, cumulative)")
ax_time.set_title("Loss against wall time")
ax_steps.legend(fontsize=7, loc="lower left")

# %%
# **Figure.** Training loss of the 16-unit MLP on 500 digits after each of 60 steps (left) and
# against the cumulative time of the steps (right), log scales; the loss axis is cut at 1e-4
# (L-BFGS goes on to about 1e-17 by step 60). Measured (printed above; one trajectory per
# optimizer, step times the smaller of two runs on a shared machine, so they vary between
# builds by tens of percent, not in order of magnitude): per step, L-BFGS on the full batch
# falls fastest; among the mini-batch methods K-FAC and SGD with momentum lead with these
# settings, AdaHessian, SOAP, Sophia and Muon follow, AdamW and Shampoo trail. Per step,
# K-FAC, AdaHessian, Shampoo and SOAP cost about 10 to 30 times an SGD or AdamW step (the
# jumps in K-FAC's, Shampoo's and SOAP's curves are the steps that refresh their inverses or
# eigenbases), Muon and Sophia 2 to 4 times. In time, SGD with momentum reaches every loss
# down to about 1e-2 first and L-BFGS everything below; the test accuracies (0.89 to 0.94)
# hardly differ. On a network this small the mini-batch curvature methods' extra work per step
# does not pay in time; the figure shows how each method spends its work, not which is best on
# large models.
