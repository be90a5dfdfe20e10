"""Fast tests of the Bayesian multi-persona model's own behaviour (the shared recommender
contract lives in test_recommender_contract.py)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pyro
import pytest
import torch

import bayes_persona as bp
from bayes_persona.persona.model import Batch, PersonaModel, make_guide


@pytest.fixture(scope="module")
def synthetic_world():
    return bp.make_synthetic(n_users=80, n_items=150, n_tastes=4, interactions_per_user=(15, 40), seed=3)


def small(**kw):
    args = dict(n_personas=3, n_factors=8, max_epochs=15, batch_size=32, n_draws=30, progress=False)
    args.update(kw)
    return bp.PersonaRecommender(**args)


@pytest.fixture(scope="module")
def model_fit(synthetic_world):
    small_world, _ = synthetic_world
    return small().fit(small_world)


def test_minibatch_elbo_is_unbiased():
    """The average of minibatch ELBO estimates equals the full-data ELBO (fixed guide draws)."""
    torch.manual_seed(0)
    U, N, K, D = 12, 20, 2, 3
    model = PersonaModel(U, N, K, D)
    guide = make_guide("meanfield", model, 0.0001, torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    counts = rng.integers(2, 6, size=U)
    items = [rng.choice(N, size=c, replace=False) for c in counts]
    L = int(counts.max())

    def batch_for(users, L_):
        it = torch.zeros(len(users), L_, dtype=torch.long)
        mask = torch.zeros(len(users), L_, dtype=torch.bool)
        for j, u in enumerate(users):
            n = min(len(items[u]), L_)
            it[j, :n] = torch.as_tensor(items[u][:n])
            mask[j, :n] = True
        w = torch.tensor([len(items[u]) / min(len(items[u]), L_) for u in users], dtype=torch.float)
        return Batch(torch.as_tensor(users), it, mask, w)

    elbo = pyro.infer.Trace_ELBO(max_plate_nesting=2)
    with torch.no_grad():
        torch.manual_seed(1)
        full = -elbo.differentiable_loss(model, guide, batch_for(np.arange(U), L)).item()
        parts = []
        for users in np.arange(U).reshape(4, 3):
            torch.manual_seed(1)
            parts.append(-elbo.differentiable_loss(model, guide, batch_for(users, L)).item())
    # Each user-subsample estimate scales the user terms by U/3; their mean over a partition
    # of the users is exactly the full user part, while global terms appear in every part.
    assert np.isfinite(full)
    assert np.mean(parts) == pytest.approx(full, rel=0.05)


def test_fit_returns_self_and_fitted_state(synthetic_world):
    small_world, _ = synthetic_world
    m = small(max_epochs=3)
    assert m.fit(small_world) is m
    assert m.elbo_.shape == (m.n_steps_,)
    assert np.isfinite(m.elbo_).all()
    assert len(m.user_vocab_) == small_world.n_users and len(m.item_vocab_) == small_world.n_items


def test_elbo_improves(model_fit):
    e = model_fit.elbo_
    assert e[-5:].mean() > e[:5].mean()


def test_random_state_reproducible(synthetic_world):
    small_world, _ = synthetic_world
    a = small(max_epochs=3, random_state=7).fit(small_world)
    b = small(max_epochs=3, random_state=7).fit(small_world)
    c = small(max_epochs=3, random_state=8).fit(small_world)
    for (ka, va), (_, vb) in zip(a.guide_.state_dict().items(), b.guide_.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    assert not torch.equal(a.guide_.persona_loc, c.guide_.persona_loc)


def test_two_models_do_not_share_param_store(synthetic_world):
    small_world, _ = synthetic_world
    a = small(max_epochs=2, random_state=1).fit(small_world)
    before = {k: v.clone() for k, v in a.guide_.state_dict().items()}
    small(max_epochs=2, random_state=2).fit(small_world)
    for k, v in a.guide_.state_dict().items():
        assert torch.equal(v, before[k])
    assert len(pyro.get_param_store()) == 0


def test_recommend_columns_and_persona_probabilities(model_fit, synthetic_world):
    recs = model_fit.recommend([1, 2, 3], n=7)
    assert model_fit.item_titles_  # the planted world's items table has titles
    assert list(recs.columns) == [
        "user_id", "rank", "item_id", "title", "score", "persona", "persona_prob",
        "persona_prob_low", "persona_prob_high",
    ]  # fmt: skip
    assert (recs.groupby("user_id").size() == 7).all()
    assert ((recs.persona_prob_low <= recs.persona_prob + 1e-9) & (recs.persona_prob <= recs.persona_prob_high + 1e-9)).all()
    assert recs.persona.between(0, 2).all()
    # scores sorted within user
    for _, g in recs.groupby("user_id"):
        assert (np.diff(g.score.to_numpy()) <= 1e-12).all()


def test_batch_equals_single(model_fit):
    batch = model_fit.recommend([1, 2, 3, 4], n=5)
    single = pd.concat([model_fit.recommend([u], n=5) for u in [1, 2, 3, 4]], ignore_index=True)
    pd.testing.assert_frame_equal(batch, single)


def test_score_matches_recommend(model_fit):
    recs = model_fit.recommend([5], n=4)
    s = model_fit.score(recs.user_id.to_numpy(), recs.item_id.to_numpy())
    np.testing.assert_allclose(s, recs.score.to_numpy(), rtol=1e-6)


def test_explain_probabilities_sum_to_one(model_fit):
    ex = model_fit.explain(1, [10001, 10002, 10003], hdi_prob=0.8)
    assert len(ex) == 3 * 3
    # the draws behind the medians sum to one over personas, draw by draw
    draws = model_fit.explain_draws(1, [10001, 10002, 10003])
    np.testing.assert_allclose(draws.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        ex.persona_prob.to_numpy().reshape(3, 3), np.median(draws, axis=0).T, rtol=1e-5, atol=1e-7
    )
    # the point lies inside its own interval on every row (posterior median + HDI)
    assert ((ex.persona_prob_low <= ex.persona_prob) & (ex.persona_prob <= ex.persona_prob_high)).all()
    # persona 0 is the most prevalent
    prev = ex.drop_duplicates("persona").sort_values("persona").prevalence.to_numpy()
    assert (np.diff(prev) <= 1e-9).all()


def test_explain_consistent_with_recommend(model_fit):
    recs = model_fit.recommend([2], n=3)
    ex = model_fit.explain(2, recs.item_id.to_numpy(), hdi_prob=model_fit.hdi_prob)
    for row in recs.itertuples():
        e = ex[(ex.item_id == row.item_id) & (ex.persona == row.persona)].iloc[0]
        assert e.persona_prob == pytest.approx(row.persona_prob, rel=1e-5)
        assert e.persona_prob_low == pytest.approx(row.persona_prob_low, rel=1e-5)


def test_personas_frame(model_fit):
    p = model_fit.personas(1, n_items=4)
    assert list(p.persona) == [0, 1, 2]
    assert ((p.prevalence_low <= p.prevalence) & (p.prevalence <= p.prevalence_high)).all()
    assert (np.diff(p.prevalence.to_numpy()) <= 1e-9).all()  # persona 0 = largest median
    assert all(len(t) == 4 for t in p.top_items)
    assert all(isinstance(c, list) for c in p.top_categories)
    assert len(p.top_categories[0]) >= 1  # planted items carry categories


def test_sample_posterior_shapes(model_fit):
    s = model_fit.sample_posterior(num_samples=6, users=[1, 2])
    assert s["item_factors"].shape == (6, len(model_fit.item_vocab_), 8)
    assert s["persona_factors"].shape == (6, 2, 3, 8)
    np.testing.assert_allclose(s["prevalence"].sum(-1), 1.0, atol=1e-5)
    assert (np.diff(s["prevalence"].mean(0), axis=-1) <= 1e-6).all()


def test_log_predictive_is_the_posterior_mean_probability(model_fit, synthetic_world):
    """``log_predictive`` is the log of ``E[P(i | u)]`` over the model's posterior draws."""
    small_world, _ = synthetic_world
    rows = small_world.ratings.head(20)
    lp = model_fit.log_predictive(rows)
    assert lp.shape == (20,) and np.isfinite(lp).all() and (lp < 0).all()
    post = model_fit.posterior_
    u = model_fit.user_vocab_.encode(rows.user_id.to_numpy())
    i = model_fit.item_vocab_.encode(rows.item_id.to_numpy())
    with torch.no_grad():
        mean_p = post.user_draws(u, model_fit.n_draws, with_softmax=True)["scores"].numpy()  # (20, N)
    np.testing.assert_allclose(np.exp(lp), mean_p[np.arange(20), i], rtol=1e-5)


def _monte_carlo_log_weight(model, users, n_draws=40_000, seed=0):
    """log E[W_ui] by brute force over the user's posterior (prevalence and personas drawn
    from the guide), the items at their posterior means, W = sum_k pi_k exp(p_k . q_i + b_i);
    and the standard error of that log (B, N) each."""
    g, gen = model.guide_, torch.Generator().manual_seed(seed)
    u = torch.as_tensor(users)
    conc = g.prevalence_concentration(u).double()
    a, s = g.persona_loc[u].double(), g._pos(g.persona_raw_scale[u]).double()
    c, bl = g.item_loc.double(), g.bias_loc.double()
    total = torch.zeros(len(users), c.shape[0], dtype=torch.float64)
    squares = torch.zeros_like(total)
    chunk = 2_000
    for _ in range(n_draws // chunk):
        pi = torch.distributions.Dirichlet(conc).sample((chunk,))  # (S, B, K)
        p = a + s * torch.randn((chunk, *a.shape), generator=gen, dtype=torch.float64)
        w = (pi[..., None] * torch.exp(torch.einsum("sbkd,nd->sbkn", p, c) + bl)).sum(2)
        total += w.sum(0)
        squares += (w * w).sum(0)
    n = n_draws // chunk * chunk
    mean = total / n
    se = torch.sqrt((squares / n - mean**2).clamp_min(0) / n)
    return torch.log(mean).numpy(), (se / mean).numpy()


def test_expected_weight_matches_quadrature():
    """One factor dimension, one persona: ``log E_p[exp(p c + b)]`` at the item's posterior
    means (c, b) against numerical integration over p ~ N(a, s^2), with persona scales wide
    enough (s = 0.3 to 0.6) that dropping the ``s^2 c^2 / 2`` term would be off by far more
    than the tolerance; the items' own scales (t), however wide, do not enter."""
    from types import SimpleNamespace

    from scipy import integrate

    from bayes_persona.persona.posterior import PersonaPosterior

    model = PersonaModel(2, 3, 1, 1)
    g = make_guide("meanfield", model, 0.1, torch.Generator().manual_seed(0))
    inv = lambda x: math.log(math.expm1(x))  # noqa: E731
    a, s, c, t, bl, bs = [1.5, -0.7], [0.3, 0.6], [0.8, -0.5, 1.2], [1.0, 0.5, 3.0], [0.2, 0.0, -0.3], [0.1, 0.4, 0.2]
    with torch.no_grad():
        g.persona_loc.copy_(torch.tensor(a).reshape(2, 1, 1))
        g.persona_raw_scale.copy_(torch.tensor([inv(x) for x in s]).reshape(2, 1, 1))
        g.item_loc.copy_(torch.tensor(c)[:, None])
        g.item_raw_scale.copy_(torch.tensor([inv(x) for x in t])[:, None])
        g.bias_loc.copy_(torch.tensor(bl))
        g.bias_raw_scale.copy_(torch.tensor([inv(x) for x in bs]))
    log_w = PersonaPosterior(SimpleNamespace(guide_=g)).log_expected_weight(np.array([0, 1]))
    sd = lambda raw: torch.nn.functional.softplus(raw).item() + 1e-5  # noqa: E731  (the guide's _pos)
    for u in range(2):
        su = sd(g.persona_raw_scale[u, 0, 0])
        for i in range(3):
            def f(x, au=a[u], su=su, ci=c[i]):
                return math.exp(x * ci - (x - au) ** 2 / (2 * su * su)) / math.sqrt(2 * math.pi * su * su)

            expected = math.log(integrate.quad(f, -60, 60, limit=200)[0]) + bl[i]
            assert abs(log_w[u, i].item() - expected) < 1e-4
            assert abs(log_w[u, i].item() - (a[u] * c[i] + bl[i])) > 1e-2  # the persona's variance counts


def test_score_is_the_ratio_of_ranking_weights(model_fit):
    """The default model scores ``W_ui / sum_j W_uj`` with ``W`` averaged over the user's
    posterior at the items' posterior means: brute-force draws of the user's prevalence and
    personas from the guide agree; the full expectation over the items' factors too (the
    earlier statistic) and the plug-in at the user's means would not."""
    # A short fit leaves the guide's scales near their start; widen them so that the
    # uncertainty terms matter.
    model = copy.deepcopy(model_fit)
    g = model.guide_
    with torch.no_grad():
        g.persona_raw_scale.fill_(math.log(math.expm1(0.3)))
        g.item_raw_scale.fill_(math.log(math.expm1(0.5)))
    users = np.array([0, 5])
    log_w = model.posterior_.log_expected_weight(users)
    mc, se = _monte_carlo_log_weight(model, users)
    assert se.max() < 0.1
    assert (np.abs(log_w.numpy() - mc) < 4 * se + 1e-3).mean() > 0.99
    u = torch.as_tensor(users)
    a, s2, t2 = g.persona_loc[u], g._pos(g.persona_raw_scale[u]) ** 2, g._pos(g.item_raw_scale) ** 2
    log_pi, c, b = torch.log(g.prevalence_mean(u))[..., None], g.item_loc, g.bias_loc
    with torch.no_grad():
        plug_in = torch.logsumexp(log_pi + torch.einsum("bkd,nd->bkn", a, c), 1) + b
        # E over q ~ N(c, t^2) as well: per dimension (1 - s^2 t^2)^(-1/2) exp((a c + s^2 c^2/2 + a^2 t^2/2) / (1 - s^2 t^2))
        den = 1 - s2[:, :, None, :] * t2
        full = (a[:, :, None] * c + s2[:, :, None] * c * c / 2 + a[:, :, None] ** 2 * t2 / 2) / den - 0.5 * den.log()
        full = torch.logsumexp(log_pi + full.sum(-1), 1) + b + g._pos(g.bias_raw_scale) ** 2 / 2
    for other in (plug_in, full):  # the test tells these apart
        assert (np.abs(other.numpy() - mc) < 4 * se + 1e-3).mean() < 0.5
    ids = model_fit.user_vocab_.decode(users)
    log_w = model_fit.posterior_.log_expected_weight(users)
    items = model_fit.item_vocab_.ids
    for j, uid in enumerate(ids):
        s = model_fit.score([uid] * len(items), items)
        np.testing.assert_allclose(s.sum(), 1.0, rtol=1e-5)
        np.testing.assert_allclose(np.log(s), log_w[j].numpy() - torch.logsumexp(log_w[j], 0).item(), atol=1e-5)


@pytest.mark.parametrize("item_sd", [2.0, 5.0])
def test_ranking_weights_stay_finite_however_uncertain_the_items(model_fit, item_sd):
    """The full posterior mean of the choice weight is infinite where s^2 t^2 reaches 1
    (here s = 0.5 and t = 2 or 5) and ruled by the items' variances well before; the ranking
    weights leave the items' variance out, so they stay finite, do not change with it, and
    the scores of every user sum to 1."""
    model = copy.deepcopy(model_fit)
    g = model.guide_
    users = np.array([2, 3])
    before = model.posterior_.log_expected_weight(users)
    with torch.no_grad():
        g.persona_raw_scale[3].fill_(math.log(math.expm1(0.5)))
        g.item_raw_scale.fill_(math.log(math.expm1(item_sd)))
    post = model.posterior_
    log_w = post.log_expected_weight(users)
    assert torch.isfinite(log_w).all()
    torch.testing.assert_close(log_w[0], before[0])  # the items' scales do not enter
    assert not torch.allclose(log_w[1], before[1])  # the persona's scale does
    items = model.item_vocab_.ids
    uid = model.user_vocab_.decode(np.array([3]))[0]
    s = model.score([uid] * len(items), items)
    np.testing.assert_allclose(s.sum(), 1.0, rtol=1e-5)
    recs = model.recommend([uid], n=3)
    assert len(recs) == 3 and np.isfinite(recs["score"]).all()


def test_single_persona_is_matrix_factorisation(synthetic_world):
    small_world, _ = synthetic_world
    m = small(n_personas=1, max_epochs=3).fit(small_world)
    recs = m.recommend([1], n=3)
    assert (recs.persona == 0).all()
    np.testing.assert_allclose(recs.persona_prob, 1.0)


def test_lowrank_guide_and_sampled_softmax(synthetic_world):
    small_world, _ = synthetic_world
    m = small(guide="lowrank", n_negatives=40, max_epochs=3).fit(small_world)
    assert m.n_negatives_ == 40
    recs = m.recommend([1], n=3)
    assert len(recs) == 3 and np.isfinite(recs.score).all()


def test_explicit_feedback():
    small_world, _ = bp.make_synthetic(n_users=40, n_items=80, n_tastes=3, interactions_per_user=(10, 30), seed=1)
    rng = np.random.default_rng(0)
    ratings = small_world.ratings.assign(rating=rng.integers(1, 6, size=len(small_world.ratings)).astype(float))
    m = small(feedback="explicit", max_epochs=3).fit(ratings)
    s = m.score([1, 2], [10001, 10002])
    assert np.isfinite(s).all() and (s > -5).all() and (s < 10).all()
    lp = m.log_predictive(ratings.head(5))
    assert np.isfinite(lp).all()


def test_explicit_needs_rating(synthetic_world):
    small_world, _ = synthetic_world
    with pytest.raises(bp.DataValidationError, match="rating"):
        small(feedback="explicit").fit(small_world)


def test_save_load_identical(tmp_path, model_fit):
    path = tmp_path / "m.pt"
    model_fit.save(path)
    loaded = bp.PersonaRecommender.load(path)
    pd.testing.assert_frame_equal(model_fit.recommend([1, 2], n=5), loaded.recommend([1, 2], n=5))
    pd.testing.assert_frame_equal(model_fit.explain(3, [10001]), loaded.explain(3, [10001]))


def test_repr_says_whether_the_model_is_fitted(model_fit):
    assert repr(bp.PersonaRecommender()).endswith("; not fitted)")
    assert repr(model_fit).endswith("; fitted)")


def test_a_short_fit_warns_that_it_has_not_converged_and_says_so(small_world):
    with pytest.warns(bp.ConvergenceWarning, match="still rising"):
        model = bp.PersonaRecommender(n_personas=2, n_factors=4, max_epochs=20, progress=False).fit(small_world)
    assert model.converged_ is False


def test_implicit_fit_on_rated_data_warns_that_ratings_are_ignored(small_world):
    rated = small_world.ratings.assign(rating=np.resize([1.0, 5.0], len(small_world.ratings)))
    with pytest.warns(UserWarning, match="binarize"):
        bp.PersonaRecommender(n_personas=2, n_factors=4, max_epochs=1, progress=False).fit(rated)


def test_fit_uses_its_own_thread_count_and_restores_torch_s(small_world, monkeypatch):
    seen = []
    real = bp.fitting.run_svi  # fit runs SVI through bayes_persona.persona.fitting
    monkeypatch.setattr(bp.fitting, "run_svi", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        bp.PersonaRecommender(n_personas=2, n_factors=4, max_epochs=1, progress=False, n_threads=1).fit(small_world)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_model_with_non_finite_parameters_refuses_to_answer(small_world):
    model = bp.PersonaRecommender(n_personas=2, n_factors=4, max_epochs=1, progress=False).fit(small_world)
    with torch.no_grad():
        model.guide_.item_loc[0, 0] = float("nan")
    model._cache = {}
    user = small_world.ratings["user_id"].iloc[0]
    for call in (lambda: model.recommend([user]), lambda: model.score([user], [small_world.ratings["item_id"].iloc[0]])):
        with pytest.raises(bp.ModelFitError, match="not all finite"):
            call()


def test_ratings_beyond_float32_range_are_refused_before_fitting(small_world):
    rated = small_world.ratings.assign(rating=1.0)
    rated.loc[rated.index[0], "rating"] = 1e300
    with pytest.raises(bp.DataValidationError, match="rating"):
        bp.PersonaRecommender(feedback="explicit", max_epochs=1, progress=False).fit(rated)


def test_hdi_prob_travels(model_fit):
    """explain, personas and recommend use the model's hdi_prob unless told otherwise."""
    user, items = 2, [10001, 10002, 10003]
    old = model_fit.hdi_prob
    try:
        model_fit.set_params(hdi_prob=0.5)
        narrow = model_fit.explain(user, items)
        np.testing.assert_allclose(narrow.persona_prob_low, model_fit.explain(user, items, hdi_prob=0.5).persona_prob_low)
        p_narrow = model_fit.personas(user)
        model_fit.set_params(hdi_prob=0.95)
        wide = model_fit.explain(user, items)
        p_wide = model_fit.personas(user)
    finally:
        model_fit.set_params(hdi_prob=old)
    width = lambda f, c: (f[f"{c}_high"] - f[f"{c}_low"]).to_numpy()  # noqa: E731
    assert (width(narrow, "persona_prob") <= width(wide, "persona_prob") + 1e-12).all()
    assert width(narrow, "persona_prob").sum() < width(wide, "persona_prob").sum()
    assert width(p_narrow, "prevalence").sum() < width(p_wide, "prevalence").sum()


def test_titles_travel_with_the_model(model_fit, synthetic_world, tmp_path):
    """Titles of the items table are stored in the model (and its file) and shown by
    recommend, explain and personas."""
    small_world, _ = synthetic_world
    title = dict(zip(small_world.items["item_id"], small_world.items["title"], strict=True))
    recs = model_fit.recommend([1], n=3)
    assert recs["title"].tolist() == [title[i] for i in recs["item_id"]]
    ex = model_fit.explain(1, recs["item_id"].tolist())
    assert ex["title"].tolist() == [title[i] for i in ex["item_id"]]
    p = model_fit.personas([1, 2], n_items=2)
    assert p["top_titles"].tolist() == [[title[i] for i in t] for t in p["top_items"]]
    model_fit.save(tmp_path / "m.pt")
    assert bp.PersonaRecommender.load(tmp_path / "m.pt").titles(recs["item_id"]) == recs["title"].tolist()


def test_personas_of_several_users(model_fit):
    both = model_fit.personas([1, 2], n_items=2)
    assert both["user_id"].tolist() == [1] * 3 + [2] * 3
    pd.testing.assert_frame_equal(both.iloc[3:].reset_index(drop=True), model_fit.personas(2, n_items=2))
    assert both["active"].tolist() == (both["prevalence"] > bp.posterior.ACTIVE_PREVALENCE).tolist()


def test_summary_reports_fit_state_and_personas(model_fit):
    s = model_fit.summary()
    assert isinstance(s, bp.ModelSummary)
    assert s.fit["n_steps"] == model_fit.n_steps_ and s.fit["n_personas"] == 3
    assert s.fit["converged"] == model_fit.converged_
    assert s.fit["final_elbo"] == pytest.approx(model_fit.elbo_[-3:].mean())  # 80 users / 32 = 3 steps
    assert len(s.personas) == len(model_fit.user_vocab_)
    prev = s.personas[["prevalence_0", "prevalence_1", "prevalence_2"]].to_numpy()
    assert (np.diff(prev, axis=1) <= 1e-12).all()
    # the same medians and the same "active" rule as personas()
    p = model_fit.personas(2)
    row = s.personas[s.personas.user_id == 2].iloc[0]
    np.testing.assert_allclose(prev[s.personas.user_id == 2][0], p.prevalence.to_numpy(), rtol=1e-6)
    assert row.n_active == int(p.active.sum())
    text = repr(s)
    assert "NOT converged" in text or "converged" in text
    assert "users by number of active personas" in text and "<table" in s._repr_html_()
    assert "final epoch ELBO" in text and s.fit["user_particles"] == 1
    assert len(model_fit.summary(users=[1, 2]).personas) == 2


def test_posterior_object_is_the_public_home_of_the_draws(model_fit):
    """model.posterior_ gives the draws behind every output; before fit it raises."""
    with pytest.raises(bp.NotFittedError):
        bp.PersonaRecommender().posterior_  # noqa: B018
    post = model_fit.posterior_
    ids, u = post.encode_users([2])
    items = model_fit.item_vocab_.encode(np.asarray([10001, 10002], dtype=object))
    draws, order, prevalence = post.explanation_draws(u, items)
    assert draws.shape == (model_fit.n_draws, 1, 3, 2) and prevalence.shape == (model_fit.n_draws, 1, 3)
    np.testing.assert_allclose(
        draws[:, 0][:, order[0]].numpy(), model_fit.explain_draws(2, [10001, 10002]), rtol=1e-6
    )
    assert post.interval_prob(None) == model_fit.hdi_prob and post.interval_prob(0.5) == 0.5
    assert post.chunk_size(model_fit.n_draws) >= 1


def test_importance_diagnostics_tell_a_reweightable_guide_from_a_broken_one() -> None:
    """PSIS k-hat of each user's guide draws: on a low-dimensional world (K=1, D=2) the
    fitted guide can be reweighted into the posterior (k < 0.7 for most users); the same
    guide with its persona scales shrunk tenfold cannot (a wrong log q or log p would not
    tell these apart)."""
    import torch

    small_world, _ = bp.make_synthetic(n_users=60, n_items=80, n_tastes=3, seed=0)
    model = bp.PersonaRecommender(n_personas=1, n_factors=2, max_epochs=300, n_draws=400, progress=False)
    model.fit(small_world)
    diag = model.importance_diagnostics()
    assert list(diag.columns) == ["user_id", "k_hat", "ess", "reliable"]
    assert len(diag) == 60 and diag["user_id"].tolist() == sorted(small_world.ratings["user_id"].unique().tolist())
    assert diag["reliable"].mean() >= 0.8 and diag["k_hat"].median() < 0.6
    assert (diag["ess"] > 1).all() and (diag["ess"] <= 400).all()
    one = model.importance_diagnostics([diag["user_id"].iloc[3]])
    assert one["k_hat"].iloc[0] == pytest.approx(diag["k_hat"].iloc[3])  # batch == single user
    with torch.no_grad():
        model.guide_.persona_raw_scale.sub_(math.log(10.0))  # about tenfold too narrow a guide
    model._cache.clear()
    broken = model.importance_diagnostics()
    assert broken["k_hat"].median() > 0.7 and broken["reliable"].mean() < 0.5


def test_log_normaliser_matches_autograd_logsumexp() -> None:
    """The fused catalogue normaliser (one exponential each way) gives autograd's values and
    gradients, with sampled items corrected by log(N / S)."""
    from bayes_persona.persona.model import log_softmax_normaliser

    g = torch.Generator().manual_seed(0)
    p = torch.randn(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    got = log_softmax_normaliser(p, q, b, 21)
    ref = torch.logsumexp(torch.einsum("ukd,sd->uks", p, q) + b, -1) + math.log(3.0)
    torch.testing.assert_close(got, ref)
    grads = torch.autograd.grad((got * w).sum(), (p, q, b))
    want = torch.autograd.grad((ref * w).sum(), (p, q, b))
    for a, r in zip(grads, want, strict=True):
        torch.testing.assert_close(a, r)
    # The backward writes over its saved exponentials, so a second backward through the same
    # graph is refused (autograd's version check), never silently wrong.
    again = log_softmax_normaliser(p, q, b, 7).sum()
    again.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        again.backward()


def test_log_normaliser_with_far_spread_logits_matches_float64() -> None:
    """Logits spread over hundreds of nats (where float32 exp underflows and the fused pass
    floors the shifted logits) give the float64 normaliser and gradients to float32 accuracy."""
    from bayes_persona.persona.model import log_softmax_normaliser

    g = torch.Generator().manual_seed(2)
    p = (20 * torch.randn(6, 3, 8, generator=g)).requires_grad_(True)
    q = torch.randn(50, 8, generator=g).requires_grad_(True)
    b = (50 * torch.randn(50, generator=g)).requires_grad_(True)
    got = log_softmax_normaliser(p, q, b, 50)
    p64, q64, b64 = (t.detach().double().requires_grad_(True) for t in (p, q, b))
    ref = torch.logsumexp(torch.einsum("ukd,sd->uks", p64, q64) + b64, -1)
    logits = torch.einsum("ukd,sd->uks", p64, q64) + b64
    assert float((logits - logits.amax(-1, keepdim=True)).min()) < -200  # far below the floor
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)
    grads = torch.autograd.grad(got.sum(), (p, q, b))
    want = torch.autograd.grad(ref.sum(), (p64, q64, b64))
    for a, r in zip(grads, want, strict=True):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-4)


def test_positives_logits_read_off_the_catalogue_pass_have_autograd_gradients() -> None:
    """log_normaliser_and_logits returns the exact normaliser and the positives' logits
    p_uk . q_i + b_i, with the gradients of the unfused computation (gather of q[pos])."""
    from bayes_persona.persona.model import log_normaliser_and_logits

    g = torch.Generator().manual_seed(1)
    B, K, D, N, L = 3, 4, 5, 9, 6
    p = torch.randn(B, K, D, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(N, D, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(N, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.randint(0, N, (B, L), generator=g)
    w, v = torch.randn(B, K, generator=g, dtype=torch.float64), torch.randn(B, L, K, generator=g, dtype=torch.float64)
    log_norm, logit = log_normaliser_and_logits(p, q, b, pos)
    ref_norm = torch.logsumexp(torch.einsum("ukd,sd->uks", p, q) + b, -1)
    ref_logit = torch.einsum("bkd,bld->blk", p, q[pos]) + b[pos][..., None]
    torch.testing.assert_close(log_norm, ref_norm)
    torch.testing.assert_close(logit, ref_logit)
    got = torch.autograd.grad((log_norm * w).sum() + (logit * v).sum(), (p, q, b))
    want = torch.autograd.grad((ref_norm * w).sum() + (ref_logit * v).sum(), (p, q, b))
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r)
    # only the normaliser in the loss: the logits' gradient is absent, not an error
    got = torch.autograd.grad(log_normaliser_and_logits(p, q, b, pos)[0].sum(), (p, q, b))
    want = torch.autograd.grad(torch.logsumexp(torch.einsum("ukd,sd->uks", p, q) + b, -1).sum(), (p, q, b))
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r)


def test_persona_orders_are_filled_at_fit_only_where_cheap(model_fit, monkeypatch):
    """fit fills every user's persona order when users x draws x K x N is within
    ORDERS_AT_FIT; above it nothing is computed up front, and serving computes the order of
    each user it serves (the same order)."""
    import bayes_persona.persona.posterior as posterior_module

    post = model_fit.posterior_
    users = np.arange(len(model_fit.user_vocab_))
    full = post.persona_orders(users, model_fit.n_draws).numpy()
    post.cache.clear()
    monkeypatch.setattr(posterior_module, "ORDERS_AT_FIT", 10)
    assert post.orders_at_fit(model_fit.n_draws) is False
    assert f"orders{model_fit.n_draws}" not in post.cache
    recs = model_fit.recommend(model_fit.user_vocab_.ids[:3], n=2)
    table = post.cache[f"orders{model_fit.n_draws}"]
    assert (table[:3] >= 0).all() and (table[3:] < 0).all()  # only the served users
    np.testing.assert_array_equal(table[:3], full[:3])
    assert len(recs) == 6
    monkeypatch.setattr(posterior_module, "ORDERS_AT_FIT", 10**12)
    assert post.orders_at_fit(model_fit.n_draws) is True
    np.testing.assert_array_equal(post.cache[f"orders{model_fit.n_draws}"], full)
