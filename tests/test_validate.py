"""The shared input checks of _validate, through the public functions that use them."""

import numpy as np
import pytest

import linalg_lowrank as ll
from linalg_lowrank import _validate
from linalg_lowrank.polar import msign, polar

RAGGED = [[[1.0, 2.0], [3.0]], [[1, 2], [3]], [[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0]]], ([1.0], [2.0, 3.0])]


@pytest.mark.parametrize("A", RAGGED)
def test_ragged_sequence_is_named(A):
    with pytest.raises(ValueError, match=r"`B` must be a rectangular array; got a ragged nested sequence"):
        _validate.float_array("B", A)


@pytest.mark.parametrize("A", RAGGED)
@pytest.mark.parametrize(
    "fn, name",
    [
        (ll.power_iteration, "A"),
        (ll.spectral_norm, "A"),
        (ll.spectral_norm_grad, "A"),
        (ll.best_rank1, "A"),
        (lambda W: ll.spectral_weight_decay(W, 0.1), "W"),
        (msign, "A"),
        (polar, "A"),
    ],
)
def test_ragged_input_of_every_spectral_function_is_named(A, fn, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be a rectangular array"):
        fn(A)


def test_rectangular_lists_still_work():
    assert _validate.float_array("A", [[1.0, 2], [3, 4]]).dtype == np.float64
    assert abs(ll.spectral_norm([[3.0, 0.0], [4.0, 0.0]], rng=0) - 5.0) < 1e-12
