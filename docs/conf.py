"""Sphinx configuration for the meshgate docs (built in CI with -W)."""

from __future__ import annotations

project = "meshgate"
author = "meshgate developers"
extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
myst_enable_extensions = ["colon_fence"]
suppress_warnings = ["myst.header"]
