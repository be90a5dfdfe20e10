"""The :class:`Dataset` container: a validated ratings table plus an optional items table."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayes_persona.data._validation import (
    CATEGORIES_COL,
    ITEM_COL,
    RATING_COL,
    USER_COL,
    id_kind_of_values,
    require_dataframe,
    validate_items,
    validate_ratings,
)
from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = ["Dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A validated, tidy interaction dataset.

    Parameters
    ----------
    ratings : pandas.DataFrame, shape ``(n_interactions, n_cols)``
        One row per (user, item) interaction. Columns ``user_id`` and ``item_id`` (ids
        of one kind each: all int or all str, never missing); optional ``rating``
        (numeric and finite; stored as float64); optional ``timestamp`` (integer,
        float or datetime64). Extra columns are kept. Each (user_id, item_id) pair may
        occur once: merge duplicates first, e.g. with
        ``load_interactions(..., duplicates="aggregate")``.
    items : pandas.DataFrame or None, shape ``(n_catalogue_items, n_cols)``
        Item metadata: column ``item_id`` (unique, same id kind as the ratings),
        optional ``title`` (str) and ``categories`` (a list of str per row). It may hold
        items that no one rated; it is kept whole.
    name : str, default ""
        A label, e.g. ``"ml-100k"``.

    Raises
    ------
    DataTypeError
        A table is not a DataFrame or a column has the wrong type (e.g. a string or
        boolean ``rating``, float or mixed ids).
    DataValidationError
        A required column is missing, an id is NaN/None, a rating is not finite, the
        ratings are empty, a (user_id, item_id) pair repeats, or an item id repeats in
        ``items``.

    Notes
    -----
    The tables are copied on construction (with a fresh ``RangeIndex``), so later
    changes to the frames passed in do not reach the dataset. Treat ``ratings`` and
    ``items`` as read-only.

    Examples
    --------
    >>> import pandas as pd
    >>> ds = Dataset(pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10],
    ...                            "rating": [5, 3, 4]}))
    >>> ds.n_users, ds.n_items, ds.has_ratings
    (2, 2, True)
    """

    ratings: pd.DataFrame
    items: pd.DataFrame | None = None
    name: str = field(default="")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise DataTypeError(f"name must be a str; got {type(self.name).__name__}")
        require_dataframe(self.ratings, "ratings")
        ratings = validate_ratings(self.ratings, "ratings")
        object.__setattr__(self, "ratings", ratings)
        if self.items is not None:
            items = validate_items(self.items, "items")
            r_kind = id_kind_of_values(ratings[ITEM_COL], "ratings.item_id")
            i_kind = id_kind_of_values(items[ITEM_COL], "items.item_id")
            if r_kind != i_kind:
                raise DataTypeError(
                    f"column 'item_id' must hold the same kind of id in ratings and items; "
                    f"ratings hold {r_kind} ids (e.g. {ratings[ITEM_COL].iloc[0]!r}), items "
                    f"hold {i_kind} ids (e.g. {items[ITEM_COL].iloc[0]!r})"
                )
            object.__setattr__(self, "items", items)
        logger.debug("built %r", self)

    # ------------------------------------------------------------------ properties

    @property
    def n_users(self) -> int:
        """Number of distinct users in ``ratings``."""
        return int(self.ratings[USER_COL].nunique())

    @property
    def n_items(self) -> int:
        """Number of distinct items in ``ratings`` (not the size of ``items``)."""
        return int(self.ratings[ITEM_COL].nunique())

    @property
    def n_interactions(self) -> int:
        """Number of rows of ``ratings``."""
        return len(self.ratings)

    @property
    def has_ratings(self) -> bool:
        """Whether ``ratings`` has a ``rating`` column (explicit feedback)."""
        return RATING_COL in self.ratings.columns

    @property
    def categories(self) -> list[str]:
        """Sorted names of all categories in ``items`` (``[]`` if there are none)."""
        if self.items is None or CATEGORIES_COL not in self.items.columns:
            return []
        return sorted({c for cats in self.items[CATEGORIES_COL] for c in cats})

    @property
    def user_ids(self) -> np.ndarray:
        """Sorted distinct user ids in ``ratings``, shape ``(n_users,)``."""
        return np.sort(self.ratings[USER_COL].unique())

    @property
    def item_ids(self) -> np.ndarray:
        """Sorted distinct item ids in ``ratings``, shape ``(n_items,)``."""
        return np.sort(self.ratings[ITEM_COL].unique())

    # --------------------------------------------------------------------- methods

    def with_ratings(self, ratings: pd.DataFrame) -> Dataset:
        """Return a new dataset with ``ratings`` and this dataset's items and name.

        Parameters
        ----------
        ratings : pandas.DataFrame, shape ``(n, n_cols)``
            A ratings table, validated as in the constructor.
        """
        return Dataset(ratings=ratings, items=self.items, name=self.name)

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        n_cat = len(self.categories)
        items = "none" if self.items is None else f"{len(self.items)} rows, {n_cat} categories"
        kind = "rated" if self.has_ratings else "implicit"
        return (
            f"Dataset({label}{self.n_interactions} {kind} interactions, "
            f"{self.n_users} users, {self.n_items} items; items table: {items})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        if self.name != other.name or not self.ratings.equals(other.ratings):
            return False
        if self.items is None or other.items is None:
            return self.items is None and other.items is None
        return self.items.equals(other.items)

    __hash__ = None  # type: ignore[assignment]  # holds mutable frames


def row_subset(data: Dataset, ratings: pd.DataFrame) -> Dataset:
    """``data.with_ratings(ratings)`` without re-validation, for the library's own splits.

    ``ratings`` must be a row subset of ``data.ratings`` (columns may be dropped), which
    keeps every invariant but non-emptiness; that one is checked.
    """
    if len(ratings) == 0:
        raise DataValidationError("ratings must not be empty; got 0 rows")
    new = object.__new__(Dataset)
    object.__setattr__(new, "ratings", ratings.reset_index(drop=True))
    object.__setattr__(new, "items", data.items)
    object.__setattr__(new, "name", data.name)
    return new
