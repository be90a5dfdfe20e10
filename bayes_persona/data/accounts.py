"""Synthetic shared accounts: pairs of real users merged into one account.

The test bed of the shared-account attribution benchmark
(:mod:`bayes_persona.bench.accounts`): two people's interactions pooled under one
account id, with the truth (who chose which item) kept aside, so that a method's guess
of "which person of the account chose this item" can be scored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayes_persona.data._validation import (
    ITEM_COL,
    USER_COL,
    check_int,
    id_kind_of_values,
    validate_ratings,
)
from bayes_persona.data.dataset import Dataset
from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = ["MergedAccounts", "merge_accounts"]

logger = logging.getLogger(__name__)

ACCOUNT_COL = "account_id"


@dataclass(frozen=True, eq=False)
class MergedAccounts:
    """The result of :func:`merge_accounts`.

    Attributes
    ----------
    interactions : pandas.DataFrame, shape ``(n_rows, n_cols)``
        The input's columns (``user_id``, ``item_id`` and any others, e.g. ``timestamp``).
        First every row of the users who were not paired, unchanged and in input order;
        then the accounts' rows, account by account (person A's rows, then person B's,
        each in input order) with ``user_id`` replaced by the account id. The index is a
        fresh ``RangeIndex``.
    membership : pandas.DataFrame, shape ``(n_account_rows, 4)``
        The truth of the account rows, in the same order as they appear at the end of
        ``interactions``: ``account_id``, ``item_id``, ``person_id`` (the original user
        id) and ``person`` (``"A"`` or ``"B"``).
    pairs : pandas.DataFrame, shape ``(n_pairs, 6)``
        One row per account: ``account_id``, ``person_a``, ``person_b`` (original user
        ids), ``n_shared`` (items both chose, dropped from the account), ``n_a`` and
        ``n_b`` (rows of A and of B kept in the account).
    balanced : bool
        Whether the heavier person was subsampled to the lighter one's count.
    seed : int
        The seed that drew the pairs and the subsamples.
    """

    interactions: pd.DataFrame = field(repr=False)
    membership: pd.DataFrame = field(repr=False)
    pairs: pd.DataFrame = field(repr=False)
    balanced: bool = True
    seed: int = 0

    @property
    def account_ids(self) -> np.ndarray:
        """The account ids, shape ``(n_pairs,)``."""
        return self.pairs[ACCOUNT_COL].to_numpy()

    def __repr__(self) -> str:
        return (
            f"MergedAccounts({len(self.pairs)} accounts, {len(self.membership)} account rows, "
            f"{len(self.interactions)} rows in all, balanced={self.balanced}, seed={self.seed})"
        )


def _interactions(data: Any) -> pd.DataFrame:
    if isinstance(data, Dataset):
        return data.ratings.reset_index(drop=True)
    if isinstance(data, pd.DataFrame):
        return validate_ratings(data, "data")
    raise DataTypeError(
        "merge_accounts: data must be a Dataset or an interactions DataFrame with columns "
        f"user_id, item_id; got {type(data).__name__}"
    )


def _account_ids(users: pd.Series, n: int) -> np.ndarray:
    """``n`` new ids that clash with no id in ``users``, of the same kind and dtype."""
    if id_kind_of_values(users, "column 'user_id' of data") == "int":
        start = int(users.max()) + 1
        return np.arange(start, start + n).astype(users.dtype)
    existing = set(users.tolist())
    prefix = "account"
    while True:
        ids = [f"{prefix}{j}" for j in range(n)]
        if existing.isdisjoint(ids):
            return np.asarray(ids, dtype=object)
        prefix = "_" + prefix


def merge_accounts(
    data: Any,
    n_pairs: int = 150,
    min_items: int = 20,
    balanced: bool = True,
    seed: int = 0,
) -> MergedAccounts:
    """Merge random pairs of users into shared accounts, keeping who chose what.

    Users with at least ``min_items`` interactions are eligible; ``2 * n_pairs`` distinct
    eligible users are drawn at random and paired in the order drawn (the first two form
    account 0, and so on; the first of each pair is person ``"A"``). Each pair becomes one
    account holding the items that exactly one of the two chose: items both chose are
    dropped, since they belong to neither alone. With ``balanced=True`` the heavier person
    is then subsampled (without replacement) to the lighter one's count, so that the
    share of the account's items carries no information about who chose an item.

    Cost ``O(n_rows + n_pairs * m log m)`` with ``m`` the largest number of interactions
    of a paired user.

    Parameters
    ----------
    data : Dataset or pandas.DataFrame, shape ``(n_rows, n_cols)``
        Implicit (e.g. binarised) interactions with ``user_id``, ``item_id`` and
        optionally other columns (``rating``, ``timestamp``, ...), which are carried
        along. Each (user, item) pair at most once.
    n_pairs : int, default 150
        Number of accounts, at least 1 and at most half the number of eligible users.
    min_items : int, default 20
        Interactions a user needs to be eligible, at least 1.
    balanced : bool, default True
        Subsample the heavier person of each pair to the lighter one's count (after
        dropping shared items).
    seed : int, default 0
        Seed (non-negative) of a :func:`numpy.random.default_rng` that draws the pairs,
        then the subsamples.

    Returns
    -------
    MergedAccounts
        ``interactions`` (the new interactions table; account ids are new: for int user
        ids ``max(user_id) + 1 + j`` in the user column's dtype, for str ids
        ``f"account{j}"``, prefixed with ``_`` until no existing id clashes),
        ``membership`` (the truth of every account row) and ``pairs``.

    Raises
    ------
    DataValidationError
        ``n_pairs < 1``, ``min_items < 1``, ``seed < 0``, or fewer than ``2 * n_pairs``
        users have ``min_items`` interactions; or ``data`` fails the ratings checks.
    DataTypeError
        ``data`` is neither a Dataset nor a DataFrame, an argument is not an int, or
        ``balanced`` is not a bool.

    Notes
    -----
    When one person's items are all among the other's, that person keeps no row in the
    account (and with ``balanced=True`` neither does the other, so the account is empty).
    Such accounts keep their row in ``pairs`` (``n_a == 0`` or ``n_b == 0``) and a warning
    is logged; with ``min_items=20`` on MovieLens this is very rare.

    References
    ----------
    .. [1] Zhang, A., Fawaz, N., Ioannidis, S. and Montanari, A. (2012). Guess who rated
       this movie: identifying users through subspace clustering. UAI 2012.
    .. [2] Verstrepen, K. and Goethals, B. (2015). Top-N recommendation for shared
       accounts. RecSys 2015.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user_id": [1] * 3 + [2] * 3, "item_id": [10, 11, 12, 12, 13, 14]})
    >>> merged = merge_accounts(df, n_pairs=1, min_items=3)
    >>> sorted(merged.interactions["item_id"].tolist())
    [10, 11, 13, 14]
    >>> merged.interactions["user_id"].unique().tolist()
    [3]
    """
    n_pairs = check_int("n_pairs", n_pairs, minimum=1)
    min_items = check_int("min_items", min_items, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(balanced, bool | np.bool_):
        raise DataTypeError(f"balanced must be a bool; got {type(balanced).__name__} {balanced!r}")
    ratings = _interactions(data)
    users = ratings[USER_COL]
    counts = users.value_counts(sort=False)
    eligible = np.sort(counts.index[counts.to_numpy() >= min_items].to_numpy())
    if 2 * n_pairs > len(eligible):
        raise DataValidationError(
            f"n_pairs must be at most {len(eligible) // 2} (half the {len(eligible)} users with "
            f"at least min_items={min_items} interactions); got {n_pairs}"
        )
    rng = np.random.default_rng(seed)
    drawn = eligible[rng.choice(len(eligible), size=2 * n_pairs, replace=False)]
    person_a, person_b = drawn[0::2], drawn[1::2]
    account = _account_ids(users, n_pairs)

    rows_of = users.groupby(users, sort=False).indices  # user -> row positions, sorted
    items = ratings[ITEM_COL].to_numpy()
    rows, acc, pid, who, summary = [], [], [], [], []
    for j in range(n_pairs):
        ra, rb = rows_of[person_a[j]], rows_of[person_b[j]]
        shared = np.intersect1d(items[ra], items[rb])
        ra = ra[~np.isin(items[ra], shared)]
        rb = rb[~np.isin(items[rb], shared)]
        if balanced:
            n = min(len(ra), len(rb))
            if len(ra) > n:
                ra = np.sort(rng.choice(ra, size=n, replace=False))
            elif len(rb) > n:
                rb = np.sort(rng.choice(rb, size=n, replace=False))
        for label, person, r in (("A", person_a[j], ra), ("B", person_b[j], rb)):
            rows.append(r)
            acc += [account[j]] * len(r)
            pid += [person] * len(r)
            who += [label] * len(r)
        summary.append((account[j], person_a[j], person_b[j], len(shared), len(ra), len(rb)))

    account_rows = np.concatenate(rows)
    merged_rows = ratings.iloc[account_rows].reset_index(drop=True)
    merged_rows[USER_COL] = pd.Series(acc, dtype=users.dtype)
    kept = ratings.loc[~users.isin(drawn).to_numpy()]
    interactions = pd.concat([kept, merged_rows], ignore_index=True)
    membership = pd.DataFrame(
        {
            ACCOUNT_COL: pd.Series(acc, dtype=users.dtype),
            ITEM_COL: items[account_rows],
            "person_id": pd.Series(pid, dtype=users.dtype),
            "person": pd.Series(who, dtype=object),
        }
    )
    pairs = pd.DataFrame(
        summary, columns=[ACCOUNT_COL, "person_a", "person_b", "n_shared", "n_a", "n_b"]
    )
    for col in (ACCOUNT_COL, "person_a", "person_b"):
        pairs[col] = pairs[col].astype(users.dtype)
    empty = int(((pairs["n_a"] == 0) | (pairs["n_b"] == 0)).sum())
    if empty:
        logger.warning("merge_accounts: %d account(s) lost a person to shared items", empty)
    logger.info(
        "merge_accounts: %d accounts from %d eligible users (min_items=%d), %d account rows, "
        "%d shared items dropped, balanced=%s",
        n_pairs,
        len(eligible),
        min_items,
        len(membership),
        int(pairs["n_shared"].sum()),
        balanced,
    )
    return MergedAccounts(interactions, membership, pairs, bool(balanced), seed)
