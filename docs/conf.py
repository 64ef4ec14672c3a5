"""Sphinx configuration for linalg_lowrank.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import linalg_lowrank

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
