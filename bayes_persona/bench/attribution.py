"""The attribution methods of the shared-account benchmark (:mod:`bayes_persona.bench.accounts`).

Each method gives, for every held-out item of every account, ``p_a``: a probability that
person A of the account chose it (with an equal-tailed interval where the method has
posterior draws). Any mapping from a method's parts (personas, clusters) to people uses the
account's *training* items and their truth only:

- :func:`persona_method`: a persona model's explanation draws (ours: ``explain_draws``;
  AMP-CF: its attention, one "draw"), personas mapped to people in each draw
  (:func:`~bayes_persona.persona.explanations.persona_owners`), or once at the posterior
  mean (:func:`_sides`, hard; :func:`_soft_sides`, soft);
- :func:`kmeans_method`: 2-means of the account's training items in iALS factor space;
- :func:`ceiling_method`: nearest labelled centroid (given the training truth: a ceiling);
- :func:`share_method`: the share of the account's training items that are A's;
- :func:`restart_methods` (a diagnostic): every account's personas inferred again with the
  items held fixed, from the fit's own start and from the people's split, and the fit's
  objective (each account's ELBO) compared between the two.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from bayes_persona.data._validation import ITEM_COL
from bayes_persona.data.accounts import ACCOUNT_COL
from bayes_persona.persona.explanations import persona_owners

__all__ = ["persona_method", "ours_draws", "ampcf_draws", "kmeans_method", "ceiling_method", "share_method", "ItemSpace",
           "labelled_start", "restart_methods"]

INTERVAL_PROB = 0.9  # equal-tailed: the 5% and 95% quantiles of the draws


def _owners_a(resp: np.ndarray, is_a: np.ndarray) -> np.ndarray:
    """Weight of each part for person A in each draw from its responsibilities on the
    training items.

    Parameters
    ----------
    resp : ndarray, shape ``(S, K, n_train)``
        How much part ``k`` explains training item ``j`` in draw ``s`` (a probability or an
        indicator).
    is_a : ndarray of bool, shape ``(n_train,)``

    Returns
    -------
    ndarray, shape ``(S, K)``
        1 where the mean over A's items exceeds the mean over B's, 0 where it is lower,
        0.5 on ties (and when one person has no training item): the rule of
        :func:`~bayes_persona.persona.explanations.persona_owners`.
    """
    if is_a.all() or not is_a.any():
        return np.full(resp.shape[:2], 0.5)
    return persona_owners(resp, is_a.astype(np.int64), 2)[..., 1]


def _sides(resp: np.ndarray, is_a: np.ndarray) -> np.ndarray:
    """:func:`_owners_a` of one draw: ``resp`` ``(K, n_train)``, result ``(K,)``."""
    return _owners_a(resp[None], is_a)[0]


def _by_account(train_truth: pd.DataFrame, test: pd.DataFrame):
    """``(account, training rows, held-out rows, positions in test)`` per account with held-out rows."""
    tr_groups = train_truth.groupby(ACCOUNT_COL, sort=False).indices
    for acct, pos in test.groupby(ACCOUNT_COL, sort=False).indices.items():
        yield acct, train_truth.iloc[tr_groups[acct]], test.iloc[pos], pos


def _soft_sides(resp: np.ndarray, is_a: np.ndarray) -> np.ndarray:
    """``P(A | part k)`` from the training items: the mean of part ``k``'s responsibility over
    A's items divided by that mean over A's plus over B's, shape ``(K,)`` (0.5 where a part
    explains nothing, or when one person has no training item)."""
    if is_a.all() or not is_a.any():
        return np.full(resp.shape[0], 0.5)
    ma, mb = resp[:, is_a].mean(1), resp[:, ~is_a].mean(1)
    total = ma + mb
    return np.where(total > 0, ma / np.where(total > 0, total, 1.0), 0.5)


def persona_method(model: Any, train_truth, test, draws_fn) -> dict[str, dict[str, np.ndarray]]:
    """``{"draw": ..., "plugin": ..., "soft": ...}``, each ``{"p_a", "low", "high"}``: three
    maps of personas to people on the same draws. ``draw``: each draw's personas go to the
    person whose training items they explain more of in that draw
    (:func:`~bayes_persona.persona.explanations.persona_owners`, as
    :meth:`~bayes_persona.PersonaRecommender.attribute` does); ``plugin``: the same rule once,
    on the posterior-mean responsibilities (:func:`_sides`); ``soft``: :func:`_soft_sides`."""
    out = {m: {"p_a": np.empty(len(test)), "low": np.full(len(test), np.nan), "high": np.full(len(test), np.nan)}
           for m in ("draw", "plugin", "soft")}  # fmt: skip
    for acct, tr, te, pos in _by_account(train_truth, test):
        items = np.concatenate([tr[ITEM_COL].to_numpy(), te[ITEM_COL].to_numpy()])
        draws = draws_fn(model, acct, items)  # (S, K, n)
        n_tr = len(tr)
        is_a = tr["is_a"].to_numpy()
        resp = draws[:, :, :n_tr].mean(0)
        pa_of = {
            "draw": np.einsum("sk,skn->sn", _owners_a(draws[:, :, :n_tr], is_a), draws[:, :, n_tr:]),
            "plugin": np.einsum("k,skn->sn", _sides(resp, is_a), draws[:, :, n_tr:]),
            "soft": np.einsum("k,skn->sn", _soft_sides(resp, is_a), draws[:, :, n_tr:]),
        }
        for mapping, pa in pa_of.items():
            o = out[mapping]
            o["p_a"][pos] = np.clip(pa.mean(0), 0.0, 1.0)
            if pa.shape[0] > 1:
                q = (1 - INTERVAL_PROB) / 2
                o["low"][pos], o["high"][pos] = np.quantile(pa, [q, 1 - q], axis=0)
    return out


def ours_draws(model: Any, acct: Any, items: np.ndarray) -> np.ndarray:
    return np.asarray(model.explain_draws(acct, items), dtype=np.float64)


def ampcf_draws(model: Any, acct: Any, items: np.ndarray) -> np.ndarray:
    att = model.persona_attention(np.repeat(np.asarray([acct]), len(items)), items)
    return np.asarray(att, dtype=np.float64).T[None]  # (1, K, n): one "draw"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _two_means(
    x: np.ndarray, rng: np.random.Generator, n_init: int = 10, n_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean 2-means of the rows of ``x`` (k-means++ seeding, best of ``n_init``).

    Returns
    -------
    centroids : ndarray, shape ``(2, D)``
    labels : ndarray of int, shape ``(n,)``
    """
    best = (np.inf, None, None)
    n = len(x)
    for _ in range(n_init):
        c0 = x[rng.integers(n)]
        d2 = ((x - c0) ** 2).sum(1)
        c1 = x[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(n)]
        c = np.stack([c0, c1])
        labels = np.full(n, -1)
        for _ in range(n_iter):
            dist = ((x[:, None, :] - c[None]) ** 2).sum(2)
            new = dist.argmin(1)
            if (new == labels).all():
                break
            labels = new
            for k in range(2):
                if (labels == k).any():
                    c[k] = x[labels == k].mean(0)
        inertia = ((x - c[labels]) ** 2).sum()
        if inertia < best[0]:
            best = (inertia, c.copy(), labels.copy())
    return best[1], best[2]


def _centroid_p(x: np.ndarray, centroids: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum_c w_c softmax_c(-|x - centroid_c|^2)`` per row of ``x``, shape ``(n,)``."""
    logits = -((x[:, None, :] - centroids[None]) ** 2).sum(2)
    logits -= logits.max(1, keepdims=True)
    soft = np.exp(logits)
    soft /= soft.sum(1, keepdims=True)
    return soft @ w


def kmeans_method(ials: Any, train_truth, test, seed: int) -> dict[str, np.ndarray]:
    V = _unit(ials.item_factors_)
    p = np.empty(len(test))
    for j, (_, tr, te, pos) in enumerate(_by_account(train_truth, test)):
        xa = V[ials.item_vocab_.encode(tr[ITEM_COL].to_numpy())]
        xt = V[ials.item_vocab_.encode(te[ITEM_COL].to_numpy())]
        if len(xa) < 2:
            p[pos] = 0.5
            continue
        centroids, labels = _two_means(xa, np.random.default_rng([seed, 2, j]))
        onehot = (labels[None, :] == np.arange(2)[:, None]).astype(np.float64)  # (2, n_train)
        w = _sides(onehot, tr["is_a"].to_numpy())
        p[pos] = _centroid_p(xt, centroids, w)
    return {"p_a": p}


class ItemSpace(NamedTuple):
    """Item vectors and their vocabulary, as :func:`kmeans_method` and :func:`ceiling_method`
    read them from a fitted iALS (``item_factors_`` (N, D), ``item_vocab_``): lets them run
    in another model's item space (e.g. ours' posterior means of the item factors)."""

    item_factors_: np.ndarray
    item_vocab_: Any


def ceiling_method(ials: Any, train_truth, test) -> dict[str, np.ndarray]:
    """Nearest labelled centroid: for each account, the unit item vectors of A's and of B's
    training items are averaged, and a held-out item gets ``softmax(-squared distance)``'s
    weight on A's centroid. ``ials``: anything with ``item_factors_`` and ``item_vocab_``
    (a fitted :class:`~bayes_persona.baselines.IALS` or an :class:`ItemSpace`)."""
    V = _unit(ials.item_factors_)
    p = np.empty(len(test))
    for _, tr, te, pos in _by_account(train_truth, test):
        a = tr["is_a"].to_numpy()
        xa = V[ials.item_vocab_.encode(tr[ITEM_COL].to_numpy())]
        xt = V[ials.item_vocab_.encode(te[ITEM_COL].to_numpy())]
        if a.all() or not a.any():
            p[pos] = 0.5
            continue
        centroids = np.stack([xa[a].mean(0), xa[~a].mean(0)])
        p[pos] = _centroid_p(xt, centroids, np.array([1.0, 0.0]))
    return {"p_a": p}


def share_method(train_truth, test) -> dict[str, np.ndarray]:
    share = train_truth.groupby(ACCOUNT_COL, sort=False)["is_a"].mean()
    return {"p_a": test[ACCOUNT_COL].map(share).to_numpy(dtype=np.float64)}


def labelled_start(model: Any, rows: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fit's starting rule applied within each person of one account: a start that knows
    who chose what.

    ``fit`` starts a user's K personas at the item clusters that hold most of the user's
    items. Here person A's training items and person B's are clustered apart (spherical
    k-means in the fit's item space, ``ceil(K / 2)`` and ``floor(K / 2)`` clusters), each
    persona starts at one cluster's direction with the fit's starting length, and the
    prevalences are the clusters' shares of the account's items turned into the joint
    form's prevalences (as the fit's start does).

    Parameters
    ----------
    model : PersonaRecommender
        Fitted; ``rows`` are an account's training rows (``item_id``, ``is_a``).

    Returns
    -------
    personas : ndarray, shape (K, D)
    prevalence : ndarray, shape (K,), on the simplex
    """
    from bayes_persona.persona.initialization import kmeans, prevalence_from_shares

    items = model.guide_.item_loc.detach().cpu().numpy().astype(np.float64)
    K, D = int(model.n_personas), items.shape[1]
    personas = np.zeros((K, D))
    shares = np.full(K, 0.02)
    k0 = 0
    is_a = rows["is_a"].to_numpy(bool)
    for side, n_k in ((is_a, (K + 1) // 2), (~is_a, K // 2)):
        x = items[model.item_vocab_.encode(rows[ITEM_COL].to_numpy()[side])]
        if len(x) == 0 or n_k == 0:
            continue
        centroids, labels = kmeans(x, n_k, seed)
        for c in range(len(centroids)):
            personas[k0] = float(model.persona_init_length) * centroids[c]
            shares[k0] += float((labels == c).sum()) / len(rows)
            k0 += 1
    rng = np.random.default_rng(seed)
    for k in range(k0, K):  # personas no cluster took: random directions, small shares
        v = rng.standard_normal(D)
        personas[k] = float(model.persona_init_length) * v / np.linalg.norm(v)
    shares /= shares.sum()
    if model.feedback == "implicit" and model.likelihood == "joint":
        shares = prevalence_from_shares(shares[None], personas[None], items)[0]
    return personas, shares


def restart_methods(
    model: Any, train_truth: pd.DataFrame, test: pd.DataFrame, *, n_steps: int = 400, seed: int = 0,
    n_particles: int = 32,
) -> tuple[dict[str, dict[str, np.ndarray]], pd.DataFrame]:
    """Is the personas' shortfall the search's or the objective's? (A diagnostic.)

    Every account's training items are folded back into the fitted model as a new user
    (:func:`~bayes_persona.persona.foldin.fold_in`: the items and hyperparameters held at
    the fit's), twice with the same steps and seed: from the fit's own start (the item
    clusters of the account's items) and from :func:`labelled_start`, which knows who chose
    what. Each is scored like ``ours`` (per-draw persona owners), and each account's ELBO
    under the two, and under the fit as it stands, is estimated
    (:func:`~bayes_persona.diagnostics.evidence.user_elbo`; the items are the same in all
    three, so the figures compare). If the labelled start keeps its people apart and ends
    with a higher ELBO than the fit's, better search would help; if the objective moves it
    away from the people's split, or it ends below the fit's ELBO, the shortfall is the
    model's, not the search's.

    Returns
    -------
    preds : dict
        ``{"ours_refolded": ..., "ours_labelled_start": ..., "ours_labelled_as_started": ...}``
        (the last: the labelled start before the objective moves it), each as
        :func:`persona_method`'s ``"draw"`` map.
    evidence : DataFrame
        ``account, start, elbo, iw_bound``: one row per account and start (``"ours"``: the
        fit as it stands, and the three rows of ``preds``).
    """
    from bayes_persona.diagnostics.evidence import user_elbo

    # new users (fold_in refuses known ones) with ids of the vocabulary's kind
    accounts = pd.unique(train_truth[ACCOUNT_COL])
    known = model.user_vocab_.ids
    if np.issubdtype(np.asarray(known).dtype, np.integer):
        new_ids = int(np.max(known)) + 1 + np.arange(len(accounts))
    else:
        new_ids = np.asarray([f"refold:{a}" for a in accounts], dtype=object)
    to_new = dict(zip(accounts, new_ids, strict=True))
    back = dict(zip(new_ids, accounts, strict=True))
    renamed = lambda f: f.assign(**{ACCOUNT_COL: f[ACCOUNT_COL].map(to_new)})  # noqa: E731
    tt, te = renamed(train_truth), renamed(test)
    history = pd.DataFrame({"user_id": tt[ACCOUNT_COL].to_numpy(), "item_id": tt[ITEM_COL].to_numpy()})
    labelled = {acct: labelled_start(model, rows, seed) for acct, rows in tt.groupby(ACCOUNT_COL, sort=False)}
    # (row, start, steps, learning rate): the labelled start is also scored as it starts
    # (one step of a vanishing size), to see where the objective takes it
    runs = [("ours_refolded", None, n_steps, 0.05), ("ours_labelled_start", labelled, n_steps, 0.05),
            ("ours_labelled_as_started", labelled, 1, 1e-9)]  # fmt: skip
    preds = {}
    fit = user_elbo(model, accounts, n_particles=n_particles, random_state=seed)  # the fit as it stands
    frames = [pd.DataFrame({"account": fit["user_id"], "start": "ours", "elbo": fit["elbo"], "iw_bound": fit["iw_bound"]})]
    for name, start, steps, lr in runs:
        folded = model.fold_in(history, n_steps=steps, learning_rate=lr, random_state=seed, start=start)
        preds[name] = persona_method(folded, tt, te, ours_draws)["draw"]
        ev = user_elbo(folded, n_particles=n_particles, random_state=seed)
        frames.append(pd.DataFrame({"account": ev["user_id"].map(back), "start": name,
                                    "elbo": ev["elbo"], "iw_bound": ev["iw_bound"]}))  # fmt: skip
    return preds, pd.concat(frames, ignore_index=True)
