"""Ranking, beyond-accuracy and calibration metrics over tidy DataFrames.

Every metric is a plain function of tidy frames:

* ``recs`` -- recommendations with columns ``user_id``, ``rank``, ``item_id`` (extra
  columns such as ``score`` are ignored). A user's list is ordered by ``rank`` and the
  top-``k`` are its first ``k`` rows in that order; positions are 1-based.
* ``test`` -- held-out relevant pairs with columns ``user_id``, ``item_id`` (duplicate
  pairs count once; relevance is binary).

Accuracy metrics average over the users in ``test``; a test user with no
recommendations counts as 0. ``per_user=True`` returns the per-user values as a
:class:`pandas.Series` indexed by ``user_id`` instead of their mean, which is what
:func:`bootstrap_ci` and :func:`paired_test` take.

References
----------
.. [1] Krichene, W. and Rendle, S. (2020). On Sampled Metrics for Item Recommendation.
   KDD 2020.
.. [2] Järvelin, K. and Kekäläinen, J. (2002). Cumulated gain-based evaluation of IR
   techniques. ACM TOIS 20(4).
.. [3] Steck, H. (2018). Calibrated Recommendations. RecSys 2018.
.. [4] Barkan, O., Fuchs, Y., Caciularu, A. and Koenigstein, N. (2020). Explainable
   Recommendations via Attentive Multi-Persona Collaborative Filtering. RecSys 2020.
.. [5] Ziegler, C.-N., McNee, S. M., Konstan, J. A. and Lausen, G. (2005). Improving
   recommendation lists through topic diversification. WWW 2005.
.. [6] Zhou, T. et al. (2010). Solving the apparent diversity-accuracy dilemma of
   recommender systems. PNAS 107(10).
.. [7] Efron, B. and Tibshirani, R. (1993). An Introduction to the Bootstrap. Chapman & Hall.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = [
    "hit_rate",
    "recall",
    "precision",
    "ndcg",
    "mrr",
    "map_at_k",
    "coverage",
    "intra_list_diversity",
    "novelty",
    "category_tastes",
    "taste_distribution_distance",
    "tdd",
    "taste_distance",
    "bootstrap_ci",
    "paired_test",
    "PairedTestResult",
]

logger = logging.getLogger(__name__)

Distance = Literal["kl", "js", "tv"]

#: Steck's (2018) mixing weight for the calibrated KL divergence.
STECK_ALPHA = 0.01


# --------------------------------------------------------------------------- helpers
def _frame(x: Any, name: str, required: Iterable[str]) -> pd.DataFrame:
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


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise DataTypeError(f"k must be a positive int; got {type(k).__name__} {k!r}")
    if k <= 0:
        raise DataValidationError(f"k must be a positive int; got {k}")
    return int(k)


def _topk(recs: Any, k: int) -> pd.DataFrame:
    """First ``k`` recommendations of each user, with 1-based ``pos``.

    Returns a frame with columns ``user_id``, ``item_id``, ``pos``.
    """
    df = _frame(recs, "recs", ("user_id", "rank", "item_id"))
    k = _check_k(k)
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
    top = _topk(recs, k)
    t = _frame(test, "test", ("user_id", "item_id"))[["user_id", "item_id"]].drop_duplicates()
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
    denom = np.minimum(n_rel.reindex(users).to_numpy(), _check_k(k))
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
    v = top.groupby("user_id")["hit"].sum() / _check_k(k)
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
    k = _check_k(k)
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
    k = _check_k(k)
    top, n_rel, users = _relevance(recs, test, k)
    hit = top["hit"].to_numpy().astype(float)
    cum_hits = pd.Series(hit).groupby(top["user_id"].to_numpy()).cumsum().to_numpy()
    prec_at = np.where(hit > 0, cum_hits / top["pos"].to_numpy(), 0.0)
    s = pd.Series(prec_at, index=top["user_id"].to_numpy()).groupby(level=0).sum()
    s = s.reindex(users, fill_value=0.0)
    v = pd.Series(s.to_numpy() / np.minimum(n_rel.reindex(users).to_numpy(), k), index=users)
    return _finish(v, users, "map", per_user)


# --------------------------------------------------------------------------- beyond accuracy
def coverage(recs: Any, n_catalog: int, k: int) -> float:
    """Catalogue coverage at ``k``: distinct items in all top-``k`` lists over ``n_catalog``.

    Coverage is an aggregate over the whole set of lists; it has no per-user value.

    Parameters
    ----------
    recs : DataFrame
        Recommendations with ``user_id``, ``rank``, ``item_id``.
    n_catalog : int
        Number of recommendable items, positive.
    k : int
        Cut-off.

    Returns
    -------
    float
        In [0, 1] when every recommended item belongs to the catalogue.

    References
    ----------
    .. [1] Ge, M., Delgado-Battenfeld, C. and Jannach, D. (2010). Beyond accuracy:
       evaluating recommender systems by coverage and serendipity. RecSys 2010.
    """
    if isinstance(n_catalog, bool) or not isinstance(n_catalog, numbers.Integral):
        raise DataTypeError(f"n_catalog must be a positive int; got {type(n_catalog).__name__}")
    if n_catalog <= 0:
        raise DataValidationError(f"n_catalog must be a positive int; got {n_catalog}")
    top = _topk(recs, k)
    return float(top["item_id"].nunique() / n_catalog)


def _category_sets(item_categories: Any) -> pd.Series:
    """Item -> category list, from a frame (item_id, categories) or a mapping."""
    if isinstance(item_categories, Mapping):
        s = pd.Series(dict(item_categories), dtype=object)
    else:
        df = _frame(item_categories, "item_categories", ("item_id", "categories"))
        s = pd.Series(df["categories"].to_numpy(), index=df["item_id"].to_numpy(), dtype=object)
        s = s[~s.index.duplicated(keep="first")]

    def norm(c: Any) -> tuple[str, ...]:
        if c is None or (isinstance(c, float) and np.isnan(c)):
            return ()
        if isinstance(c, str):
            return (c,)
        return tuple(dict.fromkeys(c))  # unique, order kept

    return s.map(norm)


def intra_list_diversity(
    recs: Any, item_categories: Any, k: int, *, per_user: bool = False
) -> float | pd.Series:
    """Intra-list diversity at ``k``: mean pairwise category distance in each top-``k`` list.

    The distance between two items is ``1 - Jaccard(C_i, C_j)`` of their category sets.
    Two items with no categories (or absent from ``item_categories``) have distance 0
    to each other and distance 1 to any item with categories. Users whose list has fewer
    than two items are left out (no pairs).

    Parameters
    ----------
    recs : DataFrame
        Recommendations with ``user_id``, ``rank``, ``item_id``.
    item_categories : DataFrame or Mapping
        A frame with ``item_id`` and ``categories`` (list of str per item, e.g.
        ``Dataset.items``), or a mapping item_id -> iterable of categories.
    k : int
        Cut-off.
    per_user : bool, default False
        Return per-user values (Series indexed by ``user_id``, users of ``recs``).

    Returns
    -------
    float or Series
        In [0, 1].

    References
    ----------
    .. [1] Ziegler, McNee, Konstan and Lausen (2005). Improving recommendation lists
       through topic diversification. WWW 2005.
    """
    k = _check_k(k)
    top = _topk(recs, k)
    cats = _category_sets(item_categories)
    all_cats = sorted({c for cs in cats for c in cs}, key=str)
    cat_idx = {c: j for j, c in enumerate(all_cats)}
    item_codes, items = pd.factorize(top["item_id"])
    n_c = max(len(all_cats), 1)
    M = np.zeros((len(items), n_c), dtype=np.float64)
    item_cats = cats.reindex(items)
    for r, cs in enumerate(item_cats.to_numpy()):
        if isinstance(cs, tuple):
            for c in cs:
                M[r, cat_idx[c]] = 1.0
    user_codes, users = pd.factorize(top["user_id"])
    n_u = len(users)
    out = np.full(n_u, np.nan)
    pos0 = top["pos"].to_numpy() - 1
    chunk = max(1, int(4e6 // max(k * k + k * n_c, 1)))
    for start in range(0, n_u, chunk):
        stop = min(start + chunk, n_u)
        sel = (user_codes >= start) & (user_codes < stop)
        X = np.zeros((stop - start, k, n_c))
        valid = np.zeros((stop - start, k), dtype=bool)
        X[user_codes[sel] - start, pos0[sel]] = M[item_codes[sel]]
        valid[user_codes[sel] - start, pos0[sel]] = True
        inter = X @ X.transpose(0, 2, 1)
        size = X.sum(axis=2)
        union = size[:, :, None] + size[:, None, :] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            jac = np.where(union > 0, inter / union, 1.0)
        dist = 1.0 - jac
        pair = valid[:, :, None] & valid[:, None, :]
        iu = np.triu(np.ones((k, k), dtype=bool), 1)
        pair &= iu[None]
        n_pairs = pair.sum(axis=(1, 2))
        tot = np.where(pair, dist, 0.0).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:stop] = np.where(n_pairs > 0, tot / n_pairs, np.nan)
    s = pd.Series(out, index=pd.Index(users, name="user_id"), name="ild").dropna()
    if per_user:
        return s
    return float(s.mean()) if len(s) else float("nan")


def novelty(recs: Any, train: Any, k: int, *, per_user: bool = False) -> float | pd.Series:
    """Novelty at ``k``: mean self-information ``-log2 pop(i)`` of the top-``k`` items.

    ``pop(i)`` is the fraction of training users who interacted with ``i``. An item never
    seen in ``train`` is treated as seen by one user, so its self-information is finite.

    Parameters
    ----------
    recs : DataFrame
        Recommendations with ``user_id``, ``rank``, ``item_id``.
    train : DataFrame or Dataset
        Training interactions with ``user_id``, ``item_id``.
    k : int
        Cut-off.
    per_user : bool, default False
        Return per-user values (Series indexed by ``user_id``, users of ``recs``).

    Returns
    -------
    float or Series
        Non-negative, in bits.

    References
    ----------
    .. [1] Zhou, T. et al. (2010). Solving the apparent diversity-accuracy dilemma of
       recommender systems. PNAS 107(10).
    """
    top = _topk(recs, k)
    tr = _frame(train, "train", ("user_id", "item_id"))[["user_id", "item_id"]].drop_duplicates()
    n_users = tr["user_id"].nunique()
    if n_users == 0:
        raise DataValidationError("train must hold at least one interaction; got an empty frame")
    counts = tr.groupby("item_id").size()
    c = counts.reindex(top["item_id"].to_numpy()).fillna(1).to_numpy(dtype=float)
    info = -np.log2(c / n_users)
    s = pd.Series(info, index=top["user_id"].to_numpy()).groupby(level=0).mean()
    s.index.name = "user_id"
    s.name = "novelty"
    if per_user:
        return s
    return float(s.mean()) if len(s) else float("nan")


# --------------------------------------------------------------------------- tastes / TDD
def category_tastes(items: Any) -> pd.DataFrame:
    """Item -> taste mapping from item categories: ``c`` categories share weight ``1/c``.

    Parameters
    ----------
    items : DataFrame, Dataset or Mapping
        A frame with ``item_id`` and ``categories`` (list of str), a Dataset whose
        ``.items`` is such a frame, or a mapping item_id -> iterable of categories.

    Returns
    -------
    DataFrame
        Columns ``item_id``, ``taste``, ``weight``; items without categories are absent.
    """
    if not isinstance(items, Mapping) and not isinstance(items, pd.DataFrame):
        items_attr = getattr(items, "items", None)
        if isinstance(items_attr, pd.DataFrame):
            items = items_attr
    cats = _category_sets(items)
    rows_i, rows_t, rows_w = [], [], []
    for item, cs in cats.items():
        if not cs:
            continue
        w = 1.0 / len(cs)
        for c in cs:
            rows_i.append(item)
            rows_t.append(c)
            rows_w.append(w)
    return pd.DataFrame({"item_id": rows_i, "taste": rows_t, "weight": rows_w})


def _as_tastes(tastes: Any) -> pd.DataFrame:
    """Normalise a taste argument to (item_id, taste, weight[, user_id]), unit mass per key."""
    if isinstance(tastes, Mapping):
        t = category_tastes(tastes)
    elif isinstance(tastes, pd.DataFrame) and "categories" in tastes.columns:
        t = category_tastes(tastes)
    elif not isinstance(tastes, pd.DataFrame) and isinstance(
        getattr(tastes, "items", None), pd.DataFrame
    ):
        t = category_tastes(tastes)
    else:
        t = _frame(tastes, "tastes", ("item_id", "taste", "weight"))
        cols = ["item_id", "taste", "weight"] + (["user_id"] if "user_id" in t.columns else [])
        t = t[cols].copy()
        w = pd.to_numeric(t["weight"], errors="coerce")
        if w.isna().any() or (w < 0).any() or not np.isfinite(w).all():
            raise DataValidationError(
                "tastes['weight'] must be finite and non-negative; got missing, negative "
                "or infinite values"
            )
        t["weight"] = w.astype(float)
    keys = ["user_id", "item_id"] if "user_id" in t.columns else ["item_id"]
    t = t.groupby(keys + ["taste"], as_index=False, sort=False)["weight"].sum()
    tot = t.groupby(keys, sort=False)["weight"].transform("sum")
    t = t[tot > 0].copy()
    t["weight"] = t["weight"] / tot[tot > 0]
    return t


def taste_distance(
    p: np.ndarray, q: np.ndarray, distance: Distance = "kl", alpha: float = STECK_ALPHA
) -> np.ndarray:
    """Distance between taste distributions along the last axis.

    Parameters
    ----------
    p : ndarray
        Reference (history) distributions; rows sum to 1.
    q : ndarray
        Recommended-list distributions, broadcastable against ``p``; rows sum to 1.
    distance : {"kl", "js", "tv"}
        ``"kl"``: Steck's calibrated KL ``C_KL = KL(p || (1 - alpha) q + alpha p)`` in nats;
        ``"js"``: Jensen-Shannon divergence in bits (in [0, 1]);
        ``"tv"``: total variation ``0.5 * sum |p - q|`` (in [0, 1]).
    alpha : float, default 0.01
        Mixing weight of ``"kl"`` (Steck 2018); ignored by the others.

    Returns
    -------
    ndarray
        ``p`` and ``q`` broadcast, last axis reduced.

    References
    ----------
    .. [1] Steck, H. (2018). Calibrated Recommendations. RecSys 2018.
    .. [2] Lin, J. (1991). Divergence measures based on the Shannon entropy. IEEE Trans.
       Inf. Theory 37(1).
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if distance == "kl":
        if not 0.0 < alpha < 1.0:
            raise DataValidationError(f"alpha must be in (0, 1); got {alpha}")
        qt = (1.0 - alpha) * q + alpha * p
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p / qt), 0.0)
        return terms.sum(axis=-1)
    if distance == "js":
        m = 0.5 * (p + q)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(p > 0, p * np.log2(p / m), 0.0)
            b = np.where(q > 0, q * np.log2(q / m), 0.0)
        return 0.5 * a.sum(axis=-1) + 0.5 * b.sum(axis=-1)
    if distance == "tv":
        return 0.5 * np.abs(p - q).sum(axis=-1)
    raise DataValidationError(f"distance must be one of 'kl', 'js', 'tv'; got {distance!r}")


def taste_distribution_distance(
    recs: Any,
    train: Any,
    k: int,
    tastes: Any,
    *,
    distance: Distance = "kl",
    alpha: float = STECK_ALPHA,
    per_user: bool = False,
) -> float | pd.Series:
    """Taste Distribution Distance at ``k`` (TDD@k).

    For each user, ``p`` is the taste distribution of the user's training history and
    ``q_j`` the taste distribution of the first ``j`` recommended items; TDD@k is the
    distance ``d(p, q_j)`` averaged over the prefixes ``j = 1..min(k, len(list))`` and
    then over users. Lower is better (the list matches the user's range of tastes).

    Each item (or, with a ``user_id`` column, each (user, item) pair) carries a taste
    distribution: its weights are normalised to sum to 1, so with categories an item with
    ``c`` categories spreads weight ``1/c`` over them. ``p`` is the mean of the history
    items' distributions (Steck 2018, eq. 1 with unit weights; duplicate interactions
    count once) and ``q_j`` that of the prefix items'. Items with no taste information
    are skipped in both; a prefix none of whose items has tastes is skipped, and users
    without history tastes or without any scorable prefix are left out.

    Parameters
    ----------
    recs : DataFrame
        Recommendations with ``user_id``, ``rank``, ``item_id``.
    train : DataFrame or Dataset
        Training interactions with ``user_id``, ``item_id`` (the user's history).
    k : int
        Cut-off.
    tastes : DataFrame, Dataset or Mapping
        Either item categories (a frame with ``item_id`` and ``categories``, a Dataset
        with such ``.items``, or a mapping item -> categories), or a taste mapping with
        ``item_id``, ``taste``, ``weight`` and an optional ``user_id`` column that makes
        the weights user-specific (e.g. the attention of a user's personas on an item).
    distance : {"kl", "js", "tv"}, default "kl"
        See :func:`taste_distance`; ``"kl"`` is Steck's calibrated ``C_KL``.
    alpha : float, default 0.01
        Steck's mixing weight for ``"kl"``.
    per_user : bool, default False
        Return per-user values (Series indexed by ``user_id``).

    Returns
    -------
    float or Series

    References
    ----------
    .. [1] Barkan, Fuchs, Caciularu and Koenigstein (2020). Explainable Recommendations via
       Attentive Multi-Persona Collaborative Filtering. RecSys 2020 (TDD).
    .. [2] Steck, H. (2018). Calibrated Recommendations. RecSys 2018 (C_KL, alpha=0.01).
    """
    k = _check_k(k)
    if distance not in ("kl", "js", "tv"):
        raise DataValidationError(f"distance must be one of 'kl', 'js', 'tv'; got {distance!r}")
    top = _topk(recs, k)
    tr = _frame(train, "train", ("user_id", "item_id"))[["user_id", "item_id"]].drop_duplicates()
    t = _as_tastes(tastes)
    user_specific = "user_id" in t.columns
    name = f"tdd_{distance}"
    if top.empty or t.empty:
        s = pd.Series(dtype=float, name=name, index=pd.Index([], name="user_id"))
        return s if per_user else float("nan")
    taste_codes, taste_labels = pd.factorize(t["taste"])
    t = t.assign(tc=taste_codes)
    n_t = len(taste_labels)
    user_codes, users = pd.factorize(top["user_id"])
    u_map = pd.Series(np.arange(len(users)), index=users)
    on = ["user_id", "item_id"] if user_specific else ["item_id"]

    # history distribution p (n_users x n_tastes)
    h = tr[tr["user_id"].isin(users)].merge(t, on=on, how="inner")
    P = np.zeros((len(users), n_t))
    np.add.at(
        P,
        (u_map.reindex(h["user_id"]).to_numpy(), h["tc"].to_numpy()),
        h["weight"].to_numpy(),
    )
    p_tot = P.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        P = P / p_tot
    has_p = p_tot[:, 0] > 0

    r = top.assign(uc=user_codes).merge(t, on=on, how="inner")
    out = np.full(len(users), np.nan)
    chunk = max(1, int(4e6 // max(k * n_t, 1)))
    uc_all = r["uc"].to_numpy()
    for start in range(0, len(users), chunk):
        stop = min(start + chunk, len(users))
        sel = (uc_all >= start) & (uc_all < stop)
        Q = np.zeros((stop - start, k, n_t))
        np.add.at(
            Q,
            (uc_all[sel] - start, r["pos"].to_numpy()[sel] - 1, r["tc"].to_numpy()[sel]),
            r["weight"].to_numpy()[sel],
        )
        C = np.cumsum(Q, axis=1)
        mass = C.sum(axis=2, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            Qn = C / mass
        # prefixes longer than the user's list are not prefixes
        lengths = np.bincount(user_codes, minlength=len(users))[start:stop]
        in_list = np.arange(k)[None, :] < lengths[:, None]
        ok = (mass[:, :, 0] > 0) & in_list & has_p[start:stop, None]
        d = taste_distance(
            P[start:stop, None, :], np.where(ok[:, :, None], Qn, 0.0), distance, alpha
        )
        d = np.where(ok, d, np.nan)
        cnt = ok.sum(axis=1)
        with np.errstate(invalid="ignore"):
            out[start:stop] = np.where(cnt > 0, np.nansum(d, axis=1) / np.maximum(cnt, 1), np.nan)
    s = pd.Series(out, index=pd.Index(users, name="user_id"), name=name).dropna()
    if per_user:
        return s
    return float(s.mean()) if len(s) else float("nan")


#: Short alias of :func:`taste_distribution_distance`.
tdd = taste_distribution_distance


# --------------------------------------------------------------------------- statistics
def _values(x: Any, name: str) -> pd.Series:
    if isinstance(x, pd.Series):
        s = x
    elif isinstance(x, Mapping):
        s = pd.Series(dict(x))
    else:
        try:
            s = pd.Series(np.asarray(x, dtype=float))
        except (TypeError, ValueError) as exc:
            raise DataTypeError(
                f"{name} must be a Series or array of numbers; got {type(x).__name__}"
            ) from exc
    try:
        s = s.astype(float)
    except (TypeError, ValueError) as exc:
        raise DataTypeError(f"{name} must hold numbers; got dtype {s.dtype}") from exc
    return s


def _boot_means(v: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``v``, in bounded memory."""
    n = len(v)
    out = np.empty(n_boot)
    step = max(1, int(5e6 // max(n, 1)))
    for s in range(0, n_boot, step):
        e = min(s + step, n_boot)
        idx = rng.integers(0, n, size=(e - s, n))
        out[s:e] = v[idx].mean(axis=1)
    return out


def _check_boot(n_boot: Any, ci: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 0:
        raise DataValidationError(f"n_boot must be a non-negative int; got {n_boot!r}")
    if not 0.0 < ci < 1.0:
        raise DataValidationError(f"ci must be in (0, 1); got {ci!r}")


def bootstrap_ci(
    per_user_values: Any, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-user values with a percentile bootstrap interval over users.

    Users are resampled with replacement ``n_boot`` times; the interval is given by the
    ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles of the resampled means. Missing
    values are dropped first.

    Parameters
    ----------
    per_user_values : Series or array-like
        One value per user.
    n_boot : int, default 1000
        Number of bootstrap resamples; 0 gives NaN bounds.
    ci : float, default 0.95
        Coverage of the interval.
    seed : int, default 0
        Seed of the resampling.

    Returns
    -------
    tuple of float
        ``(mean, low, high)``; all NaN for an empty input.

    References
    ----------
    .. [1] Efron and Tibshirani (1993), An Introduction to the Bootstrap, ch. 13.
    """
    _check_boot(n_boot, ci)
    v = _values(per_user_values, "per_user_values").dropna().to_numpy()
    if v.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    mean = float(v.mean())
    if n_boot == 0:
        return (mean, float("nan"), float("nan"))
    means = _boot_means(v, int(n_boot), np.random.default_rng(seed))
    lo, hi = np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2])
    return (mean, float(lo), float(hi))


class PairedTestResult(NamedTuple):
    """Result of :func:`paired_test`."""

    mean_diff: float
    """Mean over common users of ``a - b``."""
    low: float
    """Lower bound of the bootstrap interval of the mean difference."""
    high: float
    """Upper bound of the bootstrap interval of the mean difference."""
    p_value: float
    """Two-sided p-value of the paired sign-flip permutation test."""
    n_users: int
    """Number of users common to both inputs (with values in both)."""


def paired_test(
    per_user_a: pd.Series,
    per_user_b: pd.Series,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> PairedTestResult:
    """Paired comparison of two systems on the users common to both.

    The per-user differences ``d_u = a_u - b_u`` are computed on the users present (and
    not missing) in both inputs. The interval is a percentile bootstrap of the mean of
    ``d`` over users; the p-value is that of a two-sided paired randomisation
    (sign-flip) test with ``n_boot`` random sign vectors,
    ``p = (1 + #{|mean(s * d)| >= |mean(d)|}) / (n_boot + 1)``.

    Parameters
    ----------
    per_user_a, per_user_b : Series
        Per-user values indexed by ``user_id`` (as returned with ``per_user=True``).
    n_boot : int, default 1000
        Number of bootstrap resamples and of random sign flips.
    ci : float, default 0.95
        Coverage of the interval.
    seed : int, default 0
        Seed.

    Returns
    -------
    PairedTestResult
        ``(mean_diff, low, high, p_value, n_users)``.

    References
    ----------
    .. [1] Smucker, M. D., Allan, J. and Carterette, B. (2007). A comparison of
       statistical significance tests for information retrieval evaluation. CIKM 2007.
    .. [2] Efron and Tibshirani (1993), An Introduction to the Bootstrap.
    """
    _check_boot(n_boot, ci)
    a = _values(per_user_a, "per_user_a")
    b = _values(per_user_b, "per_user_b")
    if not (isinstance(per_user_a, pd.Series) and isinstance(per_user_b, pd.Series)):
        if len(a) != len(b):
            raise DataValidationError(
                "per_user_a and per_user_b must be Series indexed by user_id, or arrays of "
                f"equal length; got lengths {len(a)} and {len(b)}"
            )
    common = a.index.intersection(b.index)
    d = (a.reindex(common) - b.reindex(common)).dropna().to_numpy()
    n = int(d.size)
    if n == 0:
        nan = float("nan")
        return PairedTestResult(nan, nan, nan, nan, 0)
    mean = float(d.mean())
    if n_boot == 0:
        return PairedTestResult(mean, float("nan"), float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    means = _boot_means(d, int(n_boot), rng)
    lo, hi = np.quantile(means, [(1 - ci) / 2, (1 + ci) / 2])
    obs = abs(mean)
    count = 0
    step = max(1, int(5e6 // n))
    for s in range(0, n_boot, step):
        e = min(s + step, n_boot)
        signs = rng.integers(0, 2, size=(e - s, n)) * 2 - 1
        perm = np.abs((signs * d).mean(axis=1))
        count += int((perm >= obs - 1e-12 * max(1.0, obs)).sum())
    p = (1 + count) / (n_boot + 1)
    return PairedTestResult(mean, float(lo), float(hi), float(p), n)
