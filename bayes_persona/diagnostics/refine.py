r"""Posterior draws refined by a Gibbs sampler that uses the fitted guide as its proposal.

A mean-field guide's draws of the item factors are too narrow, and no per-user device
(importance weights, resampled user draws) reaches them. This sampler starts from a draw
of the guide and alternates two kernels, each of which leaves the exact posterior of the
model invariant:

* **items**, one at a time: independence Metropolis-Hastings with the guide's
  :math:`q(q_i, b_i)` as the proposal, accepted with probability
  :math:`\min\{1, \frac{p(x \mid q_i', \cdot)\, p(q_i', b_i')\, q(q_i, b_i)}
  {p(x \mid q_i, \cdot)\, p(q_i, b_i)\, q(q_i', b_i')}\}`; a step costs
  :math:`O(U K)` plus the picks of the item's users, with each user's softmax normalisers
  updated incrementally;
* **users**, all at once (they are independent given the items): conditional importance
  resampling [1]_ of each user's personas and prevalence, the current state among
  ``user_candidates - 1`` guide draws, one kept with probability proportional to
  :math:`p(x_u \mid \theta_u, q, b)\, p(\theta_u) / q(\theta_u)`.

The better the guide covers the posterior, the faster the chain mixes: a guide fitted by
the per-user importance-weighted bound (``user_particles``) is the better proposal. Every
sweep passes over the whole catalogue ``user_candidates`` times per user, so this is a
diagnostic for small worlds (simulation-based calibration, the NUTS comparison), not a
serving path. It is also where the chain mixes: on larger worlds an item chosen by many
users has a posterior sharper than its mean-field guide, its independence proposals are
mostly refused, and the kept draws repeat; :func:`gibbs_draws` then warns
(:class:`~bayes_persona.MixingWarning`).

References
----------
.. [1] C. Andrieu, A. Doucet, R. Holenstein. "Particle Markov chain Monte Carlo methods".
   JRSS B 72(3), 2010 (conditional SMC; with one step, conditional importance resampling).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp

from bayes_persona.data._validation import check_min_int, check_positive_float
from bayes_persona.exceptions import DataValidationError, MixingWarning
from bayes_persona.persona.model import dirichlet_log_space

__all__ = ["gibbs_draws"]


def _log_normal(x: np.ndarray, loc: np.ndarray | float, scale: np.ndarray | float) -> np.ndarray:
    """Log density of independent Normals, summed over the last axis."""
    z = (x - loc) / scale
    return (-0.5 * z * z - np.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def _dirichlet(conc: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` Dirichlet draws of each row of ``conc`` (U, K), shape (n, U, K), by the guide's
    log-space sampler (:func:`~bayes_persona.persona.model.dirichlet_log_space`)."""
    return np.stack([dirichlet_log_space(c, n, rng) for c in conc], axis=1)


class _World:
    """The model's pieces as float64 arrays, and the log densities the kernels need."""

    def __init__(self, model: Any, proposal_scale: float = 1.0) -> None:
        g, pm = model.guide_, model.model_
        f64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
        pos = lambda raw: f64(torch.nn.functional.softplus(raw) + 1e-5)  # noqa: E731 (the guide's _pos)
        self.guide, self.prior = g, pm
        # the proposals: the guide, its spread widened by proposal_scale
        self.c = float(proposal_scale)
        self.q_loc, self.q_scale = f64(g.item_loc), self.c * pos(g.item_raw_scale)
        self.b_loc, self.b_scale = f64(g.bias_loc), self.c * pos(g.bias_raw_scale)
        self.s_q, self.s_b = float(pm.scale("item_scale")), float(pm.scale("bias_scale"))
        self.joint = pm.likelihood == "joint"
        self.alpha = float(pm.prevalence_concentration)
        self.U, self.N = len(model.user_vocab_), len(model.item_vocab_)
        self.K, self.D = model.n_personas, model.n_factors
        rows, cols = model.seen_.rows_of(np.arange(self.U))
        counts = np.bincount(rows, minlength=self.U)
        L = max(int(counts.max()), 1)
        slot = np.arange(len(rows)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[rows]  # position in its row
        self.pos = np.zeros((self.U, L), dtype=np.int64)
        self.mask = np.zeros((self.U, L))
        # a pick's weight (fit's sample_weight: how many choices of the item it stands for)
        self.pos[rows, slot], self.mask[rows, slot] = cols, model.seen_.weights_of(np.arange(self.U))
        # where each item sits among the picks: (users, slots)
        by_item = np.argsort(cols, kind="stable")
        starts = np.searchsorted(cols[by_item], np.arange(self.N + 1))
        self.slots = [(rows[by_item[a:z]], slot[by_item[a:z]]) for a, z in zip(starts[:-1], starts[1:], strict=True)]

    def picks(self, S: np.ndarray) -> np.ndarray:
        """The logits of each user's picks, (..., U, K, L), from all logits (..., U, K, N)."""
        idx = np.broadcast_to(self.pos[:, None, :], (*S.shape[:-1], self.pos.shape[1]))
        return np.take_along_axis(S, idx, -1)

    def draw_users(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` guide draws of every user's block: personas (n, U, K, D), prevalences
        (n, U, K) and ``log q`` of each (n, U)."""
        g, U = self.guide, self.U
        users = torch.arange(U)
        eps = torch.as_tensor(rng.standard_normal((n, U, g.persona_noise_dim)), dtype=torch.float32)
        with torch.no_grad():
            p = g.draw_personas(users, eps).double()
            log_q = g.persona_log_density(users, p.float()).double()
            if self.c != 1.0:  # widened around the guide's mean: x -> loc + c (x - loc)
                loc = g.persona_median(users).double().reshape(self.U, self.K, self.D)  # the mean of a Gaussian
                p = loc + self.c * (p - loc)
                log_q = log_q - self.K * self.D * math.log(self.c)
            if self.K > 1 and self.c != 1.0:  # widened: the guide's concentrations over c^2, same mean
                conc = g.prevalence_concentration(users).double().numpy() / self.c**2  # (U, K)
                pi = torch.as_tensor(_dirichlet(conc, n, rng))
                log_q = log_q + torch.distributions.Dirichlet(torch.as_tensor(conc)).log_prob(pi)
            elif self.K > 1:
                pi = g.draw_prevalence(users, [rng] * U, n).double()
                log_q = log_q + g.prevalence_log_density(users, pi)
            else:
                pi = torch.ones(n, U, 1, dtype=torch.float64)
        return p.numpy(), pi.numpy(), log_q.numpy()

    def log_prior_users(self, p: np.ndarray, pi: np.ndarray) -> np.ndarray:
        """``log p(p_u) + log p(pi_u)`` of blocks (..., U, K, D) and (..., U, K), shape (..., U)."""
        with torch.no_grad():
            out = self.prior.persona_prior().log_prob(torch.as_tensor(p, dtype=torch.float32)).double().numpy()
        if self.K > 1:
            alpha = torch.full((self.K,), self.alpha, dtype=torch.float64)
            out = out + torch.distributions.Dirichlet(alpha).log_prob(torch.as_tensor(pi)).numpy()
        return out

    def log_lik_users(self, log_pi: np.ndarray, S_pick: np.ndarray, log_Z: np.ndarray) -> np.ndarray:
        r"""``log p(x_u | ...)`` of every user, (..., U), from the logits of the picks
        ``S_pick`` (..., U, K, L) and the normalisers ``log_Z`` (..., U, K):
        :math:`\log p(j \mid u) = \mathrm{lse}_k(\log w_{uk} + S_{ukj} - \log Z_{uk})` with the
        persona shares ``w`` of the model's form."""
        return (self.mask * logsumexp((self.log_shares(log_pi, log_Z) - log_Z)[..., None] + S_pick, -2)).sum(-1)

    def log_shares(self, log_pi: np.ndarray, log_Z: np.ndarray) -> np.ndarray:
        """Log persona shares of the model's form, as
        :func:`~bayes_persona.persona.model.persona_shares` (in numpy)."""
        return log_softmax(log_pi + log_Z, -1) if self.joint else log_pi


def gibbs_draws(
    model: Any,
    num_samples: int,
    *,
    burn: int = 30,
    thin: int = 2,
    user_candidates: int = 50,
    proposal_scale: float = 1.0,
    random_state: int = 0,
) -> dict[str, np.ndarray]:
    """Draws of a fitted model's posterior by the guide-proposal Gibbs sampler (module docstring).

    Parameters
    ----------
    model : PersonaRecommender
        Fitted, implicit feedback, the exact softmax (``n_negatives`` unset on a small
        catalogue).
    num_samples : int
        Draws kept.
    burn : int, default 30
        Sweeps before the first kept draw.
    thin : int, default 2
        Sweeps between kept draws.
    user_candidates : int, default 50
        States among which each user's block is resampled per sweep (the current one and
        ``user_candidates - 1`` guide draws).
    proposal_scale : float, default 1
        Widen the proposals around the guide's means by this factor: the items' Normal
        scales, each persona block's deviation from its mean, and the prevalences (the
        guide's Dirichlet concentrations divided by ``proposal_scale ** 2``, the same mean).
        An independence proposal lighter-tailed than the posterior rarely reaches its tails,
        even at a good acceptance rate; a wider one does, at a lower rate.
    random_state : int, default 0

    Returns
    -------
    dict
        In the arguments of :func:`bayes_persona.diagnostics.sbc.invariant_quantities`:
        ``item_factors`` (S, N, D), ``item_bias`` (S, N), ``persona_factors`` (S, U, K, D),
        ``log_shares`` (S, U, K), and ``acceptance``: the share of item proposals accepted
        and of users whose block moved, per sweep (2, sweeps).

    Warns
    -----
    MixingWarning
        When, after burn-in, the items or the users' blocks would keep their state from one
        kept draw to the next more often than not (``(1 - acceptance) ** thin`` above one
        half): most kept draws then repeat and understate the posterior's spread.
    """
    model.posterior_  # noqa: B018 (NotFittedError before fit)
    if model.feedback != "implicit":
        raise DataValidationError(f"gibbs_draws needs feedback='implicit'; got {model.feedback!r}")
    S_keep = check_min_int("num_samples", num_samples, 1)
    burn = check_min_int("burn", burn, 0)
    thin = check_min_int("thin", thin, 1)
    M = check_min_int("user_candidates", user_candidates, 2)
    seed = check_min_int("random_state", random_state, 0)
    c = check_positive_float("proposal_scale", proposal_scale)
    rng = np.random.default_rng([seed, 0x61BB5])
    w = _World(model, c)
    N, D = w.N, w.D

    q = w.q_loc + w.q_scale * rng.standard_normal((N, D))
    b = w.b_loc + w.b_scale * rng.standard_normal(N)
    p, pi, log_q_u = (x[0] for x in w.draw_users(1, rng))
    kept: dict[str, list] = {"q": [], "b": [], "p": [], "pi": []}
    acceptance = []
    for sweep in range(burn + S_keep * thin):
        S = np.einsum("ukd,nd->ukn", p, q) + b  # (U, K, N)
        E = np.exp(S)
        Z = E.sum(-1)
        S_pick = w.picks(S)
        log_pi = np.log(pi)
        ll = w.log_lik_users(log_pi, S_pick, np.log(Z))
        # items, one at a time: independence Metropolis-Hastings from the guide
        qn = w.q_loc + w.q_scale * rng.standard_normal((N, D))
        bn = w.b_loc + w.b_scale * rng.standard_normal(N)
        log_u = np.log(rng.random(N))
        accepted = 0
        for i in range(N):
            s_new = p @ qn[i] + bn[i]  # (U, K)
            e_new = np.exp(s_new)
            Z_new = Z - E[:, :, i] + e_new
            us, ls = w.slots[i]
            old = S_pick[us, :, ls].copy()
            S_pick[us, :, ls] = s_new[us]
            ll_new = w.log_lik_users(log_pi, S_pick, np.log(Z_new))
            log_ratio = (
                (ll_new - ll).sum()
                + _log_normal(qn[i], 0.0, w.s_q) - _log_normal(q[i], 0.0, w.s_q)
                + _log_normal(bn[i : i + 1], 0.0, w.s_b) - _log_normal(b[i : i + 1], 0.0, w.s_b)
                + _log_normal(q[i], w.q_loc[i], w.q_scale[i]) - _log_normal(qn[i], w.q_loc[i], w.q_scale[i])
                + _log_normal(b[i : i + 1], w.b_loc[i : i + 1], w.b_scale[i : i + 1])
                - _log_normal(bn[i : i + 1], w.b_loc[i : i + 1], w.b_scale[i : i + 1])
            )  # fmt: skip
            if log_u[i] < log_ratio:
                q[i], b[i], E[:, :, i], Z, ll = qn[i], bn[i], e_new, Z_new, ll_new
                accepted += 1
            else:
                S_pick[us, :, ls] = old
        # users, all at once: the current block among M - 1 guide draws, one kept by its weight
        pc, pic, log_qc = w.draw_users(M - 1, rng)
        pc, pic = np.concatenate([p[None], pc]), np.concatenate([pi[None], pic])
        log_qc = np.concatenate([log_q_u[None], log_qc])
        log_wt = w.log_prior_users(pc, pic) - log_qc  # (M, U)
        for m in range(M):  # one candidate at a time: a (U, K, N) array, not (M, U, K, N)
            Sm = np.einsum("ukd,nd->ukn", pc[m], q) + b
            log_wt[m] += w.log_lik_users(np.log(pic[m]), w.picks(Sm), logsumexp(Sm, -1))
        prob = np.exp(log_wt - log_wt.max(0))
        prob /= prob.sum(0)
        pick = np.minimum((rng.random(w.U)[None] > np.cumsum(prob, 0)).sum(0), M - 1)
        at = np.arange(w.U)
        p, pi, log_q_u = pc[pick, at], pic[pick, at], log_qc[pick, at]
        acceptance.append((accepted / N, float((pick > 0).mean())))
        if sweep >= burn and (sweep - burn) % thin == thin - 1:
            for k, v in (("q", q), ("b", b), ("p", p), ("pi", pi)):
                kept[k].append(v.copy())
    acceptance = np.asarray(acceptance).T  # (2, sweeps)
    _warn_if_stuck(acceptance[:, burn:], thin)
    q_, b_, p_, pi_ = (np.stack(kept[k]) for k in ("q", "b", "p", "pi"))
    log_Z = logsumexp(np.einsum("sukd,snd->sukn", p_, q_) + b_[:, None, None, :], -1)
    return {"item_factors": q_, "item_bias": b_, "persona_factors": p_, "log_shares": w.log_shares(np.log(pi_), log_Z),
            "acceptance": acceptance}  # fmt: skip


def _warn_if_stuck(acceptance: np.ndarray, thin: int) -> None:
    """Warn when most kept draws of the items or of the users' blocks repeat the one before.

    ``acceptance`` (2, sweeps after burn-in) holds the share of item proposals accepted and
    of users whose block moved. A block that moves at rate ``a`` per sweep keeps its state
    from one kept draw to the next with probability ``(1 - a) ** thin``; above one half,
    most kept draws repeat and intervals from them are too narrow. The guide proposes well
    where each item's posterior is close to its guide, as on the small worlds of the NUTS
    comparison and of simulation-based calibration; an item chosen by many users has a
    posterior sharper than a mean-field guide, and its proposals are mostly refused."""
    if acceptance.shape[1] == 0:
        return
    items, users = acceptance.mean(1)
    repeat = (1.0 - min(items, users)) ** thin
    if repeat > 0.5:
        warnings.warn(
            f"gibbs_draws: item proposals were accepted at {items:.1%} and user blocks moved at "
            f"{users:.1%} per sweep, so with thin={thin} about {repeat:.0%} of the kept draws "
            "repeat the one before: they understate the posterior's spread. Raise thin (and "
            "burn), or keep this sampler to small worlds, where the guide proposes well",
            MixingWarning,
            stacklevel=3,
        )
