"""Diagnostic plots: ELBO trace, persona maps, explanations, predictive checks, TDD, SBC.

matplotlib and seaborn are imported inside the functions, so importing this module costs
nothing and the package works without them. Figures are built with
:class:`matplotlib.figure.Figure` directly, not through ``pyplot``: they never open a
window, work under any backend (``Agg`` included) and are freed when no longer referenced.
A function given ``ax`` draws into it instead. Each function returns the ``Axes`` it drew
on, or the ``Figure`` when it draws a grid of panels; save with
``ax.figure.savefig(path)`` or ``fig.savefig(path)``.

References
----------
.. [1] J. Gabry, D. Simpson, A. Vehtari, M. Betancourt, A. Gelman. "Visualization in
   Bayesian workflow". JRSS A 182(2), 2019.
.. [2] S. Talts, M. Betancourt, D. Simpson, A. Vehtari, A. Gelman. "Validating Bayesian
   Inference Algorithms with Simulation-Based Calibration". arXiv:1804.06788, 2018.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = [
    "plot_elbo",
    "plot_persona_map",
    "plot_explanations",
    "plot_ppc",
    "plot_tdd_by_rank",
    "plot_coverage",
    "plot_rank_histograms",
]

logger = logging.getLogger(__name__)


def _new_axes(ax: Any, figsize: tuple[float, float]) -> Any:
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig.subplots()


def _grid(n: int, ncols: int, panel: tuple[float, float]) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for a in axes[n:]:
        a.set_visible(False)
    return fig, axes


def _require_columns(frame: Any, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise DataTypeError(f"{name} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataValidationError(f"{name} must have columns {list(columns)}; missing {missing}")
    if frame.empty:
        raise DataValidationError(f"{name} is empty; nothing to plot")
    return frame


# --------------------------------------------------------------------------- ELBO
def plot_elbo(model_or_elbo: Any, *, window: int | None = None, ax: Any = None) -> Any:
    """ELBO of every SVI step with its running mean.

    Parameters
    ----------
    model_or_elbo : PersonaRecommender or array-like, shape (n_steps,)
        A fitted model (its ``elbo_``) or the ELBO values.
    window : int, optional
        Steps in the running mean; default ``max(1, n_steps // 50)``.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    elbo = getattr(model_or_elbo, "elbo_", model_or_elbo)
    try:
        y = np.asarray(elbo, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise DataTypeError(
            f"model_or_elbo must be a fitted model or an array of numbers; got {type(model_or_elbo).__name__}"
        ) from exc
    if y.size == 0:
        raise DataValidationError("model_or_elbo holds no ELBO values")
    w = max(1, y.size // 50) if window is None else int(window)
    if w < 1:
        raise DataValidationError(f"window must be a positive int; got {window!r}")
    ax = _new_axes(ax, (6.0, 3.5))
    steps = np.arange(1, y.size + 1)
    ax.plot(steps, y, color="0.7", lw=0.8, label="step")
    if w > 1 and y.size >= w:
        run = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1 :], run, color="C0", lw=1.8, label=f"running mean ({w})")
    lo, hi = np.quantile(y[y.size // 10 :], [0.01, 1.0]) if y.size >= 20 else (y.min(), y.max())
    pad = 0.05 * (hi - lo if hi > lo else abs(hi) + 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("SVI step")
    ax.set_ylabel("ELBO")
    ax.set_title("ELBO trace")
    ax.legend(loc="lower right", frameon=False)
    return ax


# --------------------------------------------------------------------------- persona map
def plot_persona_map(
    model: Any,
    user_id: Any,
    *,
    hdi_prob: float | None = None,
    max_categories: int | None = 20,
    ax: Any = None,
) -> Any:
    """Heatmap of a user's personas against item categories, with their prevalences.

    Cell ``(k, c)`` is the share of persona ``k``'s explained training interactions that
    fall in category ``c``: each training item of the user spreads its posterior mean
    probability ``P(z = k | u, i)`` over its categories (weight ``1/c`` each) and each row
    is normalised. Row labels give the persona's posterior median prevalence and its
    highest-density interval.

    Parameters
    ----------
    model : PersonaRecommender
        Fitted, with item categories.
    user_id : id
    hdi_prob : float in (0, 1), optional
        Mass of the prevalence intervals; default the model's ``hdi_prob``.
    max_categories : int, optional
        Show the categories with the most mass only.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    import seaborn as sns
    import torch

    from bayes_persona.posterior import summarise

    if not hasattr(model, "guide_"):
        raise DataValidationError("model must be a fitted PersonaRecommender")
    hdi_prob = model.hdi_prob if hdi_prob is None else hdi_prob
    if not model.item_categories_:
        raise DataValidationError(
            "model has no item categories; fit it with an items table with 'categories'"
        )
    if not 0 < hdi_prob < 1:
        raise DataValidationError(f"hdi_prob must be in (0, 1); got {hdi_prob!r}")
    u = model.user_vocab_.encode(np.asarray([user_id], dtype=object))
    seen = model.seen_.items_of(int(u[0]))
    with torch.no_grad():
        post, order, prev = model.posterior_.explanation_draws(u, seen)
    order = order[0].cpu().numpy()
    post = post[:, 0].cpu().numpy()[:, order].mean(0)  # (K, n)
    prev = prev[:, 0].cpu().numpy()[:, order]  # (S, K)
    cats = sorted({c for i in seen for c in model.item_categories_.get(int(i), ())}, key=str)
    if not cats:
        raise DataValidationError(
            f"user_id {user_id!r}: none of the user's training items has a category"
        )
    col = {c: j for j, c in enumerate(cats)}
    W = np.zeros((len(seen), len(cats)))
    for r, i in enumerate(seen):
        cs = model.item_categories_.get(int(i), ())
        for c in cs:
            W[r, col[c]] += 1.0 / len(cs)
    M = post @ W  # (K, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        M = M / M.sum(axis=1, keepdims=True)
    M = np.nan_to_num(M)
    keep = np.argsort(-M.sum(0), kind="stable")
    if max_categories is not None:
        keep = keep[: int(max_categories)]
    point, low, high = summarise(prev, hdi_prob, axis=0)
    labels = [
        f"persona {k}: {point[k]:.2f} [{low[k]:.2f}, {high[k]:.2f}]"
        for k in range(M.shape[0])
    ]
    frame = pd.DataFrame(M[:, keep], index=labels, columns=[cats[j] for j in keep])
    ax = _new_axes(ax, (1.0 + 0.55 * len(keep) + 2.5, 1.2 + 0.5 * M.shape[0]))
    # The colour scale spans the shares present: with many categories no share comes near 1,
    # and a 0-1 scale would leave the map uniformly dark.
    vmax = max(float(frame.to_numpy().max(initial=0.0)), 1e-9)
    sns.heatmap(frame, ax=ax, cmap="viridis", vmin=0.0, vmax=vmax, annot=len(keep) <= 12, fmt=".2f",
                cbar_kws={"label": "share of persona's interactions"})  # fmt: skip
    ax.set_xlabel("category")
    ax.set_ylabel(f"persona (prevalence, {hdi_prob:.0%} HDI)")
    ax.set_title(f"Personas of user {user_id}")
    ax.tick_params(axis="y", rotation=0)
    return ax


def _short(label: Any, width: int = 40) -> str:
    text = str(label)
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- explanations
def plot_explanations(recs: pd.DataFrame, *, user_id: Any = None, ax: Any = None) -> Any:
    """Forest plot of a user's recommendations and the personas that explain them.

    Each recommended item is one row (best rank on top): a point at ``persona_prob``,
    the posterior median ``P(z = persona | u, i)`` of its explaining persona, and a line over
    ``[persona_prob_low, persona_prob_high]``; colour marks the persona.

    Parameters
    ----------
    recs : DataFrame
        :meth:`PersonaRecommender.recommend` output (``user_id, rank, item_id, persona,
        persona_prob, persona_prob_low, persona_prob_high``).
    user_id : id, optional
        Whose list to draw; needed when ``recs`` holds several users.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    cols = (
        "user_id",
        "rank",
        "item_id",
        "persona",
        "persona_prob",
        "persona_prob_low",
        "persona_prob_high",
    )
    recs = _require_columns(recs, "recs", cols)
    users = pd.unique(recs["user_id"])
    if user_id is None:
        if len(users) > 1:
            raise DataValidationError(f"user_id is needed: recs holds {len(users)} users")
        user_id = users[0]
    sub = recs[recs["user_id"] == user_id].sort_values("rank")
    if sub.empty:
        raise DataValidationError(f"user_id {user_id!r} has no rows in recs")
    n = len(sub)
    ax = _new_axes(ax, (6.0, 1.0 + 0.35 * n))
    y = np.arange(n)[::-1]
    personas = sub["persona"].to_numpy()
    for k in sorted(set(personas.tolist())):
        sel = personas == k
        point = sub["persona_prob"].to_numpy()[sel]
        lo = sub["persona_prob_low"].to_numpy()[sel]
        hi = sub["persona_prob_high"].to_numpy()[sel]
        ax.errorbar(point, y[sel], xerr=[np.clip(point - lo, 0, None), np.clip(hi - point, 0, None)],
                    fmt="o", color=f"C{int(k) % 10}", capsize=3, label=f"persona {k}")  # fmt: skip
    ax.set_yticks(y)
    names = sub["title"] if "title" in sub else sub["item_id"]  # titles when the model knows them
    ax.set_yticklabels([f"#{r}  {_short(i)}" for r, i in zip(sub["rank"], names, strict=True)])
    ax.set_xlim(-0.02, 1.02)
    ax.axvline(0.5, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("P(persona | user, item)")
    ax.set_title(f"Why these items for user {user_id}")
    # below the axes: inside, the legend would cover the rows near any corner
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 1.2 / max(n, 1)), ncol=4, frameon=False, fontsize="small")
    return ax


# --------------------------------------------------------------------------- PPC
def plot_ppc(checks: pd.DataFrame, *, ncols: int = 3) -> Any:
    """Observed statistics against their replicated distributions, one panel per row.

    A plain statistic is a histogram of ``T(y_rep)`` with ``T(y)`` as a vertical line;
    a discrepancy (rows with ``observed_draws``) is a scatter of ``T(y, theta_s)`` against
    ``T(y_rep_s, theta_s)`` with the diagonal. Each title carries the ``ppp``.

    Parameters
    ----------
    checks : DataFrame
        Rows of :mod:`bayes_persona.diagnostics.ppc` frames (aggregate or per user; at most 30
        rows are drawn).
    ncols : int, default 3

    Returns
    -------
    matplotlib.figure.Figure
    """
    checks = _require_columns(
        checks, "checks", ("check", "statistic", "observed", "ppp", "replicated")
    )
    if len(checks) > 30:
        logger.info("plot_ppc: drawing the first 30 of %d rows", len(checks))
        checks = checks.iloc[:30]
    fig, axes = _grid(len(checks), ncols, (3.4, 2.7))
    for ax, (_, row) in zip(axes, checks.iterrows(), strict=False):
        rep = np.asarray(row["replicated"], dtype=float)
        od = row.get("observed_draws")
        who = (
            f" (user {row['user_id']})" if "user_id" in row and pd.notna(row.get("user_id")) else ""
        )
        if od is not None and not (isinstance(od, float) and np.isnan(od)):
            od = np.asarray(od, dtype=float)
            ax.scatter(od, rep, s=8, alpha=0.6, color="C0")
            lo = np.nanmin([np.nanmin(od), np.nanmin(rep)])
            hi = np.nanmax([np.nanmax(od), np.nanmax(rep)])
            ax.plot([lo, hi], [lo, hi], color="C3", lw=1)
            ax.set_xlabel("realised T(y, θ)")
            ax.set_ylabel("replicated")
        else:
            fin = rep[np.isfinite(rep)]
            bins = min(30, max(5, len(np.unique(fin))))
            ax.hist(fin, bins=bins, color="C0", alpha=0.7)
            ax.axvline(float(row["observed"]), color="C3", lw=2, label="observed")
            ax.set_xlabel(str(row["statistic"]))
            ax.set_yticks([])
        ax.set_title(
            f"{row['check']}: {row['statistic']}{who}\nppp = {row['ppp']:.2f}", fontsize="small"
        )
    return fig


# --------------------------------------------------------------------------- TDD
def plot_tdd_by_rank(
    recs_by_model: Mapping[str, pd.DataFrame],
    train: Any,
    item_categories: Any,
    *,
    max_k: int | None = None,
    distance: str = "kl",
    ax: Any = None,
) -> Any:
    """Taste distribution distance TDD@k against the list length k, one line per model.

    Parameters
    ----------
    recs_by_model : mapping name -> DataFrame
        Recommendation frames (``user_id, rank, item_id``).
    train : DataFrame or Dataset
        The users' histories.
    item_categories : DataFrame, Dataset or Mapping
        Item categories (see :func:`bayes_persona.evaluation.taste_distribution_distance`).
    max_k : int, optional
        Largest k; default the longest list.
    distance : {"kl", "js", "tv"}
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    from bayes_persona.evaluation import taste_distribution_distance

    if not isinstance(recs_by_model, Mapping) or not recs_by_model:
        raise DataTypeError(
            "recs_by_model must be a non-empty mapping name -> recommendations frame"
        )
    if max_k is None:
        max_k = int(max(_require_columns(r, f"recs_by_model[{n!r}]", ("user_id", "rank", "item_id")).groupby("user_id").size().max()
                        for n, r in recs_by_model.items()))  # fmt: skip
    if isinstance(max_k, bool) or not isinstance(max_k, (int, np.integer)) or max_k < 1:
        raise DataValidationError(f"max_k must be a positive int; got {max_k!r}")
    ax = _new_axes(ax, (6.0, 3.8))
    ks = np.arange(1, int(max_k) + 1)
    for j, (name, recs) in enumerate(recs_by_model.items()):
        vals = [
            taste_distribution_distance(recs, train, int(k), item_categories, distance=distance)
            for k in ks
        ]
        ax.plot(ks, vals, marker="o", ms=3, color=f"C{j % 10}", label=str(name))
    ax.set_xlabel("k (list length)")
    ax.set_ylabel(f"TDD@k ({distance})")
    ax.set_title("Taste distribution distance by rank (lower: closer to the user's tastes)")
    ax.legend(frameon=False)
    return ax


# --------------------------------------------------------------------------- calibration
def _coverage_frame(calibration: Any) -> pd.DataFrame:
    frame = (
        calibration
        if isinstance(calibration, pd.DataFrame)
        else getattr(calibration, "coverage", calibration)
    )
    frame = _require_columns(frame, "calibration", ("quantity", "level", "coverage"))
    if "guide" not in frame.columns:
        frame = frame.assign(guide="")
    return frame


def plot_coverage(calibration: Any, *, ax: Any = None) -> Any:
    """Empirical coverage of central posterior intervals against their nominal level.

    Parameters
    ----------
    calibration : SBCResult or DataFrame
        :func:`bayes_persona.diagnostics.sbc.simulation_based_calibration` output or its
        ``coverage`` frame (``[guide,] quantity, level, coverage[, se]``).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Points on the diagonal are calibrated; below it, intervals are too narrow.
    """
    frame = _coverage_frame(calibration)
    ax = _new_axes(ax, (4.8, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="nominal")
    markers = {q: m for q, m in zip(pd.unique(frame["quantity"]), "osD^v<>", strict=False)}
    for j, (g, grp_g) in enumerate(frame.groupby("guide", sort=False)):
        for q, grp in grp_g.groupby("quantity", sort=False):
            err = 2 * grp["se"].to_numpy() if "se" in grp else None
            label = f"{g} {q}".strip()
            ax.errorbar(grp["level"], grp["coverage"], yerr=err, marker=markers.get(q, "o"),
                        color=f"C{j % 10}", capsize=3, label=label)  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("nominal level")
    ax.set_ylabel("empirical coverage")
    ax.set_title("Interval coverage (SBC)")
    ax.legend(frameon=False, fontsize="small")
    return ax


def plot_rank_histograms(calibration: Any, *, n_bins: int = 10) -> Any:
    """SBC rank histograms, one panel per guide and quantity.

    Parameters
    ----------
    calibration : SBCResult or DataFrame
        The result or its ``ranks`` frame (``[guide,] quantity, fractional_rank``).
    n_bins : int, default 10

    Returns
    -------
    matplotlib.figure.Figure
        The grey band is the central 99% range of a bin count under uniform ranks.
    """
    from scipy import stats

    ranks = (
        calibration
        if isinstance(calibration, pd.DataFrame)
        else getattr(calibration, "ranks", calibration)
    )
    ranks = _require_columns(ranks, "calibration", ("quantity", "fractional_rank"))
    if "guide" not in ranks.columns:
        ranks = ranks.assign(guide="")
    groups = list(ranks.groupby(["guide", "quantity"], sort=False))
    fig, axes = _grid(len(groups), 2, (3.6, 2.7))
    for ax, ((g, q), grp) in zip(axes, groups, strict=False):
        n = len(grp)
        ax.hist(grp["fractional_rank"], bins=n_bins, range=(0, 1), color="C0", alpha=0.8)
        lo, hi = stats.binom.ppf([0.005, 0.995], n, 1.0 / n_bins)
        ax.axhspan(lo, hi, color="0.85", zorder=0)
        ax.axhline(n / n_bins, color="0.5", lw=1)
        ax.set_title(f"{g} {q}".strip(), fontsize="small")
        ax.set_xlabel("fractional rank")
    return fig
