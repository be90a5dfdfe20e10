"""Simulation-based calibration: the prior simulator, rank statistics, smoke-size runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from bayes_persona.diagnostics import sbc as calibration
from bayes_persona.exceptions import DataTypeError, DataValidationError

torch.set_num_threads(1)

SMOKE = dict(
    n_users=15,
    n_items=30,
    interactions_per_user=(5, 10),
    num_samples=19,
    fit_kwargs={"max_epochs": 10},
)


def test_prior_world_is_a_valid_dataset():
    w = calibration.simulate_prior_world(30, 50, 3, 4, (5, 12), n_categories=3, seed=1)
    r = w.dataset.ratings
    assert not r.duplicated(["user_id", "item_id"]).any()
    counts = r.groupby("user_id").size()
    assert counts.between(5, 12).all() and len(counts) == 30
    assert w.item_factors.shape == (50, 4) and w.persona_factors.shape == (30, 3, 4)
    np.testing.assert_allclose(w.prevalence.sum(1), 1.0)
    post = w.assignment(np.array([0, 1]), np.array([3, 4]))
    np.testing.assert_allclose(post.sum(1), 1.0)
    assert set(w.dataset.items["categories"].map(tuple)) <= {("c0",), ("c1",), ("c2",)}
    again = calibration.simulate_prior_world(30, 50, 3, 4, (5, 12), n_categories=3, seed=1)
    pd.testing.assert_frame_equal(r, again.dataset.ratings)
    with pytest.raises(DataValidationError, match="interactions_per_user"):
        calibration.simulate_prior_world(10, 20, 2, 2, (5, 15))
    with pytest.raises(DataValidationError, match="persona_scale"):
        calibration.simulate_prior_world(10, 20, 2, 2, (2, 4), persona_scale=-1.0)


@pytest.mark.parametrize("likelihood", ["joint", "mixture"])
def test_assignment_follows_bayes_rule(likelihood):
    w = calibration.simulate_prior_world(5, 20, 2, 3, (2, 4), likelihood=likelihood, seed=2)
    q, b, p, pi = w.item_factors, w.item_bias, w.persona_factors, w.prevalence
    u, i = 3, 7
    logits = p[u] @ q.T + b  # (K, N)
    if likelihood == "joint":  # p(z = k, i | u) ~ pi_k exp(p_k . q_i + b_i), one normaliser
        joint = pi[u][:, None] * np.exp(logits)
        joint /= joint.sum()
    else:  # p(z = k, i | u) = pi_k softmax_k(i)
        joint = pi[u][:, None] * np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(w.assignment(np.array([u]), np.array([i]))[0], joint[:, i] / joint[:, i].sum())
    np.testing.assert_allclose(np.exp(w.log_shares()[u]), joint.sum(1))
    np.testing.assert_allclose(np.exp(w.log_pick()[u]), joint.sum(0))
    np.testing.assert_allclose(np.exp(w.log_pick()).sum(1), 1.0)
    assert 0 < w.repeat_probability < 1


def test_prior_world_draws_from_the_likelihood():
    # Over many worlds' users, the share of picks of each item matches p(i | u)
    # (up to the without-replacement bias, small at one pick per user).
    w = calibration.simulate_prior_world(4000, 6, 2, 2, (1, 1), seed=5)
    picked = np.bincount(w.dataset.ratings["item_id"].to_numpy() - 1, minlength=6) / 4000
    np.testing.assert_allclose(picked, np.exp(w.log_pick()).mean(0), atol=0.03)
    assert len(w.dataset.items) == 6  # the catalogue, picked or not


def test_independent_picks_repeat_as_often_as_the_likelihood_says():
    # repeats=True draws every pick independently from p(i | u), as the likelihood has
    # them: the share of a user's picks that repeat an earlier one must match the
    # analytic repeat_probability (distinct picks would give 0), and each item's share of
    # all picks must match p(i | u).
    w = calibration.simulate_prior_world(400, 30, 2, 2, (10, 15), repeats=True, seed=6)
    r = w.dataset.ratings
    assert not r.duplicated(["user_id", "item_id"]).any() and (r["count"] >= 1).all()
    n_u = r.groupby("user_id")["count"].sum()
    assert n_u.between(10, 15).all() and len(n_u) == 400
    repeated = ((n_u - r.groupby("user_id").size()) / n_u).mean()
    assert repeated > 0.1  # small catalogue, many picks: repeats are common
    assert repeated == pytest.approx(w.repeat_probability, abs=0.015)
    np.testing.assert_array_equal(w.counts(), r["count"].to_numpy(np.float64))
    picked = np.bincount(r["item_id"] - 1, weights=r["count"], minlength=30) / n_u.sum()
    expected = (np.exp(w.log_pick()) * n_u.to_numpy()[:, None]).sum(0) / n_u.sum()
    np.testing.assert_allclose(picked, expected, atol=0.015)  # about 4 standard errors at 5,000 picks
    distinct = calibration.simulate_prior_world(400, 30, 2, 2, (10, 15), seed=6)
    assert distinct.counts() is None and "count" not in distinct.dataset.ratings
    with pytest.raises(DataTypeError, match="repeats must be a bool"):
        calibration.simulate_prior_world(4, 30, 2, 2, (2, 3), repeats=1)


def test_sbc_fits_repeated_picks_as_weights(monkeypatch):
    from bayes_persona.persona.estimator import PersonaRecommender

    seen, fit = [], PersonaRecommender.fit

    def recording_fit(self, train, *args, **kwargs):
        seen.append(kwargs.get("sample_weight"))
        return fit(self, train, *args, **kwargs)

    monkeypatch.setattr(PersonaRecommender, "fit", recording_fit)
    res = calibration.simulation_based_calibration(1, **{**SMOKE, "interactions_per_user": (14, 15)})
    assert res.config["repeats"] is True and res.config["repeat_probability"] > 0
    assert len(seen) == 1 and seen[0] is not None and seen[0].max() > 1  # the repeats reach the fit
    plain = calibration.simulation_based_calibration(1, **{**SMOKE, "interactions_per_user": (14, 15)}, repeats=False)
    assert plain.config["repeats"] is False and seen[1] is None
    assert not np.allclose(res.ranks["true"], plain.ranks["true"])  # other worlds' picks


def test_uniformity_and_coverage_summaries():
    n = 2000
    rng = np.random.default_rng(0)
    uniform = pd.DataFrame({"guide": "g", "quantity": "q", "fractional_rank": rng.random(n),
                            **{f"covered_{lv}": rng.random(n) < lv / 100 for lv in (50, 90)}})  # fmt: skip
    cov, uni = calibration._summaries(uniform, (0.5, 0.9), 10)
    assert uni["pvalue"].iloc[0] > 0.001
    np.testing.assert_allclose(cov["coverage"], [0.5, 0.9], atol=0.03)
    peaked = uniform.assign(fractional_rank=np.clip(rng.normal(0.5, 0.05, n), 0, 0.999))
    assert calibration._summaries(peaked, (0.5,), 10)[1]["pvalue"].iloc[0] < 1e-10


def test_rank_row():
    rng = np.random.default_rng(0)
    draws = np.arange(10, dtype=float)
    row = calibration._rank_row(draws, 4.5, rng, (0.5, 0.9))
    assert row["rank"] == 5 and 5 / 11 <= row["fractional_rank"] <= 6 / 11
    assert row["covered_50"] and row["covered_90"]
    assert not calibration._rank_row(draws, 20.0, rng, (0.5,))["covered_50"]


def test_smoke_sbc_reports_ranks_coverage_and_uniformity():
    res = calibration.simulation_based_calibration(2, **SMOKE)
    assert len(res.ranks) == 2 * 15 * 4  # replications x users x quantities
    assert res.ranks["rank"].between(0, 19).all()
    assert res.ranks["fractional_rank"].between(0, 1).all()
    assert set(res.coverage["level"]) == set(calibration.DEFAULT_LEVELS)
    for _, grp in res.coverage.groupby("quantity"):
        assert grp["coverage"].is_monotonic_increasing and grp["coverage"].between(0, 1).all()
    assert set(res.uniformity["quantity"]) == set(calibration.QUANTITIES)
    assert "meanfield co_assignment" in res.summary()
    assert res.config["likelihood"] == "joint" and not res.config["empirical_bayes"]
    assert res.config["fit_kwargs"]["persona_prior_scale"] == 0.7  # fixed at the simulated value
    assert res.ranks.loc[res.ranks["quantity"] == "max_share", "true"].between(0.5, 1).all()
    assert (res.ranks.loc[res.ranks["quantity"] == "log_pick", "true"] < 0).all()
    assert res.config["n_replications"] == 2 and res.seconds > 0


def test_compare_guides_on_the_same_worlds():
    res = calibration.compare_guides(("meanfield", "lowrank"), n_replications=1, **SMOKE)
    assert set(res.coverage["guide"]) == {"meanfield", "lowrank"}
    a, b = (res.ranks[res.ranks["guide"] == g] for g in ("meanfield", "lowrank"))
    np.testing.assert_allclose(
        a["true"].to_numpy(), b["true"].to_numpy()
    )  # same worlds, same picks
    assert res.config["guides"] == ("meanfield", "lowrank")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_replications": 0}, DataValidationError, "n_replications"),
        ({"n_personas": 1}, DataValidationError, "n_personas"),
        ({"guide": "full"}, DataValidationError, "guide"),
        ({"levels": (0.5, 1.0)}, DataValidationError, "levels"),
        ({"fit_kwargs": {"guide": "lowrank"}}, DataValidationError, "fit_kwargs"),
        ({"fit_kwargs": [1]}, DataTypeError, "fit_kwargs"),
        ({"likelihood": "other"}, DataValidationError, "likelihood"),
        ({"empirical_bayes": 1}, DataTypeError, "empirical_bayes"),
        ({"resample": -1}, DataValidationError, "resample"),
        ({"repeats": 1}, DataTypeError, "repeats"),
        ({"gibbs": True, "gibbs_options": {"steps": 3}}, DataValidationError, "gibbs_options may set"),
        ({"gibbs_options": {"thin": 3}}, DataValidationError, "need gibbs=True"),
        ({"gibbs": True, "gibbs_options": [("thin", 3)]}, DataTypeError, "gibbs_options must be a mapping"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        calibration.simulation_based_calibration(**kwargs)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    raises=AssertionError,
    reason="issue 13: on worlds from the model's own prior (joint likelihood, scales fixed) "
    "the mean-field and low-rank guides under-cover (paper/results/sbc/coverage.csv); so do fits "
    "with user_particles=8 and resampled user draws (sbc_iw, sbc_resampled, sbc_iw_resampled: "
    "two items share a persona at 79-81% at 90%, measured 2026-12-07). With the items' factors "
    "fixed at the truth, resampled user draws cover within 5 points (a check outside the library): "
    "what remains is the items' mean-field posterior. The guide-proposal Gibbs sampler "
    "(diagnostics.refine, sbc_iw_gibbs) covers 83.6-85.7% at 90% on every quantity, with no rank "
    "test passing. With the exact simulator (independent picks, repeats fitted as sample_weight; "
    "sbc_exact) the mean-field guide still covers 77.3-85.4% at 90%: the simulator's mismatch was a "
    "small part. Fitted with user_particles=8 on the exact simulator (sbc_iw_exact and, on seed 1, "
    "sbc_iw_exact_check) the shares and the log predictive pass their rank tests, but two items share "
    "a persona at 80-82% at 90%. This test checks the default guides' own draws",
)
def test_full_size_calibration_covers_nominally():
    # BAYES_PERSONA_TEST_SIZE=smoke (CI) runs it tiny; the full-size figures come from
    # `python -m bayes_persona.bench sbc` (paper/results/sbc)
    smoke = os.environ.get("BAYES_PERSONA_TEST_SIZE") == "smoke"
    res = (
        calibration.compare_guides(n_replications=2, **SMOKE)
        if smoke
        else calibration.compare_guides(n_replications=20)
    )
    cov90 = res.coverage[res.coverage["level"] == 0.9]
    assert (cov90["coverage"] > 0.8).all(), res.summary()


@pytest.mark.slow
def test_importance_weighted_fits_cover_the_shares_and_the_predictive():
    """On the exact simulator's worlds (the benchmark's, first 20 replications of seed 0), fits
    by the per-user importance-weighted bound (user_particles=8) cover the persona shares and
    the log predictive near nominal: 86.4% / 86.8% / 90.2% at 90% when written, the run of
    paper/results/sbc_iw_exact. The default fit misses these bounds (84.4% / 84.4% / 86.4%
    on the same worlds, paper/results/sbc_exact); so would a collapsed or over-confident one.
    The co-assignment of two items is issue 13's open part (79.8%; the xfail above)."""
    from bayes_persona.bench.sbc import DEFAULTS
    from bayes_persona.bench.sbc import SMOKE as BENCH_SMOKE

    smoke = os.environ.get("BAYES_PERSONA_TEST_SIZE") == "smoke"
    cfg = dict(BENCH_SMOKE if smoke else {**DEFAULTS, "n_replications": 20})
    fit = {"max_epochs": cfg.pop("max_epochs"), "learning_rate": cfg.pop("learning_rate"), "user_particles": 8}
    res = calibration.simulation_based_calibration(**cfg, fit_kwargs=fit, random_state=0)
    assert res.config["repeats"] and res.config["fit_kwargs"]["user_particles"] == 8
    cov90 = res.coverage[res.coverage["level"] == 0.9].set_index("quantity")["coverage"]
    if smoke:  # two tiny worlds of 10 epochs: only the run's contract (full size gives the figures)
        assert len(res.ranks) == cfg["n_replications"] * cfg["n_users"] * len(calibration.QUANTITIES)
        assert cov90.between(0.0, 1.0).all() and res.ranks["fractional_rank"].between(0, 1).all()
        return
    assert cov90["max_share"] >= 0.855 and cov90["share_entropy"] >= 0.855, res.summary()
    assert cov90["log_pick"] >= 0.875, res.summary()
    assert cov90["max_share"] <= 0.95 and cov90["log_pick"] <= 0.95, res.summary()  # not over-wide either


def test_bench_sbc_writes_ranks_coverage_uniformity_and_provenance(tmp_path):
    from bayes_persona.bench import main
    from bayes_persona.bench.sbc import read

    assert main(["sbc", "--smoke", "--guides", "meanfield", "--out", str(tmp_path)]) == 0
    res = read(tmp_path)
    assert len(res["ranks"]) == 2 * 12 * len(calibration.QUANTITIES)
    assert set(res["coverage"]["quantity"]) == set(calibration.QUANTITIES)
    assert res["uniformity"]["pvalue"].between(0, 1).all()
    prov = res["provenance"]
    assert prov["smoke"] and prov["n_replications"] == 2 and prov["guides"] == ["meanfield"]
    assert 0 < prov["repeat_probability"] < 1 and "git_commit" in prov
    assert prov["repeats"] is True  # the exact simulator, by default
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    assert (tmp_path / "ranks.csv").stat().st_mode & 0o044  # readable by others, like any output
    from bayes_persona.bench import sbc as sbc_bench

    big = pd.DataFrame({"x": np.arange(300_000)})
    sbc_bench.write_results(tmp_path / "big", {"ranks": big, "coverage": res["coverage"],
                                               "uniformity": res["uniformity"]}, {}, [])  # fmt: skip
    assert (tmp_path / "big" / "ranks.csv.gz").is_file() and not (tmp_path / "big" / "ranks.csv").exists()
    pd.testing.assert_frame_equal(sbc_bench.read(tmp_path / "big")["ranks"], big)
    with pytest.raises(SystemExit):
        main(["sbc", "--replications", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["sbc", "--smoke", "--particles", "0", "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit):
        main(["sbc", "--smoke", "--resample", "-1", "--out", str(tmp_path / "bad")])
    assert main(["sbc", "--smoke", "--guides", "meanfield", "--distinct", "--out", str(tmp_path / "distinct")]) == 0
    assert read(tmp_path / "distinct")["provenance"]["repeats"] is False
    assert main(["sbc", "--smoke", "--guides", "meanfield", "--resample", "5", "--out", str(tmp_path / "rs")]) == 0
    rs = read(tmp_path / "rs")
    assert rs["provenance"]["resample"] == 5 and prov["resample"] == 0
    # the same worlds and fits (same truth ranked), other draws
    np.testing.assert_allclose(rs["ranks"]["true"], res["ranks"]["true"])
    assert not rs["ranks"]["rank"].equals(res["ranks"]["rank"])
    assert main(["sbc", "--smoke", "--guides", "meanfield", "--gibbs", "--out", str(tmp_path / "gibbs")]) == 0
    gb = read(tmp_path / "gibbs")
    assert gb["provenance"]["gibbs"] and not prov["gibbs"] and gb["provenance"]["gibbs_options"] == {}
    assert main(["sbc", "--smoke", "--guides", "meanfield", "--gibbs", "--gibbs-proposal-scale", "1.5", "--gibbs-thin", "3",
                 "--out", str(tmp_path / "wide")]) == 0  # fmt: skip
    wide = read(tmp_path / "wide")
    assert wide["provenance"]["gibbs_options"] == {"thin": 3, "proposal_scale": 1.5}
    assert not wide["ranks"]["rank"].equals(gb["ranks"]["rank"])  # other chains, same truth
    np.testing.assert_allclose(wide["ranks"]["true"], gb["ranks"]["true"])
    for bad in (["--gibbs-thin", "2"], ["--gibbs", "--gibbs-proposal-scale", "0"]):
        with pytest.raises(SystemExit):
            main(["sbc", "--smoke", *bad, "--out", str(tmp_path / "bad")])
    np.testing.assert_allclose(gb["ranks"]["true"], res["ranks"]["true"])
    with pytest.raises(SystemExit):
        main(["sbc", "--smoke", "--gibbs", "--resample", "3", "--out", str(tmp_path / "bad")])
    assert main(["sbc", "--smoke", "--guides", "meanfield", "--particles", "2", "--out", str(tmp_path / "iw")]) == 0
    iw = read(tmp_path / "iw")
    assert iw["provenance"]["fit_kwargs"]["user_particles"] == 2
    assert "user_particles" not in prov["fit_kwargs"]
    # the same worlds, other fits: the truth ranked is the same, the ranks are not all equal
    assert len(iw["ranks"]) == len(res["ranks"]) and not iw["ranks"].equals(res["ranks"])


def test_invariant_quantities_agree_with_the_world_and_ignore_labels():
    w = calibration.simulate_prior_world(6, 30, 3, 2, (3, 6), seed=4)
    picks = calibration.draw_picks(w, np.random.default_rng(0))
    assert picks.shape == (6, 4)
    true = calibration.true_quantities(w, picks)
    for r, (u, a, c, j) in enumerate(picks):
        att = w.assignment(np.array([u, u]), np.array([a, c]))
        assert true["co_assignment"][r] == pytest.approx(att[0] @ att[1])
        assert true["log_pick"][r] == pytest.approx(w.log_pick()[u, j])
        assert true["max_share"][r] == pytest.approx(np.exp(w.log_shares()[u]).max())
    perm = [2, 0, 1]  # relabel the personas: nothing changes
    again = calibration.invariant_quantities(w.item_factors[None], w.item_bias[None], w.persona_factors[None][:, :, perm],
                                             w.log_shares()[None][:, :, perm], picks)  # fmt: skip
    for name in calibration.QUANTITIES:
        np.testing.assert_allclose(again[name][0], true[name])


def test_nuts_batch_counts_repeated_picks_as_the_fit_does():
    from bayes_persona.diagnostics.nuts import _full_batch

    w = calibration.simulate_prior_world(5, 24, 2, 2, (10, 12), repeats=True, bias_scale=2.0, seed=2)
    counts = w.counts()
    assert counts.max() > 1  # a small catalogue: picks repeat
    batch = _full_batch(w)
    r = w.dataset.ratings
    for u in range(5):
        mine = r[r["user_id"] == u + 1]
        got = dict(zip(batch.items[u][batch.mask[u]].tolist(), batch.obs_weight[u][batch.mask[u]].tolist(), strict=True))
        assert got == dict(zip((mine["item_id"] - 1).tolist(), mine["count"].astype(float).tolist(), strict=True))
    assert float(batch.obs_weight[batch.mask].sum()) == counts.sum()
    assert _full_batch(calibration.simulate_prior_world(5, 24, 2, 2, (3, 5), seed=2)).obs_weight is None


def test_bench_nuts_compares_guides_with_nuts(tmp_path):
    from bayes_persona.bench import main

    assert main(["nuts", "--smoke", "--out", str(tmp_path)]) == 0
    cov = pd.read_csv(tmp_path / "coverage.csv")
    assert set(cov["method"]) == {"meanfield", "lowrank", "meanfield+resampled", "lowrank+resampled",
                                  "meanfield+iw2", "lowrank+iw2", "nuts"}  # fmt: skip
    assert set(cov["quantity"]) == set(calibration.QUANTITIES)
    assert cov["coverage"].between(0, 1).all()
    ov = pd.read_csv(tmp_path / "overlap.csv")
    assert set(ov["method"]) == {"meanfield", "lowrank", "meanfield+resampled", "lowrank+resampled",
                                 "meanfield+iw2", "lowrank+iw2"}  # fmt: skip
    assert ov["overlap"].between(0, 1).all()
    iv = pd.read_csv(tmp_path / "intervals.csv")
    assert (iv["low_90"] <= iv["median"]).all() and (iv["median"] <= iv["high_90"]).all()
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["smoke"] and prov["n_worlds"] == 1 and "nuts" in prov["seconds"] and prov["resample"] == 5
    assert prov["user_particles"] == 2 and "meanfield+iw2" in prov["seconds"]
    assert prov["repeats"] is True  # the exact simulator by default
    assert main(["nuts", "--smoke", "--resample", "0", "--particles", "1", "--distinct", "--out", str(tmp_path / "distinct")]) == 0
    assert json.loads((tmp_path / "distinct" / "provenance.json").read_text())["repeats"] is False
    assert main(["nuts", "--smoke", "--resample", "0", "--particles", "1", "--out", str(tmp_path / "plain")]) == 0
    assert set(pd.read_csv(tmp_path / "plain" / "coverage.csv")["method"]) == {"meanfield", "lowrank", "nuts"}
    with pytest.raises(SystemExit):
        main(["nuts", "--smoke", "--resample", "-1", "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit):
        main(["nuts", "--smoke", "--particles", "0", "--out", str(tmp_path / "bad")])
    assert main(["nuts", "--smoke", "--resample", "0", "--gibbs", "--out", str(tmp_path / "gibbs")]) == 0
    methods = set(pd.read_csv(tmp_path / "gibbs" / "coverage.csv")["method"])
    assert {"meanfield+gibbs", "meanfield+iw2+gibbs", "lowrank+iw2+gibbs"} <= methods
    # the other methods' rows are those of the run without the sampler
    plain = pd.read_csv(tmp_path / "intervals.csv")
    with_gibbs = pd.read_csv(tmp_path / "gibbs" / "intervals.csv")
    pd.testing.assert_frame_equal(
        with_gibbs[with_gibbs.method.isin(["meanfield", "lowrank+iw2", "nuts"])].reset_index(drop=True),
        plain[plain.method.isin(["meanfield", "lowrank+iw2", "nuts"])].reset_index(drop=True),
    )


@pytest.fixture(scope="module")
def small_fit():
    from bayes_persona.persona.estimator import PersonaRecommender

    w = calibration.simulate_prior_world(12, 60, 3, 2, (8, 15), persona_scale=0.7, item_scale=0.7, bias_scale=0.5,
                                         prevalence_concentration=0.5, seed=3)  # fmt: skip
    est = PersonaRecommender(n_personas=3, n_factors=2, prevalence_concentration=0.5, n_prototypes=0, item_prior_scale=0.7,
                             persona_prior_scale=0.7, bias_prior_scale=0.5, max_epochs=300, batch_size=12, learning_rate=0.05,
                             progress=False).fit(w.dataset, catalogue=w.dataset.items["item_id"])  # fmt: skip
    return w, est


def test_resampled_draws_with_one_candidate_are_the_guide_draws(small_fit):
    _, est = small_fit
    post, users = est.posterior_, np.arange(12)
    plain, one = post.user_draws(users, 40), post.resampled_user_draws(users, 40, 1)
    for key in ("persona_factors", "prior_prevalence", "prevalence", "log_norm"):
        torch.testing.assert_close(one[key], plain[key], rtol=0, atol=1e-5)
    assert one["log_weights"].shape == (40, 12, 1) and torch.all(one["log_weights"] == 0)


def test_resampled_draws_follow_the_user_posterior_given_the_items(small_fit):
    # A kept draw is a guide draw chosen by p(x_u | theta, items) p(theta) / q(theta); the chosen ones
    # must explain the user's own history better than plain guide draws do, on average over draws,
    # and a user's draws must not depend on the batch they are asked in.
    _, est = small_fit
    post, users = est.posterior_, np.arange(12)
    S, M = 60, 40
    many = post.resampled_user_draws(users, S, M)
    assert many["persona_factors"].shape == (S, 12, 3, 2) and many["log_weights"].shape == (S, 12, M)
    torch.testing.assert_close(many["log_weights"].exp().sum(-1), torch.ones(S, 12, dtype=torch.float64))
    w = many["log_weights"].exp()
    ess = 1.0 / (w**2).sum(-1)
    assert (ess > 1.5).float().mean() > 0.5  # the weights are not degenerate on these small users
    alone = post.resampled_user_draws(users[[4]], S, M)
    torch.testing.assert_close(alone["persona_factors"][:, 0], many["persona_factors"][:, 4])

    def history_log_lik(d):
        q, b = post.item_draws(S)
        out = []
        for j, u in enumerate(users):
            seen = torch.as_tensor(est.seen_.items_of(int(u)))
            logits = torch.einsum("skd,snd->skn", d["persona_factors"][:, j], q) + b[:, None, :]
            log_pi = torch.log(d["prior_prevalence"][:, j])[..., None]
            ll = torch.logsumexp(log_pi + logits[..., seen], 1).sum(-1) - len(seen) * torch.logsumexp(
                log_pi[..., 0] + torch.logsumexp(logits, -1), -1)
            out.append(ll)
        return torch.stack(out, 1)  # (S, U)

    gain = (history_log_lik(many) - history_log_lik(post.user_draws(users, S))).mean(0)
    assert (gain > 0).float().mean() >= 0.75, gain


def test_resampled_draws_refuse_explicit_feedback():
    import bayes_persona as bp

    data, _ = bp.make_synthetic(n_users=20, n_items=30, n_tastes=3, interactions_per_user=(5, 8), seed=0)
    r = data.ratings.assign(rating=4.0)
    est = bp.PersonaRecommender(n_personas=2, n_factors=2, feedback="explicit", max_epochs=2, progress=False).fit(r)
    with pytest.raises(DataValidationError, match="feedback='implicit'"):
        est.posterior_.resampled_user_draws(np.arange(3), 5, 3)
