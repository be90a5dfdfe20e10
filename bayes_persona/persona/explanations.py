"""The explanation tables of a fitted :class:`~bayes_persona.PersonaRecommender`.

``explain``, ``explain_draws``, ``persona_probabilities`` and ``personas`` are methods of the
estimator; their bodies live here and read the fit only through the estimator's public
fitted attributes (vocabularies, ``seen_``, titles and categories) and its posterior object
(:class:`~bayes_persona.persona.posterior.PersonaPosterior`). Every point is a posterior
median inside its highest-density interval (:func:`bayes_persona.posterior.summarise`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona.data._validation import as_id_list, check_min_int
from bayes_persona.exceptions import DataValidationError
from bayes_persona.posterior import ACTIVE_PREVALENCE, summarise

__all__ = ["explain", "explain_draws", "persona_probabilities", "personas", "top_n", "with_titles", "titles_of"]

#: Pareto k below which importance-reweighted draws are reliable (Vehtari et al. 2024).
PSIS_K_THRESHOLD = 0.7

PERSONA_COLUMNS = [
    "user_id", "persona", "prevalence", "prevalence_low", "prevalence_high", "active", "share",
    "top_items", "top_categories",
]  # fmt: skip


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest finite scores, best first (ties: lower index first)."""
    finite = np.flatnonzero(np.isfinite(scores))
    if len(finite) == 0:
        return finite
    n = min(n, len(finite))
    cand = finite[np.argpartition(-scores[finite], n - 1)[:n]] if n < len(finite) else finite
    return cand[np.lexsort((cand, -scores[cand]))]


def titles_of(model: Any, item_idx: np.ndarray) -> list[str]:
    """Titles of item indices (the id as text where the items table gave none)."""
    ids = model.item_vocab_.decode(np.asarray(item_idx, dtype=np.int64))
    return [model.item_titles_.get(int(j), str(i)) for j, i in zip(item_idx, ids, strict=True)]


def with_titles(model: Any, frame: pd.DataFrame, item_idx: np.ndarray) -> pd.DataFrame:
    """``frame`` with a ``title`` column after ``item_id`` when the model knows titles."""
    if getattr(model, "item_titles_", None):
        frame.insert(frame.columns.get_loc("item_id") + 1, "title", titles_of(model, item_idx))
    return frame


def _one_user(model: Any, user_id: Any) -> tuple[np.ndarray, np.ndarray]:
    ids, u = model.posterior_.encode_users(user_id, "user_id")
    if len(u) != 1:
        raise DataValidationError(f"user_id must be a single id; got {len(u)}")
    return ids, u


def explain(model: Any, user_id: Any, item_ids: Any, hdi_prob: float | None = None) -> pd.DataFrame:
    """:meth:`PersonaRecommender.explain <bayes_persona.PersonaRecommender.explain>`."""
    post = model.posterior_
    hdi_prob = post.interval_prob(hdi_prob)
    ids, u = _one_user(model, user_id)
    items = as_id_list(item_ids, "item_ids")
    i = model.item_vocab_.encode(items)
    with torch.no_grad():
        draws, order, prev = post.explanation_draws(u, i)
    draws = draws[:, 0][:, order[0]].cpu().numpy()  # (S, K, n)
    prev = prev[:, 0][:, order[0]].cpu().numpy()  # (S, K)
    K, n = draws.shape[1], draws.shape[2]
    point, low, high = summarise(draws, hdi_prob, axis=0)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(ids, K * n),
            "item_id": np.repeat(items, K),
            "persona": np.tile(np.arange(K), n),
            "prevalence": np.tile(np.median(prev, axis=0), n),
            "persona_prob": point.T.reshape(-1),
            "persona_prob_low": low.T.reshape(-1),
            "persona_prob_high": high.T.reshape(-1),
        }
    ).astype({"user_id": model.user_vocab_.ids.dtype, "item_id": model.item_vocab_.ids.dtype})
    return with_titles(model, frame, np.repeat(i, K))


def explain_draws(model: Any, user_id: Any, item_ids: Any, n_draws: int | None = None) -> np.ndarray:
    """:meth:`PersonaRecommender.explain_draws <bayes_persona.PersonaRecommender.explain_draws>`."""
    _, u = _one_user(model, user_id)
    n_draws = model.n_draws if n_draws is None else check_min_int("n_draws", n_draws, 2)
    i = model.item_vocab_.encode(as_id_list(item_ids, "item_ids"))
    with torch.no_grad():
        draws, order, _ = model.posterior_.explanation_draws(u, i, n_draws)
    return draws[:, 0][:, order[0]].cpu().numpy()


def persona_probabilities(model: Any, user_ids: Any, item_ids: Any, hdi_prob: float | None = None) -> pd.DataFrame:
    """:func:`explain` for many pairs ``(user_ids[j], item_ids[j])`` at once (tidy)."""
    users = as_id_list(user_ids, "user_ids")
    items = as_id_list(item_ids, "item_ids")
    if len(users) != len(items):
        raise DataValidationError(
            f"user_ids and item_ids must have the same length; got {len(users)} and {len(items)}"
        )
    frame = pd.DataFrame({"user_id": users, "item_id": items})
    out = [explain(model, uid, grp["item_id"].to_numpy(), hdi_prob) for uid, grp in frame.groupby("user_id", sort=False)]
    return pd.concat(out, ignore_index=True)


def personas(model: Any, user_ids: Any, n_items: int = 5, hdi_prob: float | None = None) -> pd.DataFrame:
    """:meth:`PersonaRecommender.personas <bayes_persona.PersonaRecommender.personas>`."""
    post = model.posterior_
    hdi_prob = post.interval_prob(hdi_prob)
    n_items = check_min_int("n_items", n_items, 1)
    ids, users = post.encode_users(user_ids, "user_ids")
    rows = []
    for uid, u in zip(ids, users, strict=True):
        rows += _persona_rows(model, uid, int(u), n_items, hdi_prob)
    frame = pd.DataFrame(rows, columns=PERSONA_COLUMNS).astype({"user_id": model.user_vocab_.ids.dtype})
    if getattr(model, "item_titles_", None):
        frame["top_titles"] = [titles_of(model, model.item_vocab_.encode(t)) for t in frame["top_items"]]
    return frame


def _persona_rows(model: Any, uid: Any, u: int, n_items: int, hdi_prob: float) -> list[dict]:
    post, S = model.posterior_, model.n_draws
    seen = model.seen_.items_of(u)
    users = np.asarray([u])
    with torch.no_grad():
        draws = post.user_draws(users, S)
        log_joint, order, _ = post.log_joint(users, S, draws)
        prev = draws["prevalence"][:, 0][:, order[0]].cpu().numpy()
        post_seen = torch.softmax(log_joint[..., torch.as_tensor(seen, device=post.device)], 2)
        post_seen = post_seen[:, 0][:, order[0]].mean(0).cpu().numpy()  # (K, n_seen)
        choice = log_joint[:, 0][:, order[0]] - torch.log(
            torch.as_tensor(prev, device=post.device)
        )[..., None]  # log softmax_k(i) or log attention
        choice = choice.exp().mean(0).cpu().numpy()  # (K, N)
    choice[:, seen] = -np.inf
    point, low, high = summarise(prev, hdi_prob, axis=0)
    rows = []
    for k in range(prev.shape[1]):
        top = top_n(choice[k], n_items)
        rows.append(
            {
                "user_id": uid,
                "persona": k,
                "prevalence": float(point[k]),
                "prevalence_low": float(low[k]),
                "prevalence_high": float(high[k]),
                "active": bool(point[k] > ACTIVE_PREVALENCE),
                "share": float(post_seen[k].mean()) if len(seen) else float("nan"),
                "top_items": model.item_vocab_.decode(top).tolist(),
                "top_categories": _top_categories(model, seen, post_seen[k]),
            }
        )
    return rows


def _top_categories(model: Any, seen: np.ndarray, weights: np.ndarray, n: int = 3) -> list[str]:
    """The ``n`` categories of the ``seen`` items with the largest total ``weights``."""
    if not model.item_categories_:
        return []
    acc: dict[str, float] = {}
    for it, w in zip(seen, weights, strict=True):
        cats = model.item_categories_.get(int(it), ())
        for c in cats:
            acc[c] = acc.get(c, 0.0) + w / len(cats)
    return [c for c, _ in sorted(acc.items(), key=lambda kv: -kv[1])[:n]]


def importance_diagnostics(model: Any, user_ids: Any = None) -> pd.DataFrame:
    """``PersonaRecommender.importance_diagnostics``: per-user Pareto k-hat and ESS of the
    importance weights of the guide's draws against the exact posterior; one row per user."""
    post = model.posterior_
    if user_ids is None:
        ids, users = model.user_vocab_.ids, np.arange(len(model.user_vocab_))
    else:
        ids, users = post.encode_users(user_ids)
    _, k_hat, ess = post.importance_weights(users)
    return pd.DataFrame(
        {"user_id": np.asarray(ids), "k_hat": k_hat, "ess": ess, "reliable": k_hat < PSIS_K_THRESHOLD}
    ).astype({"user_id": model.user_vocab_.ids.dtype})
