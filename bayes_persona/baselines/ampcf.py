"""AMP-CF: Attentive Multi-Persona Collaborative Filtering (Barkan et al. 2020), point estimate."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from bayes_persona.baselines._base import (
    BaseRecommender,
    as_ratings,
    sample_negatives,
    torch_threads,
)
from bayes_persona.data._validation import check_min_int, check_positive_float
from bayes_persona.exceptions import DataValidationError, ModelFitError

__all__ = ["AMPCF"]

logger = logging.getLogger(__name__)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


class AMPCF(BaseRecommender):
    """Attentive Multi-Persona Collaborative Filtering, trained by maximum likelihood.

    Each user ``u`` has ``K`` persona vectors ``p_uk`` and each item a vector ``q_i``
    (dimension ``d``). For a candidate item the personas are weighted by the attention
    ``alpha_k(u, i) = softmax_k(p_uk . q_i)``; the attentive user vector is
    ``sum_k alpha_k p_uk`` and the score ``s(u, i) = (sum_k alpha_k p_uk) . q_i``.

    Training minimises, per positive pair (u, i) with ``n_negatives`` uniform items the
    user has not interacted with, ``a * CE + (1 - a) * (lambda_pos * H_pos - lambda_neg *
    H_neg)`` where ``CE`` is the sampled-softmax cross-entropy of the positive among
    itself and the negatives, ``H_pos`` the entropy of the attention on the positive
    (minimised: one persona explains a consumed item) and ``H_neg`` the mean entropy of the
    attention on the negatives (maximised: no persona claims them). Adam; optional early
    stopping on the validation NDCG@10 (full-catalogue ranking, seen items excluded).

    Parameters
    ----------
    n_personas : int, default 4
        ``K``, personas per user.
    factors : int, default 64
        ``d``, embedding dimension.
    a : float, default 0.5
        Weight of the cross-entropy against the entropy terms, in [0, 1].
    lambda_pos, lambda_neg : float, default 1.0
        Weights of the positive / negative attention entropies.
    n_negatives : int, default 4
        Uniform negatives per positive.
    lr : float, default 1e-3
        Adam learning rate.
    batch_size : int, default 256
        Positives per mini-batch.
    max_epochs : int, default 50
        Epochs at most.
    patience : int, default 5
        Evaluations without a better validation NDCG@10 before stopping (only with a
        validation set).
    reg : float, default 0.0
        L2 weight on the embeddings in each batch.
    init_std : float, default 0.1
        Standard deviation of the normal initialisation.
    random_state : int, Generator or None, default 0
        Seed of the initialisation and of the sampling.
    num_threads : int or None, default 1
        torch threads during ``fit`` (restored afterwards); ``None`` keeps torch's.

    Attributes
    ----------
    user_personas_ : ndarray of float64, shape ``(n_users, K, d)``
    item_factors_ : ndarray of float64, shape ``(n_items, d)``
    history_ : DataFrame
        One row per epoch: ``epoch``, ``loss``, ``ce``, ``h_pos``, ``h_neg`` and
        ``val_ndcg`` (NaN without a validation set).
    best_epoch_ : int
        Epoch (1-based) whose parameters were kept.
    user_vocab_, item_vocab_, train_csr_
        See :class:`~bayes_persona.baselines._base.BaseRecommender`.

    References
    ----------
    .. [1] Barkan, O., Fuchs, Y., Caciularu, A. and Koenigstein, N. (2020). Explainable
       Recommendations via Attentive Multi-Persona Collaborative Filtering. RecSys 2020.
    """

    def __init__(
        self,
        n_personas: int = 4,
        factors: int = 64,
        a: float = 0.5,
        lambda_pos: float = 1.0,
        lambda_neg: float = 1.0,
        n_negatives: int = 4,
        lr: float = 1e-3,
        batch_size: int = 256,
        max_epochs: int = 50,
        patience: int = 5,
        reg: float = 0.0,
        init_std: float = 0.1,
        random_state: Any = 0,
        num_threads: int | None = 1,
    ) -> None:
        self.n_personas = n_personas
        self.factors = factors
        self.a = a
        self.lambda_pos = lambda_pos
        self.lambda_neg = lambda_neg
        self.n_negatives = n_negatives
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.reg = reg
        self.init_std = init_std
        self.random_state = random_state
        self.num_threads = num_threads

    @property
    def _block_factor(self) -> int:  # type: ignore[override]
        return 3 * int(self.n_personas)

    def _validate_params(self) -> None:
        check_min_int("n_personas", self.n_personas, 1)
        check_min_int("factors", self.factors, 1)
        a = check_positive_float("a", self.a, allow_zero=True)
        if a > 1.0:
            raise DataValidationError(f"a must lie in [0, 1]; got {self.a}")
        check_positive_float("lambda_pos", self.lambda_pos, allow_zero=True)
        check_positive_float("lambda_neg", self.lambda_neg, allow_zero=True)
        check_min_int("n_negatives", self.n_negatives, 1)
        check_positive_float("lr", self.lr)
        check_min_int("batch_size", self.batch_size, 1)
        check_min_int("max_epochs", self.max_epochs, 1)
        check_min_int("patience", self.patience, 1)
        check_positive_float("reg", self.reg, allow_zero=True)
        check_positive_float("init_std", self.init_std)
        if self.num_threads is not None:
            check_min_int("num_threads", self.num_threads, 1)

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Any, items: Any = None, validation: Any = None) -> AMPCF:
        """Fit on implicit feedback, optionally early-stopping on a validation split.

        Parameters
        ----------
        train : DataFrame or Dataset
            Interactions with ``user_id``, ``item_id``; every row is a positive.
        items : DataFrame, optional
            Accepted for API compatibility and ignored.
        validation : DataFrame or Dataset, optional
            Held-out pairs (``user_id``, ``item_id``) cut from the training data (never
            the test set). Rows with users or items unseen in ``train`` are dropped. When
            given, training stops after ``patience`` epochs without a better NDCG@10 and
            the best epoch's parameters are kept.

        Returns
        -------
        self
        """
        self._validate_params()
        X = self._prepare(train)
        val = self._validation_frame(validation) if validation is not None else None
        with torch_threads(self.num_threads):
            self._fit(X, self._rng(), val)
        return self

    def _validation_frame(self, validation: Any) -> pd.DataFrame | None:
        v = as_ratings(validation, "validation")[["user_id", "item_id"]]
        u_ok = pd.Index(self.user_vocab_.ids)
        i_ok = pd.Index(self.item_vocab_.ids)
        keep = v["user_id"].isin(u_ok) & v["item_id"].isin(i_ok)
        if (~keep).any():
            logger.info(
                "AMPCF: dropped %d validation rows with users/items unseen in train",
                int((~keep).sum()),
            )
        v = v[keep]
        if v.empty:
            logger.warning("AMPCF: no usable validation rows; training without early stopping")
            return None
        return v

    def _fit(
        self, X: sp.csr_matrix, rng: np.random.Generator, validation: pd.DataFrame | None = None
    ) -> None:
        from bayes_persona.evaluation import ndcg

        n_users, n_items = X.shape
        K, d = int(self.n_personas), int(self.factors)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        std = float(self.init_std)
        P = torch.nn.Parameter(torch.randn(n_users, K, d, generator=gen) * std)
        Q = torch.nn.Parameter(torch.randn(n_items, d, generator=gen) * std)
        opt = torch.optim.Adam([P, Q], lr=float(self.lr))
        coo = X.tocoo()
        pos_u = coo.row.astype(np.int64)
        pos_i = coo.col.astype(np.int64)
        n_pos = len(pos_u)
        bs, n_neg = int(self.batch_size), int(self.n_negatives)
        a, lp, ln, reg = (
            float(self.a),
            float(self.lambda_pos),
            float(self.lambda_neg),
            float(self.reg),
        )
        val_users = None if validation is None else pd.unique(validation["user_id"])

        rows: list[dict[str, float]] = []
        best = (-np.inf, None, 0)
        bad_evals = 0
        for epoch in range(1, int(self.max_epochs) + 1):
            perm = rng.permutation(n_pos)
            negs = sample_negatives(X, pos_u[perm], n_neg, rng)
            sums = np.zeros(4)
            for s in range(0, n_pos, bs):
                idx = perm[s : s + bs]
                u = torch.from_numpy(pos_u[idx])
                cand = torch.from_numpy(
                    np.concatenate([pos_i[idx][:, None], negs[s : s + bs]], axis=1)
                )
                pu = P[u]  # (B, K, d)
                qc = Q[cand]  # (B, C, d)
                logits = torch.einsum("bkd,bcd->bck", pu, qc)
                log_alpha = torch.log_softmax(logits, dim=-1)
                alpha = log_alpha.exp()
                scores = (alpha * logits).sum(-1)  # (B, C)
                ent = -(alpha * log_alpha).sum(-1)  # (B, C)
                ce = torch.nn.functional.cross_entropy(
                    scores, torch.zeros(len(idx), dtype=torch.long)
                )
                h_pos = ent[:, 0].mean()
                h_neg = ent[:, 1:].mean()
                loss = a * ce + (1.0 - a) * (lp * h_pos - ln * h_neg)
                if reg > 0:
                    loss = loss + reg * (
                        pu.pow(2).sum((1, 2)).mean() + qc.pow(2).sum((1, 2)).mean()
                    )
                opt.zero_grad()
                loss.backward()
                opt.step()
                sums += len(idx) * np.array(
                    [
                        float(loss.detach()),
                        float(ce.detach()),
                        float(h_pos.detach()),
                        float(h_neg.detach()),
                    ]
                )
            means = sums / n_pos
            if not np.all(np.isfinite(means)):
                raise ModelFitError(
                    f"AMPCF loss became non-finite at epoch {epoch}; lower lr (got {self.lr})"
                )
            self.user_personas_ = P.detach().numpy().astype(np.float64)
            self.item_factors_ = Q.detach().numpy().astype(np.float64)
            val_ndcg = float("nan")
            if validation is not None:
                recs = self.recommend(val_users, n=10, exclude_seen=True)
                val_ndcg = float(ndcg(recs, validation, 10))
                if val_ndcg > best[0]:
                    best = (val_ndcg, (self.user_personas_, self.item_factors_), epoch)
                    bad_evals = 0
                else:
                    bad_evals += 1
            rows.append(
                {
                    "epoch": epoch,
                    "loss": means[0],
                    "ce": means[1],
                    "h_pos": means[2],
                    "h_neg": means[3],
                    "val_ndcg": val_ndcg,
                }
            )
            logger.debug("AMPCF epoch %d loss %.5f val_ndcg %.4f", epoch, means[0], val_ndcg)
            if validation is not None and bad_evals >= int(self.patience):
                logger.info("AMPCF: early stop at epoch %d (best %d)", epoch, best[2])
                break
        if best[1] is not None:
            self.user_personas_, self.item_factors_ = best[1]
            self.best_epoch_ = int(best[2])
        else:
            self.best_epoch_ = len(rows)
        self.history_ = pd.DataFrame(rows)

    # ------------------------------------------------------------------ scoring
    def _logits_block(self, user_idx: np.ndarray) -> np.ndarray:
        """Persona-item affinities, shape ``(len(user_idx), K, n_items)``."""
        return self.user_personas_[user_idx] @ self.item_factors_.T

    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:
        L = self._logits_block(user_idx)
        return (_softmax(L, axis=1) * L).sum(axis=1)

    def persona_attention(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Attention of each user's personas on an item, pairwise.

        Parameters
        ----------
        user_ids, item_ids : array-like, same length
            Users and items seen in training; row ``j`` is for
            ``(user_ids[j], item_ids[j])``.

        Returns
        -------
        ndarray of float64, shape ``(n_pairs, K)``
            ``alpha_k(u, i) = softmax_k(p_uk . q_i)``; rows sum to 1.

        Raises
        ------
        NotFittedError, UnknownIdError, DataValidationError
            As :meth:`score`.
        """
        self._check_fitted()
        u, i = self._encode_pairs(user_ids, item_ids)
        L = np.einsum("nkd,nd->nk", self.user_personas_[u], self.item_factors_[i])
        return _softmax(L, axis=1) if len(u) else np.empty((0, int(self.n_personas)))
