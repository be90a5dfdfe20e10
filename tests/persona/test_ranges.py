"""Ranges enforced at the boundary (issue 18): ids within int64, ratings finite in float32,
numeric parameters within their documented bounds. Each case failed before its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayes_persona as bp
from bayes_persona.exceptions import DataValidationError


@pytest.fixture(scope="module")
def ranges_world() -> bp.Dataset:
    data, _ = bp.make_synthetic(n_users=20, n_items=30, n_tastes=3, interactions_per_user=(4, 8), seed=0)
    return data


@pytest.mark.parametrize("big", [2**63, 2**64 + 5, -(2**63) - 1])
def test_python_int_ids_beyond_int64_are_refused(big) -> None:
    frame = pd.DataFrame({"user_id": [1, big], "item_id": [1, 2]})
    with pytest.raises(DataValidationError, match=r"user_id.*within int64") as info:
        bp.load_interactions(frame)
    assert str(big) in str(info.value)


def test_uint64_ids_beyond_int64_are_refused_not_wrapped() -> None:
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": np.array([5, 2**63 + 7], dtype=np.uint64)})
    with pytest.raises(DataValidationError, match=r"item_id.*within int64"):
        bp.load_interactions(frame)


def test_ids_at_the_int64_edges_work_end_to_end() -> None:
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    frame = pd.DataFrame(
        {"user_id": [lo, lo, hi, hi, 7, 7], "item_id": np.array([1, 2, 2, 3, 1, 3], dtype=np.uint64)}
    )
    data = bp.load_interactions(frame)
    model = bp.PersonaRecommender(n_personas=2, n_factors=2, max_epochs=2, n_draws=4, progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bp.ConvergenceWarning)
        model.fit(data)
    recs = model.recommend([hi], n=1, exclude_seen=False)
    assert recs["user_id"].iloc[0] == hi


@pytest.mark.parametrize("value", [3.5e38, 1e300, -1e39])
def test_ratings_beyond_float32_are_refused(value) -> None:
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "rating": [4.0, value]})
    with pytest.raises(DataValidationError, match=r"'rating'.*finite in float32"):
        bp.load_interactions(frame, rating_col="rating")


def test_float32_max_rating_is_accepted() -> None:
    edge = float(np.finfo(np.float32).max)
    data = bp.load_interactions(
        pd.DataFrame({"user_id": [1], "item_id": [1], "rating": [edge]}), rating_col="rating"
    )
    assert len(data) == 1


@pytest.mark.parametrize(
    ("param", "value", "pattern"),
    [
        ("init_scale", 1e10, r"init_scale must be a float in \(0, 10\]"),
        ("random_state", 2**64, r"random_state must be an int in \[0, 9223372036854775807\]"),
        ("n_draws", 10**7, r"n_draws must be an int in \[2, 100000\]"),
    ],
)
def test_parameter_upper_bounds(ranges_world, param, value, pattern) -> None:
    model = bp.PersonaRecommender(**{param: value}, max_epochs=1, progress=False)
    with pytest.raises(DataValidationError, match=pattern):
        model.fit(ranges_world)
    assert not hasattr(model, "guide_")


def test_n_factors_beyond_the_data_is_refused_fast(ranges_world) -> None:
    """n_factors=10**6 on a few rows used to run for minutes; now fit refuses it at once."""
    model = bp.PersonaRecommender(n_factors=10**6, max_epochs=1, progress=False)
    with pytest.raises(DataValidationError, match=r"n_factors=1000000 exceeds what train supports.*has \d+ items"):
        model.fit(ranges_world)


def test_n_factors_up_to_the_floor_is_allowed_on_tiny_data(ranges_world) -> None:
    model = bp.PersonaRecommender(n_personas=2, n_factors=64, max_epochs=1, n_draws=4, progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bp.ConvergenceWarning)
        model.fit(ranges_world)
    assert model.guide_.item_loc.shape[1] == 64
