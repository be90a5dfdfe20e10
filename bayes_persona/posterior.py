"""Summaries of posterior draws: highest-density intervals and permutation matching."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["hdi", "best_permutation"]


def hdi(samples: np.ndarray, hdi_prob: float = 0.9, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density interval of unimodal draws along ``axis``.

    The narrowest window holding ``ceil(hdi_prob * S)`` of the ``S`` sorted draws, computed
    for every other index at once (as ``arviz.hdi`` does for one variable).

    Parameters
    ----------
    samples : ndarray
        Draws along ``axis``.
    hdi_prob : float in (0, 1)
    axis : int

    Returns
    -------
    low, high : ndarray
        Shape of ``samples`` without ``axis``.

    References
    ----------
    .. [1] R. J. Hyndman. "Computing and Graphing Highest Density Regions". The American
       Statistician 50(2), 1996.
    """
    x = np.sort(np.moveaxis(np.asarray(samples, dtype=float), axis, 0), axis=0)
    S = x.shape[0]
    m = min(S, max(1, math.ceil(hdi_prob * S)))
    widths = x[m - 1 :] - x[: S - m + 1]
    start = np.argmin(widths, axis=0)
    low = np.take_along_axis(x, start[None], axis=0)[0]
    high = np.take_along_axis(x, (start + m - 1)[None], axis=0)[0]
    return low, high


def best_permutation(cost: np.ndarray) -> tuple[int, ...]:
    """The assignment of rows to columns that minimises the total ``cost`` (Hungarian).

    Parameters
    ----------
    cost : ndarray, shape (m, K), m <= K

    Returns
    -------
    tuple of int, length m
        ``perm[r]`` is the column matched to row ``r``.
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(np.asarray(cost))
    out = [0] * cost.shape[0]
    for r, c in zip(rows, cols, strict=True):
        out[r] = int(c)
    return tuple(out)

