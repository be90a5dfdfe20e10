"""Hyperparameter tuning on a validation split cut from the training data.

This module holds :func:`holdout_split` (the per-user random holdout of
:func:`bayes_persona.random_holdout`, as two frames) and
:func:`tune` (a grid search that fits each candidate on the training part and scores it
with :func:`~bayes_persona.evaluation.evaluate` on the validation part, never on test).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from bayes_persona.data._validation import id_frame
from bayes_persona.evaluation.protocol import LOWER_IS_BETTER, evaluate
from bayes_persona.exceptions import DataTypeError, DataValidationError

__all__ = ["tune", "holdout_split"]

logger = logging.getLogger(__name__)


def holdout_split(
    data: Any, fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user random holdout as two DataFrames: :func:`bayes_persona.random_holdout`.

    A user with ``n`` rows gives ``round(n * fraction)`` of them (half rounded up, at most
    ``n - 1``) to the second part; users with one row keep it in the first.

    Parameters
    ----------
    data : DataFrame or Dataset
        Interactions with ``user_id``, ``item_id``.
    fraction : float, default 0.2
        Share of each user's rows held out, in (0, 1).
    seed : int, default 0
        Seed.

    Returns
    -------
    (DataFrame, DataFrame)
        ``(kept, held_out)`` with the original columns.
    """
    from bayes_persona.data._validation import check_fraction
    from bayes_persona.data.splits import random_holdout

    split = random_holdout(id_frame(data, "data"), check_fraction("fraction", fraction), seed)
    return split.train.reset_index(drop=True), split.test.reset_index(drop=True)


def _grid(param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> list[dict]:
    if isinstance(param_grid, Mapping):
        names = list(param_grid)
        for n in names:
            vals = param_grid[n]
            if isinstance(vals, str) or not isinstance(vals, Iterable):
                raise DataTypeError(
                    f"param_grid[{n!r}] must be a list of values; got {type(vals).__name__}"
                )
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(list(param_grid[n]) for n in names))
        ]
    if isinstance(param_grid, Sequence) and all(isinstance(p, Mapping) for p in param_grid):
        return [dict(p) for p in param_grid]
    raise DataTypeError(
        "param_grid must be a dict of name -> list of values or a list of dicts; got "
        f"{type(param_grid).__name__}"
    )


def tune(
    make_model: Callable[..., Any],
    param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    train: Any,
    validation: Any = None,
    metric: str = "ndcg",
    k: int = 10,
    *,
    protocol: str = "full",
    items: pd.DataFrame | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    higher_is_better: bool | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Grid search of hyperparameters on a validation split cut from the training data.

    Never pass the test set as ``validation``: tuning on test inflates the reported
    numbers. With ``validation=None`` a per-user random holdout of ``train``
    (:func:`holdout_split`) is used and each candidate is fitted on the rest.

    Parameters
    ----------
    make_model : callable
        ``make_model(**params)`` returns an unfitted model.
    param_grid : dict of lists or list of dicts
        Candidate hyperparameters (the product of the lists, or the dicts themselves).
    train : DataFrame or Dataset
        Training data (the candidates are fitted on it, or on its non-held-out part).
    validation : DataFrame or Dataset, optional
        Validation pairs cut from the training data.
    metric : str, default "ndcg"
        Selection metric (any metric of :func:`evaluate`).
    k : int, default 10
        Cut-off of the selection metric.
    protocol : {"full", "sampled"}, default "full"
    items : DataFrame, optional
        Item metadata passed to :func:`evaluate`.
    validation_fraction : float, default 0.2
        Held-out share per user when ``validation`` is None.
    seed : int, default 0
        Seed of the split and of :func:`evaluate`.
    higher_is_better : bool, optional
        Direction of ``metric``; by default lower is better only for TDD.

    Returns
    -------
    (dict, DataFrame)
        The best parameters and one row per candidate (parameters, ``metric``, ``k``,
        ``value``), sorted best first.
    """
    if not callable(make_model):
        raise DataTypeError(f"make_model must be callable; got {type(make_model).__name__}")
    candidates = _grid(param_grid)
    if not candidates:
        raise DataValidationError("param_grid must hold at least one candidate; got none")
    if validation is None:
        fit_data, validation = holdout_split(train, validation_fraction, seed)
        logger.info(
            "tune: cut a %.0f%% per-user validation split from train", 100 * validation_fraction
        )
    else:
        fit_data = train
    if higher_is_better is None:
        higher_is_better = metric not in LOWER_IS_BETTER
    rows, order = [], []
    for j, params in enumerate(candidates):
        model = make_model(**params)
        res = evaluate(
            model,
            fit_data,
            validation,
            k=(k,),
            items=items,
            protocol=protocol,
            metrics=[metric],
            n_boot=0,
            seed=seed,
        )
        value = float(res["value"].iloc[0])
        logger.info("tune: %s -> %s@%d = %.5f", params, metric, k, value)
        rows.append({**params, "metric": metric, "k": k, "value": value})
        order.append(j)
    table = pd.DataFrame(rows).assign(_candidate=order)
    table = table.sort_values(
        "value", ascending=not higher_is_better, kind="stable", na_position="last"
    ).reset_index(drop=True)
    best = dict(candidates[int(table["_candidate"].iloc[0])])
    return best, table.drop(columns="_candidate")
