"""Sphinx configuration of the torchgeo-dic3l documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``. Figures are
drawn while the pages are read (``docs/make_figures.py``), so the first build takes
some seconds longer than a plain Sphinx build.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS))

import torchgeo_dic3l  # noqa: E402

project = "torchgeo-dic3l"
author = "torchgeo-dic3l developers"
copyright = "torchgeo-dic3l developers"
release = torchgeo_dic3l.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "dic3l_docs",
]

# Markdown files are written by other parts of the project and pulled into the
# ``*_page.rst`` wrappers with ``.. include::``; they are not pages of their own.
exclude_patterns = ["_build", "performance.md", "benchmarks.md", "measurements"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
templates_path: list[str] = []

# Offline builds: no intersphinx; unresolved cross-references to other projects
# (torch, TorchGeo) stay plain text instead of failing the build.
nitpicky = False

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "separated"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = f"torchgeo-dic3l {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}
