"""Baseline recommenders sharing the library's ``fit`` / ``recommend`` / ``score`` API.

* :class:`MostPopular` -- item popularity.
* :class:`EASE` -- Steck's (2019) closed-form item-item autoencoder.
* :class:`IALS` -- implicit ALS via the optional ``implicit`` package.
* :class:`BPRMF` -- BPR matrix factorisation in torch.
* :class:`AMPCF` -- attentive multi-persona CF (Barkan et al. 2020), point estimate.
"""

from __future__ import annotations

from bayes_persona.baselines._base import BaseRecommender
from bayes_persona.baselines.ampcf import AMPCF
from bayes_persona.baselines.bpr import BPRMF
from bayes_persona.baselines.ease import EASE
from bayes_persona.baselines.ials import IALS
from bayes_persona.baselines.popular import MostPopular

__all__ = ["AMPCF", "BASELINES", "BPRMF", "BaseRecommender", "EASE", "IALS", "MostPopular"]

#: The one registry of baselines, by short name: the CLI's ``--model`` choices and the
#: benchmark's models (which show them under longer labels) both look classes up here.
BASELINES: dict[str, type[BaseRecommender]] = {
    "popular": MostPopular,
    "ease": EASE,
    "ials": IALS,
    "bpr": BPRMF,
    "ampcf": AMPCF,
}
