"""The library's thread policy, in one place: BLAS and numba's pool never take turns on the cores,
and small problems stay on the calling thread.

- `blas_single_thread`: BLAS on one thread around the small dense algebra between numba kernels
  (on a 2-core machine an OpenBLAS pool that spins after a call stalls the next numba kernel for
  milliseconds) and around tall-skinny factorizations that a second thread does not speed up.
- `numba_threads_for`: a ``parallel=True`` kernel on fewer than ``config.PARALLEL_MIN_ENTRIES``
  entries runs on the calling thread only; waking the pool costs more than the work (measured on
  a 64 x 65 matrix: 0.2 ms on one thread, 30-50 ms with the pool on a loaded 2-core machine).
- `single_threaded`: both, for callers whose every problem is small (the lab's training loop).
- `solve_chunks`: how many threads share the products of an iterative solve of one dense matrix:
  one below ``config.PARALLEL_SOLVE_MIN_ENTRIES`` (1M entries), numba's thread count above.

Why iterative solves have their own, higher threshold. A one-pass kernel (weight decay, a Gram
product) synchronizes numba's pool once per call; a Lanczos solve synchronizes it once per product,
15 to 100 times per call, and each synchronization waits for the slowest thread. When the other
core is busy, that thread is off its core for up to a scheduler time slice, so a 3 ms solve can take
100 ms. Research code makes the other core busy by itself: OpenBLAS workers keep spinning for about
0.1 s after a scipy/numpy call (``scipy.linalg.svdvals``, a GEMM); other processes do the rest.

Measured with ``python -m bench --only interleave`` (alternating ``scipy.linalg.svdvals`` and
``spectral_norm`` over the 26 matrices of a 6-layer, 384-wide GPT, float32, 65 x 384 to
1536 x 384; 130 timed calls each; 2-core VM shared with other jobs):

=====================  ==================  =====================  ===========================
spectral_norm calls    median              p99 / median           svdvals total / ours total
=====================  ==================  =====================  ===========================
pool, load ~2          2.4 ms              42x (p99 100 ms)       4.2x
calling thread, ~2     3.2 ms              1.4x                   7.7x
pool, load 10-20       19 to 114 ms        5x to 13x              4x to 15x
calling thread, 10-20  8 to 35 ms          2.6x to 3.4x           38x to 45x
pool, quiet (< 2.6)    1.7 ms              3.5x (max 63 ms)       8.7x
calling thread, quiet  2.2 ms              1.3x (max 3.1 ms)      9.7x
=====================  ==================  =====================  ===========================

On the quiet machine the same run over the 40 matrices of a real checkpoint (all-MiniLM-L6-v2):
the p99 of a call over the median of its own matrix's calls is 4.2x with the pool and 1.2x on
the calling thread (``bench/results/interleave_quiet_session3.json``).

The price: solved back to back on a quiet machine (nothing else running), the pool is 1.5x to
1.75x faster than the calling thread from 0.6M to 2M entries (384 x 1536: 1.45 vs 2.2 ms;
1024 x 1024: 3.1 vs 5.3 ms) and even at 2048 x 2048. Setting the threshold at 1M entries keeps
the pool for 1024 x 1024 and larger, where one product streams 4 MB or more, and gives small
models' layers (up to 384 x 2048, or 1024 x 1023) the calling thread. Between 1M and 4M entries
(GPT-2-small's 768 x 3072) the stall remains possible; 4M would remove it at the 1.6x price
above. The stacks' solver (one whole solve per thread, one synchronization per call) and the
one-pass kernels are unchanged. The choice depends only on the shape and the thread count, so
results stay bit-identical from run to run.
"""

import contextlib

import numba

from . import config

_CONTROLLER = []


def _controller():
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            _CONTROLLER.append(None)
        else:
            _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


@contextlib.contextmanager
def blas_single_thread():
    """Limit BLAS to one thread inside the block (a no-op without threadpoolctl)."""
    controller = _controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


@contextlib.contextmanager
def numba_threads_for(entries):
    """Run numba's parallel kernels on the calling thread alone when the problem has few ``entries``."""
    if entries >= config.PARALLEL_MIN_ENTRIES:
        yield
        return
    saved = numba.get_num_threads()
    numba.set_num_threads(1)  # numba keeps this per calling thread; restored below
    try:
        yield
    finally:
        numba.set_num_threads(saved)


@contextlib.contextmanager
def single_threaded():
    """BLAS and numba on one thread for everything inside the block."""
    with numba_threads_for(0), blas_single_thread():
        yield


def solve_chunks(rows, cols):
    """Row chunks (one per thread) for the products of an iterative solve of one ``rows x cols`` matrix.

    1 (the calling thread alone) below ``config.PARALLEL_SOLVE_MIN_ENTRIES`` entries, else numba's
    thread count (at most one chunk per row). The products' rounding depends on this number only.
    """
    if rows * cols < config.PARALLEL_SOLVE_MIN_ENTRIES:
        return 1
    return max(1, min(numba.get_num_threads(), rows))
