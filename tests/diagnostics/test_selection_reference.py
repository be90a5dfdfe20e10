"""Fast tests of recovery's coverage readings on an exact (conjugate) posterior: the reading
chosen by the posterior covers at the nominal level, the one chosen by the truth does not."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_persona.diagnostics.recovery import LEVELS, _covers, selection_reference


def _table(n_trials: int):
    ref = selection_reference(n_trials=n_trials, n_worlds=4000, seed=0)
    return {(r.selection, r.interval, r.level): r.coverage for r in ref.itertuples()}


@pytest.mark.parametrize("n_trials", [3, 10])
def test_an_exact_posterior_covers_at_nominal_on_pairs_it_calls_uncertain(n_trials):
    """Chosen by the posterior median, an exact posterior's HDIs and equal-tailed intervals
    cover within 3 points of nominal (about 3 standard errors on 2,500-4,000 pairs). A
    reading that swapped the selections, or an interval of the wrong mass, misses this."""
    cov = _table(n_trials)
    for level in LEVELS:
        for interval in ("hdi", "equal-tailed"):
            assert abs(cov[("posterior", interval, level)] - level) <= 0.03, (interval, level, cov)


def test_chosen_by_the_truth_an_exact_posterior_misses_at_50_percent():
    """With three observations, the exact posterior's 50% HDI covers about a third of the
    truths in (0.05, 0.95), and its equal-tailed intervals over-cover them: the shortfall
    of the planted worlds' uncertain pairs at 50% is what an exact posterior shows too."""
    cov = _table(3)
    assert cov[("truth", "hdi", 0.5)] < 0.40, cov
    assert cov[("truth", "equal-tailed", 0.5)] > 0.52, cov
    assert cov[("truth", "hdi", 0.9)] > 0.84, cov


def test_covers_reads_the_interval_it_is_asked_for():
    rng = np.random.default_rng(0)
    draws = rng.beta(0.5, 3.0, size=(4000, 1))  # skewed to 0: the HDI starts at the lowest draws
    low_truth = np.array([np.quantile(draws, 0.01)])
    assert _covers(draws, low_truth, 0.5)[0]
    assert not _covers(draws, low_truth, 0.5, central=True)[0]
    assert not _covers(draws, np.array([0.99]), 0.95)[0]


def test_the_reference_is_reproducible_and_tidy():
    a, b = selection_reference(seed=1, n_worlds=500), selection_reference(seed=1, n_worlds=500)
    assert a.equals(b)
    assert set(a.columns) == {"selection", "interval", "level", "coverage", "n_pairs"}
    assert len(a) == 2 * 2 * len(LEVELS)


@pytest.mark.parametrize("kwargs, name", [({"n_trials": 0}, "n_trials"), ({"n_draws": 1}, "n_draws"),
                                          ({"concentration": -1.0}, "concentration"), ({"seed": -1}, "seed")])  # fmt: skip
def test_the_reference_refuses_bad_arguments_by_name(kwargs, name):
    import bayes_persona as bp

    with pytest.raises(bp.DataValidationError, match=name):
        selection_reference(**kwargs)
