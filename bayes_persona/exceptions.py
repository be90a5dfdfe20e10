"""Exceptions raised by bayes_persona.

Every error a caller may want to catch is a class of its own; each subclasses the
builtin that a generic caller would catch (``ValueError``, ``TypeError``, ...).
"""

from __future__ import annotations

__all__ = [
    "BayesPersonaError",
    "DataValidationError",
    "DataTypeError",
    "DatasetNotFoundError",
    "ChecksumError",
    "NotFittedError",
    "UnknownIdError",
    "ModelFitError",
    "SaveFormatError",
    "ConvergenceWarning",
    "MixingWarning",
]


class BayesPersonaError(Exception):
    """Base class of every bayes_persona exception."""


class DataValidationError(BayesPersonaError, ValueError):
    """Input data or an argument has a bad value (missing column, NaN id, ...)."""


class DataTypeError(BayesPersonaError, TypeError):
    """Input data or an argument has the wrong type."""


class DatasetNotFoundError(BayesPersonaError, FileNotFoundError):
    """A dataset's files are absent and downloading was not allowed."""


class ChecksumError(BayesPersonaError, ValueError):
    """A downloaded file does not match its pinned sha256."""


class NotFittedError(BayesPersonaError, ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``."""


class UnknownIdError(BayesPersonaError, KeyError, ValueError):
    """A user or item id was not seen in training."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ModelFitError(BayesPersonaError, RuntimeError):
    """Fitting failed (a non-finite ELBO or parameter); the model keeps its last good state."""


class SaveFormatError(BayesPersonaError, ValueError):
    """A saved model cannot be read: wrong format version, truncated or tampered file."""


class ConvergenceWarning(UserWarning):
    """A fit ended at ``max_epochs`` while its objective was still improving."""


class MixingWarning(UserWarning):
    """A sampler's chain barely moved: its kept draws repeat, so they understate the
    posterior's spread (:func:`bayes_persona.diagnostics.refine.gibbs_draws`)."""
