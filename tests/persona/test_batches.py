"""Minibatch users: a uniform sample without replacement, at a cost that does not grow with
the number of users."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from bayes_persona.persona import interactions
from bayes_persona.persona.interactions import sample_users, sample_without_replacement
from bayes_persona.persona.model import Batch


@pytest.mark.parametrize("ratio", [interactions.PERMUTATION_RATIO, 1])
def test_users_are_a_uniform_ordered_sample_without_replacement(monkeypatch, ratio):
    """Every ordered triple of 6 users is equally likely, by the permutation path and (ratio
    1) by the draw-and-drop-repeats path; a sample with replacement would repeat users."""
    monkeypatch.setattr(interactions, "PERMUTATION_RATIO", ratio)
    g = torch.Generator().manual_seed(0)
    n, k, reps = 6, 3, 24000
    counts = dict.fromkeys(itertools.permutations(range(n), k), 0)
    for _ in range(reps):
        draw = tuple(sample_without_replacement(n, k, g).tolist())
        assert len(set(draw)) == k  # no repeats
        counts[draw] += 1
    observed = np.array(list(counts.values()))
    assert stats.chisquare(observed).pvalue > 1e-3  # 120 cells of about 200 each


def test_large_populations_take_the_cheap_path_and_small_keep_randperm(monkeypatch):
    """Above PERMUTATION_RATIO users per slot no permutation of all users is drawn; below it
    the result is torch.randperm's (so small fits keep their random stream)."""
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(sample_without_replacement(100, 10, g1), torch.randperm(100, generator=g2)[:10])
    assert len(sample_without_replacement(5, 10, g1)) == 5  # min(k, n)
    n = 10**7
    calls = []
    real = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    users = sample_without_replacement(n, 512, g1)
    assert not calls
    assert len(users) == 512 and len(torch.unique(users)) == 512
    assert int(users.min()) >= 0 and int(users.max()) < n


def test_block_sampled_users_are_each_included_with_the_same_probability(monkeypatch):
    """Large populations draw users in blocks of consecutive indices; a uniform offset makes
    every user's inclusion probability k / n (the minibatch ELBO's unbiasedness rests on it).
    Aligned blocks without the offset, or a truncated last block at a fixed place, would
    favour some positions and fail the chi-square."""
    monkeypatch.setattr(interactions, "PERMUTATION_RATIO", 1)
    g = torch.Generator().manual_seed(1)
    n, k, reps = 42, 5, 20000  # blocks of 4: two blocks, the second cut to one user
    counts = np.zeros(n)
    for _ in range(reps):
        users = sample_users(n, k, g, block=4)
        assert len(users) == k and len(torch.unique(users)) == k
        counts[users.numpy()] += 1
    assert stats.chisquare(counts).pvalue > 1e-3
    assert abs(counts.sum() / (reps * n) - k / n) < 1e-12


def test_block_sampled_users_lie_in_runs_and_small_populations_keep_randperm():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(sample_users(100, 10, g1), torch.randperm(100, generator=g2)[:10])
    users = sample_users(10**7, 512, g1)
    assert len(torch.unique(users)) == 512 and int(users.min()) >= 0 and int(users.max()) < 10**7
    runs = int((torch.diff(torch.sort(users).values) != 1).sum()) + 1
    assert runs <= 512 // interactions.USER_BLOCK + 1  # one wraps around the end at most


def test_item_subsample_is_computed_once_per_batch(monkeypatch) -> None:
    """The guide and the model of a step share one sort of the step's items."""
    batch = Batch(
        users=torch.tensor([0, 1]),
        items=torch.tensor([[3, 5], [5, 9]]),
        mask=torch.ones(2, 2, dtype=torch.bool),
        weight=torch.ones(2),
        negatives=torch.tensor([9, 1, 7]),
    )
    calls = []
    unique = torch.unique
    monkeypatch.setattr(torch, "unique", lambda *a, **k: calls.append(1) or unique(*a, **k))
    first = batch.item_subsample(12)
    second = batch.item_subsample(12)
    assert len(calls) == 1 and all(a is b for a, b in zip(first, second, strict=True))
    subsample, pos, neg = first
    assert subsample.tolist() == [1, 3, 5, 7, 9]
    assert torch.equal(subsample[pos], batch.items) and torch.equal(subsample[neg], batch.negatives)
    full, pos_full, _ = Batch(batch.users, batch.items, batch.mask, batch.weight).item_subsample(12)
    assert torch.equal(full, torch.arange(12)) and torch.equal(pos_full, batch.items)
