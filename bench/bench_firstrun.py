"""First run: numba compile time of the built-in demo audit, cold and warm, and import time.

Every measurement is a fresh process (``sys.executable``) on the ``linalg_lowrank`` this process
imports, with its own ``NUMBA_CACHE_DIR``: empty for a cold run, filled by the cold run for the
warm one. Targets (issue 14): the first ``bash scripts/audit.sh`` on a fresh clone finishes within
20 s beyond the package install on 2 cores (the set-up warm-up that scripts/_venv.sh runs plus
the first audit), the warm audit within 2 s. Wall-clock seconds, so the machine's load average
is recorded beside every figure: on a shared machine they are upper bounds.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import linalg_lowrank

FAMILY = "firstrun"
_ROOT = str(Path(linalg_lowrank.__file__).resolve().parent.parent)

_IMPORT = ["-c", "import linalg_lowrank"]
_AUDIT = ["-m", "linalg_lowrank", "audit"]
# The set-up step of scripts/_venv.sh; a tree without the parallel entry point warms up in-process.
_SETUP = [
    "-c",
    "import sys\n"
    "try:\n"
    "    import linalg_lowrank._warmup as w\n"
    "except ImportError:\n"
    "    sys.exit(0)\n"
    "if hasattr(w, 'main'):\n"
    "    sys.exit(w.main([]))\n"
    "w.warm_up()\n",
]


def _timed(args, cache_dir):
    """Wall seconds and CPU seconds (user + system, children included) of one fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=_ROOT)
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, cwd=_ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    after = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu


def _load():
    return round(os.getloadavg()[0], 2)


def run(report, quick):
    repeat = 1 if quick else 2
    warm_repeat = 3
    cold_setup, cold_audit_after, cold_audit_alone, cold_import = [], [], [], []
    warm_audit, warm_import = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench_firstrun_") as tmp:
            empty = os.path.join(tmp, "cache_empty")
            cold_import.append((*_timed(_IMPORT, empty), _load()))
            shutil.rmtree(empty, ignore_errors=True)
            cold_audit_alone.append((*_timed(_AUDIT, empty), _load()))  # no set-up warm-up: compiles in the audit
            fresh = os.path.join(tmp, "cache_setup")
            cold_setup.append((*_timed(_SETUP, fresh), _load()))
            cold_audit_after.append((*_timed(_AUDIT, fresh), _load()))
            for _ in range(warm_repeat):
                warm_audit.append((*_timed(_AUDIT, fresh), _load()))
                warm_import.append((*_timed(_IMPORT, fresh), _load()))

    def row(case, name, samples):
        walls = [w for w, _, _ in samples]
        return report.row(
            FAMILY,
            case,
            name,
            walls,
            cpu_s=statistics.median(c for _, c, _ in samples),
            load1=max(ld for _, _, ld in samples),
        )

    row("import linalg_lowrank", "cold numba cache", cold_import)
    row("import linalg_lowrank", "warm numba cache", warm_import)
    row("demo audit", "cold, no set-up warm-up", cold_audit_alone)
    row("demo audit", "set-up warm-up (_venv.sh)", cold_setup)
    row("demo audit", "first audit after set-up", cold_audit_after)
    row("demo audit", "warm", warm_audit)
    first = [s[0] + a[0] for s, a in zip(cold_setup, cold_audit_after, strict=True)]
    report.target(
        FAMILY,
        "first audit beyond install (set-up warm-up + audit), s",
        min(first),
        20.0,
        higher_is_better=False,
        unit="s",
    )
    report.target(
        FAMILY,
        "warm demo audit, s",
        statistics.median(w for w, _, _ in warm_audit),
        2.0,
        higher_is_better=False,
        unit="s",
    )
    print(
        f"  (load average 1 min now {_load()}, cores {os.cpu_count()}; wall times on a loaded machine are upper bounds)"
    )
