"""Baselines: the recommender contract plus model-specific checks."""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pandas as pd
import pytest
from contract import RecommenderContract
from worlds import planted

from bayes_persona import evaluation as M
from bayes_persona.baselines import AMPCF, BPRMF, EASE, IALS, MostPopular
from bayes_persona.exceptions import DataTypeError, DataValidationError, NotFittedError


class TestMostPopularContract(RecommenderContract):
    def make_model(self) -> MostPopular:
        return MostPopular()


class TestEASEContract(RecommenderContract):
    def make_model(self) -> EASE:
        return EASE(l2=10.0)


class TestIALSContract(RecommenderContract):
    def make_model(self) -> IALS:
        pytest.importorskip("implicit")
        return IALS(factors=8, iterations=5)


class TestBPRMFContract(RecommenderContract):
    def make_model(self) -> BPRMF:
        return BPRMF(factors=8, epochs=5, batch_size=128)


class TestAMPCFContract(RecommenderContract):
    def make_model(self) -> AMPCF:
        return AMPCF(n_personas=2, factors=8, max_epochs=3, batch_size=128)


# ---------------------------------------------------------------------- MostPopular
def test_most_popular_orders_by_user_count() -> None:
    train = pd.DataFrame(
        {"user_id": [1, 1, 2, 2, 3, 3, 3], "item_id": [10, 11, 10, 12, 10, 11, 13]}
    )
    recs = MostPopular().fit(train).recommend([1, 2], n=3, exclude_seen=False)
    assert recs[recs.user_id == 1]["item_id"].tolist() == [10, 11, 12]  # tie 12/13 by index
    assert recs[recs.user_id == 1]["score"].tolist() == [3.0, 2.0, 1.0]
    recs = MostPopular().fit(train).recommend([1], n=3)
    assert recs["item_id"].tolist() == [12, 13]  # 10, 11 seen; only two left


def test_duplicate_rows_count_once() -> None:
    train = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [10, 10, 10, 11]})
    m = MostPopular().fit(train)
    assert m.train_csr_.nnz == 3 - 1
    np.testing.assert_array_equal(m.item_popularity_, [1.0, 1.0])


def test_get_set_params_and_repr() -> None:
    m = EASE(l2=3.0)
    assert m.get_params() == {"l2": 3.0, "max_items": 20000}
    assert m.set_params(l2=4.0) is m and m.l2 == 4.0
    assert repr(m) == "EASE(l2=4.0, max_items=20000)"
    with pytest.raises(DataValidationError, match="not a parameter"):
        m.set_params(foo=1)


def test_recommend_empty_user_list() -> None:
    p = planted()
    recs = MostPopular().fit(p.train).recommend([], n=5)
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score"] and recs.empty


# ---------------------------------------------------------------------- EASE
def test_ease_closed_form_matches_definition() -> None:
    p = planted()
    m = EASE(l2=7.0).fit(p.train)
    X = m.train_csr_.toarray()
    P = np.linalg.inv(X.T @ X + 7.0 * np.eye(X.shape[1]))
    B = np.eye(X.shape[1]) - P / np.diag(P)[None, :]
    np.testing.assert_allclose(m.B_, B, atol=1e-10)
    assert np.all(np.diag(m.B_) == 0)


def test_ease_max_items_error() -> None:
    p = planted()
    with pytest.raises(DataValidationError, match="max_items=10"):
        EASE(max_items=10).fit(p.train)


@pytest.mark.parametrize("l2", [0.0, -1.0, float("nan")])
def test_ease_rejects_bad_l2(l2: float) -> None:
    with pytest.raises(DataValidationError, match="l2"):
        EASE(l2=l2).fit(planted().train)


def test_ease_rejects_non_number_l2() -> None:
    with pytest.raises(DataTypeError, match="l2"):
        EASE(l2="big").fit(planted().train)  # type: ignore[arg-type]


def test_ease_beats_most_popular_on_clusters() -> None:
    p = planted()
    users = p.test["user_id"].unique()
    ease = EASE(l2=10.0).fit(p.train).recommend(users, n=10)
    pop = MostPopular().fit(p.train).recommend(users, n=10)
    n_ease, n_pop = M.ndcg(ease, p.test, 10), M.ndcg(pop, p.test, 10)
    assert n_ease > n_pop + 0.1, (n_ease, n_pop)


# ---------------------------------------------------------------------- IALS
def test_ials_missing_dependency_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("implicit"):
            raise ImportError("No module named 'implicit'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    for mod in [m for m in sys.modules if m.startswith("implicit")]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(ImportError, match=r"pip install bayes_persona\[bench\]"):
        IALS(factors=4, iterations=1).fit(planted().train)


def test_ials_learns_clusters() -> None:
    pytest.importorskip("implicit")
    p = planted()
    users = p.test["user_id"].unique()
    recs = IALS(factors=8, iterations=10, regularization=0.1).fit(p.train).recommend(users, 10)
    pop = MostPopular().fit(p.train).recommend(users, 10)
    assert M.ndcg(recs, p.test, 10) > M.ndcg(pop, p.test, 10)


# ---------------------------------------------------------------------- BPR
def test_bpr_learns_and_loss_decreases() -> None:
    p = planted()
    m = BPRMF(factors=16, epochs=30, batch_size=64).fit(p.train)
    assert m.loss_history_[-1] < m.loss_history_[0]
    users = p.test["user_id"].unique()
    pop = MostPopular().fit(p.train).recommend(users, 10)
    assert M.ndcg(m.recommend(users, 10), p.test, 10) > M.ndcg(pop, p.test, 10)


def test_bpr_restores_torch_threads() -> None:
    import torch

    before = torch.get_num_threads()
    BPRMF(factors=4, epochs=1, num_threads=1).fit(planted().train)
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------- AMPCF
def _random_ndcg(p: object, seed: int = 0) -> float:
    """NDCG@10 of uniformly random lists of unseen items (averaged over 5 draws)."""
    rng = np.random.default_rng(seed)
    train, test = p.train, p.test  # type: ignore[attr-defined]
    items = np.sort(train["item_id"].unique())
    vals = []
    for _ in range(5):
        rows = []
        for u in test["user_id"].unique():
            seen = set(train.loc[train.user_id == u, "item_id"])
            cand = rng.permutation([i for i in items if i not in seen])[:10]
            rows += [(u, r + 1, i) for r, i in enumerate(cand)]
        recs = pd.DataFrame(rows, columns=["user_id", "rank", "item_id"])
        vals.append(M.ndcg(recs, test, 10))
    return float(np.mean(vals))


def test_ampcf_learns() -> None:
    p = planted()
    m = AMPCF(n_personas=2, factors=16, max_epochs=40, lr=0.01, batch_size=64).fit(p.train)
    users = p.test["user_id"].unique()
    got = M.ndcg(m.recommend(users, 10), p.test, 10)
    assert got > _random_ndcg(p) + 0.1, got
    assert m.history_["loss"].iloc[-1] < m.history_["loss"].iloc[0]


def test_ampcf_attention_and_score_formula() -> None:
    p = planted()
    m = AMPCF(n_personas=3, factors=4, max_epochs=2).fit(p.train)
    u = p.train["user_id"].to_numpy()[:5]
    i = p.train["item_id"].to_numpy()[:5]
    att = m.persona_attention(u, i)
    assert att.shape == (5, 3)
    np.testing.assert_allclose(att.sum(axis=1), 1.0)
    uc, ic = m.user_vocab_.encode(u), m.item_vocab_.encode(i)
    personas = m.user_personas_[uc]  # (5, K, d)
    user_vec = (att[:, :, None] * personas).sum(axis=1)
    expected = (user_vec * m.item_factors_[ic]).sum(axis=1)
    np.testing.assert_allclose(m.score(u, i), expected, rtol=1e-5)
    with pytest.raises(DataValidationError, match="same length"):
        m.persona_attention(u, i[:3])
    with pytest.raises(NotFittedError):
        AMPCF().persona_attention(u, i)


def test_ampcf_early_stopping_keeps_best_epoch() -> None:
    p = planted()
    from bayes_persona.evaluation import holdout_split

    fit_part, val = holdout_split(p.train, 0.25, seed=1)
    val = pd.concat([val, pd.DataFrame({"user_id": [424242], "item_id": [100]})])
    m = AMPCF(n_personas=2, factors=8, max_epochs=12, patience=2, lr=0.01, batch_size=64)
    m.fit(fit_part, validation=val)
    h = m.history_
    assert h["val_ndcg"].notna().all()
    assert m.best_epoch_ == int(h.loc[h["val_ndcg"].idxmax(), "epoch"])
    # the kept parameters are those of the best epoch
    known = val[val["user_id"].isin(fit_part["user_id"]) & val["item_id"].isin(fit_part["item_id"])]
    recs = m.recommend(known["user_id"].unique(), 10)
    assert M.ndcg(recs, known, 10) == pytest.approx(h["val_ndcg"].max())
    assert len(h) <= 12


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"a": 1.5}, DataValidationError),
        ({"n_personas": 0}, DataValidationError),
        ({"lr": -1.0}, DataValidationError),
        ({"factors": 2.5}, DataTypeError),
    ],
)
def test_ampcf_rejects_bad_params(kwargs: dict, exc: type) -> None:
    with pytest.raises(exc):
        AMPCF(max_epochs=1, **kwargs).fit(planted().train)
