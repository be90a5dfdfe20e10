"""Most-popular baseline."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bayes_persona.baselines._base import BaseRecommender

__all__ = ["MostPopular"]


class MostPopular(BaseRecommender):
    """Recommend the items with the most training users, the same list for everyone.

    The score of an item is the number of distinct training users who interacted with
    it; ties are broken by item index.

    Attributes
    ----------
    item_popularity_ : ndarray of float64, shape ``(n_items,)``
        Number of training users per item.
    user_vocab_, item_vocab_, train_csr_
        See :class:`~bayes_persona.baselines._base.BaseRecommender`.

    References
    ----------
    .. [1] Cremonesi, P., Koren, Y. and Turrin, R. (2010). Performance of recommender
       algorithms on top-N recommendation tasks. RecSys 2010.
    """

    def __init__(self) -> None:
        pass

    def _fit(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        self.item_popularity_ = np.asarray(X.sum(axis=0), dtype=np.float64).ravel()

    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:
        return np.tile(self.item_popularity_, (len(user_idx), 1))
