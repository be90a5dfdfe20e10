r"""A bound that is importance weighted within each member of a local plate.

For a model with global latents :math:`\beta` (items) and local latents :math:`\theta_u` (one
user's personas and prevalence), each local block observed through its own data :math:`x_u`,

.. math::

    \mathcal{L}_M = E_{q(\beta)}\Big[\log \frac{p(\beta)}{q(\beta)}
        + \sum_u E_{\theta_u^{1..M} \sim q}\, \log \frac{1}{M} \sum_{m=1}^{M}
          \frac{p(x_u \mid \theta_u^m, \beta)\, p(\theta_u^m)}{q(\theta_u^m)}\Big].

With :math:`M = 1` this is the ELBO; it rises towards :math:`\log p(x)`, conditional on
:math:`q(\beta)`, as :math:`M` grows, and the guide it trains is a proposal for each user's
posterior rather than its mode-seeking fit [1]_. Only the local latents are drawn M times:
the importance weights of a whole dataset would degenerate, those of one user's block of a
few dozen dimensions need not.

:class:`LocalImportanceELBO` computes it for any Pyro model and guide whose local sites sit
in a plate (``"users"`` by default): while the model and guide run, every sample site in
that plate also sits in a plate of ``num_particles`` draws at dimension ``particle_dim``,
so a site of batch shape ``(B, 1)`` is drawn as ``(M, B, 1)``. The model must accept the
extra leading dimension on its local values (:class:`~bayes_persona.persona.PersonaModel`
folds it into the users).

References
----------
.. [1] Y. Burda, R. Grosse, R. Salakhutdinov. "Importance Weighted Autoencoders". ICLR 2016.
"""

from __future__ import annotations

import math

import torch
from pyro import poutine
from pyro.poutine.plate_messenger import PlateMessenger

__all__ = ["LocalImportanceELBO"]

#: Name of the plate of draws that :class:`LocalImportanceELBO` puts around the local sites.
PARTICLE_PLATE = "local_particles"


class _LocalParticles(PlateMessenger):
    """A plate of ``size`` draws at ``dim`` around the sample sites of plate ``local`` only."""

    def __init__(self, size: int, local: str, dim: int) -> None:
        super().__init__(PARTICLE_PLATE, size=size, dim=dim)
        self.local = local

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and any(f.name == self.local for f in msg["cond_indep_stack"]):
            super()._process_message(msg)


def _is_local(site: dict) -> bool:
    return any(f.name == PARTICLE_PLATE for f in site["cond_indep_stack"])


class LocalImportanceELBO:
    """The importance-weighted bound of the module docstring, as a loss to minimise.

    Parameters
    ----------
    num_particles : int
        ``M``, draws of each member's local latents (1: the ELBO, one draw).
    local_plate : str
        Name of the plate whose members get their own importance weights.
    particle_dim : int
        Dimension of the particle plate; left of every plate the model and guide use.
    """

    def __init__(self, num_particles: int, local_plate: str = "users", particle_dim: int = -3) -> None:
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be a positive integer; got {num_particles!r}")
        self.num_particles = int(num_particles)
        self.local_plate = local_plate
        self.particle_dim = particle_dim

    def _terms(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The global term, each member's scaled local log weights (M, B) or None, and the
        local plate's subsampling scale ``c`` (``U / B``), from one joint draw."""
        M = self.num_particles
        with _LocalParticles(M, self.local_plate, self.particle_dim):
            guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
        global_term = torch.zeros(())
        local_term = None  # (M, B): scaled log weights of each member's draws
        member_scale = None  # the local plate's subsampling scale (U / B)
        for tr, sign in ((model_tr, 1.0), (guide_tr, -1.0)):
            tr.compute_log_prob()
            for name, site in tr.nodes.items():
                if site["type"] != "sample":
                    continue
                lp = site["log_prob"]
                if not _is_local(site):
                    global_term = global_term + sign * lp.sum()
                    continue
                if sign < 0:
                    if not site["fn"].has_rsample:
                        raise ValueError(f"LocalImportanceELBO needs reparameterised guide sites; {name!r} is not")
                    member_scale = site["scale"]
                # batch dims (M, B, ...) -> (M, B): sum what lies right of the members
                lp = lp.reshape(lp.shape[0], lp.shape[1], -1).sum(-1) if lp.dim() >= 2 else lp
                local_term = sign * lp if local_term is None else local_term + sign * lp
        c = torch.as_tensor(1.0 if member_scale is None else member_scale)
        return global_term, local_term, c

    def member_log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Each member's M log importance weights, shape (M, B), from one draw of the globals:
        ``log p(x_u | theta_u^m, beta) p(theta_u^m) / q(theta_u^m)``, unscaled by the
        local plate's subsampling. Their mean over M estimates the member's ELBO term, their
        log-mean-exp its importance-weighted bound."""
        _, local_term, c = self._terms(model, guide, *args, **kwargs)
        if local_term is None:
            raise ValueError(f"no sample site lies in the plate {self.local_plate!r}")
        return local_term / c.to(local_term.dtype)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``-L_M`` estimated with one draw of the globals and M of each member's locals."""
        global_term, local_term, c = self._terms(model, guide, *args, **kwargs)
        if local_term is None:
            return -global_term
        c = c.to(local_term.dtype)
        per_member = torch.logsumexp(local_term / c, dim=0) - math.log(self.num_particles)
        return -(global_term + (c * per_member).sum())
