"""Fold new users into a fitted model without refitting it.

:func:`fold_in` infers the personas and persona prevalences of users that were not in the
training data from their interaction histories, with everything the fit learnt about the
items (the item factors' and biases' posterior) and the empirical-Bayes hyperparameters
held fixed: a few SVI steps on the new users' variational parameters only. The cost is
``O(n_steps x n_new_users x K x D)`` plus the softmax normaliser, independent of the number
of training users.

Design choice: the result is a **new** :class:`~bayes_persona.PersonaRecommender` that
knows the new users only (its ``user_vocab_`` holds their external ids, its ``seen_`` their
histories) and *shares* the fitted item parameters with the original (no copy). The
original model is left untouched: its vocabulary, its users' posterior and their
common-random-number draws (seeded by user index) do not change, so folding users in never
changes what the model says about anyone else. Everything else works on the returned
model -- ``recommend``, ``explain``, ``personas``, ``score``, ``log_predictive``,
``sample_posterior``, ``save`` -- and its item draws are the original's (same seed), so the
two models' outputs are directly comparable.

Users already known to the model are refused (:class:`DataValidationError`): their
posterior is the fit's, and folding in a partial history would silently replace it. Items
unknown to the model raise :class:`UnknownIdError` naming them: a fold-in cannot add items.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from bayes_persona.data._validation import check_min_int, check_positive_float, ratings_of
from bayes_persona.data.preprocessing import Vocabulary
from bayes_persona.exceptions import DataValidationError, UnknownIdError
from bayes_persona.persona.fitting import build_model, check_sample_weight, initial_personas
from bayes_persona.persona.model import PersonaModel, make_guide
from bayes_persona.svi.engine import SVIConfig, run_svi

__all__ = ["fold_in"]

logger = logging.getLogger(__name__)

_PREVIEW = 5


def _user_tables(kind: str, model: PersonaModel, n_users: int) -> set[str]:
    """Names of the guide parameters with one row per user (their shape follows n_users)."""
    shapes = []
    for U in (n_users, n_users + 1):
        m = PersonaModel(U, 1, model.n_personas, model.n_factors, model.feedback)
        g = make_guide(kind, m, 0.05, torch.Generator().manual_seed(0))
        shapes.append({k: tuple(v.shape) for k, v in g.named_parameters()})
    return {k for k in shapes[0] if shapes[0][k] != shapes[1][k]}


def fold_in(
    model: Any,
    history: Any,
    *,
    n_steps: int = 200,
    learning_rate: float = 0.05,
    random_state: int | None = None,
    progress: bool = False,
    sample_weight: Any = None,
    start: Mapping[Any, tuple[Any, Any]] | None = None,
) -> Any:
    """Infer new users' personas with the item parameters held fixed.

    Parameters
    ----------
    model : PersonaRecommender
        A fitted model.
    history : DataFrame or Dataset
        The new users' interactions: ``user_id``, ``item_id`` (and ``rating`` for an
        explicit-feedback model). Several new users may be folded in at once.
    n_steps : int, default 200
        SVI steps (each over up to ``model.batch_size`` of the new users).
    learning_rate : float, default 0.05
    random_state : int, optional
        Seeds the fold-in's SVI; defaults to ``model.random_state``.
    progress : bool
        Show a progress bar.
    sample_weight : array-like of shape (n_rows,), optional
        How many choices each row of ``history`` stands for, as in ``fit`` (implicit
        feedback only): a row of weight c enters the new users' likelihood as c
        independent choices of its item. The weights are kept with the new model's
        interactions (``seen_.weights``), as ``fit`` keeps its own.
    start : mapping of user id to (personas, prevalence), optional
        Where to start chosen new users: persona locations of shape (K, D) and a prevalence
        of shape (K,) on the simplex (its Dirichlet factor starts at ``alpha + prevalence``,
        as the fit's start does). Users not in it start at the taste clusters of their
        items, as ``fit`` starts every user. Two fold-ins of the same history from different
        starts can be compared by :func:`bayes_persona.diagnostics.evidence.user_elbo`.

    Returns
    -------
    PersonaRecommender
        A fitted model over the new users only, sharing ``model``'s items (see the module
        docstring); ``model`` is not changed.

    Raises
    ------
    UnknownIdError
        ``history`` has items the model does not know (they are named).
    DataValidationError
        A user of ``history`` is already known to the model, or ``history`` is malformed.
    """
    from bayes_persona.persona.interactions import InteractionMatrix

    posterior = model.posterior_  # raises NotFittedError before fit
    n_steps = check_min_int("n_steps", n_steps, 1)
    check_positive_float("learning_rate", learning_rate)
    seed = (
        model.random_state if random_state is None else check_min_int("random_state", random_state, 0)
    )
    frame = ratings_of(history, "history")
    if model.feedback == "explicit" and "rating" not in frame.columns:
        raise DataValidationError("history needs a 'rating' column for an explicit-feedback model")
    weights = None if sample_weight is None else check_sample_weight(sample_weight, len(frame), model.feedback, "history")

    user_ids = frame["user_id"].to_numpy()
    known, _ = model.user_vocab_.index_of_known(user_ids)
    if known.any():
        bad = list(dict.fromkeys(user_ids[known].tolist()))
        more = f" and {len(bad) - _PREVIEW} more" if len(bad) > _PREVIEW else ""
        raise DataValidationError(
            f"fold_in is for new users; {len(bad)} user(s) of history are already in the model: "
            f"{bad[:_PREVIEW]}{more}. Use recommend/explain for them, or refit with their data."
        )
    item_ids = frame["item_id"].to_numpy()
    known_items, _ = model.item_vocab_.index_of_known(item_ids)
    if not known_items.all():
        bad = list(dict.fromkeys(item_ids[~known_items].tolist()))
        more = f" and {len(bad) - _PREVIEW} more" if len(bad) > _PREVIEW else ""
        raise UnknownIdError(
            f"history has {len(bad)} item id(s) unknown to the model (fold_in cannot add items): "
            f"{bad[:_PREVIEW]}{more}"
        )

    vocab = Vocabulary.from_ids(user_ids, name=model.user_vocab_.name)
    u = vocab.encode(user_ids)
    i = model.item_vocab_.encode(item_ids)
    U, N = len(vocab), len(model.item_vocab_)
    r = frame["rating"].to_numpy(np.float32) if model.feedback == "explicit" else None
    dev = posterior.device

    new = type(model)(**model.get_params())  # the same estimator class, unfitted
    new.set_params(progress=progress)
    new.user_vocab_ = vocab
    new.item_vocab_ = model.item_vocab_
    new.item_categories_ = model.item_categories_
    new.item_titles_ = getattr(model, "item_titles_", {})
    new.n_negatives_ = model.n_negatives_
    new.seen_ = InteractionMatrix.build(u, i, U, r, weights)

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pm = build_model(model, U, N)
        pm.load_state_dict(model.model_.state_dict())
        new.model_ = pm.to(dev)
        guide = make_guide(model.guide, pm, float(model.init_scale), gen)
        user_tables = _user_tables(model.guide, model.model_, U)
        # Start each new user's personas at the taste clusters of their items, as fit does.
        item_loc = model.guide_.item_loc.detach().cpu()
        p0, pi0 = initial_personas(model, item_loc.numpy().astype(np.float64), new.seen_, seed)
        if start is not None:
            _apply_start(start, vocab, p0, pi0)
        guide.initialise(item_loc, p0, pi0)
        guide.to(dev)
        # Share (not copy) everything that is not a user table: the items' posterior.
        for name, p in model.guide_.named_parameters():
            if name not in user_tables:
                setattr(guide, name, p)
        for p in new.model_.parameters():
            p.requires_grad_(False)
        for name, p in guide.named_parameters():
            p.requires_grad_(name in user_tables)
        new.guide_ = guide
        steps_per_epoch = max(1, math.ceil(U / model.batch_size))
        config = SVIConfig(
            max_steps=n_steps,
            steps_per_epoch=min(n_steps, max(steps_per_epoch, 10)),
            learning_rate=float(learning_rate),
            lr_decay=0.1,
            patience=0,
            progress=progress,
            local_particles=int(model.user_particles),  # the fit's own bound
        )
        seen = new.seen_.to(dev)

        def next_batch(g: torch.Generator):
            return seen.sample_batch(g, model.batch_size, model.max_items_per_user, model.n_negatives_, N, dev)

        try:
            result = run_svi(new.model_, guide, next_batch, gen, config)
        finally:
            for p in guide.parameters():
                p.requires_grad_(False)
    new.elbo_ = np.asarray(result.elbo)
    new.validation_ = []
    new.n_steps_ = result.steps
    new.stopped_early_ = result.stopped_early
    new.converged_ = True  # a fixed number of steps with a decaying step size
    logger.info("folded in %d user(s) in %d steps; final ELBO %.4g", U, result.steps, new.elbo_[-1])
    return new


def _apply_start(start: Mapping[Any, tuple[Any, Any]], vocab: Vocabulary, p0: torch.Tensor, pi0: torch.Tensor) -> None:
    """Write ``start``'s personas (K, D) and prevalences (K,) into the starting tables, in place."""
    if not isinstance(start, Mapping):
        raise DataValidationError(f"start must be a mapping of user id to (personas, prevalence); got {type(start).__name__}")
    known, _ = vocab.index_of_known(np.asarray(list(start), dtype=object))
    if not known.all():
        bad = [uid for uid, k in zip(start, known, strict=True) if not k]
        raise DataValidationError(f"start names {len(bad)} user(s) that history does not have: {bad[:_PREVIEW]}")
    K, D = p0.shape[1], p0.shape[2]
    for uid, value in start.items():
        if not (isinstance(value, tuple | list) and len(value) == 2):
            raise DataValidationError(f"start[{uid!r}] must be a pair (personas, prevalence); got {type(value).__name__}")
        personas, prevalence = (np.asarray(v, dtype=np.float64) for v in value)
        if personas.shape != (K, D) or prevalence.shape != (K,):
            raise DataValidationError(
                f"start[{uid!r}] must hold personas of shape {(K, D)} and a prevalence of shape {(K,)}; "
                f"got {personas.shape} and {prevalence.shape}"
            )
        if not (np.isfinite(personas).all() and np.isfinite(prevalence).all()):
            raise DataValidationError(f"start[{uid!r}] holds values that are not finite")
        if (prevalence < 0).any() or abs(prevalence.sum() - 1.0) > 1e-6:
            raise DataValidationError(
                f"start[{uid!r}]'s prevalence must be on the simplex (non-negative, sum 1); got sum {prevalence.sum():.6g}"
            )
        j = int(vocab.encode([uid])[0])
        p0[j] = torch.as_tensor(personas, dtype=p0.dtype)
        pi0[j] = torch.as_tensor(prevalence, dtype=pi0.dtype)
