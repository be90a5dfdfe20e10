"""MovieLens loaders: 100K, 1M, 20M, 25M and latest-small, with checked downloads.

The GroupLens zips are downloaded only when asked for (``download=True``) and only when
the unpacked folder is absent; each zip is checked against a pinned sha256 before it is
unpacked, and unpacking is atomic (a temporary folder inside ``data_home`` is moved into
place with :func:`os.replace`), so an interrupted download never leaves a half folder.

References
----------
.. [1] F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context",
   ACM Transactions on Interactive Intelligent Systems 5(4), 19:1-19:19, 2015.
   https://doi.org/10.1145/2827872

Notes
-----
The MovieLens licence allows research use and forbids redistribution: the files are
never shipped with this package; a user downloads them from GroupLens.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_persona.data._validation import (
    CATEGORIES_COL,
    ITEM_COL,
    RATING_COL,
    TIMESTAMP_COL,
    TITLE_COL,
    USER_COL,
)
from bayes_persona.data.dataset import Dataset
from bayes_persona.exceptions import (
    BayesPersonaError,
    ChecksumError,
    DatasetNotFoundError,
    DataTypeError,
    DataValidationError,
)

__all__ = [
    "MOVIELENS_VARIANTS",
    "MOVIELENS_SHA256",
    "default_data_home",
    "movielens_url",
    "download_movielens",
    "load_movielens",
]

logger = logging.getLogger(__name__)

MOVIELENS_VARIANTS: tuple[str, ...] = ("100k", "1m", "20m", "25m", "latest-small")

BASE_URL = "https://files.grouplens.org/datasets/movielens/"

# sha256 of the official zips. Source: the checksums TensorFlow Datasets registers for
# the same URLs (tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt),
# which it checks on every download. A value of None means "not pinned": the download
# is then used with a logged warning that it could not be verified.
MOVIELENS_SHA256: dict[str, str | None] = {
    "100k": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    "1m": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    "20m": "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    "25m": "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
    # "latest" releases are re-issued by GroupLens from time to time (this hash is the
    # September 2018 release); a re-issue makes the check fail loudly with ChecksumError.
    "latest-small": "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
}

_REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "100k": ("u.data", "u.item", "u.genre"),
    "1m": ("ratings.dat", "movies.dat"),
    "20m": ("ratings.csv", "movies.csv"),
    "25m": ("ratings.csv", "movies.csv"),
    "latest-small": ("ratings.csv", "movies.csv"),
}

_NO_GENRES = "(no genres listed)"
_CHUNK = 1 << 20

Fetch = Callable[[str, Path], None]


# ------------------------------------------------------------------------ paths


def _check_variant(variant: object) -> str:
    if not isinstance(variant, str) or variant not in MOVIELENS_VARIANTS:
        raise DataValidationError(
            f"variant must be one of {list(MOVIELENS_VARIANTS)}; got {variant!r}"
        )
    return variant


def _folder_name(variant: str) -> str:
    return f"ml-{variant}"


def movielens_url(variant: str) -> str:
    """URL of the official GroupLens zip of ``variant``."""
    return f"{BASE_URL}{_folder_name(_check_variant(variant))}.zip"


def default_data_home() -> Path:
    """Folder that holds the unpacked datasets when no ``data_home`` is given.

    ``$BAYES_PERSONA_DATA`` if set, else ``$XDG_CACHE_HOME/bayes_persona``, else
    ``~/.cache/bayes_persona``.
    """
    env = os.environ.get("BAYES_PERSONA_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "bayes_persona"


def _resolve_home(data_home: str | os.PathLike | None) -> Path:
    if data_home is None:
        return default_data_home()
    if not isinstance(data_home, str | os.PathLike):
        raise DataTypeError(
            f"data_home must be a path (str or os.PathLike) or None; got {type(data_home).__name__}"
        )
    return Path(data_home).expanduser()


def _missing_files(folder: Path, variant: str) -> list[str]:
    return [f for f in _REQUIRED_FILES[variant] if not (folder / f).is_file()]


# --------------------------------------------------------------------- download


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to the file ``dest`` with :mod:`urllib` (the default fetcher)."""
    logger.info("downloading %s", url)
    request = urllib.request.Request(url, headers={"User-Agent": "bayes_persona"})
    with urllib.request.urlopen(request, timeout=60) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, variant: str, url: str) -> None:
    expected = MOVIELENS_SHA256.get(variant)
    actual = _sha256(path)
    if expected is None:
        logger.warning(
            "no pinned sha256 for MovieLens %s: the download from %s (sha256 %s) "
            "cannot be verified",
            variant,
            url,
            actual,
        )
        return
    if actual != expected:
        raise ChecksumError(
            f"sha256 of {url} does not match the pinned checksum for variant {variant!r}: "
            f"expected {expected}, got {actual}; the file was discarded"
        )
    logger.info("sha256 of %s verified", url)


def _safe_extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest``, refusing members that would land outside it."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (root / member).resolve()
            if target != root and root not in target.parents:
                raise DataValidationError(
                    f"zip member {member!r} of {archive.name} would unpack outside {root}"
                )
        zf.extractall(root)


def download_movielens(
    variant: str,
    data_home: str | os.PathLike | None = None,
    *,
    fetch: Fetch | None = None,
) -> Path:
    """Download and unpack MovieLens ``variant`` into ``data_home`` unless it is there.

    Parameters
    ----------
    variant : {"100k", "1m", "20m", "25m", "latest-small"}
    data_home : path-like or None
        Folder that holds ``ml-<variant>/``; ``None`` uses :func:`default_data_home`.
    fetch : callable ``(url, dest_path) -> None`` or None
        Downloads ``url`` to the file ``dest_path``; ``None`` uses :mod:`urllib`.

    Returns
    -------
    pathlib.Path
        The unpacked folder ``data_home / "ml-<variant>"``.

    Raises
    ------
    ChecksumError
        The zip does not match its pinned sha256 (nothing is unpacked).
    DatasetNotFoundError
        The folder exists but lacks files (it is never overwritten), or the zip does not
        hold them.
    DataValidationError
        ``variant`` is unknown.
    """
    variant = _check_variant(variant)
    home = _resolve_home(data_home)
    name = _folder_name(variant)
    folder = home / name
    if folder.exists():
        missing = _missing_files(folder, variant)
        if not missing:
            return folder
        raise DatasetNotFoundError(
            f"MovieLens {variant} folder {str(folder)!r} exists but lacks {missing}; "
            "remove or repair it to download again (it is never overwritten)"
        )
    fetch = _fetch if fetch is None else fetch
    url = movielens_url(variant)
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=home))
    try:
        archive = tmp / f"{name}.zip"
        fetch(url, archive)
        _verify(archive, variant, url)
        unpacked = tmp / "unpacked"
        unpacked.mkdir()
        _safe_extract(archive, unpacked)
        source = unpacked / name
        missing = _missing_files(source, variant)
        if missing:
            raise DatasetNotFoundError(
                f"the zip from {url} lacks {missing} under {name}/; found top-level entries "
                f"{sorted(p.name for p in unpacked.iterdir())}"
            )
        try:
            os.replace(source, folder)
        except OSError:
            if folder.exists() and not _missing_files(folder, variant):
                logger.info("%s appeared meanwhile (another process); using it", folder)
            else:
                raise
        logger.info("unpacked MovieLens %s into %s", variant, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ------------------------------------------------------------------------ readers


def _parse_error(path: Path, err: Exception) -> DataValidationError:
    return DataValidationError(f"could not parse MovieLens file {str(path)!r}: {err}")


def _read_100k_genres(path: Path) -> list[str]:
    """Genre names of ``u.genre`` (``name|index`` lines) in index order."""
    pairs: list[tuple[int, str]] = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        name, sep, idx = line.rpartition("|")
        if not sep or not idx.strip().isdigit():
            raise DataValidationError(f"{str(path)!r}: expected lines 'name|index', got {line!r}")
        pairs.append((int(idx), name))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise DataValidationError(
            f"{str(path)!r}: genre indices must be 0..{len(pairs) - 1}; got {[i for i, _ in pairs]}"
        )
    return [name for _, name in pairs]


def _read_100k(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = pd.read_csv(
        folder / "u.data",
        sep="\t",
        header=None,
        names=[USER_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL],
        dtype={
            USER_COL: np.int64,
            ITEM_COL: np.int64,
            RATING_COL: np.float64,
            TIMESTAMP_COL: np.int64,
        },
    )
    genres = _read_100k_genres(folder / "u.genre")
    raw = pd.read_csv(
        folder / "u.item",
        sep="|",
        header=None,
        encoding="latin-1",
        quoting=csv.QUOTE_NONE,
        dtype=str,
        keep_default_na=False,
    )
    expected = 5 + len(genres)
    if raw.shape[1] != expected:
        raise DataValidationError(
            f"{str(folder / 'u.item')!r}: expected {expected} '|'-separated fields "
            f"(id|title|release|video_release|url| + {len(genres)} genre flags from u.genre); "
            f"got {raw.shape[1]}"
        )
    flags = raw.iloc[:, 5:].astype(np.int64).to_numpy()
    if not np.isin(flags, (0, 1)).all():
        raise DataValidationError(f"{str(folder / 'u.item')!r}: genre flags must be 0 or 1")
    names = np.array(genres, dtype=object)
    items = pd.DataFrame(
        {
            ITEM_COL: raw.iloc[:, 0].astype(np.int64).to_numpy(),
            TITLE_COL: raw.iloc[:, 1].astype(str).to_numpy(dtype=object),
            CATEGORIES_COL: [names[row.astype(bool)].tolist() for row in flags],
        }
    )
    return ratings, items


def _read_1m(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    # "u::i::r::t" read with the fast C parser as ":"-separated with empty fields between.
    ratings = pd.read_csv(
        folder / "ratings.dat",
        sep=":",
        header=None,
        names=[USER_COL, "_a", ITEM_COL, "_b", RATING_COL, "_c", TIMESTAMP_COL],
        usecols=[USER_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL],
        dtype={
            USER_COL: np.int64,
            ITEM_COL: np.int64,
            RATING_COL: np.float64,
            TIMESTAMP_COL: np.int64,
        },
    )[[USER_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL]]
    path = folder / "movies.dat"
    ids, titles, cats = [], [], []
    for n, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        head, sep1, rest = line.partition("::")
        title, sep2, genres = rest.rpartition("::")
        if not (sep1 and sep2) or not head.strip().isdigit():
            raise DataValidationError(
                f"{str(path)!r} line {n}: expected 'id::title::genres', got {line!r}"
            )
        ids.append(int(head))
        titles.append(title)
        cats.append(_split_genres(genres))
    items = pd.DataFrame(
        {ITEM_COL: np.array(ids, dtype=np.int64), TITLE_COL: titles, CATEGORIES_COL: cats}
    )
    return ratings, items


def _split_genres(text: str) -> list[str]:
    text = text.strip()
    if text in ("", _NO_GENRES):
        return []
    return [g for g in text.split("|") if g]


def _read_csv_layout(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = pd.read_csv(
        folder / "ratings.csv",
        usecols=["userId", "movieId", "rating", "timestamp"],
        dtype={
            "userId": np.int64,
            "movieId": np.int64,
            "rating": np.float64,
            "timestamp": np.int64,
        },
    ).rename(columns={"userId": USER_COL, "movieId": ITEM_COL})
    ratings = ratings[[USER_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL]]
    raw = pd.read_csv(
        folder / "movies.csv",
        usecols=["movieId", "title", "genres"],
        dtype={"movieId": np.int64, "title": str, "genres": str},
        keep_default_na=False,
        encoding="utf-8",
    )
    items = pd.DataFrame(
        {
            ITEM_COL: raw["movieId"].to_numpy(),
            TITLE_COL: raw["title"].to_numpy(dtype=object),
            CATEGORIES_COL: [_split_genres(g) for g in raw["genres"]],
        }
    )
    return ratings, items


_READERS = {
    "100k": _read_100k,
    "1m": _read_1m,
    "20m": _read_csv_layout,
    "25m": _read_csv_layout,
    "latest-small": _read_csv_layout,
}


# -------------------------------------------------------------------------- load


def load_movielens(
    variant: str,
    data_home: str | os.PathLike | None = None,
    download: bool = True,
) -> Dataset:
    """Load a MovieLens release as a :class:`Dataset` with ratings and genres.

    Parameters
    ----------
    variant : {"100k", "1m", "20m", "25m", "latest-small"}
    data_home : path-like or None
        Folder holding the unpacked ``ml-100k/``, ``ml-1m/``, ``ml-20m/``, ``ml-25m/``
        or ``ml-latest-small/``; ``None`` uses :func:`default_data_home`
        (``$BAYES_PERSONA_DATA``, else the user cache folder).
    download : bool, default True
        Download (with a sha256 check) and unpack the official zip if the folder is
        absent.

    Returns
    -------
    Dataset
        ``ratings``: ``user_id``, ``item_id`` (int64, as in the files), ``rating``
        (float64), ``timestamp`` (int64, unix seconds). ``items``: ``item_id``,
        ``title`` (str; latin-1 decoded for 100K and 1M), ``categories`` (list of genre
        names; ML-100K keeps its ``"unknown"`` genre where flagged; ``"(no genres
        listed)"`` becomes ``[]``). ``name`` is ``"ml-<variant>"``.

    Raises
    ------
    DataValidationError
        ``variant`` is unknown (the message lists the valid ones) or a file is malformed.
    DatasetNotFoundError
        The files are absent and ``download`` is False (the message names the folder).
    ChecksumError
        The downloaded zip does not match its pinned sha256.

    Examples
    --------
    >>> ds = load_movielens("100k")  # doctest: +SKIP
    >>> ds.n_users, ds.n_items, ds.n_interactions  # doctest: +SKIP
    (943, 1682, 100000)
    """
    variant = _check_variant(variant)
    if not isinstance(download, bool):
        raise DataTypeError(f"download must be a bool; got {type(download).__name__}")
    home = _resolve_home(data_home)
    folder = home / _folder_name(variant)
    missing = _missing_files(folder, variant)
    if missing:
        if not download:
            raise DatasetNotFoundError(
                f"MovieLens {variant} not found: looked in {str(folder)!r} for "
                f"{list(_REQUIRED_FILES[variant])}, missing {missing}. Pass download=True, "
                f"or set data_home / $BAYES_PERSONA_DATA to the folder holding "
                f"{_folder_name(variant)}/"
            )
        folder = download_movielens(variant, home)
    logger.info("loading MovieLens %s from %s", variant, folder)
    try:
        ratings, items = _READERS[variant](folder)
    except BayesPersonaError:
        raise
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise _parse_error(folder, err) from err
    return Dataset(ratings=ratings, items=items, name=_folder_name(variant))
