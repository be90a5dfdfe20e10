"""End to end: planted data -> InferenceData -> netCDF -> every check -> every plot.

The *well-specified* model is the planted truth itself loaded into a fitted model's guide
(an "oracle" posterior with negligible spread): under it the observed data are one more
replicate, so every predictive p-value must be unremarkable. The *misspecified* model is a
fitted K = 1 model on users who all have three tastes; the per-user taste distribution
check must reject it. A fitted K = 3 model is checked too (slow, expected to fail today:
see ``test_fitted_three_persona_model_reproduces_planted_data``).
"""

from __future__ import annotations

import os

import arviz as az
import numpy as np
import pandas as pd
import pytest
import torch

import bayes_persona as bp
from bayes_persona.diagnostics import comparison, plotting
from bayes_persona.diagnostics import ppc as checks
from bayes_persona.diagnostics import sbc as calibration
from bayes_persona.diagnostics.inference_data import to_inference_data
from bayes_persona.persona.initialization import prevalence_from_shares

torch.set_num_threads(1)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

FIT = dict(n_factors=8, max_epochs=40, batch_size=64, n_draws=50, progress=False)


def pin_to_truth(model: bp.PersonaRecommender, truth: bp.SyntheticTruth) -> bp.PersonaRecommender:
    """Put the planted parameters into ``model``'s mean-field guide with ~zero spread."""
    g = model.guide_
    ui = pd.Index(truth.user_ids).get_indexer(model.user_vocab_.ids)
    ii = pd.Index(truth.item_ids).get_indexer(model.item_vocab_.ids)
    f32 = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    w = np.clip(truth.persona_weights[ui], 1e-4, None)
    w /= w.sum(1, keepdims=True)
    with torch.no_grad():
        g.item_loc.copy_(f32(truth.item_factors[ii]))
        g.bias_loc.copy_(f32(truth.item_bias[ii]))
        g.persona_loc.copy_(f32(truth.persona_factors[ui]))
        if model.likelihood == "joint":  # the prevalences whose shares are the planted weights
            w = prevalence_from_shares(
                w, truth.persona_factors[ui], truth.item_factors[ii], truth.item_bias[ii], floor=1e-4
            )
        g.set_prevalence_concentration(f32(1e6 * w))  # Dirichlet ~ point mass
        for name in (
            "item_raw_scale",
            "bias_raw_scale",
            "persona_raw_scale",
        ):
            getattr(g, name).fill_(-12.0)
    model._cache = {}
    return model


@pytest.fixture(scope="module")
def ppc_world():
    data, truth = bp.make_synthetic(
        n_users=120, n_items=200, n_tastes=4, tastes_per_user=(3, 3),
        interactions_per_user=(15, 60), seed=0,
    )  # fmt: skip
    return data, truth, bp.random_holdout(data, 0.2, seed=0)


@pytest.fixture(scope="module")
def oracle(ppc_world):
    data, truth, split = ppc_world
    assert truth.persona_factors.shape[2] == FIT["n_factors"]
    model = bp.PersonaRecommender(n_personas=3, **{**FIT, "max_epochs": 1}).fit(split.train)
    return pin_to_truth(model, truth)


@pytest.fixture(scope="module")
def one_persona(ppc_world):
    return bp.PersonaRecommender(n_personas=1, **FIT).fit(ppc_world[2].train)


@pytest.fixture(scope="module")
def oracle_idata(ppc_world, oracle, tmp_path_factory):
    idata = to_inference_data(oracle, 100, test=ppc_world[2].test, prior=True)
    path = tmp_path_factory.mktemp("idata") / "oracle.nc"
    idata.to_netcdf(str(path))
    return idata, az.from_netcdf(str(path))


def test_netcdf_round_trip_keeps_every_group(oracle_idata):
    idata, back = oracle_idata
    assert set(idata.groups()) == set(back.groups()) >= {
        "posterior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data",
        "prior", "prior_predictive",
    }  # fmt: skip
    for group in idata.groups():
        a, b = getattr(idata, group), getattr(back, group)
        for var in a.data_vars:
            np.testing.assert_array_equal(a[var].values, b[var].values)
        for c in a.coords:
            np.testing.assert_array_equal(a[c].values, b[c].values)


def test_every_check_is_unremarkable_for_the_planted_truth(oracle_idata):
    _, back = oracle_idata
    frame = checks.posterior_predictive_checks(back)
    assert set(frame["check"]) == {
        "user_activity",
        "item_popularity",
        "taste_distribution",
        "heldout_lpd",
    }
    assert frame["ppp"].between(0.01, 0.99).all(), frame[
        ["check", "statistic", "observed", "rep_mean", "ppp"]
    ]


def test_prior_predictive_checks_run_on_the_reloaded_idata(oracle_idata):
    _, back = oracle_idata
    frame = checks.prior_predictive_checks(back)
    assert (frame["group"] == "prior_predictive").all()
    assert "heldout_lpd" not in set(frame["check"])
    assert frame["ppp"].between(0, 1).all()


def test_taste_check_rejects_one_persona_for_three_taste_users(ppc_world, one_persona, oracle_idata):
    idata = to_inference_data(one_persona, 60, test=ppc_world[2].test)
    k1 = checks.taste_distribution_check(idata)
    truth = checks.taste_distribution_check(oracle_idata[1])
    assert k1["ppp"].iloc[0] < 0.01
    assert 0.01 < truth["ppp"].iloc[0] < 0.99
    # and the held-out ELPD prefers the truth
    table = comparison.compare_heldout({"truth": oracle_idata[1], "K=1": idata})
    assert table.index[0] == "truth"


def test_every_plot_draws_a_png(ppc_world, oracle, one_persona, oracle_idata, tmp_path):
    data, _, split = ppc_world
    recs = oracle.recommend([1, 2], n=6)
    frame = checks.posterior_predictive_checks(oracle_idata[1])
    sbc = calibration.simulation_based_calibration(
        2, n_users=15, n_items=30, interactions_per_user=(5, 10), num_samples=19,
        fit_kwargs={"max_epochs": 10},
    )  # fmt: skip
    figures = {
        "elbo": plotting.plot_elbo(one_persona).figure,
        "persona_map": plotting.plot_persona_map(oracle, 1).figure,
        "explanations": plotting.plot_explanations(recs, user_id=1).figure,
        "ppc": plotting.plot_ppc(frame),
        "ppc_user": plotting.plot_ppc(
            checks.taste_distribution_check(oracle_idata[1], per_user=True).head(4)
        ),
        "tdd": plotting.plot_tdd_by_rank(
            {
                "truth": oracle.recommend([1, 2, 3, 4], n=8),
                "K=1": one_persona.recommend([1, 2, 3, 4], n=8),
            },
            split.train,
            data.items,
        ).figure,  # fmt: skip
        "coverage": plotting.plot_coverage(sbc).figure,
        "ranks": plotting.plot_rank_histograms(sbc),
    }
    for name, fig in figures.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path)
        assert path.stat().st_size > 2000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    raises=AssertionError,
    reason="issue 13: on this small world (120 users, 200 items, 200 epochs at the default step) "
    "replicated users are flatter than the observed ones: every statistic but one gets ppp 0 or 1, "
    "top-category share 0.01 (measured 2026-12-07 at 81a7e59); after 1000 epochs (also with lr 0.05, "
    "item_prior_scale=5 or the low-rank guide) category count, entropy, long-tail share and held-out "
    "lpd still get ppp 0 or 1. The planted generator draws a user's items without "
    "replacement and the likelihood treats them as independent choices; a successive-choice "
    "likelihood (tried outside the library, 1000 epochs) brought popularity, Gini, long-tail share, TDD "
    "and held-out lpd within (0.01, 0.99) but not the category count or entropy (ppp 1.00)",
)
def test_fitted_three_persona_model_reproduces_planted_data(ppc_world):
    epochs = 40 if os.environ.get("BAYES_PERSONA_TEST_SIZE") == "smoke" else 200
    model = bp.PersonaRecommender(n_personas=3, **{**FIT, "max_epochs": epochs}).fit(ppc_world[2].train)
    frame = checks.posterior_predictive_checks(to_inference_data(model, 100, test=ppc_world[2].test))
    assert frame["ppp"].between(0.01, 0.99).all(), frame[["check", "statistic", "ppp"]]
