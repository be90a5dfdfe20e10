"""Diagnostic plots: each draws a non-empty PNG, reuses a given Axes, and names bad input."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bayes_persona as bp
from bayes_persona.diagnostics import plotting
from bayes_persona.exceptions import DataTypeError, DataValidationError

torch.set_num_threads(1)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def assert_png(fig, path):
    fig.savefig(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


@pytest.fixture(scope="module")
def plot_fit():
    data, _ = bp.make_synthetic(
        n_users=30, n_items=60, n_tastes=3, interactions_per_user=(8, 20), seed=6
    )
    model = bp.PersonaRecommender(
        n_personas=2, n_factors=3, max_epochs=5, n_draws=10, progress=False
    ).fit(data)
    return data, model


def check_frame(discrepancy: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for j, stat in enumerate(["a", "b", "c", "d"]):
        rep = rng.normal(j, 1, 40)
        rows.append({"check": "toy", "group": "posterior_predictive", "statistic": stat, "observed": j + 0.5,
                     "ppp": 0.3, "replicated": rep,
                     "observed_draws": rep + 0.1 if discrepancy and j == 0 else None})  # fmt: skip
    return pd.DataFrame(rows)


def coverage_frame() -> pd.DataFrame:
    levels = [0.5, 0.8, 0.9, 0.95]
    return pd.DataFrame(
        [{"guide": g, "quantity": q, "level": lv, "coverage": lv * f, "n": 100, "se": 0.03}
         for g, f in (("meanfield", 0.7), ("lowrank", 0.8)) for q in ("prevalence", "assignment") for lv in levels]
    )  # fmt: skip


def test_elbo(plot_fit, tmp_path):
    _, model = plot_fit
    ax = plotting.plot_elbo(model)
    assert ax.get_ylabel() == "ELBO"
    assert_png(ax.figure, tmp_path / "elbo.png")
    assert plotting.plot_elbo(np.linspace(-100, -10, 300), window=10).lines
    with pytest.raises(DataValidationError, match="ELBO"):
        plotting.plot_elbo([])


def test_persona_map(plot_fit, tmp_path):
    data, model = plot_fit
    ax = plotting.plot_persona_map(model, 3)
    assert len(ax.get_yticklabels()) == 2
    assert_png(ax.figure, tmp_path / "map.png")
    bare = bp.PersonaRecommender(n_personas=2, n_factors=3, max_epochs=1, progress=False).fit(
        data.ratings
    )
    with pytest.raises(DataValidationError, match="categories"):
        plotting.plot_persona_map(bare, 3)
    with pytest.raises(bp.UnknownIdError):
        plotting.plot_persona_map(model, 10**6)


def test_explanations(plot_fit, tmp_path):
    _, model = plot_fit
    recs = model.recommend([1, 2], n=5)
    ax = plotting.plot_explanations(recs, user_id=2)
    assert len(ax.get_yticklabels()) == 5
    assert_png(ax.figure, tmp_path / "expl.png")
    with pytest.raises(DataValidationError, match="user_id"):
        plotting.plot_explanations(recs)
    with pytest.raises(DataValidationError, match="persona_prob_low"):
        plotting.plot_explanations(recs.drop(columns="persona_prob_low"))
    with pytest.raises(DataTypeError, match="recs"):
        plotting.plot_explanations({"user_id": 1})


def test_ppc(tmp_path):
    fig = plotting.plot_ppc(check_frame(discrepancy=True), ncols=2)
    visible = [a for a in fig.axes if a.get_visible()]
    assert len(visible) == 4
    assert "ppp = 0.30" in visible[0].get_title()
    assert_png(fig, tmp_path / "ppc.png")
    with pytest.raises(DataValidationError, match="empty"):
        plotting.plot_ppc(check_frame().iloc[:0])


def test_tdd_by_rank(plot_fit, tmp_path):
    data, model = plot_fit
    recs = model.recommend(list(range(1, 11)), n=6)
    worst = recs.assign(
        rank=recs.groupby("user_id")["rank"].transform(lambda r: r.to_numpy()[::-1])
    )
    ax = plotting.plot_tdd_by_rank(
        {"model": recs, "reversed": worst}, data, data.items, distance="js"
    )
    assert len(ax.get_lines()) == 2 and len(ax.get_lines()[0].get_xdata()) == 6
    assert_png(ax.figure, tmp_path / "tdd.png")
    with pytest.raises(DataTypeError, match="recs_by_model"):
        plotting.plot_tdd_by_rank({}, data, data.items)


def test_coverage_and_rank_histograms(tmp_path):
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    assert plotting.plot_coverage(coverage_frame(), ax=ax) is ax  # draws into a given Axes
    assert_png(ax.figure, tmp_path / "cov.png")
    rng = np.random.default_rng(0)
    ranks = pd.DataFrame({"guide": "meanfield", "quantity": np.repeat(["prevalence", "assignment"], 100),
                          "fractional_rank": rng.random(200)})  # fmt: skip
    fig = plotting.plot_rank_histograms(ranks)
    assert sum(a.get_visible() for a in fig.axes) == 2
    assert_png(fig, tmp_path / "ranks.png")
    with pytest.raises(DataValidationError, match="coverage"):
        plotting.plot_coverage(coverage_frame().drop(columns="coverage"))


def test_matplotlib_and_seaborn_are_imported_lazily():
    tree = ast.parse(Path(plotting.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top for a in n.names} | {
        n.module for n in top if isinstance(n, ast.ImportFrom)
    }
    assert not {m for m in names if m and m.split(".")[0] in ("matplotlib", "seaborn")}
