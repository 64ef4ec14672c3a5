"""Sphinx configuration for linalg_lowrank.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build also runs the gallery (examples/plot_*.py, through sphinx-gallery) and fails if an
example raises or emits a RuntimeWarning; ``-D plot_gallery=0`` renders it without running it.
"""

import pathlib
import sys

import matplotlib
import numba
from threadpoolctl import threadpool_limits

import linalg_lowrank

# Examples and plot directives draw off-screen, the same on every machine.
matplotlib.use("Agg")
# The gallery's matrices are small (a few hundred rows), where one thread is as fast as two; on
# a loaded 2-core machine two spinning OpenBLAS threads made the examples 3-10 times slower, and
# waking numba's thread pool for spectral_weight_decay on a 64 x 65 matrix took 34 ms instead of
# 0.04 ms (measured while building this gallery). The limits hold for the whole build.
threadpool_limits(1, user_api="blas")
numba.set_num_threads(1)
# docs/tools holds build helpers named by import path below (docs/tools/gallery_warnings.py).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "tools"))

# -- Project -----------------------------------------------------------------------------------
project = "linalg_lowrank"
author = "the linalg_lowrank developers"
copyright = "the linalg_lowrank developers"
version = release = linalg_lowrank.__version__

# -- Extensions --------------------------------------------------------------------------------
# No sphinx.ext.intersphinx: the build must work without network access.
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    # MathJax served from _static (bundled by the package), so formulas render offline; it sets
    # mathjax_path. scripts/test.sh checks that no built page loads anything from the network.
    "sphinx-mathjax-offline",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "dev", "tools"]  # dev/: the contributor docs (Markdown)
root_doc = "index"
# Single backticks in docstrings (`power_iteration`) become cross-references where they resolve
# and plain code otherwise (numpy and scipy do the same).
default_role = "autolink"

# -- autodoc / autosummary ---------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"

# -- numpydoc ----------------------------------------------------------------------------------
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_show_inherited_class_members = False
# Docstring/signature agreement is checked by tests/test_docstrings.py, not by the build;
# an empty set keeps numpydoc's validation from emitting warnings.
numpydoc_validation_checks = set()
numpydoc_xref_param_type = False
numpydoc_use_plots = False

# -- Plots built from code at build time -------------------------------------------------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"
plot_rcparams = {"figure.figsize": (6.4, 4.0), "font.size": 10}

# -- HTML --------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"linalg_lowrank {release}"
html_static_path = []
html_theme_options = {
    "description": "Numerical linear algebra for neural-network optimizer research",
    "fixed_sidebar": True,
}

# -- Gallery (sphinx-gallery) ------------------------------------------------------------------
# examples/plot_*.py run at every clean build (CI builds from a clean clone, so all of them run;
# locally only changed ones re-run). What it writes into docs/ (auto_examples/,
# sg_execution_times.rst) is generated and git-ignored. Nothing is fetched: no Binder, no
# JupyterLite, and code links resolve only against our own API pages.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_[^/]*\.py$",  # every plot_*.py is executed
    "ignore_pattern": r"__init__\.py|/_[^/]*\.py$",
    "within_subsection_order": "FileNameSortKey",
    # A failing example fails the build: by default sphinx-gallery collects every failure and
    # raises at the end (so --keep-going still shows all of them); never only warn.
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "expected_failing_examples": [],
    "binder": {},
    "jupyterlite": {},
    "reference_url": {"linalg_lowrank": None},
    "doc_module": (),
    "backreferences_dir": None,
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "min_reported_time": 0,
    # sg_execution_times.rst would load DataTables from a CDN (docs/tools/check_offline.py
    # rejects that). Per-example times are in each example's footer, in
    # docs/auto_examples/*.cost.json and in the build log's "computation time summary".
    "write_computation_times": False,
    # Fresh matplotlib state per example, and RuntimeWarning / ConvergenceWarning are errors
    # while an example runs (docs/tools/gallery_warnings.py), as in the test suite.
    "reset_modules": ("matplotlib", "gallery_warnings.errors_on_runtime_warnings"),
    "reset_modules_order": "both",
    "plot_gallery": "True",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
}
