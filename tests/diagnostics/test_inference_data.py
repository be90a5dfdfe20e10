"""to_inference_data: layout, ids as coordinates, common random numbers, netCDF, errors."""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
import torch

import bayes_persona as bp
from bayes_persona.diagnostics.inference_data import netcdf_safe_ids, to_inference_data
from bayes_persona.exceptions import DataValidationError, NotFittedError, UnknownIdError

torch.set_num_threads(1)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

S = 20


@pytest.fixture(scope="module")
def idata_fit():
    data, truth = bp.make_synthetic(
        n_users=50, n_items=90, n_tastes=4, interactions_per_user=(10, 30), seed=3
    )
    split = bp.random_holdout(data, 0.2, seed=0)
    model = bp.PersonaRecommender(
        n_personas=3, n_factors=4, max_epochs=10, batch_size=64, n_draws=S, progress=False
    ).fit(split.train)
    return model, split


@pytest.fixture(scope="module")
def idata_test(idata_fit):
    model, split = idata_fit
    return to_inference_data(model, S, test=split.test, prior=True)


def test_groups_dims_and_id_coordinates(idata_fit, idata_test):
    model, split = idata_fit
    idata = idata_test
    assert set(idata.groups()) == {
        "posterior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data",
        "prior", "prior_predictive",
    }  # fmt: skip
    post = idata.posterior
    U, N = len(model.user_vocab_), len(model.item_vocab_)
    assert dict(post["persona_factors"].sizes) == {
        "chain": 1,
        "draw": S,
        "user": U,
        "persona": 3,
        "factor": 4,
    }
    assert dict(post["item_factors"].sizes) == {"chain": 1, "draw": S, "item": N, "factor": 4}
    np.testing.assert_array_equal(post["user"].values, model.user_vocab_.ids)
    np.testing.assert_array_equal(post["item"].values, model.item_vocab_.ids)
    assert "R-hat" in post.attrs["note"] and "variational" in post.attrs["note"]
    # training interactions on obs, held-out ones on heldout_obs, with their ids
    od = idata.observed_data
    assert od.sizes["obs"] == len(split.train.ratings)
    assert od.sizes["heldout_obs"] == len(split.test.ratings)
    catalog = idata.constant_data["catalog"].values
    np.testing.assert_array_equal(catalog[od["choice"].values], od["item_id"].values)
    np.testing.assert_array_equal(
        catalog[od["heldout_choice"].values], od["heldout_item_id"].values
    )
    train = split.train.ratings
    pairs = set(zip(od["user_id"].values, od["item_id"].values, strict=True))
    assert pairs == set(zip(train.user_id, train.item_id, strict=True))
    # log-likelihood on the held-out pairs only
    assert list(idata.log_likelihood.data_vars) == ["heldout_choice"]
    assert idata.log_likelihood["heldout_choice"].dims == ("chain", "draw", "heldout_obs")
    assert int(idata.constant_data["n_interactions"].sum()) == len(train)
    assert idata.prior["prevalence"].shape == (1, S, U, 3)
    assert idata.prior_predictive["choice"].shape == (1, S, len(train))


def test_posterior_prevalences_sorted_and_on_simplex(idata_test):
    prev = idata_test.posterior["prevalence"].values[0]  # (S, U, K)
    np.testing.assert_allclose(prev.sum(-1), 1.0, atol=1e-5)
    mean = prev.mean(0)
    assert (np.diff(mean, axis=1) <= 1e-7).all()


def test_log_normaliser_rebuilds_a_proper_softmax(idata_test):
    post = idata_test.posterior
    logits = np.einsum(
        "sukd,snd->sukn", post["persona_factors"].values[0], post["item_factors"].values[0]
    )
    logits += post["item_bias"].values[0][:, None, None, :]
    probs = np.exp(logits - post["log_normaliser"].values[0][..., None])
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-4)


def test_log_likelihood_agrees_with_model_log_predictive(idata_fit):
    model, split = idata_fit
    idata = to_inference_data(model, model.n_draws)
    ll = idata.log_likelihood["choice"].values[0]  # (S, n)
    od = idata.observed_data
    lpd = np.log(np.exp(ll).mean(0))
    rows = pd.DataFrame({"user_id": od["user_id"].values, "item_id": od["item_id"].values})
    np.testing.assert_allclose(lpd, model.log_predictive(rows), rtol=1e-4, atol=1e-5)


def test_subsets_reuse_the_same_draws(idata_fit, idata_test):
    model, split = idata_fit
    users = list(model.user_vocab_.ids[[7, 2]])
    items = list(model.item_vocab_.ids[[5, 0, 9]])
    sub = to_inference_data(model, S, users=users, items=items, test=split.test)
    full = idata_test
    for u in users:
        # Shares depend on the persona draws through Z (float32 kernels: rounding at 1e-7).
        np.testing.assert_allclose(
            sub.posterior["prevalence"].sel(user=u), full.posterior["prevalence"].sel(user=u), rtol=1e-5
        )
        np.testing.assert_allclose(
            sub.posterior["log_normaliser"].sel(user=u),
            full.posterior["log_normaliser"].sel(user=u),
            rtol=1e-5,
        )
        picks = [
            d.posterior_predictive["choice"].values[0][:, d.observed_data["user_id"].values == u]
            for d in (sub, full)
        ]
        np.testing.assert_array_equal(*picks)
    for i in items:
        np.testing.assert_allclose(
            sub.posterior["item_factors"].sel(item=i), full.posterior["item_factors"].sel(item=i)
        )
    assert list(sub.posterior["item"].values) == items
    assert set(sub.observed_data["user_id"].values) == set(users)


def test_replicated_choices_respect_the_design(idata_fit, idata_test):
    model, _ = idata_fit
    od = idata_test.observed_data
    rep = idata_test.posterior_predictive["choice"].values[0]
    rep_h = idata_test.posterior_predictive["heldout_choice"].values[0]
    users = od["user_id"].values
    h_users = od["heldout_user_id"].values
    for u in np.unique(users)[:10]:
        sel, hsel = users == u, h_users == u
        seen = set(od["choice"].values[sel])
        for s in range(S):
            assert len(set(rep[s, sel])) == sel.sum()  # no repeats
            assert len(set(rep_h[s, hsel])) == hsel.sum()
            assert not seen & set(rep_h[s, hsel])  # held-out replicates avoid training items
    iid = to_inference_data(model, 5, replicate="with_replacement")
    assert iid.posterior_predictive["choice"].shape[-1] == od.sizes["obs"]


def test_test_rows_are_filtered_and_logged(idata_fit, caplog):
    model, split = idata_fit
    test = split.test.ratings
    extra = pd.DataFrame(
        {"user_id": [test.user_id.iloc[0], 10**6, test.user_id.iloc[0]],
         "item_id": [split.train.ratings.item_id[split.train.ratings.user_id == test.user_id.iloc[0]].iloc[0], test.item_id.iloc[0], 99]}
    )  # fmt: skip
    with caplog.at_level("INFO", logger="bayes_persona.diagnostics"):
        idata = to_inference_data(model, 3, test=pd.concat([test, extra], ignore_index=True))
    assert idata.observed_data.sizes["heldout_obs"] == len(test)
    assert "left out" in caplog.text
    with pytest.raises(DataValidationError, match="test shares no"):
        to_inference_data(model, 3, test=extra.iloc[1:])


def test_netcdf_round_trip_with_string_ids(tmp_path):
    data, _ = bp.make_synthetic(
        n_users=30, n_items=60, n_tastes=3, interactions_per_user=(5, 15), seed=1
    )
    r = data.ratings.assign(
        user_id=lambda d: "u" + d.user_id.astype(str), item_id=lambda d: "i" + d.item_id.astype(str)
    )
    items = data.items.assign(item_id=lambda d: "i" + d.item_id.astype(str))
    ds = bp.Dataset(r, items)
    split = bp.random_holdout(ds, 0.2, seed=0)
    model = bp.PersonaRecommender(
        n_personas=2, n_factors=3, max_epochs=3, n_draws=5, progress=False
    ).fit(split.train)
    idata = to_inference_data(model, 5, test=split.test)
    path = tmp_path / "s.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert back.posterior["user"].values.dtype.kind == "U"
    np.testing.assert_array_equal(back.posterior["user"].values, model.user_vocab_.ids.astype(str))
    np.testing.assert_array_equal(
        back.observed_data["heldout_user_id"].values, idata.observed_data["heldout_user_id"].values
    )
    np.testing.assert_allclose(
        back.log_likelihood["heldout_choice"].values, idata.log_likelihood["heldout_choice"].values
    )
    assert list(back.constant_data["category"].values) == sorted(
        {c for cs in items.categories for c in cs}
    )


def test_netcdf_safe_ids():
    assert netcdf_safe_ids(np.array([3, 1], dtype=object)).dtype == np.int64
    assert netcdf_safe_ids(np.array(["a", "bb"], dtype=object)).dtype.kind == "U"


def test_loo_runs_on_the_training_log_likelihood(idata_fit):
    model, _ = idata_fit
    idata = to_inference_data(model, S, users=list(model.user_vocab_.ids[:8]))
    with pytest.warns(UserWarning):
        loo = az.loo(idata, pointwise=True)
    assert np.isfinite(loo.elpd_loo)
    assert loo.loo_i.shape == (idata.observed_data.sizes["obs"],)


def test_explicit_feedback_layout():
    rng = np.random.default_rng(0)
    data, _ = bp.make_synthetic(
        n_users=30, n_items=60, n_tastes=3, interactions_per_user=(5, 15), seed=2
    )
    r = data.ratings.assign(rating=rng.integers(1, 6, len(data.ratings)).astype(float))
    split = bp.random_holdout(bp.Dataset(r, data.items), 0.2, seed=0)
    model = bp.PersonaRecommender(
        n_personas=2, n_factors=3, feedback="explicit", max_epochs=3, n_draws=5, progress=False
    ).fit(split.train)
    idata = to_inference_data(model, 6, test=split.test)
    assert "user_bias" in idata.posterior
    assert idata.posterior_predictive["rating"].shape == (1, 6, len(split.train.ratings))
    assert idata.posterior_predictive["heldout_rating"].dtype.kind == "f"
    assert np.isfinite(idata.log_likelihood["heldout_rating"].values).all()
    assert np.isfinite(idata.posterior_predictive["heldout_log_density"].values).all()
    assert "noise" in idata.constant_data and "category_weight" not in idata.constant_data


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_samples": 0}, DataValidationError, "num_samples"),
        ({"users": [10**9]}, UnknownIdError, "users"),
        ({"items": [1]}, UnknownIdError, "items"),
        ({"users": [1, 1]}, DataValidationError, "users must not repeat"),
        ({"replicate": "bootstrap"}, DataValidationError, "replicate"),
        ({"heldout_candidates": 0}, DataValidationError, "heldout_candidates"),
        ({"test": [1, 2]}, bp.DataTypeError, "test must be"),
    ],
)
def test_bad_arguments_name_themselves(idata_fit, kwargs, error, match):
    model, _ = idata_fit
    with pytest.raises(error, match=match):
        to_inference_data(model, **{"num_samples": 2, **kwargs})


def test_unfitted_model_raises():
    with pytest.raises(NotFittedError):
        to_inference_data(bp.PersonaRecommender())


def _set_probability(p: np.ndarray, items: tuple[int, ...]) -> float:
    """P(successive sampling without replacement from p picks exactly ``items``), brute force."""
    from itertools import permutations

    total = 0.0
    for order in permutations(items):
        prob, used = 1.0, 0.0
        for i in order:
            prob *= p[i] / (1.0 - used)
            used += p[i]
        total += prob
    return total


def test_heldout_sampler_matches_the_exact_conditional(monkeypatch):
    import bayes_persona.diagnostics.predictive as idm

    monkeypatch.setattr(idm, "_SIR_CHUNK", 16 * 6 * 1000)  # exercise the chunked path too
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    seen = np.array([1, 3])
    rest = [0, 2, 4, 5]
    exact = np.array([_set_probability(p, (1, 3, h)) for h in rest])
    exact /= exact.sum()
    S = 20000
    draws = idm._replicate_heldout(
        np.log(np.tile(p, (S, 1))), seen, 1, "without_replacement", np.random.default_rng(0), 16
    )
    freq = np.array([(draws[:, 0] == h).mean() for h in rest])
    np.testing.assert_allclose(freq, exact, atol=0.015)
    # continuing the successive sample after the training items would be visibly wrong here
    naive = p[rest] / p[rest].sum()
    assert np.abs(naive - exact).max() > 0.03


def test_explanation_inference_data_is_compact_and_matches_explain():
    """The compact view holds prevalences and explanation probabilities only, and its draws
    are those behind explain (same medians)."""
    import arviz as az

    data, _ = bp.make_synthetic(n_users=40, n_items=60, n_tastes=3, interactions_per_user=(5, 15), seed=0)
    model = bp.PersonaRecommender(n_personas=3, n_factors=4, max_epochs=3, n_draws=20, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bp.ConvergenceWarning)
        model.fit(data)
    items = model.item_vocab_.ids[:4]
    idata = model.explanation_inference_data([1, 2], items=items)
    assert set(idata.groups()) == {"posterior"}
    assert set(idata.posterior.data_vars) == {"prevalence", "persona_prob"}
    summary = az.summary(idata, kind="stats")
    assert len(summary) == 2 * 3 + 2 * 4 * 3  # (user, persona) and (pair, persona) rows
    pp = idata.posterior["persona_prob"].isel(chain=0)
    first = pp.where(pp["user_id"] == 1, drop=True).transpose("draw", "persona", "pair").to_numpy()
    np.testing.assert_allclose(first, model.explain_draws(1, items), rtol=1e-6)
    ex = model.explain(1, items)
    np.testing.assert_allclose(np.median(first, axis=0).T.reshape(-1), ex["persona_prob"], rtol=1e-6)
