"""Malformed ids, ``n`` and ``hdi_prob`` at recommend, explain, score and personas, and every
query before ``fit``: an error naming the argument, never a raw error or a hang (see
tests/fuzzing.py for the documented decisions)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fuzzing import (
    BAD_SCALAR,
    FUZZ,
    HDI,
    UNKNOWN_INT,
    call,
    check_unknown_named,
    classify_ids,
    expect_error,
    hdi_error_kind,
    hdi_ok,
    id_lists,
)  # fmt: skip
from hypothesis import given
from hypothesis import strategies as st

import bayes_persona as bp
from bayes_persona.exceptions import (
    DataTypeError,
    DataValidationError,
    NotFittedError,
    UnknownIdError,
)

# `small_world` and `small_fit` (a small planted world and a model fitted on it) come from conftest.py


# ------------------------------------------------------------------ recommend


@FUZZ
@given(draw=st.data())
def test_recommend_fuzz(small_fit, draw) -> None:
    known_ids = small_fit.user_vocab_.ids
    known = set(known_ids.tolist())
    ids = draw.draw(
        st.one_of(id_lists(known_ids), st.sampled_from(known_ids.tolist()), BAD_SCALAR), "ids"
    )
    n = draw.draw(
        st.one_of(
            st.integers(-3, 130),
            st.floats(allow_nan=True),
            st.booleans(),
            st.none(),
            st.text(max_size=2),
        ),
        "n",
    )
    outcome = call(small_fit.recommend, ids, n=n)
    n_ok = isinstance(n, int) and not isinstance(n, bool) and n >= 1
    if not n_ok:
        expect_error(
            outcome,
            DataTypeError if not isinstance(n, int) or isinstance(n, bool) else DataValidationError,
            "n ",
        )
        return
    kind = classify_ids(ids, known)
    if kind == "ok":
        recs, exc = outcome
        assert exc is None, exc
        seq = [ids] if np.isscalar(ids) else list(ids)
        assert set(recs["user_id"]) == set(seq)
        assert (
            recs.groupby("user_id", sort=False).size() <= n * pd.Series(seq).value_counts()
        ).all()
        assert recs["score"].map(math.isfinite).all()
        assert recs["persona_prob"].between(0, 1).all()
    elif kind == "unknown":
        check_unknown_named(expect_error(outcome, UnknownIdError), list(ids), known)
    else:
        expect_error(outcome, DataValidationError | DataTypeError, "user_id")


def test_recommend_n_larger_than_catalogue(small_fit) -> None:
    u = small_fit.user_vocab_.ids[0]
    recs = small_fit.recommend(u, n=10**9, exclude_seen=False)
    assert len(recs) == len(small_fit.item_vocab_)


# ------------------------------------------------------------------ explain



@FUZZ
@given(draw=st.data())
def test_explain_fuzz(small_fit, draw) -> None:
    users, items = small_fit.user_vocab_.ids, small_fit.item_vocab_.ids
    kusers, kitems = set(users.tolist()), set(items.tolist())
    user = draw.draw(st.one_of(st.sampled_from(users.tolist()), UNKNOWN_INT, BAD_SCALAR), "user")
    item_ids = draw.draw(
        st.one_of(id_lists(items), st.sampled_from(items.tolist()), st.none()), "items"
    )
    hdi_prob = draw.draw(HDI, "hdi_prob")
    outcome = call(small_fit.explain, user, item_ids, hdi_prob=hdi_prob)
    if not hdi_ok(hdi_prob):
        expect_error(outcome, hdi_error_kind(hdi_prob), "hdi_prob")
        return
    ukind = classify_ids(user, kusers)
    if ukind == "unknown":
        check_unknown_named(expect_error(outcome, UnknownIdError), [user], kusers)
        return
    if ukind == "bad":
        expect_error(outcome, DataValidationError | DataTypeError, "user_id")
        return
    ikind = classify_ids(item_ids, kitems)
    if ikind == "ok":
        frame, exc = outcome
        assert exc is None, exc
        n_items = 1 if np.isscalar(item_ids) else len(item_ids)
        assert len(frame) == n_items * small_fit.n_personas
        assert frame[["persona_prob", "persona_prob_low", "persona_prob_high"]].stack().between(0, 1).all()
        assert (frame["persona_prob_low"] <= frame["persona_prob"]).all() and (frame["persona_prob"] <= frame["persona_prob_high"]).all()
    elif ikind == "unknown":
        check_unknown_named(expect_error(outcome, UnknownIdError), list(item_ids), kitems)
    else:
        expect_error(outcome, DataValidationError | DataTypeError, "item_id")


def test_explain_needs_one_user(small_fit) -> None:
    users = small_fit.user_vocab_.ids[:2].tolist()
    expect_error(
        call(small_fit.explain, users, small_fit.item_vocab_.ids[:1]), DataValidationError, "user_id"
    )


# ------------------------------------------------------------------ score


@FUZZ
@given(draw=st.data())
def test_score_fuzz(small_fit, draw) -> None:
    users, items = small_fit.user_vocab_.ids, small_fit.item_vocab_.ids
    kusers, kitems = set(users.tolist()), set(items.tolist())
    uids = draw.draw(id_lists(users), "user_ids")
    same_len = draw.draw(st.booleans(), "same_len")
    iids = draw.draw(
        st.lists(st.sampled_from(items.tolist()) | UNKNOWN_INT | BAD_SCALAR, min_size=len(uids), max_size=len(uids))
        if same_len else id_lists(items), "item_ids"
    )  # fmt: skip
    outcome = call(small_fit.score, uids, iids)
    ok = (
        classify_ids(uids, kusers) == "ok"
        and classify_ids(iids, kitems) == "ok"
        and len(uids) == len(iids)
    )
    if ok:
        scores, exc = outcome
        assert exc is None, exc
        assert scores.shape == (len(uids),) and np.isfinite(scores).all() and (scores >= 0).all()
    else:
        expect_error(
            outcome, DataValidationError | DataTypeError | UnknownIdError, "user_id", "item_id"
        )


# ------------------------------------------------------------------ personas


@FUZZ
@given(draw=st.data())
def test_personas_fuzz(small_fit, draw) -> None:
    users = small_fit.user_vocab_.ids
    kusers = set(users.tolist())
    user = draw.draw(st.one_of(st.sampled_from(users.tolist()), UNKNOWN_INT, BAD_SCALAR), "user")
    n_items = draw.draw(
        st.one_of(st.integers(-2, 200), st.floats(allow_nan=True), st.booleans()), "n_items"
    )
    hdi_prob = draw.draw(HDI, "hdi_prob")
    outcome = call(small_fit.personas, user, n_items=n_items, hdi_prob=hdi_prob)
    if not hdi_ok(hdi_prob):
        expect_error(outcome, hdi_error_kind(hdi_prob), "hdi_prob")
    elif isinstance(n_items, bool) or not isinstance(n_items, int):
        expect_error(outcome, DataTypeError, "n_items")
    elif n_items < 1:
        expect_error(outcome, DataValidationError, "n_items")
    elif classify_ids(user, kusers) == "ok":
        frame, exc = outcome
        assert exc is None, exc
        assert len(frame) == small_fit.n_personas
        assert frame["top_items"].map(len).le(n_items).all()
        assert frame["prevalence"].between(frame["prevalence_low"], frame["prevalence_high"]).all()
    elif classify_ids(user, kusers) == "unknown":
        check_unknown_named(expect_error(outcome, UnknownIdError), [user], kusers)
    else:
        expect_error(outcome, DataValidationError | DataTypeError, "user_id")


# ------------------------------------------------------------------ not fitted


@pytest.mark.parametrize(
    "method, args",
    [
        ("recommend", ([1],)),
        ("explain", (1, [1])),
        ("personas", (1,)),
        ("score", ([1], [1])),
        ("sample_posterior", ()),
        ("persona_probabilities", ([1], [1])),
        ("save", ("unused.pt",)),
    ],
)
def test_before_fit(method, args, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exc = expect_error(call(getattr(bp.PersonaRecommender(), method), *args), NotFittedError, "fit")
    assert isinstance(exc, ValueError) and isinstance(exc, AttributeError)
    assert not list(tmp_path.iterdir())
