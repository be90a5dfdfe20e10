"""The persona prior (taste prototypes), the fixed item scale, the joint likelihood and the
prevalences' logistic-normal guide (see bayes_persona.persona.model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import bayes_persona as bp
from bayes_persona.persona.model import (
    Batch,
    PersonaModel,
    implicit_log_likelihood,
    make_guide,
    persona_shares,
)


def test_prototype_prior_is_the_gaussian_mixture():
    torch.manual_seed(0)
    K, D, T = 3, 4, 5
    m = PersonaModel(10, 20, K, D, n_prototypes=T)
    with torch.no_grad():
        m.prototype_loc.normal_()
        m.prototype_logits.normal_()
    x = torch.randn(7, K, D)
    s = m.scale("persona_scale")
    log_w = torch.log_softmax(m.prototype_logits, 0)
    comp = torch.distributions.Normal(m.prototype_loc, s).log_prob(x[:, :, None, :]).sum(-1)  # (7, K, T)
    expected = torch.logsumexp(log_w + comp, -1).sum(-1)
    torch.testing.assert_close(m.persona_prior().log_prob(x), expected)


def test_prototype_prior_takes_float64_personas():
    """NUTS moves every site in one float64 vector: the prior's density of float64 personas
    is the float32 one's (it raised a dtype error before)."""
    torch.manual_seed(0)
    m = PersonaModel(10, 20, 3, 4, n_prototypes=5)
    with torch.no_grad():
        m.prototype_loc.normal_()
    x = torch.randn(7, 3, 4)
    lp64 = m.persona_prior().log_prob(x.double())
    assert lp64.dtype == torch.float64
    torch.testing.assert_close(lp64.float(), m.persona_prior().log_prob(x), rtol=1e-5, atol=1e-4)


def test_prototype_prior_gradients_batch_shape_and_draws_match_the_mixture():
    """The matmul form of the prototype prior has MixtureSameFamily's gradients, keeps a
    plate's batch shape, and its draws land on the prototypes in their weights."""
    from bayes_persona.persona.priors import PrototypeMixture

    g = torch.Generator().manual_seed(3)
    K, D, T = 3, 4, 5
    logits = torch.randn(T, generator=g, dtype=torch.float64, requires_grad=True)
    loc = torch.randn(T, D, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x = torch.randn(6, 1, K, D, generator=g, dtype=torch.float64, requires_grad=True)
    prior = PrototypeMixture(logits, loc, scale, K).expand((6, 1))
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits.expand(K, T)),
        torch.distributions.Independent(torch.distributions.Normal(loc.expand(K, T, D), scale), 1),
    )
    got, want = prior.log_prob(x), ref.log_prob(x).sum(-1)
    assert got.shape == (6, 1) and prior.batch_shape == (6, 1) and prior.event_shape == (K, D)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got.sum(), (logits, loc, scale, x)),
                    torch.autograd.grad(want.sum(), (logits, loc, scale, x)), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)
    # draws: far-apart prototypes, so each persona is within a few s of the one it came from
    centres = 40.0 * torch.arange(T, dtype=torch.float64)[:, None] * torch.ones(T, D, dtype=torch.float64)
    weights = torch.softmax(torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5], dtype=torch.float64), 0)
    torch.manual_seed(0)
    draws = PrototypeMixture(torch.log(weights), centres, torch.tensor(1.0, dtype=torch.float64), K).sample((4000,))
    assert draws.shape == (4000, K, D)
    which = torch.round(draws.mean(-1) / 40.0).long().clamp(0, T - 1)  # (4000, K)
    assert ((draws - centres[which]).abs() < 5.0).all()
    share = torch.bincount(which.reshape(-1), minlength=T).double() / which.numel()
    torch.testing.assert_close(share, weights, atol=0.02, rtol=0.0)  # 12,000 draws: sd <= 0.005


def test_zero_prototypes_is_the_isotropic_prior():
    m = PersonaModel(10, 20, 3, 4, n_prototypes=0)
    x = torch.randn(5, 3, 4)
    expected = torch.distributions.Normal(0.0, m.scale("persona_scale")).log_prob(x).sum((-1, -2))
    torch.testing.assert_close(m.persona_prior().log_prob(x), expected)
    assert not hasattr(m, "prototype_loc")


def test_item_prior_scale_fixed_or_empirical_bayes():
    fixed = PersonaModel(10, 20, 2, 3, item_prior_scale=2.0)
    assert float(fixed.scale("item_scale")) == 2.0
    assert "raw_item_scale" not in dict(fixed.named_parameters())
    eb = PersonaModel(10, 20, 2, 3, item_prior_scale=None)
    assert "raw_item_scale" in dict(eb.named_parameters())


def test_persona_and_bias_scales_fixed_or_empirical_bayes():
    fixed = PersonaModel(10, 20, 2, 3, persona_prior_scale=0.7, bias_prior_scale=0.5)
    assert float(fixed.scale("persona_scale")) == pytest.approx(0.7)
    assert float(fixed.scale("bias_scale")) == pytest.approx(0.5)
    names = dict(fixed.named_parameters())
    assert "raw_persona_scale" not in names and "raw_bias_scale" not in names
    assert {"raw_persona_scale", "raw_bias_scale"} <= set(dict(PersonaModel(10, 20, 2, 3).named_parameters()))
    with pytest.raises(bp.DataValidationError, match="persona_prior_scale"):
        bp.PersonaRecommender(persona_prior_scale=-1.0).fit(pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2]}))


def test_catalogue_adds_items_never_chosen_to_the_normaliser():
    rng = np.random.default_rng(0)
    r = pd.DataFrame({"user_id": np.repeat(np.arange(30), 5), "item_id": rng.integers(0, 40, 150)}).drop_duplicates()
    train = r[r["item_id"] != r["item_id"].iloc[0]]
    kw = dict(n_personas=2, n_factors=4, n_prototypes=0, max_epochs=2, progress=False)
    plain = bp.PersonaRecommender(**kw).fit(train)
    full = bp.PersonaRecommender(**kw).fit(train, catalogue=r["item_id"].unique())
    assert len(full.item_vocab_) == len(plain.item_vocab_) + 1 == r["item_id"].nunique()
    missing = r["item_id"].iloc[0]
    user = int(r.loc[r["item_id"] != missing, "user_id"].iloc[0])
    recs = full.recommend(user, n=len(full.item_vocab_))  # every unseen item, the unchosen one too
    assert missing in set(recs["item_id"])
    with pytest.raises(bp.DataTypeError, match="catalogue"):
        bp.PersonaRecommender(**kw).fit(train, catalogue=["a", "b"])
    with pytest.raises(bp.DataValidationError, match="catalogue"):
        bp.PersonaRecommender(**kw).fit(train, catalogue=[])


def _one_user_guide(alpha=0.1):
    """A user with 2 personas: persona 0 points at items 0-9, persona 1 at items 10-19."""
    K, D, N = 2, 2, 20
    model = PersonaModel(1, N, K, D, prevalence_concentration=alpha)
    guide = make_guide("meanfield", model, 0.01, torch.Generator().manual_seed(0))
    q = torch.zeros(N, D)
    q[:10, 0] = 1.0
    q[10:, 1] = 1.0
    p = torch.tensor([[[6.0, 0.0], [0.0, 6.0]]])
    guide.initialise(q, p, torch.tensor([[0.8, 0.2]]))
    return model, guide


def _batch(items, weight=1.0):
    it = torch.as_tensor([items])
    return Batch(torch.tensor([0]), it, torch.ones_like(it, dtype=torch.bool), torch.tensor([weight]))


def test_joint_likelihood_is_amp_cf_attention_with_the_prevalence_as_prior():
    """p(z=k, i | u) propto pi_k exp(p_k . q_i + b_i), one normaliser over all (k, j)."""
    torch.manual_seed(0)
    K, D, N = 3, 4, 30
    p, q, b = torch.randn(1, K, D), torch.randn(N, D), torch.randn(N)
    pi = torch.softmax(torch.randn(K), 0)
    pos = torch.tensor([[3, 7, 21]])
    full = torch.arange(N)
    got = implicit_log_likelihood(pi[None, None], p, q, b, pos, None, N, joint=True)
    # the sampled-softmax path, given every item as its sample, agrees with the exact one
    torch.testing.assert_close(implicit_log_likelihood(pi[None, None], p, q, b, pos, full, N, joint=True), got)
    joint = torch.log(pi)[:, None] + p[0] @ q.T + b  # (K, N): log of the unnormalised joint
    expected = torch.logsumexp(joint, 0) - torch.logsumexp(joint.reshape(-1), 0)
    torch.testing.assert_close(got[0], expected[pos[0]])
    # the shares are P(z = k | u), and the attention softmax_k(log pi_k + p_k . q_i) is
    # their posterior given the item: w_k softmax_k(i) / p(i | u)
    log_w = persona_shares(torch.log(pi), torch.logsumexp(p[0] @ q.T + b, -1))
    torch.testing.assert_close(log_w, torch.logsumexp(joint, 1) - torch.logsumexp(joint.reshape(-1), 0))
    attention = torch.softmax(torch.log(pi)[:, None] + p[0] @ q.T, 0)
    posterior = torch.softmax(log_w[:, None] + torch.log_softmax(p[0] @ q.T + b, 1), 0)
    torch.testing.assert_close(posterior, attention)
    # the mixture form puts the prevalence on the shares themselves
    mix = implicit_log_likelihood(pi[None, None], p, q, b, pos, None, N, joint=False)
    torch.testing.assert_close(
        mix[0], torch.logsumexp(torch.log(pi)[:, None] + torch.log_softmax(p[0] @ q.T + b, 1), 0)[pos[0]]
    )


def test_prevalence_guide_starts_at_the_given_shares_and_draws_near_zero_without_underflow():
    _, guide = _one_user_guide(alpha=0.1)
    torch.testing.assert_close(guide.prevalence_mean(torch.tensor([0])), torch.tensor([[0.9 / 1.2, 0.3 / 1.2]]))
    guide.set_prevalence_concentration(torch.tensor([[40.0, 0.1]]))  # an unused persona: gamma = alpha
    pi = guide.draw_prevalence(torch.tensor([0]), [np.random.default_rng(0)], 2000)[:, 0]
    assert float(torch.quantile(pi[:, 1], 0.5)) < 1e-3
    assert torch.all(pi > 0) and torch.allclose(pi.sum(-1), torch.ones(2000))


def test_dirichlet_draws_match_their_moments():
    _, guide = _one_user_guide()
    guide.set_prevalence_concentration(torch.tensor([[3.0, 1.0]]))
    pi = guide.draw_prevalence(torch.tensor([0]), [np.random.default_rng(1)], 20000)[:, 0].double()
    conc = guide.prevalence_concentration(torch.tensor([0]))[0].double()
    a0 = conc.sum()
    mean = conc / a0
    var = mean * (1 - mean) / (a0 + 1)
    torch.testing.assert_close(pi.mean(0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(pi.var(0), var, atol=0.005, rtol=0)


def test_float64_dirichlet_draws_keep_their_small_tail_and_a_finite_elbo():
    """At gamma = 0.1 about one draw in 6,000 lies below float32's smallest normal number,
    where torch clamps it; the guide draws in float64, so the tail is kept as drawn."""
    import pyro

    model, guide = _one_user_guide(alpha=0.1)
    guide.set_prevalence_concentration(torch.tensor([[0.1, 0.1]]))
    batch = _batch(list(range(8)) + [12, 15])
    site = pyro.poutine.trace(guide).get_trace(batch).nodes["prevalence"]
    assert site["value"].dtype == torch.float64
    draws = site["fn"].rsample((20000,))
    assert 0.0 < float(draws.min()) < torch.finfo(torch.float32).tiny  # ~7 of 40,000 expected
    elbo = pyro.infer.Trace_ELBO(max_plate_nesting=2)
    torch.manual_seed(0)
    for _ in range(200):
        loss = elbo.differentiable_loss(model, guide, batch)
        assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(guide.prevalence_raw_conc.grad).all()


def test_every_guide_parameter_gets_a_gradient_of_the_elbo():
    """No local step outside the bound: the prevalences move by the ELBO's gradients."""
    import pyro

    model, guide = _one_user_guide()
    loss = pyro.infer.Trace_ELBO(max_plate_nesting=2).differentiable_loss(
        model, guide, _batch(list(range(8)) + [12, 15])
    )
    loss.backward()
    for name in ("prevalence_raw_conc", "persona_loc", "item_loc"):
        grad = getattr(guide, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("n_prototypes, item_prior_scale", [(0, None), (3, 2.0)])
def test_fit_save_load_with_either_prior(tmp_path, n_prototypes, item_prior_scale):
    data, _ = bp.make_synthetic(n_users=40, n_items=80, n_tastes=3, interactions_per_user=(10, 20), seed=1)
    model = bp.PersonaRecommender(
        n_personas=2, n_factors=4, max_epochs=3, n_draws=10, progress=False,
        n_prototypes=n_prototypes, item_prior_scale=item_prior_scale,
    ).fit(data)  # fmt: skip
    model.save(tmp_path / "m.pt")
    back = bp.PersonaRecommender.load(tmp_path / "m.pt")
    assert back.n_prototypes == n_prototypes and back.item_prior_scale == item_prior_scale
    a, b = model.recommend([1, 2], n=5), back.recommend([1, 2], n=5)
    np.testing.assert_array_equal(a["item_id"], b["item_id"])
    np.testing.assert_allclose(a["score"], b["score"])


def test_prior_draws_follow_the_prototype_mixture():
    from bayes_persona.diagnostics.predictive import _prior_user_draws

    data, _ = bp.make_synthetic(n_users=30, n_items=60, n_tastes=3, interactions_per_user=(8, 15), seed=2)
    model = bp.PersonaRecommender(
        n_personas=2, n_factors=4, max_epochs=2, n_draws=10, progress=False, n_prototypes=3
    ).fit(data)
    m = model.model_
    with torch.no_grad():
        m.prototype_loc.copy_(torch.tensor([[10.0, 0, 0, 0], [0, 10.0, 0, 0], [0, 0, 10.0, 0]]))
        m.prototype_logits.copy_(torch.log(torch.tensor([0.6, 0.3, 0.1])))
        m.raw_persona_scale.fill_(-5.0)  # spread ~ 0.007
    p = _prior_user_draws(model, np.arange(20), 200, seed=0)["persona_factors"].reshape(-1, 4)
    nearest = torch.cdist(p, m.prototype_loc).min(1)
    assert float(nearest.values.max()) < 0.2  # every draw sits on a prototype
    share = torch.bincount(nearest.indices, minlength=3).double() / len(p)
    torch.testing.assert_close(share, torch.tensor([0.6, 0.3, 0.1], dtype=torch.double), atol=0.03, rtol=0)
