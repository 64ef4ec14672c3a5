"""Compile (or load from numba's cache) the kernels a command needs, before anything is timed.

The first call of a numba kernel in a fresh environment compiles it, which takes seconds; a
command that times its work (the audit's ``time_s``) calls `warm_up` first so that compile time
is never charged to a matrix, and a line on stderr says when kernels are being compiled.

``python -m linalg_lowrank._warmup`` (run by ``scripts/_venv.sh`` after installing) does the
same at set-up, in one process: parallel processes would race on numba's cache index files
(a kernel compiled in two processes for two dtypes keeps only the entry written last).
"""

import argparse
import contextlib
import subprocess
import sys
import time

import numpy as np

# Groups of solver paths, each compiled by one process at set-up. Kernels compiled as callees are
# cached under the caller's argument types, so a group holds everything that shares a callee: two
# processes never compile the same kernel signature. Covered: the numba driver of the Krylov engine
# (`_krylov.solve_stack`, which serves single matrices and stacks alike, with the parallel one-pass
# product inside) for float64 and float32 matrices; the float32 stack case shares its compile with
# the float32 matrix. The engine's Python-driven entry (`_krylov.advance`, for operators) compiles on
# first use.
_GROUPS = {"float64": ("float64",), "float32": ("float32", "float32-stack")}
#: The groups each compute dtype needs: the audit warms only the dtypes its tensors compute in
#: (float32 for half and single precision, float64 for float64), the set-up step both.
_DTYPE_GROUPS = {"float32": ("float32",), "float64": ("float64",)}
_SETUP_DTYPES = ("float32", "float64")


def _case(name):
    """A read-only matrix (or stack) whose solve runs the power pilot and then Lanczos."""
    dtype = np.float32 if name.startswith("float32") else np.float64
    s = np.concatenate([[1.0, 0.99], np.linspace(0.5, 0.1, 6)])  # slow power steps: Lanczos takes over
    A = np.diag(s)
    if name.endswith("-stack"):
        A = np.stack([A, A[::-1, ::-1]])
    A = np.ascontiguousarray(A, dtype=dtype)
    A.flags.writeable = False  # as memory-mapped checkpoints; the solver makes every matrix read-only
    return A


def _spectrum_cases(dtype):
    """Read-only matrices for the audit's ``--spectrum`` path: one small, one at the parallel-product size.

    The path is exercised through the public function, so whichever kernels it uses (and whatever
    size picks a parallel product) get compiled: nothing here names a kernel.
    """
    from . import config

    out = []
    for entries in (16 * 12, config.PARALLEL_MIN_ENTRIES):
        n = 12 if entries < 4096 else 64
        m = max(n, -(-entries // n))
        A = np.zeros((m, n), dtype=dtype)
        A[np.arange(n), np.arange(n)] = 0.5 ** np.arange(n)  # well separated: a few iterations
        A.flags.writeable = False
        out.append(A)
    return out


def _run_spectrum_cases(dtypes):
    import warnings

    from .results import ConvergenceWarning
    from .spectrum import top_singular_values

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # compiling is the point, not the values
        for dtype in dtypes:
            for A in _spectrum_cases(np.dtype(str(dtype))):
                top_singular_values(A, 3, rng=0)


def _run_cases(names):
    from .spectral import power_iteration

    for name in names:
        power_iteration(_case(name), rng=0)


@contextlib.contextmanager
def _announce_compiles(stream, what="numba kernels"):
    """Print one line when numba starts compiling inside the block; yields a dict with "compiled"."""
    from numba.core import event

    state = {"compiled": False}

    class _Listener(event.Listener):
        def on_start(self, ev):
            if not state["compiled"]:
                state["compiled"] = True
                print(f"linalg_lowrank: compiling {what} ({_cache_note()}) ...", file=stream, flush=True)

        def on_end(self, ev):
            pass

    with event.install_listener("numba:compile", _Listener()):
        yield state


def _cache_note():
    from . import _jit

    if _jit.cache_enabled() is False:
        return "not cached: no writable cache directory, set NUMBA_CACHE_DIR"
    return "first run only, cached afterwards"


def warm_up(*, stream=None, dtypes=("float32", "float64"), spectrum=False):
    """Compile the kernels behind `spectral_norm` for matrices (and float32 stacks) of ``dtypes``.

    Parameters
    ----------
    stream : file-like, optional
        Where to say that kernels are being compiled (default ``sys.stderr``); nothing is written
        when every kernel is already cached.
    dtypes : iterable of {"float32", "float64"}, optional
        The compute dtypes to prepare (a caller that knows its inputs names only those).
    spectrum : bool, optional
        Also run `top_singular_values` (the audit's ``--spectrum``) on a small and a large
        matrix of each dtype.

    Returns
    -------
    seconds : float
        Time spent compiling or loading.
    """
    stream = sys.stderr if stream is None else stream
    start = time.perf_counter()
    with _announce_compiles(stream) as state:
        for dtype in dtypes:
            for group in _DTYPE_GROUPS[str(dtype)]:
                _run_cases(_GROUPS[group])
        if spectrum:
            _run_spectrum_cases(dtypes)
    seconds = time.perf_counter() - start
    if state["compiled"]:
        print(f"linalg_lowrank: kernels compiled in {seconds:.1f} s", file=stream, flush=True)
    return seconds


def main(argv=None):
    """Compile the kernels of the set-up dtypes into numba's cache, ``--jobs`` processes at a time."""
    parser = argparse.ArgumentParser(prog="python -m linalg_lowrank._warmup", description=main.__doc__)
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="parallel processes (default 1: processes that compile kernels with shared callees race on numba's "
        "cache index files, and a lost entry is compiled again at first use)",
    )
    parser.add_argument("--group", choices=sorted(_GROUPS), help=argparse.SUPPRESS)  # one group, in a child
    args = parser.parse_args(argv)
    if args.group is not None:
        with _announce_compiles(sys.stderr, f"numba kernels for {args.group} matrices"):
            _run_cases(_GROUPS[args.group])
        return 0
    from . import _jit, spectral  # noqa: F401  (defines the kernels: a missing cache is reported here, once)

    if _jit.cache_enabled() is False:  # compiling now would be lost with this process
        print("linalg_lowrank: no numba cache, so no warm-up; kernels compile on first use", file=sys.stderr)
        return 0
    start = time.perf_counter()
    jobs = args.jobs
    groups = [g for dtype in _SETUP_DTYPES for g in _DTYPE_GROUPS[dtype]]
    failed = jobs <= 1  # one job: compile here
    if jobs > 1:
        pending = list(groups)
        running = []
        while pending or running:
            while pending and len(running) < jobs:
                cmd = [sys.executable, "-m", "linalg_lowrank._warmup", "--group", pending.pop(0)]
                running.append(subprocess.Popen(cmd))
            if running.pop(0).wait() != 0:
                print("linalg_lowrank: a warm-up process failed; compiling here instead", file=sys.stderr)
                failed = True
    if failed:  # the children's cache is complete otherwise: loading it here would only cost time
        warm_up(dtypes=_SETUP_DTYPES)
    print(f"linalg_lowrank: kernels ready ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
