r"""The persona prior: a user's K persona vectors drawn around shared taste prototypes.

.. math::  p(p_u) = \prod_{k=1}^{K} \sum_{t=1}^{T} \rho_t\, \mathcal{N}(p_{uk} \mid m_t, s^2 I_D)

The same density as ``MixtureSameFamily(Categorical(rho), Normal(m, s).to_event(1))`` over the
K personas, written for speed: the squared distances come from one (B K, D) x (D, T) product,
``||p - m_t||^2 = ||p||^2 - 2 p . m_t + ||m_t||^2``, instead of a broadcast (B, K, T, D) array
and the elementwise passes over it, each way.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import Categorical, TorchDistribution, constraints


class PrototypeMixture(TorchDistribution):
    """Each of ``n_personas`` vectors in R^D drawn from one mixture of isotropic Gaussians.

    Parameters
    ----------
    logits : Tensor, shape (T,)
        Unnormalised log weights of the prototypes.
    loc : Tensor, shape (T, D)
        The prototypes' centres ``m_t``.
    scale : Tensor, scalar
        The common standard deviation ``s``.
    n_personas : int
        ``K``: the event shape is (K, D).
    """

    arg_constraints = {"logits": constraints.real_vector, "scale": constraints.positive}
    support = constraints.independent(constraints.real, 2)
    has_rsample = False

    def __init__(self, logits, loc, scale, n_personas: int, batch_shape=torch.Size(), validate_args=None) -> None:  # noqa: B008 (immutable)
        self.logits, self.loc, self.scale, self.n_personas = logits, loc, scale, int(n_personas)
        event_shape = torch.Size((self.n_personas, loc.shape[-1]))
        super().__init__(torch.Size(batch_shape), event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> PrototypeMixture:
        return PrototypeMixture(self.logits, self.loc, self.scale, self.n_personas, batch_shape, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log density of persona blocks ``value`` (..., K, D); shape (...)."""
        D = self.loc.shape[-1]
        s2 = self.scale**2
        flat = value.reshape(-1, D)
        loc = self.loc.to(flat.dtype)  # NUTS moves float64 values (pyro's flat vector of all sites)
        # ||p - m_t||^2 for every persona and prototype, (n, T); clamped at 0 against rounding
        sq = ((flat * flat).sum(-1, keepdim=True) - 2.0 * flat @ loc.T + (loc * loc).sum(-1)).clamp_min(0.0)
        log_comp = -0.5 * sq / s2 - D * torch.log(self.scale) - 0.5 * D * math.log(2 * math.pi)
        per_persona = torch.logsumexp(torch.log_softmax(self.logits, -1) + log_comp, -1)
        return per_persona.reshape(value.shape[:-1]).sum(-1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:  # noqa: B008 (immutable)
        shape = torch.Size(sample_shape) + self.batch_shape + torch.Size((self.n_personas,))
        with torch.no_grad():
            t = Categorical(logits=self.logits).sample(shape)
            return self.loc[t] + self.scale * torch.randn(*shape, self.loc.shape[-1], dtype=self.loc.dtype, device=self.loc.device)
