"""A self-contained HTML report of a checkpoint audit: ``python -m linalg_lowrank audit PATH --report audit.html``.

The report is one HTML file: a summary table and PNG figures embedded as ``data:`` URIs, inline CSS,
no script, no external stylesheet, font or image, and a Content-Security-Policy that forbids the
browser to fetch anything else, so it can be mailed, archived or opened offline. Figures are drawn
with matplotlib's Agg canvas (no pyplot, so the caller's backend is left alone).

The report reads the audit's JSON document (``--json``; `document_from_audit` builds it from
Python), so every number it shows is in that document under the same name. The document it expects:

``path`` : str
    What was audited (shown escaped).
``records`` : list of dict
    One per matrix, with the `linalg_lowrank.audit.AuditRecord` fields as keys (``name``,
    ``shape``, ``dtype``, ``spectral_norm``, ``frobenius_norm``, ``stable_rank``, ``rms``,
    ``ratio_estimate``, ``converged``, ``time_s``, ``stack_size``, ``stack_index``, ``view``);
    a number may be None (NaN in the audit). Optional keys shown when present in any record:
    ``alpha`` (power-law exponent of the spectrum's tail), ``effective_rank``. A quantity that
    no record carries gets neither a column nor a figure.
``skipped`` : list of dict, optional
    ``name``, ``shape``, ``dtype``, ``reason`` of every tensor not audited.
``seed``, ``tol``, ``maxiter``, ``conv``, ``sort``, ``top_k`` : optional
    The audit's settings, listed under the table.

Keys for comparisons (``against``) and training runs (``series``) are reserved for those modes
and ignored today.

Depth and role are read from the tensor name (`layer_index`, `matrix_role`), unless a record
carries them as ``layer`` (int or None) and ``role`` (one of `ROLE_GROUPS`' roles); the audit's
JSON document does not carry them today.
"""

import base64
import html
import io
import math
import os
import re

from .audit import _escape

__all__ = ["ROLE_GROUPS", "document_from_audit", "html_report", "layer_index", "matrix_role", "write_report"]

#: Quantities plotted against depth: (record key, axis label, title).
_DEPTH_PLOTS = (
    ("spectral_norm", r"$\sigma_1 = \|W\|_2$ (weight units)", "Spectral norm σ1 (spectral_norm)"),
    ("stable_rank", r"$\|W\|_F^2 \,/\, \|W\|_2^2$ (dimensionless)", "Stable rank (stable_rank)"),
    ("alpha", r"$\alpha$ (dimensionless)", "Power-law exponent α of the spectrum's tail (alpha)"),
    (
        "ratio_estimate",
        r"$\sigma_2 / \sigma_1$ (dimensionless)",
        "Ratio estimate σ2/σ1 (ratio_estimate; near 1: small gap)",
    ),
)
#: Columns of the summary table after name, role, layer, shape and dtype: (key, number format).
_COLUMNS = (
    ("spectral_norm", ".6g"),
    ("frobenius_norm", ".6g"),
    ("stable_rank", ".6g"),
    ("rms", ".6g"),
    ("ratio_estimate", ".6g"),
    ("alpha", ".6g"),
    ("effective_rank", ".6g"),
    ("time_s", ".3g"),
)

#: The role groups of the figures' panels and the roles in each, in legend order.
ROLE_GROUPS = {
    "attention": ("attn.q", "attn.k", "attn.v", "attn.qkv", "attn.o", "attn.other"),
    "mlp": ("mlp.up", "mlp.gate", "mlp.down", "mlp.other"),
    "embedding and other": ("embedding", "other"),
}
_ROLES = {role for roles in ROLE_GROUPS.values() for role in roles}
_GROUP_TITLES = {"attention": "Attention", "mlp": "MLP", "embedding and other": "Embeddings and other"}

# Name components (lower case, split at "." "/" "_" boundaries kept whole) that decide a role.
_EMBED = re.compile(r"embed|^wte$|^wpe$|lm_head|unembed|^tok_embeddings$|^shared$")
_ATTN_CONTEXT = re.compile(r"attn|attention")
_MLP_CONTEXT = re.compile(r"mlp|ffn|feed_forward|feedforward|intermediate|expert|moe")
_ROLE_TOKENS = {
    "attn.qkv": {"qkv", "c_attn", "query_key_value", "in_proj", "wqkv", "qkv_proj", "in_proj_weight"},
    "attn.q": {"q", "q_proj", "query", "wq", "to_q", "q_lin"},
    "attn.k": {"k", "k_proj", "key", "wk", "to_k", "k_lin"},
    "attn.v": {"v", "v_proj", "value", "wv", "to_v", "v_lin"},
    "attn.o": {"o", "o_proj", "out_proj", "to_out", "out_lin"},
    "mlp.gate": {"gate", "gate_proj", "w1", "wi_0"},
    "mlp.up": {"up", "up_proj", "fc1", "c_fc", "fc_in", "dense_h_to_4h", "w3", "wi", "wi_1", "lin1"},
    "mlp.down": {"down", "down_proj", "fc2", "fc_out", "dense_4h_to_h", "w2", "lin2"},
}
# Tokens whose role depends on the context: the attention output or the MLP's down projection.
_OUTPUT_TOKENS = {"out", "dense", "c_proj", "wo", "proj", "output"}
_TRAILING = {"weight", "bias", "kernel", "w", "b"}
_LAYER = re.compile(r"(?:^|[./])(?:layers?|h|blocks?|resblocks|stages?)[._]?(\d+)(?=[./_]|$)", re.IGNORECASE)
_NUMERIC_COMPONENT = re.compile(r"(?:^|[./])(\d+)(?=[./]|$)")


def layer_index(name):
    """The depth of a tensor read from its name, or None.

    Parameters
    ----------
    name : str
        Tensor name as in the checkpoint.

    Returns
    -------
    index : int or None
        The number after the first ``layers``, ``layer``, ``h``, ``block``, ``blocks``,
        ``resblocks``, ``stage`` or ``stages`` component, joined by ``.``, ``_`` or nothing
        (``layers.12.``, ``h.3.``, ``block_7``, ``encoder.layer.3.``); failing that the first
        component that is a number (``model.3.weight``, as ``nn.Sequential`` names them);
        None if there is neither (``embed.weight``).

    Examples
    --------
    >>> from linalg_lowrank.report import layer_index
    >>> [layer_index(n) for n in ["model.layers.12.mlp.up_proj.weight", "transformer.h.3.attn.c_attn.weight",
    ...                           "block_7.conv.weight", "net.2.weight", "embed.weight"]]
    [12, 3, 7, 2, None]
    """
    m = _LAYER.search(name) or _NUMERIC_COMPONENT.search(name)
    return int(m.group(1)) if m else None


def matrix_role(name):
    """The role of a matrix read from its name: attention q/k/v/o, MLP up/gate/down, embedding or other.

    Parameters
    ----------
    name : str
        Tensor name as in the checkpoint.

    Returns
    -------
    role : str
        One of the roles of `ROLE_GROUPS`. The name is lower-cased and split at ``.`` and ``/``;
        trailing ``weight``/``bias``/``kernel`` components are dropped. A component containing
        ``embed`` (or ``wte``, ``wpe``, ``lm_head``, ``unembed``, ``shared``) makes an
        ``embedding``. Otherwise the last component that names a projection decides:
        ``q``/``q_proj``/``query``/``wq``/``to_q`` is ``attn.q`` (likewise k, v),
        ``qkv``/``c_attn``/``query_key_value``/``in_proj`` is ``attn.qkv``,
        ``o_proj``/``out_proj``/``to_out`` is ``attn.o``, ``gate``/``gate_proj``/``w1`` is
        ``mlp.gate``, ``up``/``up_proj``/``fc1``/``c_fc``/``w3``/``wi`` is ``mlp.up``,
        ``down``/``down_proj``/``fc2``/``w2`` is ``mlp.down``; ``out``, ``dense``,
        ``c_proj``, ``wo``, ``proj`` and ``output`` are ``attn.o`` under an attention component
        (one containing ``attn`` or ``attention``) and ``mlp.down`` under an MLP one (``mlp``,
        ``ffn``, ``feed_forward``, ``intermediate``, ``expert``, ``moe``), except that
        ``intermediate.dense`` is ``mlp.up`` (BERT). A matrix under an attention or MLP component
        that none of these names is ``attn.other`` or ``mlp.other``; anything else is ``other``.

    Examples
    --------
    >>> from linalg_lowrank.report import matrix_role
    >>> [matrix_role(n) for n in ["model.layers.0.self_attn.q_proj.weight", "transformer.h.1.attn.c_proj.weight",
    ...                           "transformer.h.1.mlp.c_proj.weight", "layers.2.feed_forward.w1.weight",
    ...                           "bert.embeddings.word_embeddings.weight", "classifier.weight"]]
    ['attn.q', 'attn.o', 'mlp.down', 'mlp.gate', 'embedding', 'other']
    """
    parts = [p for p in re.split(r"[./]", str(name).lower()) if p]
    while parts and parts[-1] in _TRAILING:
        parts.pop()
    if any(_EMBED.search(p) for p in parts):
        return "embedding"
    attn = any(_ATTN_CONTEXT.search(p) for p in parts)
    mlp = any(_MLP_CONTEXT.search(p) for p in parts)
    if "intermediate" in parts and parts[-1] == "dense":
        return "mlp.up"
    for i in range(len(parts) - 1, -1, -1):
        token = parts[i]
        for role, tokens in _ROLE_TOKENS.items():
            if token in tokens:
                return role
        if token in _OUTPUT_TOKENS:
            # The nearest context before the token decides ("attention.output.dense" vs "layer.3.output.dense").
            before = parts[:i]
            last_attn = max((j for j, p in enumerate(before) if _ATTN_CONTEXT.search(p)), default=-1)
            last_mlp = max((j for j, p in enumerate(before) if _MLP_CONTEXT.search(p)), default=-1)
            if last_attn > last_mlp:
                return "attn.o"
            if last_mlp >= 0 or (token == "output" or "output" in before):
                return "mlp.down"
    if attn:
        return "attn.other"
    if mlp:
        return "mlp.other"
    return "other"


def document_from_audit(records, skipped=(), *, path=None):
    """The JSON document of an audit, as ``--json`` prints it, from `audit_checkpoint`'s result.

    Parameters
    ----------
    records : list of AuditRecord
        The audited matrices.
    skipped : list of SkippedTensor, optional
        The tensors not audited.
    path : str, optional
        What was audited, shown in the report's title.

    Returns
    -------
    document : dict
        ``{"path", "records", "skipped"}`` with each record's and skipped tensor's ``to_dict()``.
    """
    return {
        "path": path,
        "records": [r.to_dict() for r in records],
        "skipped": [s.to_dict() for s in skipped],
    }


def _text(value):
    """``value`` as HTML text: non-printable characters escaped as ``repr`` does, then HTML-escaped."""
    return html.escape(_escape(value), quote=True)


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value, spec):
    if not _is_number(value):
        return '<td class="num" data-value="">&ndash;</td>'
    return f'<td class="num" data-value="{float(value)!r}">{format(value, spec)}</td>'


def _figure_png(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


_MARKERS = "osD^v<>ph*"
_MAX_TICKS = 16


def _depth_figure(records, key, ylabel, title):
    """One panel per role group with data; one line per role, layers on x (no index: at x = -1)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    groups = []
    for group, roles in ROLE_GROUPS.items():
        series = []
        for role in roles:
            pts = [(r["_layer"], r[key]) for r in records if r["_role"] == role and _is_number(r.get(key))]
            if pts:
                series.append((role, pts))
        if series:
            groups.append((group, series))
    if not groups:
        return None
    fig = Figure(figsize=(4.2 * len(groups) + 0.6, 4.2), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (group, series) in zip(axes, groups, strict=True):
        no_layer = False
        for k, (role, pts) in enumerate(series):
            pts = sorted(pts, key=lambda p: -1 if p[0] is None else p[0])
            xs = [-1 if layer is None else layer for layer, _ in pts]
            no_layer |= xs[0] == -1
            indexed = [layer for layer, _ in pts if layer is not None]
            # A line only where it means something: one matrix of this role per layer, never through "none".
            joined = len(indexed) > 1 and len(set(indexed)) == len(indexed)
            (line,) = ax.plot(
                [x for x in xs if x >= 0] if joined else xs,
                [v for x, (_, v) in zip(xs, pts, strict=True) if x >= 0] if joined else [v for _, v in pts],
                marker=_MARKERS[k % len(_MARKERS)],
                linestyle="-" if joined else "none",
                label=f"{role} ({len(pts)})",
            )
            if joined and xs[0] == -1:
                none = [v for x, (_, v) in zip(xs, pts, strict=True) if x < 0]
                ax.plot([-1] * len(none), none, marker=line.get_marker(), linestyle="none", color=line.get_color())
        layers = sorted({layer for _, pts in series for layer, _ in pts if layer is not None})
        if len(layers) > _MAX_TICKS:
            ticks = [int(t) for t in MaxNLocator(nbins=_MAX_TICKS, integer=True).tick_values(layers[0], layers[-1])]
            ticks = [t for t in ticks if layers[0] <= t <= layers[-1]]
        else:
            ticks = layers
        lo, hi = (-1 if no_layer else layers[0]), (layers[-1] if layers else -1)
        ax.set_xlim(lo - 0.5, hi + 0.5)  # integer layers: never fractional ticks, never a zero-width axis
        if no_layer and layers:
            ax.axvline(-0.5, color="0.7", linewidth=0.8, linestyle=":")
        ax.set_xticks([-1, *ticks] if no_layer else ticks, ["none", *map(str, ticks)] if no_layer else map(str, ticks))
        ax.set_title(_GROUP_TITLES[group], fontsize=10)
        ax.set_xlabel("layer index (from the tensor name)")
        ax.set_ylabel(ylabel)
        if key == "ratio_estimate":
            ax.set_ylim(0, 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend(
            fontsize=8,
            title="role (number of matrices)",
            title_fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=min(4, len(series)),
        )  # below the axes: never over the data
    fig.suptitle(title, fontsize=11)
    return _figure_png(fig)


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { font-family: monospace; word-break: break-all; max-width: 32em; }
tr.bad td { background: #fdd; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; height: auto; }
dl { font-size: 0.85em; } dt { font-weight: bold; float: left; margin-right: 0.5em; }
"""

# No script, nothing fetched: images only from data: URIs, styles only inline.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def html_report(document, *, title=None):
    """The audit as one self-contained HTML page: summary table and per-layer figures.

    Parameters
    ----------
    document : dict
        The audit's JSON document (``--json``, or `document_from_audit`); the keys it reads are
        listed in the module docstring.
    title : str, optional
        Heading of the page (default: "Spectral audit of" the document's ``path``).

    Returns
    -------
    page : str
        The HTML page. Figures are PNG ``data:`` URIs; there is no script and nothing is fetched.
        Names, dtypes and reasons are shown with non-printable characters escaped as ``repr``
        does and then HTML-escaped.

    Raises
    ------
    TypeError
        If `document` is not a dict with a ``records`` list.
    ImportError
        If matplotlib is not installed (``pip install linalg_lowrank[report]``).

    Examples
    --------
    >>> import os, tempfile
    >>> from linalg_lowrank.audit import audit_checkpoint, write_demo_checkpoint
    >>> from linalg_lowrank.report import document_from_audit, html_report
    >>> with tempfile.TemporaryDirectory() as d:
    ...     records, skipped = audit_checkpoint(write_demo_checkpoint(os.path.join(d, "demo.safetensors")))
    >>> page = html_report(document_from_audit(records, skipped, path="demo"))
    >>> page.startswith("<!DOCTYPE html>"), page.count('<img src="data:image/png;base64,')
    (True, 3)
    """
    if not isinstance(document, dict) or not isinstance(document.get("records"), list):
        raise TypeError(f"`document` must be a dict with a 'records' list, got {type(document).__name__}")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("the HTML report needs matplotlib: pip install 'linalg_lowrank[report]'") from exc
    records = []
    for rec in document["records"]:
        rec = dict(rec)
        name = str(rec.get("name", ""))
        rec["_layer"] = rec["layer"] if "layer" in rec else layer_index(name)
        rec["_role"] = rec["role"] if rec.get("role") in _ROLES else matrix_role(name)
        records.append(rec)
    skipped = document.get("skipped") or []
    path = document.get("path")
    heading = title if title is not None else f"Spectral audit of {path}" if path else "Spectral audit"
    shown = [(k, spec) for k, spec in _COLUMNS if any(k in r for r in records)]

    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(heading)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_text(heading)}</h1>",
    ]
    n_bad = sum(1 for r in records if r.get("converged") is False)
    summary = f"{len(records)} matri{'x' if len(records) == 1 else 'ces'} audited, {len(skipped)} tensors skipped"
    if n_bad:
        summary += f", {n_bad} not converged (red rows)"
    out.append(f"<p>{_text(summary)}.</p>")

    out.append("<h2>Figures</h2>")
    out.append(
        "<p>Each panel is one group of roles, read from the tensor names (attention q/k/v/o, MLP up/gate/down, "
        "embeddings and other); x is the layer index read from the name, and matrices without one (embeddings, "
        "heads) are drawn at &ldquo;none&rdquo;. For a stack of matrices the spectral norm is the largest over the "
        "stack.</p>"
    )
    for key, ylabel, fig_title in _DEPTH_PLOTS:
        png = _depth_figure(records, key, ylabel, fig_title)
        if png is None:
            continue
        out.append(
            f'<figure id="fig-{key}"><img src="data:image/png;base64,{png}" alt="{_text(fig_title)} against depth">'
            f"<figcaption>{_text(fig_title)} against the layer index, by role; JSON key <code>{key}</code>."
            "</figcaption></figure>"
        )

    out.append("<h2>Summary table</h2>")
    if records:
        head = ["name", "role", "layer", "shape", "dtype", *[k for k, _ in shown], "converged", "view"]
        out.append('<table id="summary"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>")
        out.append("<tbody>")
        for rec in records:
            cls = ' class="bad"' if rec.get("converged") is False else ""
            shape = "x".join(str(d) for d in rec.get("shape") or ())
            layer = "" if rec["_layer"] is None else str(rec["_layer"])
            view = rec.get("view", "")
            if view == "stack" and rec.get("stack_index") is not None:
                view += f" (max of {rec.get('stack_size')} at {list(rec['stack_index'])})"
            cells = [
                f'<td class="name">{_text(rec.get("name", ""))}</td>',
                f"<td>{_text(rec['_role'])}</td>",
                f'<td class="num">{layer}</td>',
                f"<td>{_text(shape)}</td>",
                f"<td>{_text(rec.get('dtype', ''))}</td>",
                *[_cell(rec.get(k), spec) for k, spec in shown],
                f"<td>{'yes' if rec.get('converged') else 'NO'}</td>",
                f"<td>{_text(view)}</td>",
            ]
            out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        out.append(
            "<p>Numbers are shown to 6 significant digits; the exact value is in each cell's "
            "<code>data-value</code> and in the JSON document under the column's name.</p>"
        )
    else:
        out.append("<p>No matrices to audit.</p>")

    if skipped:
        out.append("<h2>Skipped tensors</h2>")
        out.append(
            '<table id="skipped"><thead><tr><th>name</th><th>shape</th><th>dtype</th><th>reason</th></tr></thead>'
        )
        out.append("<tbody>")
        for s in skipped:
            shape = "x".join(str(d) for d in s.get("shape") or ()) or "()"
            out.append(
                f'<tr><td class="name">{_text(s.get("name", ""))}</td><td>{_text(shape)}</td>'
                f"<td>{_text(s.get('dtype', ''))}</td><td>{_text(s.get('reason', ''))}</td></tr>"
            )
        out.append("</tbody></table>")

    settings = [(k, document[k]) for k in ("seed", "tol", "maxiter", "conv", "sort", "top_k") if k in document]
    if settings:
        out.append("<h2>Settings</h2><dl>")
        out += [f"<dt>{k}</dt><dd>{_text(v)}</dd>" for k, v in settings]
        out.append("</dl>")
    out.append("</body>")
    out.append("</html>")
    return "\n".join(out) + "\n"


def write_report(document, path, *, title=None):
    """Write `html_report` of an audit's JSON document to a file (UTF-8, overwritten).

    Parameters
    ----------
    document : dict
        The audit's JSON document, as for `html_report`.
    path : str or os.PathLike
        The HTML file to write.
    title : str, optional
        Heading of the page, as for `html_report`.

    Returns
    -------
    path : str
        The same path.
    """
    page = html_report(document, title=title)
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
