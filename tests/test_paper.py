"""The paper's tables, numbers and figures are what ``paper/make_paper.py`` renders from the
result files in ``paper/results/``.

The comparison with the committed paper is skipped, with the command that writes them,
while a result file is absent (the benchmark is run by hand: ``python -m bayes_persona.bench
--out paper/results``). The rendering pipeline itself is tested on small result files made
here, so it is checked whether or not the real ones exist.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER_DIR = ROOT / "paper"


def _load_make_paper():
    spec = importlib.util.spec_from_file_location("make_paper", PAPER_DIR / "make_paper.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


mp = _load_make_paper()


# --------------------------------------------------------------------------- the committed paper
def _skip_unless(loader):
    try:
        return loader(mp.RESULTS_DIR)
    except mp.MissingResultsError as exc:
        pytest.skip(f"result file absent, nothing to compare: {exc}")


def _assert_blocks_match(rendered: dict[str, str]) -> None:
    present = mp.paper_blocks(mp.PAPER.read_text())
    stale = sorted(name for name, body in rendered.items() if present.get(name) != body)
    assert not stale, (
        f"paper/paper.md differs from what make_paper.py renders from paper/results in {stale}: "
        "run `python paper/make_paper.py build`"
    )


def test_paper_benchmark_blocks_match_results():
    bench = _skip_unless(mp.load_benchmark)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_benchmark(bench).items()})
    assert (PAPER_DIR / "figures" / "benchmark.png").is_file(), (
        "run `python paper/make_paper.py build`"
    )


def test_paper_recovery_blocks_match_recovery_json():
    rec = _skip_unless(mp.load_recovery)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_recovery(rec).items()})
    assert (PAPER_DIR / "figures" / "recovery.png").is_file(), (
        "run `python paper/make_paper.py build`"
    )
    assert rec.get("kind") == "full", "paper/results/recovery.json is from a smoke run"


def test_paper_markers_are_exactly_the_rendered_blocks():
    present = set(mp.paper_blocks(mp.PAPER.read_text()))
    assert present == set(mp.ALL_BLOCKS)


def test_paper_costs_alone_blocks_match_results():
    ca = _skip_unless(mp.load_costs_alone)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_costs_alone(ca).items()})


def test_paper_scale_blocks_match_results():
    sc = _skip_unless(mp.load_scale)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_scale(sc).items()})


def test_paper_scale_serve_blocks_match_results():
    sv = _skip_unless(mp.load_scale_serve)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_scale_serve(sv).items()})


def test_paper_scale_check_blocks_match_results():
    ck = _skip_unless(mp.load_scale_check)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_scale_check(ck).items()})


def test_scale_check_text_reports_its_seed_and_ratio():
    frame = pd.DataFrame({"dataset": ["planted 1e+05", "planted 1e+07"], "interactions": [100000, 10000000],
                          "us_per_interaction": [4.0, 5.6], "cost_ratio": [1.0, 1.37], "cost_ratio_min": [1.0, 1.2],
                          "cost_ratio_max": [1.0, 1.4], "ratio_rounds": [5, 5]})  # fmt: skip
    ck = {"scale": frame, "provenance": {"settings": {"seed": 1}, "git_commit": "abcdef123"}}
    text = mp.render_scale_check(ck)["text:scale-check"]
    assert "seed 1" in text and "commit abcdef1" in text and "4.00 and 5.60 µs" in text
    assert "1.37× (median of 5 interleaved rounds' ratios; 1.20–1.40×)" in text
    assert "last epochs" not in text  # the file has no last-epoch costs
    assert mp.render_scale_check({**ck, "scale": frame.iloc[:1]}) == {}
    last = frame.assign(us_per_interaction_last_epoch=[3.5, 4.2], last_epoch_ratio=[1.0, 1.21])
    text = mp.render_scale_check({**ck, "scale": last})["text:scale-check"]
    assert "Its last epochs alone (3.50 and 4.20 µs) give 1.21× (median of the rounds' ratios)." in text


def test_scale_serve_text_reports_the_served_size_and_nothing_when_none_was_served():
    frame = pd.DataFrame({"dataset": ["planted 1e+07"], "interactions": [9851904], "users": [1000000],
                          "items": [6325], "us_per_interaction": [5.0], "recommend_users": [1000000],
                          "recommend_draws": [20], "recommend_sec": [2000.0]})  # fmt: skip
    sv = {"scale": frame, "provenance": {"settings": {"top": 10}, "git_commit": "abcdef123"}}
    text = mp.render_scale_serve(sv)["text:scale-serve"]
    assert "took 2,000 s, 2.0 ms per user" in text and "1,000,000 users × 6,325 items" in text
    assert "commit abcdef1" in text and "5.00 µs per interaction" in text
    unserved = {"scale": frame.assign(recommend_users=0, recommend_sec=float("nan")), "provenance": sv["provenance"]}
    assert mp.render_scale_serve(unserved) == {}


def test_scale_table_reports_the_largest_size_against_the_smallest():
    """The ratio the scale target is judged by: cost per interaction at the largest planted
    size over the smallest's (ML-100K's row is not a planted size)."""
    frame = pd.DataFrame({"dataset": ["planted 1e+05", "planted 1e+07", "ML-100K (>=4)"],
                          "interactions": [100000, 10000000, 55375], "users": [10000, 1000000, 942],
                          "items": [632, 6325, 1447], "sec_per_epoch": [0.5, 60.0, 0.1], "steps_per_sec": [80, 70, 10],
                          "us_per_interaction": [5.0, 6.0, 2.0], "recommend_sec": [1.0, float("nan"), 0.5],
                          "peak_rss_mb": [400, 3000, 450]})  # fmt: skip
    sc = {"scale": frame, "provenance": {"settings": {"personas": 4, "factors": 32, "batch_size": 256,
                                                      "negatives": 256, "threads": 1}, "git_commit": "abcdef123"}}  # fmt: skip
    text = mp.render_scale(sc)["table:scale"]
    assert "10,000,000 interactions is 1.20× its value at 100,000" in text
    assert "commit abcdef1" in text
    assert mp._scale_ratio({"scale": frame.iloc[[0, 2]]}) is None  # one planted size: no ratio
    # Interleaved rounds: the median of the rounds' ratios and their range, not the rows' ratio.
    rounds = frame.assign(cost_ratio=[1.0, 1.25, float("nan")], cost_ratio_min=[1.0, 1.1, float("nan")],
                          cost_ratio_max=[1.0, 1.4, float("nan")], ratio_rounds=[5, 5, float("nan")])  # fmt: skip
    text = mp.render_scale({**sc, "scale": rounds})["table:scale"]
    assert "10,000,000 interactions is 1.25× (median of 5 interleaved rounds' ratios; 1.10–1.40×) its value" in text
    # The setup column: the fit's time outside the optimisation, empty where a file lacks it.
    assert "| Setup (s) |" in text and "| 70 | 6.00 |  |  |" in text
    setup = frame.assign(fit_setup_sec=[8.44, 30.06, 2.0])
    assert "| 70 | 6.00 |  | 30.1 |" in mp.render_scale({**sc, "scale": setup})["table:scale"]
    # The last epoch's cost, and the rounds' median ratio of it, where the file has them.
    last = rounds.assign(us_per_interaction_last_epoch=[4.0, 4.6, 1.5], last_epoch_ratio=[1.0, 1.15, float("nan")])
    text = mp.render_scale({**sc, "scale": last})["table:scale"]
    assert "| Last epoch µs / interaction |" in text
    assert "| 4.60 |" in text and "The last epoch alone, which allocates no optimiser state" in text
    assert "costs 1.15× (median of the rounds' ratios)" in text
    assert "The last epoch alone" not in mp.render_scale({**sc, "scale": rounds})["table:scale"]


def test_paper_accounts_blocks_match_results():
    acc = _skip_unless(mp.load_accounts)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_accounts(acc).items()})


def test_paper_sbc_blocks_match_results():
    sbc = _skip_unless(mp.load_sbc)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_sbc(sbc).items()})
    assert not sbc["provenance"].get("smoke"), "paper/results/sbc is from a smoke run"


def test_paper_nuts_blocks_match_results():
    nuts = _skip_unless(mp.load_nuts)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_nuts(nuts).items()})
    assert not nuts["provenance"].get("smoke"), "paper/results/nuts is from a smoke run"


def test_readme_figures_are_rendered_from_the_result_files():
    """Every figure the README quotes sits in a readme:* block that make_paper renders."""
    _, inputs, _ = mp.render(mp.RESULTS_DIR, partial=True)
    present = mp.paper_blocks(mp.README.read_text())
    assert set(present) == set(mp.README_BLOCKS)
    rendered = mp.render_readme(inputs)
    stale = sorted(n for n in rendered if present[n] != rendered[n])
    assert not stale, f"README.md differs from paper/results in {stale}: run `python paper/make_paper.py build`"


def test_result_files_come_from_one_commit():
    """Every result file records the same commit, of a checkout without uncommitted code."""
    commits, dirty = {}, {}
    for name in ("provenance.json", "accounts/provenance.json", "accounts_seed2/provenance.json", "sbc/provenance.json",
                 "nuts/provenance.json", "recovery.json"):
        path = mp.RESULTS_DIR / name
        if path.is_file():
            prov = json.loads(path.read_text())
            commits[name], dirty[name] = prov.get("git_commit"), prov.get("git_dirty")
    if len(commits) < 2:
        pytest.skip("fewer than two result files with provenance")
    assert len(set(commits.values())) == 1, commits
    assert not any(dirty.values()), f"written from a checkout with uncommitted code: {dirty}"


def test_every_image_the_paper_links_is_one_make_paper_writes():
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", mp.PAPER.read_text())
    assert set(links) <= {"figures/benchmark.png", "figures/recovery.png"}


# --------------------------------------------------------------------------- the pipeline on made-up files
MODELS = ["MostPopular", "EASE", "Ours K=1", "Ours K=8"]


def _fake_results(folder: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for m in MODELS:
        for protocol, metric, k in [("full", "ndcg", 10), ("full", "ndcg", 20), ("full", "recall", 20),
                                    ("full", "hit_rate", 10), ("full", "tdd", 10), ("full", "coverage", 10),
                                    ("sampled", "hit_rate", 10), ("sampled", "ndcg", 10), ("temporal", "ndcg", 10),
                                    ("temporal", "hit_rate", 10), ("temporal", "recall", 20)]:  # fmt: skip
            v = float(rng.uniform(0.1, 0.9))
            lo, hi = (np.nan, np.nan) if metric == "coverage" else (v - 0.01, v + 0.01)
            rows.append(
                dict(model=m, protocol=protocol, metric=metric, k=k, value=v, low=lo, high=hi)
            )
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    costs = pd.DataFrame(
        {"model": MODELS, "fit_seconds": [0.1, 1.0, 10.0, 20.0], "recommend_all_seconds": [0.1, 0.2, 5.0, 9.0],
         "peak_rss_mb": [400, 450, 900, 1000], "params": ["{}", '{"l2": 500.0}', "{}", "{}"],
         "svi_steps_per_second": [np.nan, np.nan, 3.0, 2.0]}
    )  # fmt: skip
    costs.to_csv(folder / "costs.csv", index=False)
    pd.DataFrame([{"a": "Ours K=8", "b": "Ours K=1", "metric": "ndcg", "k": 10, "mean_diff": -0.013, "low": -0.021,
                   "high": -0.005, "p_value": 0.002, "n_users": 900}]).to_csv(folder / "paired.csv", index=False)  # fmt: skip


def _fake_recovery(folder: Path) -> None:
    def run(seed, acc):
        cov = {f"{lv:g}": {"all": lv / 10, "multi": lv / 8} for lv in mp.RECOVERY_LEVELS}
        by = [{"n_planted": m, "users": 10, "assignment_accuracy": acc, "count_accuracy": 0.5, "coverage_0.9": 0.1}
              for m in (1, 2, 3)]  # fmt: skip
        return dict(seed=seed, n_users=30, n_items=60, n_interactions=900, fit_seconds=1.5, n_steps=40,
                    stopped_early=False, assignment_accuracy=acc, count_accuracy=0.5, prevalence_threshold=0.1,
                    coverage=cov, by_n_planted=by)  # fmt: skip

    payload = {
        "kind": "full",
        "world": {"n_users": 30, "n_items": 60, "n_tastes": 3, "interactions_per_user": [10, 30]},
        "model": {
            "n_personas": 4,
            "n_factors": 16,
            "batch_size": 64,
            "learning_rate": 0.03,
            "max_epochs": 40,
        },
        "levels": list(mp.RECOVERY_LEVELS),
        "runs": [run(0, 0.8), run(1, 0.9)],
    }
    (folder / "recovery.json").write_text(json.dumps(payload))


def _fake_accounts(folder: Path) -> None:
    (folder / "accounts").mkdir()
    rows = [(m, k, v) for m, acc in (("ours", 0.7), ("kmeans", 0.74), ("share", 0.5))
            for k, v in (("accuracy", acc), ("auc", acc + 0.1), ("ece", 0.05), ("brier", 0.2))]  # fmt: skip
    rows += [("ours", "confidently_wrong", 0.04), ("ours", "interval_width", 0.7)]
    pd.DataFrame(rows, columns=["method", "metric", "value"]).to_csv(folder / "accounts" / "accounts.csv", index=False)
    (folder / "accounts" / "provenance.json").write_text(
        json.dumps({"n_pairs": 150, "seed": 0, "n_test_rows": 1996, "git_commit": "0123456789ab",
                    "params": {"ours": {"n_personas": 8}}})
    )


def _fake_sbc(folder: Path) -> None:
    (folder / "sbc").mkdir()
    cov = pd.DataFrame([{"guide": "meanfield", "quantity": q, "level": lv, "coverage": lv - d, "n": 100, "se": 0.03}
                        for q, d in (("max_share", 0.0), ("log_pick", 0.2)) for lv in (0.5, 0.9)])  # fmt: skip
    cov.to_csv(folder / "sbc" / "coverage.csv", index=False)
    pd.DataFrame([{"guide": "meanfield", "quantity": q, "n": 100, "n_bins": 10, "chi2": 5.0, "df": 9, "pvalue": p}
                  for q, p in (("max_share", 0.4), ("log_pick", 1e-9))]).to_csv(folder / "sbc" / "uniformity.csv", index=False)  # fmt: skip
    (folder / "sbc" / "provenance.json").write_text(json.dumps(
        {"n_replications": 100, "n_users": 40, "n_items": 500, "n_personas": 3, "n_factors": 3,
         "interactions_per_user": [10, 20], "likelihood": "joint", "empirical_bayes": False, "num_samples": 99,
         "repeat_probability": 0.04, "git_commit": "0123456789ab", "smoke": False}))  # fmt: skip


def _fake_nuts(folder: Path) -> None:
    (folder / "nuts").mkdir()
    pd.DataFrame([{"method": m, "quantity": "co_assignment", "level": 0.9, "coverage": c, "n": 150, "se": 0.02}
                  for m, c in (("meanfield", 0.8), ("lowrank", 0.88), ("nuts", 0.9))]).to_csv(folder / "nuts" / "coverage.csv", index=False)  # fmt: skip
    pd.DataFrame([{"method": m, "quantity": "co_assignment", "overlap": 0.7, "width_ratio": 0.8}
                  for m in ("meanfield", "lowrank")]).to_csv(folder / "nuts" / "overlap.csv", index=False)  # fmt: skip
    (folder / "nuts" / "provenance.json").write_text(json.dumps(
        {"n_worlds": 10, "n_users": 15, "n_items": 80, "n_personas": 3, "n_factors": 2, "interactions_per_user": [8, 15],
         "num_samples": 200, "warmup_steps": 400, "divergences": 0, "git_commit": "0123456789ab", "smoke": False}))  # fmt: skip


@pytest.fixture()
def workspace(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    paper = tmp_path / "paper.md"
    shutil.copy(mp.PAPER, paper)
    return results, paper, tmp_path / "figures"


def test_build_renders_every_block_and_figure(workspace):
    results, paper, figures = workspace
    _fake_results(results)
    _fake_recovery(results)
    _fake_accounts(results)
    _fake_sbc(results)
    _fake_nuts(results)
    assert mp.build(results, paper, figures) == []
    text = paper.read_text()
    blocks = mp.paper_blocks(text)
    assert "| meanfield | log predictive of an item | 30.0% | 70.0% | 1e-09 |" in blocks["table:sbc"]
    assert "2 cover within 5 points of nominal and 2 fall more than 5 points below" in blocks["text:sbc"]
    assert "1 of 2 rank-uniformity tests have p > 0.01" in blocks["text:sbc"]
    assert "| meanfield | two items share a persona | 80.0% | 0.70 | 0.80 |" in blocks["table:nuts"]
    assert "within 5 points of NUTS's: meanfield 0 of 1; lowrank 1 of 1." in blocks["text:nuts"]
    readme = mp.render_readme({"sbc": mp.load_sbc(results), "nuts": mp.load_nuts(results)})
    assert "(100 replications): meanfield: largest persona share 90.0%, log predictive of an item 70.0%." in readme["readme:sbc"]
    assert "lowrank: two items share a persona 88.0%; nuts: two items share a persona 90.0%" in readme["readme:nuts"]
    for m in MODELS:
        assert f"| {m} |" in blocks["table:benchmark"]
        assert f"| {m} |" in blocks["table:sampled"]
        assert f"| {m} |" in blocks["table:temporal"]
        assert f"| {m} |" in blocks["table:costs"]
    assert "l2=500" in blocks["table:costs"]
    assert blocks["text:tuning"].strip() == "The run did not record its tuning grids."
    ranking = mp.render_readme({"benchmark": mp.load_benchmark(results)})["readme:ranking"]
    assert ranking.endswith("Ours K=8 minus Ours K=1 -0.013 [-0.021, -0.005], p = 0.002.")
    edge = mp.load_benchmark(results)
    edge.provenance["tuning_grids"] = {"EASE": {"l2": [100.0, 300.0, 500.0, 1000.0]}}
    assert mp._tuning_text(edge) == "Every tuned value is interior to its grid."
    edge.costs.loc["EASE", "params"] = '{"l2": 1000.0}'
    assert "EASE l2=1000 (the largest of 100, 300, 500, 1000)" in mp._tuning_text(edge)
    assert blocks["value:recovery-seeds"] == "2"
    assert (
        blocks["value:recovery-world"]
        == "30 users, 60 items and 3 tastes, 10 to 30 interactions per user"
    )
    assert blocks["value:recovery-model"].startswith("K = 4 personas, D = 16")
    assert blocks["value:assignment-accuracy"] == "85.0% (range 80.0% to 90.0%)"
    assert "9.0%, 81.0 points below nominal (mean" in blocks["text:coverage-summary"]
    assert "| Ours (K=8, defaults) | 70.0% |" in blocks["table:accounts"]
    assert blocks["value:accounts-setup"] == "150 balanced accounts (seed 0), 1996 held-out account items; commit 01234567"
    assert "Not rendered" not in text and "not rendered" not in text
    for name in ("benchmark.png", "recovery.png"):
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # idempotent, and `check` agrees
    assert mp.stale_blocks(results, paper) == []
    mp.build(results, paper, figures)
    assert paper.read_text() == text


def test_best_value_is_bold_and_tdd_is_lower_is_better(workspace):
    results, _, _ = workspace
    _fake_results(results)
    res = pd.read_csv(results / "results.csv")
    table = mp.render_benchmark(mp.load_benchmark(results))["table:benchmark"]
    tdd = res[(res.metric == "tdd") & (res.k == 10)].set_index("model")["value"]
    best = tdd.idxmin()
    row = next(line for line in table.splitlines() if line.startswith(f"| {best} |"))
    assert f"**{tdd[best]:.3f} [" in row


def test_missing_results_fail_clearly_and_name_the_command(workspace, capsys):
    results, paper, figures = workspace
    before = paper.read_text()
    with pytest.raises(
        mp.MissingResultsError, match="python -m bayes_persona.bench --out paper/results"
    ):
        mp.build(results, paper, figures)
    assert paper.read_text() == before
    assert (
        mp.main(
            ["build", "--results", str(results), "--paper", str(paper), "--figures", str(figures)]
        )
        == 1
    )
    assert "results.csv" in capsys.readouterr().err


def test_partial_build_renders_what_exists(workspace):
    results, paper, figures = workspace
    _fake_recovery(results)
    before = mp.paper_blocks(paper.read_text())
    missing = mp.build(results, paper, figures, partial=True)
    assert len(missing) == 4 and "results.csv" in missing[0] and "accounts.csv" in missing[1] and "sbc" in missing[2]
    assert "nuts" in missing[3]
    blocks = mp.paper_blocks(paper.read_text())
    assert blocks["value:recovery-seeds"] == "2"
    assert blocks["table:benchmark"] == before["table:benchmark"]  # left as it was
    assert (figures / "recovery.png").is_file() and not (figures / "benchmark.png").exists()


def test_check_flags_a_hand_edited_table(workspace):
    results, paper, figures = workspace
    _fake_results(results)
    _fake_recovery(results)
    _fake_accounts(results)
    _fake_sbc(results)
    _fake_nuts(results)
    mp.build(results, paper, figures)
    paper.write_text(paper.read_text().replace("| EASE |", "| EASE (edited) |", 1))
    assert mp.stale_blocks(results, paper) == ["table:benchmark"]
    assert mp.main(["check", "--results", str(results), "--paper", str(paper)]) == 1


def test_unknown_or_missing_markers_are_errors():
    with pytest.raises(ValueError, match="does not render"):
        mp.apply_blocks("<!-- table:nonsense -->x<!-- /table:nonsense -->", {})
    with pytest.raises(ValueError, match="lacks the markers"):
        mp.apply_blocks("no markers", {"table:benchmark": "x"})


def test_recovery_run_at_smoke_size_feeds_the_renderer(tmp_path):
    out = tmp_path / "recovery.json"
    payload = mp.run_recovery((0,), out, smoke=True, levels=(0.5, 0.9))
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    run = payload["runs"][0]
    assert 0 <= run["assignment_accuracy"] <= 1 and 0 <= run["count_accuracy"] <= 1
    assert set(run["coverage"]) == {"0.5", "0.9"}
    assert {b["n_planted"] for b in run["by_n_planted"]} <= {1, 2, 3}
    assert set(run["uncertain_central"]) == set(run["uncertain_count_ok"]) == set(run["uncertain"])
    assert 0 <= run["uncertain_share_count_ok"] <= 1
    blocks = mp.render_recovery(payload)
    assert "smoke-size run" in blocks["text:coverage-summary"]
    assert "equal-tailed intervals cover 50%" in blocks["text:coverage-summary"]
    head = blocks["table:coverage"].splitlines()[0]
    assert "Uncertain, equal-tailed intervals" in head and "persona count was recovered" in head
    # the readings chosen by the posterior and the exact reference travel with every run
    assert set(run["flagged"]) == set(run["grouped_flagged"]) == set(run["grouped_uncertain"]) == set(run["uncertain"])
    assert 0 < run["flagged_share"] <= 1 and run["flagged_misses_level"] == 0.9
    assert set(payload["reference"]) == {str(n) for n in mp.REFERENCE_TRIALS}
    assert "exact posterior" in mp.render_recovery_selection(payload)["text:recovery-selection"]


def test_recovery_files_without_the_equal_tailed_columns_still_render(tmp_path):
    _fake_recovery(tmp_path)
    blocks = mp.render_recovery(mp.load_recovery(tmp_path))
    assert "equal-tailed" not in blocks["table:coverage"] + blocks["text:coverage-summary"]


def test_html_needs_pandoc_and_says_so(monkeypatch):
    monkeypatch.setattr(mp.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pandoc is not installed"):
        mp.html()


def test_bench_all_runs_every_result_file_from_one_clean_commit(tmp_path, monkeypatch):
    """``bench all`` lists the ranking, both shared-account seeds and the recovery run, into
    the layout make_paper reads, and refuses a dirty checkout."""
    from bayes_persona import bench, provenance

    jobs = bench.all_jobs(tmp_path, "/data", smoke=True)
    outs = [cmd[cmd.index("--out") + 1] for cmd in jobs]
    assert outs == [str(tmp_path), str(tmp_path / "accounts"), str(tmp_path / "accounts_seed2"),
                    str(tmp_path / "sbc"), str(tmp_path / "nuts"), str(tmp_path / "recovery.json")]  # fmt: skip
    assert all("--smoke" in cmd for cmd in jobs)
    assert [cmd[cmd.index("--seed") + 1] for cmd in jobs[1:3]] == ["0", "2"]
    monkeypatch.setattr(provenance, "git_commit", lambda: ("abc", True))
    with pytest.raises(SystemExit) as info:
        bench.run_all(["--out", str(tmp_path)])
    assert info.value.code == 2


def test_bench_all_runs_its_jobs_in_parallel_and_stops_on_a_failure(tmp_path, monkeypatch):
    import subprocess

    from bayes_persona import bench, provenance

    monkeypatch.setattr(provenance, "git_commit", lambda: ("abc", False))
    marks = [tmp_path / f"m{j}" for j in range(3)]
    ok = [[sys.executable, "-c", f"import pathlib, time; time.sleep(0.3); pathlib.Path({str(m)!r}).touch()"] for m in marks]
    monkeypatch.setattr(bench, "all_jobs", lambda *a: ok)
    last = tmp_path / "last"  # the serial job runs after every parallel one has finished
    check = f"import pathlib; assert all(pathlib.Path(m).is_file() for m in {[str(m) for m in marks]!r}); pathlib.Path({str(last)!r}).touch()"
    monkeypatch.setattr(bench, "serial_jobs", lambda *a: [[sys.executable, "-c", check]])
    assert bench.run_all(["--out", str(tmp_path), "--jobs", "2"]) == 0
    assert all(m.is_file() for m in marks) and last.is_file()
    monkeypatch.setattr(bench, "all_jobs", lambda *a: [[sys.executable, "-c", "raise SystemExit(3)"], *ok])
    with pytest.raises(subprocess.CalledProcessError):
        bench.run_all(["--out", str(tmp_path), "--jobs", "2"])
    with pytest.raises(SystemExit):
        bench.run_all(["--out", str(tmp_path), "--jobs", "0"])


def test_result_files_do_not_make_the_checkout_dirty(tmp_path):
    """A run that writes paper/results leaves the next job's provenance clean; code edits do not."""
    import subprocess

    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "paper" / "results").mkdir(parents=True)
    shutil.copy(Path(mp.__file__).resolve().parents[1] / "bayes_persona" / "provenance.py", repo / "pkg" / "provenance.py")
    (repo / "paper" / "results" / "r.csv").write_text("a\n1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    spec = importlib.util.spec_from_file_location("prov_copy", repo / "pkg" / "provenance.py")
    prov = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prov)
    (repo / "paper" / "results" / "r.csv").write_text("a\n2\n")
    commit, dirty = prov.git_commit()
    assert commit and dirty is False
    (repo / "pkg" / "provenance.py").write_text((repo / "pkg" / "provenance.py").read_text() + "\n# edit\n")
    assert prov.git_commit()[1] is True


def test_coverage_verdict_always_names_its_direction() -> None:
    """An over-coverage is not "close to nominal": the verdict says above or below, by how
    much, and flags the 5-point tolerance of issue 13 separately."""
    assert mp.verdict(0.929, 0.9) == "2.9 points above nominal (within 5)"
    assert mp.verdict(0.852, 0.9) == "4.8 points below nominal (within 5)"
    assert mp.verdict(0.336, 0.5) == "16.4 points below nominal"
    assert mp.verdict(0.97, 0.9) == "7.0 points above nominal"


def test_nuts_addenda_count_cells_within_five_points_per_method():
    cov = pd.DataFrame([{"method": m, "quantity": "co_assignment", "level": lv, "coverage": c, "n": 150, "se": 0.03}
                        for m, vals in (("meanfield", (0.40, 0.80)), ("meanfield+resampled", (0.46, 0.86)),
                                        ("nuts", (0.50, 0.90)))
                        for lv, c in zip((0.5, 0.9), vals, strict=True)])  # fmt: skip
    ov = pd.DataFrame([{"method": m, "quantity": "co_assignment", "overlap": 0.9, "width_ratio": 0.95}
                       for m in ("meanfield", "meanfield+resampled")])  # fmt: skip
    prov = {"resample": 50, "git_commit": "0123456789ab", "n_worlds": 10, "random_state": 1, "divergences": 0}
    out = mp.render_nuts_resampled({"coverage": cov, "overlap": ov, "provenance": prov})
    assert "meanfield 0 of 2; meanfield+resampled 2 of 2" in out["text:nuts-resampled"]
    assert "resampled from 50 guide draws" in out["text:nuts-resampled"]
    table = out["table:nuts-resampled"]
    assert "| meanfield+resampled |" in table and "| nuts |" in table and "| meanfield |" not in table
    check = mp.render_nuts_check({"coverage": cov, "overlap": ov, "provenance": prov})["text:nuts-check"]
    assert "10 other worlds (seed 1" in check and "meanfield+resampled 2 of 2" in check


def test_nuts_iw_addenda_keep_the_importance_weighted_rows():
    cov = pd.DataFrame([{"method": m, "quantity": "co_assignment", "level": lv, "coverage": c, "n": 150, "se": 0.03}
                        for m, vals in (("meanfield", (0.40, 0.80)), ("meanfield+iw8", (0.47, 0.88)),
                                        ("meanfield+resampled", (0.30, 0.70)), ("nuts", (0.50, 0.90)))
                        for lv, c in zip((0.5, 0.9), vals, strict=True)])  # fmt: skip
    ov = pd.DataFrame([{"method": m, "quantity": "co_assignment", "overlap": 0.9, "width_ratio": 0.95}
                       for m in ("meanfield", "meanfield+iw8", "meanfield+resampled")])  # fmt: skip
    prov = {"user_particles": 8, "git_commit": "0123456789ab", "n_worlds": 10, "random_state": 1, "divergences": 0}
    out = mp.render_nuts_iw({"coverage": cov, "overlap": ov, "provenance": prov})
    assert "meanfield 0 of 2; meanfield+iw8 2 of 2; meanfield+resampled 0 of 2" in out["text:nuts-iw"]
    assert "8 draws of each user" in out["text:nuts-iw"]
    table = out["table:nuts-iw"]
    assert "| meanfield+iw8 |" in table and "| nuts |" in table
    assert "| meanfield |" not in table and "| meanfield+resampled |" not in table
    check = mp.render_nuts_iw_check({"coverage": cov, "overlap": ov, "provenance": prov})["text:nuts-iw-check"]
    assert "10 other worlds (seed 1" in check and "with 8 draws of each user" in check
    assert "meanfield+iw8 2 of 2" in check


def test_importance_weighted_sbc_and_accounts_addenda_render_their_own_runs():
    cov = pd.DataFrame([{"guide": "meanfield", "quantity": "co_assignment", "level": lv, "coverage": c, "n": 4000}
                        for lv, c in ((0.5, 0.45), (0.9, 0.84))])  # fmt: skip
    uni = pd.DataFrame([{"guide": "meanfield", "quantity": "co_assignment", "pvalue": 0.002}])
    prov = {"fit_kwargs": {"user_particles": 8}, "n_replications": 100, "git_commit": "0123456789ab"}
    out = mp.render_sbc_iw({"coverage": cov, "uniformity": uni, "provenance": prov})
    assert "| meanfield+iw8 | two items share a persona | 45.0% | 84.0% | 0.002 |" in out["table:sbc-iw"]
    assert "Fitted with 8 draws of each user (`paper/results/sbc_iw/`)" in out["text:sbc-iw"]
    assert "0 of 1 rank-uniformity tests" in out["text:sbc-iw"]
    both = mp.render_sbc_iw_resampled({"coverage": cov, "uniformity": uni, "provenance": {**prov, "resample": 50}})
    assert "| meanfield+iw8+resampled |" in both["table:sbc-iw-resampled"]
    assert "Fitted with 8 draws of each user; each user's draws resampled from 50" in both["text:sbc-iw-resampled"]
    plain = mp.render_sbc_resampled({"coverage": cov, "uniformity": uni, "provenance": {"resample": 50}})
    assert "| meanfield+resampled |" in plain["table:sbc-resampled"]
    acc = pd.DataFrame([{"method": "ours", "metric": m, "value": v}
                        for m, v in (("accuracy", 0.771), ("auc", 0.851), ("ece", 0.021), ("brier", 0.158),
                                     ("confidently_wrong", 0.034), ("interval_width", 0.559))])  # fmt: skip
    prov = {"params": {"ours": {"user_particles": 8}}, "n_pairs": 150, "seed": 0, "git_commit": "0123456789ab"}
    table = mp.render_accounts_iw({"accounts": acc, "provenance": prov})["table:accounts-iw"]
    assert "| 8 draws of each user | 150 (seed 0) | 77.1% | 0.851 | 0.021 | 3.4% | 0.559 | 01234567 |" in table
    assert mp.render_accounts_iw({"accounts": acc.assign(method="kmeans"), "provenance": prov}) == {}


def test_gibbs_addenda_render_the_sampler_rows():
    cov = pd.DataFrame([{"method": m, "quantity": "co_assignment", "level": lv, "coverage": c, "n": 150, "se": 0.03}
                        for m, vals in (("meanfield", (0.40, 0.80)), ("meanfield+iw8+gibbs", (0.48, 0.88)),
                                        ("nuts", (0.50, 0.90)))
                        for lv, c in zip((0.5, 0.9), vals, strict=True)])  # fmt: skip
    ov = pd.DataFrame([{"method": m, "quantity": "co_assignment", "overlap": 0.9, "width_ratio": 0.95}
                       for m in ("meanfield", "meanfield+iw8+gibbs")])  # fmt: skip
    prov = {"user_particles": 8, "git_commit": "0123456789ab", "n_worlds": 10, "random_state": 1, "gibbs": True}
    out = mp.render_nuts_gibbs({"coverage": cov, "overlap": ov, "provenance": prov})
    assert "cells within 5 points of NUTS's: meanfield+iw8+gibbs 2 of 2." in out["text:nuts-gibbs"]
    assert "| meanfield+iw8+gibbs |" in out["table:nuts-gibbs"] and "| meanfield |" not in out["table:nuts-gibbs"]
    check = mp.render_nuts_gibbs_check({"coverage": cov, "overlap": ov, "provenance": prov})["text:nuts-gibbs-check"]
    assert "10 other worlds (seed 1" in check and "meanfield+iw8+gibbs 2 of 2" in check
    sb = pd.DataFrame([{"guide": "meanfield", "quantity": "co_assignment", "level": 0.9, "coverage": 0.88, "n": 4000}])
    uni = pd.DataFrame([{"guide": "meanfield", "quantity": "co_assignment", "pvalue": 0.3}])
    sprov = {"fit_kwargs": {"user_particles": 8}, "gibbs": True, "git_commit": "0123456789ab"}
    txt = mp.render_sbc_iw_gibbs({"coverage": sb, "uniformity": uni, "provenance": sprov})
    assert "| meanfield+iw8+gibbs | two items share a persona | 88.0% | 0.3 |" in txt["table:sbc-iw-gibbs"]
    assert txt["text:sbc-iw-gibbs"].startswith("Fitted with 8 draws of each user; draws of the Gibbs sampler")


def test_the_exact_simulator_addendum_says_so():
    sb = pd.DataFrame([{"guide": "meanfield", "quantity": "co_assignment", "level": 0.9, "coverage": 0.83, "n": 4000}])
    uni = pd.DataFrame([{"guide": "meanfield", "quantity": "co_assignment", "pvalue": 0.001}])
    prov = {"fit_kwargs": {}, "repeats": True, "repeat_probability": 0.033, "git_commit": "0123456789ab",
            "n_replications": 100, "interactions_per_user": [10, 20]}  # fmt: skip
    txt = mp.render_sbc_exact({"coverage": sb, "uniformity": uni, "provenance": prov})
    assert "| meanfield (exact simulator) | two items share a persona | 83.0% |" in txt["table:sbc-exact"]
    assert txt["text:sbc-exact"].startswith("The exact simulator (independent picks, repeats counted)")
    assert "3.3% repeat an earlier one, and the fit counts each repeat" in txt["text:sbc-exact"]
    old = mp.render_sbc_iw({"coverage": sb, "uniformity": uni, "provenance": {**prov, "repeats": None}})
    assert "the simulator's departure from the likelihood (it draws distinct items)" in old["text:sbc-iw"]


def test_the_exact_nuts_addendum_reads_nuts_against_nominal():
    cov = pd.DataFrame([{"method": m, "quantity": "max_share", "level": lv, "coverage": c, "n": 150, "se": 0.03}
                        for m, vals in (("meanfield", (0.40, 0.80)), ("nuts", (0.52, 0.80)))
                        for lv, c in zip((0.5, 0.9), vals, strict=True)])  # fmt: skip
    ov = pd.DataFrame([{"method": "meanfield", "quantity": "max_share", "overlap": 0.8, "width_ratio": 0.9}])
    prov = {"repeats": True, "git_commit": "0123456789ab", "n_worlds": 10, "divergences": 0}
    out = mp.render_nuts_exact({"coverage": cov, "overlap": ov, "provenance": prov})
    # NUTS: 52% at 50 is within 5 points of nominal, 80% at 90 is not
    assert "NUTS's own intervals cover within 5 points of nominal in 1 of 2 cells" in out["text:nuts-exact"]
    assert "independent picks, repeats counted" in out["text:nuts-exact"]
    assert "Cells within 5 points of NUTS's: meanfield 1 of 2." in out["text:nuts-exact"]
    assert "| nuts | largest persona share | 52.0% | 80.0% | – | – |" in out["table:nuts-exact"]
    sb = pd.DataFrame([{"guide": "meanfield", "quantity": "log_pick", "level": 0.9, "coverage": 0.89, "n": 4000}])
    uni = pd.DataFrame([{"guide": "meanfield", "quantity": "log_pick", "pvalue": 0.4}])
    sprov = {"fit_kwargs": {"user_particles": 8}, "repeats": True, "repeat_probability": 0.034, "git_commit": "0123456789ab"}
    txt = mp.render_sbc_iw_exact({"coverage": sb, "uniformity": uni, "provenance": sprov})
    assert "| meanfield+iw8 (exact simulator) | log predictive of an item | 89.0% | 0.4 |" in txt["table:sbc-iw-exact"]
    assert txt["text:sbc-iw-exact"].startswith("The exact simulator (independent picks, repeats counted); fitted with 8")
    check = mp.render_sbc_iw_exact_check({"coverage": sb, "uniformity": uni, "provenance": {**sprov, "random_state": 1,
                                                                                          "n_replications": 100}})
    assert check["text:sbc-iw-exact-check"].startswith("The same on 100 other worlds (seed 1,")
    assert "log predictive of an item p = 0.4 (89.0% at 90%); 1 of 1 rank-uniformity tests" in check["text:sbc-iw-exact-check"]
    thin = mp.render_sbc_iw_gibbs_thin5({"coverage": sb, "uniformity": uni, "provenance": {
        **sprov, "gibbs": True, "gibbs_options": {"burn": 60, "thin": 5}, "n_replications": 25}})
    assert "draws of the Gibbs sampler with the fitted guide as its proposal (60 sweeps of burn-in, 5 sweeps between " \
        "kept draws) (`paper/results/sbc_iw_gibbs_thin5/`): 25 replications" in thin["text:sbc-iw-gibbs-thin5"]
    assert "| meanfield+iw8+gibbs (exact simulator) |" in thin["table:sbc-iw-gibbs-thin5"]


def test_accounts_geometry_splits_the_gap_between_personas_and_item_factors(tmp_path):
    _fake_accounts(tmp_path)
    acc = mp.load_accounts(tmp_path)
    assert "no labelled centroid in ours' item space" in mp.render_accounts(acc)["text:accounts-geometry"]
    extra = pd.DataFrame([(m, k, v) for m, a in (("ours_ceiling", 0.78), ("ceiling", 0.81))
                          for k, v in (("accuracy", a), ("auc", a + 0.05))], columns=["method", "metric", "value"])  # fmt: skip
    acc["table"] = pd.concat([acc["table"], extra], ignore_index=True)
    blocks = mp.render_accounts(acc)
    text = blocks["text:accounts-geometry"]
    assert "calls 78.0% of the held-out items right (AUC 0.830)" in text and "81.0% (AUC 0.860)" in text
    assert "Of the 11.0 points" in text and "8.0 lie between the personas" in text and "3.0 between our item factors" in text
    assert "item space (ceiling, not a peer)" in blocks["table:accounts"]


def test_nuts_addenda_name_the_worlds_they_ran_on():
    """An addendum written before the exact simulator (no ``repeats`` in its provenance) ran on
    the distinct-picks worlds, which ``nuts/`` no longer holds; one written after, on ``nuts/``'s."""
    assert mp._nuts_worlds({}) == "the distinct-picks worlds of `bench nuts --distinct`"
    assert mp._nuts_worlds({"repeats": True}) == "the worlds of `nuts/`"


def test_paper_recovery_selection_blocks_match_results():
    rec = _skip_unless(mp.load_recovery_selection)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_recovery_selection(rec).items()})
    assert rec.get("kind") == "full", "paper/results/recovery_selection is from a smoke run"


def _selection_run(flagged: float, truth_50: float) -> dict:
    levels = (0.5, 0.8, 0.9, 0.95)
    ref = {str(n): [{"selection": sel, "interval": iv, "level": lv, "coverage": (cov if sel == "truth" and lv == 0.5 else lv),
                     "n_pairs": 100} for sel in ("truth", "posterior") for iv in ("hdi", "equal-tailed") for lv in levels]
           for n, cov in ((3, 0.30), (10, 0.42))}  # fmt: skip
    run = {"uncertain_share": 0.08, "flagged_share": 0.2, "flagged_misses_at_bound": 0.7, "flagged_misses_level": 0.9,
           "uncertain": {f"{lv:g}": (truth_50 if lv == 0.5 else lv) for lv in levels},
           "flagged": {f"{lv:g}": flagged * lv for lv in levels},
           "grouped_flagged": {f"{lv:g}": flagged * lv for lv in levels}}  # fmt: skip
    return {"kind": "full", "levels": list(levels), "runs": [run], "reference": ref}


def test_the_selection_addendum_reads_both_selections_against_the_exact_reference(tmp_path):
    """A run whose truth-chosen 50% coverage sits in the exact posterior's range and whose
    posterior-chosen coverage is nominal is called so; one that misses is called a miss,
    with its levels; a recovery file without the readings is not an addendum."""
    good = mp.render_recovery_selection(_selection_run(flagged=1.0, truth_50=0.34))
    assert "within 5 points of the range an exact posterior shows" in good["text:recovery-selection"]
    assert "Ours does too" in good["text:recovery-selection"]
    assert "| 50% | 34.0% | 30.0% / 42.0% | 50.0% |" in good["table:recovery-selection"]
    bad = mp.render_recovery_selection(_selection_run(flagged=0.7, truth_50=0.10))["text:recovery-selection"]
    assert "below even the exact posterior's" in bad and "Ours does not" in bad
    assert "more often than they should at 50%, 80%, 90%, 95%" in bad and "70.0% have a generating" in bad
    folder = tmp_path / "recovery_selection"
    folder.mkdir()
    (folder / "recovery.json").write_text(json.dumps({"runs": [{"uncertain": {}}], "levels": [0.5]}))
    with pytest.raises(mp.MissingResultsError, match="predates"):
        mp.load_recovery_selection(tmp_path)


def test_paper_accounts_restarts_blocks_match_results():
    ar = _skip_unless(mp.load_accounts_restarts)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_accounts_restarts(ar).items()})
    assert not any(r["provenance"].get("smoke") for r in ar["runs"]), "a restarts folder is from a smoke run"


def _restart_run(acc: dict[str, float], gain: float) -> dict:
    rows = [(m, "accuracy", a) for m, a in acc.items()] + [(m, k, 0.8) for m in acc for k in ("auc", "ece")]
    ev = pd.DataFrame([{"account": i, "start": m, "elbo": -100.0 + (0 if m == "ours" else gain + (i % 2)), "iw_bound": 0.0}
                       for i in range(4) for m in acc])  # fmt: skip
    return {"accounts": pd.DataFrame(rows, columns=["method", "metric", "value"]), "accounts_restarts": ev,
            "provenance": {"seed": 0, "git_commit": "abc"}}  # fmt: skip


def test_the_restarts_addendum_says_whose_shortfall_it_is():
    """Search found a higher optimum that attributes worse: the model's. The fit's optimum
    scores higher: not the search. The labelled start keeps its accuracy and scores higher:
    a better start would help."""
    acc = {"ours": 0.76, "ours_refolded": 0.73, "ours_labelled_as_started": 0.79, "ours_labelled_start": 0.75}
    model = mp.render_accounts_restarts({"runs": [_restart_run(acc, gain=2.0)]})
    assert "it is the model's" in model["text:accounts-restarts"] and "and than the fit" in model["text:accounts-restarts"]
    assert "| 0 | Refolded from the people's split | 75.0% | 0.800 | 0.800 | +2.50 | 100.0% | abc |" in model["table:accounts-restarts"]
    fit_best = mp.render_accounts_restarts({"runs": [_restart_run(acc, gain=-3.0)]})["text:accounts-restarts"]
    assert "the search is not what holds the accuracy back" in fit_best
    keeps = mp.render_accounts_restarts({"runs": [_restart_run({**acc, "ours_labelled_start": 0.79}, gain=2.0)]})
    assert "a better start would help" in keeps["text:accounts-restarts"]


def test_paper_nuts_planted_blocks_match_results():
    npl = _skip_unless(mp.load_nuts_planted)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_nuts_planted(npl).items()})
    assert not any(p.get("smoke") for p in npl["provenance"]), "a nuts_planted run is from a smoke run"


def _nuts_planted_folder(root: Path, seed: int, nuts_cov: float) -> None:
    folder = root / "nuts_planted" / f"seed{seed}"
    folder.mkdir(parents=True)
    rows = [{"method": m, "seed": str(seed), "selection": sel, "level": lv, "hits": int(100 * (nuts_cov if m == "nuts" else lv)),
             "n_pairs": 100} for m in ("nuts", "svi") for sel in ("truth", "posterior") for lv in (0.5, 0.8, 0.9, 0.95)]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "coverage.csv", index=False)
    (folder / "provenance.json").write_text(json.dumps({"world": {"n_users": 15}, "worlds": {str(seed): {"seconds": 60.0, "divergences": 0}},
                                                        "fit": {"n_personas": 3}, "git_commit": "abc"}))  # fmt: skip


def test_the_nuts_planted_addendum_pools_worlds_and_reads_nuts_against_nominal(tmp_path):
    _nuts_planted_folder(tmp_path, 0, nuts_cov=0.4)
    _nuts_planted_folder(tmp_path, 1, nuts_cov=0.4)
    out = mp.render_nuts_planted(mp.load_nuts_planted(tmp_path))
    assert "| NUTS (exact), chosen by the posterior | 200 | 40.0% | 40.0% | 40.0% | 40.0% |" in out["table:nuts-planted"]
    assert "2 planted worlds" in out["text:nuts-planted"] and "misses the planted probabilities too" in out["text:nuts-planted"]
    assert "within 5 points of NUTS's at 0 of 4 levels" in out["text:nuts-planted"]
    nominal = tmp_path / "b"
    for seed in (0, 1):
        _nuts_planted_folder(nominal, seed, nuts_cov=0.0)
    for f in (nominal / "nuts_planted").glob("seed*/coverage.csv"):  # NUTS at nominal
        c = pd.read_csv(f)
        c["hits"] = (100 * c["level"]).astype(int)
        c.to_csv(f, index=False)
    text = mp.render_nuts_planted(mp.load_nuts_planted(nominal))["text:nuts-planted"]
    assert "covers within 5 points of nominal" in text and "at 4 of 4 levels" in text
    with pytest.raises(mp.MissingResultsError):
        mp.load_nuts_planted(tmp_path / "none")


def test_paper_evidence_blocks_match_results():
    ev = _skip_unless(mp.load_evidence)
    _assert_blocks_match({k: mp._block_body(k, v) for k, v in mp.render_evidence(ev).items()})
    assert not any(r["provenance"].get("smoke") for r in ev["runs"]), "an evidence run is from a smoke run"


def _evidence_folder(root: Path, name: str, seed: int, control: tuple[float, float], ml: float) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    rows = [("control", "1 planted taste", 2, control[1]), ("control", "2 planted tastes", 2, control[0]),
            ("planted", "3 planted tastes", 4, 0.0), ("ml100k", "all users", 8, ml),
            ("accounts", "single users", 2, 0.05), ("accounts", "two-person accounts", 2, 0.15),
            ("accounts", "two-person accounts", 8, 0.0)]  # fmt: skip
    pd.DataFrame([{"setting": a, "group": g, "n_personas": k, "against": 1, "n_users": 10, "prefer": p,
                   "prefer_upper": p, "median_gap": -3.0, "median_gap_per_interaction": -0.1,
                   "symmetry_allowance": 0.7} for a, g, k, p in rows]).to_csv(folder / "summary.csv", index=False)  # fmt: skip
    pd.DataFrame([{"n_personas": 1, "n_interactions": 100, "lpd_per_interaction": -6.1, "diff_vs_k1": 0.0, "diff_se": 0.0,
                   "users_higher_than_k1": float("nan")},
                  {"n_personas": 8, "n_interactions": 100, "lpd_per_interaction": -6.09, "diff_vs_k1": 0.01,
                   "diff_se": 0.005, "users_higher_than_k1": 0.5}]).to_csv(folder / "heldout.csv", index=False)  # fmt: skip
    (folder / "provenance.json").write_text(json.dumps({"seed": seed, "git_commit": "abc"}))


def test_the_evidence_addendum_reads_the_control_before_the_data(tmp_path):
    _evidence_folder(tmp_path, "evidence", 0, control=(0.6, 0.1), ml=0.0)
    out = mp.render_evidence(mp.load_evidence(tmp_path))
    assert "| 0 | ML-100K, validation split | all users | 8 vs 1 | 10 | 0.0% | 0.0% | -3.0 | abc |" in out["table:evidence"]
    text = out["text:evidence"]
    assert "two personas for 60.0% of two-taste users and 10.0% of one-taste users" in text
    assert "K=8's held-out log predictive of the validation rows is higher than K=1's by 0.0100 ± 0.0050 (se)" in text
    assert "15.0% prefer two personas" in text and "do not ask for the extra personas" in text
    assert "predicts the held-out choices worse" not in text
    _evidence_folder(tmp_path, "evidence_seed1", 1, control=(0.6, 0.1), ml=0.0)
    assert "Seed 1:" in mp.render_evidence(mp.load_evidence(tmp_path))["text:evidence"]
    blind = tmp_path / "blind"
    _evidence_folder(blind, "evidence", 0, control=(0.2, 0.1), ml=0.0)  # the control does not separate
    text = mp.render_evidence(mp.load_evidence(blind))["text:evidence"]
    assert "so the other rows are not read" in text and "do not ask for" not in text
    low = tmp_path / "low"
    _evidence_folder(low, "evidence", 0, control=(0.6, 0.1), ml=0.0)
    folder = low / "evidence_lowd"
    folder.mkdir()
    pd.DataFrame([{"setting": "ml100k_d2", "group": "all users", "n_personas": 4, "against": 1, "n_users": 10,
                   "prefer": 0.2, "prefer_upper": 0.4, "median_gap": -2.0, "median_gap_per_interaction": -0.1,
                   "symmetry_allowance": 3.2}]).to_csv(folder / "summary.csv", index=False)  # fmt: skip
    pd.DataFrame([{"setting": "ml100k_d2", "n_personas": k, "n_factors": 2, "n_interactions": 100,
                   "lpd_per_interaction": -6.5, "diff_vs_k1": 0.0, "diff_se": 0.01, "users_higher_than_k1": 0.5,
                   "ndcg10": nd} for k, nd in ((1, 0.16), (4, 0.17))]).to_csv(folder / "heldout.csv", index=False)  # fmt: skip
    (folder / "provenance.json").write_text(json.dumps({"seed": 0, "git_commit": "def"}))
    out = mp.render_evidence(mp.load_evidence(low))
    assert "| 0 | ML-100K, validation split, 2 dimensions | all users | 4 vs 1 | 10 | 20.0% | 40.0% | -2.0 | def |" in out["table:evidence"]
    assert "in 2 dimensions, 4 personas beat one for 20.0% of ML-100K users" in out["text:evidence"]
    assert "NDCG@10 of the validation rows is 0.1700 at K=4 against 0.1600 at K=1" in out["text:evidence"]
    assert "the personas earn their place where the single vector runs out of room" in out["text:evidence"]
    supported = tmp_path / "supported"
    _evidence_folder(supported, "evidence", 0, control=(0.6, 0.1), ml=0.6)  # ML-100K users prefer K=8
    assert "do not ask for" not in mp.render_evidence(mp.load_evidence(supported))["text:evidence"]
    with pytest.raises(mp.MissingResultsError):
        mp.load_evidence(tmp_path / "none")
