r"""Posterior and prior predictive checks of a persona model, on its ``InferenceData``.

Every check takes the ``InferenceData`` of :func:`bayes_persona.diagnostics.inference_data.to_inference_data`
and compares a statistic ``T`` of the observed data with its distribution over replicated
data sets (one per draw) in ``group`` (``"posterior_predictive"`` or ``"prior_predictive"``).
The result is a tidy DataFrame, one row per statistic (or per user and statistic with
``per_user=True``), with columns

``check, group, statistic[, user_id], observed, rep_mean, rep_sd, rep_q05, rep_q95, ppp, n,
replicated, observed_draws``

* ``observed``: ``T(y)``; for a *discrepancy* that also depends on the parameters
  (:func:`taste_distribution_check`) its mean over draws, with the
  per-draw values in ``observed_draws`` (an array; ``None`` for plain statistics).
* ``rep_*``: mean, standard deviation and 5% / 95% quantiles of ``T(y_rep)`` over draws,
  whose values are in ``replicated`` (an array of length S, for plotting).
* ``ppp``: the posterior (or prior) predictive p-value
  :math:`P(T(y^{rep}) > T(y)) + \tfrac12 P(T(y^{rep}) = T(y))` (the mid-p value, so that
  discrete statistics are not biased upward) -- for discrepancies the probability is over
  draws ``s`` of :math:`T(y^{rep}_s, \theta_s)` against :math:`T(y, \theta_s)`. Values near 0
  or 1 flag a feature of the data the model does not reproduce.
* ``n``: users (or interactions) the statistic is computed over.

Implicit feedback (choices)
---------------------------
* :func:`user_activity_check`: how many items per user is fixed by design, so it checks
  what users pick: distinct categories, category entropy, share of the top category, and
  mean log-popularity of each user's picks (averaged over users).

Every statistic is a function of one data set alone (popularity, for instance, is counted
in the same data set, observed or replicated), never of the observed data when scoring a
replicate: a statistic that measured replicates against the observed data's popular items
would flag any model, since the observed picks are what made those items popular.
* :func:`item_popularity_check`: Gini coefficient of item counts and share of picks on the
  long tail (items outside the most picked ``head_fraction`` of the catalogue).
* :func:`taste_distribution_check`: each user's category (taste) distribution; the
  discrepancy is the distance (TDD, Jensen-Shannon by default) between the observed and a
  replicated distribution, referred to the distance between two replicated ones.
* :func:`heldout_lpd_check`: mean held-out log posterior predictive density of the observed
  held-out interactions against that of replicated held-out data sets.

Explicit feedback (ratings): :func:`rating_check` and :func:`heldout_lpd_check`.

:func:`posterior_predictive_checks` and :func:`prior_predictive_checks` run every check
that applies.

Posterior predictive p-values use the data twice, so they are conservative (pulled towards
0.5) for statistics the model fits directly; a value near 0 or 1 is nonetheless a sign of
misfit.

References
----------
.. [1] A. Gelman, X.-L. Meng, H. Stern. "Posterior predictive assessment of model fitness
   via realized discrepancies". Statistica Sinica 6, 1996.
.. [2] A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari, D. B. Rubin.
   Bayesian Data Analysis, 3rd ed., ch. 6. CRC Press, 2013.
.. [3] J. Gabry, D. Simpson, A. Vehtari, M. Betancourt, A. Gelman. "Visualization in
   Bayesian workflow". JRSS A 182(2), 2019 (prior predictive checks).
.. [4] O. Barkan, Y. Fuchs, A. Caciularu, N. Koenigstein. "Explainable Recommendations via
   Attentive Multi-Persona Collaborative Filtering". RecSys 2020 (TDD).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayes_persona.diagnostics._ppc_base import (
    CHECK_COLUMNS,
    _category_mass,
    _check_group,
    _check_idata,
    _check_statistics,
    _Choices,
    _choices,
    _draws,
    _frame,
    _need_categories,
    _normalise,
    _row,
    ppp_value,
)
from bayes_persona.evaluation import taste_distance
from bayes_persona.exceptions import DataValidationError
from bayes_persona.posterior import logmeanexp

__all__ = [
    "CHECK_COLUMNS",
    "ppp_value",
    "user_activity_check",
    "item_popularity_check",
    "taste_distribution_check",
    "heldout_lpd_check",
    "rating_check",
    "posterior_predictive_checks",
    "prior_predictive_checks",
]

logger = logging.getLogger(__name__)

USER_STATISTICS = ("n_categories", "category_entropy", "top_category_share", "mean_log_popularity")
ITEM_STATISTICS = ("gini", "long_tail_share", "n_items")
DEFAULT_ITEM_STATISTICS = ("gini", "long_tail_share")
RATING_STATISTICS = ("mean", "sd", "user_mean_sd")


# --------------------------------------------------------------------------- user activity
def _user_stats(c: _Choices, y: np.ndarray, stats: tuple[str, ...]) -> dict[str, np.ndarray]:
    U = len(c.users)
    out: dict[str, np.ndarray] = {}
    cat_stats = [s for s in stats if s != "mean_log_popularity"]
    if cat_stats:
        P, ok = _normalise(_category_mass(c.obs_user, y, c.weights, U))
        with np.errstate(invalid="ignore", divide="ignore"):
            logP = np.where(P > 0, np.log(np.where(P > 0, P, 1.0)), 0.0)
        values = {
            "n_categories": (P > 1e-12).sum(axis=1).astype(float),
            "category_entropy": -(P * logP).sum(axis=1),
            "top_category_share": np.max(np.nan_to_num(P), axis=1),
        }
        for s in cat_stats:
            out[s] = np.where(ok, values[s], np.nan)
    if "mean_log_popularity" in stats:
        # popularity within the same data set, so observed and replicated are scored alike
        lp = np.log(np.bincount(y, minlength=c.n_catalog).astype(float).clip(min=1.0))
        n = np.bincount(c.obs_user, minlength=U)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["mean_log_popularity"] = np.bincount(c.obs_user, weights=lp[y], minlength=U) / n
    return out


def user_activity_check(
    idata: Any,
    statistics: Sequence[str] = USER_STATISTICS,
    *,
    group: str = "posterior_predictive",
    per_user: bool = False,
) -> pd.DataFrame:
    """Check what each user picks: category spread, concentration and popularity.

    Parameters
    ----------
    idata : arviz.InferenceData
        From :func:`~bayes_persona.diagnostics.inference_data.to_inference_data` (implicit feedback).
    statistics : sequence of str
        Any of ``"n_categories"`` (distinct categories among a user's picks),
        ``"category_entropy"`` (entropy, nats, of the category distribution of the picks),
        ``"top_category_share"`` (share of the picks' category mass in the top category)
        and ``"mean_log_popularity"`` (mean log count of the picked items, counted in the
        same data set: how much a user's picks go to items many others pick). The
        category statistics need item categories.
    group : {"posterior_predictive", "prior_predictive"}
    per_user : bool, default False
        One row per (user, statistic) instead of the mean over users.

    Returns
    -------
    DataFrame
        Columns :data:`CHECK_COLUMNS` (``user_id`` added with ``per_user``); ``check`` is
        ``"user_activity"``.
    """
    c = _choices(idata, group)
    stats = _check_statistics(statistics, USER_STATISTICS)
    if any(s != "mean_log_popularity" for s in stats):
        _need_categories(c, "user_activity_check")
    obs = _user_stats(c, c.observed, stats)
    S = c.replicated.shape[0]
    rep = {s: np.empty((S, len(c.users))) for s in stats}
    for d in range(S):
        r = _user_stats(c, c.replicated[d], stats)
        for s in stats:
            rep[s][d] = r[s]
    rows = []
    for s in stats:
        if per_user:
            for j, uid in enumerate(c.users):
                if np.isfinite(obs[s][j]):
                    row = _row("user_activity", group, s, obs[s][j], rep[s][:, j], 1)
                    rows.append({**row, "user_id": uid})
        else:
            ok = np.isfinite(obs[s])
            rows.append(
                _row(
                    "user_activity",
                    group,
                    s,
                    obs[s][ok].mean(),
                    np.nanmean(rep[s][:, ok], axis=1),
                    int(ok.sum()),
                )
            )
    return _frame(rows, per_user)


# --------------------------------------------------------------------------- items
def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: all equal; near 1: all on one)."""
    c = np.sort(np.asarray(counts, dtype=float))
    n, tot = len(c), c.sum()
    if n == 0 or tot == 0:
        return float("nan")
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * c) / (n * tot))


def item_popularity_check(
    idata: Any,
    statistics: Sequence[str] = DEFAULT_ITEM_STATISTICS,
    *,
    head_fraction: float = 0.2,
    group: str = "posterior_predictive",
) -> pd.DataFrame:
    """Check the popularity distribution of the picks of the stored users.

    Parameters
    ----------
    idata : arviz.InferenceData
        Implicit feedback.
    statistics : sequence of str
        Any of ``"gini"`` (Gini coefficient of the item counts over the whole catalogue),
        ``"long_tail_share"`` (share of picks on items outside the ``head_fraction`` most
        picked items of the same data set) and ``"n_items"`` (distinct items picked; not
        a default: the model's catalogue is the set of items in its training data, so with
        all users stored the observed value is the catalogue size by construction and
        the check is biased).
    head_fraction : float in (0, 1), default 0.2
    group : {"posterior_predictive", "prior_predictive"}

    Returns
    -------
    DataFrame
        Columns :data:`CHECK_COLUMNS`; ``check`` is ``"item_popularity"``; ``n`` is the
        number of picks.

    Notes
    -----
    The statistics are computed over the users stored in ``idata``; with a subset of
    users they describe that subset.
    """
    c = _choices(idata, group)
    stats = _check_statistics(statistics, ITEM_STATISTICS)
    if (
        isinstance(head_fraction, bool)
        or not isinstance(head_fraction, (int, float))
        or not 0 < head_fraction < 1
    ):
        raise DataValidationError(f"head_fraction must be a float in (0, 1); got {head_fraction!r}")
    N = c.n_catalog
    n_head = max(1, math.ceil(head_fraction * N))

    def compute(y: np.ndarray) -> dict[str, float]:
        counts = np.bincount(y, minlength=N)
        head = np.sort(counts)[::-1][:n_head].sum()
        return {
            "gini": gini(counts),
            "long_tail_share": float(1.0 - head / len(y)) if len(y) else float("nan"),
            "n_items": float((counts > 0).sum()),
        }

    obs = compute(c.observed)
    reps = [compute(y) for y in c.replicated]
    rows = [
        _row("item_popularity", group, s, obs[s], np.array([r[s] for r in reps]), len(c.observed))
        for s in stats
    ]
    return _frame(rows, False)


# --------------------------------------------------------------------------- tastes
def taste_distribution_check(
    idata: Any,
    *,
    distance: str = "js",
    alpha: float = 0.01,
    group: str = "posterior_predictive",
    per_user: bool = False,
) -> pd.DataFrame:
    r"""Check each user's taste (category) distribution against replicated ones.

    For user ``u`` let :math:`p_u(y)` be the category distribution of the user's picks in a
    data set ``y``. The realised discrepancy of draw ``s`` is
    :math:`D_s = d(p_u(y), p_u(y^{rep}_s))` and its reference is the distance between two
    replicated data sets, :math:`D^{ref}_s = d(p_u(y^{rep}_s), p_u(y^{rep}_{s+1}))` (draws
    taken cyclically). When the model reproduces the user's range of tastes, the observed
    data behave like one more replicate and :math:`P(D^{ref} > D) \approx 1/2`; a model
    that cannot represent several tastes at once makes :math:`D` larger (``ppp`` near 0).

    Parameters
    ----------
    idata : arviz.InferenceData
        Implicit feedback, with item categories.
    distance : {"js", "tv", "kl"}, default "js"
        See :func:`bayes_persona.evaluation.taste_distance` (``"kl"`` is Steck's calibrated
        KL with mixing weight ``alpha``, the TDD of AMP-CF).
    alpha : float
        Mixing weight of ``"kl"``.
    group : {"posterior_predictive", "prior_predictive"}
    per_user : bool, default False
        One row per user instead of the mean over users.

    Returns
    -------
    DataFrame
        Columns :data:`CHECK_COLUMNS`; ``check`` is ``"taste_distribution"``, ``statistic``
        ``"tdd_<distance>"``, ``observed`` the mean of ``observed_draws`` (the :math:`D_s`)
        and ``replicated`` the :math:`D^{ref}_s`.
    """
    if distance not in ("js", "tv", "kl"):
        raise DataValidationError(f"distance must be one of 'js', 'tv', 'kl'; got {distance!r}")
    c = _choices(idata, group)
    W = _need_categories(c, "taste_distribution_check")
    S, U = c.replicated.shape[0], len(c.users)
    if S < 2:
        raise DataValidationError(
            f"taste_distribution_check needs at least 2 draws in {group}; got {S}"
        )
    P_obs, ok_obs = _normalise(_category_mass(c.obs_user, c.observed, W, U))
    P_rep = np.empty((S, U, W.shape[1]))
    ok_rep = np.empty((S, U), dtype=bool)
    for s in range(S):
        P_rep[s], ok_rep[s] = _normalise(_category_mass(c.obs_user, c.replicated[s], W, U))
    P_rep = np.nan_to_num(P_rep)
    d_obs = taste_distance(np.nan_to_num(P_obs)[None], P_rep, distance, alpha)  # (S, U)
    d_ref = taste_distance(np.roll(P_rep, -1, axis=0), P_rep, distance, alpha)  # (S, U)
    valid = ok_obs[None] & ok_rep & np.roll(ok_rep, -1, axis=0)
    d_obs = np.where(valid, d_obs, np.nan)
    d_ref = np.where(valid, d_ref, np.nan)
    name = f"tdd_{distance}"
    rows = []
    if per_user:
        for j, uid in enumerate(c.users):
            if ok_obs[j]:
                rows.append(
                    {
                        **_row(
                            "taste_distribution",
                            group,
                            name,
                            np.nanmean(d_obs[:, j]),
                            d_ref[:, j],
                            1,
                            d_obs[:, j],
                        ),
                        "user_id": uid,
                    }
                )
    else:
        with np.errstate(invalid="ignore"):
            obs_s, ref_s = np.nanmean(d_obs, axis=1), np.nanmean(d_ref, axis=1)
        rows.append(
            _row(
                "taste_distribution",
                group,
                name,
                np.nanmean(obs_s),
                ref_s,
                int(ok_obs.sum()),
                obs_s,
            )
        )
    return _frame(rows, per_user)


# --------------------------------------------------------------------------- held-out LPD
def heldout_lpd_check(idata: Any, *, per_user: bool = False) -> pd.DataFrame:
    r"""Check the held-out log predictive density against its replicated distribution.

    The statistic is the mean held-out log posterior predictive density
    :math:`T(y) = \frac1n \sum_j \log \frac1S \sum_s p(y_j \mid \theta_s)` over the ``n``
    held-out interactions. Its replicated distribution comes from held-out data sets drawn
    from the posterior predictive (one per draw; for implicit feedback from the items the
    user does not have in training) and scored the same way. Given the training data, the
    real held-out data and a replicate have the same distribution when the model and its
    posterior are right, so ``ppp`` is then roughly uniform; ``ppp`` near 1 says the
    held-out data are less probable than the model expects (over-confident or
    misspecified), near 0 more probable (predictive too diffuse).

    Parameters
    ----------
    idata : arviz.InferenceData
        Built with ``test=...``: it needs ``log_likelihood.heldout_choice`` (or
        ``heldout_rating``) and ``posterior_predictive.heldout_log_density``.
    per_user : bool, default False
        One row per user (mean over that user's held-out interactions).

    Returns
    -------
    DataFrame
        Columns :data:`CHECK_COLUMNS`; ``check`` is ``"heldout_lpd"``, ``statistic``
        ``"mean_lpd"``; ``n`` the number of held-out interactions.

    References
    ----------
    .. [1] A. Vehtari, J. Ojanen. "A survey of Bayesian predictive methods for model
       assessment, selection and comparison". Statistics Surveys 6, 2012.
    """
    _check_idata(idata)
    ll_group = getattr(idata, "log_likelihood", None)
    var = next(
        (v for v in ("heldout_choice", "heldout_rating") if ll_group is not None and v in ll_group),
        None,
    )
    pp = getattr(idata, "posterior_predictive", None)
    if var is None or pp is None or "heldout_log_density" not in pp:
        raise DataValidationError(
            "idata has no held-out log-likelihood: build it with to_inference_data(model, test=...)"
        )
    ll = _draws(ll_group[var])  # (S, n)
    lpd = logmeanexp(ll, 0)  # (n,)
    rep = _draws(pp["heldout_log_density"])  # (S, n)
    group = "posterior_predictive"
    rows = []
    if per_user:
        users = idata.log_likelihood["heldout_user_id"].values
        for uid in pd.unique(users):
            sel = users == uid
            rows.append(
                {
                    **_row(
                        "heldout_lpd",
                        group,
                        "mean_lpd",
                        lpd[sel].mean(),
                        rep[:, sel].mean(1),
                        int(sel.sum()),
                    ),
                    "user_id": uid,
                }
            )
    else:
        rows.append(_row("heldout_lpd", group, "mean_lpd", lpd.mean(), rep.mean(1), ll.shape[1]))
    return _frame(rows, per_user)


# --------------------------------------------------------------------------- ratings
def rating_check(
    idata: Any,
    statistics: Sequence[str] = RATING_STATISTICS,
    *,
    group: str = "posterior_predictive",
) -> pd.DataFrame:
    """Check the rating distribution (explicit feedback).

    Parameters
    ----------
    idata : arviz.InferenceData
        Explicit feedback (``observed_data.rating``).
    statistics : sequence of str
        Any of ``"mean"``, ``"sd"`` (of all ratings) and ``"user_mean_sd"`` (standard
        deviation across users of their mean rating).
    group : {"posterior_predictive", "prior_predictive"}

    Returns
    -------
    DataFrame
        Columns :data:`CHECK_COLUMNS`; ``check`` is ``"rating"``.
    """
    _check_idata(idata)
    _check_group(idata, group)
    if "rating" not in idata.observed_data:
        raise DataValidationError("rating_check needs explicit feedback (observed_data.rating)")
    stats = _check_statistics(statistics, RATING_STATISTICS)
    od = idata.observed_data
    users = idata.constant_data["user"].values
    pos = pd.Index(users).get_indexer(od["user_id"].values)
    n_u = np.bincount(pos, minlength=len(users))
    has = n_u > 0

    def compute(r: np.ndarray) -> dict[str, float]:
        um = np.bincount(pos, weights=r, minlength=len(users))[has] / n_u[has]
        return {
            "mean": float(r.mean()),
            "sd": float(r.std(ddof=1)),
            "user_mean_sd": float(um.std(ddof=1)),
        }

    obs = compute(od["rating"].values)
    reps = [compute(r) for r in _draws(getattr(idata, group)["rating"])]
    rows = [
        _row("rating", group, s, obs[s], np.array([r[s] for r in reps]), len(od["rating"]))
        for s in stats
    ]
    return _frame(rows, False)


# --------------------------------------------------------------------------- all
def posterior_predictive_checks(idata: Any, *, group: str = "posterior_predictive") -> pd.DataFrame:
    """Run every check that applies to ``idata`` (aggregate rows), one frame.

    Implicit feedback: :func:`user_activity_check` (category statistics only with item
    categories), :func:`item_popularity_check`, :func:`taste_distribution_check` (with
    categories) and :func:`heldout_lpd_check` (with held-out data, posterior only).
    Explicit: :func:`rating_check` and :func:`heldout_lpd_check`.

    Parameters
    ----------
    idata : arviz.InferenceData
    group : {"posterior_predictive", "prior_predictive"}

    Returns
    -------
    DataFrame
        Columns :data:`CHECK_COLUMNS`.
    """
    _check_idata(idata)
    _check_group(idata, group)
    frames = []
    if "choice" in idata.observed_data:
        has_cats = (
            "category_weight" in idata.constant_data
            and idata.constant_data.sizes.get("category", 0) > 0
        )
        stats = USER_STATISTICS if has_cats else ("mean_log_popularity",)
        frames.append(user_activity_check(idata, stats, group=group))
        frames.append(item_popularity_check(idata, group=group))
        if has_cats:
            frames.append(taste_distribution_check(idata, group=group))
    else:
        frames.append(rating_check(idata, group=group))
    ll = getattr(idata, "log_likelihood", None)
    if (
        group == "posterior_predictive"
        and ll is not None
        and any(v.startswith("heldout_") for v in ll.data_vars)
    ):
        frames.append(heldout_lpd_check(idata))
    return pd.concat(frames, ignore_index=True)


def prior_predictive_checks(
    model_or_idata: Any, num_samples: int = 100, users: Any = None
) -> pd.DataFrame:
    """Prior predictive checks: replicated data from the priors with the fitted hyperparameters.

    Parameters
    ----------
    model_or_idata : PersonaRecommender or arviz.InferenceData
        A fitted model (an ``InferenceData`` is then built with ``prior=True``), or an
        ``InferenceData`` that has a ``prior_predictive`` group.
    num_samples : int, default 100
        Prior draws (only used with a model).
    users : sequence of user ids, optional
        Users to check (only used with a model; default all).

    Returns
    -------
    DataFrame
        :func:`posterior_predictive_checks` on the ``prior_predictive`` group. Extreme
        ``ppp`` here says the priors (with the empirical-Bayes scales) put little mass on
        data like the observed; that is common and not in itself a problem, but large
        differences between statistics point at what the priors get wrong.
    """
    if hasattr(model_or_idata, "guide_"):
        from bayes_persona.diagnostics.inference_data import to_inference_data

        idata = to_inference_data(model_or_idata, num_samples, users=users, prior=True)
    else:
        idata = model_or_idata
    return posterior_predictive_checks(idata, group="prior_predictive")
