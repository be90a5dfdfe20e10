"""Model comparison: held-out ELPD arithmetic, stacking, PSIS-LOO diagnostics, choosing K."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
import torch
import xarray as xr

import bayes_persona as bp
from bayes_persona.diagnostics import comparison
from bayes_persona.diagnostics.inference_data import to_inference_data
from bayes_persona.exceptions import DataTypeError, DataValidationError

torch.set_num_threads(1)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def heldout_idata(loglik: np.ndarray, users=None, items=None) -> az.InferenceData:
    """An InferenceData holding only a held-out log-likelihood (S, n)."""
    S, n = loglik.shape
    users = np.arange(n) % 3 if users is None else users
    items = np.arange(n) if items is None else items
    coords = {"chain": [0], "draw": np.arange(S), "heldout_obs": np.arange(n),
              "heldout_user_id": ("heldout_obs", users), "heldout_item_id": ("heldout_obs", items)}  # fmt: skip
    ll = xr.Dataset(
        {"heldout_choice": (("chain", "draw", "heldout_obs"), loglik[None])}, coords=coords
    )
    return az.InferenceData(log_likelihood=ll)


def test_heldout_elpd_arithmetic():
    rng = np.random.default_rng(0)
    a = np.log(rng.uniform(0.05, 0.2, size=(30, 40)))
    b = a - 0.1 + 0.01 * rng.standard_normal(a.shape)
    table = comparison.compare_heldout({"a": heldout_idata(a), "b": heldout_idata(b)})
    pa = np.log(np.exp(a).mean(0))
    pb = np.log(np.exp(b).mean(0))
    assert list(table.index) == ["a", "b"] and list(table["rank"]) == [0, 1]
    assert table.loc["a", "elpd"] == pytest.approx(pa.sum())
    assert table.loc["b", "elpd_diff"] == pytest.approx(pa.sum() - pb.sum())
    assert table.loc["b", "dse"] == pytest.approx(np.sqrt(40 * (pa - pb).var(ddof=1)))
    assert table.loc["a", "se"] == pytest.approx(np.sqrt(40 * pa.var(ddof=1)))
    assert table["weight"].sum() == pytest.approx(1.0)
    assert table.loc["a", "weight"] > 0.9
    one = comparison.heldout_elpd(heldout_idata(a))
    assert one["elpd"] == pytest.approx(pa.sum()) and one["n"] == 40


def test_pairs_are_aligned_by_id_and_must_match():
    rng = np.random.default_rng(1)
    a = np.log(rng.uniform(0.05, 0.2, size=(10, 12)))
    perm = rng.permutation(12)
    users, items = np.arange(12) % 3, np.arange(12)
    shuffled = heldout_idata(a[:, perm], users[perm], items[perm])
    table = comparison.compare_heldout(
        {"a": heldout_idata(a, users, items), "a_shuffled": shuffled}
    )
    assert table["elpd_diff"].max() == pytest.approx(0.0, abs=1e-9)
    assert table["dse"].max() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(DataValidationError, match="other held-out interactions"):
        comparison.compare_heldout({"a": heldout_idata(a), "b": heldout_idata(a[:, :-1])})


def test_stacking_weights():
    rng = np.random.default_rng(2)
    lp = np.log(rng.uniform(0.1, 0.2, size=(50, 1)))
    w = comparison.stacking_weights(np.hstack([lp, lp]))
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    w = comparison.stacking_weights(np.hstack([lp, lp - 2.0, lp - 3.0]))
    assert w[0] > 0.99


def test_pareto_k_threshold():
    assert comparison.pareto_k_threshold(100) == pytest.approx(0.5)
    assert comparison.pareto_k_threshold(10**6) == pytest.approx(0.7)


@pytest.fixture(scope="module")
def comparison_fit():
    data, _ = bp.make_synthetic(
        n_users=40,
        n_items=80,
        n_tastes=3,
        tastes_per_user=(2, 3),
        interactions_per_user=(10, 25),
        seed=5,
    )
    split = bp.random_holdout(data, 0.25, seed=0)
    kw = dict(n_factors=4, max_epochs=15, batch_size=64, n_draws=20, progress=False)
    models = {k: bp.PersonaRecommender(n_personas=k, **kw).fit(split.train) for k in (1, 2)}
    return split, models


def test_loo_table_carries_pareto_diagnostics(comparison_fit):
    _, models = comparison_fit
    idatas = {f"K={k}": to_inference_data(m, 30) for k, m in models.items()}
    table = comparison.compare_loo(idatas)
    assert {"elpd_loo", "dse", "pareto_k_max", "n_bad_k", "k_threshold", "loo_valid"} <= set(
        table.columns
    )
    assert table["k_threshold"].iloc[0] == pytest.approx(comparison.pareto_k_threshold(30))
    for name in table.index:
        assert table.loc[name, "loo_valid"] == (table.loc[name, "n_bad_k"] == 0)
    if not table["loo_valid"].all():
        with pytest.raises(DataValidationError, match="Pareto k"):
            comparison.compare_models(idatas)
    out = comparison.compare_models(idatas, allow_invalid_loo=True)
    assert (out["criterion"] == "loo").all()


def test_compare_models_prefers_heldout_and_rejects_mixing(comparison_fit):
    split, models = comparison_fit
    held = {f"K={k}": to_inference_data(m, 20, test=split.test) for k, m in models.items()}
    out = comparison.compare_models(held)
    assert (out["criterion"] == "heldout").all() and len(out) == 2
    with pytest.raises(DataValidationError, match="held-out"):
        comparison.compare_loo(held)
    with pytest.raises(DataValidationError, match="criterion"):
        comparison.compare_models(held, criterion="waic")
    with pytest.raises(DataTypeError, match="models"):
        comparison.compare_heldout([1, 2])


def test_choose_n_personas(comparison_fit):
    split, _ = comparison_fit
    kw = dict(n_factors=4, max_epochs=15, batch_size=64, num_samples=20)
    k, table, models = comparison.choose_n_personas(
        split.train, split.test, (1, 2), return_models=True, **kw
    )
    assert k in (1, 2) and set(models) == {1, 2}
    assert table.index.name == "n_personas" and set(table.index) == {1, 2}
    assert table["chosen"].sum() == 1 and table.loc[k, "chosen"]
    best, _ = comparison.choose_n_personas(split.train, split.test, (1, 2), rule="best", **kw)
    assert best == int(table.index[0])
    with pytest.raises(DataValidationError, match="candidates"):
        comparison.choose_n_personas(split.train, split.test, (0, 2))
    with pytest.raises(DataValidationError, match="rule"):
        comparison.choose_n_personas(split.train, split.test, (1, 2), rule="aic")
    with pytest.raises(DataValidationError, match="n_personas"):
        comparison.choose_n_personas(split.train, split.test, (1, 2), n_personas=3)
