"""Id vocabularies and ratings preprocessing (binarisation, k-core filtering)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from bayes_persona.data._validation import (
    ITEM_COL,
    RATING_COL,
    USER_COL,
    IdKind,
    check_int,
    check_real,
    dataset_ratings,
    id_kind_of_values,
)
from bayes_persona.data.dataset import Dataset, row_subset
from bayes_persona.exceptions import DataTypeError, DataValidationError, UnknownIdError

__all__ = ["Vocabulary", "binarize", "k_core"]

logger = logging.getLogger(__name__)

DataT = TypeVar("DataT", Dataset, pd.DataFrame)

_PREVIEW = 5


def _as_1d(ids: Any, name: str) -> np.ndarray:
    """Turn ids (scalar-free array-like) into a 1-d numpy array."""
    if isinstance(ids, str | bytes) or np.isscalar(ids):
        raise DataTypeError(f"{name} must be a 1-d array-like of ids; got a scalar {ids!r}")
    if isinstance(ids, pd.Series | pd.Index):
        arr = ids.to_numpy()
    elif isinstance(ids, np.ndarray):
        arr = ids
    else:
        arr = np.asarray(list(ids), dtype=object)
    if arr.ndim != 1:
        raise DataValidationError(f"{name} must be 1-d; got shape {arr.shape}")
    return arr


def _check_no_missing(arr: np.ndarray, name: str) -> None:
    missing = pd.isna(arr)
    if missing.any():
        pos = int(np.flatnonzero(missing)[0])
        raise DataValidationError(
            f"{name} must not contain NaN/None; found {int(missing.sum())}, first at position {pos}"
        )


class Vocabulary:
    """A bijection between external ids and contiguous ``int64`` indices ``0..n-1``.

    Ids are sorted, so index order is id order. Ids are all ints or all strings.

    Parameters
    ----------
    ids : array-like, shape ``(n,)``
        Distinct, sorted ids. Prefer :meth:`from_ids`, which sorts and deduplicates.
    name : str, default "id"
        What the ids are, e.g. ``"user_id"``; used in error messages.

    Examples
    --------
    >>> v = Vocabulary.from_ids([30, 10, 20, 10], name="item_id")
    >>> v.encode([20, 30]).tolist(), v.decode([0]).tolist()
    ([1, 2], [10])
    """

    def __init__(self, ids: Any, name: str = "id") -> None:
        if not isinstance(name, str):
            raise DataTypeError(f"name must be a str; got {type(name).__name__}")
        arr = _as_1d(ids, "ids")
        if len(arr) == 0:
            raise DataValidationError(f"vocabulary {name!r} needs at least one id; got none")
        _check_no_missing(arr, f"ids of vocabulary {name!r}")
        kind = id_kind_of_values(arr, f"ids of vocabulary {name!r}")
        arr = arr.astype(np.int64) if kind == "int" else arr.astype(object)
        index = pd.Index(arr, dtype=np.int64 if kind == "int" else object)
        if not index.is_unique:
            dup = index[index.duplicated()].tolist()[:_PREVIEW]
            raise DataValidationError(f"ids of vocabulary {name!r} must be unique; repeated: {dup}")
        if not index.is_monotonic_increasing:
            raise DataValidationError(
                f"ids of vocabulary {name!r} must be sorted; use Vocabulary.from_ids to sort"
            )
        self._name = name
        self._kind: IdKind = kind
        self._index = index
        self._ids = arr
        self._ids.setflags(write=False)

    # ------------------------------------------------------------------ builders

    @classmethod
    def from_ids(cls, ids: Any, name: str = "id") -> Vocabulary:
        """Build a vocabulary of the sorted distinct values of ``ids``.

        Parameters
        ----------
        ids : array-like, shape ``(n,)``
            Ids, all int or all str, none missing; repeats are fine.
        name : str, default "id"
            What the ids are, e.g. ``"user_id"``.

        Raises
        ------
        DataTypeError
            Ids are floats, booleans or a mix of ints and strings.
        DataValidationError
            ``ids`` is empty or holds NaN/None.
        """
        arr = _as_1d(ids, "ids")
        if len(arr) == 0:
            raise DataValidationError(f"vocabulary {name!r} needs at least one id; got none")
        _check_no_missing(arr, f"ids of vocabulary {name!r}")
        kind = id_kind_of_values(arr, f"ids of vocabulary {name!r}")
        arr = arr.astype(np.int64) if kind == "int" else arr.astype(object)
        return cls(np.array(sorted(set(arr.tolist())), dtype=arr.dtype), name=name)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocabulary:
        """Rebuild a vocabulary from :meth:`to_dict` output.

        Raises
        ------
        DataValidationError
            ``d`` lacks a key or its ``kind`` disagrees with its ids.
        """
        if not isinstance(d, dict):
            raise DataTypeError(f"d must be a dict from Vocabulary.to_dict; got {type(d).__name__}")
        missing = [k for k in ("name", "kind", "ids") if k not in d]
        if missing:
            raise DataValidationError(
                f"d is missing key(s) {missing}; expected keys ['name', 'kind', 'ids'], "
                f"got {sorted(d)}"
            )
        kind = d["kind"]
        if kind not in ("int", "str"):
            raise DataValidationError(f"d['kind'] must be 'int' or 'str'; got {kind!r}")
        ids = list(d["ids"])
        vocab = cls(np.asarray(ids, dtype=object), name=d["name"])
        if vocab.kind != kind:
            raise DataValidationError(f"d['kind'] is {kind!r} but d['ids'] hold {vocab.kind} ids")
        return vocab

    # ------------------------------------------------------------------ accessors

    @property
    def name(self) -> str:
        """What the ids are, e.g. ``"user_id"``."""
        return self._name

    @property
    def kind(self) -> IdKind:
        """``"int"`` or ``"str"``."""
        return self._kind

    @property
    def ids(self) -> np.ndarray:
        """The ids in index order, shape ``(n,)`` (int64, or object of str); read-only."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id_: object) -> bool:
        try:
            return id_ in self._index
        except TypeError:
            return False

    def __iter__(self) -> Iterator[Any]:
        return iter(self._ids.tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (
            self._name == other._name
            and self._kind == other._kind
            and len(self) == len(other)
            and bool(np.all(self._ids == other._ids))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(i) for i in self._ids[:3].tolist())
        more = ", ..." if len(self) > 3 else ""
        return f"Vocabulary(name={self._name!r}, n={len(self)}, ids=[{head}{more}])"

    # ------------------------------------------------------------- encode/decode

    def _lookup(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        arr = _as_1d(ids, "ids")
        if len(arr) == 0:
            return arr, np.empty(0, dtype=np.int64)
        what = f"ids to look up in vocabulary {self._name!r}"
        _check_no_missing(arr, what)
        kind = id_kind_of_values(arr, what)
        if kind != self._kind:
            raise DataTypeError(
                f"{what} must be {self._kind} ids like the vocabulary's; got {kind} ids, "
                f"e.g. {arr[0]!r}"
            )
        return arr, self._index.get_indexer(pd.Index(arr)).astype(np.int64)

    def encode(self, ids: Any) -> np.ndarray:
        """Map external ids to indices.

        Parameters
        ----------
        ids : array-like, shape ``(n,)``

        Returns
        -------
        numpy.ndarray of int64, shape ``(n,)``

        Raises
        ------
        DataTypeError
            The ids are of another kind (int vs str) than the vocabulary's.
        UnknownIdError
            Some id is not in the vocabulary; the message names the vocabulary and
            the first few unknown ids.
        """
        arr, idx = self._lookup(ids)
        unknown = idx < 0
        if unknown.any():
            bad = list(dict.fromkeys(arr[unknown].tolist()))
            shown = bad[:_PREVIEW]
            more = f" and {len(bad) - _PREVIEW} more" if len(bad) > _PREVIEW else ""
            raise UnknownIdError(
                f"{len(bad)} unknown id(s) not in vocabulary {self._name!r} "
                f"({len(self)} {self._kind} ids): {shown}{more}"
            )
        return idx

    def index_of_known(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Encode the ids that are known and flag the rest, for filtering.

        Parameters
        ----------
        ids : array-like, shape ``(n,)``

        Returns
        -------
        mask : numpy.ndarray of bool, shape ``(n,)``
            Whether each id is in the vocabulary.
        indices : numpy.ndarray of int64, shape ``(mask.sum(),)``
            Indices of ``ids[mask]``.
        """
        _, idx = self._lookup(ids)
        mask = idx >= 0
        return mask, idx[mask]

    def decode(self, indices: Any) -> np.ndarray:
        """Map indices back to external ids.

        Parameters
        ----------
        indices : array-like of int, shape ``(n,)``

        Returns
        -------
        numpy.ndarray, shape ``(n,)``
            int64 ids, or an object array of str ids.

        Raises
        ------
        DataTypeError
            ``indices`` are not integers.
        DataValidationError
            An index lies outside ``0..len(self)-1``.
        """
        arr = np.asarray(indices)
        if arr.ndim != 1:
            raise DataValidationError(f"indices must be 1-d; got shape {arr.shape}")
        if arr.size == 0:
            return self._ids[:0].copy()
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise DataTypeError(f"indices must be integers; got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= len(self))
        if bad.any():
            raise DataValidationError(
                f"indices must lie in 0..{len(self) - 1} for vocabulary {self._name!r}; got "
                f"{int(bad.sum())} outside, first: {int(arr[bad][0])}"
            )
        return self._ids[arr]

    # -------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict: ``{"name", "kind", "ids"}`` with Python ids."""
        return {"name": self._name, "kind": self._kind, "ids": self._ids.tolist()}


# ------------------------------------------------------------------ preprocessing


def _rewrap(data: DataT, ratings: pd.DataFrame, func: str, what: str) -> DataT:
    if len(ratings) == 0:
        raise DataValidationError(f"{func}({what}) removed every interaction; nothing is left")
    ratings = ratings.reset_index(drop=True)
    if isinstance(data, Dataset):
        return row_subset(data, ratings)
    return ratings


def binarize(data: DataT, threshold: float = 4.0) -> DataT:
    """Keep the interactions rated at least ``threshold`` and drop the rating column.

    Turns explicit ratings into implicit positive feedback.

    Parameters
    ----------
    data : Dataset or pandas.DataFrame, shape ``(n, n_cols)``
        Ratings with a ``rating`` column.
    threshold : float, default 4.0
        Rows with ``rating >= threshold`` are kept.

    Returns
    -------
    Dataset or pandas.DataFrame
        Same type as ``data`` (a Dataset keeps its whole items table); the ratings
        have no ``rating`` column.

    Raises
    ------
    DataValidationError
        ``data`` has no ``rating`` column, or no row reaches the threshold.
    """
    ratings = dataset_ratings(data, "binarize")
    threshold = check_real("threshold", threshold)
    if RATING_COL not in ratings.columns:
        raise DataValidationError(
            "binarize needs a 'rating' column; the ratings have columns "
            f"{list(ratings.columns)} (implicit data is already binary)"
        )
    keep = ratings[RATING_COL].to_numpy() >= threshold
    logger.info(
        "binarize(threshold=%g): kept %d of %d interactions", threshold, keep.sum(), len(keep)
    )
    out = ratings.loc[keep].drop(columns=[RATING_COL])
    return _rewrap(data, out, "binarize", f"threshold={threshold:g}")


def k_core(data: DataT, user_k: int = 5, item_k: int = 5) -> DataT:
    """Filter to the k-core: every user has >= ``user_k`` and every item >= ``item_k`` rows.

    Removing sparse users can make items sparse and vice versa, so the filter is
    repeated until nothing changes (a fixed point).

    Parameters
    ----------
    data : Dataset or pandas.DataFrame, shape ``(n, n_cols)``
    user_k, item_k : int, default 5
        Minimum interactions per user and per item (1 disables that side).

    Returns
    -------
    Dataset or pandas.DataFrame
        Same type as ``data``; a Dataset keeps its whole items table.

    Raises
    ------
    DataValidationError
        ``user_k`` or ``item_k`` is below 1, or the filter leaves nothing.

    References
    ----------
    .. [1] Batagelj, V. and Zaversnik, M. "An O(m) Algorithm for Cores Decomposition
       of Networks", 2003 (k-cores of a bipartite interaction graph).
    """
    ratings = dataset_ratings(data, "k_core")
    user_k = check_int("user_k", user_k, minimum=1)
    item_k = check_int("item_k", item_k, minimum=1)
    current = ratings
    rounds = 0
    while True:
        rounds += 1
        u_counts = current.groupby(USER_COL, sort=False)[USER_COL].transform("size").to_numpy()
        i_counts = current.groupby(ITEM_COL, sort=False)[ITEM_COL].transform("size").to_numpy()
        keep = (u_counts >= user_k) & (i_counts >= item_k)
        if keep.all():
            break
        current = current.loc[keep]
        if len(current) == 0:
            break
    logger.info(
        "k_core(user_k=%d, item_k=%d): kept %d of %d interactions after %d round(s)",
        user_k,
        item_k,
        len(current),
        len(ratings),
        rounds,
    )
    return _rewrap(data, current, "k_core", f"user_k={user_k}, item_k={item_k}")
