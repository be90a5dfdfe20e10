"""Each user's ELBO term (bayes_persona.diagnostics.evidence.user_elbo)."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import bayes_persona as bp
from bayes_persona.diagnostics.evidence import _full_batch, user_elbo


@pytest.fixture(scope="module")
def fitted():
    data, _ = bp.make_synthetic(n_users=120, n_items=200, n_tastes=4, interactions_per_user=(10, 30), seed=0)
    return bp.PersonaRecommender(n_personas=3, n_factors=8, max_epochs=60, progress=False, random_state=0).fit(data)


def test_user_terms_add_up_to_pyros_elbo(fitted) -> None:
    """The users' terms plus the items' term (-KL, in closed form) are Pyro's Trace_ELBO on
    the whole data, estimated independently: within 25 nats of about 16,500 (the two
    estimates' standard errors are about 5). Scored 50 users at a time of 120, so a term
    left scaled by the subsample (x 2.4), or a missing prior or entropy term, misses."""
    ev = user_elbo(fitted, n_particles=32, n_item_draws=8, batch_size=50)
    g, mod = fitted.guide_, fitted.model_
    batch = _full_batch(fitted.seen_, torch.arange(len(fitted.user_vocab_)))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        loss = np.mean([pyro.infer.Trace_ELBO(max_plate_nesting=2).differentiable_loss(mod, g, batch).item()
                        for _ in range(200)])  # fmt: skip
        kl = (kl_divergence(Normal(g.item_loc, g._pos(g.item_raw_scale)), Normal(0.0, mod.scale("item_scale"))).sum()
              + kl_divergence(Normal(g.bias_loc, g._pos(g.bias_raw_scale)), Normal(0.0, mod.scale("bias_scale"))).sum())  # fmt: skip
    assert abs(ev["elbo"].sum() - (-loss + kl.item())) < 25.0, (ev["elbo"].sum(), -loss + kl.item())
    assert (ev["iw_bound"] >= ev["elbo"] - 1e-9).all()
    assert list(ev["user_id"]) == list(fitted.user_vocab_.ids)
    assert (ev["n_interactions"] == fitted.seen_.counts.numpy()).all()


def test_a_user_given_another_users_personas_scores_lower(fitted) -> None:
    """Swap two users' persona factors: both users' ELBO terms fall, the others' do not move."""
    before = user_elbo(fitted, n_particles=16, n_item_draws=2)
    g = fitted.guide_
    with torch.no_grad():
        saved = g.persona_loc.detach().clone()
        g.persona_loc[[0, 1]] = saved[[1, 0]]
    try:
        after = user_elbo(fitted, n_particles=16, n_item_draws=2)
    finally:
        with torch.no_grad():
            g.persona_loc.copy_(saved)
    assert (after["elbo"][:2].to_numpy() < before["elbo"][:2].to_numpy() - 1.0).all()
    np.testing.assert_allclose(after["elbo"][2:], before["elbo"][2:], rtol=1e-9)


def test_user_elbo_is_seeded_and_leaves_torch_alone(fitted) -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = user_elbo(fitted, n_particles=4, n_item_draws=1, random_state=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = user_elbo(fitted, n_particles=4, n_item_draws=1, random_state=3)
    c = user_elbo(fitted, n_particles=4, n_item_draws=1, random_state=4)
    assert a.equals(b) and not a.equals(c)


def test_user_elbo_refuses_bad_arguments(fitted) -> None:
    with pytest.raises(bp.DataValidationError, match="n_particles"):
        user_elbo(fitted, n_particles=0)
    with pytest.raises(bp.NotFittedError):
        user_elbo(bp.PersonaRecommender())
