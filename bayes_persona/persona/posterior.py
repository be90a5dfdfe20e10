"""The fitted posterior of a :class:`~bayes_persona.PersonaRecommender`, as an object.

``model.posterior_`` returns a :class:`PersonaPosterior`: draws of the item and user
parameters from the guide (with common random numbers per user, so that a user's draws do
not depend on which other users share the call), the per-draw joint ``log P(z = k, i | u)``
over the catalogue, and the per-draw explanations ``P(z = k | u, i)``. The estimator's
outputs, the diagnostics (ArviZ export, recovery, SBC, summary), the plots and fold-in all
read the posterior through these methods.

Indices, not ids: every method takes the model's user and item *indices* (its vocabularies'
positions); :meth:`PersonaPosterior.encode_users` turns ids into them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch

from bayes_persona.data._validation import as_id_list, check_prob
from bayes_persona.exceptions import DataValidationError
from bayes_persona.persona.model import log_normaliser_and_logits, persona_shares, shifted_exp_

__all__ = ["PersonaPosterior", "CHUNK_FLOATS"]

logger = logging.getLogger(__name__)

#: Floats of the largest transient (S, B, K, N) array a chunk of users may allocate.
CHUNK_FLOATS = 2**22
#: ``fit`` computes every user's persona order when users x draws x personas x items is at
#: most this (4e9: about three times ML-100K's); above it, an order is computed when served.
ORDERS_AT_FIT = 4 * 10**9
_CACHE_LOCK = threading.Lock()  # guards filling the estimator's draw cache (module-level: picklable models)


class PersonaPosterior:
    """Posterior draws of a fitted :class:`~bayes_persona.PersonaRecommender`.

    Parameters
    ----------
    model : PersonaRecommender
        Fitted; get the object as ``model.posterior_``, which checks that.
    cache : dict, optional
        Where the fixed item draws are kept between calls; ``model.posterior_`` passes the
        model's own, which its ``fit`` and ``load`` reset. Default: a fresh one.
    """

    def __init__(self, model: Any, cache: dict[str, Any] | None = None) -> None:
        self.model = model
        self.cache: dict[str, Any] = {} if cache is None else cache

    @property
    def device(self) -> torch.device:
        """Where the guide's tensors live."""
        return self.model.guide_.item_loc.device

    def encode_users(self, user_ids: Any, name: str = "user_ids") -> tuple[np.ndarray, np.ndarray]:
        """``(ids, indices)`` of known user ids (``UnknownIdError`` names ``name``)."""
        ids = as_id_list(user_ids, name)
        return ids, self.model.user_vocab_.encode(ids)

    def interval_prob(self, hdi_prob: float | None) -> float:
        """``hdi_prob`` checked, or the model's own when None."""
        return check_prob("hdi_prob", self.model.hdi_prob if hdi_prob is None else hdi_prob)

    def item_draws(self, n_draws: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item factors (S, N, D) and biases (S, N): ``n_draws`` fixed draws, cached per model."""
        est = self.model
        key = f"items{n_draws}"
        cache = self.cache
        if key not in cache:
            with _CACHE_LOCK:  # threads share one fitted model: fill the cache once
                if key not in cache:
                    g = torch.Generator().manual_seed(est.random_state + 7919)
                    N, D = est.guide_.n_items, est.guide_.n_factors
                    eps_q = torch.randn(n_draws, N, D, generator=g).to(self.device)
                    eps_b = torch.randn(n_draws, N, generator=g).to(self.device)
                    cache[key] = est.guide_.draw_items(eps_q, eps_b)
        return cache[key]

    def item_draws_t(self, n_draws: int) -> torch.Tensor:
        """The item factors of :meth:`item_draws` transposed, (S, D, N), contiguous and cached:
        the layout the per-user GEMMs over the catalogue read fastest."""
        key = f"items_t{n_draws}"
        cache = self.cache
        if key not in cache:
            q, _ = self.item_draws(n_draws)
            with _CACHE_LOCK:
                cache.setdefault(key, q.transpose(1, 2).contiguous())
        return cache[key]

    def user_rng(self, user: int) -> np.random.Generator:
        """The user's own random stream: its draws do not depend on the batch it is asked in."""
        return np.random.default_rng([self.model.random_state, 104729, int(user)])

    def log_prior_over_guide(self, user: torch.Tensor, personas: torch.Tensor, prevalence: torch.Tensor) -> torch.Tensor:
        """``log p(theta) - log q(theta)`` of one user's draws (float64, shape (S,)): personas
        (S, 1, K, D) and prevalences (S, 1, K) under the prior at the fitted hyperparameters and
        under the guide (``user`` a one-element index tensor)."""
        g, m = self.model.guide_, self.model.model_
        log_w = m.persona_prior().log_prob(personas)[:, 0].double() - g.persona_log_density(user, personas)[:, 0].double()
        if self.model.n_personas > 1:
            alpha = torch.full((self.model.n_personas,), float(m.prevalence_concentration), dtype=torch.float64,
                               device=self.device)  # fmt: skip
            log_w = log_w + torch.distributions.Dirichlet(alpha).log_prob(prevalence[:, 0].double())
            log_w = log_w - g.prevalence_log_density(user, prevalence)[:, 0]
        return log_w

    def user_draws(
        self, users: np.ndarray, n_draws: int, with_softmax: bool = False, shares: bool = True
    ) -> dict[str, torch.Tensor]:
        """Persona factors (S,B,K,D), prevalences (S,B,K), user biases (S,B) with per-user seeds.

        For implicit feedback ``prevalence`` is each persona's share of the user's choices,
        ``P(z = k | u)`` (:func:`~bayes_persona.persona.model.persona_shares`; for the joint form it
        depends on the item draws), so that ``P(z = k, i | u) = w_k softmax_k(i)`` in every
        form. Implicit feedback with the joint form, or ``with_softmax``, adds ``log_norm``
        (S, B, K), each persona's log softmax normaliser over the catalogue. With
        ``with_softmax`` (implicit feedback only) the result also holds ``scores`` (B, N),
        the posterior mean of ``P(i | u)``, from the same per-user products that give the
        shares (one pass over the catalogue, no (S, B, K, N) array kept). ``shares=False``
        skips that pass (``prevalence`` is then the drawn ``pi`` itself, and no ``log_norm``):
        what :meth:`attention_at` needs.
        """
        est = self.model
        g = est.guide_
        eps = np.empty((n_draws, len(users), g.noise_dim_user), dtype=np.float32)
        rngs = []
        for j, u in enumerate(users):
            rng = self.user_rng(u)
            eps[:, j, :] = rng.standard_normal((n_draws, g.noise_dim_user), dtype=np.float32)
            rngs.append(rng)  # then the prevalence draws, from the same per-user stream
        eps_t = torch.from_numpy(eps).to(self.device)
        uu = torch.as_tensor(users, device=self.device)
        K = est.n_personas
        p = g.draw_personas(uu, eps_t[..., :-1])
        pi = pi_prior = g.draw_prevalence(uu, rngs, n_draws)
        joint = est.feedback == "implicit" and est.likelihood == "joint" and K > 1 and shares
        out: dict[str, torch.Tensor] = {}
        if joint or with_softmax:
            if est.feedback != "implicit":
                raise ValueError("with_softmax applies to implicit feedback only")
            q, b = self.item_draws(n_draws)
            # One user at a time: the same kernels whatever the batch, so that a user's
            # shares (and scores) are bit-identical in batch and single-user calls.
            qt, bias = self.item_draws_t(n_draws), b[:, None, :]
            log_pi = torch.log(pi)
            norms, scores = [], []
            # One (S, K, N) buffer for every user: a fresh one per user costs more in page
            # faults than its GEMM.
            e = torch.empty(n_draws, K, qt.shape[-1], dtype=qt.dtype, device=qt.device)
            for j in range(len(users)):
                # One pass over the logits: the GEMM adds the biases, and the shifted
                # exponentials give both the normaliser and the softmax.
                torch.baddbmm(bias, p[:, j], qt, out=e)  # logits (S, K, N)
                peak = shifted_exp_(e)  # e now holds exp(logit - peak), floored
                z = e.sum(-1)
                lse = peak[..., 0] + torch.log(z)  # (S, K)
                norms.append(lse)
                if with_softmax:  # P(i | u) = mean_s sum_k w_sk softmax_k(i): one GEMV per user
                    w = persona_shares(log_pi[:, j], lse, joint).exp() if K > 1 else torch.ones_like(lse)
                    coef = (w / z).reshape(-1).to(e.dtype) / n_draws
                    scores.append(torch.mv(e.reshape(-1, e.shape[-1]).T, coef))
            out["log_norm"] = torch.stack(norms, 1)  # (S, B, K)
            if joint:
                pi = persona_shares(log_pi, out["log_norm"]).exp()
            if with_softmax:
                out["scores"] = torch.stack(scores)  # (B, N)
        out.update(persona_factors=p, prevalence=pi, user_bias=g.draw_user_bias(uu, eps_t[..., -1]))
        out["prior_prevalence"] = pi_prior  # the drawn pi itself (the joint form reports shares)
        return out

    def log_joint_at(self, draws: dict[str, torch.Tensor], items: torch.Tensor, n_draws: int) -> torch.Tensor:
        """Per-draw ``log P(z = k, i | u)`` (S, B, K, n) at item indices ``items`` (B, n), slot
        order, from :meth:`user_draws` output that holds ``log_norm`` (implicit feedback):
        no pass over the catalogue beyond the one that gave the normalisers."""
        q, b = self.item_draws(n_draws)
        p, w, lse = draws["persona_factors"], draws["prevalence"], draws["log_norm"]
        q_at = q[:, items]  # (S, B, n, D)
        logits = torch.einsum("sbkd,sbnd->sbkn", p, q_at) + b[:, items][:, :, None, :]
        return torch.log(w)[..., None] + logits - lse[..., None]

    def choice_at(self, draws: dict[str, torch.Tensor], items: torch.Tensor, n_draws: int) -> torch.Tensor:
        """Per-draw ``P(z = k | u, i)`` (S, B, K, n) at item indices ``items`` (B, n), slot
        order (the softmax over personas of :meth:`log_joint_at`)."""
        return torch.softmax(self.log_joint_at(draws, items, n_draws), dim=2)

    def attention_at(self, draws: dict[str, torch.Tensor], items: torch.Tensor, n_draws: int) -> torch.Tensor:
        """Per-draw ``P(z = k | u, i)`` (S, B, K, n) of the joint form at item indices ``items``
        (B, n), slot order: ``softmax_k(log pi_uk + p_uk . q_i)``, AMP-CF's attention with the
        prevalence as its prior. The catalogue normalisers cancel, so ``draws`` may come from
        :meth:`user_draws` with ``shares=False``; equal to :meth:`choice_at` for the joint form."""
        q, _ = self.item_draws(n_draws)
        logits = torch.einsum("sbkd,sbnd->sbkn", draws["persona_factors"], q[:, items])
        return torch.softmax(torch.log(draws["prior_prevalence"])[..., None] + logits, dim=2)

    @property
    def closed_form(self) -> bool:
        """Whether the ranking statistic has its closed form (:meth:`log_expected_weight`):
        implicit feedback, the joint likelihood and the mean-field guide (the default)."""
        est = self.model
        return est.feedback == "implicit" and est.likelihood == "joint" and est.guide == "meanfield"

    def log_expected_weight(self, users: np.ndarray) -> torch.Tensor:
        r"""Log ranking weight of every item for a chunk of users: the posterior mean of the
        choice weight over the user's parameters, at the items' posterior means.

        In the joint form ``P(i | u) = W_ui / sum_j W_uj`` with the choice weight
        :math:`W_{ui} = \sum_k \pi_{uk} \exp(p_{uk} \cdot q_i + b_i)`. Under the mean-field
        guide the user's prevalence :math:`\pi_u` (Dirichlet) and persona factors
        :math:`p_{uk} \sim N(a_{uk}, \mathrm{diag}(s_{uk}^2))` are independent, so with the
        item's parameters at their posterior means :math:`\bar q_i = c_i`,
        :math:`\bar b_i = \mu_{b_i}`

        .. math::

            \bar W_{ui} = E_{\pi_u, p_u}\left[W_{ui} \mid \bar q_i, \bar b_i\right]
            = \sum_k E[\pi_{uk}]\,
            \exp\left(a_{uk} \cdot c_i + \tfrac12 \textstyle\sum_d s_{ukd}^2 c_{id}^2 + \mu_{b_i}\right),

        finite for every guide, and one (K, 2D) x (2D, N) product per user: no draws, no
        Monte Carlo noise. The items' own uncertainty is left out on purpose. Averaged over it, an
        item's weight gains :math:`\exp\big(\tfrac12 a^2 t^2 / (1 - s^2 t^2)\big)` per factor
        dimension (:math:`t^2` the item's variance): a bonus for being uncertain, which puts
        the least-known items on top as the guide's scales grow and is infinite from
        :math:`s^2 t^2 = 1` on. An earlier version ranked by that full expectation and
        failed silently on long fits (paper, section 6).

        Parameters
        ----------
        users : ndarray of int, shape (B,)

        Returns
        -------
        log_w : Tensor, shape (B, N)
            :math:`\log \bar W_{ui}`.
        """
        g = self.model.guide_
        u = torch.as_tensor(users, device=self.device)
        with torch.no_grad():
            # a . c_i + sum_d s^2 c_i^2 / 2 as one product of (K, 2D) and (2D, N) per user
            x = torch.cat([g.persona_loc[u], g._pos(g.persona_raw_scale[u]) ** 2 / 2], -1)  # (B, K, 2D)
            ct = torch.cat([g.item_loc, g.item_loc**2], -1).T.contiguous()  # (2D, N)
            log_pi = torch.log(g.prevalence_mean(u)).to(x.dtype)  # E[pi_uk] (Dirichlet mean), (B, K)
            out = torch.empty(len(u), ct.shape[1], dtype=x.dtype, device=x.device)
            buf = torch.empty(x.shape[1], ct.shape[1], dtype=x.dtype, device=x.device)
            for j in range(len(u)):  # user by user: a user's weights do not depend on the chunk
                torch.mm(x[j], ct, out=buf).add_(log_pi[j, :, None])
                torch.logsumexp(buf, 0, out=out[j])
            return out.add_(g.bias_loc)

    def persona_orders(self, users: np.ndarray, n_draws: int) -> torch.Tensor:
        """:meth:`persona_order` of each user's share draws (B, K), cached per user.

        The order needs each draw's catalogue normalisers (one (S, K, N) pass per user);
        it is kept in the model's cache, so that serving the same user again skips that pass.
        """
        est = self.model
        key = f"orders{n_draws}"
        U, K = len(est.user_vocab_), est.n_personas
        with _CACHE_LOCK:
            table = self.cache.get(key)
            if table is None or table.shape != (U, K):
                table = self.cache[key] = np.full((U, K), -1, dtype=np.int64)
            missing = np.unique(users[table[users, 0] < 0])
        if len(missing):
            step = self.chunk_size(n_draws, items_per_user=1)
            for s in range(0, len(missing), step):
                chunk = missing[s : s + step]
                prev = self.user_draws(chunk, n_draws)["prevalence"]
                table[chunk] = self.persona_order(prev).cpu().numpy()  # same rows whoever writes
        return torch.as_tensor(table[users], device=self.device)

    def orders_at_fit(self, n_draws: int) -> bool:
        """Fill every user's :meth:`persona_orders` now if that costs at most
        :data:`ORDERS_AT_FIT` logits (one catalogue pass per draw and user); whether it did."""
        est = self.model
        U, N = len(est.user_vocab_), len(est.item_vocab_)
        if U * n_draws * est.n_personas * N > ORDERS_AT_FIT:
            logger.info("persona orders: computed when each user is first served (%d users x %d items)", U, N)
            return False
        self.persona_orders(np.arange(U), n_draws)
        return True

    def importance_weights(self, users: np.ndarray, n_draws: int | None = None):
        """Pareto-smoothed importance weights of each user's guide draws (implicit feedback).

        For draw ``s`` of a user's personas and prevalence ``theta_us`` (and of the items
        ``phi_s``), the log weight is ``log p(x_u | theta_us, phi_s) + log p(theta_us) -
        log q(theta_us)``: the user's whole training history under the exact likelihood
        (z summed out), the prior at the fitted hyperparameters, and the guide. Pareto
        smoothing [1]_ (``arviz.psislw``) estimates the tail shape ``k`` of the weights: below
        0.7 the guide's draws can be reweighted into posterior draws of the user's block
        (given the items); above it the guide misses where the posterior puts its mass, and
        its intervals for that user should not be trusted. The weights condition on the item
        draws, so they diagnose the per-user part of the approximation only.

        Parameters
        ----------
        users : ndarray of int, shape (B,)
            User indices.
        n_draws : int, optional
            Draws per user; default the model's ``n_draws`` (the draws behind its outputs).

        Returns
        -------
        log_weights : ndarray, shape (B, S)
            Smoothed, normalised log weights.
        k_hat : ndarray, shape (B,)
            Pareto shape estimates.
        ess : ndarray, shape (B,)
            Effective sample size of the smoothed weights, ``1 / sum w^2``.

        References
        ----------
        .. [1] A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. "Pareto Smoothed Importance
           Sampling". JMLR 25(72), 2024.
        .. [2] Y. Yao, A. Vehtari, D. Simpson, A. Gelman. "Yes, but Did It Work?: Evaluating
           Variational Inference". ICML 2018.
        """
        import arviz as az

        est = self.model
        if est.feedback != "implicit":
            raise DataValidationError(
                "importance diagnostics need feedback='implicit'; this model was fitted with feedback='explicit'"
            )
        S = n_draws or est.n_draws
        raw = np.empty((len(users), S))
        with torch.no_grad():
            for j, u in enumerate(users):
                uu = np.asarray([u])
                d = self.user_draws(uu, S, with_softmax=True)  # with_softmax: log_norm in every form
                seen = torch.as_tensor(est.seen_.items_of(int(u)), device=self.device)[None]
                log_joint = self.log_joint_at(d, seen, S)  # (S, 1, K, n_seen)
                w_seen = torch.as_tensor(est.seen_.weights_of(uu), device=self.device)  # sample_weight
                log_lik = (torch.logsumexp(log_joint[:, 0], dim=1).double() * w_seen).sum(-1)  # (S,)
                ut = torch.as_tensor(uu, device=self.device)
                log_ratio = self.log_prior_over_guide(ut, d["persona_factors"], d["prior_prevalence"])
                raw[j] = (log_lik + log_ratio).cpu().numpy()
        lw, k_hat = az.psislw(raw)
        ess = 1.0 / np.exp(2.0 * np.asarray(lw)).sum(-1)
        return np.asarray(lw), np.atleast_1d(np.asarray(k_hat, dtype=float)), ess

    def resampled_user_draws(self, users: np.ndarray, n_draws: int, n_candidates: int) -> dict[str, torch.Tensor]:
        """User draws resampled towards the posterior given each item draw (implicit feedback).

        For item draw ``s`` (:meth:`item_draws`), ``n_candidates`` draws of the user's personas
        and prevalence ``theta_m`` come from the guide and one is kept with probability
        proportional to ``p(x_u | theta_m, phi_s) p(theta_m) / q(theta_m)``: the user's whole
        training history under the exact likelihood (z summed out), the prior at the fitted
        hyperparameters and the guide (sampling-importance-resampling [1]_). As
        ``n_candidates`` grows the kept draw follows ``p(theta_u | x_u, phi_s)``, so a user's
        personas move with the items of the draw, which a mean-field guide cannot express.
        With ``n_candidates=1`` the result equals :meth:`user_draws`.

        Parameters
        ----------
        users : ndarray of int, shape (B,)
            User indices.
        n_draws : int
            ``S``, one kept draw per item draw.
        n_candidates : int
            ``M``, guide draws per kept draw; the cost is ``S M K N D`` per user.

        Returns
        -------
        dict
            As :meth:`user_draws` with shares: ``persona_factors`` (S, B, K, D),
            ``prevalence`` (the persona shares, S, B, K), ``prior_prevalence`` (S, B, K),
            ``log_norm`` (S, B, K), ``user_bias`` (zeros), and ``log_weights`` (S, B, M), the
            candidates' normalised log weights.

        References
        ----------
        .. [1] D. B. Rubin. "Using the SIR algorithm to simulate posterior distributions".
           Bayesian Statistics 3, 1988.
        """
        est = self.model
        if est.feedback != "implicit":
            raise DataValidationError(
                "resampled draws need feedback='implicit'; this model was fitted with feedback='explicit'"
            )
        S, M = int(n_draws), int(n_candidates)
        g = est.guide_
        K, joint = est.n_personas, est.likelihood == "joint"
        q, b = self.item_draws(S)
        keys = ("persona_factors", "prior_prevalence", "log_norm", "log_weights")
        out: dict[str, list] = {k: [] for k in keys}
        with torch.no_grad():
            for u in np.asarray(users, dtype=np.int64):
                # the stream of user_draws, with S * M draws: candidate m of draw s is s * M + m
                rng = self.user_rng(u)
                eps = torch.from_numpy(rng.standard_normal((S * M, 1, g.noise_dim_user), dtype=np.float32)).to(self.device)
                ut = torch.as_tensor([u], device=self.device)
                p = g.draw_personas(ut, eps[..., :-1])  # (S M, 1, K, D)
                pi = g.draw_prevalence(ut, [rng], S * M)  # (S M, 1, K)
                log_w = self.log_prior_over_guide(ut, p, pi)
                seen = torch.as_tensor(est.seen_.items_of(int(u)), device=self.device)
                w_seen = torch.as_tensor(est.seen_.weights_of(np.asarray([u])), device=self.device)  # sample_weight
                p_s, log_pi = p.reshape(S, M, K, -1), torch.log(pi).reshape(S, M, K)
                log_norm = torch.empty(S, M, K, device=self.device)
                log_lik = torch.empty(S, M, dtype=torch.float64, device=self.device)
                pos = seen[None].expand(M, -1)
                for s in range(S):  # one (M, K, N) pass at a time, as the fit's likelihood does it
                    log_norm[s], logit = log_normaliser_and_logits(p_s[s], q[s], b[s], pos)  # (M, K), (M, n, K)
                    log_w_s = persona_shares(log_pi[s], log_norm[s], joint)[:, None, :]
                    log_lik[s] = (torch.logsumexp(log_w_s + logit - log_norm[s][:, None, :], -1).double() * w_seen).sum(-1)
                lw = torch.log_softmax(log_lik + log_w.reshape(S, M), -1)  # (S, M)
                if M > 1:
                    cdf = torch.cumsum(lw.exp(), -1).cpu().numpy()
                    pick = (cdf < rng.random((S, 1)) * cdf[:, -1:]).sum(-1).clip(max=M - 1)
                else:
                    pick = np.zeros(S, dtype=np.int64)
                idx = torch.as_tensor(np.arange(S) * M + pick, device=self.device)
                out["persona_factors"].append(p[idx, 0])
                out["prior_prevalence"].append(pi[idx, 0])
                out["log_norm"].append(log_norm.reshape(S * M, K)[idx])
                out["log_weights"].append(lw)
        res = {k: torch.stack(v, 1) for k, v in out.items()}
        shares = persona_shares(torch.log(res["prior_prevalence"]), res["log_norm"], joint) if K > 1 else None
        res["prevalence"] = shares.exp() if shares is not None else res["prior_prevalence"]
        res["user_bias"] = torch.zeros(S, len(users), device=self.device)
        return res

    @staticmethod
    def persona_order(prevalence: torch.Tensor) -> torch.Tensor:
        """Each user's personas by posterior median prevalence, descending: (B, K) slot indices
        from prevalence draws (S, B, K)."""
        return torch.argsort(torch.quantile(prevalence, 0.5, dim=0), dim=-1, descending=True, stable=True)

    def chunk_size(self, n_draws: int, items_per_user: int | None = None) -> int:
        """Users per chunk so that an (S, B, K, N) array stays within :data:`CHUNK_FLOATS`.

        With ``items_per_user=n`` the caller keeps per user only (N,) scores and draws at
        ``n`` items (``recommend`` for implicit feedback, whose catalogue pass goes one user
        at a time through one (S, K, N) buffer): then the chunk's (S, B, K, n) explanation
        draws and their copies stay within the budget, and chunks hold more users."""
        est = self.model
        N = max(est.guide_.n_items, 1)
        if items_per_user is None:
            per_user = n_draws * est.n_personas * N
        else:
            # (B, N) scores and the draws at n items (the ranking weights go user by user)
            per_user = 4 * N + 4 * n_draws * est.n_personas * min(items_per_user, N)
        return int(max(1, min(1024, CHUNK_FLOATS // per_user)))

    def log_joint(self, users: np.ndarray, n_draws: int, draws: dict[str, torch.Tensor] | None = None):
        """For a chunk of users: per-draw log P(z=k, i | u) over all items, (S, B, K, N).

        Returns ``(log_joint, order, expected)``: ``order`` (B, K) sorts each user's personas
        by posterior median prevalence, descending; ``expected`` is the expected rating per
        persona for explicit feedback (for which ``log_joint`` holds the log attention) and
        ``None`` for implicit. ``draws`` are the users' :meth:`user_draws` when the caller
        already has them.
        """
        est = self.model
        q, b = self.item_draws(n_draws)
        d = draws if draws is not None else self.user_draws(users, n_draws)
        p, pi = d["persona_factors"], d["prevalence"]
        affinity = torch.einsum("sbkd,snd->sbkn", p, q)  # (S, B, K, N)
        order = self.persona_order(pi)  # (B, K)
        if est.feedback == "implicit":
            logits = affinity + b[:, None, None, :]
            log_joint = torch.log(pi)[..., None] + torch.log_softmax(logits, dim=-1)
            return log_joint, order, None
        m = est.model_
        log_att = torch.log(pi)[..., None] + affinity / m.scale("temperature")
        log_att = torch.log_softmax(log_att, dim=2)
        expected = affinity + (b[:, None, None, :] + d["user_bias"][:, :, None, None] + m.global_mean)
        return log_att, order, expected

    def explanation_draws(self, users: np.ndarray, items: np.ndarray, n_draws: int | None = None):
        """Explanation draws for users (indices) and items (indices).

        Returns
        -------
        post : Tensor, shape (S, B, K, n)
            Per-draw ``P(z = k | u, i)``, personas in slot order.
        order : Tensor, shape (B, K)
            Each user's personas by posterior median prevalence, descending (persona 0 of the
            outputs is slot ``order[b, 0]``).
        prevalence : Tensor, shape (S, B, K)
            The persona shares' draws, in slot order.
        """
        est = self.model
        n_draws = n_draws or est.n_draws
        draws = self.user_draws(users, n_draws)
        log_joint, order, _ = self.log_joint(users, n_draws, draws)
        d_prev = draws["prevalence"]
        it = torch.as_tensor(items, device=self.device)
        post = torch.softmax(log_joint[..., it], dim=2)
        return post, order, d_prev
