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

from bayes_persona.data.synthetic import SyntheticTruth
from bayes_persona.posterior import ACTIVE_PREVALENCE, best_permutation, hdi

__all__ = ["RecoveryReport", "persona_recovery", "LEVELS", "UNCERTAIN"]

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
        )


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
    unc_total, unc_width, n_pairs, ok_total = 0, 0.0, 0, 0
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
        planted = grp["slot"].to_numpy()
        m = int((truth.persona_weights[truth.user_ids == uid] > 0).sum())
        # cost[planted slot, persona] = - evidence that they are the same taste
        cost = np.stack([-mean[:, planted == s].sum(1) for s in range(m)])
        perm = np.asarray(best_permutation(cost))
        agree = mean.argmax(0) == perm[planted]
        true_post = truth.persona_posterior(np.full(len(grp), uid), grp["item_id"].to_numpy())[:, :m]
        low, high = hdi(post[:, perm, :], hdi_prob, axis=0)  # (m, n)
        covered = (low <= true_post.T + 1e-6) & (true_post.T - 1e-6 <= high)
        n_pairs += true_post.size
        unc = (true_post.T > UNCERTAIN[0]) & (true_post.T < UNCERTAIN[1])  # (m, n)
        n_found = int((prev_median > prevalence_threshold).sum())
        if unc.any():
            unc_total += int(unc.sum())
            unc_width += float((high - low)[unc].sum())
            count_ok = n_found == m  # the user's persona count was recovered
            if count_ok:
                ok_total += int(unc.sum())
            for lv in LEVELS:
                lo_l, hi_l = (low, high) if lv == hdi_prob else hdi(post[:, perm, :], lv, axis=0)
                ok = (lo_l <= true_post.T + 1e-6) & (true_post.T - 1e-6 <= hi_l)
                unc_hits[lv] += int(ok[unc].sum())
                if count_ok:
                    ok_hits[lv] += int(ok[unc].sum())
                lo_c, hi_c = np.quantile(post[:, perm, :], [(1 - lv) / 2, (1 + lv) / 2], axis=0)
                central = (lo_c <= true_post.T + 1e-6) & (true_post.T - 1e-6 <= hi_c)
                central_hits[lv] += int(central[unc].sum())
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
    )
