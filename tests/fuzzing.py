"""Shared parts of the fuzz tests (tests/*/test_*_fuzz.py): hypothesis settings, the
call/expect_error harness, id and ``hdi_prob`` strategies and malformed training frames.

The documented decisions the fuzz tests check:

* ids are all ints or all strs, never NaN/None, floats or booleans; (user, item) pairs unique;
* ratings must be finite numbers; *finite negative ratings are valid data* (explicit
  feedback may use any real scale, e.g. centred ratings); inf and NaN are errors;
* users with a single interaction are valid training data;
* ids unseen in training raise :class:`UnknownIdError` (a ``KeyError`` and ``ValueError``)
  naming them; an id of the other kind (str vs int) raises :class:`DataTypeError`;
* ``n``/``n_items`` >= 1 and ``hdi_prob`` in (0, 1) (exclusive), else an error naming them;
* more personas than items in ``train`` is an error naming ``n_personas``;
* every method that needs a fitted model raises :class:`NotFittedError` before ``fit``.
"""

from __future__ import annotations

import contextlib
import math
import signal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from bayes_persona.exceptions import (
    BayesPersonaError,
    DataTypeError,
    DataValidationError,
    UnknownIdError,
)

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # reproducible in CI; still explores far more than hand-written cases
)
FAST = dict(n_factors=4, max_epochs=1, batch_size=16, n_draws=4, progress=False)




@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Fail (instead of hanging CI) if the block runs longer than ``seconds``."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"call did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def call(fn, *args, **kwargs) -> tuple[Any, BaseException | None]:
    """Run ``fn``; return (result, None) or (None, library exception). Anything else fails."""
    with no_hang():
        try:
            return fn(*args, **kwargs), None
        except BayesPersonaError as exc:
            assert isinstance(exc, ValueError | TypeError | FileNotFoundError), type(exc).__mro__
            assert str(exc), "library errors carry a message"
            return None, exc
        except (TimeoutError, AssertionError):
            raise
        except Exception as exc:  # pragma: no cover - this is what the tests hunt for
            pytest.fail(f"raw {type(exc).__module__}.{type(exc).__name__} escaped: {exc!r}")


def expect_error(outcome, kinds, *names: str) -> BaseException:
    result, exc = outcome
    assert exc is not None, f"expected {kinds} naming {names}, got a result"
    assert isinstance(exc, kinds), f"expected {kinds}, got {type(exc).__name__}: {exc}"
    if names:
        assert any(n in str(exc) for n in names), f"message does not name {names}: {exc}"
    return exc




# ------------------------------------------------------------------- id strategies

UNKNOWN_INT = st.integers(min_value=10**7, max_value=10**9)
BAD_SCALAR = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=3),
    st.just(np.nan),
    st.just(pd.NA),
)


def id_lists(known: np.ndarray) -> st.SearchStrategy[list]:
    """Lists mixing known ids, unknown ints and malformed values."""
    good = st.sampled_from(known.tolist())
    element = st.one_of(good, good, good, UNKNOWN_INT, BAD_SCALAR)
    return st.lists(element, min_size=0, max_size=6)


def classify_ids(ids: Any, known: set) -> str:
    """'ok', 'unknown' (all ints, some unseen) or 'bad' (anything else)."""
    if ids is None:
        return "bad"
    seq = [ids] if isinstance(ids, str | int | float) or ids is pd.NA else list(ids)
    if not seq:
        return "bad"
    ints = all(isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in seq)
    if not ints:
        return "bad"
    return "ok" if all(int(v) in known for v in seq) else "unknown"


def check_unknown_named(exc: BaseException, ids: list, known: set) -> None:
    assert isinstance(exc, UnknownIdError) and isinstance(exc, KeyError)
    first_unknown = next(int(v) for v in ids if int(v) not in known)
    assert str(first_unknown) in str(exc), f"{exc} does not name {first_unknown}"



HDI = st.one_of(
    st.floats(min_value=0.01, max_value=0.99),
    st.sampled_from([0, 0.0, 1, 1.0, -0.5, 1.5, float("nan"), float("inf"), -float("inf")]),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
)


def hdi_ok(h: Any) -> bool:
    """None means the model's own ``hdi_prob``."""
    return h is None or (isinstance(h, int | float) and not isinstance(h, bool) and 0 < h < 1)


def hdi_error_kind(h: Any):
    return (
        DataTypeError
        if isinstance(h, bool) or not isinstance(h, int | float)
        else DataValidationError
    )



# ------------------------------------------------------------------ training frames

DEFECTS = [
    "none", "nan_user", "none_item", "mixed_ids", "float_ids", "bool_ids", "duplicate",
    "empty", "inf_rating", "nan_rating", "neg_rating", "str_rating", "missing_item_col",
    "single_interactions", "str_ids", "extra_column",
]  # fmt: skip


@st.composite
def frames(draw) -> tuple[pd.DataFrame, str]:
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(2, 8))
    every_pair = [(u, i) for u in range(n_users) for i in range(n_items)]
    size = draw(st.integers(2, min(25, len(every_pair))))
    pairs = draw(st.permutations(every_pair))[:size]
    df = pd.DataFrame(pairs, columns=["user_id", "item_id"]).astype("int64")
    df["item_id"] += 100
    df["rating"] = draw(st.lists(st.floats(1, 5), min_size=len(df), max_size=len(df)))
    defect = draw(st.sampled_from(DEFECTS))
    row = draw(st.integers(0, len(df) - 1))
    if defect == "nan_user":
        df["user_id"] = df["user_id"].astype(float)
        df.loc[row, "user_id"] = np.nan
    elif defect == "none_item":
        df["item_id"] = df["item_id"].astype(object)
        df.loc[row, "item_id"] = None
    elif defect == "mixed_ids":
        df["user_id"] = df["user_id"].astype(object)
        df.loc[row, "user_id"] = f"u{row}"
        assume(df["user_id"].map(type).nunique() > 1)
    elif defect == "float_ids":
        df["item_id"] = df["item_id"] + 0.5
    elif defect == "bool_ids":
        df["user_id"] = df["user_id"] % 2 == 0
    elif defect == "duplicate":
        df = pd.concat([df, df.iloc[[row]]], ignore_index=True)
    elif defect == "empty":
        df = df.iloc[:0]
    elif defect == "inf_rating":
        df.loc[row, "rating"] = draw(st.sampled_from([np.inf, -np.inf]))
    elif defect == "nan_rating":
        df.loc[row, "rating"] = np.nan
    elif defect == "neg_rating":
        df["rating"] = -df["rating"]
    elif defect == "str_rating":
        df["rating"] = df["rating"].astype(str)
    elif defect == "missing_item_col":
        df = df.drop(columns="item_id")
    elif defect == "single_interactions":
        df = df.drop_duplicates("user_id").reset_index(drop=True)
    elif defect == "str_ids":
        df = df.astype({"user_id": str, "item_id": str})
    elif defect == "extra_column":
        df["note"] = "x"
    return df, defect


ERRORS = {
    "nan_user": (DataValidationError, "user_id"),
    "none_item": (DataValidationError, "item_id"),
    "mixed_ids": (DataTypeError, "user_id"),
    "float_ids": (DataTypeError, "item_id"),
    "bool_ids": (DataTypeError, "user_id"),
    "duplicate": (DataValidationError, "pair"),
    "empty": (DataValidationError, "empty"),
    "inf_rating": (DataValidationError, "rating"),
    "nan_rating": (DataValidationError, "rating"),
    "str_rating": (DataTypeError, "rating"),
    "missing_item_col": (DataValidationError, "item_id"),
}


def int_ok(v: Any, minimum: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def pos_ok(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
