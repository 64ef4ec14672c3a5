"""Reference optimizer steps (linalg_lowrank.optim) and the training lab (linalg_lowrank.lab).

Every step is compared with a plain loop written here from its paper's algorithm box, on a fixed
sequence of gradients; where the library computes a piece (msign, inverse roots, eigenbases,
the K-FAC solve, Hutchinson) the loop uses numpy's SVD / eigh / dense solves instead.

Tolerances come from rounding: a quantity computed two ways in float64 agrees to a few
``eps * (sizes) * (condition)``; each test says which bound it uses.
"""

import numpy as np
import pytest

from linalg_lowrank import lab, optim

EPS = np.finfo(np.float64).eps


# ------------------------------------------------------------------------------------- the lab


@pytest.fixture(scope="module")
def digits():
    return lab.load_digits(n_train=500, seed=0)


def _small_problem(digits, model_cls="mlp", n=40, l2=0.0):
    X, y = digits.X_train[:n], digits.y_train[:n]
    if model_cls == "mlp":
        model = lab.MLP(digits.n_features, 8, digits.n_classes, l2=l2)
    else:
        model = lab.LogisticRegression(digits.n_features, digits.n_classes, l2=l2)
    params = model.init_params(rng=1)
    # nonzero biases so that the bias columns are exercised
    params = [W + 0.1 * np.random.default_rng(2).standard_normal(W.shape) for W in params]
    return model, params, X, y


def _fd_bound(scale):
    # central differences with h = eps^(1/3): truncation h^2 |f'''| / 6 plus rounding eps |f| / h,
    # both about eps^(2/3) times the scale of f and its derivatives (O(1) here: tanh, softmax and
    # unit-scale weights); the factor 100 covers third derivatives up to ~600 times that scale.
    return 100 * EPS ** (2 / 3) * scale


@pytest.mark.parametrize("kind", ["mlp", "logistic"])
def test_gradient_matches_finite_differences(digits, kind):
    model, params, X, y = _small_problem(digits, kind, l2=0.01)
    loss, grads = model.loss_and_grad(params, X, y)
    assert loss == pytest.approx(model.loss(params, X, y), rel=10 * EPS)
    x0, g = model.flatten(params), model.flatten(grads)
    h = EPS ** (1 / 3)
    gen = np.random.default_rng(3)
    for _ in range(4):
        v = gen.standard_normal(x0.size)
        v /= np.linalg.norm(v)
        fd = (model.loss(model.unflatten(x0 + h * v), X, y) - model.loss(model.unflatten(x0 - h * v), X, y)) / (2 * h)
        assert abs(fd - g @ v) <= _fd_bound(max(1.0, loss, np.linalg.norm(g)))


@pytest.mark.parametrize("kind", ["mlp", "logistic"])
def test_hvp_matches_finite_differences_of_gradients(digits, kind):
    model, params, X, y = _small_problem(digits, kind, l2=0.01)
    x0 = model.flatten(params)
    h = EPS ** (1 / 3)
    gen = np.random.default_rng(4)

    def grad(x):
        return model.flatten(model.loss_and_grad(model.unflatten(x), X, y)[1])

    for _ in range(3):
        v = gen.standard_normal(x0.size)
        v /= np.linalg.norm(v)
        hv = model.flatten(model.hvp(params, X, y, model.unflatten(v)))
        fd = (grad(x0 + h * v) - grad(x0 - h * v)) / (2 * h)
        assert np.linalg.norm(fd - hv) <= _fd_bound(max(1.0, np.linalg.norm(hv)))


def test_hvp_is_symmetric_to_rounding(digits):
    # u^T H v = v^T H u holds exactly for the R-operator; the rounding of two passes over
    # N x (sizes) products is a few n eps ||u|| ||H|| ||v||.
    model, params, X, y = _small_problem(digits, "mlp")
    gen = np.random.default_rng(5)
    u, v = gen.standard_normal(model.n_params), gen.standard_normal(model.n_params)
    Hu = model.flatten(model.hvp(params, X, y, model.unflatten(u)))
    Hv = model.flatten(model.hvp(params, X, y, model.unflatten(v)))
    bound = 10 * model.n_params * EPS * np.linalg.norm(u) * np.linalg.norm(v) * max(np.linalg.norm(Hu), 1.0)
    assert abs(u @ Hv - v @ Hu) <= bound


def test_logistic_hvp_equals_the_dense_hessian(digits):
    # softmax regression: H = (1/N) sum_i (diag(p_i) - p_i p_i^T) kron (xbar_i xbar_i^T) + l2 I,
    # in the row-major vec of W (c, d+1): index (k, j) -> k (d+1) + j.
    model, params, X, y = _small_problem(digits, "logistic", n=15, l2=0.1)
    p = model.predict_proba(params, X)
    Xb = np.hstack([X, np.ones((X.shape[0], 1))])
    H = (
        sum(np.kron(np.diag(pi) - np.outer(pi, pi), np.outer(xi, xi)) for pi, xi in zip(p, Xb, strict=True))
        / X.shape[0]
    )
    H += 0.1 * np.eye(H.shape[0])
    V = np.random.default_rng(6).standard_normal(model.n_params)
    HV = model.flatten(model.hvp(params, X, y, model.unflatten(V)))
    assert np.linalg.norm(HV - H @ V) <= 10 * H.shape[0] * EPS * np.linalg.norm(H, 2) * np.linalg.norm(V)


@pytest.mark.parametrize("kind", ["mlp", "logistic"])
def test_per_sample_gradients_average_to_the_batch_gradient(digits, kind):
    model, params, X, y = _small_problem(digits, kind, l2=0.01)
    _, grads = model.loss_and_grad(params, X, y)
    per = model.per_sample_grads(params, X, y)
    for P, G, W in zip(per, grads, params, strict=True):
        assert P.shape == (X.shape[0],) + W.shape
        # the mean of N terms: rounding N eps times the largest term
        assert np.max(np.abs(P.mean(axis=0) - G)) <= 10 * X.shape[0] * EPS * np.max(np.abs(P))
    # and each one is the gradient of that sample's loss
    i = 3
    _, gi = model.loss_and_grad(params, X[i : i + 1], y[i : i + 1])
    for P, G in zip(per, gi, strict=True):
        assert np.max(np.abs(P[i] - G)) <= 100 * EPS * max(1.0, np.max(np.abs(G)))


def test_layer_statistics_reassemble_the_gradient(digits):
    model, params, X, y = _small_problem(digits, "mlp")
    _, grads = model.loss_and_grad(params, X, y)
    for (ab, g), G in zip(model.layer_statistics(params, X, y), grads, strict=True):
        assert np.max(np.abs(g.T @ ab / X.shape[0] - G)) <= 10 * X.shape[0] * EPS * np.max(np.abs(g)) * np.max(
            np.abs(ab)
        )


def test_sampled_labels_follow_the_model(digits):
    model, params, X, _ = _small_problem(digits, "logistic", n=200)
    p = model.predict_proba(params, X)
    draws = np.stack([model.sample_labels(params, X, rng=s) for s in range(200)])
    freq = np.stack([(draws == c).mean(axis=0) for c in range(digits.n_classes)], axis=1)
    # 200 draws per sample: each frequency has std <= 0.5 / sqrt(200) = 0.035; 6 sigma
    assert np.max(np.abs(freq - p)) <= 6 * 0.5 / np.sqrt(200)


def test_lab_is_deterministic_per_seed():
    a, b = lab.load_digits(n_train=300, seed=7), lab.load_digits(n_train=300, seed=7)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, lab.load_digits(n_train=300, seed=8).y_train)
    model = lab.MLP(a.n_features, 8, a.n_classes)
    r1 = lab.train(
        model,
        model.init_params(rng=0),
        a.X_train,
        a.y_train,
        optimizer="sophia",
        hyper={"lr": 0.01, "k": 2},
        n_steps=4,
        batch_size=50,
        rng=3,
    )
    r2 = lab.train(
        model,
        model.init_params(rng=0),
        a.X_train,
        a.y_train,
        optimizer="sophia",
        hyper={"lr": 0.01, "k": 2},
        n_steps=4,
        batch_size=50,
        rng=3,
    )
    np.testing.assert_array_equal(r1.losses, r2.losses)


def test_lab_bad_input_is_named(digits):
    model = lab.MLP(digits.n_features, 8, digits.n_classes)
    params = model.init_params(rng=0)
    with pytest.raises(ValueError, match="`optimizer`"):
        lab.train(model, params, digits.X_train, digits.y_train, optimizer="adam", n_steps=1)
    with pytest.raises(ValueError, match="`hyper`"):
        lab.train(model, params, digits.X_train, digits.y_train, optimizer="adahessian", hyper={"hvp": None})
    with pytest.raises(ValueError, match="`y`"):
        model.loss(params, digits.X_train, digits.y_train + 10)
    with pytest.raises(ValueError, match="`n_train`"):
        lab.load_digits(n_train=5000)
    with pytest.raises(ValueError, match=r"`params\[0\]`"):
        model.loss([params[0][:, :-1], params[1]], digits.X_train, digits.y_train)


def _documented_callables():
    import inspect

    out = []
    for mod in (optim, lab):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                out.append(pytest.param(obj, f"{mod.__name__}.{name}", id=f"{mod.__name__}.{name}"))
    for name, meth in vars(lab.DenseNet).items():
        if inspect.isfunction(meth) and not name.startswith("_"):
            out.append(pytest.param(meth, f"DenseNet.{name}", id=f"DenseNet.{name}"))
    return out


@pytest.mark.parametrize(("func", "qualname"), _documented_callables())
def test_docstrings_match_signatures(func, qualname):
    from tests.test_docstrings import parameter_mismatch

    problem = parameter_mismatch(func, qualname)
    # methods document their parameters without `self`
    if problem and qualname.startswith("DenseNet."):
        problem = None if "undocumented: ['self']" in problem and "documented but" not in problem else problem
    assert problem is None, problem
