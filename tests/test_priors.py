"""The persona prior (taste prototypes), the fixed item scale and the prevalences' conjugate
local step (see bayes_persona.model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bayes_persona as bp
from bayes_persona.model import Batch, PersonaModel, make_guide


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


def _one_user_guide(alpha=0.1):
    """A user with 2 personas: persona 0 points at items 0-9, persona 1 at items 10-19."""
    K, D, N = 2, 2, 20
    model = PersonaModel(1, N, K, D, prevalence_concentration=alpha)
    guide = make_guide("meanfield", model, 0.01, torch.Generator().manual_seed(0))
    q = torch.zeros(N, D)
    q[:10, 0] = 1.0
    q[10:, 1] = 1.0
    p = torch.tensor([[[6.0, 0.0], [0.0, 6.0]]])
    guide.initialise(q, p, torch.tensor([[0.5, 0.5]]), torch.tensor([2]), alpha)
    return model, guide


def _batch(items, weight=1.0):
    it = torch.as_tensor([items])
    return Batch(torch.tensor([0]), it, torch.ones_like(it, dtype=torch.bool), torch.tensor([weight]))


def test_conjugate_step_counts_the_items_each_persona_explains():
    _, guide = _one_user_guide(alpha=0.1)
    guide.collapsed_precision = False  # the plain conjugate step
    batch = _batch(list(range(8)) + [12, 15])
    guide.update_prevalence(batch, 0.1)
    gamma = guide.prevalence_concentration(torch.tensor([0]))[0].detach()
    # 8 items of persona 0's taste and 2 of persona 1's: gamma = alpha + expected counts
    torch.testing.assert_close(gamma, torch.tensor([8.1, 2.1]), atol=0.05, rtol=0)
    # with the precision of the z-summed likelihood: same mean, counts scaled by a ratio <= 1
    guide.collapsed_precision = True
    guide.update_prevalence(batch, 0.1)
    scaled = guide.prevalence_concentration(torch.tensor([0]))[0].detach() - 0.1
    ratio = scaled / (gamma - 0.1)
    torch.testing.assert_close(ratio[0], ratio[1], rtol=1e-3, atol=0)
    assert 0.8 < float(ratio[0]) <= 1.0


def test_conjugate_step_scales_subsampled_histories_and_prunes_unused_personas():
    _, guide = _one_user_guide(alpha=0.1)
    guide.update_prevalence(_batch(list(range(5)), weight=3.0), 0.1)
    gamma = guide.prevalence_concentration(torch.tensor([0]))[0].detach()
    torch.testing.assert_close(gamma, torch.tensor([15.1, 0.1]), atol=0.05, rtol=0)
    # draws of the unused persona's prevalence are near zero, not at a floor
    rng = [np.random.default_rng(0)]
    pi = guide.draw_prevalence(torch.tensor([0]), rng, 2000)[:, 0]
    assert float(torch.quantile(pi[:, 1], 0.5)) < 1e-3
    assert torch.all(pi > 0) and torch.allclose(pi.sum(-1), torch.ones(2000))


def test_dirichlet_draws_match_their_moments():
    _, guide = _one_user_guide()
    with torch.no_grad():
        guide.prevalence_raw_conc.copy_(torch.log(torch.expm1(torch.tensor([[3.0, 1.0]]))))
    pi = guide.draw_prevalence(torch.tensor([0]), [np.random.default_rng(1)], 20000)[:, 0].double()
    conc = guide.prevalence_concentration(torch.tensor([0]))[0].double()
    a0 = conc.sum()
    mean = conc / a0
    var = mean * (1 - mean) / (a0 + 1)
    torch.testing.assert_close(pi.mean(0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(pi.var(0), var, atol=0.005, rtol=0)


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


def test_effective_count_ratio_is_one_for_sharp_and_zero_for_ambiguous_assignments():
    from bayes_persona.model import effective_count_ratio

    w = torch.ones(1, 200)
    sharp = torch.zeros(1, 200, 3)
    sharp[0, :120, 0] = 1.0
    sharp[0, 120:, 1] = 1.0
    torch.testing.assert_close(effective_count_ratio(sharp, w), torch.tensor([1.0]))
    ambiguous = torch.tensor([0.6, 0.4, 0.0]).expand(1, 200, 3)
    assert float(effective_count_ratio(ambiguous, w)) < 0.02
    # K = 2: n * ratio is the curvature of the z-summed log-likelihood in pi, times pi (1 - pi)
    torch.manual_seed(0)
    f = torch.rand(200, 2)
    pi = 0.3
    r1 = pi * f[:, 0] / (pi * f[:, 0] + (1 - pi) * f[:, 1])
    r = torch.stack([r1, 1 - r1], -1)[None]
    m = float(r1.mean())
    curvature = float((((r1 - m) / (m * (1 - m))) ** 2).sum())  # at pi = m, the fixed point
    hard = float(((r1 > 0.5).float() - m).pow(2).sum() / (m * (1 - m)))
    expected = (curvature * m * (1 - m) + 1) / (hard + 1)
    torch.testing.assert_close(effective_count_ratio(r, torch.ones(1, 200)), torch.tensor([expected]), rtol=1e-4, atol=1e-5)


def test_prior_draws_follow_the_prototype_mixture():
    from bayes_persona.inference_data import _prior_user_draws

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
