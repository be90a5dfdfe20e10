"""Our ranking metrics against an independent implementation (ranx), on the same lists.

ranx (Bassani 2022) computes NDCG, precision, hit rate, MRR, recall and MAP from qrels
and runs with its own (numba) code. Where the definitions coincide the per-user values
must agree to 1e-6; where they differ by a documented normalisation (our recall and MAP
divide by ``min(k, |test_u|)``, ranx's by ``|test_u|``) the test converts one into the
other, so a bug in either the ranking, the cut-off or the ideal DCG would show.

References
----------
.. [1] E. Bassani. "ranx: A Blazing-Fast Python Library for Ranking Evaluation and
   Comparison". ECIR 2022.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_persona.evaluation import ranking

ranx = pytest.importorskip("ranx")


def _lists(seed: int, n_users: int = 60, n_items: int = 200, length: int = 25):
    """Random ranked lists and relevant sets, users with 1 to 40 relevant items."""
    rng = np.random.default_rng(seed)
    recs, test = [], []
    for u in range(n_users):
        ranked = rng.choice(n_items, size=length, replace=False)
        recs += [{"user_id": u, "rank": r + 1, "item_id": int(i)} for r, i in enumerate(ranked)]
        # relevant items overlap the list more often than chance, so hits are common
        pool = np.concatenate([ranked[: rng.integers(1, length)], rng.choice(n_items, 10)])
        rel = np.unique(rng.choice(pool, size=rng.integers(1, 40)))
        test += [{"user_id": u, "item_id": int(i)} for i in rel]
    return pd.DataFrame(recs), pd.DataFrame(test)


def _ranx_per_user(recs: pd.DataFrame, test: pd.DataFrame, metric: str) -> pd.Series:
    qrels = ranx.Qrels({str(u): {str(i): 1 for i in g["item_id"]} for u, g in test.groupby("user_id")})
    run = ranx.Run({str(u): {str(i): 1.0 / r for i, r in zip(g["item_id"], g["rank"], strict=True)}
                    for u, g in recs.groupby("user_id")})  # fmt: skip
    values = ranx.evaluate(qrels, run, metric, return_mean=False)
    return pd.Series(np.asarray(values, dtype=float), index=[int(q) for q in qrels.keys()]).sort_index()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 5, 10, 20])
def test_metrics_agree_with_ranx(seed, k):
    recs, test = _lists(seed)
    n_rel = test.groupby("user_id").size().sort_index()
    same = {"ndcg": ranking.ndcg, "precision": ranking.precision, "hit_rate": ranking.hit_rate, "mrr": ranking.mrr}
    for name, ours in same.items():
        theirs = _ranx_per_user(recs, test, f"{name}@{k}")
        mine = ours(recs, test, k, per_user=True).sort_index()
        np.testing.assert_allclose(mine.to_numpy(), theirs.to_numpy(), atol=1e-6, err_msg=f"{name}@{k}")
    # recall and MAP: ours divide by min(k, |test_u|), ranx's by |test_u|
    scale = np.minimum(n_rel, k) / n_rel
    for name, ours in {"recall": ranking.recall, "map": ranking.map_at_k}.items():
        theirs = _ranx_per_user(recs, test, f"{name}@{k}")
        mine = ours(recs, test, k, per_user=True).sort_index()
        np.testing.assert_allclose((mine * scale).to_numpy(), theirs.to_numpy(), atol=1e-6, err_msg=f"{name}@{k}")


def test_a_fitted_models_lists_score_the_same_in_ranx():
    """End to end: a model's top-20 lists on held-out data, our NDCG@10 and ranx's."""
    import bayes_persona as bp
    from bayes_persona.baselines import MostPopular

    data, _ = bp.make_synthetic(n_users=80, n_items=120, seed=3)
    train, test = bp.random_holdout(data.ratings, 0.2, seed=0)
    model = MostPopular().fit(train)
    users = test["user_id"].unique()
    recs = model.recommend(users, n=20)
    ours = ranking.ndcg(recs, test, 10)
    theirs = float(_ranx_per_user(recs[recs["user_id"].isin(users)], test, "ndcg@10").mean())
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert ours > 0
