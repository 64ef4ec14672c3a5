"""hypothesis strategies: matrices built from a prescribed spectrum, so the truth is known."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


def random_orthogonal(rng, n, k):
    """n x k matrix with orthonormal columns (Haar-distributed up to signs)."""
    Q, R = np.linalg.qr(rng.standard_normal((n, k)))
    return Q * np.sign(np.diag(R))


def from_spectrum(s, m, n, seed, dtype=np.float64, order="C"):
    """(U * s) @ V.T with random orthonormal U (m x k), V (n x k), k = len(s)."""
    rng = np.random.default_rng(seed)
    k = len(s)
    U = random_orthogonal(rng, m, k)
    V = random_orthogonal(rng, n, k)
    A = (U * s) @ V.T
    return np.asarray(A, dtype=dtype, order=order)


@st.composite
def spectra(draw, k, kind=None):
    """Descending singular values: generic, clustered at the top, repeated top, or decaying."""
    kind = kind or draw(st.sampled_from(["generic", "cluster", "repeated", "decay"]))
    if kind == "generic":
        s = draw(arrays(np.float64, k, elements=st.floats(1e-3, 1e3)))
    elif kind == "cluster":
        top = draw(st.floats(1.0, 100.0))
        s = top * (1.0 - draw(arrays(np.float64, k, elements=st.floats(0.0, 0.05))))
    elif kind == "repeated":
        top = draw(st.floats(1.0, 100.0))
        rest = draw(arrays(np.float64, k, elements=st.floats(0.0, 0.8)))
        s = top * rest
        s[: min(2, k)] = top
    else:
        rate = draw(st.floats(0.3, 0.99))
        s = draw(st.floats(0.1, 10.0)) * rate ** np.arange(k)
    return np.sort(np.abs(s))[::-1]


@st.composite
def matrices_with_spectrum(draw, max_n=40, dtypes=(np.float64, np.float32), kind=None, min_gap=None):
    """(A, s): a matrix of random shape (tall, wide, 1 x n, n x 1), dtype and order, and its singular values.

    ``min_gap``: keep only spectra whose relative gap (s1 - s2) / s1 is at least this (vectors unique).
    """
    m = draw(st.integers(1, max_n))
    n = draw(st.integers(1, max_n))
    k = min(m, n)
    s = draw(spectra(k, kind=kind))
    if min_gap is not None and k > 1:
        s[1:] = np.minimum(s[1:], s[0] * (1 - min_gap))
        s = np.sort(s)[::-1]
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from(dtypes))
    order = draw(st.sampled_from(["C", "F"]))
    A = from_spectrum(s, m, n, seed, dtype=dtype, order=order)
    s_true = np.linalg.svd(A.astype(np.float64), compute_uv=False)  # of the matrix as stored
    return A, s_true
