"""PersonaRecommender passes the shared recommender contract (tests/contract.py)."""

from __future__ import annotations

from contract import RecommenderContract

import bayes_persona as bp


class TestPersonaRecommenderContract(RecommenderContract):
    # Fixed random_state: fitting and the posterior summaries (common random numbers per
    # user) are deterministic on CPU, and ``score`` is the ``score`` column of ``recommend``.
    deterministic = True
    score_matches_recommend = True
    scores_sorted = True

    def make_model(self) -> bp.PersonaRecommender:
        return bp.PersonaRecommender(
            n_personas=2, n_factors=8, max_epochs=5, batch_size=32, n_draws=20,
            progress=False, random_state=0,
        )  # fmt: skip
