"""One decorator factory for the library's numba settings."""

import numba

# cache=True: compiled code is reused across processes (first call in a new process is cheap).
# fastmath=False by default: kernels feed error bounds. Reductions that must vectorize opt into
# REASSOC (reassociation and FMA contraction only; no finite-math or NaN assumptions).
# error_model="numpy": division by zero gives inf/nan like numpy instead of raising inside a kernel.
_DEFAULTS = dict(cache=True, fastmath=False, error_model="numpy", nogil=True)


def jit(*args, parallel=False, **overrides):
    """``numba.njit`` with the library's defaults; ``parallel=True`` only where bench shows a gain."""
    options = {**_DEFAULTS, "parallel": parallel, **overrides}
    if isinstance(options["fastmath"], frozenset):
        options["fastmath"] = set(options["fastmath"])
    if args and callable(args[0]):
        return numba.njit(**options)(args[0])
    return numba.njit(*args, **options)


#: The only fastmath flags the library uses, on reductions whose tests bound the rounding by n * eps.
REASSOC = frozenset({"reassoc", "contract"})
