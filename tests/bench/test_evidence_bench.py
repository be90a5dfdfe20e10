"""How many personas the data support (bayes_persona.bench.evidence)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bayes_persona.bench.evidence import (
    DEFAULT_SETTINGS,
    SETTINGS,
    markdown_summary,
    run_evidence,
    summarise,
)
from bayes_persona.exceptions import DataValidationError


def test_summary_counts_the_users_whose_bound_prefers_more_personas() -> None:
    users = pd.DataFrame({
        "setting": "s", "group": ["a"] * 6, "user_id": [1, 2, 3, 1, 2, 3], "n_interactions": [10, 20, 40] * 2,
        "n_personas": [1, 1, 1, 2, 2, 2], "gap": [0.0, 0.0, 0.0, 2.0, -1.0, -4.0],
        "symmetry_allowance": [0.0] * 3 + [0.6931] * 3, "gap_upper": [0.0] * 3 + [2.6931, -0.3069, -3.3069],
    })  # fmt: skip
    row = summarise(users).iloc[0]
    assert (row["n_personas"], row["against"], row["n_users"]) == (2, 1, 3)
    assert row["prefer"] == pytest.approx(1 / 3) and row["prefer_upper"] == pytest.approx(1 / 3)
    assert row["median_gap"] == -1.0 and row["median_gap_per_interaction"] == pytest.approx(-0.05)
    assert "| s | a | 2 vs 1 | 3 | 33.3% | 33.3% | -1.00 |" in markdown_summary(summarise(users))


def test_the_low_dimensional_run_is_not_a_default_setting() -> None:
    assert set(SETTINGS) - set(DEFAULT_SETTINGS) == {"ml100k_d2"}


def test_evidence_bench_refuses_unknown_settings() -> None:
    with pytest.raises(DataValidationError, match="settings"):
        run_evidence(["ranking"], smoke=True)
    with pytest.raises(DataValidationError, match="seed"):
        run_evidence(["control"], smoke=True, seed=-1)


def test_evidence_bench_smoke_writes_its_files(tmp_path, ml100k_dir) -> None:
    out = tmp_path / "evidence"
    summary, heldout = run_evidence(SETTINGS, out, smoke=True, data_home=ml100k_dir.parent, argv=["--smoke"])
    assert {p.name for p in out.iterdir()} == {"summary.csv", "users.csv.gz", "heldout.csv", "summary.md",
                                               "provenance.json"}  # fmt: skip
    assert list(summary["setting"].unique()) == list(SETTINGS)
    assert set(summary.loc[summary["setting"] == "accounts", "group"]) == {"two-person accounts", "single users"}
    assert summary["prefer"].between(0, 1).all() and (summary["prefer_upper"] >= summary["prefer"]).all()
    users = pd.read_csv(out / "users.csv.gz")
    ks = users.groupby("setting")["n_personas"].nunique().to_dict()
    assert ks == {"control": 2, "planted": 2, "ml100k": 2, "accounts": 3, "ml100k_d2": 2}
    per_user = users.groupby(["setting", "user_id"]).size()
    assert (per_user == per_user.index.get_level_values("setting").map(ks)).all()  # every user once per fit
    assert list(zip(heldout["setting"], heldout["n_personas"], heldout["n_factors"], strict=True)) == [
        ("ml100k", 1, 16), ("ml100k", 8, 16), ("ml100k_d2", 1, 2), ("ml100k_d2", 4, 2)]
    assert heldout["lpd_per_interaction"].lt(0).all() and heldout["ndcg10"].between(0, 1).all()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["smoke"] and prov["ml_validation_split"] == {"split_seed": 0, "inner_seed": 1}
