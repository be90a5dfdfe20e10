"""Each user's training items as CSR index arrays: minibatches and seen-item masks.

:class:`InteractionMatrix` is what a fitted :class:`~bayes_persona.PersonaRecommender`
keeps of its training data (``seen_``): indices only, never the frame.
"""

from __future__ import annotations

import numpy as np
import torch

from bayes_persona.persona.model import Batch

__all__ = ["InteractionMatrix", "sample_users", "sample_without_replacement"]

#: Below this many users per batch slot, a step draws its users from a full permutation.
PERMUTATION_RATIO = 16

#: Consecutive users per block of a large population's minibatch (:func:`sample_users`).
USER_BLOCK = 16


def sample_without_replacement(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``min(k, n)`` distinct indices of ``range(n)``, a uniform ordered sample without
    replacement, in ``O(k log k)`` when ``n`` is large.

    A permutation of all ``n`` costs ``O(n)`` per step, so an epoch of ``n / k`` steps would
    cost ``O(n^2 / k)``: on ten million interactions that grew the cost per interaction with
    the number of users. When ``n >= PERMUTATION_RATIO * k`` the indices are drawn uniformly
    with replacement and repeats are dropped in order of appearance, which is sequential
    sampling without replacement (each kept index is uniform over those not yet kept); with
    ``2k`` draws a repeat is rare (about ``k / 8`` of them), so one round almost always
    suffices. Smaller ``n`` keep ``torch.randperm`` (and so its random stream).
    """
    k = min(int(k), int(n))
    if n < PERMUTATION_RATIO * k:
        return torch.randperm(n, generator=g)[:k]
    kept = torch.empty(0, dtype=torch.long)
    while len(kept) < k:
        cand = torch.cat([kept, torch.randint(n, (2 * k,), generator=g)])
        uniq, inverse = torch.unique(cand, return_inverse=True)
        first = torch.full((len(uniq),), len(cand), dtype=torch.long).scatter_reduce_(
            0, inverse, torch.arange(len(cand)), "amin"
        )
        kept = cand[first.sort().values]
    return kept[:k]


def sample_users(n: int, k: int, g: torch.Generator, block: int = USER_BLOCK) -> torch.Tensor:
    """``min(k, n)`` distinct users of ``range(n)`` for a minibatch, each included with
    probability ``k / n``; in blocks of ``block`` consecutive indices when ``n`` is large.

    Below ``PERMUTATION_RATIO * k`` users this is ``torch.randperm(n)[:k]`` (small fits keep
    their random stream). Above it, a step draws a uniform offset ``o`` and
    ``ceil(k / block)`` distinct blocks ``[o + j block, o + (j + 1) block)`` (indices mod
    ``n``), keeping the first ``k`` users. The set of users is a fixed pattern rotated by a
    uniform offset, so every user has the same inclusion probability ``k / n`` and the
    minibatch ELBO (scaled by ``n / k``) stays unbiased; only pairs of neighbours are
    included together more often than at random. What it buys is memory locality: a
    minibatch's rows of the guide's user tables, and of their Adam moments, lie in
    ``k / block`` runs instead of ``k`` scattered rows. With a million users those tables
    are gigabytes, and scattered rows cost a page walk each (``bench scale``; paper 5.2).
    """
    k = min(int(k), int(n))
    if n < PERMUTATION_RATIO * k or block <= 1:
        return sample_without_replacement(n, k, g)
    offset = int(torch.randint(n, (1,), generator=g))
    starts = sample_without_replacement(n // block, -(-k // block), g) * block + offset
    return (starts[:, None] + torch.arange(block)).remainder_(n).reshape(-1)[:k]


class InteractionMatrix:
    """Each user's training items (and ratings, and the interactions' weights) as CSR index
    arrays, for batching and excluding seen items. It holds indices only, not the training
    frame.

    ``weights``, when given, are the ``sample_weight`` of ``fit``: how many choices each
    (user, item) row stands for (e.g. how often the user chose the item). ``None`` means
    one each."""

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor | None,
                 weights: torch.Tensor | None = None):  # fmt: skip
        self.indptr, self.indices, self.values, self.weights = indptr, indices, values, weights
        self.counts = indptr[1:] - indptr[:-1]

    @classmethod
    def build(cls, u: np.ndarray, i: np.ndarray, n_users: int, r: np.ndarray | None,
              w: np.ndarray | None = None) -> InteractionMatrix:  # fmt: skip
        order = np.lexsort((i, u))
        counts = np.bincount(u, minlength=n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        vals = torch.as_tensor(r[order]) if r is not None else None
        weights = torch.as_tensor(np.asarray(w, dtype=np.float32)[order]) if w is not None else None
        return cls(torch.as_tensor(indptr), torch.as_tensor(i[order]), vals, weights)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"seen.indptr": self.indptr.cpu(), "seen.indices": self.indices.cpu()}
        if self.values is not None:
            out["seen.values"] = self.values.cpu()
        if self.weights is not None:
            out["seen.weights"] = self.weights.cpu()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> InteractionMatrix:
        return cls(tensors["seen.indptr"], tensors["seen.indices"], tensors.get("seen.values"),
                   tensors.get("seen.weights"))  # fmt: skip

    def to(self, device: torch.device) -> InteractionMatrix:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return InteractionMatrix(self.indptr.to(device), self.indices.to(device), move(self.values), move(self.weights))

    def weights_of(self, users: np.ndarray) -> np.ndarray:
        """The weights of :meth:`rows_of`'s rows (ones when the fit had no ``sample_weight``)."""
        _, pos = self._positions(users)
        return np.ones(len(pos)) if self.weights is None else self.weights.cpu().numpy().astype(np.float64)[pos]

    def items_of(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u] : self.indptr[u + 1]].cpu().numpy()

    def rows_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(j, item)`` for every training item of ``users[j]``, without a Python loop."""
        rows, pos = self._positions(users)
        return rows, self.indices.cpu().numpy()[pos]

    def _positions(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(j, position in the CSR arrays)`` of every training item of ``users[j]``."""
        indptr = self.indptr.cpu().numpy()
        users = np.asarray(users, dtype=np.int64)
        counts = indptr[users + 1] - indptr[users]
        rows = np.repeat(np.arange(len(users)), counts)
        starts = np.repeat(indptr[users] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return rows, starts + np.arange(int(counts.sum()))

    def sample_batch(
        self, g: torch.Generator, batch_size: int, max_items: int, n_negatives: int | None,
        n_items: int, device: torch.device,
    ) -> Batch:  # fmt: skip
        """``batch_size`` distinct users, each with the same probability
        (:func:`sample_users`); up to ``max_items`` of each user's interactions (all of them
        when fewer, else drawn with replacement), weighted by ``n_u / L_u`` so the minibatch
        ELBO is unbiased; each interaction also carries its own weight (``obs_weight``)
        when the fit has ``sample_weight``."""
        users = sample_users(len(self.counts), batch_size, g).to(device)
        n = self.counts[users]
        L = int(min(max_items, int(n.max())))
        ar = torch.arange(L, device=device).expand(len(users), L)
        draw = (torch.rand(len(users), L, generator=g).to(device) * n[:, None]).long()
        mask = ar < n[:, None]
        pos = torch.where(n[:, None] > L, draw, torch.where(mask, ar, torch.zeros_like(ar)))
        flat = self.indptr[users][:, None] + pos
        items = self.indices[flat]
        ratings = torch.where(mask, self.values[flat], 0.0) if self.values is not None else None
        # padding gets 1, not 0: it is masked out, and pyro refuses a zero scale
        obs_weight = torch.where(mask, self.weights[flat], 1.0) if self.weights is not None else None
        weight = n / n.clamp(max=L)
        negatives = None
        if n_negatives is not None:
            negatives = torch.randint(n_items, (n_negatives,), generator=g).to(device)
        return Batch(users, items, mask, weight.float(), ratings, negatives, obs_weight)
