"""Offline evaluation: metrics, statistics over users and evaluation protocols.

This package holds the metrics over tidy frames of recommendations and held-out pairs
with the bootstrap statistics over users (:mod:`~bayes_persona.evaluation.metrics`), and
the evaluation protocols with hyperparameter tuning
(:mod:`~bayes_persona.evaluation.protocol`: :func:`evaluate` on the full-ranking or sampled
protocol, :func:`compare`, :func:`tune`, :func:`holdout_split`). Every public name is
importable from ``bayes_persona.evaluation`` itself.
"""

from __future__ import annotations

from bayes_persona.evaluation.metrics import (
    STECK_ALPHA,
    PairedTestResult,
    bootstrap_ci,
    category_tastes,
    coverage,
    hit_rate,
    intra_list_diversity,
    map_at_k,
    mrr,
    ndcg,
    novelty,
    paired_test,
    precision,
    recall,
    taste_distance,
    taste_distribution_distance,
    tdd,
)
from bayes_persona.evaluation.protocol import (
    ACCURACY_METRICS,
    BEYOND_ACCURACY_METRICS,
    DEFAULT_METRICS,
    RESULT_COLUMNS,
    compare,
    evaluate,
    holdout_split,
    tune,
)

__all__ = [
    "evaluate",
    "compare",
    "tune",
    "holdout_split",
    "ACCURACY_METRICS",
    "BEYOND_ACCURACY_METRICS",
    "DEFAULT_METRICS",
    "RESULT_COLUMNS",
    "hit_rate",
    "recall",
    "precision",
    "ndcg",
    "mrr",
    "map_at_k",
    "coverage",
    "intra_list_diversity",
    "novelty",
    "category_tastes",
    "taste_distribution_distance",
    "tdd",
    "taste_distance",
    "STECK_ALPHA",
    "bootstrap_ci",
    "paired_test",
    "PairedTestResult",
]
