"""Tests of the splitters, with the guarantees checked as hypothesis properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_persona.data import (
    Dataset,
    Split,
    leave_one_out,
    load_movielens,
    random_holdout,
    temporal_split,
    validation_split,
)
from bayes_persona.exceptions import DataTypeError, DataValidationError

PROPS = settings(max_examples=50, deadline=None)


@st.composite
def frames(draw, string_ids: bool | None = None) -> pd.DataFrame:
    """Small ratings frames: unique (user, item) pairs, ratings, timestamps with ties."""
    pairs = draw(
        st.lists(
            st.tuples(st.integers(0, 7), st.integers(0, 9)), min_size=1, max_size=50, unique=True
        )
    )
    n = len(pairs)
    ratings = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    stamps = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    use_str = draw(st.booleans()) if string_ids is None else string_ids
    users = [f"u{u}" if use_str else u for u, _ in pairs]
    items = [f"i{i}" if use_str else i for _, i in pairs]
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "rating": np.array(ratings, dtype=np.float64),
            "timestamp": np.array(stamps, dtype=np.int64),
        }
    )


def rows(df: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, df.astype(object).values.tolist()), key=repr)


def pairs(df: pd.DataFrame) -> set[tuple]:
    return set(zip(df["user_id"], df["item_id"], strict=True))


def check_guarantees(df: pd.DataFrame, split: Split) -> None:
    train, test, dropped = split.train, split.test, split.dropped
    assert isinstance(train, pd.DataFrame) and isinstance(test, pd.DataFrame)
    # no (user, item) pair on both sides
    assert not pairs(train) & pairs(test)
    # every test user (and item) occurs in training
    assert set(test["user_id"]) <= set(train["user_id"])
    assert set(test["item_id"]) <= set(train["item_id"])
    # dropped rows are counted, and really were unseen
    assert split.dropped_test_users + split.dropped_test_items == len(dropped)
    unseen_user = ~dropped["user_id"].isin(train["user_id"])
    assert unseen_user.sum() == split.dropped_test_users
    assert (~dropped.loc[~unseen_user, "item_id"].isin(train["item_id"])).all()
    # train + test + dropped is the input, row for row
    assert rows(pd.concat([train, test, dropped])) == rows(df)
    # input order is kept
    for part in (train, test):
        pos = pd.MultiIndex.from_frame(df[["user_id", "item_id"]]).get_indexer(
            pd.MultiIndex.from_frame(part[["user_id", "item_id"]])
        )
        assert (np.diff(pos) > 0).all()
        assert part.index.tolist() == list(range(len(part)))


def same_split(a: Split, b: Split) -> bool:
    return (
        a.train.equals(b.train)
        and a.test.equals(b.test)
        and a.dropped.equals(b.dropped)
        and a.dropped_test_items == b.dropped_test_items
        and a.dropped_test_users == b.dropped_test_users
    )


# ------------------------------------------------------------ property tests


@PROPS
@given(frames(), st.floats(0.05, 0.95), st.integers(0, 2**32))
def test_random_holdout_properties(df, frac, seed):
    split = random_holdout(df, test_fraction=frac, seed=seed)
    check_guarantees(df, split)
    assert same_split(split, random_holdout(df, test_fraction=frac, seed=seed))
    # every user keeps training data; single-interaction users stay wholly in train
    assert set(split.train["user_id"]) == set(df["user_id"])
    held = pd.concat([split.test, split.dropped]).groupby("user_id").size()
    sizes = df.groupby("user_id").size()
    for user, n in sizes.items():
        expected = min(int(np.floor(n * frac + 0.5)), n - 1)
        assert held.get(user, 0) == expected


@PROPS
@given(frames(), st.integers(0, 2**32), st.sampled_from(["random", "time"]))
def test_leave_one_out_properties(df, seed, by):
    split = leave_one_out(df, seed=seed, by=by)
    check_guarantees(df, split)
    assert same_split(split, leave_one_out(df, seed=seed, by=by))
    held = pd.concat([split.test, split.dropped])
    sizes = df.groupby("user_id").size()
    assert set(held["user_id"]) == set(sizes[sizes >= 2].index)
    assert held["user_id"].is_unique
    if by == "time":
        latest = df.groupby("user_id")["timestamp"].max()
        assert (held["timestamp"].to_numpy() == latest.loc[held["user_id"]].to_numpy()).all()


@PROPS
@given(frames(), st.floats(0.05, 0.95))
def test_temporal_split_properties(df, frac):
    split = temporal_split(df, test_fraction=frac)
    check_guarantees(df, split)
    assert same_split(split, temporal_split(df, test_fraction=frac))
    after = pd.concat([split.test, split.dropped])
    if len(after):
        assert split.train["timestamp"].max() < after["timestamp"].min()
        assert len(after) <= int(np.ceil(frac * len(df))) + 1


@PROPS
@given(frames(string_ids=False), st.integers(0, 100))
def test_dataset_input_matches_dataframe_input(df, seed):
    try:
        split = random_holdout(Dataset(df, name="d"), test_fraction=0.5, seed=seed)
    except DataValidationError as err:
        assert "left no test interactions" in str(err)
        assert len(random_holdout(df, test_fraction=0.5, seed=seed).test) == 0
        return
    plain = random_holdout(df, test_fraction=0.5, seed=seed)
    assert isinstance(split.train, Dataset) and isinstance(split.test, Dataset)
    assert split.train.name == "d"
    assert split.train.ratings.equals(plain.train)
    assert split.test.ratings.equals(plain.test)


@PROPS
@given(frames(), st.sampled_from(["random", "loo", "temporal"]))
def test_validation_split_dispatches(df, method):
    expected = {"random": random_holdout, "loo": leave_one_out, "temporal": temporal_split}
    assert same_split(validation_split(df, method), expected[method](df))


# --------------------------------------------------------------- examples


def toy() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 3, 3],
            "item_id": [1, 2, 3, 1, 2, 3, 4],
            "timestamp": [1, 2, 3, 4, 5, 6, 7],
        }
    )


def test_unpacks_as_train_test():
    train, test = leave_one_out(toy(), seed=1)
    assert len(train) + len(test) <= 7
    assert "Split(train=" in repr(leave_one_out(toy()))


def test_unseen_test_items_are_dropped_and_counted():
    # by time, user 3 holds out item 4, which no one else has
    split = leave_one_out(toy(), by="time")
    assert split.dropped_test_items == 1
    assert split.dropped["item_id"].tolist() == [4]
    assert split.test[["user_id", "item_id"]].values.tolist() == [[1, 3], [2, 2]]


def test_temporal_counts_unseen_users():
    df = toy().assign(user_id=[1, 1, 1, 2, 2, 2, 9], item_id=[1, 2, 3, 1, 2, 3, 1])
    split = temporal_split(df, test_fraction=0.2)
    assert split.dropped_test_users == 1
    assert split.test[["user_id", "item_id"]].values.tolist() == [[2, 3]]


def test_seed_changes_result():
    df = pd.DataFrame(
        {"user_id": np.repeat(np.arange(20), 10), "item_id": np.tile(np.arange(10), 20)}
    )
    a = random_holdout(df, seed=0)
    b = random_holdout(df, seed=1)
    assert not a.test.equals(b.test)


def test_errors_name_the_argument():
    df = toy()
    with pytest.raises(
        DataValidationError, match=r"test_fraction must lie strictly between 0 and 1; got 1\.5"
    ):
        random_holdout(df, test_fraction=1.5)
    with pytest.raises(DataTypeError, match="test_fraction must be a real number; got str"):
        temporal_split(df, test_fraction="0.2")
    with pytest.raises(
        DataValidationError, match=r"by must be one of \['random', 'time'\]; got 'latest'"
    ):
        leave_one_out(df, by="latest")
    with pytest.raises(
        DataValidationError, match=r"leave_one_out\(by='time'\) needs a 'timestamp' column"
    ):
        leave_one_out(df.drop(columns=["timestamp"]), by="time")
    with pytest.raises(DataValidationError, match="temporal_split needs a 'timestamp' column"):
        temporal_split(df.drop(columns=["timestamp"]))
    with pytest.raises(DataTypeError, match="seed must be an int; got float"):
        random_holdout(df, seed=1.5)
    with pytest.raises(
        DataValidationError, match=r"method must be one of \['random', 'loo', 'temporal'\]"
    ):
        validation_split(df, "kfold")
    with pytest.raises(DataTypeError, match="data must be a Dataset or a ratings DataFrame"):
        random_holdout(df.values)
    with pytest.raises(DataValidationError, match="pair at most once"):
        random_holdout(pd.concat([df, df]))


def test_dataset_with_empty_test_side_raises():
    ds = Dataset(pd.DataFrame({"user_id": [1, 2], "item_id": [1, 1]}))
    with pytest.raises(DataValidationError, match="left no test interactions"):
        leave_one_out(ds)
    split = leave_one_out(ds.ratings)  # a frame may be empty
    assert len(split.test) == 0 and len(split.train) == 2


def test_validation_split_on_a_train_side():
    train = random_holdout(toy(), seed=3).train
    val = validation_split(train, "loo", seed=3, by="time")
    assert len(val.train) + len(val.test) + len(val.dropped) == len(train)


def test_ml100k_leave_one_out(ml100k_dir):
    ds = load_movielens("100k", data_home=ml100k_dir.parent, download=False)
    split = leave_one_out(ds, by="time", seed=0)
    assert split.test.n_interactions + split.dropped_test_items == 943
    assert split.train.n_users == 943
    assert split.train.items is ds.items or split.train.items.equals(ds.items)


@pytest.mark.parametrize("tz", [None, "Europe/Paris"])
def test_datetime_timestamps(tz):
    stamps = pd.to_datetime([1, 2, 3, 4, 5, 6, 7], unit="s")
    df = toy().assign(timestamp=stamps.tz_localize(tz) if tz else stamps)
    held = pd.concat([leave_one_out(df, by="time").test, leave_one_out(df, by="time").dropped])
    assert sorted(held["item_id"].tolist()) == [2, 3, 4]  # each user's latest
    split = temporal_split(df, test_fraction=0.3)
    assert (
        split.train["timestamp"].max() < pd.concat([split.test, split.dropped])["timestamp"].min()
    )


def test_float_timestamps():
    df = toy().assign(timestamp=[0.5, 0.25, 3.0, 4.0, 5.0, 6.0, 7.0])
    held = pd.concat([leave_one_out(df, by="time").test, leave_one_out(df, by="time").dropped])
    assert sorted(held["item_id"].tolist()) == [2, 3, 4]
