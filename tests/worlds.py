"""Clustered test worlds: users who choose (up to noise) only inside their item clusters.

``make_planted`` builds one; ``planted`` returns a cached one as fresh copies. Unlike
:func:`bayes_persona.make_synthetic` (the library's planted-taste world, with its truth),
the clusters here are exact item sets, so a contract test can say which items a user may
be recommended.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


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
