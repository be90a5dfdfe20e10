"""What a fitted :class:`~bayes_persona.PersonaRecommender` predicts: scores, held-out
log predictive densities, top-n lists with their explanations, and raw posterior draws.

The estimator's ``score``, ``log_predictive``, ``recommend`` and ``sample_posterior``
delegate here; each function reads the fit through the posterior object
(:class:`~bayes_persona.persona.posterior.PersonaPosterior`) and public fitted attributes.
Users are handled in chunks sized by :meth:`PersonaPosterior.chunk_size`, so memory stays
bounded however many users are asked for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona.data._validation import as_id_list as _as_id_list
from bayes_persona.data._validation import check_min_int as _check_int
from bayes_persona.data._validation import ratings_of
from bayes_persona.exceptions import DataValidationError
from bayes_persona.persona import explanations
from bayes_persona.persona.explanations import top_n
from bayes_persona.posterior import summarise

__all__ = ["score", "log_predictive", "recommend", "sample_posterior", "score_terms"]

# recommend's output columns as filled chunk by chunk (user = position in the request,
# item = item index), and their dtypes.
_REC_COLUMNS = (
    ("user", np.int64), ("rank", np.int64), ("item", np.int64), ("score", np.float64),
    ("persona", np.int64), ("persona_prob", np.float64), ("persona_prob_low", np.float64),
    ("persona_prob_high", np.float64),
)  # fmt: skip


def score(model: Any, user_ids: Any, item_ids: Any) -> np.ndarray:
    """``PersonaRecommender.score``: posterior mean score of each pair (shape (n,))."""
    post = model.posterior_  # checks that the model is fitted
    users = _as_id_list(user_ids, "user_ids")
    items = _as_id_list(item_ids, "item_ids")
    if len(users) != len(items):
        raise DataValidationError(
            f"user_ids and item_ids must have the same length; got {len(users)} and {len(items)}"
        )
    u = model.user_vocab_.encode(users)
    i = model.item_vocab_.encode(items)
    out = np.empty(len(u))
    uniq, inv = np.unique(u, return_inverse=True)
    step = post.chunk_size(model.n_draws)
    with torch.no_grad():
        for s in range(0, len(uniq), step):
            chunk = uniq[s : s + step]
            full = catalogue_scores(model, chunk).cpu().numpy()  # (B, N)
            sel = (inv >= s) & (inv < s + len(chunk))
            out[sel] = full[inv[sel] - s, i[sel]]
    return out


def log_predictive(model: Any, data: Any) -> np.ndarray:
    """``PersonaRecommender.log_predictive``: pointwise log posterior predictive density (n_rows,)."""
    post = model.posterior_  # checks that the model is fitted
    frame = ratings_of(data, "data")
    u = model.user_vocab_.encode(frame["user_id"].to_numpy())
    i = model.item_vocab_.encode(frame["item_id"].to_numpy())
    if model.feedback == "explicit" and "rating" not in frame.columns:
        raise DataValidationError("data needs a 'rating' column for an explicit-feedback model")
    r = frame["rating"].to_numpy(np.float32) if model.feedback == "explicit" else None
    out = np.empty(len(u))
    uniq, inv = np.unique(u, return_inverse=True)
    step = post.chunk_size(model.n_draws)
    log_s = math.log(model.n_draws)
    with torch.no_grad():
        for s in range(0, len(uniq), step):
            chunk = uniq[s : s + step]
            sel = np.flatnonzero((inv >= s) & (inv < s + len(chunk)))
            b_idx = torch.as_tensor(inv[sel] - s, device=post.device)
            i_idx = torch.as_tensor(i[sel], device=post.device)
            log_joint, _, expected = post.log_joint(chunk, model.n_draws)
            lj = log_joint.permute(1, 3, 0, 2)[b_idx, i_idx]  # (n, S, K)
            if model.feedback == "implicit":
                per_draw = torch.logsumexp(lj, dim=-1)
            else:
                mean = expected.permute(1, 3, 0, 2)[b_idx, i_idx]
                rr = torch.as_tensor(r[sel], device=post.device)[:, None, None]
                noise = model.model_.scale("noise")
                per_draw = torch.logsumexp(lj + torch.distributions.Normal(mean, noise).log_prob(rr), -1)
            out[sel] = (torch.logsumexp(per_draw, dim=1) - log_s).cpu().numpy()
    return out


def score_terms(model: Any, users: np.ndarray):
    """``(scores (B, N), explain_at, order)`` for a chunk of users (indices).

    ``scores`` is ``P(i | u)`` for implicit feedback and the posterior mean rating for
    explicit; ``explain_at(idx)`` gives the per-draw ``P(z = k | u, i)`` (S, B, K, n) at item
    indices ``idx`` (B, n); ``order`` sorts each user's personas (B, K).

    The default model (implicit feedback, joint form, mean-field guide) scores in closed
    form: ``P(i | u)`` is estimated by ``W_ui / sum_j W_uj`` with ``W`` the choice weights
    averaged over the user's posterior at the items' posterior means
    (:meth:`PersonaPosterior.log_expected_weight`), free of Monte Carlo noise, and the
    explanations need no pass over the catalogue (:meth:`PersonaPosterior.attention_at`);
    the persona order comes from the model's cache (:meth:`PersonaPosterior.persona_orders`).
    The other forms average ``P(i | u) = sum_k w_k softmax_k(i)`` over the posterior draws
    (:meth:`PersonaPosterior.user_draws` with ``with_softmax``), one pass of per-user
    products over the catalogue, and explain only the items asked for
    (:meth:`PersonaPosterior.choice_at`): no (S, B, K, N) array is kept.
    """
    post, S = model.posterior_, model.n_draws
    if post.closed_form:  # the default: implicit feedback, joint form, mean-field guide
        d = post.user_draws(users, S, shares=False)
        return _closed_form_scores(post, users), lambda idx: post.attention_at(d, idx, S), post.persona_orders(users, S)
    if model.feedback == "implicit":
        d = post.user_draws(users, S, with_softmax=True)
        return d["scores"], lambda idx: post.choice_at(d, idx, S), post.persona_order(d["prevalence"])
    log_att, order, expected = post.log_joint(users, S)
    scores = (log_att.exp() * expected).sum(2).mean(0)

    def explain_at(idx: torch.Tensor) -> torch.Tensor:
        B, n = idx.shape
        return torch.gather(log_att, 3, idx[None, :, None, :].expand(S, B, log_att.shape[2], n)).exp()

    return scores, explain_at, order


def _closed_form_scores(post: Any, users: np.ndarray) -> torch.Tensor:
    """``W_ui / sum_j W_uj`` (B, N) of the ranking weights of
    :meth:`PersonaPosterior.log_expected_weight`."""
    return torch.softmax(post.log_expected_weight(users), dim=-1)


def catalogue_scores(model: Any, users: np.ndarray) -> torch.Tensor:
    """The scores of :func:`score_terms` (B, N) alone: without the draws and persona orders
    that only ``recommend``'s explanations need."""
    post = model.posterior_
    if post.closed_form:
        return _closed_form_scores(post, users)
    return score_terms(model, users)[0]


def recommend(model: Any, user_ids: Any, n: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
    """``PersonaRecommender.recommend``: top-``n`` items per user with their explaining persona."""
    post = model.posterior_  # checks that the model is fitted
    n = _check_int("n", n, 1)
    ids, u = post.encode_users(user_ids)
    # The output columns are allocated once, up front: nothing long-lived is allocated
    # between the chunks' large transient arrays, which glibc would otherwise strand in
    # the heap (resident memory then grew by about one chunk per chunk).
    out = {k: np.empty(len(u) * min(n, len(model.item_vocab_)), dtype=t) for k, t in _REC_COLUMNS}
    filled = 0
    step = post.chunk_size(model.n_draws, items_per_user=n if model.feedback == "implicit" else None)
    with torch.no_grad():
        for s in range(0, len(u), step):
            chunk = u[s : s + step]
            scores, explain_at, order = score_terms(model, chunk)
            scores = scores.cpu().numpy()  # (B, N) for this chunk of users only
            if exclude_seen:
                r, c = model.seen_.rows_of(chunk)
                scores[r, c] = -np.inf
            tops = [top_n(scores[j], n) for j in range(len(chunk))]
            filled = _rec_rows(model, out, filled, s, tops, scores, explain_at, order)
    sl = slice(0, filled)
    frame = pd.DataFrame(
        {
            "user_id": np.asarray(ids, dtype=object)[out["user"][sl]],
            "rank": out["rank"][sl],
            "item_id": model.item_vocab_.decode(out["item"][sl]),
            **{k: out[k][sl] for k, _ in _REC_COLUMNS[3:]},
        }
    ).astype({"user_id": model.user_vocab_.ids.dtype})
    return explanations.with_titles(model, frame, out["item"][sl])


def _rec_rows(model: Any, out: dict, filled: int, first: int, tops: list[np.ndarray], scores: np.ndarray, explain_at, order) -> int:
    """Write ``recommend``'s rows for a chunk of users (positions ``first``.. of the
    request) into ``out`` from row ``filled`` on; returns the new fill. Persona
    probabilities and their intervals are computed for the returned items only."""
    B, lens = len(tops), np.fromiter((len(t) for t in tops), dtype=np.int64, count=len(tops))
    n = int(lens.max(initial=0))
    valid = np.arange(n)[None, :] < lens[:, None]  # (B, n)
    top = np.zeros((B, n), dtype=np.int64)
    top[valid] = np.concatenate(tops) if B else np.zeros(0, dtype=np.int64)
    p_top = explain_at(torch.as_tensor(top, device=order.device))  # (S, B, K, n), slot order
    S, _, K, _ = p_top.shape
    p_top = torch.gather(p_top, 2, order[None, :, :, None].expand(S, B, K, n)).cpu().numpy()  # persona 0 = most prevalent
    median = np.median(p_top, axis=0)  # (B, K, n)
    persona = median.argmax(1)  # (B, n)
    chosen = np.take_along_axis(p_top, persona[None, :, None, :], axis=2)[:, :, 0]  # (S, B, n)
    point, low, high = summarise(chosen, model.hdi_prob, axis=0)
    cols = {
        "user": first + np.repeat(np.arange(B), lens),
        "rank": np.broadcast_to(np.arange(1, n + 1), (B, n))[valid],
        "item": top[valid],
        "score": np.take_along_axis(scores, top, axis=1)[valid],
        "persona": persona[valid],
        "persona_prob": point[valid],
        "persona_prob_low": low[valid],
        "persona_prob_high": high[valid],
    }
    m = int(lens.sum())
    for k, v in cols.items():
        out[k][filled : filled + m] = v
    return filled + m


def sample_posterior(model: Any, num_samples: int = 100, users: Any = None) -> dict[str, np.ndarray]:
    """``PersonaRecommender.sample_posterior``: draws of every parameter from the guide."""
    post = model.posterior_  # checks that the model is fitted
    num_samples = _check_int("num_samples", num_samples, 1)
    u = np.arange(len(model.user_vocab_)) if users is None else post.encode_users(users, "users")[1]
    with torch.no_grad():
        q, b = post.item_draws(num_samples)
        d = post.user_draws(u, num_samples)
        order = torch.argsort(d["prevalence"].mean(0), dim=-1, descending=True)  # (B, K)
        idx = order[None].expand(num_samples, -1, -1)
        out = {
            "item_factors": q.cpu().numpy(),
            "item_bias": b.cpu().numpy(),
            "persona_factors": torch.gather(
                d["persona_factors"], 2, idx[..., None].expand_as(d["persona_factors"])
            ).cpu().numpy(),
            "prevalence": torch.gather(d["prevalence"], 2, idx).cpu().numpy(),
        }
        if model.feedback == "explicit":
            out["user_bias"] = d["user_bias"].cpu().numpy()
    return out
