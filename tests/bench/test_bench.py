"""The ranking benchmark at smoke size on MovieLens 100K: both protocols, provenance."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.mark.slow
def test_ranking_bench_writes_both_protocols_and_its_grids(ml100k_dir, tmp_path):
    from bayes_persona.bench import TUNING_GRIDS, main

    out = tmp_path / "res"
    assert main(["--smoke", "--models", "MostPopular,Ours K=1", "--n-boot", "20",
                 "--data-home", str(ml100k_dir.parent), "--out", str(out)]) == 0  # fmt: skip
    res = pd.read_csv(out / "results.csv")
    assert set(res["protocol"]) == {"full", "sampled", "temporal"}
    temporal = res[res["protocol"] == "temporal"]
    assert set(temporal["model"]) == {"MostPopular", "Ours K=1"}
    assert set(zip(temporal["metric"], temporal["k"], strict=True)) >= {("ndcg", 10), ("hit_rate", 10), ("recall", 20)}
    assert temporal["value"].between(0, 1).all()
    # leave-last-out holds out one item per user: NDCG@10 and HR@10 differ from the random split's
    full = res[res["protocol"] == "full"].set_index(["model", "metric", "k"])["value"]
    tem = temporal.set_index(["model", "metric", "k"])["value"]
    assert tem[("MostPopular", "ndcg", 10)] != pytest.approx(full[("MostPopular", "ndcg", 10)])
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["tuning_grids"] == {"Ours K=1": TUNING_GRIDS["Ours K=1"]}
    assert (out / "paired.csv").is_file()


def test_tuning_records_keep_every_configuration_best_first():
    """tuning.csv's rows: one per configuration tried, its grid parameters as JSON, the
    first (best) marked chosen."""
    import numpy as np

    from bayes_persona.bench import tuning_records

    grid = {"learning_rate": [0.01, 0.02], "max_epochs": [100, 150]}
    table = pd.DataFrame({"learning_rate": [0.02, 0.01, 0.02, 0.01], "max_epochs": np.array([150, 150, 100, 100]),
                          "metric": "ndcg", "k": 10, "value": [0.22, 0.21, 0.2, 0.19]})  # fmt: skip
    rows = tuning_records("Ours K=8", table, grid)
    assert [r["chosen"] for r in rows] == [True, False, False, False]
    assert json.loads(rows[0]["params"]) == {"learning_rate": 0.02, "max_epochs": 150}
    assert [r["value"] for r in rows] == [0.22, 0.21, 0.2, 0.19]
    assert {r["model"] for r in rows} == {"Ours K=8"}
