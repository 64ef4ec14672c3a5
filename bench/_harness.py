"""Timing, machine description and reporting shared by every ``bench/bench_*.py`` family.

Each family module defines ``run(report, quick)``; it times ours and the anchors in this same
process on the same inputs (interleaved, so drift in machine load hits both), records accuracy
beside time, and states each target as a ratio with ``report.target``.
"""

import json
import os
import platform
import statistics
import time


def machine_info():
    """CPU, core count, BLAS libraries and thread counts, numba threading, versions, BLAS env."""
    import numba
    import numpy as np
    import scipy

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "filepath")}
            for d in threadpool_info()
        ]
    except ImportError:
        blas = []
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "blas": blas,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _threading_layer(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_", "NUMBA_"))},
    }


def _threading_layer():
    import numba
    import numpy as np
    from numba import njit, prange

    @njit(parallel=True)
    def touch(x):
        for i in prange(x.shape[0]):
            x[i] = i

    touch(np.zeros(4))
    return numba.threading_layer()


def interleaved(fns, *, repeat=5, warmup=1, min_time=0.0, pause=0.0, block=1):
    """Time several callables round-robin; return {name: [seconds, ...]}.

    Round-robin order means a burst of load on the machine affects every contender alike.
    ``min_time``: keep repeating until each has this much total time (for very fast calls).
    ``pause``: seconds to sleep before each call, so that thread pools left spinning by the
    previous contender (OpenBLAS spins for about 0.1 s after a call) go idle and every
    contender starts from the same state.
    ``block``: each contender runs this many times in a row per round and only the calls after
    the first are kept: its steady, back-to-back speed. The first call pays for the switch from
    the previous contender: OpenBLAS threads still spinning, or, after an idle gap, waking the
    other core (on this VM the first numba parallel region after 50 ms idle costs 6-12 ms).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    rounds = 0
    while rounds < repeat or min(sum(t) for t in times.values()) < min_time:
        for name, fn in fns.items():
            if pause:
                time.sleep(pause)
            for call in range(block):
                t0 = time.perf_counter()
                fn()
                if call or block == 1:
                    times[name].append(time.perf_counter() - t0)
        rounds += 1
        if rounds > 10_000:
            break
    return times


class Report:
    """Collects rows and targets; prints a table; saves JSON."""

    def __init__(self):
        self.machine = machine_info()
        self.rows = []
        self.targets = []

    def row(self, family, case, name, seconds, **extra):
        """Record a timing (list of seconds or one number) with any accuracy fields."""
        if isinstance(seconds, (list, tuple)):
            med = statistics.median(seconds)
            spread = (min(seconds), max(seconds))
        else:
            med, spread = seconds, (seconds, seconds)
        rec = {"family": family, "case": case, "name": name, "median_s": med, "min_s": spread[0], "max_s": spread[1]}
        rec.update(extra)
        self.rows.append(rec)
        print(f"  {family:<12} {case:<34} {name:<26} {med * 1e3:10.3f} ms  {_fmt_extra(extra)}", flush=True)
        return med

    def target(self, family, description, measured, goal, *, higher_is_better=True, unit="x"):
        """Record whether a target holds: ``measured`` vs ``goal`` (a ratio unless unit says otherwise)."""
        ok = measured >= goal if higher_is_better else measured <= goal
        rec = {
            "family": family,
            "target": description,
            "measured": measured,
            "goal": goal,
            "unit": unit,
            "met": bool(ok),
        }
        self.targets.append(rec)
        sign = ">=" if higher_is_better else "<="
        print(f"  TARGET {'MET ' if ok else 'MISS'} {description}: {measured:.3g}{unit} (goal {sign} {goal:g}{unit})")
        return ok

    def save(self, path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            json.dump({"machine": self.machine, "rows": self.rows, "targets": self.targets}, f, indent=1, default=str)


def _fmt_extra(extra):
    parts = []
    for k, v in extra.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.3g}")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts)
