"""Tests of Vocabulary, binarize and k_core."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_persona.data import Dataset, Vocabulary, binarize, k_core
from bayes_persona.exceptions import DataTypeError, DataValidationError, UnknownIdError

# ------------------------------------------------------------------ Vocabulary


def test_vocabulary_int_ids():
    v = Vocabulary.from_ids(np.array([30, 10, 20, 10]), name="item_id")
    assert len(v) == 3
    assert v.ids.tolist() == [10, 20, 30]
    assert v.ids.dtype == np.int64
    assert v.kind == "int"
    assert v.encode([20, 30, 10]).tolist() == [1, 2, 0]
    assert v.encode([20]).dtype == np.int64
    assert v.decode(np.array([2, 0])).tolist() == [30, 10]
    assert 20 in v and 25 not in v and "20" not in v
    assert list(v) == [10, 20, 30]


def test_vocabulary_str_ids_and_pandas_input():
    v = Vocabulary.from_ids(pd.Series(["b", "a", "c", "a"]), name="user_id")
    assert v.ids.tolist() == ["a", "b", "c"]
    assert v.encode(pd.Series(["c", "a"])).tolist() == [2, 0]
    assert v.decode([1]).tolist() == ["b"]


def test_unknown_ids():
    v = Vocabulary.from_ids(range(5), name="user_id")
    with pytest.raises(
        UnknownIdError, match=r"3 unknown id\(s\) not in vocabulary 'user_id'.*\[7, 8, 9\]"
    ):
        v.encode([1, 7, 8, 9, 7])
    with pytest.raises(KeyError):  # UnknownIdError is also a KeyError
        v.encode([99])
    many = list(range(100, 120))
    with pytest.raises(UnknownIdError, match=r"\[100, 101, 102, 103, 104\] and 15 more"):
        v.encode(many)


def test_index_of_known():
    v = Vocabulary.from_ids(["a", "b", "c"], name="item_id")
    mask, idx = v.index_of_known(["c", "zz", "a"])
    assert mask.tolist() == [True, False, True]
    assert idx.tolist() == [2, 0]
    mask, idx = v.index_of_known([])
    assert mask.tolist() == [] and idx.tolist() == []


@pytest.mark.parametrize("ids", [[1, 2, 3], ["x", "y"], np.array([5, 1], dtype=np.int32)])
def test_to_dict_round_trip_json(ids):
    v = Vocabulary.from_ids(ids, name="user_id")
    d = json.loads(json.dumps(v.to_dict()))
    back = Vocabulary.from_dict(d)
    assert back == v
    assert back.kind == v.kind
    assert all(type(i) is type(j) for i, j in zip(back.ids.tolist(), v.ids.tolist(), strict=True))


def test_to_dict_has_python_scalars():
    d = Vocabulary.from_ids(np.array([3, 1], dtype=np.int64)).to_dict()
    assert d["ids"] == [1, 3] and all(type(i) is int for i in d["ids"])


def test_vocabulary_bad_input():
    with pytest.raises(DataTypeError, match="one kind.*mix of"):
        Vocabulary.from_ids([1, "a"], name="user_id")
    with pytest.raises(DataTypeError, match="int or str ids; got floating"):
        Vocabulary.from_ids([1.0, 2.5])
    with pytest.raises(DataValidationError, match="'user_id' must not contain NaN/None"):
        Vocabulary.from_ids(["a", None], name="user_id")
    with pytest.raises(DataValidationError, match="needs at least one id"):
        Vocabulary.from_ids([])
    with pytest.raises(DataTypeError, match="ids must be a 1-d array-like of ids; got a scalar"):
        Vocabulary.from_ids("abc")
    with pytest.raises(DataValidationError, match="must be sorted"):
        Vocabulary([3, 1])
    with pytest.raises(DataValidationError, match="must be unique"):
        Vocabulary([1, 1])
    v = Vocabulary.from_ids([1, 2])
    with pytest.raises(DataTypeError, match="must be int ids like the vocabulary's; got str"):
        v.encode(["1"])
    with pytest.raises(DataValidationError, match=r"indices must lie in 0\.\.1.*first: 2"):
        v.decode([0, 2])
    with pytest.raises(DataTypeError, match="indices must be integers"):
        v.decode([0.0])
    with pytest.raises(DataValidationError, match=r"d is missing key\(s\) \['kind'\]"):
        Vocabulary.from_dict({"name": "x", "ids": [1]})
    with pytest.raises(DataValidationError, match=r"d\['kind'\] is 'str' but d\['ids'\] hold int"):
        Vocabulary.from_dict({"name": "x", "kind": "str", "ids": [1]})


@settings(max_examples=50, deadline=None)
@given(
    st.one_of(
        st.lists(st.integers(-(10**12), 10**12), min_size=1),
        st.lists(st.text(max_size=5), min_size=1),
    )
)
def test_encode_decode_round_trip(ids):
    v = Vocabulary.from_ids(ids, name="id")
    assert len(v) == len(set(ids))
    assert v.decode(v.encode(ids)).tolist() == list(ids)
    assert Vocabulary.from_dict(json.loads(json.dumps(v.to_dict()))) == v


# ------------------------------------------------------------------- binarize


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 3],
            "item_id": [1, 2, 1, 3, 3],
            "rating": [5.0, 3.0, 4.0, 4.5, 1.0],
            "timestamp": [1, 2, 3, 4, 5],
        }
    )


def test_binarize_dataframe():
    out = binarize(frame(), threshold=4.0)
    assert isinstance(out, pd.DataFrame)
    assert "rating" not in out.columns
    assert out[["user_id", "item_id"]].values.tolist() == [[1, 1], [2, 1], [2, 3]]
    assert out.index.tolist() == [0, 1, 2]


def test_binarize_dataset_keeps_items():
    items = pd.DataFrame({"item_id": [1, 2, 3, 4], "categories": [["a"], [], ["b"], ["c"]]})
    ds = Dataset(frame(), items, name="toy")
    out = binarize(ds, threshold=4.5)
    assert isinstance(out, Dataset)
    assert not out.has_ratings
    assert out.n_interactions == 2
    assert out.items.equals(ds.items)
    assert out.name == "toy"


def test_binarize_errors():
    with pytest.raises(DataValidationError, match="binarize needs a 'rating' column"):
        binarize(frame().drop(columns=["rating"]))
    with pytest.raises(
        DataValidationError, match=r"binarize\(threshold=6\) removed every interaction"
    ):
        binarize(frame(), threshold=6)
    with pytest.raises(DataTypeError, match="threshold must be a real number; got str"):
        binarize(frame(), threshold="4")
    with pytest.raises(
        DataTypeError, match="data must be a Dataset or a ratings DataFrame; got list"
    ):
        binarize([1, 2])


# --------------------------------------------------------------------- k_core


def test_k_core_iterates_to_fixed_point():
    # user 3 has 1 interaction; removing it leaves item 30 with 1 interaction, whose
    # removal leaves user 2 with 1 interaction: only the users 1 and 4 block survives.
    df = pd.DataFrame(
        {
            "user_id": [1, 1, 4, 4, 2, 2, 3],
            "item_id": [10, 20, 10, 20, 20, 30, 30],
        }
    )
    out = k_core(df, user_k=2, item_k=2)
    assert sorted(map(tuple, out.values.tolist())) == [(1, 10), (1, 20), (4, 10), (4, 20)]
    # the result is itself a k-core
    assert out.groupby("user_id").size().min() >= 2
    assert out.groupby("item_id").size().min() >= 2


def test_k_core_dataset_and_noop():
    ds = Dataset(frame())
    same = k_core(ds, user_k=1, item_k=1)
    assert isinstance(same, Dataset) and same.n_interactions == ds.n_interactions


def test_k_core_errors():
    with pytest.raises(DataValidationError, match=r"user_k must be >= 1; got 0"):
        k_core(frame(), user_k=0)
    with pytest.raises(DataTypeError, match="item_k must be an int; got float"):
        k_core(frame(), item_k=2.0)
    with pytest.raises(DataTypeError, match="user_k must be an int; got bool"):
        k_core(frame(), user_k=True)
    with pytest.raises(DataValidationError, match=r"k_core\(user_k=10, item_k=5\) removed every"):
        k_core(frame(), user_k=10)


@settings(max_examples=50, deadline=None)
@given(
    st.sets(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=60),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_k_core_property(pairs, uk, ik):
    df = pd.DataFrame(sorted(pairs), columns=["user_id", "item_id"])
    try:
        out = k_core(df, user_k=uk, item_k=ik)
    except DataValidationError:
        return  # nothing survives
    assert out.groupby("user_id").size().min() >= uk
    assert out.groupby("item_id").size().min() >= ik
    assert set(map(tuple, out.values.tolist())) <= pairs
    # maximality: k_core of the result changes nothing
    assert len(k_core(out, user_k=uk, item_k=ik)) == len(out)
