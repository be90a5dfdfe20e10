"""Evaluation harness: protocols, leakage, dropped rows, compare and tune."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from worlds import planted

from bayes_persona.baselines import EASE, MostPopular
from bayes_persona.baselines._base import BaseRecommender
from bayes_persona.evaluation import (
    RESULT_COLUMNS,
    compare,
    evaluate,
    holdout_split,
    tune,
)
from bayes_persona.exceptions import DataTypeError, DataValidationError


class RandomModel(BaseRecommender):
    """Scores are fixed random numbers: a deliberately uninformed recommender."""

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def _fit(self, X: Any, rng: np.random.Generator) -> None:
        self.table_ = rng.random(X.shape)

    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:
        return self.table_[user_idx]


class ConstantModel(BaseRecommender):
    """Every item scores 0: every ranking is a tie."""

    def __init__(self) -> None:
        pass

    def _fit(self, X: Any, rng: np.random.Generator) -> None:
        pass

    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:
        return np.zeros((len(user_idx), len(self.item_vocab_)))


class ClusterOracle(BaseRecommender):
    """Knows the planted clusters: scores an item by the user's share of its cluster."""

    def __init__(self, item_cluster: pd.Series) -> None:
        self.item_cluster = item_cluster

    def _fit(self, X: Any, rng: np.random.Generator) -> None:
        clusters = self.item_cluster.reindex(self.item_vocab_.ids).to_numpy()
        onehot = (clusters[:, None] == np.unique(clusters)[None, :]).astype(float)
        share = X @ onehot  # users x clusters
        pop = np.asarray(X.sum(axis=0)).ravel()
        self.table_ = np.asarray(share @ onehot.T) + 1e-3 * pop[None, :]

    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:
        return self.table_[user_idx]


class Spy:
    """Wraps a model and records what ``fit`` receives and what is scored."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fit_calls: list[tuple[Any, Any]] = []
        self.score_calls: list[tuple[np.ndarray, np.ndarray]] = []

    def fit(self, train: Any, items: Any = None) -> Spy:
        self.fit_calls.append((train, items))
        self.inner.fit(train)
        return self

    def recommend(self, user_ids: Any, n: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        return self.inner.recommend(user_ids, n=n, exclude_seen=exclude_seen)

    def score(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        self.score_calls.append((np.asarray(user_ids), np.asarray(item_ids)))
        return self.inner.score(user_ids, item_ids)


@pytest.fixture(scope="module")
def clustered_world() -> Any:
    return planted()


def _value(res: pd.DataFrame, metric: str, k: int) -> float:
    row = res[(res.metric == metric) & (res.k == k)]
    assert len(row) == 1, (metric, k)
    return float(row["value"].iloc[0])


# ---------------------------------------------------------------------- full protocol
def test_full_protocol_table(clustered_world: Any) -> None:
    res = evaluate(MostPopular(), clustered_world.train, clustered_world.test, k=(5, 10), items=clustered_world.items, n_boot=200)
    assert list(res.columns) == RESULT_COLUMNS
    assert set(res["protocol"]) == {"full"} and set(res["model"]) == {"MostPopular"}
    expected = {"hit_rate", "recall", "ndcg", "mrr", "map", "coverage", "novelty", "ild", "tdd"}
    assert set(res["metric"]) == expected
    assert len(res) == len(expected) * 2
    acc = res[res.metric.isin(["hit_rate", "recall", "ndcg", "mrr", "map"])]
    assert ((acc.value >= 0) & (acc.value <= 1)).all()
    with_ci = res[res.metric != "coverage"]
    assert (with_ci.low <= with_ci.value + 1e-12).all() and (
        with_ci.value <= with_ci.high + 1e-12
    ).all()
    assert res[res.metric == "coverage"][["low", "high"]].isna().all().all()
    assert res.attrs["n_test_users"] == clustered_world.test["user_id"].nunique()


def test_values_match_metrics_module(clustered_world: Any) -> None:
    from bayes_persona import evaluation as M

    model = EASE(l2=10.0).fit(clustered_world.train)
    res = evaluate(model, clustered_world.train, clustered_world.test, k=10, fit=False, metrics=["ndcg", "recall"])
    recs = model.recommend(clustered_world.test["user_id"].unique(), n=10)
    assert _value(res, "ndcg", 10) == pytest.approx(M.ndcg(recs, clustered_world.test, 10))
    assert _value(res, "recall", 10) == pytest.approx(M.recall(recs, clustered_world.test, 10))


def test_harness_ranks_models(clustered_world: Any) -> None:
    kw = {"k": 10, "metrics": ["ndcg", "hit_rate"], "n_boot": 0}
    oracle = evaluate(ClusterOracle(clustered_world.item_cluster), clustered_world.train, clustered_world.test, **kw)
    pop = evaluate(MostPopular(), clustered_world.train, clustered_world.test, **kw)
    rand = evaluate(RandomModel(), clustered_world.train, clustered_world.test, **kw)
    o, p, r = (_value(x, "ndcg", 10) for x in (oracle, pop, rand))
    assert o > p + 0.1, (o, p)
    assert p > r, (p, r)


def test_tdd_prefers_calibrated_model(clustered_world: Any) -> None:
    kw = {"k": 10, "items": clustered_world.items, "metrics": ["tdd", "tdd_tv"], "n_boot": 0}
    oracle = evaluate(ClusterOracle(clustered_world.item_cluster), clustered_world.train, clustered_world.test, **kw)
    pop = evaluate(MostPopular(), clustered_world.train, clustered_world.test, **kw)
    assert _value(oracle, "tdd", 10) < _value(pop, "tdd", 10)
    assert _value(oracle, "tdd_tv", 10) < _value(pop, "tdd_tv", 10)


def test_tastes_mapping_argument(clustered_world: Any) -> None:
    from bayes_persona.evaluation import category_tastes

    tastes = category_tastes(clustered_world.items)
    a = evaluate(MostPopular(), clustered_world.train, clustered_world.test, k=5, metrics=["tdd"], tastes=tastes)
    b = evaluate(MostPopular(), clustered_world.train, clustered_world.test, k=5, metrics=["tdd"], items=clustered_world.items)
    assert _value(a, "tdd", 5) == pytest.approx(_value(b, "tdd", 5))


def test_no_categories_skips_taste_metrics(clustered_world: Any) -> None:
    res = evaluate(MostPopular(), clustered_world.train, clustered_world.test, k=5, n_boot=0)
    assert not ({"ild", "tdd"} & set(res["metric"]))
    with pytest.raises(DataValidationError, match="categories"):
        evaluate(MostPopular(), clustered_world.train, clustered_world.test, k=5, metrics=["tdd"])


def test_dataset_input(clustered_world: Any) -> None:
    from bayes_persona.data import Dataset

    ds = Dataset(ratings=clustered_world.train, items=clustered_world.items)
    res = evaluate(MostPopular(), ds, clustered_world.test, k=5, n_boot=0)
    assert "tdd" in set(res["metric"])  # categories taken from the Dataset's items


# ---------------------------------------------------------------------- leakage
def test_fit_sees_train_only(clustered_world: Any) -> None:
    spy = Spy(MostPopular())
    evaluate(spy, clustered_world.train, clustered_world.test, k=5, n_boot=0)
    evaluate(spy, clustered_world.train, clustered_world.test, k=5, n_boot=0, protocol="sampled", n_negatives=20)
    assert len(spy.fit_calls) == 2
    test_pairs = set(zip(clustered_world.test.user_id, clustered_world.test.item_id, strict=True))
    for got, items in spy.fit_calls:
        pd.testing.assert_frame_equal(got, clustered_world.train)
        assert not test_pairs & set(zip(got.user_id, got.item_id, strict=True))
        assert items is None


def test_fit_false_does_not_refit(clustered_world: Any) -> None:
    spy = Spy(MostPopular())
    spy.fit(clustered_world.train)
    evaluate(spy, clustered_world.train, clustered_world.test, k=5, n_boot=0, fit=False)
    assert len(spy.fit_calls) == 1


def test_items_passed_to_fit_when_accepted(clustered_world: Any) -> None:
    spy = Spy(MostPopular())
    evaluate(spy, clustered_world.train, clustered_world.test, k=5, n_boot=0, items=clustered_world.items)
    assert spy.fit_calls[0][1] is clustered_world.items


def test_unknown_users_items_and_train_pairs_dropped(clustered_world: Any, caplog: Any) -> None:
    extra = pd.DataFrame(
        {"user_id": [999_001, 999_002, 1000, 1000], "item_id": [100, 101, 99_999, 99_998]}
    )
    in_train = clustered_world.train.iloc[:3][["user_id", "item_id"]]
    test = pd.concat([clustered_world.test, extra, in_train], ignore_index=True)
    with caplog.at_level("WARNING", logger="bayes_persona.evaluation"):
        res = evaluate(MostPopular(), clustered_world.train, test, k=5, n_boot=0)
    assert res.attrs["n_dropped_users"] == 2
    assert res.attrs["n_dropped_items"] == 2
    assert res.attrs["n_dropped_rows_in_train"] == 3
    assert res.attrs["n_test_rows"] == len(clustered_world.test)
    assert "dropped" in caplog.text
    clean = evaluate(MostPopular(), clustered_world.train, clustered_world.test, k=5, n_boot=0)
    pd.testing.assert_frame_equal(res, clean, check_like=True)


# ---------------------------------------------------------------------- sampled protocol
def test_sampled_protocol_rows(clustered_world: Any) -> None:
    res = evaluate(EASE(l2=10.0), clustered_world.train, clustered_world.test, k=(10, 20, 100), protocol="sampled")
    assert set(res["protocol"]) == {"sampled"}
    assert set(res["metric"]) == {"hit_rate", "ndcg", "mrr"}
    assert set(res["k"]) == {10, 20, 100}
    hr = _value(res, "hit_rate", 10)
    assert 0 <= hr <= 1


def test_sampled_constant_model_is_chance(clustered_world: Any) -> None:
    res = evaluate(ConstantModel(), clustered_world.train, clustered_world.test, k=10, protocol="sampled", n_negatives=20)
    assert _value(res, "hit_rate", 10) == pytest.approx(10 / 21)
    ideal = sum(1 / math.log2(p + 1) for p in range(1, 11))
    assert _value(res, "ndcg", 10) == pytest.approx(ideal / 21)
    assert _value(res, "mrr", 10) == pytest.approx(sum(1 / p for p in range(1, 11)) / 21)


def test_sampled_negatives_are_unseen_and_distinct(clustered_world: Any) -> None:
    spy = Spy(MostPopular())
    evaluate(spy, clustered_world.train, clustered_world.test, k=10, protocol="sampled", n_negatives=20, n_boot=0)
    users = np.concatenate([c[0] for c in spy.score_calls])
    items = np.concatenate([c[1] for c in spy.score_calls])
    assert len(users) == len(clustered_world.test) * 21
    interacted = set(zip(clustered_world.ratings.user_id, clustered_world.ratings.item_id, strict=True))
    test_pairs = set(zip(clustered_world.test.user_id, clustered_world.test.item_id, strict=True))
    for row in range(len(clustered_world.test)):
        u = users[row * 21 : (row + 1) * 21]
        i = items[row * 21 : (row + 1) * 21]
        assert (u == u[0]).all()
        assert (u[0], i[0]) in test_pairs
        assert len(set(i.tolist())) == 21
        assert not {(u[0], x) for x in i[1:].tolist()} & interacted


def test_sampled_oracle_beats_random(clustered_world: Any) -> None:
    kw = {"k": 10, "protocol": "sampled", "n_negatives": 20, "n_boot": 0}
    o = evaluate(ClusterOracle(clustered_world.item_cluster), clustered_world.train, clustered_world.test, **kw)
    r = evaluate(RandomModel(), clustered_world.train, clustered_world.test, **kw)
    assert _value(o, "hit_rate", 10) > _value(r, "hit_rate", 10) + 0.2


def test_sampled_is_seeded(clustered_world: Any) -> None:
    kw = {"k": 10, "protocol": "sampled", "n_boot": 0, "n_negatives": 10}
    a = evaluate(MostPopular(), clustered_world.train, clustered_world.test, seed=1, **kw)
    b = evaluate(MostPopular(), clustered_world.train, clustered_world.test, seed=1, **kw)
    pd.testing.assert_frame_equal(a, b)


def test_sampled_with_fewer_items_than_negatives(clustered_world: Any) -> None:
    # 45 items, 99 negatives requested: every user is ranked against all unseen items
    res = evaluate(MostPopular(), clustered_world.train, clustered_world.test, k=10, protocol="sampled", n_boot=0)
    assert 0 <= _value(res, "hit_rate", 10) <= 1


# ---------------------------------------------------------------------- errors
def test_bad_arguments(clustered_world: Any) -> None:
    with pytest.raises(DataValidationError, match="protocol"):
        evaluate(MostPopular(), clustered_world.train, clustered_world.test, protocol="loo")
    with pytest.raises(DataValidationError, match="unknown metric"):
        evaluate(MostPopular(), clustered_world.train, clustered_world.test, metrics=["auc"])
    with pytest.raises(DataValidationError, match="sampled"):
        evaluate(MostPopular(), clustered_world.train, clustered_world.test, protocol="sampled", metrics=["coverage"])
    with pytest.raises(DataValidationError, match="k must"):
        evaluate(MostPopular(), clustered_world.train, clustered_world.test, k=(10, 0))
    with pytest.raises(DataTypeError, match="lacks"):
        evaluate(object(), clustered_world.train, clustered_world.test)
    with pytest.raises(DataTypeError, match="train"):
        evaluate(MostPopular(), [1, 2], clustered_world.test)
    with pytest.raises(DataValidationError, match="no usable rows"):
        evaluate(MostPopular(), clustered_world.train, pd.DataFrame({"user_id": [5], "item_id": [5]}))


# ---------------------------------------------------------------------- compare / tune
def test_compare_paired(clustered_world: Any) -> None:
    kw = {"k": (5, 10), "metrics": ["ndcg", "recall"], "n_boot": 200, "return_per_user": True}
    _, pu_o = evaluate(ClusterOracle(clustered_world.item_cluster), clustered_world.train, clustered_world.test, **kw)
    res_p, pu_p = evaluate(MostPopular(), clustered_world.train, clustered_world.test, **kw)
    assert set(pu_p.columns) == {"model", "protocol", "metric", "k", "user_id", "value"}
    mean_ndcg = pu_p[(pu_p.metric == "ndcg") & (pu_p.k == 10)]["value"].mean()
    assert mean_ndcg == pytest.approx(_value(res_p, "ndcg", 10))
    cmp = compare(pu_o, pu_p, n_boot=200)
    assert len(cmp) == 4
    row = cmp[(cmp.metric == "ndcg") & (cmp.k == 10)].iloc[0]
    assert row.model_a == "ClusterOracle" and row.model_b == "MostPopular"
    assert row.mean_diff > 0 and row.low > 0 and row.p_value < 0.05
    assert row.n_users == clustered_world.test["user_id"].nunique()


def test_holdout_split(clustered_world: Any) -> None:
    kept, held = holdout_split(clustered_world.train, 0.25, seed=0)
    assert len(kept) + len(held) == len(clustered_world.train)
    assert set(held.user_id) <= set(kept.user_id)
    merged = kept.merge(held, on=["user_id", "item_id"])
    assert merged.empty


def test_tune_picks_on_validation(clustered_world: Any) -> None:
    fit_part, val = holdout_split(clustered_world.train, 0.2, seed=0)
    made = []

    def make(kind: str, l2: float = 10.0) -> Any:
        spy = Spy(EASE(l2=l2) if kind == "ease" else RandomModel())
        made.append(spy)
        return spy

    grid = {"kind": ["random", "ease"], "l2": [1.0, 30.0]}
    best, table = tune(make, grid, fit_part, val, metric="ndcg", k=10)
    assert best["kind"] == "ease" and set(best) == {"kind", "l2"}
    assert list(table.columns) == ["kind", "l2", "metric", "k", "value"]
    assert len(table) == 4 and table["value"].is_monotonic_decreasing
    assert best == {"kind": table["kind"].iloc[0], "l2": table["l2"].iloc[0]}
    assert set(table["kind"].iloc[2:]) == {"random"}
    test_pairs = set(zip(clustered_world.test.user_id, clustered_world.test.item_id, strict=True))
    for spy in made:
        ((got, _),) = spy.fit_calls
        pd.testing.assert_frame_equal(got, fit_part)
        assert not test_pairs & set(zip(got.user_id, got.item_id, strict=True))


def test_tune_cuts_validation_from_train(clustered_world: Any) -> None:
    best, table = tune(lambda **p: EASE(**p), [{"l2": 5.0}, {"l2": 50.0}], clustered_world.train, k=5)
    assert best in ({"l2": 5.0}, {"l2": 50.0}) and len(table) == 2


def test_tune_lower_is_better_for_tdd(clustered_world: Any) -> None:
    _, table = tune(
        lambda **p: EASE(**p), {"l2": [1.0, 1e4]}, clustered_world.train, metric="tdd", items=clustered_world.items
    )
    assert table["value"].is_monotonic_increasing
