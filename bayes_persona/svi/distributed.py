"""Data-parallel SVI on ``torch.distributed``.

Launch with torchrun, one process per device (or per CPU worker)::

    torchrun --nproc-per-node 4 -m bayes_persona.cli fit ...

and fit with :func:`fit_distributed` (which :meth:`PersonaRecommender.fit` also becomes by
itself whenever a process group with more than one worker is initialised)::

    from bayes_persona.svi import distributed as bpd

    bpd.fit_distributed(model, train)          # every rank: same model settings, same data
    if bpd.is_main_process():
        model.save("model.pt")
    bpd.shutdown()

How it works
------------
* **Identical parameters everywhere.** Every rank builds the same vocabularies and the same
  initial guide (same ``random_state``, same data), keeps the full user and item tables, and
  applies the same averaged gradients with the same optimiser, so the parameters stay
  identical on all ranks and any rank can recommend for any user after the fit.
* **Sharding by user.** The users are split by a permutation seeded by ``random_state``
  into ``W`` disjoint shards of (almost) equal size; a rank draws its minibatches only from
  its own shard, so only the rows of its users get nonzero gradients (item rows are shared).
* **Unbiased ELBO.** Pyro scales the user plate by ``U / B``; a rank additionally scales
  every site in the user plate by ``W * U_r / U`` (``U_r`` its shard's size), so its
  minibatch ELBO estimates ``W`` times its shard's sum and the *average* over ranks is an
  unbiased estimate of the full-data ELBO (each rank's own estimate is unbiased for it too,
  over the random sharding). Global (item and hyperparameter) terms enter every rank once.
* **Gradient all-reduce (average).** Dense gradients are flattened into one buffer and
  all-reduced; row-sparse gradients of the lazy optimiser (:mod:`bayes_persona.svi.optim`) are
  all-gathered as (row, value) pairs, O(batch) rather than O(users) per step. The loss is
  all-reduced too, so divergence checks and early stopping agree on every rank.
* **Rank 0 writes.** Only rank 0 writes checkpoints (all ranks read them on ``resume``;
  they need a shared file system then) and should save the model and results.
* Each rank draws its minibatches and Monte Carlo noise from its own seed
  ``(random_state, rank)``. After a resume, every rank continues from rank 0's saved random
  state (still unbiased, no longer bit-for-bit equal to an uninterrupted run).

Every rank is given the whole training set and keeps only its users' interactions for
sampling (the vocabularies, initialisation and the "seen" lists used to exclude items
from recommendations need all of them).

``batch_size`` is per worker: ``W`` workers with ``batch_size = B / W`` take the same
number of steps per epoch, each over ``B`` users in all, as one process with ``B``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pyro.poutine.messenger import Messenger

from bayes_persona.exceptions import DataValidationError

__all__ = [
    "fit_distributed",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "rank",
    "world_size",
    "shutdown",
    "UserShard",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- process group
def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one worker is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This worker's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of workers (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 and in a plain single process: the one that writes results."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-worker launch (torchrun sets these)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ


def init_from_env(backend: str | None = None, device: str = "cpu") -> bool:
    """Initialise the default process group from torchrun's environment variables.

    Does nothing when a group is already initialised or the environment is not a
    multi-worker launch. ``backend`` defaults to ``"nccl"`` for CUDA and ``"gloo"`` for
    CPU. Returns whether a multi-worker group is up afterwards.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if not launched_by_torchrun():
        return False
    if backend is None:
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    logger.info("process group up: rank %d of %d (%s)", rank(), world_size(), backend)
    return is_distributed()


def shutdown() -> None:
    """Destroy the default process group if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def fit_distributed(
    model: Any, train: Any, *args: Any, backend: str | None = None, **kwargs: Any
) -> Any:
    """Fit a :class:`~bayes_persona.PersonaRecommender` data-parallel over torchrun workers.

    Every rank calls it with the same model settings and the same ``train`` (and
    ``validation``); see the module docstring for what each rank does. It initialises the
    process group from torchrun's environment if needed (``backend``: ``"gloo"`` on CPU,
    ``"nccl"`` on CUDA); with ``device="cuda"`` each rank uses ``cuda:LOCAL_RANK``. Outside a
    multi-worker launch it is a plain ``model.fit``. Only rank 0 shows progress and writes
    checkpoints; save the fitted model on :func:`is_main_process` only.

    Parameters
    ----------
    model : PersonaRecommender
    train, *args, **kwargs
        As for :meth:`PersonaRecommender.fit`.

    Returns
    -------
    model, fitted (identically on every rank)
    """
    device = str(getattr(model, "device", "cpu"))
    if init_from_env(backend, device):
        if device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", rank() % max(torch.cuda.device_count(), 1)))
            model.set_params(device=f"cuda:{local}")
        if not is_main_process():
            model.set_params(progress=False)
    return model.fit(train, *args, **kwargs)


# --------------------------------------------------------------------------- SVI hooks
class _ScaleUserPlate(Messenger):
    """Multiply the scale of every site inside plate ``name`` by ``factor``."""

    def __init__(self, factor: float, name: str = "users") -> None:
        super().__init__()
        self.factor, self.name = factor, name

    def _process_message(self, msg: dict) -> None:
        if any(f.name == self.name for f in msg["cond_indep_stack"]):
            msg["scale"] = self.factor * msg["scale"]


def _seed(*words: int) -> int:
    return int(
        np.random.SeedSequence([int(w) for w in words]).generate_state(1, dtype=np.uint64)[0] >> 1
    )


class UserShard:
    """This rank's users and the hooks :func:`~bayes_persona.svi.engine.run_svi` calls.

    Parameters
    ----------
    seen : InteractionMatrix
        All users' training items (global user indices).
    device : torch.device
    random_state : int
        Seeds the user permutation (same on every rank) and, with the rank, this rank's
        minibatch generator and Monte Carlo noise.
    generator : torch.Generator
        The fit's minibatch generator; reseeded for this rank.

    Attributes
    ----------
    users : LongTensor
        Global indices of this rank's users, sorted.
    seen : InteractionMatrix
        This rank's users' items, rows in the order of ``users``.
    max_users : int
        The largest shard size over ranks (an epoch is ``ceil(max_users / batch_size)``
        steps on every rank).
    """

    def __init__(
        self, seen: Any, device: torch.device, random_state: int, generator: torch.Generator
    ) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_writer = self.rank == 0
        n_users = len(seen.counts)
        if n_users < self.world:
            raise DataValidationError(
                f"{n_users} users cannot be sharded over {self.world} workers"
            )
        perm = np.random.default_rng([int(random_state), 7727]).permutation(n_users)
        bounds = np.linspace(0, n_users, self.world + 1).round().astype(np.int64)
        own = np.sort(perm[bounds[self.rank] : bounds[self.rank + 1]])
        self.max_users = int(np.diff(bounds).max())
        self.users = torch.as_tensor(own, device=device)
        self.seen = _shard_csr(seen, own).to(device)
        self.user_factor = self.world * len(own) / n_users
        self.device = device
        generator.manual_seed(_seed(random_state, 31337, self.rank))
        torch.manual_seed(_seed(random_state, 4099, self.rank))
        logger.info("rank %d/%d: %d of %d users", self.rank, self.world, len(own), n_users)

    def globalise(self, batch: Any) -> Any:
        """Map a batch drawn from :attr:`seen` (local user rows) to global user indices."""
        batch.users = self.users[batch.users]
        return batch

    # --- the run_svi protocol ---
    def scope(self) -> Messenger:
        return _ScaleUserPlate(self.user_factor)

    def reduce_loss(self, value: torch.Tensor) -> torch.Tensor:
        buf = value.detach().reshape(1).to(torch.float64)
        dist.all_reduce(buf)
        return (buf / self.world).to(value.dtype).reshape(value.shape)

    def reduce_grads(self, params: Sequence[torch.Tensor]) -> None:
        """Average gradients over ranks (a missing gradient counts as zero)."""
        kind = torch.tensor(
            [0 if p.grad is None else 2 if p.grad.is_sparse else 1 for p in params],
            dtype=torch.int64, device=self.device,
        )  # fmt: skip
        dist.all_reduce(kind, op=dist.ReduceOp.MAX)
        kinds = kind.tolist()
        dense = [p for p, k in zip(params, kinds, strict=True) if k == 1]
        sparse = [p for p, k in zip(params, kinds, strict=True) if k == 2]
        if dense:
            grads = [
                p.grad.to_dense() if p.grad is not None else torch.zeros_like(p) for p in dense
            ]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for p in dense:
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p).clone()
                offset += n
        if sparse:
            self._reduce_sparse(sparse)

    def _reduce_sparse(self, params: list[torch.Tensor]) -> None:
        rows, vals = [], []
        for p in params:
            if p.grad is None:
                rows.append(torch.zeros(0, dtype=torch.int64, device=self.device))
                vals.append(torch.zeros(0, dtype=p.dtype, device=self.device))
                continue
            g = p.grad.coalesce() if p.grad.is_sparse else p.grad.to_sparse(1).coalesce()
            rows.append(g.indices()[0])
            vals.append(g.values().reshape(-1))
        counts = torch.tensor([len(r) for r in rows], dtype=torch.int64, device=self.device)
        all_counts = [torch.zeros_like(counts) for _ in range(self.world)]
        dist.all_gather(all_counts, counts)
        width = [max(int(np.prod(p.shape[1:])), 1) for p in params]
        n_rows = [int(c.sum()) for c in all_counts]
        n_vals = [int((c.cpu().numpy() * np.asarray(width)).sum()) for c in all_counts]
        row_buf = torch.zeros(max(n_rows), dtype=torch.int64, device=self.device)
        row_buf[: n_rows[self.rank]] = torch.cat(rows)
        val_buf = torch.zeros(max(n_vals), dtype=vals[0].dtype, device=self.device)
        val_buf[: n_vals[self.rank]] = torch.cat(vals)
        row_parts = [torch.empty_like(row_buf) for _ in range(self.world)]
        val_parts = [torch.empty_like(val_buf) for _ in range(self.world)]
        dist.all_gather(row_parts, row_buf)
        dist.all_gather(val_parts, val_buf)
        per_param_rows: list[list[torch.Tensor]] = [[] for _ in params]
        per_param_vals: list[list[torch.Tensor]] = [[] for _ in params]
        for r in range(self.world):
            c = all_counts[r].tolist()
            ro = vo = 0
            for j, p in enumerate(params):
                per_param_rows[j].append(row_parts[r][ro : ro + c[j]])
                per_param_vals[j].append(
                    val_parts[r][vo : vo + c[j] * width[j]].reshape(c[j], *p.shape[1:])
                )
                ro += c[j]
                vo += c[j] * width[j]
        for j, p in enumerate(params):
            idx = torch.cat(per_param_rows[j])[None]
            val = torch.cat(per_param_vals[j]) / self.world
            p.grad = torch.sparse_coo_tensor(idx, val, p.shape, check_invariants=False).coalesce()


def _shard_csr(seen: Any, own: np.ndarray) -> Any:
    """The rows ``own`` of a CSR of users' items, as a new CSR (rows renumbered 0..)."""
    from bayes_persona.persona.interactions import InteractionMatrix

    indptr = seen.indptr.cpu().numpy()
    counts = np.diff(indptr)[own]
    new_indptr = np.concatenate([[0], np.cumsum(counts)])
    pos = np.repeat(indptr[own] - new_indptr[:-1], counts) + np.arange(new_indptr[-1])
    pos_t = torch.as_tensor(pos)
    values = seen.values.cpu()[pos_t] if seen.values is not None else None
    weights = seen.weights.cpu()[pos_t] if seen.weights is not None else None
    return InteractionMatrix(torch.as_tensor(new_indptr), seen.indices.cpu()[pos_t], values, weights)
