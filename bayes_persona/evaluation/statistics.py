"""Statistics over users: bootstrap intervals and paired comparisons of two systems.

This module holds :func:`bootstrap_ci` (the mean of per-user values with a percentile
bootstrap interval over users), :func:`paired_test` (the mean difference of two systems
on their common users, with a paired bootstrap interval and p-value) and :func:`compare`,
which runs :func:`paired_test` metric by metric on two per-user tables of
:func:`~bayes_persona.evaluation.evaluate`.

References
----------
.. [1] Efron, B. and Tibshirani, R. (1993). An Introduction to the Bootstrap. Chapman & Hall.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = ["bootstrap_ci", "paired_test", "PairedTestResult", "compare"]


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


def compare(
    per_user_a: pd.DataFrame,
    per_user_b: pd.DataFrame,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired comparison of two systems, metric by metric, on their common users.

    Parameters
    ----------
    per_user_a, per_user_b : DataFrame
        Per-user tables from ``evaluate(..., return_per_user=True)`` (columns ``model,
        protocol, metric, k, user_id, value``).
    n_boot, ci, seed
        See :func:`paired_test`.

    Returns
    -------
    DataFrame
        Columns ``protocol, metric, k, model_a, model_b, mean_diff, low, high, p_value,
        n_users``; ``mean_diff`` is ``a - b``.
    """
    cols = ["protocol", "metric", "k", "user_id", "value"]
    for name, df in (("per_user_a", per_user_a), ("per_user_b", per_user_b)):
        if not isinstance(df, pd.DataFrame):
            raise DataTypeError(
                f"{name} must be the per-user DataFrame of evaluate(..., "
                f"return_per_user=True); got {type(df).__name__}"
            )
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataValidationError(f"{name} lacks columns {missing}; got {list(df.columns)}")

    def label(df: pd.DataFrame) -> str:
        return str(df["model"].iloc[0]) if "model" in df.columns and len(df) else ""

    rows = []
    keys_a = per_user_a.groupby(["protocol", "metric", "k"], sort=False)
    b_groups = dict(list(per_user_b.groupby(["protocol", "metric", "k"], sort=False)))
    for j, (key, ga) in enumerate(keys_a):
        if key not in b_groups:
            continue
        gb = b_groups[key]
        a = pd.Series(ga["value"].to_numpy(), index=ga["user_id"].to_numpy())
        b = pd.Series(gb["value"].to_numpy(), index=gb["user_id"].to_numpy())
        res = paired_test(a, b, n_boot=n_boot, ci=ci, seed=seed + j)
        rows.append((*key, label(per_user_a), label(per_user_b), *res))
    return pd.DataFrame(
        rows,
        columns=[
            "protocol",
            "metric",
            "k",
            "model_a",
            "model_b",
            "mean_diff",
            "low",
            "high",
            "p_value",
            "n_users",
        ],
    )
