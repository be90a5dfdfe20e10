"""Draws behind the ArviZ export: replicated choices, pointwise log-likelihoods, priors.

This module holds the sampling machinery of
:func:`~bayes_persona.diagnostics.inference_data.to_inference_data`: the training and
held-out (user, item) pairs of the requested users, the implicit and explicit
log-likelihood terms, replicated training choices (Gumbel top-k without replacement, or
i.i.d.), the exact sampler of held-out choices given the training ones, prior draws of the
item and user parameters, and :func:`_draw_groups`, which fills the posterior, predictive
and log-likelihood arrays user by user in bounded memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona.data._validation import interactions_frame
from bayes_persona.exceptions import DataValidationError
from bayes_persona.persona.model import persona_shares
from bayes_persona.posterior import logmeanexp, logsumexp

logger = logging.getLogger(__name__)

# Stream tags for the per-user seeds of replicated data.
_TAG_TRAIN, _TAG_HELDOUT, _TAG_PRIOR = 11, 13, 17


# --------------------------------------------------------------------------- draws
def _chunks(n: int, step: int) -> Iterator[slice]:
    for s in range(0, n, step):
        yield slice(s, min(s + step, n))


def _user_rng(seed: int, tag: int, u: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 0x5EED, tag, int(u)])


def implicit_log_predictive(
    q: torch.Tensor, b: torch.Tensor, p: torch.Tensor, pi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-draw log posterior predictive of a user's next choice over the whole catalogue.

    Parameters
    ----------
    q : Tensor, shape (S, N, D)
        Item factors.
    b : Tensor, shape (S, N)
        Item biases.
    p : Tensor, shape (S, B, K, D)
        Persona factors of B users.
    pi : Tensor, shape (S, B, K)
        Prevalences.

    Returns
    -------
    log_pred : Tensor, shape (S, B, N)
        :math:`\log \sum_k \pi_{uk} \mathrm{softmax}_j(p_{uk} \cdot q_j + b_j)_i`.
    log_norm : Tensor, shape (S, B, K)
        The log softmax normaliser of every persona.
    """
    logits = torch.einsum("sbkd,snd->sbkn", p, q) + b[:, None, None, :]
    log_norm = torch.logsumexp(logits, dim=-1)
    log_pred = torch.logsumexp(torch.log(pi)[..., None] + logits - log_norm[..., None], dim=2)
    return log_pred, log_norm


def _explicit_terms(
    model: Any,
    q: torch.Tensor,
    b: torch.Tensor,
    p: torch.Tensor,
    pi: torch.Tensor,
    b_u: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log attention (S, K, n), expected rating (S, K, n) and noise scale for one user.

    ``q`` (S, n, D), ``b`` (S, n) are the user's items; ``p`` (S, K, D); ``pi`` (S, K);
    ``b_u`` (S,).
    """
    m = model.model_
    aff = torch.einsum("skd,snd->skn", p, q)
    log_att = torch.log_softmax(torch.log(pi)[..., None] + aff / m.scale("temperature"), dim=1)
    expected = aff + (b[:, None, :] + b_u[:, None, None] + m.global_mean)
    return log_att, expected, m.scale("noise")


def _gumbel_top_k(log_p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct indices per row drawn successively without replacement from
    ``softmax(log_p)``; ``log_p`` (S, N) may hold ``-inf`` for excluded entries."""
    keys = log_p - np.log(rng.standard_exponential(log_p.shape))
    if n >= keys.shape[1]:
        return np.argsort(-keys, axis=1)
    top = np.argpartition(-keys, n - 1, axis=1)[:, :n]
    return top


def _iid_choices(log_p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` i.i.d. indices per row from ``softmax(log_p)`` (inverse CDF), shape (S, n)."""
    prob = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    cdf = np.cumsum(prob, axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random((log_p.shape[0], n))
    out = np.empty((log_p.shape[0], n), dtype=np.int64)
    for s in range(log_p.shape[0]):
        out[s] = np.minimum(np.searchsorted(cdf[s], u[s], side="right"), log_p.shape[1] - 1)
    return out


@dataclass
class _Pairs:
    """Interactions of the requested users, grouped by user (positions in ``users``)."""

    user_pos: np.ndarray  # (n,) position of each pair's user among the requested users
    item_idx: np.ndarray  # (n,) model item index
    rating: np.ndarray | None = None
    by_user: list[np.ndarray] = field(default_factory=list)  # rows of each requested user
    weight: np.ndarray | None = None  # (n,) choices each pair stands for (fit's sample_weight)

    @classmethod
    def build(cls, user_pos: np.ndarray, item_idx: np.ndarray, n_users: int, rating=None,
              weight=None) -> _Pairs:  # fmt: skip
        order = np.lexsort((item_idx, user_pos))
        user_pos, item_idx = user_pos[order], item_idx[order]
        rating = rating[order] if rating is not None else None
        weight = weight[order] if weight is not None else None
        bounds = np.searchsorted(user_pos, np.arange(n_users + 1))
        by_user = [np.arange(bounds[j], bounds[j + 1]) for j in range(n_users)]
        return cls(user_pos, item_idx, rating, by_user, weight)

    def __len__(self) -> int:
        return len(self.item_idx)


def _training_pairs(model: Any, users: np.ndarray) -> _Pairs:
    pos, items, vals = [], [], []
    seen = model.seen_
    for j, u in enumerate(users):
        it = seen.items_of(int(u))
        pos.append(np.full(len(it), j, dtype=np.int64))
        items.append(it.astype(np.int64))
        if seen.values is not None:
            vals.append(
                seen.values[seen.indptr[u] : seen.indptr[u + 1]].cpu().numpy().astype(float)
            )
    rating = np.concatenate(vals) if vals else None
    # fit's sample_weight: a row stands for that many choices of its item
    weight = seen.weights_of(np.asarray(users)) if seen.weights is not None else None
    return _Pairs.build(np.concatenate(pos), np.concatenate(items), len(users), rating, weight)


def _heldout_pairs(model: Any, test: Any, users: np.ndarray) -> _Pairs:
    frame = interactions_frame(test, "test")
    if model.feedback == "explicit" and "rating" not in frame.columns:
        raise DataValidationError(
            "test needs a 'rating' column for a model with feedback='explicit'"
        )
    known_u, u_idx = model.user_vocab_.index_of_known(frame["user_id"].to_numpy())
    known_i, _ = model.item_vocab_.index_of_known(frame["item_id"].to_numpy())
    keep = known_u & known_i
    n_unknown = int((~keep).sum())
    f = frame[keep]
    u = model.user_vocab_.encode(f["user_id"].to_numpy())
    i = model.item_vocab_.encode(f["item_id"].to_numpy())
    where = pd.Index(users).get_indexer(u)
    req = where >= 0
    u, i, where = u[req], i[req], where[req]
    r = f["rating"].to_numpy(float)[req] if model.feedback == "explicit" else None
    # Drop repeated pairs and, for implicit feedback, pairs the user has in training.
    key = pd.DataFrame({"u": u, "i": i})
    first = ~key.duplicated().to_numpy()
    if model.feedback == "implicit":
        seen = model.seen_
        in_train = np.zeros(len(u), dtype=bool)
        for uu in np.unique(u):
            sel = u == uu
            in_train[sel] = np.isin(i[sel], seen.items_of(int(uu)))
        first &= ~in_train
        n_train = int(in_train.sum())
    else:
        n_train = 0
    if n_unknown or n_train or (~first).sum() > n_train:
        logger.info(
            "test: left out %d rows with unknown users or items, %d pairs already in training "
            "and %d repeated pairs", n_unknown, n_train, int((~first).sum()) - n_train,
        )  # fmt: skip
    u, i, where = u[first], i[first], where[first]
    r = r[first] if r is not None else None
    if len(u) == 0:
        raise DataValidationError("test shares no (requested user, known item) pair with the model")
    return _Pairs.build(where.astype(np.int64), i.astype(np.int64), len(users), r)


# --------------------------------------------------------------------------- drawing
def _prior_item_draws(model: Any, S: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    m = model.model_
    g = torch.Generator().manual_seed(int(seed) * 7919 + 104729)
    N, D = len(model.item_vocab_), model.n_factors
    q = m.scale("item_scale").cpu() * torch.randn(S, N, D, generator=g)
    b = m.scale("bias_scale").cpu() * torch.randn(S, N, generator=g)
    return q.to(model.posterior_.device), b.to(model.posterior_.device)


def _prior_user_draws(model: Any, users: np.ndarray, S: int, seed: int) -> dict[str, torch.Tensor]:
    m = model.model_
    K, D = model.n_personas, model.n_factors
    p = np.empty((S, len(users), K, D), dtype=np.float32)
    pi = np.empty((S, len(users), K), dtype=np.float32)
    bu = np.empty((S, len(users)), dtype=np.float32)
    alpha = float(m.prevalence_concentration)
    s_p = float(m.scale("persona_scale"))
    s_bu = float(m.scale("user_bias_scale")) if model.feedback == "explicit" else 0.0
    T = int(getattr(m, "n_prototypes", 0))
    if T:  # personas around the fitted taste prototypes (the mixture prior)
        centres = m.prototype_loc.detach().cpu().double().numpy()  # (T, D)
        weights = torch.softmax(m.prototype_logits.detach().cpu().double(), 0).numpy()
    for j, u in enumerate(users):
        rng = _user_rng(seed, _TAG_PRIOR, u)
        p[:, j] = s_p * rng.standard_normal((S, K, D))
        if T:
            p[:, j] += centres[rng.choice(T, size=(S, K), p=weights)]
        pi[:, j] = rng.dirichlet(np.full(K, alpha), size=S) if K > 1 else 1.0
        bu[:, j] = s_bu * rng.standard_normal(S)
    dev = model.posterior_.device
    pi = np.clip(pi, 1e-30, None)
    return {
        "persona_factors": torch.from_numpy(p).to(dev),
        "prevalence": torch.from_numpy(pi / pi.sum(-1, keepdims=True)).to(dev),
        "user_bias": torch.from_numpy(bu).to(dev),
    }


def _draw_groups(
    model: Any,
    S: int,
    u_req: np.ndarray,
    i_req: np.ndarray,
    train: _Pairs,
    held: _Pairs | None,
    replicate: str,
    seed: int,
    source: str,
    heldout_candidates: int = 16,
    replicate_heldout: bool = True,
) -> dict[str, Any]:
    """Parameter draws, replicated data and log-likelihoods for the requested users.

    ``held`` sets the hold-out design of the replicated training data; its replicated
    data and log-likelihoods are computed only with ``replicate_heldout``.
    """
    implicit = model.feedback == "implicit"
    B, K, D = len(u_req), model.n_personas, model.n_factors
    with torch.no_grad():
        if source == "posterior":
            q, b = model.posterior_.item_draws(S)
        else:
            q, b = _prior_item_draws(model, S, seed)
        p_out = np.empty((S, B, K, D), dtype=np.float32)
        pi_out = np.empty((S, B, K), dtype=np.float32)
        ln_out = np.empty((S, B, K), dtype=np.float32)
        bu_out = np.empty((S, B), dtype=np.float32)
        rep_train = np.empty((S, len(train)), dtype=np.int64 if implicit else np.float64)
        ll_train = np.empty((S, len(train)))
        n_held = len(held) if held is not None else 0
        rep_held = np.empty((S, n_held), dtype=np.int64 if implicit else np.float64)
        rep_held_ll = np.empty((S, n_held))
        ll_held = np.empty((S, n_held))
        step = max(1, model.posterior_.chunk_size(S))
        for sl in _chunks(B, step):
            users = u_req[sl]
            if source == "posterior":
                d = model.posterior_.user_draws(users, S)
            else:
                d = _prior_user_draws(model, users, S, seed)
            p, pi, b_u = d["persona_factors"], d["prevalence"], d["user_bias"]
            if source != "posterior" and implicit and getattr(model, "likelihood", "mixture") == "joint":
                log_norm = torch.logsumexp(torch.einsum("sbkd,snd->sbkn", p, q) + b[:, None, None, :], -1)
                pi = persona_shares(torch.log(pi), log_norm).exp()  # the prior's shares P(z=k | u)
            if source == "posterior":
                order = torch.argsort(pi.mean(0), dim=-1, descending=True)  # (b, K)
            else:
                order = torch.arange(K, device=pi.device).expand(len(users), K)
            idx = order[None].expand(S, -1, -1)
            p_out[:, sl] = torch.gather(p, 2, idx[..., None].expand_as(p)).cpu().numpy()
            pi_out[:, sl] = torch.gather(pi, 2, idx).cpu().numpy()
            bu_out[:, sl] = b_u.cpu().numpy()
            if implicit:
                log_pred, log_norm = implicit_log_predictive(q, b, p, pi)
                ln_out[:, sl] = torch.gather(log_norm, 2, idx).cpu().numpy()
                log_pred = log_pred.cpu().numpy().astype(np.float64)
            for jj, u in enumerate(users):
                j = sl.start + jj
                rows = train.by_user[j]
                tag = _TAG_TRAIN if source == "posterior" else _TAG_PRIOR + 1
                rng = _user_rng(seed, tag, u)
                if implicit:
                    lp = log_pred[:, jj]  # (S, N)
                    ll_train[:, rows] = lp[:, train.item_idx[rows]]
                    if train.weight is not None:  # a row of weight c is c choices of its item
                        ll_train[:, rows] *= train.weight[rows]
                    n_held_u = len(held.by_user[j]) if held is not None else 0
                    rep_train[:, rows] = _replicate(
                        lp, len(rows), replicate, rng, n_total=len(rows) + n_held_u
                    )
                    if n_held_u and replicate_heldout:
                        hrows = held.by_user[j]
                        ll_held[:, hrows] = lp[:, held.item_idx[hrows]]
                        choice = _replicate_heldout(
                            lp, model.seen_.items_of(int(u)), len(hrows), replicate,
                            _user_rng(seed, _TAG_HELDOUT, u), heldout_candidates,
                        )  # fmt: skip
                        rep_held[:, hrows] = choice
                        # log posterior predictive density of each replicated choice: the
                        # mixture over all draws, log mean_s' p(choice | theta_s')
                        rep_held_ll[:, hrows] = logmeanexp(lp[:, choice], axis=0)
                else:
                    _explicit_user(
                        model, q, b, p[:, jj], pi[:, jj], b_u[:, jj], train, rows, rng,
                        rep_train, ll_train,
                    )  # fmt: skip
                    if replicate_heldout and held is not None and len(held.by_user[j]):
                        hrows = held.by_user[j]
                        _explicit_user(
                            model, q, b, p[:, jj], pi[:, jj], b_u[:, jj], held, hrows,
                            _user_rng(seed, _TAG_HELDOUT, u), rep_held, ll_held, rep_held_ll,
                        )  # fmt: skip
        q_req = q[:, torch.as_tensor(i_req, device=q.device)].cpu().numpy()
        b_req = b[:, torch.as_tensor(i_req, device=q.device)].cpu().numpy()
    posterior: dict[str, Any] = {
        "item_factors": (("chain", "draw", "item", "factor"), q_req[None]),
        "item_bias": (("chain", "draw", "item"), b_req[None]),
        "persona_factors": (("chain", "draw", "user", "persona", "factor"), p_out[None]),
        "prevalence": (("chain", "draw", "user", "persona"), pi_out[None]),
    }
    if implicit:
        posterior["log_normaliser"] = (("chain", "draw", "user", "persona"), ln_out[None])
    else:
        posterior["user_bias"] = (("chain", "draw", "user"), bu_out[None])
    return {
        "posterior": posterior,
        "rep_train": rep_train,
        "ll_train": ll_train,
        "rep_held": rep_held,
        "rep_held_ll": rep_held_ll,
        "ll_held": ll_held,
    }


def _replicate(
    log_p: np.ndarray, n: int, replicate: str, rng: np.random.Generator, n_total: int | None = None
) -> np.ndarray:
    """``n`` replicated training choices per draw, (S, n).

    Without replacement, ``n_total >= n`` picks are drawn successively and a uniformly
    random ``n`` of them kept: the design of a random hold-out of ``n_total - n`` picks.
    """
    S = log_p.shape[0]
    if n == 0:
        return np.empty((S, 0), dtype=np.int64)
    if replicate == "with_replacement":
        return _iid_choices(log_p, n, rng)
    n_total = n if n_total is None else min(n_total, log_p.shape[1])
    picks = _gumbel_top_k(log_p, n_total, rng)
    if n_total == n:
        return picks
    keep = np.argsort(rng.random(picks.shape), axis=1)[:, :n]
    return np.take_along_axis(picks, keep, axis=1)


_SIR_CHUNK = 2**22  # candidate keys held at once by the held-out sampler


def _replicate_heldout(
    log_p: np.ndarray,
    seen: np.ndarray,
    h: int,
    replicate: str,
    rng: np.random.Generator,
    n_candidates: int,
) -> np.ndarray:
    """:func:`_replicate_heldout_chunk` over chunks of draws (bounded memory)."""
    step = max(1, _SIR_CHUNK // max(1, n_candidates * log_p.shape[1]))
    if step >= log_p.shape[0]:
        return _replicate_heldout_chunk(log_p, seen, h, replicate, rng, n_candidates)
    parts = [
        _replicate_heldout_chunk(log_p[s : s + step], seen, h, replicate, rng, n_candidates)
        for s in range(0, log_p.shape[0], step)
    ]
    return np.concatenate(parts, axis=0)


def _replicate_heldout_chunk(
    log_p: np.ndarray,
    seen: np.ndarray,
    h: int,
    replicate: str,
    rng: np.random.Generator,
    n_candidates: int,
    n_grid: int = 48,
) -> np.ndarray:
    r"""``h`` replicated held-out choices per draw given the user's training items, (S, h).

    Without replacement, the observed set is a successive sample whose held-out part ``H``
    is a uniformly random subset, so ``P(H | T) \propto P(T \cup H)``. In the exponential-race
    form of successive sampling (item ``i`` arrives at rate ``p_i``), a set ``A`` is the first
    ``|A|`` arrivals with probability
    ``I(A) = int_0^inf r_A exp(-r_A t) prod_{i in A} (1 - exp(-p_i t)) dt``, ``r_A = 1 - p(A)``.
    Candidates ``H`` are drawn by successive sampling from the items outside ``T`` (whose set
    probability is the same integral without the factors of ``T``), weighted by the ratio
    of the two integrals (computed on a log-spaced grid of ``t``) and one is resampled
    (sampling-importance-resampling). With replacement, choices are i.i.d. from the
    predictive restricted to the items outside ``T``.
    """
    S, N = log_p.shape
    outside = np.ones(N, dtype=bool)
    outside[seen] = False
    cand_items = np.flatnonzero(outside)
    lp_out = log_p[:, cand_items]  # (S, n_out)
    if replicate == "with_replacement":
        return cand_items[_iid_choices(lp_out, h, rng)]
    n_out = len(cand_items)
    if h >= n_out:
        return np.broadcast_to(cand_items, (S, n_out))[:, :h].copy()
    M = max(1, int(n_candidates))
    keys = lp_out[:, None, :] - np.log(rng.standard_exponential((S, M, n_out)))  # (S, M, n_out)
    top = np.argpartition(-keys, h - 1, axis=2)[..., :h]  # (S, M, h)
    if M == 1 or len(seen) == 0:
        return cand_items[top[:, 0]]
    p = np.exp(log_p - logsumexp(log_p, axis=1)[:, None])  # normalised, (S, N)
    p_T = p[:, seen]  # (S, n)
    p_H = np.take_along_axis(
        np.broadcast_to(p[:, cand_items][:, None, :], keys.shape), top, axis=2
    )  # (S, M, h)
    # log-spaced grid of arrival times covering every relevant item
    p_min = np.minimum(p_T.min(axis=1), p_H.min(axis=(1, 2)))
    log_t = np.linspace(
        np.log(1e-3) - np.log(p.max(axis=1)), np.log(50.0) - np.log(p_min), n_grid, axis=1
    )  # (S, G)
    t = np.exp(log_t)

    def log_arrived(pp: np.ndarray, tt: np.ndarray) -> np.ndarray:
        # log(1 - exp(-p t)) in float32 (weights need little precision); p t beyond 17 gives
        # log(1 - e^-17) ~ -4e-8, which is zero here
        x = np.minimum(
            np.maximum((pp * tt).astype(np.float32), np.float32(1e-30)), np.float32(17.0)
        )
        return np.log(-np.expm1(-x))

    log_g_T = log_arrived(p_T[:, None, :], t[:, :, None]).sum(axis=2)  # (S, G)
    r_out = np.clip(1.0 - p_T.sum(axis=1)[:, None] - p_H.sum(axis=2), 1e-12, None)  # (S, M)
    log_f = (
        np.log(r_out)[..., None]
        - r_out[..., None] * t[:, None, :]
        + log_arrived(p_H[..., None], t[:, None, None, :]).sum(axis=2)
        + log_t[:, None, :]
    )  # (S, M, G), with the log-t measure
    log_w = logsumexp(log_f + log_g_T[:, None, :], axis=2) - logsumexp(log_f, axis=2)  # (S, M)
    log_w -= log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w)
    cdf = np.cumsum(w, axis=1)
    pick = (cdf < rng.random((S, 1)) * cdf[:, -1:]).sum(axis=1).clip(max=M - 1)
    return cand_items[top[np.arange(S), pick]]


def _explicit_user(
    model: Any, q, b, p, pi, b_u, pairs: _Pairs, rows: np.ndarray, rng: np.random.Generator,
    rep_out: np.ndarray, ll_out: np.ndarray, rep_ll_out: np.ndarray | None = None,
) -> None:  # fmt: skip
    it = torch.as_tensor(pairs.item_idx[rows], device=q.device)
    log_att, expected, sigma = _explicit_terms(model, q[:, it], b[:, it], p, pi, b_u)
    log_att = log_att.cpu().numpy().astype(np.float64)  # (S, K, n)
    expected = expected.cpu().numpy().astype(np.float64)
    sigma = float(sigma)
    r = pairs.rating[rows][None, None, :]
    log_obs = -0.5 * ((r - expected) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    ll_out[:, rows] = logsumexp(log_att + log_obs, axis=1)
    # replicate: z ~ attention, r ~ N(expected_z, sigma)
    att = np.exp(log_att)
    cum = np.cumsum(att, axis=1)
    z = (cum < rng.random((att.shape[0], 1, att.shape[2])) * cum[:, -1:, :]).sum(axis=1)
    z = np.minimum(z, att.shape[1] - 1)
    mean = np.take_along_axis(expected, z[:, None, :], axis=1)[:, 0]
    rep = mean + sigma * rng.standard_normal(mean.shape)
    rep_out[:, rows] = rep
    if rep_ll_out is not None:
        # log posterior predictive density of each replicated rating: mixture over all draws
        # s' of p(rep_s | theta_s'), shape (S', S, n) -> (S, n)
        z = (rep[None, :, None, :] - expected[:, None]) / sigma  # (S', S, K, n)
        log_rep = -0.5 * z**2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
        rep_ll_out[:, rows] = logmeanexp(logsumexp(log_att[:, None] + log_rep, axis=2), axis=0)
