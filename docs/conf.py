"""Sphinx configuration: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.

Nothing is fetched at build time (no intersphinx inventories) and nothing is executed: the
notebooks in ``notebooks/`` (linked here as ``docs/notebooks``) are rendered with the outputs
stored in them; ``tests/docs/test_notebooks.py`` runs them.
"""

from __future__ import annotations

import importlib

import gpytorch_rntk

project = "gpytorch-rntk"
author = "the gpytorch-rntk authors"
copyright = "2026, the gpytorch-rntk authors"
release = gpytorch_rntk.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# MyST (Markdown pages and notebook cells): $...$ and $$...$$ math, amsmath environments.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# myst-nb: render the outputs stored in the notebooks; never execute them here.
nb_execution_mode = "off"

# autodoc + napoleon: Google-style docstrings.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# A method without a docstring of its own (e.g. a model's forward) is left out rather than
# shown with torch.nn.Module's generic text.
autodoc_inherit_docstrings = False

html_theme = "furo"
html_title = f"gpytorch-rntk {release}"

# Modules whose optional dependencies may be missing: documented only when they import.
OPTIONAL_MODULES = {"gpytorch_rntk.botorch": "BoTorch helpers (``gpytorch_rntk.botorch``)"}


def _optional_api_sections() -> str:
    text = ""
    for module, title in OPTIONAL_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        text += f"\n\n{title}\n{'-' * len(title)}\n\n.. automodule:: {module}\n   :members:\n"
    return text


def _add_optional_api(app, docname: str, source: list[str]) -> None:
    if docname == "api":
        source[0] += _optional_api_sections()


def setup(app):
    app.connect("source-read", _add_optional_api)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
