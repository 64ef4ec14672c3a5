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
  one below ``config.PARALLEL_SOLVE_MIN_ENTRIES`` (4M entries), numba's thread count above.

Why iterative solves have their own, higher threshold. A one-pass kernel (weight decay, a Gram
product) synchronizes numba's pool once per call; a Lanczos solve synchronizes it once per product,
15 to 100 times per call, and each synchronization waits for the slowest thread. When the other
core is busy, that thread is off its core for up to a scheduler time slice (milliseconds), so a
3 ms solve can take 100 ms. Research code makes the other core busy by itself: OpenBLAS workers
keep spinning for about 0.1 s after a numpy/scipy call (``scipy.linalg.svdvals``, a GEMM), and other
processes share the machine. Measured in one process on the 2-core VM with other jobs running
(load average 10-20; ``python -m bench --only interleave``), alternating ``scipy.linalg.svdvals``
and ``spectral_norm`` over the matrices of a 6-layer, 384-wide GPT (float32, 384 x 384 to
1536 x 384): with the pool, spectral_norm took a median of 89 to 167 ms a call, p99 up to 7x the
median; on the calling thread 24 to 26 ms, p99 2.5 to 4x the median; svdvals was not slower. Solving
single matrices alone (interleaved, same load), the calling thread was faster than the pool at every
size up to 2048 x 2048 (3x to 30x in median). On a quiet machine the pool gains at most its thread
count on products that stream from memory; below 4M entries (16 MB in float32) a product takes
about a millisecond or less, which a single stall wipes out. Products of larger matrices stream
tens of MB and keep the pool; the stacks' solver (one whole solve per thread, one synchronization
per call) and the one-pass kernels are unchanged. The choice depends only on the shape and the
thread count, so results stay bit-identical from run to run.
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
