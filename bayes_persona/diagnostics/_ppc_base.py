"""Shared machinery of the predictive checks in :mod:`bayes_persona.diagnostics.ppc`.

This module holds the column layout of a check frame (:data:`CHECK_COLUMNS`), the
predictive p-value (:func:`ppp_value`), the building of result rows and frames, the
validation of an ``InferenceData`` and of a requested group or statistic, and the reading
of observed and replicated choices (with item categories and popularity) out of an
``InferenceData`` into plain arrays that the individual checks compute their statistics on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayes_persona.exceptions import DataTypeError, DataValidationError

#: Columns of every check frame (per-user frames insert ``user_id`` after ``statistic``).
CHECK_COLUMNS = (
    "check", "group", "statistic", "observed", "rep_mean", "rep_sd", "rep_q05", "rep_q95",
    "ppp", "n", "replicated", "observed_draws",
)  # fmt: skip

_GROUPS = ("posterior_predictive", "prior_predictive")


# --------------------------------------------------------------------------- helpers
def ppp_value(replicated: np.ndarray, observed: np.ndarray | float) -> float:
    """Mid posterior predictive p-value ``P(rep > obs) + 0.5 P(rep == obs)``.

    Parameters
    ----------
    replicated : ndarray, shape (S,)
        ``T(y_rep_s)`` (or ``T(y_rep_s, theta_s)``).
    observed : float or ndarray, shape (S,)
        ``T(y)``, or ``T(y, theta_s)`` per draw for a discrepancy.

    Returns
    -------
    float
        In [0, 1]; NaN when no draw is finite.
    """
    rep = np.asarray(replicated, dtype=float)
    obs = np.broadcast_to(np.asarray(observed, dtype=float), rep.shape)
    ok = np.isfinite(rep) & np.isfinite(obs)
    if not ok.any():
        return float("nan")
    rep, obs = rep[ok], obs[ok]
    return float(np.mean(rep > obs) + 0.5 * np.mean(rep == obs))


def _row(check: str, group: str, statistic: str, observed: float, rep: np.ndarray, n: int,
         observed_draws: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    rep = np.asarray(rep, dtype=float)
    fin = rep[np.isfinite(rep)]
    q05, q95 = np.quantile(fin, [0.05, 0.95]) if len(fin) else (np.nan, np.nan)
    ppp = ppp_value(rep, observed if observed_draws is None else observed_draws)
    return {
        "check": check,
        "group": group,
        "statistic": statistic,
        "observed": float(observed),
        "rep_mean": float(fin.mean()) if len(fin) else float("nan"),
        "rep_sd": float(fin.std(ddof=1)) if len(fin) > 1 else float("nan"),
        "rep_q05": float(q05),
        "rep_q95": float(q95),
        "ppp": ppp,
        "n": int(n),
        "replicated": rep,
        "observed_draws": None
        if observed_draws is None
        else np.asarray(observed_draws, dtype=float),
    }


def _frame(rows: list[dict[str, Any]], per_user: bool) -> pd.DataFrame:
    cols = list(CHECK_COLUMNS)
    if per_user:
        cols.insert(3, "user_id")
    return pd.DataFrame(rows, columns=cols)


def _check_idata(idata: Any, name: str = "idata") -> None:
    for g in ("observed_data", "constant_data"):
        if not hasattr(idata, g):
            raise DataTypeError(
                f"{name} must be an InferenceData from bayes_persona.diagnostics.inference_data."
                f"to_inference_data (it has no {g} group); got {type(idata).__name__}"
            )


def _check_group(idata: Any, group: str) -> None:
    if group not in _GROUPS:
        raise DataValidationError(f"group must be one of {_GROUPS}; got {group!r}")
    if not hasattr(idata, group):
        hint = (
            " (build it with to_inference_data(..., prior=True))"
            if group == "prior_predictive"
            else ""
        )
        raise DataValidationError(f"group={group!r}: idata has no such group{hint}")


def _check_statistics(statistics: Any, allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(statistics, str):
        statistics = (statistics,)
    stats = tuple(statistics)
    bad = [s for s in stats if s not in allowed]
    if bad or not stats:
        raise DataValidationError(
            f"statistics must be a non-empty subset of {tuple(allowed)}; got {stats!r}"
        )
    return stats


def _draws(da: Any) -> np.ndarray:
    """(chain, draw, ...) -> (chain * draw, ...)."""
    v = da.values
    return v.reshape((-1,) + v.shape[2:])


@dataclass
class _Choices:
    users: np.ndarray  # (U,) user ids
    obs_user: np.ndarray  # (n,) position of each observation's user
    observed: np.ndarray  # (n,) catalogue positions
    replicated: np.ndarray  # (S, n)
    n_catalog: int
    weights: np.ndarray | None  # (N, C) category weights
    popularity: np.ndarray | None  # (N,)


def _choices(idata: Any, group: str) -> _Choices:
    _check_idata(idata)
    _check_group(idata, group)
    if "choice" not in idata.observed_data:
        raise DataValidationError(
            "this check needs implicit-feedback choices (observed_data.choice); the idata "
            "holds ratings: use rating_check for explicit feedback"
        )
    od, cd = idata.observed_data, idata.constant_data
    users = cd["user"].values
    obs_user = pd.Index(users).get_indexer(od["user_id"].values)
    W = cd["category_weight"].values if "category_weight" in cd else None
    pop = cd["item_popularity"].values if "item_popularity" in cd else None
    return _Choices(
        users=users,
        obs_user=obs_user,
        observed=od["choice"].values.astype(np.int64),
        replicated=_draws(getattr(idata, group)["choice"]).astype(np.int64),
        n_catalog=int(cd.sizes["catalog"]),
        weights=W,
        popularity=pop,
    )


def _category_mass(obs_user: np.ndarray, y: np.ndarray, W: np.ndarray, n_users: int) -> np.ndarray:
    """Category mass of each user's picks ``y``, shape (n_users, C)."""
    from scipy import sparse

    A = sparse.csr_matrix((np.ones(len(y)), (obs_user, y)), shape=(n_users, W.shape[0]))
    return np.asarray(A @ W)


def _normalise(mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tot = mass.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return mass / tot, tot[..., 0] > 0


def _need_categories(c: _Choices, check: str) -> np.ndarray:
    if c.weights is None or c.weights.shape[1] == 0:
        raise DataValidationError(
            f"{check} needs item categories: fit the model with an items table that has a "
            "'categories' column"
        )
    return c.weights
