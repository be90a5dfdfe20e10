"""The notebooks run end to end, and the committed ones carry their full-size outputs.

Executing them uses the smoke size (``BAYES_PERSONA_NOTEBOOK_SIZE=smoke``): each
runs in a fresh kernel on a temporary copy, never in place. ``02_movielens.ipynb`` needs
MovieLens 100K and is skipped, with the reason, when ``$BAYES_PERSONA_DATA`` lacks it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["01_quickstart.ipynb", "02_movielens.ipynb", "03_diagnostics.ipynb"]
NEEDS_MOVIELENS = {"02_movielens.ipynb"}


def _runner():
    spec = importlib.util.spec_from_file_location(
        "run_notebooks", NOTEBOOK_DIR / "run_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _has_movielens() -> tuple[bool, str]:
    root = os.environ.get("BAYES_PERSONA_DATA")
    if not root:
        return False, "MovieLens 100K needed: set BAYES_PERSONA_DATA to the folder holding ml-100k/"
    if not (Path(root) / "ml-100k" / "u.data").is_file():
        return False, f"MovieLens 100K needed: {root}/ml-100k has no u.data"
    return True, ""


def _first_stream(nb) -> str:
    """The first printed text of a notebook (its setup cell prints the size)."""
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                return o.text
    return ""


def test_the_runner_finds_every_notebook():
    assert [p.name for p in _runner().notebooks()] == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_full_size_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), f"{name}: not executed"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"], (
        f"{name}: error output"
    )
    assert "size: full" in _first_stream(nb), (
        f"{name}: committed outputs are not from a full-size run"
    )
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"{name}: expected its plots in the outputs"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_at_smoke_size(name, tmp_path):
    if name in NEEDS_MOVIELENS:
        ok, reason = _has_movielens()
        if not ok:
            pytest.skip(reason)
    out = tmp_path / name
    nb, seconds = _runner().run_notebook(
        NOTEBOOK_DIR / name, "smoke", timeout=300, out=out, cwd=tmp_path
    )
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert "size: smoke" in _first_stream(nb)
    assert out.is_file() and (NOTEBOOK_DIR / name).read_bytes() != out.read_bytes()
    assert seconds < 120, f"{name} took {seconds:.0f} s at smoke size"
