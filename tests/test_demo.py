"""``bayes-persona demo --smoke`` and :func:`bayes_persona.demo.run_demo`; and the CI script."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import torch

from bayes_persona.cli import main
from bayes_persona.demo import SMOKE, run_demo

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def test_demo_smoke_prints_personas_explanations_and_recovery(capsys):
    assert main(["demo", "--smoke", "-q"]) == 0
    out = capsys.readouterr().out
    assert "planted tastes" in out
    assert "Fitted personas" in out and "90% interval" in out
    assert "Top 5 recommendations" in out
    assert "Persona recovery over all" in out
    for figure in ("assignment accuracy", "count accuracy", "interval coverage"):
        assert figure in out
    assert "persona assignment agrees with the planted taste" in out  # RecoveryReport.summary()


def test_run_demo_returns_what_it_printed():
    buf = io.StringIO()
    result = run_demo(**{**SMOKE, "n_show": 2}, progress=False, out=buf)
    text = buf.getvalue()
    assert len(result.users) == 2
    for user in result.users:
        assert f"User {user}:" in text
    rec = result.recovery
    for value in (rec.assignment_accuracy, rec.count_accuracy, rec.interval_coverage):
        assert 0.0 <= value <= 1.0
    assert f"{rec.assignment_accuracy:6.1%}" in text
    assert result.model.n_steps_ >= 1


# --------------------------------------------------------------------------- CI script
def test_ci_script_is_bash_and_runs_pytest():
    script = ROOT / ".ci" / "run"
    assert script.is_file()
    assert os.stat(script).st_mode & stat.S_IXUSR, ".ci/run must be executable"
    text = script.read_text()
    assert text.splitlines()[0] in ("#!/usr/bin/env bash", "#!/bin/bash")
    assert "set -euo pipefail" in text
    assert "python -m pytest -q" in text
    assert 'pip install -e ".[dev,bench,docs]"' in text
    assert "python -m sphinx -W" in text  # the docs build, warnings as errors
    assert "BAYES_PERSONA_TEST_SIZE=smoke" in text and "BAYES_PERSONA_DATA" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_readme_test_command_is_the_ci_command():
    readme = (ROOT / "README.md").read_text()
    assert "BAYES_PERSONA_TEST_SIZE=smoke python -m pytest -q" in readme
    assert "bayes-persona demo" in readme
