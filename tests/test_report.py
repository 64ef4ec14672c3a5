"""The HTML report of an audit (``audit --report``): valid, self-contained, and showing the JSON's numbers.

The report of the built-in demo checkpoint is made once through the command line together with
``--json``, so the table can be compared with the JSON document of the same run (``time_s`` differs
between runs). The browser test renders it with headless Chromium when that is installed.
"""

import base64
import contextlib
import html
import io
import json
import math
import os
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest

from linalg_lowrank import audit, report
from linalg_lowrank.report import document_from_audit, figure_data, html_report, layer_index, matrix_role

PIL_Image = pytest.importorskip("PIL.Image", reason="PIL comes with matplotlib, which the report needs")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_VOID = {"meta", "img", "br", "hr", "link", "input", "col", "wbr", "area", "base", "source"}
_ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "figure", "img", "figcaption", "code",
    "table", "thead", "tbody", "tr", "th", "td", "dl", "dt", "dd", "h3", "ul", "li", "sub",
}  # fmt: skip
# Attributes through which a browser fetches something.
_FETCH_ATTRS = {"src", "href", "srcset", "poster", "data", "action", "formaction", "background", "xlink:href"}


class _Page(HTMLParser):
    """Collects tags, checks nesting, and keeps the summary table's rows as (attrs, text) cells."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.errors, self.stack, self.tags, self.imgs, self.styles = [], [], [], [], []
        self.doctype = None
        self.tables = {}  # id -> list of rows, a row a list of (attrs, text)
        self._table = self._cell = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "img":
            self.imgs.append(attrs)
        if "style" in attrs:
            self.styles.append(attrs["style"])
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = [attrs, ""]
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data
        if self.stack and self.stack[-1] == "style":
            self.styles.append(data)


def parse(page):
    p = _Page()
    p.feed(page)
    p.close()
    return p


def _run_cli(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = audit.main(argv)
    return status, out.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(JSON document, HTML text, HTML path) of one ``audit DEMO --json --report`` run."""
    d = tmp_path_factory.mktemp("report")
    ckpt = audit.write_demo_checkpoint(os.path.join(d, "demo.safetensors"))
    out = d / "audit.html"
    status, stdout = _run_cli([ckpt, "--json", "--report", str(out), "--no-progress"])
    assert status == 0
    return json.loads(stdout), out.read_text(encoding="utf-8"), out


_RUN_ROLES = (
    ("self_attn.q_proj", 24, 24),
    ("self_attn.k_proj", 24, 24),
    ("self_attn.v_proj", 24, 24),
    ("self_attn.o_proj", 24, 24),
    ("mlp.up_proj", 64, 24),
    ("mlp.down_proj", 24, 64),
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three checkpoints of a small transformer-named "run", and for each kind of report the CLI run with
    ``--json --report``: {kind: (JSON document as printed, HTML text, HTML path, data every drawn figure got)}.
    """
    d = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(1)
    weights = {"model.embed_tokens.weight": rng.standard_normal((80, 24)).astype(np.float32)}
    for layer in range(3):
        for role, m, n in _RUN_ROLES:
            weights[f"model.layers.{layer}.{role}.weight"] = (rng.standard_normal((m, n)) / np.sqrt(n)).astype(
                np.float32
            )
    weights["model.layers.0.input_layernorm.weight"] = np.ones(24, dtype=np.float32)
    steps = []
    for t in range(3):
        path = d / f"step_{10 * t}.npz"
        np.savez(path, **weights)
        steps.append(str(path))
        # a "training step": every matrix moves by a random low-rank update of its own size
        weights = {
            k: (
                w + 0.3 * np.outer(rng.standard_normal(w.shape[0]), rng.standard_normal(w.shape[1])) / w.shape[1]
            ).astype(np.float32)
            if w.ndim == 2
            else w
            for k, w in weights.items()
        }
    argvs = {
        "audit": [steps[-1], "--spectrum", "12"],
        "comparison": [steps[-1], "--against", steps[0]],
        "series": [str(d), "--series", "--spectrum", "6"],
    }
    out = {}
    for kind, argv in argvs.items():
        drawn = []
        real = report.draw_figure
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(
                report, "draw_figure", lambda data, drawn=drawn, real=real, **kw: drawn.append(data) or real(data, **kw)
            )
            html_path = d / f"{kind}.html"
            status, stdout = _run_cli([*argv, "--json", "--report", str(html_path), "--no-progress"])
        assert status == 0
        out[kind] = (json.loads(stdout), html_path.read_text(encoding="utf-8"), html_path, drawn)
    return out


def _resolve(document, path):
    value = document
    for key in path:
        value = value[key]
    return value


_EXPECTED_FIGURES = {
    "audit": ["spectral_norm", "stable_rank", "spectrum.alpha", "spectrum.effective_rank", "ratio_estimate",
              "spectrum.values"],
    "comparison": ["relative_change", "update_ratio", "cos_u", "cos_v"],
    "series": ["spectral_norm", "stable_rank", "effective_rank", "alpha"],
}  # fmt: skip


@pytest.mark.parametrize("kind", ["audit", "comparison", "series"])
def test_every_plotted_number_is_in_the_json_under_its_name(run, kind):
    # The data the report's drawing received while the command ran, against the JSON the same command printed.
    doc, page, _, drawn = run[kind]
    assert report.document_kind(doc) == kind
    assert [data["key"] for data in drawn] == _EXPECTED_FIGURES[kind]
    assert len(parse(page).imgs) == len(drawn)
    assert [a["id"] for t, a in parse(page).tags if t == "figure"] == [data["id"] for data in drawn]
    n_points = 0
    for data in drawn:
        key = tuple(data["key"].split("."))
        for panel in data["panels"]:
            for series in panel["series"]:
                for point in series["points"]:
                    path = tuple(point["path"])
                    item_path = path[:2]
                    entry = _resolve(doc, item_path)
                    # the value sits in the JSON at the stated place, under the figure's name, exactly
                    assert path[2 : 2 + len(key)] == key, (data["id"], path)
                    assert _resolve(doc, path) == point["y"], (data["id"], path)
                    assert entry.get("name", item_path[-1]) == point["name"]
                    assert entry["role"] == series["role"]
                    if data["kind"] == "depth":  # x is the layer, a JSON value too
                        assert point["x_path"] == (*item_path, "layer")
                        assert _resolve(doc, point["x_path"]) == point["x"]
                    else:  # x is the position in the plotted list
                        assert point["x"] == path[-1] + (1 if data["kind"] == "spectrum" else 0)
                    n_points += 1
    assert n_points > 20
    # figure_data of the printed JSON is what was drawn (nothing plotted comes from outside the document)
    assert figure_data(doc) == drawn


@pytest.mark.parametrize("kind", ["audit", "comparison", "series"])
def test_json_carries_layer_and_role_of_every_matrix(run, kind):
    doc = run[kind][0]
    entries = {"audit": lambda: doc["records"], "comparison": lambda: doc["changes"]}.get(
        kind, lambda: [dict(v, name=k) for k, v in doc["matrices"].items()]
    )()
    assert len(entries) == 19
    for entry in entries:
        assert entry["layer"] == layer_index(entry["name"]) and entry["role"] == matrix_role(entry["name"])
    assert {e["role"] for e in entries} == {"embedding", "attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"}


def test_spectrum_figure_shows_the_largest_sigma1_of_each_role(run):
    doc, page, _, drawn = run["audit"]
    (data,) = [d for d in drawn if d["kind"] == "spectrum"]
    shown = {s["role"]: s["points"][0]["name"] for p in data["panels"] for s in p["series"]}
    want = {}
    for r in doc["records"]:
        if r["role"] not in want or r["spectral_norm"] > want[r["role"]]["spectral_norm"]:
            want[r["role"]] = r
    assert shown == {role: r["name"] for role, r in want.items()}
    for p in data["panels"]:
        for s in p["series"]:
            assert [pt["y"] for pt in s["points"]] == want[s["role"]]["spectrum"]["values"]
            assert len(s["points"]) == 12
    assert "largest spectral_norm among those of that role" in html.unescape(page)


def test_comparison_and_series_tables_equal_json(run):
    doc, page, _, _ = run["comparison"]
    rows = parse(page).tables["changes"]
    head = [text for _, text in rows[0]]
    by_name = {c["name"]: c for c in doc["changes"]}
    assert len(rows) - 1 == len(by_name)
    for row in rows[1:]:
        cells = dict(zip(head, row, strict=True))
        change = by_name[cells["name"][1]]
        assert cells["role"][1] == change["role"] and cells["layer"][1] == (
            "" if change["layer"] is None else str(change["layer"])
        )
        for key in ("spectral_norm_old", "spectral_norm_new", "relative_change", "update_norm", "update_ratio"):
            assert float(cells[key][0]["data-value"]) == change[key]
        assert change["update_ratio"] == pytest.approx(change["update_norm"] / change["spectral_norm_old"], rel=1e-12)
    doc, page, _, _ = run["series"]
    tables = parse(page).tables
    for field in ("spectral_norm", "stable_rank", "frobenius_norm", "effective_rank", "alpha"):
        rows = tables[f"series-{field}"]
        assert len(rows) - 1 == len(doc["matrices"])
        for row in rows[1:]:
            values = doc["matrices"][row[0][1]][field]
            assert [None if a["data-value"] == "" else float(a["data-value"]) for a, _ in row[3:]] == values


@pytest.mark.parametrize("kind", ["audit", "comparison", "series"])
def test_new_report_images_are_png(run, kind):
    _, page, _, drawn = run[kind]
    imgs = parse(page).imgs
    assert len(imgs) == len(drawn) >= 4
    for attrs in imgs:
        data = base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
        assert data.startswith(_PNG_SIGNATURE)
        with PIL_Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 200
            im.load()
            assert len(im.getcolors(maxcolors=1 << 16) or range(2)) > 1
        assert attrs.get("alt")


def test_report_is_well_formed_html(demo):
    _, page, _ = demo
    p = parse(page)
    assert p.doctype is not None and p.doctype.lower() == "doctype html"
    assert p.errors == [] and p.stack == []
    tags = [t for t, _ in p.tags]
    assert tags[0] == "html" and tags.count("html") == tags.count("head") == tags.count("body") == 1
    assert {t for t in tags} <= _ALLOWED_TAGS, {t for t in tags} - _ALLOWED_TAGS
    assert tags.count("title") == 1
    # The shipped page itself forbids the browser to fetch anything (defence in depth for names).
    csp = [a["content"] for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0] and "script-src" not in csp[0]


def test_report_fetches_nothing(demo):
    _, page, _ = demo
    p = parse(page)
    for tag, attrs in p.tags:
        for name, value in attrs.items():
            if name in _FETCH_ATTRS:
                assert value is not None and value.startswith("data:"), (tag, name, (value or "")[:80])
            assert not re.search(r"https?:|^\s*//", value or "", re.IGNORECASE), (tag, name, value)
    for css in p.styles:
        for url in re.findall(r"url\(\s*['\"]?([^)'\"]*)", css):
            assert url.startswith("data:"), url
        assert "@import" not in css and not re.search(r"https?:|//", css)
    assert not re.search(r"(?:src|href)\s*=\s*['\"]?\s*(?:https?:)?//", page, re.IGNORECASE)


def test_report_images_are_png(demo):
    _, page, _ = demo
    imgs = parse(page).imgs
    assert len(imgs) == 3  # spectral_norm, stable_rank, ratio_estimate: the demo has no alpha
    for attrs in imgs:
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix)
        data = base64.b64decode(attrs["src"][len(prefix) :], validate=True)
        assert data.startswith(_PNG_SIGNATURE)
        with PIL_Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 200
            im.load()
            assert len(im.getcolors(maxcolors=1 << 16) or range(2)) > 1
        assert attrs.get("alt")


def test_report_table_equals_json(demo):
    doc, page, _ = demo
    rows = parse(page).tables["summary"]
    head = [text for _, text in rows[0]]
    by_name = {r["name"]: r for r in doc["records"]}
    assert len(rows) - 1 == len(doc["records"]) == len(by_name)
    text_keys = ("name", "role", "layer", "shape", "dtype", "converged", "view")
    numeric = [k for k in head if k in doc["records"][0] and k not in text_keys]
    assert {"spectral_norm", "frobenius_norm", "stable_rank", "rms", "ratio_estimate", "time_s"} <= set(numeric)
    seen = set()
    for row in rows[1:]:
        cells = dict(zip(head, row, strict=True))
        rec = by_name[cells["name"][1]]  # demo names are printable: shown as they are
        seen.add(rec["name"])
        assert cells["shape"][1] == "x".join(map(str, rec["shape"]))
        assert cells["dtype"][1] == rec["dtype"]
        assert cells["converged"][1] == ("yes" if rec["converged"] else "NO")
        assert cells["layer"][1] == ("" if layer_index(rec["name"]) is None else str(layer_index(rec["name"])))
        assert rec["layer"] == layer_index(rec["name"]) and cells["role"][1] == rec["role"] == matrix_role(rec["name"])
        for key in numeric:
            attrs, text = cells[key]
            want = rec[key]
            if want is None:
                assert attrs["data-value"] == ""
                continue
            assert float(attrs["data-value"]) == want, (rec["name"], key)  # exact: repr round-trips
            assert math.isclose(float(text), want, rel_tol=5e-6 if key != "time_s" else 5e-3), (rec["name"], key, text)
    assert seen == set(by_name)
    skipped_rows = parse(page).tables["skipped"]
    assert [row[0][1] for row in skipped_rows[1:]] == [s["name"] for s in doc["skipped"]]


def test_report_escapes_hostile_names(tmp_path):
    rng = np.random.default_rng(0)
    script = "layers.0.attn.q_proj.<script>alert(1)</script>"
    ansi = "layers.1.mlp.down.\x1b[31mred\x1b[0m"
    attr = 'embed"><img src=http://example.com/x.png>'
    tensors = {
        script: ("F32", rng.standard_normal((6, 4))),
        ansi: ("F32", rng.standard_normal((5, 3))),
        attr: ("F32", rng.standard_normal((4, 4))),
        "</td></tr><script>x()</script>": ("I64", np.arange(3)),
    }
    path = str(tmp_path / "hostile.safetensors")
    audit._write_safetensors(path, tensors)
    records, skipped = audit.audit_checkpoint(path)
    page = html_report(document_from_audit(records, skipped, path="<script>path</script>"))
    assert "<script" not in page.lower() and "\x1b" not in page
    p = parse(page)
    assert not [a for _, attrs in p.tags for a in attrs.values() if a and "http:" in a]  # only in text
    assert p.errors == [] and {t for t, _ in p.tags} <= _ALLOWED_TAGS
    assert all(a["src"].startswith("data:image/png;base64,") for a in p.imgs)
    names = {row[0][1] for row in p.tables["summary"][1:]}
    # Shown as text: HTML-escaped, and non-printables as repr escapes (the terminal table's rule).
    assert names == {script, "layers.1.mlp.down.\\x1b[31mred\\x1b[0m", attr}
    assert p.tables["skipped"][1][0][1] == "</td></tr><script>x()</script>"
    title = [t for t, _ in p.tags].index("title")
    assert title >= 0 and html.escape("<script>path</script>") in page


def test_hostile_names_in_the_spectrum_legend_and_series_tables(tmp_path):
    # Names reach matplotlib's legend (where $...$ would be mathtext) and the tables' ids and cells.
    rng = np.random.default_rng(0)
    math_name = r"layers.0.attn.q_proj.$\undefinedcommand{x}$"  # two dollars: mathtext, if not escaped
    ctrl_name = "layers.1.mlp.up.\x1b[31m"
    tensors = {math_name: ("F32", rng.standard_normal((6, 5))), ctrl_name: ("F32", rng.standard_normal((7, 5)))}
    path = str(tmp_path / "hostile.safetensors")
    audit._write_safetensors(path, tensors)
    records, skipped = audit.audit_checkpoint(path, spectrum=4)
    doc = document_from_audit(records, skipped)
    (spectrum,) = [f for f in figure_data(doc) if f["kind"] == "spectrum"]
    assert {s["points"][0]["name"] for p in spectrum["panels"] for s in p["series"]} == {math_name, ctrl_name}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a control character would be a missing glyph: shown escaped instead
        p = parse(html_report(doc))
    assert p.errors == [] and len(p.imgs) == len(figure_data(doc)) >= 4
    series = {
        "checkpoints": ["a", "b"],
        "matrices": {'x"><script>': {"spectral_norm": [1.0, 2.0]}},
    }
    series["matrices"]['x"><script>']['y" onload="'] = [3.0, None]
    page = html_report(series)
    assert "<script" not in page and 'onload="' not in page
    p = parse(page)
    assert p.errors == [] and {t for t, _ in p.tags} <= _ALLOWED_TAGS | {"ul", "li", "h3"}
    assert p.tables['series-y" onload="'][1][0][1] == 'x"><script>'


def test_optional_fields_are_plotted_when_present(demo):
    doc, _, _ = demo
    with_alpha = dict(doc, records=[dict(r, alpha=2.0 + 0.1 * i) for i, r in enumerate(doc["records"])])
    p = parse(html_report(with_alpha))
    assert len(p.imgs) == 4
    head = [text for _, text in p.tables["summary"][0]]
    assert "alpha" in head and "effective_rank" not in head
    assert [float(row[head.index("alpha")][0]["data-value"]) for row in p.tables["summary"][1:]] == [
        r["alpha"] for r in with_alpha["records"]
    ]
    # A quantity missing from every record is neither a figure nor a column.
    none = dict(doc, records=[{k: v for k, v in r.items() if k != "stable_rank"} for r in doc["records"]])
    p = parse(html_report(none))
    assert len(p.imgs) == 2 and "stable_rank" not in [text for _, text in p.tables["summary"][0]]


def test_layer_and_role_keys_of_a_record_win_over_the_name(demo):
    doc, _, _ = demo
    given = dict(doc, records=[dict(r, layer=40 + i, role="attn.v") for i, r in enumerate(doc["records"])])
    rows = parse(html_report(given)).tables["summary"]
    head = [text for _, text in rows[0]]
    assert [row[head.index("layer")][1] for row in rows[1:]] == [str(40 + i) for i in range(len(doc["records"]))]
    assert {row[head.index("role")][1] for row in rows[1:]} == {"attn.v"}


def test_cli_report_to_unwritable_path(tmp_path, capsys):
    target = tmp_path / "no such dir" / "audit.html"
    assert audit.main(["--no-progress", "--report", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("linalg_lowrank audit: error: --report ") and "audit.html" in err and err.count("\n") == 1
    assert not target.exists()


def test_empty_and_bad_documents():
    p = parse(html_report({"records": [], "skipped": []}))
    assert p.errors == [] and p.imgs == [] and "summary" not in p.tables
    with pytest.raises(TypeError, match="`document`"):
        html_report([])


@pytest.mark.parametrize(
    ("name", "layer", "role"),
    [
        ("model.layers.12.self_attn.q_proj.weight", 12, "attn.q"),
        ("model.layers.3.self_attn.k_proj.weight", 3, "attn.k"),
        ("model.layers.3.self_attn.v_proj.weight", 3, "attn.v"),
        ("model.layers.3.self_attn.o_proj.weight", 3, "attn.o"),
        ("model.layers.3.mlp.gate_proj.weight", 3, "mlp.gate"),
        ("model.layers.3.mlp.up_proj.weight", 3, "mlp.up"),
        ("model.layers.3.mlp.down_proj.weight", 3, "mlp.down"),
        ("model.embed_tokens.weight", None, "embedding"),
        ("lm_head.weight", None, "embedding"),
        ("transformer.h.3.attn.c_attn.weight", 3, "attn.qkv"),
        ("transformer.h.3.attn.c_proj.weight", 3, "attn.o"),
        ("transformer.h.3.mlp.c_fc.weight", 3, "mlp.up"),
        ("transformer.h.3.mlp.c_proj.weight", 3, "mlp.down"),
        ("transformer.wte.weight", None, "embedding"),
        ("bert.encoder.layer.5.attention.self.query.weight", 5, "attn.q"),
        ("bert.encoder.layer.5.attention.output.dense.weight", 5, "attn.o"),
        ("bert.encoder.layer.5.intermediate.dense.weight", 5, "mlp.up"),
        ("bert.encoder.layer.5.output.dense.weight", 5, "mlp.down"),
        ("layers.2.feed_forward.w1.weight", 2, "mlp.gate"),
        ("layers.2.feed_forward.w2.weight", 2, "mlp.down"),
        ("layers.2.feed_forward.w3.weight", 2, "mlp.up"),
        ("block_7.conv1.weight", 7, "other"),
        ("net.4.weight", 4, "other"),
        ("layers.1.experts.weight", 1, "mlp.other"),
        ("layers.1.attn.rel_pos", 1, "attn.other"),
        ("classifier.weight", None, "other"),
    ],
)
def test_layer_and_role_from_names(name, layer, role):
    assert layer_index(name) == layer
    assert matrix_role(name) == role


# ----------------------------------------------------------------------------------------------
# A real browser
# ----------------------------------------------------------------------------------------------


def _chromium():
    for exe in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(exe)
        if found:
            return found
    return None


def _headless(exe, tmp_path, *args, timeout=60):
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


# Injected only into the test's copy of the page: records every Content-Security-Policy violation
# (any attempt to fetch anything but a data: image or to run another script) and, after `load`, each
# image's decoded size and every Resource Timing entry, into a <pre> that --dump-dom prints.
_PROBE = """<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; \
style-src 'unsafe-inline'; script-src 'nonce-probe'">
<script nonce="probe">
window.__violations = [];
document.addEventListener("securitypolicyviolation",
                          e => window.__violations.push(e.blockedURI + " " + e.violatedDirective));
window.addEventListener("load", () => {
  const imgs = Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);
  const resources = performance.getEntriesByType("resource").map(e => e.name);
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({imgs: imgs, violations: window.__violations, resources: resources});
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.parametrize("kind", ["demo", "audit", "comparison", "series"])
def test_report_in_headless_chromium(demo, run, kind, tmp_path):
    # The demo's report, and the reports with the spectrum, change and trajectory figures.
    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium not found: `apt-get install chromium` (or run scripts/ci_deps.sh as root)")
    _, page, path = demo if kind == "demo" else run[kind][:3]
    pngs = []
    for attrs in parse(page).imgs:
        with PIL_Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))) as im:
            pngs.append(list(im.size))

    # 1. The probe: the page with its own policy swapped for the test's (same rules plus the probe's nonce).
    probed, n = re.subn(r'<meta http-equiv="Content-Security-Policy"[^>]*>', lambda m: _PROBE, page, count=1)
    assert n == 1
    probe_file = tmp_path / "probed.html"
    probe_file.write_text(probed, encoding="utf-8")
    res = _headless(exe, tmp_path, "--virtual-time-budget=3000", "--dump-dom", probe_file.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.DOTALL)
    assert m, f"no probe output (exit {res.returncode}): {res.stderr[-2000:]}"
    probe = json.loads(html.unescape(m.group(1)))
    assert probe["violations"] == []  # nothing was even attempted outside data: images and inline CSS
    assert [r for r in probe["resources"] if not r.startswith("data:")] == []
    assert [img[0] for img in probe["imgs"]] == [True] * len(pngs)
    assert [img[1:] for img in probe["imgs"]] == pngs  # every image decoded, at its PNG's size

    # 2. A screenshot of the page as shipped.
    shot = tmp_path / "shot.png"
    res = _headless(exe, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", path.as_uri())
    assert shot.exists(), f"no screenshot (exit {res.returncode}): {res.stderr[-2000:]}"
    with PIL_Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 1  # None: more colours than the cap
