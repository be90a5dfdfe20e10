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
* ``constant_data``: ``n_interactions`` (user), ``n_heldout`` (user), ``choice_weight`` (obs;
  only for a model fitted with ``sample_weight``, see *Weighted fits*), ``item_popularity``
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

Weighted fits
-------------
A model fitted with ``sample_weight`` counts a training row of weight :math:`c` as
:math:`c` choices of its item. Its pointwise log-likelihood is then that of the row,
:math:`c \log P(i \mid u, \theta_s)`, so that ``az.loo`` leaves out a row with all its
choices, and ``constant_data`` carries the weights as ``choice_weight`` (obs). The
replicated data keep the design above, one replicated choice per row: they replicate the
*set* of a user's items given its size, not the repeat counts, so the checks compare
which items a user has, not how often each was chosen.

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
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona.data._validation import check_min_int as _check_int
from bayes_persona.diagnostics.predictive import (
    _draw_groups,
    _heldout_pairs,
    _Pairs,
    _training_pairs,
)
from bayes_persona.exceptions import DataTypeError, DataValidationError, NotFittedError

__all__ = ["to_inference_data", "REPLICATE_OPTIONS"]

logger = logging.getLogger(__name__)

#: Ways to replicate a user's implicit choices (see the module docstring).
REPLICATE_OPTIONS = ("without_replacement", "with_replacement")

_VARIATIONAL_NOTE = (
    "chain 0 holds independent draws from a variational approximation (Pyro SVI guide), "
    "not MCMC: R-hat and ESS do not apply to them"
)



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


def netcdf_safe_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as a netCDF-writable array: int64 for integer ids, fixed-width ``str`` otherwise."""
    arr = np.asarray(ids)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "O":
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr):
            return arr.astype(np.int64)
    return arr.astype(str)


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
    if train.weight is not None:  # fit's sample_weight: the choices each training row stands for
        out["choice_weight"] = (("obs",), train.weight.astype(np.float64))
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
