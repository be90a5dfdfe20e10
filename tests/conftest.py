"""Shared fixtures.

Real data is never part of the repository: tests that need MovieLens 100K read it from
``$BAYES_PERSONA_DATA/ml-100k`` (e.g. ``BAYES_PERSONA_DATA=../shared/data``) and are
skipped, with the reason shown, when it is not there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # 2-core CI machines; also makes CPU float results reproducible


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """Folder of the unpacked MovieLens 100K files, or skip with the reason."""
    root = os.environ.get("BAYES_PERSONA_DATA")
    if not root:
        pytest.skip("MovieLens 100K needed: set BAYES_PERSONA_DATA to the folder holding ml-100k/")
    path = Path(root) / "ml-100k"
    if not (path / "u.data").is_file():
        pytest.skip(f"MovieLens 100K needed: {path} has no u.data (BAYES_PERSONA_DATA={root!r})")
    return path


@pytest.fixture(scope="module")
def small_world():
    """A small planted world (60 users, 120 items, 4 tastes) shared by the contract tests."""
    import bayes_persona as bp

    small_world, _ = bp.make_synthetic(
        n_users=60, n_items=120, n_tastes=4, interactions_per_user=(10, 40), seed=0
    )
    return small_world


@pytest.fixture(scope="module")
def small_fit(small_world):
    """A small PersonaRecommender fitted on ``small_world`` (seconds)."""
    import bayes_persona as bp

    return bp.PersonaRecommender(
        n_personas=3, n_factors=8, max_epochs=5, batch_size=32, n_draws=20, progress=False
    ).fit(small_world)
