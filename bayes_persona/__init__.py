"""bayes_persona: explainable recommendation with a Bayesian multi-persona model of user taste.

>>> import bayes_persona as bp
>>> data, truth = bp.make_synthetic(n_users=60, n_items=120, n_tastes=4, seed=0)
>>> model = bp.PersonaRecommender(n_personas=3, n_factors=8, max_epochs=5, progress=False)
>>> recs = model.fit(data).recommend([1, 2], n=5)
"""

from __future__ import annotations

import logging

from bayes_persona._version import __version__
from bayes_persona.data import (
    Dataset,
    MergedAccounts,
    Split,
    SyntheticData,
    SyntheticTruth,
    Vocabulary,
    binarize,
    k_core,
    leave_one_out,
    load_interactions,
    load_items,
    load_movielens,
    make_synthetic,
    merge_accounts,
    random_holdout,
    temporal_split,
    validation_split,
)
from bayes_persona.evaluation import evaluate
from bayes_persona.exceptions import (
    BayesPersonaError,
    ChecksumError,
    ConvergenceWarning,
    DatasetNotFoundError,
    DataTypeError,
    DataValidationError,
    ModelFitError,
    NotFittedError,
    SaveFormatError,
    UnknownIdError,
)
from bayes_persona.recommender import PersonaRecommender
from bayes_persona.recovery import persona_recovery

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "PersonaRecommender",
    "Dataset",
    "Split",
    "SyntheticData",
    "SyntheticTruth",
    "Vocabulary",
    "binarize",
    "k_core",
    "leave_one_out",
    "load_interactions",
    "load_items",
    "load_movielens",
    "make_synthetic",
    "merge_accounts",
    "MergedAccounts",
    "random_holdout",
    "temporal_split",
    "validation_split",
    "evaluate",
    "persona_recovery",
    "BayesPersonaError",
    "ChecksumError",
    "ConvergenceWarning",
    "DatasetNotFoundError",
    "DataTypeError",
    "DataValidationError",
    "ModelFitError",
    "NotFittedError",
    "SaveFormatError",
    "UnknownIdError",
]
