"""Diagnostics of a fitted persona model: ArviZ export, checks, calibration and plots.

This package holds the ArviZ export of the posterior and its predictive draws
(:mod:`~bayes_persona.diagnostics.inference_data`), the posterior and prior predictive
checks (:mod:`~bayes_persona.diagnostics.ppc`), model comparison by held-out predictive
density (:mod:`~bayes_persona.diagnostics.comparison`), simulation-based calibration of
the guides (:mod:`~bayes_persona.diagnostics.sbc`), persona recovery on planted data
(:mod:`~bayes_persona.diagnostics.recovery`), each user's term of the fit's objective
(:mod:`~bayes_persona.diagnostics.evidence`) and the plots
(:mod:`~bayes_persona.diagnostics.plotting`). The submodules load on first use, so that
importing one does not import the others (plotting needs matplotlib, the rest torch).
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("comparison", "evidence", "inference_data", "plotting", "ppc", "recovery", "sbc")

#: Public functions re-exported here, by the submodule that defines them.
_LAZY = {
    "to_inference_data": "inference_data",
    "explanation_inference_data": "inference_data",
    "posterior_predictive_checks": "ppc",
    "prior_predictive_checks": "ppc",
    "persona_recovery": "recovery",
    "user_elbo": "evidence",
    "persona_count_evidence": "evidence",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES) | set(_LAZY))


__all__ = [*_LAZY]
