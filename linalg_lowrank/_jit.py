"""One decorator factory for the library's numba settings."""

import os
import warnings

import numba

# cache=True: compiled code is reused across processes (first call in a new process is cheap).
# fastmath=False by default: kernels feed error bounds. Reductions that must vectorize opt into
# REASSOC (reassociation and FMA contraction only; no finite-math or NaN assumptions).
# error_model="numpy": division by zero gives inf/nan like numpy instead of raising inside a kernel.
_DEFAULTS = dict(cache=True, fastmath=False, error_model="numpy", nogil=True)


class CacheUnavailableWarning(UserWarning):
    """numba found no writable directory for its cache: kernels are compiled anew in every process."""


#: None until the first kernel is decorated; then whether numba can cache kernels of this package.
#: numba decides per source file, and every kernel module lives in this one directory.
_CACHE_OK = [None]

_NO_CACHE_MESSAGE = (
    "linalg_lowrank: numba found no writable cache directory (neither {pkg}/__pycache__ nor the "
    "user cache directory under $HOME is writable), so compiled kernels are not cached and every "
    "new process compiles them again (tens of seconds on first use). Set NUMBA_CACHE_DIR to a "
    "writable directory to cache them."
)


def _njit(sigs, options, func):
    if options.get("cache") and _CACHE_OK[0] is False:
        options = {**options, "cache": False}
    try:
        dispatcher = numba.njit(*sigs, **options)(func)
    except RuntimeError as exc:
        # numba raises at decoration when none of its cache locators (NUMBA_CACHE_DIR, the
        # in-tree __pycache__, the user-wide cache directory) is writable: run uncached instead.
        if not options.get("cache") or "no locator available" not in str(exc):
            raise
        _CACHE_OK[0] = False
        pkg = os.path.dirname(os.path.abspath(__file__))
        warnings.warn(_NO_CACHE_MESSAGE.format(pkg=pkg), CacheUnavailableWarning, stacklevel=3)
        return numba.njit(*sigs, **{**options, "cache": False})(func)
    if options.get("cache"):
        _CACHE_OK[0] = True
    return dispatcher


def cache_enabled():
    """Whether kernels go to numba's on-disk cache (None until the first kernel is defined)."""
    return _CACHE_OK[0]


def jit(*args, parallel=False, **overrides):
    """``numba.njit`` with the library's defaults; ``parallel=True`` only where bench shows a gain.

    Where numba finds no writable cache directory, kernels are compiled without a cache (in
    every new process) and one `CacheUnavailableWarning` says how to fix it.
    """
    options = {**_DEFAULTS, "parallel": parallel, **overrides}
    if isinstance(options["fastmath"], frozenset):
        options["fastmath"] = set(options["fastmath"])
    if args and callable(args[0]):
        return _njit((), options, args[0])
    return lambda func: _njit(args, options, func)


#: The only fastmath flags the library uses, on reductions whose tests bound the rounding by n * eps.
REASSOC = frozenset({"reassoc", "contract"})
