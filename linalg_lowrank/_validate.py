"""Input checks, dtype policy and rng handling: the one place public functions validate in.

Errors name the argument in backticks and say what was expected and what came, as scipy's
``_iv()`` helpers do.
"""

import numbers
import operator

import numpy as np

#: Floating dtypes the library computes with; everything else is rejected or upcast by the caller.
SUPPORTED_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return repr(value)


def float_dtype(name, dtype):
    """Raise TypeError unless ``dtype`` is float32 or float64: the one dtype policy.

    Arrays, nested lists, sparse matrices, operators and dask arrays all follow it: float32 stays
    float32, float64 stays float64, and nothing is converted behind the caller's back (integer,
    boolean, float16, long double, complex and object data raise, naming the argument).
    """
    dtype = np.dtype(dtype)
    if dtype in SUPPORTED_FLOATS:
        return dtype
    if dtype.kind == "c":
        what = "complex input is not supported (split into real and imaginary parts)"
    elif dtype.kind in "iub":
        what = (
            "integer or boolean input is not supported, as an array or as a list "
            "(cast with .astype(np.float64), or write the entries as floats)"
        )
    elif dtype.kind == "f":
        what = "only float32 and float64 are computed with (cast with .astype(np.float32))"
    else:
        what = "expected a float32 or float64 array"
    raise TypeError(f"`{name}` has dtype {dtype}: {what}")


def as_ndarray(name, A):
    """``np.asarray(A)`` for array-likes and nested sequences, a ragged sequence named as such."""
    try:
        return np.asarray(A)
    except ValueError as exc:
        if "inhomogeneous" not in str(exc):
            raise
        raise ValueError(
            f"`{name}` must be a rectangular array; got a ragged nested sequence (rows of different lengths)"
        ) from None


def float_array(name, A, *, min_ndim=2, max_ndim=None, check_finite=True):
    """Return ``A`` as a float32/float64 ndarray without copying, or raise.

    Views, Fortran order and ``numpy.memmap`` pass through untouched (no copy). Integer and
    boolean input is refused alike whether it comes as an array or a nested list (`float_dtype`).
    Checks: dtype, ndim, no zero-size dimension and, with ``check_finite``, no NaN/Inf.
    """
    if isinstance(A, np.ndarray):
        arr = A
    else:
        if hasattr(A, "__dlpack__") and not hasattr(A, "__array__"):
            arr = np.from_dlpack(A)
        elif not hasattr(A, "__array__") and not isinstance(A, (list, tuple)):
            raise TypeError(f"`{name}` must be an array, got {type(A).__name__}")
        else:
            arr = as_ndarray(name, A)
    float_dtype(name, arr.dtype)
    if arr.ndim < min_ndim or (max_ndim is not None and arr.ndim > max_ndim):
        if max_ndim == min_ndim:
            want = f"{min_ndim}-D"
        elif max_ndim is None:
            want = f"at least {min_ndim}-D"
        else:
            want = f"{min_ndim}-D to {max_ndim}-D"
        raise ValueError(f"`{name}` must be {want}, got {arr.ndim}-D with shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"`{name}` must not be empty, got shape {arr.shape}")
    if check_finite:
        finite(name, arr)
    return arr


def finite(name, arr):
    """Raise ValueError if ``arr`` holds NaN or Inf, naming where the first one is."""
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(f"`{name}` must be finite, got {arr[where]} at index {where if len(where) > 1 else where[0]}")
    return arr


def square(name, arr):
    """Raise ValueError unless the last two dimensions of ``arr`` are equal."""
    if arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"`{name}` must be square, got shape {arr.shape}")
    return arr


def positive(name, value, *, allow_none=False):
    """Return ``value`` as a positive finite float, or raise."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a positive finite float, got {_describe(value)}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite float, got {value}")
    return value


def nonnegative(name, value):
    """Return ``value`` as a non-negative finite float, or raise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a non-negative finite float, got {_describe(value)}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative finite float, got {value}")
    return value


_REQUIRED = object()


def positive_int(name, value, *, default=_REQUIRED, minimum=1):
    """Return ``value`` as an int >= ``minimum`` (``default`` when None, if one is given), or raise."""
    if value is None:
        if default is _REQUIRED:
            raise TypeError(f"`{name}` must be an integer >= {minimum}, got None")
        return default
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an integer >= {minimum}, got {_describe(value)}") from None
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value}")
    return value


def choice(name, value, options):
    """Raise ValueError unless ``value`` is one of ``options``."""
    if value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"`{name}` must be one of {listed}, got {value!r}")
    return value


def rng(value):
    """Normalize ``rng`` (None, int seed or Generator) and draw the seed that reproduces the run.

    Returns ``(generator, seed)``: ``numpy.random.default_rng(seed)`` replays exactly the same
    random numbers, so a result can report the seed it was computed from. The global numpy
    random state is never touched.
    """
    if isinstance(value, np.random.Generator):
        seed = int(value.integers(0, 2**63 - 1))
    elif value is None:
        seed = int(np.random.default_rng().integers(0, 2**63 - 1))
    elif isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"`rng` must be a non-negative integer seed, got {value}")
        seed = int(value)
    else:
        raise TypeError(f"`rng` must be None, an integer seed or a numpy.random.Generator, got {type(value).__name__}")
    return np.random.default_rng(seed), seed
