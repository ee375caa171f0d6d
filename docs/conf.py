"""Sphinx configuration of the sqjobs documentation (``sphinx-build -W -b html docs docs/_build``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "sqjobs"
author = "the sqjobs developers"
copyright = "2026, the sqjobs developers"  # noqa: A001  (Sphinx's name)
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "sphinx_click",
    "sqjobs_settings",
]

html_theme = "furo"
html_title = "sqjobs"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
nitpicky = False
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
typehints_fully_qualified = False
always_document_param_types = False
suppress_warnings = ["ref.python"]
doctest_test_doctest_blocks = ""  # only .. doctest:: blocks; the tour runs against the demo daemon (tests/test_readme.py)
