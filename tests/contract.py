"""The recommender contract: tests every recommender (the main model and every baseline)
must pass. Subclass ``RecommenderContract`` in a test module and provide ``make_model()``::

    class TestEASE(RecommenderContract):
        def make_model(self):
            return EASE(l2=10.0)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from worlds import Planted, planted

from bayes_persona.exceptions import NotFittedError


class RecommenderContract:
    """Contract tests for any recommender with ``fit`` / ``recommend`` / ``score``.

    Subclasses define ``make_model()`` returning a fresh unfitted model (small and fast).
    Flags a subclass may turn off: ``deterministic`` (two fits give equal results),
    ``score_matches_recommend`` (``score`` equals the ``score`` column of ``recommend``)
    and ``scores_sorted`` (the ``score`` column does not increase down a user's list).
    """

    deterministic: bool = True
    score_matches_recommend: bool = True
    scores_sorted: bool = True

    def make_model(self) -> Any:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture(scope="class")
    def contract_world(self) -> Planted:
        return planted()

    @pytest.fixture(scope="class")
    def contract_model(self, contract_world: Planted) -> Any:
        return self.make_model().fit(contract_world.train)

    @pytest.fixture(scope="class")
    def contract_users(self, contract_world: Planted) -> np.ndarray:
        return np.asarray(pd.unique(contract_world.train["user_id"]))[:6]

    # ------------------------------------------------------------------ fitting
    def test_fit_returns_self(self, contract_world: Planted) -> None:
        model = self.make_model()
        assert model.fit(contract_world.train) is model

    @pytest.mark.parametrize("wrapper", ["Dataset", "duck"])
    def test_fit_accepts_dataset(
        self, contract_world: Planted, contract_model: Any, contract_users: np.ndarray, wrapper: str
    ) -> None:
        if wrapper == "Dataset":
            from bayes_persona.data import Dataset

            wrapped: Any = Dataset(ratings=contract_world.train, items=contract_world.items)
        else:
            wrapped = SimpleNamespace(ratings=contract_world.train, items=contract_world.items)
        model = self.make_model().fit(wrapped)
        recs = model.recommend(contract_users, n=5)
        if self.deterministic:
            # the items table may bring titles (an extra column); the rest is identical
            pd.testing.assert_frame_equal(
                recs.drop(columns="title", errors="ignore").reset_index(drop=True),
                contract_model.recommend(contract_users, n=5).reset_index(drop=True),
            )

    def test_fit_rejects_non_frame(self) -> None:
        with pytest.raises(TypeError):
            self.make_model().fit([(1, 2), (3, 4)])

    def test_fit_rejects_missing_column(self, contract_world: Planted) -> None:
        with pytest.raises(ValueError):
            self.make_model().fit(contract_world.train.drop(columns="item_id"))

    def test_deterministic(self, contract_world: Planted, contract_model: Any, contract_users: np.ndarray) -> None:
        if not self.deterministic:
            pytest.skip("model is not deterministic")
        other = self.make_model().fit(contract_world.train)
        pd.testing.assert_frame_equal(
            other.recommend(contract_users, n=8).reset_index(drop=True),
            contract_model.recommend(contract_users, n=8).reset_index(drop=True),
        )

    def test_vocabularies(self, contract_world: Planted, contract_model: Any) -> None:
        assert len(contract_model.user_vocab_) == contract_world.train["user_id"].nunique()
        assert len(contract_model.item_vocab_) == contract_world.train["item_id"].nunique()

    # ------------------------------------------------------------------ recommend
    def test_recommend_columns(self, contract_model: Any, contract_users: np.ndarray) -> None:
        recs = contract_model.recommend(contract_users, n=5)
        assert list(recs.columns[:4]) == ["user_id", "rank", "item_id", "score"]
        assert set(recs["user_id"]) == set(contract_users.tolist())

    def test_ranks_are_1_to_n(self, contract_model: Any, contract_users: np.ndarray) -> None:
        n = 7
        recs = contract_model.recommend(contract_users, n=n)
        for _, g in recs.groupby("user_id"):
            assert g["rank"].tolist() == list(range(1, n + 1))
            assert g["item_id"].is_unique
            if self.scores_sorted:
                assert (np.diff(g["score"].to_numpy()) <= 1e-9).all()  # best first

    def test_exclude_seen(self, contract_world: Planted, contract_model: Any) -> None:
        contract_users = np.asarray(pd.unique(contract_world.train["user_id"]))
        recs = contract_model.recommend(contract_users, n=20, exclude_seen=True)
        seen = set(zip(contract_world.train["user_id"], contract_world.train["item_id"], strict=True))
        got = set(zip(recs["user_id"], recs["item_id"], strict=True))
        assert not (got & seen)

    def test_include_seen_ranks_whole_catalogue(self, contract_world: Planted, contract_model: Any) -> None:
        n_items = contract_world.train["item_id"].nunique()
        u = contract_world.train["user_id"].iloc[0]
        recs = contract_model.recommend([u], n=n_items, exclude_seen=False)
        assert len(recs) == n_items
        assert set(recs["item_id"]) == set(contract_world.train["item_id"])

    def test_n_larger_than_catalogue(self, contract_world: Planted, contract_model: Any) -> None:
        u = contract_world.train["user_id"].iloc[0]
        n_items = contract_world.train["item_id"].nunique()
        n_seen = int((contract_world.train["user_id"] == u).sum())
        recs = contract_model.recommend([u], n=n_items + 50, exclude_seen=True)
        assert len(recs) == n_items - n_seen

    def test_batch_equals_single(self, contract_model: Any, contract_users: np.ndarray) -> None:
        batch = contract_model.recommend(contract_users, n=10).reset_index(drop=True)
        single = pd.concat(
            [contract_model.recommend([u], n=10) for u in contract_users], ignore_index=True
        ).reset_index(drop=True)
        for col in ("user_id", "rank", "item_id"):
            np.testing.assert_array_equal(batch[col].to_numpy(), single[col].to_numpy())
        np.testing.assert_allclose(batch["score"], single["score"], rtol=1e-6, atol=1e-9)

    def test_scalar_user(self, contract_model: Any, contract_users: np.ndarray) -> None:
        u = contract_users[0]
        a = contract_model.recommend(u, n=5).reset_index(drop=True)
        b = contract_model.recommend([u], n=5).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)

    def test_unknown_user_raises(self, contract_model: Any) -> None:
        with pytest.raises(KeyError):
            contract_model.recommend([987654321], n=5)

    @pytest.mark.parametrize("n", [0, -3])
    def test_nonpositive_n_raises(self, contract_model: Any, contract_users: np.ndarray, n: int) -> None:
        with pytest.raises(ValueError):
            contract_model.recommend(contract_users, n=n)

    # ------------------------------------------------------------------ score
    def test_score_pairwise(self, contract_world: Planted, contract_model: Any) -> None:
        tr = contract_world.train.head(12)
        s = contract_model.score(tr["user_id"].to_numpy(), tr["item_id"].to_numpy())
        s = np.asarray(s)
        assert s.shape == (12,)
        assert np.isfinite(s).all()

    def test_score_matches_recommend(self, contract_model: Any, contract_users: np.ndarray) -> None:
        if not self.score_matches_recommend:
            pytest.skip("score is not the recommend score for this model")
        recs = contract_model.recommend(contract_users, n=10)
        s = contract_model.score(recs["user_id"].to_numpy(), recs["item_id"].to_numpy())
        np.testing.assert_allclose(s, recs["score"].to_numpy(), rtol=1e-5, atol=1e-8)

    def test_score_unknown_item_raises(self, contract_model: Any, contract_users: np.ndarray) -> None:
        with pytest.raises(KeyError):
            contract_model.score([contract_users[0]], [987654321])

    # ------------------------------------------------------------------ not fitted
    def test_recommend_before_fit_raises(self, contract_users: np.ndarray) -> None:
        with pytest.raises(NotFittedError):
            self.make_model().recommend(contract_users, n=5)

    def test_score_before_fit_raises(self, contract_users: np.ndarray) -> None:
        with pytest.raises(NotFittedError):
            self.make_model().score(contract_users[:1], [100])
