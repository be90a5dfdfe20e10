r"""The Bayesian attentive multi-persona model and its variational guides.

Generative story (implicit feedback, the default)
-------------------------------------------------
For every item :math:`i` and user :math:`u` with :math:`K` personas in :math:`\mathbb{R}^D`:

.. math::

    q_i &\sim \mathcal{N}(0, s_q^2 I_D), \qquad b_i \sim \mathcal{N}(0, s_b^2) \\
    \pi_u &\sim \mathrm{Dirichlet}(\alpha, \dots, \alpha) \\
    p_{uk} &\sim \textstyle\sum_{t=1}^{T} \rho_t\, \mathcal{N}(m_t, s_p^2 I_D), \quad k = 1..K \\
    (z_{ui}, i) &\sim p(z = k, i \mid u) \propto \pi_{uk} \exp(p_{uk} \cdot q_i + b_i)
    \qquad \text{(the joint form)}

The user picks the persona and the item together, normalised over all (persona, item)
pairs with one normaliser per user. The latent assignment's posterior is then the
candidate-dependent attention of AMP-CF [1]_ with the prevalence as its prior,

.. math::  P(z = k \mid u, i, \theta) = \mathrm{softmax}_k(\log \pi_{uk} + p_{uk} \cdot q_i),

so the persona whose taste fits the candidate explains it; the item's probability is a soft
maximum over personas, :math:`p(i \mid u) \propto \sum_k \pi_{uk} \exp(p_{uk} \cdot q_i + b_i)`.
Across posterior draws of :math:`\theta` the attention has a distribution whose mean and
credible interval are the explanation of the item. :math:`z` is summed out exactly.

Writing :math:`Z_{uk} = \sum_j \exp(p_{uk} \cdot q_j + b_j)`, the joint form is
:math:`p(z = k, i \mid u) = w_{uk}\, \mathrm{softmax}_j(p_{uk} \cdot q_j + b_j)_i` with the
persona *shares* :math:`w_{uk} = \pi_{uk} Z_{uk} / \sum_{k'} \pi_{uk'} Z_{uk'} = P(z = k \mid u)`
(:func:`persona_shares`): the same family of distributions as a mixture of softmaxes, with
the prior on :math:`\pi` instead of on the shares. ``likelihood="mixture"`` puts the
Dirichlet on the shares themselves (:math:`w = \pi`; the form before version 0.2, kept for
comparison). Outputs report the shares as the personas' prevalences in both forms.

Personas are drawn around :math:`T` population *taste prototypes* :math:`m_t` (weights
:math:`\rho`): horror fans resemble each other, so a persona borrows the length and direction
of its taste from every user who shares it instead of estimating them from its own few
items. ``n_prototypes=0`` gives the isotropic prior :math:`p_{uk} \sim \mathcal{N}(0, s_p^2 I_D)`.

Why a softmax likelihood rather than a Bernoulli on observed versus sampled unobserved
pairs: an interaction is a *choice* among the catalogue, the softmax makes :math:`z` a
proper assignment (so the attention is exactly its posterior, not a weighting), and its
normaliser depends only on the user, so it is computed once per user in a minibatch and
shared by all of that user's interactions. On large catalogues :math:`Z_{uk}` is estimated
from ``n_negatives`` items drawn uniformly, :math:`\hat Z = (N/S) \sum_{j \in S} \exp(s_{ukj})`,
which is unbiased for :math:`Z` (the sampled-softmax correction [3]_; the log is consistent
but biased by Jensen's gap, which vanishes as S grows).

Explicit ratings
----------------
With ``feedback="explicit"`` the attention above becomes the prior of :math:`z` for a pair,
:math:`P(z = k \mid u, i) \propto \pi_{uk} \exp(p_{uk} \cdot q_i / \tau)`, and
:math:`r_{ui} \sim \mathcal{N}(p_{uz} \cdot q_i + b_i + b_u + \mu, \sigma^2)`,
:math:`b_u \sim \mathcal{N}(0, s_{bu}^2)`; :math:`z` is again summed out exactly.

Scales and hyperparameters
--------------------------
The prototypes :math:`m, \rho`, the spread :math:`s_p` and the bias scale :math:`s_b` (and
:math:`s_{bu}, \mu, \sigma, \tau` for ratings) are set by empirical Bayes: point estimates
that maximise the ELBO together with the guide. The item scale :math:`s_q` is fixed
(``item_prior_scale``, default 2, weak next to unit-length spectral item factors): the
likelihood only sees :math:`p \cdot q`, which is unchanged by :math:`p \to c p,\ q \to q / c`,
so one side's scale is a convention, and letting empirical Bayes shrink both sides under a
mean-field guide collapses the products (planted tastes of log-odds ~7 were fitted at ~1 and
their 90% intervals covered 7% of the generating probabilities; with prototypes and a fixed
:math:`s_q`, 86%). ``item_prior_scale=None`` restores empirical Bayes for :math:`s_q`. The
Dirichlet concentration :math:`\alpha` is a fixed hyperparameter
(``prevalence_concentration``); values below one make a one-taste user end up with one
persona.

Guides
------
Persona and item factors and biases get Normal factors (mean-field, or low-rank within a
user's persona block). The prevalences get the prior's family,
:math:`q(\pi_u) = \mathrm{Dirichlet}(\gamma_u)`. Every factor, the prevalences' included, is
moved by reparameterised gradients [4]_ of one bound, the ELBO
:math:`E_q[\log p(x, \theta) - \log q(\theta)]` (Monte Carlo, one draw per step); there is
no local step at plug-in locations. With ``user_particles = M > 1`` the bound is importance
weighted within each user instead (:mod:`bayes_persona.svi.importance`): M draws of a user's
personas and prevalence per step, one draw of the items; the model then sees the persona
block as (M, B, K, D) and scores the M draws as M users. The Dirichlet draws are made in float64: with a
concentration near 0.1 about one float32 draw in 6,000 falls below the smallest normal
float32 (1.2e-38), where torch clamps it, so the tail that prunes a persona would be cut.
A persona the user does
not need ends with :math:`\gamma \approx \alpha`: its prevalence draws are near zero, so it
claims no item, while the data can still revive it.

Plates and minibatches
----------------------
A minibatch is a subsample of users (plate ``users``), each included with the same
probability (:func:`~bayes_persona.persona.interactions.sample_users`), and, for each, up to ``L``
of their interactions (plate ``obs``) weighted by ``n_u / L_u``, so the ELBO estimate is
unbiased and a step's cost is :math:`O(B L K D)` plus the normaliser, independent of the
number of users. Items live in plate ``items``, subsampled to the positives and negatives
of the step when the softmax is sampled. A user's persona vectors form one
:math:`K \times D` event inside plate ``users`` rather than a ``personas`` plate: a plate
would declare the personas conditionally independent in the guide too, and the low-rank
guide correlates them.

Label switching
---------------
The personas of a user are exchangeable. The guides are unimodal, so a fitted guide sits in
one of the :math:`K!` symmetric modes and a persona slot means the same thing in every draw
from it. Everything reported across draws is then invariant to relabelling: outputs order a
user's personas by posterior median prevalence (persona 0 is the most prevalent), and
comparisons with planted truth match personas by the best permutation.

References
----------
.. [1] O. Barkan, Y. Fuchs, A. Caciularu, N. Koenigstein. "Explainable Recommendations via
   Attentive Multi-Persona Collaborative Filtering". RecSys 2020.
.. [2] M. D. Hoffman, D. M. Blei, C. Wang, J. Paisley. "Stochastic Variational Inference".
   JMLR 14, 2013.
.. [3] Y. Bengio, J.-S. Senecal. "Adaptive Importance Sampling to Accelerate Training of a
   Neural Probabilistic Language Model". IEEE TNN 19(4), 2008 (sampled softmax).
.. [4] D. P. Kingma, M. Welling. "Auto-Encoding Variational Bayes". ICLR 2014 (the
   reparameterised gradients of the ELBO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from bayes_persona.persona.priors import PrototypeMixture
from bayes_persona.svi.optim import gather_rows

__all__ = ["Batch", "PersonaModel", "MeanFieldGuide", "LowRankGuide", "make_guide"]


@dataclass
class Batch:
    """One minibatch, all indices internal (contiguous).

    Attributes
    ----------
    users : LongTensor, shape (B,)
        Distinct users of the step.
    items : LongTensor, shape (B, L)
        Up to ``L`` interactions of each user, padded.
    mask : BoolTensor, shape (B, L)
        Which entries of ``items`` are real.
    weight : Tensor, shape (B,)
        ``n_u / L_u``: how many of the user's interactions each kept one stands for.
    ratings : Tensor, shape (B, L), optional
        Observed ratings (explicit feedback only).
    negatives : LongTensor, shape (S,), optional
        Uniformly drawn items for the sampled softmax normaliser; ``None`` uses all items.
    obs_weight : Tensor, shape (B, L), optional
        How many choices each interaction stands for (``fit``'s ``sample_weight``); ``None``
        is one each.
    """

    users: torch.Tensor
    items: torch.Tensor
    mask: torch.Tensor
    weight: torch.Tensor
    ratings: torch.Tensor | None = None
    negatives: torch.Tensor | None = None
    obs_weight: torch.Tensor | None = None

    def item_subsample(self, n_items: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Items the step touches, and the positions of positives and negatives in them.

        Computed once per batch and kept: the guide and the model of a step both ask for it,
        and with a sampled softmax it is a sort of the step's items.

        Returns
        -------
        subsample : LongTensor, shape (C,)
        pos_local : LongTensor, shape (B, L)
        neg_local : LongTensor, shape (S,) or (C,) when the softmax is full
        """
        cached = self.__dict__.get("_item_subsample")
        if cached is not None and cached[0] == n_items:
            return cached[1]
        if self.negatives is None:
            full = torch.arange(n_items, device=self.items.device)
            out = (full, self.items, full)
        else:
            subsample, inverse = torch.unique(
                torch.cat([self.items.reshape(-1), self.negatives]), return_inverse=True
            )
            n_pos = self.items.numel()
            out = (subsample, inverse[:n_pos].reshape(self.items.shape), inverse[n_pos:])
        self.__dict__["_item_subsample"] = (n_items, out)
        return out

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


def dirichlet_log_space(conc: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """``n_draws`` draws of Dirichlet(``conc``) (K,), shape (n_draws, K), positive even for
    small concentrations: the Gamma draws are made in log space,
    ``log G(a) = log G(a + 1) + log(U) / a`` with U uniform, so that a share near zero stays
    positive instead of underflowing."""
    log_g = np.log(rng.gamma(conc + 1.0, size=(n_draws, len(conc)))) + np.log(rng.random((n_draws, len(conc)))) / conc
    out = np.exp(log_g - log_g.max(axis=1, keepdims=True))
    return out / out.sum(-1, keepdims=True)


def _softplus_inv(x: float) -> float:
    return math.log(math.expm1(x))


def _softplus_inv_tensor(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp_min(1e-6)
    return x + torch.log(-torch.expm1(-x))


# Smallest Dirichlet concentration the guide can reach.
_MIN_CONC = 1e-3


class PersonaModel(nn.Module):
    """The generative model; ``model(batch)`` is the Pyro model function.

    Its ``nn.Parameter`` s are the empirical-Bayes hyperparameters (prior scales and, for
    ratings, global mean, noise and temperature). See the module docstring for the story.

    Parameters
    ----------
    n_users, n_items : int
    n_personas : int
        K; ``K = 1`` is Bayesian matrix factorisation through the same code.
    n_factors : int
        D.
    feedback : {"implicit", "explicit"}
    prevalence_concentration : float
        Dirichlet concentration of each persona's prevalence.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_personas: int,
        n_factors: int,
        feedback: str = "implicit",
        prevalence_concentration: float = 0.5,
        rating_mean: float = 0.0,
        n_prototypes: int = 0,
        item_prior_scale: float | None = None,
        likelihood: str = "joint",
        persona_prior_scale: float | None = None,
        bias_prior_scale: float | None = None,
    ) -> None:
        super().__init__()
        if likelihood not in ("joint", "mixture"):
            raise ValueError(f"likelihood must be 'joint' or 'mixture'; got {likelihood!r}")
        self.likelihood = likelihood
        self.n_users, self.n_items = n_users, n_items
        self.n_personas, self.n_factors = n_personas, n_factors
        self.feedback = feedback
        self.prevalence_concentration = prevalence_concentration
        # Each prior scale is fixed when given, else fitted by empirical Bayes.
        self.item_prior_scale = item_prior_scale
        self.fixed_scales = {
            name: value
            for name, value in (("persona_scale", persona_prior_scale), ("item_scale", item_prior_scale),
                                ("bias_scale", bias_prior_scale))
        }  # fmt: skip
        for name, value in self.fixed_scales.items():
            if value is None:
                setattr(self, f"raw_{name}", nn.Parameter(torch.tensor(_softplus_inv(1.0))))
            else:
                self.register_buffer(f"fixed_{name}", torch.tensor(float(value)))
        self.n_prototypes = n_prototypes
        if n_prototypes > 0:
            self.prototype_loc = nn.Parameter(torch.zeros(n_prototypes, n_factors))
            self.prototype_logits = nn.Parameter(torch.zeros(n_prototypes))
        if feedback == "explicit":
            self.global_mean = nn.Parameter(torch.tensor(float(rating_mean)))
            self.raw_noise = nn.Parameter(torch.tensor(_softplus_inv(1.0)))
            self.raw_user_bias_scale = nn.Parameter(torch.tensor(_softplus_inv(0.5)))
            self.raw_temperature = nn.Parameter(torch.tensor(_softplus_inv(1.0)))

    # Positive hyperparameters through softplus.
    def scale(self, name: str) -> torch.Tensor:
        if self.fixed_scales.get(name) is not None:
            return getattr(self, f"fixed_{name}")
        return nn.functional.softplus(getattr(self, f"raw_{name}")) + 1e-4

    def forward(self, batch: Batch) -> None:
        """The Pyro model: the generative story of one minibatch."""
        K, D = self.n_personas, self.n_factors
        subsample, pos, neg = batch.item_subsample(self.n_items)
        with pyro.plate("items", self.n_items, subsample=subsample, dim=-1):
            q = pyro.sample("item_factors", dist.Normal(0.0, self.scale("item_scale")).expand([D]).to_event(1))
            b = pyro.sample("item_bias", dist.Normal(0.0, self.scale("bias_scale")))

        with pyro.plate("users", self.n_users, subsample=batch.users, dim=-2):
            if K > 1:
                alpha = torch.full((K,), self.prevalence_concentration, device=q.device, dtype=torch.float64)
                pi = pyro.sample("prevalence", dist.Dirichlet(alpha))  # (B, 1, K), float64
            else:
                pi = torch.ones(len(batch.users), 1, 1, device=q.device)
            # A user's K persona vectors are one (K, D) block, so that a guide may correlate them.
            p = pyro.sample("persona_factors", self.persona_prior()).squeeze(-3)  # (B, K, D)
            if self.feedback == "explicit":
                b_u = pyro.sample("user_bias", dist.Normal(0.0, self.scale("user_bias_scale")))  # (B, 1)

            # Which persona explains each interaction (z) is summed out exactly.
            if self.feedback == "implicit":
                full = batch.negatives is None  # the exact softmax over the whole catalogue
                # p is (B, K, D), or (M, B, K, D) with M draws of each user's block
                # (user_particles): those are scored as M * B users.
                users = p.shape[:-2]
                n_draws = p.shape[0] if len(users) == 2 else 1
                log_lik = implicit_log_likelihood(
                    pi.expand(*users, 1, pi.shape[-1]).reshape(-1, 1, pi.shape[-1]), p.reshape(-1, K, D), q, b,
                    pos.repeat(n_draws, 1), None if full else neg, self.n_items, joint=self.likelihood == "joint",
                ).reshape(*users, -1)
            else:
                affinity = torch.einsum("bkd,bld->blk", p, q[pos])  # p_uk . q_i, (B, L, K)
                log_lik = explicit_log_likelihood(
                    pi, affinity, b[pos], b_u, batch.ratings, self.global_mean,
                    self.scale("noise"), self.scale("temperature"),
                )  # fmt: skip
            # A weighted interaction counts as that many independent choices of its item.
            scale = batch.weight[:, None] if batch.obs_weight is None else batch.weight[:, None] * batch.obs_weight
            with pyro.plate("obs", batch.items.shape[1], dim=-1):
                with poutine.mask(mask=batch.mask), poutine.scale(scale=scale):
                    pyro.factor("interactions", log_lik)


    def persona_prior(self) -> dist.Distribution:
        """Prior of one user's (K, D) persona block."""
        K, D = self.n_personas, self.n_factors
        s = self.scale("persona_scale")
        if self.n_prototypes == 0:
            return dist.Normal(0.0, s).expand([K, D]).to_event(2)
        return PrototypeMixture(self.prototype_logits, self.prototype_loc, s, K)


def implicit_log_likelihood(pi, p, q, b, pos, neg, n_items: int, joint: bool = True) -> torch.Tensor:
    """``log p(i | u) = log sum_k w_uk softmax_k(i)`` for each interaction, shape (B, L).

    ``pi`` (B, 1, K); ``p`` (B, K, D); ``q`` (C, D) and ``b`` (C,) are the step's items;
    ``pos`` (B, L) indexes the positives into them, and ``neg`` (S,) the items of a sampled
    softmax, or is ``None`` for the exact softmax over all ``C = n_items`` items (then the
    positives' logits are read off the catalogue pass, :func:`log_normaliser_and_logits`).
    ``w`` are the persona shares (:func:`persona_shares`): ``pi`` itself for the mixture
    form, and ``pi_k Z_k / sum_k' pi_k' Z_k'`` for the joint form, where the log of the
    result equals ``logsumexp_k(log pi_uk + p_uk . q_i) + b_i - log sum_k pi_uk Z_uk``.
    """
    if neg is None:
        log_norm, logit = log_normaliser_and_logits(p, q, b, pos)  # (B, K), (B, L, K)
    else:
        # index_select: on CPU its backward (index_add_) is a fraction of q[pos]'s.
        log_norm = log_softmax_normaliser(p, q.index_select(0, neg), b.index_select(0, neg), n_items)
        flat = pos.reshape(-1)
        q_pos = q.index_select(0, flat).reshape(*pos.shape, q.shape[-1])
        b_pos = b.index_select(0, flat).reshape(pos.shape)
        logit = torch.einsum("bkd,bld->blk", p, q_pos) + b_pos[..., None]  # p_uk . q_i + b_i
    log_choice = logit - log_norm[:, None, :]  # log softmax_k(i)
    log_w = persona_shares(torch.log(pi).to(logit.dtype), log_norm[:, None, :], joint)
    return torch.logsumexp(log_w + log_choice, dim=-1)


def persona_shares(log_pi: torch.Tensor, log_norm: torch.Tensor, joint: bool = True) -> torch.Tensor:
    r"""Log persona shares :math:`\log w_{uk} = \log P(z = k \mid u)`, shape of ``log_pi``.

    In the joint form the user draws persona and item together,
    :math:`p(z = k, i \mid u) \propto \pi_{uk} \exp(p_{uk} \cdot q_i + b_i)`, so a persona's
    share of the user's choices is :math:`w_{uk} = \pi_{uk} Z_{uk} / \sum_{k'} \pi_{uk'} Z_{uk'}`
    with :math:`Z_{uk} = \sum_j \exp(p_{uk} \cdot q_j + b_j)` (``log_norm``, broadcastable to
    ``log_pi``). In the mixture form the prevalence is the share, :math:`w = \pi`. Either
    way :math:`p(z = k, i \mid u) = w_{uk}\, \mathrm{softmax}_k(i)`.
    """
    if not joint:
        return log_pi
    return torch.log_softmax(log_pi + log_norm, dim=-1)


def log_softmax_normaliser(p, q, b, n_items: int) -> torch.Tensor:
    """``log sum_j exp(p_uk . q_j + b_j)`` over the catalogue, shape (..., K).

    ``q`` (S, D) and ``b`` (S,) are all ``n_items`` items or a uniform sample of them;
    a sample is corrected by ``log(n_items / S)`` so that ``exp`` of the result is
    unbiased for the full sum.
    """
    return _LogNormaliser.apply(p, q, b) + math.log(n_items / q.shape[0])


def log_normaliser_and_logits(p, q, b, pos) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact catalogue normaliser ``log sum_j exp(p_uk . q_j + b_j)`` (B, K), and the
    logits ``p_uk . q_i + b_i`` of the positives ``pos`` (B, L), shape (B, L, K), from one
    pass over the (B, K, N) logits.

    Reading the positives' logits off that pass, instead of gathering their factors
    ``q[pos]`` (B, L, D), saves the gather's scatter-add backward and two batched products.
    """
    log_norm, logit = _LogNormaliser.apply(p, q, b, pos)
    return log_norm, logit.transpose(-1, -2)


# exp(-80) = 1.8e-35: above float32's smallest normal number (1.2e-38), and far below its
# resolution (6e-8) of a sum that holds the peak's term, 1.
EXP_FLOOR = -80.0


def shifted_exp_(e: torch.Tensor) -> torch.Tensor:
    """Write ``exp(e - max(e))`` (max over the last dim) over ``e``; return the max (..., 1).

    Shifted values are floored at :data:`EXP_FLOOR` first: below it ``exp`` underflows
    float32's normal range, which MKL's ``exp`` handles on a slow path (about 15x the cost;
    most of the normaliser's time on planted data with a million users), and such a term is
    below float32's resolution of a sum that holds the peak's 1.
    """
    peak = e.amax(-1, keepdim=True)
    e.sub_(peak).clamp_(min=EXP_FLOOR).exp_()
    return peak


class _LogNormaliser(torch.autograd.Function):
    """``logsumexp_j(p . q_j + b_j)`` with one pass over the (..., K, S) logits each way.

    The forward keeps the softmax it computes on the way (one GEMM, one exponential), and
    the backward reuses it: d/dlogits = g * softmax, so ``grad_p = G q``, ``grad_q = G^T p``
    and ``grad_b = sum G`` with ``G = g * softmax``. Autograd's logsumexp would keep the
    logits and exponentiate them again (about a third of an SVI step on ML-100K). The
    backward overwrites the saved exponentials, so one graph allows one backward (a second,
    with ``retain_graph``, is refused by autograd's version check)."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, q: torch.Tensor, b: torch.Tensor, pos: torch.Tensor | None = None):
        lead = p.shape[:-1]
        flat = p.reshape(-1, p.shape[-1])
        e = torch.addmm(b, flat, q.T)  # logits (..K, S)
        # With ``pos`` (B, L) (and ``p`` (B, K, D)), the positives' logits (B, K, L) are also
        # returned: a gather from this array before it is exponentiated.
        index = None if pos is None else pos[:, None, :].expand(-1, lead[-1], -1)
        logit = None if pos is None else e.view(*lead, -1).gather(-1, index)
        peak = shifted_exp_(e)  # e is now exp(logits - peak)
        z = e.sum(-1, keepdim=True)
        ctx.save_for_backward(e, z, flat, q, index)
        ctx.lead = lead
        log_norm = (peak + torch.log(z)).reshape(lead)
        return log_norm if pos is None else (log_norm, logit)

    @staticmethod
    def backward(ctx, grad: torch.Tensor, grad_logit: torch.Tensor | None = None):
        e, z, flat, q, index = ctx.saved_tensors
        # d/dlogits = grad * softmax = e * (grad / z), written over e: the graph is freed
        # after this backward, and a fresh (..K, S) array would cost more in page faults;
        # the positives' logits add their gradients at their own columns.
        g = e.mul_(grad.reshape(-1, 1) / z)
        if index is not None and grad_logit is not None:
            g.view(*ctx.lead, -1).scatter_add_(-1, index, grad_logit)
        return (g @ q).reshape(*ctx.lead, q.shape[-1]), g.T @ flat, g.sum(0), None


def explicit_log_likelihood(pi, affinity, b_i, b_u, ratings, mu, sigma, tau) -> torch.Tensor:
    """``log sum_k P(z=k | u, i) N(r | p_uk . q_i + b_i + b_u + mu, sigma)``, shape (B, L)."""
    log_attention = torch.log_softmax(torch.log(pi).to(affinity.dtype) + affinity / tau, dim=-1)
    mean = affinity + (b_i + b_u + mu)[..., None]
    log_obs = dist.Normal(mean, sigma).log_prob(ratings[..., None])
    return torch.logsumexp(log_attention + log_obs, dim=-1)


class _Guide(nn.Module):
    """Shared parts of the guides: item factors and biases, prevalences, user biases."""

    def __init__(self, model: PersonaModel, init_scale: float, generator: torch.Generator) -> None:
        super().__init__()
        U, N, K, D = model.n_users, model.n_items, model.n_personas, model.n_factors
        self.n_users, self.n_items, self.n_personas, self.n_factors = U, N, K, D
        self.explicit = model.feedback == "explicit"
        self.alpha = float(model.prevalence_concentration)
        # Row-sparse gradients for the user / item tables (lazy updates, O(batch) per step);
        # set by the caller when a step touches a small share of the rows.
        self.sparse_users = self.sparse_items = False
        raw = _softplus_inv(init_scale)
        randn = lambda *shape: 0.1 * torch.randn(*shape, generator=generator)  # noqa: E731
        self.item_loc = nn.Parameter(randn(N, D))
        self.item_raw_scale = nn.Parameter(torch.full((N, D), raw))
        self.bias_loc = nn.Parameter(torch.zeros(N))
        self.bias_raw_scale = nn.Parameter(torch.full((N,), raw))
        # q(pi_u) = Dirichlet(gamma_u), the prior's family, learned by reparameterised
        # gradients of the ELBO like every other factor (drawn in float64: see _user_scalars),
        # gamma = _MIN_CONC + softplus(raw).
        self.prevalence_raw_conc = nn.Parameter(torch.full((U, K if K > 1 else 0), _softplus_inv(1.0)))
        if self.explicit:
            self.user_bias_loc = nn.Parameter(torch.zeros(U))
            self.user_bias_raw_scale = nn.Parameter(torch.full((U,), raw))

    def forward(self, batch: Batch) -> None:
        subsample, _, _ = batch.item_subsample(self.n_items)
        self._items(subsample)
        u = batch.users
        with pyro.plate("users", self.n_users, subsample=u, dim=-2):
            self._user_scalars(u)
            pyro.sample("persona_factors", self._persona_dist(u))  # (B, 1, K, D)

    def _persona_dist(self, u: torch.Tensor) -> dist.Distribution:
        """``q(p_u)`` of the users ``u``, batch shape (B, 1), event (K, D); each guide's own."""
        raise NotImplementedError

    def initialise(self, item_loc: torch.Tensor, persona_loc: torch.Tensor, prevalence: torch.Tensor) -> None:
        """Set the locations of item factors (N, D), persona factors (U, K, D) and the
        prevalences' Dirichlet factors to a vague ``alpha + prevalence`` (U, K; rows on the
        simplex; ``alpha`` the prior's concentration): the data move them from there."""
        with torch.no_grad():
            self.item_loc.copy_(item_loc)
            self.persona_loc.copy_(persona_loc.reshape(self.persona_loc.shape))
            if self.n_personas > 1:
                self.set_prevalence_concentration(self.alpha + prevalence)

    @staticmethod
    def _pos(raw: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(raw) + 1e-5

    def _items(self, subsample: torch.Tensor) -> None:
        with pyro.plate("items", self.n_items, subsample=subsample, dim=-1):
            rows = lambda t: gather_rows(t, subsample, self.sparse_items)  # noqa: E731
            pyro.sample("item_factors", dist.Normal(rows(self.item_loc), self._pos(rows(self.item_raw_scale))).to_event(1))
            pyro.sample("item_bias", dist.Normal(rows(self.bias_loc), self._pos(rows(self.bias_raw_scale))))

    def _user_rows(self, table: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return gather_rows(table, users, self.sparse_users)

    def _user_scalars(self, users: torch.Tensor) -> None:
        if self.n_personas > 1:
            # float64 draws: at concentrations ~0.1 about one float32 draw in 6,000 falls below
            # 1.2e-38 and is clamped there; in float64 the small tail is kept.
            conc = self._conc(self._user_rows(self.prevalence_raw_conc, users))
            pyro.sample("prevalence", dist.Dirichlet(conc.double()[:, None, :]))
        if self.explicit:
            loc = self._user_rows(self.user_bias_loc, users)[:, None]
            scale = self._pos(self._user_rows(self.user_bias_raw_scale, users))[:, None]
            pyro.sample("user_bias", dist.Normal(loc, scale))

    # --- posterior draws, outside Pyro (common to both guides) ---
    def draw_items(self, eps_items: torch.Tensor, eps_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item factors (S, N, D) and biases (S, N) from standard-normal noise of those shapes."""
        q = self.item_loc + self._pos(self.item_raw_scale) * eps_items
        b = self.bias_loc + self._pos(self.bias_raw_scale) * eps_bias
        return q, b

    @staticmethod
    def _conc(raw: torch.Tensor) -> torch.Tensor:
        return _MIN_CONC + nn.functional.softplus(raw)

    @torch.no_grad()
    def set_prevalence_concentration(self, conc: torch.Tensor, users: torch.Tensor | None = None) -> None:
        """Set the Dirichlet concentrations (B, K) of ``users`` (default: all, (U, K))."""
        raw = _softplus_inv_tensor(conc - _MIN_CONC)
        if users is None:
            self.prevalence_raw_conc.copy_(raw)
        else:
            self.prevalence_raw_conc[users] = raw.to(self.prevalence_raw_conc.dtype)

    def prevalence_concentration(self, users: torch.Tensor) -> torch.Tensor:
        """Dirichlet concentrations of the users' prevalences, (B, K)."""
        return self._conc(self.prevalence_raw_conc[users])

    def draw_prevalence(self, users: torch.Tensor, rngs: list, n_draws: int) -> torch.Tensor:
        """Prevalences (S, B, K): ``n_draws`` Dirichlet draws per user from that user's
        ``numpy.random.Generator`` in ``rngs`` (so a user's draws do not depend on the batch).

        Small concentrations are drawn in log space, ``log G(a) = log G(a + 1) + log(U) / a``,
        so that a prevalence near zero stays positive instead of underflowing.
        """
        dev = self.item_loc.device
        if self.n_personas == 1:
            return torch.ones(n_draws, len(users), 1, device=dev)
        # float64: a float32 kernel may round a row differently in another batch.
        raw = self.prevalence_raw_conc[users].detach().cpu().double().numpy()
        conc = np.logaddexp(0.0, raw) + _MIN_CONC  # (B, K)
        out = np.empty((n_draws, len(users), self.n_personas))
        for j, rng in enumerate(rngs):
            out[:, j] = dirichlet_log_space(conc[j], n_draws, rng)
        return torch.as_tensor(np.maximum(out, np.finfo(np.float32).tiny), dtype=torch.float32, device=dev)

    def draw_user_bias(self, users: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """User biases (S, B) from noise (S, B); zeros for implicit feedback."""
        if not self.explicit:
            return torch.zeros_like(eps)
        return self.user_bias_loc[users] + self._pos(self.user_bias_raw_scale[users]) * eps

    def prevalence_log_density(self, users: torch.Tensor, prevalence: torch.Tensor) -> torch.Tensor:
        """``log q(pi_u)`` of prevalence draws (S, B, K), shape (S, B), in float64."""
        if self.n_personas == 1:
            return torch.zeros(prevalence.shape[:2], dtype=torch.float64, device=prevalence.device)
        conc = self.prevalence_concentration(users).double()
        return dist.Dirichlet(conc).log_prob(prevalence.double())

    def prevalence_mean(self, users: torch.Tensor) -> torch.Tensor:
        """Posterior mean prevalences under the guide, (B, K)."""
        if self.n_personas == 1:
            return torch.ones(len(users), 1, device=self.item_loc.device)
        conc = self.prevalence_concentration(users)
        return conc / conc.sum(-1, keepdim=True)

    @property
    def persona_noise_dim(self) -> int:
        """Standard normals one draw of a user's persona block consumes."""
        return self.n_personas * self.n_factors

    @property
    def noise_dim_user(self) -> int:
        """Standard normals a user's draw consumes: personas, then the user bias."""
        return self.persona_noise_dim + 1


class MeanFieldGuide(_Guide):
    """Fully factorised Normal guide (prevalences: logistic-normal via stick breaking)."""

    name = "meanfield"

    def __init__(self, model: PersonaModel, init_scale: float, generator: torch.Generator) -> None:
        super().__init__(model, init_scale, generator)
        U, K, D = self.n_users, self.n_personas, self.n_factors
        self.persona_loc = nn.Parameter(0.1 * torch.randn(U, K, D, generator=generator))
        self.persona_raw_scale = nn.Parameter(torch.full((U, K, D), _softplus_inv(init_scale)))

    def _persona_dist(self, u: torch.Tensor) -> dist.Distribution:
        loc = self._user_rows(self.persona_loc, u)[:, None]
        scale = self._pos(self._user_rows(self.persona_raw_scale, u))[:, None]
        return dist.Normal(loc, scale).to_event(2)

    def draw_personas(self, users: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Persona factors (S, B, K, D) from noise (S, B, K * D)."""
        eps = eps.reshape(eps.shape[0], len(users), self.n_personas, self.n_factors)
        return self.persona_loc[users] + self._pos(self.persona_raw_scale[users]) * eps

    def persona_median(self, users: torch.Tensor) -> torch.Tensor:
        return self.persona_loc[users]

    def persona_log_density(self, users: torch.Tensor, personas: torch.Tensor) -> torch.Tensor:
        """``log q(p_u)`` of persona draws (S, B, K, D), shape (S, B)."""
        scale = self._pos(self.persona_raw_scale[users])
        return dist.Normal(self.persona_loc[users], scale).log_prob(personas).sum((-1, -2))


class LowRankGuide(_Guide):
    """Guide with a low-rank-plus-diagonal covariance within each user's persona block.

    The K x D persona vectors of a user are jointly Normal with covariance
    ``W W^T + diag(d)``, ``W`` of rank ``rank``; this lets the guide express that two
    personas trade off (the uncertainty that matters for the persona probabilities).
    """

    name = "lowrank"

    def __init__(self, model: PersonaModel, init_scale: float, generator: torch.Generator, rank: int = 4) -> None:
        super().__init__(model, init_scale, generator)
        U, K, D = self.n_users, self.n_personas, self.n_factors
        self.rank = rank
        self.persona_loc = nn.Parameter(0.1 * torch.randn(U, K * D, generator=generator))
        self.persona_cov_factor = nn.Parameter(0.01 * init_scale * torch.randn(U, K * D, rank, generator=generator))
        self.persona_raw_diag = nn.Parameter(torch.full((U, K * D), _softplus_inv(init_scale)))

    def _persona_dist(self, u: torch.Tensor) -> dist.Distribution:
        mvn = dist.LowRankMultivariateNormal(
            self._user_rows(self.persona_loc, u)[:, None],
            self._user_rows(self.persona_cov_factor, u)[:, None],
            self._pos(self._user_rows(self.persona_raw_diag, u))[:, None] ** 2,
        )
        shape = (self.n_personas, self.n_factors)
        return dist.TransformedDistribution(mvn, torch.distributions.transforms.ReshapeTransform((shape[0] * shape[1],), shape))

    def draw_personas(self, users: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Persona factors (S, B, K, D) from noise (S, B, K * D + rank)."""
        S, B = eps.shape[0], len(users)
        KD = self.n_personas * self.n_factors
        eps_diag, eps_low = eps[..., :KD], eps[..., KD : KD + self.rank]
        x = (
            self.persona_loc[users]
            + self._pos(self.persona_raw_diag[users]) * eps_diag
            + torch.einsum("bdr,sbr->sbd", self.persona_cov_factor[users], eps_low)
        )
        return x.reshape(S, B, self.n_personas, self.n_factors)

    def persona_median(self, users: torch.Tensor) -> torch.Tensor:
        return self.persona_loc[users].reshape(len(users), self.n_personas, self.n_factors)

    def persona_log_density(self, users: torch.Tensor, personas: torch.Tensor) -> torch.Tensor:
        """``log q(p_u)`` of persona draws (S, B, K, D), shape (S, B)."""
        return self._persona_dist(users).log_prob(personas[:, :, None])[..., 0]

    @property
    def persona_noise_dim(self) -> int:
        return self.n_personas * self.n_factors + self.rank


def make_guide(kind: str, model: PersonaModel, init_scale: float, generator: torch.Generator) -> _Guide:
    """Build the guide named ``kind`` (``"meanfield"`` or ``"lowrank"``) for ``model``."""
    if kind == "meanfield":
        return MeanFieldGuide(model, init_scale, generator)
    if kind == "lowrank":
        return LowRankGuide(model, init_scale, generator)
    raise ValueError(f"guide must be 'meanfield' or 'lowrank'; got {kind!r}")
