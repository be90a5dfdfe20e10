"""Data-parallel SVI (bayes_persona.svi.distributed): two CPU workers with the gloo backend.

The workers are started with ``torch.multiprocessing.spawn`` and rendezvous through the
environment variables torchrun would set (MASTER_ADDR=127.0.0.1, a free port), so that
:func:`fit_distributed` runs exactly as under ``torchrun --nproc-per-node 2``.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import bayes_persona as bp
from bayes_persona.svi import distributed as bpd

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with gloo needed",
)

WORLD = 2
BATCH = 64  # the single process's batch; each of the 2 workers draws BATCH // 2 users
PARAMS = dict(n_personas=3, n_factors=8, max_epochs=25, n_draws=30, progress=False, random_state=0)


def _data():
    data, _ = bp.make_synthetic(n_users=120, n_items=150, n_tastes=4, seed=5)
    split = bp.random_holdout(data.ratings, test_fraction=0.2, seed=0)
    return split.train, split.test


def _model(batch_size: int) -> bp.PersonaRecommender:
    model = bp.PersonaRecommender(batch_size=batch_size, **PARAMS)
    # Lazy row-sparse updates even for these small user tables, so that the workers
    # exercise the all-gather of sparse gradients (item tables stay dense: full softmax).
    model.sparse_update_ratio = model.sparse_min_floats = 0
    return model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str, train) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )  # fmt: skip
    model = _model(BATCH // WORLD)
    try:
        bpd.fit_distributed(
            model, train, checkpoint_dir=os.path.join(out, "ckpt"), checkpoint_every=20
        )
        assert bpd.is_distributed() and bpd.world_size() == WORLD and bpd.rank() == rank
        assert model.guide_.sparse_users  # the fit all-gathered row-sparse gradients
        model.save(os.path.join(out, f"rank{rank}.pt"))  # each rank, to compare them
    finally:
        bpd.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp"))
    train, test = _data()
    # fork: the workers skip re-importing torch and pyro (each sets one thread and uses
    # no OpenMP parallel region before it has).
    mp.start_processes(
        _worker, args=(_free_port(), out, train), nprocs=WORLD, join=True, start_method="fork"
    )
    single = _model(BATCH).fit(train)
    models = [bp.PersonaRecommender.load(os.path.join(out, f"rank{r}.pt")) for r in range(WORLD)]
    return single, models, test, out


def test_ranks_keep_identical_parameters(runs) -> None:
    _, (m0, m1), _, _ = runs
    s0, s1 = m0.guide_.state_dict(), m1.guide_.state_dict()
    assert s0.keys() == s1.keys()
    for k in s0:
        torch.testing.assert_close(s0[k], s1[k], rtol=0, atol=0, msg=k)
    np.testing.assert_array_equal(m0.elbo_, m1.elbo_)  # the all-reduced ELBO


def test_reaches_single_process_quality(runs) -> None:
    single, (m0, _), test, _ = runs
    lp_single = single.log_predictive(test).mean()
    lp_dist = m0.log_predictive(test).mean()
    chance = -np.log(single.item_vocab_.ids.size)
    # The fit beats uniform choice clearly; the data-parallel fit matches it to within
    # 0.02 nats per held-out interaction (under 10% of the gain over chance).
    assert lp_single > chance + 0.2
    assert abs(lp_dist - lp_single) < min(0.02, 0.1 * (lp_single - chance)), (lp_dist, lp_single)
    assert m0.n_steps_ == single.n_steps_  # an epoch covers every user once in both


def test_rank0_wrote_the_checkpoint(runs) -> None:
    *_, out = runs
    assert os.path.exists(os.path.join(out, "ckpt", "checkpoint.pt"))


def test_fit_distributed_is_plain_fit_outside_a_launch(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    data, _ = bp.make_synthetic(n_users=40, n_items=60, n_tastes=3, seed=1)
    a = bp.PersonaRecommender(n_personas=2, n_factors=4, max_epochs=2, progress=False)
    b = bp.PersonaRecommender(n_personas=2, n_factors=4, max_epochs=2, progress=False)
    bpd.fit_distributed(a, data)
    b.fit(data)
    assert not bpd.is_distributed() and bpd.is_main_process()
    np.testing.assert_array_equal(a.elbo_, b.elbo_)


def test_sparse_gradient_all_reduce_matches_dense() -> None:
    """The all-gather of row-sparse gradients averages like a dense all-reduce (1 worker)."""
    port = _free_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        sync = object.__new__(bpd.UserShard)
        sync.rank, sync.world, sync.device = 0, 1, torch.device("cpu")
        w = torch.zeros(6, 3, requires_grad=True)
        v = torch.zeros(4, requires_grad=True)
        from bayes_persona.svi.optim import gather_rows

        (gather_rows(w, torch.tensor([4, 1, 4]), True).sum() * 2 + v.sum()).backward()
        sync.reduce_grads([w, v])
        expected = torch.zeros(6, 3)
        expected[1], expected[4] = 2.0, 4.0
        torch.testing.assert_close(w.grad.to_dense(), expected)
        torch.testing.assert_close(v.grad, torch.ones(4))
    finally:
        dist.destroy_process_group()
