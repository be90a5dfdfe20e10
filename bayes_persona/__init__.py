"""bayes_persona: explainable recommendation with a Bayesian multi-persona model of user taste.

>>> import bayes_persona as bp
>>> data, truth = bp.make_synthetic(n_users=60, n_items=120, n_tastes=4, seed=0)
>>> model = bp.PersonaRecommender(n_personas=3, n_factors=8, max_epochs=5, progress=False)
>>> recs = model.fit(data).recommend([1, 2], n=5)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bayes_persona._version import __version__
from bayes_persona.exceptions import (
    BayesPersonaError,
    ChecksumError,
    ConvergenceWarning,
    DatasetNotFoundError,
    DataTypeError,
    DataValidationError,
    MixingWarning,
    ModelFitError,
    NotFittedError,
    SaveFormatError,
    UnknownIdError,
)

# The public names load on first use (PEP 562), so that ``import bayes_persona`` -- and the
# command line's --help -- do not pay for torch and pyro until a model is needed.
_LAZY = {
    **dict.fromkeys(
        ["Dataset", "MergedAccounts", "Split", "SyntheticData", "SyntheticTruth", "Vocabulary",
         "binarize", "k_core", "leave_one_out", "load_interactions", "load_items", "load_movielens",
         "make_synthetic", "merge_accounts", "random_holdout", "temporal_split", "validation_split"],
        "bayes_persona.data",
    ),  # fmt: skip
    "evaluate": "bayes_persona.evaluation",
    "PersonaRecommender": "bayes_persona.persona.estimator",
    "persona_recovery": "bayes_persona.diagnostics.recovery",
    "ModelSummary": "bayes_persona.persona.summary",
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from bayes_persona.data import (  # noqa: F401
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
    from bayes_persona.diagnostics.recovery import persona_recovery  # noqa: F401
    from bayes_persona.evaluation import evaluate  # noqa: F401
    from bayes_persona.persona.estimator import PersonaRecommender  # noqa: F401
    from bayes_persona.persona.summary import ModelSummary  # noqa: F401


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    try:  # a submodule, e.g. bayes_persona.posterior
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "PersonaRecommender",
    "ModelSummary",
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
    "MixingWarning",
    "DatasetNotFoundError",
    "DataTypeError",
    "DataValidationError",
    "ModelFitError",
    "NotFittedError",
    "SaveFormatError",
    "UnknownIdError",
]
