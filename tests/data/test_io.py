"""Tests of load_interactions and load_items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_persona.data import Dataset, load_interactions, load_items
from bayes_persona.exceptions import DatasetNotFoundError, DataTypeError, DataValidationError


def raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": [1, 1, 2, 3],
            "iid": [10, 11, 10, 12],
            "stars": [5, 3, 4, 1],
            "ts": [100, 200, 300, 400],
            "extra": ["x", "y", "z", "w"],
        }
    )


KW = {"user_col": "uid", "item_col": "iid", "rating_col": "stars", "timestamp_col": "ts"}


def test_from_dataframe_renames_and_keeps_standard_columns():
    out = load_interactions(raw(), **KW)
    assert list(out.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert out["rating"].dtype == np.float64
    assert out["user_id"].tolist() == [1, 1, 2, 3]
    Dataset(out)  # usable as is


def test_implicit_from_dataframe():
    out = load_interactions(raw(), user_col="uid", item_col="iid")
    assert list(out.columns) == ["user_id", "item_id"]


@pytest.mark.parametrize(
    "suffix, sep", [(".csv", ","), (".tsv", "\t"), (".txt", ";"), (".dat", "|")]
)
def test_text_files_sep_from_extension_or_sniffed(tmp_path, suffix, sep):
    path = tmp_path / f"ratings{suffix}"
    raw().to_csv(path, sep=sep, index=False)
    out = load_interactions(path, **KW)
    assert out.equals(load_interactions(raw(), **KW))


def test_explicit_sep_overrides_extension(tmp_path):
    path = tmp_path / "ratings.csv"
    raw().to_csv(path, sep=";", index=False)
    out = load_interactions(str(path), sep=";", **KW)
    assert len(out) == 4


def test_compressed_csv(tmp_path):
    path = tmp_path / "ratings.csv.gz"
    raw().to_csv(path, index=False)
    assert len(load_interactions(path, **KW)) == 4


def test_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "ratings.parquet"
    raw().to_parquet(path)
    out = load_interactions(path, **KW)
    assert out.equals(load_interactions(raw(), **KW))


def test_string_ids_stay_external(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("u,i\n007,a\n12,b\n")
    out = load_interactions(path, user_col="u", item_col="i")
    assert out["user_id"].tolist() == ["007", "12"]  # not 7
    assert out["item_id"].tolist() == ["a", "b"]
    path.write_text("u,i\n7,1\n12,-3\n")
    out = load_interactions(path, user_col="u", item_col="i")
    assert out["user_id"].dtype == np.int64 and out["user_id"].tolist() == [7, 12]
    assert out["item_id"].tolist() == [1, -3]


def test_duplicates_raise_by_default():
    df = raw().assign(iid=[10, 10, 10, 12])
    with pytest.raises(
        DataValidationError,
        match=r"pair at most once.*first: \{'user_id': 1, 'item_id': 10.*aggregate",
    ):
        load_interactions(df, **KW)


def test_duplicates_aggregate_mean_rating_last_timestamp():
    df = pd.DataFrame(
        {
            "uid": [1, 2, 1, 1],
            "iid": [10, 10, 10, 11],
            "stars": [5, 4, 2, 3],
            "ts": [100, 50, 300, 10],
        }
    )
    out = load_interactions(df, duplicates="aggregate", **KW)
    assert out.values.tolist() == [[1, 10, 3.5, 300], [2, 10, 4.0, 50], [1, 11, 3.0, 10]]
    implicit = load_interactions(df, user_col="uid", item_col="iid", duplicates="aggregate")
    assert implicit.values.tolist() == [[1, 10], [2, 10], [1, 11]]


def test_bad_arguments():
    with pytest.raises(
        DataValidationError,
        match=r"user_col='user' is not a column of the source DataFrame; its columns are \['uid'",
    ):
        load_interactions(raw(), user_col="user", item_col="iid")
    with pytest.raises(DataValidationError, match=r"rating_col='r' is not a column"):
        load_interactions(raw(), user_col="uid", item_col="iid", rating_col="r")
    with pytest.raises(
        DataValidationError, match=r"duplicates must be one of \['raise', 'aggregate'\]; got 'drop'"
    ):
        load_interactions(raw(), **KW, duplicates="drop")
    with pytest.raises(
        DataValidationError, match="item_col and user_col name the same column 'uid'"
    ):
        load_interactions(raw(), user_col="uid", item_col="uid")
    with pytest.raises(DataTypeError, match="rating_col must be a str column name; got int"):
        load_interactions(raw(), user_col="uid", item_col="iid", rating_col=3)
    with pytest.raises(DataTypeError, match="source must be a pandas DataFrame or a path"):
        load_interactions([1, 2, 3])


def test_missing_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="source: no such file: .*nope.csv"):
        load_interactions(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError):
        load_items(tmp_path / "nope.csv")


def test_unsniffable_needs_sep(tmp_path):
    path = tmp_path / "ratings.bin"
    path.write_text("onecolumn\nx\ny\n")
    with pytest.raises(
        DataValidationError, match="sep: could not detect the column separator.*pass sep"
    ):
        load_interactions(path)


def test_bad_values_named():
    with pytest.raises(
        DataTypeError, match="column 'rating'.*must be numeric.*strings are never converted"
    ):
        load_interactions(raw().assign(stars=["5", "3", "4", "1"]), **KW)
    with pytest.raises(
        DataValidationError,
        match=r"column 'user_id'.*NaN/None; found 1 such rows, first: \{'user_id': nan",
    ):
        load_interactions(raw().assign(uid=[1, np.nan, 2, 3]), **KW)
    with pytest.raises(DataValidationError, match="must not be empty"):
        load_interactions(raw().iloc[:0], **KW)
    with pytest.raises(DataTypeError, match="column 'timestamp'.*integer"):
        load_interactions(raw().assign(ts=["a", "b", "c", "d"]), **KW)


def test_nan_rating_in_file_is_an_error(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("u,i,r\n1,2,5\n1,3,\n")
    with pytest.raises(
        DataValidationError, match=r"column 'rating'.*NaN/None.*first: \{'user_id': 1, 'item_id': 3"
    ):
        load_interactions(path, user_col="u", item_col="i", rating_col="r")


# ----------------------------------------------------------------------- items


def test_items_from_csv_splits_categories(tmp_path):
    path = tmp_path / "movies.csv"
    path.write_text('id,name,genres\n1,"Toy Story, The",Animation|Comedy\n2,1984,\n3,Heat,Crime\n')
    out = load_items(path, item_col="id", title_col="name", categories_col="genres")
    assert list(out.columns) == ["item_id", "title", "categories"]
    assert out["item_id"].tolist() == [1, 2, 3]
    assert out["title"].tolist() == ["Toy Story, The", "1984", "Heat"]  # "1984" stays a str
    assert out["categories"].tolist() == [["Animation", "Comedy"], [], ["Crime"]]


def test_items_from_dataframe_custom_sep_and_lists():
    df = pd.DataFrame({"item_id": ["a", "b", "c"], "cats": ["x;y", "", ["z"]]})
    out = load_items(df, categories_col="cats", categories_sep=";")
    assert out["categories"].tolist() == [["x", "y"], [], ["z"]]
    ds = Dataset(pd.DataFrame({"user_id": [1], "item_id": ["a"]}), out)
    assert ds.categories == ["x", "y", "z"]


def test_items_errors():
    df = pd.DataFrame({"item_id": [1, 1], "t": ["a", "b"]})
    with pytest.raises(
        DataValidationError,
        match="column 'item_id' of items.*must be unique.*first: \\{'item_id': 1",
    ):
        load_items(df, title_col="t")
    with pytest.raises(DataValidationError, match="title_col='name' is not a column"):
        load_items(df, title_col="name")
    with pytest.raises(DataValidationError, match="categories_sep must be a non-empty str"):
        load_items(df, categories_sep="")
    bad = pd.DataFrame({"item_id": [1, 2], "c": ["a", 5]})
    with pytest.raises(DataTypeError, match="column 'categories'.*first: .*'categories': 5"):
        load_items(bad, categories_col="c")


def test_datetime_id_column_gets_a_named_error():
    frame = pd.DataFrame({"user_id": pd.to_datetime([0, 1], unit="D"), "item_id": ["a", "b"]})
    with pytest.raises(DataTypeError, match="user_id.*datetime64"):
        load_interactions(frame)
