"""ClippedAdam with lazy (row-sparse) updates, so that an SVI step costs O(batch).

The guide holds one row of variational parameters per user and per item. A minibatch
touches ``B`` users (and, with a sampled softmax, a few thousand items), but dense Adam
updates every row of every table at every step: O(users x K x D) work per step, which
makes an epoch quadratic in the number of users. The guide can instead produce *sparse*
gradients for its row tables (:func:`gather_rows`), and :class:`LazyClippedAdam` then
updates only the rows that have a gradient -- the rule of ``torch.optim.SparseAdam`` (and
TensorFlow's LazyAdam): a row's moments and value change only when the row is in the
minibatch, with the bias correction of the global step count.

For dense gradients :class:`LazyClippedAdam` is exactly :class:`pyro.optim.ClippedAdam`
(same arithmetic, same state), so a model that never produces sparse gradients fits
bit-for-bit as before, and checkpoints of either optimiser load into the other. When every
row of a table is in every minibatch (``batch_size >= n_users``) lazy and dense updates
coincide.

Trade-off: with lazy updates a user's row takes one Adam step per visit (about one per
epoch), while dense Adam keeps moving unvisited rows along their momentum, about
``sqrt(U / B)`` times as far per epoch. Dense is therefore kept for small tables (see
``PersonaRecommender.sparse_min_floats``), where it costs no more per step; very large
fits may want more epochs or a larger learning rate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["LazyClippedAdam", "gather_rows"]


class _GatherRows(torch.autograd.Function):
    """``weight[index]`` along dim 0 whose gradient for ``weight`` is a sparse COO tensor
    (one sparse dimension, the rest dense) holding only the gathered rows."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.weight_shape = weight.shape
        return torch.index_select(weight, 0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        g = torch.sparse_coo_tensor(
            index[None], grad.contiguous(), ctx.weight_shape, check_invariants=False
        )
        return g, None


def gather_rows(weight: torch.Tensor, index: torch.Tensor, sparse: bool) -> torch.Tensor:
    """Rows ``weight[index]`` (``index`` 1-d); with ``sparse`` the gradient is row-sparse.

    ``index_select`` rather than ``weight[index]``: the same rows, and on CPU its backward
    (an ``index_add_``) costs a fraction of advanced indexing's (an accumulating
    ``index_put_``, which sorts the index); for distinct rows the two gradients are equal
    bit for bit."""
    if sparse and weight.requires_grad and torch.is_grad_enabled():
        return _GatherRows.apply(weight, index)
    return torch.index_select(weight, 0, index)


class LazyClippedAdam:
    """:class:`pyro.optim.ClippedAdam` that also takes row-sparse gradients.

    Dense gradients follow ClippedAdam exactly: elementwise clipping to
    ``[-clip_norm, clip_norm]``, Adam, and the learning rate multiplied by ``lrd`` at every
    step. A sparse COO gradient (from :func:`gather_rows`) is coalesced and only its rows
    are updated (lazy Adam); untouched rows keep their values and moments.

    It has the interface of a ``torch.optim.Optimizer`` that SVI needs (``param_groups``,
    ``state``, ``zero_grad``, ``step``, ``state_dict`` in torch's layout,
    ``load_state_dict``) without subclassing it: ``Optimizer.__init__`` imports
    ``torch._dynamo``, which costs a fresh process about 1.7 s on two cores.

    Parameters
    ----------
    params : iterable of tensors or parameter groups
    lr, betas, eps, weight_decay, clip_norm, lrd, centered_variance
        As in :class:`pyro.optim.ClippedAdam`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        clip_norm: float = 10.0,
        lrd: float = 1.0,
        centered_variance: bool = False,
    ) -> None:
        self.defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, clip_norm=clip_norm,
            lrd=lrd, centered_variance=centered_variance,
        )  # fmt: skip
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict[str, Any]] = [
            {**self.defaults, **g, "params": list(g["params"])} for g in groups
        ]
        self.state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``state`` keyed by parameter position, groups listing positions."""
        index = {id(p): i for i, p in enumerate(self._params())}
        groups, start = [], 0
        for g in self.param_groups:
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(start, start + len(g["params"])))})  # fmt: skip
            start += len(g["params"])
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups, strict=True)
        ):
            raise ValueError("optimizer state does not match these parameters")
        params = self._params()
        for saved, group in zip(groups, self.param_groups, strict=True):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = defaultdict(dict)
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {
                k: v.to(device=p.device, dtype=p.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                for k, v in s.items()
            }

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["lr"] *= group["lrd"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                beta1, beta2 = group["betas"]
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                step_size = group["lr"] * math.sqrt(bias_correction2) / bias_correction1
                if p.grad.is_sparse:
                    self._sparse_update(p, state, group, step_size)
                else:
                    self._dense_update(p, state, group, step_size)
        return loss

    @staticmethod
    def _dense_update(p: torch.Tensor, state: dict, group: dict, step_size: float) -> None:
        # The operations of pyro.optim.ClippedAdam, in its order.
        grad = p.grad
        grad.clamp_(-group["clip_norm"], group["clip_norm"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        beta1, beta2 = group["betas"]
        if group["weight_decay"] != 0:
            grad = grad.add(p, alpha=group["weight_decay"])
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        grad_var = (grad - exp_avg) if group["centered_variance"] else grad
        exp_avg_sq.mul_(beta2).addcmul_(grad_var, grad_var, value=1 - beta2)
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-step_size)

    @staticmethod
    def _sparse_update(p: torch.Tensor, state: dict, group: dict, step_size: float) -> None:
        grad = p.grad.coalesce()
        rows = grad.indices()[0]
        if rows.numel() == 0:
            return
        g = grad.values().clamp(-group["clip_norm"], group["clip_norm"])
        beta1, beta2 = group["betas"]
        if group["weight_decay"] != 0:
            g = g.add(p[rows], alpha=group["weight_decay"])
        exp_avg = state["exp_avg"][rows].mul_(beta1).add_(g, alpha=1 - beta1)
        g_var = (g - exp_avg) if group["centered_variance"] else g
        exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(g_var, g_var, value=1 - beta2)
        state["exp_avg"][rows] = exp_avg
        state["exp_avg_sq"][rows] = exp_avg_sq
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        p[rows] = p[rows].addcdiv_(exp_avg, denom, value=-step_size)
