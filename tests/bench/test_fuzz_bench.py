"""The robustness fuzz of the bench (issue 18): it passes on the library, and it catches a
raw exception and a silent wrong answer when one is planted."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("hypothesis")

from bayes_persona.bench import fuzz as fuzz_bench  # noqa: E402
from bayes_persona.persona.estimator import PersonaRecommender  # noqa: E402


def test_fuzz_passes_and_exercises_every_entry_point(tmp_path) -> None:
    """Run as the bench command, in a process of its own: hypothesis mixes literal constants of
    the local modules loaded at the time into its draws, so in the test process the seeded
    case sequence would depend on which test modules pytest collected before it."""
    import json
    import subprocess
    import sys

    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, "-m", "bayes_persona.bench", "fuzz", "--cases", "200", "--seed", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.is_file(), proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert proc.returncode == 0 and report["passed"], proc.stdout[-4000:]
    assert report["cases"] == 200
    for entry, row in report["by_entry_point"].items():
        assert row["ok"] >= 1, f"{entry}: no valid case drawn"
    assert sum(r["refused"] for r in report["by_entry_point"].values()) >= 20


def test_fuzz_counts_a_planted_raw_exception(monkeypatch) -> None:
    def broken(self, user_ids, item_ids):
        raise IndexError("index 7 is out of bounds")

    monkeypatch.setattr(PersonaRecommender, "score", broken)
    report = fuzz_bench.run_fuzz(n_cases=80, seed=2)
    assert not report["passed"]
    assert report["by_entry_point"]["score"]["raw"] >= 1
    assert any("IndexError" in f["detail"] for f in report["failures"])


def test_fuzz_counts_a_planted_wrong_answer(monkeypatch) -> None:
    original = PersonaRecommender.recommend

    def overconfident(self, *args, **kwargs) -> pd.DataFrame:
        recs = original(self, *args, **kwargs)
        return recs.assign(persona_prob_high=recs["persona_prob_low"])  # point above its interval

    monkeypatch.setattr(PersonaRecommender, "recommend", overconfident)
    report = fuzz_bench.run_fuzz(n_cases=80, seed=3)
    assert not report["passed"]
    assert report["totals"]["wrong"] >= 1
