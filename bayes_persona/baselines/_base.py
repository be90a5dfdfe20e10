"""Shared plumbing of the baseline recommenders.

:class:`BaseRecommender` does the input handling (a ratings frame or a Dataset), builds
the user and item vocabularies and the binary train CSR, and implements ``recommend``
and ``score`` on top of one method a subclass provides, ``_score_block(user_idx)``, which
returns the dense scores of a chunk of users over the whole catalogue. Recommending works
on chunks of users (never a dense users x items matrix for all users at once), excludes
seen items through the train CSR and breaks score ties by item index, so results are
deterministic and identical whether users are asked for one at a time or in a batch.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bayes_persona.data import Vocabulary
from bayes_persona.data._validation import check_min_int, id_frame
from bayes_persona.exceptions import (
    DataTypeError,
    DataValidationError,
    NotFittedError,
)

__all__ = [
    "BaseRecommender",
    "as_ratings",
    "make_vocabulary",
    "sample_negatives",
    "torch_threads",
]

logger = logging.getLogger(__name__)


def make_vocabulary(ids: Any, name: str) -> Vocabulary:
    """:class:`~bayes_persona.data.Vocabulary` of the distinct ``ids`` (sorted)."""
    return Vocabulary.from_ids(np.asarray(ids), name=name)


def as_ratings(data: Any, name: str = "train") -> pd.DataFrame:
    """Return the ratings frame of ``data`` (a DataFrame or an object with ``.ratings``).

    Raises
    ------
    DataTypeError
        ``data`` is neither a DataFrame nor has a DataFrame ``.ratings``.
    DataValidationError
        ``user_id`` or ``item_id`` is missing or holds missing values, or the frame is empty.
    """
    return id_frame(data, name, non_empty=True)


def _id_array(ids: Any, name: str) -> np.ndarray:
    """1-d array of ids from a scalar or an array-like."""
    if isinstance(ids, str | bytes) or np.isscalar(ids):
        return np.asarray([ids])
    if isinstance(ids, pd.Series | pd.Index):
        arr = ids.to_numpy()
    elif isinstance(ids, np.ndarray):
        arr = ids
    elif isinstance(ids, Iterable):
        arr = np.asarray(list(ids))
    else:
        raise DataTypeError(
            f"{name} must be an id or a 1-d array-like of ids; got {type(ids).__name__}"
        )
    if arr.ndim != 1:
        raise DataValidationError(f"{name} must be 1-d; got shape {arr.shape}")
    return arr


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the old value after.

    Small embedding models train much faster on one thread (no synchronisation between
    tiny kernels, no contention on a shared machine), and one thread is reproducible.
    ``None`` leaves torch's setting alone.
    """
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sample_negatives(
    csr: sp.csr_matrix,
    users: np.ndarray,
    n: int,
    rng: np.random.Generator,
    max_rounds: int = 20,
) -> np.ndarray:
    """Draw ``n`` uniform items per entry of ``users`` that the user has not interacted with.

    Rejection sampling against the user's row of ``csr``; after ``max_rounds`` the
    remaining draws are kept as they are (only users who saw almost every item get there).

    Returns
    -------
    ndarray of int64, shape ``(len(users), n)``
    """
    n_items = csr.shape[1]
    keys = _pair_keys(csr)
    users = np.asarray(users, dtype=np.int64)
    out = rng.integers(0, n_items, size=(len(users), n))
    for _ in range(max_rounds):
        bad = _in_keys(keys, users[:, None] * n_items + out)
        if not bad.any():
            break
        out[bad] = rng.integers(0, n_items, size=int(bad.sum()))
    return out


def _pair_keys(csr: sp.csr_matrix) -> np.ndarray:
    """Sorted ``row * n_cols + col`` keys of the nonzeros of a canonical CSR."""
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    return rows * csr.shape[1] + csr.indices.astype(np.int64)


def _in_keys(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(query.shape, dtype=bool)
    pos = np.searchsorted(sorted_keys, query)
    pos = np.minimum(pos, sorted_keys.size - 1)
    return sorted_keys[pos] == query


class BaseRecommender:
    """Base class of the baselines: fit on implicit feedback, recommend and score.

    Subclasses store their hyperparameters in ``__init__`` (and nothing else), implement
    ``_fit(X, rng)`` on the binary users x items CSR ``X`` and ``_score_block(user_idx)``
    returning a dense ``(len(user_idx), n_items)`` array of scores. Every training row is
    a positive; duplicate (user, item) rows count once.

    Attributes
    ----------
    user_vocab_, item_vocab_ : Vocabulary
        Id <-> index maps of the training users and items.
    train_csr_ : scipy.sparse.csr_matrix
        Binary users x items matrix of the training interactions.
    """

    #: Elements of one dense score block are at most this (times ``_block_factor``).
    _block_budget: int = 2**22
    #: Extra memory factor of ``_score_block`` per (user, item) (e.g. personas).
    _block_factor: int = 1

    # ------------------------------------------------------------------ params
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters as passed to ``__init__`` (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> BaseRecommender:
        """Set hyperparameters (scikit-learn convention); returns ``self``."""
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise DataValidationError(
                    f"{key!r} is not a parameter of {type(self).__name__}; expected one of "
                    f"{sorted(valid)}"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    def _validate_params(self) -> None:
        """Check hyperparameters; subclasses extend."""

    def _prepare(self, train: Any) -> sp.csr_matrix:
        """Validate ``train``, build vocabularies and the train CSR."""
        df = as_ratings(train, "train")
        user_vocab = make_vocabulary(df["user_id"].to_numpy(), "user_id")
        item_vocab = make_vocabulary(df["item_id"].to_numpy(), "item_id")
        u = user_vocab.encode(df["user_id"].to_numpy())
        i = item_vocab.encode(df["item_id"].to_numpy())
        X = sp.csr_matrix(
            (np.ones(len(u), dtype=np.float64), (u, i)), shape=(len(user_vocab), len(item_vocab))
        )
        X.sum_duplicates()
        X.data[:] = 1.0
        X.sort_indices()
        self.user_vocab_ = user_vocab
        self.item_vocab_ = item_vocab
        self.train_csr_ = X
        logger.info(
            "%s: %d users, %d items, %d interactions",
            type(self).__name__,
            X.shape[0],
            X.shape[1],
            X.nnz,
        )
        return X

    def fit(self, train: Any, items: Any = None) -> BaseRecommender:
        """Fit on implicit feedback.

        Parameters
        ----------
        train : DataFrame or Dataset
            Interactions with columns ``user_id``, ``item_id`` (a ``rating`` column is
            ignored: every row is a positive).
        items : DataFrame, optional
            Item metadata; accepted for API compatibility and ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        X = self._prepare(train)
        self._fit(X, self._rng())
        return self

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(getattr(self, "random_state", None))

    def _fit(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:  # pragma: no cover
        raise NotImplementedError

    def _score_block(self, user_idx: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not hasattr(self, "item_vocab_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(train) first"
            )

    def _encode_users(self, user_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        arr = _id_array(user_ids, "user_ids")
        if arr.size == 0:
            return arr, np.empty(0, dtype=np.int64)
        return arr, np.asarray(self.user_vocab_.encode(arr), dtype=np.int64)

    def _encode_items(self, item_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        arr = _id_array(item_ids, "item_ids")
        if arr.size == 0:
            return arr, np.empty(0, dtype=np.int64)
        return arr, np.asarray(self.item_vocab_.encode(arr), dtype=np.int64)

    def _encode_pairs(self, user_ids: Any, item_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Indices of pairs ``(user_ids[j], item_ids[j])``; the arrays must match in length."""
        _, u = self._encode_users(user_ids)
        _, i = self._encode_items(item_ids)
        if len(u) != len(i):
            raise DataValidationError(
                "user_ids and item_ids must have the same length (pairwise scores); got "
                f"{len(u)} and {len(i)}"
            )
        return u, i

    def _chunk_size(self) -> int:
        n_items = max(1, len(self.item_vocab_))
        return max(1, self._block_budget // (n_items * max(1, self._block_factor)))

    def _scores(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of a chunk of users as float32 (so equal inputs give equal ranks)."""
        S = np.asarray(self._score_block(user_idx), dtype=np.float64)
        if np.isnan(S).any():
            logger.warning("%s produced NaN scores; ranking them last", type(self).__name__)
            S = np.where(np.isnan(S), -np.inf, S)
        return S.astype(np.float32)

    # ------------------------------------------------------------------ public API
    def recommend(self, user_ids: Any, n: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``n`` items for each user.

        Parameters
        ----------
        user_ids : id or array-like of ids
            Users seen in training; repeats are returned once, in first-seen order.
        n : int, default 10
            List length, positive; a user gets fewer items when fewer are left.
        exclude_seen : bool, default True
            Leave out the user's training items.

        Returns
        -------
        DataFrame
            Columns ``user_id``, ``rank`` (1..n), ``item_id``, ``score``; ties in score
            are broken by item index.

        Raises
        ------
        NotFittedError
            Called before ``fit``.
        UnknownIdError
            A user was not in the training data.
        DataValidationError
            ``n`` is not positive.
        """
        self._check_fitted()
        n = check_min_int("n", n, 1)
        arr, codes = self._encode_users(user_ids)
        if arr.size:
            _, first = np.unique(codes, return_index=True)
            keep = np.sort(first)
            arr, codes = arr[keep], codes[keep]
        n_items = len(self.item_vocab_)
        nn = min(n, n_items)
        chunk = self._chunk_size()
        out_u, out_r, out_i, out_s = [], [], [], []
        for start in range(0, len(codes), chunk):
            block_codes = codes[start : start + chunk]
            S = self._scores(block_codes)
            if exclude_seen:
                sub = self.train_csr_[block_codes]
                rows = np.repeat(np.arange(len(block_codes)), np.diff(sub.indptr))
                S[rows, sub.indices] = -np.inf
            for r in range(len(block_codes)):
                s = S[r]
                if nn < n_items:
                    part = np.argpartition(-s, nn - 1)[:nn]
                    thr = s[part].min()
                    cand = np.flatnonzero(s >= thr)
                else:
                    cand = np.arange(n_items)
                order = cand[np.lexsort((cand, -s[cand]))][:nn]
                if exclude_seen:
                    order = order[s[order] > -np.inf]
                out_u.append(np.full(len(order), start + r, dtype=np.int64))
                out_r.append(np.arange(1, len(order) + 1, dtype=np.int64))
                out_i.append(order)
                out_s.append(s[order].astype(np.float64))
        if out_u:
            pos = np.concatenate(out_u)
            items = np.concatenate(out_i)
            return pd.DataFrame(
                {
                    "user_id": arr[pos],
                    "rank": np.concatenate(out_r),
                    "item_id": self.item_vocab_.decode(items),
                    "score": np.concatenate(out_s),
                }
            )
        return pd.DataFrame(
            {
                "user_id": arr[:0],
                "rank": np.empty(0, dtype=np.int64),
                "item_id": np.asarray(self.item_vocab_.ids)[:0],
                "score": np.empty(0, dtype=np.float64),
            }
        )

    def score(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Pairwise scores: ``out[j]`` is the score of ``user_ids[j]`` for ``item_ids[j]``.

        The values equal the ``score`` column of :meth:`recommend`.

        Parameters
        ----------
        user_ids, item_ids : array-like, same length
            Users and items seen in training.

        Returns
        -------
        ndarray of float64, shape ``(len(user_ids),)``

        Raises
        ------
        NotFittedError
            Called before ``fit``.
        UnknownIdError
            A user or an item was not in the training data.
        DataValidationError
            The two arrays differ in length.
        """
        self._check_fitted()
        u, i = self._encode_pairs(user_ids, item_ids)
        out = np.empty(len(u), dtype=np.float64)
        if len(u) == 0:
            return out
        uniq, inv = np.unique(u, return_inverse=True)
        chunk = self._chunk_size()
        for start in range(0, len(uniq), chunk):
            stop = min(start + chunk, len(uniq))
            S = self._scores(uniq[start:stop])
            sel = (inv >= start) & (inv < stop)
            out[sel] = S[inv[sel] - start, i[sel]]
        return out
