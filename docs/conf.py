"""Sphinx configuration of the uhrops documentation site.

Built offline with ``python -m sphinx -W -b html docs docs/_build/html`` (no intersphinx,
nothing downloaded). The API pages are generated from the docstrings (autodoc + napoleon);
the benchmark tables, the command-line reference and the pictures are generated at build time
by ``docs/_ext/uhrops_docs.py`` from the code and ``benchmarks/results``.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, HERE)  # docs/pictures.py

import uhrops  # noqa: E402

project = "uhrops"
author = "the uhrops developers"
copyright = "2026, the uhrops developers"
release = uhrops.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "uhrops_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": False, "show-inheritance": True}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Convention:" blocks read as a titled section, like "Args:" and "Returns:"
napoleon_custom_sections = [("Convention", "notes_style")]
nitpicky = False
suppress_warnings = ["myst.header"]

html_theme = "pydata_sphinx_theme"
html_title = f"uhrops {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "icon_links": [],
}
