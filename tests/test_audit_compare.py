"""audit --spectrum, --against and --series against numpy on checkpoints written here."""

import json
import math

import numpy as np
import pytest
import scipy.linalg

import linalg_lowrank as ll
from linalg_lowrank import audit


def _run(capsys, argv):
    status = audit.main(argv + ["--no-progress"])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture
def run_dir(tmp_path):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((60, 40))
    s0 = rng.standard_normal((3, 20, 10)).astype(np.float32)
    steps = []
    for t in range(3):
        tensors = {
            "w": w0 + 0.2 * t * rng.standard_normal((60, 40)),
            "stack": (s0 * (1 + 0.5 * t) + 0.1 * t * rng.standard_normal(s0.shape)).astype(np.float32),
            "reshaped": np.ones((3, 3)) if t < 2 else np.ones((4, 3)),
            ("gone" if t == 0 else "new"): rng.standard_normal((5, 4)),
            "bias": np.zeros(4),
        }
        path = tmp_path / f"step_{5 * t}.npz"
        np.savez(path, **tensors)
        steps.append((path, tensors))
    return tmp_path, steps


def test_against_matches_numpy(capsys, run_dir):
    _, steps = run_dir
    (old_path, old), _, (new_path, new) = steps
    status, out, _ = _run(capsys, [str(new_path), "--against", str(old_path), "--json", "--tol", "1e-12"])
    assert status == 0
    doc = json.loads(out)
    by_name = {c["name"]: c for c in doc["changes"]}
    assert set(by_name) == {"w", "stack"}
    D = new["w"] - old["w"]
    Un, sn, Vtn = np.linalg.svd(new["w"])
    Uo, so, Vto = np.linalg.svd(old["w"])
    c = by_name["w"]
    assert c["spectral_norm_new"] == pytest.approx(sn[0], rel=1e-10)
    assert c["spectral_norm_old"] == pytest.approx(so[0], rel=1e-10)
    assert c["relative_change"] == pytest.approx((sn[0] - so[0]) / so[0], rel=1e-8, abs=1e-12)
    assert c["update_norm"] == pytest.approx(np.linalg.norm(D, 2), rel=1e-10)
    assert c["update_ratio"] == pytest.approx(np.linalg.norm(D, 2) / so[0], rel=1e-10)
    assert c["cos_u"] == pytest.approx(abs(Un[:, 0] @ Uo[:, 0]), abs=1e-6)
    assert c["cos_v"] == pytest.approx(abs(Vtn[0] @ Vto[0]), abs=1e-6)
    # A stack: the matrix with the largest update, computed in float64 from the float32 tensors.
    Ds = new["stack"].astype(np.float64) - old["stack"].astype(np.float64)
    norms = [np.linalg.norm(Ds[i], 2) for i in range(3)]
    i = int(np.argmax(norms))
    assert by_name["stack"]["stack_index"] == [i]
    assert by_name["stack"]["update_norm"] == pytest.approx(norms[i], rel=1e-6)
    assert doc["missing"] == ["gone"] and doc["added"] == ["new"]
    assert doc["shape_changed"] == [{"name": "reshaped", "old_shape": [3, 3], "new_shape": [4, 3]}]
    assert [s["name"] for s in doc["skipped"]] == ["bias"]


def test_against_text_table(capsys, run_dir):
    _, steps = run_dir
    status, out, _ = _run(capsys, [str(steps[1][0]), "--against", str(steps[0][0])])
    assert status == 0
    assert "update_norm" in out and "cos_u" in out
    assert "shape changed" not in out and "missing (old only): gone" in out and "added (new only): new" in out


def test_difference_is_never_formed(run_dir, monkeypatch):
    # The update norm goes through products with each matrix: no (m, n) float array is allocated by subtraction.
    _, steps = run_dir
    seen = []
    original = ll.spectrum._Difference.matvec

    def matvec(self, x):
        seen.append(x.shape)
        return original(self, x)

    monkeypatch.setattr(ll.spectrum._Difference, "matvec", matvec)
    from linalg_lowrank._audit_compare import compare_checkpoints

    comp = compare_checkpoints(steps[2][0], steps[0][0])
    assert seen and all(len(s) == 1 for s in seen)
    assert comp.missing == ["gone"]


def test_series_matches_numpy(capsys, run_dir):
    directory, steps = run_dir
    status, out, _ = _run(capsys, [str(directory), "--series", "--json", "--spectrum", "6", "--tol", "1e-12"])
    assert status == 0
    doc = json.loads(out)
    assert [p.split("/")[-1] for p in doc["checkpoints"]] == ["step_0.npz", "step_5.npz", "step_10.npz"]
    traj = doc["matrices"]
    for t, (_, tensors) in enumerate(steps):
        s = scipy.linalg.svdvals(tensors["w"])
        assert traj["w"]["spectral_norm"][t] == pytest.approx(s[0], rel=1e-10)
        assert traj["w"]["stable_rank"][t] == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-8)
        p = s[:6] / s[:6].sum()
        assert traj["w"]["effective_rank"][t] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-8)
    assert traj["gone"]["spectral_norm"][1:] == [None, None] and traj["new"]["spectral_norm"][0] is None
    # Several paths in order are the same series.
    status, out2, _ = _run(
        capsys, [str(p) for p, _ in steps] + ["--series", "--json", "--spectrum", "6", "--tol", "1e-12"]
    )
    assert json.loads(out2)["matrices"] == traj
    status, text, _ = _run(capsys, [str(directory), "--series"])
    assert status == 0 and "spectral_norm:" in text and "[2]" in text


def test_spectrum_records_match_svdvals(capsys, run_dir):
    _, steps = run_dir
    path, tensors = steps[0]
    status, out, _ = _run(capsys, [str(path), "--json", "--spectrum", "12"])
    assert status == 0
    recs = {r["name"]: r for r in json.loads(out)["records"]}
    s = scipy.linalg.svdvals(tensors["w"])
    spec = recs["w"]["spectrum"]
    assert spec["k"] == 12 and spec["converged"]
    assert np.allclose(spec["values"], s[:12], rtol=1e-7)
    assert np.all(np.asarray(spec["lower_bound"]) <= s[:12] * (1 + 1e-14))
    assert (
        spec["effective_rank_low"]
        <= math.exp(-(s / s.sum() * np.log(s / s.sum())).sum())
        <= spec["effective_rank_high"]
    )
    assert spec["alpha"] == pytest.approx(ll.power_law_alpha(s[:12] ** 2)[0], abs=0.05)
    assert recs["stack"]["spectrum"]["k"] == 10  # min(K, m, n)
    status, text, _ = _run(capsys, [str(path), "--spectrum", "4"])
    assert "effective_rank" in text and "alpha" in text


def test_bad_combinations(capsys, run_dir):
    _, steps = run_dir
    # several paths without --series are audited as one set of tensors (issue 15); with --spectrum
    # that runs only on a single file in this process for now
    status, out, _ = _run(capsys, [str(steps[0][0]), str(steps[1][0])])
    assert status == 0 and "2 inputs" in out
    status, _, err = _run(capsys, [str(steps[0][0]), str(steps[1][0]), "--spectrum", "4"])
    assert status == 2 and "--spectrum" in err
    status, _, err = _run(capsys, [str(steps[0][0]), "--against", str(run_dir[0] / "missing.npz")])
    assert status == 2 and "missing.npz" in err
    status, _, err = _run(capsys, ["--spectrum", "0"])
    assert status == 2


def _same_trajectories(a, b):
    """Equal up to rounding: the streamed path may take another thread path than the in-process audit."""
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        for field in a[name]:
            if not isinstance(a[name][field], list):  # the matrix's layer and role
                assert a[name][field] == b[name][field]
                continue
            for x, y in zip(a[name][field], b[name][field], strict=True):
                assert (x is None and y is None) or x == pytest.approx(y, rel=16 * float(np.finfo(np.float32).eps))


def test_series_streams_to_a_results_file_and_resumes(capsys, run_dir, tmp_path_factory):
    # --series --out goes through the single audit's streaming path: one record per tensor per checkpoint,
    # the same trajectories as in this process (seeds come from tensor names), and a run cut short
    # (the file holding only its first records, as after a killed client) resumes to the same result.
    directory, steps = run_dir
    status, plain, _ = _run(capsys, [str(directory), "--series", "--json"])
    assert status == 0
    results = tmp_path_factory.mktemp("out") / "series.jsonl"
    status, streamed, _ = _run(capsys, [str(directory), "--series", "--json", "--out", str(results)])
    assert status == 0
    _same_trajectories(json.loads(streamed)["matrices"], json.loads(plain)["matrices"])
    lines = results.read_text().splitlines()
    n_tensors = sum(len(tensors) for _, tensors in steps)
    assert len(lines) == n_tensors  # one record per tensor of every checkpoint
    results.write_text("\n".join(lines[:3]) + "\n")  # cut short after three records
    status, resumed, _ = _run(capsys, [str(directory), "--series", "--json", "--out", str(results), "--resume"])
    assert status == 0
    _same_trajectories(json.loads(resumed)["matrices"], json.loads(plain)["matrices"])
    records = [json.loads(line) for line in results.read_text().splitlines()]
    keys = [(r["file"], r["name"], tuple(r["span"])) for r in records]
    assert len(keys) == n_tensors and len(set(keys)) == n_tensors  # every tensor exactly once
    status, _, err = _run(capsys, [str(directory), "--series", "--out", str(results)])
    assert status == 2 and "--resume" in err  # a non-empty results file is never overwritten
    status, _, err = _run(
        capsys, [str(directory), "--series", "--spectrum", "4", "--out", str(tmp_path_factory.mktemp("o") / "x.jsonl")]
    )
    assert status == 2 and "--spectrum" in err
