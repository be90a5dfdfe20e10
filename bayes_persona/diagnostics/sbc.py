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
Personas are exchangeable and the factors are identified only up to rotation, so the ranked
quantities are invariant to both, after each user's fitted personas are matched to the true
ones (Hungarian algorithm on the agreement of their assignment probabilities over the user's
interactions):

* ``prevalence``: :math:`\pi_{uk}` of one persona drawn at random per user;
* ``assignment``: :math:`P(z = k \mid u, i, \theta) \propto \pi_{uk}\,
  \mathrm{softmax}_k(i)` for one of the user's interactions and one persona, drawn at
  random per user.

One rank per user and quantity keeps the ranks of a replication close to independent
(users share only the item parameters). Coverage of the central ``50/80/90/95%`` intervals
is the share of ranks in the matching central range; rank uniformity is tested with a
chi-square test on ``n_bins`` equal bins of randomised fractional ranks
:math:`(r + V)/(L + 1)`, :math:`V \sim U(0, 1)`, which are exactly uniform under
calibration for any ``L``.

Caveats
-------
* The fit estimates the prior scales by empirical Bayes, while the simulation fixes them,
  so the procedure checks the whole fitting pipeline (EB included), not the posterior for
  known hyperparameters alone.
* Data sets hold each (user, item) pair at most once, so a user's simulated picks are drawn
  successively without replacement (as :func:`bayes_persona.make_synthetic` does) while the
  model's likelihood treats them as independent; with ``n_u`` well below the effective
  catalogue size the difference is small.
* Matching personas with the fitted posterior uses the data, which pulls matched ranks
  slightly toward the centre.

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

from bayes_persona.data._validation import check_int_range as _check_range
from bayes_persona.data._validation import check_min_int as _check_int
from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = [
    "PriorWorld",
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

QUANTITIES = ("prevalence", "assignment")

#: Fit settings of each replication unless ``fit_kwargs`` overrides them: small worlds need
#: many full-batch steps (one step per epoch with 40 users) to converge.
DEFAULT_FIT_KWARGS: dict[str, Any] = {
    "max_epochs": 300,
    "batch_size": 64,
    "learning_rate": 0.05,
    "patience": 0,
    # The simulated worlds come from the isotropic prior with unknown scales: fit that model
    # (no taste prototypes) with every scale by empirical Bayes.
    "n_prototypes": 0,
    "item_prior_scale": None,
}


def _check_pos(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or not np.isfinite(value)
        or value <= 0
    ):
        raise DataValidationError(f"{name} must be a positive finite float; got {value!r}")
    return float(value)


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

    def log_choice(self) -> np.ndarray:
        """``log softmax_j(p_uk . q_j + b_j)`` for every user, persona and item, (U, K, N)."""
        logits = np.einsum("ukd,nd->ukn", self.persona_factors, self.item_factors) + self.item_bias
        m = logits.max(-1, keepdims=True)
        return logits - (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))

    def assignment(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """True ``P(z = k | u, i)`` for index pairs, shape (n, K)."""
        lc = self.log_choice()[u, :, i]  # (n, K)
        with np.errstate(divide="ignore"):
            lj = np.log(self.prevalence[u]) + lc
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
    seed: int = 0,
) -> PriorWorld:
    r"""Draw parameters from the persona model's prior and simulate implicit data from them.

    :math:`q_i \sim N(0, s_q^2 I_D)`, :math:`b_i \sim N(0, s_b^2)`,
    :math:`p_{uk} \sim N(0, s_p^2 I_D)`, :math:`\pi_u \sim \mathrm{Dirichlet}(\alpha)`;
    each user makes ``n_u`` (uniform in ``interactions_per_user``) distinct picks drawn
    successively from :math:`\sum_k \pi_{uk} \mathrm{softmax}_k` (Gumbel-top-k).

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
        _check_pos(n, v)
        for n, v in (
            ("persona_scale", persona_scale),
            ("item_scale", item_scale),
            ("bias_scale", bias_scale),
        )
    )
    alpha = _check_pos("prevalence_concentration", prevalence_concentration)
    seed = _check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    q = s_q * rng.standard_normal((N, D))
    b = s_b * rng.standard_normal(N)
    p = s_p * rng.standard_normal((U, K, D))
    pi = rng.dirichlet(np.full(K, alpha), size=U) if K > 1 else np.ones((U, 1))
    pi = np.clip(pi, 1e-12, None)
    pi /= pi.sum(1, keepdims=True)
    world = PriorWorld(None, q, b, p, pi)
    log_choice = world.log_choice()
    rows_u, rows_i = [], []
    for u in range(U):
        n_u = int(rng.integers(lo, hi + 1))
        lp = np.log(np.exp(np.log(pi[u])[:, None] + log_choice[u]).sum(0))
        keys = lp - np.log(rng.standard_exponential(N))
        picks = np.argpartition(-keys, n_u - 1)[:n_u]
        rows_u.append(np.full(n_u, u + 1))
        rows_i.append(picks + 1)
    ratings = pd.DataFrame({"user_id": np.concatenate(rows_u), "item_id": np.concatenate(rows_i)})
    items = None
    n_cat = min(_check_int("n_categories", n_categories, 0), D)
    if n_cat > 0:
        cat = np.argmax(q[:, :n_cat], axis=1)
        items = pd.DataFrame(
            {"item_id": np.arange(1, N + 1), "categories": [[f"c{c}"] for c in cat]}
        )
    ds = Dataset(ratings=ratings, items=items, name=f"prior-world(seed={seed})")
    return PriorWorld(ds, q, b, p, pi)


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


def _replication_ranks(
    model: Any,
    world: PriorWorld,
    num_samples: int,
    rng: np.random.Generator,
    levels: Sequence[float],
) -> list[dict[str, Any]]:
    """Ranks of one fitted replication: one prevalence and one assignment per user."""
    from bayes_persona.posterior import best_permutation

    ratings = world.dataset.ratings
    U = len(model.user_vocab_)
    users = np.arange(U)
    with torch.no_grad():
        q, b = model.posterior_.item_draws(num_samples)
        d = model.posterior_.user_draws(users, num_samples)
        p, pi = d["persona_factors"], d["prevalence"]  # (L, U, K, D), (L, U, K)
        logits = torch.einsum("sukd,snd->sukn", p, q) + b[:, None, None, :]
        log_joint = torch.log(pi)[..., None] + torch.log_softmax(logits, dim=-1)  # (L, U, K, N)
        post = torch.softmax(log_joint, dim=2).cpu().numpy()
    pi = pi.cpu().numpy()
    rows = []
    by_user = dict(tuple(ratings.groupby("user_id", sort=False)))
    for u in users:
        uid = model.user_vocab_.decode(np.array([u]))[0]
        grp = by_user[uid]
        items_ext = grp["item_id"].to_numpy()
        i_model = model.item_vocab_.encode(items_ext)
        true_post = world.assignment(
            np.full(len(items_ext), int(uid) - 1), items_ext.astype(np.int64) - 1
        )  # (n, K)
        draws_post = post[:, u][:, :, i_model]  # (L, K, n)
        mean_post = draws_post.mean(0)  # (K, n)
        K = true_post.shape[1]
        perm = np.asarray(
            best_permutation(-(true_post.T @ mean_post.T))
        )  # true slot -> fitted persona
        t = int(rng.integers(K))
        rows.append(
            {"replication": None, "quantity": "prevalence", "user_id": uid, "persona": t, "item_id": None,
             **_rank_row(pi[:, u, perm[t]], world.prevalence[int(uid) - 1, t], rng, levels)}
        )  # fmt: skip
        j = int(rng.integers(len(items_ext)))
        t = int(rng.integers(K))
        rows.append(
            {"replication": None, "quantity": "assignment", "user_id": uid, "persona": t, "item_id": items_ext[j],
             **_rank_row(draws_post[:, perm[t], j], true_post[j, t], rng, levels)}
        )  # fmt: skip
    return rows


def _summaries(
    ranks: pd.DataFrame, levels: Sequence[float], n_bins: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    from scipy import stats

    cov_rows, uni_rows = [], []
    for (g, qn), grp in ranks.groupby(["guide", "quantity"], sort=False):
        n = len(grp)
        for lv in levels:
            c = float(grp[f"covered_{round(lv * 100):d}"].mean())
            cov_rows.append(
                {
                    "guide": g,
                    "quantity": qn,
                    "level": lv,
                    "coverage": c,
                    "n": n,
                    "se": float(np.sqrt(c * (1 - c) / n)),
                }
            )
        counts = np.histogram(grp["fractional_rank"].to_numpy(), bins=n_bins, range=(0.0, 1.0))[0]
        chi2, pv = stats.chisquare(counts)
        uni_rows.append(
            {
                "guide": g,
                "quantity": qn,
                "n": n,
                "n_bins": n_bins,
                "chi2": float(chi2),
                "df": n_bins - 1,
                "pvalue": float(pv),
            }
        )
    return pd.DataFrame(cov_rows), pd.DataFrame(uni_rows)


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
    levels: Sequence[float] = DEFAULT_LEVELS,
    n_bins: int = 10,
    fit_kwargs: Mapping[str, Any] | None = None,
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
        Prior of the simulation (the fit re-estimates the scales by empirical Bayes).
    levels : sequence of float in (0, 1)
        Central-interval levels whose coverage is reported.
    n_bins : int, default 10
        Bins of the rank-uniformity chi-square test.
    fit_kwargs : mapping, optional
        Further :class:`~bayes_persona.PersonaRecommender` arguments (e.g. ``max_epochs``,
        ``learning_rate``), merged over :data:`DEFAULT_FIT_KWARGS`.
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
    from bayes_persona.recommender import PersonaRecommender

    R = _check_int("n_replications", n_replications, 1)
    K = _check_int("n_personas", n_personas, 2)
    L = _check_int("num_samples", num_samples, 2)
    nb = _check_int("n_bins", n_bins, 2)
    seed = _check_int("random_state", random_state, 0)
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
    for k in ("n_personas", "n_factors", "guide", "prevalence_concentration", "progress"):
        if k in fk:
            raise DataValidationError(
                f"fit_kwargs must not set {k!r}; it is an argument of its own"
            )
    config = dict(
        n_replications=R, n_users=n_users, n_items=n_items, n_personas=K, n_factors=n_factors,
        interactions_per_user=tuple(interactions_per_user), guide=guide, num_samples=L,
        persona_scale=persona_scale, item_scale=item_scale, bias_scale=bias_scale,
        prevalence_concentration=prevalence_concentration, levels=lv, n_bins=nb,
        fit_kwargs=dict(fk), random_state=seed,
    )  # fmt: skip
    rng = np.random.default_rng([seed, 0x5BC])
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for r in range(R):
        world = simulate_prior_world(
            n_users, n_items, K, n_factors, interactions_per_user,
            persona_scale=persona_scale, item_scale=item_scale, bias_scale=bias_scale,
            prevalence_concentration=prevalence_concentration, seed=seed * 1_000_003 + r,
        )  # fmt: skip
        model = PersonaRecommender(
            n_personas=K, n_factors=n_factors, guide=guide,
            prevalence_concentration=prevalence_concentration, progress=False,
            **{"random_state": r, **fk},
        )  # fmt: skip
        model.fit(world.dataset)
        rep_rows = _replication_ranks(model, world, L, rng, lv)
        for row in rep_rows:
            row["replication"] = r
            row["guide"] = guide
        rows.extend(rep_rows)
        logger.info("SBC %s: replication %d/%d done", guide, r + 1, R)
    cols = ["guide", "replication", "quantity", "user_id", "persona", "item_id", "true", "post_mean",
            "rank", "fractional_rank", "n_draws"] + [f"covered_{round(x * 100):d}" for x in lv]  # fmt: skip
    ranks = pd.DataFrame(rows)[cols]
    coverage, uniformity = _summaries(ranks, lv, nb)
    return SBCResult(ranks, coverage, uniformity, config, time.perf_counter() - start)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m bayes_persona.diagnostics.sbc --replications 20``."""
    import argparse

    ap = argparse.ArgumentParser(
        description="Simulation-based calibration of the persona model's guides."
    )
    ap.add_argument("--replications", type=int, default=20)
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--items", type=int, default=80)
    ap.add_argument("--personas", type=int, default=2)
    ap.add_argument("--factors", type=int, default=3)
    ap.add_argument("--draws", type=int, default=99)
    ap.add_argument("--max-epochs", type=int, default=DEFAULT_FIT_KWARGS["max_epochs"])
    ap.add_argument("--learning-rate", type=float, default=DEFAULT_FIT_KWARGS["learning_rate"])
    ap.add_argument("--guides", default="meanfield,lowrank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the ranks as CSV here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = compare_guides(
        tuple(args.guides.split(",")), n_replications=args.replications, n_users=args.users,
        n_items=args.items, n_personas=args.personas, n_factors=args.factors,
        num_samples=args.draws, random_state=args.seed,
        fit_kwargs={"max_epochs": args.max_epochs, "learning_rate": args.learning_rate},
    )  # fmt: skip
    logger.info("%s\n(%.0f s)", res.summary(), res.seconds)
    if args.out:
        res.ranks.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
