"""Each user's share of the fit's objective: which of two fits of a user's personas the model prefers.

For a fitted :class:`~bayes_persona.PersonaRecommender` with global latents :math:`\\beta`
(item factors and biases) and each user's local latents :math:`\\theta_u` (personas and
prevalence), :func:`user_elbo` estimates, with the items drawn from their guide,

.. math::

    \\mathrm{ELBO}_u = E_{q(\\beta)} E_{q(\\theta_u)}
        \\log \\frac{p(x_u \\mid \\theta_u, \\beta)\\, p(\\theta_u)}{q(\\theta_u)},
    \\qquad
    \\mathcal{L}^{M}_u = E_{q(\\beta)} E\\, \\log \\frac{1}{M} \\sum_{m=1}^{M}
        \\frac{p(x_u \\mid \\theta_u^m, \\beta)\\, p(\\theta_u^m)}{q(\\theta_u^m)},

the user's term of the ELBO the fit maximises and its importance-weighted bound
(:class:`~bayes_persona.svi.importance.LocalImportanceELBO`), which rises towards
:math:`\\log p(x_u \\mid \\beta)` with :math:`M`. Two guides of the same user under the same
items and hyperparameters (for example two :func:`~bayes_persona.persona.foldin.fold_in` runs
from different starts) are compared by the objective through these numbers: the one with
the higher ELBO is the one the fit would keep.

:func:`persona_count_evidence` reads the same bounds across fits that differ in the number of
personas K: for each user, which K its own choices support. Each fit's bound is computed under
that fit's items, so the comparison is per user given each fit's item posterior. A mean-field
guide sits in one of the K! relabellings of a user's personas that the exchangeable prior
makes equally likely; a posterior that put equal mass on all of them would be up to
:math:`\\log K!` nats higher, so the table also gives each bound with that allowance (the most
label switching can add, reached only when the relabelled modes do not overlap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona.data._validation import as_id_list, check_min_int
from bayes_persona.exceptions import DataValidationError
from bayes_persona.persona.model import Batch
from bayes_persona.svi.importance import LocalImportanceELBO

__all__ = ["user_elbo", "persona_count_evidence"]


def _full_batch(seen: Any, users: torch.Tensor) -> Batch:
    """Every training interaction of ``users``, padded, each counted by its ``sample_weight`` (one when the fit had none); no subsampling weight."""
    indptr = seen.indptr.to(users.device)
    n = indptr[users + 1] - indptr[users]
    L = max(1, int(n.max()))
    ar = torch.arange(L, device=users.device).expand(len(users), L)
    mask = ar < n[:, None]
    flat = indptr[users][:, None] + torch.where(mask, ar, torch.zeros_like(ar))
    items = seen.indices.to(users.device)[flat]
    ratings = torch.where(mask, seen.values[flat], 0.0) if seen.values is not None else None
    obs_weight = torch.where(mask, seen.weights[flat], 1.0) if seen.weights is not None else None
    return Batch(users, items, mask, torch.ones(len(users)), ratings, None, obs_weight)


def user_elbo(
    model: Any,
    users: Any = None,
    *,
    n_particles: int = 32,
    n_item_draws: int = 4,
    batch_size: int = 64,
    random_state: int = 0,
) -> pd.DataFrame:
    """Each user's term of the fit's ELBO, and its importance-weighted bound.

    Parameters
    ----------
    model : PersonaRecommender
        Fitted with implicit feedback (a model returned by ``fold_in`` too: its users are the
        folded ones).
    users : sequence of user ids, optional
        Whose terms to estimate; default every user of the model.
    n_particles : int, default 32
        Draws ``M`` of each user's personas and prevalence per draw of the items.
    n_item_draws : int, default 4
        Draws of the items from their guide; the figures are means over them.
    batch_size : int, default 64
        Users scored at once (memory: ``M x batch_size x K x n_items`` logits).
    random_state : int, default 0
        Seeds the draws (torch's global generator is restored afterwards).

    Returns
    -------
    DataFrame
        ``user_id, n_interactions, elbo, iw_bound``, one row per user (in ``users``' order,
        or the model's). ``elbo`` is the mean over draws of the log weights; ``iw_bound`` their
        log-mean-exp over the ``M`` draws (at least ``elbo``, up to Monte Carlo error).

    References
    ----------
    .. [1] Y. Burda, R. Grosse, R. Salakhutdinov. "Importance Weighted Autoencoders". ICLR 2016.
    """
    posterior = model.posterior_  # NotFittedError before fit
    if model.feedback != "implicit":
        raise DataValidationError(f"user_elbo needs feedback='implicit'; got {model.feedback!r}")
    n_particles = check_min_int("n_particles", n_particles, 1)
    n_item_draws = check_min_int("n_item_draws", n_item_draws, 1)
    batch_size = check_min_int("batch_size", batch_size, 1)
    random_state = check_min_int("random_state", random_state, 0)
    dev = posterior.device
    seen = model.seen_.to(dev)
    index = (
        np.arange(len(model.user_vocab_)) if users is None else model.user_vocab_.encode(as_id_list(users, "users"))
    )
    n_users = len(index)
    loss = LocalImportanceELBO(n_particles)
    elbo = np.zeros(n_users)
    iw = np.zeros(n_users)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(random_state)
        for start in range(0, n_users, batch_size):
            rows = torch.as_tensor(index[start : start + batch_size], dtype=torch.long, device=dev)
            batch = _full_batch(seen, rows)
            for _ in range(n_item_draws):
                lw = loss.member_log_weights(model.model_, model.guide_, batch).double()  # (M, B)
                elbo[start : start + len(rows)] += lw.mean(0).cpu().numpy() / n_item_draws
                bound = torch.logsumexp(lw, 0) - np.log(n_particles)
                iw[start : start + len(rows)] += bound.cpu().numpy() / n_item_draws
    counts = np.diff(model.seen_.indptr.cpu().numpy())
    return pd.DataFrame({
        "user_id": model.user_vocab_.decode(index),
        "n_interactions": counts[index],
        "elbo": elbo,
        "iw_bound": iw,
    })  # fmt: skip


def persona_count_evidence(
    models: Sequence[Any],
    users: Any = None,
    *,
    n_particles: int = 32,
    n_item_draws: int = 4,
    batch_size: int = 64,
    random_state: int = 0,
) -> pd.DataFrame:
    """Which number of personas each user's choices support: the evidence bounds of fits that differ in K.

    For every user and every fit, :func:`user_elbo`'s importance-weighted bound of the user's
    evidence :math:`\\log p(x_u \\mid \\beta)` (the items at that fit's posterior), and its
    gap to the bound of the fit with the fewest personas. A positive gap says the user's own
    choices pay for the extra personas: the mixture explains them better than its prior's
    extra dimensions cost. With item factors learned, one persona can stand for several
    tastes wherever the tastes that users like together can be laid out near each other in
    the D dimensions; the bound then prefers fewer personas, and the extra personas of a
    larger fit are not identified by the data.

    Parameters
    ----------
    models : sequence of PersonaRecommender
        Fitted with implicit feedback on the same users, each with a different
        ``n_personas``.
    users : sequence of user ids, optional
        Default: every user of the first model (each must be a user of every model).
    n_particles, n_item_draws, batch_size, random_state
        As in :func:`user_elbo` (the same seed for every fit).

    Returns
    -------
    DataFrame
        One row per (user, fit), fits in increasing K: ``user_id, n_interactions,
        n_personas, elbo, iw_bound, gap`` (``iw_bound`` minus the fewest-persona fit's, 0 for
        that fit), ``symmetry_allowance`` (:math:`\\log K! - \\log K_0!`, the most that
        label switching can add to the gap) and ``gap_upper`` (their sum).

    Raises
    ------
    DataValidationError
        Fewer than two models, two with the same K, or ``users`` unknown to a model.

    References
    ----------
    .. [1] D. J. C. MacKay. *Information Theory, Inference, and Learning Algorithms*,
       chapter 28 (model comparison and Occam's razor). Cambridge University Press, 2003.
    .. [2] Y. Burda, R. Grosse, R. Salakhutdinov. "Importance Weighted Autoencoders". ICLR 2016.
    """
    if isinstance(models, (str, bytes)) or not isinstance(models, Sequence):
        raise DataValidationError(f"models must be a sequence of fitted PersonaRecommender; got {type(models).__name__}")
    if len(models) < 2:
        raise DataValidationError(f"models must hold at least two fits to compare; got {len(models)}")
    from bayes_persona.persona.estimator import PersonaRecommender

    for j, m in enumerate(models):
        if not isinstance(m, PersonaRecommender):
            raise DataValidationError(f"models[{j}] must be a PersonaRecommender; got {type(m).__name__}")
    ks = [int(m.n_personas) for m in models]
    if len(set(ks)) != len(ks):
        raise DataValidationError(f"models must each have a different n_personas; got {ks}")
    fits = sorted(enumerate(models), key=lambda jm: jm[1].n_personas)  # (position given, model), increasing K
    for _, m in fits:
        _ = m.posterior_  # NotFittedError before fit
    k0 = int(fits[0][1].n_personas)
    if users is None:
        vocab = fits[0][1].user_vocab_
        users = vocab.decode(np.arange(len(vocab)))
    users = as_id_list(users, "users")
    frames = []
    for j, m in fits:
        known, _ = m.user_vocab_.index_of_known(users)
        if not known.all():
            bad = [u for u, ok in zip(users, known, strict=True) if not ok][:5]
            raise DataValidationError(f"users {bad} are not users of models[{j}] (n_personas={m.n_personas})")
        table = user_elbo(m, users, n_particles=n_particles, n_item_draws=n_item_draws, batch_size=batch_size,
                          random_state=random_state)  # fmt: skip
        k = int(m.n_personas)
        table["n_personas"] = k
        base = frames[0]["iw_bound"].to_numpy() if frames else table["iw_bound"].to_numpy()
        table["gap"] = table["iw_bound"].to_numpy() - base
        table["symmetry_allowance"] = math.lgamma(k + 1) - math.lgamma(k0 + 1)
        table["gap_upper"] = table["gap"] + table["symmetry_allowance"]
        frames.append(table)
    out = pd.concat(frames, ignore_index=True)
    return out[["user_id", "n_interactions", "n_personas", "elbo", "iw_bound", "gap", "symmetry_allowance", "gap_upper"]]
