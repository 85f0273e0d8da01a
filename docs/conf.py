"""Sphinx configuration of the pixelkernels site (`make docs`; issue 39).

Warnings are errors and cross-references are nitpicky, so a renamed function or a broken link
fails the build. No intersphinx: CI builds offline, so the few external types the signatures
name (torch's) are listed in ``nitpick_ignore`` instead of resolved against a remote inventory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
os.environ.setdefault("MPLBACKEND", "Agg")

import pixelkernels  # noqa: E402

project = "pixelkernels"
author = "the pixelkernels authors"
copyright = "2026, the pixelkernels authors"
release = pixelkernels.__version__.split("+")[0]
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "pk_sphinx",  # docs/_ext: the speed pages and the --help pages, generated at build time
]
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "examples/README.rst", "gallery/*.ipynb",
                    "gallery/*.py", "gallery/*.md5", "gallery/*.zip", "gallery/*.codeobj.json"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

nitpicky = True
nitpick_ignore_regex = [
    # torch, numpy and the standard library's types as they appear in signatures and napoleon
    # sections: no intersphinx offline
    ("py:class", r"(torch|numpy|np|pathlib|collections\.abc|typing|argparse)\..*"),
    ("py:class", r"(Tensor|optional|callable|tensor|dtype|device|Generator|Path|Module|Dataset)"),
    ("py:class", r"(int|float|str|bool|tuple|list|dict|None|object|type)( \| None)?"),
    ("py:class", r"(array-like|sequence|iterable).*"),
    ("py:class", r"pixelkernels\..*\._.*"),  # private bases (PixelModel's helpers)
    ("py:obj", r"(torch|numpy)\..*"),
    ("py:func", r"(torch|numpy|scipy)\..*"),
    ("py:mod", r"(torch|numpy|scipy)(\..*)?"),
]

autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_default_options = {"undoc-members": False}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"pixelkernels {release}"
html_static_path = ["_static"]

# Every `>>>` block on the site (docstrings and pages) is run by `sphinx-build -b doctest`.
doctest_global_setup = """
from pathlib import Path
import torch
import pixelkernels as pk
torch.manual_seed(0)
"""
doctest_test_doctest_blocks = "default"

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "gallery",
    "filename_pattern": r"/plot_",  # every example is executed, at CPU sizes
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "abort_on_example_error": True,
    "show_memory": False,
    "min_reported_time": 1,
    "reset_modules": ("matplotlib",),
}
