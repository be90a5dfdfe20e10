"""Load interaction and item tables from DataFrames, CSV/TSV or Parquet files.

Both loaders return tidy frames with the standard column names (``user_id``,
``item_id``, ``rating``, ``timestamp``; ``item_id``, ``title``, ``categories``) and
validate them as :class:`~bayes_persona.data.dataset.Dataset` does.

Ids read from text files stay external: a column whose every value is a canonical
integer literal (``"42"``, not ``"042"``) becomes int64, any other id column stays str,
so ``"007"`` is never turned into ``7``.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from bayes_persona.data._validation import (
    CATEGORIES_COL,
    ITEM_COL,
    RATING_COL,
    TIMESTAMP_COL,
    TITLE_COL,
    USER_COL,
    check_choice,
    check_id_column,
    check_rating_column,
    check_timestamp_column,
    first_row,
    validate_items,
    validate_ratings,
)
from bayes_persona.exceptions import DatasetNotFoundError, DataTypeError, DataValidationError

__all__ = ["load_interactions", "load_items", "DUPLICATE_POLICIES"]

logger = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("raise", "aggregate")
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zip", ".zst"}
_SNIFF_BYTES = 64 * 1024
_INT_LITERAL = r"-?(?:0|[1-9][0-9]*)"

Source = pd.DataFrame | str | os.PathLike


# ------------------------------------------------------------------ file reading


def _as_path(source: Any, arg: str = "source") -> Path:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise DatasetNotFoundError(f"{arg}: no such file: {str(path)!r}")
        return path
    raise DataTypeError(
        f"{arg} must be a pandas DataFrame or a path (str or os.PathLike); "
        f"got {type(source).__name__}"
    )


def _format_suffix(path: Path) -> str:
    """Lower-case extension of ``path`` ignoring a compression suffix (``a.csv.gz`` -> ``.csv``)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _sniff_sep(path: Path, encoding: str) -> str:
    if _format_suffix(path) != path.suffix.lower():
        raise DataValidationError(
            f"sep: cannot sniff the separator of compressed file {str(path)!r}; pass sep"
        )
    with path.open("r", encoding=encoding, errors="replace", newline="") as fh:
        sample = fh.read(_SNIFF_BYTES)
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        raise DataValidationError(
            f"sep: could not detect the column separator of {str(path)!r} (extension "
            f"{path.suffix!r} is neither .csv nor .tsv); pass sep explicitly"
        ) from None
    logger.debug("sniffed separator %r for %s", sep, path)
    return sep


def _resolve_sep(path: Path, sep: str | None, encoding: str) -> str:
    if sep is not None:
        if not isinstance(sep, str) or sep == "":
            raise DataValidationError(f"sep must be a non-empty str or None; got {sep!r}")
        return sep
    ext = _format_suffix(path)
    if ext in (".tsv", ".tab"):
        return "\t"
    if ext == ".csv":
        return ","
    return _sniff_sep(path, encoding)


def _parse_ids(series: pd.Series) -> pd.Series:
    """Turn a str id column into int64 when every value is a canonical int literal."""
    if not (pd.api.types.is_string_dtype(series.dtype) or series.dtype == object):
        return series
    if series.isna().any():
        return series  # validation reports it
    if series.dtype == object and not series.map(lambda v: isinstance(v, str)).all():
        return series
    if not series.str.fullmatch(_INT_LITERAL).all():
        return series
    parsed = pd.to_numeric(series, errors="coerce")  # all canonical int literals here
    if parsed.dtype != np.int64:  # beyond the int64 range: keep the text
        return series
    return parsed


def _read_file(
    path: Path,
    sep: str | None,
    str_cols: Sequence[str],
    encoding: str,
) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet file; ``str_cols`` are read as text (ids, titles, categories).

    Any failure of the reader on the file's contents (empty file, corrupt Parquet or gzip,
    unknown encoding) becomes a :class:`DataValidationError` naming the file.
    """
    try:
        return _read_file_unchecked(path, sep, str_cols, encoding)
    except (DataValidationError, FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (OSError, ValueError, LookupError, EOFError) as err:
        raise DataValidationError(
            f"source: could not read {str(path)!r} as a {_format_suffix(path) or 'text'} table "
            f"(encoding={encoding!r}): {err.__class__.__name__}: {err}"
        ) from err


def _read_file_unchecked(
    path: Path,
    sep: str | None,
    str_cols: Sequence[str],
    encoding: str,
) -> pd.DataFrame:
    if _format_suffix(path) == ".parquet":
        if sep is not None:
            logger.debug("sep=%r ignored for parquet file %s", sep, path)
        return pd.read_parquet(path)
    resolved = _resolve_sep(path, sep, encoding)
    dtype = dict.fromkeys(str_cols, str)
    try:
        return pd.read_csv(path, sep=resolved, dtype=dtype, encoding=encoding)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataValidationError(
            f"could not parse {str(path)!r} with sep={resolved!r}, encoding={encoding!r}: {err}"
        ) from err


def _select(
    df: pd.DataFrame, mapping: dict[str, str], arg_of: dict[str, str], where: str
) -> pd.DataFrame:
    """Rename source columns to standard names, keeping only those columns."""
    for src, arg in arg_of.items():
        if src not in df.columns:
            raise DataValidationError(
                f"{arg}={src!r} is not a column of {where}; its columns are "
                f"{list(map(str, df.columns))}"
            )
    return df.loc[:, list(mapping)].rename(columns=mapping)


def _check_col_args(args: dict[str, Any]) -> None:
    given = {k: v for k, v in args.items() if v is not None}
    for arg, value in given.items():
        if not isinstance(value, str):
            raise DataTypeError(f"{arg} must be a str column name; got {type(value).__name__}")
    seen: dict[str, str] = {}
    for arg, value in given.items():
        if value in seen:
            raise DataValidationError(
                f"{arg} and {seen[value]} name the same column {value!r}; each must be distinct"
            )
        seen[value] = arg


# ------------------------------------------------------------------ interactions


def _aggregate_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Merge repeated (user, item) rows: mean rating, last (largest) timestamp."""
    keys = [USER_COL, ITEM_COL]
    n_before = len(df)
    if not df.duplicated(subset=keys).any():
        return df
    agg: dict[str, str] = {}
    if RATING_COL in df.columns:
        agg[RATING_COL] = "mean"
    if TIMESTAMP_COL in df.columns:
        agg[TIMESTAMP_COL] = "max"
    if agg:
        out = df.groupby(keys, sort=False, as_index=False).agg(agg)
    else:
        out = df.drop_duplicates(subset=keys)
    logger.info(
        "duplicates='aggregate': merged %d rows into %d (user_id, item_id) pairs",
        n_before,
        len(out),
    )
    return out[list(df.columns)]


def load_interactions(
    source: Source,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str | None = None,
    duplicates: Literal["raise", "aggregate"] = "raise",
    *,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Load an interaction table into a tidy, validated ratings DataFrame.

    Parameters
    ----------
    source : pandas.DataFrame or path-like
        A frame, or a file with a header row: ``.csv`` (comma), ``.tsv``/``.tab``
        (tab), ``.parquet``, optionally compressed (``.csv.gz``); for any other
        extension pass ``sep`` or let it be sniffed.
    user_col, item_col : str
        Source columns holding user and item ids.
    rating_col : str or None
        Source column of ratings (numeric; strings are an error, never parsed). ``None``
        means implicit feedback.
    timestamp_col : str or None
        Source column of timestamps (integer, float or datetime64).
    sep : str or None
        Column separator; overrides the one implied by the extension.
    duplicates : {"raise", "aggregate"}
        What to do with repeated (user, item) pairs: ``"raise"`` a
        :class:`DataValidationError` showing one, or ``"aggregate"`` them into one row
        with the mean rating and the last (largest) timestamp.
    encoding : str, default "utf-8"
        Text encoding of CSV/TSV files.

    Returns
    -------
    pandas.DataFrame, shape ``(n_interactions, 2..4)``
        Columns ``user_id``, ``item_id``, then ``rating`` (float64) and ``timestamp``
        when asked for, with a ``RangeIndex``.

    Raises
    ------
    DatasetNotFoundError
        ``source`` is a path to no file.
    DataTypeError
        ``source`` is neither a frame nor a path, or a column has the wrong type.
    DataValidationError
        A named column is absent, a value is invalid, the table is empty, or a
        (user, item) pair repeats with ``duplicates="raise"``.
    """
    _check_col_args(
        {
            "user_col": user_col,
            "item_col": item_col,
            "rating_col": rating_col,
            "timestamp_col": timestamp_col,
        }
    )
    check_choice("duplicates", duplicates, DUPLICATE_POLICIES)
    arg_of = {user_col: "user_col", item_col: "item_col"}
    mapping = {user_col: USER_COL, item_col: ITEM_COL}
    if rating_col is not None:
        arg_of[rating_col], mapping[rating_col] = "rating_col", RATING_COL
    if timestamp_col is not None:
        arg_of[timestamp_col], mapping[timestamp_col] = "timestamp_col", TIMESTAMP_COL

    if isinstance(source, pd.DataFrame):
        where = "the source DataFrame"
        df = _select(source, mapping, arg_of, where)
    else:
        path = _as_path(source)
        where = repr(str(path))
        raw = _read_file(path, sep, [user_col, item_col], encoding)
        df = _select(raw, mapping, arg_of, where)
        df[USER_COL] = _parse_ids(df[USER_COL])
        df[ITEM_COL] = _parse_ids(df[ITEM_COL])
        logger.info("read %d rows from %s", len(df), path)

    frame = f"interactions from {where}"
    if len(df) == 0:
        raise DataValidationError(f"{frame} must not be empty; got 0 rows")
    check_id_column(df, USER_COL, frame)
    check_id_column(df, ITEM_COL, frame)
    if RATING_COL in df.columns:
        check_rating_column(df, RATING_COL, frame)
    if TIMESTAMP_COL in df.columns:
        check_timestamp_column(df, TIMESTAMP_COL, frame)
    if duplicates == "aggregate":
        df = _aggregate_duplicates(df)
    return validate_ratings(df, frame)


# ------------------------------------------------------------------------ items


def _split_categories(df: pd.DataFrame, sep: str, where: str) -> pd.Series:
    """Turn a column of ``sep``-joined strings (or lists) into lists of str."""

    def parse(v: Any) -> list[str] | None:
        if isinstance(v, str):
            return [c.strip() for c in v.split(sep) if c.strip()]
        if isinstance(v, list | tuple | np.ndarray):
            return list(v) if all(isinstance(c, str) for c in v) else None
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return []
        return None

    parsed = df[CATEGORIES_COL].map(parse)
    bad = parsed.isna().to_numpy()
    if bad.any():
        raise DataTypeError(
            f"column 'categories' of {where} must hold {sep!r}-separated str or lists of "
            f"str; found {int(bad.sum())} other rows, first: {first_row(df, bad)}"
        )
    return parsed


def load_items(
    source: Source,
    item_col: str = "item_id",
    title_col: str | None = None,
    categories_col: str | None = None,
    categories_sep: str = "|",
    *,
    sep: str | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Load an item table into a tidy, validated items DataFrame.

    Parameters
    ----------
    source : pandas.DataFrame or path-like
        A frame, or a CSV/TSV/Parquet file with a header row (see
        :func:`load_interactions`).
    item_col : str
        Source column of item ids (unique).
    title_col : str or None
        Source column of titles (read as text, so ``"1984"`` stays a string).
    categories_col : str or None
        Source column of categories: strings joined by ``categories_sep`` (an empty
        string or a missing value gives ``[]``) or lists of str.
    categories_sep : str, default "|"
        Separator inside a categories string.
    sep : str or None
        Column separator of a text file (see :func:`load_interactions`).
    encoding : str, default "utf-8"
        Text encoding of CSV/TSV files.

    Returns
    -------
    pandas.DataFrame, shape ``(n_items, 1..3)``
        Columns ``item_id``, then ``title`` and ``categories`` (a list of str per row)
        when asked for.

    Raises
    ------
    DatasetNotFoundError, DataTypeError, DataValidationError
        As in :func:`load_interactions`; also for a repeated item id.
    """
    _check_col_args(
        {"item_col": item_col, "title_col": title_col, "categories_col": categories_col}
    )
    if not isinstance(categories_sep, str) or categories_sep == "":
        raise DataValidationError(f"categories_sep must be a non-empty str; got {categories_sep!r}")
    arg_of = {item_col: "item_col"}
    mapping = {item_col: ITEM_COL}
    if title_col is not None:
        arg_of[title_col], mapping[title_col] = "title_col", TITLE_COL
    if categories_col is not None:
        arg_of[categories_col], mapping[categories_col] = "categories_col", CATEGORIES_COL

    if isinstance(source, pd.DataFrame):
        where = "the source DataFrame"
        df = _select(source, mapping, arg_of, where)
    else:
        path = _as_path(source)
        where = repr(str(path))
        raw = _read_file(path, sep, list(mapping), encoding)
        df = _select(raw, mapping, arg_of, where)
        df[ITEM_COL] = _parse_ids(df[ITEM_COL])
        logger.info("read %d items from %s", len(df), path)

    frame = f"items from {where}"
    if CATEGORIES_COL in df.columns:
        df[CATEGORIES_COL] = _split_categories(df, categories_sep, frame)
    return validate_items(df, frame)
