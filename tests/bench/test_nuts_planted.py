"""NUTS on small planted worlds (bayes_persona.bench.nuts_planted and its library parts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bayes_persona.diagnostics.nuts import attention_draws
from bayes_persona.diagnostics.recovery import LEVELS, matched_per_draw, selection_coverage


def test_attention_draws_are_the_joint_forms_attention():
    rng = np.random.default_rng(0)
    S, U, K, N, D = 4, 3, 2, 5, 3
    draws = {"prevalence": rng.dirichlet(np.ones(K), size=(S, U)), "persona_factors": rng.normal(size=(S, U, K, D)),
             "item_factors": rng.normal(size=(S, N, D))}  # fmt: skip
    att = attention_draws(draws, 1, np.array([0, 3]))
    assert att.shape == (S, K, 2)
    logit = np.log(draws["prevalence"][2, 1, :]) + draws["persona_factors"][2, 1] @ draws["item_factors"][2, 3]
    np.testing.assert_allclose(att[2, :, 1], np.exp(logit) / np.exp(logit).sum())


def test_matching_per_draw_undoes_label_switching():
    """Draws whose persona labels switch from draw to draw match the tastes in every draw; a
    match at the mean would blur them. Coverage counts follow the selections."""
    rng = np.random.default_rng(1)
    planted = np.array([0, 0, 1, 1, 1])
    base = np.array([[0.9, 0.8, 0.2, 0.1, 0.3], [0.1, 0.2, 0.8, 0.9, 0.7]])  # (K=2, n)
    draws = np.stack([base if s % 2 else base[::-1] for s in range(10)])  # labels switch every draw
    matched = matched_per_draw(draws, planted, 2)
    np.testing.assert_allclose(matched, np.broadcast_to(base, (10, 2, 5)))
    truth = base.copy()
    truth[0, 0] = 0.999  # outside every interval of its pair
    cov = selection_coverage(matched + rng.normal(0, 1e-3, matched.shape), truth).set_index(["selection", "level"])
    assert set(cov.index.get_level_values("level")) == set(LEVELS)
    assert cov.loc[("truth", 0.9), "n_pairs"] == 9 and cov.loc[("posterior", 0.9), "n_pairs"] == 10
    assert cov.loc[("posterior", 0.95), "hits"] == 9


def test_bench_nuts_planted_at_smoke_size(tmp_path):
    from bayes_persona.bench import main

    assert main(["nuts-planted", "--smoke", "--out", str(tmp_path)]) == 0
    import pandas as pd

    cov = pd.read_csv(tmp_path / "coverage.csv", dtype={"seed": str})
    assert set(cov.method) == {"svi", "nuts"} and set(cov.selection) == {"truth", "posterior"}
    assert set(cov.seed) == {"0", "all"} and cov.coverage.between(0, 1).all()
    pooled = cov[cov.seed == "all"].set_index(["method", "selection", "level"])
    assert (pooled["n_pairs"] > 0).all()
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["smoke"] and prov["worlds"]["0"]["divergences"] >= 0 and "git_commit" in prov
    with pytest.raises(SystemExit):
        main(["nuts-planted", "--seeds", "x", "--out", str(tmp_path)])
