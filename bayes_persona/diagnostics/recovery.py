"""How well a fitted model recovers the planted personas of :func:`make_synthetic` data.

Personas are exchangeable, so each user's fitted personas are matched to the planted tastes
by the permutation that maximises their agreement on the user's training interactions
(Hungarian algorithm); every figure is computed after that matching and is therefore
invariant to label switching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from bayes_persona.data._validation import check_min_int, check_positive_float
from bayes_persona.data.synthetic import SyntheticTruth
from bayes_persona.posterior import ACTIVE_PREVALENCE, best_permutation, hdi

__all__ = ["RecoveryReport", "persona_recovery", "selection_reference", "matched_per_draw", "selection_coverage",
           "LEVELS", "UNCERTAIN"]

LEVELS = (0.5, 0.8, 0.9, 0.95)
UNCERTAIN = (0.05, 0.95)


@dataclass(frozen=True)
class RecoveryReport:
    """Recovery figures.

    Attributes
    ----------
    assignment_accuracy : float
        Share of training interactions whose most probable persona is the one matched to
        the planted taste that generated them.
    count_accuracy : float
        Share of users whose number of personas with posterior median prevalence above
        ``prevalence_threshold`` equals their number of planted tastes.
    interval_coverage : float
        Share of (interaction, planted taste) pairs whose ``hdi_prob`` interval of the
        matched persona's probability covers the generating probability.
    interval_coverage_multi : float
        The same restricted to users with two or more planted tastes. For a one-taste
        user the generating probability is exactly 1 (a boundary), which an interval
        reaches only when the spare personas' prevalence draws are near zero, so this is
        the informative figure.
    hdi_prob, prevalence_threshold : float
    per_user : DataFrame
        ``user_id, n_planted, n_found, accuracy, coverage``.
    uncertain_coverage : dict of float to float
        Coverage at each level of :data:`LEVELS` restricted to the *uncertain* pairs, whose
        generating probability lies in ``UNCERTAIN`` = (0.05, 0.95). Pairs at 0 or 1 are
        covered by any interval that touches the boundary, so they make pooled coverage
        easy; this is the figure that says whether the intervals are calibrated.
    uncertain_share : float
        Share of (interaction, taste) pairs that are uncertain.
    uncertain_width : float
        Mean width of the ``hdi_prob`` intervals on the uncertain pairs.
    uncertain_coverage_central : dict of float to float
        As ``uncertain_coverage``, with equal-tailed intervals (the draws' quantiles
        ``(1 - level) / 2`` and ``(1 + level) / 2``) in place of the HDI. An equal-tailed
        interval of level ``l`` covers exactly when the truth's rank among the draws lies in
        the middle ``l`` of them, so this column reads as a probability integral transform:
        above nominal at every level means the draws are spread wider than the errors; the
        HDI can fall below nominal at low levels on the same draws when they are skewed
        (its narrowest window sits at the mode, away from the median).
    uncertain_coverage_count_ok : dict of float to float
        ``uncertain_coverage`` restricted to users whose number of active personas equals
        their number of planted tastes. Where a user's tastes were merged into one persona
        (or one taste split over two), the matched persona's probability is not the taste's,
        and no interval of it should be expected to cover.
    uncertain_share_count_ok : float
        Share of the uncertain pairs that belong to those users.
    flagged_coverage : dict of float to float
        HDI coverage at each level of :data:`LEVELS` on the pairs the *model* calls
        uncertain: those whose posterior median of the matched persona's probability lies in
        :data:`UNCERTAIN`. The uncertain pairs above are chosen by the generating
        probability, which the data do not reveal; an exact posterior's intervals cover at
        their nominal level on any selection made from the data, but not on a selection made
        from the truth (see :func:`selection_reference`). This is the reading an exact
        posterior is held to.
    flagged_share : float
        Share of (interaction, taste) pairs that the model calls uncertain.
    flagged_misses_at_bound : float
        Of the flagged pairs that the ``hdi_prob`` interval misses, the share whose generating
        probability is within 1e-3 of 0 or 1.
    grouped_uncertain_coverage, grouped_flagged_coverage : dict of float to float
        ``uncertain_coverage`` and ``flagged_coverage`` with a taste's probability read as
        the sum over every persona that explains most of the taste's items (a taste the fit
        split over two personas gets both), instead of the one persona matched to it; the
        flagged pairs are chosen by the grouped draws' median.
    """

    assignment_accuracy: float
    count_accuracy: float
    interval_coverage: float
    interval_coverage_multi: float
    hdi_prob: float
    prevalence_threshold: float
    per_user: pd.DataFrame
    uncertain_coverage: dict = field(default_factory=dict)
    uncertain_share: float = float("nan")
    uncertain_width: float = float("nan")
    uncertain_coverage_central: dict = field(default_factory=dict)
    uncertain_coverage_count_ok: dict = field(default_factory=dict)
    uncertain_share_count_ok: float = float("nan")
    flagged_coverage: dict = field(default_factory=dict)
    flagged_share: float = float("nan")
    flagged_misses_at_bound: float = float("nan")
    grouped_uncertain_coverage: dict = field(default_factory=dict)
    grouped_flagged_coverage: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"persona assignment agrees with the planted taste for "
            f"{self.assignment_accuracy:.1%} of interactions; "
            f"personas with prevalence > {self.prevalence_threshold:g} match the planted count "
            f"for {self.count_accuracy:.1%} of users; "
            f"{self.hdi_prob:.0%} intervals cover the generating probability for "
            f"{self.interval_coverage:.1%} of (interaction, taste) pairs "
            f"({self.interval_coverage_multi:.1%} for users with several tastes); on the "
            f"{self.uncertain_share:.1%} of pairs whose generating probability is in "
            f"({UNCERTAIN[0]:g}, {UNCERTAIN[1]:g}) the "
            + ", ".join(f"{lv:.0%}" for lv in self.uncertain_coverage)
            + " intervals cover "
            + ", ".join(f"{c:.1%}" for c in self.uncertain_coverage.values())
            + f" (mean {self.hdi_prob:.0%} width {self.uncertain_width:.2f}); equal-tailed intervals cover "
            + ", ".join(f"{c:.1%}" for c in self.uncertain_coverage_central.values())
            + (
                f"; on the {self.flagged_share:.1%} of pairs the model calls uncertain (posterior "
                "median in that range) the HDIs cover "
                + ", ".join(f"{c:.1%}" for c in self.flagged_coverage.values())
                if self.flagged_coverage
                else ""
            )
        )


def _covers(draws: np.ndarray, truth: np.ndarray, level: float, central: bool = False) -> np.ndarray:
    """Whether the ``level`` interval of ``draws`` (S, ...) holds ``truth`` (...): the HDI, or
    the equal-tailed interval when ``central``; a tolerance of 1e-6 on either side."""
    if central:
        low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    else:
        low, high = hdi(draws, level, axis=0)
    return (low <= truth + 1e-6) & (truth - 1e-6 <= high)


def _is_uncertain(p: np.ndarray) -> np.ndarray:
    return (p > UNCERTAIN[0]) & (p < UNCERTAIN[1])


def selection_reference(
    n_trials: int = 3,
    n_worlds: int = 4000,
    concentration: float = 0.5,
    n_draws: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Coverage of an *exact* posterior's intervals on pairs chosen by the truth and by the
    posterior: what :func:`persona_recovery`'s two readings give when nothing is wrong.

    A conjugate stand-in for an explanation probability: ``theta ~ Beta(c, c)``, ``n_trials``
    Bernoulli draws, and ``n_draws`` draws of the exact posterior ``Beta(c + x, c + n - x)``.
    The pairs are chosen as :func:`persona_recovery` chooses them: by the truth ``theta`` in
    :data:`UNCERTAIN` (``"truth"``), or by the posterior median in it (``"posterior"``).
    Given the data, the truth lies in a credible interval with its mass, so the posterior
    selection covers at the nominal level; the truth selection does not (with little data a
    50% HDI covers about a third of the middle truths).

    Returns
    -------
    DataFrame
        ``selection, interval, level, coverage, n_pairs``; ``interval`` is ``"hdi"`` or
        ``"equal-tailed"``.
    """
    n_trials = check_min_int("n_trials", n_trials, 1)
    n_worlds = check_min_int("n_worlds", n_worlds, 1)
    n_draws = check_min_int("n_draws", n_draws, 2)
    seed = check_min_int("seed", seed, 0)
    concentration = check_positive_float("concentration", concentration)
    rng = np.random.default_rng(seed)
    theta = rng.beta(concentration, concentration, n_worlds)
    x = rng.binomial(n_trials, theta)
    draws = rng.beta(concentration + x, concentration + n_trials - x, size=(n_draws, n_worlds))
    chosen = {"truth": _is_uncertain(theta), "posterior": _is_uncertain(np.median(draws, axis=0))}
    rows = []
    for selection, keep in chosen.items():
        for interval in ("hdi", "equal-tailed"):
            for level in LEVELS:
                hit = _covers(draws[:, keep], theta[keep], level, central=interval != "hdi")
                rows.append({"selection": selection, "interval": interval, "level": level,
                             "coverage": float(hit.mean()), "n_pairs": int(keep.sum())})  # fmt: skip
    return pd.DataFrame(rows)


def persona_recovery(
    model,
    truth: SyntheticTruth,
    users=None,
    hdi_prob: float | None = None,
    prevalence_threshold: float = ACTIVE_PREVALENCE,
) -> RecoveryReport:
    """Compare a fitted :class:`PersonaRecommender` with the planted truth.

    Parameters
    ----------
    model : PersonaRecommender
        Fitted on (a training part of) the synthetic data.
    truth : SyntheticTruth
    users : sequence of user ids, optional
        Default: every planted user the model knows.
    hdi_prob : float in (0, 1), optional
        Interval mass; default the model's ``hdi_prob``.
    prevalence_threshold : float

    Returns
    -------
    RecoveryReport
    """
    post_obj = model.posterior_  # NotFittedError before fit
    hdi_prob = post_obj.interval_prob(hdi_prob)
    inter = truth.interactions
    known_u = model.user_vocab_.index_of_known(inter["user_id"].to_numpy())[0]
    known_i = model.item_vocab_.index_of_known(inter["item_id"].to_numpy())[0]
    inter = inter[known_u & known_i]
    # Only interactions the model trained on.
    seen = model.seen_
    if users is None:
        users = pd.unique(inter["user_id"])
    rows, hits, total, cov_hits, cov_total, multi_hits, multi_total = [], 0, 0, 0, 0, 0, 0
    unc_hits, central_hits, ok_hits = dict.fromkeys(LEVELS, 0), dict.fromkeys(LEVELS, 0), dict.fromkeys(LEVELS, 0)
    flag_hits, g_unc_hits, g_flag_hits = dict.fromkeys(LEVELS, 0), dict.fromkeys(LEVELS, 0), dict.fromkeys(LEVELS, 0)
    unc_total, unc_width, n_pairs, ok_total, flag_total, flag_g_total = 0, 0.0, 0, 0, 0, 0
    flag_misses, flag_misses_bound = 0, 0
    by_user = dict(tuple(inter.groupby("user_id", sort=False)))
    for uid in users:
        grp = by_user.get(uid)
        if grp is None:
            continue
        u = model.user_vocab_.encode([uid])
        i_all = model.item_vocab_.encode(grp["item_id"].to_numpy())
        trained = np.isin(i_all, seen.items_of(int(u[0])))
        grp, i_idx = grp[trained], i_all[trained]
        if len(grp) == 0:
            continue
        with torch.no_grad():
            post, order, prev = post_obj.explanation_draws(u, i_idx)
        post = post[:, 0].cpu().numpy()  # (S, K, n), slot order
        prev_median = np.median(prev[:, 0].cpu().numpy(), axis=0)  # (K,), as personas() marks "active"
        mean = post.mean(0)  # (K, n)
        planted, m, true_post = user_truth(truth, uid, grp)
        # cost[planted slot, persona] = - evidence that they are the same taste
        cost = np.stack([-mean[:, planted == s].sum(1) for s in range(m)])
        perm = np.asarray(best_permutation(cost))
        agree = mean.argmax(0) == perm[planted]
        matched = post[:, perm, :]  # (S, m, n): the persona matched to each taste
        # every persona to the taste whose items it explains most (several may share one)
        owner = (-cost).argmax(0)
        grouped = np.stack([post[:, owner == t, :].sum(1) for t in range(m)], axis=1)  # (S, m, n)
        low, high = hdi(matched, hdi_prob, axis=0)  # (m, n)
        covered = (low <= true_post + 1e-6) & (true_post - 1e-6 <= high)
        n_pairs += true_post.size
        unc = _is_uncertain(true_post)  # (m, n): chosen by the truth
        flag = _is_uncertain(np.median(matched, axis=0))  # chosen by the posterior
        flag_g = _is_uncertain(np.median(grouped, axis=0))
        n_found = int((prev_median > prevalence_threshold).sum())
        count_ok = n_found == m  # the user's persona count was recovered
        unc_total += int(unc.sum())
        unc_width += float((high - low)[unc].sum())
        ok_total += int(unc.sum()) if count_ok else 0
        flag_total += int(flag.sum())
        flag_g_total += int(flag_g.sum())
        missed = flag & ~covered
        flag_misses += int(missed.sum())
        flag_misses_bound += int((missed & ((true_post < 1e-3) | (true_post > 1 - 1e-3))).sum())
        for lv in LEVELS:
            ok = covered if lv == hdi_prob else _covers(matched, true_post, lv)
            ok_g = _covers(grouped, true_post, lv)
            unc_hits[lv] += int(ok[unc].sum())
            if count_ok:
                ok_hits[lv] += int(ok[unc].sum())
            central_hits[lv] += int(_covers(matched, true_post, lv, central=True)[unc].sum())
            flag_hits[lv] += int(ok[flag].sum())
            g_unc_hits[lv] += int(ok_g[unc].sum())
            g_flag_hits[lv] += int(ok_g[flag_g].sum())
        hits += int(agree.sum())
        total += len(agree)
        cov_hits += int(covered.sum())
        cov_total += covered.size
        if m > 1:
            multi_hits += int(covered.sum())
            multi_total += covered.size
        rows.append(
            {
                "user_id": uid,
                "n_planted": m,
                "n_found": n_found,
                "accuracy": float(agree.mean()),
                "coverage": float(covered.mean()),
            }
        )
    per_user = pd.DataFrame(rows)
    return RecoveryReport(
        assignment_accuracy=hits / max(total, 1),
        count_accuracy=float((per_user["n_planted"] == per_user["n_found"]).mean()),
        interval_coverage=cov_hits / max(cov_total, 1),
        interval_coverage_multi=multi_hits / max(multi_total, 1),
        hdi_prob=hdi_prob,
        prevalence_threshold=prevalence_threshold,
        per_user=per_user,
        uncertain_coverage={lv: unc_hits[lv] / max(unc_total, 1) for lv in LEVELS},
        uncertain_share=unc_total / max(n_pairs, 1),
        uncertain_width=unc_width / max(unc_total, 1),
        uncertain_coverage_central={lv: central_hits[lv] / max(unc_total, 1) for lv in LEVELS},
        uncertain_coverage_count_ok={lv: ok_hits[lv] / max(ok_total, 1) for lv in LEVELS},
        uncertain_share_count_ok=ok_total / max(unc_total, 1),
        flagged_coverage={lv: flag_hits[lv] / max(flag_total, 1) for lv in LEVELS},
        flagged_share=flag_total / max(n_pairs, 1),
        flagged_misses_at_bound=flag_misses_bound / max(flag_misses, 1),
        grouped_uncertain_coverage={lv: g_unc_hits[lv] / max(unc_total, 1) for lv in LEVELS},
        grouped_flagged_coverage={lv: g_flag_hits[lv] / max(flag_g_total, 1) for lv in LEVELS},
    )


def user_truth(truth: SyntheticTruth, uid, grp: pd.DataFrame) -> tuple[np.ndarray, int, np.ndarray]:
    """One planted user's interactions ``grp``: the taste that generated each (n,), the
    user's number of tastes ``m``, and the generating ``P(taste | u, i)``, shape (m, n)."""
    m = int((truth.persona_weights[truth.user_ids == uid] > 0).sum())
    true_p = truth.persona_posterior(np.full(len(grp), uid), grp["item_id"].to_numpy())[:, :m].T
    return grp["slot"].to_numpy(), m, true_p


def matched_per_draw(draws: np.ndarray, planted: np.ndarray, n_tastes: int) -> np.ndarray:
    """Each draw's personas matched to the planted tastes, shape (S, m, n).

    ``draws`` (S, K, n) are draws of ``P(z = k | u, i)`` for a user's ``n`` items, whose
    planted tastes are ``planted`` (n,) in ``0 .. m - 1``. In every draw the permutation
    that maximises the personas' agreement with the tastes on those items is taken
    (Hungarian algorithm), so labels that switch between draws (as a sampler's may) are
    matched draw by draw; :func:`persona_recovery` matches once, at the posterior mean.
    """
    draws = np.asarray(draws, dtype=np.float64)
    planted = np.asarray(planted)
    out = np.empty((draws.shape[0], n_tastes, draws.shape[2]))
    for s, d in enumerate(draws):
        cost = np.stack([-d[:, planted == t].sum(1) for t in range(n_tastes)])  # (m, K), as persona_recovery's
        out[s] = d[list(best_permutation(cost))]
    return out


def selection_coverage(matched: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    """HDI coverage of ``truth`` (m, n) by ``matched`` draws (S, m, n) on the pairs chosen by
    the truth and by the posterior median (each in :data:`UNCERTAIN`), at every level of
    :data:`LEVELS`: ``selection, level, hits, n_pairs`` (counts, to pool over users)."""
    chosen = {"truth": _is_uncertain(truth), "posterior": _is_uncertain(np.median(matched, axis=0))}
    rows = []
    for selection, keep in chosen.items():
        for level in LEVELS:
            hits = int(_covers(matched, truth, level)[keep].sum())
            rows.append({"selection": selection, "level": level, "hits": hits, "n_pairs": int(keep.sum())})
    return pd.DataFrame(rows)
