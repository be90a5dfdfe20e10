"""The per-user importance-weighted bound (bayes_persona.svi.importance)."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayes_persona as bp
from bayes_persona.exceptions import DataValidationError
from bayes_persona.svi.importance import LocalImportanceELBO, _LocalParticles

pytestmark = pytest.mark.filterwarnings("ignore::bayes_persona.ConvergenceWarning")

FAST = {"n_factors": 4, "max_epochs": 20, "batch_size": 32, "progress": False}


def _normal_model(x: torch.Tensor, subsample: torch.Tensor | None = None) -> None:
    """z_u ~ N(0, 1), x_u ~ N(z_u, 1): log p(x_u) = log N(x_u | 0, sqrt 2)."""
    with pyro.plate("users", len(x), subsample=subsample, dim=-1) as u:
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x[u])


def _wide_guide(x: torch.Tensor, subsample: torch.Tensor | None = None) -> None:
    """Centred on the posterior mean, twice as wide as the posterior: a proposal, not the posterior."""
    with pyro.plate("users", len(x), subsample=subsample, dim=-1) as u:
        pyro.sample("z", dist.Normal(x[u] / 2, 2.0 * math.sqrt(0.5)))


def test_bound_rises_to_the_evidence_with_particles() -> None:
    # Exact log evidence of a conjugate model; the ELBO of a too-wide guide falls short of it,
    # the bound with many draws per user reaches it, and a subsample of users scaled by U / B
    # estimates the same sum.
    torch.manual_seed(0)
    x = torch.randn(40) * 1.5
    exact = dist.Normal(0.0, math.sqrt(2.0)).log_prob(x).sum().item()
    bound = {}
    for M in (1, 4, 1000):
        torch.manual_seed(1)
        loss = LocalImportanceELBO(M, particle_dim=-2)
        bound[M] = -np.mean([loss.differentiable_loss(_normal_model, _wide_guide, x).item() for _ in range(50)])
    assert bound[1] < bound[4] < bound[1000] <= exact + 0.05
    assert exact - bound[1] > 5.0  # the gap the particles close
    assert bound[1000] == pytest.approx(exact, abs=0.3)
    torch.manual_seed(2)
    loss = LocalImportanceELBO(1000, particle_dim=-2)
    halves = [
        -loss.differentiable_loss(_normal_model, _wide_guide, x, torch.randperm(40)[:20]).item() for _ in range(200)
    ]
    assert np.mean(halves) == pytest.approx(exact, abs=3 * np.std(halves) / math.sqrt(200) + 0.3)


def test_refuses_bad_particles_and_unreparameterised_sites() -> None:
    with pytest.raises(ValueError, match="num_particles"):
        LocalImportanceELBO(0)

    def guide(x):
        with pyro.plate("users", len(x), dim=-1):
            pyro.sample("z", dist.Poisson(torch.ones(len(x))))

    def model(x):
        with pyro.plate("users", len(x), dim=-1):
            pyro.sample("z", dist.Poisson(torch.ones(len(x))))

    with pytest.raises(ValueError, match="reparameterised"):
        LocalImportanceELBO(2, particle_dim=-2).differentiable_loss(model, guide, torch.zeros(3))


@pytest.fixture(scope="module")
def fitted_parts(small_world):
    """A short default-form fit, and its model, guide and one batch of its users."""
    seen = {}
    real = bp.fitting.run_svi

    def spy(model, guide, next_batch, gen, config, *a, **k):
        seen.update(model=model, guide=guide, next_batch=next_batch)
        return real(model, guide, next_batch, gen, config, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bp.fitting, "run_svi", spy)
        bp.PersonaRecommender(n_personas=3, **FAST).fit(small_world)
    return seen["model"], seen["guide"], seen["next_batch"](torch.Generator().manual_seed(1))


def test_one_particle_is_the_elbo(fitted_parts) -> None:
    model, guide, batch = fitted_parts
    torch.manual_seed(0)
    elbo = pyro.infer.Trace_ELBO(max_plate_nesting=2).differentiable_loss(model, guide, batch)
    torch.manual_seed(0)
    one = LocalImportanceELBO(1).differentiable_loss(model, guide, batch)
    assert one.item() == pytest.approx(elbo.item(), rel=1e-6)


def test_only_the_users_latents_are_drawn_per_particle(fitted_parts) -> None:
    model, guide, batch = fitted_parts
    with _LocalParticles(5, "users", -3):
        tr = pyro.poutine.trace(guide).get_trace(batch)
    B = len(batch.users)
    assert tr.nodes["persona_factors"]["value"].shape[:3] == (5, B, 1)
    assert tr.nodes["prevalence"]["value"].shape[:3] == (5, B, 1)
    assert tr.nodes["item_factors"]["value"].shape[0] == len(batch.item_subsample(model.n_items)[0])
    # each particle is its own draw
    p = tr.nodes["persona_factors"]["value"]
    assert not torch.allclose(p[0], p[1])


def test_more_particles_tighten_the_persona_bound(fitted_parts) -> None:
    model, guide, batch = fitted_parts
    torch.manual_seed(3)
    losses = {M: [LocalImportanceELBO(M).differentiable_loss(model, guide, batch).item() for _ in range(20)] for M in (1, 16)}
    gap = np.mean(losses[1]) - np.mean(losses[16])
    se = math.sqrt(np.var(losses[1]) / 20 + np.var(losses[16]) / 20)
    assert gap > 3 * se and gap > 0


def test_fit_with_user_particles(small_world) -> None:
    m = bp.PersonaRecommender(n_personas=3, user_particles=4, **FAST).fit(small_world)
    assert np.isfinite(m.elbo_).all()
    assert m.get_params()["user_particles"] == 4
    user = small_world.ratings["user_id"].iloc[0]
    assert len(m.recommend(user, n=5)) == 5
    assert "final epoch importance-weighted bound (4 draws per user)" in repr(m.summary())
    # the ELBO-fitted model's bound is lower than the importance-weighted one's on the same data
    base = bp.PersonaRecommender(n_personas=3, **FAST).fit(small_world)
    assert np.mean(m.elbo_[-20:]) > np.mean(base.elbo_[-20:])


@pytest.mark.parametrize(
    "kwargs",
    [{"n_personas": 1}, {"n_personas": 3, "n_negatives": 30}, {"n_personas": 3, "guide": "lowrank"},
     {"n_personas": 3, "likelihood": "mixture"}],
)  # fmt: skip
def test_every_model_form_fits_with_user_particles(small_world, kwargs) -> None:
    # K = 1 (no prevalence site), the sampled softmax, the low-rank guide, the mixture form
    m = bp.PersonaRecommender(user_particles=3, **{**FAST, "max_epochs": 5}, **kwargs).fit(small_world)
    assert np.isfinite(m.elbo_).all()
    items = small_world.ratings["item_id"].iloc[:2].tolist()
    assert np.isfinite(m.explain_draws(small_world.ratings["user_id"].iloc[0], items)).all()


def test_user_particles_need_implicit_feedback(small_world) -> None:
    rated = small_world.ratings.assign(rating=3.0)
    with pytest.raises(DataValidationError, match="user_particles"):
        bp.PersonaRecommender(feedback="explicit", user_particles=2, **FAST).fit(rated)
