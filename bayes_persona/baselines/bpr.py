"""BPR matrix factorisation (Rendle et al. 2009) in torch."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from bayes_persona.baselines._base import (
    BaseRecommender,
    sample_negatives,
    torch_threads,
)
from bayes_persona.data._validation import check_min_int, check_positive_float
from bayes_persona.exceptions import ModelFitError

__all__ = ["BPRMF"]

logger = logging.getLogger(__name__)


class BPRMF(BaseRecommender):
    """Matrix factorisation trained with the Bayesian Personalised Ranking loss.

    The score of (u, i) is ``p_u . q_i + b_i``. Each epoch visits every training pair
    (u, i) once in random order, pairs it with one uniform item ``j`` the user has not
    interacted with, and minimises ``-log sigmoid(x_ui - x_uj) + reg * (|p_u|^2 + |q_i|^2
    + |q_j|^2)`` (averaged over the mini-batch) with Adagrad.

    Parameters
    ----------
    factors : int, default 64
        Latent dimension.
    lr : float, default 0.05
        Adagrad learning rate (Adagrad suits the sparse row updates of BPR; Adam's
        momentum keeps moving rows absent from the batch).
    reg : float, default 1e-4
        L2 weight on the embeddings in the batch.
    epochs : int, default 50
        Passes over the training pairs.
    batch_size : int, default 1024
        Mini-batch size.
    random_state : int, Generator or None, default 0
        Seed of the initialisation and of the sampling.
    num_threads : int or None, default 1
        torch threads during ``fit`` (restored afterwards); ``None`` keeps torch's.

    Attributes
    ----------
    user_factors_ : ndarray of float64, shape ``(n_users, factors)``
    item_factors_ : ndarray of float64, shape ``(n_items, factors)``
    item_bias_ : ndarray of float64, shape ``(n_items,)``
    loss_history_ : list of float
        Mean training loss per epoch.
    user_vocab_, item_vocab_, train_csr_
        See :class:`~bayes_persona.baselines._base.BaseRecommender`.

    References
    ----------
    .. [1] Rendle, S., Freudenthaler, C., Gantner, Z. and Schmidt-Thieme, L. (2009).
       BPR: Bayesian Personalized Ranking from Implicit Feedback. UAI 2009.
    """

    def __init__(
        self,
        factors: int = 64,
        lr: float = 0.05,
        reg: float = 1e-4,
        epochs: int = 50,
        batch_size: int = 1024,
        random_state: Any = 0,
        num_threads: int | None = 1,
    ) -> None:
        self.factors = factors
        self.lr = lr
        self.reg = reg
        self.epochs = epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.num_threads = num_threads

    def _validate_params(self) -> None:
        check_min_int("factors", self.factors, 1)
        check_positive_float("lr", self.lr)
        check_positive_float("reg", self.reg, allow_zero=True)
        check_min_int("epochs", self.epochs, 1)
        check_min_int("batch_size", self.batch_size, 1)
        if self.num_threads is not None:
            check_min_int("num_threads", self.num_threads, 1)

    def _fit(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        with torch_threads(self.num_threads):
            self._train(X, rng)

    def _train(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        n_users, n_items = X.shape
        d = int(self.factors)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        U = torch.nn.Parameter(torch.randn(n_users, d, generator=gen) * 0.1)
        V = torch.nn.Parameter(torch.randn(n_items, d, generator=gen) * 0.1)
        b = torch.nn.Parameter(torch.zeros(n_items))
        opt = torch.optim.Adagrad([U, V, b], lr=float(self.lr))
        coo = X.tocoo()
        pos_u = coo.row.astype(np.int64)
        pos_i = coo.col.astype(np.int64)
        n_pos = len(pos_u)
        bs = int(self.batch_size)
        reg = float(self.reg)
        self.loss_history_: list[float] = []
        for epoch in range(int(self.epochs)):
            perm = rng.permutation(n_pos)
            neg = sample_negatives(X, pos_u[perm], 1, rng)[:, 0]
            total = 0.0
            for s in range(0, n_pos, bs):
                idx = perm[s : s + bs]
                u = torch.from_numpy(pos_u[idx])
                i = torch.from_numpy(pos_i[idx])
                j = torch.from_numpy(neg[s : s + bs])
                pu, qi, qj = U[u], V[i], V[j]
                x = (pu * (qi - qj)).sum(1) + b[i] - b[j]
                loss = (
                    -torch.nn.functional.logsigmoid(x).mean()
                    + reg * (pu.pow(2).sum(1) + qi.pow(2).sum(1) + qj.pow(2).sum(1)).mean()
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            mean_loss = total / n_pos
            if not np.isfinite(mean_loss):
                raise ModelFitError(
                    f"BPRMF loss became {mean_loss} at epoch {epoch}; lower lr (got {self.lr})"
                )
            self.loss_history_.append(mean_loss)
            logger.debug("BPRMF epoch %d loss %.5f", epoch, mean_loss)
        self.user_factors_ = U.detach().numpy().astype(np.float64)
        self.item_factors_ = V.detach().numpy().astype(np.float64)
        self.item_bias_ = b.detach().numpy().astype(np.float64)

    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_idx] @ self.item_factors_.T + self.item_bias_[None, :]
