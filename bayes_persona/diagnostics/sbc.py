r"""Simulation-based calibration (SBC) of the persona model's variational posterior.

SBC (Talts et al. 2018) checks an inference algorithm rather than a data set: draw
parameters :math:`\tilde\theta` from the prior, simulate data :math:`\tilde y` from them, fit
the model to :math:`\tilde y` and find the rank of :math:`\tilde\theta` among ``L``
posterior draws. If the posterior were exact, the rank of any scalar function of
:math:`\theta` would be uniform on ``0..L``, because the prior is the average of the
posteriors over prior-predictive data. Deviations have shapes: a U-shaped rank histogram
means the posterior is too narrow (over-confident), a hump too wide, a slope biased.

Quantities ranked
-----------------
Personas are exchangeable and the factors are identified only up to rotation, so every
ranked quantity is invariant to both, and no fitted persona is matched to a true one:

* ``max_share``: :math:`\max_k w_{uk}`, the largest persona share
  :math:`w_{uk} = P(z = k \mid u)` of the user;
* ``share_entropy``: :math:`-\sum_k w_{uk} \log w_{uk}` (at ``K = 2`` a function of
  ``max_share``);
* ``co_assignment``: :math:`\sum_k P(z = k \mid u, i) P(z = k \mid u, j)`, the probability
  that two of the user's interactions, drawn at random, share a persona (the explanation);
* ``log_pick``: :math:`\log p(i \mid u)` of one catalogue item drawn at random, the
  held-out predictive.

One rank per user and quantity keeps the ranks of a replication close to independent
(users share only the item parameters). Coverage of the central ``50/80/90/95%`` intervals
is the share of ranks in the matching central range; rank uniformity is tested with a
chi-square test on ``n_bins`` equal bins of randomised fractional ranks
:math:`(r + V)/(L + 1)`, :math:`V \sim U(0, 1)`, which are exactly uniform under
calibration for any ``L``.

The simulator and the fit
-------------------------
Worlds are simulated from the likelihood being checked (``likelihood="joint"``, the
default model's, or ``"mixture"``), and the fit has the same isotropic persona prior
(``n_prototypes=0``) with the three prior scales fixed at their simulated values
(``empirical_bayes=False``), so that exact inference would give uniform ranks.

Each user's picks are drawn independently, as the likelihood has them; an item picked more
than once is one row of the data set with its count, fitted as ``sample_weight``, so the
simulator is exactly the likelihood (``repeats=True``, the default).

Caveats
-------
* With ``repeats=False`` a user's picks are distinct, drawn successively without
  replacement, while the likelihood treats them as independent;
  ``PriorWorld.repeat_probability`` (recorded by ``python -m bayes_persona.bench sbc``) is
  the share of independent picks that would repeat an earlier one, the size of that
  mismatch. Result folders whose provenance has no ``repeats`` were run with distinct picks.
* The default model's prototype prior (``n_prototypes > 0``) has hyperparameters fitted by
  empirical Bayes and is not simulated here.

References
----------
.. [1] S. Talts, M. Betancourt, D. Simpson, A. Vehtari, A. Gelman. "Validating Bayesian
   Inference Algorithms with Simulation-Based Calibration". arXiv:1804.06788, 2018.
.. [2] Y. Yao, A. Vehtari, D. Simpson, A. Gelman. "Yes, but Did It Work?: Evaluating
   Variational Inference". ICML 2018.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import log_softmax, logsumexp, softmax

from bayes_persona.data._validation import check_int_range as _check_range
from bayes_persona.data._validation import check_min_int as _check_int
from bayes_persona.data._validation import check_positive_float
from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = [
    "PriorWorld",
    "invariant_quantities",
    "draw_picks",
    "posterior_draws",
    "true_quantities",
    "SBCResult",
    "simulate_prior_world",
    "simulation_based_calibration",
    "compare_guides",
    "DEFAULT_LEVELS",
    "DEFAULT_FIT_KWARGS",
]

logger = logging.getLogger(__name__)

#: Nominal central-interval levels whose coverage is reported.
DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)

QUANTITIES = ("max_share", "share_entropy", "co_assignment", "log_pick")

#: Fit settings of each replication unless ``fit_kwargs`` overrides them: small worlds need
#: many full-batch steps (one step per epoch with 40 users) to converge.
DEFAULT_FIT_KWARGS: dict[str, Any] = {
    "max_epochs": 300,
    "batch_size": 64,
    "learning_rate": 0.05,
    "patience": 0,
}


# --------------------------------------------------------------------------- simulator
@dataclass(frozen=True)
class PriorWorld:
    """A data set simulated from the persona model's prior, and its parameters.

    Attributes
    ----------
    dataset : Dataset
        Interactions ``user_id`` (1..U), ``item_id`` (1..N); no categories.
    item_factors : ndarray, shape (N, D)
    item_bias : ndarray, shape (N,)
    persona_factors : ndarray, shape (U, K, D)
    prevalence : ndarray, shape (U, K)
    """

    dataset: Any
    item_factors: np.ndarray
    item_bias: np.ndarray
    persona_factors: np.ndarray
    prevalence: np.ndarray
    likelihood: str = "joint"
    repeat_probability: float = float("nan")

    def log_shares(self) -> np.ndarray:
        """``log P(z = k | u)``, each persona's share of the user's choices, (U, K): the
        prevalence itself in the mixture form, ``pi_k Z_k / sum_k' pi_k' Z_k'`` in the joint
        form (:func:`bayes_persona.persona.model.persona_shares`)."""
        with np.errstate(divide="ignore"):
            log_pi = np.log(self.prevalence)
        if self.likelihood == "mixture":
            return log_pi
        return log_softmax(log_pi + logsumexp(self._logits(), axis=-1), axis=1)

    def counts(self) -> np.ndarray | None:
        """How many times each row of ``dataset`` was picked (``simulate_prior_world(...,
        repeats=True)``), the ``sample_weight`` of its fit; ``None`` for distinct picks."""
        r = self.dataset.ratings
        return r["count"].to_numpy(np.float64) if "count" in r.columns else None

    def log_pick(self) -> np.ndarray:
        """``log p(i | u) = log sum_k P(z = k | u) softmax_k(i)`` for every user and item, (U, N)."""
        return logsumexp(self.log_shares()[:, :, None] + self.log_choice(), axis=1)

    def _logits(self) -> np.ndarray:
        """``p_uk . q_j + b_j`` for every user, persona and item, (U, K, N)."""
        return np.einsum("ukd,nd->ukn", self.persona_factors, self.item_factors) + self.item_bias

    def log_choice(self) -> np.ndarray:
        """``log softmax_j(p_uk . q_j + b_j)`` for every user, persona and item, (U, K, N)."""
        return log_softmax(self._logits(), axis=-1)

    def assignment(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """True ``P(z = k | u, i) = softmax_k(log P(z = k | u) + log softmax_k(i))`` for index
        pairs, shape (n, K) (in the joint form, AMP-CF's attention with the prevalence as prior)."""
        lc = self.log_choice()[u, :, i]  # (n, K)
        with np.errstate(divide="ignore"):
            lj = self.log_shares()[u] + lc
        lj -= lj.max(1, keepdims=True)
        p = np.exp(lj)
        return p / p.sum(1, keepdims=True)


def simulate_prior_world(
    n_users: int = 60,
    n_items: int = 120,
    n_personas: int = 2,
    n_factors: int = 4,
    interactions_per_user: tuple[int, int] = (20, 40),
    *,
    persona_scale: float = 1.0,
    item_scale: float = 1.0,
    bias_scale: float = 0.5,
    prevalence_concentration: float = 0.5,
    n_categories: int = 0,
    likelihood: str = "joint",
    repeats: bool = False,
    seed: int = 0,
) -> PriorWorld:
    r"""Draw parameters from the persona model's prior and simulate implicit data from them.

    :math:`q_i \sim N(0, s_q^2 I_D)`, :math:`b_i \sim N(0, s_b^2)`,
    :math:`p_{uk} \sim N(0, s_p^2 I_D)`, :math:`\pi_u \sim \mathrm{Dirichlet}(\alpha)`;
    each user makes ``n_u`` (uniform in ``interactions_per_user``) distinct picks drawn
    successively from the model's :math:`p(i \mid u) = \sum_k w_{uk} \mathrm{softmax}_k(i)`
    (Gumbel-top-k), with the persona shares :math:`w` of ``likelihood``'s form
    (:meth:`PriorWorld.log_shares`). A data set holds a (user, item) pair at most once, while
    the likelihood treats picks as independent; ``repeat_probability`` of the result, the
    share of ``n_u`` independent picks that would repeat an earlier pick (mean over users),
    is the size of that mismatch. With ``repeats=True`` the picks are drawn independently
    instead, exactly as the likelihood has them: an item picked ``c`` times is one row of
    the data set with ``c`` in its column ``count``, to be fitted with
    ``fit(..., sample_weight=world.counts())``.

    Parameters
    ----------
    n_users, n_items, n_personas, n_factors : int
        U, N, K, D.
    interactions_per_user : (int, int)
        Inclusive range; at most ``n_items // 2``.
    persona_scale, item_scale, bias_scale : float
        :math:`s_p, s_q, s_b`.
    prevalence_concentration : float
        :math:`\alpha`.
    likelihood : {"joint", "mixture"}, default "joint"
        The form of the model being checked (``PersonaRecommender(likelihood=...)``).
    repeats : bool, default False
        Independent picks (with repeats, counted in column ``count``) instead of distinct
        ones: the simulator is then exactly the likelihood.
    n_categories : int, default 0
        When positive, the dataset gets an items table whose ``categories`` name the
        largest of the first ``min(n_categories, D)`` coordinates of each item's factor
        (``"c0"``, ``"c1"``, ...): metadata aligned with the factor space, for the category
        checks of :mod:`bayes_persona.diagnostics.ppc`. It does not change the simulation.
    seed : int

    Returns
    -------
    PriorWorld
    """
    from bayes_persona.data.dataset import Dataset

    U = _check_int("n_users", n_users, 1)
    N = _check_int("n_items", n_items, 2)
    K = _check_int("n_personas", n_personas, 1)
    D = _check_int("n_factors", n_factors, 1)
    lo, hi = _check_range("interactions_per_user", interactions_per_user)
    if hi > N // 2:
        raise DataValidationError(
            f"interactions_per_user: at most n_items // 2 = {N // 2}; got {interactions_per_user!r}"
        )
    s_p, s_q, s_b = (
        check_positive_float(n, v)
        for n, v in (
            ("persona_scale", persona_scale),
            ("item_scale", item_scale),
            ("bias_scale", bias_scale),
        )
    )
    alpha = check_positive_float("prevalence_concentration", prevalence_concentration)
    if likelihood not in ("joint", "mixture"):
        raise DataValidationError(f"likelihood must be 'joint' or 'mixture'; got {likelihood!r}")
    if not isinstance(repeats, bool):
        raise DataTypeError(f"repeats must be a bool; got {type(repeats).__name__}")
    seed = _check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    q = s_q * rng.standard_normal((N, D))
    b = s_b * rng.standard_normal(N)
    p = s_p * rng.standard_normal((U, K, D))
    pi = rng.dirichlet(np.full(K, alpha), size=U) if K > 1 else np.ones((U, 1))
    pi = np.clip(pi, 1e-12, None)
    pi /= pi.sum(1, keepdims=True)
    world = PriorWorld(None, q, b, p, pi, likelihood)
    p_pick = np.exp(world.log_pick())  # (U, N)
    rows_u, rows_i, rows_c, repeat = [], [], [], []
    for u in range(U):
        n_u = int(rng.integers(lo, hi + 1))
        if repeats:  # independent picks, as the likelihood has them; one row per distinct item
            picks, count = np.unique(rng.choice(N, size=n_u, p=p_pick[u] / p_pick[u].sum()), return_counts=True)
        else:
            keys = np.log(p_pick[u]) - np.log(rng.standard_exponential(N))
            picks, count = np.argpartition(-keys, n_u - 1)[:n_u], np.ones(n_u, dtype=np.int64)
        rows_u.append(np.full(len(picks), u + 1))
        rows_i.append(picks + 1)
        rows_c.append(count)
        # Independent picks: pick t repeats an earlier one with probability
        # sum_i p_i (1 - (1 - p_i)^(t - 1)); averaged over t = 1..n_u.
        t = np.arange(n_u)[:, None]
        repeat.append(float((p_pick[u] * (1.0 - (1.0 - p_pick[u]) ** t)).sum(1).mean()))
    ratings = pd.DataFrame({"user_id": np.concatenate(rows_u), "item_id": np.concatenate(rows_i)})
    if repeats:
        ratings["count"] = np.concatenate(rows_c)
    items = None
    n_cat = min(_check_int("n_categories", n_categories, 0), D)
    if n_cat > 0:
        cat = np.argmax(q[:, :n_cat], axis=1)
        items = pd.DataFrame(
            {"item_id": np.arange(1, N + 1), "categories": [[f"c{c}"] for c in cat]}
        )
    if items is None:  # the whole catalogue, so that a fit normalises over the same items
        items = pd.DataFrame({"item_id": np.arange(1, N + 1)})
    ds = Dataset(ratings=ratings, items=items, name=f"prior-world(seed={seed})")
    return PriorWorld(ds, q, b, p, pi, likelihood, float(np.mean(repeat)))


# --------------------------------------------------------------------------- SBC
@dataclass
class SBCResult:
    """Ranks, interval coverage and rank uniformity of a simulation-based calibration.

    Attributes
    ----------
    ranks : DataFrame
        One row per ranked quantity: ``guide, replication, quantity, user_id, persona,
        item_id`` (NA for prevalences), ``true``, ``post_mean``, ``rank`` (number of
        posterior draws below the true value, 0..L), ``fractional_rank`` (randomised,
        in (0, 1)), ``n_draws`` and ``covered_<level>`` (bool) for every level.
    coverage : DataFrame
        ``guide, quantity, level, coverage, n, se``: share of true values inside the
        central ``level`` posterior interval, with its binomial standard error.
    uniformity : DataFrame
        ``guide, quantity, n, n_bins, chi2, df, pvalue``: chi-square test that the
        fractional ranks are uniform (small ``pvalue``: miscalibrated).
    config : dict
        The settings of the run.
    seconds : float
        Wall time.
    """

    ranks: pd.DataFrame
    coverage: pd.DataFrame
    uniformity: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """Coverage and uniformity as text, one line per guide and quantity."""
        lines = []
        for (g, qn), grp in self.coverage.groupby(["guide", "quantity"], sort=False):
            cov = ", ".join(
                f"{lv:.0%}: {c:.1%}" for lv, c in zip(grp["level"], grp["coverage"], strict=True)
            )
            u = self.uniformity[
                (self.uniformity["guide"] == g) & (self.uniformity["quantity"] == qn)
            ]
            pv = float(u["pvalue"].iloc[0]) if len(u) else float("nan")
            lines.append(
                f"{g} {qn}: coverage {cov}; rank uniformity chi-square p = {pv:.3g} (n = {int(grp['n'].iloc[0])})"
            )
        return "\n".join(lines)


def _central_covered(draws: np.ndarray, true: float, levels: Sequence[float]) -> dict[str, bool]:
    out = {}
    for lv in levels:
        lo, hi = np.quantile(draws, [(1 - lv) / 2, (1 + lv) / 2])
        out[f"covered_{round(lv * 100):d}"] = bool(lo <= true <= hi)
    return out


def _rank_row(
    draws: np.ndarray, true: float, rng: np.random.Generator, levels: Sequence[float]
) -> dict[str, Any]:
    L = len(draws)
    rank = int((draws < true).sum())
    ties = int((draws == true).sum())
    if ties:
        rank += int(rng.integers(0, ties + 1))
    return {
        "true": float(true),
        "post_mean": float(draws.mean()),
        "rank": rank,
        "fractional_rank": (rank + rng.random()) / (L + 1),
        "n_draws": L,
        **_central_covered(draws, true, levels),
    }


def invariant_quantities(
    item_factors: np.ndarray,
    item_bias: np.ndarray,
    persona_factors: np.ndarray,
    log_shares: np.ndarray,
    picks: np.ndarray,
) -> dict[str, np.ndarray]:
    """The label-invariant quantities of :data:`QUANTITIES` for each row of ``picks``.

    Parameters
    ----------
    item_factors : ndarray, shape (S, N, D)
    item_bias : ndarray, shape (S, N)
    persona_factors : ndarray, shape (S, U, K, D)
    log_shares : ndarray, shape (S, U, K)
        ``log P(z = k | u)`` (:meth:`PriorWorld.log_shares`).
    picks : int ndarray, shape (n, 4)
        ``(user, item a, item c, item j)`` index rows: ``co_assignment`` looks at items
        ``a`` and ``c`` of the user, ``log_pick`` at item ``j``.

    Returns
    -------
    dict of str to ndarray, shape (S, n)
        One array per quantity; ``S`` draws (1 for the true parameters).
    """
    q, b, p, lw = (np.asarray(x, dtype=np.float64) for x in (item_factors, item_bias, persona_factors, log_shares))
    out = {name: np.empty((q.shape[0], len(picks))) for name in QUANTITIES}
    w = np.exp(lw)
    for r, (u, ia, ic, j) in enumerate(np.asarray(picks, dtype=np.int64)):
        logits = np.einsum("skd,snd->skn", p[:, u], q) + b[:, None, :]  # (S, K, N)
        log_choice = log_softmax(logits, axis=-1)
        log_joint = lw[:, u, :, None] + log_choice[:, :, [ia, ic, j]]  # log P(z = k, i | u), (S, K, 3)
        att = softmax(log_joint, axis=1)
        out["max_share"][:, r] = w[:, u].max(-1)
        out["share_entropy"][:, r] = -(w[:, u] * lw[:, u]).sum(-1)
        out["co_assignment"][:, r] = (att[:, :, 0] * att[:, :, 1]).sum(-1)
        out["log_pick"][:, r] = logsumexp(log_joint[:, :, 2], axis=1)
    return out


def draw_picks(world: PriorWorld, rng: np.random.Generator) -> np.ndarray:
    """One ``(user, item a, item c, item j)`` row per user (world indices): two of the
    user's interactions drawn at random, and one catalogue item (shape (U, 4))."""
    r = world.dataset.ratings
    N = world.item_factors.shape[0]
    rows = []
    for uid, grp in r.groupby("user_id", sort=True):
        items = grp["item_id"].to_numpy(np.int64) - 1
        a, c = rng.choice(items, size=2, replace=len(items) < 2)  # one distinct item: itself twice
        rows.append((int(uid) - 1, a, c, int(rng.integers(N))))
    return np.array(rows, dtype=np.int64)


def posterior_draws(model: Any, num_samples: int, resample: int = 0) -> dict[str, np.ndarray]:
    """Item and persona draws of a fitted model, in the arguments of :func:`invariant_quantities`.

    With ``resample=M > 0`` each user's draws are resampled from ``M`` guide draws given each
    item draw (:meth:`~bayes_persona.persona.posterior.PersonaPosterior.resampled_user_draws`).
    """
    U = len(model.user_vocab_)
    with torch.no_grad():
        post = model.posterior_
        q, b = post.item_draws(num_samples)
        users = np.arange(U)
        # "prevalence": the shares P(z = k | u)
        d = post.resampled_user_draws(users, num_samples, resample) if resample else post.user_draws(users, num_samples)
    return {
        "item_factors": q.double().cpu().numpy(), "item_bias": b.double().cpu().numpy(),
        "persona_factors": d["persona_factors"].double().cpu().numpy(),
        "log_shares": np.log(d["prevalence"].double().cpu().numpy()),
    }  # fmt: skip


def true_quantities(world: PriorWorld, picks: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`invariant_quantities` of the world's own parameters, shape (n,) each."""
    qs = invariant_quantities(
        world.item_factors[None], world.item_bias[None], world.persona_factors[None],
        world.log_shares()[None], picks,
    )  # fmt: skip
    return {k: v[0] for k, v in qs.items()}


def _check_aligned(model: Any, world: PriorWorld) -> None:
    """A fit of a whole prior world indexes users and items as the world does (ids 1..U, 1..N)."""
    U, N = world.persona_factors.shape[0], world.item_factors.shape[0]
    if not (
        len(model.user_vocab_) == U and len(model.item_vocab_) == N
        and np.array_equal(model.user_vocab_.ids, np.arange(1, U + 1))
        and np.array_equal(model.item_vocab_.ids, np.arange(1, N + 1))
    ):  # fmt: skip
        raise DataValidationError("the model was not fitted to the whole world (fit(world.dataset, catalogue=...))")


def _replication_ranks(
    model: Any,
    world: PriorWorld,
    num_samples: int,
    rng: np.random.Generator,
    levels: Sequence[float],
    resample: int = 0,
    gibbs: bool = False,
    gibbs_options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Ranks of one fitted replication: each quantity of :data:`QUANTITIES` once per user
    (among draws with the user part resampled from ``resample`` guide draws when positive,
    or among draws of the guide-proposal Gibbs sampler with ``gibbs``).

    Every quantity is invariant to relabelling the personas, so no matching of fitted to
    true personas is needed; the items a quantity looks at are chosen from the data (or
    the catalogue) at random, never from the true parameters.
    """
    _check_aligned(model, world)
    picks = draw_picks(world, rng)
    if gibbs:
        from bayes_persona.diagnostics.refine import gibbs_draws

        post = gibbs_draws(model, num_samples, random_state=int(model.random_state), **(gibbs_options or {}))
        post.pop("acceptance")
    else:
        post = posterior_draws(model, num_samples, resample=resample)
    draws = invariant_quantities(**post, picks=picks)
    true = true_quantities(world, picks)
    rows = []
    for r, (u, ia, ic, j) in enumerate(picks):
        items = {"max_share": None, "share_entropy": None, "co_assignment": f"{ia + 1}|{ic + 1}", "log_pick": j + 1}
        for name in QUANTITIES:
            rows.append({"replication": None, "quantity": name, "user_id": int(u) + 1, "item_id": items[name],
                         **_rank_row(draws[name][:, r], float(true[name][r]), rng, levels)})  # fmt: skip
    return rows


def coverage_table(frame: pd.DataFrame, levels: Sequence[float], by: str = "guide") -> pd.DataFrame:
    """``by, quantity, level, coverage, n, se``: the share of ``covered_<level>`` per group of
    ``frame`` (rows of ``by`` and ``quantity``), with its binomial standard error."""
    rows = []
    for (g, qn), grp in frame.groupby([by, "quantity"], sort=False):
        n = len(grp)
        for lv in levels:
            c = float(grp[f"covered_{round(lv * 100):d}"].mean())
            rows.append({by: g, "quantity": qn, "level": lv, "coverage": c, "n": n, "se": float(np.sqrt(c * (1 - c) / n))})
    return pd.DataFrame(rows)


def _summaries(
    ranks: pd.DataFrame, levels: Sequence[float], n_bins: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    from scipy import stats

    uni_rows = []
    for (g, qn), grp in ranks.groupby(["guide", "quantity"], sort=False):
        counts = np.histogram(grp["fractional_rank"].to_numpy(), bins=n_bins, range=(0.0, 1.0))[0]
        chi2, pv = stats.chisquare(counts)
        uni_rows.append(
            {
                "guide": g,
                "quantity": qn,
                "n": len(grp),
                "n_bins": n_bins,
                "chi2": float(chi2),
                "df": n_bins - 1,
                "pvalue": float(pv),
            }
        )
    return coverage_table(ranks, levels), pd.DataFrame(uni_rows)


def simulation_based_calibration(
    n_replications: int = 20,
    *,
    n_users: int = 40,
    n_items: int = 80,
    n_personas: int = 2,
    n_factors: int = 3,
    interactions_per_user: tuple[int, int] = (15, 30),
    guide: str = "meanfield",
    num_samples: int = 99,
    persona_scale: float = 0.7,
    item_scale: float = 0.7,
    bias_scale: float = 0.5,
    prevalence_concentration: float = 0.5,
    likelihood: str = "joint",
    empirical_bayes: bool = False,
    levels: Sequence[float] = DEFAULT_LEVELS,
    n_bins: int = 10,
    fit_kwargs: Mapping[str, Any] | None = None,
    resample: int = 0,
    gibbs: bool = False,
    gibbs_options: Mapping[str, Any] | None = None,
    repeats: bool = True,
    random_state: int = 0,
) -> SBCResult:
    """Simulation-based calibration of :class:`~bayes_persona.PersonaRecommender` on worlds
    drawn from its own prior.

    Each of ``n_replications`` replications simulates a world with
    :func:`simulate_prior_world`, fits a model with the same ``K``, ``D``, Dirichlet
    concentration and ``guide`` to it, and ranks the true prevalence and persona-assignment
    probability of one random persona (and interaction) per user among ``num_samples``
    posterior draws (module docstring).

    Parameters
    ----------
    n_replications : int, default 20
        Simulated worlds (= fits). A smoke run uses 2; a benchmark 50 or more.
    n_users, n_items, n_personas, n_factors : int
        Size of each world and of the model (U, N, K >= 2, D).
    interactions_per_user : (int, int)
    guide : {"meanfield", "lowrank"}
    num_samples : int, default 99
        L, posterior draws per rank.
    persona_scale, item_scale, bias_scale, prevalence_concentration : float
        Prior of the simulation, and of the fit: the fitted model has an isotropic persona
        prior (``n_prototypes=0``) with these scales fixed, so that the check is of the
        posterior under the prior that generated the data.
    likelihood : {"joint", "mixture"}, default "joint"
        The form simulated and fitted (the default model's is "joint").
    empirical_bayes : bool, default False
        Fit the three scales by empirical Bayes instead (the default model's behaviour);
        then the check covers the whole pipeline, and its ranks need not be uniform even
        for exact inference.
    levels : sequence of float in (0, 1)
        Central-interval levels whose coverage is reported.
    n_bins : int, default 10
        Bins of the rank-uniformity chi-square test.
    fit_kwargs : mapping, optional
        Further :class:`~bayes_persona.PersonaRecommender` arguments (e.g. ``max_epochs``,
        ``learning_rate``), merged over :data:`DEFAULT_FIT_KWARGS`.
    resample : int, default 0
        When positive, rank among draws whose user part is resampled from ``resample``
        guide draws given each item draw (:func:`posterior_draws`), instead of the guide's
        own draws.
    gibbs : bool, default False
        Rank among draws of the Gibbs sampler that uses the fitted guide as its proposal
        (:func:`bayes_persona.diagnostics.refine.gibbs_draws`), instead of the guide's own
        draws; not together with ``resample``.
    gibbs_options : mapping, optional
        Settings of the sampler with ``gibbs``: any of ``burn``, ``thin``,
        ``user_candidates`` and ``proposal_scale`` of
        :func:`~bayes_persona.diagnostics.refine.gibbs_draws` (its defaults otherwise).
    repeats : bool, default True
        Simulate each user's picks independently, repeats included, and fit each repeated
        item with its count as ``sample_weight``: the simulator is then exactly the
        likelihood. ``False`` draws distinct picks (the earlier simulator, whose mismatch
        ``repeat_probability`` measures).
    random_state : int, default 0

    Returns
    -------
    SBCResult

    Examples
    --------
    >>> res = simulation_based_calibration(2, n_users=20, n_items=40,
    ...                                    fit_kwargs={"max_epochs": 5})  # doctest: +SKIP
    >>> print(res.summary())  # doctest: +SKIP
    """
    from bayes_persona.persona.estimator import PersonaRecommender

    R = _check_int("n_replications", n_replications, 1)
    K = _check_int("n_personas", n_personas, 2)
    L = _check_int("num_samples", num_samples, 2)
    nb = _check_int("n_bins", n_bins, 2)
    seed = _check_int("random_state", random_state, 0)
    M = _check_int("resample", resample, 0)
    if not isinstance(gibbs, bool):
        raise DataTypeError(f"gibbs must be a bool; got {type(gibbs).__name__}")
    if gibbs and M:
        raise DataValidationError(f"gibbs and resample are two ways to draw; give one, got resample={M} with gibbs=True")
    if not isinstance(repeats, bool):
        raise DataTypeError(f"repeats must be a bool; got {type(repeats).__name__}")
    go = _check_gibbs_options(gibbs_options, gibbs)
    if guide not in ("meanfield", "lowrank"):
        raise DataValidationError(f"guide must be 'meanfield' or 'lowrank'; got {guide!r}")
    lv = tuple(float(x) for x in levels)
    if not lv or any(not 0 < x < 1 for x in lv):
        raise DataValidationError(f"levels must be floats in (0, 1); got {levels!r}")
    fk = dict(DEFAULT_FIT_KWARGS)
    if fit_kwargs is not None:
        if not isinstance(fit_kwargs, Mapping):
            raise DataTypeError(f"fit_kwargs must be a mapping; got {type(fit_kwargs).__name__}")
        fk.update(fit_kwargs)
    if likelihood not in ("joint", "mixture"):
        raise DataValidationError(f"likelihood must be 'joint' or 'mixture'; got {likelihood!r}")
    if not isinstance(empirical_bayes, bool):
        raise DataTypeError(f"empirical_bayes must be a bool; got {type(empirical_bayes).__name__}")
    scales = {} if empirical_bayes else {
        "persona_prior_scale": persona_scale, "item_prior_scale": item_scale, "bias_prior_scale": bias_scale,
    }  # fmt: skip
    fk = {"n_prototypes": 0, "item_prior_scale": None, **scales, **fk}
    for k in ("n_personas", "n_factors", "guide", "prevalence_concentration", "progress", "likelihood"):
        if k in fk:
            raise DataValidationError(
                f"fit_kwargs must not set {k!r}; it is an argument of its own"
            )
    config = dict(
        n_replications=R, n_users=n_users, n_items=n_items, n_personas=K, n_factors=n_factors,
        interactions_per_user=tuple(interactions_per_user), guide=guide, num_samples=L,
        persona_scale=persona_scale, item_scale=item_scale, bias_scale=bias_scale,
        prevalence_concentration=prevalence_concentration, likelihood=likelihood,
        empirical_bayes=empirical_bayes, levels=lv, n_bins=nb, fit_kwargs=dict(fk), resample=M, gibbs=gibbs,
        gibbs_options=dict(go), repeats=repeats, random_state=seed,
    )  # fmt: skip
    rng = np.random.default_rng([seed, 0x5BC])
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    repeat_probs = []
    for r in range(R):
        world = simulate_prior_world(
            n_users, n_items, K, n_factors, interactions_per_user,
            persona_scale=persona_scale, item_scale=item_scale, bias_scale=bias_scale,
            prevalence_concentration=prevalence_concentration, likelihood=likelihood,
            repeats=repeats, seed=seed * 1_000_003 + r,
        )  # fmt: skip
        model = PersonaRecommender(
            n_personas=K, n_factors=n_factors, guide=guide, likelihood=likelihood,
            prevalence_concentration=prevalence_concentration, progress=False,
            **{"random_state": r, **fk},
        )  # fmt: skip
        repeat_probs.append(world.repeat_probability)
        # unpicked items too; a repeated pick counts as many choices as it was made
        model.fit(world.dataset, catalogue=world.dataset.items["item_id"], sample_weight=world.counts())
        rep_rows = _replication_ranks(model, world, L, rng, lv, M, gibbs, go)
        for row in rep_rows:
            row["replication"] = r
            row["guide"] = guide
        rows.extend(rep_rows)
        logger.info("SBC %s: replication %d/%d done", guide, r + 1, R)
    cols = ["guide", "replication", "quantity", "user_id", "item_id", "true", "post_mean",
            "rank", "fractional_rank", "n_draws"] + [f"covered_{round(x * 100):d}" for x in lv]  # fmt: skip
    ranks = pd.DataFrame(rows)[cols]
    coverage, uniformity = _summaries(ranks, lv, nb)
    # the share of picks that repeat one before: the simulator's mismatch unless ``repeats``
    config["repeat_probability"] = float(np.mean(repeat_probs))
    return SBCResult(ranks, coverage, uniformity, config, time.perf_counter() - start)


#: The settings of the Gibbs sampler that ``gibbs_options`` may set.
GIBBS_OPTIONS = ("burn", "thin", "user_candidates", "proposal_scale")


def _check_gibbs_options(options: Any, gibbs: bool) -> dict[str, Any]:
    """``gibbs_options`` as a dict, checked (names here; values by the sampler)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise DataTypeError(f"gibbs_options must be a mapping; got {type(options).__name__}")
    unknown = sorted(set(options) - set(GIBBS_OPTIONS))
    if unknown:
        raise DataValidationError(f"gibbs_options may set {list(GIBBS_OPTIONS)}; got {unknown}")
    if options and not gibbs:
        raise DataValidationError(f"gibbs_options {dict(options)} need gibbs=True")
    return dict(options)


def compare_guides(guides: Sequence[str] = ("meanfield", "lowrank"), **kwargs: Any) -> SBCResult:
    """Run :func:`simulation_based_calibration` for each guide on the same simulated worlds.

    Parameters
    ----------
    guides : sequence of {"meanfield", "lowrank"}
    **kwargs
        Passed to :func:`simulation_based_calibration` (same ``random_state``, hence the
        same worlds, for every guide).

    Returns
    -------
    SBCResult
        Frames stacked over guides (column ``guide``); ``config["guides"]`` lists them.
    """
    if isinstance(guides, str) or not len(guides):
        raise DataValidationError(
            f"guides must be a non-empty sequence of guide names; got {guides!r}"
        )
    results = [simulation_based_calibration(guide=g, **kwargs) for g in guides]
    config = dict(results[0].config)
    config.pop("guide", None)
    config["guides"] = tuple(guides)
    return SBCResult(
        pd.concat([r.ranks for r in results], ignore_index=True),
        pd.concat([r.coverage for r in results], ignore_index=True),
        pd.concat([r.uniformity for r in results], ignore_index=True),
        config,
        sum(r.seconds for r in results),
    )
