"""``device="cuda"``: fitting, posterior summaries, fold-in and lazy updates on a GPU.

Skipped where ``torch.cuda.is_available()`` is False (marker ``cuda``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import bayes_persona as bp

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

PARAMS = dict(n_personas=3, n_factors=8, max_epochs=10, n_draws=20, progress=False, random_state=0)


@pytest.fixture(scope="module")
def cuda_world():
    return bp.make_synthetic(n_users=120, n_items=150, n_tastes=4, seed=2)


@pytest.fixture(scope="module")
def cuda_and_cpu_fits(cuda_world):
    dataset, _ = cuda_world
    split = bp.random_holdout(dataset.ratings, test_fraction=0.2, seed=0)
    gpu = bp.PersonaRecommender(device="cuda", **PARAMS).fit(split.train, validation=split.test)
    cpu = bp.PersonaRecommender(device="cpu", **PARAMS).fit(split.train, validation=split.test)
    return gpu, cpu, split


def test_parameters_and_draws_live_on_the_gpu(cuda_and_cpu_fits) -> None:
    gpu, _, _ = cuda_and_cpu_fits
    for p in list(gpu.model_.parameters()) + list(gpu.guide_.parameters()):
        assert p.device.type == "cuda"
    q, b = gpu.posterior_.item_draws(gpu.n_draws)
    assert q.device.type == "cuda" and b.device.type == "cuda"
    d = gpu.posterior_.user_draws(np.arange(3), gpu.n_draws)
    assert all(t.device.type == "cuda" for t in d.values())


def test_batches_are_built_on_the_gpu(cuda_and_cpu_fits) -> None:
    gpu, _, _ = cuda_and_cpu_fits
    seen = gpu.seen_.to(torch.device("cuda"))
    batch = seen.sample_batch(
        torch.Generator().manual_seed(0), 16, 32, 10, len(gpu.item_vocab_), torch.device("cuda")
    )
    for t in (batch.users, batch.items, batch.mask, batch.weight, batch.negatives):
        assert t.device.type == "cuda"


def test_outputs_work_and_match_cpu_fit(cuda_and_cpu_fits) -> None:
    gpu, cpu, split = cuda_and_cpu_fits
    users = gpu.user_vocab_.ids[:5]
    recs = gpu.recommend(users, n=5)
    assert len(recs) == 25 and recs["persona_prob"].between(0, 1).all()
    assert len(gpu.explain(users[0], recs["item_id"].iloc[:3])) == 3 * gpu.n_personas
    assert len(gpu.personas(users[0])) == gpu.n_personas
    s = gpu.score(users, recs.groupby("user_id").head(1)["item_id"].to_numpy())
    np.testing.assert_allclose(s, recs.groupby("user_id").head(1)["score"].to_numpy(), rtol=1e-4)
    lp_gpu = gpu.log_predictive(split.test).mean()
    lp_cpu = cpu.log_predictive(split.test).mean()
    assert abs(lp_gpu - lp_cpu) < 0.05 * abs(lp_cpu)  # different RNG streams, same quality


def test_save_load_round_trip_to_cpu(cuda_and_cpu_fits, tmp_path) -> None:
    gpu, _, _ = cuda_and_cpu_fits
    gpu.save(tmp_path / "m.pt")
    back = bp.PersonaRecommender.load(tmp_path / "m.pt")
    assert back.posterior_.device.type == "cpu"
    users = gpu.user_vocab_.ids[:3]
    a, b = gpu.recommend(users, n=5), back.recommend(users, n=5)
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-3)


def test_fold_in_on_gpu(cuda_and_cpu_fits) -> None:
    gpu, _, _ = cuda_and_cpu_fits
    items = gpu.item_vocab_.ids[:20]
    history = pd.DataFrame({"user_id": [10_000] * len(items), "item_id": items})
    new = gpu.fold_in(history, n_steps=30)
    assert new.posterior_.device.type == "cuda"
    assert len(new.recommend([10_000], n=5)) == 5


def test_lazy_sparse_updates_on_gpu(cuda_world) -> None:
    dataset, _ = cuda_world
    m = bp.PersonaRecommender(device="cuda", batch_size=8, **{**PARAMS, "max_epochs": 2})
    m.sparse_min_floats = 0  # lazy updates even for this small table
    m.fit(dataset)  # 120 users > 8 x 8: user tables get row-sparse gradients
    assert m.guide_.sparse_users and np.isfinite(m.elbo_).all()
