"""Tests of the Dataset container and its validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_persona.data import Dataset
from bayes_persona.exceptions import DataTypeError, DataValidationError


def ratings(**overrides) -> pd.DataFrame:
    base = {
        "user_id": [1, 1, 2, 3],
        "item_id": [10, 11, 10, 12],
        "rating": [5.0, 3.0, 4.0, 1.0],
        "timestamp": [100, 200, 300, 400],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def items(**overrides) -> pd.DataFrame:
    base = {
        "item_id": [10, 11, 12, 13],
        "title": ["A", "B", "C", "D"],
        "categories": [["Drama"], ["Comedy", "Drama"], [], ["Action"]],
    }
    base.update(overrides)
    return pd.DataFrame(base)


# ----------------------------------------------------------------- happy paths


def test_properties():
    ds = Dataset(ratings(), items(), name="toy")
    assert ds.n_users == 3
    assert ds.n_items == 3  # item 13 is in items but unrated
    assert ds.n_interactions == 4
    assert ds.has_ratings
    assert ds.categories == ["Action", "Comedy", "Drama"]
    assert ds.user_ids.tolist() == [1, 2, 3]
    assert ds.item_ids.tolist() == [10, 11, 12]
    assert ds.ratings["rating"].dtype == np.float64
    assert "toy" in repr(ds) and "4 rated interactions" in repr(ds)


def test_integer_ratings_become_float64_and_input_is_copied():
    df = ratings(rating=[5, 3, 4, 1])
    ds = Dataset(df)
    assert ds.ratings["rating"].dtype == np.float64
    df.loc[0, "user_id"] = 99
    assert ds.ratings.loc[0, "user_id"] == 1


def test_implicit_and_no_items():
    ds = Dataset(ratings().drop(columns=["rating", "timestamp"]))
    assert not ds.has_ratings
    assert ds.categories == []
    assert ds.items is None
    assert "implicit" in repr(ds)


def test_string_ids():
    ds = Dataset(
        pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"]}),
        pd.DataFrame({"item_id": ["a", "b"], "categories": [("x",), ("y", "z")]}),
    )
    assert ds.user_ids.tolist() == ["u1", "u2"]
    assert ds.categories == ["x", "y", "z"]
    assert ds.items["categories"].tolist() == [["x"], ["y", "z"]]


def test_with_ratings_keeps_items_and_name():
    ds = Dataset(ratings(), items(), name="toy")
    sub = ds.with_ratings(ds.ratings.iloc[:2])
    assert sub.n_interactions == 2
    assert sub.items.equals(ds.items)
    assert sub.name == "toy"
    assert sub.ratings.index.tolist() == [0, 1]


def test_frozen_and_equality():
    ds = Dataset(ratings())
    with pytest.raises(AttributeError):
        ds.name = "x"  # type: ignore[misc]
    assert ds == Dataset(ratings())
    assert ds != Dataset(ratings(), name="other")


# ------------------------------------------------------------------ bad inputs


def test_not_a_dataframe():
    with pytest.raises(DataTypeError, match="ratings must be a pandas DataFrame; got dict"):
        Dataset({"user_id": [1]})  # type: ignore[arg-type]


def test_missing_column():
    with pytest.raises(DataValidationError, match=r"missing required column\(s\) \['item_id'\]"):
        Dataset(ratings().drop(columns=["item_id"]))


def test_empty():
    with pytest.raises(DataValidationError, match="ratings must not be empty"):
        Dataset(ratings().iloc[:0])


def test_nan_id_shows_row():
    df = ratings(user_id=[1, np.nan, np.nan, 3])
    with pytest.raises(
        DataValidationError,
        match=r"column 'user_id' .*must not contain NaN/None; found 2 such rows, first: "
        r"\{'user_id': nan, 'item_id': 11",
    ):
        Dataset(df)


def test_none_id():
    df = ratings(item_id=["a", None, "b", "c"])
    with pytest.raises(DataValidationError, match="column 'item_id'.*NaN/None"):
        Dataset(df)


def test_mixed_id_kinds():
    df = ratings(user_id=pd.Series([1, "b", 2, 3], dtype=object))
    with pytest.raises(
        DataTypeError, match=r"column 'user_id'.*one kind.*first offending row: \{'user_id': 'b'"
    ):
        Dataset(df)


def test_float_ids_rejected():
    with pytest.raises(DataTypeError, match="column 'item_id'.*int or str ids; got floating"):
        Dataset(ratings(item_id=[1.0, 2.0, 3.0, 4.0]))


def test_bool_ids_rejected():
    with pytest.raises(DataTypeError, match="column 'user_id'.*booleans"):
        Dataset(ratings(user_id=[True, False, True, False]))


@pytest.mark.parametrize(
    "values, pattern",
    [
        (["5", "3", "4", "1"], "column 'rating'.*must be numeric.*got dtype"),
        ([True, False, True, True], "column 'rating'.*must be numeric.*got dtype bool"),
        (pd.Series([5, 3, "4", 1], dtype=object), "column 'rating'.*must be numeric.*object"),
    ],
)
def test_rating_type(values, pattern):
    with pytest.raises(DataTypeError, match=pattern):
        Dataset(ratings(rating=values))


def test_rating_nan_and_inf():
    with pytest.raises(
        DataValidationError,
        match=r"column 'rating'.*NaN/None; found 1 such rows, first: \{'user_id': 1, 'item_id': 11",
    ):
        Dataset(ratings(rating=[5.0, np.nan, 4.0, 1.0]))
    with pytest.raises(
        DataValidationError, match="column 'rating'.*finite.*first: .*'rating': inf"
    ):
        Dataset(ratings(rating=[5.0, 3.0, np.inf, 1.0]))


def test_timestamp_type():
    with pytest.raises(DataTypeError, match="column 'timestamp'.*integer .*or datetime64"):
        Dataset(ratings(timestamp=["a", "b", "c", "d"]))


def test_datetime_timestamp_ok():
    ds = Dataset(ratings(timestamp=pd.to_datetime([1, 2, 3, 4], unit="s")))
    assert ds.n_interactions == 4


def test_duplicate_pairs_rejected_with_row():
    df = ratings(item_id=[10, 10, 10, 12])
    with pytest.raises(
        DataValidationError,
        match=r"\(user_id, item_id\) pair at most once; found 1 duplicated pair\(s\) in 2 rows, "
        r"first: \{'user_id': 1, 'item_id': 10.*duplicates='aggregate'",
    ):
        Dataset(df)


def test_items_validation():
    with pytest.raises(
        DataValidationError,
        match="column 'item_id' of items must be unique.*first: \\{'item_id': 10",
    ):
        Dataset(ratings(), items(item_id=[10, 10, 12, 13]))
    with pytest.raises(DataTypeError, match="column 'categories' of items must hold a list of str"):
        Dataset(ratings(), items(categories=["Drama", ["a"], [], []]))
    with pytest.raises(DataTypeError, match="column 'categories'.*first: .*'categories': \\[1\\]"):
        Dataset(ratings(), items(categories=[[1], ["a"], [], []]))
    with pytest.raises(DataTypeError, match="column 'title' of items must hold str"):
        Dataset(ratings(), items(title=[1, 2, 3, 4]))
    with pytest.raises(DataValidationError, match="items is missing required column"):
        Dataset(ratings(), items().rename(columns={"item_id": "id"}))
    with pytest.raises(DataTypeError, match="items must be a pandas DataFrame"):
        Dataset(ratings(), items=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(DataValidationError, match="items must not be empty"):
        Dataset(ratings(), items().iloc[:0])


def test_item_id_kind_must_match_between_tables():
    with pytest.raises(DataTypeError, match="column 'item_id' must hold the same kind of id"):
        Dataset(ratings(), items(item_id=["10", "11", "12", "13"]))


def test_name_type():
    with pytest.raises(DataTypeError, match="name must be a str"):
        Dataset(ratings(), name=3)  # type: ignore[arg-type]
