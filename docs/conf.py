"""Sphinx configuration for the meshgate docs."""

from __future__ import annotations

project = "meshgate"
author = "meshgate developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "trio": ("https://trio.readthedocs.io/en/stable", None),
}
exclude_patterns = ["_build"]
html_theme = "alabaster"
