"""``PersonaRecommender.summary()``: fit health and each user's personas at a glance."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_persona.posterior import ACTIVE_PREVALENCE

__all__ = ["ModelSummary", "summarise_model"]


@dataclass(frozen=True, eq=False)
class ModelSummary:
    """What :meth:`PersonaRecommender.summary` returns.

    Attributes
    ----------
    fit : dict
        ``n_users, n_items, n_interactions, n_personas, n_factors, feedback, n_steps,
        epochs, converged, stopped_early, final_elbo`` (mean ELBO of the last epoch; with
        ``user_particles`` above 1, of the importance-weighted bound the fit maximised),
        ``user_particles`` and ``validation_score`` (last held-out score, None without
        validation data).
    personas : pandas.DataFrame
        One row per user: ``user_id, n_active`` (personas whose median prevalence exceeds
        :data:`~bayes_persona.posterior.ACTIVE_PREVALENCE`) and ``prevalence_0 ..
        prevalence_{K-1}``, the posterior median prevalences from the most prevalent.
    """

    fit: dict[str, Any]
    personas: pd.DataFrame = field(repr=False)

    def _fit_lines(self) -> list[str]:
        f = self.fit
        state = "converged" if f["converged"] else "NOT converged (see ConvergenceWarning)"
        val = "" if f["validation_score"] is None else f", validation score {f['validation_score']:.4g}"
        return [
            f"PersonaRecommender: K={f['n_personas']} personas, D={f['n_factors']} factors, {f['feedback']} feedback",
            f"data: {f['n_users']} users x {f['n_items']} items, {f['n_interactions']} interactions",
            f"fit: {f['n_steps']} SVI steps ({f['epochs']} epochs), {state}"
            + (", stopped early" if f["stopped_early"] else "")
            + f"; final epoch {_bound_name(f['user_particles'])} {f['final_elbo']:.6g}{val}",
        ]

    def _active_line(self) -> str:
        counts = self.personas["n_active"].value_counts().sort_index()
        parts = ", ".join(f"{int(n)}: {int(c)}" for n, c in counts.items())
        return f"users by number of active personas (median prevalence > {ACTIVE_PREVALENCE:g}): {parts}"

    def headline(self) -> list[str]:
        """The summary's text lines: the fit (model, data, steps, convergence, ELBO) and how
        many users have how many active personas."""
        return [*self._fit_lines(), self._active_line()]

    def __repr__(self) -> str:
        head = self.personas.head(10).to_string(index=False, float_format=lambda v: f"{v:.2f}")
        more = len(self.personas) - 10
        tail = [f"... {more} more users in .personas"] if more > 0 else []
        return "\n".join([*self.headline(), "", head, *tail])

    def _repr_html_(self) -> str:
        lines = "".join(f"<li>{html.escape(x)}</li>" for x in self.headline())
        table = self.personas.head(10).to_html(index=False, float_format=lambda v: f"{v:.2f}")
        return f"<ul>{lines}</ul>{table}"


def _bound_name(user_particles: int) -> str:
    """What the fit maximised: the ELBO, or the bound importance weighted within each user."""
    return "ELBO" if user_particles == 1 else f"importance-weighted bound ({user_particles} draws per user)"


def summarise_model(model: Any, users: Any = None) -> ModelSummary:
    """The :class:`ModelSummary` of a fitted model (for ``users``, default all)."""
    posterior = model.posterior_  # NotFittedError before fit
    if users is None:
        ids = model.user_vocab_.ids
        u = np.arange(len(ids))
    else:
        ids, u = posterior.encode_users(users, "users")
    K = model.n_personas
    medians = np.empty((len(u), K))
    chunk = max(1, posterior.chunk_size(model.n_draws))
    with torch.no_grad():
        for s in range(0, len(u), chunk):
            prev = posterior.user_draws(u[s : s + chunk], model.n_draws)["prevalence"]  # (S, B, K)
            med = np.median(prev.cpu().numpy(), axis=0)
            medians[s : s + chunk] = -np.sort(-med, axis=1)
    frame = pd.DataFrame({"user_id": ids, "n_active": (medians > ACTIVE_PREVALENCE).sum(1)})
    for k in range(K):
        frame[f"prevalence_{k}"] = medians[:, k]
    steps_per_epoch = max(1, int(np.ceil(len(model.user_vocab_) / model.batch_size)))
    elbo = np.asarray(model.elbo_, dtype=float)
    fit = {
        "n_users": len(model.user_vocab_),
        "n_items": len(model.item_vocab_),
        "n_interactions": int(model.seen_.indices.numel()),
        "n_personas": K,
        "n_factors": model.n_factors,
        "feedback": model.feedback,
        "n_steps": int(model.n_steps_),
        "epochs": int(np.ceil(model.n_steps_ / steps_per_epoch)),
        "converged": bool(model.converged_),
        "stopped_early": bool(model.stopped_early_),
        "final_elbo": float(elbo[-steps_per_epoch:].mean()) if len(elbo) else float("nan"),
        "user_particles": int(model.user_particles),
        "validation_score": float(model.validation_[-1][1]) if model.validation_ else None,
    }
    return ModelSummary(fit=fit, personas=frame.astype({"user_id": model.user_vocab_.ids.dtype}))
