"""Malformed files and frames at ``bp.load_interactions``: an error naming the problem,
never a raw parser error (see tests/fuzzing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from fuzzing import (
    ERRORS,
    FUZZ,
    call,
    expect_error,
    frames,
)  # fmt: skip
from hypothesis import given

import bayes_persona as bp
from bayes_persona.exceptions import (
    DataTypeError,
    DataValidationError,
)

# `small_world` and `small_fit` (a small planted world and a model fitted on it) come from conftest.py


@FUZZ
@given(case=frames())
def test_load_interactions_fuzz(case, tmp_path_factory) -> None:
    df, defect = case
    has_rating = "rating" in df.columns
    outcome = call(bp.load_interactions, df, rating_col="rating" if has_rating else None)
    if defect in ERRORS:
        kind, name = ERRORS[defect]
        expect_error(outcome, kind, name)
    else:
        loaded, exc = outcome
        assert exc is None, exc
        assert len(loaded) == len(df)
        if has_rating:
            assert loaded["rating"].dtype == np.float64
            np.testing.assert_array_equal(loaded["rating"], df["rating"].astype(float))
    # the same table as a CSV file: text ids stay ids, a defect stays a library error
    if defect in (
        "empty",
        "missing_item_col",
        "mixed_ids",
        "str_ids",
        "bool_ids",
        "str_rating",
        "float_ids",
    ):
        return  # CSV text erases these cases' types ("True", "u3", "100.5" are documented str ids)
    path = tmp_path_factory.mktemp("csv") / "ratings.csv"
    df.to_csv(path, index=False)
    result, exc = call(bp.load_interactions, path, rating_col="rating" if has_rating else None)
    if defect in ERRORS:
        assert exc is not None, f"{defect} passed through CSV"
    else:
        assert exc is None, exc
        assert len(result) == len(df)



# ------------------------------------------------------------------ loader files


def test_loader_missing_file(tmp_path) -> None:
    exc = expect_error(
        call(bp.load_interactions, tmp_path / "nope.csv"), bp.DatasetNotFoundError, "nope.csv"
    )
    assert isinstance(exc, FileNotFoundError)


@pytest.mark.parametrize(
    "name, content, kwargs",
    [
        ("header_only.csv", b"user_id,item_id\n", {}),
        ("ragged.csv", b"user_id,item_id\n1,2,3,4\n1\n", {}),
        ("binary.csv", bytes(range(256)), {}),
        ("no_ext.dat", b"user_id item_id\n1 2\n", {}),
        pytest.param(
            "empty.csv",
            b"",
            {},
        ),
        pytest.param(
            "bad.parquet",
            b"garbage",
            {},
        ),
        pytest.param(
            "bad.csv.gz",
            b"garbage",
            {},
        ),
        pytest.param(
            "ok.csv",
            b"user_id,item_id\n1,2\n",
            {"encoding": "no-such-codec"},
        ),
    ],
)
def test_loader_bad_files(tmp_path, name, content, kwargs) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    expect_error(call(bp.load_interactions, path, **kwargs), DataValidationError | DataTypeError)
