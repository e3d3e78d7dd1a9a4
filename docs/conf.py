"""Sphinx configuration of the nrsdark_dask site (``make docs``; CI builds it with -W)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

from nrsdark_dask import __version__  # noqa: E402

project = "nrsdark_dask"
author = "nrsdark_dask developers"
release = version = __version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon",
              "sphinx.ext.viewcode", "nrsdark_cli"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
# jwst, stcal and stdatamodels are imported inside functions; nothing to mock
html_theme = "furo"
html_title = f"nrsdark_dask {version}"
suppress_warnings = ["myst.header"]  # pages moved from the README start at level 1
