"""The guide-proposal Gibbs sampler (bayes_persona.diagnostics.refine)."""

from __future__ import annotations

import copy
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bayes_persona.diagnostics import sbc
from bayes_persona.diagnostics.refine import _warn_if_stuck, gibbs_draws
from bayes_persona.exceptions import DataValidationError, MixingWarning
from bayes_persona.persona.estimator import PersonaRecommender

pytestmark = pytest.mark.filterwarnings("ignore::bayes_persona.ConvergenceWarning")

S_Q, S_B, S_P, ALPHA = 0.7, 0.5, 0.9, 0.5


@pytest.fixture(scope="module")
def world_fit():
    w = sbc.simulate_prior_world(8, 30, 2, 2, (4, 8), persona_scale=S_P, item_scale=S_Q, bias_scale=S_B,
                                 prevalence_concentration=ALPHA, seed=3)  # fmt: skip
    m = PersonaRecommender(n_personas=2, n_factors=2, n_prototypes=0, item_prior_scale=S_Q, persona_prior_scale=S_P,
                           bias_prior_scale=S_B, prevalence_concentration=ALPHA, max_epochs=30, batch_size=8,
                           progress=False).fit(w.dataset, catalogue=w.dataset.items["item_id"])  # fmt: skip
    return w, m


def _raw(scale: float) -> float:
    """The guide's raw parameter of a scale (its inverse of softplus(raw) + 1e-5)."""
    return math.log(math.expm1(scale - 1e-5))


def test_without_data_and_with_the_prior_as_guide_every_move_is_taken(world_fit):
    # The target is then the prior, and so is the proposal: every item proposal must be
    # accepted (a sign error in the prior or proposal terms rejects some), every user's
    # candidates weigh the same (the current one kept 1 time in M), and the draws follow
    # the prior.
    _, fitted = world_fit
    m = PersonaRecommender(**fitted.get_params())
    for k, v in vars(fitted).items():
        if k.endswith("_"):
            setattr(m, k, v)
    m.seen_ = SimpleNamespace(rows_of=lambda u: (np.zeros(0, np.int64), np.zeros(0, np.int64)),
                              weights_of=lambda u: np.zeros(0))  # fmt: skip
    g = m.guide_ = type(fitted.guide_)(fitted.model_, 0.1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        g.item_loc.zero_(), g.bias_loc.zero_(), g.persona_loc.zero_()
        g.item_raw_scale.fill_(_raw(S_Q)), g.bias_raw_scale.fill_(_raw(S_B)), g.persona_raw_scale.fill_(_raw(S_P))
        g.set_prevalence_concentration(torch.full((8, 2), ALPHA))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MixingWarning)  # every move taken: nothing to warn of
        d = gibbs_draws(m, 200, burn=0, thin=1, user_candidates=10, random_state=1)
    items, users = d["acceptance"]
    assert (items == 1.0).all()
    assert users.mean() == pytest.approx(0.9, abs=0.04)
    assert d["item_factors"].std() == pytest.approx(S_Q, rel=0.08)
    assert d["persona_factors"].std() == pytest.approx(S_P, rel=0.1)


@pytest.mark.parametrize("guide", ["meanfield", "lowrank"])
def test_widened_proposals_still_draw_the_prior_when_there_are_no_data(world_fit, guide):
    # The target is the prior and the guide is the prior; proposals widened 1.6 times are
    # refused more often, but the chain must still draw the prior (a wrong density
    # correction of the widened proposals would inflate the draws' spread).
    _, fitted = world_fit
    m = PersonaRecommender(**{**fitted.get_params(), "guide": guide})
    for k, v in vars(fitted).items():
        if k.endswith("_") and k != "guide_":
            setattr(m, k, v)
    m.seen_ = SimpleNamespace(rows_of=lambda u: (np.zeros(0, np.int64), np.zeros(0, np.int64)),
                              weights_of=lambda u: np.zeros(0))  # fmt: skip
    from bayes_persona.persona.model import make_guide

    g = m.guide_ = make_guide(guide, fitted.model_, 0.1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        g.item_loc.zero_(), g.bias_loc.zero_(), g.persona_loc.zero_()
        g.item_raw_scale.fill_(_raw(S_Q)), g.bias_raw_scale.fill_(_raw(S_B))
        if guide == "meanfield":
            g.persona_raw_scale.fill_(_raw(S_P))
        else:
            g.persona_raw_diag.fill_(_raw(S_P)), g.persona_cov_factor.zero_()
        g.set_prevalence_concentration(torch.full((8, 2), ALPHA))
    d = gibbs_draws(m, 300, burn=20, thin=2, user_candidates=10, proposal_scale=1.6, random_state=2)
    items, users = d["acceptance"]
    assert 0.3 < items.mean() < 0.9 and 0.3 < users.mean() < 0.95  # widened: some moves refused
    assert d["item_factors"].std() == pytest.approx(S_Q, rel=0.08)
    assert d["persona_factors"].std() == pytest.approx(S_P, rel=0.1)


def test_draws_have_the_shapes_of_posterior_draws_and_move(world_fit):
    w, m = world_fit
    d = gibbs_draws(m, 12, burn=2, thin=1, user_candidates=5)
    ref = sbc.posterior_draws(m, 12)
    for k in ("item_factors", "item_bias", "persona_factors", "log_shares"):
        assert d[k].shape == ref[k].shape and np.isfinite(d[k]).all(), k
    np.testing.assert_allclose(np.exp(d["log_shares"]).sum(-1), 1.0, rtol=1e-9)
    assert 0 < d["acceptance"][0].mean() < 1 and 0 < d["acceptance"][1].mean() < 1
    assert d["item_factors"].std(0).mean() > 0  # the items move
    again = gibbs_draws(m, 12, burn=2, thin=1, user_candidates=5)
    np.testing.assert_array_equal(again["item_factors"], d["item_factors"])  # seeded


def test_refuses_bad_arguments(world_fit):
    _, m = world_fit
    for kwargs, name in (({"num_samples": 0}, "num_samples"), ({"thin": 0}, "thin"),
                         ({"user_candidates": 1}, "user_candidates"), ({"burn": -1}, "burn"),
                         ({"proposal_scale": 0.0}, "proposal_scale")):  # fmt: skip
        n = kwargs.pop("num_samples", 5)
        with pytest.raises(DataValidationError, match=name):
            gibbs_draws(m, n, **kwargs)
    with pytest.raises(DataValidationError, match="gibbs and resample"):
        sbc.simulation_based_calibration(1, gibbs=True, resample=3)


def test_warns_when_the_guide_proposes_items_the_posterior_refuses(world_fit):
    # The fitted guide proposes well enough at thin=3: no warning. Items proposed from a
    # guide seven times wider than the prior land mostly where the posterior has no mass,
    # almost every item proposal is refused, and the repeated draws must not pass silently.
    _, fitted = world_fit
    with warnings.catch_warnings():
        warnings.simplefilter("error", MixingWarning)
        gibbs_draws(fitted, 10, burn=2, thin=3, user_candidates=5)
    m = copy.deepcopy(fitted)
    with torch.no_grad():
        m.guide_.item_raw_scale.fill_(_raw(5.0))
    with pytest.warns(MixingWarning, match="thin=3 about") as rec:
        d = gibbs_draws(m, 10, burn=2, thin=3, user_candidates=5)
    assert d["acceptance"][0, 2:].mean() < 0.2
    assert len([w for w in rec if issubclass(w.category, MixingWarning)]) == 1
    assert rec[0].filename == __file__  # points at the caller, not the library


@pytest.mark.parametrize(
    ("items", "users", "thin", "warns"),
    [
        (0.064, 0.254, 2, True),  # a 500-user planted world, the demo's fit: 88% of draws repeat
        (0.68, 0.55, 2, False),  # worlds of the simulation-based calibration: 20%
        (0.20, 0.90, 2, True),  # 64%
        (0.20, 0.90, 4, False),  # 41%: thinning more is the remedy
        (0.90, 0.25, 2, True),  # the users' blocks count too: 56%
    ],
)
def test_the_mixing_rule_counts_kept_draws_that_repeat(items, users, thin, warns):
    acceptance = np.array([[items] * 6, [users] * 6])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _warn_if_stuck(acceptance, thin)
    assert any(issubclass(w.category, MixingWarning) for w in rec) == warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_stuck(np.zeros((2, 0)), 1)  # no sweeps after burn-in: nothing measured


def test_log_space_dirichlet_draws_have_the_dirichlet_moments():
    from bayes_persona.diagnostics.refine import _dirichlet

    conc = np.array([[0.05, 0.3, 2.0], [4.0, 4.0, 1.0]])
    x = _dirichlet(conc, 40_000, np.random.default_rng(0))
    assert (x > 0).all() and np.allclose(x.sum(-1), 1.0)
    a0 = conc.sum(1, keepdims=True)
    mean, var = conc / a0, conc * (a0 - conc) / (a0**2 * (a0 + 1))
    np.testing.assert_allclose(x.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(x.var(0), var, rtol=0.06, atol=1e-4)
