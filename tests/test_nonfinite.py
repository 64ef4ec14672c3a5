"""Every public function that takes a matrix names a NaN or Inf in it with a ValueError.

setup.cfg turns RuntimeWarning into an error, so a product computed before the check (numpy's
"invalid value encountered in matmul") would surface as the wrong exception here; the BLAS kernel
that warns differs between machines (AVX2 and AVX-512 OpenBLAS), so every path is walked.
"""

import numpy as np
import pytest

import linalg_lowrank as ll


def _case(bad, shape):
    A = np.random.default_rng(0).standard_normal(shape)
    if shape[0] == shape[1]:
        A = A @ A.T
    A[1, 2] = bad
    if shape[0] == shape[1]:
        A[2, 1] = bad  # still symmetric, so the symmetric families reach their finiteness check
    return A


CALLS = {
    "power_iteration": lambda A: ll.power_iteration(A, rng=0),
    "spectral_norm": lambda A: ll.spectral_norm(A, rng=0),
    "spectral_norm_grad": lambda A: ll.spectral_norm_grad(A, rng=0),
    "best_rank1": lambda A: ll.best_rank1(A, rng=0),
    "spectral_weight_decay": lambda A: ll.spectral_weight_decay(A, 0.1, rng=0),
    "spectral_weight_decay(v=)": lambda A: ll.spectral_weight_decay(A, 0.1, v=np.ones(A.shape[1])),
    "best_rank": lambda A: ll.best_rank(A, 2),
    "randomized_svd": lambda A: ll.randomized_svd(A, 2, rng=0),
    "randomized_svd(tol=)": lambda A: ll.randomized_svd(A, tol=0.1, rng=0),
    "pinv": lambda A: ll.pinv(A),
    "cr_matmul": lambda A: ll.cr_matmul(A, A.T, 3, rng=0),
    "interpolative_decomposition": lambda A: ll.interpolative_decomposition(A, 2, rng=0),
    "cur": lambda A: ll.cur(A, 2, rng=0),
    "msign": lambda A: ll.msign(A),
    "polar": lambda A: ll.polar(A),
}
SQUARE_CALLS = {
    "hutchinson_diagonal": lambda A: ll.hutchinson_diagonal(A, rng=0),
    "hutchinson_trace": lambda A: ll.hutchinson_trace(A, rng=0),
    "inverse_pth_root": lambda A: ll.inverse_pth_root(A, 2),
    "symmetric_eig": lambda A: ll.symmetric_eig(A),
    "kfac_solve": lambda A: ll.kfac_solve(np.ones(A.shape), A, A, damping=0.1),
}


CASES = [(name, shape) for name in sorted(CALLS) for shape in [(6, 6), (8, 5), (300, 300)]] + [
    (name, shape) for name in sorted(SQUARE_CALLS) for shape in [(6, 6), (300, 300)]
]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name, shape", CASES)
def test_non_finite_entries_are_named(name, shape, bad):
    call = CALLS.get(name) or SQUARE_CALLS.get(name)
    A = _case(bad, shape)
    before = A.copy()
    with pytest.raises(ValueError, match=r"finite|NaN or Inf"):
        call(A)
    np.testing.assert_array_equal(A, before)  # input untouched even on the error path
