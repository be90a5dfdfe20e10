"""Implicit ALS (Hu, Koren and Volinsky 2008) through the ``implicit`` package."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from bayes_persona.baselines._base import BaseRecommender
from bayes_persona.data._validation import check_min_int, check_positive_float

__all__ = ["IALS"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "IALS needs the optional dependency 'implicit' (>=0.7); install it with "
    "`pip install bayes_persona[bench]`"
)


def _als_class() -> Any:
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return AlternatingLeastSquares


class IALS(BaseRecommender):
    """Weighted matrix factorisation for implicit feedback, fit by alternating least squares.

    A thin wrapper of ``implicit.cpu.als.AlternatingLeastSquares`` (conjugate-gradient
    solver); the score of (u, i) is ``user_factors_[u] @ item_factors_[i]``.

    Parameters
    ----------
    factors : int, default 64
        Latent dimension.
    regularization : float, default 0.01
        L2 regularisation of the factors.
    alpha : float, default 1.0
        Confidence weight of the positives (``implicit``'s ``alpha``).
    iterations : int, default 15
        ALS sweeps.
    random_state : int, Generator or None, default 0
        Seed of the factor initialisation.
    num_threads : int, default 1
        Threads of ``implicit`` (BLAS is held at one thread during fit); 1 keeps runs
        reproducible.

    Attributes
    ----------
    user_factors_ : ndarray of float64, shape ``(n_users, factors)``
    item_factors_ : ndarray of float64, shape ``(n_items, factors)``
    user_vocab_, item_vocab_, train_csr_
        See :class:`~bayes_persona.baselines._base.BaseRecommender`.

    Raises
    ------
    ImportError
        From ``fit`` when ``implicit`` is not installed.

    References
    ----------
    .. [1] Hu, Y., Koren, Y. and Volinsky, C. (2008). Collaborative Filtering for
       Implicit Feedback Datasets. ICDM 2008.
    .. [2] Rendle, S., Krichene, W., Zhang, L. and Koren, Y. (2022). Revisiting the
       Performance of iALS on Item Recommendation Benchmarks. RecSys 2022.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: Any = 0,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def _validate_params(self) -> None:
        check_min_int("factors", self.factors, 1)
        check_positive_float("regularization", self.regularization, allow_zero=True)
        check_positive_float("alpha", self.alpha)
        check_min_int("iterations", self.iterations, 1)
        check_min_int("num_threads", self.num_threads, 1)

    def _fit(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        als_cls = _als_class()
        seed = int(rng.integers(0, 2**31 - 1))
        limits: Any = contextlib.nullcontext()
        try:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=1, user_api="blas")
        except ImportError:  # pragma: no cover - threadpoolctl ships with implicit's deps
            pass
        with limits:  # implicit checks the BLAS threads when built and when fitting
            model = als_cls(
                factors=int(self.factors),
                regularization=float(self.regularization),
                alpha=float(self.alpha),
                iterations=int(self.iterations),
                random_state=seed,
                num_threads=int(self.num_threads),
            )
            model.fit(X.astype(np.float32).tocsr(), show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float64)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float64)

    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_idx] @ self.item_factors_.T
