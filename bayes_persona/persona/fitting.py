"""Fitting a :class:`~bayes_persona.PersonaRecommender`: what ``fit`` does between checking
its settings and storing its fitted state.

:func:`check_settings` checks the constructor arguments; :func:`training_data` checks and
encodes the data (vocabularies, training matrix, item tables) without touching the
estimator; :func:`fit_state` builds the model (:func:`build_model`) and its guide,
initialises the guide (spectral item factors, persona seeds at the taste clusters of each
user's items: :func:`initial_personas`) and runs SVI
(:func:`~bayes_persona.svi.engine.run_svi`). It returns a :class:`FitState`; the estimator
stores it. ``load`` and ``fold_in`` build their models with the same :func:`build_model`,
and ``fold_in`` seeds new users with the same :func:`initial_personas`.

Every function reads the estimator's public settings only (its constructor arguments and
the class-level tuning constants ``persona_init_length``, ``sparse_update_ratio`` and
``sparse_min_floats``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona.data._validation import (
    check_min_int,
    check_positive_float,
    check_prob,
    id_kind_of_values,
    ratings_of,
    validate_items,
)
from bayes_persona.data.preprocessing import Vocabulary
from bayes_persona.exceptions import DataTypeError, DataValidationError, ModelFitError
from bayes_persona.persona.initialization import (
    kmeans,
    prevalence_from_shares,
    seed_persona_rows,
    spectral_item_factors,
)
from bayes_persona.persona.interactions import InteractionMatrix
from bayes_persona.persona.model import (
    Batch,
    PersonaModel,
    log_softmax_normaliser,
    make_guide,
    persona_shares,
)
from bayes_persona.persona.posterior import CHUNK_FLOATS
from bayes_persona.svi.distributed import UserShard, is_distributed
from bayes_persona.svi.engine import SVIConfig, SVIResult, run_svi

__all__ = [
    "check_settings",
    "convergence_message",
    "TrainingData",
    "training_data",
    "FitState",
    "fit_state",
    "build_model",
    "initial_personas",
    "point_log_likelihood",
    "item_tables",
]

# Documented upper bounds of numeric parameters (beyond them a fit overflows or stalls).
MAX_DRAWS = 100_000
MAX_SEED = 2**63 - 1
MAX_INIT_SCALE = 10.0
# Beyond it the prior pins the prevalences at uniform, and around 1e13 the float32 guide overflows.
MAX_PREVALENCE_CONCENTRATION = 1e6
MIN_FACTOR_CAP = 64  # n_factors may reach max(n_items, this)

# Settings that change how a fitted model is used, not what the fit computes: a checkpoint
# written under other values of these is resumed.
INFERENCE_ONLY = ("n_draws", "hdi_prob", "device", "n_threads", "progress")


def check_settings(est: Any) -> None:
    """Check an estimator's constructor arguments (``fit`` and ``load`` call this).

    Raises
    ------
    DataTypeError, DataValidationError
        A setting has the wrong type or lies outside its documented range (named).
    """
    check_min_int("n_personas", est.n_personas, 1)
    check_min_int("n_factors", est.n_factors, 1)
    check_min_int("batch_size", est.batch_size, 1)
    check_min_int("max_items_per_user", est.max_items_per_user, 1)
    check_min_int("user_particles", est.user_particles, 1)
    check_min_int("max_epochs", est.max_epochs, 1)
    check_min_int("patience", est.patience, 0)
    check_min_int("n_draws", est.n_draws, 2, MAX_DRAWS)
    check_min_int("random_state", est.random_state, 0, MAX_SEED)
    check_min_int("n_prototypes", est.n_prototypes, 0)
    if est.n_threads is not None:
        check_min_int("n_threads", est.n_threads, 1)
    for name in ("item_prior_scale", "persona_prior_scale", "bias_prior_scale"):
        if getattr(est, name) is not None:
            check_positive_float(name, getattr(est, name))
    if est.n_negatives is not None:
        check_min_int("n_negatives", est.n_negatives, 1)
    if est.feedback not in ("implicit", "explicit"):
        raise DataValidationError(f"feedback must be 'implicit' or 'explicit'; got {est.feedback!r}")
    if est.feedback == "explicit" and est.user_particles > 1:
        raise DataValidationError(
            f"user_particles > 1 (the importance-weighted bound) needs feedback='implicit'; got "
            f"user_particles={est.user_particles!r} with feedback='explicit'"
        )
    if est.likelihood not in ("joint", "mixture"):
        raise DataValidationError(f"likelihood must be 'joint' or 'mixture'; got {est.likelihood!r}")
    if est.guide not in ("meanfield", "lowrank"):
        raise DataValidationError(f"guide must be 'meanfield' or 'lowrank'; got {est.guide!r}")
    check_positive_float("prevalence_concentration", est.prevalence_concentration, MAX_PREVALENCE_CONCENTRATION)
    check_positive_float("learning_rate", est.learning_rate)
    check_positive_float("init_scale", est.init_scale, MAX_INIT_SCALE)
    check_prob("hdi_prob", est.hdi_prob)
    if est.device != "cpu" and not str(est.device).startswith("cuda"):
        raise DataValidationError(f"device must be 'cpu' or 'cuda[:N]'; got {est.device!r}")
    if str(est.device).startswith("cuda") and not torch.cuda.is_available():
        raise DataValidationError(f"device={est.device!r} but CUDA is not available here")


@dataclass
class FitState:
    """What SVI produced: the model, its guide and the run (``failure`` set when it diverged)."""

    model: PersonaModel
    guide: Any
    result: SVIResult
    steps_per_epoch: int
    failure: ModelFitError | None = None


def build_model(est: Any, n_users: int, n_items: int, rating_mean: float = 0.0) -> PersonaModel:
    """The generative model for ``est``'s settings over ``n_users`` users and ``n_items`` items."""
    return PersonaModel(
        n_users, n_items, est.n_personas, est.n_factors, est.feedback, float(est.prevalence_concentration),
        rating_mean=rating_mean, n_prototypes=est.n_prototypes, item_prior_scale=est.item_prior_scale,
        persona_prior_scale=est.persona_prior_scale, bias_prior_scale=est.bias_prior_scale,
        likelihood=est.likelihood,
    )  # fmt: skip


def initial_personas(est: Any, item_factors: np.ndarray, seen: InteractionMatrix, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting persona locations (U, K, D) and prevalences (U, K): k-means++ seeds at the
    taste clusters of each user's items (:func:`~bayes_persona.persona.initialization.seed_personas`),
    with the joint form's prevalences turned from shares of choices into the prior weights
    that give those shares (:func:`~bayes_persona.persona.initialization.prevalence_from_shares`)."""
    table, index, pi0 = seed_persona_rows(
        item_factors, seen.indptr.numpy(), seen.indices.numpy(), est.n_personas, est.persona_init_length, seed
    )
    p0 = table[index]
    if est.feedback == "implicit" and est.likelihood == "joint":
        pi0 = prevalence_from_shares(pi0, table, item_factors, index=index)
    return torch.as_tensor(p0, dtype=torch.float32), torch.as_tensor(pi0, dtype=torch.float32)


def item_tables(items: pd.DataFrame | None, vocab: Vocabulary) -> tuple[dict[int, tuple[str, ...]], dict[int, str]]:
    """``(categories, titles)`` of the known items of an items table, keyed by item index."""
    if items is None:
        return {}, {}
    known, idx = vocab.index_of_known(items["item_id"].to_numpy())
    cats, titles = {}, {}
    if "categories" in items.columns:
        cats = {int(i): tuple(c) for i, c in zip(idx, items["categories"].to_numpy()[known], strict=True) if len(c)}
    if "title" in items.columns:
        t = items["title"].to_numpy()[known]
        titles = {int(i): str(s) for i, s in zip(idx, t, strict=True) if isinstance(s, str) and s}
    return cats, titles


def point_log_likelihood(model: PersonaModel, guide: Any, u: torch.Tensor, i: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
    """Held-out log-likelihood per pair at the guide's location (a fast proxy), shape (n,)."""
    dev = guide.item_loc.device
    step = max(1, min(4096, CHUNK_FLOATS // max(guide.n_personas * guide.n_items, 1)))  # (n, K, N) logits
    out = []
    for s in range(0, len(u), step):
        uu, ii = u[s : s + step].to(dev), i[s : s + step].to(dev)
        p = guide.persona_median(uu)  # (n, K, D)
        pi = guide.prevalence_mean(uu)  # (n, K)
        q, b = guide.item_loc, guide.bias_loc
        aff = torch.einsum("nkd,nd->nk", p, q[ii])
        if model.feedback == "implicit":
            log_norm = log_softmax_normaliser(p, q, b, q.shape[0])
            log_w = persona_shares(torch.log(pi), log_norm, model.likelihood == "joint")
            out.append(torch.logsumexp(log_w + aff + b[ii, None] - log_norm, -1))
        else:
            att = torch.log_softmax(torch.log(pi) + aff / model.scale("temperature"), -1)
            mean = aff + (b[ii] + guide.user_bias_loc[uu] + model.global_mean)[:, None]
            lp = torch.distributions.Normal(mean, model.scale("noise")).log_prob(r[s : s + step, None].to(dev))
            out.append(torch.logsumexp(att + lp, -1))
    return torch.cat(out).cpu()


def _validator(validation: Any, feedback: str, users: Vocabulary, items: Vocabulary) -> Callable[[PersonaModel, Any], float]:
    """Mean held-out point log-likelihood of ``validation``'s known pairs, checked now."""
    val = ratings_of(validation, "validation")
    mu, _ = users.index_of_known(val["user_id"].to_numpy())
    mi, _ = items.index_of_known(val["item_id"].to_numpy())
    keep = mu & mi
    if not keep.any():
        raise DataValidationError("validation shares no (known user, known item) pair with train")
    u = torch.as_tensor(users.encode(val["user_id"].to_numpy()[keep]))
    i = torch.as_tensor(items.encode(val["item_id"].to_numpy()[keep]))
    r = torch.as_tensor(val["rating"].to_numpy(np.float32)[keep]) if feedback == "explicit" else None

    def validate(model: PersonaModel, guide: Any) -> float:
        with torch.no_grad():
            return float(point_log_likelihood(model, guide, u, i, r).mean())

    return validate


def fingerprint(est: Any, ratings: pd.DataFrame, item_vocab: Vocabulary, weights: np.ndarray | None = None) -> str:
    """What a checkpoint must match to be resumed: the fit's settings, data (with its
    ``sample_weight``) and catalogue."""
    cfg = {k: v for k, v in est.get_params().items() if k not in INFERENCE_ONLY}
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    cols = ["user_id", "item_id"] + (["rating"] if est.feedback == "explicit" else [])
    h.update(pd.util.hash_pandas_object(ratings[cols], index=False).to_numpy().tobytes())
    if weights is not None:
        h.update(b"sample_weight" + np.ascontiguousarray(weights, dtype=np.float64).tobytes())
    h.update(json.dumps(item_vocab.to_dict(), sort_keys=True, default=str).encode())  # the catalogue
    return h.hexdigest()


def _check_training_data(est: Any, ratings: pd.DataFrame) -> None:
    K = est.n_personas
    if est.feedback == "explicit" and "rating" not in ratings.columns:
        raise DataValidationError("feedback='explicit' needs a 'rating' column in train; it has none")
    if est.feedback == "implicit" and "rating" in ratings.columns and ratings["rating"].nunique() > 1:
        warnings.warn(
            "feedback='implicit' takes every row of train as a positive, and train has a "
            f"'rating' column with {ratings['rating'].nunique()} distinct values, which are "
            "ignored: low ratings count as choices too. Keep only the positives first, e.g. "
            "bp.binarize(data, 4.0)",
            UserWarning,
            stacklevel=5,
        )
    N = int(ratings["item_id"].nunique())
    if K > N:
        raise DataValidationError(f"n_personas={K} exceeds the number of items in train ({N})")
    if est.n_factors > max(N, MIN_FACTOR_CAP):
        raise DataValidationError(
            f"n_factors={est.n_factors} exceeds what train supports: at most "
            f"max(number of items, {MIN_FACTOR_CAP}) = {max(N, MIN_FACTOR_CAP)} dimensions "
            f"(train has {N} items)"
        )
    if est.feedback == "explicit":
        big = np.abs(ratings["rating"].to_numpy(np.float64)) > 1e30
        if big.any():
            raise DataValidationError(
                f"column 'rating' of train must lie within +-1e30 (the model computes in "
                f"float32, whose range ends at 3.4e38 and whose squares overflow long "
                f"before); got {int(big.sum())} rows beyond, e.g. {ratings['rating'][big].iloc[0]!r}"
            )


@dataclass
class TrainingData:
    """Checked training data, encoded: what :func:`fit_state` fits."""

    ratings: pd.DataFrame
    users: np.ndarray
    items: np.ndarray
    ratings_f32: np.ndarray | None
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    seen: InteractionMatrix
    item_categories: dict[int, tuple[str, ...]]
    item_titles: dict[int, str]
    n_negatives: int | None
    validate: Callable[[PersonaModel, Any], float] | None
    weights: np.ndarray | None = None


def check_sample_weight(sample_weight: Any, n_rows: int, feedback: str, frame: str = "train") -> np.ndarray:
    """``fit``'s (or ``fold_in``'s) ``sample_weight`` as float64 (n_rows,), checked; ``frame``
    names the interactions it weighs in the errors.

    Raises
    ------
    DataTypeError
        Not a 1-D numeric array-like.
    DataValidationError
        Explicit feedback, a length other than ``frame``'s rows, or a weight that is not a
        finite positive number.
    """
    if feedback != "implicit":
        raise DataValidationError(
            f"sample_weight is for feedback='implicit' (how many choices a row stands for); "
            f"this model has feedback={feedback!r}"
        )
    arr = np.asarray(sample_weight)
    if arr.dtype.kind not in "iuf" or arr.ndim != 1:
        raise DataTypeError(
            f"sample_weight must be a 1-D array of numbers, one per row of {frame}; got "
            f"{type(sample_weight).__name__} with dtype {arr.dtype} and shape {arr.shape}"
        )
    if len(arr) != n_rows:
        raise DataValidationError(f"sample_weight must have one entry per row of {frame} ({n_rows}); got {len(arr)}")
    arr = arr.astype(np.float64)
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataValidationError(
            f"sample_weight must be finite and positive; got {int(bad.sum())} entries that are "
            f"not, first {float(arr[first])!r} at row {first}"
        )
    return arr


def training_data(est: Any, train: Any, items: pd.DataFrame | None = None, validation: Any = None,
                  catalogue: Any = None, sample_weight: Any = None) -> TrainingData:  # fmt: skip
    """Check and encode ``fit``'s data (nothing of ``est`` is changed).

    Raises
    ------
    DataTypeError, DataValidationError
        ``train``, ``items``, ``validation``, ``catalogue`` or ``sample_weight`` is
        malformed or does not suit ``est``'s settings (the message names which and why).
    """
    ratings = ratings_of(train, "train")
    weights = None if sample_weight is None else check_sample_weight(sample_weight, len(ratings), est.feedback)
    item_ids = ratings["item_id"].to_numpy()
    if catalogue is not None:
        cat = Vocabulary.from_ids(catalogue, name="catalogue")
        train_kind = id_kind_of_values(item_ids, "column 'item_id' of train")
        if cat.kind != train_kind:
            raise DataTypeError(f"catalogue must hold {train_kind} item ids like train's; got {cat.kind} ids")
        item_ids = np.concatenate([item_ids.astype(cat.ids.dtype), cat.ids])
    if items is None and not isinstance(train, pd.DataFrame):
        items = getattr(train, "items", None)
    if items is not None:
        items = validate_items(items, frame="items")
    _check_training_data(est, ratings)

    user_vocab = Vocabulary.from_ids(ratings["user_id"].to_numpy(), name="user_id")
    item_vocab = Vocabulary.from_ids(item_ids, name="item_id")
    u = user_vocab.encode(ratings["user_id"].to_numpy())
    i = item_vocab.encode(ratings["item_id"].to_numpy())
    N = len(item_vocab)
    r = ratings["rating"].to_numpy(np.float32) if est.feedback == "explicit" else None
    n_neg = est.n_negatives
    if n_neg is None and N > 20_000:
        n_neg = 2048
    validate = _validator(validation, est.feedback, user_vocab, item_vocab) if validation is not None else None
    return TrainingData(
        ratings, u, i, r, user_vocab, item_vocab, InteractionMatrix.build(u, i, len(user_vocab), r, weights),
        *item_tables(items, item_vocab), None if n_neg is None or n_neg >= N else n_neg, validate, weights,
    )  # fmt: skip


def fit_state(est: Any, data: TrainingData, checkpoint_dir: str | os.PathLike | None = None,
              checkpoint_every: int = 100, resume: bool = False,
              built: Callable[[PersonaModel, Any], None] | None = None) -> FitState:  # fmt: skip
    """Fit ``est``'s model to checked ``data`` by SVI (the body of ``PersonaRecommender.fit``).

    ``built(model, guide)``, when given, is called once the model and its initialised guide
    exist, before the first step (the estimator holds them from then on, so that what
    observes the fit sees the guide being fitted). A fit that fails with
    :class:`~bayes_persona.exceptions.ModelFitError` returns its state at the last good
    (finite) parameters with ``failure`` set; any other exception propagates.
    """
    u, i, r, seen, n_neg, validate = data.users, data.items, data.ratings_f32, data.seen, data.n_negatives, data.validate
    U, N, K, D = len(data.user_vocab), len(data.item_vocab), est.n_personas, est.n_factors
    device = torch.device(est.device)
    gen = torch.Generator().manual_seed(est.random_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(est.random_state)
        model = build_model(est, U, N, float(r.mean()) if r is not None else 0.0).to(device)
        guide = make_guide(est.guide, model, float(est.init_scale), gen)
        q0 = spectral_item_factors(u, i, U, N, D, est.random_state)
        p0, pi0 = initial_personas(est, q0, seen, est.random_state)
        guide.initialise(torch.as_tensor(q0, dtype=torch.float32), p0, pi0)
        if est.n_prototypes:  # prototypes start at taste clusters of the items, like personas
            c, _ = kmeans(q0, est.n_prototypes, est.random_state)
            with torch.no_grad():
                model.prototype_loc[: len(c)] = torch.as_tensor(est.persona_init_length * c, dtype=torch.float32)
        guide.to(device)
        # Lazy row-sparse updates when a step touches a small share of a table's rows,
        # so that a step costs O(batch) rather than O(users) (see bayes_persona.svi.optim).
        ratio, big = est.sparse_update_ratio, est.sparse_min_floats
        guide.sparse_users = U > ratio * est.batch_size and U * K * D >= big
        guide.sparse_items = n_neg is not None and N > ratio * n_neg and N * D >= big
        if built is not None:
            built(model, guide)
        shard = None
        if is_distributed():  # data-parallel: this rank samples its own users only
            shard = UserShard(seen, device, est.random_state, gen)
        steps_per_epoch = max(1, math.ceil((U if shard is None else shard.max_users) / est.batch_size))
        config = SVIConfig(
            max_steps=est.max_epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch,
            learning_rate=float(est.learning_rate),
            patience=est.patience,
            progress=est.progress,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume=resume,
            local_particles=int(est.user_particles),
        )
        on_device = seen.to(device) if shard is None else shard.seen

        def next_batch(g: torch.Generator) -> Batch:
            b = on_device.sample_batch(g, est.batch_size, est.max_items_per_user, n_neg, N, device)
            return b if shard is None else shard.globalise(b)

        model.train()
        failure = None
        try:
            result = run_svi(
                model, guide, next_batch, gen, config,
                (lambda: validate(model, guide)) if validate is not None else None,
                fingerprint=fingerprint(est, data.ratings, data.item_vocab, data.weights), sync=shard,
            )  # fmt: skip
        except ModelFitError as exc:  # modules are back at their last good (finite) state
            failure, result = exc, exc.result
    for p in list(model.parameters()) + list(guide.parameters()):
        p.requires_grad_(False)
    return FitState(model, guide, result, steps_per_epoch, failure)


def convergence_message(est: Any, result: SVIResult) -> str | None:
    """Why a finished fit has not converged (``converged_`` False), or None when it has."""
    if result.fell_from_best:
        return (
            f"the fit drifted away from its optimum: the last epoch's mean ELBO is "
            f"{result.final_epoch_elbo:.4g}, against {result.best_epoch_elbo:.4g} at its best; "
            f"learning_rate={est.learning_rate:g} is likely too large (converged_ is False)"
        )
    if not (result.stopped_early or not result.still_improving):
        return (
            f"the fit reached max_epochs={est.max_epochs} while its ELBO was still rising "
            "by more than its minibatch noise: the posterior, and so the intervals, may not "
            "have settled; raise max_epochs (or learning_rate) to check"
        )
    return None
