"""Shared validation helpers for the data layer.

Every helper raises one of the project's exceptions with a message that names the
column or argument, says what was expected and what came, and shows an offending row
where there is one. Helpers never coerce values silently: a column of the wrong type is
an error, not something to be converted.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.api import types as pdt

from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = [
    "USER_COL",
    "ITEM_COL",
    "RATING_COL",
    "TIMESTAMP_COL",
    "TITLE_COL",
    "CATEGORIES_COL",
    "IdKind",
    "first_row",
    "require_dataframe",
    "require_columns",
    "check_id_column",
    "id_kind_of_values",
    "check_rating_column",
    "check_timestamp_column",
    "check_no_duplicate_pairs",
    "check_categories_column",
    "check_title_column",
    "validate_ratings",
    "validate_items",
    "check_choice",
    "check_fraction",
    "check_int",
    "check_real",
]

USER_COL = "user_id"
ITEM_COL = "item_id"
RATING_COL = "rating"
TIMESTAMP_COL = "timestamp"
TITLE_COL = "title"
CATEGORIES_COL = "categories"

IdKind = Literal["int", "str"]

_PREVIEW = 5  # how many offending values an error message lists


# --------------------------------------------------------------------------- rows


def first_row(df: pd.DataFrame, mask: np.ndarray | pd.Series) -> dict[str, Any]:
    """Return the first row of ``df`` where ``mask`` is true, as a plain dict.

    Parameters
    ----------
    df : pandas.DataFrame
        The frame, shape ``(n_rows, n_cols)``.
    mask : array-like of bool, shape ``(n_rows,)``
        Which rows offend.

    Returns
    -------
    dict
        Column name -> Python scalar of the first offending row (``{}`` if none).
    """
    rows = df.loc[np.asarray(mask, dtype=bool)].head(1).to_dict(orient="records")
    return rows[0] if rows else {}


def _preview(values: Iterable[Any], n: int = _PREVIEW) -> str:
    vals = list(values)
    shown = ", ".join(repr(_py(v)) for v in vals[:n])
    more = f", ... ({len(vals) - n} more)" if len(vals) > n else ""
    return f"[{shown}{more}]"


def _py(value: Any) -> Any:
    """Turn a numpy scalar into the equivalent Python scalar (for readable messages)."""
    return value.item() if isinstance(value, np.generic) else value


# ------------------------------------------------------------------- frames, columns


def require_dataframe(obj: Any, name: str) -> pd.DataFrame:
    """Return ``obj`` if it is a DataFrame, else raise :class:`DataTypeError`."""
    if not isinstance(obj, pd.DataFrame):
        raise DataTypeError(f"{name} must be a pandas DataFrame; got {type(obj).__name__}")
    return obj


def interactions_frame(data: Any, name: str) -> pd.DataFrame:
    """The interactions of ``data`` (a ratings DataFrame or a Dataset), not copied.

    Checks the type and the presence of ``user_id`` and ``item_id``; value checks are
    :func:`validate_ratings`'s.

    Raises
    ------
    DataTypeError
        ``data`` is neither a DataFrame nor has a DataFrame ``.ratings``.
    DataValidationError
        ``user_id`` or ``item_id`` is missing.
    """
    df = getattr(data, "ratings", data)
    if not isinstance(df, pd.DataFrame):
        raise DataTypeError(
            f"{name} must be a pandas DataFrame with columns user_id, item_id[, rating] or a "
            f"bayes_persona.Dataset; got {type(data).__name__}"
        )
    missing = [c for c in (USER_COL, ITEM_COL) if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{name} must have columns ['user_id', 'item_id']; missing {missing}, "
            f"got columns {list(df.columns)}"
        )
    return df


def id_frame(data: Any, name: str, *, non_empty: bool = False) -> pd.DataFrame:
    """:func:`interactions_frame` whose ``user_id`` and ``item_id`` hold no missing value
    (and, with ``non_empty``, at least one row); the light check of the evaluation and the
    baselines, which take ids of any kind."""
    df = interactions_frame(data, name)
    if non_empty and len(df) == 0:
        raise DataValidationError(f"{name} must hold at least one interaction; got an empty frame")
    for c in (USER_COL, ITEM_COL):
        if df[c].isna().any():
            raise DataValidationError(
                f"{name}[{c!r}] must not contain missing values; got {int(df[c].isna().sum())}"
            )
    return df


def dataset_ratings(data: Any, func: str) -> pd.DataFrame:
    """The ratings of a Dataset (already valid) or of a ratings DataFrame (validated now),
    for the splits and filters, whose errors name the function ``func``."""
    from bayes_persona.data.dataset import Dataset

    if isinstance(data, Dataset):
        return data.ratings
    if isinstance(data, pd.DataFrame):
        return validate_ratings(data, "ratings")
    raise DataTypeError(f"{func}: data must be a Dataset or a ratings DataFrame; got {type(data).__name__}")


def ratings_of(data: Any, name: str) -> pd.DataFrame:
    """The checked interactions of ``data``, a ratings DataFrame or a Dataset
    (:func:`interactions_frame` then :func:`validate_ratings`; errors name ``name``)."""
    return validate_ratings(interactions_frame(data, name), frame=name)


def require_columns(df: pd.DataFrame, columns: Sequence[str], frame: str) -> None:
    """Raise :class:`DataValidationError` unless every name in ``columns`` is in ``df``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{frame} is missing required column(s) {missing}; "
            f"expected {list(columns)}, found columns {list(map(str, df.columns))}"
        )


def _check_not_missing(df: pd.DataFrame, col: str, frame: str) -> None:
    na = df[col].isna().to_numpy()
    if na.any():
        raise DataValidationError(
            f"column {col!r} of {frame} must not contain NaN/None; found {int(na.sum())} "
            f"such rows, first: {first_row(df, na)}"
        )


_INT64 = np.iinfo(np.int64)


def _check_int64(series: pd.Series, name: str) -> None:
    """Integer ids are stored as int64: refuse values outside its range (uint64 or Python
    ints beyond it) instead of wrapping or overflowing later."""
    kind = series.dtype.kind
    if kind == "i" or len(series) == 0:
        return
    if kind == "u":
        bad = series.to_numpy() > np.uint64(_INT64.max)
    else:  # object column of Python / numpy ints
        bad = np.fromiter(
            (not _INT64.min <= int(v) <= _INT64.max for v in series.tolist()), dtype=bool, count=len(series)
        )
    if bad.any():
        first = series.to_numpy()[bad][0]
        raise DataValidationError(
            f"{name} must hold integer ids within int64 [{_INT64.min}, {_INT64.max}] (or string "
            f"ids); found {int(bad.sum())} outside, e.g. {_py(first)!r}"
        )


def id_kind_of_values(values: Any, name: str) -> IdKind:
    """Return ``"int"`` or ``"str"``: the one kind of the ids in ``values``.

    Parameters
    ----------
    values : array-like, shape ``(n,)``
        Ids, none missing.
    name : str
        Name used in error messages (a column or argument name).

    Raises
    ------
    DataTypeError
        If the ids are floats, booleans, a mix of ints and strings, or anything else.
    """
    if isinstance(values, pd.Series):
        series = values
    elif isinstance(values, np.ndarray | pd.Index):
        series = pd.Series(values)
    else:
        series = pd.Series(np.asarray(list(values), dtype=object))
    if pdt.is_bool_dtype(series.dtype):
        raise DataTypeError(f"{name} must hold int or str ids; got booleans (dtype {series.dtype})")
    inferred = pdt.infer_dtype(series, skipna=False)
    if inferred == "integer":
        _check_int64(series, name)
        return "int"
    if inferred == "string":
        return "str"
    if inferred == "empty":
        raise DataValidationError(f"{name} must not be empty")
    if inferred in ("mixed-integer", "mixed", "mixed-integer-float"):
        kinds = sorted({type(_py(v)).__name__ for v in series.tolist()})
        raise DataTypeError(
            f"{name} must hold ids of one kind (all int or all str); found a mix of {kinds}"
        )
    example = _py(series.iloc[0]) if len(series) else None
    raise DataTypeError(
        f"{name} must hold int or str ids; got {inferred} values (dtype {series.dtype}), "
        f"e.g. {example!r}"
    )


def check_id_column(df: pd.DataFrame, col: str, frame: str) -> IdKind:
    """Check an id column: no missing values, all ints or all strings.

    Returns
    -------
    {"int", "str"}
        The kind of the ids.
    """
    _check_not_missing(df, col, frame)
    try:
        return id_kind_of_values(df[col], f"column {col!r} of {frame}")
    except DataTypeError as err:
        kinds = [type(_py(v)) for v in df[col].tolist()]
        bad = np.array([k is not kinds[0] for k in kinds], dtype=bool)  # rows of another kind than the first's
        if not bad.any():
            bad = np.ones(len(df), dtype=bool)
        raise DataTypeError(f"{err}; first offending row: {first_row(df, bad)}") from None


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_rating_column(df: pd.DataFrame, col: str = RATING_COL, frame: str = "ratings") -> None:
    """Check that ``df[col]`` is a real-valued, finite, non-boolean numeric column."""
    s = df[col]
    numeric = pdt.is_numeric_dtype(s.dtype) and not pdt.is_complex_dtype(s.dtype)
    if pdt.is_bool_dtype(s.dtype) or not numeric:
        raise DataTypeError(
            f"column {col!r} of {frame} must be numeric (int or float); got dtype {s.dtype}, "
            f"first row: {first_row(df, np.ones(len(df), dtype=bool))} (strings are never "
            "converted; parse them first)"
        )
    _check_not_missing(df, col, frame)
    values = s.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataValidationError(
            f"column {col!r} of {frame} must be finite; found {int(bad.sum())} inf rows, "
            f"first: {first_row(df, bad)}"
        )
    big = np.abs(values) > FLOAT32_MAX
    if big.any():
        raise DataValidationError(
            f"column {col!r} of {frame} must be finite in float32 (|value| <= {FLOAT32_MAX:.4g}, "
            f"models compute in float32); found {int(big.sum())} rows beyond, first: {first_row(df, big)}"
        )


def check_timestamp_column(
    df: pd.DataFrame, col: str = TIMESTAMP_COL, frame: str = "ratings"
) -> None:
    """Check a timestamp column: integer, float or datetime64 dtype, no missing values."""
    s = df[col]
    ok = pdt.is_datetime64_any_dtype(s.dtype) or (
        pdt.is_numeric_dtype(s.dtype) and not pdt.is_bool_dtype(s.dtype)
    )
    if not ok:
        raise DataTypeError(
            f"column {col!r} of {frame} must be integer (e.g. unix seconds) or datetime64; "
            f"got dtype {s.dtype}, first row: {first_row(df, np.ones(len(df), dtype=bool))}"
        )
    _check_not_missing(df, col, frame)
    if pdt.is_float_dtype(s.dtype):
        bad = ~np.isfinite(s.to_numpy(dtype=np.float64))
        if bad.any():
            raise DataValidationError(
                f"column {col!r} of {frame} must be finite; found {int(bad.sum())} inf rows, "
                f"first: {first_row(df, bad)}"
            )


def check_no_duplicate_pairs(df: pd.DataFrame, frame: str = "ratings") -> None:
    """Raise :class:`DataValidationError` if a (user_id, item_id) pair occurs twice."""
    dup = df.duplicated(subset=[USER_COL, ITEM_COL], keep=False).to_numpy()
    if dup.any():
        n_pairs = int(df.loc[dup, [USER_COL, ITEM_COL]].drop_duplicates().shape[0])
        raise DataValidationError(
            f"{frame} must hold each (user_id, item_id) pair at most once; found "
            f"{n_pairs} duplicated pair(s) in {int(dup.sum())} rows, first: "
            f"{first_row(df, dup)}. Merge them first, e.g. with "
            "load_interactions(..., duplicates='aggregate')"
        )


def check_title_column(df: pd.DataFrame, col: str = TITLE_COL, frame: str = "items") -> None:
    """Check that every non-missing title is a ``str``."""
    s = df[col]

    def ok(v: Any) -> bool:
        return isinstance(v, str) or v is None or (isinstance(v, float) and math.isnan(v))

    bad = ~s.map(ok).to_numpy(dtype=bool)
    if bad.any():
        raise DataTypeError(
            f"column {col!r} of {frame} must hold str titles (or missing); found "
            f"{int(bad.sum())} other rows, first: {first_row(df, bad)}"
        )


def check_categories_column(
    df: pd.DataFrame, col: str = CATEGORIES_COL, frame: str = "items"
) -> pd.Series:
    """Check that every entry is a list or tuple of ``str``; return it as lists.

    Returns
    -------
    pandas.Series of list of str, shape ``(n_rows,)``
    """

    def ok(v: Any) -> bool:
        return isinstance(v, list | tuple) and all(isinstance(c, str) for c in v)

    good = df[col].map(ok).to_numpy(dtype=bool)
    if not good.all():
        bad = ~good
        raise DataTypeError(
            f"column {col!r} of {frame} must hold a list of str per row; found "
            f"{int(bad.sum())} other rows, first: {first_row(df, bad)}"
        )
    return df[col].map(list)


# ------------------------------------------------------------------ whole tables


def validate_ratings(df: Any, frame: str = "ratings") -> pd.DataFrame:
    """Validate a tidy ratings table and return a normalised copy.

    Parameters
    ----------
    df : pandas.DataFrame, shape ``(n_interactions, n_cols)``
        Columns ``user_id``, ``item_id``, optional ``rating``, optional ``timestamp``;
        other columns are kept as they are.
    frame : str
        Name of the table in error messages.

    Returns
    -------
    pandas.DataFrame
        A copy with a fresh ``RangeIndex`` and ``rating`` (if present) as float64.

    Raises
    ------
    DataTypeError
        ``df`` is not a DataFrame, or a column has the wrong type.
    DataValidationError
        A required column is missing, an id is missing, a rating is not finite, the
        table is empty, or a (user_id, item_id) pair occurs twice.
    """
    df = require_dataframe(df, frame)
    require_columns(df, [USER_COL, ITEM_COL], frame)
    if len(df) == 0:
        raise DataValidationError(f"{frame} must not be empty; got 0 rows")
    if df.columns.duplicated().any():
        dups = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise DataValidationError(f"{frame} has duplicated column names {dups}")
    check_id_column(df, USER_COL, frame)
    check_id_column(df, ITEM_COL, frame)
    if RATING_COL in df.columns:
        check_rating_column(df, RATING_COL, frame)
    if TIMESTAMP_COL in df.columns:
        check_timestamp_column(df, TIMESTAMP_COL, frame)
    check_no_duplicate_pairs(df, frame)
    out = df.reset_index(drop=True)
    if RATING_COL in out.columns and out[RATING_COL].dtype != np.float64:
        out = out.assign(**{RATING_COL: out[RATING_COL].to_numpy(dtype=np.float64)})
    return out.copy()


def validate_items(df: Any, frame: str = "items") -> pd.DataFrame:
    """Validate an items table and return a normalised copy.

    Parameters
    ----------
    df : pandas.DataFrame, shape ``(n_items, n_cols)``
        Column ``item_id`` (unique), optional ``title`` (str), optional ``categories``
        (list or tuple of str per row); other columns are kept.

    Returns
    -------
    pandas.DataFrame
        A copy with a fresh ``RangeIndex`` and ``categories`` (if present) as lists.
    """
    df = require_dataframe(df, frame)
    require_columns(df, [ITEM_COL], frame)
    if len(df) == 0:
        raise DataValidationError(f"{frame} must not be empty; got 0 rows (pass items=None)")
    check_id_column(df, ITEM_COL, frame)
    dup = df[ITEM_COL].duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataValidationError(
            f"column 'item_id' of {frame} must be unique; found {int(dup.sum())} rows with "
            f"a repeated id, first: {first_row(df, dup)}"
        )
    if TITLE_COL in df.columns:
        check_title_column(df, TITLE_COL, frame)
    out = df.reset_index(drop=True).copy()
    if CATEGORIES_COL in out.columns:
        out[CATEGORIES_COL] = check_categories_column(out, CATEGORIES_COL, frame)
    return out


# ---------------------------------------------------------------------- arguments


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :class:`DataValidationError`."""
    if not isinstance(value, str) or value not in choices:
        raise DataValidationError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def check_real(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a finite real number (not bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataTypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise DataValidationError(f"{name} must be finite; got {value!r}")
    return float(value)


def check_fraction(name: str, value: Any) -> float:
    """Return ``value`` if it is a real number strictly between 0 and 1."""
    v = check_real(name, value)
    if not 0.0 < v < 1.0:
        raise DataValidationError(f"{name} must lie strictly between 0 and 1; got {value!r}")
    return v


def check_positive_float(name: str, value: Any, maximum: float | None = None, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real number (not bool) in ``(0, maximum]``
    (``[0, maximum]`` with ``allow_zero``); a non-number raises :class:`DataTypeError`."""
    want = f"a finite {'non-negative' if allow_zero else 'positive'} number"
    if maximum is not None:
        want = f"a float in {'[' if allow_zero else '('}0, {maximum:g}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataTypeError(f"{name} must be {want}; got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero) or (maximum is not None and v > maximum):
        raise DataValidationError(f"{name} must be {want}; got {value!r}")
    return v


def check_min_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer (not bool) in ``[minimum, maximum]``."""
    want = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataTypeError(f"{name} must be {want}; got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise DataValidationError(f"{name} must be {want}; got {value!r}")
    return int(value)


def check_int_range(name: str, value: Any, lo: int = 1) -> tuple[int, int]:
    """An int ``n`` (meaning ``(n, n)``) or a ``(low, high)`` pair with ``lo <= low <= high``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
        or not lo <= value[0] <= value[1]
    ):
        raise DataValidationError(
            f"{name} must be an int or a (low, high) pair of ints with {lo} <= low <= high; "
            f"got {value!r}"
        )
    return int(value[0]), int(value[1])


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """Return ``value`` if it is an integer (not bool), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataTypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise DataValidationError(f"{name} must be >= {minimum}; got {value!r}")
    return int(value)


def check_prob(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a real number (not bool) strictly inside (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise DataTypeError(f"{name} must be a float in (0, 1); got {type(value).__name__} {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise DataValidationError(f"{name} must be a float in (0, 1); got {value!r}")
    return float(value)


def as_id_list(ids: Any, name: str) -> np.ndarray:
    """One id or a 1-d sequence of ids as a non-empty object array (``name`` in errors)."""
    if ids is None:
        raise DataValidationError(f"{name} must be an id or a 1-d sequence of ids; got None")
    if isinstance(ids, (str, bytes)) or np.isscalar(ids):
        ids = [ids]
    if isinstance(ids, (pd.Series, pd.Index)):
        ids = ids.to_numpy()
    try:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=object)
    except (TypeError, ValueError) as exc:  # not iterable, or ragged
        raise DataTypeError(
            f"{name} must be an id or a 1-d sequence of ids; got {type(ids).__name__}"
        ) from exc
    if arr.ndim != 1:
        raise DataValidationError(f"{name} must be an id or a 1-d sequence of ids; got shape {arr.shape}")
    if arr.size == 0:
        raise DataValidationError(f"{name} must hold at least one id; got none")
    return arr
