"""Predictive checks: exact values on hand-built InferenceData, frame layout, errors."""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import bayes_persona as bp
from bayes_persona.diagnostics import ppc as checks
from bayes_persona.diagnostics.inference_data import to_inference_data
from bayes_persona.exceptions import DataTypeError, DataValidationError

torch.set_num_threads(1)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def toy_idata(observed, replicated, obs_user, n_users, weights, heldout=None):
    """InferenceData in to_inference_data's layout from plain arrays.

    observed (n,), replicated (S, n) catalogue positions; obs_user (n,) user positions;
    weights (N, C) category weights; heldout: (loglik (S, m), rep_log_density (S, m)).
    """
    users = np.arange(1, n_users + 1)
    N, C = weights.shape
    n = len(observed)
    obs_coords = {
        "obs": np.arange(n),
        "user_id": ("obs", users[obs_user]),
        "item_id": ("obs", 100 + np.asarray(observed)),
    }
    groups = {
        "observed_data": xr.Dataset(
            {"choice": (("obs",), np.asarray(observed))}, coords=obs_coords
        ),
        "posterior_predictive": xr.Dataset(
            {"choice": (("chain", "draw", "obs"), np.asarray(replicated)[None])},
            coords={"chain": [0], "draw": np.arange(len(replicated)), **obs_coords},
        ),
        "constant_data": xr.Dataset(
            {
                "category_weight": (("catalog", "category"), weights),
                "item_popularity": (("catalog",), np.bincount(observed, minlength=N)),
                "n_interactions": (("user",), np.bincount(obs_user, minlength=n_users)),
            },
            coords={
                "catalog": 100 + np.arange(N),
                "category": [f"c{j}" for j in range(C)],
                "user": users,
            },
        ),
    }
    if heldout is not None:
        ll, rep_ld = heldout
        m = ll.shape[1]
        hc = {
            "heldout_obs": np.arange(m),
            "heldout_user_id": ("heldout_obs", np.ones(m, int)),
            "heldout_item_id": ("heldout_obs", np.arange(m)),
        }
        groups["log_likelihood"] = xr.Dataset(
            {"heldout_choice": (("chain", "draw", "heldout_obs"), ll[None])},
            coords={"chain": [0], "draw": np.arange(len(ll)), **hc},
        )
        groups["posterior_predictive"]["heldout_log_density"] = (
            ("chain", "draw", "heldout_obs"),
            rep_ld[None],
        )
        groups["posterior_predictive"] = groups["posterior_predictive"].assign_coords(hc)
    return az.InferenceData(**groups)


# 2 users, 4 items in 2 categories: items 0, 1 -> c0; items 2, 3 -> c1
W = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
OBS = np.array([0, 1, 2, 3, 0, 1])  # user 1 spreads over both categories, user 2 stays in c0
USERS = np.array([0, 0, 0, 0, 1, 1])


def test_identical_replicates_give_mid_p_one_half():
    idata = toy_idata(OBS, np.tile(OBS, (5, 1)), USERS, 2, W)
    frame = checks.posterior_predictive_checks(idata)
    np.testing.assert_allclose(frame["ppp"], 0.5)
    assert list(frame.columns) == list(checks.CHECK_COLUMNS)
    row = frame.set_index("statistic").loc["n_categories"]
    assert row["observed"] == pytest.approx(1.5)  # (2 + 1) / 2 users
    ent = frame.set_index("statistic").loc["category_entropy", "observed"]
    assert ent == pytest.approx(np.log(2) / 2)


def test_concentrated_replicates_are_flagged():
    # every replicate puts both users in one category only
    rep = np.tile(np.array([0, 1, 0, 1, 0, 1]), (40, 1))
    idata = toy_idata(OBS, rep, USERS, 2, W)
    act = checks.user_activity_check(idata).set_index("statistic")
    assert act.loc["n_categories", "ppp"] == 0.0  # replicated users never reach 2 categories
    assert act.loc["top_category_share", "ppp"] == 1.0
    taste = checks.taste_distribution_check(idata)
    assert (
        taste["ppp"].iloc[0] == 0.0
    )  # obs far from replicates, replicates identical to each other
    assert isinstance(taste["observed_draws"].iloc[0], np.ndarray)


def test_per_user_rows():
    rng = np.random.default_rng(0)
    rep = rng.integers(0, 4, size=(30, len(OBS)))
    idata = toy_idata(OBS, rep, USERS, 2, W)
    per = checks.user_activity_check(idata, ["category_entropy"], per_user=True)
    assert list(per["user_id"]) == [1, 2]
    assert list(per.columns[:4]) == ["check", "group", "statistic", "user_id"]
    assert per["replicated"].map(len).eq(30).all()
    taste = checks.taste_distribution_check(idata, per_user=True, distance="tv")
    assert set(taste["statistic"]) == {"tdd_tv"} and len(taste) == 2


def test_item_popularity_statistics():
    idata = toy_idata(OBS, np.tile(np.array([0, 0, 0, 0, 0, 1]), (3, 1)), USERS, 2, W)
    frame = checks.item_popularity_check(
        idata, ["gini", "long_tail_share", "n_items"], head_fraction=0.25
    ).set_index("statistic")
    assert frame.loc["gini", "observed"] == pytest.approx(checks.gini(np.array([2, 2, 1, 1])))
    assert frame.loc["long_tail_share", "observed"] == pytest.approx(
        4 / 6
    )  # head = 1 item with 2 picks
    assert frame.loc["long_tail_share", "rep_mean"] == pytest.approx(1 / 6)
    assert frame.loc["n_items", "observed"] == 4 and frame.loc["n_items", "rep_mean"] == 2
    assert frame.loc["gini", "ppp"] == 1.0


def test_gini_and_ppp_value():
    assert checks.gini(np.ones(5)) == pytest.approx(0.0)
    assert checks.gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)
    assert checks.ppp_value(np.array([1, 2, 3, 4]), 2) == pytest.approx(0.5 + 0.125)
    assert checks.ppp_value(np.array([1.0, 2.0]), np.array([0.0, 3.0])) == pytest.approx(0.5)
    assert np.isnan(checks.ppp_value(np.array([np.nan]), 1.0))


def test_heldout_lpd_check_compares_predictive_densities():
    S, m = 50, 8
    ll = np.log(np.full((S, m), 0.1))  # observed: p = 0.1 under every draw
    rep_ld = np.log(np.full((S, m), 0.1)) + np.linspace(-0.2, 0.2, S)[:, None]
    idata = toy_idata(OBS, np.tile(OBS, (S, 1)), USERS, 2, W, heldout=(ll, rep_ld))
    row = checks.heldout_lpd_check(idata).iloc[0]
    assert row["observed"] == pytest.approx(np.log(0.1))
    assert row["ppp"] == pytest.approx(0.5)
    assert row["n"] == m
    per = checks.heldout_lpd_check(idata, per_user=True)
    assert list(per["user_id"]) == [1]
    assert "heldout_lpd" in set(checks.posterior_predictive_checks(idata)["check"])


def test_argument_errors():
    idata = toy_idata(OBS, np.tile(OBS, (3, 1)), USERS, 2, W)
    with pytest.raises(DataValidationError, match="statistics"):
        checks.user_activity_check(idata, ["variance"])
    with pytest.raises(DataValidationError, match="group"):
        checks.user_activity_check(idata, group="posterior")
    with pytest.raises(DataValidationError, match="prior=True"):
        checks.item_popularity_check(idata, group="prior_predictive")
    with pytest.raises(DataValidationError, match="head_fraction"):
        checks.item_popularity_check(idata, head_fraction=1.5)
    with pytest.raises(DataValidationError, match="distance"):
        checks.taste_distribution_check(idata, distance="hellinger")
    with pytest.raises(DataValidationError, match="test="):
        checks.heldout_lpd_check(idata)
    with pytest.raises(DataTypeError, match="idata"):
        checks.user_activity_check(pd.DataFrame())
    one = toy_idata(OBS, OBS[None], USERS, 2, W)
    with pytest.raises(DataValidationError, match="at least 2 draws"):
        checks.taste_distribution_check(one)


def test_fitted_model_checks_and_feedback_kinds():
    data, _ = bp.make_synthetic(
        n_users=30, n_items=60, n_tastes=3, interactions_per_user=(5, 15), seed=4
    )
    # without categories only the popularity statistics apply
    bare = bp.PersonaRecommender(
        n_personas=2, n_factors=3, max_epochs=3, n_draws=5, progress=False
    ).fit(data.ratings)
    frame = checks.posterior_predictive_checks(to_inference_data(bare, 10))
    assert set(frame["statistic"]) == {"mean_log_popularity", "gini", "long_tail_share"}
    with pytest.raises(DataValidationError, match="categories"):
        checks.taste_distribution_check(to_inference_data(bare, 4))
    prior = checks.prior_predictive_checks(bare, num_samples=8)
    assert (prior["group"] == "prior_predictive").all() and prior["ppp"].between(0, 1).all()
    # explicit feedback: rating checks only
    rng = np.random.default_rng(0)
    r = data.ratings.assign(rating=rng.integers(1, 6, len(data.ratings)).astype(float))
    expl = bp.PersonaRecommender(
        n_personas=2, n_factors=3, feedback="explicit", max_epochs=3, n_draws=5, progress=False
    ).fit(r)
    idata = to_inference_data(expl, 10, prior=True)
    frame = checks.posterior_predictive_checks(idata)
    assert set(frame["check"]) == {"rating"} and len(frame) == 3
    assert frame.set_index("statistic").loc["mean", "observed"] == pytest.approx(r.rating.mean())
    assert len(checks.rating_check(idata, group="prior_predictive")) == 3
    with pytest.raises(DataValidationError, match="rating_check"):
        checks.user_activity_check(idata)
