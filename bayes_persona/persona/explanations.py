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
from bayes_persona.exceptions import DataTypeError, DataValidationError
from bayes_persona.posterior import ACTIVE_PREVALENCE, summarise

__all__ = [
    "explain", "explain_draws", "persona_probabilities", "personas", "attribute", "attribution_draws",
    "persona_owners", "top_n", "with_titles", "titles_of",
]  # fmt: skip

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
    i = model.item_vocab_.encode(as_id_list(item_ids, "item_ids"))
    return _draws_at(model, u, i, n_draws)


def _draws_at(model: Any, u: np.ndarray, i: np.ndarray, n_draws: int | None) -> np.ndarray:
    """Explanation draws (S, K, n) of user index ``u`` at item indices ``i``, explain's order."""
    n_draws = model.n_draws if n_draws is None else check_min_int("n_draws", n_draws, 2)
    with torch.no_grad():
        draws, order, _ = model.posterior_.explanation_draws(u, i, n_draws)
    return draws[:, 0][:, order[0]].cpu().numpy()


def persona_owners(resp: np.ndarray, codes: np.ndarray, n_labels: int) -> np.ndarray:
    """Which label owns each persona, in every draw: the label whose items it explains most.

    Parameters
    ----------
    resp : ndarray, shape (S, K, m)
        Draws of ``P(z = k | u, j)`` for the ``m`` labelled items.
    codes : ndarray of int, shape (m,)
        Each labelled item's label, ``0 .. n_labels - 1``.
    n_labels : int

    Returns
    -------
    ndarray, shape (S, K, L)
        Weight of label ``l`` for persona ``k`` in draw ``s``: 1 for the label with the
        largest mean ``P(z = k | u, j)`` over its items, split equally on ties; a label
        without items owns nothing.
    """
    counts = np.bincount(codes, minlength=n_labels).astype(float)
    onehot = np.eye(n_labels)[codes]  # (m, L)
    mean = np.einsum("skm,ml->skl", resp, onehot) / np.maximum(counts, 1.0)
    mean[..., counts == 0] = -np.inf
    top = mean == mean.max(-1, keepdims=True)
    return top / top.sum(-1, keepdims=True)


def attribution_draws(
    model: Any, user_id: Any, labels: Any, item_ids: Any, n_draws: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""Posterior draws of ``P(label | u, i)``: who, of the people behind an account, chose each item.

    In every posterior draw each persona goes to the label whose known items it explains
    most (the largest mean :math:`P(z = k \mid u, j)` over that label's items), and an item's
    probability for a label is the attention of the personas it owns,
    :math:`\sum_{k \to l} P(z = k \mid u, i)`. The owner of a persona is a function of the
    parameters like the attention itself, so it is taken draw by draw: a persona that
    explains both people's items changes hands across draws, and the interval says so. The
    setting is the shared account of [1]_: several people behind one user id, some of whose
    choices are labelled.

    Parameters
    ----------
    model : fitted PersonaRecommender
    user_id : id
        The account.
    labels : mapping or Series, item id -> label
        Items of the account whose chooser is known (at least one), and who chose them.
    item_ids : id or sequence of ids, length n (known items)
    n_draws : int, optional
        Default the model's ``n_draws``.

    Returns
    -------
    label_values : ndarray, shape (L,)
        The distinct labels, sorted.
    draws : ndarray, shape (n_draws, L, n)
        Each column sums to one over the labels.

    References
    ----------
    .. [1] A. Zhang, N. Fawaz, S. Ioannidis, A. Montanari. "Guess who rated this movie:
       identifying users through subspace clustering". UAI 2012.
    """
    _, u = _one_user(model, user_id)
    items = model.item_vocab_.encode(as_id_list(item_ids, "item_ids"))
    return _attribution_at(model, u, labels, items, n_draws)


def _attribution_at(
    model: Any, u: np.ndarray, labels: Any, items: np.ndarray, n_draws: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`attribution_draws` at user index ``u`` and item indices ``items``."""
    if isinstance(labels, pd.Series):
        known = labels
    elif isinstance(labels, dict):
        known = pd.Series(list(labels.values()), index=list(labels.keys()), dtype=object)
    else:
        raise DataTypeError(f"labels must be a dict or a pandas Series (item id -> label); got {type(labels).__name__}")
    if len(known) == 0 or known.isna().any():
        raise DataValidationError("labels must map at least one item id to a label, and no label may be missing")
    codes, values = pd.factorize(known.to_numpy(), sort=True)
    labelled = model.item_vocab_.encode(as_id_list(known.index.to_numpy(), "labels' item ids"))
    draws = _draws_at(model, u, np.concatenate([labelled, items]), n_draws)  # (S, K, m + n)
    m = len(labelled)
    owners = persona_owners(draws[:, :, :m], codes, len(values))
    return np.asarray(values), np.einsum("skl,skn->sln", owners, draws[:, :, m:])


def attribute(model: Any, user_id: Any, labels: Any, item_ids: Any, hdi_prob: float | None = None) -> pd.DataFrame:
    """:meth:`PersonaRecommender.attribute <bayes_persona.PersonaRecommender.attribute>`."""
    hdi_prob = model.posterior_.interval_prob(hdi_prob)
    ids, u = _one_user(model, user_id)
    items = as_id_list(item_ids, "item_ids")
    i = model.item_vocab_.encode(items)
    values, draws = _attribution_at(model, u, labels, i, None)
    L, n = draws.shape[1], draws.shape[2]
    point, low, high = summarise(draws, hdi_prob, axis=0)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(ids, L * n),
            "item_id": np.repeat(items, L),
            "label": np.tile(values, n),
            "prob_mean": draws.mean(0).T.reshape(-1),
            "prob": point.T.reshape(-1),
            "prob_low": low.T.reshape(-1),
            "prob_high": high.T.reshape(-1),
        }
    ).astype({"user_id": model.user_vocab_.ids.dtype, "item_id": model.item_vocab_.ids.dtype})
    return with_titles(model, frame, np.repeat(i, L))


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
