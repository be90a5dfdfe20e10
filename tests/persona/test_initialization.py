"""Persona seeds and the joint form's starting prevalences (bayes_persona.persona.initialization)."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_persona.persona import initialization as init


def _world(n_users: int = 50, n_items: int = 40, dim: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n_items, dim))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    rows = [np.sort(rng.choice(n_items, size=rng.integers(2, 12), replace=False)) for _ in range(n_users)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    return items, indptr, np.concatenate(rows)


def test_rows_below_the_threshold_are_one_per_persona_slot() -> None:
    items, indptr, indices = _world()
    table, index, shares = init.seed_persona_rows(items, indptr, indices, 3, 3.0, seed=1)
    loc, shares2 = init.seed_personas(items, indptr, indices, 3, 3.0, seed=1)
    assert table.shape == (50 * 3, 4) and sorted(index.ravel()) == list(range(150))
    np.testing.assert_array_equal(table[index], loc)
    np.testing.assert_array_equal(shares, shares2)
    np.testing.assert_allclose(np.linalg.norm(loc, axis=-1), 3.0)
    # the index path and the (U, K, D) path give the same prevalences, bit for bit
    np.testing.assert_array_equal(
        init.prevalence_from_shares(shares, table, items, index=index),
        init.prevalence_from_shares(shares, loc, items),
    )


def test_pooled_directions_give_the_exact_prevalences(monkeypatch) -> None:
    """Above the threshold the unseeded personas share a pool of directions; each distinct
    row's normaliser is computed once and gives the prevalences of the per-user pass."""
    items, indptr, indices = _world(n_users=300)
    monkeypatch.setattr(init, "POOLED_DIRECTIONS_ABOVE", 0)
    monkeypatch.setattr(init, "DIRECTION_POOL", 16)
    K = 4
    table, index, shares = init.seed_persona_rows(items, indptr, indices, K, 3.0, seed=1)
    C = len(table) - 16
    assert 0 < C <= 8 and len(table) < index.size
    np.testing.assert_allclose(np.linalg.norm(table, axis=-1), 3.0)
    # every persona a user's items seed sits at a centroid; the others at a pool direction
    seeded = index >= 16
    assert seeded[:, 0].all() and (~seeded).any()
    cluster_of = np.argmax(items @ table[16:].T, axis=1)
    for u in range(0, 300, 37):
        mine = set(cluster_of[indices[indptr[u] : indptr[u + 1]]])
        assert {int(i) - 16 for i in index[u][seeded[u]]} <= mine
    bias = np.linspace(-1, 1, len(items))
    pooled = init.prevalence_from_shares(shares, table, items, bias=bias, index=index)
    exact = init.prevalence_from_shares(shares, table[index], items, bias=bias)
    np.testing.assert_allclose(pooled, exact, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(pooled.sum(1), 1.0)
    assert np.ptp(np.log(pooled / shares), axis=1).max() > 0.1  # the normalisers matter here


@pytest.mark.parametrize("users, expected", [(942, False), (10**6, True)])
def test_threshold_keeps_movielens_sized_fits_per_slot(users, expected) -> None:
    """MovieLens 100K (942 users, 8 personas, 1,447 items, 16 factors) keeps one direction
    per slot; a million users with the scale benchmark's catalogue pool them."""
    items = 1447 if users == 942 else 6325
    dims = 16 if users == 942 else 32
    assert (users * (8 if users == 942 else 4) * items * dims > init.POOLED_DIRECTIONS_ABOVE) is expected
