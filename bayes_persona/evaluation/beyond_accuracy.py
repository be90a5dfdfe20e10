"""Beyond-accuracy metrics: coverage, diversity, novelty and taste calibration (TDD).

This module holds catalogue coverage, intra-list diversity over item categories,
novelty (self-information of the recommended items' popularity), the category taste
distribution of items (:func:`category_tastes`) and the distance between a user's taste
distribution in training and in the recommendations (:func:`taste_distribution_distance`,
alias :func:`tdd`; Steck's calibrated KL divergence, or Jensen-Shannon or total
variation). Inputs are the tidy frames described in :mod:`bayes_persona.evaluation.ranking`.

References
----------
.. [1] Steck, H. (2018). Calibrated Recommendations. RecSys 2018.
.. [2] Barkan, O., Fuchs, Y., Caciularu, A. and Koenigstein, N. (2020). Explainable
   Recommendations via Attentive Multi-Persona Collaborative Filtering. RecSys 2020.
.. [3] Ziegler, C.-N., McNee, S. M., Konstan, J. A. and Lausen, G. (2005). Improving
   recommendation lists through topic diversification. WWW 2005.
.. [4] Zhou, T. et al. (2010). Solving the apparent diversity-accuracy dilemma of
   recommender systems. PNAS 107(10).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from bayes_persona.evaluation.ranking import check_k, checked_frame, top_k_items
from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = [
    "coverage",
    "intra_list_diversity",
    "novelty",
    "category_tastes",
    "taste_distribution_distance",
    "tdd",
    "taste_distance",
    "STECK_ALPHA",
]

Distance = Literal["kl", "js", "tv"]

#: Steck's (2018) mixing weight for the calibrated KL divergence.
STECK_ALPHA = 0.01


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
    top = top_k_items(recs, k)
    return float(top["item_id"].nunique() / n_catalog)


def _category_sets(item_categories: Any) -> pd.Series:
    """Item -> category list, from a frame (item_id, categories) or a mapping."""
    if isinstance(item_categories, Mapping):
        s = pd.Series(dict(item_categories), dtype=object)
    else:
        df = checked_frame(item_categories, "item_categories", ("item_id", "categories"))
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
    k = check_k(k)
    top = top_k_items(recs, k)
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
    top = top_k_items(recs, k)
    tr = checked_frame(train, "train", ("user_id", "item_id"))[["user_id", "item_id"]].drop_duplicates()
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
        t = checked_frame(tastes, "tastes", ("item_id", "taste", "weight"))
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
    k = check_k(k)
    if distance not in ("kl", "js", "tv"):
        raise DataValidationError(f"distance must be one of 'kl', 'js', 'tv'; got {distance!r}")
    top = top_k_items(recs, k)
    tr = checked_frame(train, "train", ("user_id", "item_id"))[["user_id", "item_id"]].drop_duplicates()
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
