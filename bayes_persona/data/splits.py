"""Train/test splits of interaction data: random holdout, leave-one-out and temporal.

Every splitter takes a :class:`~bayes_persona.data.dataset.Dataset` or a ratings
DataFrame and returns a :class:`Split` whose ``train`` and ``test`` have the input's
type. All of them guarantee that

* no (user, item) pair is on both sides;
* every test user has training interactions;
* test interactions whose user or item never occurs in training are removed from the
  test side and counted (``dropped_test_users``, ``dropped_test_items``), and kept in
  ``Split.dropped``;
* ``train``, ``test`` and ``dropped`` partition the input rows;
* the result depends only on the input (row order included) and ``seed``.

Row order inside ``train`` and ``test`` follows the input; indices are reset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import pandas as pd

from bayes_persona.data._validation import (
    ITEM_COL,
    TIMESTAMP_COL,
    USER_COL,
    check_choice,
    check_fraction,
    check_int,
    dataset_ratings,
)
from bayes_persona.data.dataset import Dataset, row_subset
from bayes_persona.exceptions import DataValidationError

__all__ = [
    "Split",
    "random_holdout",
    "leave_one_out",
    "temporal_split",
    "validation_split",
]

logger = logging.getLogger(__name__)

DataT = TypeVar("DataT", Dataset, pd.DataFrame)


@dataclass(frozen=True, eq=False)
class Split(Generic[DataT]):
    """The result of a split; unpacks as ``train, test = split``.

    Attributes
    ----------
    train : Dataset or pandas.DataFrame
        Training interactions (same type as the input).
    test : Dataset or pandas.DataFrame
        Test interactions; every user and item in it also occurs in ``train``.
    dropped_test_users : int
        Number of test *interactions* removed because their user has no training
        interaction (only :func:`temporal_split` can cause this).
    dropped_test_items : int
        Number of test *interactions* removed because their item has no training
        interaction (counted after the user filter).
    dropped : pandas.DataFrame
        The removed rows, shape ``(dropped_test_users + dropped_test_items, n_cols)``.
    """

    train: DataT
    test: DataT
    dropped_test_items: int = 0
    dropped_test_users: int = 0
    dropped: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def __iter__(self) -> Iterator[DataT]:
        return iter((self.train, self.test))

    def __repr__(self) -> str:
        return (
            f"Split(train={_size(self.train)} rows, test={_size(self.test)} rows, "
            f"dropped_test_users={self.dropped_test_users}, "
            f"dropped_test_items={self.dropped_test_items})"
        )


def _size(data: Dataset | pd.DataFrame) -> int:
    return data.n_interactions if isinstance(data, Dataset) else len(data)


# ---------------------------------------------------------------------- helpers


def _rng(seed: Any) -> np.random.Generator:
    return np.random.default_rng(check_int("seed", seed, minimum=0))


def _time_key(ratings: pd.DataFrame, func: str) -> np.ndarray:
    """The timestamps as a sortable int64 or float64 array, shape ``(n,)``.

    Datetimes (time-zone aware ones in UTC) become their integer ticks, so no
    precision is lost to floats.
    """
    if TIMESTAMP_COL not in ratings.columns:
        raise DataValidationError(
            f"{func} needs a 'timestamp' column; the ratings have columns {list(ratings.columns)}"
        )
    ts = ratings[TIMESTAMP_COL]
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(ts.dtype):
        return ts.to_numpy().view(np.int64)
    if pd.api.types.is_integer_dtype(ts.dtype):
        return ts.to_numpy(dtype=np.int64)
    return ts.to_numpy(dtype=np.float64)


def _rank_in_user(users: pd.Series, order: np.ndarray) -> np.ndarray:
    """Position (0-based) of each row among its user's rows, visiting rows in ``order``.

    Parameters
    ----------
    users : pandas.Series, shape ``(n,)``
        User id of each row.
    order : numpy.ndarray of int, shape ``(n,)``
        A permutation of ``0..n-1``: the priority in which rows are visited.

    Returns
    -------
    numpy.ndarray of int64, shape ``(n,)``
        ``0`` for each user's first visited row, ``1`` for the next, ...
    """
    n = len(order)
    codes, _ = pd.factorize(users)
    priority = np.empty(n, dtype=np.int64)
    priority[order] = np.arange(n, dtype=np.int64)
    # unique keys, so an unstable (fast) sort orders rows by user, then by priority
    grouped = np.argsort(codes.astype(np.int64) * n + priority)
    sorted_codes = codes[grouped]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    lengths = np.diff(np.r_[starts, n])
    rank = np.empty(n, dtype=np.int64)
    rank[grouped] = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
    return rank


def _finish(data: DataT, ratings: pd.DataFrame, test_mask: np.ndarray, what: str) -> Split[DataT]:
    """Split ``ratings`` by ``test_mask``, drop unseen users/items from test, rewrap."""
    train = ratings.loc[~test_mask]
    test = ratings.loc[test_mask]
    unseen_user = ~test[USER_COL].isin(pd.unique(train[USER_COL])).to_numpy()
    kept = test.loc[~unseen_user]
    unseen_item = ~kept[ITEM_COL].isin(pd.unique(train[ITEM_COL])).to_numpy()
    dropped = pd.concat([test.loc[unseen_user], kept.loc[unseen_item]]).sort_index()
    test = kept.loc[~unseen_item]
    n_u, n_i = int(unseen_user.sum()), int(unseen_item.sum())
    if n_u or n_i:
        logger.info(
            "%s: dropped %d test rows with a user unseen in train and %d with an unseen item",
            what,
            n_u,
            n_i,
        )
    logger.info("%s: %d train rows, %d test rows", what, len(train), len(test))
    train = train.reset_index(drop=True)
    test = test.reset_index(drop=True)
    dropped = dropped.reset_index(drop=True)
    if isinstance(data, Dataset):
        if len(test) == 0:
            raise DataValidationError(
                f"{what} left no test interactions (a Dataset cannot be empty); users need "
                "at least 2 interactions to give one to the test side. Pass the ratings "
                "DataFrame to get an empty test frame instead"
            )
        return Split(row_subset(data, train), row_subset(data, test), n_i, n_u, dropped)
    if len(test) == 0:
        logger.warning("%s left no test interactions", what)
    return Split(train, test, n_i, n_u, dropped)


# --------------------------------------------------------------------- splitters


def random_holdout(data: DataT, test_fraction: float = 0.2, seed: int = 0) -> Split[DataT]:
    """Hold out a random fraction of each user's interactions.

    A user with ``n`` interactions gives ``round(n * test_fraction)`` of them (half
    rounded up) to the test side, but at most ``n - 1``: everyone keeps at least one
    training interaction, and users with one interaction stay wholly in training.

    Parameters
    ----------
    data : Dataset or pandas.DataFrame, shape ``(n_interactions, n_cols)``
    test_fraction : float, default 0.2
        Share of each user's interactions to hold out, strictly between 0 and 1.
    seed : int, default 0
        Seed of the random choice (non-negative).

    Returns
    -------
    Split
        ``train`` and ``test`` of the input's type.

    Raises
    ------
    DataValidationError
        ``test_fraction`` is outside (0, 1), or a Dataset would get an empty test side.
    """
    ratings = dataset_ratings(data, "random_holdout")
    frac = check_fraction("test_fraction", test_fraction)
    order = _rng(seed).permutation(len(ratings))
    users = ratings[USER_COL]
    counts = users.groupby(users, sort=False).transform("size").to_numpy()
    n_test = np.minimum(np.floor(counts * frac + 0.5), counts - 1)
    rank = _rank_in_user(users, order)
    test_mask = rank < n_test
    return _finish(data, ratings, test_mask, f"random_holdout(test_fraction={frac:g}, seed={seed})")


def leave_one_out(
    data: DataT, seed: int = 0, by: Literal["random", "time"] = "random"
) -> Split[DataT]:
    """Hold out one interaction per user with at least two.

    Parameters
    ----------
    data : Dataset or pandas.DataFrame, shape ``(n_interactions, n_cols)``
    seed : int, default 0
        Seed of the random choice (``by="random"``) or of tie breaks between equal
        timestamps (``by="time"``).
    by : {"random", "time"}
        Hold out a random interaction, or the latest by ``timestamp``.

    Returns
    -------
    Split

    Raises
    ------
    DataValidationError
        ``by`` is unknown, ``by="time"`` without a ``timestamp`` column, or a Dataset
        would get an empty test side.

    References
    ----------
    .. [1] He, X. et al. "Neural Collaborative Filtering", WWW 2017 (leave-one-out
       evaluation with the latest interaction held out).
    """
    ratings = dataset_ratings(data, "leave_one_out")
    check_choice("by", by, ("random", "time"))
    if by == "time":
        ts = _time_key(ratings, "leave_one_out(by='time')")
    order = _rng(seed).permutation(len(ratings))
    if by == "time":
        # latest first; rows were shuffled, so ties fall in a seeded random order
        order = order[np.argsort(ts[order])[::-1]]
    users = ratings[USER_COL]
    counts = users.groupby(users, sort=False).transform("size").to_numpy()
    rank = _rank_in_user(users, order)
    test_mask = (rank == 0) & (counts >= 2)
    return _finish(data, ratings, test_mask, f"leave_one_out(by={by!r}, seed={seed})")


def temporal_split(data: DataT, test_fraction: float = 0.2) -> Split[DataT]:
    """Cut all interactions at one point in time: the latest go to the test side.

    The cut is the ``1 - test_fraction`` quantile of the timestamps (the lower data
    point); rows strictly later go to test, so every test row is later than every
    training row. Ties at the cut stay in training, so the test share can be smaller
    than ``test_fraction``. Test rows of users or items absent from training are
    dropped and counted.

    Parameters
    ----------
    data : Dataset or pandas.DataFrame, shape ``(n_interactions, n_cols)``
        Must have a ``timestamp`` column.
    test_fraction : float, default 0.2
        Share of interactions to put after the cut, strictly between 0 and 1.

    Returns
    -------
    Split

    Raises
    ------
    DataValidationError
        No ``timestamp`` column, ``test_fraction`` outside (0, 1), or a Dataset would
        get an empty test side.
    """
    ratings = dataset_ratings(data, "temporal_split")
    frac = check_fraction("test_fraction", test_fraction)
    ts = _time_key(ratings, "temporal_split")
    position = int(np.floor((len(ts) - 1) * (1.0 - frac)))
    cutoff = np.partition(ts, position)[position]
    test_mask = ts > cutoff
    return _finish(data, ratings, test_mask, f"temporal_split(test_fraction={frac:g})")


_METHODS: dict[str, Callable[..., Split]] = {
    "random": random_holdout,
    "loo": leave_one_out,
    "temporal": temporal_split,
}


def validation_split(
    train: DataT, method: Literal["random", "loo", "temporal"] = "random", **kwargs: Any
) -> Split[DataT]:
    """Cut a validation set from a training set with one of the splitters.

    Parameters
    ----------
    train : Dataset or pandas.DataFrame
        The training side of an earlier split.
    method : {"random", "loo", "temporal"}
        :func:`random_holdout`, :func:`leave_one_out` or :func:`temporal_split`.
    **kwargs
        Passed on to that function (``test_fraction``, ``seed``, ``by``).

    Returns
    -------
    Split
        ``train`` is the new, smaller training set; ``test`` the validation set.
    """
    check_choice("method", method, tuple(_METHODS))
    return _METHODS[method](train, **kwargs)
