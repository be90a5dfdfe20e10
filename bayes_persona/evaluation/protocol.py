"""Offline evaluation harness: fit on train, rank, score against test, with bootstrap intervals.

:func:`evaluate` works with any object that has ``fit(train[, items])`` and
``recommend(user_ids, n, exclude_seen)`` (plus ``score(user_ids, item_ids)`` for the
sampled protocol) -- the library's model and every baseline. It returns a tidy table
``(model, protocol, metric, k, value, low, high)`` where ``[low, high]`` is a per-user
percentile bootstrap interval. :func:`~bayes_persona.evaluation.statistics.compare` runs
paired tests between two systems' per-user values, and
:func:`~bayes_persona.evaluation.tuning.tune` picks hyperparameters on a validation split
cut from the training data.

Two protocols:

``"full"``
    Each test user's list is ranked over the whole training catalogue with the user's
    training items excluded; accuracy is measured against all of the user's test items.
    This is the protocol recommended by Krichene and Rendle (2020).
``"sampled"``
    The AMP-CF / NCF protocol: each test (user, item) pair is ranked among
    ``n_negatives`` (99) items sampled uniformly from those the user never interacted
    with (in train or test); HR@k, NDCG@k and MRR@k are computed on that candidate list
    from ``model.score`` and averaged over each user's test pairs. Score ties count as a
    uniformly random order (the expected metric is reported), so a constant scorer gets
    chance level.

The test data never reach ``fit``: the model is fitted on ``train`` alone (or, with
``fit=False``, is assumed already fitted on it). Test rows whose user or item does not
occur in ``train`` are dropped, as are test pairs already in ``train``; the counts are
logged and kept in ``result.attrs``.

References
----------
.. [1] Krichene, W. and Rendle, S. (2020). On Sampled Metrics for Item Recommendation.
   KDD 2020.
.. [2] He, X., Liao, L., Zhang, H., Nie, L., Hu, X. and Chua, T.-S. (2017). Neural
   Collaborative Filtering. WWW 2017 (the sampled protocol).
.. [3] Barkan, O., Fuchs, Y., Caciularu, A. and Koenigstein, N. (2020). Explainable
   Recommendations via Attentive Multi-Persona Collaborative Filtering. RecSys 2020.
.. [4] Efron, B. and Tibshirani, R. (1993). An Introduction to the Bootstrap.
"""

from __future__ import annotations

import inspect
import logging
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayes_persona.data._validation import id_frame
from bayes_persona.evaluation.beyond_accuracy import (
    coverage,
    intra_list_diversity,
    novelty,
    taste_distribution_distance,
)
from bayes_persona.evaluation.ranking import hit_rate, map_at_k, mrr, ndcg, precision, recall
from bayes_persona.evaluation.statistics import bootstrap_ci
from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = [
    "evaluate",
    "ACCURACY_METRICS",
    "BEYOND_ACCURACY_METRICS",
    "DEFAULT_METRICS",
    "RESULT_COLUMNS",
]

logger = logging.getLogger(__name__)

#: Columns of the table :func:`evaluate` returns.
RESULT_COLUMNS = ["model", "protocol", "metric", "k", "value", "low", "high"]

#: Accuracy metrics (per-user, averaged over test users).
ACCURACY_METRICS: dict[str, Callable[..., Any]] = {
    "hit_rate": hit_rate,
    "recall": recall,
    "precision": precision,
    "ndcg": ndcg,
    "mrr": mrr,
    "map": map_at_k,
}
#: Metrics beyond accuracy (``ild`` and ``tdd*`` need item categories or a taste mapping).
BEYOND_ACCURACY_METRICS = ("coverage", "novelty", "ild", "tdd", "tdd_js", "tdd_tv")
#: Metrics of the full protocol when ``metrics=None`` (category-based ones only with
#: categories or tastes).
DEFAULT_METRICS = ("hit_rate", "recall", "ndcg", "mrr", "map", "coverage", "novelty", "ild", "tdd")
_SAMPLED_METRICS = ("hit_rate", "ndcg", "mrr")
_NEEDS_TASTES = ("ild", "tdd", "tdd_js", "tdd_tv")
LOWER_IS_BETTER = ("tdd", "tdd_js", "tdd_tv")
_USER_CHUNK = 4096
_PAIR_CHUNK = 200_000


# --------------------------------------------------------------------------- input helpers
def _ks(k: Any) -> tuple[int, ...]:
    ks = [k] if isinstance(k, numbers.Integral) and not isinstance(k, bool) else k
    if not isinstance(ks, Iterable) or isinstance(ks, str):
        raise DataTypeError(f"k must be a positive int or a sequence of them; got {k!r}")
    out = []
    for v in ks:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise DataValidationError(f"k must hold positive ints; got {v!r} in {k!r}")
        out.append(int(v))
    if not out:
        raise DataValidationError("k must hold at least one cut-off; got none")
    return tuple(sorted(set(out)))


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_model(model: Any, protocol: str) -> None:
    need = ["fit", "recommend"] if protocol == "full" else ["fit", "score"]
    lacking = [m for m in need if not callable(getattr(model, m, None))]
    if lacking:
        raise DataTypeError(
            f"model must have methods {need} for protocol={protocol!r}; "
            f"{type(model).__name__} lacks {lacking}"
        )


def _tastes_source(items: Any, tastes: Any) -> Any:
    """The tastes for ILD / TDD: an explicit mapping, else item categories, else None."""
    if tastes is not None:
        return tastes
    if isinstance(items, pd.DataFrame) and "categories" in items.columns:
        return items
    return None


def _clean_test(tr: pd.DataFrame, te: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop test rows unusable for evaluation; return the rest and what was dropped."""
    te = te[["user_id", "item_id"]]
    n0 = len(te)
    te = te.drop_duplicates()
    n_dup = n0 - len(te)
    known_u = te["user_id"].isin(pd.Index(tr["user_id"].unique()))
    known_i = te["item_id"].isin(pd.Index(tr["item_id"].unique()))
    dropped_users = te.loc[~known_u, "user_id"].nunique()
    n_rows_u = int((~known_u).sum())
    n_rows_i = int((known_u & ~known_i).sum())
    dropped_items = te.loc[known_u & ~known_i, "item_id"].nunique()
    te = te[known_u & known_i]
    in_train = (
        te.merge(
            tr[["user_id", "item_id"]].drop_duplicates().assign(_tr=True),
            on=["user_id", "item_id"],
            how="left",
        )["_tr"]
        .fillna(False)
        .to_numpy(dtype=bool)
    )
    n_in_train = int(in_train.sum())
    te = te[~in_train].reset_index(drop=True)
    info = {
        "n_test_rows": int(len(te)),
        "n_test_users": int(te["user_id"].nunique()),
        "n_duplicate_test_rows": int(n_dup),
        "n_dropped_users": int(dropped_users),
        "n_dropped_rows_unknown_user": n_rows_u,
        "n_dropped_items": int(dropped_items),
        "n_dropped_rows_unknown_item": n_rows_i,
        "n_dropped_rows_in_train": n_in_train,
    }
    if n_rows_u or n_rows_i or n_in_train:
        logger.warning(
            "evaluate: dropped %d test rows of %d users absent from train, %d rows of %d items "
            "absent from train and %d test pairs already in train; %d rows of %d users remain",
            n_rows_u,
            dropped_users,
            n_rows_i,
            dropped_items,
            n_in_train,
            info["n_test_rows"],
            info["n_test_users"],
        )
    return te, info


# --------------------------------------------------------------------------- protocols
def _recommend_all(model: Any, users: np.ndarray, n: int) -> pd.DataFrame:
    parts = []
    for s in range(0, len(users), _USER_CHUNK):
        r = model.recommend(users[s : s + _USER_CHUNK], n=n, exclude_seen=True)
        missing = [c for c in ("user_id", "rank", "item_id") if c not in r.columns]
        if missing:
            raise DataValidationError(
                f"model.recommend must return columns user_id, rank, item_id; missing {missing}"
            )
        parts.append(r[["user_id", "rank", "item_id"]])
    if not parts:
        return pd.DataFrame({"user_id": [], "rank": [], "item_id": []})
    return pd.concat(parts, ignore_index=True)


def _full_protocol(
    model: Any,
    tr: pd.DataFrame,
    te: pd.DataFrame,
    ks: tuple[int, ...],
    names: list[str],
    tastes: Any,
) -> dict[tuple[str, int], pd.Series | float]:
    users = np.asarray(pd.unique(te["user_id"]))
    n_catalog = int(tr["item_id"].nunique())
    n = min(max(ks), n_catalog)
    recs = _recommend_all(model, users, n)
    out: dict[tuple[str, int], pd.Series | float] = {}
    for name in names:
        for k in ks:
            if name in ACCURACY_METRICS:
                v: pd.Series | float = ACCURACY_METRICS[name](recs, te, k, per_user=True)
            elif name == "coverage":
                v = coverage(recs, n_catalog, k) if len(recs) else 0.0
            elif name == "novelty":
                v = novelty(recs, tr, k, per_user=True)
            elif name == "ild":
                v = intra_list_diversity(recs, tastes, k, per_user=True)
            else:  # tdd, tdd_js, tdd_tv
                dist = "kl" if name == "tdd" else name.split("_")[1]
                v = taste_distribution_distance(recs, tr, k, tastes, distance=dist, per_user=True)
            out[(name, k)] = v
    return out


def _sample_candidates(
    tr: pd.DataFrame, te: pd.DataFrame, n_negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Negatives for every test pair: items the user never interacted with.

    Returns ``(item_ids, user_codes_of_pairs, positive_codes, negatives)`` where
    ``negatives`` is ``(n_pairs, n_neg)`` of item codes, ``-1`` where a user has fewer
    than ``n_neg`` available items.
    """
    item_ids = np.sort(tr["item_id"].unique())
    item_index = pd.Index(item_ids)
    n_items = len(item_ids)
    user_index = pd.Index(pd.unique(pd.concat([tr["user_id"], te["user_id"]])))
    both = pd.concat([tr[["user_id", "item_id"]], te[["user_id", "item_id"]]])
    both = both[both["item_id"].isin(item_index)]
    keys = np.unique(
        user_index.get_indexer(both["user_id"]).astype(np.int64) * n_items
        + item_index.get_indexer(both["item_id"]).astype(np.int64)
    )
    pu = user_index.get_indexer(te["user_id"]).astype(np.int64)
    pi = item_index.get_indexer(te["item_id"]).astype(np.int64)
    n_neg = min(n_negatives, n_items - 1)
    n_pairs = len(pu)
    negs = np.full((n_pairs, n_neg), -1, dtype=np.int64)
    if n_neg <= 0 or n_pairs == 0:
        return item_ids, pu, pi, negs

    def interacted(u: np.ndarray, cand: np.ndarray) -> np.ndarray:
        q = u[:, None] * n_items + cand
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return keys[pos] == q

    m = int(n_neg * 1.5) + 20
    todo = np.ones(n_pairs, dtype=bool)
    for start in range(0, n_pairs, max(1, 2_000_000 // m)):
        stop = min(n_pairs, start + max(1, 2_000_000 // m))
        u = pu[start:stop]
        cand = rng.integers(0, n_items, size=(stop - start, m))
        valid = ~interacted(u, cand)
        order = np.argsort(cand, axis=1, kind="stable")
        sc = np.take_along_axis(cand, order, axis=1)
        dup_sorted = np.zeros_like(sc, dtype=bool)
        dup_sorted[:, 1:] = sc[:, 1:] == sc[:, :-1]
        dup = np.empty_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        valid &= ~dup
        rank = np.cumsum(valid, axis=1)
        enough = rank[:, -1] >= n_neg
        take = valid & (rank <= n_neg)
        rows = np.flatnonzero(enough)
        negs[start + rows] = cand[rows][take[rows]].reshape(len(rows), n_neg)
        todo[start + rows] = False
    # heavy users: sample without replacement from what is left
    all_items = np.arange(n_items)
    for r in np.flatnonzero(todo):
        seen = keys[(keys >= pu[r] * n_items) & (keys < (pu[r] + 1) * n_items)] - pu[r] * n_items
        avail = np.setdiff1d(all_items, seen, assume_unique=True)
        got = rng.choice(avail, size=min(n_neg, len(avail)), replace=False)
        negs[r, : len(got)] = got
    n_short = int((negs < 0).any(axis=1).sum())
    if n_short:
        logger.warning(
            "evaluate(protocol='sampled'): %d test pairs have fewer than %d non-interacted "
            "items to sample; they are ranked among fewer candidates",
            n_short,
            n_neg,
        )
    return item_ids, pu, pi, negs


def _sampled_protocol(
    model: Any,
    tr: pd.DataFrame,
    te: pd.DataFrame,
    ks: tuple[int, ...],
    names: list[str],
    n_negatives: int,
    rng: np.random.Generator,
) -> dict[tuple[str, int], pd.Series | float]:
    item_ids, _, pi, negs = _sample_candidates(tr, te, n_negatives, rng)
    users = te["user_id"].to_numpy()
    n_pairs, n_neg = negs.shape
    cand = np.concatenate([pi[:, None], negs], axis=1)  # (P, 1 + n_neg)
    mask = cand >= 0
    flat_rows = np.repeat(np.arange(n_pairs), mask.sum(axis=1))
    flat_items = cand[mask]
    scores_flat = np.empty(len(flat_items))
    for s in range(0, len(flat_items), _PAIR_CHUNK):
        sl = slice(s, s + _PAIR_CHUNK)
        got = np.asarray(
            model.score(users[flat_rows[sl]], item_ids[flat_items[sl]]), dtype=np.float64
        ).ravel()
        if got.shape != (len(flat_items[sl]),):
            raise DataValidationError(
                f"model.score must return one score per pair; asked {len(flat_items[sl])}, "
                f"got shape {got.shape}"
            )
        scores_flat[sl] = got
    scores_flat = np.where(np.isnan(scores_flat), -np.inf, scores_flat)
    S = np.full(cand.shape, np.nan)
    S[mask] = scores_flat
    pos = S[:, 0:1]
    neg = S[:, 1:]
    with np.errstate(invalid="ignore"):
        g = np.nansum(neg > pos, axis=1).astype(np.int64)  # strictly better negatives
        t = np.nansum(neg == pos, axis=1).astype(np.int64)  # ties
    # rank uniform over g+1 .. g+t+1: report the expectation
    n_c = cand.shape[1] + 1
    disc = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, n_c + 2)))])
    harm = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n_c + 1))])
    out: dict[tuple[str, int], pd.Series | float] = {}
    for name in names:
        for k in ks:
            hi = np.minimum(g + t + 1, k)
            lo = np.minimum(g, k)
            if name == "hit_rate":
                vals = (hi - lo) / (t + 1)
            elif name == "ndcg":
                vals = (disc[hi] - disc[lo]) / (t + 1)
            else:  # mrr
                vals = (harm[hi] - harm[lo]) / (t + 1)
            v = pd.Series(vals, index=users).groupby(level=0).mean()
            v.index.name = "user_id"
            out[(name, k)] = v
    return out


# --------------------------------------------------------------------------- public API
def evaluate(
    model: Any,
    train: Any,
    test: Any,
    k: int | Sequence[int] = (10, 20, 100),
    items: pd.DataFrame | None = None,
    protocol: str = "full",
    metrics: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    fit: bool = True,
    model_name: str | None = None,
    n_negatives: int = 99,
    *,
    tastes: pd.DataFrame | None = None,
    ci: float = 0.95,
    return_per_user: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Fit a recommender on ``train`` and measure it on ``test``.

    Parameters
    ----------
    model : object
        Has ``fit(train[, items])`` and ``recommend(user_ids, n, exclude_seen)``; the
        sampled protocol needs ``score(user_ids, item_ids)`` instead of ``recommend``.
    train : DataFrame or Dataset
        Training interactions (``user_id``, ``item_id``); the only data ``fit`` sees.
    test : DataFrame or Dataset
        Held-out relevant pairs (``user_id``, ``item_id``).
    k : int or sequence of int, default (10, 20, 100)
        Cut-offs.
    items : DataFrame, optional
        Item metadata with ``item_id`` and ``categories``; enables ``ild`` and TDD on
        categories and is passed to ``fit(..., items=items)`` when ``fit`` accepts it.
        Defaults to ``train.items`` for a Dataset.
    protocol : {"full", "sampled"}, default "full"
        See the module docstring.
    metrics : sequence of str, optional
        Among ``hit_rate, recall, precision, ndcg, mrr, map, coverage, novelty, ild,
        tdd`` (``tdd`` = Steck's C_KL), ``tdd_js``, ``tdd_tv``. Default: all of
        :data:`DEFAULT_METRICS` that the inputs allow for "full"; ``hit_rate, ndcg,
        mrr`` for "sampled" (the only ones it supports).
    n_boot : int, default 1000
        Bootstrap resamples of the per-user values; 0 skips the interval.
    seed : int, default 0
        Seed of the bootstrap and of the negative sampling.
    fit : bool, default True
        Fit ``model`` on ``train`` first; with False it must already be fitted on
        ``train`` (never on test).
    model_name : str, optional
        Label of the ``model`` column; defaults to the class name.
    n_negatives : int, default 99
        Sampled negatives per test pair (protocol "sampled").
    tastes : DataFrame, optional
        Taste mapping ``(item_id, taste, weight[, user_id])`` for TDD (e.g. persona
        attention), used instead of the categories; see
        :func:`bayes_persona.evaluation.taste_distribution_distance`.
    ci : float, default 0.95
        Coverage of the bootstrap interval.
    return_per_user : bool, default False
        Also return the per-user values (for :func:`compare`).

    Returns
    -------
    DataFrame or (DataFrame, DataFrame)
        Columns ``model, protocol, metric, k, value, low, high``. ``value`` is the mean
        over users; ``[low, high]`` the per-user percentile bootstrap interval (NaN for
        coverage, which has no per-user value). ``result.attrs`` holds the counts of the
        test cleaning. With ``return_per_user``, a second frame with columns ``model,
        protocol, metric, k, user_id, value``.

    Raises
    ------
    DataTypeError
        ``model`` lacks a needed method, or an input is not a DataFrame / Dataset.
    DataValidationError
        Bad ``k``, ``protocol``, metric name, or no usable test rows.

    References
    ----------
    .. [1] Krichene and Rendle (2020). On Sampled Metrics for Item Recommendation. KDD.
    .. [2] He et al. (2017). Neural Collaborative Filtering. WWW.
    """
    if protocol not in ("full", "sampled"):
        raise DataValidationError(f"protocol must be 'full' or 'sampled'; got {protocol!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise DataTypeError(f"seed must be a non-negative int; got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise DataValidationError(f"seed must be a non-negative int; got {seed!r}")
    _check_model(model, protocol)
    ks = _ks(k)
    tr = id_frame(train, "train")
    te_raw = id_frame(test, "test")
    if items is None:
        cand_items = getattr(train, "items", None)
        items = cand_items if isinstance(cand_items, pd.DataFrame) else None
    taste_src = _tastes_source(items, tastes)
    names = _metric_names(metrics, protocol, taste_src)
    if (
        isinstance(n_negatives, bool)
        or not isinstance(n_negatives, numbers.Integral)
        or (n_negatives <= 0)
    ):
        raise DataValidationError(f"n_negatives must be a positive int; got {n_negatives!r}")

    if fit:
        if items is not None and _accepts(model.fit, "items"):
            model.fit(train, items=items)
        else:
            model.fit(train)
    te, info = _clean_test(tr, te_raw)
    if te.empty:
        raise DataValidationError(
            "test has no usable rows: every test pair has a user or item absent from train "
            f"or is already in train ({info})"
        )
    label = model_name if model_name is not None else type(model).__name__
    if protocol == "full":
        per_user = _full_protocol(model, tr, te, ks, names, taste_src)
    else:
        sk = tuple(x for x in ks if x <= n_negatives + 1)
        if len(sk) < len(ks):
            logger.info(
                "evaluate(protocol='sampled'): skipping k > %d candidates: %s",
                n_negatives + 1,
                [x for x in ks if x > n_negatives + 1],
            )
        per_user = _sampled_protocol(
            model, tr, te, sk, names, int(n_negatives), np.random.default_rng(seed)
        )

    rows, pu_parts = [], []
    for j, ((name, kk), v) in enumerate(per_user.items()):
        if isinstance(v, pd.Series):
            mean, lo, hi = bootstrap_ci(v, n_boot=n_boot, ci=ci, seed=seed + j)
            if return_per_user:
                pu_parts.append(
                    pd.DataFrame(
                        {
                            "model": label,
                            "protocol": protocol,
                            "metric": name,
                            "k": kk,
                            "user_id": v.index.to_numpy(),
                            "value": v.to_numpy(dtype=float),
                        }
                    )
                )
        else:
            mean, lo, hi = float(v), float("nan"), float("nan")
        rows.append((label, protocol, name, kk, mean, lo, hi))
    result = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    result["k"] = result["k"].astype(np.int64)
    result.attrs.update(info)
    logger.info("evaluate(%s, protocol=%s): %d users", label, protocol, info["n_test_users"])
    if return_per_user:
        cols = ["model", "protocol", "metric", "k", "user_id", "value"]
        pu = pd.concat(pu_parts, ignore_index=True) if pu_parts else pd.DataFrame(columns=cols)
        return result, pu
    return result


def _metric_names(metrics: Sequence[str] | None, protocol: str, tastes: Any) -> list[str]:
    if protocol == "sampled":
        if metrics is None:
            return list(_SAMPLED_METRICS)
        names = list(dict.fromkeys(metrics))
        bad = [m for m in names if m not in _SAMPLED_METRICS]
        if bad:
            raise DataValidationError(
                f"protocol='sampled' supports metrics {list(_SAMPLED_METRICS)}; got {bad}"
            )
        return names
    known = list(ACCURACY_METRICS) + list(BEYOND_ACCURACY_METRICS)
    if metrics is None:
        names = [m for m in DEFAULT_METRICS if tastes is not None or m not in _NEEDS_TASTES]
        if tastes is None:
            logger.info("evaluate: no item categories or tastes given; skipping ild and tdd")
        return names
    if isinstance(metrics, str):
        metrics = [metrics]
    names = list(dict.fromkeys(metrics))
    bad = [m for m in names if m not in known]
    if bad:
        raise DataValidationError(f"unknown metric(s) {bad}; expected some of {known}")
    need = [m for m in names if m in _NEEDS_TASTES]
    if need and tastes is None:
        raise DataValidationError(
            f"metrics {need} need item categories (items with a 'categories' column) or "
            "a tastes mapping; got neither"
        )
    return names
