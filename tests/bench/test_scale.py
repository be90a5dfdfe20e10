"""Scaling: O(batch) SVI steps (lazy row-sparse Adam), chunked posterior computations, the
vectorised planted generator and the scale benchmark's plumbing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pyro.optim.clipped_adam import ClippedAdam

import bayes_persona as bp
from bayes_persona.bench.scale import main as bench_main
from bayes_persona.bench.scale import planted_interactions
from bayes_persona.svi.optim import LazyClippedAdam, gather_rows


def _quadratic_grads(w: torch.Tensor, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    target = torch.randn(w.shape, generator=g)
    ((w - target) ** 2 * 7.0).sum().backward()


def test_dense_path_is_pyro_clipped_adam_bit_for_bit() -> None:
    init = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    a, b = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt_a = ClippedAdam([a], lr=0.05, clip_norm=2.0, lrd=0.99)
    opt_b = LazyClippedAdam([b], lr=0.05, clip_norm=2.0, lrd=0.99)
    for step in range(20):
        for w, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            _quadratic_grads(w, step)
            opt.step()
    assert torch.equal(a, b)
    assert torch.equal(opt_a.state[a]["exp_avg_sq"], opt_b.state[b]["exp_avg_sq"])


def test_sparse_rows_only_and_dense_when_every_row_is_touched() -> None:
    init = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    dense, sparse = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt_d, opt_s = LazyClippedAdam([dense], lr=0.1), LazyClippedAdam([sparse], lr=0.1)
    every = torch.arange(6)
    for step in range(5):  # all rows in every step: lazy == dense
        for w, opt, sp in ((dense, opt_d, False), (sparse, opt_s, True)):
            opt.zero_grad()
            (gather_rows(w, every, sp) ** 2 * (step + 1)).sum().backward()
            assert w.grad.is_sparse == sp
            opt.step()
    torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-7)
    # A step touching rows 1 and 4 only leaves the others (and their moments) alone.
    before, m_before = sparse.detach().clone(), opt_s.state[sparse]["exp_avg"].clone()
    opt_s.zero_grad()
    gather_rows(sparse, torch.tensor([4, 1, 4]), True).sum().backward()
    opt_s.step()
    untouched = torch.tensor([0, 2, 3, 5])
    assert torch.equal(sparse.detach()[untouched], before[untouched])
    assert torch.equal(opt_s.state[sparse]["exp_avg"][untouched], m_before[untouched])
    assert not torch.equal(sparse.detach()[[1, 4]], before[[1, 4]])


def test_gather_rows_gradient_matches_indexing() -> None:
    w = torch.randn(7, 3, 2, requires_grad=True)
    idx = torch.tensor([6, 0, 6, 2])
    out = gather_rows(w, idx, True)
    torch.testing.assert_close(out, w.detach()[idx])
    (out * torch.arange(24.0).reshape(4, 3, 2)).sum().backward()
    sparse_grad = w.grad.to_dense()
    w.grad = None
    (w[idx] * torch.arange(24.0).reshape(4, 3, 2)).sum().backward()
    torch.testing.assert_close(sparse_grad, w.grad)


@pytest.fixture(scope="module")
def lazy_fit():
    ratings = planted_interactions(3000, n_items=120, seed=1)
    model = bp.PersonaRecommender(
        n_personas=3, n_factors=8, batch_size=16, n_negatives=10, max_epochs=2, n_draws=10,
        progress=False,
    )  # fmt: skip
    model.sparse_min_floats = 0  # lazy updates for these small tables too
    return ratings, model.fit(ratings)


def test_large_user_tables_get_lazy_updates(lazy_fit) -> None:
    ratings, model = lazy_fit
    U, N = len(model.user_vocab_), len(model.item_vocab_)
    assert U > 8 * model.batch_size and model.guide_.sparse_users
    assert N > 8 * model.n_negatives_ and model.guide_.sparse_items
    assert np.isfinite(model.elbo_).all() and model.n_steps_ == 2 * int(np.ceil(U / 16))
    small = bp.PersonaRecommender(n_personas=2, n_factors=4, max_epochs=1, progress=False)
    small.fit(ratings[ratings["user_id"] <= 100])  # fewer than 8 batches of users: dense
    assert not small.guide_.sparse_users and not small.guide_.sparse_items
    default = bp.PersonaRecommender(
        n_personas=2, n_factors=4, batch_size=16, max_epochs=1, progress=False
    )
    default.fit(ratings)  # 300 x 2 x 4 floats: too small a table to be worth lazy updates
    assert not default.guide_.sparse_users


def test_posterior_computations_are_chunked_by_user(lazy_fit, monkeypatch) -> None:
    """No U x N array: recommend/score/log_predictive see bounded chunks of users, and
    the results do not depend on the chunk size."""
    ratings, model = lazy_fit
    users = model.user_vocab_.ids
    pairs = ratings.iloc[::7]
    ref = (
        model.recommend(users, n=5),
        model.score(pairs["user_id"], pairs["item_id"]),
        model.log_predictive(pairs),
    )
    seen_sizes = []
    from bayes_persona.persona import posterior as pp

    inner = pp.PersonaPosterior.user_draws

    def spy(self, u, n_draws, with_softmax=False, shares=True):
        seen_sizes.append(len(u))
        return inner(self, u, n_draws, with_softmax, shares)

    monkeypatch.setattr(pp.PersonaPosterior, "user_draws", spy)
    N, K, S = len(model.item_vocab_), model.n_personas, model.n_draws
    # recommend (implicit) keeps (B, N) scores per chunk and draws at n items; score and
    # log_predictive build (S, B, K, N) arrays. Both in chunks of 37 users here:
    monkeypatch.setattr(pp, "CHUNK_FLOATS", 37 * (4 * N + 4 * S * K * 5))
    got_rec = model.recommend(users, n=5)
    assert max(seen_sizes) == 37 and len(seen_sizes) == -(-len(users) // 37)
    seen_sizes.clear()
    monkeypatch.setattr(pp, "CHUNK_FLOATS", 37 * S * K * N)
    got = (got_rec, model.score(pairs["user_id"], pairs["item_id"]), model.log_predictive(pairs))
    assert max(seen_sizes) == 37 and len(seen_sizes) > 2  # both calls came in several chunks
    pd.testing.assert_frame_equal(got[0], ref[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5)
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-5)


def test_csr_rows_of_matches_items_of(lazy_fit) -> None:
    _, model = lazy_fit
    users = np.array([5, 0, 17, 5])
    r, c = model.seen_.rows_of(users)
    for j, u in enumerate(users):
        np.testing.assert_array_equal(c[r == j], model.seen_.items_of(u))


def test_planted_interactions_is_vectorised_and_deterministic() -> None:
    a = planted_interactions(20_000, seed=3)
    b = planted_interactions(20_000, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert 0.8 * 20_000 < len(a) <= 20_000
    assert not a.duplicated(["user_id", "item_id"]).any()
    assert a["user_id"].nunique() == 2000 and a["item_id"].between(10001, 10500).all()
    per_user = a.groupby("user_id").size()
    assert per_user.max() <= 15
    # Planted tastes: a user's items concentrate on few items' worth of the catalogue.
    assert a["item_id"].value_counts().iloc[:50].sum() > 50 / 500 * len(a)


def test_scale_bench_writes_table_and_csv(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("BAYES_PERSONA_DATA", raising=False)  # planted sizes only, no ML-100K row
    out = tmp_path / "scale.csv"
    bench_main(["--sizes", "3000", "--epochs", "1", "--factors", "4", "--personas", "2",
                "--batch-size", "64", "--negatives", "20", "--rec-draws", "5", "--inline",
                "--repeats", "2", "--out", str(out)])  # fmt: skip
    frame = pd.read_csv(out)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["runs"] == 2
    assert row["us_per_interaction_min"] <= row["us_per_interaction"] <= row["us_per_interaction_max"]
    assert row["users"] == 300 and row["recommend_users"] == 300
    assert row["sec_per_epoch"] > 0 and row["steps_per_sec"] > 0 and row["peak_rss_mb"] > 0
    assert np.isnan(row["us_per_interaction_last_epoch"])  # one epoch: no later epoch to show
    text = capsys.readouterr().out
    assert "| dataset |" in text and "planted 3e+03" in text
    prov = json.loads((tmp_path / "scale.json").read_text())
    assert prov["settings"]["sizes"] == [3000.0] and prov["settings"]["negatives"] == 20
    assert "git_commit" in prov and "versions" in prov


def test_bench_scale_subcommand_dispatches(capsys) -> None:
    from bayes_persona.bench import main as bench_main_all

    with pytest.raises(SystemExit) as exc:
        bench_main_all(["scale", "--help"])
    assert exc.value.code == 0
    assert "--sizes" in capsys.readouterr().out


def test_median_run_keeps_the_middle_run_and_the_range() -> None:
    from bayes_persona.bench.scale import median_run

    runs = [{"us_per_interaction": v, "tag": i} for i, v in enumerate([5.0, 3.0, 9.0, 4.0])]
    row = median_run(runs)
    assert row["tag"] == 3  # 4.0: the lower middle of 3, 4, 5, 9
    assert (row["runs"], row["us_per_interaction_min"], row["us_per_interaction_max"]) == (4, 3.0, 9.0)
    assert median_run(runs[:3])["tag"] == 0  # 5.0, the middle of 3, 5, 9
    assert "runs" not in runs[3]  # the input rows are left alone


def test_scale_bench_recommends_only_up_to_recommend_max(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("BAYES_PERSONA_DATA", raising=False)
    out = tmp_path / "scale.csv"
    bench_main(["--sizes", "1000", "3000", "--epochs", "1", "--factors", "4", "--personas", "2",
                "--batch-size", "64", "--negatives", "20", "--rec-draws", "5", "--inline",
                "--repeats", "1", "--recommend-max", "2000", "--out", str(out)])  # fmt: skip
    frame = pd.read_csv(out).set_index("interactions")
    small, large = frame.iloc[0], frame.iloc[1]
    assert small["recommend_users"] == small["users"] and small["recommend_sec"] > 0
    assert large["recommend_users"] == 0 and pd.isna(large["recommend_sec"])


def test_cost_ratios_are_taken_round_by_round() -> None:
    """A size's cost over the smallest size's, per round: a machine that slows down between
    rounds moves both runs of a round, and not the ratio."""
    from bayes_persona.bench.scale import cost_ratios

    base = [{"us_per_interaction": v} for v in (4.0, 6.0, 5.0)]
    runs = [{"us_per_interaction": v} for v in (5.0, 7.2, 8.0)]
    out = cost_ratios(runs, base)
    assert out["cost_ratio"] == pytest.approx(1.25)  # the rounds give 1.25, 1.2 and 1.6
    assert (out["cost_ratio_min"], out["cost_ratio_max"], out["ratio_rounds"]) == (pytest.approx(1.2), 1.6, 3)
    # Whole-run medians would give 7.2 / 5.0 = 1.44 instead.
    one = cost_ratios(runs[:1], base)
    assert np.isnan(one.pop("last_epoch_ratio"))  # no run had a last-epoch cost
    assert one == {"cost_ratio": 1.25, "cost_ratio_min": 1.25, "cost_ratio_max": 1.25, "ratio_rounds": 1}


def test_last_epoch_costs_get_their_own_median_and_ratio() -> None:
    from bayes_persona.bench.scale import cost_ratios, median_run

    key = "us_per_interaction_last_epoch"
    base = [{"us_per_interaction": 4.0, key: 3.0}, {"us_per_interaction": 6.0, key: 5.0}, {"us_per_interaction": 5.0, key: 4.0}]
    runs = [{"us_per_interaction": 5.0, key: 3.3}, {"us_per_interaction": 7.2, key: 6.5}, {"us_per_interaction": 8.0, key: 4.4}]
    assert cost_ratios(runs, base)["last_epoch_ratio"] == pytest.approx(1.1)  # rounds 1.1, 1.3, 1.1
    row = median_run(runs)
    assert row["us_per_interaction"] == 7.2 and row[key] == pytest.approx(4.4)  # medians taken apart
    assert np.isnan(median_run([*runs, {"us_per_interaction": 1.0}])[key])  # a run without one


def test_scale_bench_interleaves_its_rounds(tmp_path, monkeypatch) -> None:
    """--repeats rounds run every repeated size in turn (small, large, small, large), and
    sizes above --repeat-max run once, in the first round."""
    from bayes_persona.bench import scale

    monkeypatch.delenv("BAYES_PERSONA_DATA", raising=False)
    order = []

    def fake(n, args):
        order.append(n)
        cost = {1000: 2.0, 3000: 3.0, 5000: 4.0}[n] * (1 + len(order) / 10)
        return {c: 1.0 for c in scale.COLUMNS} | {"dataset": f"planted {n:.0e}", "interactions": n,
                                                    "us_per_interaction": cost}  # fmt: skip

    monkeypatch.setattr(scale, "run_size", fake)
    out = tmp_path / "scale.csv"
    scale.main(["--sizes", "1000", "3000", "5000", "--inline", "--repeats", "3", "--repeat-max", "3000",
                "--out", str(out)])  # fmt: skip
    assert order == [1000, 3000, 5000, 1000, 3000, 1000, 3000]
    frame = pd.read_csv(out).set_index("interactions")
    assert frame.loc[3000, "runs"] == 3 and frame.loc[5000, "runs"] == 1
    assert frame.loc[1000, "cost_ratio"] == 1.0
    # Round ratios 3.0*1.2/(2.0*1.1), 3.0*1.5/(2.0*1.4), 3.0*1.7/(2.0*1.6); their median:
    assert frame.loc[3000, "cost_ratio"] == pytest.approx(3.0 * 1.5 / (2.0 * 1.4))
    assert frame.loc[5000, "ratio_rounds"] == 1
    every = pd.read_csv(tmp_path / "scale_runs.csv")
    assert every["round"].tolist() == [1, 1, 1, 2, 2, 3, 3]
    assert every["interactions"].tolist() == [1000, 3000, 5000, 1000, 3000, 1000, 3000]
    assert every["us_per_interaction"].iloc[3] == pytest.approx(2.0 * 1.4)


def test_scale_bench_reports_the_last_epoch_of_a_longer_fit(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("BAYES_PERSONA_DATA", raising=False)
    out = tmp_path / "scale.csv"
    bench_main(["--sizes", "3000", "--epochs", "3", "--factors", "4", "--personas", "2", "--batch-size", "64",
                "--negatives", "20", "--inline", "--repeats", "1", "--no-recommend", "--out", str(out)])  # fmt: skip
    row = pd.read_csv(out).iloc[0]
    last = row["us_per_interaction_last_epoch"]
    # One epoch of three: positive, and within the whole fit's time (three epochs' mean cost).
    assert 0 < last < 3 * row["us_per_interaction"]
    assert (pd.read_csv(tmp_path / "scale_runs.csv")["us_per_interaction_last_epoch"] == last).all()
