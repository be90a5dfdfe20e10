"""Sphinx configuration of the bayes_persona docs (``python -m sphinx -W -b html docs docs/_build/html``).

The notebooks are rendered from their stored outputs (myst-nb, no re-execution): they are
copied from ``../notebooks`` into ``docs/notebooks`` (git-ignored) when the build starts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import bayes_persona

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

project = "bayes_persona"
author = "bayes_persona developers"
copyright = "2026, bayes_persona developers"
release = version = bayes_persona.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "make_readme_figure.py", "pypi.md"]
nb_execution_mode = "off"  # the notebooks carry their outputs; CI reruns them as tests
myst_enable_extensions = ["dollarmath", "amsmath"]
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
autodoc_typehints = "none"  # the numpydoc sections state types and shapes
autodoc_member_order = "bysource"
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "pydata_sphinx_theme"
html_title = f"bayes_persona {version}"
html_theme_options = {"navigation_with_keys": False}
html_static_path: list[str] = []


def _copy_notebooks(app) -> None:  # noqa: ARG001
    dest = HERE / "notebooks"
    dest.mkdir(exist_ok=True)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, dest / nb.name)


def setup(app) -> None:
    app.connect("builder-inited", _copy_notebooks)
