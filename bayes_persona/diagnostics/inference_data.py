r"""Export a fitted :class:`~bayes_persona.PersonaRecommender` as an ArviZ ``InferenceData``.

The posterior of a persona model is a variational approximation; :func:`to_inference_data`
writes independent draws from it as one chain, together with replicated data, pointwise
log-likelihoods, the observed data and the constants a check needs, so that ArviZ
(``az.loo``, ``az.compare``, ``az.summary``, netCDF files) and the posterior predictive
checks of :mod:`bayes_persona.diagnostics.ppc` work on one self-contained object.

Layout (implicit feedback)
--------------------------
Dimensions: ``chain`` (1), ``draw`` (S), ``user`` (requested users, original ids),
``item`` (requested items, original ids), ``persona`` (0 = the user's most prevalent),
``factor`` (0..D-1), ``catalog`` (every training item, original ids, in the model's index
order), ``category`` (item category names), ``obs`` (training interactions of the requested
users) and ``heldout_obs`` (held-out interactions, when ``test`` is given). ``obs`` carries the
non-dimension coordinates ``user_id`` and ``item_id``, and ``heldout_obs`` carries
``heldout_user_id`` and ``heldout_item_id`` (distinct names, because one group can hold
both dimensions).

* ``posterior``: ``item_factors`` (chain, draw, item, factor), ``item_bias`` (chain, draw,
  item), ``persona_factors`` (chain, draw, user, persona, factor), ``prevalence`` (chain,
  draw, user, persona) and ``log_normaliser`` (chain, draw, user, persona), the log of the
  softmax normaliser :math:`\log \sum_j \exp(p_{uk} \cdot q_j + b_j)` over the *whole*
  catalogue, so that the softmax of any stored item can be rebuilt from stored draws even
  when only some items are stored. Explicit feedback adds ``user_bias`` (chain, draw, user).
* ``posterior_predictive``: ``choice`` (chain, draw, obs), a replicated choice for every
  training interaction (see *Replicated choices*), and, with ``test``, ``heldout_choice``
  (chain, draw, heldout_obs) and ``heldout_log_density`` (chain, draw, heldout_obs), the
  log *posterior predictive* density :math:`\log \frac1S \sum_{s'} p(\tilde y_{s,j} \mid
  \theta_{s'})` of each replicated held-out choice (the replicated counterpart of the
  held-out LPD; used by :func:`bayes_persona.diagnostics.ppc.heldout_lpd_check`).
* ``log_likelihood``: ``choice`` (chain, draw, obs) on the training interactions when
  ``test`` is not given, else ``heldout_choice`` (chain, draw, heldout_obs) on the held-out
  ones; always exactly one variable, so ``az.loo(idata)`` needs no ``var_name``.
* ``observed_data``: ``choice`` (obs) and ``heldout_choice`` (heldout_obs).
* ``constant_data``: ``n_interactions`` (user), ``n_heldout`` (user), ``item_popularity``
  (catalog; training count of each item over *all* users), ``category_weight``
  (catalog, category; an item's ``c`` categories share weight ``1/c``; absent when the
  model has no item categories) and the empirical-Bayes hyperparameters as scalars.

Choices are stored as integer *positions on the* ``catalog`` *dimension*, not as ids:
``idata.constant_data.catalog.values[choice]`` gives the item ids. This keeps the replicated
data compact for string ids and makes it directly usable as an index.

Explicit feedback uses ``rating`` / ``heldout_rating`` instead of ``choice`` /
``heldout_choice`` (float ratings), and ``constant_data`` has no catalogue arrays.

Replicated choices
------------------
The model's likelihood treats a user's interactions as independent choices from
:math:`P(i \mid u, \theta) = \sum_k \pi_{uk} \mathrm{softmax}_k(i)`, but implicit data are a
*set*: a user picks an item at most once (the planted generator redraws repeats), and the
training data of a user are often a random part of that set. Replicated data follow that
design, so that a replicate and the observed data are comparable even for the true
parameters. With ``replicate="without_replacement"`` (default), for each draw ``s``:

* training: ``n_u + h_u`` picks are drawn successively without replacement from
  :math:`P(\cdot \mid u, \theta_s)` (Gumbel-top-k) and a uniformly random ``n_u`` of them
  are kept, where ``h_u`` is the user's number of held-out interactions in ``test`` (zero
  without ``test``: the training data are then taken as the whole set). This is the design
  of :func:`bayes_persona.random_holdout`; other splits (temporal, leave-one-out) differ.
* held-out: ``h_u`` picks drawn from their conditional distribution given the user's
  *observed* training items, :math:`P(H \mid T, \theta_s) \propto P(T \cup H \mid \theta_s)`,
  by sampling-importance-resampling (``heldout_candidates``) with the exponential-race
  form of the set probability of successive sampling. Simply continuing the
  successive sample after ``T`` would be wrong: it makes held-out picks less probable than
  real ones.

``replicate="with_replacement"`` draws i.i.d. choices, the literal likelihood (repeats
possible; held-out choices from the items outside the user's training set).

Reproducibility
---------------
Posterior draws use the model's common random numbers (a user's draws depend only on the
model, the user and ``num_samples``); replicated data use generators seeded by
``(random_state, user index)``, so a user's replicated data do not depend on which other
users are requested.

References
----------
.. [1] R. Kumar, C. Carroll, A. Hartikainen, O. Martin. "ArviZ a unified library for
   exploratory analysis of Bayesian models in Python". JOSS 4(33), 2019.
.. [2] A. Gelman, X.-L. Meng, H. Stern. "Posterior predictive assessment of model fitness
   via realized discrepancies". Statistica Sinica 6, 1996.
.. [3] W. Kool, H. van Hoof, M. Welling. "Stochastic Beams and Where to Find Them: The
   Gumbel-Top-k Trick for Sampling Sequences Without Replacement". ICML 2019.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona.data._validation import check_min_int as _check_int
from bayes_persona.data._validation import interactions_frame
from bayes_persona.exceptions import DataTypeError, DataValidationError, NotFittedError
from bayes_persona.model import persona_shares

__all__ = ["to_inference_data", "REPLICATE_OPTIONS"]

logger = logging.getLogger(__name__)

#: Ways to replicate a user's implicit choices (see the module docstring).
REPLICATE_OPTIONS = ("without_replacement", "with_replacement")

_VARIATIONAL_NOTE = (
    "chain 0 holds independent draws from a variational approximation (Pyro SVI guide), "
    "not MCMC: R-hat and ESS do not apply to them"
)

# Stream tags for the per-user seeds of replicated data.
_TAG_TRAIN, _TAG_HELDOUT, _TAG_PRIOR = 11, 13, 17


# --------------------------------------------------------------------------- arguments
def _check_fitted(model: Any) -> None:
    if not hasattr(model, "guide_") or not hasattr(model, "user_vocab_"):
        raise NotFittedError(
            "model must be a fitted PersonaRecommender; call model.fit(train) first"
        )


def _id_array(ids: Any, name: str) -> np.ndarray:
    if isinstance(ids, (str, bytes)) or np.isscalar(ids):
        ids = [ids]
    if isinstance(ids, (pd.Series, pd.Index)):
        ids = ids.to_numpy()
    arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=object)
    if arr.ndim != 1 or arr.size == 0:
        raise DataValidationError(
            f"{name} must be an id or a non-empty 1-d sequence of ids; got shape {arr.shape}"
        )
    if pd.Index(arr).has_duplicates:
        dup = pd.Index(arr)[pd.Index(arr).duplicated()].tolist()[:5]
        raise DataValidationError(f"{name} must not repeat ids; repeated: {dup}")
    return arr


def _encode(vocab: Any, ids: Any, name: str) -> np.ndarray:
    arr = _id_array(ids, name)
    try:
        return vocab.encode(arr)
    except (KeyError, ValueError, TypeError) as exc:
        raise type(exc)(f"{name}: {exc}") from exc


def _ratings_frame(data: Any, name: str) -> pd.DataFrame:
    return interactions_frame(data, name)


def netcdf_safe_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as a netCDF-writable array: int64 for integer ids, fixed-width ``str`` otherwise."""
    arr = np.asarray(ids)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "O":
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr):
            return arr.astype(np.int64)
    return arr.astype(str)


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

    @classmethod
    def build(cls, user_pos: np.ndarray, item_idx: np.ndarray, n_users: int, rating=None) -> _Pairs:
        order = np.lexsort((item_idx, user_pos))
        user_pos, item_idx = user_pos[order], item_idx[order]
        rating = rating[order] if rating is not None else None
        bounds = np.searchsorted(user_pos, np.arange(n_users + 1))
        by_user = [np.arange(bounds[j], bounds[j + 1]) for j in range(n_users)]
        return cls(user_pos, item_idx, rating, by_user)

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
    return _Pairs.build(np.concatenate(pos), np.concatenate(items), len(users), rating)


def _heldout_pairs(model: Any, test: Any, users: np.ndarray) -> _Pairs:
    frame = _ratings_frame(test, "test")
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


# --------------------------------------------------------------------------- main
def to_inference_data(
    model: Any,
    num_samples: int = 100,
    users: Any = None,
    items: Any = None,
    test: Any = None,
    *,
    prior: bool = False,
    replicate: str = "without_replacement",
    heldout_candidates: int = 16,
    random_state: int | None = None,
) -> Any:
    """Posterior draws, replicated data and pointwise log-likelihoods as ``InferenceData``.

    Parameters
    ----------
    model : PersonaRecommender
        A fitted model.
    num_samples : int, default 100
        S, draws from the variational posterior (and from the prior, with ``prior=True``).
    users : sequence of user ids, optional
        Users whose parameters, replicated data and log-likelihoods are stored (default:
        all). Memory grows with ``S * n_users * K * (D + n_catalogue / chunk)``; request
        a subset for large data.
    items : sequence of item ids, optional
        Items whose factors and biases are stored (default: all). Softmax normalisers and
        replicated choices always use the whole catalogue.
    test : DataFrame or Dataset, optional
        Held-out interactions ``user_id, item_id`` (``rating`` for explicit feedback).
        Rows of other users, of unknown items, repeated pairs and (implicit) pairs already
        in training are left out. When given, ``log_likelihood`` holds the held-out
        pointwise log-likelihood instead of the training one.
    prior : bool, default False
        Add ``prior`` and ``prior_predictive`` groups: S draws from the priors with the
        model's fitted (empirical-Bayes) hyperparameters, and replicated training data
        under them (same number of interactions per user). Prior persona slots are not
        reordered.
    replicate : {"without_replacement", "with_replacement"}
        How a user's replicated implicit choices are drawn (module docstring).
    heldout_candidates : int, default 16
        Candidates per draw of the sampling-importance-resampling step that draws
        replicated held-out choices given the user's training items (implicit feedback
        without replacement; module docstring). More is more exact and slower.
    random_state : int, optional
        Seed of the replicated data and prior draws; default ``model.random_state``.

    Returns
    -------
    arviz.InferenceData
        Groups ``posterior``, ``posterior_predictive``, ``log_likelihood``,
        ``observed_data``, ``constant_data`` (and ``prior``, ``prior_predictive``) laid out
        as in the module docstring. ``chain`` has length 1: the draws are independent
        draws from the variational approximation, so R-hat and ESS do not apply (the
        ``posterior`` attrs say so); PSIS-LOO treats them with relative efficiency 1.

    Raises
    ------
    NotFittedError
        ``model`` is not fitted.
    UnknownIdError
        ``users`` or ``items`` holds an id the model does not know.
    DataValidationError
        A bad argument (the message names it), or ``test`` shares no pair with the
        requested users.

    Notes
    -----
    The result round-trips through netCDF (``idata.to_netcdf(path)``,
    ``arviz.from_netcdf(path)``): string ids are stored as fixed-width ``str`` and
    integer ids as int64.

    References
    ----------
    .. [1] A. Vehtari, A. Gelman, J. Gabry. "Practical Bayesian model evaluation using
       leave-one-out cross-validation and WAIC". Statistics and Computing 27, 2017.
    """
    import arviz as az
    import xarray as xr

    _check_fitted(model)
    S = _check_int("num_samples", num_samples, 1)
    if replicate not in REPLICATE_OPTIONS:
        raise DataValidationError(
            f"replicate must be one of {REPLICATE_OPTIONS}; got {replicate!r}"
        )
    if not isinstance(prior, (bool, np.bool_)):
        raise DataTypeError(f"prior must be a bool; got {type(prior).__name__}")
    seed = (
        model.random_state if random_state is None else _check_int("random_state", random_state, 0)
    )
    U_all, N = len(model.user_vocab_), len(model.item_vocab_)
    u_req = np.arange(U_all) if users is None else _encode(model.user_vocab_, users, "users")
    i_req = np.arange(N) if items is None else _encode(model.item_vocab_, items, "items")
    implicit = model.feedback == "implicit"
    K, D = model.n_personas, model.n_factors
    B = len(u_req)

    train = _training_pairs(model, u_req)
    held = _heldout_pairs(model, test, u_req) if test is not None else None

    heldout_candidates = _check_int("heldout_candidates", heldout_candidates, 1)
    post = _draw_groups(
        model, S, u_req, i_req, train, held, replicate, seed, "posterior", heldout_candidates
    )
    pri = (
        _draw_groups(
            model,
            S,
            u_req,
            i_req,
            train,
            held,
            replicate,
            seed,
            "prior",
            heldout_candidates,
            replicate_heldout=False,
        )
        if prior
        else None
    )

    # ---- coordinates
    user_ids = netcdf_safe_ids(model.user_vocab_.decode(u_req))
    item_ids_all = netcdf_safe_ids(model.item_vocab_.ids)
    coords: dict[str, Any] = {
        "chain": [0],
        "draw": np.arange(S),
        "user": user_ids,
        "item": item_ids_all[i_req],
        "persona": np.arange(K),
        "factor": np.arange(D),
    }

    def obs_coords(pairs: _Pairs, dim: str) -> dict[str, Any]:
        prefix = "" if dim == "obs" else "heldout_"
        return {
            dim: np.arange(len(pairs)),
            f"{prefix}user_id": (dim, user_ids[pairs.user_pos]),
            f"{prefix}item_id": (dim, item_ids_all[pairs.item_idx]),
        }

    var = "choice" if implicit else "rating"
    hvar = f"heldout_{var}"
    attrs = _attrs(model, replicate, seed)

    def ds(
        data_vars: dict[str, Any], extra: dict[str, Any] | None = None, note: bool = False
    ) -> Any:
        c = dict(coords)
        if extra:
            c.update(extra)
        used = {d for v in data_vars.values() for d in v[0]}
        c = {k: v for k, v in c.items() if k in used or (isinstance(v, tuple) and v[0] in used)}
        a = dict(attrs)
        if note:
            a["note"] = _VARIATIONAL_NOTE
        return xr.Dataset(data_vars, coords=c, attrs=a)

    train_c = obs_coords(train, "obs")
    held_c = obs_coords(held, "heldout_obs") if held is not None else {}
    groups: dict[str, Any] = {}
    groups["posterior"] = ds(post["posterior"], note=True)

    pp = {var: (("chain", "draw", "obs"), post["rep_train"][None])}
    if held is not None:
        pp[hvar] = (("chain", "draw", "heldout_obs"), post["rep_held"][None])
        pp["heldout_log_density"] = (("chain", "draw", "heldout_obs"), post["rep_held_ll"][None])
    groups["posterior_predictive"] = ds(pp, {**train_c, **held_c})

    if held is not None:
        ll = {hvar: (("chain", "draw", "heldout_obs"), post["ll_held"][None])}
    else:
        ll = {var: (("chain", "draw", "obs"), post["ll_train"][None])}
    groups["log_likelihood"] = ds(ll, {**train_c, **held_c})

    if implicit:
        obs = {var: (("obs",), train.item_idx.astype(np.int64))}
        if held is not None:
            obs[hvar] = (("heldout_obs",), held.item_idx.astype(np.int64))
    else:
        obs = {var: (("obs",), train.rating.astype(float))}
        if held is not None:
            obs[hvar] = (("heldout_obs",), held.rating.astype(float))
    groups["observed_data"] = ds(obs, {**train_c, **held_c})

    groups["constant_data"] = ds(
        _constants(model, u_req, train, held), {"catalog": item_ids_all, **_category_coord(model)}
    )
    if pri is not None:
        groups["prior"] = ds(pri["posterior"])
        groups["prior_predictive"] = ds(
            {var: (("chain", "draw", "obs"), pri["rep_train"][None])}, train_c
        )
    logger.info(
        "InferenceData: %d draws, %d users, %d items stored, %d training and %d held-out pairs",
        S, B, len(i_req), len(train), 0 if held is None else len(held),
    )  # fmt: skip
    return az.InferenceData(**groups)


def _category_coord(model: Any) -> dict[str, Any]:
    names = sorted({c for cs in model.item_categories_.values() for c in cs}, key=str)
    return {"category": np.asarray(names, dtype=str)} if names else {}


def _constants(model: Any, u_req: np.ndarray, train: _Pairs, held: _Pairs | None) -> dict[str, Any]:
    B, N = len(u_req), len(model.item_vocab_)
    out: dict[str, Any] = {
        "n_interactions": (("user",), np.bincount(train.user_pos, minlength=B).astype(np.int64)),
        "n_heldout": (
            ("user",),
            (np.bincount(held.user_pos, minlength=B) if held is not None else np.zeros(B)).astype(
                np.int64
            ),
        ),
        "user_index": (("user",), u_req.astype(np.int64)),
    }
    hyper = _hyperparameters(model)
    out.update({k: ((), v) for k, v in hyper.items()})
    if model.feedback == "implicit":
        pop = np.bincount(model.seen_.indices.cpu().numpy(), minlength=N).astype(np.int64)
        out["item_popularity"] = (("catalog",), pop)
        names = sorted({c for cs in model.item_categories_.values() for c in cs}, key=str)
        if names:
            col = {c: j for j, c in enumerate(names)}
            W = np.zeros((N, len(names)))
            for i, cs in model.item_categories_.items():
                for c in cs:
                    W[i, col[c]] += 1.0 / len(cs)
            out["category_weight"] = (("catalog", "category"), W)
    return out


def _hyperparameters(model: Any) -> dict[str, float]:
    m = model.model_
    hyper = {
        "persona_scale": float(m.scale("persona_scale")),
        "item_scale": float(m.scale("item_scale")),
        "bias_scale": float(m.scale("bias_scale")),
        "prevalence_concentration": float(m.prevalence_concentration),
    }
    if model.feedback == "explicit":
        hyper.update(
            noise=float(m.scale("noise")),
            temperature=float(m.scale("temperature")),
            user_bias_scale=float(m.scale("user_bias_scale")),
            global_mean=float(m.global_mean),
        )
    return hyper


def _attrs(model: Any, replicate: str, seed: int) -> dict[str, Any]:
    import arviz as az
    import pyro

    from bayes_persona._version import __version__

    return {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "arviz_version": az.__version__,
        "inference_library": "pyro",
        "inference_library_version": pyro.__version__,
        "bayes_persona_version": __version__,
        "inference": "variational",
        "guide": str(model.guide),
        "feedback": str(model.feedback),
        "n_personas": int(model.n_personas),
        "n_factors": int(model.n_factors),
        "replicate": replicate,
        "random_state": int(seed),
    }


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
                        rep_held_ll[:, hrows] = _logmeanexp(lp[:, choice], axis=0)
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
    p = np.exp(log_p - _logsumexp(log_p, axis=1)[:, None])  # normalised, (S, N)
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
    log_w = _logsumexp(log_f + log_g_T[:, None, :], axis=2) - _logsumexp(log_f, axis=2)  # (S, M)
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
    ll_out[:, rows] = _logsumexp(log_att + log_obs, axis=1)
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
        rep_ll_out[:, rows] = _logmeanexp(_logsumexp(log_att[:, None] + log_rep, axis=2), axis=0)


def _logmeanexp(x: np.ndarray, axis: int) -> np.ndarray:
    return _logsumexp(x, axis) - math.log(x.shape[axis])


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def explanation_inference_data(model: Any, users: Any, items: Any = None) -> Any:
    """A compact ``InferenceData`` of the quantities explanations rest on.

    Only the prevalences and the explanation probabilities of the given users, not every
    item factor: ``az.summary`` of it is a table a reader can scan (one row per user and
    persona, and per explained pair and persona), and ``az.plot_forest`` draws it.

    Parameters
    ----------
    model : PersonaRecommender
        Fitted.
    users : sequence of user ids
    items : sequence of item ids, optional
        Items to explain for every user; default each user's training items.

    Returns
    -------
    arviz.InferenceData
        One group, ``posterior``: ``prevalence`` (chain, draw, user, persona) and
        ``persona_prob`` (chain, draw, pair, persona), :math:`P(z = k \\mid u, i)` for each
        (user, item) pair, whose ``pair`` dimension carries ``user_id`` and ``item_id``
        coordinates. Persona 0 is each user's most prevalent, as in ``explain``; the draws
        are exactly those ``explain`` and ``personas`` summarise.
    """
    import arviz as az
    import xarray as xr

    _check_fitted(model)
    ids, u = model.posterior_.encode_users(users, "users")
    K, S = model.n_personas, model.n_draws
    prevalence = np.empty((len(u), S, K))
    probs, pair_user, pair_item = [], [], []
    with torch.no_grad():
        post_obj = model.posterior_
        for j, (uid, ui) in enumerate(zip(ids, u, strict=True)):
            its = model.seen_.items_of(int(ui)) if items is None else model.item_vocab_.encode(_id_array(items, "items"))
            # one pass of draws per user: the explanations, their persona order and the prevalences
            post, order, prev = post_obj.explanation_draws(np.asarray([ui]), its, S)
            prevalence[j] = prev[:, 0][:, order[0]].cpu().numpy()
            probs.append(post[:, 0][:, order[0]].cpu().numpy())  # (S, K, n), as explain_draws
            pair_user += [uid] * len(its)
            pair_item += list(model.item_vocab_.decode(its))
    persona_prob = np.concatenate(probs, axis=2).transpose(0, 2, 1)  # (S, pairs, K)
    posterior = xr.Dataset(
        {
            "prevalence": (("chain", "draw", "user", "persona"), prevalence.transpose(1, 0, 2)[None]),
            "persona_prob": (("chain", "draw", "pair", "persona"), persona_prob[None]),
        },
        coords={
            "chain": [0],
            "draw": np.arange(S),
            "user": netcdf_safe_ids(np.asarray(ids)),
            "persona": np.arange(K),
            "pair": np.arange(len(pair_user)),
            "user_id": ("pair", netcdf_safe_ids(np.asarray(pair_user))),
            "item_id": ("pair", netcdf_safe_ids(np.asarray(pair_item))),
        },
        attrs={"note": _VARIATIONAL_NOTE},
    )
    return az.InferenceData(posterior=posterior)
