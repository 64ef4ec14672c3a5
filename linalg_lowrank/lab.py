"""A small training lab: a two-layer MLP and logistic regression in numpy, on scikit-learn's digits.

Everything an optimizer study needs from a model, written out by hand so that each piece can
be checked: the loss, its gradient (backpropagation), Hessian-vector products by the R-operator
(Pearlmutter 1994), per-sample gradients, the layer inputs and output gradients K-FAC needs,
labels sampled from the model (for the Fisher and Sophia's Gauss–Newton–Bartlett estimator), and
`train`, which runs any optimizer of `linalg_lowrank.optim` on it.

Conventions
-----------
- Parameters are a list of weight matrices, one per dense layer, ``W[l]`` of shape
  ``(n_out, n_in + 1)`` with the bias in the last column (so every parameter is a matrix, which
  Muon, Shampoo, SOAP and K-FAC act on as a whole).
- The loss is the mean softmax cross-entropy over the batch plus ``l2 / 2 * sum ||W||_F^2``.
- Hidden layers use tanh (smooth, so the Hessian is defined everywhere).
- Nothing is random except through ``rng`` (None, int seed or Generator); runs are deterministic
  per seed, and the BLAS thread count changes only the rounding.

Examples
--------
>>> from linalg_lowrank import lab
>>> data = lab.load_digits(n_train=500, seed=0)
>>> model = lab.MLP(data.n_features, 32, data.n_classes)
>>> params = model.init_params(rng=0)
>>> result = lab.train(model, params, data.X_train, data.y_train, optimizer="adamw",
...                    hyper={"lr": 1e-2}, n_steps=50, rng=0)
>>> bool(result.losses[-1] < 0.5 * result.losses[0])
True
"""

import time
from dataclasses import dataclass

import numpy as np

from . import _validate, optim
from ._threads import single_threaded
from .results import Result

__all__ = ["Dataset", "DenseNet", "MLP", "LogisticRegression", "TrainResult", "load_digits", "train", "OPTIMIZERS"]


@dataclass(frozen=True, repr=False)
class Dataset(Result):
    """Train/test split of a classification data set.

    Attributes
    ----------
    X_train, X_test : (N, D) ndarray
        Features (float64), centred and scaled by the training set's statistics.
    y_train, y_test : (N,) ndarray
        Integer labels in ``range(n_classes)``.
    n_features, n_classes : int
        D and the number of classes.
    seed : int
        Seed of the shuffle.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_features: int
    n_classes: int
    seed: int


def load_digits(*, n_train=1000, seed=0, dtype=np.float64):
    """scikit-learn's 8x8 digits (1797 images, 10 classes), shuffled and standardized.

    Parameters
    ----------
    n_train : int, optional
        Training samples (the rest, at least one, is the test set).
    seed : int, optional
        Seed of the shuffle (the data itself ships with scikit-learn; no download).
    dtype : {numpy.float64, numpy.float32}, optional
        dtype of the features.

    Returns
    -------
    data : Dataset

    Raises
    ------
    ValueError
        If ``n_train`` is not in [1, 1796].
    ImportError
        If scikit-learn is not installed (it is in the ``[test]`` and ``[docs]`` extras).

    Examples
    --------
    >>> from linalg_lowrank.lab import load_digits
    >>> data = load_digits(n_train=1000, seed=0)
    >>> data.X_train.shape, data.X_test.shape, data.n_classes
    ((1000, 64), (797, 64), 10)
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    X, y = _sk_load_digits(return_X_y=True)
    n_train = _validate.positive_int("n_train", n_train)
    if n_train >= X.shape[0]:
        raise ValueError(f"`n_train` must be at most {X.shape[0] - 1} (one test sample left), got {n_train}")
    dtype = _validate.float_dtype("dtype", dtype)
    gen, seed = _validate.rng(seed)
    perm = gen.permutation(X.shape[0])
    X, y = X[perm].astype(np.float64), y[perm].astype(np.intp)
    mean = X[:n_train].mean(axis=0)
    std = X[:n_train].std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant border pixels stay 0 after centring
    X = (X - mean) / std
    return Dataset(
        X_train=X[:n_train].astype(dtype),
        y_train=y[:n_train],
        X_test=X[n_train:].astype(dtype),
        y_test=y[n_train:],
        n_features=X.shape[1],
        n_classes=int(y.max()) + 1,
        seed=seed,
    )


def _augment(a):
    return np.concatenate([a, np.ones((a.shape[0], 1), dtype=a.dtype)], axis=1)


def _softmax(s):
    z = s - s.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(s):
    z = s - s.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class DenseNet:
    """A fully connected network with tanh hidden layers and a softmax cross-entropy loss.

    `MLP` (one hidden layer) and `LogisticRegression` (none) are the two instances the lab uses.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first and classes last (at least two entries).
    l2 : float, optional
        L2 penalty ``l2 / 2 * sum ||W||_F^2`` added to the loss (biases included).

    Notes
    -----
    With :math:`\\bar a_0 = [x, 1]`, :math:`s_l = W_l \\bar a_{l}`, :math:`a_{l+1} = \\tanh(s_l)`
    and softmax probabilities :math:`p` of the last :math:`s`, backpropagation gives
    :math:`\\delta_L = (p - e_y) / B`, :math:`\\nabla W_l = \\delta_l^T \\bar a_l` and
    :math:`\\delta_{l-1} = (\\delta_l \\tilde W_l) \\odot (1 - a_l^2)` (:math:`\\tilde W` without the
    bias column). The R-operator :math:`\\mathcal R_V\\{\\cdot\\} = \\frac{d}{dr}(\\cdot)(W + rV)|_{r=0}`
    applied to every line of the forward and backward pass gives the exact Hessian-vector
    product at the cost of about two more passes (Pearlmutter 1994).

    References
    ----------
    .. [1] B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 6(1), 1994.
    """

    def __init__(self, sizes, *, l2=0.0):
        sizes = [_validate.positive_int("sizes", s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"`sizes` must hold at least an input and an output width, got {sizes}")
        self.sizes = tuple(sizes)
        self.l2 = _validate.nonnegative("l2", l2)

    def __repr__(self):
        return f"{type(self).__name__}(sizes={self.sizes}, l2={self.l2})"

    @property
    def shapes(self):
        """Shapes of the weight matrices, ``(n_out, n_in + 1)`` each."""
        return [(o, i + 1) for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=True)]

    @property
    def n_params(self):
        """Total number of parameters."""
        return sum(o * i for o, i in self.shapes)

    def init_params(self, *, rng=None, dtype=np.float64):
        """Glorot-uniform weights and zero biases.

        Parameters
        ----------
        rng : None, int or numpy.random.Generator, optional
            Source of the initial weights.
        dtype : {numpy.float64, numpy.float32}, optional
            dtype of the parameters.

        Returns
        -------
        params : list of ndarray
        """
        gen, _ = _validate.rng(rng)
        dtype = _validate.float_dtype("dtype", dtype)
        params = []
        for o, i1 in self.shapes:
            limit = np.sqrt(6.0 / (o + i1 - 1))
            W = np.zeros((o, i1))
            W[:, :-1] = gen.uniform(-limit, limit, size=(o, i1 - 1))
            params.append(W.astype(dtype))
        return params

    # -- checks -----------------------------------------------------------------------------------

    def _check(self, params, X, y=None):
        if not isinstance(params, (list, tuple)) or len(params) != len(self.shapes):
            raise TypeError(f"`params` must be a list of {len(self.shapes)} weight matrices")
        for l, (W, shape) in enumerate(zip(params, self.shapes, strict=True)):
            _validate.float_array(f"params[{l}]", W, min_ndim=2, max_ndim=2, check_finite=False)
            if W.shape != shape:
                raise ValueError(f"`params[{l}]` must have shape {shape}, got {W.shape}")
        X = _validate.float_array("X", X, min_ndim=2, max_ndim=2)
        if X.shape[1] != self.sizes[0]:
            raise ValueError(f"`X` must have {self.sizes[0]} columns, got shape {X.shape}")
        if y is not None:
            y = np.asarray(y)
            if y.shape != (X.shape[0],) or y.dtype.kind not in "iu":
                raise ValueError(f"`y` must be {X.shape[0]} integer labels, got {_validate._describe(y)}")
            if y.min() < 0 or y.max() >= self.sizes[-1]:
                raise ValueError(f"`y` must hold labels in range({self.sizes[-1]}), got {y.min()}..{y.max()}")
        return X, y

    # -- passes -----------------------------------------------------------------------------------

    def _forward(self, params, X):
        abar, acts = [], []
        a = X
        for l, W in enumerate(params):
            ab = _augment(a)
            abar.append(ab)
            s = ab @ W.T
            if l < len(params) - 1:
                a = np.tanh(s)
                acts.append(a)
            else:
                logits = s
        return abar, acts, logits

    def _deltas(self, params, acts, logits, y):
        B = logits.shape[0]
        p = _softmax(logits)
        delta = p.copy()
        delta[np.arange(B), y] -= 1.0
        delta /= B
        deltas = [delta]
        for l in range(len(params) - 1, 0, -1):
            delta = (delta @ params[l][:, :-1]) * (1.0 - acts[l - 1] ** 2)
            deltas.append(delta)
        return deltas[::-1], p

    def _penalty(self, params):
        return 0.5 * self.l2 * sum(float(np.vdot(W, W)) for W in params) if self.l2 else 0.0

    def predict_proba(self, params, X):
        """Class probabilities, shape (N, n_classes).

        Parameters
        ----------
        params : list of ndarray
            Weights.
        X : (N, D) ndarray
            Features.

        Returns
        -------
        p : (N, C) ndarray
        """
        X, _ = self._check(params, X)
        return _softmax(self._forward(params, X)[2])

    def loss(self, params, X, y):
        """Mean cross-entropy plus the L2 penalty.

        Parameters
        ----------
        params : list of ndarray
            Weights.
        X : (N, D) ndarray
            Features.
        y : (N,) ndarray of int
            Labels.

        Returns
        -------
        loss : float
        """
        X, y = self._check(params, X, y)
        logits = self._forward(params, X)[2]
        return float(-_log_softmax(logits)[np.arange(len(y)), y].mean()) + self._penalty(params)

    def accuracy(self, params, X, y):
        """Fraction of correctly classified samples.

        Parameters
        ----------
        params : list of ndarray
            Weights.
        X : (N, D) ndarray
            Features.
        y : (N,) ndarray of int
            Labels.

        Returns
        -------
        accuracy : float
        """
        X, y = self._check(params, X, y)
        return float(np.mean(np.argmax(self._forward(params, X)[2], axis=1) == y))

    def loss_and_grad(self, params, X, y):
        """Loss and its gradient by backpropagation.

        Parameters
        ----------
        params : list of ndarray
            Weights.
        X : (N, D) ndarray
            Features.
        y : (N,) ndarray of int
            Labels.

        Returns
        -------
        loss : float
        grads : list of ndarray
            One per weight matrix, same shapes and dtypes.
        """
        X, y = self._check(params, X, y)
        abar, acts, logits = self._forward(params, X)
        deltas, _ = self._deltas(params, acts, logits, y)
        loss = float(-_log_softmax(logits)[np.arange(len(y)), y].mean()) + self._penalty(params)
        grads = [
            (d.T @ ab + self.l2 * W).astype(W.dtype, copy=False) for d, ab, W in zip(deltas, abar, params, strict=True)
        ]
        return loss, grads

    def hvp(self, params, X, y, vecs):
        """Exact Hessian-vector product H V by the R-operator.

        Parameters
        ----------
        params : list of ndarray
            Weights.
        X : (N, D) ndarray
            Features.
        y : (N,) ndarray of int
            Labels.
        vecs : list of ndarray
            The direction V, one array per weight matrix (same shapes).

        Returns
        -------
        HV : list of ndarray
            The product, one array per weight matrix.
        """
        X, y = self._check(params, X, y)
        if not isinstance(vecs, (list, tuple)) or [np.shape(v) for v in vecs] != self.shapes:
            raise ValueError(f"`vecs` must be a list of arrays of shapes {self.shapes}")
        vecs = [np.asarray(v, dtype=np.result_type(W.dtype, np.float32)) for v, W in zip(vecs, params, strict=True)]
        L = len(params)
        abar, acts, logits = self._forward(params, X)
        # forward R-pass: R{abar_l} and R{s_l}
        r_abar = [np.zeros_like(abar[0])]
        r_acts = []
        for l in range(L):
            r_s = r_abar[l] @ params[l].T + abar[l] @ vecs[l].T
            if l < L - 1:
                r_a = (1.0 - acts[l] ** 2) * r_s
                r_acts.append(r_a)
                r_abar.append(np.concatenate([r_a, np.zeros((r_a.shape[0], 1), dtype=r_a.dtype)], axis=1))
            else:
                r_logits = r_s
        deltas, p = self._deltas(params, acts, logits, y)
        B = logits.shape[0]
        r_delta = p * (r_logits - np.sum(p * r_logits, axis=1, keepdims=True)) / B
        out = [None] * L
        for l in range(L - 1, -1, -1):
            out[l] = r_delta.T @ abar[l] + deltas[l].T @ r_abar[l] + self.l2 * vecs[l]
            if l > 0:
                back = deltas[l] @ params[l][:, :-1]
                r_back = r_delta @ params[l][:, :-1] + deltas[l] @ vecs[l][:, :-1]
                phi = 1.0 - acts[l - 1] ** 2
                r_delta = r_back * phi + back * (-2.0 * acts[l - 1] * r_acts[l - 1])
        return [o.astype(W.dtype, copy=False) for o, W in zip(out, params, strict=True)]

    def per_sample_grads(self, params, X, y):
        """Gradients of each sample's loss (penalty included); their mean is the batch gradient.

        Parameters
        ----------
        params : list of ndarray
            Weights.
        X : (N, D) ndarray
            Features.
        y : (N,) ndarray of int
            Labels.

        Returns
        -------
        grads : list of ndarray
            One array of shape ``(N,) + W.shape`` per weight matrix.
        """
        X, y = self._check(params, X, y)
        abar, acts, logits = self._forward(params, X)
        deltas, _ = self._deltas(params, acts, logits, y)
        B = X.shape[0]
        return [
            (B * np.einsum("bo,bi->boi", d, ab) + self.l2 * W).astype(W.dtype, copy=False)
            for d, ab, W in zip(deltas, abar, params, strict=True)
        ]

    def layer_statistics(self, params, X, y):
        """Inputs and output gradients of every dense layer, as K-FAC needs them.

        Parameters
        ----------
        params : list of ndarray
            Weights.
        X : (N, D) ndarray
            Features.
        y : (N,) ndarray of int
            Labels: the data's for the empirical Fisher, or ``sample_labels(...)`` for the
            Fisher (K-FAC proper).

        Returns
        -------
        stats : list of (ndarray, ndarray)
            Per layer, ``abar`` (N, n_in + 1), the layer's input with a column of ones, and
            ``g`` (N, n_out), the gradient of each sample's loss with respect to the layer's
            pre-activations, so that the cross-entropy part of the gradient is ``g.T @ abar / N``.
        """
        X, y = self._check(params, X, y)
        abar, acts, logits = self._forward(params, X)
        deltas, _ = self._deltas(params, acts, logits, y)
        return [(ab, X.shape[0] * d) for ab, d in zip(abar, deltas, strict=True)]

    def sample_labels(self, params, X, *, rng=None):
        """Labels drawn from the model's predictive distribution (for the Fisher and Sophia-GNB).

        Parameters
        ----------
        params : list of ndarray
            Weights.
        X : (N, D) ndarray
            Features.
        rng : None, int or numpy.random.Generator, optional
            Source of the draws.

        Returns
        -------
        y : (N,) ndarray of int
        """
        gen, _ = _validate.rng(rng)
        p = self.predict_proba(params, X)
        u = gen.random((p.shape[0], 1))
        return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), p.shape[1] - 1).astype(np.intp)

    # -- flat views (L-BFGS, dense Hessians) ------------------------------------------------------

    def flatten(self, params):
        """Concatenate the weights into one vector.

        Parameters
        ----------
        params : list of ndarray
            Weights.

        Returns
        -------
        x : (n_params,) ndarray
        """
        return np.concatenate([np.ravel(W) for W in params])

    def unflatten(self, x):
        """Split a vector into weight matrices (views when possible).

        Parameters
        ----------
        x : (n_params,) ndarray
            Flat parameters.

        Returns
        -------
        params : list of ndarray
        """
        x = np.asarray(x)
        if x.shape != (self.n_params,):
            raise ValueError(f"`x` must have shape ({self.n_params},), got {x.shape}")
        out, start = [], 0
        for shape in self.shapes:
            size = shape[0] * shape[1]
            out.append(x[start : start + size].reshape(shape))
            start += size
        return out


class MLP(DenseNet):
    """Two-layer perceptron: input -> tanh hidden layer -> softmax.

    Parameters
    ----------
    n_in : int
        Input features.
    n_hidden : int
        Hidden units.
    n_out : int
        Classes.
    l2 : float, optional
        L2 penalty, as in `DenseNet`.

    Examples
    --------
    >>> from linalg_lowrank.lab import MLP
    >>> MLP(64, 32, 10).shapes
    [(32, 65), (10, 33)]
    """

    def __init__(self, n_in, n_hidden, n_out, *, l2=0.0):
        super().__init__([n_in, n_hidden, n_out], l2=l2)


class LogisticRegression(DenseNet):
    """Multinomial logistic regression (softmax regression), one weight matrix with bias column.

    Parameters
    ----------
    n_in : int
        Input features.
    n_out : int
        Classes.
    l2 : float, optional
        L2 penalty, as in `DenseNet` (positive makes the loss strongly convex).

    Examples
    --------
    >>> from linalg_lowrank.lab import LogisticRegression
    >>> LogisticRegression(64, 10).shapes
    [(10, 65)]
    """

    def __init__(self, n_in, n_out, *, l2=0.0):
        super().__init__([n_in, n_out], l2=l2)


# ------------------------------------------------------------------------------------------ train

#: Optimizers `train` knows how to feed (the keys of `linalg_lowrank.optim.STEPS`).
OPTIMIZERS = tuple(optim.STEPS)


@dataclass(frozen=True, repr=False)
class TrainResult(Result):
    """What `train` measured.

    Attributes
    ----------
    losses : (n_iter + 1,) ndarray
        Training loss on the whole of ``X, y`` before the first step and after each step.
    times : (n_iter + 1,) ndarray
        Cumulative wall time (seconds) of the optimizer steps (gradient, curvature products and
        update; the loss evaluations are not counted), 0 first.
    params : list of ndarray
        Final weights.
    optimizer : str
        Its name.
    n_iter : int
        Optimizer steps taken (the ``n_steps`` asked of `train`).
    seed : int
        Seed that reproduces the batches and probes.
    """

    losses: np.ndarray
    times: np.ndarray
    params: list
    optimizer: str
    n_iter: int
    seed: int

    _renamed = {"n_steps": "n_iter"}


def train(model, params, X, y, *, optimizer, hyper=None, n_steps=100, batch_size=None, rng=None, callback=None):
    """Train ``model`` with one of the reference optimizers of `linalg_lowrank.optim`.

    Parameters
    ----------
    model : DenseNet
        The model (`MLP`, `LogisticRegression`).
    params : list of ndarray
        Initial weights (not modified).
    X : (N, D) ndarray
        Training features.
    y : (N,) ndarray of int
        Training labels.
    optimizer : str
        One of `OPTIMIZERS`: ``"sgd"``, ``"adamw"``, ``"muon"``, ``"shampoo"``, ``"soap"``,
        ``"kfac"``, ``"adahessian"``, ``"sophia"``, ``"lbfgs"``.
    hyper : dict, optional
        Keyword arguments of the optimizer's step function (``lr``, ``betas``, ...), the same for
        every weight matrix. Curvature inputs (``hvp``, ``activations``, ...) are supplied by
        `train` and must not be given.
    n_steps : int, optional
        Optimizer steps.
    batch_size : int, optional
        Mini-batch size (batches drawn without replacement within an epoch); the full batch when
        None. L-BFGS always uses the full batch.
    rng : None, int or numpy.random.Generator, optional
        Source of the batches, Hutchinson probes and sampled labels.
    callback : callable, optional
        ``callback(step, params)`` after every step (not timed); e.g. to record weight norms.

    Returns
    -------
    result : TrainResult

    Raises
    ------
    ValueError
        If ``optimizer`` is unknown or ``hyper`` names an input that `train` supplies.

    Notes
    -----
    The run is single-threaded (BLAS and numba): the lab's matrices are small.
    Per step and weight matrix: AdaHessian and Sophia (Hutchinson) get the exact Hessian-vector
    product of their own block (the other blocks' directions set to zero) on the current batch;
    Sophia-GNB gets the gradient on labels sampled from the model; K-FAC gets the layer's
    inputs and the output gradients on sampled labels (the Fisher's K-FAC factors).
    """
    optimizer = _validate.choice("optimizer", optimizer, OPTIMIZERS)
    n_steps = _validate.positive_int("n_steps", n_steps)
    X, y = model._check(params, X, y)
    hyper = dict(hyper or {})
    supplied = {"hvp", "activations", "output_grads", "sampled_grad", "batch_size", "rng", "fun"}
    if supplied & hyper.keys():
        raise ValueError(f"`hyper` must not set {sorted(supplied & hyper.keys())}: `train` supplies them")
    gen, seed = _validate.rng(rng)
    N = X.shape[0]
    batch_size = N if batch_size is None else _validate.positive_int("batch_size", batch_size)
    batch_size = min(batch_size, N)
    params = [np.array(W) for W in params]
    losses, times = [model.loss(params, X, y)], [0.0]
    order, pos = gen.permutation(N), 0
    init, step = optim.STEPS[optimizer]
    if optimizer == "lbfgs":
        states = init(model.flatten(params))
    else:
        states = [init(W) for W in params]
    elapsed = 0.0
    with single_threaded():
        for t in range(n_steps):
            t0 = time.perf_counter()
            if batch_size == N or optimizer == "lbfgs":
                Xb, yb = X, y
            else:
                if pos + batch_size > N:
                    order, pos = gen.permutation(N), 0
                idx = order[pos : pos + batch_size]
                pos += batch_size
                Xb, yb = X[idx], y[idx]
            if optimizer == "lbfgs":

                def fun(x, Xb=Xb, yb=yb, dtype=params[0].dtype):
                    loss, grads = model.loss_and_grad(model.unflatten(x.astype(dtype)), Xb, yb)
                    return loss, model.flatten(grads)

                x = model.flatten(params)
                _, g = fun(x)
                x, states = step(x, g, states, fun=fun, **hyper)
                params = [np.array(W) for W in model.unflatten(x)]
            else:
                _, grads = model.loss_and_grad(params, Xb, yb)
                extra = [{} for _ in params]
                if optimizer == "adamw":  # the first power iteration of spectral decay
                    for e in extra:
                        e["rng"] = gen
                if optimizer in ("adahessian", "sophia"):
                    for l in range(len(params)):
                        extra[l]["rng"] = gen
                        if optimizer == "sophia" and hyper.get("estimator", "hutchinson") == "gnb":
                            extra[l]["sampled_grad"] = _sampled_grad(model, params, Xb, gen, l)
                            extra[l]["batch_size"] = Xb.shape[0]
                        else:
                            extra[l]["hvp"] = _block_hvp(model, params, Xb, yb, l)
                if optimizer == "kfac":
                    stats = model.layer_statistics(params, Xb, model.sample_labels(params, Xb, rng=gen))
                    for l, (ab, g) in enumerate(stats):
                        extra[l]["activations"], extra[l]["output_grads"] = ab, g
                new = [step(W, G, s, **hyper, **e) for W, G, s, e in zip(params, grads, states, extra, strict=True)]
                params, states = [p for p, _ in new], [s for _, s in new]
            elapsed += time.perf_counter() - t0
            if callback is not None:
                callback(t, params)
            losses.append(model.loss(params, X, y))
            times.append(elapsed)
    return TrainResult(np.array(losses), np.array(times), params, optimizer, n_steps, seed)


def _block_hvp(model, params, X, y, l):
    """Products with the l-th diagonal block of the Hessian, in the (n, k) block form of Hutchinson."""
    shape = params[l].shape

    def matmat(V):
        V = np.asarray(V).reshape(shape[0] * shape[1], -1)
        out = np.empty_like(V, dtype=np.float64)
        for j in range(V.shape[1]):
            vecs = [np.zeros(s) for s in model.shapes]
            vecs[l] = V[:, j].reshape(shape)
            out[:, j] = model.hvp(params, X, y, vecs)[l].ravel()
        return out

    return matmat


def _sampled_grad(model, params, X, gen, l):
    """Sophia-GNB's input: a callable giving the gradient of block l on labels sampled from the model."""

    def sampled():
        return model.loss_and_grad(params, X, model.sample_labels(params, X, rng=gen))[1][l]

    return sampled
