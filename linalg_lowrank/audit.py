"""Spectral statistics of every matrix in a checkpoint: ``python -m linalg_lowrank audit [PATH]``.

Tensors are read one at a time and never the whole file, by the readers of
`linalg_lowrank._readers` (``.npy``, ``.npz``, ``.safetensors``) and `linalg_lowrank._torch_reader`
(PyTorch ``.pt``/``.pth``/``.bin``, without torch and without running pickle code), which treat
every file as hostile: a bad file is a `CheckpointError` (exit 2), never a hang or a crash.
Every 2-D floating tensor, every convolution kernel (viewed as one matrix, see `CONV_RULE`) and
every stack of matrices (matrices over the last two axes) gets its spectral norm from
`linalg_lowrank.power_iteration`, its Frobenius norm, stable rank, RMS and the estimate of
sigma2/sigma1; everything else is listed as skipped with a reason.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numpy as np

from . import _distributed, _validate, _warmup, config
from ._readers import (
    _REASON_EMPTY,
    _REASON_NOT_FLOAT,
    _REASON_NOT_MATRIX,
    _ST_DTYPES,
    CheckpointError,
    TensorItem,
    _open_checkpoint,
    parse_size,
    read_tensors,
)
from .results import ConvergenceWarning
from .spectral import power_iteration
from .spectrum import spectrum_statistics, top_singular_values

__all__ = [
    "AuditRecord",
    "AuditReport",
    "CheckpointError",
    "SkippedTensor",
    "TensorItem",
    "audit_checkpoint",
    "main",
    "read_tensors",
    "skipped_summary",
    "tensor_seed",
    "write_demo_checkpoint",
]

#: Default seed of an audit (each tensor starts from ``rng=tensor_seed(DEFAULT_SEED, name)``).
DEFAULT_SEED = 0
#: Seed of the built-in demo checkpoint's random matrices.
DEMO_SEED = 0
#: Keys accepted by ``--sort`` (numbers sort descending, names ascending): the `AuditRecord` field
#: names, which are also the table's column headers and the JSON keys.
SORT_KEYS = ("name", "spectral_norm", "frobenius_norm", "stable_rank", "rms", "ratio_estimate", "time_s")
#: Values of ``conv`` / ``--conv``: how tensors of three or more dimensions are viewed.
CONV_MODES = ("flatten", "stack")
#: What ``conv="flatten"`` (the default) does; ``conv="stack"`` treats every such tensor as a stack.
CONV_RULE = (
    "convolution kernels (out, in, *kernel) are audited as one out x (in*kernel) matrix: every 4-D and 5-D "
    "tensor (conv2d, conv3d), and a 3-D tensor whose name contains 'conv' (conv1d); other 3-D tensors are "
    "stacks of matrices over their last two axes"
)
#: Entries per chunk when the Frobenius norm is summed in float64 (8 MiB of scratch).
_CHUNK_ELEMENTS = 1 << 20

#: How a stack of matrices (ndim >= 3) is summarized in one row.
_STACK_RULE = "spectral_norm is the largest over the stack; the other fields describe that matrix"
_REASON_NONFINITE = "contains NaN or Inf"


@dataclass(frozen=True)
class AuditRecord:
    """Spectral statistics of one matrix, or of one stack of matrices, of a checkpoint.

    For a stack (``view == "stack"``, matrices over the last two axes) ``spectral_norm`` is the
    largest spectral norm in the stack and every other statistic describes the matrix that attains
    it (``stack_index``); ``converged`` holds only if every matrix of the stack converged. A
    convolution kernel (``view == "conv"``, shape ``(out, in, *kernel)``) is audited as the one
    ``out x (in * prod(kernel))`` matrix ``W.reshape(out, -1)`` (see `CONV_RULE`).

    Attributes
    ----------
    name : str
        Name of the tensor in the checkpoint.
    shape : tuple of int
        Its full shape, stack dimensions included.
    dtype : str
        Its stored dtype ("float32", "float16", "bfloat16", ...); float16 and bfloat16 are
        upcast to float32 for the computation.
    spectral_norm : float
        sigma1 = ||W||_2 (for a stack, the largest over the stack).
    frobenius_norm : float
        ||W||_F, summed in float64.
    stable_rank : float
        ||W||_F^2 / ||W||_2^2, between 1 and the rank; NaN for the zero matrix.
    rms : float
        ||W||_F / sqrt(m n), the root mean square entry.
    ratio_estimate : float
        Estimate of sigma2/sigma1, the ``ratio_estimate`` of `power_iteration` (NaN when the
        iteration ended before it could tell, for example on the zero matrix).
    converged : bool
        Whether `power_iteration` reached ``tol`` (for a stack: for every matrix).
    time_s : float
        Seconds spent on this tensor: reading, statistics and power iteration (numba compiling
        is done before the first tensor is timed and never counted here).
    stack_size : int
        Number of matrices: 1 for a plain matrix or a convolution kernel.
    stack_index : tuple of int or None
        Index over the stack dimensions of the matrix with the largest spectral norm; None for
        a plain matrix or a convolution kernel.
    view : str
        How the tensor was read as matrices: "matrix" (2-D), "stack" or "conv".
    spectrum : dict or None
        With ``spectrum=K`` (``--spectrum K``): the top ``min(K, m, n)`` singular values of the
        matrix above (``values``, ``error_bound``, ``lower_bound``, ``converged``) and the
        statistics of `linalg_lowrank.spectrum_statistics` (``effective_rank``,
        ``effective_rank_low``/``_high``, ``alpha``, ``alpha_xmin``, ``alpha_n_tail``,
        ``alpha_ks``); None otherwise.
    """

    name: str
    shape: tuple
    dtype: str
    spectral_norm: float
    frobenius_norm: float
    stable_rank: float
    rms: float
    ratio_estimate: float
    converged: bool
    time_s: float
    stack_size: int = 1
    stack_index: tuple | None = None
    view: str = "matrix"
    spectrum: dict | None = None

    @property
    def is_stack(self):
        """True for a stack of matrices."""
        return self.view == "stack"

    def to_dict(self):
        """The fields as JSON-ready Python values (lists for tuples, None for NaN)."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["stack_index"] = None if self.stack_index is None else list(self.stack_index)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        if out["spectrum"] is None:
            del out["spectrum"]
        else:
            out["spectrum"] = _json_ready(out["spectrum"])
        return out


def _json_ready(value):
    """Lists for arrays, None for NaN and Inf, recursively."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


@dataclass(frozen=True)
class SkippedTensor:
    """A tensor the audit did not compute with, and why.

    Attributes
    ----------
    name : str
        Name of the tensor in the checkpoint.
    shape : tuple of int
        Its shape.
    dtype : str
        Its stored dtype ("int64", "bool", "float32", ...).
    reason : str
        Why it was skipped: "not floating point", "not a matrix", "empty (a dimension is 0)",
        "contains NaN or Inf", "unsupported dtype ...", ...
    """

    name: str
    shape: tuple
    dtype: str
    reason: str

    def to_dict(self):
        """The fields as JSON-ready Python values."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "reason": self.reason}


class AuditReport(NamedTuple):
    """What `audit_checkpoint` returns: unpack as ``records, skipped = audit_checkpoint(path)``."""

    records: list
    """`AuditRecord` of every audited tensor, in file order."""
    skipped: list
    """`SkippedTensor` of every other tensor, in file order."""


# ----------------------------------------------------------------------------------------------
# The audit
# ----------------------------------------------------------------------------------------------


def _compute_dtype(dtype):
    if dtype.itemsize <= 4:
        return np.dtype(np.float32)  # float16 (and bfloat16, already float32) upcast
    return np.dtype(np.float64)


def _as_computable(arr):
    """The array as a native float32/float64 array; itself (no copy) whenever it already is one."""
    want = _compute_dtype(arr.dtype)
    if arr.dtype != want or not arr.flags.aligned:  # a big-endian dtype differs from the native one
        arr = np.asarray(arr, dtype=want)
    return arr


def _frobenius_norms(stack):
    """Frobenius norm of each matrix of a (b, m, n) stack, summed in float64 by chunks of rows.

    Returns None when an entry is NaN or Inf.
    """
    out = np.empty(stack.shape[0])
    for k in range(stack.shape[0]):
        M = stack[k]
        if not M.flags.c_contiguous and M.flags.f_contiguous:
            M = M.T  # walk the memory in order; the norm does not care
        rows = max(1, _CHUNK_ELEMENTS // M.shape[1])
        total = 0.0
        for i in range(0, M.shape[0], rows):
            chunk = np.ascontiguousarray(M[i : i + rows], dtype=np.float64).ravel()
            with np.errstate(all="ignore"):
                total += float(np.dot(chunk, chunk))
        if not math.isfinite(total):
            if not all(np.isfinite(M[i : i + rows]).all() for i in range(0, M.shape[0], rows)):
                return None
            total = _scaled_sumsq(M, rows)
        out[k] = math.sqrt(total)
    return out


def _scaled_sumsq(M, rows):
    """Sum of squares of huge finite entries: scale by the largest entry so squares do not overflow."""
    scale = max(float(np.abs(M[i : i + rows]).max()) for i in range(0, M.shape[0], rows))
    total = 0.0
    for i in range(0, M.shape[0], rows):
        chunk = np.asarray(M[i : i + rows], dtype=np.float64) / scale
        total += float(np.dot(chunk.ravel(), chunk.ravel()))
    return total * scale * scale  # may be inf: the norm then really exceeds float64


def _view(name, shape, conv):
    """How a tensor is read as matrices: "matrix", "conv" (one flattened matrix) or "stack"."""
    if len(shape) == 2:
        return "matrix"
    if conv == "stack":
        return "stack"
    # A 3-D tensor is as often a stack of expert/head matrices (E, m, n) as a conv1d kernel, and
    # no shape tells them apart (LoRA stacks (E, d, r) look like (out, in, k)); the layer's name does.
    if len(shape) in (4, 5) or (len(shape) == 3 and "conv" in name.lower()):
        return "conv"
    return "stack"


def _audit_array(name, arr, stored_dtype, *, seed, tol, maxiter, conv, spectrum=None):
    """AuditRecord of one loaded array, or a reason to skip it."""
    W = _as_computable(arr)
    shape = tuple(W.shape)
    view = _view(name, shape, conv)
    if view == "conv":
        W = W.reshape(shape[0], -1)  # (out, in * kernel): a view when the kernel is C-contiguous
    m, n = W.shape[-2:]
    stack = W.reshape((-1, m, n))  # a view for C-contiguous stacks and every 2-D array
    frob = _frobenius_norms(stack)
    if frob is None:
        return _REASON_NONFINITE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as converged=False instead
        try:
            res = power_iteration(W, rng=seed, tol=tol, maxiter=maxiter)
        except ValueError as exc:  # overflow of the products of a finite but enormous matrix
            return f"power iteration failed: {exc}"
    sigma = np.asarray(res.sigma, dtype=np.float64).reshape(-1)
    ratio = np.asarray(res.ratio_estimate, dtype=np.float64).reshape(-1)
    k = int(np.argmax(sigma))
    s, f = float(sigma[k]), float(frob[k])
    stable_rank = f * f / (s * s) if s > 0 else math.nan
    batch_shape = W.shape[:-2]
    index = tuple(int(i) for i in np.unravel_index(k, batch_shape)) if batch_shape else None
    top = None
    if spectrum is not None and s > 0:
        top = _spectrum_entry(stack[k], f, spectrum, seed)
        if isinstance(top, str):
            return top
    return AuditRecord(
        name=name,
        shape=shape,
        dtype=stored_dtype,
        spectral_norm=s,
        frobenius_norm=f,
        stable_rank=stable_rank,
        rms=f / math.sqrt(m * n),
        ratio_estimate=float(ratio[k]),
        converged=bool(np.all(res.converged)),
        time_s=0.0,
        stack_size=stack.shape[0],
        stack_index=index,
        view=view,
        spectrum=top,
    )


def _spectrum_entry(M, frob, K, seed):
    """The ``spectrum`` field of a record: top min(K, m, n) values and their statistics, or a skip reason."""
    k = min(K, *M.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as converged=False instead
        try:
            res = top_singular_values(M, k, rng=seed)
        except ValueError as exc:
            return f"top singular values failed: {exc}"
    stats = spectrum_statistics(res.values, frobenius_norm=frob, shape=M.shape).to_dict()
    return {
        "k": k,
        "values": res.values.tolist(),
        "error_bound": res.error_bound.tolist(),
        "lower_bound": res.lower_bound.tolist(),
        "converged": bool(res.converged),
        **stats,
    }


def tensor_seed(seed, name):
    """Seed of the power iteration of the tensor ``name`` in an audit run with ``seed``.

    It depends on the run's seed and the tensor's name only (SHA-256 of the UTF-8 name, mixed with
    the seed by `numpy.random.SeedSequence`), never on the tensor's position or on the order in
    which tensors complete: an audit in this process, on a dask cluster or resumed from
    ``--out`` gives every tensor the same start vector, hence the same numbers.

    Parameters
    ----------
    seed : int
        The run's seed (``--seed``), non-negative.
    name : str
        The tensor's name in its checkpoint.

    Returns
    -------
    seed : int
        A seed in [0, 2**63), passed as ``rng`` to `power_iteration`.

    Examples
    --------
    >>> from linalg_lowrank.audit import tensor_seed
    >>> tensor_seed(0, "layers.0.mlp.up.weight") == tensor_seed(0, "layers.0.mlp.up.weight")
    True
    >>> tensor_seed(0, "a") != tensor_seed(0, "b") and tensor_seed(0, "a") != tensor_seed(1, "a")
    True
    """
    digest = hashlib.sha256(str(name).encode("utf-8", errors="surrogatepass")).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    state = np.random.SeedSequence([int(seed), *words]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def _audit_entry(entry, *, seed, tol, maxiter, conv, spectrum=None):
    """`AuditRecord` or `SkippedTensor` of one header entry, read (``entry.load()``) and timed here.

    The one per-tensor computation of every way the audit runs (in this process, on dask workers).
    """
    start = time.perf_counter()
    result = entry.reason
    if result is None:
        result = _audit_array(
            entry.name,
            entry.load(),
            entry.dtype,
            seed=tensor_seed(seed, entry.name),
            tol=tol,
            maxiter=maxiter,
            conv=conv,
            spectrum=spectrum,
        )
    if isinstance(result, AuditRecord):
        return replace(result, time_s=time.perf_counter() - start)
    return SkippedTensor(entry.name, entry.shape, entry.dtype, result)


_warmed_up = set()  # compute dtypes (and "<dtype> spectrum") whose kernels this process has compiled or loaded


def _warm_up(stored_dtypes, *, spectrum=False):
    """Compile (or load) the numba kernels the tensors' compute dtypes need, before any tensor is timed.

    With ``spectrum``, also those of ``--spectrum`` (`top_singular_values`) for those dtypes.
    """
    dtypes = {_compute_dtype(_stored_itemsize(d)).name for d in stored_dtypes}
    wanted = dtypes - _warmed_up
    spectral = {d for d in dtypes if f"{d} spectrum" not in _warmed_up} if spectrum else set()
    if wanted:
        _warmup.warm_up(dtypes=sorted(wanted))  # says on stderr when it compiles
        _warmed_up.update(wanted)
    if spectral:
        _warmup.warm_up(dtypes=sorted(spectral), spectrum=True)
        _warmed_up.update(f"{d} spectrum" for d in spectral)


def _stored_itemsize(name):
    """A dtype of the stored name's size (bfloat16 has no numpy dtype; it is a 2-byte float)."""
    return np.dtype(np.float16) if name == "bfloat16" else np.dtype(name)


def audit_checkpoint(
    path,
    *,
    seed=DEFAULT_SEED,
    tol=config.POWER_TOL,
    maxiter=None,
    conv="flatten",
    progress=False,
    max_bytes=None,
    spectrum=None,
):
    """Spectral statistics of every matrix of a checkpoint, read one tensor at a time.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy``, ``.npz`` or ``.safetensors`` file, or a PyTorch checkpoint (``.pt``,
        ``.pth``, ``.bin``, ``.ckpt``; read without torch).
    seed : int, optional
        Seed of the run: each tensor's power iteration starts from the seed
        ``tensor_seed(seed, name)``, derived from this seed and the tensor's name, so a tensor's
        numbers do not depend on the rest of the file, on the order of the tensors, or on where
        the audit runs (in this process or on a dask cluster).
    tol : float, optional
        Relative residual tolerance of `power_iteration`.
    maxiter : int, optional
        Cap on Gram products per matrix, as in `power_iteration`.
    conv : {"flatten", "stack"}, optional
        How tensors of three or more dimensions are read. "flatten" (default): convolution
        kernels ``(out, in, *kernel)`` -- every 4-D and 5-D tensor, and a 3-D tensor whose name
        contains "conv" -- are audited as the one matrix ``W.reshape(out, -1)``; other 3-D
        tensors (and 6-D and up) are stacks of matrices over their last two axes. "stack": every
        tensor of three or more dimensions is a stack.
    progress : bool, optional
        Show a tqdm progress bar on stderr.
    max_bytes : int, optional
        Largest tensor (or zip member) read into memory, as in `read_tensors` (default
        `linalg_lowrank.config.AUDIT_MAX_BYTES`, 16 GiB); a larger one is a `CheckpointError`.
    spectrum : int, optional
        Also compute the top ``spectrum`` singular values of every matrix (of the matrix with
        the largest sigma1, for a stack) by `linalg_lowrank.top_singular_values` and their
        statistics (`linalg_lowrank.spectrum_statistics`): the records' ``spectrum`` field.

    Returns
    -------
    report : AuditReport
        ``(records, skipped)``: an `AuditRecord` per 2-D floating tensor, convolution kernel or
        stack of matrices,
        a `SkippedTensor` per other tensor (integer, boolean, 0-D/1-D, empty, NaN/Inf, ...),
        both in file order. float16 and bfloat16 are computed in float32.

    Raises
    ------
    CheckpointError
        If the file is missing, has an unknown extension or is truncated or malformed.
    TypeError
        If ``path`` is not a path, or ``seed``, ``tol`` or ``maxiter`` have the wrong type.
    ValueError
        If ``seed`` is negative, ``tol`` is not positive, ``maxiter`` is below 1 or ``conv`` is
        not "flatten" or "stack".

    See Also
    --------
    read_tensors : the tensors themselves, lazily.
    linalg_lowrank.power_iteration : the solver, with every diagnostic.

    Notes
    -----
    The stable rank :math:`\\|W\\|_F^2 / \\|W\\|_2^2` lies between 1 and the rank of W and is a
    robust count of the directions that carry the weight's energy; the RMS is
    :math:`\\|W\\|_F / \\sqrt{mn}`. A ``ratio_estimate`` near 1 means a small gap
    :math:`\\sigma_1 - \\sigma_2` (slow plain power iteration, a nearly non-unique top
    direction). Power iteration returns :math:`\\|W v\\|` for a unit v, a lower bound on
    :math:`\\sigma_1`, so the stable rank is an upper estimate, tight to the solver's tolerance.

    A convolution with kernel ``W`` of shape ``(out, in, k_1, ..., k_d)`` maps each input patch
    (``in * k_1 * ... * k_d`` numbers) to ``out`` channels by the matrix ``R = W.reshape(out, -1)``:
    the layer is :math:`Y = R X` with X the matrix of patches (im2col). With stride 1 every input
    entry appears in at most :math:`k = k_1 \\cdots k_d` patches, so
    :math:`\\|X\\|_F \\le \\sqrt{k} \\|x\\|` and the layer's operator norm is at most
    :math:`\\sqrt{k} \\|R\\|_2`; ``spectral_norm`` is :math:`\\|R\\|_2`, the per-patch gain in that
    bound and the usual view of a convolution's weight as a matrix. The layout is PyTorch's,
    output channels first; channels-last kernels (TensorFlow/Flax ``(*kernel, in, out)``) need
    ``conv="stack"`` (one ``in x out`` matrix per kernel tap).

    The numba kernels are compiled (or loaded from numba's cache) once per process before the
    first tensor is timed, with a message on stderr when they are compiled, so ``time_s`` never
    includes compile time.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from linalg_lowrank.audit import audit_checkpoint
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "ckpt.npz")
    ...     np.savez(path, w=np.diag([3.0, 2.0, 1.0]), b=np.zeros(3))
    ...     records, skipped = audit_checkpoint(path)
    >>> r = records[0]
    >>> r.name, round(r.spectral_norm, 12), round(r.stable_rank, 12), r.converged
    ('w', 3.0, 1.555555555556, True)
    >>> skipped[0].name, skipped[0].reason
    ('b', 'not a matrix')
    """
    seed = _validate.positive_int("seed", seed, minimum=0)
    tol = _validate.positive("tol", tol)
    maxiter = _validate.positive_int("maxiter", maxiter, default=None)
    conv = _validate.choice("conv", conv, CONV_MODES)
    spectrum = _validate.positive_int("spectrum", spectrum, default=None)
    records, skipped = [], []
    with _open_checkpoint(path, max_bytes) as entries:
        _warm_up({entry.dtype for entry in entries if entry.reason is None}, spectrum=spectrum is not None)
        bar = _progress_bar(len(entries), _escape(os.path.basename(os.fspath(path)))) if progress else None
        try:
            for entry in entries:
                if bar is not None:
                    bar.set_postfix_str(_escape(entry.name), refresh=False)
                result = _audit_entry(entry, seed=seed, tol=tol, maxiter=maxiter, conv=conv, spectrum=spectrum)
                (records if isinstance(result, AuditRecord) else skipped).append(result)
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:
                bar.close()
    return AuditReport(records, skipped)


def _progress_bar(total, desc):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", file=sys.stderr, leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------
# The demo checkpoint
# ----------------------------------------------------------------------------------------------


def _to_bf16_bits(x):
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def _write_safetensors(path, tensors, metadata=None):
    """Write ``{name: (dtype code, array)}`` as safetensors (array holds the raw little-endian values)."""
    itemsize = {code: np.dtype(np_dtype).itemsize for code, (np_dtype, _, _) in _ST_DTYPES.items()}
    # Largest items first keeps every tensor aligned to its item size, as the reference writer does.
    order = sorted(tensors, key=lambda name: (-itemsize[tensors[name][0]], name))
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name in order:
        code, arr = tensors[name]
        blob = np.ascontiguousarray(arr, dtype=np.dtype(_ST_DTYPES[code][0])).tobytes()
        header[name] = {"dtype": code, "shape": list(np.shape(arr)), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fp:
        fp.write(len(raw).to_bytes(8, "little"))
        fp.write(raw)
        for blob in blobs:
            fp.write(blob)


def _orthonormal(rng, n, k):
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def write_demo_checkpoint(path):
    """Write the small built-in demo checkpoint, deterministically, as a ``.safetensors`` file.

    It holds Gaussian matrices (float32, float64, float16 and bfloat16), one of rank 4, one with
    sigma2/sigma1 = 0.99, a stack of four "expert" matrices, a 1-D norm weight and integer and
    boolean tensors (to show skipping). ``python -m linalg_lowrank audit`` without a path audits it.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write it (overwritten).

    Returns
    -------
    path : str
        The same path.

    Examples
    --------
    >>> import os, tempfile
    >>> from linalg_lowrank.audit import audit_checkpoint, write_demo_checkpoint
    >>> with tempfile.TemporaryDirectory() as d:
    ...     records, skipped = audit_checkpoint(write_demo_checkpoint(os.path.join(d, "demo.safetensors")))
    >>> len(records), sorted(s.reason for s in skipped)
    (8, ['not a matrix', 'not floating point', 'not floating point'])
    >>> r = next(r for r in records if r.name == "layers.0.mlp.down.weight")
    >>> round(r.ratio_estimate, 6)
    0.99
    """
    path = os.fspath(path)
    rng = np.random.default_rng(DEMO_SEED)
    d, h = 64, 256

    def gaussian(m, n):
        return rng.standard_normal((m, n)) / math.sqrt(n)

    low_rank = _orthonormal(rng, h, 4) @ np.diag([4.0, 3.0, 2.0, 1.0]) @ _orthonormal(rng, d, 4).T
    s = np.concatenate([[1.0, 0.99], np.linspace(0.5, 0.01, d - 2)])
    near_degenerate = (_orthonormal(rng, d, d) * s) @ _orthonormal(rng, h, d).T
    tensors = {
        "embed.weight": ("F32", gaussian(512, d)),
        "layers.0.attn.qkv.weight": ("F32", gaussian(3 * d, d)),
        "layers.0.attn.out.weight": ("F64", gaussian(d, d)),
        "layers.0.mlp.up.weight": ("F32", low_rank),
        "layers.0.mlp.down.weight": ("F32", near_degenerate),
        "layers.0.norm.weight": ("F32", np.ones(d)),
        "layers.1.mlp.up.weight": ("F16", gaussian(h, d)),
        "layers.1.mlp.down.weight": ("BF16", _to_bf16_bits(gaussian(d, h))),
        "layers.1.experts.weight": ("F32", rng.standard_normal((4, d, 32)) / math.sqrt(32)),
        "position_ids": ("I64", np.arange(512)[None, :]),
        "attention_mask": ("BOOL", np.tril(np.ones((8, 8), dtype=bool))),
    }
    _write_safetensors(path, tensors, metadata={"format": "np", "source": "linalg_lowrank demo"})
    return path


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def _sort_records(records, key):
    if key == "name":
        return sorted(records, key=lambda r: r.name)

    def descending(r):
        value = getattr(r, key)
        return (math.isnan(value), -value if not math.isnan(value) else 0.0)

    return sorted(records, key=descending)


def _escape(text, *, backslash=True):
    """``text`` with every non-printable character (and the backslash) escaped as ``repr`` does.

    Names, dtypes and reasons come from the file: a newline, carriage return or ANSI escape in a
    tensor name must not start a forged row or repaint the terminal. ``backslash=False`` leaves
    backslashes alone, for text whose names are already ``repr``-quoted (error messages).
    """
    text = str(text)
    keep = "" if backslash else "\\"
    if text.isprintable() and ("\\" not in text or keep):
        return text
    return "".join(ch if (ch.isprintable() and ch != "\\") or ch in keep else repr(ch)[1:-1] for ch in text)


def _num(x, spec):
    return "-" if x is None or math.isnan(x) else format(x, spec)


def _shape_str(shape):
    return "x".join(str(d) for d in shape) if shape else "()"


def _table(rows, right):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


#: Columns of the table after name, shape and dtype: (header = record field, number format); the
#: headers are the `AuditRecord` fields, the JSON keys and (for numbers) the ``--sort`` keys.
_NUMBER_COLUMNS = (
    ("spectral_norm", ".6g"),
    ("frobenius_norm", ".6g"),
    ("stable_rank", ".4g"),
    ("rms", ".4g"),
    ("ratio_estimate", ".4f"),
)

#: Columns added by ``--spectrum K`` (keys of AuditRecord.spectrum).
_SPECTRUM_COLUMNS = (
    ("k", "d"),
    ("effective_rank", ".4g"),
    ("effective_rank_low", ".4g"),
    ("effective_rank_high", ".4g"),
    ("alpha", ".3f"),
    ("alpha_n_tail", "d"),
)
_SPECTRUM_NOTE = (
    "spectrum: effective_rank over the top k values; [low, high]: the interval the unknown tail allows; "
    "alpha: weightwatcher's power-law fit of the top k eigenvalues of W^T W (--json lists the values)"
)


def _view_cell(r):
    if r.view == "stack":
        where = ",".join(str(i) for i in r.stack_index)
        return f"stack: max of {r.stack_size} at [{where}]"
    if r.view == "conv":
        return f"conv: {r.shape[0]}x{math.prod(r.shape[1:])}"
    return ""


# (singular, plural) of the kind of a skipped tensor, by reason; other reasons are counted as they are.
_SKIP_KINDS = {
    _REASON_NONFINITE: ("tensor with NaN or Inf", "tensors with NaN or Inf"),
    _REASON_EMPTY: ("empty tensor", "empty tensors"),
}


def _skip_kind(s):
    if s.reason == _REASON_NOT_MATRIX:
        return ("scalar", "scalars") if len(s.shape) == 0 else ("vector", "vectors")
    if s.reason == _REASON_NOT_FLOAT:
        return ("boolean tensor", "boolean tensors") if s.dtype == "bool" else ("integer tensor", "integer tensors")
    return _SKIP_KINDS.get(s.reason) or (f"tensor ({s.reason})", f"tensors ({s.reason})")


def skipped_summary(skipped):
    """The skipped tensors counted by kind in one line: ``"63 vectors, 1 integer tensor skipped"``.

    Parameters
    ----------
    skipped : list of SkippedTensor
        As returned by `audit_checkpoint`.

    Returns
    -------
    text : str
        Kinds by decreasing count (ties in file order), with non-printable characters of reasons
        escaped; ``"nothing skipped"`` for an empty list.

    Examples
    --------
    >>> from linalg_lowrank.audit import SkippedTensor, skipped_summary
    >>> skipped_summary([SkippedTensor("b", (4,), "float32", "not a matrix"),
    ...                  SkippedTensor("step", (), "int64", "not floating point"),
    ...                  SkippedTensor("g", (8,), "float32", "not a matrix")])
    '2 vectors, 1 integer tensor skipped'
    """
    if not skipped:
        return "nothing skipped"
    counts = {}
    for s in skipped:
        kind = _skip_kind(s)
        counts[kind] = counts.get(kind, 0) + 1
    order = sorted(counts, key=lambda kind: -counts[kind])  # stable: ties keep file order
    parts = [f"{counts[k]} {k[0] if counts[k] == 1 else k[1]}" for k in order]
    return _escape(", ".join(parts) + " skipped")


def format_report(records, skipped, *, title=None, show_skipped=False):
    """The audit as a plain aligned text table, then the skipped tensors in one line or listed.

    Parameters
    ----------
    records : list of AuditRecord
        Rows of the table, in the order given.
    skipped : list of SkippedTensor
        Counted by kind in one line after the table (see `skipped_summary`), or listed.
    title : str, optional
        A first line.
    show_skipped : bool, optional
        List every skipped tensor with its shape, dtype and reason instead of the one-line count.

    Returns
    -------
    text : str
        The table, without a trailing newline. NaN shows as ``-``. Names, dtypes, reasons and
        the title are printed with non-printable characters escaped (``\\n``, ``\\x1b``, ...),
        so no name in a file can forge a row.
    """
    lines = [_escape(title)] if title else []
    if records:
        has_view = any(r.view != "matrix" for r in records)
        head = ["name", "shape", "dtype"] + [field for field, _ in _NUMBER_COLUMNS] + ["converged", "time_s"]
        if has_view:
            head.append("view")
        rows = [head]
        for r in records:
            row = [_escape(r.name), _shape_str(r.shape), _escape(r.dtype)]
            row += [_num(getattr(r, field), spec) for field, spec in _NUMBER_COLUMNS]
            row += ["yes" if r.converged else "NO", f"{r.time_s:.3f}"]
            if has_view:
                row.append(_view_cell(r))
            rows.append(row)
        n_right = len(_NUMBER_COLUMNS) + 2
        right = [False] * 3 + [True] * n_right + [False] * (len(head) - 3 - n_right)
        if any(r.spectrum is not None for r in records):
            rows[0] += [name for name, _ in _SPECTRUM_COLUMNS]
            right += [True] * len(_SPECTRUM_COLUMNS)
            for r, row in zip(records, rows[1:], strict=True):
                row += [_num((r.spectrum or {}).get(key, math.nan), spec) for key, spec in _SPECTRUM_COLUMNS]
        lines += _table(rows, right)
        if any(r.view == "stack" for r in records):
            lines.append(f"stack: {_STACK_RULE}")
        if any(r.view == "conv" for r in records):
            lines.append("conv: kernel (out, in, *kernel) audited as one out x (in*kernel) matrix")
        if any(r.spectrum is not None for r in records):
            lines.append(_SPECTRUM_NOTE)
    else:
        lines.append("no matrices to audit")
    if skipped and show_skipped:
        lines.append("")
        lines.append(skipped_summary(skipped) + ":")
        rows = [[_escape(s.name), _shape_str(s.shape), _escape(s.dtype), _escape(s.reason)] for s in skipped]
        lines += ["  " + line for line in _table(rows, [False] * 4)]
    elif skipped:
        lines.append("")
        lines.append(skipped_summary(skipped) + "; --show-skipped lists them")
    return "\n".join(lines)


def _json_document(path, records, skipped, *, seed, tol, maxiter, conv, sort, top_k):
    from .report import matrix_entry  # layer and role: the names the report's figures use

    return {
        "path": path,
        "seed": seed,
        "tol": tol,
        "maxiter": maxiter,
        "conv": conv,
        "sort": sort,
        "top_k": top_k,
        "stack_rule": _STACK_RULE,
        "conv_rule": CONV_RULE if conv == "flatten" else "every tensor of 3 or more dimensions is a stack",
        "records": [matrix_entry(r.to_dict()) for r in records],
        "skipped": [s.to_dict() for s in skipped],
    }


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

#: One-line help of the ``audit`` command (``python -m linalg_lowrank --help``).
COMMAND_HELP = "spectral statistics of every matrix in a checkpoint"
COMMAND_DESCRIPTION = (
    "Report, for every 2-D floating tensor, convolution kernel and stack of matrices of a .npz, .npy, "
    ".safetensors or PyTorch (.pt, .pth, .bin, .ckpt) checkpoint: shape, dtype, spectral_norm, "
    "frobenius_norm, stable_rank ||W||_F^2/||W||_2^2, rms, ratio_estimate (of sigma2/sigma1), whether power "
    "iteration converged and time_s (seconds, numba compiling excluded). The column names are the JSON keys "
    "and the --sort keys. Tensors are read one at a time, each checked against the file and --max-bytes "
    "first. With --conv flatten (the default) convolution kernels (out, in, *kernel), in PyTorch's "
    "channels-first layout, are one out x (in*kernel) matrix: every 4-D and 5-D tensor, and 3-D tensors "
    "whose name contains 'conv'; other tensors of 3 or more dimensions are stacks of matrices over their "
    "last two axes, whose spectral norm is the largest over the stack (the other columns describe that "
    "matrix). Integer, boolean, 0-D and 1-D tensors are skipped and counted in one line (--show-skipped "
    "lists them). Names are printed with non-printable characters escaped. PATH may also be a directory, a "
    "sharded checkpoint's model.safetensors.index.json, an fsspec URL, or several of these. Without PATH a small "
    "built-in demo checkpoint is audited. Exit status: 0 on success, 2 for a missing, truncated or malformed file "
    "or bad options."
)


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _byte_count(text):
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser):
    """Add the ``audit`` command's arguments to an argparse parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser (or subparser) of the ``audit`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        The same parser.
    """
    parser.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="checkpoint file (.npz, .npy, .safetensors, .pt, .pth, .bin or .ckpt), directory (its checkpoint "
        "files, sorted, or the Hugging Face index it holds) or sharded checkpoint index "
        "(model.safetensors.index.json); default: built-in demo. With --series: the checkpoints of one run",
    )
    parser.add_argument(
        "more_paths", nargs="*", metavar="PATH", help="more files, directories or indexes, audited in the order given"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON document (records and skipped) to stdout")
    parser.add_argument(
        "--sort",
        choices=SORT_KEYS,
        default=None,
        help="order of the rows: numbers descending (largest first), names ascending; "
        "default: file order, or spectral_norm when --top-k is given",
    )
    parser.add_argument(
        "--top-k", type=_int_at_least(1), default=None, metavar="K", help="show only the first K rows after sorting"
    )
    parser.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=DEFAULT_SEED,
        help=f"seed of the power iterations' start vectors (default {DEFAULT_SEED})",
    )
    parser.add_argument(
        "--tol",
        type=_positive_float,
        default=config.POWER_TOL,
        help=f"relative residual tolerance of power iteration (default {config.POWER_TOL:g})",
    )
    parser.add_argument(
        "--maxiter",
        type=_int_at_least(1),
        default=None,
        help="cap on power/Lanczos iterations per matrix (default max(1000, 10 min(m, n)))",
    )
    parser.add_argument(
        "--conv",
        choices=CONV_MODES,
        default="flatten",
        help="flatten (default): a convolution kernel (out, in, *kernel) -- any 4-D or 5-D tensor, and a 3-D "
        "tensor whose name contains 'conv' -- is one out x (in*kernel) matrix; other 3-D tensors are stacks. "
        "stack: every tensor of 3 or more dimensions is a stack of matrices over its last two axes",
    )
    parser.add_argument(
        "--show-skipped",
        action="store_true",
        help="list every skipped tensor with its shape, dtype and reason (default: one line counting them)",
    )
    parser.add_argument(
        "--report",
        metavar="HTML",
        default=None,
        help="also write a self-contained HTML report (needs matplotlib) with the JSON document's numbers and names: "
        "per-layer figures by role and the table of the rows shown; with --spectrum the top singular values of the "
        "largest matrix of each role; with --against the changes against depth; with --series the trajectories",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown only when stderr is a TTY)")
    parser.add_argument(
        "--max-bytes",
        type=_byte_count,
        default=None,
        metavar="N",
        help="largest tensor or zip member read into memory, also the bound on decompression "
        f"(bytes, or with K/M/G/T: 512M, 16G; default {config.AUDIT_MAX_BYTES >> 30}G)",
    )
    parser.add_argument(
        "--spectrum",
        type=_int_at_least(1),
        default=None,
        metavar="K",
        help="also the top K singular values of every matrix (JSON) with effective rank, its interval and "
        "weightwatcher's alpha (table columns)",
    )
    parser.add_argument(
        "--against",
        default=None,
        metavar="OLD",
        help="compare PATH with the checkpoint OLD: per matrix in both, sigma1 of each, relative change, "
        "||W_new - W_old||_2 (from products, the difference is never formed), its ratio to sigma1 and the "
        "cosines of the top singular vectors; missing, added and reshaped tensors are listed",
    )
    parser.add_argument(
        "--series",
        action="store_true",
        help="the PATHs (checkpoint files, or a directory of them in natural order) are the checkpoints of one "
        "run: a table of trajectories per matrix (JSON: per matrix, the lists over checkpoints); streams to --out "
        "and resumes with --resume like a single audit",
    )
    results = parser.add_argument_group("results file")
    results.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="append one JSON line per tensor to FILE as it completes (flushed and fsynced); FILE must be new or "
        "empty unless --resume is given",
    )
    results.add_argument(
        "--resume",
        action="store_true",
        help="with --out: keep the tensors FILE already records (by file, name, shape, dtype and byte offsets) "
        "and audit the rest; a last line cut short by a kill is dropped",
    )
    cluster = parser.add_argument_group(
        "dask cluster (pip install 'linalg_lowrank[dask]')"
    ).add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="audit on a dask LocalCluster of N worker processes on this machine (127.0.0.1), one task per tensor",
    )
    cluster.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="audit on the existing dask cluster at ADDRESS (tcp://host:8786, tls://...); workers read the files "
        "themselves, so the paths must be the same on them. TLS and other settings come from dask's configuration",
    )
    cluster.add_argument(
        "--scheduler-file",
        default=None,
        metavar="PATH",
        help="as --scheduler, with the address from a scheduler file (dask scheduler --scheduler-file PATH)",
    )
    return parser


def _error(message):
    print(f"linalg_lowrank audit: error: {_escape(message, backslash=False)}", file=sys.stderr)
    return 2


def run(args):
    """Run the ``audit`` command on parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by a parser set up with `add_arguments`.

    Returns
    -------
    status : int
        0 on success, 2 (with one line on stderr naming the file and the problem) for a
        missing, truncated or malformed checkpoint.
    """
    more_paths = getattr(args, "more_paths", None) or []
    paths = ([] if args.path is None else [args.path]) + list(more_paths)
    spectrum = getattr(args, "spectrum", None)
    out, resume = getattr(args, "out", None), getattr(args, "resume", False)
    cluster = {key: getattr(args, key, None) for key in ("workers", "scheduler", "scheduler_file")}
    if getattr(args, "against", None) is not None or getattr(args, "series", False):
        if not paths:
            return _error("--against and --series need PATH")
        streamed = out is not None or any(v is not None for v in cluster.values())
        if streamed and getattr(args, "against", None) is not None:
            return _error("--against runs in this process: no --out, --workers or --scheduler yet")
        if streamed and spectrum is not None:
            return _error("--series with --spectrum runs in this process: no --out, --workers or --scheduler yet")
        if resume and out is None:
            return _error("--resume needs --out FILE (the results file to continue)")
        from . import _audit_compare

        return _audit_compare.run(args, paths)
    sort = args.sort or ("spectral_norm" if args.top_k is not None else None)
    progress = not args.no_progress and sys.stderr.isatty()
    if resume and out is None:
        return _error("--resume needs --out FILE (the results file to continue)")
    try:
        with contextlib.ExitStack() as stack:
            if args.path is None:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="linalg_lowrank_demo_"))
                path = write_demo_checkpoint(os.path.join(tmp, "demo.safetensors"))
                label = "built-in demo checkpoint"
            else:
                path = label = args.path
            if (
                more_paths
                or out is not None
                or any(v is not None for v in cluster.values())
                or _distributed.is_many(path)
            ):
                if spectrum is not None:
                    return _error(
                        "--spectrum runs in this process on one file: no several inputs, --out or cluster yet"
                    )
                if more_paths:
                    label = f"{len(more_paths) + 1} inputs"
                records, skipped, summary = _distributed.audit_command(
                    [path, *more_paths],
                    seed=args.seed,
                    tol=args.tol,
                    maxiter=args.maxiter,
                    conv=args.conv,
                    max_bytes=args.max_bytes,
                    out=out,
                    resume=resume,
                    progress=progress,
                    **cluster,
                )
                print(summary, file=sys.stderr)
            else:
                records, skipped = audit_checkpoint(
                    path,
                    seed=args.seed,
                    tol=args.tol,
                    maxiter=args.maxiter,
                    conv=args.conv,
                    progress=progress,
                    max_bytes=args.max_bytes,
                    spectrum=spectrum,
                )
    except CheckpointError as exc:
        return _error(exc)
    except _distributed.ClusterError as exc:
        _error(f"dask cluster: {exc}")
        return 1
    except KeyboardInterrupt:
        return _error("interrupted")
    if sort is not None:
        records = _sort_records(records, sort)
    if args.top_k is not None:
        records = records[: args.top_k]
    if args.json or args.report:
        doc = _json_document(
            label,
            records,
            skipped,
            seed=args.seed,
            tol=args.tol,
            maxiter=args.maxiter,
            conv=args.conv,
            sort=sort,
            top_k=args.top_k,
        )
    if args.report:
        from .report import write_report  # matplotlib is imported only for a report

        try:
            write_report(doc, args.report)
        except (ImportError, OSError) as exc:
            return _error(f"--report {args.report!r}: {exc}")
    if args.json:
        text = json.dumps(doc, indent=2, allow_nan=False)
    else:
        title = f"# {label}: {len(records)} matri{'x' if len(records) == 1 else 'ces'}"
        if args.top_k is not None or sort is not None:
            title += f" (sorted by {sort}{'' if args.top_k is None else f', top {args.top_k}'})"
        text = format_report(records, skipped, title=title, show_skipped=args.show_skipped)
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader is gone, which is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def main(argv=None):
    """Entry point of ``python -m linalg_lowrank audit``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``audit`` (default ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success; 2 for a missing, truncated or malformed checkpoint (one line on stderr
        naming the file and the problem) or bad options.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from linalg_lowrank.audit import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "w.npy")
    ...     np.save(path, np.diag([2.0, 1.0]))
    ...     status = main([path, "--no-progress"])  # doctest: +ELLIPSIS
    # ...w.npy: 1 matrix
    name  shape  dtype    spectral_norm  frobenius_norm  stable_rank    rms  ratio_estimate  converged  time_s
    w     2x2    float64              2         2.23607         1.25  1.118          0.5000        yes  ...
    >>> status
    0
    """
    parser = argparse.ArgumentParser(prog="python -m linalg_lowrank audit", description=COMMAND_DESCRIPTION)
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): argparse already printed it
        return exc.code if isinstance(exc.code, int) else 2
    return run(args)
