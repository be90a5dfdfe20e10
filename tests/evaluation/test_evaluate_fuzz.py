"""Malformed arguments at ``bp.evaluate``: an error naming the argument (see tests/fuzzing.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from fuzzing import (
    FUZZ,
    call,
    expect_error,
    int_ok,
)  # fmt: skip
from hypothesis import event, given
from hypothesis import strategies as st

import bayes_persona as bp
from bayes_persona.exceptions import (
    DataTypeError,
    DataValidationError,
    NotFittedError,
)

# `small_world` and `small_fit` (a small planted world and a model fitted on it) come from conftest.py


def test_evaluate_before_fit(small_world) -> None:
    split = bp.random_holdout(small_world, seed=0)
    outcome = call(
        bp.evaluate, bp.PersonaRecommender(), split.train, split.test, fit=False, n_boot=0
    )
    expect_error(outcome, NotFittedError)



# ------------------------------------------------------------------ evaluate


@FUZZ
@given(draw=st.data())
def test_evaluate_fuzz(small_world, small_fit, draw) -> None:
    split = _split(small_world)
    test = split.test.ratings.copy()
    defect = draw.draw(
        st.sampled_from(
            ["none", "nan_user", "mixed_ids", "unknown_only", "empty", "duplicate", "float_ids"]
        ),
        "defect",
    )
    if defect == "nan_user":
        test["user_id"] = test["user_id"].astype(float)
        test.loc[0, "user_id"] = np.nan
    elif defect == "mixed_ids":
        test["user_id"] = test["user_id"].astype(object)
        test.loc[0, "user_id"] = "stranger"
    elif defect == "unknown_only":
        test["user_id"] = test["user_id"] + 10**8
    elif defect == "empty":
        test = test.iloc[:0]
    elif defect == "duplicate":
        test = pd.concat([test, test.iloc[:3]], ignore_index=True)
    elif defect == "float_ids":
        test["item_id"] = test["item_id"] + 0.5
    k = draw.draw(
        st.one_of(st.integers(-1, 30), st.lists(st.integers(-1, 30), max_size=3), st.floats(0, 5)),
        "k",
    )
    n_boot = draw.draw(st.one_of(st.integers(-1, 20), st.floats(0, 3)), "n_boot")
    ci = draw.draw(
        st.one_of(st.floats(0.5, 0.99), st.sampled_from([0, 1, 1.5, float("nan")])), "ci"
    )
    protocol = draw.draw(st.sampled_from(["full", "sampled", "other"]), "protocol")
    result, exc = call(
        bp.evaluate, small_fit, split.train, test, k=k, n_boot=n_boot, ci=ci, protocol=protocol,
        fit=False, n_negatives=20,
    )  # fmt: skip
    event("evaluate: result" if exc is None else f"evaluate: {type(exc).__name__}")
    if exc is None:
        assert {"metric", "k", "value", "low", "high"} <= set(result.columns)
        assert defect in ("none", "duplicate", "mixed_ids")  # the rest have no usable rows
    else:
        assert defect not in ("none", "duplicate") or not (
            protocol != "other" and _k_ok(k) and int_ok(n_boot, 0) and 0 < ci < 1
        ), f"valid call failed: {exc}"


def _k_ok(k: Any) -> bool:
    ks = k if isinstance(k, list) else [k]
    return bool(ks) and all(int_ok(x, 1) for x in ks)


_SPLITS: dict[int, Any] = {}


def _split(small_world):
    if id(small_world) not in _SPLITS:
        _SPLITS[id(small_world)] = bp.random_holdout(small_world, seed=0)
    return _SPLITS[id(small_world)]


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_evaluate_rejects_bad_seed(small_world, small_fit, seed) -> None:
    split = _split(small_world)
    outcome = call(
        bp.evaluate, small_fit, split.train, split.test, k=5, fit=False, n_boot=5, seed=seed
    )
    expect_error(outcome, DataValidationError | DataTypeError, "seed")
