"""The built wheel carries the licence and the typing marker (PEP 561)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_license_and_py_typed(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "paper", "notebooks"))
    out = tmp_path / "wheel"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("bayes_persona-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bayes_persona/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names
    # the long description is package-safe: no relative links or images
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Description-Content-Type: text/markdown" in text
    body = text.split("\n\n", 1)[1]
    links = __import__("re").findall(r"\]\(([^)]+)\)", body)
    assert all(link.startswith(("http://", "https://")) for link in links), links
    assert "PersonaRecommender" in body
