"""Shared test helpers: a small planted dataset and the recommender contract.

``RecommenderContract`` holds the tests every recommender (the main model and every
baseline) must pass. Subclass it in a test module and provide ``make_model()``::

    class TestEASE(RecommenderContract):
        def make_model(self):
            return EASE(l2=10.0)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bayes_persona.exceptions import NotFittedError


@dataclass(frozen=True)
class Planted:
    """A planted clustered dataset and its per-user holdout."""

    ratings: pd.DataFrame  # all interactions (user_id, item_id, rating)
    train: pd.DataFrame
    test: pd.DataFrame
    items: pd.DataFrame  # item_id, title, categories (the cluster label, list of str)
    item_cluster: pd.Series  # item_id -> cluster
    user_clusters: pd.Series  # user_id -> tuple of clusters


def make_planted(
    n_users: int = 60,
    n_clusters: int = 3,
    items_per_cluster: int = 15,
    per_user: int = 9,
    n_test: int = 2,
    noise: float = 0.0,
    seed: int = 0,
) -> Planted:
    """Users with 1-2 item clusters who interact only (up to ``noise``) inside them.

    Cluster ``c`` holds items ``100 * (c + 1) + j``; a user's ``per_user`` items are drawn
    without replacement from their clusters; ``n_test`` of them go to the test part.
    Cluster sizes in users are unequal (1 : 2 : 3 ...) so popularity carries some signal
    but much less than the clusters do.
    """
    rng = np.random.default_rng(seed)
    clusters = {
        c: np.array([100 * (c + 1) + j for j in range(items_per_cluster)])
        for c in range(n_clusters)
    }
    all_items = np.concatenate(list(clusters.values()))
    weights = np.arange(1, n_clusters + 1, dtype=float)
    weights /= weights.sum()
    rows, user_clusters = [], {}
    for u in range(n_users):
        uid = 1000 + u
        k = 1 if rng.random() < 0.6 or n_clusters == 1 else 2
        cs = tuple(sorted(rng.choice(n_clusters, size=k, replace=False, p=weights).tolist()))
        user_clusters[uid] = cs
        pool = np.concatenate([clusters[c] for c in cs])
        items = rng.choice(pool, size=min(per_user, len(pool)), replace=False)
        if noise > 0:
            flip = rng.random(len(items)) < noise
            items = np.where(flip, rng.choice(all_items, size=len(items)), items)
            items = np.array(list(dict.fromkeys(items.tolist())))
        for i in items:
            rows.append((uid, int(i), 5.0))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    r = rng.random(len(ratings))
    rank = pd.Series(r).groupby(ratings["user_id"].to_numpy()).rank(method="first").to_numpy()
    is_test = rank <= n_test
    item_cluster = pd.Series(
        {int(i): c for c, its in clusters.items() for i in its}, name="cluster"
    )
    items_df = pd.DataFrame(
        {
            "item_id": all_items.astype(np.int64),
            "title": [f"item {i}" for i in all_items],
            "categories": [[f"c{item_cluster[int(i)]}"] for i in all_items],
        }
    )
    return Planted(
        ratings=ratings,
        train=ratings[~is_test].reset_index(drop=True),
        test=ratings[is_test][["user_id", "item_id"]].reset_index(drop=True),
        items=items_df,
        item_cluster=item_cluster,
        user_clusters=pd.Series(user_clusters),
    )


@functools.lru_cache(maxsize=8)
def _planted_cached(**kwargs: Any) -> Planted:
    return make_planted(**kwargs)


def planted(**kwargs: Any) -> Planted:
    """Cached :func:`make_planted` returning fresh copies of the frames."""
    p = _planted_cached(**kwargs)
    return Planted(
        ratings=p.ratings.copy(),
        train=p.train.copy(),
        test=p.test.copy(),
        items=p.items.copy(),
        item_cluster=p.item_cluster.copy(),
        user_clusters=p.user_clusters.copy(),
    )


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
    def data(self) -> Planted:
        return planted()

    @pytest.fixture(scope="class")
    def fitted(self, data: Planted) -> Any:
        return self.make_model().fit(data.train)

    @pytest.fixture(scope="class")
    def users(self, data: Planted) -> np.ndarray:
        return np.asarray(pd.unique(data.train["user_id"]))[:6]

    # ------------------------------------------------------------------ fitting
    def test_fit_returns_self(self, data: Planted) -> None:
        model = self.make_model()
        assert model.fit(data.train) is model

    @pytest.mark.parametrize("wrapper", ["Dataset", "duck"])
    def test_fit_accepts_dataset(
        self, data: Planted, fitted: Any, users: np.ndarray, wrapper: str
    ) -> None:
        if wrapper == "Dataset":
            from bayes_persona.data import Dataset

            wrapped: Any = Dataset(ratings=data.train, items=data.items)
        else:
            wrapped = SimpleNamespace(ratings=data.train, items=data.items)
        model = self.make_model().fit(wrapped)
        recs = model.recommend(users, n=5)
        if self.deterministic:
            # the items table may bring titles (an extra column); the rest is identical
            pd.testing.assert_frame_equal(
                recs.drop(columns="title", errors="ignore").reset_index(drop=True),
                fitted.recommend(users, n=5).reset_index(drop=True),
            )

    def test_fit_rejects_non_frame(self) -> None:
        with pytest.raises(TypeError):
            self.make_model().fit([(1, 2), (3, 4)])

    def test_fit_rejects_missing_column(self, data: Planted) -> None:
        with pytest.raises(ValueError):
            self.make_model().fit(data.train.drop(columns="item_id"))

    def test_deterministic(self, data: Planted, fitted: Any, users: np.ndarray) -> None:
        if not self.deterministic:
            pytest.skip("model is not deterministic")
        other = self.make_model().fit(data.train)
        pd.testing.assert_frame_equal(
            other.recommend(users, n=8).reset_index(drop=True),
            fitted.recommend(users, n=8).reset_index(drop=True),
        )

    def test_vocabularies(self, data: Planted, fitted: Any) -> None:
        assert len(fitted.user_vocab_) == data.train["user_id"].nunique()
        assert len(fitted.item_vocab_) == data.train["item_id"].nunique()

    # ------------------------------------------------------------------ recommend
    def test_recommend_columns(self, fitted: Any, users: np.ndarray) -> None:
        recs = fitted.recommend(users, n=5)
        assert list(recs.columns[:4]) == ["user_id", "rank", "item_id", "score"]
        assert set(recs["user_id"]) == set(users.tolist())

    def test_ranks_are_1_to_n(self, fitted: Any, users: np.ndarray) -> None:
        n = 7
        recs = fitted.recommend(users, n=n)
        for _, g in recs.groupby("user_id"):
            assert g["rank"].tolist() == list(range(1, n + 1))
            assert g["item_id"].is_unique
            if self.scores_sorted:
                assert (np.diff(g["score"].to_numpy()) <= 1e-9).all()  # best first

    def test_exclude_seen(self, data: Planted, fitted: Any) -> None:
        users = np.asarray(pd.unique(data.train["user_id"]))
        recs = fitted.recommend(users, n=20, exclude_seen=True)
        seen = set(zip(data.train["user_id"], data.train["item_id"], strict=True))
        got = set(zip(recs["user_id"], recs["item_id"], strict=True))
        assert not (got & seen)

    def test_include_seen_ranks_whole_catalogue(self, data: Planted, fitted: Any) -> None:
        n_items = data.train["item_id"].nunique()
        u = data.train["user_id"].iloc[0]
        recs = fitted.recommend([u], n=n_items, exclude_seen=False)
        assert len(recs) == n_items
        assert set(recs["item_id"]) == set(data.train["item_id"])

    def test_n_larger_than_catalogue(self, data: Planted, fitted: Any) -> None:
        u = data.train["user_id"].iloc[0]
        n_items = data.train["item_id"].nunique()
        n_seen = int((data.train["user_id"] == u).sum())
        recs = fitted.recommend([u], n=n_items + 50, exclude_seen=True)
        assert len(recs) == n_items - n_seen

    def test_batch_equals_single(self, fitted: Any, users: np.ndarray) -> None:
        batch = fitted.recommend(users, n=10).reset_index(drop=True)
        single = pd.concat(
            [fitted.recommend([u], n=10) for u in users], ignore_index=True
        ).reset_index(drop=True)
        for col in ("user_id", "rank", "item_id"):
            np.testing.assert_array_equal(batch[col].to_numpy(), single[col].to_numpy())
        np.testing.assert_allclose(batch["score"], single["score"], rtol=1e-6, atol=1e-9)

    def test_scalar_user(self, fitted: Any, users: np.ndarray) -> None:
        u = users[0]
        a = fitted.recommend(u, n=5).reset_index(drop=True)
        b = fitted.recommend([u], n=5).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)

    def test_unknown_user_raises(self, fitted: Any) -> None:
        with pytest.raises(KeyError):
            fitted.recommend([987654321], n=5)

    @pytest.mark.parametrize("n", [0, -3])
    def test_nonpositive_n_raises(self, fitted: Any, users: np.ndarray, n: int) -> None:
        with pytest.raises(ValueError):
            fitted.recommend(users, n=n)

    # ------------------------------------------------------------------ score
    def test_score_pairwise(self, data: Planted, fitted: Any) -> None:
        tr = data.train.head(12)
        s = fitted.score(tr["user_id"].to_numpy(), tr["item_id"].to_numpy())
        s = np.asarray(s)
        assert s.shape == (12,)
        assert np.isfinite(s).all()

    def test_score_matches_recommend(self, fitted: Any, users: np.ndarray) -> None:
        if not self.score_matches_recommend:
            pytest.skip("score is not the recommend score for this model")
        recs = fitted.recommend(users, n=10)
        s = fitted.score(recs["user_id"].to_numpy(), recs["item_id"].to_numpy())
        np.testing.assert_allclose(s, recs["score"].to_numpy(), rtol=1e-5, atol=1e-8)

    def test_score_unknown_item_raises(self, fitted: Any, users: np.ndarray) -> None:
        with pytest.raises(KeyError):
            fitted.score([users[0]], [987654321])

    # ------------------------------------------------------------------ not fitted
    def test_recommend_before_fit_raises(self, users: np.ndarray) -> None:
        with pytest.raises(NotFittedError):
            self.make_model().recommend(users, n=5)

    def test_score_before_fit_raises(self, users: np.ndarray) -> None:
        with pytest.raises(NotFittedError):
            self.make_model().score(users[:1], [100])
