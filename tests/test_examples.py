"""The gallery's conventions, checked without running the examples.

The docs build (scripts/test.sh) executes every examples/plot_*.py through sphinx-gallery and
fails on an exception, a RuntimeWarning or a ConvergenceWarning (docs/tools/gallery_warnings.py),
so running them again here would only double the cost. What the build does not check is the
shape of an example (a titled docstring, cells, labelled figures with a caption) and that the
gallery configuration runs every example and fetches nothing; that is checked here, statically:
docs/conf.py is parsed, not imported (importing it would set the process's thread limits).
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))


def _gallery_conf():
    tree = ast.parse((ROOT / "docs" / "conf.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "sphinx_gallery_conf" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("docs/conf.py defines no sphinx_gallery_conf")


def test_there_are_examples():
    assert len(EXAMPLES) >= 7, [p.name for p in EXAMPLES]


def test_every_example_is_executed_by_the_docs_build():
    conf = _gallery_conf()
    assert conf["examples_dirs"] == "../examples"
    for path in EXAMPLES:
        # sphinx-gallery matches filename_pattern with re.search against the file's path
        assert re.search(conf["filename_pattern"], path.as_posix()), path.name
        assert not re.search(conf["ignore_pattern"], path.as_posix()), path.name


def test_a_failing_example_fails_the_build():
    conf = _gallery_conf()
    assert conf["only_warn_on_example_error"] is False
    assert not conf["expected_failing_examples"]
    assert "gallery_warnings.errors_on_runtime_warnings" in conf["reset_modules"]
    assert conf["reset_modules_order"] == "both"  # the filters are restored after each example


def test_the_gallery_fetches_nothing():
    conf = _gallery_conf()
    assert conf["binder"] == {}
    assert conf["jupyterlite"] == {}
    # code links resolve against our own pages only (None = this build)
    assert all(url is None for url in conf["reference_url"].values())
    # the execution-times page loads DataTables from a CDN
    assert conf["write_computation_times"] is False


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_shape(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    doc = ast.get_docstring(tree, clean=False)
    assert doc, f"{path.name}: no module docstring"
    lines = doc.strip("\n").splitlines()
    title, underline = lines[0], lines[1]
    assert title.strip() and set(underline) == {"="} and len(underline) == len(title), (
        f"{path.name}: the docstring must start with a title underlined by '=' of the same length"
    )
    assert any(line.strip() for line in lines[2:]), f"{path.name}: no paragraph after the title"
    assert source.count("\n# %%\n") >= 2, f"{path.name}: code must be split into cells (# %%)"
    n_figures = source.count("plt.subplots(")
    assert n_figures >= 1, f"{path.name}: no figure"
    # every figure gets a caption cell that states what was measured
    captions = re.findall(r"^# \*\*Figure[^*]*\*\*", source, flags=re.MULTILINE)
    assert captions, f"{path.name}: no caption cell (# **Figure ...**)"
    assert "Measured" in source, f"{path.name}: the caption must say what was measured"
    for call in ("set_xlabel(", "set_ylabel(", "legend("):
        assert call in source, f"{path.name}: figures need {call[:-1]}"
    # reproducible: every random source is seeded
    assert "default_rng()" not in source and "np.random.seed" not in source, path.name
