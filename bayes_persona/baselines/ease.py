"""EASE: the embarrassingly shallow autoencoder (Steck 2019)."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from bayes_persona.baselines._base import BaseRecommender
from bayes_persona.data._validation import check_min_int, check_positive_float
from bayes_persona.exceptions import DataValidationError

__all__ = ["EASE"]

logger = logging.getLogger(__name__)


class EASE(BaseRecommender):
    """Embarrassingly Shallow Autoencoder, an item-item linear model in closed form.

    With the binary users x items matrix ``X``, ``P = (X^T X + l2 I)^{-1}`` and
    ``B = I - P / diag(P)`` (each column ``j`` divided by ``P_jj``), so ``diag(B) = 0``;
    the scores of user ``u`` are ``X_u B``.

    Parameters
    ----------
    l2 : float, default 500.0
        L2 regularisation, positive (a few hundred suits MovieLens-sized data).
    max_items : int, default 20000
        Largest catalogue accepted: ``B`` is a dense ``n_items x n_items`` matrix
        (8 bytes per entry; 20k items take 3.2 GB).

    Attributes
    ----------
    B_ : ndarray of float64, shape ``(n_items, n_items)``
        Item-item weights with zero diagonal.
    user_vocab_, item_vocab_, train_csr_
        See :class:`~bayes_persona.baselines._base.BaseRecommender`.

    Raises
    ------
    DataValidationError
        From ``fit``: the catalogue has more than ``max_items`` items, or a bad parameter.

    References
    ----------
    .. [1] Steck, H. (2019). Embarrassingly Shallow Autoencoders for Sparse Data.
       WWW 2019.
    """

    def __init__(self, l2: float = 500.0, max_items: int = 20000) -> None:
        self.l2 = l2
        self.max_items = max_items

    def _validate_params(self) -> None:
        check_positive_float("l2", self.l2)
        check_min_int("max_items", self.max_items, 1)

    def _fit(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        n_items = X.shape[1]
        if n_items > self.max_items:
            raise DataValidationError(
                f"EASE builds a dense n_items x n_items matrix; train has {n_items} items but "
                f"max_items={self.max_items}. Filter the catalogue (e.g. k-core) or raise "
                f"max_items if {n_items}^2 * 8 bytes fits in memory"
            )
        G = (X.T @ X).toarray().astype(np.float64)
        G[np.diag_indices(n_items)] += float(self.l2)
        P = np.linalg.inv(G)
        B = P / (-np.diag(P))[None, :]
        B[np.diag_indices(n_items)] = 0.0
        self.B_ = B
        logger.info("EASE fitted: %d items, l2=%g", n_items, self.l2)

    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.train_csr_[user_idx] @ self.B_)
