"""The library's thread policy, in one place: BLAS and numba's pool never take turns on the cores,
and small problems stay on the calling thread.

- `blas_single_thread`: BLAS on one thread around the small dense algebra between numba kernels
  (on a 2-core machine an OpenBLAS pool that spins after a call stalls the next numba kernel for
  milliseconds) and around tall-skinny factorizations that a second thread does not speed up.
- `numba_threads_for`: a ``parallel=True`` kernel on fewer than ``config.PARALLEL_MIN_ENTRIES``
  entries runs on the calling thread only; waking the pool costs more than the work (measured on
  a 64 x 65 matrix: 0.2 ms on one thread, 30-50 ms with the pool on a loaded 2-core machine).
- `single_threaded`: both, for callers whose every problem is small (the lab's training loop).
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
