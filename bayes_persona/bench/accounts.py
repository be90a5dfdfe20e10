"""Shared-account attribution benchmark: ``python -m bayes_persona.bench accounts``.

Can a multi-persona model tell the people of a shared account apart? Protocol
(issue 12, item 3):

1. MovieLens 100K binarised at 4 (ratings >= 4 are positives).
2. :func:`bayes_persona.merge_accounts`: ``n_pairs`` random pairs of users with at least
   20 positives each become accounts; items both chose are dropped and, by default
   (``balanced``), the heavier person is subsampled to the lighter one's count, so the
   share of an account's items says nothing about who chose an item.
3. :func:`split_accounts`: each account's items are split 80/20 at random, stratified by
   person (each person of the account gives ``round(0.2 n)`` of their ``n`` items, at most
   ``n - 1``, to the held-out side), so the two people's shares are the same in training
   and held out and the ``share`` baseline is exactly uninformative when balanced. Users
   who are not in an account keep all their rows in training. Held-out items that no
   training row has are dropped (no method can score them) and counted.
4. Every method is fitted on the training rows only and gives, for each held-out item of
   each account, ``p_a``, a probability that person A chose it (and an interval where
   it has one). Any mapping from a method's parts (personas, clusters) to people uses the
   account's *training* items and their truth only.
5. :func:`attribution_report` scores the held-out items: accuracy, within-account AUC,
   ECE, Brier score, share of confidently wrong intervals and mean interval width.

For tuning, ``--validation`` (``run_accounts(validation=True)``) scores on
:func:`validation_split` instead: the accounts' training rows split again the same way,
the test rows left out; ``--ours-params`` sets the model's parameters.

Methods
-------
ours
    :class:`bayes_persona.PersonaRecommender` (default constructor parameters, or the
    model ``make_ours()`` builds). For each account, :meth:`explain_draws` gives draws of
    ``P(z = k | account, i)``, shape ``(S, K, n)``. In each draw, persona ``k`` goes to the
    person whose training items it explains more of *per item*: the mean over A's training
    items of that draw's ``P(z = k | i)`` against the same mean over B's (the mean, not the
    sum, so that a heavier person does not win personas by count; with ``balanced`` the two
    are the same), ties half to each
    (:func:`~bayes_persona.persona.explanations.persona_owners`, the rule of
    :meth:`~bayes_persona.PersonaRecommender.attribute`). ``P(A | i)`` in that draw is the
    sum over A's personas; ``p_a`` is its posterior mean and the interval its equal-tailed
    90% interval (the 5% and 95% quantiles of the draws). The owner of a persona is a
    function of the parameters, like the attention, so its uncertainty is in the interval.
ours_plugin
    Not a separate fit: the same draws with the owners fixed once, from the posterior-mean
    responsibilities (the headline rule before per-draw owners). Reported as a diagnostic: it
    leaves out the uncertainty of which person a persona belongs to.
ours_soft
    Not a separate fit: the same draws with a *soft* map from personas to people,
    ``P(A | i) = sum_k P(z = k | i) P(A | k)``, where ``P(A | k)`` is the mean of persona
    ``k``'s posterior-mean responsibility over A's training items divided by that mean
    over A's plus over B's. Reported as a diagnostic: where a persona explains items of
    both people, a hard map gives all of them to one person and the soft map keeps the
    persona's mix, so the gap between the rows measures how far the personas are from
    being one person's each.
ours_ceiling
    Not a peer: the ``ceiling`` rule (below) in ours' item space, the posterior means of
    the item factors :math:`q_i` in place of iALS's. It says how far the item geometry the
    model learned lets *any* map of the account's items to people go, given the labels, so
    the gap between ``ours`` and this row is the personas' share of the error and the gap
    between this row and ``ceiling`` the item factors' share.
ampcf
    :class:`bayes_persona.baselines.AMPCF` with its defaults (``n_personas=4``, 50
    epochs, no early stopping: there is no validation split here); the attention
    ``alpha_k(account, i)`` in place of ``P(z = k | i)``, the same mapping rule; no interval.
kmeans
    :class:`bayes_persona.baselines.IALS` with :data:`IALS_PARAMS` (``factors=64``,
    ``regularization=10``, ``alpha=1``, ``iterations=15``: the values the accuracy benchmark,
    :mod:`bayes_persona.bench`, selects on its validation split; the class defaults,
    ``regularization=0.01``, leave the factors under-regularised and the 2-means about 7
    points less accurate here; ``ials_params`` / ``--ials-params`` override). The
    account's training items' factor rows, normalised to unit length (so the clustering
    follows direction, i.e. taste, not popularity, which the factor norm carries), are
    split by 2-means (Euclidean Lloyd iterations, k-means++ seeding, best of 10 starts, seeded).
    Each cluster goes to the person with the higher *rate* in it (share of that person's
    training items that fall in it; the same per-item rule as above). A held-out item's
    ``p_a`` is the softmax, temperature 1, over minus the squared distances of its unit row
    to the two centroids (a score for the AUC; with unit rows it lies in about
    [0.02, 0.98]); the hard call is the nearest centroid. No interval.
share
    ``p_a`` = A's share of the account's training items (0.5 when balanced, as the split is
    stratified). No interval.
ceiling
    Not a peer: a *labelled* nearest centroid in the same unit-normalised iALS space, with
    the centroids of A's and of B's training items (it uses the truth of the training items
    to place them, where the others only use it to name their parts); ``p_a`` as for
    ``kmeans``. No interval.

Outputs in ``--out``: ``accounts.csv`` (tidy: ``method, metric, value``),
``accounts_items.csv`` (every held-out item's ``p_a``, ``low``, ``high`` per method),
``accounts.md`` (the table) and ``provenance.json`` (git commit, command line, seed,
``n_pairs``, CPU count, library versions, seconds per method).

``--smoke``: 20 pairs and tiny budgets (ours 5 epochs, AMP-CF 3 epochs, iALS 3
iterations), for tests.

References
----------
.. [1] Zhang, A., Fawaz, N., Ioannidis, S. and Montanari, A. (2012). Guess who rated this
   movie: identifying users through subspace clustering. UAI 2012.
.. [2] Verstrepen, K. and Goethals, B. (2015). Top-N recommendation for shared accounts.
   RecSys 2015.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_persona.bench.attribution import (
    ItemSpace,
    ampcf_draws,
    ceiling_method,
    kmeans_method,
    ours_draws,
    persona_method,
    restart_methods,
    share_method,
)
from bayes_persona.data._validation import ITEM_COL, USER_COL, check_fraction, check_int
from bayes_persona.data.accounts import ACCOUNT_COL, MergedAccounts, merge_accounts
from bayes_persona.exceptions import DataValidationError
from bayes_persona.provenance import stamp

__all__ = [
    "METHODS",
    "METRICS",
    "IALS_PARAMS",
    "AccountsResult",
    "attribution_report",
    "split_accounts",
    "run_accounts",
    "markdown_table",
    "main",
]

logger = logging.getLogger(__name__)

METHODS = ("ours", "ampcf", "kmeans", "share", "ceiling")

#: Metrics of :func:`attribution_report`, in table order.
METRICS = (
    "accuracy", "auc", "ece", "brier", "confidently_wrong", "interval_width",
    "has_intervals", "n_items", "n_accounts", "n_accounts_auc",
)  # fmt: skip

LABELS = {
    "ours": "ours (PersonaRecommender)",
    "ours_plugin": "ours, persona map at the posterior mean (diagnostic)",
    "ours_soft": "ours, soft map (diagnostic)",
    "ours_ceiling": "ceiling in ours' item space (not a peer)",
    "ours_refolded": "ours, personas inferred again from the fit's start (diagnostic)",
    "ours_labelled_start": "ours, personas inferred again from the people's split (diagnostic)",
    "ours_labelled_as_started": "ours, the people's split as started, before inference (diagnostic)",
    "ampcf": "AMP-CF (K=4)",
    "kmeans": "2-means in iALS space",
    "share": "share of training items",
    "ceiling": "ceiling: labelled nearest centroid (not a peer)",
}

#: iALS of ``kmeans`` and ``ceiling``: the accuracy benchmark's validation-tuned choice.
IALS_PARAMS = {"factors": 64, "regularization": 10.0, "alpha": 1.0, "iterations": 15}



# ------------------------------------------------------------------------ metrics


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC of ``score`` separating ``positive`` from the rest; ties count half."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(score)  # average ranks of ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def attribution_report(
    p_a: Any, low: Any, high: Any, is_a: Any, account: Any, n_bins: int = 10
) -> dict[str, float]:
    """Score probabilities that person A of an account chose each held-out item.

    Parameters
    ----------
    p_a : array-like of float, shape ``(n,)``
        Probability (or a score in [0, 1]) that A chose item ``j``.
    low, high : array-like of float, shape ``(n,)``, or None
        An interval for ``p_a`` per item; NaN (or ``None`` for all) where there is none.
    is_a : array-like of bool, shape ``(n,)``
        The truth: A chose item ``j`` (else B did).
    account : array-like, shape ``(n,)``
        The account of item ``j``.
    n_bins : int, default 10
        Equal-width bins on [0, 1] for the ECE.

    Returns
    -------
    dict
        ``accuracy``: share of items with ``p_a > 0.5`` equal to ``is_a``, a ``p_a`` of
        exactly 0.5 counting half right. ``auc``: mean over accounts of the AUC of ``p_a``
        separating A's items from B's (ties half; accounts lacking one side skipped;
        NaN if none is left). ``ece``: ``sum_b (n_b / n) |mean(p_a) - mean(is_a)|`` over
        ``n_bins`` equal-width bins of ``p_a`` (the last bin closed). ``brier``:
        ``mean((p_a - is_a)^2)``. ``confidently_wrong``: share of all items whose interval
        lies wholly on the wrong side of 0.5 (``high < 0.5`` for A's items, ``low > 0.5``
        for B's); items without an interval are not counted as wrong; NaN when no item has
        an interval. ``interval_width``: mean ``high - low`` over items with an interval
        (NaN when none). ``has_intervals`` (1.0 or 0.0), ``n_items``, ``n_accounts``,
        ``n_accounts_auc`` (accounts in the AUC).

    Raises
    ------
    DataValidationError
        Lengths differ, there are no items, or ``p_a`` is not finite in [0, 1].

    Examples
    --------
    >>> r = attribution_report([0.9, 0.2], None, None, [True, False], [1, 1])
    >>> r["accuracy"], r["auc"]
    (1.0, 1.0)
    """
    p = np.asarray(p_a, dtype=np.float64).reshape(-1)
    n = len(p)
    lo = np.full(n, np.nan) if low is None else np.asarray(low, dtype=np.float64).reshape(-1)
    hi = np.full(n, np.nan) if high is None else np.asarray(high, dtype=np.float64).reshape(-1)
    y = np.asarray(is_a).reshape(-1).astype(bool)
    acc = np.asarray(account).reshape(-1)
    lengths = {"p_a": n, "low": len(lo), "high": len(hi), "is_a": len(y), "account": len(acc)}
    if len(set(lengths.values())) != 1:
        raise DataValidationError(f"attribution_report: inputs must have one length; got {lengths}")
    if n == 0:
        raise DataValidationError("attribution_report: p_a must hold at least one item; got 0")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        bad = p[~(np.isfinite(p) & (p >= 0) & (p <= 1))][:5]
        raise DataValidationError(
            f"attribution_report: p_a must lie in [0, 1]; got values {bad.tolist()}"
        )
    n_bins = check_int("n_bins", n_bins, minimum=1)

    right = np.where(p == 0.5, 0.5, ((p > 0.5) == y).astype(np.float64))
    aucs = []
    for a in pd.unique(acc):
        m = acc == a
        if 0 < y[m].sum() < m.sum():
            aucs.append(_auc(p[m], y[m]))
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.sum() / n * abs(p[m].mean() - y[m].mean())
    has = np.isfinite(lo) & np.isfinite(hi)
    wrong = has & np.where(y, hi < 0.5, lo > 0.5)
    return {
        "accuracy": float(right.mean()),
        "auc": float(np.mean(aucs)) if aucs else float("nan"),
        "ece": float(ece),
        "brier": float(np.mean((p - y) ** 2)),
        "confidently_wrong": float(wrong.sum() / n) if has.any() else float("nan"),
        "interval_width": float(np.mean(hi[has] - lo[has])) if has.any() else float("nan"),
        "has_intervals": float(has.any()),
        "n_items": float(n),
        "n_accounts": float(len(pd.unique(acc))),
        "n_accounts_auc": float(len(aucs)),
    }


# -------------------------------------------------------------------------- split


def split_accounts(
    merged: MergedAccounts, test_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Hold out a random share of each account's items, stratified by person.

    Each person of an account with ``n`` rows in it gives ``round(test_fraction * n)``
    (half rounded up, at most ``n - 1``) of them, drawn at random, to the held-out side.
    Rows of users outside accounts all stay in training. Held-out rows whose item no
    training row has are dropped (logged).

    Parameters
    ----------
    merged : MergedAccounts
        From :func:`bayes_persona.merge_accounts`.
    test_fraction : float, default 0.2
        Strictly between 0 and 1.
    seed : int, default 0
        Seed (non-negative) of the draw.

    Returns
    -------
    train : pandas.DataFrame, shape ``(n_train, n_cols)``
        The training interactions (columns of ``merged.interactions``).
    train_truth : pandas.DataFrame, shape ``(n_account_train, 4)``
        The accounts' training rows: ``account_id``, ``item_id``, ``person``, ``is_a``.
    test : pandas.DataFrame, shape ``(n_test, 4)``
        The held-out rows, same columns.
    """
    frac = check_fraction("test_fraction", test_fraction)
    seed = check_int("seed", seed, minimum=0)
    inter, truth = merged.interactions, merged.membership
    n_plain = len(inter) - len(truth)
    rng = np.random.default_rng([seed, 1])
    t = truth[[ACCOUNT_COL, ITEM_COL, "person"]].copy()
    t["is_a"] = (t["person"] == "A").to_numpy()
    priority = pd.Series(rng.random(len(t)), index=t.index)
    groups = [t[ACCOUNT_COL], t["person"]]
    rank = priority.groupby(groups, sort=False).rank(method="first").to_numpy() - 1
    size = priority.groupby(groups, sort=False).transform("size").to_numpy()
    n_test = np.minimum(np.floor(size * frac + 0.5), size - 1)
    is_test = rank < n_test
    plain = np.zeros(n_plain, dtype=bool)
    train = inter.loc[~np.r_[plain, is_test]].reset_index(drop=True)
    test = t.loc[is_test]
    known = test[ITEM_COL].isin(pd.unique(train[ITEM_COL])).to_numpy()
    if (~known).any():
        logger.info(
            "split_accounts: dropped %d held-out rows whose item has no training row",
            int((~known).sum()),
        )
    test = test.loc[known].reset_index(drop=True)
    train_truth = t.loc[~is_test].reset_index(drop=True)
    logger.info(
        "split_accounts: %d training rows (%d in accounts), %d held-out account rows",
        len(train), len(train_truth), len(test),
    )  # fmt: skip
    return train, train_truth, test


# ------------------------------------------------------------------------- runner


@dataclass(frozen=True, eq=False)
class AccountsResult:
    """What :func:`run_accounts` returns.

    Attributes
    ----------
    table : pandas.DataFrame
        Tidy ``method, metric, value`` (metrics of :func:`attribution_report`; NaN values
        -- no interval, no AUC -- are left out).
    predictions : pandas.DataFrame
        One row per (method, held-out item): ``method, account_id, item_id, person, is_a,
        p_a, low, high``.
    markdown : str
        The table as Markdown.
    provenance : dict
        Commit, command line, seed, sizes, versions, seconds per method.
    """

    table: pd.DataFrame
    predictions: pd.DataFrame = field(repr=False)
    markdown: str = field(repr=False)
    provenance: dict = field(repr=False)


def _load_positives(data_home: str | os.PathLike | None) -> pd.DataFrame:
    import bayes_persona as bp

    data = bp.load_movielens("100k", data_home=data_home, download=False)
    return bp.binarize(data, 4.0).ratings


def _default_ours(smoke: bool, user_particles: int = 1, params: dict | None = None) -> Callable[[], Any]:
    def make() -> Any:
        from bayes_persona import PersonaRecommender

        kw = {"progress": False, "user_particles": user_particles, **({"max_epochs": 5} if smoke else {})}
        return PersonaRecommender(**{**kw, **(params or {})})

    return make


#: The validation split is drawn with this offset on the seed (:func:`validation_split`).
VALIDATION_SEED_OFFSET = 1000


def validation_split(
    merged: MergedAccounts, train: pd.DataFrame, train_truth: pd.DataFrame, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The accounts' *training* rows split again, 80/20 per account and person, for tuning.

    :func:`split_accounts` applied to the training side of its own output (seed
    ``seed + VALIDATION_SEED_OFFSET``): the inner training rows, their truth and the
    validation rows. The held-out test rows are not among them, so anything chosen on the
    validation rows is chosen without the test split.

    Returns
    -------
    train, train_truth, validation : pandas.DataFrame
        As :func:`split_accounts` returns them.
    """
    from dataclasses import replace

    inner = replace(merged, interactions=train, membership=train_truth)
    return split_accounts(inner, 0.2, check_int("seed", seed, minimum=0) + VALIDATION_SEED_OFFSET)


def _check_ours_params(params: Any) -> None:
    """Raise :class:`DataValidationError` unless ``params`` is ``None`` or a dict of
    :class:`~bayes_persona.PersonaRecommender` constructor parameters."""
    if params is None:
        return
    from bayes_persona import PersonaRecommender

    if not isinstance(params, dict):
        raise DataValidationError(f"ours_params must be a dict of PersonaRecommender parameters; got {params!r}")
    bad = sorted(set(params) - set(PersonaRecommender().get_params()))
    if bad:
        raise DataValidationError(f"ours_params: {bad} are not PersonaRecommender parameters")


def run_accounts(
    models: Sequence[str] = METHODS,
    data_home: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    n_pairs: int | None = None,
    seed: int = 0,
    smoke: bool = False,
    balanced: bool = True,
    make_ours: Callable[[], Any] | None = None,
    data: Any = None,
    min_items: int = 20,
    ials_params: dict | None = None,
    argv: Sequence[str] | None = None,
    user_particles: int = 1,
    ours_params: dict | None = None,
    validation: bool = False,
    restarts: bool = False,
) -> AccountsResult:
    """Run the shared-account attribution benchmark (see the module docstring).

    Parameters
    ----------
    models : sequence of str
        A subset of :data:`METHODS`: ``ours``, ``ampcf``, ``kmeans``, ``share``, ``ceiling``.
    data_home : path, optional
        Folder holding ``ml-100k/`` (never downloaded).
    out : path, optional
        Folder to write ``accounts.csv``, ``accounts_items.csv``, ``accounts.md`` and
        ``provenance.json`` into; nothing is written when None.
    n_pairs : int, optional
        Accounts; default 150 (20 with ``smoke``).
    seed : int, default 0
        Seed of the pairs, the subsamples, the split and the 2-means starts.
    smoke : bool, default False
        Tiny budgets: ours 5 epochs (only for the default ``make_ours``), AMP-CF 3 epochs,
        iALS 3 iterations.
    balanced : bool, default True
        Passed to :func:`~bayes_persona.merge_accounts`.
    make_ours : callable, optional
        ``make_ours()`` returns an unfitted model with ``fit(train)`` and
        ``explain_draws(user_id, item_ids) -> (S, K, n)``, e.g.
        ``lambda: PersonaRecommender(n_personas=2, progress=False)``. Default
        ``PersonaRecommender(progress=False)`` (plus ``max_epochs=5`` with ``smoke``).
    data : Dataset or DataFrame, optional
        Binarised interactions to use instead of MovieLens 100K.
    min_items : int, default 20
        Positives a user needs to be paired.
    ials_params : dict, optional
        Parameters of the iALS of ``kmeans`` and ``ceiling``, on top of
        :data:`IALS_PARAMS` (``{"regularization": 0.01}`` gives the class defaults).
    argv : sequence of str, optional
        The benchmark's arguments, recorded in the provenance next to the process's
        command line (``sys.argv``).
    user_particles : int, default 1
        The default model's ``user_particles`` (above 1: fitted by the per-user
        importance-weighted bound); ignored with ``make_ours``.
    ours_params : dict, optional
        Constructor parameters of the default model over its defaults, e.g.
        ``{"n_personas": 4}``; ignored with ``make_ours``.
    validation : bool, default False
        Score on the validation split instead of the test split: every method is fitted on
        the inner training rows of :func:`validation_split` and scored on its validation
        rows, so that settings can be chosen without the test rows (the issue's rule:
        tune on validation data cut from train).
    restarts : bool, default False
        Add the diagnostic rows of :func:`~bayes_persona.bench.attribution.restart_methods`
        (a default ``ours`` only): each account's personas inferred again with the items
        held fixed, from the fit's start (``ours_refolded``) and from the people's split
        (``ours_labelled_start``; as started: ``ours_labelled_as_started``), with each
        account's ELBO under the fit and under each of them (``accounts_restarts.csv``).
        The table gains, per row, ``elbo_gain_over_fit`` (mean ELBO gain per account over
        the fit) and ``elbo_higher_than_fit`` (share of accounts above it), and for the
        labelled start ``elbo_gain`` and ``elbo_higher`` against the refold from the fit's
        start.

    Returns
    -------
    AccountsResult
    """
    models = list(models)
    unknown = [m for m in models if m not in METHODS]
    if unknown or not models:
        raise DataValidationError(
            f"models must be a non-empty subset of {list(METHODS)}; got {models}"
        )
    _check_ours_params(ours_params)
    if restarts and ("ours" not in models or make_ours is not None):
        raise DataValidationError("restarts needs the default ours among the models (and no make_ours)")
    n_pairs = (20 if smoke else 150) if n_pairs is None else n_pairs
    positives = _load_positives(data_home) if data is None else getattr(data, "ratings", data)
    merged = merge_accounts(
        positives, n_pairs=n_pairs, min_items=min_items, balanced=balanced, seed=seed
    )
    train, train_truth, test = split_accounts(merged, 0.2, seed)
    if validation:  # the test rows are dropped here and never seen
        train, train_truth, test = validation_split(merged, train, train_truth, seed)

    ials_kw = {**IALS_PARAMS, **({"iterations": 3} if smoke else {}), **(ials_params or {})}
    seconds: dict[str, float] = {}
    params: dict[str, dict] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    evidence = None
    ials = None
    for name in models:
        t0 = time.perf_counter()
        if name == "ours":
            model = (make_ours or _default_ours(smoke, user_particles, ours_params))()
            params[name] = _params_of(model)
            model.fit(train)
            maps = persona_method(model, train_truth, test, ours_draws)
            preds[name], preds["ours_plugin"], preds["ours_soft"] = maps["draw"], maps["plugin"], maps["soft"]
            if hasattr(model, "guide_") and hasattr(model.guide_, "item_loc"):  # a PersonaRecommender
                space = ItemSpace(model.guide_.item_loc.detach().cpu().numpy(), model.item_vocab_)
                preds["ours_ceiling"] = ceiling_method(space, train_truth, test)
            if restarts:
                extra, evidence = restart_methods(model, train_truth, test, n_steps=20 if smoke else 400, seed=seed)
                preds.update(extra)
        elif name == "ampcf":
            from bayes_persona.baselines import AMPCF

            model = AMPCF(n_personas=4, **({"max_epochs": 3} if smoke else {}))
            params[name] = _params_of(model)
            model.fit(train)
            preds[name] = persona_method(model, train_truth, test, ampcf_draws)["draw"]
        elif name in ("kmeans", "ceiling"):
            if ials is None:
                from bayes_persona.baselines import IALS

                ials = IALS(**ials_kw).fit(train)
            params[name] = _params_of(ials)
            preds[name] = (
                kmeans_method(ials, train_truth, test, seed)
                if name == "kmeans"
                else ceiling_method(ials, train_truth, test)
            )
        else:
            preds[name] = share_method(train_truth, test)
        seconds[name] = time.perf_counter() - t0
        logger.info("accounts: %s done in %.1f s", name, seconds[name])

    rows, frames = [], []
    for name in [m for m in (*models, "ours_plugin", "ours_soft", "ours_ceiling", *RESTART_ROWS) if m in preds]:
        pr = preds[name]
        low, high = pr.get("low"), pr.get("high")
        rep = attribution_report(pr["p_a"], low, high, test["is_a"], test[ACCOUNT_COL])
        rows += [(name, k, v) for k, v in rep.items() if np.isfinite(v)]
        nan = np.full(len(test), np.nan)
        frames.append(
            test.assign(
                p_a=pr["p_a"], low=nan if low is None else low, high=nan if high is None else high
            ).assign(method=name)
        )
    if evidence is not None:
        for name in RESTART_ROWS:
            gain = _elbo_gain(evidence, name, "ours")
            rows += [(name, "elbo_gain_over_fit", float(gain.mean())), (name, "elbo_higher_than_fit", float((gain > 0).mean()))]
        gain = _elbo_gain(evidence, "ours_labelled_start", "ours_refolded")
        rows += [("ours_labelled_start", "elbo_gain", float(gain.mean())),
                 ("ours_labelled_start", "elbo_higher", float((gain > 0).mean()))]  # fmt: skip
    table = pd.DataFrame(rows, columns=["method", "metric", "value"])
    predictions = pd.concat(frames, ignore_index=True)[
        ["method", ACCOUNT_COL, ITEM_COL, "person", "is_a", "p_a", "low", "high"]
    ]
    setup = {
        "n_pairs": n_pairs,
        "min_items": min_items,
        "balanced": bool(balanced),
        "seed": seed,
        "smoke": bool(smoke),
        "validation": bool(validation),
        "n_account_train_rows": len(train_truth),
        "n_test_rows": len(test),
        "n_shared_dropped": int(merged.pairs["n_shared"].sum()),
        "n_train_rows": len(train),
        "n_train_users": int(train[USER_COL].nunique()),
        "dataset": "ML-100K (ratings >= 4)" if data is None else "caller's data",
        "params": params,
        "restarts": bool(restarts),
    }
    provenance = _provenance(argv, setup, models, seconds, make_ours is not None)
    md = markdown_table(table, setup)
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        table.to_csv(path / "accounts.csv", index=False)
        predictions.to_csv(path / "accounts_items.csv", index=False)
        (path / "accounts.md").write_text(md)
        if evidence is not None:
            evidence.to_csv(path / "accounts_restarts.csv", index=False)
        (path / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        logger.info("accounts: wrote %s", path)
    return AccountsResult(table, predictions, md, provenance)


#: The diagnostic rows of ``restarts``.
RESTART_ROWS = ("ours_refolded", "ours_labelled_start", "ours_labelled_as_started")


def _elbo_gain(evidence: pd.DataFrame, start: str, against: str) -> pd.Series:
    """Per account: the ELBO of ``start`` minus that of ``against``."""
    w = evidence.pivot(index="account", columns="start", values="elbo")
    return w[start] - w[against]


def _params_of(model: Any) -> dict:
    """``model.get_params()`` made JSON-friendly (``{}`` when it has none)."""
    get = getattr(model, "get_params", None)
    if get is None:
        return {}
    return {
        k: v if isinstance(v, str | int | float | bool | None) else repr(v)
        for k, v in get().items()
    }


def _provenance(argv, setup, models, seconds, custom_ours) -> dict:
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    return {
        "benchmark": "shared-account attribution (bayes_persona.bench.accounts)",
        "arguments": None if argv is None else list(argv),
        **setup,
        "models": list(models),
        "custom_make_ours": custom_ours,
        "seconds": seconds,
        "torch_threads": threads,
        **stamp(),
    }


def markdown_table(table: pd.DataFrame, setup: dict | None = None) -> str:
    """One row per method: the metrics of :func:`attribution_report` as Markdown."""
    cols = [
        ("accuracy", "accuracy", "{:.1%}"), ("auc", "within-account AUC", "{:.3f}"),
        ("ece", "ECE", "{:.3f}"), ("brier", "Brier", "{:.3f}"),
        ("confidently_wrong", "confidently wrong (90% interval)", "{:.1%}"),
        ("interval_width", "mean 90% interval width", "{:.3f}"), ("n_items", "held-out items", "{:.0f}"),
    ]  # fmt: skip
    lines = []
    if setup:
        lines.append(
            f"Shared-account attribution, {setup.get('dataset', 'ML-100K (ratings >= 4)')}: "
            f"{setup['n_pairs']} accounts of two "
            f"users with >= {setup['min_items']} positives, shared items dropped "
            f"({setup['n_shared_dropped']}), {'balanced' if setup['balanced'] else 'unbalanced'}, "
            f"80/20 split per account and person (seed {setup['seed']})"
            + (f", scored on the VALIDATION split (the training rows split again, seed {setup['seed']} + "
               f"{VALIDATION_SEED_OFFSET}; the test rows left out)" if setup.get("validation") else "")
            + (", SMOKE budgets" if setup.get("smoke") else "")
            + ". Chance is 50%; the ceiling uses the training items' labels to place its centroids.\n"
        )
    head = ["method"] + [c[1] for c in cols]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, grp in table.groupby("method", sort=False):
        vals = dict(zip(grp["metric"], grp["value"], strict=True))
        cells = [LABELS.get(name, name)]
        cells += [fmt.format(vals[m]) if m in vals else "–" for m, _, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    by_method = {name: dict(zip(grp["metric"], grp["value"], strict=True)) for name, grp in table.groupby("method")}
    g, r, s0 = (by_method.get(m, {}) for m in ("ours_labelled_start", "ours_refolded", "ours_labelled_as_started"))
    if {"elbo_gain", "elbo_gain_over_fit"} <= set(g) and "elbo_gain_over_fit" in r and "accuracy" in s0:
        lines.append(
            f"\nThe people's split as a start attributes {s0['accuracy']:.1%}; inferred from there (the fit's objective, "
            f"items held at the fit's), it ends at {g['accuracy']:.1%} with an ELBO {g['elbo_gain']:+.2f} nats per account "
            f"against a refold from the fit's own start (higher for {g['elbo_higher']:.1%} of accounts) and "
            f"{g['elbo_gain_over_fit']:+.2f} against the fit as it stands (higher for {g['elbo_higher_than_fit']:.1%}); "
            f"the refold from the fit's start ends {r['elbo_gain_over_fit']:+.2f} against the fit."
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bayes_persona.bench accounts",
        description="Shared-account attribution benchmark on MovieLens 100K.",
    )
    ap.add_argument("--data-home", default=os.environ.get("BAYES_PERSONA_DATA"),
                    help="folder holding ml-100k/ (default $BAYES_PERSONA_DATA)")  # fmt: skip
    ap.add_argument(
        "--out", default="accounts_results", help="output folder (default ./accounts_results)"
    )
    ap.add_argument(
        "--n-pairs", type=int, default=None, help="accounts (default 150; 20 with --smoke)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--smoke", action="store_true", help="20 accounts, tiny budgets (seconds; for tests)"
    )
    ap.add_argument("--unbalanced", action="store_true",
                    help="keep both people's items whole (default: subsample the heavier)")  # fmt: skip
    ap.add_argument(
        "--models",
        default=",".join(METHODS),
        help="comma-separated subset of: " + ", ".join(METHODS),
    )
    ap.add_argument("--user-particles", type=int, default=1,
                    help="draws of each user per SVI step for ours; above 1 the fit maximises the "
                    "per-user importance-weighted bound (default 1: the ELBO)")
    ap.add_argument("--ours-params", type=json.loads, default=None,
                    help='JSON dict over the defaults of ours (PersonaRecommender), e.g. \'{"n_personas": 4}\'')
    ap.add_argument("--validation", action="store_true",
                    help="score on a validation split of the accounts' training rows (for tuning); "
                    "the test rows are left out")
    ap.add_argument("--restarts", action="store_true",
                    help="add the diagnostic rows: each account's personas inferred again, items held "
                    "fixed, from the fit's start and from the people's split, with their ELBOs")
    ap.add_argument("--ials-params", type=json.loads, default=None,
                    help='JSON dict over the iALS defaults of kmeans/ceiling, e.g. \'{"regularization": 0.01}\'')  # fmt: skip
    return ap


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: run, write the files and print the Markdown table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = _parser()
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in METHODS]
    if unknown or not models:
        ap.error(f"--models: unknown {unknown}; choose from {', '.join(METHODS)}")
    if args.user_particles < 1:
        ap.error(f"--user-particles must be a positive integer; got {args.user_particles}")
    try:
        _check_ours_params(args.ours_params)
    except DataValidationError as exc:
        ap.error(f"--ours-params: {exc}")
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = run_accounts(
        models, args.data_home, args.out, args.n_pairs, args.seed, args.smoke,
        balanced=not args.unbalanced, ials_params=args.ials_params, argv=argv, user_particles=args.user_particles,
        ours_params=args.ours_params, validation=args.validation, restarts=args.restarts,
    )  # fmt: skip
    sys.stdout.write(res.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
