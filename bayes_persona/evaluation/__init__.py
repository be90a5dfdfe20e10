"""Offline evaluation: ranking and beyond-accuracy metrics, statistics and protocols.

This package holds the metrics over tidy frames of recommendations and held-out pairs
(:mod:`~bayes_persona.evaluation.ranking` for hit rate, recall, precision, NDCG, MRR and
MAP; :mod:`~bayes_persona.evaluation.beyond_accuracy` for coverage, diversity, novelty and
the taste distribution distance), the statistics over users
(:mod:`~bayes_persona.evaluation.statistics`: bootstrap intervals and paired comparisons),
the evaluation protocols (:mod:`~bayes_persona.evaluation.protocol`: :func:`evaluate` on the
full-ranking or sampled protocol) and hyperparameter tuning on a validation split
(:mod:`~bayes_persona.evaluation.tuning`). Every public name is importable from
``bayes_persona.evaluation`` itself.
"""

from __future__ import annotations

from bayes_persona.evaluation.beyond_accuracy import (
    STECK_ALPHA,
    category_tastes,
    coverage,
    intra_list_diversity,
    novelty,
    taste_distance,
    taste_distribution_distance,
    tdd,
)
from bayes_persona.evaluation.protocol import (
    ACCURACY_METRICS,
    BEYOND_ACCURACY_METRICS,
    DEFAULT_METRICS,
    RESULT_COLUMNS,
    evaluate,
)
from bayes_persona.evaluation.ranking import hit_rate, map_at_k, mrr, ndcg, precision, recall
from bayes_persona.evaluation.statistics import (
    PairedTestResult,
    bootstrap_ci,
    compare,
    paired_test,
)
from bayes_persona.evaluation.tuning import holdout_split, tune

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
