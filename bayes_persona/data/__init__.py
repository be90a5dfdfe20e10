"""Data layer: datasets, loaders, preprocessing and train/test splits.

Public names
------------
Dataset
    Validated ratings table plus optional items table.
Vocabulary
    External ids <-> contiguous int64 indices.
load_interactions, load_items
    Tidy, validated tables from DataFrames or CSV/TSV/Parquet files.
load_movielens, download_movielens, default_data_home
    MovieLens 100K/1M/20M/25M/latest-small, with checked downloads.
binarize, k_core
    Preprocessing of ratings.
Split, random_holdout, leave_one_out, temporal_split, validation_split
    Deterministic train/test splits.
MergedAccounts, merge_accounts
    Synthetic shared accounts (pairs of users merged) with the truth kept aside.
"""

from __future__ import annotations

from bayes_persona.data.accounts import MergedAccounts, merge_accounts
from bayes_persona.data.dataset import Dataset
from bayes_persona.data.io import load_interactions, load_items
from bayes_persona.data.movielens import (
    MOVIELENS_VARIANTS,
    default_data_home,
    download_movielens,
    load_movielens,
)
from bayes_persona.data.preprocessing import Vocabulary, binarize, k_core
from bayes_persona.data.splits import (
    Split,
    leave_one_out,
    random_holdout,
    temporal_split,
    validation_split,
)

__all__ = [
    "Dataset",
    "Vocabulary",
    "load_interactions",
    "load_items",
    "load_movielens",
    "download_movielens",
    "default_data_home",
    "MOVIELENS_VARIANTS",
    "binarize",
    "k_core",
    "Split",
    "random_holdout",
    "leave_one_out",
    "temporal_split",
    "validation_split",
    "MergedAccounts",
    "merge_accounts",
]

from bayes_persona.data.synthetic import SyntheticData, SyntheticTruth, make_synthetic  # noqa: E402

__all__ += ["SyntheticData", "SyntheticTruth", "make_synthetic"]
