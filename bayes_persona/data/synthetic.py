"""Planted-persona data: a world whose users have known tastes.

The generator follows the same story as :class:`bayes_persona.PersonaRecommender`'s
implicit-feedback likelihood, so that the truth it returns is the truth the model is
trying to recover:

1. Each taste t (named like a genre) has a direction ``c_t`` in R^d (unit vectors).
2. Each item belongs to one taste, or with probability ``multi_taste_prob`` to two; its
   factor is ``q_i = item_scale * mean(c_t for its tastes, renormalised) + noise`` and its
   popularity bias ``b_i ~ Normal(0, bias_scale)``. Its categories are its tastes' names.
3. Each user has ``m`` tastes (``tastes_per_user`` range, uniform), chosen uniformly,
   with mixture weights ``w ~ Dirichlet(weight_concentration)`` redrawn until every
   weight is at least ``min_weight`` (so that every planted taste is visible in the data).
   Taste ``t`` of user ``u`` is a persona vector ``p_ut = user_scale * c_t + noise``.
4. Each interaction draws a taste ``z ~ Categorical(w_u)`` and then an item
   ``i ~ softmax_j(p_uz . q_j + b_j)``; an item the user already has is redrawn
   (users do not pick an item twice).

The truth holds the generating parameters and, for every interaction, the taste that
generated it; :meth:`SyntheticTruth.persona_posterior` gives the generating
``P(z = k | u, i)``, proportional to ``w_uk * softmax_k(i)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from bayes_persona.data._validation import check_int_range as _check_range
from bayes_persona.data._validation import check_min_int
from bayes_persona.data.dataset import Dataset
from bayes_persona.exceptions import DataValidationError

__all__ = ["make_synthetic", "planted_interactions", "SyntheticData", "SyntheticTruth", "TASTE_NAMES"]

logger = logging.getLogger(__name__)

TASTE_NAMES = (
    "Horror", "Comedy", "Drama", "Sci-Fi", "Romance", "Western", "Documentary",
    "Animation", "Thriller", "Musical", "War", "Film-Noir", "Fantasy", "Crime",
    "Adventure", "Mystery",
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticTruth:
    """The generating parameters of a planted-persona world.

    Attributes
    ----------
    taste_names : list of str, length T
    user_ids : ndarray, shape (U,)
        External user ids, in the row order of the arrays below.
    item_ids : ndarray, shape (I,)
        External item ids, in the row order of ``item_factors``.
    user_tastes : DataFrame
        One row per (user, planted taste): ``user_id``, ``slot`` (0..m-1), ``taste``,
        ``weight``.
    interactions : DataFrame
        One row per interaction, aligned with ``Dataset.ratings``: ``user_id``,
        ``item_id``, ``taste`` (name) and ``slot`` (the user's taste slot that drew it).
    item_factors : ndarray, shape (I, d)
    item_bias : ndarray, shape (I,)
    persona_factors : ndarray, shape (U, M, d)
        Persona vector of each user's taste slot (zeros where ``slot >= m_u``).
    persona_weights : ndarray, shape (U, M)
        Mixture weight of each slot (zeros where unused); rows sum to one.
    """

    taste_names: list[str]
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_tastes: pd.DataFrame
    interactions: pd.DataFrame
    item_factors: np.ndarray
    item_bias: np.ndarray
    persona_factors: np.ndarray
    persona_weights: np.ndarray

    @property
    def n_tastes_per_user(self) -> pd.Series:
        """Number of planted tastes of each user, indexed by ``user_id``."""
        return self.user_tastes.groupby("user_id").size()

    def persona_logits(self) -> np.ndarray:
        """``log softmax_j(p_uk . q_j + b_j)`` for every user, slot and item, shape (U, M, I)."""
        logits = np.einsum("umd,id->umi", self.persona_factors, self.item_factors)
        logits += self.item_bias[None, None, :]
        return logits - logsumexp(logits, axis=-1, keepdims=True)

    def persona_posterior(self, user_ids: Sequence, item_ids: Sequence) -> np.ndarray:
        """Generating ``P(z = slot | u, i)`` for pairs ``(user_ids[j], item_ids[j])``.

        Returns
        -------
        ndarray, shape (n_pairs, M)
            Zero for the slots a user does not have.
        """
        u = _positions(self.user_ids, user_ids, "user_ids")
        i = _positions(self.item_ids, item_ids, "item_ids")
        log_softmax = self._log_softmax_pairs(u, i)  # (n, M)
        with np.errstate(divide="ignore"):
            log_w = np.log(self.persona_weights[u])
        joint = log_w + log_softmax
        post = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
        return np.where(self.persona_weights[u] > 0, post, 0.0)

    def log_likelihood(self, user_ids: Sequence, item_ids: Sequence) -> np.ndarray:
        """Generating ``log P(i | u) = log sum_k w_uk softmax_k(i)`` per pair, shape (n,)."""
        u = _positions(self.user_ids, user_ids, "user_ids")
        i = _positions(self.item_ids, item_ids, "item_ids")
        with np.errstate(divide="ignore"):
            log_w = np.log(self.persona_weights[u])
        return logsumexp(log_w + self._log_softmax_pairs(u, i), axis=1)

    @cached_property
    def _log_norm(self) -> np.ndarray:
        """``log sum_j exp(p_uk . q_j + b_j)``, shape (U, M); computed once."""
        out = np.empty(self.persona_weights.shape)
        for s in range(0, len(out), 256):
            logits = np.einsum("umd,id->umi", self.persona_factors[s : s + 256], self.item_factors)
            out[s : s + 256] = logsumexp(logits + self.item_bias, axis=-1)
        return out

    def _log_softmax_pairs(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        log_norm = self._log_norm
        pair = np.einsum("nmd,nd->nm", self.persona_factors[u], self.item_factors[i])
        pair += self.item_bias[i][:, None]
        return pair - log_norm[u]


@dataclass(frozen=True)
class SyntheticData:
    """A planted-persona :class:`Dataset` and the :class:`SyntheticTruth` behind it."""

    dataset: Dataset
    truth: SyntheticTruth

    def __iter__(self):  # allows ``dataset, truth = make_synthetic(...)``
        return iter((self.dataset, self.truth))


def _positions(all_ids: np.ndarray, ids: Sequence, name: str) -> np.ndarray:
    index = pd.Index(all_ids)
    pos = index.get_indexer(np.asarray(ids))
    if (pos < 0).any():
        bad = np.asarray(ids)[pos < 0][:5].tolist()
        raise DataValidationError(f"{name}: unknown ids {bad}")
    return pos


def _planted_items(
    rng: np.random.Generator,
    n_tastes: int,
    n_items: int,
    n_dims: int,
    item_scale: float,
    noise: float,
    bias_scale: float,
    multi_taste_prob: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2 of the story: taste directions and the items around them.

    Returns
    -------
    centers : ndarray, shape (n_tastes, n_dims)
        Unit taste directions ``c_t``.
    primary, second : ndarray of int, shape (n_items,)
        Each item's taste, and its second taste where ``has_second``.
    has_second : ndarray of bool, shape (n_items,)
    item_factors : ndarray, shape (n_items, n_dims)
    item_bias : ndarray, shape (n_items,)
    """
    centers = rng.normal(size=(n_tastes, n_dims))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    # Items: one taste, or two with probability multi_taste_prob.
    primary = rng.integers(n_tastes, size=n_items)
    has_second = (rng.random(n_items) < multi_taste_prob) & (n_tastes > 1)
    second = (primary + rng.integers(1, max(n_tastes, 2), size=n_items)) % n_tastes
    direction = centers[primary].copy()
    direction[has_second] += centers[second[has_second]]
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    item_factors = item_scale * direction + noise * rng.normal(size=(n_items, n_dims))
    item_bias = bias_scale * rng.normal(size=n_items)
    return centers, primary, second, has_second, item_factors, item_bias


def planted_interactions(
    n_interactions: int,
    n_items: int,
    n_tastes: int = 8,
    per_user: tuple[int, int] = (5, 15),
    seed: int = 0,
    n_dims: int = 16,
    user_scale: float = 3.0,
    item_scale: float = 2.5,
    noise: float = 0.3,
    bias_scale: float = 0.5,
) -> pd.DataFrame:
    """The story of :func:`make_synthetic` at any size: about ``n_interactions`` rows, vectorised.

    Items as in :func:`make_synthetic` (one taste each); a user has 1-3 tastes with
    Dirichlet(5) weights and ``per_user`` interactions (uniform). Its personas sit *at* their
    taste directions (``user_scale * c_t``, no per-user noise) and picks may repeat before
    the repeated pairs are dropped, so every pick is a draw from one of ``n_tastes``
    softmaxes, made for all users at once by inverse CDF: cost
    ``O(n_interactions + n_tastes x n_items)``, no per-user loop and no users x items
    matrix. For worlds of millions of rows (the scale benchmark); :func:`make_synthetic`
    returns the truth and is the one to recover.

    Returns
    -------
    DataFrame
        ``user_id`` (1..), ``item_id`` (10001..), sorted by user; slightly fewer than
        ``n_interactions`` rows (repeats dropped).
    """
    rng = np.random.default_rng(seed)
    lo, hi = per_user
    n_users = max(1, round(n_interactions / ((lo + hi) / 2)))
    centers, _, _, _, q, b = _planted_items(rng, n_tastes, n_items, n_dims, item_scale, noise, bias_scale, 0.0)
    logits = user_scale * centers @ q.T + b  # (T, N)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    cum = np.cumsum(probs / probs.sum(1, keepdims=True), axis=1)
    cum[:, -1] = 1.0

    # Users: 1-3 distinct tastes and their weights.
    m = rng.integers(1, min(3, n_tastes) + 1, size=n_users)
    tastes = np.argsort(rng.random((n_users, n_tastes)), axis=1)[:, :3]
    w = rng.gamma(5.0, size=(n_users, 3)) * (np.arange(3)[None, :] < m[:, None])
    w /= w.sum(1, keepdims=True)
    counts = rng.integers(lo, hi + 1, size=n_users)
    user = np.repeat(np.arange(n_users), counts)
    slot = (rng.random(len(user))[:, None] > np.cumsum(w, 1)[user]).sum(1)
    slot = np.minimum(slot, m[user] - 1)
    z = tastes[user, slot]
    # Item given taste: inverse CDF on the taste's row, all rows in one searchsorted.
    offset = np.arange(n_tastes, dtype=np.float64)[:, None]
    item = np.searchsorted((cum + offset).ravel(), z + rng.random(len(z)), side="right") - z * n_items
    item = np.clip(item, 0, n_items - 1)
    key = np.unique(user.astype(np.int64) * n_items + item)
    return pd.DataFrame({"user_id": key // n_items + 1, "item_id": key % n_items + 10001})


def make_synthetic(
    n_users: int = 500,
    n_items: int = 800,
    n_tastes: int = 6,
    tastes_per_user: tuple[int, int] = (1, 3),
    interactions_per_user: tuple[int, int] = (20, 200),
    seed: int = 0,
    *,
    n_dims: int | None = None,
    user_scale: float = 3.0,
    item_scale: float = 2.5,
    noise: float = 0.3,
    bias_scale: float = 0.5,
    multi_taste_prob: float = 0.3,
    weight_concentration: float = 5.0,
    min_weight: float = 0.15,
) -> SyntheticData:
    """Make a planted-persona world: users with 1-3 known tastes and the items they pick.

    Parameters
    ----------
    n_users, n_items, n_tastes : int
        Sizes. Tastes are named like genres (``"Horror"``, ``"Comedy"``, ...).
    tastes_per_user : (int, int)
        Inclusive range of the number of tastes of a user, drawn uniformly.
    interactions_per_user : (int, int)
        Inclusive range of the number of interactions of a user, drawn uniformly and
        capped at half the catalogue.
    seed : int
        Everything is deterministic given the seed.
    n_dims : int, optional
        Dimension d of the taste space; default ``max(8, 2 * n_tastes)``.
    user_scale, item_scale, noise, bias_scale : float
        Lengths of persona and item vectors, the isotropic noise around them, and the
        scale of item popularity biases.
    multi_taste_prob : float
        Probability that an item belongs to two tastes.
    weight_concentration, min_weight : float
        A user's taste weights are ``Dirichlet(weight_concentration)`` redrawn until each
        is at least ``min_weight``.

    Returns
    -------
    SyntheticData
        ``(dataset, truth)``; ``dataset.ratings`` has ``user_id`` (1..n_users),
        ``item_id`` (10001..) and ``timestamp``; ``dataset.items`` has ``item_id``,
        ``title`` and ``categories`` (the item's taste names).

    Examples
    --------
    >>> data, truth = make_synthetic(n_users=50, n_items=100, n_tastes=4, seed=1)
    >>> data.n_users
    50
    """
    n_users = check_min_int("n_users", n_users, 1)
    n_items = check_min_int("n_items", n_items, 1)
    n_tastes = check_min_int("n_tastes", n_tastes, 1)
    lo_t, hi_t = _check_range("tastes_per_user", tastes_per_user)
    lo_n, hi_n = _check_range("interactions_per_user", interactions_per_user)
    if hi_t > n_tastes:
        raise DataValidationError(
            f"tastes_per_user: at most n_tastes={n_tastes} tastes per user; got {tastes_per_user!r}"
        )
    if n_items < 2 * lo_n:
        raise DataValidationError(
            f"n_items must be at least twice the smallest interactions_per_user ({2 * lo_n}); "
            f"got {n_items}"
        )
    if hi_t * min_weight > 1.0:
        raise DataValidationError(
            f"min_weight={min_weight} is infeasible with up to {hi_t} tastes per user"
        )
    rng = np.random.default_rng(seed)
    d = n_dims if n_dims is not None else max(8, 2 * n_tastes)
    names = [TASTE_NAMES[t] if t < len(TASTE_NAMES) else f"Taste-{t + 1}" for t in range(n_tastes)]

    centers, primary, second, has_second, item_factors, item_bias = _planted_items(
        rng, n_tastes, n_items, d, item_scale, noise, bias_scale, multi_taste_prob
    )
    item_ids = np.arange(10001, 10001 + n_items)
    categories = [
        [names[primary[i]]] + ([names[second[i]]] if has_second[i] else []) for i in range(n_items)
    ]

    # Users: tastes, weights and persona vectors.
    max_m = hi_t
    persona_factors = np.zeros((n_users, max_m, d))
    persona_weights = np.zeros((n_users, max_m))
    user_taste_idx = np.full((n_users, max_m), -1)
    for u in range(n_users):
        m = int(rng.integers(lo_t, hi_t + 1))
        tastes = rng.choice(n_tastes, size=m, replace=False)
        while True:
            w = rng.dirichlet(np.full(m, weight_concentration))
            if w.min() >= min_weight:
                break
        user_taste_idx[u, :m] = tastes
        persona_weights[u, :m] = w
        persona_factors[u, :m] = user_scale * centers[tastes] + noise * rng.normal(size=(m, d))

    # Interactions: z ~ Categorical(w_u), i ~ softmax_j(p_uz . q_j + b_j), no repeats.
    logits = np.einsum("umd,id->umi", persona_factors, item_factors) + item_bias
    probs = np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))
    user_ids = np.arange(1, n_users + 1)
    rows_u, rows_i, rows_slot = [], [], []
    for u in range(n_users):
        n_u = min(int(rng.integers(lo_n, hi_n + 1)), n_items // 2)
        m = int((persona_weights[u] > 0).sum())
        chosen: dict[int, int] = {}
        while len(chosen) < n_u:
            need = n_u - len(chosen)
            slots = rng.choice(m, size=2 * need + 8, p=persona_weights[u, :m])
            cum = np.cumsum(probs[u, :m], axis=1)
            draws = (cum[slots] < rng.random((slots.size, 1))).sum(axis=1)
            draws = np.minimum(draws, n_items - 1)
            for s, i in zip(slots, draws, strict=True):
                if i not in chosen:
                    chosen[int(i)] = int(s)
                    if len(chosen) == n_u:
                        break
        items_u = np.fromiter(chosen.keys(), dtype=np.int64, count=len(chosen))
        rows_u.append(np.full(items_u.size, u))
        rows_i.append(items_u)
        rows_slot.append(np.fromiter(chosen.values(), dtype=np.int64, count=len(chosen)))
    u_idx = np.concatenate(rows_u)
    i_idx = np.concatenate(rows_i)
    slot = np.concatenate(rows_slot)
    timestamp = 1_600_000_000 + np.arange(u_idx.size, dtype=np.int64) * 60

    ratings = pd.DataFrame(
        {"user_id": user_ids[u_idx], "item_id": item_ids[i_idx], "timestamp": timestamp}
    )
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"{names[primary[i]]} item {item_ids[i]}" for i in range(n_items)],
            "categories": categories,
        }
    )
    taste_of_row = user_taste_idx[u_idx, slot]
    interactions = ratings[["user_id", "item_id"]].assign(
        taste=np.asarray(names, dtype=object)[taste_of_row], slot=slot
    )
    ut_u, ut_s = np.nonzero(persona_weights > 0)
    user_tastes = pd.DataFrame(
        {
            "user_id": user_ids[ut_u],
            "slot": ut_s,
            "taste": np.asarray(names, dtype=object)[user_taste_idx[ut_u, ut_s]],
            "weight": persona_weights[ut_u, ut_s],
        }
    )
    dataset = Dataset(ratings=ratings, items=items, name=f"synthetic(seed={seed})")
    truth = SyntheticTruth(
        taste_names=names,
        user_ids=user_ids,
        item_ids=item_ids,
        user_tastes=user_tastes,
        interactions=interactions,
        item_factors=item_factors,
        item_bias=item_bias,
        persona_factors=persona_factors,
        persona_weights=persona_weights,
    )
    logger.info(
        "planted world: %d users, %d items, %d tastes, %d interactions",
        n_users, n_items, n_tastes, len(ratings),
    )  # fmt: skip
    return SyntheticData(dataset=dataset, truth=truth)
