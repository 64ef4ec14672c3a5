"""A self-contained HTML report of a checkpoint audit: ``python -m linalg_lowrank audit PATH --report audit.html``.

The report is one HTML file: figures as PNG images embedded as ``data:`` URIs, tables, inline
CSS, no script, no external stylesheet, font or image, and a Content-Security-Policy that forbids
the browser to fetch anything else, so it can be mailed, archived or opened offline. Figures are
drawn with matplotlib's Agg canvas (no pyplot, so the caller's backend is left alone).

The report reads the JSON document that ``--json`` prints for the same command, so every number it
shows is in that document under the same name. Three documents (`document_kind`):

an audit (``audit PATH [--spectrum K]``; `document_from_audit` builds it from Python)
    ``records``: one dict per matrix with the `linalg_lowrank.audit.AuditRecord` fields
    (``name``, ``shape``, ``dtype``, ``spectral_norm``, ``frobenius_norm``, ``stable_rank``,
    ``rms``, ``ratio_estimate``, ``converged``, ``time_s``, ``stack_size``, ``stack_index``,
    ``view``, and with ``--spectrum`` a ``spectrum`` dict with ``values``, ``alpha``,
    ``effective_rank``, ...); ``skipped``: ``name``, ``shape``, ``dtype``, ``reason`` of every
    tensor not audited; the settings ``seed``, ``tol``, ``maxiter``, ``conv``, ``sort``, ``top_k``.
    Figures: ``spectral_norm``, ``stable_rank``, ``spectrum.alpha``, ``spectrum.effective_rank``
    and ``ratio_estimate`` against depth, and ``spectrum.values`` (sigma_i against i, log-log) of
    the matrix with the largest sigma1 of each role.
a comparison (``audit NEW --against OLD``)
    ``changes``: one dict per matrix in both checkpoints (``spectral_norm_old``,
    ``spectral_norm_new``, ``relative_change``, ``update_norm``, ``update_ratio``, ``cos_u``,
    ``cos_v``, ``converged``, ...); ``shape_changed``, ``missing``, ``added``, ``skipped``.
    Figures: ``relative_change``, ``update_ratio``, ``cos_u`` and ``cos_v`` against depth.
a series (``audit DIR --series``)
    ``checkpoints``: the files in order; ``matrices``: for each name, the lists over
    checkpoints of ``spectral_norm``, ``stable_rank``, ``frobenius_norm`` (and ``effective_rank``,
    ``alpha`` with ``--spectrum``). Figures: the trajectories of ``spectral_norm``, ``stable_rank``,
    ``effective_rank`` and ``alpha``, one line per matrix coloured by depth.

A number may be None (NaN in the audit) and is then neither drawn nor shown. Every matrix's entry
carries its depth and role as ``layer`` (int or None) and ``role`` (one of `ROLE_GROUPS`' roles);
where a document lacks them they are read from the tensor name (`layer_index`, `matrix_role`).
`figure_data` lists what each figure plots, each point with the path of its value in the document,
and `draw_figure` draws one.
"""

import base64
import html
import io
import math
import os
import re

from .audit import _escape

__all__ = [
    "ROLE_GROUPS",
    "document_from_audit",
    "document_kind",
    "draw_figure",
    "figure_data",
    "html_report",
    "layer_index",
    "matrix_entry",
    "matrix_role",
    "write_report",
]

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
        ``{"path", "records", "skipped"}``: each record's ``to_dict()`` with its ``layer`` and
        ``role`` (`matrix_entry`), each skipped tensor's ``to_dict()``.
    """
    return {
        "path": path,
        "records": [matrix_entry(r.to_dict()) for r in records],
        "skipped": [s.to_dict() for s in skipped],
    }


def matrix_entry(entry, name=None):
    """A matrix's JSON entry with its depth and role added: ``layer`` and ``role`` from its name.

    Parameters
    ----------
    entry : dict
        A record's or a change's ``to_dict()``, or a series' entry of one matrix.
    name : str, optional
        The tensor's name (default ``entry["name"]``).

    Returns
    -------
    entry : dict
        A new dict: ``name`` (if present) first, then ``layer`` (`layer_index`) and ``role``
        (`matrix_role`), then the other keys.
    """
    name = entry["name"] if name is None else name
    out = {"name": entry["name"]} if "name" in entry else {}
    out.update(layer=layer_index(name), role=matrix_role(name))
    out.update((k, v) for k, v in entry.items() if k not in out)
    return out


def _layer_and_role(item, name):
    """``(layer, role)`` of a record, change or series entry: its own keys, else read from the name."""
    layer = item.get("layer") if "layer" in item else layer_index(name)
    if not (isinstance(layer, int) and not isinstance(layer, bool)):
        layer = None
    role = item["role"] if item.get("role") in _ROLES else matrix_role(name)
    return layer, role


def document_kind(document):
    """Which audit a JSON document comes from: ``"audit"``, ``"comparison"`` or ``"series"``.

    Parameters
    ----------
    document : dict
        A JSON document of ``audit --json``: with ``records`` (an audit), ``changes``
        (``--against``) or ``matrices`` and ``checkpoints`` (``--series``).

    Returns
    -------
    kind : str

    Raises
    ------
    TypeError
        If `document` is none of these.
    """
    if isinstance(document, dict):
        if isinstance(document.get("records"), list):
            return "audit"
        if isinstance(document.get("changes"), list):
            return "comparison"
        if isinstance(document.get("matrices"), dict) and isinstance(document.get("checkpoints"), list):
            return "series"
    raise TypeError(
        "`document` must be a dict with a 'records' list (audit), a 'changes' list (--against) or 'matrices' and "
        f"'checkpoints' (--series), got {type(document).__name__}"
    )


def _items(document, kind):
    """``(path, name, item, layer, role)`` of every matrix of the document, in document order."""
    if kind == "series":
        entries = [(("matrices", name), name, item) for name, item in document["matrices"].items()]
    else:
        key = "records" if kind == "audit" else "changes"
        entries = [((key, i), str(item.get("name", "")), item) for i, item in enumerate(document[key])]
    out = []
    for path, name, item in entries:
        if isinstance(item, dict):
            out.append((path, name, item, *_layer_and_role(item, name)))
    return out


def _lookup(item, key):
    """``(value, path within the item)`` of a quantity: the item's own key, else its ``spectrum``'s."""
    if key in item:
        return item[key], (key,)
    spectrum = item.get("spectrum")
    if isinstance(spectrum, dict) and key in spectrum:
        return spectrum[key], ("spectrum", key)
    return None, None


#: Quantities of an audit plotted against depth: (quantity, axis label, title). ``alpha`` and
#: ``effective_rank`` come with ``--spectrum`` (in each record's ``spectrum``).
_DEPTH_PLOTS = (
    ("spectral_norm", r"$\sigma_1 = \|W\|_2$ (weight units)", "Spectral norm σ1 (spectral_norm)"),
    ("stable_rank", r"$\|W\|_F^2 \,/\, \|W\|_2^2$ (dimensionless)", "Stable rank (stable_rank)"),
    ("alpha", r"$\alpha$ (dimensionless)", "Power-law exponent α of the spectrum's tail (alpha)"),
    (
        "effective_rank",
        r"$\exp H(\sigma_{1..k} / \sum \sigma_i)$",
        "Effective rank of the top k values (effective_rank)",
    ),
    (
        "ratio_estimate",
        r"$\sigma_2 / \sigma_1$ (dimensionless)",
        "Ratio estimate σ2/σ1 (ratio_estimate; near 1: small gap)",
    ),
)
#: Quantities of a comparison (``--against``) plotted against depth.
_CHANGE_PLOTS = (
    (
        "relative_change",
        r"$(\sigma_1^{new} - \sigma_1^{old}) / \sigma_1^{old}$",
        "Relative change of σ1 (relative_change)",
    ),
    (
        "update_ratio",
        r"$\|W_{new} - W_{old}\|_2 \,/\, \sigma_1^{old}$",
        "Spectral norm of the update over σ1 (update_ratio)",
    ),
    ("cos_u", r"$|u_{new} \cdot u_{old}|$", "Cosine of the top left singular vectors (cos_u; 1: kept)"),
    ("cos_v", r"$|v_{new} \cdot v_{old}|$", "Cosine of the top right singular vectors (cos_v; 1: kept)"),
)
#: Quantities of a series (``--series``) plotted across checkpoints.
_SERIES_PLOTS = (
    ("spectral_norm", r"$\sigma_1 = \|W\|_2$ (weight units)", "Spectral norm σ1 across the run (spectral_norm)"),
    ("stable_rank", r"$\|W\|_F^2 \,/\, \|W\|_2^2$", "Stable rank across the run (stable_rank)"),
    ("effective_rank", r"$\exp H(\sigma_{1..k} / \sum \sigma_i)$", "Effective rank across the run (effective_rank)"),
    ("alpha", r"$\alpha$", "Power-law exponent α across the run (alpha)"),
)
_BOUNDED = {"ratio_estimate", "cos_u", "cos_v"}  # between 0 and 1: a fixed axis


def _point(name, x, y, path, x_path=None):
    return {"name": name, "x": x, "y": y, "path": path, "x_path": x_path}


def _grouped(series):
    """Series (each with a ``role``) into panels, one per role group with data, in `ROLE_GROUPS` order."""
    panels = []
    for group, roles in ROLE_GROUPS.items():
        inside = [s for role in roles for s in series if s["role"] == role]
        if inside:
            panels.append({"group": group, "title": _GROUP_TITLES[group], "series": inside})
    return panels


def _depth_data(items, quantity, ylabel, title):
    series = []
    for role in _ROLES_IN_ORDER:
        points, rel = [], None
        for path, name, item, layer, r in items:
            if r != role:
                continue
            value, rel_path = _lookup(item, quantity)
            if _is_number(value):
                x_path = (*path, "layer") if "layer" in item else None
                points.append(_point(name, layer, value, (*path, *rel_path), x_path))
                rel = rel or rel_path
        if points:
            series.append({"label": role, "role": role, "points": points, "_rel": rel})
    if not series:
        return None
    key = ".".join(series[0].pop("_rel"))
    for s in series:
        s.pop("_rel", None)
    return {
        "id": f"fig-{quantity}",
        "kind": "depth",
        "key": key,
        "title": title,
        "xlabel": "layer index (from the tensor name)",
        "ylabel": ylabel,
        "caption": f"{title} against the layer index, by role; JSON key {key} of each matrix, x its layer.",
        "panels": _grouped(series),
    }


def _spectrum_data(items):
    """One matrix per role, the one with the largest sigma1 among those with a spectrum: sigma_i against i."""
    chosen = {}
    for path, name, item, _layer, role in items:
        values, rel = _lookup(item, "values")
        sigma1 = item.get("spectral_norm")
        if not (isinstance(values, list) and values and rel == ("spectrum", "values") and _is_number(sigma1)):
            continue
        if role not in chosen or sigma1 > chosen[role][0]:
            chosen[role] = (sigma1, path, name, values)
    series = []
    for role in _ROLES_IN_ORDER:
        if role not in chosen:
            continue
        _, path, name, values = chosen[role]
        points = [
            _point(name, i + 1, v, (*path, "spectrum", "values", i)) for i, v in enumerate(values) if _is_number(v)
        ]
        if points and all(p["y"] > 0 for p in points):
            series.append({"label": f"{role}: {name}", "role": role, "points": points})
    if not series:
        return None
    k = max(len(s["points"]) for s in series)
    title = f"Top {k} singular values of the matrix with the largest σ1 of each role (spectrum.values)"
    return {
        "id": "fig-spectrum",
        "kind": "spectrum",
        "key": "spectrum.values",
        "title": title,
        "xlabel": "index i (1: the largest)",
        "ylabel": r"$\sigma_i$ (weight units)",
        "caption": (
            f"The top singular values σ_i against i, log-log, of {len(series)} matrices: for each role, the matrix "
            "with the largest spectral_norm among those of that role (one line per role, named in the legend); "
            "JSON key spectrum.values of that matrix, x the position in the list plus one. A straight tail is a "
            "power law (see alpha)."
        ),
        "panels": _grouped(series),
    }


def _trajectory_data(items, quantity, ylabel, title, n_checkpoints):
    series = []
    for role in _ROLES_IN_ORDER:
        for path, name, item, layer, r in items:
            values = item.get(quantity)
            if r != role or not isinstance(values, list):
                continue
            points = [_point(name, t, v, (*path, quantity, t)) for t, v in enumerate(values) if _is_number(v)]
            if points:
                x_path = (*path, "layer") if "layer" in item else None
                series.append({"label": name, "role": role, "layer": layer, "layer_path": x_path, "points": points})
    if not series:
        return None
    return {
        "id": f"fig-series-{quantity}",
        "kind": "trajectory",
        "key": quantity,
        "title": title,
        "xlabel": f"checkpoint (0 to {n_checkpoints - 1}, in the run's order)",
        "ylabel": ylabel,
        "caption": (
            f"{title}: one line per matrix, coloured by its layer index (dark: first layers; black: no layer), "
            f"one marker per role, one panel per group of roles; JSON key {quantity} of each matrix, x the "
            "checkpoint's position in the list."
        ),
        "panels": _grouped(series),
    }


def figure_data(document):
    """What the report's figures plot, each point with the place of its value in the JSON document.

    Parameters
    ----------
    document : dict
        A JSON document of ``audit --json`` (see `document_kind`).

    Returns
    -------
    figures : list of dict
        One dict per figure, in the report's order, with ``id``, ``kind`` ("depth": against the
        layer index, by role; "spectrum": sigma_i against i; "trajectory": across the
        checkpoints of a series), ``key`` (the plotted quantity's path within a matrix's entry,
        dotted: ``spectral_norm``, ``spectrum.alpha``, ``spectrum.values``), ``title``,
        ``xlabel``, ``ylabel``, ``caption`` and ``panels``: each a dict with ``group`` (a key of
        `ROLE_GROUPS`), ``title`` and ``series``, each series a dict with ``label``, ``role`` and
        ``points``, each point a dict with ``name`` (of the matrix), ``x``, ``y`` (the plotted
        value), ``path`` (the keys and list indices leading to ``y`` in the document) and
        ``x_path`` (those leading to ``x``, when x is a value of the document: the layer). A
        quantity that no matrix carries gets no figure.

    Examples
    --------
    >>> from linalg_lowrank.report import figure_data
    >>> doc = {"records": [{"name": "layers.0.mlp.up.weight", "layer": 0, "role": "mlp.up", "spectral_norm": 2.5}]}
    >>> (fig,) = figure_data(doc)
    >>> point = fig["panels"][0]["series"][0]["points"][0]
    >>> fig["key"], point["y"], point["path"], point["x"], point["x_path"]
    ('spectral_norm', 2.5, ('records', 0, 'spectral_norm'), 0, ('records', 0, 'layer'))
    """
    kind = document_kind(document)
    items = _items(document, kind)
    if kind == "audit":
        figures = [_depth_data(items, *plot) for plot in _DEPTH_PLOTS] + [_spectrum_data(items)]
    elif kind == "comparison":
        figures = [_depth_data(items, *plot) for plot in _CHANGE_PLOTS]
    else:
        n = len(document["checkpoints"])
        figures = [_trajectory_data(items, *plot, n) for plot in _SERIES_PLOTS]
    return [f for f in figures if f is not None]


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

    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


_MARKERS = "osD^v<>ph*"
_MAX_TICKS = 16
_ROLES_IN_ORDER = tuple(role for roles in ROLE_GROUPS.values() for role in roles)


def _layer_ticks(ax, layers, no_layer):
    """Integer layer ticks (at most `_MAX_TICKS`), with "none" at x = -1 for matrices without a layer."""
    from matplotlib.ticker import MaxNLocator

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


def _draw_depth_panel(ax, panel):
    """One line per role, layers on x (no index: at x = -1)."""
    no_layer = False
    for k, s in enumerate(panel["series"]):
        pts = sorted(((p["x"], p["y"]) for p in s["points"]), key=lambda p: -1 if p[0] is None else p[0])
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
            label=f"{s['label']} ({len(pts)})",
        )
        if joined and xs[0] == -1:
            none = [v for x, (_, v) in zip(xs, pts, strict=True) if x < 0]
            ax.plot([-1] * len(none), none, marker=line.get_marker(), linestyle="none", color=line.get_color())
    layers = sorted({p["x"] for s in panel["series"] for p in s["points"] if p["x"] is not None})
    _layer_ticks(ax, layers, no_layer)
    return "role (number of matrices)"


def _draw_spectrum_panel(ax, panel):
    for k, s in enumerate(panel["series"]):
        ax.loglog(
            [p["x"] for p in s["points"]],
            [p["y"] for p in s["points"]],
            marker=_MARKERS[k % len(_MARKERS)],
            markersize=3,
            label=_escape(s["label"]).replace("$", r"\$"),  # a name is text, never mathtext
        )
    return "role: matrix"


def _draw_trajectory_panel(ax, panel, norm, cmap):
    from matplotlib.lines import Line2D

    roles = []
    for s in panel["series"]:
        if s["role"] not in roles:
            roles.append(s["role"])
        marker = _MARKERS[roles.index(s["role"]) % len(_MARKERS)]
        colour = "black" if s["layer"] is None or norm is None else cmap(norm(s["layer"]))
        ax.plot(
            [p["x"] for p in s["points"]],
            [p["y"] for p in s["points"]],
            marker=marker,
            markersize=3,
            linewidth=1,
            alpha=0.8,
            color=colour,
        )
    handles = [
        Line2D([], [], color="0.4", marker=_MARKERS[i % len(_MARKERS)], linestyle="-", label=role)
        for i, role in enumerate(roles)
    ]
    ax.legend(handles=handles, fontsize=8, title="role", title_fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.2), ncol=min(4, len(roles)))  # fmt: skip
    xs = sorted({p["x"] for s in panel["series"] for p in s["points"]})
    if len(xs) <= _MAX_TICKS:
        ax.set_xticks(xs)
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    return None


def draw_figure(data, *, figure=None):
    """Draw one figure of `figure_data` with matplotlib.

    Parameters
    ----------
    data : dict
        One entry of `figure_data`'s list.
    figure : matplotlib.figure.Figure, optional
        Where to draw (for example ``plt.figure(figsize=(12, 4))``); by default a new
        `matplotlib.figure.Figure`, sized for the number of panels, outside pyplot.

    Returns
    -------
    figure : matplotlib.figure.Figure
        One panel per role group, side by side.
    """
    from matplotlib.figure import Figure

    panels = data["panels"]
    if figure is None:
        figure = Figure(figsize=(4.2 * len(panels) + 0.6, 4.2 if data["kind"] != "trajectory" else 4.6))
    figure.set_layout_engine("constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    norm = cmap = None
    if data["kind"] == "trajectory":
        import matplotlib

        layers = [s["layer"] for p in panels for s in p["series"] if s["layer"] is not None]
        if layers:
            norm = matplotlib.colors.Normalize(
                min(layers), max(layers) if max(layers) > min(layers) else min(layers) + 1
            )
            cmap = matplotlib.colormaps["viridis"]
    for ax, panel in zip(axes, panels, strict=True):
        if data["kind"] == "depth":
            legend_title = _draw_depth_panel(ax, panel)
        elif data["kind"] == "spectrum":
            legend_title = _draw_spectrum_panel(ax, panel)
        else:
            legend_title = _draw_trajectory_panel(ax, panel, norm, cmap)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel(data["xlabel"])
        ax.set_ylabel(data["ylabel"])
        quantity = data["key"].rsplit(".", 1)[-1]
        if quantity in _BOUNDED:
            ax.set_ylim(0, 1.05)
        if quantity == "relative_change":
            ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.grid(True, alpha=0.3, which="both" if data["kind"] == "spectrum" else "major")
        if legend_title is not None:
            ax.legend(
                fontsize=8,
                title=legend_title,
                title_fontsize=8,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.2),
                ncol=1 if data["kind"] == "spectrum" else min(4, len(panel["series"])),
            )  # below the axes: never over the data
    if norm is not None:
        import matplotlib.cm

        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
        from matplotlib.ticker import MaxNLocator

        bar = figure.colorbar(mappable, ax=list(axes), label="layer index", shrink=0.8)
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(data["title"], fontsize=11)
    return figure


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; } h3 { font-size: 1em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { font-family: monospace; word-break: break-all; max-width: 32em; }
tr.bad td { background: #fdd; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; height: auto; }
dl { font-size: 0.85em; } dt { font-weight: bold; float: left; margin-right: 0.5em; }
li { font-size: 0.9em; }
"""

# No script, nothing fetched: images only from data: URIs, styles only inline.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

#: Columns of the audit's summary table after name, role, layer, shape and dtype: (quantity, number
#: format); ``alpha`` and ``effective_rank`` are read from a record's ``spectrum`` when not its own.
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
#: Columns of a comparison's table after name, role, layer and shape.
_CHANGE_COLUMNS = (
    ("spectral_norm_old", ".6g"),
    ("spectral_norm_new", ".6g"),
    ("relative_change", ".4g"),
    ("update_norm", ".6g"),
    ("update_ratio", ".4g"),
    ("cos_u", ".4f"),
    ("cos_v", ".4f"),
)
_FIGURES_NOTE = (
    "Each panel is one group of roles, read from the tensor names (attention q/k/v/o, MLP up/gate/down, "
    "embeddings and other) unless the JSON gives them (keys <code>layer</code> and <code>role</code> of each "
    "matrix, which the audit's JSON carries). Matrices without a layer index (embeddings, heads) are drawn at "
    "&ldquo;none&rdquo;. {stack}Every plotted number is in the JSON document (<code>--json</code>) under the key "
    "named in the caption."
)


def _figures_html(document):
    out = []
    for data in figure_data(document):
        png = _figure_png(draw_figure(data))
        out.append(
            f'<figure id="{data["id"]}"><img src="data:image/png;base64,{png}" alt="{_text(data["title"])}">'
            f"<figcaption>{_text(data['caption'])}</figcaption></figure>"
        )
    return out


def _table_html(table_id, head, rows):
    out = [
        f'<table id="{_text(table_id)}"><thead><tr>' + "".join(f"<th>{_text(h)}</th>" for h in head) + "</tr></thead>"
    ]
    out.append("<tbody>")
    out += rows
    out.append("</tbody></table>")
    return out


def _head_cells(name, role, layer):
    return [
        f'<td class="name">{_text(name)}</td>',
        f"<td>{_text(role)}</td>",
        f'<td class="num">{"" if layer is None else layer}</td>',
    ]


def _matrix_row(entry, name, role, layer, text_cells, number_cells, last):
    """One table row of a record or a change: name, role, layer, shape, text cells, numbers, converged, last.

    Red (class "bad") when the entry did not converge.
    """
    cls = ' class="bad"' if entry.get("converged") is False else ""
    shape = "x".join(str(d) for d in entry.get("shape") or ())
    cells = [
        *_head_cells(name, role, layer),
        f"<td>{_text(shape)}</td>",
        *[f"<td>{_text(t)}</td>" for t in text_cells],
        *number_cells,
        f"<td>{'yes' if entry.get('converged') else 'NO'}</td>",
        f"<td>{_text(last)}</td>",
    ]
    return f"<tr{cls}>" + "".join(cells) + "</tr>"


def _intro_html(document, rows, summary, stack):
    """The summary line (with the rows that did not converge) and the figures, for either kind of report."""
    n_bad = sum(1 for r in rows if r.get("converged") is False)
    if n_bad:
        summary += f", {n_bad} not converged (red rows)"
    out = [f"<p>{_text(summary)}.</p>", "<h2>Figures</h2>", f"<p>{_FIGURES_NOTE.format(stack=stack)}</p>"]
    return out + _figures_html(document)


def _audit_body(document, items):
    records = [item for _, _, item, _, _ in items]
    skipped = document.get("skipped") or []
    summary = f"{len(records)} matri{'x' if len(records) == 1 else 'ces'} audited, {len(skipped)} tensors skipped"
    stack = "For a stack of matrices the spectral norm is the largest over the stack. "
    out = _intro_html(document, records, summary, stack)
    out.append("<h2>Summary table</h2>")
    if records:
        shown = [(k, spec) for k, spec in _COLUMNS if any(_lookup(r, k)[1] is not None for r in records)]
        head = ["name", "role", "layer", "shape", "dtype", *[k for k, _ in shown], "converged", "view"]
        rows = []
        for _, name, rec, layer, role in items:
            view = rec.get("view", "")
            if view == "stack" and rec.get("stack_index") is not None:
                view += f" (max of {rec.get('stack_size')} at {list(rec['stack_index'])})"
            numbers = [_cell(_lookup(rec, k)[0], spec) for k, spec in shown]
            rows.append(_matrix_row(rec, name, role, layer, [rec.get("dtype", "")], numbers, view))
        out += _table_html("summary", head, rows)
        out.append(
            "<p>Numbers are shown to 6 significant digits; the exact value is in each cell's "
            "<code>data-value</code> and in the JSON document under the column's name (<code>alpha</code> and "
            "<code>effective_rank</code> in the record's <code>spectrum</code>, with the top singular values).</p>"
        )
    else:
        out.append("<p>No matrices to audit.</p>")
    if skipped:
        out.append("<h2>Skipped tensors</h2>")
        rows = []
        for s in skipped:
            shape = "x".join(str(d) for d in s.get("shape") or ()) or "()"
            rows.append(
                f'<tr><td class="name">{_text(s.get("name", ""))}</td><td>{_text(shape)}</td>'
                f"<td>{_text(s.get('dtype', ''))}</td><td>{_text(s.get('reason', ''))}</td></tr>"
            )
        out += _table_html("skipped", ["name", "shape", "dtype", "reason"], rows)
    return out, ("seed", "tol", "maxiter", "conv", "sort", "top_k")


def _names_list(title, entries):
    if not entries:
        return []
    return [f"<h3>{_text(title)}</h3><ul>", *[f"<li>{_text(e)}</li>" for e in entries], "</ul>"]


def _comparison_body(document, items):
    changes = [item for _, _, item, _, _ in items]
    summary = (
        f"{len(changes)} matri{'x' if len(changes) == 1 else 'ces'} in both checkpoints compared; "
        f"{len(document.get('shape_changed') or [])} reshaped, {len(document.get('missing') or [])} missing from "
        f"the new one, {len(document.get('added') or [])} added"
    )
    stack = "For a stack of matrices each number describes the matrix of the stack with the largest update. "
    out = _intro_html(document, changes, summary, stack)
    out.append("<h2>Changes</h2>")
    if changes:
        head = ["name", "role", "layer", "shape", *[k for k, _ in _CHANGE_COLUMNS], "converged", "stack_index"]
        rows = []
        for _, name, c, layer, role in items:
            index = "" if c.get("stack_index") is None else str(list(c["stack_index"]))
            numbers = [_cell(c.get(k), spec) for k, spec in _CHANGE_COLUMNS]
            rows.append(_matrix_row(c, name, role, layer, [], numbers, index))
        out += _table_html("changes", head, rows)
        out.append(
            "<p>relative_change = (spectral_norm_new &minus; spectral_norm_old) / spectral_norm_old; "
            "update_norm = &#8214;W<sub>new</sub> &minus; W<sub>old</sub>&#8214;<sub>2</sub>; update_ratio = "
            "update_norm / spectral_norm_old; cos_u, cos_v: |cosine| of the top left and right singular vectors. "
            "Exact values in each cell's <code>data-value</code> and in the JSON's <code>changes</code>.</p>"
        )
    else:
        out.append("<p>No matrix in both checkpoints.</p>")
    reshaped = [
        f"{_escape(s.get('name', ''))}: {'x'.join(map(str, s.get('old_shape') or ()))} -> "
        f"{'x'.join(map(str, s.get('new_shape') or ()))}"
        for s in document.get("shape_changed") or []
    ]
    out += _names_list("Shape changed", reshaped)
    out += _names_list("Missing (old checkpoint only)", document.get("missing") or [])
    out += _names_list("Added (new checkpoint only)", document.get("added") or [])
    not_compared = [f"{s.get('name', '')}: {s.get('reason', '')}" for s in document.get("skipped") or []]
    out += _names_list("In both, not compared", not_compared)
    return out, ("new", "old", "seed", "tol")


def _series_body(document, items):
    labels = document["checkpoints"]
    out = [f"<p>{len(items)} matrices followed over {len(labels)} checkpoints, in this order:</p><ul>"]
    out += [f"<li>[{i}] {_text(p)}</li>" for i, p in enumerate(labels)]
    out.append("</ul>")
    out.append("<h2>Figures</h2>")
    stack = "For a stack of matrices each number describes the matrix of the stack with the largest σ1. "
    out.append(f"<p>{_FIGURES_NOTE.format(stack=stack)}</p>")
    out += _figures_html(document)
    out.append("<h2>Trajectories</h2>")
    fields = []
    for _, _, item, _, _ in items:
        fields += [k for k, v in item.items() if isinstance(v, list) and k not in fields]
    for field in fields:
        out.append(f"<h3>{_text(field)}</h3>")
        rows = []
        for _, name, item, layer, role in items:
            values = item.get(field) or []
            cells = [*_head_cells(name, role, layer), *[_cell(v, ".6g") for v in values]]
            rows.append("<tr>" + "".join(cells) + "</tr>")
        out += _table_html(f"series-{field}", ["name", "role", "layer", *[f"[{i}]" for i in range(len(labels))]], rows)
    out.append(
        "<p>A dash: the matrix is not in that checkpoint, or the value is undefined. Exact values in each cell's "
        "<code>data-value</code> and in the JSON's <code>matrices</code>, under the table's title.</p>"
    )
    return out, ("seed", "tol", "maxiter", "conv", "spectrum")


def html_report(document, *, title=None):
    """An audit, a comparison or a training run as one self-contained HTML page: figures and tables.

    Parameters
    ----------
    document : dict
        A JSON document of ``audit --json`` (an audit, ``--against`` or ``--series``; see
        `document_kind`), or `document_from_audit` of `audit_checkpoint`'s result; the keys it
        reads are listed in the module docstring.
    title : str, optional
        Heading of the page (default: "Spectral audit of" the document's ``path``,
        "... against ..." for a comparison, "Training run of N checkpoints" for a series).

    Returns
    -------
    page : str
        The HTML page: the figures of `figure_data` drawn by `draw_figure`, then the tables.
        Figures are PNG ``data:`` URIs; there is no script and nothing is fetched. Names, dtypes
        and reasons are shown with non-printable characters escaped as ``repr`` does and then
        HTML-escaped.

    Raises
    ------
    TypeError
        If `document` is none of the audit's JSON documents.
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
    kind = document_kind(document)
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("the HTML report needs matplotlib: pip install 'linalg_lowrank[report]'") from exc
    items = _items(document, kind)
    if title is not None:
        heading = title
    elif kind == "comparison":
        heading = f"Spectral changes of {document.get('new')} against {document.get('old')}"
    elif kind == "series":
        heading = f"Training run of {len(document['checkpoints'])} checkpoints"
    else:
        path = document.get("path")
        heading = f"Spectral audit of {path}" if path else "Spectral audit"
    body, setting_keys = {"audit": _audit_body, "comparison": _comparison_body, "series": _series_body}[kind](
        document, items
    )
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
        *body,
    ]
    settings = [(k, document[k]) for k in setting_keys if k in document]
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
