"""The numba settings factory: importing works, with one warning, where numba cannot cache."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import linalg_lowrank

PACKAGE = Path(linalg_lowrank.__file__).parent

# Imports the package, runs one small kernel and prints the CacheUnavailableWarnings it saw.
PROBE = textwrap.dedent(
    """
    import warnings
    import numpy as np
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        import linalg_lowrank
        from linalg_lowrank import _hutchinson_kernels, _jit
        out = np.empty(2)
        _hutchinson_kernels.signs_from_top_bit(np.array([0, 2**31], dtype=np.uint32), out)
    assert out.tolist() == [-1.0, 1.0], out
    mine = [w for w in seen if issubclass(w.category, _jit.CacheUnavailableWarning)]
    print(len(mine), _jit.cache_enabled())
    for w in mine:
        print(w.message)
    """
)


def _run_probe(tmp_path, *, cache_dir=None):
    """Run PROBE on a copy of the package whose __pycache__ and $HOME cannot be created."""
    root = tmp_path / "src"
    shutil.copytree(PACKAGE, root / "linalg_lowrank", ignore=shutil.ignore_patterns("__pycache__"))
    # We may run as root, for whom permission bits do not stop a write; paths through a regular
    # file fail for everyone: the in-tree __pycache__ is a file, $HOME lies under a file.
    (root / "linalg_lowrank" / "__pycache__").write_text("not a directory")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(HOME=str(blocker / "home"), PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(root))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_import_without_a_writable_cache_location_warns_once_and_runs_uncached(tmp_path):
    proc = _run_probe(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "1 False", proc.stdout
    assert "NUMBA_CACHE_DIR" in lines[1]


def test_numba_cache_dir_is_the_fix_the_warning_names(tmp_path):
    proc = _run_probe(tmp_path, cache_dir=tmp_path / "numba_cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "0 True", proc.stdout
    assert any((tmp_path / "numba_cache").rglob("*.nbi")), "the kernel was not cached"


@pytest.mark.parametrize("decorate", ["bare", "called"])
def test_other_runtime_errors_are_not_swallowed(monkeypatch, decorate):
    from linalg_lowrank import _jit

    def failing_njit(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(_jit.numba, "njit", failing_njit)

    def f(x):
        return x

    with pytest.raises(RuntimeError, match="something else"):
        _jit.jit(f) if decorate == "bare" else _jit.jit(parallel=False)(f)


def test_writable_and_read_only_matrices_share_one_compiled_kernel():
    # A memory-mapped checkpoint gives read-only arrays, a converted one writable arrays: the
    # solver must not compile (seconds each) a second specialization of its kernels for them.
    import numpy as np

    from linalg_lowrank import _krylov

    rng = np.random.default_rng(3)
    A = rng.standard_normal((40, 30))
    stack = rng.standard_normal((3, 12, 10))
    kernels = (_krylov.solve_stack,)
    for M in (A, stack):
        linalg_lowrank.power_iteration(M, rng=0)
        before = [len(k.signatures) for k in kernels]
        frozen = M.copy()
        frozen.flags.writeable = False
        linalg_lowrank.power_iteration(frozen, rng=0)
        assert [len(k.signatures) for k in kernels] == before


def test_the_demo_audit_needs_no_kernel_beyond_warm_up():
    # warm_up must prepare the specializations the audit really runs (read-only float32 and
    # float64 matrices, float32 stacks), or the audit's first matrices are charged their compile
    # (or cache load). Counted as signatures, which numba adds on a compile and on a cache load.
    import io
    import tempfile

    import numba

    from linalg_lowrank import _kernels, _krylov, _warmup, audit

    # what the set-up step compiles (float32 only) is enough for the demo (bfloat16 and float32)
    _warmup.warm_up(stream=io.StringIO(), dtypes=_warmup._SETUP_DTYPES)
    kernels = {
        f"{module.__name__}.{name}": k
        for module in (_kernels, _krylov)
        for name, k in vars(module).items()
        if isinstance(k, numba.core.dispatcher.Dispatcher)
    }
    before = {name: set(k.signatures) for name, k in kernels.items()}
    with tempfile.TemporaryDirectory() as tmp:
        report = audit.audit_checkpoint(audit.write_demo_checkpoint(os.path.join(tmp, "demo.safetensors")))
    assert len(report.records) == 8
    added = {name: set(k.signatures) - before[name] for name, k in kernels.items()}
    assert {name: sigs for name, sigs in added.items() if sigs} == {}


def test_warm_up_says_when_it_compiles_and_is_silent_when_nothing_compiles(monkeypatch):
    import io

    import numba

    from linalg_lowrank import _warmup

    fresh = numba.njit(lambda x: x + 1)  # a new function: its first call compiles
    monkeypatch.setattr(_warmup, "_run_cases", lambda names: fresh(1))
    first, second = io.StringIO(), io.StringIO()
    _warmup.warm_up(stream=first)
    _warmup.warm_up(stream=second)
    lines = first.getvalue().splitlines()
    assert len(lines) == 2 and "compiling numba kernels" in lines[0] and "compiled in" in lines[1]
    assert second.getvalue() == ""
