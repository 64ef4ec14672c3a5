"""The audit across checkpoints: ``audit NEW --against OLD`` and ``audit DIR --series``.

A comparison holds two tensors at a time (the same name in both files) and computes the update's
spectral norm from products with each, never forming W_new - W_old; a series audits the
checkpoints one after the other and keeps only the records.
"""

import contextlib
import json
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from . import _validate
from ._readers import _EXTENSIONS, CheckpointError, _open_checkpoint
from .results import ConvergenceWarning
from .spectral import power_iteration
from .spectrum import difference_norm


@dataclass(frozen=True)
class MatrixChange:
    """How one matrix changed between two checkpoints.

    For a stack, the fields describe the matrix of the stack whose update has the largest
    spectral norm (``stack_index``).

    Attributes
    ----------
    name : str
    shape : tuple of int
    spectral_norm_old, spectral_norm_new : float
        sigma1 of the old and the new matrix.
    relative_change : float
        ``(spectral_norm_new - spectral_norm_old) / spectral_norm_old`` (NaN when the old is 0).
    update_norm : float
        ``||W_new - W_old||_2``, from products with both matrices.
    update_ratio : float
        ``update_norm / spectral_norm_old``.
    cos_u, cos_v : float
        ``|u_new . u_old|`` and ``|v_new . v_old|`` for the top singular vectors (1: the top
        direction kept; NaN for a zero matrix).
    converged : bool
        Whether the three power iterations met ``tol``.
    stack_index : tuple of int or None
    """

    name: str
    shape: tuple
    spectral_norm_old: float
    spectral_norm_new: float
    relative_change: float
    update_norm: float
    update_ratio: float
    cos_u: float
    cos_v: float
    converged: bool
    stack_index: tuple | None = None

    def to_dict(self):
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["stack_index"] = None if self.stack_index is None else list(self.stack_index)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


@dataclass(frozen=True)
class Comparison:
    """What `compare_checkpoints` returns."""

    changes: list
    """`MatrixChange` of every matrix in both files with the same shape, in the new file's order."""
    shape_changed: list
    """``(name, old_shape, new_shape)`` of matrices whose shape differs."""
    missing: list
    """Names in the old file only."""
    added: list
    """Names in the new file only."""
    skipped: list
    """``(name, reason)`` of tensors in both files that are not floating matrices in one of them."""


def _matrices(name, arr, conv):
    from .audit import _as_computable, _view  # the single audit's reading rules

    W = _as_computable(arr)
    view = _view(name, tuple(W.shape), conv)
    if view == "conv":
        W = W.reshape(W.shape[0], -1)
    return W.reshape((-1,) + W.shape[-2:]), W.shape[:-2]


def _compare_pair(name, shape, new, old, *, seed, tol, maxiter, conv):
    Wn, batch = _matrices(name, new, conv)
    Wo, _ = _matrices(name, old, conv)
    if not (np.isfinite(Wn).all() and np.isfinite(Wo).all()):
        return "contains NaN or Inf"
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(Wn.shape[0]):
            rn = power_iteration(Wn[i], rng=seed, tol=tol, maxiter=maxiter)
            ro = power_iteration(Wo[i], rng=seed, tol=tol, maxiter=maxiter)
            rd = difference_norm(Wn[i], Wo[i], rng=seed, tol=tol, maxiter=maxiter)
            sn, so, d = float(rn.sigma), float(ro.sigma), float(rd.sigma)
            if best is not None and d <= best.update_norm:
                continue
            with np.errstate(all="ignore"):
                cos_u = abs(float(np.dot(rn.u.astype(np.float64), ro.u.astype(np.float64))))
                cos_v = abs(float(np.dot(rn.v.astype(np.float64), ro.v.astype(np.float64))))
            best = MatrixChange(
                name=name,
                shape=shape,
                spectral_norm_old=so,
                spectral_norm_new=sn,
                relative_change=(sn - so) / so if so > 0 else math.nan,
                update_norm=d,
                update_ratio=d / so if so > 0 else math.nan,
                cos_u=cos_u if sn > 0 and so > 0 else math.nan,
                cos_v=cos_v if sn > 0 and so > 0 else math.nan,
                converged=bool(rn.converged and ro.converged and rd.converged),
                stack_index=tuple(int(j) for j in np.unravel_index(i, batch)) if batch else None,
            )
    return best


def compare_checkpoints(new_path, old_path, *, seed=0, tol=None, maxiter=None, conv="flatten", max_bytes=None):
    """Compare every matrix present in two checkpoints, matched by name, two tensors in memory at a time.

    Parameters
    ----------
    new_path, old_path : str or os.PathLike
        Checkpoints, as for `audit_checkpoint`.
    seed, tol, maxiter, conv, max_bytes
        As for `audit_checkpoint`.

    Returns
    -------
    comparison : Comparison

    Raises
    ------
    CheckpointError
        If a file is missing, truncated or malformed.
    """
    from . import config

    seed = _validate.positive_int("seed", seed, minimum=0)
    tol = config.POWER_TOL if tol is None else _validate.positive("tol", tol)
    changes, shape_changed, skipped = [], [], []
    with _open_checkpoint(old_path, max_bytes) as old_entries, _open_checkpoint(new_path, max_bytes) as new_entries:
        old_by_name = {e.name: e for e in old_entries}
        new_names = {e.name for e in new_entries}
        missing = [e.name for e in old_entries if e.name not in new_names]
        added = [e.name for e in new_entries if e.name not in old_by_name]
        for entry in new_entries:
            old = old_by_name.get(entry.name)
            if old is None:
                continue
            if entry.reason is not None or old.reason is not None:
                skipped.append((entry.name, entry.reason or old.reason))
                continue
            if tuple(entry.shape) != tuple(old.shape):
                shape_changed.append((entry.name, tuple(old.shape), tuple(entry.shape)))
                continue
            result = _compare_pair(
                entry.name, tuple(entry.shape), entry.load(), old.load(), seed=seed, tol=tol, maxiter=maxiter, conv=conv
            )
            if isinstance(result, str):
                skipped.append((entry.name, result))
            else:
                changes.append(result)
    return Comparison(changes, shape_changed, missing, added, skipped)


def _natural_key(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def series_paths(paths):
    """The checkpoints of a run in order: a directory gives its checkpoint files in natural order (step_2 < step_10)."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            names = [n for n in os.listdir(path) if os.path.splitext(n)[1].lower() in _EXTENSIONS]
            out += [os.path.join(path, n) for n in sorted(names, key=_natural_key)]
        else:
            out.append(path)
    if not out:
        raise CheckpointError(f"{', '.join(map(str, paths))}: no checkpoint files")
    return out


#: Fields of a record followed along a series (the spectrum statistics come with --spectrum).
SERIES_FIELDS = ("spectral_norm", "stable_rank", "frobenius_norm")
SERIES_SPECTRUM_FIELDS = ("effective_rank", "alpha")


def audit_series(paths, *, out=None, resume=False, cluster=None, progress=False, **audit_kwargs):
    """Audit every checkpoint of a run in order: ``(labels, trajectories)``.

    ``trajectories[name][field]`` is the list over checkpoints (None where the matrix is absent
    or the value undefined) for the fields `SERIES_FIELDS` (and `SERIES_SPECTRUM_FIELDS` with
    ``spectrum=K``).

    With ``out`` (a results file) or ``cluster`` (the ``workers``/``scheduler``/``scheduler_file``
    options) the checkpoints go through the single audit's streaming path (`_distributed`): one
    results file for the whole run, a record per tensor appended as it completes, ``resume``
    skipping the tensors already recorded (keyed by file, so each checkpoint's are its own).
    """
    paths = series_paths(paths)
    fields = SERIES_FIELDS + (SERIES_SPECTRUM_FIELDS if audit_kwargs.get("spectrum") else ())
    streamed = out is not None or any(v is not None for v in (cluster or {}).values())
    trajectories = {}
    for t, records in enumerate(_series_records(paths, streamed, out, resume, cluster or {}, progress, audit_kwargs)):
        for r in records:
            row = trajectories.setdefault(r.name, {f: [None] * len(paths) for f in fields})
            for f in fields:
                value = getattr(r, f) if f in SERIES_FIELDS else (r.spectrum or {}).get(f)
                row[f][t] = None if value is None or not math.isfinite(value) else float(value)
    return [os.fspath(p) for p in paths], trajectories


def _series_records(paths, streamed, out, resume, cluster, progress, audit_kwargs):
    """The records of each checkpoint in order: in this process, or through one results store and cluster."""
    from .audit import SkippedTensor, audit_checkpoint

    if not streamed:
        for path in paths:
            yield audit_checkpoint(path, **audit_kwargs).records
        return
    from . import _distributed

    params = {k: audit_kwargs[k] for k in ("seed", "tol", "maxiter", "conv")}
    with contextlib.ExitStack() as stack:
        store = None
        if out is not None:
            store = _distributed.ResultStore(out, params, resume=resume)
            stack.callback(store.close)
        client = None
        if any(v is not None for v in cluster.values()):
            client = stack.enter_context(_distributed.cluster_client(**cluster))
        for path in paths:
            tasks, _ = _distributed.plan_audit([path], max_bytes=audit_kwargs.get("max_bytes"))
            results, _ = _distributed.run_audit(
                tasks, **params, max_bytes=audit_kwargs.get("max_bytes"), store=store, client=client,
                progress=progress,
            )  # fmt: skip
            yield [r for r in results if not isinstance(r, SkippedTensor)]


def format_comparison(comp, *, title=None):
    """The comparison as a text table, then the shape changes, missing and added tensors."""
    from .audit import _escape, _num, _shape_str, _table

    lines = [_escape(title)] if title else []
    cols = (
        ("spectral_norm_old", ".6g"),
        ("spectral_norm_new", ".6g"),
        ("relative_change", "+.3%"),
        ("update_norm", ".4g"),
        ("update_ratio", ".4g"),
        ("cos_u", ".4f"),
        ("cos_v", ".4f"),
    )
    if comp.changes:
        rows = [["name", "shape"] + [c for c, _ in cols] + ["converged"]]
        for c in comp.changes:
            rows.append(
                [_escape(c.name), _shape_str(c.shape)]
                + [_num(getattr(c, f), spec) for f, spec in cols]
                + ["yes" if c.converged else "NO"]
            )
        lines += _table(rows, [False, False] + [True] * len(cols) + [False])
    else:
        lines.append("no matrix in both checkpoints")
    for name, old, new in comp.shape_changed:
        lines.append(f"shape changed: {_escape(name)} {_shape_str(old)} -> {_shape_str(new)}")
    for label, names in (("missing (old only)", comp.missing), ("added (new only)", comp.added)):
        if names:
            lines.append(f"{label}: " + ", ".join(_escape(n) for n in names))
    if comp.skipped:
        lines.append(f"{len(comp.skipped)} tensor(s) in both not compared (not floating matrices)")
    return "\n".join(lines)


def comparison_json(comp, *, new, old, seed, tol):
    """The JSON document of ``--against``: each change with its ``layer`` and ``role`` (as the report groups them)."""
    from .report import matrix_entry

    return {
        "new": new,
        "old": old,
        "seed": seed,
        "tol": tol,
        "changes": [matrix_entry(c.to_dict()) for c in comp.changes],
        "shape_changed": [{"name": n, "old_shape": list(a), "new_shape": list(b)} for n, a, b in comp.shape_changed],
        "missing": comp.missing,
        "added": comp.added,
        "skipped": [{"name": n, "reason": r} for n, r in comp.skipped],
    }


def series_json(labels, trajectories, *, seed, tol, maxiter, conv, spectrum):
    """The JSON document of ``--series``: per matrix its ``layer``, ``role`` and the lists over checkpoints."""
    from .report import matrix_entry

    return {
        "checkpoints": labels,
        "seed": seed,
        "tol": tol,
        "maxiter": maxiter,
        "conv": conv,
        "spectrum": spectrum,
        "matrices": {name: matrix_entry(row, name) for name, row in trajectories.items()},
    }


def format_series(labels, trajectories):
    """One table per followed field: a row per matrix, a column per checkpoint."""
    from .audit import _escape, _num, _table

    lines = [
        f"# series of {len(labels)} checkpoints: " + ", ".join(f"[{i}] {_escape(p)}" for i, p in enumerate(labels))
    ]
    if not trajectories:
        lines.append("no matrices to audit")
        return "\n".join(lines)
    fields = next(iter(trajectories.values())).keys()
    for field in fields:
        lines.append("")
        lines.append(f"{field}:")
        rows = [["name"] + [f"[{i}]" for i in range(len(labels))]]
        for name, row in trajectories.items():
            rows.append([_escape(name)] + [_num(math.nan if v is None else v, ".5g") for v in row[field]])
        lines += _table(rows, [False] + [True] * len(labels))
    return "\n".join(lines)


def run(args, paths):
    """The ``--against`` and ``--series`` branches of the audit command; returns the exit status."""
    from .audit import _error

    spectrum = getattr(args, "spectrum", None)
    report = getattr(args, "report", None)
    try:
        if args.against is not None:
            if len(paths) != 1:
                return _error("--against OLD compares one checkpoint NEW with OLD: give exactly one PATH")
            comp = compare_checkpoints(
                paths[0], args.against, seed=args.seed, tol=args.tol, maxiter=args.maxiter, conv=args.conv,
                max_bytes=args.max_bytes,
            )  # fmt: skip
            doc = comparison_json(comp, new=paths[0], old=args.against, seed=args.seed, tol=args.tol)
            text = None if args.json else format_comparison(comp, title=f"# {paths[0]} against {args.against}")
        else:
            cluster = {key: getattr(args, key, None) for key in ("workers", "scheduler", "scheduler_file")}
            labels, traj = audit_series(
                paths, seed=args.seed, tol=args.tol, maxiter=args.maxiter, conv=args.conv, max_bytes=args.max_bytes,
                spectrum=spectrum, out=getattr(args, "out", None), resume=getattr(args, "resume", False),
                cluster=cluster,
            )  # fmt: skip
            doc = series_json(
                labels, traj, seed=args.seed, tol=args.tol, maxiter=args.maxiter, conv=args.conv, spectrum=spectrum
            )
            text = None if args.json else format_series(labels, traj)
    except CheckpointError as exc:
        return _error(exc)
    except KeyboardInterrupt:
        return _error("interrupted")
    if report:
        from .report import write_report  # matplotlib is imported only for a report

        try:
            write_report(doc, report)
        except (ImportError, OSError) as exc:
            return _error(f"--report {report!r}: {exc}")
    print(json.dumps(doc, indent=2, allow_nan=False) if text is None else text)
    return 0
