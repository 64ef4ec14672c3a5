"""Compile (or load from numba's cache) the kernels a command needs, before anything is timed.

The first call of a numba kernel in a fresh environment compiles it, which takes seconds; a
command that times its work (the audit's ``time_s``) calls `warm_up` first so that compile time
is never charged to a matrix, and says on stderr when it is compiling.
"""

import os
import sys
import time

import numpy as np


def _cache_is_cold(dispatchers):
    """True if some kernel has no cache index on disk yet (the next call compiles it)."""
    for d in dispatchers:
        cache = getattr(d, "_cache", None)
        index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
        if index is None or not os.path.exists(index):
            return True
    return False


def warm_up(*, stream=None):
    """Compile the kernels behind `spectral_norm` for float32/float64 matrices and stacks.

    Parameters
    ----------
    stream : file-like, optional
        Where to say that kernels are being compiled (default ``sys.stderr``); nothing is written
        when every kernel is already cached.

    Returns
    -------
    seconds : float
        Time spent compiling or loading.
    """
    from . import _kernels
    from .config import PARALLEL_MIN_ENTRIES
    from .spectral import power_iteration

    stream = sys.stderr if stream is None else stream
    start = time.perf_counter()
    kernels = [_kernels.power_pilot, _kernels.lanczos_small, _kernels.lanczos_stack]
    if _cache_is_cold(kernels):
        print(
            "linalg_lowrank: compiling numba kernels (first run only, cached afterwards) ...", file=stream, flush=True
        )
    side = int(np.sqrt(PARALLEL_MIN_ENTRIES)) + 1  # large enough for the parallel one-pass kernel
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for shape in ((8, 6), (side, side), (3, 8, 6)):
            power_iteration(rng.standard_normal(shape).astype(dtype), rng=0)
    return time.perf_counter() - start
