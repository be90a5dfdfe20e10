"""bayes_persona: explainable recommendation with a Bayesian multi-persona model of user taste."""

from __future__ import annotations

import logging

from bayes_persona._version import __version__
from bayes_persona.exceptions import (
    BayesPersonaError,
    ChecksumError,
    DatasetNotFoundError,
    DataTypeError,
    DataValidationError,
    ModelFitError,
    NotFittedError,
    SaveFormatError,
    UnknownIdError,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "BayesPersonaError",
    "ChecksumError",
    "DatasetNotFoundError",
    "DataTypeError",
    "DataValidationError",
    "ModelFitError",
    "NotFittedError",
    "SaveFormatError",
    "UnknownIdError",
]
