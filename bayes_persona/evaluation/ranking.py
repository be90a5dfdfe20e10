"""Ranking (accuracy) metrics at a cut-off ``k`` over tidy DataFrames.

Every metric is a plain function of tidy frames:

* ``recs`` -- recommendations with columns ``user_id``, ``rank``, ``item_id`` (extra
  columns such as ``score`` are ignored). A user's list is ordered by ``rank`` and the
  top-``k`` are its first ``k`` rows in that order; positions are 1-based.
* ``test`` -- held-out relevant pairs with columns ``user_id``, ``item_id`` (duplicate
  pairs count once; relevance is binary).

This module holds hit rate, recall, precision, NDCG, MRR and MAP, and the frame helpers
that :mod:`bayes_persona.evaluation.beyond_accuracy` shares. Accuracy metrics average over
the users in ``test``; a test user with no recommendations counts as 0. ``per_user=True``
returns the per-user values as a :class:`pandas.Series` indexed by ``user_id`` instead of
their mean, which is what :func:`~bayes_persona.evaluation.statistics.bootstrap_ci` and
:func:`~bayes_persona.evaluation.statistics.paired_test` take.

References
----------
.. [1] Krichene, W. and Rendle, S. (2020). On Sampled Metrics for Item Recommendation.
   KDD 2020.
.. [2] Järvelin, K. and Kekäläinen, J. (2002). Cumulated gain-based evaluation of IR
   techniques. ACM TOIS 20(4).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = ["hit_rate", "recall", "precision", "ndcg", "mrr", "map_at_k"]


# --------------------------------------------------------------------------- helpers
def checked_frame(x: Any, name: str, required: Iterable[str]) -> pd.DataFrame:
    """Return ``x`` (or ``x.ratings``) as a DataFrame holding the ``required`` columns."""
    df = getattr(x, "ratings", x)
    if not isinstance(df, pd.DataFrame):
        raise DataTypeError(
            f"{name} must be a pandas DataFrame (or a Dataset with .ratings); "
            f"got {type(x).__name__}"
        )
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{name} must have columns {list(required)}; missing {missing}, "
            f"got columns {list(df.columns)}"
        )
    for c in ("user_id", "item_id"):
        if c in required and df[c].isna().any():
            raise DataValidationError(f"{name}[{c!r}] must not contain missing values")
    return df


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise DataTypeError(f"k must be a positive int; got {type(k).__name__} {k!r}")
    if k <= 0:
        raise DataValidationError(f"k must be a positive int; got {k}")
    return int(k)


def top_k_items(recs: Any, k: int) -> pd.DataFrame:
    """First ``k`` recommendations of each user, with 1-based ``pos``.

    Returns a frame with columns ``user_id``, ``item_id``, ``pos``.
    """
    df = checked_frame(recs, "recs", ("user_id", "rank", "item_id"))
    k = check_k(k)
    if df["rank"].isna().any():
        raise DataValidationError("recs['rank'] must not contain missing values")
    df = df[["user_id", "rank", "item_id"]]
    if df.duplicated(["user_id", "item_id"]).any():
        n_dup = int(df.duplicated(["user_id", "item_id"]).sum())
        raise DataValidationError(
            f"recs must list each (user_id, item_id) at most once; got {n_dup} duplicate pair(s)"
        )
    df = df.sort_values(["user_id", "rank"], kind="stable")
    pos = df.groupby("user_id", sort=False).cumcount().to_numpy() + 1
    out = pd.DataFrame(
        {"user_id": df["user_id"].to_numpy(), "item_id": df["item_id"].to_numpy(), "pos": pos}
    )
    return out[out["pos"] <= k].reset_index(drop=True)


def _relevance(recs: Any, test: Any, k: int) -> tuple[pd.DataFrame, pd.Series, pd.Index]:
    """Top-k with a boolean ``hit`` column, |test_u| per user, and the test users."""
    top = top_k_items(recs, k)
    t = checked_frame(test, "test", ("user_id", "item_id"))[["user_id", "item_id"]].drop_duplicates()
    n_rel = t.groupby("user_id", sort=True).size()
    users = pd.Index(n_rel.index, name="user_id")
    top = top[top["user_id"].isin(users)]
    t_key = t.assign(hit=True)
    top = top.merge(t_key, on=["user_id", "item_id"], how="left")
    top["hit"] = top["hit"].fillna(False).astype(bool)
    return top, n_rel, users


def _finish(values: pd.Series, users: pd.Index, name: str, per_user: bool) -> float | pd.Series:
    """Reindex per-user values on ``users`` (missing -> 0) and aggregate."""
    s = values.reindex(users, fill_value=0.0).astype(float)
    s.index.name = "user_id"
    s.name = name
    if per_user:
        return s
    return float(s.mean()) if len(s) else float("nan")


def _idcg(n: np.ndarray) -> np.ndarray:
    """Ideal DCG with ``n`` relevant items at the top (vectorised)."""
    n = np.asarray(n, dtype=np.int64)
    m = int(n.max()) if n.size else 0
    cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, m + 2)))])
    return cum[n]


# --------------------------------------------------------------------------- accuracy
def hit_rate(recs: Any, test: Any, k: int, *, per_user: bool = False) -> float | pd.Series:
    """Hit rate at ``k``: 1 if any of the top-``k`` items is relevant, else 0.

    Parameters
    ----------
    recs : DataFrame
        Recommendations with ``user_id``, ``rank``, ``item_id``.
    test : DataFrame
        Relevant pairs with ``user_id``, ``item_id``.
    k : int
        Cut-off, positive.
    per_user : bool, default False
        Return the per-user values (Series indexed by ``user_id``) instead of their mean.

    Returns
    -------
    float or Series
        Mean over the users in ``test`` (those without recommendations count as 0).

    References
    ----------
    .. [1] Krichene and Rendle (2020), On Sampled Metrics for Item Recommendation, KDD.
    """
    top, _, users = _relevance(recs, test, k)
    v = top.groupby("user_id")["hit"].any().astype(float)
    return _finish(v, users, "hit_rate", per_user)


def recall(recs: Any, test: Any, k: int, *, per_user: bool = False) -> float | pd.Series:
    """Recall at ``k``, normalised by ``min(k, |test_u|)`` so a perfect list scores 1.

    ``recall_u = |top_k(u) ∩ test_u| / min(k, |test_u|)``.

    Parameters
    ----------
    recs, test, k, per_user
        See :func:`hit_rate`.

    Returns
    -------
    float or Series

    References
    ----------
    .. [1] Liang, D. et al. (2018). Variational Autoencoders for Collaborative Filtering.
       WWW 2018 (the ``min(k, |test_u|)`` normalisation).
    """
    top, n_rel, users = _relevance(recs, test, k)
    hits = top.groupby("user_id")["hit"].sum().reindex(users, fill_value=0)
    denom = np.minimum(n_rel.reindex(users).to_numpy(), check_k(k))
    v = pd.Series(hits.to_numpy() / denom, index=users)
    return _finish(v, users, "recall", per_user)


def precision(recs: Any, test: Any, k: int, *, per_user: bool = False) -> float | pd.Series:
    """Precision at ``k``: number of relevant items in the top-``k`` divided by ``k``.

    Parameters
    ----------
    recs, test, k, per_user
        See :func:`hit_rate`.

    Returns
    -------
    float or Series
    """
    top, _, users = _relevance(recs, test, k)
    v = top.groupby("user_id")["hit"].sum() / check_k(k)
    return _finish(v, users, "precision", per_user)


def ndcg(recs: Any, test: Any, k: int, *, per_user: bool = False) -> float | pd.Series:
    """Normalised discounted cumulative gain at ``k`` with binary relevance.

    ``DCG_u = sum_{pos <= k, hit} 1 / log2(pos + 1)`` and the ideal DCG puts
    ``min(k, |test_u|)`` relevant items at the top, so ``ndcg`` lies in [0, 1] and a
    perfect list scores 1.

    Parameters
    ----------
    recs, test, k, per_user
        See :func:`hit_rate`.

    Returns
    -------
    float or Series

    References
    ----------
    .. [1] Järvelin and Kekäläinen (2002), Cumulated gain-based evaluation of IR
       techniques, ACM TOIS 20(4).
    """
    k = check_k(k)
    top, n_rel, users = _relevance(recs, test, k)
    gain = np.where(top["hit"].to_numpy(), 1.0 / np.log2(top["pos"].to_numpy() + 1.0), 0.0)
    dcg = pd.Series(gain, index=top["user_id"].to_numpy()).groupby(level=0).sum()
    dcg = dcg.reindex(users, fill_value=0.0)
    idcg = _idcg(np.minimum(n_rel.reindex(users).to_numpy(), k))
    v = pd.Series(dcg.to_numpy() / idcg, index=users)
    return _finish(v, users, "ndcg", per_user)


def mrr(recs: Any, test: Any, k: int, *, per_user: bool = False) -> float | pd.Series:
    """Mean reciprocal rank at ``k``: ``1 / pos`` of the first relevant item in the top-``k``.

    Parameters
    ----------
    recs, test, k, per_user
        See :func:`hit_rate`.

    Returns
    -------
    float or Series
    """
    top, _, users = _relevance(recs, test, k)
    first = top[top["hit"]].groupby("user_id")["pos"].min()
    v = 1.0 / first.astype(float)
    return _finish(v, users, "mrr", per_user)


def map_at_k(recs: Any, test: Any, k: int, *, per_user: bool = False) -> float | pd.Series:
    """Mean average precision at ``k``.

    ``AP_u = (1 / min(k, |test_u|)) * sum_{pos <= k} P@pos * rel(pos)``, so a perfect
    list scores 1.

    Parameters
    ----------
    recs, test, k, per_user
        See :func:`hit_rate`.

    Returns
    -------
    float or Series
    """
    k = check_k(k)
    top, n_rel, users = _relevance(recs, test, k)
    hit = top["hit"].to_numpy().astype(float)
    cum_hits = pd.Series(hit).groupby(top["user_id"].to_numpy()).cumsum().to_numpy()
    prec_at = np.where(hit > 0, cum_hits / top["pos"].to_numpy(), 0.0)
    s = pd.Series(prec_at, index=top["user_id"].to_numpy()).groupby(level=0).sum()
    s = s.reindex(users, fill_value=0.0)
    v = pd.Series(s.to_numpy() / np.minimum(n_rel.reindex(users).to_numpy(), k), index=users)
    return _finish(v, users, "map", per_user)
