"""Folding new users into a fitted model (bayes_persona.persona.foldin)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import bayes_persona as bp

PARAMS = dict(
    n_personas=3,
    n_factors=8,
    max_epochs=40,
    n_draws=30,
    batch_size=64,
    progress=False,
    random_state=0,
)


@pytest.fixture(scope="module")
def foldin_world():
    """A model fitted with the held-out users and one fitted without them."""
    data, _ = bp.make_synthetic(n_users=150, n_items=200, n_tastes=4, seed=3)
    ratings = data.ratings
    counts = ratings.groupby("user_id").size()
    held = [int(u) for u in counts[counts > 60].index[:4]]
    full = bp.PersonaRecommender(**PARAMS).fit(ratings)
    without = bp.PersonaRecommender(**PARAMS).fit(ratings[~ratings["user_id"].isin(held)])
    history = ratings[ratings["user_id"].isin(held)]
    folded = without.fold_in(history, n_steps=100)
    return ratings, held, full, without, folded


def test_folded_recommendations_match_a_model_trained_with_the_user(foldin_world) -> None:
    ratings, held, full, _, folded = foldin_world
    a = full.recommend(held, n=10)
    b = folded.recommend(held, n=10)
    popular = ratings.groupby("item_id").size().sort_values(ascending=False, kind="stable").index
    rng = np.random.default_rng(0)
    overlap, pop_overlap, rand_overlap, rho = [], [], [], []
    for u in held:
        ref = set(a.loc[a["user_id"] == u, "item_id"])
        seen = set(ratings.loc[ratings["user_id"] == u, "item_id"])
        unseen = np.array([i for i in full.item_vocab_.ids if i not in seen])
        overlap.append(len(ref & set(b.loc[b["user_id"] == u, "item_id"])) / 10)
        pop_overlap.append(len(ref & set([i for i in popular if i not in seen][:10])) / 10)
        rand_overlap.append(len(ref & set(rng.choice(unseen, 10, replace=False))) / 10)
        s_full = pd.Series(full.score([u] * len(unseen), unseen))
        s_fold = pd.Series(folded.score([u] * len(unseen), unseen))
        rho.append(s_full.corr(s_fold, method="spearman"))
    assert np.mean(overlap) >= 0.6, overlap
    assert np.mean(overlap) >= np.mean(pop_overlap) + 0.3, (overlap, pop_overlap)
    assert np.mean(overlap) >= np.mean(rand_overlap) + 0.4, (overlap, rand_overlap)
    assert min(rho) > 0.8, rho


def test_folded_model_keeps_external_ids_and_explains(foldin_world) -> None:
    _, held, _, without, folded = foldin_world
    assert list(folded.user_vocab_.ids) == sorted(held)
    assert folded.item_vocab_ is without.item_vocab_
    recs = folded.recommend(held[0], n=5)
    assert recs["user_id"].tolist() == [held[0]] * 5
    assert recs["item_id"].isin(without.item_vocab_.ids).all()
    assert not set(recs["item_id"]) & set(folded.seen_.items_of(0).tolist())  # seen excluded
    ex = folded.explain(held[0], recs["item_id"].iloc[:2])
    assert len(ex) == 2 * folded.n_personas and ex["persona_prob"].between(0, 1).all()
    assert len(folded.personas(held[0])) == folded.n_personas


def test_fold_in_shares_items_and_leaves_the_model_unchanged(foldin_world) -> None:
    ratings, held, _, without, folded = foldin_world
    assert folded.guide_.item_loc is without.guide_.item_loc  # shared, not copied
    q_fold, _ = folded.posterior_.item_draws(folded.n_draws)
    q_orig, _ = without.posterior_.item_draws(without.n_draws)
    torch.testing.assert_close(q_fold, q_orig)  # same item draws: comparable outputs
    assert not any(u in without.user_vocab_ for u in held)
    other = [int(u) for u in without.user_vocab_.ids[:3]]
    before = without.recommend(other, n=5)
    without.fold_in(ratings[ratings["user_id"] == held[0]], n_steps=5)
    pd.testing.assert_frame_equal(without.recommend(other, n=5), before)


def test_unknown_items_are_named(foldin_world) -> None:
    _, _, _, without, _ = foldin_world
    history = pd.DataFrame({"user_id": [9999, 9999, 9999], "item_id": [10001, 777777, 888888]})
    with pytest.raises(bp.UnknownIdError, match=r"777777.*888888"):
        without.fold_in(history, n_steps=2)


def test_known_user_is_refused(foldin_world) -> None:
    ratings, _, _, without, _ = foldin_world
    known = int(without.user_vocab_.ids[0])
    with pytest.raises(bp.DataValidationError, match=f"already in the model.*{known}"):
        without.fold_in(ratings[ratings["user_id"] == known], n_steps=2)


def test_fold_in_save_load_round_trip(foldin_world, tmp_path) -> None:
    _, held, _, _, folded = foldin_world
    folded.save(tmp_path / "folded.pt")
    back = bp.PersonaRecommender.load(tmp_path / "folded.pt")
    pd.testing.assert_frame_equal(back.recommend(held, n=5), folded.recommend(held, n=5))


def test_fold_in_string_ids_and_explicit_feedback() -> None:
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{i}", float(rng.integers(1, 6)))
        for u in range(30)
        for i in rng.choice(40, 12, replace=False)
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    model = bp.PersonaRecommender(
        n_personas=2, n_factors=4, feedback="explicit", max_epochs=3, n_draws=10, progress=False
    ).fit(frame[frame["user_id"] != "u0"])
    new = model.fold_in(frame[frame["user_id"] == "u0"], n_steps=20)
    assert list(new.user_vocab_.ids) == ["u0"]
    recs = new.recommend("u0", n=3)
    assert recs["user_id"].tolist() == ["u0"] * 3 and np.isfinite(recs["score"]).all()


def test_fold_in_lowrank_guide_after_load(tmp_path) -> None:
    data, _ = bp.make_synthetic(n_users=40, n_items=60, n_tastes=3, seed=4)
    r = data.ratings
    model = bp.PersonaRecommender(
        n_personas=2, n_factors=4, guide="lowrank", max_epochs=3, n_draws=10, progress=False
    ).fit(r[r["user_id"] != 1])
    model.save(tmp_path / "m.pt")
    loaded = bp.PersonaRecommender.load(tmp_path / "m.pt")
    new = loaded.fold_in(r[r["user_id"] == 1], n_steps=10)
    assert new.guide_.persona_cov_factor.shape[0] == 1
    assert new.guide_.item_loc is loaded.guide_.item_loc
    assert len(new.recommend(1, n=3)) == 3


def test_fold_in_starts_chosen_users_where_asked(foldin_world) -> None:
    """A user given a start begins there (after one tiny step its personas are the start's),
    the others begin at their item clusters as before; a start that is not a pair of the
    right shapes, not on the simplex, or names a user history lacks is refused by name."""
    _, held, _, without, _ = foldin_world
    ratings = foldin_world[0]
    history = ratings[ratings["user_id"].isin(held)]
    K, D = without.n_personas, without.n_factors
    rng = np.random.default_rng(0)
    personas = rng.standard_normal((K, D))
    prevalence = np.full(K, 1.0 / K)
    started = without.fold_in(history, n_steps=1, learning_rate=1e-6, start={held[0]: (personas, prevalence)})
    plain = without.fold_in(history, n_steps=1, learning_rate=1e-6)
    u0, u1 = (int(started.user_vocab_.encode([u])[0]) for u in held[:2])
    loc = started.guide_.persona_loc.detach().numpy()
    np.testing.assert_allclose(loc[u0], personas, atol=1e-4)
    np.testing.assert_allclose(loc[u1], plain.guide_.persona_loc.detach().numpy()[u1], atol=1e-6)
    assert not np.allclose(plain.guide_.persona_loc.detach().numpy()[u0], personas, atol=0.1)
    with pytest.raises(bp.DataValidationError, match=r"shape \(3, 8\)"):
        without.fold_in(history, n_steps=1, start={held[0]: (personas[:2], prevalence)})
    with pytest.raises(bp.DataValidationError, match="simplex"):
        without.fold_in(history, n_steps=1, start={held[0]: (personas, 2 * prevalence)})
    with pytest.raises(bp.DataValidationError, match="does not have"):
        without.fold_in(history, n_steps=1, start={-5: (personas, prevalence)})
    with pytest.raises(bp.DataValidationError, match="pair"):
        without.fold_in(history, n_steps=1, start={held[0]: personas})
