"""Data-dependent initialisation of the guide: spectral item factors, persona seeds.

A mixture's components start symmetric; with every persona of a user at the same point, all
get the same gradient and they separate slowly, if at all. The guide therefore starts from
item factors given by a truncated SVD of the user-item matrix, and each user's personas at
the factors of K of the user's own items chosen far apart (k-means++ seeding [1]_), so that a
user with several tastes starts with personas pointing at different tastes.

References
----------
.. [1] D. Arthur, S. Vassilvitskii. "k-means++: The Advantages of Careful Seeding". SODA 2007.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

__all__ = ["spectral_item_factors", "seed_personas", "seed_persona_rows", "prevalence_from_shares"]


def spectral_item_factors(
    user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int, n_factors: int, seed: int
) -> np.ndarray:
    """Item factors from a truncated SVD of the degree-normalised user-item matrix, (N, D).

    The matrix is ``D_u^{-1/2} X D_i^{-1/2}`` (as in spectral co-clustering), so that
    popularity does not dominate the leading directions; items of one taste then lie close
    together. Rescaled so the average item vector has unit length; columns beyond the rank
    the matrix supports hold small noise.
    """
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix((np.ones(len(user_idx)), (user_idx, item_idx)), shape=(n_users, n_items))
    X.data[:] = 1.0
    du = np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1.0)
    di = np.maximum(np.asarray(X.sum(axis=0)).ravel(), 1.0)
    X = sp.diags(1.0 / np.sqrt(du)) @ X @ sp.diags(1.0 / np.sqrt(di))
    k = min(n_factors, min(n_users, n_items) - 1)
    out = 0.01 * rng.standard_normal((n_items, n_factors))
    if k >= 1:
        v0 = rng.standard_normal(min(X.shape))
        _, s, vt = svds(X.astype(np.float64), k=k, v0=v0)
        V = vt.T * np.sqrt(s)[None, :]
        V /= np.linalg.norm(V, axis=1).mean() + 1e-12
        out[:, :k] = V
    return out


def kmeans(points: np.ndarray, n_clusters: int, seed: int, n_iter: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means with k-means++ seeding; returns (unit centroids (C, D), labels (N,))."""
    rng = np.random.default_rng(seed)
    x = points / (np.linalg.norm(points, axis=1, keepdims=True) + 1e-12)
    n = len(x)
    n_clusters = min(n_clusters, n)
    idx = [int(rng.integers(n))]
    d2 = np.sum((x - x[idx[0]]) ** 2, axis=1)
    for _ in range(1, n_clusters):
        total = d2.sum()
        j = int(rng.choice(n, p=d2 / total)) if total > 1e-12 else int(rng.integers(n))
        idx.append(j)
        d2 = np.minimum(d2, np.sum((x - x[j]) ** 2, axis=1))
    c = x[idx].copy()
    for _ in range(n_iter):
        labels = np.argmax(x @ c.T, axis=1)
        for k in range(n_clusters):
            members = x[labels == k]
            if len(members):
                m = members.sum(0)
                c[k] = m / (np.linalg.norm(m) + 1e-12)
    return c, np.argmax(x @ c.T, axis=1)


# Above this many multiply-adds for the exact normalisers of every user's starting personas
# (U K N D), the personas a user's items do not seed start at directions drawn from a shared
# pool of DIRECTION_POOL instead of one fresh direction each, so that the normalisers cost
# O((pool + clusters) N D) instead of O(U K N D): about two minutes of setup at a million
# users and 6,325 items. Below it (MovieLens 100K and every planted world of the tests and
# benchmarks but the largest scale sizes) each persona slot has its own direction, as before.
POOLED_DIRECTIONS_ABOVE = 2**33
DIRECTION_POOL = 4096


def seed_persona_rows(
    item_factors: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    n_personas: int,
    length: float,
    seed: int,
    n_clusters: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`seed_personas` as a table of distinct starting vectors and an index into it.

    Returns
    -------
    table : ndarray, shape (R, D)
        Starting persona vectors (length ``length``).
    index : int ndarray, shape (U, K)
        Row of ``table`` where each user's persona starts: ``table[index]`` is
        :func:`seed_personas`'s ``persona_loc``.
    prevalence : ndarray, shape (U, K)
        Rows on the simplex.
    """
    rng = np.random.default_rng(seed)
    n_users = len(indptr) - 1
    N, D = item_factors.shape
    C = n_clusters or int(min(max(2 * n_personas, 8), max(N // 4, 1)))
    centroids, labels = kmeans(item_factors, C, seed)
    C = len(centroids)
    user_of = np.repeat(np.arange(n_users), np.diff(indptr))
    counts = np.zeros((n_users, C))
    np.add.at(counts, (user_of, labels[indices]), 1.0)
    top = np.argsort(-counts, axis=1, kind="stable")[:, :n_personas]  # (U, min(K, C))
    pooled = n_users * n_personas * N * D > POOLED_DIRECTIONS_ABOVE
    share = np.full((n_users, n_personas), 0.02)
    k = top.shape[1]
    top_counts = np.take_along_axis(counts, top, axis=1)
    used = top_counts > 0
    share[:, :k][used] += top_counts[used] / np.maximum(counts.sum(1, keepdims=True), 1.0).repeat(k, 1)[used]
    prevalence = share / share.sum(1, keepdims=True)
    if not pooled:  # one direction per persona slot, then the clusters' centroids
        persona = rng.standard_normal((n_users, n_personas, D))
        persona /= np.linalg.norm(persona, axis=-1, keepdims=True)
        persona[:, :k][used] = centroids[top[used]]
        table = (length * persona).reshape(n_users * n_personas, D)
        return table, np.arange(n_users * n_personas).reshape(n_users, n_personas), prevalence
    pool = rng.standard_normal((DIRECTION_POOL, D))
    pool /= np.linalg.norm(pool, axis=-1, keepdims=True)
    index = rng.integers(DIRECTION_POOL, size=(n_users, n_personas))
    index[:, :k][used] = DIRECTION_POOL + top[used]
    return length * np.concatenate([pool, centroids]), index, prevalence


def seed_personas(
    item_factors: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    n_personas: int,
    length: float,
    seed: int,
    n_clusters: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Persona seeds at the taste clusters a user's items fall into.

    Items are clustered by spherical k-means; each user's personas start at the centroids
    of the ``K`` clusters holding most of the user's items (length ``length``), and the
    prevalences at those clusters' shares of the user's items. Personas beyond the user's
    clusters start at random directions with a small prevalence (drawn from a shared pool
    of :data:`DIRECTION_POOL` directions when ``U K N D`` exceeds
    :data:`POOLED_DIRECTIONS_ABOVE`).

    Returns
    -------
    persona_loc : ndarray, shape (U, K, D)
    prevalence : ndarray, shape (U, K), rows on the simplex
    """
    table, index, prevalence = seed_persona_rows(item_factors, indptr, indices, n_personas, length, seed, n_clusters)
    return table[index], prevalence


def prevalence_from_shares(
    shares: np.ndarray,
    personas: np.ndarray,
    items: np.ndarray,
    bias: np.ndarray | None = None,
    floor: float = 1e-3,
    index: np.ndarray | None = None,
) -> np.ndarray:
    """The joint form's prevalences whose persona shares are ``shares``, (U, K).

    In the joint form a persona's share of a user's choices is ``pi_k Z_k / sum pi Z``
    (:func:`bayes_persona.persona.model.persona_shares`), so ``pi_k`` is proportional to
    ``w_k / Z_k`` with ``Z_k = sum_j exp(p_k . q_j + b_j)``.

    Parameters
    ----------
    shares : ndarray, shape (U, K)
        Rows on the simplex; floored at ``floor`` first.
    personas : ndarray, shape (U, K, D)
    items : ndarray, shape (N, D)
    bias : ndarray, shape (N,), optional
        Item biases; zero when not given.
    floor : float
    index : int ndarray, shape (U, K), optional
        With it, ``personas`` is a table (R, D) and user ``u``'s persona ``k`` is
        ``personas[index[u, k]]`` (:func:`seed_persona_rows`); a table with fewer rows
        than ``U K`` has each row's normaliser computed once.
    """
    if index is not None and len(personas) < index.size:  # shared rows: each row's normaliser once
        log_z = _log_normalisers(personas[:, None, :], items, bias)[:, 0][index]
    else:
        log_z = _log_normalisers(personas if index is None else personas[index], items, bias)
    log_pi = np.log(np.clip(shares, floor, None)) - log_z
    pi = np.exp(log_pi - log_pi.max(-1, keepdims=True))
    return pi / pi.sum(-1, keepdims=True)


def _log_normalisers(personas: np.ndarray, items: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``log sum_j exp(p_uk . q_j + b_j)`` of personas (U, K, D), shape (U, K)."""
    U, K, _ = personas.shape
    N = items.shape[0]
    log_z = np.empty((U, K))
    step = max(1, 2**20 // max(K * N, 1))  # users per chunk: a (B, K, N) block of about 8 MB
    for s in range(0, U, step):
        logits = personas[s : s + step] @ items.T  # (B, K, N)
        if bias is not None:
            logits += bias
        peak = logits.max(-1, keepdims=True)
        logits -= peak
        log_z[s : s + step] = peak[..., 0] + np.log(np.exp(logits, out=logits).sum(-1))
    return log_z
